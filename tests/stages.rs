//! The stages against a float64 numpy/scipy reference written from the contract's definitions
//! (tests/python/reference_attention.py), on a synthetic corpus with uint8 and float32
//! predictions, labels, anisotropic grids; and the normalize stage against MONAI's formula.

mod util;

use std::path::Path;

fn pipeline(dir: &Path, mode: &str, depth: usize, budget: f64) -> std::path::PathBuf {
    util::convert_pipeline(
        dir,
        &format!(
            "[runtime]\nslab_depth = {depth}\n\n[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"attention\"\nmode = \"{mode}\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = {budget}\n"
        ),
    )
}

fn check(mode: &str, depth: usize) {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    // Case 5 has float32 predictions; cases 1, 2, 4, 5 have labels for some classes.
    util::synth(&corpus, 5, [48, 40, 23]);
    let p = pipeline(t.path(), mode, depth, 0.3);
    let out = t.path().join("out");
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let report = util::python_script("reference_attention.py", &[&out, &corpus, Path::new(mode), Path::new("0.3")]);
    assert!(report.contains("OK 45 class maps, ") && report.contains(" peaks, 5 cases ranked"), "{report}");
}

#[test]
fn paper_attention_metrics_and_ranking_match_numpy() {
    check("paper", 5);
}

#[test]
fn released_attention_matches_scipy_with_one_slice_slabs() {
    check("released", 1);
}

#[test]
fn released_attention_matches_scipy_with_uneven_slabs() {
    check("released", 7);
}

/// Final labels by priority (original > revised > consensus), per class and combined, against
/// numpy, with the `.nii.gz` release exports read back by nibabel (voxels and affine); a run
/// stopped mid-case resumes its half-written exports to the same bytes.
#[test]
fn assemble_matches_numpy_and_exports_load_in_nibabel() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 4, [40, 36, 21]);
    let made = util::python_script("reference_assembly.py", &[Path::new("prepare"), &corpus]);
    assert!(made.contains("prepared 6 revised masks"), "{made}");
    let p = t.path().join("assemble.toml");
    std::fs::write(
        &p,
        r#"version = 1
[input]
root = "corpus"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
label = "{case}/segmentations/{class}.nii.gz"
revised = "{case}/revised/{class}.nii.gz"
metadata = "meta.csv"
models = ["swin_unetr", "nnunet", "unet"]
classes = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
[output]
dir = "out"
[runtime]
slab_depth = 4
checkpoint_secs = 0
workers = 1
[[stages]]
kind = "assemble"
priority = ["pancreas", "liver"]
export_nifti = true
"#,
    )
    .unwrap();
    let out = t.path().join("out");
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let report =
        util::python_script("reference_assembly.py", &[Path::new("check"), &out, &corpus, Path::new("pancreas,liver")]);
    assert!(report.starts_with("OK 4 cases"), "{report}");
    let partial = |out: &Path| {
        std::fs::read_dir(out.join("release")).map_or(0, |d| {
            d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial")).count()
        })
    };
    assert_eq!(partial(&out), 0);

    // Stopped at a slab boundary mid-case (SIGTERM), then resumed: the same bytes.
    let again = t.path().join("again");
    let child = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output"])
        .arg(&again)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partial(&again) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap();
    let o = util::run(&p, &corpus, &again, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    for dir in ["release", "cases"] {
        assert_eq!(util::tree(&again.join(dir)), util::tree(&out.join(dir)), "{dir} differs after resuming");
    }
    assert_eq!(std::fs::read(again.join("assembly.csv")).unwrap(), std::fs::read(out.join("assembly.csv")).unwrap());
}

/// The evaluate stage (Table 1) against scipy.ndimage.label on the same volumes: component
/// counts, touching counts, largest sizes, sensitivity, precision and the per-class summary,
/// at slab depths 1, 3 and 64, with labels written by nibabel that wind through every slice,
/// touch the borders, merge only in the last slice, or scatter into specks.
#[test]
fn evaluation_matches_scipy_components_at_every_slab_depth() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth_with(&corpus, 3, [48, 40, 30], &["--all-labels"]);
    let made = util::python_script("reference_evaluation.py", &[Path::new("prepare"), &corpus]);
    assert!(made.starts_with("prepared 3 labels"), "{made}");
    for depth in [1, 3, 64] {
        // At depths 3 and 64 beside a paper attention stage, which gives evaluate the region
        // above its threshold; at depth 1 evaluate computes the attention itself.
        let attention = if depth == 1 { "" } else { "[[stages]]\nkind = \"attention\"\n\n" };
        let p = util::convert_pipeline(
            t.path(),
            &format!(
                "[runtime]\nslab_depth = {depth}\n\n{attention}[[stages]]\nkind = \"evaluate\"\nthreshold = 0.2\nmin_voxels = 3\n"
            ),
        );
        let out = t.path().join(format!("out{depth}"));
        let o = util::run(&p, &corpus, &out, &[]);
        assert!(o.status.success(), "{}", util::stderr(&o));
        let report = util::python_script("reference_evaluation.py", &[&out, &corpus, Path::new("0.2"), Path::new("3")]);
        assert!(report.starts_with("OK 27 case-classes"), "depth {depth}: {report}");
    }
}

