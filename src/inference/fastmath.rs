//! Branch-free `exp` and `ln` in f64 (≈ 1 ulp) that the compiler can inline and vectorise:
//! the Poisson likelihood evaluates softplus and a logarithm for every unit × particle × step,
//! and calls into libm dominated the encoder-proposal training time.
//!
//! Both use the classic reductions: exp(x) = 2ⁿ e^r with r = x − n ln 2 (Cody–Waite split ln 2,
//! |r| ≤ ln2/2, Taylor to degree 13); ln(x) = k ln 2 + 2 atanh(f/(2+f)) with x = 2ᵏ(1+f),
//! 1+f ∈ [√½, √2) (odd series to s²¹). Inputs outside the ranges used here (exp: ≤ 700;
//! ln: positive normal numbers) are the caller's responsibility.

const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const LOG2_E: f64 = std::f64::consts::LOG2_E;

/// e^x for x ∈ [−708, 700].
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // max/min (not clamp): the same NaN handling as the AVX2 version.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-708.0).min(700.0);
    // Round to nearest by the 1.5·2⁵² shifter (vectorises, unlike `round`); the low mantissa
    // bits of `shifted` hold n.
    let shifted = x * LOG2_E + 6_755_399_441_055_744.0;
    let n = shifted - 6_755_399_441_055_744.0;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 13 (|r| ≤ 0.347: truncation < 1e-17 relative), by
    // Estrin's scheme: pairs, then pairs of pairs, so the dependency chain is four multiply-adds
    // deep instead of Horner's thirteen (the AVX2 version is latency-bound otherwise).
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = 1.0 + 1.0 * r;
    let q1 = 0.5 + (1.0 / 6.0) * r;
    let q2 = (1.0 / 24.0) + (1.0 / 120.0) * r;
    let q3 = (1.0 / 720.0) + (1.0 / 5_040.0) * r;
    let q4 = (1.0 / 40_320.0) + (1.0 / 362_880.0) * r;
    let q5 = (1.0 / 3_628_800.0) + (1.0 / 39_916_800.0) * r;
    let q6 = (1.0 / 479_001_600.0) + (1.0 / 6_227_020_800.0) * r;
    let s0 = q0 + q1 * r2;
    let s1 = q2 + q3 * r2;
    let s2 = q4 + q5 * r2;
    let u0 = s0 + s1 * r4;
    let u1 = s2 + q6 * r4;
    let p = u0 + u1 * r8;
    // 2ⁿ by building the exponent bits (n ∈ [−1022, 1010] here): n + 1023 shifted into the
    // exponent field. No float → int conversion, so the loop vectorises on AVX2.
    let biased = shifted.to_bits().wrapping_add(1023);
    p * f64::from_bits(biased << 52)
}

/// ln x for positive normal x.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    // The biased exponent as a float without an int → float conversion (vectorises on AVX2).
    let e =
        f64::from_bits(0x4330_0000_0000_0000 | ((bits >> 52) & 0x7ff)) - 4_503_599_627_370_496.0;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // m ∈ [1, 2) → [√½, √2)
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    let k = e - 1023.0 + if big { 1.0 } else { 0.0 };
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let s2 = s * s;
    // Σ_i s2^i / (2i + 3), i = 0..9, by Estrin's scheme (as in `exp`).
    let w2 = s2 * s2;
    let w4 = w2 * w2;
    let w8 = w4 * w4;
    let q0 = (1.0 / 3.0) + (1.0 / 5.0) * s2;
    let q1 = (1.0 / 7.0) + (1.0 / 9.0) * s2;
    let q2 = (1.0 / 11.0) + (1.0 / 13.0) * s2;
    let q3 = (1.0 / 15.0) + (1.0 / 17.0) * s2;
    let q4 = (1.0 / 19.0) + (1.0 / 21.0) * s2;
    let u0 = q0 + q1 * w2;
    let u1 = q2 + q3 * w2;
    let p = (u0 + u1 * w4) + q4 * w8;
    // ln m = 2s + 2s³ p(s²); f − (f − 2s) keeps the leading term exact-ish.
    let log_m = 2.0 * s + 2.0 * s * s2 * p;
    k * LN2_HI + (log_m + k * LN2_LO)
}

/// torch's softplus (linear above 20) and its derivative (the logistic function), from e^η.
#[inline(always)]
pub fn softplus_and_sigmoid(eta: f64) -> (f64, f64) {
    let e = exp(eta.min(20.0));
    let u = 1.0 + e;
    let sp = ln(u) - ((u - 1.0) - e) / u;
    let lin = eta > 20.0;
    (if lin { eta } else { sp }, if lin { 1.0 } else { e / u })
}

/// A Poisson-softplus terms function: (η, x, term out, dℓ/dη out, scale), as the SIMD versions.
pub type PoissonTermsFn = unsafe fn(&[f64], &[f64], &mut [f64], &mut [f64], f64);

