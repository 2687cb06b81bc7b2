//! The metrics stage against DeepMind `surface-distance` and numpy (tests/python/
//! reference_metrics.py) on masks written by nibabel (tests/python/gen_metrics_corpus.py):
//! anisotropic spacings (0.7×0.7×1.0, 0.9×0.9×5.0, 1.5³, 0.8×0.8×0.3), thin and touching
//! structures, masks on the volume's border, empty masks; slab depths 1, 2, 7 and 64 give
//! byte-identical results.

mod util;

use std::path::Path;

#[test]
fn nsd_dice_and_volumes_match_deepmind_and_numpy_at_every_slab_depth() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::python_script("gen_metrics_corpus.py", &[&corpus]);
    let mut first: Option<String> = None;
    for depth in [1, 2, 7, 64] {
        let p = t.path().join(format!("p{depth}.toml"));
        std::fs::write(
            &p,
            format!(
                r#"version = 1
[input]
root = "corpus"
ct = "{{case}}/ct.nii.gz"
prediction = "{{case}}/predictions/{{model}}/{{class}}.nii.gz"
label = "{{case}}/segmentations/{{class}}.nii.gz"
models = ["m1", "m2", "m3"]
classes = ["sphere", "thin", "border", "touching", "blobs", "empty_gt", "empty_both", "unlabelled"]
[output]
dir = "out"
[runtime]
slab_depth = {depth}
[[stages]]
kind = "metrics"
nsd_tolerance_mm = 1.0
"#
            ),
        )
        .unwrap();
        let out = t.path().join(format!("out{depth}"));
        let o = util::run(&p, &corpus, &out, &[]);
        assert!(o.status.success(), "depth {depth}: {}", util::stderr(&o));
        let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        match &first {
            None => {
                let report = util::python_script("reference_metrics.py", &[&out, &corpus, Path::new("1.0")]);
                assert!(report.contains("OK 32 rows, 28 NSD values"), "{report}");
                first = Some(metrics);
            }
            Some(f) => assert_eq!(&metrics, f, "slab depth {depth} changed metrics.csv"),
        }
    }
}
