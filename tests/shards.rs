//! Sharded runs: N shards of a corpus, each with its own journal in one output directory, and
//! `slabflow merge` — byte-identical to a single-node run; merge refuses missing and unfinished
//! shards, naming them (the refusals of overlapping runs are in tests/journal.rs).

mod util;

use std::path::{Path, PathBuf};

fn pipeline(dir: &Path, name: &str, budget: &str) -> PathBuf {
    let p = util::convert_pipeline(
        dir,
        &format!(
            "[runtime]\nslab_depth = 4\n\n[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"metrics\"\n\n[[stages]]\nkind = \"rank\"\nbudget = {budget}\n"
        ),
    );
    let named = dir.join(name);
    std::fs::rename(&p, &named).unwrap();
    named
}

fn outputs(out: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut t = util::tree(&out.join("cases"));
    for f in ["metrics.csv", "ranking.csv", "failures.csv"] {
        t.insert(PathBuf::from(f), std::fs::read(out.join(f)).unwrap_or_default());
    }
    t
}

fn shard(p: &Path, corpus: &Path, out: &Path, spec: &str) -> std::process::Output {
    util::run(p, corpus, out, &["--shard", spec])
}

fn merge(out: &Path) -> std::process::Output {
    util::slabflow(&["merge", "--output", out.to_str().unwrap()])
}

#[test]
fn shards_then_merge_equal_a_single_node_run() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 7, [32, 28, 12]);
    // One case that fails, so failures.csv has a row to merge too.
    std::fs::write(corpus.join("BDMAP_00000004/predictions/unet/liver.nii.gz"), b"not a NIfTI file").unwrap();
    let p = pipeline(t.path(), "p.toml", "0.3");
    let reference = t.path().join("reference");
    let o = util::run(&p, &corpus, &reference, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    let out = t.path().join("out");
    for k in [2, 0, 1] {
        let o = shard(&p, &corpus, &out, &format!("{k}/3"));
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", util::stderr(&o));
        assert!(!out.join("metrics.csv").exists(), "a shard writes no top-level table");
    }
    let st = util::slabflow(&["status", "--output", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("7 discovered, 6 done, 1 failed, 0 left"), "{text}");
    assert!(text.contains("shard 0/3: 3 cases") && text.contains("shard 2/3: 2 cases"), "{text}");
    // What each shard's next run would do: redo its failed case, keep the others.
    let next: Vec<&str> = text.lines().filter(|l| l.starts_with("next run of shard ")).collect();
    assert_eq!(next.len(), 3, "{text}");
    assert_eq!(next.iter().filter(|l| l.contains(": 1 to compute, 0 to recompute")).count(), 1, "{text}");
    assert_eq!(next.iter().filter(|l| l.contains(": 0 to compute, 0 to recompute")).count(), 2, "{text}");
    let o = merge(&out);
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    assert!(util::stderr(&o).contains("Merged 3 shards: 6 cases succeeded, 1 failed"), "{}", util::stderr(&o));
    assert_eq!(outputs(&out), outputs(&reference));
}

#[test]
fn shard_auto_reads_the_slurm_and_kubernetes_variables() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let out = t.path().join("out");
    let run = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = util::bin();
        c.args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        c.args(["--shard", "auto"]).args(extra);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.env_remove("SLURM_ARRAY_TASK_MIN").output().unwrap()
    };
    let o = run(&[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "2")], &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(out.join(".slabflow/shards/1-of-2/cases").is_dir());
    let o = run(&[("JOB_COMPLETION_INDEX", "0")], &["--shards", "2"]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(out.join(".slabflow/shards/0-of-2/cases").is_dir());
    let o = run(&[("JOB_COMPLETION_INDEX", "0")], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("--shards N"), "{}", util::stderr(&o));
    assert!(merge(&out).status.success());
}

#[test]
fn merge_refuses_missing_and_unfinished_shards_and_shards_refuse_another_pipeline() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 5, [16, 16, 8]);
    let p = pipeline(t.path(), "p.toml", "0.3");
    let other = pipeline(t.path(), "other.toml", "0.5");
    let out = t.path().join("out");

    let o = merge(&out);
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("no sharded run"), "{}", util::stderr(&o));

    assert!(shard(&p, &corpus, &out, "0/3").status.success());
    assert!(shard(&p, &corpus, &out, "2/3").status.success());
    let o = merge(&out);
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("shard 1/3 never ran"), "{}", util::stderr(&o));

    // Every shard checks the output's one manifest: another pipeline is refused, naming it.
    let o = shard(&other, &corpus, &out, "1/3");
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("`budget = 0.3` became `budget = 0.5`"), "{}", util::stderr(&o));
    assert!(shard(&p, &corpus, &out, "1/3").status.success());
    // A shard whose case record is lost (killed before it was written) is unfinished.
    std::fs::remove_file(out.join(".slabflow/shards/0-of-3/cases/BDMAP_00000004.json")).unwrap();
    let o = merge(&out);
    assert_eq!(o.status.code(), Some(2));
    let err = util::stderr(&o);
    assert!(err.contains("unfinished shards: 0/3 (1 of 2 cases left, e.g. BDMAP_00000004)"), "{err}");
    assert!(shard(&p, &corpus, &out, "0/3").status.success());
    assert!(merge(&out).status.success());
    assert!(out.join("metrics.csv").metadata().unwrap().len() > 0);
}