/// The Poisson-softplus terms x ln λ − λ (λ = softplus(η) + 1e-6) and, with `scale` ≠ 0,
/// scale · dℓ/dη, one unit at a time: the SIMD versions' tail of fewer than a register's units.
pub fn poisson_softplus_scalar(
    eta: &[f64],
    x: &[f64],
    term: &mut [f64],
    deta: &mut [f64],
    scale: f64,
) {
    for i in 0..eta.len() {
        let (sp, sig) = softplus_and_sigmoid(eta[i]);
        let lam = sp + 1e-6;
        term[i] = x[i] * ln(lam) - lam;
        if scale != 0.0 {
            deta[i] = scale * (x[i] / lam - 1.0) * sig;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn exp_and_ln_match_libm_to_a_few_ulp() {
        let mut worst = (0.0f64, 0.0f64);
        let mut x = -700.0;
        while x < 700.0 {
            worst.0 = worst.0.max(rel(exp(x), x.exp()));
            x += 0.0137;
        }
        let mut y = 1e-300f64;
        while y < 1e300 {
            worst.1 = worst.1.max((ln(y) - y.ln()).abs() / y.ln().abs().max(1.0));
            y *= 1.0123;
        }
        for y in [
            1.0 - 1e-9,
            1.0,
            1.0 + 1e-12,
            1.5,
            2.0,
            std::f64::consts::SQRT_2,
        ] {
            worst.1 = worst.1.max((ln(y) - y.ln()).abs());
        }
        assert!(worst.0 < 1e-15, "exp relative error {}", worst.0);
        assert!(worst.1 < 1e-15, "ln error {}", worst.1);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_poisson_terms_equal_the_scalar_ones_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let eta: Vec<f64> = (0..203).map(|i| -30.0 + 0.29 * i as f64).collect();
        // Blocks of eight zero counts (whole vectors take the zero-count path) between counts
        // 0–3 (mixed vectors take the full formula).
        let x: Vec<f64> = (0..203)
            .map(|i| {
                if (i / 8) % 2 == 0 {
                    0.0
                } else {
                    (i % 4) as f64
                }
            })
            .collect();
        let (mut t, mut d) = (vec![0.0; 203], vec![0.0; 203]);
        // SAFETY: AVX2 checked above; equal lengths.
        unsafe { avx2::poisson_softplus(&eta, &x, &mut t, &mut d, 0.7) };
        for i in 0..203 {
            let (sp, sig) = softplus_and_sigmoid(eta[i]);
            let lam = sp + 1e-6;
            assert_eq!(t[i].to_bits(), (x[i] * ln(lam) - lam).to_bits(), "term {i}");
            assert_eq!(
                d[i].to_bits(),
                (0.7 * (x[i] / lam - 1.0) * sig).to_bits(),
                "d {i}"
            );
        }
    }

    #[test]
    fn softplus_matches_the_reference_formula() {
        let mut x = -40.0;
        while x < 40.0 {
            let (sp, sig) = softplus_and_sigmoid(x);
            let want = if x > 20.0 { x } else { x.exp().ln_1p() };
            assert!(rel(sp, want) < 1e-14, "softplus({x}) {sp} vs {want}");
            let want_sig = if x > 20.0 {
                1.0
            } else {
                1.0 / (1.0 + (-x).exp())
            };
            assert!(rel(sig, want_sig) < 1e-14, "sigmoid({x})");
            x += 0.0173;
        }
    }
}

/// AVX2 versions of [`exp`] and [`ln`] on four lanes (same operations in the same order, so
/// the same bits as the scalar functions).
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::{LN2_HI, LN2_LO, LOG2_E};

    const SHIFTER: f64 = 6_755_399_441_055_744.0;

    /// a + b·x (multiply, then add: the scalar functions' rounding, no fused multiply-add).
    #[inline(always)]
    unsafe fn madd(a: __m256d, b: __m256d, x: __m256d) -> __m256d {
        _mm256_add_pd(a, _mm256_mul_pd(b, x))
    }

    /// c0 + c1·x for constants.
    #[inline(always)]
    unsafe fn pair(c0: f64, c1: f64, x: __m256d) -> __m256d {
        madd(_mm256_set1_pd(c0), _mm256_set1_pd(c1), x)
    }

    /// e^x on four lanes, x ∈ [−708, 700].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    pub unsafe fn exp4(x: __m256d) -> __m256d {
        let x = _mm256_min_pd(
            _mm256_max_pd(x, _mm256_set1_pd(-708.0)),
            _mm256_set1_pd(700.0),
        );
        let shifted = _mm256_add_pd(
            _mm256_mul_pd(x, _mm256_set1_pd(LOG2_E)),
            _mm256_set1_pd(SHIFTER),
        );
        let n = _mm256_sub_pd(shifted, _mm256_set1_pd(SHIFTER));
        let r = _mm256_sub_pd(
            _mm256_sub_pd(x, _mm256_mul_pd(n, _mm256_set1_pd(LN2_HI))),
            _mm256_mul_pd(n, _mm256_set1_pd(LN2_LO)),
        );
        // Estrin's scheme, the same operations as the scalar `exp`.
        let r2 = _mm256_mul_pd(r, r);
        let r4 = _mm256_mul_pd(r2, r2);
        let r8 = _mm256_mul_pd(r4, r4);
        let q0 = pair(1.0, 1.0, r);
        let q1 = pair(0.5, 1.0 / 6.0, r);
        let q2 = pair(1.0 / 24.0, 1.0 / 120.0, r);
        let q3 = pair(1.0 / 720.0, 1.0 / 5_040.0, r);
        let q4 = pair(1.0 / 40_320.0, 1.0 / 362_880.0, r);
        let q5 = pair(1.0 / 3_628_800.0, 1.0 / 39_916_800.0, r);
        let q6 = pair(1.0 / 479_001_600.0, 1.0 / 6_227_020_800.0, r);
        let s0 = madd(q0, q1, r2);
        let s1 = madd(q2, q3, r2);
        let s2 = madd(q4, q5, r2);
        let u0 = madd(s0, s1, r4);
        let u1 = madd(s2, q6, r4);
        let p = madd(u0, u1, r8);
        let biased = _mm256_add_epi64(_mm256_castpd_si256(shifted), _mm256_set1_epi64x(1023));
        _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(biased, 52)))
    }

    /// ln x on four lanes, positive normal x.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    pub unsafe fn ln4(x: __m256d) -> __m256d {
        let bits = _mm256_castpd_si256(x);
        let ebits = _mm256_and_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x7ff));
        let e = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(
                ebits,
                _mm256_set1_epi64x(0x4330_0000_0000_0000),
            )),
            _mm256_set1_pd(4_503_599_627_370_496.0),
        );
        let m = _mm256_castsi256_pd(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi64x(0x000f_ffff_ffff_ffff)),
            _mm256_set1_epi64x(0x3ff0_0000_0000_0000),
        ));
        let big = _mm256_cmp_pd::<_CMP_GT_OQ>(m, _mm256_set1_pd(std::f64::consts::SQRT_2));
        let m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
        let k = _mm256_add_pd(
            _mm256_sub_pd(e, _mm256_set1_pd(1023.0)),
            _mm256_and_pd(big, _mm256_set1_pd(1.0)),
        );
        let f = _mm256_sub_pd(m, _mm256_set1_pd(1.0));
        let s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
        let s2 = _mm256_mul_pd(s, s);
        // Estrin's scheme, the same operations as the scalar `ln`.
        let w2 = _mm256_mul_pd(s2, s2);
        let w4 = _mm256_mul_pd(w2, w2);
        let w8 = _mm256_mul_pd(w4, w4);
        let q0 = pair(1.0 / 3.0, 1.0 / 5.0, s2);
        let q1 = pair(1.0 / 7.0, 1.0 / 9.0, s2);
        let q2 = pair(1.0 / 11.0, 1.0 / 13.0, s2);
        let q3 = pair(1.0 / 15.0, 1.0 / 17.0, s2);
        let q4 = pair(1.0 / 19.0, 1.0 / 21.0, s2);
        let u0 = madd(q0, q1, w2);
        let u1 = madd(q2, q3, w2);
        let p = madd(madd(u0, u1, w4), q4, w8);
        let two = _mm256_set1_pd(2.0);
        let log_m = _mm256_add_pd(
            _mm256_mul_pd(two, s),
            _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(two, s), s2), p),
        );
        _mm256_add_pd(
            _mm256_mul_pd(k, _mm256_set1_pd(LN2_HI)),
            _mm256_add_pd(log_m, _mm256_mul_pd(k, _mm256_set1_pd(LN2_LO))),
        )
    }

    /// Poisson-softplus log-likelihood terms x ln λ − λ (λ = softplus(η) + 1e-6) into `term`
    /// and, with `scale` ≠ 0, scale · dℓ/dη into `deta`; the same bits as the scalar loop.
    ///
    /// # Safety
    /// The CPU must support AVX2; all slices have the same length.
    #[target_feature(enable = "avx2")]
    pub unsafe fn poisson_softplus(
        eta: &[f64],
        x: &[f64],
        term: &mut [f64],
        deta: &mut [f64],
        scale: f64,
    ) {
        let n = eta.len();
        let full = n / 4 * 4;
        let one = _mm256_set1_pd(1.0);
        let zero = _mm256_setzero_pd();
        let twenty = _mm256_set1_pd(20.0);
        for i in (0..full).step_by(4) {
            let h = _mm256_loadu_pd(eta.as_ptr().add(i));
            let xv = _mm256_loadu_pd(x.as_ptr().add(i));
            let e = exp4(_mm256_min_pd(h, twenty));
            let u = _mm256_add_pd(one, e);
            let sp = _mm256_sub_pd(
                ln4(u),
                _mm256_div_pd(_mm256_sub_pd(_mm256_sub_pd(u, one), e), u),
            );
            let lin = _mm256_cmp_pd::<_CMP_GT_OQ>(h, twenty);
            let sp = _mm256_blendv_pd(sp, h, lin);
            let sig = _mm256_blendv_pd(_mm256_div_pd(e, u), one, lin);
            let lam = _mm256_add_pd(sp, _mm256_set1_pd(1e-6));
            // Four zero counts (most of them: spike counts per bin are sparse): x ln λ = 0 and
            // x/λ = 0, so t = −λ and d = (scale · −1) · σ, the same bits as the full formula.
            let nonzero = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(xv, zero)) != 0;
            let t = if nonzero {
                _mm256_sub_pd(_mm256_mul_pd(xv, ln4(lam)), lam)
            } else {
                _mm256_sub_pd(zero, lam)
            };
            _mm256_storeu_pd(term.as_mut_ptr().add(i), t);
            if scale != 0.0 {
                let q = if nonzero {
                    _mm256_sub_pd(_mm256_div_pd(xv, lam), one)
                } else {
                    _mm256_set1_pd(-1.0)
                };
                let d = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(scale), q), sig);
                _mm256_storeu_pd(deta.as_mut_ptr().add(i), d);
            }
        }
        super::poisson_softplus_scalar(
            &eta[full..],
            &x[full..],
            &mut term[full..],
            &mut deta[full..],
            scale,
        );
    }
}

