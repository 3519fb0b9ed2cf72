//! Spike statistics (SPEC §3.4/§3.5, golden README quirk 4; `calc_stats.py` and the notebooks).
//!
//! Spike arrays are row-major `(n_time, n_neurons)` counts; trial arrays `(n_trials, n_time, n_neurons)`.

use super::MetricsError;
use rayon::prelude::*;

/// ISI statistics per neuron: CV = std/mean, mean and std (ddof 0) of the ISIs.
#[derive(Debug, Clone, PartialEq)]
pub struct IsiStats {
    /// Coefficient of variation per neuron.
    pub cv: Vec<f64>,
    /// Mean ISI per neuron.
    pub mean: Vec<f64>,
    /// ISI standard deviation (ddof 0) per neuron.
    pub std: Vec<f64>,
}

fn check_shape(arg: &'static str, values: &[f64], dims: &[usize]) -> Result<(), MetricsError> {
    let expected: usize = dims.iter().product();
    if values.len() != expected {
        return Err(MetricsError::Shape {
            arg,
            got: format!("{} values", values.len()),
            expected: format!("{dims:?} = {expected}"),
        });
    }
    if expected == 0 {
        return Err(MetricsError::Empty { arg, min: 1 });
    }
    super::check_finite(arg, values)
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Append `diff(where(trace)·dt)` of one neuron (column `neuron` of a `(n_time, n_neurons)` block).
fn push_isis(
    block: &[f64],
    n_time: usize,
    n_neurons: usize,
    neuron: usize,
    dt: f64,
    out: &mut Vec<f64>,
) {
    let mut previous: Option<f64> = None;
    for t in 0..n_time {
        if block[t * n_neurons + neuron] != 0.0 {
            let time = t as f64 * dt;
            if let Some(p) = previous {
                out.push(time - p);
            }
            previous = Some(time);
        }
    }
}

/// Mean firing rate per neuron, `mean_t(count) · fs` (fs = 100 hc-2, 39 hc-11, 50 macaque; 1 for per-bin).
pub fn mean_rates(
    spikes: &[f64],
    n_time: usize,
    n_neurons: usize,
    fs: f64,
) -> Result<Vec<f64>, MetricsError> {
    check_shape("spikes", spikes, &[n_time, n_neurons])?;
    // One row-major pass (a strided pass per neuron would read the whole array N times); each
    // neuron's sum still runs over t in order, so the result is the same.
    Ok(column_sums(spikes, n_neurons)
        .into_iter()
        .map(|s| s / n_time as f64 * fs)
        .collect())
}

/// `calc_isi_stats`: a bin with any count is one spike; < 2 spikes → NaN; 2 spikes → CV 0.
pub fn calc_isi_stats(
    spikes: &[f64],
    n_time: usize,
    n_neurons: usize,
    dt: f64,
) -> Result<IsiStats, MetricsError> {
    check_shape("spikes", spikes, &[n_time, n_neurons])?;
    let mut stats = IsiStats {
        cv: Vec::new(),
        mean: Vec::new(),
        std: Vec::new(),
    };
    // One row-major (cache-friendly) pass collecting each neuron's ISIs.
    let mut all_isis: Vec<Vec<f64>> = vec![Vec::new(); n_neurons];
    let mut previous: Vec<Option<f64>> = vec![None; n_neurons];
    for t in 0..n_time {
        let row = &spikes[t * n_neurons..(t + 1) * n_neurons];
        for (i, &count) in row.iter().enumerate() {
            if count != 0.0 {
                let time = t as f64 * dt;
                if let Some(p) = previous[i] {
                    all_isis[i].push(time - p);
                }
                previous[i] = Some(time);
            }
        }
    }
    for isis in &all_isis {
        let (mean, std) = if isis.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            mean_std(isis)
        };
        stats.cv.push(std / mean);
        stats.mean.push(mean);
        stats.std.push(std);
    }
    Ok(stats)
}

