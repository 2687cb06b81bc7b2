//! The journal never lies (issue 13's reproductions): runs, shards and pipelines that would
//! overlap on one output are refused, naming the conflict, and `--fresh` clears it; merge
//! proves the shards covered the corpus; the lock holds where OS locks do not (a lease); an
//! unreadable manifest is refused, not taken for absent. Kills at every step are in
//! tests/faults.rs.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn pipeline(dir: &Path, name: &str, budget: &str) -> PathBuf {
    let p = util::convert_pipeline(
        dir,
        &format!(
            "[runtime]\nslab_depth = 4\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"rank\"\nbudget = {budget}\n"
        ),
    );
    let named = dir.join(name);
    std::fs::rename(&p, &named).unwrap();
    named
}

fn run(p: &Path, corpus: &Path, out: &Path, extra: &[&str]) -> Output {
    util::run(p, corpus, out, extra)
}

fn status(out: &Path) -> String {
    let o = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(2), "expected a refusal: {}", util::stderr(o));
    assert!(util::stderr(o).contains(what), "expected «{what}» in: {}", util::stderr(o));
}

/// A lease as another host's live run leaves it, renewed `age` ago.
fn foreign_lease(out: &Path, name: &str, what: &str, age: Duration) {
    let dir = out.join(".slabflow.leases");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let owner = format!(
        r#"{{"token":"t","host":"node07","boot_id":"b","pid":4242,"pid_start":1,"what":"{what}","started_unix":0}}"#
    );
    std::fs::write(&path, owner).unwrap();
    let f = std::fs::File::options().append(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

/// `slabflow run` held alive mid-run: stopped (SIGSTOP, by the fault shim) at its `at`-th
/// sync, with `envs` set; returned once it is stopped.
fn stopped_at_sync(p: &Path, corpus: &Path, out: &Path, at: u32, envs: &[(&str, &str)]) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_slabflow"))
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env("LD_PRELOAD", util::fault_shim())
        .env("SLABFLOW_FAULT_CLASSES", "s")
        .env("SLABFLOW_FAULT_AT", at.to_string())
        .env("SLABFLOW_FAULT_SIGNAL", "19")
        .envs(envs.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('T')))
            .unwrap_or(false)
    };
    let t0 = std::time::Instant::now();
    while !stopped() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the run never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn overlapping_splits_and_pipelines_are_refused_and_fresh_clears_them() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 4, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let other = pipeline(t.path(), "other.toml", "0.5");
    let out = t.path().join("out");

    assert!(run(&p, &corpus, &out, &["--shard", "0/2"]).status.success());
    // Another split would give the same cases to two shards: refused, the output unchanged.
    let before = util::tree(&out.join("cases"));
    refused(&run(&p, &corpus, &out, &["--shard", "0/3"]), "holds a run split in 2 shards, not 3");
    refused(&run(&p, &corpus, &out, &[]), "holds a run split in 2 shards");
    assert_eq!(util::tree(&out.join("cases")), before);

    // Starting over needs every other run gone: with shard 1/2 alive on another node, a
    // --fresh of another split is refused, naming it.
    foreign_lease(&out, "shard-1-of-2.lease", "shard 1/2", Duration::ZERO);
    let o = run(&p, &corpus, &out, &["--shard", "0/3", "--fresh"]);
    refused(&o, "shard 1/2, pid 4242 on node07");
    assert!(util::stderr(&o).contains("holds a run split in 2 shards, not 3"), "{}", util::stderr(&o));
    std::fs::remove_file(out.join(".slabflow.leases/shard-1-of-2.lease")).unwrap();
    // Alone, --fresh on a shard clears what blocks it.
    assert!(run(&p, &corpus, &out, &["--shard", "0/3", "--fresh"]).status.success());
    let st = status(&out);
    assert!(st.contains("shard 0/3: 2 cases, 2 done") && st.contains("shard 1/3: 1 cases, 0 done"), "{st}");
    assert!(!st.contains("of-2") && !st.contains("/2:"), "the old split is gone: {st}");

    // A single-node run, then a one-shard run of another pipeline: refused (it used to
    // rewrite the cases and leave status counting them twice).
    assert!(run(&p, &corpus, &out, &["--fresh"]).status.success());
    refused(&run(&other, &corpus, &out, &["--shard", "0/1"]), "`budget = 0.3` became `budget = 0.5`");
    refused(&run(&p, &corpus, &out, &["--shard", "0/1"]), "holds a single-node run; a shard cannot join it");
    assert!(status(&out).contains("4 discovered, 4 done, 0 failed, 0 left"), "{}", status(&out));
}

