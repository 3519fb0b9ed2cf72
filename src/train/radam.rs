//! RAdam exactly as `torch.optim.RAdam` (single-tensor path), and gradient clipping as
//! `torch.nn.utils.clip_grad_norm_` (SPEC §2.10).

use super::params::ParamLayout;
use serde::{Deserialize, Serialize};

/// RAdam hyper-parameters; the defaults are torch's (betas (0.9, 0.999), eps 1e-8, no weight decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RAdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty coefficient λ (0 = none, as in every shipped config).
    pub weight_decay: f64,
    /// `true`: AdamW-style decay θ ← θ(1 − lr·λ); `false`: g ← g + λθ (torch's default).
    pub decoupled_weight_decay: bool,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }
}

/// Optimiser state: step count and the two moment estimates (zero for frozen entries).
#[derive(Clone, Debug, PartialEq)]
pub struct RAdamState {
    /// Number of updates taken so far (torch's `state["step"]`).
    pub step: u64,
    /// First moment m_t, one entry per parameter scalar.
    pub exp_avg: Vec<f64>,
    /// Second moment v_t, one entry per parameter scalar.
    pub exp_avg_sq: Vec<f64>,
}

impl RAdamState {
    /// Fresh state for `n_params` scalars.
    pub fn new(n_params: usize) -> Self {
        Self {
            step: 0,
            exp_avg: vec![0.0; n_params],
            exp_avg_sq: vec![0.0; n_params],
        }
    }
}

impl RAdamConfig {
    /// One RAdam update of the trainable blocks of `params` with gradient `grad` at learning rate
    /// `lr`; frozen blocks are untouched. With t the new step and ρ∞ = 2/(1−β₂) − 1:
    /// m ← m + (1−β₁)(g − m), v ← β₂v + (1−β₂)g², m̂ = m/(1−β₁ᵗ), ρₜ = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ);
    /// if ρₜ > 5: θ ← θ − lr·m̂·r·√(1−β₂ᵗ)/(√v + ε) with
    /// r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ)); else θ ← θ − lr·m̂.
    pub fn step(
        &self,
        layout: &ParamLayout,
        params: &mut [f64],
        grad: &[f64],
        lr: f64,
        state: &mut RAdamState,
    ) {
        state.step += 1;
        let step = state.step as f64;
        let (beta1, beta2) = (self.beta1, self.beta2);
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;
        let rect = if rho_t > 5.0 {
            Some(
                ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    .sqrt(),
            )
        } else {
            None
        };
        let sqrt_bc2 = bias_correction2.sqrt();
        let weight1 = 1.0 - beta1;
        let eps = self.eps;
        let update = |p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]| {
            if self.weight_decay == 0.0 && weight1 < 0.5 {
                // The common case (every shipped config) without branches in the loop, so
                // that it runs on vector lanes (the same operations in the same order).
                let lanes = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
                match rect {
                    Some(rect) => {
                        for (((p, &gi), m), v) in lanes {
                            *m += weight1 * (gi - *m);
                            *v = *v * beta2 + (1.0 - beta2) * gi * gi;
                            let m_hat = *m / bias_correction1;
                            let adaptive_lr = sqrt_bc2 / (v.sqrt() + eps);
                            *p -= m_hat * lr * adaptive_lr * rect;
                        }
                    }
                    None => {
                        for (((p, &gi), m), v) in lanes {
                            *m += weight1 * (gi - *m);
                            *v = *v * beta2 + (1.0 - beta2) * gi * gi;
                            *p -= *m / bias_correction1 * lr;
                        }
                    }
                }
                return;
            }
            for i in 0..p.len() {
                let mut gi = g[i];
                if self.weight_decay != 0.0 {
                    if self.decoupled_weight_decay {
                        p[i] *= 1.0 - lr * self.weight_decay;
                    } else {
                        gi += self.weight_decay * p[i];
                    }
                }
                // torch's lerp: self + w (end − self) for w < 0.5, else end − (end − self)(1 − w).
                m[i] = if weight1 < 0.5 {
                    m[i] + weight1 * (gi - m[i])
                } else {
                    gi - (gi - m[i]) * (1.0 - weight1)
                };
                v[i] = v[i] * beta2 + (1.0 - beta2) * gi * gi;
                let m_hat = m[i] / bias_correction1;
                match rect {
                    Some(rect) => {
                        let adaptive_lr = sqrt_bc2 / (v[i].sqrt() + self.eps);
                        p[i] -= m_hat * lr * adaptive_lr * rect;
                    }
                    None => p[i] -= m_hat * lr,
                }
            }
        };
        for block in layout.blocks().iter().filter(|b| b.trainable) {
            let range = block.range();
            update(
                &mut params[range.clone()],
                &grad[range.clone()],
                &mut state.exp_avg[range.clone()],
                &mut state.exp_avg_sq[range],
            );
        }
    }
}

/// Clips the gradient of the trainable blocks to global L2 norm `max_norm` as
/// `torch.nn.utils.clip_grad_norm_`: total = ‖(‖g_b‖)_b‖, g ← g·min(1, max_norm/(total + 1e-6)).
/// Returns the norm before clipping.
pub fn clip_grad_norm(layout: &ParamLayout, grad: &mut [f64], max_norm: f64) -> f64 {
    let total = global_grad_norm(layout, grad);
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    for block in layout.blocks().iter().filter(|b| b.trainable) {
        for g in &mut grad[block.range()] {
            *g *= coef;
        }
    }
    total
}

