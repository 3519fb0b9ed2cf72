//! The training loop on toy objectives: convergence, divergence, early stopping, schedules,
//! and bit-identical resume from HDF5 checkpoints.

use lowrank_smc::model::Sequences;
use lowrank_smc::train::{
    load_checkpoint, resume, train, BatchProgress, BatchSource, CheckpointPolicy, DiagnosticStop,
    EarlyStop, EpochRecord, Objective, ObjectiveError, Observer, ParamLayout, ParticleSchedule,
    RunOptions, StepContext, StepInfo, TerminationReason, TrainConfig, TrainError, TrainOutcome,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

const W_TRUE: [f64; 2] = [1.5, -0.7];
const B_TRUE: f64 = 0.3;

/// One recording of 3 channels: two regressors and y = w·x + b + noise.
fn recording(n_time: usize) -> Sequences<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut x = vec![0.0; 3 * n_time];
    for t in 0..n_time {
        let x0: f64 = rng.gen_range(-1.0..1.0);
        let x1: f64 = rng.gen_range(-1.0..1.0);
        let noise: f64 = rng.gen_range(-0.1..0.1);
        x[t] = x0;
        x[n_time + t] = x1;
        x[2 * n_time + t] = W_TRUE[0] * x0 + W_TRUE[1] * x1 + B_TRUE + noise;
    }
    Sequences {
        n_sequences: 1,
        dim_x: 3,
        dim_u: 0,
        n_time,
        x,
        u: vec![],
    }
}

