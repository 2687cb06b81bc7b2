//! `attention`: the paper's per-voxel attention (§3.1, Eq. 1–4) or the authors' released
//! `create_attention.py`, with the per-class sums of `metrics.csv`.
//!
//! For model n of N, class c, voxel i (p as in [`super::prob`]):
//! Inconsistency = population std of p over models; Uncertainty = −(1/N) Σ p ln p (0 ln 0 = 0);
//! Overlap = 1 where some model has p(n,c) > 0.5 and p(n,c') > 0.5 for a c' ≠ c;
//! Attention = their sum (`mode = "paper"`, float32 maps). Consensus = mean p > 0.5.
//!
//! `mode = "released"`: (std > 0.1) and (mean entropy > 0.05), each opened (erosion then
//! dilation, `iterations` times, 3×3×3 full structure, outside 0), OR-ed with the overlap of
//! the class's consensus with any other class's consensus; uint8 maps, sums are voxel counts.
//! The opening needs 2·iterations slices of look-ahead, so maps are written one chunk late
//! (see [`super::morphology::Opening`]).
//!
//! Invariants: sums are accumulated in f64 per z-slice and added in slice order, so results do
//! not depend on thread timing; uint8 inputs (the authors' format) never call `ln` per voxel.

use std::collections::VecDeque;

use rayon::prelude::*;
use serde::Deserialize;

use super::morphology::{BitSlice, Opening};
use super::shared::{ClassBits, Pool, Pooled, Shared};
use super::{
    CaseContext, CaseResult, CaseSlab, ProbDecoder, SlabStage, StageConfig, StageKind, decode_state, encode_state,
    parse_table, require_predictions,
};
use crate::input::InputConfig;
use crate::input::InputKind;
use crate::nifti::{DataType, Voxels};
use crate::zarr::ImageWriter;

pub const KIND: StageKind = StageKind {
    kind: "attention",
    summary: "per-voxel attention (inconsistency + uncertainty + overlap) and its per-class sums",
    params: &[
        ("mode", "\"paper\"", "\"paper\" (Eq. 1-4, float32 maps) or \"released\" (create_attention.py, binary maps)"),
        ("std_threshold", "0.1", "released: inconsistency threshold"),
        ("entropy_threshold", "0.05", "released: uncertainty threshold"),
        ("iterations", "2", "released: erosions, then dilations, of the opening"),
        ("write_maps", "true", "write attention/<class> to each case's Zarr group"),
    ],
    per_case: true,
    reads: &[InputKind::Prediction],
    writes: &["cases/{case}.zarr/attention"],
    needs: &[],
    makes: &[super::Product::AttentionSize, super::Product::AttentionMaps],
    build,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Paper,
    Released,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    #[serde(default = "paper")]
    pub mode: Mode,
    #[serde(default = "std_threshold")]
    pub std_threshold: f64,
    #[serde(default = "entropy_threshold")]
    pub entropy_threshold: f64,
    #[serde(default = "iterations")]
    pub iterations: usize,
    #[serde(default = "yes")]
    pub write_maps: bool,
}

fn paper() -> Mode {
    Mode::Paper
}
fn std_threshold() -> f64 {
    0.1
}
fn entropy_threshold() -> f64 {
    0.05
}
fn iterations() -> usize {
    2
}
fn yes() -> bool {
    true
}

fn build(table: &toml::Table, input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: AttentionConfig = parse_table(table)?;
    let mut problems = require_predictions(input, "attention");
    if c.iterations > 16 {
        problems.push(format!("iterations = {}: at most 16", c.iterations));
    }
    if c.mode == Mode::Released && input.classes.len() > 255 {
        problems.push("released mode handles at most 255 classes".into());
    }
    if problems.is_empty() { Ok(StageConfig::Attention(c)) } else { Err(problems) }
}

