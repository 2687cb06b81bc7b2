//! `metrics`: per-class measures of each case (the paper's Tables 1, 5–7 and Figure 8).
//!
//! - the consensus (pseudo label: mean p over models > 0.5, the attention stage's arithmetic)
//!   in voxels and mL, and each model's own mask (p > 0.5) in mL;
//! - where the class has an original label G (value > 0): Dice between G and the consensus P
//!   (empty when both are empty) and the normalized surface Dice at `nsd_tolerance_mm`, exactly
//!   as DeepMind's `surface-distance` ([`super::surface`]);
//! - model agreement (Figure 8a): Dice between each pair of models' masks.
//!
//! Everything is computed z-slice by z-slice; the NSD keeps a few corner slices per class.

use std::ops::Range;

use rayon::prelude::*;
use serde::Deserialize;

use super::surface::SurfaceDice;
use super::{
    CaseContext, CaseResult, CaseSlab, ProbDecoder, SlabStage, StageConfig, StageKind, all_zero, decode_state,
    encode_state, parse_table, require_predictions,
};
use crate::input::InputConfig;
use crate::input::InputKind;
use crate::nifti::Voxels;
use crate::with_voxels;

pub const KIND: StageKind = StageKind {
    kind: "metrics",
    summary: "consensus and per-model volumes (mL), Dice and NSD against original labels, model agreement",
    params: &[("nsd_tolerance_mm", "1.0", "tolerance of the normalized surface Dice, in mm")],
    per_case: true,
    reads: &[InputKind::Prediction, InputKind::Label],
    writes: &[],
    needs: &[],
    makes: &[],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "tolerance")]
    pub nsd_tolerance_mm: f64,
}

fn tolerance() -> f64 {
    1.0
}

fn build(table: &toml::Table, input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: MetricsConfig = parse_table(table)?;
    let mut problems = require_predictions(input, "metrics");
    if !(c.nsd_tolerance_mm.is_finite() && c.nsd_tolerance_mm >= 0.0) {
        problems.push(format!("nsd_tolerance_mm = {}: use a distance ≥ 0 in mm", c.nsd_tolerance_mm));
    }
    if problems.is_empty() { Ok(StageConfig::Metrics(c)) } else { Err(problems) }
}

/// The pairs of models `(a, b)`, a < b, in the order of the agreement columns.
pub fn model_pairs(models: usize) -> Vec<(usize, usize)> {
    (0..models).flat_map(|a| (a + 1..models).map(move |b| (a, b))).collect()
}

/// What one class accumulates over a case.
struct ClassState {
    consensus: u64,
    label: u64,
    both: u64,
    /// Voxels of each model's mask.
    model: Vec<u64>,
    /// Voxels in both masks, per model pair.
    pair: Vec<u64>,
    nsd: Option<SurfaceDice>,
    // Per-slice scratch.
    cons: Vec<u8>,
    gt: Vec<u8>,
    above: Vec<Vec<u8>>,
    p: Vec<f64>,
    sum: Vec<f64>,
    isum: Vec<u32>,
}

pub struct MetricsStage {
    classes: Vec<ClassState>,
    pairs: Vec<(usize, usize)>,
    voxel_ml: f64,
}

impl MetricsStage {
    pub fn start(config: &MetricsConfig, ctx: &CaseContext) -> Result<MetricsStage, String> {
        let l = ctx.layout;
        let [dx, dy, dz] = l.spacing;
        let models = l.models.len();
        let pairs = model_pairs(models);
        let classes = (0..l.classes.len())
            .map(|c| ClassState {
                consensus: 0,
                label: 0,
                both: 0,
                model: vec![0; models],
                pair: vec![0; pairs.len()],
                nsd: l.labels[c].map(|_| SurfaceDice::new(l.shape, l.spacing, config.nsd_tolerance_mm)),
                cons: Vec::new(),
                gt: Vec::new(),
                above: vec![Vec::new(); models],
                p: Vec::new(),
                sum: Vec::new(),
                isum: Vec::new(),
            })
            .collect();
        Ok(MetricsStage { classes, pairs, voxel_ml: dx * dy * dz / 1000.0 })
    }
}

