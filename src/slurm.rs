//! `slabflow slurm`: a pipeline as a SLURM array job of N shards, plus a merge job that runs
//! once every task succeeded (`--dependency=afterok`).
//!
//! What the scripts promise (and `tests/slurm.rs` checks on a real cluster):
//! - each task runs `slabflow run … --shard auto`, so task K of N takes shard K/N with its own
//!   journal in the shared output directory;
//! - `--requeue` and `--signal=B:TERM@<warn>`: before the time limit (or on pre-emption) the
//!   task's shell forwards SIGTERM to slabflow, which saves its cases in flight at a slab
//!   boundary; the task then requeues itself and its next start resumes where it stopped;
//! - a task whose run ended with failed cases (exit 1) still succeeds: those cases are recorded
//!   in `failures.csv` by the merge, like on one node; only a refused run (exit 2) or a crash
//!   fails the task and holds the merge back;
//! - `--mem` is the pipeline's `memory_limit` plus a quarter for the page cache of the task's
//!   own writes, which cgroups count too.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pipeline::Pipeline;
use crate::pipeline::config::human_bytes;

/// An array job to write.
pub struct ArrayJob<'a> {
    /// The pipeline file (its path goes into the script).
    pub pipeline: PathBuf,
    pub p: &'a Pipeline,
    pub shards: usize,
    pub cpus: usize,
    /// Seconds of warning before the time limit.
    pub warn_secs: u64,
    /// More `#SBATCH` options for both jobs.
    pub sbatch: Vec<String>,
}

/// The scripts written, in `<output>/slurm/`.
pub struct Scripts {
    pub array: PathBuf,
    pub merge: PathBuf,
    pub submit_script: PathBuf,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(p).map_err(io_err(format!("{}", p.display())))
}

