//! `assemble` (step ⑥ of the paper's loop): per case and class, the final label is the
//! original label where the class is annotated, else the annotator-revised mask where one
//! exists, else the consensus pseudo label (mean p over the models > 0.5).
//!
//! Written as NIfTI-Zarr images `final/<class>` (uint8 0/1) and `final/combined_labels` (uint8:
//! 0 background, class k of `[input] classes` is k + 1; a voxel in several classes' masks takes
//! the first of them in `priority`), and with `export_nifti` also as `.nii.gz` in the
//! AbdomenAtlas release layout, `<output>/release/<case>/segmentations/<class>.nii.gz` and
//! `<output>/release/<case>/combined_labels.nii.gz`, with the CT's affine. The run's
//! `assembly.csv` says which source each case and class used.
//!
//! Invariants:
//! - a class's source is decided per case from which files exist (a label file means
//!   "original" for the whole volume), never voxel by voxel;
//! - the consensus is the attention and metrics stages' (mean p > 0.5, as numpy computes it),
//!   so all three agree voxel for voxel;
//! - exports are streamed: each slab is appended to each file as its own gzip member (a valid
//!   multi-member `.nii.gz`), into `release/<case>.partial/`, renamed to `release/<case>/`
//!   when the case ends; a slab checkpoint keeps the files' lengths, and a resumed case cuts
//!   them back to those lengths, so the bytes equal an uninterrupted run's. The rename
//!   publishes the files but not the case (its journal record does): a case resumed after
//!   a crash between the two takes its files back from `release/<case>/` (only this case
//!   ever renames into it) and goes on from its checkpoint.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use rayon::prelude::*;
use serde::Deserialize;

use super::{
    CaseContext, CaseResult, CaseSlab, SlabStage, StageConfig, StageKind, decode_state, encode_state, parse_table,
    require_predictions,
};
use crate::input::InputConfig;
use crate::input::InputKind;
use crate::nifti::{DataType, Voxels};
use crate::with_voxels;
use crate::zarr::ImageWriter;

pub const KIND: StageKind = StageKind {
    kind: "assemble",
    summary: "final labels by priority (original > revised > consensus pseudo label), per class and combined",
    params: &[
        ("priority", "[input] classes", "class order for overlapping masks in combined_labels (first wins)"),
        ("export_nifti", "false", "also write release/<case>/segmentations/<class>.nii.gz and combined_labels.nii.gz"),
    ],
    per_case: true,
    reads: &[InputKind::Prediction, InputKind::Label, InputKind::Revised],
    writes: &["cases/{case}.zarr/final", "release/{case}", "release/{case}.partial"],
    needs: &[],
    makes: &[],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssembleConfig {
    /// Classes in the order they claim an overlapping voxel; classes not listed follow, in
    /// `[input] classes` order.
    #[serde(default)]
    pub priority: Vec<String>,
    #[serde(default)]
    pub export_nifti: bool,
}

fn build(table: &toml::Table, input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: AssembleConfig = parse_table(table)?;
    let mut problems = require_predictions(input, "assemble");
    for (i, name) in c.priority.iter().enumerate() {
        if !input.classes.contains(name) {
            problems.push(format!("priority: \"{name}\" is not one of [input] classes"));
        }
        if c.priority[..i].contains(name) {
            problems.push(format!("priority: \"{name}\" is listed twice"));
        }
    }
    if problems.is_empty() { Ok(StageConfig::Assemble(c)) } else { Err(problems) }
}

/// Where a class's final label comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Original,
    Revised,
    Pseudo,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Original => "original",
            Source::Revised => "revised",
            Source::Pseudo => "pseudo",
        }
    }
}

/// The streamed `.nii.gz` exports of one case.
struct Exports {
    partial: PathBuf,
    done: PathBuf,
    /// Per class, then combined_labels.
    paths: Vec<PathBuf>,
    files: Vec<File>,
    lengths: Vec<u64>,
    header: Vec<u8>,
}

pub struct AssembleStage {
    sources: Vec<Source>,
    /// Class indices in priority order.
    order: Vec<usize>,
    writers: Vec<ImageWriter>,
    combined: ImageWriter,
    exports: Option<Exports>,
    /// Final voxels per class.
    voxels: Vec<u64>,
    voxel_ml: f64,
    masks: Vec<Vec<u8>>,
    ids: Vec<u8>,
}

