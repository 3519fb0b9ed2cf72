//! Evaluation metrics: D_stsp, D_H, spike statistics, aggregation (SPEC §3).
//!
//! Time series are row-major `(n_time, n_dim)` matrices wrapped in [`SeriesView`].

pub mod aggregate;
pub mod bench;
pub mod dh;
pub mod dstsp;
pub mod dstsp_binned;
pub mod nlb;
pub mod preprocess;
pub mod protocol;
pub mod rates;
pub mod spikes;

pub use aggregate::{bootstrap_ci, mean_sem, median, median_abs_deviation, MadScale, MetricRecord};
pub use bench::{bench_metrics, BenchLine};
pub use dh::{power_spectrum_hellinger, DhOptions, DhResult, FreqCutoff};
pub use dstsp::{dstsp, dstsp_with_draws, DstspDraws, DstspMode, DstspOptions, DstspResult};
pub use dstsp_binned::{dstsp_binned, BinnedOptions, BinningScheme};
pub use preprocess::{hann_window, smooth_and_zscore, smooth_hann, truncate_rows, zscore_columns};

/// Errors of the metric functions; each names the offending argument.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// An input holds no data.
    #[error("argument `{arg}` is empty; pass at least {min} rows/elements")]
    Empty { arg: &'static str, min: usize },
    /// An input holds NaN or ±Inf.
    #[error("argument `{arg}` holds a non-finite value (NaN/Inf) at flat index {index}; clean the data first")]
    NonFinite { arg: &'static str, index: usize },
    /// Shapes disagree.
    #[error("argument `{arg}` has shape {got}, expected {expected}")]
    Shape {
        arg: &'static str,
        got: String,
        expected: String,
    },
    /// A parameter is outside its valid range.
    #[error("parameter `{arg}` = {value} is invalid: {reason}")]
    Parameter {
        arg: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// A borrowed row-major `(n_time, n_dim)` matrix.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    /// Row-major values, `n_time * n_dim` long.
    pub values: &'a [f64],
    /// Number of time points (rows).
    pub n_time: usize,
    /// Number of dimensions / channels (columns).
    pub n_dim: usize,
}

impl<'a> SeriesView<'a> {
    /// Wrap `values` as `(n_time, n_dim)`; errors name `arg` when the length does not fit.
    pub fn new(
        arg: &'static str,
        values: &'a [f64],
        n_time: usize,
        n_dim: usize,
    ) -> Result<Self, MetricsError> {
        if values.len() != n_time * n_dim {
            return Err(MetricsError::Shape {
                arg,
                got: format!("{} values", values.len()),
                expected: format!("{n_time} x {n_dim} = {}", n_time * n_dim),
            });
        }
        Ok(Self {
            values,
            n_time,
            n_dim,
        })
    }

    /// Row `t` as a slice.
    pub fn row(&self, t: usize) -> &'a [f64] {
        &self.values[t * self.n_dim..(t + 1) * self.n_dim]
    }

    /// Check non-empty and finite.
    pub fn check(&self, arg: &'static str) -> Result<(), MetricsError> {
        if self.n_time == 0 || self.n_dim == 0 {
            return Err(MetricsError::Empty { arg, min: 1 });
        }
        check_finite(arg, self.values)
    }
}

/// Error if any value is NaN or infinite.
pub fn check_finite(arg: &'static str, values: &[f64]) -> Result<(), MetricsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite { arg, index }),
        None => Ok(()),
    }
}
