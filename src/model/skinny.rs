//! f64 matrix products with a dimension of a few (R = 2 or 3 latents against T·K particles or
//! N units): the per-trial and per-step products of the rank-R models.
//!
//! `matrixmultiply` packs both operands into 8 × 8 tiles before its kernel runs; when one
//! dimension is 2 or 3 most of each tile is padding, and packing took as long as the products
//! (≈ 18 % of a continuous teacher–student epoch in `perf`). These loops read the operands in
//! place.
//!
//! They round as `matrixmultiply`'s FMA kernels (AVX2 + FMA, AVX-512) do, so the results keep
//! their bits: each entry of A·B is summed over k in order by fused multiply-adds from +0, in
//! blocks of [`KC`] (its `D_KC`); the first block is written (β = 0) or added to C (β = 1), each
//! later block added to C. Other β, and CPUs without FMA (whose kernels multiply, then add),
//! stay with `matrixmultiply`.

use super::unsigned;

/// `matrixmultiply`'s depth of a packed block for f64 (`archparam_defaults::D_KC`).
const KC: usize = 256;

/// Largest dimension that counts as "a few".
const FEW: usize = 8;

/// C = A·B + βC for the shapes and β this module handles, returning `false` (nothing done)
/// otherwise. Strides are (row, column) in elements, extents checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    sa: (isize, isize),
    b: &[f64],
    sb: (isize, isize),
    beta: f64,
    c: &mut [f64],
    sc: (isize, isize),
) -> bool {
    if k == 0 || m.min(k).min(n) > FEW || !(beta == 0.0 || beta == 1.0) || !fma_available() {
        return false;
    }
    let (sa, sb, sc) = (unsigned(sa), unsigned(sb), unsigned(sc));
    if n < 4 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA checked above.
        unsafe {
            match n {
                1 => narrow::<1>(m, k, a, sa, b, sb, beta, c, sc),
                2 => narrow::<2>(m, k, a, sa, b, sb, beta, c, sc),
                _ => narrow::<3>(m, k, a, sa, b, sb, beta, c, sc),
            }
        };
        return cfg!(target_arch = "x86_64");
    }
    // B or C strided along a row (Bᵀ, Cᵀ): `matrixmultiply`, which transposes them while
    // packing.
    if sb.1 != 1 || sc.1 != 1 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA checked above.
    unsafe {
        rows(m, k, n, a, sa, b, sb.0, beta, c, sc.0)
    };
    // Elsewhere `fma_available` is false and this point is not reached.
    cfg!(target_arch = "x86_64")
}

/// AVX2 and FMA: the instructions of [`rows`], and the CPUs on which `matrixmultiply` runs a
/// fused kernel (AVX-512F, or FMA with AVX2).
#[cfg(target_arch = "x86_64")]
fn fma_available() -> bool {
    std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_available() -> bool {
    false
}

/// Fewer than four columns (N), any strides: up to four rows × N columns of scalar sums at a
/// time, 4N independent chains of fused multiply-adds per step of the depth (an earlier loop
/// over one row's dot products at a time had measured slower than `matrixmultiply`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn narrow<const N: usize>(
    m: usize,
    k: usize,
    a: &[f64],
    sa: (usize, usize),
    b: &[f64],
    sb: (usize, usize),
    beta: f64,
    c: &mut [f64],
    sc: (usize, usize),
) {
    // Bounds: the last element each pointer below reaches.
    assert!((m - 1) * sa.0 + (k - 1) * sa.1 < a.len());
    assert!((k - 1) * sb.0 + (N - 1) * sb.1 < b.len());
    assert!((m - 1) * sc.0 + (N - 1) * sc.1 < c.len());
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    /// Rows i0..i0 + G from the depth block [l0, l1).
    #[inline(always)]
    unsafe fn rows_of<const G: usize, const N: usize>(
        (ap, sa): (*const f64, (usize, usize)),
        (bp, sb): (*const f64, (usize, usize)),
        (cp, sc): (*mut f64, (usize, usize)),
        i0: usize,
        (l0, l1): (usize, usize),
        assign: bool,
    ) {
        let mut acc = [[0.0f64; N]; G];
        for l in l0..l1 {
            let bv: [f64; N] = std::array::from_fn(|j| *bp.add(l * sb.0 + j * sb.1));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *ap.add((i0 + r) * sa.0 + l * sa.1);
                for (s, &v) in row.iter_mut().zip(&bv) {
                    *s = av.mul_add(v, *s);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                let p = cp.add((i0 + r) * sc.0 + j * sc.1);
                *p = if assign { s } else { *p + s };
            }
        }
    }
    let (aa, bb, cc) = ((ap, sa), (bp, sb), (cp, sc));
    for (block, l0) in (0..k).step_by(KC).enumerate() {
        let ls = (l0, k.min(l0 + KC));
        let assign = block == 0 && beta == 0.0;
        let mut i0 = 0;
        while i0 < m {
            let g = (m - i0).min(4);
            match g {
                4 => rows_of::<4, N>(aa, bb, cc, i0, ls, assign),
                3 => rows_of::<3, N>(aa, bb, cc, i0, ls, assign),
                2 => rows_of::<2, N>(aa, bb, cc, i0, ls, assign),
                _ => rows_of::<1, N>(aa, bb, cc, i0, ls, assign),
            }
            i0 += g;
        }
    }
}

