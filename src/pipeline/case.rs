//! One case as a stream of slabs: its files opened and checked, its memory reserved, its Zarr
//! group and writers made, its stages started (or restored from a slab checkpoint); then its
//! slabs stream through the graph of [`super::flow`], and the stages finish.
//!
//! Invariants:
//! - at most [`SLABS_IN_FLIGHT`] slab sets exist at once (one being read, one in the nodes);
//!   buffers are recycled, so a case allocates them once;
//! - [`case_memory`] is the bound the budget reserves, computed from the headers alone;
//! - nothing is written before every file of the case has opened and matched the CT's grid;
//! - a slab checkpoint at slice z is saved only once every input write and stage output before
//!   z has returned (and the journal flushes them to disk first); a resumed case skips to z and
//!   ends byte-identical to one never stopped.

use std::path::Path;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::json;

use crate::checkpoint::{InputStamp, Journal, SlabCheckpoint};
use crate::files::durable::CaseSync;
use crate::input::{Case, InputKind, Role, VolumeRef};
use crate::nifti::{DataType, Header, VolumeReader, Voxels};
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::config::{Pipeline, human_bytes};
use crate::pipeline::flow::{self, SLABS_IN_FLIGHT};
use crate::pipeline::profile::NodeTimes;
use crate::pipeline::rerun::Partial;
use crate::stages::{CaseContext, CaseResult, Layout, ProbDecoder, StageConfig};
use crate::with_voxels;
use crate::zarr::{CaseStore, ImageWriter};

/// What a finished case reports.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub slabs: usize,
    /// Bytes the case reserved from the memory budget ([`case_memory`]).
    pub reserved: u64,
    /// Decoded voxel bytes streamed.
    pub bytes: u64,
    /// The input files as they were when the case began, with the content digest of each
    /// that was read through.
    pub inputs: Vec<InputStamp>,
    /// Where the case's time went, node by node ([`crate::pipeline::profile`]).
    pub profile: Vec<NodeTimes>,
}

/// Bytes of one volume's slab as decoded.
fn slab_bytes(h: &Header, depth: usize) -> u64 {
    let [nx, ny, nz] = h.shape();
    (nx * ny) as u64 * depth.min(nz) as u64 * h.datatype.size() as u64
}

/// What one case holds while it streams, part by part ([`case_memory`] is their sum).
#[derive(Debug, Clone)]
pub struct CaseMemory {
    /// One slab of every volume, as decoded: what the reader hands the stages.
    pub slab_set: u64,
    /// The slab sets alive at once ([`SLABS_IN_FLIGHT`]).
    pub slab_sets: u64,
    /// The gzip readers' buffers (and a streaming GET's, for a corpus in a bucket).
    pub readers: u64,
    /// Per-thread encoding scratch of the input writes (a converted chunk and its compressed
    /// copy).
    pub convert: u64,
    /// What each stage holds, in pipeline order.
    pub stages: Vec<u64>,
    /// What stages share per slab ([`crate::stages::shared`]): the consensus node's masks and
    /// the attention region.
    pub shared: u64,
    /// On a bucket output: the case's chunk PUTs in flight and an export's multipart upload
    /// ([`crate::files::mirror::UPLOAD_BYTES`]).
    pub uploads: u64,
    /// All of it, and a tenth more for the allocator.
    pub total: u64,
}

/// A gzip reader's buffers (flate2's inflate state and the 256 KiB read buffer).
pub const READER_BYTES: u64 = 320 << 10;

