//! The registry of stage kinds, keyed by the `kind` of a `[[stages]]` table.
//!
//! [`REGISTRY`] is the one ordered list that `slabflow stages` prints and validation consults.
//! Each entry parses its table strictly into a typed config; [`build_all`] collects every
//! problem of every stage instead of stopping at the first.

use crate::pipeline::config::InputConfig;

/// A validated stage configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum StageConfig {}

/// One stage kind: its name, a one-line summary, and its parameter documentation.
pub struct StageKind {
    pub kind: &'static str,
    pub summary: &'static str,
    /// `(name, default, meaning)` for each parameter.
    pub params: &'static [(&'static str, &'static str, &'static str)],
    pub build: fn(&toml::Table, &InputConfig) -> Result<StageConfig, Vec<String>>,
}

/// Every stage kind, in the order `slabflow stages` lists them.
pub const REGISTRY: &[StageKind] = &[];

/// Builds every `[[stages]]` table, pushing each problem (prefixed with `stages[i]`) to `problems`.
pub fn build_all(tables: &[toml::Table], input: &InputConfig, problems: &mut Vec<String>) -> Vec<StageConfig> {
    let mut out = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let Some(kind) = table.get("kind").and_then(|k| k.as_str()) else {
            problems.push(format!("stages[{i}]: missing `kind`"));
            continue;
        };
        match REGISTRY.iter().find(|k| k.kind == kind) {
            Some(k) => match (k.build)(table, input) {
                Ok(c) => out.push(c),
                Err(es) => problems.extend(es.into_iter().map(|e| format!("stages[{i}] ({kind}): {e}"))),
            },
            None => {
                let known: Vec<_> = REGISTRY.iter().map(|k| k.kind).collect();
                problems.push(format!(
                    "stages[{i}]: unknown kind \"{kind}\"; this slabflow knows: {}",
                    if known.is_empty() {
                        "none yet (a pipeline without stages converts to Zarr)".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
    }
    out
}
