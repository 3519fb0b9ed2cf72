//! `pipeline.lock`: what the last run of each stage used and produced, written by the tool and
//! meant to be read and diffed by people (pretty JSON, keys sorted), never edited.
//!
//! It is the record `status` compares against to say *why* a stage is stale: the resolved
//! params (so a changed key can be named with its old and new value), the content hash of every
//! input, and the hash of every output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cache::{canonical_value, write_atomic, StageKey};
use super::hash::ContentHash;

/// Format version of `pipeline.lock`.
pub const LOCK_FORMAT: u32 = 1;

/// The whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version.
    pub format: u32,
    /// The profile of the last run.
    #[serde(default)]
    pub profile: String,
    /// Stage name → record.
    pub stages: BTreeMap<String, LockEntry>,
}

/// What one stage's last successful run (or restore) used and produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// Stage kind.
    pub kind: String,
    /// Kind implementation version.
    pub version: u32,
    /// The cache key.
    pub key: StageKey,
    /// Canonical params.
    pub params: Value,
    /// Input name → sources with their content hashes.
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    /// Output name → results path and content hash.
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Wall time of the run that produced the outputs, in seconds.
    pub duration_secs: f64,
    /// Values the stage recorded (`ctx.record`), e.g. final ELBO.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub summary: BTreeMap<String, Value>,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    /// The reference: `eeg.fit:model`, `dataset:eeg`, `file:scripts/x.py`.
    pub source: String,
    /// Its content hash.
    pub hash: ContentHash,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    /// Results path, relative to the project root.
    pub path: PathBuf,
    /// Content hash (also its name in the object store).
    pub hash: ContentHash,
    /// Size in bytes.
    pub size: u64,
}

/// Why `pipeline.lock` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message} (hint: it is written by lowrank-smc; delete it to start afresh, cached outputs are kept)")]
pub struct LockFileError {
    /// The lock file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl LockFile {
    /// Read `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Self, LockFileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    format: LOCK_FORMAT,
                    ..Default::default()
                })
            }
            Err(err) => {
                return Err(LockFileError {
                    path: path.to_path_buf(),
                    message: err.to_string(),
                })
            }
        };
        let lock: LockFile = serde_json::from_slice(&bytes).map_err(|err| LockFileError {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        if lock.format != LOCK_FORMAT {
            return Err(LockFileError {
                path: path.to_path_buf(),
                message: format!("format {} is not the supported {LOCK_FORMAT}", lock.format),
            });
        }
        Ok(lock)
    }

    /// The lock as text (pretty JSON, keys sorted, trailing newline).
    pub fn to_text(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut text = serde_json::to_string_pretty(&canonical_value(&value)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Write atomically when the text changed.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = self.to_text();
        if std::fs::read(path).ok().as_deref() == Some(text.as_bytes()) {
            return Ok(());
        }
        write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_sorted() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pipeline.lock");
        let mut lock = LockFile {
            format: LOCK_FORMAT,
            profile: "paper".into(),
            stages: BTreeMap::new(),
        };
        lock.stages.insert(
            "b".into(),
            LockEntry {
                kind: "command".into(),
                version: 1,
                key: StageKey("k".into()),
                params: serde_json::json!({"z": 1, "a": {"y": 2, "b": 3}}),
                inputs: BTreeMap::new(),
                outputs: BTreeMap::new(),
                duration_secs: 0.5,
                summary: BTreeMap::new(),
            },
        );
        lock.save(&path)?;
        let text = std::fs::read_to_string(&path)?;
        let a = text.find("\"a\"").unwrap_or(usize::MAX);
        let z = text.find("\"z\"").unwrap_or(0);
        assert!(a < z, "{text}");
        let loaded = LockFile::load(&path).map_err(std::io::Error::other)?;
        assert_eq!(loaded, lock);
        assert!(LockFile::load(&dir.path().join("none"))
            .map(|l| l.stages.is_empty())
            .unwrap_or(false));
        Ok(())
    }
}
