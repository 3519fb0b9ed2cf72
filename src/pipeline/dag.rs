//! Step 3 of three (parse → expand → resolve): kinds looked up, params checked and made
//! canonical, outputs named, inputs resolved to stages/datasets/files, cycles rejected, and the
//! stages put in topological order. A [`Dag`] is what every command (`run`, `status`, `dag`,
//! `show`, `gc`) works from.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::config::{read_pipeline, ConfigError, ConfigProblem, Origin};
use super::expand::{expand, ExpandedStage};
use super::stage::Registry;

/// The profile used when none is given.
pub const DEFAULT_PROFILE: &str = "paper";

/// Where an input's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// Output `output` of stage number `stage` (index into [`Dag::stages`]).
    Stage {
        /// Index of the upstream stage.
        stage: usize,
        /// Its output name.
        output: String,
    },
    /// A dataset: `datasets/<id>.yaml` names the file in its `path:` field.
    Dataset {
        /// The dataset id.
        id: String,
        /// The data file, relative to the project root.
        path: PathBuf,
    },
    /// A project file (a script, a config), relative to the project root.
    File {
        /// The file, relative to the project root.
        path: PathBuf,
    },
}

/// One stage, ready to plan: everything resolved and checked.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Full name, e.g. `eeg.fit[seed=3]`.
    pub name: String,
    /// Name as written, e.g. `eeg.fit`.
    pub base: String,
    /// The kind.
    pub kind: String,
    /// The kind's implementation version.
    pub version: u32,
    /// Free text from the YAML.
    pub description: Option<String>,
    /// Canonical params (defaults written out by the kind).
    pub params: Value,
    /// Matrix values of this expansion.
    pub labels: BTreeMap<String, String>,
    /// Input name → sources, in written order.
    pub inputs: BTreeMap<String, Vec<InputSource>>,
    /// Output name → file name inside the stage's results directory.
    pub outputs: BTreeMap<String, String>,
    /// Indices of the stages this one reads from (sorted, unique).
    pub upstream: Vec<usize>,
    /// Where it was defined.
    pub origin: Origin,
}

impl PlannedStage {
    /// The results directory, relative to the project root: `results/eeg/fit/seed=3`.
    pub fn results_dir(&self) -> PathBuf {
        stage_results_dir(&self.name)
    }
    /// The results path of output `name`, relative to the project root.
    pub fn output_path(&self, name: &str) -> Option<PathBuf> {
        self.outputs.get(name).map(|f| self.results_dir().join(f))
    }
}

/// `eeg.fit[seed=3,variant=a]` → `results/eeg/fit/seed=3,variant=a`.
pub fn stage_results_dir(name: &str) -> PathBuf {
    let (base, labels) = match name.split_once('[') {
        Some((base, rest)) => (base, Some(rest.trim_end_matches(']'))),
        None => (name, None),
    };
    let mut dir = PathBuf::from("results");
    for part in base.split('.') {
        dir.push(part);
    }
    if let Some(labels) = labels {
        let safe: String = labels
            .chars()
            .map(|c| if c == '/' || c == '\\' { '_' } else { c })
            .collect();
        dir.push(safe);
    }
    dir
}

/// The resolved pipeline: stages in topological order.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Project root.
    pub root: PathBuf,
    /// The pipeline file.
    pub file: PathBuf,
    /// The profile the params were resolved with.
    pub profile: String,
    /// Stages, every stage after all of its upstream stages.
    pub stages: Vec<PlannedStage>,
    index: HashMap<String, usize>,
}

