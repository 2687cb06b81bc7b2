//! Soft predictions → probabilities, as the contract defines them: where the file carries
//! scaling, p is the scaled value; an integer file without scaling is divided by its type's
//! maximum (AbdomenAtlas stores uint8 = p × 255); a float file without scaling holds p.
//!
//! [`consensus`] is the one place the consensus rule (mean p > 0.5) lives for the stages that
//! only need the mask (assemble, evaluate, review); metrics and attention fuse it with their
//! per-model work and follow the same rule.
//!
//! Invariant: every p a decoder hands out is in [0, 1] (NaN and values outside fail with the
//! file named), unless the pipeline asked to clamp.

use crate::nifti::{DataType, Header, Voxels};
use crate::with_voxels;

#[derive(Debug, Clone, PartialEq)]
pub enum ProbDecoder {
    /// uint8 without scaling: p = v / 255, looked up (the authors' format; the hot path).
    U8Table,
    /// p = v * scale + offset.
    Affine { scale: f64, offset: f64, clamp: bool, exact_range: bool },
}

impl ProbDecoder {
    pub fn for_header(h: &Header, clamp: bool) -> ProbDecoder {
        match h.scaling() {
            None if h.datatype == DataType::U8 => ProbDecoder::U8Table,
            None if h.datatype.is_integer() => {
                let (_, max) = h.datatype.range();
                // Unsigned types map into [0, 1]; signed ones can go negative and are checked.
                let unsigned = matches!(h.datatype, DataType::U8 | DataType::U16 | DataType::U32);
                ProbDecoder::Affine { scale: 1.0 / max, offset: 0.0, clamp, exact_range: unsigned }
            }
            None => ProbDecoder::Affine { scale: 1.0, offset: 0.0, clamp, exact_range: false },
            Some((s, i)) => ProbDecoder::Affine { scale: s, offset: i, clamp, exact_range: false },
        }
    }

    /// Writes p for voxels `range` of `v` into `out` (same length); errors on NaN or p ∉ [0, 1]
    /// unless clamping, with the offending value.
    pub fn decode(&self, v: &Voxels, range: std::ops::Range<usize>, out: &mut [f64]) -> Result<(), String> {
        match (self, v) {
            (ProbDecoder::U8Table, Voxels::U8(d)) => {
                const T: [f64; 256] = {
                    let mut t = [0.0; 256];
                    let mut i = 0;
                    while i < 256 {
                        t[i] = i as f64 / 255.0;
                        i += 1;
                    }
                    t
                };
                for (o, &x) in out.iter_mut().zip(&d[range]) {
                    *o = T[x as usize];
                }
                Ok(())
            }
            (ProbDecoder::Affine { scale, offset, clamp, exact_range }, v) => {
                let (s, i) = (*scale, *offset);
                let mut bad = None;
                with_voxels!(v, d => {
                    for (o, &x) in out.iter_mut().zip(&d[range]) {
                        let p = (x as f64) * s + i;
                        *o = p;
                        if !*exact_range && !(0.0..=1.0).contains(&p) {
                            if *clamp && !p.is_nan() {
                                *o = p.clamp(0.0, 1.0);
                            } else {
                                bad.get_or_insert(p);
                            }
                        }
                    }
                });
                match bad {
                    Some(p) => Err(format!(
                        "probability {p} outside [0, 1]{}",
                        if self.clamps() { "" } else { " (set clamp_probabilities = true in [input] to clamp)" }
                    )),
                    None => Ok(()),
                }
            }
            (ProbDecoder::U8Table, other) => Err(format!("expected uint8 data, found {}", other.datatype().name())),
        }
    }

    fn clamps(&self) -> bool {
        matches!(self, ProbDecoder::Affine { clamp: true, .. })
    }
}

