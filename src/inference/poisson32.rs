//! The Poisson-softplus observation term of one step, batched over the step's K particles, in
//! single precision: the hot loop of a Poisson fit under `precision: f32` with the one-to-one
//! readout from the currents (the teacher–student Poisson students).
//!
//! With C = b ∘ Mᵀ_obs (R × dx) and a_t = b ∘ e_obs,t + bias, the rates' argument is
//! η_kj = a_tj + Σ_q C_qj z_kq, and per particle ℓ_k = Σ_j x_tj ln λ_kj − λ_kj
//! (λ = softplus(η) + 1e-6; the constant Σ_j ln Γ(x_tj + 1) is the caller's) with dℓ_k/dη_kj.
//! Once the step's particle weights g_k are known, the reverse pass gives
//! dz_kq = g_k Σ_j C_qj dℓ_k/dη_kj and the sums D_j = Σ_k g_k dℓ_k/dη_kj (the bias's adjoint)
//! and G_qj = Σ_k g_k z_kq dℓ_k/dη_kj (Mᵀ's, before its factor b). The gain b's adjoint,
//! Σ_k g_k dℓ_k/dη_kj s_kj with s = e_obs + Mᵀ_obs z, is e_obs ∘ D + Σ_q M_q ∘ G_q: it needs no
//! per-particle readout at all.
//!
//! Units are padded to a multiple of eight with zero counts and zero coefficients, and a mask
//! drops the padded lanes from ℓ. Everything of one step stays in f32 (K × dx values, in L1);
//! the per-particle ℓ, dz and the per-step sums D and G go to f64 as the other f32 kernels do.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::fastmath::{poisson_softplus32, Lanes32};
#[cfg(target_arch = "x86_64")]
use super::kernel32::avx2::hsum;

/// Lanes per register.
const L: usize = 8;

/// The CPU has AVX-512F (besides the AVX2 and FMA every caller has checked).
#[cfg(target_arch = "x86_64")]
fn wide_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// The observation's coefficients in f32 (built once per minibatch).
pub(super) struct Poisson32 {
    dx: usize,
    /// dx rounded up to a multiple of eight.
    dxp: usize,
    r: usize,
    /// C = b ∘ Mᵀ_obs, R rows of `dxp` (zero on the padding).
    c: Vec<f32>,
    b: Vec<f32>,
    bias: Vec<f32>,
    /// 1 on the units, 0 on the padding.
    mask: Vec<f32>,
    /// The CPU has AVX-512F: [`Self::loglik`] runs sixteen lanes at a time (same bits).
    wide: bool,
}

/// One trial's buffers.
pub(super) struct Step32 {
    /// a_t of the current step (`dxp`).
    a: Vec<f32>,
    /// The counts, T rows of `dxp`.
    x: Vec<f32>,
    /// dℓ_k/dη of the current step, K rows of `dxp`.
    dl: Vec<f32>,
    /// D and G of the current step (`dxp`, R × `dxp`).
    d: Vec<f32>,
    g: Vec<f32>,
}

impl Poisson32 {
    /// From the readout's gain `b` and `bias` (dx each) and b ∘ Mᵀ_obs (R × dx).
    pub(super) fn new(b: &[f64], bias: &[f64], bm_obs: &[f64], r: usize) -> Self {
        let dx = b.len();
        let dxp = dx.div_ceil(L) * L;
        let pad = |v: &[f64]| {
            let mut out = vec![0.0f32; dxp];
            for (o, &a) in out.iter_mut().zip(v) {
                *o = a as f32;
            }
            out
        };
        let mut c = vec![0.0f32; r * dxp];
        for q in 0..r {
            for j in 0..dx {
                c[q * dxp + j] = bm_obs[q * dx + j] as f32;
            }
        }
        let mut mask = vec![0.0f32; dxp];
        mask[..dx].iter_mut().for_each(|m| *m = 1.0);
        Poisson32 {
            dx,
            dxp,
            r,
            c,
            b: pad(b),
            bias: pad(bias),
            mask,
            wide: wide_available(),
        }
    }

