//! The VSMC loss as a training [`Objective`].

use super::draws::{Resampling, SeededNoise};
use super::optimal::{optimal_vsmc, VsmcOptions};
use crate::model::lowrank::ModelConfig;
use crate::model::Sequences;
use crate::train::error::ObjectiveError;
use crate::train::objective::{Objective, StepContext, StepInfo};
use crate::train::params::ParamLayout;

/// Minus the filtering ELBO of the optimal-proposal VSMC on a minibatch (SPEC §2.1, §2.4).
/// Draws come from the step seed, so a run is the same for any thread count and on resume.
pub struct VsmcObjective {
    config: ModelConfig,
    layout: ParamLayout,
    options: VsmcOptions,
    resampling: Resampling,
}

impl VsmcObjective {
    /// Objective for `config` with K particles, resampling scheme and t_forward.
    pub fn new(config: ModelConfig, options: VsmcOptions, resampling: Resampling) -> Self {
        let layout = config.layout();
        Self {
            config,
            layout,
            options,
            resampling,
        }
    }
    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl Objective for VsmcObjective {
    type Real = f64;

    fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    fn loss_and_grad(
        &self,
        params: &[f64],
        batch: &Sequences<f64>,
        ctx: &StepContext,
        grad: &mut [f64],
    ) -> Result<StepInfo, ObjectiveError> {
        let mut options = self.options;
        if let Some(k) = ctx.n_particles {
            options.n_particles = k;
        }
        let noise = SeededNoise {
            seed: ctx.seed,
            resampling: self.resampling,
        };
        let out = optimal_vsmc(&self.config, params, batch, &options, &noise, Some(grad))
            .map_err(|e| Box::new(e) as ObjectiveError)?;
        Ok(StepInfo::new(out.loss).with("mean_alpha", out.mean_alpha))
    }
}
