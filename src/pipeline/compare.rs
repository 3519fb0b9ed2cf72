//! `compare A B`: two results tables side by side, with the difference, the tolerance used and
//! a verdict per number (`match`, `within tolerance`, `differs`).
//!
//! Either side is a Parquet table or a *reference table*: a YAML file (`datasets/<name>.yaml`,
//! found by name, e.g. `paper`) holding published numbers:
//!
//! ```yaml
//! description: Pals et al. 2024, Table 1
//! rows:
//!   - {dataset: eeg, model: lowrank-smc, d_stsp: 0.12, d_h: {value: 0.05, err: 0.01}}
//!   - {dataset: hpc, model: lowrank-smc, d_stsp: 0.31}
//! ```
//!
//! Strings (and booleans) in a row are key columns; numbers are values; `{value, err}` is a
//! value with an error bar. In a Parquet table, string/bool columns are keys, numeric columns
//! values, and a numeric column `<x>_err` is the error bar of `<x>`. Rows are joined on the key
//! columns the two sides share.
//!
//! Verdict for values `a` (left) and `b` (right): `match` when equal to 1e-12 relative;
//! `within tolerance` when `|a − b| ≤ max(rtol·|b|, atol, √(err_a² + err_b²))`; else `differs`.
//!
//! A reference value may instead be a *target*: `{max: x}` (pass when a ≤ x), `{min: x}`
//! (a ≥ x) or `{abs_max: x}` (|a| ≤ x); its verdict is `pass` or `FAIL` (NaN fails). This is
//! how `datasets/teacher_student_targets.yaml` states the teacher–student bars.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::table::{format_f64, Column, Table};

/// Tolerances for a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Relative to the right-hand value.
    pub rtol: f64,
    /// Absolute.
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            rtol: 0.05,
            atol: 0.0,
        }
    }
}

/// Rows of keys and values, from either kind of source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyedTable {
    /// Where it came from (for headers).
    pub label: String,
    /// Key columns, in order.
    pub key_columns: Vec<String>,
    /// Value columns, in order.
    pub value_columns: Vec<String>,
    /// The rows.
    pub rows: Vec<KeyedRow>,
}

/// One row: key texts and values with optional error bars.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyedRow {
    /// Key column → text.
    pub keys: BTreeMap<String, String>,
    /// Value column → (value, error bar).
    pub values: BTreeMap<String, (f64, Option<f64>)>,
    /// Value column → a target the other side's value must meet (reference tables only).
    pub rules: BTreeMap<String, Rule>,
}

/// A target for a value (`{max: x}`, `{min: x}`, `{abs_max: x}` in a reference table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// value ≤ x.
    Max(f64),
    /// value ≥ x.
    Min(f64),
    /// |value| ≤ x.
    AbsMax(f64),
}

impl Rule {
    /// Whether `v` meets the target (NaN never does).
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Rule::Max(x) => v <= x,
            Rule::Min(x) => v >= x,
            Rule::AbsMax(x) => v.abs() <= x,
        }
    }

    /// The bound.
    pub fn limit(&self) -> f64 {
        match *self {
            Rule::Max(x) | Rule::Min(x) | Rule::AbsMax(x) => x,
        }
    }

    /// `≤ 0.1`, `≥ 0.9`, `|·| ≤ 0.2`.
    pub fn text(&self) -> String {
        match *self {
            Rule::Max(x) => format!("≤ {}", format_f64(x)),
            Rule::Min(x) => format!("≥ {}", format_f64(x)),
            Rule::AbsMax(x) => format!("|·| ≤ {}", format_f64(x)),
        }
    }
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The argument names nothing readable.
    #[error("cannot find table `{0}` (hint: give a .parquet file, a reference .yaml file, or the name of a reference table in datasets/, e.g. `paper`)")]
    NotFound(String),
    /// The table file is bad.
    #[error(transparent)]
    Table(#[from] super::table::TableError),
    /// The reference YAML is bad.
    #[error("{path}: {field}: {message}")]
    Reference {
        /// File.
        path: PathBuf,
        /// Field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Nothing to join on.
    #[error("the tables share no key column and have different row counts ({left} vs {right}) (hint: both need a string column such as `dataset` to join on)")]
    NoJoin {
        /// Left rows.
        left: usize,
        /// Right rows.
        right: usize,
    },
}

/// A reference table file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source: Option<String>,
    rows: Vec<IndexMap<String, Value>>,
}

