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
    assert!(report.contains("OK 45 class maps, 5 cases ranked"), "{report}");
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