#[test]
fn merge_proves_the_shards_covered_the_corpus() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 4, [16, 16, 8]);
    // The corpus has 3 cases when the sharded run begins; the fourth arrives later.
    let aside = t.path().join("BDMAP_00000004");
    std::fs::rename(corpus.join("BDMAP_00000004"), &aside).unwrap();
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("out");
    assert!(run(&p, &corpus, &out, &["--shard", "0/2"]).status.success());
    assert!(run(&p, &corpus, &out, &["--shard", "1/2"]).status.success());
    std::fs::rename(&aside, corpus.join("BDMAP_00000004")).unwrap();

    // Resuming a shard on the changed corpus would move cases between shards: refused.
    refused(&run(&p, &corpus, &out, &["--shard", "1/2"]), "1 case added (BDMAP_00000004)");
    // And merge names what the shards did not cover (it used to merge one case twice).
    let o = util::slabflow(&["merge", "--output", out.to_str().unwrap()]);
    refused(&o, "the corpus changed since the sharded run began (1 case added (BDMAP_00000004))");
    assert!(!out.join("ranking.csv").exists());

    // The corpus restored, the merge proves coverage and writes the tables.
    std::fs::rename(corpus.join("BDMAP_00000004"), &aside).unwrap();
    let o = util::slabflow(&["merge", "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    let ids: Vec<&str> = ranking.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["BDMAP_00000001", "BDMAP_00000002", "BDMAP_00000003"], "each case once: {ranking}");
}

#[test]
fn the_lease_guards_where_os_locks_do_not() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 2, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("out");

    // A live run on another node (its OS lock invisible here): refused at once, naming it.
    foreign_lease(&out, "run.lease", "a single-node run", Duration::from_secs(3));
    let o = run(&p, &corpus, &out, &[]);
    refused(&o, "in use by another slabflow run (a single-node run, pid 4242 on node07, lease renewed 3 s ago");
    assert!(util::stderr(&o).contains("expires in"), "{}", util::stderr(&o));
    // A shard of it is refused too.
    refused(&run(&p, &corpus, &out, &["--shard", "0/2"]), "pid 4242 on node07");
    // Not renewed for longer than the expiry: that run is dead, and this one takes over.
    foreign_lease(&out, "run.lease", "a single-node run", Duration::from_secs(600));
    let o = run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(util::stderr(&o).contains("Taking over the lease of a run that is gone"), "{}", util::stderr(&o));

    // Where flock fails (Lustre noflock: ENOSYS), two runs on this host still exclude each
    // other: the first is held alive mid-run (SIGSTOP at its first sync) holding its lease.
    let out2 = t.path().join("out2");
    let first = stopped_at_sync(&p, &corpus, &out2, 8, &[("SLABFLOW_FAULT_FLOCK", "38")]);
    let second = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out2.to_str().unwrap()])
        .env("LD_PRELOAD", util::fault_shim())
        .env("SLABFLOW_FAULT_FLOCK", "38")
        .output()
        .unwrap();
    refused(&second, &format!("a single-node run, pid {} on", first.id()));
    // SAFETY: signals a child process this test started and has not reaped.
    unsafe { libc::kill(first.id() as i32, libc::SIGCONT) };
    let end = first.wait_with_output().unwrap();
    assert!(end.status.success(), "{}", util::stderr(&end));
    assert!(run(&p, &corpus, &out2, &[]).status.success(), "released at the end");
}

#[test]
fn an_unreadable_manifest_is_refused_not_taken_for_absent() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 1, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("out");
    assert!(run(&p, &corpus, &out, &[]).status.success());
    std::fs::write(out.join(".slabflow/run.json"), b"{\"format\": 2, \"run_id\": ").unwrap();
    let o = run(&p, &corpus, &out, &[]);
    refused(&o, ".slabflow/run.json cannot be read");
    assert!(util::stderr(&o).contains("--fresh"), "{}", util::stderr(&o));
    assert!(out.join("cases/BDMAP_00000001.zarr/zarr.json").is_file(), "nothing discarded without --fresh");
    assert!(run(&p, &corpus, &out, &["--fresh"]).status.success());
    assert!(status(&out).contains("1 discovered, 1 done"), "{}", status(&out));
}

