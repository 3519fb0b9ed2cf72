//! `lowrank-smc exec KIND` and the direct subcommands (`lowrank-smc fit …`, `generate`, …):
//! run one stage kind once, outside any pipeline, on the user's own files — the same code the
//! pipeline runs, without the cache.
//!
//!     lowrank-smc fit data.h5 --params fit.yaml --out-dir fitted/
//!     lowrank-smc exec prepare recording.npy --set layout=time_by_channel \
//!         --set data_source=real --out-dir prepared/
//!
//! Params come from `--params FILE.yaml` (a mapping) and/or `--set key=value` (a YAML value,
//! dotted keys for nesting); inputs are files given as `PATH` (they fill the kind's inputs in
//! the order `--help` lists them) or `NAME=PATH` (also `--input NAME=PATH`; repeat a name for
//! aggregates); outputs are written as `<out-dir>/<file name the kind declares>` (or
//! `--output name=PATH`). Progress goes to stderr (a bar on a terminal, lines otherwise), the
//! paths written to stdout.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use lowrank_smc::pipeline::events::{format_duration, EventKind, PlainReporter, Reporter};
use lowrank_smc::pipeline::stage::{InputSpec, ProgressHandle, Registry, Stage, StageContext};
use lowrank_smc::pipeline::StageEvent;

/// Arguments of `exec`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// Stage kind (see `lowrank-smc kinds`).
    pub kind: String,
    #[command(flatten)]
    pub options: ExecOptions,
}

/// What `exec KIND` and a direct subcommand (`lowrank-smc fit …`) take besides the kind.
#[derive(clap::Args)]
pub struct ExecOptions {
    /// Input files: `PATH` fills the kind's inputs in order (see `--help` of the kind's
    /// subcommand, e.g. `lowrank-smc fit --help`); `NAME=PATH` names the input.
    #[arg(value_name = "[NAME=]PATH")]
    pub files: Vec<String>,
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
    /// No progress on stderr (by default a bar on a terminal, a line every 5 s otherwise).
    #[arg(long)]
    pub no_progress: bool,
}

