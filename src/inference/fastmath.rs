//! Branch-free `exp` and `ln` in f64 (≈ 1 ulp) that the compiler can inline and vectorise:
//! the Poisson likelihood evaluates softplus and a logarithm for every unit × particle × step,
//! and calls into libm dominated the encoder-proposal training time.
//!
//! Both use the classic reductions: exp(x) = 2ⁿ e^r with r = x − n ln 2 (Cody–Waite split ln 2,
//! |r| ≤ ln2/2, Taylor to degree 13); ln(x) = k ln 2 + 2 atanh(f/(2+f)) with x = 2ᵏ(1+f),
//! 1+f ∈ [√½, √2) (odd series to s²¹). Inputs outside the ranges used here (exp: ≤ 700;
//! ln: positive normal numbers) are the caller's responsibility.
//!
//! Each function is written once, over a lane type: [`Lanes64`] for f64 (one lane, and four
//! and eight on AVX2 and AVX-512F) and [`Lanes32`] for the single-precision versions (eight
//! and sixteen lanes). A lane type's operations are IEEE operations lane by lane (multiply,
//! then add: no fused multiply-add in f64), so every width gives the bits of the others; the
//! tests check it.

const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// 1.5 · 2⁵²: adding it rounds to an integer held in the low mantissa bits (vectorises,
/// unlike `round`).
const SHIFTER: f64 = 6_755_399_441_055_744.0;

/// f64 lanes: a scalar or a SIMD register, and the operations the functions below are
/// written in.
///
/// # Safety
/// The methods of a SIMD type need its instructions: callers run them only where the CPU has
/// them (inside a `#[target_feature]` function that checked, where they also inline).
pub(crate) trait Lanes64: Copy {
    /// A lane-wise comparison's result.
    type Mask: Copy;
    /// Lanes per value.
    const N: usize;
    /// Every lane `v`.
    unsafe fn splat(v: f64) -> Self;
    /// `N` values from `p`.
    unsafe fn load(p: *const f64) -> Self;
    /// The lanes to `p`.
    unsafe fn store(self, p: *mut f64);
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    /// `b` where `self` is NaN (as `maxpd` and `f64::max`).
    unsafe fn max(self, b: Self) -> Self;
    /// `b` where `self` is NaN (as `minpd` and `f64::min`).
    unsafe fn min(self, b: Self) -> Self;
    /// `self > b`, false for NaN.
    unsafe fn gt(self, b: Self) -> Self::Mask;
    /// `yes` where `m`, `no` elsewhere.
    unsafe fn select(m: Self::Mask, yes: Self, no: Self) -> Self;
    /// Some lane is not zero (NaN counts as not zero).
    unsafe fn any_nonzero(self) -> bool;
    /// 2ⁿ for `self` = n + [`SHIFTER`] (n ∈ [−1022, 1010]): n + 1023 shifted into the
    /// exponent field, with no float → int conversion.
    unsafe fn pow2_of_shifted(self) -> Self;
    /// For positive normal `self` = 2^(e − 1023) · m: the biased exponent e as a float and
    /// m ∈ [1, 2), by bit operations.
    unsafe fn exponent_mantissa(self) -> (Self, Self);
}

impl Lanes64 for f64 {
    type Mask = bool;
    const N: usize = 1;
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self * b
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        self / b
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        f64::max(self, b)
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        f64::min(self, b)
    }
    #[inline(always)]
    unsafe fn gt(self, b: Self) -> bool {
        self > b
    }
    #[inline(always)]
    unsafe fn select(m: bool, yes: Self, no: Self) -> Self {
        if m {
            yes
        } else {
            no
        }
    }
    #[inline(always)]
    unsafe fn any_nonzero(self) -> bool {
        self != 0.0
    }
    #[inline(always)]
    unsafe fn pow2_of_shifted(self) -> Self {
        f64::from_bits(self.to_bits().wrapping_add(1023) << 52)
    }
    #[inline(always)]
    unsafe fn exponent_mantissa(self) -> (Self, Self) {
        let bits = self.to_bits();
        let e = f64::from_bits(0x4330_0000_0000_0000 | ((bits >> 52) & 0x7ff))
            - 4_503_599_627_370_496.0;
        let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
        (e, m)
    }
}

