//! Minibatches for training (SPEC §2.10): random windows of one long recording (the reference's
//! `Basic_dataset`) or whole trials, shuffled, drawn from a ChaCha stream fixed by (seed, epoch).

use super::error::TrainError;
use crate::model::{Real, Sequences};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// One item of a minibatch: `len` steps of sequence `sequence` from time `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchItem {
    pub sequence: usize,
    pub start: usize,
}

/// The minibatches of one epoch, in order; the last one may be partial (torch's `drop_last=False`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochPlan {
    pub batches: Vec<Vec<BatchItem>>,
}

#[derive(Clone, Debug, PartialEq)]
enum SourceKind {
    Windows { window: usize, n_windows: usize },
    Trials,
}

/// Where training minibatches come from: validated data plus the rule that cuts it into items.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSource<F: Real> {
    data: Sequences<F>,
    kind: SourceKind,
}

impl<F: Real> BatchSource<F> {
    /// `Basic_dataset`: `n_windows` items per epoch from one recording (`n_sequences == 1`), each a
    /// window of `window` steps starting uniformly in [0, n_time − window).
    pub fn windows(
        recording: Sequences<F>,
        window: usize,
        n_windows: usize,
    ) -> Result<Self, TrainError> {
        validate(&recording)?;
        if recording.n_sequences != 1 {
            return Err(TrainError::data(
                "recording",
                format!(
                    "has {} sequences; window sampling needs exactly one long recording \
                     (use trials for several)",
                    recording.n_sequences
                ),
            ));
        }
        if window == 0 || window >= recording.n_time {
            return Err(TrainError::data(
                "window",
                format!(
                    "is {window}; it must be in 1..{} (shorter than the recording's {} steps)",
                    recording.n_time, recording.n_time
                ),
            ));
        }
        if n_windows == 0 {
            return Err(TrainError::data("n_windows", "is 0; need at least one"));
        }
        Ok(Self {
            data: recording,
            kind: SourceKind::Windows { window, n_windows },
        })
    }

    /// Trial dataset: every trial is one item per epoch, in shuffled order.
    pub fn trials(trials: Sequences<F>) -> Result<Self, TrainError> {
        validate(&trials)?;
        Ok(Self {
            data: trials,
            kind: SourceKind::Trials,
        })
    }

    /// The underlying sequences.
    pub fn data(&self) -> &Sequences<F> {
        &self.data
    }

    /// Length in time steps of every item.
    pub fn item_len(&self) -> usize {
        match self.kind {
            SourceKind::Windows { window, .. } => window,
            SourceKind::Trials => self.data.n_time,
        }
    }

    /// Items per epoch.
    pub fn items_per_epoch(&self) -> usize {
        match self.kind {
            SourceKind::Windows { n_windows, .. } => n_windows,
            SourceKind::Trials => self.data.n_sequences,
        }
    }

    /// Minibatches per epoch: ⌈items / batch_size⌉.
    pub fn batches_per_epoch(&self, batch_size: usize) -> usize {
        self.items_per_epoch().div_ceil(batch_size.max(1))
    }

    /// The minibatches of `epoch`, a pure function of (seed, epoch, batch_size): ChaCha20 seeded
    /// with `seed` on stream `epoch`. Windows: starts uniform in [0, n_time − window); trials: a
    /// uniform permutation.
    pub fn epoch_plan(&self, seed: u64, epoch: usize, batch_size: usize) -> EpochPlan {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        let items: Vec<BatchItem> = match self.kind {
            SourceKind::Windows { window, n_windows } => {
                let n_starts = (self.data.n_time - window) as u64;
                (0..n_windows)
                    .map(|_| BatchItem {
                        sequence: 0,
                        start: rng.gen_range(0..n_starts) as usize,
                    })
                    .collect()
            }
            SourceKind::Trials => {
                let mut order: Vec<usize> = (0..self.data.n_sequences).collect();
                order.shuffle(&mut rng);
                order
                    .into_iter()
                    .map(|sequence| BatchItem { sequence, start: 0 })
                    .collect()
            }
        };
        EpochPlan {
            batches: items
                .chunks(batch_size.max(1))
                .map(|chunk| chunk.to_vec())
                .collect(),
        }
    }

    /// Copies `items` into `out` (resized in place, reusing its buffers): x `(items, dim_x, len)`,
    /// u `(items, dim_u, len)`.
    pub fn fill(&self, items: &[BatchItem], out: &mut Sequences<F>) {
        let len = self.item_len();
        let (dim_x, dim_u, n_time) = (self.data.dim_x, self.data.dim_u, self.data.n_time);
        out.n_sequences = items.len();
        out.dim_x = dim_x;
        out.dim_u = dim_u;
        out.n_time = len;
        out.x.clear();
        out.u.clear();
        for item in items {
            let x = self.data.x_of(item.sequence);
            for channel in 0..dim_x {
                let row = channel * n_time + item.start;
                out.x.extend_from_slice(&x[row..row + len]);
            }
            let u = self.data.u_of(item.sequence);
            for channel in 0..dim_u {
                let row = channel * n_time + item.start;
                out.u.extend_from_slice(&u[row..row + len]);
            }
        }
    }
}

/// An empty batch buffer for [`BatchSource::fill`].
pub fn empty_batch<F: Real>() -> Sequences<F> {
    Sequences {
        n_sequences: 0,
        dim_x: 0,
        dim_u: 0,
        n_time: 0,
        x: Vec::new(),
        u: Vec::new(),
    }
}