/// Bytes held per case (see `StageConfig::memory`).
pub fn memory(c: &AttentionConfig, nxy: usize, depth: usize, models: usize, classes: usize, threads: u64) -> u64 {
    let slab = (nxy * depth) as u64;
    let scratch = threads * 1024 * (models * classes * 2 + classes + models) as u64 * 8;
    match c.mode {
        Mode::Paper => classes as u64 * slab * 4 + scratch,
        Mode::Released => {
            let window = (2 * c.iterations + 1) as u64;
            // Two chunk buffers per class, masks for one slab, opening windows (bits).
            classes as u64 * (2 * slab + 3 * slab / 8 + 2 * 2 * window * nxy as u64 / 8) + scratch
        }
    }
}

/// −p ln p of p = v/255 for each uint8 value v.
fn u8_entropy() -> [f64; 256] {
    std::array::from_fn(|v| {
        let p = v as f64 / 255.0;
        if p > 0.0 { -p * p.ln() } else { 0.0 }
    })
}

/// Per-row scratch: p and −p ln p for every model and class, voxel counts above 0.5.
struct Scratch {
    p: Vec<f64>,
    e: Vec<f64>,
    mean: Vec<f64>,
    /// One class's Σ (p − mean)², Σ −p ln p and model overlap along the row.
    var: Vec<f64>,
    unc: Vec<f64>,
    overlap: Vec<u8>,
    above: Vec<u8>,
    consensus: Vec<u8>,
    /// Classes with a non-zero p in the current row.
    active: Vec<bool>,
}

impl Scratch {
    fn new(models: usize, classes: usize, nx: usize) -> Scratch {
        Scratch {
            p: vec![0.0; models * classes * nx],
            e: vec![0.0; models * classes * nx],
            mean: vec![0.0; classes * nx],
            var: vec![0.0; nx],
            unc: vec![0.0; nx],
            overlap: vec![0; nx],
            above: vec![0; models * nx],
            consensus: vec![0; nx],
            active: vec![false; classes],
        }
    }
}

/// What one voxel of one class contributes.
struct VoxelStats {
    std: f64,
    unc: f64,
    /// Paper overlap: some model has this class and another above 0.5.
    model_overlap: bool,
    consensus: bool,
    /// Released overlap: consensus here and in another class.
    consensus_overlap: bool,
}

