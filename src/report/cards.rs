//! The report's card of a flagged case: for each of its top classes, the axial slice where
//! its attention peaks and the coronal one ([`crate::stages::attention::Peak`], in
//! `metrics.csv`), read from the case's Zarr group and rendered ([`super::render`]).
//!
//! Invariants: only the chunks holding those slices are read — the one chunk of each array
//! holding the axial slice, and for the coronal slices every chunk of the CT and of the
//! class's attention map and predictions, one chunk at a time — so memory stays that of a
//! few chunks per card being made (one per core) however many cases are flagged. "Axial" and
//! "coronal" are the slices at a fixed z and y of the arrays; their captions name the plane
//! the CT's affine gives them. A peak outside the case's grid is refused, naming the class. The consensus is the stages' own function
//! ([`crate::stages::prob::consensus`]) on the predictions as stored.

use std::path::Path;

use super::render::{Picture, Slice, plane, render};
use crate::input::InputConfig;
use crate::nifti::{DataType, Voxels};
use crate::stages::{CaseSlab, Layout, ProbDecoder};
use crate::with_voxels;
use crate::zarr::read::{CaseGroup, ZArray, chunk_depth, chunk_into};

/// One class of a card: its two pictures.
pub struct ClassViews {
    pub class: String,
    /// (what the picture is, e.g. "axial slice 120 of 300", the picture).
    pub axial: (String, Picture),
    pub coronal: (String, Picture),
}

/// A class's arrays: its attention map (if written) and each model's prediction.
struct ClassArrays {
    attention: Option<(ZArray, DataType)>,
    predictions: Vec<(ZArray, DataType)>,
    layout: Layout,
}

fn to_f64(v: &Voxels, range: std::ops::Range<usize>, out: &mut Vec<f64>) {
    with_voxels!(v, d => out.extend(d[range].iter().map(|&x| x as f64)));
}

/// The pictures of `classes` (index in `[input] classes`, peak z, peak y) of case `case`.
pub fn case_views(
    out: &Path,
    input: &InputConfig,
    case: &str,
    classes: &[(usize, usize, usize)],
) -> Result<Vec<ClassViews>, String> {
    let dir = out.join("cases").join(format!("{case}.zarr"));
    let group = CaseGroup::open(&dir)?;
    let header = group.header("ct")?;
    let [nx, ny, nz] = header.shape();
    let nxy = nx * ny;
    let (spacing, affine) = (header.spacing(), header.affine());
    let ct = group.array("ct/0")?;
    let depth = chunk_depth(&ct)?;
    let mut arrays = Vec::new();
    for &(c, _, _) in classes {
        let class = &input.classes[c];
        let attention = match group.array(&format!("attention/{class}/0")) {
            Ok(a) => Some((a, group.header(&format!("attention/{class}"))?.datatype)),
            Err(_) => None, // write_maps = false: the slices without overlay
        };
        let mut layout = Layout {
            shape: [nx, ny, nz],
            spacing,
            models: input.models.clone(),
            classes: vec![class.clone()],
            ct: usize::MAX,
            ct_scaling: None,
            predictions: (0..input.models.len()).map(|m| vec![m]).collect(),
            prob: Vec::new(),
            labels: vec![None],
            revised: vec![None],
            paths: Vec::new(),
        };
        let mut predictions = Vec::new();
        for model in &input.models {
            let image = format!("predictions/{model}/{class}");
            let h = group.header(&image)?;
            layout.prob.push(vec![ProbDecoder::for_header(&h, input.clamp_probabilities)]);
            layout.paths.push(dir.join(&image));
            predictions.push((group.array(&format!("{image}/0"))?, h.datatype));
        }
        arrays.push(ClassArrays { attention, predictions, layout });
    }
    if let Some(&(c, z, y)) = classes.iter().find(|&&(_, z, y)| z >= nz || y >= ny) {
        return Err(format!(
            "the peak of {} (z {z}, y {y}) is outside the case's {nx}×{ny}×{nz} voxels: metrics.csv and the case's group disagree (rerun the pipeline)",
            input.classes[c]
        ));
    }
    let ct_dt = group.header("ct")?.datatype;
    // Per class: the axial slice (filled from its chunk) and the coronal one (a row of every
    // slice, filled chunk by chunk).
    let empty = |cols: usize, rows: usize, row_axis: usize, att: bool| Slice {
        cols,
        rows,
        col_axis: 0,
        row_axis,
        ct: Vec::with_capacity(cols * rows),
        attention: att.then(|| Vec::with_capacity(cols * rows)),
        consensus: Vec::with_capacity(cols * rows),
    };
    let mut axial: Vec<Slice> = arrays.iter().map(|a| empty(nx, ny, 1, a.attention.is_some())).collect();
    let mut coronal: Vec<Slice> = arrays.iter().map(|a| empty(nx, nz, 2, a.attention.is_some())).collect();
    let mut mask = Vec::new();
    // Chunk buffers kept from chunk to chunk (zarr::read::chunk_into).
    let mut ct_chunk = Voxels::empty(ct_dt);
    let mut att_chunk = Voxels::empty(DataType::F32);
    let mut preds: Vec<Voxels> = Vec::new();
    for i in 0..nz.div_ceil(depth) {
        let z0 = i * depth;
        let n = depth.min(nz - z0) * nxy;
        chunk_into(&ct, ct_dt, i as u64, n, &mut ct_chunk).map_err(|e| format!("{}/ct/0: {e}", dir.display()))?;
        for (k, (&(_, pz, py), a)) in classes.iter().zip(&arrays).enumerate() {
            let wants_axial = (z0..z0 + n / nxy).contains(&pz);
            let att = match &a.attention {
                Some((arr, dt)) => {
                    chunk_into(arr, *dt, i as u64, n, &mut att_chunk)?;
                    Some(&att_chunk)
                }
                None => None,
            };
            preds.resize_with(a.predictions.len(), || Voxels::empty(DataType::U8));
            for ((arr, dt), v) in a.predictions.iter().zip(&mut preds) {
                chunk_into(arr, *dt, i as u64, n, v)?;
            }
            let slab = CaseSlab::new(z0, n / nxy, &preds, &a.layout);
            let mut take = |s: &mut Slice, range: std::ops::Range<usize>| -> Result<(), String> {
                to_f64(&ct_chunk, range.clone(), &mut s.ct);
                if let (Some(out), Some(att)) = (&mut s.attention, &att) {
                    to_f64(att, range.clone(), out);
                }
                mask.clear();
                mask.resize(range.len(), 0);
                crate::stages::prob::consensus(&slab, 0, range, &mut mask)?;
                s.consensus.extend_from_slice(&mask);
                Ok(())
            };
            if wants_axial {
                let at = (pz - z0) * nxy;
                take(&mut axial[k], at..at + nxy)?;
            }
            for z in 0..n / nxy {
                let at = z * nxy + py * nx;
                take(&mut coronal[k], at..at + nx)?;
            }
        }
    }
    let mut views = Vec::new();
    for ((&(c, pz, py), a), co) in classes.iter().zip(axial).zip(coronal) {
        views.push(ClassViews {
            class: input.classes[c].clone(),
            axial: (format!("{} slice z = {pz} of {nz}", plane(&affine, 2)), render(&a, spacing, &affine)?),
            coronal: (format!("{} slice y = {py} of {ny}", plane(&affine, 1)), render(&co, spacing, &affine)?),
        });
    }
    Ok(views)
}
