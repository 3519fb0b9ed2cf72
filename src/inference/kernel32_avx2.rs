//! AVX2 + FMA single-precision transition kernels (x86-64, chosen at run time).
//!
//! A chunk of 8 units is one 256-bit register; the forward sums over units run in two
//! interleaved registers per latent dimension (units `base..base+8` and `base+8..base+16`),
//! then one 8-unit chunk if left, then the tail units in order.
//!
//! Where the CPU has AVX-512F, the pairs of chunks run as one 512-bit register of 16 units:
//! each lane does the operations it did in its 8-unit chunk, and the two halves are the two
//! interleaved accumulators, so both paths give the same bits (`sixteen_units_give_the_bits_of_eight`).

use std::arch::x86_64::*;

use super::super::fastmath::Lanes32;
use super::super::kernel::{by_rank_and_nl, Grads, Weights};
use super::super::kernel::{NL_CLIPPED as CLIPPED, NL_RELU as RELU, NL_TANH as TANH};
use super::{act, Weights32};

/// Units per register.
const W: usize = 8;

/// The CPU has AVX-512F (besides the AVX2 and FMA every caller has checked).
pub(super) fn wide_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Loads 8 values at `p + at`.
///
/// # Safety
/// `p + at .. p + at + 8` must be in bounds of one allocation (the kernels check every
/// slice's length once, before their loops).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32, at: usize) -> __m256 {
    unsafe { _mm256_loadu_ps(p.add(at)) }
}

/// Stores 8 values at `p + at` (same contract as [`load`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f32, at: usize, v: __m256) {
    unsafe { _mm256_storeu_ps(p.add(at), v) }
}

/// Loads 8 f64 values at `p + at` rounded to f32 (same contract as [`load`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_f64(p: *const f64, at: usize) -> __m256 {
    unsafe {
        let lo = _mm256_cvtpd_ps(_mm256_loadu_pd(p.add(at)));
        let hi = _mm256_cvtpd_ps(_mm256_loadu_pd(p.add(at + 4)));
        _mm256_set_m128(hi, lo)
    }
}

/// Adds the 8 f32 values of `v` (widened) to the f64 values at `p + at`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_to_f64(p: *mut f64, at: usize, v: __m256) {
    unsafe {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        _mm256_storeu_pd(p.add(at), _mm256_add_pd(_mm256_loadu_pd(p.add(at)), lo));
        _mm256_storeu_pd(
            p.add(at + 4),
            _mm256_add_pd(_mm256_loadu_pd(p.add(at + 4)), hi),
        );
    }
}

/// Sum of the 8 lanes in a fixed order: ((0+4)+(2+6)) + ((1+5)+(3+7)).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(in crate::inference) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// The 16 lanes as the two 8-unit chunks they hold (units `0..8`, `8..16`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn halves(v: __m512) -> [__m256; 2] {
    [
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    ]
}

/// A register of units: one 8-unit chunk (`__m256`) or two (`__m512`), lane by lane the
/// same operations.
trait Units: Lanes32 {
    /// Units per register.
    const N: usize;
    /// Loads `N` values at `p + at` (contract as [`load`]).
    unsafe fn at(p: *const f32, at: usize) -> Self;
    /// Stores `N` values at `p + at`.
    unsafe fn put(self, p: *mut f32, at: usize);
    /// Loads `N` f64 values at `p + at` rounded to f32.
    unsafe fn at_f64(p: *const f64, at: usize) -> Self;
    /// Adds the lanes (widened) to the f64 values at `p + at`.
    unsafe fn add_into_f64(self, p: *mut f64, at: usize);
    /// Lane-wise scalar tanh (no vector tanh in std).
    unsafe fn tanh(self) -> Self;
}

