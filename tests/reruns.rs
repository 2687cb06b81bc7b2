//! Rounds of the loop (issue 14): on corpora written by nibabel (tests/python/
//! gen_metrics_corpus.py), a rerun redoes exactly what changed and what depends on it, says
//! so before (`--dry-run`, `status`) and while doing it, and ends with outputs equal byte for
//! byte to a fresh run's on the corpus and pipeline as they are:
//! - a changed input file: that file converted again, and the stages reading its kind;
//! - a file touched without a change (same content digest): nothing;
//! - a corpus-level parameter (`rank.budget`): the tables and review exports from the journal,
//!   no input file opened (checked with an LD_PRELOAD open log), no case group touched;
//! - a per-case stage's parameter (`metrics.nsd_tolerance_mm`): that stage for every case, no
//!   Zarr file rewritten (bytes and modification times);
//! - a new `revised/` file: `assemble` for its case only;
//! - cases added and removed, `meta.csv` changed, a stage removed.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const CASES: [&str; 4] = ["aniso07", "aniso09x5", "iso15", "thin03"];

/// A corpus written by nibabel: 4 cases, 3 models, 8 classes (7 annotated).
fn corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    util::python_script("gen_metrics_corpus.py", &[&corpus]);
    corpus
}

/// Every stage kind, with `rank.budget`, `metrics.nsd_tolerance_mm`, and `evaluate` or not.
fn pipeline(dir: &Path, name: &str, budget: f64, tolerance: f64, evaluate: bool) -> PathBuf {
    let path = dir.join(name);
    let evaluate = if evaluate { "[[stages]]\nkind = \"evaluate\"\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            r#"version = 1
[input]
root = "corpus"
ct = "{{case}}/ct.nii.gz"
prediction = "{{case}}/predictions/{{model}}/{{class}}.nii.gz"
label = "{{case}}/segmentations/{{class}}.nii.gz"
revised = "{{case}}/revised/{{class}}.nii.gz"
metadata = "meta.csv"
models = ["m1", "m2", "m3"]
classes = ["sphere", "thin", "border", "touching", "blobs", "empty_gt", "empty_both", "unlabelled"]
[output]
dir = "out"
[runtime]
slab_depth = 8
[[stages]]
kind = "normalize"
[[stages]]
kind = "attention"
[[stages]]
kind = "metrics"
nsd_tolerance_mm = {tolerance:?}
[[stages]]
kind = "assemble"
export_nifti = true
{evaluate}[[stages]]
kind = "rank"
budget = {budget:?}
[[stages]]
kind = "review"
"#
        ),
    )
    .unwrap();
    path
}

/// Runs and returns what it said; with `open_log`, every file the run opened is listed there.
fn run(p: &Path, corpus: &Path, out: &Path, open_log: Option<&Path>) -> String {
    let mut c = util::bin();
    c.args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .env("RUST_LOG", "info");
    if let Some(log) = open_log {
        c.env("LD_PRELOAD", util::fault_shim()).env("SLABFLOW_OPEN_LOG", log);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    util::stderr(&o)
}

/// What `--dry-run` prints.
fn dry_run(p: &Path, corpus: &Path, out: &Path) -> String {
    let o = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every file under `dir` with its bytes and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    util::tree(dir)
        .into_iter()
        .map(|(rel, bytes)| {
            let t = std::fs::metadata(dir.join(&rel)).unwrap().modified().unwrap();
            (rel, (bytes, t))
        })
        .collect()
}

/// The files of `before` that differ in `after` (bytes or time), appeared or went.
fn changed(
    before: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
    after: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).cloned().collect();
    v.dedup();
    v
}

fn touch(path: &Path) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
}

