//! The `generate` kind: sample a long trajectory from a fitted model (SPEC §3.1): start from
//! the posterior of z_0 given the data's first sample (`posterior_sample` / `posterior_mean`),
//! from the filtered posterior mean at a time point (`filtered_mean`, Fig 4), or from the prior
//! mean; run `cut_off` burn-in steps that are discarded, then `n_steps` with latent noise and
//! sampled observations.
//!
//! ```yaml
//! - name: eeg.generate
//!   kind: generate
//!   matrix: {seed: 1..20}
//!   params: {seed: "${seed}", cut_off: 2400, init: posterior_sample}
//!   inputs: {model: "eeg.fit[seed=${seed}]:model", data: "eeg.prepare:sequences"}
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fit::load_model;
use crate::data::sequences_io::{read_attr, read_sequences, write_sequences};
use crate::inference::objective::ProposalKind;
use crate::inference::optimal::{filtered_means, initial_posterior};
use crate::model::Sequences;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};

/// Initial state of the generated trajectory.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitState {
    /// A draw from q(z_0 | x_0) (the paper's Table 1 protocol).
    PosteriorSample,
    /// The mean of q(z_0 | x_0).
    PosteriorMean,
    /// The particle filter's posterior mean at `init_time` (Fig 4: t = 1200).
    FilteredMean,
    /// The prior mean μ_0.
    PriorMean,
}

fn default_cut_off() -> usize {
    2400
}
fn default_init() -> InitState {
    InitState::PosteriorSample
}
fn default_max_steps() -> usize {
    10_000
}

/// Params of a `generate` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateParams {
    /// Seed of the initial-state draw, the latent noise and the observation noise.
    pub seed: u64,
    /// Burn-in steps discarded (paper: 2400).
    #[serde(default = "default_cut_off")]
    pub cut_off: usize,
    /// Initial state.
    #[serde(default = "default_init")]
    pub init: InitState,
    /// Time index for `filtered_mean`.
    #[serde(default)]
    pub init_time: usize,
    /// Particles of the filter for `filtered_mean` (and for the posterior of z_0 of models
    /// fitted with the encoder or bootstrap proposal).
    #[serde(default = "default_particles")]
    pub init_particles: usize,
    /// Steps kept (default: the data's length, at most `max_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_steps: Option<usize>,
    /// Upper bound when `n_steps` is unset (reference: 10000).
    #[serde(default = "default_max_steps")]
    pub max_steps: usize,
}

fn default_particles() -> usize {
    64
}

/// Samples from a fitted model.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateStage;

