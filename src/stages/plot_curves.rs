//! The `plot_curves` kind: one line per input table on a shared figure, e.g. the training loss
//! of every seed of a sweep.
//!
//! ```yaml
//! - name: eeg.loss_curves
//!   kind: plot_curves
//!   params: {x: epoch, y: loss, label: seed, title: "EEG rank-3: training loss per seed"}
//!   inputs: {tables: "eeg.fit[*]:loss_curve"}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::Table;
use crate::plot::{line_plot, Series};

/// Params of a `plot_curves` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlotCurvesParams {
    /// Numeric column for the x axis.
    pub x: String,
    /// Numeric column for the y axis.
    pub y: String,
    /// Column whose first value names each line (default: the input's position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Figure title.
    #[serde(default)]
    pub title: String,
    /// Logarithmic y axis.
    #[serde(default)]
    pub log_y: bool,
}

/// Draws one curve per table.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlotCurvesStage;

impl Stage for PlotCurvesStage {
    fn kind(&self) -> &'static str {
        "plot_curves"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "one line per input table (e.g. the loss curve of every seed) on one figure → PNG + SVG"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        canonical_params::<PlotCurvesParams>(params)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("figure", "curves.png"),
            OutputSpec::new("figure_svg", "curves.svg"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::many("tables")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: PlotCurvesParams = ctx.params_as()?;
        let mut series = Vec::new();
        for (i, path) in ctx.inputs("tables")?.iter().enumerate() {
            let table = Table::read_parquet(path).map_err(|e| StageError::new(e.to_string()))?;
            let numbers = |name: &str| -> Result<Vec<f64>, StageError> {
                let col = table.column(name).ok_or_else(|| {
                    StageError::new(format!(
                        "{}: no column `{name}` (params.x / params.y); it has: {}",
                        path.display(),
                        table
                            .columns()
                            .map(|(n, _)| n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                (0..col.len())
                    .map(|r| {
                        col.number(r).ok_or_else(|| {
                            StageError::new(format!(
                                "{}: column `{name}` is {}, not numeric",
                                path.display(),
                                col.type_name()
                            ))
                        })
                    })
                    .collect()
            };
            let label = match &p.label {
                Some(name) => match table.column(name) {
                    Some(col) if !col.is_empty() => format!("{name} {}", col.text(0)),
                    _ => {
                        return Err(StageError::new(format!(
                            "{}: no column `{name}` (params.label)",
                            path.display()
                        )))
                    }
                },
                None => format!("input {i}"),
            };
            series.push(Series {
                label,
                x: numbers(&p.x)?,
                y: numbers(&p.y)?,
            });
        }
        let fig = line_plot(
            &ctx.scratch_dir().join("curves"),
            &p.title,
            &p.x,
            &p.y,
            &series,
            p.log_y,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        for (from, output) in [(&fig.png, "figure"), (&fig.svg, "figure_svg")] {
            let to = ctx.output(output)?.to_path_buf();
            std::fs::rename(from, &to).map_err(|e| StageError::io(&to, e))?;
        }
        ctx.record("curves", series.len());
        Ok(())
    }
}
