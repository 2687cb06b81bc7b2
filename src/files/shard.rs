//! Shards: a stable split of a corpus over the tasks of a job array (SLURM, Kubernetes Indexed
//! Jobs).
//!
//! Invariant: shard K of N holds the items at positions i ≡ K (mod N) of a list: applied to the
//! case ids a sharded run froze when it began (sorted), the shards are disjoint and cover it,
//! the same on every task and every run, and balanced to one case.

use serde::{Deserialize, Serialize};

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

    /// This shard's items, from all of them in their (sorted) order.
    pub fn select<T>(&self, items: impl IntoIterator<Item = T>) -> Vec<T> {
        items.into_iter().enumerate().filter(|(i, _)| i % self.count == self.index).map(|(_, c)| c).collect()
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
