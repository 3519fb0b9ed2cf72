//! The `plot_curves` kind: one line per input table on a shared figure, e.g. the training loss
//! of every seed of a sweep — or, with `split_by`, one line per value of a column of each table
//! (e.g. a summary with a row per sweep cell), after keeping the rows that `filter` selects.
//!
//! ```yaml
//! - name: eeg.loss_curves
//!   kind: plot_curves
//!   params: {x: epoch, y: loss, label: seed, title: "EEG rank-3: training loss per seed"}
//!   inputs: {tables: "eeg.fit[*]:loss_curve"}
//! - name: teacher_student.fig_s5
//!   kind: plot_curves
//!   params: {x: k, y: student, split_by: rz, filter: {metric: latent_noise_std}, log_x: true}
//!   inputs: {tables: "teacher_student.noise_summary:table"}
//! ```
//!
//! x and y may be text columns holding numbers (sweep labels such as `k`); each line is drawn in
//! order of x.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::Table;
use crate::plot::{line_plot_with, Axes, Series};

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
    /// x axis label (default: the column's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_label: Option<String>,
    /// y axis label (default: the column's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_label: Option<String>,
    /// Logarithmic y axis.
    #[serde(default)]
    pub log_y: bool,
    /// Logarithmic x axis.
    #[serde(default)]
    pub log_x: bool,
    /// Keep only the rows whose column (key) shows this text (value), e.g. `{metric: period}`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub filter: IndexMap<String, String>,
    /// One line per distinct value of this column (in order of first appearance) instead of one
    /// per table; lines are labelled `column value` (with the `label` column's first value
    /// in front when both are set and there are several tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_by: Option<String>,
    /// A numeric column drawn as a dashed line beside each line, in its colour (e.g. `teacher`:
    /// the true value the line should reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Draws one curve per table.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlotCurvesStage;

