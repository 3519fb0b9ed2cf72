//! f32 matrix products without packing, for the CNN encoder's convolutions (im2col GEMMs of
//! 64 × 704 · 704 × 200 and their two adjoints in the Poisson teacher–student setup).
//!
//! `matrixmultiply::sgemm` copies both operands into 16 × 16 panels before its kernel runs. For
//! these shapes the copies cost ≈ three quarters of the products (`perf` of a Poisson f32 epoch:
//! `pack_avx512` 6.9 %, `sgemm_kernel` 9.2 %), most of it in reading the transposed im2col
//! matrix of the weight gradient column by column. Here B is read in place, row by row (a
//! transposed operand is copied once, whichever of A and B is smaller), and A is broadcast.
//!
//! The results keep `matrixmultiply`'s bits, as in [`super::skinny`]: each entry of A·B is
//! summed over k in order by fused multiply-adds from +0, in blocks of [`KC`] (its `S_KC`); the
//! first block is written (β = 0) or added to C (β = 1), each later block added to C. Swapping
//! the roles of A and B (Cᵀ = Bᵀ·Aᵀ) only swaps the two factors of each fused multiply-add,
//! which does not change its result. Other β, and CPUs without AVX-512F and FMA (on which
//! `matrixmultiply` may run a kernel that multiplies, then adds), stay with `matrixmultiply`.

#[cfg(target_arch = "x86_64")]
use super::unsigned;

/// `matrixmultiply`'s depth of a packed block for f32 (`archparam_defaults::S_KC`).
const KC: usize = 256;

/// Below this many multiply-adds `matrixmultiply` is left to it (its packing is cheap there).
const MIN_WORK: usize = 4096;

/// Shallower products are left to `matrixmultiply` (a head's input gradient, depth R = 2, ran
/// ≈ 0.9× its speed here).
const MIN_DEPTH: usize = 4;

/// C = A·B + βC for the β this module handles, returning `false` (nothing done) otherwise.
/// Strides are (row, column) in elements, extents checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    sa: (isize, isize),
    b: &[f32],
    sb: (isize, isize),
    beta: f32,
    c: &mut [f32],
    sc: (isize, isize),
) -> bool {
    if m == 0
        || n == 0
        || k < MIN_DEPTH
        || m * n * k < MIN_WORK
        || !(beta == 0.0 || beta == 1.0)
        || !available()
    {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    oriented(
        m,
        k,
        n,
        a,
        unsigned(sa),
        b,
        unsigned(sb),
        beta,
        c,
        unsigned(sc),
    );
    // Elsewhere `available` is false and this point is not reached.
    cfg!(target_arch = "x86_64")
}

/// The kernel reads B row by row and broadcasts A. Picks the orientation whose B has contiguous
/// rows; failing both, copies the smaller of B and Aᵀ into a row-major buffer.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn oriented(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    beta: f32,
    c: &mut [f32],
    sc: (usize, usize),
) {
    // Cᵀ (n × m) = Bᵀ (n × k) · Aᵀ (k × m), Aᵀ given as rows of stride `sat0`.
    let swapped = |c: &mut [f32], at: &[f32], sat0: usize| {
        // SAFETY: AVX-512F and FMA checked by `gemm`; extents checked by `rows`.
        unsafe {
            rows(
                n,
                k,
                m,
                b,
                (Strided(sb.1), sb.0),
                at,
                Strided(sat0),
                beta,
                c,
                (sc.1, sc.0),
            )
        }
    };
    if sb.1 == 1 {
        // SAFETY: as above.
        unsafe {
            rows(
                m,
                k,
                n,
                a,
                (Strided(sa.0), sa.1),
                b,
                Strided(sb.0),
                beta,
                c,
                sc,
            )
        };
    } else if sa.0 == 1 {
        swapped(c, a, sa.1);
    } else if n <= m {
        let b_rows = row_major(k, n, b, sb);
        // SAFETY: as above.
        unsafe {
            rows(
                m,
                k,
                n,
                a,
                (Strided(sa.0), sa.1),
                &b_rows,
                Strided(n),
                beta,
                c,
                sc,
            )
        };
    } else {
        swapped(c, &row_major(k, m, a, (sa.1, sa.0)), m);
    }
}

