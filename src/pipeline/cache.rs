//! The cache: stage keys, the content-addressed store, the run cache, and staleness as a value.
//!
//! # What goes into a stage's key, and why
//!
//! `key = blake3("lowrank-smc stage key v1\n" ‖ canonical JSON of {kind, version, params,
//! inputs, outputs})` where
//!
//! | part      | what                                                  | why |
//! |-----------|-------------------------------------------------------|-----|
//! | `kind`    | the YAML `kind:`                                      | different code |
//! | `version` | `Stage::version_for(params)` (`Stage::version()` unless a kind says otherwise) | the kind's code changed what it writes (for these params) |
//! | `params`  | canonical params: profile applied, `${axis}` substituted, the kind's defaults written out, keys sorted | the computation's settings |
//! | `inputs`  | input name → content hashes of its files, in order    | the data; content, not the producer's key, so an upstream rerun that writes identical bytes does not cascade |
//! | `outputs` | output name → file name                               | for `command` stages the file names are part of the command's contract |
//!
//! Left out on purpose (cargo's "considerations for inclusion in a fingerprint"): modification
//! times (touching a file must not rerun anything), absolute paths (a moved or cloned project
//! keeps its cache), the stage's name (two stages doing the same thing share a result), the
//! thread count and `--jobs` (results must not depend on them), the profile name (only the
//! params it produces matter).
//!
//! # On disk (under `<project>/.lowrank-smc/`)
//!
//! - `cache/objects/ab/cdef…` — every output ever produced, named by its content hash;
//!   immutable once written.
//! - `cache/runs/<key>.json` — the run cache: key → output hashes ([`RunEntry`]). This is what
//!   lets a reverted param reuse old outputs: the old key's entry is still there.
//! - `tmp/` — staging directories where running stages write; emptied at the start of a run.
//! - `file-hashes.json` — the (path, size, mtime, inode) → hash memo.
//!
//! # Crash safety
//!
//! Every file is written to a temporary name in its final directory and renamed into place.
//! The order is: outputs staged → objects renamed in → run entry written (the commit point) →
//! results materialised → `pipeline.lock` updated. A `kill -9` anywhere leaves at worst
//! unreferenced objects (removed by `gc`) or results that do not match the lock (restored or
//! recomputed next time); a run entry only ever points at objects that exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dag::PlannedStage;
use super::hash::{ContentHash, FileHashCache};
use super::lockfile::{InputRecord, LockEntry};

/// A stage's cache key: 64 hex digits of blake3.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageKey(pub String);

impl StageKey {
    /// The first 12 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value` with every object's keys in sorted order (whatever serde_json's map type is).
pub fn canonical_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut sorted = serde_json::Map::new();
            for k in keys {
                sorted.insert(k.clone(), canonical_value(&map[k]));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_value).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with sorted keys: the bytes that are hashed.
pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(&canonical_value(value)).unwrap_or_default()
}

/// The key of `stage` given the content hashes of its inputs.
pub fn stage_key(stage: &PlannedStage, inputs: &BTreeMap<String, Vec<InputRecord>>) -> StageKey {
    let input_hashes: BTreeMap<&String, Vec<&str>> = inputs
        .iter()
        .map(|(name, records)| (name, records.iter().map(|r| r.hash.0.as_str()).collect()))
        .collect();
    let document = serde_json::json!({
        "kind": stage.kind,
        "version": stage.version,
        "params": stage.params,
        "inputs": input_hashes,
        "outputs": stage.outputs,
    });
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lowrank-smc stage key v1\n");
    hasher.update(canonical_json(&document).as_bytes());
    StageKey(hasher.finalize().to_hex().to_string())
}

/// A run-cache entry: what a key produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// Stage name when it was produced (for `gc` and humans; not part of the key).
    pub stage: String,
    /// Kind.
    pub kind: String,
    /// Output name → content hash and size.
    pub outputs: BTreeMap<String, StoredOutput>,
    /// Wall time of the run, in seconds.
    pub duration_secs: f64,
    /// Values the stage recorded.
    #[serde(default)]
    pub summary: BTreeMap<String, Value>,
}

/// An output in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutput {
    /// Content hash.
    pub hash: ContentHash,
    /// Size in bytes.
    pub size: u64,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `path` (same directory, so the final rename is atomic).
pub fn temp_path_beside(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Write `bytes` to `path` via a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = temp_path_beside(path);
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The content-addressed store and run cache of one project.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    state_dir: PathBuf,
}

