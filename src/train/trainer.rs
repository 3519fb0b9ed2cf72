//! The training loop, i.e. the "executor" (SPEC §2.10, EXAMPLES §2): epochs × minibatches of an
//! [`Objective`], RAdam steps, lr decay, early stopping, divergence detection, checkpoints and
//! observers. The objective does the maths; this module owns seeds, schedules and logistics.

use super::batches::{empty_batch, step_seed, BatchSource};
use super::checkpoint::{load_checkpoint, save_checkpoint, CheckpointMeta};
use super::error::TrainError;
use super::objective::{Objective, StepContext};
use super::radam::{clip_grad_norm, RAdamConfig, RAdamState};
use super::schedule::{ExponentialDecay, ParticleSchedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Training settings (SPEC §2.10, §5); JSON/YAML-serialisable and stored in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of epochs to run in total (counting those before a resume).
    pub n_epochs: usize,
    /// Minibatch size; the last minibatch of an epoch may be smaller.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Final learning rate: γ = exp(ln(lr_end/lr)/n_epochs), decay stops once lr ≤ lr_end.
    pub lr_end: f64,
    /// Clip the gradient to this global L2 norm; 0 = no clipping (all shipped configs).
    #[serde(default)]
    pub grad_norm: f64,
    /// Seed of the minibatch draws and of the objective's per-step noise.
    pub seed: u64,
    #[serde(default)]
    pub radam: RAdamConfig,
    /// Stop when the epoch loss has not improved for this many epochs (macaque: 50).
    #[serde(default)]
    pub patience: Option<usize>,
    /// Stop when a named diagnostic falls below a threshold (macaque: mean alpha < 5e-3).
    #[serde(default)]
    pub stop_below: Option<DiagnosticStop>,
    /// Particle-count annealing read by the objective through `StepContext::n_particles`.
    #[serde(default)]
    pub particles: Option<ParticleSchedule>,
}

impl TrainConfig {
    /// A config with the reference's defaults for everything but the essentials.
    pub fn new(n_epochs: usize, batch_size: usize, lr: f64, lr_end: f64, seed: u64) -> Self {
        Self {
            n_epochs,
            batch_size,
            lr,
            lr_end,
            grad_norm: 0.0,
            seed,
            radam: RAdamConfig::default(),
            patience: None,
            stop_below: None,
            particles: None,
        }
    }

    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = |field: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(TrainError::config(
                    field,
                    format!("is {value}; it must be finite and > 0"),
                ))
            }
        };
        if self.batch_size == 0 {
            return Err(TrainError::config("batch_size", "is 0; it must be ≥ 1"));
        }
        positive("lr", self.lr)?;
        positive("lr_end", self.lr_end)?;
        if !(self.grad_norm.is_finite() && self.grad_norm >= 0.0) {
            return Err(TrainError::config(
                "grad_norm",
                format!(
                    "is {}; use 0 for no clipping or a positive norm",
                    self.grad_norm
                ),
            ));
        }
        for (field, beta) in [
            ("radam.beta1", self.radam.beta1),
            ("radam.beta2", self.radam.beta2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return Err(TrainError::config(
                    field,
                    format!("is {beta}; it must be in [0, 1)"),
                ));
            }
        }
        if !(self.radam.eps.is_finite() && self.radam.eps >= 0.0) {
            return Err(TrainError::config("radam.eps", "must be finite and ≥ 0"));
        }
        if !(self.radam.weight_decay.is_finite() && self.radam.weight_decay >= 0.0) {
            return Err(TrainError::config(
                "radam.weight_decay",
                "must be finite and ≥ 0",
            ));
        }
        if self.patience == Some(0) {
            return Err(TrainError::config("patience", "is 0; it must be ≥ 1"));
        }
        if let Some(stop) = &self.stop_below {
            if stop.every_epochs == 0 {
                return Err(TrainError::config(
                    "stop_below.every_epochs",
                    "is 0; it must be ≥ 1",
                ));
            }
            if stop.threshold.is_nan() {
                return Err(TrainError::config("stop_below.threshold", "is NaN"));
            }
        }
        if let Some(particles) = &self.particles {
            if particles.start == 0 || particles.end == 0 {
                return Err(TrainError::config(
                    "particles",
                    "start and end must be ≥ 1 particle",
                ));
            }
        }
        Ok(())
    }
}