/// The review exports of flagged cases (uint8 heatmaps in the authors' format, consensus
/// pseudo labels, worklist.csv) against numpy on what nibabel and zarr-python read.
#[test]
fn review_exports_match_numpy_and_load_in_nibabel() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 5, [40, 36, 19]);
    let p = util::convert_pipeline(
        t.path(),
        "[runtime]\nslab_depth = 4\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.4\n\n[[stages]]\nkind = \"review\"\nclasses_per_case = 2\n",
    );
    let out = t.path().join("out");
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let report = util::python_script("reference_review.py", &[&out, &corpus, Path::new("2")]);
    assert!(report.starts_with("OK 2 flagged cases"), "{report}");
}

/// A stage kind from another crate (examples/hu_stats.rs, built by `cargo test`): it runs
/// beside slabflow's stages, sees every slab as `ndarray` views, and its table matches numpy.
#[test]
fn a_custom_stage_from_the_library_api_matches_numpy() {
    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().parent().unwrap().join("examples").join("hu_stats");
    assert!(example.is_file(), "cargo test builds the examples: {} is missing", example.display());
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 2, [40, 36, 20]);
    let p = util::convert_pipeline(
        t.path(),
        "[runtime]\nslab_depth = 6\n[[stages]]\nkind = \"attention\"\n[[stages]]\nkind = \"hu_stats\"\n[[stages]]\nkind = \"assemble\"\n[[stages]]\nkind = \"rank\"\n",
    );
    let hu = t.path().join("hu.toml");
    std::fs::rename(&p, &hu).unwrap();
    let p = hu;
    let out = t.path().join("out");
    let o = std::process::Command::new(&example)
        .args([p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    let table = out.join("hu_stats.csv");
    let said = util::python_script("reference_hu_stats.py", &[&corpus, &table]);
    assert!(said.contains("matches numpy"), "{said}");
    // hu_stats and assemble both take the consensus of the unlabelled classes: the engine
    // computed it once, in its consensus node, for both.
    let profile = std::fs::read_to_string(out.join("profile.json")).unwrap();
    assert!(profile.contains("\"consensus\""), "{profile}");
    // The built-in stages beside it are unchanged by it: the same tables and final labels as
    // without it (where assemble computes the consensus itself).
    let plain = util::convert_pipeline(
        t.path(),
        "[runtime]\nslab_depth = 6\n[[stages]]\nkind = \"attention\"\n[[stages]]\nkind = \"assemble\"\n[[stages]]\nkind = \"rank\"\n",
    );
    let out2 = t.path().join("plain");
    assert!(util::run(&plain, &corpus, &out2, &[]).status.success());
    let plain_profile = std::fs::read_to_string(out2.join("profile.json")).unwrap();
    assert!(!plain_profile.contains("\"consensus\""), "{plain_profile}");
    for table in ["metrics.csv", "assembly.csv"] {
        assert_eq!(std::fs::read(out.join(table)).unwrap(), std::fs::read(out2.join(table)).unwrap(), "{table}");
    }
    let finals = |o: &Path| {
        util::tree(o).into_iter().filter(|(p, _)| p.to_string_lossy().contains("/final/")).collect::<Vec<_>>()
    };
    assert!(!finals(&out).is_empty());
    assert_eq!(finals(&out), finals(&out2));
    // Stopped by SIGTERM mid-case, the custom stage's state goes into the slab checkpoint with
    // the others', and the resumed run ends with the same table.
    let long = t.path().join("long");
    util::synth(&long, 1, [64, 64, 160]);
    let slow = t.path().join("slow.toml");
    std::fs::write(
        &slow,
        std::fs::read_to_string(&p).unwrap().replace("slab_depth = 6", "slab_depth = 2\ncheckpoint_secs = 0"),
    )
    .unwrap();
    let run = |out: &Path| {
        std::process::Command::new(&example)
            .args([slow.to_str().unwrap(), "--input", long.to_str().unwrap(), "--output", out.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let whole = t.path().join("whole");
    assert!(run(&whole).wait().unwrap().success());
    let stopped = t.path().join("stopped");
    let child = run(&stopped);
    let cases = stopped.join(".slabflow/cases");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let has_checkpoint = || {
        std::fs::read_dir(&cases).is_ok_and(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "slab")))
    };
    while !has_checkpoint() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(has_checkpoint(), "no slab checkpoint after SIGTERM: {}", util::stderr(&o));
    let o = run(&stopped).wait_with_output().unwrap();
    let err = util::stderr(&o);
    assert!(o.status.success() && err.contains("Resuming the case at slice"), "{err}");
    assert_eq!(
        std::fs::read(stopped.join("hu_stats.csv")).unwrap(),
        std::fs::read(whole.join("hu_stats.csv")).unwrap()
    );
    // An unknown parameter of the custom kind is reported with the rest of the file's problems.
    let bad = t.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&p).unwrap().replace("kind = \"hu_stats\"", "kind = \"hu_stats\"\ncolour = 1"),
    )
    .unwrap();
    let o = std::process::Command::new(&example).arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("(hu_stats): colour: not a parameter of hu_stats"), "{}", util::stderr(&o));
}
