//! The executor: runs the stages of a [`Dag`] in topological order, independent stages in
//! parallel, and owns every bit of logistics the stage kinds do not (argmin's split: the kind
//! does the maths, the executor the loop).
//!
//! - **One thread budget.** `jobs` tokens. A stage that starts takes a share of the free tokens
//!   (`free / stages waiting to start`, at least one) and gets that many threads through
//!   `ctx.threads()` / `ctx.install(..)` (and `RAYON_NUM_THREADS`/`OMP_NUM_THREADS` for
//!   commands); the tokens come back when it ends. The sum of shares never exceeds the budget,
//!   so parallel stages do not oversubscribe the machine. A fit also borrows the tokens that
//!   sit idle while no stage waits to start and gives them back within a minibatch once one
//!   does (`budget`, `StageContext::install_elastic`): the last fits of a sweep grow onto the
//!   cores the others freed.
//! - **Crash safety.** Stages write into a staging directory; on success the executor moves
//!   each output into the object store, writes the run-cache entry (the commit point), copies
//!   the outputs into `results/` and records the stage in `pipeline.lock`. A failed stage
//!   leaves no cache entry. See `cache` for the argument.
//! - **Events.** Everything a person sees goes through [`StageEvent`]s to a [`Reporter`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::budget::ThreadBudget;
use super::cache::{assess, Action, Freshness, RunEntry, StageKey, Store, StoredOutput};
use super::dag::{Dag, InputSource, PlannedStage};
use super::events::{process_cpu_time, EventKind, Reporter, RunSummary, SkipReason, StageEvent};
use super::hash::FileHashCache;
use super::lockfile::{InputRecord, LockEntry, LockFile, LockFileError, OutputRecord};
use super::plan::{input_records, known_outputs, undeclared_outputs};
use super::project_lock::ProjectLock;
use super::stage::{ProgressHandle, Registry, StageContext, RESUMED_FROM_EPOCH};

/// What `run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stage names or globs to run (empty: all). Stale upstream stages they need run too.
    pub stages: Vec<String>,
    /// Also run everything downstream of the selected stages.
    pub downstream: bool,
    /// Recompute the selected stages (all, when none are selected) even if up to date.
    pub force: bool,
    /// Thread budget (stages in parallel and their threads together).
    pub jobs: usize,
    /// Only say what would happen.
    pub dry_run: bool,
    /// After a failure, go on with stages that do not depend on it.
    pub keep_going: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            stages: vec![],
            downstream: false,
            force: false,
            jobs: default_jobs(),
            dry_run: false,
            keep_going: false,
        }
    }
}

/// The number of cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Why a run could not even start (stage failures are counted in [`RunSummary`] instead).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `--stage` matched nothing, or a bad pattern.
    #[error("{0}")]
    Selection(String),
    /// `pipeline.lock` unreadable.
    #[error(transparent)]
    LockFile(#[from] LockFileError),
    /// I/O on the project's state.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

/// The lock file path of a pipeline: `pipeline.lock` beside `pipeline.yaml`.
pub fn lock_path(dag: &Dag) -> PathBuf {
    dag.file.with_extension("lock")
}

/// What a finished stage thread hands back.
struct Completed {
    key: StageKey,
    outputs: BTreeMap<String, StoredOutput>,
    duration: Duration,
    summary: BTreeMap<String, serde_json::Value>,
}

enum Message {
    Event(StageEvent),
    /// A running stage gave borrowed thread tokens back: start waiting stages.
    Wake,
    Done {
        index: usize,
        tokens: usize,
        result: Result<Completed, String>,
    },
}

#[derive(Clone, PartialEq)]
enum State {
    Pending,
    Queued,
    Running,
    Done,
    Failed,
    Blocked,
}

/// The stages a run touches: the selection, plus everything upstream of it.
fn effective_set(
    dag: &Dag,
    options: &RunOptions,
) -> Result<(BTreeSet<usize>, BTreeSet<usize>), EngineError> {
    if options.stages.is_empty() {
        let all: BTreeSet<usize> = (0..dag.stages.len()).collect();
        return Ok((all.clone(), all));
    }
    let selected = dag
        .select(&options.stages, options.downstream)
        .map_err(EngineError::Selection)?;
    let mut needed = selected.clone();
    let mut stack: Vec<usize> = selected.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for &u in &dag.stages[i].upstream {
            if needed.insert(u) {
                stack.push(u);
            }
        }
    }
    Ok((selected, needed))
}

