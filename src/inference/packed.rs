//! Small products against a matrix that stays fixed for a whole VSMC call.
//!
//! The optimal proposal multiplies each step's K particles (K ≈ 10 rows) by R × R and R × dx
//! matrices that depend only on the parameters (the proposal's OMA, Lq, Lz, Lz⁻¹ and the
//! loading B). A general GEMM packs that matrix again at every call, and with K = 10 rows its
//! 8-row micro-kernel runs a second, mostly empty row panel. [`PackedB`] packs the matrix once
//! per call, in panels of 8 columns, and [`PackedB::mul`] runs a micro-kernel over it: 10 rows
//! × 8 columns in AVX-512 (one register per row), 5 rows × 8 columns in AVX2/FMA (two per
//! row), a portable loop elsewhere. Both kernels keep enough independent accumulators to cover
//! the FMA latency (a row block of 1 keeps only two), and both compute each entry as the same
//! chain of fused multiply-adds in ascending order over the inner dimension, so their results
//! are the same bits: they depend neither on the CPU's vector width nor on the thread count.

/// Panel width in columns (two AVX2 registers of f64).
const W: usize = 8;

/// A k × n matrix packed in ⌈n / 8⌉ panels of k rows × 8 columns (zero-padded), row-major
/// inside each panel. Each panel's leading and trailing all-zero rows are skipped in
/// products, which halves the work for triangular matrices.
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    panels: Vec<f64>,
    /// Per panel: the rows [start, end) that hold a nonzero entry.
    rows: Vec<(usize, usize)>,
}

impl PackedB {
    /// Packs B (k × n) whose element (l, j) is `b[l * rs + j * cs]` (so a transpose is a
    /// swap of the strides).
    pub(crate) fn new(b: &[f64], (rs, cs): (usize, usize), k: usize, n: usize) -> Self {
        let np = n.div_ceil(W);
        let mut panels = vec![0.0; np * k * W];
        for p in 0..np {
            for l in 0..k {
                for jj in 0..W.min(n - p * W) {
                    panels[(p * k + l) * W + jj] = b[l * rs + (p * W + jj) * cs];
                }
            }
        }
        let rows = (0..np)
            .map(|p| {
                let nonzero = |l: &usize| {
                    let row = &panels[(p * k + l) * W..(p * k + l + 1) * W];
                    row.iter().any(|&v| v != 0.0)
                };
                let start = (0..k).find(nonzero).unwrap_or(k);
                let end = (start..k).rev().find(nonzero).map_or(start, |l| l + 1);
                (start, end)
            })
            .collect();
        Self { k, n, panels, rows }
    }

