//! `evaluate` (the paper's Table 1): how well the attention map points at real errors, where
//! original labels exist.
//!
//! Per case and annotated class: the *error* region is the consensus's false positives and
//! false negatives against the label (consensus XOR label); the *attention* region is the
//! paper's attention (Eq. 1–4, by the attention stage's own function, whatever that stage's
//! settings) above `threshold` — taken from a paper-mode attention stage of the same run, which
//! marks it while computing its maps ([`super::shared`]), or computed here otherwise. Both are split into 26-connected components
//! (`scipy.ndimage.label` with a 3×3×3 structure), components under `min_voxels` dropped.
//! sensitivity = error components that share a voxel with the attention region / error
//! components; precision = attention components that share a voxel with the error region /
//! attention components (empty when there are none). The run writes `evaluation.csv` (per case
//! and class) and `evaluation_summary.csv` (per class, mean ± std over cases, as Table 1).
//!
//! Invariants: components are labelled in the stream ([`super::components`]): memory is bounded
//! by the components crossing a slice, never by the voxels; results do not depend on slab depth.

use rayon::prelude::*;
use serde::Deserialize;

use super::attention::{entropy_table, paper_slab};
use super::components::Components;
use super::prob::consensus;
use super::{CaseContext, CaseResult, CaseSlab, SlabStage, StageConfig, StageKind, decode_state, encode_state};
use super::{parse_table, require_predictions};
use crate::input::InputConfig;
use crate::input::InputKind;
use crate::with_voxels;

pub const KIND: StageKind = StageKind {
    kind: "evaluate",
    summary: "attention against real errors (Table 1): connected components, sensitivity and precision per class",
    params: &[
        ("threshold", "0.1", "attention above this is the attention region (paper attention, Eq. 1–4)"),
        ("min_voxels", "1", "components smaller than this are left out of both counts"),
    ],
    per_case: true,
    reads: &[InputKind::Prediction, InputKind::Label],
    writes: &[],
    needs: &[],
    makes: &[],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    #[serde(default = "threshold")]
    pub threshold: f64,
    #[serde(default = "one")]
    pub min_voxels: u64,
}

fn threshold() -> f64 {
    0.1
}
fn one() -> u64 {
    1
}

fn build(table: &toml::Table, input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: EvaluateConfig = parse_table(table)?;
    let mut problems = require_predictions(input, "evaluate");
    if input.label.is_none() {
        problems.push("\"evaluate\" compares with original labels: set [input] label".into());
    }
    if !c.threshold.is_finite() || c.threshold < 0.0 {
        problems.push(format!("threshold = {}: use a number ≥ 0", c.threshold));
    }
    if c.min_voxels == 0 {
        problems.push("min_voxels = 0: use 1 or more".into());
    }
    if problems.is_empty() { Ok(StageConfig::Evaluate(c)) } else { Err(problems) }
}

/// Counts of one region's components.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counted {
    pub components: u64,
    /// Components sharing a voxel with the other region.
    pub touching: u64,
    /// Voxels of the largest component, and of all of them.
    pub largest: u64,
    pub voxels: u64,
}

/// What `evaluation.csv` holds for one (case, class).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub error: Counted,
    pub attention: Counted,
}

impl Evaluation {
    pub fn sensitivity(&self) -> Option<f64> {
        (self.error.components > 0).then(|| self.error.touching as f64 / self.error.components as f64)
    }
    pub fn precision(&self) -> Option<f64> {
        (self.attention.components > 0).then(|| self.attention.touching as f64 / self.attention.components as f64)
    }
}

/// One annotated class: the two component streams and their counts.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClassEval {
    error: Components,
    attention: Components,
    counts: Evaluation,
}

pub struct EvaluateStage {
    config: EvaluateConfig,
    classes: Vec<Option<ClassEval>>,
    ent: Box<[f64; 256]>,
    /// Per class: attention > threshold on the current slab.
    above: Vec<Vec<u8>>,
}

impl EvaluateStage {
    pub fn start(config: &EvaluateConfig, ctx: &CaseContext) -> Result<EvaluateStage, String> {
        let [nx, ny, _] = ctx.layout.shape;
        let classes = ctx
            .layout
            .labels
            .iter()
            .map(|l| {
                l.map(|_| ClassEval {
                    error: Components::new(nx, ny),
                    attention: Components::new(nx, ny),
                    counts: Evaluation::default(),
                })
            })
            .collect();
        Ok(EvaluateStage {
            config: config.clone(),
            classes,
            ent: entropy_table(),
            above: vec![Vec::new(); ctx.layout.classes.len()],
        })
    }
}

