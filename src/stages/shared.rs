//! What stages compute once per slab and share:
//! - the consensus masks (mean p > 0.5), for the classes two or more stages take
//!   (`assemble` its pseudo-labelled classes, `evaluate` its annotated ones, custom stages
//!   every class): the engine's `consensus` node computes them once per slab. A class only one
//!   stage takes is computed by that stage, slice by slice, in less memory; `attention` and
//!   `metrics` derive it from the per-model sums they compute anyway;
//! - the paper attention's region above `evaluate`'s threshold, bit-packed per slice: made by
//!   a paper-mode `attention` stage while it computes its maps, so evaluate does not compute
//!   the attention a second time.
//!
//! Invariants: a shared mask holds exactly what its consumer would compute alone (the same
//! function, [`super::prob::consensus`], or the same f64 attention compared with the same
//! threshold), so outputs do not depend on what is shared; an empty mask means "not computed
//! for this class" and the consumer computes its own; buffers come from a [`Pool`] and go back
//! to it when the last consumer drops them, so a case allocates them once.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::attention::Mode;
use super::{CaseSlab, ProbDecoder, StageConfig, all_zero};
use crate::nifti::Voxels;

/// Shared values alive at once per producer: one per slab set in flight, and one being made.
pub const SHARED_IN_FLIGHT: usize = 3;

/// One 0/1 mask per class over a slab; an empty one was not computed.
pub type ClassMasks = Vec<Vec<u8>>;

/// One bit-packed mask per class and z-slice of a slab; a class without slices was not
/// computed.
pub type ClassBits = Vec<Vec<super::morphology::BitSlice>>;

/// Buffers handed out and taken back: a value dropped by its last user returns to the pool
/// (up to `keep` of them), so a case's buffers are allocated once and their pages stay mapped.
pub struct Pool<T> {
    free: Arc<Mutex<Vec<T>>>,
    keep: usize,
}

impl<T: Default> Pool<T> {
    pub fn new(keep: usize) -> Pool<T> {
        Pool { free: Arc::new(Mutex::new(Vec::new())), keep }
    }

    /// A free value, or a new (default) one.
    pub fn take(&self) -> Pooled<T> {
        let value = self.free.lock().unwrap().pop().unwrap_or_default();
        Pooled { value: Some(value), home: self.free.clone(), keep: self.keep }
    }
}

/// A value of a [`Pool`]; it goes back when dropped.
pub struct Pooled<T> {
    value: Option<T>,
    home: Arc<Mutex<Vec<T>>>,
    keep: usize,
}

impl<T> std::ops::Deref for Pooled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("taken until dropped")
    }
}

impl<T> std::ops::DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("taken until dropped")
    }
}

impl<T> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            let mut free = self.home.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < self.keep {
                free.push(v);
            }
        }
    }
}

/// What a stage gives the stages after it for the slab it just processed.
pub enum Shared {
    /// Per class and slice: paper attention > the threshold asked for
    /// (`CaseContext::paper_above`).
    AttentionAbove(Arc<Pooled<ClassBits>>),
}

/// The consensus masks of the classes `wanted` over `slab`, into `masks` (one per class; the
/// others left empty), classes in parallel. Rows where every model's uint8 prediction is 0 are
/// set to 0 without summing (most rows of most classes).
pub fn consensus_masks(slab: &CaseSlab, wanted: &[bool], masks: &mut ClassMasks) -> Result<(), String> {
    let (n, nx) = (slab.len(), slab.layout.shape[0]);
    masks.resize(wanted.len(), Vec::new());
    masks.par_iter_mut().zip(wanted).enumerate().try_for_each(|(c, (m, &want))| {
        if !want {
            m.clear();
            return Ok(());
        }
        if m.len() != n {
            m.clear();
            m.resize(n, 0);
        }
        let u8_rows: Option<Vec<&[u8]>> = (0..slab.layout.models.len())
            .map(|k| match (&slab.layout.prob[k][c], slab.prediction(k, c)) {
                (ProbDecoder::U8Table, Voxels::U8(d)) => Some(&d[..]),
                _ => None,
            })
            .collect();
        let Some(volumes) = u8_rows else {
            return super::prob::consensus(slab, c, 0..n, m);
        };
        let mut rows: Vec<&[u8]> = Vec::with_capacity(volumes.len());
        for (r, out) in m.chunks_mut(nx).enumerate() {
            let at = r * nx..r * nx + out.len();
            rows.clear();
            rows.extend(volumes.iter().map(|d| &d[at.clone()]));
            if rows.iter().all(|row| all_zero(row)) {
                out.fill(0);
            } else {
                super::prob::consensus_u8(&rows, out);
            }
        }
        Ok(())
    })
}

/// Whether a stage of this configuration may take consensus masks from the slab.
pub fn takes_consensus(s: &StageConfig) -> bool {
    match s {
        StageConfig::Assemble(_) | StageConfig::Evaluate(_) => true,
        StageConfig::Custom(c) => c.factory.wants_consensus(),
        _ => false,
    }
}

/// Whether the engine may run a consensus node for `stages`: two or more may take the same
/// class's consensus (which classes, each case's labels decide). `assemble` takes the classes
/// without a label, `evaluate` those with one, so the two never take the same class.
pub fn consensus_node(stages: &[&StageConfig]) -> bool {
    let builtin = stages.iter().any(|s| matches!(s, StageConfig::Assemble(_) | StageConfig::Evaluate(_)));
    let custom = stages.iter().filter(|s| matches!(s, StageConfig::Custom(_)) && takes_consensus(s)).count();
    builtin as usize + custom >= 2
}

/// The threshold at which a paper attention stage among `stages` shares its region with
/// `evaluate`, when both are there.
pub fn paper_above(stages: &[&StageConfig]) -> Option<f64> {
    let paper = stages.iter().any(|s| matches!(s, StageConfig::Attention(a) if a.mode == Mode::Paper));
    let threshold = stages.iter().find_map(|s| match s {
        StageConfig::Evaluate(e) => Some(e.threshold),
        _ => None,
    });
    threshold.filter(|_| paper)
}

/// Bytes of what `stages` share per slab, at most ([`SHARED_IN_FLIGHT`] of each): the
/// consensus node's masks, and the attention region. `shape`: the case's voxels along x, y, z.
pub fn memory(stages: &[&StageConfig], shape: [usize; 3], depth: usize, classes: usize) -> u64 {
    let [nx, ny, nz] = shape;
    let depth = depth.min(nz) as u64;
    let mut bytes = 0;
    if consensus_node(stages) {
        bytes += (nx * ny) as u64 * depth * classes as u64;
    }
    if paper_above(stages).is_some() {
        bytes += (nx.div_ceil(64) * 8 * ny) as u64 * depth * classes as u64;
    }
    bytes * SHARED_IN_FLIGHT as u64
}
