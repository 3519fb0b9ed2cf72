//! The `summarize` kind: many per-run tables (one per seed) → one summary table with median ±
//! MAD (or mean ± sem) per group, plus a box plot per metric (Table 1 and Fig S7).
//!
//! ```yaml
//! - name: eeg.table1
//!   kind: summarize
//!   params:
//!     group_by: [variant]
//!     metrics: [d_stsp, d_h]
//!     carry: [dim, n_params, data_source, profile]   # constant within a group
//!     keys: {dataset: eeg}                           # extra key columns for `compare`
//!     statistic: median_mad
//!   inputs: {tables: "eeg.evaluate[*]:metrics"}
//! ```
//!
//! The output table has, per group, the group and carried columns, `n_runs`, and for each
//! metric `<m>` (the median or mean) and `<m>_err` (the MAD or sem) — the `_err` suffix is
//! what `compare` reads as an error bar.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::aggregate::{mean_sem, median, median_abs_deviation, MadScale};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::{Column, Table};
use crate::plot::{box_panels, box_plot, BoxGroup, BoxPanel};

/// Centre and spread.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Median ± median absolute deviation (unscaled, scipy's default; the paper's Table 1).
    #[default]
    MedianMad,
    /// Mean ± standard error of the mean.
    MeanSem,
}

/// Params of a `summarize` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SummarizeParams {
    /// Columns whose values define a group (e.g. the model variant).
    pub group_by: Vec<String>,
    /// Numeric columns to summarise.
    pub metrics: Vec<String>,
    /// Columns copied from the group's rows (must be equal within a group).
    #[serde(default)]
    pub carry: Vec<String>,
    /// Constant key columns added to every row (e.g. `dataset: eeg`).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Centre and spread.
    #[serde(default)]
    pub statistic: Statistic,
    /// Title prefix of the box plots.
    #[serde(default)]
    pub title: String,
    /// One of `group_by`: the box plots get a panel per value of this column, each with its
    /// own value range, its boxes labelled by the other `group_by` columns (e.g. `metric`, when
    /// the metrics have different scales). Unset: one panel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panels_by: Option<String>,
    /// Reference marks on the box plots, plotted metric → metric: each box of the first gets
    /// the group's median of the second as a black bar (e.g. `{student: teacher}`: the students'
    /// values and their teacher's). A metric used as a mark gets no box plot of its own; the
    /// table is unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, String>,
}

impl SummarizeParams {
    /// The metrics that get a box plot: all but those drawn as marks on another's.
    fn plotted(&self) -> impl Iterator<Item = &String> {
        self.metrics
            .iter()
            .filter(|m| !self.marks.values().any(|v| v == *m))
    }

    /// `marks` names metrics, none both marked and a mark.
    fn check_marks(&self) -> Result<(), String> {
        for (plotted, mark) in &self.marks {
            for m in [plotted, mark] {
                if !self.metrics.contains(m) {
                    return Err(format!(
                        "`{m}` is not one of metrics ({}); name two of them, as \
                         {{plotted: mark}}",
                        self.metrics.join(", ")
                    ));
                }
            }
            if self.marks.contains_key(mark) {
                return Err(format!(
                    "`{mark}` is drawn as a mark on `{plotted}` and has marks of its own; a \
                     metric drawn as a mark gets no box plot"
                ));
            }
        }
        Ok(())
    }
}

/// Aggregates per-run tables.
#[derive(Debug, Clone, Copy, Default)]
pub struct SummarizeStage;

/// A value of a carried or group column.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Num(f64),
    Int(i64),
    Text(String),
}

/// A cell as a label.
fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        Cell::Num(x) => x.to_string(),
        Cell::Int(i) => i.to_string(),
    }
}

fn cell(column: &Column, row: usize) -> Cell {
    match column {
        Column::F64(v) => Cell::Num(v[row]),
        Column::I64(v) => Cell::Int(v[row]),
        Column::Str(v) => Cell::Text(v[row].clone()),
        Column::Bool(v) => Cell::Text(v[row].to_string()),
    }
}