/// Computes row `y` of slice `z` of the slab, calling `f(class, x, stats)` for every voxel
/// where the class's mean p is not 0. Elsewhere every p is 0 (p ≥ 0), so std, uncertainty,
/// overlap and consensus are all 0: callers start from zeroed outputs, and skipping adds
/// exactly nothing to the sums. Most of a CT is far from every organ, so most rows of most
/// classes are skipped without decoding. Compiled for AVX2 too, chosen at run time (see
/// [`super`]): the same operations in the same order, so the same bits.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn row_stats(
    slab: &CaseSlab,
    z: usize,
    y: usize,
    s: &mut Scratch,
    ent: &[f64; 256],
    mut f: impl FnMut(usize, usize, &VoxelStats),
) -> Result<(), String> {
    let layout = slab.layout;
    let (nx, models, classes) = (layout.shape[0], layout.models.len(), layout.classes.len());
    let start = z * slab.nxy() + y * nx;
    s.above.fill(0);
    for c in 0..classes {
        // A class whose uint8 rows are all 0 is skipped before anything is decoded or
        // cleared (a vectorised scan): most rows of most classes are so.
        let u8_zero = |n: usize| match (&layout.prob[n][c], slab.prediction(n, c)) {
            (ProbDecoder::U8Table, Voxels::U8(d)) => match slab.rows {
                Some(_) => !slab.row_nonzero(layout.predictions[n][c], z, y),
                None => super::all_zero(&d[start..start + nx]),
            },
            _ => false,
        };
        s.active[c] = false;
        if (0..models).all(u8_zero) {
            continue;
        }
        for n in 0..models {
            let at = (n * classes + c) * nx;
            let (p, e) = (&mut s.p[at..at + nx], &mut s.e[at..at + nx]);
            match (&layout.prob[n][c], slab.prediction(n, c)) {
                (ProbDecoder::U8Table, Voxels::U8(d)) => {
                    let row = &d[start..start + nx];
                    if u8_zero(n) {
                        p.fill(0.0);
                        e.fill(0.0);
                        continue;
                    }
                    for ((pi, ei), &b) in p.iter_mut().zip(e.iter_mut()).zip(row) {
                        *pi = b as f64 / 255.0;
                        *ei = ent[b as usize];
                    }
                }
                (dec, v) => {
                    dec.decode(v, start..start + nx, p)
                        .map_err(|m| format!("{}: {m}", layout.paths[layout.predictions[n][c]].display()))?;
                    if p.iter().all(|&x| x == 0.0) {
                        e.fill(0.0);
                        continue;
                    }
                    for (ei, &pi) in e.iter_mut().zip(p.iter()) {
                        *ei = if pi > 0.0 { -pi * pi.ln() } else { 0.0 };
                    }
                }
            }
            s.active[c] = true;
            for (a, &pi) in s.above[n * nx..(n + 1) * nx].iter_mut().zip(p.iter()) {
                *a += (pi > 0.5) as u8;
            }
        }
    }
    // Divisions by N, not multiplications by 1/N: numpy's mean and std divide, and a
    // consensus at exactly 0.5 must fall on the same side.
    let n_models = models as f64;
    s.consensus.fill(0);
    // Each sum runs over the models in order, as the per-voxel loops did (the same f64 values,
    // bit for bit), but model by model along the row: loops the compiler vectorises.
    for c in (0..classes).filter(|&c| s.active[c]) {
        let mean = &mut s.mean[c * nx..(c + 1) * nx];
        mean.fill(0.0);
        for n in 0..models {
            let at = (n * classes + c) * nx;
            for (m, &p) in mean.iter_mut().zip(&s.p[at..at + nx]) {
                *m += p;
            }
        }
        for (m, k) in mean.iter_mut().zip(s.consensus.iter_mut()) {
            *m /= n_models;
            *k += (*m > 0.5) as u8;
        }
    }
    for c in (0..classes).filter(|&c| s.active[c]) {
        let mean = &s.mean[c * nx..(c + 1) * nx];
        let (var, unc, overlap) = (&mut s.var[..nx], &mut s.unc[..nx], &mut s.overlap[..nx]);
        var.fill(0.0);
        unc.fill(0.0);
        overlap.fill(0);
        for n in 0..models {
            let at = (n * classes + c) * nx;
            let (p, e, above) = (&s.p[at..at + nx], &s.e[at..at + nx], &s.above[n * nx..(n + 1) * nx]);
            for x in 0..nx {
                let d = p[x] - mean[x];
                var[x] += d * d;
                unc[x] += e[x];
                overlap[x] |= ((p[x] > 0.5) & (above[x] >= 2)) as u8;
            }
        }
        for x in 0..nx {
            let mean = mean[x];
            if mean == 0.0 {
                continue;
            }
            let (var, unc, overlap) = (var[x], unc[x], overlap[x] != 0);
            let consensus = mean > 0.5;
            f(
                c,
                x,
                &VoxelStats {
                    std: (var / n_models).sqrt(),
                    unc: unc / n_models,
                    model_overlap: overlap,
                    consensus,
                    consensus_overlap: consensus && s.consensus[x] >= 2,
                },
            );
        }
    }
    Ok(())
}

/// Per-class sums of one z-slice.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Sums {
    attention: f64,
    inconsistency: f64,
    uncertainty: f64,
    overlap: u64,
    consensus: u64,
}

fn add(total: &mut [Sums], part: &[Sums]) {
    for (t, p) in total.iter_mut().zip(part) {
        t.attention += p.attention;
        t.inconsistency += p.inconsistency;
        t.uncertainty += p.uncertainty;
        t.overlap += p.overlap;
        t.consensus += p.consensus;
    }
}

/// The −p ln p table of uint8 probabilities.
pub(super) fn entropy_table() -> Box<[f64; 256]> {
    Box::new(u8_entropy())
}

