//! Checkpoint files: plain-HDF5 readability, round trip, and clear errors for bad files.

use lowrank_smc::train::{
    load_checkpoint, load_params, save_checkpoint, save_model, CheckpointMeta, EpochRecord,
    ParamLayout, TrainConfig, TrainError, TrainState,
};
use std::path::PathBuf;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("train_ckpt_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn layout() -> ParamLayout {
    let mut layout = ParamLayout::new();
    layout.push("rnn.transition.m", &[4, 2], true);
    layout.push("rnn.transition.decay", &[], true);
    layout.push("rnn.transition.Wu", &[4, 0], true);
    layout.push("rnn.observation.B", &[3], false);
    layout
}

fn state(layout: &ParamLayout) -> TrainState {
    let params: Vec<f64> = (0..layout.len()).map(|i| 0.1 * i as f64 - 0.35).collect();
    let config = TrainConfig::new(10, 4, 1e-3, 1e-5, 42);
    let mut state = TrainState::initial(params, &config);
    state.optimizer.step = 17;
    state
        .optimizer
        .exp_avg
        .iter_mut()
        .enumerate()
        .for_each(|(i, m)| *m = 1e-3 * i as f64);
    state
        .optimizer
        .exp_avg_sq
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = 1e-7 * (i * i) as f64);
    state.lr = 7.5e-4;
    state.epoch = 3;
    state.batch = 2;
    state.epoch_loss_sum = -12.25;
    state.epoch_diagnostic_sums = vec![("mean_alpha".into(), 0.75)];
    state.epoch_seconds = 0.5;
    state.best_loss = -6.5;
    state.epochs_since_best = 1;
    state.records = (0..3)
        .map(|epoch| EpochRecord {
            epoch,
            loss: -(epoch as f64) - 0.5,
            lr: 1e-3 * 0.9f64.powi(epoch as i32),
            seconds: 0.25,
            diagnostics: if epoch == 1 {
                vec![]
            } else {
                vec![("mean_alpha".into(), 0.1 * epoch as f64)]
            },
        })
        .collect();
    state
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        model_config_json: r#"{"rank":2,"n":4}"#.into(),
        train_config_json: serde_json::to_string(&TrainConfig::new(10, 4, 1e-3, 1e-5, 42)).unwrap(),
        termination_json: String::new(),
    }
}

