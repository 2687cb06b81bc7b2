//! Shards of a corpus over the tasks of a job array (SLURM, Kubernetes Indexed Jobs), each
//! with its own journal in the shared output directory, and the merge that writes what one
//! node would have. The split itself is [`Shard`] (in `checkpoint`, which freezes it).
//!
//! Invariants:
//! - every shard of an output runs the same pipeline on the same corpus and split: the output's
//!   manifest holds them (the case ids frozen when the first shard began), and a shard that
//!   differs is refused when it starts ([`super::start`]);
//! - a shard writes only its own cases' Zarr groups and its own journal
//!   (`.slabflow/shards/K-of-N/`), never the top-level tables, so shards never write one file;
//! - merge proves coverage before it writes: the corpus discovered now is the frozen case list,
//!   every case of it has a record in its own shard's journal (so in exactly one), and only
//!   then writes `metrics.csv`, `ranking.csv` and `failures.csv` from those records, with the
//!   same code and in the same order as a single-node run (byte-identical); otherwise it
//!   refuses, naming the shards and cases missing.

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::checkpoint::Shard;
use crate::checkpoint::{CaseRecord, Journal, describe_cases};
use crate::pipeline::config::Pipeline;
use crate::pipeline::report;
use crate::pipeline::run::RunError;
use crate::pipeline::start;
use crate::stages::rank::RankRow;

/// What a merge wrote.
#[derive(Debug)]
pub struct MergeSummary {
    pub shards: usize,
    pub succeeded: usize,
    pub failures: Vec<(String, String)>,
    pub ranking: Option<Vec<RankRow>>,
}

/// `slabflow merge`: the top-level tables of a sharded run, from its shards' journals.
pub fn merge(out: &Path) -> Result<MergeSummary, RunError> {
    let refuse = |msg: String| RunError::Plan(msg);
    let (_lock, manifest) = start::start_merge(out)?;
    let split = manifest.split.as_ref().expect("start_merge checks");
    let count = split.shards;
    let p = Pipeline::saved_in(&manifest, out).map_err(|e| refuse(e.to_string()))?;

    // The corpus now must be the one the shards split.
    let discovered = crate::input::discover(&p.input).map_err(|e| {
        refuse(format!(
            "cannot read the corpus to check the shards covered it ({e}); merge where {} is readable",
            manifest.fingerprint.input.display()
        ))
    })?;
    let now: Vec<String> = discovered.iter().map(|c| c.id.clone()).collect();
    if now != split.cases {
        let added: Vec<&String> = now.iter().filter(|c| split.cases.binary_search(c).is_err()).collect();
        let removed: Vec<&String> = split.cases.iter().filter(|c| now.binary_search(c).is_err()).collect();
        return Err(refuse(format!(
            "the corpus changed since the sharded run began ({}): the shards did not cover it; restore the corpus, or run the shards again with --fresh",
            describe_cases(&added, &removed)
        )));
    }

    let mut records: BTreeMap<String, CaseRecord> = BTreeMap::new();
    let (mut never, mut unfinished) = (Vec::new(), Vec::new());
    for k in 0..count {
        let shard = Shard { index: k, count };
        let dir = Journal::dir_of(out, Some(shard));
        let ids = split.of_shard(k);
        if !dir.join("cases").is_dir() {
            if !ids.is_empty() {
                never.push(shard.to_string());
            }
            continue;
        }
        let mut recs = Journal::at(dir, &manifest.run_id).records();
        // A case whose redo was interrupted (Redoing) is not finished either.
        let left: Vec<&String> = ids
            .iter()
            .filter(|id| recs.get(*id).is_none_or(|r| matches!(r.outcome, crate::checkpoint::Outcome::Redoing { .. })))
            .collect();
        if !left.is_empty() {
            unfinished.push(format!(
                "{shard} ({} of {} cases left, e.g. {})",
                left.len(),
                ids.len(),
                left.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        for id in &ids {
            if let Some(r) = recs.remove(id) {
                records.insert(id.clone(), r);
            }
        }
    }
    if !never.is_empty() {
        return Err(refuse(format!(
            "shard{} {} never ran (or left no journal) in {}: run slabflow run … --shard K/{count} for each",
            if never.len() > 1 { "s" } else { "" },
            never.join(", "),
            out.display()
        )));
    }
    if !unfinished.is_empty() {
        return Err(refuse(format!(
            "unfinished shards: {}; run each again (the same command resumes it), then merge",
            unfinished.join("; ")
        )));
    }
    // Every case of the corpus, once: proven above.
    debug_assert_eq!(records.len(), split.cases.len());
    // Datasets as meta.csv says now, as a single-node run does.
    let records: Vec<CaseRecord> = discovered
        .into_iter()
        .filter_map(|c| records.remove(&c.id).map(|r| CaseRecord { dataset: c.dataset, ..r }))
        .collect();
    let (succeeded, failures) = report::split(&records);
    let ranking = report::write_outputs(&p, out, &succeeded, &failures)?;
    Ok(MergeSummary { shards: count, succeeded: succeeded.len(), failures, ranking })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Bindings, Case};
    use std::path::PathBuf;

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
