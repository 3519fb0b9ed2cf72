//! Binned D_stsp of GTF (`DurstewitzLab/GTF-shPLRNN`, `src/measures/stsp_measure.jl`, method with `n_bins`).
//!
//! Each series is histogrammed on the same `n_bins^N` grid, both histograms get Laplace smoothing
//! `(h + α)/(Σh + α·n_bins^N)` with α = 1e-5 (f32 literal), and D = KL(p_data ‖ p_gen) = Σ p log(p/q).
//! GTF uses this variant for N < 6 dimensions (30 bins, `settings/defaults.json`) and the Gaussian
//! mixture otherwise. Not in smc_rnns; no golden data (checked by the unit tests below).

use super::{MetricsError, SeriesView};
use std::collections::HashMap;

/// Range of the histogram grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinningScheme {
    /// GTF `"default"`: per dimension `[min − 0.1σ, max + 0.1σ]` of the data (σ with ddof 1).
    #[default]
    DataRange,
    /// GTF `"legacy"` (Brenner et al. 2022): `[−2σ, 2σ]` per dimension.
    Legacy,
}

/// Options of [`dstsp_binned`]; defaults are GTF's (30 bins, default scheme).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinnedOptions {
    /// Bins per dimension.
    pub n_bins: usize,
    /// Grid range.
    pub scheme: BinningScheme,
}

impl Default for BinnedOptions {
    fn default() -> Self {
        Self {
            n_bins: 30,
            scheme: BinningScheme::DataRange,
        }
    }
}

/// GTF's Laplace-smoothing constant `1.0f-5` (a Float32 literal).
const LAPLACE_ALPHA: f64 = 1.0e-5_f32 as f64;

