//! The `plot_traces` kind: recorded vs generated channels in stacked panels (Fig 4).
//!
//! ```yaml
//! - name: eeg.fig4
//!   kind: plot_traces
//!   params: {channels: [2, 9, 32, 49, 61], names: [Fc1, C1, F1, P1, O1], start: 1200,
//!            length: 800, rate_hz: 160}
//!   inputs: {data: "eeg.prepare:sequences", generated: "eeg.generate_fig4:generated"}
//! ```
//!
//! The recording is shown from `start` (the generated trajectory from its beginning, i.e. it
//! should be generated from the filtered posterior at `start`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::sequences_io::read_sequences;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::plot::{trace_panels, TracePanel};

/// Params of a `plot_traces` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlotTracesParams {
    /// Channel indices.
    pub channels: Vec<usize>,
    /// Channel names (same length as `channels`; default: the indices).
    #[serde(default)]
    pub names: Vec<String>,
    /// First sample of the recording shown.
    #[serde(default)]
    pub start: usize,
    /// Samples shown.
    pub length: usize,
    /// Sampling rate (for the time axis).
    pub rate_hz: f64,
    /// Figure title.
    #[serde(default)]
    pub title: String,
}

/// Draws recorded vs generated traces.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlotTracesStage;

impl Stage for PlotTracesStage {
    fn kind(&self) -> &'static str {
        "plot_traces"
    }
    fn version(&self) -> u32 {
        // 2: the legend on a row under the title, linear ticks without '.0' (figure only).
        2
    }
    fn description(&self) -> &'static str {
        "recorded vs generated channels, stacked panels (Fig 4) → PNG + SVG"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<PlotTracesParams>(params)?;
        let p: PlotTracesParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.channels.is_empty() || p.length == 0 {
            return Err(ParamError::new(
                "channels/length",
                "need ≥ 1 channel and length ≥ 1",
            ));
        }
        if !p.names.is_empty() && p.names.len() != p.channels.len() {
            return Err(ParamError::new("names", "give one name per channel"));
        }
        if !(p.rate_hz.is_finite() && p.rate_hz > 0.0) {
            return Err(ParamError::new("rate_hz", "must be > 0"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("figure", "traces.png"),
            OutputSpec::new("figure_svg", "traces.svg"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![
            InputSpec::required("data"),
            InputSpec::required("generated"),
        ])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: PlotTracesParams = ctx.params_as()?;
        let io = |e: crate::data::sequences_io::SequencesIoError| StageError::new(e.to_string());
        let data = read_sequences(ctx.input("data")?).map_err(io)?;
        let gen = read_sequences(ctx.input("generated")?).map_err(io)?;
        let mut panels = Vec::new();
        for (i, &c) in p.channels.iter().enumerate() {
            if c >= data.dim_x || c >= gen.dim_x {
                return Err(StageError::new(format!(
                    "params.channels: {c} is out of range ({} channels)",
                    data.dim_x.min(gen.dim_x)
                )));
            }
            let d_end = (p.start + p.length).min(data.n_time);
            let first =
                data.x[c * data.n_time + p.start.min(d_end)..c * data.n_time + d_end].to_vec();
            let g_end = p.length.min(gen.n_time);
            let second = gen.x[c * gen.n_time..c * gen.n_time + g_end].to_vec();
            panels.push(TracePanel {
                label: p.names.get(i).cloned().unwrap_or_else(|| format!("ch {c}")),
                first,
                second,
            });
        }
        let title = if p.title.is_empty() {
            "recorded vs generated".to_string()
        } else {
            p.title.clone()
        };
        let fig = trace_panels(
            &ctx.scratch_dir().join("traces"),
            &title,
            ("recorded", "generated"),
            (1.0 / p.rate_hz, "time (s)"),
            &panels,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("figure", &fig.png)?;
        ctx.place_output("figure_svg", &fig.svg)
    }
}
