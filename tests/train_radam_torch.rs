//! RAdam + ExponentialLR + gradient clipping against torch trajectories
//! (fixture from tests/fixtures/train/gen_radam_fixture.py, see the README there).

use lowrank_smc::model::Sequences;
use lowrank_smc::train::{
    clip_grad_norm, resume, train, BatchSource, CheckpointPolicy, EpochRecord, ExponentialDecay,
    Objective, ObjectiveError, Observer, ParamLayout, RAdamConfig, RAdamState, RunOptions,
    StepContext, StepInfo, TerminationReason, TrainConfig,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

const TOLERANCE: f64 = 1e-12;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/train/radam_torch.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture radam_torch.json");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Exact floats from the fixture's `*_bits` arrays (IEEE-754 bit patterns as integers).
fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| f64::from_bits(v.as_u64().expect("u64 bit pattern")))
        .collect()
}

fn layout() -> ParamLayout {
    let mut layout = ParamLayout::new();
    layout.push("w", &[3, 2], true);
    layout.push("b", &[4], true);
    layout.push("frozen", &[2], false);
    layout
}

/// The fixture's loss at global step `step`: Σ c_i (p_i − t_i)² + 0.05 p_i⁴ over trainable entries.
fn loss_and_grad(params: &[f64], step: usize, grad: &mut [f64]) -> f64 {
    let mut loss = 0.0;
    for i in 0..10 {
        let c = 1.0 + 0.5 * (i % 3) as f64;
        let t = ((7 * i + 3 * step) % 11) as f64 / 10.0 - 0.5;
        let p = params[i];
        loss += c * (p - t) * (p - t) + 0.05 * p.powi(4);
        grad[i] = c * 2.0 * (p - t) + 0.05 * 4.0 * p.powi(3);
    }
    loss
}

struct FixtureObjective {
    layout: ParamLayout,
}

impl Objective for FixtureObjective {
    type Real = f64;
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn loss_and_grad(
        &self,
        params: &[f64],
        _batch: &Sequences<f64>,
        ctx: &StepContext,
        grad: &mut [f64],
    ) -> Result<StepInfo, ObjectiveError> {
        Ok(StepInfo::new(loss_and_grad(
            params,
            3 * ctx.epoch + ctx.batch,
            grad,
        )))
    }
}

fn radam_config(run: &Value) -> RAdamConfig {
    RAdamConfig {
        weight_decay: run["weight_decay"].as_f64().unwrap(),
        decoupled_weight_decay: run["decoupled_weight_decay"].as_bool().unwrap(),
        ..RAdamConfig::default()
    }
}

fn assert_close(rust: &[f64], torch: &[f64], what: &str) {
    assert_eq!(rust.len(), torch.len());
    for (i, (r, t)) in rust.iter().zip(torch).enumerate() {
        assert!(
            (r - t).abs() <= TOLERANCE * t.abs().max(1.0),
            "{what}, entry {i}: rust {r} vs torch {t} (diff {:e})",
            r - t
        );
    }
}

