//! `lowrank-smc bench train`: seconds per training epoch for the paper's configurations,
//! against the reference PyTorch code measured on a 2-core machine of this kind.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::draws::Resampling;
use super::kernel::Precision;
use super::objective::{ModelWithProposal, ProposalKind, VsmcObjective};
use super::optimal::VsmcOptions;
use crate::model::lowrank::{ModelConfig, Transition};
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

/// `f64` or `f32`, as in the case names.
fn name(precision: Precision) -> &'static str {
    match precision {
        Precision::F64 => "f64",
        Precision::F32 => "f32",
    }
}

/// One benchmark line.
#[derive(Debug, Clone)]
pub struct TrainBenchLine {
    /// Case name.
    pub case: String,
    /// Best seconds per epoch.
    pub seconds_per_epoch: f64,
    /// Reference seconds per epoch (`None`: not measured with the reference code).
    pub reference: Option<f64>,
    /// Whether `reference` was given on the command line (`bench train --reference`) rather
    /// than the figure stated in the issue.
    pub reference_given: bool,
    /// Peak RSS in MB after the case.
    pub peak_rss_mb: Option<f64>,
}

impl std::fmt::Display for TrainBenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ratio = match self.reference {
            Some(r) => format!(
                "reference {r:.2} s/epoch{} · {:.1}× faster (goal ≥ 30×)",
                if self.reference_given {
                    " (given)"
                } else {
                    " (stated)"
                },
                r / self.seconds_per_epoch
            ),
            None => "reference not measured".to_string(),
        };
        write!(
            f,
            "{}: {:.3} s/epoch · {ratio} · peak RSS {}",
            self.case,
            self.seconds_per_epoch,
            self.peak_rss_mb
                .map(|m| format!("{m:.0} MB"))
                .unwrap_or_else(|| "n/a".into())
        )
    }
}