impl Units for __m256 {
    const N: usize = W;
    #[inline(always)]
    unsafe fn at(p: *const f32, at: usize) -> Self {
        load(p, at)
    }
    #[inline(always)]
    unsafe fn put(self, p: *mut f32, at: usize) {
        store(p, at, self)
    }
    #[inline(always)]
    unsafe fn at_f64(p: *const f64, at: usize) -> Self {
        load_f64(p, at)
    }
    #[inline(always)]
    unsafe fn add_into_f64(self, p: *mut f64, at: usize) {
        add_to_f64(p, at, self)
    }
    #[inline(always)]
    unsafe fn tanh(self) -> Self {
        let mut a = [0.0f32; W];
        _mm256_storeu_ps(a.as_mut_ptr(), self);
        for v in &mut a {
            *v = v.tanh();
        }
        _mm256_loadu_ps(a.as_ptr())
    }
}

impl Units for __m512 {
    const N: usize = 2 * W;
    #[inline(always)]
    unsafe fn at(p: *const f32, at: usize) -> Self {
        _mm512_loadu_ps(p.add(at))
    }
    #[inline(always)]
    unsafe fn put(self, p: *mut f32, at: usize) {
        _mm512_storeu_ps(p.add(at), self)
    }
    #[inline(always)]
    unsafe fn at_f64(p: *const f64, at: usize) -> Self {
        let lo = _mm512_cvtpd_ps(_mm512_loadu_pd(p.add(at)));
        let hi = _mm512_cvtpd_ps(_mm512_loadu_pd(p.add(at + W)));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(_mm512_castps256_ps512(lo)),
            _mm256_castps_pd(hi),
        ))
    }
    #[inline(always)]
    unsafe fn add_into_f64(self, p: *mut f64, at: usize) {
        let [lo, hi] = halves(self);
        add_to_f64(p, at, lo);
        add_to_f64(p, at + W, hi);
    }
    #[inline(always)]
    unsafe fn tanh(self) -> Self {
        let mut a = [0.0f32; 2 * W];
        _mm512_storeu_ps(a.as_mut_ptr(), self);
        for v in &mut a {
            *v = v.tanh();
        }
        _mm512_loadu_ps(a.as_ptr())
    }
}

/// 1 where `a > b`, +0 elsewhere (and NaN).
#[inline(always)]
unsafe fn step<V: Units>(a: V, b: V) -> V {
    V::select(a.gt(b), V::splat(1.0), V::zero())
}

/// φ(x; h).
#[inline(always)]
unsafe fn phi<V: Units, const NL: u8>(x: V, h: V) -> V {
    let zero = V::zero();
    match NL {
        RELU => x.sub(h).max(zero),
        CLIPPED => x.add(h).max(zero).sub(x.max(zero)),
        TANH => x.sub(h).tanh(),
        _ => x.sub(h),
    }
}

/// (φ, ∂φ/∂x, ∂φ/∂h).
#[inline(always)]
unsafe fn phi_d<V: Units, const NL: u8>(x: V, h: V) -> (V, V, V) {
    let zero = V::zero();
    let one = V::splat(1.0);
    match NL {
        RELU => {
            let xh = x.sub(h);
            let on = step(xh, zero);
            (xh.mul(on), on, zero.sub(on))
        }
        CLIPPED => {
            let xh = x.add(h);
            let a = step(xh, zero);
            let b = step(x, zero);
            let f = xh.max(zero).sub(x.max(zero));
            (f, a.sub(b), a)
        }
        TANH => {
            let t = x.sub(h).tanh();
            let d = one.sub(t.mul(t));
            (t, d, zero.sub(d))
        }
        _ => (x.sub(h), one, zero.sub(one)),
    }
}

/// The slice lengths the kernels rely on (a mismatch is a bug in the caller, so it panics
/// rather than reading out of bounds).
fn check(w: &Weights<'_>, lo: &Weights32, r: usize, z: &[f64], ext: Option<&[f64]>) {
    let n = w.h.len();
    let len = (r - 1) * w.stride + n;
    assert!(w.stride >= n, "row stride ≥ N");
    assert!(
        lo.mt.len() >= len && lo.n.len() >= len && lo.h.len() == n,
        "f32 weights are R rows of N"
    );
    assert!(z.len().is_multiple_of(r), "states are K × R");
    assert!(
        ext.is_none_or(|e| e.len() == n),
        "input current has N entries"
    );
}

