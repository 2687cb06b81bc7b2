//! Fault injection: a run, a resume, a `--fresh`, a shard and a merge are killed (SIGKILL) at
//! every rename, link, delete, truncate and sync they make, and at evenly spaced writes and
//! creates among the rest; or have one of those calls fail (ENOSPC, EIO). The same command (or
//! what finishes the job) then runs again, and every output must equal a clean run's, byte
//! for byte, with no leftovers.
//!
//! The faults come from `tests/faults/shim.c`, an LD_PRELOAD library counting those calls over
//! all threads of the process (`util::fault_shim`).

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A fault to inject: the `at`-th call among `classes`, killed or failed with `errno`.
#[derive(Clone, Copy, Debug)]
struct Fault {
    classes: &'static str,
    at: u64,
    errno: Option<i32>,
}

/// Runs slabflow with `args` under the shim: injecting `fault`, or counting `classes`.
fn traced(args: &[String], fault: Result<Fault, &str>) -> (Output, Option<u64>) {
    let mut c = util::bin();
    c.args(args).env("LD_PRELOAD", util::fault_shim());
    let count = tempfile::NamedTempFile::new().unwrap();
    match fault {
        Ok(f) => {
            c.env("SLABFLOW_FAULT_CLASSES", f.classes).env("SLABFLOW_FAULT_AT", f.at.to_string());
            if let Some(e) = f.errno {
                c.env("SLABFLOW_FAULT_ERRNO", e.to_string());
            }
        }
        Err(classes) => {
            c.env("SLABFLOW_FAULT_CLASSES", classes).env("SLABFLOW_FAULT_COUNT", count.path());
        }
    }
    let o = c.output().unwrap();
    let n = std::fs::read_to_string(count.path()).ok().and_then(|s| s.trim().parse().ok());
    (o, n)
}

/// A command line, from an output directory.
type Command<'a> = dyn Fn(&Path) -> Vec<String> + 'a;

fn plain(args: &[String]) -> Output {
    util::bin().args(args).output().unwrap()
}

const TEXT: &str = r#"version = 1
[input]
root = "corpus"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
label = "{case}/segmentations/{class}.nii.gz"
revised = "{case}/revised/{class}.nii.gz"
metadata = "meta.csv"
models = ["swin_unetr", "unet"]
classes = ["liver", "pancreas"]
[output]
dir = "out"
[runtime]
slab_depth = 4
checkpoint_secs = 0
[[stages]]
kind = "normalize"
[[stages]]
kind = "attention"
[[stages]]
kind = "metrics"
[[stages]]
kind = "rank"
budget = 0.4
[[stages]]
kind = "review"
[[stages]]
kind = "assemble"
export_nifti = true
"#;

/// The corpus and pipeline every scenario runs: small, but with every kind of output —
/// slab checkpoints at each slab, review exports, a release export.
struct World {
    _t: tempfile::TempDir,
    dir: PathBuf,
    corpus: PathBuf,
    pipeline: PathBuf,
    reference: BTreeMap<PathBuf, Vec<u8>>,
}

impl World {
    fn new() -> World {
        World::with(true)
    }

    /// The pipeline's text, with or without the release export.
    fn text(export: bool) -> String {
        TEXT.replace("export_nifti = true", &format!("export_nifti = {export}"))
    }