/// The EEG configuration of SPEC §5.2 (R = 3, N = 512, clipped ReLU, 64 channels, optimal
/// proposal, K = 10, 500 windows of 50 steps, batch 10) on a 9640-step recording; best of
/// `repeats` epochs. Reference: 7.5 s/epoch (torch CPU, 2 cores).
pub fn bench_train_eeg(
    recording: Option<Sequences<f64>>,
    repeats: usize,
    precision: Precision,
) -> TrainBenchLine {
    let best = eeg_epoch(recording, None, repeats, precision);
    TrainBenchLine {
        case: format!(
            "train eeg {} (R=3, N=512, K=10, 500×50, batch 10, {} threads)",
            name(precision),
            rayon::current_num_threads()
        ),
        seconds_per_epoch: best,
        reference: Some(7.5),
        reference_given: false,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// Table 1's full-rank baseline (SPEC §5.2, `eeg.fit_full_rank`): z' = a z + W φ(z; h) with
/// dz = `dz` units, otherwise the EEG configuration of [`bench_train_eeg`]. The reference code's
/// epoch for this model was not measured here, so the line has no ratio.
pub fn bench_train_full_rank(
    recording: Option<Sequences<f64>>,
    dz: usize,
    repeats: usize,
) -> TrainBenchLine {
    let best = eeg_epoch(recording, Some(dz), repeats, Precision::F64);
    TrainBenchLine {
        case: format!(
            "train full-rank {dz} f64 (dz={dz}, K=10, 500×50 EEG windows, batch 10, {} threads)",
            rayon::current_num_threads()
        ),
        seconds_per_epoch: best,
        reference: None,
        reference_given: false,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// Best of `repeats` EEG epochs of the rank-3 model, or of the full-rank model with `dz`
/// units.
fn eeg_epoch(
    recording: Option<Sequences<f64>>,
    full_rank: Option<usize>,
    repeats: usize,
    precision: Precision,
) -> f64 {
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
    let mut config = ModelConfig::eeg(data.dim_x);
    if let Some(dz) = full_rank {
        config.transition = Transition::FullRank;
        config.rank = dz;
        config.n_units = dz;
    }
    let params = config.init_params(1).unwrap_or_default();
    let objective = VsmcObjective::new(
        config,
        VsmcOptions {
            n_particles: 10,
            t_forward: 0,
            precision,
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
    best
}

/// Best-of-`repeats` seconds for one epoch of `model` on `trials` (batch 10, K particles).
fn time_epoch(
    model: ModelWithProposal,
    trials: Sequences<f64>,
    k: usize,
    repeats: usize,
    precision: Precision,
) -> f64 {
    let params = match model.init_params(1) {
        Ok(p) => p,
        Err(_) => return f64::NAN,
    };
    let objective = VsmcObjective::with_proposal(
        model,
        VsmcOptions {
            n_particles: k,
            t_forward: 0,
            precision,
        },
        Resampling::Systematic,
    );
    let mut best = f64::INFINITY;
    if let Ok(source) = BatchSource::trials(trials) {
        for rep in 0..repeats.max(1) {
            let cfg = TrainConfig::new(1, 10, 1e-3, 1e-5, rep as u64);
            let start = Instant::now();
            if train(
                &objective,
                &source,
                &cfg,
                params.clone(),
                RunOptions::default(),
            )
            .is_ok()
            {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
    }
    best
}

/// Random trials (Gaussian values or small counts) of the given shape.
fn random_trials(n: usize, dx: usize, tt: usize, counts: bool) -> Sequences<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    Sequences {
        n_sequences: n,
        dim_x: dx,
        dim_u: 0,
        n_time: tt,
        x: (0..n * dx * tt)
            .map(|_| {
                if counts {
                    rng.gen_range(0..3) as f64
                } else {
                    rng.gen_range(-1.0..1.0)
                }
            })
            .collect(),
        u: Vec::new(),
    }
}

/// The continuous teacher–student configuration (SPEC §5.1 (a)): R = 2, N = 20, one-to-one
/// currents, optimal proposal, K = 64, 200 trials × 75, batch 10. Reference 5.0 s/epoch.
pub fn bench_train_continuous(repeats: usize, precision: Precision) -> TrainBenchLine {
    use crate::model::lowrank::*;
    let config = ModelConfig::continuous_student();
    let secs = match ModelWithProposal::new(config, ProposalKind::Optimal, None) {
        Ok(m) => time_epoch(m, random_trials(200, 20, 75, false), 64, repeats, precision),
        Err(_) => f64::NAN,
    };
    TrainBenchLine {
        case: format!(
            "train continuous {} (teacher–student, R=2, N=20, K=64, 200×75, optimal, {} threads)",
            name(precision),
            rayon::current_num_threads()
        ),
        seconds_per_epoch: secs,
        reference: Some(5.0),
        reference_given: false,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The reach-ring student (SPEC §5.1 (c)): R = 2, N = 60, 2 inputs shown as they are,
/// one-to-one currents, optimal proposal, K = 64, one epoch of 800 trials × 250, batch 10.
/// No reference figure is stated for it.
pub fn bench_train_reach(repeats: usize, precision: Precision) -> TrainBenchLine {
    use crate::model::lowrank::*;
    let mut config = ModelConfig::continuous_student();
    (config.n_units, config.dim_x, config.dim_u) = (60, 60, 2);
    let (n, tt) = (800, 250);
    let mut trials = random_trials(n, 60, tt, false);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    trials.dim_u = 2;
    trials.u = (0..n * 2 * tt).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let secs = match ModelWithProposal::new(config, ProposalKind::Optimal, None) {
        Ok(m) => time_epoch(m, trials, 64, repeats, precision),
        Err(_) => f64::NAN,
    };
    TrainBenchLine {
        case: format!(
            "train reach {} (teacher–student, R=2, N=60, 2 inputs, K=64, 800×250, optimal, {} threads)",
            name(precision),
            rayon::current_num_threads()
        ),
        seconds_per_epoch: secs,
        reference: None,
        reference_given: false,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// A file the repository ships (`datasets/…`): under the working directory when it is there,
/// else in the source tree this binary was built from, so `bench` measures the same data
/// wherever it runs from.
pub fn bundled(relative: &str) -> std::path::PathBuf {
    let here = std::path::PathBuf::from(relative);
    if here.exists() {
        return here;
    }
    let built_from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if built_from.exists() {
        built_from
    } else {
        here
    }
}

/// 400 trials × 200 steps simulated from `datasets/teachers/osc_rnn_poisson.json` as the
/// pipeline's `ts.poisson.simulate` does (R_z = 0.2, spikes ~ Poisson(softplus(4 U z − 3))).
fn poisson_teacher_data() -> Option<Sequences<f64>> {
    use crate::data::simulate::*;
    let text = std::fs::read_to_string(bundled("datasets/teachers/osc_rnn_poisson.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut basis = TeacherBasis::from_json(&doc).ok()?;
    basis.dim_input = 0;
    basis.input_weights.clear();
    let config = SimulationConfig {
        n_trials: 400,
        n_time: 200,
        latent_noise_std: 0.2,
        observation: SimulatedObservation::Poisson {
            gain: 4.0,
            bias: -3.0,
            link: PoissonLink::Softplus,
        },
        initial_latent: InitialLatent {
            radius: 2.0,
            radius_is_gaussian_scale: true,
            reference_gaussian_phase: false,
        },
        filter_input: false,
    };
    simulate(&basis, &StimulusTask::None, &config, 2)
        .ok()
        .map(|s| s.sequences)
}

/// The Poisson teacher–student configuration (SPEC §5.1 (b)): R = 2, N = 40, Poisson softplus,
/// CNN encoder [21, 11, 1] × [64, 64] (GELU, causal, circular), K = 64, 400 trials × 200,
/// batch 10. Reference 22.5 s/epoch.
pub fn bench_train_poisson(repeats: usize, precision: Precision) -> TrainBenchLine {
    use crate::model::encoder::*;
    use crate::model::lowrank::*;
    let config = ModelConfig {
        rank: 2,
        n_units: 40,
        dim_x: 40,
        dim_u: 0,
        nonlinearity: Nonlinearity::Relu,
        noise_z: NoiseKind::Diag,
        noise_z0: NoiseKind::Diag,
        noise_x: NoiseKind::Diag,
        observation: Observation::OneToOne,
        readout_from: ReadoutFrom::Currents,
        likelihood: Likelihood::Poisson,
        obs_nonlinearity: Some(ObsNonlinearity::Softplus),
        initial_state: InitialState::Trainable,
        simulate_input: false,
        decay: 0.9,
        init_noise_z: 0.1,
        init_noise_z0: 1.0,
        init_noise_x: 0.1,
        train_observation: true,
        transition: Default::default(),
    };
    let enc = EncoderConfig {
        kernel_sizes: vec![21, 11, 1],
        channels: vec![64, 64],
        activation: EncoderActivation::Gelu,
        padding_location: PaddingLocation::Causal,
        padding_mode: PaddingMode::Circular,
        init_scale: 0.1,
        constant_var: false,
    };
    // The paper's data: simulated from the Poisson teacher when its file is at hand (spike
    // counts are mostly 0, which the likelihood exploits), random counts otherwise.
    let (trials, source) = match poisson_teacher_data() {
        Some(t) => (t, "teacher data"),
        None => (random_trials(400, 40, 200, true), "random counts"),
    };
    let secs = match ModelWithProposal::new(config, ProposalKind::Encoder, Some(&enc)) {
        Ok(m) => time_epoch(m, trials, 64, repeats, precision),
        Err(_) => f64::NAN,
    };
    TrainBenchLine {
        case: format!(
            "train poisson {} (teacher–student, R=2, N=40, CNN encoder, K=64, 400×200 {source}, {} threads)",
            name(precision),
            rayon::current_num_threads()
        ),
        seconds_per_epoch: secs,
        reference: Some(22.5),
        reference_given: false,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The case keys `bench train` knows ("eeg f64", "full-rank 30 f64", "poisson f32", …).
pub const TRAIN_CASE_KEYS: [&str; 10] = [
    "eeg f64",
    "full-rank 30 f64",
    "full-rank 128 f64",
    "continuous f64",
    "reach f64",
    "poisson f64",
    "eeg f32",
    "continuous f32",
    "reach f32",
    "poisson f32",
];

/// Replaces the stated reference of the case `key` by the one of `given` (`(CASE, seconds)`
/// pairs from `--reference`) whose CASE starts the key, the longest such CASE if several do:
/// `eeg` applies to "eeg f64" and "eeg f32", but `eeg f32` given as well wins for "eeg f32".
pub fn apply_reference(line: &mut TrainBenchLine, key: &str, given: &[(String, f64)]) {
    if let Some(&(_, secs)) = given
        .iter()
        .filter(|(case, _)| key.starts_with(&case.to_lowercase()))
        .max_by_key(|(case, _)| case.len())
    {
        line.reference = Some(secs);
        line.reference_given = true;
    }
}

/// All `bench train` cases whose name contains `filter` (all without one), each line passed to
/// `out` as soon as it is measured. `recording` is the EEG array when it is available.
/// `references` replace the stated reference figures (see [`apply_reference`]), e.g. with the
/// reference code timed on this machine by `scripts/reference-bench.py`.
pub fn bench_train(
    recording: impl FnOnce() -> Option<Sequences<f64>>,
    filters: &[String],
    references: &[(String, f64)],
    out: &mut dyn FnMut(String),
) {
    let mut out = |key: &str, mut line: TrainBenchLine| {
        apply_reference(&mut line, key, references);
        out(line.to_string());
    };
    // Case keys "eeg f64", "eeg f32", "full-rank 30 f64", "full-rank 128 f64", "continuous
    // f64", …: `--case eeg` runs both precisions, `--case full-rank` both baselines, `--case
    // f32` every f32 case (case-insensitive); several filters run the cases of any of them.
    let wanted =
        |key: &str| filters.is_empty() || filters.iter().any(|f| key.contains(&f.to_lowercase()));
    let mut recording = Some(recording);
    let mut eeg_data = None;
    for precision in [Precision::F64, Precision::F32] {
        let p = name(precision);
        if wanted(&format!("eeg {p}")) {
            if let Some(load) = recording.take() {
                eeg_data = load();
            }
            out(
                &format!("eeg {p}"),
                bench_train_eeg(eeg_data.clone(), 3, precision),
            );
        }
        // Table 1's two baselines: dz = 30 best of 2 epochs, dz = 128 (≈ 3.5 s) one epoch.
        for (dz, repeats) in [(30, 2), (128, 1)] {
            if precision == Precision::F64 && wanted(&format!("full-rank {dz} f64")) {
                if let Some(load) = recording.take() {
                    eeg_data = load();
                }
                out(
                    &format!("full-rank {dz} f64"),
                    bench_train_full_rank(eeg_data.clone(), dz, repeats),
                );
            }
        }
        if wanted(&format!("continuous {p}")) {
            out(
                &format!("continuous {p}"),
                bench_train_continuous(2, precision),
            );
        }
        if wanted(&format!("reach {p}")) {
            out(&format!("reach {p}"), bench_train_reach(1, precision));
        }
        if wanted(&format!("poisson {p}")) {
            out(&format!("poisson {p}"), bench_train_poisson(3, precision));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(reference: Option<f64>) -> TrainBenchLine {
        TrainBenchLine {
            case: "train x".into(),
            seconds_per_epoch: 0.5,
            reference,
            reference_given: false,
            peak_rss_mb: None,
        }
    }

    /// A given reference replaces the stated one only for the cases its CASE starts, and the
    /// line says which figure its ratio uses.
    #[test]
    fn given_references_replace_the_stated_ones_by_case_prefix() {
        let given = vec![
            ("eeg".to_string(), 4.0),
            ("full-rank 30".to_string(), 2.0),
            ("eeg f64".to_string(), 5.0),
        ];
        let mut eeg64 = line(Some(7.5));
        apply_reference(&mut eeg64, "eeg f64", &given);
        assert_eq!(eeg64.reference, Some(5.0), "the longest matching CASE wins");
        let mut eeg32 = line(Some(7.5));
        apply_reference(&mut eeg32, "eeg f32", &given);
        assert_eq!((eeg32.reference, eeg32.reference_given), (Some(4.0), true));
        assert!(eeg32
            .to_string()
            .contains("reference 4.00 s/epoch (given) · 8.0× faster"));
        let mut poisson = line(Some(22.5));
        apply_reference(&mut poisson, "poisson f64", &given);
        assert_eq!(
            (poisson.reference, poisson.reference_given),
            (Some(22.5), false)
        );
        assert!(poisson.to_string().contains("(stated) · 45.0× faster"));
        let mut wide = line(None);
        apply_reference(&mut wide, "full-rank 128 f64", &given);
        assert_eq!(wide.reference, None);
        apply_reference(&mut wide, "full-rank 30 f64", &given);
        assert_eq!(wide.reference, Some(2.0));
        for key in ["eeg", "full-rank 30", "poisson f32", "continuous", "reach"] {
            assert!(TRAIN_CASE_KEYS.iter().any(|k| k.starts_with(key)), "{key}");
        }
    }
}
