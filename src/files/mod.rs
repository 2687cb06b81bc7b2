//! The output directory as several processes share it — the bottom layer, on which everything
//! that writes stands: `durable` writes (a file appears whole, and is on disk before anything
//! names it), `lock` (one run holds an output, or one run each shard of it, with leases where
//! OS locks fail), and `shard` (a stable split of a corpus over the tasks of a job array).
//!
//! Invariant: nothing here knows of NIfTI, Zarr, stages or pipelines; every other folder may
//! use it.

pub mod durable;
pub mod lock;
mod shard;

pub use shard::Shard;
