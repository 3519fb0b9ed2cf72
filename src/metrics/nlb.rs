//! NLB spike-prediction metrics (golden README quirk 5; `nlb_tools/evaluation.py`, nlb_tools 0.0.4).
//!
//! Arrays are row-major `(n_trials, n_time, n_neurons)`, flattened; only the last axis (neurons) matters.
//! Not implemented yet: velocity R² (ridge + GridSearchCV) and PSTH R².

use super::MetricsError;

/// Rates equal to 0 are replaced by this before the log (nlb_tools does it in place on the caller's array).
pub const ZERO_RATE_REPLACEMENT: f64 = 1e-9;

fn check(rates: &[f64], spikes: &[f64]) -> Result<(), MetricsError> {
    if rates.len() != spikes.len() {
        return Err(MetricsError::Shape {
            arg: "rates",
            got: format!("{} values", rates.len()),
            expected: format!("{} values like spikes", spikes.len()),
        });
    }
    if spikes.is_empty() {
        return Err(MetricsError::Empty {
            arg: "spikes",
            min: 1,
        });
    }
    for (i, (&r, &s)) in rates.iter().zip(spikes).enumerate() {
        // Rates at NaN-spike positions are masked out, as in nlb_tools.
        if !s.is_nan() && (!r.is_finite() || r < 0.0) {
            return Err(MetricsError::Parameter {
                arg: "rates",
                value: format!("{r} at flat index {i}"),
                reason: "rates must be finite and ≥ 0 where spikes are observed",
            });
        }
        if s.is_infinite() {
            return Err(MetricsError::NonFinite {
                arg: "spikes",
                index: i,
            });
        }
    }
    Ok(())
}

/// `neg_log_likelihood`: Σ over non-NaN spikes of `r − n·ln r + ln Γ(n + 1)`, zero rates → 1e-9.
pub fn neg_log_likelihood(rates: &[f64], spikes: &[f64]) -> Result<f64, MetricsError> {
    check(rates, spikes)?;
    Ok(rates
        .iter()
        .zip(spikes)
        .filter(|(_, s)| !s.is_nan())
        .map(|(&r, &n)| {
            let r = if r == 0.0 { ZERO_RATE_REPLACEMENT } else { r };
            r - n * r.ln() + libm::lgamma(n + 1.0)
        })
        .sum())
}

/// `bits_per_spike` (co-bps / fp-bps): (NLL_null − NLL_model) / Σ spikes / ln 2, where the null model
/// predicts each neuron's nanmean count over trials × time. NaN spikes are masked out.
pub fn bits_per_spike(
    rates: &[f64],
    spikes: &[f64],
    n_neurons: usize,
) -> Result<f64, MetricsError> {
    check(rates, spikes)?;
    if n_neurons == 0 || spikes.len() % n_neurons != 0 {
        return Err(MetricsError::Shape {
            arg: "spikes",
            got: format!("{} values", spikes.len()),
            expected: format!("a multiple of n_neurons = {n_neurons}"),
        });
    }
    let mut sums = vec![0.0; n_neurons];
    let mut counts = vec![0usize; n_neurons];
    for row in spikes.chunks_exact(n_neurons) {
        for (i, &s) in row.iter().enumerate() {
            if !s.is_nan() {
                sums[i] += s;
                counts[i] += 1;
            }
        }
    }
    let null_means: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| s / c as f64)
        .collect();
    let null_rates: Vec<f64> = (0..spikes.len())
        .map(|j| null_means[j % n_neurons])
        .collect();
    let nll_model = neg_log_likelihood(rates, spikes)?;
    let nll_null = neg_log_likelihood(&null_rates, spikes)?;
    let total_spikes: f64 = spikes.iter().filter(|s| !s.is_nan()).sum();
    Ok((nll_null - nll_model) / total_spikes / std::f64::consts::LN_2)
}

/// Concatenate two `(.., n_a)` and `(.., n_b)` arrays along the last axis (held-in ‖ held-out neurons).
pub fn concat_last_axis(
    a: &[f64],
    n_a: usize,
    b: &[f64],
    n_b: usize,
) -> Result<Vec<f64>, MetricsError> {
    if n_a == 0
        || n_b == 0
        || a.len() % n_a != 0
        || b.len() % n_b != 0
        || a.len() / n_a != b.len() / n_b
    {
        return Err(MetricsError::Shape {
            arg: "b",
            got: format!("{} values / {n_b} neurons", b.len()),
            expected: format!(
                "the same number of rows as a ({} values / {n_a} neurons)",
                a.len()
            ),
        });
    }
    Ok(a.chunks_exact(n_a)
        .zip(b.chunks_exact(n_b))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_null_rates_give_zero_bits() {
        let spikes = [1.0, 0.0, 3.0, 2.0, 0.0, 1.0];
        // Null model = per-neuron mean (neurons are the last axis, 2 neurons).
        let rates = [4.0 / 3.0, 1.0, 4.0 / 3.0, 1.0, 4.0 / 3.0, 1.0];
        assert!(bits_per_spike(&rates, &spikes, 2).unwrap().abs() < 1e-14);
    }

    #[test]
    fn zero_rate_and_nan_spike() {
        let nll = neg_log_likelihood(&[0.0, 1.0], &[0.0, f64::NAN]).unwrap();
        assert!((nll - 1e-9).abs() < 1e-20);
        assert!(neg_log_likelihood(&[-1.0], &[0.0]).is_err());
    }
}