/// `calc_isi_stats_per_trial`: ISIs concatenated over trials; NaN if fewer than `exclude_thr` ISIs or std = 0.
pub fn calc_isi_stats_per_trial(
    spikes: &[f64],
    n_trials: usize,
    n_time: usize,
    n_neurons: usize,
    dt: f64,
    exclude_thr: usize,
) -> Result<IsiStats, MetricsError> {
    check_shape("spikes", spikes, &[n_trials, n_time, n_neurons])?;
    let mut stats = IsiStats {
        cv: Vec::new(),
        mean: Vec::new(),
        std: Vec::new(),
    };
    let mut isis = Vec::new();
    let block = n_time * n_neurons;
    for i in 0..n_neurons {
        isis.clear();
        for b in 0..n_trials {
            push_isis(
                &spikes[b * block..(b + 1) * block],
                n_time,
                n_neurons,
                i,
                dt,
                &mut isis,
            );
        }
        let (mean, std) = if isis.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            mean_std(&isis)
        };
        if isis.len() < exclude_thr || std == 0.0 || isis.is_empty() {
            stats.cv.push(f64::NAN);
            stats.mean.push(f64::NAN);
            stats.std.push(f64::NAN);
        } else {
            stats.cv.push(std / mean);
            stats.mean.push(mean);
            stats.std.push(std);
        }
    }
    Ok(stats)
}

/// `np.corrcoef(data, rowvar=False)`: `(n, n)` row-major; silent (constant) columns give NaN rows/columns.
pub fn correlation_matrix(
    data: &[f64],
    n_time: usize,
    n_vars: usize,
) -> Result<Vec<f64>, MetricsError> {
    check_shape("data", data, &[n_time, n_vars])?;
    let means: Vec<f64> = column_sums(data, n_vars)
        .into_iter()
        .map(|s| s / n_time as f64)
        .collect();
    let nonzero = data.iter().filter(|&&x| x != 0.0).count();
    if nonzero * 20 < data.len() && n_time > 1 {
        return Ok(sparse_correlation(data, n_time, n_vars, &means));
    }
    Ok(dense_correlation(data, n_time, n_vars, &means))
}

/// [`correlation_matrix`] by centring and a blocked GEMM (like numpy's BLAS call).
fn dense_correlation(data: &[f64], n_time: usize, n_vars: usize, means: &[f64]) -> Vec<f64> {
    let mut centred = vec![0.0; n_time * n_vars];
    for (t, row) in data.chunks_exact(n_vars).enumerate() {
        for (i, (value, mean)) in row.iter().zip(means).enumerate() {
            centred[i * n_time + t] = value - mean;
        }
    }
    let denom = n_time as f64 - 1.0;
    // cov = C·Cᵀ/(n−1) with C the centred (n_vars, n_time) matrix, by a blocked GEMM (like numpy's BLAS).
    let mut cov = vec![0.0; n_vars * n_vars];
    // Blocks of rows of the upper triangle (columns ≥ the block's first row) in parallel (rayon);
    // each entry's arithmetic does not depend on the split. The lower triangle is mirrored.
    const ROW_BLOCK: usize = 32;
    cov.par_chunks_mut(ROW_BLOCK * n_vars)
        .enumerate()
        .for_each(|(block, cov_rows)| {
            let rows = cov_rows.len() / n_vars;
            let first = block * ROW_BLOCK;
            let a = &centred[first * n_time..];
            let cols = n_vars - first;
            // SAFETY: `a` holds `rows` rows of length n_time, and also the `cols` rows read as the
            // transposed right operand; `cov_rows[first..]` addresses (rows × cols) with row stride
            // n_vars inside the chunk; all buffers are alive for the call.
            unsafe {
                matrixmultiply::dgemm(
                    rows,
                    n_time,
                    cols,
                    1.0 / denom,
                    a.as_ptr(),
                    n_time as isize,
                    1,
                    a.as_ptr(),
                    1,
                    n_time as isize,
                    0.0,
                    cov_rows[first..].as_mut_ptr(),
                    n_vars as isize,
                    1,
                );
            }
        });
    for i in 0..n_vars {
        for j in 0..i {
            cov[i * n_vars + j] = cov[j * n_vars + i];
        }
    }
    let sd: Vec<f64> = (0..n_vars).map(|i| cov[i * n_vars + i].sqrt()).collect();
    for i in 0..n_vars {
        for j in 0..n_vars {
            let v = cov[i * n_vars + j] / sd[i] / sd[j];
            cov[i * n_vars + j] = if v.is_nan() { v } else { v.clamp(-1.0, 1.0) };
        }
    }
    cov
}

