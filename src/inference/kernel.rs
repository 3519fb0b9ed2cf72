//! The hot loops of the low-rank transition, batched over the K particles of one time step.
//!
//! For particles k = 1..K with previous states z_k (R) the transition mean is
//! μ_k = a z_k + n φ(Mᵀ… ) — precisely `μ_k[q] = a z_k[q] + Σ_i n[q,i] φ(x_ki; h_i)` with
//! `x_ki = Σ_q M[i,q] z_k[q] + e_i`, where e is the (particle-independent) input current.
//! The reverse pass takes dL/dμ_k and accumulates the gradients of M, n, h, e and z_k.
//!
//! Layout chosen for the vector units: M is stored transposed (R × N, `mt`), so that every
//! loop runs over units i in chunks of [`LANES`] with independent accumulators; the rank R is
//! a const generic (dispatched for R ≤ [`MAX_CONST_RANK`]), so the per-chunk state lives in
//! registers. Each chunk of M, n, h is loaded once for all K particles, and in the reverse pass
//! each chunk's gradient accumulators stay in registers across the K particles. Larger ranks
//! (the full-rank baselines) run the wide kernels: one particle at a time, units in blocks,
//! every loop along a contiguous row, with a shortcut for the full-rank model's frozen M = I.
//! Summation order is fixed (lanes, then chunks, then a fixed horizontal sum), so results do
//! not depend on the machine's thread count.

use serde::{Deserialize, Serialize};

pub use super::kernel32::Weights32;
use crate::model::lowrank::{ModelConfig, Nonlinearity, Transition};

/// Arithmetic of the transition kernels (`vsmc.precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f64 (the default; the golden cases match to 1e-9).
    #[default]
    F64,
    /// The O(N) transition (currents, φ, n φ and their reverse pass) in f32, as the reference
    /// runs; everything else in f64. About twice as fast for large N; the golden cases match
    /// to 1e-4.
    F32,
}

impl Precision {
    /// Whether this is the default (f64), for `skip_serializing_if`.
    pub fn is_f64(&self) -> bool {
        *self == Precision::F64
    }
}

/// `match rank { 1 => go!(1), …, 8 => go!(8), _ => fallback }`: the ranks with a
/// specialised (const-generic) kernel, up to [`MAX_CONST_RANK`].
macro_rules! by_rank {
    ($rank:expr, $go:ident, $fallback:expr) => {
        match $rank {
            1 => $go!(1),
            2 => $go!(2),
            3 => $go!(3),
            4 => $go!(4),
            5 => $go!(5),
            6 => $go!(6),
            7 => $go!(7),
            8 => $go!(8),
            _ => $fallback,
        }
    };
}
// Shared with the f32 kernels (`kernel32_avx2.rs`).
pub(super) use by_rank;

/// The nonlinearity as the vector kernels' const parameter (`kernel_avx2.rs`,
/// `kernel32_avx2.rs`).
#[cfg(target_arch = "x86_64")]
pub(super) const NL_RELU: u8 = 0;
#[cfg(target_arch = "x86_64")]
pub(super) const NL_CLIPPED: u8 = 1;
#[cfg(target_arch = "x86_64")]
pub(super) const NL_TANH: u8 = 2;
#[cfg(target_arch = "x86_64")]
pub(super) const NL_IDENTITY: u8 = 3;

/// [`Nonlinearity`] → its `NL_*` code.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn nl_code(nl: Nonlinearity) -> u8 {
    match nl {
        Nonlinearity::Relu => NL_RELU,
        Nonlinearity::ClippedRelu => NL_CLIPPED,
        Nonlinearity::Tanh => NL_TANH,
        Nonlinearity::Identity => NL_IDENTITY,
    }
}

/// The vector kernels' dispatch: `$f::<R, NL, $wide> $args` with the rank `$w.rank` (1–8) and
/// the code of the nonlinearity `$w.nonlinearity` as consts; `true` when it ran, `false` for
/// other ranks.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rank_and_nl {
    ($w:expr, $f:ident, $wide:literal, $args:tt) => {
        by_rank_and_nl!(@ranks $w, $f, $wide, $args, [1 2 3 4 5 6 7 8])
    };
    (@ranks $w:expr, $f:ident, $wide:literal, $args:tt, [$($r:literal)*]) => {{
        use $crate::inference::kernel::{nl_code, NL_CLIPPED, NL_IDENTITY, NL_RELU, NL_TANH};
        match $w.rank {
            $($r => {
                match nl_code($w.nonlinearity) {
                    NL_RELU => $f::<$r, NL_RELU, $wide> $args,
                    NL_CLIPPED => $f::<$r, NL_CLIPPED, $wide> $args,
                    NL_TANH => $f::<$r, NL_TANH, $wide> $args,
                    _ => $f::<$r, NL_IDENTITY, $wide> $args,
                }
                true
            })*
            _ => false,
        }
    }};
}
#[cfg(target_arch = "x86_64")]
pub(super) use by_rank_and_nl;

