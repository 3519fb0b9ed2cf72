//! AVX2 + FMA versions of the transition kernels (x86-64, chosen at run time).
//!
//! Same arithmetic, in the same order, as the portable kernels with fused multiply-adds
//! (`F = true`): a chunk of [`LANES`] = 8 units is two 256-bit registers (lo, hi), lane l
//! accumulates unit `base + l`, and the horizontal sum is the portable `hsum`. The tests check
//! that both give bit-identical results.

use std::arch::x86_64::*;

use super::{Grads, Weights, LANES};
use crate::model::lowrank::Nonlinearity;

const RELU: u8 = 0;
const CLIPPED: u8 = 1;
const TANH: u8 = 2;
const IDENTITY: u8 = 3;

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

/// Stores 4 values at `p + at` (same contract as [`load`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f64, at: usize, v: __m256d) {
    unsafe { _mm256_storeu_pd(p.add(at), v) }
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

/// Lane-wise scalar tanh (no vector tanh in std).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tanh4(x: __m256d) -> __m256d {
    let mut a = [0.0f64; 4];
    // SAFETY: `a` has 4 elements.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), x) };
    for v in &mut a {
        *v = v.tanh();
    }
    // SAFETY: `a` has 4 elements.
    unsafe { _mm256_loadu_pd(a.as_ptr()) }
}

/// φ(x; h).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi<const NL: u8>(x: __m256d, h: __m256d) -> __m256d {
    let zero = _mm256_setzero_pd();
    match NL {
        RELU => _mm256_max_pd(_mm256_sub_pd(x, h), zero),
        CLIPPED => _mm256_sub_pd(
            _mm256_max_pd(_mm256_add_pd(x, h), zero),
            _mm256_max_pd(x, zero),
        ),
        TANH => tanh4(_mm256_sub_pd(x, h)),
        _ => _mm256_sub_pd(x, h),
    }
}

/// (φ, ∂φ/∂x, ∂φ/∂h).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi_d<const NL: u8>(x: __m256d, h: __m256d) -> (__m256d, __m256d, __m256d) {
    let zero = _mm256_setzero_pd();
    let one = _mm256_set1_pd(1.0);
    match NL {
        RELU => {
            let xh = _mm256_sub_pd(x, h);
            let on = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(xh, zero), one);
            (_mm256_mul_pd(xh, on), on, _mm256_sub_pd(zero, on))
        }
        CLIPPED => {
            let xh = _mm256_add_pd(x, h);
            let a = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(xh, zero), one);
            let b = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(x, zero), one);
            let f = _mm256_sub_pd(_mm256_max_pd(xh, zero), _mm256_max_pd(x, zero));
            (f, _mm256_sub_pd(a, b), a)
        }
        TANH => {
            let t = tanh4(_mm256_sub_pd(x, h));
            let d = _mm256_sub_pd(one, _mm256_mul_pd(t, t));
            (t, d, _mm256_sub_pd(zero, d))
        }
        _ => (_mm256_sub_pd(x, h), one, _mm256_sub_pd(zero, one)),
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

#[inline]
fn code(nl: Nonlinearity) -> u8 {
    match nl {
        Nonlinearity::Relu => RELU,
        Nonlinearity::ClippedRelu => CLIPPED,
        Nonlinearity::Tanh => TANH,
        Nonlinearity::Identity => IDENTITY,
    }
}

