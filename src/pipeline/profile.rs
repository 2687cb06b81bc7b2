//! Where a run's time goes, node by node of its graph: busy time, time waiting for input,
//! time blocked on output (backpressure), slabs and bytes — summed over cases, summarised at
//! the end of the run (naming the node that bounds it) and written to `profile.json` beside the
//! tables. Each stage's work on each slab is also a `tracing` span (`stage`, with the case and
//! slice), for a trace viewer.
//!
//! The nodes of one case run like this: `read` inflates on its own thread and hands slab sets
//! over a rendezvous channel; `convert` compresses them on the rayon pool; the per-case stages
//! run one after the other on the case's thread. `read` blocked on output means the stages (or
//! the recycling of buffers behind them) were slower; the stages' thread waiting for input
//! means `read` was.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// One node's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeTimes {
    pub name: String,
    pub busy_s: f64,
    pub waiting_for_input_s: f64,
    pub blocked_on_output_s: f64,
    pub slabs: u64,
    pub bytes: u64,
}

impl NodeTimes {
    pub fn new(name: &str, busy: Duration, waiting: Duration, blocked: Duration, slabs: u64, bytes: u64) -> Self {
        NodeTimes {
            name: name.to_string(),
            busy_s: busy.as_secs_f64(),
            waiting_for_input_s: waiting.as_secs_f64(),
            blocked_on_output_s: blocked.as_secs_f64(),
            slabs,
            bytes,
        }
    }
}

/// A run's figures, node by node (in the order first seen: read, convert, the stages).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Profile {
    pub nodes: Vec<NodeTimes>,
    /// Cases the figures cover.
    pub cases: usize,
}

impl Profile {
    /// Adds one case's figures.
    pub fn add(&mut self, case: &[NodeTimes]) {
        self.cases += 1;
        for n in case {
            match self.nodes.iter_mut().find(|m| m.name == n.name) {
                Some(m) => {
                    m.busy_s += n.busy_s;
                    m.waiting_for_input_s += n.waiting_for_input_s;
                    m.blocked_on_output_s += n.blocked_on_output_s;
                    m.slabs += n.slabs;
                    m.bytes += n.bytes;
                }
                None => self.nodes.push(n.clone()),
            }
        }
    }

    fn node(&self, name: &str) -> Option<&NodeTimes> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node that bounds the run, and why: `read` when the stages waited for it more than
    /// it waited for them; `convert` when its compression, spread over the rayon pool, takes
    /// longer than the stages' thread is busy; otherwise the stage busiest on the stages'
    /// thread.
    pub fn bound(&self) -> Option<(String, String)> {
        let read = self.node("read")?;
        let stages: Vec<&NodeTimes> = self.nodes.iter().filter(|n| n.name != "read" && n.name != "convert").collect();
        let threads = rayon::current_num_threads().max(1) as f64;
        let on_thread: f64 = stages.iter().map(|s| s.busy_s).sum();
        if let Some(convert) = self.node("convert")
            && convert.busy_s / threads > on_thread.max(read.busy_s)
        {
            return Some((
                "convert".into(),
                format!(
                    "compressing took {:.1} s over {threads} threads, the stages' thread {on_thread:.1} s",
                    convert.busy_s
                ),
            ));
        }
        let waited = stages.first().map_or(0.0, |s| s.waiting_for_input_s);
        if stages.is_empty() || waited > read.blocked_on_output_s {
            return Some((
                "read".into(),
                format!(
                    "inflating took {:.1} s; the stages waited {:.1} s for slabs, the reader {:.1} s for the stages",
                    read.busy_s, waited, read.blocked_on_output_s
                ),
            ));
        }
        let total: f64 = stages.iter().map(|s| s.busy_s).sum();
        let top = stages.iter().max_by(|a, b| a.busy_s.total_cmp(&b.busy_s))?;
        Some((
            top.name.clone(),
            format!(
                "{:.1} s, {:.0} % of the stages' thread; the reader waited {:.1} s for the stages",
                top.busy_s,
                100.0 * top.busy_s / total.max(1e-9),
                read.blocked_on_output_s
            ),
        ))
    }

    /// One line per node, for the end of a run.
    pub fn lines(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "{:<10} busy {:>7.2} s, waiting for input {:>6.2} s, blocked on output {:>6.2} s, {} slabs",
                    n.name, n.busy_s, n.waiting_for_input_s, n.blocked_on_output_s, n.slabs
                )
            })
            .collect()
    }

    /// `profile.json` in `out`: the figures, the wall time, and the bounding node.
    pub fn write(&self, out: &Path, wall: Duration) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct File<'a> {
            wall_s: f64,
            cases: usize,
            bound_by: Option<String>,
            why: Option<String>,
            nodes: &'a [NodeTimes],
        }
        let (bound_by, why) = self.bound().unzip();
        let f = File { wall_s: wall.as_secs_f64(), cases: self.cases, bound_by, why, nodes: &self.nodes };
        let bytes = serde_json::to_vec_pretty(&f).expect("serialisable");
        crate::files::durable::write_atomic(&out.join("profile.json"), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, busy: f64, waiting: f64, blocked: f64) -> NodeTimes {
        NodeTimes {
            name: name.into(),
            busy_s: busy,
            waiting_for_input_s: waiting,
            blocked_on_output_s: blocked,
            slabs: 1,
            bytes: 1,
        }
    }

    #[test]
    fn the_bound_is_the_side_the_other_waits_for() {
        let mut p = Profile::default();
        p.add(&[
            n("read", 1.0, 0.0, 5.0),
            n("convert", 2.0, 0.0, 0.0),
            n("attention", 4.0, 0.1, 0.0),
            n("metrics", 2.0, 0.0, 0.0),
        ]);
        p.add(&[
            n("read", 1.0, 0.0, 5.0),
            n("convert", 2.0, 0.0, 0.0),
            n("attention", 4.0, 0.1, 0.0),
            n("metrics", 2.0, 0.0, 0.0),
        ]);
        assert_eq!(p.bound().unwrap().0, "attention");
        assert_eq!(p.node("attention").unwrap().busy_s, 8.0);
        let mut q = Profile::default();
        q.add(&[n("read", 9.0, 0.0, 0.1), n("attention", 1.0, 8.0, 0.0)]);
        assert_eq!(q.bound().unwrap().0, "read");
    }
}
