//! VSMC with the encoder proposal (SPEC §2.5, `filtering_posterior`) and the bootstrap
//! proposal (SPEC §2.6, `filtering_posterior_bootstrap`) for every observation model of the
//! reference (affine from z or [v; z], one-to-one from currents or rates; Gaussian or Poisson;
//! identity / softplus / exp / relu output nonlinearity), with the loss exactly as the
//! reference's training loss and its exact gradient by a hand-written reverse pass.
//!
//! Structure as in [`super::optimal`]: the noise scales are computed once per call, the CNN
//! encoder runs once per trial (its output is the proposal's data term for every step), the
//! particle filter runs per trial (rayon over trials, draws per trial so results do not depend
//! on the thread count) and keeps its particles and ancestors, and a reverse sweep accumulates
//! every parameter's gradient — the transition through the shared kernels, the encoder through
//! its own reverse pass from d loss / d (mean, log-variance). With a Poisson likelihood the
//! observation term's reverse pass runs inside the forward pass, as soon as a step's weights
//! are known (`EarlyObs`); `precision: f32` also runs the CNN encoder and the
//! softplus-Poisson likelihood in single precision, and with the one-to-one readout from the
//! currents a step's whole observation term, batched over its particles (`Poisson32` in `poisson32.rs`).
//!
//! Reference details kept (⚠ in SPEC): the encoder proposal's prior term uses the clamped
//! *standard deviation* embedding while the proposal uses the clamped *variance* embedding
//! (clamps [1e-4, 10] and [1e-8, 100]); the bootstrap samples with the marginal standard
//! deviations even for a full Σ_z; the encoder sees the first T − t_forward steps only.

use rayon::prelude::*;

use super::draws::{ancestors, NoiseSource, TrialDraws};
use super::fastmath;
use super::kernel::{self, Precision, Weights32};
use super::optimal::{logsumexp, VsmcError, VsmcOptions, VsmcOutput};
use super::poisson32::Poisson32;
use super::trial;
use crate::model::encoder::{CnnEncoder, EncoderWeights, EncoderWorkspace};
use crate::model::lowrank::{
    InitialState, Likelihood, ModelConfig, NoiseKind, ObsNonlinearity, Observation, ParamView,
    ReadoutFrom,
};
use crate::model::Sequences;

const LN_2PI: f64 = 1.837_877_066_409_345_5;
/// Variance clamps of the proposals (`vae.min_var`, `vae.max_var`).
const MIN_VAR: f64 = 1e-8;
const MAX_VAR: f64 = 100.0;

/// The proposal of a [`smc_vsmc`] pass.
#[derive(Debug, Clone, Copy)]
pub enum SmcProposal<'a> {
    /// Product of the transition prior and a CNN encoder's Gaussian (SPEC §2.5); the encoder's
    /// blocks follow the model's in the flat parameter vector.
    Encoder(&'a CnnEncoder),
    /// The transition prior (SPEC §2.6).
    Bootstrap,
}

/// One noise parameter's scales as the proposals use them, clamped, with the masks of the
/// clamps (a clamped value passes no gradient, as torch's `clamp`).
#[derive(Debug, Clone)]
struct Scales {
    kind: NoiseKind,
    /// Variance embedding (diag/scalar only), clamped to [1e-8, 100].
    var: Vec<f64>,
    var_free: Vec<bool>,
    /// Standard-deviation embedding (sqrt of the covariance diagonal), clamped to [1e-4, 10].
    std: Vec<f64>,
    std_free: Vec<bool>,
    /// Raw std before the clamp (for the full embedding's reverse pass) and the Cholesky
    /// factor (full only).
    chol: Vec<f64>,
}

impl Scales {
    fn new(kind: NoiseKind, raw: &[f64], r: usize) -> Self {
        let chol = crate::model::lowrank::noise_cholesky(kind, raw, r);
        let (mut var, mut var_free) = (vec![0.0; r], vec![false; r]);
        let (mut std, mut std_free) = (vec![0.0; r], vec![false; r]);
        for i in 0..r {
            let (v, s) = match kind {
                NoiseKind::Diag => (raw[i].exp(), (raw[i] / 2.0).exp()),
                NoiseKind::Scalar => (raw[0].exp(), (raw[0] / 2.0).exp()),
                NoiseKind::Full => {
                    let d: f64 = (0..r).map(|j| chol[i * r + j].powi(2)).sum();
                    (d, d.sqrt())
                }
            };
            var[i] = v.clamp(MIN_VAR, MAX_VAR);
            var_free[i] = (MIN_VAR..=MAX_VAR).contains(&v);
            std[i] = s.clamp(MIN_VAR.sqrt(), MAX_VAR.sqrt());
            std_free[i] = (MIN_VAR.sqrt()..=MAX_VAR.sqrt()).contains(&s);
        }
        Scales {
            kind,
            var,
            var_free,
            std,
            std_free,
            chol,
        }
    }

    /// Adds d/d raw of (dvar · var + dstd · std) into `g` (the raw block).
    fn backward(&self, dvar: &[f64], dstd: &[f64], g: &mut [f64]) {
        let r = self.var.len();
        for i in 0..r {
            let dv = if self.var_free[i] { dvar[i] } else { 0.0 };
            let ds = if self.std_free[i] { dstd[i] } else { 0.0 };
            match self.kind {
                // var = exp(θ), std = exp(θ/2)
                NoiseKind::Diag => g[i] += dv * self.var[i] + ds * self.std[i] / 2.0,
                NoiseKind::Scalar => g[0] += dv * self.var[i] + ds * self.std[i] / 2.0,
                NoiseKind::Full => {
                    // std_i = sqrt(Σ_j L_ij²) (var of the full embedding is not used).
                    if ds == 0.0 {
                        continue;
                    }
                    for j in 0..=i {
                        let l = self.chol[i * r + j];
                        let dl = ds * l / self.std[i];
                        if j < i {
                            g[i * r + j] += dl;
                        } else {
                            g[i * r + i] += dl * l / 2.0;
                        }
                    }
                }
            }
        }
    }
}

/// Offsets of the blocks in the flat parameter vector.
struct Offsets {
    m: usize,
    n: usize,
    h: usize,
    wu: usize,
    decay: usize,
    b: usize,
    bias: usize,
    r_z: usize,
    r_z0: usize,
    r_x: Option<usize>,
    initial_state: Option<usize>,
}

/// The observation model's constants for a pass.
struct ObsModel {
    link: ObsNonlinearity,
    gaussian: bool,
    /// σ_x, 1/σ_x², and Σ_j (−ln σ_j − ½ ln 2π) (Gaussian).
    sd: Vec<f64>,
    inv_var: Vec<f64>,
    obs_const: f64,
}

/// The encoder's weights in the fit's precision: `precision: f32` runs the CNN in f32 (its
/// GEMMs are then twice as wide), the rest of the proposal in f64.
enum EncoderPrec {
    F64(EncoderWeights<f64>),
    F32(EncoderWeights<f32>),
}

/// An encoder workspace of the matching precision.
enum EncoderWs {
    F64(EncoderWorkspace<f64>),
    F32(EncoderWorkspace<f32>),
}

fn encoder_error(e: impl std::fmt::Display) -> VsmcError {
    VsmcError::Shape(format!("encoder: {e}"))
}

/// Runs the encoder on one trial's x (dx rows of `n_steps`): its mean and log-variance (R × T).
fn encoder_forward(
    enc: &CnnEncoder,
    w: &EncoderPrec,
    x: &[f64],
    n_steps: usize,
    ws: &mut EncoderWs,
) -> Result<(Vec<f64>, Vec<f64>), VsmcError> {
    match (w, ws) {
        (EncoderPrec::F64(w), EncoderWs::F64(ws)) => {
            enc.forward(w, x, n_steps, ws).map_err(encoder_error)?;
            Ok((ws.mean().to_vec(), ws.logvar().to_vec()))
        }
        (EncoderPrec::F32(w), EncoderWs::F32(ws)) => {
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            enc.forward(w, &x32, n_steps, ws).map_err(encoder_error)?;
            let wide = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect();
            Ok((wide(ws.mean()), wide(ws.logvar())))
        }
        _ => Err(encoder_error(
            "workspace and weights of different precisions",
        )),
    }
}

