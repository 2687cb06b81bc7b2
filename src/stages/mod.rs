//! Stages: the per-slab work of a pipeline, and the registry of stage kinds.
//!
//! Two layers per stage (as vector's `FilterConfig` → `Filter`): a serde config struct,
//! strict (`deny_unknown_fields`) with documented defaults, validated before any data is
//! touched; and a runtime [`SlabStage`] built per case, fed the case's slabs in z order.
//!
//! [`REGISTRY`] is the one ordered list that `slabflow stages` prints and validation consults;
//! the module, the TOML `kind` and the `<Kind>Config` type share one name.
//!
//! Invariants: a stage sees every slab of a case exactly once, in z order, and then `finish`;
//! a stage that needs neighbouring slices keeps its own window (no stage reads ahead), and
//! writes each output chunk whole, once.
//!
//! The hottest loops (attention's rows, metrics' slices) are also compiled for AVX2 by
//! `multiversion` and chosen when the CPU has it; the release binary stays on the
//! x86-64 baseline. Wider lanes change no result: Rust never contracts `a * b + c` into an FMA
//! nor reorders float sums, so each clone does the same operations in the same order.

pub mod assemble;
pub mod attention;
pub mod components;
pub mod custom;
pub mod evaluate;
pub mod graph;
pub mod metrics;
pub mod morphology;
pub mod normalize;
pub mod prob;
pub mod rank;
pub mod review;
pub mod shared;
pub mod surface;
mod surface_normals;

use crate::input::InputConfig;
use std::collections::BTreeMap;

use crate::input::InputKind;
use crate::nifti::{Header, Voxels};
use crate::zarr::{CaseStore, ZarrOptions};

pub use prob::ProbDecoder;

/// A validated stage configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum StageConfig {
    Normalize(normalize::NormalizeConfig),
    Attention(attention::AttentionConfig),
    Metrics(metrics::MetricsConfig),
    Assemble(assemble::AssembleConfig),
    Evaluate(evaluate::EvaluateConfig),
    Rank(rank::RankConfig),
    Review(review::ReviewConfig),
    /// A kind from outside slabflow ([`custom`]).
    Custom(custom::CustomConfig),
}

/// One stage kind: its name, a summary, its parameters `(name, default, meaning)`, what it
/// reads and writes per case, and how a `[[stages]]` table becomes a [`StageConfig`].
///
/// `reads` and `writes` are what a rerun goes by (`crate::pipeline::rerun`): a case's stage
/// reruns when an input of a kind it reads changed, and what it wrote goes first.
pub struct StageKind {
    pub kind: &'static str,
    pub summary: &'static str,
    pub params: &'static [(&'static str, &'static str, &'static str)],
    /// Runs on every case's slabs (false: once over the corpus, from the journal's reductions).
    pub per_case: bool,
    /// The input volumes its per-case work reads.
    pub reads: &'static [InputKind],
    /// What it writes for one case, relative to the output directory, `{case}` standing for the
    /// case id.
    pub writes: &'static [&'static str],
    /// What it takes from other stages ([`graph`] finds their producers).
    pub needs: &'static [Product],
    /// What it gives other stages.
    pub makes: &'static [Product],
    pub build: fn(&toml::Table, &InputConfig) -> Result<StageConfig, Vec<String>>,
}

impl StageKind {
    /// The kind named `kind`.
    pub fn named(kind: &str) -> Option<&'static StageKind> {
        REGISTRY.iter().find(|k| k.kind == kind)
    }

    /// The paths it writes for `case_id` in `out`.
    pub fn outputs(&self, out: &std::path::Path, case_id: &str) -> Vec<std::path::PathBuf> {
        self.writes.iter().map(|w| out.join(w.replace("{case}", case_id))).collect()
    }
}

/// What one stage gives another, beyond the files it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Per case, the attention sums of each class and the case's attention size (kept in the
    /// journal's records).
    AttentionSize,
    /// Per case, the attention maps in its Zarr group (`attention/<class>`).
    AttentionMaps,
    /// The corpus ranked by attention size, the flagged cases marked.
    Ranking,
}

