//! Pipeline files: `version = 1`, `[input]`, `[output]`, `[runtime]`, `[[stages]]`.
//!
//! Parsing is strict (unknown keys are errors) and [`Pipeline::load`] reports every problem it
//! finds at once, each with the file and the key, before any data is touched.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::Template;
pub use crate::input::{InputConfig, Templates};
use crate::stages;
use crate::zarr::Codec;

/// Every problem found in a pipeline file, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{file}: invalid pipeline:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub dir: PathBuf,
    /// Chunk codec: "blosc-zstd" (default), "blosc-lz4", "zstd" or "none".
    #[serde(default = "default_codec")]
    pub codec: String,
    /// Codec level; default: the codec's own (see `zarr::Codec::default_level`).
    pub level: Option<i32>,
    /// Optional sharding: sub-chunk shape `[z, y, x]` inside each slab-sized shard.
    pub subchunks: Option<[u64; 3]>,
}

fn default_codec() -> String {
    "blosc-zstd".into()
}

impl OutputConfig {
    /// The chunk codec and its level (validated by [`Pipeline::parse`]).
    pub fn codec(&self) -> (Codec, i32) {
        let codec = Codec::parse(&self.codec).unwrap_or(Codec::BloscZstd);
        (codec, self.level.unwrap_or(codec.default_level()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Peak memory the run must stay under, e.g. "1GiB", "512MiB", "2GB" or a byte count.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: String,
    /// Slices per slab, which is also the Zarr chunk depth.
    #[serde(default = "default_slab_depth")]
    pub slab_depth: usize,
    /// Cases processed at once (at most; fewer when the memory limit says so). 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Seconds between slab checkpoints of a case still in progress (its state saved at a slab
    /// boundary, so a long case resumes from there, not from its first slice). 0 = after every
    /// slab. Typical cases finish well within the default and never write one.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: f64,
}

fn default_checkpoint_secs() -> f64 {
    60.0
}

fn default_memory_limit() -> String {
    "1GiB".into()
}

fn default_slab_depth() -> usize {
    16
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit: default_memory_limit(),
            slab_depth: default_slab_depth(),
            workers: 0,
            checkpoint_secs: default_checkpoint_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    version: u32,
    input: InputConfig,
    output: OutputConfig,
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    stages: Vec<toml::Table>,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    /// The file's bytes, for fingerprints.
    pub text: String,
    pub input: InputConfig,
    pub output: OutputConfig,
    pub runtime: RuntimeConfig,
    pub memory_limit: u64,
    pub stages: Vec<stages::StageConfig>,
}

/// Overrides from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub input: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub memory_limit: Option<String>,
}

impl Pipeline {
    /// What every stage's output depends on, as a digest: `[input]` but its root (the
    /// manifest holds the canonical root), `[output]` but its dir, the slab depth (the chunk
    /// depth) — each as validated, defaults filled in. `[runtime]`'s
    /// other keys change how a run goes, not what it writes; the stages are compared one by
    /// one ([`crate::stages::StageConfig::digest`]).
    pub fn base_digest(&self) -> String {
        let input = InputConfig { root: PathBuf::new(), ..self.input.clone() };
        let output = OutputConfig { dir: PathBuf::new(), ..self.output.clone() };
        let text = format!("{input:?}{output:?}{:?}{:?}", self.runtime.slab_depth, self.output.codec());
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }

    /// The manifest a run of this pipeline wants (`split`: a sharded run's).
    pub fn manifest(&self, split: Option<crate::checkpoint::Split>) -> crate::checkpoint::Manifest {
        let stages: String = self.stages.iter().map(|s| format!("{}@{};", s.kind().kind, s.digest())).collect();
        let stages = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(stages.as_bytes()));
        crate::checkpoint::Manifest::new(&self.text, &self.base_digest(), &stages, &self.input.root, split)
    }

    /// Reads and validates `file`; relative `root`/`dir` are taken relative to the current
    /// directory, as a user typing paths next to the file expects.
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError { file: file.to_owned(), problems: vec![format!("cannot read the file: {e}")] })?;
        Pipeline::parse(file, &text, overrides)
    }

    pub fn parse(file: &Path, text: &str, overrides: &Overrides) -> Result<Pipeline, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError { file: file.to_owned(), problems };
        let mut raw: RawPipeline = toml::from_str(text).map_err(|e| fail(vec![toml_message(&e)]))?;
        let mut problems = Vec::new();
        if raw.version != 1 {
            problems.push(format!("version = {}: this slabflow reads version = 1", raw.version));
        }
        if let Some(i) = &overrides.input {
            raw.input.root = i.clone();
        }
        if let Some(o) = &overrides.output {
            raw.output.dir = o.clone();
        }
        if let Some(m) = &overrides.memory_limit {
            raw.runtime.memory_limit = m.clone();
        }
        let mut template =
            |key: &str, value: Option<&String>, required: &[&str], allowed: &[&str]| -> Option<Template> {
                let value = value?;
                match Template::parse(value) {
                    Ok(t) => {
                        for r in required {
                            if !t.uses(r) {
                                problems.push(format!("input.{key} = \"{value}\" must use {{{r}}}"));
                            }
                        }
                        for p in crate::input::PLACEHOLDERS {
                            if t.uses(p) && !allowed.contains(p) {
                                problems.push(format!("input.{key} = \"{value}\" cannot use {{{p}}}"));
                            }
                        }
                        Some(t)
                    }
                    Err(e) => {
                        problems.push(format!("input.{key}: {e}"));
                        None
                    }
                }
            };
        let ct = template("ct", Some(&raw.input.ct), &["case"], &["case", "dataset"]);
        let prediction = template(
            "prediction",
            raw.input.prediction.as_ref(),
            &["model", "class"],
            &["case", "dataset", "model", "class"],
        );
        let label = template("label", raw.input.label.as_ref(), &["class"], &["case", "dataset", "class"]);
        let revised = template("revised", raw.input.revised.as_ref(), &["class"], &["case", "dataset", "class"]);
        if raw.input.prediction.is_some() && raw.input.models.is_empty() {
            problems.push("input.models is empty but input.prediction is set: list the models".into());
        }
        if (raw.input.prediction.is_some() || raw.input.label.is_some() || raw.input.revised.is_some())
            && raw.input.classes.is_empty()
        {
            problems.push("input.classes is empty: list the classes the templates range over".into());
        }
        for (key, list) in [("models", &raw.input.models), ("classes", &raw.input.classes)] {
            let mut seen = std::collections::BTreeSet::new();
            for name in list.iter() {
                if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                    problems.push(format!("input.{key}: \"{name}\" is not usable as a file or group name"));
                }
                if !seen.insert(name) {
                    problems.push(format!("input.{key}: \"{name}\" is listed twice"));
                }
            }
        }
        let memory_limit = match parse_bytes(&raw.runtime.memory_limit) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("runtime.memory_limit: {e}"));
                0
            }
        };
        if raw.runtime.slab_depth == 0 || raw.runtime.slab_depth > 4096 {
            problems.push(format!("runtime.slab_depth = {}: use 1 to 4096 slices", raw.runtime.slab_depth));
        }
        if !(raw.runtime.checkpoint_secs >= 0.0 && raw.runtime.checkpoint_secs.is_finite()) {
            problems.push(format!(
                "runtime.checkpoint_secs = {}: use a number of seconds, 0 or more",
                raw.runtime.checkpoint_secs
            ));
        }
        match Codec::parse(&raw.output.codec) {
            None => problems.push(format!(
                "output.codec = \"{}\": use one of {}",
                raw.output.codec,
                Codec::NAMES.join(", ")
            )),
            Some(c) => {
                let level = raw.output.level.unwrap_or(c.default_level());
                if !c.levels().contains(&level) {
                    problems.push(format!(
                        "output.level = {level}: {} takes levels {} to {}",
                        raw.output.codec,
                        c.levels().start(),
                        c.levels().end()
                    ));
                }
            }
        }
        if let Some(s) = raw.output.subchunks
            && s.contains(&0)
        {
            problems.push("output.subchunks: every extent must be at least 1".into());
        }
        let stages = stages::build_all(&raw.stages, &raw.input, &mut problems);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        raw.input.templates = Templates { ct: ct.unwrap(), prediction, label, revised };
        Ok(Pipeline {
            file: file.to_owned(),
            text: text.to_string(),
            input: raw.input,
            output: raw.output,
            runtime: raw.runtime,
            memory_limit,

            stages,
        })
    }
}

fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

/// Parses "1GiB", "512 MiB", "2GB", "1.5G", "1048576" into bytes (K/M/G/T = powers of 1024;
/// KB/MB/GB/TB = powers of 1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("\"{s}\" is not a size like \"1GiB\" or \"512MiB\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!("unknown unit \"{other}\" in \"{s}\"; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"));
        }
    };
    Ok((n * mult) as u64)
}

/// Formats a byte count for people: "1.00 GiB".
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", units[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
version = 2
[input]
root = "x"
ct = "{patient}/ct.nii.gz"
prediction = "{case}/{model}.nii.gz"
models = []
[output]
dir = "o"
[runtime]
memory_limit = "lots"
slab_depth = 0
"#;
        let err = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err();
        let all = err.to_string();
        for needle in
            ["version = 2", "{patient}", "must use {class}", "input.models is empty", "memory_limit", "slab_depth"]
        {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = "version = 1\n[input]\nroot = \"x\"\nct = \"{case}.nii\"\ncolour = 3\n[output]\ndir = \"o\"\n";
        let err = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
