//! The `fit` kind: fit a stochastic low-rank RNN to a sequences file with VSMC (SPEC §2),
//! writing the model (HDF5 checkpoint: params, optimiser state, model and training config as
//! attributes, readable by h5py), the loss curve (table + figure).
//!
//! ```yaml
//! - name: eeg.fit
//!   kind: fit
//!   matrix: {seed: 1..20}
//!   params:
//!     variant: rank3_smc
//!     model: {rank: 3, n_units: 512, dim_x: 64, nonlinearity: clipped_relu, noise_z: full,
//!             noise_z0: full, observation: affine, readout_from: z, likelihood: gaussian}
//!     vsmc: {n_particles: 10, resampling: systematic}
//!     train: {n_epochs: 1500, batch_size: 10, lr: 1.0e-3, lr_end: 1.0e-6, seed: "${seed}"}
//!     windows: {length: 50, per_epoch: 500}
//!   inputs: {data: "eeg.prepare:sequences"}
//! ```
//!
//! `vsmc.proposal` picks the proposal: `optimal` (linear-Gaussian observations, full noise),
//! `encoder` (any observation model; `vsmc.encoder` gives the CNN: kernel_sizes, channels,
//! activation, padding_location, padding_mode, init_scale, constant_var) or `bootstrap`; the
//! encoder's parameters are trained with the model's and stored after them in `model.h5`.
//!
//! Long single recordings are cut into random windows (`windows`); several trials are used
//! as they are (omit `windows`). Training stops early with an error naming the epoch if the
//! loss diverges (NaN); the last good parameters are not written as a result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::sequences_io::{read_attr, read_dims, read_sequences};
use crate::inference::draws::Resampling;
use crate::inference::kernel::Precision;
use crate::inference::objective::{ModelWithProposal, ProposalKind, VsmcObjective};
use crate::inference::optimal::VsmcOptions;
use crate::model::encoder::EncoderConfig;
use crate::model::lowrank::ModelConfig;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, ProgressHandle, Stage, StageContext,
    StageError, RESUMED_FROM_EPOCH,
};
use crate::pipeline::table::Table;
use crate::plot::{line_plot, Series};
use crate::train::trainer::{
    resume, train, CheckpointPolicy, EpochRecord, Observer, RunOptions, TerminationReason,
    TrainConfig,
};
use crate::train::{load_checkpoint, save_model, BatchSource, Objective};

/// Epochs between the checkpoints a pipeline fit keeps to resume from after an interruption.
const RESUME_EVERY_EPOCHS: usize = 10;

fn default_k() -> usize {
    10
}
fn default_resampling() -> Resampling {
    Resampling::Systematic
}
fn default_proposal() -> ProposalKind {
    ProposalKind::Optimal
}

/// VSMC settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsmcParams {
    /// Proposal: `optimal` (linear-Gaussian observations; SPEC §2.4), `encoder` (CNN
    /// encoder × prior, §2.5; needs `encoder`) or `bootstrap` (§2.6).
    #[serde(default = "default_proposal")]
    pub proposal: ProposalKind,
    /// The CNN encoder of the encoder proposal (SPEC §2.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderConfig>,
    /// Particles K.
    #[serde(default = "default_k")]
    pub n_particles: usize,
    /// Resampling scheme.
    #[serde(default = "default_resampling")]
    pub resampling: Resampling,
    /// Steps at the end of each window predicted without data (SPEC §2.7).
    #[serde(default)]
    pub t_forward: usize,
    /// Arithmetic of the transition kernels: `f64` (default) or `f32` (the O(N) transition
    /// in single precision, as the reference trains; about twice as fast for large N).
    #[serde(default, skip_serializing_if = "Precision::is_f64")]
    pub precision: Precision,
}

/// Window sampling from one long recording.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    /// Window length in steps (EEG: 50).
    pub length: usize,
    /// Windows per epoch (EEG: 500).
    pub per_epoch: usize,
}