#[test]
fn radam_steps_match_torch_for_every_run() {
    let fixture = fixture();
    let layout = layout();
    let epochs = fixture["epochs"].as_u64().unwrap() as usize;
    let per_epoch = fixture["batches_per_epoch"].as_u64().unwrap() as usize;
    for (name, run) in fixture["runs"].as_object().unwrap() {
        let lr0 = run["lr"].as_f64().unwrap();
        let lr_end = run["lr_end"].as_f64().unwrap();
        let n_epochs = run["n_epochs"].as_u64().unwrap() as usize;
        let grad_norm = run["grad_norm"].as_f64().unwrap();
        let decay = ExponentialDecay::new(lr0, lr_end, n_epochs);
        assert_eq!(
            decay.gamma,
            f64::from_bits(run["gamma_bits"].as_u64().unwrap()),
            "{name}: gamma"
        );
        let config = radam_config(run);
        let expected_lrs = floats(&run["epoch_lrs_bits"]);
        let trajectory: Vec<Vec<f64>> = run["params_after_step_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let mut params = floats(&fixture["initial_params_bits"]);
        let mut state = RAdamState::new(layout.len());
        let mut grad = vec![0.0; layout.len()];
        let mut lr = lr0;
        for (epoch, expected_lr) in expected_lrs.iter().enumerate().take(epochs) {
            assert_eq!(lr, *expected_lr, "{name}: lr of epoch {epoch}");
            for batch in 0..per_epoch {
                let step = epoch * per_epoch + batch;
                grad.fill(0.0);
                loss_and_grad(&params, step, &mut grad);
                if grad_norm > 0.0 {
                    clip_grad_norm(&layout, &mut grad, grad_norm);
                }
                config.step(&layout, &mut params, &grad, lr, &mut state);
                assert_close(&params, &trajectory[step], &format!("{name}, step {step}"));
            }
            lr = decay.next(lr);
        }
        assert_eq!(&params[10..], &[3.0, -4.0], "{name}: frozen block moved");
    }
}

/// Stops the run (via the interrupt flag) once `epochs` epochs are done.
struct StopAfter<'a> {
    epochs: usize,
    flag: &'a AtomicBool,
}

impl Observer for StopAfter<'_> {
    fn observe_epoch(&mut self, record: &EpochRecord) {
        if record.epoch + 1 >= self.epochs {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn training_loop_reproduces_the_torch_trajectory() {
    let fixture = fixture();
    let epochs = fixture["epochs"].as_u64().unwrap() as usize;
    // Three one-step trials, batch size 1: three minibatches per epoch, as in the fixture.
    let trials = Sequences {
        n_sequences: 3,
        dim_x: 1,
        dim_u: 0,
        n_time: 1,
        x: vec![0.0; 3],
        u: vec![],
    };
    let source = BatchSource::trials(trials).unwrap();
    let objective = FixtureObjective { layout: layout() };
    let dir = std::env::temp_dir().join(format!("train_radam_torch_{}", std::process::id()));
    for (name, run) in fixture["runs"].as_object().unwrap() {
        let n_epochs = run["n_epochs"].as_u64().unwrap() as usize;
        let mut config = TrainConfig::new(
            n_epochs,
            1,
            run["lr"].as_f64().unwrap(),
            run["lr_end"].as_f64().unwrap(),
            5,
        );
        config.grad_norm = run["grad_norm"].as_f64().unwrap();
        config.radam = radam_config(run);
        let flag = AtomicBool::new(false);
        let mut stop = StopAfter {
            epochs,
            flag: &flag,
        };
        let path = dir.join(format!("{name}.h5"));
        let options = || RunOptions {
            checkpoint: Some(CheckpointPolicy {
                path: path.clone(),
                every_epochs: 0,
                model_config_json: "{}".into(),
            }),
            ..RunOptions::default()
        };
        let mut outcome = train(
            &objective,
            &source,
            &config,
            floats(&fixture["initial_params_bits"]),
            RunOptions {
                observer: Some(&mut stop),
                interrupt: Some(&flag),
                ..options()
            },
        )
        .unwrap();
        if n_epochs < epochs {
            // The decay's n_epochs ends the first run early: continue it with n_epochs raised.
            assert_eq!(outcome.termination, TerminationReason::MaxEpochs);
            config.n_epochs = epochs;
            outcome = resume(&objective, &source, &config, &path, options()).unwrap();
            assert_eq!(outcome.termination, TerminationReason::MaxEpochs);
        } else {
            assert_eq!(
                outcome.termination,
                TerminationReason::Interrupted {
                    epoch: epochs,
                    batch: 0
                }
            );
        }
        let trajectory = run["params_after_step_bits"].as_array().unwrap();
        let last = floats(&trajectory[trajectory.len() - 1]);
        assert_close(&outcome.state.params, &last, name);
        let lrs: Vec<f64> = outcome.state.records.iter().map(|r| r.lr).collect();
        assert_eq!(lrs, floats(&run["epoch_lrs_bits"]), "{name}: epoch lrs");
    }
    std::fs::remove_dir_all(&dir).ok();
}
