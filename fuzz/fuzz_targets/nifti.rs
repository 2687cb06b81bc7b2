//! Fuzzes the NIfTI header parser and the slab reader, plain and gzip: whatever the bytes,
//! slabflow returns a value or an error, never panics, and never allocates from an
//! unvalidated header. Run with `fuzz/run.sh`.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use slabflow::nifti::{Header, VolumeReader, Voxels};

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    // The same bytes as a .nii and, compressed, as a .nii.gz (the reader decides by content).
    let dir = std::env::temp_dir().join(format!("slabflow-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    for (name, bytes) in [("v.nii", data.to_vec()), ("v.nii.gz", gz.finish().unwrap())] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(mut r) = VolumeReader::open(&path) {
            // The pipeline reserves a case's slab memory before reading; stay within 64 MiB.
            if r.header().slice_bytes() > 64 << 20 {
                continue;
            }
            let mut slab = Voxels::empty(r.header().datatype);
            while r.remaining() > 0 {
                if r.read_slab(1, &mut slab).is_err() {
                    break;
                }
                let mut out = vec![0.0; slab.len()];
                slab.scaled_into(r.header().scaling(), &mut out);
            }
        }
    }
});
