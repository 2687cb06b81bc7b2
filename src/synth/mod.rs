//! `slabflow synth`: synthetic corpora in the contract's layout, written slice by slice.
//!
//! Each case is a CT-like phantom (body, fat rim, spine, nine organs with their own HU, noise)
//! on a varied grid (in-plane 0.6–0.95 mm, slices 1–5 mm, RAS or LPS, int16/uint16/float32,
//! `.nii` or `.nii.gz`), three models' soft predictions that disagree plausibly (shifted and
//! resized shapes, different softness, now and then one organ bleeding into a neighbour), and
//! original labels for some classes of two cases in three. Geometry lives in normalised
//! coordinates over the field of view, so any `--shape` gives the same anatomy.
//!
//! Invariant: the output depends only on (case index, shape, seed): every voxel's noise comes
//! from a counter-based hash, so cases can be generated in any order or in parallel.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::nifti::{DataType, Header, NiftiError, VolumeWriter};

pub const MODELS: [&str; 3] = ["swin_unetr", "nnunet", "unet"];
pub const CLASSES: [&str; 9] =
    ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"];
pub const DATASETS: [&str; 4] = ["BTCV", "FLARE22", "KiTS", "MSD-Pancreas"];

/// Normalised ellipsoid: centre, radii (x, y, z in [-1, 1] over the field of view) and HU.
#[derive(Debug, Clone, Copy)]
struct Organ {
    c: [f64; 3],
    r: [f64; 3],
    hu: f64,
}

/// Anatomy in the order of [`CLASSES`].
const ORGANS: [Organ; 9] = [
    Organ { c: [0.50, 0.15, 0.30], r: [0.15, 0.20, 0.22], hu: 50.0 }, // spleen
    Organ { c: [-0.35, 0.35, -0.10], r: [0.11, 0.13, 0.24], hu: 150.0 }, // kidney_right
    Organ { c: [0.35, 0.35, -0.05], r: [0.11, 0.13, 0.24], hu: 150.0 }, // kidney_left
    Organ { c: [-0.22, -0.28, 0.05], r: [0.08, 0.08, 0.12], hu: 15.0 }, // gall_bladder
    Organ { c: [-0.35, -0.05, 0.28], r: [0.38, 0.40, 0.38], hu: 60.0 }, // liver
    Organ { c: [0.28, -0.22, 0.35], r: [0.20, 0.15, 0.22], hu: 30.0 }, // stomach
    Organ { c: [0.06, 0.22, 0.0], r: [0.07, 0.07, 1.4], hu: 200.0 },  // aorta
    Organ { c: [-0.12, 0.22, 0.0], r: [0.07, 0.06, 1.4], hu: 120.0 }, // postcava
    Organ { c: [0.05, 0.03, 0.0], r: [0.30, 0.06, 0.09], hu: 45.0 },  // pancreas
];

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub cases: usize,
    /// `[x, y, z]` voxels.
    pub shape: [usize; 3],
    pub seed: u64,
    /// Write only the CTs (conversion benchmarks).
    pub ct_only: bool,
    /// Original labels for every class of every case (metrics benchmarks); by default some
    /// classes of two cases in three.
    pub all_labels: bool,
}