/// Seed for the objective's noise at (epoch, batch): SplitMix64 of the three numbers, so each
/// step's draws are fixed whatever happened before (resume) and whatever the thread count.
pub fn step_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut z = splitmix64(seed ^ 0x5EED_0F57_E9C0_FFEE);
    z = splitmix64(z ^ epoch as u64);
    splitmix64(z ^ (batch as u64).rotate_left(32))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn validate<F: Real>(data: &Sequences<F>) -> Result<(), TrainError> {
    if data.n_sequences == 0 {
        return Err(TrainError::data("x", "holds no sequence (n_sequences = 0)"));
    }
    if data.n_time == 0 {
        return Err(TrainError::data(
            "x",
            "has zero-length sequences (n_time = 0)",
        ));
    }
    if data.dim_x == 0 {
        return Err(TrainError::data("x", "has no channel (dim_x = 0)"));
    }
    let x_len = data.n_sequences * data.dim_x * data.n_time;
    if data.x.len() != x_len {
        return Err(TrainError::data(
            "x",
            format!(
                "has {} values, expected n_sequences·dim_x·n_time = {}·{}·{} = {x_len}",
                data.x.len(),
                data.n_sequences,
                data.dim_x,
                data.n_time
            ),
        ));
    }
    let u_len = data.n_sequences * data.dim_u * data.n_time;
    if data.u.len() != u_len {
        return Err(TrainError::data(
            "u",
            format!(
                "has {} values, expected n_sequences·dim_u·n_time = {}·{}·{} = {u_len}",
                data.u.len(),
                data.n_sequences,
                data.dim_u,
                data.n_time
            ),
        ));
    }
    for (field, values, dim) in [("x", &data.x, data.dim_x), ("u", &data.u, data.dim_u)] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            let per_sequence = dim * data.n_time;
            return Err(TrainError::data(
                field,
                format!(
                    "holds a non-finite value {} at sequence {}, channel {}, time {}",
                    values[index],
                    index / per_sequence,
                    (index % per_sequence) / data.n_time,
                    index % data.n_time
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(n_time: usize) -> Sequences<f64> {
        Sequences {
            n_sequences: 1,
            dim_x: 2,
            dim_u: 1,
            n_time,
            x: (0..2 * n_time).map(|i| i as f64).collect(),
            u: (0..n_time).map(|i| -(i as f64)).collect(),
        }
    }

    #[test]
    fn windows_start_in_range_cover_it_and_are_deterministic() {
        let source = BatchSource::windows(recording(30), 10, 2000).unwrap();
        let plan = source.epoch_plan(7, 3, 64);
        assert_eq!(plan.batches.len(), 32); // 31 full batches + one of 16
        assert_eq!(plan.batches.last().map(Vec::len), Some(2000 - 31 * 64));
        let starts: Vec<usize> = plan.batches.iter().flatten().map(|i| i.start).collect();
        assert_eq!(starts.len(), 2000);
        assert!(starts.iter().all(|&s| s < 20));
        for s in 0..20 {
            assert!(starts.contains(&s), "start {s} never drawn");
        }
        assert_eq!(plan, source.epoch_plan(7, 3, 64));
        assert_ne!(plan, source.epoch_plan(7, 4, 64));
        assert_ne!(plan, source.epoch_plan(8, 3, 64));
    }

    #[test]
    fn trials_are_a_permutation_per_epoch() {
        let trials = Sequences {
            n_sequences: 7,
            dim_x: 1,
            dim_u: 0,
            n_time: 3,
            x: (0..21).map(|i| i as f64).collect(),
            u: vec![],
        };
        let source = BatchSource::trials(trials).unwrap();
        let plan = source.epoch_plan(1, 0, 3);
        assert_eq!(
            plan.batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let mut seen: Vec<usize> = plan.batches.iter().flatten().map(|i| i.sequence).collect();
        let shuffled = seen.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        let other = source.epoch_plan(1, 1, 3);
        let other: Vec<usize> = other.batches.iter().flatten().map(|i| i.sequence).collect();
        assert_ne!(shuffled, other);
    }

    #[test]
    fn fill_copies_windows_of_x_and_u() {
        let source = BatchSource::windows(recording(30), 4, 5).unwrap();
        let mut batch = empty_batch();
        let items = [
            BatchItem {
                sequence: 0,
                start: 3,
            },
            BatchItem {
                sequence: 0,
                start: 10,
            },
        ];
        source.fill(&items, &mut batch);
        assert_eq!((batch.n_sequences, batch.dim_x, batch.n_time), (2, 2, 4));
        assert_eq!(batch.x_of(0), &[3.0, 4.0, 5.0, 6.0, 33.0, 34.0, 35.0, 36.0]);
        assert_eq!(batch.u_of(1), &[-10.0, -11.0, -12.0, -13.0]);
    }

    #[test]
    fn bad_data_is_rejected_with_the_field_named() {
        let mut bad = recording(30);
        bad.x[35] = f64::NAN;
        let err = BatchSource::windows(bad, 10, 5).unwrap_err().to_string();
        assert!(
            err.contains("`x`") && err.contains("channel 1, time 5"),
            "{err}"
        );
        let err = BatchSource::windows(recording(30), 30, 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`window`"), "{err}");
        let empty = Sequences::<f32> {
            n_sequences: 2,
            dim_x: 1,
            dim_u: 0,
            n_time: 0,
            x: vec![],
            u: vec![],
        };
        let err = BatchSource::trials(empty).unwrap_err().to_string();
        assert!(err.contains("zero-length"), "{err}");
    }

    #[test]
    fn step_seeds_differ_between_steps() {
        let a = step_seed(1, 0, 0);
        assert_ne!(a, step_seed(1, 0, 1));
        assert_ne!(a, step_seed(1, 1, 0));
        assert_ne!(a, step_seed(2, 0, 0));
        assert_ne!(step_seed(1, 1, 0), step_seed(1, 0, 1));
    }
}