impl AssembleStage {
    pub fn start(config: &AssembleConfig, ctx: &CaseContext) -> Result<AssembleStage, String> {
        let l = ctx.layout;
        let classes = l.classes.len();
        if classes > 255 {
            return Err("combined_labels is uint8: at most 255 classes".into());
        }
        let sources = (0..classes)
            .map(|c| match (l.labels[c], l.revised[c]) {
                (Some(_), _) => Source::Original,
                (None, Some(_)) => Source::Revised,
                (None, None) => Source::Pseudo,
            })
            .collect();
        let mut order: Vec<usize> =
            config.priority.iter().filter_map(|name| l.classes.iter().position(|c| c == name)).collect();
        let rest: Vec<usize> = (0..classes).filter(|c| !order.contains(c)).collect();
        order.extend(rest);
        let header = ctx.ct_header.with_stored(DataType::U8, true);
        let image = |name: &str| {
            ctx.store.image(name, &header, DataType::U8, 0.0, &ctx.zarr.sparse()).map_err(|e| e.to_string())
        };
        let writers = l.classes.iter().map(|c| image(&format!("final/{c}"))).collect::<Result<Vec<_>, _>>()?;
        let combined = image("final/combined_labels")?;
        let exports = config.export_nifti.then(|| {
            let release = ctx.out_dir.join("release");
            let partial = release.join(format!("{}.partial", ctx.case_id));
            let mut paths: Vec<PathBuf> =
                l.classes.iter().map(|c| partial.join("segmentations").join(format!("{c}.nii.gz"))).collect();
            paths.push(partial.join("combined_labels.nii.gz"));
            Exports {
                done: release.join(ctx.case_id),
                partial,
                paths,
                files: Vec::new(),
                lengths: Vec::new(),
                header: crate::nifti::VolumeWriter::header_bytes(&header),
            }
        });
        let [dx, dy, dz] = l.spacing;
        Ok(AssembleStage {
            sources,
            order,
            writers,
            combined,
            exports,
            voxels: vec![0; classes],
            voxel_ml: dx * dy * dz / 1000.0,
            masks: vec![Vec::new(); classes],
            ids: Vec::new(),
        })
    }
}

fn binary(v: &Voxels, range: Range<usize>, out: &mut [u8]) {
    with_voxels!(v, d => {
        for (o, &x) in out.iter_mut().zip(&d[range]) {
            *o = (x as f64 > 0.0) as u8;
        }
    });
}

/// `bytes` as one gzip member appended to `file`, at level 1 (nibabel's default for `.nii.gz`:
/// label maps are mostly zeros and compress well even so).
fn append_member(file: &mut File, bytes: &[&[u8]]) -> std::io::Result<u64> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(1));
    for b in bytes {
        enc.write_all(b)?;
    }
    let data = enc.finish()?;
    file.write_all(&data)?;
    Ok(data.len() as u64)
}

impl Exports {
    /// Fresh files holding the NIfTI header.
    fn create(&mut self) -> std::io::Result<()> {
        for dir in [&self.partial, &self.done] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::create_dir_all(self.partial.join("segmentations"))?;
        self.files.clear();
        self.lengths.clear();
        for path in &self.paths {
            let mut f = File::create(path)?;
            let n = append_member(&mut f, &[&self.header])?;
            self.files.push(f);
            self.lengths.push(n);
        }
        Ok(())
    }

