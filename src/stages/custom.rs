//! Stage kinds written outside slabflow, in Rust: implement [`StageFactory`] (the kind: its
//! name, what it reads, how a `[[stages]]` table is checked, how it starts on a case) and
//! [`CustomStage`] (its work on one case: every slab in z order as `ndarray` views, then its
//! rows of a CSV table), put the kind in a [`Registry`], and load the pipeline with it
//! (`Pipeline::load_with`). `examples/hu_stats.rs` is one, end to end.
//!
//! ```no_run
//! use ndarray::ArrayView3;
//! use slabflow::stages::custom::{CaseInfo, CustomStage, Registry, SlabView, StageFactory};
//! use slabflow::input::InputKind;
//!
//! /// Voxels per case above a CT value.
//! struct Bright;
//! struct BrightCase(u64, f64);
//!
//! impl StageFactory for Bright {
//!     fn kind(&self) -> &'static str { "bright" }
//!     fn summary(&self) -> &'static str { "voxels above `hu` HU" }
//!     fn reads(&self) -> &'static [InputKind] { &[InputKind::Ct] }
//!     fn table(&self) -> Option<(&'static str, Vec<String>)> {
//!         Some(("bright.csv", vec!["case_id".into(), "voxels".into()]))
//!     }
//!     fn start(&self, table: &toml::Table, _case: &CaseInfo) -> Result<Box<dyn CustomStage>, String> {
//!         let hu = table.get("hu").and_then(|v| v.as_float()).unwrap_or(300.0);
//!         Ok(Box::new(BrightCase(0, hu)))
//!     }
//! }
//!
//! impl CustomStage for BrightCase {
//!     fn process(&mut self, slab: &SlabView) -> Result<(), String> {
//!         let ct = slab.ct_hu(); // an Array3<f64>, [z, y, x]
//!         self.0 += ct.iter().filter(|&&v| v > self.1).count() as u64;
//!         Ok(())
//!     }
//!     fn finish(&mut self, case: &CaseInfo) -> Result<Vec<Vec<String>>, String> {
//!         Ok(vec![vec![case.case_id.clone(), self.0.to_string()]])
//!     }
//! }
//!
//! let registry = Registry::default().with(Bright);
//! ```
//!
//! Invariants: a custom stage sees what a built-in one sees (every slab of a case once, in z
//! order, shared with the other stages, never copied for it); its rows go into the case's
//! record, so a resumed or rerun run keeps them; a case caught mid-way by an interruption
//! resumes from its slab checkpoint when every custom stage of its pipeline saves its state
//! ([`StageFactory::checkpoints`]), and is redone from its first slice otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ndarray::{Array3, ArrayView3, CowArray, Ix3};

use super::{CaseResult, CaseSlab, SlabStage, StageKind};
use crate::input::{InputConfig, InputKind};
use crate::nifti::Voxels;

/// What a custom stage knows of the case it starts on.
#[derive(Debug, Clone)]
pub struct CaseInfo {
    pub case_id: String,
    /// Voxels along x, y, z.
    pub shape: [usize; 3],
    /// Millimetres along x, y, z.
    pub spacing: [f64; 3],
    pub models: Vec<String>,
    pub classes: Vec<String>,
}

/// A stage kind from outside slabflow.
pub trait StageFactory: Send + Sync + 'static {
    /// Its `kind` in pipeline files (not one of slabflow's).
    fn kind(&self) -> &'static str;
    /// One line for `slabflow stages`-like listings.
    fn summary(&self) -> &'static str;
    /// The input volumes it reads (a rerun reruns it when one of them changed).
    fn reads(&self) -> &'static [InputKind];
    /// The problems of a `[[stages]]` table of this kind (its keys, `kind` aside), each naming
    /// its key; checked with every other problem of the file before anything runs.
    fn check(&self, _table: &toml::Table, _input: &InputConfig) -> Vec<String> {
        Vec::new()
    }
    /// Its work on one case.
    fn start(&self, table: &toml::Table, case: &CaseInfo) -> Result<Box<dyn CustomStage>, String>;
    /// Bytes it holds while a case streams, for the memory budget (`shape`: the case's voxels
    /// along x, y, z, as [`CaseInfo::shape`]; `depth`: slices per slab).
    fn memory(&self, _shape: [usize; 3], _depth: usize) -> u64 {
        0
    }
    /// The CSV it writes beside the tables: its file name and header. The rows are every
    /// finished case's [`CustomStage::finish`], cases in id order.
    fn table(&self) -> Option<(&'static str, Vec<String>)> {
        None
    }
    /// Whether its stages implement [`CustomStage::save`] and [`CustomStage::restore`]: a long
    /// case is then checkpointed at slab boundaries and resumed there, as with slabflow's own
    /// stages. When false (the default), a case of a pipeline with this kind that is
    /// interrupted is redone from its first slice.
    fn checkpoints(&self) -> bool {
        false
    }
    /// Whether its stages call [`SlabView::consensus`]: the engine then computes each slab's
    /// consensus masks once for every stage that wants them, instead of per call — for every
    /// class, so a prediction out of [0, 1] fails the case here too, as it does in `attention`.
    fn wants_consensus(&self) -> bool {
        false
    }
    /// Its version: part of what makes a stage "the same" for reruns, with its table as
    /// written (change it when a fix changes what the stage computes, and every case reruns it).
    fn version(&self) -> &'static str {
        "1"
    }
}

