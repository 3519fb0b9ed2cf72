//! Crash safety and concurrency, driven through the real binary: `kill -9` in the middle of a
//! stage, two concurrent runs, failing stages and `--keep-going`.

mod engine_common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use engine_common::Project;

/// `a` is quick; `b` sleeps while the file `slow` exists (not an input, so not in the key).
const SLOW: &str = r#"
stages:
  - name: a
    kind: command
    params: {cmd: 'echo run >> counts/a; echo a > "$OUT_out"'}
    outputs: {out: a.txt}
  - name: b
    kind: command
    params:
      cmd: 'echo run >> counts/b; echo partial > "$OUT_out"; while [ -f slow ]; do sleep 0.05; done; echo b >> "$OUT_out"'
    inputs: {src: "a:out"}
    outputs: {out: b.txt}
"#;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_mid_stage_leaves_a_consistent_cache() {
    let project = Project::new(SLOW);
    project.write("slow", "");
    let mut child = project
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("stage b to start", || project.count("b") == 1);
    // Kill the whole process group (the engine and the stage's shell) with SIGKILL.
    let pgid = child.id() as i32;
    // SAFETY: sending a signal to the process group we created.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let _ = child.wait();

    // Nothing half-done is visible as done: b has no results and no lock entry.
    assert!(!project.path("results/b/b.txt").exists());
    assert!(!project.read("pipeline.lock").contains("\"b\""));
    assert_eq!(project.read("results/a/a.txt"), "a\n");
    // Every run-cache entry that exists is complete.
    let runs = project.path(".lowrank-smc/cache/runs");
    for entry in std::fs::read_dir(&runs).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let parsed: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(parsed["stage"], "a", "only a finished");
    }

    let status = project.run(&["status"]);
    assert!(
        status.stdout.contains("b: stale (will run)\n    never run"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains("\na: "), "{}", status.stdout);

    std::fs::remove_file(project.path("slow")).unwrap_or_else(|e| panic!("{e}"));
    let rerun = project.run(&["run"]);
    assert_eq!(rerun.code, 0, "{}", rerun.text());
    assert_eq!(project.counts(&["a", "b"]), [1, 2], "only b is redone");
    assert_eq!(project.read("results/b/b.txt"), "partial\nb\n");
    // The staging area of the killed run is gone.
    let leftovers = std::fs::read_dir(project.path(".lowrank-smc/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn concurrent_runs_are_serialised() {
    let project = Project::new(SLOW);
    project.write("slow", "");
    let first = project
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("stage b to start", || project.count("b") == 1);
    let second = project
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Give the second run time to find the lock taken, then let the first finish.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(project.path("slow")).unwrap_or_else(|e| panic!("{e}"));
    let first = first.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let second = second.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(second.status.code(), Some(0));
    let second_err = String::from_utf8_lossy(&second.stderr);
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second_err.contains("waiting for another lowrank-smc run on this project (pid"),
        "{second_err}"
    );
    assert!(second_out.contains("up to date"), "{second_out}");
    assert_eq!(project.counts(&["a", "b"]), [1, 1]);
}

const FAILING: &str = r#"
stages:
  - name: bad
    kind: command
    params: {cmd: 'echo run >> counts/bad; echo partial > "$OUT_out"; echo "something broke" >&2; exit 3'}
    outputs: {out: out.txt}
  - name: after_bad
    kind: command
    params: {cmd: 'echo run >> counts/after_bad; cat "$IN_x" > "$OUT_out"'}
    inputs: {x: "bad:out"}
    outputs: {out: out.txt}
  - name: other
    kind: command
    params: {cmd: 'echo run >> counts/other; echo ok > "$OUT_out"'}
    outputs: {out: out.txt}
  - name: missing_output
    kind: command
    params: {cmd: 'echo run >> counts/missing_output'}
    outputs: {out: out.txt}
"#;

#[test]
fn failed_stage_is_named_and_leaves_no_cache_entry() {
    let project = Project::new(FAILING);
    let run = project.run(&["run", "--jobs", "1", "--keep-going"]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains(
            "[FAILED]   bad: command `echo run >> counts/bad; echo partial > \"$OUT_out\"; echo \"something broke\" >&2; exit 3` exited with status 3; its output ends with:\nsomething broke"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("[skipped]  after_bad: upstream stage `bad` failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("[FAILED]   missing_output: the stage did not write its output `out`"),
        "{}",
        run.stdout
    );
    assert_eq!(project.counts(&["bad", "after_bad", "other"]), [1, 0, 1]);
    assert!(!project.path("results/bad/out.txt").exists());
    let runs = std::fs::read_dir(project.path(".lowrank-smc/cache/runs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 1, "only `other` is cached");

    // Without --keep-going the run stops at the first failure.
    let project = Project::new(FAILING);
    let run = project.run(&["run", "--jobs", "1"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("cancelled after a failure"),
        "{}",
        run.stdout
    );
    assert_eq!(project.counts(&["bad", "other"]), [1, 0]);
}
