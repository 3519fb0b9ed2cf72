//! VSMC with the optimal proposal for linear-Gaussian observations (SPEC §2.4,
//! `filtering_posterior_optimal_proposal`), its loss exactly as the reference's training loss
//! (SPEC §2.1: −mean over trials of the time-mean of logsumexp_k log w − log K) and the exact
//! gradient by a hand-written reverse pass.
//!
//! Structure: the parameter transforms that do not depend on time (noise Cholesky factors, the
//! Kalman gain, the proposal covariance, the effective loading, the input projection) are
//! computed once per call, with their matrix-level reverse pass, in `derived.rs`. The particle filter then runs per trial (rayon
//! over trials, draws per trial so results do not depend on the thread count), stores its
//! particles and ancestors, and a reverse sweep accumulates (a) gradients of the per-step
//! parameters (M, n, h, Wu, decay, observation bias) directly and (b) adjoints of the tape's
//! outputs, which `derived` carries back to the raw noise and loading parameters.
//!
//! From R = 16 on (the full-rank baselines) a step's K particles go through the proposal
//! together: its R × R products, the loading's and (for the full-rank transition with M = I)
//! the network's are products against matrices packed once per call (`packed.rs`).
//! Below, each particle's products are column sums, so the rank-R models' values stay
//! bit-identical to the scalar tape.

use rayon::prelude::*;

use super::derived::{derive, DerivedAdjoint, DerivedValues};
use super::draws::{ancestors, NoiseSource, TrialDraws};
use super::kernel::{self, Precision, Weights32};
use super::packed::PackedB;
use super::tape::TapeError;
use super::trial;
use crate::model::lowrank::{
    InitialState, Likelihood, ModelConfig, NoiseKind, ObsNonlinearity, Observation, ParamView,
    ReadoutFrom,
};
use crate::model::{gemm, Sequences};

/// Errors of a VSMC pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VsmcError {
    /// The model/proposal combination is not supported.
    #[error("optimal proposal: {0}")]
    Unsupported(String),
    /// Data shape does not match the model.
    #[error("data: {0}")]
    Shape(String),
    /// Parameters are invalid (non-finite, wrong length).
    #[error("{0}")]
    Params(String),
    /// A covariance became singular / not positive definite.
    #[error("optimal proposal: {0} (the noise parameters have diverged; lower the learning rate)")]
    Numeric(#[from] TapeError),
}

/// Options of a VSMC pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VsmcOptions {
    /// Particles K.
    pub n_particles: usize,
    /// Last `t_forward` steps are predicted from the transition without resampling (SPEC §2.7).
    pub t_forward: usize,
    /// Arithmetic of the transition kernels.
    pub precision: Precision,
}

/// Result of a VSMC pass over a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct VsmcOutput {
    /// loss = −mean_b Loss_b (what training minimises).
    pub loss: f64,
    /// Loss_b = mean_t (logsumexp_k log w_t − log K) per trial.
    pub log_likelihood: Vec<f64>,
    /// Per trial: log w, `[t][k]`.
    pub log_w: Vec<Vec<f64>>,
    /// Per trial: ancestors of each resampling step, `[step][k]`.
    pub ancestors: Vec<Vec<usize>>,
    /// Per trial: proposed particles `[t][k][r]` (before resampling).
    pub particles: Vec<Vec<f64>>,
    /// Mean of the Kalman interpolation α (the reference logs it).
    pub mean_alpha: f64,
}

/// A trial's record and, when asked, its direct gradient and derived adjoints.
type TrialResult = (TrialRecord, Option<(Vec<f64>, DerivedAdjoint)>);

fn check_supported(c: &ModelConfig) -> Result<(), VsmcError> {
    let bad = |m: &str| Err(VsmcError::Unsupported(m.to_string()));
    if c.likelihood != Likelihood::Gaussian {
        return bad(
            "needs a Gaussian likelihood (use the encoder or bootstrap proposal for Poisson data)",
        );
    }
    if c.noise_z != NoiseKind::Full || c.noise_z0 != NoiseKind::Full {
        return bad("needs noise_z = full and noise_z0 = full (as the reference)");
    }
    if c.noise_x == NoiseKind::Full {
        return bad("needs noise_x = diag or scalar");
    }
    if c.obs_link() != ObsNonlinearity::Identity {
        return bad("needs obs_nonlinearity = identity (a linear-Gaussian observation)");
    }
    match (c.observation, c.readout_from) {
        (Observation::Affine, ReadoutFrom::Z) | (Observation::OneToOne, ReadoutFrom::Currents) => {
            Ok(())
        }
        _ => bad("needs a linear readout: affine from z, or one_to_one from currents"),
    }
}

/// What one trial's forward pass keeps for the reverse pass.
struct TrialRecord {
    log_w: Vec<f64>, // [t][k]
    z: Vec<f64>,     // [t][k][r] proposed
    mu: Vec<f64>,    // [t][k][r] transition means (kept for the reverse pass)
    y: Vec<f64>,     // [t][k][r] Lz⁻¹(z − μ) of filtered steps (batched path only, else empty)
    anc: Vec<usize>, // [step][k]
    v: Vec<f64>,     // [t][du] input state at step t
    dv_da: Vec<f64>, // [t][du] ∂v_t/∂a (simulate_input)
    loss_b: f64,
}

/// The proposal's R × R matrices transposed (row j = column j), for column-wise products.
struct Transposed {
    oma: [Vec<f64>; 2],
    lq: [Vec<f64>; 2],
    lz: Vec<f64>,
    lz_inv: [Vec<f64>; 2],
}

impl Transposed {
    fn new(d: &DerivedValues, r: usize) -> Self {
        let t = |a: &[f64]| transpose(a, r, r);
        Self {
            oma: [t(&d.oma[0]), t(&d.oma[1])],
            lq: [t(&d.lq[0]), t(&d.lq[1])],
            lz: t(&d.lz),
            lz_inv: [t(&d.lz_inv[0]), t(&d.lz_inv[1])],
        }
    }
}

/// From this latent dimension on, a step's proposal products run as K × R × R GEMMs.
const BATCHED_MIN_RANK: usize = 16;

/// Whether a model's Gaussian observation term runs on R-dimensional sums ([`ObsStep`]):
/// below [`BATCHED_MIN_RANK`], with fewer latents than channels and at least 2R particles
/// (its per-step cost, O(dx·R²), then stays below the direct sums' O(K·dx·R)). Such fits
/// round differently from before that form (the `fit` stage's version 3).
pub fn reduces_observation(rank: usize, dim_x: usize, n_particles: usize) -> bool {
    rank < BATCHED_MIN_RANK && rank < dim_x && n_particles >= 2 * rank
}

/// The full-rank transition μ = a z + W φ(z; h) (M the frozen identity, no inputs, f64) of a
/// step's K particles as products against W packed once per call: Wᵀ forward, W in reverse.
struct PackedNet {
    w_t: PackedB,
    w: PackedB,
}

/// The batched path's fixed matrices, packed once per call ([`PackedB`]): the loading B and
/// the proposal's matrices, transposed where the forward pass multiplies by a transpose.
struct Packed {
    be: PackedB,
    oma_t: [PackedB; 2],
    lq_t: [PackedB; 2],
    lz_t: PackedB,
    lz_inv_t: [PackedB; 2],
    lz_inv: [PackedB; 2],
    oma: [PackedB; 2],
}

impl Packed {
    fn new(d: &DerivedValues, r: usize, dx: usize) -> Self {
        let sq = |m: &[f64], transposed: bool| {
            PackedB::new(m, if transposed { (1, r) } else { (r, 1) }, r, r)
        };
        Self {
            be: PackedB::new(&d.be, (dx, 1), r, dx),
            oma_t: [sq(&d.oma[0], true), sq(&d.oma[1], true)],
            lq_t: [sq(&d.lq[0], true), sq(&d.lq[1], true)],
            lz_t: sq(&d.lz, true),
            lz_inv_t: [sq(&d.lz_inv[0], true), sq(&d.lz_inv[1], true)],
            lz_inv: [sq(&d.lz_inv[0], false), sq(&d.lz_inv[1], false)],
            oma: [sq(&d.oma[0], false), sq(&d.oma[1], false)],
        }
    }
}

