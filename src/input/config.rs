//! `[input]` of a pipeline file: where the corpus is, how its files are named, which models and
//! classes it has.

use std::path::PathBuf;

use serde::Deserialize;

use super::Template;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Directory the templates are relative to; `--input` overrides it (and may stand in for
    /// it).
    #[serde(default)]
    pub root: PathBuf,
    /// Template of the CT volume; discovers the cases. Must use `{case}`.
    pub ct: String,
    /// Template of model `{model}`'s soft prediction of class `{class}`.
    pub prediction: Option<String>,
    /// Template of the original (ground-truth) mask of `{class}`; a missing file = not annotated.
    pub label: Option<String>,
    /// Template of the annotator-revised mask of `{class}`.
    pub revised: Option<String>,
    /// CSV with columns `case_id,dataset`, relative to `root`.
    pub metadata: Option<PathBuf>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub classes: Vec<String>,
    /// Clamp prediction values outside [0, 1] instead of failing the case (NaN still fails).
    #[serde(default)]
    pub clamp_probabilities: bool,
    /// The templates above, parsed (filled in by validation).
    #[serde(skip)]
    pub templates: Templates,
}

/// The `[input]` templates, parsed.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub ct: Template,
    pub prediction: Option<Template>,
    pub label: Option<Template>,
    pub revised: Option<Template>,
}
