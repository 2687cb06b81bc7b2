//! The input side of a pipeline: which cases exist and which files make up each case.
//!
//! Cases are discovered by expanding the `ct` template under `[input] root`; the other
//! templates are filled per case. `dataset` comes from the metadata CSV when given, else from
//! `{dataset}` in the CT path, else is empty. Case ids are unique and sorted. The root may be
//! local, `s3://BUCKET/PREFIX` ([`crate::files::objects`]: listed once, files streamed), or an
//! `http(s)://` mirror, which cannot be listed: its cases are the metadata CSV's rows.

mod config;
mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::files::objects;

pub use config::{InputConfig, Templates};
pub use template::{Bindings, PLACEHOLDERS, Template};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "input root {0} does not exist, is not a directory or holds no object; set [input] root or pass --input DIR (or s3://BUCKET/PREFIX)"
    )]
    NoRoot(PathBuf),
    #[error("no case matches [input] ct = \"{template}\" under {root}; check the template and --input")]
    NoCases { template: String, root: PathBuf },
    #[error("case id \"{id}\" is found twice: {a} and {b}; case ids must be unique")]
    Duplicate { id: String, a: PathBuf, b: PathBuf },
    #[error("metadata {path}: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("listing the input root: {source}")]
    Listing {
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One case: its id, dataset and the bindings its CT path gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub dataset: String,
    pub ct: PathBuf,
    pub bindings: Bindings,
}

/// What a volume is to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Ct,
    Prediction { model: usize, class: usize },
    Label { class: usize },
    Revised { class: usize },
}

impl Role {
    pub fn kind(&self) -> InputKind {
        match self {
            Role::Ct => InputKind::Ct,
            Role::Prediction { .. } => InputKind::Prediction,
            Role::Label { .. } => InputKind::Label,
            Role::Revised { .. } => InputKind::Revised,
        }
    }
}

/// The kinds of input volume: what a stage kind declares it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Ct,
    Prediction,
    Label,
    Revised,
}

impl InputKind {
    /// The kind of the volume stored as image group `group` of a case (`ct`,
    /// `predictions/<model>/<class>`, `labels/<class>`, `revised/<class>`).
    pub fn of_group(group: &str) -> InputKind {
        match group.split('/').next() {
            Some("predictions") => InputKind::Prediction,
            Some("labels") => InputKind::Label,
            Some("revised") => InputKind::Revised,
            _ => InputKind::Ct,
        }
    }
}

/// One input file of a case and the image group it becomes.
#[derive(Debug, Clone)]
pub struct VolumeRef {
    pub role: Role,
    /// Image group inside the case's Zarr group, e.g. `predictions/unet/liver`.
    pub group: String,
    pub path: PathBuf,
}

/// Finds every case of the pipeline, sorted by id.
pub fn discover(input: &InputConfig) -> Result<Vec<Case>, InputError> {
    let root = &input.root;
    if objects::is_http(root) {
        return discover_listed_in_metadata(input);
    }
    if objects::is_object(root) {
        // One listing of the bucket under the root: the templates walk it, the stamps read it.
        objects::Listing::of(root).map_err(|source| InputError::Listing { source })?;
    }
    if !objects::is_dir(root) {
        return Err(InputError::NoRoot(root.clone()));
    }
    let found = input.templates.ct.discover(root).map_err(|source| InputError::Io { path: root.clone(), source })?;
    let metadata = match &input.metadata {
        Some(m) => Some(read_metadata(&root.join(m))?),
        None => None,
    };
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for (path, bindings) in found {
        let id = bindings["case"].clone();
        let dataset = match &metadata {
            Some(m) => m.get(&id).cloned().unwrap_or_else(|| bindings.get("dataset").cloned().unwrap_or_default()),
            None => bindings.get("dataset").cloned().unwrap_or_default(),
        };
        if let Some(prev) = cases.get(&id) {
            return Err(InputError::Duplicate { id, a: prev.ct.clone(), b: path });
        }
        cases.insert(id.clone(), Case { id, dataset, ct: path, bindings });
    }
    if cases.is_empty() {
        return Err(InputError::NoCases { template: input.templates.ct.as_str().to_string(), root: root.clone() });
    }
    Ok(cases.into_values().collect())
}

