//! Starting a run, a shard or a merge on an output directory: its lock, its manifest, and
//! starting over (`--fresh`), by the rule of [`crate::checkpoint`].
//!
//! Invariants:
//! - nothing is deleted while a record names it: starting over voids the journal in one durable
//!   rename, deletes slabflow's outputs, then removes the tombstone; a run that finds a
//!   tombstone finishes that discard before anything else, `--fresh` or not;
//! - the whole output starts over only under the exclusive hold (no shard, run or merge alive);
//!   a shard's `--fresh` discards only its own cases when the output's manifest agrees with it,
//!   and the whole output (the same way) when it does not — the conflict is what it clears;
//! - the top-level tables summarise every case, so whatever discards a case's data removes them
//!   too (a merge or run writes them again);
//! - [`OUTPUTS`] and [`case_outputs`] are every path slabflow writes in an output: what
//!   starting over deletes, and nothing else; without a journal, only what is recognisably
//!   slabflow's (the tables, case groups whose `zarr.json` names slabflow, their exports);
//! - the tasks of a job array may all start with the same `--fresh`: one starts the output
//!   over, the others wait for it (with jitter, up to `START_OVER_WAIT`) and then find the
//!   manifest they want.

use std::path::{Path, PathBuf};

use crate::checkpoint::{CheckpointError, Journal, Manifest, Shard, Split};
use crate::files::durable::{create_dir_durable, remove_path, sweep_temp_files, sync_dir, write_atomic};
use crate::files::lock::{self, Hold, LockError, OutputLock};
use crate::input::Case;
use crate::pipeline::config::Pipeline;
use crate::pipeline::run::RunError;

/// What slabflow writes at the top of an output, besides its journal and lock: the case
/// groups, release and review exports, and the tables.
pub const OUTPUTS: &[&str] = &["cases", "release", "review", "report.html"];

/// The tables a run or merge writes from the journal.
pub const TABLES: &[&str] = &[
    "failures.csv",
    "metrics.csv",
    "ranking.csv",
    "assembly.csv",
    "evaluation.csv",
    "evaluation_summary.csv",
    "worklist.csv",
    "profile.json",
];