/// Run the pipeline. Takes the project lock (waiting, with a message, if another run holds it).
pub fn run(
    dag: &Dag,
    registry: &Registry,
    options: &RunOptions,
    reporter: &mut dyn Reporter,
) -> Result<RunSummary, EngineError> {
    let store = Store::new(&dag.root);
    let (selected, needed) = effective_set(dag, options)?;
    let lock_file = lock_path(dag);

    if options.dry_run {
        return dry_run(
            dag, &store, &lock_file, &selected, &needed, options, reporter,
        );
    }

    let (_guard, _) = ProjectLock::acquire(store.state_dir(), |pid| {
        eprintln!(
            "waiting for another lowrank-smc run on this project{} to finish…",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    })
    .map_err(io_err("taking the project lock"))?;
    let started = Instant::now();
    let cpu_at_start = process_cpu_time();
    // Read state only under the lock: a run that finished while we waited changed it.
    let mut lock = LockFile::load(&lock_file)?;
    lock.profile = dag.profile.clone();
    store
        .clean_staging()
        .map_err(io_err("cleaning .lowrank-smc/tmp"))?;
    let mut memo = FileHashCache::load(&store.memo_path());

    let mut executor = Executor {
        dag,
        registry,
        options,
        store: &store,
        lock,
        lock_file: lock_file.clone(),
        memo: &mut memo,
        states: vec![State::Pending; dag.stages.len()],
        known: vec![None; dag.stages.len()],
        input_records: vec![None; dag.stages.len()],
        keys: vec![None; dag.stages.len()],
        summary: RunSummary::default(),
        cancelled: false,
        selected,
        needed,
    };
    let result = executor.execute(reporter);
    let mut lock = std::mem::take(&mut executor.lock);
    if options.stages.is_empty() {
        // A full run: forget stages that are no longer in the pipeline.
        lock.stages.retain(|name, _| dag.get(name).is_some());
    }
    let mut summary = executor.summary.clone();
    drop(executor);
    summary.wall = Some(started.elapsed());
    summary.cpu = process_cpu_time()
        .zip(cpu_at_start)
        .map(|(now, then)| now.saturating_sub(then));
    lock.save(&lock_file)
        .map_err(io_err(format!("writing {}", lock_file.display())))?;
    let _ = memo.save(&store.memo_path());
    let _ = store.clean_staging();
    result?;
    reporter.finish(&summary);
    Ok(summary)
}

fn dry_run(
    dag: &Dag,
    store: &Store,
    lock_file: &std::path::Path,
    selected: &BTreeSet<usize>,
    needed: &BTreeSet<usize>,
    options: &RunOptions,
    reporter: &mut dyn Reporter,
) -> Result<RunSummary, EngineError> {
    let lock = LockFile::load(lock_file)?;
    let mut memo = FileHashCache::load(&store.memo_path());
    let mut known: Vec<Option<BTreeMap<String, OutputRecord>>> = vec![None; dag.stages.len()];
    let mut summary = RunSummary::default();
    for (i, stage) in dag.stages.iter().enumerate() {
        if !needed.contains(&i) {
            continue;
        }
        let inputs = input_records(dag, stage, &known, &mut memo);
        let force = options.force && selected.contains(&i);
        let verdict = assess(
            stage,
            inputs,
            lock.stages.get(&stage.name),
            store,
            &mut memo,
            force,
        );
        known[i] = known_outputs(stage, &verdict.action, &lock);
        let kind = match &verdict.action {
            Action::UpToDate => EventKind::Skipped {
                reason: SkipReason::UpToDate,
            },
            Action::Restore(_) => EventKind::Restored,
            Action::Run => EventKind::Finished {
                elapsed: Duration::ZERO,
                note: None,
            },
        };
        if let Freshness::Stale(reasons) = &verdict.freshness {
            let mut reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            reasons.push(match verdict.action {
                Action::Restore(_) => "would restore from the run cache".into(),
                _ => "would run".into(),
            });
            reporter.event(&StageEvent::now(
                &stage.name,
                EventKind::Planned { reasons },
            ));
        }
        summary.record(&kind);
    }
    // No `reporter.finish`: nothing ran; the caller words the summary as a plan.
    Ok(summary)
}

struct Executor<'a> {
    dag: &'a Dag,
    registry: &'a Registry,
    options: &'a RunOptions,
    store: &'a Store,
    lock: LockFile,
    lock_file: PathBuf,
    memo: &'a mut FileHashCache,
    states: Vec<State>,
    known: Vec<Option<BTreeMap<String, OutputRecord>>>,
    input_records: Vec<Option<BTreeMap<String, Vec<InputRecord>>>>,
    keys: Vec<Option<StageKey>>,
    summary: RunSummary,
    cancelled: bool,
    selected: BTreeSet<usize>,
    needed: BTreeSet<usize>,
}

