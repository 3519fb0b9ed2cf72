//! Training: RAdam, learning-rate schedules, the training loop, checkpoints (SPEC §2.10).

pub mod batches;
pub mod checkpoint;
pub mod error;
pub mod objective;
pub mod observers;
pub mod params;
pub mod radam;
pub mod schedule;
pub mod trainer;

pub use batches::{empty_batch, step_seed, BatchItem, BatchSource, EpochPlan};
pub use checkpoint::{
    load_checkpoint, load_params, save_checkpoint, save_model, Checkpoint, CheckpointMeta,
};
pub use error::{ObjectiveError, TrainError};
pub use objective::{Objective, StepContext, StepInfo};
pub use observers::{loss_curve_table, LineLogger};
pub use params::{ParamBlock, ParamLayout};
pub use radam::{clip_grad_norm, global_grad_norm, RAdamConfig, RAdamState};
pub use schedule::{ExponentialDecay, ParticleSchedule};
pub use trainer::{
    resume, train, BatchProgress, CheckpointPolicy, DiagnosticStop, EarlyStop, EpochRecord,
    Observer, RunOptions, TerminationReason, TrainConfig, TrainOutcome, TrainState,
};
