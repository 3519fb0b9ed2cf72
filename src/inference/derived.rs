//! The optimal proposal's time-independent quantities (SPEC §2.4) and their exact reverse pass,
//! written at the level of matrices.
//!
//! Per minibatch, the optimal proposal needs the noise Cholesky factors, the Kalman gain, the
//! proposal covariance's Cholesky factor, their log-determinants, the inverse noise factors and
//! the input projection. The forward pass below computes them with the same scalar algorithms
//! as [`super::tape::Tape`] (Gauss–Jordan with partial pivoting, the Cholesky–Banachiewicz loop,
//! forward substitution) in the same order, so the values are bit-identical to the scalar tape's;
//! the reverse pass uses the matrix adjoints (∂A⁻¹, ∂(AB), the Cholesky loop reversed), which
//! cost O(d³) per minibatch instead of a tape node per scalar operation. For the rank-3 model
//! either costs next to nothing; for the full-rank baselines (R = 30 or 128 with 64 channels) the
//! scalar tape held millions of nodes per minibatch and dominated the epoch. The test module keeps the scalar
//! tape version as the reference the matrix version must equal.

use super::optimal::VsmcError;
use super::tape::TapeError;
use crate::model::lowrank::{ModelConfig, NoiseKind, Observation, ReadoutFrom};

const LN_2PI: f64 = 1.837_877_066_409_345_5;
/// Floor of the observation variance in the Kalman gain (`vae.min_var`).
const MIN_VAR: f64 = 1e-8;

/// Values of the derived quantities for the hot loop.
#[derive(Clone)]
pub(super) struct DerivedValues {
    pub oma: [Vec<f64>; 2],
    pub gain: [Vec<f64>; 2],
    pub lq: [Vec<f64>; 2],
    pub lz_inv: [Vec<f64>; 2],
    pub lz: Vec<f64>,
    pub be: Vec<f64>,
    /// 1/σ_x and 1/σ_x².
    pub inv_sd: Vec<f64>,
    pub inv_var: Vec<f64>,
    /// Σ_j (−ln σ_j − ½ ln 2π).
    pub obs_const: f64,
    pub proj: Option<Vec<f64>>,
    pub const_q: [f64; 2],
    pub const_z: [f64; 2],
}

/// Adjoints of the derived quantities (same shapes).
#[derive(Clone)]
pub(super) struct DerivedAdjoint {
    pub oma: [Vec<f64>; 2],
    pub gain: [Vec<f64>; 2],
    pub lq: [Vec<f64>; 2],
    pub logdet_q: [f64; 2],
    pub lz_inv: [Vec<f64>; 2],
    pub logdet_z: [f64; 2],
    pub lz: Vec<f64>,
    pub be: Vec<f64>,
    pub std_x: Vec<f64>,
    pub proj: Vec<f64>,
}

impl DerivedAdjoint {
    pub fn zeros(r: usize, dx: usize, n: usize) -> Self {
        DerivedAdjoint {
            oma: [vec![0.0; r * r], vec![0.0; r * r]],
            gain: [vec![0.0; r * dx], vec![0.0; r * dx]],
            lq: [vec![0.0; r * r], vec![0.0; r * r]],
            logdet_q: [0.0; 2],
            lz_inv: [vec![0.0; r * r], vec![0.0; r * r]],
            logdet_z: [0.0; 2],
            lz: vec![0.0; r * r],
            be: vec![0.0; r * dx],
            std_x: vec![0.0; dx],
            proj: vec![0.0; r * n],
        }
    }
    pub fn add(&mut self, o: &DerivedAdjoint) {
        fn acc(a: &mut [f64], b: &[f64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for s in 0..2 {
            acc(&mut self.oma[s], &o.oma[s]);
            acc(&mut self.gain[s], &o.gain[s]);
            acc(&mut self.lq[s], &o.lq[s]);
            acc(&mut self.lz_inv[s], &o.lz_inv[s]);
            self.logdet_q[s] += o.logdet_q[s];
            self.logdet_z[s] += o.logdet_z[s];
        }
        acc(&mut self.lz, &o.lz);
        acc(&mut self.be, &o.be);
        acc(&mut self.std_x, &o.std_x);
        acc(&mut self.proj, &o.proj);
    }
}

// ---------------------------------------------------------------------------------------------
// Row-major dense helpers. Below [`GEMM_MIN_WORK`] multiply-adds the sums run over the inner
// index in increasing order, as the tape's (so the rank-R models' values are the tape's bits);
// above it, the product goes to the blocked `model::gemm` (the full-rank baselines: with R = 128
// the plain loops took 17 % of an epoch).

/// The smallest r · k · c that goes to `model::gemm`.
const GEMM_MIN_WORK: usize = 32 * 32 * 32;

/// out = a · b for row-major a (r × k, strides `sa`) and b (k × c, strides `sb`) by `model::gemm`.
fn gemm_into(
    a: &[f64],
    sa: (isize, isize),
    b: &[f64],
    sb: (isize, isize),
    (r, k, c): (usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    crate::model::gemm(r, k, c, a, sa, b, sb, 0.0, &mut out, (c as isize, 1));
    out
}

/// (r × k) · (k × c).
fn mm(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    if r * k * c >= GEMM_MIN_WORK {
        return gemm_into(a, (k as isize, 1), b, (c as isize, 1), (r, k, c));
    }
    mm_loops(a, b, r, k, c)
}

fn mm_loops(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        let row = &mut out[i * c..(i + 1) * c];
        for l in 0..k {
            let x = a[i * k + l];
            for (o, &y) in row.iter_mut().zip(&b[l * c..(l + 1) * c]) {
                *o += x * y;
            }
        }
    }
    out
}

/// (k × r)ᵀ · (k × c) = aᵀ b.
fn mm_tn(a: &[f64], b: &[f64], k: usize, r: usize, c: usize) -> Vec<f64> {
    if r * k * c >= GEMM_MIN_WORK {
        return gemm_into(a, (1, r as isize), b, (c as isize, 1), (r, k, c));
    }
    mm_tn_loops(a, b, k, r, c)
}

fn mm_tn_loops(a: &[f64], b: &[f64], k: usize, r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for l in 0..k {
        for i in 0..r {
            let x = a[l * r + i];
            let row = &mut out[i * c..(i + 1) * c];
            for (o, &y) in row.iter_mut().zip(&b[l * c..(l + 1) * c]) {
                *o += x * y;
            }
        }
    }
    out
}

/// (r × k) · (c × k)ᵀ = a bᵀ.
fn mm_nt(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    if r * k * c >= GEMM_MIN_WORK {
        return gemm_into(a, (k as isize, 1), b, (1, k as isize), (r, k, c));
    }
    mm_nt_loops(a, b, r, k, c)
}

fn mm_nt_loops(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            let mut s = 0.0;
            for l in 0..k {
                s += a[i * k + l] * b[j * k + l];
            }
            out[i * c + j] = s;
        }
    }
    out
}

