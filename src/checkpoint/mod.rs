//! The progress journal: what lets an interrupted run resume where it stopped, losing nothing.
//!
//! Layout, in the output directory:
//! - `.slabflow/run.json`, the [`Manifest`]: one for the whole output, every run and shard
//!   checks it — the fingerprint (slabflow, pipeline, input), the pipeline's text, a `run_id`,
//!   and for a sharded run the split (the number of shards and the case ids, frozen when the
//!   first shard began); `.slabflow/pipeline.toml` is a copy of the pipeline for people;
//! - the records: `.slabflow/cases/<case_id>.json` per case that ended (its reductions, or its
//!   error) for a single-node run, `.slabflow/shards/K-of-N/cases/` for each shard, with
//!   `<case_id>.slab` for a long case caught mid-way ([`SlabCheckpoint`]);
//! - `.slabflow.lock` and `.slabflow.leases/`: who holds the output ([`crate::files::lock`]).
//!
//! **The rule**: a record says "done" only for data that is complete and durable, and no
//! operation — a run, a resume, `--fresh`, a shard, a merge — leaves a record pointing at data
//! it changed. Concretely:
//! - records are published after the data: a case's record is written (temp file, fsync,
//!   rename, fsync of the folder) only after `syncfs` on every filesystem the case wrote to
//!   ([`durable::CaseSync`]); a slab checkpoint at slice z likewise, once every chunk before
//!   z is written;
//! - records are voided before the data: starting over renames the journal folder to a
//!   tombstone (`.slabflow.discarded`, or `shards/K-of-N.discarded` for one shard) in one
//!   durable rename *before* deleting anything; the next run finishes an interrupted discard
//!   first. A failed case's slab checkpoint is removed before its data;
//! - one run per output: the manifest is created once (atomically, `link(2)`), and a run or
//!   shard whose fingerprint or split differs from it is refused, naming the difference, until
//!   `--fresh` starts the whole output over; records carry the manifest's `run_id`, so a record
//!   written by a run that outlived its lease into a newer journal is ignored;
//! - a journal file that does not parse is never taken for absent: a record or slab checkpoint
//!   that does not parse is "not done" (the case is redone), a manifest that does not parse is
//!   refused, naming the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::files::Shard;
use crate::files::durable::{self, CaseSync, create_dir_durable, sync_parent, write_atomic};
use crate::files::lock;
use crate::stages::CaseResult;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "{dir} holds the progress of a run with a different pipeline ({what}).\n  To start over, run again with --fresh (earlier results in {dir} are discarded);\n  to resume, run the earlier pipeline (saved in {saved})."
    )]
    Changed { dir: PathBuf, what: String, saved: PathBuf },
    /// Another run, split or corpus holds the output: what, then what to do.
    #[error("{what}: {advice}")]
    Conflict { what: String, advice: String },
    #[error(
        "{path} cannot be read ({error}): it is not a journal this slabflow wrote. Run again with --fresh to start over (slabflow's outputs in {dir} are discarded)."
    )]
    Unreadable { path: PathBuf, dir: PathBuf, error: String },
    #[error("{0} has no slabflow progress journal (.slabflow/run.json): nothing was run there")]
    NoJournal(PathBuf),
    #[error("progress journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CheckpointError {
    /// What is wrong, without what to do about it (for a message that says that itself).
    pub fn summary(&self) -> String {
        match self {
            CheckpointError::Conflict { what, .. } | CheckpointError::Changed { what, .. } => what.clone(),
            CheckpointError::Unreadable { path, .. } => format!("{} cannot be read", path.display()),
            e => e.to_string(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + use<> {
    let path = path.to_owned();
    move |source| CheckpointError::Io { path, source }
}

/// What identifies a run: results are comparable only under the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub slabflow: String,
    /// xxh3-64 of the pipeline file's bytes.
    pub pipeline: String,
    /// What every stage's output depends on: `[input]` (root aside), `[output]` (dir aside) and
    /// the slab depth ([`crate::pipeline::config::Pipeline::base_digest`]). The stages are not
    /// in it: a single-node run whose stages changed goes on, rerunning what changed.
    pub base: String,
    /// The per-case and corpus-level stages: a digest of each one's kind and
    /// [`crate::stages::StageConfig::digest`], in order.
    pub stages: String,
    /// The corpus root the run reads.
    pub input: PathBuf,
}

impl Fingerprint {
    pub fn of(text: &str, base: &str, stages: &str, input: &Path) -> Fingerprint {
        Fingerprint {
            slabflow: env!("CARGO_PKG_VERSION").to_string(),
            pipeline: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())),
            base: base.to_string(),
            stages: stages.to_string(),
            input: if crate::files::objects::is_object(input) {
                input.to_owned()
            } else {
                std::fs::canonicalize(input).unwrap_or_else(|_| input.to_owned())
            },
        }
    }
}

