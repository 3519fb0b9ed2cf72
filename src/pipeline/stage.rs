//! The `Stage` trait that every stage kind implements, the context a running stage sees, and
//! the registry that maps a YAML `kind:` string to its implementation.
//!
//! A kind lives in one file under `src/stages/` and is registered with one line in
//! `stages::registry()`. A minimal kind:
//!
//! ```
//! use lowrank_smc::pipeline::stage::{
//!     canonical_params, OutputSpec, ParamError, Stage, StageContext, StageError,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! #[serde(deny_unknown_fields)]
//! struct CountParams {
//!     /// How many lines to write.
//!     n: u32,
//!     #[serde(default)]
//!     prefix: String,
//! }
//!
//! struct Count;
//!
//! impl Stage for Count {
//!     fn kind(&self) -> &'static str { "count" }
//!     fn version(&self) -> u32 { 1 }
//!     fn check_params(&self, params: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
//!         canonical_params::<CountParams>(params)
//!     }
//!     fn outputs(&self, _params: &serde_json::Value) -> Vec<OutputSpec> {
//!         vec![OutputSpec::new("lines", "lines.txt")]
//!     }
//!     fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
//!         let params: CountParams = ctx.params_as()?;
//!         ctx.progress().set_total(params.n as u64);
//!         let mut text = String::new();
//!         for i in 0..params.n {
//!             text.push_str(&format!("{}{i}\n", params.prefix));
//!             ctx.progress().inc(1);
//!         }
//!         let path = ctx.output("lines")?.to_path_buf();
//!         std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::events::{EventKind, StageEvent};

/// A stage kind: the maths or I/O of one step of the pipeline, nothing about caching or scheduling.
///
/// Contract (as DVC asks of its stages): read only the declared inputs, write every declared
/// output completely (into the paths `StageContext::output` gives), and be deterministic for
/// given params (a seed in the params fixes every random draw, whatever `ctx.threads()` is).
pub trait Stage: Send + Sync {
    /// The YAML `kind:` string, e.g. `"fit"`.
    fn kind(&self) -> &'static str;

    /// Implementation version, part of the cache key: bump it when a change to the code changes
    /// what the stage writes, so every cached result of this kind is recomputed.
    ///
    /// Figures count: a change to how `crate::plot` draws bumps the kinds that draw and run
    /// in seconds (`plot_curves`, `plot_traces`, `summarize`, `fixed_points`, `teacher_student`),
    /// so `run` redraws their figures. Kinds whose figure is a by-product of hours of work
    /// (`fit`'s loss curve, `simulate`, `bin`, `teacher_train`) keep their version: a new look
    /// does not refit, and their cached figures keep the old look until they rerun.
    fn version(&self) -> u32;

    /// The version for these (checked, canonical) params: [`Self::version`] unless a change
    /// altered what only some settings write, so that only their cached results are recomputed.
    fn version_for(&self, params: &Value) -> u32 {
        let _ = params;
        self.version()
    }

    /// Which settings [`Self::version_for`] gives another version, for `lowrank-smc kinds`
    /// (e.g. "v2 with vsmc.precision: f32"); `None` when every setting has [`Self::version`].
    fn version_note(&self) -> Option<&'static str> {
        None
    }

    /// One line for `lowrank-smc kinds`.
    fn description(&self) -> &'static str {
        ""
    }

    /// Validate the params before anything runs and return them in canonical form (every
    /// default written out). Unknown keys and wrong types must be rejected with the field path;
    /// [`canonical_params`] does both for a `#[serde(deny_unknown_fields)]` struct.
    fn check_params(&self, params: &Value) -> Result<Value, ParamError>;

    /// The named outputs this kind writes, with default file names (`model` → `model.h5`), so
    /// the YAML need not list them. `params` are the canonical params.
    fn outputs(&self, params: &Value) -> Vec<OutputSpec>;

    /// The inputs this kind reads, when it knows them: `Some` lets the engine reject a missing
    /// or misspelled input name at config time. `None` (the default) accepts any inputs.
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        None
    }

    /// A one-off run (`exec`, the direct subcommands) may leave out params that its input
    /// files settle (`fit`: `model.dim_x` and `model.dim_u`, the data's dimensions): write them
    /// into `params` before they are checked, and return a line per param filled, for the
    /// user. Pipelines never call this: their params are written out in full, so that a
    /// stage's key says everything it computed with. `inputs` are as the user gave them.
    fn params_from_inputs(
        &self,
        _params: &mut Value,
        _inputs: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<Vec<String>, StageError> {
        Ok(Vec::new())
    }

    /// Whether YAML `outputs:` may add outputs this kind does not declare (the `command` kind).
    fn accepts_extra_outputs(&self) -> bool {
        false
    }

    /// Do the work: read `ctx.input(..)`, write every `ctx.output(..)`.
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError>;
}

