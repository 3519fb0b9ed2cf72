//! The stochastic low-rank RNN, its observation models and the CNN encoder (SPEC §1, §2.9).

pub mod encoder;
pub mod lowrank;
pub mod real;
pub mod sequences;
pub mod teacher;

mod erf32;
mod sgemm;
pub(crate) use sgemm::{Listed, RowStarts, Strided};
mod skinny;

pub use real::Real;
pub use sequences::Sequences;

/// Extent of a strided matrix in its slice (0 when it has no element).
fn span(rows: usize, cols: usize, (row_stride, col_stride): (isize, isize)) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows as isize - 1) as usize * row_stride as usize
            + (cols as isize - 1) as usize * col_stride as usize
            + 1
    }
}

/// (row, column) strides as `usize` (the callers' are positive).
fn unsigned((r, c): (isize, isize)) -> (usize, usize) {
    (r as usize, c as usize)
}

/// The three operands of a product as slices of `T` when `F` is `T`, else `None`.
#[allow(clippy::type_complexity)]
fn as_type<'s, F: 'static, T: 'static>(
    a: &'s [F],
    b: &'s [F],
    c: &'s mut [F],
) -> Option<(&'s [T], &'s [T], &'s mut [T])> {
    if std::any::TypeId::of::<F>() != std::any::TypeId::of::<T>() {
        return None;
    }
    // SAFETY: F is T (same type, same layout and lengths).
    Some(unsafe {
        (
            std::slice::from_raw_parts(a.as_ptr() as *const T, a.len()),
            std::slice::from_raw_parts(b.as_ptr() as *const T, b.len()),
            std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut T, c.len()),
        )
    })
}

/// The exact GELU `out = pre · Φ(pre)`, `cdf = Φ(pre)` on sixteen lanes when `F` is f32 and the
/// CPU has AVX-512F, with the bits of the scalar `libm::erff` formula ([`erf32`]); `false`
/// (nothing done) otherwise.
pub(crate) fn gelu_lanes<F: Real>(pre: &[F], out: &mut [F], cdf: &mut [F]) -> bool {
    match as_type::<F, f32>(pre, &[], out) {
        Some((pre, _, out)) => match as_type::<F, f32>(&[], &[], cdf) {
            Some((_, _, cdf)) => erf32::gelu(pre, out, cdf),
            None => false,
        },
        None => false,
    }
}

/// `d *= GELU′(pre)` (from `cdf` = Φ(pre)) on sixteen lanes when `F` is f32, the CPU has
/// AVX-512F and `exp` is glibc's, with the bits of the scalar formula ([`erf32`]); `false`
/// (nothing done) otherwise.
pub(crate) fn gelu_grad_lanes<F: Real>(d: &mut [F], pre: &[F], cdf: &[F]) -> bool {
    match as_type::<F, f32>(pre, cdf, d) {
        Some((pre, cdf, d)) => erf32::gelu_grad(d, pre, cdf),
        None => false,
    }
}

/// Products whose operands' rows start where tables say ([`sgemm::gemm_listed`]) run for f32 on
/// CPUs with AVX-512F and FMA.
pub(crate) fn listed_available<F: Real>() -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() && sgemm::available()
}

/// [`sgemm::gemm_listed`] when `F` is f32: `false` (nothing done) otherwise or where that
/// declines.
#[allow(clippy::type_complexity)]
pub(crate) fn gemm_listed<F: Real, RA: RowStarts, RB: RowStarts>(
    dims: (usize, usize, usize),
    (a, ra, sa1): (&[F], RA, usize),
    (b, rb): (&[F], RB),
    beta: F,
    c: &mut [F],
    sc: (usize, usize),
) -> bool {
    match as_type::<F, f32>(a, b, c) {
        Some((a, b, c)) => {
            sgemm::gemm_listed(dims, (a, ra, sa1), (b, rb), beta.f64() as f32, c, sc)
        }
        None => false,
    }
}

/// `C (m × n) = A (m × k) · B (k × n) + beta · C` with positive strides (row, column), dispatching
/// to `matrixmultiply::dgemm` / `sgemm` for f64 / f32 (single-threaded, so the summation order
/// is fixed). The extents are checked against the slices (a panic names the operand), so the
/// unsafe calls stay sound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<F: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    a_strides: (isize, isize),
    b: &[F],
    b_strides: (isize, isize),
    beta: F,
    c: &mut [F],
    c_strides: (isize, isize),
) {
    assert!(span(m, k, a_strides) <= a.len(), "gemm: A out of bounds");
    assert!(span(k, n, b_strides) <= b.len(), "gemm: B out of bounds");
    assert!(span(m, n, c_strides) <= c.len(), "gemm: C out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if let Some((a64, b64, c64)) = as_type::<F, f64>(a, b, c) {
        let beta = beta.f64();
        if skinny::gemm(
            m, k, n, a64, a_strides, b64, b_strides, beta, c64, c_strides,
        ) {
            return;
        }
        // SAFETY: F is f64 (same type, same layout); extents checked above.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr() as *const f64,
                a_strides.0,
                a_strides.1,
                b.as_ptr() as *const f64,
                b_strides.0,
                b_strides.1,
                beta,
                c.as_mut_ptr() as *mut f64,
                c_strides.0,
                c_strides.1,
            );
        }
    } else if let Some((a32, b32, c32)) = as_type::<F, f32>(a, b, c) {
        let beta = beta.f64() as f32;
        if sgemm::gemm(
            m, k, n, a32, a_strides, b32, b_strides, beta, c32, c_strides,
        ) {
            return;
        }
        // SAFETY: F is f32 (same type, same layout); extents checked above.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr() as *const f32,
                a_strides.0,
                a_strides.1,
                b.as_ptr() as *const f32,
                b_strides.0,
                b_strides.1,
                beta.f64() as f32,
                c.as_mut_ptr() as *mut f32,
                c_strides.0,
                c_strides.1,
            );
        }
    } else {
        let at = |s: (isize, isize), i: usize, j: usize| i * s.0 as usize + j * s.1 as usize;
        for i in 0..m {
            for j in 0..n {
                let mut acc = F::zero();
                for l in 0..k {
                    acc += a[at(a_strides, i, l)] * b[at(b_strides, l, j)];
                }
                let dst = &mut c[at(c_strides, i, j)];
                *dst = if beta == F::zero() {
                    acc
                } else {
                    beta * *dst + acc
                };
            }
        }
    }
}