/// Stop when diagnostic `name` of the epoch is below `threshold`, checked every `every_epochs`
/// epochs (the macaque scripts check mean α < 5e-3 at the end of each `eval_epochs` chunk).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticStop {
    pub name: String,
    pub threshold: f64,
    #[serde(default = "one")]
    pub every_epochs: usize,
}

fn one() -> usize {
    1
}

/// One row of the loss curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean minibatch loss over the epoch (the reference's `ll` is its negative).
    pub loss: f64,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Wall-clock seconds spent in the epoch's steps.
    pub seconds: f64,
    /// Mean over the epoch's minibatches of each named diagnostic, in first-seen order.
    pub diagnostics: Vec<(String, f64)>,
}

impl EpochRecord {
    /// The value of diagnostic `name`, if the objective reported it.
    pub fn diagnostic(&self, name: &str) -> Option<f64> {
        self.diagnostics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Why an early stop happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EarlyStop {
    /// The epoch loss did not improve on `best_loss` for `patience` epochs.
    NoImprovement { patience: usize, best_loss: f64 },
    /// Diagnostic `name` was `value` < `threshold`.
    DiagnosticBelow {
        name: String,
        value: f64,
        threshold: f64,
    },
}

/// Why a run ended; every run ends with one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TerminationReason {
    /// All `n_epochs` epochs ran.
    MaxEpochs,
    /// An early-stopping rule fired after an epoch.
    EarlyStopped(EarlyStop),
    /// The loss or the gradient was NaN/Inf at (0-based) `epoch`, `batch`; that step was not
    /// applied, the parameters are the last good ones and the last checkpoint was not overwritten.
    Diverged {
        epoch: usize,
        batch: usize,
        what: String,
    },
    /// The interrupt flag was set; the run stopped before (0-based) `epoch`, `batch` and the
    /// checkpoint (if any) holds this exact point, so `resume` continues bit-identically.
    Interrupted { epoch: usize, batch: usize },
}

impl TerminationReason {
    /// One-line human description.
    pub fn text(&self) -> String {
        match self {
            Self::MaxEpochs => "reached the maximum number of epochs".to_string(),
            Self::EarlyStopped(EarlyStop::NoImprovement {
                patience,
                best_loss,
            }) => format!("early stop: no loss improvement on {best_loss} for {patience} epochs"),
            Self::EarlyStopped(EarlyStop::DiagnosticBelow {
                name,
                value,
                threshold,
            }) => format!("early stop: {name} = {value} < {threshold}"),
            Self::Diverged { epoch, batch, what } => format!(
                "diverged at epoch {epoch}, batch {batch}: {what}; kept the last good parameters"
            ),
            Self::Interrupted { epoch, batch } => {
                format!("interrupted before epoch {epoch}, batch {batch}")
            }
        }
    }
}

/// Progress within an epoch, for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchProgress {
    pub epoch: usize,
    /// 0-based index of the minibatch just finished.
    pub batch: usize,
    pub batches_per_epoch: usize,
    pub loss: f64,
}

/// Receives training progress (logging, progress bars, metrics); owned by the caller.
pub trait Observer {
    /// Called after every epoch with its loss-curve row.
    fn observe_epoch(&mut self, record: &EpochRecord);
    /// Called after every minibatch step.
    fn observe_batch(&mut self, _progress: &BatchProgress) {}
    /// Called once when the run ends.
    fn observe_end(&mut self, _reason: &TerminationReason) {}
}

impl<F: FnMut(&EpochRecord)> Observer for F {
    fn observe_epoch(&mut self, record: &EpochRecord) {
        self(record)
    }
}

/// Several observers called in order.
impl Observer for Vec<Box<dyn Observer + '_>> {
    fn observe_epoch(&mut self, record: &EpochRecord) {
        self.iter_mut().for_each(|o| o.observe_epoch(record));
    }
    fn observe_batch(&mut self, progress: &BatchProgress) {
        self.iter_mut().for_each(|o| o.observe_batch(progress));
    }
    fn observe_end(&mut self, reason: &TerminationReason) {
        self.iter_mut().for_each(|o| o.observe_end(reason));
    }
}

/// Where and how often to write checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPolicy {
    /// The HDF5 file (written to `<path>.tmp` then renamed).
    pub path: PathBuf,
    /// Write after every `every_epochs` epochs (0: only when the run ends), and always at the end
    /// of a run that did not diverge.
    pub every_epochs: usize,
    /// The model configuration as JSON, stored as the `model_config` attribute.
    pub model_config_json: String,
}