    fn with(export: bool) -> World {
        // On tmpfs where there is one: the faults are kills and failed calls, not power cuts,
        // and syncfs on a disk would serialise the scenarios (and flush whatever else the
        // machine has dirty) hundreds of times.
        // (Each scenario needs a few MB; a container's /dev/shm may be as small as 64 MiB.)
        let shm = Path::new("/dev/shm");
        let free_kib = std::process::Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(shm)
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1)?.trim().parse::<u64>().ok());
        let t = if free_kib.is_some_and(|k| k > 256 << 10) { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        let t = t.or_else(|_| tempfile::tempdir()).unwrap();
        let dir = t.path().to_path_buf();
        let corpus = dir.join("corpus");
        util::synth(&corpus, 3, [16, 16, 12]);
        let text = World::text(export);
        let pipeline = dir.join("p.toml");
        std::fs::write(&pipeline, &text).unwrap();
        let mut w = World { _t: t, dir, corpus, pipeline, reference: BTreeMap::new() };
        let reference = w.dir.join("reference");
        let o = plain(&w.run(&reference, &[]));
        assert!(o.status.success(), "{}", util::stderr(&o));
        w.reference = util::outputs(&reference);
        assert!(w.reference.keys().any(|p| p.starts_with("release")) == export);
        assert!(w.reference.keys().any(|p| p.starts_with("review")));
        w
    }

    fn run(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["run", self.pipeline.to_str().unwrap(), "--input", self.corpus.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        a.extend(["--output".to_string(), out.to_str().unwrap().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// [`World::run`] with another pipeline file.
    fn run_pipeline(&self, pipeline: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = self.run(out, extra);
        a[1] = pipeline.to_str().unwrap().to_string();
        a
    }

    fn merge(&self, out: &Path) -> Vec<String> {
        vec!["merge".into(), "--output".into(), out.to_str().unwrap().into()]
    }

    /// Kills (or fails) `victim` at each chosen point in turn, from the state `setup` makes,
    /// then runs `recover` and checks the outputs equal the reference.
    fn scenario(
        &self,
        name: &str,
        setup: &dyn Fn(&Path),
        victim: &Command<'_>,
        recover: &[&Command<'_>],
        errnos: Option<&[(&'static str, i32)]>,
    ) {
        let out = self.dir.join(format!("out-{name}"));
        let fresh = || {
            let _ = std::fs::remove_dir_all(&out);
            setup(&out);
        };
        // Kill points: every rename/link, truncate and sync; 60 deletes and 40 writes/creates,
        // evenly spaced (a --fresh deletes hundreds of files, alike but for their names).
        let mut faults = Vec::new();
        let groups: Vec<(&'static str, Option<i32>, usize)> = match errnos {
            None => vec![("rst", None, usize::MAX), ("d", None, 60), ("wcf", None, 40)],
            Some(list) => list.iter().map(|&(classes, e)| (classes, Some(e), 25)).collect(),
        };
        for (classes, errno, most) in groups {
            fresh();
            let (o, n) = traced(&victim(&out), Err(classes));
            assert!(o.status.success() || errno.is_some(), "{name}: the counting run failed: {}", util::stderr(&o));
            let n = n.expect("the shim wrote its count");
            assert!(n > 0, "{name}: no {classes} calls counted");
            let step = (n as usize).div_ceil(most.min(n as usize)).max(1);
            faults.extend((1..=n).step_by(step).map(|at| Fault { classes, at, errno }));
        }
        for f in &faults {
            fresh();
            let (o, _) = traced(&victim(&out), Ok(*f));
            if f.errno.is_none() {
                // Two cases run at once, so a run from a mid-way state makes a few calls more
                // or fewer than the one counted: past its last call, it simply finishes.
                assert!(
                    o.status.code().is_none() || o.status.success(),
                    "{name}: {f:?} neither killed it nor let it finish: {}",
                    util::stderr(&o)
                );
            }
            for r in recover {
                let o = plain(&r(&out));
                assert!(
                    o.status.success(),
                    "{name}: after {f:?}, `{}` failed: {}",
                    r(&out).join(" "),
                    util::stderr(&o)
                );
            }
            let got = util::outputs(&out);
            if got != self.reference {
                let differ: Vec<&PathBuf> = self
                    .reference
                    .keys()
                    .chain(got.keys())
                    .filter(|k| got.get(*k) != self.reference.get(*k))
                    .take(8)
                    .collect();
                panic!("{name}: after {f:?} and recovery, the outputs differ from a clean run's: {differ:?}");
            }
        }
        eprintln!("{name}: {} faults, each recovered to a clean run's outputs", faults.len());
    }
}

#[test]
fn a_killed_run_reruns_to_a_clean_runs_outputs() {
    let w = World::new();
    w.scenario("run", &|_| {}, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], None);
}

#[test]
fn a_killed_resume_reruns_to_a_clean_runs_outputs() {
    let w = World::new();
    // A first run killed at its 40th sync, mid-way: slab checkpoints and some records.
    let setup = |o: &Path| {
        let (r, _) = traced(&w.run(o, &[]), Ok(Fault { classes: "s", at: 40, errno: None }));
        assert!(r.status.code().is_none(), "the first run was not killed");
    };
    w.scenario("resume", &setup, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], None);
}

#[test]
fn a_killed_fresh_never_leaves_records_of_deleted_data() {
    let w = World::new();
    let setup = |o: &Path| assert!(plain(&w.run(o, &[])).status.success());
    // Then the plain command: it must not keep cases whose data the --fresh deleted.
    w.scenario("fresh", &setup, &|o| w.run(o, &["--fresh"]), &[&|o| w.run(o, &[])], None);
}

#[test]
fn a_killed_shard_and_a_killed_merge_end_as_one_node_would() {
    let w = World::new();
    let s0 = |o: &Path| w.run(o, &["--shard", "0/2"]);
    let s1 = |o: &Path| w.run(o, &["--shard", "1/2"]);
    let merge = |o: &Path| w.merge(o);
    w.scenario("shard", &|_| {}, &s0, &[&s0, &s1, &merge], None);
    let both = |o: &Path| {
        assert!(plain(&s0(o)).status.success());
        assert!(plain(&s1(o)).status.success());
    };
    w.scenario("merge", &both, &merge, &[&merge], None);
}

#[test]
fn failed_writes_and_syncs_are_redone_by_the_next_run() {
    let w = World::new();
    let errnos: &[(&str, i32)] =
        &[("w", libc_enospc()), ("c", libc_enospc()), ("s", libc_eio()), ("r", libc_eio()), ("d", libc_eio())];
    w.scenario("errors", &|_| {}, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], Some(errnos));
}

// errno values on Linux (the tests run only there).
fn libc_enospc() -> i32 {
    28
}
fn libc_eio() -> i32 {
    5
}

#[test]
fn a_killed_recovery_of_a_killed_fresh_still_discards_everything() {
    // The output holds a run with release exports; a --fresh with a pipeline that exports
    // none is killed mid-discard; the run that finishes the discard is killed too, at every
    // point; then run again: nothing of the first pipeline's may survive (its exports used to).
    let w = World::with(false);
    let with_exports = w.dir.join("exports.toml");
    std::fs::write(&with_exports, World::text(true)).unwrap();
    let run_with_exports = |o: &Path| w.run_pipeline(&with_exports, o, &[]);
    let setup = |o: &Path| {
        assert!(plain(&run_with_exports(o)).status.success());
        let (r, _) = traced(&w.run(o, &["--fresh"]), Ok(Fault { classes: "d", at: 20, errno: None }));
        assert!(r.status.code().is_none(), "the --fresh was not killed");
    };
    w.scenario("fresh-then-recovery", &setup, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], None);
}

#[test]
fn a_killed_rerun_of_changed_stages_reruns_to_a_clean_runs_outputs() {
    // The output holds a run of other stage parameters (released attention maps, another NSD
    // tolerance, no release export): the rerun redoes those stages for every case, killed at
    // every point; then run again: the outputs must be a clean run's of the new pipeline.
    let w = World::new();
    let before = w.dir.join("before.toml");
    let text = World::text(false)
        .replace("kind = \"attention\"", "kind = \"attention\"\nmode = \"released\"")
        .replace("kind = \"metrics\"", "kind = \"metrics\"\nnsd_tolerance_mm = 2.0");
    std::fs::write(&before, text).unwrap();
    let setup = |o: &Path| {
        let r = plain(&w.run_pipeline(&before, o, &[]));
        assert!(r.status.success(), "{}", util::stderr(&r));
    };
    w.scenario("stages", &setup, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], None);
}

#[test]
fn a_killed_rerun_that_drops_a_stage_an_export_and_a_file_reruns_to_a_clean_runs_outputs() {
    // The output holds a run with an evaluate stage, release exports and a revised file that
    // is gone since: the rerun drops the stage, removes the exports and the file's copy (and
    // redoes assemble), killed at every point; then run again: a clean run's outputs, with
    // nothing of what was dropped left over.
    let w = World::with(false);
    let before = w.dir.join("before.toml");
    std::fs::write(&before, format!("{}[[stages]]\nkind = \"evaluate\"\n", World::text(true))).unwrap();
    let case = w.corpus.join("BDMAP_00000001");
    let label = std::fs::read_dir(case.join("segmentations")).unwrap().next().unwrap().unwrap().path();
    let revised = case.join("revised").join(label.file_name().unwrap());
    let setup = |o: &Path| {
        std::fs::create_dir_all(revised.parent().unwrap()).unwrap();
        std::fs::copy(&label, &revised).unwrap();
        let r = plain(&w.run_pipeline(&before, o, &[]));
        assert!(r.status.success(), "{}", util::stderr(&r));
        assert!(o.join("release").read_dir().unwrap().next().is_some() && o.join("evaluation.csv").is_file());
        std::fs::remove_file(&revised).unwrap();
    };
    w.scenario("dropped", &setup, &|o| w.run(o, &[]), &[&|o| w.run(o, &[])], None);
}