impl Product {
    /// For people.
    pub fn name(self) -> &'static str {
        match self {
            Product::AttentionSize => "per-case attention sizes",
            Product::AttentionMaps => "attention maps",
            Product::Ranking => "the ranking",
        }
    }
}

/// Every stage kind, in the order `slabflow stages` lists them.
pub const REGISTRY: &[StageKind] =
    &[normalize::KIND, attention::KIND, metrics::KIND, assemble::KIND, evaluate::KIND, rank::KIND, review::KIND];

/// Deserialises a stage table (without its `kind`) strictly into `T`.
pub fn parse_table<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, Vec<String>> {
    let mut t = table.clone();
    t.remove("kind");
    T::deserialize(toml::Value::Table(t)).map_err(|e| vec![e.message().trim().to_string()])
}

/// Builds every `[[stages]]` table, slabflow's kinds and `custom` ones, pushing each problem
/// (prefixed with `stages[i]`) to `problems`.
pub fn build_all(
    tables: &[toml::Table],
    input: &InputConfig,
    custom: &custom::Registry,
    problems: &mut Vec<String>,
) -> Vec<StageConfig> {
    let mut out = Vec::new();
    // For the graph: each built stage's table index, and every kind written (built or not).
    let (mut index, mut written) = (Vec::new(), Vec::new());
    let kinds = || REGISTRY.iter().map(|k| k.kind).chain(custom.kinds()).collect::<Vec<_>>().join(", ");
    for (i, table) in tables.iter().enumerate() {
        let Some(kind) = table.get("kind").and_then(|k| k.as_str()) else {
            problems.push(format!("stages[{i}]: missing `kind`; kinds are {}", kinds()));
            continue;
        };
        written.push(kind.to_string());
        let built = match (REGISTRY.iter().find(|k| k.kind == kind), custom.get(kind)) {
            (Some(k), _) => (k.build)(table, input),
            (None, Some(_)) => custom::CustomConfig::build(custom, kind, table, input).map(StageConfig::Custom),
            (None, None) => {
                problems.push(format!("stages[{i}]: unknown kind \"{kind}\"; kinds are {}", kinds()));
                continue;
            }
        };
        match built {
            Ok(c) => {
                if out.iter().any(|o: &StageConfig| o.kind().kind == kind) {
                    problems.push(format!("stages[{i}]: a second \"{kind}\" stage; each kind runs at most once"));
                }
                out.push(c);
                index.push(i);
            }
            Err(es) => problems.extend(es.into_iter().map(|e| format!("stages[{i}] ({kind}): {e}"))),
        }
    }
    problems.extend(graph::check(&out, &index, &written));
    out
}

/// Requires `[input] prediction` for stages that read predictions.
pub fn require_predictions(input: &InputConfig, kind: &str) -> Vec<String> {
    if input.prediction.is_none() || input.models.is_empty() || input.classes.is_empty() {
        vec![format!("\"{kind}\" needs predictions: set [input] prediction, models and classes")]
    } else {
        Vec::new()
    }
}

/// Where each volume of a case sits in the slab set, and how its values are read.
#[derive(Debug, Clone)]
pub struct Layout {
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
    pub models: Vec<String>,
    pub classes: Vec<String>,
    pub ct: usize,
    pub ct_scaling: Option<(f64, f64)>,
    /// `[model][class]` → index into the slab set.
    pub predictions: Vec<Vec<usize>>,
    /// `[model][class]` → how stored values become probabilities.
    pub prob: Vec<Vec<ProbDecoder>>,
    /// `[class]` → index of the original label, if the class is annotated.
    pub labels: Vec<Option<usize>>,
    pub revised: Vec<Option<usize>>,
    /// Paths, for messages.
    pub paths: Vec<std::path::PathBuf>,
}

