//! AVX2 + FMA single-precision transition kernels (x86-64, chosen at run time).
//!
//! A chunk of 8 units is one 256-bit register; the forward sums over units run in two
//! interleaved registers per latent dimension (units `base..base+8` and `base+8..base+16`),
//! then one 8-unit chunk if left, then the tail units in order.

use std::arch::x86_64::*;

use super::super::kernel::{by_rank, Grads, Weights};
use super::{act, Weights32};
use crate::model::lowrank::Nonlinearity;

const RELU: u8 = 0;
const CLIPPED: u8 = 1;
const TANH: u8 = 2;
const IDENTITY: u8 = 3;

/// Units per register.
const W: usize = 8;

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

/// Lane-wise scalar tanh (no vector tanh in std).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tanh8(x: __m256) -> __m256 {
    let mut a = [0.0f32; W];
    // SAFETY: `a` has 8 elements.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), x) };
    for v in &mut a {
        *v = v.tanh();
    }
    // SAFETY: `a` has 8 elements.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

/// φ(x; h).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi<const NL: u8>(x: __m256, h: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    match NL {
        RELU => _mm256_max_ps(_mm256_sub_ps(x, h), zero),
        CLIPPED => _mm256_sub_ps(
            _mm256_max_ps(_mm256_add_ps(x, h), zero),
            _mm256_max_ps(x, zero),
        ),
        TANH => tanh8(_mm256_sub_ps(x, h)),
        _ => _mm256_sub_ps(x, h),
    }
}

/// (φ, ∂φ/∂x, ∂φ/∂h).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi_d<const NL: u8>(x: __m256, h: __m256) -> (__m256, __m256, __m256) {
    let zero = _mm256_setzero_ps();
    let one = _mm256_set1_ps(1.0);
    match NL {
        RELU => {
            let xh = _mm256_sub_ps(x, h);
            let on = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(xh, zero), one);
            (_mm256_mul_ps(xh, on), on, _mm256_sub_ps(zero, on))
        }
        CLIPPED => {
            let xh = _mm256_add_ps(x, h);
            let a = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(xh, zero), one);
            let b = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(x, zero), one);
            let f = _mm256_sub_ps(_mm256_max_ps(xh, zero), _mm256_max_ps(x, zero));
            (f, _mm256_sub_ps(a, b), a)
        }
        TANH => {
            let t = tanh8(_mm256_sub_ps(x, h));
            let d = _mm256_sub_ps(one, _mm256_mul_ps(t, t));
            (t, d, _mm256_sub_ps(zero, d))
        }
        _ => (_mm256_sub_ps(x, h), one, _mm256_sub_ps(zero, one)),
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
    macro_rules! go {
        ($r:literal) => {
            match code(w.nonlinearity) {
                RELU => means_r::<$r, RELU>(w, lo, z, ext, mu),
                CLIPPED => means_r::<$r, CLIPPED>(w, lo, z, ext, mu),
                TANH => means_r::<$r, TANH>(w, lo, z, ext, mu),
                _ => means_r::<$r, IDENTITY>(w, lo, z, ext, mu),
            }
        };
    }
    by_rank!(w.rank, go, return false);
    true
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
    macro_rules! go {
        ($r:literal) => {
            match code(w.nonlinearity) {
                RELU => back_r::<$r, RELU>(w, lo, z, ext, dmu, g, dz),
                CLIPPED => back_r::<$r, CLIPPED>(w, lo, z, ext, dmu, g, dz),
                TANH => back_r::<$r, TANH>(w, lo, z, ext, dmu, g, dz),
                _ => back_r::<$r, IDENTITY>(w, lo, z, ext, dmu, g, dz),
            }
        };
    }
    by_rank!(w.rank, go, return false);
    true
}

