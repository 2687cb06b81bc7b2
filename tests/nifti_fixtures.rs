//! The NIfTI reader against files written by nibabel (tests/data/nifti, made by
//! tests/python/gen_fixtures.py): every value equals nibabel's `get_fdata()` bit for bit, for
//! every slab depth, and every hostile file fails with a clear error.

use std::path::{Path, PathBuf};

use serde_json::Value;
use slabflow::nifti::{VolumeReader, Voxels};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nifti")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap()
}

fn expected(name: &str) -> Vec<f64> {
    std::fs::read(dir().join(format!("{name}.fdata")))
        .unwrap()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn every_readable_fixture_equals_nibabel_get_fdata_at_every_slab_depth() {
    let m = manifest();
    let readable = m["readable"].as_object().unwrap();
    assert!(readable.len() >= 20, "the manifest lists too few fixtures");
    for (name, info) in readable {
        let path = dir().join(info["file"].as_str().unwrap());
        let want = expected(name);
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        for depth in [1, 4, 64] {
            let mut r = VolumeReader::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let h = r.header().clone();
            assert_eq!(h.shape().to_vec(), shape, "{name}: shape");
            let affine = info["affine"].as_array().unwrap();
            for (i, row) in affine.iter().enumerate() {
                for (j, v) in row.as_array().unwrap().iter().enumerate() {
                    let (a, b) = (h.affine()[i][j], v.as_f64().unwrap());
                    assert!((a - b).abs() < 1e-6, "{name}: affine[{i}][{j}] {a} vs nibabel {b}");
                }
            }
            assert_eq!(h.datatype.name(), info["datatype"].as_str().unwrap(), "{name}: datatype");
            let mut got = Vec::with_capacity(want.len());
            let mut slab = Voxels::empty(h.datatype);
            while r.remaining() > 0 {
                let n = depth.min(r.remaining());
                r.read_slab(n, &mut slab).unwrap_or_else(|e| panic!("{name}: {e}"));
                let mut vals = vec![0.0; slab.len()];
                slab.scaled_into(h.scaling(), &mut vals);
                got.extend(vals);
            }
            assert_eq!(got.len(), want.len(), "{name}: voxel count");
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{name}: voxel {k}: {a} vs nibabel {b} (depth {depth})"
                );
            }
        }
    }
}

#[test]
fn every_hostile_fixture_fails_with_a_message_naming_the_file_and_the_problem() {
    let m = manifest();
    for (name, words) in m["hostile"].as_object().unwrap() {
        let path = dir().join(name);
        let result = VolumeReader::open(&path).and_then(|mut r| {
            let mut slab = Voxels::empty(r.header().datatype);
            while r.remaining() > 0 {
                let n = 8.min(r.remaining());
                r.read_slab(n, &mut slab)?;
            }
            Ok(())
        });
        let err = result.expect_err(name).to_string();
        assert!(err.contains(name), "{name}: the error does not name the file: {err}");
        for w in words.as_array().unwrap() {
            let w = w.as_str().unwrap();
            assert!(err.to_lowercase().contains(&w.to_lowercase()), "{name}: expected {w:?} in: {err}");
        }
    }
}