/// A sharded run's split: `shards` tasks over `cases` (ids, sorted), frozen when it began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub shards: usize,
    pub cases: Vec<String>,
}

impl Split {
    /// The case ids of shard `k`.
    pub fn of_shard(&self, k: usize) -> Vec<String> {
        Shard { index: k, count: self.shards }.select(self.cases.iter().cloned())
    }
}

/// `.slabflow/run.json`: what every run and shard of an output must agree with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Unique to this manifest: records of an older one are not this run's.
    pub run_id: String,
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// The pipeline file's text (what `merge` and `status` run with).
    pub pipeline_text: String,
    /// `None` for a single-node run.
    pub split: Option<Split>,
}

impl Manifest {
    /// 3: stage digests and content digests in the records, the base in the fingerprint.
    pub const FORMAT: u32 = 3;

    /// The manifest a run of the pipeline `text` (its [`Fingerprint::base`] `base` and
    /// [`Fingerprint::stages`] `stages`) over `input` wants.
    pub fn new(text: &str, base: &str, stages: &str, input: &Path, split: Option<Split>) -> Manifest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Manifest {
            format: Self::FORMAT,
            run_id: format!("{:x}-{:x}", now.as_nanos(), std::process::id()),
            fingerprint: Fingerprint::of(text, base, stages, input),
            pipeline_text: text.to_string(),
            split,
        }
    }

    pub fn path(out: &Path) -> PathBuf {
        out.join(Journal::DIR).join("run.json")
    }

    /// The manifest of `out`: `None` if there is none; an error if one is there but unreadable.
    pub fn read(out: &Path) -> Result<Option<Manifest>, CheckpointError> {
        let path = Self::path(out);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::Io { path, source: e }),
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) if m.format == Self::FORMAT => Ok(Some(m)),
            Ok(m) => Err(CheckpointError::Unreadable {
                path,
                dir: out.to_owned(),
                error: format!(
                    "written by an older slabflow (journal format {}; this slabflow writes {}), whose results it cannot tell apart",
                    m.format,
                    Self::FORMAT
                ),
            }),
            Err(e) => Err(CheckpointError::Unreadable { path, dir: out.to_owned(), error: e.to_string() }),
        }
    }

    /// Creates `.slabflow/run.json` if there is none, atomically (`link(2)`: of runs racing to
    /// create it, one wins on every filesystem); returns the one already there otherwise.
    pub fn publish(&self, out: &Path) -> Result<Option<Manifest>, CheckpointError> {
        let dir = out.join(Journal::DIR);
        create_dir_durable(&dir).map_err(io_err(&dir))?;
        let path = Self::path(out);
        // In a bucket: a conditional PUT (`If-None-Match: *`) does what link(2) does on a disk.
        let bytes = serde_json::to_vec_pretty(self).expect("serialisable");
        match crate::files::mirror::create_new(&path, &bytes).map_err(io_err(&path))? {
            Some(true) => return std::fs::write(&path, &bytes).map(|_| None).map_err(io_err(&path)),
            Some(false) => {
                crate::files::mirror::refresh(&path).map_err(io_err(&path))?;
                return Self::read(out);
            }
            None => {}
        }
        let tmp = dir.join(format!(".run.json.new-{}", self.run_id));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("serialisable"))?;
            f.sync_all()
        };
        write().map_err(io_err(&tmp))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_parent(&path).map_err(io_err(&path))?;
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read(out),
            Err(e) => Err(CheckpointError::Io { path, source: e }),
        }
    }

    /// Whether a run of `want` goes on here with other stages (only a single-node run can): the
    /// manifest is then rewritten with its pipeline ([`Manifest::replace`]), and the records
    /// say, case by case, which stages made what they hold.
    pub fn stages_changed(&self, want: &Manifest) -> bool {
        self.fingerprint.stages != want.fingerprint.stages && self.conflict(want, Path::new("")).is_none()
    }

    /// Rewrites the manifest of `out` with `want`'s pipeline, keeping its `run_id` (the records
    /// stay this run's) and split; durable before any case is rerun under it. The caller holds
    /// the output alone.
    pub fn replace(&self, want: &Manifest, out: &Path) -> Result<Manifest, CheckpointError> {
        let m = Manifest {
            fingerprint: want.fingerprint.clone(),
            pipeline_text: want.pipeline_text.clone(),
            ..self.clone()
        };
        let path = Self::path(out);
        write_atomic(&path, &serde_json::to_vec_pretty(&m).expect("serialisable")).map_err(io_err(&path))?;
        Ok(m)
    }

    /// Why a run wanting `want` cannot go on in an output holding `self` (`None`: it can).
    pub fn conflict(&self, want: &Manifest, out: &Path) -> Option<CheckpointError> {
        let (before, now) = (&self.fingerprint, &want.fingerprint);
        let saved = out.join(Journal::DIR).join("pipeline.toml");
        let changed = |what: String| Some(CheckpointError::Changed { dir: out.to_owned(), what, saved: saved.clone() });
        if before.slabflow != now.slabflow {
            return changed(format!("slabflow {} then, {} now", before.slabflow, now.slabflow));
        }
        if before.base != now.base {
            let change = describe_change(&self.pipeline_text, &want.pipeline_text);
            if change == SAME_TEXT {
                // The same words, another meaning: a default of this build differs.
                return changed(
                    "the same [input], [output] and slab_depth mean another output to this build of slabflow \
                     than to the one that began the run: a default changed (output.codec is \"auto\" by \
                     default now; add codec = \"blosc-zstd\" to [output] to go on with the chunks \
                     written before)"
                        .into(),
                );
            }
            return changed(format!("its [input], [output] or slab_depth changed: {change}"));
        }
        if before.stages != now.stages && (self.split.is_some() || want.split.is_some()) {
            return changed(format!(
                "the stages of a sharded run changed (its shards run one pipeline; a single-node run reruns only what changed): {}",
                describe_change(&self.pipeline_text, &want.pipeline_text)
            ));
        }
        if before.input != now.input {
            return changed(format!("input {} then, {} now", before.input.display(), now.input.display()));
        }
        let over = "run again with --fresh to start the whole output over (every earlier result in it is discarded)";
        let conflict =
            |what: String, advice: String| Some(CheckpointError::Conflict { what, advice: format!("{advice}{over}") });
        match (&self.split, &want.split) {
            (None, None) => None,
            (None, Some(_)) => conflict(
                format!("{} holds a single-node run; a shard cannot join it", out.display()),
                "resume it without --shard, or ".into(),
            ),
            (Some(s), None) => conflict(
                format!("{} holds a run split in {} shards", out.display(), s.shards),
                format!("resume its shards (--shard K/{}) and `slabflow merge`, or ", s.shards),
            ),
            (Some(s), Some(w)) if s.shards != w.shards => conflict(
                format!("{} holds a run split in {} shards, not {}", out.display(), s.shards, w.shards),
                format!("run --shard K/{} for its shards, or ", s.shards),
            ),
            (Some(s), Some(w)) if s.cases != w.cases => {
                let added: Vec<&String> = w.cases.iter().filter(|c| s.cases.binary_search(c).is_err()).collect();
                let removed: Vec<&String> = s.cases.iter().filter(|c| w.cases.binary_search(c).is_err()).collect();
                conflict(
                    format!(
                        "the corpus changed since the sharded run in {} began ({})",
                        out.display(),
                        describe_cases(&added, &removed)
                    ),
                    "its shards work on the cases it began with, so that they never overlap; restore the corpus, or "
                        .into(),
                )
            }
            _ => None,
        }
    }
}

