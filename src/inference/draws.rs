//! The random numbers one VSMC pass consumes, per trial, so that they can be drawn from a
//! seeded stream (training) or injected (replaying the reference's golden draws).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Resampling scheme (SPEC §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resampling {
    /// One uniform per step; positions (u + i)/K.
    Systematic,
    /// K independent draws from the normalised weights.
    Multinomial,
}

/// The resampling randomness of one trial, one entry per resampling step.
#[derive(Debug, Clone, PartialEq)]
pub enum ResampleDraws {
    /// Systematic: one uniform in [0, 1) per step.
    Systematic(Vec<f64>),
    /// Multinomial by inverse CDF: K uniforms per step (step-major).
    MultinomialUniforms(Vec<f64>),
    /// Ancestor indices given directly, K per step (replay of torch.multinomial).
    Ancestors(Vec<usize>),
}

/// All draws of one trial: standard normals `eps` (T × K × R, step-major) and resampling.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialDraws {
    /// ε for every proposal sample, `[t][k][r]`.
    pub eps: Vec<f64>,
    /// Resampling draws for steps 0 … n_resample − 1.
    pub resample: ResampleDraws,
}

/// Where the draws of a VSMC pass come from (seeded stream or golden replay).
pub trait NoiseSource: Sync {
    /// Draws for trial `trial` of the batch: `n_steps` steps, `n_resample` of them resampled,
    /// `k` particles, rank `r`.
    fn trial_draws(
        &self,
        trial: usize,
        n_steps: usize,
        n_resample: usize,
        k: usize,
        r: usize,
    ) -> TrialDraws;
}

/// Seeded draws: trial `b` uses its own ChaCha8 stream seeded from (seed, b), so results do not
/// depend on the thread count or on how trials are scheduled.
#[derive(Debug, Clone, Copy)]
pub struct SeededNoise {
    /// Seed of the pass (e.g. the training loop's step seed).
    pub seed: u64,
    /// Resampling scheme.
    pub resampling: Resampling,
}

impl NoiseSource for SeededNoise {
    fn trial_draws(
        &self,
        trial: usize,
        n_steps: usize,
        n_resample: usize,
        k: usize,
        r: usize,
    ) -> TrialDraws {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (trial as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let eps = (0..n_steps * k * r)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        let resample = match self.resampling {
            Resampling::Systematic => {
                ResampleDraws::Systematic((0..n_resample).map(|_| rng.gen::<f64>()).collect())
            }
            Resampling::Multinomial => ResampleDraws::MultinomialUniforms(
                (0..n_resample * k).map(|_| rng.gen::<f64>()).collect(),
            ),
        };
        TrialDraws { eps, resample }
    }
}

/// Fixed, pre-recorded draws per trial (golden replay).
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    /// One entry per trial of the batch.
    pub trials: Vec<TrialDraws>,
}

impl NoiseSource for RecordedNoise {
    fn trial_draws(&self, trial: usize, _: usize, _: usize, _: usize, _: usize) -> TrialDraws {
        self.trials[trial].clone()
    }
}