/// The cases of a root that cannot be listed (an HTTP mirror): the rows of `[input]
/// metadata`, each case's CT found by filling the template with its id and dataset.
fn discover_listed_in_metadata(input: &InputConfig) -> Result<Vec<Case>, InputError> {
    let root = &input.root;
    let Some(m) = &input.metadata else {
        return Err(InputError::Metadata {
            path: root.clone(),
            message: "an HTTP root cannot be listed: set [input] metadata (a CSV of case_id,dataset) to name the cases"
                .into(),
        });
    };
    let mut cases = Vec::new();
    for (id, dataset) in read_metadata(&root.join(m))? {
        let mut bindings = Bindings::new();
        bindings.insert("case".into(), id.clone());
        if input.templates.ct.uses("dataset") {
            bindings.insert("dataset".into(), dataset.clone());
        }
        let Some(ct) = input.templates.ct.find(root, &bindings) else {
            return Err(InputError::Metadata {
                path: root.join(m),
                message: format!("case {id} has no CT at {}", input.templates.ct.fill(root, &bindings).display()),
            });
        };
        cases.push(Case { id, dataset, ct, bindings });
    }
    if cases.is_empty() {
        return Err(InputError::NoCases { template: input.templates.ct.as_str().to_string(), root: root.clone() });
    }
    Ok(cases)
}

/// Reads `case_id,dataset` rows (header required; other columns ignored).
fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, InputError> {
    let err = |message: String| InputError::Metadata { path: path.to_owned(), message };
    let mut reader = csv::Reader::from_reader(objects::open_read(path).map_err(|e| err(e.to_string()))?);
    let headers = reader.headers().map_err(|e| err(e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(ci), Some(di)) = (col("case_id"), col("dataset")) else {
        return Err(err(format!(
            "needs columns case_id,dataset; found {}",
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    };
    let mut out = BTreeMap::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.map_err(|e| err(format!("row {}: {e}", line + 2)))?;
        let (Some(c), Some(d)) = (row.get(ci), row.get(di)) else {
            continue;
        };
        out.insert(c.trim().to_string(), d.trim().to_string());
    }
    Ok(out)
}

impl Case {
    /// The files of this case, CT first. A missing CT or prediction is an error naming the
    /// expected path; a missing label or revised mask means "not annotated" and is skipped.
    pub fn volumes(&self, input: &InputConfig) -> Result<Vec<VolumeRef>, String> {
        let root = &input.root;
        let mut out = vec![VolumeRef { role: Role::Ct, group: "ct".into(), path: self.ct.clone() }];
        let mut b = self.bindings.clone();
        b.insert("dataset".into(), self.bindings.get("dataset").cloned().unwrap_or_else(|| self.dataset.clone()));
        if let Some(t) = &input.templates.prediction {
            for (mi, model) in input.models.iter().enumerate() {
                for (ci, class) in input.classes.iter().enumerate() {
                    b.insert("model".into(), model.clone());
                    b.insert("class".into(), class.clone());
                    let path = t.find(root, &b).ok_or_else(|| {
                        format!("missing prediction of model {model} for class {class}: {}", t.fill(root, &b).display())
                    })?;
                    out.push(VolumeRef {
                        role: Role::Prediction { model: mi, class: ci },
                        group: format!("predictions/{model}/{class}"),
                        path,
                    });
                }
            }
        }
        b.remove("model");
        for (tpl, prefix) in [(&input.templates.label, "labels"), (&input.templates.revised, "revised")] {
            let Some(t) = tpl else { continue };
            for (ci, class) in input.classes.iter().enumerate() {
                b.insert("class".into(), class.clone());
                if let Some(path) = t.find(root, &b) {
                    let role = if prefix == "labels" { Role::Label { class: ci } } else { Role::Revised { class: ci } };
                    out.push(VolumeRef { role, group: format!("{prefix}/{class}"), path });
                }
            }
        }
        Ok(out)
    }
}
