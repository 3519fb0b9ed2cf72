//! `gc`: drop run-cache entries and objects that `pipeline.lock` does not refer to.
//!
//! What the lock refers to (each stage's key and output hashes) is kept; everything else in
//! `.lowrank-smc/cache` goes, including the entries that would let a reverted param restore old
//! outputs without recomputing — that is the space `gc` gives back.

use std::collections::BTreeSet;
use std::path::Path;

use super::cache::{RunEntry, Store};
use super::hash::ContentHash;
use super::lockfile::LockFile;

/// What `gc` removed (or would remove, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Run-cache entries removed.
    pub runs: usize,
    /// Objects removed.
    pub objects: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Resume directories of interrupted stages (kept unless asked; see [`Store::resume_dir`]).
    pub resume_dirs: usize,
    /// Their size in bytes.
    pub resume_bytes: u64,
    /// Whether they were removed.
    pub resume_removed: bool,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{} and {} ({:.1} MB)",
            plural(self.runs, "run-cache entry", "run-cache entries"),
            plural(self.objects, "object", "objects"),
            self.bytes as f64 / 1e6
        )?;
        if self.resume_dirs > 0 {
            let dirs = plural(self.resume_dirs, "resume directory", "resume directories");
            let mb = self.resume_bytes as f64 / 1e6;
            if self.resume_removed {
                write!(f, "; {dirs} of interrupted stages ({mb:.1} MB)")?;
            } else {
                write!(
                    f,
                    "; kept {dirs} of interrupted stages ({mb:.1} MB: their next run continues \
                     from there; `gc --resume` drops them)"
                )?;
            }
        }
        Ok(())
    }
}

/// Remove what `lock` does not refer to, and with `drop_resume` the resume state of interrupted
/// stages. Call under the project lock.
pub fn collect_garbage(
    store: &Store,
    lock: &LockFile,
    dry_run: bool,
    drop_resume: bool,
) -> std::io::Result<GcReport> {
    let keys: BTreeSet<String> = lock.stages.values().map(|e| e.key.0.clone()).collect();
    let mut live: BTreeSet<ContentHash> = lock
        .stages
        .values()
        .flat_map(|e| e.outputs.values().map(|o| o.hash.clone()))
        .collect();
    let mut report = GcReport::default();
    for path in list(&store.runs_dir())? {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if keys.contains(&stem) {
            if let Some(entry) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RunEntry>(&b).ok())
            {
                live.extend(entry.outputs.values().map(|o| o.hash.clone()));
            }
            continue;
        }
        report.runs += 1;
        if !dry_run {
            std::fs::remove_file(&path)?;
        }
    }
    for dir in list(&store.objects_dir())? {
        let head = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for object in list(&dir)? {
            let tail = object
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if live.contains(&ContentHash(format!("{head}{tail}"))) {
                continue;
            }
            report.objects += 1;
            report.bytes += std::fs::metadata(&object).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(&object)?;
            }
        }
    }
    for dir in list(&store.state_dir().join("resume"))? {
        report.resume_dirs += 1;
        report.resume_bytes += dir_size(&dir);
        if drop_resume && !dry_run {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    report.resume_removed = drop_resume;
    if !dry_run {
        store.clean_staging()?;
    }
    Ok(report)
}

fn dir_size(dir: &Path) -> u64 {
    list(dir)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            if p.is_dir() {
                dir_size(p)
            } else {
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn list(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(err) => Err(err),
    }
}