/// a + b·x (multiply, then add).
#[inline(always)]
unsafe fn madd<V: Lanes64>(a: V, b: V, x: V) -> V {
    a.add(b.mul(x))
}

/// c0 + c1·x for constants.
#[inline(always)]
unsafe fn pair<V: Lanes64>(c0: f64, c1: f64, x: V) -> V {
    madd(V::splat(c0), V::splat(c1), x)
}

/// e^x on every lane, x ∈ [−708, 700] (clamped to it).
///
/// # Safety
/// As [`Lanes64`]: the CPU has `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn exp_lanes<V: Lanes64>(x: V) -> V {
    let x = x.max(V::splat(-708.0)).min(V::splat(700.0));
    // Round to nearest by the shifter; the low mantissa bits of `shifted` hold n.
    let shifted = x.mul(V::splat(LOG2_E)).add(V::splat(SHIFTER));
    let n = shifted.sub(V::splat(SHIFTER));
    let r = x.sub(n.mul(V::splat(LN2_HI))).sub(n.mul(V::splat(LN2_LO)));
    // Taylor series of e^r to degree 13 (|r| ≤ 0.347: truncation < 1e-17 relative), by
    // Estrin's scheme: pairs, then pairs of pairs, so the dependency chain is four multiply-adds
    // deep instead of Horner's thirteen (the SIMD versions are latency-bound otherwise).
    let r2 = r.mul(r);
    let r4 = r2.mul(r2);
    let r8 = r4.mul(r4);
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
    p.mul(shifted.pow2_of_shifted())
}

/// ln x on every lane, positive normal x.
///
/// # Safety
/// As [`Lanes64`]: the CPU has `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn ln_lanes<V: Lanes64>(x: V) -> V {
    let (e, m) = x.exponent_mantissa();
    // m ∈ [1, 2) → [√½, √2)
    let big = m.gt(V::splat(std::f64::consts::SQRT_2));
    let m = V::select(big, m.mul(V::splat(0.5)), m);
    let k = e
        .sub(V::splat(1023.0))
        .add(V::select(big, V::splat(1.0), V::splat(0.0)));
    let f = m.sub(V::splat(1.0));
    let s = f.div(V::splat(2.0).add(f));
    let s2 = s.mul(s);
    // Σ_i s2^i / (2i + 3), i = 0..9, by Estrin's scheme (as in `exp_lanes`).
    let w2 = s2.mul(s2);
    let w4 = w2.mul(w2);
    let w8 = w4.mul(w4);
    let q0 = pair(1.0 / 3.0, 1.0 / 5.0, s2);
    let q1 = pair(1.0 / 7.0, 1.0 / 9.0, s2);
    let q2 = pair(1.0 / 11.0, 1.0 / 13.0, s2);
    let q3 = pair(1.0 / 15.0, 1.0 / 17.0, s2);
    let q4 = pair(1.0 / 19.0, 1.0 / 21.0, s2);
    let u0 = madd(q0, q1, w2);
    let u1 = madd(q2, q3, w2);
    let p = madd(madd(u0, u1, w4), q4, w8);
    // ln m = 2s + 2s³ p(s²).
    let two = V::splat(2.0);
    let log_m = two.mul(s).add(two.mul(s).mul(s2).mul(p));
    k.mul(V::splat(LN2_HI))
        .add(log_m.add(k.mul(V::splat(LN2_LO))))
}

/// torch's softplus (linear above 20) and its derivative (the logistic function), from e^η.
///
/// # Safety
/// As [`Lanes64`]: the CPU has `V`'s instructions.
#[inline(always)]
unsafe fn softplus_and_sigmoid_lanes<V: Lanes64>(eta: V) -> (V, V) {
    let (one, twenty) = (V::splat(1.0), V::splat(20.0));
    let e = exp_lanes(eta.min(twenty));
    let u = one.add(e);
    // ln(1 + e) with the rounding of 1 + e corrected.
    let sp = ln_lanes(u).sub(u.sub(one).sub(e).div(u));
    let lin = eta.gt(twenty);
    (V::select(lin, eta, sp), V::select(lin, one, e.div(u)))
}

