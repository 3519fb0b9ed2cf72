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
    /// True when no stage failed.
    pub fn success(&self) -> bool {
        self.failed == 0
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
        format!("{} min {:02} s", whole / 60, whole % 60)
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
    }
}