/// The encoder's reverse pass after [`encoder_forward`] with the same workspace: adds
/// d loss/dθ of its blocks into `g` from the output adjoints (R × T).
fn encoder_backward(
    enc: &CnnEncoder,
    w: &EncoderPrec,
    ws: &mut EncoderWs,
    d_mean: &[f64],
    d_logvar: &[f64],
    g: &mut [f64],
) -> Result<(), VsmcError> {
    match (w, ws) {
        (EncoderPrec::F64(w), EncoderWs::F64(ws)) => enc.backward(w, ws, d_mean, d_logvar, g),
        (EncoderPrec::F32(w), EncoderWs::F32(ws)) => {
            let narrow = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            enc.backward(w, ws, &narrow(d_mean), &narrow(d_logvar), g)
        }
        _ => {
            return Err(encoder_error(
                "workspace and weights of different precisions",
            ))
        }
    }
    .map_err(encoder_error)
}

/// Everything the per-trial passes share.
struct Ctx<'a> {
    c: &'a ModelConfig,
    p: ParamView<'a>,
    encoder: Option<(&'a CnnEncoder, EncoderPrec)>,
    mt: Vec<f64>,
    nk: Vec<f64>,
    /// Mᵀ and n rounded to f32 (`precision: f32`).
    lo: Option<Weights32>,
    /// M is the full-rank baseline's frozen identity ([`kernel::frozen_identity`]).
    identity_m: bool,
    /// Mᵀ of the observed units (R × dx) for the one-to-one readout, and b ∘ Mᵀ.
    m_obs: Vec<f64>,
    bm_obs: Vec<f64>,
    /// The batched f32 Poisson-softplus step ([`Poisson32`]) when it applies: `precision:
    /// f32`, Poisson likelihood with the softplus link, one-to-one readout from the currents,
    /// AVX2 + FMA.
    p32: Option<Poisson32>,
    /// The CPU has AVX-512F: the f64 Poisson-softplus terms run on eight lanes.
    wide_f64: bool,
    stride: usize,
    k: usize,
    n_steps: usize,
    n_filter: usize,
    /// [0]: z_0 scales, [1]: transition scales.
    scales: [Scales; 2],
    obs: ObsModel,
    /// (MᵀM)⁻¹ and P = (MᵀM)⁻¹Mᵀ (R × N) for the input's part of μ_0.
    proj: Option<(Vec<f64>, Vec<f64>)>,
    off: Offsets,
}

/// What one trial's forward pass keeps for the reverse pass.
struct TrialRecord {
    log_w: Vec<f64>,      // [t][k]
    z: Vec<f64>,          // [t][k][r] proposed
    mu: Vec<f64>,         // [t][k][r] transition means
    anc: Vec<usize>,      // [step][k]
    v: Vec<f64>,          // [t][du]
    dv_da: Vec<f64>,      // [t][du]
    enc_mean: Vec<f64>,   // [r][t] (encoder)
    enc_logvar: Vec<f64>, // [r][t]
    /// logsumexp of each step's log weights ([t]).
    lse: Vec<f64>,
    /// The observation term's adjoints, already taken in the forward pass (Poisson with a
    /// gradient); `None` when the reverse pass recomputes them.
    early: Option<EarlyObs>,
    alpha_sum: f64,
    loss_b: f64,
}

/// The observation term's reverse pass, taken during the forward pass once each step's weights
/// are known (Poisson with a gradient). The link's transcendental functions dominate a Poisson
/// fit; this way they are evaluated once, and the per-unit dℓ/dη live only for one step
/// (K × dx) instead of the whole trial (T × K × dx, megabytes per trial).
struct EarlyObs {
    /// d(scale · Loss_b)/dz of each proposed particle through its observation term, [t][k][r].
    dz: Vec<f64>,
    /// The one-to-one readout's parameter adjoints.
    acc: OneToOneGrad,
    /// The input state's adjoint, [t][du].
    dv: Vec<f64>,
}

/// The weight of particle `kk`'s log weight in d(scale · Loss_b): scale · w̃_k / T.
#[inline(always)]
fn particle_weight(lw: f64, lse: f64, scale: f64, n_steps: usize) -> f64 {
    scale * fastmath::exp(lw - lse) / n_steps as f64
}

/// Per-particle scratch of the observation term.
struct ObsScratch {
    xt: Vec<f64>,   // x_t (dx)
    eobs: Vec<f64>, // Wu v_t for the one-to-one readout (dx)
    pre: Vec<f64>,  // currents (dx)
    s: Vec<f64>,    // readout before B (dx)
    eta: Vec<f64>,  // B s + b (dx)
    deta: Vec<f64>, // d ℓ/d η (dx)
    term: Vec<f64>, // per-channel log-likelihood terms (dx)
}

/// What [`Ctx::eta_backward`] reads of one particle's observation term.
#[derive(Clone, Copy)]
struct ObsView<'a> {
    deta: &'a [f64],
    s: &'a [f64],
    pre: &'a [f64],
}

impl ObsScratch {
    fn view(&self) -> ObsView<'_> {
        ObsView {
            deta: &self.deta,
            s: &self.s,
            pre: &self.pre,
        }
    }

    fn new(dx: usize) -> Self {
        ObsScratch {
            xt: vec![0.0; dx],
            eobs: vec![0.0; dx],
            pre: vec![0.0; dx],
            s: vec![0.0; dx],
            eta: vec![0.0; dx],
            deta: vec![0.0; dx],
            term: vec![0.0; dx],
        }
    }
}