/// Everything the per-trial passes share.
struct Ctx<'a> {
    c: &'a ModelConfig,
    p: ParamView<'a>,
    d: DerivedValues,
    /// Mᵀ and n in the kernels' layout (R rows of N, `stride` apart).
    mt: Vec<f64>,
    nk: Vec<f64>,
    /// The same rounded to f32 (`precision: f32`).
    lo: Option<Weights32>,
    /// M is the full-rank baseline's frozen identity ([`kernel::frozen_identity`]).
    identity_m: bool,
    /// Transposes of the proposal's matrices (their columns as contiguous rows).
    tr: Transposed,
    /// R ≥ [`BATCHED_MIN_RANK`]: the proposal's R × R products of a step's K particles as GEMMs
    /// against the packed matrices (the full-rank baselines); `None` below: per-particle
    /// column sums (the rank-R models, whose values then stay bit-identical to the scalar tape).
    packed: Option<Packed>,
    /// With `packed`, for the full-rank baseline in f64: its transition as packed products
    /// (instead of the low-rank kernels' per-particle loops).
    net: Option<PackedNet>,
    /// G = B W Bᵀ (R × R, W = diag 1/σ_x²) when the observation term runs on R-dimensional
    /// sums ([`ObsStep`]: unbatched and R < dx); `None`: residuals of all dx channels.
    obs_g: Option<Vec<f64>>,
    stride: usize,
    k: usize,
    n_steps: usize,
    n_filter: usize,
}

