//! Events are the interface between the executor and whoever shows the run to a person: the
//! executor only emits [`StageEvent`]s, a [`Reporter`] renders them (indicatif bars on a
//! terminal, plain lines otherwise so CI logs stay readable), and the exit status comes from the
//! counts in [`RunSummary`], not from flags scattered through the code.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One thing that happened to one stage.
#[derive(Debug, Clone)]
pub struct StageEvent {
    /// Stage name, e.g. `eeg.fit[seed=3]`.
    pub stage: String,
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
}

impl StageEvent {
    /// An event stamped now.
    pub fn now(stage: impl Into<String>, kind: EventKind) -> Self {
        Self {
            stage: stage.into(),
            at: Instant::now(),
            kind,
        }
    }
}

/// What happened to a stage.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The plan: this stage will run (or be restored), and why.
    Planned {
        /// Human-readable reasons (rendered `StaleReason`s).
        reasons: Vec<String>,
    },
    /// Nothing to do, or nothing possible.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Outputs copied back from the run cache instead of recomputing.
    Restored,
    /// The stage started running with this many threads.
    Started {
        /// Its share of the thread budget.
        threads: usize,
    },
    /// Steps done so far.
    Progress {
        /// Steps done.
        position: u64,
        /// Steps in all, when known.
        total: Option<u64>,
        /// Free text (a metric, a phase).
        message: String,
    },
    /// Finished and cached.
    Finished {
        /// Wall time of the stage (of this run only when it resumed interrupted work).
        elapsed: Duration,
        /// What the wall time leaves out, e.g. "resumed from epoch 700".
        note: Option<String>,
    },
    /// Failed: nothing was cached.
    Failed {
        /// Cause, fully rendered.
        error: String,
    },
}

/// Why a stage did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its outputs are up to date.
    UpToDate,
    /// An upstream stage failed.
    UpstreamFailed {
        /// The failed stage.
        stage: String,
    },
    /// The run stopped after a failure (no `--keep-going`).
    Cancelled,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::UpToDate => f.write_str("up to date"),
            SkipReason::UpstreamFailed { stage } => write!(f, "upstream stage `{stage}` failed"),
            SkipReason::Cancelled => f.write_str("cancelled after a failure"),
        }
    }
}

/// Counts of what happened in a run; decides the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    /// Stages that ran and succeeded.
    pub ran: usize,
    /// Stages whose outputs came back from the run cache.
    pub restored: usize,
    /// Stages already up to date.
    pub up_to_date: usize,
    /// Stages that failed.
    pub failed: usize,
    /// Stages not run because of a failure.
    pub blocked: usize,
    /// The run's wall time, from taking the project lock to the last stage's end.
    pub wall: Option<Duration>,
    /// The CPU time (user + system) over the same span: all threads, and `command` stages'
    /// child processes.
    pub cpu: Option<Duration>,
    /// Each stage that ran, with its wall time, in the order they finished.
    pub stage_times: Vec<(String, Duration)>,
}

impl RunSummary {
    /// Count one event.
    pub fn record(&mut self, event: &EventKind) {
        match event {
            EventKind::Finished { .. } => self.ran += 1,
            EventKind::Restored => self.restored += 1,
            EventKind::Failed { .. } => self.failed += 1,
            EventKind::Skipped {
                reason: SkipReason::UpToDate,
            } => self.up_to_date += 1,
            EventKind::Skipped { .. } => self.blocked += 1,
            _ => {}
        }
    }
    /// Count one event of `stage`, keeping the wall time of a stage that ran.
    pub fn record_stage(&mut self, stage: &str, event: &EventKind) {
        self.record(event);
        if let EventKind::Finished { elapsed, .. } = event {
            self.stage_times.push((stage.to_string(), *elapsed));
        }
    }
    /// True when no stage failed.
    pub fn success(&self) -> bool {
        self.failed == 0
    }
    /// Where the time went, when stages ran: the run's wall and CPU time, the stages' times
    /// summed, and the longest stages — e.g. `time: 2 h 11 min wall, 4 h 02 min CPU; stages
    /// 4 h 05 min summed over 70; longest: a.fit[seed=1] 31 min 02 s, …`.
    pub fn timing(&self) -> Option<String> {
        let wall = self.wall?;
        if self.stage_times.is_empty() {
            return None;
        }
        let mut line = format!("time: {} wall", format_duration(wall));
        if let Some(cpu) = self.cpu {
            line.push_str(&format!(", {} CPU", format_duration(cpu)));
        }
        let summed: Duration = self.stage_times.iter().map(|(_, t)| *t).sum();
        let n = self.stage_times.len();
        line.push_str(&format!(
            "; stages {} summed over {n}",
            format_duration(summed)
        ));
        if n > 1 {
            let mut longest: Vec<&(String, Duration)> = self.stage_times.iter().collect();
            longest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let shown: Vec<String> = longest
                .iter()
                .take(LONGEST_SHOWN)
                .map(|(name, t)| format!("{name} {}", format_duration(*t)))
                .collect();
            line.push_str(&format!("; longest: {}", shown.join(", ")));
        }
        Some(line)
    }
}