fn add_to(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// I − A (n × n), in place.
fn eye_minus(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for (i, v) in a.iter_mut().enumerate() {
        *v = if i / n == i % n { 1.0 - *v } else { -*v };
    }
    a
}

/// A + Aᵀ (n × n): the adjoint of A's argument in products like A = L Lᵀ.
fn plus_transpose(a: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|i| a[i] + a[(i % n) * n + i / n]).collect()
}

/// Zero the strict upper triangle (n × n).
fn keep_lower(a: &mut [f64], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            a[i * n + j] = 0.0;
        }
    }
}

/// Inverse by Gauss–Jordan with partial pivoting (the tape's algorithm, operation for operation).
fn inverse(a: &[f64], n: usize) -> Result<Vec<f64>, TapeError> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot_row = (col..n)
            .max_by(|&x, &y| m[x * n + col].abs().total_cmp(&m[y * n + col].abs()))
            .unwrap_or(col);
        if m[pivot_row * n + col] == 0.0 {
            return Err(TapeError::Singular { pivot: col });
        }
        if pivot_row != col {
            for j in 0..n {
                m.swap(col * n + j, pivot_row * n + j);
                inv.swap(col * n + j, pivot_row * n + j);
            }
        }
        let p = m[col * n + col];
        for j in 0..n {
            m[col * n + j] /= p;
            inv[col * n + j] /= p;
        }
        for row in 0..n {
            if row == col {
                continue;
            }
            let f = m[row * n + col];
            for j in 0..n {
                m[row * n + j] -= f * m[col * n + j];
                inv[row * n + j] -= f * inv[col * n + j];
            }
        }
    }
    Ok(inv)
}

/// Ā = −Yᵀ Ȳ Yᵀ for Y = A⁻¹.
fn inverse_backward(y: &[f64], y_bar: &[f64], n: usize) -> Vec<f64> {
    let t = mm_tn(y, y_bar, n, n, n); // Yᵀ Ȳ
    let mut out = mm_nt(&t, y, n, n, n); // (Yᵀ Ȳ) Yᵀ
    for v in &mut out {
        *v = -*v;
    }
    out
}

/// Lower Cholesky factor, reading the lower triangle (the tape's loop).
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, TapeError> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(TapeError::NotPositiveDefinite { pivot: j, value: d });
        }
        let ljj = d.sqrt();
        l[j * n + j] = ljj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / ljj;
        }
    }
    Ok(l)
}

/// The Cholesky loop reversed: the adjoint of the lower-triangle entries of A (the upper
/// triangle, which the loop does not read, gets 0) given the adjoint of L's lower triangle.
fn cholesky_backward(l: &[f64], l_bar: &[f64], n: usize) -> Vec<f64> {
    let mut lb = l_bar.to_vec();
    keep_lower(&mut lb, n);
    let mut ab = vec![0.0; n * n];
    for j in (0..n).rev() {
        let ljj = l[j * n + j];
        for i in (j + 1..n).rev() {
            // l_ij = s / l_jj,  s = a_ij − Σ_k<j l_ik l_jk
            let sb = lb[i * n + j] / ljj;
            lb[j * n + j] -= lb[i * n + j] * l[i * n + j] / ljj;
            ab[i * n + j] += sb;
            for k in 0..j {
                let lik = l[i * n + k];
                let ljk = l[j * n + k];
                lb[i * n + k] -= sb * ljk;
                lb[j * n + k] -= sb * lik;
            }
        }
        // l_jj = √d,  d = a_jj − Σ_k<j l_jk²
        let db = lb[j * n + j] * 0.5 / ljj;
        ab[j * n + j] += db;
        for k in 0..j {
            lb[j * n + k] -= 2.0 * db * l[j * n + k];
        }
    }
    ab
}

/// Inverse of a lower-triangular matrix by forward substitution (the tape's loop).
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for col in 0..n {
        for i in col..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                s -= l[i * n + k] * inv[k * n + col];
            }
            inv[i * n + col] = s / l[i * n + i];
        }
    }
    inv
}

/// L̄ (lower) from Ȳ for Y = L⁻¹ lower-triangular: lower(−Yᵀ lower(Ȳ) Yᵀ).
fn lower_inverse_backward(y: &[f64], y_bar: &[f64], n: usize) -> Vec<f64> {
    let mut yb = y_bar.to_vec();
    keep_lower(&mut yb, n);
    let mut out = inverse_backward(y, &yb, n);
    keep_lower(&mut out, n);
    out
}

/// Σ ln l_ii.
fn logdet_lower(l: &[f64], n: usize) -> f64 {
    let mut acc = l[0].ln();
    for i in 1..n {
        acc += l[i * n + i].ln();
    }
    acc
}

// ---------------------------------------------------------------------------------------------

/// One Kalman set (t = 0 with Σ_0, or t ≥ 1 with Σ_z): what the reverse pass needs.
struct Kalman {
    /// L (lower, R × R): the noise factor it was built from.
    l: Vec<f64>,
    oma: Vec<f64>,
    gain: Vec<f64>,
    lq: Vec<f64>,
    vq: Vec<f64>,
    alpha_mean: f64,
    branch: Branch,
}