/// Params of a `fit` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FitParams {
    /// Variant name carried into tables (e.g. `rank3_smc`).
    pub variant: String,
    /// The model.
    pub model: ModelConfig,
    /// Inference settings.
    #[serde(default = "default_vsmc")]
    pub vsmc: VsmcParams,
    /// Optimiser and schedule (SPEC §2.10).
    pub train: TrainConfig,
    /// Cut the (single) recording into random windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowParams>,
    /// Seed of the initial parameters (default: `train.seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
}

fn default_vsmc() -> VsmcParams {
    VsmcParams {
        proposal: default_proposal(),
        encoder: None,
        n_particles: default_k(),
        resampling: default_resampling(),
        t_forward: 0,
        precision: Precision::F64,
    }
}

/// Fits a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct FitStage;

/// A fitted model read back from a `fit` output.
#[derive(Debug, Clone)]
pub struct FittedModel {
    /// Its configuration.
    pub config: ModelConfig,
    /// Flat parameters of the model (reference layout).
    pub params: Vec<f64>,
    /// Variant name.
    pub variant: String,
    /// The proposal it was fitted with and its encoder (if any).
    pub proposal: ProposalKind,
    /// The encoder's configuration (encoder proposal).
    pub encoder: Option<EncoderConfig>,
    /// Model parameters followed by the encoder's (as trained).
    pub all_params: Vec<f64>,
    /// The VSMC settings it was fitted with (K, resampling, t_forward).
    pub vsmc: VsmcParams,
    /// The `data_source` label of the data it was fitted to (when recorded).
    pub data_source: Option<String>,
}

impl FittedModel {
    /// The model with its proposal (layout incl. the encoder's blocks).
    pub fn with_proposal(&self) -> Result<ModelWithProposal, StageError> {
        ModelWithProposal::new(self.config.clone(), self.proposal, self.encoder.as_ref())
            .map_err(|e| StageError::new(e.to_string()))
    }
}