impl Executor<'_> {
    fn emit(&mut self, reporter: &mut dyn Reporter, stage: &str, kind: EventKind) {
        self.summary.record_stage(stage, &kind);
        reporter.event(&StageEvent::now(stage, kind));
    }

    fn execute(&mut self, reporter: &mut dyn Reporter) -> Result<(), EngineError> {
        let (sender, receiver) = mpsc::channel::<Message>();
        let waker = std::sync::Mutex::new(sender.clone());
        let tokens = std::sync::Arc::new(ThreadBudget::new(self.options.jobs.max(1), move || {
            if let Ok(w) = waker.lock() {
                let _ = w.send(Message::Wake);
            }
        }));
        let mut running = 0usize;
        let mut queue: VecDeque<usize> = VecDeque::new();
        let dag = self.dag;
        let depth = stage_depths(dag);
        let registry = self.registry;
        let store = self.store;

        std::thread::scope(|scope| -> Result<(), EngineError> {
            loop {
                // Assess every stage whose upstream is settled.
                for i in 0..dag.stages.len() {
                    if self.states[i] != State::Pending || !self.needed.contains(&i) {
                        continue;
                    }
                    let stage = &dag.stages[i];
                    let upstream_states: Vec<&State> =
                        stage.upstream.iter().map(|&u| &self.states[u]).collect();
                    if let Some(&bad) = stage
                        .upstream
                        .iter()
                        .find(|&&u| matches!(self.states[u], State::Failed | State::Blocked))
                    {
                        self.states[i] = State::Blocked;
                        let reason = if self.cancelled && self.states[bad] == State::Blocked {
                            SkipReason::Cancelled
                        } else {
                            SkipReason::UpstreamFailed {
                                stage: dag.stages[bad].name.clone(),
                            }
                        };
                        self.emit(reporter, &stage.name, EventKind::Skipped { reason });
                        continue;
                    }
                    if !upstream_states.iter().all(|s| **s == State::Done) {
                        continue;
                    }
                    if self.cancelled {
                        self.states[i] = State::Blocked;
                        self.emit(
                            reporter,
                            &stage.name,
                            EventKind::Skipped {
                                reason: SkipReason::Cancelled,
                            },
                        );
                        continue;
                    }
                    self.settle(i, reporter, &mut queue)?;
                }

                // Start queued stages while tokens last, deepest first (ties: queue order):
                // a finished fit's generate/evaluate run before the next fit starts, so a long
                // sweep reports each seed's results as it goes instead of all at the end.
                tokens.set_waiting(queue.len());
                while tokens.free() > 0 {
                    let Some(at) = (0..queue.len()).rev().max_by_key(|&q| depth[queue[q]]) else {
                        break;
                    };
                    let Some(i) = queue.remove(at) else { break };
                    if self.cancelled {
                        self.states[i] = State::Blocked;
                        let name = dag.stages[i].name.clone();
                        self.emit(
                            reporter,
                            &name,
                            EventKind::Skipped {
                                reason: SkipReason::Cancelled,
                            },
                        );
                        continue;
                    }
                    let share = tokens.take((tokens.free() / (queue.len() + 1)).max(1));
                    tokens.set_waiting(queue.len());
                    running += 1;
                    self.states[i] = State::Running;
                    let stage = &dag.stages[i];
                    self.emit(reporter, &stage.name, EventKind::Started { threads: share });
                    let key = self.keys[i]
                        .clone()
                        .unwrap_or_else(|| StageKey(String::new()));
                    let inputs = self.input_paths(i);
                    let sender = sender.clone();
                    let budget = (std::sync::Arc::clone(&tokens), i);
                    scope.spawn(move || {
                        let result = run_stage(
                            dag, registry, store, stage, key, inputs, share, budget, &sender,
                        );
                        let _ = sender.send(Message::Done {
                            index: i,
                            tokens: share,
                            result,
                        });
                    });
                }

                if running == 0 {
                    let progress_possible = (0..dag.stages.len())
                        .any(|i| self.states[i] == State::Pending && self.needed.contains(&i));
                    if queue.is_empty() && !progress_possible {
                        break;
                    }
                    if queue.is_empty() {
                        // Pending stages whose upstream never settles: cannot happen in a DAG,
                        // but never spin.
                        break;
                    }
                }

                match receiver.recv() {
                    Ok(Message::Event(event)) => reporter.event(&event),
                    Ok(Message::Wake) => {}
                    Ok(Message::Done {
                        index,
                        tokens: share,
                        result,
                    }) => {
                        running -= 1;
                        tokens.release(index, share);
                        self.finish(index, result, reporter)?;
                    }
                    Err(_) => break,
                }
            }
            Ok(())
        })
    }

    /// Decide a ready stage: up to date, restore, or queue it to run.
    fn settle(
        &mut self,
        i: usize,
        reporter: &mut dyn Reporter,
        queue: &mut VecDeque<usize>,
    ) -> Result<(), EngineError> {
        let dag = self.dag;
        let stage = &dag.stages[i];
        let inputs = input_records(dag, stage, &self.known, self.memo);
        if let Err(reasons) = &inputs {
            // Upstream stages are all done here, so the only unknowns are missing files.
            let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            self.fail(
                i,
                format!(
                    "{} (hint: fetch the dataset, e.g. `lowrank-smc fetch <id>`, or fix the path)",
                    text.join("; ")
                ),
                reporter,
            );
            return Ok(());
        }
        let force = self.options.force && self.selected.contains(&i);
        let entry = self.lock.stages.get(&stage.name);
        let verdict = assess(stage, inputs, entry, self.store, self.memo, force);
        // What the last run wrote and this one will not: removed when the stage runs or is
        // restored, so that no file of an older declaration passes for this run's.
        let undeclared = entry.map_or_else(Vec::new, |e| undeclared_outputs(stage, e));
        self.keys[i] = verdict.key.clone();
        self.input_records[i] = verdict.inputs.clone();
        if let Freshness::Stale(reasons) = &verdict.freshness {
            let reasons = reasons.iter().map(ToString::to_string).collect();
            self.emit(reporter, &stage.name, EventKind::Planned { reasons });
        }
        match verdict.action {
            Action::UpToDate => {
                self.known[i] = known_outputs(stage, &Action::UpToDate, &self.lock);
                self.states[i] = State::Done;
                self.emit(
                    reporter,
                    &stage.name,
                    EventKind::Skipped {
                        reason: SkipReason::UpToDate,
                    },
                );
            }
            Action::Restore(run) => {
                for path in &undeclared {
                    let _ = std::fs::remove_file(dag.root.join(path));
                }
                let key = verdict
                    .key
                    .clone()
                    .unwrap_or_else(|| StageKey(String::new()));
                match self.record_outputs(
                    i,
                    key,
                    &run.outputs,
                    run.duration_secs,
                    run.summary.clone(),
                ) {
                    Ok(()) => {
                        self.states[i] = State::Done;
                        self.emit(reporter, &stage.name, EventKind::Restored);
                    }
                    Err(err) => {
                        self.fail(i, format!("restoring from the run cache: {err}"), reporter)
                    }
                }
            }
            Action::Run => {
                // Invalidate first (cargo's rule): stale results must not survive a failed rerun.
                let declared = stage.outputs.keys().filter_map(|n| stage.output_path(n));
                for path in declared.chain(undeclared) {
                    let _ = std::fs::remove_file(dag.root.join(path));
                }
                self.states[i] = State::Queued;
                queue.push_back(i);
            }
        }
        Ok(())
    }

    fn input_paths(&self, i: usize) -> BTreeMap<String, Vec<PathBuf>> {
        let dag = self.dag;
        let stage = &dag.stages[i];
        stage
            .inputs
            .iter()
            .map(|(name, sources)| {
                let paths = sources
                    .iter()
                    .filter_map(|source| match source {
                        InputSource::Stage { stage: up, output } => dag.stages[*up]
                            .output_path(output)
                            .map(|p| dag.root.join(p)),
                        InputSource::Dataset { path, .. } | InputSource::File { path } => {
                            Some(dag.root.join(path))
                        }
                    })
                    .collect();
                (name.clone(), paths)
            })
            .collect()
    }

    /// Materialise outputs into `results/` and record the stage in the lock.
    fn record_outputs(
        &mut self,
        i: usize,
        key: StageKey,
        outputs: &BTreeMap<String, StoredOutput>,
        duration_secs: f64,
        summary: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), String> {
        let dag = self.dag;
        let stage = &dag.stages[i];
        let mut records = BTreeMap::new();
        for (name, stored) in outputs {
            let Some(path) = stage.output_path(name) else {
                continue;
            };
            self.store
                .materialize(&stored.hash, &dag.root.join(&path), self.memo)
                .map_err(|e| format!("writing `{}`: {e}", path.display()))?;
            records.insert(
                name.clone(),
                OutputRecord {
                    path,
                    hash: stored.hash.clone(),
                    size: stored.size,
                },
            );
        }
        self.known[i] = Some(records.clone());
        self.lock.stages.insert(
            stage.name.clone(),
            LockEntry {
                kind: stage.kind.clone(),
                version: stage.version,
                key,
                params: stage.params.clone(),
                inputs: self.input_records[i].clone().unwrap_or_default(),
                outputs: records,
                duration_secs: (duration_secs * 1000.0).round() / 1000.0,
                summary,
            },
        );
        // Record progress now, so a later crash does not lose finished stages.
        self.lock
            .save(&self.lock_file)
            .map_err(|e| format!("writing {}: {e}", self.lock_file.display()))?;
        let _ = self.memo.save(&self.store.memo_path());
        Ok(())
    }

    fn fail(&mut self, i: usize, error: String, reporter: &mut dyn Reporter) {
        self.states[i] = State::Failed;
        if !self.options.keep_going {
            self.cancelled = true;
        }
        let name = self.dag.stages[i].name.clone();
        self.emit(reporter, &name, EventKind::Failed { error });
    }

    fn finish(
        &mut self,
        i: usize,
        result: Result<Completed, String>,
        reporter: &mut dyn Reporter,
    ) -> Result<(), EngineError> {
        let name = self.dag.stages[i].name.clone();
        match result {
            Ok(done) => {
                let secs = done.duration.as_secs_f64();
                // A fit resumed from a checkpoint says so: its wall time is this run's only.
                let note = done
                    .summary
                    .get(RESUMED_FROM_EPOCH)
                    .map(|epoch| format!("resumed from epoch {epoch}"));
                match self.record_outputs(i, done.key, &done.outputs, secs, done.summary) {
                    Ok(()) => {
                        self.states[i] = State::Done;
                        self.emit(
                            reporter,
                            &name,
                            EventKind::Finished {
                                elapsed: done.duration,
                                note,
                            },
                        );
                    }
                    Err(err) => self.fail(i, err, reporter),
                }
            }
            Err(err) => self.fail(i, err, reporter),
        }
        Ok(())
    }
}