enum Branch {
    /// dx < 4R: Σ = L Lᵀ, S = Beᵀ Σ Be + diag(σ²), G = Σ Be S⁻¹, V = (I−α) Σ (I−α)ᵀ + G diag(σ²) Gᵀ.
    HighD {
        sigma: Vec<f64>,
        sb: Vec<f64>,
        s_inv: Vec<f64>,
        a1: Vec<f64>,
        kv: Vec<f64>,
    },
    /// Otherwise: V = (L⁻ᵀ L⁻¹ + Be diag(σ⁻²) Beᵀ)⁻¹, G = V Be diag(σ⁻²).
    LowD { linv: Vec<f64>, bv: Vec<f64> },
}

/// The time-independent quantities of one VSMC call and what their reverse pass needs.
pub(super) struct Derived {
    r: usize,
    dx: usize,
    n: usize,
    offsets: Offsets,
    scalar_noise_x: bool,
    one_to_one: bool,
    bobs: Vec<f64>,
    m: Option<Vec<f64>>,
    var_x: Vec<f64>,
    var_clipped: Vec<bool>,
    std_x: Vec<f64>,
    be: Vec<f64>,
    kalman: [Kalman; 2],
    lz_inv: [Vec<f64>; 2],
    proj: Option<(Vec<f64>, Vec<f64>)>, // ((MᵀM)⁻¹, P)
    /// Mean of the Kalman interpolation α over both sets (the reference logs it).
    pub alpha_mean: f64,
}

/// Offsets of the raw parameter blocks in the flat parameter vector.
struct Offsets {
    rz: usize,
    rz0: usize,
    rx: usize,
    m: Option<usize>,
    b: usize,
}

/// Lower Cholesky factor from the raw parameter block: strict lower as is, diagonal exp(½ raw).
fn chol_embed(raw: &[f64], r: usize) -> Vec<f64> {
    let mut l = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..i {
            l[i * r + j] = raw[i * r + j];
        }
        l[i * r + i] = (raw[i * r + i] * 0.5).exp();
    }
    l
}

fn kalman(l: &[f64], be: &[f64], var_x: &[f64], r: usize, dx: usize) -> Result<Kalman, TapeError> {
    let high_d = dx < 4 * r;
    let (gain, vq, branch) = if high_d {
        let sigma = mm_nt(l, l, r, r, r);
        let sb = mm(&sigma, be, r, r, dx);
        let mut s = mm_tn(be, &sb, r, dx, dx);
        for j in 0..dx {
            s[j * dx + j] += var_x[j];
        }
        let s_inv = inverse(&s, dx)?;
        let gain = mm(&sb, &s_inv, r, dx, dx);
        let alpha = mm_nt(&gain, be, r, dx, r);
        let oma = eye_minus(alpha, r);
        let a1 = mm(&oma, &sigma, r, r, r);
        let a2 = mm_nt(&a1, &oma, r, r, r);
        let kv: Vec<f64> = (0..r * dx).map(|i| gain[i] * var_x[i % dx]).collect();
        let a3 = mm_nt(&kv, &gain, r, dx, r);
        let vq: Vec<f64> = a2.iter().zip(&a3).map(|(x, y)| x + y).collect();
        (
            gain,
            vq,
            Branch::HighD {
                sigma,
                sb,
                s_inv,
                a1,
                kv,
            },
        )
    } else {
        let linv = lower_inverse(l, r);
        let sigma_inv = mm_tn(&linv, &linv, r, r, r);
        let bv: Vec<f64> = (0..r * dx).map(|i| be[i] / var_x[i % dx]).collect();
        let bvb = mm_nt(&bv, be, r, dx, r);
        let a: Vec<f64> = sigma_inv.iter().zip(&bvb).map(|(x, y)| x + y).collect();
        let vq = inverse(&a, r)?;
        let gain = mm(&vq, &bv, r, r, dx);
        (gain, vq, Branch::LowD { linv, bv })
    };
    let alpha = mm_nt(&gain, be, r, dx, r);
    let alpha_mean = alpha.iter().sum::<f64>() / (r * r) as f64;
    let oma = eye_minus(alpha, r);
    let mut sym = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            let mut s = (vq[i * r + j] + vq[j * r + i]) * 0.5;
            if i == j {
                s += 1e-8;
            }
            sym[i * r + j] = s;
        }
    }
    let lq = cholesky(&sym, r)?;
    Ok(Kalman {
        l: l.to_vec(),
        oma,
        gain,
        lq,
        vq,
        alpha_mean,
        branch,
    })
}

/// What both Kalman sets read besides their noise factor.
#[derive(Clone, Copy)]
struct KalmanInputs<'a> {
    be: &'a [f64],
    var_x: &'a [f64],
    r: usize,
    dx: usize,
}

/// Where a Kalman set's reverse pass adds its adjoints.
struct KalmanAdjoints<'a> {
    l: &'a mut [f64],
    be: &'a mut [f64],
    var: &'a mut [f64],
}

