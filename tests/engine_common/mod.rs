//! Helpers for the engine's integration tests: a temporary project and the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lowrank-smc")
}

/// A temporary project directory with a pipeline in it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What a run printed and how it exited.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A chain a → b → c plus an independent d. Each stage appends a line to `counts/<name>`
/// (outside the cache) every time it really runs.
pub const CHAIN: &str = r#"
stages:
  - name: a
    kind: command
    params:
      cmd: 'echo run >> counts/a; echo "a $X" > "$OUT_out"'
      env: {X: 1}
    outputs: {out: a.txt}
  - name: b
    kind: command
    params:
      cmd: 'echo run >> counts/b; cat "$IN_src" > "$OUT_out"; echo "b $LR" >> "$OUT_out"'
      env: {LR: 0.001}
    inputs: {src: "a:out"}
    outputs: {out: b.txt}
  - name: c
    kind: command
    params:
      cmd: 'echo run >> counts/c; wc -c < "$IN_src" > "$OUT_out"'
    inputs: {src: "b:out"}
    outputs: {out: c.txt}
  - name: d
    kind: command
    params:
      cmd: 'echo run >> counts/d; echo d > "$OUT_out"'
    outputs: {out: d.txt}
"#;

impl Project {
    /// A project whose `pipeline.yaml` is `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let project = Project { dir };
        project.write("pipeline.yaml", pipeline);
        std::fs::create_dir_all(project.path("counts")).unwrap_or_else(|e| panic!("{e}"));
        project
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_default()
    }

    /// Replace `from` by `to` in `pipeline.yaml`.
    pub fn edit(&self, from: &str, to: &str) {
        let text = self.read("pipeline.yaml");
        assert!(text.contains(from), "`{from}` not in pipeline.yaml");
        self.write("pipeline.yaml", &text.replacen(from, to, 1));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.args(args).current_dir(self.root());
        command
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", binary()))
            .into()
    }

    /// How many times stage `name` really ran.
    pub fn count(&self, name: &str) -> usize {
        self.read(&format!("counts/{name}")).lines().count()
    }

    pub fn counts(&self, names: &[&str]) -> Vec<usize> {
        names.iter().map(|n| self.count(n)).collect()
    }
}
