//! `rank`: after every case, orders the corpus by attention size (largest first, ties by case
//! id) and flags the top `budget` fraction for revision (rank ≤ ceil(budget × cases)), as the
//! paper's step ④–⑤. With `per_dataset = true` the budget applies within each dataset (the
//! paper's Figure 4 reads "roughly 5 % of CT volumes within each dataset").

use serde::Deserialize;

use super::{StageConfig, StageKind, parse_table};
use crate::input::InputConfig;

pub const KIND: StageKind = StageKind {
    kind: "rank",
    summary: "ranks cases by attention size and flags the top budget fraction (ranking.csv)",
    params: &[
        ("budget", "0.05", "fraction of cases flagged for revision"),
        ("per_dataset", "false", "apply the budget within each dataset instead of the whole corpus"),
    ],
    per_case: false,
    reads: &[],
    writes: &[],
    needs: &[super::Product::AttentionSize],
    makes: &[super::Product::Ranking],
    build,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankConfig {
    #[serde(default = "budget")]
    pub budget: f64,
    #[serde(default)]
    pub per_dataset: bool,
}

fn budget() -> f64 {
    0.05
}

fn build(table: &toml::Table, _input: &InputConfig) -> Result<StageConfig, Vec<String>> {
    let c: RankConfig = parse_table(table)?;
    if !(0.0..=1.0).contains(&c.budget) {
        return Err(vec![format!("budget = {}: a fraction of the cases, from 0 to 1", c.budget)]);
    }
    Ok(StageConfig::Rank(c))
}

/// One row of `ranking.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct RankRow {
    pub rank: usize,
    pub case_id: String,
    pub dataset: String,
    pub attention_size: f64,
    pub flagged: bool,
}

/// Ranks `(case_id, dataset, attention_size)` of the succeeded cases.
pub fn rank(config: &RankConfig, cases: &[(String, String, f64)]) -> Vec<RankRow> {
    let mut order: Vec<&(String, String, f64)> = cases.iter().collect();
    order.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    // Literally ceil(budget × n) in f64, as the contract states it (and as a script computing
    // `math.ceil(budget * n)` gets it).
    let quota = |n: usize| (config.budget * n as f64).ceil() as usize;
    let mut rows: Vec<RankRow> = order
        .iter()
        .enumerate()
        .map(|(i, (id, ds, size))| RankRow {
            rank: i + 1,
            case_id: id.clone(),
            dataset: ds.clone(),
            attention_size: *size,
            flagged: i < quota(cases.len()),
        })
        .collect();
    if config.per_dataset {
        let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
        let totals = cases.iter().fold(std::collections::BTreeMap::<&str, usize>::new(), |mut m, c| {
            *m.entry(c.1.as_str()).or_default() += 1;
            m
        });
        let flags: Vec<bool> = rows
            .iter()
            .map(|r| {
                let k = seen.entry(r.dataset.as_str()).or_default();
                *k += 1;
                *k <= quota(totals[r.dataset.as_str()])
            })
            .collect();
        for (r, f) in rows.iter_mut().zip(flags) {
            r.flagged = f;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases() -> Vec<(String, String, f64)> {
        [("c", "A", 5.0), ("a", "A", 9.0), ("b", "B", 5.0), ("d", "B", 1.0), ("e", "B", 7.0)]
            .iter()
            .map(|(i, d, s)| (i.to_string(), d.to_string(), *s))
            .collect()
    }

    #[test]
    fn ranks_by_size_then_id_and_flags_ceil_of_budget() {
        let rows = rank(&RankConfig { budget: 0.25, per_dataset: false }, &cases());
        let ids: Vec<_> = rows.iter().map(|r| (r.rank, r.case_id.as_str(), r.flagged)).collect();
        // ceil(0.25 × 5) = 2 flagged; b and c tie at 5.0: b first.
        assert_eq!(ids, [(1, "a", true), (2, "e", true), (3, "b", false), (4, "c", false), (5, "d", false)]);
        assert!(rank(&RankConfig { budget: 0.0, per_dataset: false }, &cases()).iter().all(|r| !r.flagged));
        assert!(rank(&RankConfig { budget: 1.0, per_dataset: false }, &cases()).iter().all(|r| r.flagged));
    }

    #[test]
    fn per_dataset_budget() {
        let rows = rank(&RankConfig { budget: 0.34, per_dataset: true }, &cases());
        let flagged: Vec<_> = rows.iter().filter(|r| r.flagged).map(|r| r.case_id.as_str()).collect();
        // A: ceil(0.34 × 2) = 1 → a; B: ceil(0.34 × 3) = 2 → e, b.
        assert_eq!(flagged, ["a", "e", "b"]);
    }
}