impl Kalman {
    /// Given the adjoints of (1 − α, G, L_Q), add those of L (lower), Be and σ² (clipped).
    fn backward(
        &self,
        oma_bar: &[f64],
        gain_bar: &[f64],
        lq_bar: &[f64],
        inputs: &KalmanInputs<'_>,
        out: KalmanAdjoints<'_>,
    ) {
        let KalmanInputs { be, var_x, r, dx } = *inputs;
        let KalmanAdjoints {
            l: l_bar,
            be: be_bar,
            var: var_bar,
        } = out;
        // Tail: α = G Beᵀ, 1 − α, sym = ½(V + Vᵀ) + 1e-8 I, L_Q = chol(sym).
        let sym_bar = cholesky_backward(&self.lq, lq_bar, r);
        let mut vq_bar = vec![0.0; r * r];
        for i in 0..r {
            for j in 0..r {
                let g = 0.5 * sym_bar[i * r + j];
                vq_bar[i * r + j] += g;
                vq_bar[j * r + i] += g;
            }
        }
        let alpha_bar: Vec<f64> = oma_bar.iter().map(|v| -v).collect();
        let mut g_bar = gain_bar.to_vec();
        add_to(&mut g_bar, &mm(&alpha_bar, be, r, r, dx));
        add_to(be_bar, &mm_tn(&alpha_bar, &self.gain, r, r, dx));
        match &self.branch {
            Branch::HighD {
                sigma,
                sb,
                s_inv,
                a1,
                kv,
            } => {
                // V = A2 + A3, A3 = KV Gᵀ, KV = G diag(σ²), A2 = A1 (1−α)ᵀ, A1 = (1−α) Σ.
                let kv_bar = mm(&vq_bar, &self.gain, r, r, dx);
                add_to(&mut g_bar, &mm_tn(&vq_bar, kv, r, r, dx));
                for i in 0..r {
                    for l in 0..dx {
                        g_bar[i * dx + l] += kv_bar[i * dx + l] * var_x[l];
                        var_bar[l] += kv_bar[i * dx + l] * self.gain[i * dx + l];
                    }
                }
                let a1_bar = mm(&vq_bar, &self.oma, r, r, r);
                let mut oma1_bar = mm_tn(&vq_bar, a1, r, r, r);
                add_to(&mut oma1_bar, &mm_nt(&a1_bar, sigma, r, r, r));
                let mut sigma_bar = mm_tn(&self.oma, &a1_bar, r, r, r);
                // α₁ = G Beᵀ (the same values as α).
                let alpha1_bar: Vec<f64> = oma1_bar.iter().map(|v| -v).collect();
                add_to(&mut g_bar, &mm(&alpha1_bar, be, r, r, dx));
                add_to(be_bar, &mm_tn(&alpha1_bar, &self.gain, r, r, dx));
                // G = SB S⁻¹.
                let mut sb_bar = mm_nt(&g_bar, s_inv, r, dx, dx);
                let s_inv_bar = mm_tn(sb, &g_bar, r, dx, dx);
                let s_bar = inverse_backward(s_inv, &s_inv_bar, dx);
                // S = Beᵀ SB + diag(σ²).
                for j in 0..dx {
                    var_bar[j] += s_bar[j * dx + j];
                }
                add_to(be_bar, &mm_nt(sb, &s_bar, r, dx, dx));
                add_to(&mut sb_bar, &mm(be, &s_bar, r, dx, dx));
                // SB = Σ Be.
                add_to(&mut sigma_bar, &mm_nt(&sb_bar, be, r, dx, r));
                add_to(be_bar, &mm_tn(sigma, &sb_bar, r, r, dx));
                // Σ = L Lᵀ.
                let sym = plus_transpose(&sigma_bar, r);
                let mut lb = mm(&sym, &self.l, r, r, r);
                keep_lower(&mut lb, r);
                add_to(l_bar, &lb);
            }
            Branch::LowD { linv, bv } => {
                // G = V BV.
                add_to(&mut vq_bar, &mm_nt(&g_bar, bv, r, dx, r));
                let mut bv_bar = mm_tn(&self.vq, &g_bar, r, r, dx);
                // V = A⁻¹, A = Σ⁻¹ + BV Beᵀ.
                let a_bar = inverse_backward(&self.vq, &vq_bar, r);
                add_to(&mut bv_bar, &mm(&a_bar, be, r, r, dx));
                add_to(be_bar, &mm_tn(&a_bar, bv, r, r, dx));
                // BV = Be diag(σ⁻²).
                for i in 0..r {
                    for l in 0..dx {
                        let g = bv_bar[i * dx + l];
                        be_bar[i * dx + l] += g / var_x[l];
                        var_bar[l] -= g * be[i * dx + l] / (var_x[l] * var_x[l]);
                    }
                }
                // Σ⁻¹ = L⁻ᵀ L⁻¹.
                let sym = plus_transpose(&a_bar, r);
                let linv_bar = mm(linv, &sym, r, r, r);
                add_to(l_bar, &lower_inverse_backward(linv, &linv_bar, r));
            }
        }
    }
}

/// Compute the derived quantities from the flat parameter vector.
pub(super) fn derive(c: &ModelConfig, params: &[f64]) -> Result<Derived, VsmcError> {
    let layout = c.layout();
    let (r, n, dx, du) = (c.rank, c.n_units, c.dim_x, c.dim_u);
    let block = |name: &str| {
        layout
            .get(name)
            .map(|b| b.offset)
            .ok_or_else(|| VsmcError::Params(format!("the model has no parameter block {name}")))
    };
    let needs_m = c.readout_from == ReadoutFrom::Currents || (du > 0 && !c.simulate_input);
    let offsets = Offsets {
        rz: block("rnn.R_z")?,
        rz0: block("rnn.R_z_t0")?,
        rx: block("rnn.R_x")?,
        m: if needs_m {
            Some(block("rnn.transition.m")?)
        } else {
            None
        },
        b: block("rnn.observation.B")?,
    };
    let scalar_noise_x = c.noise_x == NoiseKind::Scalar;
    let one_to_one = c.observation == Observation::OneToOne;
    let lz = chol_embed(&params[offsets.rz..offsets.rz + r * r], r);
    let lz0 = chol_embed(&params[offsets.rz0..offsets.rz0 + r * r], r);
    let mut var_x = Vec::with_capacity(dx);
    let mut var_clipped = Vec::with_capacity(dx);
    let mut std_x = Vec::with_capacity(dx);
    for j in 0..dx {
        let raw = params[offsets.rx + if scalar_noise_x { 0 } else { j }];
        let var = raw.exp();
        var_clipped.push(var < MIN_VAR);
        var_x.push(var.max(MIN_VAR));
        std_x.push((raw * 0.5).exp());
    }
    let m = offsets.m.map(|o| params[o..o + n * r].to_vec());
    let (bobs, be) = if one_to_one {
        let bobs = params[offsets.b..offsets.b + dx].to_vec();
        let m = m.as_ref().ok_or_else(|| {
            VsmcError::Params("a one_to_one observation needs the loading m".into())
        })?;
        let mut be = vec![0.0; r * dx];
        for k in 0..r {
            for j in 0..dx {
                be[k * dx + j] = bobs[j] * m[j * r + k];
            }
        }
        (bobs, be)
    } else {
        let b = params[offsets.b..offsets.b + r * dx].to_vec();
        (b.clone(), b)
    };
    let k0 = kalman(&lz0, &be, &var_x, r, dx)?;
    let k1 = kalman(&lz, &be, &var_x, r, dx)?;
    let alpha_mean = (k0.alpha_mean + k1.alpha_mean) / 2.0;
    let lz_inv = [lower_inverse(&lz0, r), lower_inverse(&lz, r)];
    let proj = if du > 0 && !c.simulate_input {
        let m = m
            .as_ref()
            .ok_or_else(|| VsmcError::Params("an input projection needs the loading m".into()))?;
        let mtm = mm_tn(m, m, n, r, r);
        let inv = inverse(&mtm, r)?;
        let p = mm_nt(&inv, m, r, r, n);
        Some((inv, p))
    } else {
        None
    };
    Ok(Derived {
        r,
        dx,
        n,
        offsets,
        scalar_noise_x,
        one_to_one,
        bobs,
        m,
        var_x,
        var_clipped,
        std_x,
        be,
        kalman: [k0, k1],
        lz_inv,
        proj,
        alpha_mean,
    })
}