/// One slab of every volume of a case, with what other stages computed of it
/// ([`shared`]).
pub struct CaseSlab<'a> {
    pub z0: usize,
    pub nz: usize,
    pub volumes: &'a [Voxels],
    pub layout: &'a Layout,
    /// The consensus masks the engine computed once for this slab (classes some stage wants).
    pub consensus: Option<&'a shared::ClassMasks>,
    /// Per class and slice: paper attention above `CaseContext::paper_above`, from the
    /// attention stage.
    pub attention_above: Option<&'a shared::ClassBits>,
    /// Per volume: which rows of the slab hold a non-zero voxel, computed by the first stage
    /// that asks ([`CaseSlab::row_nonzero`]) and shared with the others.
    pub rows: Option<&'a [RowSet]>,
}

/// Which rows (y of slice z, bit `z·ny + y`) of one volume's slab hold a non-zero value: one
/// scan of the volume per slab for every stage that skips empty rows.
pub type RowSet = std::sync::OnceLock<Vec<u64>>;

/// A volume's row set made now: the reader makes the predictions' right after inflating each
/// one, while its slab is still in cache, when some stage [`SlabStage::wants_rows`] (a scan
/// of data gone to memory cost ~3 % of a case's CPU).
pub fn row_set(v: &Voxels, nx: usize) -> RowSet {
    RowSet::from(row_bits(v, nx))
}

/// The row bits of `v` (rows of `nx` voxels, in order): a vectorised zero test per row of
/// bytes; any value other than 0 (NaN too) sets a row of other types.
fn row_bits(v: &Voxels, nx: usize) -> Vec<u64> {
    let mut bits = vec![0u64; (v.len() / nx.max(1)).div_ceil(64)];
    let mut mark = |r: usize, set: bool| bits[r / 64] |= (set as u64) << (r % 64);
    match v {
        Voxels::U8(d) => d.chunks_exact(nx).enumerate().for_each(|(r, row)| mark(r, !all_zero(row))),
        _ => crate::with_voxels!(v, d => d
            .chunks_exact(nx)
            .enumerate()
            .for_each(|(r, row)| mark(r, row.iter().any(|&x| x as f64 != 0.0)))),
    }
    bits
}

impl<'a> CaseSlab<'a> {
    /// A slab with nothing shared.
    pub fn new(z0: usize, nz: usize, volumes: &'a [Voxels], layout: &'a Layout) -> CaseSlab<'a> {
        CaseSlab { z0, nz, volumes, layout, consensus: None, attention_above: None, rows: None }
    }

    /// Whether row `y` of slice `z` (of the slab) of volume `v` holds a non-zero value: from
    /// the shared row sets when the engine gives them, else by a scan of the row.
    pub fn row_nonzero(&self, v: usize, z: usize, y: usize) -> bool {
        let [nx, ny, _] = self.layout.shape;
        match self.rows {
            Some(sets) => {
                let bits = sets[v].get_or_init(|| row_bits(&self.volumes[v], nx));
                let r = z * ny + y;
                bits[r / 64] >> (r % 64) & 1 != 0
            }
            None => {
                let at = (z * ny + y) * nx;
                crate::with_voxels!(&self.volumes[v], d => d[at..at + nx].iter().any(|&x| x as f64 != 0.0))
            }
        }
    }

    /// The consensus mask of class `c` over the whole slab, when it was computed once for all.
    pub fn shared_consensus(&self, c: usize) -> Option<&'a [u8]> {
        self.consensus.and_then(|m| m.get(c)).filter(|m| !m.is_empty()).map(|m| &m[..])
    }

    /// The consensus mask of class `c` over voxels `range` of the slab into `out`: copied when
    /// it was computed once for all, else computed ([`prob::consensus`]).
    pub fn consensus_into(&self, c: usize, range: std::ops::Range<usize>, out: &mut [u8]) -> Result<(), String> {
        match self.shared_consensus(c) {
            Some(m) => {
                out.copy_from_slice(&m[range]);
                Ok(())
            }
            None => prob::consensus(self, c, range, out),
        }
    }

    /// Voxels per z-slice.
    pub fn nxy(&self) -> usize {
        self.layout.shape[0] * self.layout.shape[1]
    }
    pub fn len(&self) -> usize {
        self.nxy() * self.nz
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn ct(&self) -> &Voxels {
        &self.volumes[self.layout.ct]
    }
    pub fn prediction(&self, model: usize, class: usize) -> &Voxels {
        &self.volumes[self.layout.predictions[model][class]]
    }
    pub fn label(&self, class: usize) -> Option<&Voxels> {
        self.layout.labels[class].map(|i| &self.volumes[i])
    }
}