impl Ctx<'_> {
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

    /// Loads x_t and the input current of the observation at step t into `o`.
    #[inline(always)]
    fn obs_step(&self, x: &[f64], vt: &[f64], t: usize, o: &mut ObsScratch) {
        let (dx, du, tt) = (self.c.dim_x, self.c.dim_u, self.n_steps);
        for j in 0..dx {
            o.xt[j] = x[j * tt + t];
        }
        if self.c.observation == Observation::OneToOne {
            for j in 0..dx {
                o.eobs[j] = (0..du).map(|l| self.p.wu[j * du + l] * vt[l]).sum();
            }
        }
    }

    /// η = B s + b for one particle (into `o.eta`; one-to-one also keeps `o.pre`, `o.s`).
    #[inline(always)]
    fn eta(&self, z: &[f64], vt: &[f64], o: &mut ObsScratch) {
        let (r, dx, du) = (self.c.rank, self.c.dim_x, self.c.dim_u);
        let p = &self.p;
        match self.c.observation {
            Observation::Affine => {
                let zv = self.c.readout_from == ReadoutFrom::ZAndV;
                o.eta.copy_from_slice(p.bias);
                if zv {
                    for (l, &vl) in vt.iter().enumerate() {
                        let row = &p.b[l * dx..(l + 1) * dx];
                        for (e, b) in o.eta.iter_mut().zip(row) {
                            *e += b * vl;
                        }
                    }
                }
                let off = if zv { du } else { 0 };
                for (q, &zq) in z.iter().enumerate() {
                    let row = &p.b[(off + q) * dx..(off + q + 1) * dx];
                    for (e, b) in o.eta.iter_mut().zip(row) {
                        *e += b * zq;
                    }
                }
            }
            Observation::OneToOne => {
                // Currents of the observed units: e_obs + Σ_q M[:, q] z_q (vectorised over units),
                // into `pre` for a rates readout, straight into the readout `s` otherwise (`pre`
                // is then left alone: nothing reads it).
                let rates = self.c.readout_from == ReadoutFrom::Rates;
                let cur = if rates { &mut o.pre } else { &mut o.s };
                cur.copy_from_slice(&o.eobs);
                for (q, &zq) in z.iter().enumerate().take(r) {
                    let row = &self.m_obs[q * dx..(q + 1) * dx];
                    for (x, m) in cur.iter_mut().zip(row) {
                        *x += m * zq;
                    }
                }
                if rates {
                    for j in 0..dx {
                        o.s[j] = self.c.nonlinearity.eval(o.pre[j], p.h[j]).0;
                    }
                }
                for j in 0..dx {
                    o.eta[j] = p.b[j] * o.s[j] + p.bias[j];
                }
            }
        }
    }

    /// log p(x_t | z) of one particle (after [`Self::eta`]); with `grad_scale` ≠ 0 also
    /// writes d(grad_scale · ℓ)/dη into `o.deta` and adds the observation noise's gradient.
    #[inline(always)]
    fn loglik(&self, o: &mut ObsScratch, lgamma_t: f64, grad_scale: f64, dsd: &mut [f64]) -> f64 {
        let ob = &self.obs;
        let mut ll = 0.0;
        let want = grad_scale != 0.0;
        if ob.gaussian {
            for j in 0..o.eta.len() {
                let (xh, d1) = if ob.link == ObsNonlinearity::Identity {
                    (o.eta[j], 1.0)
                } else {
                    ob.link.eval(o.eta[j])
                };
                let res = o.xt[j] - xh;
                let q = res * res * ob.inv_var[j];
                ll -= 0.5 * q;
                if want {
                    o.deta[j] = grad_scale * res * ob.inv_var[j] * d1;
                    dsd[j] += grad_scale * (q - 1.0) / ob.sd[j];
                }
            }
            ll + ob.obs_const
        } else {
            // torch Poisson.log_prob: xlogy(x, λ) − λ − lgamma(x + 1); λ > 0 always, so
            // x ln λ is 0 for x = 0 without a branch. Branch-free inlined exp/ln so the loop
            // vectorises (this is the hot loop of the Poisson fits).
            match ob.link {
                #[cfg(target_arch = "x86_64")]
                ObsNonlinearity::Softplus if kernel::fma_available() => {
                    // Eight f32 lanes under `precision: f32`; f64 on eight lanes with AVX-512F,
                    // four otherwise (the same bits).
                    let terms: fastmath::PoissonTermsFn = if self.lo.is_some() {
                        fastmath::avx2_f32::poisson_softplus
                    } else if self.wide_f64 {
                        fastmath::avx512::poisson_softplus
                    } else {
                        fastmath::avx2::poisson_softplus
                    };
                    // SAFETY: AVX2 and FMA are available (checked); the slices all have length dx.
                    unsafe { terms(&o.eta, &o.xt, &mut o.term, &mut o.deta, grad_scale) }
                }
                ObsNonlinearity::Softplus => poisson_terms(o, grad_scale, |eta| {
                    let (sp, sig) = fastmath::softplus_and_sigmoid(eta);
                    (sp + 1e-6, sig)
                }),
                ObsNonlinearity::Exp => poisson_terms(o, grad_scale, |eta| {
                    let e = fastmath::exp(eta);
                    (e + 1e-10, e)
                }),
                link => poisson_terms(o, grad_scale, |eta| link.eval(eta)),
            }
            sum4(&o.term) - lgamma_t
        }
    }

    /// Reverse of [`Self::eta`] from `o.deta` (`o.s`, `o.pre` as [`Self::eta`] left them): adds into dz, the parameter gradient `g`, the
    /// one-to-one input current's adjoint `deobs` (dx) and the input state's `dv` (z_and_v).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn eta_backward(
        &self,
        z: &[f64],
        vt: &[f64],
        o: ObsView<'_>,
        dz: &mut [f64],
        g: &mut [f64],
        acc: &mut OneToOneGrad,
        deobs: &mut [f64],
        dv: &mut [f64],
    ) {
        let (r, dx, du) = (self.c.rank, self.c.dim_x, self.c.dim_u);
        let p = &self.p;
        let off = &self.off;
        match self.c.observation {
            Observation::Affine => {
                for j in 0..dx {
                    g[off.bias + j] += o.deta[j];
                }
                let zv = self.c.readout_from == ReadoutFrom::ZAndV;
                if zv {
                    for (l, &vl) in vt.iter().enumerate() {
                        let row = &p.b[l * dx..(l + 1) * dx];
                        let grow = &mut g[off.b + l * dx..off.b + (l + 1) * dx];
                        let mut s = 0.0;
                        for j in 0..dx {
                            grow[j] += o.deta[j] * vl;
                            s += row[j] * o.deta[j];
                        }
                        dv[l] += s;
                    }
                }
                let boff = if zv { du } else { 0 };
                for (q, &zq) in z.iter().enumerate() {
                    let row = &p.b[(boff + q) * dx..(boff + q + 1) * dx];
                    let start = off.b + (boff + q) * dx;
                    let grow = &mut g[start..start + dx];
                    let mut s = 0.0;
                    for j in 0..dx {
                        grow[j] += o.deta[j] * zq;
                        s += row[j] * o.deta[j];
                    }
                    dz[q] += s;
                }
            }
            Observation::OneToOne => {
                // Per unit first (vectorises: no reduction, no aliasing of `g`), then per
                // latent dimension a multiply-accumulate into the trial's M gradient and a dot
                // product for dz. Parameter adjoints go to the trial's accumulators in `acc`.
                if self.c.readout_from == ReadoutFrom::Rates {
                    for j in 0..dx {
                        let de = o.deta[j];
                        acc.bias[j] += de;
                        acc.b[j] += de * o.s[j];
                        let (_, dx_, dh) = self.c.nonlinearity.eval(o.pre[j], p.h[j]);
                        let dpre = de * p.b[j];
                        acc.h[j] += dpre * dh;
                        acc.dpre[j] = dpre * dx_;
                        deobs[j] += dpre * dx_;
                    }
                    for q in 0..r {
                        let zq = z[q];
                        let gm = &mut acc.m[q * dx..(q + 1) * dx];
                        for (gmj, &dp) in gm.iter_mut().zip(&acc.dpre) {
                            *gmj += dp * zq;
                        }
                        dz[q] += dot8(&self.m_obs[q * dx..(q + 1) * dx], &acc.dpre);
                    }
                } else {
                    // Linear readout: the current's adjoint dη ∘ b is never formed. dz uses
                    // b ∘ M (precomputed), M's adjoint sums dη z_q and takes its factor b once
                    // per trial (`OneToOneGrad::add_into`), the input current's only with inputs.
                    readout_backward(o.deta, o.s, &mut acc.bias, &mut acc.b);
                    if du > 0 {
                        for ((d, &de), &bj) in deobs.iter_mut().zip(o.deta).zip(&p.b[..dx]) {
                            *d += de * bj;
                        }
                    }
                    for q in 0..r {
                        let zq = z[q];
                        let gm = &mut acc.mz[q * dx..(q + 1) * dx];
                        for (gmj, &de) in gm.iter_mut().zip(o.deta) {
                            *gmj += de * zq;
                        }
                        dz[q] += dot8(&self.bm_obs[q * dx..(q + 1) * dx], o.deta);
                    }
                }
            }
        }
    }

    /// Reverse of the one-to-one readout's input current e_obs = Wu v_t, from its adjoint
    /// `deobs` (dx): adds into Wu's gradient in `g` and the input state's adjoint `dv_t` (du).
    fn input_obs_backward(&self, vt: &[f64], deobs: &[f64], g: &mut [f64], dv_t: &mut [f64]) {
        let du = self.c.dim_u;
        for (j, &de) in deobs.iter().enumerate() {
            for l in 0..du {
                g[self.off.wu + j * du + l] += de * vt[l];
                dv_t[l] += self.p.wu[j * du + l] * de;
            }
        }
    }

    /// The prior mean of z_0: μ_0 = initial state + P (Wu v_0) (SPEC §1.5).
    fn initial_mean(&self, v0: &[f64], out: &mut [f64]) {
        let (r, n, du) = (self.c.rank, self.c.n_units, self.c.dim_u);
        out.iter_mut().for_each(|m| *m = 0.0);
        if let Some(s) = self.p.initial_state {
            out.copy_from_slice(s);
        }
        if let Some((_, proj)) = &self.proj {
            for i in 0..n {
                let w: f64 = (0..du).map(|l| self.p.wu[i * du + l] * v0[l]).sum();
                for q in 0..r {
                    out[q] += proj[q * n + i] * w;
                }
            }
        }
    }

    /// Reverse of [`Self::initial_mean`] given dμ_0.
    fn initial_mean_backward(&self, v0: &[f64], dmu0: &[f64], g: &mut [f64]) {
        let (r, n, du) = (self.c.rank, self.c.n_units, self.c.dim_u);
        if let Some(off) = self.off.initial_state {
            for q in 0..r {
                g[off + q] += dmu0[q];
            }
        }
        let Some((ainv, proj)) = &self.proj else {
            return;
        };
        // y = A⁻¹ Mᵀ w with A = MᵀM, w = Wu v_0: with λ = A⁻¹ dy,
        // dw = M λ and dM = w λᵀ − M y λᵀ − M λ yᵀ.
        let p = &self.p;
        let lam: Vec<f64> = (0..r)
            .map(|i| (0..r).map(|j| ainv[i * r + j] * dmu0[j]).sum())
            .collect();
        let w: Vec<f64> = (0..n)
            .map(|i| (0..du).map(|l| p.wu[i * du + l] * v0[l]).sum())
            .collect();
        let y: Vec<f64> = (0..r)
            .map(|q| (0..n).map(|i| proj[q * n + i] * w[i]).sum())
            .collect();
        for i in 0..n {
            let mrow = &p.m[i * r..(i + 1) * r];
            let my: f64 = mrow.iter().zip(&y).map(|(a, b)| a * b).sum();
            let ml: f64 = mrow.iter().zip(&lam).map(|(a, b)| a * b).sum();
            for q in 0..r {
                g[self.off.m + i * r + q] += w[i] * lam[q] - my * lam[q] - ml * y[q];
            }
            for l in 0..du {
                g[self.off.wu + i * du + l] += ml * v0[l];
            }
        }
    }

    /// Forward pass of one trial (`ws` holds the encoder's workspace when there is one).
    ///
    /// `early` = (gradient, scale): take the observation term's reverse pass here (Poisson only;
    /// see [`EarlyObs`]), adding d(scale · Loss_b)/dθ of its parameters into the gradient.
    fn forward(
        &self,
        x: &[f64],
        u: &[f64],
        draws: &TrialDraws,
        ws: Option<&mut EncoderWs>,
        early: Option<(&mut [f64], f64)>,
    ) -> Result<TrialRecord, VsmcError> {
        #[cfg(target_arch = "x86_64")]
        if kernel::fma_available() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { self.forward_avx2(x, u, draws, ws, early) };
        }
        self.forward_impl::<0>(x, u, draws, ws, early)
    }

    /// [`Self::forward_impl`] compiled for AVX2 (wider vectors for the observation loops; no
    /// contraction to FMA, so results are the same bits as the portable build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(
        &self,
        x: &[f64],
        u: &[f64],
        draws: &TrialDraws,
        ws: Option<&mut EncoderWs>,
        early: Option<(&mut [f64], f64)>,
    ) -> Result<TrialRecord, VsmcError> {
        match self.c.rank {
            1 => self.forward_impl::<1>(x, u, draws, ws, early),
            2 => self.forward_impl::<2>(x, u, draws, ws, early),
            3 => self.forward_impl::<3>(x, u, draws, ws, early),
            _ => self.forward_impl::<0>(x, u, draws, ws, early),
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
        ws: Option<&mut EncoderWs>,
        mut early: Option<(&mut [f64], f64)>,
    ) -> Result<TrialRecord, VsmcError> {
        debug_assert!(R == 0 || R == self.c.rank);
        let (r, dx, du, k, tt, n) = (
            if R > 0 { R } else { self.c.rank },
            self.c.dim_x,
            self.c.dim_u,
            self.k,
            self.n_steps,
            self.c.n_units,
        );
        let (v, dv_da) = trial::input_states(self.c, self.p.decay, u, tt);
        let (mut enc_mean, mut enc_logvar) = (Vec::new(), Vec::new());
        if let (Some((enc, w)), Some(ws)) = (&self.encoder, ws) {
            (enc_mean, enc_logvar) = encoder_forward(enc, w, x, tt, ws)?;
        }
        let t_enc = self.n_filter;
        let lgamma = self.lgamma_per_step(x);
        let mut z = vec![0.0; tt * k * r];
        let mut log_w = vec![0.0; tt * k];
        let mut anc = vec![0usize; self.n_filter * k];
        let mut mus = vec![0.0; tt * k * r];
        let mut mu = vec![0.0; k * r];
        let mut zp = vec![0.0; k * r];
        let mut ext = vec![0.0; n];
        let mut mu0 = vec![0.0; r];
        let mut o = ObsScratch::new(dx);
        let mut dummy = vec![0.0; dx];
        if self.obs.gaussian {
            // The Gaussian term's reverse pass also needs the weights inside `loglik` (σ_x's
            // adjoint); it is cheap to recompute, so it stays in the reverse pass.
            early = None;
        }
        let keep = early.is_some();
        let one_to_one = self.c.observation == Observation::OneToOne;
        let rates = self.c.readout_from == ReadoutFrom::Rates;
        // One step's dℓ/dη, readouts s and currents of every particle (early mode).
        // Each particle's buffers are swapped with the scratch's, not copied.
        // (Not needed by the batched f32 step, which keeps its own K × dx buffer.)
        let per_step = keep && self.p32.is_none();
        let per_particle =
            |on: bool| vec![vec![0.0; if on { dx } else { 0 }]; if per_step { k } else { 0 }];
        let mut step_dl = per_particle(true);
        let mut step_s = per_particle(one_to_one);
        let mut step_pre = per_particle(one_to_one && rates);
        let mut ea = keep.then(|| EarlyObs {
            dz: vec![0.0; tt * k * r],
            acc: OneToOneGrad::new(r, dx),
            dv: vec![0.0; tt * du],
        });
        let mut deobs = vec![0.0; dx];
        // The batched f32 Poisson step: the trial's buffers, each particle's ℓ, weights and D.
        let mut s32 = self.p32.as_ref().map(|p| p.trial(x, tt, k));
        let (mut ll32, mut gk32, mut d32) = (vec![0.0; k], vec![0.0; k], vec![0.0; dx]);
        let mut lses = vec![0.0; tt];
        // ln of the proposal's and the prior's standard deviations (encoder steps).
        let (mut ln_prior, mut ln_prop) = (vec![0.0; r], vec![0.0; r]);
        // 1/σ_z² and the proposal's standard deviation per latent (encoder steps).
        let (mut prec_z, mut sd_q) = (vec![0.0; r], vec![0.0; r]);
        let mut scratch = vec![0.0; 2 * k];
        let (mut prec_e, mut mean_e, mut vq) = (vec![0.0; r], vec![0.0; r], vec![0.0; r]);
        let w = self.weights();
        let mut loss_b = 0.0;
        let mut alpha_sum = 0.0;
        for t in 0..tt {
            let set = usize::from(t > 0);
            let vt = &v[t * du..(t + 1) * du];
            if t == 0 {
                self.initial_mean(vt, &mut mu0);
                for kk in 0..k {
                    mu[kk * r..(kk + 1) * r].copy_from_slice(&mu0);
                }
            } else {
                trial::gather_parents(&z, &anc, t, self.n_filter, r, &mut zp);
                let vprev = &v[(t - 1) * du..t * du];
                let e = trial::input_current(self.p.wu, du, vprev, &mut ext);
                kernel::means(&w, &zp, e, &mut mu);
            }
            mus[t * k * r..(t + 1) * k * r].copy_from_slice(&mu);
            let filtering = t < self.n_filter;
            let sc = &self.scales[set];
            let encoder_step = self.encoder.is_some() && filtering;
            if encoder_step {
                for q in 0..r {
                    let ve = enc_logvar[q * t_enc + t].exp().clamp(MIN_VAR, MAX_VAR);
                    prec_e[q] = 1.0 / ve;
                    mean_e[q] = enc_mean[q * t_enc + t];
                    let pz = 1.0 / sc.var[q];
                    let pq = pz + prec_e[q];
                    vq[q] = 1.0 / pq;
                    alpha_sum += 1.0 - pz / pq;
                    prec_z[q] = pz;
                    sd_q[q] = vq[q].sqrt();
                    ln_prior[q] = -sc.std[q].ln() - 0.5 * LN_2PI;
                    ln_prop[q] = -sd_q[q].ln() - 0.5 * LN_2PI;
                }
            }
            self.obs_step(x, vt, t, &mut o);
            if let (Some(p32), Some(s32)) = (&self.p32, s32.as_mut()) {
                if du > 0 {
                    p32.set_input(&o.eobs, s32);
                }
            }
            for kk in 0..k {
                let eps = &draws.eps[(t * k + kk) * r..(t * k + kk + 1) * r];
                let mu_k = &mu[kk * r..(kk + 1) * r];
                let zk = &mut z[(t * k + kk) * r..(t * k + kk + 1) * r];
                let mut lw_prop = 0.0;
                if encoder_step {
                    for q in 0..r {
                        let mq = (prec_z[q] * mu_k[q] + prec_e[q] * mean_e[q]) * vq[q];
                        zk[q] = mq + sd_q[q] * eps[q];
                        let d = (zk[q] - mu_k[q]) / sc.std[q];
                        lw_prop +=
                            (-0.5 * d * d + ln_prior[q]) - (-0.5 * eps[q] * eps[q] + ln_prop[q]);
                    }
                } else if self.encoder.is_some() {
                    // t_forward steps of the encoder path: the prior with sqrt(clamped var).
                    for q in 0..r {
                        zk[q] = mu_k[q] + sc.var[q].sqrt() * eps[q];
                    }
                } else {
                    for q in 0..r {
                        zk[q] = mu_k[q] + sc.std[q] * eps[q];
                    }
                }
                if s32.is_some() {
                    // Added below, for the whole step at once.
                    log_w[t * k + kk] = lw_prop;
                    continue;
                }
                self.eta(zk, vt, &mut o);
                let ll = self.loglik(&mut o, lgamma[t], if keep { 1.0 } else { 0.0 }, &mut dummy);
                if keep {
                    std::mem::swap(&mut step_dl[kk], &mut o.deta);
                    if one_to_one {
                        std::mem::swap(&mut step_s[kk], &mut o.s);
                    }
                    if one_to_one && rates {
                        std::mem::swap(&mut step_pre[kk], &mut o.pre);
                    }
                }
                log_w[t * k + kk] = ll + lw_prop;
            }
            if let (Some(p32), Some(s32)) = (&self.p32, s32.as_mut()) {
                // SAFETY: `p32` exists only where AVX2 and FMA are available (`smc_vsmc`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    p32.loglik(s32, t, &z[t * k * r..(t + 1) * k * r], &mut ll32)
                };
                for (lw, &l) in log_w[t * k..(t + 1) * k].iter_mut().zip(&ll32) {
                    *lw += l - lgamma[t];
                }
            }
            let lw = &log_w[t * k..(t + 1) * k];
            let lse = logsumexp(lw);
            lses[t] = lse;
            loss_b += lse - (k as f64).ln();
            if let (Some((g, scale)), Some(ea)) = (early.as_mut(), ea.as_mut()) {
                // The observation term's reverse pass for this step (see `EarlyObs`).
                deobs.iter_mut().for_each(|d| *d = 0.0);
                let dv_t = &mut ea.dv[t * du..(t + 1) * du];
                if let (Some(p32), Some(s32)) = (&self.p32, s32.as_mut()) {
                    for (g, &l) in gk32.iter_mut().zip(lw) {
                        *g = particle_weight(l, lse, *scale, tt);
                    }
                    d32.iter_mut().for_each(|d| *d = 0.0);
                    let span = t * k * r..(t + 1) * k * r;
                    // SAFETY: as for `loglik` above, which ran for these particles.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        p32.backward(s32, &gk32, &mut ea.dz[span], &mut d32, &mut ea.acc.mz)
                    };
                    for (a, &d) in ea.acc.bias.iter_mut().zip(&d32) {
                        *a += d;
                    }
                    if du > 0 {
                        // b's adjoint through e_obs (its part through Mᵀz is added at the end
                        // of the trial), and the input current's.
                        for j in 0..dx {
                            ea.acc.b[j] += o.eobs[j] * d32[j];
                            deobs[j] = d32[j] * self.p.b[j];
                        }
                        self.input_obs_backward(vt, &deobs, g, dv_t);
                    }
                } else {
                    for kk in 0..k {
                        let gk = particle_weight(lw[kk], lse, *scale, tt);
                        for d in step_dl[kk].iter_mut() {
                            *d *= gk;
                        }
                        let view = ObsView {
                            deta: &step_dl[kk],
                            s: if one_to_one { &step_s[kk] } else { &[] },
                            pre: if one_to_one && rates {
                                &step_pre[kk]
                            } else {
                                &[]
                            },
                        };
                        let zk = &z[(t * k + kk) * r..(t * k + kk + 1) * r];
                        let dz = &mut ea.dz[(t * k + kk) * r..(t * k + kk + 1) * r];
                        self.eta_backward(zk, vt, view, dz, g, &mut ea.acc, &mut deobs, dv_t);
                    }
                    if one_to_one && du > 0 {
                        self.input_obs_backward(vt, &deobs, g, dv_t);
                    }
                }
            }
            if filtering {
                ancestors(
                    lw,
                    &draws.resample,
                    t,
                    &mut scratch,
                    &mut anc[t * k..(t + 1) * k],
                );
            }
        }
        if let (Some(ea), true) = (ea.as_mut(), s32.is_some()) {
            // b's adjoint through the currents Mᵀz: Σ_q M_q ∘ G_q (see `poisson32`).
            for q in 0..r {
                for j in 0..dx {
                    ea.acc.b[j] += self.m_obs[q * dx + j] * ea.acc.mz[q * dx + j];
                }
            }
        }
        Ok(TrialRecord {
            log_w,
            z,
            mu: mus,
            anc,
            v,
            dv_da,
            enc_mean,
            enc_logvar,
            lse: lses,
            early: ea,
            alpha_sum,
            loss_b: loss_b / tt as f64,
        })
    }

    /// Σ_j ln Γ(x_jt + 1) per step (Poisson), zeros otherwise.
    fn lgamma_per_step(&self, x: &[f64]) -> Vec<f64> {
        let (dx, tt) = (self.c.dim_x, self.n_steps);
        if self.obs.gaussian {
            return vec![0.0; tt];
        }
        (0..tt)
            .map(|t| (0..dx).map(|j| ln_factorial(x[j * tt + t])).sum())
            .collect()
    }

    /// Reverse pass of one trial: d(scale · Loss_b)/dθ added into `g` (full layout); the
    /// encoder's output adjoints into `d_mean`, `d_logvar` (R × T_enc).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &[f64],
        rec: &mut TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        g: &mut [f64],
        d_mean: &mut [f64],
        d_logvar: &mut [f64],
    ) {
        #[cfg(target_arch = "x86_64")]
        if kernel::fma_available() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { self.backward_avx2(x, rec, draws, scale, g, d_mean, d_logvar) };
            return;
        }
        self.backward_impl::<0>(x, rec, draws, scale, g, d_mean, d_logvar);
    }

    /// [`Self::backward_impl`] compiled for AVX2 (as [`Self::forward_avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_avx2(
        &self,
        x: &[f64],
        rec: &mut TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        g: &mut [f64],
        d_mean: &mut [f64],
        d_logvar: &mut [f64],
    ) {
        match self.c.rank {
            1 => self.backward_impl::<1>(x, rec, draws, scale, g, d_mean, d_logvar),
            2 => self.backward_impl::<2>(x, rec, draws, scale, g, d_mean, d_logvar),
            3 => self.backward_impl::<3>(x, rec, draws, scale, g, d_mean, d_logvar),
            _ => self.backward_impl::<0>(x, rec, draws, scale, g, d_mean, d_logvar),
        }
    }

    /// The reverse pass; `R` as in [`Self::forward_impl`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_impl<const R: usize>(
        &self,
        x: &[f64],
        rec: &mut TrialRecord,
        draws: &TrialDraws,
        scale: f64,
        g: &mut [f64],
        d_mean: &mut [f64],
        d_logvar: &mut [f64],
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
        let p = &self.p;
        let wts = self.weights();
        let t_enc = self.n_filter;
        let (mut acc, mut dv, early_dz) = match rec.early.take() {
            Some(e) => (e.acc, e.dv, Some(e.dz)),
            None => (OneToOneGrad::new(r, dx), vec![0.0; tt * du], None),
        };
        let rec = &*rec;
        let lgamma = if early_dz.is_none() {
            self.lgamma_per_step(x)
        } else {
            Vec::new()
        };
        let mut o = ObsScratch::new(dx);
        let mut dz_next = vec![0.0; k * r];
        let mut dzprev = vec![0.0; k * r];
        let mut dmu_all = vec![0.0; k * r];
        let mut zp = vec![0.0; k * r];
        let mut ext = vec![0.0; n];
        let mut gext = vec![0.0; if du > 0 { n } else { 0 }];
        let st = self.stride;
        let mut gmt = vec![0.0; (r - 1) * st + n];
        let mut gn = vec![0.0; (r - 1) * st + n];
        let mut work = vec![0.0; k * st];
        let mut work32 = Vec::new();
        let mut gh = vec![0.0; n];
        let mut dsd = vec![0.0; dx];
        let mut deobs = vec![0.0; dx];
        let mut wgt = vec![0.0; k];
        // Each particle's dz at this step: the observation term's plus the transition's.
        let mut dz_step = vec![0.0; k * r];
        let mut dmu0 = vec![0.0; r];
        // Noise adjoints: d/d var and d/d std per set.
        let mut dvar = [vec![0.0; r], vec![0.0; r]];
        let mut dstd = [vec![0.0; r], vec![0.0; r]];
        let (mut prec_e, mut mean_e, mut vq, mut ve) =
            (vec![0.0; r], vec![0.0; r], vec![0.0; r], vec![0.0; r]);
        let (mut dmq_mu, mut dsq, mut dpz, mut dpe, mut dvq, mut dme) = (
            vec![0.0; r],
            vec![0.0; r],
            vec![0.0; r],
            vec![0.0; r],
            vec![0.0; r],
            vec![0.0; r],
        );
        // Per latent at an encoder step: 1/s, 1/s², 1/s³ (s the prior's std), 1/s_q (the
        // proposal's) and 1/σ_z², so that the particle loop has no division.
        let mut step_inv = vec![[0.0; 5]; r];
        let mut da = 0.0;
        for t in (0..tt).rev() {
            let set = usize::from(t > 0);
            let sc = &self.scales[set];
            let filtering = t < self.n_filter;
            let encoder_step = self.encoder.is_some() && filtering;
            let vt = &rec.v[t * du..(t + 1) * du];
            let lw = &rec.log_w[t * k..(t + 1) * k];
            for kk in 0..k {
                wgt[kk] = particle_weight(lw[kk], rec.lse[t], scale, tt);
            }
            if t > 0 {
                trial::gather_parents(&rec.z, &rec.anc, t, self.n_filter, r, &mut zp);
            }
            if encoder_step {
                for q in 0..r {
                    ve[q] = rec.enc_logvar[q * t_enc + t].exp().clamp(MIN_VAR, MAX_VAR);
                    prec_e[q] = 1.0 / ve[q];
                    mean_e[q] = rec.enc_mean[q * t_enc + t];
                    vq[q] = 1.0 / (1.0 / sc.var[q] + prec_e[q]);
                    let s = sc.std[q];
                    step_inv[q] = [
                        1.0 / s,
                        1.0 / (s * s),
                        1.0 / (s * s * s),
                        1.0 / vq[q].sqrt(),
                        1.0 / sc.var[q],
                    ];
                }
                for a in [
                    &mut dmq_mu,
                    &mut dsq,
                    &mut dpz,
                    &mut dpe,
                    &mut dvq,
                    &mut dme,
                ] {
                    a.iter_mut().for_each(|v| *v = 0.0);
                }
            }
            if early_dz.is_none() {
                self.obs_step(x, vt, t, &mut o);
            }
            deobs.iter_mut().for_each(|v| *v = 0.0);
            let (dv_t, _) = dv.split_at_mut((t + 1) * du);
            let dv_t = &mut dv_t[t * du..];
            // The observation term's dz of every particle (or its adjoint, already taken in
            // the forward pass), added to the transition's from the step after.
            if let Some(ez) = &early_dz {
                let ez = &ez[t * k * r..(t + 1) * k * r];
                for ((d, &next), &e) in dz_step.iter_mut().zip(&dz_next).zip(ez) {
                    *d = next + e;
                }
            } else {
                for kk in 0..k {
                    let zk = &rec.z[(t * k + kk) * r..(t * k + kk + 1) * r];
                    let dzk = &mut dz_step[kk * r..(kk + 1) * r];
                    dzk.copy_from_slice(&dz_next[kk * r..(kk + 1) * r]);
                    self.eta(zk, vt, &mut o);
                    self.loglik(&mut o, lgamma[t], wgt[kk], &mut dsd);
                    self.eta_backward(zk, vt, o.view(), dzk, g, &mut acc, &mut deobs, dv_t);
                }
            }
            if encoder_step {
                // One latent at a time, so that its sums over the particles stay in registers
                // (each still adds its terms in the particles' order).
                for q in 0..r {
                    // log N(z; μ, s_z) with s_z the clamped std embedding
                    let [inv_s, inv_s2, inv_s3, inv_sq, pz] = step_inv[q];
                    let (pe, vqq, me) = (prec_e[q], vq[q], mean_e[q]);
                    let (mut a_std, mut a_sq, mut a_me) = (dstd[set][q], dsq[q], dme[q]);
                    let (mut a_pz, mut a_pe, mut a_vq) = (dpz[q], dpe[q], dvq[q]);
                    for kk in 0..k {
                        let gk = wgt[kk];
                        let i = (t * k + kk) * r + q;
                        let (zq, mu, e) = (rec.z[i], rec.mu[i], draws.eps[i]);
                        let diff = zq - mu;
                        let c = gk * diff * inv_s2;
                        a_std += gk * (diff * diff * inv_s3 - inv_s);
                        // − log q = ½ε² + ln s_q + const
                        a_sq += gk * inv_sq;
                        // z = m_q + s_q ε, m_q = (p_z μ + p_e μ_e) v_q
                        let dmq = dz_step[kk * r + q] - c;
                        a_sq += dmq * e;
                        dmu_all[kk * r + q] = c + dmq * pz * vqq;
                        a_me += dmq * pe * vqq;
                        a_pz += dmq * mu * vqq;
                        a_pe += dmq * me * vqq;
                        a_vq += dmq * (pz * mu + pe * me);
                    }
                    (dstd[set][q], dsq[q], dme[q]) = (a_std, a_sq, a_me);
                    (dpz[q], dpe[q], dvq[q]) = (a_pz, a_pe, a_vq);
                }
                if t > 0 {
                    // The decay's adjoint, particle by particle and latent by latent, once
                    // every latent's dμ is known: a loop of its own, so that its sum stays in
                    // a register (beside the last latent's loop it went to the stack and
                    // back per term).
                    let mut a_da = da;
                    for ((dm, zj), dzp) in dmu_all.iter().zip(&zp).zip(dzprev.iter_mut()) {
                        a_da += dm * zj;
                        *dzp = p.decay * dm;
                    }
                    da = a_da;
                }
            } else {
                for kk in 0..k {
                    let eps = &draws.eps[(t * k + kk) * r..(t * k + kk + 1) * r];
                    let dzk = &dz_step[kk * r..(kk + 1) * r];
                    let dmu = &mut dmu_all[kk * r..(kk + 1) * r];
                    dmu.copy_from_slice(dzk);
                    if self.encoder.is_some() {
                        // t_forward steps of the encoder path: the prior with sqrt(clamped var).
                        for q in 0..r {
                            let s = sc.var[q].sqrt();
                            dvar[set][q] += dzk[q] * eps[q] / (2.0 * s);
                        }
                    } else {
                        for q in 0..r {
                            dstd[set][q] += dzk[q] * eps[q];
                        }
                    }
                    if t > 0 {
                        // The decay's adjoint, in the particle loop so that its chain of
                        // additions runs beside the particle's other work.
                        for q in 0..r {
                            da += dmu[q] * zp[kk * r + q];
                            dzprev[kk * r + q] = p.decay * dmu[q];
                        }
                    }
                }
            }
            if encoder_step {
                for q in 0..r {
                    let sq = vq[q].sqrt();
                    let dvq_q = dvq[q] + dsq[q] / (2.0 * sq);
                    let dpq = -dvq_q * vq[q] * vq[q];
                    let dpz_q = dpz[q] + dpq;
                    let dpe_q = dpe[q] + dpq;
                    dvar[set][q] += -dpz_q / (sc.var[q] * sc.var[q]);
                    let raw = rec.enc_logvar[q * t_enc + t].exp();
                    if (MIN_VAR..=MAX_VAR).contains(&raw) {
                        d_logvar[q * t_enc + t] += -dpe_q / (ve[q] * ve[q]) * raw;
                    }
                    d_mean[q * t_enc + t] += dme[q];
                }
            }
            if early_dz.is_none() && self.c.observation == Observation::OneToOne && du > 0 {
                self.input_obs_backward(vt, &deobs, g, &mut dv[t * du..(t + 1) * du]);
            }
            if t == 0 {
                dmu0.iter_mut().for_each(|m| *m = 0.0);
                for kk in 0..k {
                    for q in 0..r {
                        dmu0[q] += dmu_all[kk * r + q];
                    }
                }
                self.initial_mean_backward(vt, &dmu0, g);
            } else {
                let vprev = &rec.v[(t - 1) * du..t * du];
                let e = trial::input_current(p.wu, du, vprev, &mut ext);
                gext.iter_mut().for_each(|v| *v = 0.0);
                let mut kg = kernel::Grads {
                    mt: &mut gmt,
                    n: &mut gn,
                    h: &mut gh,
                    ext: (du > 0).then_some(gext.as_mut_slice()),
                    work: &mut work,
                    work32: &mut work32,
                };
                kernel::means_backward(&wts, &zp, e, &dmu_all, &mut kg, &mut dzprev);
                for i in 0..if du > 0 { n } else { 0 } {
                    let ge = gext[i];
                    for l in 0..du {
                        g[self.off.wu + i * du + l] += ge * vprev[l];
                        dv[(t - 1) * du + l] += p.wu[i * du + l] * ge;
                    }
                }
                trial::scatter_to_parents(&dzprev, &rec.anc, t, self.n_filter, r, &mut dz_next);
            }
        }
        if self.c.simulate_input {
            for i in 0..tt * du {
                da += dv[i] * rec.dv_da[i];
            }
        }
        let off = &self.off;
        g[off.decay] += da * (-p.decay_param.exp() * p.decay);
        trial::add_kernel_grads(&gmt, &gn, &gh, st, (n, r), (off.m, off.n, off.h), g);
        self.scales[0].backward(
            &dvar[0],
            &dstd[0],
            &mut g[off.r_z0..off.r_z0 + p.r_z0.len()],
        );
        self.scales[1].backward(&dvar[1], &dstd[1], &mut g[off.r_z..off.r_z + p.r_z.len()]);
        if self.c.observation == Observation::OneToOne {
            acc.add_into(
                g,
                off,
                &p.b[..dx],
                r,
                self.c.readout_from == ReadoutFrom::Rates,
            );
        }
        if let (Some(ox), Some(rx)) = (off.r_x, p.r_x) {
            // σ_j = exp(θ/2) (diag) or exp(θ_0/2) (scalar)
            for j in 0..dx {
                let i = if self.c.noise_x == NoiseKind::Scalar {
                    0
                } else {
                    j
                };
                g[ox + i] += dsd[j] * self.obs.sd[j] / 2.0;
            }
            let _ = rx;
        }
    }
}

