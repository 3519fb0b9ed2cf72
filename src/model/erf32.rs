//! The f32 GELU of the CNN encoder on sixteen lanes, with the bits of the scalar loop:
//! `libm::erff` (FreeBSD's `s_erff.c` as ported by the `libm` crate) and the `libm::expf` it
//! calls, evaluated on every lane with the same f32 operations in the same order (no fused
//! multiply-adds: Rust does not contract the scalar code either), each lane keeping the result of
//! its own branch. Lanes outside the range these functions treat specially (non-finite inputs;
//! |x| ≥ 87.34 for `expf`, which `erff` never passes) make the whole vector go through the
//! scalar functions.
//!
//! The scalar loop (`pre` → `Φ(pre) = 0.5 (1 + erf(pre / √2))`, `out = pre · Φ(pre)`) took
//! ≈ 6 % of a Poisson f32 epoch, mostly in `erff`'s calls and branches.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::encoder::{gelu_cdf, gelu_derivative, INV_SQRT_2PI};

/// AVX-512F: the lanes below run.
#[cfg(target_arch = "x86_64")]
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

/// `cdf[i] = 0.5 · (1 + erff(pre[i] · (1/√2 as f32)))`, `out[i] = pre[i] · cdf[i]` for equal
/// lengths, with the bits of the encoder's scalar [`gelu_cdf`]; `false` (nothing done) without
/// AVX-512F.
pub(super) fn gelu(pre: &[f32], out: &mut [f32], cdf: &mut [f32]) -> bool {
    if !available() || out.len() != pre.len() || cdf.len() != pre.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F checked above; the lengths are equal.
    unsafe {
        gelu16(pre, out, cdf)
    };
    cfg!(target_arch = "x86_64")
}

/// `d[i] *= cdf[i] + pre[i] · exp(−0.5 · pre[i] · pre[i]) · (1/√(2π) as f32)` (the GELU's
/// derivative from the forward pass's Φ) with the bits of the encoder's [`gelu_derivative`], whose `f32::exp`
/// is glibc's `expf` (its FMA version on these CPUs; [`expf_glibc16`]); `false` (nothing done)
/// without AVX-512F or off glibc.
pub(super) fn gelu_grad(d: &mut [f32], pre: &[f32], cdf: &[f32]) -> bool {
    if !available() || !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return false;
    }
    if pre.len() != d.len() || cdf.len() != d.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F checked above (it implies the FMA that glibc's `expf` then uses); the
    // lengths are equal.
    unsafe {
        gelu_grad16(d, pre, cdf)
    };
    cfg!(target_arch = "x86_64")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gelu_grad16(d: &mut [f32], pre: &[f32], cdf: &[f32]) {
    let n = d.len();
    let full = n - n % 16;
    // The scalar formula's constants, rounded to f32 as its `F::c` does.
    let (minus_half, inv) = (_mm512_set1_ps(-0.5), _mm512_set1_ps(INV_SQRT_2PI as f32));
    let mut i = 0;
    while i < full {
        let p = _mm512_loadu_ps(pre.as_ptr().add(i));
        let c = _mm512_loadu_ps(cdf.as_ptr().add(i));
        let e = expf_glibc16(_mm512_mul_ps(_mm512_mul_ps(minus_half, p), p));
        let g = _mm512_add_ps(c, _mm512_mul_ps(p, _mm512_mul_ps(e, inv)));
        let dp = d.as_mut_ptr().add(i);
        _mm512_storeu_ps(dp, _mm512_mul_ps(_mm512_loadu_ps(dp), g));
        i += 16;
    }
    for j in full..n {
        d[j] *= gelu_derivative(pre[j], cdf[j]);
    }
}

/// glibc's `expf` (`__expf_fma`, from ARM's optimized routines: 2^(k/32) from a table times a
/// cubic in double precision, with the fused multiply-adds of its FMA build) on sixteen lanes,
/// bit for bit; |x| ≥ 2^6 · 1.375 (the range it treats specially: overflow, underflow, NaN)
/// goes through `f32::exp` for the whole vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn expf_glibc16(x: __m512) -> __m512 {
    let top = _mm512_and_si512(
        _mm512_srli_epi32::<20>(_mm512_castps_si512(x)),
        _mm512_set1_epi32(0x7ff),
    );
    if _mm512_cmpgt_epi32_mask(top, _mm512_set1_epi32(0x42a)) != 0 {
        return scalar(x, f32::exp);
    }
    let d = |b: u64| _mm512_set1_pd(f64::from_bits(b));
    let (inv_ln2_n, shift) = (d(0x4047_1547_652b_82fe), d(0x4338_0000_0000_0000));
    let (c0, c1, c2) = (
        d(0x3ebc_6af8_4b91_2394),
        d(0x3f2e_bfce_50fa_c4f3),
        d(0x3f96_2e42_ff0c_52d6),
    );
    let half = |xd: __m512d| {
        let kd = _mm512_fmadd_pd(inv_ln2_n, xd, shift);
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, shift);
        let r = _mm512_fmsub_pd(inv_ln2_n, xd, kd);
        let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
        let t = _mm512_i64gather_epi64::<8>(idx, EXP2F_TABLE.as_ptr() as *const i64);
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(r, c0, c1);
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(r, c2, _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, r2, y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    };
    let lo = half(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
    let hi = half(_mm512_cvtps_pd(_mm256_castpd_ps(
        _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)),
    )));
    _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi)
}

