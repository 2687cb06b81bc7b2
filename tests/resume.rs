//! Interrupted runs: killed with SIGKILL at random instants (during Zarr writes, journal
//! updates, anywhere), stopped with SIGTERM, or re-run with another pipeline. A resumed run's
//! outputs are byte-identical to an uninterrupted run's, and finished cases are not redone.

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn pipeline(dir: &Path, budget: &str) -> PathBuf {
    util::convert_pipeline(
        dir,
        &format!(
            "[runtime]\nslab_depth = 4\n\n[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = {budget}\n"
        ),
    )
}

/// The outputs the contract fixes: the Zarr groups and the three tables.
fn outputs(out: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut t = util::tree(&out.join("cases"));
    for f in ["metrics.csv", "ranking.csv", "failures.csv"] {
        t.insert(PathBuf::from(f), std::fs::read(out.join(f)).unwrap_or_default());
    }
    t
}

fn start(p: &Path, corpus: &Path, out: &Path) -> std::process::Child {
    util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished_cases(out: &Path) -> usize {
    std::fs::read_dir(out.join(".slabflow/cases"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

#[test]
fn killed_at_random_instants_the_resumed_run_equals_an_uninterrupted_one() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 8, [40, 36, 22]);
    let p = pipeline(t.path(), "0.25");
    let reference = t.path().join("reference");
    let began = Instant::now();
    let o = util::run(&p, &corpus, &reference, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let full = began.elapsed();

    let out = t.path().join("out");
    let mut seed = 0x5eedu64;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    let mut kills = 0;
    // Six rounds from scratch; in each, three runs are killed, each once the journal holds a
    // random number of finished cases plus a random few milliseconds — so the kills land in
    // case set-up, Zarr writes, journal updates — then a last run finishes, and the outputs must
    // be the reference's.
    for round in 0..6 {
        let _ = std::fs::remove_dir_all(&out);
        let mut targets: Vec<usize> = (0..3).map(|_| rand(8) as usize).collect();
        targets.sort();
        let mut progress = Vec::new();
        for target in targets {
            let mut child = start(&p, &corpus, &out);
            let deadline = Instant::now() + Duration::from_secs(60);
            while finished_cases(&out) < target && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            std::thread::sleep(Duration::from_micros(rand(full.as_micros() as u64 / 8)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            child.wait().unwrap();
            progress.push(finished_cases(&out));
        }
        let o = util::run(&p, &corpus, &out, &[]);
        assert!(o.status.success(), "{}", util::stderr(&o));
        assert_eq!(
            outputs(&out),
            outputs(&reference),
            "round {round}: resumed outputs differ (finished cases after each kill: {progress:?})"
        );
    }
    assert!(kills >= 12, "too few runs were killed mid-way ({kills} of 18)");
}

#[test]
fn finished_cases_are_not_recomputed() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [24, 20, 12]);
    let p = pipeline(t.path(), "0.05");
    let out = t.path().join("out");
    assert!(util::run(&p, &corpus, &out, &[]).status.success());
    let chunk = out.join("cases/BDMAP_00000001.zarr/ct/zarr.json");
    let before = std::fs::metadata(&chunk).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let o = util::bin()
        .env("RUST_LOG", "info")
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        util::stderr(&o).contains("Resuming: 3 of 3 cases finished by an earlier run are kept."),
        "{}",
        util::stderr(&o)
    );
    assert_eq!(std::fs::metadata(&chunk).unwrap().modified().unwrap(), before, "a finished case was rewritten");
}

#[test]
fn sigterm_stops_cleanly_and_the_resumed_run_completes() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 10, [40, 36, 22]);
    let p = pipeline(t.path(), "0.25");
    let reference = t.path().join("reference");
    assert!(util::run(&p, &corpus, &reference, &[]).status.success());
    let out = t.path().join("out");
    let child = start(&p, &corpus, &out);
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished_cases(&out) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(130) {
        assert!(err.contains("Run the same command again to resume"), "{err}");
        assert!(finished_cases(&out) < 10);
    } else {
        assert!(o.status.success(), "{err}"); // the signal came after the last case
    }
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert_eq!(outputs(&out), outputs(&reference));
}

