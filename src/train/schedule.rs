//! Learning-rate decay and particle-count annealing, both stepped once per epoch (SPEC §2.10).

use serde::{Deserialize, Serialize};

/// `torch.optim.lr_scheduler.ExponentialLR` with γ = exp(ln(lr_end/lr)/n_epochs), stepped after
/// each epoch only while the current lr > lr_end (the reference's `train_VAE`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialDecay {
    /// Multiplicative factor per step.
    pub gamma: f64,
    /// Decay stops once lr ≤ lr_end.
    pub lr_end: f64,
}

impl ExponentialDecay {
    /// γ = exp(ln(lr_end/lr)/n_epochs).
    pub fn new(lr: f64, lr_end: f64, n_epochs: usize) -> Self {
        Self {
            gamma: ((lr_end / lr).ln() / n_epochs as f64).exp(),
            lr_end,
        }
    }

    /// The lr for the next epoch: lr·γ (torch's recursive form) while lr > lr_end, else lr.
    pub fn next(&self, lr: f64) -> f64 {
        if lr > self.lr_end {
            lr * self.gamma
        } else {
            lr
        }
    }
}

/// Particle-count annealing: K grows (or shrinks) geometrically from `start` to `end` over
/// `epochs` epochs and stays at `end` afterwards; the objective reads it via `StepContext`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticleSchedule {
    pub start: usize,
    pub end: usize,
    pub epochs: usize,
}

impl ParticleSchedule {
    /// K at 0-based `epoch`: round(start·(end/start)^(epoch/epochs)), clamped to `end` from
    /// `epoch ≥ epochs` on.
    pub fn particles_at(&self, epoch: usize) -> usize {
        if self.epochs == 0 || epoch >= self.epochs {
            return self.end;
        }
        let fraction = epoch as f64 / self.epochs as f64;
        let ratio = self.end as f64 / self.start as f64;
        let k = (self.start as f64 * ratio.powf(fraction)).round() as usize;
        k.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_reaches_lr_end_after_n_epochs_then_stops() {
        let decay = ExponentialDecay::new(1e-3, 1e-5, 20);
        let mut lr = 1e-3;
        for _ in 0..20 {
            lr = decay.next(lr);
        }
        assert!((lr / 1e-5 - 1.0).abs() < 1e-12, "{lr}");
        // At most one more step (if rounding left lr a hair above lr_end), then constant.
        let after = decay.next(decay.next(lr));
        assert!(after <= 1e-5 && after > 1e-5 * decay.gamma * 0.999_999);
        assert_eq!(decay.next(after), after);
    }

    #[test]
    fn gamma_matches_closed_form() {
        let decay = ExponentialDecay::new(1e-3, 1e-6, 1500);
        assert!((decay.gamma.powi(1500) - 1e-3).abs() < 1e-14);
    }

    #[test]
    fn particle_schedule_interpolates_geometrically() {
        let schedule = ParticleSchedule {
            start: 4,
            end: 64,
            epochs: 4,
        };
        let ks: Vec<usize> = (0..6).map(|e| schedule.particles_at(e)).collect();
        assert_eq!(ks, vec![4, 8, 16, 32, 64, 64]);
    }
}
