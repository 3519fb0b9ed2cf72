//! NLB spike-prediction metrics (golden README quirk 5; `nlb_tools/evaluation.py`, nlb_tools 0.0.4).
//!
//! Arrays are row-major `(n_trials, n_time, n_neurons)`, flattened; only the last axis (neurons) matters.
//! Velocity decoding: sklearn `Ridge` (intercept, Cholesky solve) with `GridSearchCV` as in
//! `fit_and_eval_decoder`, and PSTH R² (`eval_psth`). Not implemented yet: the full `evaluate` wrapper
//! and `velocity_decoding` with several decode masks (call the decoder once per mask and average).

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
    if n_neurons == 0 || !spikes.len().is_multiple_of(n_neurons) {
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
        || !a.len().is_multiple_of(n_a)
        || !b.len().is_multiple_of(n_b)
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

/// The ridge grid of `fit_and_eval_decoder`: `np.logspace(-4, 0, 9)`.
pub fn ridge_alpha_grid() -> Vec<f64> {
    (0..9).map(|i| 10f64.powf(-4.0 + 0.5 * i as f64)).collect()
}

/// A fitted ridge regression `y = x·coef + intercept` (coef row-major `(n_features, n_outputs)`).
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeModel {
    /// Coefficients, row-major `(n_features, n_outputs)`.
    pub coef: Vec<f64>,
    /// Intercept per output.
    pub intercept: Vec<f64>,
    /// Number of features.
    pub n_features: usize,
    /// Number of outputs.
    pub n_outputs: usize,
}

impl RidgeModel {
    /// Predictions for row-major `(n, n_features)` inputs, row-major `(n, n_outputs)`.
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let (p, q) = (self.n_features, self.n_outputs);
        x.chunks_exact(p)
            .flat_map(|row| {
                (0..q).map(move |o| {
                    self.intercept[o]
                        + row
                            .iter()
                            .enumerate()
                            .map(|(j, v)| v * self.coef[j * q + o])
                            .sum::<f64>()
                })
            })
            .collect()
    }
}

/// sklearn `Ridge(alpha, fit_intercept=True)`: centre x and y, solve `(XcᵀXc + αI) W = Xcᵀyc` by Cholesky.
pub fn ridge_fit(
    x: &[f64],
    y: &[f64],
    n_features: usize,
    n_outputs: usize,
    alpha: f64,
) -> Result<RidgeModel, MetricsError> {
    let (p, q) = (n_features, n_outputs);
    if p == 0 || q == 0 || x.is_empty() || !x.len().is_multiple_of(p) || y.len() != x.len() / p * q
    {
        return Err(MetricsError::Shape {
            arg: "y",
            got: format!("x {} values, y {} values", x.len(), y.len()),
            expected: format!("x (n, {p}) and y (n, {q})"),
        });
    }
    super::check_finite("x", x)?;
    super::check_finite("y", y)?;
    let n = x.len() / p;
    let x_mean: Vec<f64> = (0..p)
        .map(|j| x.iter().skip(j).step_by(p).sum::<f64>() / n as f64)
        .collect();
    let y_mean: Vec<f64> = (0..q)
        .map(|o| y.iter().skip(o).step_by(q).sum::<f64>() / n as f64)
        .collect();
    let mut gram = nalgebra::DMatrix::<f64>::zeros(p, p);
    let mut rhs = nalgebra::DMatrix::<f64>::zeros(p, q);
    for (xr, yr) in x.chunks_exact(p).zip(y.chunks_exact(q)) {
        for a in 0..p {
            let xa = xr[a] - x_mean[a];
            for b in 0..p {
                gram[(a, b)] += xa * (xr[b] - x_mean[b]);
            }
            for o in 0..q {
                rhs[(a, o)] += xa * (yr[o] - y_mean[o]);
            }
        }
    }
    for a in 0..p {
        gram[(a, a)] += alpha;
    }
    let chol = nalgebra::Cholesky::new(gram).ok_or(MetricsError::Parameter {
        arg: "alpha",
        value: alpha.to_string(),
        reason: "XᵀX + αI is not positive definite; use alpha > 0",
    })?;
    let w = chol.solve(&rhs);
    let coef: Vec<f64> = (0..p)
        .flat_map(|a| (0..q).map(move |o| (a, o)))
        .map(|(a, o)| w[(a, o)])
        .collect();
    let intercept = (0..q)
        .map(|o| y_mean[o] - (0..p).map(|a| x_mean[a] * w[(a, o)]).sum::<f64>())
        .collect();
    Ok(RidgeModel {
        coef,
        intercept,
        n_features: p,
        n_outputs: q,
    })
}