/// Per metric, its box-plot panels (one, untitled, unless `panels_by` is set).
pub type MetricBoxes = Vec<(String, Vec<BoxPanel>)>;

/// Summarise the rows of `tables` (name, table) by `params`; returns the table and, per
/// metric, the box-plot panels.
pub fn summarize(
    tables: &[(String, Table)],
    params: &SummarizeParams,
) -> Result<(Table, MetricBoxes), StageError> {
    if params.metrics.is_empty() {
        return Err(StageError::new(
            "params.metrics is empty: name at least one column",
        ));
    }
    params
        .check_marks()
        .map_err(|e| StageError::new(format!("params.marks: {e}")))?;
    let panel_at = match &params.panels_by {
        Some(c) => Some(params.group_by.iter().position(|g| g == c).ok_or_else(|| {
            StageError::new(format!(
                "params.panels_by `{c}` is not one of params.group_by ({})",
                params.group_by.join(", ")
            ))
        })?),
        None => None,
    };
    // group key → (carried cells, metric → values)
    type Group = (Vec<Cell>, Vec<Cell>, BTreeMap<String, Vec<f64>>);
    let mut groups: Vec<(String, Group)> = Vec::new();
    for (name, table) in tables {
        let col = |c: &str| {
            table.column(c).ok_or_else(|| {
                let have: Vec<&str> = table.names().collect();
                StageError::new(format!(
                    "{name}: no column `{c}` (columns: {}); fix params.group_by/metrics/carry",
                    have.join(", ")
                ))
            })
        };
        for row in 0..table.n_rows() {
            let gcells: Vec<Cell> = params
                .group_by
                .iter()
                .map(|c| col(c).map(|col| cell(col, row)))
                .collect::<Result<_, _>>()?;
            let ccells: Vec<Cell> = params
                .carry
                .iter()
                .map(|c| col(c).map(|col| cell(col, row)))
                .collect::<Result<_, _>>()?;
            let key = format!("{gcells:?}");
            let pos = match groups.iter().position(|(k, _)| *k == key) {
                Some(p) => p,
                None => {
                    groups.push((
                        key.clone(),
                        (gcells.clone(), ccells.clone(), BTreeMap::new()),
                    ));
                    groups.len() - 1
                }
            };
            let group = &mut groups[pos].1;
            for (i, (a, b)) in group.1.iter().zip(&ccells).enumerate() {
                let same = match (a, b) {
                    (Cell::Num(x), Cell::Num(y)) => x == y || (x.is_nan() && y.is_nan()),
                    _ => a == b,
                };
                if !same {
                    return Err(StageError::new(format!(
                        "{name}: column `{}` differs within group {:?} ({a:?} vs {b:?}); \
                         add it to params.group_by or remove it from params.carry",
                        params.carry[i], group.0
                    )));
                }
            }
            for m in &params.metrics {
                let v = col(m)?.number(row).ok_or_else(|| {
                    StageError::new(format!("{name}: column `{m}` is not numeric"))
                })?;
                group.2.entry(m.clone()).or_default().push(v);
            }
        }
    }
    if groups.is_empty() {
        return Err(StageError::new("no rows in the input tables"));
    }
    let mut out = Table::new();
    let tab_err = |e: crate::pipeline::table::TableError| StageError::new(e.to_string());
    for (k, v) in &params.keys {
        out.push(k.clone(), vec![v.clone(); groups.len()])
            .map_err(tab_err)?;
    }
    let cols_from =
        |names: &[String], pick: &dyn Fn(&Group) -> &Vec<Cell>| -> Vec<(String, Column)> {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let cells: Vec<&Cell> = groups.iter().map(|(_, g)| &pick(g)[i]).collect();
                    let column = match cells[0] {
                        Cell::Num(_) => Column::F64(
                            cells
                                .iter()
                                .map(|c| match c {
                                    Cell::Num(x) => *x,
                                    Cell::Int(i) => *i as f64,
                                    Cell::Text(_) => f64::NAN,
                                })
                                .collect(),
                        ),
                        Cell::Int(_) => Column::I64(
                            cells
                                .iter()
                                .map(|c| match c {
                                    Cell::Int(i) => *i,
                                    Cell::Num(x) => *x as i64,
                                    Cell::Text(_) => 0,
                                })
                                .collect(),
                        ),
                        Cell::Text(_) => Column::Str(cells.iter().map(|c| cell_text(c)).collect()),
                    };
                    (n.clone(), column)
                })
                .collect()
        };
    for (n, c) in cols_from(&params.group_by, &|g: &Group| &g.0) {
        out.push(n, c).map_err(tab_err)?;
    }
    for (n, c) in cols_from(&params.carry, &|g: &Group| &g.1) {
        out.push(n, c).map_err(tab_err)?;
    }
    let n_runs: Vec<i64> = groups
        .iter()
        .map(|(_, g)| g.2.values().next().map(|v| v.len() as i64).unwrap_or(0))
        .collect();
    out.push("n_runs", n_runs).map_err(tab_err)?;
    let mut boxes = Vec::new();
    for m in &params.metrics {
        let mut centre = Vec::new();
        let mut spread = Vec::new();
        let mut n_nan = Vec::new();
        let mut panels: Vec<BoxPanel> = Vec::new();
        for (_, g) in &groups {
            let all = &g.2[m];
            let finite: Vec<f64> = all.iter().copied().filter(|v| v.is_finite()).collect();
            n_nan.push((all.len() - finite.len()) as i64);
            let (c, s) = if finite.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                match params.statistic {
                    Statistic::MedianMad => (
                        median(&finite).map_err(|e| StageError::new(e.to_string()))?,
                        median_abs_deviation(&finite, MadScale::Unscaled)
                            .map_err(|e| StageError::new(e.to_string()))?,
                    ),
                    Statistic::MeanSem => {
                        mean_sem(&finite).map_err(|e| StageError::new(e.to_string()))?
                    }
                }
            };
            centre.push(c);
            spread.push(s);
            // Names speak for themselves (`rdm`); numbers, also as text (a matrix axis' value),
            // get their column (`k=64`).
            let label =
                g.0.iter()
                    .zip(&params.group_by)
                    .enumerate()
                    .filter(|(j, _)| Some(*j) != panel_at)
                    .map(|(_, (c, name))| match c {
                        Cell::Text(t) if t.trim().parse::<f64>().is_err() => t.clone(),
                        _ => format!("{name}={}", cell_text(c)),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
            let label = if label.is_empty() {
                "all".to_string()
            } else {
                label
            };
            let title = panel_at.map(|j| cell_text(&g.0[j])).unwrap_or_default();
            let at = match panels.iter().position(|p| p.title == title) {
                Some(at) => at,
                None => {
                    panels.push(BoxPanel {
                        title,
                        groups: Vec::new(),
                    });
                    panels.len() - 1
                }
            };
            // The mark: the group's median of the marking metric, when it has a finite value.
            let mark = match params.marks.get(m) {
                Some(by) => {
                    let v: Vec<f64> = g.2[by].iter().copied().filter(|v| v.is_finite()).collect();
                    if v.is_empty() {
                        None
                    } else {
                        Some(median(&v).map_err(|e| StageError::new(e.to_string()))?)
                    }
                }
                None => None,
            };
            panels[at].groups.push(BoxGroup {
                label,
                values: all.clone(),
                mark,
            });
        }
        out.push(m.clone(), centre).map_err(tab_err)?;
        out.push(format!("{m}_err"), spread).map_err(tab_err)?;
        out.push(format!("{m}_n_nan"), n_nan).map_err(tab_err)?;
        if params.plotted().any(|p| p == m) {
            boxes.push((m.clone(), panels));
        }
    }
    Ok((out, boxes))
}