/// glibc's `__exp2f_data.tab`: 2^(i/32) as bits, less i << 47.
const EXP2F_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// 1/√2 rounded to f32, as the scalar `F::c(FRAC_1_SQRT_2)`.
const INV_SQRT2: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu16(pre: &[f32], out: &mut [f32], cdf: &mut [f32]) {
    let n = pre.len();
    let full = n - n % 16;
    let (half, one, scale) = (
        _mm512_set1_ps(0.5),
        _mm512_set1_ps(1.0),
        _mm512_set1_ps(INV_SQRT2),
    );
    let mut i = 0;
    while i < full {
        let p = _mm512_loadu_ps(pre.as_ptr().add(i));
        let c = _mm512_mul_ps(half, _mm512_add_ps(one, erff16(_mm512_mul_ps(p, scale))));
        _mm512_storeu_ps(cdf.as_mut_ptr().add(i), c);
        _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(p, c));
        i += 16;
    }
    for j in full..n {
        cdf[j] = gelu_cdf(pre[j]);
        out[j] = pre[j] * cdf[j];
    }
}

/// `libm::erff` on sixteen lanes, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn erff16(x: __m512) -> __m512 {
    let bits = _mm512_castps_si512(x);
    let ix = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
    let lt = |bound: u32| _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(bound as i32));
    if lt(0x7f80_0000) != 0xffff {
        return scalar(x, libm::erff);
    }
    let s = |v: f32| _mm512_set1_ps(v);
    let (add, mul, div, sub) = (
        |a, b| _mm512_add_ps(a, b),
        |a, b| _mm512_mul_ps(a, b),
        |a, b| _mm512_div_ps(a, b),
        |a, b| _mm512_sub_ps(a, b),
    );
    // c0 + t·(c1 + t·(c2 + …)), innermost first, a multiply then an add at each level.
    let horner = |t: __m512, c: &[f32]| {
        let mut acc = s(c[c.len() - 1]);
        for &ci in c[..c.len() - 1].iter().rev() {
            acc = add(s(ci), mul(t, acc));
        }
        acc
    };
    let ax = _mm512_castsi512_ps(ix);
    let tiny = lt(0x3180_0000); // |x| < 2^-28
    let small = lt(0x3f58_0000); // |x| < 0.84375
    let mid = lt(0x3fa0_0000); // |x| < 1.25
    let below6 = lt(0x40c0_0000); // |x| < 6
    let below_rb = lt(0x4036_db6d); // |x| < 1/0.35
    let one = s(1.0);
    // |x| ≥ 6: 1 − 2^-120 (which is 1 in f32), signed below.
    let mut y = sub(one, s(f32::from_bits(0x0380_0000)));
    if below6 & !mid != 0 {
        // erfc2: 1.25 ≤ |x| < 6.
        let t = div(one, mul(ax, ax));
        let (ra, sa) = (horner(t, &RA), add(one, mul(t, horner(t, &SA))));
        let (rb, sb) = (horner(t, &RB), add(one, mul(t, horner(t, &SB))));
        let r = _mm512_mask_blend_ps(below_rb, rb, ra);
        let big_s = _mm512_mask_blend_ps(below_rb, sb, sa);
        let z = _mm512_castsi512_ps(_mm512_and_si512(
            ix,
            _mm512_set1_epi32(0xffff_e000u32 as i32),
        ));
        let lanes = below6 & !mid;
        let zero = _mm512_setzero_ps();
        let neg_z = _mm512_sub_ps(zero, z);
        let arg1 = _mm512_mask_blend_ps(lanes, zero, sub(mul(neg_z, z), s(0.5625)));
        let arg2 =
            _mm512_mask_blend_ps(lanes, zero, add(mul(sub(z, ax), add(z, ax)), div(r, big_s)));
        let e = div(mul(expf16(arg1), expf16(arg2)), ax);
        y = _mm512_mask_blend_ps(lanes, y, sub(one, e));
    }
    if mid & !small != 0 {
        // erfc1: 0.84375 ≤ |x| < 1.25.
        let t = sub(ax, one);
        let p = horner(t, &PA);
        let q = add(one, mul(t, horner(t, &QA)));
        let erfc1 = sub(sub(one, s(ERX)), div(p, q));
        y = _mm512_mask_blend_ps(mid & !small, y, sub(one, erfc1));
    }
    // Signed as the scalar `if sign != 0 { -y } else { y }` (a flip of the sign bit).
    let sign = _mm512_and_si512(bits, _mm512_set1_epi32(i32::MIN));
    let mut out = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(y), sign));
    if small & !tiny != 0 {
        let z = mul(x, x);
        let r = horner(z, &PP);
        let q = add(one, mul(z, horner(z, &QQ)));
        out = _mm512_mask_blend_ps(small & !tiny, out, add(x, mul(x, div(r, q))));
    }
    if tiny != 0 {
        let y = mul(s(0.125), add(mul(s(8.0), x), mul(s(EFX8), x)));
        out = _mm512_mask_blend_ps(tiny, out, y);
    }
    out
}