impl Store {
    /// The store of the project at `root` (`root/.lowrank-smc`).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            state_dir: root.join(".lowrank-smc"),
        }
    }
    /// Project root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `.lowrank-smc/`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    /// Where the file-hash memo lives.
    pub fn memo_path(&self) -> PathBuf {
        self.state_dir.join("file-hashes.json")
    }
    /// Directory of objects.
    pub fn objects_dir(&self) -> PathBuf {
        self.state_dir.join("cache").join("objects")
    }
    /// Directory of run entries.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("cache").join("runs")
    }
    /// Path of the object with content `hash`.
    pub fn object_path(&self, hash: &ContentHash) -> PathBuf {
        let (head, tail) = hash.0.split_at(hash.0.len().min(2));
        self.objects_dir().join(head).join(tail)
    }
    /// Path of the run entry of `key`.
    pub fn run_path(&self, key: &StageKey) -> PathBuf {
        self.runs_dir().join(format!("{key}.json"))
    }

    /// The run entry of `key`, if present, readable, and all its objects exist.
    pub fn run_entry(&self, key: &StageKey) -> Option<RunEntry> {
        let bytes = std::fs::read(self.run_path(key)).ok()?;
        let entry: RunEntry = serde_json::from_slice(&bytes).ok()?;
        entry
            .outputs
            .values()
            .all(|o| self.object_path(&o.hash).is_file())
            .then_some(entry)
    }

    /// Record `entry` for `key` (the commit point of a run).
    pub fn write_run_entry(&self, key: &StageKey, entry: &RunEntry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        write_atomic(&self.run_path(key), &bytes)
    }

    /// Forget `key` (done before a forced rerun, so a crash cannot leave the old entry looking
    /// like the new one).
    pub fn remove_run_entry(&self, key: &StageKey) -> std::io::Result<()> {
        match std::fs::remove_file(self.run_path(key)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// A fresh staging directory for a running stage.
    pub fn staging_dir(&self, stage: &str) -> std::io::Result<PathBuf> {
        let tmp = self.state_dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let safe: String = stage
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("{safe}.{}.{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The resume directory of a stage key: where a long stage keeps state that lets a rerun
    /// after an interruption continue instead of starting over (e.g. `fit`'s periodic
    /// checkpoint). Same key ⇔ same params and inputs, so the state is valid for the rerun.
    /// Created on demand by the stage; removed once the stage's outputs are committed.
    pub fn resume_dir(&self, key: &StageKey) -> PathBuf {
        self.state_dir.join("resume").join(&key.0)
    }

    /// Remove every staging directory (only under the project lock: no run is using them).
    pub fn clean_staging(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.state_dir.join("tmp")) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Move a staged output file into the object store; returns its hash and size.
    pub fn commit_object(&self, staged: &Path) -> std::io::Result<StoredOutput> {
        let meta = std::fs::metadata(staged)?;
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "`{}` is not a regular file (outputs must be files; declare each file of a \
                 directory as its own output)",
                staged.display()
            )));
        }
        let hash = super::hash::hash_file(staged)?;
        let object = self.object_path(&hash);
        if !object.is_file() {
            if let Some(parent) = object.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Objects are immutable: read-only is a guard against accidental edits.
            let mut perms = meta.permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(staged, perms)?;
            std::fs::rename(staged, &object)?;
        }
        Ok(StoredOutput {
            hash,
            size: meta.len(),
        })
    }

    /// Copy object `hash` to `dest` (absolute), atomically, unless `dest` already has it.
    pub fn materialize(
        &self,
        hash: &ContentHash,
        dest: &Path,
        memo: &mut FileHashCache,
    ) -> std::io::Result<()> {
        if memo.hash(dest).ok().flatten().as_ref() == Some(hash) {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if dest.is_dir() {
            std::fs::remove_dir_all(dest)?;
        }
        let temp = temp_path_beside(dest);
        // A copy, not a hard link: a results file edited in place must not corrupt the cache.
        let copied = std::fs::copy(self.object_path(hash), &temp).and_then(|_| {
            let mut perms = std::fs::metadata(&temp)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&temp, perms)?;
            std::fs::rename(&temp, dest)
        });
        if copied.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        copied?;
        let meta = std::fs::metadata(dest)?;
        memo.remember(dest, &meta, hash.clone());
        Ok(())
    }
}

/// Whether a stage must run, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    /// Outputs in `results/` match the key: nothing to do.
    Fresh,
    /// Something changed; the reasons say what.
    Stale(Vec<StaleReason>),
}