impl Derived {
    /// The values the hot loop reads.
    pub fn values(&self) -> DerivedValues {
        let r = self.r;
        let [k0, k1] = &self.kalman;
        DerivedValues {
            oma: [k0.oma.clone(), k1.oma.clone()],
            gain: [k0.gain.clone(), k1.gain.clone()],
            lq: [k0.lq.clone(), k1.lq.clone()],
            lz_inv: self.lz_inv.clone(),
            lz: k1.l.clone(),
            be: self.be.clone(),
            inv_sd: self.std_x.iter().map(|s| 1.0 / s).collect(),
            inv_var: self.std_x.iter().map(|s| 1.0 / (s * s)).collect(),
            obs_const: self.std_x.iter().map(|s| -s.ln() - 0.5 * LN_2PI).sum(),
            proj: self.proj.as_ref().map(|(_, p)| p.clone()),
            // log q = −½‖ε‖² − logdet_q − R/2 ln 2π ; log p = −½‖y‖² − logdet_z − R/2 ln 2π
            const_q: [
                -logdet_lower(&k0.lq, r) - 0.5 * r as f64 * LN_2PI,
                -logdet_lower(&k1.lq, r) - 0.5 * r as f64 * LN_2PI,
            ],
            const_z: [
                -logdet_lower(&k0.l, r) - 0.5 * r as f64 * LN_2PI,
                -logdet_lower(&k1.l, r) - 0.5 * r as f64 * LN_2PI,
            ],
        }
    }