/// Transition means (see [`super::means`]); `false` when the rank has no AVX2 kernel.
#[target_feature(enable = "avx2,fma")]
pub(super) fn means(w: &Weights<'_>, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) -> bool {
    macro_rules! go {
        ($r:literal) => {
            match code(w.nonlinearity) {
                RELU => means_r::<$r, RELU>(w, z, ext, mu),
                CLIPPED => means_r::<$r, CLIPPED>(w, z, ext, mu),
                TANH => means_r::<$r, TANH>(w, z, ext, mu),
                _ => means_r::<$r, IDENTITY>(w, z, ext, mu),
            }
        };
    }
    by_rank!(w.rank, go, return false);
    true
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
    macro_rules! go {
        ($r:literal) => {
            match code(w.nonlinearity) {
                RELU => back_r::<$r, RELU>(w, z, ext, dmu, g, dz),
                CLIPPED => back_r::<$r, CLIPPED>(w, z, ext, dmu, g, dz),
                TANH => back_r::<$r, TANH>(w, z, ext, dmu, g, dz),
                _ => back_r::<$r, IDENTITY>(w, z, ext, dmu, g, dz),
            }
        };
    }
    by_rank!(w.rank, go, return false);
    true
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn means_r<const R: usize, const NL: u8>(
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
        let mut zb = [_mm256_setzero_pd(); R];
        for q in 0..R {
            zb[q] = _mm256_set1_pd(zk[q]);
        }
        let mut acc = [[_mm256_setzero_pd(); 2]; R];
        let mut base = 0;
        while base < full {
            for half in 0..2 {
                let at = base + 4 * half;
                // SAFETY: at + 4 ≤ full ≤ n and every row pointer has n entries (checked).
                unsafe {
                    let mut x = match ep {
                        Some(e) => load(e, at),
                        None => _mm256_setzero_pd(),
                    };
                    for q in 0..R {
                        x = _mm256_fmadd_pd(load(mt[q], at), zb[q], x);
                    }
                    let f = phi::<NL>(x, load(hp, at));
                    for q in 0..R {
                        acc[q][half] = _mm256_fmadd_pd(load(nn[q], at), f, acc[q][half]);
                    }
                }
            }
            base += LANES;
        }
        let mut tail = [0.0f64; R];
        for i in full..n {
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
            mu[kk * R + q] = w.decay.mul_add(zk[q], hsum(acc[q][0], acc[q][1]) + tail[q]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn back_r<const R: usize, const NL: u8>(
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
    // Workspace: dL/dx chunk-major ([chunk of 4][k][4]) for the full chunks, then [k][tail],
    // then φ of one chunk for the K particles.
    if g.work.len() < k * n + 4 * k {
        g.work.resize(k * n + 4 * k, 0.0);
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
    // SAFETY: the workspace has k·n + 4k entries (resized above).
    let fp = unsafe { wp.add(k * n) };
    let zero = _mm256_setzero_pd();
    let mut base = 0;
    while base < full {
        // SAFETY: base + 4 ≤ full ≤ n, every row pointer has n entries and the workspace
        // k rows of `st` ≥ n (all checked above).
        unsafe {
            let h = load(hp, base);
            let e = match ep {
                Some(e) => load(e, base),
                None => zero,
            };
            // Pass A: per particle, φ and dL/dx of the chunk (and the h, input sums).
            let mut agh = load(ghp, base);
            let mut age = zero;
            for kk in 0..k {
                let mut x = e;
                let mut dr = zero;
                for q in 0..R {
                    x = _mm256_fmadd_pd(load(mt[q], base), _mm256_set1_pd(z[kk * R + q]), x);
                    dr = _mm256_fmadd_pd(load(nn[q], base), _mm256_set1_pd(dmu[kk * R + q]), dr);
                }
                let (f, dfdx, dfdh) = phi_d::<NL>(x, h);
                agh = _mm256_fmadd_pd(dr, dfdh, agh);
                let dxu = _mm256_mul_pd(dr, dfdx);
                store(wp, (base / 4 * k + kk) * 4, dxu);
                store(fp, kk * 4, f);
                age = _mm256_add_pd(age, dxu);
            }
            // Pass B: the outer-product sums of n and M over the particles.
            let mut agmt = [zero; R];
            let mut agn = [zero; R];
            for q in 0..R {
                agmt[q] = load(gmt[q], base);
                agn[q] = load(gn[q], base);
            }
            for kk in 0..k {
                let f = load(fp, kk * 4);
                let dxu = load(wp, (base / 4 * k + kk) * 4);
                for q in 0..R {
                    agn[q] = _mm256_fmadd_pd(_mm256_set1_pd(dmu[kk * R + q]), f, agn[q]);
                    agmt[q] = _mm256_fmadd_pd(dxu, _mm256_set1_pd(z[kk * R + q]), agmt[q]);
                }
            }
            for q in 0..R {
                store(gmt[q], base, agmt[q]);
                store(gn[q], base, agn[q]);
            }
            store(ghp, base, agh);
            if let Some(ge) = gep {
                store(ge, base, _mm256_add_pd(load(ge, base), age));
            }
        }
        // No sums over units here: any chunking gives the same per-unit results.
        base += 4;
    }
    for i in full..n {
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
            g.work[full * k + kk * (n - full) + (i - full)] = dxu;
            if let Some(gext) = g.ext.as_deref_mut() {
                gext[i] += dxu;
            }
            for q in 0..R {
                g.n[q * st + i] = dk[q].mul_add(f, g.n[q * st + i]);
                g.mt[q * st + i] = dxu.mul_add(zk[q], g.mt[q * st + i]);
            }
        }
    }
    // dL/dz_k = Mᵀ-rows · dL/dx_k (all R rows at once: 2R independent accumulator chains)
    let wp = g.work.as_ptr();
    for kk in 0..k {
        let mut acc = [[zero; 2]; R];
        let mut base = 0;
        while base < full {
            // SAFETY: as above.
            unsafe {
                let d0 = load(wp, (base / 4 * k + kk) * 4);
                let d1 = load(wp, ((base / 4 + 1) * k + kk) * 4);
                for q in 0..R {
                    acc[q][0] = _mm256_fmadd_pd(load(mt[q], base), d0, acc[q][0]);
                    acc[q][1] = _mm256_fmadd_pd(load(mt[q], base + 4), d1, acc[q][1]);
                }
            }
            base += LANES;
        }
        for q in 0..R {
            let mut tail = 0.0;
            for i in full..n {
                tail =
                    w.mt[q * st + i].mul_add(g.work[full * k + kk * (n - full) + (i - full)], tail);
            }
            dz[kk * R + q] += hsum(acc[q][0], acc[q][1]) + tail;
        }
    }
}
