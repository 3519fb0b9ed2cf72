//! Aggregation across seeds (median, MAD, mean ± sem, bootstrap CI) and the tidy record type.

use super::MetricsError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One row of the tidy long-format results table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricRecord {
    /// Pipeline stage that produced the value.
    pub stage: String,
    /// Model variant name.
    pub model: String,
    /// Training seed.
    pub seed: u64,
    /// Metric name, e.g. `dstsp`, `dh`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Where the compared data came from (e.g. `test`, `generated`).
    pub data_source: String,
}

/// Scale of the median absolute deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MadScale {
    /// `scale = 1.0`: scipy `median_abs_deviation` default; the paper's Table 1 uses this.
    Unscaled,
    /// `scale = 'normal'`: divided by Φ⁻¹(3/4) ≈ 0.67449 (consistent with σ for Gaussians).
    Normal,
}

fn checked(arg: &'static str, values: &[f64]) -> Result<(), MetricsError> {
    if values.is_empty() {
        return Err(MetricsError::Empty { arg, min: 1 });
    }
    super::check_finite(arg, values)
}

/// Median (mean of the two middle values for even lengths, like numpy).
pub fn median(values: &[f64]) -> Result<f64, MetricsError> {
    checked("values", values)?;
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Ok(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Median absolute deviation `median(|x − median(x)|) / scale` (scipy `median_abs_deviation`).
pub fn median_abs_deviation(values: &[f64], scale: MadScale) -> Result<f64, MetricsError> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    let mad = median(&dev)?;
    Ok(match scale {
        MadScale::Unscaled => mad,
        MadScale::Normal => mad / 0.674_489_750_196_081_7,
    })
}

/// Mean and standard error of the mean (ddof 1; sem = NaN for one value).
pub fn mean_sem(values: &[f64]) -> Result<(f64, f64), MetricsError> {
    checked("values", values)?;
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok((mean, (var / n).sqrt()))
}

/// Percentile bootstrap CI of `statistic` at level `1 − alpha`, seeded (ChaCha8) and deterministic.
pub fn bootstrap_ci(
    values: &[f64],
    statistic: impl Fn(&[f64]) -> f64,
    n_resamples: usize,
    alpha: f64,
    seed: u64,
) -> Result<(f64, f64), MetricsError> {
    checked("values", values)?;
    if n_resamples == 0 || !(alpha > 0.0 && alpha < 1.0) {
        return Err(MetricsError::Parameter {
            arg: "n_resamples/alpha",
            value: format!("{n_resamples}/{alpha}"),
            reason: "need n_resamples ≥ 1 and 0 < alpha < 1",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut resample = vec![0.0; values.len()];
    let mut stats: Vec<f64> = (0..n_resamples)
        .map(|_| {
            for r in resample.iter_mut() {
                *r = values[rng.gen_range(0..values.len())];
            }
            statistic(&resample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let pos = q * (stats.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        stats[lo] + (stats[hi] - stats[lo]) * (pos - lo as f64)
    };
    Ok((quantile(alpha / 2.0), quantile(1.0 - alpha / 2.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(median(&v).unwrap(), 3.0);
        assert_eq!(median_abs_deviation(&v, MadScale::Unscaled).unwrap(), 1.0);
        assert!(
            (median_abs_deviation(&v, MadScale::Normal).unwrap() - 1.482602218505602).abs() < 1e-12
        );
        assert_eq!(median(&[1.0, 2.0]).unwrap(), 1.5);
        assert!(median(&[]).is_err());
    }

    #[test]
    fn mean_sem_and_bootstrap() {
        let v = [1.0, 2.0, 3.0, 4.0];
        let (m, s) = mean_sem(&v).unwrap();
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-15);
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        let a = bootstrap_ci(&v, mean, 500, 0.05, 7).unwrap();
        let b = bootstrap_ci(&v, mean, 500, 0.05, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.0 >= 1.0 && a.1 <= 4.0 && a.0 < a.1);
    }
}
