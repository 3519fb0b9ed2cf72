//! The `command` kind: a shell command as a stage, like a DVC stage, so users can put their own
//! scripts in the DAG.
//!
//! ```yaml
//! - name: demo.count
//!   kind: command
//!   params:
//!     cmd: 'wc -l < "$IN_text" > "$OUT_count"'
//!     env: {LANG: C}             # extra variables; their values are params (in the key)
//!   inputs: {text: "file:data/demo.txt"}
//!   outputs: {count: count.txt}  # declared here: the kind itself has none
//! ```
//!
//! The command runs with `sh -c` in the project root (or `workdir`, relative to it) with:
//! `IN_<name>` (the input's path; several paths one per line for aggregates), `OUT_<name>`
//! (where to write the output: a staging path the engine moves into the cache), `STAGE_NAME`,
//! `STAGE_SCRATCH` (a private temporary directory), `LABEL_<axis>` (matrix values),
//! `PROJECT_ROOT`, and `RAYON_NUM_THREADS` = `OMP_NUM_THREADS` = the stage's thread share.
//! Input, output and axis names are kept as written, with characters other than letters, digits
//! and `_` replaced by `_`. The command's stdout and stderr are captured; a nonzero exit fails
//! the stage with the tail of its stderr (or stdout, when stderr is empty).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::stage::{
    canonical_params, OutputSpec, ParamError, Stage, StageContext, StageError,
};

/// Params of a `command` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The shell command (`sh -c`).
    pub cmd: String,
    /// Extra environment variables (scalars).
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// Working directory relative to the project root (default: the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// Runs a shell command with declared inputs and outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandStage;

/// `name` as an environment-variable suffix.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Stage for CommandStage {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn version(&self) -> u32 {
        1
    }

    fn description(&self) -> &'static str {
        "a shell command with declared inputs ($IN_x) and outputs ($OUT_x)"
    }

    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let canonical = canonical_params::<CommandParams>(params)?;
        let parsed: CommandParams = serde_json::from_value(canonical.clone())
            .map_err(|e| ParamError::new("", e.to_string()))?;
        if parsed.cmd.trim().is_empty() {
            return Err(ParamError::new("cmd", "empty command"));
        }
        for (key, value) in &parsed.env {
            if scalar_text(value).is_none() {
                return Err(ParamError::new(
                    format!("env.{key}"),
                    "environment values must be strings, numbers or booleans",
                ));
            }
            if key.is_empty() || env_name(key) != *key {
                return Err(ParamError::new(
                    format!("env.{key}"),
                    "variable names may use letters, digits and `_` only",
                ));
            }
        }
        if let Some(dir) = &parsed.workdir {
            let path = std::path::Path::new(dir);
            if !path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            }) {
                return Err(ParamError::new(
                    "workdir",
                    "must be relative to the project root, without `..`",
                ));
            }
        }
        Ok(canonical)
    }

    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        Vec::new()
    }

    fn accepts_extra_outputs(&self) -> bool {
        true
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let params: CommandParams = ctx.params_as()?;
        let workdir = match &params.workdir {
            Some(dir) => ctx.project_root().join(dir),
            None => ctx.project_root().to_path_buf(),
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&params.cmd)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("STAGE_NAME", ctx.stage_name())
            .env("STAGE_SCRATCH", ctx.scratch_dir())
            .env("PROJECT_ROOT", ctx.project_root())
            .env("RAYON_NUM_THREADS", ctx.threads().to_string())
            .env("OMP_NUM_THREADS", ctx.threads().to_string());
        for (name, paths) in ctx.all_inputs() {
            let joined: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            command.env(format!("IN_{}", env_name(name)), joined.join("\n"));
        }
        for (name, path) in ctx.all_outputs() {
            command.env(format!("OUT_{}", env_name(name)), path);
        }
        for (axis, value) in ctx.labels() {
            command.env(format!("LABEL_{}", env_name(axis)), value);
        }
        for (key, value) in &params.env {
            command.env(key, scalar_text(value).unwrap_or_default());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
            // the thread that spawned it dies, so a `kill -9` of the engine leaves no orphan
            // still writing into a staging directory.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| StageError::with_source("cannot start `sh`", e))?;
        // Read stdout on a thread so neither pipe can fill up and block the child.
        let stdout = child.stdout.take();
        let stdout_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut out) = stdout {
                let _ = out.read_to_string(&mut text);
            }
            text
        });
        let mut stderr_text = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr_text);
        }
        let status = child
            .wait()
            .map_err(|e| StageError::with_source("waiting for the command", e))?;
        let stdout_text = stdout_reader.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    format!("was killed by signal {}", status.signal().unwrap_or(0))
                }
                #[cfg(not(unix))]
                {
                    "was killed".to_string()
                }
            }
        };
        let detail = if stderr_text.trim().is_empty() {
            tail(&stdout_text, 10)
        } else {
            tail(&stderr_text, 10)
        };
        Err(StageError::new(format!(
            "command `{}` {how}{}",
            params.cmd,
            if detail.is_empty() {
                String::new()
            } else {
                format!("; its output ends with:\n{detail}")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stage::ProgressHandle;
    use std::path::PathBuf;

    #[test]
    fn params_are_checked() {
        let stage = CommandStage;
        assert!(stage
            .check_params(&serde_json::json!({"cmd": "true"}))
            .is_ok());
        let err = stage
            .check_params(&serde_json::json!({"cmd": "true", "env": {"A": [1]}}))
            .unwrap_err();
        assert_eq!(err.path, "env.A");
        let err = stage
            .check_params(&serde_json::json!({"command": "true"}))
            .unwrap_err();
        assert!(err.message.contains("unknown field `command`"), "{err}");
        let err = stage
            .check_params(&serde_json::json!({"cmd": "true", "workdir": "../x"}))
            .unwrap_err();
        assert_eq!(err.path, "workdir");
    }

    fn run_in(dir: &std::path::Path, cmd: &str) -> Result<String, StageError> {
        let params = serde_json::json!({"cmd": cmd, "env": {"GREETING": "hi"}});
        let inputs = BTreeMap::from([("a".to_string(), vec![PathBuf::from("/in/a")])]);
        let out = dir.join("out.txt");
        let labels = BTreeMap::from([("seed".to_string(), "3".to_string())]);
        let mut ctx = StageContext::new(
            "demo[seed=3]",
            &params,
            &inputs,
            BTreeMap::from([("result".to_string(), out.clone())]),
            &labels,
            ProgressHandle::disconnected(),
            2,
            dir,
            dir.to_path_buf(),
        );
        CommandStage.run(&mut ctx)?;
        Ok(std::fs::read_to_string(out).unwrap_or_default())
    }

    #[test]
    fn command_sees_its_environment() -> Result<(), StageError> {
        let dir = tempfile::tempdir().map_err(|e| StageError::with_source("tempdir", e))?;
        let text = run_in(
            dir.path(),
            r#"echo "$GREETING $IN_a $LABEL_seed $RAYON_NUM_THREADS $STAGE_NAME" > "$OUT_result""#,
        )?;
        assert_eq!(text, "hi /in/a 3 2 demo[seed=3]\n");
        Ok(())
    }

    #[test]
    fn failure_carries_the_stderr_tail() {
        let dir = tempfile::tempdir().ok();
        let dir = dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(std::path::Path::new("/tmp"));
        let err = run_in(dir, "echo boom >&2; exit 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(err.ends_with("boom"), "{err}");
    }
}
