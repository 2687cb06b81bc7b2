//! The stage graph of a pipeline: which stage gives which another what it needs
//! ([`super::Product`]), checked before any data is touched — every need has a producer, and
//! no stage waits on itself through others.
//!
//! Per-case stages all take the case's slabs from one reader (shared, never copied), each on
//! its own thread (`crate::pipeline::flow`); what they share per slab — the consensus masks,
//! the attention region `evaluate` takes from a paper `attention` — is in [`super::shared`].
//! What a per-case stage gives a corpus-level one goes through the journal's records (per-case
//! reductions) or the case's Zarr group (maps), so corpus-level stages run once all cases are
//! done, in the order their needs give.

use super::{Product, REGISTRY, StageConfig};

/// One edge: stage `from` gives stage `to` what it `carries`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub carries: Product,
}

/// The edges between `stages` (indices into it).
pub fn edges(stages: &[StageConfig]) -> Vec<Edge> {
    let mut out = Vec::new();
    for (to, s) in stages.iter().enumerate() {
        for &need in s.kind().needs {
            for (from, p) in stages.iter().enumerate() {
                if p.kind().makes.contains(&need) {
                    out.push(Edge { from, to, carries: need });
                }
            }
        }
    }
    out
}

/// Every problem of the graph: a need no stage makes (naming the kinds that would), a cycle.
/// `index`: each stage's `[[stages]]` number, for messages; `written`: every kind the file
/// names, built or not (a maker whose table has problems of its own is not also missing).
pub fn check(stages: &[StageConfig], index: &[usize], written: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let edges = edges(stages);
    for (i, s) in stages.iter().enumerate() {
        for &need in s.kind().needs {
            let maker_written = REGISTRY.iter().any(|k| k.makes.contains(&need) && written.iter().any(|w| w == k.kind));
            if !edges.iter().any(|e| e.to == i && e.carries == need) && !maker_written {
                let i = index.get(i).copied().unwrap_or(i);
                let makers: Vec<String> =
                    REGISTRY.iter().filter(|k| k.makes.contains(&need)).map(|k| format!("\"{}\"", k.kind)).collect();
                problems.push(format!(
                    "stages[{i}] ({}) needs {}, which no stage makes: add {}",
                    s.kind().kind,
                    need.name(),
                    match makers.first() {
                        None => "a stage that makes it".to_string(),
                        Some(m) if m[1..].starts_with(['a', 'e', 'i', 'o', 'u']) =>
                            format!("an {} stage", makers.join(" or ")),
                        Some(_) => format!("a {} stage", makers.join(" or ")),
                    }
                ));
            }
        }
    }
    if let Err(cycle) = order(stages.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| stages[i].kind().kind).collect();
        problems.push(format!("stages {} need each other in a cycle", names.join(" → ")));
    }
    problems
}

/// The stages in an order where each comes after what it needs (Kahn's algorithm, ties in
/// pipeline order); a cycle's stages otherwise.
pub fn order(n: usize, edges: &[Edge]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree = vec![0usize; n];
    for e in edges {
        indegree[e.to] += 1;
    }
    let mut done = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    while let Some(i) = (!ready.is_empty()).then(|| ready.remove(0)) {
        done.push(i);
        for e in edges.iter().filter(|e| e.from == i) {
            indegree[e.to] -= 1;
            if indegree[e.to] == 0 {
                ready.push(e.to);
                ready.sort();
            }
        }
    }
    if done.len() == n { Ok(done) } else { Err((0..n).filter(|i| !done.contains(i)).collect()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahn_orders_and_finds_cycles() {
        let e = |from, to| Edge { from, to, carries: Product::Ranking };
        assert_eq!(order(3, &[e(2, 0), e(0, 1)]), Ok(vec![2, 0, 1]));
        assert_eq!(order(3, &[e(0, 1), e(1, 0)]), Err(vec![0, 1]));
    }
}