/// How many of the longest stages the run's closing time line names.
const LONGEST_SHOWN: usize = 3;

/// CPU time (user + system) this process has used so far, all its threads and the child
/// processes it has waited for (`command` stages); `None` where the platform does not say.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        fn usage(who: libc::c_int) -> Option<Duration> {
            let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage writes a complete `rusage` through the pointer on success.
            if unsafe { libc::getrusage(who, usage.as_mut_ptr()) } != 0 {
                return None;
            }
            // SAFETY: initialised by the successful call above.
            let usage = unsafe { usage.assume_init() };
            let secs = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec.max(0) as u64)
                    + Duration::from_micros(t.tv_usec.max(0) as u64)
            };
            Some(secs(usage.ru_utime) + secs(usage.ru_stime))
        }
        Some(usage(libc::RUSAGE_SELF)? + usage(libc::RUSAGE_CHILDREN).unwrap_or_default())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ran + self.restored + self.failed + self.blocked == 0 {
            return write!(
                f,
                "Data and pipelines are up to date ({} stages).",
                self.up_to_date
            );
        }
        write!(
            f,
            "{} ran, {} restored from cache, {} up to date, {} failed, {} not run",
            self.ran, self.restored, self.up_to_date, self.failed, self.blocked
        )
    }
}

/// Renders events for a person (or a machine).
pub trait Reporter {
    /// Handle one event.
    fn event(&mut self, event: &StageEvent);
    /// The run is over.
    fn finish(&mut self, summary: &RunSummary);
}

/// Plain lines, one per state change, for logs and non-terminals.
pub struct PlainReporter<W: Write> {
    out: W,
    last_progress: std::collections::HashMap<String, Instant>,
    verbose: bool,
}

impl<W: Write> PlainReporter<W> {
    /// Write lines to `out`; `verbose` also prints up-to-date stages.
    pub fn new(out: W, verbose: bool) -> Self {
        Self {
            out,
            last_progress: Default::default(),
            verbose,
        }
    }
}

impl<W: Write> Reporter for PlainReporter<W> {
    fn event(&mut self, event: &StageEvent) {
        let stage = &event.stage;
        let line = match &event.kind {
            EventKind::Planned { reasons } => {
                if reasons.is_empty() {
                    return;
                }
                format!("[stale]    {stage}: {}", reasons.join("; "))
            }
            EventKind::Skipped { reason } => {
                if *reason == SkipReason::UpToDate && !self.verbose {
                    return;
                }
                format!("[skipped]  {stage}: {reason}")
            }
            EventKind::Restored => format!("[restored] {stage}: outputs taken from the run cache"),
            EventKind::Started { threads } => format!(
                "[running]  {stage} ({threads} thread{})",
                if *threads == 1 { "" } else { "s" }
            ),
            EventKind::Progress {
                position,
                total,
                message,
            } => {
                // At most one progress line per stage every 5 s.
                let now = event.at;
                if let Some(last) = self.last_progress.get(stage) {
                    if now.duration_since(*last) < Duration::from_secs(5) {
                        return;
                    }
                }
                self.last_progress.insert(stage.clone(), now);
                let total = total.map(|t| format!("/{t}")).unwrap_or_default();
                format!("[progress] {stage}: {position}{total} {message}")
            }
            EventKind::Finished { elapsed, note } => format!(
                "[done]     {stage} in {}{}",
                format_duration(*elapsed),
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            ),
            EventKind::Failed { error } => format!("[FAILED]   {stage}: {error}"),
        };
        let _ = writeln!(self.out, "{}", line.trim_end());
        let _ = self.out.flush();
    }

    fn finish(&mut self, summary: &RunSummary) {
        let _ = writeln!(self.out, "{summary}");
        if let Some(timing) = summary.timing() {
            let _ = writeln!(self.out, "{timing}");
        }
        let _ = self.out.flush();
    }
}

/// indicatif bars: one overall bar plus one per running stage.
pub struct BarReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    bars: std::collections::HashMap<String, ProgressBar>,
}

impl BarReporter {
    /// Bars on stderr for a run of `n_stages` stages.
    pub fn new(n_stages: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(n_stages as u64));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} stages {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Self {
            multi,
            overall,
            bars: Default::default(),
        }
    }

    fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }
}

