//! Rounds of the loop (issue 14, first part): a rerun keeps a finished case only while its input
//! files are those it read — a changed, added or removed file recomputes that case, and says
//! so — and the outputs then equal a fresh run's on the corpus as it is. Files are compared by
//! size and modification time: a file touched without a change recomputes its case (to the
//! same bytes). A changed `meta.csv` updates the tables without recomputing anything.

mod util;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

fn pipeline(dir: &Path) -> PathBuf {
    util::convert_pipeline(
        dir,
        "[runtime]\nslab_depth = 4\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.4\n",
    )
}

fn rerun(p: &Path, corpus: &Path, out: &Path) -> String {
    let o: Output = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    util::stderr(&o)
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_new_prediction_recomputes_its_case_only_and_equals_a_fresh_run() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [16, 16, 8]);
    let p = pipeline(t.path());
    let out = t.path().join("out");
    rerun(&p, &corpus, &out);
    let untouched = out.join("cases/BDMAP_00000002.zarr/predictions/unet/liver/0/zarr.json");
    let before = modified(&untouched);

    // A new round's prediction for one case and class (same grid, other values).
    let case = corpus.join("BDMAP_00000001/predictions/unet");
    std::fs::copy(case.join("spleen.nii.gz"), case.join("liver.nii.gz")).unwrap();
    // Said before done, and nothing written meanwhile (the journal included).
    let everything = util::tree(&out);
    let o = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        plan.contains("0 to compute\n1 to recompute\n  BDMAP_00000001 predictions/unet/liver.nii.gz changed\n0 to resume\n2 to keep\n0 to drop"),
        "{plan}"
    );
    assert_eq!(util::tree(&out), everything, "a dry run writes nothing");
    let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        st.contains("next run: 0 to compute, 1 to recompute, 0 to resume, 2 to keep, 0 to drop")
            && st.contains("recompute BDMAP_00000001: predictions/unet/liver.nii.gz changed"),
        "{st}"
    );
    let said = rerun(&p, &corpus, &out);
    assert!(
        said.contains("2 of 3 cases finished by an earlier run are kept, 1 recomputed: BDMAP_00000001 predictions/unet/liver.nii.gz changed"),
        "{said}"
    );
    assert_eq!(modified(&untouched), before, "the other cases are not rewritten");
    let fresh = t.path().join("fresh");
    rerun(&p, &corpus, &fresh);
    assert_eq!(util::outputs(&out), util::outputs(&fresh), "the rerun equals a fresh run on the new corpus");
}

#[test]
fn touched_removed_and_added_files_cases_and_meta_csv() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [16, 16, 8]);
    let p = pipeline(t.path());
    let out = t.path().join("out");
    rerun(&p, &corpus, &out);

    // Touched, not changed: size and time are what is compared, so the case is recomputed.
    let ct = ["ct.nii.gz", "ct.nii"]
        .map(|n| corpus.join("BDMAP_00000002").join(n))
        .into_iter()
        .find(|p| p.exists())
        .unwrap();
    let ct_name = ct.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::File::options()
        .append(true)
        .open(&ct)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let said = rerun(&p, &corpus, &out);
    assert!(said.contains(&format!("1 recomputed: BDMAP_00000002 {ct_name} changed")), "{said}");
    let same = t.path().join("same");
    rerun(&p, &corpus, &same);
    assert_eq!(util::outputs(&out), util::outputs(&same), "recomputed to the same bytes");

    // A label file removed, then one added.
    let labels = corpus.join("BDMAP_00000001/segmentations");
    let label = std::fs::read_dir(&labels).unwrap().next().expect("synth writes some labels").unwrap().path();
    let name = label.file_name().unwrap().to_string_lossy().into_owned();
    let aside = t.path().join("label.nii.gz");
    std::fs::rename(&label, &aside).unwrap();
    let said = rerun(&p, &corpus, &out);
    assert!(said.contains(&format!("1 recomputed: BDMAP_00000001 segmentations/{name} removed")), "{said}");
    std::fs::rename(&aside, &label).unwrap();
    let said = rerun(&p, &corpus, &out);
    assert!(said.contains(&format!("1 recomputed: BDMAP_00000001 segmentations/{name} added")), "{said}");

    // meta.csv changed: the tables follow, nothing is recomputed.
    let meta = std::fs::read_to_string(corpus.join("meta.csv")).unwrap();
    std::fs::write(corpus.join("meta.csv"), meta.replace("BDMAP_00000001,BTCV", "BDMAP_00000001,AMOS")).unwrap();
    let said = rerun(&p, &corpus, &out);
    assert!(
        said.contains("3 of 3 cases finished by an earlier run are kept.") && !said.contains("recomputed:"),
        "{said}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.contains("BDMAP_00000001,AMOS") && !metrics.contains("BTCV"), "{metrics}");

    // A case removed from the corpus leaves the tables; its group stays until --fresh.
    std::fs::rename(corpus.join("BDMAP_00000003"), t.path().join("gone")).unwrap();
    rerun(&p, &corpus, &out);
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    assert!(!ranking.contains("BDMAP_00000003") && ranking.lines().count() == 3, "{ranking}");
    assert!(out.join("cases/BDMAP_00000003.zarr").is_dir());
}