/// "2 cases added (A, B), 1 removed (C)".
pub fn describe_cases(added: &[&String], removed: &[&String]) -> String {
    let list = |v: &[&String]| {
        let mut s = v.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(", …");
        }
        s
    };
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("{} case{} added ({})", added.len(), if added.len() > 1 { "s" } else { "" }, list(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("{} removed ({})", removed.len(), list(removed)));
    }
    parts.join(", ")
}

/// What a finished case holds: its reductions, and what its outputs were made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseDone {
    pub result: CaseResult,
    pub slabs: usize,
    pub bytes: u64,
    /// Every input file of the case, as it was when it was read: a rerun redoes what read a
    /// file that differs ([`compare_inputs`]).
    pub inputs: Vec<InputStamp>,
    /// The per-case stages whose outputs the case holds: kind → [`crate::stages::StageConfig::digest`].
    /// A rerun reruns a stage whose parameters differ, and drops one the pipeline lost.
    pub stages: BTreeMap<String, String>,
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Done(CaseDone),
    /// Part of a finished case is being redone (`crate::pipeline::rerun`): `kept` is what of
    /// it stands, `remove` what goes before the part is redone (relative to the output), `why`
    /// why. Not finished:
    /// `status` shows it in progress, `merge` waits for it, the tables leave it out; the next
    /// run finishes it.
    Redoing {
        kept: CaseDone,
        remove: Vec<PathBuf>,
        why: Vec<String>,
    },
    Failed {
        error: String,
    },
}

