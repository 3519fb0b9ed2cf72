//! The `posterior` kind: posterior means of a fitted model's latents and observation means on a
//! sequences file (SPEC §2.8) — filtering (the particle filter's weighted means) or smoothing
//! (backward simulation, the reference's `predict_NLB`), averaged over independent repeats.
//! The latents are what one plots or decodes behaviour from; the rates are what NLB's
//! co-smoothing scores.
//!
//! ```yaml
//! - name: reach.posterior
//!   kind: posterior
//!   params: {n_particles: 192, n_repeats: 32, smooth: true, seed: 1}
//!   inputs: {model: "reach.fit:model", data: "reach.bin:sequences"}
//! ```
//!
//! One-off: `lowrank-smc exec posterior --set seed=1 --input model=M.h5 --input data=D.h5`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fit::load_model;
use crate::data::sequences_io::{read_attr, read_sequences, write_sequences};
use crate::inference::posterior::{posterior, PosteriorOptions};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};

fn default_particles() -> usize {
    100
}
fn default_repeats() -> usize {
    10
}
fn yes() -> bool {
    true
}

/// Params of a `posterior` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PosteriorParams {
    /// Seed of the filters' and the backward pass's draws.
    pub seed: u64,
    /// Particles per filter (the reference: 100–192).
    #[serde(default = "default_particles")]
    pub n_particles: usize,
    /// Independent filters averaged (the reference: 10–32).
    #[serde(default = "default_repeats")]
    pub n_repeats: usize,
    /// Smoothing by backward simulation (O(K²) per step); `false`: filtering means.
    #[serde(default = "yes")]
    pub smooth: bool,
}

/// Posterior means of a fitted model on data.
#[derive(Debug, Clone, Copy, Default)]
pub struct PosteriorStage;

impl Stage for PosteriorStage {
    fn kind(&self) -> &'static str {
        "posterior"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "posterior means of a fitted model's latents and rates on data (filtering, or smoothing by backward simulation) → latents.h5, rates.h5"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<PosteriorParams>(params)?;
        let p: PosteriorParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.n_particles == 0 {
            return Err(ParamError::new("n_particles", "must be ≥ 1"));
        }
        if p.n_repeats == 0 {
            return Err(ParamError::new("n_repeats", "must be ≥ 1"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("latents", "latents.h5"),
            OutputSpec::new("rates", "rates.h5"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![
            InputSpec::required("model"),
            InputSpec::required("data"),
        ])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: PosteriorParams = ctx.params_as()?;
        let model_path = ctx.input("model")?.to_path_buf();
        let data_path = ctx.input("data")?.to_path_buf();
        let model = load_model(&model_path)?;
        let data = read_sequences(&data_path).map_err(|e| StageError::new(e.to_string()))?;
        let c = &model.config;
        if data.dim_x != c.dim_x || data.dim_u != c.dim_u {
            return Err(StageError::new(format!(
                "{} has {} channels and {} inputs; the model was fitted to {} and {}",
                data_path.display(),
                data.dim_x,
                data.dim_u,
                c.dim_x,
                c.dim_u
            )));
        }
        if let Some(i) = data.x.iter().position(|v| !v.is_finite()) {
            let per = data.dim_x * data.n_time;
            return Err(StageError::new(format!(
                "{}: non-finite value in x (sequence {}, channel {}, step {})",
                data_path.display(),
                i / per,
                (i % per) / data.n_time,
                i % data.n_time
            )));
        }
        let with = model.with_proposal()?;
        let options = PosteriorOptions {
            n_particles: p.n_particles,
            n_repeats: p.n_repeats,
            smooth: p.smooth,
            seed: p.seed,
        };
        let post = ctx
            .install(|| posterior(&with, &model.all_params, &data, &options))
            .map_err(|e| StageError::new(format!("posterior: {e}")))?;
        let source = read_attr(&data_path, "data_source")
            .ok()
            .flatten()
            .unwrap_or_default();
        let method = if p.smooth {
            "smoothing (backward simulation)"
        } else {
            "filtering"
        };
        let attrs = |what: &str| {
            vec![
                ("variant", model.variant.clone()),
                ("dim", c.rank.to_string()),
                (
                    "data_source",
                    format!("posterior {what} of the model ({method}) on {source}"),
                ),
                ("method", method.to_string()),
                ("n_particles", p.n_particles.to_string()),
                ("n_repeats", p.n_repeats.to_string()),
            ]
        };
        let out = ctx.output("latents")?.to_path_buf();
        write_sequences(&out, &post.latents_as_sequences(), &attrs("latents"))
            .map_err(|e| StageError::new(e.to_string()))?;
        let out = ctx.output("rates")?.to_path_buf();
        write_sequences(&out, &post.rates_as_sequences(), &attrs("rates"))
            .map_err(|e| StageError::new(e.to_string()))
    }
}
