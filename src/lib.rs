//! slabflow: a streaming, out-of-core dataflow processor for CT corpora.
//!
//! The modules are layers that follow the data, each using only those above it in this list
//! (`tests/layers.rs` keeps it so):
//! - [`files`]: durable writes, and who holds an output directory (the lock, leases, shards);
//! - [`nifti`] reads volumes slab by slab (and writes them); [`zarr`] writes NIfTI-Zarr groups;
//!   [`synth`] makes synthetic corpora;
//! - [`input`]: the `[input]` of a pipeline, and the cases and files of a corpus;
//! - [`stages`]: the per-slab work and the corpus-level stages, and the registry of kinds;
//! - [`checkpoint`]: the progress journal (records, slab checkpoints, the manifest);
//! - [`pipeline`]: pipeline files, and the engine that runs them over a corpus (cases, reruns,
//!   shards, tables, report);
//! - [`slurm`], and the command line (`src/main.rs`).

pub mod checkpoint;
pub mod files;
pub mod input;
pub mod nifti;
pub mod pipeline;
pub mod report;
pub mod slurm;
pub mod stages;
pub mod synth;
pub mod zarr;

// What the library's public types are made of, for its users: `ndarray` (slab views of
// custom stages) and `toml` (their `[[stages]]` tables), at the versions slabflow uses.
pub use ndarray;
pub use toml;

/// The pipeline `slabflow demo` runs (`pipelines/demo.toml`, embedded).
pub const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");
