//! A pipeline `fit` killed mid-run (SIGKILL, no chance to clean up) continues from its last
//! periodic checkpoint when the pipeline is run again, and ends with exactly the model file of
//! an uninterrupted run; the resume state is removed once the outputs are committed. A forced
//! rerun writes the same model bytes, so the stages that read the model stay cached.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"
stages:
  - name: prep
    kind: prepare
    params: {layout: time_by_channel, data_source: test, channels: [0, 9], max_time: 1000}
    inputs: {data: "file:data/eeg.npy"}
  - name: fit
    kind: fit
    params:
      variant: tiny
      model: {rank: 1, n_units: 8, dim_x: 2, nonlinearity: clipped_relu, noise_z: full,
              noise_z0: full, noise_x: diag, observation: affine, readout_from: z,
              likelihood: gaussian, initial_state: trainable, decay: 0.9, init_noise_z: 0.1,
              init_noise_z0: 1.0, init_noise_x: 0.1}
      vsmc: {proposal: optimal, n_particles: 4, resampling: systematic}
      train: {n_epochs: 1500, batch_size: 5, lr: 1.0e-2, lr_end: 1.0e-3, seed: 3}
      windows: {length: 20, per_epoch: 20}
    inputs: {data: "prep:sequences"}
"#;

const DOWNSTREAM: &str = r#"
  - name: points
    kind: fixed_points
    params: {model_name: tiny}
    inputs: {model: "fit:model"}
"#;

fn project() -> tempfile::TempDir {
    project_with(PIPELINE)
}

fn project_with(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/eeg/EEG_data_smoothed.npy"),
        dir.path().join("data/eeg.npy"),
    )
    .unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let resume = dir.join(".lowrank-smc/resume");
    std::fs::read_dir(resume)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("checkpoint.h5"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn params(path: &Path) -> Vec<(String, Vec<f64>)> {
    let file = hdf5::File::open(path).unwrap();
    let group = file.group("params").unwrap();
    let mut names = group.member_names().unwrap();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = group.dataset(&n).unwrap().read_raw::<f64>().unwrap();
            (n, v)
        })
        .collect()
}

#[test]
fn killed_fit_resumes_to_the_uninterrupted_result() {
    let interrupted = project();
    let d = interrupted.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(d)
        .args(["run", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as its first periodic checkpoint exists.
    let started = Instant::now();
    while checkpoints(d).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!d.join("results/fit/model.h5").exists());
    assert_eq!(checkpoints(d).len(), 1);
    // `gc` keeps the resume state (and says so) unless asked to drop it.
    let gc = run(d, &["gc"]);
    assert!(gc.contains("kept 1 resume directory"), "{gc}");
    run(d, &["gc", "--resume", "--dry-run"]);
    assert_eq!(checkpoints(d).len(), 1);

    let resumed = run(d, &["run", "--no-progress"]);
    // The wall time it prints is this run's, and the line says the fit resumed.
    assert!(
        resumed.contains("[done]     fit in") && resumed.contains("(resumed from epoch "),
        "{resumed}"
    );
    let shown = run(d, &["show", "fit"]);
    assert!(shown.contains("resumed_from_epoch"), "{shown}");
    assert!(checkpoints(d).is_empty(), "resume state left behind");
    // A stale resume directory (e.g. of params changed since) goes with `gc --resume`.
    let stale = d.join(".lowrank-smc/resume/0123abcd");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("checkpoint.h5"), b"x").unwrap();
    let gc = run(d, &["gc", "--resume"]);
    assert!(gc.contains("1 resume directory"), "{gc}");
    assert!(!stale.exists());

    let whole = project();
    let ran = run(whole.path(), &["run", "--no-progress"]);
    assert!(!ran.contains("resumed"), "{ran}");
    let shown = run(whole.path(), &["show", "fit"]);
    assert!(!shown.contains("resumed_from_epoch"), "{shown}");
    let a = params(&d.join("results/fit/model.h5"));
    let b = params(&whole.path().join("results/fit/model.h5"));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs after resuming");
    }
    // Not only the parameters: the whole file (optimiser state, loss curve; no wall times).
    assert!(
        std::fs::read(d.join("results/fit/model.h5")).unwrap()
            == std::fs::read(whole.path().join("results/fit/model.h5")).unwrap(),
        "the resumed run's model.h5 differs from the uninterrupted run's"
    );
}

#[test]
fn a_forced_fit_rerun_leaves_the_stages_reading_its_model_cached() {
    let short = PIPELINE.replace("n_epochs: 1500", "n_epochs: 20");
    let project = project_with(&format!("{short}{DOWNSTREAM}"));
    let d = project.path();
    let first = run(d, &["run", "--no-progress"]);
    assert!(first.contains("[done]     points in"), "{first}");
    let model = std::fs::read(d.join("results/fit/model.h5")).unwrap();
    let loss_curve = std::fs::read(d.join("results/fit/loss_curve.parquet")).unwrap();

    let forced = run(d, &["run", "--no-progress", "--stage", "fit", "--force"]);
    assert!(forced.contains("[done]     fit in"), "{forced}");
    assert!(std::fs::read(d.join("results/fit/model.h5")).unwrap() == model);
    // The wall times live in the loss curve table, which did change.
    assert!(std::fs::read(d.join("results/fit/loss_curve.parquet")).unwrap() != loss_curve);
    let again = run(d, &["run", "--no-progress"]);
    assert!(!again.contains("[running]"), "{again}");
    let status = run(d, &["status"]);
    assert!(!status.contains("stale"), "{status}");
}
