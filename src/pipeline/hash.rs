//! Content hashes of files and directories, with a memo keyed by (path, size, mtime, inode) so a
//! big input is read once and not again until it changes.
//!
//! The memo only saves work: a hit is trusted because a rewrite changes the mtime (and usually
//! the size or inode). The hash itself never includes the mtime, so touching a file without
//! changing it costs one re-read, not a rerun.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A blake3 content hash, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(pub String);

impl ContentHash {
    /// The first 12 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hash a file's bytes.
pub fn hash_file(path: &Path) -> std::io::Result<ContentHash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(ContentHash(hasher.finalize().to_hex().to_string()))
}

/// Hash in-memory bytes.
pub fn hash_bytes(bytes: &[u8]) -> ContentHash {
    ContentHash(blake3::hash(bytes).to_hex().to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    hash: ContentHash,
}

fn stamp_of(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(-1);
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (meta.len(), mtime_ns, inode)
}

/// The (path, size, mtime, inode) → hash memo, stored as JSON in `.lowrank-smc/file-hashes.json`.
#[derive(Debug, Default)]
pub struct FileHashCache {
    entries: BTreeMap<PathBuf, Stamp>,
    dirty: bool,
}

impl FileHashCache {
    /// Load the memo (an unreadable or corrupt memo is simply empty: it only saves work).
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            entries,
            dirty: false,
        }
    }

    /// Save the memo atomically if it changed.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.entries).map_err(std::io::Error::other)?;
        super::cache::write_atomic(path, &bytes)?;
        self.dirty = false;
        Ok(())
    }

    /// The content hash of `path` (a file, or a directory hashed as its sorted file list);
    /// `Ok(None)` when it does not exist.
    pub fn hash(&mut self, path: &Path) -> std::io::Result<Option<ContentHash>> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        if meta.is_dir() {
            return self.hash_dir(path).map(Some);
        }
        let (size, mtime_ns, inode) = stamp_of(&meta);
        if let Some(stamp) = self.entries.get(path) {
            if stamp.size == size && stamp.mtime_ns == mtime_ns && stamp.inode == inode {
                return Ok(Some(stamp.hash.clone()));
            }
        }
        let hash = hash_file(path)?;
        self.remember(path, &meta, hash.clone());
        Ok(Some(hash))
    }

    /// Record that `path` (with metadata `meta`) has content `hash` (after writing it ourselves).
    pub fn remember(&mut self, path: &Path, meta: &std::fs::Metadata, hash: ContentHash) {
        let (size, mtime_ns, inode) = stamp_of(meta);
        self.entries.insert(
            path.to_path_buf(),
            Stamp {
                size,
                mtime_ns,
                inode,
                hash,
            },
        );
        self.dirty = true;
    }

    /// A directory's hash: blake3 over `relative path \0 file hash \n` for every file, sorted.
    fn hash_dir(&mut self, dir: &Path) -> std::io::Result<ContentHash> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.sort();
        let mut hasher = blake3::Hasher::new();
        for relative in files {
            let hash = self
                .hash(&dir.join(&relative))?
                .ok_or_else(|| std::io::Error::other("file vanished while hashing"))?;
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update(b"\0");
            hasher.update(hash.0.as_bytes());
            hasher.update(b"\n");
        }
        Ok(ContentHash(hasher.finalize().to_hex().to_string()))
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_hits_until_the_file_changes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one")?;
        let mut memo = FileHashCache::default();
        let first = memo.hash(&file)?;
        assert_eq!(first, Some(hash_bytes(b"one")));
        std::fs::write(&file, "two!")?;
        assert_eq!(memo.hash(&file)?, Some(hash_bytes(b"two!")));
        assert_eq!(memo.hash(&dir.path().join("missing"))?, None);
        let saved = dir.path().join("memo.json");
        memo.save(&saved)?;
        let mut loaded = FileHashCache::load(&saved);
        assert_eq!(loaded.hash(&file)?, Some(hash_bytes(b"two!")));
        Ok(())
    }

    #[test]
    fn directory_hash_depends_on_names_and_contents() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("d/sub"))?;
        std::fs::write(dir.path().join("d/sub/x"), "1")?;
        let mut memo = FileHashCache::default();
        let a = memo.hash(&dir.path().join("d"))?;
        std::fs::rename(dir.path().join("d/sub/x"), dir.path().join("d/sub/y"))?;
        let b = memo.hash(&dir.path().join("d"))?;
        assert_ne!(a, b);
        Ok(())
    }
}
