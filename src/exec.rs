//! `lowrank-smc exec KIND`: run one stage kind once, outside any pipeline, on the user's own
//! files — the same code the pipeline runs, without the cache.
//!
//!     lowrank-smc exec prepare --set layout=time_by_channel --set data_source=real \
//!         --input data=recording.npy --out-dir prepared/
//!
//! Params come from `--params FILE.yaml` (a mapping) and/or `--set key=value` (a YAML value,
//! dotted keys for nesting); inputs from `--input name=PATH` (repeat a name for aggregates);
//! outputs are written as `<out-dir>/<file name the kind declares>` (or `--output name=PATH`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use lowrank_smc::pipeline::stage::{ProgressHandle, Registry, StageContext};

/// Arguments of `exec`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// Stage kind (see `lowrank-smc kinds`).
    pub kind: String,
    /// YAML/JSON file holding the params mapping.
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// One param as `key=value` (value parsed as YAML; `a.b=1` sets a nested key). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// An input as `name=PATH`. Repeatable; repeat a name to pass several files.
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Where to write an output, as `name=PATH` (default: `<out-dir>/<declared file name>`).
    #[arg(long = "output", short = 'o', value_name = "NAME=PATH")]
    pub outputs: Vec<String>,
    /// Directory for outputs without an explicit `--output`.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Threads to use [default: cores].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

fn split_pair<'a>(arg: &'a str, flag: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("{flag} `{arg}`: expected NAME=VALUE"),
    }
}

/// Insert `value` at dotted `key` in `root` (creating maps on the way).
fn set_path(root: &mut Value, key: &str, value: Value) -> anyhow::Result<()> {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = node
            .as_object_mut()
            .with_context(|| format!("--set {key}: `{}` is not a mapping", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return Ok(());
        }
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Build the params value from `--params` and `--set`.
pub fn build_params(args: &ExecArgs) -> anyhow::Result<Value> {
    let mut params = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading params file {}", path.display()))?;
            let v: Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("params file {}: not valid YAML", path.display()))?;
            if !v.is_object() {
                bail!(
                    "params file {}: expected a mapping of params",
                    path.display()
                );
            }
            v
        }
        None => Value::Object(Default::default()),
    };
    for s in &args.set {
        let (k, v) = split_pair(s, "--set")?;
        let value: Value = serde_yaml_ng::from_str(v)
            .with_context(|| format!("--set {k}: `{v}` is not a YAML value"))?;
        set_path(&mut params, k, value)?;
    }
    Ok(params)
}

/// Run `exec`; returns the output paths written.
pub fn run_exec(args: &ExecArgs, registry: &Registry) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let stage = registry
        .get(&args.kind)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let raw = build_params(args)?;
    let params = stage
        .check_params(&raw)
        .map_err(|e| anyhow::anyhow!("params of `{}`: {e}", args.kind))?;
    let mut inputs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for s in &args.inputs {
        let (k, v) = split_pair(s, "--input")?;
        let p = PathBuf::from(v);
        if !p.exists() {
            bail!("--input {k}: `{v}` does not exist");
        }
        inputs.entry(k.to_string()).or_default().push(p);
    }
    if let Some(expected) = stage.expected_inputs(&params) {
        for spec in expected {
            if spec.required && !inputs.contains_key(&spec.name) {
                bail!(
                    "kind `{}` needs input `{}`: add `--input {}=PATH`",
                    args.kind,
                    spec.name,
                    spec.name
                );
            }
        }
    }
    let explicit: BTreeMap<String, PathBuf> = args
        .outputs
        .iter()
        .map(|s| split_pair(s, "--output").map(|(k, v)| (k.to_string(), PathBuf::from(v))))
        .collect::<anyhow::Result<_>>()?;
    let created_out_dir = !args.out_dir.exists();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let scratch = tempdir_in(&args.out_dir)?;
    // On failure: the scratch directory goes, and the output directory too when this call
    // created it (remove_dir only removes it while it is empty).
    let clean_up = |scratch: &Path| {
        let _ = std::fs::remove_dir_all(scratch);
        if created_out_dir {
            let _ = std::fs::remove_dir(&args.out_dir);
        }
    };
    let mut staged = BTreeMap::new();
    let mut finals = Vec::new();
    for spec in stage.outputs(&params) {
        let final_path = explicit
            .get(&spec.name)
            .cloned()
            .unwrap_or_else(|| args.out_dir.join(&spec.file_name));
        staged.insert(
            spec.name.clone(),
            scratch.join(format!("out-{}", spec.file_name)),
        );
        finals.push((spec.name, final_path));
    }
    let labels = BTreeMap::new();
    let root = std::env::current_dir().context("current directory")?;
    let threads = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = {
        let mut ctx = StageContext::new(
            &args.kind,
            &params,
            &inputs,
            staged.clone(),
            &labels,
            ProgressHandle::disconnected(),
            threads,
            &root,
            work,
        );
        stage.run(&mut ctx)
    };
    if let Err(e) = result {
        clean_up(&scratch);
        bail!("{}: {e}", args.kind);
    }
    for (name, final_path) in &finals {
        let from = &staged[name];
        if !from.is_file() {
            clean_up(&scratch);
            bail!("kind `{}` did not write its output `{name}`", args.kind);
        }
        if let Some(parent) = final_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(from, final_path)
            .or_else(|_| std::fs::copy(from, final_path).map(|_| ()))
            .with_context(|| format!("writing {}", final_path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(finals)
}

/// A fresh private directory inside `dir` (same filesystem, so outputs are renamed in).
fn tempdir_in(dir: &Path) -> anyhow::Result<PathBuf> {
    for i in 0..1000u32 {
        let p = dir.join(format!(".lowrank-smc-exec-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!("cannot create a temporary directory in {}", dir.display())
}
