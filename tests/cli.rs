//! The real binary on real files: conversion runs, per-case fault isolation, refusals before
//! any write (invalid pipeline, memory limit, a live run on the same output), `synth`, `demo`.

mod util;

use std::path::Path;

use util::run;

#[test]
fn converts_every_case_of_a_synthetic_corpus() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 3, [20, 18, 11]);
    let p = util::convert_pipeline(t.path(), "[runtime]\nslab_depth = 4\n");
    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("failures.csv")).unwrap(), "case_id,error\n");
    for id in ["BDMAP_00000001", "BDMAP_00000002", "BDMAP_00000003"] {
        let case = out.join("cases").join(format!("{id}.zarr"));
        let root: serde_json::Value = serde_json::from_slice(&std::fs::read(case.join("zarr.json")).unwrap()).unwrap();
        assert_eq!(root["attributes"]["slabflow"]["case_id"], id);
        assert!(
            root["attributes"]["slabflow"]["dataset"].as_str().is_some_and(|d| !d.is_empty()),
            "dataset from meta.csv"
        );
        for g in ["ct", "predictions/unet/liver", "predictions/swin_unetr/pancreas"] {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(case.join(g).join("0/zarr.json")).unwrap()).unwrap();
            assert_eq!(meta["shape"], serde_json::json!([11, 18, 20]), "{id}/{g}");
            assert_eq!(meta["chunk_grid"]["configuration"]["chunk_shape"], serde_json::json!([4, 18, 20]), "{id}/{g}");
            assert_eq!(meta["dimension_names"], serde_json::json!(["z", "y", "x"]));
        }
    }
}