/// What stages learn about one (case, class): the columns of `metrics.csv`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassRow {
    pub consensus_voxels: Option<u64>,
    pub volume_ml: Option<f64>,
    pub attention_sum: Option<f64>,
    pub inconsistency_sum: Option<f64>,
    pub uncertainty_sum: Option<f64>,
    pub overlap_voxels: Option<u64>,
    pub dice: Option<f64>,
    pub nsd: Option<f64>,
    /// Each model's own mask (p > 0.5) in mL, in `[input] models` order (metrics stage).
    pub model_volume_ml: Vec<f64>,
    /// Dice between each pair of models' masks, in [`metrics::model_pairs`] order; empty
    /// where both masks are empty.
    pub model_agreement: Vec<Option<f64>>,
    /// The final label's source and size (assemble stage).
    #[serde(default)]
    pub assembly: Option<Assembly>,
    /// Error and attention components (evaluate stage; annotated classes).
    #[serde(default)]
    pub evaluation: Option<evaluate::Evaluation>,
    /// Where the class's attention is largest (attention stage): what the report shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<attention::Peak>,
}

/// What the assemble stage used for one (case, class): `assembly.csv`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Assembly {
    /// "original", "revised" or "pseudo".
    pub source: String,
    pub voxels: u64,
    pub volume_ml: f64,
}

/// The reductions of one case (kept in the progress journal, so a resumed run has them).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaseResult {
    pub classes: Vec<ClassRow>,
    /// Σ over classes of `attention_sum`, when an attention stage ran.
    pub attention_size: Option<f64>,
    /// The rows of each custom stage's table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: custom::CustomRows,
}

impl CaseResult {
    /// Takes from `new` what stage `kind` computed (a case whose stage `kind` alone was rerun).
    pub fn adopt(&mut self, kind: &str, new: &CaseResult) {
        if kind == "attention" {
            self.attention_size = new.attention_size;
        }
        match new.custom.get(kind) {
            Some(rows) => self.custom.insert(kind.to_string(), rows.clone()),
            None => self.custom.remove(kind),
        };
        self.classes.resize(new.classes.len(), ClassRow::default());
        for (row, n) in self.classes.iter_mut().zip(&new.classes) {
            if n.consensus_voxels.is_some() {
                // The same count from either stage that computes it.
                row.consensus_voxels = n.consensus_voxels;
            }
            match kind {
                "attention" => {
                    row.peak = n.peak;
                    row.attention_sum = n.attention_sum;
                    row.inconsistency_sum = n.inconsistency_sum;
                    row.uncertainty_sum = n.uncertainty_sum;
                    row.overlap_voxels = n.overlap_voxels;
                }
                "metrics" => {
                    row.volume_ml = n.volume_ml;
                    row.dice = n.dice;
                    row.nsd = n.nsd;
                    row.model_volume_ml = n.model_volume_ml.clone();
                    row.model_agreement = n.model_agreement.clone();
                }
                "assemble" => row.assembly = n.assembly.clone(),
                "evaluate" => row.evaluation = n.evaluation.clone(),
                // A custom kind's rows are the case's, below.
                _ => {}
            }
        }
    }

    /// Forgets what stage `kind` computed (its outputs are about to be redone, or are gone).
    pub fn forget(&mut self, kind: &str) {
        let empty = CaseResult { classes: vec![ClassRow::default(); self.classes.len()], ..Default::default() };
        self.adopt(kind, &empty);
        // Both attention and metrics count the consensus (adopt keeps a count it is not given);
        // whichever reruns counts it again.
        if matches!(kind, "attention" | "metrics") {
            self.classes.iter_mut().for_each(|row| row.consensus_voxels = None);
        }
    }
}

/// A finished case, as the tables need it.
pub struct Finished<'a> {
    pub id: &'a str,
    pub dataset: &'a str,
    pub result: &'a CaseResult,
    /// What the case's review exports are made from: a digest of its CT's and predictions'
    /// content digests and of its attention stage. Exports made from the same need not be
    /// made again.
    pub source: String,
}