/// splitmix64: a tiny, well-mixed hash; used as a counter-based generator so that every
/// random number is a pure function of (seed, case, stream, index).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// A standard normal deviate for voxel `i` of stream `key` (Box–Muller on two hashes).
fn gauss(key: u64, i: u64) -> f64 {
    let a = mix(key ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let b = mix(a);
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Everything random about one case, drawn up front.
struct CaseSpec {
    id: String,
    dataset: &'static str,
    spacing: [f64; 3],
    lps: bool,
    ct_type: DataType,
    ct_gz: bool,
    float_predictions: bool,
    organs: [Organ; 9],
    /// Per model and class: (centre shift, radius scale, softness).
    models: [[([f64; 3], f64, f64); 9]; 3],
    /// `(model, from, into)`: model's prediction of `from` also covers organ `into`.
    bleed: Option<(usize, usize, usize)>,
    /// Classes with an original label.
    labelled: Vec<usize>,
    noise_key: u64,
}

fn case_spec(i: usize, seed: u64) -> CaseSpec {
    let mut rng = Rng(mix(seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F)));
    let inplane = rng.uniform(0.6, 0.95);
    let dz = [1.0, 1.5, 2.0, 2.5, 3.0, 5.0][(rng.next() % 6) as usize];
    let mut organs = ORGANS;
    for o in &mut organs {
        for k in 0..3 {
            o.c[k] += rng.uniform(-0.04, 0.04);
            o.r[k] *= rng.uniform(0.88, 1.12);
        }
    }
    let mut models = [[([0.0; 3], 1.0, 0.05); 9]; 3];
    for (m, per_class) in models.iter_mut().enumerate() {
        // Models differ in how well they segment: the third is the sloppiest.
        let sloppiness = [0.6, 0.8, 1.3][m];
        for entry in per_class.iter_mut() {
            let shift = [0, 1, 2].map(|_| rng.uniform(-0.025, 0.025) * sloppiness);
            *entry = (shift, 1.0 + rng.uniform(-0.08, 0.08) * sloppiness, rng.uniform(0.02, 0.06) * sloppiness);
        }
    }
    // Neighbours that models confuse in practice.
    let pairs = [(4, 3), (5, 0), (8, 6), (1, 4), (0, 2)];
    let bleed = rng.next().is_multiple_of(3).then(|| {
        let (from, into) = pairs[(rng.next() % pairs.len() as u64) as usize];
        ((rng.next() % 3) as usize, from, into)
    });
    let labelled = if i % 3 == 2 { Vec::new() } else { (0..9).filter(|_| !rng.next().is_multiple_of(4)).collect() };
    CaseSpec {
        id: format!("BDMAP_{:08}", i + 1),
        dataset: DATASETS[i % DATASETS.len()],
        spacing: [inplane, inplane, dz],
        lps: i % 2 == 1,
        ct_type: [DataType::I16, DataType::I16, DataType::U16, DataType::F32][i % 4],
        ct_gz: i % 4 != 1,
        float_predictions: i % 5 == 4,
        organs,
        models,
        bleed,
        labelled,
        noise_key: mix(seed ^ 0x5EED ^ i as u64),
    }
}

/// Normalised radius of point `p` in ellipsoid `o` (≤ 1 inside).
#[inline]
fn radius(o: &Organ, p: [f64; 3]) -> f64 {
    let d = |k: usize| (p[k] - o.c[k]) / o.r[k];
    (d(0) * d(0) + d(1) * d(1) + d(2) * d(2)).sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Writes the corpus; returns the case ids.
pub fn synth(opts: &SynthOptions) -> Result<Vec<String>, NiftiError> {
    std::fs::create_dir_all(&opts.out)?;
    let mut specs: Vec<CaseSpec> = (0..opts.cases).map(|i| case_spec(i, opts.seed)).collect();
    if opts.all_labels {
        specs.iter_mut().for_each(|s| s.labelled = (0..CLASSES.len()).collect());
    }
    specs.par_iter().try_for_each(|s| write_case(&opts.out, s, opts.shape, opts.ct_only))?;
    let mut meta = String::from("case_id,dataset\n");
    for s in &specs {
        meta.push_str(&format!("{},{}\n", s.id, s.dataset));
    }
    std::fs::write(opts.out.join("meta.csv"), meta)?;
    Ok(specs.into_iter().map(|s| s.id).collect())
}

fn write_case(root: &Path, s: &CaseSpec, shape: [usize; 3], ct_only: bool) -> Result<(), NiftiError> {
    let dir = root.join(&s.id);
    std::fs::create_dir_all(&dir)?;
    let [nx, ny, nz] = shape;
    let [dx, dy, dz] = s.spacing;
    let sign = if s.lps { -1.0 } else { 1.0 };
    let affine = [
        [sign * dx, 0.0, 0.0, -sign * dx * nx as f64 / 2.0],
        [0.0, sign * dy, 0.0, -sign * dy * ny as f64 / 2.0],
        [0.0, 0.0, dz, -dz * nz as f64 / 2.0],
    ];
    // Voxel (i, j, k) → normalised coordinates.
    let norm = move |i: usize, j: usize, k: usize| {
        [
            2.0 * (i as f64 + 0.5) / nx as f64 - 1.0,
            2.0 * (j as f64 + 0.5) / ny as f64 - 1.0,
            2.0 * (k as f64 + 0.5) / nz as f64 - 1.0,
        ]
    };

    // CT.
    let write_ct = || -> Result<(), NiftiError> {
        let ext = if s.ct_gz { "nii.gz" } else { "nii" };
        let mut h = Header::new_3d(shape, s.spacing, affine, s.ct_type);
        let inter = if s.ct_type == DataType::U16 { -1024.0 } else { 0.0 };
        h.scl_slope = 1.0;
        h.scl_inter = inter;
        let mut w = VolumeWriter::create(&dir.join(format!("ct.{ext}")), &h, 1)?;
        let mut bytes = Vec::with_capacity(nx * ny * 4);
        for k in 0..nz {
            bytes.clear();
            for j in 0..ny {
                for i in 0..nx {
                    let p = norm(i, j, k);
                    let hu = ct_value(s, p, (k * ny + j) * nx + i);
                    let stored = hu - inter;
                    match s.ct_type {
                        DataType::I16 => {
                            bytes.extend_from_slice(&(stored.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes())
                        }
                        DataType::U16 => {
                            bytes.extend_from_slice(&(stored.round().clamp(0.0, 65535.0) as u16).to_le_bytes())
                        }
                        _ => bytes.extend_from_slice(&(stored as f32).to_le_bytes()),
                    }
                }
            }
            w.write_slice(&bytes)?;
        }
        w.finish()
    };
    if ct_only {
        return write_ct();
    }

    // Predictions and labels: one file per task, in parallel (a single long case is what
    // the memory tests and benches wait for).
    for model in MODELS {
        std::fs::create_dir_all(dir.join("predictions").join(model))?;
    }
    std::fs::create_dir_all(dir.join("segmentations"))?;
    let predictions = (0..MODELS.len()).flat_map(|m| (0..CLASSES.len()).map(move |c| (m, Some(c), None)));
    let labels = s.labelled.iter().map(|&c| (0, None, Some(c)));
    let tasks: Vec<(usize, Option<usize>, Option<usize>)> = predictions.chain(labels).collect();
    let others = || {
        tasks.into_par_iter().try_for_each(|(m, prediction, label)| -> Result<(), NiftiError> {
            let mut bytes = Vec::with_capacity(nx * ny * 4);
            if let Some(c) = prediction {
                let dt = if s.float_predictions { DataType::F32 } else { DataType::U8 };
                let h = Header::new_3d(shape, s.spacing, affine, dt);
                let path = dir.join("predictions").join(MODELS[m]).join(format!("{}.nii.gz", CLASSES[c]));
                let mut w = VolumeWriter::create(&path, &h, 1)?;
                let (shift, scale, soft) = s.models[m][c];
                let mut o = s.organs[c];
                for (k, d) in shift.iter().enumerate() {
                    o.c[k] += d;
                    o.r[k] *= scale;
                }
                let bleed = s.bleed.filter(|&(bm, from, _)| bm == m && from == c).map(|(_, _, into)| s.organs[into]);
                for k in 0..nz {
                    bytes.clear();
                    for j in 0..ny {
                        for i in 0..nx {
                            let p3 = norm(i, j, k);
                            let mut p = sigmoid((1.0 - radius(&o, p3)) / soft);
                            if let Some(b) = &bleed {
                                p = p.max(0.7 * sigmoid((1.0 - radius(b, p3)) / 0.05));
                            }
                            if s.float_predictions {
                                // As a network's sigmoid output: exactly 0 far from the organ.
                                let v = if p < 1e-3 { 0.0 } else { p as f32 };
                                bytes.extend_from_slice(&v.to_le_bytes());
                            } else {
                                // AbdomenAtlas: uint8 = sigmoid × 255, truncated.
                                bytes.push((p * 255.0) as u8);
                            }
                        }
                    }
                    w.write_slice(&bytes)?;
                }
                w.finish()?;
            }
            if let Some(c) = label {
                // An original label.
                let h = Header::new_3d(shape, s.spacing, affine, DataType::U8);
                let mut w =
                    VolumeWriter::create(&dir.join("segmentations").join(format!("{}.nii.gz", CLASSES[c])), &h, 1)?;
                for k in 0..nz {
                    bytes.clear();
                    for j in 0..ny {
                        for i in 0..nx {
                            bytes.push(u8::from(radius(&s.organs[c], norm(i, j, k)) <= 1.0));
                        }
                    }
                    w.write_slice(&bytes)?;
                }
                w.finish()?;
            }
            Ok(())
        })
    };
    let (ct, others) = rayon::join(write_ct, others);
    ct.and(others)
}

/// HU at normalised point `p` (voxel index `idx` seeds the noise).
fn ct_value(s: &CaseSpec, p: [f64; 3], idx: usize) -> f64 {
    // Outside the scanner's reconstruction circle the value is a constant, as scanners write it.
    if p[0] * p[0] + p[1] * p[1] > 1.0 {
        return -1024.0;
    }
    let body = (p[0] / 0.85).powi(2) + (p[1] / 0.65).powi(2);
    if body > 1.0 {
        return -1000.0 + 5.0 * gauss(s.noise_key, idx as u64);
    }
    let mut hu = if body > 0.8 { -90.0 } else { 35.0 };
    if (p[0]).powi(2) + (p[1] - 0.5).powi(2) < 0.012 {
        hu = 650.0; // vertebra
    }
    for o in &s.organs {
        if radius(o, p) <= 1.0 {
            hu = o.hu;
        }
    }
    hu + 12.0 * gauss(s.noise_key, idx as u64)
}
