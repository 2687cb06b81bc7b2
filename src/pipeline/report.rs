//! The run's tables: `metrics.csv`, `ranking.csv`, `failures.csv` (contract §3), and
//! `assembly.csv` when the pipeline assembles final labels, `evaluation.csv` and
//! `evaluation_summary.csv` when it evaluates attention against errors.
//!
//! Invariants: rows are sorted (cases by id, classes in `[input] classes` order) and numbers
//! are printed with Rust's shortest round-trip formatting, so the same results always give the
//! same bytes whatever order cases finished in; every file is replaced atomically.

use std::path::Path;

use crate::checkpoint::{CaseDone, CaseRecord, Outcome};
use crate::files::durable::write_atomic;
use crate::input::InputKind;
use crate::pipeline::config::Pipeline;
use crate::pipeline::run::RunError;
use crate::stages::metrics::model_pairs;
use crate::stages::rank::{self, RankRow};
use crate::stages::{Finished, StageConfig};

pub const METRICS_COLUMNS: [&str; 11] = [
    "case_id",
    "dataset",
    "class",
    "consensus_voxels",
    "volume_ml",
    "attention_sum",
    "inconsistency_sum",
    "uncertainty_sum",
    "overlap_voxels",
    "dice",
    "nsd",
];

/// The last columns of `metrics.csv` when an attention stage ran: where the class's attention
/// peaks, as indices of the Zarr arrays `[z, y, x]` — the axial slice (z) and the coronal
/// one (y) of the largest attention sum; empty where the class has no attention.
pub const PEAK_COLUMNS: [&str; 2] = ["attention_peak_z", "attention_peak_y"];

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The records' finished cases and failures (`(case id, error)`).
pub fn split(records: &[CaseRecord]) -> (Vec<Finished<'_>>, Vec<(String, String)>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for r in records {
        match &r.outcome {
            Outcome::Done(CaseDone { result, inputs, stages, .. }) => {
                // What the review exports are made of: the CT's grid, the predictions, and
                // the attention maps.
                let made_of: Vec<(&str, u64, Option<u64>)> = inputs
                    .iter()
                    .filter(|s| matches!(InputKind::of_group(&s.group), InputKind::Ct | InputKind::Prediction))
                    .map(|s| (s.group.as_str(), s.len, s.digest))
                    .collect();
                let text = serde_json::to_string(&(made_of, stages.get("attention"))).expect("serialisable");
                let source = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
                done.push(Finished { id: &r.case_id, dataset: &r.dataset, result, source })
            }
            Outcome::Failed { error } => failed.push((r.case_id.clone(), error.clone())),
            // Being redone: neither (left for the run that finishes it).
            Outcome::Redoing { .. } => {}
        }
    }
    (done, failed)
}