/// Per-column sums of a row-major (rows × n) array, each summed over rows in order.
fn column_sums(data: &[f64], n: usize) -> Vec<f64> {
    let mut sums = vec![0.0; n];
    for row in data.chunks_exact(n) {
        for (s, x) in sums.iter_mut().zip(row) {
            *s += x;
        }
    }
    sums
}

/// [`correlation_matrix`] for sparse data (spike counts: < 5 % non-zero): the cross moments
/// Σ_t x_ti x_tj accumulate only over each time bin's non-zero entries, then
/// cov_ij = (Σ x_ti x_tj − T μ_i μ_j) / (T − 1). Integer counts make every sum exact, so the
/// result equals the dense path's to rounding of the final division.
fn sparse_correlation(data: &[f64], n_time: usize, n_vars: usize, means: &[f64]) -> Vec<f64> {
    let mut moments = vec![0.0; n_vars * n_vars];
    let mut active: Vec<(usize, f64)> = Vec::with_capacity(n_vars);
    // Constant columns (all zero, or one value throughout) get NaN rows as in the dense path,
    // whatever the rounding of the moment formula.
    let mut nnz = vec![0usize; n_vars];
    let mut first: Vec<Option<f64>> = vec![None; n_vars];
    let mut varies = vec![false; n_vars];
    for row in data.chunks_exact(n_vars) {
        for (i, &x) in row.iter().enumerate() {
            if x != 0.0 {
                nnz[i] += 1;
            }
            match first[i] {
                None => first[i] = Some(x),
                Some(f) if f != x => varies[i] = true,
                Some(_) => {}
            }
        }
        active.clear();
        active.extend(
            row.iter()
                .enumerate()
                .filter(|(_, &x)| x != 0.0)
                .map(|(i, &x)| (i, x)),
        );
        for (a, &(i, xi)) in active.iter().enumerate() {
            for &(j, xj) in &active[a..] {
                moments[i * n_vars + j] += xi * xj;
            }
        }
    }
    let t = n_time as f64;
    let mut cov = vec![0.0; n_vars * n_vars];
    for i in 0..n_vars {
        for j in i..n_vars {
            let c = (moments[i * n_vars + j] - t * means[i] * means[j]) / (t - 1.0);
            cov[i * n_vars + j] = c;
            cov[j * n_vars + i] = c;
        }
    }
    let sd: Vec<f64> = (0..n_vars)
        .map(|i| {
            if varies[i] && nnz[i] > 0 {
                cov[i * n_vars + i].max(0.0).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    for i in 0..n_vars {
        for j in 0..n_vars {
            let v = cov[i * n_vars + j] / sd[i] / sd[j];
            cov[i * n_vars + j] = if v.is_nan() { v } else { v.clamp(-1.0, 1.0) };
        }
    }
    cov
}

/// Upper triangle (k = 1) of a square `(n, n)` matrix in `np.triu_indices` order.
pub fn upper_triangle(matrix: &[f64], n: usize) -> Result<Vec<f64>, MetricsError> {
    if matrix.len() != n * n {
        return Err(MetricsError::Shape {
            arg: "matrix",
            got: format!("{} values", matrix.len()),
            expected: format!("{n} x {n}"),
        });
    }
    Ok((0..n)
        .flat_map(|i| ((i + 1)..n).map(move |j| matrix[i * n + j]))
        .collect())
}

/// Pearson correlation of two equal-length vectors (`np.corrcoef(a, b)[0, 1]`); NaN propagates.
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64, MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::Shape {
            arg: "b",
            got: b.len().to_string(),
            expected: format!("{} like a", a.len()),
        });
    }
    if a.len() < 2 {
        return Err(MetricsError::Empty { arg: "a", min: 2 });
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    let r = sab / saa.sqrt() / sbb.sqrt();
    Ok(if r.is_nan() { r } else { r.clamp(-1.0, 1.0) })
}

/// `estimate_cross_correlation`: windows starting every `lag` below `len`,
/// `C[k] = Σ_{j<lag} x[i+j]·x[i+j+k] / C[0]`, k = 0..=lag (not mean-subtracted). Returns `(n_windows, lag+1)`.
pub fn estimate_cross_correlation(
    data: &[f64],
    lag: usize,
    len: usize,
) -> Result<Vec<Vec<f64>>, MetricsError> {
    if lag == 0 {
        return Err(MetricsError::Parameter {
            arg: "lag",
            value: "0".into(),
            reason: "lag must be ≥ 1",
        });
    }
    super::check_finite("data", data)?;
    let last_start = (len.max(1) - 1) / lag * lag;
    if last_start + 2 * lag > data.len() {
        return Err(MetricsError::Shape {
            arg: "data",
            got: format!("{} samples", data.len()),
            expected: format!(
                "≥ {} for windows up to len {len} with lag {lag} (the reference would go ragged)",
                last_start + 2 * lag
            ),
        });
    }
    Ok((0..len)
        .step_by(lag)
        .map(|i| {
            let mut c: Vec<f64> = (0..=lag)
                .map(|k| (0..lag).map(|j| data[i + j] * data[i + j + k]).sum::<f64>())
                .collect();
            let c0 = c[0];
            c.iter_mut().for_each(|v| *v /= c0);
            c
        })
        .collect())
}

/// Mean-rate error (SPEC §3.4): mean over channels of (Σ_t x_real − Σ_t x_gen)², divided by T.
pub fn mean_rate_error(
    x_real: &[f64],
    x_gen: &[f64],
    n_time: usize,
    n_dim: usize,
) -> Result<f64, MetricsError> {
    check_shape("x_real", x_real, &[n_time, n_dim])?;
    check_shape("x_gen", x_gen, &[n_time, n_dim])?;
    let total: f64 = (0..n_dim)
        .map(|c| {
            let sr: f64 = (0..n_time).map(|t| x_real[t * n_dim + c]).sum();
            let sg: f64 = (0..n_time).map(|t| x_gen[t * n_dim + c]).sum();
            (sr - sg).powi(2)
        })
        .sum();
    Ok(total / n_dim as f64 / n_time as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sparse path equals the dense one on spike counts (exact sums) and gives NaN for
    /// silent and constant neurons, like numpy.
    #[test]
    fn sparse_correlation_equals_dense() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (t, n) = (4000, 12);
        let mut x: Vec<f64> = (0..t * n)
            .map(|_| {
                if rng.gen::<f64>() < 0.02 {
                    f64::from(rng.gen_range(1u8..4))
                } else {
                    0.0
                }
            })
            .collect();
        for row in 0..t {
            x[row * n + 3] = 0.0; // silent
        }
        let means: Vec<f64> = column_sums(&x, n).iter().map(|s| s / t as f64).collect();
        let sparse = sparse_correlation(&x, t, n, &means);
        let dense = dense_correlation(&x, t, n, &means);
        for (a, b) in sparse.iter().zip(&dense) {
            assert!(
                (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12,
                "{a} vs {b}"
            );
        }
        assert!(sparse[3 * n + 5].is_nan() && sparse[3 * n + 3].is_nan());
        assert!(matches!(correlation_matrix(&x, t, n), Ok(c) if c[0] == sparse[0]));
    }

    #[test]
    fn isi_rules() {
        // neuron 0: spikes at 0, 2 (count 3 counts once), 5; neuron 1: one spike; neuron 2: two spikes.
        let s = [
            1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0,
            0.0,
        ];
        let st = calc_isi_stats(&s, 6, 3, 1.0).unwrap();
        assert_eq!(st.mean[0], 2.5);
        assert!(st.mean[1].is_nan());
        assert_eq!(st.cv[2], 0.0);
    }

    #[test]
    fn dissimilarity_of_identical_conditions_is_zero() {
        // Conditions 0 and 1 proportional, condition 2 reversed.
        let v = [1.0, 2.0, 4.0, 2.0, 4.0, 8.0, 4.0, 2.0, 1.0];
        let d = dissimilarity_matrix(&v, 3, 3).unwrap();
        assert!(d[1].abs() < 1e-12 && d[0].abs() < 1e-12);
        assert!(d[2] > 1.0);
        assert_eq!(dissimilarity_difference(&d, &d, 3).unwrap(), 0.0);
    }

    #[test]
    fn silent_neuron_gives_nan_row() {
        let d = [1.0, 0.0, 2.0, 0.0, 4.0, 0.0];
        let c = correlation_matrix(&d, 3, 2).unwrap();
        assert_eq!(c[0], 1.0);
        assert!(c[1].is_nan() && c[3].is_nan());
    }
}

/// Per-condition statistics of Fig 7 (macaque notebook): rate mean/std (ddof 0) over trials × time
/// times `fs`, and pairwise correlations (time bins pooled over trials) of `neuron_inds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionStats {
    /// `(n_conditions, n_neurons)` row-major mean rates.
    pub rate_mean: Vec<f64>,
    /// `(n_conditions, n_neurons)` row-major rate standard deviations (ddof 0).
    pub rate_std: Vec<f64>,
    /// `(n_conditions, n_pairs)` row-major upper-triangle correlations of the selected neurons.
    pub pairwise_corr: Vec<f64>,
}

/// Fig 7 per-condition statistics from `(n_trials, n_time, n_neurons)` spikes and a condition per trial.
pub fn per_condition_stats(
    spikes: &[f64],
    n_trials: usize,
    n_time: usize,
    n_neurons: usize,
    conditions: &[usize],
    fs: f64,
    neuron_inds: &[usize],
) -> Result<ConditionStats, MetricsError> {
    check_shape("spikes", spikes, &[n_trials, n_time, n_neurons])?;
    if conditions.len() != n_trials {
        return Err(MetricsError::Shape {
            arg: "conditions",
            got: conditions.len().to_string(),
            expected: format!("{n_trials} (one per trial)"),
        });
    }
    if let Some(&bad) = neuron_inds.iter().find(|&&i| i >= n_neurons) {
        return Err(MetricsError::Parameter {
            arg: "neuron_inds",
            value: bad.to_string(),
            reason: "neuron index beyond n_neurons",
        });
    }
    let n_conditions = conditions.iter().max().map_or(0, |m| m + 1);
    let mut stats = ConditionStats {
        rate_mean: Vec::new(),
        rate_std: Vec::new(),
        pairwise_corr: Vec::new(),
    };
    let block = n_time * n_neurons;
    for c in 0..n_conditions {
        let rows: Vec<&[f64]> = (0..n_trials)
            .filter(|&b| conditions[b] == c)
            .flat_map(|b| spikes[b * block..(b + 1) * block].chunks_exact(n_neurons))
            .collect();
        if rows.is_empty() {
            return Err(MetricsError::Parameter {
                arg: "conditions",
                value: c.to_string(),
                reason: "condition ids must be 0..n_conditions with at least one trial each",
            });
        }
        let pooled: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let count = rows.len();
        for i in 0..n_neurons {
            let column: Vec<f64> = (0..count).map(|t| pooled[t * n_neurons + i]).collect();
            let (mean, std) = mean_std(&column);
            stats.rate_mean.push(mean * fs);
            stats.rate_std.push(std * fs);
        }
        let selected: Vec<f64> = rows
            .iter()
            .flat_map(|r| neuron_inds.iter().map(move |&i| r[i]))
            .collect();
        let corr = correlation_matrix(&selected, count, neuron_inds.len())?;
        stats
            .pairwise_corr
            .extend(upper_triangle(&corr, neuron_inds.len())?);
    }
    Ok(stats)
}

/// Dissimilarity matrix `1 − corrcoef` across conditions of per-condition vectors (`(n_conditions, n)` row-major).
pub fn dissimilarity_matrix(
    per_condition: &[f64],
    n_conditions: usize,
    n: usize,
) -> Result<Vec<f64>, MetricsError> {
    check_shape("per_condition", per_condition, &[n_conditions, n])?;
    // corrcoef with conditions as variables: transpose to (n samples, n_conditions).
    let transposed: Vec<f64> = (0..n)
        .flat_map(|j| (0..n_conditions).map(move |c| per_condition[c * n + j]))
        .collect();
    Ok(correlation_matrix(&transposed, n, n_conditions)?
        .iter()
        .map(|r| 1.0 - r)
        .collect())
}

/// Fig 7c summary: median |upper(test) − upper(generated)| of two dissimilarity matrices.
pub fn dissimilarity_difference(
    test: &[f64],
    generated: &[f64],
    n_conditions: usize,
) -> Result<f64, MetricsError> {
    let a = upper_triangle(test, n_conditions)?;
    let b = upper_triangle(generated, n_conditions)?;
    if b.len() != a.len() {
        return Err(MetricsError::Shape {
            arg: "generated",
            got: b.len().to_string(),
            expected: a.len().to_string(),
        });
    }
    let diffs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
    super::median(&diffs)
}
