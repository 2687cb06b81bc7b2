//! A stage kind from outside slabflow: per case and class, the CT's Hounsfield units inside the
//! consensus mask (mean prediction > 0.5) — voxels, mean, standard deviation, minimum and
//! maximum — written to `hu_stats.csv` beside the run's tables.
//!
//! ```sh
//! cargo run --release --example hu_stats -- PIPELINE --input CORPUS --output OUT
//! ```
//! with a pipeline that has a `[[stages]] kind = "hu_stats"` table (`min_voxels`, default 1:
//! classes with fewer consensus voxels get empty statistics).

use std::path::PathBuf;
use std::process::ExitCode;

use slabflow::input::{InputConfig, InputKind};
use slabflow::pipeline::{Overrides, Pipeline, RunOptions};
use slabflow::stages::custom::{CaseInfo, CustomStage, Registry, SlabView, StageFactory};

/// The kind.
struct HuStats;

/// Per class: voxels, Σ HU, Σ HU², min, max (exact sums: HU are integers in CTs, f64 holds
/// them exactly far beyond any volume).
#[derive(Clone, Copy)]
struct Sums {
    n: u64,
    sum: f64,
    sq: f64,
    min: f64,
    max: f64,
}

/// The kind at work on one case.
struct HuStatsCase {
    min_voxels: u64,
    classes: Vec<Sums>,
}

impl StageFactory for HuStats {
    fn kind(&self) -> &'static str {
        "hu_stats"
    }

    fn summary(&self) -> &'static str {
        "CT HU statistics inside each class's consensus mask, to hu_stats.csv"
    }

    fn reads(&self) -> &'static [InputKind] {
        &[InputKind::Ct, InputKind::Prediction]
    }

    fn check(&self, table: &toml::Table, input: &InputConfig) -> Vec<String> {
        let mut problems = Vec::new();
        for key in table.keys().filter(|k| *k != "min_voxels") {
            problems.push(format!("{key}: not a parameter of hu_stats (it has min_voxels)"));
        }
        if table.get("min_voxels").is_some_and(|v| v.as_integer().is_none_or(|n| n < 1)) {
            problems.push("min_voxels: use a whole number, 1 or more".into());
        }
        if input.prediction.is_none() {
            problems.push("hu_stats needs predictions: set [input] prediction, models and classes".into());
        }
        problems
    }

    fn start(&self, table: &toml::Table, case: &CaseInfo) -> Result<Box<dyn CustomStage>, String> {
        let min_voxels = table.get("min_voxels").and_then(|v| v.as_integer()).unwrap_or(1) as u64;
        let empty = Sums { n: 0, sum: 0.0, sq: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };
        Ok(Box::new(HuStatsCase { min_voxels, classes: vec![empty; case.classes.len()] }))
    }

    fn memory(&self, shape: [usize; 3], depth: usize) -> u64 {
        // A slab of HU (f64); the consensus masks are the engine's, shared.
        (shape[0] * shape[1] * depth * 8) as u64
    }

    fn wants_consensus(&self) -> bool {
        true
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn table(&self) -> Option<(&'static str, Vec<String>)> {
        let header = ["case_id", "class", "voxels", "mean_hu", "std_hu", "min_hu", "max_hu"];
        Some(("hu_stats.csv", header.map(String::from).to_vec()))
    }
}

impl CustomStage for HuStatsCase {
    fn process(&mut self, slab: &SlabView) -> Result<(), String> {
        let hu = slab.ct_hu();
        for (c, s) in self.classes.iter_mut().enumerate() {
            let mask = slab.consensus(c)?;
            for (&v, _) in hu.iter().zip(mask.iter()).filter(|(_, m)| **m != 0) {
                s.n += 1;
                s.sum += v;
                s.sq += v * v;
                s.min = s.min.min(v);
                s.max = s.max.max(v);
            }
        }
        Ok(())
    }

    fn finish(&mut self, case: &CaseInfo) -> Result<Vec<Vec<String>>, String> {
        let rows = case
            .classes
            .iter()
            .zip(&self.classes)
            .map(|(class, s)| {
                let mut row = vec![case.case_id.clone(), class.clone(), s.n.to_string()];
                if s.n >= self.min_voxels {
                    let mean = s.sum / s.n as f64;
                    // Population standard deviation, as numpy's std.
                    let var = (s.sq / s.n as f64 - mean * mean).max(0.0);
                    row.extend([mean, var.sqrt(), s.min, s.max].map(|v| v.to_string()));
                } else {
                    row.extend(["", "", "", ""].map(String::from));
                }
                row
            })
            .collect();
        Ok(rows)
    }

    /// The sums so far: per class, n and the four f64, little-endian (f64 bit for bit).
    fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.classes.len() * 40);
        for s in &self.classes {
            out.extend(s.n.to_le_bytes());
            for v in [s.sum, s.sq, s.min, s.max] {
                out.extend(v.to_le_bytes());
            }
        }
        out
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.len() != self.classes.len() * 40 {
            return Err(format!("a state of {} bytes for {} classes", state.len(), self.classes.len()));
        }
        let word = |b: &[u8]| <[u8; 8]>::try_from(b).expect("8 bytes");
        for (s, b) in self.classes.iter_mut().zip(state.chunks(40)) {
            s.n = u64::from_le_bytes(word(&b[..8]));
            let f: Vec<f64> = b[8..].chunks(8).map(|c| f64::from_le_bytes(word(c))).collect();
            (s.sum, s.sq, s.min, s.max) = (f[0], f[1], f[2], f[3]);
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    // slabflow reports through `tracing`: its messages, filtered by RUST_LOG (warnings by
    // default), to stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let Some(pipeline) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: hu_stats PIPELINE [--input CORPUS] [--output OUT]");
        return ExitCode::from(2);
    };
    let overrides = Overrides { input: flag("--input"), output: flag("--output"), ..Default::default() };
    let registry = Registry::default().with(HuStats);
    let p = match Pipeline::load_with(pipeline.as_ref(), &overrides, &registry) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match slabflow::pipeline::run(&p, &RunOptions::default()) {
        Ok(summary) => {
            summary.print();
            if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
