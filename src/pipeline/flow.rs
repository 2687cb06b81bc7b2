//! One case's dataflow: every node of the stage graph on its own thread, joined by bounded
//! channels.
//!
//! ```text
//!   read ──► convert
//!     ├────► consensus ──► stages that take the consensus (assemble, evaluate, custom)
//!     └────► other stages (normalize, attention, metrics)
//!            attention (paper) ──► evaluate   (the attention region, when both run)
//! ```
//!
//! `read` inflates every volume slab by slab and sends each slab set, behind an `Arc`, to the
//! nodes that take it: fan-out shares the set, never copies it. A node that takes from several
//! nodes (evaluate: the consensus and attention's region) receives one item from each per slab,
//! in z order, and works on their union. Each stage sees its slabs in z order on its own
//! thread, and uses the rayon pool inside (per class, per slice) as before.
//!
//! Why a thread per node, measured on 2 cores (benches/README.md, "The engine"): with the
//! stages called one after another per slab, each waited at the end of every slab for the
//! slowest thread of the one before (a class with the liver, one gzip member of an export),
//! and the second core idled there; as threads, a stage's tail overlaps the next stage's work
//! and `read` overlaps all: the loop's case streams 12 % faster. Where two cases at a time
//! already keep both cores busy (the contract pipeline) nothing is left to fill, and the
//! figures stay within the machine's run-to-run spread. Node threads are new for each case and
//! take the allocator arena of the case's worker thread ([`set_thread_arena`]).
//!
//! Invariants:
//! - every channel is bounded ([`CHANNEL_CAPACITY`]) and slab sets come from a pool of
//!   [`SLABS_IN_FLIGHT`], so the reader is held back by the slowest consumer, never queues
//!   without bound; what is shared per slab ([`crate::stages::shared`]) is pooled the same way;
//! - a slab checkpoint at slice z is a mark `read` sends after the slab ending at z: every node
//!   passes it on after its work on the slabs before, each stage with its state, `convert` once
//!   its writes before z have returned; the checkpoint is saved when all have answered (later
//!   slabs may already be written; a resumed case writes them again, byte for byte);
//! - the first error stops the case: `read` stops reading, every node drains and ends; nothing
//!   waits on a node that is gone (a send to it fails, a wait for a free slab set gives up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use crate::nifti::{VolumeReader, Voxels};
use crate::pipeline::profile::NodeTimes;
use crate::stages::shared::{self, ClassBits, ClassMasks, Pool, Pooled, SHARED_IN_FLIGHT, Shared};
use crate::stages::{CaseSlab, Layout, RowSet, SlabStage};

/// Capacity of every channel between two nodes: one item waits while the consumer works on
/// the one before.
pub const CHANNEL_CAPACITY: usize = 1;
/// Slab sets alive at once: one being filled by the reader, one in the nodes. A third was
/// measured no faster on full-size cases and cost a slab set more (benches/README.md).
pub const SLABS_IN_FLIGHT: usize = 2;

/// One slab set, returned to the reader's pool when its last user drops it.
struct SlabSet {
    bufs: Option<Vec<Voxels>>,
    back: Sender<Vec<Voxels>>,
    /// Per volume, its non-zero rows, made by the first stage that asks (`CaseSlab::rows`).
    rows: Vec<RowSet>,
}

impl Drop for SlabSet {
    fn drop(&mut self) {
        if let Some(b) = self.bufs.take() {
            let _ = self.back.send(b);
        }
    }
}

impl SlabSet {
    fn volumes(&self) -> &[Voxels] {
        self.bufs.as_deref().expect("held until dropped")
    }
}

/// One slab as it travels: the volumes and what nodes before made of them.
#[derive(Clone)]
struct Item {
    z0: usize,
    n: usize,
    set: Arc<SlabSet>,
    consensus: Option<Arc<Pooled<ClassMasks>>>,
    above: Option<Arc<Pooled<ClassBits>>>,
}

impl Item {
    /// Adds what `other` (the same slab from another node) carries.
    fn merge(&mut self, other: Item) {
        self.consensus = self.consensus.take().or(other.consensus);
        self.above = self.above.take().or(other.above);
    }
}

