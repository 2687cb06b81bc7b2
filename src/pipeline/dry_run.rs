//! `slabflow run … --dry-run`: what a run would do, said before doing it — the stages whose
//! parameters changed, cases to compute, recompute whole or in part (with why and which
//! stages), resume, keep, and drop from the tables — from the output's manifest and journal as
//! they are ([`crate::pipeline::rerun`] decides, for the run and for this).

//!
//! Invariant: reads only (no lock, no file written; of the inputs, the corpus is listed, each
//! file's metadata read, and only a file whose modification time changed but not its size is
//! read, for its content digest), so it is safe beside a live run.

use std::collections::BTreeMap;

use crate::checkpoint::{CaseRecord, Journal, Manifest, Outcome, Split};
use crate::input;
use crate::pipeline::config::Pipeline;
use crate::pipeline::rerun::{self, Work};
use crate::pipeline::run::{RunError, RunOptions};

/// What a run would do.
#[derive(Debug, Default)]
pub struct DryRun {
    /// Why the run would be refused (nothing else then happens).
    pub refused: Option<String>,
    /// The whole output would be started over first (why).
    pub start_over: Option<String>,
    /// Cases computed for the first time (or redone after a failure: with its error).
    pub compute: Vec<(String, Option<String>)>,
    /// How the pipeline's stages differ from those of the run before ("metrics: parameters
    /// changed"); the corpus-level stages and the tables are redone every run.
    pub stages: Vec<String>,
    /// Finished cases recomputed whole (their CT changed, …), with why.
    pub recompute: Vec<(String, String)>,
    /// Finished cases redone in part: why, and the stages that rerun.
    pub redo: Vec<(String, String, Vec<String>)>,
    /// Cases caught mid-way: resumed from the slice their slab checkpoint reached.
    pub resume: Vec<(String, usize, usize)>,
    /// Finished cases kept as they are.
    pub keep: Vec<String>,
    /// Cases recorded but no longer in the corpus: left out of the tables.
    pub drop: Vec<String>,
}

/// What `slabflow run` with `p` and `opts` would do on its output now.
pub fn dry_run(p: &Pipeline, opts: &RunOptions) -> Result<DryRun, RunError> {
    let all = input::discover(&p.input)?;
    let cases = match opts.shard {
        Some(s) => s.select(all.clone()),
        None => all.clone(),
    };
    let out = &p.output.dir;
    let mut plan = DryRun::default();
    let ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    let want = p.manifest(opts.shard.map(|s| Split { shards: s.count, cases: ids }));
    let everything = |plan: &mut DryRun, why: String| {
        plan.start_over = Some(why);
        plan.compute = cases.iter().map(|c| (c.id.clone(), None)).collect();
    };
    if Journal::tombstone_of(&out.join(Journal::DIR)).exists() {
        everything(&mut plan, "an earlier --fresh was interrupted; it is finished first".into());
        return Ok(plan);
    }
    let manifest = match Manifest::read(out) {
        Err(e) if opts.fresh => {
            everything(&mut plan, format!("--fresh ({e})"));
            return Ok(plan);
        }
        Err(e) => {
            plan.refused = Some(e.to_string());
            return Ok(plan);
        }
        Ok(m) => m,
    };
    let conflict = manifest.as_ref().and_then(|m| m.conflict(&want, out));
    match (&manifest, conflict) {
        (Some(_), Some(c)) if opts.fresh => {
            everything(&mut plan, format!("--fresh clears the conflict: {}", c.summary()));
            return Ok(plan);
        }
        (Some(_), Some(c)) => {
            plan.refused = Some(c.to_string());
            return Ok(plan);
        }
        (Some(_), None) if opts.fresh && opts.shard.is_none() => {
            everything(&mut plan, "--fresh".into());
            return Ok(plan);
        }
        (None, _) => {
            plan.compute = cases.iter().map(|c| (c.id.clone(), None)).collect();
            return Ok(plan);
        }
        _ => {}
    }
    let m = manifest.expect("matched above");
    if m.stages_changed(&want) {
        let before = Pipeline::saved_in(&m, out).ok();
        plan.stages = rerun::describe_stages(p, before.as_ref());
    }
    let journal = Journal::at(Journal::dir_of(out, opts.shard), &m.run_id);
    let records: BTreeMap<String, CaseRecord> = if opts.fresh { BTreeMap::new() } else { journal.records() };
    for (c, work) in rerun::triage(p, &cases, &records, false) {
        let id = c.id.clone();
        match work {
            Work::Keep { .. } => plan.keep.push(id),
            Work::Part(part) => {
                let stages = part.stage_kinds(p).into_iter().map(String::from).collect();
                plan.redo.push((id, part.why.join(", "), stages))
            }
            Work::Whole { why } => match (records.get(&c.id), journal.load_slab(&c.id)) {
                (Some(CaseRecord { outcome: Outcome::Done(_) | Outcome::Redoing { .. }, .. }), _) => {
                    plan.recompute.push((id, why.unwrap_or_default()))
                }
                (_, Some(cp)) if !opts.fresh => plan.resume.push((id, cp.z, cp.nz)),
                (Some(CaseRecord { outcome: Outcome::Failed { error }, .. }), _) => {
                    plan.compute.push((id, Some(error.clone())))
                }
                _ => plan.compute.push((id, why)),
            },
        }
    }
    plan.drop = records.keys().filter(|id| !cases.iter().any(|c| &c.id == *id)).cloned().collect();
    Ok(plan)
}

impl DryRun {
    /// The plan as a person reads it.
    pub fn print(&self) {
        if let Some(why) = &self.refused {
            println!("would refuse: {why}");
            return;
        }
        if let Some(why) = &self.start_over {
            println!("would start the output over ({why})");
        }
        let list = |v: Vec<String>| {
            for line in v.iter().take(20) {
                println!("  {line}");
            }
            if v.len() > 20 {
                println!("  … and {} more", v.len() - 20);
            }
        };
        if !self.stages.is_empty() {
            println!("stages changed since the earlier run: {}", self.stages.join("; "));
        }
        println!("{} to compute", self.compute.len());
        list(
            self.compute
                .iter()
                .map(|(id, e)| e.as_ref().map_or(id.clone(), |e| format!("{id} (failed before: {e})")))
                .collect(),
        );
        println!("{} to recompute", self.recompute.len());
        list(self.recompute.iter().map(|(id, why)| format!("{id} {why}")).collect());
        println!("{} to redo in part", self.redo.len());
        list(
            self.redo
                .iter()
                .map(|(id, why, stages)| {
                    let s = if stages.is_empty() { "no stage".to_string() } else { stages.join(", ") };
                    format!("{id} {why}: reruns {s}")
                })
                .collect(),
        );
        println!("{} to resume", self.resume.len());
        list(self.resume.iter().map(|(id, z, nz)| format!("{id} from slice {z} of {nz}")).collect());
        println!("{} to keep", self.keep.len());
        println!("{} to drop from the tables (no longer in the corpus)", self.drop.len());
        list(self.drop.clone());
    }
}