/// Run one stage in its own staging directory and commit its outputs to the store.
/// Each stage's depth: 0 without upstream stages, else one more than its deepest upstream.
fn stage_depths(dag: &Dag) -> Vec<usize> {
    fn visit(dag: &Dag, i: usize, memo: &mut [Option<usize>]) -> usize {
        if let Some(d) = memo[i] {
            return d;
        }
        let d = dag.stages[i]
            .upstream
            .iter()
            .map(|&u| visit(dag, u, memo) + 1)
            .max()
            .unwrap_or(0);
        memo[i] = Some(d);
        d
    }
    let mut memo = vec![None; dag.stages.len()];
    (0..dag.stages.len())
        .map(|i| visit(dag, i, &mut memo))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    dag: &Dag,
    registry: &Registry,
    store: &Store,
    stage: &PlannedStage,
    key: StageKey,
    inputs: BTreeMap<String, Vec<PathBuf>>,
    threads: usize,
    (budget, index): (std::sync::Arc<ThreadBudget>, usize),
    sender: &mpsc::Sender<Message>,
) -> Result<Completed, String> {
    let kind = registry.get(&stage.kind).map_err(|e| e.to_string())?;
    let staging = store
        .staging_dir(&stage.name)
        .map_err(|e| format!("creating a staging directory: {e}"))?;
    let out_dir = staging.join("out");
    let scratch = staging.join("scratch");
    let mut outputs = BTreeMap::new();
    for (name, file_name) in &stage.outputs {
        let path = out_dir.join(file_name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating `{}`: {e}", parent.display()))?;
        }
        outputs.insert(name.clone(), path);
    }
    std::fs::create_dir_all(&scratch).map_err(|e| format!("creating scratch dir: {e}"))?;

    // Forward progress events through the executor's channel.
    let (progress_tx, progress_rx) = mpsc::channel::<StageEvent>();
    let forward = sender.clone();
    let forwarder = std::thread::spawn(move || {
        for event in progress_rx {
            if forward.send(Message::Event(event)).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let outcome = {
        let progress = ProgressHandle::new(stage.name.clone(), Some(progress_tx));
        let mut ctx = StageContext::new(
            &stage.name,
            &stage.params,
            &inputs,
            outputs.clone(),
            &stage.labels,
            progress,
            threads,
            &dag.root,
            scratch,
        )
        .with_resume_dir(store.resume_dir(&key))
        .with_budget(budget, index);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(&mut ctx)));
        let summary = std::mem::take(&mut ctx.summary);
        drop(ctx);
        match result {
            Ok(Ok(())) => Ok(summary),
            Ok(Err(err)) => Err(err.to_string()),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("stage kind `{}` panicked: {text}", stage.kind))
            }
        }
    };
    let _ = forwarder.join();
    let duration = started.elapsed();
    let summary = match outcome {
        Ok(summary) => summary,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };

    let mut stored = BTreeMap::new();
    for (name, path) in &outputs {
        if !path.exists() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!(
                "the stage did not write its output `{name}` (`{}`) (hint: a stage must write \
                 every declared output)",
                stage.outputs.get(name).map(String::as_str).unwrap_or("?")
            ));
        }
        match store.commit_object(path) {
            Ok(object) => {
                stored.insert(name.clone(), object);
            }
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(format!("storing output `{name}`: {err}"));
            }
        }
    }
    let entry = RunEntry {
        stage: stage.name.clone(),
        kind: stage.kind.clone(),
        outputs: stored.clone(),
        duration_secs: duration.as_secs_f64(),
        summary: summary.clone(),
    };
    store
        .write_run_entry(&key, &entry)
        .map_err(|e| format!("writing the run-cache entry: {e}"))?;
    let _ = std::fs::remove_dir_all(&staging);
    // The outputs are committed: whatever the stage kept to resume from is no longer needed.
    let _ = std::fs::remove_dir_all(store.resume_dir(&key));
    Ok(Completed {
        key,
        outputs: stored,
        duration,
        summary,
    })
}