/// Transition means; `false` when the rank has no vector kernel.
#[target_feature(enable = "avx2,fma")]
pub(super) fn means(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) -> bool {
    // SAFETY: `wide` only where the CPU has AVX-512F.
    unsafe { means_on(wide_available(), w, lo, z, ext, mu) }
}

/// [`means`] on 16-unit registers if `wide`, 8-unit ones otherwise.
///
/// # Safety
/// `wide` only where the CPU has AVX-512F.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn means_on(
    wide: bool,
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) -> bool {
    if wide {
        return means_wide(w, lo, z, ext, mu);
    }
    // SAFETY: AVX2 and FMA are enabled here; `means_r` checks the slices.
    unsafe { by_rank_and_nl!(w, means_r, false, (w, lo, z, ext, mu)) }
}

/// [`means`] with the pairs of chunks in AVX-512 registers (same bits).
#[target_feature(enable = "avx512f,avx2,fma")]
fn means_wide(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) -> bool {
    // SAFETY: AVX-512F, AVX2 and FMA are enabled here; `means_r` checks the slices.
    unsafe { by_rank_and_nl!(w, means_r, true, (w, lo, z, ext, mu)) }
}

/// Reverse pass; `false` when the rank has no vector kernel.
#[target_feature(enable = "avx2,fma")]
pub(super) fn backward(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    // SAFETY: `wide` only where the CPU has AVX-512F.
    unsafe { backward_on(wide_available(), w, lo, z, ext, dmu, g, dz) }
}

/// [`backward`] on 16-unit registers if `wide`, 8-unit ones otherwise.
///
/// # Safety
/// `wide` only where the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_on(
    wide: bool,
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    if wide {
        return backward_wide(w, lo, z, ext, dmu, g, dz);
    }
    // SAFETY: AVX2 and FMA are enabled here; `back_r` checks the slices.
    unsafe { by_rank_and_nl!(w, back_r, false, (w, lo, z, ext, dmu, g, dz)) }
}

/// [`backward`] with the pairs of chunks in AVX-512 registers (same bits).
#[target_feature(enable = "avx512f,avx2,fma")]
fn backward_wide(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    // SAFETY: AVX-512F, AVX2 and FMA are enabled here; `back_r` checks the slices.
    unsafe { by_rank_and_nl!(w, back_r, true, (w, lo, z, ext, dmu, g, dz)) }
}

/// x = e + Σ_q Mᵀ[q] z_q for the `V::N` units at `at`.
///
/// # Safety
/// As [`load`], for every row pointer and `ep`.
#[inline(always)]
unsafe fn currents<V: Units, const R: usize>(
    mt: &[*const f32; R],
    zb: &[V; R],
    ep: Option<*const f64>,
    at: usize,
) -> V {
    let mut x = match ep {
        Some(e) => V::at_f64(e, at),
        None => V::zero(),
    };
    for q in 0..R {
        x = V::at(mt[q], at).fma(zb[q], x);
    }
    x
}