    /// A trial's buffers, with its counts `x` (dx × T, unit-major) for K particles.
    pub(super) fn trial(&self, x: &[f64], n_steps: usize, k: usize) -> Step32 {
        let mut xs = vec![0.0f32; n_steps * self.dxp];
        for j in 0..self.dx {
            for t in 0..n_steps {
                xs[t * self.dxp + j] = x[j * n_steps + t] as f32;
            }
        }
        Step32 {
            a: self.bias.clone(),
            x: xs,
            dl: vec![0.0; k * self.dxp],
            d: vec![0.0; self.dxp],
            g: vec![0.0; self.r * self.dxp],
        }
    }

    /// a_t = b ∘ e_obs + bias for a step with the input current `eobs` (dx).
    pub(super) fn set_input(&self, eobs: &[f64], s: &mut Step32) {
        for j in 0..self.dx {
            s.a[j] = self.b[j] * eobs[j] as f32 + self.bias[j];
        }
    }

    /// ℓ_k of step `t` for the particles `z` (K × R) into `ll` (K), and dℓ_k/dη into the
    /// trial's buffer for [`Self::backward`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn loglik(&self, s: &mut Step32, t: usize, z: &[f64], ll: &mut [f64]) {
        if self.wide {
            self.loglik16(s, t, z, ll)
        } else {
            self.loglik8(s, t, z, ll)
        }
    }

    /// One eight-unit block at unit `j` of step `t` for particles `kk` and `kb` (the same one
    /// when `pair` is false): η = a + Σ_q C_q z_q, the terms and dℓ/dη (stored for the reverse
    /// pass), and the masked terms added to the accumulators.
    ///
    /// # Safety
    /// Only for callers with AVX2 and FMA enabled; `j + 8 ≤ dxp`, the buffers sized as in
    /// [`Self::loglik`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block8(
        &self,
        s: &mut Step32,
        t: usize,
        j: usize,
        (za, zb): (&[f32; 16], &[f32; 16]),
        (kk, kb, pair): (usize, usize, bool),
        (acc_a, acc_b): (&mut __m256, &mut __m256),
    ) {
        let (r, dxp) = (self.r, self.dxp);
        let mut ha = _mm256_loadu_ps(s.a.as_ptr().add(j));
        let mut hb = ha;
        for q in 0..r {
            let cq = _mm256_loadu_ps(self.c.as_ptr().add(q * dxp + j));
            ha = _mm256_fmadd_ps(cq, _mm256_set1_ps(za[q]), ha);
            hb = _mm256_fmadd_ps(cq, _mm256_set1_ps(zb[q]), hb);
        }
        let xv = _mm256_loadu_ps(s.x.as_ptr().add(t * dxp + j));
        let nonzero = xv.any_nonzero();
        let m = _mm256_loadu_ps(self.mask.as_ptr().add(j));
        let (ta, da) = poisson_softplus32(ha, xv, nonzero);
        *acc_a = _mm256_fmadd_ps(ta, m, *acc_a);
        _mm256_storeu_ps(s.dl.as_mut_ptr().add(kk * dxp + j), da);
        if pair {
            let (tb, db) = poisson_softplus32(hb, xv, nonzero);
            *acc_b = _mm256_fmadd_ps(tb, m, *acc_b);
            _mm256_storeu_ps(s.dl.as_mut_ptr().add(kb * dxp + j), db);
        }
    }

    /// [`Self::loglik`] on eight lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn loglik8(&self, s: &mut Step32, t: usize, z: &[f64], ll: &mut [f64]) {
        let (r, dxp) = (self.r, self.dxp);
        let k = ll.len();
        assert!(r <= 16 && z.len() >= k * r && s.dl.len() >= k * dxp);
        assert!(s.x.len() >= (t + 1) * dxp && s.a.len() >= dxp);
        let (mut za, mut zb) = ([0.0f32; 16], [0.0f32; 16]);
        // Two particles at a time: two independent chains of the same operations for the
        // out-of-order core (the counts, and so the branch on them, are the same for both).
        let mut kk = 0;
        while kk < k {
            let pair = kk + 1 < k;
            let kb = if pair { kk + 1 } else { kk };
            for q in 0..r {
                za[q] = z[kk * r + q] as f32;
                zb[q] = z[kb * r + q] as f32;
            }
            let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for j in (0..dxp).step_by(L) {
                self.block8(
                    s,
                    t,
                    j,
                    (&za, &zb),
                    (kk, kb, pair),
                    (&mut acc_a, &mut acc_b),
                );
            }
            ll[kk] = f64::from(hsum(acc_a));
            if pair {
                ll[kb] = f64::from(hsum(acc_b));
            }
            kk += 2;
        }
    }

    /// [`Self::loglik`] on sixteen lanes: the units' pairs of eight-lane blocks as one register
    /// (a last odd block on eight lanes), ℓ summed block by block in the eight-lane order, so
    /// that ℓ and dℓ/dη have the bits of [`Self::loglik8`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn loglik16(&self, s: &mut Step32, t: usize, z: &[f64], ll: &mut [f64]) {
        let (r, dxp) = (self.r, self.dxp);
        let k = ll.len();
        assert!(r <= 16 && z.len() >= k * r && s.dl.len() >= k * dxp);
        assert!(s.x.len() >= (t + 1) * dxp && s.a.len() >= dxp);
        let wide_end = dxp / (2 * L) * (2 * L);
        let (mut za, mut zb) = ([0.0f32; 16], [0.0f32; 16]);
        let lo = |v: __m512| _mm512_castps512_ps256(v);
        let hi = |v: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let mut kk = 0;
        while kk < k {
            let pair = kk + 1 < k;
            let kb = if pair { kk + 1 } else { kk };
            for q in 0..r {
                za[q] = z[kk * r + q] as f32;
                zb[q] = z[kb * r + q] as f32;
            }
            let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for j in (0..wide_end).step_by(2 * L) {
                let mut ha = _mm512_loadu_ps(s.a.as_ptr().add(j));
                let mut hb = ha;
                for q in 0..r {
                    let cq = _mm512_loadu_ps(self.c.as_ptr().add(q * dxp + j));
                    ha = _mm512_fmadd_ps(cq, _mm512_set1_ps(za[q]), ha);
                    hb = _mm512_fmadd_ps(cq, _mm512_set1_ps(zb[q]), hb);
                }
                let xv = _mm512_loadu_ps(s.x.as_ptr().add(t * dxp + j));
                // One branch for sixteen counts: where a lane's count is zero, the branch for
                // nonzero counts gives it the bits of the other (0 · ln λ − λ = −λ exactly).
                let nonzero = xv.any_nonzero();
                let m = _mm512_loadu_ps(self.mask.as_ptr().add(j));
                let (ta, da) = poisson_softplus32(ha, xv, nonzero);
                let tm = _mm512_mul_ps(ta, m);
                // fma(t, m, acc) per eight-lane block: t·m is exact where m is 0 or 1.
                acc_a = _mm256_add_ps(lo(tm), acc_a);
                acc_a = _mm256_add_ps(hi(tm), acc_a);
                _mm512_storeu_ps(s.dl.as_mut_ptr().add(kk * dxp + j), da);
                if pair {
                    let (tb, db) = poisson_softplus32(hb, xv, nonzero);
                    let tm = _mm512_mul_ps(tb, m);
                    acc_b = _mm256_add_ps(lo(tm), acc_b);
                    acc_b = _mm256_add_ps(hi(tm), acc_b);
                    _mm512_storeu_ps(s.dl.as_mut_ptr().add(kb * dxp + j), db);
                }
            }
            if wide_end < dxp {
                self.block8(
                    s,
                    t,
                    wide_end,
                    (&za, &zb),
                    (kk, kb, pair),
                    (&mut acc_a, &mut acc_b),
                );
            }
            ll[kk] = f64::from(hsum(acc_a));
            if pair {
                ll[kb] = f64::from(hsum(acc_b));
            }
            kk += 2;
        }
    }

    /// The reverse pass of step `t` from the particle weights `gk` (K): adds dz_kq into `dz`
    /// (K × R), D into `d_out` (dx) and G into `g_out` (R × dx).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; [`Self::loglik`] ran for this step's particles `z`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward(
        &self,
        s: &mut Step32,
        z: &[f64],
        gk: &[f64],
        dz: &mut [f64],
        d_out: &mut [f64],
        g_out: &mut [f64],
    ) {
        let (r, dx, dxp) = (self.r, self.dx, self.dxp);
        let k = gk.len();
        assert!(z.len() >= k * r && dz.len() >= k * r && s.dl.len() >= k * dxp);
        assert!(r <= 16 && d_out.len() >= dx && g_out.len() >= r * dx);
        s.d.iter_mut().for_each(|v| *v = 0.0);
        s.g.iter_mut().for_each(|v| *v = 0.0);
        let mut zq = [0.0f32; 16];
        let mut dzv = [_mm256_setzero_ps(); 16];
        for kk in 0..k {
            let g = _mm256_set1_ps(gk[kk] as f32);
            for (q, zv) in z[kk * r..(kk + 1) * r].iter().enumerate() {
                zq[q] = *zv as f32;
            }
            dzv[..r].iter_mut().for_each(|v| *v = _mm256_setzero_ps());
            let dl = &s.dl[kk * dxp..(kk + 1) * dxp];
            for j in (0..dxp).step_by(L) {
                let d = _mm256_mul_ps(g, _mm256_loadu_ps(dl.as_ptr().add(j)));
                let dp = s.d.as_mut_ptr().add(j);
                _mm256_storeu_ps(dp, _mm256_add_ps(_mm256_loadu_ps(dp), d));
                for q in 0..r {
                    let gp = s.g.as_mut_ptr().add(q * dxp + j);
                    let zv = _mm256_set1_ps(zq[q]);
                    _mm256_storeu_ps(gp, _mm256_fmadd_ps(zv, d, _mm256_loadu_ps(gp)));
                    let cq = _mm256_loadu_ps(self.c.as_ptr().add(q * dxp + j));
                    dzv[q] = _mm256_fmadd_ps(cq, d, dzv[q]);
                }
            }
            for q in 0..r {
                dz[kk * r + q] += f64::from(hsum(dzv[q]));
            }
        }
        for j in 0..dx {
            d_out[j] += f64::from(s.d[j]);
        }
        for q in 0..r {
            for j in 0..dx {
                g_out[q * dx + j] += f64::from(s.g[q * dxp + j]);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::inference::fastmath::poisson_softplus_scalar;
    use crate::inference::kernel::fma_available;
    use rand::{Rng, SeedableRng};

    /// The sixteen-lane step gives the eight-lane step's bits (ℓ and dℓ/dη), for unit counts
    /// with and without a last odd block of eight, and an odd particle count.
    #[test]
    fn sixteen_lanes_give_the_bits_of_eight() {
        if !(fma_available() && wide_available()) {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (r, dx, k) in [
            (2usize, 40usize, 64usize),
            (3, 13, 5),
            (1, 32, 3),
            (2, 1, 2),
            (4, 57, 9),
        ] {
            let tt = 3;
            let b: Vec<f64> = (0..dx).map(|_| rng.gen_range(0.5..2.0)).collect();
            let bias: Vec<f64> = (0..dx).map(|_| rng.gen_range(-3.0..0.0)).collect();
            let bm: Vec<f64> = (0..r * dx).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let x: Vec<f64> = (0..dx * tt)
                .map(|_| f64::from(rng.gen_range(0u32..6).saturating_sub(3)))
                .collect();
            let eobs: Vec<f64> = (0..dx).map(|_| rng.gen_range(-0.5..0.5)).collect();
            let z: Vec<f64> = (0..k * r).map(|_| rng.gen_range(-8.0..8.0)).collect();
            let p = Poisson32::new(&b, &bias, &bm, r);
            for t in 0..tt {
                let (mut s8, mut s16) = (p.trial(&x, tt, k), p.trial(&x, tt, k));
                p.set_input(&eobs, &mut s8);
                p.set_input(&eobs, &mut s16);
                let (mut ll8, mut ll16) = (vec![0.0; k], vec![0.0; k]);
                // SAFETY: AVX-512F, AVX2 and FMA are available (checked above).
                unsafe {
                    p.loglik8(&mut s8, t, &z, &mut ll8);
                    p.loglik16(&mut s16, t, &z, &mut ll16);
                }
                let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ll8), bits(&ll16), "ℓ, r {r} dx {dx} k {k} t {t}");
                let bits32 = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits32(&s8.dl), bits32(&s16.dl), "dℓ/dη, r {r} dx {dx}");
            }
        }
    }

    /// The batched f32 step against the f64 formulas, particle by particle: ℓ, dz, D and G.
    #[test]
    fn batched_step_matches_the_f64_formulas() {
        if !fma_available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (r, dx, k) in [(2usize, 40usize, 64usize), (3, 13, 5), (1, 8, 3), (2, 1, 2)] {
            let tt = 4;
            let b: Vec<f64> = (0..dx).map(|_| rng.gen_range(0.5..2.0)).collect();
            let bias: Vec<f64> = (0..dx).map(|_| rng.gen_range(-3.0..0.0)).collect();
            let m: Vec<f64> = (0..r * dx).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bm: Vec<f64> = (0..r * dx).map(|i| b[i % dx] * m[i]).collect();
            let x: Vec<f64> = (0..dx * tt)
                .map(|_| f64::from(rng.gen_range(0u32..4).saturating_sub(1)))
                .collect();
            let eobs: Vec<f64> = (0..dx).map(|_| rng.gen_range(-0.5..0.5)).collect();
            let z: Vec<f64> = (0..k * r).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let gk: Vec<f64> = (0..k).map(|_| rng.gen_range(0.0..0.3)).collect();
            let p = Poisson32::new(&b, &bias, &bm, r);
            let mut s = p.trial(&x, tt, k);
            p.set_input(&eobs, &mut s);
            let t = 2;
            let mut ll = vec![0.0; k];
            let (mut dz, mut d, mut g) = (vec![0.0; k * r], vec![0.0; dx], vec![0.0; r * dx]);
            // SAFETY: AVX2 and FMA are available (checked above).
            unsafe {
                p.loglik(&mut s, t, &z, &mut ll);
                p.backward(&mut s, &z, &gk, &mut dz, &mut d, &mut g);
            }
            let (mut d_ref, mut g_ref) = (vec![0.0; dx], vec![0.0; r * dx]);
            for kk in 0..k {
                let zk = &z[kk * r..(kk + 1) * r];
                let eta: Vec<f64> = (0..dx)
                    .map(|j| {
                        let s: f64 = eobs[j] + (0..r).map(|q| m[q * dx + j] * zk[q]).sum::<f64>();
                        b[j] * s + bias[j]
                    })
                    .collect();
                let xt: Vec<f64> = (0..dx).map(|j| x[j * tt + t]).collect();
                let (mut term, mut deta) = (vec![0.0; dx], vec![0.0; dx]);
                poisson_softplus_scalar(&eta, &xt, &mut term, &mut deta, 1.0);
                let want: f64 = term.iter().sum();
                let scale = term.iter().map(|v| v.abs()).sum::<f64>().max(1.0);
                assert!(
                    (ll[kk] - want).abs() < 1e-5 * scale,
                    "r {r} dx {dx} particle {kk}: ℓ {} vs {want}",
                    ll[kk]
                );
                for q in 0..r {
                    let want: f64 = gk[kk] * (0..dx).map(|j| bm[q * dx + j] * deta[j]).sum::<f64>();
                    let got = dz[kk * r + q];
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "dz {got} vs {want}"
                    );
                }
                for j in 0..dx {
                    d_ref[j] += gk[kk] * deta[j];
                    for q in 0..r {
                        g_ref[q * dx + j] += gk[kk] * zk[q] * deta[j];
                    }
                }
            }
            for (got, want) in d.iter().zip(&d_ref).chain(g.iter().zip(&g_ref)) {
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
}