/// What a stage gets when a case starts.
pub struct CaseContext<'a> {
    pub case_id: &'a str,
    /// The run's output directory.
    pub out_dir: &'a std::path::Path,
    pub store: &'a CaseStore,
    pub layout: &'a Layout,
    pub ct_header: &'a Header,
    pub zarr: &'a ZarrOptions,
    /// Set when a paper-mode attention stage and `evaluate` run together: the attention stage
    /// shares, per slab, its attention above this threshold ([`shared::Shared::AttentionAbove`])
    /// and evaluate takes it instead of computing the attention again.
    pub paper_above: Option<f64>,
}

/// A stage at work on one case.
pub trait SlabStage: Send {
    /// One slab, in z order.
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String>;
    /// After the last slab: write what is pending, record the case's reductions.
    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String>;
    /// The stage's state between two slabs, for a slab checkpoint of a long case: its running
    /// reductions and the slices it keeps, not its outputs already written or its scratch.
    fn save(&self) -> Vec<u8>;
    /// Takes the state [`SlabStage::save`] gave, into a stage just started for the same case:
    /// from there it goes on exactly as the saved one would have (results byte for byte).
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;
    /// Whether it reads class `c`'s consensus mask from each slab
    /// ([`CaseSlab::consensus_into`]): the engine then computes it once per slab for every
    /// stage that does.
    fn wants_consensus(&self, _c: usize) -> bool {
        false
    }
    /// Whether it asks which rows of the predictions hold a non-zero voxel
    /// ([`CaseSlab::row_nonzero`]): the reader then finds them as it reads each slab.
    fn wants_rows(&self) -> bool {
        false
    }
    /// What it gives the stages after it of the slab it just processed ([`shared::Shared`]).
    fn share(&mut self) -> Option<shared::Shared> {
        None
    }
}

/// Whether every byte is 0. An OR over 256-byte blocks of words, which the compiler turns into vector
/// instructions; `iter().all(|&b| b == 0)` exits early and so goes byte by byte, and on the
/// mostly empty prediction slices of a CT that scan was a tenth of the pipeline's time.
#[inline]
pub fn all_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = bytemuck::pod_align_to::<u8, u64>(bytes);
    head.iter().chain(tail).all(|&b| b == 0)
        && words.chunks(32).all(|block| block.iter().fold(0u64, |a, &w| a | w) == 0)
}

/// Σ of the bytes (of 0/1 masks, or counts ≤ 255), summed in u32 lanes over 64 KiB blocks: the
/// compiler vectorises a widening to u32 (a widening to u64 it leaves byte by byte).
pub fn sum_bytes(bytes: &[u8]) -> u64 {
    bytes.chunks(1 << 16).map(|c| c.iter().map(|&b| b as u32).sum::<u32>() as u64).sum()
}

/// Σ of `a[i] & b[i]` (voxels in both of two 0/1 masks), as [`sum_bytes`].
pub fn sum_and(a: &[u8], b: &[u8]) -> u64 {
    a.chunks(1 << 16)
        .zip(b.chunks(1 << 16))
        .map(|(x, y)| x.iter().zip(y).map(|(&p, &q)| (p & q) as u32).sum::<u32>() as u64)
        .sum()
}

/// A stage state as bytes (postcard: compact, and f64 kept bit for bit).
pub fn encode_state<T: serde::Serialize + ?Sized>(state: &T) -> Vec<u8> {
    postcard::to_stdvec(state).expect("stage states serialise")
}

/// The state [`encode_state`] made; an error says the checkpoint does not fit this stage.
pub fn decode_state<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("a slab checkpoint does not match this stage ({e})"))
}