#[test]
fn a_changed_grid_refuses_to_resume_and_fresh_starts_over() {
    // What every output depends on ([input], [output], slab_depth) cannot change under an
    // output: the change is named, and --fresh starts over. (Stages can: tests/reruns.rs.)
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 2, [16, 16, 8]);
    let p = pipeline(t.path(), "0.05");
    let out = t.path().join("out");
    assert!(util::run(&p, &corpus, &out, &[]).status.success());
    let changed = t.path().join("changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(&p).unwrap().replace("slab_depth = 4", "slab_depth = 2")).unwrap();
    let o = util::run(&changed, &corpus, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = util::stderr(&o);
    assert!(
        err.contains("`slab_depth = 4` became `slab_depth = 2`")
            && err.contains("slab_depth changed")
            && err.contains("--fresh"),
        "{err}"
    );
    let o = util::run(&changed, &corpus, &out, &["--fresh"]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("2 discovered, 2 done, 0 failed, 0 left"), "{text}");
}

/// A full disk fails the case being written, names the problem, frees that case's space, and
/// the cases after it still finish.
#[test]
fn a_full_disk_fails_only_the_case_that_does_not_fit() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [20, 20, 10]);
    // One much larger case, sorted second: BDMAP_00000002 is replaced by a big volume.
    let big = t.path().join("big");
    util::synth(&big, 2, [256, 256, 80]);
    std::fs::remove_dir_all(corpus.join("BDMAP_00000002")).unwrap();
    std::fs::rename(big.join("BDMAP_00000002"), corpus.join("BDMAP_00000002")).unwrap();
    // One case at a time: with several in flight, a case running beside the one filling the
    // disk fails too (and is redone by the next run).
    let p = util::convert_pipeline(t.path(), "[runtime]\nworkers = 1\n");
    let out = t.path().join("small");
    std::fs::create_dir_all(&out).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs", out.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let o = util::run(&p, &corpus, &out, &["--memory-limit", "512MiB"]);
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap_or_default();
    let done = finished_cases(&out);
    let _ = std::process::Command::new("umount").arg(&out).status();
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    assert_eq!(failures.lines().count(), 2, "{failures}");
    assert!(failures.contains("BDMAP_00000002") && failures.to_lowercase().contains("no space"), "{failures}");
    assert_eq!(done, 3, "two finished cases and one failure are recorded");
}

/// A pipeline that saves a slab checkpoint after every slab (`checkpoint_secs = 0`), with
/// attention in `mode`, metrics (NSD against every class's label) and rank.
fn slab_pipeline(dir: &Path, mode: &str) -> PathBuf {
    let p = util::convert_pipeline(
        dir,
        &format!(
            "[runtime]\nslab_depth = 4\ncheckpoint_secs = 0\nworkers = 1\n\n[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"attention\"\nmode = \"{mode}\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.5\n"
        ),
    );
    let named = dir.join(format!("slab-{mode}.toml"));
    std::fs::rename(&p, &named).unwrap();
    named
}

/// Two long-ish cases with labels for every class, so every stage keeps state across slabs.
fn labelled_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    util::synth_with(&corpus, 2, [48, 40, 64], &["--all-labels"]);
    corpus
}

fn slab_checkpoints(out: &Path) -> usize {
    std::fs::read_dir(out.join(".slabflow/cases"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "slab")).count())
        .unwrap_or(0)
}