/// The rows of slice `z` outside which every model's p and class `c`'s label are 0, so every
/// mask is 0 there and adds nothing: found with vectorised zero scans of uint8 rows. Other
/// prediction types are taken whole.
fn active_rows(slab: &CaseSlab, c: usize, z: usize) -> Range<usize> {
    let layout = slab.layout;
    let [nx, ny, _] = layout.shape;
    let base = z * nx * ny;
    let preds: Option<Vec<&[u8]>> = (0..layout.models.len())
        .map(|n| match (&layout.prob[n][c], slab.prediction(n, c)) {
            (ProbDecoder::U8Table, Voxels::U8(d)) => Some(&d[base..base + nx * ny]),
            _ => None,
        })
        .collect();
    let Some(preds) = preds else { return 0..ny };
    let label = slab.label(c);
    let row_zero = |y: usize| match slab.rows {
        // The rows shared by every stage (a label's negative values count as set there: a
        // few more rows computed, the same counts).
        Some(_) => {
            (0..layout.models.len()).all(|n| !slab.row_nonzero(layout.predictions[n][c], z, y))
                && layout.labels[c].is_none_or(|v| !slab.row_nonzero(v, z, y))
        }
        None => {
            let r = y * nx..(y + 1) * nx;
            preds.iter().all(|p| all_zero(&p[r.clone()]))
                && label.is_none_or(|l| match l {
                    Voxels::U8(d) => all_zero(&d[base + r.start..base + r.end]),
                    l => with_voxels!(l, d => d[base + r.start..base + r.end].iter().all(|&v| v as f64 <= 0.0)),
                })
        }
    };
    let lo = (0..ny).find(|&y| !row_zero(y)).unwrap_or(ny);
    let hi = (lo..ny).rev().find(|&y| !row_zero(y)).map_or(lo, |y| y + 1);
    lo..hi
}

/// One z-slice of one class: consensus, label and model masks, counts, and the NSD stream.
/// Compiled for AVX2 too, chosen at run time (see [`super`]).
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn slice(st: &mut ClassState, slab: &CaseSlab, c: usize, z: usize, pairs: &[(usize, usize)]) -> Result<(), String> {
    let layout = slab.layout;
    let models = layout.models.len();
    let (nx, nxy) = (layout.shape[0], slab.nxy());
    // Far from the organ every model says 0 and the label is empty: nothing to count, and the
    // NSD stream only needs to know the slice is empty. Most slices of most classes are so,
    // and the others are computed on their rows between the first and last non-zero one.
    let rows = active_rows(slab, c, z);
    st.cons.clear();
    st.cons.resize(nxy, 0);
    if rows.is_empty() {
        if let Some(nsd) = &mut st.nsd {
            nsd.push(&st.cons, &st.cons);
        }
        return Ok(());
    }
    // `local`: those rows within the slice; `range`: within the slab.
    let local = rows.start * nx..rows.end * nx;
    let range = z * nxy + local.start..z * nxy + local.end;
    let len = local.len();
    let cons = &mut st.cons[local.clone()];
    let u8_rows: Option<Vec<&[u8]>> = (0..models)
        .map(|n| match (&layout.prob[n][c], slab.prediction(n, c)) {
            (ProbDecoder::U8Table, Voxels::U8(d)) => Some(&d[range.clone()]),
            _ => None,
        })
        .collect();
    if let Some(rows) = u8_rows {
        // uint8 = p × 255, in integers: p > 0.5 ⇔ v ≥ 128, and mean p > 0.5 ⇔ 2 Σv > 255 N.
        // Only an exact tie (N even) is settled in floating point, where numpy's mean falls.
        st.isum.clear();
        st.isum.resize(len, 0);
        for (n, row) in rows.iter().enumerate() {
            let above = &mut st.above[n];
            above.clear();
            above.resize(len, 0);
            for ((a, s), &v) in above.iter_mut().zip(st.isum.iter_mut()).zip(row.iter()) {
                *a = (v >= 128) as u8;
                *s += v as u32;
            }
            st.model[n] += super::sum_bytes(above);
        }
        let half = 255 * models as u32;
        for (cv, &s) in cons.iter_mut().zip(&st.isum) {
            *cv = (2 * s > half) as u8;
        }
        if models.is_multiple_of(2) {
            // 2Σv is even and 255N odd for odd N: a tie needs an even N.
            for (k, (cv, &s)) in cons.iter_mut().zip(&st.isum).enumerate() {
                if 2 * s == half {
                    *cv = (rows.iter().map(|r| r[k] as f64 / 255.0).sum::<f64>() / models as f64 > 0.5) as u8;
                }
            }
        }
    } else {
        st.sum.clear();
        st.sum.resize(len, 0.0);
        st.p.resize(len, 0.0);
        for n in 0..models {
            let above = &mut st.above[n];
            above.clear();
            above.resize(len, 0);
            layout.prob[n][c]
                .decode(slab.prediction(n, c), range.clone(), &mut st.p)
                .map_err(|e| format!("{}: {e}", layout.paths[layout.predictions[n][c]].display()))?;
            for ((a, s), &p) in above.iter_mut().zip(st.sum.iter_mut()).zip(&st.p) {
                *a = (p > 0.5) as u8;
                *s += p;
            }
            st.model[n] += super::sum_bytes(above);
        }
        // Σp / N, as numpy's mean: the same side of 0.5 as the attention stage.
        let n = models as f64;
        for (cv, &s) in cons.iter_mut().zip(&st.sum) {
            *cv = (s / n > 0.5) as u8;
        }
    }
    st.consensus += super::sum_bytes(cons);
    for (k, &(a, b)) in pairs.iter().enumerate() {
        st.pair[k] += super::sum_and(&st.above[a], &st.above[b]);
    }
    if let Some(label) = slab.label(c) {
        st.gt.clear();
        st.gt.resize(nxy, 0);
        let gt = &mut st.gt[local.clone()];
        with_voxels!(label, d => {
            for (g, &v) in gt.iter_mut().zip(&d[range.clone()]) {
                *g = (v as f64 > 0.0) as u8;
            }
        });
        st.label += super::sum_bytes(gt);
        st.both += super::sum_and(gt, &st.cons[local]);
        if let Some(nsd) = &mut st.nsd {
            nsd.push(&st.gt, &st.cons);
        }
    }
    Ok(())
}

