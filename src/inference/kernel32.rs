//! Single-precision transition kernels (`vsmc.precision: f32`).
//!
//! The reference trains in float32. In f32 mode only the O(N) work of the transition — the
//! units' currents x = M z + e, φ(x; h), the sum n φ and their reverse pass, the part that
//! dominates an epoch (SPEC §1.1) — runs in single precision, eight units per 256-bit register;
//! everything of size R, the observation terms, the proposal and the resampling stay in f64.
//! Sums over particles start from zero in f32 in every call and are added to the caller's f64
//! accumulators, so rounding does not grow with the length of a trial.
//!
//! Layout and summation order follow [`super::kernel`]: Mᵀ and n are R rows `stride` apart,
//! the sums over units run in 8 lanes then a fixed horizontal sum, particles in order; results
//! do not depend on the thread count. The AVX2 + FMA kernels (`kernel32_avx2.rs`) are used when
//! the CPU has them; the portable loops here are the fallback and the tests' reference.

use super::kernel::{Grads, Weights};
use crate::model::lowrank::Nonlinearity;

/// The transition's weights rounded to f32, in the kernels' layout (built once per minibatch).
#[derive(Debug, Clone, Default)]
pub struct Weights32 {
    /// Mᵀ, R rows `stride` apart.
    pub mt: Vec<f32>,
    /// n, R rows `stride` apart.
    pub n: Vec<f32>,
    /// h, N.
    pub h: Vec<f32>,
}

impl Weights32 {
    /// Rounds the f64 weights (same layout) to f32.
    pub fn new(mt: &[f64], n: &[f64], h: &[f64]) -> Self {
        let round = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Weights32 {
            mt: round(mt),
            n: round(n),
            h: round(h),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "kernel32_avx2.rs"]
pub(super) mod avx2;

/// Transition means in f32 (see [`super::kernel::means`]); `mu` is written in f64.
pub(super) fn means(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    mu: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if super::kernel::fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        if unsafe { avx2::means(w, lo, z, ext, mu) } {
            return;
        }
    }
    means_plain(w, lo, z, ext, mu);
}

/// Reverse of [`means`] in f32 (see [`super::kernel::means_backward`]): adds the weights'
/// gradients into the f64 accumulators of `g` and dL/dz into `dz`.
pub(super) fn backward(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if super::kernel::fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        if unsafe { avx2::backward(w, lo, z, ext, dmu, g, dz) } {
            return;
        }
    }
    backward_plain(w, lo, z, ext, dmu, g, dz);
}

/// (φ, ∂φ/∂x, ∂φ/∂h) in f32, the formulas of [`Nonlinearity::eval`].
#[inline(always)]
pub(super) fn act(nl: Nonlinearity, x: f32, h: f32) -> (f32, f32, f32) {
    match nl {
        Nonlinearity::Relu => {
            if x - h > 0.0 {
                (x - h, 1.0, -1.0)
            } else {
                (0.0, 0.0, 0.0)
            }
        }
        Nonlinearity::ClippedRelu => {
            let a = if x + h > 0.0 { 1.0 } else { 0.0 };
            let b = if x > 0.0 { 1.0 } else { 0.0 };
            ((x + h).max(0.0) - x.max(0.0), a - b, a)
        }
        Nonlinearity::Tanh => {
            let t = (x - h).tanh();
            let d = 1.0 - t * t;
            (t, d, -d)
        }
        Nonlinearity::Identity => (x - h, 1.0, -1.0),
    }
}

/// Portable f32 means (any rank): per particle, the sum over units in f32, in unit order.
fn means_plain(w: &Weights<'_>, lo: &Weights32, z: &[f64], ext: Option<&[f64]>, mu: &mut [f64]) {
    let (n, r) = (w.h.len(), w.rank);
    let st = w.stride;
    let k = z.len() / r;
    let mut acc = vec![0.0f32; r];
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        acc.iter_mut().for_each(|a| *a = 0.0);
        for i in 0..n {
            let mut x = ext.map(|e| e[i] as f32).unwrap_or(0.0);
            for q in 0..r {
                x += lo.mt[q * st + i] * zk[q] as f32;
            }
            let phi = act(w.nonlinearity, x, lo.h[i]).0;
            for q in 0..r {
                acc[q] += lo.n[q * st + i] * phi;
            }
        }
        for q in 0..r {
            mu[kk * r + q] = w.decay * zk[q] + acc[q] as f64;
        }
    }
}