/// Writes the tables the pipeline asks for; returns the ranking when it ranks.
pub fn write_outputs(
    p: &Pipeline,
    out: &Path,
    succeeded: &[Finished],
    failures: &[(String, String)],
) -> Result<Option<Vec<RankRow>>, RunError> {
    // Tables are published as records are: only by the output's holder.
    crate::files::lock::verify_held();
    let mut succeeded: Vec<&Finished> = succeeded.iter().collect();
    succeeded.sort_by(|a, b| a.id.cmp(b.id));
    let per_case_stage = p.stages.iter().any(|s| matches!(s, StageConfig::Attention(_) | StageConfig::Metrics(_)));
    if per_case_stage {
        let has_metrics = p.stages.iter().any(|s| matches!(s, StageConfig::Metrics(_)));
        let has_attention = p.stages.iter().any(|s| matches!(s, StageConfig::Attention(_)));
        let models = &p.input.models;
        let mut header: Vec<String> = METRICS_COLUMNS.iter().map(|s| s.to_string()).collect();
        if has_metrics {
            header.extend(models.iter().map(|m| format!("volume_ml_{m}")));
            header.extend(model_pairs(models.len()).iter().map(|&(a, b)| format!("dice_{}_{}", models[a], models[b])));
        }
        if has_attention {
            header.extend(PEAK_COLUMNS.map(String::from));
        }
        let mut rows = vec![header];
        for f in &succeeded {
            for (class, r) in p.input.classes.iter().zip(&f.result.classes) {
                rows.push(vec![
                    f.id.to_string(),
                    f.dataset.to_string(),
                    class.clone(),
                    opt(r.consensus_voxels),
                    opt(r.volume_ml),
                    opt(r.attention_sum),
                    opt(r.inconsistency_sum),
                    opt(r.uncertainty_sum),
                    opt(r.overlap_voxels),
                    opt(r.dice),
                    opt(r.nsd),
                ]);
                let row = rows.last_mut().unwrap();
                if has_metrics {
                    row.extend(r.model_volume_ml.iter().map(|v| v.to_string()));
                    row.extend(r.model_agreement.iter().map(|v| opt(*v)));
                }
                if has_attention {
                    row.extend([opt(r.peak.map(|p| p.axial)), opt(r.peak.map(|p| p.coronal))]);
                }
            }
        }
        write_csv(&out.join("metrics.csv"), &rows)?;
    }
    if p.stages.iter().any(|s| matches!(s, StageConfig::Assemble(_))) {
        let mut rows =
            vec![["case_id", "dataset", "class", "source", "voxels", "volume_ml"].map(String::from).to_vec()];
        for f in &succeeded {
            for (class, r) in p.input.classes.iter().zip(&f.result.classes) {
                if let Some(a) = &r.assembly {
                    rows.push(vec![
                        f.id.to_string(),
                        f.dataset.to_string(),
                        class.clone(),
                        a.source.clone(),
                        a.voxels.to_string(),
                        a.volume_ml.to_string(),
                    ]);
                }
            }
        }
        write_csv(&out.join("assembly.csv"), &rows)?;
    }
    if p.stages.iter().any(|s| matches!(s, StageConfig::Evaluate(_))) {
        write_evaluation(p, out, &succeeded)?;
    }
    let ranking = p.stages.iter().find_map(|s| match s {
        StageConfig::Rank(c) => Some(c),
        _ => None,
    });
    let ranking = match ranking {
        Some(config) => {
            let sizes: Vec<(String, String, f64)> = succeeded
                .iter()
                .map(|f| (f.id.to_string(), f.dataset.to_string(), f.result.attention_size.unwrap_or(0.0)))
                .collect();
            let ranked = rank::rank(config, &sizes);
            let mut rows = vec![["rank", "case_id", "dataset", "attention_size", "flagged"].map(String::from).to_vec()];
            for r in &ranked {
                rows.push(vec![
                    r.rank.to_string(),
                    r.case_id.clone(),
                    r.dataset.clone(),
                    r.attention_size.to_string(),
                    r.flagged.to_string(),
                ]);
            }
            write_csv(&out.join("ranking.csv"), &rows)?;
            if let Some(config) = p.stages.iter().find_map(|s| match s {
                StageConfig::Review(c) => Some(c),
                _ => None,
            }) {
                let rows =
                    crate::stages::review::export(&p.input, p.runtime.slab_depth, config, out, &ranked, &succeeded)
                        .map_err(RunError::Plan)?;
                write_csv(&out.join("worklist.csv"), &rows)?;
                // Only once worklist.csv no longer names them.
                crate::stages::review::remove_unlisted(out, &rows).map_err(RunError::Plan)?;
            }
            Some(ranked)
        }
        None => None,
    };
    // The tables of custom stages: each case's rows, cases in id order.
    for s in &p.stages {
        if let StageConfig::Custom(c) = s
            && let Some((name, header)) = c.factory.table()
        {
            let mut rows = vec![header];
            for f in &succeeded {
                rows.extend(f.result.custom.get(c.factory.kind()).into_iter().flatten().cloned());
            }
            write_csv(&out.join(name), &rows)?;
        }
    }
    // What a stage the pipeline no longer has wrote goes with it.
    let has = |f: fn(&StageConfig) -> bool| p.stages.iter().any(f);
    let stale: &[(&str, bool)] = &[
        ("metrics.csv", !per_case_stage),
        ("assembly.csv", !has(|s| matches!(s, StageConfig::Assemble(_)))),
        ("evaluation.csv", !has(|s| matches!(s, StageConfig::Evaluate(_)))),
        ("evaluation_summary.csv", !has(|s| matches!(s, StageConfig::Evaluate(_)))),
        ("ranking.csv", ranking.is_none()),
        ("worklist.csv", !has(|s| matches!(s, StageConfig::Review(_))) || ranking.is_none()),
    ];
    if !has(|s| matches!(s, StageConfig::Review(_))) || ranking.is_none() {
        crate::stages::review::remove_exports(out).map_err(RunError::Plan)?;
    }
    for (name, gone) in stale {
        let path = out.join(name);
        if *gone {
            crate::files::durable::remove_path(&path).map_err(|source| RunError::Io { path, source })?;
        }
    }
    let mut rows = vec![vec!["case_id".to_string(), "error".to_string()]];
    let mut failures = failures.to_vec();
    failures.sort();
    rows.extend(failures.into_iter().map(|(id, e)| vec![id, e]));
    write_csv(&out.join("failures.csv"), &rows)?;
    Ok(ranking)
}

