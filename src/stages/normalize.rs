//! `normalize`: CT intensities to a window, with MONAI `ScaleIntensityRanged` semantics:
//! `(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min`, then clipped to
//! `[b_min, b_max]` when `clip`. Written to `ct_norm` as float32 (computed in f64).

use serde::Deserialize;

use super::{CaseContext, CaseResult, CaseSlab, SlabStage, StageConfig, StageKind, parse_table};
use crate::input::InputConfig;
use crate::input::InputKind;
use crate::nifti::{DataType, Voxels};
use crate::zarr::ImageWriter;

pub const KIND: StageKind = StageKind {
    kind: "normalize",
    summary: "CT to a HU window (MONAI ScaleIntensityRanged), written to ct_norm as float32",
    params: &[
        ("a_min", "-175.0", "HU mapped to b_min (AbdomenAtlas window)"),
        ("a_max", "250.0", "HU mapped to b_max"),
        ("b_min", "0.0", "output at a_min"),
        ("b_max", "1.0", "output at a_max"),
        ("clip", "true", "clip the output to [b_min, b_max]"),
    ],
    per_case: true,
    reads: &[InputKind::Ct],
    writes: &["cases/{case}.zarr/ct_norm"],
    needs: &[],
    makes: &[],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    #[serde(default = "a_min")]
    pub a_min: f64,
    #[serde(default = "a_max")]
    pub a_max: f64,
    #[serde(default)]
    pub b_min: f64,
    #[serde(default = "one")]
    pub b_max: f64,
    #[serde(default = "yes")]
    pub clip: bool,
}

fn a_min() -> f64 {
    -175.0
}
fn a_max() -> f64 {
    250.0
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

fn build(table: &toml::Table, _input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: NormalizeConfig = parse_table(table)?;
    let mut problems = Vec::new();
    if !(c.a_min.is_finite() && c.a_max.is_finite() && c.b_min.is_finite() && c.b_max.is_finite()) {
        problems.push("a_min, a_max, b_min and b_max must be finite numbers".into());
    }
    if c.a_min == c.a_max {
        problems.push(format!("a_min = a_max = {}: the window is empty", c.a_min));
    }
    if problems.is_empty() { Ok(StageConfig::Normalize(c)) } else { Err(problems) }
}

impl NormalizeConfig {
    /// The normalised value of `x` HU.
    #[inline]
    pub fn apply(&self, x: f64) -> f64 {
        let y = (x - self.a_min) / (self.a_max - self.a_min) * (self.b_max - self.b_min) + self.b_min;
        if self.clip {
            let (lo, hi) = if self.b_min <= self.b_max { (self.b_min, self.b_max) } else { (self.b_max, self.b_min) };
            y.clamp(lo, hi)
        } else {
            y
        }
    }
}

pub struct NormalizeStage {
    config: NormalizeConfig,
    writer: ImageWriter,
    buf: Vec<f32>,
    /// For an int16 CT (as every AbdomenAtlas one), the output of each of its 65,536 values,
    /// made on the first slab: one load per voxel instead of a division (the same f32 bits).
    table: Option<Box<[f32]>>,
}

impl NormalizeStage {
    pub fn start(config: &NormalizeConfig, ctx: &CaseContext) -> Result<NormalizeStage, String> {
        let header = ctx.ct_header.with_stored(DataType::F32, true);
        let writer = ctx.store.image("ct_norm", &header, DataType::F32, 0.0, ctx.zarr).map_err(|e| e.to_string())?;
        Ok(NormalizeStage { config: config.clone(), writer, buf: Vec::new(), table: None })
    }
}

impl SlabStage for NormalizeStage {
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        self.buf.resize(slab.len(), 0.0);
        let c = &self.config;
        let buf = &mut self.buf;
        let scaling = slab.layout.ct_scaling;
        match slab.ct() {
            Voxels::I16(v) => {
                let table = self.table.get_or_insert_with(|| {
                    let (s, i) = scaling.unwrap_or((1.0, 0.0));
                    let scaled = scaling.is_some();
                    (0..=u16::MAX)
                        .map(|b| {
                            let x = b as i16 as f64;
                            c.apply(if scaled { x * s + i } else { x }) as f32
                        })
                        .collect()
                });
                for (o, &x) in buf.iter_mut().zip(v) {
                    *o = table[x as u16 as usize];
                }
            }
            ct => ct.for_each_scaled(scaling, |k, x| buf[k] = c.apply(x) as f32),
        }
        self.writer.write_slab(slab.z0, &self.buf).map_err(|e| e.to_string())
    }

    fn finish(&mut self, _result: &mut CaseResult) -> Result<(), String> {
        Ok(())
    }

    /// Stateless between slabs: each slab is mapped and written on its own.
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abdomenatlas_window() {
        let c = NormalizeConfig { a_min: -175.0, a_max: 250.0, b_min: 0.0, b_max: 1.0, clip: true };
        assert_eq!(c.apply(-175.0), 0.0);
        assert_eq!(c.apply(250.0), 1.0);
        assert_eq!(c.apply(-1024.0), 0.0);
        assert_eq!(c.apply(3000.0), 1.0);
        assert!((c.apply(37.5) - 0.5).abs() < 1e-15);
        let u = NormalizeConfig { clip: false, ..c };
        assert!(u.apply(-1024.0) < 0.0);
    }
}