/// x = e + Σ_q Mᵀ[q] z_q for the 8 units at `at`.
///
/// # Safety
/// As [`load`], for every row pointer and `ep`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn currents<const R: usize>(
    mt: &[*const f32; R],
    zb: &[__m256; R],
    ep: Option<*const f64>,
    at: usize,
) -> __m256 {
    unsafe {
        let mut x = match ep {
            Some(e) => load_f64(e, at),
            None => _mm256_setzero_ps(),
        };
        for q in 0..R {
            x = _mm256_fmadd_ps(load(mt[q], at), zb[q], x);
        }
        x
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn means_r<const R: usize, const NL: u8>(
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
        let mut zb = [zero; R];
        for q in 0..R {
            zb[q] = _mm256_set1_ps(zk[q] as f32);
        }
        let mut acc = [[zero; 2]; R];
        let mut base = 0;
        // SAFETY (all blocks below): at + 8 ≤ full ≤ n and every row pointer has n entries
        // (checked).
        while base < pairs {
            for half in 0..2 {
                let at = base + W * half;
                unsafe {
                    let x = currents::<R>(&mt, &zb, ep, at);
                    let f = phi::<NL>(x, load(hp, at));
                    for q in 0..R {
                        acc[q][half] = _mm256_fmadd_ps(load(nn[q], at), f, acc[q][half]);
                    }
                }
            }
            base += 2 * W;
        }
        if base < full {
            unsafe {
                let x = currents::<R>(&mt, &zb, ep, base);
                let f = phi::<NL>(x, load(hp, base));
                for q in 0..R {
                    acc[q][0] = _mm256_fmadd_ps(load(nn[q], base), f, acc[q][0]);
                }
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

#[inline]
#[target_feature(enable = "avx2,fma")]
fn back_r<const R: usize, const NL: u8>(
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
    // Workspace: dL/dx chunk-major ([chunk of 8][k][8]) for the full chunks, then [k][tail],
    // then φ of one chunk for the K particles, then z and dL/dμ rounded to f32 (K × R each).
    let need = k * n + W * k + 2 * k * R;
    if g.work32.len() < need {
        g.work32.resize(need, 0.0);
    }
    {
        let (zf, df) = g.work32[k * n + W * k..need].split_at_mut(k * R);
        for (a, b) in zf.iter_mut().zip(z) {
            *a = *b as f32;
        }
        for (a, b) in df.iter_mut().zip(dmu) {
            *a = *b as f32;
        }
    }
    let full = n / W * W;
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
    // SAFETY: the workspace has k·n + 8k + 2kR entries (resized above).
    let fp = unsafe { wp.add(k * n) };
    // SAFETY: as above.
    let (zfp, dfp) = unsafe { (wp.add(k * n + W * k), wp.add(k * n + W * k + k * R)) };
    let mut base = 0;
    while base < full {
        // SAFETY: base + 8 ≤ full ≤ n, every row pointer has n entries and the workspace
        // k·n + 8k (all checked above).
        unsafe {
            let h = load(hp, base);
            let e = match ep {
                Some(e) => load_f64(e, base),
                None => zero,
            };
            // Pass A: per particle, φ and dL/dx of the chunk (and the h, input sums).
            let mut agh = zero;
            let mut age = zero;
            for kk in 0..k {
                let mut x = e;
                let mut dr = zero;
                for q in 0..R {
                    let zq = _mm256_broadcast_ss(&*zfp.add(kk * R + q));
                    let dq = _mm256_broadcast_ss(&*dfp.add(kk * R + q));
                    x = _mm256_fmadd_ps(load(mt[q], base), zq, x);
                    dr = _mm256_fmadd_ps(load(nn[q], base), dq, dr);
                }
                let (f, dfdx, dfdh) = phi_d::<NL>(x, h);
                agh = _mm256_fmadd_ps(dr, dfdh, agh);
                let dxu = _mm256_mul_ps(dr, dfdx);
                store(wp, (base / W * k + kk) * W, dxu);
                store(fp, kk * W, f);
                age = _mm256_add_ps(age, dxu);
            }
            // Pass B: the outer-product sums of n and M over the particles.
            let mut agmt = [zero; R];
            let mut agn = [zero; R];
            for kk in 0..k {
                let f = load(fp, kk * W);
                let dxu = load(wp, (base / W * k + kk) * W);
                for q in 0..R {
                    let zq = _mm256_broadcast_ss(&*zfp.add(kk * R + q));
                    let dq = _mm256_broadcast_ss(&*dfp.add(kk * R + q));
                    agn[q] = _mm256_fmadd_ps(dq, f, agn[q]);
                    agmt[q] = _mm256_fmadd_ps(dxu, zq, agmt[q]);
                }
            }
            for q in 0..R {
                add_to_f64(gmt[q], base, agmt[q]);
                add_to_f64(gn[q], base, agn[q]);
            }
            add_to_f64(ghp, base, agh);
            if let Some(ge) = gep {
                add_to_f64(ge, base, age);
            }
        }
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
    // dL/dz_k = Mᵀ-rows · dL/dx_k (all R rows at once: 2R independent accumulator chains).
    let wp = g.work32.as_ptr();
    let pairs = n / (2 * W) * (2 * W);
    for kk in 0..k {
        let mut acc = [[zero; 2]; R];
        let mut base = 0;
        // SAFETY (both blocks): as above.
        while base < pairs {
            unsafe {
                let d0 = load(wp, (base / W * k + kk) * W);
                let d1 = load(wp, ((base / W + 1) * k + kk) * W);
                for q in 0..R {
                    acc[q][0] = _mm256_fmadd_ps(load(mt[q], base), d0, acc[q][0]);
                    acc[q][1] = _mm256_fmadd_ps(load(mt[q], base + W), d1, acc[q][1]);
                }
            }
            base += 2 * W;
        }
        if base < full {
            unsafe {
                let d0 = load(wp, (base / W * k + kk) * W);
                for q in 0..R {
                    acc[q][0] = _mm256_fmadd_ps(load(mt[q], base), d0, acc[q][0]);
                }
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