#[cfg(target_arch = "x86_64")]
#[path = "kernel_avx2.rs"]
mod avx2;

/// Units per chunk: sums over units run in 8 independent lanes (unit i in lane i mod 8, for
/// i below N rounded down to 8), so that the vector units are not bound by the latency of one
/// accumulator chain; the remaining units are added in order.
pub const LANES: usize = 8;
/// Largest rank with a specialised kernel.
pub const MAX_CONST_RANK: usize = 8;

/// A unit nonlinearity with branch-free value and derivatives (same formulas as
/// [`Nonlinearity::eval`]).
pub trait Act {
    /// φ(x; h).
    fn f(x: f64, h: f64) -> f64;
    /// (φ, ∂φ/∂x, ∂φ/∂h).
    fn fd(x: f64, h: f64) -> (f64, f64, f64);
}

/// max(x − h, 0).
pub struct Relu;
/// max(x + h, 0) − max(x, 0).
pub struct ClippedRelu;
/// tanh(x − h).
pub struct Tanh;
/// x − h.
pub struct Identity;

impl Act for Relu {
    #[inline(always)]
    fn f(x: f64, h: f64) -> f64 {
        (x - h).max(0.0)
    }
    #[inline(always)]
    fn fd(x: f64, h: f64) -> (f64, f64, f64) {
        let on = if x - h > 0.0 { 1.0 } else { 0.0 };
        ((x - h) * on, on, -on)
    }
}

impl Act for ClippedRelu {
    #[inline(always)]
    fn f(x: f64, h: f64) -> f64 {
        (x + h).max(0.0) - x.max(0.0)
    }
    #[inline(always)]
    fn fd(x: f64, h: f64) -> (f64, f64, f64) {
        let a = if x + h > 0.0 { 1.0 } else { 0.0 };
        let b = if x > 0.0 { 1.0 } else { 0.0 };
        ((x + h).max(0.0) - x.max(0.0), a - b, a)
    }
}

impl Act for Tanh {
    #[inline(always)]
    fn f(x: f64, h: f64) -> f64 {
        (x - h).tanh()
    }
    #[inline(always)]
    fn fd(x: f64, h: f64) -> (f64, f64, f64) {
        let t = (x - h).tanh();
        let d = 1.0 - t * t;
        (t, d, -d)
    }
}

impl Act for Identity {
    #[inline(always)]
    fn f(x: f64, h: f64) -> f64 {
        x - h
    }
    #[inline(always)]
    fn fd(x: f64, h: f64) -> (f64, f64, f64) {
        (x - h, 1.0, -1.0)
    }
}

/// The transition's weights in kernel layout.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    /// Mᵀ, R rows of N, `stride` apart.
    pub mt: &'a [f64],
    /// n, R rows of N, `stride` apart.
    pub n: &'a [f64],
    /// Distance between rows of `mt`, `n` and of the gradients' R × N blocks (≥ N; see
    /// [`row_stride`]).
    pub stride: usize,
    /// h, N.
    pub h: &'a [f64],
    /// Decay a.
    pub decay: f64,
    /// Rank R.
    pub rank: usize,
    /// Nonlinearity.
    pub nonlinearity: Nonlinearity,
    /// The same weights rounded to f32 when the transition runs in single precision
    /// (`vsmc.precision: f32`, [`super::kernel32`]); `None` for f64.
    pub lo: Option<&'a Weights32>,
    /// M is the frozen identity of the full-rank baseline ([`frozen_identity`]): the wide
    /// f64 kernels then take x = z (the same bits as multiplying by I) and leave M's gradient
    /// untouched (it is frozen). The other kernels ignore the flag.
    pub identity_m: bool,
}

/// Whether M (`m`, N × R row-major) is the frozen identity of the full-rank transition
/// (`transition: full_rank`, N = R, every entry exactly 0 or 1 on the diagonal).
pub fn frozen_identity(c: &ModelConfig, m: &[f64]) -> bool {
    let r = c.rank;
    c.transition == Transition::FullRank
        && c.n_units == r
        && m.len() == r * r
        && m.iter()
            .enumerate()
            .all(|(i, &v)| v == f64::from(u8::from(i / r == i % r)))
}

/// Row stride for R × N blocks of N units: N rounded up to the chunk, plus one chunk when the
/// rows would otherwise be a multiple of 1 KiB apart. Rows exactly 4 KiB apart (N = 512) make
/// the reverse pass's stores to one row falsely alias the loads from the next (4K aliasing);
/// this padding made the EEG reverse kernel several times faster.
pub fn row_stride(n: usize) -> usize {
    let s = n.div_ceil(LANES) * LANES;
    if (s * std::mem::size_of::<f64>()).is_multiple_of(1024) {
        s + LANES
    } else {
        s
    }
}

/// Copies R rows of N (row-major, contiguous) into rows `stride` apart.
pub fn with_stride(a: &[f64], rows: usize, n: usize, stride: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows.saturating_sub(1) * stride + n];
    for q in 0..rows {
        out[q * stride..q * stride + n].copy_from_slice(&a[q * n..(q + 1) * n]);
    }
    out
}