/// Portable f32 reverse pass (any rank). Gradient contributions of one call are summed over
/// the particles in f32, then added to the f64 accumulators.
fn backward_plain(
    w: &Weights<'_>,
    lo: &Weights32,
    z: &[f64],
    ext: Option<&[f64]>,
    dmu: &[f64],
    g: &mut Grads<'_>,
    dz: &mut [f64],
) {
    let (n, r) = (w.h.len(), w.rank);
    let st = w.stride;
    let k = z.len() / r;
    let mut dzk = vec![0.0f32; r];
    let mut gm = vec![0.0f32; r];
    let mut gn = vec![0.0f32; r];
    for i in 0..n {
        let (mut gh, mut ge) = (0.0f32, 0.0f32);
        gm.iter_mut().for_each(|v| *v = 0.0);
        gn.iter_mut().for_each(|v| *v = 0.0);
        for kk in 0..k {
            let zk = &z[kk * r..(kk + 1) * r];
            let dk = &dmu[kk * r..(kk + 1) * r];
            let mut x = ext.map(|e| e[i] as f32).unwrap_or(0.0);
            let mut dr = 0.0f32;
            for q in 0..r {
                x += lo.mt[q * st + i] * zk[q] as f32;
                dr += lo.n[q * st + i] * dk[q] as f32;
            }
            let (phi, dphi_dx, dphi_dh) = act(w.nonlinearity, x, lo.h[i]);
            gh += dr * dphi_dh;
            let dxu = dr * dphi_dx;
            ge += dxu;
            for q in 0..r {
                gn[q] += dk[q] as f32 * phi;
                gm[q] += dxu * zk[q] as f32;
            }
        }
        g.h[i] += gh as f64;
        if let Some(gext) = g.ext.as_deref_mut() {
            gext[i] += ge as f64;
        }
        for q in 0..r {
            g.n[q * st + i] += gn[q] as f64;
            g.mt[q * st + i] += gm[q] as f64;
        }
    }
    // dL/dz_k = Σ_i M[i,q] dL/dx_ki, recomputing dL/dx per particle.
    for kk in 0..k {
        let zk = &z[kk * r..(kk + 1) * r];
        let dk = &dmu[kk * r..(kk + 1) * r];
        dzk.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..n {
            let mut x = ext.map(|e| e[i] as f32).unwrap_or(0.0);
            let mut dr = 0.0f32;
            for q in 0..r {
                x += lo.mt[q * st + i] * zk[q] as f32;
                dr += lo.n[q * st + i] * dk[q] as f32;
            }
            let dxu = dr * act(w.nonlinearity, x, lo.h[i]).1;
            for q in 0..r {
                dzk[q] += lo.mt[q * st + i] * dxu;
            }
        }
        for q in 0..r {
            dz[kk * r + q] += dzk[q] as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::{self, row_stride, with_stride};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    const NLS: [Nonlinearity; 4] = [
        Nonlinearity::Relu,
        Nonlinearity::ClippedRelu,
        Nonlinearity::Tanh,
        Nonlinearity::Identity,
    ];

    /// max |a − b| / max |b|.
    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    struct Case {
        n: usize,
        r: usize,
        k: usize,
        st: usize,
        mt: Vec<f64>,
        nn: Vec<f64>,
        h: Vec<f64>,
        z: Vec<f64>,
        e: Vec<f64>,
        dmu: Vec<f64>,
    }

    fn case(rng: &mut ChaCha8Rng, n: usize, r: usize, k: usize) -> Case {
        let st = row_stride(n);
        let scale = 1.0 / (n as f64).sqrt();
        let mt: Vec<f64> = random(rng, r * n).iter().map(|v| v * 2.0).collect();
        let nn: Vec<f64> = random(rng, r * n).iter().map(|v| v * scale).collect();
        Case {
            n,
            r,
            k,
            st,
            mt: with_stride(&mt, r, n, st),
            nn: with_stride(&nn, r, n, st),
            h: random(rng, n),
            z: random(rng, k * r),
            e: random(rng, n),
            dmu: random(rng, k * r),
        }
    }

    /// Runs means and the reverse pass with the given precision: (μ, ∂M, ∂n, ∂h, ∂e, ∂z).
    fn run(c: &Case, nl: Nonlinearity, with_ext: bool, lo: Option<&Weights32>) -> [Vec<f64>; 6] {
        let w = Weights {
            mt: &c.mt,
            n: &c.nn,
            h: &c.h,
            stride: c.st,
            decay: 0.8,
            rank: c.r,
            nonlinearity: nl,
            lo,
            identity_m: false,
        };
        let ext = with_ext.then_some(c.e.as_slice());
        let mut mu = vec![0.0; c.k * c.r];
        kernel::means(&w, &c.z, ext, &mut mu);
        let len = (c.r - 1) * c.st + c.n;
        let (mut gmt, mut gn, mut gh, mut ge) = (
            vec![0.0; len],
            vec![0.0; len],
            vec![0.0; c.n],
            vec![0.0; c.n],
        );
        let (mut work, mut work32) = (Vec::new(), Vec::new());
        let mut dz = vec![0.0; c.k * c.r];
        let mut g = Grads {
            mt: &mut gmt,
            n: &mut gn,
            h: &mut gh,
            ext: with_ext.then_some(ge.as_mut_slice()),
            work: &mut work,
            work32: &mut work32,
        };
        kernel::means_backward(&w, &c.z, ext, &c.dmu, &mut g, &mut dz);
        [mu, gmt, gn, gh, ge, dz]
    }

    /// The f32 kernels (AVX2 where the CPU has it) agree with the f64 kernels to f32 accuracy
    /// for every nonlinearity, specialised and runtime ranks, N with and without a tail.
    #[test]
    fn f32_kernels_agree_with_f64() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(n, r, k) in &[
            (512, 3, 10),
            (20, 2, 64),
            (37, 1, 5),
            (100, 9, 4),
            (8, 5, 3),
        ] {
            let c = case(&mut rng, n, r, k);
            let lo = Weights32::new(&c.mt, &c.nn, &c.h);
            for nl in NLS {
                for with_ext in [false, true] {
                    let exact = run(&c, nl, with_ext, None);
                    let single = run(&c, nl, with_ext, Some(&lo));
                    for (what, (a, b)) in ["mu", "dM", "dn", "dh", "de", "dz"]
                        .iter()
                        .zip(single.iter().zip(&exact))
                    {
                        if *what == "de" && !with_ext {
                            continue;
                        }
                        let e = rel(a, b);
                        assert!(
                            e < 2e-5,
                            "{what}: N={n} R={r} K={k} {nl:?} ext={with_ext}: rel {e:e}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 f32 kernels and the portable f32 loops agree to f32 rounding.
    #[test]
    fn f32_vector_kernels_match_portable_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for &(n, r, k) in &[(512, 3, 10), (20, 2, 7), (45, 4, 3)] {
            let c = case(&mut rng, n, r, k);
            let lo = Weights32::new(&c.mt, &c.nn, &c.h);
            for nl in NLS {
                let w = Weights {
                    mt: &c.mt,
                    n: &c.nn,
                    h: &c.h,
                    stride: c.st,
                    decay: 0.8,
                    rank: r,
                    nonlinearity: nl,
                    lo: Some(&lo),
                    identity_m: false,
                };
                let ext = Some(c.e.as_slice());
                let (mut a, mut b) = (vec![0.0; k * r], vec![0.0; k * r]);
                means(&w, &lo, &c.z, ext, &mut a);
                means_plain(&w, &lo, &c.z, ext, &mut b);
                assert!(rel(&a, &b) < 1e-5, "means {nl:?} N={n}");
                let len = (r - 1) * c.st + n;
                let mut outs = Vec::new();
                for plain in [false, true] {
                    let (mut gmt, mut gn, mut gh, mut ge) =
                        (vec![0.0; len], vec![0.0; len], vec![0.0; n], vec![0.0; n]);
                    let (mut work, mut work32) = (Vec::new(), Vec::new());
                    let mut dz = vec![0.0; k * r];
                    let mut g = Grads {
                        mt: &mut gmt,
                        n: &mut gn,
                        h: &mut gh,
                        ext: Some(ge.as_mut_slice()),
                        work: &mut work,
                        work32: &mut work32,
                    };
                    if plain {
                        backward_plain(&w, &lo, &c.z, ext, &c.dmu, &mut g, &mut dz);
                    } else {
                        backward(&w, &lo, &c.z, ext, &c.dmu, &mut g, &mut dz);
                    }
                    outs.push([gmt, gn, gh, ge, dz]);
                }
                for (a, b) in outs[0].iter().zip(&outs[1]) {
                    assert!(rel(a, b) < 1e-5, "backward {nl:?} N={n}: {:e}", rel(a, b));
                }
            }
        }
    }

    /// The f32 reverse pass is deterministic and accumulates (adds into) the f64 gradients.
    #[test]
    fn f32_backward_adds_into_the_accumulators() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let c = case(&mut rng, 64, 2, 6);
        let lo = Weights32::new(&c.mt, &c.nn, &c.h);
        let once = run(&c, Nonlinearity::Tanh, true, Some(&lo));
        let again = run(&c, Nonlinearity::Tanh, true, Some(&lo));
        assert_eq!(once, again);
        let w = Weights {
            mt: &c.mt,
            n: &c.nn,
            h: &c.h,
            stride: c.st,
            decay: 0.8,
            rank: 2,
            nonlinearity: Nonlinearity::Tanh,
            lo: Some(&lo),
            identity_m: false,
        };
        let len = c.st + 64;
        let (mut gmt, mut gn, mut gh, mut ge) =
            (vec![1.0; len], vec![1.0; len], vec![1.0; 64], vec![1.0; 64]);
        let (mut work, mut work32) = (Vec::new(), Vec::new());
        let mut dz = vec![1.0; 12];
        let mut g = Grads {
            mt: &mut gmt,
            n: &mut gn,
            h: &mut gh,
            ext: Some(ge.as_mut_slice()),
            work: &mut work,
            work32: &mut work32,
        };
        kernel::means_backward(&w, &c.z, Some(&c.e), &c.dmu, &mut g, &mut dz);
        let plus_one = |v: &[f64]| v.iter().map(|x| x + 1.0).collect::<Vec<f64>>();
        assert_eq!(gmt[..64], plus_one(&once[1])[..64]);
        assert_eq!(gh, plus_one(&once[3]));
        assert_eq!(dz, plus_one(&once[5]));
    }

    /// On AVX-512 the pairs of 8-unit chunks run as one 16-unit register; every output has
    /// the bits of the 8-unit kernels, for every nonlinearity, rank 1–8, with and without the
    /// input current, and N with no pair, pairs only, a left-over chunk and a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_units_give_the_bits_of_eight() {
        if !(kernel::fma_available() && avx2::wide_available()) {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut cases = 0;
        for n in [8, 15, 16, 24, 31, 40, 47, 64, 77, 512] {
            for r in 1..=8 {
                let c = case(&mut rng, n, r, 7);
                let lo = Weights32::new(&c.mt, &c.nn, &c.h);
                for nl in NLS {
                    for with_ext in [false, true] {
                        let w = Weights {
                            mt: &c.mt,
                            n: &c.nn,
                            h: &c.h,
                            stride: c.st,
                            decay: 0.8,
                            rank: r,
                            nonlinearity: nl,
                            lo: Some(&lo),
                            identity_m: false,
                        };
                        let ext = with_ext.then_some(c.e.as_slice());
                        let len = (r - 1) * c.st + n;
                        let outputs = |wide: bool| {
                            let mut mu = vec![0.0; c.k * r];
                            let (mut gmt, mut gn, mut gh, mut ge) =
                                (vec![0.5; len], vec![0.5; len], vec![0.5; n], vec![0.5; n]);
                            let (mut work, mut work32) = (Vec::new(), Vec::new());
                            let mut dz = vec![0.5; c.k * r];
                            let mut g = Grads {
                                mt: &mut gmt,
                                n: &mut gn,
                                h: &mut gh,
                                ext: with_ext.then_some(ge.as_mut_slice()),
                                work: &mut work,
                                work32: &mut work32,
                            };
                            // SAFETY: AVX2, FMA and AVX-512F checked above.
                            let ran = unsafe {
                                avx2::means_on(wide, &w, &lo, &c.z, ext, &mut mu)
                                    && avx2::backward_on(
                                        wide, &w, &lo, &c.z, ext, &c.dmu, &mut g, &mut dz,
                                    )
                            };
                            assert!(ran, "rank {r} has a vector kernel");
                            [mu, gmt, gn, gh, ge, dz]
                                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>())
                        };
                        let (narrow, wide) = (outputs(false), outputs(true));
                        for (what, (a, b)) in ["mu", "dM", "dn", "dh", "de", "dz"]
                            .iter()
                            .zip(wide.iter().zip(&narrow))
                        {
                            assert!(a == b, "{what}: N={n} R={r} {nl:?} ext={with_ext}");
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 10 * 8 * 4 * 2);
    }
}