/// # Safety
/// The CPU has AVX2 and FMA, and AVX-512F if `WIDE`.
#[inline(always)]
unsafe fn means_r<const R: usize, const NL: u8, const WIDE: bool>(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) {
    check(w, lo, R, z, ext);
    assert!(mu.len() == z.len(), "means are K × R");
    let n = w.h.len();
    let st = w.stride;
    let k = z.len() / R;
    let full = n / W * W;
    let pairs = n / (2 * W) * (2 * W);
    let mut mt = [std::ptr::null::<f32>(); R];
    let mut nn = [std::ptr::null::<f32>(); R];
    for q in 0..R {
        mt[q] = lo.mt[q * st..].as_ptr();
        nn[q] = lo.n[q * st..].as_ptr();
    }
    let hp = lo.h.as_ptr();
    let ep = ext.map(|e| e.as_ptr());
    let zero = _mm256_setzero_ps();
    for kk in 0..k {
        let zk = &z[kk * R..kk * R + R];
        let zb: [__m256; R] = std::array::from_fn(|q| _mm256_set1_ps(zk[q] as f32));
        let mut acc = [[zero; 2]; R];
        let mut base = 0;
        // All blocks below: at + 8 (16 for a pair) ≤ full ≤ n and every row pointer has n
        // entries (checked).
        if WIDE {
            let zw: [__m512; R] = std::array::from_fn(|q| _mm512_set1_ps(zk[q] as f32));
            let mut wide = [_mm512_setzero_ps(); R];
            while base < pairs {
                let x = currents::<__m512, R>(&mt, &zw, ep, base);
                let f = phi::<__m512, NL>(x, __m512::at(hp, base));
                for q in 0..R {
                    wide[q] = __m512::at(nn[q], base).fma(f, wide[q]);
                }
                base += 2 * W;
            }
            for q in 0..R {
                acc[q] = halves(wide[q]);
            }
        } else {
            while base < pairs {
                for half in 0..2 {
                    let at = base + W * half;
                    let x = currents::<__m256, R>(&mt, &zb, ep, at);
                    let f = phi::<__m256, NL>(x, load(hp, at));
                    for q in 0..R {
                        acc[q][half] = load(nn[q], at).fma(f, acc[q][half]);
                    }
                }
                base += 2 * W;
            }
        }
        if base < full {
            let x = currents::<__m256, R>(&mt, &zb, ep, base);
            let f = phi::<__m256, NL>(x, load(hp, base));
            for q in 0..R {
                acc[q][0] = load(nn[q], base).fma(f, acc[q][0]);
            }
        }
        let mut tail = [0.0f32; R];
        for i in full..n {
            let mut x = ext.map(|e| e[i] as f32).unwrap_or(0.0);
            for q in 0..R {
                x = lo.mt[q * st + i].mul_add(zk[q] as f32, x);
            }
            let f = act(w.nonlinearity, x, lo.h[i]).0;
            for q in 0..R {
                tail[q] = lo.n[q * st + i].mul_add(f, tail[q]);
            }
        }
        for q in 0..R {
            let s = hsum(_mm256_add_ps(acc[q][0], acc[q][1])) + tail[q];
            mu[kk * R + q] = w.decay.mul_add(zk[q], s as f64);
        }
    }
}