/// Read a model written by `fit` (its `model_config` attribute holds the config and variant).
pub fn load_model(path: &Path) -> Result<FittedModel, StageError> {
    let text = read_attr(path, "model_config")
        .map_err(|e| StageError::new(e.to_string()))?
        .ok_or_else(|| {
            StageError::new(format!(
                "{}: no `model_config` attribute; is this a model written by `fit`?",
                path.display()
            ))
        })?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| StageError::new(format!("{}: attribute model_config: {e}", path.display())))?;
    let config: ModelConfig =
        serde_json::from_value(v.get("model").cloned().unwrap_or(Value::Null))
            .map_err(|e| StageError::new(format!("{}: model_config.model: {e}", path.display())))?;
    let variant = v
        .get("variant")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    let vsmc: VsmcParams = match v.get("vsmc") {
        Some(x) => serde_json::from_value(x.clone())
            .map_err(|e| StageError::new(format!("{}: model_config.vsmc: {e}", path.display())))?,
        None => default_vsmc(),
    };
    let with = ModelWithProposal::new(config.clone(), vsmc.proposal, vsmc.encoder.as_ref())
        .map_err(|e| StageError::new(format!("{}: {e}", path.display())))?;
    let checkpoint =
        load_checkpoint(path, &with.layout).map_err(|e| StageError::new(e.to_string()))?;
    let all_params = checkpoint.state.params;
    Ok(FittedModel {
        params: all_params[..with.n_model()].to_vec(),
        config,
        variant,
        proposal: vsmc.proposal,
        encoder: vsmc.encoder.clone(),
        all_params,
        vsmc,
        data_source: v
            .get("data_source")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The model/proposal combinations the reference supports (SPEC §2.4–2.6, §9), as errors
/// naming the field.
fn check_proposal(model: &ModelConfig, vsmc: &VsmcParams) -> Result<(), ParamError> {
    use crate::model::lowrank::{Likelihood, NoiseKind, ObsNonlinearity, Observation, ReadoutFrom};
    match vsmc.proposal {
        ProposalKind::Optimal => {
            if model.likelihood != Likelihood::Gaussian
                || model.obs_link() != ObsNonlinearity::Identity
            {
                return Err(ParamError::new(
                    "vsmc.proposal",
                    "the optimal proposal needs linear-Gaussian observations (likelihood: \
                     gaussian, identity output); use `encoder` or `bootstrap`",
                ));
            }
            if model.noise_z != NoiseKind::Full || model.noise_z0 != NoiseKind::Full {
                return Err(ParamError::new(
                    "model.noise_z",
                    "the optimal proposal needs noise_z: full and noise_z0: full",
                ));
            }
            let linear = matches!(
                (model.observation, model.readout_from),
                (Observation::Affine, ReadoutFrom::Z)
                    | (Observation::OneToOne, ReadoutFrom::Currents)
            );
            if !linear {
                return Err(ParamError::new(
                    "model.readout_from",
                    "the optimal proposal needs affine from z or one_to_one from currents",
                ));
            }
        }
        ProposalKind::Encoder => {
            let Some(enc) = &vsmc.encoder else {
                return Err(ParamError::new(
                    "vsmc.encoder",
                    "the encoder proposal needs an encoder (kernel_sizes, channels, activation, \
                     padding_location, padding_mode, init_scale)",
                ));
            };
            enc.check()
                .map_err(|e| ParamError::new("vsmc.encoder", e.to_string()))?;
            if model.noise_z == NoiseKind::Full || model.noise_z0 == NoiseKind::Full {
                return Err(ParamError::new(
                    "model.noise_z",
                    "the encoder proposal needs diag or scalar noise_z and noise_z0",
                ));
            }
        }
        ProposalKind::Bootstrap => {}
    }
    if vsmc.proposal != ProposalKind::Encoder && vsmc.encoder.is_some() {
        return Err(ParamError::new(
            "vsmc.encoder",
            "only the encoder proposal uses an encoder; remove it or set proposal: encoder",
        ));
    }
    Ok(())
}

struct ProgressObserver<'a> {
    progress: &'a ProgressHandle,
    records: Vec<EpochRecord>,
    /// The stage (for the threads its last minibatch ran on).
    ctx: &'a StageContext<'a>,
}

impl Observer for ProgressObserver<'_> {
    fn observe_epoch(&mut self, record: &EpochRecord) {
        self.progress.set_position(record.epoch as u64 + 1);
        let now = self.ctx.threads_now();
        self.progress.message(if now != self.ctx.threads() {
            format!("loss {:.4} ({now} threads)", record.loss)
        } else {
            format!("loss {:.4}", record.loss)
        });
        self.records.push(record.clone());
    }
}