/// Every path one case's data lives under: its Zarr group, its release export, and that
/// export while it is written.
pub fn case_outputs(out: &Path, case_id: &str) -> [PathBuf; 3] {
    [
        out.join("cases").join(format!("{case_id}.zarr")),
        out.join("release").join(case_id),
        crate::stages::assemble::partial_export(out, case_id),
    ]
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + use<> {
    let path = path.to_owned();
    move |source| RunError::Io { path, source }
}

/// Removes the tables (a discard makes them stale).
fn remove_tables(out: &Path) -> Result<(), RunError> {
    for name in TABLES {
        let path = out.join(name);
        remove_path(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// Starts the whole output over (under the exclusive hold): void, delete, bury. Without a
/// journal or a tombstone (never run there, or `.slabflow` deleted by hand) only what is
/// recognisably slabflow's goes: the tables, and the case groups slabflow made (their
/// `zarr.json` says so) with those cases' exports; a folder named `cases` or `review` that is
/// the user's stays.
fn discard_all(out: &Path, _held: &OutputLock) -> Result<(), RunError> {
    debug_assert_eq!(_held.hold, Hold::Exclusive);
    let dir = out.join(Journal::DIR);
    if !dir.exists() && !Journal::tombstone_of(&dir).exists() {
        return discard_recognised(out);
    }
    Journal::void(&dir)?;
    tracing::info!(output = %out.display(), "Starting over: discarding earlier results.");
    remove_tables(out)?;
    for name in OUTPUTS {
        let path = out.join(name);
        remove_path(&path).map_err(io(&path))?;
    }
    Journal::bury(&dir)?;
    sync_dir(out).map_err(io(out))
}

/// `--fresh` without a journal: the tables and slabflow's own case groups and exports.
fn discard_recognised(out: &Path) -> Result<(), RunError> {
    remove_tables(out)?;
    let report = out.join("report.html");
    remove_path(&report).map_err(io(&report))?;
    // On a bucket output the groups are in the bucket only.
    let cases = out.join("cases");
    let names = crate::files::mirror::list_dir(&cases).map_err(io(&cases))?;
    for name in names {
        let Some(id) = name.strip_suffix(".zarr") else { continue };
        let ours = crate::files::mirror::read(&cases.join(&name).join("zarr.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.pointer("/attributes/slabflow/case_id").is_some());
        if ours {
            for path in case_outputs(out, id).into_iter().chain([out.join("review").join(id)]) {
                remove_path(&path).map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

/// Starts one shard over (under its hold): void its journal, delete its cases' data (nothing
/// to do for a shard that never ran).
fn discard_shard(out: &Path, dir: &Path, cases: &[String]) -> Result<(), RunError> {
    if !dir.exists() && !Journal::tombstone_of(dir).exists() {
        return Ok(());
    }
    Journal::void(dir)?;
    remove_tables(out)?;
    for id in cases {
        for path in case_outputs(out, id) {
            remove_path(&path).map_err(io(&path))?;
        }
    }
    Ok(Journal::bury(dir)?)
}

/// A run that may write: its hold, its journal, and its cases.
pub struct Started {
    pub lock: OutputLock,
    pub manifest: Manifest,
    pub journal: Journal,
    pub cases: Vec<Case>,
}

/// Why `want` cannot run in `out` as it stands (`None`: it can; an unreadable manifest is a
/// conflict).
fn blocker(out: &Path, want: &Manifest) -> Option<CheckpointError> {
    match Manifest::read(out) {
        Err(e) => Some(e),
        Ok(Some(m)) => m.conflict(want, out),
        Ok(None) => None,
    }
}

/// Takes the output for a run of `p` over `cases` (all discovered, sorted by id), or one
/// shard of it; with `fresh`, starts over what it must.
pub fn start(p: &Pipeline, fresh: bool, shard: Option<Shard>, cases: Vec<Case>) -> Result<Started, RunError> {
    let out = &p.output.dir;
    create_dir_durable(out).map_err(io(out))?;
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let want = p.manifest(shard.map(|s| Split { shards: s.count, cases: ids }));
    let hold = shard.map_or(Hold::Exclusive, Hold::Shard);
    let tombstone = Journal::tombstone_of(&out.join(Journal::DIR));
    let mut started_over = false;
    // The tasks of a job array may all start at once with the same `--fresh`: one of them
    // starts the output over, the others then find the manifest they want. Each waits (with
    // jitter) for the exclusive hold that long before giving up.
    let wait_until = std::time::Instant::now() + START_OVER_WAIT;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let held = match lock::lock(out, hold) {
            Ok(h) => h,
            // A sibling task starting the output over holds it alone for a moment.
            Err(LockError::Busy { .. })
                if shard.is_some() && (fresh || tombstone.exists()) && std::time::Instant::now() < wait_until =>
            {
                std::thread::sleep(jitter(attempts));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let pending = tombstone.exists();
        let conflict = blocker(out, &want);
        if pending || (fresh && !started_over && (shard.is_none() || conflict.is_some())) {
            if hold == Hold::Exclusive {
                discard_all(out, &held)?;
            } else {
                // A shard needs every other run gone to start the output over.
                drop(held);
                match lock::lock(out, Hold::Exclusive) {
                    Ok(x) => {
                        if tombstone.exists() || blocker(out, &want).is_some() {
                            discard_all(out, &x)?;
                        }
                    }
                    Err(LockError::Busy { holder, .. }) => {
                        if std::time::Instant::now() < wait_until {
                            std::thread::sleep(jitter(attempts));
                            continue;
                        }
                        let why = match conflict {
                            Some(c) => c.summary(),
                            None => "an earlier --fresh was interrupted".into(),
                        };
                        return Err(RunError::Plan(format!(
                            "{} must be started over for this run ({why}), but another run uses it ({holder}); waited {} s. Run again once it has ended.",
                            out.display(),
                            START_OVER_WAIT.as_secs()
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            started_over = true;
            continue;
        }
        if let Some(c) = conflict {
            return Err(c.into());
        }
        let manifest = match want.publish(out)? {
            None => want.clone(),
            Some(there) => match there.conflict(&want, out) {
                None if want.split.is_none() && there.fingerprint.pipeline != want.fingerprint.pipeline => {
                    // Another pipeline text on a single-node output (held alone): the one the
                    // output now follows, before any case is rerun under it.
                    let m = there.replace(&want, out)?;
                    if there.stages_changed(&want) {
                        tracing::info!(
                            "The pipeline's stages changed since the earlier run; what they change is recomputed ({}).",
                            crate::checkpoint::describe_change(&there.pipeline_text, &m.pipeline_text)
                        );
                    }
                    m
                }
                None => there,
                Some(c) if fresh && !started_over && std::time::Instant::now() < wait_until => {
                    tracing::debug!("{c}");
                    continue; // raced with another run's start: settle it under the lock
                }
                Some(c) => return Err(c.into()),
            },
        };
        let dir = Journal::dir_of(out, shard);
        let mut mine = cases.clone();
        if let Some(s) = shard {
            let split = manifest.split.as_ref().expect("a shard's manifest has a split");
            let ids = split.of_shard(s.index);
            if Journal::tombstone_of(&dir).exists() || (fresh && !started_over) {
                discard_shard(out, &dir, &ids)?;
            }
            mine = s.select(cases.clone());
        }
        let journal = Journal::open(dir, &manifest.run_id)?;
        sweep_temp_files(out).map_err(io(out))?;
        let saved = out.join(Journal::DIR).join("pipeline.toml");
        if std::fs::read(&saved).ok().as_deref() != Some(manifest.pipeline_text.as_bytes()) {
            // The pipeline's text for people, beside the manifest that holds it (written here,
            // after the manifest, by whichever run finds it missing or older).
            write_atomic(&saved, manifest.pipeline_text.as_bytes()).map_err(io(&saved))?;
        }
        return Ok(Started { lock: held, manifest, journal, cases: mine });
    }
}

/// How long a run that must start the output over waits for the other runs to let it.
const START_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// 50–400 ms, different per process and attempt.
fn jitter(attempt: u32) -> std::time::Duration {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos()
        ^ std::process::id().wrapping_mul(2654435761)
        ^ attempt.wrapping_mul(40503);
    std::time::Duration::from_millis(50 + (seed % 350) as u64)
}

/// The exclusive hold for `slabflow merge`, with the manifest of the sharded run.
pub fn start_merge(out: &Path) -> Result<(OutputLock, Manifest), RunError> {
    let refuse = |msg: String| RunError::Plan(msg);
    if !Manifest::path(out).is_file() {
        return Err(refuse(format!("{} holds no sharded run (no {})", out.display(), Manifest::path(out).display())));
    }
    let held = lock::lock(out, Hold::Exclusive).map_err(|e| match e {
        LockError::Busy { holder, .. } => refuse(format!(
            "a slabflow run or shard is still running in {} ({holder}); merge when every shard has ended",
            out.display()
        )),
        e => e.into(),
    })?;
    if Journal::tombstone_of(&out.join(Journal::DIR)).exists() {
        return Err(refuse(format!(
            "an earlier --fresh in {} was interrupted; run its shards again (they finish it), then merge",
            out.display()
        )));
    }
    let manifest = match Manifest::read(out)? {
        Some(m) if m.split.is_some() => m,
        Some(_) => {
            return Err(refuse(format!(
                "{} holds a single-node run, not a sharded one: nothing to merge",
                out.display()
            )));
        }
        None => {
            return Err(refuse(format!(
                "{} holds no sharded run (no {})",
                out.display(),
                Manifest::path(out).display()
            )));
        }
    };
    sweep_temp_files(out).map_err(io(out))?;
    Ok((held, manifest))
}