impl Ctx<'_> {
    /// Input state v_t for every t (and ∂v_t/∂a) for trial `u` (du × T).
    fn inputs(&self, u: &[f64]) -> (Vec<f64>, Vec<f64>) {
        trial::input_states(self.c, self.p.decay, u, self.n_steps)
    }

    /// The transition's weights in the kernels' layout.
    fn weights(&self) -> kernel::Weights<'_> {
        kernel::Weights {
            mt: &self.mt,
            n: &self.nk,
            h: self.p.h,
            stride: self.stride,
            decay: self.p.decay,
            rank: self.c.rank,
            nonlinearity: self.c.nonlinearity,
            lo: self.lo.as_ref(),
            identity_m: self.identity_m,
        }
    }

    /// The previous states of step t's particles (K × R into `zp`).
    #[inline]
    fn gather_parents(&self, z: &[f64], anc: &[usize], t: usize, zp: &mut [f64]) {
        trial::gather_parents(z, anc, t, self.n_filter, self.c.rank, zp);
    }

    /// Input current e = Wu v into `buf`, or `None` without inputs.
    fn input_current<'b>(&self, v: &[f64], buf: &'b mut [f64]) -> Option<&'b [f64]> {
        trial::input_current(self.p.wu, self.c.dim_u, v, buf)
    }

    /// The observation's offset at step t: vX = Wu v_t (currents readout, t ≥ 1) into `vx`
    /// and c = x_t − b − vX into `c` (the observation mean b + vX + Bᵀz is x_t − c + Bᵀz).
    #[inline(always)]
    fn obs_offset(
        &self,
        x: &[f64],
        vt: &[f64],
        t: usize,
        currents: bool,
        vx: &mut [f64],
        c: &mut [f64],
    ) {
        let (du, tt) = (self.c.dim_u, self.n_steps);
        for j in 0..vx.len() {
            let mut s = 0.0;
            if currents && t > 0 {
                for l in 0..du {
                    s += self.p.wu[j * du + l] * vt[l];
                }
            }
            vx[j] = s;
            c[j] = x[j * tt + t] - self.p.bias[j] - s;
        }
    }

    /// Forward pass of one trial.
    fn forward(&self, x: &[f64], u: &[f64], draws: &TrialDraws) -> TrialRecord {
        #[cfg(target_arch = "x86_64")]
        if kernel::fma_available() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { self.forward_avx2(x, u, draws) };
        }
        self.forward_impl::<0>(x, u, draws)
    }

    /// [`Self::forward_impl`] compiled for AVX2 (wider vectors for the observation loops;
    /// no contraction to FMA, so results are the same bits as the portable build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, x: &[f64], u: &[f64], draws: &TrialDraws) -> TrialRecord {
        match self.c.rank {
            1 => self.forward_impl::<1>(x, u, draws),
            2 => self.forward_impl::<2>(x, u, draws),
            3 => self.forward_impl::<3>(x, u, draws),
            _ => self.forward_impl::<0>(x, u, draws),
        }
    }

    /// The forward pass; `R` > 0 is the rank known at compile time (the per-particle loops
    /// over the latents unrolled; the same operations in the same order), 0 any rank.
    #[inline(always)]
    fn forward_impl<const R: usize>(
        &self,
        x: &[f64],
        u: &[f64],
        draws: &TrialDraws,
    ) -> TrialRecord {
        debug_assert!(R == 0 || R == self.c.rank);
        let (r, dx, du, k, tt) = (
            if R > 0 { R } else { self.c.rank },
            self.c.dim_x,
            self.c.dim_u,
            self.k,
            self.n_steps,
        );
        let n = self.c.n_units;
        let d = &self.d;
        let p = &self.p;
        let currents = self.c.readout_from == ReadoutFrom::Currents;
        let (v, dv_da) = self.inputs(u);
        let mut z = vec![0.0; tt * k * r];
        let mut log_w = vec![0.0; tt * k];
        let mut anc = vec![0usize; self.n_filter * k];
        let mut mu = vec![0.0; k * r];
        let mut mus = vec![0.0; tt * k * r];
        let mut zp = vec![0.0; k * r];
        let mut ext = vec![0.0; n];
        let mut mu0 = vec![0.0; r];
        let w = self.weights();
        let mut cvec = vec![0.0; dx];
        let mut res = vec![0.0; if self.obs_g.is_some() { 0 } else { k * dx }];
        let mut obs = ObsStep::new(r, dx);
        let mut y = vec![0.0; r];
        let tr = &self.tr;
        let mut kc = vec![0.0; r];
        let mut vx = vec![0.0; dx];
        let mut diff = vec![0.0; r];
        let mut resample_scratch = vec![0.0; 2 * k];
        let batched = self.packed.is_some();
        let mut phi = vec![0.0; if self.net.is_some() { k * n } else { 0 }];
        let mut y_all = vec![0.0; if batched { tt * k * r } else { 0 }];
        let mut diffs = vec![0.0; if batched { k * r } else { 0 }];
        let mut loss_b = 0.0;
        for t in 0..tt {
            let set = if t == 0 { 0 } else { 1 };
            let vt = &v[t * du..(t + 1) * du];
            // Transition means.
            if t == 0 {
                mu0.iter_mut().for_each(|m| *m = 0.0);
                if let Some(s) = p.initial_state {
                    mu0.copy_from_slice(s);
                }
                if let Some(proj) = &d.proj {
                    // v_0 = u_0 (not simulated): μ_0 += P (Wu v_0)
                    for i in 0..n {
                        let mut wv = 0.0;
                        for l in 0..du {
                            wv += p.wu[i * du + l] * vt[l];
                        }
                        for q in 0..r {
                            mu0[q] += proj[q * n + i] * wv;
                        }
                    }
                }
                for kk in 0..k {
                    mu[kk * r..(kk + 1) * r].copy_from_slice(&mu0);
                }
            } else {
                let vprev = &v[(t - 1) * du..t * du];
                self.gather_parents(&z, &anc, t, &mut zp);
                if let Some(net) = &self.net {
                    // Φ = φ(Z_prev; h), MU = a Z_prev + Φ Wᵀ
                    self.network_phi(&zp, &mut phi, None);
                    for (m, zq) in mu.iter_mut().zip(&zp) {
                        *m = p.decay * zq;
                    }
                    net.w_t.mul(k, &phi, n, true, &mut mu, r);
                } else {
                    let e = self.input_current(vprev, &mut ext);
                    kernel::means(&w, &zp, e, &mut mu);
                }
            }
            mus[t * k * r..(t + 1) * k * r].copy_from_slice(&mu);
            // v_to_X (currents readout, t ≥ 1 only).
            self.obs_offset(x, vt, t, currents, &mut vx, &mut cvec);
            let filtering = t < self.n_filter;
            if filtering {
                for q in 0..r {
                    kc[q] = dot(&d.gain[set][q * dx..(q + 1) * dx], &cvec);
                }
            }
            // Proposals: z = OMA μ + K c + Lq ε (filtering) or μ + Lz ε, as sums of the
            // matrices' columns (rows of the transposes), which vectorise for large R.
            let lt = if filtering { &tr.lq[set] } else { &tr.lz };
            if let Some(pk) = &self.packed {
                // Z = 1 (K c)ᵀ + MU OMAᵀ + E Lqᵀ, or MU + E Lzᵀ.
                let zt = &mut z[t * k * r..(t + 1) * k * r];
                let et = &draws.eps[t * k * r..(t + 1) * k * r];
                if filtering {
                    for row in zt.chunks_exact_mut(r) {
                        row.copy_from_slice(&kc);
                    }
                    pk.oma_t[set].mul(k, &mu, r, true, zt, r);
                    pk.lq_t[set].mul(k, et, r, true, zt, r);
                } else {
                    zt.copy_from_slice(&mu);
                    pk.lz_t.mul(k, et, r, true, zt, r);
                }
            }
            // (per particle when not batched; the batched path has filled Z above)
            for kk in 0..if batched { 0 } else { k } {
                let eps = &draws.eps[(t * k + kk) * r..(t * k + kk + 1) * r];
                let mu_k = &mu[kk * r..(kk + 1) * r];
                let zk = &mut z[(t * k + kk) * r..(t * k + kk + 1) * r];
                if filtering {
                    zk.copy_from_slice(&kc);
                    for (j, &m) in mu_k.iter().enumerate() {
                        row_times_acc(zk, &tr.oma[set][j * r..(j + 1) * r], m);
                    }
                } else {
                    zk.copy_from_slice(mu_k);
                }
                for (j, &e) in eps.iter().enumerate() {
                    row_times_acc(&mut zk[j..], &lt[j * r + j..(j + 1) * r], e);
                }
            }
            let zt = &z[t * k * r..(t + 1) * k * r];
            if self.obs_g.is_some() {
                obs.centre(zt, None, r);
                obs.prepare(&d.be, &d.inv_var, &cvec, r);
            } else if let Some(pk) = &self.packed {
                // Residuals c − Bᵀz of the K particles: one K × R by R × dx product.
                pk.be.mul(k, zt, r, false, &mut res, dx);
            } else {
                let rdx = (dx as isize, 1);
                gemm(
                    k,
                    r,
                    dx,
                    zt,
                    (r as isize, 1),
                    &d.be,
                    rdx,
                    0.0,
                    &mut res,
                    rdx,
                );
            }
            for row in res.chunks_exact_mut(dx) {
                for (rj, cj) in row.iter_mut().zip(&cvec) {
                    *rj = cj - *rj;
                }
            }
            if let (Some(pk), true) = (&self.packed, filtering) {
                // Y = (Z − MU) Lz⁻ᵀ, kept for the reverse pass.
                for ((dq, zq), mq) in diffs.iter_mut().zip(zt).zip(&mu) {
                    *dq = zq - mq;
                }
                let yt = &mut y_all[t * k * r..(t + 1) * k * r];
                pk.lz_inv_t[set].mul(k, &diffs, r, false, yt, r);
            }
            for kk in 0..k {
                let eps = &draws.eps[(t * k + kk) * r..(t * k + kk + 1) * r];
                let mu_k = &mu[kk * r..(kk + 1) * r];
                let zk = &z[(t * k + kk) * r..(t * k + kk + 1) * r];
                // Observation log-likelihood.
                let sq = match &self.obs_g {
                    Some(g) => obs.sq_norm(g, zk, &mut diff, r),
                    None => weighted_sq_norm(&res[kk * dx..(kk + 1) * dx], &d.inv_var),
                };
                let mut ll = -0.5 * sq + d.obs_const;
                if filtering {
                    let yk = if batched {
                        &y_all[(t * k + kk) * r..(t * k + kk + 1) * r]
                    } else {
                        for i in 0..r {
                            diff[i] = zk[i] - mu_k[i];
                        }
                        // y = Lz⁻¹ (z − μ), by columns.
                        y.iter_mut().for_each(|v| *v = 0.0);
                        for (j, &dj) in diff.iter().enumerate() {
                            let col = &tr.lz_inv[set][j * r + j..(j + 1) * r];
                            row_times_acc(&mut y[j..], col, dj);
                        }
                        &y
                    };
                    let yy: f64 = yk.iter().map(|v| v * v).sum();
                    let ee: f64 = eps.iter().map(|e| e * e).sum();
                    ll += (-0.5 * yy + d.const_z[set]) - (-0.5 * ee + d.const_q[set]);
                }
                log_w[t * k + kk] = ll;
            }
            let lw = &log_w[t * k..(t + 1) * k];
            loss_b += logsumexp(lw) - (k as f64).ln();
            if filtering {
                ancestors(
                    lw,
                    &draws.resample,
                    t,
                    &mut resample_scratch,
                    &mut anc[t * k..(t + 1) * k],
                );
            }
        }
        TrialRecord {
            log_w,
            z,
            mu: mus,
            y: y_all,
            anc,
            v,
            dv_da,
            loss_b: loss_b / tt as f64,
        }
    }

    /// Φ = φ(Z; h) of K particles (the full-rank transition, N = R), and with `derivs` its
    /// partial derivatives ∂φ/∂x and ∂φ/∂h, all K × N.
    #[inline(always)]
    fn network_phi(&self, z: &[f64], phi: &mut [f64], derivs: Option<(&mut [f64], &mut [f64])>) {
        let (nl, h, n) = (self.c.nonlinearity, self.p.h, self.c.n_units);
        match derivs {
            None => {
                for (row, zr) in phi.chunks_exact_mut(n).zip(z.chunks_exact(n)) {
                    for ((f, &x), &hi) in row.iter_mut().zip(zr).zip(h) {
                        *f = nl.eval(x, hi).0;
                    }
                }
            }
            Some((dx, dh)) => {
                for (j, f) in phi.iter_mut().enumerate() {
                    let (v, vx, vh) = nl.eval(z[j], h[j % n]);
                    (*f, dx[j], dh[j]) = (v, vx, vh);
                }
            }
        }
    }

    /// Particle kk's dμ (in `dmu_all`) at step t: into μ_0's adjoint at t = 0, else the decay
    /// term of μ = a zprev + n φ(M zprev + Wu vprev; h) into `da` and `dzprev` (the network
    /// term for all particles at once afterwards).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn parent_adjoint(
        &self,
        t: usize,
        kk: usize,
        dmu_all: &[f64],
        zp: &[f64],
        da: &mut f64,
        dzprev: &mut [f64],
        dmu0: &mut [f64],
    ) {
        let r = self.c.rank;
        let dmu = &dmu_all[kk * r..(kk + 1) * r];
        if t == 0 {
            for (m0, m) in dmu0.iter_mut().zip(dmu) {
                *m0 += m;
            }
        } else {
            let zprev = &zp[kk * r..(kk + 1) * r];
            let dzp = &mut dzprev[kk * r..(kk + 1) * r];
            for q in 0..r {
                *da += dmu[q] * zprev[q];
                dzp[q] += self.p.decay * dmu[q];
            }
        }
    }

    /// Reverse pass of one trial: d(scale · Loss_b)/dθ into `grad` (direct blocks) and `adj`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &[f64],
        rec: &TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        offsets: &Offsets,
        grad: &mut [f64],
        adj: &mut DerivedAdjoint,
    ) {
        #[cfg(target_arch = "x86_64")]
        if kernel::fma_available() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { self.backward_avx2(x, rec, draws, scale, offsets, grad, adj) };
            return;
        }
        self.backward_impl::<0>(x, rec, draws, scale, offsets, grad, adj);
    }

    /// [`Self::backward_impl`] compiled for AVX2 (as [`Self::forward_avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_avx2(
        &self,
        x: &[f64],
        rec: &TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        offsets: &Offsets,
        grad: &mut [f64],
        adj: &mut DerivedAdjoint,
    ) {
        match self.c.rank {
            1 => self.backward_impl::<1>(x, rec, draws, scale, offsets, grad, adj),
            2 => self.backward_impl::<2>(x, rec, draws, scale, offsets, grad, adj),
            3 => self.backward_impl::<3>(x, rec, draws, scale, offsets, grad, adj),
            _ => self.backward_impl::<0>(x, rec, draws, scale, offsets, grad, adj),
        }
    }

    /// The reverse pass; `R` as in [`Self::forward_impl`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_impl<const R: usize>(
        &self,
        x: &[f64],
        rec: &TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        offsets: &Offsets,
        grad: &mut [f64],
        adj: &mut DerivedAdjoint,
    ) {
        debug_assert!(R == 0 || R == self.c.rank);
        let (r, dx, du, k, tt, n) = (
            if R > 0 { R } else { self.c.rank },
            self.c.dim_x,
            self.c.dim_u,
            self.k,
            self.n_steps,
            self.c.n_units,
        );
        let d = &self.d;
        let p = &self.p;
        let wts = self.weights();
        let currents = self.c.readout_from == ReadoutFrom::Currents;
        let mut dz_next = vec![0.0; k * r]; // adjoint of z_t (proposed) from step t+1
        let mut dzprev = vec![0.0; k * r];
        let mut dv = vec![0.0; tt * du];
        let mut dmu_all = vec![0.0; k * r];
        let mut vx = vec![0.0; dx];
        let mut dvx = vec![0.0; dx];
        let mut cvec = vec![0.0; dx];
        let mut dcvec = vec![0.0; dx];
        let mut mu = vec![0.0; k * r];
        let mut zp = vec![0.0; k * r];
        let mut ext = vec![0.0; n];
        let mut gext = vec![0.0; if du > 0 { n } else { 0 }];
        let st = self.stride;
        let mut gmt = vec![0.0; (r - 1) * st + n];
        let mut gn = vec![0.0; (r - 1) * st + n];
        let mut work = vec![0.0; k * st];
        let mut work32 = Vec::new();
        let mut gh = vec![0.0; n];
        let mut diff = vec![0.0; r];
        let mut y = vec![0.0; r];
        let mut dzk = vec![0.0; r];
        let mut dkc = vec![0.0; r];
        let mut dmu0 = vec![0.0; r];
        let mut da = 0.0;
        // The observation term ℓ = −½ Σ_j res_j²/σ_j² − Σ_j ln σ_j + const of every particle
        // of the trial at once. Its adjoint dm = g · res/σ² does not depend on the reverse
        // sweep, so the adjoint of B and each particle's dz through B are two matrix products
        // over all T·K particles (GEMMs) instead of T·K rank-1 updates.
        let tk = tt * k;
        let mut w_all = vec![0.0; tk];
        let reduced = self.obs_g.is_some();
        let mut dm_all = vec![0.0; if reduced { 0 } else { tk * dx }]; // [t][k][j]: Bᵀz, then dm
        let mut dz_obs = vec![0.0; tk * r];
        let mut dvx_all = vec![0.0; tt * dx];
        // Per particle of the reverse sweep: dL/dz (final) and dL/dy, for the adjoints of the
        // proposal's matrices, which are outer products summed over the trial (GEMMs below).
        let mut dzk_all = vec![0.0; tk * r];
        let mut dy_all = vec![0.0; tk * r];
        let mut u = vec![0.0; r];
        let mut ubatch = vec![0.0; if self.packed.is_some() { k * r } else { 0 }];
        let kn = if self.net.is_some() { k * n } else { 0 };
        let (mut phi, mut dphi) = (vec![0.0; kn], vec![0.0; kn]);
        let (mut dphi_dx, mut dphi_dh) = (vec![0.0; kn], vec![0.0; kn]);
        let tr = &self.tr;
        let (rr, rdx) = ((r as isize, 1), (dx as isize, 1));
        if let Some(gm) = &self.obs_g {
            // The same adjoints from R-dimensional sums ([`ObsStep`]), centred on the weighted
            // mean of the step's particles. With d_k = z_k − z₀, res_k = r₀ − Bᵀd_k and the
            // step's sums S = Σ g_k, D1 = Σ g_k d_k, D2 = Σ g_k d_k d_kᵀ:
            // Σ_k g_k res_kj² = S r₀ⱼ² − 2 r₀ⱼ bⱼ·D1 + bⱼᵀ D2 bⱼ,
            // Σ_k dm_kj = wⱼ (S r₀ⱼ − bⱼ·D1),
            // Σ_k z_kq dm_kj = z₀q Σ_k dm_kj + wⱼ (r₀ⱼ D1_q − (D2 bⱼ)_q),
            // dz_obs_k = B dm_k = g_k (h₀ − G d_k).
            let mut obs = ObsStep::new(r, dx);
            let mut p = vec![0.0; k];
            let (mut d1, mut d2) = (vec![0.0; r], vec![0.0; r * r]);
            let (mut dk, mut e) = (vec![0.0; r], vec![0.0; r]);
            for t in 0..tt {
                let lw = &rec.log_w[t * k..(t + 1) * k];
                let lse = logsumexp(lw);
                let vt = &rec.v[t * du..(t + 1) * du];
                self.obs_offset(x, vt, t, currents, &mut vx, &mut cvec);
                for (pk, &l) in p.iter_mut().zip(lw) {
                    *pk = (l - lse).exp();
                }
                let zt = &rec.z[t * k * r..(t + 1) * k * r];
                obs.centre(zt, Some(&p), r);
                obs.prepare(&d.be, &d.inv_var, &cvec, r);
                let mut s = 0.0;
                d1.iter_mut().for_each(|v| *v = 0.0);
                d2.iter_mut().for_each(|v| *v = 0.0);
                for (kk, zk) in zt.chunks_exact(r).enumerate() {
                    let g = scale * p[kk] / tt as f64;
                    w_all[t * k + kk] = g;
                    s += g;
                    for q in 0..r {
                        dk[q] = zk[q] - obs.z0[q];
                    }
                    let dzo = &mut dz_obs[(t * k + kk) * r..(t * k + kk + 1) * r];
                    for q in 0..r {
                        let gd = g * dk[q];
                        d1[q] += gd;
                        let mut gdk = 0.0;
                        for pp in 0..r {
                            d2[q * r + pp] += gd * dk[pp];
                            gdk += gm[q * r + pp] * dk[pp];
                        }
                        dzo[q] = g * (obs.h0[q] - gdk);
                    }
                }
                let dvx_t = &mut dvx_all[t * dx..(t + 1) * dx];
                for j in 0..dx {
                    let (r0, wj) = (obs.r0[j], d.inv_var[j]);
                    let mut bd1 = 0.0;
                    for q in 0..r {
                        let mut eq = 0.0;
                        for pp in 0..r {
                            eq += d2[q * r + pp] * d.be[pp * dx + j];
                        }
                        e[q] = eq;
                        bd1 += d.be[q * dx + j] * d1[q];
                    }
                    let bd2b: f64 = (0..r).map(|q| d.be[q * dx + j] * e[q]).sum();
                    let sq = s * r0 * r0 - 2.0 * r0 * bd1 + bd2b;
                    adj.std_x[j] += d.inv_sd[j] * (sq * wj - s);
                    let m = wj * (s * r0 - bd1);
                    dvx_t[j] += m;
                    for q in 0..r {
                        adj.be[q * dx + j] += obs.z0[q] * m + wj * (r0 * d1[q] - e[q]);
                    }
                }
            }
        } else {
            gemm(tk, r, dx, &rec.z, rr, &d.be, rdx, 0.0, &mut dm_all, rdx);
            for t in 0..tt {
                // g_t^k = scale · softmax_k(log w_t)/T  (d scale·Loss_b / d log w)
                let lw = &rec.log_w[t * k..(t + 1) * k];
                let lse = logsumexp(lw);
                let vt = &rec.v[t * du..(t + 1) * du];
                self.obs_offset(x, vt, t, currents, &mut vx, &mut cvec);
                let dvx_t = &mut dvx_all[t * dx..(t + 1) * dx];
                for kk in 0..k {
                    let g = scale * (lw[kk] - lse).exp() / tt as f64;
                    w_all[t * k + kk] = g;
                    let dm = &mut dm_all[(t * k + kk) * dx..(t * k + kk + 1) * dx];
                    for j in 0..dx {
                        let rj = cvec[j] - dm[j];
                        dm[j] = g * rj * d.inv_var[j];
                        adj.std_x[j] += g * d.inv_sd[j] * (rj * rj * d.inv_var[j] - 1.0);
                        dvx_t[j] += dm[j];
                    }
                }
            }
            // adj.be += Zᵀ DM (R × dx) and dz_obs = DM Bᵀ ([t][k][r]; Bᵀ read through B's strides).
            let (cr, cdx) = ((1, r as isize), (1, dx as isize));
            gemm(r, tk, dx, &rec.z, cr, &dm_all, rdx, 1.0, &mut adj.be, rdx);
            gemm(tk, dx, r, &dm_all, rdx, &d.be, cdx, 0.0, &mut dz_obs, rr);
        }
        for t in (0..tt).rev() {
            let set = if t == 0 { 0 } else { 1 };
            let filtering = t < self.n_filter;
            let vt = &rec.v[t * du..(t + 1) * du];
            let w = &w_all[t * k..(t + 1) * k];
            self.obs_offset(x, vt, t, currents, &mut vx, &mut cvec);
            dcvec.iter_mut().for_each(|v| *v = 0.0);
            dvx.copy_from_slice(&dvx_all[t * dx..(t + 1) * dx]);
            dzprev.iter_mut().for_each(|v| *v = 0.0);
            // μ of step t (from the forward pass) and the particles it came from.
            mu.copy_from_slice(&rec.mu[t * k * r..(t + 1) * k * r]);
            if t > 0 {
                self.gather_parents(&rec.z, &rec.anc, t, &mut zp);
            }
            dmu0.iter_mut().for_each(|m| *m = 0.0);
            dkc.iter_mut().for_each(|m| *m = 0.0);
            let packed = self.packed.as_ref().filter(|_| filtering);
            let batched = packed.is_some();
            if let Some(pk) = packed {
                // The filtering step's reverse for all K particles at once (the loop below
                // per particle): DZ = dz_next + dz_obs, DY = −g Y, U = DY Lz⁻¹, DZ += U,
                // DMU = DZ OMA − U; K c's adjoint is DZ's column sum.
                let blk = t * k * r..(t + 1) * k * r;
                let dzt = &mut dzk_all[blk.clone()];
                for ((d, a), b) in dzt.iter_mut().zip(&dz_next).zip(&dz_obs[blk.clone()]) {
                    *d = a + b;
                }
                let dyt = &mut dy_all[blk.clone()];
                for ((dy, yv), kk) in dyt
                    .iter_mut()
                    .zip(&rec.y[blk])
                    .zip((0..k * r).map(|i| i / r))
                {
                    *dy = -w[kk] * yv;
                }
                pk.lz_inv[set].mul(k, dyt, r, false, &mut ubatch, r);
                for (d, u) in dzt.iter_mut().zip(&ubatch) {
                    *d += u;
                }
                for (m, u) in dmu_all.iter_mut().zip(&ubatch) {
                    *m = -u;
                }
                pk.oma[set].mul(k, dzt, r, true, &mut dmu_all, r);
                for row in dzt.chunks_exact(r) {
                    for (c, v) in dkc.iter_mut().zip(row) {
                        *c += v;
                    }
                }
                let gsum: f64 = w.iter().sum();
                adj.logdet_z[set] -= gsum;
                adj.logdet_q[set] += gsum;
            }
            for kk in 0..k {
                let g = w[kk];
                if batched {
                    self.parent_adjoint(t, kk, &dmu_all, &zp, &mut da, &mut dzprev, &mut dmu0);
                    continue;
                }
                let zk = &rec.z[(t * k + kk) * r..(t * k + kk + 1) * r];
                let mu_k = &mu[kk * r..(kk + 1) * r];
                // dz from step t+1 and from the observation term (computed above).
                let dzo = &dz_obs[(t * k + kk) * r..(t * k + kk + 1) * r];
                for (q, d) in dzk.iter_mut().enumerate() {
                    *d = dz_next[kk * r + q] + dzo[q];
                }
                let dmu = &mut dmu_all[kk * r..(kk + 1) * r];
                dmu.iter_mut().for_each(|v| *v = 0.0);
                if filtering {
                    // log p(z | μ) = −½‖Lz⁻¹(z − μ)‖² − logdet_z, y = Lz⁻¹(z − μ) by columns.
                    for i in 0..r {
                        diff[i] = zk[i] - mu_k[i];
                    }
                    y.iter_mut().for_each(|v| *v = 0.0);
                    for (j, &dj) in diff.iter().enumerate() {
                        row_times_acc(&mut y[j..], &tr.lz_inv[set][j * r + j..(j + 1) * r], dj);
                    }
                    // dL/dy = −g y. Its outer product with z − μ is Lz⁻¹'s adjoint (summed over
                    // the trial after the sweep); Lz⁻ᵀ dL/dy goes to z and, negated, to μ.
                    let dyk = &mut dy_all[(t * k + kk) * r..(t * k + kk + 1) * r];
                    u.iter_mut().for_each(|v| *v = 0.0);
                    for i in 0..r {
                        let dy = -g * y[i];
                        dyk[i] = dy;
                        row_times_acc(&mut u[..=i], &d.lz_inv[set][i * r..i * r + i + 1], dy);
                    }
                    for i in 0..r {
                        dzk[i] += u[i];
                        dmu[i] -= u[i];
                    }
                    adj.logdet_z[set] -= g;
                    adj.logdet_q[set] += g;
                    // z = OMA μ + K c + Lq ε: the adjoints of OMA and Lq are summed over the
                    // trial after the sweep.
                    for i in 0..r {
                        row_times_acc(dmu, &d.oma[set][i * r..(i + 1) * r], dzk[i]);
                        // K c is shared by the particles: its adjoint is summed first.
                        dkc[i] += dzk[i];
                    }
                } else {
                    // z = μ + Lz ε (Lz's adjoint after the sweep)
                    for i in 0..r {
                        dmu[i] += dzk[i];
                    }
                }
                dzk_all[(t * k + kk) * r..(t * k + kk + 1) * r].copy_from_slice(&dzk);
                self.parent_adjoint(t, kk, &dmu_all, &zp, &mut da, &mut dzprev, &mut dmu0);
            }
            if filtering {
                for i in 0..r {
                    let gain = &d.gain[set][i * dx..(i + 1) * dx];
                    let again = &mut adj.gain[set][i * dx..(i + 1) * dx];
                    let di = dkc[i];
                    for j in 0..dx {
                        again[j] += di * cvec[j];
                        dcvec[j] += gain[j] * di;
                    }
                }
            }
            if let (Some(net), true) = (&self.net, t > 0) {
                // dΦ = DMU W; dX = dΦ ∘ ∂φ/∂x into Z_prev (M = I), dΦ ∘ ∂φ/∂h into h;
                // W's adjoint += DMUᵀ Φ (rows of `gn`, `st` apart).
                self.network_phi(&zp, &mut phi, Some((&mut dphi_dx, &mut dphi_dh)));
                net.w.mul(k, &dmu_all, r, false, &mut dphi, n);
                for kk in 0..k {
                    for i in 0..n {
                        let (j, dp) = (kk * n + i, dphi[kk * n + i]);
                        gh[i] += dp * dphi_dh[j];
                        dzprev[kk * r + i] += dp * dphi_dx[j];
                    }
                }
                gemm(
                    r,
                    k,
                    n,
                    &dmu_all,
                    (1, r as isize),
                    &phi,
                    (n as isize, 1),
                    1.0,
                    &mut gn,
                    (st as isize, 1),
                );
            } else if t > 0 {
                let vprev = &rec.v[(t - 1) * du..t * du];
                let e = self.input_current(vprev, &mut ext);
                gext.iter_mut().for_each(|v| *v = 0.0);
                let mut g = kernel::Grads {
                    mt: &mut gmt,
                    n: &mut gn,
                    h: &mut gh,
                    ext: (du > 0).then_some(gext.as_mut_slice()),
                    work: &mut work,
                    work32: &mut work32,
                };
                kernel::means_backward(&wts, &zp, e, &dmu_all, &mut g, &mut dzprev);
                // e = Wu v_{t−1}
                for i in 0..if du > 0 { n } else { 0 } {
                    let ge = gext[i];
                    for l in 0..du {
                        grad[offsets.wu + i * du + l] += ge * vprev[l];
                        dv[(t - 1) * du + l] += p.wu[i * du + l] * ge;
                    }
                }
            }
            // c = x − b − vX (the observation mean b + vX + Bᵀz is x − c + Bᵀz)
            if filtering {
                for j in 0..dx {
                    dvx[j] -= dcvec[j];
                }
            }
            for j in 0..dx {
                grad[offsets.bias + j] += dvx[j];
            }
            if currents && t > 0 {
                for j in 0..dx {
                    for l in 0..du {
                        grad[offsets.wu + j * du + l] += dvx[j] * vt[l];
                        dv[t * du + l] += p.wu[j * du + l] * dvx[j];
                    }
                }
            }
            if t == 0 {
                if let Some(off) = offsets.initial_state {
                    for q in 0..r {
                        grad[off + q] += dmu0[q];
                    }
                }
                if let Some(proj) = &d.proj {
                    for i in 0..n {
                        let mut wv = 0.0;
                        for l in 0..du {
                            wv += p.wu[i * du + l] * vt[l];
                        }
                        let mut dw = 0.0;
                        for q in 0..r {
                            adj.proj[q * n + i] += dmu0[q] * wv;
                            dw += proj[q * n + i] * dmu0[q];
                        }
                        for l in 0..du {
                            grad[offsets.wu + i * du + l] += dw * vt[l];
                        }
                    }
                }
            } else {
                // Route dzprev back to z_{t−1} through the ancestors.
                trial::scatter_to_parents(&dzprev, &rec.anc, t, self.n_filter, r, &mut dz_next);
            }
        }
        // The proposal matrices' adjoints: outer products over the particles of each segment
        // of the trial (t = 0 with set 0, filtered steps t ≥ 1 with set 1, the unfiltered
        // t_forward steps with Lz).
        let diff_all: Vec<f64> = rec.z.iter().zip(&rec.mu).map(|(a, b)| a - b).collect();
        let mut tmp = vec![0.0; r * r];
        let nf = self.n_filter;
        for (set, steps) in [(0, 0..nf.min(1)), (1, 1.min(nf)..nf)] {
            let rows = steps.start * k * r..steps.end * k * r;
            add_at_b(
                &mut adj.lz_inv[set],
                &dy_all[rows.clone()],
                &diff_all[rows.clone()],
                r,
                true,
                &mut tmp,
            );
            add_at_b(
                &mut adj.lq[set],
                &dzk_all[rows.clone()],
                &draws.eps[rows.clone()],
                r,
                true,
                &mut tmp,
            );
            add_at_b(
                &mut adj.oma[set],
                &dzk_all[rows.clone()],
                &rec.mu[rows],
                r,
                false,
                &mut tmp,
            );
        }
        let rows = nf * k * r..tt * k * r;
        add_at_b(
            &mut adj.lz,
            &dzk_all[rows.clone()],
            &draws.eps[rows],
            r,
            true,
            &mut tmp,
        );
        if self.c.simulate_input {
            for i in 0..tt * du {
                da += dv[i] * rec.dv_da[i];
            }
        }
        // a = exp(−exp(θ)) ⇒ da/dθ = −exp(θ) a
        grad[offsets.decay] += da * (-p.decay_param.exp() * p.decay);
        trial::add_kernel_grads(
            &gmt,
            &gn,
            &gh,
            st,
            (n, r),
            (offsets.m, offsets.n, offsets.h),
            grad,
        );
    }
}

