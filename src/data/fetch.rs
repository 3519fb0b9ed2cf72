//! `lowrank-smc fetch ID`: download a dataset named by `datasets/<id>.yaml` into the data
//! directory outside the repository, resuming a partial download, verifying size and sha256.
//!
//! A manifest for a fetchable dataset:
//!
//! ```yaml
//! id: mc_maze_small
//! url: https://api.dandiarchive.org/api/assets/<asset id>/download/
//! file: sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb   # name in the data directory
//! size: 47015216                                              # bytes
//! sha256: 9f0c…                                               # of the whole file
//! licence: CC-BY-4.0
//! citation: …
//! ```
//!
//! The file lands in `<data dir>/<id>/<file>`, where the data directory is `$LOWRANK_SMC_DATA`,
//! else `$XDG_DATA_HOME/lowrank-smc`, else `~/.local/share/lowrank-smc`. The download goes to
//! `<file>.part` (kept between attempts so the next `fetch` resumes with an HTTP `Range`
//! request); only a complete file whose size and sha256 match is renamed into place. A
//! mismatch deletes the partial file and is an error: nothing half-written stays.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What can go wrong while fetching.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The manifest is missing or malformed.
    #[error("{path}: {message}")]
    Manifest {
        /// Manifest file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No data directory could be chosen.
    #[error(
        "no data directory: set LOWRANK_SMC_DATA (or XDG_DATA_HOME / HOME) to where datasets \
         should be stored"
    )]
    NoDataDir,
    /// Network or HTTP failure.
    #[error("downloading {url}: {message}")]
    Http {
        /// URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// Local file failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The downloaded bytes are not the file the manifest describes.
    #[error(
        "{url}: {what} mismatch — expected {expected}, got {got}; the partial file was deleted \
         (the server's file changed or the transfer was corrupted; if the manifest is out of \
         date, fix `{manifest}`)"
    )]
    Mismatch {
        /// URL.
        url: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// From the manifest.
        expected: String,
        /// Computed.
        got: String,
        /// Manifest path.
        manifest: String,
    },
}

/// The fields of a manifest `fetch` needs.
#[derive(Debug, Clone, Deserialize)]
pub struct FetchManifest {
    /// Dataset id (must equal the file stem).
    pub id: String,
    /// Download URL (http or https).
    pub url: Option<String>,
    /// File name in the data directory (default: the URL's last path segment).
    #[serde(default)]
    pub file: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// sha256 of the file, lowercase hex.
    pub sha256: Option<String>,
    /// A file shipped in the repository instead (nothing to fetch).
    #[serde(default)]
    pub path: Option<String>,
}

/// The file name a fetched dataset is stored under: `file:`, else the URL's last segment.
pub fn stored_file_name(file: Option<&str>, url: &str, id: &str) -> Result<String, String> {
    let file = match file {
        Some(f) => f.to_string(),
        None => url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(id)
            .to_string(),
    };
    if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
        return Err("`file:` must be a plain file name".into());
    }
    Ok(file)
}

/// Where fetched datasets live.
pub fn data_dir() -> Result<PathBuf, FetchError> {
    if let Some(d) = std::env::var_os("LOWRANK_SMC_DATA").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("lowrank-smc"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/lowrank-smc"))
        .ok_or(FetchError::NoDataDir)
}

/// Reads and checks `datasets/<id>.yaml` under `root`.
pub fn read_manifest(root: &Path, id: &str) -> Result<(PathBuf, FetchManifest), FetchError> {
    let path = root.join("datasets").join(format!("{id}.yaml"));
    let bad = |message: String| FetchError::Manifest {
        path: path.clone(),
        message,
    };
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(bad(format!("`{id}` is not a dataset id")));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "cannot read the manifest ({e}); the ids are the file stems of datasets/*.yaml"
        ))
    })?;
    let m: FetchManifest = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if m.id != id {
        return Err(bad(format!(
            "`id: {}` differs from the file name ({id})",
            m.id
        )));
    }
    Ok((path, m))
}