/// Passes A and B of the reverse pass for the `V::N` units at `base`: per particle φ and
/// dL/dx (stored to `dxp + base·k + kk·V::N`, the block's rows particle by particle), then
/// the sums over the particles of the gradients of h, the input current, n and Mᵀ.
///
/// # Safety
/// `base + V::N ≤ n`; the pointers as in [`back_r`], `fp` with room for `V::N · k` values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn back_block<V: Units, const R: usize, const NL: u8>(
    base: usize,
    k: usize,
    (mt, nn): (&[*const f32; R], &[*const f32; R]),
    (hp, ep): (*const f32, Option<*const f64>),
    (zfp, dfp): (*const f32, *const f32),
    (dxp, fp): (*mut f32, *mut f32),
    (gmt, gn): (&[*mut f64; R], &[*mut f64; R]),
    (ghp, gep): (*mut f64, Option<*mut f64>),
) {
    let zero = V::zero();
    let h = V::at(hp, base);
    let e = match ep {
        Some(e) => V::at_f64(e, base),
        None => zero,
    };
    // Pass A: per particle, φ and dL/dx of the block (and the h, input sums).
    let mut agh = zero;
    let mut age = zero;
    for kk in 0..k {
        let mut x = e;
        let mut dr = zero;
        for q in 0..R {
            let zq = V::splat(*zfp.add(kk * R + q));
            let dq = V::splat(*dfp.add(kk * R + q));
            x = V::at(mt[q], base).fma(zq, x);
            dr = V::at(nn[q], base).fma(dq, dr);
        }
        let (f, dfdx, dfdh) = phi_d::<V, NL>(x, h);
        agh = dr.fma(dfdh, agh);
        let dxu = dr.mul(dfdx);
        dxu.put(dxp, base * k + kk * V::N);
        f.put(fp, kk * V::N);
        age = age.add(dxu);
    }
    // Pass B: the outer-product sums of n and M over the particles.
    let mut agmt = [zero; R];
    let mut agn = [zero; R];
    for kk in 0..k {
        let f = V::at(fp, kk * V::N);
        let dxu = V::at(dxp, base * k + kk * V::N);
        for q in 0..R {
            let zq = V::splat(*zfp.add(kk * R + q));
            let dq = V::splat(*dfp.add(kk * R + q));
            agn[q] = dq.fma(f, agn[q]);
            agmt[q] = dxu.fma(zq, agmt[q]);
        }
    }
    for q in 0..R {
        agmt[q].add_into_f64(gmt[q], base);
        agn[q].add_into_f64(gn[q], base);
    }
    agh.add_into_f64(ghp, base);
    if let Some(ge) = gep {
        age.add_into_f64(ge, base);
    }
}

