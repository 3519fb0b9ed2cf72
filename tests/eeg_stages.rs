//! The EEG chain's data stages through the real binary, on the shipped EEG array:
//! `prepare` (npy → sequences), `evaluate` (D_stsp, D_H), `summarize` (median ± MAD) and
//! `compare` against the paper reference table. The generated side here is a different stretch
//! of the recording itself (a stand-in for a model sample), so the scores must be small but
//! non-zero, and larger for a shuffled copy.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lowrank-smc")
}

fn eeg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/eeg/EEG_data_smoothed.npy")
}

/// `lowrank-smc exec ARGS…` in `dir`: exit code and stdout + stderr.
fn exec(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    cli(dir, &all)
}

/// `lowrank-smc ARGS…` in `dir`: exit code and stdout + stderr.
fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = cli_streams(dir, args);
    (code, format!("{stdout}{stderr}"))
}

/// `lowrank-smc ARGS…` in `dir`: exit code, stdout and stderr apart.
fn cli_streams(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `exec prepare` of the shipped EEG array into `d/data/sequences.h5`, with extra `--set`s.
fn prepare(d: &Path, sets: &[&str]) {
    let eeg = eeg();
    let input = format!("data={}", eeg.display());
    let mut args = vec![
        "prepare",
        "--set",
        "layout=time_by_channel",
        "--set",
        "data_source=real",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--input", &input, "--out-dir", "data"]);
    let (code, text) = exec(d, &args);
    assert_eq!(code, 0, "{text}");
}

fn parquet_number(path: &Path, column: &str) -> f64 {
    let t = lowrank_smc::pipeline::table::Table::read_parquet(path).expect("table reads");
    t.column(column)
        .and_then(|c| c.number(0))
        .unwrap_or_else(|| panic!("{column} missing"))
}

#[test]
fn prepare_evaluate_summarize_compare() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let eeg = eeg();
    let eeg = eeg.to_str().unwrap();
    prepare(d, &["max_time=3000"]);
    // A different stretch of the recording as the "generated" series: samples 3000..9640 in
    // the paper's layout (channels × time), written through the library.
    let all = lowrank_smc::data::npy::read_npy(Path::new(eeg)).unwrap();
    let (t_all, c) = (all.shape[0], all.shape[1]);
    let t0 = 3000;
    let n = t_all - t0;
    let mut x = vec![0.0; c * n];
    for t in 0..n {
        for ch in 0..c {
            x[ch * n + t] = all.data[(t0 + t) * c + ch];
        }
    }
    let seq = lowrank_smc::model::Sequences {
        n_sequences: 1,
        dim_x: c,
        dim_u: 0,
        n_time: n,
        x: x.clone(),
        u: vec![],
    };
    std::fs::create_dir_all(d.join("gen")).unwrap();
    lowrank_smc::data::sequences_io::write_sequences(
        &d.join("gen/later.h5"),
        &seq,
        &[("variant", "later_stretch".into()), ("dim", "64".into())],
    )
    .unwrap();
    // Time-shuffled copy: same marginal distribution, no temporal structure.
    let mut shuffled = seq.clone();
    for ch in 0..c {
        for t in 0..n {
            let j = (t * 7919) % n;
            shuffled.x[ch * n + t] = x[ch * n + j];
        }
    }
    lowrank_smc::data::sequences_io::write_sequences(
        &d.join("gen/shuffled.h5"),
        &shuffled,
        &[("variant", "shuffled".into())],
    )
    .unwrap();
    for (name, seed) in [("later", "1"), ("shuffled", "2")] {
        let (code, text) = exec(
            d,
            &[
                "evaluate",
                "--set",
                &format!("seed={seed}"),
                "--set",
                "dataset=eeg",
                "--set",
                "dstsp_samples=300",
                "--input",
                "data=data/sequences.h5",
                "--input",
                &format!("generated=gen/{name}.h5"),
                "--out-dir",
                &format!("ev_{name}"),
            ],
        );
        assert_eq!(code, 0, "{text}");
    }
    let dh_later = parquet_number(&d.join("ev_later/metrics.parquet"), "d_h");
    let dh_shuf = parquet_number(&d.join("ev_shuffled/metrics.parquet"), "d_h");
    let ds_later = parquet_number(&d.join("ev_later/metrics.parquet"), "d_stsp");
    assert!(
        dh_later > 0.0 && dh_later < dh_shuf,
        "D_H later {dh_later} shuffled {dh_shuf}"
    );
    assert!(ds_later.is_finite() && ds_later > 0.0, "D_stsp {ds_later}");
    let md = std::fs::read_to_string(d.join("ev_later/metrics.md")).unwrap();
    assert!(md.contains("later_stretch") && md.contains("real"), "{md}");

    // Aggregate both rows by dataset (median ± MAD) and compare with the paper table.
    let (code, text) = exec(
        d,
        &[
            "summarize",
            "--set",
            "group_by=[dataset]",
            "--set",
            "metrics=[d_stsp, d_h]",
            "--set",
            "keys={}",
            "--input",
            "tables=ev_later/metrics.parquet",
            "--input",
            "tables=ev_shuffled/metrics.parquet",
            "--out-dir",
            "summary",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let median_dh = parquet_number(&d.join("summary/table.parquet"), "d_h");
    assert!((median_dh - 0.5 * (dh_later + dh_shuf)).abs() < 1e-12);
    assert!(d.join("summary/box_d_h.png").is_file());

    // Bad input: a wrong param is an error that names it; nothing is left behind.
    let (code, text) = exec(
        d,
        &[
            "evaluate",
            "--set",
            "seed=1",
            "--set",
            "dataset=eeg",
            "--set",
            "smooth_window=14",
            "--input",
            "data=data/sequences.h5",
            "--input",
            "generated=gen/later.h5",
            "--out-dir",
            "bad",
        ],
    );
    assert_ne!(code, 0);
    assert!(text.contains("smooth_window"), "{text}");
    assert!(!d.join("bad/metrics.parquet").exists());
}

/// `configs/fit-eeg.yaml` (the README's one-off fit params) is the pipeline's `eeg.fit` params
/// apart from the seed, so the two cannot drift apart.
#[test]
fn one_off_fit_params_match_the_pipeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(root.join(p)).expect("file is in the repo");
        serde_yaml_ng::from_str(&text).expect("valid YAML")
    };
    let config = read("configs/fit-eeg.yaml");
    let stages = read("stages/eeg.yaml");
    let fit = stages["stages"]
        .as_array()
        .expect("stages list")
        .iter()
        .find(|s| s["name"] == "eeg.fit")
        .expect("eeg.fit stage");
    let mut pipeline = fit["params"].clone();
    let mut one_off = config.clone();
    pipeline["train"]["seed"] = serde_json::Value::Null;
    one_off["train"]["seed"] = serde_json::Value::Null;
    assert_eq!(one_off, pipeline);
    let parsed: Result<lowrank_smc::stages::fit::FitParams, _> = serde_json::from_value(config);
    assert!(parsed.is_ok(), "{parsed:?}");
}

/// `lowrank-smc score`: a longer-trained model scores a lower loss than a barely trained one
/// on the same windows, the score is the same on a rerun, and data of the wrong width is an
/// error naming the file.
#[test]
fn score_ranks_models_by_their_training_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let eeg = eeg();
    let eeg = eeg.to_str().unwrap();
    prepare(d, &["channels=[0, 9, 32]", "max_time=2000"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("configs/fit-eeg.yaml");
    for (name, epochs) in [("short", "1"), ("long", "40")] {
        let (code, text) = exec(
            d,
            &[
                "fit",
                "--params",
                config.to_str().unwrap(),
                "--set",
                "model.dim_x=3",
                "--set",
                "model.n_units=16",
                "--set",
                "model.rank=2",
                "--set",
                &format!("train.n_epochs={epochs}"),
                "--set",
                "train.lr=0.01",
                "--set",
                "train.lr_end=0.001",
                "--set",
                "windows.per_epoch=40",
                "--input",
                "data=data/sequences.h5",
                "--out-dir",
                name,
            ],
        );
        assert_eq!(code, 0, "{text}");
    }
    let score = |model: &str, data: &str| -> (i32, String) {
        cli(
            d,
            &["score", model, data, "--window", "50", "--windows", "100"],
        )
    };
    let loss = |text: &str| -> f64 {
        text.split("loss ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no loss in {text}"))
    };
    let (code, short) = score("short/model.h5", "data/sequences.h5");
    assert_eq!(code, 0, "{short}");
    let (_, long) = score("long/model.h5", "data/sequences.h5");
    let (_, again) = score("long/model.h5", "data/sequences.h5");
    assert_eq!(loss(&long), loss(&again), "score is not deterministic");
    assert!(
        loss(&long) < loss(&short),
        "40 epochs {long} vs 1 epoch {short}"
    );
    let (code, text) = score("long/model.h5", eeg);
    assert_ne!(code, 0);
    assert!(text.contains("EEG_data_smoothed.npy"), "{text}");
}

/// A stage kind as its own subcommand (`lowrank-smc fit DATA …`, `generate MODEL DATA …`):
/// bare paths fill the kind's inputs in order, progress goes to stderr (lines when stderr is
/// not a terminal, nothing with `--no-progress`), the paths written to stdout; one file too
/// many or a missing input is an error that names the kind's inputs.
#[test]
fn stage_kinds_run_as_direct_subcommands_on_positional_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    prepare(d, &["channels=[0, 9, 32]", "max_time=1000"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("configs/fit-eeg.yaml");
    let config = config.to_str().unwrap();
    let small = [
        "--set",
        "model.dim_x=3",
        "--set",
        "model.n_units=16",
        "--set",
        "model.rank=2",
        "--set",
        "train.n_epochs=2",
        "--set",
        "windows.per_epoch=20",
    ];
    let run = |args: &[&str]| cli_streams(d, args);
    let mut fit = vec!["fit", "data/sequences.h5", "--params", config];
    fit.extend(small);
    fit.extend(["--out-dir", "fitted"]);
    let (code, stdout, stderr) = run(&fit);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("model: fitted/model.h5"), "{stdout}");
    assert!(d.join("fitted/model.h5").is_file());
    assert!(stderr.contains("[running]  fit"), "{stderr}");
    assert!(stderr.contains("[done]     fit in"), "{stderr}");

    // Params without the data's dimensions: a one-off fit takes them from the data and says
    // so; the model it writes has them.
    let mut open: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let model = open["model"].as_object_mut().unwrap();
    assert!(model.remove("dim_x").is_some());
    assert!(model.remove("dim_u").is_none());
    std::fs::write(d.join("open.json"), open.to_string()).unwrap();
    let mut fit = vec!["fit", "data/sequences.h5", "--params", "open.json"];
    fit.extend(
        small
            .chunks(2)
            .filter(|set| !set[1].starts_with("model.dim_x"))
            .flatten(),
    );
    fit.extend(["--out-dir", "from-data"]);
    let (code, stdout, stderr) = run(&fit);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("fit: model.dim_x = 3, from data/sequences.h5"),
        "{stderr}"
    );
    assert!(stderr.contains("fit: model.dim_u = 0"), "{stderr}");
    // `generate` checks the model's dimensions against the data's.
    let (code, stdout, stderr) = run(&[
        "generate",
        "from-data/model.h5",
        "data/sequences.h5",
        "--set",
        "seed=1",
        "--out-dir",
        "from-data-generated",
        "--no-progress",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Given and wrong, the dimension is an error that says what to set.
    let mut wrong = vec!["fit", "data/sequences.h5", "--params", "open.json"];
    wrong.extend(["--set", "model.dim_x=5", "--set", "model.rank=2"]);
    wrong.extend(["--set", "model.n_units=16", "--set", "train.n_epochs=1"]);
    let (code, _, stderr) = run(&wrong);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("dim_x = 3") && stderr.contains("hint: set model.dim_x: 3"),
        "{stderr}"
    );

    // Two inputs in the kind's order (model, then data), or one named and one bare.
    for files in [
        ["fitted/model.h5", "data/sequences.h5"],
        ["data=data/sequences.h5", "fitted/model.h5"],
    ] {
        let (code, stdout, stderr) = run(&[
            "generate",
            files[0],
            files[1],
            "--set",
            "seed=1",
            "--out-dir",
            "generated",
            "--no-progress",
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("generated/"), "{stdout}");
        assert!(!stderr.contains("[running]"), "{stderr}");
    }

    let mut twice = vec![
        "fit",
        "data/sequences.h5",
        "data/sequences.h5",
        "--params",
        config,
    ];
    twice.extend(small);
    let (code, _, stderr) = run(&twice);
    assert_ne!(code, 0);
    assert!(stderr.contains("one file too many"), "{stderr}");
    assert!(stderr.contains("`data`"), "{stderr}");
    // With open dimensions as well (which the misplaced files cannot fill), both are said.
    let mut twice_open = vec![
        "fit",
        "data/sequences.h5",
        "data/sequences.h5",
        "--params",
        "open.json",
    ];
    twice_open.extend(["--set", "model.rank=2", "--set", "model.n_units=16"]);
    let (code, _, stderr) = run(&twice_open);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("missing field `dim_x`")
            && stderr.contains("and the input files: `data/sequences.h5`: one file too many"),
        "{stderr}"
    );
    let mut none = vec!["fit", "--params", config];
    none.extend(small);
    let (code, _, stderr) = run(&none);
    assert_ne!(code, 0);
    assert!(stderr.contains("needs input `data`"), "{stderr}");
    // Without params: which field is missing, and where complete params come from.
    let (code, _, stderr) = run(&["fit", "data/sequences.h5"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("params of `fit`: missing field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--params FILE") && stderr.contains("show STAGE"),
        "{stderr}"
    );

    // The subcommand's help lists the inputs in order and the outputs.
    let (code, stdout, _) = run(&["generate", "--help"]);
    assert_eq!(code, 0);
    let model = stdout.find("  model").expect("model listed");
    let data = stdout.find("  data").expect("data listed");
    assert!(model < data, "{stdout}");
}
