//! `lowrank-smc`: the command line. Thin by design: parse flags, call the library, render,
//! choose the exit code (0 ok, 1 a stage failed or something is stale with `status --check`,
//! 2 bad usage or configuration).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use lowrank_smc::pipeline::cache::Store;
use lowrank_smc::pipeline::compare::{compare, load_side, Tolerance};
use lowrank_smc::pipeline::dag::{Dag, InputSource, DEFAULT_PROFILE};
use lowrank_smc::pipeline::events::{BarReporter, PlainReporter, Reporter};
use lowrank_smc::pipeline::executor::{default_jobs, lock_path, EngineError, RunOptions};
use lowrank_smc::pipeline::hash::FileHashCache;
use lowrank_smc::pipeline::lockfile::LockFile;
use lowrank_smc::pipeline::plan::{render_status, status};
use lowrank_smc::pipeline::project_lock::ProjectLock;
use lowrank_smc::pipeline::stage::Registry;
use lowrank_smc::pipeline::{bench, gc};

mod exec;

/// Exit code: a stage failed (or `status --check` found stale stages).
const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or configuration.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lowrank-smc",
    version,
    about = "Fit stochastic low-rank RNNs to neural data with variational SMC, as a cached pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct PipelineArgs {
    /// The pipeline file; its directory is the project root.
    #[arg(default_value = "pipeline.yaml")]
    pipeline: PathBuf,
    /// Param profile (e.g. `quick`, `paper`).
    #[arg(long, default_value = DEFAULT_PROFILE)]
    profile: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stale stage (or the selected ones), reusing cached results.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stage name or glob to run (repeatable); stale upstream stages it needs run too.
        #[arg(long = "stage", value_name = "NAME|GLOB")]
        stages: Vec<String>,
        /// Also run everything downstream of the selected stages.
        #[arg(long, requires = "stages")]
        downstream: bool,
        /// Recompute the selected stages (all if none selected) even when up to date.
        #[arg(long)]
        force: bool,
        /// Thread budget shared by parallel stages and their own threads [default: cores].
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
        /// Say what would run, and why, without running anything.
        #[arg(long)]
        dry_run: bool,
        /// After a failure, keep running stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Plain log lines even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Also list stages that are up to date.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Which stages are stale, and why.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Exit with status 1 when any stage is stale.
        #[arg(long)]
        check: bool,
        /// Also list up-to-date stages.
        #[arg(long, short)]
        verbose: bool,
    },
    /// The stage graph as a text tree (or Graphviz with --dot).
    Dag {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Graphviz dot output.
        #[arg(long)]
        dot: bool,
    },
    /// One stage: params, inputs, outputs with paths, key, last duration, freshness.
    Show {
        /// Stage name.
        stage: String,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Two results tables side by side (a .parquet file, or a reference table such as `paper`).
    Compare {
        /// Left table.
        left: String,
        /// Right table (a .parquet file, a reference .yaml, or a name in datasets/).
        right: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Md)]
        format: Format,
        /// Relative tolerance for "within tolerance".
        #[arg(long, default_value_t = 0.05)]
        rtol: f64,
        /// Absolute tolerance for "within tolerance".
        #[arg(long, default_value_t = 0.0)]
        atol: f64,
        /// Project root (where datasets/ lives).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Drop cache entries and objects that pipeline.lock does not refer to.
    Gc {
        /// The pipeline file (its pipeline.lock is kept).
        #[arg(default_value = "pipeline.yaml")]
        pipeline: PathBuf,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also drop the resume state of interrupted stages (their next run starts over).
        #[arg(long)]
        resume: bool,
    },
    /// Speed benchmarks: `engine` (and, when built in, train, metrics, fixed-points, ingest).
    Bench {
        /// The area to benchmark.
        area: String,
        /// Only the cases whose name contains this text (e.g. `--case "N=512 R=3"`); repeatable,
        /// a case runs when its name contains any of them. `bench train` and `bench
        /// fixed-points` only: the other areas always run all their cases.
        #[arg(long = "case", value_name = "TEXT")]
        cases: Vec<String>,
        /// `bench train` only: the reference's seconds per epoch for a case, measured on this
        /// machine (e.g. by `scripts/reference-bench.py`), in place of the stated figure;
        /// repeatable. CASE starts a case key: eeg, continuous, poisson, full-rank 30, …
        #[arg(long = "reference", value_name = "CASE=SECONDS")]
        references: Vec<String>,
    },
    /// The stage kinds this build knows.
    Kinds,
    /// Run one stage kind once on your own files, without a pipeline or cache
    /// (e.g. `exec prepare --set layout=time_by_channel --set data_source=real --input data=F.npy`).
    Exec(exec::ExecArgs),
    /// All fixed points of a fitted model (model.h5) or a JSON map, exactly (SPEC §4), with
    /// Jacobian eigenvalues and stability.
    FixedPoints {
        /// A `fit` output (model.h5), a teacher JSON (datasets/teachers/*.json) or a JSON
        /// file with a `model` block (README).
        model: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: FixedPointFormat,
    },
    /// The VSMC training loss (minus the filtering ELBO) of a fitted model on a sequences file,
    /// without updating it: to compare models on the same data, or on held-out data.
    Score {
        /// A `fit` output (model.h5).
        model: PathBuf,
        /// A sequences file (HDF5 with `x`, e.g. a `prepare` or `bin` output).
        data: PathBuf,
        /// Score random windows of this many steps (as `windows.length` in `fit`); without it,
        /// the file's trials as they are.
        #[arg(long)]
        window: Option<usize>,
        /// Windows per pass (with --window).
        #[arg(long, default_value_t = 500)]
        windows: usize,
        /// Passes over the data.
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Sequences per minibatch.
        #[arg(long, default_value_t = 10)]
        batch_size: usize,
        /// Particles K [default: the model's].
        #[arg(long)]
        particles: Option<usize>,
        /// Seed of windows and particles.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Bin an NWB file's spikes (and behaviour / LFP) onto a time grid → an HDF5 sequences file
    /// that `fit` reads (the `bin` stage kind, once).
    Bin(BinCli),
    /// Convert a CRCNS hippocampus session (hc-2, hc-11: Neuroscope/KlustaKwik files BASE.res.K,
    /// BASE.clu.K, BASE.eeg, BASE.whl, BASE.xml) into one NWB file that `bin` reads.
    ConvertCrcns {
        /// Session base path, e.g. `ec013.527/ec013.527` (without extension).
        base: PathBuf,
        /// Output NWB file.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        options: lowrank_smc::data::crcns::CrcnsOptions,
    },
    /// Export a sequences file (e.g. `generate`'s output) as NWB: one TimeSeries per sequence
    /// under `processing/lowrank_smc`, readable by pynwb.
    ExportNwb {
        /// The sequences file (HDF5 with `x`).
        sequences: PathBuf,
        /// Output NWB file.
        #[arg(long)]
        out: PathBuf,
        /// Sampling rate (Hz) of the sequences' time steps (e.g. 50 for 20 ms bins).
        #[arg(long)]
        rate_hz: f64,
        /// Unit of the values.
        #[arg(long, default_value = "a.u.")]
        unit: String,
    },
    /// Download a dataset named by `datasets/ID.yaml` (`url`, `size`, `sha256`) into the data
    /// directory ($LOWRANK_SMC_DATA, else ~/.local/share/lowrank-smc), resuming a partial
    /// download and verifying the checksum.
    Fetch {
        /// Dataset id (the file stem of `datasets/ID.yaml`).
        id: String,
        /// Project directory holding `datasets/`.
        #[arg(long, default_value = ".")]
        project: PathBuf,
        /// Store here instead of the default data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FixedPointFormat {
    Md,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Md,
    Csv,
    Json,
}

fn main() -> ExitCode {
    // HDF5 flock()s every file it opens, without O_CLOEXEC: a child process started while a
    // file is open (a `command` stage, a Python reference) inherits the lock and keeps it after
    // we close the file, and the next open fails with "unable to lock file". Stages write to
    // their own temporary directories under the project lock, so HDF5's lock adds nothing here.
    // Set before any thread starts; a user's explicit setting wins.
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
    }
    keep_freed_memory();
    let registry = lowrank_smc::stages::registry();
    let matches = cli_with_kinds(&registry).get_matches();
    let result = match direct_kind(&matches, &registry) {
        Some((kind, sub)) => exec::ExecOptions::from_arg_matches(sub)
            .map_err(|e| e.exit())
            .and_then(|options| run_exec_and_print(&kind, &options, &registry)),
        None => match Cli::from_arg_matches(&matches) {
            Ok(cli) => dispatch(cli, &registry),
            Err(e) => e.exit(),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Stage kinds without a direct subcommand: `command` wraps a shell command (a pipeline's
/// business), and `bin` and `fixed_points` have their own (`bin`, `fixed-points`, with flags of
/// their own; `exec bin` and `exec fixed_points` run the stage kinds as such).
const NO_DIRECT_SUBCOMMAND: &[&str] = &["command", "bin", "fixed_points"];

/// The command line: [`Cli`]'s subcommands and one per stage kind (`fit`, `generate`, …,
/// with `_` written `-`), each taking [`exec::ExecOptions`] as `exec KIND` does.
fn cli_with_kinds(registry: &Registry) -> clap::Command {
    let mut cmd = Cli::command();
    for stage in registry.iter() {
        let name = stage.kind().replace('_', "-");
        if NO_DIRECT_SUBCOMMAND.contains(&stage.kind()) || cmd.find_subcommand(&name).is_some() {
            continue;
        }
        let description = stage.description();
        let mut chars = description.chars();
        let capitalised: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        // About and help after `augment_args`, which would put ExecOptions' own doc there.
        let sub = exec::ExecOptions::augment_args(clap::Command::new(name))
            .about(format!(
                "{capitalised} (the `{}` stage kind, once, on your files)",
                stage.kind()
            ))
            .after_help(exec::kind_help(stage));
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// The stage kind and its arguments when the subcommand is a stage kind's.
fn direct_kind<'m>(
    matches: &'m clap::ArgMatches,
    registry: &Registry,
) -> Option<(String, &'m clap::ArgMatches)> {
    let (name, sub) = matches.subcommand()?;
    let kind = name.replace('-', "_");
    let is_kind = registry.get(&kind).is_ok() && !NO_DIRECT_SUBCOMMAND.contains(&kind.as_str());
    (is_kind && Cli::command().find_subcommand(name).is_none()).then_some((kind, sub))
}

/// `exec KIND …` or `KIND …`: run it, print the outputs written.
fn run_exec_and_print(
    kind: &str,
    options: &exec::ExecOptions,
    registry: &Registry,
) -> anyhow::Result<ExitCode> {
    for (name, path) in exec::run_exec(kind, options, registry)? {
        println!("{name}: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Keep freed memory in the process instead of returning it to the kernel at once.
///
/// glibc trims a thread arena's heap with `madvise` when its free top exceeds the trim
/// threshold, and serves blocks above the mmap threshold with fresh mappings. A fit allocates a
/// megabyte or so of buffers per trial on each rayon thread, so every trial faulted its pages in
/// again: ≈ 10 % of a Poisson teacher–student epoch in `perf` (page faults, zeroing, `madvise`).
/// Fixed thresholds (256 MB, 1 GB) keep those pages; the peak memory is unchanged. A user's own
/// `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_THRESHOLD_` wins.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |var: &str| std::env::var_os(var).is_some();
        if !set("MALLOC_TRIM_THRESHOLD_") && !set("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: mallopt only changes two allocator parameters; called before any thread.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    }
}

/// Load the DAG or print every configuration problem (exit 2).
fn load(args: &PipelineArgs, registry: &Registry) -> Result<Dag, ExitCode> {
    lowrank_smc::pipeline::load(&args.pipeline, &args.profile, registry).map_err(|err| {
        eprintln!("error: invalid configuration\n{err}");
        ExitCode::from(EXIT_USAGE)
    })
}

macro_rules! try_load {
    ($args:expr, $registry:expr) => {
        match load($args, $registry) {
            Ok(dag) => dag,
            Err(code) => return Ok(code),
        }
    };
}

fn dispatch(cli: Cli, registry: &Registry) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            pipeline,
            stages,
            downstream,
            force,
            jobs,
            dry_run,
            keep_going,
            no_progress,
            verbose,
        } => {
            let dag = try_load!(&pipeline, &registry);
            let jobs = jobs.map(|j| j as usize).unwrap_or_else(default_jobs);
            // Stray rayon work outside `ctx.install` stays within the same budget.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(jobs)
                .build_global();
            let options = RunOptions {
                stages,
                downstream,
                force,
                jobs,
                dry_run,
                keep_going,
            };
            let mut reporter: Box<dyn Reporter> =
                if std::io::stderr().is_terminal() && !no_progress && !dry_run {
                    Box::new(BarReporter::new(dag.stages.len()))
                } else {
                    Box::new(PlainReporter::new(std::io::stdout(), verbose))
                };
            match lowrank_smc::pipeline::run(&dag, registry, &options, reporter.as_mut()) {
                Ok(plan) if options.dry_run => {
                    println!(
                        "dry run: {} would run, {} would be restored from the run cache, {} up to date",
                        plan.ran, plan.restored, plan.up_to_date
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(summary) if summary.success() => Ok(ExitCode::SUCCESS),
                Ok(_) => Ok(ExitCode::from(EXIT_FAILED)),
                Err(EngineError::Selection(message)) => {
                    eprintln!("error: {message}");
                    Ok(ExitCode::from(EXIT_USAGE))
                }
                Err(err) => Err(err.into()),
            }
        }
        Command::Status {
            pipeline,
            json,
            check,
            verbose,
        } => {
            let dag = try_load!(&pipeline, &registry);
            let store = Store::new(&dag.root);
            let lock = LockFile::load(&lock_path(&dag))?;
            let mut memo = FileHashCache::load(&store.memo_path());
            let statuses = status(&dag, &store, &lock, &mut memo);
            let _ = memo.save(&store.memo_path());
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print!("{}", render_status(&statuses, verbose));
            }
            let stale = statuses.iter().any(|s| !s.is_fresh());
            Ok(if check && stale {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Dag { pipeline, dot } => {
            let dag = try_load!(&pipeline, &registry);
            print!(
                "{}",
                if dot {
                    render_dot(&dag)
                } else {
                    render_tree(&dag)
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { stage, pipeline } => {
            let dag = try_load!(&pipeline, &registry);
            show(&dag, &stage)
        }
        Command::Compare {
            left,
            right,
            format,
            rtol,
            atol,
            root,
        } => {
            let sides = load_side(&left, &root).and_then(|l| Ok((l, load_side(&right, &root)?)));
            let (left_table, right_table) = match sides {
                Ok(sides) => sides,
                Err(err) => {
                    eprintln!("error: {err}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            let comparison = match compare(&left_table, &right_table, Tolerance { rtol, atol }) {
                Ok(c) => c,
                Err(err) => {
                    eprintln!("error: {err}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            match format {
                Format::Md => print!("{}", comparison.to_markdown()),
                Format::Csv => print!("{}", comparison.to_csv()),
                Format::Json => println!("{}", comparison.to_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            pipeline,
            dry_run,
            resume,
        } => {
            let root = project_root(&pipeline);
            let store = Store::new(&root);
            let (_guard, _) = ProjectLock::acquire(store.state_dir(), |pid| {
                eprintln!(
                    "waiting for a lowrank-smc run{} to finish…",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                )
            })
            .context("taking the project lock")?;
            let lock = LockFile::load(&pipeline.with_extension("lock"))?;
            let report = gc::collect_garbage(&store, &lock, dry_run, resume)?;
            println!(
                "{} {report}",
                if dry_run { "would remove" } else { "removed" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            area,
            cases,
            references,
        } => run_bench(&area, &cases, &references, registry),
        Command::Exec(args) => run_exec_and_print(&args.kind, &args.options, registry),
        Command::FixedPoints { model, format } => {
            use lowrank_smc::analysis::{cli, fixed_points};
            let map = cli::load_map(&model)?;
            let set = fixed_points::find_fixed_points(&map, &fixed_points::Options::default())?;
            match format {
                FixedPointFormat::Md => print!("{}", cli::report_md(&set)),
                FixedPointFormat::Json => println!("{}", serde_json::to_string_pretty(&set)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ConvertCrcns { base, out, options } => {
            let summary = lowrank_smc::data::crcns::convert_session(&base, &out, &options)?;
            println!(
                "{}: {} units ({} spikes) from shanks {:?}, {} LFP samples per channel, {} position frames",
                out.display(),
                summary.n_units,
                summary.n_spikes,
                summary.shanks,
                summary.lfp_samples,
                summary.position_frames
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Score {
            model,
            data,
            window,
            windows,
            passes,
            batch_size,
            particles,
            seed,
        } => {
            use lowrank_smc::stages::fit::{score_model, ScoreOptions};
            let report = score_model(
                &model,
                &data,
                &ScoreOptions {
                    window,
                    per_pass: windows,
                    passes,
                    batch_size,
                    n_particles: particles,
                    seed,
                },
            )?;
            let (mean, sem) = report.mean_sem();
            println!(
                "{}\tloss {mean:.4} ± {sem:.4} (sem over {} minibatches, K = {})",
                model.display(),
                report.batch_losses.len(),
                report.n_particles
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch {
            id,
            project,
            data_dir,
        } => run_fetch(&id, &project, data_dir),
        Command::ExportNwb {
            sequences,
            out,
            rate_hz,
            unit,
        } => {
            use lowrank_smc::data::sequences_io::{read_attr, read_sequences};
            let seq = read_sequences(&sequences)?;
            let source = read_attr(&sequences, "data_source")?.unwrap_or_else(|| "unknown".into());
            let description = format!(
                "exported by lowrank-smc from {}; data_source={source}",
                sequences.display()
            );
            lowrank_smc::data::nwb_write::export_sequences(
                &seq,
                &out,
                rate_hz,
                &unit,
                &description,
            )?;
            println!(
                "{}: {} sequences × {} channels × {} steps at {rate_hz} Hz",
                out.display(),
                seq.n_sequences,
                seq.dim_x,
                seq.n_time
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bin(args) => run_bin(args),
        Command::Kinds => {
            for kind in registry.iter() {
                let note = kind
                    .version_note()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                println!(
                    "{:<16} v{:<3} {}{note}",
                    kind.kind(),
                    kind.version(),
                    kind.description()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bin FILE.nwb --bin-ms 20 --out F.h5 …`.
#[derive(clap::Args)]
struct BinCli {
    /// The NWB file.
    file: PathBuf,
    /// Bin width (ms).
    #[arg(long)]
    bin_ms: f64,
    /// Output HDF5 file.
    #[arg(long)]
    out: PathBuf,
    /// Trial-aligned windows: EVENT:START_MS:END_MS (e.g. move_onset_time:-250:450).
    #[arg(long, value_name = "EVENT:START_MS:END_MS")]
    align: Option<String>,
    /// Keep trials whose `split` column is one of these (comma-separated: train,val).
    #[arg(long)]
    splits: Option<String>,
    /// A TimeSeries path to bin onto the same grid (repeatable).
    #[arg(long = "behavior", value_name = "NWB_PATH")]
    behavior: Vec<String>,
    /// Also bin the LFP; with LO,HI (Hz) band-pass it first (e.g. --lfp 6,10 for theta).
    #[arg(long, value_name = "LO,HI", num_args = 0..=1, default_missing_value = "")]
    lfp: Option<String>,
    /// Continuous recordings: cut into sequences of this many seconds.
    #[arg(long)]
    segment_s: Option<f64>,
    /// Keep NLB's held-out units in `x` (default: they go to `x_heldout`).
    #[arg(long)]
    keep_heldout: bool,
    /// `data_source` label (default: from the file: surrogate or real).
    #[arg(long)]
    data_source: Option<String>,
}

/// `bin FILE.nwb --bin-ms 20 --out F.h5`.
fn run_bin(a: BinCli) -> anyhow::Result<ExitCode> {
    use lowrank_smc::stages::bin::{
        bin_nwb, psth_figure, write_binned, Align, BinParams, LfpParams,
    };
    let (file, out) = (a.file.as_path(), a.out.as_path());
    let align = match a.align {
        None => None,
        Some(s) => {
            let parts: Vec<&str> = s.rsplitn(3, ':').collect();
            let bad = || {
                anyhow::anyhow!(
                    "--align {s}: expected EVENT:START_MS:END_MS, e.g. move_onset_time:-250:450"
                )
            };
            if parts.len() != 3 {
                return Err(bad());
            }
            Some(Align {
                event: parts[2].to_string(),
                start_ms: parts[1].parse().map_err(|_| bad())?,
                end_ms: parts[0].parse().map_err(|_| bad())?,
            })
        }
    };
    let lfp = match a.lfp {
        None => None,
        Some(s) if s.is_empty() => Some(LfpParams::default()),
        Some(s) => {
            let v: Vec<f64> = s
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--lfp {s}: expected LO,HI in Hz, e.g. 6,10"))?;
            if v.len() != 2 {
                anyhow::bail!("--lfp {s}: expected LO,HI in Hz, e.g. 6,10");
            }
            Some(LfpParams {
                path: None,
                band_hz: Some([v[0], v[1]]),
            })
        }
    };
    let p = BinParams {
        bin_ms: a.bin_ms,
        align,
        splits: a
            .splits
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect()),
        split_heldout: !a.keep_heldout,
        behavior: a.behavior,
        lfp,
        start_s: None,
        end_s: None,
        segment_s: a.segment_s,
        data_source: a.data_source,
    };
    let b = bin_nwb(file, &p)?;
    write_binned(out, &b)?;
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fig = psth_figure(&out.with_file_name(format!("{stem}_psth")), &b, p.bin_ms)?;
    println!(
        "{}: x {} sequences × {} units × {} bins ({} spikes binned); figure {}",
        out.display(),
        b.x.n_sequences,
        b.x.dim_x,
        b.x.n_time,
        b.n_spikes_binned,
        fig.png.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn project_root(pipeline: &Path) -> PathBuf {
    match pipeline.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `fetch ID`: exit 0 when the verified file is in place, 2 for a bad id or manifest, 1 when
/// the download or its verification fails.
fn run_fetch(id: &str, project: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use lowrank_smc::data::fetch::{self, FetchError, Fetched};
    let dir = match data_dir.map_or_else(fetch::data_dir, Ok) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("fetch {id}"));
    let result = fetch::fetch(project, id, &dir, &mut |done, total| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match result {
        Ok(Fetched::InRepository(p)) => {
            println!(
                "{id}: ships in the repository at {} (nothing to fetch)",
                p.display()
            );
        }
        Ok(Fetched::AlreadyPresent(p)) => {
            println!("{id}: already present and verified: {}", p.display());
        }
        Ok(Fetched::Downloaded { path, resumed_from }) => {
            let resumed = if resumed_from > 0 {
                format!(" (resumed after {resumed_from} bytes)")
            } else {
                String::new()
            };
            println!("{id}: downloaded and verified{resumed}: {}", path.display());
        }
        Err(e @ FetchError::Manifest { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Areas `bench` knows; each maps to a library function returning printable lines.
const BENCH_AREAS: &[&str] = &[
    "engine",
    "train",
    "metrics",
    "fixed-points",
    "ingest",
    "encoder",
];

/// `--reference CASE=SECONDS` values, checked: CASE must start a `bench train` case key and
/// SECONDS be a positive number.
fn parse_references(given: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
    use lowrank_smc::inference::bench::TRAIN_CASE_KEYS;
    given
        .iter()
        .map(|g| {
            let (case, secs) = g.split_once('=').with_context(|| {
                format!("--reference `{g}`: expected CASE=SECONDS, e.g. eeg=4.28")
            })?;
            let case = case.trim().to_lowercase();
            if case.is_empty() || !TRAIN_CASE_KEYS.iter().any(|k| k.starts_with(&case)) {
                anyhow::bail!(
                    "--reference `{g}`: no `bench train` case starts with `{case}` (cases: {})",
                    TRAIN_CASE_KEYS.join(", ")
                );
            }
            let secs: f64 = secs
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .with_context(|| {
                    format!(
                        "--reference `{g}`: SECONDS must be a positive number of seconds per epoch"
                    )
                })?;
            Ok((case, secs))
        })
        .collect()
}

fn run_bench(
    area: &str,
    cases: &[String],
    references: &[String],
    registry: &Registry,
) -> anyhow::Result<ExitCode> {
    if !references.is_empty() && area != "train" {
        anyhow::bail!("--reference applies to `bench train` only (got `bench {area}`)");
    }
    if !cases.is_empty() && BENCH_AREAS.contains(&area) && !matches!(area, "train" | "fixed-points")
    {
        anyhow::bail!(
            "--case selects cases of `bench train` and `bench fixed-points`; `bench {area}` \
             always runs all of its cases"
        );
    }
    if area == "train" {
        use lowrank_smc::inference::bench::TRAIN_CASE_KEYS;
        if let Some(unknown) = cases.iter().find(|c| {
            let c = c.to_lowercase();
            !TRAIN_CASE_KEYS.iter().any(|k| k.contains(&c))
        }) {
            anyhow::bail!(
                "--case `{unknown}`: no `bench train` case contains it (cases: {})",
                TRAIN_CASE_KEYS.join(", ")
            );
        }
    }
    let references = parse_references(references)?;
    let lines: Vec<String> = match area {
        "engine" => bench::bench_engine(registry)
            .map_err(anyhow::Error::msg)?
            .iter()
            .map(ToString::to_string)
            .collect(),
        "metrics" => lowrank_smc::metrics::bench::bench_metrics()
            .iter()
            .map(ToString::to_string)
            .collect(),
        "encoder" => lowrank_smc::model::encoder::bench_encoder()
            .iter()
            .map(ToString::to_string)
            .collect(),
        "train" => {
            let eeg = lowrank_smc::inference::bench::bundled("datasets/eeg/EEG_data_smoothed.npy");
            let recording = || {
                use lowrank_smc::stages::prepare::{prepare_sequences, ArrayLayout, PrepareParams};
                eeg.is_file()
                    .then(|| {
                        prepare_sequences(
                            &eeg,
                            &PrepareParams {
                                layout: ArrayLayout::TimeByChannel,
                                zscore: false,
                                channels: None,
                                max_time: None,
                                unsmooth: None,
                                data_source: "real".into(),
                            },
                        )
                        .ok()
                    })
                    .flatten()
            };
            // Long cases: print each line as soon as it is measured.
            lowrank_smc::inference::bench::bench_train(
                recording,
                cases,
                &references,
                &mut |line| println!("{line}"),
            );
            Vec::new()
        }
        "fixed-points" => {
            // Long cases: print each line as soon as it is measured.
            let ran = lowrank_smc::analysis::cli::bench_fixed_points(cases, &mut |line| {
                println!("{line}")
            });
            if ran == 0 {
                anyhow::bail!(
                    "--case {}: no `bench fixed-points` case contains it (`bench fixed-points` \
                     without --case lists them all)",
                    cases.join(", ")
                );
            }
            Vec::new()
        }
        "ingest" => lowrank_smc::data::bench::bench_ingest(),
        other => {
            eprintln!(
                "error: unknown benchmark area `{other}` (hint: one of {})",
                BENCH_AREAS.join(", ")
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dag` as a text tree: each root, then what reads from it; shared stages print once.
fn render_tree(dag: &Dag) -> String {
    struct Tree<'a> {
        dag: &'a Dag,
        down: Vec<Vec<usize>>,
        printed: BTreeSet<usize>,
        out: String,
    }
    impl Tree<'_> {
        /// `branch` is `None` for a root, else whether this is its parent's last child.
        fn walk(&mut self, i: usize, prefix: &str, branch: Option<bool>) {
            let stage = &self.dag.stages[i];
            let connector = match branch {
                None => "",
                Some(true) => "└── ",
                Some(false) => "├── ",
            };
            let seen = !self.printed.insert(i);
            self.out.push_str(&format!(
                "{prefix}{connector}{} ({}){}\n",
                stage.name,
                stage.kind,
                if seen { " …see above" } else { "" }
            ));
            if seen {
                return;
            }
            let child_prefix = match branch {
                None => String::new(),
                Some(last) => format!("{prefix}{}", if last { "    " } else { "│   " }),
            };
            let children = self.down[i].clone();
            for (n, &child) in children.iter().enumerate() {
                self.walk(child, &child_prefix, Some(n + 1 == children.len()));
            }
        }
    }
    let mut tree = Tree {
        dag,
        down: dag.downstream(),
        printed: BTreeSet::new(),
        out: String::new(),
    };
    for (i, stage) in dag.stages.iter().enumerate() {
        if stage.upstream.is_empty() {
            tree.walk(i, "", None);
        }
    }
    tree.out
}

fn render_dot(dag: &Dag) -> String {
    let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n  node [shape=box];\n");
    for stage in &dag.stages {
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n({})\"];\n",
            stage.name, stage.name, stage.kind
        ));
    }
    for stage in &dag.stages {
        for (input, sources) in &stage.inputs {
            for source in sources {
                match source {
                    InputSource::Stage { stage: up, output } => out.push_str(&format!(
                        "  \"{}\" -> \"{}\" [label=\"{output}→{input}\"];\n",
                        dag.stages[*up].name, stage.name
                    )),
                    InputSource::Dataset { id, .. } => out.push_str(&format!(
                        "  \"dataset:{id}\" [shape=cylinder];\n  \"dataset:{id}\" -> \"{}\" [label=\"{input}\"];\n",
                        stage.name
                    )),
                    InputSource::File { path } => out.push_str(&format!(
                        "  \"file:{0}\" [shape=note];\n  \"file:{0}\" -> \"{1}\" [label=\"{input}\"];\n",
                        path.display(),
                        stage.name
                    )),
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

fn show(dag: &Dag, name: &str) -> anyhow::Result<ExitCode> {
    let Some(stage) = dag.get(name) else {
        let names = dag.stages.iter().map(|s| s.name.as_str());
        eprintln!(
            "error: no stage `{name}`{}",
            lowrank_smc::pipeline::dag::suggestion(name, names)
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    let store = Store::new(&dag.root);
    let lock = LockFile::load(&lock_path(dag))?;
    let mut memo = FileHashCache::load(&store.memo_path());
    let statuses = status(dag, &store, &lock, &mut memo);
    let entry = lock.stages.get(name);
    println!("stage:    {}", stage.name);
    println!("kind:     {} (version {})", stage.kind, stage.version);
    if let Some(description) = &stage.description {
        println!("about:    {description}");
    }
    println!(
        "defined:  {}{}",
        stage.origin.file.display(),
        stage
            .origin
            .line
            .map(|l| format!(":{l}"))
            .unwrap_or_default()
    );
    println!("profile:  {}", dag.profile);
    println!(
        "params:   {}",
        serde_json::to_string_pretty(&stage.params)?.replace('\n', "\n          ")
    );
    println!("inputs:");
    for (input, sources) in &stage.inputs {
        for source in sources {
            let text = match source {
                InputSource::Stage { stage: up, output } => {
                    let upstream = &dag.stages[*up];
                    format!(
                        "{}:{output} → {}",
                        upstream.name,
                        upstream
                            .output_path(output)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )
                }
                InputSource::Dataset { id, path } => format!("dataset:{id} → {}", path.display()),
                InputSource::File { path } => format!("file:{}", path.display()),
            };
            println!("  {input}: {text}");
        }
    }
    println!("outputs:");
    for name in stage.outputs.keys() {
        let path = stage.output_path(name).unwrap_or_default();
        let hash = entry
            .and_then(|e| e.outputs.get(name))
            .map(|o| format!(" ({})", o.hash.short()))
            .unwrap_or_default();
        println!("  {name}: {}{hash}", path.display());
    }
    if let Some(status) = statuses.iter().find(|s| s.stage == name) {
        if let Some(key) = &status.key {
            println!("key:      {key}");
        }
        if status.is_fresh() {
            println!("status:   up to date");
        } else {
            println!("status:   stale ({})", status.action);
            for reason in &status.reasons {
                println!("          {reason}");
            }
        }
    }
    match entry {
        Some(entry) => {
            println!(
                "last run: key {} in {:.3} s",
                entry.key.short(),
                entry.duration_secs
            );
            for (k, v) in &entry.summary {
                println!("  {k}: {v}");
            }
        }
        None => println!("last run: never"),
    }
    Ok(ExitCode::SUCCESS)
}
