//! `slabflow slurm` on a real SLURM cluster: a one-node cluster on loopback (Debian's
//! `slurm-wlm` and `munge`, started here as root with a generated `slurm.conf`), a 4-task array
//! plus the merge job, compared byte for byte with a single-node run; then a task warned
//! mid-way (SIGTERM to its batch shell, as `--signal=B:TERM` sends it before the time limit)
//! that saves, requeues itself and resumes; and a task killed and requeued by the cluster
//! (`scontrol requeue`), which resumes too — each time with the same merged result.
//!
//! Skipped (with a message) without root or the SLURM binaries, unless SLABFLOW_REQUIRE_SLURM
//! is set — `.ci/run` installs them and sets it, so CI always runs these.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

fn required() -> bool {
    std::env::var_os("SLABFLOW_REQUIRE_SLURM").is_some()
}

fn skip(why: &str) -> Option<Cluster> {
    assert!(!required(), "SLABFLOW_REQUIRE_SLURM is set but {why}");
    eprintln!("skipped: {why}");
    None
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Cluster {
    /// Starts munged (if it is not running), slurmctld and slurmd; waits for the node to be idle.
    fn start() -> Option<Cluster> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip("starting SLURM daemons needs root");
        }
        if !Path::new("/usr/sbin/slurmctld").exists() || !Path::new("/usr/sbin/munged").exists() {
            return skip("slurm-wlm and munge are not installed (apt-get install slurm-wlm munge)");
        }
        let key = Path::new("/etc/munge/munge.key");
        if !key.exists() {
            let bytes: Vec<u8> = (0..1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            std::fs::create_dir_all("/etc/munge").unwrap();
            std::fs::write(key, bytes).unwrap();
            run_ok(Command::new("chown").args(["munge:munge", "/etc/munge/munge.key"]));
            run_ok(Command::new("chmod").args(["400", "/etc/munge/munge.key"]));
        }
        let munge_running = Command::new("pgrep").arg("-x").arg("munged").output().is_ok_and(|o| o.status.success());
        if !munge_running {
            std::fs::create_dir_all("/run/munge").unwrap();
            let _ = Command::new("chown").args(["munge:munge", "/run/munge"]).status();
            run_ok(Command::new("runuser").args(["-u", "munge", "--", "/usr/sbin/munged", "--force"]));
        }
        let host = run_ok(Command::new("hostname").arg("-s")).trim().to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=slabflowtest
SlurmctldHost={host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SlurmUser=root
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort=46817
SlurmdPort=46818
MinJobAge=600
KillWait=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"
            ),
        )
        .unwrap();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let cluster = Cluster { dir, conf };
        run_ok(cluster.cmd("/usr/sbin/slurmctld").args(["-f", cluster.conf.to_str().unwrap()]));
        run_ok(cluster.cmd("/usr/sbin/slurmd").args(["-f", cluster.conf.to_str().unwrap()]));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = cluster.cmd("sinfo").args(["-h", "-o", "%T"]).output().unwrap();
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if state == "idle" {
                break;
            }
            assert!(Instant::now() < deadline, "the SLURM node did not come up (state {state:?}): {}", cluster.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(cluster)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until no job is queued or running.
    fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let q = run_ok(self.cmd("squeue").args(["-h", "-o", "%i %T %r"]));
            if q.trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "jobs still queued after {timeout:?}:\n{q}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid in ["slurmd.pid", "slurmctld.pid"] {
            if let Some(pid) =
                std::fs::read_to_string(self.dir.path().join(pid)).ok().and_then(|p| p.trim().parse().ok())
            {
                // SAFETY: signalling a daemon this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn outputs(out: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut t = util::tree(&out.join("cases"));
    for f in ["metrics.csv", "ranking.csv", "failures.csv"] {
        t.insert(PathBuf::from(f), std::fs::read(out.join(f)).unwrap_or_default());
    }
    t
}

fn pipeline(dir: &Path) -> PathBuf {
    util::convert_pipeline(
        dir,
        "[runtime]\nmemory_limit = \"256MiB\"\nslab_depth = 4\ncheckpoint_secs = 0\nworkers = 1\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.25\n",
    )
}

/// `slabflow slurm … --submit`; returns the array job id.
fn submit(cluster: &Cluster, p: &Path, corpus: &Path, out: &Path) -> String {
    let o = cluster
        .cmd(env!("CARGO_BIN_EXE_slabflow"))
        .args(["slurm", p.to_str().unwrap(), "--shards", "4", "--cpus", "1", "--warn-secs", "30", "--submit"])
        .args(["--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(["--", "--time=20"])
        .output()
        .unwrap();
    let err = util::stderr(&o);
    assert!(o.status.success(), "{err}");
    let id = err.split("Submitted array job ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_default();
    assert!(!id.is_empty(), "{err}");
    id.to_string()
}

/// SLURM holds a requeued job back for a while (BeginTime); once `task` is pending again, let
/// it start now.
fn start_requeued_now(cluster: &Cluster, task: &str, out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = run_ok(cluster.cmd("squeue").args(["-h", "-j", task, "-o", "%T"])).trim().to_string();
        if state == "PENDING" {
            let o =
                cluster.cmd("scontrol").args(["update", &format!("JobId={task}"), "StartTime=now"]).output().unwrap();
            if o.status.success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{task} was not requeued (state {state:?}):\n{}", logs_of(out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs_of(out: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(out.join("slurm/logs")).into_iter().flatten().flatten() {
        text += &format!("== {}\n{}\n", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    text
}

#[test]
fn a_slurm_array_and_its_merge_equal_a_single_node_run_even_with_requeued_tasks() {
    let Some(cluster) = Cluster::start() else { return };
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 8, [128, 128, 96]);
    let p = pipeline(t.path());
    let reference = t.path().join("reference");
    let o = util::run(&p, &corpus, &reference, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));

    // 1. Four tasks and the merge, left alone.
    let out = t.path().join("out");
    let began = Instant::now();
    submit(&cluster, &p, &corpus, &out);
    cluster.wait_idle(Duration::from_secs(300));
    eprintln!("array + merge: {:?}", began.elapsed());
    assert!(out.join("metrics.csv").is_file(), "the merge job did not run:\n{}\n{}", logs_of(&out), cluster.logs());
    assert_eq!(outputs(&out), outputs(&reference), "logs:\n{}", logs_of(&out));
    let script = std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3") && script.contains("#SBATCH --mem=320M"), "{script}");
    assert!(script.contains("#SBATCH --requeue") && script.contains("#SBATCH --time=20"), "{script}");

    // 2. Task 1 is stopped mid-way as SLURM's time-limit warning stops it (SIGTERM to the
    //    batch shell): it saves at a slab boundary, requeues itself and resumes.
    let out2 = t.path().join("out2");
    let array = submit(&cluster, &p, &corpus, &out2);
    let task = format!("{array}_1");
    let shard = out2.join(".slabflow/shards/1-of-4/cases");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&shard).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "task 1 never started:\n{}", logs_of(&out2));
        std::thread::sleep(Duration::from_millis(20));
    }
    // What `--signal=B:TERM@…` does before the time limit: SIGTERM to the task's batch shell.
    let job = run_ok(cluster.cmd("squeue").args(["-h", "-j", &task, "-o", "%A"])).trim().to_string();
    let pids = run_ok(Command::new("pgrep").args(["-f", &format!("job0*{job}/slurm_script")]));
    for pid in pids.split_whitespace() {
        run_ok(Command::new("kill").args(["-TERM", pid]));
    }
    start_requeued_now(&cluster, &task, &out2);
    cluster.wait_idle(Duration::from_secs(300));
    let logs = logs_of(&out2);
    assert!(logs.contains(&format!("slabflow: saved; requeueing {task}")), "task 1 was not requeued:\n{logs}");
    let job = run_ok(cluster.cmd("scontrol").args(["show", "job", &task]));
    assert!(job.contains("Restarts=1"), "{job}");
    assert_eq!(outputs(&out2), outputs(&reference), "logs:\n{logs}");

    // 3. Task 2 killed mid-way by the cluster itself (`scontrol requeue`: SIGTERM to all its
    //    processes, then SIGKILL after KillWait) and put back in the queue: it resumes.
    let out3 = t.path().join("out3");
    let began = Instant::now();
    let array = submit(&cluster, &p, &corpus, &out3);
    let task = format!("{array}_2");
    let shard = out3.join(".slabflow/shards/2-of-4/cases");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&shard).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "task 2 never started:\n{}", logs_of(&out3));
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(cluster.cmd("scontrol").args(["requeue", &task]));
    start_requeued_now(&cluster, &task, &out3);
    cluster.wait_idle(Duration::from_secs(300));
    eprintln!("requeued by the cluster: {:?}", began.elapsed());
    let job = run_ok(cluster.cmd("scontrol").args(["show", "job", &task]));
    assert!(job.contains("Restarts=1"), "{job}");
    assert_eq!(outputs(&out3), outputs(&reference), "logs:\n{}", logs_of(&out3));
}
