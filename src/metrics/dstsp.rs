//! D_stsp: Gaussian-mixture state-space KL(p_data ‖ p_gen) (SPEC §3.2, golden README quirk 1).
//!
//! Each of the first `T = min(n_time, max_rows)` points of both series is a kernel centre with
//! std `scale` on every dimension. `n_samples` Monte-Carlo samples `s = x_data[t] + scale·ε` are
//! drawn from the data mixture; D_stsp = mean_s(log p_data(s) − log p_gen(s)), where
//! `p(s) = (1/T) Σ_j exp(−½‖s − μ_j‖²/scale²) / scale^D` (the (2π)^{−D/2} cancels).

use super::{MetricsError, SeriesView};
use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// How the mixture densities are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DstspMode {
    /// Log-sum-exp in f64: no underflow, no dropped samples, exactly 0 for identical inputs.
    #[default]
    LogSpace,
    /// The reference's f64 behaviour: plain `exp`, samples where either density is 0 are dropped.
    ReferenceUnderflow,
    /// Emulated float32 (the paper's dtype): each mixture density is rounded to f32 (with
    /// subnormals) before the log, so densities below ~1e-45 become 0 and their samples are dropped.
    ReferenceUnderflowF32,
}

/// Options of [`dstsp`]; defaults are the reference's (σ = 1, 1000 samples, ≤ 10000 rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DstspOptions {
    /// Kernel standard deviation on every dimension (reference: 1.0).
    pub scale: f64,
    /// Number of Monte-Carlo samples (reference: 1000).
    pub n_samples: usize,
    /// Both series are truncated to their first `min(len(data), max_rows)` rows (reference: 10000).
    pub max_rows: usize,
    /// Density evaluation mode.
    pub mode: DstspMode,
}

impl Default for DstspOptions {
    fn default() -> Self {
        Self {
            scale: 1.0,
            n_samples: 1000,
            max_rows: 10_000,
            mode: DstspMode::LogSpace,
        }
    }
}

/// The Monte-Carlo draws: time indices into the (truncated) data and standard normals.
#[derive(Debug, Clone, PartialEq)]
pub struct DstspDraws {
    /// `n_samples` indices in `[0, T)`.
    pub t_indices: Vec<usize>,
    /// `n_samples × D` standard normals, row-major (the reference draws them in f32).
    pub normals: Vec<f64>,
}

impl DstspDraws {
    /// Draw `n_samples` uniform indices in `[0, n_time)` and f32-rounded standard normals.
    pub fn sample<R: Rng>(rng: &mut R, n_samples: usize, n_time: usize, n_dim: usize) -> Self {
        let t_indices = (0..n_samples).map(|_| rng.gen_range(0..n_time)).collect();
        let normals = (0..n_samples * n_dim)
            .map(|_| {
                let z: f32 = rng.sample(StandardNormal);
                z as f64
            })
            .collect();
        Self { t_indices, normals }
    }
}

/// Result of [`dstsp_with_draws`].
#[derive(Debug, Clone, PartialEq)]
pub struct DstspResult {
    /// KL(p_data ‖ p_gen) over the kept samples (NaN if none is kept).
    pub value: f64,
    /// `log p_data(s)` per sample (includes −∞ in reference mode when the density underflowed).
    pub log_p_data: Vec<f64>,
    /// `log p_gen(s)` per sample.
    pub log_p_gen: Vec<f64>,
    /// Whether each sample was kept (always all in log-space mode).
    pub kept_mask: Vec<bool>,
    /// Fraction of dropped samples.
    pub outlier_ratio: f64,
}

/// D_stsp with draws from `rng` (see [`dstsp_with_draws`]).
pub fn dstsp<R: Rng>(
    x_data: SeriesView<'_>,
    x_gen: SeriesView<'_>,
    options: &DstspOptions,
    rng: &mut R,
) -> Result<DstspResult, MetricsError> {
    let n = x_data.n_time.min(options.max_rows);
    if n == 0 {
        return Err(MetricsError::Empty {
            arg: "x_data",
            min: 1,
        });
    }
    let draws = DstspDraws::sample(rng, options.n_samples, n, x_data.n_dim);
    dstsp_with_draws(x_data, x_gen, options, &draws)
}