/// Gradient accumulators of the transition in kernel layout (added into).
pub struct Grads<'a> {
    /// ∂/∂Mᵀ, R rows `stride` apart.
    pub mt: &'a mut [f64],
    /// ∂/∂n, R rows `stride` apart.
    pub n: &'a mut [f64],
    /// ∂/∂h, N.
    pub h: &'a mut [f64],
    /// ∂/∂e (input current), N; `None` when the model has no inputs.
    pub ext: Option<&'a mut [f64]>,
    /// Workspace (K rows of dL/dx, `stride` apart); grown as needed, contents ignored.
    pub work: &'a mut Vec<f64>,
    /// Workspace of the f32 kernels (same role as `work`).
    pub work32: &'a mut Vec<f32>,
}

/// Transition means of K particles: `z` is K × R (previous states), `ext` the input current
/// (N) or `None`, `mu` (K × R) receives the means.
pub fn means(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) {
    if let Some(lo) = w.lo {
        super::kernel32::means(w, lo, z, ext, mu);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        unsafe { means_avx2(w, z, ext, mu) };
        return;
    }
    means_any::<false>(w, z, ext, mu);
}

/// Reverse of [`means`]: given `dmu` (K × R) = dL/dμ, adds the weights' gradients into `g`
/// and dL/dz (through the network, *not* the decay term a·z) into `dz` (K × R).
pub fn means_backward(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    if let Some(lo) = w.lo {
        super::kernel32::backward(w, lo, z, ext, dmu, g, dz);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        unsafe { back_avx2(w, z, ext, dmu, g, dz) };
        return;
    }
    back_any::<false>(w, z, ext, dmu, g, dz);
}

/// Whether the AVX2 + FMA kernels run on this CPU (cached by std after the first call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn fma_available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn means_avx2(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) {
    if !avx2::means(w, z, ext, mu) {
        means_any::<true>(w, z, ext, mu);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn back_avx2(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    if !avx2::backward(w, z, ext, dmu, g, dz) {
        back_any::<true>(w, z, ext, dmu, g, dz);
    }
}

#[inline(always)]
fn means_any<const F: bool>(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) {
    macro_rules! go {
        ($r:literal) => {
            match w.nonlinearity {
                Nonlinearity::Relu => means_r::<$r, Relu, F>(w, z, ext, mu),
                Nonlinearity::ClippedRelu => means_r::<$r, ClippedRelu, F>(w, z, ext, mu),
                Nonlinearity::Tanh => means_r::<$r, Tanh, F>(w, z, ext, mu),
                Nonlinearity::Identity => means_r::<$r, Identity, F>(w, z, ext, mu),
            }
        };
    }
    by_rank!(
        w.rank,
        go,
        match w.nonlinearity {
            Nonlinearity::Relu => means_wide::<Relu, F>(w, z, ext, mu),
            Nonlinearity::ClippedRelu => means_wide::<ClippedRelu, F>(w, z, ext, mu),
            Nonlinearity::Tanh => means_wide::<Tanh, F>(w, z, ext, mu),
            Nonlinearity::Identity => means_wide::<Identity, F>(w, z, ext, mu),
        }
    );
}

#[inline(always)]
fn back_any<const F: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    macro_rules! go {
        ($r:literal) => {
            match w.nonlinearity {
                Nonlinearity::Relu => back_r::<$r, Relu, F>(w, z, ext, dmu, g, dz),
                Nonlinearity::ClippedRelu => back_r::<$r, ClippedRelu, F>(w, z, ext, dmu, g, dz),
                Nonlinearity::Tanh => back_r::<$r, Tanh, F>(w, z, ext, dmu, g, dz),
                Nonlinearity::Identity => back_r::<$r, Identity, F>(w, z, ext, dmu, g, dz),
            }
        };
    }
    by_rank!(
        w.rank,
        go,
        match w.nonlinearity {
            Nonlinearity::Relu => back_wide::<Relu, F>(w, z, ext, dmu, g, dz),
            Nonlinearity::ClippedRelu => back_wide::<ClippedRelu, F>(w, z, ext, dmu, g, dz),
            Nonlinearity::Tanh => back_wide::<Tanh, F>(w, z, ext, dmu, g, dz),
            Nonlinearity::Identity => back_wide::<Identity, F>(w, z, ext, dmu, g, dz),
        }
    );
}

/// a·b + c, fused when `F` (the FMA path) — so results may differ in the last bit between
/// CPUs with and without FMA, never between thread counts.
#[inline(always)]
fn madd<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn hsum(a: &[f64; LANES]) -> f64 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

#[inline(always)]
fn chunk(s: &[f64], at: usize) -> &[f64; LANES] {
    // Infallible: callers pass at + LANES ≤ len.
    s[at..at + LANES].try_into().expect("chunk in range")
}