/// Run-time options that are not part of the training maths.
#[derive(Default)]
pub struct RunOptions<'a> {
    pub observer: Option<&'a mut dyn Observer>,
    pub checkpoint: Option<CheckpointPolicy>,
    /// Set (e.g. from a Ctrl-C handler) to stop before the next minibatch.
    pub interrupt: Option<&'a AtomicBool>,
    /// Runs each minibatch's loss and gradient (the parallel part of a step), e.g. on a
    /// thread pool chosen per call; `None`: on the caller's pool. It must call the step once.
    /// The results do not depend on the pool's size.
    pub step_runner: Option<&'a StepRunner<'a>>,
}

/// See [`RunOptions::step_runner`].
pub type StepRunner<'a> = dyn Fn(&mut (dyn FnMut() + Send)) + Sync + 'a;

/// Everything needed to continue training exactly: what a checkpoint stores.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Flat parameter vector laid out by the objective's `ParamLayout`.
    pub params: Vec<f64>,
    pub optimizer: RAdamState,
    /// Learning rate of the current epoch.
    pub lr: f64,
    pub decay: ExponentialDecay,
    /// Next epoch to run (0-based).
    pub epoch: usize,
    /// Next minibatch within `epoch` (0 at an epoch boundary).
    pub batch: usize,
    /// Partial sums of the current epoch (non-zero only mid-epoch).
    pub epoch_loss_sum: f64,
    pub epoch_diagnostic_sums: Vec<(String, f64)>,
    pub epoch_seconds: f64,
    /// Best epoch loss so far and epochs since it (early stopping).
    pub best_loss: f64,
    pub epochs_since_best: usize,
    /// The loss curve so far.
    pub records: Vec<EpochRecord>,
}

impl TrainState {
    /// The state before the first step: `params`, zero moments, lr = `config.lr`.
    pub fn initial(params: Vec<f64>, config: &TrainConfig) -> Self {
        let n = params.len();
        Self {
            params,
            optimizer: RAdamState::new(n),
            lr: config.lr,
            decay: ExponentialDecay::new(config.lr, config.lr_end, config.n_epochs.max(1)),
            epoch: 0,
            batch: 0,
            epoch_loss_sum: 0.0,
            epoch_diagnostic_sums: Vec::new(),
            epoch_seconds: 0.0,
            best_loss: f64::INFINITY,
            epochs_since_best: 0,
            records: Vec::new(),
        }
    }
}

/// Result of a run: the final state (parameters = last good ones) and why it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub termination: TerminationReason,
}

/// Trains `objective` on minibatches of `source` from `initial_params` (SPEC §2.10).
pub fn train<O: Objective>(
    objective: &O,
    source: &BatchSource<O::Real>,
    config: &TrainConfig,
    initial_params: Vec<f64>,
    run: RunOptions<'_>,
) -> Result<TrainOutcome, TrainError> {
    config.validate()?;
    check_params(objective, &initial_params)?;
    let state = TrainState::initial(initial_params, config);
    run_loop(objective, source, config, state, run)
}

/// Continues the run stored in the checkpoint at `path` with `config` (which may raise
/// `n_epochs` or change early stopping; `seed` and `batch_size` must equal the stored ones).
/// Parameters, optimiser moments, lr, decay and progress come from the checkpoint, so
/// k epochs + resume + (N − k) epochs equals N epochs bit for bit.
pub fn resume<O: Objective>(
    objective: &O,
    source: &BatchSource<O::Real>,
    config: &TrainConfig,
    path: &Path,
    run: RunOptions<'_>,
) -> Result<TrainOutcome, TrainError> {
    config.validate()?;
    let checkpoint = load_checkpoint(path, objective.layout())?;
    let stored: serde_json::Value = serde_json::from_str(&checkpoint.meta.train_config_json)
        .map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            object: "attribute train_config".into(),
            problem: format!("not valid JSON: {e}"),
        })?;
    for (field, value) in [
        ("seed", config.seed),
        ("batch_size", config.batch_size as u64),
    ] {
        if stored.get(field).and_then(|v| v.as_u64()) != Some(value) {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                object: "attribute train_config".into(),
                problem: format!(
                    "`{field}` is {:?} in the checkpoint but {value} in the config; resuming \
                     with another {field} would not continue the same run",
                    stored.get(field)
                ),
            });
        }
    }
    run_loop(objective, source, config, checkpoint.state, run)
}