/// D_stsp = KL(p_data ‖ p_gen) with given Monte-Carlo draws (`kl_Gauss.calc_kl_from_data`).
pub fn dstsp_with_draws(
    x_data: SeriesView<'_>,
    x_gen: SeriesView<'_>,
    options: &DstspOptions,
    draws: &DstspDraws,
) -> Result<DstspResult, MetricsError> {
    x_data.check("x_data")?;
    x_gen.check("x_gen")?;
    if x_gen.n_dim != x_data.n_dim {
        return Err(MetricsError::Shape {
            arg: "x_gen",
            got: format!("{} x {}", x_gen.n_time, x_gen.n_dim),
            expected: format!("{} columns like x_data", x_data.n_dim),
        });
    }
    if !(options.scale.is_finite() && options.scale > 0.0) {
        return Err(MetricsError::Parameter {
            arg: "scale",
            value: options.scale.to_string(),
            reason: "the kernel std must be finite and > 0",
        });
    }
    let dim = x_data.n_dim;
    let n_rows = x_data.n_time.min(options.max_rows);
    let data = super::truncate_rows(x_data, n_rows);
    // The reference slices mu_gen[:T] with T from the data; a shorter gen keeps all its rows.
    let gen = super::truncate_rows(x_gen, n_rows);
    let n_samples = draws.t_indices.len();
    if n_samples == 0 {
        return Err(MetricsError::Empty {
            arg: "draws.t_indices",
            min: 1,
        });
    }
    if draws.normals.len() != n_samples * dim {
        return Err(MetricsError::Shape {
            arg: "draws.normals",
            got: format!("{} values", draws.normals.len()),
            expected: format!("{n_samples} x {dim}"),
        });
    }
    check_finite_draws(&draws.normals)?;
    if let Some(&bad) = draws.t_indices.iter().find(|&&t| t >= n_rows) {
        return Err(MetricsError::Parameter {
            arg: "draws.t_indices",
            value: bad.to_string(),
            reason: "index beyond the truncated data length",
        });
    }
    let mut samples = vec![0.0; n_samples * dim];
    for (s, &t) in draws.t_indices.iter().enumerate() {
        let row = data.row(t);
        for k in 0..dim {
            samples[s * dim + k] = row[k] + options.scale * draws.normals[s * dim + k];
        }
    }
    let log_p_data = mixture_log_density(&samples, n_samples, data, options)?;
    let log_p_gen = mixture_log_density(&samples, n_samples, gen, options)?;
    let kept_mask: Vec<bool> = match options.mode {
        DstspMode::LogSpace => vec![true; n_samples],
        DstspMode::ReferenceUnderflow | DstspMode::ReferenceUnderflowF32 => log_p_data
            .iter()
            .zip(&log_p_gen)
            .map(|(a, b)| a.is_finite() && b.is_finite())
            .collect(),
    };
    let n_kept = kept_mask.iter().filter(|&&k| k).count();
    let value = if n_kept == 0 {
        f64::NAN
    } else {
        log_p_data
            .iter()
            .zip(&log_p_gen)
            .zip(&kept_mask)
            .filter(|(_, &k)| k)
            .map(|((a, b), _)| a - b)
            .sum::<f64>()
            / n_kept as f64
    };
    Ok(DstspResult {
        value,
        log_p_data,
        log_p_gen,
        kept_mask,
        outlier_ratio: 1.0 - n_kept as f64 / n_samples as f64,
    })
}

fn check_finite_draws(normals: &[f64]) -> Result<(), MetricsError> {
    super::check_finite("draws.normals", normals)
}

/// Samples per GEMM block: a block's distance matrix is `SAMPLE_BLOCK × T` f64.
const SAMPLE_BLOCK: usize = 32;