/// sklearn `r2_score(multioutput='uniform_average')` (constant outputs score 1 if perfect, else 0).
pub fn r2_score(y_true: &[f64], y_pred: &[f64], n_outputs: usize) -> Result<f64, MetricsError> {
    if y_true.len() != y_pred.len()
        || n_outputs == 0
        || !y_true.len().is_multiple_of(n_outputs)
        || y_true.is_empty()
    {
        return Err(MetricsError::Shape {
            arg: "y_pred",
            got: format!("{} values", y_pred.len()),
            expected: format!("{} values in rows of {n_outputs}", y_true.len()),
        });
    }
    let n = y_true.len() / n_outputs;
    let mut total = 0.0;
    for o in 0..n_outputs {
        let mean = (0..n).map(|i| y_true[i * n_outputs + o]).sum::<f64>() / n as f64;
        let ss_res: f64 = (0..n)
            .map(|i| (y_true[i * n_outputs + o] - y_pred[i * n_outputs + o]).powi(2))
            .sum();
        let ss_tot: f64 = (0..n)
            .map(|i| (y_true[i * n_outputs + o] - mean).powi(2))
            .sum();
        total += if ss_tot != 0.0 {
            1.0 - ss_res / ss_tot
        } else if ss_res == 0.0 {
            1.0
        } else {
            0.0
        };
    }
    Ok(total / n_outputs as f64)
}

/// Result of [`fit_and_eval_decoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderResult {
    /// R² on the evaluation data.
    pub r2: f64,
    /// The alpha used (grid-search winner or 1e-2).
    pub alpha: f64,
    /// Mean 5-fold CV R² per grid alpha (empty without grid search).
    pub cv_mean_scores: Vec<f64>,
}

/// `fit_and_eval_decoder`: `GridSearchCV(Ridge(), alpha=logspace(-4,0,9))` with 5 unshuffled folds, refit
/// on all training rows, R² on the eval rows; without grid search `Ridge(alpha=1e-2)`.
#[allow(clippy::too_many_arguments)]
pub fn fit_and_eval_decoder(
    train_x: &[f64],
    train_y: &[f64],
    eval_x: &[f64],
    eval_y: &[f64],
    n_features: usize,
    n_outputs: usize,
    grid_search: bool,
) -> Result<DecoderResult, MetricsError> {
    let (p, q) = (n_features, n_outputs);
    // nlb_tools drops the rows whose first behaviour column is NaN (train and eval).
    let keep_rows = |x: &[f64], y: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let mut kx = Vec::with_capacity(x.len());
        let mut ky = Vec::with_capacity(y.len());
        for (xr, yr) in x.chunks_exact(p.max(1)).zip(y.chunks_exact(q.max(1))) {
            if !yr[0].is_nan() {
                kx.extend_from_slice(xr);
                ky.extend_from_slice(yr);
            }
        }
        (kx, ky)
    };
    let (train_x, train_y) = keep_rows(train_x, train_y);
    let (eval_x, eval_y) = keep_rows(eval_x, eval_y);
    let (train_x, train_y, eval_x, eval_y) = (&train_x[..], &train_y[..], &eval_x[..], &eval_y[..]);
    let n = train_x.len().checked_div(p).unwrap_or(0);
    let (alpha, cv_mean_scores) = if grid_search {
        if n < 5 {
            return Err(MetricsError::Empty {
                arg: "train_x",
                min: 5,
            });
        }
        // KFold(5): the first n % 5 folds get one extra row; test folds are contiguous.
        let mut bounds = vec![0usize];
        for k in 0..5 {
            let size = n / 5 + usize::from(k < n % 5);
            bounds.push(bounds[k] + size);
        }
        let mut means = Vec::new();
        for alpha in ridge_alpha_grid() {
            let mut sum = 0.0;
            for k in 0..5 {
                let (lo, hi) = (bounds[k], bounds[k + 1]);
                let fit_x: Vec<f64> = [&train_x[..lo * p], &train_x[hi * p..]].concat();
                let fit_y: Vec<f64> = [&train_y[..lo * q], &train_y[hi * q..]].concat();
                let model = ridge_fit(&fit_x, &fit_y, p, q, alpha)?;
                let pred = model.predict(&train_x[lo * p..hi * p]);
                sum += r2_score(&train_y[lo * q..hi * q], &pred, q)?;
            }
            means.push(sum / 5.0);
        }
        // First maximum, like GridSearchCV's rank-based choice.
        let mut best = 0;
        for (i, &m) in means.iter().enumerate() {
            if m > means[best] {
                best = i;
            }
        }
        (ridge_alpha_grid()[best], means)
    } else {
        (1e-2, Vec::new())
    };
    let model = ridge_fit(train_x, train_y, p, q, alpha)?;
    let r2 = r2_score(eval_y, &model.predict(eval_x), q)?;
    Ok(DecoderResult {
        r2,
        alpha,
        cv_mean_scores,
    })
}

