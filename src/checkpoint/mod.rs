//! The progress journal: what lets an interrupted run resume where it stopped, losing nothing.
//!
//! Layout, in the output directory: `.slabflow/run.json` (the fingerprint of the pipeline and
//! of slabflow), `.slabflow/pipeline.toml` (the pipeline text, to say what changed), one
//! `.slabflow/cases/<case_id>.json` per finished case with its reductions (or its error), and
//! `.slabflow/cases/<case_id>.slab` for a long case caught mid-way: the slice it had reached
//! and its stages' states there ([`SlabCheckpoint`]).
//!
//! Invariants:
//! - every journal file is written to a temp file, fsynced, then renamed: a crash at any byte
//!   leaves the old file or the new one, never a torn one (a file that does not parse is
//!   treated as absent);
//! - a case's record is written only after its Zarr data is on disk (`syncfs`), so a record
//!   never points at data a power loss could take back;
//! - a run resumes only with the same fingerprint; anything else is refused with what changed;
//! - a slab checkpoint at slice z is written only after every Zarr chunk before z is on disk,
//!   and is removed before its case's data is (a failed case) or after its record is written
//!   (a finished one): it never outlives the data it describes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::config::Pipeline;
use crate::pipeline::shard::{Shard, ShardCases};
use crate::stages::CaseResult;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "{dir} holds the progress of a run with a different pipeline ({what}).\n  To start over, run again with --fresh (earlier results in {dir} are discarded);\n  to resume, run the earlier pipeline (saved in {saved})."
    )]
    Changed { dir: PathBuf, what: String, saved: PathBuf },
    #[error("{0} has no slabflow progress journal (.slabflow/run.json): nothing was run there")]
    NoJournal(PathBuf),
    #[error("progress journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies a run: results are comparable only under the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub slabflow: String,
    /// FNV-1a of the pipeline file's bytes.
    pub pipeline: String,
    /// The corpus root the run reads.
    pub input: PathBuf,
}