impl Stage for SummarizeStage {
    fn kind(&self) -> &'static str {
        "summarize"
    }
    fn version(&self) -> u32 {
        // 3: the box plots' linear ticks without '.0' or '-0.0' (figures only).
        // 4: boxes are never black, the colour of the marks (figures only).
        4
    }
    fn description(&self) -> &'static str {
        "per-run tables → median ± MAD (or mean ± sem) per group, with box plots (Table 1, Fig S7)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<SummarizeParams>(params)?;
        let p: SummarizeParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.metrics.is_empty() {
            return Err(ParamError::new(
                "metrics",
                "name at least one metric column",
            ));
        }
        if let Some(c) = &p.panels_by {
            if !p.group_by.contains(c) {
                return Err(ParamError::new(
                    "panels_by",
                    format!(
                        "`{c}` is not one of group_by ({}); name one of them or leave it out",
                        p.group_by.join(", ")
                    ),
                ));
            }
        }
        p.check_marks().map_err(|e| ParamError::new("marks", e))?;
        Ok(v)
    }
    fn outputs(&self, params: &Value) -> Vec<OutputSpec> {
        let mut outs = vec![
            OutputSpec::new("table", "table.parquet"),
            OutputSpec::new("table_md", "table.md"),
            OutputSpec::new("long", "long.parquet"),
            OutputSpec::new("long_md", "long.md"),
        ];
        if let Ok(p) = serde_json::from_value::<SummarizeParams>(params.clone()) {
            for m in p.plotted() {
                outs.push(OutputSpec::new(format!("box_{m}"), format!("box_{m}.png")));
                outs.push(OutputSpec::new(
                    format!("box_{m}_svg"),
                    format!("box_{m}.svg"),
                ));
            }
        }
        outs
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::many("tables")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let params: SummarizeParams = ctx.params_as()?;
        let mut tables = Vec::new();
        for path in ctx.inputs("tables")? {
            let t = Table::read_parquet(path).map_err(|e| StageError::new(e.to_string()))?;
            tables.push((path.display().to_string(), t));
        }
        let (table, boxes) = summarize(&tables, &params)?;
        let long = long_table(&tables, &params).map_err(|e| StageError::new(e.to_string()))?;
        long.write_parquet(ctx.output("long")?)
            .map_err(|e| StageError::new(e.to_string()))?;
        long.write_markdown(ctx.output("long_md")?)
            .map_err(|e| StageError::new(e.to_string()))?;
        let out = ctx.output("table")?.to_path_buf();
        table
            .write_parquet(&out)
            .map_err(|e| StageError::new(e.to_string()))?;
        let md = ctx.output("table_md")?.to_path_buf();
        table
            .write_markdown(&md)
            .map_err(|e| StageError::new(e.to_string()))?;
        for (m, panels) in boxes {
            let dir = ctx.scratch_dir().to_path_buf();
            let mut title = if params.title.is_empty() {
                m.clone()
            } else {
                format!("{}: {m}", params.title)
            };
            if let Some(by) = params.marks.get(&m) {
                title.push_str(&format!(" (black bar: {by})"));
            }
            let stem = dir.join(format!("box_{m}"));
            let paths = match panels.as_slice() {
                [one] if params.panels_by.is_none() => box_plot(&stem, &title, &m, &one.groups),
                _ => box_panels(&stem, &title, &m, &panels),
            }
            .map_err(|e| StageError::new(e.to_string()))?;
            ctx.place_output(&format!("box_{m}"), &paths.png)?;
            ctx.place_output(&format!("box_{m}_svg"), &paths.svg)?;
        }
        ctx.record("n_groups", Value::from(table.n_rows()));
        Ok(())
    }
}