/// Where each row of an operand starts, in elements from the start of its slice.
pub(crate) trait RowStarts: Copy {
    /// The start of row `i`.
    ///
    /// # Safety
    /// `i < n` for an `n` that [`last`](Self::last) returned for.
    unsafe fn start(self, i: usize) -> usize;
    /// The largest start of rows `0..n` (`n ≥ 1`; panics if a table lists fewer rows).
    fn last(self, n: usize) -> usize;
}

/// Rows `stride` elements apart.
#[derive(Clone, Copy)]
pub(crate) struct Strided(pub usize);

impl RowStarts for Strided {
    #[inline(always)]
    unsafe fn start(self, i: usize) -> usize {
        i * self.0
    }
    fn last(self, n: usize) -> usize {
        (n - 1) * self.0
    }
}

/// Rows that start where a table says: the rows of an im2col matrix read in place from the
/// padded input (row c·k + j starts at c·t_pad + j), without the copy.
#[derive(Clone, Copy)]
pub(crate) struct Listed<'a>(pub &'a [usize]);

impl RowStarts for Listed<'_> {
    #[inline(always)]
    unsafe fn start(self, i: usize) -> usize {
        // SAFETY: the caller's `i` is below an `n` that `last` checked against the table.
        unsafe { *self.0.get_unchecked(i) }
    }
    fn last(self, n: usize) -> usize {
        assert!(
            n <= self.0.len(),
            "sgemm: row table shorter than the operand"
        );
        self.0[..n].iter().copied().max().unwrap_or(0)
    }
}

/// C (m × n, strides `sc`) = A · B + βC for β ∈ {0, 1}, with A's rows where `ra` says (their
/// columns `sa1` apart) and B's contiguous rows where `rb` says: the same bits as [`gemm`] on
/// the same matrices. `false` (nothing done) without AVX-512F and FMA, for another β or an
/// empty product.
pub(crate) fn gemm_listed<RA: RowStarts, RB: RowStarts>(
    (m, k, n): (usize, usize, usize),
    (a, ra, sa1): (&[f32], RA, usize),
    (b, rb): (&[f32], RB),
    beta: f32,
    c: &mut [f32],
    sc: (usize, usize),
) -> bool {
    if !(beta == 0.0 || beta == 1.0) || !available() {
        return false;
    }
    if m == 0 || n == 0 || k == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA checked above; `rows` checks every extent.
    unsafe {
        rows(m, k, n, a, (ra, sa1), b, rb, beta, c, sc)
    };
    cfg!(target_arch = "x86_64")
}

/// A copy of the `rows × cols` matrix at `strides` in `x`, row-major.
#[cfg(target_arch = "x86_64")]
fn row_major(rows: usize, cols: usize, x: &[f32], strides: (usize, usize)) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        out.extend((0..cols).map(|j| x[i * strides.0 + j * strides.1]));
    }
    out
}

/// AVX-512F and FMA: the instructions of [`rows`]; `matrixmultiply` runs its fused AVX-512
/// kernel there.
#[cfg(target_arch = "x86_64")]
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

