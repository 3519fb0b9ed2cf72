//! Posterior latents and observation means of a fitted model on data (SPEC §2.8): the particle
//! filter's weighted means (filtering), and smoothing by backward simulation.
//!
//! Filtering runs the model's own proposal (optimal, encoder or bootstrap) with K particles and
//! takes E[z_t | x_0..t] ≈ Σ_k w_t^k z_t^k over the proposed particles of step t and their
//! normalised weights (the filter resamples at every step, so those weights are the filtering
//! distribution). Smoothing follows the reference's `predict_NLB`: draw K final states from the
//! last step's weights; then for t = T−2 … 0 draw, for each trajectory j, a particle of step t
//! with probability ∝ w_t^k · p(z̃_{t+1}^j | z_t^k) (backward simulation: K trajectories from the
//! joint smoothing distribution, O(K²) per step). Both are averaged over `n_repeats`
//! independent filters. Observation means ("rates") are averaged the same way, over particles
//! by weight (filtering) or over the trajectories (smoothing).
//!
//! The transition density is the one the filter uses: N(μ(z_t), L_z L_zᵀ) with the full
//! Cholesky factor for the optimal proposal, and the per-dimension std clamped to [1e-4, 10]
//! for the encoder and bootstrap proposals (their filters use that diagonal).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::draws::{normalised_weights, Resampling, SeededNoise};
use super::kernel::Precision;
use super::objective::{ModelWithProposal, ProposalKind};
use super::optimal::{VsmcError, VsmcOptions};
use super::trial;
use crate::model::lowrank::{noise_cholesky, noise_std, Observation, ParamView, ReadoutFrom};
use crate::model::Sequences;

/// Sequences filtered at once (bounds the particle store).
const CHUNK: usize = 32;

/// Options of [`posterior`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PosteriorOptions {
    /// Particles K of each filter (and smoothed trajectories per repeat).
    pub n_particles: usize,
    /// Independent filters averaged.
    pub n_repeats: usize,
    /// Backward-simulation smoothing (else filtering means).
    pub smooth: bool,
    /// Seed of the filters' draws and of the backward draws.
    pub seed: u64,
}

/// Posterior means, laid out like [`Sequences::x`]: `(n_sequences, dim, n_time)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Posterior {
    /// E[z_t | data]: `(n_sequences, R, T)`.
    pub latents: Vec<f64>,
    /// E[f(η_t) | data], the observation mean: `(n_sequences, dx, T)`.
    pub rates: Vec<f64>,
    /// Sequences.
    pub n_sequences: usize,
    /// Latent dimension R.
    pub rank: usize,
    /// Observation dimension dx.
    pub dim_x: usize,
    /// Steps T.
    pub n_time: usize,
}

impl Posterior {
    /// The latents as a sequences file's contents (dim_x = R, no inputs).
    pub fn latents_as_sequences(&self) -> Sequences<f64> {
        Sequences {
            n_sequences: self.n_sequences,
            dim_x: self.rank,
            dim_u: 0,
            n_time: self.n_time,
            x: self.latents.clone(),
            u: Vec::new(),
        }
    }
    /// The observation means as a sequences file's contents (dim_x = dx, no inputs).
    pub fn rates_as_sequences(&self) -> Sequences<f64> {
        Sequences {
            n_sequences: self.n_sequences,
            dim_x: self.dim_x,
            dim_u: 0,
            n_time: self.n_time,
            x: self.rates.clone(),
            u: Vec::new(),
        }
    }
}

/// The transition density's noise: full Cholesky factor or per-dimension std.
enum TransitionNoise {
    Full(Vec<f64>),
    Diag(Vec<f64>),
}

impl TransitionNoise {
    /// log N(y; μ, Σ) up to the constant shared by all μ.
    fn log_density(&self, y: &[f64], mu: &[f64], scratch: &mut [f64]) -> f64 {
        let r = y.len();
        match self {
            TransitionNoise::Full(l) => {
                // Solve L s = y − μ by forward substitution.
                let mut q = 0.0;
                for i in 0..r {
                    let mut s = y[i] - mu[i];
                    for j in 0..i {
                        s -= l[i * r + j] * scratch[j];
                    }
                    s /= l[i * r + i];
                    scratch[i] = s;
                    q += s * s;
                }
                -0.5 * q
            }
            TransitionNoise::Diag(sd) => {
                let mut q = 0.0;
                for i in 0..r {
                    let s = (y[i] - mu[i]) / sd[i];
                    q += s * s;
                }
                -0.5 * q
            }
        }
    }
}

