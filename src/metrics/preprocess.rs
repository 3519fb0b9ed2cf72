//! Generation-protocol preprocessing (SPEC §3.1/§3.2): Hann smoothing, z-scoring, truncation.

use super::{MetricsError, SeriesView};

/// Symmetric, unnormalised Hann window, `w[k] = 0.5 − 0.5 cos(2πk/(M−1))` (scipy `hann(M)`).
pub fn hann_window(len: usize) -> Vec<f64> {
    if len == 1 {
        return vec![1.0];
    }
    (0..len)
        .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / (len as f64 - 1.0)).cos())
        .collect()
}

/// Map an out-of-range index to `[0, n)` with scipy.ndimage's 'reflect' (half-sample symmetric) rule.
#[inline]
pub(crate) fn reflect_index(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period);
    if m < n as isize {
        m as usize
    } else {
        (period - 1 - m) as usize
    }
}

/// `scipy.ndimage.correlate1d(x, weights, mode='reflect', origin=0)` on one contiguous 1-D signal.
pub(crate) fn correlate1d_reflect(input: &[f64], weights: &[f64], output: &mut [f64]) {
    let n = input.len();
    let half = (weights.len() / 2) as isize;
    for (i, out) in output.iter_mut().enumerate() {
        let mut acc = 0.0;
        for (k, w) in weights.iter().enumerate() {
            let j = i as isize + k as isize - half;
            let j = if j >= 0 && (j as usize) < n {
                j as usize
            } else {
                reflect_index(j, n)
            };
            acc += w * input[j];
        }
        *out = acc;
    }
}

/// `scipy.ndimage.convolve1d(x, weights, axis=0, mode='reflect')` applied to every column.
pub fn convolve_columns_reflect(
    series: SeriesView<'_>,
    weights: &[f64],
) -> Result<Vec<f64>, MetricsError> {
    series.check("series")?;
    if weights.is_empty() {
        return Err(MetricsError::Empty {
            arg: "weights",
            min: 1,
        });
    }
    if weights.len() % 2 == 0 {
        return Err(MetricsError::Parameter {
            arg: "weights",
            value: format!("length {}", weights.len()),
            reason: "only odd-length kernels are supported (scipy shifts the origin for even ones)",
        });
    }
    // convolve1d = correlate1d with reversed weights.
    let reversed: Vec<f64> = weights.iter().rev().copied().collect();
    let (n, d) = (series.n_time, series.n_dim);
    let mut out = vec![0.0; n * d];
    let mut column = vec![0.0; n];
    let mut smoothed = vec![0.0; n];
    for c in 0..d {
        for (t, value) in column.iter_mut().enumerate() {
            *value = series.values[t * d + c];
        }
        correlate1d_reflect(&column, &reversed, &mut smoothed);
        for (t, value) in smoothed.iter().enumerate() {
            out[t * d + c] = *value;
        }
    }
    Ok(out)
}

/// Smooth every channel with the unnormalised Hann(`window_len`) window (SPEC §3.2; the paper uses 15).
pub fn smooth_hann(series: SeriesView<'_>, window_len: usize) -> Result<Vec<f64>, MetricsError> {
    if window_len % 2 == 0 {
        return Err(MetricsError::Parameter {
            arg: "window_len",
            value: window_len.to_string(),
            reason: "the Hann window length must be odd (the paper uses 15)",
        });
    }
    convolve_columns_reflect(series, &hann_window(window_len))
}

/// Z-score every column in place (ddof 0, `scipy.stats.zscore(axis=0)`); constant columns become NaN.
pub fn zscore_columns(values: &mut [f64], n_time: usize, n_dim: usize) -> Result<(), MetricsError> {
    SeriesView::new("values", values, n_time, n_dim)?.check("values")?;
    for c in 0..n_dim {
        let mean = (0..n_time).map(|t| values[t * n_dim + c]).sum::<f64>() / n_time as f64;
        let var = (0..n_time)
            .map(|t| (values[t * n_dim + c] - mean).powi(2))
            .sum::<f64>()
            / n_time as f64;
        let std = var.sqrt();
        for t in 0..n_time {
            values[t * n_dim + c] = (values[t * n_dim + c] - mean) / std;
        }
    }
    Ok(())
}

/// Hann(15) smoothing followed by per-channel z-scoring, the EEG `smooth_at_eval` step (SPEC §3.2).
pub fn smooth_and_zscore(
    series: SeriesView<'_>,
    window_len: usize,
) -> Result<Vec<f64>, MetricsError> {
    let mut out = smooth_hann(series, window_len)?;
    zscore_columns(&mut out, series.n_time, series.n_dim)?;
    Ok(out)
}

/// The first `min(n_time, max_rows)` rows (SPEC §3.2 truncation to ≤ 10000 rows).
pub fn truncate_rows(series: SeriesView<'_>, max_rows: usize) -> SeriesView<'_> {
    let n = series.n_time.min(max_rows);
    SeriesView {
        values: &series.values[..n * series.n_dim],
        n_time: n,
        n_dim: series.n_dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hann15_sums_to_seven_and_is_symmetric() {
        let w = hann_window(15);
        assert!((w.iter().sum::<f64>() - 7.0).abs() < 1e-12);
        for k in 0..15 {
            assert!((w[k] - w[14 - k]).abs() < 1e-15);
        }
        assert_eq!(w[0], 0.0);
    }

    #[test]
    fn reflect_matches_scipy_rule() {
        // d c b a | a b c d | d c b a
        let n = 4;
        let got: Vec<usize> = (-4..8).map(|i| reflect_index(i, n)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn zscore_has_zero_mean_unit_std() {
        let mut v: Vec<f64> = (0..20)
            .map(|i| (i as f64 * 0.7).sin() * 3.0 + 1.0)
            .collect();
        zscore_columns(&mut v, 10, 2).unwrap();
        for c in 0..2 {
            let m: f64 = (0..10).map(|t| v[t * 2 + c]).sum::<f64>() / 10.0;
            let s: f64 = (0..10).map(|t| (v[t * 2 + c] - m).powi(2)).sum::<f64>() / 10.0;
            assert!(m.abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn nan_input_is_an_error() {
        let v = [1.0, f64::NAN];
        let s = SeriesView::new("x", &v, 2, 1).unwrap();
        assert_eq!(
            smooth_hann(s, 15).unwrap_err(),
            MetricsError::NonFinite {
                arg: "series",
                index: 1
            }
        );
    }
}
