//! `review`: what the annotators open next, once the corpus is ranked (the paper's loop).
//! For every flagged case, under `<output>/review/<case>/`:
//! - `attention_<class>.nii.gz`: the attention heatmap in the authors' format, uint8 =
//!   ⌊heatmap / the class's maximum over the case × 255⌋ (numpy's `astype(np.uint8)` of that
//!   ratio; all 0 where the class has no attention);
//! - `pseudo_labels.nii.gz`: the consensus pseudo labels (mean p > 0.5) as one uint8 label map,
//!   class k of `[input] classes` as k + 1, a voxel in several classes' consensus going to the
//!   first of them;
//!
//! both with the CT's affine, ready for ITK-SNAP, 3D Slicer or MONAI Label; `.source`, the
//! digest of the data they were made from (a rerun re-exports only the cases whose data
//! changed, and those newly flagged); and
//! `<output>/worklist.csv`: the flagged cases, most attention first, each with the classes to
//! look at (those with attention, most first, at most `classes_per_case`).
//!
//! Invariants: everything is read back from the case's own Zarr group chunk by chunk (memory:
//! a few slabs, never a volume); the consensus is the same function as the other stages'; each
//! file appears whole and durable (written beside and renamed), and `worklist.csv`, which names
//! them, is written after them; `review/` holds the folders of the flagged cases and nothing
//! else.

use std::path::Path;

use serde::Deserialize;

use super::Finished;
use super::rank::RankRow;
use super::{CaseSlab, Layout, ProbDecoder, StageConfig, StageKind, parse_table, require_predictions};
use crate::input::InputConfig;
use crate::nifti::{DataType, VolumeWriter, Voxels};
use crate::with_voxels;
use crate::zarr::read::{CaseGroup, chunk_into};

pub const KIND: StageKind = StageKind {
    kind: "review",
    summary: "for flagged cases: uint8 attention heatmaps and consensus pseudo labels as .nii.gz, worklist.csv",
    params: &[("classes_per_case", "3", "classes listed per case in worklist.csv, most attention first")],
    per_case: false,
    reads: &[],
    writes: &[],
    needs: &[super::Product::Ranking],
    makes: &[],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    #[serde(default = "three")]
    pub classes_per_case: usize,
}

fn three() -> usize {
    3
}

fn build(table: &toml::Table, input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: ReviewConfig = parse_table(table)?;
    let problems = require_predictions(input, "review");
    if problems.is_empty() { Ok(StageConfig::Review(c)) } else { Err(problems) }
}

