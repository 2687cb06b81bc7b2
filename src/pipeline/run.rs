//! Running a pipeline over a corpus (or one shard of it): discover cases, plan memory, stream
//! cases on worker threads, write the tables, summarise.
//!
//! Invariants: a configuration or planning error writes nothing; a case's failure is recorded
//! and never stops the others, and leaves none of its data; one live run per output directory,
//! or one live run per shard of it ([`crate::files::lock`], taken by [`super::start`]).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checkpoint::{CaseDone, CaseRecord, CheckpointError, Journal, Manifest, Outcome};
use crate::files::durable::{CaseSync, create_dir_durable, remove_path};
use crate::files::lock::LockError;
use crate::input::{self, Case, InputError};
use crate::pipeline::budget::{MemoryBudget, MemoryWatch, Overshoot};
use crate::pipeline::case::{self, CaseEnd, CaseEnv, CaseReport};
use crate::pipeline::config::{Pipeline, human_bytes};
use crate::pipeline::profile::Profile;
use crate::pipeline::report;
use crate::pipeline::rerun::{self, Partial, Work, triage};
use crate::pipeline::shard::Shard;
use crate::pipeline::start::{self, case_outputs};
use crate::stages::CaseResult;
use crate::stages::rank::RankRow;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a run is started.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Discard earlier progress in the output directory.
    pub fresh: bool,
    /// Set (by a signal handler) to stop taking new cases; cases in flight are saved at their
    /// next slab boundary.
    pub stop: Option<Arc<AtomicBool>>,
    /// Run only this shard of the corpus (its own journal; no top-level tables: `merge`).
    pub shard: Option<Shard>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunSummary {
    pub output: PathBuf,
    pub cases: usize,
    pub succeeded: usize,
    pub failures: Vec<(String, String)>,
    pub elapsed: Duration,
    pub bytes: u64,
    pub workers: usize,
    pub peak_rss: Option<u64>,
    /// Cases after which the peak resident memory was found above what was reserved.
    pub memory_overshoots: usize,
    /// `ranking.csv`'s rows, when the pipeline ranks.
    pub ranking: Option<Vec<RankRow>>,
    /// Cases neither finished nor failed (the run was interrupted before them).
    pub left: usize,
    /// The run stopped early on a signal.
    pub interrupted: bool,
    pub shard: Option<Shard>,
    /// Where the time went, node by node (the cases computed by this run).
    pub profile: Profile,
}

impl RunSummary {
    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        eprintln!(
            "{} of {} cases succeeded in {:.1} s ({}/s decoded){}; outputs in {}",
            self.succeeded,
            self.cases,
            secs,
            human_bytes((self.bytes as f64 / secs.max(1e-9)) as u64),
            self.peak_rss.map(|b| format!(", peak memory {}", human_bytes(b))).unwrap_or_default(),
            crate::files::mirror::display(&self.output)
        );
        let r = crate::files::objects::requests();
        if r != Default::default() {
            eprintln!(
                "Object storage: {} GET ({}), {} HEAD, {} LIST, {} PUT ({}) request(s); {} object(s) deleted.",
                r.gets,
                human_bytes(r.bytes),
                r.heads,
                r.lists,
                r.puts,
                human_bytes(r.put_bytes),
                r.deletes
            );
        }
        if let Some(r) = &self.ranking {
            let flagged = r.iter().filter(|r| r.flagged).count();
            eprintln!("Ranking: {flagged} of {} cases flagged for revision; top by attention size:", r.len());
            for row in r.iter().take(5) {
                eprintln!(
                    "  {:>4}  {:<24} {:<16} {:>14.1}{}",
                    row.rank,
                    row.case_id,
                    row.dataset,
                    row.attention_size,
                    if row.flagged { "  flagged" } else { "" }
                );
            }
        }
        if let Some((node, why)) = self.profile.bound() {
            let file = if self.shard.is_none() { ", in profile.json" } else { "" };
            eprintln!("Bound by {node} ({why}); per node{file}:");
            for line in self.profile.lines() {
                eprintln!("  {line}");
            }
        }
        if self.memory_overshoots > 0 {
            eprintln!(
                "warning: peak memory exceeded the cases' reservations {} time(s) (see the warnings above); memory_limit may not hold for this corpus",
                self.memory_overshoots
            );
        }
        for (id, err) in self.failures.iter().take(10) {
            eprintln!("  failed {id}: {err}");
        }
        if self.failures.len() > 10 {
            eprintln!("  … and {} more in failures.csv", self.failures.len() - 10);
        }
    }
}