/// `libm::expf` on sixteen lanes, bit for bit (FreeBSD's `e_expf.c`: k = round(x / ln 2),
/// x − k ln 2 in two parts, a rational approximation, then the scaling by 2^k, one exact
/// multiply in this range).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn expf16(x: __m512) -> __m512 {
    let bits = _mm512_castps_si512(x);
    let hx = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
    let gt = |bound: u32| _mm512_cmpgt_epu32_mask(hx, _mm512_set1_epi32(bound as i32));
    // |x| ≥ 87.34 or NaN: the scalar special cases.
    if _mm512_cmpge_epu32_mask(hx, _mm512_set1_epi32(0x42ae_ac50)) != 0 {
        return scalar(x, libm::expf);
    }
    let s = |v: f32| _mm512_set1_ps(v);
    let negative = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
    // k: (x/ln2 ± 0.5) truncated when |x| > 1.5 ln2, ±1 when |x| > 0.5 ln2, else 0.
    let half = _mm512_mask_blend_ps(negative, s(0.5), s(-0.5));
    let k_far = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(s(INV_LN2), x), half));
    let k_near = _mm512_mask_blend_epi32(negative, _mm512_set1_epi32(1), _mm512_set1_epi32(-1));
    let k = _mm512_mask_blend_epi32(
        gt(0x3f85_1592),
        _mm512_maskz_mov_epi32(gt(0x3eb1_7218), k_near),
        k_far,
    );
    // With k = 0 the scalar code takes hi = x, lo = 0: what these give.
    let kf = _mm512_cvtepi32_ps(k);
    let hi = _mm512_sub_ps(x, _mm512_mul_ps(kf, s(LN2_HI)));
    let lo = _mm512_mul_ps(kf, s(LN2_LO));
    let r = _mm512_sub_ps(hi, lo);
    let xx = _mm512_mul_ps(r, r);
    let c = _mm512_sub_ps(
        r,
        _mm512_mul_ps(xx, _mm512_add_ps(s(P1), _mm512_mul_ps(xx, s(P2)))),
    );
    let ratio = _mm512_div_ps(_mm512_mul_ps(r, c), _mm512_sub_ps(s(2.0), c));
    let y = _mm512_add_ps(s(1.0), _mm512_add_ps(_mm512_sub_ps(ratio, lo), hi));
    // 2^k for −126 ≤ k ≤ 127 (here |k| ≤ 126): scalbnf's one multiply.
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        k,
        _mm512_set1_epi32(0x7f),
    )));
    let y = _mm512_mul_ps(y, scale);
    // |x| ≤ 2^-14: 1 + x.
    _mm512_mask_blend_ps(gt(0x3900_0000), _mm512_add_ps(s(1.0), x), y)
}

