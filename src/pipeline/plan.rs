//! `slabflow plan PIPELINE`: the stage graph as the engine runs it — its nodes (the reader,
//! the input conversion, each stage), its edges with their channel capacity and bytes per
//! item, the memory each node holds, and what each writes — as text, or as Graphviz `dot`.
//!
//! The figures are those the memory budget reserves ([`case::case_memory_parts`]), for the
//! first case of the corpus when it can be read, else for a nominal full-size case
//! (512×512×300, int16 CT, uint8 predictions, every class annotated).

use std::fmt::Write;

use crate::input::InputKind;
use crate::nifti::{DataType, Header};
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::case;
use crate::pipeline::config::{Pipeline, human_bytes};
use crate::pipeline::flow::{CHANNEL_CAPACITY, SLABS_IN_FLIGHT};
use crate::stages::{graph, shared};

/// One node of the plan.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// What it does, for people.
    pub does: String,
    /// Bytes it holds while a case streams.
    pub holds: u64,
    /// What it writes.
    pub writes: Vec<String>,
}

/// One edge of the plan.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// What goes over it.
    pub carries: String,
    /// How: a channel's capacity and items in flight, or the journal.
    pub how: String,
    /// Bytes per item, when items are slabs.
    pub item_bytes: Option<u64>,
}

/// The graph of a pipeline, with its memory.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The case the figures are for.
    pub case: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// What one case reserves.
    pub per_case: u64,
    /// Cases at once under `memory_limit`, on this machine's cores.
    pub workers: usize,
    pub memory_limit: u64,
}

/// A full-size case's headers, for a plan without a corpus.
fn nominal(p: &Pipeline) -> Vec<Header> {
    let affine = [[0.8, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 1.5, 0.0]];
    let h = |dt| Header::new_3d([512, 512, 300], [0.8, 0.8, 1.5], affine, dt);
    let mut v = vec![h(DataType::I16)];
    if p.input.prediction.is_some() {
        v.extend((0..p.input.models.len() * p.input.classes.len()).map(|_| h(DataType::U8)));
    }
    if p.input.label.is_some() {
        v.extend(p.input.classes.iter().map(|_| h(DataType::U8)));
    }
    v
}