/// [`avx2`]'s f64 functions on eight lanes (AVX-512F): the same operations in the same order
/// lane by lane (multiply, then add; no fused multiply-add), so every lane gives the bits of
/// the four-lane and scalar versions.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{LN2_HI, LN2_LO, LOG2_E};

    const SHIFTER: f64 = 6_755_399_441_055_744.0;

    #[inline(always)]
    unsafe fn splat(v: f64) -> __m512d {
        _mm512_set1_pd(v)
    }

    /// a + b·x, rounded twice as the scalar functions do.
    #[inline(always)]
    unsafe fn madd(a: __m512d, b: __m512d, x: __m512d) -> __m512d {
        _mm512_add_pd(a, _mm512_mul_pd(b, x))
    }

    #[inline(always)]
    unsafe fn pair(c0: f64, c1: f64, x: __m512d) -> __m512d {
        madd(splat(c0), splat(c1), x)
    }

    /// As [`super::avx2::exp4`] on eight lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn exp8(x: __m512d) -> __m512d {
        let x = _mm512_min_pd(_mm512_max_pd(x, splat(-708.0)), splat(700.0));
        let shifted = _mm512_add_pd(_mm512_mul_pd(x, splat(LOG2_E)), splat(SHIFTER));
        let n = _mm512_sub_pd(shifted, splat(SHIFTER));
        let r = _mm512_sub_pd(
            _mm512_sub_pd(x, _mm512_mul_pd(n, splat(LN2_HI))),
            _mm512_mul_pd(n, splat(LN2_LO)),
        );
        let r2 = _mm512_mul_pd(r, r);
        let r4 = _mm512_mul_pd(r2, r2);
        let r8 = _mm512_mul_pd(r4, r4);
        let q0 = pair(1.0, 1.0, r);
        let q1 = pair(0.5, 1.0 / 6.0, r);
        let q2 = pair(1.0 / 24.0, 1.0 / 120.0, r);
        let q3 = pair(1.0 / 720.0, 1.0 / 5_040.0, r);
        let q4 = pair(1.0 / 40_320.0, 1.0 / 362_880.0, r);
        let q5 = pair(1.0 / 3_628_800.0, 1.0 / 39_916_800.0, r);
        let q6 = pair(1.0 / 479_001_600.0, 1.0 / 6_227_020_800.0, r);
        let s0 = madd(q0, q1, r2);
        let s1 = madd(q2, q3, r2);
        let s2 = madd(q4, q5, r2);
        let u0 = madd(s0, s1, r4);
        let u1 = madd(s2, q6, r4);
        let p = madd(u0, u1, r8);
        let biased = _mm512_add_epi64(_mm512_castpd_si512(shifted), _mm512_set1_epi64(1023));
        _mm512_mul_pd(p, _mm512_castsi512_pd(_mm512_slli_epi64::<52>(biased)))
    }

    /// As [`super::avx2::ln4`] on eight lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn ln8(x: __m512d) -> __m512d {
        let bits = _mm512_castpd_si512(x);
        let ebits = _mm512_and_si512(_mm512_srli_epi64::<52>(bits), _mm512_set1_epi64(0x7ff));
        let e = _mm512_sub_pd(
            _mm512_castsi512_pd(_mm512_or_si512(
                ebits,
                _mm512_set1_epi64(0x4330_0000_0000_0000),
            )),
            splat(4_503_599_627_370_496.0),
        );
        let m = _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi64(0x000f_ffff_ffff_ffff)),
            _mm512_set1_epi64(0x3ff0_0000_0000_0000),
        ));
        let big = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(m, splat(std::f64::consts::SQRT_2));
        let m = _mm512_mask_mul_pd(m, big, m, splat(0.5));
        let k = _mm512_mask_add_pd(
            _mm512_sub_pd(e, splat(1023.0)),
            big,
            _mm512_sub_pd(e, splat(1023.0)),
            splat(1.0),
        );
        let f = _mm512_sub_pd(m, splat(1.0));
        let s = _mm512_div_pd(f, _mm512_add_pd(splat(2.0), f));
        let s2 = _mm512_mul_pd(s, s);
        let w2 = _mm512_mul_pd(s2, s2);
        let w4 = _mm512_mul_pd(w2, w2);
        let w8 = _mm512_mul_pd(w4, w4);
        let q0 = pair(1.0 / 3.0, 1.0 / 5.0, s2);
        let q1 = pair(1.0 / 7.0, 1.0 / 9.0, s2);
        let q2 = pair(1.0 / 11.0, 1.0 / 13.0, s2);
        let q3 = pair(1.0 / 15.0, 1.0 / 17.0, s2);
        let q4 = pair(1.0 / 19.0, 1.0 / 21.0, s2);
        let u0 = madd(q0, q1, w2);
        let u1 = madd(q2, q3, w2);
        let p = madd(madd(u0, u1, w4), q4, w8);
        let two = splat(2.0);
        let log_m = _mm512_add_pd(
            _mm512_mul_pd(two, s),
            _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(two, s), s2), p),
        );
        _mm512_add_pd(
            _mm512_mul_pd(k, splat(LN2_HI)),
            _mm512_add_pd(log_m, _mm512_mul_pd(k, splat(LN2_LO))),
        )
    }

    /// As [`super::avx2::poisson_softplus`] on eight lanes, with that function (four lanes,
    /// then scalar) for the last fewer than eight units: the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX2; all slices have the same length.
    #[target_feature(enable = "avx512f,avx2")]
    pub unsafe fn poisson_softplus(
        eta: &[f64],
        x: &[f64],
        term: &mut [f64],
        deta: &mut [f64],
        scale: f64,
    ) {
        let n = eta.len();
        let full = n / 8 * 8;
        let one = splat(1.0);
        let zero = _mm512_setzero_pd();
        let twenty = splat(20.0);
        for i in (0..full).step_by(8) {
            let h = _mm512_loadu_pd(eta.as_ptr().add(i));
            let xv = _mm512_loadu_pd(x.as_ptr().add(i));
            let e = exp8(_mm512_min_pd(h, twenty));
            let u = _mm512_add_pd(one, e);
            let sp = _mm512_sub_pd(
                ln8(u),
                _mm512_div_pd(_mm512_sub_pd(_mm512_sub_pd(u, one), e), u),
            );
            let lin = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(h, twenty);
            let sp = _mm512_mask_blend_pd(lin, sp, h);
            let sig = _mm512_mask_blend_pd(lin, _mm512_div_pd(e, u), one);
            let lam = _mm512_add_pd(sp, splat(1e-6));
            // All eight counts zero: t = −λ and d = (scale · −1) · σ, the full formula's bits.
            let nonzero = _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(xv, zero) != 0;
            let t = if nonzero {
                _mm512_sub_pd(_mm512_mul_pd(xv, ln8(lam)), lam)
            } else {
                _mm512_sub_pd(zero, lam)
            };
            _mm512_storeu_pd(term.as_mut_ptr().add(i), t);
            if scale != 0.0 {
                let q = if nonzero {
                    _mm512_sub_pd(_mm512_div_pd(xv, lam), one)
                } else {
                    splat(-1.0)
                };
                let d = _mm512_mul_pd(_mm512_mul_pd(splat(scale), q), sig);
                _mm512_storeu_pd(deta.as_mut_ptr().add(i), d);
            }
        }
        super::avx2::poisson_softplus(
            &eta[full..],
            &x[full..],
            &mut term[full..],
            &mut deta[full..],
            scale,
        );
    }

    #[cfg(test)]
    mod tests {
        use std::arch::x86_64::*;

        /// `exp8` and `ln8` give the scalar functions' bits over their whole ranges.
        #[test]
        fn exp8_and_ln8_give_the_scalar_bits() {
            if !std::is_x86_feature_detected!("avx512f") {
                return;
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn check(xs: &[f64; 8], ys: &[f64; 8]) {
                let (mut e, mut l) = ([0f64; 8], [0f64; 8]);
                _mm512_storeu_pd(e.as_mut_ptr(), super::exp8(_mm512_loadu_pd(xs.as_ptr())));
                _mm512_storeu_pd(l.as_mut_ptr(), super::ln8(_mm512_loadu_pd(ys.as_ptr())));
                for i in 0..8 {
                    assert_eq!(
                        e[i].to_bits(),
                        super::super::exp(xs[i]).to_bits(),
                        "exp({})",
                        xs[i]
                    );
                    assert_eq!(
                        l[i].to_bits(),
                        super::super::ln(ys[i]).to_bits(),
                        "ln({})",
                        ys[i]
                    );
                }
            }
            let (mut xs, mut ys) = ([0f64; 8], [0f64; 8]);
            let (mut x, mut y) = (-720.0f64, 1e-300f64);
            while x < 720.0 {
                for i in 0..8 {
                    xs[i] = x;
                    ys[i] = y;
                    x += 0.0371;
                    y *= 1.0123;
                    if y > 1e300 {
                        y = 1e-300;
                    }
                }
                // SAFETY: AVX-512F checked above.
                unsafe { check(&xs, &ys) };
            }
        }

        /// Eight lanes give the scalar bits (η over softplus' whole range, both count paths,
        /// lengths with every tail).
        #[test]
        fn eight_f64_lanes_give_the_scalar_bits() {
            if !(std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2"))
            {
                return;
            }
            for n in [1usize, 7, 8, 13, 40, 203] {
                for scale in [0.7, 0.0] {
                    let eta: Vec<f64> =
                        (0..n).map(|i| -30.0 + 57.0 * i as f64 / n as f64).collect();
                    let x: Vec<f64> = (0..n)
                        .map(|i| {
                            if (i / 8) % 2 == 0 {
                                0.0
                            } else {
                                (i % 4) as f64
                            }
                        })
                        .collect();
                    let (mut t, mut d) = (vec![0.0; n], vec![0.0; n]);
                    // SAFETY: AVX-512F and AVX2 checked above; equal lengths.
                    unsafe { super::poisson_softplus(&eta, &x, &mut t, &mut d, scale) };
                    for i in 0..n {
                        let (sp, sig) = super::super::softplus_and_sigmoid(eta[i]);
                        let lam = sp + 1e-6;
                        let want_t = x[i] * super::super::ln(lam) - lam;
                        assert_eq!(t[i].to_bits(), want_t.to_bits(), "term {i} of {n}");
                        if scale != 0.0 {
                            let want_d = scale * (x[i] / lam - 1.0) * sig;
                            assert_eq!(d[i].to_bits(), want_d.to_bits(), "d {i} of {n}");
                        }
                    }
                }
            }
        }
    }
}

/// Cephes' `expf` and `logf` constants, shared by the eight- and sixteen-lane f32 versions
/// (which must give the same bits).
#[cfg(target_arch = "x86_64")]
mod cephes_f32 {
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    pub const SHIFTER: f32 = 12_582_912.0;
    /// e^r ≈ 1 + r + r² P(r), |r| ≤ ln2/2: P's coefficients, highest degree first.
    pub const EXP_P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    /// ln(1 + f) ≈ f − f²/2 + f³ P(f), f ∈ [√½ − 1, √2 − 1): P's coefficients, highest first.
    pub const LN_P: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ];
}

