//! `lowrank-smc bench train`: seconds per training epoch for the paper's configurations,
//! against the reference PyTorch code measured on a 2-core machine of this kind.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::draws::Resampling;
use super::objective::VsmcObjective;
use super::optimal::VsmcOptions;
use crate::model::lowrank::ModelConfig;
use crate::model::Sequences;
use crate::train::batches::BatchSource;
use crate::train::trainer::{train, RunOptions, TrainConfig};

/// Peak resident memory of this process in MB (VmHWM), if the OS reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One benchmark line.
#[derive(Debug, Clone)]
pub struct TrainBenchLine {
    /// Case name.
    pub case: String,
    /// Best seconds per epoch.
    pub seconds_per_epoch: f64,
    /// Reference seconds per epoch.
    pub reference: f64,
    /// Peak RSS in MB after the case.
    pub peak_rss_mb: Option<f64>,
}

impl std::fmt::Display for TrainBenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:.3} s/epoch · reference {:.1} s/epoch · {:.1}× faster (goal ≥ 30×) · peak RSS {}",
            self.case,
            self.seconds_per_epoch,
            self.reference,
            self.reference / self.seconds_per_epoch,
            self.peak_rss_mb
                .map(|m| format!("{m:.0} MB"))
                .unwrap_or_else(|| "n/a".into())
        )
    }
}

/// The EEG configuration of SPEC §5.2 (R = 3, N = 512, clipped ReLU, 64 channels, optimal
/// proposal, K = 10, 500 windows of 50 steps, batch 10) on a 9640-step recording; best of
/// `repeats` epochs. Reference: 7.5 s/epoch (torch CPU, 2 cores).
pub fn bench_train_eeg(recording: Option<Sequences<f64>>, repeats: usize) -> TrainBenchLine {
    let data = recording.unwrap_or_else(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = 9640;
        Sequences {
            n_sequences: 1,
            dim_x: 64,
            dim_u: 0,
            n_time: t,
            x: (0..64 * t).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            u: Vec::new(),
        }
    });
    let config = ModelConfig::eeg(data.dim_x);
    let params = config.init_params(1).unwrap_or_default();
    let objective = VsmcObjective::new(
        config,
        VsmcOptions {
            n_particles: 10,
            t_forward: 0,
        },
        Resampling::Systematic,
    );
    let mut best = f64::INFINITY;
    if let Ok(source) = BatchSource::windows(data, 50, 500) {
        for rep in 0..repeats.max(1) {
            let cfg = TrainConfig::new(1, 10, 1e-3, 1e-6, rep as u64);
            let start = Instant::now();
            let ok = train(
                &objective,
                &source,
                &cfg,
                params.clone(),
                RunOptions::default(),
            )
            .is_ok();
            if ok {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
    }
    TrainBenchLine {
        case: format!(
            "train eeg (R=3, N=512, K=10, 500×50, batch 10, {} threads)",
            rayon::current_num_threads()
        ),
        seconds_per_epoch: best,
        reference: 7.5,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// All `bench train` cases that this build implements.
pub fn bench_train(recording: Option<Sequences<f64>>) -> Vec<TrainBenchLine> {
    vec![bench_train_eeg(recording, 3)]
}