/// A trial's adjoints of the one-to-one readout's parameters (bias, B, h: dx each; M as R rows
/// of dx, transposed from its N × R layout) and the per-unit current adjoint of one particle.
struct OneToOneGrad {
    bias: Vec<f64>,
    b: Vec<f64>,
    h: Vec<f64>,
    m: Vec<f64>,
    /// Σ dη z_q per unit (R rows of dx), the currents readout's M adjoint before its factor b.
    mz: Vec<f64>,
    dpre: Vec<f64>,
}

impl OneToOneGrad {
    fn new(r: usize, dx: usize) -> Self {
        OneToOneGrad {
            bias: vec![0.0; dx],
            b: vec![0.0; dx],
            h: vec![0.0; dx],
            m: vec![0.0; r * dx],
            mz: vec![0.0; r * dx],
            dpre: vec![0.0; dx],
        }
    }

    /// Add the trial's sums into the full-layout gradient.
    /// `b` is the readout's gain (dx).
    fn add_into(&self, g: &mut [f64], off: &Offsets, b: &[f64], r: usize, rates: bool) {
        for (j, &bj) in b.iter().enumerate() {
            let dx = b.len();
            g[off.bias + j] += self.bias[j];
            g[off.b + j] += self.b[j];
            if rates {
                g[off.h + j] += self.h[j];
            }
            for q in 0..r {
                g[off.m + j * r + q] += self.m[q * dx + j] + bj * self.mz[q * dx + j];
            }
        }
    }
}