/// The text under a direct subcommand's `--help`: the kind's inputs in positional order and
/// its outputs (with default params).
pub fn kind_help(stage: &dyn Stage) -> String {
    let params = stage
        .check_params(&Value::Object(Default::default()))
        .unwrap_or_else(|_| Value::Object(Default::default()));
    let mut text = String::new();
    match stage.expected_inputs(&params) {
        Some(inputs) if !inputs.is_empty() => {
            text.push_str("Inputs, in the order bare PATHs fill them:\n");
            for i in inputs {
                let what = match (i.required, i.many) {
                    (_, true) => "one or more files",
                    (true, false) => "required",
                    (false, false) => "optional",
                };
                text.push_str(&format!("  {:<14} {what}\n", i.name));
            }
        }
        Some(_) => text.push_str("Inputs: none\n"),
        None => text.push_str("Inputs: any, as NAME=PATH\n"),
    }
    text.push_str("Outputs (in --out-dir; with default params):\n");
    for o in stage.outputs(&params) {
        text.push_str(&format!("  {:<14} {}\n", o.name, o.file_name));
    }
    text.push_str(
        "Params: --params FILE (YAML/JSON mapping) and --set KEY=VALUE; a pipeline stage's \
         params are printed by `lowrank-smc show STAGE`.",
    );
    text
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
pub fn build_params(args: &ExecOptions) -> anyhow::Result<Value> {
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

/// The inputs from the positional `files` (`PATH` or `NAME=PATH`) and the `--input NAME=PATH`
/// flags: a bare PATH fills the next of the kind's `expected` inputs not named otherwise (an
/// aggregate input takes every remaining bare PATH). Every file must exist.
pub fn resolve_inputs(
    kind: &str,
    files: &[String],
    named: &[String],
    expected: Option<&[InputSpec]>,
) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
    type Inputs = BTreeMap<String, Vec<PathBuf>>;
    fn add(inputs: &mut Inputs, k: &str, v: &str, how: &str) -> anyhow::Result<()> {
        if !Path::new(v).exists() {
            bail!("{how}{k}: `{v}` does not exist");
        }
        inputs
            .entry(k.to_string())
            .or_default()
            .push(PathBuf::from(v));
        Ok(())
    }
    let mut inputs = Inputs::new();
    for s in named {
        let (k, v) = split_pair(s, "--input")?;
        add(&mut inputs, k, v, "--input ")?;
    }
    // `NAME=PATH` when NAME is one of the kind's inputs (or, for a kind that declares none, a
    // plain word); anything else is a path, even with an `=` in it.
    let is_name = |k: &str| match expected {
        Some(specs) => specs.iter().any(|s| s.name == k),
        None => !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
    };
    let mut bare = Vec::new();
    for s in files {
        match s.split_once('=') {
            Some((k, v)) if is_name(k) && !Path::new(s).exists() => {
                add(&mut inputs, k, v, "input ")?
            }
            _ => bare.push(s.as_str()),
        }
    }
    if bare.is_empty() {
        return Ok(inputs);
    }
    let Some(specs) = expected else {
        bail!(
            "kind `{kind}` declares no inputs, so `{}` cannot be placed: pass inputs as NAME=PATH",
            bare[0]
        );
    };
    let open: Vec<&InputSpec> = specs
        .iter()
        .filter(|s| !inputs.contains_key(&s.name))
        .collect();
    let mut slots = open.into_iter();
    let mut rest = bare.into_iter();
    while let Some(path) = rest.next() {
        let Some(slot) = slots.next() else {
            let names: Vec<String> = specs.iter().map(|s| format!("`{}`", s.name)).collect();
            bail!(
                "`{path}`: one file too many; kind `{kind}` reads {}, in that order",
                if names.is_empty() {
                    "no inputs".to_string()
                } else {
                    names.join(", ")
                }
            );
        };
        add(&mut inputs, &slot.name, path, "input ")?;
        if slot.many {
            for more in rest.by_ref() {
                add(&mut inputs, &slot.name, more, "input ")?;
            }
        }
    }
    Ok(inputs)
}

/// Shows a stage's [`StageEvent`]s on stderr while it runs: an indicatif bar on a terminal,
/// plain lines (at most one progress line every 5 s) otherwise.
fn spawn_progress(
    kind: &str,
    bar: bool,
) -> (mpsc::Sender<StageEvent>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<StageEvent>();
    let kind = kind.to_string();
    let handle = std::thread::spawn(move || {
        if !bar {
            let mut plain = PlainReporter::new(std::io::stderr(), false);
            for event in rx {
                plain.event(&event);
            }
            return;
        }
        let pb =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} {prefix} [{bar:30}] {pos}/{len} {wide_msg} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_prefix(kind);
        pb.enable_steady_tick(Duration::from_millis(200));
        for event in rx {
            match event.kind {
                EventKind::Progress {
                    position,
                    total,
                    message,
                } => {
                    if let Some(t) = total {
                        pb.set_length(t);
                    }
                    pb.set_position(position);
                    pb.set_message(message);
                }
                EventKind::Finished { elapsed, .. } => {
                    pb.finish_and_clear();
                    eprintln!("done     {} in {}", event.stage, format_duration(elapsed));
                }
                EventKind::Failed { .. } => pb.finish_and_clear(),
                _ => {}
            }
        }
        pb.finish_and_clear();
    });
    (tx, handle)
}