/// The Poisson-softplus terms x ln λ − λ (λ = softplus(η) + 1e-6) and scale · dℓ/dη =
/// (scale · (x/λ − 1)) · σ(η). With `nonzero` false (every count zero) the logarithm and the
/// division by λ are skipped: −λ and (scale · −1) · σ are the full formula's bits there.
///
/// # Safety
/// As [`Lanes64`]: the CPU has `V`'s instructions.
#[inline(always)]
unsafe fn poisson_terms<V: Lanes64>(eta: V, x: V, nonzero: bool, scale: f64) -> (V, V) {
    let (sp, sig) = softplus_and_sigmoid_lanes(eta);
    let lam = sp.add(V::splat(1e-6));
    let (t, q) = if nonzero {
        (x.mul(ln_lanes(lam)).sub(lam), x.div(lam).sub(V::splat(1.0)))
    } else {
        (V::splat(0.0).sub(lam), V::splat(-1.0))
    };
    (t, V::splat(scale).mul(q).mul(sig))
}

/// The Poisson-softplus terms of the first whole registers of `V` (see
/// [`PoissonTermsFn`]); returns how many units it did (a multiple of `V::N`).
///
/// # Safety
/// As [`Lanes64`]; all slices have the same length.
#[inline(always)]
unsafe fn poisson_softplus_lanes<V: Lanes64>(
    eta: &[f64],
    x: &[f64],
    term: &mut [f64],
    deta: &mut [f64],
    scale: f64,
) -> usize {
    let full = eta.len() / V::N * V::N;
    assert!(x.len() >= full && term.len() >= full && (scale == 0.0 || deta.len() >= full));
    for i in (0..full).step_by(V::N) {
        let xv = V::load(x.as_ptr().add(i));
        let (t, d) = poisson_terms(V::load(eta.as_ptr().add(i)), xv, xv.any_nonzero(), scale);
        t.store(term.as_mut_ptr().add(i));
        if scale != 0.0 {
            d.store(deta.as_mut_ptr().add(i));
        }
    }
    full
}

/// e^x for x ∈ [−708, 700].
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // SAFETY: f64 lanes need no particular CPU.
    unsafe { exp_lanes(x) }
}

/// ln x for positive normal x.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    // SAFETY: as in `exp`.
    unsafe { ln_lanes(x) }
}