/// A named output and its default file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Output name, used in references such as `eeg.fit:model`.
    pub name: String,
    /// File name inside the stage's results directory.
    pub file_name: String,
}

impl OutputSpec {
    /// Output `name` written to `file_name`.
    pub fn new(name: impl Into<String>, file_name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            file_name: file_name.into(),
        }
    }
}

/// An input name a kind reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Input name as written under `inputs:`.
    pub name: String,
    /// Whether the stage cannot run without it.
    pub required: bool,
    /// Whether it takes many files (an aggregate such as `eeg.evaluate[*]:table`).
    pub many: bool,
}

impl InputSpec {
    /// A required single-file input.
    pub fn required(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            required: true,
            many: false,
        }
    }
    /// An optional single-file input.
    pub fn optional(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            required: false,
            many: false,
        }
    }
    /// A required input that may list many files (aggregate).
    pub fn many(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            required: true,
            many: true,
        }
    }
}

/// A bad parameter: the field path (`optimizer.lr`, empty for the whole map) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("`{path}`: ") })]
pub struct ParamError {
    /// Dotted path of the offending field inside `params`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ParamError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserialize `params` into `T` (use `#[serde(deny_unknown_fields)]`), reporting the field path
/// on failure.
pub fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, ParamError> {
    serde_path_to_error::deserialize::<_, T>(params).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ParamError::new(path, err.into_inner().to_string())
    })
}

/// Deserialize `params` into `T` and serialize it back: the canonical form, defaults written out.
pub fn canonical_params<T: DeserializeOwned + Serialize>(
    params: &Value,
) -> Result<Value, ParamError> {
    let typed: T = parse_params(params)?;
    serde_json::to_value(&typed).map_err(|e| ParamError::new("", e.to_string()))
}

/// Why a stage failed. Kinds build it with [`StageError::new`], [`StageError::io`] or
/// [`StageResultExt::stage_context`] on any `Result` whose error implements `std::error::Error`.
#[derive(Debug)]
pub struct StageError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StageError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }
    /// A failure with an underlying cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
    /// An I/O failure on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Self::with_source(format!("{}", path.display()), err)
    }
    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match &self.source {
            Some(source) => Some(source.as_ref()),
            None => None,
        };
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl std::error::Error for StageError {}

impl From<ParamError> for StageError {
    fn from(err: ParamError) -> Self {
        StageError::new(format!("bad params: {err}"))
    }
}

/// `.stage_context("reading the model")?` on any `Result` with a standard error.
pub trait StageResultExt<T> {
    /// Wrap the error into a [`StageError`] whose message says what was being done.
    fn stage_context(self, what: impl Into<String>) -> Result<T, StageError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> StageResultExt<T> for Result<T, E> {
    fn stage_context(self, what: impl Into<String>) -> Result<T, StageError> {
        self.map_err(|e| StageError::with_source(what, e))
    }
}

/// Progress reporting for a running stage (epochs, steps, a message); cheap to call often.
pub struct ProgressHandle {
    stage: String,
    sender: Option<Sender<StageEvent>>,
    state: std::sync::Mutex<ProgressState>,
}

#[derive(Default, Clone)]
struct ProgressState {
    position: u64,
    total: Option<u64>,
    message: String,
    last_sent: Option<std::time::Instant>,
}

impl ProgressHandle {
    /// A handle that sends `Progress` events for `stage` (none when `sender` is `None`).
    pub(crate) fn new(stage: String, sender: Option<Sender<StageEvent>>) -> Self {
        Self {
            stage,
            sender,
            state: std::sync::Mutex::new(ProgressState::default()),
        }
    }