impl ArrayJob<'_> {
    /// `--mem` in MiB: the memory limit and a quarter more.
    pub fn mem_mib(&self) -> u64 {
        (self.p.memory_limit + self.p.memory_limit / 4).div_ceil(1 << 20)
    }

    /// Writes `array.sbatch`, `merge.sbatch` and `submit.sh` into `<output>/slurm/` (for a
    /// bucket output, `./slabflow-slurm/`).
    pub fn write(&self) -> std::io::Result<Scripts> {
        if self.shards == 0 {
            return Err(std::io::Error::other("--shards must be at least 1"));
        }
        // A bucket output is named by its URL in the scripts, which go to ./slabflow-slurm/
        // (the run's scratch folder is its own, and goes when it ends).
        let bucket = crate::files::mirror::of(&self.p.output.dir).map(|(m, _)| m.url.clone());
        let (out, dir) = match &bucket {
            Some(url) => {
                std::fs::create_dir_all("slabflow-slurm/logs").map_err(io_err("slabflow-slurm".into()))?;
                (PathBuf::from(url), absolute(Path::new("slabflow-slurm"))?)
            }
            None => {
                let out = &self.p.output.dir;
                std::fs::create_dir_all(out.join("slurm").join("logs"))
                    .map_err(io_err(format!("{}", out.display())))?;
                let out = absolute(out)?;
                let dir = out.join("slurm");
                (out, dir)
            }
        };
        std::fs::create_dir_all(dir.join("logs")).map_err(io_err(format!("{}", dir.display())))?;
        let exe = std::env::current_exe()?;
        let (exe, pipeline, input) = (
            quote(&exe.to_string_lossy()),
            quote(&absolute(&self.pipeline)?.to_string_lossy()),
            // A bucket root is named as it is; a local one absolutely (jobs start elsewhere).
            quote(&if crate::files::objects::is_object(&self.p.input.root) {
                self.p.input.root.to_string_lossy().into_owned()
            } else {
                absolute(&self.p.input.root)?.to_string_lossy().into_owned()
            }),
        );
        let out_q = quote(&out.to_string_lossy());
        let logs = dir.join("logs");
        let extra: String = self.sbatch.iter().map(|o| format!("#SBATCH {o}\n")).collect();
        let n = self.shards;
        let array = format!(
            r#"#!/bin/bash
# slabflow: {pipeline} over {input} in {n} shards, one per array task. Written by
# `slabflow slurm`; submit with submit.sh (it also queues the merge job after this one).
#
# Task K runs shard K/{n} (--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)
# with its own journal in {out}/.slabflow/shards/. On SLURM's warning before the time limit
# (--signal) or a pre-emption, the shell passes SIGTERM to slabflow, which saves its cases in
# flight at a slab boundary; the task then requeues itself and resumes where it stopped.
#SBATCH --job-name=slabflow
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}M
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:TERM@{warn}
#SBATCH --output={logs}/%A_%a.log
{extra}
# --mem: memory_limit {limit} plus a quarter for the page cache of the task's writes.
set -u
{exe} run {pipeline} --input {input} --output {out_q} --shard auto &
pid=$!
requeue=0
trap 'requeue=1; kill -TERM "$pid" 2>/dev/null' TERM
wait "$pid"; status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
if [ "$requeue" = 1 ]; then
  echo "slabflow: saved; requeueing ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  exit 0
fi
# 1: some cases failed; they are recorded and the merge reports them, as on one node.
if [ "$status" = 1 ]; then exit 0; fi
exit "$status"
"#,
            last = n - 1,
            cpus = self.cpus,
            mem = self.mem_mib(),
            warn = self.warn_secs,
            logs = logs.display(),
            out = out.display(),
            limit = human_bytes(self.p.memory_limit),
        );
        let merge = format!(
            r#"#!/bin/bash
# slabflow: the tables of the {n} shards (metrics.csv, ranking.csv, failures.csv), the same
# bytes as a single-node run. Queued by submit.sh with --dependency=afterok on the array job.
#SBATCH --job-name=slabflow-merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --output={logs}/merge_%j.log
{extra}
exec {exe} merge --output {out_q}
"#,
            logs = logs.display(),
        );
        let submit = format!(
            r#"#!/bin/bash
# Queues the array job, then the merge job to run once every task succeeded.
set -euo pipefail
array=$(sbatch --parsable {array})
merge=$(sbatch --parsable --dependency=afterok:"${{array%%;*}}" {merge})
echo "array job $array, merge job $merge"
"#,
            array = quote(&dir.join("array.sbatch").to_string_lossy()),
            merge = quote(&dir.join("merge.sbatch").to_string_lossy()),
        );
        let scripts = Scripts {
            array: dir.join("array.sbatch"),
            merge: dir.join("merge.sbatch"),
            submit_script: dir.join("submit.sh"),
        };
        for (path, text) in [(&scripts.array, array), (&scripts.merge, merge), (&scripts.submit_script, submit)] {
            std::fs::write(path, text).map_err(io_err(format!("{}", path.display())))?;
        }
        Ok(scripts)
    }
}

impl Scripts {
    /// `sbatch` the array job, then the merge job after it; returns their job ids.
    pub fn submit(&self) -> std::io::Result<(String, String)> {
        let array = sbatch(&["--parsable".into(), self.array.to_string_lossy().into_owned()])?;
        let merge = sbatch(&[
            "--parsable".into(),
            format!("--dependency=afterok:{array}"),
            self.merge.to_string_lossy().into_owned(),
        ])?;
        Ok((array, merge))
    }
}

fn sbatch(args: &[String]) -> std::io::Result<String> {
    let o =
        Command::new("sbatch").args(args).output().map_err(io_err("running sbatch (is SLURM installed?)".into()))?;
    if !o.status.success() {
        return Err(std::io::Error::other(format!(
            "sbatch {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    // --parsable prints "jobid" or "jobid;cluster".
    Ok(text.trim().split(';').next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("/data/ct_1.nii.gz"), "/data/ct_1.nii.gz");
        assert_eq!(quote("/my data/it's"), r"'/my data/it'\''s'");
    }
}
