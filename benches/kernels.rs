//! Criterion micro-benchmarks of the conversion path, as throughput of decoded bytes:
//! NIfTI slab decode per datatype and byte order, `.nii.gz` slab streaming (inflate), and
//! Zarr slab writes per codec. Inputs are made here with slabflow's own NIfTI writer.
//!
//!   cargo bench --bench kernels

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use slabflow::nifti::{DataType, Endian, Header, VolumeReader, VolumeWriter, Voxels};
use slabflow::zarr::{CaseStore, Codec, ZarrOptions};

const NX: usize = 512;
const NY: usize = 512;
const DEPTH: usize = 16;

/// CT-like int16 bytes: a smooth body with noise, air at -1024.
fn ct_slab(nz: usize) -> Vec<i16> {
    let mut state = 12345u64;
    let mut v = Vec::with_capacity(NX * NY * nz);
    for k in 0..nz {
        for j in 0..NY {
            for i in 0..NX {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (x, y) = (i as f64 / NX as f64 - 0.5, j as f64 / NY as f64 - 0.5);
                let inside = x * x / 0.16 + y * y / 0.1 < 1.0;
                let noise = ((state >> 33) % 25) as i16 - 12;
                v.push(if inside { 40 + noise + (k % 7) as i16 } else { -1024 });
            }
        }
    }
    v
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_slab");
    let n = NX * NY * DEPTH;
    for (dt, endian) in [
        (DataType::U8, Endian::Little),
        (DataType::I16, Endian::Little),
        (DataType::I16, Endian::Big),
        (DataType::F32, Endian::Little),
        (DataType::F64, Endian::Little),
    ] {
        let raw = vec![7u8; n * dt.size()];
        g.throughput(Throughput::Bytes(raw.len() as u64));
        let mut out = Voxels::empty(dt);
        g.bench_function(BenchmarkId::new(dt.name(), format!("{endian:?}")), |b| {
            b.iter(|| out.decode_from(black_box(&raw), endian))
        });
    }
    g.finish();
}

fn write_volume(path: &Path, nz: usize) -> u64 {
    let affine = [[0.8, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]];
    let h = Header::new_3d([NX, NY, nz], [0.8, 0.8, 2.0], affine, DataType::I16);
    let mut w = VolumeWriter::create(path, &h, 6).unwrap();
    let data = ct_slab(nz);
    for k in 0..nz {
        let bytes: Vec<u8> = data[k * NX * NY..(k + 1) * NX * NY].iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_slice(&bytes).unwrap();
    }
    w.finish().unwrap();
    (NX * NY * nz * 2) as u64
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("read_volume");
    g.sample_size(10);
    for ext in ["nii", "nii.gz"] {
        let path = dir.path().join(format!("ct.{ext}"));
        let bytes = write_volume(&path, 64);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(BenchmarkId::new("int16_512x512x64", ext), |b| {
            let mut slab = Voxels::empty(DataType::I16);
            b.iter(|| {
                let mut r = VolumeReader::open(&path).unwrap();
                while r.remaining() > 0 {
                    let n = DEPTH.min(r.remaining());
                    r.read_slab(n, &mut slab).unwrap();
                }
            })
        });
    }
    g.finish();
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = ct_slab(DEPTH);
    let affine = [[0.8, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]];
    let h = Header::new_3d([NX, NY, DEPTH * 4], [0.8, 0.8, 2.0], affine, DataType::I16);
    let mut g = c.benchmark_group("zarr_write_slab");
    g.throughput(Throughput::Bytes((data.len() * 2) as u64));
    for (codec, level) in [(Codec::BloscZstd, 2), (Codec::BloscLz4, 5), (Codec::Zstd, 3), (Codec::Zstd, 1)] {
        let store =
            CaseStore::create(&dir.path().join(format!("{codec:?}{level}.zarr")), Default::default(), false, None)
                .unwrap();
        let opts = ZarrOptions::new(DEPTH, codec, level, None);
        let w = store.image("ct", &h, DataType::I16, -1024.0, &opts).unwrap();
        g.bench_function(BenchmarkId::new(format!("{codec:?}"), level), |b| {
            b.iter(|| w.write_slab(0, black_box(&data)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, decode, read, write);
criterion_main!(benches);