/// C (m × n, strides `sc`) = A (m × k, strides `sa`) · B (k × n, row stride `sb0`, contiguous
/// rows) + βC: eight rows × thirty-two columns at a time in registers (sixteen independent sums
/// per step of the depth), the last columns of a row under a mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<RA: RowStarts, RB: RowStarts>(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (ra, sa1): (RA, usize),
    b: &[f32],
    rb: RB,
    beta: f32,
    c: &mut [f32],
    sc: (usize, usize),
) {
    use std::arch::x86_64::*;
    // Bounds: the last element each pointer below reaches.
    assert!(
        ra.last(m) + (k - 1) * sa1 < a.len(),
        "sgemm: A out of bounds"
    );
    assert!(rb.last(k) + n - 1 < b.len(), "sgemm: B out of bounds");
    assert!(
        (m - 1) * sc.0 + (n - 1) * sc.1 < c.len(),
        "sgemm: C out of bounds"
    );
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());

    /// Rows i0..i0 + R, columns j0..j0 + 16 W (the last vector's lanes under `last`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<RA: RowStarts, RB: RowStarts, const R: usize, const W: usize>(
        (ap, ra, sa1): (*const f32, RA, usize),
        (bp, rb): (*const f32, RB),
        (cp, sc): (*mut f32, (usize, usize)),
        k: usize,
        i0: usize,
        j0: usize,
        last: __mmask16,
        read_c: bool,
    ) {
        let mask = |w: usize| if w + 1 == W { last } else { 0xffff };
        let mut l0 = 0;
        while l0 < k {
            let l1 = k.min(l0 + KC);
            let mut acc = [[_mm512_setzero_ps(); W]; R];
            let a_row: [*const f32; R] = std::array::from_fn(|r| ap.add(ra.start(i0 + r)));
            for l in l0..l1 {
                let mut bv = [_mm512_setzero_ps(); W];
                let b_row = bp.add(rb.start(l) + j0);
                for (w, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask(w), b_row.add(16 * w));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a_row[r].add(l * sa1));
                    for (s, &v) in row.iter_mut().zip(&bv) {
                        *s = _mm512_fmadd_ps(av, v, *s);
                    }
                }
            }
            // The first block of β = 0 is written; every other block is added to C.
            let assign = l0 == 0 && !read_c;
            for (r, row) in acc.iter().enumerate() {
                let c_row = cp.add((i0 + r) * sc.0);
                for (w, &v) in row.iter().enumerate() {
                    let j = j0 + 16 * w;
                    let v = if assign {
                        v
                    } else {
                        _mm512_add_ps(load_c(c_row, sc.1, j, mask(w)), v)
                    };
                    store_c(c_row, sc.1, j, mask(w), v);
                }
            }
            l0 = l1;
        }
    }

    /// Entries j..j + 16 of the row of C at `c_row` under `mask` (zeros elsewhere).
    #[inline(always)]
    unsafe fn load_c(c_row: *mut f32, sc1: usize, j: usize, mask: __mmask16) -> __m512 {
        if sc1 == 1 {
            _mm512_maskz_loadu_ps(mask, c_row.add(j))
        } else {
            let mut t = [0.0f32; 16];
            for (q, v) in t.iter_mut().enumerate() {
                if mask & (1 << q) != 0 {
                    *v = *c_row.add((j + q) * sc1);
                }
            }
            _mm512_loadu_ps(t.as_ptr())
        }
    }

    /// Stores the lanes of `v` under `mask` to entries j..j + 16 of the row of C at `c_row`.
    #[inline(always)]
    unsafe fn store_c(c_row: *mut f32, sc1: usize, j: usize, mask: __mmask16, v: __m512) {
        if sc1 == 1 {
            _mm512_mask_storeu_ps(c_row.add(j), mask, v);
        } else {
            let mut t = [0.0f32; 16];
            _mm512_storeu_ps(t.as_mut_ptr(), v);
            for (q, &x) in t.iter().enumerate() {
                if mask & (1 << q) != 0 {
                    *c_row.add((j + q) * sc1) = x;
                }
            }
        }
    }

    let (aa, bb, cc) = ((ap, ra, sa1), (bp, rb), (cp, sc));
    let read_c = beta != 0.0;
    let mut j0 = 0;
    while j0 < n {
        let left = n - j0;
        // Two vectors while at least 17 columns are left, else one; the last one masked.
        let (wide, width) = if left > 16 {
            (true, left.min(32))
        } else {
            (false, left)
        };
        let rem = width - if wide { 16 } else { 0 };
        let last: __mmask16 = if rem == 16 { 0xffff } else { (1u16 << rem) - 1 };
        let mut i0 = 0;
        while i0 < m {
            let rows_left = (m - i0).min(8);
            macro_rules! go {
                ($r:literal) => {
                    if wide {
                        tile::<RA, RB, $r, 2>(aa, bb, cc, k, i0, j0, last, read_c)
                    } else {
                        tile::<RA, RB, $r, 1>(aa, bb, cc, k, i0, j0, last, read_c)
                    }
                };
            }
            match rows_left {
                8 => go!(8),
                7 => go!(7),
                6 => go!(6),
                5 => go!(5),
                4 => go!(4),
                3 => go!(3),
                2 => go!(2),
                _ => go!(1),
            }
            i0 += rows_left;
        }
        j0 += width;
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// `matrixmultiply::sgemm` with α = 1.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        (m, k, n): (usize, usize, usize),
        a: &[f32],
        sa: (isize, isize),
        b: &[f32],
        sb: (isize, isize),
        beta: f32,
        c: &mut [f32],
        sc: (isize, isize),
    ) {
        // SAFETY: the callers' extents match the strides.
        unsafe {
            matrixmultiply::sgemm(
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
                c.as_mut_ptr(),
                sc.0,
                sc.1,
            )
        };
    }

    fn strides(rows: usize, cols: usize, transposed: bool) -> (isize, isize) {
        if transposed {
            (1, rows as isize)
        } else {
            (cols as isize, 1)
        }
    }

    /// The products give `matrixmultiply`'s bits for every layout of A, B and C (each row-major
    /// or transposed), both β, depths across the 256-deep blocks, column remainders of 0–31
    /// (masked vectors) and row remainders of 1–3; the encoder's three shapes among them.
    #[test]
    fn products_give_the_bits_of_matrixmultiply() {
        if !super::available() {
            eprintln!("no AVX-512F: every product goes to matrixmultiply, nothing to compare");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let shapes = [
            (64, 704, 200),
            (64, 200, 704),
            (704, 64, 200),
            (2, 200, 64),
            (64, 2, 200),
            (7, 257, 33),
            (5, 513, 17),
            (3, 100, 16),
            (9, 60, 47),
            (1, 4000, 1),
            (2, 64, 200),
            (2, 40, 64),
        ];
        let mut handled = 0;
        for &(m, k, n) in &shapes {
            for beta in [0.0f32, 1.0] {
                for layout in 0..8 {
                    let (ta, tb, tc) = (layout & 1 != 0, layout & 2 != 0, layout & 4 != 0);
                    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let (sa, sb, sc) = (strides(m, k, ta), strides(k, n, tb), strides(m, n, tc));
                    let mut want = c0.clone();
                    reference((m, k, n), &a, sa, &b, sb, beta, &mut want, sc);
                    let mut got = c0.clone();
                    if super::gemm(m, k, n, &a, sa, &b, sb, beta, &mut got, sc) {
                        handled += 1;
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{m}×{k}×{n} β {beta} Aᵀ {ta} Bᵀ {tb} Cᵀ {tc}: entry {i}: \
                                 {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
        // Everything but the product below MIN_WORK (1 × 4000 × 1) and the one below MIN_DEPTH
        // (64 × 2 × 200), in their 16 variants each.
        assert_eq!(handled, (shapes.len() - 2) * 16);
    }

    /// β other than 0 and 1, tiny and shallow products are left to `matrixmultiply`.
    #[test]
    fn other_beta_tiny_and_shallow_products_are_declined() {
        let (a, b) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64 * 64]);
        let mut c = vec![0.0f32; 64 * 64];
        assert!(!super::gemm(
            64,
            64,
            64,
            &a,
            (64, 1),
            &b,
            (64, 1),
            0.5,
            &mut c,
            (64, 1)
        ));
        assert!(!super::gemm(
            4,
            4,
            4,
            &a,
            (4, 1),
            &b,
            (4, 1),
            0.0,
            &mut c,
            (4, 1)
        ));
        assert!(!super::gemm(
            64,
            3,
            64,
            &a,
            (3, 1),
            &b,
            (64, 1),
            0.0,
            &mut c,
            (64, 1)
        ));
        assert!(c.iter().all(|&v| v == 0.0));
    }

    /// Time against `matrixmultiply` for the encoder's shapes (not a test of speed: prints).
    #[test]
    #[ignore = "timing; run with --ignored --nocapture"]
    fn time_encoder_shapes() {
        type Case = (&'static str, (usize, usize, usize), bool, bool);
        let cases: [Case; 6] = [
            ("forward W·cols", (64, 704, 200), false, false),
            ("dW += dpre·colsᵀ", (64, 200, 704), false, true),
            ("dcols = Wᵀ·dpre", (704, 64, 200), true, false),
            ("head forward", (2, 64, 200), false, false),
            ("head dW", (2, 200, 64), false, true),
            ("head dh", (64, 2, 200), true, false),
        ];
        for (name, (m, k, n), ta, tb) in cases {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0.0f32; m * n];
            let (sa, sb, sc) = (strides(m, k, ta), strides(k, n, tb), strides(m, n, false));
            let reps = 400;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                reference((m, k, n), &a, sa, &b, sb, 1.0, &mut c, sc);
            }
            let mm = t.elapsed().as_secs_f64() / reps as f64;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                assert!(super::gemm(m, k, n, &a, sa, &b, sb, 1.0, &mut c, sc));
            }
            let ours = t.elapsed().as_secs_f64() / reps as f64;
            eprintln!(
                "{name}: matrixmultiply {:.1} µs, in place {:.1} µs ({:.2}×)",
                mm * 1e6,
                ours * 1e6,
                mm / ours
            );
        }
    }
}
