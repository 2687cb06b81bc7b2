//! The `slabflow` command: parses the command line, sets up logging, calls the library.

/// jemalloc, because memory must not grow with a volume's length. glibc's malloc raises its
/// mmap threshold as large blocks are freed, so slab-sized buffers (4–16 MiB, freed on other
/// threads than the ones that allocated them) land on its arenas, which then only grow: one
/// 512×512 case in `released` attention mode peaked at 431 MiB for 48 slices, 799 MiB for
/// 768 and 1285 MiB for 1,536 (over a 1.25 GiB cgroup under a 1 GiB limit), while heaptrack
/// put its live heap at 454 and 471 MiB. Measured on the same cases (contract pipeline, one
/// worker, worst of two output paths; benches/README.md, "Memory"):
///
/// | allocator | released 48 / 768 / 1,536 slices | paper 48 / 768 / 1,536 |
/// |---|---|---|
/// | glibc 2.36 | 431 / 799 / 1285 MiB | 521 / 630 / 769 MiB |
/// | mimalloc 0.1.52 | 526 / 553 / 577 MiB | 596 / 617 / 616 MiB |
/// | jemalloc 5.3 (tikv-jemallocator 0.7) | 435 / 491 / 502 MiB | 517 / 531 / 539 MiB |
///
/// jemalloc stays flat once the stream is under way, at the live heap plus a few percent,
/// with the lowest peaks; unprefixed (Cargo.toml), it also serves blosc's and zstd's C
/// allocations. The stages keep their large buffers from slab to slab as well (released mode
/// then: 468 / 480 / 478 MiB), so the allocator sees little churn, and the memory budget has
/// jemalloc return freed pages when a case would otherwise pass the limit with them, or when
/// jemalloc keeps more than the budget counts ([`purge_allocator`]).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. Freed pages stay with jemalloc for a few seconds
/// (`dirty_decay_ms:5000`), so a worker's next case reuses the pages its last case freed
/// instead of faulting them in anew, and what fragmentation leaves unused goes back to the OS
/// (`muzzy_decay_ms:0`: returned with `MADV_DONTNEED`, not left resident with `MADV_FREE`).
/// All sizes stay in the thread's own arena (`oversize_threshold:0`): by default buffers over
/// 8 MiB (most slabs) go to one shared arena that jemalloc purges eagerly whenever decay is on,
/// and every case faulted its slabs in again. Measured on 8 full-size cases of the contract
/// pipeline, two at a time (benches/README.md, "The inflate floor"):
///
/// | jemalloc options | page faults | peak |
/// |---|---|---|
/// | 5 s decay, the default arena for blocks over 8 MiB (purged eagerly) | 1.10–1.17 M | 1039–1063 MiB |
/// | no decay at all (`-1`), the budget purging when needed | 0.31 M | 1207–1230 MiB |
/// | these | 0.34–0.38 M | 1111–1170 MiB |
///
/// Without decay, the pages fragmentation left unused stayed until the budget purged: on
/// corpora of 48-slice cases the peak rose by 13 % from 4 cases to 32 before settling; with
/// decay it stays within 8 %. The budget still purges every arena when a reservation would
/// pass the limit with pages freed in the last seconds ([`purge_allocator`]).
/// The decay purges inline, at allocations, and so also returns some of the buffers a thread
/// frees and allocates again a moment later: loops over a volume's chunks keep their buffers
/// (`zarr::read::chunk_into`; review's export of one 768-slice case took 24.4 s and 8.3 M page
/// faults with a new buffer per chunk, 17.3 s and 3.7 M with kept ones, as without decay).
/// jemalloc's background threads (`background_thread:true`) purge on schedule instead, but
/// raised short runs' peaks by up to 110 MiB. `MALLOC_CONF` in the environment still overrides.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[unsafe(no_mangle)]
#[used]
static malloc_conf: MallocConf = MallocConf(c"dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0".as_ptr());