/// `eval_psth`: R² (uniform over neurons) between the true PSTHs `(n_cond, n_time, n)` and the
/// per-condition trial means of `eval_rates` `(n_trials, n_time, n)`, each trial shifted later by
/// `jitter[trial]` bins (NaN-padded; negative = earlier); rows where `psth[c, t, 0]` is NaN are skipped.
pub fn eval_psth(
    psth: &[f64],
    eval_rates: &[f64],
    cond_trials: &[Vec<usize>],
    jitter: Option<&[i64]>,
    n_time: usize,
    n_neurons: usize,
) -> Result<f64, MetricsError> {
    let block = n_time * n_neurons;
    if block == 0
        || psth.len() != cond_trials.len() * block
        || !eval_rates.len().is_multiple_of(block)
    {
        return Err(MetricsError::Shape {
            arg: "psth / eval_rates",
            got: format!("{} / {} values", psth.len(), eval_rates.len()),
            expected: format!(
                "({} conditions, {n_time}, {n_neurons}) / (trials, {n_time}, {n_neurons})",
                cond_trials.len()
            ),
        });
    }
    let n_trials = eval_rates.len() / block;
    if let Some(j) = jitter {
        if j.len() != n_trials {
            return Err(MetricsError::Shape {
                arg: "jitter",
                got: j.len().to_string(),
                expected: format!("{n_trials} trials"),
            });
        }
    }
    let mut true_rows = Vec::new();
    let mut pred_rows = Vec::new();
    for (c, trials) in cond_trials.iter().enumerate() {
        if trials.is_empty() {
            continue;
        }
        if let Some(&bad) = trials.iter().find(|&&t| t >= n_trials) {
            return Err(MetricsError::Parameter {
                arg: "cond_trials",
                value: bad.to_string(),
                reason: "trial index beyond eval_rates",
            });
        }
        let mut mean = vec![0.0; block];
        for &trial in trials {
            let shift = jitter.map_or(0, |j| j[trial]);
            for t in 0..n_time {
                let source = t as i64 - shift;
                for i in 0..n_neurons {
                    mean[t * n_neurons + i] += if source >= 0 && (source as usize) < n_time {
                        eval_rates[trial * block + source as usize * n_neurons + i]
                    } else {
                        f64::NAN
                    };
                }
            }
        }
        mean.iter_mut().for_each(|v| *v /= trials.len() as f64);
        for t in 0..n_time {
            let true_row = &psth[c * block + t * n_neurons..c * block + (t + 1) * n_neurons];
            if true_row[0].is_nan() {
                continue;
            }
            let pred_row = &mean[t * n_neurons..(t + 1) * n_neurons];
            if pred_row.iter().any(|v| v.is_nan()) {
                return Err(MetricsError::NonFinite {
                    arg: "eval_rates (jittered, within PSTH times)",
                    index: c * block + t * n_neurons,
                });
            }
            true_rows.extend_from_slice(true_row);
            pred_rows.extend_from_slice(pred_row);
        }
    }
    r2_score(&true_rows, &pred_rows, n_neurons)
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
