//! Freshness of the whole DAG without running anything: what `status`, `run --dry-run` and the
//! start of every run compute. Each stage gets a [`Freshness`] (with reasons) and an action;
//! stages downstream of one that must run cannot know their inputs yet and say so.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::cache::{assess, Action, Freshness, StageKey, StaleReason, Store};
use super::dag::{Dag, InputSource, PlannedStage};
use super::hash::FileHashCache;
use super::lockfile::{InputRecord, LockEntry, LockFile, OutputRecord};

/// What `status` says about one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStatus {
    /// Stage name.
    pub stage: String,
    /// `fresh`, `restore` (stale, but the run cache has the outputs) or `run`.
    pub action: &'static str,
    /// Why it is stale (empty when fresh).
    pub reasons: Vec<StaleReason>,
    /// The key, when its inputs are known.
    pub key: Option<StageKey>,
}

impl StageStatus {
    /// True when nothing needs doing.
    pub fn is_fresh(&self) -> bool {
        self.action == "fresh"
    }
}

/// The content hashes of `stage`'s inputs, given what is known of upstream outputs
/// (`known[i]` is `None` while stage `i` still has to run). `Err` lists why they are unknown.
pub fn input_records(
    dag: &Dag,
    stage: &PlannedStage,
    known: &[Option<BTreeMap<String, OutputRecord>>],
    memo: &mut FileHashCache,
) -> Result<BTreeMap<String, Vec<InputRecord>>, Vec<StaleReason>> {
    let mut records = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, sources) in &stage.inputs {
        let mut list = Vec::new();
        for source in sources {
            match source {
                InputSource::Stage { stage: up, output } => {
                    let upstream = &dag.stages[*up];
                    match known[*up].as_ref().and_then(|outs| outs.get(output)) {
                        Some(record) => list.push(InputRecord {
                            source: format!("{}:{output}", upstream.name),
                            hash: record.hash.clone(),
                        }),
                        None => {
                            let reason = StaleReason::UpstreamChanged {
                                stage: upstream.name.clone(),
                            };
                            if !unknown.contains(&reason) {
                                unknown.push(reason);
                            }
                        }
                    }
                }
                InputSource::Dataset { .. } | InputSource::File { .. } => {
                    let (label, path) = match source {
                        InputSource::Dataset { id, path } => (format!("dataset:{id}"), path),
                        InputSource::File { path } => (format!("file:{}", path.display()), path),
                        InputSource::Stage { .. } => continue,
                    };
                    match memo.hash(&dag.root.join(path)) {
                        Ok(Some(hash)) => list.push(InputRecord {
                            source: label,
                            hash,
                        }),
                        _ => unknown.push(StaleReason::InputMissing {
                            name: name.clone(),
                            path: path.clone(),
                        }),
                    }
                }
            }
        }
        records.insert(name.clone(), list);
    }
    if unknown.is_empty() {
        Ok(records)
    } else {
        Err(unknown)
    }
}

/// The files the stage's last run wrote (as `entry` records them) that it no longer declares,
/// e.g. a figure per metric after a metric was dropped: left in `results/`, they would pass for
/// this run's. Only paths inside the stage's results directory are returned.
pub fn undeclared_outputs(stage: &PlannedStage, entry: &LockEntry) -> Vec<PathBuf> {
    let dir = stage.results_dir();
    let declared: Vec<PathBuf> = stage
        .outputs
        .keys()
        .filter_map(|n| stage.output_path(n))
        .collect();
    entry
        .outputs
        .values()
        .map(|o| o.path.clone())
        .filter(|p| p.starts_with(&dir) && !declared.contains(p))
        .filter(|p| {
            !p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        })
        .collect()
}

/// The outputs a stage will have after `action`, when known without running it.
pub fn known_outputs(
    stage: &PlannedStage,
    action: &Action,
    lock: &LockFile,
) -> Option<BTreeMap<String, OutputRecord>> {
    match action {
        Action::UpToDate => lock.stages.get(&stage.name).map(|e| e.outputs.clone()),
        Action::Restore(run) => Some(
            run.outputs
                .iter()
                .filter_map(|(name, stored)| {
                    Some((
                        name.clone(),
                        OutputRecord {
                            path: stage.output_path(name)?,
                            hash: stored.hash.clone(),
                            size: stored.size,
                        },
                    ))
                })
                .collect(),
        ),
        Action::Run => None,
    }
}

/// The freshness of every stage (in topological order).
pub fn status(
    dag: &Dag,
    store: &Store,
    lock: &LockFile,
    memo: &mut FileHashCache,
) -> Vec<StageStatus> {
    let mut known: Vec<Option<BTreeMap<String, OutputRecord>>> = vec![None; dag.stages.len()];
    let mut statuses = Vec::with_capacity(dag.stages.len());
    for (i, stage) in dag.stages.iter().enumerate() {
        let inputs = input_records(dag, stage, &known, memo);
        let verdict = assess(
            stage,
            inputs,
            lock.stages.get(&stage.name),
            store,
            memo,
            false,
        );
        known[i] = known_outputs(stage, &verdict.action, lock);
        statuses.push(StageStatus {
            stage: stage.name.clone(),
            action: match verdict.action {
                Action::UpToDate => "fresh",
                Action::Restore(_) => "restore",
                Action::Run => "run",
            },
            reasons: match verdict.freshness {
                Freshness::Fresh => vec![],
                Freshness::Stale(reasons) => reasons,
            },
            key: verdict.key,
        });
    }
    statuses
}

/// `status` in words, DVC style: one block per stale stage, or "up to date".
pub fn render_status(statuses: &[StageStatus], verbose: bool) -> String {
    let mut out = String::new();
    let stale: Vec<&StageStatus> = statuses.iter().filter(|s| !s.is_fresh()).collect();
    if verbose {
        for status in statuses.iter().filter(|s| s.is_fresh()) {
            out.push_str(&format!("{}: up to date\n", status.stage));
        }
    }
    for status in &stale {
        let what = match status.action {
            "restore" => "stale (outputs in the run cache: will be restored, not recomputed)",
            _ => "stale (will run)",
        };
        out.push_str(&format!("{}: {what}\n", status.stage));
        for reason in &status.reasons {
            out.push_str(&format!("    {reason}\n"));
        }
    }
    if stale.is_empty() {
        out.push_str(&format!(
            "Data and pipelines are up to date ({} stages).\n",
            statuses.len()
        ));
    } else {
        out.push_str(&format!(
            "{} of {} stages stale.\n",
            stale.len(),
            statuses.len()
        ));
    }
    out
}

/// Paths of every output of `dag` in `results/` (relative to the root).
pub fn all_results_paths(dag: &Dag) -> Vec<PathBuf> {
    dag.stages
        .iter()
        .flat_map(|s| s.outputs.keys().filter_map(|name| s.output_path(name)))
        .collect()
}