/// Normalised weights exp(lw − logsumexp lw) in f64.
pub fn normalised_weights(log_w: &[f64], out: &mut [f64]) {
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(log_w) {
        *o = (l - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Ancestors for one step. `scratch` has length at least 2K. NaN weights give the identity.
pub fn ancestors(
    log_w: &[f64],
    draws: &ResampleDraws,
    step: usize,
    scratch: &mut [f64],
    out: &mut [usize],
) {
    let k = log_w.len();
    if log_w.iter().any(|v| v.is_nan()) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = i;
        }
        return;
    }
    let scratch = &mut scratch[..2 * k];
    match draws {
        ResampleDraws::Ancestors(a) => out.copy_from_slice(&a[step * k..(step + 1) * k]),
        ResampleDraws::Systematic(u) => {
            let (c, pos) = scratch.split_at_mut(k);
            normalised_weights(log_w, c);
            let mut acc = 0.0;
            for w in c.iter_mut() {
                acc += *w;
                *w = acc;
            }
            // The running sums of weights ≥ 0 never decrease (rounding is monotone), so the
            // largest is the last, and so do c_j after the division.
            let max = c.last().copied().unwrap_or(f64::NEG_INFINITY);
            for v in c.iter_mut() {
                *v /= max;
            }
            systematic(c, u[step], pos, out);
        }
        ResampleDraws::MultinomialUniforms(u) => {
            let c = &mut scratch[..k];
            normalised_weights(log_w, c);
            let mut acc = 0.0;
            for w in c.iter_mut() {
                acc += *w;
                *w = acc;
            }
            for (i, o) in out.iter_mut().enumerate() {
                let x = u[step * k + i] * acc;
                // searchsorted(right=True): first j with c_j > x.
                *o = c.partition_point(|&c| c <= x).min(k - 1);
            }
        }
    }
}

/// Systematic resampling's `bucketize(right=False)`: ancestor i is the first j with
/// c_j ≥ pos_i = (u + i)/K (at most K − 1), for cumulative weights c that never decrease.
/// `pos` (length K) is scratch.
///
/// That first j is the number of c_j below pos_i, which is the number of j whose count
/// n_j = #{i : pos_i ≤ c_j} is at most i (the positions increase strictly). So each n_j is
/// found from its estimate ⌊c_j K − u⌋ + 1, corrected by comparing with the positions
/// themselves (rarely needed), marked in `out`, and a running sum of the marks gives the
/// ancestors. Unlike a walk that advances j while c_j < pos_i, nothing branches on the weights,
/// and a walk's mispredicted branches had made it the slower (≈ 1.5 µs against ≈ 0.6 µs a step
/// for K = 64). With a NaN among the c_j (no order) the walk runs instead.
fn systematic(c: &[f64], u: f64, pos: &mut [f64], out: &mut [usize]) {
    let k = c.len();
    let kf = k as f64;
    if c.iter().any(|v| v.is_nan()) {
        let mut j = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let p = (u + i as f64) / kf;
            while j < k && c[j] < p {
                j += 1;
            }
            *o = j.min(k - 1);
        }
        return;
    }
    for (i, p) in pos.iter_mut().enumerate() {
        *p = (u + i as f64) / kf;
    }
    out.iter_mut().for_each(|o| *o = 0);
    for &cj in c {
        // In [0, K] (c_j ≥ 0, u < 1, and the clamp for c_j > 1), so the cast is exact.
        let mut n = ((cj * kf - u).floor() + 1.0).clamp(0.0, kf) as usize;
        while n > 0 && pos[n - 1] > cj {
            n -= 1;
        }
        while n < k && pos[n] <= cj {
            n += 1;
        }
        // n_j = K counts for no ancestor.
        out[n.min(k - 1)] += usize::from(n < k);
    }
    let mut acc = 0;
    for o in out.iter_mut() {
        acc += *o;
        *o = acc.min(k - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systematic_picks_heavy_particles() {
        let lw = [0.0f64.ln(), 1.0f64.ln(), 0.0f64.ln(), 3.0f64.ln()];
        let mut s = [0.0; 8];
        let mut a = [0; 4];
        ancestors(
            &lw,
            &ResampleDraws::Systematic(vec![0.5]),
            0,
            &mut s,
            &mut a,
        );
        // weights 0, .25, 0, .75; positions .125 .375 .625 .875
        assert_eq!(a, [1, 3, 3, 3]);
        ancestors(
            &lw,
            &ResampleDraws::MultinomialUniforms(vec![0.1, 0.3, 0.2, 0.99]),
            0,
            &mut s,
            &mut a,
        );
        assert_eq!(a, [1, 3, 1, 3]);
    }

    /// The counted ancestors are what a binary search per position picks (the reference's
    /// `bucketize`), with zero weights, ties, positions exactly on the sums (u = 0, equal
    /// weights) and several draws of u.
    #[test]
    fn systematic_ancestors_equal_a_search_per_position() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for k in [1usize, 2, 3, 7, 64, 100] {
            for _ in 0..50 {
                let lw: Vec<f64> = (0..k)
                    .map(|_| match rng.gen_range(0..if k % 2 == 0 { 2 } else { 4 }) {
                        0 => f64::NEG_INFINITY,
                        1 => 0.5,
                        _ => rng.gen_range(-5.0..5.0),
                    })
                    .collect();
                // u = 0 with equal weights puts positions exactly on the sums.
                let u = vec![if rng.gen_range(0..3) == 0 {
                    0.0
                } else {
                    rng.gen_range(0.0..1.0)
                }];
                let (mut s, mut a) = (vec![0.0; 2 * k], vec![0; k]);
                ancestors(
                    &lw,
                    &ResampleDraws::Systematic(u.clone()),
                    0,
                    &mut s,
                    &mut a,
                );
                let mut c = vec![0.0; k];
                normalised_weights(&lw, &mut c);
                let mut acc = 0.0;
                for w in c.iter_mut() {
                    acc += *w;
                    *w = acc;
                }
                let max = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                c.iter_mut().for_each(|v| *v /= max);
                let want: Vec<usize> = (0..k)
                    .map(|i| {
                        let pos = (u[0] + i as f64) / k as f64;
                        c.partition_point(|&v| v < pos).min(k - 1)
                    })
                    .collect();
                assert_eq!(a, want, "k {k}, log w {lw:?}, u {u:?}");
            }
        }
    }

    /// Cumulative weights on, just above and just below the positions (one ulp), where the
    /// estimate ⌊c_j K − u⌋ + 1 of n_j can be one off either way: the counted ancestors still
    /// equal a search per position, and both corrections were needed in these cases.
    #[test]
    fn systematic_counts_at_the_positions_own_roundings() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let (mut too_high, mut too_low) = (0, 0);
        for k in [2usize, 3, 7, 10, 64, 100, 1000] {
            let kf = k as f64;
            for _ in 0..200 {
                let u = if rng.gen_range(0..4) == 0 {
                    0.0
                } else {
                    rng.gen_range(0.0..1.0)
                };
                let pos: Vec<f64> = (0..k).map(|i| (u + i as f64) / kf).collect();
                let mut c: Vec<f64> = (0..k)
                    .map(|_| {
                        let p = pos[rng.gen_range(0..k)];
                        match rng.gen_range(0..3) {
                            0 => p,
                            1 => f64::from_bits(p.to_bits() + 1),
                            _ if p > 0.0 => f64::from_bits(p.to_bits() - 1),
                            _ => p,
                        }
                    })
                    .collect();
                c.sort_by(f64::total_cmp);
                // The last cumulative weight, divided by itself.
                c[k - 1] = 1.0;
                for &cj in &c {
                    let estimate = ((cj * kf - u).floor() + 1.0).clamp(0.0, kf) as usize;
                    let n = pos.iter().filter(|&&p| p <= cj).count();
                    too_high += usize::from(estimate > n);
                    too_low += usize::from(estimate < n);
                }
                let want: Vec<usize> = pos
                    .iter()
                    .map(|&p| c.partition_point(|&v| v < p).min(k - 1))
                    .collect();
                let (mut got, mut scratch) = (vec![0; k], vec![0.0; k]);
                systematic(&c, u, &mut scratch, &mut got);
                assert_eq!(got, want, "k {k}, u {u}, c {c:?}");
            }
        }
        assert!(
            too_high > 0 && too_low > 0,
            "estimates off: {too_high} high, {too_low} low"
        );
    }

    /// All weights zero (log w = −∞) make every cumulative weight NaN: the walk runs, and every
    /// ancestor is particle 0, as before the counting.
    #[test]
    fn systematic_with_nan_sums_walks() {
        let lw = [f64::NEG_INFINITY; 5];
        let (mut s, mut a) = ([0.0; 10], [9; 5]);
        ancestors(
            &lw,
            &ResampleDraws::Systematic(vec![0.3]),
            0,
            &mut s,
            &mut a,
        );
        assert_eq!(a, [0; 5]);
    }

    #[test]
    fn seeded_noise_is_per_trial() {
        let n = SeededNoise {
            seed: 3,
            resampling: Resampling::Systematic,
        };
        let a = n.trial_draws(0, 5, 5, 4, 2);
        assert_eq!(a, n.trial_draws(0, 5, 5, 4, 2));
        assert_ne!(a, n.trial_draws(1, 5, 5, 4, 2));
        assert_eq!(a.eps.len(), 40);
    }
}