/// `log p(s)` for each sample under the isotropic mixture centred on `centres`.
fn mixture_log_density(
    samples: &[f64],
    n_samples: usize,
    centres: SeriesView<'_>,
    options: &DstspOptions,
) -> Result<Vec<f64>, MetricsError> {
    let dim = centres.n_dim;
    let n_centres = centres.n_time;
    let inv_var = 1.0 / (options.scale * options.scale);
    let log_norm = dim as f64 * options.scale.ln() + (n_centres as f64).ln();
    let centre_sq: Vec<f64> = (0..n_centres)
        .map(|j| centres.row(j).iter().map(|v| v * v).sum())
        .collect();
    let mut out = vec![0.0; n_samples];
    out.par_chunks_mut(SAMPLE_BLOCK)
        .enumerate()
        .for_each(|(block, out_block)| {
            let s0 = block * SAMPLE_BLOCK;
            let m = out_block.len();
            let block_samples = &samples[s0 * dim..(s0 + m) * dim];
            let mut dots = vec![0.0; m * n_centres];
            // dots = S (m × dim) · Cᵀ (dim × n_centres)
            // SAFETY: all pointers/strides describe the live buffers above with the given shapes.
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    dim,
                    n_centres,
                    1.0,
                    block_samples.as_ptr(),
                    dim as isize,
                    1,
                    centres.values.as_ptr(),
                    1,
                    dim as isize,
                    0.0,
                    dots.as_mut_ptr(),
                    n_centres as isize,
                    1,
                );
            }
            for (i, out_value) in out_block.iter_mut().enumerate() {
                let s = &block_samples[i * dim..(i + 1) * dim];
                let s_sq: f64 = s.iter().map(|v| v * v).sum();
                let row = &mut dots[i * n_centres..(i + 1) * n_centres];
                for (j, v) in row.iter_mut().enumerate() {
                    let d2 = (s_sq + centre_sq[j] - 2.0 * *v).max(0.0);
                    *v = -0.5 * d2 * inv_var;
                }
                *out_value = match options.mode {
                    DstspMode::LogSpace => {
                        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                        max + sum.ln() - log_norm
                    }
                    DstspMode::ReferenceUnderflowF32 => {
                        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                        let density = (max + sum.ln() - log_norm).exp();
                        (density as f32 as f64).ln()
                    }
                    DstspMode::ReferenceUnderflow => {
                        let sum: f64 = row.iter().map(|v| v.exp()).sum();
                        let density = sum / options.scale.powi(dim as i32) / n_centres as f64;
                        density.ln()
                    }
                };
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn series(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect()
    }

    #[test]
    fn identical_inputs_give_zero_even_in_64_dims() {
        let x = series(300, 64, 1);
        let v = SeriesView::new("x", &x, 300, 64).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let r = dstsp(v, v, &DstspOptions::default(), &mut rng).unwrap();
        assert!(r.value.abs() < 1e-12, "{}", r.value);
        assert_eq!(r.outlier_ratio, 0.0);
    }

    #[test]
    fn brute_force_distances_agree() {
        let (n, d) = (50, 3);
        let a = series(n, d, 3);
        let b: Vec<f64> = series(n, d, 4).iter().map(|v| v * 1.5 + 0.3).collect();
        let va = SeriesView::new("a", &a, n, d).unwrap();
        let vb = SeriesView::new("b", &b, n, d).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let draws = DstspDraws::sample(&mut rng, 40, n, d);
        let opts = DstspOptions {
            mode: DstspMode::ReferenceUnderflow,
            ..Default::default()
        };
        let r = dstsp_with_draws(va, vb, &opts, &draws).unwrap();
        let mut expected = 0.0;
        for (s, &t) in draws.t_indices.iter().enumerate() {
            let z: Vec<f64> = (0..d)
                .map(|k| a[t * d + k] + draws.normals[s * d + k])
                .collect();
            let dens = |c: &[f64]| {
                (0..n)
                    .map(|j| {
                        let d2: f64 = (0..d).map(|k| (z[k] - c[j * d + k]).powi(2)).sum();
                        (-0.5 * d2).exp()
                    })
                    .sum::<f64>()
                    / n as f64
            };
            expected += (dens(&a).ln() - dens(&b).ln()) / 40.0;
        }
        assert!((r.value - expected).abs() < 1e-12 * expected.abs().max(1.0));
    }

    #[test]
    fn mismatched_dims_are_an_error() {
        let a = vec![0.0; 6];
        let va = SeriesView::new("a", &a, 3, 2).unwrap();
        let vb = SeriesView::new("b", &a, 2, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let e = dstsp(va, vb, &DstspOptions::default(), &mut rng).unwrap_err();
        assert!(matches!(e, MetricsError::Shape { arg: "x_gen", .. }));
    }
}