/// A slab checkpoint due at slice `z`: what `read` had streamed by then.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub z: usize,
    pub slabs: usize,
    pub bytes: u64,
    /// The case stops here (a signal).
    pub stop: bool,
}

#[derive(Clone)]
enum Msg {
    Slab(Item),
    Mark(Mark),
}

/// What nodes tell the coordinator at a mark.
enum Answer {
    /// `read` sent a mark.
    Marked(Mark),
    /// Stage `i` at the mark, with its state.
    State { z: usize, i: usize, state: Vec<u8> },
    /// `convert`'s writes before the mark have returned.
    Written { z: usize },
}

/// How a case's slabs are read.
pub struct Reading<'a> {
    pub case_id: &'a str,
    pub readers: Vec<VolumeReader>,
    /// Which volumes are read (a partial redo reads only some).
    pub read: &'a [bool],
    pub start_z: usize,
    pub nz: usize,
    pub depth: usize,
    /// Slabs and bytes streamed before `start_z` (a resumed case).
    pub slabs: usize,
    pub bytes: u64,
}

/// When marks are sent.
pub struct Checkpoints<'a> {
    /// Stages can save their state (no custom stage).
    pub enabled: bool,
    pub every: Duration,
    /// Set on SIGINT/SIGTERM.
    pub stop: Option<&'a AtomicBool>,
}

/// Writes one slab set's volumes (the `convert` node): `(z0, volumes)`.
pub type WriteSlab<'a> = &'a (dyn Fn(usize, &[Voxels]) -> Result<(), String> + Sync);

/// Saves a slab checkpoint of a mark, with every stage's state in `stages` order.
pub type SaveCheckpoint<'a> = &'a dyn Fn(&Mark, Vec<Vec<u8>>) -> Result<(), String>;

/// What `read` reports at the end: the digests, its times, slabs and bytes streamed in all.
struct ReadDone {
    digests: Vec<Option<u64>>,
    times: Times,
    slabs: usize,
    bytes: u64,
    /// It sent every slab of the case, or stopped on a signal.
    complete: bool,
}

/// How a case's stream ended, with every node's figures.
pub struct Streamed {
    pub end: End,
    pub slabs: usize,
    pub bytes: u64,
    /// The content digest of each volume read through.
    pub digests: Vec<Option<u64>>,
    pub profile: Vec<NodeTimes>,
}

pub enum End {
    /// Every slab went through every node.
    Finished,
    /// Stopped on a signal at a saved slab checkpoint at slice `z`.
    Paused(usize),
    /// Stopped on a signal without a checkpoint (a custom stage keeps none).
    Stopped,
}

/// The first error of any node; later ones are consequences.
#[derive(Default)]
struct Failure {
    first: Mutex<Option<String>>,
    any: AtomicBool,
}

impl Failure {
    fn set(&self, e: String) {
        self.first.lock().unwrap().get_or_insert(e);
        self.any.store(true, Ordering::Relaxed);
    }
    fn is_set(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }
}

/// One node's times.
#[derive(Default, Clone, Copy)]
struct Times {
    busy: Duration,
    waiting: Duration,
    blocked: Duration,
    /// Slabs it went through.
    slabs: usize,
}

/// Receives the next slab (or mark) from every input, merged; `None` once any input ended, or
/// when the inputs came out of step (a failure: never expected, since every input passes on
/// what `read` sent, in its order).
fn receive(inputs: &[Receiver<Msg>], times: &mut Times, failure: &Failure) -> Option<Msg> {
    let t = Instant::now();
    let mut first = inputs[0].recv().ok()?;
    for r in &inputs[1..] {
        match (&mut first, r.recv().ok()?) {
            (Msg::Slab(a), Msg::Slab(b)) if a.z0 == b.z0 => a.merge(b),
            (Msg::Mark(a), Msg::Mark(b)) if a.z == b.z => {}
            _ => {
                failure.set("internal error (please report): a node's inputs came out of step".into());
                return None;
            }
        }
    }
    times.waiting += t.elapsed();
    Some(first)
}