fn check_params<O: Objective>(objective: &O, params: &[f64]) -> Result<(), TrainError> {
    let layout = objective.layout();
    if params.len() != layout.len() {
        return Err(TrainError::Params {
            problem: format!(
                "{} values given, the layout has {} (blocks: {})",
                params.len(),
                layout.len(),
                layout
                    .blocks()
                    .iter()
                    .map(|b| format!("{} {:?}", b.name, b.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    for block in layout.blocks() {
        if let Some(i) = params[block.range()].iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Params {
                problem: format!(
                    "block `{}` holds a non-finite value at flat index {i}",
                    block.name
                ),
            });
        }
    }
    Ok(())
}

fn run_loop<O: Objective>(
    objective: &O,
    source: &BatchSource<O::Real>,
    config: &TrainConfig,
    mut state: TrainState,
    mut run: RunOptions<'_>,
) -> Result<TrainOutcome, TrainError> {
    let layout = objective.layout();
    check_params(objective, &state.params)?;
    let batches_per_epoch = source.batches_per_epoch(config.batch_size);
    let mut grad = vec![0.0; layout.len()];
    let mut batch = empty_batch::<O::Real>();
    let train_config_json = serde_json::to_string(config).map_err(|e| TrainError::Config {
        field: "(whole config)",
        problem: format!("cannot be serialised to JSON: {e}"),
    })?;

    let termination = 'epochs: loop {
        if state.epoch >= config.n_epochs {
            break TerminationReason::MaxEpochs;
        }
        let epoch = state.epoch;
        let plan = source.epoch_plan(config.seed, epoch, config.batch_size);
        let n_particles = config.particles.as_ref().map(|p| p.particles_at(epoch));
        while state.batch < plan.batches.len() {
            if run
                .interrupt
                .is_some_and(|flag| flag.load(Ordering::SeqCst))
            {
                break 'epochs TerminationReason::Interrupted {
                    epoch,
                    batch: state.batch,
                };
            }
            let started = Instant::now();
            let batch_index = state.batch;
            source.fill(&plan.batches[batch_index], &mut batch);
            grad.fill(0.0);
            let ctx = StepContext {
                epoch,
                batch: batch_index,
                seed: step_seed(config.seed, epoch, batch_index),
                lr: state.lr,
                n_particles,
            };
            let mut outcome = None;
            {
                let (params, batch, ctx, grad) = (&state.params, &batch, &ctx, &mut grad);
                let mut step = || outcome = Some(objective.loss_and_grad(params, batch, ctx, grad));
                match run.step_runner {
                    Some(runner) => runner(&mut step),
                    None => step(),
                }
            }
            let Some(outcome) = outcome else {
                return Err(TrainError::Config {
                    field: "step_runner",
                    problem: "did not run the minibatch's step".into(),
                });
            };
            let info = outcome.map_err(|source| TrainError::Objective {
                epoch,
                batch: batch_index,
                source,
            })?;
            if let Some(what) = non_finite(info.loss, layout, &grad) {
                break 'epochs TerminationReason::Diverged {
                    epoch,
                    batch: batch_index,
                    what,
                };
            }
            if config.grad_norm > 0.0 {
                clip_grad_norm(layout, &mut grad, config.grad_norm);
            }
            config.radam.step(
                layout,
                &mut state.params,
                &grad,
                state.lr,
                &mut state.optimizer,
            );
            state.epoch_loss_sum += info.loss;
            for (name, value) in &info.diagnostics {
                match state
                    .epoch_diagnostic_sums
                    .iter_mut()
                    .find(|(n, _)| n == name)
                {
                    Some((_, sum)) => *sum += value,
                    None => state.epoch_diagnostic_sums.push((name.clone(), *value)),
                }
            }
            state.batch += 1;
            state.epoch_seconds += started.elapsed().as_secs_f64();
            if let Some(observer) = run.observer.as_deref_mut() {
                observer.observe_batch(&BatchProgress {
                    epoch,
                    batch: batch_index,
                    batches_per_epoch,
                    loss: info.loss,
                });
            }
        }

        // End of epoch: loss-curve row, lr decay, early stopping, checkpoint.
        let n = plan.batches.len() as f64;
        let record = EpochRecord {
            epoch,
            loss: state.epoch_loss_sum / n,
            lr: state.lr,
            seconds: state.epoch_seconds,
            diagnostics: state
                .epoch_diagnostic_sums
                .drain(..)
                .map(|(name, sum)| (name, sum / n))
                .collect(),
        };
        state.epoch_loss_sum = 0.0;
        state.epoch_seconds = 0.0;
        state.batch = 0;
        state.epoch += 1;
        state.lr = state.decay.next(state.lr);
        if record.loss < state.best_loss {
            state.best_loss = record.loss;
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
        if let Some(observer) = run.observer.as_deref_mut() {
            observer.observe_epoch(&record);
        }
        let early_stop = early_stop(config, &state, &record);
        state.records.push(record);
        if let Some(reason) = early_stop {
            break TerminationReason::EarlyStopped(reason);
        }
        if let Some(policy) = &run.checkpoint {
            if policy.every_epochs > 0
                && state.epoch.is_multiple_of(policy.every_epochs)
                && state.epoch < config.n_epochs
            {
                write_checkpoint(policy, objective, &train_config_json, &state, None)?;
            }
        }
    };

    if let Some(policy) = &run.checkpoint {
        if !matches!(termination, TerminationReason::Diverged { .. }) {
            write_checkpoint(
                policy,
                objective,
                &train_config_json,
                &state,
                Some(&termination),
            )?;
        }
    }
    if let Some(observer) = run.observer.as_deref_mut() {
        observer.observe_end(&termination);
    }
    Ok(TrainOutcome { state, termination })
}

fn write_checkpoint<O: Objective>(
    policy: &CheckpointPolicy,
    objective: &O,
    train_config_json: &str,
    state: &TrainState,
    termination: Option<&TerminationReason>,
) -> Result<(), TrainError> {
    let termination_json = termination
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| format!("{t:?}")))
        .unwrap_or_default();
    let meta = CheckpointMeta {
        model_config_json: policy.model_config_json.clone(),
        train_config_json: train_config_json.to_string(),
        termination_json,
    };
    save_checkpoint(&policy.path, objective.layout(), state, &meta)
}