/// Global L2 norm of the gradient over the trainable blocks (norm of the per-block norms).
pub fn global_grad_norm(layout: &ParamLayout, grad: &[f64]) -> f64 {
    layout
        .blocks()
        .iter()
        .filter(|b| b.trainable)
        .map(|b| {
            let norm = grad[b.range()].iter().map(|g| g * g).sum::<f64>().sqrt();
            norm * norm
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ParamLayout {
        let mut layout = ParamLayout::new();
        layout.push("w", &[3], true);
        layout.push("frozen", &[2], false);
        layout
    }

    #[test]
    fn first_steps_are_sgd_with_momentum_and_frozen_blocks_stay() {
        let layout = layout();
        let config = RAdamConfig::default();
        let mut params = vec![1.0, 2.0, 3.0, 7.0, 8.0];
        let grad = vec![0.5, -1.0, 2.0, 100.0, 100.0];
        let mut state = RAdamState::new(5);
        config.step(&layout, &mut params, &grad, 0.1, &mut state);
        // ρ₁ ≤ 5: θ ← θ − lr·m̂ with m̂ = g at step 1.
        for i in 0..3 {
            let expected = [1.0, 2.0, 3.0][i] - 0.1 * grad[i];
            assert!((params[i] - expected).abs() < 1e-15, "{i}: {}", params[i]);
        }
        assert_eq!(&params[3..], &[7.0, 8.0]);
        assert_eq!(&state.exp_avg[3..], &[0.0, 0.0]);
        assert_eq!(state.step, 1);
    }

    #[test]
    fn rectified_branch_starts_at_step_six() {
        // ρ_t > 5 first at t = 6 for β₂ = 0.999: the update then differs from plain momentum.
        let layout = layout();
        let config = RAdamConfig::default();
        let grad = vec![1.0, 1.0, 1.0, 0.0, 0.0];
        let mut params = vec![0.0; 5];
        let mut state = RAdamState::new(5);
        let mut moves = Vec::new();
        for _ in 0..6 {
            let before = params[0];
            config.step(&layout, &mut params, &grad, 1.0, &mut state);
            moves.push(before - params[0]);
        }
        // Constant gradient 1: m̂ = 1, so the SGD branch moves by exactly lr = 1.
        for (t, step) in moves.iter().take(5).enumerate() {
            assert!((step - 1.0).abs() < 1e-12, "step {}: {step}", t + 1);
        }
        assert!(moves[5] < 0.5, "rectified step {}", moves[5]);
    }

    /// The update without weight decay (on vector lanes) gives the bits of torch's formulas
    /// written out per element, through both the momentum-only and the rectified steps; the
    /// frozen block stays.
    #[test]
    fn vector_update_has_the_bits_of_the_formulas() {
        use rand::{Rng, SeedableRng};
        let mut layout = ParamLayout::new();
        layout.push("small", &[5], true);
        layout.push("frozen", &[3], false);
        layout.push("large", &[20_011], true);
        let n = layout.len();
        let config = RAdamConfig::default();
        let (b1, b2, eps) = (config.beta1, config.beta2, config.eps);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut params: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut expected = params.clone();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let mut state = RAdamState::new(n);
        for step in 1..=8 {
            let grad: Vec<f64> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let lr = 0.01 * step as f64;
            config.step(&layout, &mut params, &grad, lr, &mut state);
            let t = f64::from(step);
            let (bc1, bc2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
            let rho_inf = 2.0 / (1.0 - b2) - 1.0;
            let rho_t = rho_inf - 2.0 * t * b2.powf(t) / bc2;
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt();
            for i in (0..5).chain(8..n) {
                let g = grad[i];
                m[i] += (1.0 - b1) * (g - m[i]);
                v[i] = v[i] * b2 + (1.0 - b2) * g * g;
                let m_hat = m[i] / bc1;
                expected[i] -= if rho_t > 5.0 {
                    m_hat * lr * (bc2.sqrt() / (v[i].sqrt() + eps)) * rect
                } else {
                    m_hat * lr
                };
            }
            let bits = |x: &[f64]| x.iter().map(|a| a.to_bits()).collect::<Vec<u64>>();
            assert!(bits(&params) == bits(&expected), "step {step}");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm_and_ignores_frozen() {
        let layout = layout();
        let mut grad = vec![3.0, 0.0, 4.0, 1e6, 1e6];
        let norm = clip_grad_norm(&layout, &mut grad, 1.0);
        assert!((norm - 5.0).abs() < 1e-12);
        let clipped = global_grad_norm(&layout, &grad);
        assert!((clipped - 5.0 / (5.0 + 1e-6)).abs() < 1e-12, "{clipped}");
        let mut small = vec![0.3, 0.0, 0.4, 0.0, 0.0];
        clip_grad_norm(&layout, &mut small, 1.0);
        assert_eq!(small, vec![0.3, 0.0, 0.4, 0.0, 0.0]);
    }
}
