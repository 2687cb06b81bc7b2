//! `metrics`: per-class measures of each case — the consensus (pseudo label) volume in mL,
//! and, where the class has an original label, Dice between label (value > 0) and consensus.
//!
//! Consensus of class c = voxels where the mean of p over models is > 0.5 (the same arithmetic
//! as the attention stage). NSD (`nsd_tolerance_mm`) is parsed and validated here; its
//! streaming computation is not implemented yet, so the `nsd` column stays empty.

use rayon::prelude::*;
use serde::Deserialize;

use super::{
    CaseContext, CaseResult, CaseSlab, ProbDecoder, SlabStage, StageConfig, StageKind, parse_table, require_predictions,
};
use crate::nifti::Voxels;
use crate::pipeline::config::InputConfig;
use crate::with_voxels;

pub const KIND: StageKind = StageKind {
    kind: "metrics",
    summary: "consensus volume (mL) and Dice against original labels, per class",
    params: &[("nsd_tolerance_mm", "1.0", "tolerance of the normalized surface Dice, in mm")],
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

/// Counts for one class.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    consensus: u64,
    label: u64,
    both: u64,
}

pub struct MetricsStage {
    counts: Vec<Counts>,
    labelled: Vec<bool>,
    voxel_ml: f64,
}

impl MetricsStage {
    pub fn start(_c: &MetricsConfig, ctx: &CaseContext) -> Result<MetricsStage, String> {
        let [dx, dy, dz] = ctx.layout.spacing;
        Ok(MetricsStage {
            counts: vec![Counts::default(); ctx.layout.classes.len()],
            labelled: ctx.layout.labels.iter().map(Option::is_some).collect(),
            voxel_ml: dx * dy * dz / 1000.0,
        })
    }
}

impl SlabStage for MetricsStage {
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let layout = slab.layout;
        let models = layout.models.len();
        let n = models as f64;
        let len = slab.len();
        let parts: Vec<Result<Counts, String>> = (0..layout.classes.len())
            .into_par_iter()
            .map(|c| {
                let mut counts = Counts::default();
                let label = slab.label(c);
                let mut sum = vec![0.0f64; 4096.min(len)];
                let mut p = vec![0.0f64; sum.len()];
                let mut cons = vec![false; sum.len()];
                let u8_models: Option<Vec<&[u8]>> = (0..models)
                    .map(|m| match (&layout.prob[m][c], slab.prediction(m, c)) {
                        (ProbDecoder::U8Table, Voxels::U8(d)) => Some(d.as_slice()),
                        _ => None,
                    })
                    .collect();
                for start in (0..len).step_by(sum.len()) {
                    let end = (start + sum.len()).min(len);
                    let m = end - start;
                    if let Some(raw) = &u8_models {
                        // uint8 = p × 255: mean p > 0.5 ⇔ 2 Σv > 255 N, in integers. Only an
                        // exact tie (N even) takes the float path, to fall where numpy's does.
                        let half = 255 * models as u32;
                        for (k, cv) in cons[..m].iter_mut().enumerate() {
                            let twice: u32 = raw.iter().map(|d| d[start + k] as u32).sum::<u32>() * 2;
                            *cv = if twice != half {
                                twice > half
                            } else {
                                raw.iter().map(|d| d[start + k] as f64 / 255.0).sum::<f64>() / n > 0.5
                            };
                        }
                    } else {
                        sum[..m].fill(0.0);
                        for model in 0..models {
                            let dec: &ProbDecoder = &layout.prob[model][c];
                            dec.decode(slab.prediction(model, c), start..end, &mut p[..m]).map_err(|e| {
                                format!("{}: {e}", layout.paths[layout.predictions[model][c]].display())
                            })?;
                            sum[..m].iter_mut().zip(&p[..m]).for_each(|(s, &x)| *s += x);
                        }
                        cons[..m].iter_mut().zip(&sum[..m]).for_each(|(cv, &s)| *cv = s / n > 0.5);
                    }
                    if let Some(l) = label {
                        with_voxels!(l, d => {
                            for (&cv, &g) in cons[..m].iter().zip(&d[start..end]) {
                                let g = g as f64 > 0.0;
                                counts.consensus += cv as u64;
                                counts.label += g as u64;
                                counts.both += (g && cv) as u64;
                            }
                        });
                    } else {
                        counts.consensus += cons[..m].iter().filter(|&&cv| cv).count() as u64;
                    }
                }
                Ok(counts)
            })
            .collect();
        for (t, p) in self.counts.iter_mut().zip(parts) {
            let p = p?;
            t.consensus += p.consensus;
            t.label += p.label;
            t.both += p.both;
        }
        Ok(())
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        for ((row, k), &labelled) in result.classes.iter_mut().zip(&self.counts).zip(&self.labelled) {
            row.consensus_voxels = Some(k.consensus);
            row.volume_ml = Some(k.consensus as f64 * self.voxel_ml);
            // Empty when both masks are empty; 0 when only one is.
            let total = k.label + k.consensus;
            row.dice = (labelled && total > 0).then(|| 2.0 * k.both as f64 / total as f64);
        }
        Ok(())
    }
}