pub fn start(c: &AttentionConfig, ctx: &CaseContext) -> Result<Box<dyn SlabStage>, String> {
    let classes = ctx.layout.classes.len();
    let stored = if c.mode == Mode::Paper { DataType::F32 } else { DataType::U8 };
    let mut writers = Vec::new();
    if c.write_maps {
        let header = ctx.ct_header.with_stored(stored, true);
        // Sparse float maps compress faster and smaller unshuffled (crate::zarr::ZarrOptions).
        let opts = ctx.zarr.sparse().unshuffled();
        for class in &ctx.layout.classes {
            writers.push(
                ctx.store
                    .image(&format!("attention/{class}"), &header, stored, 0.0, &opts)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let sums = vec![Sums::default(); classes];
    let ent = Box::new(u8_entropy());
    let [nx, ny, nz] = ctx.layout.shape;
    Ok(match c.mode {
        Mode::Paper => Box::new(PaperStage {
            writers,
            sums,
            ent,
            maps: vec![Vec::new(); classes],
            dirty: Vec::new(),
            above: ctx.paper_above.map(|t| {
                let annotated = ctx.layout.labels.iter().map(|l| l.is_some()).collect();
                (t, annotated, Pool::new(crate::stages::shared::SHARED_IN_FLIGHT))
            }),
            shared: None,
            peaks: vec![PeakFinder::default(); classes],
        }),
        Mode::Released => Box::new(ReleasedStage {
            config: c.clone(),
            writers,
            sums,
            ent,
            depth: ctx.zarr.slab_depth.min(nz).max(1),
            nx,
            openings: (0..classes)
                .map(|_| [Opening::new(nx, ny, nz, c.iterations), Opening::new(nx, ny, nz, c.iterations)])
                .collect(),
            pending: (0..classes).map(|_| VecDeque::new()).collect(),
            spare: vec![Vec::new(); classes],
            masks: Vec::new(),
            emitted: 0,
            peaks: vec![PeakFinder::default(); classes],
        }),
    })
}

/// The paper's attention (Eq. 1–4) of every class on `slab`, its z-slices in parallel: for each
/// voxel where some model's p is not 0 (elsewhere attention is 0), `put(out, class, y, x, att)`
/// with `out` the slice's entry of `outs` (one per slice) and `(x, y)` the voxel in the slice. Returns the per-class sums, added in slice order.
pub(super) fn paper_slab<O: Send>(
    slab: &CaseSlab,
    ent: &[f64; 256],
    outs: Vec<O>,
    put: impl Fn(&mut O, usize, usize, usize, f64) + Sync,
) -> Result<Vec<Sums>, String> {
    let (nx, ny) = (slab.layout.shape[0], slab.layout.shape[1]);
    let (models, classes) = (slab.layout.models.len(), slab.layout.classes.len());
    assert_eq!(outs.len(), slab.nz, "one output per slice");
    let parts: Vec<Result<Vec<Sums>, String>> = outs
        .into_par_iter()
        .enumerate()
        .map(|(z, mut out)| {
            let mut s = Scratch::new(models, classes, nx);
            let mut sums = vec![Sums::default(); classes];
            for y in 0..ny {
                row_stats(slab, z, y, &mut s, ent, |c, x, v| {
                    let ovl = v.model_overlap as u8 as f64;
                    let att = v.std + v.unc + ovl;
                    let t = &mut sums[c];
                    t.attention += att;
                    t.inconsistency += v.std;
                    t.uncertainty += v.unc;
                    t.overlap += v.model_overlap as u64;
                    t.consensus += v.consensus as u64;
                    put(&mut out, c, y, x, att);
                })?;
            }
            Ok(sums)
        })
        .collect();
    let mut total = vec![Sums::default(); classes];
    for p in parts {
        add(&mut total, &p?);
    }
    Ok(total)
}

/// What the paper stage fills for one z-slice of the slab, per class.
struct SlicePieces<'a> {
    /// That slice's piece of each class map (none when no map is written).
    maps: Vec<&'a mut [f32]>,
    /// Its region above a threshold (when shared).
    above: Vec<Option<&'a mut BitSlice>>,
    /// Whether a voxel of the piece was set this slab.
    touched: &'a mut [bool],
    /// The span of the piece that may hold non-zero values (see `PaperStage::dirty`).
    dirty: &'a mut [std::ops::Range<usize>],
    /// Attention summed per row, `c · ny + y` (for the class's [`Peak`]).
    rows: &'a mut [f64],
}

struct PaperStage {
    writers: Vec<ImageWriter>,
    sums: Vec<Sums>,
    ent: Box<[f64; 256]>,
    /// Attention of the current slab, per class.
    maps: Vec<Vec<f32>>,
    /// Per slice of a slab and class (`z · classes + c`): the span of that piece of the map
    /// outside of which it holds only zeros. A piece is cleared over this span alone before
    /// it is set again or written as zeros: the organ's rows, not the whole slice.
    dirty: Vec<std::ops::Range<usize>>,
    /// When evaluate runs too: its threshold, the classes it evaluates (annotated) and buffers
    /// for the region above the threshold, shared per slab.
    above: Option<(f64, Vec<bool>, Pool<ClassBits>)>,
    /// The region of the slab just processed, until the engine takes it.
    shared: Option<Pooled<ClassBits>>,
    /// Per class: where its attention is largest so far.
    peaks: Vec<PeakFinder>,
}

impl SlabStage for PaperStage {
    fn wants_rows(&self) -> bool {
        true
    }
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let (nxy, n, classes) = (slab.nxy(), slab.len(), slab.layout.classes.len());
        let write = !self.writers.is_empty();
        for m in &mut self.maps {
            // Voxels row_stats skips have attention 0: a slice's piece of a map is zeroed when
            // the first voxel of it is set, and the pieces never set after the slab — a map no
            // voxel of which was set is not made at all (its chunk is erased).
            m.resize(if write { n } else { 0 }, 0.0);
        }
        // A piece grown by the resize is zeros; one cut off is gone: either way a span too
        // wide only clears zeros again.
        self.dirty.resize(slab.nz * classes, 0..0);
        let mut touched = vec![false; slab.nz * classes];
        let [nx, ny, _] = slab.layout.shape;
        let mut above = self.above.as_ref().map(|(_, wanted, pool)| {
            let mut masks = pool.take();
            masks.resize(classes, Vec::new());
            for (m, &w) in masks.iter_mut().zip(wanted) {
                m.resize_with(if w { slab.nz } else { 0 }, || BitSlice::new(nx, ny));
                m.iter_mut().for_each(BitSlice::clear);
            }
            masks
        });
        let threshold = self.above.as_ref().map_or(f64::INFINITY, |a| a.0);
        let mut rows = vec![0.0; slab.nz * classes * ny];
        // Per z-slice: that slice's piece of every class map, and its region above.
        let mut per_slice: Vec<SlicePieces> = touched
            .chunks_mut(classes)
            .zip(self.dirty.chunks_mut(classes))
            .zip(rows.chunks_mut(classes * ny))
            .map(|((touched, dirty), rows)| SlicePieces {
                maps: Vec::with_capacity(classes),
                above: Vec::with_capacity(classes),
                touched,
                dirty,
                rows,
            })
            .collect();
        if write {
            for m in &mut self.maps {
                for (z, piece) in m.chunks_mut(nxy).enumerate() {
                    per_slice[z].maps.push(piece);
                }
            }
        }
        if let Some(masks) = &mut above {
            for m in masks.iter_mut() {
                if m.is_empty() {
                    per_slice.iter_mut().for_each(|o| o.above.push(None));
                } else {
                    for (z, bits) in m.iter_mut().enumerate() {
                        per_slice[z].above.push(Some(bits));
                    }
                }
            }
        }
        let sums = paper_slab(slab, &self.ent, per_slice, |o, c, y, x, att| {
            let SlicePieces { maps, above, touched, dirty, rows } = o;
            rows[c * ny + y] += att;
            let i = y * nx + x;
            if write {
                // Voxels come in index order: the span grows at its end.
                if !touched[c] {
                    maps[c][dirty[c].clone()].fill(0.0);
                    touched[c] = true;
                    dirty[c] = i..i + 1;
                } else {
                    dirty[c].end = i + 1;
                }
                maps[c][i] = att as f32;
            }
            if att > threshold
                && let Some(Some(bits)) = above.get_mut(c)
            {
                bits.set(x, y);
            }
        })?;
        add(&mut self.sums, &sums);
        for (z, slice) in rows.chunks(classes * ny).enumerate() {
            for (p, r) in self.peaks.iter_mut().zip(slice.chunks(ny)) {
                p.add_slice(slab.z0 + z, r);
            }
        }
        self.shared = above;
        let (touched, dirty) = (&touched, &self.dirty);
        let cleared: Vec<Vec<usize>> = self
            .writers
            .par_iter()
            .zip(&mut self.maps)
            .enumerate()
            .map(|(c, (w, m))| {
                let set: Vec<bool> = (0..slab.nz).map(|z| touched[z * classes + c]).collect();
                if !set.contains(&true) {
                    // Nothing set: the stale pieces stay, with their spans, until set again.
                    return w.write_fill(slab.z0).map(|_| Vec::new());
                }
                let stale: Vec<usize> = (0..slab.nz).filter(|&z| !set[z]).collect();
                for &z in &stale {
                    let span = &dirty[z * classes + c];
                    m[z * nxy + span.start..z * nxy + span.end].fill(0.0);
                }
                w.write_slab(slab.z0, m).map(|_| stale)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for (c, stale) in cleared.iter().enumerate() {
            stale.iter().for_each(|&z| self.dirty[z * classes + c] = 0..0);
        }
        Ok(())
    }

    fn share(&mut self) -> Option<Shared> {
        self.shared.take().map(|m| Shared::AttentionAbove(std::sync::Arc::new(m)))
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        record(&self.sums, &self.peaks, result, |s| s.attention);
        Ok(())
    }

    fn save(&self) -> Vec<u8> {
        encode_state(&(&self.sums, &self.peaks))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (sums, peaks): (Vec<Sums>, Vec<PeakFinder>) = decode_state(state)?;
        if sums.len() != self.sums.len() || peaks.len() != self.sums.len() {
            return Err(format!("a slab checkpoint has {} classes, the pipeline {}", sums.len(), self.sums.len()));
        }
        (self.sums, self.peaks) = (sums, peaks);
        Ok(())
    }
}

/// Where a class's attention is largest: the axial slice (z index, as in the Zarr arrays) of
/// the largest attention sum, and the coronal one (y index) — the first of equals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peak {
    pub axial: u32,
    pub coronal: u32,
}

/// A class's attention summed per axial slice (the best so far) and per coronal row (over every
/// slice so far): enough to name its [`Peak`] at the end, in O(ny) memory.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct PeakFinder {
    best: Option<(f64, u32)>,
    rows: Vec<f64>,
}

impl PeakFinder {
    /// Adds slice `z`, given its attention summed per row `y`.
    fn add_slice(&mut self, z: usize, rows: &[f64]) {
        self.rows.resize(rows.len(), 0.0);
        let mut total = 0.0;
        for (t, &r) in self.rows.iter_mut().zip(rows) {
            *t += r;
            total += r;
        }
        if total > 0.0 && self.best.is_none_or(|(b, _)| total > b) {
            self.best = Some((total, z as u32));
        }
    }

    /// The peak, if any voxel had attention.
    fn peak(&self) -> Option<Peak> {
        let (_, axial) = self.best?;
        let (coronal, _) = self
            .rows
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) });
        Some(Peak { axial, coronal: coronal as u32 })
    }
}