/// adj += Aᵀ B for A, B with rows of R (row-major, as many rows each): all R × R entries, or
/// only the lower triangle (j ≤ i) when `lower`. `tmp` (R × R) is scratch.
fn add_at_b(adj: &mut [f64], a: &[f64], b: &[f64], r: usize, lower: bool, tmp: &mut [f64]) {
    let m = a.len() / r;
    if m == 0 {
        return;
    }
    let (rows, cols) = ((r as isize, 1), (1, r as isize));
    gemm(r, m, r, a, cols, b, rows, 0.0, tmp, rows);
    for i in 0..r {
        let cols = if lower { i + 1 } else { r };
        for j in 0..cols {
            adj[i * r + j] += tmp[i * r + j];
        }
    }
}

/// Offsets of the directly-accumulated blocks in the flat parameter vector.
struct Offsets {
    m: usize,
    n: usize,
    h: usize,
    wu: usize,
    decay: usize,
    bias: usize,
    initial_state: Option<usize>,
}

/// Σ_j a_j w_j b_j, in order.
fn weighted_dot(a: &[f64], w: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(w).zip(b).map(|((a, w), b)| a * w * b).sum()
}

/// G = B W Bᵀ (R × R, row-major) for the loading B (R rows of dx) and the weights W = diag `w`.
fn obs_gram(be: &[f64], w: &[f64], r: usize) -> Vec<f64> {
    let dx = w.len();
    let mut g = vec![0.0; r * r];
    for q in 0..r {
        for p in 0..r {
            g[q * r + p] = weighted_dot(&be[q * dx..(q + 1) * dx], w, &be[p * dx..(p + 1) * dx]);
        }
    }
    g
}