/// The memory one case needs while streaming, from its headers, part by part.
pub fn case_memory_parts(headers: &[Header], depth: usize, p: &Pipeline) -> CaseMemory {
    let slab_set: u64 = headers.iter().map(|h| slab_bytes(h, depth)).sum();
    let [nx, ny, nz] = headers[0].shape();
    let elems = (nx * ny * depth.min(nz)) as u64;
    let widest_input = headers.iter().map(|h| h.datatype.size().max(ct_storage(h).size())).max().unwrap_or(1);
    let widest = widest_input.max(if p.stages.is_empty() { 1 } else { 4 }) as u64;
    let convert = 2 * elems * widest * rayon::current_num_threads() as u64;
    let stages: Vec<u64> = p
        .stages
        .iter()
        .map(|s| s.memory(headers[0].shape(), headers[0].spacing(), depth, p.input.models.len(), p.input.classes.len()))
        .collect();
    let per_reader = if crate::files::objects::is_object(&p.input.root) {
        READER_BYTES + crate::files::objects::READER_BYTES
    } else {
        READER_BYTES
    };
    let readers = headers.len() as u64 * per_reader;
    let all: Vec<&crate::stages::StageConfig> = p.stages.iter().collect();
    let shared = crate::stages::shared::memory(&all, headers[0].shape(), depth, p.input.classes.len());
    let uploads =
        if crate::files::mirror::of(&p.output.dir).is_some() { crate::files::mirror::UPLOAD_BYTES } else { 0 };
    let heap = SLABS_IN_FLIGHT as u64 * slab_set + convert + readers + stages.iter().sum::<u64>() + shared + uploads;
    // What malloc keeps of freed blocks on top: full-size cases of the contract pipeline
    // peaked 5–8 % above the sum (massif and VmHWM, benches/README.md).
    CaseMemory {
        slab_set,
        slab_sets: SLABS_IN_FLIGHT as u64 * slab_set,
        readers,
        convert,
        stages,
        shared,
        uploads,
        total: heap + heap / 10,
    }
}

/// The memory one case needs while streaming, from its headers: the slab sets in flight, the
/// gzip readers' buffers, per-thread encoding scratch (a converted chunk and its compressed
/// copy), what the stages hold and share, and a tenth more for the allocator. The budget reserves this
/// before anything is allocated; measured peaks stay below it (benches/README.md).
pub fn case_memory(headers: &[Header], depth: usize, p: &Pipeline) -> u64 {
    case_memory_parts(headers, depth, p).total
}

/// How CT values are stored: the smallest of int16, float32 and float64 that holds every
/// scaled value of the file's type exactly, so that `ct/0` equals nibabel's `get_fdata()`
/// voxel for voxel. Decided from the header alone (no extra pass over the data): int16 when
/// the scaling is integral and the type's scaled range fits; float32 for unscaled float32 and
/// for integral values within ±2^24; float64 otherwise (float64 files, fractional slopes).
pub fn ct_storage(h: &Header) -> DataType {
    let scaling = h.scaling();
    if !h.datatype.is_integer() {
        return if h.datatype == DataType::F32 && scaling.is_none() { DataType::F32 } else { DataType::F64 };
    }
    let (lo, hi) = h.datatype.range();
    let (s, i) = scaling.unwrap_or((1.0, 0.0));
    if s.fract() != 0.0 || i.fract() != 0.0 {
        return DataType::F64;
    }
    let (a, b) = (lo * s + i, hi * s + i);
    let within = |v: f64, lim: f64| v.abs() <= lim;
    if within(a, 32768.0) && within(b, 32768.0) && a.min(b) >= i16::MIN as f64 && a.max(b) <= i16::MAX as f64 {
        DataType::I16
    } else if within(a, 16_777_216.0) && within(b, 16_777_216.0) {
        DataType::F32
    } else {
        DataType::F64
    }
}

/// The headers of every file of `case`, CT first (for planning: an object's header is read
/// with one small range request, not a stream of the file).
pub fn case_headers(case: &Case, p: &Pipeline) -> Result<Vec<Header>, String> {
    case.volumes(&p.input)?.iter().map(|v| VolumeReader::read_header(&v.path).map_err(|e| e.to_string())).collect()
}

/// Opens every file of `case` and checks it is on the CT's grid; errors name the file.
pub fn open_case(case: &Case, p: &Pipeline) -> Result<(Vec<VolumeRef>, Vec<VolumeReader>), String> {
    let vols = case.volumes(&p.input)?;
    let mut readers = Vec::with_capacity(vols.len());
    for v in &vols {
        let r = VolumeReader::open(&v.path).map_err(|e| e.to_string())?;
        if let Some(ct) = readers.first().map(|r: &VolumeReader| r.header())
            && !ct.same_grid(r.header())
        {
            return Err(format!(
                "{}: grid {:?} with affine {:?} differs from the CT's {:?} with affine {:?} ({})",
                v.path.display(),
                r.header().shape(),
                r.header().affine(),
                ct.shape(),
                ct.affine(),
                case.ct.display()
            ));
        }
        readers.push(r);
    }
    Ok((vols, readers))
}