    /// The files as a slab checkpoint left them.
    fn reopen(&mut self, lengths: Vec<u64>) -> std::io::Result<()> {
        if !self.partial.exists() && self.done.exists() {
            // Renamed by a run that stopped before its record: not published yet.
            std::fs::rename(&self.done, &self.partial)?;
        }
        self.files.clear();
        for (path, &len) in self.paths.iter().zip(&lengths) {
            let f = File::options().append(true).open(path)?;
            f.set_len(len)?;
            self.files.push(f);
        }
        self.lengths = lengths;
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> String {
        format!("exporting to {}: {e}", self.partial.display())
    }
}

impl SlabStage for AssembleStage {
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        let n = slab.len();
        let layout = slab.layout;
        let sources = &self.sources;
        self.masks.par_iter_mut().enumerate().try_for_each(|(c, m)| -> Result<(), String> {
            m.clear();
            m.resize(n, 0);
            match sources[c] {
                Source::Original => binary(slab.label(c).expect("original"), 0..n, m),
                Source::Revised => binary(&slab.volumes[layout.revised[c].expect("revised")], 0..n, m),
                Source::Pseudo => slab.consensus_into(c, 0..n, m)?,
            }
            Ok(())
        })?;
        for (v, m) in self.voxels.iter_mut().zip(&self.masks) {
            *v += super::sum_bytes(m);
        }
        self.ids.clear();
        self.ids.resize(n, 0);
        for &c in self.order.iter().rev() {
            // Last writer wins, so the first class in priority order ends on top.
            for (id, &m) in self.ids.iter_mut().zip(&self.masks[c]) {
                if m != 0 {
                    *id = c as u8 + 1;
                }
            }
        }
        let z0 = slab.z0;
        self.writers
            .par_iter()
            .zip(&self.masks)
            .try_for_each(|(w, m)| w.write_slab(z0, m))
            .and_then(|_| self.combined.write_slab(z0, &self.ids))
            .map_err(|e| e.to_string())?;
        if let Some(ex) = &mut self.exports {
            if ex.files.is_empty() {
                ex.create().map_err(|e| ex.io(e))?;
            }
            let parts: Vec<&[u8]> = self.masks.iter().map(|m| m.as_slice()).chain([self.ids.as_slice()]).collect();
            let grown: Vec<std::io::Result<u64>> =
                ex.files.par_iter_mut().zip(parts).map(|(f, bytes)| append_member(f, &[bytes])).collect();
            for (len, g) in ex.lengths.iter_mut().zip(grown) {
                *len += g.map_err(|e| format!("exporting: {e}"))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        for ((row, source), &v) in result.classes.iter_mut().zip(&self.sources).zip(&self.voxels) {
            row.assembly = Some(super::Assembly {
                source: source.name().to_string(),
                voxels: v,
                volume_ml: v as f64 * self.voxel_ml,
            });
        }
        if let Some(ex) = &mut self.exports {
            for f in ex.files.drain(..) {
                f.sync_all().map_err(|e| format!("exporting to {}: {e}", ex.partial.display()))?;
            }
            crate::files::lock::verify_held();
            crate::files::durable::publish_dir(&ex.partial, &ex.done).map_err(|e| ex.io(e))?;
        }
        Ok(())
    }

    /// The final voxel counts and the export files' lengths.
    fn save(&self) -> Vec<u8> {
        let lengths = self.exports.as_ref().map(|e| e.lengths.clone()).unwrap_or_default();
        encode_state(&(&self.voxels, lengths))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (voxels, lengths): (Vec<u64>, Vec<u64>) = decode_state(state)?;
        if voxels.len() != self.voxels.len() {
            return Err(format!("a slab checkpoint has {} classes, the pipeline {}", voxels.len(), self.voxels.len()));
        }
        self.voxels = voxels;
        if let Some(ex) = &mut self.exports {
            if lengths.len() != ex.paths.len() {
                return Err("a slab checkpoint was written without export_nifti".into());
            }
            ex.reopen(lengths).map_err(|e| ex.io(e))?;
        }
        Ok(())
    }

    /// The classes without an original or revised label take the consensus.
    fn wants_consensus(&self, c: usize) -> bool {
        self.sources.get(c) == Some(&Source::Pseudo)
    }
}

/// The release folder of a case being exported (removed with a failed case's data).
pub fn partial_export(out: &Path, case_id: &str) -> PathBuf {
    out.join("release").join(format!("{case_id}.partial"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn priority_must_name_known_classes_once() {
        let input: crate::input::InputConfig = toml::from_str(
            r#"root = "corpus"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
models = ["a", "b"]
classes = ["liver", "spleen"]
"#,
        )
        .unwrap();
        let table: toml::Table =
            toml::from_str("kind = \"assemble\"\npriority = [\"spleen\", \"kidney\", \"spleen\"]").unwrap();
        let e = super::build(&table, &input).unwrap_err().join("\n");
        assert!(e.contains("\"kidney\" is not one of [input] classes"), "{e}");
        assert!(e.contains("\"spleen\" is listed twice"), "{e}");
    }
}