#[inline(always)]
fn chunk_mut(s: &mut [f64], at: usize) -> &mut [f64; LANES] {
    (&mut s[at..at + LANES]).try_into().expect("chunk in range")
}

#[inline(always)]
fn means_r<const R: usize, A: Act, const F: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) {
    let n = w.h.len();
    let st = w.stride;
    let k = z.len() / R;
    let full = n / LANES * LANES;
    for kk in 0..k {
        let zk: &[f64; R] = z[kk * R..kk * R + R].try_into().expect("R states");
        let mut acc = [[0.0f64; LANES]; R];
        let mut base = 0;
        while base < full {
            let h = chunk(w.h, base);
            let mut x = match ext {
                Some(e) => *chunk(e, base),
                None => [0.0; LANES],
            };
            for q in 0..R {
                let mt = chunk(w.mt, q * st + base);
                for l in 0..LANES {
                    x[l] = madd::<F>(mt[l], zk[q], x[l]);
                }
            }
            let mut phi = [0.0; LANES];
            for l in 0..LANES {
                phi[l] = A::f(x[l], h[l]);
            }
            for q in 0..R {
                let nn = chunk(w.n, q * st + base);
                for l in 0..LANES {
                    acc[q][l] = madd::<F>(nn[l], phi[l], acc[q][l]);
                }
            }
            base += LANES;
        }
        let mut tail = [0.0f64; R];
        for i in full..n {
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            for q in 0..R {
                x = madd::<F>(w.mt[q * st + i], zk[q], x);
            }
            let phi = A::f(x, w.h[i]);
            for q in 0..R {
                tail[q] = madd::<F>(w.n[q * st + i], phi, tail[q]);
            }
        }
        for q in 0..R {
            mu[kk * R + q] = madd::<F>(w.decay, zk[q], hsum(&acc[q]) + tail[q]);
        }
    }
}

/// The reverse pass, batched over particles: for each chunk of units the gradient
/// accumulators of M, n, h (and the input current) stay in registers across the K particles;
/// dL/dx of the units goes to `g.work` (K rows, `stride` apart) and a second sweep turns it
/// into dL/dz = M dL/dx. Summation orders: per unit, particles in order; per dL/dz entry,
/// lanes over chunks then `hsum`, then the tail units in order.
#[inline(always)]
fn back_r<const R: usize, A: Act, const F: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    let n = w.h.len();
    let st = w.stride;
    let k = z.len() / R;
    let full = n / LANES * LANES;
    if g.work.len() < k * st {
        g.work.resize(k * st, 0.0);
    }
    let mut base = 0;
    while base < full {
        let h = *chunk(w.h, base);
        let e = match ext {
            Some(e) => *chunk(e, base),
            None => [0.0; LANES],
        };
        let mut gmt = [[0.0; LANES]; R];
        let mut gn = [[0.0; LANES]; R];
        for q in 0..R {
            gmt[q] = *chunk(g.mt, q * st + base);
            gn[q] = *chunk(g.n, q * st + base);
        }
        let mut gh = *chunk(g.h, base);
        let mut ge = [0.0; LANES];
        for kk in 0..k {
            let zk: &[f64; R] = z[kk * R..kk * R + R].try_into().expect("R states");
            let dk: &[f64; R] = dmu[kk * R..kk * R + R].try_into().expect("R adjoints");
            let mut x = e;
            let mut dr = [0.0; LANES];
            for q in 0..R {
                let mt = chunk(w.mt, q * st + base);
                let nn = chunk(w.n, q * st + base);
                for l in 0..LANES {
                    x[l] = madd::<F>(mt[l], zk[q], x[l]);
                    dr[l] = madd::<F>(nn[l], dk[q], dr[l]);
                }
            }
            let dxu = chunk_mut(g.work, kk * st + base);
            for l in 0..LANES {
                let (phi, dphi_dx, dphi_dh) = A::fd(x[l], h[l]);
                gh[l] = madd::<F>(dr[l], dphi_dh, gh[l]);
                dxu[l] = dr[l] * dphi_dx;
                ge[l] += dxu[l];
                for q in 0..R {
                    gn[q][l] = madd::<F>(dk[q], phi, gn[q][l]);
                    gmt[q][l] = madd::<F>(dxu[l], zk[q], gmt[q][l]);
                }
            }
        }
        for q in 0..R {
            *chunk_mut(g.mt, q * st + base) = gmt[q];
            *chunk_mut(g.n, q * st + base) = gn[q];
        }
        *chunk_mut(g.h, base) = gh;
        if let Some(gext) = g.ext.as_deref_mut() {
            let d = chunk_mut(gext, base);
            for l in 0..LANES {
                d[l] += ge[l];
            }
        }
        base += LANES;
    }
    for i in full..n {
        for kk in 0..k {
            let zk = &z[kk * R..kk * R + R];
            let dk = &dmu[kk * R..kk * R + R];
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            let mut dr = 0.0;
            for q in 0..R {
                x = madd::<F>(w.mt[q * st + i], zk[q], x);
                dr = madd::<F>(w.n[q * st + i], dk[q], dr);
            }
            let (phi, dphi_dx, dphi_dh) = A::fd(x, w.h[i]);
            g.h[i] = madd::<F>(dr, dphi_dh, g.h[i]);
            let dxu = dr * dphi_dx;
            g.work[kk * st + i] = dxu;
            if let Some(gext) = g.ext.as_deref_mut() {
                gext[i] += dxu;
            }
            for q in 0..R {
                g.n[q * st + i] = madd::<F>(dk[q], phi, g.n[q * st + i]);
                g.mt[q * st + i] = madd::<F>(dxu, zk[q], g.mt[q * st + i]);
            }
        }
    }
    // dL/dz_k = Mᵀ-rows · dL/dx_k
    for kk in 0..k {
        let dxu = &g.work[kk * st..kk * st + n];
        for q in 0..R {
            let row = &w.mt[q * st..q * st + n];
            let mut acc = [0.0; LANES];
            let mut base = 0;
            while base < full {
                let (m, d) = (chunk(row, base), chunk(dxu, base));
                for l in 0..LANES {
                    acc[l] = madd::<F>(m[l], d[l], acc[l]);
                }
                base += LANES;
            }
            let mut tail = 0.0;
            for i in full..n {
                tail = madd::<F>(row[i], dxu[i], tail);
            }
            dz[kk * R + q] += hsum(&acc) + tail;
        }
    }
}

