//! Shards: a stable split of a corpus over the tasks of a job array (SLURM, Kubernetes Indexed
//! Jobs), each task with its own journal in the shared output directory, and the merge that
//! writes what one node would have.
//!
//! Invariants:
//! - shard K of N holds the cases at positions i ≡ K (mod N) of the discovered cases sorted by
//!   id: the shards are disjoint and cover the corpus, the same on every task and every run of
//!   the same corpus, and balanced to one case;
//! - a shard writes only its own cases' Zarr groups and its own journal
//!   (`.slabflow/shards/K-of-N/`), never the top-level tables, so shards never write one file;
//! - merge writes `metrics.csv`, `ranking.csv` and `failures.csv` from the shards' records, with
//!   the same code and in the same order as a single-node run (byte-identical), and only when
//!   every shard is present, finished, and ran the same pipeline on the same corpus.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CaseRecord, Fingerprint, Journal};
use crate::input::Case;
use crate::pipeline::config::{Overrides, Pipeline};
use crate::pipeline::report;
use crate::pipeline::run::{RunError, lock_output};
use crate::stages::rank::RankRow;

/// Task `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `K/N` with 0 ≤ K < N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s}: use K/N with 0 ≤ K < N (e.g. 0/4), or auto");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// `--shard auto`: from a SLURM array task (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`
    /// of `SLURM_ARRAY_TASK_COUNT`), or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with
    /// `shards` from `--shards`).
    pub fn from_env(shards: Option<usize>) -> Result<Shard, String> {
        let var = |name: &str| -> Result<Option<usize>, String> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().map(Some).map_err(|_| format!("{name}={v} is not a number")),
                Err(_) => Ok(None),
            }
        };
        if let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID")?, var("SLURM_ARRAY_TASK_COUNT")?) {
            let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            return Shard::parse(&format!("{index}/{}", shards.unwrap_or(count)));
        }
        if let Some(index) = var("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or("JOB_COMPLETION_INDEX is set: give the number of shards with --shards N")?;
            return Shard::parse(&format!("{index}/{count}"));
        }
        Err("--shard auto: neither SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (a SLURM array task) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --shard K/N".into())
    }

    /// This shard's cases, from all the discovered cases (sorted by id).
    pub fn select(&self, cases: Vec<Case>) -> Vec<Case> {
        debug_assert!(cases.windows(2).all(|w| w[0].id < w[1].id), "cases come sorted by id");
        cases.into_iter().enumerate().filter(|(i, _)| i % self.count == self.index).map(|(_, c)| c).collect()
    }

    /// The shard's journal folder name.
    pub fn dir_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// The shard of a journal folder name.
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (k, n) = name.split_once("-of-")?;
        Shard::parse(&format!("{k}/{n}")).ok()
    }
}

/// The case ids a shard was given (`cases.json` in its journal): what merge checks it finished.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardCases {
    pub shard: Shard,
    pub cases: Vec<String>,
}

/// What a merge wrote.
#[derive(Debug)]
pub struct MergeSummary {
    pub shards: usize,
    pub succeeded: usize,
    pub failures: Vec<(String, String)>,
    pub ranking: Option<Vec<RankRow>>,
}

/// One shard's journal as merge reads it.
struct ShardJournal {
    shard: Shard,
    dir: PathBuf,
    fingerprint: Option<Fingerprint>,
    cases: Option<Vec<String>>,
}