/// A C string jemalloc reads once; never written.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: points at a 'static, immutable C string.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
unsafe impl Sync for MallocConf {}

/// Returns every arena's dirty pages to the OS (`arena.<MALLCTL_ARENAS_ALL>.purge`): run by the
/// memory budget before a reservation would pass the limit with pages that ended cases freed,
/// or when the process holds more than the budget counts (`slabflow::pipeline::budget`).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn purge_allocator() {
    // SAFETY: a documented mallctl taking no value (null old/new pointers, length 0).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// The calling thread's jemalloc arena (`thread.arena`).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn thread_arena() -> Option<u32> {
    let mut arena: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: a documented mallctl reading an unsigned into a buffer of its size.
    let r = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.arena".as_ptr(),
            (&mut arena as *mut u32).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0).then_some(arena)
}

/// Binds the calling thread to jemalloc arena `arena` (`thread.arena`).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn bind_thread_arena(mut arena: u32) {
    // SAFETY: a documented mallctl writing an unsigned of its size.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.arena".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&mut arena as *mut u32).cast(),
            std::mem::size_of::<u32>(),
        );
    }
}

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use slabflow::pipeline::shard::Shard;
use slabflow::pipeline::{self, Overrides, Pipeline, RunError, RunOptions};
use slabflow::slurm;
use slabflow::synth::{self, SynthOptions};