fn record(sums: &[Sums], peaks: &[PeakFinder], result: &mut CaseResult, attention: impl Fn(&Sums) -> f64) {
    let mut size = 0.0;
    for (row, p) in result.classes.iter_mut().zip(peaks) {
        row.peak = p.peak();
    }
    for (row, s) in result.classes.iter_mut().zip(sums) {
        let a = attention(s);
        size += a;
        row.attention_sum = Some(a);
        row.inconsistency_sum = Some(s.inconsistency);
        row.uncertainty_sum = Some(s.uncertainty);
        row.overlap_voxels = Some(s.overlap);
        row.consensus_voxels.get_or_insert(s.consensus);
    }
    result.attention_size = Some(size);
}

struct ReleasedStage {
    config: AttentionConfig,
    writers: Vec<ImageWriter>,
    sums: Vec<Sums>,
    ent: Box<[f64; 256]>,
    depth: usize,
    /// Voxels per row.
    nx: usize,
    /// Per class: the openings of the std mask and of the entropy mask.
    openings: Vec<[Opening; 2]>,
    /// Per class: output chunks not yet complete, by chunk index (u8 0/1).
    pending: Vec<VecDeque<(usize, Vec<u8>)>>,
    /// Per class: chunk buffers already written, kept for the next chunks (memory must not
    /// depend on the allocator's reuse of freed blocks).
    spare: Vec<Vec<Vec<u8>>>,
    /// Per slice of the current slab, per class: std, entropy and consensus-overlap masks;
    /// kept from slab to slab.
    masks: Vec<Vec<[BitSlice; 3]>>,
    /// Slices every opening has emitted so far.
    emitted: usize,
    /// Per class: where its attention is largest so far (of the chunks written).
    peaks: Vec<PeakFinder>,
}