    /// C (m × n, row stride `ldc`) = A (m × k, row stride `lda`) · B, added into C when `add`.
    pub(crate) fn mul(
        &self,
        m: usize,
        a: &[f64],
        lda: usize,
        add: bool,
        c: &mut [f64],
        ldc: usize,
    ) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(lda >= k && ldc >= n, "packed gemm: leading dimensions");
        assert!(a.len() >= (m - 1) * lda + k, "packed gemm: A out of bounds");
        assert!(c.len() >= (m - 1) * ldc + n, "packed gemm: C out of bounds");
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available (checked just above); the extents of A and C
                // are checked above and the panels have ⌈n/8⌉·k·8 entries by construction.
                unsafe { avx512::mul(self, m, a, lda, add, c, ldc) };
                return;
            }
            if super::kernel::fma_available() {
                // SAFETY: as above, with AVX2 and FMA available.
                unsafe { avx2::mul(self, m, a, lda, add, c, ldc) };
                return;
            }
        }
        self.mul_portable(m, a, lda, add, c, ldc);
    }

    fn mul_portable(&self, m: usize, a: &[f64], lda: usize, add: bool, c: &mut [f64], ldc: usize) {
        let (k, n) = (self.k, self.n);
        for p in 0..n.div_ceil(W) {
            let panel = &self.panels[p * k * W..(p + 1) * k * W];
            let cols = W.min(n - p * W);
            let (l0, l1) = self.rows[p];
            for i in 0..m {
                let mut acc = [0.0; W];
                for l in l0..l1 {
                    let ail = a[i * lda + l];
                    for (s, &b) in acc.iter_mut().zip(&panel[l * W..(l + 1) * W]) {
                        *s += ail * b;
                    }
                }
                let row = &mut c[i * ldc + p * W..i * ldc + p * W + cols];
                for (cj, s) in row.iter_mut().zip(acc) {
                    *cj = if add { *cj + s } else { s };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PackedB, W};
    use std::arch::x86_64::*;

    /// See [`PackedB::mul`]; the caller has checked the extents and the CPU features.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mul(
        b: &PackedB,
        m: usize,
        a: &[f64],
        lda: usize,
        add: bool,
        c: &mut [f64],
        ldc: usize,
    ) {
        let (k, n) = (b.k, b.n);
        for p in 0..n.div_ceil(W) {
            let (l0, l1) = b.rows[p];
            // The panel's nonzero rows and A's matching columns, l1 − l0 of them.
            let panel = Panel {
                b: b.panels.as_ptr().add((p * k + l0) * W),
                depth: l1 - l0,
                a: a.as_ptr().add(l0),
                lda,
                add,
                ldc,
                cols: W.min(n - p * W),
            };
            // Blocks of 5 rows: 10 accumulators (two per row) cover the FMA latency; the tail
            // block takes the 1–4 rows left.
            let mut i = 0;
            while i + 5 <= m {
                panel.block::<5>(i, c, i * ldc + p * W);
                i += 5;
            }
            let c0 = i * ldc + p * W;
            match m - i {
                0 => {}
                1 => panel.block::<1>(i, c, c0),
                2 => panel.block::<2>(i, c, c0),
                3 => panel.block::<3>(i, c, c0),
                _ => panel.block::<4>(i, c, c0),
            }
        }
    }

    /// One panel of B against A's matching columns, and where its products go.
    struct Panel {
        /// The panel's first nonzero row (8 values per row).
        b: *const f64,
        /// Rows of the panel (and columns of A) that take part.
        depth: usize,
        /// A's first row at the panel's first column.
        a: *const f64,
        lda: usize,
        add: bool,
        ldc: usize,
        /// Columns of C this panel covers (≤ 8).
        cols: usize,
    }

    impl Panel {
        /// A's rows i..i + ROWS times the panel into C's rows from `c0`.
        #[inline(always)]
        unsafe fn block<const ROWS: usize>(&self, i: usize, c: &mut [f64], c0: usize) {
            let (panel, k, lda, ldc, cols) = (self.b, self.depth, self.lda, self.ldc, self.cols);
            let a = self.a.add(i * lda);
            let mut lo = [_mm256_setzero_pd(); ROWS];
            let mut hi = [_mm256_setzero_pd(); ROWS];
            for l in 0..k {
                let b0 = _mm256_loadu_pd(panel.add(l * W));
                let b1 = _mm256_loadu_pd(panel.add(l * W + 4));
                for r in 0..ROWS {
                    let x = _mm256_broadcast_sd(&*a.add(r * lda + l));
                    lo[r] = _mm256_fmadd_pd(x, b0, lo[r]);
                    hi[r] = _mm256_fmadd_pd(x, b1, hi[r]);
                }
            }
            for r in 0..ROWS {
                let mut out = [0.0f64; W];
                _mm256_storeu_pd(out.as_mut_ptr(), lo[r]);
                _mm256_storeu_pd(out.as_mut_ptr().add(4), hi[r]);
                let row = &mut c[c0 + r * ldc..c0 + r * ldc + cols];
                if self.add {
                    for (cj, s) in row.iter_mut().zip(out) {
                        *cj += s;
                    }
                } else {
                    row.copy_from_slice(&out[..cols]);
                }
            }
        }
    }
}

/// The AVX-512 kernel: one 8-lane register per row of a block, 10 rows at a time (10
/// independent accumulators, against 2 × 4 FMAs in flight on two pipes of latency 4).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedB, W};
    use std::arch::x86_64::*;

    /// See [`PackedB::mul`]; the caller has checked the extents and the CPU features.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mul(
        b: &PackedB,
        m: usize,
        a: &[f64],
        lda: usize,
        add: bool,
        c: &mut [f64],
        ldc: usize,
    ) {
        let (k, n) = (b.k, b.n);
        for p in 0..n.div_ceil(W) {
            let (l0, l1) = b.rows[p];
            let panel = Panel {
                b: b.panels.as_ptr().add((p * k + l0) * W),
                depth: l1 - l0,
                a: a.as_ptr().add(l0),
                lda,
                add,
                ldc,
                cols: W.min(n - p * W),
            };
            let mut i = 0;
            while i + 10 <= m {
                panel.block::<10>(i, c, i * ldc + p * W);
                i += 10;
            }
            let c0 = i * ldc + p * W;
            match m - i {
                0 => {}
                1 => panel.block::<1>(i, c, c0),
                2 => panel.block::<2>(i, c, c0),
                3 => panel.block::<3>(i, c, c0),
                4 => panel.block::<4>(i, c, c0),
                5 => panel.block::<5>(i, c, c0),
                6 => panel.block::<6>(i, c, c0),
                7 => panel.block::<7>(i, c, c0),
                8 => panel.block::<8>(i, c, c0),
                _ => panel.block::<9>(i, c, c0),
            }
        }
    }

    /// As the AVX2 kernel's panel.
    struct Panel {
        b: *const f64,
        depth: usize,
        a: *const f64,
        lda: usize,
        add: bool,
        ldc: usize,
        cols: usize,
    }

    impl Panel {
        /// A's rows i..i + ROWS times the panel into C's rows from `c0`.
        #[inline(always)]
        unsafe fn block<const ROWS: usize>(&self, i: usize, c: &mut [f64], c0: usize) {
            let (panel, k, lda, ldc, cols) = (self.b, self.depth, self.lda, self.ldc, self.cols);
            let a = self.a.add(i * lda);
            let mut acc = [_mm512_setzero_pd(); ROWS];
            for l in 0..k {
                let bl = _mm512_loadu_pd(panel.add(l * W));
                for (r, s) in acc.iter_mut().enumerate() {
                    *s = _mm512_fmadd_pd(_mm512_set1_pd(*a.add(r * lda + l)), bl, *s);
                }
            }
            for (r, s) in acc.iter().enumerate() {
                let mut out = [0.0f64; W];
                _mm512_storeu_pd(out.as_mut_ptr(), *s);
                let row = &mut c[c0 + r * ldc..c0 + r * ldc + cols];
                if self.add {
                    for (cj, v) in row.iter_mut().zip(out) {
                        *cj += v;
                    }
                } else {
                    row.copy_from_slice(&out[..cols]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: &[f64],
        lda: usize,
        b: &[f64],
        bs: (usize, usize),
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|l| a[i * lda + l] * b[l * bs.0 + j * bs.1])
                    .sum();
            }
        }
        c
    }

    /// Each vector kernel this CPU has, run directly (set, then added into ones): its name
    /// and both results in one vector.
    fn kernels_by_width(
        packed: &PackedB,
        m: usize,
        a: &[f64],
        lda: usize,
        n: usize,
    ) -> Vec<(&'static str, Vec<f64>)> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            type Kernel = unsafe fn(&PackedB, usize, &[f64], usize, bool, &mut [f64], usize);
            let run = |f: Kernel| {
                let mut set = vec![f64::NAN; m * n];
                let mut add = vec![1.0; m * n];
                // SAFETY: the caller checked the CPU feature; the extents are the test's own.
                unsafe {
                    f(packed, m, a, lda, false, &mut set, n);
                    f(packed, m, a, lda, true, &mut add, n);
                }
                set.extend(add);
                set
            };
            if crate::inference::kernel::fma_available() {
                out.push(("avx2", run(avx2::mul)));
            }
            if std::is_x86_feature_detected!("avx512f") {
                out.push(("avx512", run(avx512::mul)));
            }
        }
        out
    }

    /// Against the naive product: shapes with row and column tails, a transposed B, a lda
    /// wider than k, and the accumulating form.
    #[test]
    fn packed_products_match_the_naive_ones() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        for &(m, k, n, lda, transposed) in &[
            (10, 30, 30, false),
            (10, 30, 64, true),
            (10, 128, 128, false),
            (3, 17, 5, true),
            (1, 1, 1, false),
            (9, 16, 9, true),
            (10, 24, 24, true),
            (17, 30, 30, false),
            (64, 9, 20, true),
        ]
        .map(|(m, k, n, t)| (m, k, n, k + usize::from(t), t))
        {
            let a: Vec<f64> = (0..m * lda).map(|_| next()).collect();
            let mut b: Vec<f64> = (0..k * n).map(|_| next()).collect();
            let bs = if transposed { (1, k) } else { (n, 1) };
            if k == n && k > 8 {
                // Triangular (lower as stored: upper or lower as used, by `transposed`), with
                // B's columns 8..16 all zero: the panels' zero rows are skipped.
                for l in 0..k {
                    for j in 0..n {
                        if j > l || (8..16).contains(&(if transposed { l } else { j })) {
                            b[l * n + j] = 0.0;
                        }
                    }
                }
            }
            let want = naive(m, k, n, &a, lda, &b, bs);
            let packed = PackedB::new(&b, bs, k, n);
            let scale = want.iter().fold(1.0f64, |s, v| s.max(v.abs()));
            let mut c = vec![f64::NAN; m * n];
            packed.mul(m, &a, lda, false, &mut c, n);
            let mut portable = vec![f64::NAN; m * n];
            packed.mul_portable(m, &a, lda, false, &mut portable, n);
            let mut acc = vec![1.0; m * n];
            packed.mul(m, &a, lda, true, &mut acc, n);
            let by_width = kernels_by_width(&packed, m, &a, lda, n);
            for (name, got) in &by_width {
                // The vector kernels run the same FMA chains: the same bits, set and added.
                assert!(
                    got.iter()
                        .zip(&by_width[0].1)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{name} differs from {} at ({m}, {k}, {n})",
                    by_width[0].0
                );
            }
            for i in 0..m * n {
                for (got, what) in [
                    (c[i], "set"),
                    (portable[i], "portable"),
                    (acc[i] - 1.0, "add"),
                ] {
                    assert!(
                        (got - want[i]).abs() <= 1e-13 * scale,
                        "{what} ({m}, {k}, {n}) entry {i}: {got} vs {}",
                        want[i]
                    );
                }
            }
        }
    }
}
