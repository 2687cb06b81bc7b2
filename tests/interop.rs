//! Interop with the Python imaging world: slabflow's Zarr output, converted from files that
//! nibabel wrote, is read back by `zarr2nii` (nifti-zarr) and zarr-python and compared with
//! nibabel's reading of the inputs (tests/python/check_interop.py).

mod util;

use std::path::Path;

use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nifti")
}

/// Every readable nibabel fixture becomes the CT of a case; conversion at slab depth 4 (so the
/// 37-slice fixture spans ten chunks, the last one short) round-trips through zarr2nii.
#[test]
fn every_fixture_round_trips_through_zarr2nii_and_zarr_python() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    for (name, info) in manifest["readable"].as_object().unwrap() {
        let file = info["file"].as_str().unwrap();
        let ext = if file.ends_with(".gz") { "nii.gz" } else { "nii" };
        std::fs::create_dir_all(corpus.join(name)).unwrap();
        std::fs::copy(fixtures().join(file), corpus.join(name).join(format!("ct.{ext}"))).unwrap();
    }
    // One case with predictions and labels stored with and without scaling.
    let case = corpus.join("zz_with_predictions");
    for (src, dst) in [
        ("dtype_int16.nii", "ct.nii"),
        ("dtype_uint8.nii", "predictions/m1/a.nii"),
        ("scaled_uint8.nii", "predictions/m1/b.nii"),
        ("dtype_uint8.nii", "segmentations/a.nii"),
    ] {
        std::fs::create_dir_all(case.join(dst).parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join(src), case.join(dst)).unwrap();
    }
    let pipeline = t.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"version = 1
[input]
root = "corpus"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
label = "{case}/segmentations/{class}.nii.gz"
models = ["m1"]
classes = ["a", "b"]
[output]
dir = "out"
[runtime]
slab_depth = 4
"#,
    )
    .unwrap();
    let out = t.path().join("out");
    let o = util::run(&pipeline, &corpus, &out, &[]);
    // Cases other than the last have no prediction files: they fail, naming the missing file.
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    assert!(failures.contains("missing prediction of model m1 for class a"), "{failures}");
    assert!(!failures.contains("zz_with_predictions"), "{failures}");

    // Now the fixtures alone, CT only.
    std::fs::write(&pipeline, "version = 1\n[input]\nroot = \"c\"\nct = \"{case}/ct.nii.gz\"\n[output]\ndir = \"o\"\n[runtime]\nslab_depth = 4\n").unwrap();
    let out2 = t.path().join("out2");
    std::fs::remove_dir_all(&case).unwrap();
    let o = util::run(&pipeline, &corpus, &out2, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let report = util::python_script("check_interop.py", &[&out2, &corpus]);
    assert!(report.contains(&format!("OK {} volumes", manifest["readable"].as_object().unwrap().len())), "{report}");
}

/// A synthetic corpus (varied dtypes, .nii and .nii.gz, RAS and LPS, uint8 and float32
/// predictions, labels) round-trips every volume.
#[test]
fn synthetic_corpus_round_trips_every_volume() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 5, [24, 20, 19]);
    let pipeline = util::convert_pipeline(t.path(), "[runtime]\nslab_depth = 8\n");
    let out = t.path().join("out");
    let o = util::run(&pipeline, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let report = util::python_script("check_interop.py", &[&out, &corpus]);
    // 5 CTs + 5 × 27 predictions + the labels synth wrote.
    let labels = walk_count(&corpus, "segmentations");
    assert!(report.contains(&format!("OK {} volumes", 5 + 5 * 27 + labels)), "{report}");
}

/// Sharded output (slab-sized shards of sub-chunks) and plain zstd read back the same.
#[test]
fn sharded_and_plain_zstd_outputs_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 2, [40, 33, 13]);
    for (i, output) in
        ["codec = \"zstd\"\nlevel = 3\nsubchunks = [4, 16, 16]", "codec = \"blosc-lz4\""].iter().enumerate()
    {
        let dir = t.path().join(format!("run{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(util::convert_pipeline(&dir, "[runtime]\nslab_depth = 8\n"))
            .unwrap()
            .replace("dir = \"out\"", &format!("dir = \"out\"\n{output}"));
        let pipeline = dir.join("pipeline.toml");
        std::fs::write(&pipeline, text).unwrap();
        let out = dir.join("out");
        let o = util::run(&pipeline, &corpus, &out, &[]);
        assert!(o.status.success(), "{}", util::stderr(&o));
        let report = util::python_script("check_interop.py", &[&out, &corpus]);
        assert!(report.starts_with("OK "), "{report}");
        if i == 0 {
            let meta = std::fs::read_to_string(out.join("cases/BDMAP_00000001.zarr/ct/0/zarr.json")).unwrap();
            assert!(meta.contains("sharding_indexed"), "{meta}");
        }
    }
}

fn walk_count(corpus: &Path, sub: &str) -> usize {
    std::fs::read_dir(corpus)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path().join(sub)).map(|d| d.count()).unwrap_or(0))
        .sum()
}
