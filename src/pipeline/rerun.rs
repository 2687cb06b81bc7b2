//! What a run does with each case of an output that holds earlier results: keep it, compute
//! it whole, or redo a part of it — exactly what changed, and what depends on that.
//!
//! A finished case's record names its input files (size, modification time, content digest)
//! and the per-case stages whose outputs it holds (kind and [`crate::stages::StageConfig::digest`]). Against
//! the corpus and the pipeline now:
//! - a case without a record, failed, or whose CT changed (the CT fixes the grid every output
//!   is on) is computed whole — from its slab checkpoint, if it has a valid one;
//! - another input file changed, appeared or went: that file is converted again (or its image
//!   group removed), and every stage that reads its kind ([`StageKind::reads`]) reruns;
//! - a stage whose parameters changed, or that is new, reruns; a stage the pipeline lost has
//!   its outputs removed ([`StageKind::writes`]) and its columns emptied;
//! - otherwise the case is kept (a file only touched, same content, is restamped).
//!
//! Corpus-level stages (`rank`, `review`) and the tables are redone at the end of every run
//! from the records, without reading a voxel; `review` re-exports only cases whose record
//! changed.
//!
//! Invariant: before a case is redone in part, its record is rewritten without what is about
//! to be redone ([`Partial::voided`]), durably: no record ever names data being rewritten, and
//! a run interrupted there redoes that part next time (whatever pipeline it then runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checkpoint::{CaseDone, CaseRecord, Change, InputStamp, Outcome, compare_inputs};
use crate::input::{Case, InputKind};
use crate::pipeline::config::Pipeline;
use crate::stages::{CaseResult, StageKind};

/// What a run does with one case.
#[derive(Debug, Clone)]
pub enum Work {
    /// Its record stands; `touched`: files with a new modification time and the same content,
    /// restamped in the record.
    Keep { touched: Vec<InputStamp> },
    /// Computed from its input files up: new, failed before, caught mid-way, or `why`.
    Whole { why: Option<String> },
    /// Redone in part.
    Part(Partial),
}

/// The part of a finished case a run redoes.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    /// Input image groups converted again (their file changed or appeared).
    pub convert: Vec<String>,
    /// Input image groups whose file is gone.
    pub remove: Vec<String>,
    /// Indices into the pipeline's stages of those that rerun.
    pub stages: Vec<usize>,
    /// Stage kinds the pipeline no longer has: their outputs go.
    pub dropped: Vec<String>,
    /// What an interrupted redo was removing (its record says), removed first.
    pub leftover: Vec<PathBuf>,
    /// Why, for people: "predictions/unet/liver.nii.gz changed", "metrics parameters changed".
    pub why: Vec<String>,
    pub touched: Vec<InputStamp>,
}

impl Work {
    /// Whether the run has nothing to do for the case.
    pub fn is_keep(&self) -> bool {
        matches!(self, Work::Keep { .. })
    }
}

/// The digests of the pipeline's per-case stages: what a whole case's record holds.
pub fn stage_digests(p: &Pipeline) -> BTreeMap<String, String> {
    p.stages.iter().filter(|s| s.kind().per_case).map(|s| (s.kind().kind.to_string(), s.digest())).collect()
}

/// What to do with each of `cases`, given the journal's `records`: the files of the cases are
/// compared on the rayon pool (a file touched is read whole, for its digest). `quick`: a file
/// touched counts as changed, unread — enough to find a case to plan with.
pub fn triage<'a>(
    p: &Pipeline,
    cases: &'a [Case],
    records: &BTreeMap<String, CaseRecord>,
    quick: bool,
) -> Vec<(&'a Case, Work)> {
    cases.par_iter().map(|c| (c, work(p, c, records.get(&c.id), quick))).collect()
}