/// One reason a stage is stale; carries old and new values so it can be said in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StaleReason {
    /// No record of a previous run.
    NeverRun,
    /// `--force`.
    Forced,
    /// A param changed, was added (`old` none) or removed (`new` none). `key` is dotted.
    ParamChanged {
        /// Dotted path, e.g. `optimizer.lr`.
        key: String,
        /// Previous value.
        old: Option<Value>,
        /// New value.
        new: Option<Value>,
    },
    /// An input's content (or its list of sources) changed.
    InputChanged {
        /// Input name.
        name: String,
        /// Previous source and hash, e.g. `dataset:eeg@1a2b3c…`.
        old: Option<String>,
        /// New source and hash.
        new: Option<String>,
    },
    /// An input file does not exist.
    InputMissing {
        /// Input name.
        name: String,
        /// The missing file, relative to the project root.
        path: PathBuf,
    },
    /// The stage's kind changed.
    KindChanged {
        /// Previous kind.
        old: String,
        /// New kind.
        new: String,
    },
    /// The kind's implementation version changed.
    KindVersionChanged {
        /// The kind.
        kind: String,
        /// Previous version.
        old: u32,
        /// New version.
        new: u32,
    },
    /// The declared outputs changed (names or file names).
    OutputsChanged {
        /// Output name.
        name: String,
        /// Previous file name.
        old: Option<String>,
        /// New file name.
        new: Option<String>,
    },
    /// An upstream stage will run, so this stage's inputs are not known yet.
    UpstreamChanged {
        /// The upstream stage.
        stage: String,
    },
    /// An output in `results/` is missing.
    OutputMissing {
        /// Results path.
        path: PathBuf,
    },
    /// An output in `results/` differs from what the stage produced.
    OutputModified {
        /// Results path.
        path: PathBuf,
    },
    /// The key matches the lock but the run cache has no (complete) entry for it.
    CacheEntryMissing {
        /// The key.
        key: String,
    },
    /// The key changed for a reason the lock cannot show (e.g. it was written by another version).
    KeyChanged {
        /// Previous key.
        old: String,
        /// New key.
        new: String,
    },
}

fn show_value(value: &Option<Value>) -> String {
    match value {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => "nothing".into(),
    }
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::NeverRun => f.write_str("never run"),
            StaleReason::Forced => f.write_str("forced (--force)"),
            StaleReason::ParamChanged { key, old, new } => match (old, new) {
                (None, Some(_)) => write!(f, "param `{key}` added = {}", show_value(new)),
                (Some(_), None) => write!(f, "param `{key}` removed (was {})", show_value(old)),
                _ => write!(
                    f,
                    "param `{key}` changed {} → {}",
                    show_value(old),
                    show_value(new)
                ),
            },
            StaleReason::InputChanged { name, old, new } => match (old, new) {
                (None, Some(new)) => write!(f, "input `{name}` new ({new})"),
                (Some(old), None) => write!(f, "input `{name}` deleted (was {old})"),
                (Some(old), Some(new)) => write!(f, "input `{name}` modified ({old} → {new})"),
                (None, None) => write!(f, "input `{name}` modified"),
            },
            StaleReason::InputMissing { name, path } => write!(
                f,
                "input `{name}` missing: `{}` does not exist",
                path.display()
            ),
            StaleReason::KindChanged { old, new } => write!(f, "kind changed `{old}` → `{new}`"),
            StaleReason::KindVersionChanged { kind, old, new } => write!(
                f,
                "kind `{kind}` implementation changed (version {old} → {new})"
            ),
            StaleReason::OutputsChanged { name, old, new } => write!(
                f,
                "output `{name}` declaration changed {} → {}",
                old.as_deref().unwrap_or("nothing"),
                new.as_deref().unwrap_or("nothing")
            ),
            StaleReason::UpstreamChanged { stage } => {
                write!(f, "upstream stage `{stage}` is stale")
            }
            StaleReason::OutputMissing { path } => {
                write!(f, "output `{}` deleted", path.display())
            }
            StaleReason::OutputModified { path } => {
                write!(f, "output `{}` modified", path.display())
            }
            StaleReason::CacheEntryMissing { key } => write!(
                f,
                "not in cache (run cache has no complete entry for key {})",
                &key[..key.len().min(12)]
            ),
            StaleReason::KeyChanged { old, new } => write!(
                f,
                "cache key changed {} → {}",
                &old[..old.len().min(12)],
                &new[..new.len().min(12)]
            ),
        }
    }
}

/// What to do with a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing: results match.
    UpToDate,
    /// Copy outputs back from this run-cache entry; no recompute.
    Restore(RunEntry),
    /// Compute.
    Run,
}

