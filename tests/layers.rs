//! The folders of `src/` are layers that follow the data — files (durable writes, who holds an
//! output) → readers and writers (NIfTI, Zarr, synthetic corpora) → inputs (the corpus and its
//! templates) → stages → the journal → the engine → the command line — and a folder uses only
//! the folders below it: no import circle, so a newcomer can read them bottom up.

use std::path::Path;

/// Bottom first; a module may name only modules before it in this list.
const LAYERS: &[&str] = &["files", "nifti", "zarr", "synth", "input", "stages", "checkpoint", "pipeline", "slurm"];

#[test]
fn every_folder_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut seen = 0;
    for (rank, module) in LAYERS.iter().enumerate() {
        let dir = src.join(module);
        let files: Vec<std::path::PathBuf> =
            if dir.is_dir() { walk(&dir) } else { vec![src.join(format!("{module}.rs"))] };
        for file in files {
            seen += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (i, _) in code.match_indices("crate::") {
                    let used: String = code[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    match LAYERS.iter().position(|m| *m == used) {
                        Some(r) if r > rank => problems.push(format!(
                            "{}:{}: `{module}` uses `{used}`, a layer above it",
                            file.strip_prefix(&src).unwrap().display(),
                            n + 1
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(seen > 20, "the layers were not found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