/// The linear one-to-one readout's reverse per unit: the bias and B adjoints. Slices as
/// arguments (distinct, so the loop vectorises).
#[inline(always)]
fn readout_backward(deta: &[f64], s: &[f64], g_bias: &mut [f64], g_b: &mut [f64]) {
    let n = deta.len();
    let (s, g_bias, g_b) = (&s[..n], &mut g_bias[..n], &mut g_b[..n]);
    for j in 0..n {
        let de = deta[j];
        g_bias[j] += de;
        g_b[j] += de * s[j];
    }
}

/// ln Γ(x + 1) of a count: from a table for the small counts spike data has (the same values:
/// the table holds `libm::lgamma`'s), from `libm::lgamma` otherwise.
fn ln_factorial(x: f64) -> f64 {
    const N: usize = 256;
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    if x >= 0.0 && x < N as f64 && x.fract() == 0.0 {
        TABLE.get_or_init(|| (0..N).map(|n| libm::lgamma(n as f64 + 1.0)).collect())[x as usize]
    } else {
        libm::lgamma(x + 1.0)
    }
}

/// Σ a_i b_i with eight accumulators (two AVX2 registers: half the dependency chain of one).
#[inline(always)]
fn dot8(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Poisson log-likelihood terms x ln λ − λ into `o.term` and, with `grad_scale` ≠ 0,
/// grad_scale · dℓ/dη into `o.deta`, for λ, dλ/dη = `link(η)`.
#[inline(always)]
fn poisson_terms(o: &mut ObsScratch, grad_scale: f64, link: impl Fn(f64) -> (f64, f64)) {
    // Iterators (no bounds checks) and no branch inside, so that the loop vectorises.
    let terms = o.term.iter_mut().zip(o.eta.iter().zip(&o.xt));
    if grad_scale != 0.0 {
        for ((t, d), (&eta, &x)) in terms
            .zip(o.deta.iter_mut())
            .map(|((t, ex), d)| ((t, d), ex))
        {
            let (lam, d1) = link(eta);
            *t = x * fastmath::ln(lam) - lam;
            *d = grad_scale * (x / lam - 1.0) * d1;
        }
    } else {
        for (t, (&eta, &x)) in terms {
            let (lam, _) = link(eta);
            *t = x * fastmath::ln(lam) - lam;
        }
    }
}

/// The CPU has AVX-512F (and AVX2, which every AVX-512 CPU has).
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Σ a with four independent partial sums (vectorises; fixed order).
#[inline(always)]
fn sum4(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = a.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..4 {
            acc[l] += c[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Checks the model/proposal combination (the reference's constraints, SPEC §9).
fn check_supported(c: &ModelConfig, proposal: &SmcProposal<'_>) -> Result<(), VsmcError> {
    if let SmcProposal::Encoder(enc) = proposal {
        if c.noise_z == NoiseKind::Full || c.noise_z0 == NoiseKind::Full {
            return Err(VsmcError::Unsupported(
                "the encoder proposal needs noise_z and noise_z0 = diag or scalar (the reference \
                 breaks with full)"
                    .into(),
            ));
        }
        if enc.dim_x() != c.dim_x || enc.dim_z() != c.rank {
            return Err(VsmcError::Shape(format!(
                "encoder maps {} channels to {} latents; the model has dim_x = {} and rank {}",
                enc.dim_x(),
                enc.dim_z(),
                c.dim_x,
                c.rank
            )));
        }
    }
    Ok(())
}

/// Loss and (optionally) gradient of the VSMC objective with the encoder or bootstrap
/// proposal on a batch. `params` is the model's layout followed by the encoder's blocks (for
/// [`SmcProposal::Encoder`]); `grad`, when given, has the same length and d loss/dθ is *added*.
pub fn smc_vsmc(
    config: &ModelConfig,
    proposal: SmcProposal<'_>,
    params: &[f64],
    data: &Sequences<f64>,
    options: &VsmcOptions,
    noise: &dyn NoiseSource,
    grad: Option<&mut [f64]>,
) -> Result<VsmcOutput, VsmcError> {
    config
        .validate()
        .map_err(|e| VsmcError::Params(e.to_string()))?;
    check_supported(config, &proposal)?;
    let layout = config.layout();
    let n_model = layout.len();
    if params.len() < n_model {
        return Err(VsmcError::Params(format!(
            "{} parameters for a model layout of {n_model}",
            params.len()
        )));
    }
    let p = config
        .view(&params[..n_model])
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
    if let Some(i) = data.x.iter().position(|v| !v.is_finite()) {
        return Err(VsmcError::Shape(format!(
            "non-finite value {} in the data (sequence {}, channel {}, step {})",
            data.x[i],
            i / (data.dim_x * data.n_time),
            (i / data.n_time) % data.dim_x,
            i % data.n_time
        )));
    }
    if config.likelihood == Likelihood::Poisson {
        if let Some(v) = data.x.iter().find(|v| **v < 0.0 || v.fract() != 0.0) {
            return Err(VsmcError::Shape(format!(
                "Poisson data must be non-negative integer counts; found {v}"
            )));
        }
    }
    let (r, n, dx) = (config.rank, config.n_units, config.dim_x);
    let n_filter = data.n_time - options.t_forward;
    let encoder = match proposal {
        SmcProposal::Encoder(enc) => {
            enc.check_length_preserving(n_filter)
                .map_err(|e| VsmcError::Shape(format!("encoder: {e}")))?;
            let w = match options.precision {
                Precision::F64 => enc.weights::<f64>(params).map(EncoderPrec::F64),
                Precision::F32 => enc.weights::<f32>(params).map(EncoderPrec::F32),
            }
            .map_err(|e| VsmcError::Params(format!("encoder: {e}")))?;
            Some((enc, w))
        }
        SmcProposal::Bootstrap => None,
    };
    let off = |name: &str| layout.get(name).map(|b| b.offset).unwrap_or(0);
    let offsets = Offsets {
        m: off("rnn.transition.m"),
        n: off("rnn.transition.n"),
        h: off("rnn.transition.h"),
        wu: off("rnn.transition.Wu"),
        decay: off("rnn.transition.decay_param"),
        b: off("rnn.observation.B"),
        bias: off("rnn.observation.Bias"),
        r_z: off("rnn.R_z"),
        r_z0: off("rnn.R_z_t0"),
        r_x: layout.get("rnn.R_x").map(|b| b.offset),
        initial_state: (config.initial_state == InitialState::Trainable)
            .then(|| off("rnn.initial_state")),
    };
    let obs = match (config.likelihood, p.r_x) {
        (Likelihood::Gaussian, Some(rx)) => {
            let sd = crate::model::lowrank::noise_std(config.noise_x, rx, dx);
            ObsModel {
                link: config.obs_link(),
                gaussian: true,
                inv_var: sd.iter().map(|s| 1.0 / (s * s)).collect(),
                obs_const: sd.iter().map(|s| -s.ln() - 0.5 * LN_2PI).sum(),
                sd,
            }
        }
        _ => ObsModel {
            link: config.obs_link(),
            gaussian: false,
            sd: vec![1.0; dx],
            inv_var: vec![1.0; dx],
            obs_const: 0.0,
        },
    };
    let proj = if config.dim_u > 0 && !config.simulate_input {
        Some(projection(p.m, n, r)?)
    } else {
        None
    };
    let stride = kernel::row_stride(n);
    let mut m_t = vec![0.0; r * n];
    for i in 0..n {
        for q in 0..r {
            m_t[q * n + i] = p.m[i * r + q];
        }
    }
    let mt = kernel::with_stride(&m_t, r, n, stride);
    let nk = kernel::with_stride(p.n, r, n, stride);
    let mut ctx = Ctx {
        c: config,
        p,
        encoder,
        m_obs: (0..r)
            .flat_map(|q| m_t[q * n..q * n + dx].to_vec())
            .collect(),
        bm_obs: if config.observation == Observation::OneToOne {
            (0..r)
                .flat_map(|q| {
                    let (b, row) = (&p.b[..dx], &m_t[q * n..q * n + dx]);
                    b.iter()
                        .zip(row)
                        .map(|(bj, mj)| bj * mj)
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            Vec::new()
        },
        lo: (options.precision == Precision::F32).then(|| Weights32::new(&mt, &nk, p.h)),
        p32: None,
        wide_f64: avx512_available(),
        identity_m: kernel::frozen_identity(config, p.m),
        mt,
        nk,
        stride,
        k: options.n_particles,
        n_steps: data.n_time,
        n_filter,
        scales: [
            Scales::new(config.noise_z0, p.r_z0, r),
            Scales::new(config.noise_z, p.r_z, r),
        ],
        obs,
        proj,
        off: offsets,
    };
    #[cfg(target_arch = "x86_64")]
    if options.precision == Precision::F32
        && config.likelihood == Likelihood::Poisson
        && ctx.obs.link == ObsNonlinearity::Softplus
        && config.observation == Observation::OneToOne
        && config.readout_from == ReadoutFrom::Currents
        && r <= 16
        && kernel::fma_available()
    {
        ctx.p32 = Some(Poisson32::new(&p.b[..dx], &p.bias[..dx], &ctx.bm_obs, r));
    }
    let nb = data.n_sequences;
    let n_total = params.len();
    let want_grad = grad.is_some();
    type Out = (TrialRecord, Option<Vec<f64>>);
    // Encoder workspaces (megabytes each: the im2col buffers) shared by the trials through a
    // pool, so a batch allocates about one per thread. The encoder overwrites a workspace in
    // full per sequence (`encoder_gradients::batched_results_are_deterministic`), so which one
    // a trial gets does not change its result.
    let pool: std::sync::Mutex<Vec<EncoderWs>> = std::sync::Mutex::new(Vec::new());
    let take_ws = || -> Result<Option<EncoderWs>, VsmcError> {
        let Some((enc, w)) = &ctx.encoder else {
            return Ok(None);
        };
        let pooled = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Ok(Some(match pooled {
            Some(ws) => ws,
            None => match w {
                EncoderPrec::F64(_) => {
                    EncoderWs::F64(enc.workspace(n_filter).map_err(encoder_error)?)
                }
                EncoderPrec::F32(_) => {
                    EncoderWs::F32(enc.workspace(n_filter).map_err(encoder_error)?)
                }
            },
        }))
    };
    let results: Vec<Result<Out, VsmcError>> = (0..nb)
        .into_par_iter()
        .map(|b| {
            let draws = noise.trial_draws(b, ctx.n_steps, ctx.n_filter, ctx.k, r);
            let mut ws_owned = take_ws()?;
            let mut ws = ws_owned.as_mut();
            let scale = -1.0 / nb as f64;
            let mut gvec = if want_grad {
                vec![0.0; n_total]
            } else {
                Vec::new()
            };
            let mut rec = ctx.forward(
                data.x_of(b),
                data.u_of(b),
                &draws,
                ws.as_deref_mut(),
                want_grad.then_some((gvec.as_mut_slice(), scale)),
            )?;
            let g = if want_grad {
                let mut d_mean = vec![0.0; r * n_filter];
                let mut d_logvar = vec![0.0; r * n_filter];
                ctx.backward(
                    data.x_of(b),
                    &mut rec,
                    &draws,
                    scale,
                    &mut gvec,
                    &mut d_mean,
                    &mut d_logvar,
                );
                if let (Some((enc, w)), Some(ws)) = (&ctx.encoder, ws) {
                    encoder_backward(enc, w, ws, &d_mean, &d_logvar, &mut gvec)?;
                }
                Some(gvec)
            } else {
                None
            };
            if let Some(ws) = ws_owned {
                pool.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
            }
            Ok((rec, g))
        })
        .collect();
    let results: Vec<Out> = results.into_iter().collect::<Result<_, _>>()?;
    let log_likelihood: Vec<f64> = results.iter().map(|(rec, _)| rec.loss_b).collect();
    let loss = -log_likelihood.iter().sum::<f64>() / nb as f64;
    if let Some(grad) = grad {
        if grad.len() != n_total {
            return Err(VsmcError::Params(format!(
                "gradient buffer has {} entries for {n_total} parameters",
                grad.len()
            )));
        }
        // The trials' gradients summed in the trials' order for each parameter. Long
        // vectors (the CNN encoder's) in chunks of parameters across the threads, with the
        // same bits as one loop.
        let mut total = vec![0.0; n_total];
        let trial_grads: Vec<&[f64]> = results.iter().filter_map(|(_, g)| g.as_deref()).collect();
        const CHUNK: usize = 16_384;
        let add_chunk = |(c, out): (usize, &mut [f64])| {
            for gv in &trial_grads {
                for (t, v) in out.iter_mut().zip(&gv[c * CHUNK..]) {
                    *t += v;
                }
            }
        };
        if n_total >= 4 * CHUNK {
            total.par_chunks_mut(CHUNK).enumerate().for_each(add_chunk);
        } else {
            total.chunks_mut(CHUNK).enumerate().for_each(add_chunk);
        }
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
    let n_alpha = (nb * n_filter * r) as f64;
    let mean_alpha = results.iter().map(|(rec, _)| rec.alpha_sum).sum::<f64>() / n_alpha;
    let (mut log_w, mut ancestors, mut particles) = (
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
    );
    for (rec, _) in results {
        log_w.push(rec.log_w);
        ancestors.push(rec.anc);
        particles.push(rec.z);
    }
    Ok(VsmcOutput {
        loss,
        log_likelihood,
        log_w,
        ancestors,
        particles,
        mean_alpha,
    })
}

/// (MᵀM)⁻¹ (R × R) and P = (MᵀM)⁻¹Mᵀ (R × N) for M (N × R).
fn projection(m: &[f64], n: usize, r: usize) -> Result<(Vec<f64>, Vec<f64>), VsmcError> {
    let a = nalgebra::DMatrix::from_fn(r, r, |i, j| {
        (0..n).map(|u| m[u * r + i] * m[u * r + j]).sum()
    });
    let inv = a.try_inverse().ok_or_else(|| {
        VsmcError::Params("MᵀM is singular (the left vectors M are linearly dependent)".into())
    })?;
    let ainv: Vec<f64> = (0..r * r).map(|x| inv[(x / r, x % r)]).collect();
    let mut proj = vec![0.0; r * n];
    for q in 0..r {
        for i in 0..n {
            proj[q * n + i] = (0..r).map(|j| ainv[q * r + j] * m[i * r + j]).sum();
        }
    }
    Ok((ainv, proj))
}