    /// A handle that sends `stage`'s progress to `sender` (a stage run outside the executor:
    /// `lowrank-smc exec`).
    pub fn reporting(stage: impl Into<String>, sender: Sender<StageEvent>) -> Self {
        Self::new(stage.into(), Some(sender))
    }

    /// A handle that reports nowhere (for unit tests of stage kinds).
    pub fn disconnected() -> Self {
        Self::new(String::new(), None)
    }

    /// Set the number of steps (epochs, iterations) the stage will take.
    pub fn set_total(&self, total: u64) {
        self.update(true, |s| s.total = Some(total));
    }
    /// Advance by `delta` steps.
    pub fn inc(&self, delta: u64) {
        self.update(false, |s| s.position += delta);
    }
    /// Jump to step `position`.
    pub fn set_position(&self, position: u64) {
        self.update(false, |s| s.position = position);
    }
    /// Show `message` (e.g. `"elbo -1234.5"`) beside the bar.
    pub fn message(&self, message: impl Into<String>) {
        let message = message.into();
        self.update(false, |s| s.message = message);
    }

    fn update(&self, force: bool, change: impl FnOnce(&mut ProgressState)) {
        let Some(sender) = &self.sender else { return };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        change(&mut state);
        // Throttle: a training loop may call this every step.
        let now = std::time::Instant::now();
        let due = state
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_millis(50));
        if !(force || due || state.total == Some(state.position)) {
            return;
        }
        state.last_sent = Some(now);
        let _ = sender.send(StageEvent::now(
            self.stage.clone(),
            EventKind::Progress {
                position: state.position,
                total: state.total,
                message: state.message.clone(),
            },
        ));
    }
}

/// A stage's rayon pool of `threads` threads (`None` if the threads cannot be spawned: the
/// work then runs on the caller's thread, still correct, just serial).
fn stage_pool(threads: usize) -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("stage-worker-{i}"))
        .build()
        .ok()
}

/// Everything a running stage may see. Built by the executor; kinds only read it.
pub struct StageContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) params: &'a Value,
    pub(crate) inputs: &'a BTreeMap<String, Vec<PathBuf>>,
    pub(crate) outputs: BTreeMap<String, PathBuf>,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) progress: ProgressHandle,
    pub(crate) threads: usize,
    pub(crate) project_root: &'a Path,
    pub(crate) scratch_dir: PathBuf,
    pub(crate) resume_dir: Option<PathBuf>,
    pub(crate) summary: BTreeMap<String, Value>,
    pool: std::sync::OnceLock<Option<rayon::ThreadPool>>,
    /// The run's token budget and this stage's index in it (inside a pipeline run).
    budget: Option<(std::sync::Arc<super::budget::ThreadBudget>, usize)>,
    /// The threads [`Self::install_elastic`] last ran on (0: not yet).
    last_threads: std::sync::atomic::AtomicUsize,
    /// [`Self::install_elastic`]'s pools larger than the share, by thread count.
    elastic_pools: std::sync::Mutex<BTreeMap<usize, Option<std::sync::Arc<rayon::ThreadPool>>>>,
}