impl Outcome {
    /// What of the case stands: all of it when done, the kept part while a part is redone.
    pub fn kept(&self) -> Option<&CaseDone> {
        match self {
            Outcome::Done(d) | Outcome::Redoing { kept: d, .. } => Some(d),
            Outcome::Failed { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case_id: String,
    pub dataset: String,
    /// The manifest's `run_id` when the record was written.
    #[serde(default)]
    pub run: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The records of one run, or of one shard of a sharded run.
pub struct Journal {
    dir: PathBuf,
    run_id: String,
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

    /// Where `discard` moves a journal folder before deleting what it recorded.
    pub fn tombstone_of(dir: &Path) -> PathBuf {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        dir.with_file_name(format!("{name}.discarded"))
    }

    /// Voids every record in `dir` at once: one durable rename to its tombstone. The caller
    /// then deletes the data, then the tombstone ([`Journal::bury`]); a tombstone found later
    /// is a discard to finish first. A tombstone already there (a discard interrupted before)
    /// stays, so it covers its own data until that is deleted too: `dir` then goes into it.
    pub fn void(dir: &Path) -> Result<(), CheckpointError> {
        let tomb = Self::tombstone_of(dir);
        if !dir.exists() {
            return Ok(());
        }
        let to = if tomb.exists() { tomb.join(format!("newer-{}", std::process::id())) } else { tomb };
        // In a bucket, where nothing renames: a tombstone object, then the manifest goes.
        crate::files::mirror::void(dir, &to).map_err(io_err(dir))?;
        std::fs::rename(dir, &to).map_err(io_err(dir))?;
        sync_parent(dir).map_err(io_err(dir))?;
        sync_parent(&to).map_err(io_err(&to))
    }

    /// Removes the tombstone of `dir`, once the data it recorded is deleted — and durably so
    /// (`syncfs` first): a power cut must not keep the tombstone's removal and lose the
    /// deletions it guarded.
    pub fn bury(dir: &Path) -> Result<(), CheckpointError> {
        let tomb = Self::tombstone_of(dir);
        if !tomb.exists() {
            return Ok(());
        }
        let parent = tomb.parent().unwrap_or(Path::new("."));
        CaseSync::open(&[parent])
            .map_err(io_err(parent))?
            .sync()
            .map_err(|(path, source)| CheckpointError::Io { path, source })?;
        durable::remove_path(&tomb).map_err(io_err(&tomb))?;
        sync_parent(&tomb).map_err(io_err(&tomb))
    }

    /// The journal in `dir` for the manifest's `run_id`, created if new (the caller holds the
    /// output's lock).
    pub fn open(dir: PathBuf, run_id: &str) -> Result<Journal, CheckpointError> {
        let cases = dir.join("cases");
        create_dir_durable(&cases).map_err(io_err(&cases))?;
        durable::sweep_temp_files(&dir).map_err(io_err(&dir))?;
        durable::sweep_temp_files(&cases).map_err(io_err(&cases))?;
        Ok(Journal { dir, run_id: run_id.to_string() })
    }

    /// The journal in `dir`, to read.
    pub fn at(dir: PathBuf, run_id: &str) -> Journal {
        Journal { dir, run_id: run_id.to_string() }
    }

    /// Every readable record of this run, by case id.
    pub fn records(&self) -> BTreeMap<String, CaseRecord> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join("cases")) else { return out };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Some(r) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<CaseRecord>(&b).ok())
                && r.run == self.run_id
            {
                out.insert(r.case_id.clone(), r);
            }
        }
        out
    }