/// Run stage kind `kind` once; returns the output paths written.
pub fn run_exec(
    kind: &str,
    args: &ExecOptions,
    registry: &Registry,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let stage = registry.get(kind).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut raw = build_params(args)?;
    // Params the input files settle and the user left out (`fit`: the data's dimensions). The
    // inputs are placed by the params as given; a file that cannot be placed is reported
    // below, once the params are checked.
    let expected = stage.expected_inputs(&raw);
    let placed = resolve_inputs(kind, &args.files, &args.inputs, expected.as_deref());
    if let Ok(given) = &placed {
        let filled = stage
            .params_from_inputs(&mut raw, given)
            .map_err(|e| anyhow::anyhow!("{kind}: {e}"))?;
        for line in filled {
            eprintln!("{kind}: {line}");
        }
    }
    let params = stage.check_params(&raw).map_err(|e| {
        let e = e.to_string();
        // A one-off run with too few params: say where complete ones come from.
        let hint = if e.contains("missing field") {
            "\n  hint: give the params as a file (`--params FILE`, YAML or JSON; `lowrank-smc \
             show STAGE` prints a pipeline stage's, and `configs/` holds examples) or one by one \
             (`--set KEY=VALUE`)"
        } else {
            ""
        };
        // The files could not be placed either (and so did not fill what they could): say
        // so too, so that one correction does not lead to the next error.
        let files = match &placed {
            Err(p) => format!("\n  and the input files: {p:#}"),
            Ok(_) => String::new(),
        };
        anyhow::anyhow!("params of `{kind}`: {e}{hint}{files}")
    })?;
    let expected = stage.expected_inputs(&params);
    let inputs = resolve_inputs(kind, &args.files, &args.inputs, expected.as_deref())?;
    if let Some(expected) = &expected {
        for spec in expected {
            if spec.required && !inputs.contains_key(&spec.name) {
                bail!(
                    "kind `{kind}` needs input `{}`: add `{}=PATH` (or `--input {}=PATH`)",
                    spec.name,
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
    let progress =
        (!args.no_progress).then(|| spawn_progress(kind, std::io::stderr().is_terminal()));
    let send = |event: EventKind| {
        if let Some((tx, _)) = &progress {
            let _ = tx.send(StageEvent::now(kind, event));
        }
    };
    send(EventKind::Started { threads });
    let started = Instant::now();
    let result = {
        let handle = match &progress {
            Some((tx, _)) => ProgressHandle::reporting(kind, tx.clone()),
            None => ProgressHandle::disconnected(),
        };
        let mut ctx = StageContext::new(
            kind,
            &params,
            &inputs,
            staged.clone(),
            &labels,
            handle,
            threads,
            &root,
            work,
        );
        stage.run(&mut ctx)
    };
    match &result {
        Ok(()) => send(EventKind::Finished {
            elapsed: started.elapsed(),
            note: None,
        }),
        Err(e) => send(EventKind::Failed {
            error: e.to_string(),
        }),
    }
    if let Some((tx, handle)) = progress {
        drop(tx);
        let _ = handle.join();
    }
    if let Err(e) = result {
        clean_up(&scratch);
        bail!("{kind}: {e}");
    }
    for (name, final_path) in &finals {
        let from = &staged[name];
        if !from.is_file() {
            clean_up(&scratch);
            bail!("kind `{kind}` did not write its output `{name}`");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<InputSpec> {
        vec![
            InputSpec::required("model"),
            InputSpec::required("data"),
            InputSpec::many("tables"),
        ]
    }

    fn names(inputs: &BTreeMap<String, Vec<PathBuf>>) -> Vec<(String, usize)> {
        inputs.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    #[test]
    fn bare_paths_fill_the_inputs_in_order_around_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            p.display().to_string()
        };
        let (a, b, c, d) = (f("a"), f("b"), f("c"), f("d"));
        let specs = specs();
        // In order; the aggregate takes every remaining file.
        let got = resolve_inputs(
            "k",
            &[a.clone(), b.clone(), c.clone(), d.clone()],
            &[],
            Some(&specs),
        )
        .unwrap();
        assert_eq!(got["model"], vec![PathBuf::from(&a)]);
        assert_eq!(got["data"], vec![PathBuf::from(&b)]);
        assert_eq!(got["tables"], vec![PathBuf::from(&c), PathBuf::from(&d)]);
        // A named input is skipped by the bare ones.
        let got =
            resolve_inputs("k", &[format!("model={a}"), b.clone()], &[], Some(&specs)).unwrap();
        assert_eq!(got["model"], vec![PathBuf::from(&a)]);
        assert_eq!(got["data"], vec![PathBuf::from(&b)]);
        let got = resolve_inputs(
            "k",
            std::slice::from_ref(&b),
            &[format!("model={a}")],
            Some(&specs),
        )
        .unwrap();
        assert_eq!(names(&got), vec![("data".into(), 1), ("model".into(), 1)]);
        // `x=…` where x is no input name is a path.
        let err = resolve_inputs("k", &[format!("x={a}")], &[], Some(&specs)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("`x={a}` does not exist")),
            "{err}"
        );
    }

    #[test]
    fn too_many_missing_and_undeclared_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let a = a.display().to_string();
        let one = [InputSpec::required("data")];
        let err = resolve_inputs("fit", &[a.clone(), a.clone()], &[], Some(&one)).unwrap_err();
        assert!(err.to_string().contains("one file too many"), "{err}");
        assert!(err.to_string().contains("`data`"), "{err}");
        let err = resolve_inputs("fit", &["nope.h5".into()], &[], Some(&one)).unwrap_err();
        assert!(
            err.to_string().contains("`nope.h5` does not exist"),
            "{err}"
        );
        // A kind that declares no inputs takes NAME=PATH only.
        let got = resolve_inputs("command", &[format!("src={a}")], &[], None).unwrap();
        assert_eq!(names(&got), vec![("src".into(), 1)]);
        let err = resolve_inputs("command", std::slice::from_ref(&a), &[], None).unwrap_err();
        assert!(err.to_string().contains("declares no inputs"), "{err}");
    }
}