/// Histogram of the in-range rows: bin `i` holds `edge_i ≤ x < edge_{i+1}` (StatsBase `closed=:left`).
fn histogram(
    series: SeriesView<'_>,
    lo: &[f64],
    hi: &[f64],
    n_bins: usize,
) -> HashMap<Vec<u32>, u64> {
    let mut counts = HashMap::new();
    'rows: for t in 0..series.n_time {
        let mut key = Vec::with_capacity(series.n_dim);
        for (k, &x) in series.row(t).iter().enumerate() {
            let position = (x - lo[k]) / (hi[k] - lo[k]) * n_bins as f64;
            if !(position >= 0.0 && position < n_bins as f64) {
                continue 'rows;
            }
            key.push(position.floor() as u32);
        }
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Binned D_stsp = KL(p_data ‖ p_gen) of Laplace-smoothed histograms; NaN if no generated point falls in the grid.
pub fn dstsp_binned(
    x_data: SeriesView<'_>,
    x_gen: SeriesView<'_>,
    options: &BinnedOptions,
) -> Result<f64, MetricsError> {
    x_data.check("x_data")?;
    x_gen.check("x_gen")?;
    if x_gen.n_dim != x_data.n_dim {
        return Err(MetricsError::Shape {
            arg: "x_gen",
            got: format!("{} columns", x_gen.n_dim),
            expected: format!("{} columns like x_data", x_data.n_dim),
        });
    }
    if options.n_bins == 0 || x_data.n_time < 2 {
        return Err(MetricsError::Parameter {
            arg: "n_bins / x_data",
            value: format!("{} bins, {} rows", options.n_bins, x_data.n_time),
            reason: "need ≥ 1 bin and ≥ 2 data rows (σ uses ddof 1)",
        });
    }
    let (n, d) = (x_data.n_time, x_data.n_dim);
    let mut lo = vec![0.0; d];
    let mut hi = vec![0.0; d];
    for k in 0..d {
        let column = || (0..n).map(|t| x_data.values[t * d + k]);
        let mean = column().sum::<f64>() / n as f64;
        let sigma = (column().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
        match options.scheme {
            BinningScheme::DataRange => {
                lo[k] = column().fold(f64::INFINITY, f64::min) - 0.1 * sigma;
                hi[k] = column().fold(f64::NEG_INFINITY, f64::max) + 0.1 * sigma;
            }
            BinningScheme::Legacy => {
                hi[k] = 2.0 * sigma;
                lo[k] = -hi[k];
            }
        }
        if hi[k] <= lo[k] {
            return Err(MetricsError::Parameter {
                arg: "x_data",
                value: format!("column {k}"),
                reason: "a constant data column gives an empty bin range",
            });
        }
    }
    let h_data = histogram(x_data, &lo, &hi, options.n_bins);
    let h_gen = histogram(x_gen, &lo, &hi, options.n_bins);
    let s_data: u64 = h_data.values().sum();
    let s_gen: u64 = h_gen.values().sum();
    if s_gen == 0 {
        return Ok(f64::NAN);
    }
    let n_cells = (options.n_bins as f64).powi(d as i32);
    let p_of = |c: u64| (c as f64 + LAPLACE_ALPHA) / (s_data as f64 + LAPLACE_ALPHA * n_cells);
    let q_of = |c: u64| (c as f64 + LAPLACE_ALPHA) / (s_gen as f64 + LAPLACE_ALPHA * n_cells);
    let term = |p: f64, q: f64| p * (p / q).ln();
    // Occupied cells explicitly; the cells empty in both share one term.
    let mut kl = 0.0;
    let mut occupied = 0usize;
    for (key, &c) in &h_data {
        kl += term(p_of(c), q_of(h_gen.get(key).copied().unwrap_or(0)));
        occupied += 1;
    }
    for (key, &c) in &h_gen {
        if !h_data.contains_key(key) {
            kl += term(p_of(0), q_of(c));
            occupied += 1;
        }
    }
    kl += (n_cells - occupied as f64) * term(p_of(0), q_of(0));
    Ok(kl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense brute force over all n_bins^N cells, as GTF computes it.
    fn dense(x: &[f64], y: &[f64], n: usize, d: usize, bins: usize) -> f64 {
        let vx = SeriesView::new("x", x, n, d).unwrap();
        let vy = SeriesView::new("y", y, y.len() / d, d).unwrap();
        let mut lo = vec![0.0; d];
        let mut hi = vec![0.0; d];
        for k in 0..d {
            let col: Vec<f64> = (0..n).map(|t| x[t * d + k]).collect();
            let m = col.iter().sum::<f64>() / n as f64;
            let s = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
            lo[k] = col.iter().cloned().fold(f64::INFINITY, f64::min) - 0.1 * s;
            hi[k] = col.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 0.1 * s;
        }
        let hx = histogram(vx, &lo, &hi, bins);
        let hy = histogram(vy, &lo, &hi, bins);
        let cells = bins.pow(d as u32);
        let (sx, sy): (u64, u64) = (hx.values().sum(), hy.values().sum());
        let mut kl = 0.0;
        for idx in 0..cells {
            let key: Vec<u32> = (0..d)
                .map(|k| ((idx / bins.pow(k as u32)) % bins) as u32)
                .collect();
            let p = (*hx.get(&key).unwrap_or(&0) as f64 + LAPLACE_ALPHA)
                / (sx as f64 + LAPLACE_ALPHA * cells as f64);
            let q = (*hy.get(&key).unwrap_or(&0) as f64 + LAPLACE_ALPHA)
                / (sy as f64 + LAPLACE_ALPHA * cells as f64);
            kl += p * (p / q).ln();
        }
        kl
    }

    #[test]
    fn sparse_sum_equals_dense_sum_and_self_is_zero() {
        let x: Vec<f64> = (0..600)
            .map(|i| ((i as f64) * 0.173).sin() + 0.01 * i as f64)
            .collect();
        let y: Vec<f64> = (0..600).map(|i| ((i as f64) * 0.31).cos() * 1.2).collect();
        let (vx, vy) = (
            SeriesView::new("x", &x, 200, 3).unwrap(),
            SeriesView::new("y", &y, 200, 3).unwrap(),
        );
        let opts = BinnedOptions {
            n_bins: 8,
            ..Default::default()
        };
        let ours = dstsp_binned(vx, vy, &opts).unwrap();
        let brute = dense(&x, &y, 200, 3, 8);
        assert!(
            (ours - brute).abs() < 1e-10 * brute.abs().max(1.0),
            "{ours} vs {brute}"
        );
        assert!(ours > 0.0);
        assert!(dstsp_binned(vx, vx, &opts).unwrap().abs() < 1e-12);
    }

    #[test]
    fn generated_outside_grid_gives_nan() {
        let x: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let y = vec![1e6; 20];
        let (vx, vy) = (
            SeriesView::new("x", &x, 10, 2).unwrap(),
            SeriesView::new("y", &y, 10, 2).unwrap(),
        );
        assert!(dstsp_binned(vx, vy, &BinnedOptions::default())
            .unwrap()
            .is_nan());
    }
}
