//! The paper's sample-quality protocol for continuous recordings (EEG, SPEC §3.1–3.3): compare a
//! generated trajectory with the data by D_stsp and D_H after the same preprocessing.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dh::{power_spectrum_hellinger, DhOptions, FreqCutoff};
use super::dstsp::{dstsp_with_draws, DstspDraws, DstspMode, DstspOptions};
use super::preprocess::{smooth_and_zscore, zscore_columns};
use super::{MetricsError, SeriesView};

/// Options of [`sample_quality`]; defaults are the paper's EEG settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleQualityOptions {
    /// Hann window applied to the generated data before z-scoring (`smooth_at_eval`, 15);
    /// `None`: z-score only.
    pub smooth_window: Option<usize>,
    /// Rows used from both series (reference: `min(T, 10000)`).
    pub max_rows: usize,
    /// Monte-Carlo samples of D_stsp (1000).
    pub dstsp_samples: usize,
    /// σ of the spectrum smoothing of D_H (20).
    pub dh_smoothing: f64,
    /// Frequency cutoff of D_H (the paper's `freq_cut_off = -1` drops the Nyquist bin).
    pub dh_cutoff: FreqCutoff,
    /// Seed of the D_stsp draws.
    pub seed: u64,
}

impl Default for SampleQualityOptions {
    fn default() -> Self {
        Self {
            smooth_window: Some(15),
            max_rows: 10_000,
            dstsp_samples: 1000,
            dh_smoothing: 20.0,
            dh_cutoff: FreqCutoff::ReferenceSlice(-1),
            seed: 0,
        }
    }
}

/// Scores of one generated trajectory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleQuality {
    /// D_stsp computed in log space (no underflow): the sound number.
    pub d_stsp: f64,
    /// D_stsp as the reference computes it in float32 (underflowing densities dropped).
    pub d_stsp_reference: f64,
    /// Fraction of D_stsp samples the reference computation drops.
    pub d_stsp_reference_outliers: f64,
    /// D_H (mean power-spectrum Hellinger distance over channels).
    pub d_h: f64,
    /// Rows compared.
    pub n_rows: usize,
}

/// Preprocess `generated` (smooth + z-score) and score it against `data` (used as given: the
/// paper's evaluation array is already smoothed and z-scored). Both are row-major (T, D).
pub fn sample_quality(
    data: SeriesView<'_>,
    generated: SeriesView<'_>,
    options: &SampleQualityOptions,
) -> Result<SampleQuality, MetricsError> {
    data.check("data")?;
    generated.check("generated")?;
    if data.n_dim != generated.n_dim {
        return Err(MetricsError::Shape {
            arg: "generated",
            got: format!("{} channels", generated.n_dim),
            expected: format!("{} channels like the data", data.n_dim),
        });
    }
    let n = data.n_time.min(generated.n_time).min(options.max_rows);
    let d = data.n_dim;
    let gen_rows = SeriesView::new("generated", &generated.values[..n * d], n, d)?;
    let processed = match options.smooth_window {
        Some(w) => smooth_and_zscore(gen_rows, w)?,
        None => {
            let mut v = gen_rows.values.to_vec();
            zscore_columns(&mut v, n, d)?;
            v
        }
    };
    let gen_view = SeriesView::new("generated", &processed, n, d)?;
    let data_view = SeriesView::new("data", &data.values[..n * d], n, d)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let draws = DstspDraws::sample(&mut rng, options.dstsp_samples, n, d);
    let mut dopts = DstspOptions {
        n_samples: options.dstsp_samples,
        max_rows: options.max_rows,
        ..DstspOptions::default()
    };
    let log_space = dstsp_with_draws(data_view, gen_view, &dopts, &draws)?;
    dopts.mode = DstspMode::ReferenceUnderflowF32;
    let reference = dstsp_with_draws(data_view, gen_view, &dopts, &draws)?;
    let dh = power_spectrum_hellinger(
        data_view.values,
        gen_view.values,
        1,
        n,
        d,
        &DhOptions {
            smoothing: options.dh_smoothing,
            cutoff: options.dh_cutoff,
        },
    )?;
    Ok(SampleQuality {
        d_stsp: log_space.value,
        d_stsp_reference: reference.value,
        d_stsp_reference_outliers: reference.outlier_ratio,
        d_h: dh.value,
        n_rows: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    fn ar_process(seed: u64, n: usize, d: usize, phi: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = vec![0.0; n * d];
        for t in 1..n {
            for c in 0..d {
                let e: f64 = rng.sample(StandardNormal);
                x[t * d + c] = phi * x[(t - 1) * d + c] + e;
            }
        }
        x
    }

    #[test]
    fn same_process_scores_better_than_a_different_one() {
        let (n, d) = (2000, 3);
        let opts = SampleQualityOptions {
            smooth_window: None,
            ..Default::default()
        };
        let mut data = ar_process(1, n, d, 0.9);
        zscore_columns(&mut data, n, d).unwrap();
        let same = ar_process(2, n, d, 0.9);
        let other = ar_process(3, n, d, -0.5);
        let dv = SeriesView::new("d", &data, n, d).unwrap();
        let a = sample_quality(dv, SeriesView::new("g", &same, n, d).unwrap(), &opts).unwrap();
        let b = sample_quality(dv, SeriesView::new("g", &other, n, d).unwrap(), &opts).unwrap();
        assert!(a.d_h < b.d_h, "{a:?} {b:?}");
        assert!(a.d_h < 0.1, "{a:?}");
        assert!(a.d_stsp.is_finite() && b.d_stsp.is_finite());
        // Identical data scores D_H = 0 exactly and D_stsp = 0 in log space.
        let c = sample_quality(dv, dv, &opts).unwrap();
        assert!(c.d_h.abs() < 1e-12 && c.d_stsp.abs() < 1e-12, "{c:?}");
        let e = sample_quality(
            dv,
            SeriesView::new("g", &same[..n * 2], n, 2).unwrap(),
            &opts,
        );
        assert!(e.is_err());
    }
}