    /// Records how a case ended; for a finished one, after making its data durable (`sync`).
    pub fn record(&self, rec: &CaseRecord, sync: Option<&CaseSync>) -> Result<(), CheckpointError> {
        if let Some(s) = sync {
            s.sync().map_err(|(path, source)| CheckpointError::Io { path, source })?;
        }
        // After the sync (where an NFS outage would hold a run), right before publishing.
        lock::verify_held();
        let path = self.dir.join("cases").join(format!("{}.json", rec.case_id));
        let rec = CaseRecord { run: self.run_id.clone(), ..rec.clone() };
        let bytes = serde_json::to_vec(&rec).expect("serialisable");
        write_atomic(&path, &bytes).map_err(io_err(&path))?;
        self.clear_slab(&rec.case_id)
    }

    /// Rewrites a finished case's record with less in it than its data holds — a part about to
    /// be redone taken out, or new times of files touched: durable before anything it no
    /// longer names is touched. Its slab checkpoint stays.
    pub fn rewrite(&self, rec: &CaseRecord) -> Result<(), CheckpointError> {
        lock::verify_held();
        let path = self.dir.join("cases").join(format!("{}.json", rec.case_id));
        let rec = CaseRecord { run: self.run_id.clone(), ..rec.clone() };
        write_atomic(&path, &serde_json::to_vec(&rec).expect("serialisable")).map_err(io_err(&path))
    }

    /// Removes a case's record, durably: done before a finished case is recomputed whole, so
    /// that no record names its data while it is replaced. Its slab checkpoint stays.
    pub fn forget(&self, case_id: &str) -> Result<(), CheckpointError> {
        lock::verify_held();
        let path = self.dir.join("cases").join(format!("{case_id}.json"));
        durable::remove_path(&path).map_err(io_err(&path))?;
        sync_parent(&path).map_err(io_err(&path))
    }

    fn slab_path(&self, case_id: &str) -> PathBuf {
        self.dir.join("cases").join(format!("{case_id}.slab"))
    }

    /// The slab checkpoint of `case_id`, if one was written by this run and reads whole.
    pub fn load_slab(&self, case_id: &str) -> Option<SlabCheckpoint> {
        let bytes = std::fs::read(self.slab_path(case_id)).ok()?;
        postcard::from_bytes::<SlabCheckpoint>(&bytes)
            .ok()
            .filter(|c| c.format == SlabCheckpoint::FORMAT && c.case_id == case_id && c.run == self.run_id)
    }