/// Sends `msg` to every output; false once one is gone (the case is stopping).
fn send(outputs: &[Sender<Msg>], msg: Msg, times: &mut Times) -> bool {
    let t = Instant::now();
    let ok = outputs.iter().all(|o| o.send(msg.clone()).is_ok());
    times.blocked += t.elapsed();
    ok
}

/// How a node thread takes the allocator arena of the thread that streams its case.
static ARENA: std::sync::OnceLock<ArenaHooks> = std::sync::OnceLock::new();

/// Reads the calling thread's arena; binds the calling thread to one.
type ArenaHooks = (fn() -> Option<u32>, fn(u32));

/// Registers how to read the calling thread's allocator arena and how to bind the calling
/// thread to one (the binary's allocator: `slabflow` does it with jemalloc's `thread.arena`).
/// Node threads are new for each case; bound to their case's worker thread's arena, what one
/// case freed is what the next case of that worker allocates, as when its stages ran on the
/// worker thread. Unbound, jemalloc spread them over its arenas and kept the pages an earlier
/// case freed in other arenas: one case of the contract pipeline then peaked at 620 or 840 MiB
/// by the luck of the draw (benches/README.md, "The engine"). Without one, nothing is bound.
pub fn set_thread_arena(get: fn() -> Option<u32>, bind: fn(u32)) {
    let _ = ARENA.set((get, bind));
}

/// Spawns a node on `s`, bound to `arena` (the case's worker thread's).
fn spawn_node<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    arena: Option<u32>,
    node: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    s.spawn(move || {
        if let (Some(a), Some((_, bind))) = (arena, ARENA.get()) {
            bind(a);
        }
        node()
    })
}

/// The error of a node that panicked, with the panic's message.
fn panicked(node: &str, e: Box<dyn std::any::Any + Send>) -> String {
    let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
    format!("internal error (please report): the {node} node panicked: {}", msg.unwrap_or_default())
}

/// The wiring of one case's graph: for each node, where its input comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum From {
    Read,
    Consensus,
    Stage(usize),
}

