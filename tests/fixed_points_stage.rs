//! The `fixed_points` stage kind through the real binary on the shipped reach teacher: the
//! table holds the 17 exact fixed points, SCYFI's curve equals the reference's runs
//! (tests/fixtures/fixed_points/reach_rnn.json), every baseline find is in the exact set, the
//! figures are written; a phase portrait asked of a rank-1 model is a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

use lowrank_smc::pipeline::table::{Column, Table};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exec(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(dir)
        .arg("exec")
        .arg("fixed_points")
        .args(args)
        .output()
        .expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn strings(t: &Table, name: &str) -> Vec<String> {
    match t.column(name) {
        Some(Column::Str(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn ints(t: &Table, name: &str) -> Vec<i64> {
    match t.column(name) {
        Some(Column::I64(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn reach_teacher_table_curve_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("datasets/teachers/reach_rnn.json");
    let (code, text) = exec(
        dir.path(),
        &[
            "--set",
            "methods=[exact, scyfi, constrained_scyfi, local]",
            "--set",
            "budgets=[50, 1000, 4000]",
            "--set",
            "seeds=[0, 2]",
            "--set",
            "phase_portrait=true",
            "--input",
            &format!("model={}", model.display()),
            "--out-dir",
            "out",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let out = dir.path().join("out");
    for f in [
        "fixed_points.md",
        "budget_curve.md",
        "found_vs_budget.png",
        "found_vs_budget.svg",
        "phase_portrait.png",
        "phase_portrait.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing: {text}");
    }
    let table = Table::read_parquet(&out.join("fixed_points.parquet")).expect("table");
    let methods = strings(&table, "method");
    assert_eq!(methods.iter().filter(|m| *m == "exact").count(), 17);
    let stability = strings(&table, "stability");
    let stable = methods
        .iter()
        .zip(&stability)
        .filter(|(m, s)| *m == "exact" && *s == "stable")
        .count();
    assert_eq!(stable, 8);
    match table.column("in_exact_set") {
        Some(Column::Bool(v)) => assert!(v.iter().all(|x| *x)),
        other => panic!("in_exact_set: {other:?}"),
    }
    // SCYFI's curve equals the reference's runs for the same seeds and budgets.
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/fixed_points/reach_rnn.json"))
            .expect("fixture"),
    )
    .expect("json");
    let curve = Table::read_parquet(&out.join("budget_curve.parquet")).expect("curve");
    let (cm, cs, cb, cf) = (
        strings(&curve, "method"),
        ints(&curve, "seed"),
        ints(&curve, "budget"),
        ints(&curve, "found"),
    );
    let mut checked = 0;
    for run in golden["scyfi"]["runs"].as_array().expect("runs") {
        let method = match run["variant"].as_str() {
            Some("constrained") => "constrained_scyfi",
            _ => "scyfi",
        };
        let (seed, budget) = (
            run["seed"].as_i64().unwrap(),
            run["budget"].as_i64().unwrap(),
        );
        if let Some(row) =
            (0..cm.len()).find(|&i| cm[i] == method && cs[i] == seed && cb[i] == budget)
        {
            assert_eq!(
                cf[row],
                run["n_found"].as_i64().unwrap(),
                "{method} seed {seed} budget {budget}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 12,
        "2 variants × seeds 0, 2 × budgets 50, 1000, 4000"
    );
}

#[test]
fn phase_portrait_of_a_rank_1_model_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("datasets/teachers/rdm_rnn.json");
    let (code, text) = exec(
        dir.path(),
        &[
            "--set",
            "phase_portrait=true",
            "--input",
            &format!("model={}", model.display()),
            "--out-dir",
            "out",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        text.contains("phase_portrait") && text.contains("rank 1"),
        "{text}"
    );
    assert!(!dir.path().join("out/fixed_points.parquet").exists());
    // The output directory this call created is gone again: nothing half-written stays.
    assert!(!dir.path().join("out").exists());
}