#[test]
fn checkpoint_round_trips_and_is_plain_hdf5() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("ckpt.h5");
    let layout = layout();
    let state = state(&layout);
    save_checkpoint(&path, &layout, &state, &meta()).unwrap();
    assert!(
        !dir.join("ckpt.h5.tmp").exists(),
        "temporary file left behind"
    );

    let loaded = load_checkpoint(&path, &layout).unwrap();
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.meta, meta());
    assert_eq!(load_params(&path, &layout).unwrap(), state.params);

    // Read back with the hdf5 crate alone, as h5py would see it.
    let file = hdf5::File::open(&path).unwrap();
    let m = file.dataset("params/rnn.transition.m").unwrap();
    assert_eq!(m.shape(), vec![4, 2]);
    assert_eq!(m.read_raw::<f64>().unwrap(), state.params[0..8].to_vec());
    let decay = file.dataset("params/rnn.transition.decay").unwrap();
    assert_eq!(decay.shape(), Vec::<usize>::new());
    assert_eq!(decay.read_scalar::<f64>().unwrap(), state.params[8]);
    assert_eq!(
        file.dataset("params/rnn.transition.Wu").unwrap().shape(),
        vec![4, 0]
    );
    let frozen = file.dataset("params/rnn.observation.B").unwrap();
    assert_eq!(
        frozen
            .attr("trainable")
            .unwrap()
            .read_scalar::<u64>()
            .unwrap(),
        0
    );
    let config: hdf5::types::VarLenUnicode =
        file.attr("train_config").unwrap().read_scalar().unwrap();
    let config: serde_json::Value = serde_json::from_str(config.as_str()).unwrap();
    assert_eq!(config["batch_size"], 4);
    let step: u64 = file
        .group("optimizer")
        .unwrap()
        .attr("step")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(step, 17);
    let alpha = file.dataset("loss_curve/diagnostics/mean_alpha").unwrap();
    let alpha = alpha.read_raw::<f64>().unwrap();
    assert_eq!(alpha[0], 0.0);
    assert!(alpha[1].is_nan());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_file_has_no_wall_times_so_the_same_state_gives_the_same_bytes() {
    let dir = temp_dir("model");
    let layout = layout();
    let mut state = state(&layout);
    // A finished run: its epoch clock is reset.
    state.epoch_seconds = 0.0;
    let mut slower = state.clone();
    slower.records.iter_mut().for_each(|r| r.seconds *= 3.0);
    let (a, b) = (dir.join("a.h5"), dir.join("b.h5"));
    save_model(&a, &layout, &state, &meta()).unwrap();
    save_model(&b, &layout, &slower, &meta()).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A checkpoint keeps them (a resumed run's loss curve needs them).
    let (c, d) = (dir.join("c.h5"), dir.join("d.h5"));
    save_checkpoint(&c, &layout, &state, &meta()).unwrap();
    save_checkpoint(&d, &layout, &slower, &meta()).unwrap();
    assert_ne!(std::fs::read(&c).unwrap(), std::fs::read(&d).unwrap());

    let file = hdf5::File::open(&a).unwrap();
    assert!(!file.link_exists("loss_curve/seconds"));
    assert!(file.link_exists("loss_curve/loss"));
    // Read back, the times are NaN and everything else is the state.
    let loaded = load_checkpoint(&a, &layout).unwrap();
    assert!(loaded.state.records.iter().all(|r| r.seconds.is_nan()));
    assert_eq!(loaded.state.params, state.params);
    assert_eq!(loaded.state.optimizer, state.optimizer);
    assert_eq!(loaded.state.records.len(), state.records.len());
    for (g, e) in loaded.state.records.iter().zip(&state.records) {
        assert_eq!((g.epoch, g.loss, g.lr), (e.epoch, e.loss, e.lr));
        assert_eq!(g.diagnostics, e.diagnostics);
    }
    assert_eq!(loaded.meta, meta());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_corrupt_and_foreign_files_name_the_file() {
    let dir = temp_dir("bad");
    let layout = layout();

    let missing = dir.join("missing.h5");
    let err = load_checkpoint(&missing, &layout).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }));
    assert!(
        err.to_string().contains("missing.h5") && err.to_string().contains("not found"),
        "{err}"
    );

    let corrupt = dir.join("corrupt.h5");
    std::fs::write(&corrupt, b"this is not an HDF5 file at all").unwrap();
    let err = load_checkpoint(&corrupt, &layout).unwrap_err().to_string();
    assert!(
        err.contains("corrupt.h5") && err.contains("not an HDF5 file"),
        "{err}"
    );

    let foreign = dir.join("foreign.h5");
    hdf5::File::create(&foreign)
        .unwrap()
        .create_group("params")
        .unwrap();
    let err = load_params(&foreign, &layout).unwrap_err().to_string();
    assert!(
        err.contains("foreign.h5") && err.contains("not a lowrank-smc checkpoint"),
        "{err}"
    );

    // A truncated checkpoint (e.g. a crash mid-copy) is reported, not a panic.
    let good = dir.join("good.h5");
    save_checkpoint(&good, &layout, &state(&layout), &meta()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.h5");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_checkpoint(&truncated, &layout)
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated.h5"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shape_mismatch_and_missing_block_name_the_dataset() {
    let dir = temp_dir("shape");
    let path = dir.join("ckpt.h5");
    let layout = layout();
    save_checkpoint(&path, &layout, &state(&layout), &meta()).unwrap();

    let mut other = ParamLayout::new();
    other.push("rnn.transition.m", &[4, 3], true);
    let err = load_params(&path, &other).unwrap_err().to_string();
    assert!(
        err.contains("params/rnn.transition.m") && err.contains("[4, 2]") && err.contains("[4, 3]"),
        "{err}"
    );

    let mut extra = layout.clone();
    extra.push("encoder.conv0.weight", &[2, 2], true);
    let err = load_checkpoint(&path, &extra).unwrap_err().to_string();
    assert!(
        err.contains("params/encoder.conv0.weight") && err.contains("missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