/// Bad cases fail alone, each named with its file and problem; good cases' outputs are
/// byte-identical to a run without the bad ones.
#[test]
fn each_bad_case_fails_alone_and_the_rest_are_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 5, [16, 16, 9]);
    let p = util::convert_pipeline(t.path(), "[runtime]\nslab_depth = 4\n");
    let clean = t.path().join("clean");
    assert!(run(&p, &corpus, &clean, &[]).status.success());

    // Case 1: a prediction missing. Case 2: the CT cut short. Case 3: a label on another grid.
    std::fs::remove_file(corpus.join("BDMAP_00000001/predictions/nnunet/spleen.nii.gz")).unwrap();
    let ct2 = std::fs::read_dir(corpus.join("BDMAP_00000002"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("ct.nii"))
        .unwrap();
    let bytes = std::fs::read(&ct2).unwrap();
    std::fs::write(&ct2, &bytes[..bytes.len() / 2]).unwrap();
    let other = t.path().join("other");
    util::synth(&other, 1, [16, 16, 10]);
    std::fs::copy(
        other.join("BDMAP_00000001/segmentations/liver.nii.gz"),
        corpus.join("BDMAP_00000004/segmentations/liver.nii.gz"),
    )
    .unwrap();

    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    let lines: Vec<_> = failures.lines().collect();
    assert_eq!(lines.len(), 4, "{failures}");
    assert!(lines[1].starts_with("BDMAP_00000001,") && lines[1].contains("nnunet/spleen.nii.gz"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("BDMAP_00000002,") && lines[2].contains("ct.nii") && lines[2].contains("truncated"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("BDMAP_00000004,") && lines[3].contains("liver.nii.gz") && lines[3].contains("grid"),
        "{}",
        lines[3]
    );
    for id in ["BDMAP_00000003", "BDMAP_00000005"] {
        let rel = format!("cases/{id}.zarr");
        assert_eq!(util::tree(&out.join(&rel)), util::tree(&clean.join(&rel)), "{id} differs from the clean run");
    }
}

#[test]
fn an_invalid_pipeline_writes_nothing_and_lists_every_problem() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("bad.toml");
    std::fs::write(
        &p,
        "version = 1\n[input]\nroot = \"c\"\nct = \"{patient}.nii\"\nlabel = \"{case}.nii\"\n[output]\ndir = \"o\"\n[runtime]\nmemory_limit = \"much\"\n[[stages]]\nkind = \"teleport\"\n",
    )
    .unwrap();
    let out = t.path().join("o");
    let o = run(&p, t.path(), &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = util::stderr(&o);
    for needle in ["bad.toml", "{patient}", "must use {class}", "memory_limit", "teleport"] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    assert!(!out.exists(), "an invalid pipeline must write nothing");
    let v = util::slabflow(&["validate", p.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(2));
    assert!(util::stderr(&v).contains("teleport"));
}

#[test]
fn a_memory_limit_too_small_for_one_slab_is_refused_with_the_size_needed() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 1, [64, 64, 16]);
    let p = util::convert_pipeline(t.path(), "");
    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &["--memory-limit", "60MiB"]);
    assert_eq!(o.status.code(), Some(2), "{}", util::stderr(&o));
    let err = util::stderr(&o);
    assert!(err.contains("too small") && err.contains("needs") && err.contains("MiB"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_second_run_on_a_live_output_refuses_at_once() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 1, [8, 8, 4]);
    let p = util::convert_pipeline(t.path(), "");
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lock = std::fs::File::create(out.join(".slabflow.lock")).unwrap();
    lock.lock().unwrap();
    let o = run(&p, &corpus, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(util::stderr(&o).contains("in use by another slabflow run"), "{}", util::stderr(&o));
    drop(lock);
    assert!(run(&p, &corpus, &out, &[]).status.success(), "a released lock must not block");
}

#[test]
fn synth_is_deterministic_and_varied() {
    let t = tempfile::tempdir().unwrap();
    util::synth(&t.path().join("a"), 4, [12, 10, 6]);
    util::synth(&t.path().join("b"), 4, [12, 10, 6]);
    let (a, b) = (util::tree(&t.path().join("a")), util::tree(&t.path().join("b")));
    assert_eq!(a, b, "same seed, same corpus");
    let names: Vec<_> = a.keys().map(|p| p.to_string_lossy().into_owned()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("ct.nii")) && names.iter().any(|n| n.ends_with("ct.nii.gz")),
        "both .nii and .nii.gz CTs"
    );
    assert_eq!(names.iter().filter(|n| n.contains("/predictions/")).count(), 4 * 27);
    assert!(names.iter().any(|n| n.contains("/segmentations/")), "some labels");
    assert!(names.contains(&"meta.csv".to_string()));
}

#[test]
fn demo_runs_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let o = util::slabflow(&["demo", "--dir", t.path().to_str().unwrap(), "--cases", "2"]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(t.path().join("out/cases/BDMAP_00000002.zarr/ct/0/zarr.json").exists());
    assert!(util::stderr(&o).contains("2 of 2 cases succeeded"), "{}", util::stderr(&o));
}

/// Every pipeline shipped in `pipelines/` parses and validates; the contract's copy is the
/// contract's file, unchanged.
#[test]
fn every_shipped_pipeline_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let p = e.unwrap().path();
        let o = util::slabflow(&["validate", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}: {}", p.display(), util::stderr(&o));
        n += 1;
    }
    assert!(n >= 3);
    let ours = std::fs::read_to_string(root.join("pipelines/contract.toml")).unwrap();
    let shipped = ours.split_once('\n').unwrap().1; // minus our one-line provenance comment
    if let Ok(contract) = std::fs::read_to_string(root.join("../shared/contract/pipeline.toml")) {
        assert_eq!(shipped, contract, "pipelines/contract.toml drifted from shared/contract/pipeline.toml");
    }
    assert_eq!(slabflow::DEMO_PIPELINE, std::fs::read_to_string(root.join("pipelines/demo.toml")).unwrap());
}

/// The contract's pipeline runs unchanged on a corpus in the contract's layout.
#[test]
fn the_contract_pipeline_runs_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 4, [24, 20, 12]);
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/contract.toml");
    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with(
        "case_id,dataset,class,consensus_voxels,volume_ml,attention_sum,inconsistency_sum,uncertainty_sum,overlap_voxels,dice,nsd,"
    ));
    assert!(
        metrics.lines().next().unwrap().ends_with(
            ",dice_swin_unetr_nnunet,dice_swin_unetr_unet,dice_nnunet_unet,attention_peak_z,attention_peak_y"
        )
    );
    assert_eq!(metrics.lines().count(), 1 + 4 * 9);
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    assert!(ranking.starts_with("rank,case_id,dataset,attention_size,flagged\n1,"), "{ranking}");
    assert_eq!(ranking.lines().count(), 5);
    // ceil(0.05 × 4) = 1 flagged.
    assert_eq!(ranking.matches(",true").count(), 1, "{ranking}");
    assert!(out.join("cases/BDMAP_00000001.zarr/ct_norm/0/zarr.json").exists());
    assert!(out.join("cases/BDMAP_00000001.zarr/attention/liver/0/zarr.json").exists());
}