/// `slabflow merge`: the top-level tables of a sharded run, from its shards' journals.
pub fn merge(out: &Path) -> Result<MergeSummary, RunError> {
    let refuse = |msg: String| RunError::Plan(msg);
    let shards_dir = out.join(Journal::DIR).join("shards");
    if !shards_dir.is_dir() {
        return Err(refuse(format!("{} holds no sharded run (no {})", out.display(), shards_dir.display())));
    }
    // No shard may be running while the tables are written.
    let _lock = lock_output(out, false).map_err(|e| match e {
        RunError::Locked { .. } => refuse(format!(
            "a slabflow run or shard is still running in {}; merge when every shard has ended",
            out.display()
        )),
        e => e,
    })?;
    let mut shards: Vec<ShardJournal> = std::fs::read_dir(&shards_dir)
        .map_err(|_| refuse(format!("{} holds no sharded run (no {})", out.display(), shards_dir.display())))?
        .flatten()
        .filter_map(|e| {
            let shard = Shard::from_dir_name(&e.file_name().to_string_lossy())?;
            let dir = e.path();
            let fingerprint = std::fs::read(dir.join("run.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let cases = std::fs::read(dir.join("cases.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<ShardCases>(&b).ok())
                .map(|c| c.cases);
            Some(ShardJournal { shard, dir, fingerprint, cases })
        })
        .collect();
    shards.sort_by_key(|s| (s.shard.count, s.shard.index));
    let Some(count) = shards.iter().map(|s| s.shard.count).max() else {
        return Err(refuse(format!("{} holds no shard journals", shards_dir.display())));
    };
    let counts: std::collections::BTreeSet<usize> = shards.iter().map(|s| s.shard.count).collect();
    if counts.len() > 1 {
        return Err(refuse(format!(
            "{} holds shards of different splits ({}); remove the stale ones (or run again with --fresh)",
            shards_dir.display(),
            counts.iter().map(|n| format!("of {n}")).collect::<Vec<_>>().join(", ")
        )));
    }
    let missing: Vec<String> = (0..count)
        .filter(|k| !shards.iter().any(|s| s.shard.index == *k && s.fingerprint.is_some() && s.cases.is_some()))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "shard{} {} never ran (or left no journal) in {}: run slabflow run … --shard K/{count} for each",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            out.display()
        )));
    }
    let first = shards[0].fingerprint.clone().expect("checked");
    let differ: Vec<String> =
        shards.iter().filter(|s| s.fingerprint.as_ref() != Some(&first)).map(|s| s.shard.to_string()).collect();
    if !differ.is_empty() {
        return Err(refuse(format!(
            "shards {} ran another pipeline, slabflow or input than shard 0/{count} (pipeline {}, slabflow {}, input {}); run them again with the same pipeline and --fresh",
            differ.join(", "),
            first.pipeline,
            first.slabflow,
            first.input.display()
        )));
    }

    let mut records: Vec<CaseRecord> = Vec::new();
    let mut unfinished = Vec::new();
    for s in &shards {
        let journal = Journal::at(s.dir.clone());
        let mut recs = journal.records();
        let ids = s.cases.as_ref().expect("checked");
        let left: Vec<&String> = ids.iter().filter(|id| !recs.contains_key(*id)).collect();
        if !left.is_empty() {
            unfinished.push(format!(
                "{} ({} of {} cases left, e.g. {})",
                s.shard,
                left.len(),
                ids.len(),
                left.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        records.extend(ids.iter().filter_map(|id| recs.remove(id)));
    }
    if !unfinished.is_empty() {
        return Err(refuse(format!(
            "unfinished shards: {}; run each again (the same command resumes it), then merge",
            unfinished.join("; ")
        )));
    }

    let overrides = Overrides { input: Some(first.input.clone()), output: Some(out.to_owned()), memory_limit: None };
    let saved = shards[0].dir.join("pipeline.toml");
    let text = std::fs::read_to_string(&saved).map_err(|source| RunError::Io { path: saved.clone(), source })?;
    let p = Pipeline::parse(&saved, &text, &overrides).map_err(|e| refuse(e.to_string()))?;
    let (succeeded, failures) = report::split(&records);
    let ranking = report::write_outputs(&p, out, &succeeded, &failures)?;
    Ok(MergeSummary { shards: count, succeeded: succeeded.len(), failures, ranking })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Bindings;

    fn cases(n: usize) -> Vec<Case> {
        (0..n)
            .map(|i| Case {
                id: format!("BDMAP_{i:08}"),
                dataset: "d".into(),
                ct: PathBuf::new(),
                bindings: Bindings::default(),
            })
            .collect()
    }

    #[test]
    fn shards_are_disjoint_covering_balanced_and_stable() {
        for n in [1, 2, 3, 4, 7, 10] {
            for total in [0, 1, 5, 12, 13, 100] {
                let mut seen = Vec::new();
                for k in 0..n {
                    let s = Shard { index: k, count: n };
                    let a: Vec<String> = s.select(cases(total)).into_iter().map(|c| c.id).collect();
                    let b: Vec<String> = s.select(cases(total)).into_iter().map(|c| c.id).collect();
                    assert_eq!(a, b, "the same split every time");
                    assert!(a.len() == total / n || a.len() == total / n + 1, "balanced to one case");
                    seen.extend(a);
                }
                seen.sort();
                let all: Vec<String> = cases(total).into_iter().map(|c| c.id).collect();
                assert_eq!(seen, all, "{n} shards of {total} cases: disjoint and covering");
            }
        }
    }

    #[test]
    fn shard_specs_parse_and_refuse() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard::from_dir_name("3-of-8"), Some(Shard { index: 3, count: 8 }));
        assert_eq!(Shard::from_dir_name("8-of-8"), None);
    }
}