/// The Gaussian observation term of one step's particles from R-dimensional quantities (the
/// rank-R models, R < dx). For a centre z₀, r₀ = c − Bᵀz₀ and h₀ = B W r₀, the residual of a
/// particle z = z₀ + d is r₀ − Bᵀd and
///
/// ‖c − Bᵀz‖²_W = ‖r₀‖²_W − 2 dᵀh₀ + dᵀ G d,   with G = B W Bᵀ,
///
/// O(R²) per particle instead of O(dx·R). The centre is the particles' mean in the forward pass
/// and their weighted mean in the reverse pass, so every term is of the size of the result and
/// nothing large cancels.
struct ObsStep {
    z0: Vec<f64>,
    r0: Vec<f64>,
    h0: Vec<f64>,
    s0: f64,
}

impl ObsStep {
    fn new(r: usize, dx: usize) -> Self {
        Self {
            z0: vec![0.0; r],
            r0: vec![0.0; dx],
            h0: vec![0.0; r],
            s0: 0.0,
        }
    }

    /// z₀ = Σ_k w_k z_k / Σ_k w_k over the rows of `zt` (R each), or their plain mean without
    /// weights.
    #[inline(always)]
    fn centre(&mut self, zt: &[f64], weights: Option<&[f64]>, r: usize) {
        let z0 = &mut self.z0[..r];
        z0.iter_mut().for_each(|v| *v = 0.0);
        let mut total = 0.0;
        for (kk, row) in zt.chunks_exact(r).enumerate() {
            let w = weights.map_or(1.0, |w| w[kk]);
            total += w;
            for (a, &zq) in z0.iter_mut().zip(row) {
                *a += w * zq;
            }
        }
        z0.iter_mut().for_each(|v| *v /= total);
    }

