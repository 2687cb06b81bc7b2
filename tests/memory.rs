//! Memory that stays flat however long a volume is.
//!
//! - A long, thin volume (64×64×4,096) streamed through the whole loop (normalize, attention,
//!   metrics, assemble with its `.nii.gz` export, evaluate, rank, review), in both attention
//!   modes: the peak resident memory once the last slab is read stays within a small margin of
//!   the peak after the first tenth of the slices. glibc's malloc failed this (38 → 58 MiB):
//!   its heap grew with every slab. Samples are taken as the run logs each slab, so the test
//!   measures memory against progress, never against time.
//! - A 512×512×1,536 case in both attention modes finishes inside a memory cgroup of 1.25 GiB
//!   under `memory_limit = "1GiB"` (what `slabflow slurm` asks SLURM for), without the run
//!   warning that its peak went over what it reserved. Needs root and a writable memory
//!   controller (cgroup v1 or v2); skipped with a message otherwise, unless
//!   SLABFLOW_REQUIRE_CGROUP is set (`.ci/run` sets it where the controller is writable).

mod util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The contract's layout with every stage kind; `mode` is the attention mode.
fn loop_pipeline(dir: &Path, mode: &str) -> PathBuf {
    let stages = format!(
        r#"[runtime]
memory_limit = "1GiB"
[[stages]]
kind = "normalize"
[[stages]]
kind = "attention"
mode = "{mode}"
[[stages]]
kind = "metrics"
[[stages]]
kind = "assemble"
export_nifti = true
[[stages]]
kind = "evaluate"
[[stages]]
kind = "rank"
budget = 1.0
[[stages]]
kind = "review"
"#
    );
    util::convert_pipeline(dir, &stages)
}

fn synth_all_labels(dir: &Path, shape: [usize; 3]) {
    util::synth_with(dir, 1, shape, &["--all-labels"]);
}

/// `VmHWM` of process `pid` in bytes.
fn peak_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[test]
fn memory_does_not_grow_with_the_slices_of_a_long_volume() {
    if peak_of(std::process::id()).is_none() {
        eprintln!("skipped: no /proc/PID/status VmHWM on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let nz = 4096;
    synth_all_labels(&corpus, [64, 64, nz]);
    for mode in ["paper", "released"] {
        let pipeline = loop_pipeline(dir.path(), mode);
        let out = dir.path().join(format!("out-{mode}"));
        let mut child = util::bin()
            .args(["run", pipeline.to_str().unwrap(), "--input", corpus.to_str().unwrap()])
            .args(["--output", out.to_str().unwrap()])
            // One case at a time, each slab logged ("Slab read.", z0=…).
            .env("RUST_LOG", "slabflow=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (mut first_tenth, mut last, mut slabs) = (None, 0u64, 0);
        let mut log = String::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(z0) = line.contains("Slab read.").then(|| slab_start(&line)).flatten() {
                slabs += 1;
                last = last.max(peak_of(pid).unwrap_or(0));
                if z0 >= nz / 10 && first_tenth.is_none() {
                    first_tenth = Some(last);
                }
            } else if log.len() < 20_000 {
                log.push_str(&line);
                log.push('\n');
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "{mode}: the run failed: {log}");
        assert_eq!(slabs, nz / 16, "{mode}: one log line per slab of 16 slices expected: {log}");
        assert!(!log.contains("went over"), "{mode}: the run warned about its memory: {log}");
        let first = first_tenth.unwrap();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "{mode}: peak {:.1} MiB after a tenth of the slices, {:.1} MiB at the last slab",
            mib(first),
            mib(last)
        );
        // A small margin for the allocator's bookkeeping; a heap that grows with the slabs
        // (glibc's: 38 → 58 MiB here) is far outside it.
        let margin = first / 10 + (4 << 20);
        assert!(
            last <= first + margin,
            "{mode}: memory grew with the slices: {:.1} MiB after a tenth of them, {:.1} MiB at the end",
            mib(first),
            mib(last)
        );
    }
}

fn slab_start(line: &str) -> Option<usize> {
    let at = line.find("z0=")? + 3;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A memory cgroup made for one test, removed when dropped.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn create(limit: u64) -> Result<MemoryCgroup, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("creating a memory cgroup needs root".into());
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("slabflow-test-{}-{nanos}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, v2, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), false, "memory.limit_in_bytes")
        } else if std::fs::read_to_string(v2.join("cgroup.controllers")).is_ok_and(|c| c.contains("memory")) {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
            (v2.join(&name), true, "memory.max")
        } else {
            return Err("no memory cgroup controller (v1 /sys/fs/cgroup/memory or v2 with memory)".into());
        };
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        std::fs::write(cg.dir.join(limit_file), limit.to_string()).map_err(|e| format!("{limit_file}: {e}"))?;
        if v2 {
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        Ok(cg)
    }

    /// How often the kernel's OOM killer struck inside.
    fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_long_full_size_case_finishes_inside_a_memory_cgroup() {
    let required = std::env::var_os("SLABFLOW_REQUIRE_CGROUP").is_some();
    let limit = 5 << 28; // 1.25 GiB
    let cg = match MemoryCgroup::create(limit) {
        Ok(cg) => cg,
        Err(why) => {
            assert!(!required, "SLABFLOW_REQUIRE_CGROUP is set but {why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    synth_all_labels(&corpus, [512, 512, 1536]);
    for mode in ["paper", "released"] {
        // The contract's pipeline in that mode.
        let contract = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/contract.toml"))
            .unwrap()
            .replace("mode = \"paper\"", &format!("mode = \"{mode}\""));
        assert!(contract.contains("memory_limit = \"1GiB\"") && contract.contains(&format!("mode = \"{mode}\"")));
        let pipeline = dir.path().join(format!("contract-{mode}.toml"));
        std::fs::write(&pipeline, contract).unwrap();
        let out = dir.path().join(format!("out-{mode}"));
        // The shell joins the cgroup, then becomes slabflow: every byte it allocates counts.
        let o = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" run "$3" --input "$4" --output "$5""#)
            .args(["sh", cg.dir.to_str().unwrap(), env!("CARGO_BIN_EXE_slabflow")])
            .args([&pipeline, &corpus, &out])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let err = util::stderr(&o);
        assert_eq!(cg.oom_kills(), 0, "{mode}: the OOM killer struck in a 1.25 GiB cgroup: {err}");
        assert!(o.status.success(), "{mode}: the run failed ({:?}): {err}", o.status);
        assert!(!err.contains("went over"), "{mode}: the run's peak went over its reservation: {err}");
        eprintln!("{mode}: {}", err.lines().find(|l| l.contains("succeeded")).unwrap_or_default());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
