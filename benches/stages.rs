//! Criterion micro-benchmarks of the per-slab science, as throughput of prediction bytes:
//! the attention stage (paper and released modes) on uint8 and float32 soft predictions,
//! the metrics stage (consensus, Dice, exact NSD), the NSD stream alone, and normalize. A 512×512 slab of
//! 16 slices, 3 models × 9 classes, organs as soft blobs the models place slightly apart.
//!
//!   cargo bench --bench stages

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use slabflow::nifti::{DataType, Header, Voxels};
use slabflow::stages::attention::{self, AttentionConfig, Mode};
use slabflow::stages::metrics::{MetricsConfig, MetricsStage};
use slabflow::stages::normalize::{NormalizeConfig, NormalizeStage};
use slabflow::stages::surface::SurfaceDice;
use slabflow::stages::{CaseContext, CaseSlab, Layout, ProbDecoder, SlabStage};
use slabflow::zarr::{CaseStore, Codec, ZarrOptions};

const NX: usize = 512;
const NY: usize = 512;
const DEPTH: usize = 16;
const MODELS: usize = 3;
const CLASSES: usize = 9;

/// p of model `m` for class `c` at voxel (x, y, z): a soft ellipsoid per class, each model's
/// shifted a little, so models disagree along the edges.
fn p(m: usize, c: usize, x: usize, y: usize, z: usize) -> f64 {
    let (cx, cy) = (100.0 + 35.0 * c as f64 + 3.0 * m as f64, 150.0 + 25.0 * (c % 4) as f64);
    let (rx, ry, rz) = (30.0 + 4.0 * c as f64, 25.0, 40.0);
    let d = ((x as f64 - cx) / rx).powi(2) + ((y as f64 - cy) / ry).powi(2) + ((z as f64 - 8.0) / rz).powi(2);
    (1.0 / (1.0 + ((d - 1.0) * 6.0).exp())).clamp(0.0, 1.0)
}

/// The slab's volumes: CT (int16, read by normalize) then predictions in `[model][class]`
/// order, as uint8 (p × 255) or float32, then a label per class (model 0's mask).
fn volumes(float: bool) -> Vec<Voxels> {
    let n = NX * NY * DEPTH;
    // CT: a ramp through -1000…999 HU, both sides of the normalize window.
    let mut vols = vec![Voxels::I16((0..n).map(|i| (i % 2000) as i16 - 1000).collect())];
    for m in 0..MODELS {
        for c in 0..CLASSES {
            let at = |i: usize| p(m, c, i % NX, (i / NX) % NY, i / (NX * NY));
            vols.push(if float {
                Voxels::F32((0..n).map(|i| at(i) as f32).collect())
            } else {
                Voxels::U8((0..n).map(|i| (at(i) * 255.0).round() as u8).collect())
            });
        }
    }
    for c in 0..CLASSES {
        vols.push(Voxels::U8((0..n).map(|i| (p(0, c, i % NX, (i / NX) % NY, i / (NX * NY)) > 0.5) as u8).collect()));
    }
    vols
}