/// The chunk buffer holding slice `z`, created on first use (zeroed, from `spare` if it
/// has one).
fn chunk_for<'a>(
    pending: &'a mut VecDeque<(usize, Vec<u8>)>,
    spare: &mut Vec<Vec<u8>>,
    z: usize,
    depth: usize,
    nxy: usize,
    nz: usize,
) -> &'a mut [u8] {
    let ci = z / depth;
    if !pending.iter().any(|(i, _)| *i == ci) {
        let len = depth.min(nz - ci * depth) * nxy;
        let at = pending.iter().position(|(i, _)| *i > ci).unwrap_or(pending.len());
        let mut buf = spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        pending.insert(at, (ci, buf));
    }
    let (_, buf) = pending.iter_mut().find(|(i, _)| *i == ci).unwrap();
    let off = (z - ci * depth) * nxy;
    &mut buf[off..off + nxy]
}

fn or_bits(out: &mut [u8], bits: &BitSlice) {
    for y in 0..bits.ny {
        for w in 0..bits.words {
            let mut word = bits.bits[y * bits.words + w];
            while word != 0 {
                let b = word.trailing_zeros() as usize;
                out[y * bits.nx + w * 64 + b] = 1;
                word &= word - 1;
            }
        }
    }
}

impl SlabStage for ReleasedStage {
    fn wants_rows(&self) -> bool {
        true
    }
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let [nx, ny, nz] = slab.layout.shape;
        let (models, classes) = (slab.layout.models.len(), slab.layout.classes.len());
        let (ts, te) = (self.config.std_threshold, self.config.entropy_threshold);
        let ent = &*self.ent;
        // Per slice, per class: std mask, entropy mask, consensus-overlap mask.
        while self.masks.len() < slab.nz {
            self.masks.push((0..classes).map(|_| std::array::from_fn(|_| BitSlice::new(nx, ny))).collect());
        }
        let slices = &mut self.masks[..slab.nz];
        let parts: Vec<Result<Vec<Sums>, String>> = slices
            .par_iter_mut()
            .enumerate()
            .map(|(z, masks)| {
                masks.iter_mut().flatten().for_each(BitSlice::clear);
                let mut s = Scratch::new(models, classes, nx);
                let mut sums = vec![Sums::default(); classes];
                for y in 0..ny {
                    row_stats(slab, z, y, &mut s, ent, |c, x, v| {
                        let t = &mut sums[c];
                        t.inconsistency += v.std;
                        t.uncertainty += v.unc;
                        t.overlap += v.consensus_overlap as u64;
                        t.consensus += v.consensus as u64;
                        if v.std > ts {
                            masks[c][0].set(x, y);
                        }
                        if v.unc > te {
                            masks[c][1].set(x, y);
                        }
                        if v.consensus_overlap {
                            masks[c][2].set(x, y);
                        }
                    })?;
                }
                Ok(sums)
            })
            .collect();
        for p in parts {
            add(&mut self.sums, &p?);
        }
        let (depth, nxy, z0) = (self.depth, nx * ny, slab.z0);
        let slices = &self.masks[..slab.nz];
        // Classes are independent: stream each one's masks through its openings.
        let per_class = self.openings.par_iter_mut().zip(self.pending.par_iter_mut()).zip(self.spare.par_iter_mut());
        per_class.enumerate().for_each(|(c, ((ops, pending), spare))| {
            for (k, masks) in slices.iter().enumerate() {
                let z = z0 + k;
                or_bits(chunk_for(pending, spare, z, depth, nxy, nz), &masks[c][2]);
                for (o, mask) in ops.iter_mut().zip(&masks[c][..2]) {
                    o.push(mask, &mut |m, opened| or_bits(chunk_for(pending, spare, m, depth, nxy, nz), opened));
                }
            }
        });
        self.emitted = (z0 + slab.nz).saturating_sub(2 * self.config.iterations);
        if z0 + slab.nz == nz {
            self.emitted = nz;
        }
        self.flush(nz)
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        debug_assert!(self.pending.iter().all(|p| p.is_empty()), "chunks left unwritten");
        record(&self.sums, &self.peaks, result, |s| s.attention);
        Ok(())
    }

    /// The sums, the openings' kept slices, the chunks not yet written and the peaks.
    fn save(&self) -> Vec<u8> {
        encode_state(&(&self.sums, &self.openings, &self.pending, self.emitted, &self.peaks))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        type State = (Vec<Sums>, Vec<[Opening; 2]>, Vec<VecDeque<(usize, Vec<u8>)>>, usize, Vec<PeakFinder>);
        let (sums, openings, pending, emitted, peaks): State = decode_state(state)?;
        let classes = self.sums.len();
        if sums.len() != classes || openings.len() != classes || pending.len() != classes || peaks.len() != classes {
            return Err(format!("a slab checkpoint has {} classes, the pipeline {classes}", sums.len()));
        }
        (self.sums, self.openings, self.pending, self.emitted, self.peaks) = (sums, openings, pending, emitted, peaks);
        Ok(())
    }
}

