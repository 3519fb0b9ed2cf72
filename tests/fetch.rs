//! `lowrank-smc fetch ID` against a local HTTP server (no network needed): download and
//! verify, "already present" on the second call, resume of a partial download with a Range
//! request, a checksum mismatch leaves nothing behind (exit 1), bad manifests exit 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Serves `body` at any path; honours `Range: bytes=k-`. Records each request's range start.
fn serve(body: Vec<u8>) -> (String, Arc<Mutex<Vec<Option<u64>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                }
            }
            log.lock().expect("lock").push(range);
            let start = range.unwrap_or(0) as usize;
            let head = if range.is_some() {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    start,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[start..]);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (format!("http://{addr}/files/data.bin"), seen)
}

fn manifest(dir: &Path, id: &str, url: &str, size: usize, sha: &str) {
    std::fs::create_dir_all(dir.join("datasets")).expect("mkdir");
    std::fs::write(
        dir.join("datasets").join(format!("{id}.yaml")),
        format!("id: {id}\nurl: {url}\nsize: {size}\nsha256: {sha}\nlicence: test\n"),
    )
    .expect("write manifest");
}

fn fetch(dir: &Path, id: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .args(["fetch", id, "--project"])
        .arg(dir)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn download_verify_resume_and_reject() {
    let body: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha = format!("{:x}", Sha256::digest(&body));
    let (url, seen) = serve(body.clone());
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();

    manifest(d, "demo", &url, body.len(), &sha);
    let (code, text) = fetch(d, "demo");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("downloaded and verified"), "{text}");
    let file = d.join("data/demo/data.bin");
    assert_eq!(std::fs::read(&file).expect("file"), body);
    let (code, text) = fetch(d, "demo");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("already present"), "{text}");

    // Resume: a partial download from an earlier attempt is continued with a Range request.
    std::fs::remove_file(&file).expect("rm");
    std::fs::write(d.join("data/demo/data.bin.part"), &body[..70_000]).expect("part");
    let (code, text) = fetch(d, "demo");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("resumed after 70000 bytes"), "{text}");
    assert_eq!(std::fs::read(&file).expect("file"), body);
    assert!(seen.lock().expect("lock").contains(&Some(70_000)));

    // Wrong checksum: error, nothing kept.
    manifest(d, "bad", &url, body.len(), &"0".repeat(64));
    let (code, text) = fetch(d, "bad");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("sha256 mismatch") && text.contains("bad.yaml"),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(d.join("data/bad"))
        .expect("dir")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // Bad manifests / ids: exit 2 naming the file.
    std::fs::write(
        d.join("datasets/nosha.yaml"),
        format!("id: nosha\nurl: {url}\n"),
    )
    .expect("w");
    let (code, text) = fetch(d, "nosha");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("nosha.yaml") && text.contains("sha256"),
        "{text}"
    );
    let (code, text) = fetch(d, "missing");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing.yaml"), "{text}");
}

#[test]
fn repository_datasets_need_no_fetch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .args(["fetch", "eeg", "--project"])
        .arg(root)
        .arg("--data-dir")
        .arg(tmp.path())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ships in the repository"),
        "{text}"
    );
}

/// A pipeline input `dataset:ID` whose manifest has a `url:` (no repository `path:`) reads the
/// file `fetch ID` stores in the data directory; before it is there, the error says to fetch.
#[test]
fn pipelines_read_fetched_datasets_from_the_data_directory() {
    let d = std::env::temp_dir().join(format!("lrsmc-fetched-ds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("datasets")).unwrap();
    let data = d.join("data");
    std::fs::write(
        d.join("datasets/remote.yaml"),
        "id: remote\nurl: https://example.org/x/rec.txt\nsha256: null\n",
    )
    .unwrap();
    std::fs::write(
        d.join("pipeline.yaml"),
        "stages:\n  - {name: copy, kind: command, params: {cmd: 'cp \"$IN_d\" \"$OUT_out\"'}, inputs: {d: \"dataset:remote\"}, outputs: {out: o.txt}}\n",
    )
    .unwrap();
    let run = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
            .args(["run", "--no-progress"])
            .env("LOWRANK_SMC_DATA", &data)
            .current_dir(&d)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, text) = run();
    assert_ne!(code, Some(0));
    assert!(
        text.contains("dataset `remote` is not downloaded yet")
            && text.contains("lowrank-smc fetch remote")
            && text.contains("rec.txt"),
        "{text}"
    );
    std::fs::create_dir_all(data.join("remote")).unwrap();
    std::fs::write(data.join("remote/rec.txt"), "fetched bytes").unwrap();
    let (code, text) = run();
    assert_eq!(code, Some(0), "{text}");
    let out: Vec<_> = walk(&d.join("results"));
    assert!(
        out.iter()
            .any(|p| std::fs::read_to_string(p).ok().as_deref() == Some("fetched bytes")),
        "{out:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
