//! Step 1 of three (parse → expand → resolve): the YAML files as written, nothing resolved.
//!
//! ```yaml
//! # pipeline.yaml
//! include: [stages/*.yaml]          # globs, relative to this file; each adds stages/profiles
//! profiles:                         # named param overrides; `--profile`, default `paper`
//!   quick:
//!     "*.fit": {epochs: 2}          # stage name or glob → params merged over the stage's
//! stages:
//!   - name: eeg.fit
//!     kind: fit
//!     matrix: {seed: 1..20, variant: [a, b, c]}   # one stage per combination
//!     params: {seed: "${seed}", variant: "${variant}"}
//!     inputs: {data: "eeg.bin:binned"}            # stage:output, dataset:<id>, file:<path>
//!     outputs: {model: model.h5}                  # optional: rename or (command) add outputs
//! ```
//!
//! Every struct denies unknown keys; parse errors carry the file, the field path and the line.

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

/// One problem in the configuration: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// The file (as given, relative to the project root when possible).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path, e.g. `stages[2].inputs.model` (empty for the whole file).
    pub field: String,
    /// What is wrong, ending with a `(hint: …)` where one helps.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in the configuration (collected, so one typo does not hide the others).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        let n = self.problems.len();
        write!(
            f,
            "{n} configuration problem{}",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl ConfigError {
    /// A single problem.
    pub fn one(
        file: impl Into<PathBuf>,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            problems: vec![ConfigProblem {
                file: file.into(),
                line,
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// A pipeline or included stage file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Globs of stage files to include (only in the top-level file).
    #[serde(default)]
    pub include: Vec<String>,
    /// Profile name → (stage name or glob → params to merge over the stage's params).
    #[serde(default)]
    pub profiles: IndexMap<String, IndexMap<String, Value>>,
    /// Stage definitions.
    #[serde(default)]
    pub stages: Vec<StageDef>,
}

/// One stage as written (before matrix expansion).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageDef {
    /// Stage name, e.g. `eeg.fit`; expansions get `[axis=value,…]` appended.
    pub name: String,
    /// The stage kind (`fit`, `command`, …).
    pub kind: String,
    /// One line for `dag`/`show`.
    #[serde(default)]
    pub description: Option<String>,
    /// Params handed to the kind (checked by it).
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Input name → reference(s): `stage:output`, `stage[*]:output`, `dataset:<id>`, `file:<path>`.
    #[serde(default)]
    pub inputs: IndexMap<String, InputRefs>,
    /// Output name → file name, overriding or (for `command`) adding to the kind's outputs.
    #[serde(default)]
    pub outputs: IndexMap<String, String>,
    /// Axis → values: one stage per combination (`1..20` is an inclusive integer range).
    #[serde(default)]
    pub matrix: IndexMap<String, Value>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One reference or a list of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum InputRefs {
    /// A single reference.
    One(String),
    /// Several references, concatenated in order.
    Many(Vec<String>),
}

impl InputRefs {
    /// The references in order.
    pub fn refs(&self) -> Vec<&str> {
        match self {
            InputRefs::One(one) => vec![one.as_str()],
            InputRefs::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// Where a stage definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// File, relative to the project root when inside it.
    pub file: PathBuf,
    /// 1-based line of the stage's `name:`, when found.
    pub line: Option<usize>,
    /// Index in the file's `stages:` list.
    pub index: usize,
}

impl Origin {
    /// A problem located at this stage's definition, at `field` inside it (`inputs.model`).
    pub fn problem(&self, field: &str, message: impl Into<String>) -> ConfigProblem {
        let field = if field.is_empty() {
            format!("stages[{}]", self.index)
        } else {
            format!("stages[{}].{field}", self.index)
        };
        ConfigProblem {
            file: self.file.clone(),
            line: self.line,
            field,
            message: message.into(),
        }
    }
}

/// All the files of a pipeline, read and parsed.
#[derive(Debug, Clone, Default)]
pub struct RawPipeline {
    /// Project root: the directory of the top-level file.
    pub root: PathBuf,
    /// The top-level file.
    pub file: PathBuf,
    /// Stage definitions with their origin, in include order (top-level file first).
    pub stages: Vec<(StageDef, Origin)>,
    /// Profiles with the file each override came from.
    pub profiles: IndexMap<String, Vec<(String, Value, PathBuf)>>,
}

/// Parse YAML `text` of `file` into `T`, with the field path and line in the error.
pub fn parse_yaml<T: for<'de> Deserialize<'de>>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigProblem> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // serde_path_to_error writes `?` for a position it could not name.
        let field = err.path().to_string();
        let field = field
            .trim_end_matches(".?")
            .trim_end_matches('?')
            .to_string();
        let inner = err.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = inner.to_string();
        // serde_yaml_ng starts with the path ("stages[0]: …"); the field is shown already.
        if let Some((head, tail)) = message.split_once(": ") {
            if !head.contains([' ', '`']) {
                message = tail.to_string();
            }
        }
        // serde_yaml_ng appends " at line L column C"; the line is shown in front already.
        if let Some(pos) = message.find(" at line ") {
            message.truncate(pos);
        }
        if message.contains("unknown field") {
            message.push_str(" (hint: remove it or fix its spelling)");
        }
        ConfigProblem {
            file: file.to_path_buf(),
            line,
            field: if field == "." || field.is_empty() {
                String::new()
            } else {
                field
            },
            message,
        }
    })
}

/// `path` relative to `root` when inside it (for messages and keys: never absolute paths).
pub fn relative_to(path: &Path, root: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Find the 1-based line of `name: <stage>` in `text` (block or flow style).
fn find_stage_line(text: &str, stage: &str) -> Option<usize> {
    let names_stage = |line: &str| {
        line.match_indices("name:").any(|(at, _)| {
            let before = line[..at].chars().last();
            if !matches!(before, None | Some(' ' | '{' | '-' | ',')) {
                return false;
            }
            let rest = line[at + "name:".len()..].trim_start();
            let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
            rest.strip_prefix(stage)
                .map(|after| after.is_empty() || after.starts_with([',', '}', ' ', '"', '\'', '#']))
                .unwrap_or(false)
        })
    };
    text.lines().position(names_stage).map(|i| i + 1)
}

/// Read the top-level file and every included file; collect all parse problems.
pub fn read_pipeline(pipeline_path: &Path) -> Result<RawPipeline, ConfigError> {
    let file = pipeline_path.to_path_buf();
    let root = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Absolute from here on (stages get absolute paths); messages strip it again.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let mut raw = RawPipeline {
        root: root.clone(),
        file: file.clone(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    let shown_top = relative_to(&file, &root);
    let text = std::fs::read_to_string(&file).map_err(|err| {
        ConfigError::one(
            &file,
            None,
            "",
            format!(
                "cannot read the pipeline file: {err} (hint: pass the path of pipeline.yaml, \
                 e.g. `lowrank-smc run pipeline.yaml`)"
            ),
        )
    })?;
    let top: PipelineFile =
        parse_yaml(&text, &shown_top).map_err(|p| ConfigError { problems: vec![p] })?;
    let mut files = vec![(shown_top.clone(), text, top.clone())];
    for (i, pattern) in top.include.iter().enumerate() {
        let full = root.join(pattern);
        let field = format!("include[{i}]");
        let paths = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths,
            Err(err) => {
                problems.push(ConfigProblem {
                    file: shown_top.clone(),
                    line: None,
                    field,
                    message: format!("bad glob `{pattern}`: {err}"),
                });
                continue;
            }
        };
        let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        found.sort();
        if found.is_empty() && !pattern.contains(['*', '?', '[']) {
            problems.push(ConfigProblem {
                file: shown_top.clone(),
                line: None,
                field,
                message: format!("included file `{pattern}` does not exist"),
            });
        }
        for path in found {
            let shown = relative_to(&path, &root);
            match std::fs::read_to_string(&path) {
                Err(err) => problems.push(ConfigProblem {
                    file: shown,
                    line: None,
                    field: String::new(),
                    message: format!("cannot read: {err}"),
                }),
                Ok(text) => match parse_yaml::<PipelineFile>(&text, &shown) {
                    Err(problem) => problems.push(problem),
                    Ok(parsed) => {
                        if !parsed.include.is_empty() {
                            problems.push(ConfigProblem {
                                file: shown.clone(),
                                line: None,
                                field: "include".into(),
                                message: "`include:` is only allowed in the top-level pipeline \
                                          file (hint: list this file's includes there)"
                                    .into(),
                            });
                        }
                        files.push((shown, text, parsed));
                    }
                },
            }
        }
    }
    for (shown, text, parsed) in files {
        for (index, stage) in parsed.stages.into_iter().enumerate() {
            let line = find_stage_line(&text, &stage.name);
            raw.stages.push((
                stage,
                Origin {
                    file: shown.clone(),
                    line,
                    index,
                },
            ));
        }
        for (profile, overrides) in parsed.profiles {
            let entry = raw.profiles.entry(profile).or_default();
            for (pattern, params) in overrides {
                entry.push((pattern, params, shown.clone()));
            }
        }
    }
    if problems.is_empty() {
        Ok(raw)
    } else {
        Err(ConfigError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_field_and_line() {
        let text = "stages:\n  - name: a\n    kind: command\n    parms: {}\n";
        let err = parse_yaml::<PipelineFile>(text, Path::new("p.yaml")).unwrap_err();
        assert_eq!(err.line, Some(4));
        assert!(err.field.starts_with("stages[0]"), "{err}");
        assert!(err.message.contains("unknown field `parms`"), "{err}");
    }

    #[test]
    fn wrong_type_names_field() {
        let text = "stages:\n  - name: a\n    kind: [1, 2]\n";
        let err = parse_yaml::<PipelineFile>(text, Path::new("p.yaml")).unwrap_err();
        assert_eq!(err.field, "stages[0].kind");
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn stage_line_is_found() {
        let text = "stages:\n  - name: a\n  - kind: x\n    name: \"b\"\n  - {name: c, kind: y}\n";
        assert_eq!(find_stage_line(text, "a"), Some(2));
        assert_eq!(find_stage_line(text, "c"), Some(5));
        assert_eq!(find_stage_line(text, "b"), Some(4));
        assert_eq!(find_stage_line(text, "d"), None);
    }
}