/// # Safety
/// The CPU has AVX2 and FMA, and AVX-512F if `WIDE`.
#[inline(always)]
unsafe fn back_r<const R: usize, const NL: u8, const WIDE: bool>(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    check(w, lo, R, z, ext);
    let n = w.h.len();
    let st = w.stride;
    assert!(
        dmu.len() == z.len() && dz.len() == z.len(),
        "adjoints are K × R"
    );
    let len = (R - 1) * st + n;
    assert!(g.mt.len() >= len && g.n.len() >= len && g.h.len() == n);
    assert!(g.ext.as_deref().is_none_or(|e| e.len() == n));
    let k = z.len() / R;
    // Workspace: dL/dx block by block for the full chunks (a block of `b` units at `base`
    // holds [k][b] from base·k: 16-unit blocks for the pairs of chunks when `WIDE`, 8-unit
    // chunks otherwise), then [k][tail], then φ of one block for the K particles, then z and
    // dL/dμ rounded to f32 (K × R each).
    let need = k * n + 2 * W * k + 2 * k * R;
    if g.work32.len() < need {
        g.work32.resize(need, 0.0);
    }
    {
        let (zf, df) = g.work32[k * n + 2 * W * k..need].split_at_mut(k * R);
        for (a, b) in zf.iter_mut().zip(z) {
            *a = *b as f32;
        }
        for (a, b) in df.iter_mut().zip(dmu) {
            *a = *b as f32;
        }
    }
    let full = n / W * W;
    let pairs = n / (2 * W) * (2 * W);
    let zero = _mm256_setzero_ps();
    let mut mt = [std::ptr::null::<f32>(); R];
    let mut nn = [std::ptr::null::<f32>(); R];
    let mut gmt = [std::ptr::null_mut::<f64>(); R];
    let mut gn = [std::ptr::null_mut::<f64>(); R];
    for q in 0..R {
        mt[q] = lo.mt[q * st..].as_ptr();
        nn[q] = lo.n[q * st..].as_ptr();
        gmt[q] = g.mt[q * st..].as_mut_ptr();
        gn[q] = g.n[q * st..].as_mut_ptr();
    }
    let hp = lo.h.as_ptr();
    let ep = ext.map(|e| e.as_ptr());
    let ghp = g.h.as_mut_ptr();
    let gep = g.ext.as_deref_mut().map(|e| e.as_mut_ptr());
    let wp = g.work32.as_mut_ptr();
    // The workspace has k·n + 16k + 2kR entries (resized above).
    let fp = wp.add(k * n);
    let (zfp, dfp) = (wp.add(k * n + 2 * W * k), wp.add(k * n + 2 * W * k + k * R));
    let mut base = 0;
    // Every block: base + its width ≤ full ≤ n, every row pointer has n entries and the
    // workspace k·n + 16k (all checked above).
    if WIDE {
        while base < pairs {
            back_block::<__m512, R, NL>(
                base,
                k,
                (&mt, &nn),
                (hp, ep),
                (zfp, dfp),
                (wp, fp),
                (&gmt, &gn),
                (ghp, gep),
            );
            base += 2 * W;
        }
    }
    while base < full {
        back_block::<__m256, R, NL>(
            base,
            k,
            (&mt, &nn),
            (hp, ep),
            (zfp, dfp),
            (wp, fp),
            (&gmt, &gn),
            (ghp, gep),
        );
        base += W;
    }
    for i in full..n {
        let (mut gh, mut ge) = (0.0f32, 0.0f32);
        let mut gm = [0.0f32; R];
        let mut gnn = [0.0f32; R];
        for kk in 0..k {
            let mut x = ext.map(|e| e[i] as f32).unwrap_or(0.0);
            let mut dr = 0.0f32;
            for q in 0..R {
                x = lo.mt[q * st + i].mul_add(z[kk * R + q] as f32, x);
                dr = lo.n[q * st + i].mul_add(dmu[kk * R + q] as f32, dr);
            }
            let (f, dfdx, dfdh) = act(w.nonlinearity, x, lo.h[i]);
            gh = dr.mul_add(dfdh, gh);
            let dxu = dr * dfdx;
            g.work32[full * k + kk * (n - full) + (i - full)] = dxu;
            ge += dxu;
            for q in 0..R {
                gnn[q] = (dmu[kk * R + q] as f32).mul_add(f, gnn[q]);
                gm[q] = dxu.mul_add(z[kk * R + q] as f32, gm[q]);
            }
        }
        g.h[i] += gh as f64;
        if let Some(gext) = g.ext.as_deref_mut() {
            gext[i] += ge as f64;
        }
        for q in 0..R {
            g.n[q * st + i] += gnn[q] as f64;
            g.mt[q * st + i] += gm[q] as f64;
        }
    }
    // dL/dz_k = Mᵀ-rows · dL/dx_k (all R rows at once: 2R independent accumulator chains, or
    // R registers of both when `WIDE`).
    let wp = g.work32.as_ptr();
    for kk in 0..k {
        let mut acc = [[zero; 2]; R];
        let mut base = 0;
        if WIDE {
            let mut wide = [_mm512_setzero_ps(); R];
            while base < pairs {
                let d = __m512::at(wp, base * k + kk * 2 * W);
                for q in 0..R {
                    wide[q] = __m512::at(mt[q], base).fma(d, wide[q]);
                }
                base += 2 * W;
            }
            for q in 0..R {
                acc[q] = halves(wide[q]);
            }
        } else {
            while base < pairs {
                let d0 = load(wp, base * k + kk * W);
                let d1 = load(wp, (base + W) * k + kk * W);
                for q in 0..R {
                    acc[q][0] = load(mt[q], base).fma(d0, acc[q][0]);
                    acc[q][1] = load(mt[q], base + W).fma(d1, acc[q][1]);
                }
                base += 2 * W;
            }
        }
        if base < full {
            let d0 = load(wp, base * k + kk * W);
            for q in 0..R {
                acc[q][0] = load(mt[q], base).fma(d0, acc[q][0]);
            }
        }
        for q in 0..R {
            let mut tail = 0.0f32;
            for i in full..n {
                tail = lo.mt[q * st + i]
                    .mul_add(g.work32[full * k + kk * (n - full) + (i - full)], tail);
            }
            dz[kk * R + q] += (hsum(_mm256_add_ps(acc[q][0], acc[q][1])) + tail) as f64;
        }
    }
}