/// Writes the review files of one flagged case into `dir` (new).
fn export_case(input: &InputConfig, slab_depth: usize, out: &Path, case: &str, dir: &Path) -> Result<(), String> {
    let group = out.join("cases").join(format!("{case}.zarr"));
    let store = CaseGroup::open(&group)?;
    crate::files::durable::create_dir_durable(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ct = store.header("ct")?;
    let [nx, ny, nz] = ct.shape();
    let nxy = nx * ny;
    let u8_header = ct.with_stored(DataType::U8, true);
    // Chunks are slabs of the run's depth (zarr::CaseStore::image).
    let depth = slab_depth.min(nz).max(1);
    let classes = &input.classes;

    // Heatmaps: a pass for the maximum, a pass to write. Buffers are kept from chunk to chunk
    // (zarr::read::chunk_into).
    let mut voxels = Voxels::empty(DataType::U8);
    let mut bytes = Vec::new();
    for class in classes {
        let image = format!("attention/{class}");
        let Ok(a) = store.array(&format!("{image}/0")) else { continue }; // write_maps = false
        let dt = store.header(&image)?.datatype;
        let slabs = nz.div_ceil(depth);
        let mut max = 0.0f64;
        for i in 0..slabs {
            let n = depth.min(nz - i * depth) * nxy;
            chunk_into(&a, dt, i as u64, n, &mut voxels)?;
            with_voxels!(&voxels, d => {
                for &v in d.iter() {
                    max = max.max(v as f64);
                }
            });
        }
        let path = dir.join(format!("attention_{class}.nii.gz"));
        let mut w = VolumeWriter::create(&path, &u8_header, 1).map_err(|e| e.to_string())?;
        for i in 0..slabs {
            let n = depth.min(nz - i * depth) * nxy;
            bytes.clear();
            if max > 0.0 {
                // Every byte written from the chunk's n voxels: no zeroing first.
                chunk_into(&a, dt, i as u64, n, &mut voxels)?;
                with_voxels!(&voxels, d => bytes.extend(d.iter().map(|&v| (v as f64 / max * 255.0) as u8)));
            } else {
                bytes.resize(n, 0u8);
            }
            for s in bytes.chunks(nxy) {
                w.write_slice(s).map_err(|e| e.to_string())?;
            }
        }
        w.finish().map_err(|e| e.to_string())?;
    }

    // Consensus pseudo labels, from the case's predictions as stored.
    let models = &input.models;
    let mut arrays = Vec::new();
    let mut layout = Layout {
        shape: [nx, ny, nz],
        spacing: ct.spacing(),
        models: models.clone(),
        classes: classes.clone(),
        ct: usize::MAX,
        ct_scaling: None,
        predictions: vec![vec![0; classes.len()]; models.len()],
        prob: vec![vec![ProbDecoder::U8Table; classes.len()]; models.len()],
        labels: vec![None; classes.len()],
        revised: vec![None; classes.len()],
        paths: Vec::new(),
    };
    for (m, model) in models.iter().enumerate() {
        for (c, class) in classes.iter().enumerate() {
            let image = format!("predictions/{model}/{class}");
            let h = store.header(&image)?;
            layout.predictions[m][c] = arrays.len();
            layout.prob[m][c] = ProbDecoder::for_header(&h, input.clamp_probabilities);
            layout.paths.push(group.join(&image));
            arrays.push((store.array(&format!("{image}/0"))?, h.datatype));
        }
    }
    let path = dir.join("pseudo_labels.nii.gz");
    let mut w = VolumeWriter::create(&path, &u8_header, 1).map_err(|e| e.to_string())?;
    let mut mask = Vec::new();
    let mut volumes: Vec<Voxels> = arrays.iter().map(|(_, dt)| Voxels::empty(*dt)).collect();
    let mut ids = Vec::new();
    for (i, z0) in (0..nz).step_by(depth).enumerate() {
        let n = depth.min(nz - z0) * nxy;
        for ((a, dt), v) in arrays.iter().zip(&mut volumes) {
            chunk_into(a, *dt, i as u64, n, v)?;
        }
        let slab = CaseSlab::new(z0, n / nxy, &volumes, &layout);
        ids.clear();
        ids.resize(n, 0u8);
        for c in (0..classes.len()).rev() {
            mask.resize(n, 0);
            super::prob::consensus(&slab, c, 0..n, &mut mask)?;
            for (id, &m) in ids.iter_mut().zip(&mask) {
                if m != 0 {
                    *id = c as u8 + 1;
                }
            }
        }
        for s in ids.chunks(nxy) {
            w.write_slice(s).map_err(|e| e.to_string())?;
        }
    }
    w.finish().map_err(|e| e.to_string())
}

/// The review files of every flagged case and `worklist.csv`; errors name the case.
pub fn export(
    input: &InputConfig,
    slab_depth: usize,
    config: &ReviewConfig,
    out: &Path,
    ranking: &[RankRow],
    finished: &[&Finished],
) -> Result<Vec<Vec<String>>, String> {
    let mut rows =
        vec![["rank", "case_id", "dataset", "attention_size", "classes", "review_dir"].map(String::from).to_vec()];
    for r in ranking.iter().filter(|r| r.flagged) {
        let Some(f) = finished.iter().find(|f| f.id == r.case_id) else { continue };
        let mut classes: Vec<(f64, &String)> = input
            .classes
            .iter()
            .zip(&f.result.classes)
            .filter_map(|(name, row)| row.attention_sum.filter(|&a| a > 0.0).map(|a| (a, name)))
            .collect();
        classes.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let list: Vec<&str> = classes.iter().take(config.classes_per_case).map(|(_, n)| n.as_str()).collect();
        // A case's folder made from the same data (its `.source`) is kept as it is; another
        // is made anew beside it and takes its place whole.
        let done = out.join("review").join(&r.case_id);
        if std::fs::read_to_string(done.join(".source")).ok().as_deref() != Some(f.source.as_str()) {
            use crate::files::durable::{remove_path, write_atomic};
            let io = |path: &Path| {
                let path = path.to_owned();
                move |e: std::io::Error| format!("{}: {e}", path.display())
            };
            let partial = out.join("review").join(format!("{}.partial", r.case_id));
            remove_path(&partial).map_err(io(&partial))?;
            export_case(input, slab_depth, out, &r.case_id, &partial)
                .map_err(|e| format!("review export of {}: {e}", r.case_id))?;
            let source = partial.join(".source");
            write_atomic(&source, f.source.as_bytes()).map_err(io(&source))?;
            remove_path(&done).map_err(io(&done))?;
            crate::files::durable::publish_dir(&partial, &done).map_err(io(&done))?;
        }
        rows.push(vec![
            r.rank.to_string(),
            r.case_id.clone(),
            r.dataset.clone(),
            r.attention_size.to_string(),
            list.join(";"),
            format!("review/{}", r.case_id),
        ]);
    }
    Ok(rows)
}

/// Removes the folders of cases no longer flagged (an earlier ranking, before failed cases
/// were redone), once `worklist.csv` (`rows`) is written: review/ holds exactly what it names.
pub fn remove_unlisted(out: &Path, rows: &[Vec<String>]) -> Result<(), String> {
    remove_where(out, |name, _| !rows.iter().skip(1).any(|r| r[1] == name))
}

/// Removes every case folder slabflow exported to review/ (those holding a `.source`), for a
/// pipeline that no longer reviews; anything else there is left alone.
pub fn remove_exports(out: &Path) -> Result<(), String> {
    remove_where(out, |name, path| path.join(".source").is_file() || name.ends_with(".partial"))
}

/// Removes the entries of review/ for which `gone(name, path)` holds.
fn remove_where(out: &Path, gone: impl Fn(&str, &Path) -> bool) -> Result<(), String> {
    // On a bucket output, the folders in the bucket (their `.source` files are in the scratch).
    let review = out.join("review");
    let names = crate::files::mirror::list_dir(&review).map_err(|e| format!("{}: {e}", review.display()))?;
    for name in names {
        let path = review.join(&name);
        if gone(&name, &path) {
            crate::files::durable::remove_path(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        }
    }
    Ok(())
}
