//! The `evaluate` kind: score a generated trajectory against the recording with the paper's
//! sample-quality protocol (SPEC §3.1–3.3: smoothing + z-scoring of the generated data, D_stsp,
//! D_H) and write a one-row results table.
//!
//! ```yaml
//! - name: eeg.evaluate
//!   kind: evaluate
//!   matrix: {seed: 1..20}
//!   params: {seed: "${seed}", dataset: eeg, variant: rank3_smc, profile: paper}
//!   inputs: {data: "eeg.prepare:sequences", generated: "eeg.generate[seed=${seed}]:generated"}
//! ```
//!
//! Both inputs are sequences files (`x`: n × channels × T); the first sequence of each is used.
//! Attributes of the generated file (`variant`, `dim`, `n_params`, `trained_on`) fill the
//! table's descriptive columns when present.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::sequences_io::{read_attr, read_sequences};
use crate::metrics::dh::FreqCutoff;
use crate::metrics::protocol::{sample_quality, SampleQualityOptions};
use crate::metrics::SeriesView;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::Table;

fn default_smooth() -> Option<usize> {
    Some(15)
}
fn default_max_rows() -> usize {
    10_000
}
fn default_samples() -> usize {
    1000
}
fn default_dh_smoothing() -> f64 {
    20.0
}
fn default_cutoff() -> Option<i64> {
    Some(-1)
}
fn default_profile() -> String {
    "paper".into()
}

/// Params of an `evaluate` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Seed of the D_stsp Monte-Carlo draws (and the table's `seed` column).
    pub seed: u64,
    /// Dataset name (a key column for `compare`).
    pub dataset: String,
    /// Model variant name (a key column), overriding the generated file's `variant` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Hann window for the generated data (`null`: z-score only). Paper: 15.
    #[serde(default = "default_smooth")]
    pub smooth_window: Option<usize>,
    /// Rows compared (paper: 10000).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// D_stsp Monte-Carlo samples (paper: 1000).
    #[serde(default = "default_samples")]
    pub dstsp_samples: usize,
    /// D_H spectrum smoothing σ (paper: 20).
    #[serde(default = "default_dh_smoothing")]
    pub dh_smoothing: f64,
    /// D_H `freq_cut_off` as a Python slice end (paper: −1, which drops the Nyquist bin);
    /// `null` keeps every bin.
    #[serde(default = "default_cutoff")]
    pub freq_cut_off: Option<i64>,
    /// Profile label written into the table.
    #[serde(default = "default_profile")]
    pub profile: String,
}

/// Scores generated data against the recording.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvaluateStage;

/// (T, D) row-major copy of the first sequence of a (n, D, T) array.
fn first_sequence_rows(x: &[f64], dim: usize, n_time: usize) -> Vec<f64> {
    let mut out = vec![0.0; dim * n_time];
    for c in 0..dim {
        for t in 0..n_time {
            out[t * dim + c] = x[c * n_time + t];
        }
    }
    out
}

impl Stage for EvaluateStage {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        2
    }
    fn description(&self) -> &'static str {
        "generated vs recorded sequences → D_stsp (log-space and reference f32) and D_H table (SPEC §3)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<EvaluateParams>(params)?;
        let p: EvaluateParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.smooth_window.is_some_and(|w| w % 2 == 0) {
            return Err(ParamError::new(
                "smooth_window",
                "the Hann window length must be odd (the paper uses 15)",
            ));
        }
        if p.max_rows == 0 || p.dstsp_samples == 0 {
            return Err(ParamError::new(
                "max_rows/dstsp_samples",
                "must be at least 1",
            ));
        }
        if !(p.dh_smoothing.is_finite() && p.dh_smoothing > 0.0) {
            return Err(ParamError::new("dh_smoothing", "must be finite and > 0"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("metrics", "metrics.parquet"),
            OutputSpec::new("metrics_md", "metrics.md"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![
            InputSpec::required("data"),
            InputSpec::required("generated"),
        ])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: EvaluateParams = ctx.params_as()?;
        let data_path = ctx.input("data")?.to_path_buf();
        let gen_path = ctx.input("generated")?.to_path_buf();
        let io = |e: crate::data::sequences_io::SequencesIoError| StageError::new(e.to_string());
        let data = read_sequences(&data_path).map_err(io)?;
        let generated = read_sequences(&gen_path).map_err(io)?;
        if data.dim_x != generated.dim_x {
            return Err(StageError::new(format!(
                "{} has {} channels but {} has {}: generate from a model fitted to this data",
                gen_path.display(),
                generated.dim_x,
                data_path.display(),
                data.dim_x
            )));
        }
        let d = data.dim_x;
        let data_rows = first_sequence_rows(&data.x, d, data.n_time);
        let gen_rows = first_sequence_rows(&generated.x, d, generated.n_time);
        let opts = SampleQualityOptions {
            smooth_window: p.smooth_window,
            max_rows: p.max_rows,
            dstsp_samples: p.dstsp_samples,
            dh_smoothing: p.dh_smoothing,
            dh_cutoff: match p.freq_cut_off {
                Some(c) => FreqCutoff::ReferenceSlice(c),
                None => FreqCutoff::All,
            },
            seed: p.seed,
        };
        ctx.progress().message("D_stsp and D_H");
        let scores = ctx
            .install(|| {
                sample_quality(
                    SeriesView::new("data", &data_rows, data.n_time, d)?,
                    SeriesView::new("generated", &gen_rows, generated.n_time, d)?,
                    &opts,
                )
            })
            .map_err(|e| StageError::new(format!("{}: {e}", gen_path.display())))?;
        let attr = |name: &str| read_attr(&gen_path, name).ok().flatten();
        let variant = p
            .variant
            .clone()
            .or_else(|| attr("variant"))
            .unwrap_or_else(|| "model".into());
        let num = |name: &str| attr(name).and_then(|s| s.parse::<i64>().ok()).unwrap_or(-1);
        let data_source = read_attr(&data_path, "data_source")
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        let tab = |e: crate::pipeline::table::TableError| StageError::new(e.to_string());
        let table = Table::new()
            .with("dataset", vec![p.dataset.clone()])
            .and_then(|t| t.with("variant", vec![variant]))
            .and_then(|t| t.with("seed", vec![p.seed as i64]))
            .and_then(|t| t.with("dim", vec![num("dim")]))
            .and_then(|t| t.with("n_params", vec![num("n_params")]))
            .and_then(|t| t.with("d_stsp", vec![scores.d_stsp]))
            .and_then(|t| t.with("d_stsp_reference_f32", vec![scores.d_stsp_reference]))
            .and_then(|t| {
                t.with(
                    "d_stsp_reference_outliers",
                    vec![scores.d_stsp_reference_outliers],
                )
            })
            .and_then(|t| t.with("d_h", vec![scores.d_h]))
            .and_then(|t| t.with("n_rows", vec![scores.n_rows as i64]))
            .and_then(|t| t.with("data_source", vec![data_source]))
            .and_then(|t| {
                t.with(
                    "trained_on",
                    vec![attr("trained_on").unwrap_or_else(|| "unknown".into())],
                )
            })
            .and_then(|t| t.with("profile", vec![p.profile.clone()]))
            .map_err(tab)?;
        let out = ctx.output("metrics")?.to_path_buf();
        table.write_parquet(&out).map_err(tab)?;
        let md = ctx.output("metrics_md")?.to_path_buf();
        table.write_markdown(&md).map_err(tab)?;
        ctx.record("d_stsp", scores.d_stsp);
        ctx.record("d_h", scores.d_h);
        Ok(())
    }
}
