//! Where a run's time goes, node by node of its graph: busy time, time waiting for input,
//! time blocked on output (backpressure), slabs and bytes — summed over cases, summarised at
//! the end of the run (naming the node that bounds it) and written to `profile.json` beside the
//! tables. Each stage's work on each slab is also a `tracing` span (`stage`, with the case and
//! slice), for a trace viewer.
//!
//! The nodes of one case run concurrently, each on its own thread ([`super::flow`]): `read`
//! inflates and hands slab sets to every node over bounded channels, and the slowest consumer
//! holds it back. So `read` blocked on output means some stage was slower, a stage waiting
//! for input means it was faster than what feeds it, and the node that bounds the case is the
//! one that waited least: always busy while the others waited for it. Busy times overlap
//! (stages share the rayon pool), so they do not add up to the wall time.

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

    /// The node that bounds the run, and why: `read` when the nodes after it waited for slabs
    /// longer than it waited to hand them over; otherwise the node after it (a stage,
    /// `convert`, `consensus`) that waited least for input — busy while the others waited.
    pub fn bound(&self) -> Option<(String, String)> {
        let read = self.node("read")?;
        let after: Vec<&NodeTimes> = self.nodes.iter().filter(|n| n.name != "read").collect();
        let Some(least) = after.iter().min_by(|a, b| a.waiting_for_input_s.total_cmp(&b.waiting_for_input_s)) else {
            return Some(("read".into(), format!("inflating took {:.1} s; nothing runs after it", read.busy_s)));
        };
        if least.waiting_for_input_s > read.blocked_on_output_s {
            return Some((
                "read".into(),
                format!(
                    "inflating took {:.1} s; every node after it waited at least {:.1} s for slabs, the reader {:.1} s for them",
                    read.busy_s, least.waiting_for_input_s, read.blocked_on_output_s
                ),
            ));
        }
        Some((
            least.name.clone(),
            format!(
                "busy {:.1} s, waited {:.1} s for input; the reader waited {:.1} s for the nodes after it",
                least.busy_s, least.waiting_for_input_s, read.blocked_on_output_s
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

    /// `profile.json` in `out`: the figures, the wall time, the bounding node, and what the
    /// report's run summary shows (memory against the limit, the version).
    pub fn write(&self, out: &Path, wall: Duration, memory_limit: u64) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct File<'a> {
            wall_s: f64,
            cases: usize,
            bound_by: Option<String>,
            why: Option<String>,
            /// The process's peak resident memory (Linux `VmHWM`), bytes.
            peak_rss_bytes: Option<u64>,
            memory_limit_bytes: u64,
            slabflow: &'static str,
            /// When the run ended, seconds since 1970 (UTC).
            finished_unix_s: u64,
            nodes: &'a [NodeTimes],
        }
        let (bound_by, why) = self.bound().unzip();
        let f = File {
            wall_s: wall.as_secs_f64(),
            cases: self.cases,
            bound_by,
            why,
            peak_rss_bytes: super::budget::peak_rss(),
            memory_limit_bytes: memory_limit,
            slabflow: env!("CARGO_PKG_VERSION"),
            finished_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            nodes: &self.nodes,
        };
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
            n("convert", 2.0, 3.0, 0.0),
            n("attention", 4.0, 0.1, 0.0),
            n("metrics", 2.0, 2.0, 0.0),
        ]);
        p.add(&[
            n("read", 1.0, 0.0, 5.0),
            n("convert", 2.0, 3.0, 0.0),
            n("attention", 4.0, 0.1, 0.0),
            n("metrics", 2.0, 2.0, 0.0),
        ]);
        assert_eq!(p.bound().unwrap().0, "attention");
        assert_eq!(p.node("attention").unwrap().busy_s, 8.0);
        let mut q = Profile::default();
        q.add(&[n("read", 9.0, 0.0, 0.1), n("attention", 1.0, 8.0, 0.0)]);
        assert_eq!(q.bound().unwrap().0, "read");
    }
}