/// A custom stage at work on one case.
pub trait CustomStage: Send {
    /// One slab, in z order.
    fn process(&mut self, slab: &SlabView) -> Result<(), String>;
    /// After the last slab: the case's rows of the kind's table.
    fn finish(&mut self, case: &CaseInfo) -> Result<Vec<Vec<String>>, String>;
    /// Its state between two slabs (its running reductions, not its scratch), for a slab
    /// checkpoint; called only when its kind [checkpoints](StageFactory::checkpoints).
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Takes the state [`CustomStage::save`] gave, into a stage just started for the same case;
    /// from there it must go on exactly as the saved one would have.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Err("this stage keeps no slab checkpoint".into())
    }
}

/// The custom stage kinds a pipeline may use, beside slabflow's own.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: Vec<(Arc<dyn StageFactory>, &'static StageKind)>,
}

impl Registry {
    /// Adds a kind.
    ///
    /// # Panics
    /// If its name is one of slabflow's kinds, another kind's of this registry, or a node of
    /// the engine (`read`, `convert`): a pipeline file could not tell them apart.
    pub fn with(mut self, kind: impl StageFactory) -> Registry {
        let name = kind.kind();
        let taken = super::REGISTRY.iter().any(|k| k.kind == name) || self.get(name).is_some();
        assert!(
            !taken && !["read", "convert"].contains(&name),
            "a custom stage kind cannot be named \"{name}\": slabflow or this registry has a kind or node of that name"
        );
        let entry = kind_entry(&kind);
        self.kinds.push((Arc::new(kind), entry));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StageFactory>> {
        self.kinds.iter().find(|(k, _)| k.kind() == kind).map(|(k, _)| k)
    }

    fn entry(&self, kind: &str) -> Option<&'static StageKind> {
        self.kinds.iter().find(|(k, _)| k.kind() == kind).map(|(_, e)| *e)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.iter().map(|(k, _)| k.kind())
    }
}

/// A custom stage in a pipeline: its kind and its `[[stages]]` table.
#[derive(Clone)]
pub struct CustomConfig {
    pub factory: Arc<dyn StageFactory>,
    pub table: toml::Table,
    /// Its entry among the kinds (built once per kind and process).
    pub kind: &'static StageKind,
}

impl fmt::Debug for CustomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, version) = (self.factory.kind(), self.factory.version());
        write!(f, "Custom {{ kind: {kind:?}, version: {version:?}, table: {} }}", self.table)
    }
}

impl PartialEq for CustomConfig {
    fn eq(&self, other: &Self) -> bool {
        self.factory.kind() == other.factory.kind() && self.table == other.table
    }
}

fn not_in_registry(_: &toml::Table, _: &InputConfig) -> Result<super::StageConfig, Vec<String>> {
    Err(vec!["a custom kind is built through its Registry".into()])
}

/// The [`StageKind`] entry of a custom kind (made when it is registered, and kept for the
/// process: a few hundred bytes).
fn kind_entry(f: &dyn StageFactory) -> &'static StageKind {
    Box::leak(Box::new(StageKind {
        kind: f.kind(),
        summary: f.summary(),
        params: &[],
        per_case: true,
        reads: f.reads(),
        writes: &[],
        needs: &[],
        makes: &[],
        build: not_in_registry,
    }))
}

impl CustomConfig {
    /// The custom stage of `table` (with its `kind`) from `registry`, or its problems.
    pub fn build(
        registry: &Registry,
        kind: &str,
        table: &toml::Table,
        input: &InputConfig,
    ) -> Result<Self, Vec<String>> {
        let (Some(factory), Some(entry)) = (registry.get(kind), registry.entry(kind)) else {
            return Err(vec![format!("\"{kind}\" is not in the registry")]);
        };
        let mut t = table.clone();
        t.remove("kind");
        let problems = factory.check(&t, input);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CustomConfig { factory: factory.clone(), table: t, kind: entry })
    }

    pub(super) fn start(&self, ctx: &super::CaseContext) -> Result<Box<dyn SlabStage>, String> {
        let l = ctx.layout;
        let case = CaseInfo {
            case_id: ctx.case_id.to_string(),
            shape: l.shape,
            spacing: l.spacing,
            models: l.models.clone(),
            classes: l.classes.clone(),
        };
        let stage = self.factory.start(&self.table, &case)?;
        let consensus = self.factory.wants_consensus() && self.factory.reads().contains(&InputKind::Prediction);
        Ok(Box::new(Adapter { kind: self.factory.kind(), case, stage, consensus }))
    }
}

