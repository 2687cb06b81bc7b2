//! Pipelines: configuration (`config`), the memory budget (`budget`), one case's slab stream
//! (`case`), taking an output directory (`start`: lock, manifest, starting over), the corpus
//! runner (`run`), the CSV outputs (`report`), and shards of a corpus with their merge
//! (`shard`).

pub mod budget;
pub mod case;
pub mod config;
pub mod dry_run;
pub mod flow;
pub mod plan;
pub mod profile;
pub mod report;
pub mod rerun;
pub mod run;
pub mod shard;
pub mod start;

pub use config::{ConfigError, Overrides, Pipeline};
pub use run::{RunError, RunOptions, RunSummary, run};