impl Stage for PlotCurvesStage {
    fn kind(&self) -> &'static str {
        "plot_curves"
    }
    fn version(&self) -> u32 {
        // 4: the legend in a corner free of lines or else beside the plot, linear ticks
        // without '.0' (figure only).
        4
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
        let inputs = ctx.inputs("tables")?.to_vec();
        for (i, path) in inputs.iter().enumerate() {
            let table = Table::read_parquet(path).map_err(|e| StageError::new(e.to_string()))?;
            let lines = series_from(path, &table, i, inputs.len(), &p, series.len())?;
            series.extend(lines);
        }
        if series.iter().all(|s| s.x.is_empty()) {
            return Err(StageError::new(format!(
                "no rows to plot{}",
                if p.filter.is_empty() {
                    String::new()
                } else {
                    format!(" after params.filter {:?}", p.filter)
                }
            )));
        }
        let axes = Axes {
            log_x: p.log_x,
            log_y: p.log_y,
            markers: p.split_by.is_some(),
        };
        let fig = line_plot_with(
            &ctx.scratch_dir().join("curves"),
            &p.title,
            p.x_label.as_deref().unwrap_or(&p.x),
            p.y_label.as_deref().unwrap_or(&p.y),
            &series,
            axes,
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

/// The lines that one input table contributes (`i`: its position among `n_inputs`; `first`:
/// the index its first line will have in the figure, for the reference lines).
fn series_from(
    path: &Path,
    table: &Table,
    i: usize,
    n_inputs: usize,
    p: &PlotCurvesParams,
    first: usize,
) -> Result<Vec<Series>, StageError> {
    let mut series = Vec::new();
    let missing = |name: &str, what: &str| {
        StageError::new(format!(
            "{}: no column `{name}` ({what}); it has: {}",
            path.display(),
            table
                .columns()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    // Rows that pass `filter`.
    let mut rows: Vec<usize> = (0..table.n_rows()).collect();
    for (name, want) in &p.filter {
        let col = table
            .column(name)
            .ok_or_else(|| missing(name, "params.filter"))?;
        rows.retain(|&r| col.text(r) == *want);
    }
    let numbers = |name: &str, what: &str, rows: &[usize]| -> Result<Vec<f64>, StageError> {
        let col = table.column(name).ok_or_else(|| missing(name, what))?;
        rows.iter()
            .map(|&r| {
                col.number_or_text(r).ok_or_else(|| {
                    StageError::new(format!(
                        "{}: column `{name}` ({what}) row {r} is `{}`, not a number",
                        path.display(),
                        col.text(r)
                    ))
                })
            })
            .collect()
    };
    let table_label = match &p.label {
        Some(name) => match table.column(name) {
            Some(col) if !col.is_empty() => Some(format!("{name} {}", col.text(0))),
            _ => return Err(missing(name, "params.label")),
        },
        None => None,
    };
    // The row groups that become lines.
    let groups: Vec<(String, Vec<usize>)> = match &p.split_by {
        Some(name) => {
            let col = table
                .column(name)
                .ok_or_else(|| missing(name, "params.split_by"))?;
            let mut groups: IndexMap<String, Vec<usize>> = IndexMap::new();
            for &r in &rows {
                groups.entry(col.text(r)).or_default().push(r);
            }
            groups
                .into_iter()
                .map(|(v, rows)| {
                    let label = match (&table_label, n_inputs > 1) {
                        (Some(t), true) => format!("{t}, {name} {v}"),
                        _ => format!("{name} {v}"),
                    };
                    (label, rows)
                })
                .collect()
        }
        None => vec![(table_label.unwrap_or_else(|| format!("input {i}")), rows)],
    };
    for (label, rows) in groups {
        let x = numbers(&p.x, "params.x", &rows)?;
        let y = numbers(&p.y, "params.y", &rows)?;
        let reference = match &p.reference {
            Some(name) => numbers(name, "params.reference", &rows)?,
            None => vec![f64::NAN; rows.len()],
        };
        let mut pts: Vec<(f64, f64, f64)> = x
            .into_iter()
            .zip(y)
            .zip(reference)
            .map(|((x, y), r)| (x, y, r))
            .collect();
        if p.split_by.is_some() {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let x: Vec<f64> = pts.iter().map(|q| q.0).collect();
        let y = pts.iter().map(|q| q.1).collect();
        let reference: Vec<f64> = pts.iter().map(|q| q.2).collect();
        let line = first + series.len();
        series.push(Series {
            label: label.clone(),
            x: x.clone(),
            y,
            reference_for: None,
        });
        if let Some(name) = &p.reference {
            series.push(Series {
                label: format!("{label}: {name}"),
                x,
                y: reference,
                reference_for: Some(line),
            });
        }
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(yaml: &str) -> PlotCurvesParams {
        serde_yaml_ng::from_str(yaml).expect("params")
    }

    /// A sweep summary: one line per R_z, points ordered by K (a text column), other metrics'
    /// rows filtered out.
    #[test]
    fn split_by_filter_and_text_numbers() {
        let t = Table::new()
            .with("rz", vec!["0.05", "0.05", "0.1", "0.05", "0.1"])
            .unwrap()
            .with("k", vec!["64", "1", "1", "10", "64"])
            .unwrap()
            .with("metric", vec!["noise", "noise", "noise", "noise", "period"])
            .unwrap()
            .with("student", vec![0.052, 0.095, 0.14, 0.059, 50.0])
            .unwrap();
        let p = params("{x: k, y: student, split_by: rz, filter: {metric: noise}, log_x: true}");
        let s = series_from(Path::new("t.parquet"), &t, 0, 1, &p, 0).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "rz 0.05");
        assert_eq!(s[0].x, vec![1.0, 10.0, 64.0]);
        assert_eq!(s[0].y, vec![0.095, 0.059, 0.052]);
        assert_eq!((s[1].label.as_str(), s[1].x.clone()), ("rz 0.1", vec![1.0]));
        assert!(s.iter().all(|l| l.reference_for.is_none()));

        // With `reference`, each line is followed by its dashed reference line, which points
        // back at it by its index in the whole figure (here after 3 lines of earlier tables).
        let t = t.with("teacher", vec![0.05, 0.05, 0.1, 0.05, 0.0]).unwrap();
        let p =
            params("{x: k, y: student, split_by: rz, filter: {metric: noise}, reference: teacher}");
        let s = series_from(Path::new("t.parquet"), &t, 1, 2, &p, 3).unwrap();
        let refs: Vec<Option<usize>> = s.iter().map(|l| l.reference_for).collect();
        assert_eq!(refs, [None, Some(3), None, Some(5)]);
        assert_eq!(s[1].label, "rz 0.05: teacher");
        assert_eq!(
            (s[1].x.clone(), s[1].y.clone()),
            (s[0].x.clone(), vec![0.05; 3])
        );
        assert_eq!(s[3].y, vec![0.1]);
        let err = series_from(
            Path::new("t.parquet"),
            &t,
            0,
            1,
            &params("{x: k, y: student, reference: truth}"),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`truth`") && err.contains("params.reference"),
            "{err}"
        );
    }

    /// Without `split_by`, one line per table in row order, labelled by the label column.
    #[test]
    fn one_line_per_table_and_errors_name_the_column() {
        let t = Table::new()
            .with("epoch", vec![1i64, 2, 3])
            .unwrap()
            .with("loss", vec![3.0, 2.0, 2.5])
            .unwrap()
            .with("seed", vec![7i64, 7, 7])
            .unwrap()
            .with("note", vec!["a", "b", "c"])
            .unwrap();
        let s = series_from(
            Path::new("t.parquet"),
            &t,
            0,
            2,
            &params("{x: epoch, y: loss, label: seed}"),
            0,
        )
        .unwrap();
        assert_eq!((s.len(), s[0].label.as_str()), (1, "seed 7"));
        assert_eq!(s[0].y, vec![3.0, 2.0, 2.5]);
        let err = series_from(
            Path::new("t.parquet"),
            &t,
            0,
            1,
            &params("{x: epoch, y: note}"),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`note`") && err.contains("not a number"),
            "{err}"
        );
        let err = series_from(
            Path::new("t.parquet"),
            &t,
            0,
            1,
            &params("{x: epoch, y: loss, filter: {metrik: x}}"),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`metrik`") && err.contains("params.filter"),
            "{err}"
        );
    }
}
