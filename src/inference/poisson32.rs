//! The Poisson-softplus observation term of one step, batched over its K particles, in
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
//! The lanes run over particles, in blocks of sixteen (one AVX-512 register, or two AVX2
//! registers with the same operations lane by lane, so both give the same bits); the units are
//! the loop. A unit's count is then one scalar for the whole step: where it is zero (most units
//! of most steps of spike data) the term is −λ and ln λ is never computed. ℓ_k and dz_k add up
//! unit by unit in their lane, with no horizontal sum; D and G add up lane-wise over the blocks
//! and then over the lanes. Particles are padded to a multiple of sixteen with z = 0 and weight 0.
//! Everything of one step stays in f32 (dx × K values, in L1); the per-particle ℓ, dz and the
//! per-step sums D and G go to f64 as the other f32 kernels do.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::fastmath::{poisson_softplus32, Lanes32};
#[cfg(target_arch = "x86_64")]
use super::kernel::by_rank;
#[cfg(target_arch = "x86_64")]
use super::kernel32::avx2::hsum;

/// Particles per block.
const B: usize = 16;

/// The CPU has AVX-512F (besides the AVX2 and FMA every caller has checked).
#[cfg(target_arch = "x86_64")]
fn wide_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// The observation's coefficients in f32 (built once per minibatch).
pub(super) struct Poisson32 {
    dx: usize,
    r: usize,
    /// C = b ∘ Mᵀ_obs, R rows of `dx`.
    c: Vec<f32>,
    b: Vec<f32>,
    bias: Vec<f32>,
    /// The CPU has AVX-512F: blocks are one register instead of two (same bits).
    wide: bool,
}

/// One trial's buffers.
pub(super) struct Step32 {
    /// K rounded up to a multiple of [`B`].
    kp: usize,
    /// a_t of the current step (`dx`).
    a: Vec<f32>,
    /// The counts, T rows of `dx`.
    x: Vec<f32>,
    /// The step's particles by latent: R rows of `kp` (zero on the padding).
    zt: Vec<f32>,
    /// dℓ_k/dη of the current step by unit: `dx` rows of `kp`.
    dl: Vec<f32>,
    /// ℓ of the current step (`kp`).
    ll: Vec<f32>,
    /// The current step's particle weights g (`kp`, zero on the padding).
    gw: Vec<f32>,
    /// dz of the current step by latent: R rows of `kp`.
    dz: Vec<f32>,
}

impl Poisson32 {
    /// From the readout's gain `b` and `bias` (dx each) and b ∘ Mᵀ_obs (R × dx).
    pub(super) fn new(b: &[f64], bias: &[f64], bm_obs: &[f64], r: usize) -> Self {
        let narrow = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        Poisson32 {
            dx: b.len(),
            r,
            c: narrow(&bm_obs[..r * b.len()]),
            b: narrow(b),
            bias: narrow(bias),
            wide: wide_available(),
        }
    }

    /// A trial's buffers, with its counts `x` (dx × T, unit-major) for K particles.
    pub(super) fn trial(&self, x: &[f64], n_steps: usize, k: usize) -> Step32 {
        let (dx, r) = (self.dx, self.r);
        let kp = k.div_ceil(B) * B;
        let mut xs = vec![0.0f32; n_steps * dx];
        for j in 0..dx {
            for t in 0..n_steps {
                xs[t * dx + j] = x[j * n_steps + t] as f32;
            }
        }
        Step32 {
            kp,
            a: self.bias.clone(),
            x: xs,
            zt: vec![0.0; r * kp],
            dl: vec![0.0; dx * kp],
            ll: vec![0.0; kp],
            gw: vec![0.0; kp],
            dz: vec![0.0; r * kp],
        }
    }