#[test]
fn a_run_whose_lease_was_taken_over_exits_at_once() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    // Enough work that the run is still going when its heartbeat finds the lease gone.
    util::synth(&corpus, 3, [64, 64, 48]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("out");
    // Frozen after its first case (as by a long NFS outage), past a one-second expiry.
    let run = stopped_at_sync(&p, &corpus, &out, 16, &[("SLABFLOW_LEASE_SECS", "1")]);
    // Another node takes the expired lease over meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    let finished: Vec<(String, std::collections::BTreeMap<PathBuf, Vec<u8>>)> =
        std::fs::read_dir(out.join(".slabflow/cases"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json").map(String::from))
            .map(|id| {
                let tree = util::tree(&out.join("cases").join(format!("{id}.zarr")));
                (id, tree)
            })
            .collect();
    assert!(!finished.is_empty(), "stopped before any case was finished");
    foreign_lease(&out, "run.lease", "a single-node run", Duration::ZERO);
    // SAFETY: signals a child process this test started and has not reaped.
    unsafe { libc::kill(run.id() as i32, libc::SIGCONT) };
    let end = run.wait_with_output().unwrap();
    assert_eq!(end.status.code(), Some(75), "{}", util::stderr(&end));
    assert!(util::stderr(&end).contains("taken over by another run"), "{}", util::stderr(&end));
    assert!(!out.join("ranking.csv").exists(), "it wrote nothing more");
    // Nor removed anything: the groups of cases it had finished are the new holder's now.
    for (id, group) in &finished {
        assert_eq!(&util::tree(&out.join("cases").join(format!("{id}.zarr"))), group, "{id}");
    }
}

#[test]
fn every_array_task_started_with_fresh_gets_going() {
    // SLURM runs the same command on every task: `--fresh --shard K/4`, all at once, on an
    // output holding a single-node run. One starts it over; the others find the manifest they
    // want and go on (they used to be refused).
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 8, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let array = |out: &Path| {
        let tasks: Vec<_> = (0..4)
            .map(|k| {
                util::bin()
                    .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap()])
                    .args(["--output", out.to_str().unwrap(), "--fresh", "--shard", &format!("{k}/4")])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (k, task) in tasks.into_iter().enumerate() {
            let o = task.wait_with_output().unwrap();
            assert!(o.status.success(), "task {k}: {}", util::stderr(&o));
        }
        let o = util::slabflow(&["merge", "--output", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", util::stderr(&o));
        assert!(status(out).contains("8 discovered, 8 done, 0 failed, 0 left"), "{}", status(out));
    };
    // On a new output, and on one holding a single-node run.
    array(&t.path().join("new"));
    let out = t.path().join("out");
    assert!(run(&p, &corpus, &out, &[]).status.success());
    array(&out);
}

#[test]
fn fresh_deletes_only_what_a_journal_says_slabflow_wrote() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 1, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("mydata");
    std::fs::create_dir_all(out.join("review")).unwrap();
    std::fs::write(out.join("review/notes.txt"), b"mine").unwrap();
    assert!(run(&p, &corpus, &out, &["--fresh"]).status.success());
    assert_eq!(std::fs::read(out.join("review/notes.txt")).unwrap(), b"mine", "no journal: nothing of slabflow's");
    // Its journal deleted by hand: --fresh still removes what is recognisably slabflow's (a
    // table of another pipeline, a group of a case no longer in the corpus), not the notes.
    std::fs::remove_dir_all(out.join(".slabflow")).unwrap();
    std::fs::write(out.join("assembly.csv"), b"stale").unwrap();
    std::fs::rename(out.join("cases/BDMAP_00000001.zarr"), out.join("cases/BDMAP_00000009.zarr")).unwrap();
    assert!(run(&p, &corpus, &out, &["--fresh"]).status.success());
    assert!(!out.join("assembly.csv").exists() && !out.join("cases/BDMAP_00000009.zarr").exists());
    assert_eq!(std::fs::read(out.join("review/notes.txt")).unwrap(), b"mine");
}

#[test]
fn review_holds_exactly_the_flagged_cases() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [16, 16, 8]);
    let p = util::convert_pipeline(
        t.path(),
        "[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.5\n\n[[stages]]\nkind = \"review\"\n",
    );
    let reference = t.path().join("reference");
    assert!(run(&p, &corpus, &reference, &[]).status.success());
    // Two cases fail first (so the third is flagged), then are redone.
    let out = t.path().join("out");
    let broken = corpus.join("BDMAP_00000001/predictions/unet/liver.nii.gz");
    let kept = std::fs::read(&broken).unwrap();
    let broken2 = corpus.join("BDMAP_00000002/predictions/unet/liver.nii.gz");
    let kept2 = std::fs::read(&broken2).unwrap();
    std::fs::write(&broken, b"not a NIfTI file").unwrap();
    std::fs::write(&broken2, b"not a NIfTI file").unwrap();
    assert_eq!(run(&p, &corpus, &out, &[]).status.code(), Some(1));
    std::fs::write(&broken, kept).unwrap();
    std::fs::write(&broken2, kept2).unwrap();
    assert!(run(&p, &corpus, &out, &[]).status.success());
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d.join("review"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&out), names(&reference));
    assert_eq!(util::tree(&out.join("review")), util::tree(&reference.join("review")));
}