/// torch's softplus (linear above 20) and its derivative (the logistic function), from e^η.
#[inline(always)]
pub fn softplus_and_sigmoid(eta: f64) -> (f64, f64) {
    // SAFETY: as in `exp`.
    unsafe { softplus_and_sigmoid_lanes(eta) }
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
    // SAFETY: as in `exp`; the lengths are checked inside.
    unsafe { poisson_softplus_lanes::<f64>(eta, x, term, deta, scale) };
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

    /// The exp and ln of four lanes give the scalar bits over their whole ranges.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn four_lanes_give_the_scalar_bits() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        #[target_feature(enable = "avx2")]
        unsafe fn check(xs: &[f64; 4], ys: &[f64; 4]) {
            use std::arch::x86_64::__m256d;
            let (mut e, mut l) = ([0f64; 4], [0f64; 4]);
            exp_lanes(__m256d::load(xs.as_ptr())).store(e.as_mut_ptr());
            ln_lanes(__m256d::load(ys.as_ptr())).store(l.as_mut_ptr());
            for i in 0..4 {
                assert_eq!(e[i].to_bits(), exp(xs[i]).to_bits(), "exp({})", xs[i]);
                assert_eq!(l[i].to_bits(), ln(ys[i]).to_bits(), "ln({})", ys[i]);
            }
        }
        let (mut xs, mut ys) = ([0f64; 4], [0f64; 4]);
        let (mut x, mut y) = (-720.0f64, 1e-300f64);
        while x < 720.0 {
            for i in 0..4 {
                xs[i] = x;
                ys[i] = y;
                x += 0.0371;
                y *= 1.0123;
                if y > 1e300 {
                    y = 1e-300;
                }
            }
            // SAFETY: AVX2 checked above.
            unsafe { check(&xs, &ys) };
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

/// The f64 functions on four lanes (AVX2).
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::Lanes64;

    impl Lanes64 for __m256d {
        type Mask = __m256d;
        const N: usize = 4;
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            _mm256_set1_pd(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> Self {
            _mm256_loadu_pd(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            _mm256_storeu_pd(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm256_add_pd(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm256_sub_pd(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm256_mul_pd(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm256_div_pd(self, b)
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            _mm256_max_pd(self, b)
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            _mm256_min_pd(self, b)
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> Self {
            _mm256_cmp_pd::<_CMP_GT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn select(m: Self, yes: Self, no: Self) -> Self {
            _mm256_blendv_pd(no, yes, m)
        }
        #[inline(always)]
        unsafe fn any_nonzero(self) -> bool {
            _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(self, _mm256_setzero_pd())) != 0
        }
        #[inline(always)]
        unsafe fn pow2_of_shifted(self) -> Self {
            let biased = _mm256_add_epi64(_mm256_castpd_si256(self), _mm256_set1_epi64x(1023));
            _mm256_castsi256_pd(_mm256_slli_epi64::<52>(biased))
        }
        #[inline(always)]
        unsafe fn exponent_mantissa(self) -> (Self, Self) {
            let bits = _mm256_castpd_si256(self);
            let ebits = _mm256_and_si256(_mm256_srli_epi64::<52>(bits), _mm256_set1_epi64x(0x7ff));
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
            (e, m)
        }
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
        let full = super::poisson_softplus_lanes::<__m256d>(eta, x, term, deta, scale);
        let d_tail = if scale != 0.0 {
            &mut deta[full..]
        } else {
            &mut [][..]
        };
        super::poisson_softplus_scalar(&eta[full..], &x[full..], &mut term[full..], d_tail, scale);
    }
}

/// The f64 functions on eight lanes (AVX-512F).
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::Lanes64;

    impl Lanes64 for __m512d {
        type Mask = __mmask8;
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            _mm512_set1_pd(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> Self {
            _mm512_loadu_pd(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            _mm512_storeu_pd(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm512_add_pd(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm512_sub_pd(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm512_mul_pd(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm512_div_pd(self, b)
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            _mm512_max_pd(self, b)
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            _mm512_min_pd(self, b)
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> __mmask8 {
            _mm512_cmp_pd_mask::<_CMP_GT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn select(m: __mmask8, yes: Self, no: Self) -> Self {
            _mm512_mask_blend_pd(m, no, yes)
        }
        #[inline(always)]
        unsafe fn any_nonzero(self) -> bool {
            _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(self, _mm512_setzero_pd()) != 0
        }
        #[inline(always)]
        unsafe fn pow2_of_shifted(self) -> Self {
            let biased = _mm512_add_epi64(_mm512_castpd_si512(self), _mm512_set1_epi64(1023));
            _mm512_castsi512_pd(_mm512_slli_epi64::<52>(biased))
        }
        #[inline(always)]
        unsafe fn exponent_mantissa(self) -> (Self, Self) {
            let bits = _mm512_castpd_si512(self);
            let ebits = _mm512_and_si512(_mm512_srli_epi64::<52>(bits), _mm512_set1_epi64(0x7ff));
            let e = _mm512_sub_pd(
                _mm512_castsi512_pd(_mm512_or_si512(
                    ebits,
                    _mm512_set1_epi64(0x4330_0000_0000_0000),
                )),
                _mm512_set1_pd(4_503_599_627_370_496.0),
            );
            let m = _mm512_castsi512_pd(_mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi64(0x000f_ffff_ffff_ffff)),
                _mm512_set1_epi64(0x3ff0_0000_0000_0000),
            ));
            (e, m)
        }
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
        let full = super::poisson_softplus_lanes::<__m512d>(eta, x, term, deta, scale);
        let d_tail = if scale != 0.0 {
            &mut deta[full..]
        } else {
            &mut [][..]
        };
        super::avx2::poisson_softplus(&eta[full..], &x[full..], &mut term[full..], d_tail, scale);
    }

    #[cfg(test)]
    mod tests {
        use std::arch::x86_64::*;

        use super::super::{exp, exp_lanes, ln, ln_lanes, Lanes64};

        /// Eight lanes give the scalar bits of exp and ln over their whole ranges.
        #[test]
        fn exp8_and_ln8_give_the_scalar_bits() {
            if !std::is_x86_feature_detected!("avx512f") {
                return;
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn check(xs: &[f64; 8], ys: &[f64; 8]) {
                let (mut e, mut l) = ([0f64; 8], [0f64; 8]);
                exp_lanes(__m512d::load(xs.as_ptr())).store(e.as_mut_ptr());
                ln_lanes(__m512d::load(ys.as_ptr())).store(l.as_mut_ptr());
                for i in 0..8 {
                    assert_eq!(e[i].to_bits(), exp(xs[i]).to_bits(), "exp({})", xs[i]);
                    assert_eq!(l[i].to_bits(), ln(ys[i]).to_bits(), "ln({})", ys[i]);
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
                        let want_t = x[i] * ln(lam) - lam;
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

/// f32 SIMD lanes and the operations the single-precision functions are written in (with
/// fused multiply-adds: these versions only need to agree with each other, not with f64).
///
/// # Safety
/// As [`Lanes64`].
#[cfg(target_arch = "x86_64")]
pub(crate) trait Lanes32: Copy {
    /// A lane-wise comparison's result.
    type Mask: Copy;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn zero() -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    /// `b` where `self` is NaN.
    unsafe fn max(self, b: Self) -> Self;
    /// `b` where `self` is NaN.
    unsafe fn min(self, b: Self) -> Self;
    /// self · b + c, rounded once.
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// `self > b`, false for NaN.
    unsafe fn gt(self, b: Self) -> Self::Mask;
    /// `self < b`, false for NaN.
    unsafe fn lt(self, b: Self) -> Self::Mask;
    /// `yes` where `m`, `no` elsewhere.
    unsafe fn select(m: Self::Mask, yes: Self, no: Self) -> Self;
    /// `self + b` where `m`, `self` elsewhere (for `self` ≠ −0).
    unsafe fn add_where(self, m: Self::Mask, b: Self) -> Self;
    /// `self − b` where `m`, `self` elsewhere (for `self` ≠ −0).
    unsafe fn sub_where(self, m: Self::Mask, b: Self) -> Self;
    /// Some lane is not zero (NaN counts as not zero).
    unsafe fn any_nonzero(self) -> bool;
    /// 2ⁿ for `self` = n + 1.5·2²³: (n + 127) << 23.
    unsafe fn pow2_of_shifted(self) -> Self;
    /// frexp for positive normal `self` = 2^e · m: e as a float and m ∈ [½, 1).
    unsafe fn frexp(self) -> (Self, Self);
}

/// e^x on every lane for x ∈ [−87, 88] (clamped to it): Cephes' `expf` (≈ 1 ulp of f32).
///
/// # Safety
/// As [`Lanes32`]: the CPU has `V`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp32<V: Lanes32>(x: V) -> V {
    use cephes_f32::{EXP_P, LN2_HI, LN2_LO, SHIFTER};
    let x = x.max(V::splat(-87.0)).min(V::splat(88.0));
    let shifted = x.fma(V::splat(std::f32::consts::LOG2_E), V::splat(SHIFTER));
    let n = shifted.sub(V::splat(SHIFTER));
    let r = n.fma(V::splat(-LN2_LO), n.fma(V::splat(-LN2_HI), x));
    // e^r ≈ 1 + r + r² P(r), |r| ≤ ln2/2.
    let mut p = V::splat(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = p.fma(r, V::splat(c));
    }
    let e_r = p.fma(r.mul(r), r.add(V::splat(1.0)));
    e_r.mul(shifted.pow2_of_shifted())
}

/// ln x on every lane for positive normal x: Cephes' `logf` (≈ 1 ulp of f32).
///
/// # Safety
/// As [`Lanes32`]: the CPU has `V`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn ln32<V: Lanes32>(x: V) -> V {
    use cephes_f32::{LN2_HI, LN2_LO, LN_P};
    // x = 2^e · m with m ∈ [½, 1), then m → [√½, √2) as in Cephes' logf.
    let (e, m) = x.frexp();
    let small = m.lt(V::splat(std::f32::consts::FRAC_1_SQRT_2));
    let e = e.sub_where(small, V::splat(1.0));
    // small: f = 2m − 1; otherwise f = m − 1.
    let f = m.add_where(small, m).sub(V::splat(1.0));
    let z = f.mul(f);
    let mut p = V::splat(LN_P[0]);
    for &c in &LN_P[1..] {
        p = p.fma(f, V::splat(c));
    }
    let y = p.mul(f).mul(z);
    let y = e.fma(V::splat(LN2_LO), y);
    let y = z.fma(V::splat(-0.5), y);
    e.fma(V::splat(LN2_HI), f.add(y))
}

/// One register of the Poisson-softplus terms in f32: λ = softplus(η) + 1e-6, then
/// (x ln λ − λ, dℓ/dη = (x/λ − 1) σ(η)). With `nonzero` false (every count zero) the
/// logarithm and the division by λ are skipped: the results are −λ and −σ(η).
///
/// # Safety
/// As [`Lanes32`]: the CPU has `V`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn poisson_softplus32<V: Lanes32>(h: V, xv: V, nonzero: bool) -> (V, V) {
    let (one, zero, twenty) = (V::splat(1.0), V::zero(), V::splat(20.0));
    let e = exp32(h.min(twenty));
    let u = one.add(e);
    let inv_u = one.div(u);
    // ln(1 + e) with the rounding of 1 + e corrected (as the f64 version).
    let sp = ln32(u).sub(u.sub(one).sub(e).mul(inv_u));
    let lin = h.gt(twenty);
    let sp = V::select(lin, h, sp);
    let sig = V::select(lin, one, e.mul(inv_u));
    let lam = sp.add(V::splat(1e-6));
    if nonzero {
        (
            xv.fma(ln32(lam), zero.sub(lam)),
            xv.div(lam).sub(one).mul(sig),
        )
    } else {
        (zero.sub(lam), zero.sub(sig))
    }
}

/// The Poisson-softplus terms in single precision on eight lanes (`precision: f32`): the
/// transcendental functions of a Poisson fit at twice the width and with shorter polynomials
/// (Cephes' `expf` and `logf`, ≈ 1 ulp of f32). Inputs and outputs stay f64.
#[cfg(target_arch = "x86_64")]
pub mod avx2_f32 {
    use super::{poisson_softplus32, Lanes32};
    use std::arch::x86_64::*;

    /// AVX2 with FMA.
    impl Lanes32 for __m256 {
        type Mask = __m256;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm256_add_ps(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm256_sub_ps(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm256_mul_ps(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm256_div_ps(self, b)
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            _mm256_max_ps(self, b)
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            _mm256_min_ps(self, b)
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> Self {
            _mm256_cmp_ps::<_CMP_GT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> Self {
            _mm256_cmp_ps::<_CMP_LT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn select(m: Self, yes: Self, no: Self) -> Self {
            _mm256_blendv_ps(no, yes, m)
        }
        #[inline(always)]
        unsafe fn add_where(self, m: Self, b: Self) -> Self {
            _mm256_add_ps(self, _mm256_and_ps(m, b))
        }
        #[inline(always)]
        unsafe fn sub_where(self, m: Self, b: Self) -> Self {
            _mm256_sub_ps(self, _mm256_and_ps(m, b))
        }
        #[inline(always)]
        unsafe fn any_nonzero(self) -> bool {
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(self, _mm256_setzero_ps())) != 0
        }
        #[inline(always)]
        unsafe fn pow2_of_shifted(self) -> Self {
            let biased = _mm256_add_epi32(_mm256_castps_si256(self), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = _mm256_castps_si256(self);
            let e_int = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(126));
            let m = _mm256_castsi256_ps(_mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x3f00_0000),
            ));
            (_mm256_cvtepi32_ps(e_int), m)
        }
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
        assert!(x.len() >= full && term.len() >= full && (scale == 0.0 || deta.len() >= full));
        let scale32 = _mm256_set1_ps(scale as f32);
        for i in (0..full).step_by(8) {
            let h = load8(eta.as_ptr().add(i));
            let xv = load8(x.as_ptr().add(i));
            let (t, dl) = poisson_softplus32(h, xv, xv.any_nonzero());
            store8(term.as_mut_ptr().add(i), t);
            if scale != 0.0 {
                store8(deta.as_mut_ptr().add(i), _mm256_mul_ps(scale32, dl));
            }
        }
        let d_tail = if scale != 0.0 {
            &mut deta[full..]
        } else {
            &mut [][..]
        };
        super::poisson_softplus_scalar(&eta[full..], &x[full..], &mut term[full..], d_tail, scale);
    }

    #[cfg(test)]
    mod tests {
        use super::super::{exp32, ln32};
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
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp32(_mm256_loadu_ps(c.as_ptr()))) };
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
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), ln32(_mm256_loadu_ps(c.as_ptr()))) };
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

/// The single-precision functions on sixteen lanes (AVX-512F).
#[cfg(target_arch = "x86_64")]
pub mod avx512_f32 {
    use super::Lanes32;
    use std::arch::x86_64::*;

    impl Lanes32 for __m512 {
        type Mask = __mmask16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            _mm512_add_ps(self, b)
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            _mm512_sub_ps(self, b)
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            _mm512_mul_ps(self, b)
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            _mm512_div_ps(self, b)
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            _mm512_max_ps(self, b)
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            _mm512_min_ps(self, b)
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self, b)
        }
        #[inline(always)]
        unsafe fn select(m: __mmask16, yes: Self, no: Self) -> Self {
            _mm512_mask_blend_ps(m, no, yes)
        }
        #[inline(always)]
        unsafe fn add_where(self, m: __mmask16, b: Self) -> Self {
            _mm512_mask_add_ps(self, m, self, b)
        }
        #[inline(always)]
        unsafe fn sub_where(self, m: __mmask16, b: Self) -> Self {
            _mm512_mask_sub_ps(self, m, self, b)
        }
        #[inline(always)]
        unsafe fn any_nonzero(self) -> bool {
            _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(self, _mm512_setzero_ps()) != 0
        }
        #[inline(always)]
        unsafe fn pow2_of_shifted(self) -> Self {
            let biased = _mm512_add_epi32(_mm512_castps_si512(self), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = _mm512_castps_si512(self);
            let e_int = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(126));
            let m = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x3f00_0000),
            ));
            (_mm512_cvtepi32_ps(e_int), m)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{exp32, ln32, poisson_softplus32, Lanes32};
        use std::arch::x86_64::*;

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
                _mm512_storeu_ps(e16.as_mut_ptr(), exp32(hv));
                let pos = _mm512_add_ps(_mm512_abs_ps(hv), _mm512_set1_ps(1e-30));
                _mm512_storeu_ps(l16.as_mut_ptr(), ln32(pos));
                let (t, d) = poisson_softplus32(hv, xv, xv.any_nonzero());
                _mm512_storeu_ps(t16.as_mut_ptr(), t);
                _mm512_storeu_ps(d16.as_mut_ptr(), d);
                for half in 0..2 {
                    let o = half * 8;
                    let h8 = _mm256_loadu_ps(h.as_ptr().add(o));
                    let x8 = _mm256_loadu_ps(x.as_ptr().add(o));
                    let (mut e8, mut l8, mut t8, mut d8) =
                        ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
                    _mm256_storeu_ps(e8.as_mut_ptr(), exp32(h8));
                    let mut p8 = [0f32; 8];
                    for (i, p) in p8.iter_mut().enumerate() {
                        *p = h[o + i].abs() + 1e-30;
                    }
                    let pos8 = _mm256_loadu_ps(p8.as_ptr());
                    _mm256_storeu_ps(l8.as_mut_ptr(), ln32(pos8));
                    let (t, d) = poisson_softplus32(h8, x8, x8.any_nonzero());
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