/// Ordinary least squares on the whole recording (3 × 3 normal equations, Cramer's rule).
fn ols(data: &Sequences<f64>) -> [f64; 3] {
    let n = data.n_time;
    let mut a = [[0.0; 3]; 3];
    let mut rhs = [0.0; 3];
    for t in 0..n {
        let features = [data.x[t], data.x[n + t], 1.0];
        let y = data.x[2 * n + t];
        for i in 0..3 {
            rhs[i] += features[i] * y;
            for j in 0..3 {
                a[i][j] += features[i] * features[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    let mut solution = [0.0; 3];
    for (k, s) in solution.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = rhs[i];
        }
        *s = det(&m) / d;
    }
    solution
}

/// Mean squared error of y − w·x − b over the minibatch, plus optional seeded gradient noise
/// (standing in for the particle noise of VSMC) and diagnostics.
struct LeastSquares {
    layout: ParamLayout,
    gradient_noise: f64,
    /// Return a NaN loss (`true`) or a NaN gradient (`false`) at (epoch, batch).
    poison_at: Option<(usize, usize, bool)>,
}

impl LeastSquares {
    fn new(gradient_noise: f64) -> Self {
        let mut layout = ParamLayout::new();
        layout.push("w", &[2], true);
        layout.push("b", &[], true);
        layout.push("unused_frozen", &[2, 0], false);
        layout.push("scale", &[1], false);
        Self {
            layout,
            gradient_noise,
            poison_at: None,
        }
    }
}

impl Objective for LeastSquares {
    type Real = f64;
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn loss_and_grad(
        &self,
        params: &[f64],
        batch: &Sequences<f64>,
        ctx: &StepContext,
        grad: &mut [f64],
    ) -> Result<StepInfo, ObjectiveError> {
        if batch.dim_x != 3 {
            return Err(format!("expected 3 channels, got {}", batch.dim_x).into());
        }
        let (w0, w1, b) = (params[0], params[1], params[2]);
        let n = batch.n_time;
        let count = (batch.n_sequences * n) as f64;
        let mut loss = 0.0;
        for s in 0..batch.n_sequences {
            let x = batch.x_of(s);
            for t in 0..n {
                let residual = x[2 * n + t] - w0 * x[t] - w1 * x[n + t] - b;
                loss += residual * residual / count;
                grad[0] -= 2.0 * residual * x[t] / count;
                grad[1] -= 2.0 * residual * x[n + t] / count;
                grad[2] -= 2.0 * residual / count;
            }
        }
        if self.gradient_noise > 0.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
            for g in &mut grad[..3] {
                *g += self.gradient_noise * rng.gen_range(-1.0..1.0);
            }
        }
        if let Some((epoch, batch_index, in_loss)) = self.poison_at {
            if (ctx.epoch, ctx.batch) == (epoch, batch_index) {
                if in_loss {
                    loss = f64::NAN;
                } else {
                    grad[2] = f64::INFINITY;
                }
            }
        }
        let mut info = StepInfo::new(loss).with("abs_w0", w0.abs());
        if let Some(k) = ctx.n_particles {
            info = info.with("particles", k as f64);
        }
        Ok(info)
    }
}

fn config(n_epochs: usize) -> TrainConfig {
    TrainConfig::new(n_epochs, 8, 0.05, 0.002, 3)
}

fn initial_params() -> Vec<f64> {
    vec![0.0, 0.0, 0.0, 1.0]
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("train_loop_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn checkpoint(path: &std::path::Path, every_epochs: usize) -> Option<CheckpointPolicy> {
    Some(CheckpointPolicy {
        path: path.to_path_buf(),
        every_epochs,
        model_config_json: r#"{"model":"least squares"}"#.into(),
    })
}

#[test]
fn least_squares_converges_to_the_ols_solution() {
    let data = recording(400);
    let optimum = ols(&data);
    let source = BatchSource::windows(data, 20, 40).unwrap();
    let objective = LeastSquares::new(0.0);
    let mut losses = Vec::new();
    let mut observer = |record: &EpochRecord| losses.push(record.loss);
    let outcome = train(
        &objective,
        &source,
        &config(150),
        initial_params(),
        RunOptions {
            observer: Some(&mut observer),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(outcome.termination, TerminationReason::MaxEpochs);
    assert_eq!(losses.len(), 150);
    assert!(
        losses[149] < 0.1 * losses[0],
        "{} → {}",
        losses[0],
        losses[149]
    );
    // Minibatch (window) noise at the final lr 2e-3 leaves the iterate within ~1e-2 of the optimum.
    for (i, (p, o)) in outcome.state.params[..3].iter().zip(optimum).enumerate() {
        assert!((p - o).abs() < 2e-2, "param {i}: {p} vs OLS {o}");
    }
    assert_eq!(outcome.state.params[3], 1.0, "frozen block moved");
    let last = outcome.state.records.last().unwrap();
    assert_eq!(last.diagnostic("abs_w0"), Some(last.diagnostics[0].1));
    // The last epoch ran at lr_end/γ; the decay then reached lr_end.
    assert!(
        (outcome.state.lr - 0.002).abs() < 1e-12,
        "{}",
        outcome.state.lr
    );
    assert!((last.lr * outcome.state.decay.gamma - 0.002).abs() < 1e-12);
}

#[test]
fn resume_after_an_epoch_or_mid_epoch_is_bit_identical() {
    let dir = temp_dir("resume");
    let data = recording(300);
    let source = BatchSource::windows(data, 25, 37).unwrap(); // 5 batches, last one partial
    let objective = LeastSquares::new(0.3);
    let config = config(7);
    let straight_path = dir.join("straight.h5");
    let straight = train(
        &objective,
        &source,
        &config,
        initial_params(),
        RunOptions {
            checkpoint: checkpoint(&straight_path, 2),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(straight.termination, TerminationReason::MaxEpochs);

    /// Interrupts once `at` = (epoch, batch) minibatch steps are done.
    struct InterruptAt<'a> {
        at: (usize, usize),
        flag: &'a AtomicBool,
    }
    impl Observer for InterruptAt<'_> {
        fn observe_epoch(&mut self, _record: &EpochRecord) {}
        fn observe_batch(&mut self, progress: &BatchProgress) {
            if (progress.epoch, progress.batch + 1) == self.at {
                self.flag.store(true, Ordering::SeqCst);
            }
        }
    }

    for (stop_epoch, stop_batch) in [(3, 5), (2, 3)] {
        let path = dir.join(format!("split_{stop_epoch}_{stop_batch}.h5"));
        let flag = AtomicBool::new(false);
        let mut interrupter = InterruptAt {
            at: (stop_epoch, stop_batch),
            flag: &flag,
        };
        let first = train(
            &objective,
            &source,
            &config,
            initial_params(),
            RunOptions {
                observer: Some(&mut interrupter),
                checkpoint: checkpoint(&path, 1),
                interrupt: Some(&flag),
                step_runner: None,
            },
        )
        .unwrap();
        let expected_stop = if stop_batch == 5 {
            (stop_epoch + 1, 0)
        } else {
            (stop_epoch, stop_batch)
        };
        assert_eq!(
            first.termination,
            TerminationReason::Interrupted {
                epoch: expected_stop.0,
                batch: expected_stop.1
            }
        );
        let stored = load_checkpoint(&path, objective.layout()).unwrap();
        assert_eq!(stored.state, first.state, "checkpoint round trip");
        let resumed = resume(&objective, &source, &config, &path, RunOptions::default()).unwrap();
        assert_eq!(resumed.termination, TerminationReason::MaxEpochs);
        assert_same_run(&straight, &resumed);
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn assert_same_run(straight: &TrainOutcome, resumed: &TrainOutcome) {
    assert_eq!(straight.state.params, resumed.state.params);
    assert_eq!(straight.state.optimizer, resumed.state.optimizer);
    assert_eq!(straight.state.lr, resumed.state.lr);
    assert_eq!(straight.state.best_loss, resumed.state.best_loss);
    // Everything but the wall-clock seconds.
    let strip = |o: &TrainOutcome| -> Vec<EpochRecord> {
        o.state
            .records
            .iter()
            .map(|r| EpochRecord {
                seconds: 0.0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(strip(straight), strip(resumed));
}

#[test]
fn nan_loss_or_gradient_stops_with_the_last_good_parameters_and_checkpoint() {
    let dir = temp_dir("diverge");
    let source = BatchSource::windows(recording(200), 20, 40).unwrap(); // 5 batches
    for in_loss in [true, false] {
        let path = dir.join(format!("diverge_{in_loss}.h5"));
        let mut objective = LeastSquares::new(0.1);
        objective.poison_at = Some((3, 2, in_loss));
        let diverged = train(
            &objective,
            &source,
            &config(10),
            initial_params(),
            RunOptions {
                checkpoint: checkpoint(&path, 1),
                ..RunOptions::default()
            },
        )
        .unwrap();
        let TerminationReason::Diverged { epoch, batch, what } = &diverged.termination else {
            panic!("expected Diverged, got {:?}", diverged.termination);
        };
        assert_eq!((*epoch, *batch), (3, 2));
        if in_loss {
            assert!(what.contains("loss is NaN"), "{what}");
        } else {
            assert!(what.contains("gradient of `b`"), "{what}");
        }
        assert!(diverged.state.params.iter().all(|p| p.is_finite()));

        // The same run stopped just before the bad step holds the same parameters.
        let clean = LeastSquares::new(0.1);
        let flag = AtomicBool::new(false);
        let mut stopper = |_: &EpochRecord| {};
        struct StopBefore<'a, F: FnMut(&EpochRecord)> {
            inner: F,
            flag: &'a AtomicBool,
        }
        impl<F: FnMut(&EpochRecord)> Observer for StopBefore<'_, F> {
            fn observe_epoch(&mut self, record: &EpochRecord) {
                (self.inner)(record)
            }
            fn observe_batch(&mut self, progress: &BatchProgress) {
                if (progress.epoch, progress.batch) == (3, 1) {
                    self.flag.store(true, Ordering::SeqCst);
                }
            }
        }
        let mut observer = StopBefore {
            inner: &mut stopper,
            flag: &flag,
        };
        let good = train(
            &clean,
            &source,
            &config(10),
            initial_params(),
            RunOptions {
                observer: Some(&mut observer),
                interrupt: Some(&flag),
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            good.termination,
            TerminationReason::Interrupted { epoch: 3, batch: 2 }
        );
        assert_eq!(good.state.params, diverged.state.params);

        // The checkpoint on disk is the last good epoch boundary, not the diverged state.
        let stored = load_checkpoint(&path, objective.layout()).unwrap();
        assert_eq!((stored.state.epoch, stored.state.batch), (3, 0));
        assert_eq!(stored.state.records.len(), 3);
        assert!(stored.meta.termination_json.is_empty());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Constant loss with a diagnostic that decays as 1/(epoch + 1).
struct Plateau {
    layout: ParamLayout,
}

impl Objective for Plateau {
    type Real = f32;
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn loss_and_grad(
        &self,
        _params: &[f64],
        batch: &Sequences<f32>,
        ctx: &StepContext,
        grad: &mut [f64],
    ) -> Result<StepInfo, ObjectiveError> {
        grad[0] = 1.0;
        Ok(StepInfo::new(f64::from(batch.x[0]))
            .with("mean_alpha", 1.0 / (ctx.epoch + 1) as f64)
            .with("particles", ctx.n_particles.unwrap_or(0) as f64))
    }
}

fn plateau() -> (Plateau, BatchSource<f32>) {
    let mut layout = ParamLayout::new();
    layout.push("theta", &[], true);
    let trials = Sequences {
        n_sequences: 4,
        dim_x: 1,
        dim_u: 1,
        n_time: 2,
        x: vec![2.0; 8],
        u: vec![0.5; 8],
    };
    (Plateau { layout }, BatchSource::trials(trials).unwrap())
}

#[test]
fn early_stopping_by_patience_and_by_diagnostic() {
    let (objective, source) = plateau();
    let mut config = TrainConfig::new(100, 3, 1e-3, 1e-4, 0);
    config.patience = Some(4);
    let outcome = train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions::default(),
    )
    .unwrap();
    // Epoch 0 sets the best loss; epochs 1..=4 do not improve on it.
    assert_eq!(outcome.state.records.len(), 5);
    assert_eq!(
        outcome.termination,
        TerminationReason::EarlyStopped(EarlyStop::NoImprovement {
            patience: 4,
            best_loss: 2.0
        })
    );

    config.patience = None;
    config.stop_below = Some(DiagnosticStop {
        name: "mean_alpha".into(),
        threshold: 0.2,
        every_epochs: 2,
    });
    let outcome = train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions::default(),
    )
    .unwrap();
    // 1/(e+1) < 0.2 first at e = 5, which is also a check epoch ((5+1) % 2 == 0).
    assert_eq!(outcome.state.records.len(), 6);
    assert!(matches!(
        outcome.termination,
        TerminationReason::EarlyStopped(EarlyStop::DiagnosticBelow { ref name, value, .. })
            if name == "mean_alpha" && value == 1.0 / 6.0
    ));
    assert!(outcome.termination.text().contains("mean_alpha"));
}

#[test]
fn particle_schedule_reaches_the_objective() {
    let (objective, source) = plateau();
    let mut config = TrainConfig::new(5, 4, 1e-3, 1e-4, 0);
    config.particles = Some(ParticleSchedule {
        start: 2,
        end: 16,
        epochs: 3,
    });
    let outcome = train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions::default(),
    )
    .unwrap();
    let ks: Vec<f64> = outcome
        .state
        .records
        .iter()
        .map(|r| r.diagnostic("particles").unwrap())
        .collect();
    assert_eq!(ks, vec![2.0, 4.0, 8.0, 16.0, 16.0]);
}

#[test]
fn bad_settings_and_objective_errors_are_reported() {
    let (objective, source) = plateau();
    let mut config = TrainConfig::new(5, 0, 1e-3, 1e-4, 0);
    let err = train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`batch_size`"), "{err}");
    config.batch_size = 2;
    config.lr = f64::NAN;
    let err = train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`lr`"), "{err}");
    config.lr = 1e-3;
    let err = train(
        &objective,
        &source,
        &config,
        vec![0.0; 2],
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Params { .. }), "{err}");
    assert!(err.to_string().contains("theta"), "{err}");

    // An objective error (here: wrong channel count) carries epoch and batch.
    let wrong_channels = Sequences {
        n_sequences: 1,
        dim_x: 2,
        dim_u: 0,
        n_time: 30,
        x: vec![0.0; 60],
        u: vec![],
    };
    let source = BatchSource::windows(wrong_channels, 5, 4).unwrap();
    let err = train(
        &LeastSquares::new(0.0),
        &source,
        &config,
        initial_params(),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("epoch 0, batch 0: expected 3 channels"),
        "{err}"
    );
}

#[test]
fn resume_refuses_another_seed_or_batch_size() {
    let dir = temp_dir("refuse");
    let path = dir.join("run.h5");
    let (objective, source) = plateau();
    let config = TrainConfig::new(2, 2, 1e-3, 1e-4, 9);
    train(
        &objective,
        &source,
        &config,
        vec![0.0],
        RunOptions {
            checkpoint: checkpoint(&path, 1),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let mut other = config.clone();
    other.seed = 10;
    let err = resume(&objective, &source, &other, &path, RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("`seed`"), "{err}");
    // Raising n_epochs continues the finished run.
    let mut longer = config.clone();
    longer.n_epochs = 4;
    let outcome = resume(&objective, &source, &longer, &path, RunOptions::default()).unwrap();
    assert_eq!(outcome.state.records.len(), 4);
    std::fs::remove_dir_all(&dir).ok();
}