/// A custom stage as the engine runs it.
struct Adapter {
    kind: &'static str,
    case: CaseInfo,
    stage: Box<dyn CustomStage>,
    /// It takes each slab's consensus masks ([`StageFactory::wants_consensus`]).
    consensus: bool,
}

impl SlabStage for Adapter {
    fn process(&mut self, slab: &CaseSlab) -> Result<(), String> {
        self.stage.process(&SlabView { slab })
    }

    fn finish(&mut self, result: &mut CaseResult) -> Result<(), String> {
        let rows = self.stage.finish(&self.case)?;
        result.custom.insert(self.kind.to_string(), rows);
        Ok(())
    }

    fn save(&self) -> Vec<u8> {
        self.stage.save()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.stage.restore(state).map_err(|e| format!("the custom stage \"{}\": {e}", self.kind))
    }

    fn wants_consensus(&self, _c: usize) -> bool {
        self.consensus
    }
}

/// The rows custom stages gave, by kind (in a case's record).
pub type CustomRows = BTreeMap<String, Vec<Vec<String>>>;

/// One volume's slab, as the `ndarray` view of its values as stored in the file, `[z, y, x]`.
#[derive(Debug, Clone)]
pub enum VolumeView<'a> {
    U8(ArrayView3<'a, u8>),
    I8(ArrayView3<'a, i8>),
    I16(ArrayView3<'a, i16>),
    U16(ArrayView3<'a, u16>),
    I32(ArrayView3<'a, i32>),
    U32(ArrayView3<'a, u32>),
    I64(ArrayView3<'a, i64>),
    F32(ArrayView3<'a, f32>),
    F64(ArrayView3<'a, f64>),
}

/// One slab of a case, as a custom stage sees it: `ndarray` views of every volume (no copy),
/// and the values stages derive from them.
pub struct SlabView<'a> {
    slab: &'a CaseSlab<'a>,
}

impl<'a> SlabView<'a> {
    /// The first slice of the slab.
    pub fn z0(&self) -> usize {
        self.slab.z0
    }

    /// `[nz, ny, nx]` of the slab (the shape of every view).
    pub fn shape(&self) -> [usize; 3] {
        let [nx, ny, _] = self.slab.layout.shape;
        [self.slab.nz, ny, nx]
    }

    /// Millimetres along x, y, z.
    pub fn spacing(&self) -> [f64; 3] {
        self.slab.layout.spacing
    }

    fn view(&self, v: &'a Voxels) -> VolumeView<'a> {
        let s = self.shape();
        let sh = (s[0], s[1], s[2]);
        let bad = "a slab holds nz × ny × nx voxels";
        match v {
            Voxels::U8(d) => VolumeView::U8(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::I8(d) => VolumeView::I8(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::I16(d) => VolumeView::I16(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::U16(d) => VolumeView::U16(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::I32(d) => VolumeView::I32(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::U32(d) => VolumeView::U32(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::I64(d) => VolumeView::I64(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::F32(d) => VolumeView::F32(ArrayView3::from_shape(sh, d).expect(bad)),
            Voxels::F64(d) => VolumeView::F64(ArrayView3::from_shape(sh, d).expect(bad)),
        }
    }

    /// The CT's stored values (the kind must read [`InputKind::Ct`]).
    pub fn ct(&self) -> VolumeView<'a> {
        self.view(self.slab.ct())
    }

    /// The CT in Hounsfield units: the file's scaling applied (nibabel's `get_fdata()`).
    pub fn ct_hu(&self) -> Array3<f64> {
        let s = self.shape();
        let mut out = Array3::zeros((s[0], s[1], s[2]));
        let flat = out.as_slice_mut().expect("a new array is contiguous");
        self.slab.ct().scaled_into(self.slab.layout.ct_scaling, flat);
        out
    }

    /// Model `model`'s stored prediction of class `class` (the kind must read predictions).
    pub fn prediction(&self, model: usize, class: usize) -> VolumeView<'a> {
        self.view(self.slab.prediction(model, class))
    }

    /// The original label of `class`, if the case has one (the kind must read labels).
    pub fn label(&self, class: usize) -> Option<VolumeView<'a>> {
        self.slab.label(class).map(|v| self.view(v))
    }

    /// The consensus mask of `class`: mean probability over the models > 0.5, as every stage
    /// computes it (the kind must read predictions). A view of the masks the engine computed
    /// once for the slab when the kind [wants them](StageFactory::wants_consensus); computed
    /// for this call otherwise.
    pub fn consensus(&self, class: usize) -> Result<CowArray<'a, u8, Ix3>, String> {
        let s = self.shape();
        let sh = (s[0], s[1], s[2]);
        if let Some(m) = self.slab.shared_consensus(class) {
            return Ok(ArrayView3::from_shape(sh, m).expect("a slab holds nz × ny × nx voxels").into());
        }
        let mut out = Array3::zeros(sh);
        let n = self.slab.len();
        super::prob::consensus(self.slab, class, 0..n, out.as_slice_mut().expect("a new array is contiguous"))?;
        Ok(out.into())
    }
}