#[test]
fn stages_lists_every_kind_with_defaults() {
    let o = util::slabflow(&["stages"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["normalize", "attention", "metrics", "rank", "a_min", "-175.0", "budget", "0.05", "mode"] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
}

/// NaN or out-of-range probabilities fail the case, naming the file.
#[test]
fn bad_probabilities_fail_the_case_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 5, [12, 10, 6]);
    // Case 5 has float32 predictions: put a NaN and a 1.5 in two of them.
    let a = corpus.join("BDMAP_00000005/predictions/unet/liver.nii.gz");
    let b = corpus.join("BDMAP_00000005/predictions/nnunet/aorta.nii.gz");
    for (path, value) in [(&a, f32::NAN), (&b, 1.5f32)] {
        let mut r = slabflow::nifti::VolumeReader::open(path).unwrap();
        let h = r.header().clone();
        let mut all = Vec::new();
        let mut v = slabflow::nifti::Voxels::empty(h.datatype);
        while r.remaining() > 0 {
            r.read_slab(1, &mut v).unwrap();
            if let slabflow::nifti::Voxels::F32(d) = &v {
                all.extend_from_slice(d);
            }
        }
        all[7] = value;
        let mut w = slabflow::nifti::VolumeWriter::create(path, &h, 1).unwrap();
        for s in all.chunks(12 * 10) {
            w.write_slice(&s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()).unwrap();
        }
        w.finish().unwrap();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/contract.toml");
    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count(), 2, "{failures}");
    assert!(failures.contains("BDMAP_00000005") && failures.contains("outside [0, 1]"), "{failures}");
    assert!(failures.contains("unet/liver.nii.gz") || failures.contains("nnunet/aorta.nii.gz"), "{failures}");
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    assert_eq!(ranking.lines().count(), 5, "four cases ranked: {ranking}");
}

/// `pipelines/abdomenatlas.toml` runs on a corpus in the authors' layout
/// (`{dataset}/{case}/backbones/{model}/soft_pred/{class}.nii.gz`), with datasets from the path.
#[test]
fn the_abdomenatlas_pipeline_runs_on_the_authors_layout() {
    let t = tempfile::tempdir().unwrap();
    let synth_dir = t.path().join("synth");
    util::synth(&synth_dir, 3, [24, 20, 12]);
    let root = t.path().join("AbdomenAtlas");
    for (i, e) in std::fs::read_dir(&synth_dir).unwrap().enumerate() {
        let case = e.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        let id = case.file_name().unwrap().to_owned();
        let dst = root.join(if i % 2 == 0 { "01_Multi-Atlas_Labeling" } else { "02_TCIA_Pancreas-CT" }).join(&id);
        std::fs::create_dir_all(&dst).unwrap();
        for ct in ["ct.nii.gz", "ct.nii"] {
            if case.join(ct).exists() {
                std::fs::rename(case.join(ct), dst.join(ct)).unwrap();
            }
        }
        for m in std::fs::read_dir(case.join("predictions")).unwrap() {
            let m = m.unwrap().path();
            let to = dst.join("backbones").join(m.file_name().unwrap()).join("soft_pred");
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(&m, &to).unwrap();
        }
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/abdomenatlas.toml");
    let out = t.path().join("out");
    let o = run(&p, &root, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let ranking = std::fs::read_to_string(out.join("ranking.csv")).unwrap();
    assert_eq!(ranking.lines().count(), 4, "{ranking}");
    assert!(ranking.contains(",01_Multi-Atlas_Labeling,") && ranking.contains(",02_TCIA_Pancreas-CT,"), "{ranking}");
    // Released mode: binary maps.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("cases/BDMAP_00000001.zarr/attention/liver/0/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["data_type"], "uint8");
}

/// The pipeline shown in README.md is a valid pipeline (the docs match the code).
#[test]
fn the_readme_pipeline_example_validates() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("### Pipeline files").nth(1).expect("README has a pipeline section");
    let block = section.split("```toml").nth(1).unwrap().split("```").next().unwrap();
    let p = slabflow::pipeline::Pipeline::parse(Path::new("README.md"), block, &Default::default());
    assert!(p.is_ok(), "{}", p.err().unwrap());
}

/// Hostile files inside a corpus (garbage instead of NIfTI, a header claiming 32767³ voxels, a
/// corrupt deflate stream, an unsupported datatype) fail their case alone, naming the file and
/// the problem; the other cases' outputs equal a run without the bad ones.
#[test]
fn hostile_inputs_fail_their_case_alone() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 6, [16, 16, 9]);
    let p = util::convert_pipeline(t.path(), "[[stages]]\nkind = \"attention\"\n");
    let clean = t.path().join("clean");
    assert!(run(&p, &corpus, &clean, &[]).status.success());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nifti");
    let bad = [
        ("BDMAP_00000001", "predictions/unet/liver.nii.gz", "garbage.nii.gz", "not a NIfTI"),
        ("BDMAP_00000002", "predictions/nnunet/spleen.nii.gz", "huge_dims.nii", "exceeds"),
        ("BDMAP_00000004", "predictions/unet/stomach.nii.gz", "rgb24.nii", "rgb24"),
    ];
    for (case, file, fixture, _) in bad {
        std::fs::copy(fixtures.join(fixture), corpus.join(case).join(file)).unwrap();
    }
    // A corrupt deflate stream on the case's own grid: the header reads, the data does not.
    let corrupt = corpus.join("BDMAP_00000003/predictions/swin_unetr/aorta.nii.gz");
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].fill(0xa5);
    std::fs::write(&corrupt, bytes).unwrap();
    let bad = [bad[0], bad[1], ("BDMAP_00000003", "predictions/swin_unetr/aorta.nii.gz", "", "gzip"), bad[2]];
    let out = t.path().join("out");
    let o = run(&p, &corpus, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", util::stderr(&o));
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count(), 1 + bad.len(), "{failures}");
    for ((case, file, _, words), line) in bad.iter().zip(failures.lines().skip(1)) {
        assert!(line.starts_with(case) && line.contains(file) && line.contains(words), "{line}");
    }
    for id in ["BDMAP_00000005", "BDMAP_00000006"] {
        let rel = format!("cases/{id}.zarr");
        assert_eq!(util::tree(&out.join(&rel)), util::tree(&clean.join(&rel)), "{id} differs from the clean run");
    }
}