/// One index drawn from normalised weights `w` with a uniform `u` ∈ [0, 1).
fn draw(w: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (k, &wk) in w.iter().enumerate() {
        acc += wk;
        if u < acc {
            return k;
        }
    }
    w.len() - 1
}

/// Posterior means of the latents and observation means of every sequence of `data` under the
/// fitted model (`params`: model blocks then the encoder's, as trained).
pub fn posterior(
    model: &ModelWithProposal,
    params: &[f64],
    data: &Sequences<f64>,
    options: &PosteriorOptions,
) -> Result<Posterior, VsmcError> {
    let c = &model.config;
    let (r, dx, du, n) = (c.rank, c.dim_x, c.dim_u, c.n_units);
    let (k, tt, nb) = (options.n_particles, data.n_time, data.n_sequences);
    if k == 0 {
        return Err(VsmcError::Params("n_particles must be ≥ 1".into()));
    }
    if options.n_repeats == 0 {
        return Err(VsmcError::Params("n_repeats must be ≥ 1".into()));
    }
    if data.dim_x != dx || data.dim_u != du {
        return Err(VsmcError::Shape(format!(
            "the data have {} channels and {} inputs; the model expects {dx} and {du}",
            data.dim_x, data.dim_u
        )));
    }
    if nb == 0 || tt == 0 {
        return Err(VsmcError::Shape("no sequences, or zero-length ones".into()));
    }
    if params.len() != model.layout.len() {
        return Err(VsmcError::Params(format!(
            "{} parameters for a model (with its proposal) of {}",
            params.len(),
            model.layout.len()
        )));
    }
    let p: ParamView<'_> = c
        .view(&params[..model.n_model()])
        .map_err(|e| VsmcError::Params(e.to_string()))?;
    let noise = if model.proposal == ProposalKind::Optimal {
        TransitionNoise::Full(noise_cholesky(c.noise_z, p.r_z, r))
    } else {
        TransitionNoise::Diag(
            noise_std(c.noise_z, p.r_z, r)
                .into_iter()
                .map(|s| s.clamp(1e-4, 10.0))
                .collect(),
        )
    };
    // The optimal proposal's one-to-one readout from currents leaves out the input at t = 0
    // (as its likelihood does); the other proposals include it.
    let skip_input_at_0 = model.proposal == ProposalKind::Optimal
        && c.observation == Observation::OneToOne
        && c.readout_from == ReadoutFrom::Currents;
    let mut latents = vec![0.0; nb * r * tt];
    let mut rates = vec![0.0; nb * dx * tt];
    let inv_repeats = 1.0 / options.n_repeats as f64;
    for repeat in 0..options.n_repeats {
        let filter_seed = options
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(repeat as u64);
        // Chunks of sequences bound the particle store (T × K × R per sequence) for large
        // datasets; each chunk's filter has its own stream (the first chunk's is `filter_seed`).
        for start in (0..nb).step_by(CHUNK) {
            let end = (start + CHUNK).min(nb);
            let chunk = Sequences {
                n_sequences: end - start,
                dim_x: data.dim_x,
                dim_u: data.dim_u,
                n_time: tt,
                x: data.x[start * data.dim_x * tt..end * data.dim_x * tt].to_vec(),
                u: data.u[start * data.dim_u * tt..end * data.dim_u * tt].to_vec(),
            };
            let out = model.vsmc(
                params,
                &chunk,
                &VsmcOptions {
                    n_particles: k,
                    t_forward: 0,
                    precision: Precision::F64,
                },
                &SeededNoise {
                    seed: filter_seed.wrapping_add((start as u64) << 32),
                    resampling: Resampling::Systematic,
                },
                None,
            )?;
            let per_seq: Vec<(Vec<f64>, Vec<f64>)> = (start..end)
                .into_par_iter()
                .map(|b| {
                    let z = &out.particles[b - start];
                    let log_w = &out.log_w[b - start];
                    let (v, _) = trial::input_states(c, p.decay, data.u_of(b), tt);
                    let no_input = vec![0.0; du];
                    let v_obs = |t: usize| -> &[f64] {
                        if skip_input_at_0 && t == 0 {
                            &no_input
                        } else {
                            &v[t * du..(t + 1) * du]
                        }
                    };
                    let mut lat = vec![0.0; r * tt];
                    let mut rat = vec![0.0; dx * tt];
                    let mut w = vec![0.0; k];
                    let mut xm = vec![0.0; dx];
                    if !options.smooth {
                        for t in 0..tt {
                            normalised_weights(&log_w[t * k..(t + 1) * k], &mut w);
                            let vt = v_obs(t);
                            for kk in 0..k {
                                let zk = &z[(t * k + kk) * r..(t * k + kk + 1) * r];
                                for q in 0..r {
                                    lat[q * tt + t] += w[kk] * zk[q];
                                }
                                c.observation_mean(&p, zk, vt, &mut xm);
                                for j in 0..dx {
                                    rat[j * tt + t] += w[kk] * xm[j];
                                }
                            }
                        }
                        return (lat, rat);
                    }
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        filter_seed ^ (b as u64).wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x5300_7400,
                    );
                    // idx[j]: the particle of step t that trajectory j passes through.
                    let mut idx = vec![0usize; k];
                    normalised_weights(&log_w[(tt - 1) * k..tt * k], &mut w);
                    for slot in idx.iter_mut() {
                        *slot = draw(&w, rng.gen());
                    }
                    let mut mus = vec![0.0; k * r];
                    let mut unit_rates = vec![0.0; n];
                    let mut lw = vec![0.0; k];
                    let mut scratch = vec![0.0; r];
                    let mut next = vec![0.0; k * r];
                    for t in (0..tt).rev() {
                        if t + 1 < tt {
                            // The trajectories' states at t + 1, then their ancestors at t.
                            for j in 0..k {
                                let from = ((t + 1) * k + idx[j]) * r;
                                next[j * r..(j + 1) * r].copy_from_slice(&z[from..from + r]);
                            }
                            let vt = &v[t * du..(t + 1) * du];
                            for kk in 0..k {
                                let zk = &z[(t * k + kk) * r..(t * k + kk + 1) * r];
                                c.transition_mean(
                                    &p,
                                    zk,
                                    vt,
                                    &mut unit_rates,
                                    &mut mus[kk * r..(kk + 1) * r],
                                );
                            }
                            for j in 0..k {
                                let y = &next[j * r..(j + 1) * r];
                                for kk in 0..k {
                                    lw[kk] = log_w[t * k + kk]
                                        + noise.log_density(
                                            y,
                                            &mus[kk * r..(kk + 1) * r],
                                            &mut scratch,
                                        );
                                }
                                normalised_weights(&lw, &mut w);
                                idx[j] = draw(&w, rng.gen());
                            }
                        }
                        let vt = v_obs(t);
                        let inv_k = 1.0 / k as f64;
                        for &i in &idx {
                            let zi = &z[(t * k + i) * r..(t * k + i + 1) * r];
                            for q in 0..r {
                                lat[q * tt + t] += inv_k * zi[q];
                            }
                            c.observation_mean(&p, zi, vt, &mut xm);
                            for j in 0..dx {
                                rat[j * tt + t] += inv_k * xm[j];
                            }
                        }
                    }
                    (lat, rat)
                })
                .collect();
            for (i, (lat, rat)) in per_seq.iter().enumerate() {
                let b = start + i;
                for (o, v) in latents[b * r * tt..(b + 1) * r * tt].iter_mut().zip(lat) {
                    *o += inv_repeats * v;
                }
                for (o, v) in rates[b * dx * tt..(b + 1) * dx * tt].iter_mut().zip(rat) {
                    *o += inv_repeats * v;
                }
            }
        }
    }
    Ok(Posterior {
        latents,
        rates,
        n_sequences: nb,
        rank: r,
        dim_x: dx,
        n_time: tt,
    })
}
