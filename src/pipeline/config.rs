//! Pipeline files: `version = 1`, `[input]`, `[output]`, `[runtime]`, `[[stages]]`.
//!
//! Parsing is strict (unknown keys are errors) and [`Pipeline::load`] reports every problem it
//! finds at once, each with the file and the key, before any data is touched.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::Template;
pub use crate::input::{InputConfig, Templates};
use crate::stages;
use crate::stages::custom::Registry;
use crate::zarr::{Codec, ZarrOptions};

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
    /// Where the run writes; `--output` overrides it (and may stand in for it).
    #[serde(default)]
    pub dir: PathBuf,
    /// Chunk codec: "auto" (default: blosc-zstd for CT and the normalised CT, blosc-lz4 for
    /// predictions, masks and attention maps; see `zarr::ZarrOptions::per_kind`), or one of
    /// "blosc-zstd", "blosc-lz4", "zstd", "none" for every array.
    #[serde(default = "default_codec")]
    pub codec: String,
    /// Codec level; default: the codec's own (see `zarr::Codec::default_level`). With
    /// "auto", the level of the dense arrays' blosc-zstd.
    pub level: Option<i32>,
    /// Optional sharding: sub-chunk shape `[z, y, x]` inside each slab-sized shard.
    pub subchunks: Option<[u64; 3]>,
}

fn default_codec() -> String {
    AUTO.into()
}

/// The `output.codec` that chooses the codec per kind of array.
const AUTO: &str = "auto";

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { dir: PathBuf::new(), codec: default_codec(), level: None, subchunks: None }
    }
}

/// The keys of each section, for messages that list them (a test checks them against the
/// structs).
const TOP_KEYS: &[&str] = &["version", "input", "output", "runtime", "stages"];
const INPUT_KEYS: &[&str] =
    &["root", "ct", "prediction", "label", "revised", "metadata", "models", "classes", "clamp_probabilities"];
const OUTPUT_KEYS: &[&str] = &["dir", "codec", "level", "subchunks"];
const RUNTIME_KEYS: &[&str] = &["memory_limit", "slab_depth", "workers", "checkpoint_secs"];

impl OutputConfig {
    /// How the arrays of a run with slabs of `slab_depth` slices are chunked and compressed
    /// (the codec and level validated by [`Pipeline::parse`]).
    pub fn zarr(&self, slab_depth: usize) -> ZarrOptions {
        match Codec::parse(&self.codec) {
            Some(c) => ZarrOptions::new(slab_depth, c, self.level.unwrap_or(c.default_level()), self.subchunks),
            None => ZarrOptions::per_kind(slab_depth, self.level, self.subchunks),
        }
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
    /// `--input` and `--output` come later (`slabflow validate`): a file without `[input]
    /// root` or `[output] dir` is complete.
    pub paths_later: bool,
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
        // A named codec is hashed as before "auto" existed, so outputs of those runs resume.
        let codec = match Codec::parse(&self.output.codec) {
            Some(c) => format!("{:?}", (c, self.output.level.unwrap_or(c.default_level()))),
            None => format!("{AUTO}{:?}", self.output.level),
        };
        let text = format!("{input:?}{output:?}{:?}{codec}", self.runtime.slab_depth);
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }

    /// The manifest a run of this pipeline wants (`split`: a sharded run's).
    pub fn manifest(&self, split: Option<crate::checkpoint::Split>) -> crate::checkpoint::Manifest {
        let stages = self.stages.iter().map(|s| s.id()).collect::<Vec<_>>().join(";");
        let stages = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(stages.as_bytes()));
        crate::checkpoint::Manifest::new(&self.text, &self.base_digest(), &stages, &self.input.root, split)
    }

    /// Reads and validates `file`; relative `root`/`dir` are taken relative to the current
    /// directory, as a user typing paths next to the file expects.
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Pipeline, ConfigError> {
        Pipeline::load_with(file, overrides, &Registry::default())
    }

    /// [`Pipeline::load`], with stage kinds from outside slabflow ([`crate::stages::custom`]).
    pub fn load_with(file: &Path, overrides: &Overrides, custom: &Registry) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError { file: file.to_owned(), problems: vec![format!("cannot read the file: {e}")] })?;
        Pipeline::parse_with(file, &text, overrides, custom)
    }

    /// The pipeline an output's manifest saved, over the corpus and into the output it names
    /// (what `merge`, `status` and a rerun's comparison read).
    pub fn saved_in(m: &crate::checkpoint::Manifest, out: &Path) -> Result<Pipeline, ConfigError> {
        let overrides =
            Overrides { input: Some(m.fingerprint.input.clone()), output: Some(out.to_owned()), ..Default::default() };
        Pipeline::parse(&crate::checkpoint::Manifest::path(out), &m.pipeline_text, &overrides)
    }

    /// Validates the text of a pipeline file (`file`: its name, for messages).
    pub fn parse(file: &Path, text: &str, overrides: &Overrides) -> Result<Pipeline, ConfigError> {
        Pipeline::parse_with(file, text, overrides, &Registry::default())
    }

    /// [`Pipeline::parse`], with stage kinds from outside slabflow.
    pub fn parse_with(
        file: &Path,
        text: &str,
        overrides: &Overrides,
        custom: &Registry,
    ) -> Result<Pipeline, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError { file: file.to_owned(), problems };
        // Broken TOML stops here (with its line); past that, every section is read on its
        // own, so that one problem hides no other.
        let doc: toml::Table = toml::from_str(text).map_err(|e| fail(vec![toml_message(text, &e)]))?;
        let lines = Lines(text);
        let mut problems = Vec::new();
        for key in doc.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
            problems.push(format!(
                "{}{key}: not a key of a pipeline file; it has version, [input], [output], [runtime] and [[stages]]",
                lines.at(None, key)
            ));
        }
        match doc.get("version") {
            Some(toml::Value::Integer(1)) => {}
            Some(v) => {
                problems.push(format!("{}version = {v}: this slabflow reads version = 1", lines.at(None, "version")))
            }
            None => problems.push("version is missing: a pipeline file says version = 1".into()),
        }
        let input: Option<InputConfig> = match doc.get("input") {
            Some(v) => section(v, "input", INPUT_KEYS, &lines, &mut problems),
            None => {
                problems.push(
                    "[input] is missing: it says how the corpus's files are named (ct = \"{case}/ct.nii.gz\", …)"
                        .into(),
                );
                None
            }
        };
        let output: Option<OutputConfig> = match doc.get("output") {
            Some(v) => section(v, "output", OUTPUT_KEYS, &lines, &mut problems),
            None => Some(OutputConfig::default()),
        };
        let runtime: Option<RuntimeConfig> = match doc.get("runtime") {
            Some(v) => section(v, "runtime", RUNTIME_KEYS, &lines, &mut problems),
            None => Some(RuntimeConfig::default()),
        };
        let stage_tables: Vec<toml::Table> = match doc.get("stages") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) if a.iter().all(|v| v.is_table()) => {
                a.iter().filter_map(|v| v.as_table().cloned()).collect()
            }
            Some(_) => {
                problems.push(format!("{}stages: write each stage as a [[stages]] table", lines.at(None, "stages")));
                Vec::new()
            }
        };
        // What could not be read is reported above; the rest is still checked (a section that
        // did not read stands in with its defaults).
        let (mut output, mut runtime) = (output.unwrap_or_default(), runtime.unwrap_or_default());
        let Some(mut input) = input else {
            // The stages' own problems need [input]'s classes and templates; their kinds do not.
            let mut probe = Vec::new();
            stages::build_all(&stage_tables, &InputConfig::default(), custom, &mut probe);
            problems.extend(probe.into_iter().filter(|p| p.contains("unknown kind") || p.contains("missing `kind`")));
            return Err(fail(lines.locate_stages(problems)));
        };
        if let Some(i) = &overrides.input {
            input.root = i.clone();
        }
        if let Some(o) = &overrides.output {
            output.dir = o.clone();
        }
        if let Some(m) = &overrides.memory_limit {
            runtime.memory_limit = m.clone();
        }
        // `file://` URLs are local paths; `s3://` roots are read from a bucket
        // (crate::files::objects).
        let lossy = |p: &Path| p.to_string_lossy().into_owned();
        input.root = crate::files::objects::local(&lossy(&input.root));
        output.dir = crate::files::objects::local(&lossy(&output.dir));
        if crate::files::objects::is_http(&input.root) && input.metadata.is_none() {
            problems.push(format!(
                "input.root = \"{}\": an HTTP mirror cannot be listed; set [input] metadata (case_id,dataset) to name its cases",
                input.root.display()
            ));
        }
        if crate::files::objects::is_http(&output.dir) {
            problems.push(format!(
                "output.dir = \"{}\": an HTTP mirror is read-only; write to a disk or to s3://BUCKET/PREFIX",
                output.dir.display()
            ));
        } else if crate::files::objects::is_object(&output.dir) {
            // A bucket output: the run works in a scratch folder mirrored to it
            // (crate::files::mirror).
            match crate::files::mirror::attach(&output.dir) {
                Ok(local) => output.dir = local,
                Err(e) => problems.push(format!("output.dir: {e}")),
            }
        }
        if !overrides.paths_later && input.root.as_os_str().is_empty() {
            problems.push("input.root is missing: set [input] root = \"…\", or give --input DIR".into());
        }
        if !overrides.paths_later && output.dir.as_os_str().is_empty() {
            problems.push("output.dir is missing: set [output] dir = \"…\", or give --output DIR".into());
        }
        let mut raw = Raw { input, output, runtime };
        let mut template =
            |key: &str, value: Option<&String>, required: &[&str], allowed: &[&str]| -> Option<Template> {
                let value = value?;
                match Template::parse(value) {
                    Ok(t) => {
                        for r in required {
                            if !t.uses(r) {
                                problems.push(format!(
                                    "{}input.{key} = \"{value}\" must use {{{r}}}",
                                    lines.at(Some("input"), key)
                                ));
                            }
                        }
                        for p in crate::input::PLACEHOLDERS {
                            if t.uses(p) && !allowed.contains(p) {
                                problems.push(format!(
                                    "{}input.{key} = \"{value}\" cannot use {{{p}}}",
                                    lines.at(Some("input"), key)
                                ));
                            }
                        }
                        Some(t)
                    }
                    Err(e) => {
                        problems.push(format!("{}input.{key}: {e}", lines.at(Some("input"), key)));
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
                problems.push(format!("{}runtime.memory_limit: {e}", lines.at(Some("runtime"), "memory_limit")));
                0
            }
        };
        if raw.runtime.slab_depth == 0 || raw.runtime.slab_depth > 4096 {
            problems.push(format!(
                "{}runtime.slab_depth = {}: use 1 to 4096 slices",
                lines.at(Some("runtime"), "slab_depth"),
                raw.runtime.slab_depth
            ));
        }
        if !(raw.runtime.checkpoint_secs >= 0.0 && raw.runtime.checkpoint_secs.is_finite()) {
            problems.push(format!(
                "runtime.checkpoint_secs = {}: use a number of seconds, 0 or more",
                raw.runtime.checkpoint_secs
            ));
        }
        match Codec::parse(&raw.output.codec) {
            None if raw.output.codec == AUTO => {
                // With "auto", a level is the dense arrays' (blosc-zstd, the default before
                // "auto"): pipelines that set one keep their meaning.
                let dense = Codec::BloscZstd;
                if let Some(level) = raw.output.level
                    && !dense.levels().contains(&level)
                {
                    problems.push(format!(
                        "output.level = {level}: with codec \"auto\" it is the level of CT and ct_norm's \
                         blosc-zstd, which takes levels {} to {}",
                        dense.levels().start(),
                        dense.levels().end()
                    ));
                }
            }
            None => problems.push(format!(
                "output.codec = \"{}\": use {AUTO} (the default) or one of {}",
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
        let stages = stages::build_all(&stage_tables, &raw.input, custom, &mut problems);
        if !problems.is_empty() {
            return Err(fail(lines.locate_stages(problems)));
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

fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("line {}: {msg}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => msg,
    }
}

/// The validated sections, while the rest is checked.
struct Raw {
    input: InputConfig,
    output: OutputConfig,
    runtime: RuntimeConfig,
}

/// Reads one section of the file into `T`: every key it does not know is a problem (with its
/// line), and the rest is read as far as it goes (a value of the wrong type is a problem too).
fn section<T: serde::de::DeserializeOwned>(
    value: &toml::Value,
    name: &str,
    keys: &[&str],
    lines: &Lines,
    problems: &mut Vec<String>,
) -> Option<T> {
    let Some(table) = value.as_table() else {
        problems.push(format!("{}{name}: write it as a [{name}] table", lines.at(None, name)));
        return None;
    };
    let mut known = table.clone();
    for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
        problems.push(format!(
            "{}{name}.{key}: not a key of [{name}]; its keys are {}",
            lines.at(Some(name), key),
            keys.join(", ")
        ));
        known.remove(key);
    }
    // serde stops at the first bad value and does not say whose it is. A key read alone
    // fails on its own value (the others are then only missing): those keys are reported,
    // each with its line, and the rest is read without them.
    let read =
        |t: &toml::Table| T::deserialize(toml::Value::Table(t.clone())).map_err(|e| e.message().trim().to_string());
    let bad: Vec<(String, String)> = known
        .iter()
        .filter_map(|(k, v)| {
            let alone: toml::Table = [(k.clone(), v.clone())].into_iter().collect();
            read(&alone).err().filter(|m| !m.starts_with("missing field")).map(|m| (k.clone(), m))
        })
        .collect();
    for (k, msg) in &bad {
        problems.push(format!("{}{name}.{k}: {msg}", lines.at(Some(name), k)));
        known.remove(k);
    }
    match read(&known) {
        Ok(t) => Some(t),
        // A required key reported above as unreadable is not missing as well.
        Err(msg) if bad.iter().any(|(k, _)| msg == format!("missing field `{k}`")) => None,
        Err(msg) => {
            problems.push(format!("{}[{name}]: {msg}", lines.at(None, name)));
            None
        }
    }
}

/// Where keys are in the file's text, for messages: "line N: ".
struct Lines<'a>(&'a str);

impl Lines<'_> {
    /// The line of `key` in `[section]` (or at the top, before any section).
    fn at(&self, section: Option<&str>, key: &str) -> String {
        let found = self.find(section, key);
        // A key in an inline table or a dotted key: the line of its section, at least.
        let found = found.or_else(|| section.and_then(|s| self.find(None, s)));
        found.map(|n| format!("line {n}: ")).unwrap_or_default()
    }

    /// The 1-based line of `key` in `[section]`.
    fn find(&self, section: Option<&str>, key: &str) -> Option<usize> {
        let mut current: Option<String> = None;
        for (n, line) in self.0.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                let header = t.split('#').next().unwrap_or("").trim();
                current = Some(header.trim_matches(|c| c == '[' || c == ']').trim().to_string());
                if section.is_none() && current.as_deref() == Some(key) {
                    return Some(n + 1);
                }
                continue;
            }
            let is_key = t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='));
            if is_key && current.as_deref() == section {
                return Some(n + 1);
            }
        }
        None
    }

    /// Puts the line of `[[stages]]` number i before each problem that starts "stages[i]".
    fn locate_stages(&self, problems: Vec<String>) -> Vec<String> {
        let headers: Vec<usize> = self
            .0
            .lines()
            .enumerate()
            .filter(|(_, l)| l.split('#').next().unwrap_or("").replace(' ', "").trim() == "[[stages]]")
            .map(|(n, _)| n + 1)
            .collect();
        problems
            .into_iter()
            .map(|p| {
                let index =
                    p.strip_prefix("stages[").and_then(|r| r.split(']').next()).and_then(|i| i.parse::<usize>().ok());
                match index.and_then(|i| headers.get(i)) {
                    Some(line) => format!("line {line}: {p}"),
                    None => p,
                }
            })
            .collect()
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
    fn one_problem_hides_no_other_and_each_names_its_line() {
        let text = r#"version = 1
[input]
root = "x"
ct = "{case}/ct.nii.gz"
predictoin = "{case}/{model}/{class}.nii.gz"
[output]
dir = "o"
[runtime]
slab_depth = 0
[[stages]]
kind = "normalize"
[[stages]]
kind = "teleport"
[[stages]]
kind = "rank"
budget = 2.0
"#;
        let all = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err().to_string();
        for needle in [
            "line 5: input.predictoin: not a key of [input]; its keys are root, ct, prediction",
            "line 9: runtime.slab_depth = 0",
            "line 12: stages[1]: unknown kind \"teleport\"",
            "line 14: stages[2] (rank): budget",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        // A section that does not read at all still lets the stages be checked.
        let text = "version = 1\n[input]\nct = 3\n[[stages]]\nkind = \"teleport\"\n";
        let all = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err().to_string();
        assert!(
            all.contains("line 3: input.ct: invalid type") && all.contains("line 4: stages[0]: unknown kind"),
            "{all}"
        );
    }

    #[test]
    fn lines_survive_comments_and_like_errors_and_stage_numbers_are_the_file_s() {
        let text = "version = 1\n[input] # the corpus\nct = \"{case}/ct.nii.gz\"\nlabel = 1\nrevised = 2\n[output]\ndir = \"o\"\nlevel = \"x\"\n[[stages]]\nkind = \"teleport\"\n[[stages]]\nkind = \"attention\"\nmode = \"nope\"\n[[stages]]\nkind = \"rank\"\n";
        let all = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err().to_string();
        for needle in
            ["line 4: input.label: invalid type", "line 5: input.revised: invalid type", "line 8: output.level"]
        {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(!all.contains("output.dir is missing"), "a bad key does not lose the section's others:\n{all}");
        assert!(!all.contains("add an \"attention\" stage"), "its maker is written, with problems of its own:\n{all}");
        let text = "version = 1\n[input]\nct = \"{case}/ct.nii.gz\"\n[output]\ndir = \"o\"\n[[stages]]\nkind = \"teleport\"\n[[stages]]\nkind = \"rank\"\n";
        let all = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err().to_string();
        assert!(all.contains("line 8: stages[1] (rank) needs per-case attention sizes"), "{all}");
    }

    #[test]
    fn root_and_output_may_come_from_the_command_line() {
        let text = "version = 1\n[input]\nct = \"{case}/ct.nii.gz\"\n";
        let all = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err().to_string();
        assert!(all.contains("input.root is missing") && all.contains("output.dir is missing"), "{all}");
        let given = Overrides { input: Some("c".into()), output: Some("o".into()), ..Default::default() };
        let p = Pipeline::parse(Path::new("p.toml"), text, &given).unwrap();
        assert_eq!((p.input.root.as_path(), p.output.dir.as_path()), (Path::new("c"), Path::new("o")));
        let later = Overrides { paths_later: true, ..Default::default() };
        assert!(Pipeline::parse(Path::new("p.toml"), text, &later).is_ok(), "validate takes them later");
    }

    /// The key lists of the messages are the structs' fields (serde lists those when it meets
    /// an unknown one).
    #[test]
    fn key_lists_match_the_sections() {
        fn fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
            let mut t = toml::Table::new();
            t.insert("no_such_key".into(), toml::Value::Integer(0));
            let e = T::deserialize(toml::Value::Table(t)).unwrap_err().to_string();
            let list = e.split("expected one of").nth(1).unwrap_or_else(|| panic!("{e}"));
            list.split('`').skip(1).step_by(2).map(String::from).collect()
        }
        assert_eq!(fields::<InputConfig>(), INPUT_KEYS);
        assert_eq!(fields::<OutputConfig>(), OUTPUT_KEYS);
        assert_eq!(fields::<RuntimeConfig>(), RUNTIME_KEYS);
    }

    /// "auto" (the default) gives the sparse arrays their own codec and takes no level; a
    /// named codec is every array's, at the level given.
    #[test]
    fn codec_per_kind_or_named() {
        let parse = |output: &str| {
            let text =
                format!("version = 1\n[input]\nroot = \"c\"\nct = \"{{case}}.nii\"\n[output]\ndir = \"o\"\n{output}");
            Pipeline::parse(Path::new("p.toml"), &text, &Overrides::default()).map_err(|e| e.to_string())
        };
        let auto = parse("").unwrap().output.zarr(16);
        assert_eq!(
            (auto.codec, auto.shuffle, auto.sparse().codec),
            (Codec::BloscZstd, true, crate::zarr::SPARSE_CODEC)
        );
        assert!(!auto.sparse().shuffle);
        assert_eq!(parse("codec = \"auto\"").unwrap().output.zarr(16).sparse().codec, crate::zarr::SPARSE_CODEC);
        let named = parse("codec = \"zstd\"\nlevel = 5").unwrap().output.zarr(16);
        assert_eq!((named.sparse().codec, named.sparse().level), (Codec::Zstd, 5));
        let dense = parse("level = 5").unwrap().output.zarr(16);
        assert_eq!((dense.codec, dense.level, dense.sparse().codec), (Codec::BloscZstd, 5, crate::zarr::SPARSE_CODEC));
        let e = parse("level = 12").unwrap_err();
        assert!(e.contains("output.level = 12: with codec \"auto\" it is the level of CT"), "{e}");
        let e = parse("codec = \"brotli\"").unwrap_err();
        assert!(e.contains("output.codec = \"brotli\": use auto (the default) or one of blosc-zstd"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = "version = 1\n[input]\nroot = \"x\"\nct = \"{case}.nii\"\ncolour = 3\n[output]\ndir = \"o\"\n";
        let err = Pipeline::parse(Path::new("p.toml"), text, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