impl Dag {
    /// The stage named `name`.
    pub fn get(&self, name: &str) -> Option<&PlannedStage> {
        self.index.get(name).map(|&i| &self.stages[i])
    }
    /// Index of the stage named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
    /// For each stage, the stages that read from it.
    pub fn downstream(&self) -> Vec<Vec<usize>> {
        let mut down = vec![Vec::new(); self.stages.len()];
        for (i, stage) in self.stages.iter().enumerate() {
            for &up in &stage.upstream {
                down[up].push(i);
            }
        }
        down
    }
    /// Stages matching any of `patterns` (exact name, base name, or glob on either), plus
    /// everything downstream of them when `downstream`.
    pub fn select(&self, patterns: &[String], downstream: bool) -> Result<BTreeSet<usize>, String> {
        let mut selected = BTreeSet::new();
        for pattern in patterns {
            let glob = glob::Pattern::new(pattern)
                .map_err(|e| format!("bad stage pattern `{pattern}`: {e}"))?;
            let before = selected.len();
            let mut matched = false;
            for (i, stage) in self.stages.iter().enumerate() {
                if stage.name == *pattern
                    || stage.base == *pattern
                    || glob.matches(&stage.name)
                    || glob.matches(&stage.base)
                {
                    selected.insert(i);
                    matched = true;
                }
            }
            if !matched && selected.len() == before {
                let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(format!(
                    "no stage matches `{pattern}`{}",
                    suggestion(pattern, names.iter().copied())
                ));
            }
        }
        if downstream {
            let down = self.downstream();
            let mut stack: Vec<usize> = selected.iter().copied().collect();
            while let Some(i) = stack.pop() {
                for &d in &down[i] {
                    if selected.insert(d) {
                        stack.push(d);
                    }
                }
            }
        }
        Ok(selected)
    }
}

