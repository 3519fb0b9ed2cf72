//! D_H: power-spectrum Hellinger distance (SPEC §3.3, golden README quirk 2; `pse.py`).

use super::preprocess::correlate1d_reflect;
use super::MetricsError;
use rayon::prelude::*;
use realfft::RealFftPlanner;

/// Which frequency bins are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreqCutoff {
    /// Keep every bin (sound default).
    #[default]
    All,
    /// Python slice `[:, :c]` as the reference does: `-1` drops the Nyquist bin (⚠ quirk), `c ≥ F` keeps all.
    ReferenceSlice(i64),
}

/// Options of [`power_spectrum_hellinger`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DhOptions {
    /// σ of the Gaussian smoothing of each spectrum, in bins (reference default 20).
    pub smoothing: f64,
    /// Frequency cutoff.
    pub cutoff: FreqCutoff,
}

impl Default for DhOptions {
    fn default() -> Self {
        Self {
            smoothing: 20.0,
            cutoff: FreqCutoff::All,
        }
    }
}

/// Result of [`power_spectrum_hellinger`].
#[derive(Debug, Clone, PartialEq)]
pub struct DhResult {
    /// Mean of `per_dim` (NaN if any dimension is NaN, like `np.mean`).
    pub value: f64,
    /// Hellinger distance of each dimension.
    pub per_dim: Vec<f64>,
}

/// `scipy.ndimage.gaussian_filter1d(x, sigma, truncate=4.0, mode='reflect')`.
pub fn gaussian_filter1d(input: &[f64], sigma: f64) -> Result<Vec<f64>, MetricsError> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(MetricsError::Parameter {
            arg: "smoothing",
            value: sigma.to_string(),
            reason: "σ must be finite and > 0 (scipy divides by it)",
        });
    }
    let radius = (4.0 * sigma + 0.5) as usize;
    let mut weights: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let x = i as f64 - radius as f64;
            (-0.5 / (sigma * sigma) * x * x).exp()
        })
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    let mut out = vec![0.0; input.len()];
    correlate1d_reflect(input, &weights, &mut out);
    Ok(out)
}

/// `pse.fft_smoothed`: drop the last sample of an odd length, `|rfft(x, norm='ortho')|²·2`,
/// `gaussian_filter1d(σ)`, clip at 0, normalise by `sum + 1e-8` (no z-scoring here).
pub fn fft_smoothed(
    signal: &[f64],
    smoothing: f64,
    planner: &mut RealFftPlanner<f64>,
) -> Result<Vec<f64>, MetricsError> {
    let n = signal.len() - signal.len() % 2;
    if n < 2 {
        return Err(MetricsError::Empty {
            arg: "trajectory",
            min: 2,
        });
    }
    let mut buffer = signal[..n].to_vec();
    let fft = planner.plan_fft_forward(n);
    let mut spectrum = fft.make_output_vec();
    fft.process(&mut buffer, &mut spectrum)
        .map_err(|_| MetricsError::Shape {
            arg: "trajectory",
            got: format!("{n}"),
            expected: "an even length for the real FFT".into(),
        })?;
    let power: Vec<f64> = spectrum
        .iter()
        .map(|c| c.norm_sqr() / n as f64 * 2.0)
        .collect();
    let mut smoothed = gaussian_filter1d(&power, smoothing)?;
    // NaN.max(0) is 0 in Rust; keep NaN like numpy's `x[x < 0] = 0`.
    smoothed
        .iter_mut()
        .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
    let total: f64 = smoothed.iter().sum::<f64>() + 1e-8;
    smoothed.iter_mut().for_each(|v| *v /= total);
    Ok(smoothed)
}

/// Z-score one trajectory (ddof 0) and return its [`fft_smoothed`] spectrum (NaN if constant).
pub fn normalised_spectrum(
    trajectory: &[f64],
    smoothing: f64,
    planner: &mut RealFftPlanner<f64>,
) -> Result<Vec<f64>, MetricsError> {
    let n_total = trajectory.len();
    if n_total < 2 {
        return Err(MetricsError::Empty {
            arg: "trajectory",
            min: 2,
        });
    }
    let mean = trajectory.iter().sum::<f64>() / n_total as f64;
    let std = (trajectory.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n_total as f64).sqrt();
    let zscored: Vec<f64> = trajectory.iter().map(|v| (v - mean) / std).collect();
    fft_smoothed(&zscored, smoothing, planner)
}

