//! Step 2 of three (parse → expand → resolve): matrix fan-out, profile overrides and `${axis}`
//! substitution. Profiles change params; the only change of shape they may make is to keep a
//! subset of a matrix axis (`only: {seed: 1..2}`), so a quick run is a subgraph of the paper
//! run with the same stage names and cache keys.
//!
//! A stage with `matrix: {seed: 1..3, variant: [a, b]}` becomes six stages named
//! `name[seed=1,variant=a]` … in row-major order of the axes as written. In params, inputs and
//! output file names, `${seed}` is replaced by the value; a string that is exactly `${seed}`
//! takes the value's type (a number stays a number). Only matrix axes are substituted, so a
//! shell `${HOME}` in a command passes through untouched.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::Value;

use super::config::{ConfigProblem, InputRefs, Origin, RawPipeline, StageDef};
use super::table::label_text;

/// One stage after expansion: concrete name, params with the profile applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandedStage {
    /// Full name, e.g. `eeg.fit[seed=3,variant=a]`.
    pub name: String,
    /// Name as written, e.g. `eeg.fit`.
    pub base: String,
    /// Matrix axis → value as text.
    pub labels: BTreeMap<String, String>,
    /// The stage kind.
    pub kind: String,
    /// Free-text description.
    pub description: Option<String>,
    /// Params, profile merged and substituted, not yet checked by the kind.
    pub params: Value,
    /// Input name → references, substituted.
    pub inputs: IndexMap<String, Vec<String>>,
    /// Output overrides, substituted.
    pub outputs: IndexMap<String, String>,
    /// Where it was defined.
    pub origin: Origin,
}

/// Key of a profile override that restricts matrix axes instead of setting params.
pub const ONLY_KEY: &str = "only";