impl EvaluateStage {
    /// Computes the paper attention of `slab` and keeps, per annotated class, where it is
    /// above the threshold (`self.above`).
    fn attention_region(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let (nxy, n) = (slab.nxy(), slab.len());
        for (a, e) in self.above.iter_mut().zip(&self.classes) {
            a.clear();
            a.resize(if e.is_some() { n } else { 0 }, 0);
        }
        let mut outs: Vec<Vec<&mut [u8]>> = (0..slab.nz).map(|_| Vec::new()).collect();
        for a in &mut self.above {
            if a.is_empty() {
                outs.iter_mut().for_each(|o| o.push(&mut []));
            } else {
                for (z, piece) in a.chunks_mut(nxy).enumerate() {
                    outs[z].push(piece);
                }
            }
        }
        let (threshold, nx) = (self.config.threshold, slab.layout.shape[0]);
        paper_slab(slab, &self.ent, outs, |out, c, y, x, att| {
            if let Some(v) = out[c].get_mut(y * nx + x) {
                *v = (att > threshold) as u8;
            }
        })?;
        Ok(())
    }
}

fn count(c: &mut Counted, min: u64, voxels: u64, marked: bool) {
    if voxels >= min {
        c.components += 1;
        c.touching += marked as u64;
        c.largest = c.largest.max(voxels);
        c.voxels += voxels;
    }
}

impl SlabStage for EvaluateStage {
    fn wants_rows(&self) -> bool {
        true
    }
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let nxy = slab.nxy();
        // The attention region of every annotated class: shared by a paper attention stage
        // (computed with the same function, compared with the same threshold, bit-packed per
        // slice), or computed here.
        let shared = slab.attention_above;
        if shared.is_none() {
            self.attention_region(slab)?;
        }
        let own = &self.above;
        let min = self.config.min_voxels;
        self.classes.par_iter_mut().enumerate().try_for_each(|(c, ev)| -> Result<(), String> {
            let Some(ev) = ev else { return Ok(()) };
            let label = slab.label(c).expect("annotated");
            let consensus_shared = slab.shared_consensus(c);
            let mut cons_own = vec![0u8; if consensus_shared.is_some() { 0 } else { nxy }];
            let mut unpacked = vec![0u8; if shared.is_some() { nxy } else { 0 }];
            let mut err = vec![0u8; nxy];
            for z in 0..slab.nz {
                let range = z * nxy..(z + 1) * nxy;
                let cons: &[u8] = match consensus_shared {
                    Some(m) => &m[range.clone()],
                    None => {
                        consensus(slab, c, range.clone(), &mut cons_own)?;
                        &cons_own
                    }
                };
                with_voxels!(label, d => {
                    for ((e, &g), &p) in err.iter_mut().zip(&d[range.clone()]).zip(cons) {
                        *e = ((g as f64 > 0.0) as u8) ^ p;
                    }
                });
                let att: &[u8] = match shared {
                    Some(bits) => {
                        bits[c][z].unpack_into(&mut unpacked);
                        &unpacked
                    }
                    None => &own[c][range],
                };
                let counts = &mut ev.counts;
                ev.error.push(&err, Some(att), |k| count(&mut counts.error, min, k.voxels, k.marked));
                ev.attention.push(att, Some(&err), |k| count(&mut counts.attention, min, k.voxels, k.marked));
            }
            Ok(())
        })
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        let min = self.config.min_voxels;
        for (row, ev) in result.classes.iter_mut().zip(&mut self.classes) {
            if let Some(ev) = ev {
                let counts = &mut ev.counts;
                ev.error.finish(|k| count(&mut counts.error, min, k.voxels, k.marked));
                ev.attention.finish(|k| count(&mut counts.attention, min, k.voxels, k.marked));
                row.evaluation = Some(ev.counts.clone());
            }
        }
        Ok(())
    }

    /// The component streams (the runs of the last slice and the open components' totals) and
    /// the counts so far.
    fn save(&self) -> Vec<u8> {
        encode_state(&self.classes)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let classes: Vec<Option<ClassEval>> = decode_state(state)?;
        if classes.len() != self.classes.len()
            || classes.iter().zip(&self.classes).any(|(a, b)| a.is_some() != b.is_some())
        {
            return Err("a slab checkpoint does not match this case's labels".into());
        }
        self.classes = classes;
        Ok(())
    }

    /// Every annotated class's error region is the consensus against the label.
    fn wants_consensus(&self, c: usize) -> bool {
        self.classes.get(c).is_some_and(|e| e.is_some())
    }
}