fn work(p: &Pipeline, c: &Case, record: Option<&CaseRecord>, quick: bool) -> Work {
    let Some(CaseDone { inputs, stages, .. }) = record.and_then(|r| r.outcome.kept()) else {
        return Work::Whole { why: None };
    };
    let interrupted = match record.map(|r| &r.outcome) {
        Some(Outcome::Redoing { remove, why, .. }) => Some((remove.clone(), why.clone())),
        _ => None,
    };
    let vols = match c.volumes(&p.input) {
        Ok(v) => v,
        Err(e) => return Work::Whole { why: Some(e) },
    };
    if inputs.is_empty() {
        return Work::Whole { why: Some("recorded without input stamps".into()) };
    }
    let now: Vec<(String, PathBuf)> = vols.into_iter().map(|v| (v.group, v.path)).collect();
    let diff = compare_inputs(inputs, &now, quick);
    let case_dir = c.ct.parent().unwrap_or(&p.input.root);
    let name = |path: &Path| {
        let rel = [case_dir, p.input.root.as_path()].into_iter().find_map(|r| path.strip_prefix(r).ok());
        rel.unwrap_or(path).display().to_string()
    };
    let mut part = Partial { touched: diff.touched, ..Default::default() };
    let mut changed_kinds = Vec::new();
    for (group, path, change) in &diff.changes {
        let what = match change {
            Change::Added => "added".to_string(),
            Change::Removed => "removed".to_string(),
            Change::Changed => "changed".to_string(),
            Change::Unreadable(e) => format!("cannot be read ({e})"),
        };
        let why = format!("{} {what}", name(path));
        let kind = InputKind::of_group(group);
        if kind == InputKind::Ct || matches!(change, Change::Unreadable(_)) {
            return Work::Whole { why: Some(why) };
        }
        match change {
            Change::Removed => part.remove.push(group.clone()),
            _ => part.convert.push(group.clone()),
        }
        changed_kinds.push(kind);
        part.why.push(why);
    }
    for (i, s) in p.stages.iter().enumerate() {
        let kind = s.kind();
        if !kind.per_case {
            continue;
        }
        let why = match stages.get(kind.kind) {
            None => Some(format!("{} added", kind.kind)),
            Some(d) if *d != s.digest() => Some(format!("{} parameters changed", kind.kind)),
            _ if kind.reads.iter().any(|k| changed_kinds.contains(k)) => None,
            _ => continue,
        };
        part.stages.push(i);
        part.why.extend(why);
    }
    for kind in stages.keys() {
        if !p.stages.iter().any(|s| s.kind().kind == kind.as_str()) {
            part.dropped.push(kind.clone());
            part.why.push(format!("{kind} removed"));
        }
    }
    if let Some((leftover, why)) = interrupted {
        // What was being redone is missing from the kept record, so it is found again above;
        // say why it was being redone.
        part.leftover = leftover;
        part.why = vec![format!("an interrupted redo ({}) finished", why.join(", "))];
        return Work::Part(part);
    }
    if part.convert.is_empty() && part.remove.is_empty() && part.stages.is_empty() && part.dropped.is_empty() {
        Work::Keep { touched: part.touched }
    } else {
        Work::Part(part)
    }
}