impl ReleasedStage {
    /// Writes every chunk all of whose slices are final; counts its voxels.
    fn flush(&mut self, nz: usize) -> Result<(), String> {
        let (depth, emitted) = (self.depth, self.emitted);
        let (writers, nx) = (&self.writers, self.nx);
        let counts: Vec<Result<u64, String>> = self
            .pending
            .par_iter_mut()
            .zip(self.spare.par_iter_mut())
            .zip(self.peaks.par_iter_mut())
            .enumerate()
            .map(|(c, ((pending, spare), peaks))| {
                let mut count = 0;
                while let Some((ci, _)) = pending.front() {
                    let end = ((ci + 1) * depth).min(nz);
                    if end > emitted {
                        break;
                    }
                    let (ci, buf) = pending.pop_front().unwrap();
                    let nxy = buf.len() / (end - ci * depth);
                    for (k, slice) in buf.chunks(nxy).enumerate() {
                        let rows: Vec<f64> = slice.chunks(nx).map(|r| super::sum_bytes(r) as f64).collect();
                        count += rows.iter().sum::<f64>() as u64;
                        peaks.add_slice(ci * depth + k, &rows);
                    }
                    if let Some(w) = writers.get(c) {
                        w.write_slab(ci * depth, &buf).map_err(|e| e.to_string())?;
                    }
                    spare.push(buf);
                }
                Ok(count)
            })
            .collect();
        for (s, n) in self.sums.iter_mut().zip(counts) {
            s.attention += n? as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_table_matches_the_definition() {
        let t = u8_entropy();
        assert_eq!(t[0], 0.0);
        assert_eq!(t[255], 0.0);
        let p = 128.0 / 255.0;
        assert_eq!(t[128], -p * f64::ln(p));
    }
}