fn non_finite(loss: f64, layout: &super::ParamLayout, grad: &[f64]) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("loss is {loss}"));
    }
    for block in layout.blocks().iter().filter(|b| b.trainable) {
        if let Some(i) = grad[block.range()].iter().position(|g| !g.is_finite()) {
            return Some(format!(
                "gradient of `{}` is {} at element {i}",
                block.name,
                grad[block.offset + i]
            ));
        }
    }
    None
}

fn early_stop(config: &TrainConfig, state: &TrainState, record: &EpochRecord) -> Option<EarlyStop> {
    if let Some(patience) = config.patience {
        if state.epochs_since_best >= patience {
            return Some(EarlyStop::NoImprovement {
                patience,
                best_loss: state.best_loss,
            });
        }
    }
    if let Some(stop) = &config.stop_below {
        if (record.epoch + 1).is_multiple_of(stop.every_epochs) {
            if let Some(value) = record.diagnostic(&stop.name) {
                if value < stop.threshold {
                    return Some(EarlyStop::DiagnosticBelow {
                        name: stop.name.clone(),
                        value,
                        threshold: stop.threshold,
                    });
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_reference_defaults_and_rejects_unknown_fields() {
        let config: TrainConfig = serde_json::from_str(
            r#"{"n_epochs": 1500, "batch_size": 10, "lr": 1e-3, "lr_end": 1e-6, "seed": 1}"#,
        )
        .unwrap();
        assert_eq!(config, TrainConfig::new(1500, 10, 1e-3, 1e-6, 1));
        assert_eq!(config.radam, RAdamConfig::default());
        assert!(config.validate().is_ok());
        let err = serde_json::from_str::<TrainConfig>(
            r#"{"n_epochs": 1, "batch_size": 1, "lr": 1, "lr_end": 1, "seed": 1, "lr_decay": 2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("lr_decay"), "{err}");
        let mut bad = config.clone();
        bad.radam.beta2 = 1.0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("radam.beta2"), "{err}");
    }

    #[test]
    fn termination_reasons_serialise_for_the_checkpoint() {
        let reason = TerminationReason::Diverged {
            epoch: 3,
            batch: 2,
            what: "loss is NaN".into(),
        };
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(
            serde_json::from_str::<TerminationReason>(&json).unwrap(),
            reason
        );
        assert!(reason.text().contains("epoch 3, batch 2"));
    }
}