impl KeyedTable {
    /// From a results table.
    pub fn from_table(table: &Table, label: &str) -> Self {
        let mut keyed = KeyedTable {
            label: label.to_string(),
            ..Default::default()
        };
        let names: BTreeSet<&str> = table.names().collect();
        for (name, column) in table.columns() {
            match column {
                Column::Str(_) | Column::Bool(_) => keyed.key_columns.push(name.to_string()),
                Column::F64(_) | Column::I64(_) => {
                    let is_error_bar = name
                        .strip_suffix("_err")
                        .map(|base| names.contains(base))
                        .unwrap_or(false);
                    if !is_error_bar {
                        keyed.value_columns.push(name.to_string());
                    }
                }
            }
        }
        for row in 0..table.n_rows() {
            let mut r = KeyedRow::default();
            for key in &keyed.key_columns {
                if let Some(c) = table.column(key) {
                    r.keys.insert(key.clone(), c.text(row));
                }
            }
            for value in &keyed.value_columns {
                let v = table.column(value).and_then(|c| c.number(row));
                let err = table
                    .column(&format!("{value}_err"))
                    .and_then(|c| c.number(row));
                if let Some(v) = v {
                    r.values.insert(value.clone(), (v, err));
                }
            }
            keyed.rows.push(r);
        }
        keyed
    }

    /// From a reference-table YAML file.
    pub fn from_reference(path: &Path, label: &str) -> Result<Self, CompareError> {
        let text =
            std::fs::read_to_string(path).map_err(|_| CompareError::NotFound(label.into()))?;
        let bad = |field: String, message: String| CompareError::Reference {
            path: path.to_path_buf(),
            field,
            message,
        };
        let parsed: ReferenceFile =
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(&text))
                .map_err(|e| bad(e.path().to_string(), e.into_inner().to_string()))?;
        let _ = (&parsed.description, &parsed.source);
        let mut keyed = KeyedTable {
            label: label.to_string(),
            ..Default::default()
        };
        for (i, row) in parsed.rows.iter().enumerate() {
            let mut r = KeyedRow::default();
            for (name, value) in row {
                let field = format!("rows[{i}].{name}");
                match value {
                    Value::String(s) => {
                        r.keys.insert(name.clone(), s.clone());
                        if !keyed.key_columns.contains(name) {
                            keyed.key_columns.push(name.clone());
                        }
                    }
                    Value::Bool(b) => {
                        r.keys.insert(name.clone(), b.to_string());
                        if !keyed.key_columns.contains(name) {
                            keyed.key_columns.push(name.clone());
                        }
                    }
                    Value::Number(n) => {
                        r.values
                            .insert(name.clone(), (n.as_f64().unwrap_or(f64::NAN), None));
                        if !keyed.value_columns.contains(name) {
                            keyed.value_columns.push(name.clone());
                        }
                    }
                    Value::Object(map) => {
                        let number = |k: &str| map.get(k).and_then(Value::as_f64);
                        let rule = match map.len() {
                            1 => number("max")
                                .map(Rule::Max)
                                .or_else(|| number("min").map(Rule::Min))
                                .or_else(|| number("abs_max").map(Rule::AbsMax)),
                            _ => None,
                        };
                        let value = number("value");
                        let err = number("err");
                        let unknown = map.keys().find(|k| *k != "value" && *k != "err");
                        match (rule, value, unknown) {
                            (Some(rule), _, _) => {
                                r.rules.insert(name.clone(), rule);
                            }
                            (None, Some(v), None) => {
                                r.values.insert(name.clone(), (v, err));
                            }
                            _ => {
                                return Err(bad(
                                    field,
                                    "expected `{value: <number>, err: <number>}` or a target \
                                     `{max: <number>}`, `{min: <number>}`, `{abs_max: <number>}`"
                                        .into(),
                                ))
                            }
                        }
                        if !keyed.value_columns.contains(name) {
                            keyed.value_columns.push(name.clone());
                        }
                    }
                    _ => {
                        return Err(bad(
                            field,
                            "expected a string (key), a number, or {value, err}".into(),
                        ))
                    }
                }
            }
            keyed.rows.push(r);
        }
        Ok(keyed)
    }
}