/// The consensus mask (mean p over the models > 0.5) of class `c` for voxels `range` of the
/// slab, into `out`. uint8 predictions are compared in integers (p > 0.5 ⇔ 2 Σv > 255 N), an
/// exact tie settled in f64 as numpy's mean does; other types are decoded to p.
pub fn consensus(
    slab: &super::CaseSlab,
    c: usize,
    range: std::ops::Range<usize>,
    out: &mut [u8],
) -> Result<(), String> {
    let layout = slab.layout;
    let models = layout.models.len();
    let rows: Option<Vec<&[u8]>> = (0..models)
        .map(|n| match (&layout.prob[n][c], slab.prediction(n, c)) {
            (ProbDecoder::U8Table, Voxels::U8(d)) => Some(&d[range.clone()]),
            _ => None,
        })
        .collect();
    if let Some(rows) = rows {
        consensus_u8(&rows, out);
        return Ok(());
    }
    let mut sum = vec![0.0; range.len()];
    let mut p = vec![0.0; range.len()];
    for n in 0..models {
        layout.prob[n][c]
            .decode(slab.prediction(n, c), range.clone(), &mut p)
            .map_err(|e| format!("{}: {e}", layout.paths[layout.predictions[n][c]].display()))?;
        sum.iter_mut().zip(&p).for_each(|(s, &x)| *s += x);
    }
    for (o, &s) in out.iter_mut().zip(&sum) {
        *o = (s / models as f64 > 0.5) as u8;
    }
    Ok(())
}

/// The consensus of uint8 predictions (p = v / 255), one row per model, into `out`: p > 0.5 ⇔
/// 2 Σv > 255 N in integers; an exact tie (N even) settled in f64 as numpy's mean does.
pub fn consensus_u8(rows: &[&[u8]], out: &mut [u8]) {
    let models = rows.len();
    let half = 255 * models as u32;
    for (k, o) in out.iter_mut().enumerate() {
        let s: u32 = rows.iter().map(|r| r[k] as u32).sum();
        *o = if 2 * s != half {
            (2 * s > half) as u8
        } else {
            (rows.iter().map(|r| r[k] as f64 / 255.0).sum::<f64>() / models as f64 > 0.5) as u8
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dt: DataType, slope: f64, inter: f64) -> Header {
        let a = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]];
        let mut h = Header::new_3d([2, 1, 1], [1.0; 3], a, dt);
        h.scl_slope = slope;
        h.scl_inter = inter;
        h
    }

    #[test]
    fn integer_files_without_scaling_are_divided_by_their_maximum() {
        let d = ProbDecoder::for_header(&header(DataType::U8, 1.0, 0.0), false);
        let mut out = [0.0; 2];
        d.decode(&Voxels::U8(vec![0, 255]), 0..2, &mut out).unwrap();
        assert_eq!(out, [0.0, 1.0]);
        let d = ProbDecoder::for_header(&header(DataType::U16, 0.0, 0.0), false);
        d.decode(&Voxels::U16(vec![65535, 0]), 0..2, &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0]);
    }

    #[test]
    fn scaled_files_use_the_scaled_value() {
        let d = ProbDecoder::for_header(&header(DataType::U8, 0.01, 0.0), false);
        let mut out = [0.0; 2];
        d.decode(&Voxels::U8(vec![50, 100]), 0..2, &mut out).unwrap();
        assert_eq!(out, [50.0 * 0.01, 100.0 * 0.01]);
        assert!(d.decode(&Voxels::U8(vec![200, 0]), 0..2, &mut out).unwrap_err().contains("outside [0, 1]"));
    }

    #[test]
    fn nan_fails_even_when_clamping() {
        let d = ProbDecoder::for_header(&header(DataType::F32, 1.0, 0.0), true);
        let mut out = [0.0; 2];
        d.decode(&Voxels::F32(vec![1.5, -0.5]), 0..2, &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0]);
        assert!(d.decode(&Voxels::F32(vec![f32::NAN, 0.5]), 0..2, &mut out).is_err());
    }
}