impl Stage for GenerateStage {
    fn kind(&self) -> &'static str {
        "generate"
    }
    fn version(&self) -> u32 {
        2
    }
    fn description(&self) -> &'static str {
        "sample a trajectory from a fitted model (posterior/prior initial state, burn-in) → sequences file"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<GenerateParams>(params)?;
        let p: GenerateParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.n_steps == Some(0) || p.max_steps == 0 {
            return Err(ParamError::new("n_steps", "must be ≥ 1"));
        }
        if p.init == InitState::FilteredMean && p.init_particles == 0 {
            return Err(ParamError::new("init_particles", "must be ≥ 1"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![OutputSpec::new("generated", "generated.h5")]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![
            InputSpec::required("model"),
            InputSpec::required("data"),
        ])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: GenerateParams = ctx.params_as()?;
        let model_path = ctx.input("model")?.to_path_buf();
        let data_path = ctx.input("data")?.to_path_buf();
        let model = load_model(&model_path)?;
        let data = read_sequences(&data_path).map_err(|e| StageError::new(e.to_string()))?;
        let c = &model.config;
        if data.dim_x != c.dim_x {
            return Err(StageError::new(format!(
                "{} has {} channels; the model was fitted to {}",
                data_path.display(),
                data.dim_x,
                c.dim_x
            )));
        }
        let tt = data.n_time;
        let first = |t: usize| -> Vec<f64> { (0..c.dim_x).map(|j| data.x[j * tt + t]).collect() };
        let u0: Vec<f64> = (0..c.dim_u).map(|l| data.u[l * tt]).collect();
        let err = |e: crate::inference::optimal::VsmcError| StageError::new(e.to_string());
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let prefix = |len: usize| Sequences {
            n_sequences: 1,
            dim_x: c.dim_x,
            dim_u: c.dim_u,
            n_time: len,
            x: (0..c.dim_x)
                .flat_map(|j| data.x[j * tt..j * tt + len].to_vec())
                .collect(),
            u: (0..c.dim_u)
                .flat_map(|l| data.u[l * tt..l * tt + len].to_vec())
                .collect(),
        };
        let optimal = model.proposal == ProposalKind::Optimal;
        let z0: Vec<f64> = match p.init {
            InitState::PosteriorSample | InitState::PosteriorMean if optimal => {
                let (mean, chol) =
                    initial_posterior(c, &model.params, &first(0), &u0).map_err(err)?;
                if p.init == InitState::PosteriorMean {
                    mean
                } else {
                    let r = c.rank;
                    let eps: Vec<f64> = (0..r).map(|_| StandardNormal.sample(&mut rng)).collect();
                    (0..r)
                        .map(|i| mean[i] + (0..=i).map(|j| chol[i * r + j] * eps[j]).sum::<f64>())
                        .collect()
                }
            }
            InitState::PosteriorSample | InitState::PosteriorMean => {
                // The model's own proposal (encoder or bootstrap) on x_0: weighted particles.
                let with = model.with_proposal()?;
                let (means, sample) = ctx
                    .install(|| {
                        with.filtered_means(&model.all_params, &prefix(1), p.init_particles, p.seed)
                    })
                    .map_err(err)?;
                if p.init == InitState::PosteriorMean {
                    means
                } else {
                    sample
                }
            }
            InitState::FilteredMean => {
                if p.init_time >= tt {
                    return Err(StageError::new(format!(
                        "params.init_time = {} is beyond the data's {tt} steps",
                        p.init_time
                    )));
                }
                let trial = prefix(p.init_time + 1);
                let means = if optimal {
                    ctx.install(|| {
                        filtered_means(c, &model.params, &trial, p.init_particles, p.seed)
                    })
                    .map_err(err)?
                } else {
                    let with = model.with_proposal()?;
                    ctx.install(|| {
                        with.filtered_means(&model.all_params, &trial, p.init_particles, p.seed)
                    })
                    .map_err(err)?
                    .0
                };
                means[p.init_time * c.rank..(p.init_time + 1) * c.rank].to_vec()
            }
            InitState::PriorMean => c
                .view(&model.params)
                .map_err(|e| StageError::new(e.to_string()))?
                .initial_state
                .map(|s| s.to_vec())
                .unwrap_or_else(|| vec![0.0; c.rank]),
        };
        let n_steps = p.n_steps.unwrap_or(tt.min(p.max_steps));
        // The initial state is step 0 of the burn-in (as the reference's generate does).
        let (_, obs) = c
            .generate(
                &model.params,
                &z0,
                n_steps,
                p.cut_off,
                p.seed.wrapping_add(1),
            )
            .map_err(|e| StageError::new(e.to_string()))?;
        let seq = Sequences {
            n_sequences: 1,
            dim_x: c.dim_x,
            dim_u: 0,
            n_time: n_steps,
            x: obs,
            u: Vec::new(),
        };
        if let Some(pos) = seq.x.iter().position(|v| !v.is_finite()) {
            return Err(StageError::new(format!(
                "the model's trajectory diverged (non-finite value at channel {}, step {}); the fit is unstable",
                pos / n_steps,
                pos % n_steps
            )));
        }
        let source = read_attr(&data_path, "data_source")
            .ok()
            .flatten()
            .unwrap_or_default();
        // The label of the data the model was fitted to (which may differ from the data it is
        // started from here, e.g. the EEG training copy vs the smoothed evaluation array).
        let trained_on = model.data_source.clone().unwrap_or(source);
        let out = ctx.output("generated")?.to_path_buf();
        write_sequences(
            &out,
            &seq,
            &[
                ("variant", model.variant.clone()),
                ("dim", c.rank.to_string()),
                ("n_params", c.n_params_table1().to_string()),
                (
                    "data_source",
                    format!("generated by the model (fitted to {trained_on})"),
                ),
                ("trained_on", trained_on.clone()),
            ],
        )
        .map_err(|e| StageError::new(e.to_string()))
    }
}