#[test]
fn a_new_prediction_reruns_what_reads_it_and_equals_a_fresh_run() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let p = pipeline(t.path(), "p.toml", 0.25, 1.0, true);
    let out = t.path().join("out");
    run(&p, &corpus, &out, None);
    let before = files(&out.join("cases"));

    // A new round's prediction for one case, model and class (nibabel's bytes, other values).
    let preds = corpus.join("iso15/predictions/m1");
    std::fs::copy(preds.join("blobs.nii.gz"), preds.join("sphere.nii.gz")).unwrap();
    let everything = util::tree(&out);
    let plan = dry_run(&p, &corpus, &out);
    assert!(
        plan.contains(
            "0 to compute\n0 to recompute\n1 to redo in part\n  iso15 predictions/m1/sphere.nii.gz changed: reruns attention, metrics, assemble, evaluate\n0 to resume\n3 to keep\n0 to drop"
        ),
        "{plan}"
    );
    assert_eq!(util::tree(&out), everything, "a dry run writes nothing");
    let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        st.contains("next run: 0 to compute, 0 to recompute, 1 to redo in part, 0 to resume, 3 to keep, 0 to drop")
            && st.contains("redo iso15 (predictions/m1/sphere.nii.gz changed): attention, metrics, assemble, evaluate"),
        "{st}"
    );

    let said = run(&p, &corpus, &out, None);
    assert!(
        said.contains(
            "3 of 4 cases finished by an earlier run are kept, 1 recomputed: iso15 predictions/m1/sphere.nii.gz changed"
        ),
        "{said}"
    );
    let after = files(&out.join("cases"));
    for path in changed(&before, &after) {
        let p = path.to_string_lossy();
        assert!(
            p.starts_with("iso15.zarr/predictions/m1/sphere/")
                || p.starts_with("iso15.zarr/attention/")
                || p.starts_with("iso15.zarr/final/"),
            "{p} was rewritten: only the new file's copy and what the stages reading it write may be"
        );
    }
    assert!(changed(&before, &after).iter().any(|p| p.starts_with("iso15.zarr/predictions/m1/sphere")));
    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    assert_eq!(util::outputs(&out), util::outputs(&fresh), "the rerun equals a fresh run on the new corpus");
}

#[test]
fn touched_files_recompute_nothing_and_cases_labels_and_meta_come_and_go() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let p = pipeline(t.path(), "p.toml", 0.25, 1.0, true);
    let out = t.path().join("out");
    run(&p, &corpus, &out, None);
    let before = util::outputs(&out);
    let groups = files(&out.join("cases"));

    // Touched, not changed: the content digest says so; nothing is recomputed, and the new
    // times are recorded, so the next run does not even read the files again.
    let (ct, pred) = (corpus.join("aniso07/ct.nii.gz"), corpus.join("aniso07/predictions/m2/thin.nii.gz"));
    touch(&ct);
    touch(&pred);
    assert!(
        dry_run(&p, &corpus, &out).contains("0 to compute\n0 to recompute\n0 to redo in part\n0 to resume\n4 to keep")
    );
    let said = run(&p, &corpus, &out, None);
    assert!(
        said.contains("4 of 4 cases finished by an earlier run are kept.") && !said.contains("recomputed:"),
        "{said}"
    );
    assert_eq!(files(&out.join("cases")), groups, "no Zarr file rewritten");
    assert_eq!(util::outputs(&out), before);
    let log = t.path().join("opened.txt");
    run(&p, &corpus, &out, Some(&log));
    let opened = std::fs::read_to_string(&log).unwrap();
    assert!(!opened.contains("aniso07/ct.nii.gz") && !opened.contains("m2/thin.nii.gz"), "{opened}");

    // A label file removed, then back: the stages that read labels rerun, for that case.
    let label = corpus.join("iso15/segmentations/sphere.nii.gz");
    let aside = t.path().join("label.nii.gz");
    std::fs::rename(&label, &aside).unwrap();
    let plan = dry_run(&p, &corpus, &out);
    assert!(
        plan.contains(
            "1 to redo in part\n  iso15 segmentations/sphere.nii.gz removed: reruns metrics, assemble, evaluate"
        ),
        "{plan}"
    );
    let said = run(&p, &corpus, &out, None);
    assert!(said.contains("1 recomputed: iso15 segmentations/sphere.nii.gz removed"), "{said}");
    assert!(!out.join("cases/iso15.zarr/labels/sphere").exists(), "the copy of the file gone goes too");
    std::fs::rename(&aside, &label).unwrap();
    let said = run(&p, &corpus, &out, None);
    assert!(said.contains("1 recomputed: iso15 segmentations/sphere.nii.gz added"), "{said}");
    assert_eq!(util::outputs(&out), before, "back as it was");

    // meta.csv changed: the tables follow, nothing is recomputed.
    let meta = std::fs::read_to_string(corpus.join("meta.csv")).unwrap();
    std::fs::write(corpus.join("meta.csv"), meta.replace("iso15,synthetic", "iso15,AMOS")).unwrap();
    let said = run(&p, &corpus, &out, None);
    assert!(
        said.contains("4 of 4 cases finished by an earlier run are kept.") && !said.contains("recomputed:"),
        "{said}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.contains("iso15,AMOS,sphere") && !metrics.contains("iso15,synthetic"), "{metrics}");

    // A case added: computed; a case removed: out of the tables, its group kept until --fresh.
    let copy = corpus.join("copy15");
    std::fs::create_dir(&copy).unwrap();
    for e in walk(&corpus.join("iso15")) {
        let to = copy.join(e.strip_prefix(corpus.join("iso15")).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    std::fs::write(
        corpus.join("meta.csv"),
        format!("{}copy15,synthetic\n", std::fs::read_to_string(corpus.join("meta.csv")).unwrap()),
    )
    .unwrap();
    std::fs::rename(corpus.join("thin03"), t.path().join("thin03")).unwrap();
    let plan = dry_run(&p, &corpus, &out);
    assert!(plan.contains("1 to compute\n  copy15\n") && plan.contains("3 to keep\n1 to drop"), "{plan}");
    run(&p, &corpus, &out, None);
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    assert!(ranking.contains("copy15") && !ranking.contains("thin03") && ranking.lines().count() == 5, "{ranking}");
    assert!(out.join("cases/thin03.zarr").is_dir());
    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    let tables = |o: &Path| {
        ["metrics.csv", "ranking.csv", "assembly.csv", "evaluation.csv"].map(|n| std::fs::read(o.join(n)).unwrap())
    };
    assert_eq!(tables(&out), tables(&fresh));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    util::tree(dir).into_keys().map(|k| dir.join(k)).collect()
}

#[test]
fn a_new_budget_reruns_the_ranking_from_the_journal_without_opening_an_input() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let out = t.path().join("out");
    run(&pipeline(t.path(), "p.toml", 0.25, 1.0, true), &corpus, &out, None);
    let groups = files(&out.join("cases"));
    let review = files(&out.join("review"));
    let flagged_before: Vec<PathBuf> = review.keys().filter_map(|k| k.parent().map(Path::to_path_buf)).collect();

    let p = pipeline(t.path(), "p2.toml", 0.5, 1.0, true);
    let plan = dry_run(&p, &corpus, &out);
    assert!(
        plan.contains("stages changed since the earlier run: rank: parameters changed")
            && plan.contains("0 to compute\n0 to recompute\n0 to redo in part\n0 to resume\n4 to keep"),
        "{plan}"
    );
    let log = t.path().join("opened.txt");
    run(&p, &corpus, &out, Some(&log));
    let opened = std::fs::read_to_string(&log).unwrap();
    let corpus_s = corpus.to_string_lossy().into_owned();
    for line in opened.lines().filter(|l| l.contains(&corpus_s) || l.ends_with(".nii.gz")) {
        assert!(line.ends_with("meta.csv"), "the run opened {line}");
    }
    assert_eq!(files(&out.join("cases")), groups, "no case group touched");
    // The case flagged before keeps its review files as they were; the newly flagged is exported.
    let review_now = files(&out.join("review"));
    for (k, v) in &review {
        assert_eq!(review_now.get(k), Some(v), "{} rewritten", k.display());
    }
    assert!(review_now.len() > review.len() && !flagged_before.is_empty());

    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    for name in ["ranking.csv", "worklist.csv", "metrics.csv"] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(fresh.join(name)).unwrap(), "{name}");
    }
    assert_eq!(util::outputs(&out), util::outputs(&fresh));
}

