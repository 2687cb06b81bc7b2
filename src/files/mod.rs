//! The output directory as several processes share it — the bottom layer, on which everything
//! that writes stands: `durable` writes (a file appears whole, and is on disk before anything
//! names it), `lock` (one run holds an output, or one run each shard of it, with leases where
//! OS locks fail), `shard` (a stable split of a corpus over the tasks of a job array), and
//! `objects` (files in a bucket, named by `s3://` paths) and `mirror` (an output in a bucket,
//! through a local scratch folder).
//!
//! Invariant: nothing here knows of NIfTI, Zarr, stages or pipelines; every other folder may
//! use it.

pub mod durable;
pub mod lock;
pub mod mirror;
pub mod objects;
mod shard;

pub use shard::Shard;
