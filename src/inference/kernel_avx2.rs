//! AVX2 + FMA versions of the transition kernels (x86-64, chosen at run time).
//!
//! Same arithmetic, in the same order, as the portable kernels with fused multiply-adds
//! (`F = true`): a chunk of [`LANES`] = 8 units is two 256-bit registers (lo, hi), lane l
//! accumulates unit `base + l`, and the horizontal sum is the portable `hsum`. The tests check
//! that both give bit-identical results. Where the CPU has AVX-512F, a chunk is one 512-bit
//! register whose halves are (lo, hi), lane by lane the same operations
//! (`eight_units_give_the_bits_of_four`).

use std::arch::x86_64::*;

use super::super::fastmath::Lanes64;
use super::{Grads, Weights, LANES};
use super::{NL_CLIPPED as CLIPPED, NL_RELU as RELU, NL_TANH as TANH};
use crate::model::lowrank::Nonlinearity;

/// Loads 4 values at `p + at`.
///
/// # Safety
/// `p + at .. p + at + 4` must be in bounds of one allocation (the kernels check every
/// slice's length once, before their loops).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f64, at: usize) -> __m256d {
    unsafe { _mm256_loadu_pd(p.add(at)) }
}

/// The slice lengths the kernels rely on (checked once per call; a mismatch is a bug in the
/// caller, so it panics rather than reading out of bounds).
fn check(w: &Weights<'_>, r: usize, z: &[f64], ext: Option<&[f64]>) {
    let n = w.h.len();
    let len = (r - 1) * w.stride + n;
    assert!(w.stride >= n, "row stride ≥ N");
    assert!(
        w.mt.len() >= len && w.n.len() >= len,
        "weights are R rows of N"
    );
    assert!(z.len().is_multiple_of(r), "states are K × R");
    assert!(
        ext.is_none_or(|e| e.len() == n),
        "input current has N entries"
    );
}

/// The CPU has AVX-512F (besides the AVX2 and FMA every caller has checked).
pub(super) fn wide_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// The 8 lanes as the two 4-unit halves they hold (units `0..4`, `4..8`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn halves(v: __m512d) -> (__m256d, __m256d) {
    (_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v))
}

/// A register of units: 4 (`__m256d`) or one whole chunk of [`LANES`] = 8 (`__m512d`, the
/// chunk's two 256-bit halves side by side), lane by lane the same operations: `fastmath`'s
/// lanes with what the kernels add to them.
trait Units: Lanes64 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self::splat(0.0)
    }
    /// Loads `N` values at `p + at` (contract as [`load`]).
    #[inline(always)]
    unsafe fn at(p: *const f64, at: usize) -> Self {
        Self::load(p.add(at))
    }
    /// Stores `N` values at `p + at`.
    #[inline(always)]
    unsafe fn put(self, p: *mut f64, at: usize) {
        self.store(p.add(at))
    }
    /// self · b + c, rounded once.
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// 1 where `self > b`, +0 elsewhere (and NaN).
    #[inline(always)]
    unsafe fn step(self, b: Self) -> Self {
        Self::select(self.gt(b), Self::splat(1.0), Self::zero())
    }
    /// Lane-wise scalar tanh (no vector tanh in std).
    #[inline(always)]
    unsafe fn tanh(self) -> Self {
        let mut a = [0.0f64; LANES];
        self.store(a.as_mut_ptr());
        for v in &mut a[..Self::N] {
            *v = v.tanh();
        }
        Self::load(a.as_ptr())
    }
}

impl Units for __m256d {
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        _mm256_fmadd_pd(self, b, c)
    }
}

impl Units for __m512d {
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        _mm512_fmadd_pd(self, b, c)
    }
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
            let on = xh.step(zero);
            (xh.mul(on), on, zero.sub(on))
        }
        CLIPPED => {
            let xh = x.add(h);
            let a = xh.step(zero);
            let b = x.step(zero);
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

/// The portable `hsum` of the lanes (lo = lanes 0..4, hi = lanes 4..8).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(lo: __m256d, hi: __m256d) -> f64 {
    let s = _mm256_add_pd(lo, hi);
    let mut a = [0.0f64; 4];
    // SAFETY: `a` has 4 elements.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), s) };
    (a[0] + a[1]) + (a[2] + a[3])
}

/// Scalar φ for the tail units (same formulas as the portable kernels).
#[inline]
fn phi_scalar<const NL: u8>(x: f64, h: f64) -> (f64, f64, f64) {
    match NL {
        RELU => Nonlinearity::Relu.eval(x, h),
        CLIPPED => Nonlinearity::ClippedRelu.eval(x, h),
        TANH => Nonlinearity::Tanh.eval(x, h),
        _ => Nonlinearity::Identity.eval(x, h),
    }
}