/// B and C contiguous along a row: two rows of C × sixteen columns at a time in registers
/// (eight independent sums per step of the depth), then four columns, then one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    sa: (usize, usize),
    b: &[f64],
    sb0: usize,
    beta: f64,
    c: &mut [f64],
    sc0: usize,
) {
    use std::arch::x86_64::*;
    // Bounds: the last element each pointer below reaches.
    assert!((m - 1) * sa.0 + (k - 1) * sa.1 < a.len());
    assert!((k - 1) * sb0 + n - 1 < b.len() && (m - 1) * sc0 + n - 1 < c.len());
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    /// C[i][j0..j0 + 4W] for rows i0..i0 + R from the depth block [l0, l1).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const W: usize>(
        (ap, sa): (*const f64, (usize, usize)),
        (bp, sb0): (*const f64, usize),
        (cp, sc0): (*mut f64, usize),
        i0: usize,
        j0: usize,
        (l0, l1): (usize, usize),
        assign: bool,
    ) {
        let mut acc = [[_mm256_setzero_pd(); W]; R];
        for l in l0..l1 {
            let mut bv = [_mm256_setzero_pd(); W];
            for (w, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_pd(bp.add(l * sb0 + j0 + 4 * w));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_pd(*ap.add((i0 + r) * sa.0 + l * sa.1));
                for (s, &v) in row.iter_mut().zip(&bv) {
                    *s = _mm256_fmadd_pd(av, v, *s);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (w, &s) in row.iter().enumerate() {
                let p = cp.add((i0 + r) * sc0 + j0 + 4 * w);
                let v = if assign {
                    s
                } else {
                    _mm256_add_pd(_mm256_loadu_pd(p), s)
                };
                _mm256_storeu_pd(p, v);
            }
        }
    }
    /// The same for one column (scalar).
    #[inline(always)]
    unsafe fn column(
        (ap, sa): (*const f64, (usize, usize)),
        (bp, sb0): (*const f64, usize),
        (cp, sc0): (*mut f64, usize),
        i: usize,
        j: usize,
        (l0, l1): (usize, usize),
        assign: bool,
    ) {
        let mut s = 0.0f64;
        for l in l0..l1 {
            s = (*ap.add(i * sa.0 + l * sa.1)).mul_add(*bp.add(l * sb0 + j), s);
        }
        let p = cp.add(i * sc0 + j);
        *p = if assign { s } else { *p + s };
    }
    let (aa, bb, cc) = ((ap, sa), (bp, sb0), (cp, sc0));
    for (block, l0) in (0..k).step_by(KC).enumerate() {
        let ls = (l0, k.min(l0 + KC));
        let assign = block == 0 && beta == 0.0;
        let mut i0 = 0;
        while i0 < m {
            let two = i0 + 2 <= m;
            let mut j0 = 0;
            while j0 + 16 <= n {
                if two {
                    tile::<2, 4>(aa, bb, cc, i0, j0, ls, assign);
                } else {
                    tile::<1, 4>(aa, bb, cc, i0, j0, ls, assign);
                }
                j0 += 16;
            }
            while j0 + 4 <= n {
                if two {
                    tile::<2, 1>(aa, bb, cc, i0, j0, ls, assign);
                } else {
                    tile::<1, 1>(aa, bb, cc, i0, j0, ls, assign);
                }
                j0 += 4;
            }
            for j in j0..n {
                for i in i0..(i0 + if two { 2 } else { 1 }) {
                    column(aa, bb, cc, i, j, ls, assign);
                }
            }
            i0 += if two { 2 } else { 1 };
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// The skinny products give `matrixmultiply`'s bits: both β, depths across the block size,
    /// every column remainder (16, 4, 1 at a time), an odd row, a transposed A; fewer than four
    /// columns with any layout (row remainders of 1–3), more columns only with B row-major
    /// (a transposed B goes to `matrixmultiply`).
    #[test]
    fn skinny_products_give_the_bits_of_matrixmultiply() {
        if !super::fma_available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let shapes = [
            (4800, 2, 20),
            (2, 4800, 20),
            (4800, 20, 2),
            (2, 600, 2),
            (3, 3, 3),
            (64, 2, 20),
            (3, 10, 512),
            (7, 257, 5),
            (1, 1, 1),
            (9, 3, 70),
            (12801, 20, 2),
            (2, 12800, 2),
            (5, 700, 3),
            (3, 5, 1),
        ];
        let mut handled = 0;
        for &(m, k, n) in &shapes {
            for beta in [0.0, 1.0] {
                for transpose_a in [false, true] {
                    for transpose_b in [false, true] {
                        let a: Vec<f64> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let b: Vec<f64> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let c0: Vec<f64> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        let sa = if transpose_a {
                            (1, m as isize)
                        } else {
                            (k as isize, 1)
                        };
                        let sb = if transpose_b {
                            (1, k as isize)
                        } else {
                            (n as isize, 1)
                        };
                        let sc = (n as isize, 1);
                        let mut want = c0.clone();
                        // SAFETY: extents match the strides.
                        unsafe {
                            matrixmultiply::dgemm(
                                m,
                                k,
                                n,
                                1.0,
                                a.as_ptr(),
                                sa.0,
                                sa.1,
                                b.as_ptr(),
                                sb.0,
                                sb.1,
                                beta,
                                want.as_mut_ptr(),
                                sc.0,
                                sc.1,
                            )
                        };
                        let mut got = c0.clone();
                        if super::gemm(m, k, n, &a, sa, &b, sb, beta, &mut got, sc) {
                            handled += 1;
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert_eq!(
                                    g.to_bits(),
                                    w.to_bits(),
                                    "{m}×{k}×{n} β {beta} Aᵀ {transpose_a} Bᵀ {transpose_b}: \
                                     entry {i}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // Four columns or more: 6 shapes × β × Aᵀ, B row-major; fewer: 8 shapes × 8 layouts.
        assert_eq!(handled, 6 * 4 + 8 * 8, "cases that took the skinny path");
    }
}