/// Runs `p` over its corpus.
pub fn run(p: &Pipeline, opts: &RunOptions) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let all = input::discover(&p.input)?;
    let cases: Vec<Case> = match opts.shard {
        Some(s) => s.select(all.clone()),
        None => all.clone(),
    };
    let budget = MemoryBudget::new(p.memory_limit);

    // Plan from the headers of the first case to compute that opens, before anything is
    // written (which cases those are, by a look at the journal as it is: a run with nothing
    // to compute opens no input file). If none opens, every case will fail on its own and
    // say why.
    let earlier = match Manifest::read(&p.output.dir) {
        Ok(Some(m)) if !opts.fresh => Journal::at(Journal::dir_of(&p.output.dir, opts.shard), &m.run_id).records(),
        _ => Default::default(),
    };
    let headers: Vec<_> = triage(p, &cases, &earlier, true)
        .into_iter()
        .filter(|(_, w)| !w.is_keep())
        .find_map(|(c, _)| case::case_headers(c, p).ok())
        .unwrap_or_default();
    let per_case = if headers.is_empty() { 0 } else { case::case_memory(&headers, p.runtime.slab_depth, p) };
    if per_case > budget.available() {
        return Err(RunError::Plan(format!(
            "memory_limit {} is too small: one case ({:?} voxels, {} volumes, slabs of {} slices) needs {} plus {} for the process; raise [runtime] memory_limit (or --memory-limit) or lower [runtime] slab_depth",
            human_bytes(p.memory_limit),
            headers[0].shape(),
            headers.len(),
            p.runtime.slab_depth,
            human_bytes(per_case),
            human_bytes(crate::pipeline::budget::BASE_BYTES),
        )));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let wanted = if p.runtime.workers == 0 { cores } else { p.runtime.workers };
    let workers = wanted.min(cases.len()).min((budget.available() / per_case.max(1)).max(1) as usize).max(1);
    tracing::info!(
        cases = cases.len(),
        workers,
        per_case = %human_bytes(per_case),
        limit = %human_bytes(p.memory_limit),
        "Plan: {} cases, {} at a time, {} each, under a limit of {}.",
        cases.len(),
        workers,
        human_bytes(per_case),
        human_bytes(p.memory_limit)
    );

    let out = &p.output.dir;
    // Held until the run returns.
    let start::Started { lock: _lock, journal, cases, .. } = start::start(p, opts.fresh, opts.shard, all)?;
    let case_root = out.join("cases");
    create_dir_durable(&case_root).map_err(|source| RunError::Io { path: case_root.clone(), source })?;
    if exports_release(p) {
        let release = out.join("release");
        create_dir_durable(&release).map_err(|source| RunError::Io { path: release.clone(), source })?;
    }
    let mut records = journal.records();
    let plan = triage(p, &cases, &records, false);
    announce(&plan, &records);
    for (c, work) in &plan {
        let Work::Keep { touched } = work else { continue };
        // A slab checkpoint beside a finished record: a run killed between publishing the
        // record and removing the checkpoint. The record stands; the checkpoint goes.
        journal.clear_slab(&c.id)?;
        // Files touched without a change: their new times go into the records (no recompute).
        if let Some(rec) = records.get_mut(&c.id)
            && !touched.is_empty()
        {
            *rec = rerun::restamped(rec, touched);
            journal.rewrite(rec)?;
        }
    }
    let todo: Vec<(&Case, Work)> = plan.into_iter().filter(|(_, w)| !w.is_keep()).collect();

    let progress = Progress::new(todo.len(), start);
    let next = AtomicUsize::new(0);
    let fresh_records: Mutex<Vec<CaseRecord>> = Mutex::new(Vec::new());
    // Finished cases whose record this run removed (recomputed whole, then paused).
    let gone: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let bytes = AtomicU64::new(0);
    let paused = AtomicUsize::new(0);
    let env = CaseEnv { out_dir: out, budget: &budget, journal: &journal, stop: opts.stop.as_deref() };
    let watch = MemoryWatch::new(&budget);
    watch.check(); // discovery and planning are not a case's
    let overshoots = AtomicUsize::new(0);
    let profile = Mutex::new(Profile::default());
    std::thread::scope(|s| {
        for _ in 0..workers.min(todo.len().max(1)) {
            s.spawn(|| {
                loop {
                    if opts.stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((c, work)) = todo.get(i) else { break };
                    crate::files::lock::verify_held();
                    let t = Instant::now();
                    let part = match work {
                        Work::Part(w) => Some(w),
                        _ => None,
                    };
                    let before = records.get(&c.id);
                    let finished_before = before.is_some_and(|r| r.outcome.kept().is_some());
                    // No record names what is about to be redone: a part's record keeps what
                    // stands of the case (Redoing), a case recomputed whole has none.
                    let prepared = match (part, before) {
                        (Some(w), Some(rec)) => {
                            let voided = w.voided(p, out, rec);
                            journal.rewrite(&voided).map(|()| Some(voided))
                        }
                        (None, Some(_)) if finished_before => journal.forget(&c.id).map(|()| None),
                        _ => Ok(None),
                    };
                    let standing = match prepared {
                        Ok(v) => v,
                        Err(e) => {
                            // The journal cannot be written: the case stays as it was.
                            let e = e.to_string();
                            progress.case_done(c, &Err(e.clone()), t.elapsed());
                            let rec = CaseRecord {
                                case_id: c.id.clone(),
                                dataset: c.dataset.clone(),
                                run: String::new(),
                                outcome: Outcome::Failed { error: crate::files::mirror::shown(&e) },
                            };
                            fresh_records.lock().unwrap().push(rec);
                            continue;
                        }
                    };
                    // Opened before the case's first write: its syncfs sees every writeback
                    // error since (files::durable).
                    let sync = CaseSync::open(&[&out.join("cases"), &out.join("release")]);
                    let r = match sync.as_ref().map_err(|e| format!("opening {}: {e}", out.display())) {
                        Err(e) => Err(e),
                        Ok(sync) => run_case(c, p, &env, sync, part),
                    };
                    let r = match r {
                        Ok(CaseEnd::Done(rep, res)) => Ok((rep, res)),
                        Ok(CaseEnd::Paused { z, nz }) => {
                            // Saved at a slab boundary; the next run goes on from there. The
                            // tables see the case as its record now says.
                            paused.fetch_add(1, Ordering::Relaxed);
                            progress.case_paused(c, z, nz);
                            match standing {
                                Some(v) => fresh_records.lock().unwrap().push(v),
                                None if finished_before => gone.lock().unwrap().push(c.id.clone()),
                                None => {}
                            }
                            continue;
                        }
                        Ok(CaseEnd::Stopped) => {
                            // Nothing to resume from: no record may name what it wrote, which
                            // goes; the next run computes the case whole.
                            paused.fetch_add(1, Ordering::Relaxed);
                            let unnamed = if standing.is_some() { journal.forget(&c.id).is_ok() } else { true };
                            if unnamed && journal.clear_slab(&c.id).is_ok() {
                                if let Ok(s) = &sync {
                                    s.drain();
                                }
                                for path in case_outputs(out, &c.id) {
                                    let _ = remove_path(&path);
                                }
                            }
                            if finished_before {
                                gone.lock().unwrap().push(c.id.clone());
                            }
                            progress.case_stopped(c);
                            continue;
                        }
                        Err(e) => Err(e),
                    };
                    let outcome = match &r {
                        Ok((rep, res)) => {
                            bytes.fetch_add(rep.bytes, Ordering::Relaxed);
                            profile.lock().unwrap().add(&rep.profile);
                            match (part, before) {
                                (Some(w), Some(old)) => w.finished(p, out, old, res, &rep.inputs),
                                _ => Outcome::Done(CaseDone {
                                    result: res.clone(),
                                    slabs: rep.slabs,
                                    bytes: rep.bytes,
                                    inputs: rep.inputs.clone(),
                                    stages: rerun::stage_digests(p),
                                }),
                            }
                        }
                        Err(e) => Outcome::Failed { error: crate::files::mirror::shown(e) },
                    };
                    let mut rec =
                        CaseRecord { case_id: c.id.clone(), dataset: c.dataset.clone(), run: String::new(), outcome };
                    if r.is_err() {
                        // A failed case leaves no half-written data (and frees its space: a
                        // full disk fails that case, not the ones after it). No record may name
                        // it meanwhile: a part's Redoing record goes first (an unlink needs no
                        // space), and its slab checkpoint.
                        let unnamed = if standing.is_some() { journal.forget(&c.id).is_ok() } else { true };
                        if unnamed && journal.clear_slab(&c.id).is_ok() {
                            if let Ok(s) = &sync {
                                s.drain();
                            }
                            for path in case_outputs(out, &c.id) {
                                let _ = remove_path(&path);
                            }
                        }
                    }
                    // A case counts as finished only once its record is durable.
                    let synced = if r.is_ok() { sync.as_ref().ok() } else { None };
                    let recorded = journal.record(&rec, synced);
                    let r = match recorded {
                        Ok(()) => r,
                        Err(e) => {
                            rec.outcome = Outcome::Failed { error: crate::files::mirror::shown(&e.to_string()) };
                            Err(e.to_string())
                        }
                    };
                    progress.case_done(c, &r, t.elapsed());
                    if let Some(o) = watch.check() {
                        overshoots.fetch_add(1, Ordering::Relaxed);
                        progress.warn_memory(c, &o, workers);
                    }
                    fresh_records.lock().unwrap().push(rec);
                }
            });
        }
    });
    progress.finish();
    let interrupted = next.load(Ordering::Relaxed) < todo.len() || paused.load(Ordering::Relaxed) > 0;

    for id in gone.into_inner().unwrap() {
        records.remove(&id);
    }
    for rec in fresh_records.into_inner().unwrap() {
        records.insert(rec.case_id.clone(), rec);
    }
    // The tables cover every discovered case that has a record, earlier runs' included; a
    // shard leaves them to `merge`.
    // Datasets as meta.csv says now (it may have changed since a case was recorded).
    let records: Vec<CaseRecord> = cases
        .iter()
        .filter_map(|c| records.remove(&c.id).map(|r| CaseRecord { dataset: c.dataset.clone(), ..r }))
        .collect();
    let (succeeded, failures) = report::split(&records);
    let ranking = match opts.shard {
        None => report::write_outputs(p, out, &succeeded, &failures)?,
        Some(_) => None,
    };
    let succeeded = succeeded.len();
    let left = cases.len() - succeeded - failures.len();
    let profile = profile.into_inner().unwrap();
    if opts.shard.is_none() {
        // This run's figures; a run that computed nothing leaves none (an older one would be
        // another run's).
        let path = out.join("profile.json");
        let written = if profile.nodes.is_empty() {
            remove_path(&path)
        } else {
            profile.write(out, start.elapsed(), p.memory_limit)
        };
        written.map_err(|source| RunError::Io { path, source })?;
    }
    Ok(RunSummary {
        output: out.clone(),
        cases: cases.len(),
        succeeded,
        failures,
        elapsed: start.elapsed(),
        bytes: bytes.load(Ordering::Relaxed),
        workers,
        peak_rss: crate::pipeline::budget::peak_rss(),
        memory_overshoots: overshoots.into_inner(),
        ranking,
        left,
        interrupted,
        shard: opts.shard,
        profile,
    })
}

