//! The `prepare` kind: turn a recording array (`.npy`, or HDF5 with dataset `x`) into the
//! project's sequences file (`x` (n, dim_x, T), see `data::sequences_io`) that `fit` reads.
//!
//! ```yaml
//! - name: eeg.prepare
//!   kind: prepare
//!   params: {layout: time_by_channel, zscore: false, data_source: real}
//!   inputs: {data: "dataset:eeg"}
//!   outputs: {sequences: eeg.h5}
//! ```
//!
//! `layout` says how a 2-D array is stored: `time_by_channel` (T × C, NumPy's usual layout for
//! the EEG array) or `channel_by_time` (C × T). 3-D arrays are (n, C, T). `channels` keeps a
//! subset (by index); `unsmooth: {hann_window, floor}` inverts a Hann smoothing the array went
//! through, outside the window's spectral notches (the EEG training copy, SPEC §5.2); `zscore`
//! standardises each channel over all sequences and time; `max_time` keeps the first samples
//! only (quick runs). NaN/Inf is an error naming the sample.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::npy::read_npy;
use crate::data::sequences_io::{check_finite, read_sequences, write_sequences};
use crate::model::Sequences;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};

/// How a 2-D array is laid out.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ArrayLayout {
    /// Rows are time samples, columns channels (T × C).
    TimeByChannel,
    /// Rows are channels (C × T).
    ChannelByTime,
}

/// Params of a `prepare` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareParams {
    /// Layout of a 2-D input array.
    pub layout: ArrayLayout,
    /// Standardise each channel (mean 0, std 1).
    #[serde(default)]
    pub zscore: bool,
    /// Channel indices to keep (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<usize>>,
    /// Keep only the first `max_time` samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time: Option<usize>,
    /// Undo a Hann smoothing the array went through (see [`UnsmoothParams`]); applied after
    /// channel selection and before `max_time` and z-scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsmooth: Option<UnsmoothParams>,
    /// Label carried into every downstream table (`real`, `simulated`, `surrogate`, …).
    pub data_source: String,
}

/// Invert a Hann smoothing (`scipy.ndimage.convolve1d(x, hann(M), mode='reflect')`) where its
/// frequency response exceeds `floor` · H(0); the components in the window's notches are lost
/// and set to zero. The EEG array the reference ships is smoothed; its training copy was not.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnsmoothParams {
    /// Window length M (odd; the EEG array: 15).
    pub hann_window: usize,
    /// Relative response below which a component counts as destroyed (e.g. 1e-3).
    pub floor: f64,
}

/// Converts an array file into a sequences file.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareStage;

