//! The pipeline engine: a cached DAG of stages.
//!
//! Layers, each adding only the context it owns:
//! [`config`] parses the YAML as written → [`expand`] fans out matrices and applies the
//! profile → [`dag`] resolves kinds, params, inputs and order → [`plan`] decides freshness
//! using [`cache`] (keys, object store, run cache, [`lockfile`]) → [`executor`] runs what is
//! stale and emits [`events`] for a reporter. Stage kinds plug in through [`stage::Stage`].
//! [`table`] is the one results-table type; [`compare`] puts two tables side by side.

pub mod bench;
pub mod budget;
pub mod cache;
pub mod compare;
pub mod config;
pub mod dag;
pub mod events;
pub mod executor;
pub mod expand;
pub mod gc;
pub mod hash;
pub mod lockfile;
pub mod plan;
pub mod project_lock;
pub mod stage;
pub mod table;

pub use cache::{Freshness, StageKey, StaleReason};
pub use dag::{load, Dag, PlannedStage, DEFAULT_PROFILE};
pub use events::{RunSummary, StageEvent};
pub use executor::{run, RunOptions};
pub use stage::{Registry, Stage, StageContext, StageError};
pub use table::{Column, Table, TableError};