/// ` (hint: did you mean `x`?)` when a known name is close to `wanted`.
pub fn suggestion<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> String {
    let best = known
        .map(|k| (edit_distance(wanted, k), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= wanted.len().max(3) / 3 + 1 => format!(" (hint: did you mean `{k}`?)"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The fields of a dataset manifest the engine needs (`path:`, or `url:` + `file:` for a
/// fetched dataset); the data module owns the rest.
#[derive(Deserialize)]
struct DatasetPath {
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    file: Option<String>,
}

/// Read, expand and resolve `pipeline_path` under `profile`; every problem is reported at once.
pub fn load(pipeline_path: &Path, profile: &str, registry: &Registry) -> Result<Dag, ConfigError> {
    let raw = read_pipeline(pipeline_path)?;
    let expanded =
        expand(&raw, profile, DEFAULT_PROFILE).map_err(|problems| ConfigError { problems })?;
    resolve(&raw.root, pipeline_path, profile, expanded, registry)
        .map_err(|problems| ConfigError { problems })
}

fn valid_base_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
}

fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Resolve expanded stages into a [`Dag`].
pub fn resolve(
    root: &Path,
    file: &Path,
    profile: &str,
    expanded: Vec<ExpandedStage>,
    registry: &Registry,
) -> Result<Dag, Vec<ConfigProblem>> {
    let mut problems = Vec::new();

    // Names: valid and unique.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut by_base: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut duplicate = vec![false; expanded.len()];
    for (i, stage) in expanded.iter().enumerate() {
        if !valid_base_name(&stage.base) {
            problems.push(stage.origin.problem(
                "name",
                format!(
                    "bad stage name `{}` (hint: use letters, digits, `_`, `-` and `.` as a \
                     separator, e.g. `eeg.fit`)",
                    stage.base
                ),
            ));
        }
        if let Some(&first) = index.get(&stage.name) {
            let other = &expanded[first].origin;
            problems.push(stage.origin.problem(
                "name",
                format!(
                    "duplicate stage name `{}` (also defined in {}{}) (hint: rename one of them)",
                    stage.name,
                    other.file.display(),
                    other.line.map(|l| format!(":{l}")).unwrap_or_default()
                ),
            ));
            duplicate[i] = true;
            continue;
        }
        index.insert(stage.name.clone(), i);
        by_base.entry(stage.base.as_str()).or_default().push(i);
    }

    // Kinds, params, outputs.
    let mut planned: Vec<Option<PlannedStage>> = Vec::with_capacity(expanded.len());
    for (i, stage) in expanded.iter().enumerate() {
        if duplicate[i] {
            planned.push(None);
            continue;
        }
        let kind = match registry.get(&stage.kind) {
            Ok(kind) => kind,
            Err(err) => {
                problems.push(stage.origin.problem("kind", err.to_string()));
                planned.push(None);
                continue;
            }
        };
        let params = match kind.check_params(&stage.params) {
            Ok(params) => params,
            Err(err) => {
                let field = if err.path.is_empty() {
                    "params".to_string()
                } else {
                    format!("params.{}", err.path)
                };
                problems.push(stage.origin.problem(
                    &field,
                    format!(
                        "{} (stage `{}`, kind `{}`)",
                        err.message, stage.name, stage.kind
                    ),
                ));
                planned.push(None);
                continue;
            }
        };
        let mut outputs: BTreeMap<String, String> = kind
            .outputs(&params)
            .into_iter()
            .map(|o| (o.name, o.file_name))
            .collect();
        let declared: Vec<String> = outputs.keys().cloned().collect();
        for (name, file_name) in &stage.outputs {
            let field = format!("outputs.{name}");
            if !outputs.contains_key(name) && !kind.accepts_extra_outputs() {
                problems.push(stage.origin.problem(
                    &field,
                    format!(
                        "kind `{}` has no output `{name}` (hint: its outputs are {}; `outputs:` \
                         may only rename them)",
                        stage.kind,
                        if declared.is_empty() {
                            "none".into()
                        } else {
                            declared.join(", ")
                        }
                    ),
                ));
                continue;
            }
            if !safe_relative(file_name) {
                problems.push(stage.origin.problem(
                    &field,
                    format!(
                        "bad output file name `{file_name}` (hint: a relative name inside the \
                         stage's results directory, without `..`)"
                    ),
                ));
                continue;
            }
            outputs.insert(name.clone(), file_name.clone());
        }
        let mut seen = HashMap::new();
        for (name, file_name) in &outputs {
            if let Some(other) = seen.insert(file_name.clone(), name.clone()) {
                problems.push(stage.origin.problem(
                    &format!("outputs.{name}"),
                    format!("outputs `{other}` and `{name}` both write `{file_name}`"),
                ));
            }
        }
        planned.push(Some(PlannedStage {
            name: stage.name.clone(),
            base: stage.base.clone(),
            kind: stage.kind.clone(),
            version: kind.version_for(&params),
            description: stage.description.clone(),
            params,
            labels: stage.labels.clone(),
            inputs: BTreeMap::new(),
            outputs,
            upstream: Vec::new(),
            origin: stage.origin.clone(),
        }));
    }

    // Inputs.
    let mut manifests: HashMap<String, Result<PathBuf, String>> = HashMap::new();
    for (i, stage) in expanded.iter().enumerate() {
        let mut inputs: BTreeMap<String, Vec<InputSource>> = BTreeMap::new();
        let mut upstream = BTreeSet::new();
        for (input, refs) in &stage.inputs {
            let field = format!("inputs.{input}");
            let mut sources = Vec::new();
            for reference in refs {
                match resolve_ref(reference, root, &index, &by_base, &planned, &mut manifests) {
                    Ok(found) => {
                        for source in found {
                            if let InputSource::Stage { stage: up, .. } = &source {
                                if *up == i {
                                    problems.push(stage.origin.problem(
                                        &field,
                                        format!("stage `{}` reads its own output", stage.name),
                                    ));
                                    continue;
                                }
                                upstream.insert(*up);
                            }
                            sources.push(source);
                        }
                    }
                    Err(message) => problems.push(stage.origin.problem(&field, message)),
                }
            }
            inputs.insert(input.clone(), sources);
        }
        if let Some(Some(plan)) = planned.get(i) {
            if let Ok(kind) = registry.get(&plan.kind) {
                if let Some(expected) = kind.expected_inputs(&plan.params) {
                    check_expected_inputs(stage, &expected, &mut problems);
                }
            }
        }
        if let Some(Some(plan)) = planned.get_mut(i) {
            plan.inputs = inputs;
            plan.upstream = upstream.into_iter().collect();
        }
    }

    // Two stages writing one results path.
    let mut writers: HashMap<PathBuf, &str> = HashMap::new();
    for plan in planned.iter().flatten() {
        for name in plan.outputs.keys() {
            if let Some(path) = plan.output_path(name) {
                if let Some(other) = writers.insert(path.clone(), &plan.name) {
                    problems.push(plan.origin.problem(
                        &format!("outputs.{name}"),
                        format!(
                            "`{}` is also written by stage `{other}` (hint: rename the stage or \
                             the output file)",
                            path.display()
                        ),
                    ));
                }
            }
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let planned: Vec<PlannedStage> = planned.into_iter().flatten().collect();
    let order = topological_order(&planned).map_err(|cycle| {
        let names: Vec<&str> = cycle.iter().map(|&i| planned[i].name.as_str()).collect();
        vec![planned[cycle[0]].origin.problem(
            "inputs",
            format!(
                "dependency cycle: {} (hint: a stage cannot depend, even indirectly, on its own \
                 outputs; remove one of these inputs)",
                names.join(" → ")
            ),
        )]
    })?;

    // Reorder into topological order and remap indices.
    let mut new_index = vec![0; planned.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<PlannedStage>> = planned.into_iter().map(Some).collect();
    let mut stages = Vec::with_capacity(slots.len());
    for &old in &order {
        if let Some(mut stage) = slots[old].take() {
            stage.upstream = stage.upstream.iter().map(|&u| new_index[u]).collect();
            stage.upstream.sort_unstable();
            for sources in stage.inputs.values_mut() {
                for source in sources {
                    if let InputSource::Stage { stage: up, .. } = source {
                        *up = new_index[*up];
                    }
                }
            }
            stages.push(stage);
        }
    }
    let index = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    Ok(Dag {
        root: root.to_path_buf(),
        file: file.to_path_buf(),
        profile: profile.to_string(),
        stages,
        index,
    })
}

fn check_expected_inputs(
    stage: &ExpandedStage,
    expected: &[super::stage::InputSpec],
    problems: &mut Vec<ConfigProblem>,
) {
    let names: Vec<&str> = expected.iter().map(|s| s.name.as_str()).collect();
    for (input, refs) in &stage.inputs {
        match expected.iter().find(|s| &s.name == input) {
            None => problems.push(stage.origin.problem(
                &format!("inputs.{input}"),
                format!(
                    "kind `{}` reads no input `{input}` (hint: its inputs are {})",
                    stage.kind,
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            )),
            Some(spec) if !spec.many && (refs.len() != 1 || refs[0].contains("[*]")) => problems
                .push(stage.origin.problem(
                    &format!("inputs.{input}"),
                    format!("input `{input}` takes exactly one file"),
                )),
            Some(_) => {}
        }
    }
    for spec in expected {
        if spec.required && !stage.inputs.contains_key(&spec.name) {
            problems.push(stage.origin.problem(
                "inputs",
                format!(
                    "missing input `{}` for kind `{}` (hint: add `inputs: {{{}: <stage>:<output>}}`)",
                    spec.name, stage.kind, spec.name
                ),
            ));
        }
    }
}

/// Resolve one reference to its sources.
fn resolve_ref(
    reference: &str,
    root: &Path,
    index: &HashMap<String, usize>,
    by_base: &HashMap<&str, Vec<usize>>,
    planned: &[Option<PlannedStage>],
    manifests: &mut HashMap<String, Result<PathBuf, String>>,
) -> Result<Vec<InputSource>, String> {
    if let Some(id) = reference.strip_prefix("dataset:") {
        let path = manifests
            .entry(id.to_string())
            .or_insert_with(|| dataset_path(root, id))
            .clone()?;
        return Ok(vec![InputSource::Dataset {
            id: id.to_string(),
            path,
        }]);
    }
    if let Some(path) = reference.strip_prefix("file:") {
        if !safe_relative(path) {
            return Err(format!(
                "bad file reference `{reference}` (hint: a path relative to the project root, \
                 without `..`)"
            ));
        }
        return Ok(vec![InputSource::File {
            path: PathBuf::from(path),
        }]);
    }
    let Some((stage_ref, output)) = reference.rsplit_once(':') else {
        return Err(format!(
            "bad reference `{reference}` (hint: write `<stage>:<output>`, `<stage>[*]:<output>`, \
             `dataset:<id>` or `file:<path>`)"
        ));
    };
    let targets: Vec<usize> =
        if let Some(base) = stage_ref.strip_suffix("[*]") {
            by_base.get(base).cloned().unwrap_or_default()
        } else if let Some(&i) = index.get(stage_ref) {
            vec![i]
        } else if let Some(all) = by_base.get(stage_ref) {
            if all.len() > 1 {
                return Err(format!(
                "`{stage_ref}` has {} expansions (hint: name one, e.g. `{}:{output}`, or take all \
                 with `{stage_ref}[*]:{output}`)",
                all.len(),
                planned[all[0]].as_ref().map(|p| p.name.as_str()).unwrap_or(stage_ref)
            ));
            }
            all.clone()
        } else {
            vec![]
        };
    if targets.is_empty() {
        let base = stage_ref.strip_suffix("[*]").unwrap_or(stage_ref);
        let known = index
            .keys()
            .map(String::as_str)
            .chain(by_base.keys().copied());
        return Err(format!(
            "missing input: no stage `{base}`{}",
            suggestion(base, known)
        ));
    }
    let mut sources = Vec::new();
    for target in targets {
        // A target whose kind failed to resolve has already been reported.
        let Some(plan) = &planned[target] else {
            continue;
        };
        if !plan.outputs.contains_key(output) {
            let outs: Vec<&str> = plan.outputs.keys().map(String::as_str).collect();
            return Err(format!(
                "stage `{}` has no output `{output}` (hint: its outputs are {})",
                plan.name,
                if outs.is_empty() {
                    "none".into()
                } else {
                    outs.join(", ")
                }
            ));
        }
        sources.push(InputSource::Stage {
            stage: target,
            output: output.to_string(),
        });
    }
    Ok(sources)
}

/// The data file a dataset manifest names, relative to the project root.
fn dataset_path(root: &Path, id: &str) -> Result<PathBuf, String> {
    if !safe_relative(id) || id.contains('/') {
        return Err(format!("bad dataset id `{id}`"));
    }
    let manifest = Path::new("datasets").join(format!("{id}.yaml"));
    let text = std::fs::read_to_string(root.join(&manifest)).map_err(|err| {
        format!(
            "missing input: dataset `{id}`: cannot read `{}`: {err} (hint: add a manifest with a \
             `path:` field naming the data file)",
            manifest.display()
        )
    })?;
    let parsed: DatasetPath = serde_yaml_ng::from_str(&text)
        .map_err(|err| format!("dataset manifest `{}`: {err}", manifest.display()))?;
    let Some(path) = parsed.path else {
        // A downloadable dataset: the file `lowrank-smc fetch ID` stores in the data directory.
        let Some(url) = parsed.url else {
            return Err(format!(
                "dataset manifest `{}` has no `path:` field (hint: `path: data/{id}.nwb`, \
                 relative to the project root, or a `url:` that `lowrank-smc fetch` downloads)",
                manifest.display()
            ));
        };
        let file = crate::data::fetch::stored_file_name(parsed.file.as_deref(), &url, id)
            .map_err(|e| format!("dataset manifest `{}`: {e}", manifest.display()))?;
        let p = crate::data::fetch::data_dir()
            .map_err(|e| e.to_string())?
            .join(id)
            .join(file);
        if !p.is_file() {
            return Err(format!(
                "missing input: dataset `{id}` is not downloaded yet (expected {}; run \
                 `lowrank-smc fetch {id}`)",
                p.display()
            ));
        }
        return Ok(p);
    };
    if !safe_relative(&path) {
        return Err(format!(
            "dataset manifest `{}`: `path: {path}` must be relative to the project root, \
             without `..`",
            manifest.display()
        ));
    }
    Ok(PathBuf::from(path))
}

/// Kahn's algorithm, smallest definition index first; on a cycle, return one cycle's stages.
fn topological_order(stages: &[PlannedStage]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree: Vec<usize> = stages.iter().map(|s| s.upstream.len()).collect();
    let mut down = vec![Vec::new(); stages.len()];
    for (i, s) in stages.iter().enumerate() {
        for &u in &s.upstream {
            down[u].push(i);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, &d)| d == 0)
        .map(|(i, _)| std::cmp::Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &down[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(std::cmp::Reverse(d));
            }
        }
    }
    if order.len() == stages.len() {
        return Ok(order);
    }
    // Walk upstream edges among the leftover stages until one repeats: that is a cycle.
    let leftover: BTreeSet<usize> = (0..stages.len()).filter(|&i| indegree[i] > 0).collect();
    let start = *leftover.iter().next().unwrap_or(&0);
    let mut path = vec![start];
    let mut seen_at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut current = start;
    loop {
        let Some(&next) = stages[current]
            .upstream
            .iter()
            .find(|u| leftover.contains(u))
        else {
            return Err(path);
        };
        if let Some(&pos) = seen_at.get(&next) {
            // The cycle, written in dependency direction: a → b means b reads a.
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            // Start at the stage defined first, so the message is stable.
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, &stage)| stage)
                .map(|(at, _)| at)
                .unwrap_or(0);
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        seen_at.insert(next, path.len());
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::config::{parse_yaml, PipelineFile, RawPipeline};
    use crate::pipeline::stage::{OutputSpec, ParamError, Stage, StageContext, StageError};

    struct Echo;
    impl Stage for Echo {
        fn kind(&self) -> &'static str {
            "echo"
        }
        fn version(&self) -> u32 {
            1
        }
        fn check_params(&self, p: &Value) -> Result<Value, ParamError> {
            Ok(p.clone())
        }
        fn outputs(&self, _: &Value) -> Vec<OutputSpec> {
            vec![OutputSpec::new("out", "out.txt")]
        }
        fn run(&self, _: &mut StageContext<'_>) -> Result<(), StageError> {
            Ok(())
        }
    }

    fn dag(yaml: &str) -> Result<Dag, Vec<ConfigProblem>> {
        let parsed: PipelineFile = parse_yaml(yaml, Path::new("p.yaml")).map_err(|p| vec![p])?;
        let mut raw = RawPipeline {
            root: PathBuf::from("/nonexistent"),
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
        let expanded = expand(&raw, "paper", "paper")?;
        let mut registry = Registry::new();
        registry.register(Echo);
        resolve(&raw.root, &raw.file, "paper", expanded, &registry)
    }

    #[test]
    fn stages_come_in_topological_order() {
        let dag = dag(r#"
stages:
  - {name: c, kind: echo, inputs: {x: "b:out"}}
  - {name: b, kind: echo, inputs: {x: "a:out"}}
  - {name: a, kind: echo}
"#)
        .map_err(|p| format!("{p:?}"));
        let dag = dag.unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = dag.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(dag.get("c").map(|s| s.upstream.clone()), Some(vec![1]));
    }

    #[test]
    fn cycles_are_printed() {
        let problems = dag(r#"
stages:
  - {name: a, kind: echo, inputs: {x: "c:out"}}
  - {name: b, kind: echo, inputs: {x: "a:out"}}
  - {name: c, kind: echo, inputs: {x: "b:out"}}
"#)
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .message
                .starts_with("dependency cycle: a → b → c → a"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn aggregates_take_every_expansion() {
        let dag = dag(r#"
stages:
  - {name: fit, kind: echo, matrix: {seed: 1..3}}
  - {name: summary, kind: echo, inputs: {all: "fit[*]:out", one: "fit[seed=2]:out"}}
"#)
        .unwrap_or_else(|e| panic!("{e:?}"));
        let summary = dag.get("summary").unwrap_or_else(|| panic!("no summary"));
        assert_eq!(summary.inputs["all"].len(), 3);
        assert_eq!(summary.upstream, vec![0, 1, 2]);
        assert_eq!(
            summary.inputs["one"],
            vec![InputSource::Stage {
                stage: 1,
                output: "out".into()
            }]
        );
    }

    #[test]
    fn every_problem_is_collected() {
        let problems = dag(r#"
stages:
  - {name: a, kind: echo, inputs: {x: "fti:out"}}
  - {name: a, kind: echo}
  - {name: b, kind: ech}
  - {name: c, kind: echo, inputs: {x: "a:model"}}
  - {name: d, kind: echo, inputs: {x: "nocolon"}}
"#)
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 5, "{text:#?}");
        assert!(text[0].contains("duplicate stage name `a`"));
        assert!(text[1].contains("unknown stage kind `ech` (hint: known kinds are echo)"));
        assert!(text[2].contains("stages[0].inputs.x: missing input: no stage `fti`"));
        assert!(text[3].contains("stage `a` has no output `model` (hint: its outputs are out)"));
        assert!(text[4].contains("bad reference `nocolon`"));
    }

    #[test]
    fn results_dirs_follow_names() {
        assert_eq!(
            stage_results_dir("eeg.fit[seed=3,variant=a/b]"),
            PathBuf::from("results/eeg/fit/seed=3,variant=a_b")
        );
        assert_eq!(stage_results_dir("demo"), PathBuf::from("results/demo"));
    }

    #[test]
    fn selection_by_glob_and_downstream() {
        let dag = dag(r#"
stages:
  - {name: eeg.bin, kind: echo}
  - {name: eeg.fit, kind: echo, inputs: {x: "eeg.bin:out"}}
  - {name: eeg.eval, kind: echo, inputs: {x: "eeg.fit:out"}}
"#)
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            dag.select(&["eeg.fit".into()], false),
            Ok(BTreeSet::from([1]))
        );
        assert_eq!(
            dag.select(&["eeg.fit".into()], true),
            Ok(BTreeSet::from([1, 2]))
        );
        assert_eq!(
            dag.select(&["*.bin".into()], false),
            Ok(BTreeSet::from([0]))
        );
        assert!(dag
            .select(&["eeg.fti".into()], false)
            .unwrap_err()
            .contains("did you mean `eeg.fit`"));
    }
}
