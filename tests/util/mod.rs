//! Helpers shared by the integration tests: the real binary, temp dirs, and the Python
//! reference environment (nibabel, zarr-python, nifti-zarr, surface-distance).
#![allow(dead_code)]

pub mod s3;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slabflow"));
    c.env("RUST_LOG", "warn");
    c
}

/// Runs the binary with `args`; returns its output.
pub fn slabflow(args: &[&str]) -> Output {
    bin().args(args).output().expect("running slabflow")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `slabflow run PIPELINE --input CORPUS --output OUT [extra…]`.
pub fn run(pipeline: &Path, corpus: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args =
        vec!["run", pipeline.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    slabflow(&args)
}

/// Writes a synthetic corpus with the real binary.
pub fn synth(dir: &Path, cases: usize, shape: [usize; 3]) {
    synth_with(dir, cases, shape, &[]);
}

/// [`synth`] with more of its options (`--all-labels`, `--seed N`).
pub fn synth_with(dir: &Path, cases: usize, shape: [usize; 3], extra: &[&str]) {
    let s = shape.map(|n| n.to_string());
    let cases = cases.to_string();
    let mut args = vec!["synth", "--out", dir.to_str().unwrap(), "--cases", &cases, "--shape", &s[0], &s[1], &s[2]];
    args.extend_from_slice(extra);
    let o = slabflow(&args);
    assert!(o.status.success(), "synth failed: {}", stderr(&o));
}

/// The contract's pipeline layout with no stages, for conversion tests.
pub fn convert_pipeline(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"version = 1
[input]
root = "corpus"
ct = "{{case}}/ct.nii.gz"
prediction = "{{case}}/predictions/{{model}}/{{class}}.nii.gz"
label = "{{case}}/segmentations/{{class}}.nii.gz"
metadata = "meta.csv"
models = ["swin_unetr", "nnunet", "unet"]
classes = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
[output]
dir = "out"
{extra}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A Python interpreter with tests/python/requirements.txt installed.
///
/// `SLABFLOW_PYTHON` names one to use as is; otherwise a venv is made once in
/// `target/py-venv` (guarded by a file lock, reused while the requirements are unchanged).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLABFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reqs = root.join("tests/python/requirements.txt");
    let venv = root.join("target/py-venv");
    let py = venv.join("bin/python");
    let text = std::fs::read_to_string(&reqs).unwrap();
    let stamp = venv.join(format!(".installed-{:016x}", fnv(text.as_bytes())));
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = File::create(root.join("target/py-venv.lock")).unwrap();
    lock.lock().unwrap();
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run_ok(Command::new(&host).args(["-m", "venv"]).arg(&venv), "creating the Python venv");
        run_ok(
            Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"]).arg(&reqs),
            "installing tests/python/requirements.txt",
        );
        File::create(&stamp).unwrap();
    }
    py
}

fn run_ok(c: &mut Command, what: &str) {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a script of tests/python with `args`; panics with its output unless it succeeds.
pub fn python_script(script: &str, args: &[&Path]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(python()).arg(root.join("tests/python").join(script)).args(args).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{script} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}

/// Every file under `dir` with its bytes, by relative path.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every file of an output but the journal, the lock, the leases and `profile.json` (timings),
/// by relative path (a tombstone or stray temp file counts: it is a leftover).
pub fn outputs(out: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut t = tree(out);
    t.retain(|p, _| {
        let top = p.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        !matches!(top.as_str(), ".slabflow" | ".slabflow.lock" | ".slabflow.leases" | "profile.json")
    });
    t
}

/// `tests/faults/shim.c` built as an LD_PRELOAD library (once per test binary), with the C
/// compiler Rust links with: kills a run, fails a call, or stops a run at its Nth file
/// change, or takes its OS locks away.
pub fn fault_shim() -> &'static Path {
    static SHIM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/shim.c");
        let lib = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("slabflow-fault-shim-{}.so", std::process::id()));
        let o = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("running the C compiler (cc) to build tests/faults/shim.c");
        assert!(o.status.success(), "building the fault shim: {}", stderr(&o));
        lib
    })
}