    /// r₀, h₀ and ‖r₀‖²_W at the centre for the offset `c`.
    #[inline(always)]
    fn prepare(&mut self, be: &[f64], w: &[f64], c: &[f64], r: usize) {
        let dx = c.len();
        self.r0.copy_from_slice(c);
        for q in 0..r {
            row_times_acc(&mut self.r0, &be[q * dx..(q + 1) * dx], -self.z0[q]);
        }
        self.s0 = weighted_sq_norm(&self.r0, w);
        for q in 0..r {
            self.h0[q] = weighted_dot(&be[q * dx..(q + 1) * dx], w, &self.r0);
        }
    }

    /// d = z − z₀ into `d` and ‖c − Bᵀz‖²_W.
    #[inline(always)]
    fn sq_norm(&self, g: &[f64], z: &[f64], d: &mut [f64], r: usize) -> f64 {
        for q in 0..r {
            d[q] = z[q] - self.z0[q];
        }
        let mut acc = 0.0;
        for q in 0..r {
            let mut gd = 0.0;
            for p in 0..r {
                gd += g[q * r + p] * d[p];
            }
            acc += d[q] * (gd - 2.0 * self.h0[q]);
        }
        self.s0 + acc
    }
}

/// Σ_j a_j² w_j with four independent partial sums (so it vectorises; fixed order).
#[inline]
fn weighted_sq_norm(a: &[f64], w: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cw) = (a.chunks_exact(4), w.chunks_exact(4));
    let (ra, rw) = (ca.remainder(), cw.remainder());
    for (x, y) in ca.zip(cw) {
        for l in 0..4 {
            acc[l] += x[l] * x[l] * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rw).map(|(x, y)| x * x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// y_j += m_j · a (a row of a matrix times a scalar, accumulated).
#[inline(always)]
fn row_times_acc(y: &mut [f64], m: &[f64], a: f64) {
    for (yj, &mj) in y.iter_mut().zip(m) {
        *yj += mj * a;
    }
}

/// Σ_j a_j b_j with four independent partial sums.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Transpose of a row-major rows × cols matrix.
fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// logsumexp of a slice (NaN if any entry is NaN).
pub fn logsumexp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    // The inlined exp (≈ 1 ulp) instead of libm's: two calls per particle and step.
    let sum = exp_sum(x, max);
    if x.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    max + sum.ln()
}

/// Σ_k e^(x_k − max), added in order. Where the CPU has AVX-512F the exponentials run eight at
/// a time (`fastmath`'s lanes: the scalar function's operations lane by lane, so its bits);
/// only the sum is sequential.
fn exp_sum(x: &[f64], max: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F checked just above.
        return unsafe { exp_sum_avx512(x, max) };
    }
    x.iter().map(|v| super::fastmath::exp(v - max)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_sum_avx512(x: &[f64], max: f64) -> f64 {
    use super::fastmath::Lanes64;
    use std::arch::x86_64::__m512d;
    // −0, the start of `Iterator::sum` for floats (only an empty sum shows it).
    let mut sum = -0.0;
    let mut e = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    let m = <__m512d as Lanes64>::splat(max);
    for c in chunks {
        let v = <__m512d as Lanes64>::load(c.as_ptr()).sub(m);
        super::fastmath::exp_lanes(v).store(e.as_mut_ptr());
        for &ek in &e {
            sum += ek;
        }
    }
    for &v in tail {
        sum += super::fastmath::exp(v - max);
    }
    sum
}

/// Loss and (optionally) gradient of the optimal-proposal VSMC objective on a batch.
///
/// `grad`, when given, must have the layout's length; d loss/dθ is *added* into it.
pub fn optimal_vsmc(
    config: &ModelConfig,
    params: &[f64],
    data: &Sequences<f64>,
    options: &VsmcOptions,
    noise: &dyn NoiseSource,
    grad: Option<&mut [f64]>,
) -> Result<VsmcOutput, VsmcError> {
    optimal_vsmc_with(config, params, data, options, noise, grad, true)
}

/// [`optimal_vsmc`]; `reduce_obs = false` keeps the observation term on all dx channels even
/// where [`ObsStep`]'s R-dimensional form applies (the tests' reference for that form).
fn optimal_vsmc_with(
    config: &ModelConfig,
    params: &[f64],
    data: &Sequences<f64>,
    options: &VsmcOptions,
    noise: &dyn NoiseSource,
    grad: Option<&mut [f64]>,
    reduce_obs: bool,
) -> Result<VsmcOutput, VsmcError> {
    config
        .validate()
        .map_err(|e| VsmcError::Params(e.to_string()))?;
    check_supported(config)?;
    let p = config
        .view(params)
        .map_err(|e| VsmcError::Params(e.to_string()))?;
    if data.dim_x != config.dim_x || data.dim_u != config.dim_u {
        return Err(VsmcError::Shape(format!(
            "data has dim_x = {}, dim_u = {}; the model expects {} and {}",
            data.dim_x, data.dim_u, config.dim_x, config.dim_u
        )));
    }
    if data.n_time == 0 || data.n_sequences == 0 {
        return Err(VsmcError::Shape(
            "zero-length trials or an empty batch".into(),
        ));
    }
    if options.n_particles == 0 {
        return Err(VsmcError::Params("n_particles (K) must be ≥ 1".into()));
    }
    if options.t_forward >= data.n_time {
        return Err(VsmcError::Params(format!(
            "t_forward = {} must be < the trial length {}",
            options.t_forward, data.n_time
        )));
    }
    let derived = derive(config, params)?;
    let stride = kernel::row_stride(config.n_units);
    let mt = kernel::with_stride(
        &transpose(p.m, config.n_units, config.rank),
        config.rank,
        config.n_units,
        stride,
    );
    let nk = kernel::with_stride(p.n, config.rank, config.n_units, stride);
    let values = derived.values();
    let tr = Transposed::new(&values, config.rank);
    let packed =
        (config.rank >= BATCHED_MIN_RANK).then(|| Packed::new(&values, config.rank, config.dim_x));
    let identity_m = kernel::frozen_identity(config, p.m);
    let net = (packed.is_some() && identity_m && options.precision == Precision::F64).then(|| {
        let (r, n) = (config.rank, config.n_units);
        PackedNet {
            w_t: PackedB::new(&nk, (1, stride), n, r),
            w: PackedB::new(&nk, (stride, 1), r, n),
        }
    });
    let obs_g = (reduce_obs && reduces_observation(config.rank, config.dim_x, options.n_particles))
        .then(|| obs_gram(&values.be, &values.inv_var, config.rank));
    let ctx = Ctx {
        c: config,
        p,
        obs_g,
        d: values,
        lo: (options.precision == Precision::F32).then(|| Weights32::new(&mt, &nk, p.h)),
        identity_m,
        tr,
        packed,
        net,
        mt,
        nk,
        stride,
        k: options.n_particles,
        n_steps: data.n_time,
        n_filter: data.n_time - options.t_forward,
    };
    let layout = config.layout();
    let off = |name: &str| layout.get(name).map(|b| b.offset).unwrap_or(0);
    let offsets = Offsets {
        m: off("rnn.transition.m"),
        n: off("rnn.transition.n"),
        h: off("rnn.transition.h"),
        wu: off("rnn.transition.Wu"),
        decay: off("rnn.transition.decay_param"),
        bias: off("rnn.observation.Bias"),
        initial_state: (config.initial_state == InitialState::Trainable)
            .then(|| off("rnn.initial_state")),
    };
    let nb = data.n_sequences;
    let want_grad = grad.is_some();
    let (r, dx, n) = (config.rank, config.dim_x, config.n_units);
    let results: Vec<TrialResult> = (0..nb)
        .into_par_iter()
        .map(|b| {
            let draws = noise.trial_draws(b, ctx.n_steps, ctx.n_filter, ctx.k, r);
            let rec = ctx.forward(data.x_of(b), data.u_of(b), &draws);
            let g = want_grad.then(|| {
                let mut gvec = vec![0.0; layout.len()];
                let mut adj = DerivedAdjoint::zeros(r, dx, n);
                ctx.backward(
                    data.x_of(b),
                    &rec,
                    &draws,
                    -1.0 / nb as f64,
                    &offsets,
                    &mut gvec,
                    &mut adj,
                );
                (gvec, adj)
            });
            (rec, g)
        })
        .collect();
    let log_likelihood: Vec<f64> = results.iter().map(|(rec, _)| rec.loss_b).collect();
    let loss = -log_likelihood.iter().sum::<f64>() / nb as f64;
    if let Some(grad) = grad {
        let mut total = vec![0.0; layout.len()];
        let mut adj = DerivedAdjoint::zeros(r, dx, n);
        for (_, g) in &results {
            if let Some((gv, a)) = g {
                for (t, v) in total.iter_mut().zip(gv) {
                    *t += v;
                }
                adj.add(a);
            }
        }
        derived.backward(&adj, &mut total);
        // Frozen blocks get no gradient.
        for b in layout.blocks() {
            if !b.trainable {
                for v in &mut total[b.range()] {
                    *v = 0.0;
                }
            }
        }
        for (g, t) in grad.iter_mut().zip(&total) {
            *g += t;
        }
    }
    Ok(VsmcOutput {
        loss,
        log_likelihood,
        log_w: results.iter().map(|(rec, _)| rec.log_w.clone()).collect(),
        ancestors: results.iter().map(|(rec, _)| rec.anc.clone()).collect(),
        particles: results.into_iter().map(|(rec, _)| rec.z).collect(),
        mean_alpha: derived.alpha_mean,
    })
}

/// The optimal proposal's distribution of z_0 given the first observation x_0 (SPEC §3.1
/// `posterior_sample` / `posterior_mean` without an encoder): mean (R) and Cholesky factor (R × R).
pub fn initial_posterior(
    config: &ModelConfig,
    params: &[f64],
    x0: &[f64],
    u0: &[f64],
) -> Result<(Vec<f64>, Vec<f64>), VsmcError> {
    check_supported(config)?;
    let p = config
        .view(params)
        .map_err(|e| VsmcError::Params(e.to_string()))?;
    let (r, dx, n, du) = (config.rank, config.dim_x, config.n_units, config.dim_u);
    if x0.len() != dx || u0.len() != du {
        return Err(VsmcError::Shape(format!(
            "x_0 has {} values and u_0 {}; the model expects {dx} and {du}",
            x0.len(),
            u0.len()
        )));
    }
    let d = derive(config, params)?.values();
    let mut mu0 = vec![0.0; r];
    if let Some(s) = p.initial_state {
        mu0.copy_from_slice(s);
    }
    if let Some(proj) = &d.proj {
        for i in 0..n {
            let w: f64 = (0..du).map(|l| p.wu[i * du + l] * u0[l]).sum();
            for q in 0..r {
                mu0[q] += proj[q * n + i] * w;
            }
        }
    }
    let mean = (0..r)
        .map(|i| {
            let a: f64 = (0..r).map(|j| d.oma[0][i * r + j] * mu0[j]).sum();
            let b: f64 = (0..dx)
                .map(|j| d.gain[0][i * dx + j] * (x0[j] - p.bias[j]))
                .sum();
            a + b
        })
        .collect();
    Ok((mean, d.lq[0].clone()))
}

/// Filtered posterior means E[z_t | x_0..t] (particle-weighted, before resampling) of one
/// trial: `[t][r]`. Used to start generation from the posterior mean at a time point (Fig 4).
pub fn filtered_means(
    config: &ModelConfig,
    params: &[f64],
    trial: &Sequences<f64>,
    n_particles: usize,
    seed: u64,
) -> Result<Vec<f64>, VsmcError> {
    let noise = super::draws::SeededNoise {
        seed,
        resampling: super::draws::Resampling::Systematic,
    };
    let out = optimal_vsmc(
        config,
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
    Ok(trial::weighted_means(
        &out.log_w[0],
        &out.particles[0],
        config.rank,
        n_particles,
    ))
}

#[cfg(test)]
mod tests {
    use super::logsumexp;

    /// The observation term from R-dimensional sums ([`super::ObsStep`]) gives the loss, every
    /// log weight and the gradient of the direct sum over the dx channels, for affine and
    /// one-to-one readouts, ranks 1–3, inputs, unfiltered steps, scalar and diagonal noise, and
    /// data near the model (small residuals) and far from it. Ancestors are the same.
    #[test]
    fn reduced_observation_term_equals_the_sum_over_channels() {
        use super::{optimal_vsmc_with, VsmcOptions};
        use crate::inference::draws::{Resampling, SeededNoise};
        use crate::inference::kernel::Precision;
        use crate::model::lowrank::{ModelConfig, NoiseKind, Observation, ReadoutFrom};
        use crate::model::Sequences;
        use rand::{Rng, SeedableRng};
        let cases = [
            // (rank, n, dx, du, one-to-one, scalar noise, t_forward, data scale)
            (2, 20, 20, 0, true, false, 0, 0.05),
            (2, 20, 20, 0, true, false, 0, 3.0),
            (1, 30, 30, 1, true, false, 2, 0.5),
            (3, 12, 16, 2, false, true, 1, 1.0),
            (3, 12, 5, 0, false, false, 0, 2.0),
        ];
        for (i, &(rank, n, dx, du, one_to_one, scalar, t_forward, scale)) in
            cases.iter().enumerate()
        {
            let mut c = ModelConfig::eeg(dx);
            (c.rank, c.n_units, c.dim_u) = (rank, n, du);
            if scalar {
                c.noise_x = NoiseKind::Scalar;
            }
            if one_to_one {
                c.observation = Observation::OneToOne;
                c.readout_from = ReadoutFrom::Currents;
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
            let mut p = c.init_params(i as u64).unwrap();
            p.iter_mut()
                .for_each(|v| *v += 0.2 * rng.gen_range(-1.0..1.0));
            let (nb, tt) = (3, 9);
            let data = Sequences {
                n_sequences: nb,
                dim_x: dx,
                dim_u: du,
                n_time: tt,
                x: (0..nb * dx * tt)
                    .map(|_| scale * rng.gen_range(-1.0..1.0))
                    .collect(),
                u: (0..nb * du * tt)
                    .map(|_| rng.gen_range(-1.0..1.0))
                    .collect(),
            };
            let noise = SeededNoise {
                seed: 40 + i as u64,
                resampling: Resampling::Systematic,
            };
            let options = VsmcOptions {
                n_particles: 16,
                t_forward,
                precision: Precision::F64,
            };
            let run = |reduce: bool| {
                let mut g = vec![0.0; p.len()];
                let out = optimal_vsmc_with(&c, &p, &data, &options, &noise, Some(&mut g), reduce)
                    .unwrap();
                (out, g)
            };
            let ((fast, g_fast), (direct, g_direct)) = (run(true), run(false));
            let close = |a: f64, b: f64, s: f64| (a - b).abs() <= 1e-12 * s.max(1.0);
            assert!(
                close(fast.loss, direct.loss, direct.loss.abs()),
                "case {i}: loss {} vs {}",
                fast.loss,
                direct.loss
            );
            for (a, b) in fast
                .log_w
                .iter()
                .flatten()
                .zip(direct.log_w.iter().flatten())
            {
                assert!(close(*a, *b, b.abs()), "case {i}: log w {a} vs {b}");
            }
            assert_eq!(fast.ancestors, direct.ancestors, "case {i}");
            for blk in c.layout().blocks() {
                let r = blk.range();
                let s = g_direct[r.clone()]
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.abs()));
                for (j, (a, b)) in g_fast[r.clone()].iter().zip(&g_direct[r]).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-11 * s + 1e-300,
                        "case {i}: {}[{j}]: {a} vs {b}",
                        blk.name
                    );
                }
            }
        }
    }

    #[test]
    fn logsumexp_matches_the_direct_sum_and_keeps_nan() {
        let x = [-3.0, 0.5, 2.25, -700.0, 1.0];
        let direct = x.iter().map(|v: &f64| v.exp()).sum::<f64>().ln();
        assert!(
            (logsumexp(&x) - direct).abs() < 1e-14,
            "{} vs {direct}",
            logsumexp(&x)
        );
        assert_eq!(logsumexp(&[f64::NEG_INFINITY, 0.0]), 0.0);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert!(logsumexp(&[0.0, f64::NAN, 1.0]).is_nan());
        assert_eq!(logsumexp(&[1.0, f64::INFINITY]), f64::INFINITY);
    }

    /// The eight-lane sum of exponentials gives the bits of the scalar one, whole registers and
    /// tails, over weights spanning the exponential's range (−∞ included).
    #[test]
    fn exp_sum_gives_the_scalar_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for len in 0..70 {
            for _ in 0..20 {
                let x: Vec<f64> = (0..len)
                    .map(|_| match rng.gen_range(0..10) {
                        0 => f64::NEG_INFINITY,
                        1 => rng.gen_range(-800.0..-600.0),
                        _ => rng.gen_range(-40.0..0.0),
                    })
                    .collect();
                let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(0.0);
                let scalar: f64 = x.iter().map(|v| super::super::fastmath::exp(v - max)).sum();
                let got = super::exp_sum(&x, max);
                assert_eq!(got.to_bits(), scalar.to_bits(), "{len}: {got} vs {scalar}");
            }
        }
    }
}