impl Fingerprint {
    pub fn of(p: &Pipeline) -> Fingerprint {
        let hash = p.text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        Fingerprint {
            slabflow: env!("CARGO_PKG_VERSION").to_string(),
            pipeline: format!("{hash:016x}"),
            input: std::fs::canonicalize(&p.input.root).unwrap_or_else(|_| p.input.root.clone()),
        }
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Done { result: CaseResult, slabs: usize, bytes: u64 },
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case_id: String,
    pub dataset: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub const DIR: &str = ".slabflow";

    /// The journal folder of a run in `out`: `.slabflow/`, or `.slabflow/shards/K-of-N/` for
    /// one shard of a sharded run.
    pub fn dir_of(out: &Path, shard: Option<Shard>) -> PathBuf {
        match shard {
            None => out.join(Self::DIR),
            Some(s) => out.join(Self::DIR).join("shards").join(s.dir_name()),
        }
    }

    /// The journal in `dir`, to read.
    pub fn at(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    /// Opens (or starts) the journal of `out` (of one shard of it) for pipeline `p`. With
    /// `fresh`, earlier progress is discarded; otherwise a journal of another pipeline is
    /// refused.
    pub fn open(out: &Path, p: &Pipeline, fresh: bool, shard: Option<Shard>) -> Result<Journal, CheckpointError> {
        let dir = Self::dir_of(out, shard);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { path, source }
        };
        if fresh && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir_all(dir.join("cases")).map_err(io(&dir))?;
        let now = Fingerprint::of(p);
        let run = dir.join("run.json");
        match std::fs::read(&run).ok().and_then(|b| serde_json::from_slice::<Fingerprint>(&b).ok()) {
            Some(before) if before != now => {
                let what = if before.slabflow != now.slabflow {
                    format!("slabflow {} then, {} now", before.slabflow, now.slabflow)
                } else if before.pipeline != now.pipeline {
                    let old = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap_or_default();
                    format!("the pipeline file changed: {}", describe_change(&old, &p.text))
                } else {
                    format!("input {} then, {} now", before.input.display(), now.input.display())
                };
                return Err(CheckpointError::Changed { dir: out.to_owned(), what, saved: dir.join("pipeline.toml") });
            }
            Some(_) => {}
            None => {
                write_atomic(&dir.join("pipeline.toml"), p.text.as_bytes()).map_err(io(&dir))?;
                let bytes = serde_json::to_vec_pretty(&now).expect("serialisable");
                write_atomic(&run, &bytes).map_err(io(&run))?;
            }
        }
        Ok(Journal { dir })
    }

    /// Records which cases a shard was given (for merge to check it finished them).
    pub fn set_shard_cases(&self, shard: Shard, cases: Vec<String>) -> Result<(), CheckpointError> {
        let path = self.dir.join("cases.json");
        let bytes = serde_json::to_vec(&ShardCases { shard, cases }).expect("serialisable");
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path, source })
    }

    /// Every readable case record, by case id.
    pub fn records(&self) -> BTreeMap<String, CaseRecord> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join("cases")) else { return out };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Some(r) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<CaseRecord>(&b).ok())
            {
                out.insert(r.case_id.clone(), r);
            }
        }
        out
    }

    /// Records a case as finished, after flushing its data (`case_dir`) to disk.
    pub fn record(&self, rec: &CaseRecord, case_dir: &Path) -> Result<(), CheckpointError> {
        let path = self.dir.join("cases").join(format!("{}.json", rec.case_id));
        if case_dir.exists() {
            sync_filesystem(case_dir).map_err(|source| CheckpointError::Io { path: case_dir.to_owned(), source })?;
        }
        let bytes = serde_json::to_vec(rec).expect("serialisable");
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path, source })?;
        self.clear_slab(&rec.case_id)
    }

    fn slab_path(&self, case_id: &str) -> PathBuf {
        self.dir.join("cases").join(format!("{case_id}.slab"))
    }

    /// The slab checkpoint of `case_id`, if one was written and reads whole.
    pub fn load_slab(&self, case_id: &str) -> Option<SlabCheckpoint> {
        let bytes = std::fs::read(self.slab_path(case_id)).ok()?;
        postcard::from_bytes::<SlabCheckpoint>(&bytes)
            .ok()
            .filter(|c| c.format == SlabCheckpoint::FORMAT && c.case_id == case_id)
    }

    /// Saves a slab checkpoint, after flushing the case's data written so far (`case_dir`).
    pub fn save_slab(&self, cp: &SlabCheckpoint, case_dir: &Path) -> Result<(), CheckpointError> {
        sync_filesystem(case_dir).map_err(|source| CheckpointError::Io { path: case_dir.to_owned(), source })?;
        let path = self.slab_path(&cp.case_id);
        let bytes = postcard::to_stdvec(cp).expect("serialisable");
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path, source })
    }

    /// Forgets the slab checkpoint of `case_id` (none is fine).
    pub fn clear_slab(&self, case_id: &str) -> Result<(), CheckpointError> {
        let path = self.slab_path(case_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Io { path, source: e }),
            _ => Ok(()),
        }
    }
}

/// What identifies an input file's contents for a slab checkpoint: a file replaced since makes
/// the checkpoint stale (the case then starts over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputStamp {
    pub path: PathBuf,
    pub len: u64,
    pub modified_ns: u128,
}

impl InputStamp {
    pub fn of(path: &Path) -> std::io::Result<InputStamp> {
        let m = std::fs::metadata(path)?;
        let modified_ns = m.modified()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Ok(InputStamp { path: path.to_owned(), len: m.len(), modified_ns })
    }
}

/// A case caught mid-way, at a slab boundary: every Zarr chunk before slice `z` is durable in
/// the case's group, and `stages` hold each stage's state there ([`crate::stages::SlabStage::save`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlabCheckpoint {
    pub format: u32,
    pub case_id: String,
    pub inputs: Vec<InputStamp>,
    /// The next slice to read, and the case's number of slices.
    pub z: usize,
    pub nz: usize,
    /// Slabs and decoded bytes streamed so far (the case's record counts them all).
    pub slabs: usize,
    pub bytes: u64,
    pub stages: Vec<Vec<u8>>,
}

impl SlabCheckpoint {
    pub const FORMAT: u32 = 1;
}

/// What `slabflow status` reports.
#[derive(Debug)]
pub struct Status {
    pub fingerprint: Fingerprint,
    pub pipeline_file: PathBuf,
    /// Cases the saved pipeline discovers now (None if the corpus cannot be read).
    pub discovered: Option<usize>,
    pub done: usize,
    pub failed: Vec<(String, String)>,
    /// Cases caught mid-way with a slab checkpoint: (case id, next slice, slices).
    pub partial: Vec<(String, usize, usize)>,
    /// Per shard of a sharded run.
    pub shards: Vec<ShardStatus>,
}