impl StageConfig {
    /// Its kind in the registry.
    pub fn kind(&self) -> &'static StageKind {
        let name = match self {
            StageConfig::Normalize(_) => "normalize",
            StageConfig::Attention(_) => "attention",
            StageConfig::Metrics(_) => "metrics",
            StageConfig::Assemble(_) => "assemble",
            StageConfig::Evaluate(_) => "evaluate",
            StageConfig::Rank(_) => "rank",
            StageConfig::Review(_) => "review",
            StageConfig::Custom(c) => return c.kind,
        };
        StageKind::named(name).expect("every StageConfig has a kind in REGISTRY")
    }

    /// What makes two stages of one kind the same stage: its parameters, defaults filled in
    /// (a key written out with its default value is the same stage as one left out). The
    /// xxh3-64 of the validated configuration, in hex.
    pub fn digest(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(format!("{self:?}").as_bytes()))
    }

    /// `kind@digest`: the stage, as slab checkpoints and the manifest name it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.kind().kind, self.digest())
    }

    /// The runtime stage for one case; `None` for corpus-level stages (rank).
    pub fn start(&self, ctx: &CaseContext) -> Result<Option<Box<dyn SlabStage>>, String> {
        Ok(match self {
            StageConfig::Normalize(c) => Some(Box::new(normalize::NormalizeStage::start(c, ctx)?)),
            StageConfig::Attention(c) => Some(attention::start(c, ctx)?),
            StageConfig::Metrics(c) => Some(Box::new(metrics::MetricsStage::start(c, ctx)?)),
            StageConfig::Assemble(c) => Some(Box::new(assemble::AssembleStage::start(c, ctx)?)),
            StageConfig::Evaluate(c) => Some(Box::new(evaluate::EvaluateStage::start(c, ctx)?)),
            StageConfig::Rank(_) | StageConfig::Review(_) => None,
            StageConfig::Custom(c) => Some(c.start(ctx)?),
        })
    }

    /// Bytes the stage holds for one case while streaming (for the memory budget).
    pub fn memory(
        &self,
        layout_shape: [usize; 3],
        spacing: [f64; 3],
        depth: usize,
        models: usize,
        classes: usize,
    ) -> u64 {
        let [nx, ny, _] = layout_shape;
        let slab = (nx * ny * depth) as u64;
        let threads = rayon::current_num_threads() as u64;
        match self {
            StageConfig::Normalize(_) => slab * 4,
            StageConfig::Attention(c) => attention::memory(c, nx * ny, depth, models, classes, threads),
            StageConfig::Metrics(c) => {
                // Per class: per-slice scratch (masks, p and Σp in f64) and the NSD window of
                // 2·rz + 2 corner slices of codes for two masks, plus the previous mask slices.
                let nxy = (nx * ny) as u64;
                let rz = if spacing[2] > 0.0 { (c.nsd_tolerance_mm / spacing[2]).floor() as u64 } else { 0 };
                let corners = ((nx + 1) * (ny + 1)) as u64;
                classes as u64 * (nxy * (2 + models as u64 + 16) + (2 * rz + 2) * 2 * corners + 2 * nxy)
            }
            // Per class: its mask of the slab; the combined ids; with exports, a compressed copy
            // of each.
            StageConfig::Assemble(c) => {
                let per = if c.export_nifti { 2 } else { 1 };
                slab * (classes as u64 + 1) * per
            }
            // Per class: its attention region on the slab; per thread, a slice of consensus and
            // of errors; the component streams hold a slice's runs.
            StageConfig::Evaluate(_) => {
                let nxy = (nx * ny) as u64;
                slab * classes as u64 + threads * 2 * nxy + classes as u64 * 2 * nxy
            }
            StageConfig::Rank(_) | StageConfig::Review(_) => 0,
            StageConfig::Custom(c) => c.factory.memory(layout_shape, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::all_zero;

    #[test]
    fn all_zero_sees_a_set_byte_anywhere() {
        let buf = vec![0u8; 1100];
        for start in [0, 1, 7, 8, 13] {
            for len in [0, 1, 63, 64, 65, 255, 256, 257, 1000] {
                let s = &buf[start..start + len];
                assert!(all_zero(s));
                for at in 0..len {
                    let mut v = buf.clone();
                    v[start + at] = 1;
                    assert!(!all_zero(&v[start..start + len]), "start {start} len {len} at {at}");
                }
            }
        }
    }
}
