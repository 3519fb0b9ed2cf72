//! `lowrank-smc bench engine`: how long the engine itself takes when there is nothing to do.
//!
//! A generated pipeline of 200 `command` stages (20 chains of 10) is run once, then a cached
//! no-op `run` and a `status` are timed in-process (median of 5; parsing, expansion, planning,
//! hashing checks and the lock write included, process start-up excluded). Goal: < 100 ms for
//! the no-op run (DVC takes seconds on such a pipeline).

use std::fmt;
use std::time::{Duration, Instant};

use super::cache::Store;
use super::events::PlainReporter;
use super::executor::{lock_path, run, RunOptions};
use super::hash::FileHashCache;
use super::lockfile::LockFile;
use super::plan::status;
use super::stage::Registry;

/// One benchmark result: a figure and its ratio to the goal.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchLine {
    /// What was measured.
    pub case: String,
    /// The measured figure.
    pub value: f64,
    /// Its unit (`ms`, `s`, `it/s`).
    pub unit: String,
    /// The goal or reference figure, same unit.
    pub goal: f64,
    /// True when smaller is better (then the goal is an upper bound).
    pub lower_is_better: bool,
}

impl fmt::Display for BenchLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let relation = if self.lower_is_better { "<" } else { ">" };
        let ratio = if self.goal != 0.0 {
            self.value / self.goal
        } else {
            f64::NAN
        };
        write!(
            f,
            "{}: {:.1} {} (goal {relation} {} {}; {:.2}× goal)",
            self.case, self.value, self.unit, self.goal, self.unit, ratio
        )
    }
}

/// The generated 200-stage pipeline (20 chains of 10 `command` stages).
pub fn generated_pipeline(chains: usize, length: usize) -> String {
    let mut yaml = String::from("stages:\n");
    for chain in 0..chains {
        for step in 0..length {
            yaml.push_str(&format!(
                "  - name: chain{chain}.step{step}\n    kind: command\n    params: {{cmd: 'echo {chain}-{step} > \"$OUT_out\"{}'}}\n    outputs: {{out: out.txt}}\n",
                if step > 0 { " && cat \"$IN_prev\" >> \"$OUT_out\"" } else { "" }
            ));
            if step > 0 {
                yaml.push_str(&format!(
                    "    inputs: {{prev: \"chain{chain}.step{}:out\"}}\n",
                    step - 1
                ));
            }
        }
    }
    yaml
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Run the engine benchmark with `registry` (which must know the `command` kind).
pub fn bench_engine(registry: &Registry) -> Result<Vec<BenchLine>, String> {
    let dir = tempfile_dir()?;
    let result = bench_in(&dir, registry);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("lowrank-smc-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn bench_in(dir: &std::path::Path, registry: &Registry) -> Result<Vec<BenchLine>, String> {
    let pipeline = dir.join("pipeline.yaml");
    std::fs::write(&pipeline, generated_pipeline(20, 10)).map_err(|e| e.to_string())?;
    let load = || super::dag::load(&pipeline, super::dag::DEFAULT_PROFILE, registry);
    let options = RunOptions::default();
    let mut sink = PlainReporter::new(std::io::sink(), false);

    let started = Instant::now();
    let dag = load().map_err(|e| e.to_string())?;
    let summary = run(&dag, registry, &options, &mut sink).map_err(|e| e.to_string())?;
    let first = started.elapsed();
    if summary.ran != 200 {
        return Err(format!("expected 200 stages to run, got {summary}"));
    }

    let mut noop = Vec::new();
    let mut stat = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let dag = load().map_err(|e| e.to_string())?;
        let summary = run(&dag, registry, &options, &mut sink).map_err(|e| e.to_string())?;
        noop.push(started.elapsed());
        if summary.up_to_date != 200 {
            return Err(format!("the second run was not a no-op: {summary}"));
        }
        let started = Instant::now();
        let dag = load().map_err(|e| e.to_string())?;
        let store = Store::new(&dag.root);
        let lock = LockFile::load(&lock_path(&dag)).map_err(|e| e.to_string())?;
        let mut memo = FileHashCache::load(&store.memo_path());
        let statuses = status(&dag, &store, &lock, &mut memo);
        stat.push(started.elapsed());
        if statuses.iter().any(|s| !s.is_fresh()) {
            return Err("status found stale stages after a full run".into());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(vec![
        BenchLine {
            case: "engine: first run, 200 command stages".into(),
            value: ms(first),
            unit: "ms".into(),
            goal: 10_000.0,
            lower_is_better: true,
        },
        BenchLine {
            case: "engine: cached no-op run, 200 stages".into(),
            value: ms(median(noop)),
            unit: "ms".into(),
            goal: 100.0,
            lower_is_better: true,
        },
        BenchLine {
            case: "engine: status, 200 stages".into(),
            value: ms(median(stat)),
            unit: "ms".into(),
            goal: 100.0,
            lower_is_better: true,
        },
    ])
}