impl Stage for FitStage {
    fn kind(&self) -> &'static str {
        "fit"
    }
    fn version(&self) -> u32 {
        1
    }
    /// 3 for optimal-proposal fits whose observation term runs on R-dimensional sums
    /// ([`crate::inference::optimal::reduces_observation`]: the same values, other rounding);
    /// else 2 for single-precision fits, whose f32 Poisson step runs its lanes over particles
    /// since then (ℓ summed in another order); other fits write the bits of 1.
    fn version_for(&self, params: &Value) -> u32 {
        let optimal = params.pointer("/vsmc/proposal").and_then(Value::as_str) == Some("optimal");
        let dim = |key: &str| {
            params
                .pointer(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
        };
        let reduced = match (
            dim("/model/rank"),
            dim("/model/dim_x"),
            dim("/vsmc/n_particles"),
        ) {
            (Some(r), Some(dx), Some(k)) => {
                optimal && crate::inference::optimal::reduces_observation(r, dx, k)
            }
            _ => false,
        };
        if reduced {
            3
        } else if params.pointer("/vsmc/precision").and_then(Value::as_str) == Some("f32") {
            2
        } else {
            self.version()
        }
    }
    fn version_note(&self) -> Option<&'static str> {
        Some("v3 with vsmc.proposal: optimal, rank < min(dim_x, 16) and n_particles ≥ 2·rank; else v2 with vsmc.precision: f32")
    }
    fn description(&self) -> &'static str {
        "fit a stochastic low-rank RNN with VSMC (optimal, encoder or bootstrap proposal) → model.h5, loss curve"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<FitParams>(params)?;
        let p: FitParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        p.model
            .validate()
            .map_err(|e| ParamError::new("model", e.to_string()))?;
        p.train
            .validate()
            .map_err(|e| ParamError::new("train", e.to_string()))?;
        check_proposal(&p.model, &p.vsmc)?;
        if p.vsmc.n_particles == 0 {
            return Err(ParamError::new("vsmc.n_particles", "K must be ≥ 1"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("model", "model.h5"),
            OutputSpec::new("loss_curve", "loss_curve.parquet"),
            OutputSpec::new("loss_curve_md", "loss_curve.md"),
            OutputSpec::new("loss_plot", "loss_curve.png"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::required("data")])
    }
    /// `model.dim_x` and `model.dim_u` left out (or null) of a one-off fit's params: the data's.
    fn params_from_inputs(
        &self,
        params: &mut Value,
        inputs: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<Vec<String>, StageError> {
        let Some(model) = params.get_mut("model").and_then(Value::as_object_mut) else {
            return Ok(Vec::new());
        };
        let open: Vec<&str> = ["dim_x", "dim_u"]
            .into_iter()
            .filter(|key| model.get(*key).is_none_or(Value::is_null))
            .collect();
        let Some(path) = inputs.get("data").and_then(|files| files.first()) else {
            return Ok(Vec::new());
        };
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // The shapes only: `run` reads the values.
        let (dim_x, dim_u) = read_dims(path).map_err(|e| StageError::new(e.to_string()))?;
        let mut said = Vec::new();
        for key in open {
            let value = if key == "dim_x" { dim_x } else { dim_u };
            model.insert(key.into(), value.into());
            said.push(format!("model.{key} = {value}, from {}", path.display()));
        }
        Ok(said)
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: FitParams = ctx.params_as()?;
        let data_path = ctx.input("data")?.to_path_buf();
        let data = read_sequences(&data_path).map_err(|e| StageError::new(e.to_string()))?;
        if data.dim_x != p.model.dim_x || data.dim_u != p.model.dim_u {
            return Err(StageError::new(format!(
                "{} has dim_x = {}, dim_u = {}, but params.model says dim_x = {}, dim_u = {} \
                 (hint: set model.dim_x: {} and model.dim_u: {}; a one-off `fit` takes them \
                 from the data when the params leave them out)",
                data_path.display(),
                data.dim_x,
                data.dim_u,
                p.model.dim_x,
                p.model.dim_u,
                data.dim_x,
                data.dim_u
            )));
        }
        let data_source = read_attr(&data_path, "data_source")
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        let source = match &p.windows {
            Some(w) => BatchSource::windows(data, w.length, w.per_epoch),
            None => BatchSource::trials(data),
        }
        .map_err(|e| StageError::new(format!("{}: {e}", data_path.display())))?;
        let model =
            ModelWithProposal::new(p.model.clone(), p.vsmc.proposal, p.vsmc.encoder.as_ref())
                .map_err(|e| StageError::new(e.to_string()))?;
        let init = model
            .init_params(p.init_seed.unwrap_or(p.train.seed))
            .map_err(|e| StageError::new(e.to_string()))?;
        let objective = VsmcObjective::with_proposal(
            model,
            VsmcOptions {
                n_particles: p.vsmc.n_particles,
                t_forward: p.vsmc.t_forward,
                precision: p.vsmc.precision,
            },
            p.vsmc.resampling,
        );
        let model_path = ctx.output("model")?.to_path_buf();
        let meta = serde_json::json!({
            "model": p.model,
            "variant": p.variant,
            "n_params_table1": p.model.n_params_table1(),
            "data_source": data_source,
            "vsmc": p.vsmc,
        });
        let progress = ctx.progress();
        progress.set_total(p.train.n_epochs as u64);
        let mut observer = ProgressObserver {
            progress,
            records: Vec::new(),
            ctx,
        };
        // Inside a pipeline the run checkpoints every few epochs into the stage's resume
        // directory (kept across an interruption, keyed by params and inputs) and a rerun
        // continues from there — bit for bit the run it would have been (`train::resume`).
        let resume_path = ctx.resume_dir().map(|d| d.join("checkpoint.h5"));
        let checkpoint_path = resume_path.clone().unwrap_or_else(|| model_path.clone());
        let policy = CheckpointPolicy {
            path: checkpoint_path.clone(),
            every_epochs: if resume_path.is_some() {
                RESUME_EVERY_EPOCHS
            } else {
                0
            },
            model_config_json: meta.to_string(),
        };
        let resuming = resume_path.as_ref().filter(|p| p.is_file()).cloned();
        if resuming.is_some() {
            ctx.progress()
                .message("resuming from the last checkpoint of an interrupted run");
        }
        // Each minibatch runs on the stage's threads plus the run's idle ones (the last fit of a
        // sweep grows onto the cores the others freed); the bits do not depend on how many.
        let step_runner = |step: &mut (dyn FnMut() + Send)| ctx.install_elastic(step);
        let run = RunOptions {
            observer: Some(&mut observer),
            checkpoint: Some(policy),
            interrupt: None,
            step_runner: Some(&step_runner),
        };
        let outcome = match &resuming {
            Some(path) => resume(&objective, &source, &p.train, path, run),
            None => train(&objective, &source, &p.train, init, run),
        };
        // The first epoch trained now is the number the checkpoint had completed.
        let resumed_at = resuming.as_ref().map(|_| {
            observer
                .records
                .first()
                .map_or(p.train.n_epochs, |r| r.epoch)
        });
        let outcome = outcome.map_err(|e| {
            let hint = match &resuming {
                Some(path) => format!(
                    " (while resuming from {}; delete it to start over)",
                    path.display()
                ),
                None => String::new(),
            };
            StageError::new(format!("{e}{hint}"))
        })?;
        if let TerminationReason::Diverged { epoch, batch, what } = &outcome.termination {
            let kept = if checkpoint_path.is_file() && resume_path.is_some() {
                format!(
                    "; the last good checkpoint is kept at {}",
                    checkpoint_path.display()
                )
            } else {
                String::new()
            };
            return Err(StageError::new(format!(
                "training diverged at epoch {epoch}, minibatch {batch} ({what}); lower \
                 params.train.lr or raise vsmc.n_particles{kept}"
            )));
        }
        if !checkpoint_path.is_file() {
            return Err(StageError::new("training ended without writing the model"));
        }
        // The model is the final checkpoint without its wall-clock times, so a rerun that learns
        // the same parameters writes the same bytes and the stages reading it stay cached.
        let layout = objective.layout();
        let last = load_checkpoint(&checkpoint_path, layout)
            .map_err(|e| StageError::new(e.to_string()))?;
        save_model(&model_path, layout, &last.state, &last.meta)
            .map_err(|e| StageError::new(e.to_string()))?;
        let records = &outcome.state.records;
        let tab = |e: crate::pipeline::table::TableError| StageError::new(e.to_string());
        let mut table = Table::new()
            .with(
                "epoch",
                records.iter().map(|r| r.epoch as i64).collect::<Vec<_>>(),
            )
            .and_then(|t| t.with("loss", records.iter().map(|r| r.loss).collect::<Vec<_>>()))
            .and_then(|t| t.with("lr", records.iter().map(|r| r.lr).collect::<Vec<_>>()))
            .and_then(|t| {
                t.with(
                    "seconds",
                    records.iter().map(|r| r.seconds).collect::<Vec<_>>(),
                )
            })
            .map_err(tab)?;
        table
            .push(
                "mean_alpha",
                records
                    .iter()
                    .map(|r| r.diagnostic("mean_alpha").unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push("variant", vec![p.variant.clone(); records.len()])
            .map_err(tab)?;
        table
            .push("seed", vec![p.train.seed as i64; records.len()])
            .map_err(tab)?;
        let out = ctx.output("loss_curve")?.to_path_buf();
        table.write_parquet(&out).map_err(tab)?;
        let md = ctx.output("loss_curve_md")?.to_path_buf();
        table.write_markdown(&md).map_err(tab)?;
        let stem = ctx.scratch_dir().join("loss");
        let fig = line_plot(
            &stem,
            &format!("{} seed {}: training loss", p.variant, p.train.seed),
            "epoch",
            "loss (−ELBO / T)",
            &[Series {
                reference_for: None,
                label: "loss".into(),
                x: records.iter().map(|r| r.epoch as f64).collect(),
                y: records.iter().map(|r| r.loss).collect(),
            }],
            false,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("loss_plot", &fig.png)?;
        let seconds: f64 = records.iter().map(|r| r.seconds).sum();
        ctx.record("final_loss", records.last().map(|r| r.loss));
        ctx.record("epochs", records.len());
        ctx.record("train_seconds", seconds);
        ctx.record("seconds_per_epoch", seconds / records.len().max(1) as f64);
        if let Some(at) = resumed_at {
            ctx.record(RESUMED_FROM_EPOCH, at);
        }
        Ok(())
    }
}

/// How [`score_model`] cuts the data and runs the filter.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Random windows of this many steps (`None`: the file's trials as they are).
    pub window: Option<usize>,
    /// Windows per pass (with `window`).
    pub per_pass: usize,
    /// Passes over the data (each with fresh windows and particles).
    pub passes: usize,
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Particles K (`None`: the K the model was fitted with).
    pub n_particles: Option<usize>,
    /// Seed of the windows, particles and resampling.
    pub seed: u64,
}

/// The VSMC loss of a fitted model on data, without updating it.
#[derive(Debug, Clone)]
pub struct ScoreReport {
    /// The loss of every minibatch (the training loss: minus the filtering ELBO, SPEC §2.1).
    pub batch_losses: Vec<f64>,
    /// Particles used.
    pub n_particles: usize,
}

impl ScoreReport {
    /// Mean and standard error of the minibatch losses.
    pub fn mean_sem(&self) -> (f64, f64) {
        let n = self.batch_losses.len() as f64;
        let mean = self.batch_losses.iter().sum::<f64>() / n;
        let var = self
            .batch_losses
            .iter()
            .map(|l| (l - mean) * (l - mean))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        (mean, (var / n).sqrt())
    }
}

/// Scores `model_path` (a `fit` output) on `data_path` (a sequences file) with the loss it was
/// trained on — to compare models on the same data, or one model on held-out data.
pub fn score_model(
    model_path: &Path,
    data_path: &Path,
    opts: &ScoreOptions,
) -> Result<ScoreReport, StageError> {
    use crate::train::{empty_batch, step_seed, Objective, StepContext};
    let fitted = load_model(model_path)?;
    let data = read_sequences(data_path).map_err(|e| StageError::new(e.to_string()))?;
    if data.dim_x != fitted.config.dim_x || data.dim_u != fitted.config.dim_u {
        return Err(StageError::new(format!(
            "{} has dim_x = {}, dim_u = {}, but the model {} has dim_x = {}, dim_u = {}",
            data_path.display(),
            data.dim_x,
            data.dim_u,
            model_path.display(),
            fitted.config.dim_x,
            fitted.config.dim_u
        )));
    }
    if opts.batch_size == 0 || opts.passes == 0 {
        return Err(StageError::new("--batch-size and --passes must be ≥ 1"));
    }
    let n_particles = opts.n_particles.unwrap_or(fitted.vsmc.n_particles);
    if n_particles == 0 {
        return Err(StageError::new("--particles must be ≥ 1"));
    }
    let source = match opts.window {
        Some(len) => BatchSource::windows(data, len, opts.per_pass),
        None => BatchSource::trials(data),
    }
    .map_err(|e| StageError::new(format!("{}: {e}", data_path.display())))?;
    let objective = VsmcObjective::with_proposal(
        fitted.with_proposal()?,
        VsmcOptions {
            n_particles,
            t_forward: fitted.vsmc.t_forward,
            precision: fitted.vsmc.precision,
        },
        fitted.vsmc.resampling,
    );
    let mut grad = vec![0.0; objective.layout().len()];
    let mut batch = empty_batch();
    let mut batch_losses = Vec::new();
    for pass in 0..opts.passes {
        let plan = source.epoch_plan(opts.seed, pass, opts.batch_size);
        for (b, items) in plan.batches.iter().enumerate() {
            source.fill(items, &mut batch);
            grad.fill(0.0);
            let ctx = StepContext {
                epoch: pass,
                batch: b,
                seed: step_seed(opts.seed, pass, b),
                lr: 0.0,
                n_particles: Some(n_particles),
            };
            let info = objective
                .loss_and_grad(&fitted.all_params, &batch, &ctx, &mut grad)
                .map_err(|e| StageError::new(e.to_string()))?;
            batch_losses.push(info.loss);
        }
    }
    Ok(ScoreReport {
        batch_losses,
        n_particles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Optimal-proposal fits with rank < dim_x and K ≥ 2·rank carry version 3 in their cache
    /// key (their observation term's rounding changed), other single-precision fits version 2
    /// (their Poisson step's rounding changed); the rest keep version 1 and so their cached
    /// results.
    #[test]
    fn fits_whose_rounding_changed_have_new_versions() {
        let stage = FitStage;
        let params = |rank: usize, dim_x: usize, vsmc: serde_json::Value| {
            let raw = serde_json::json!({
                "variant": "v",
                "train": {"n_epochs": 1, "batch_size": 1, "lr": 1.0e-3, "lr_end": 1.0e-5, "seed": 1},
                "model": {
                    "rank": rank, "n_units": 24, "dim_x": dim_x, "nonlinearity": "relu",
                    "noise_z": "full", "noise_z0": "full", "observation": "affine",
                    "readout_from": "z", "likelihood": "gaussian",
                },
                "vsmc": vsmc,
            });
            stage.check_params(&raw).expect("valid params")
        };
        use serde_json::json;
        assert_eq!(
            stage.version_for(&params(3, 3, json!({"precision": "f32"}))),
            2
        );
        assert_eq!(
            stage.version_for(&params(3, 3, json!({"precision": "f64"}))),
            1
        );
        assert_eq!(stage.version_for(&params(3, 3, json!({}))), 1);
        assert_eq!(stage.version_for(&params(2, 3, json!({}))), 3);
        assert_eq!(
            stage.version_for(&params(2, 3, json!({"precision": "f32"}))),
            3
        );
        let bootstrap = json!({"proposal": "bootstrap", "precision": "f32"});
        assert_eq!(stage.version_for(&params(2, 3, bootstrap)), 2);
        assert_eq!(stage.version_for(&params(20, 64, json!({}))), 1);
        assert_eq!(
            stage.version_for(&params(2, 20, json!({"n_particles": 4}))),
            3
        );
        assert_eq!(
            stage.version_for(&params(2, 20, json!({"n_particles": 3}))),
            1
        );
        assert_eq!(
            stage.version_for(&params(2, 20, json!({"n_particles": 1}))),
            1
        );
    }
}