impl<'a> StageContext<'a> {
    /// A context for stage `name` (used by the executor, and by kinds' own unit tests).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &'a str,
        params: &'a Value,
        inputs: &'a BTreeMap<String, Vec<PathBuf>>,
        outputs: BTreeMap<String, PathBuf>,
        labels: &'a BTreeMap<String, String>,
        progress: ProgressHandle,
        threads: usize,
        project_root: &'a Path,
        scratch_dir: PathBuf,
    ) -> Self {
        Self {
            name,
            params,
            inputs,
            outputs,
            labels,
            progress,
            threads: threads.max(1),
            project_root,
            scratch_dir,
            resume_dir: None,
            summary: BTreeMap::new(),
            pool: std::sync::OnceLock::new(),
            budget: None,
            last_threads: std::sync::atomic::AtomicUsize::new(0),
            elastic_pools: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Lets the stage borrow the run's idle thread tokens (the executor does, per stage).
    pub fn with_budget(
        mut self,
        budget: std::sync::Arc<super::budget::ThreadBudget>,
        index: usize,
    ) -> Self {
        self.budget = Some((budget, index));
        self
    }

    /// Gives the stage a resume directory (the executor does, per stage key).
    pub fn with_resume_dir(mut self, dir: PathBuf) -> Self {
        self.resume_dir = Some(dir);
        self
    }

    /// A directory that survives an interrupted run of this stage with the same params and
    /// inputs (created here; `None` outside a pipeline, e.g. `exec`). Put state there that lets a
    /// rerun continue where the last one stopped; the executor removes it after success.
    pub fn resume_dir(&self) -> Option<PathBuf> {
        let dir = self.resume_dir.clone()?;
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// The stage's full name, e.g. `eeg.fit[seed=3,variant=a]`.
    pub fn stage_name(&self) -> &str {
        self.name
    }
    /// The canonical params (profile applied, `${…}` substituted, defaults written out).
    pub fn params(&self) -> &Value {
        self.params
    }
    /// The params deserialized into the kind's own struct.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        Ok(parse_params(self.params)?)
    }
    /// The one file behind input `name` (an upstream output or a dataset file).
    pub fn input(&self, name: &str) -> Result<&Path, StageError> {
        match self.inputs.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(many) => Err(StageError::new(format!(
                "input `{name}` has {} files; read it with `ctx.inputs(\"{name}\")`",
                many.len()
            ))),
            None => Err(self.missing_input(name)),
        }
    }
    /// Every file behind input `name`, in expansion order (aggregates like `eeg.fit[*]:model`).
    pub fn inputs(&self, name: &str) -> Result<&[PathBuf], StageError> {
        self.inputs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| self.missing_input(name))
    }
    /// Input names and their files.
    pub fn all_inputs(&self) -> &BTreeMap<String, Vec<PathBuf>> {
        self.inputs
    }
    fn missing_input(&self, name: &str) -> StageError {
        let known: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
        StageError::new(format!(
            "stage `{}` has no input `{name}` (declared inputs: {}); add it under `inputs:`",
            self.name,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
    /// The path to write output `name` to (a staging path; the engine moves it into the cache).
    pub fn output(&self, name: &str) -> Result<&Path, StageError> {
        self.outputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            let known: Vec<&str> = self.outputs.keys().map(String::as_str).collect();
            StageError::new(format!(
                "stage `{}` has no output `{name}` (outputs: {})",
                self.name,
                known.join(", ")
            ))
        })
    }
    /// Move a file written elsewhere (e.g. a figure drawn in [`Self::scratch_dir`]) to output
    /// `name`'s staging path.
    pub fn place_output(&self, name: &str, from: &Path) -> Result<(), StageError> {
        let to = self.output(name)?;
        std::fs::rename(from, to).map_err(|e| StageError::io(to, e))
    }
    /// Output names and their staging paths.
    pub fn all_outputs(&self) -> &BTreeMap<String, PathBuf> {
        &self.outputs
    }
    /// Progress reporting (epochs, steps, messages).
    pub fn progress(&self) -> &ProgressHandle {
        &self.progress
    }
    /// How many threads this stage may use (its share of the run's one thread budget).
    pub fn threads(&self) -> usize {
        self.threads
    }
    /// The threads the last [`Self::install_elastic`] call ran on ([`Self::threads`] before the
    /// first): more than the share while the stage borrows idle ones.
    pub fn threads_now(&self) -> usize {
        match self.last_threads.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.threads,
            n => n,
        }
    }
    /// Run `work` on a rayon pool of `threads()` threads: `par_iter` inside it stays within the
    /// stage's share, so parallel stages never oversubscribe the machine.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let pool = self.pool.get_or_init(|| stage_pool(self.threads));
        match pool {
            Some(pool) => pool.install(work),
            // Could not spawn threads: run on the caller's thread (still correct, just serial).
            None => work(),
        }
    }
    /// As [`Self::install`], for work that comes in many short calls whose results do not
    /// depend on the thread count (a fit's minibatches): each call also uses the run's tokens
    /// that sit idle while no other stage waits to start, and gives them back once one does
    /// ([`super::budget`]). Outside a pipeline run it is [`Self::install`].
    pub fn install_elastic<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let Some((budget, index)) = &self.budget else {
            return self.install(work);
        };
        let threads = budget.rebalance(*index, self.threads);
        self.last_threads
            .store(threads, std::sync::atomic::Ordering::Relaxed);
        if threads == self.threads {
            return self.install(work);
        }
        let pool = {
            let mut pools = self.elastic_pools.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .entry(threads)
                .or_insert_with(|| stage_pool(threads).map(std::sync::Arc::new))
                .clone()
        };
        match pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
    /// The integer `seed` param, if the stage has one.
    pub fn seed(&self) -> Option<u64> {
        self.params.get("seed").and_then(Value::as_u64)
    }
    /// The matrix values of this expansion, e.g. `{seed: "3", variant: "a"}`.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.labels
    }
    /// The project root (directory of `pipeline.yaml`).
    pub fn project_root(&self) -> &Path {
        self.project_root
    }
    /// A private scratch directory, deleted after the stage.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }
    /// Record a summary value (final ELBO, stop reason) in the stage's `pipeline.lock` entry.
    pub fn record(&mut self, key: impl Into<String>, value: impl Serialize) {
        if let Ok(value) = serde_json::to_value(value) {
            self.summary.insert(key.into(), value);
        }
    }
}