/// Units per block of the wide-rank kernels (their per-block state lives on the stack).
const WIDE_BLOCK: usize = 64;

/// Σ a_i b_i in [`LANES`] lanes, then [`hsum`], then the tail in order.
#[inline(always)]
fn dot_lanes<const F: bool>(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let full = len / LANES * LANES;
    let mut acc = [0.0; LANES];
    let mut base = 0;
    while base < full {
        let (x, y) = (chunk(a, base), chunk(b, base));
        for l in 0..LANES {
            acc[l] = madd::<F>(x[l], y[l], acc[l]);
        }
        base += LANES;
    }
    let mut tail = 0.0;
    for i in full..len {
        tail = madd::<F>(a[i], b[i], tail);
    }
    hsum(&acc) + tail
}

/// y += s · x, elementwise (vectorises; each element gets one `madd`).
#[inline(always)]
fn axpy<const F: bool>(y: &mut [f64], x: &[f64], s: f64) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = madd::<F>(*xi, s, *yi);
    }
}

/// Ranks above [`MAX_CONST_RANK`] (e.g. the full-rank baselines, R = N = 30 or 128): one
/// particle at a time, units in blocks of [`WIDE_BLOCK`], every inner loop running along a
/// contiguous row of Mᵀ or n so that it vectorises. Summation order per μ entry: lanes within
/// a block, blocks in order, then the decay term.
#[inline(always)]
fn means_wide<A: Act, const F: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) {
    let (n, r, st) = (w.h.len(), w.rank, w.stride);
    let k = z.len() / r;
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        let muk = &mut mu[kk * r..(kk + 1) * r];
        muk.iter_mut().for_each(|m| *m = 0.0);
        let mut i0 = 0;
        while i0 < n {
            let len = WIDE_BLOCK.min(n - i0);
            let mut xb = [0.0; WIDE_BLOCK];
            let x = &mut xb[..len];
            if let Some(e) = ext {
                x.copy_from_slice(&e[i0..i0 + len]);
            }
            if w.identity_m {
                for (xv, &zi) in x.iter_mut().zip(&zk[i0..i0 + len]) {
                    *xv += zi;
                }
            } else {
                for (q, &zq) in zk.iter().enumerate() {
                    axpy::<F>(x, &w.mt[q * st + i0..q * st + i0 + len], zq);
                }
            }
            let mut phib = [0.0; WIDE_BLOCK];
            let phi = &mut phib[..len];
            for ((p, &xv), &h) in phi.iter_mut().zip(x.iter()).zip(&w.h[i0..i0 + len]) {
                *p = A::f(xv, h);
            }
            for (q, m) in muk.iter_mut().enumerate() {
                *m += dot_lanes::<F>(&w.n[q * st + i0..q * st + i0 + len], phi);
            }
            i0 += len;
        }
        for (m, &zq) in muk.iter_mut().zip(zk) {
            *m = madd::<F>(w.decay, zq, *m);
        }
    }
}