    /// Saves a slab checkpoint, after making the case's data written so far durable.
    pub fn save_slab(&self, cp: &SlabCheckpoint, sync: &CaseSync) -> Result<(), CheckpointError> {
        sync.sync().map_err(|(path, source)| CheckpointError::Io { path, source })?;
        lock::verify_held();
        let path = self.slab_path(&cp.case_id);
        let cp = SlabCheckpoint { run: self.run_id.clone(), ..cp.clone() };
        let bytes = postcard::to_stdvec(&cp).expect("serialisable");
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    /// Forgets the slab checkpoint of `case_id` (none is fine).
    pub fn clear_slab(&self, case_id: &str) -> Result<(), CheckpointError> {
        let path = self.slab_path(case_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()), // none, here or in a bucket
            Err(e) => Err(CheckpointError::Io { path, source: e }),
            Ok(()) => crate::files::mirror::remove_file(&path).map_err(io_err(&path)),
        }
    }

    /// Slab checkpoints of cases without a record: (case id, next slice, slices).
    fn partial(&self, records: &BTreeMap<String, CaseRecord>) -> Vec<(String, usize, usize)> {
        let entries = std::fs::read_dir(self.dir.join("cases")).into_iter().flatten().flatten();
        entries
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".slab")?;
                let cp = self.load_slab(id)?;
                (!records.contains_key(id)).then_some((cp.case_id, cp.z, cp.nz))
            })
            .collect()
    }
}

/// How one input file differs from the stamp a case's record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A file the record does not name.
    Added,
    /// A file the record names, gone.
    Removed,
    /// Another size, or another content digest.
    Changed,
    /// Its metadata cannot be read (the error).
    Unreadable(String),
}

/// How a case's input files stand against its record's stamps ([`compare_inputs`]).
#[derive(Debug, Default, Clone)]
pub struct InputDiff {
    /// (image group, path, change), in the order of the case's volumes, then files gone.
    pub changes: Vec<(String, PathBuf, Change)>,
    /// Files touched without a change (a new modification time, the same size and content
    /// digest): the stamps to record instead.
    pub touched: Vec<InputStamp>,
}

impl InputDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Compares a case's input files now — `(image group, path)` — with the stamps its record
/// holds. A file of the same size and modification time is unchanged; one of another size is
/// changed; one of the same size but another time is read again and compared by content
/// digest (xxh3-64 of its bytes), so a file touched, copied back or restored from a backup
/// counts as unchanged and only a real change recomputes. `quick`: such a file counts as
/// changed, unread.
pub fn compare_inputs(recorded: &[InputStamp], now: &[(String, PathBuf)], quick: bool) -> InputDiff {
    let mut diff = InputDiff::default();
    for (group, path) in now {
        let Some(s) = recorded.iter().find(|s| s.path == *path) else {
            diff.changes.push((group.clone(), path.clone(), Change::Added));
            continue;
        };
        let change = match InputStamp::of(path, group) {
            Err(e) => Some(Change::Unreadable(e.to_string())),
            Ok(n) if n.len == s.len && n.modified_ns == s.modified_ns => None,
            Ok(n) if n.len != s.len || quick => Some(Change::Changed),
            Ok(n) => match (s.digest, file_digest(path)) {
                (Some(d), Ok(now)) if d == now => {
                    diff.touched.push(InputStamp { digest: Some(now), ..n });
                    None
                }
                (_, Err(e)) => Some(Change::Unreadable(e.to_string())),
                _ => Some(Change::Changed),
            },
        };
        if let Some(c) = change {
            diff.changes.push((group.clone(), path.clone(), c));
        }
    }
    for s in recorded.iter().filter(|s| !now.iter().any(|(_, p)| *p == s.path)) {
        diff.changes.push((s.group.clone(), s.path.clone(), Change::Removed));
    }
    diff
}