/// Load a side of a comparison: `.parquet`, a reference `.yaml`, or a reference name looked up
/// as `datasets/<name>.yaml` under `root`.
pub fn load_side(arg: &str, root: &Path) -> Result<KeyedTable, CompareError> {
    let path = Path::new(arg);
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match extension {
        "parquet" => {
            if !path.is_file() {
                return Err(CompareError::NotFound(arg.into()));
            }
            let table = Table::read_parquet(path)?;
            Ok(KeyedTable::from_table(&table, arg))
        }
        "yaml" | "yml" => KeyedTable::from_reference(path, arg),
        _ => {
            let candidate = root.join("datasets").join(format!("{arg}.yaml"));
            if candidate.is_file() {
                KeyedTable::from_reference(&candidate, arg)
            } else {
                Err(CompareError::NotFound(arg.into()))
            }
        }
    }
}

/// One compared number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedValue {
    /// Join keys of the row.
    pub keys: BTreeMap<String, String>,
    /// Value column.
    pub column: String,
    /// Left value.
    pub left: f64,
    /// Right value.
    pub right: f64,
    /// left − right.
    pub difference: f64,
    /// The tolerance applied.
    pub tolerance: f64,
    /// `match`, `within tolerance` or `differs`; `pass` or `FAIL` against a target.
    pub verdict: &'static str,
    /// The target the left value was checked against (then `right` is its bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Left label.
    pub left: String,
    /// Right label.
    pub right: String,
    /// Columns joined on.
    pub join_on: Vec<String>,
    /// Tolerances used.
    pub tolerance: Tolerance,
    /// Every compared number.
    pub values: Vec<ComparedValue>,
    /// Rows of the left side with no partner (keys rendered).
    pub only_left: Vec<String>,
    /// Rows of the right side with no partner.
    pub only_right: Vec<String>,
    /// The right side states targets (`{max|min|abs_max: x}`): rows of the left side without a
    /// target are then expected and only counted.
    pub targets: bool,
}

fn verdict(
    a: f64,
    b: f64,
    err_a: Option<f64>,
    err_b: Option<f64>,
    tol: &Tolerance,
) -> (f64, &'static str) {
    let combined = (err_a.unwrap_or(0.0).powi(2) + err_b.unwrap_or(0.0).powi(2)).sqrt();
    let tolerance = (tol.rtol * b.abs()).max(tol.atol).max(combined);
    if a.is_nan() || b.is_nan() {
        return (
            tolerance,
            if a.is_nan() && b.is_nan() {
                "match"
            } else {
                "differs"
            },
        );
    }
    let diff = (a - b).abs();
    let verdict = if diff <= 1e-12 * a.abs().max(b.abs()) {
        "match"
    } else if diff <= tolerance {
        "within tolerance"
    } else {
        "differs"
    };
    (tolerance, verdict)
}

