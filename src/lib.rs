//! slabflow: a streaming, out-of-core dataflow processor for CT corpora.
//!
//! The modules follow the data: `nifti` reads volumes slab by slab, `zarr` writes them as
//! NIfTI-Zarr groups, `input` discovers cases from pipeline templates, `pipeline` holds the
//! configuration and the runner, `synth` makes synthetic corpora.

pub mod checkpoint;
pub mod input;
pub mod nifti;
pub mod pipeline;
pub mod slurm;
pub mod stages;
pub mod synth;
pub mod zarr;

/// The pipeline `slabflow demo` runs (`pipelines/demo.toml`, embedded).
pub const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");
