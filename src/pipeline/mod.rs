//! Pipelines: configuration (`config`), the memory budget (`budget`), one case's slab stream
//! (`case`) and the corpus runner (`run`).

pub mod budget;
pub mod case;
pub mod config;
pub mod run;

pub use config::{ConfigError, Overrides, Pipeline};
pub use run::{RunError, RunSummary, run};