/// The Poisson-softplus terms in single precision on eight lanes (`precision: f32`): the
/// transcendental functions of a Poisson fit at twice the width and with shorter polynomials
/// (Cephes' `expf` and `logf`, ≈ 1 ulp of f32). Inputs and outputs stay f64.
#[cfg(target_arch = "x86_64")]
pub mod avx2_f32 {
    use super::cephes_f32::{EXP_P, LN2_HI, LN2_LO, LN_P, SHIFTER};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }

    /// e^x on eight lanes for x ∈ [−87, 88] (clamped to it).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, splat(-87.0)), splat(88.0));
        let shifted = fma(x, splat(std::f32::consts::LOG2_E), splat(SHIFTER));
        let n = _mm256_sub_ps(shifted, splat(SHIFTER));
        let r = fma(n, splat(-LN2_LO), fma(n, splat(-LN2_HI), x));
        // Cephes expf: e^r ≈ 1 + r + r² P(r), |r| ≤ ln2/2.
        let mut p = splat(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = fma(p, r, splat(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e_r = fma(p, r2, _mm256_add_ps(r, splat(1.0)));
        // 2ⁿ from the shifter's low bits: (n + 127) << 23.
        let biased = _mm256_add_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(127));
        _mm256_mul_ps(e_r, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)))
    }

    /// ln x on eight lanes for positive normal x.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn ln8(x: __m256) -> __m256 {
        // x = 2^e · m with m ∈ [½, 1) (frexp), then m → [√½, √2) as in Cephes' logf.
        let bits = _mm256_castps_si256(x);
        let e_int = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
        let m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f00_0000),
        ));
        let mut e = _mm256_cvtepi32_ps(e_int);
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(m, splat(std::f32::consts::FRAC_1_SQRT_2));
        e = _mm256_sub_ps(e, _mm256_and_ps(small, splat(1.0)));
        // small: f = 2m − 1; otherwise f = m − 1.
        let f = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), splat(1.0));
        let z = _mm256_mul_ps(f, f);
        let mut p = splat(LN_P[0]);
        for &c in &LN_P[1..] {
            p = fma(p, f, splat(c));
        }
        let mut y = _mm256_mul_ps(_mm256_mul_ps(p, f), z);
        y = fma(e, splat(LN2_LO), y);
        y = fma(z, splat(-0.5), y);
        fma(e, splat(LN2_HI), _mm256_add_ps(f, y))
    }

    /// Eight f64 values (from `p`) narrowed to f32.
    #[inline(always)]
    unsafe fn load8(p: *const f64) -> __m256 {
        let lo = _mm256_cvtpd_ps(_mm256_loadu_pd(p));
        let hi = _mm256_cvtpd_ps(_mm256_loadu_pd(p.add(4)));
        _mm256_set_m128(hi, lo)
    }

    /// Eight f32 values widened and stored to `p` as f64.
    #[inline(always)]
    unsafe fn store8(p: *mut f64, v: __m256) {
        _mm256_storeu_pd(p, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        _mm256_storeu_pd(p.add(4), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
    }

    /// Some lane of the counts `xv` is not zero.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    pub unsafe fn any_nonzero(xv: __m256) -> bool {
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(xv, _mm256_setzero_ps())) != 0
    }

    /// One register of the Poisson-softplus terms: λ = softplus(η) + 1e-6, then
    /// (x ln λ − λ, dℓ/dη = (x/λ − 1) σ(η)). With `nonzero` false (every count zero) the
    /// logarithm and the division by λ are skipped: the results are −λ and −σ(η).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn poisson_softplus8(h: __m256, xv: __m256, nonzero: bool) -> (__m256, __m256) {
        let one = splat(1.0);
        let zero = _mm256_setzero_ps();
        let twenty = splat(20.0);
        let e = exp8(_mm256_min_ps(h, twenty));
        let u = _mm256_add_ps(one, e);
        let inv_u = _mm256_div_ps(one, u);
        // ln(1 + e) with the rounding of 1 + e corrected (as the f64 version).
        let sp = _mm256_sub_ps(
            ln8(u),
            _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(u, one), e), inv_u),
        );
        let lin = _mm256_cmp_ps::<_CMP_GT_OQ>(h, twenty);
        let sp = _mm256_blendv_ps(sp, h, lin);
        let sig = _mm256_blendv_ps(_mm256_mul_ps(e, inv_u), one, lin);
        let lam = _mm256_add_ps(sp, splat(1e-6));
        if nonzero {
            (
                fma(xv, ln8(lam), _mm256_sub_ps(zero, lam)),
                _mm256_mul_ps(_mm256_sub_ps(_mm256_div_ps(xv, lam), one), sig),
            )
        } else {
            (_mm256_sub_ps(zero, lam), _mm256_sub_ps(zero, sig))
        }
    }

    /// As [`super::avx2::poisson_softplus`] (x ln λ − λ, λ = softplus(η) + 1e-6, and
    /// scale · dℓ/dη), computed in f32; the tail of fewer than eight units in f64.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; all slices have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn poisson_softplus(
        eta: &[f64],
        x: &[f64],
        term: &mut [f64],
        deta: &mut [f64],
        scale: f64,
    ) {
        let n = eta.len();
        let full = n / 8 * 8;
        let scale32 = splat(scale as f32);
        for i in (0..full).step_by(8) {
            let h = load8(eta.as_ptr().add(i));
            let xv = load8(x.as_ptr().add(i));
            let nonzero = any_nonzero(xv);
            let (t, dl) = poisson_softplus8(h, xv, nonzero);
            store8(term.as_mut_ptr().add(i), t);
            if scale != 0.0 {
                store8(deta.as_mut_ptr().add(i), _mm256_mul_ps(scale32, dl));
            }
        }
        super::poisson_softplus_scalar(
            &eta[full..],
            &x[full..],
            &mut term[full..],
            &mut deta[full..],
            scale,
        );
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn avx2() -> bool {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }

        #[test]
        fn exp8_and_ln8_match_libm_to_a_few_f32_ulp() {
            if !avx2() {
                return;
            }
            let (mut worst_exp, mut worst_ln) = (0.0f64, 0.0f64);
            let mut xs = Vec::new();
            let mut v = -87.0f32;
            while v < 88.0 {
                xs.push(v);
                v += 0.0137;
            }
            for c in xs.chunks_exact(8) {
                let mut out = [0.0f32; 8];
                // SAFETY: AVX2 and FMA are available (checked above); c has eight values.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(c.as_ptr()))) };
                for (o, &x) in out.iter().zip(c) {
                    let want = f64::from(x).exp();
                    worst_exp = worst_exp.max(((f64::from(*o) - want) / want).abs());
                }
            }
            let mut ys = Vec::new();
            let mut y = 1e-37f32;
            while y < 1e37 {
                ys.push(y);
                y *= 1.0123;
            }
            let h = std::f32::consts::FRAC_1_SQRT_2;
            ys.extend([
                1.0 - 1e-7,
                1.0,
                1.0 + 1e-7,
                h * (1.0 - 1e-7),
                h * (1.0 + 1e-7),
                1.5,
                2.0,
            ]);
            ys.resize(ys.len().div_ceil(8) * 8, 1.25);
            for c in ys.chunks_exact(8) {
                let mut out = [0.0f32; 8];
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), ln8(_mm256_loadu_ps(c.as_ptr()))) };
                for (o, &x) in out.iter().zip(c) {
                    let want = f64::from(x).ln();
                    worst_ln = worst_ln.max((f64::from(*o) - want).abs() / want.abs().max(1.0));
                }
            }
            // f32's unit roundoff is 6e-8.
            assert!(worst_exp < 3e-7, "exp8: worst relative error {worst_exp:e}");
            assert!(worst_ln < 3e-7, "ln8: worst error {worst_ln:e}");
        }

        #[test]
        fn f32_poisson_terms_track_the_f64_ones() {
            if !avx2() {
                return;
            }
            // 83 units: ten full vectors and a tail; counts 0–4, η from −30 to 40.
            let n = 83;
            for shift in [-30.0, -5.0, 0.0, 3.0, 25.0] {
                let eta: Vec<f64> = (0..n).map(|i| shift + 0.37 * (i as f64) - 8.0).collect();
                let x: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64).collect();
                let (mut t32, mut d32) = (vec![0.0; n], vec![0.0; n]);
                let (mut t64, mut d64) = (vec![0.0; n], vec![0.0; n]);
                // SAFETY: AVX2 and FMA are available (checked above); equal lengths.
                unsafe {
                    poisson_softplus(&eta, &x, &mut t32, &mut d32, 0.7);
                    super::super::avx2::poisson_softplus(&eta, &x, &mut t64, &mut d64, 0.7);
                }
                assert_ne!(t32, t64, "the f32 path must not be the f64 one");
                for i in 0..n {
                    let tol_t = (1e-6 + 1.2e-7 * eta[i].abs()) * (t64[i].abs() + x[i] + 1e-6);
                    assert!(
                        (t32[i] - t64[i]).abs() <= tol_t,
                        "term {i}: {} vs {}",
                        t32[i],
                        t64[i]
                    );
                    // d = scale (x/λ − 1) σ cancels near x = λ: the tolerance is relative
                    // to the two terms' size, not to their difference.
                    let (sp, sig) = super::super::softplus_and_sigmoid(eta[i]);
                    // η itself is rounded to f32 (an absolute error of |η| · 6e-8).
                    let rel_tol = 1e-6 + 1.2e-7 * eta[i].abs();
                    let size = 0.7 * (x[i] / (sp + 1e-6) + 1.0) * sig;
                    assert!(
                        (d32[i] - d64[i]).abs() <= rel_tol * size + 1e-15,
                        "d {i} (η {}): {} vs {}",
                        eta[i],
                        d32[i],
                        d64[i]
                    );
                }
            }
        }
    }
}