impl Partial {
    /// The kinds of the stages that rerun.
    pub fn stage_kinds(&self, p: &Pipeline) -> Vec<&'static str> {
        self.stages.iter().map(|&i| p.stages[i].kind().kind).collect()
    }

    /// What is removed before the part is redone: what an interrupted redo was removing, the
    /// groups converted again or gone, and what the rerun and the dropped stages wrote.
    pub fn to_remove(&self, p: &Pipeline, out: &Path, case_id: &str) -> Vec<PathBuf> {
        let case_dir = out.join("cases").join(format!("{case_id}.zarr"));
        // Recorded relative to the output (the output may move, and a bucket output's
        // scratch folder is another one each run); older records hold absolute paths.
        let mut v: Vec<PathBuf> = self.leftover.iter().map(|l| out.join(l)).collect();
        v.extend(self.convert.iter().chain(&self.remove).map(|g| case_dir.join(g)));
        let kinds = self.stage_kinds(p).into_iter().chain(self.dropped.iter().map(String::as_str));
        for k in kinds.filter_map(StageKind::named) {
            v.extend(k.outputs(out, case_id));
        }
        v.sort();
        v.dedup();
        v
    }

    /// The record to publish before the part is redone: [`Outcome::Redoing`], with what
    /// stands — the record without the stamps of the files about to be converted or gone, the
    /// stages about to rerun or dropped, and their results — and what is about to be removed.
    pub fn voided(&self, p: &Pipeline, out: &Path, rec: &CaseRecord) -> CaseRecord {
        let mut kept = rec.outcome.kept().expect("a part is redone only of a finished case").clone();
        kept.inputs.retain(|s| !self.convert.contains(&s.group) && !self.remove.contains(&s.group));
        let consensus: Vec<Option<u64>> = kept.result.classes.iter().map(|r| r.consensus_voxels).collect();
        for kind in self.stage_kinds(p).into_iter().chain(self.dropped.iter().map(String::as_str)) {
            kept.stages.remove(kind);
            kept.result.forget(kind);
        }
        if kept.stages.contains_key("attention") || kept.stages.contains_key("metrics") {
            // A stage that counted the consensus stands: so does its count.
            for (row, c) in kept.result.classes.iter_mut().zip(consensus) {
                row.consensus_voxels = c;
            }
        }
        let remove = self
            .to_remove(p, out, &rec.case_id)
            .into_iter()
            .map(|path| path.strip_prefix(out).map(Path::to_path_buf).unwrap_or(path))
            .collect();
        let outcome = Outcome::Redoing { kept, remove, why: self.why.clone() };
        CaseRecord { outcome, ..rec.clone() }
    }

    /// The record once the part is redone: `old` (as [`Partial::voided`] left it) with what
    /// the rerun stages computed (`new`) and their digests; the stamps of the files converted
    /// now (`read`), of files touched, and the record's for the others — a file read but not
    /// converted keeps its recorded stamp (the case's copy of it is that one; were it changed
    /// since, the next run sees that and converts it).
    pub fn finished(
        &self,
        p: &Pipeline,
        out: &Path,
        old: &CaseRecord,
        new: &CaseResult,
        read: &[InputStamp],
    ) -> Outcome {
        let Outcome::Redoing { kept, .. } = self.voided(p, out, old).outcome else { unreachable!("voided is Redoing") };
        let CaseDone { mut result, slabs, bytes, inputs: before, mut stages } = kept;
        for &i in &self.stages {
            let s = &p.stages[i];
            result.adopt(s.kind().kind, new);
            stages.insert(s.kind().kind.to_string(), s.digest());
        }
        let inputs = read
            .iter()
            .map(|now| {
                if self.convert.contains(&now.group) {
                    return now.clone();
                }
                let touched = self.touched.iter().find(|s| s.path == now.path);
                touched.or_else(|| before.iter().find(|s| s.path == now.path)).unwrap_or(now).clone()
            })
            .collect();
        Outcome::Done(CaseDone { result, slabs, bytes, inputs, stages })
    }

    /// What identifies this part in a slab checkpoint: the stages rerun, with their
    /// parameters, and the groups converted (a checkpoint of another part does not resume it).
    pub fn scope(&self, p: &Pipeline) -> Vec<String> {
        let mut v: Vec<String> = self.stages.iter().map(|&i| p.stages[i].id()).collect();
        v.extend(self.convert.iter().cloned());
        v
    }
}

/// What identifies a whole case's run in a slab checkpoint: its stages, with their parameters.
pub fn whole_scope(p: &Pipeline) -> Vec<String> {
    p.stages.iter().filter(|s| s.kind().per_case).map(|s| s.id()).collect()
}

/// A kept case's record with the stamps of files touched since (same content).
pub fn restamped(rec: &CaseRecord, touched: &[InputStamp]) -> CaseRecord {
    let mut rec = rec.clone();
    if let Outcome::Done(CaseDone { inputs, .. }) = &mut rec.outcome {
        for s in inputs.iter_mut() {
            if let Some(t) = touched.iter().find(|t| t.path == s.path) {
                *s = t.clone();
            }
        }
    }
    rec
}

/// How the stages of `p` differ from the pipeline `before` (its text): one line per stage
/// that is new, changed or gone, and whether the corpus-level stages rerun (they always do).
pub fn describe_stages(p: &Pipeline, before: Option<&Pipeline>) -> Vec<String> {
    let Some(before) = before else { return Vec::new() };
    let mut out = Vec::new();
    for s in &p.stages {
        let k = s.kind().kind;
        match before.stages.iter().find(|b| b.kind().kind == k) {
            None => out.push(format!("{k}: added")),
            Some(b) if b.digest() != s.digest() => out.push(format!("{k}: parameters changed")),
            _ => {}
        }
    }
    for b in &before.stages {
        if !p.stages.iter().any(|s| s.kind().kind == b.kind().kind) {
            out.push(format!("{}: removed", b.kind().kind));
        }
    }
    out
}