type CaseOutcome = Result<(CaseReport, CaseResult), String>;

/// Progress on long work: a bar (cases, slabs, decoded MB/s, ETA) when stderr is a terminal, one log
/// line per case otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    start: Instant,
    done: AtomicUsize,
    decoded: AtomicU64,
    slabs: AtomicUsize,
}

impl Progress {
    fn new(total: usize, start: Instant) -> Progress {
        let bar = (std::io::stderr().is_terminal() && !tracing::enabled!(tracing::Level::DEBUG)).then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} cases  {msg}  ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        });
        Progress {
            bar,
            total,
            start,
            done: AtomicUsize::new(0),
            decoded: AtomicU64::new(0),
            slabs: AtomicUsize::new(0),
        }
    }

    fn case_done(&self, c: &Case, r: &CaseOutcome, took: Duration) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok((rep, _)) = r {
            self.decoded.fetch_add(rep.bytes, Ordering::Relaxed);
            self.slabs.fetch_add(rep.slabs, Ordering::Relaxed);
        }
        let Some(b) = &self.bar else {
            match r {
                Ok((rep, _)) => tracing::info!(
                    case = %c.id,
                    slabs = rep.slabs,
                    secs = took.as_secs_f64(),
                    reserved = rep.reserved,
                    "[{n}/{}] Case finished.",
                    self.total
                ),
                Err(e) => tracing::warn!(case = %c.id, error = %e, "[{n}/{}] Case failed.", self.total),
            }
            return;
        };
        let rate = self.decoded.load(Ordering::Relaxed) as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        b.set_message(format!("{} slabs, {}/s", self.slabs.load(Ordering::Relaxed), human_bytes(rate as u64)));
        b.inc(1);
        if let Err(e) = r {
            b.suspend(|| tracing::warn!(case = %c.id, error = %e, "Case failed."));
        }
    }

    fn warn_memory(&self, c: &Case, o: &Overshoot, workers: usize) {
        let (peak, reserved) = (human_bytes(o.peak), human_bytes(o.reserved));
        let with = if workers > 1 { " (with the cases running beside it)" } else { "" };
        let msg = format!(
            "Peak memory {peak} went over the {reserved} held while this case ran{with} (reserved, or freed by ended cases and not yet returned): memory_limit is a plan that did not hold here; leave headroom or lower slab_depth, and please report it with the case's shape."
        );
        match &self.bar {
            Some(b) => b.suspend(|| tracing::warn!(case = %c.id, peak = o.peak, reserved = o.reserved, "{msg}")),
            None => tracing::warn!(case = %c.id, peak = o.peak, reserved = o.reserved, "{msg}"),
        }
    }

    fn case_paused(&self, c: &Case, z: usize, nz: usize) {
        let msg = format!("Case saved at slice {z} of {nz}; it resumes there.");
        match &self.bar {
            Some(b) => b.suspend(|| tracing::info!(case = %c.id, z, nz, "{msg}")),
            None => tracing::info!(case = %c.id, z, nz, "{msg}"),
        }
    }

    fn case_stopped(&self, c: &Case) {
        let msg = "Case stopped (its pipeline has a custom stage that keeps no slab checkpoint); the next run redoes it from its first slice.";
        match &self.bar {
            Some(b) => b.suspend(|| tracing::info!(case = %c.id, "{msg}")),
            None => tracing::info!(case = %c.id, "{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Says what the run does with the cases finished before: kept, redone in part (with why), or
/// recomputed whole (with why).
fn announce(plan: &[(&Case, Work)], records: &std::collections::BTreeMap<String, CaseRecord>) {
    let finished = |c: &Case| records.get(&c.id).is_some_and(|r| r.outcome.kept().is_some());
    let kept = plan.iter().filter(|(_, w)| w.is_keep()).count();
    // Cases redone for the same reason (a stage's parameters, …) are named together.
    let mut reasons: Vec<(String, Vec<&str>)> = Vec::new();
    let mut redone = 0;
    for (c, w) in plan.iter().filter(|(c, _)| finished(c)) {
        let why = match w {
            Work::Keep { .. } => continue,
            Work::Whole { why } => why.clone().unwrap_or_else(|| "recomputed".into()),
            Work::Part(part) => part.why.join(", "),
        };
        redone += 1;
        match reasons.iter_mut().find(|(w, _)| *w == why) {
            Some((_, ids)) => ids.push(&c.id),
            None => reasons.push((why, vec![&c.id])),
        }
    }
    if kept == 0 && redone == 0 {
        return;
    }
    let named: Vec<String> = reasons
        .iter()
        .map(|(why, ids)| match ids.as_slice() {
            [id] => format!("{id} {why}"),
            _ => {
                let more = if ids.len() > 5 { ", …" } else { "" };
                format!("{why}: {} cases ({}{more})", ids.len(), ids[..ids.len().min(5)].join(", "))
            }
        })
        .collect();
    let more = if named.len() > 10 { format!("; … {} more", named.len() - 10) } else { String::new() };
    let list = if redone == 0 {
        String::new()
    } else {
        format!(", {redone} recomputed: {}{more}", named[..named.len().min(10)].join("; "))
    };
    tracing::info!(
        kept,
        recomputed = redone,
        "Resuming: {kept} of {} cases finished by an earlier run are kept{list}.",
        kept + redone
    );
}

/// Whether the pipeline exports the release layout (`assemble` with `export_nifti`).
fn exports_release(p: &Pipeline) -> bool {
    p.stages.iter().any(|s| matches!(s, crate::stages::StageConfig::Assemble(a) if a.export_nifti))
}

fn run_case(c: &Case, p: &Pipeline, env: &CaseEnv, sync: &CaseSync, part: Option<&Partial>) -> Result<CaseEnd, String> {
    // A panic in one case (a bug) must not take the corpus down with it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case::process_case(c, p, env, sync, part))).unwrap_or_else(
        |e| {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("internal error (please report): {}", msg.unwrap_or_default()))
        },
    )
}
