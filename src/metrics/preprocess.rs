//! Generation-protocol preprocessing (SPEC §3.1/§3.2): Hann smoothing, z-scoring, truncation.

use super::{check_finite, MetricsError, SeriesView};

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
    if weights.len().is_multiple_of(2) {
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
    if window_len.is_multiple_of(2) {
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

/// What [`unsmooth_hann`] kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnsmoothReport {
    /// Fraction of the cosine (DCT-II) components inverted; the rest sat in the window's
    /// spectral notches (|H| ≤ floor · H(0)) and were set to zero.
    pub kept_fraction: f64,
}

/// Undo [`smooth_hann`] on one contiguous signal, as far as it can be undone.
///
/// `scipy.ndimage.convolve1d(mode='reflect')` with a symmetric kernel is diagonal in the
/// DCT-II basis cos(πk(t+½)/T): reflecting the signal to length 2T makes the convolution
/// circular. So the signal is extended that way, transformed, divided by the kernel's (real)
/// frequency response H where |H| > `floor` · H(0), zeroed where it is not (the notches near
/// k·fs/(M−1), k ≥ 2, where the smoothing destroyed the content), and transformed back.
/// Smoothing the result gives the input back up to the zeroed components, and a signal made of
/// kept components comes back exactly (tests). Used to rebuild the unsmoothed EEG training copy
/// the reference trained on from the smoothed array it ships (SPEC §5.2).
pub fn unsmooth_hann(
    signal: &mut [f64],
    window_len: usize,
    floor: f64,
) -> Result<UnsmoothReport, MetricsError> {
    if window_len.is_multiple_of(2) {
        return Err(MetricsError::Parameter {
            arg: "window_len",
            value: window_len.to_string(),
            reason: "the Hann window length must be odd (the paper uses 15)",
        });
    }
    if !(floor.is_finite() && floor > 0.0 && floor < 1.0) {
        return Err(MetricsError::Parameter {
            arg: "floor",
            value: floor.to_string(),
            reason: "must lie in (0, 1), e.g. 1e-3",
        });
    }
    let n = signal.len();
    if n < 2 {
        return Err(MetricsError::Empty {
            arg: "signal",
            min: 2,
        });
    }
    check_finite("signal", signal)?;
    let w = hann_window(window_len);
    let half = (window_len / 2) as isize;
    let len = 2 * n;
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(len);
    let inv = planner.plan_fft_inverse(len);
    let mut buf = fwd.make_input_vec();
    buf[..n].copy_from_slice(signal);
    for (t, v) in signal.iter().enumerate() {
        buf[len - 1 - t] = *v;
    }
    let mut spec = fwd.make_output_vec();
    fwd.process(&mut buf, &mut spec)
        .map_err(|_| MetricsError::Parameter {
            arg: "signal",
            value: format!("length {n}"),
            reason: "FFT failed",
        })?;
    let response = |k: usize| -> f64 {
        w.iter()
            .enumerate()
            .map(|(i, wi)| {
                let j = i as isize - half;
                wi * (2.0 * std::f64::consts::PI * (k as f64) * (j as f64) / len as f64).cos()
            })
            .sum()
    };
    let h0 = response(0);
    let mut kept = 0usize;
    for (k, c) in spec.iter_mut().enumerate() {
        let h = response(k);
        if h.abs() > floor * h0.abs() {
            *c /= h * len as f64;
            kept += 1;
        } else {
            *c = realfft::num_complex::Complex::new(0.0, 0.0);
        }
    }
    // The last bin of an even-length real FFT must be real; the others' imaginary parts are
    // what they are (the extension is symmetric about t = n − ½, not about 0).
    inv.process(&mut spec, &mut buf)
        .map_err(|_| MetricsError::Parameter {
            arg: "signal",
            value: format!("length {n}"),
            reason: "inverse FFT failed",
        })?;
    signal.copy_from_slice(&buf[..n]);
    Ok(UnsmoothReport {
        kept_fraction: kept as f64 / spec.len() as f64,
    })
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

    /// cos(πk(t+½)/T) is an eigenvector of reflect-mode smoothing; a sum of such components
    /// away from the notches is smoothed and recovered exactly, a notch component is dropped.
    #[test]
    fn unsmooth_inverts_smoothing_outside_the_notches() {
        let n = 400;
        let comp = |k: f64| -> Vec<f64> {
            (0..n)
                .map(|t| (std::f64::consts::PI * k * (t as f64 + 0.5) / n as f64).cos())
                .collect()
        };
        // k/2T cycles per sample; Hann(15) notches at 2/14, 3/14, … → k = 2T·m/14.
        let kept_ks = [0.0, 3.0, 17.0, 60.0, 90.0, 150.0];
        let mut x = vec![0.0; n];
        for (i, &k) in kept_ks.iter().enumerate() {
            for (v, c) in x.iter_mut().zip(comp(k)) {
                *v += (1.0 + i as f64 * 0.3) * c;
            }
        }
        let smoothed = smooth_hann(SeriesView::new("x", &x, n, 1).unwrap(), 15).unwrap();
        let mut back = smoothed.clone();
        let report = unsmooth_hann(&mut back, 15, 1e-3).unwrap();
        assert!(report.kept_fraction > 0.6 && report.kept_fraction < 1.0);
        let err = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "max error {err}");
        // A component at the first notch (m = 2 → k = 2T·2/14 = 800/7 ≈ 114.3; take the nearest
        // integer k whose response is below the floor) is removed, not amplified.
        let notch = comp(114.0);
        let mut sm = smooth_hann(SeriesView::new("x", &notch, n, 1).unwrap(), 15).unwrap();
        let before: f64 = sm.iter().map(|v| v * v).sum::<f64>().sqrt();
        unsmooth_hann(&mut sm, 15, 0.05).unwrap();
        let after: f64 = sm.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            after < 1e-9 && before > 0.0,
            "notch component kept: {after}"
        );
    }

    #[test]
    fn unsmooth_rejects_bad_parameters() {
        let mut v = vec![1.0, 2.0, 3.0];
        assert!(unsmooth_hann(&mut v, 14, 1e-3).is_err());
        assert!(unsmooth_hann(&mut v, 15, 0.0).is_err());
        assert!(unsmooth_hann(&mut v, 15, f64::NAN).is_err());
        let mut one = vec![1.0];
        assert!(unsmooth_hann(&mut one, 15, 1e-3).is_err());
        let mut bad = vec![1.0, f64::INFINITY];
        assert!(unsmooth_hann(&mut bad, 15, 1e-3).is_err());
    }
}
