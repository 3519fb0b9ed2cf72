//! The function being minimised: what the training loop calls once per minibatch.

use super::error::ObjectiveError;
use super::params::ParamLayout;
use crate::model::{Real, Sequences};

/// What the loop tells the objective about the current step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepContext {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based minibatch index within the epoch.
    pub batch: usize,
    /// Seed for the objective's own noise (particles, resampling), derived from
    /// (training seed, epoch, batch) so that it is the same on resume and for any thread count.
    pub seed: u64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Number of particles from the particle-count schedule, if one is configured
    /// (`None`: the objective uses its own K).
    pub n_particles: Option<usize>,
}

/// Result of one objective evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepInfo {
    /// The minibatch loss being minimised (for VSMC: minus the filtering ELBO, SPEC §2.1).
    pub loss: f64,
    /// Named diagnostics averaged by the loop over the epoch, e.g. `("mean_alpha", 0.3)`.
    pub diagnostics: Vec<(String, f64)>,
}

impl StepInfo {
    /// A step result without diagnostics.
    pub fn new(loss: f64) -> Self {
        Self {
            loss,
            diagnostics: Vec::new(),
        }
    }

    /// Adds a named diagnostic.
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.diagnostics.push((name.to_string(), value));
        self
    }
}

/// A differentiable minibatch loss over a flat `f64` parameter vector laid out by [`ParamLayout`].
///
/// The optimiser works in `f64`; the objective may compute internally in `Self::Real`
/// (the element type of the data it receives).
pub trait Objective: Sync {
    /// Element type of the data sequences (f32 or f64).
    type Real: Real;

    /// Names, shapes and trainability of the parameter blocks.
    fn layout(&self) -> &ParamLayout;

    /// Loss on `batch` (sequences of shape `(batch, dim_x, T)` with inputs `(batch, dim_u, T)`)
    /// at `params`, writing d loss / d params into `grad` (length `layout().len()`, zeroed by the
    /// caller). Entries of frozen blocks are ignored. A NaN/Inf loss or gradient is not an error:
    /// the loop stops with `TerminationReason::Diverged`.
    fn loss_and_grad(
        &self,
        params: &[f64],
        batch: &Sequences<Self::Real>,
        ctx: &StepContext,
        grad: &mut [f64],
    ) -> Result<StepInfo, ObjectiveError>;
}