/// Slice both spectra per `cutoff` and return their [`hellinger`] distance.
fn hellinger_after_cutoff(p_full: &[f64], q_full: &[f64], cutoff: FreqCutoff) -> f64 {
    let n_bins = p_full.len();
    let keep = match cutoff {
        FreqCutoff::All => n_bins,
        FreqCutoff::ReferenceSlice(c) if c >= 0 => (c as usize).min(n_bins),
        FreqCutoff::ReferenceSlice(c) => n_bins.saturating_sub(c.unsigned_abs() as usize),
    };
    hellinger(&p_full[..keep], &q_full[..keep])
}

/// Hellinger distance `‖√p − √q‖₂/√2` of two spectra of the same length, each first
/// normalised to sum 1.
pub fn hellinger(p: &[f64], q: &[f64]) -> f64 {
    let norm = |s: &[f64]| -> Vec<f64> {
        let total: f64 = s.iter().sum();
        s.iter().map(|v| v / total).collect()
    };
    let (p, q) = (norm(p), norm(q));
    p.iter()
        .zip(&q)
        .map(|(a, b)| (b.sqrt() - a.sqrt()).powi(2))
        .sum::<f64>()
        .sqrt()
        / std::f64::consts::SQRT_2
}

/// D_H between `x_true` and `x_gen`, each `(n_traj, n_time, n_dim)` row-major (SPEC §3.3).
#[allow(clippy::too_many_arguments)]
pub fn power_spectrum_hellinger(
    x_true: &[f64],
    x_gen: &[f64],
    n_traj: usize,
    n_time: usize,
    n_dim: usize,
    options: &DhOptions,
) -> Result<DhResult, MetricsError> {
    for (arg, x) in [("x_true", x_true), ("x_gen", x_gen)] {
        if x.len() != n_traj * n_time * n_dim {
            return Err(MetricsError::Shape {
                arg,
                got: format!("{} values", x.len()),
                expected: format!("{n_traj} x {n_time} x {n_dim}"),
            });
        }
        if x.is_empty() {
            return Err(MetricsError::Empty { arg, min: 1 });
        }
        super::check_finite(arg, x)?;
    }
    // Dimensions are independent: rayon over them, one FFT planner and column buffer per task.
    let per_dim = (0..n_dim)
        .into_par_iter()
        .map(|d| -> Result<f64, MetricsError> {
            let mut planner = RealFftPlanner::<f64>::new();
            let mut column = vec![0.0; n_time];
            let mut spectra = [Vec::new(), Vec::new()];
            for (which, x) in [x_true, x_gen].into_iter().enumerate() {
                let mut sum: Vec<f64> = Vec::new();
                let mut count = 0usize;
                for traj in 0..n_traj {
                    for (t, value) in column.iter_mut().enumerate() {
                        *value = x[(traj * n_time + t) * n_dim + d];
                    }
                    let s = normalised_spectrum(&column, options.smoothing, &mut planner)?;
                    if sum.is_empty() {
                        sum = vec![0.0; s.len()];
                    }
                    if s.iter().all(|v| !v.is_nan()) {
                        sum.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                        count += 1;
                    }
                }
                spectra[which] = sum.iter().map(|v| v / count as f64).collect();
            }
            Ok(hellinger_after_cutoff(
                &spectra[0],
                &spectra[1],
                options.cutoff,
            ))
        })
        .collect::<Result<Vec<f64>, MetricsError>>()?;
    let value = per_dim.iter().sum::<f64>() / n_dim as f64;
    Ok(DhResult { value, per_dim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_bounded_and_zero_on_self() {
        let (t, d) = (256, 2);
        let a: Vec<f64> = (0..t * d).map(|i| ((i as f64) * 0.37).sin()).collect();
        let b: Vec<f64> = (0..t * d)
            .map(|i| ((i as f64) * 0.11).cos() + 0.01 * i as f64)
            .collect();
        let o = DhOptions::default();
        let ab = power_spectrum_hellinger(&a, &b, 1, t, d, &o).unwrap().value;
        let ba = power_spectrum_hellinger(&b, &a, 1, t, d, &o).unwrap().value;
        let aa = power_spectrum_hellinger(&a, &a, 1, t, d, &o).unwrap().value;
        assert!((ab - ba).abs() < 1e-14);
        assert!((0.0..=1.0).contains(&ab) && ab > 0.01);
        assert!(aa.abs() < 1e-12);
    }

    #[test]
    fn zero_smoothing_is_an_error() {
        let a = vec![0.0, 1.0, 0.0, 2.0];
        let o = DhOptions {
            smoothing: 0.0,
            ..Default::default()
        };
        assert!(matches!(
            power_spectrum_hellinger(&a, &a, 1, 4, 1, &o),
            Err(MetricsError::Parameter {
                arg: "smoothing",
                ..
            })
        ));
    }
}