/// Load `path` (.npy, .edf or HDF5) as sequences according to `params`.
pub fn prepare_sequences(
    path: &Path,
    params: &PrepareParams,
) -> Result<Sequences<f64>, StageError> {
    let is_npy = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("npy"))
        .unwrap_or(false);
    let is_edf = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("edf"))
        .unwrap_or(false);
    let mut seq = if is_edf {
        // EDF is channel-major already: one sequence of all channels (layout is ignored).
        let e = crate::data::edf::read_edf(path).map_err(|e| StageError::new(e.to_string()))?;
        check_finite(path, "signals", &e.data, (1, e.labels.len(), e.n_samples))
            .map_err(|e| StageError::new(e.to_string()))?;
        Sequences {
            n_sequences: 1,
            dim_x: e.labels.len(),
            dim_u: 0,
            n_time: e.n_samples,
            x: e.data,
            u: Vec::new(),
        }
    } else if is_npy {
        let a = read_npy(path).map_err(|e| StageError::new(e.to_string()))?;
        let (n, c, t, data) = match (a.shape.as_slice(), params.layout) {
            ([t, c], ArrayLayout::TimeByChannel) => {
                let mut d = vec![0.0; t * c];
                for ti in 0..*t {
                    for ci in 0..*c {
                        d[ci * t + ti] = a.data[ti * c + ci];
                    }
                }
                (1, *c, *t, d)
            }
            ([c, t], ArrayLayout::ChannelByTime) => (1, *c, *t, a.data),
            ([n, c, t], _) => (*n, *c, *t, a.data),
            (s, _) => {
                return Err(StageError::new(format!(
                    "{}: array of shape {s:?}; expected 2-D (T × C or C × T) or 3-D (n, C, T)",
                    path.display()
                )))
            }
        };
        if n * c * t == 0 {
            return Err(StageError::new(format!("{}: empty array", path.display())));
        }
        check_finite(path, "array", &data, (n, c, t))
            .map_err(|e| StageError::new(e.to_string()))?;
        Sequences {
            n_sequences: n,
            dim_x: c,
            dim_u: 0,
            n_time: t,
            x: data,
            u: Vec::new(),
        }
    } else {
        read_sequences(path).map_err(|e| StageError::new(e.to_string()))?
    };
    if let Some(channels) = &params.channels {
        if let Some(&bad) = channels.iter().find(|&&c| c >= seq.dim_x) {
            return Err(StageError::new(format!(
                "params.channels: index {bad} out of range (the data has {} channels)",
                seq.dim_x
            )));
        }
        let mut x = Vec::with_capacity(seq.n_sequences * channels.len() * seq.n_time);
        for s in 0..seq.n_sequences {
            let xs = seq.x_of(s);
            for &c in channels {
                x.extend_from_slice(&xs[c * seq.n_time..(c + 1) * seq.n_time]);
            }
        }
        seq.x = x;
        seq.dim_x = channels.len();
    }
    if let Some(u) = &params.unsmooth {
        let t = seq.n_time;
        for (i, row) in seq.x.chunks_mut(t).enumerate() {
            crate::metrics::preprocess::unsmooth_hann(row, u.hann_window, u.floor).map_err(
                |e| {
                    StageError::new(format!(
                        "params.unsmooth (sequence {}, channel {}): {e}",
                        i / seq.dim_x,
                        i % seq.dim_x
                    ))
                },
            )?;
        }
    }
    if let Some(max_t) = params.max_time {
        if max_t == 0 {
            return Err(StageError::new("params.max_time must be ≥ 1"));
        }
        if max_t < seq.n_time {
            let t = seq.n_time;
            let cut = |v: &[f64], d: usize| -> Vec<f64> {
                v.chunks(t)
                    .take(seq.n_sequences * d)
                    .flat_map(|row| row[..max_t].to_vec())
                    .collect()
            };
            seq.x = cut(&seq.x, seq.dim_x);
            seq.u = cut(&seq.u, seq.dim_u);
            seq.n_time = max_t;
        }
    }
    if params.zscore {
        let (n, d, t) = (seq.n_sequences, seq.dim_x, seq.n_time);
        for c in 0..d {
            let mut sum = 0.0;
            let mut sq = 0.0;
            for s in 0..n {
                for &v in &seq.x[(s * d + c) * t..(s * d + c + 1) * t] {
                    sum += v;
                    sq += v * v;
                }
            }
            let m = (n * t) as f64;
            let mean = sum / m;
            let var = (sq / m - mean * mean).max(0.0);
            if var <= 0.0 {
                return Err(StageError::new(format!(
                    "{}: channel {c} is constant; cannot z-score it (drop it with params.channels)",
                    path.display()
                )));
            }
            let sd = var.sqrt();
            for s in 0..n {
                for v in &mut seq.x[(s * d + c) * t..(s * d + c + 1) * t] {
                    *v = (*v - mean) / sd;
                }
            }
        }
    }
    Ok(seq)
}