/// Streams one case through `stages` (each on its own thread; `names` for spans and figures),
/// writing each slab set with `convert` when it has anything to write. `above`: stage `.0`
/// shares its attention region with stage `.1` ([`Shared::AttentionAbove`]). `save` makes a
/// slab checkpoint of a mark and the stages' states (in `stages` order).
#[allow(clippy::too_many_arguments)]
pub fn stream(
    reading: Reading,
    layout: &Layout,
    stages: &mut [Box<dyn SlabStage>],
    names: &[&str],
    above: Option<(usize, usize)>,
    convert: Option<WriteSlab>,
    checkpoints: Checkpoints,
    save: SaveCheckpoint,
) -> Result<Streamed, String> {
    let classes = layout.classes.len();
    // The consensus node computes the classes two or more stages take; a class one stage
    // takes is that stage's to compute (slice by slice, in less memory).
    let wanted: Vec<bool> = (0..classes).map(|c| stages.iter().filter(|s| s.wants_consensus(c)).count() >= 2).collect();
    let consensus_node = wanted.contains(&true);
    // The volumes whose non-zero rows the reader finds as it reads them (the rest, if a stage
    // asks, on first use).
    let mut row_volumes = vec![false; layout.paths.len()];
    if stages.iter().any(|s| s.wants_rows()) {
        // The stages ask only of uint8 predictions decoded by table (CaseSlab::row_nonzero).
        for (vols, probs) in layout.predictions.iter().zip(&layout.prob) {
            for (&v, p) in vols.iter().zip(probs) {
                row_volumes[v] = matches!(p, crate::stages::ProbDecoder::U8Table);
            }
        }
    }
    let row_volumes = &row_volumes;
    let nx = layout.shape[0];
    // Each stage's inputs.
    let froms: Vec<Vec<From>> = (0..stages.len())
        .map(|i| {
            let shared = (0..classes).any(|c| wanted[c] && stages[i].wants_consensus(c));
            let mut f = vec![if shared { From::Consensus } else { From::Read }];
            if let Some((a, b)) = above
                && b == i
            {
                f.push(From::Stage(a));
            }
            f
        })
        .collect();
    // The channels: the reader's outputs, the consensus node's, each stage's.
    let mut read_out = Vec::new();
    let mut consensus_out = Vec::new();
    let mut stage_out: Vec<Vec<Sender<Msg>>> = (0..stages.len()).map(|_| Vec::new()).collect();
    let mut stage_in: Vec<Vec<Receiver<Msg>>> = (0..stages.len()).map(|_| Vec::new()).collect();
    for (i, fs) in froms.iter().enumerate() {
        for f in fs {
            let (tx, rx) = bounded(CHANNEL_CAPACITY);
            match f {
                From::Read => read_out.push(tx),
                From::Consensus => consensus_out.push(tx),
                From::Stage(a) => stage_out[*a].push(tx),
            }
            stage_in[i].push(rx);
        }
    }
    let consensus_in = consensus_node.then(|| {
        let (tx, rx) = bounded(CHANNEL_CAPACITY);
        read_out.push(tx);
        rx
    });
    let convert_in = convert.map(|_| {
        let (tx, rx) = bounded(CHANNEL_CAPACITY);
        read_out.push(tx);
        rx
    });
    let (answer_tx, answer_rx) = bounded::<Answer>(stages.len() + 2);
    let failure = Failure::default();
    let Reading { case_id, mut readers, read, start_z, nz, depth, slabs: slabs0, bytes: bytes0 } = reading;
    let mut paused = None;
    let mut stopped = false;

    let stage_count = stages.len();
    let arena = ARENA.get().and_then(|(get, _)| get());
    let (read_result, node_times) = std::thread::scope(|s| {
        let failure = &failure;
        // read
        let stopped = &mut stopped;
        let marked = answer_tx.clone();
        let reader = spawn_node(s, arena, move || -> ReadDone {
            let mut times = Times::default();
            let (mut slabs, mut bytes) = (slabs0, bytes0);
            let (back, returned) = bounded::<Vec<Voxels>>(SLABS_IN_FLIGHT);
            let mut spare: Vec<Vec<Voxels>> = (0..SLABS_IN_FLIGHT)
                .map(|_| readers.iter().map(|r| Voxels::empty(r.header().datatype)).collect())
                .collect();
            let digests = |readers: &[VolumeReader]| readers.iter().map(|r| r.digest()).collect();
            // Ok(true): every slab sent, or stopped on a signal.
            let result = (|| -> Result<bool, String> {
                for r in readers.iter_mut().zip(read).filter(|(_, r)| **r).map(|(r, _)| r) {
                    r.skip_slices(start_z).map_err(|e| e.to_string())?;
                }
                let mut last_mark = Instant::now();
                for z0 in (start_z..nz).step_by(depth) {
                    let n = depth.min(nz - z0);
                    // A free slab set; while waiting, give up if the case failed (the nodes
                    // holding the sets may be gone).
                    let t = Instant::now();
                    let mut bufs = loop {
                        if let Some(b) = spare.pop() {
                            break b;
                        }
                        match returned.recv_timeout(Duration::from_millis(20)) {
                            Ok(b) => spare.push(b),
                            Err(RecvTimeoutError::Timeout) if !failure.is_set() => {}
                            Err(_) => return Ok(false),
                        }
                    };
                    times.blocked += t.elapsed();
                    if failure.is_set() {
                        return Ok(false);
                    }
                    // A run frozen past its lease and taken over reads (and so writes) no
                    // further slab.
                    crate::files::lock::verify_held();
                    let t = Instant::now();
                    let mut rows: Vec<RowSet> = bufs.iter().map(|_| Default::default()).collect();
                    {
                        let _span = tracing::debug_span!("read", case = %case_id, z0).entered();
                        for (i, ((r, b), _)) in
                            readers.iter_mut().zip(&mut bufs).zip(read).enumerate().filter(|(_, (_, r))| **r)
                        {
                            r.read_slab(n, b).map_err(|e| e.to_string())?;
                            if row_volumes[i] {
                                rows[i] = crate::stages::row_set(b, nx);
                            }
                        }
                    }
                    times.busy += t.elapsed();
                    tracing::debug!(case = %case_id, z0, n, "Slab read.");
                    slabs += 1;
                    bytes += bufs.iter().map(|b| (b.len() * b.datatype().size()) as u64).sum::<u64>();
                    let set = Arc::new(SlabSet { bufs: Some(bufs), back: back.clone(), rows });
                    let item = Item { z0, n, set, consensus: None, above: None };
                    if !send(&read_out, Msg::Slab(item), &mut times) {
                        return Ok(false);
                    }
                    let z = z0 + n;
                    if z >= nz {
                        break;
                    }
                    let stop = checkpoints.stop.is_some_and(|f| f.load(Ordering::Relaxed));
                    if stop && !checkpoints.enabled {
                        *stopped = true;
                        return Ok(true);
                    }
                    if checkpoints.enabled && (stop || last_mark.elapsed() >= checkpoints.every) {
                        let mark = Mark { z, slabs, bytes, stop };
                        if marked.send(Answer::Marked(mark)).is_err() || !send(&read_out, Msg::Mark(mark), &mut times) {
                            return Ok(false);
                        }
                        if stop {
                            return Ok(true);
                        }
                        last_mark = Instant::now();
                    }
                }
                Ok(true)
            })();
            drop((read_out, marked));
            let complete = result.unwrap_or_else(|e| {
                failure.set(e);
                false
            });
            ReadDone { digests: digests(&readers), times, slabs, bytes, complete }
        });

        // consensus
        let consensus = consensus_in.map(|input| {
            let wanted = &wanted;
            spawn_node(s, arena, move || {
                let mut times = Times::default();
                let pool: Pool<ClassMasks> = Pool::new(SHARED_IN_FLIGHT);
                let inputs = [input];
                while let Some(msg) = receive(&inputs, &mut times, failure) {
                    let msg = match msg {
                        Msg::Slab(mut item) => {
                            let t = Instant::now();
                            let _span =
                                tracing::debug_span!("stage", stage = "consensus", case = %case_id, z0 = item.z0)
                                    .entered();
                            let mut masks = pool.take();
                            let slab = CaseSlab::new(item.z0, item.n, item.set.volumes(), layout);
                            if let Err(e) = shared::consensus_masks(&slab, wanted, &mut masks) {
                                failure.set(e);
                                break;
                            }
                            item.consensus = Some(Arc::new(masks));
                            times.busy += t.elapsed();
                            times.slabs += 1;
                            Msg::Slab(item)
                        }
                        mark => mark,
                    };
                    if !send(&consensus_out, msg, &mut times) {
                        break;
                    }
                }
                times
            })
        });

        // convert
        let answers = answer_tx.clone();
        let converter = convert.zip(convert_in).map(|(write, input)| {
            spawn_node(s, arena, move || {
                let mut times = Times::default();
                let inputs = [input];
                while let Some(msg) = receive(&inputs, &mut times, failure) {
                    match msg {
                        Msg::Slab(item) => {
                            let t = Instant::now();
                            let _span = tracing::debug_span!("convert", case = %case_id, z0 = item.z0).entered();
                            // A run frozen past its lease and taken over writes nothing more.
                            crate::files::lock::verify_held();
                            if let Err(e) = write(item.z0, item.set.volumes()) {
                                failure.set(e);
                                break;
                            }
                            times.busy += t.elapsed();
                            times.slabs += 1;
                        }
                        Msg::Mark(m) => {
                            if answers.send(Answer::Written { z: m.z }).is_err() {
                                break;
                            }
                        }
                    }
                }
                times
            })
        });

        // the stages
        let mut stage_threads = Vec::new();
        for (i, ((stage, inputs), outputs)) in stages.iter_mut().zip(stage_in).zip(stage_out).enumerate() {
            let answers = answer_tx.clone();
            let name = names[i];
            stage_threads.push(spawn_node(s, arena, move || {
                let mut times = Times::default();
                while let Some(msg) = receive(&inputs, &mut times, failure) {
                    let msg = match msg {
                        Msg::Slab(mut item) => {
                            let t = Instant::now();
                            let _span =
                                tracing::debug_span!("stage", stage = %name, case = %case_id, z0 = item.z0).entered();
                            let slab = CaseSlab {
                                consensus: item.consensus.as_deref().map(|m| &**m),
                                attention_above: item.above.as_deref().map(|m| &**m),
                                rows: Some(&item.set.rows),
                                ..CaseSlab::new(item.z0, item.n, item.set.volumes(), layout)
                            };
                            if let Err(e) = stage.process(&slab) {
                                failure.set(e);
                                break;
                            }
                            if let Some(Shared::AttentionAbove(m)) = stage.share() {
                                item.above = Some(m);
                            }
                            times.busy += t.elapsed();
                            times.slabs += 1;
                            Msg::Slab(item)
                        }
                        Msg::Mark(m) => {
                            if answers.send(Answer::State { z: m.z, i, state: stage.save() }).is_err() {
                                break;
                            }
                            Msg::Mark(m)
                        }
                    };
                    if !outputs.is_empty() && !send(&outputs, msg, &mut times) {
                        break;
                    }
                }
                times
            }));
        }
        drop(answer_tx);

        // The coordinator: a slab checkpoint once the mark has reached every stage and the
        // writes before it have returned.
        struct Pending {
            z: usize,
            mark: Option<Mark>,
            states: Vec<Option<Vec<u8>>>,
            written: bool,
        }
        let mut pending: Vec<Pending> = Vec::new();
        for answer in answer_rx.iter() {
            let z = match &answer {
                Answer::Marked(m) => m.z,
                Answer::State { z, .. } | Answer::Written { z } => *z,
            };
            let at = pending.iter().position(|p| p.z == z).unwrap_or_else(|| {
                let states = vec![None; stage_count];
                pending.push(Pending { z, mark: None, states, written: convert.is_none() });
                pending.len() - 1
            });
            let p = &mut pending[at];
            match answer {
                Answer::Marked(m) => p.mark = Some(m),
                Answer::State { i, state, .. } => p.states[i] = Some(state),
                Answer::Written { .. } => p.written = true,
            }
            if p.mark.is_none() || !p.written || p.states.iter().any(|s| s.is_none()) {
                continue;
            }
            let p = pending.remove(at);
            let mark = p.mark.expect("checked");
            if failure.is_set() {
                continue;
            }
            match save(&mark, p.states.into_iter().map(|s| s.expect("checked")).collect()) {
                Ok(()) if mark.stop => paused = Some(mark.z),
                Ok(()) => {}
                Err(e) => failure.set(e),
            }
        }
        let read = reader.join().map_err(|e| panicked("read", e));
        let mut profile = Vec::new();
        if let Some(h) = converter {
            profile.push(("convert", h.join().map_err(|e| panicked("convert", e))));
        }
        if let Some(h) = consensus {
            profile.push(("consensus", h.join().map_err(|e| panicked("consensus", e))));
        }
        for (h, name) in stage_threads.into_iter().zip(names) {
            profile.push((name, h.join().map_err(|e| panicked(name, e))));
        }
        (read, profile)
    });
    if let Some(e) = failure.first.into_inner().unwrap() {
        return Err(e);
    }
    let ReadDone { digests, times: read_times, slabs, bytes, complete } = read_result?;
    let sent = slabs - slabs0;
    let mut profile = vec![NodeTimes::new(
        "read",
        read_times.busy,
        read_times.waiting,
        read_times.blocked,
        sent as u64,
        bytes - bytes0,
    )];
    for (name, times) in node_times {
        let t = times?;
        // Every node went through every slab read: a case is never finished on part of it.
        if !complete || t.slabs != sent {
            return Err(format!(
                "internal error (please report): the {name} node went through {} of the {sent} slabs read",
                t.slabs
            ));
        }
        profile.push(NodeTimes::new(name, t.busy, t.waiting, t.blocked, sent as u64, bytes - bytes0));
    }
    let end = match paused {
        _ if stopped => End::Stopped,
        Some(z) => End::Paused(z),
        None => End::Finished,
    };
    Ok(Streamed { end, slabs, bytes, digests, profile })
}