/// Reverse of [`means_wide`], one particle at a time in blocks of units. Summation orders:
/// per gradient entry, particles in order; per dL/dz entry, blocks in order (lanes within a
/// block, as [`dot_lanes`]).
#[inline(always)]
fn back_wide<A: Act, const F: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    let (n, r, st) = (w.h.len(), w.rank, w.stride);
    let k = z.len() / r;
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        let dk = &dmu[kk * r..(kk + 1) * r];
        let mut i0 = 0;
        while i0 < n {
            let len = WIDE_BLOCK.min(n - i0);
            let blk = i0..i0 + len;
            let mut xb = [0.0; WIDE_BLOCK];
            let x = &mut xb[..len];
            if let Some(e) = ext {
                x.copy_from_slice(&e[blk.clone()]);
            }
            let mut drb = [0.0; WIDE_BLOCK];
            let dr = &mut drb[..len];
            for q in 0..r {
                let row = q * st + i0..q * st + i0 + len;
                if !w.identity_m {
                    axpy::<F>(x, &w.mt[row.clone()], zk[q]);
                }
                axpy::<F>(dr, &w.n[row], dk[q]);
            }
            if w.identity_m {
                for (xv, &zi) in x.iter_mut().zip(&zk[i0..i0 + len]) {
                    *xv += zi;
                }
            }
            let mut phib = [0.0; WIDE_BLOCK];
            let phi = &mut phib[..len];
            let mut dxb = [0.0; WIDE_BLOCK];
            let dxu = &mut dxb[..len];
            let gh = &mut g.h[blk.clone()];
            for b in 0..len {
                let (p, dphi_dx, dphi_dh) = A::fd(x[b], w.h[i0 + b]);
                phi[b] = p;
                gh[b] = madd::<F>(dr[b], dphi_dh, gh[b]);
                dxu[b] = dr[b] * dphi_dx;
            }
            if let Some(gext) = g.ext.as_deref_mut() {
                for (ge, &d) in gext[blk].iter_mut().zip(dxu.iter()) {
                    *ge += d;
                }
            }
            for q in 0..r {
                let row = q * st + i0..q * st + i0 + len;
                axpy::<F>(&mut g.n[row.clone()], phi, dk[q]);
                if !w.identity_m {
                    axpy::<F>(&mut g.mt[row.clone()], dxu, zk[q]);
                    dz[kk * r + q] += dot_lanes::<F>(&w.mt[row], dxu);
                }
            }
            if w.identity_m {
                for (d, &v) in dz[kk * r + i0..kk * r + i0 + len]
                    .iter_mut()
                    .zip(dxu.iter())
                {
                    *d += v;
                }
            }
            i0 += len;
        }
    }
}

/// Runtime-rank path (plain loops), also the reference the specialised kernels are tested
/// against.
#[cfg(test)]
fn means_dyn(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) {
    let (n, r) = (w.h.len(), w.rank);
    let st = w.stride;
    let k = z.len() / r;
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        let muk = &mut mu[kk * r..(kk + 1) * r];
        for q in 0..r {
            muk[q] = 0.0;
        }
        for i in 0..n {
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            for q in 0..r {
                x += w.mt[q * st + i] * zk[q];
            }
            let phi = w.nonlinearity.eval(x, w.h[i]).0;
            for q in 0..r {
                muk[q] += w.n[q * st + i] * phi;
            }
        }
        for q in 0..r {
            muk[q] += w.decay * zk[q];
        }
    }
}