fn layout(float: bool) -> Layout {
    let dt = if float { DataType::F32 } else { DataType::U8 };
    let h = Header::new_3d(
        [NX, NY, DEPTH],
        [0.8, 0.8, 1.0],
        [[0.8, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        dt,
    );
    Layout {
        shape: [NX, NY, DEPTH],
        spacing: [0.8, 0.8, 1.0],
        models: (0..MODELS).map(|m| format!("m{m}")).collect(),
        classes: (0..CLASSES).map(|c| format!("c{c}")).collect(),
        ct: 0,
        ct_scaling: None,
        predictions: (0..MODELS).map(|m| (0..CLASSES).map(|c| 1 + m * CLASSES + c).collect()).collect(),
        prob: vec![vec![ProbDecoder::for_header(&h, false); CLASSES]; MODELS],
        labels: (0..CLASSES).map(|c| Some(1 + MODELS * CLASSES + c)).collect(),
        revised: vec![None; CLASSES],
        paths: vec![Default::default(); 1 + (MODELS + 1) * CLASSES],
    }
}

fn prediction_bytes(float: bool) -> u64 {
    (NX * NY * DEPTH * MODELS * CLASSES * if float { 4 } else { 1 }) as u64
}

/// A case group to start stages in (outputs uncompressed) and the CT header they see.
struct Fixture {
    dir: tempfile::TempDir,
    store: CaseStore,
    opts: ZarrOptions,
    ct: Header,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = CaseStore::create(&dir.path().join("case.zarr"), Default::default(), false, None).unwrap();
        let opts = ZarrOptions::new(DEPTH, Codec::None, 0, None);
        let ct = Header::new_3d(
            [NX, NY, DEPTH],
            [0.8, 0.8, 1.0],
            [[0.8, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            DataType::I16,
        );
        Fixture { dir, store, opts, ct }
    }

    /// Benchmarks one slab through a stage freshly started by `start` for each iteration.
    fn bench(
        &self,
        g: &mut BenchmarkGroup<WallTime>,
        id: BenchmarkId,
        float: bool,
        start: impl Fn(&CaseContext) -> Box<dyn SlabStage>,
    ) {
        self.bench_with(g, id, float, prediction_bytes(float), start)
    }

    /// The same, with the throughput counted in `bytes`.
    fn bench_with(
        &self,
        g: &mut BenchmarkGroup<WallTime>,
        id: BenchmarkId,
        float: bool,
        bytes: u64,
        start: impl Fn(&CaseContext) -> Box<dyn SlabStage>,
    ) {
        let (vols, layout) = (volumes(float), layout(float));
        let ctx = CaseContext {
            case_id: "bench",
            out_dir: self.dir.path(),
            store: &self.store,
            layout: &layout,
            ct_header: &self.ct,
            zarr: &self.opts,
            paper_above: None,
        };
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(id, |b| {
            b.iter_batched(
                || start(&ctx),
                |mut stage| {
                    let slab = CaseSlab::new(0, DEPTH, &vols, &layout);
                    stage.process(black_box(&slab)).unwrap();
                    stage
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
}

fn dtype(float: bool) -> &'static str {
    if float { "float32" } else { "uint8" }
}

fn attention(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("attention_slab");
    g.sample_size(10);
    for float in [false, true] {
        for mode in [Mode::Paper, Mode::Released] {
            let config =
                AttentionConfig { mode, std_threshold: 0.1, entropy_threshold: 0.05, iterations: 2, write_maps: false };
            let id = BenchmarkId::new(format!("{mode:?}").to_lowercase(), dtype(float));
            fx.bench(&mut g, id, float, |ctx| attention::start(&config, ctx).unwrap());
        }
    }
    // With its maps made and written (uncompressed), as the contract pipeline does.
    let config = AttentionConfig {
        mode: Mode::Paper,
        std_threshold: 0.1,
        entropy_threshold: 0.05,
        iterations: 2,
        write_maps: true,
    };
    fx.bench(&mut g, BenchmarkId::new("paper_maps", dtype(false)), false, |ctx| {
        attention::start(&config, ctx).unwrap()
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("metrics_slab");
    g.sample_size(10);
    let config = MetricsConfig { nsd_tolerance_mm: 1.0 };
    for float in [false, true] {
        let id = BenchmarkId::from_parameter(dtype(float));
        fx.bench(&mut g, id, float, |ctx| Box::new(MetricsStage::start(&config, ctx).unwrap()));
    }
    g.finish();
}

fn nsd(c: &mut Criterion) {
    // One class: label = model 0's mask, prediction = model 2's, 16 slices.
    let masks = |m: usize| -> Vec<Vec<u8>> {
        (0..DEPTH).map(|z| (0..NX * NY).map(|i| (p(m, 4, i % NX, i / NX, z) > 0.5) as u8).collect()).collect()
    };
    let (g_masks, p_masks) = (masks(0), masks(2));
    let mut g = c.benchmark_group("nsd_slab");
    g.throughput(Throughput::Bytes((2 * NX * NY * DEPTH) as u64));
    g.bench_function("one_class_16_slices", |b| {
        b.iter(|| {
            let mut s = SurfaceDice::new([NX, NY, DEPTH], [0.8, 0.8, 1.0], 1.0);
            for (gs, ps) in g_masks.iter().zip(&p_masks) {
                s.push(black_box(gs), black_box(ps));
            }
            s.finish()
        })
    });
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("normalize_slab");
    g.sample_size(10);
    let config = NormalizeConfig { a_min: -175.0, a_max: 250.0, b_min: 0.0, b_max: 1.0, clip: true };
    // Throughput of CT bytes (int16); the float32 slab is written uncompressed, as the other
    // stages' outputs here.
    let id = BenchmarkId::from_parameter("int16_to_float32");
    fx.bench_with(&mut g, id, false, (NX * NY * DEPTH * 2) as u64, |ctx| {
        Box::new(NormalizeStage::start(&config, ctx).unwrap())
    });
    g.finish();
}

criterion_group!(benches, attention, metrics, nsd, normalize);
criterion_main!(benches);