fn render_keys(keys: &BTreeMap<String, String>) -> String {
    keys.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compare `left` with `right`.
pub fn compare(
    left: &KeyedTable,
    right: &KeyedTable,
    tolerance: Tolerance,
) -> Result<Comparison, CompareError> {
    let join_on: Vec<String> = left
        .key_columns
        .iter()
        .filter(|k| right.key_columns.contains(k))
        .cloned()
        .collect();
    let project = |row: &KeyedRow| -> BTreeMap<String, String> {
        join_on
            .iter()
            .filter_map(|k| row.keys.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    };
    let pairs: Vec<(Option<&KeyedRow>, Option<&KeyedRow>)> = if join_on.is_empty() {
        if left.rows.len() != right.rows.len() {
            return Err(CompareError::NoJoin {
                left: left.rows.len(),
                right: right.rows.len(),
            });
        }
        left.rows
            .iter()
            .zip(&right.rows)
            .map(|(a, b)| (Some(a), Some(b)))
            .collect()
    } else {
        let mut pairs = Vec::new();
        let mut used = vec![false; right.rows.len()];
        for a in &left.rows {
            let key = project(a);
            match right.rows.iter().position(|b| project(b) == key) {
                Some(j) => {
                    used[j] = true;
                    pairs.push((Some(a), Some(&right.rows[j])));
                }
                None => pairs.push((Some(a), None)),
            }
        }
        for (j, b) in right.rows.iter().enumerate() {
            if !used[j] {
                pairs.push((None, Some(b)));
            }
        }
        pairs
    };
    let mut comparison = Comparison {
        left: left.label.clone(),
        right: right.label.clone(),
        join_on: join_on.clone(),
        tolerance,
        values: vec![],
        only_left: vec![],
        only_right: vec![],
        targets: right.rows.iter().any(|r| !r.rules.is_empty()),
    };
    for (a, b) in pairs {
        match (a, b) {
            (Some(a), Some(b)) => {
                let keys = project(a);
                for column in left
                    .value_columns
                    .iter()
                    .filter(|c| right.value_columns.contains(c))
                {
                    let Some(&(va, ea)) = a.values.get(column) else {
                        continue;
                    };
                    if let Some(rule) = b.rules.get(column) {
                        comparison.values.push(ComparedValue {
                            keys: keys.clone(),
                            column: column.clone(),
                            left: va,
                            right: rule.limit(),
                            difference: va - rule.limit(),
                            tolerance: f64::NAN,
                            verdict: if rule.holds(va) { "pass" } else { "FAIL" },
                            rule: Some(*rule),
                        });
                        continue;
                    }
                    let Some(&(vb, eb)) = b.values.get(column) else {
                        continue;
                    };
                    let (tol, verdict) = verdict(va, vb, ea, eb, &tolerance);
                    comparison.values.push(ComparedValue {
                        keys: keys.clone(),
                        column: column.clone(),
                        left: va,
                        right: vb,
                        difference: va - vb,
                        tolerance: tol,
                        verdict,
                        rule: None,
                    });
                }
            }
            (Some(a), None) => comparison.only_left.push(render_keys(&project(a))),
            (None, Some(b)) => comparison.only_right.push(render_keys(&project(b))),
            (None, None) => {}
        }
    }
    Ok(comparison)
}

impl Comparison {
    /// Counts of (match, within tolerance, differs).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.count("match"),
            self.count("within tolerance"),
            self.count("differs"),
        )
    }

    fn count(&self, verdict: &str) -> usize {
        self.values.iter().filter(|c| c.verdict == verdict).count()
    }

    /// Counts of (pass, FAIL) against targets.
    pub fn target_counts(&self) -> (usize, usize) {
        (self.count("pass"), self.count("FAIL"))
    }

    /// One line in words.
    pub fn summary_line(&self) -> String {
        let (m, w, d) = self.counts();
        let (pass, fail) = self.target_counts();
        let mut line = if pass + fail == self.values.len() && !self.values.is_empty() {
            format!(
                "{} values checked against targets: {pass} pass, {fail} FAIL",
                self.values.len()
            )
        } else {
            format!(
                "{} values compared: {m} match, {w} within tolerance, {d} differ (tolerance: max({} × |right|, {}, combined error bars))",
                self.values.len(),
                self.tolerance.rtol,
                self.tolerance.atol
            )
        };
        if pass + fail > 0 && pass + fail < self.values.len() {
            line.push_str(&format!("; targets: {pass} pass, {fail} FAIL"));
        }
        if self.targets {
            if !self.only_left.is_empty() {
                line.push_str(&format!(
                    "; {} rows of {} have no target",
                    self.only_left.len(),
                    self.left
                ));
            }
            if !self.only_right.is_empty() {
                line.push_str(&format!(
                    "; targets with no row in {} (not checked): {}",
                    self.left,
                    self.only_right.join("; ")
                ));
            }
            return line;
        }
        if !self.only_left.is_empty() {
            line.push_str(&format!(
                "; only in {}: {}",
                self.left,
                self.only_left.join("; ")
            ));
        }
        if !self.only_right.is_empty() {
            line.push_str(&format!(
                "; only in {}: {}",
                self.right,
                self.only_right.join("; ")
            ));
        }
        line
    }

    fn header(&self) -> Vec<String> {
        let mut header = self.join_on.clone();
        header.extend(
            [
                "column",
                &self.left,
                &self.right,
                "difference",
                "tolerance",
                "verdict",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        header
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.values
            .iter()
            .map(|v| {
                let mut row: Vec<String> = self
                    .join_on
                    .iter()
                    .map(|k| v.keys.get(k).cloned().unwrap_or_default())
                    .collect();
                row.push(v.column.clone());
                row.push(format_f64(v.left));
                match &v.rule {
                    Some(rule) => {
                        row.push(rule.text());
                        row.push(String::new());
                        row.push(String::new());
                    }
                    None => {
                        row.push(format_f64(v.right));
                        row.push(format_f64(v.difference));
                        row.push(format_f64(v.tolerance));
                    }
                }
                row.push(v.verdict.to_string());
                row
            })
            .collect()
    }

    /// Markdown table plus the summary line.
    pub fn to_markdown(&self) -> String {
        let header = self.header();
        let mut out = format!("| {} |\n", header.join(" | "));
        let n_keys = self.join_on.len();
        let align: Vec<&str> = (0..header.len())
            .map(|i| {
                if i > n_keys && i < header.len() - 1 {
                    "---:"
                } else {
                    "---"
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", align.join(" | ")));
        for row in self.cells() {
            let row: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push('\n');
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// CSV with a header row.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        for row in std::iter::once(self.header()).chain(self.cells()) {
            let row: Vec<String> = row.iter().map(|c| quote(c)).collect();
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_against_reference() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let reference = dir.path().join("paper.yaml");
        std::fs::write(
            &reference,
            "description: test\nrows:\n  - {dataset: eeg, d: 1.0, e: {value: 2.0, err: 0.5}}\n  - {dataset: hpc, d: 3.0}\n",
        )?;
        let table = Table::new()
            .with("dataset", vec!["eeg", "rat"])?
            .with("d", vec![1.0, 5.0])?
            .with("e", vec![2.4, 0.0])?;
        let left = KeyedTable::from_table(&table, "results.parquet");
        let right = load_side(&reference.to_string_lossy(), dir.path())?;
        let cmp = compare(&left, &right, Tolerance::default())?;
        assert_eq!(cmp.join_on, ["dataset"]);
        let verdicts: Vec<(&str, &str)> = cmp
            .values
            .iter()
            .map(|v| (v.column.as_str(), v.verdict))
            .collect();
        assert_eq!(verdicts, [("d", "match"), ("e", "within tolerance")]);
        assert_eq!(cmp.only_left, ["dataset=rat"]);
        assert_eq!(cmp.only_right, ["dataset=hpc"]);
        assert!(cmp.to_csv().starts_with("dataset,column,results.parquet,"));
        Ok(())
    }

    #[test]
    fn targets_pass_or_fail() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let reference = dir.path().join("targets.yaml");
        std::fs::write(
            &reference,
            "rows:\n  - {setup: a, metric: acf, value: {max: 0.1}}\n  - {setup: a, metric: noise, value: {abs_max: 0.2}}\n  - {setup: a, metric: rate, value: {min: 0.9}}\n  - {setup: b, metric: acf, value: {max: 0.1}}\n",
        )?;
        let table = Table::new()
            .with("setup", vec!["a", "a", "a", "b"])?
            .with("metric", vec!["acf", "noise", "rate", "acf"])?
            .with("value", vec![0.05, -0.25, 0.95, f64::NAN])?
            .with("value_err", vec![0.01, 0.0, 0.0, 0.0])?;
        let left = KeyedTable::from_table(&table, "summary.parquet");
        let right = load_side(&reference.to_string_lossy(), dir.path())?;
        let cmp = compare(&left, &right, Tolerance::default())?;
        let verdicts: Vec<&str> = cmp.values.iter().map(|v| v.verdict).collect();
        assert_eq!(verdicts, ["pass", "FAIL", "pass", "FAIL"]);
        assert_eq!(cmp.target_counts(), (2, 2));
        let md = cmp.to_markdown();
        assert!(md.contains("\\|·\\| ≤ 0.2"), "{md}");
        assert!(
            md.contains("4 values checked against targets: 2 pass, 2 FAIL"),
            "{md}"
        );
        assert!(!md.contains("have no target"), "{md}");
        // A target with two bounds is refused with the field named.
        std::fs::write(
            &reference,
            "rows:\n  - {metric: acf, value: {max: 0.1, min: 0}}\n",
        )?;
        let err = KeyedTable::from_reference(&reference, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows[0].value"), "{err}");
        Ok(())
    }

    #[test]
    fn differs_beyond_tolerance() {
        let (tol, v) = verdict(1.2, 1.0, None, None, &Tolerance::default());
        assert_eq!(v, "differs");
        assert!((tol - 0.05).abs() < 1e-15);
    }

    #[test]
    fn bad_reference_names_the_field() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "rows:\n  - {dataset: eeg, d: [1]}\n")?;
        let err = KeyedTable::from_reference(&path, "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows[0].d"), "{err}");
        Ok(())
    }
}