/// The xxh3-64 of a file's bytes, read in 1 MiB blocks (as [`crate::nifti::VolumeReader`]
/// computes it while streaming).
pub fn file_digest(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = crate::files::objects::open_read(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.digest()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What identifies an input file's contents: a file replaced since makes a slab checkpoint
/// stale (the case then starts over) and a finished case's record too (what read it is
/// recomputed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputStamp {
    pub path: PathBuf,
    /// The image group it is stored as in the case's Zarr group (which says its kind).
    pub group: String,
    pub len: u64,
    /// Nanoseconds since 1970 (u64: until 2554; serde cannot read a u128 inside the flattened
    /// record).
    pub modified_ns: u64,
    /// xxh3-64 of the file's bytes, computed while the case streamed it; `None` in a slab
    /// checkpoint (the file is not read through yet).
    #[serde(default)]
    pub digest: Option<u64>,
}

impl InputStamp {
    pub fn of(path: &Path, group: &str) -> std::io::Result<InputStamp> {
        let (len, modified_ns) = crate::files::objects::size_and_time(path)?;
        Ok(InputStamp { path: path.to_owned(), group: group.to_owned(), len, modified_ns, digest: None })
    }
}

/// A case caught mid-way, at a slab boundary: every Zarr chunk before slice `z` is durable in
/// the case's group, and `stages` hold each stage's state there ([`crate::stages::SlabStage::save`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlabCheckpoint {
    pub format: u32,
    /// The manifest's `run_id` (set by [`Journal::save_slab`]).
    pub run: String,
    pub case_id: String,
    pub inputs: Vec<InputStamp>,
    /// The part of the case being redone (stages and groups, `crate::pipeline::rerun`); empty
    /// for a whole case.
    pub scope: Vec<String>,
    /// The next slice to read, and the case's number of slices.
    pub z: usize,
    pub nz: usize,
    /// Slabs and decoded bytes streamed so far (the case's record counts them all).
    pub slabs: usize,
    pub bytes: u64,
    pub stages: Vec<Vec<u8>>,
}

impl SlabCheckpoint {
    /// 4: the surface Dice keeps its code slices as row bands. 5: attention keeps where each
    /// class's attention peaks.
    pub const FORMAT: u32 = 5;
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
    /// Finished cases caught while a part of them was redone: (case id, why).
    pub redoing: Vec<(String, String)>,
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

/// Reads the journal of `out` without touching it (no lock needed). `discover` lists the case
/// ids the saved pipeline finds in the corpus now (`None` if it cannot be read).
pub fn status(out: &Path, discover: impl FnOnce(&Manifest) -> Option<usize>) -> Result<Status, CheckpointError> {
    let Some(m) = Manifest::read(out)? else {
        if Journal::tombstone_of(&out.join(Journal::DIR)).exists() {
            return Err(CheckpointError::Conflict {
                what: format!("{}: a --fresh was interrupted while discarding earlier results", out.display()),
                advice: "run again to finish it and start over".into(),
            });
        }
        return Err(CheckpointError::NoJournal(out.to_owned()));
    };
    let mut journals: Vec<(Option<Shard>, Vec<String>, PathBuf)> = Vec::new();
    match &m.split {
        None => journals.push((None, Vec::new(), Journal::dir_of(out, None))),
        Some(split) => {
            for k in 0..split.shards {
                let s = Shard { index: k, count: split.shards };
                journals.push((Some(s), split.of_shard(k), Journal::dir_of(out, Some(s))));
            }
        }
    }
    let (mut done, mut failed, mut partial, mut shards) = (0, Vec::new(), Vec::new(), Vec::new());
    let mut redoing = Vec::new();
    for (shard, assigned, dir) in journals {
        let journal = Journal::at(dir, &m.run_id);
        let records = journal.records();
        let d = records.values().filter(|r| matches!(r.outcome, Outcome::Done { .. })).count();
        let f: Vec<(String, String)> = records
            .values()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed { error } => Some((r.case_id.clone(), error.clone())),
                _ => None,
            })
            .collect();
        partial.extend(journal.partial(&records));
        redoing.extend(records.values().filter_map(|r| match &r.outcome {
            Outcome::Redoing { why, .. } => Some((r.case_id.clone(), why.join(", "))),
            _ => None,
        }));
        if let Some(s) = shard {
            shards.push(ShardStatus { shard: s, assigned: assigned.len(), done: d, failed: f.len() });
        }
        done += d;
        failed.extend(f);
    }
    partial.sort();
    failed.sort();
    let discovered = discover(&m);
    Ok(Status {
        fingerprint: m.fingerprint,
        pipeline_file: out.join(Journal::DIR).join("pipeline.toml"),
        discovered,
        done,
        failed,
        partial,
        redoing,
        shards,
    })
}