/// `evaluation.csv` (per case and annotated class) and `evaluation_summary.csv` (per class:
/// mean and population standard deviation over the cases where each is defined, as numpy's
/// `mean`/`std`; Table 1 of the paper).
fn write_evaluation(p: &Pipeline, out: &Path, succeeded: &[&Finished]) -> Result<(), RunError> {
    let mut rows = vec![
        [
            "case_id",
            "dataset",
            "class",
            "error_components",
            "errors_found",
            "sensitivity",
            "attention_components",
            "attention_on_errors",
            "precision",
            "largest_error_voxels",
            "largest_attention_voxels",
            "error_voxels",
            "attention_voxels",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let classes = &p.input.classes;
    let mut per_class: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); classes.len()];
    for f in succeeded {
        for (k, (class, r)) in classes.iter().zip(&f.result.classes).enumerate() {
            let Some(e) = &r.evaluation else { continue };
            let (sens, prec) = (e.sensitivity(), e.precision());
            per_class[k].0.extend(sens);
            per_class[k].1.extend(prec);
            rows.push(vec![
                f.id.to_string(),
                f.dataset.to_string(),
                class.clone(),
                e.error.components.to_string(),
                e.error.touching.to_string(),
                opt(sens),
                e.attention.components.to_string(),
                e.attention.touching.to_string(),
                opt(prec),
                e.error.largest.to_string(),
                e.attention.largest.to_string(),
                e.error.voxels.to_string(),
                e.attention.voxels.to_string(),
            ]);
        }
    }
    write_csv(&out.join("evaluation.csv"), &rows)?;
    let stats = |v: &[f64]| -> (String, String) {
        if v.is_empty() {
            return (String::new(), String::new());
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
        (mean.to_string(), var.sqrt().to_string())
    };
    let mut rows = vec![
        [
            "class",
            "cases_sensitivity",
            "sensitivity_mean",
            "sensitivity_std",
            "cases_precision",
            "precision_mean",
            "precision_std",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (class, (sens, prec)) in classes.iter().zip(&per_class) {
        let ((sm, ss), (pm, ps)) = (stats(sens), stats(prec));
        rows.push(vec![class.clone(), sens.len().to_string(), sm, ss, prec.len().to_string(), pm, ps]);
    }
    write_csv(&out.join("evaluation_summary.csv"), &rows)
}

fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<(), RunError> {
    let io = |source: std::io::Error| RunError::Io { path: path.to_owned(), source };
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(r).map_err(|e| io(e.into()))?;
    }
    let bytes = w.into_inner().map_err(|e| io(e.into_error()))?;
    write_atomic(path, &bytes).map_err(io)
}