/// The verdict on one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The key, when all inputs are known.
    pub key: Option<StageKey>,
    /// The input records the key was computed from.
    pub inputs: Option<BTreeMap<String, Vec<InputRecord>>>,
    /// Fresh, or stale with reasons.
    pub freshness: Freshness,
    /// What to do.
    pub action: Action,
}

/// Flatten params into dotted keys (arrays are leaves).
fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn describe_inputs(records: &[InputRecord]) -> String {
    records
        .iter()
        .map(|r| format!("{}@{}", r.source, r.hash.short()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reasons `stage` (with `inputs`, when known) differs from its lock `entry`.
pub fn differences(
    stage: &PlannedStage,
    inputs: Option<&BTreeMap<String, Vec<InputRecord>>>,
    entry: &LockEntry,
) -> Vec<StaleReason> {
    let mut reasons = Vec::new();
    if entry.kind != stage.kind {
        reasons.push(StaleReason::KindChanged {
            old: entry.kind.clone(),
            new: stage.kind.clone(),
        });
    } else if entry.version != stage.version {
        reasons.push(StaleReason::KindVersionChanged {
            kind: stage.kind.clone(),
            old: entry.version,
            new: stage.version,
        });
    }
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    flatten(&entry.params, "", &mut old);
    flatten(&stage.params, "", &mut new);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        if o != n {
            reasons.push(StaleReason::ParamChanged {
                key: key.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    if let Some(inputs) = inputs {
        let names: std::collections::BTreeSet<&String> =
            entry.inputs.keys().chain(inputs.keys()).collect();
        for name in names {
            let (o, n) = (entry.inputs.get(name), inputs.get(name));
            if o == n {
                continue;
            }
            let same_sources = match (o, n) {
                (Some(o), Some(n)) => {
                    o.len() == n.len() && o.iter().zip(n).all(|(a, b)| a.source == b.source)
                }
                _ => false,
            };
            if let (true, Some(o), Some(n)) = (same_sources, o, n) {
                // Same files, new content: name only the files that changed.
                let changed: Vec<(&InputRecord, &InputRecord)> =
                    o.iter().zip(n).filter(|(a, b)| a.hash != b.hash).collect();
                let old: Vec<String> = changed
                    .iter()
                    .map(|(a, _)| format!("{}@{}", a.source, a.hash.short()))
                    .collect();
                let new: Vec<String> = changed
                    .iter()
                    .map(|(_, b)| b.hash.short().to_string())
                    .collect();
                reasons.push(StaleReason::InputChanged {
                    name: name.clone(),
                    old: Some(old.join(", ")),
                    new: Some(new.join(", ")),
                });
            } else {
                reasons.push(StaleReason::InputChanged {
                    name: name.clone(),
                    old: o.map(|r| describe_inputs(r)),
                    new: n.map(|r| describe_inputs(r)),
                });
            }
        }
    }
    let names: std::collections::BTreeSet<&String> =
        entry.outputs.keys().chain(stage.outputs.keys()).collect();
    for name in names {
        let old = entry
            .outputs
            .get(name)
            .and_then(|o| o.path.file_name())
            .map(|f| f.to_string_lossy().into_owned());
        let new = stage.outputs.get(name).cloned();
        let old_path = entry.outputs.get(name).map(|o| o.path.clone());
        if old_path != stage.output_path(name) {
            reasons.push(StaleReason::OutputsChanged {
                name: name.clone(),
                old,
                new,
            });
        }
    }
    reasons
}

/// Decide what to do with `stage`. `inputs` is `Err(reasons)` when an upstream stage has not
/// produced its outputs yet.
pub fn assess(
    stage: &PlannedStage,
    inputs: Result<BTreeMap<String, Vec<InputRecord>>, Vec<StaleReason>>,
    entry: Option<&LockEntry>,
    store: &Store,
    memo: &mut FileHashCache,
    force: bool,
) -> Assessment {
    let inputs = match inputs {
        Ok(inputs) => inputs,
        Err(mut reasons) => {
            if let Some(entry) = entry {
                reasons.extend(differences(stage, None, entry));
            }
            return Assessment {
                key: None,
                inputs: None,
                freshness: Freshness::Stale(reasons),
                action: Action::Run,
            };
        }
    };
    let key = stage_key(stage, &inputs);
    if force {
        return Assessment {
            key: Some(key),
            inputs: Some(inputs),
            freshness: Freshness::Stale(vec![StaleReason::Forced]),
            action: Action::Run,
        };
    }
    let mut reasons = Vec::new();
    match entry {
        Some(entry) if entry.key == key => {
            for (name, record) in &entry.outputs {
                let expected = stage.output_path(name);
                if expected.as_ref() != Some(&record.path) {
                    continue;
                }
                match memo.hash(&store.root().join(&record.path)) {
                    Ok(Some(hash)) if hash == record.hash => {}
                    Ok(Some(_)) => reasons.push(StaleReason::OutputModified {
                        path: record.path.clone(),
                    }),
                    _ => reasons.push(StaleReason::OutputMissing {
                        path: record.path.clone(),
                    }),
                }
            }
            if reasons.is_empty() {
                return Assessment {
                    key: Some(key),
                    inputs: Some(inputs),
                    freshness: Freshness::Fresh,
                    action: Action::UpToDate,
                };
            }
        }
        Some(entry) => {
            reasons = differences(stage, Some(&inputs), entry);
            if reasons.is_empty() {
                reasons.push(StaleReason::KeyChanged {
                    old: entry.key.0.clone(),
                    new: key.0.clone(),
                });
            }
        }
        None => reasons.push(StaleReason::NeverRun),
    }
    let action = match store.run_entry(&key) {
        Some(run) => Action::Restore(run),
        None => {
            if matches!(entry, Some(e) if e.key == key) {
                reasons.push(StaleReason::CacheEntryMissing { key: key.0.clone() });
            }
            Action::Run
        }
    };
    Assessment {
        key: Some(key),
        inputs: Some(inputs),
        freshness: Freshness::Stale(reasons),
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::config::Origin;

    fn stage(params: Value) -> PlannedStage {
        PlannedStage {
            name: "a".into(),
            base: "a".into(),
            kind: "command".into(),
            version: 1,
            description: None,
            params,
            labels: BTreeMap::new(),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::from([("out".to_string(), "out.txt".to_string())]),
            upstream: vec![],
            origin: Origin {
                file: "p.yaml".into(),
                line: None,
                index: 0,
            },
        }
    }

    #[test]
    fn key_ignores_key_order_but_not_values() {
        let inputs = BTreeMap::new();
        let a = stage_key(
            &stage(serde_json::json!({"x": 1, "y": {"b": 2, "a": 3}})),
            &inputs,
        );
        let mut reordered = serde_json::Map::new();
        reordered.insert("y".into(), serde_json::json!({"a": 3, "b": 2}));
        reordered.insert("x".into(), Value::from(1));
        let b = stage_key(&stage(Value::Object(reordered)), &inputs);
        assert_eq!(a, b);
        let c = stage_key(
            &stage(serde_json::json!({"x": 2, "y": {"b": 2, "a": 3}})),
            &inputs,
        );
        assert_ne!(a, c);
        assert_eq!(a.0.len(), 64);
    }

    #[test]
    fn key_depends_on_input_content_version_and_outputs() {
        let s = stage(serde_json::json!({}));
        let record = |h: &str| {
            BTreeMap::from([(
                "data".to_string(),
                vec![InputRecord {
                    source: "dataset:eeg".into(),
                    hash: ContentHash(h.into()),
                }],
            )])
        };
        let base = stage_key(&s, &record("aa"));
        assert_ne!(base, stage_key(&s, &record("bb")));
        let mut bumped = s.clone();
        bumped.version = 2;
        assert_ne!(base, stage_key(&bumped, &record("aa")));
        let mut renamed = s.clone();
        renamed.outputs.insert("out".into(), "other.txt".into());
        assert_ne!(base, stage_key(&renamed, &record("aa")));
        // The name is not part of the key.
        let mut other_name = s.clone();
        other_name.name = "b".into();
        assert_eq!(base, stage_key(&other_name, &record("aa")));
    }

    #[test]
    fn param_differences_are_named_with_values() {
        let s = stage(serde_json::json!({"opt": {"lr": 0.002}, "new": true}));
        let entry = LockEntry {
            kind: "command".into(),
            version: 1,
            key: StageKey("x".into()),
            params: serde_json::json!({"opt": {"lr": 0.001}, "old": 1}),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            duration_secs: 0.0,
            summary: BTreeMap::new(),
        };
        let reasons: Vec<String> = differences(&s, Some(&BTreeMap::new()), &entry)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            reasons,
            [
                "param `new` added = true",
                "param `old` removed (was 1)",
                "param `opt.lr` changed 0.001 → 0.002",
                "output `out` declaration changed nothing → out.txt",
            ]
        );
    }
}