/// Transition means (see [`super::means`]); `false` when the rank has no AVX2 kernel.
#[target_feature(enable = "avx2,fma")]
pub(super) fn means(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) -> bool {
    // SAFETY: `wide` only where the CPU has AVX-512F.
    unsafe { means_on(wide_available(), w, z, ext, mu) }
}

/// [`means`] on whole 8-unit chunks in AVX-512 registers if `wide`, on 4-unit halves
/// otherwise (the same bits).
///
/// # Safety
/// `wide` only where the CPU has AVX-512F.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn means_on(
    wide: bool,
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) -> bool {
    if wide {
        return means_wide(w, z, ext, mu);
    }
    // SAFETY: AVX2 and FMA are enabled here; `means_r` checks the slices.
    unsafe { by_rank_and_nl!(w, means_r, false, (w, z, ext, mu)) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn means_wide(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) -> bool {
    // SAFETY: AVX-512F, AVX2 and FMA are enabled here; `means_r` checks the slices.
    unsafe { by_rank_and_nl!(w, means_r, true, (w, z, ext, mu)) }
}

/// Reverse of [`means`] (see [`super::means_backward`]); `false` when the rank has no AVX2
/// kernel.
#[target_feature(enable = "avx2,fma")]
pub(super) fn backward(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    // SAFETY: `wide` only where the CPU has AVX-512F.
    unsafe { backward_on(wide_available(), w, z, ext, dmu, g, dz) }
}

/// [`backward`] on 8-unit AVX-512 registers if `wide`, 4-unit ones otherwise (the same
/// bits).
///
/// # Safety
/// `wide` only where the CPU has AVX-512F.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_on(
    wide: bool,
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    if wide {
        return backward_wide(w, z, ext, dmu, g, dz);
    }
    // SAFETY: AVX2 and FMA are enabled here; `back_r` checks the slices.
    unsafe { by_rank_and_nl!(w, back_r, false, (w, z, ext, dmu, g, dz)) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn backward_wide(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) -> bool {
    // SAFETY: AVX-512F, AVX2 and FMA are enabled here; `back_r` checks the slices.
    unsafe { by_rank_and_nl!(w, back_r, true, (w, z, ext, dmu, g, dz)) }
}

/// x = e + Σ_q Mᵀ[q] z_q for the `V::N` units at `at`.
///
/// # Safety
/// As [`load`], for every row pointer and `ep`.
#[inline(always)]
unsafe fn currents<V: Units, const R: usize>(
    mt: &[*const f64; R],
    zb: &[V; R],
    ep: Option<*const f64>,
    at: usize,
) -> V {
    let mut x = match ep {
        Some(e) => V::at(e, at),
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
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) {
    check(w, R, z, ext);
    assert!(mu.len() == z.len(), "means are K × R");
    let n = w.h.len();
    let st = w.stride;
    let k = z.len() / R;
    let full = n / LANES * LANES;
    let mut mt = [std::ptr::null::<f64>(); R];
    let mut nn = [std::ptr::null::<f64>(); R];
    for q in 0..R {
        mt[q] = w.mt[q * st..].as_ptr();
        nn[q] = w.n[q * st..].as_ptr();
    }
    let hp = w.h.as_ptr();
    let ep = ext.map(|e| e.as_ptr());
    for kk in 0..k {
        let zk = &z[kk * R..kk * R + R];
        let mut acc = [(_mm256_setzero_pd(), _mm256_setzero_pd()); R];
        let mut base = 0;
        // All blocks below: at + 4 (8 for a chunk) ≤ full ≤ n and every row pointer has n
        // entries (checked).
        if WIDE {
            let zb: [__m512d; R] = std::array::from_fn(|q| _mm512_set1_pd(zk[q]));
            let mut chunk = [_mm512_setzero_pd(); R];
            while base < full {
                let x = currents::<__m512d, R>(&mt, &zb, ep, base);
                let f = phi::<__m512d, NL>(x, __m512d::at(hp, base));
                for q in 0..R {
                    chunk[q] = __m512d::at(nn[q], base).fma(f, chunk[q]);
                }
                base += LANES;
            }
            for q in 0..R {
                acc[q] = halves(chunk[q]);
            }
        } else {
            let zb: [__m256d; R] = std::array::from_fn(|q| _mm256_set1_pd(zk[q]));
            while base < full {
                let lo = currents::<__m256d, R>(&mt, &zb, ep, base);
                let f = phi::<__m256d, NL>(lo, load(hp, base));
                for q in 0..R {
                    acc[q].0 = load(nn[q], base).fma(f, acc[q].0);
                }
                let hi = currents::<__m256d, R>(&mt, &zb, ep, base + 4);
                let f = phi::<__m256d, NL>(hi, load(hp, base + 4));
                for q in 0..R {
                    acc[q].1 = load(nn[q], base + 4).fma(f, acc[q].1);
                }
                base += LANES;
            }
        }
        let mut tail = [0.0f64; R];
        let mut first = full;
        if n - full >= 4 {
            // The next 4 units' currents and φ in one register: lane by lane the operations
            // of the scalar loop below. Their sum stays sequential, so the bits are its bits.
            let zb: [__m256d; R] = std::array::from_fn(|q| _mm256_set1_pd(zk[q]));
            let x = currents::<__m256d, R>(&mt, &zb, ep, full);
            let mut f = [0.0f64; 4];
            phi::<__m256d, NL>(x, load(hp, full)).put(f.as_mut_ptr(), 0);
            for (l, &fl) in f.iter().enumerate() {
                for q in 0..R {
                    tail[q] = w.n[q * st + full + l].mul_add(fl, tail[q]);
                }
            }
            first = full + 4;
        }
        for i in first..n {
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            for q in 0..R {
                x = w.mt[q * st + i].mul_add(zk[q], x);
            }
            let f = phi_scalar::<NL>(x, w.h[i]).0;
            for q in 0..R {
                tail[q] = w.n[q * st + i].mul_add(f, tail[q]);
            }
        }
        for q in 0..R {
            mu[kk * R + q] = w.decay.mul_add(zk[q], hsum(acc[q].0, acc[q].1) + tail[q]);
        }
    }
}

/// Passes A and B of the reverse pass for the `V::N` units at `base`: per particle φ and
/// dL/dx (stored to `dxp + base·k + kk·V::N`, the block's rows particle by particle), then the
/// sums over the particles added to the gradients of h, the input current, n and Mᵀ.
///
/// # Safety
/// `base + V::N ≤ n`; the pointers as in [`back_r`], `fp` with room for `V::N · k` values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn back_block<V: Units, const R: usize, const NL: u8>(
    base: usize,
    (z, dmu): (&[f64], &[f64]),
    (mt, nn): (&[*const f64; R], &[*const f64; R]),
    (hp, ep): (*const f64, Option<*const f64>),
    (dxp, fp): (*mut f64, *mut f64),
    (gmt, gn): (&[*mut f64; R], &[*mut f64; R]),
    (ghp, gep): (*mut f64, Option<*mut f64>),
) {
    let k = z.len() / R;
    let zero = V::zero();
    let h = V::at(hp, base);
    let e = match ep {
        Some(e) => V::at(e, base),
        None => zero,
    };
    // Pass A: per particle, φ and dL/dx of the block (and the h, input sums).
    let mut agh = V::at(ghp, base);
    let mut age = zero;
    for kk in 0..k {
        let mut x = e;
        let mut dr = zero;
        for q in 0..R {
            x = V::at(mt[q], base).fma(V::splat(z[kk * R + q]), x);
            dr = V::at(nn[q], base).fma(V::splat(dmu[kk * R + q]), dr);
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
    for q in 0..R {
        agmt[q] = V::at(gmt[q], base);
        agn[q] = V::at(gn[q], base);
    }
    for kk in 0..k {
        let f = V::at(fp, kk * V::N);
        let dxu = V::at(dxp, base * k + kk * V::N);
        for q in 0..R {
            agn[q] = V::splat(dmu[kk * R + q]).fma(f, agn[q]);
            agmt[q] = dxu.fma(V::splat(z[kk * R + q]), agmt[q]);
        }
    }
    for q in 0..R {
        agmt[q].put(gmt[q], base);
        agn[q].put(gn[q], base);
    }
    agh.put(ghp, base);
    if let Some(ge) = gep {
        V::at(ge, base).add(age).put(ge, base);
    }
}

/// # Safety
/// The CPU has AVX2 and FMA, and AVX-512F if `WIDE`.
#[inline(always)]
unsafe fn back_r<const R: usize, const NL: u8, const WIDE: bool>(
    w: &Weights<'_>,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    check(w, R, z, ext);
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
    // holds [k][b] from base·k: whole 8-unit chunks when `WIDE`, 4-unit halves otherwise),
    // then [k][tail], then φ of one block for the K particles.
    if g.work.len() < k * n + LANES * k {
        g.work.resize(k * n + LANES * k, 0.0);
    }
    let full = n / LANES * LANES;
    let mut mt = [std::ptr::null::<f64>(); R];
    let mut nn = [std::ptr::null::<f64>(); R];
    let mut gmt = [std::ptr::null_mut::<f64>(); R];
    let mut gn = [std::ptr::null_mut::<f64>(); R];
    for q in 0..R {
        mt[q] = w.mt[q * st..].as_ptr();
        nn[q] = w.n[q * st..].as_ptr();
        gmt[q] = g.mt[q * st..].as_mut_ptr();
        gn[q] = g.n[q * st..].as_mut_ptr();
    }
    let hp = w.h.as_ptr();
    let ep = ext.map(|e| e.as_ptr());
    let ghp = g.h.as_mut_ptr();
    let gep = g.ext.as_deref_mut().map(|e| e.as_mut_ptr());
    let wp = g.work.as_mut_ptr();
    // The workspace has k·n + 8k entries (resized above).
    let fp = wp.add(k * n);
    // Every block: base + its width ≤ full ≤ n, every row pointer has n entries and the
    // workspace k·n + 8k (all checked above). No sums over units here: any chunking gives
    // the same per-unit results.
    // The blocks' arguments; `ge`, the input current's gradient, is `gep` or `None`.
    let args = |ge: Option<*mut f64>| {
        (
            (z, dmu),
            (&mt, &nn),
            (hp, ep),
            (wp, fp),
            (&gmt, &gn),
            (ghp, ge),
        )
    };
    let mut base = 0;
    while base < full {
        let io = args(gep);
        if WIDE {
            back_block::<__m512d, R, NL>(base, io.0, io.1, io.2, io.3, io.4, io.5);
            base += LANES;
        } else {
            back_block::<__m256d, R, NL>(base, io.0, io.1, io.2, io.3, io.4, io.5);
            base += 4;
        }
    }
    // The tail: a block of 4 units (AVX2) when there are 4 or more, its workspace [k][4] at
    // full·k, then unit by unit from `first`, [k][n − first] at first·k. The block's per-unit
    // operations are the scalar loop's; the input current's gradient is added here particle by
    // particle, in the scalar loop's order, so the bits are its bits.
    let mut first = full;
    if n - full >= 4 {
        let io = args(None);
        back_block::<__m256d, R, NL>(full, io.0, io.1, io.2, io.3, io.4, io.5);
        if let Some(ge) = gep {
            for kk in 0..k {
                for l in 0..4 {
                    *ge.add(full + l) += *wp.add(full * k + kk * 4 + l);
                }
            }
        }
        first = full + 4;
    }
    let at = |i: usize, kk: usize| {
        if i < first {
            full * k + kk * 4 + (i - full)
        } else {
            first * k + kk * (n - first) + (i - first)
        }
    };
    for i in first..n {
        for kk in 0..k {
            let zk = &z[kk * R..kk * R + R];
            let dk = &dmu[kk * R..kk * R + R];
            let mut x = ext.map(|e| e[i]).unwrap_or(0.0);
            let mut dr = 0.0;
            for q in 0..R {
                x = w.mt[q * st + i].mul_add(zk[q], x);
                dr = w.n[q * st + i].mul_add(dk[q], dr);
            }
            let (f, dfdx, dfdh) = phi_scalar::<NL>(x, w.h[i]);
            g.h[i] = dr.mul_add(dfdh, g.h[i]);
            let dxu = dr * dfdx;
            g.work[at(i, kk)] = dxu;
            if let Some(gext) = g.ext.as_deref_mut() {
                gext[i] += dxu;
            }
            for q in 0..R {
                g.n[q * st + i] = dk[q].mul_add(f, g.n[q * st + i]);
                g.mt[q * st + i] = dxu.mul_add(zk[q], g.mt[q * st + i]);
            }
        }
    }
    // dL/dz_k = Mᵀ-rows · dL/dx_k (all R rows at once: 2R independent accumulator chains, or
    // R registers of both when `WIDE`).
    let wp = g.work.as_ptr();
    for kk in 0..k {
        let mut acc = [(_mm256_setzero_pd(), _mm256_setzero_pd()); R];
        let mut base = 0;
        if WIDE {
            let mut chunk = [_mm512_setzero_pd(); R];
            while base < full {
                let d = __m512d::at(wp, base * k + kk * LANES);
                for q in 0..R {
                    chunk[q] = __m512d::at(mt[q], base).fma(d, chunk[q]);
                }
                base += LANES;
            }
            for q in 0..R {
                acc[q] = halves(chunk[q]);
            }
        } else {
            while base < full {
                let d0 = load(wp, base * k + kk * 4);
                let d1 = load(wp, (base + 4) * k + kk * 4);
                for q in 0..R {
                    acc[q].0 = load(mt[q], base).fma(d0, acc[q].0);
                    acc[q].1 = load(mt[q], base + 4).fma(d1, acc[q].1);
                }
                base += LANES;
            }
        }
        for q in 0..R {
            let mut tail = 0.0;
            for i in full..n {
                tail = w.mt[q * st + i].mul_add(g.work[at(i, kk)], tail);
            }
            dz[kk * R + q] += hsum(acc[q].0, acc[q].1) + tail;
        }
    }
}
