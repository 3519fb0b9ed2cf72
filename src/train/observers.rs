//! Ready-made observers and the loss-curve table.

use super::trainer::{EpochRecord, Observer, TerminationReason};
use std::io::Write;

/// Writes one line per `every` epochs (and the termination reason) to a writer, e.g. stderr:
/// `epoch 12  loss -153.2041  lr 9.120e-4  mean_alpha 0.31  (0.21 s)`.
/// Write errors are ignored: logging must never stop training.
pub struct LineLogger<W: Write> {
    writer: W,
    every: usize,
}

impl<W: Write> LineLogger<W> {
    /// Logs every `every` epochs (0 or 1: every epoch).
    pub fn new(writer: W, every: usize) -> Self {
        Self {
            writer,
            every: every.max(1),
        }
    }
}

impl<W: Write> Observer for LineLogger<W> {
    fn observe_epoch(&mut self, record: &EpochRecord) {
        if !(record.epoch + 1).is_multiple_of(self.every) {
            return;
        }
        let mut line = format!(
            "epoch {}  loss {:.4}  lr {:.3e}",
            record.epoch + 1,
            record.loss,
            record.lr
        );
        for (name, value) in &record.diagnostics {
            line.push_str(&format!("  {name} {value:.4}"));
        }
        line.push_str(&format!("  ({:.2} s)", record.seconds));
        let _ = writeln!(self.writer, "{line}");
    }

    fn observe_end(&mut self, reason: &TerminationReason) {
        let _ = writeln!(self.writer, "training ended: {}", reason.text());
    }
}

/// The loss curve as a tab-separated table: `epoch loss lr seconds <diagnostic names…>`, one row
/// per epoch (0-based epochs; empty cells where an epoch lacks a diagnostic).
pub fn loss_curve_table(records: &[EpochRecord]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for record in records {
        for (name, _) in &record.diagnostics {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let mut table = String::from("epoch\tloss\tlr\tseconds");
    for name in &names {
        table.push('\t');
        table.push_str(name);
    }
    table.push('\n');
    for record in records {
        table.push_str(&format!(
            "{}\t{}\t{}\t{}",
            record.epoch, record.loss, record.lr, record.seconds
        ));
        for name in &names {
            table.push('\t');
            if let Some(value) = record.diagnostic(name) {
                table.push_str(&value.to_string());
            }
        }
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<EpochRecord> {
        vec![
            EpochRecord {
                epoch: 0,
                loss: 2.5,
                lr: 0.001,
                seconds: 0.5,
                diagnostics: vec![("mean_alpha".into(), 0.25)],
            },
            EpochRecord {
                epoch: 1,
                loss: 1.5,
                lr: 0.0005,
                seconds: 0.25,
                diagnostics: vec![],
            },
        ]
    }

    #[test]
    fn table_has_a_column_per_diagnostic() {
        let table = loss_curve_table(&records());
        assert_eq!(
            table,
            "epoch\tloss\tlr\tseconds\tmean_alpha\n0\t2.5\t0.001\t0.5\t0.25\n1\t1.5\t0.0005\t0.25\t\n"
        );
    }

    #[test]
    fn logger_writes_every_nth_epoch_and_the_reason() {
        let mut out = Vec::new();
        {
            let mut logger = LineLogger::new(&mut out, 2);
            for record in records() {
                logger.observe_epoch(&record);
            }
            logger.observe_end(&TerminationReason::MaxEpochs);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "epoch 2  loss 1.5000  lr 5.000e-4  (0.25 s)\n\
             training ended: reached the maximum number of epochs\n"
        );
    }
}