/// Outcome of [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The dataset ships in the repository (`path:`); nothing to download.
    InRepository(PathBuf),
    /// Already present and verified.
    AlreadyPresent(PathBuf),
    /// Downloaded (resumed from `resumed_from` bytes) and verified.
    Downloaded {
        /// Final path.
        path: PathBuf,
        /// Bytes that were already there from an earlier attempt.
        resumed_from: u64,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(io_err(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Downloads dataset `id` of the project at `root` into `data_dir` (see the module docs).
/// `progress(done, total)` is called as bytes arrive.
pub fn fetch(
    root: &Path,
    id: &str,
    data_dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched, FetchError> {
    let (manifest_path, m) = read_manifest(root, id)?;
    let manifest = manifest_path.display().to_string();
    let bad = |message: &str| FetchError::Manifest {
        path: manifest_path.clone(),
        message: message.to_string(),
    };
    let Some(url) = m.url.clone() else {
        if let Some(p) = &m.path {
            return Ok(Fetched::InRepository(root.join(p)));
        }
        return Err(bad(
            "no `url:` to download from (nor a `path:` in the repository)",
        ));
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(bad("`url:` must be an http(s) URL"));
    }
    let sha = m
        .sha256
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            bad("`sha256:` (64 hex digits) is required: fetch only keeps files it can verify")
        })?;
    let file = stored_file_name(m.file.as_deref(), &url, id).map_err(|e| bad(&e))?;
    let dir = data_dir.join(id);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let dest = dir.join(&file);
    if dest.is_file() {
        let got = sha256_file(&dest)?;
        if got == sha {
            return Ok(Fetched::AlreadyPresent(dest));
        }
        // A file that does not verify is not ours to trust: download it again.
        std::fs::remove_file(&dest).map_err(io_err(&dest))?;
    }
    let part = dir.join(format!("{file}.part"));
    let mut have = std::fs::metadata(&part).map(|md| md.len()).unwrap_or(0);
    if m.size.is_some_and(|s| have > s) {
        std::fs::remove_file(&part).map_err(io_err(&part))?;
        have = 0;
    }
    let http = |message: String| FetchError::Http {
        url: url.clone(),
        message,
    };
    let resumed_from;
    if m.size != Some(have) || have == 0 {
        let mut request = ureq::get(&url);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                // Range past the end: what we have is all there is; verify it below.
                return finish(&part, &dest, &url, &sha, m.size, &manifest, have);
            }
            Err(e) => return Err(http(e.to_string())),
        };
        let append = have > 0 && response.status() == 206;
        if !append {
            have = 0;
        }
        resumed_from = have;
        let total = m.size.or_else(|| {
            response
                .header("Content-Length")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|l| l + have)
        });
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .map_err(io_err(&part))?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = have;
        progress(done, total);
        loop {
            let k = reader
                .read(&mut buf)
                .map_err(|e| http(format!("{e} (run fetch again to resume)")))?;
            if k == 0 {
                break;
            }
            out.write_all(&buf[..k]).map_err(io_err(&part))?;
            done += k as u64;
            progress(done, total);
        }
        out.sync_all().map_err(io_err(&part))?;
        have = done;
    } else {
        resumed_from = have;
    }
    match finish(&part, &dest, &url, &sha, m.size, &manifest, have)? {
        Fetched::Downloaded { path, .. } => Ok(Fetched::Downloaded { path, resumed_from }),
        other => Ok(other),
    }
}

/// Verifies `part` (size, sha256) and renames it to `dest`; deletes it on a mismatch.
fn finish(
    part: &Path,
    dest: &Path,
    url: &str,
    sha: &str,
    size: Option<u64>,
    manifest: &str,
    have: u64,
) -> Result<Fetched, FetchError> {
    let mismatch = |what, expected: String, got: String| {
        std::fs::remove_file(part).ok();
        FetchError::Mismatch {
            url: url.to_string(),
            what,
            expected,
            got,
            manifest: manifest.to_string(),
        }
    };
    if let Some(s) = size {
        if s != have {
            return Err(mismatch(
                "size",
                format!("{s} bytes"),
                format!("{have} bytes"),
            ));
        }
    }
    let got = sha256_file(part)?;
    if got != sha {
        return Err(mismatch("sha256", sha.to_string(), got));
    }
    std::fs::rename(part, dest).map_err(io_err(dest))?;
    Ok(Fetched::Downloaded {
        path: dest.to_path_buf(),
        resumed_from: 0,
    })
}