    /// Carry the adjoints of the derived quantities to the raw parameters, adding into `grad`.
    pub fn backward(&self, adj: &DerivedAdjoint, grad: &mut [f64]) {
        let (r, dx, n) = (self.r, self.dx, self.n);
        let mut be_bar = adj.be.clone();
        let mut var_bar = vec![0.0; dx];
        let mut l_bar = [vec![0.0; r * r], vec![0.0; r * r]];
        for s in 0..2 {
            let k = &self.kalman[s];
            let mut lq_bar = adj.lq[s].clone();
            for i in 0..r {
                lq_bar[i * r + i] += adj.logdet_q[s] / k.lq[i * r + i];
            }
            let inputs = KalmanInputs {
                be: &self.be,
                var_x: &self.var_x,
                r,
                dx,
            };
            k.backward(
                &adj.oma[s],
                &adj.gain[s],
                &lq_bar,
                &inputs,
                KalmanAdjoints {
                    l: &mut l_bar[s],
                    be: &mut be_bar,
                    var: &mut var_bar,
                },
            );
            add_to(
                &mut l_bar[s],
                &lower_inverse_backward(&self.lz_inv[s], &adj.lz_inv[s], r),
            );
            for i in 0..r {
                l_bar[s][i * r + i] += adj.logdet_z[s] / k.l[i * r + i];
            }
        }
        let mut lz_adj = adj.lz.clone();
        keep_lower(&mut lz_adj, r);
        add_to(&mut l_bar[1], &lz_adj);
        // Noise factors: strict lower as is, diagonal exp(½ raw).
        for (s, off) in [(0, self.offsets.rz0), (1, self.offsets.rz)] {
            let l = &self.kalman[s].l;
            for i in 0..r {
                for j in 0..i {
                    grad[off + i * r + j] += l_bar[s][i * r + j];
                }
                grad[off + i * r + i] += l_bar[s][i * r + i] * l[i * r + i] * 0.5;
            }
        }
        // Observation noise: σ² = max(exp(raw), floor), σ = exp(½ raw).
        for j in 0..dx {
            let mut g = adj.std_x[j] * self.std_x[j] * 0.5;
            if !self.var_clipped[j] {
                g += var_bar[j] * self.var_x[j];
            }
            grad[self.offsets.rx + if self.scalar_noise_x { 0 } else { j }] += g;
        }
        let mut m_bar = self.m.as_ref().map(|m| vec![0.0; m.len()]);
        if self.one_to_one {
            if let (Some(m), Some(mb)) = (&self.m, m_bar.as_mut()) {
                for k in 0..r {
                    for j in 0..dx {
                        let g = be_bar[k * dx + j];
                        grad[self.offsets.b + j] += g * m[j * r + k];
                        mb[j * r + k] += g * self.bobs[j];
                    }
                }
            }
        } else {
            add_to(&mut grad[self.offsets.b..self.offsets.b + r * dx], &be_bar);
        }
        if let (Some((inv, _)), Some(m), Some(mb)) = (&self.proj, &self.m, m_bar.as_mut()) {
            // P = (MᵀM)⁻¹ Mᵀ.
            let p_bar = &adj.proj;
            add_to(mb, &mm_tn(p_bar, inv, r, n, r));
            let inv_bar = mm(p_bar, m, r, n, r);
            let mtm_bar = inverse_backward(inv, &inv_bar, r);
            let sym = plus_transpose(&mtm_bar, r);
            add_to(mb, &mm(m, &sym, n, r, r));
        }
        if let (Some(off), Some(mb)) = (self.offsets.m, m_bar) {
            add_to(&mut grad[off..off + n * r], &mb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The scalar-tape version this module replaced (verbatim but for its signature): the
    /// reference the matrix-level pass must equal.
    mod reference {
        use super::super::{DerivedAdjoint, DerivedValues, MIN_VAR};
        use crate::inference::optimal::VsmcError;
        use crate::inference::tape::{Tape, Var};
        use crate::model::lowrank::{ModelConfig, NoiseKind, Observation, ReadoutFrom};
        const LN_2PI: f64 = 1.837_877_066_409_345_5;

        /// (1 − α, Kalman gain, Cholesky factor of the proposal covariance) on the tape.
        type KalmanVars = (Vec<Var>, Vec<Var>, Vec<Var>);
        /// The time-independent quantities, as tape variables and values.
        pub struct Derived {
            tape: Tape,
            // [0]: t = 0 set (Σ_0), [1]: t ≥ 1 set (Σ_z)
            oma: [Vec<Var>; 2],
            gain: [Vec<Var>; 2],
            lq: [Vec<Var>; 2],
            logdet_q: [Var; 2],
            lz_inv: [Vec<Var>; 2],
            logdet_z: [Var; 2],
            lz: Vec<Var>,
            be: Vec<Var>,
            std_x: Vec<Var>,
            proj: Option<Vec<Var>>,
            pub alpha_mean: f64,
            // leaves → layout offsets
            leaves: Vec<(Var, usize)>,
        }

        /// Build the tape of time-independent quantities.
        pub fn derive(c: &ModelConfig, params: &[f64]) -> Result<Derived, VsmcError> {
            let layout = c.layout();
            let (r, n, dx, du) = (c.rank, c.n_units, c.dim_x, c.dim_u);
            let mut t = Tape::new();
            let mut leaves = Vec::new();
            let mut leaf_block = |t: &mut Tape, name: &str| -> Vec<Var> {
                let b = layout.get(name).expect("block exists");
                let vars = t.leaves(&params[b.range()]);
                for (i, &v) in vars.iter().enumerate() {
                    leaves.push((v, b.offset + i));
                }
                vars
            };
            let rz = leaf_block(&mut t, "rnn.R_z");
            let rz0 = leaf_block(&mut t, "rnn.R_z_t0");
            let rx = leaf_block(&mut t, "rnn.R_x");
            let needs_m = c.readout_from == ReadoutFrom::Currents || (du > 0 && !c.simulate_input);
            let m = if needs_m {
                Some(leaf_block(&mut t, "rnn.transition.m"))
            } else {
                None
            };
            let bobs = leaf_block(&mut t, "rnn.observation.B");
            let zero = t.leaf(0.0);
            let chol_embed = |t: &mut Tape, raw: &[Var]| -> Vec<Var> {
                let mut l = vec![zero; r * r];
                for i in 0..r {
                    for j in 0..i {
                        l[i * r + j] = raw[i * r + j];
                    }
                    let h = t.scale(raw[i * r + i], 0.5);
                    l[i * r + i] = t.exp(h);
                }
                l
            };
            let lz = chol_embed(&mut t, &rz);
            let lz0 = chol_embed(&mut t, &rz0);
            // Observation variance (clipped for the gain) and std (unclipped, for the likelihood).
            let (var_x, std_x): (Vec<Var>, Vec<Var>) = (0..dx)
                .map(|j| {
                    let raw = if c.noise_x == NoiseKind::Scalar {
                        rx[0]
                    } else {
                        rx[j]
                    };
                    let var = t.exp(raw);
                    let clipped = t.clip_min(var, MIN_VAR);
                    let half = t.scale(raw, 0.5);
                    (clipped, t.exp(half))
                })
                .unzip();
            let be: Vec<Var> = match c.observation {
                Observation::Affine => bobs.clone(),
                Observation::OneToOne => {
                    let m = m.as_ref().expect("m leaves");
                    let mut be = vec![zero; r * dx];
                    for k in 0..r {
                        for j in 0..dx {
                            be[k * dx + j] = t.mul(bobs[j], m[j * r + k]);
                        }
                    }
                    be
                }
            };
            let high_d = dx < 4 * r;
            let mut alpha_sum = 0.0;
            let mut kalman = |t: &mut Tape, l: &[Var]| -> Result<KalmanVars, VsmcError> {
                let one = t.leaf(1.0);
                let eye = |i: usize| if i / r == i % r { one } else { zero };
                let be_t = Tape::transpose(&be, r, dx);
                let (gain, var_q) = if high_d {
                    let lt = Tape::transpose(l, r, r);
                    let sigma = t.matmul(l, &lt, r, r, r);
                    let sb = t.matmul(&sigma, &be, r, r, dx);
                    let mut s = t.matmul(&be_t, &sb, dx, r, dx);
                    for j in 0..dx {
                        s[j * dx + j] = t.add(s[j * dx + j], var_x[j]);
                    }
                    let s_inv = t.inverse(&s, dx)?;
                    let gain = t.matmul(&sb, &s_inv, r, dx, dx);
                    let alpha = t.matmul(&gain, &be_t, r, dx, r);
                    let oma: Vec<Var> = (0..r * r)
                        .map(|i| {
                            let e = eye(i);
                            t.sub(e, alpha[i])
                        })
                        .collect();
                    let oma_t = Tape::transpose(&oma, r, r);
                    let a1 = t.matmul(&oma, &sigma, r, r, r);
                    let a2 = t.matmul(&a1, &oma_t, r, r, r);
                    let kv: Vec<Var> = (0..r * dx).map(|i| t.mul(gain[i], var_x[i % dx])).collect();
                    let gain_t = Tape::transpose(&gain, r, dx);
                    let a3 = t.matmul(&kv, &gain_t, r, dx, r);
                    let vq: Vec<Var> = (0..r * r).map(|i| t.add(a2[i], a3[i])).collect();
                    (gain, vq)
                } else {
                    let linv = t.lower_inverse(l, r);
                    let linv_t = Tape::transpose(&linv, r, r);
                    let sigma_inv = t.matmul(&linv_t, &linv, r, r, r);
                    let bv: Vec<Var> = (0..r * dx).map(|i| t.div(be[i], var_x[i % dx])).collect();
                    let bvb = t.matmul(&bv, &be_t, r, dx, r);
                    let a: Vec<Var> = (0..r * r).map(|i| t.add(sigma_inv[i], bvb[i])).collect();
                    let vq = t.inverse(&a, r)?;
                    let gain = t.matmul(&vq, &bv, r, r, dx);
                    (gain, vq)
                };
                let alpha = t.matmul(&gain, &be_t, r, dx, r);
                alpha_sum += alpha.iter().map(|&v| t.value(v)).sum::<f64>() / (r * r) as f64;
                let oma: Vec<Var> = (0..r * r)
                    .map(|i| {
                        let e = eye(i);
                        t.sub(e, alpha[i])
                    })
                    .collect();
                // Symmetrise, add 1e-8 I, Cholesky.
                let mut sym = vec![zero; r * r];
                for i in 0..r {
                    for j in 0..r {
                        let s = t.add(var_q[i * r + j], var_q[j * r + i]);
                        let mut s = t.scale(s, 0.5);
                        if i == j {
                            s = t.add_const(s, 1e-8);
                        }
                        sym[i * r + j] = s;
                    }
                }
                let lq = t.cholesky(&sym, r)?;
                Ok((oma, gain, lq))
            };
            let (oma0, gain0, lq0) = kalman(&mut t, &lz0)?;
            let (oma1, gain1, lq1) = kalman(&mut t, &lz)?;
            let logdet = |t: &mut Tape, l: &[Var]| {
                let logs: Vec<Var> = (0..r).map(|i| t.ln(l[i * r + i])).collect();
                t.sum(&logs)
            };
            let logdet_q = [logdet(&mut t, &lq0), logdet(&mut t, &lq1)];
            let logdet_z = [logdet(&mut t, &lz0), logdet(&mut t, &lz)];
            let lz_inv = [t.lower_inverse(&lz0, r), t.lower_inverse(&lz, r)];
            let proj = if du > 0 && !c.simulate_input {
                let m = m.as_ref().expect("m leaves");
                let mt = Tape::transpose(m, n, r);
                let mtm = t.matmul(&mt, m, r, n, r);
                let inv = t.inverse(&mtm, r)?;
                Some(t.matmul(&inv, &mt, r, r, n))
            } else {
                None
            };
            Ok(Derived {
                tape: t,
                oma: [oma0, oma1],
                gain: [gain0, gain1],
                lq: [lq0, lq1],
                logdet_q,
                lz_inv,
                logdet_z,
                lz,
                be,
                std_x,
                proj,
                alpha_mean: alpha_sum / 2.0,
                leaves,
            })
        }

        impl Derived {
            pub fn values(&self, r: usize) -> DerivedValues {
                let v = |xs: &[Var]| xs.iter().map(|&x| self.tape.value(x)).collect::<Vec<f64>>();
                let std_x = v(&self.std_x);
                DerivedValues {
                    oma: [v(&self.oma[0]), v(&self.oma[1])],
                    gain: [v(&self.gain[0]), v(&self.gain[1])],
                    lq: [v(&self.lq[0]), v(&self.lq[1])],
                    lz_inv: [v(&self.lz_inv[0]), v(&self.lz_inv[1])],
                    lz: v(&self.lz),
                    be: v(&self.be),
                    inv_sd: std_x.iter().map(|s| 1.0 / s).collect(),
                    inv_var: std_x.iter().map(|s| 1.0 / (s * s)).collect(),
                    obs_const: std_x.iter().map(|s| -s.ln() - 0.5 * LN_2PI).sum(),
                    proj: self.proj.as_ref().map(|p| v(p)),
                    // log q = −½‖ε‖² − logdet_q − R/2 ln 2π ; log p = −½‖y‖² − logdet_z − R/2 ln 2π
                    const_q: [
                        -self.tape.value(self.logdet_q[0]) - 0.5 * r as f64 * LN_2PI,
                        -self.tape.value(self.logdet_q[1]) - 0.5 * r as f64 * LN_2PI,
                    ],
                    const_z: [
                        -self.tape.value(self.logdet_z[0]) - 0.5 * r as f64 * LN_2PI,
                        -self.tape.value(self.logdet_z[1]) - 0.5 * r as f64 * LN_2PI,
                    ],
                }
            }

            /// Seed the tape with the adjoints and add the leaves' gradients into `grad`.
            pub fn backward(&self, adj: &DerivedAdjoint, grad: &mut [f64]) {
                let mut seeds = Vec::new();
                let mut push = |vars: &[Var], a: &[f64]| {
                    for (&v, &g) in vars.iter().zip(a) {
                        if g != 0.0 {
                            seeds.push((v, g));
                        }
                    }
                };
                for s in 0..2 {
                    push(&self.oma[s], &adj.oma[s]);
                    push(&self.gain[s], &adj.gain[s]);
                    push(&self.lq[s], &adj.lq[s]);
                    push(&self.lz_inv[s], &adj.lz_inv[s]);
                    push(&[self.logdet_q[s]], &[adj.logdet_q[s]]);
                    push(&[self.logdet_z[s]], &[adj.logdet_z[s]]);
                }
                push(&self.lz, &adj.lz);
                push(&self.be, &adj.be);
                push(&self.std_x, &adj.std_x);
                if let Some(p) = &self.proj {
                    push(p, &adj.proj);
                }
                let all = self.tape.backward(&seeds);
                for &(v, off) in &self.leaves {
                    grad[off] += all[v];
                }
            }
        }
    }

    fn config(
        rank: usize,
        n: usize,
        dx: usize,
        du: usize,
        one_to_one: bool,
        scalar: bool,
    ) -> ModelConfig {
        let mut c = ModelConfig::eeg(dx);
        c.rank = rank;
        c.n_units = n;
        c.dim_u = du;
        c.noise_x = if scalar {
            NoiseKind::Scalar
        } else {
            NoiseKind::Diag
        };
        if one_to_one {
            c.observation = Observation::OneToOne;
            c.readout_from = ReadoutFrom::Currents;
        } else {
            c.observation = Observation::Affine;
            c.readout_from = ReadoutFrom::Z;
        }
        c
    }

    fn random_params(c: &ModelConfig, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let layout = c.layout();
        let mut p = vec![0.0; layout.len()];
        for b in layout.blocks() {
            for v in &mut p[b.range()] {
                *v = rng.gen_range(-0.6..0.6);
            }
        }
        p
    }

    fn random_adjoint(r: usize, dx: usize, n: usize, rng: &mut ChaCha8Rng) -> DerivedAdjoint {
        let mut a = DerivedAdjoint::zeros(r, dx, n);
        let mut fill = |v: &mut [f64]| v.iter_mut().for_each(|x| *x = rng.gen_range(-1.0..1.0));
        for s in 0..2 {
            fill(&mut a.oma[s]);
            fill(&mut a.gain[s]);
            fill(&mut a.lq[s]);
            fill(&mut a.lz_inv[s]);
        }
        fill(&mut a.lz);
        fill(&mut a.be);
        fill(&mut a.std_x);
        fill(&mut a.proj);
        a.logdet_q = [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)];
        a.logdet_z = [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)];
        a
    }

    fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= rel * scale,
                "{what}[{i}]: matrix {x:e} vs tape {y:e} (scale {scale:e})"
            );
        }
    }

    /// Values bit-identical and gradients equal to 1e-11 (relative to the largest entry; 1e-8
    /// where the floor makes a matrix ill-conditioned) to the
    /// scalar tape, on both Kalman branches (dx < 4R and not), affine and one-to-one readouts,
    /// scalar and diagonal observation noise, with and without the input projection, and with
    /// observation variances below the floor (clipped: no gradient through the variance).
    #[test]
    fn matrix_pass_equals_the_scalar_tape() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cases = [
            (3, 40, 12, 0, false, false), // low-d branch (12 ≥ 12)
            (3, 40, 11, 2, false, false), // high-d branch, input projection
            (4, 9, 9, 0, true, false),    // one-to-one readout from currents
            (2, 6, 6, 1, true, true),     // one-to-one, scalar noise, projection
            (6, 6, 10, 0, false, true),   // full-rank-like, high-d
            (5, 20, 64, 3, false, false), // low-d, wide observation
        ];
        for (case, &(r, n, dx, du, oto, scalar)) in cases.iter().enumerate() {
            let c = config(r, n, dx, du, oto, scalar);
            let mut params = random_params(&c, &mut rng);
            if case == 1 {
                // Two observation variances under the floor.
                let off = c.layout().get("rnn.R_x").expect("R_x").offset;
                params[off] = -25.0;
                params[off + 3] = -30.0;
            }
            let ours = derive(&c, &params).expect("matrix derive");
            let tape = reference::derive(&c, &params).expect("tape derive");
            let (a, b) = (ours.values(), tape.values(r));
            for s in 0..2 {
                assert_eq!(a.oma[s], b.oma[s], "case {case}: oma[{s}]");
                assert_eq!(a.gain[s], b.gain[s], "case {case}: gain[{s}]");
                assert_eq!(a.lq[s], b.lq[s], "case {case}: lq[{s}]");
                assert_eq!(a.lz_inv[s], b.lz_inv[s], "case {case}: lz_inv[{s}]");
                assert_eq!(a.const_q[s], b.const_q[s], "case {case}: const_q[{s}]");
                assert_eq!(a.const_z[s], b.const_z[s], "case {case}: const_z[{s}]");
            }
            assert_eq!(a.lz, b.lz, "case {case}: lz");
            assert_eq!(a.be, b.be, "case {case}: be");
            assert_eq!(a.inv_sd, b.inv_sd, "case {case}: inv_sd");
            assert_eq!(a.obs_const, b.obs_const, "case {case}: obs_const");
            assert_eq!(a.proj, b.proj, "case {case}: proj");
            assert_eq!(ours.alpha_mean, tape.alpha_mean, "case {case}: alpha");
            assert_eq!(a.proj.is_some(), du > 0, "case {case}: projection present");
            for rep in 0..3 {
                let adj = random_adjoint(r, dx, n, &mut rng);
                let mut g_ours = vec![0.0; params.len()];
                let mut g_tape = vec![0.0; params.len()];
                ours.backward(&adj, &mut g_ours);
                tape.backward(&adj, &mut g_tape);
                assert!(
                    g_tape.iter().any(|&g| g != 0.0),
                    "case {case}: zero gradient"
                );
                // Two variances at the 1e-8 floor make S's condition number ≈ 1e8, which the
                // different summation orders of the two reverse passes feel.
                let tol = if case == 1 { 1e-8 } else { 1e-11 };
                assert_close(
                    &format!("case {case} rep {rep}: gradient"),
                    &g_ours,
                    &g_tape,
                    tol,
                );
            }
        }
    }

    /// Above the size threshold the three products go to `model::gemm`: they equal the plain
    /// loops to rounding (1e-13 of the largest entry), for shapes on both sides of it.
    #[test]
    fn gemm_products_equal_the_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (r, k, c) in [(40, 64, 40), (128, 64, 128), (33, 31, 35), (3, 64, 5)] {
            let a: Vec<f64> = (0..r * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f64> = (0..k * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let at: Vec<f64> = (0..k * r).map(|i| a[(i % r) * k + i / r]).collect();
            let bt: Vec<f64> = (0..c * k).map(|i| b[(i % k) * c + i / k]).collect();
            let want = mm_loops(&a, &b, r, k, c);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (name, got) in [
                ("mm", mm(&a, &b, r, k, c)),
                ("mm_tn", mm_tn(&at, &b, k, r, c)),
                ("mm_nt", mm_nt(&a, &bt, r, k, c)),
                ("mm_tn loops", mm_tn_loops(&at, &b, k, r, c)),
                ("mm_nt loops", mm_nt_loops(&a, &bt, r, k, c)),
            ] {
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-13 * scale,
                        "{name} {r}×{k}×{c}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The Cholesky loop reversed against central differences of a random linear functional.
    #[test]
    fn cholesky_backward_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 5;
        let b: Vec<f64> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut a = mm_nt(&b, &b, n, n, n);
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        let w: Vec<f64> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let f = |a: &[f64]| -> f64 {
            let l = cholesky(a, n).expect("pd");
            l.iter().zip(&w).map(|(x, y)| x * y).sum()
        };
        let l = cholesky(&a, n).expect("pd");
        let g = cholesky_backward(&l, &w, n);
        for i in 0..n {
            for j in 0..n {
                let h = 1e-6;
                let (mut ap, mut am) = (a.clone(), a.clone());
                ap[i * n + j] += h;
                am[i * n + j] -= h;
                let fd = (f(&ap) - f(&am)) / (2.0 * h);
                assert!(
                    (fd - g[i * n + j]).abs() < 1e-7,
                    "[{i},{j}]: reverse {} vs central difference {fd}",
                    g[i * n + j]
                );
            }
        }
    }
}