    /// The trial's buffers have the sizes [`Self::trial`] gives them (the block loops read
    /// and write them through raw pointers).
    fn check_buffers(&self, s: &Step32) {
        let (r, dx, kp) = (self.r, self.dx, s.kp);
        assert!(
            kp % B == 0
                && s.a.len() >= dx
                && s.zt.len() >= r * kp
                && s.dl.len() >= dx * kp
                && s.ll.len() >= kp
                && s.gw.len() >= kp
                && s.dz.len() >= r * kp
                && self.c.len() >= r * dx,
            "Poisson32: trial buffers of another shape"
        );
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
        let (r, k) = (self.r, ll.len());
        assert!(r <= 16 && z.len() >= k * r && s.kp >= k && s.x.len() >= (t + 1) * self.dx);
        self.check_buffers(s);
        for q in 0..r {
            for (kk, v) in s.zt[q * s.kp..q * s.kp + k].iter_mut().enumerate() {
                *v = z[kk * r + q] as f32;
            }
        }
        if self.wide {
            self.loglik16(s, t)
        } else {
            self.loglik8(s, t)
        }
        for (l, &v) in ll.iter_mut().zip(&s.ll) {
            *l = f64::from(v);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn loglik8(&self, s: &mut Step32, t: usize) {
        self.loglik_blocks::<Pair<__m256>, Pair<__m256>>(s, t)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn loglik16(&self, s: &mut Step32, t: usize) {
        // Two registers at a time: their dependency chains interleave (same bits).
        self.loglik_blocks::<Pair<__m512>, __m512>(s, t)
    }

    /// The forward step on blocks of `P` and then, for the particles left, of `V` (after
    /// [`Self::loglik`] laid out the particles).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn loglik_blocks<P: Block, V: Block>(&self, s: &mut Step32, t: usize) {
        let (r, dx, kp) = (self.r, self.dx, s.kp);
        let kw = kp / P::WIDTH * P::WIDTH;
        s.ll.fill(0.0);
        let (zt, dl, acc) = (s.zt.as_ptr(), s.dl.as_mut_ptr(), s.ll.as_mut_ptr());
        let mut cj = [0.0f32; 16];
        for j in 0..dx {
            for (q, c) in cj[..r].iter_mut().enumerate() {
                *c = self.c[q * dx + j];
            }
            let a = V::splat(s.a[j]);
            let x = s.x[t * dx + j];
            let xv = V::splat(x);
            let dl_j = dl.add(j * kp);
            // One unit's count for every particle: the branch is taken once per unit.
            let io = (zt, dl_j, acc);
            if x != 0.0 {
                unit_blocks::<P, true>(&cj[..r], (P::splat(s.a[j]), P::splat(x)), io, 0..kw, kp);
                unit_blocks::<V, true>(&cj[..r], (a, xv), io, kw..kp, kp);
            } else {
                unit_blocks::<P, false>(&cj[..r], (P::splat(s.a[j]), P::splat(x)), io, 0..kw, kp);
                unit_blocks::<V, false>(&cj[..r], (a, xv), io, kw..kp, kp);
            }
        }
    }

    /// The reverse pass of step `t` from the particle weights `gk` (K): adds dz_kq into `dz`
    /// (K × R), D into `d_out` (dx) and G into `g_out` (R × dx).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; [`Self::loglik`] ran for this step's particles `z`.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn backward(
        &self,
        s: &mut Step32,
        gk: &[f64],
        dz: &mut [f64],
        d_out: &mut [f64],
        g_out: &mut [f64],
    ) {
        let (r, dx, k) = (self.r, self.dx, gk.len());
        assert!(dz.len() >= k * r && s.kp >= k && d_out.len() >= dx && g_out.len() >= r * dx);
        self.check_buffers(s);
        for (w, &g) in s.gw.iter_mut().zip(gk) {
            *w = g as f32;
        }
        if self.wide {
            self.backward16(s, d_out, g_out)
        } else {
            self.backward8(s, d_out, g_out)
        }
        let kp = s.kp;
        for kk in 0..k {
            for q in 0..r {
                dz[kk * r + q] += f64::from(s.dz[q * kp + kk]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward8(&self, s: &mut Step32, d_out: &mut [f64], g_out: &mut [f64]) {
        macro_rules! go {
            ($r:literal) => {
                self.backward_blocks::<Pair<__m256>, $r>(s, d_out, g_out)
            };
        }
        by_rank!(self.r, go, go!(16))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn backward16(&self, s: &mut Step32, d_out: &mut [f64], g_out: &mut [f64]) {
        macro_rules! go {
            ($r:literal) => {
                self.backward_blocks::<__m512, $r>(s, d_out, g_out)
            };
        }
        by_rank!(self.r, go, go!(16))
    }

    /// The reverse step on blocks of `V`, for rank `R` (below 16: `R` is the rank, so that the
    /// sums G stay in registers; 16: up to 16).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn backward_blocks<V: Summed, const R: usize>(
        &self,
        s: &mut Step32,
        d_out: &mut [f64],
        g_out: &mut [f64],
    ) {
        let r = if R < 16 { R } else { self.r };
        let (dx, kp) = (self.dx, s.kp);
        s.dz.fill(0.0);
        let (zt, dl, gw, dzp) = (
            s.zt.as_ptr(),
            s.dl.as_ptr(),
            s.gw.as_ptr(),
            s.dz.as_mut_ptr(),
        );
        for j in 0..dx {
            let mut dsum = V::zero();
            let mut gsum = [V::zero(); R];
            let dl_j = dl.add(j * kp);
            for o in (0..kp).step_by(B) {
                let d = V::load(gw.add(o)).mul(V::load(dl_j.add(o)));
                dsum = dsum.add(d);
                for (q, gq) in gsum[..r].iter_mut().enumerate() {
                    *gq = V::load(zt.add(q * kp + o)).fma(d, *gq);
                    let p = dzp.add(q * kp + o);
                    V::splat(self.c[q * dx + j]).fma(d, V::load(p)).store(p);
                }
            }
            d_out[j] += f64::from(dsum.total());
            for (q, gq) in gsum[..r].iter().enumerate() {
                g_out[q * dx + j] += f64::from(gq.total());
            }
        }
    }
}

/// One unit of the forward step for the blocks of particles in `span` (a multiple of
/// `V::WIDTH` long, particles `kp` apart per latent): η = a + Σ_q c_q z_q, the term added to
/// ℓ's accumulators `acc` and dℓ/dη stored to `dl` (the unit's row).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unit_blocks<V: Block, const NONZERO: bool>(
    c: &[f32],
    (a, xv): (V, V),
    (zt, dl, acc): (*const f32, *mut f32, *mut f32),
    span: std::ops::Range<usize>,
    kp: usize,
) {
    for o in span.step_by(V::WIDTH) {
        let mut h = a;
        for (q, &cq) in c.iter().enumerate() {
            h = V::splat(cq).fma(V::load(zt.add(q * kp + o)), h);
        }
        let (term, d) = poisson_softplus32(h, xv, NONZERO);
        d.store(dl.add(o));
        V::load(acc.add(o)).add(term).store(acc.add(o));
    }
}

/// Sixteen particles' lanes: load, store and their sum (the two halves of eight added lane
/// by lane, then [`hsum`]'s tree, so that both implementations give the same bits).
#[cfg(target_arch = "x86_64")]
trait Block: Lanes32 {
    /// Particles per block.
    const WIDTH: usize;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
}

/// A block of [`B`] lanes whose sum the reverse pass takes.
#[cfg(target_arch = "x86_64")]
trait Summed: Block {
    unsafe fn total(self) -> f32;
}

#[cfg(target_arch = "x86_64")]
impl Block for __m512 {
    const WIDTH: usize = B;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
}

#[cfg(target_arch = "x86_64")]
impl Summed for __m512 {
    #[inline(always)]
    unsafe fn total(self) -> f32 {
        let lo = _mm512_castps512_ps256(self);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self)));
        hsum(_mm256_add_ps(lo, hi))
    }
}

/// Two registers as one block: `Pair<__m256>` is sixteen lanes as two AVX2 registers (the
/// lanes 0–7 and 8–15), `Pair<__m512>` two blocks of sixteen side by side.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Pair<H>(H, H);

/// One AVX2 register: the halves of `Pair<__m256>`.
#[cfg(target_arch = "x86_64")]
impl Block for __m256 {
    const WIDTH: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
}

#[cfg(target_arch = "x86_64")]
impl<H: Block> Block for Pair<H> {
    const WIDTH: usize = 2 * H::WIDTH;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Pair(H::load(p), H::load(p.add(H::WIDTH)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        self.0.store(p);
        self.1.store(p.add(H::WIDTH));
    }
}

#[cfg(target_arch = "x86_64")]
impl Summed for Pair<__m256> {
    #[inline(always)]
    unsafe fn total(self) -> f32 {
        hsum(_mm256_add_ps(self.0, self.1))
    }
}

/// `fn op(self, b) -> Self` for `Pair`: `op` on the first halves and on the second halves.
#[cfg(target_arch = "x86_64")]
macro_rules! pair_binary {
    ($($op:ident),*) => {$(
        #[inline(always)]
        unsafe fn $op(self, b: Self) -> Self {
            Pair(self.0.$op(b.0), self.1.$op(b.1))
        }
    )*};
}

/// Each operation on both halves, as `H`'s.
#[cfg(target_arch = "x86_64")]
impl<H: Lanes32> Lanes32 for Pair<H> {
    type Mask = (H::Mask, H::Mask);
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Pair(H::splat(v), H::splat(v))
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Pair(H::zero(), H::zero())
    }
    // The lane-wise binary operations, each on both halves.
    pair_binary!(add, sub, mul, div, max, min);
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        Pair(self.0.fma(b.0, c.0), self.1.fma(b.1, c.1))
    }
    #[inline(always)]
    unsafe fn gt(self, b: Self) -> Self::Mask {
        (self.0.gt(b.0), self.1.gt(b.1))
    }
    #[inline(always)]
    unsafe fn lt(self, b: Self) -> Self::Mask {
        (self.0.lt(b.0), self.1.lt(b.1))
    }
    #[inline(always)]
    unsafe fn select(m: Self::Mask, yes: Self, no: Self) -> Self {
        Pair(H::select(m.0, yes.0, no.0), H::select(m.1, yes.1, no.1))
    }
    #[inline(always)]
    unsafe fn add_where(self, m: Self::Mask, b: Self) -> Self {
        Pair(self.0.add_where(m.0, b.0), self.1.add_where(m.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub_where(self, m: Self::Mask, b: Self) -> Self {
        Pair(self.0.sub_where(m.0, b.0), self.1.sub_where(m.1, b.1))
    }
    #[inline(always)]
    unsafe fn any_nonzero(self) -> bool {
        self.0.any_nonzero() || self.1.any_nonzero()
    }
    #[inline(always)]
    unsafe fn pow2_of_shifted(self) -> Self {
        Pair(self.0.pow2_of_shifted(), self.1.pow2_of_shifted())
    }
    #[inline(always)]
    unsafe fn frexp(self) -> (Self, Self) {
        let ((e0, m0), (e1, m1)) = (self.0.frexp(), self.1.frexp());
        (Pair(e0, e1), Pair(m0, m1))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::inference::fastmath::poisson_softplus_scalar;
    use crate::inference::kernel::fma_available;
    use rand::{Rng, SeedableRng};

    /// The step on AVX-512 registers (two at a time, then one) gives the bits of the step on
    /// pairs of AVX2 registers (ℓ, dℓ/dη, dz, D and G), for particle counts with and without
    /// padding, with and without a left-over sixteen.
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
            (4, 57, 33),
            (2, 40, 100),
            (3, 21, 32),
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
            let gk: Vec<f64> = (0..k).map(|_| rng.gen_range(0.0..0.3)).collect();
            let p = Poisson32::new(&b, &bias, &bm, r);
            let run = |wide: bool, t: usize| {
                let p = Poisson32 {
                    wide,
                    c: p.c.clone(),
                    b: p.b.clone(),
                    bias: p.bias.clone(),
                    ..p
                };
                let mut s = p.trial(&x, tt, k);
                p.set_input(&eobs, &mut s);
                let mut ll = vec![0.0; k];
                let (mut dz, mut d, mut g) = (vec![0.0; k * r], vec![0.0; dx], vec![0.0; r * dx]);
                // SAFETY: AVX-512F, AVX2 and FMA are available (checked above).
                unsafe {
                    p.loglik(&mut s, t, &z, &mut ll);
                    let dl = s.dl.clone();
                    p.backward(&mut s, &gk, &mut dz, &mut d, &mut g);
                    (ll, dl, dz, d, g)
                }
            };
            for t in 0..tt {
                let (narrow, wide) = (run(false, t), run(true, t));
                let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                let bits32 = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                let case = format!("r {r} dx {dx} k {k} t {t}");
                assert_eq!(bits(&narrow.0), bits(&wide.0), "ℓ, {case}");
                assert_eq!(bits32(&narrow.1), bits32(&wide.1), "dℓ/dη, {case}");
                assert_eq!(bits(&narrow.2), bits(&wide.2), "dz, {case}");
                assert_eq!(bits(&narrow.3), bits(&wide.3), "D, {case}");
                assert_eq!(bits(&narrow.4), bits(&wide.4), "G, {case}");
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
                p.backward(&mut s, &gk, &mut dz, &mut d, &mut g);
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