/// One volume's destination and how its values are stored there.
struct Sink {
    writer: ImageWriter,
    /// `Some` for the CT: scale to HU and convert to the stored type.
    ct_scaling: Option<Option<(f64, f64)>>,
}

/// Where each volume sits in the slab set, and how prediction values become probabilities.
fn layout(vols: &[VolumeRef], headers: &[Header], p: &Pipeline) -> Layout {
    let (models, classes) = (p.input.models.len(), p.input.classes.len());
    let mut l = Layout {
        shape: headers[0].shape(),
        spacing: headers[0].spacing(),
        models: p.input.models.clone(),
        classes: p.input.classes.clone(),
        ct: 0,
        ct_scaling: headers[0].scaling(),
        predictions: vec![vec![usize::MAX; classes]; models],
        prob: vec![vec![ProbDecoder::U8Table; classes]; models],
        labels: vec![None; classes],
        revised: vec![None; classes],
        paths: vols.iter().map(|v| v.path.clone()).collect(),
    };
    for (i, (v, h)) in vols.iter().zip(headers).enumerate() {
        match v.role {
            Role::Ct => l.ct = i,
            Role::Prediction { model, class } => {
                l.predictions[model][class] = i;
                l.prob[model][class] = ProbDecoder::for_header(h, p.input.clamp_probabilities);
            }
            Role::Label { class } => l.labels[class] = Some(i),
            Role::Revised { class } => l.revised[class] = Some(i),
        }
    }
    l
}

/// What the engine needs besides the case and the pipeline.
pub struct CaseEnv<'a> {
    pub out_dir: &'a Path,
    pub budget: &'a MemoryBudget,
    pub journal: &'a Journal,
    /// Set on SIGINT/SIGTERM: save the case at its next slab boundary and stop.
    pub stop: Option<&'a AtomicBool>,
}

/// How a case's streaming ended (errors aside).
#[derive(Debug)]
pub enum CaseEnd {
    Done(CaseReport, CaseResult),
    /// Stopped on request at a slab boundary, with a slab checkpoint at slice `z`.
    Paused {
        z: usize,
        nz: usize,
    },
    /// Stopped on request without a slab checkpoint (a custom stage that keeps none): what it wrote
    /// is to be removed, and the case redone from its first slice.
    Stopped,
}

/// The slab checkpoint `case` can resume from, if any is valid: same input files, same grid,
/// same part of the case (`scope`), its group still there. A stale one is removed (before the
/// group is replaced).
#[allow(clippy::too_many_arguments)]
fn resumable(
    case: &Case,
    p: &Pipeline,
    env: &CaseEnv,
    stamps: &[InputStamp],
    scope: &[String],
    nz: usize,
    depth: usize,
    case_dir: &Path,
) -> Result<Option<SlabCheckpoint>, String> {
    let cp = env.journal.load_slab(&case.id);
    // On a bucket output, a release export being written lives in the scratch folder of the
    // process that wrote it: a checkpoint of another process cannot go on with it.
    let export = env.out_dir.join("release").join(format!("{}.partial", case.id));
    let exporting = |scope: &[String]| {
        p.stages
            .iter()
            .any(|s| matches!(s, crate::stages::StageConfig::Assemble(a) if a.export_nifti) && scope.contains(&s.id()))
            && crate::files::mirror::of(env.out_dir).is_some()
    };
    // A HEAD on a bucket output: an error fails the case (it is not taken for "no group").
    let group = match &cp {
        Some(_) => crate::files::mirror::exists(&case_dir.join("zarr.json"))
            .map_err(|e| format!("{}: {e}", crate::files::mirror::display(case_dir)))?,
        None => false,
    };
    let valid = cp.filter(|cp| {
        if exporting(scope) && !export.is_dir() {
            tracing::info!(case = %case.id, "The release export of this case was in the scratch folder of the run that stopped; it starts over.");
            return false;
        }
        cp.inputs == stamps
            && cp.scope == scope
            && cp.nz == nz
            && cp.z < nz
            && cp.z % depth == 0
            && group
    });
    if valid.is_none() {
        env.journal.clear_slab(&case.id).map_err(|e| e.to_string())?;
    }
    Ok(valid)
}

