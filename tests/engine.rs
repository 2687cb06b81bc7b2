//! The engine's outputs, pinned: a pipeline with every stage kind (paper attention, and again
//! with released attention) on a fixed synthetic corpus, every output file's digest compared
//! with `tests/data/engine_outputs.txt`, recorded with the engine of before the stage graph
//! (issue 15). A change of engine must not change one byte of what a pipeline writes.
//!
//! To record the digests again (only for a change meant to change outputs, said in its
//! commit): `SLABFLOW_RECORD_ENGINE_OUTPUTS=1 cargo test --release --test engine`.

mod util;

use std::path::Path;

const STAGES: &str = r#"
[[stages]]
kind = "normalize"
[[stages]]
kind = "attention"
mode = "MODE"
[[stages]]
kind = "metrics"
[[stages]]
kind = "assemble"
export_nifti = true
[[stages]]
kind = "evaluate"
[[stages]]
kind = "rank"
budget = 0.5
[[stages]]
kind = "review"
"#;

/// `<xxh3-128>  <mode>/<path>` for every output file (the journal aside), sorted.
fn digests(mode: &str, out: &Path) -> Vec<String> {
    util::outputs(out)
        .into_iter()
        .map(|(path, bytes)| format!("{:032x}  {mode}/{}", xxhash_rust::xxh3::xxh3_128(&bytes), path.display()))
        .collect()
}

#[test]
fn every_stage_kind_writes_the_bytes_the_recorded_engine_wrote() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth_with(&corpus, 3, [40, 36, 20], &["--seed", "7", "--all-labels"]);
    // A radiologist's revision, so that assemble takes every source.
    let case = corpus.join("BDMAP_00000002");
    std::fs::create_dir_all(case.join("revised")).unwrap();
    std::fs::copy(case.join("predictions/unet/liver.nii.gz"), case.join("revised/liver.nii.gz")).unwrap();
    let mut lines = Vec::new();
    for mode in ["paper", "released"] {
        let text = format!("[runtime]\nslab_depth = 6\n{}", STAGES.replace("MODE", mode));
        let p = util::convert_pipeline(t.path(), &text);
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "label = \"{case}/segmentations/{class}.nii.gz\"",
            "label = \"{case}/segmentations/{class}.nii.gz\"\nrevised = \"{case}/revised/{class}.nii.gz\"",
        );
        std::fs::write(&p, text).unwrap();
        let out = t.path().join(format!("out-{mode}"));
        let o = util::run(&p, &corpus, &out, &[]);
        assert!(o.status.success(), "{mode}: {}", util::stderr(&o));
        lines.extend(digests(mode, &out));
    }
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/engine_outputs.txt");
    let now = lines.join("\n") + "\n";
    if std::env::var_os("SLABFLOW_RECORD_ENGINE_OUTPUTS").is_some() {
        std::fs::write(&recorded, &now).unwrap();
        return;
    }
    let before = std::fs::read_to_string(&recorded).unwrap();
    let differ: Vec<&str> = now.lines().filter(|l| !before.lines().any(|b| b == *l)).take(10).collect();
    let gone: Vec<&str> = before.lines().filter(|l| !now.lines().any(|n| n == *l)).take(10).collect();
    assert!(
        differ.is_empty() && gone.is_empty(),
        "outputs differ from the recorded engine's:\nnow {differ:#?}\nbefore {gone:#?}"
    );
}