/// Expand every stage of `raw` under `profile`; collect all problems.
pub fn expand(
    raw: &RawPipeline,
    profile: &str,
    default_profile: &str,
) -> Result<Vec<ExpandedStage>, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let overrides: &[(String, Value, std::path::PathBuf)] = match raw.profiles.get(profile) {
        Some(list) => list,
        None if profile == default_profile => &[],
        None => {
            let mut known: Vec<&str> = raw.profiles.keys().map(String::as_str).collect();
            if !known.contains(&default_profile) {
                known.push(default_profile);
            }
            known.sort_unstable();
            problems.push(ConfigProblem {
                file: raw.file.clone(),
                line: None,
                field: "profiles".into(),
                message: format!(
                    "unknown profile `{profile}` (hint: known profiles are {})",
                    known.join(", ")
                ),
            });
            &[]
        }
    };
    let mut patterns = Vec::new();
    for (pattern, params, file) in overrides {
        match glob::Pattern::new(pattern) {
            Ok(compiled) => patterns.push((compiled, pattern, params, file, false)),
            Err(err) => problems.push(ConfigProblem {
                file: file.clone(),
                line: None,
                field: format!("profiles.{profile}.{pattern}"),
                message: format!("bad stage pattern: {err}"),
            }),
        }
        if !params.is_object() {
            problems.push(ConfigProblem {
                file: file.clone(),
                line: None,
                field: format!("profiles.{profile}.{pattern}"),
                message: "expected a map of params to override".into(),
            });
        }
    }

    let mut stages = Vec::new();
    let mut axis_hits: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (def, origin) in &raw.stages {
        let combos = match matrix_combinations(def, origin) {
            Ok(c) => c,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        // A profile may restrict matrix axes to a subset (`only: {seed: 1..2}`): the quick
        // profile's DAG is then a subgraph of the paper's, with the same stage names and keys.
        let mut restrictions: Vec<(String, Vec<String>)> = Vec::new();
        for (pattern, raw_pattern, over, file, used) in patterns.iter_mut() {
            let Some(only) = over.get(ONLY_KEY) else {
                continue;
            };
            if !pattern.matches(&def.name) {
                continue;
            }
            *used = true;
            let field = format!("profiles.{profile}.{raw_pattern}.{ONLY_KEY}");
            let Some(map) = only.as_object() else {
                problems.push(ConfigProblem {
                    file: file.clone(),
                    line: None,
                    field,
                    message: "expected a map axis → values, e.g. `only: {seed: 1..2}`".into(),
                });
                continue;
            };
            for (axis, spec) in map {
                if !def.matrix.contains_key(axis) {
                    // A glob such as `eeg.*` also matches stages without this axis: skip them;
                    // a pattern whose axis no stage has is reported after the loop.
                    continue;
                }
                axis_hits.insert(format!("{raw_pattern}\u{0}{axis}"));
                match axis_values(spec) {
                    Ok(values) => {
                        restrictions.push((axis.clone(), values.iter().map(label_text).collect()))
                    }
                    Err(msg) => problems.push(ConfigProblem {
                        file: file.clone(),
                        line: None,
                        field: format!("{field}.{axis}"),
                        message: msg,
                    }),
                }
            }
        }
        let combos: Vec<Vec<(String, Value)>> = combos
            .into_iter()
            .filter(|combo| {
                restrictions.iter().all(|(axis, allowed)| {
                    combo
                        .iter()
                        .find(|(a, _)| a == axis)
                        .map(|(_, v)| allowed.contains(&label_text(v)))
                        .unwrap_or(true)
                })
            })
            .collect();
        for combo in combos {
            let name = expanded_name(&def.name, &combo);
            let mut params = def.params.clone();
            for (pattern, _, over, _, used) in patterns.iter_mut() {
                if pattern.matches(&name) || pattern.matches(&def.name) {
                    let mut over = over.clone();
                    if let Some(map) = over.as_object_mut() {
                        map.remove(ONLY_KEY);
                    }
                    merge(&mut params, &over);
                    *used = true;
                }
            }
            let substitute_str = |s: &str| -> String { substitute_text(s, &combo) };
            let params = substitute_value(&params, &combo);
            let inputs = def
                .inputs
                .iter()
                .map(|(k, refs): (&String, &InputRefs)| {
                    (
                        k.clone(),
                        refs.refs().into_iter().map(substitute_str).collect(),
                    )
                })
                .collect();
            let outputs = def
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), substitute_str(v)))
                .collect();
            stages.push(ExpandedStage {
                name,
                base: def.name.clone(),
                labels: combo
                    .iter()
                    .map(|(k, v)| (k.clone(), label_text(v)))
                    .collect(),
                kind: def.kind.clone(),
                description: def.description.clone(),
                params,
                inputs,
                outputs,
                origin: origin.clone(),
            });
        }
    }
    for (_, pattern, over, file, _) in &patterns {
        if let Some(map) = over.get(ONLY_KEY).and_then(Value::as_object) {
            for axis in map.keys() {
                if !axis_hits.contains(&format!("{pattern}\u{0}{axis}")) {
                    problems.push(ConfigProblem {
                        file: (*file).clone(),
                        line: None,
                        field: format!("profiles.{profile}.{pattern}.{ONLY_KEY}.{axis}"),
                        message: format!(
                            "no stage matched by `{pattern}` has a matrix axis `{axis}`"
                        ),
                    });
                }
            }
        }
    }
    for (_, pattern, _, file, used) in &patterns {
        if !used {
            problems.push(ConfigProblem {
                file: (*file).clone(),
                line: None,
                field: format!("profiles.{profile}.{pattern}"),
                message: format!(
                    "`{pattern}` matches no stage (hint: use a stage name as written, e.g. \
                     `eeg.fit`, or a glob such as `*.fit`)"
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(stages)
    } else {
        Err(problems)
    }
}

/// The name of one expansion: `base[axis=value,…]`, or `base` without a matrix.
pub fn expanded_name(base: &str, combo: &[(String, Value)]) -> String {
    if combo.is_empty() {
        return base.to_string();
    }
    let labels: Vec<String> = combo
        .iter()
        .map(|(k, v)| format!("{k}={}", label_text(v)))
        .collect();
    format!("{base}[{}]", labels.join(","))
}

/// All combinations of the matrix axes, row-major in written order.
fn matrix_combinations(
    def: &StageDef,
    origin: &Origin,
) -> Result<Vec<Vec<(String, Value)>>, ConfigProblem> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![vec![]];
    for (axis, spec) in &def.matrix {
        let field = format!("matrix.{axis}");
        if axis.is_empty() || !axis.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(origin.problem(&field, "axis names may use letters, digits and `_` only"));
        }
        let values = axis_values(spec).map_err(|msg| origin.problem(&field, msg))?;
        if values.is_empty() {
            return Err(origin.problem(&field, "empty axis (hint: give at least one value)"));
        }
        let mut seen = std::collections::HashSet::new();
        for v in &values {
            if !seen.insert(label_text(v)) {
                return Err(origin.problem(&field, format!("value `{}` repeated", label_text(v))));
            }
        }
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((axis.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    Ok(combos)
}

/// Values of one axis: a list of scalars, where a string `a..b` is an inclusive integer range.
fn axis_values(spec: &Value) -> Result<Vec<Value>, String> {
    let items: Vec<&Value> = match spec {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut values = Vec::new();
    for item in items {
        match item {
            Value::String(s) if s.contains("..") => {
                let (a, b) = s.split_once("..").unwrap_or((s, ""));
                let (Ok(a), Ok(b)) = (a.trim().parse::<i64>(), b.trim().parse::<i64>()) else {
                    return Err(format!(
                        "bad range `{s}` (hint: write an inclusive integer range like `1..20`)"
                    ));
                };
                if b < a {
                    return Err(format!("empty range `{s}`"));
                }
                if b - a >= 100_000 {
                    return Err(format!("range `{s}` is too long (at most 100000 values)"));
                }
                values.extend((a..=b).map(Value::from));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => values.push(item.clone()),
            _ => {
                return Err(
                    "matrix values must be scalars (numbers, strings, booleans) or \
                            a range `a..b`"
                        .into(),
                )
            }
        }
    }
    Ok(values)
}

/// Deep-merge `over` into `base` (maps merge key by key; anything else replaces).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

fn substitute_value(value: &Value, combo: &[(String, Value)]) -> Value {
    match value {
        Value::String(s) => {
            for (axis, v) in combo {
                if s == &format!("${{{axis}}}") {
                    return v.clone();
                }
            }
            Value::String(substitute_text(s, combo))
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute_value(v, combo)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute_value(v, combo)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_text(text: &str, combo: &[(String, Value)]) -> String {
    let mut out = text.to_string();
    for (axis, v) in combo {
        out = out.replace(&format!("${{{axis}}}"), &label_text(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::config::PipelineFile;
    use std::path::PathBuf;

    fn raw(yaml: &str) -> RawPipeline {
        let parsed: PipelineFile =
            crate::pipeline::config::parse_yaml(yaml, std::path::Path::new("p.yaml"))
                .unwrap_or_default();
        let mut raw = RawPipeline {
            root: PathBuf::from("."),
            file: PathBuf::from("p.yaml"),
            ..Default::default()
        };
        for (index, s) in parsed.stages.into_iter().enumerate() {
            raw.stages.push((
                s,
                Origin {
                    file: PathBuf::from("p.yaml"),
                    line: None,
                    index,
                },
            ));
        }
        for (name, overrides) in parsed.profiles {
            raw.profiles.insert(
                name,
                overrides
                    .into_iter()
                    .map(|(k, v)| (k, v, PathBuf::from("p.yaml")))
                    .collect(),
            );
        }
        raw
    }

    #[test]
    fn matrix_expands_row_major_with_typed_substitution() {
        let raw = raw(r#"
stages:
  - name: eeg.fit
    kind: fit
    matrix: {seed: [1..2], variant: [a, b]}
    params: {seed: "${seed}", tag: "v${variant}-s${seed}", home: "${HOME}"}
    inputs: {data: "eeg.bin[variant=${variant}]:binned"}
"#);
        let stages = expand(&raw, "paper", "paper").unwrap_or_default();
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "eeg.fit[seed=1,variant=a]",
                "eeg.fit[seed=1,variant=b]",
                "eeg.fit[seed=2,variant=a]",
                "eeg.fit[seed=2,variant=b]"
            ]
        );
        assert_eq!(stages[3].params["seed"], Value::from(2));
        assert_eq!(stages[3].params["tag"], Value::from("vb-s2"));
        assert_eq!(stages[3].params["home"], Value::from("${HOME}"));
        assert_eq!(stages[3].inputs["data"], ["eeg.bin[variant=b]:binned"]);
        assert_eq!(stages[3].labels["variant"], "b");
    }

    #[test]
    fn profile_overrides_params_not_shape() {
        let yaml = r#"
profiles:
  quick: {"*.fit": {epochs: 2, opt: {lr: 0.5}}}
stages:
  - name: eeg.fit
    kind: fit
    matrix: {seed: [1, 2]}
    params: {epochs: 100, opt: {lr: 0.1, beta: 0.9}}
"#;
        let paper = expand(&raw(yaml), "paper", "paper").unwrap_or_default();
        let quick = expand(&raw(yaml), "quick", "paper").unwrap_or_default();
        assert_eq!(paper.len(), quick.len());
        assert_eq!(paper[0].params["epochs"], Value::from(100));
        assert_eq!(quick[0].params["epochs"], Value::from(2));
        assert_eq!(
            quick[1].params["opt"],
            serde_json::json!({"lr": 0.5, "beta": 0.9})
        );
    }

    #[test]
    fn profile_only_keeps_a_subset_of_an_axis() {
        let yaml = r#"
profiles:
  quick: {"eeg.*": {only: {seed: 1..2}, epochs: 2}}
stages:
  - name: eeg.fit
    kind: fit
    matrix: {seed: 1..20}
    params: {seed: "${seed}", epochs: 100}
"#;
        let paper = expand(&raw(yaml), "paper", "paper").unwrap_or_default();
        let quick = expand(&raw(yaml), "quick", "paper").unwrap_or_default();
        assert_eq!(paper.len(), 20);
        let names: Vec<&str> = quick.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["eeg.fit[seed=1]", "eeg.fit[seed=2]"]);
        assert_eq!(quick[0].params["epochs"], Value::from(2));
        assert!(quick[0].params.get("only").is_none());
        let bad = r#"
profiles:
  quick: {"eeg.fit": {only: {variant: [a]}}}
stages:
  - {name: eeg.fit, kind: fit, matrix: {seed: 1..2}, params: {}}
"#;
        let problems = expand(&raw(bad), "quick", "paper").unwrap_err();
        assert!(
            problems[0].message.contains("has a matrix axis `variant`"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let raw = raw("profiles: {quick: {}}\nstages: []\n");
        let problems = expand(&raw, "fast", "paper").unwrap_err();
        assert!(problems[0]
            .message
            .contains("unknown profile `fast` (hint: known profiles are paper, quick)"));
    }

    #[test]
    fn bad_ranges_are_reported() {
        let raw = raw("stages:\n  - {name: a, kind: k, matrix: {seed: 5..x}}\n");
        let problems = expand(&raw, "paper", "paper").unwrap_err();
        assert_eq!(problems[0].field, "stages[0].matrix.seed");
        assert!(problems[0].message.contains("bad range"));
    }
}