/// Streams `case` into `<out>/cases/<id>.zarr` through the pipeline's stages, from its slab
/// checkpoint if it has one, writing new ones every `[runtime] checkpoint_secs`.
/// `sync` makes what the case wrote durable before a slab checkpoint names it. `part`: only
/// that part of a finished case is redone ([`crate::pipeline::rerun`]) — only its files are
/// converted, its stages run, and the volumes they read are read; its old outputs are removed
/// first, and nothing else in the group is touched.
pub fn process_case(
    case: &Case,
    p: &Pipeline,
    env: &CaseEnv,
    sync: &CaseSync,
    part: Option<&Partial>,
) -> Result<CaseEnd, String> {
    let (vols, readers) = open_case(case, p)?;
    let runs = |i: usize| part.is_none_or(|w| w.stages.contains(&i));
    let convert: Vec<bool> = vols.iter().map(|v| part.is_none_or(|w| w.convert.contains(&v.group))).collect();
    let kinds_read: Vec<InputKind> =
        (0..p.stages.len()).filter(|&i| runs(i)).flat_map(|i| p.stages[i].kind().reads.iter().copied()).collect();
    let read: Vec<bool> = vols.iter().zip(&convert).map(|(v, &c)| c || kinds_read.contains(&v.role.kind())).collect();
    let scope = part.map_or_else(|| crate::pipeline::rerun::whole_scope(p), |w| w.scope(p));
    let depth = p.runtime.slab_depth;
    let headers: Vec<Header> = readers.iter().map(|r| r.header().clone()).collect();
    let need = case_memory(&headers, depth, p);
    let _reservation = env.budget.reserve(need).map_err(|avail| {
        format!(
            "needs {} to stream slabs of {} slices ({:?} voxels, {} volumes) but memory_limit leaves {}; raise [runtime] memory_limit or lower slab_depth",
            human_bytes(need),
            depth,
            headers[0].shape(),
            headers.len(),
            human_bytes(avail)
        )
    })?;
    // Rebound after the reservation, so that on an early error the readers' buffers are freed
    // before the reservation is returned.
    let readers = readers;
    let mut stamps = vols
        .iter()
        .map(|v| InputStamp::of(&v.path, &v.group).map_err(|e| format!("{}: {e}", v.path.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let nz = headers[0].shape()[2];
    let case_dir = env.out_dir.join("cases").join(format!("{}.zarr", case.id));
    let resume = resumable(case, p, env, &stamps, &scope, nz, depth.min(nz).max(1), &case_dir)?;

    let opts = p.output.zarr(depth);
    let mut attrs = serde_json::Map::new();
    attrs.insert(
        "slabflow".into(),
        json!({"case_id": case.id, "dataset": case.dataset, "version": env!("CARGO_PKG_VERSION")}),
    );
    let store = match part {
        None => CaseStore::create(&case_dir, attrs, resume.is_some(), sync.writes()),
        Some(w) => {
            if resume.is_none() {
                // What is redone goes first (a resumed part did this before its checkpoint).
                for path in w.to_remove(p, env.out_dir, &case.id) {
                    crate::files::durable::remove_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    prune_empty_groups(&path, &case_dir).map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            CaseStore::open(&case_dir, resume.is_none(), sync.writes())
        }
    }
    .map_err(|e| e.to_string())?;
    if !read.contains(&true) {
        // Only removals (a file gone that no stage reads, a stage dropped): done.
        return Ok(CaseEnd::Done(CaseReport { reserved: need, inputs: stamps, ..Default::default() }, empty(p)));
    }
    let mut sinks = Vec::with_capacity(vols.len());
    for ((v, h), &convert) in vols.iter().zip(&headers).zip(&convert) {
        if !convert {
            sinks.push(None);
            continue;
        }
        let sink = if v.role == Role::Ct {
            let stored = ct_storage(h);
            let header = h.with_stored(stored, true);
            Sink {
                writer: store.image(&v.group, &header, stored, -1024.0, &opts).map_err(|e| e.to_string())?,
                ct_scaling: Some(h.scaling()),
            }
        } else {
            // Predictions and masks keep the file's values and its scaling in the header, as
            // nifti-zarr does; zarr2nii then returns them unscaled.
            let header = h.with_stored(h.datatype, false);
            Sink {
                writer: store.image(&v.group, &header, h.datatype, 0.0, &opts.sparse()).map_err(|e| e.to_string())?,
                ct_scaling: None,
            }
        };
        sinks.push(Some(sink));
    }
    let layout = layout(&vols, &headers, p);
    // A paper attention stage and evaluate running together: attention shares its region
    // above evaluate's threshold, and evaluate does not compute the attention again.
    let running: Vec<&StageConfig> = (0..p.stages.len()).filter(|&i| runs(i)).map(|i| &p.stages[i]).collect();
    let paper_above = crate::stages::shared::paper_above(&running);
    let ctx = CaseContext {
        case_id: &case.id,
        out_dir: env.out_dir,
        store: &store,
        layout: &layout,
        ct_header: &headers[0],
        zarr: &opts,
        paper_above,
    };
    let mut stages = Vec::new();
    let mut names = Vec::new();
    for (i, config) in p.stages.iter().enumerate() {
        if runs(i)
            && let Some(stage) = config.start(&ctx)?
        {
            stages.push(stage);
            names.push(config.kind().kind);
        }
    }
    let at = |kind: &str| names.iter().position(|n| *n == kind);
    let above = paper_above.and(at("attention").zip(at("evaluate")));
    // Slab checkpoints hold every stage's state: custom stages whose kind saves none prevent
    // them.
    let checkpoints = p.stages.iter().all(|s| match s {
        StageConfig::Custom(c) => c.factory.checkpoints(),
        _ => true,
    });
    let depth = depth.min(nz).max(1);
    let mut start_z = 0;
    if let Some(cp) = &resume {
        let restored = if cp.stages.len() == stages.len() {
            stages.iter_mut().zip(&cp.stages).try_for_each(|(s, state)| s.restore(state))
        } else {
            Err(format!("it holds {} stage states, the pipeline runs {}", cp.stages.len(), stages.len()))
        };
        restored.map_err(|e| {
            format!("resuming from its slab checkpoint: {e}; the checkpoint is discarded, run again to redo the case")
        })?;
        start_z = cp.z;
        tracing::info!(case = %case.id, z = cp.z, nz, "Resuming the case at slice {} of {} (slab checkpoint).", cp.z, nz);
    }
    let streamed = {
        let resumed = resume.as_ref();
        let save = |mark: &flow::Mark, states: Vec<Vec<u8>>| -> Result<(), String> {
            let cp = SlabCheckpoint {
                format: SlabCheckpoint::FORMAT,
                run: String::new(), // set by the journal
                case_id: case.id.clone(),
                inputs: stamps.clone(),
                scope: scope.clone(),
                z: mark.z,
                nz,
                slabs: mark.slabs,
                bytes: mark.bytes,
                stages: states,
            };
            env.journal.save_slab(&cp, sync).map_err(|e| e.to_string())?;
            tracing::debug!(case = %case.id, z = mark.z, "Slab checkpoint saved.");
            Ok(())
        };
        let write = |z0: usize, volumes: &[Voxels]| -> Result<(), String> {
            sinks.par_iter().zip(volumes).try_for_each(|(sink, v)| match sink {
                Some(sink) => write_volume_slab(sink, z0, v),
                None => Ok(()),
            })
        };
        let converts = sinks.iter().any(|s| s.is_some());
        flow::stream(
            flow::Reading {
                case_id: &case.id,
                readers,
                read: &read,
                start_z,
                nz,
                depth,
                slabs: resumed.map_or(0, |cp| cp.slabs),
                bytes: resumed.map_or(0, |cp| cp.bytes),
            },
            &layout,
            &mut stages,
            &names,
            above,
            converts.then_some(&write as &(dyn Fn(usize, &[Voxels]) -> Result<(), String> + Sync)),
            flow::Checkpoints {
                enabled: checkpoints,
                every: Duration::from_secs_f64(p.runtime.checkpoint_secs),
                stop: env.stop,
            },
            &save,
        )?
    };
    for (s, d) in stamps.iter_mut().zip(streamed.digests) {
        s.digest = d;
    }
    let (slabs, bytes) = (streamed.slabs, streamed.bytes);
    let mut profile = streamed.profile;
    match streamed.end {
        flow::End::Paused(z) => return Ok(CaseEnd::Paused { z, nz }),
        flow::End::Stopped => return Ok(CaseEnd::Stopped),
        flow::End::Finished => {}
    }
    let mut result = empty(p);
    for (stage, name) in stages.iter_mut().zip(&names) {
        let t = Instant::now();
        stage.finish(&mut result)?;
        if let Some(n) = profile.iter_mut().find(|n| n.name == *name) {
            n.busy_s += t.elapsed().as_secs_f64();
        }
    }
    Ok(CaseEnd::Done(CaseReport { slabs, reserved: need, bytes, inputs: stamps, profile }, result))
}

/// Removes the groups above `removed` (inside the case group `root`) that hold nothing but
/// their own `zarr.json` now — `revised/` once its last image is gone — as a case that never
/// had them would not have them.
fn prune_empty_groups(removed: &Path, root: &Path) -> std::io::Result<()> {
    let mut dir = removed.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        let names: Vec<std::ffi::OsString> = match crate::files::mirror::children(d)? {
            Some(names) => names.into_iter().map(Into::into).collect(),
            None => match std::fs::read_dir(d) {
                Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            },
        };
        if names.iter().any(|n| n != "zarr.json") {
            break;
        }
        crate::files::durable::remove_path(d)?;
        dir = d.parent();
    }
    Ok(())
}

/// A case's reductions before any stage has run.
fn empty(p: &Pipeline) -> CaseResult {
    CaseResult { classes: vec![Default::default(); p.input.classes.len()], ..Default::default() }
}

fn write_volume_slab(sink: &Sink, z0: usize, v: &Voxels) -> Result<(), String> {
    let w = &sink.writer;
    let r = match sink.ct_scaling {
        None => with_voxels!(v, data => w.write_slab(z0, data)),
        Some(scaling) => match (w.datatype(), v, scaling) {
            (DataType::I16, Voxels::I16(data), None) => w.write_slab(z0, data),
            (DataType::I16, _, _) => {
                let mut out = vec![0i16; v.len()];
                v.for_each_scaled(scaling, |k, x| out[k] = x as i16);
                w.write_slab(z0, &out)
            }
            (DataType::F32, _, _) => {
                let mut out = vec![0f32; v.len()];
                v.for_each_scaled(scaling, |k, x| out[k] = x as f32);
                w.write_slab(z0, &out)
            }
            _ => {
                let mut out = vec![0f64; v.len()];
                v.scaled_into(scaling, &mut out);
                w.write_slab(z0, &out)
            }
        },
    };
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dt: DataType, slope: f64, inter: f64) -> Header {
        let mut h =
            Header::new_3d([4, 4, 4], [1.0; 3], [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], dt);
        h.scl_slope = slope;
        h.scl_inter = inter;
        h
    }

    #[test]
    fn ct_storage_is_the_smallest_exact_type() {
        assert_eq!(ct_storage(&header(DataType::I16, 1.0, 0.0)), DataType::I16);
        assert_eq!(ct_storage(&header(DataType::U8, 1.0, -1024.0)), DataType::I16);
        assert_eq!(ct_storage(&header(DataType::I16, 0.0, 0.0)), DataType::I16);
        assert_eq!(ct_storage(&header(DataType::U16, 1.0, -1024.0)), DataType::F32);
        assert_eq!(ct_storage(&header(DataType::I16, 0.5, 0.0)), DataType::F64);
        assert_eq!(ct_storage(&header(DataType::F32, 1.0, 0.0)), DataType::F32);
        assert_eq!(ct_storage(&header(DataType::F32, 2.0, 0.0)), DataType::F64);
        assert_eq!(ct_storage(&header(DataType::F64, 1.0, 0.0)), DataType::F64);
        assert_eq!(ct_storage(&header(DataType::I32, 1.0, 0.0)), DataType::F64);
    }
}