/// The tidy long table of every input row and metric: `source` (the input's results
/// directory), `model` (the `group_by` values joined by `/`), `seed` (−1 when absent),
/// `metric`, `value`, `data_source` (`unknown` when absent).
pub fn long_table(
    tables: &[(String, Table)],
    params: &SummarizeParams,
) -> Result<Table, crate::pipeline::table::TableError> {
    let (mut source, mut model, mut seed, mut metric, mut value, mut data_source) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (path, t) in tables {
        let dir = std::path::Path::new(path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let dir = dir
            .split_once("results/")
            .map_or(dir.clone(), |(_, rest)| rest.to_string());
        for r in 0..t.n_rows() {
            let name: Vec<String> = params
                .group_by
                .iter()
                .map(|g| t.column(g).map(|c| c.text(r)).unwrap_or_default())
                .collect();
            // A seed given as a label is text ("3"); read it as a number too.
            let s = t
                .column("seed")
                .and_then(|c| c.number_or_text(r))
                .map_or(-1, |x| x as i64);
            let ds = t
                .column("data_source")
                .map_or_else(|| "unknown".to_string(), |c| c.text(r));
            for m in &params.metrics {
                source.push(dir.clone());
                model.push(name.join("/"));
                seed.push(s);
                metric.push(m.clone());
                value.push(t.column(m).and_then(|c| c.number(r)).unwrap_or(f64::NAN));
                data_source.push(ds.clone());
            }
        }
    }
    Table::new()
        .with("source", source)?
        .with("model", model)?
        .with("seed", seed)?
        .with("metric", metric)?
        .with("value", value)?
        .with("data_source", data_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_has_a_row_per_run_and_metric() {
        let t = Table::new()
            .with("variant", vec!["r3", "r3"])
            .unwrap()
            .with("seed", vec![1i64, 2])
            .unwrap()
            .with("d_stsp", vec![0.5, 0.7])
            .unwrap()
            .with("d_h", vec![0.1, 0.2])
            .unwrap();
        let params = SummarizeParams {
            group_by: vec!["variant".into()],
            metrics: vec!["d_stsp".into(), "d_h".into()],
            carry: vec![],
            keys: BTreeMap::new(),
            statistic: Statistic::MedianMad,
            title: String::new(),
            panels_by: None,
            marks: BTreeMap::new(),
        };
        let long = long_table(&[("x/results/eeg/evaluate/m.parquet".into(), t)], &params).unwrap();
        assert_eq!(long.n_rows(), 4);
        assert_eq!(long.column("source").unwrap().text(0), "eeg/evaluate");
        assert_eq!(long.column("metric").unwrap().text(1), "d_h");
        assert_eq!(long.column("value").unwrap().number(3), Some(0.2));
        assert_eq!(long.column("seed").unwrap().number(2), Some(2.0));
        assert_eq!(long.column("data_source").unwrap().text(0), "unknown");
    }

    #[test]
    fn long_table_reads_a_seed_label_given_as_text() {
        // Stage labels (e.g. fixed_points' `labels: {seed: "${seed}"}`) are text columns.
        let t = Table::new()
            .with("model", vec!["r3", "r3", "r3"])
            .unwrap()
            .with("seed", vec!["7", " 12", "none"])
            .unwrap()
            .with("n_stable", vec![4i64, 5, 6])
            .unwrap();
        let params = SummarizeParams {
            group_by: vec!["model".into()],
            metrics: vec!["n_stable".into()],
            carry: vec![],
            keys: BTreeMap::new(),
            statistic: Statistic::MedianMad,
            title: String::new(),
            panels_by: None,
            marks: BTreeMap::new(),
        };
        let long =
            long_table(&[("results/eeg/fixed_points/s.parquet".into(), t)], &params).unwrap();
        let seed = long.column("seed").unwrap();
        assert_eq!(seed.number(0), Some(7.0));
        assert_eq!(seed.number(1), Some(12.0));
        assert_eq!(seed.number(2), Some(-1.0));
    }

    fn run_table(variant: &str, seed: i64, d: f64) -> Table {
        Table::new()
            .with("variant", vec![variant])
            .unwrap()
            .with("seed", vec![seed])
            .unwrap()
            .with("dim", vec![3i64])
            .unwrap()
            .with("d_stsp", vec![d])
            .unwrap()
    }

    #[test]
    fn median_and_mad_per_group() {
        let tables: Vec<(String, Table)> = [(1, 1.0), (2, 2.0), (3, 4.0), (4, f64::NAN)]
            .iter()
            .map(|&(s, d)| (format!("t{s}"), run_table("r3", s, d)))
            .chain(std::iter::once((
                "u".to_string(),
                run_table("full30", 9, 7.0),
            )))
            .collect();
        let params = SummarizeParams {
            group_by: vec!["variant".into()],
            metrics: vec!["d_stsp".into()],
            carry: vec!["dim".into()],
            keys: BTreeMap::from([("dataset".to_string(), "eeg".to_string())]),
            statistic: Statistic::MedianMad,
            title: String::new(),
            panels_by: None,
            marks: BTreeMap::new(),
        };
        let (t, boxes) = summarize(&tables, &params).unwrap();
        assert_eq!(t.n_rows(), 2);
        // r3: finite values 1, 2, 4 → median 2, |dev| = 1, 0, 2 → MAD 1; one NaN counted.
        assert_eq!(t.column("d_stsp").unwrap().number(0), Some(2.0));
        assert_eq!(t.column("d_stsp_err").unwrap().number(0), Some(1.0));
        assert_eq!(t.column("d_stsp_n_nan").unwrap().number(0), Some(1.0));
        assert_eq!(t.column("n_runs").unwrap().number(0), Some(4.0));
        assert_eq!(t.column("dataset").unwrap().text(1), "eeg");
        assert_eq!(boxes[0].1.len(), 1, "one untitled panel without panels_by");
        assert_eq!(boxes[0].1[0].groups.len(), 2);
        let bad = SummarizeParams {
            metrics: vec!["nope".into()],
            ..params.clone()
        };
        let e = summarize(&tables, &bad).unwrap_err().to_string();
        assert!(e.contains("no column `nope`"), "{e}");
        let mut mixed = tables.clone();
        mixed.push((
            "m".into(),
            Table::new()
                .with("variant", vec!["r3"])
                .unwrap()
                .with("seed", vec![5i64])
                .unwrap()
                .with("dim", vec![4i64])
                .unwrap()
                .with("d_stsp", vec![1.0])
                .unwrap(),
        ));
        let e = summarize(&mixed, &params).unwrap_err().to_string();
        assert!(e.contains("differs within group"), "{e}");
    }

    /// `panels_by` splits the box plots into a panel per value of that column, the boxes
    /// labelled by the other group columns; a column outside `group_by` is refused by name.
    #[test]
    fn panels_by_makes_a_panel_per_value() {
        let row = |setup: &str, metric: &str, v: f64| {
            Table::new()
                .with("setup", vec![setup])
                .unwrap()
                .with("metric", vec![metric])
                .unwrap()
                .with("value", vec![v])
                .unwrap()
        };
        let tables: Vec<(String, Table)> = [
            ("osc", "period", 50.0),
            ("osc", "noise", 0.2),
            ("reach", "period", 60.0),
            ("reach", "noise", 0.05),
            ("osc", "period", 52.0),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(s, m, v))| (format!("t{i}"), row(s, m, v)))
        .collect();
        let params = SummarizeParams {
            group_by: vec!["setup".into(), "metric".into()],
            metrics: vec!["value".into()],
            carry: vec![],
            keys: BTreeMap::new(),
            statistic: Statistic::MedianMad,
            title: String::new(),
            panels_by: Some("metric".into()),
            marks: BTreeMap::new(),
        };
        let (t, boxes) = summarize(&tables, &params).unwrap();
        assert_eq!(t.n_rows(), 4);
        let panels = &boxes[0].1;
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["period", "noise"]);
        let labels: Vec<&str> = panels[0].groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["osc", "reach"]);
        assert_eq!(panels[0].groups[0].values, [50.0, 52.0]);
        // Numbers are labelled with their column.
        let numbered: Vec<(String, Table)> = [(0.05, 1i64, 0.1), (0.2, 64, 0.3)]
            .iter()
            .map(|&(rz, k, v)| {
                let t = Table::new()
                    .with("rz", vec![rz.to_string()])
                    .unwrap()
                    .with("k", vec![k])
                    .unwrap()
                    .with("metric", vec!["noise"])
                    .unwrap()
                    .with("value", vec![v])
                    .unwrap();
                (format!("rz{rz}"), t)
            })
            .collect();
        let by_rz_k = SummarizeParams {
            group_by: vec!["rz".into(), "k".into(), "metric".into()],
            ..params.clone()
        };
        let (_, boxes) = summarize(&numbered, &by_rz_k).unwrap();
        let labels: Vec<&str> = boxes[0].1[0]
            .groups
            .iter()
            .map(|g| g.label.as_str())
            .collect();
        assert_eq!(labels, ["rz=0.05 k=1", "rz=0.2 k=64"]);
        let stage = SummarizeStage;
        let value = |panels_by: &str| {
            serde_json::json!({
                "group_by": ["setup", "metric"], "metrics": ["value"], "panels_by": panels_by
            })
        };
        assert!(stage.check_params(&value("metric")).is_ok());
        let e = stage.check_params(&value("seed")).unwrap_err().to_string();
        assert!(
            e.contains("panels_by") && e.contains("not one of group_by"),
            "{e}"
        );
        let e = summarize(
            &tables,
            &SummarizeParams {
                panels_by: Some("seed".into()),
                ..params
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("panels_by `seed`"), "{e}");
    }

    /// `marks: {student: teacher}`: the student's boxes carry the group's teacher median, the
    /// teacher gets no box plot of its own (nor an output), and the table keeps both; a mark
    /// naming no metric, or a marked metric drawn as a mark, is an error naming `marks`.
    #[test]
    fn marks_put_one_metric_on_another_s_boxes() {
        let row = |setup: &str, student: f64, teacher: f64| {
            Table::new()
                .with("setup", vec![setup])
                .unwrap()
                .with("student", vec![student])
                .unwrap()
                .with("teacher", vec![teacher])
                .unwrap()
        };
        let tables: Vec<(String, Table)> = [
            ("osc", 0.19, 0.2),
            ("osc", 0.21, 0.2),
            ("osc", 0.25, 0.2),
            ("rdm", 0.06, 0.05),
            ("rdm", 0.07, f64::NAN),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(s, st, te))| (format!("t{i}"), row(s, st, te)))
        .collect();
        let params = SummarizeParams {
            group_by: vec!["setup".into()],
            metrics: vec!["student".into(), "teacher".into()],
            carry: vec![],
            keys: BTreeMap::new(),
            statistic: Statistic::MedianMad,
            title: String::new(),
            panels_by: None,
            marks: BTreeMap::from([("student".to_string(), "teacher".to_string())]),
        };
        let (t, boxes) = summarize(&tables, &params).unwrap();
        assert!(t.column("teacher").is_some() && t.column("student").is_some());
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].0, "student");
        let groups = &boxes[0].1[0].groups;
        assert_eq!(groups[0].values, [0.19, 0.21, 0.25]);
        assert_eq!(groups[0].mark, Some(0.2));
        // The median of the finite teacher values.
        assert_eq!(groups[1].mark, Some(0.05));
        let stage = SummarizeStage;
        let v = serde_json::to_value(&params).unwrap();
        let outs: Vec<String> = stage.outputs(&v).into_iter().map(|o| o.name).collect();
        assert!(outs.contains(&"box_student".to_string()), "{outs:?}");
        assert!(
            !outs.iter().any(|o| o.starts_with("box_teacher")),
            "{outs:?}"
        );
        assert!(stage.check_params(&v).is_ok());
        let with_marks = |marks: serde_json::Value| {
            serde_json::json!({
                "group_by": ["setup"], "metrics": ["student", "teacher"], "marks": marks
            })
        };
        for bad in [
            serde_json::json!({"student": "seed"}),
            serde_json::json!({"students": "teacher"}),
            serde_json::json!({"student": "teacher", "teacher": "student"}),
        ] {
            let e = stage
                .check_params(&with_marks(bad.clone()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("marks"), "{bad}: {e}");
        }
        let e = summarize(
            &tables,
            &SummarizeParams {
                marks: BTreeMap::from([("student".to_string(), "seed".to_string())]),
                ..params
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("params.marks") && e.contains("`seed`"), "{e}");
    }
}