#[test]
fn plan_prints_the_graph_with_the_memory_the_run_reserves() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 2, [48, 40, 20]);
    let p = t.path().join("p.toml");
    std::fs::write(
        &p,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/contract.toml")).unwrap(),
    )
    .unwrap();
    let o = util::slabflow(&["plan", p.to_str().unwrap(), "--input", corpus.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for needle in [
        "for BDMAP_00000001, 48×40×20, slabs of 16 slices",
        "read → attention: slab sets (shared by reference, never copied); bounded channel, capacity 1",
        "attention → rank: per-case attention sizes",
        "writes cases/{case}.zarr/ct_norm",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The per-case figure is the one the run reserves.
    let per_case = text.split("memory: ").nth(1).unwrap().split(" per case").next().unwrap().to_string();
    let out = t.path().join("out");
    let trace = t.path().join("trace.json");
    let o = util::bin()
        .args(["run", p.to_str().unwrap(), "--input", corpus.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("SLABFLOW_TRACE", &trace)
        .output()
        .unwrap();
    let err = util::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("{per_case} each")), "plan says {per_case}: {err}");
    // Where the time went: the summary names the bounding node, profile.json has every node,
    // and the trace has a span per stage and slab.
    assert!(err.contains("Bound by ") && err.contains("attention  busy"), "{err}");
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("profile.json")).unwrap()).unwrap();
    let nodes: Vec<&str> = profile["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["read", "convert", "normalize", "attention", "metrics"]);
    assert!(profile["bound_by"].is_string() && profile["nodes"][3]["slabs"] == 4, "{profile}");
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let spans = trace
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "stage" && e["ph"] == "B" && e["args"]["stage"] == "attention")
        .count();
    assert_eq!(spans, 2 * 2, "one per case and slab: {spans}");
    let dot = util::slabflow(&["plan", p.to_str().unwrap(), "--format", "dot"]);
    let dot = String::from_utf8_lossy(&dot.stdout).into_owned();
    assert!(dot.starts_with("digraph slabflow {") && dot.contains("\"attention\" -> \"rank\""), "{dot}");
    // Beside evaluate, a paper attention stage gives it its attention region per slab.
    let eval = t.path().join("eval.toml");
    std::fs::write(&eval, format!("{}\n[[stages]]\nkind = \"evaluate\"\n", std::fs::read_to_string(&p).unwrap()))
        .unwrap();
    let o = util::slabflow(&["plan", eval.to_str().unwrap(), "--input", corpus.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("attention → evaluate: the paper attention above evaluate's threshold, bit-packed"),
        "{text}"
    );
    // A graph problem is reported with the rest.
    let bad = t.path().join("bad.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("kind = \"attention\"", "kind = \"metrics\"\nnsd_tolerance_mm = -1.0");
    std::fs::write(&bad, text).unwrap();
    let v = util::slabflow(&["validate", bad.to_str().unwrap()]);
    let err = util::stderr(&v);
    assert!(err.contains("needs per-case attention sizes, which no stage makes: add an \"attention\" stage"), "{err}");
}