#[cfg(test)]
fn back_dyn(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    let (n, r) = (w.h.len(), w.rank);
    let st = w.stride;
    let k = z.len() / r;
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        let dk = &dmu[kk * r..(kk + 1) * r];
        for i in 0..n {
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            for q in 0..r {
                x += w.mt[q * st + i] * zk[q];
            }
            let (phi, dphi_dx, dphi_dh) = w.nonlinearity.eval(x, w.h[i]);
            let mut dr = 0.0;
            for q in 0..r {
                g.n[q * st + i] += dk[q] * phi;
                dr += w.n[q * st + i] * dk[q];
            }
            g.h[i] += dr * dphi_dh;
            let dxu = dr * dphi_dx;
            if let Some(gext) = g.ext.as_deref_mut() {
                gext[i] += dxu;
            }
            for q in 0..r {
                g.mt[q * st + i] += dxu * zk[q];
                dz[kk * r + q] += w.mt[q * st + i] * dxu;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type BackFn = fn(&Weights<'_>, &[f64], Option<&[f64]>, &[f64], &mut Grads<'_>, &mut [f64]);

    /// (∂M, ∂n, ∂h, ∂e, dz) of [`run_backward`].
    type BackOut = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    /// Runs a reverse kernel into fresh accumulators (∂M starts at 0.5, dz at 0.25, so that
    /// "adds into" is checked; ∂e is present only with an input current): (∂M, ∂n, ∂h, ∂e, dz).
    fn run_backward(
        f: BackFn,
        w: &Weights<'_>,
        z: &[f64],
        ext: Option<&[f64]>,
        dmu: &[f64],
    ) -> BackOut {
        let (r, n) = (w.rank, w.h.len());
        let mut gmt = vec![0.5; (r - 1) * w.stride + n];
        let mut gn = vec![0.0; (r - 1) * w.stride + n];
        let mut gh = vec![0.0; n];
        let mut ge = vec![0.0; n];
        let mut dz = vec![0.25; z.len()];
        let mut g = Grads {
            mt: &mut gmt,
            n: &mut gn,
            h: &mut gh,
            ext: ext.is_some().then_some(ge.as_mut_slice()),
            work: &mut Vec::new(),
            work32: &mut Vec::new(),
        };
        f(w, z, ext, dmu, &mut g, &mut dz);
        (gmt, gn, gh, ge, dz)
    }

    fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    /// The specialised kernels equal the plain loops (up to summation order) for every rank,
    /// nonlinearity, a unit count that is not a multiple of the chunk, with and without inputs.
    #[test]
    fn specialised_kernels_match_plain_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Ranks 1–8 run the const-generic kernels, 12 and 30 the wide ones (N = 150 spans
        // several of their unit blocks).
        for &(r, n) in &[
            (1usize, 37usize),
            (2, 37),
            (3, 37),
            (5, 37),
            (8, 37),
            (12, 37),
            (30, 150),
        ] {
            for &nl in &[
                Nonlinearity::Relu,
                Nonlinearity::ClippedRelu,
                Nonlinearity::Tanh,
                Nonlinearity::Identity,
            ] {
                for &with_ext in &[false, true] {
                    let k = 4;
                    let mt = random(&mut rng, r * n);
                    let nm = random(&mut rng, r * n);
                    let h = random(&mut rng, n);
                    let e = random(&mut rng, n);
                    let ext = with_ext.then_some(e.as_slice());
                    let z = random(&mut rng, k * r);
                    let dmu = random(&mut rng, k * r);
                    let w = Weights {
                        mt: &mt,
                        n: &nm,
                        h: &h,
                        stride: n,
                        decay: 0.9,
                        rank: r,
                        nonlinearity: nl,
                        lo: None,
                        identity_m: false,
                    };
                    let mut mu_a = vec![0.0; k * r];
                    let mut mu_b = vec![0.0; k * r];
                    means(&w, &z, ext, &mut mu_a);
                    means_dyn(&w, &z, ext, &mut mu_b);
                    let close = |a: &[f64], b: &[f64], what: &str| {
                        for (x, y) in a.iter().zip(b) {
                            assert!(
                                (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                                "{what} r={r} {nl:?} ext={with_ext}: {x} vs {y}"
                            );
                        }
                    };
                    close(&mu_a, &mu_b, "means");
                    let run = |f: BackFn| run_backward(f, &w, &z, ext, &dmu);
                    let a = run(means_backward);
                    let b = run(back_dyn);
                    // The AVX2 kernels (when this CPU runs them) equal the portable fused
                    // path bit for bit.
                    let c = run(back_any::<true>);
                    let mut mu_c = vec![0.0; k * r];
                    means_any::<true>(&w, &z, ext, &mut mu_c);
                    #[cfg(target_arch = "x86_64")]
                    if fma_available() {
                        assert_eq!(mu_a, mu_c, "means r={r} {nl:?}");
                        assert_eq!(a, c, "backward r={r} {nl:?}");
                    }
                    close(&c.0, &b.0, "fused grad M");
                    close(&mu_c, &mu_b, "fused means");
                    close(&a.0, &b.0, "grad M");
                    close(&a.1, &b.1, "grad n");
                    close(&a.2, &b.2, "grad h");
                    close(&a.3, &b.3, "grad ext");
                    close(&a.4, &b.4, "grad z");
                }
            }
        }
    }

    /// On AVX-512 a chunk of 8 units runs as one register; every output has the bits of the
    /// 4-unit kernels, for every nonlinearity, rank 1–8, with and without the input current,
    /// and N below a chunk, whole chunks only and chunks with a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_units_give_the_bits_of_four() {
        if !(fma_available() && avx2::wide_available()) {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let mut cases = 0;
        for n in [5, 8, 20, 37, 64, 150] {
            for r in 1..=8 {
                for nl in [
                    Nonlinearity::Relu,
                    Nonlinearity::ClippedRelu,
                    Nonlinearity::Tanh,
                    Nonlinearity::Identity,
                ] {
                    for with_ext in [false, true] {
                        let k = 6;
                        let (mt, nm) = (random(&mut rng, r * n), random(&mut rng, r * n));
                        let (h, e) = (random(&mut rng, n), random(&mut rng, n));
                        let (z, dmu) = (random(&mut rng, k * r), random(&mut rng, k * r));
                        let ext = with_ext.then_some(e.as_slice());
                        let w = Weights {
                            mt: &mt,
                            n: &nm,
                            h: &h,
                            stride: n,
                            decay: 0.9,
                            rank: r,
                            nonlinearity: nl,
                            lo: None,
                            identity_m: false,
                        };
                        let outputs = |wide: bool| {
                            let mut mu = vec![0.0; k * r];
                            // SAFETY: AVX2, FMA and AVX-512F checked above.
                            let ran = unsafe { avx2::means_on(wide, &w, &z, ext, &mut mu) };
                            let back: BackFn = if wide {
                                |w, z, ext, dmu, g, dz| {
                                    // SAFETY: as above.
                                    assert!(unsafe {
                                        avx2::backward_on(true, w, z, ext, dmu, g, dz)
                                    });
                                }
                            } else {
                                |w, z, ext, dmu, g, dz| {
                                    // SAFETY: as above.
                                    assert!(unsafe {
                                        avx2::backward_on(false, w, z, ext, dmu, g, dz)
                                    });
                                }
                            };
                            assert!(ran, "rank {r} has a vector kernel");
                            let (gmt, gn, gh, ge, dz) = run_backward(back, &w, &z, ext, &dmu);
                            [mu, gmt, gn, gh, ge, dz]
                                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>())
                        };
                        let (four, eight) = (outputs(false), outputs(true));
                        for (what, (a, b)) in ["mu", "dM", "dn", "dh", "de", "dz"]
                            .iter()
                            .zip(eight.iter().zip(&four))
                        {
                            assert!(a == b, "{what}: N={n} R={r} {nl:?} ext={with_ext}");
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 6 * 8 * 4 * 2);
    }

    /// With M = I the identity shortcut of the wide kernels gives the same bits as multiplying
    /// by I (means, ∂n, ∂h, ∂e, ∂z) and leaves ∂M untouched.
    #[test]
    fn identity_shortcut_equals_multiplying_by_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for &r in &[12usize, 30, 70] {
            for &with_ext in &[false, true] {
                let k = 3;
                let mt: Vec<f64> = (0..r * r)
                    .map(|i| f64::from(u8::from(i / r == i % r)))
                    .collect();
                let nm = random(&mut rng, r * r);
                let h = random(&mut rng, r);
                let e = random(&mut rng, r);
                let ext = with_ext.then_some(e.as_slice());
                let z = random(&mut rng, k * r);
                let dmu = random(&mut rng, k * r);
                let run = |identity_m: bool| {
                    let w = Weights {
                        mt: &mt,
                        n: &nm,
                        h: &h,
                        stride: r,
                        decay: 0.9,
                        rank: r,
                        nonlinearity: Nonlinearity::ClippedRelu,
                        lo: None,
                        identity_m,
                    };
                    let mut mu = vec![0.0; k * r];
                    means(&w, &z, ext, &mut mu);
                    let (gmt, gn, gh, ge, dz) = run_backward(means_backward, &w, &z, ext, &dmu);
                    (mu, gmt, gn, gh, ge, dz)
                };
                let (a, b) = (run(true), run(false));
                assert_eq!(a.0, b.0, "means r={r}");
                assert!(a.1.iter().all(|&v| v == 0.5), "∂M untouched r={r}");
                assert_ne!(b.1, a.1, "the general path accumulates ∂M r={r}");
                assert_eq!(
                    (&a.2, &a.3, &a.4, &a.5),
                    (&b.2, &b.3, &b.4, &b.5),
                    "grads r={r}"
                );
            }
        }
    }

    /// `frozen_identity` holds for the full-rank baseline's initial M only.
    #[test]
    fn frozen_identity_needs_full_rank_and_exact_identity() {
        let mut c = ModelConfig::eeg(64);
        c.transition = Transition::FullRank;
        c.rank = 12;
        c.n_units = 12;
        let p = c.init_params(1).expect("params");
        let v = c.view(&p).expect("view");
        assert!(frozen_identity(&c, v.m));
        let mut m = v.m.to_vec();
        m[1] = 1e-300;
        assert!(!frozen_identity(&c, &m));
        c.transition = Transition::LowRank;
        assert!(!frozen_identity(&c, v.m));
    }

    /// The backward kernel is the derivative of the forward kernel (finite differences in z).
    #[test]
    fn backward_is_the_derivative_of_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, k, r) = (21, 2, 3);
        let mt = random(&mut rng, r * n);
        let nm = random(&mut rng, r * n);
        let h = random(&mut rng, n);
        let z = random(&mut rng, k * r);
        let dmu = random(&mut rng, k * r);
        let w = Weights {
            mt: &mt,
            n: &nm,
            h: &h,
            stride: n,
            decay: 0.0,
            rank: r,
            nonlinearity: Nonlinearity::Tanh,
            lo: None,
            identity_m: false,
        };
        let loss = |z: &[f64]| {
            let mut mu = vec![0.0; k * r];
            means(&w, z, None, &mut mu);
            mu.iter().zip(&dmu).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut gmt = vec![0.0; r * n];
        let mut gn = vec![0.0; r * n];
        let mut gh = vec![0.0; n];
        let mut dz = vec![0.0; k * r];
        let mut g = Grads {
            mt: &mut gmt,
            n: &mut gn,
            h: &mut gh,
            ext: None,
            work: &mut Vec::new(),
            work32: &mut Vec::new(),
        };
        means_backward(&w, &z, None, &dmu, &mut g, &mut dz);
        for j in 0..k * r {
            let eps = 1e-6;
            let mut zp = z.clone();
            zp[j] += eps;
            let mut zm = z.clone();
            zm[j] -= eps;
            let fd = (loss(&zp) - loss(&zm)) / (2.0 * eps);
            assert!((fd - dz[j]).abs() < 1e-7, "dz[{j}]: {fd} vs {}", dz[j]);
        }
    }
}