/// One shard's progress.
#[derive(Debug)]
pub struct ShardStatus {
    pub shard: Shard,
    /// Cases given to the shard.
    pub assigned: usize,
    pub done: usize,
    pub failed: usize,
}

/// Reads the journal of `out` without touching it (no lock needed).
pub fn status(out: &Path) -> Result<Status, CheckpointError> {
    // A single-node run's journal, and the shards' of a sharded one.
    let top = out.join(Journal::DIR);
    let mut journals: Vec<(Option<Shard>, PathBuf)> = Vec::new();
    if top.join("run.json").is_file() {
        journals.push((None, top.clone()));
    }
    let mut shard_dirs: Vec<(Shard, PathBuf)> = std::fs::read_dir(top.join("shards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("run.json").is_file())
        .filter_map(|e| Some((Shard::from_dir_name(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    shard_dirs.sort_by_key(|(s, _)| (s.count, s.index));
    journals.extend(shard_dirs.into_iter().map(|(s, d)| (Some(s), d)));
    let Some((_, first)) = journals.first() else { return Err(CheckpointError::NoJournal(out.to_owned())) };
    let fingerprint: Fingerprint = std::fs::read(first.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| CheckpointError::NoJournal(out.to_owned()))?;
    let pipeline_file = first.join("pipeline.toml");
    let overrides = crate::pipeline::Overrides {
        input: Some(fingerprint.input.clone()),
        output: Some(out.to_owned()),
        memory_limit: None,
    };
    let discovered = crate::pipeline::Pipeline::load(&pipeline_file, &overrides)
        .ok()
        .and_then(|p| crate::input::discover(&p).ok())
        .map(|cases| cases.len());
    let (mut done, mut failed, mut partial, mut shards) = (0, Vec::new(), Vec::new(), Vec::new());
    for (shard, dir) in &journals {
        let journal = Journal::at(dir.clone());
        let records = journal.records();
        let d = records.values().filter(|r| matches!(r.outcome, Outcome::Done { .. })).count();
        let f: Vec<(String, String)> = records
            .values()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed { error } => Some((r.case_id.clone(), error.clone())),
                _ => None,
            })
            .collect();
        partial.extend(std::fs::read_dir(dir.join("cases")).into_iter().flatten().flatten().filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".slab")?;
            let cp = journal.load_slab(id)?;
            (!records.contains_key(id)).then_some((cp.case_id, cp.z, cp.nz))
        }));
        if let Some(s) = shard {
            let assigned = std::fs::read(dir.join("cases.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<ShardCases>(&b).ok())
                .map_or(0, |c| c.cases.len());
            shards.push(ShardStatus { shard: *s, assigned, done: d, failed: f.len() });
        }
        done += d;
        failed.extend(f);
    }
    partial.sort();
    failed.sort();
    Ok(Status { fingerprint, pipeline_file, discovered, done, failed, partial, shards })
}

/// A one-line summary of how `new` differs from `old` (lines removed and added).
fn describe_change(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let new_lines: Vec<&str> = new.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let removed: Vec<&str> = old_lines.iter().filter(|l| !new_lines.contains(l)).copied().collect();
    let added: Vec<&str> = new_lines.iter().filter(|l| !old_lines.contains(l)).copied().collect();
    let show = |v: &[&str]| v.iter().take(3).map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ");
    match (removed.is_empty(), added.is_empty()) {
        (true, true) => "only whitespace or order".into(),
        (false, true) => format!("removed {}", show(&removed)),
        (true, false) => format!("added {}", show(&added)),
        (false, false) => format!("{} became {}", show(&removed), show(&added)),
    }
}

/// temp file + fsync + rename (+ fsync of the directory): a reader sees the old file or the
/// new one, never half of one, even after a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Flushes every dirty page of the filesystem holding `path` (Linux `syncfs`): one call makes
/// a whole case's Zarr chunks durable, instead of an fsync per chunk file.
fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: a valid, open file descriptor for the duration of the call.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_changed_line() {
        let d = describe_change("a = 1\nbudget = 0.05\n", "a = 1\nbudget = 0.1\n");
        assert_eq!(d, "`budget = 0.05` became `budget = 0.1`");
    }
}
