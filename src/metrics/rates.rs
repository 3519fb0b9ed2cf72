//! Population-rate statistics of spike trains (SPEC §3.5's "quantities the hippocampus and
//! teacher–student figures compare"): the population rate, its autocorrelation and its power
//! spectrum (Welch, with scipy.signal.welch's defaults).

use realfft::RealFftPlanner;

use super::MetricsError;

/// Population rate in Hz per time bin: Σ_neurons count / n_neurons · fs, for spikes stored
/// row-major `(n_time, n_neurons)`.
pub fn population_rate(
    spikes: &[f64],
    n_time: usize,
    n_neurons: usize,
    fs: f64,
) -> Result<Vec<f64>, MetricsError> {
    if n_time == 0 || n_neurons == 0 {
        return Err(MetricsError::Empty {
            arg: "spikes",
            min: 1,
        });
    }
    if spikes.len() != n_time * n_neurons {
        return Err(MetricsError::Shape {
            arg: "spikes",
            got: format!("{} values", spikes.len()),
            expected: format!("({n_time}, {n_neurons})"),
        });
    }
    if let Some(index) = spikes.iter().position(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite {
            arg: "spikes",
            index,
        });
    }
    if !(fs.is_finite() && fs > 0.0) {
        return Err(MetricsError::Parameter {
            arg: "fs",
            value: fs.to_string(),
            reason: "the sampling rate must be > 0",
        });
    }
    Ok(spikes
        .chunks_exact(n_neurons)
        .map(|row| row.iter().sum::<f64>() / n_neurons as f64 * fs)
        .collect())
}

/// Normalised autocorrelation of `x` for lags 0..=max_lag: the biased estimator
/// Σ_t (x_t − x̄)(x_{t+k} − x̄) / Σ_t (x_t − x̄)² (1 at lag 0; NaN for a constant series).
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Result<Vec<f64>, MetricsError> {
    if x.len() < 2 {
        return Err(MetricsError::Empty { arg: "x", min: 2 });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite { arg: "x", index });
    }
    if max_lag >= x.len() {
        return Err(MetricsError::Parameter {
            arg: "max_lag",
            value: max_lag.to_string(),
            reason: "the largest lag must be shorter than the series",
        });
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let c: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let c0: f64 = c.iter().map(|v| v * v).sum();
    Ok((0..=max_lag)
        .map(|k| c.iter().zip(&c[k..]).map(|(a, b)| a * b).sum::<f64>() / c0)
        .collect())
}

/// Welch power spectral density, as `scipy.signal.welch(x, fs, nperseg)` with its defaults:
/// periodic Hann window, 50 % overlap, constant detrend per segment, one-sided, density
/// scaling (units²/Hz), mean over segments. Returns (frequencies, psd). `nperseg` larger than
/// the series is cut to its length, as scipy does.
pub fn welch_psd(x: &[f64], fs: f64, nperseg: usize) -> Result<(Vec<f64>, Vec<f64>), MetricsError> {
    if x.len() < 2 {
        return Err(MetricsError::Empty { arg: "x", min: 2 });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite { arg: "x", index });
    }
    if !(fs.is_finite() && fs > 0.0) {
        return Err(MetricsError::Parameter {
            arg: "fs",
            value: fs.to_string(),
            reason: "the sampling rate must be > 0",
        });
    }
    if nperseg < 2 {
        return Err(MetricsError::Parameter {
            arg: "nperseg",
            value: nperseg.to_string(),
            reason: "a segment needs ≥ 2 samples",
        });
    }
    let m = nperseg.min(x.len());
    let step = m - m / 2;
    let window: Vec<f64> = (0..m)
        .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / m as f64).cos())
        .collect();
    let scale = 1.0 / (fs * window.iter().map(|w| w * w).sum::<f64>());
    let mut planner = RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(m);
    let mut buffer = vec![0.0; m];
    let mut spectrum = fft.make_output_vec();
    let n_freq = m / 2 + 1;
    let mut psd = vec![0.0; n_freq];
    let mut segments = 0usize;
    let mut start = 0;
    while start + m <= x.len() {
        let seg = &x[start..start + m];
        let mean = seg.iter().sum::<f64>() / m as f64;
        for ((b, v), w) in buffer.iter_mut().zip(seg).zip(&window) {
            *b = (v - mean) * w;
        }
        fft.process(&mut buffer, &mut spectrum)
            .map_err(|_| MetricsError::Shape {
                arg: "x",
                got: format!("segment of {m}"),
                expected: "a length the FFT accepts".into(),
            })?;
        for (p, c) in psd.iter_mut().zip(&spectrum) {
            *p += c.norm_sqr() * scale;
        }
        segments += 1;
        start += step;
    }
    for (k, p) in psd.iter_mut().enumerate() {
        *p /= segments as f64;
        // One-sided: double everything but DC (and Nyquist for even m).
        if k != 0 && !(m.is_multiple_of(2) && k == m / 2) {
            *p *= 2.0;
        }
    }
    let freqs = (0..n_freq).map(|k| k as f64 * fs / m as f64).collect();
    Ok((freqs, psd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn population_rate_and_errors() {
        let spikes = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        assert_eq!(
            population_rate(&spikes, 3, 2, 100.0).expect("ok"),
            vec![50.0, 100.0, 0.0]
        );
        assert!(population_rate(&spikes, 4, 2, 100.0).is_err());
        assert!(population_rate(&[f64::NAN, 0.0], 1, 2, 1.0).is_err());
        assert!(autocorrelation(&[1.0, 2.0], 2).is_err());
    }

    /// An AR(1) series x_t = φ x_{t−1} + ε has autocorrelation ≈ φ^k.
    #[test]
    fn ar1_autocorrelation() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let phi = 0.8;
        let mut x = vec![0.0; 200_000];
        for t in 1..x.len() {
            x[t] = phi * x[t - 1] + rng.gen_range(-1.0..1.0);
        }
        let acf = autocorrelation(&x, 5).expect("ok");
        assert_eq!(acf[0], 1.0);
        for (k, a) in acf.iter().enumerate() {
            assert!((a - phi_pow(phi, k)).abs() < 0.01, "lag {k}: {a}");
        }
    }

    fn phi_pow(phi: f64, k: usize) -> f64 {
        (0..k).fold(1.0, |acc, _| acc * phi)
    }

    /// Parseval: Σ psd · Δf ≈ variance; a sine puts its power at its frequency.
    #[test]
    fn welch_parseval_and_peak() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let fs = 100.0;
        let x: Vec<f64> = (0..100_000)
            .map(|t| {
                (std::f64::consts::TAU * 12.5 * t as f64 / fs).sin() + rng.gen_range(-0.5..0.5)
            })
            .collect();
        let (f, p) = welch_psd(&x, fs, 256).expect("ok");
        let df = f[1] - f[0];
        let power: f64 = p.iter().sum::<f64>() * df;
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((power - var).abs() / var < 0.02, "{power} vs {var}");
        let peak = (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .expect("bins");
        assert!((f[peak] - 12.5).abs() <= df, "peak at {}", f[peak]);
    }
}