/// What [`describe_change`] says of two texts with the same lines.
const SAME_TEXT: &str = "only whitespace or order";

/// A one-line summary of how `new` differs from `old` (lines removed and added).
pub fn describe_change(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let new_lines: Vec<&str> = new.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let removed: Vec<&str> = old_lines.iter().filter(|l| !new_lines.contains(l)).copied().collect();
    let added: Vec<&str> = new_lines.iter().filter(|l| !old_lines.contains(l)).copied().collect();
    let show = |v: &[&str]| v.iter().take(3).map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ");
    match (removed.is_empty(), added.is_empty()) {
        (true, true) => SAME_TEXT.into(),
        (false, true) => format!("removed {}", show(&removed)),
        (true, false) => format!("added {}", show(&added)),
        (false, false) => format!("{} became {}", show(&removed), show(&added)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_changed_line() {
        let d = describe_change("a = 1\nbudget = 0.05\n", "a = 1\nbudget = 0.1\n");
        assert_eq!(d, "`budget = 0.05` became `budget = 0.1`");
    }

    #[test]
    fn the_manifest_is_created_once_and_conflicts_are_named() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let split = |cases: &[&str]| Some(Split { shards: 2, cases: cases.iter().map(|s| s.to_string()).collect() });
        let a = Manifest::new("x = 1\n", "b1", "s1", out, split(&["A", "B", "C"]));
        assert_eq!(a.publish(out).unwrap(), None);
        let b = Manifest::new("x = 1\n", "b1", "s1", out, split(&["A", "B", "C"]));
        assert_eq!(b.publish(out).unwrap(), Some(a.clone()), "the first one stays");
        assert!(a.conflict(&b, out).is_none(), "same pipeline, split and cases");
        let c = Manifest::new("x = 1\n", "b1", "s1", out, split(&["A", "B", "C", "D"]));
        let e = a.conflict(&c, out).unwrap().to_string();
        assert!(e.contains("1 case added (D)"), "{e}");
        let d = Manifest::new("x = 2\n", "b2", "s1", out, split(&["A", "B", "C"]));
        assert!(a.conflict(&d, out).unwrap().to_string().contains("`x = 1` became `x = 2`"));
        let single = Manifest::new("x = 1\n", "b1", "s1", out, None);
        assert!(a.conflict(&single, out).unwrap().to_string().contains("split in 2 shards"));
        let stages = Manifest::new("x = 1\ny = 2\n", "b1", "s2", out, split(&["A", "B", "C"]));
        assert!(a.conflict(&stages, out).unwrap().to_string().contains("stages of a sharded run changed"));
        let one = Manifest::new("x = 1\n", "b1", "s1", out, None);
        let other = Manifest::new("x = 1\ny = 2\n", "b1", "s2", out, None);
        assert!(one.conflict(&other, out).is_none() && one.stages_changed(&other), "stages alone change");
        assert!(!one.stages_changed(&one.clone()));
        let comment = Manifest::new("# a comment\nx = 1\n", "b1", "s1", out, split(&["A", "B", "C"]));
        assert!(a.conflict(&comment, out).is_none(), "a comment is no change to a sharded run");
        std::fs::write(Manifest::path(out), b"{ torn").unwrap();
        assert!(matches!(Manifest::read(out), Err(CheckpointError::Unreadable { .. })));
    }

    #[test]
    fn void_then_bury() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join(".slabflow");
        let j = Journal::open(dir.clone(), "r1").unwrap();
        let rec = CaseRecord {
            case_id: "A".into(),
            dataset: String::new(),
            run: String::new(),
            outcome: Outcome::Failed { error: "x".into() },
        };
        j.record(&rec, None).unwrap();
        assert_eq!(j.records().len(), 1);
        assert!(Journal::at(dir.clone(), "r2").records().is_empty(), "another run's records are not ours");
        Journal::void(&dir).unwrap();
        assert!(!dir.exists() && Journal::tombstone_of(&dir).is_dir());
        assert!(j.records().is_empty(), "voided at once");
        Journal::bury(&dir).unwrap();
        assert!(!Journal::tombstone_of(&dir).exists());
    }
}