#[derive(Parser)]
#[command(
    name = "slabflow",
    version,
    about = "Streaming, out-of-core processing of CT corpora: NIfTI → Zarr, attention, metrics, ranking"
)]
struct Cli {
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline over a corpus.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Corpus root (overrides [input] root).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output directory (overrides [output] dir).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Peak memory limit, e.g. 2GiB (overrides [runtime] memory_limit).
        #[arg(long)]
        memory_limit: Option<String>,
        /// Discard earlier progress in the output directory and start over (with --shard:
        /// that shard's only).
        #[arg(long)]
        fresh: bool,
        /// Run one shard of the corpus: K/N (0 ≤ K < N), or `auto` to take K and N from a
        /// SLURM array task or a Kubernetes Indexed Job. Then `slabflow merge` writes the tables.
        #[arg(long, value_name = "K/N|auto")]
        shard: Option<String>,
        /// The number of shards, for `--shard auto` in a Kubernetes Indexed Job.
        #[arg(long, value_name = "N")]
        shards: Option<usize>,
        /// Say what the run would do (cases to compute, recompute and why, resume, keep, drop)
        /// and do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write an HTML page of a run's ranking: attention size per case by dataset (Figure 4 of
    /// the paper, flagged cases marked) and the ranking table.
    Report {
        /// The run's output directory (with ranking.csv).
        #[arg(long, value_parser = output_dir)]
        output: PathBuf,
        /// Where to write the page (default: OUTPUT/report.html).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Write the tables of a sharded run (metrics.csv, ranking.csv, failures.csv) once every
    /// shard has finished: the same bytes as a single-node run.
    Merge {
        /// The output directory the shards share.
        #[arg(long, value_parser = output_dir)]
        output: PathBuf,
    },
    /// Write (and with --submit, submit) a SLURM array job running a pipeline in N shards,
    /// and a merge job that runs when they all succeeded.
    Slurm {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Number of array tasks (shards).
        #[arg(long)]
        shards: usize,
        /// Corpus root (overrides [input] root).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output directory (overrides [output] dir); the scripts go to its `slurm/` folder.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Peak memory limit per task (overrides [runtime] memory_limit); sets `--mem`.
        #[arg(long)]
        memory_limit: Option<String>,
        /// CPUs per task.
        #[arg(long, default_value_t = 2)]
        cpus: usize,
        /// Seconds before the time limit at which SLURM warns a task (SIGTERM): it saves its
        /// cases in flight and is requeued.
        #[arg(long, default_value_t = 300)]
        warn_secs: u64,
        /// Submit with `sbatch` (the array, then the merge with --dependency=afterok).
        #[arg(long)]
        submit: bool,
        /// More `#SBATCH` options for both jobs, after `--` (e.g. -- --partition=short --time=4:00:00).
        #[arg(last = true)]
        sbatch: Vec<String>,
    },
    /// List the stage kinds and their parameters with defaults.
    Stages,
    /// Print a pipeline's stage graph: nodes, edges with their channel capacity and bytes per
    /// item, the memory each node holds, what each writes.
    Plan {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Corpus root (overrides [input] root): the figures are for its first case.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Peak memory limit (overrides [runtime] memory_limit).
        #[arg(long)]
        memory_limit: Option<String>,
        /// `text`, or `dot` for Graphviz (`… --format dot | dot -Tsvg > plan.svg`).
        #[arg(long, default_value = "text", value_parser = ["text", "dot"])]
        format: String,
    },
    /// Tell what a run in an output directory has done, failed and left.
    Status {
        /// The output directory of the run.
        #[arg(long, value_parser = output_dir)]
        output: PathBuf,
    },
    /// Check a pipeline file and report every problem at once.
    Validate { pipeline: PathBuf },
    /// Write a synthetic corpus (CT phantoms, three models' soft predictions, labels).
    Synth {
        /// Corpus directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Number of cases.
        #[arg(long, default_value_t = 8)]
        cases: usize,
        /// Volume shape in voxels: X Y Z.
        #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"], default_values_t = [128, 128, 64])]
        shape: Vec<usize>,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write only the CT volumes (no predictions or labels).
        #[arg(long)]
        ct_only: bool,
        /// Write original labels for every class of every case.
        #[arg(long)]
        all_labels: bool,
    },
    /// Synthesize a small corpus and run the default pipeline on it.
    Demo {
        /// Work directory for the corpus and the outputs.
        #[arg(long, default_value = "slabflow-demo")]
        dir: PathBuf,
        /// Number of cases.
        #[arg(long, default_value_t = 12)]
        cases: usize,
    },
}

/// An existing output directory: a path, a `file://` URL, or `s3://BUCKET/PREFIX` (worked on
/// through a scratch folder mirrored to the bucket).
fn output_dir(s: &str) -> Result<PathBuf, String> {
    if s.starts_with("s3://") {
        return slabflow::files::mirror::attach(std::path::Path::new(s)).map_err(|e| e.to_string());
    }
    if s.contains("://") && !s.starts_with("file://") {
        return Err(format!("{s}: outputs are on a disk or in a bucket (s3://BUCKET/PREFIX)"));
    }
    Ok(slabflow::files::objects::local(s))
}

fn main() -> ExitCode {
    // Scratch folders of bucket outputs, removed when main returns.
    let _scratch = slabflow::files::mirror::Scratch;
    let cli = Cli::parse();
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    slabflow::pipeline::budget::set_memory_release(purge_allocator);
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    slabflow::pipeline::flow::set_thread_arena(thread_arena, bind_thread_arena);
    // The pool's threads (chunk compression, stage kernels) yield to the reader threads when
    // both want a core: inflating a .nii.gz is one stream on one core, the critical path of
    // a conversion, while the pool's work can wait a moment.
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| {
            // SAFETY: setpriority on the calling thread (who = 0; per thread on Linux); a
            // failure only leaves the default priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
        })
        .build_global();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    // SLABFLOW_TRACE=trace.json: every span (each stage on each slab, each slab read and
    // converted) as a Chrome trace, for Perfetto or chrome://tracing; written when the command
    // ends (held by `_trace`).
    let (trace, _trace) = match std::env::var_os("SLABFLOW_TRACE") {
        Some(path) => {
            let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new().file(path).include_args(true).build();
            (Some(layer.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(fmt).with(trace).init();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", slabflow::files::mirror::shown(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { pipeline, input, output, memory_limit, fresh, shard, shards, dry_run } => {
            let overrides = Overrides { input, output, memory_limit, ..Default::default() };
            let p = match Pipeline::load(&pipeline, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    return Ok(ExitCode::from(2));
                }
            };
            let shard =
                match shard.as_deref().map(|s| if s == "auto" { Shard::from_env(shards) } else { Shard::parse(s) }) {
                    None => None,
                    Some(Ok(s)) => Some(s),
                    Some(Err(e)) => {
                        eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                        return Ok(ExitCode::from(2));
                    }
                };
            if dry_run {
                let opts = RunOptions { fresh, stop: None, shard };
                return match slabflow::pipeline::dry_run::dry_run(&p, &opts) {
                    Ok(plan) => {
                        plan.print();
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                        Ok(ExitCode::from(2))
                    }
                };
            }
            run(&p, fresh, shard)
        }
        Command::Report { output, to } => {
            let file = to.unwrap_or_else(|| output.join("report.html"));
            match slabflow::report::write_report(&output, &file) {
                Ok(n) => {
                    eprintln!("Wrote {} ({n} cases)", slabflow::files::mirror::display(&file));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Merge { output } => match slabflow::pipeline::shard::merge(&output) {
            Ok(m) => {
                eprintln!(
                    "Merged {} shards: {} cases succeeded, {} failed; tables in {}",
                    m.shards,
                    m.succeeded,
                    m.failures.len(),
                    slabflow::files::mirror::display(&output)
                );
                if let Some(r) = &m.ranking {
                    let flagged = r.iter().filter(|r| r.flagged).count();
                    eprintln!("Ranking: {flagged} of {} cases flagged for revision.", r.len());
                }
                for (id, err) in m.failures.iter().take(10) {
                    eprintln!("  failed {id}: {err}");
                }
                Ok(if m.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            Err(e) => {
                eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                Ok(ExitCode::from(2))
            }
        },
        Command::Slurm { pipeline, shards, input, output, memory_limit, cpus, warn_secs, submit, sbatch } => {
            let overrides = Overrides { input, output, memory_limit, ..Default::default() };
            let p = match Pipeline::load(&pipeline, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    return Ok(ExitCode::from(2));
                }
            };
            let job = slurm::ArrayJob { pipeline, p: &p, shards, cpus, warn_secs, sbatch };
            let scripts = job.write()?;
            eprintln!("Wrote {} and {}", scripts.array.display(), scripts.merge.display());
            if submit {
                let (array, merge) = scripts.submit()?;
                eprintln!(
                    "Submitted array job {array} ({shards} tasks) and merge job {merge} (after the array succeeds)."
                );
                eprintln!(
                    "Follow with: squeue -j {array},{merge}; slabflow status --output {}",
                    slabflow::files::mirror::display(&p.output.dir)
                );
            } else {
                eprintln!("Submit with: bash {}", scripts.submit_script.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { pipeline, input, memory_limit, format } => {
            let overrides = Overrides { input, memory_limit, paths_later: true, ..Default::default() };
            let p = match Pipeline::load(&pipeline, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    return Ok(ExitCode::from(2));
                }
            };
            let plan = pipeline::plan::plan(&p);
            match format.as_str() {
                "dot" => print!("{}", plan.dot()),
                _ => print!("{}: {} stages\n{}", pipeline.display(), p.stages.len(), plan.text()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stages => {
            for k in slabflow::stages::REGISTRY {
                println!("{}\n    {}", k.kind, k.summary);
                for (name, default, meaning) in k.params {
                    println!("    {name:<20} default {default:<10} {meaning}");
                }
                if k.per_case {
                    // What a rerun goes by: a changed input of these kinds reruns the stage.
                    let reads: Vec<String> = k.reads.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
                    let writes = if k.writes.is_empty() { "tables only".to_string() } else { k.writes.join(", ") };
                    println!("    reads {}; writes {writes}", reads.join(", "));
                } else {
                    println!("    runs once over the corpus, from the journal");
                }
                let names = |v: &[slabflow::stages::Product]| v.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
                if !k.needs.is_empty() {
                    println!("    needs {}", names(k.needs));
                }
                if !k.makes.is_empty() {
                    println!("    makes {}", names(k.makes));
                }
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { output } => {
            // Why the corpus was not counted, when it was not.
            let why = std::cell::RefCell::new(String::new());
            let discover = |m: &slabflow::checkpoint::Manifest| {
                let p = Pipeline::saved_in(m, &output)
                    .map_err(|e| {
                        let kinds = e.problems.iter().any(|p| p.contains("unknown kind"));
                        *why.borrow_mut() = if kinds {
                            "its pipeline has stage kinds this slabflow does not have (a program that registers them reads it)".into()
                        } else {
                            format!("its saved pipeline does not load: {}", e.problems.join("; "))
                        };
                    })
                    .ok()?;
                slabflow::input::discover(&p.input)
                    .map_err(|e| *why.borrow_mut() = format!("the corpus cannot be read now: {e}"))
                    .ok()
                    .map(|cases| cases.len())
            };
            let st = match slabflow::checkpoint::status(&output, discover) {
                Ok(st) => st,
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    return Ok(ExitCode::from(2));
                }
            };
            let shown = slabflow::files::mirror::display;
            println!("output:   {}", shown(&output));
            println!("pipeline: {} (slabflow {})", shown(&st.pipeline_file), st.fingerprint.slabflow);
            println!("input:    {}", st.fingerprint.input.display());
            match st.discovered {
                Some(n) => println!(
                    "cases:    {n} discovered, {} done, {} failed, {} left",
                    st.done,
                    st.failed.len(),
                    n.saturating_sub(st.done + st.failed.len())
                ),
                None => {
                    println!("cases:    {} done, {} failed (not counted: {})", st.done, st.failed.len(), why.borrow())
                }
            }
            for sh in &st.shards {
                println!(
                    "  shard {}: {} cases, {} done, {} failed, {} left",
                    sh.shard,
                    sh.assigned,
                    sh.done,
                    sh.failed,
                    sh.assigned.saturating_sub(sh.done + sh.failed)
                );
            }
            for (id, why) in &st.redoing {
                println!("  redoing {id}: {why} (interrupted; the next run finishes it)");
            }
            for (id, z, nz) in &st.partial {
                println!("  in progress {id}: slices 0–{z} of {nz} saved (a slab checkpoint; resumes there)");
            }
            for (id, e) in st.failed.iter().take(20) {
                println!("  failed {id}: {e}");
            }
            // What the same run (or each shard of it) would do now: the corpus may have
            // changed since.
            let saved = slabflow::checkpoint::Manifest::read(&output).ok().flatten();
            let plans: Vec<(String, slabflow::pipeline::dry_run::DryRun)> = saved
                .and_then(|m| {
                    let p = Pipeline::saved_in(&m, &output).ok()?;
                    let runs: Vec<(String, Option<Shard>)> = match &m.split {
                        None => vec![("next run".into(), None)],
                        Some(split) => (0..split.shards)
                            .map(|k| {
                                let s = Shard { index: k, count: split.shards };
                                (format!("next run of shard {s}"), Some(s))
                            })
                            .collect(),
                    };
                    let plans = runs.into_iter().filter_map(|(label, shard)| {
                        let opts = RunOptions { shard, ..Default::default() };
                        let plan = slabflow::pipeline::dry_run::dry_run(&p, &opts).ok()?;
                        plan.refused.is_none().then_some((label, plan))
                    });
                    Some(plans.collect())
                })
                .unwrap_or_default();
            for (label, plan) in plans {
                println!(
                    "{label}: {} to compute, {} to recompute, {} to redo in part, {} to resume, {} to keep, {} to drop",
                    plan.compute.len(),
                    plan.recompute.len(),
                    plan.redo.len(),
                    plan.resume.len(),
                    plan.keep.len(),
                    plan.drop.len()
                );
                for (id, why) in plan.recompute.iter().take(20) {
                    println!("  recompute {id}: {why}");
                }
                for (id, why, stages) in plan.redo.iter().take(20) {
                    println!("  redo {id} ({why}): {}", stages.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { pipeline } => {
            match Pipeline::load(&pipeline, &Overrides { paths_later: true, ..Default::default() }) {
                Ok(p) => {
                    println!("{}: valid ({} stages)", pipeline.display(), p.stages.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Synth { out, cases, shape, seed, ct_only, all_labels } => {
            let shape = [shape[0], shape[1], shape[2]];
            anyhow::ensure!(shape.iter().all(|&n| n >= 4), "--shape: every extent must be at least 4");
            let ids = synth::synth(&SynthOptions { out: out.clone(), cases, shape, seed, ct_only, all_labels })
                .context("writing the synthetic corpus")?;
            eprintln!(
                "Wrote {} synthetic cases ({}×{}×{}) to {}",
                ids.len(),
                shape[0],
                shape[1],
                shape[2],
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, cases } => {
            let corpus = dir.join("corpus");
            let out = dir.join("out");
            eprintln!("Synthesizing {cases} cases into {} …", corpus.display());
            let _ = std::fs::remove_dir_all(&corpus);
            synth::synth(&SynthOptions {
                out: corpus.clone(),
                cases,
                shape: [96, 96, 48],
                seed: 1,
                ct_only: false,
                all_labels: false,
            })
            .context("writing the demo corpus")?;
            let file = dir.join("pipeline.toml");
            std::fs::write(&file, slabflow::DEMO_PIPELINE).with_context(|| format!("writing {}", file.display()))?;
            let overrides =
                Overrides { input: Some(corpus), output: Some(out.clone()), memory_limit: None, ..Default::default() };
            let p = Pipeline::parse(&file, slabflow::DEMO_PIPELINE, &overrides).map_err(anyhow::Error::from)?;
            let code = run(&p, true, None)?;
            let report = out.join("report.html");
            let report_line = match slabflow::report::write_report(&out, &report) {
                Ok(_) => format!("\nReport (the run, the flagged cases' pictures, the metrics): {}", report.display()),
                Err(_) => String::new(),
            };
            eprintln!(
                "Pipeline: {}\nCases (NIfTI-Zarr): {}\nFinal labels (.nii.gz): {}\nFor review: {} and {}\nFailures: {}{report_line}",
                file.display(),
                out.join("cases").display(),
                out.join("release").display(),
                out.join("worklist.csv").display(),
                out.join("review").display(),
                out.join("failures.csv").display()
            );
            Ok(code)
        }
    }
}

fn run(p: &Pipeline, fresh: bool, shard: Option<Shard>) -> anyhow::Result<ExitCode> {
    // Ctrl-C / SIGTERM (SLURM sends it before the kill): stop taking new cases, save those in
    // flight at their next slab boundary (a slab checkpoint), write the tables, say how to
    // resume. A second signal ends the process at once; the journal keeps what was saved.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let opts = RunOptions { fresh, stop: Some(stop), shard };
    match pipeline::run(p, &opts) {
        Ok(summary) => {
            summary.print();
            if summary.interrupted {
                eprintln!(
                    "Interrupted: {} cases finished, {} failed, {} left. Run the same command again to resume.",
                    summary.succeeded,
                    summary.failures.len(),
                    summary.left
                );
                return Ok(ExitCode::from(130));
            }
            if let Some(s) = summary.shard {
                eprintln!(
                    "Shard {s} finished. Once every shard has: slabflow merge --output {}",
                    slabflow::files::mirror::display(&summary.output)
                );
            }
            Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e @ (RunError::Plan(_) | RunError::Input(_) | RunError::Locked { .. } | RunError::Checkpoint(_))) => {
            eprintln!("error: {}", slabflow::files::mirror::shown(&e.to_string()));
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