/// `f` on each lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scalar(x: __m512, f: fn(f32) -> f32) -> __m512 {
    let mut v = [0.0f32; 16];
    _mm512_storeu_ps(v.as_mut_ptr(), x);
    for a in &mut v {
        *a = f(*a);
    }
    _mm512_loadu_ps(v.as_ptr())
}

// The constants of `libm`'s erff.rs and expf.rs, digit for digit (more digits than an f32 holds,
// rounding to the same f32), in the order of their polynomials.
#[allow(clippy::excessive_precision)]
mod constants {
    pub(super) const ERX: f32 = 8.4506291151e-01;
    pub(super) const EFX8: f32 = 1.0270333290e+00;
    pub(super) const PP: [f32; 5] = [
        1.2837916613e-01,
        -3.2504209876e-01,
        -2.8481749818e-02,
        -5.7702702470e-03,
        -2.3763017452e-05,
    ];
    pub(super) const QQ: [f32; 5] = [
        3.9791721106e-01,
        6.5022252500e-02,
        5.0813062117e-03,
        1.3249473704e-04,
        -3.9602282413e-06,
    ];
    pub(super) const PA: [f32; 7] = [
        -2.3621185683e-03,
        4.1485610604e-01,
        -3.7220788002e-01,
        3.1834661961e-01,
        -1.1089469492e-01,
        3.5478305072e-02,
        -2.1663755178e-03,
    ];
    pub(super) const QA: [f32; 6] = [
        1.0642088205e-01,
        5.4039794207e-01,
        7.1828655899e-02,
        1.2617121637e-01,
        1.3637083583e-02,
        1.1984500103e-02,
    ];
    pub(super) const RA: [f32; 8] = [
        -9.8649440333e-03,
        -6.9385856390e-01,
        -1.0558626175e+01,
        -6.2375331879e+01,
        -1.6239666748e+02,
        -1.8460508728e+02,
        -8.1287437439e+01,
        -9.8143291473e+00,
    ];
    pub(super) const SA: [f32; 8] = [
        1.9651271820e+01,
        1.3765776062e+02,
        4.3456588745e+02,
        6.4538726807e+02,
        4.2900814819e+02,
        1.0863500214e+02,
        6.5702495575e+00,
        -6.0424413532e-02,
    ];
    pub(super) const RB: [f32; 7] = [
        -9.8649431020e-03,
        -7.9928326607e-01,
        -1.7757955551e+01,
        -1.6063638306e+02,
        -6.3756646729e+02,
        -1.0250950928e+03,
        -4.8351919556e+02,
    ];
    pub(super) const SB: [f32; 7] = [
        3.0338060379e+01,
        3.2579251099e+02,
        1.5367296143e+03,
        3.1998581543e+03,
        2.5530502930e+03,
        4.7452853394e+02,
        -2.2440952301e+01,
    ];
    pub(super) const LN2_HI: f32 = 6.9314575195e-01;
    pub(super) const LN2_LO: f32 = 1.4286067653e-06;
    pub(super) const INV_LN2: f32 = 1.4426950216e+00;
    pub(super) const P1: f32 = 1.6666625440e-1;
    pub(super) const P2: f32 = -2.7667332906e-3;
}
use constants::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th f32 bit pattern below `end` (both signs), and the boundaries of the
    /// scalar branches with their neighbours.
    fn inputs(step: u32, end: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..end)
            .step_by(step as usize)
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect();
        for b in [
            0x3180_0000u32,
            0x3900_0000,
            0x3eb1_7218,
            0x3f58_0000,
            0x3f85_1592,
            0x3fa0_0000,
            0x4036_db6d,
            0x40c0_0000,
            0x42ae_ac50,
        ] {
            for d in [-1i32, 0, 1] {
                let x = f32::from_bits(b.wrapping_add_signed(d));
                v.extend([x, -x]);
            }
        }
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0]);
        v
    }

    #[cfg(target_arch = "x86_64")]
    fn check(xs: &[f32], vector: unsafe fn(__m512) -> __m512, scalar: fn(f32) -> f32, what: &str) {
        for chunk in xs.chunks(16) {
            let mut lanes = [0.25f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0.0f32; 16];
            // SAFETY: the callers checked AVX-512F.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), vector(_mm512_loadu_ps(lanes.as_ptr()))) };
            for (x, g) in lanes.iter().zip(got) {
                let want = scalar(*x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{what}({x:e} = {:#x}): {g:e} vs {want:e}",
                    x.to_bits()
                );
            }
        }
    }

    /// erff on every 61st f32 below 16 (≈ 35 million inputs, each sign), at the branch
    /// boundaries, ±0, ±∞ and NaN: the bits of `libm::erff`.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn erff_has_the_bits_of_libm() {
        if !available() {
            eprintln!("no AVX-512F: the scalar loop runs, nothing to compare");
            return;
        }
        check(&inputs(61, 0x4180_0000), erff16, libm::erff, "erff");
    }

    /// expf on every 61st f32 below 90 in magnitude and at its boundaries: the bits of
    /// `libm::expf` (the special range goes through it).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn expf_has_the_bits_of_libm() {
        if !available() {
            eprintln!("no AVX-512F: the scalar loop runs, nothing to compare");
            return;
        }
        check(&inputs(61, 0x42b4_0000), expf16, libm::expf, "expf");
    }

    /// glibc's expf on every 61st f32 below 2^7 in magnitude and at its boundaries: the bits of
    /// `f32::exp` here (the special range goes through it).
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_has_the_bits_of_glibc() {
        if !available() {
            eprintln!("no AVX-512F: the scalar loop runs, nothing to compare");
            return;
        }
        let mut xs = inputs(61, 0x4300_0000);
        xs.extend([
            -103.972084f32,
            -103.97209,
            -103.28,
            -88.0,
            -87.99999,
            88.72,
            88.73,
        ]);
        check(&xs, expf_glibc16, f32::exp, "expf");
    }

    /// The GELU's derivative loop, remainder included, against the scalar formula.
    #[test]
    fn gelu_grad_has_the_bits_of_the_scalar_formula() {
        let pre: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0373).collect();
        let cdf: Vec<f32> = pre.iter().map(|&p| gelu_cdf(p)).collect();
        let d0: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let mut d = d0.clone();
        if !gelu_grad(&mut d, &pre, &cdf) {
            eprintln!("no AVX-512F or not glibc: the scalar loop runs, nothing to compare");
            return;
        }
        for i in 0..1000 {
            let want = d0[i] * gelu_derivative(pre[i], cdf[i]);
            assert_eq!(d[i].to_bits(), want.to_bits(), "{}", pre[i]);
        }
    }

    /// The GELU loop, remainder included, against the scalar formula.
    #[test]
    fn gelu_has_the_bits_of_the_scalar_formula() {
        let pre: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let (mut out, mut cdf) = (vec![0.0; 1000], vec![0.0; 1000]);
        if !gelu(&pre, &mut out, &mut cdf) {
            eprintln!("no AVX-512F: the scalar loop runs, nothing to compare");
            return;
        }
        for (i, &p) in pre.iter().enumerate() {
            let c = gelu_cdf(p);
            let o = p * c;
            assert_eq!(
                (out[i].to_bits(), cdf[i].to_bits()),
                (o.to_bits(), c.to_bits()),
                "{p}"
            );
        }
    }
}