/// The record key under which a stage that continued interrupted work from its
/// [`StageContext::resume_dir`] states the epoch it resumed at; the executor then says so on
/// the stage's `[done]` line, whose wall time counts only that run.
pub const RESUMED_FROM_EPOCH: &str = "resumed_from_epoch";

/// Maps YAML `kind:` strings to implementations.
#[derive(Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Box<dyn Stage>>,
}

/// A `kind:` that no registered implementation answers to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown stage kind `{kind}` (hint: known kinds are {})", known.join(", "))]
pub struct UnknownKind {
    /// The kind asked for.
    pub kind: String,
    /// Sorted registered kinds.
    pub known: Vec<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a kind; a later registration of the same `kind()` replaces the earlier one.
    pub fn register(&mut self, stage: impl Stage + 'static) -> &mut Self {
        self.kinds.insert(stage.kind(), Box::new(stage));
        self
    }
    /// The implementation of `kind`.
    pub fn get(&self, kind: &str) -> Result<&dyn Stage, UnknownKind> {
        self.kinds
            .get(kind)
            .map(|b| b.as_ref())
            .ok_or_else(|| UnknownKind {
                kind: kind.to_string(),
                known: self.kinds.keys().map(|k| k.to_string()).collect(),
            })
    }
    /// Registered kinds, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Stage> {
        self.kinds.values().map(|b| b.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        lr: f64,
    }
    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        optimizer: Inner,
        #[serde(default = "default_epochs")]
        epochs: u32,
    }
    fn default_epochs() -> u32 {
        10
    }

    #[test]
    fn canonical_params_writes_defaults() {
        let value = canonical_params::<Params>(&serde_json::json!({"optimizer": {"lr": 0.1}}));
        assert_eq!(
            value,
            Ok(serde_json::json!({"optimizer": {"lr": 0.1}, "epochs": 10}))
        );
    }

    #[test]
    fn param_errors_carry_the_field_path() {
        let err = canonical_params::<Params>(&serde_json::json!({"optimizer": {"lr": "fast"}}))
            .unwrap_err();
        assert_eq!(err.path, "optimizer.lr");
        let err =
            canonical_params::<Params>(&serde_json::json!({"optimizer": {"lr": 0.1}, "epoch": 3}))
                .unwrap_err();
        assert!(err.message.contains("unknown field `epoch`"), "{err}");
    }

    #[test]
    fn unknown_kind_lists_known_kinds() {
        struct Dummy(&'static str);
        impl Stage for Dummy {
            fn kind(&self) -> &'static str {
                self.0
            }
            fn version(&self) -> u32 {
                1
            }
            fn check_params(&self, p: &Value) -> Result<Value, ParamError> {
                Ok(p.clone())
            }
            fn outputs(&self, _: &Value) -> Vec<OutputSpec> {
                vec![]
            }
            fn run(&self, _: &mut StageContext<'_>) -> Result<(), StageError> {
                Ok(())
            }
        }
        let mut registry = Registry::new();
        registry.register(Dummy("fit")).register(Dummy("bin"));
        let err = registry.get("fti").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown stage kind `fti` (hint: known kinds are bin, fit)")
        );
    }
}