/// Starts a run and sends it SIGTERM as soon as a slab checkpoint exists; its output.
fn sigterm_once_checkpointed(p: &Path, corpus: &Path, out: &Path) -> std::process::Output {
    let child = start(p, corpus, out);
    let deadline = Instant::now() + Duration::from_secs(30);
    while slab_checkpoints(out) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

/// A case killed mid-way resumes from its last slab checkpoint (not from slice 0), in both
/// attention modes, and the outputs equal an uninterrupted run's byte for byte.
#[test]
fn a_case_killed_mid_way_resumes_from_its_slab_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let corpus = labelled_corpus(t.path());
    let mut seed = 0xc4ec4u64;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    let mut resumed_mid_case = 0;
    for mode in ["paper", "released"] {
        let p = slab_pipeline(t.path(), mode);
        let reference = t.path().join(format!("reference-{mode}"));
        let began = Instant::now();
        let o = util::run(&p, &corpus, &reference, &[]);
        assert!(o.status.success(), "{}", util::stderr(&o));
        let full = began.elapsed();
        assert_eq!(slab_checkpoints(&reference), 0, "a finished run leaves no slab checkpoint");
        // Rounds go on until two of them were killed mid-case (a random kill can also land
        // between cases, where there is nothing to resume), at most 15.
        let mut mid_case = 0;
        let mut round = 0;
        while round < 4 || (mid_case < 2 && round < 15) {
            let out = t.path().join(format!("out-{mode}-{round}"));
            round += 1;
            // Kill twice, each time once a slab checkpoint exists plus a random delay (so the
            // kill lands in stage work, Zarr writes or a checkpoint being written).
            for _ in 0..2 {
                let mut child = start(&p, &corpus, &out);
                let deadline = Instant::now() + Duration::from_secs(60);
                while slab_checkpoints(&out) == 0 && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(300));
                }
                std::thread::sleep(Duration::from_micros(rand(full.as_micros() as u64 / 3)));
                let _ = child.kill(); // SIGKILL
                child.wait().unwrap();
            }
            let unfinished = unfinished_checkpoints(&out);
            let o = util::bin()
                .env("RUST_LOG", "info")
                .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", util::stderr(&o));
            let resumed = util::stderr(&o).contains("Resuming the case at slice");
            // A checkpoint of a case without a record must be resumed from; one beside a record
            // (killed between the two writes) is stale and dropped.
            assert_eq!(
                resumed,
                !unfinished.is_empty(),
                "{mode}, round {round}: checkpoints of {unfinished:?}\n{}",
                util::stderr(&o)
            );
            if resumed {
                mid_case += 1;
                resumed_mid_case += 1;
            }
            assert_eq!(outputs(&out), outputs(&reference), "{mode}, round {round}: resumed outputs differ");
            assert_eq!(slab_checkpoints(&out), 0);
        }
    }
    assert!(resumed_mid_case >= 3, "only {resumed_mid_case} final runs resumed a case from a slab checkpoint");
}

/// The cases with a slab checkpoint and no finished record.
fn unfinished_checkpoints(out: &Path) -> Vec<String> {
    let cases = out.join(".slabflow/cases");
    let Ok(dir) = std::fs::read_dir(&cases) else { return Vec::new() };
    dir.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slab"))
        .filter(|p| !p.with_extension("json").exists())
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// SIGTERM saves the case in flight at its next slab boundary: `status` shows it, and the
/// next run goes on from there to the same outputs.
#[test]
fn sigterm_saves_the_case_in_flight_and_status_shows_it() {
    let t = tempfile::tempdir().unwrap();
    let corpus = labelled_corpus(t.path());
    let p = slab_pipeline(t.path(), "paper");
    let reference = t.path().join("reference");
    assert!(util::run(&p, &corpus, &reference, &[]).status.success());
    let out = t.path().join("out");
    let o = sigterm_once_checkpointed(&p, &corpus, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(130) {
        assert!(err.contains("Run the same command again to resume"), "{err}");
        let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&st.stdout);
        if finished_cases(&out) < 2 {
            assert!(text.contains("in progress BDMAP_0000000") && text.contains("of 64 saved"), "{text}");
        }
    } else {
        assert!(o.status.success(), "{err}"); // the signal came after the last slab
    }
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert_eq!(outputs(&out), outputs(&reference));
}

/// A slab checkpoint whose input files changed since is not trusted: the case starts over.
#[test]
fn a_slab_checkpoint_of_changed_inputs_is_discarded() {
    let t = tempfile::tempdir().unwrap();
    let corpus = labelled_corpus(t.path());
    let p = slab_pipeline(t.path(), "paper");
    let reference = t.path().join("reference");
    assert!(util::run(&p, &corpus, &reference, &[]).status.success());
    let out = t.path().join("out");
    sigterm_once_checkpointed(&p, &corpus, &out);
    if slab_checkpoints(&out) == 0 {
        return; // the run ended before the signal: nothing to check
    }
    // Touch every input (same bytes, new modification time).
    for case in ["BDMAP_00000001", "BDMAP_00000002"] {
        let ct = ["ct.nii.gz", "ct.nii"].iter().map(|f| corpus.join(case).join(f)).find(|f| f.exists()).unwrap();
        let bytes = std::fs::read(&ct).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&ct, bytes).unwrap();
    }
    let o = util::bin()
        .env("RUST_LOG", "info")
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(!util::stderr(&o).contains("Resuming the case at slice"), "{}", util::stderr(&o));
    assert_eq!(outputs(&out), outputs(&reference));
}