#[test]
fn a_new_nsd_tolerance_reruns_metrics_alone_and_rewrites_no_zarr_file() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let out = t.path().join("out");
    run(&pipeline(t.path(), "p.toml", 0.25, 1.0, true), &corpus, &out, None);
    let groups = files(&out.join("cases"));
    let release = files(&out.join("release"));

    let p = pipeline(t.path(), "p2.toml", 0.25, 2.0, true);
    let plan = dry_run(&p, &corpus, &out);
    assert!(plan.contains("stages changed since the earlier run: metrics: parameters changed"), "{plan}");
    for case in CASES {
        assert!(plan.contains(&format!("  {case} metrics parameters changed: reruns metrics\n")), "{plan}");
    }
    let said = run(&p, &corpus, &out, None);
    assert!(said.contains("0 of 4 cases finished by an earlier run are kept, 4 recomputed"), "{said}");
    assert_eq!(files(&out.join("cases")), groups, "every Zarr file keeps its bytes and time");
    assert_eq!(files(&out.join("release")), release);
    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    assert_eq!(util::outputs(&out), util::outputs(&fresh));

    // A stage removed: its table goes, nothing is recomputed, and no group is rewritten.
    let p = pipeline(t.path(), "p3.toml", 0.25, 2.0, false);
    let plan = dry_run(&p, &corpus, &out);
    assert!(plan.contains("evaluate: removed") && plan.contains("  iso15 evaluate removed: reruns no stage"), "{plan}");
    run(&p, &corpus, &out, None);
    assert!(!out.join("evaluation.csv").exists() && !out.join("evaluation_summary.csv").exists());
    assert_eq!(files(&out.join("cases")), groups);
    let fresh = t.path().join("fresh3");
    run(&p, &corpus, &fresh, None);
    assert_eq!(util::outputs(&out), util::outputs(&fresh));
}