impl SlabStage for MetricsStage {
    fn wants_rows(&self) -> bool {
        true
    }
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let pairs = &self.pairs;
        self.classes.par_iter_mut().enumerate().try_for_each(|(c, st)| {
            for z in 0..slab.nz {
                slice(st, slab, c, z, pairs)?;
            }
            Ok(())
        })
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        for (row, st) in result.classes.iter_mut().zip(&self.classes) {
            row.consensus_voxels = Some(st.consensus);
            row.volume_ml = Some(st.consensus as f64 * self.voxel_ml);
            if st.nsd.is_some() {
                // Empty when both masks are empty; 0 when only one is.
                let total = st.label + st.consensus;
                row.dice = (total > 0).then(|| 2.0 * st.both as f64 / total as f64);
                row.nsd = st.nsd.as_ref().and_then(|s| s.finish());
            }
            row.model_volume_ml = st.model.iter().map(|&v| v as f64 * self.voxel_ml).collect();
            row.model_agreement = self
                .pairs
                .iter()
                .zip(&st.pair)
                .map(|(&(a, b), &both)| {
                    let total = st.model[a] + st.model[b];
                    (total > 0).then(|| 2.0 * both as f64 / total as f64)
                })
                .collect();
        }
        Ok(())
    }

    /// Per class: the counts and the NSD stream's state.
    fn save(&self) -> Vec<u8> {
        let classes: Vec<ClassSaved> = self
            .classes
            .iter()
            .map(|st| ClassSaved {
                counts: [st.consensus, st.label, st.both],
                model: st.model.clone(),
                pair: st.pair.clone(),
                nsd: st.nsd.as_ref().map(|s| s.save()),
            })
            .collect();
        encode_state(&classes)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let saved: Vec<ClassSaved> = decode_state(state)?;
        if saved.len() != self.classes.len() {
            return Err(format!("a slab checkpoint has {} classes, the pipeline {}", saved.len(), self.classes.len()));
        }
        for (st, s) in self.classes.iter_mut().zip(saved) {
            if s.model.len() != st.model.len() || s.pair.len() != st.pair.len() || s.nsd.is_some() != st.nsd.is_some() {
                return Err("a slab checkpoint does not match this case's models or labels".into());
            }
            [st.consensus, st.label, st.both] = s.counts;
            (st.model, st.pair) = (s.model, s.pair);
            if let (Some(nsd), Some(bytes)) = (&mut st.nsd, s.nsd) {
                nsd.restore(&bytes)?;
            }
        }
        Ok(())
    }
}

/// What a slab checkpoint keeps of one class (see [`ClassState`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct ClassSaved {
    counts: [u64; 3],
    model: Vec<u64>,
    pair: Vec<u64>,
    nsd: Option<Vec<u8>>,
}
