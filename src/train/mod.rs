//! Training: RAdam, learning-rate schedules, the training loop, checkpoints (SPEC §2.10).

pub mod params;

pub use params::{ParamBlock, ParamLayout};