#[test]
fn a_revised_label_reruns_assemble_for_its_case_only() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let p = pipeline(t.path(), "p.toml", 0.25, 1.0, true);
    let out = t.path().join("out");
    run(&p, &corpus, &out, None);
    let before = files(&out);

    // The radiologist's revision of one class of one case (a nibabel-written mask).
    let revised = corpus.join("iso15/revised");
    std::fs::create_dir_all(&revised).unwrap();
    std::fs::copy(corpus.join("iso15/predictions/m2/unlabelled.nii.gz"), revised.join("unlabelled.nii.gz")).unwrap();
    let plan = dry_run(&p, &corpus, &out);
    assert!(
        plan.contains(
            "1 to redo in part\n  iso15 revised/unlabelled.nii.gz added: reruns assemble\n0 to resume\n3 to keep"
        ),
        "{plan}"
    );
    let said = run(&p, &corpus, &out, None);
    assert!(said.contains("1 recomputed: iso15 revised/unlabelled.nii.gz added"), "{said}");
    for path in changed(&before, &files(&out)) {
        let p = path.to_string_lossy();
        assert!(
            p.starts_with("cases/iso15.zarr/revised/")
                || p.starts_with("cases/iso15.zarr/final/")
                || p.starts_with("release/iso15/")
                || p.starts_with(".slabflow")
                || p.ends_with(".csv")
                || p == "profile.json"
                || p == "report.html",
            "{p} was rewritten"
        );
    }
    let assembly = std::fs::read_to_string(out.join("assembly.csv")).unwrap();
    assert!(assembly.contains("iso15,synthetic,unlabelled,revised,"), "{assembly}");
    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    assert_eq!(util::outputs(&out), util::outputs(&fresh));
}

#[test]
fn a_redo_stopped_mid_way_is_shown_and_finished_by_the_next_run() {
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus(t.path());
    let out = t.path().join("out");
    run(&pipeline(t.path(), "p.toml", 0.25, 1.0, true), &corpus, &out, None);
    // Another NSD tolerance, a slab checkpoint after every slab, and a SIGTERM at the third
    // sync: cases are caught mid-redo.
    let p = pipeline(t.path(), "p2.toml", 0.25, 2.0, true);
    let text = std::fs::read_to_string(&p).unwrap().replace("slab_depth = 8", "slab_depth = 8\ncheckpoint_secs = 0");
    std::fs::write(&p, text).unwrap();
    let args = ["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()];
    // How many syncs the redo makes, counted on a copy; then a SIGTERM at each in turn, on a
    // copy of the output as it was, until one catches a case mid-redo (with 2 cases at once,
    // which sync does varies a little from run to run).
    let pristine = t.path().join("pristine");
    let cp = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        assert!(std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
    };
    cp(&out, &pristine);
    let count = t.path().join("count.txt");
    let o = util::bin()
        .args(args)
        .env("LD_PRELOAD", util::fault_shim())
        .env("SLABFLOW_FAULT_CLASSES", "s")
        .env("SLABFLOW_FAULT_COUNT", &count)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    let syncs: u64 = std::fs::read_to_string(&count).unwrap().trim().parse().unwrap();
    let caught = (1..=syncs).find_map(|at| {
        cp(&pristine, &out);
        let o = util::bin()
            .args(args)
            .env("LD_PRELOAD", util::fault_shim())
            .env("SLABFLOW_FAULT_CLASSES", "s")
            .env("SLABFLOW_FAULT_AT", at.to_string())
            .env("SLABFLOW_FAULT_SIGNAL", "15")
            .output()
            .unwrap();
        let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
        let st = String::from_utf8_lossy(&st.stdout).into_owned();
        (o.status.code() == Some(130) && st.contains("  redoing ")).then_some(st)
    });
    let st = caught.expect("a SIGTERM at some sync catches a case mid-redo");
    assert!(st.contains("metrics parameters changed (interrupted; the next run finishes it)"), "{st}");
    assert!(!st.contains(", 4 done,"), "a case caught mid-redo is not done: {st}");
    let said = run(&p, &corpus, &out, None);
    assert!(said.contains("an interrupted redo (metrics parameters changed) finished"), "{said}");
    let fresh = t.path().join("fresh");
    run(&p, &corpus, &fresh, None);
    assert_eq!(util::outputs(&out), util::outputs(&fresh));
}