/// [`avx2_f32`]'s Poisson-softplus terms on sixteen lanes (AVX-512F): the same operations in
/// the same order lane by lane, so every lane gives the bits of the eight-lane version.
#[cfg(target_arch = "x86_64")]
pub mod avx512_f32 {
    use super::cephes_f32::{EXP_P, LN2_HI, LN2_LO, LN_P, SHIFTER};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    /// As [`super::avx2_f32::exp8`] on sixteen lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.0)), splat(88.0));
        let shifted = fma(x, splat(std::f32::consts::LOG2_E), splat(SHIFTER));
        let n = _mm512_sub_ps(shifted, splat(SHIFTER));
        let r = fma(n, splat(-LN2_LO), fma(n, splat(-LN2_HI), x));
        let mut p = splat(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = fma(p, r, splat(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let e_r = fma(p, r2, _mm512_add_ps(r, splat(1.0)));
        let biased = _mm512_add_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(127));
        _mm512_mul_ps(e_r, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
    }

    /// As [`super::avx2_f32::ln8`] on sixteen lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn ln16(x: __m512) -> __m512 {
        let bits = _mm512_castps_si512(x);
        let e_int = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(126));
        let m = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi32(0x007f_ffff)),
            _mm512_set1_epi32(0x3f00_0000),
        ));
        let mut e = _mm512_cvtepi32_ps(e_int);
        let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, splat(std::f32::consts::FRAC_1_SQRT_2));
        e = _mm512_mask_sub_ps(e, small, e, splat(1.0));
        // small: f = 2m − 1; otherwise f = m − 1 (m + m is exact, as m + (m & mask) is).
        let f = _mm512_sub_ps(_mm512_mask_add_ps(m, small, m, m), splat(1.0));
        let z = _mm512_mul_ps(f, f);
        let mut p = splat(LN_P[0]);
        for &c in &LN_P[1..] {
            p = fma(p, f, splat(c));
        }
        let mut y = _mm512_mul_ps(_mm512_mul_ps(p, f), z);
        y = fma(e, splat(LN2_LO), y);
        y = fma(z, splat(-0.5), y);
        fma(e, splat(LN2_HI), _mm512_add_ps(f, y))
    }

    /// True if any of the sixteen counts is nonzero.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn any_nonzero16(xv: __m512) -> bool {
        _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(xv, _mm512_setzero_ps()) != 0
    }

    /// As [`super::avx2_f32::poisson_softplus8`] on sixteen lanes: (x ln λ − λ, dℓ/dη).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn poisson_softplus16(h: __m512, xv: __m512, nonzero: bool) -> (__m512, __m512) {
        let one = splat(1.0);
        let zero = _mm512_setzero_ps();
        let twenty = splat(20.0);
        let e = exp16(_mm512_min_ps(h, twenty));
        let u = _mm512_add_ps(one, e);
        let inv_u = _mm512_div_ps(one, u);
        let sp = _mm512_sub_ps(
            ln16(u),
            _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(u, one), e), inv_u),
        );
        let lin = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(h, twenty);
        let sp = _mm512_mask_blend_ps(lin, sp, h);
        let sig = _mm512_mask_blend_ps(lin, _mm512_mul_ps(e, inv_u), one);
        let lam = _mm512_add_ps(sp, splat(1e-6));
        if nonzero {
            (
                fma(xv, ln16(lam), _mm512_sub_ps(zero, lam)),
                _mm512_mul_ps(_mm512_sub_ps(_mm512_div_ps(xv, lam), one), sig),
            )
        } else {
            (_mm512_sub_ps(zero, lam), _mm512_sub_ps(zero, sig))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::inference::fastmath::avx2_f32::{exp8, ln8, poisson_softplus8};

        /// Sixteen lanes give the eight-lane version's bits, lane by lane.
        #[test]
        fn sixteen_lanes_give_the_bits_of_eight() {
            if !(std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")) {
                return;
            }
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn check(h: &[f32; 16], x: &[f32; 16]) {
                let (hv, xv) = (_mm512_loadu_ps(h.as_ptr()), _mm512_loadu_ps(x.as_ptr()));
                let (mut e16, mut l16, mut t16, mut d16) =
                    ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
                _mm512_storeu_ps(e16.as_mut_ptr(), exp16(hv));
                let pos = _mm512_add_ps(_mm512_abs_ps(hv), _mm512_set1_ps(1e-30));
                _mm512_storeu_ps(l16.as_mut_ptr(), ln16(pos));
                let nz = any_nonzero16(xv);
                let (t, d) = poisson_softplus16(hv, xv, nz);
                _mm512_storeu_ps(t16.as_mut_ptr(), t);
                _mm512_storeu_ps(d16.as_mut_ptr(), d);
                for half in 0..2 {
                    let o = half * 8;
                    let h8 = _mm256_loadu_ps(h.as_ptr().add(o));
                    let x8 = _mm256_loadu_ps(x.as_ptr().add(o));
                    let (mut e8, mut l8, mut t8, mut d8) =
                        ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
                    _mm256_storeu_ps(e8.as_mut_ptr(), exp8(h8));
                    let mut p8 = [0f32; 8];
                    for (i, p) in p8.iter_mut().enumerate() {
                        *p = h[o + i].abs() + 1e-30;
                    }
                    let pos8 = _mm256_loadu_ps(p8.as_ptr());
                    _mm256_storeu_ps(l8.as_mut_ptr(), ln8(pos8));
                    let nz8 = super::super::avx2_f32::any_nonzero(x8);
                    let (t, d) = poisson_softplus8(h8, x8, nz8);
                    _mm256_storeu_ps(t8.as_mut_ptr(), t);
                    _mm256_storeu_ps(d8.as_mut_ptr(), d);
                    for i in 0..8 {
                        assert_eq!(e16[o + i].to_bits(), e8[i].to_bits(), "exp({})", h[o + i]);
                        assert_eq!(l16[o + i].to_bits(), l8[i].to_bits(), "ln(|{}|)", h[o + i]);
                        assert_eq!(
                            t16[o + i].to_bits(),
                            t8[i].to_bits(),
                            "term at {}",
                            h[o + i]
                        );
                        assert_eq!(d16[o + i].to_bits(), d8[i].to_bits(), "dη at {}", h[o + i]);
                    }
                }
            }
            let mut h = [0f32; 16];
            let mut x = [0f32; 16];
            for case in 0..400 {
                for i in 0..16 {
                    let v = (case * 16 + i) as f32;
                    h[i] = -40.0 + (v * 0.0173).rem_euclid(75.0);
                    // Blocks with no count, with counts in one half only, and in both.
                    x[i] = match case % 3 {
                        0 => 0.0,
                        1 if i < 8 => ((case + i) % 3) as f32,
                        1 => 0.0,
                        _ => ((case * 7 + i) % 4) as f32,
                    };
                }
                // SAFETY: AVX-512F, AVX2 and FMA are available (checked above).
                unsafe { check(&h, &x) };
            }
        }
    }
}