impl Reporter for BarReporter {
    fn event(&mut self, event: &StageEvent) {
        let stage = &event.stage;
        match &event.kind {
            EventKind::Planned { reasons } => {
                if !reasons.is_empty() {
                    self.println(format!("stale    {stage}: {}", reasons.join("; ")));
                }
            }
            EventKind::Skipped { reason } => {
                self.overall.inc(1);
                if *reason != SkipReason::UpToDate {
                    self.println(format!("skipped  {stage}: {reason}"));
                }
            }
            EventKind::Restored => {
                self.overall.inc(1);
                self.println(format!("restored {stage} from the run cache"));
            }
            EventKind::Started { .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {pos}/{len}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(stage.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(stage.clone(), bar);
            }
            EventKind::Progress {
                position,
                total,
                message,
            } => {
                if let Some(bar) = self.bars.get(stage) {
                    if let Some(total) = total {
                        if bar.length() != Some(*total) {
                            bar.set_length(*total);
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "  {prefix} [{bar:25}] {pos}/{len} {wide_msg} (eta {eta})",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                            );
                        }
                    }
                    bar.set_position(*position);
                    bar.set_message(message.clone());
                }
            }
            EventKind::Finished { elapsed, note } => {
                self.overall.inc(1);
                if let Some(bar) = self.bars.remove(stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let note = note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
                self.println(format!(
                    "done     {stage} in {}{note}",
                    format_duration(*elapsed)
                ));
            }
            EventKind::Failed { error } => {
                self.overall.inc(1);
                if let Some(bar) = self.bars.remove(stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.println(format!("FAILED   {stage}: {error}"));
            }
        }
    }

    fn finish(&mut self, summary: &RunSummary) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
        println!("{summary}");
        if let Some(timing) = summary.timing() {
            println!("{timing}");
        }
    }
}

/// `1.23 s`, `2 min 03 s`, `45 ms`.
pub fn format_duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.2} s")
    } else {
        let whole = elapsed.as_secs();
        let (h, min, s) = (whole / 3600, whole / 60 % 60, whole % 60);
        if h == 0 {
            format!("{min} min {s:02} s")
        } else {
            format!("{h} h {min:02} min {s:02} s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reporter_lines() {
        let mut out = Vec::new();
        {
            let mut reporter = PlainReporter::new(&mut out, false);
            reporter.event(&StageEvent::now(
                "a",
                EventKind::Planned {
                    reasons: vec!["never run".into()],
                },
            ));
            reporter.event(&StageEvent::now(
                "b",
                EventKind::Skipped {
                    reason: SkipReason::UpToDate,
                },
            ));
            reporter.event(&StageEvent::now("a", EventKind::Started { threads: 2 }));
            reporter.event(&StageEvent::now(
                "a",
                EventKind::Failed {
                    error: "exit 3".into(),
                },
            ));
            let mut summary = RunSummary::default();
            summary.record(&EventKind::Failed {
                error: String::new(),
            });
            reporter.finish(&summary);
        }
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text,
            "[stale]    a: never run\n[running]  a (2 threads)\n[FAILED]   a: exit 3\n\
             0 ran, 0 restored from cache, 0 up to date, 1 failed, 0 not run\n"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(45)), "45 ms");
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(format_duration(Duration::from_secs(123)), "2 min 03 s");
        assert_eq!(
            format_duration(Duration::from_secs(7865)),
            "2 h 11 min 05 s"
        );
    }

    #[test]
    fn timing_names_the_longest_stages() {
        let mut summary = RunSummary::default();
        for (name, secs) in [("a", 5), ("b", 700), ("c", 90), ("d", 3700)] {
            summary.record_stage(
                name,
                &EventKind::Finished {
                    elapsed: Duration::from_secs(secs),
                    note: None,
                },
            );
        }
        summary.record_stage(
            "e",
            &EventKind::Skipped {
                reason: SkipReason::UpToDate,
            },
        );
        assert_eq!(summary.timing(), None, "no wall time, no line");
        summary.wall = Some(Duration::from_secs(4000));
        summary.cpu = Some(Duration::from_secs(7000));
        assert_eq!(
            summary.timing().as_deref(),
            Some(
                "time: 1 h 06 min 40 s wall, 1 h 56 min 40 s CPU; stages 1 h 14 min 55 s summed \
                 over 4; longest: d 1 h 01 min 40 s, b 11 min 40 s, c 1 min 30 s"
            )
        );
        let mut out = Vec::new();
        PlainReporter::new(&mut out, false).finish(&summary);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("4 ran, 0 restored from cache, 1 up to date"));
        assert!(text.ends_with("c 1 min 30 s\n"), "{text}");
        let nothing_ran = RunSummary {
            wall: Some(Duration::from_secs(1)),
            ..RunSummary::default()
        };
        assert_eq!(nothing_ran.timing(), None);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let Some(before) = process_cpu_time() else {
            return;
        };
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = process_cpu_time().unwrap_or_default();
        assert!(after > before, "{before:?} → {after:?}");
    }
}
