//! The VSMC loss as a training [`Objective`], for each of the three proposals.

use serde::{Deserialize, Serialize};

use super::draws::{Resampling, SeededNoise};
use super::kernel::Precision;
use super::optimal::{optimal_vsmc, VsmcError, VsmcOptions, VsmcOutput};
use super::smc::{smc_vsmc, SmcProposal};
use crate::model::encoder::{CnnEncoder, EncoderConfig};
use crate::model::lowrank::ModelConfig;
use crate::model::Sequences;
use crate::train::error::ObjectiveError;
use crate::train::objective::{Objective, StepContext, StepInfo};
use crate::train::params::ParamLayout;

/// Which proposal the particle filter uses (the reference's `loss_f`, SPEC §2.4–2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Optimal proposal for linear-Gaussian observations (`opt_smc`).
    #[serde(alias = "opt_smc")]
    Optimal,
    /// Prior × CNN encoder (`smc`); needs `vsmc.encoder`.
    #[serde(alias = "smc")]
    Encoder,
    /// The transition prior (`bs_smc`).
    #[serde(alias = "bs_smc")]
    Bootstrap,
}

/// A model with its proposal: the model's parameter layout, followed by the encoder's blocks
/// when the proposal has an encoder.
#[derive(Debug, Clone)]
pub struct ModelWithProposal {
    /// The model.
    pub config: ModelConfig,
    /// The proposal.
    pub proposal: ProposalKind,
    /// The encoder bound to its blocks (encoder proposal).
    pub encoder: Option<CnnEncoder>,
    /// Model blocks then encoder blocks.
    pub layout: ParamLayout,
}

impl ModelWithProposal {
    /// Builds the layout; the encoder proposal needs an encoder config, the others none.
    pub fn new(
        config: ModelConfig,
        proposal: ProposalKind,
        encoder: Option<&EncoderConfig>,
    ) -> Result<Self, VsmcError> {
        let mut layout = config.layout();
        let encoder = match (proposal, encoder) {
            (ProposalKind::Encoder, Some(e)) => Some(
                CnnEncoder::push_layout(e, &mut layout, config.dim_x, config.rank)
                    .map_err(|e| VsmcError::Params(format!("vsmc.encoder: {e}")))?,
            ),
            (ProposalKind::Encoder, None) => {
                return Err(VsmcError::Params(
                    "the encoder proposal needs `vsmc.encoder` (kernel_sizes, channels, \
                     activation, padding_location, padding_mode, init_scale)"
                        .into(),
                ))
            }
            (_, _) => None,
        };
        Ok(Self {
            config,
            proposal,
            encoder,
            layout,
        })
    }

    /// Initial parameters: the model's reference initialisation from `seed`, then the encoder's
    /// (torch's Conv1d default) from a stream derived from the same seed.
    pub fn init_params(&self, seed: u64) -> Result<Vec<f64>, VsmcError> {
        let mut p = self
            .config
            .init_params(seed)
            .map_err(|e| VsmcError::Params(e.to_string()))?;
        p.resize(self.layout.len(), 0.0);
        if let Some(enc) = &self.encoder {
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0065_6e63_6f64_6572);
            enc.init_params(&mut p, &mut rng)
                .map_err(|e| VsmcError::Params(format!("encoder: {e}")))?;
        }
        Ok(p)
    }

    /// Number of model parameters (the encoder's follow).
    pub fn n_model(&self) -> usize {
        self.config.layout().len()
    }

    /// One VSMC pass (loss, weights, particles; gradient added into `grad` when given).
    pub fn vsmc(
        &self,
        params: &[f64],
        data: &Sequences<f64>,
        options: &VsmcOptions,
        noise: &dyn super::draws::NoiseSource,
        grad: Option<&mut [f64]>,
    ) -> Result<VsmcOutput, VsmcError> {
        match self.proposal {
            ProposalKind::Optimal => optimal_vsmc(&self.config, params, data, options, noise, grad),
            ProposalKind::Encoder => {
                let enc = self.encoder.as_ref().ok_or_else(|| {
                    VsmcError::Params("the encoder proposal has no encoder".into())
                })?;
                smc_vsmc(
                    &self.config,
                    SmcProposal::Encoder(enc),
                    params,
                    data,
                    options,
                    noise,
                    grad,
                )
            }
            ProposalKind::Bootstrap => smc_vsmc(
                &self.config,
                SmcProposal::Bootstrap,
                params,
                data,
                options,
                noise,
                grad,
            ),
        }
    }
}

impl ModelWithProposal {
    /// Filtered posterior means E[z_t | x_0..t] (particle-weighted, before resampling) of the
    /// first trial of `trial`, `[t][r]`, and one state of the last step drawn by weight.
    pub fn filtered_means(
        &self,
        params: &[f64],
        trial: &Sequences<f64>,
        n_particles: usize,
        seed: u64,
    ) -> Result<(Vec<f64>, Vec<f64>), VsmcError> {
        let noise = SeededNoise {
            seed,
            resampling: Resampling::Systematic,
        };
        let out = self.vsmc(
            params,
            trial,
            &VsmcOptions {
                n_particles,
                t_forward: 0,
                precision: Precision::F64,
            },
            &noise,
            None,
        )?;
        let (r, k, tt) = (self.config.rank, n_particles, trial.n_time);
        let means = super::trial::weighted_means(&out.log_w[0], &out.particles[0], r, k);
        let mut w = vec![0.0; k];
        super::draws::normalised_weights(&out.log_w[0][(tt - 1) * k..tt * k], &mut w);
        // One particle of the last step, drawn by weight.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let u: f64 = rng.gen();
        let (mut acc, mut pick) = (0.0, k - 1);
        for (kk, wk) in w.iter().enumerate() {
            acc += wk;
            if u < acc {
                pick = kk;
                break;
            }
        }
        let last = (tt - 1) * k + pick;
        let sample = out.particles[0][last * r..(last + 1) * r].to_vec();
        Ok((means, sample))
    }
}

/// Minus the filtering ELBO of the VSMC on a minibatch (SPEC §2.1). Draws come from the step
/// seed, so a run is the same for any thread count and on resume.
pub struct VsmcObjective {
    model: ModelWithProposal,
    options: VsmcOptions,
    resampling: Resampling,
}

impl VsmcObjective {
    /// Optimal-proposal objective for `config` with K particles, resampling scheme and t_forward.
    pub fn new(config: ModelConfig, options: VsmcOptions, resampling: Resampling) -> Self {
        let layout = config.layout();
        Self {
            model: ModelWithProposal {
                config,
                proposal: ProposalKind::Optimal,
                encoder: None,
                layout,
            },
            options,
            resampling,
        }
    }
    /// Objective for a model with any proposal.
    pub fn with_proposal(
        model: ModelWithProposal,
        options: VsmcOptions,
        resampling: Resampling,
    ) -> Self {
        Self {
            model,
            options,
            resampling,
        }
    }
    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }
}

impl Objective for VsmcObjective {
    type Real = f64;

    fn layout(&self) -> &ParamLayout {
        &self.model.layout
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
        let out = self
            .model
            .vsmc(params, batch, &options, &noise, Some(grad))
            .map_err(|e| Box::new(e) as ObjectiveError)?;
        Ok(StepInfo::new(out.loss).with("mean_alpha", out.mean_alpha))
    }
}