/// The plan of `p`.
pub fn plan(p: &Pipeline) -> Plan {
    let first = crate::input::discover(&p.input).ok().and_then(|cases| {
        cases.into_iter().find_map(|c| Some((c.volumes(&p.input).ok()?, case::case_headers(&c, p).ok()?, c.id)))
    });
    let (case, kinds, headers): (String, Vec<InputKind>, Vec<Header>) = match first {
        Some((vols, headers, id)) => (id, vols.iter().map(|v| v.role.kind()).collect(), headers),
        None => {
            let headers = nominal(p);
            let mut kinds = vec![InputKind::Ct];
            kinds.resize(
                1 + if p.input.prediction.is_some() { p.input.models.len() * p.input.classes.len() } else { 0 },
                InputKind::Prediction,
            );
            kinds.resize(headers.len(), InputKind::Label);
            ("a nominal case (no corpus at [input] root; --input DIR for its first case)".into(), kinds, headers)
        }
    };
    let depth = p.runtime.slab_depth;
    let mem = case::case_memory_parts(&headers, depth, p);
    let [nx, ny, nz] = headers[0].shape();
    let count = |k: InputKind| kinds.iter().filter(|&&x| x == k).count();
    let volumes = |ks: &[InputKind]| {
        let parts: Vec<String> = ks
            .iter()
            .filter(|k| count(**k) > 0)
            .map(|k| {
                let n = count(*k);
                let s = if n == 1 { "" } else { "s" };
                match k {
                    InputKind::Ct => format!("{n} CT{s}"),
                    InputKind::Prediction => format!("{n} prediction{s}"),
                    InputKind::Label => format!("{n} label{s}"),
                    InputKind::Revised => format!("{n} revised mask{s}"),
                }
            })
            .collect();
        if parts.is_empty() { "nothing".to_string() } else { parts.join(", ") }
    };
    let all = [InputKind::Ct, InputKind::Prediction, InputKind::Label, InputKind::Revised];
    let mut nodes = vec![
        Node {
            name: "read".into(),
            does: format!(
                "reads {} file(s): {}; inflates on its own thread, slab by slab",
                headers.len(),
                volumes(&all)
            ),
            holds: mem.readers,
            writes: Vec::new(),
        },
        Node {
            name: "convert".into(),
            does: if mem.uploads > 0 {
                "stores each volume's slab as one Zarr chunk, compressed on the rayon pool; PUT to the bucket, the case's PUTs in flight counted here".into()
            } else {
                "stores each volume's slab as one Zarr chunk, compressed on the rayon pool".into()
            },
            holds: mem.convert + mem.uploads,
            writes: vec!["cases/{case}.zarr/{ct,predictions,labels,revised}/…".into()],
        },
    ];
    let slab = |what: &str| format!("{what} (shared by reference, never copied)");
    let channel =
        format!("bounded channel, capacity {CHANNEL_CAPACITY}; {SLABS_IN_FLIGHT} slab sets in flight, recycled");
    let all: Vec<&crate::stages::StageConfig> = p.stages.iter().collect();
    let consensus_node = shared::consensus_node(&all);
    let takes_consensus = |s: &crate::stages::StageConfig| consensus_node && shared::takes_consensus(s);
    let mut edges = vec![Edge {
        from: "read".into(),
        to: "convert".into(),
        carries: slab("slab sets"),
        how: channel.clone(),
        item_bytes: Some(mem.slab_set),
    }];
    if consensus_node {
        let [nx, ny, nz] = headers[0].shape();
        let masks = (nx * ny * depth.min(nz) * p.input.classes.len()) as u64;
        nodes.push(Node {
            name: "consensus".into(),
            does: "the consensus masks (mean p > 0.5) of the classes two or more stages take, once per slab".into(),
            holds: masks * shared::SHARED_IN_FLIGHT as u64,
            writes: Vec::new(),
        });
        edges.push(Edge {
            from: "read".into(),
            to: "consensus".into(),
            carries: slab("slab sets"),
            how: channel.clone(),
            item_bytes: Some(mem.slab_set),
        });
    }
    for (i, s) in p.stages.iter().enumerate() {
        let k = s.kind();
        let name = k.kind.to_string();
        let does = if k.per_case {
            format!("per case, slab by slab; reads {}", volumes(k.reads))
        } else {
            "once over the corpus, when every case is done".to_string()
        };
        nodes.push(Node {
            name: name.clone(),
            does,
            holds: mem.stages[i],
            writes: k.writes.iter().map(|w| w.to_string()).collect(),
        });
        if k.per_case {
            edges.push(Edge {
                from: if takes_consensus(s) { "consensus" } else { "read" }.into(),
                to: name,
                carries: slab(if takes_consensus(s) { "slab sets and consensus masks" } else { "slab sets" }),
                how: channel.clone(),
                item_bytes: Some(mem.slab_set),
            });
        }
    }
    if shared::paper_above(&all).is_some() {
        let [nx, ny, nz] = headers[0].shape();
        let bits = (nx.div_ceil(64) * 8 * ny * depth.min(nz) * p.input.classes.len()) as u64;
        edges.push(Edge {
            from: "attention".into(),
            to: "evaluate".into(),
            carries: "the paper attention above evaluate's threshold, bit-packed (evaluate does not compute it again)"
                .into(),
            how: format!(
                "bounded channel, capacity {CHANNEL_CAPACITY}; at most {} alive, recycled",
                shared::SHARED_IN_FLIGHT
            ),
            item_bytes: Some(bits),
        });
    }
    for e in graph::edges(&p.stages) {
        let (from, to) = (p.stages[e.from].kind(), p.stages[e.to].kind());
        let how = if from.per_case && !to.per_case {
            "per case, through the journal's records (or the case's Zarr group)".to_string()
        } else {
            "once, in memory".to_string()
        };
        edges.push(Edge {
            from: from.kind.into(),
            to: to.kind.into(),
            carries: e.carries.name().into(),
            how,
            item_bytes: None,
        });
    }
    let budget = MemoryBudget::new(p.memory_limit);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let wanted = if p.runtime.workers == 0 { cores } else { p.runtime.workers };
    let workers = wanted.min((budget.available() / mem.total.max(1)) as usize);
    let case = format!("{case}, {nx}×{ny}×{nz}, slabs of {} slices", depth.min(nz));
    Plan { case, nodes, edges, per_case: mem.total, workers, memory_limit: p.memory_limit }
}

impl Plan {
    /// For people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "for {}", self.case);
        let _ = writeln!(s, "\nnodes (memory held while a case streams):");
        for n in &self.nodes {
            let _ = writeln!(s, "  {:<10} {:>10}  {}", n.name, human_bytes(n.holds), n.does);
            for w in &n.writes {
                let _ = writeln!(s, "  {:<10} {:>10}  writes {w}", "", "");
            }
        }
        let _ = writeln!(s, "\nedges:");
        for e in &self.edges {
            let bytes = e.item_bytes.map(|b| format!(", {} per item", human_bytes(b))).unwrap_or_default();
            let _ = writeln!(s, "  {} → {}: {}; {}{bytes}", e.from, e.to, e.carries, e.how);
        }
        let _ = writeln!(
            s,
            "\nmemory: {} per case (the slab sets, every node, and a tenth for the allocator); memory_limit {} runs {} case(s) at once{}",
            human_bytes(self.per_case),
            human_bytes(self.memory_limit),
            self.workers,
            if self.workers == 0 { " — too small: raise memory_limit or lower slab_depth" } else { "" }
        );
        s
    }

    /// Graphviz: `slabflow plan P --format dot | dot -Tsvg > plan.svg`.
    pub fn dot(&self) -> String {
        let q = |s: &str| s.replace('"', "\\\"");
        let mut s = String::from("digraph slabflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
        for n in &self.nodes {
            let writes = n.writes.iter().map(|w| format!("\\nwrites {}", q(w))).collect::<String>();
            let _ = writeln!(s, "  \"{}\" [label=\"{}\\n{}{writes}\"];", n.name, n.name, human_bytes(n.holds));
        }
        for e in &self.edges {
            let bytes = e.item_bytes.map(|b| format!("\\n{} per item", human_bytes(b))).unwrap_or_default();
            let _ = writeln!(s, "  \"{}\" -> \"{}\" [label=\"{}{bytes}\"];", e.from, e.to, q(&e.carries));
        }
        s.push_str("}\n");
        s
    }
}