impl Stage for PrepareStage {
    fn kind(&self) -> &'static str {
        "prepare"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "array file (.npy / .edf / HDF5) → sequences file (x: n × channels × T) with channel selection, Hann un-smoothing and z-scoring"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        canonical_params::<PrepareParams>(params)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![OutputSpec::new("sequences", "sequences.h5")]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::required("data")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let params: PrepareParams = ctx.params_as()?;
        let input = ctx.input("data")?.to_path_buf();
        let seq = prepare_sequences(&input, &params)?;
        let out = ctx.output("sequences")?.to_path_buf();
        let source = input
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_sequences(
            &out,
            &seq,
            &[
                ("data_source", params.data_source.clone()),
                ("source_file", source),
            ],
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.record("n_sequences", Value::from(seq.n_sequences));
        ctx.record("dim_x", Value::from(seq.dim_x));
        ctx.record("n_time", Value::from(seq.n_time));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::write_npy;

    #[test]
    fn time_by_channel_npy_becomes_channel_rows() {
        let dir = std::env::temp_dir().join(format!("lrsmc-prep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        // T = 4, C = 3: value = 10 t + c
        let data: Vec<f32> = (0..4)
            .flat_map(|t| (0..3).map(move |c| (10 * t + c) as f32))
            .collect();
        write_npy(&p, &[4, 3], &data).unwrap();
        let params = PrepareParams {
            layout: ArrayLayout::TimeByChannel,
            zscore: false,
            channels: Some(vec![2, 0]),
            max_time: Some(3),
            unsmooth: None,
            data_source: "test".into(),
        };
        let seq = prepare_sequences(&p, &params).unwrap();
        assert_eq!((seq.n_sequences, seq.dim_x, seq.n_time), (1, 2, 3));
        assert_eq!(seq.x, vec![2.0, 12.0, 22.0, 0.0, 10.0, 20.0]);
        let z = prepare_sequences(
            &p,
            &PrepareParams {
                zscore: true,
                channels: None,
                max_time: None,
                ..params.clone()
            },
        )
        .unwrap();
        let row: &[f64] = &z.x[0..4];
        let mean: f64 = row.iter().sum::<f64>() / 4.0;
        let var: f64 = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
        let bad = prepare_sequences(
            &p,
            &PrepareParams {
                channels: Some(vec![7]),
                ..params.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("params.channels"), "{bad}");
        let mut nan = data.clone();
        nan[4] = f32::NAN;
        write_npy(&p, &[4, 3], &nan).unwrap();
        let e = prepare_sequences(&p, &params).unwrap_err().to_string();
        assert!(e.contains("NaN") && e.contains("channel 1, time 1"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The EEG training copy: inverting the shipped array's Hann(15) smoothing, then smoothing
    /// and z-scoring it again as the evaluation protocol does, gives the shipped array back up to
    /// the notch components (which carry almost no power in it).
    #[test]
    fn eeg_training_copy_resmooths_to_the_shipped_array() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/eeg/EEG_data_smoothed.npy");
        let base = PrepareParams {
            layout: ArrayLayout::TimeByChannel,
            zscore: false,
            channels: None,
            max_time: None,
            unsmooth: None,
            data_source: "test".into(),
        };
        let shipped = prepare_sequences(&path, &base).unwrap();
        let train = prepare_sequences(
            &path,
            &PrepareParams {
                zscore: true,
                unsmooth: Some(UnsmoothParams {
                    hann_window: 15,
                    floor: 1e-3,
                }),
                ..base.clone()
            },
        )
        .unwrap();
        let (d, t) = (train.dim_x, train.n_time);
        // (T, C) row-major views for the metrics helpers.
        let rows = |x: &[f64]| -> Vec<f64> {
            (0..t)
                .flat_map(|ti| (0..d).map(move |c| x[c * t + ti]))
                .collect()
        };
        let train_rows = rows(&train.x);
        let resmoothed = crate::metrics::preprocess::smooth_and_zscore(
            crate::metrics::SeriesView::new("x", &train_rows, t, d).unwrap(),
            15,
        )
        .unwrap();
        let shipped_rows = rows(&shipped.x);
        let n = resmoothed.len() as f64;
        let rms = (resmoothed
            .iter()
            .zip(&shipped_rows)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(rms < 1e-3, "rms difference {rms}");
        // The training copy is rougher: its step-to-step differences are larger than the
        // shipped array's (relative to each one's unit variance).
        let roughness = |x: &[f64]| -> f64 {
            x.chunks(t)
                .map(|r| r.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum::<f64>())
                .sum::<f64>()
        };
        assert!(roughness(&train.x) > 1.5 * roughness(&shipped.x));
    }
}
