//! The shipped pipeline (`pipeline.yaml` + `stages/`) on the shipped EEG array and teachers,
//! `--profile quick`, end to end through the real binary: every EEG, fixed-point and
//! teacher–student stage runs, Table 1, the teacher–student summaries and the figures are
//! written (the quick noise sweep already recovers the order of the true noise levels), a second
//! run does nothing, and `compare … paper` reads the result.

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn quick_profile_runs_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::copy(root.join("pipeline.yaml"), d.join("pipeline.yaml")).unwrap();
    copy_dir(&root.join("stages"), &d.join("stages"));
    copy_dir(&root.join("datasets"), &d.join("datasets"));

    let (code, text) = run(d, &["run", "--profile", "quick", "--no-progress"]);
    assert_eq!(code, 0, "{text}");
    for f in [
        "results/eeg/table1/table.parquet",
        "results/eeg/table1/table.md",
        "results/eeg/table1/long.md",
        "results/eeg/table1/box_d_stsp.png",
        "results/eeg/fig4/traces.png",
        "results/eeg/fixed_points/seed=1/summary.md",
        "results/eeg/fixed_points_table/table.md",
        "results/eeg/loss_curves/curves.png",
        "results/eeg/fit/seed=1/model.h5",
        "results/eeg/fit/seed=2/loss_curve.md",
        "results/fixed_points/reach/found_vs_budget.png",
        "results/fixed_points/reach/phase_portrait.png",
        "results/fixed_points/rdm/fixed_points.md",
        "results/teacher_student/summary/table.md",
        "results/teacher_student/noise_summary/table.parquet",
        "results/teacher_student/fig_s5/curves.png",
        "results/teacher_student/osc/eval/proposal=optimal,seed=1/autocorrelation.png",
        "results/teacher_student/osc/eval/proposal=optimal,seed=1/power_spectrum.png",
        "results/teacher_student/poisson/eval/seed=1/power_spectrum.png",
        "results/teacher_student/osc/eval/proposal=bootstrap,seed=1/traces.png",
        "results/teacher_student/poisson/fit/seed=1/model.h5",
        "results/teacher_student/poisson/eval/seed=1/rates.png",
        "results/teacher_student/summary/box_student.png",
        "results/teacher_student/reach/eval/seed=1/summary.md",
        "results/teacher_student/reach/eval/seed=1/phase_teacher.png",
        "results/teacher_student/osc/eval/proposal=optimal,seed=1/phase_student.png",
        "results/teacher_student/rdm/simulate/latents.png",
        "results/teacher_student/rdm/eval/seed=1/input_response.png",
        "results/teachers/reach/teacher.json",
        "results/teachers/osc/outputs.png",
        "results/teachers/reach_fixed_points/phase_portrait.png",
        "results/maze/surrogate/recording.nwb",
        "results/maze/bin/psth.png",
        "results/hc/bin/sequences.h5",
    ] {
        assert!(d.join(f).is_file(), "missing {f}\n{text}");
    }
    // The recordings stages: binned surrogates, labelled as such, in the NLB shapes.
    {
        use lowrank_smc::data::sequences_io::{read_attr, read_sequences};
        let maze = d.join("results/maze/bin/sequences.h5");
        assert_eq!(
            read_attr(&maze, "data_source").unwrap().as_deref(),
            Some("surrogate")
        );
        let s = read_sequences(&maze).unwrap();
        assert_eq!((s.dim_x, s.n_time), (137, 35));
        assert!(s.n_sequences > 0 && s.x.iter().sum::<f64>() > 0.0);
        let hc = d.join("results/hc/bin/sequences.h5");
        assert_eq!(
            read_attr(&hc, "data_source").unwrap().as_deref(),
            Some("surrogate")
        );
        assert_eq!(read_sequences(&hc).unwrap().n_time, 500);
    }
    let table = std::fs::read_to_string(d.join("results/eeg/table1/table.md")).unwrap();
    assert!(
        table.contains("rank3_smc") && table.contains("quick") && table.contains("3920"),
        "{table}"
    );
    // The full-rank baselines with the paper's parameter counts.
    for needle in ["full_rank_30", "3939", "full_rank_128", "41473"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }

    // The fixed points of the fitted models: each row knows its seed (a text label) and says
    // what the model was fitted to; the table scored no data and says so.
    let fp = std::fs::read_to_string(d.join("results/eeg/fixed_points_table/long.md")).unwrap();
    assert!(
        fp.contains("| 1 | n_stable |") && !fp.contains("| -1 |"),
        "seeds missing:\n{fp}"
    );
    assert!(fp.contains("none (computed from the model)"), "{fp}");
    let fp = std::fs::read_to_string(d.join("results/eeg/fixed_points_table/table.md")).unwrap();
    assert!(
        fp.contains("unsmoothed copy rebuilt"),
        "trained_on missing:\n{fp}"
    );

    let ts = std::fs::read_to_string(d.join("results/teacher_student/summary/table.md")).unwrap();
    for needle in [
        "osc_continuous_optimal",
        "osc_continuous_bootstrap",
        "poisson_encoder",
        "reach_ring",
        "rdm",
        "simulated",
        "stable_fixed_points",
        "pairwise_correlation_correlation",
        "power_spectrum_hellinger",
    ] {
        assert!(ts.contains(needle), "{needle} missing:\n{ts}");
    }
    // The reach teacher's ring: 8 stable fixed points.
    let reach =
        std::fs::read_to_string(d.join("results/teacher_student/reach/eval/seed=1/summary.md"))
            .unwrap();
    let row = reach
        .lines()
        .find(|l| l.contains("| stable_fixed_points |"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[5], "8", "teacher's stable points: {row}");
    // Located in the data space: how many of the teacher's 8 a stable student point sits at,
    // and the median distance (the teacher column holds the radius of its stable points, > 0).
    let row = reach
        .lines()
        .find(|l| l.contains("| stable_points_located |"))
        .unwrap_or_else(|| panic!("no stable_points_located row:\n{reach}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[5], "8", "teacher's stable points: {row}");
    let located: f64 = cells[6].parse().unwrap();
    assert!((0.0..=8.0).contains(&located), "{row}");
    let row = reach
        .lines()
        .find(|l| l.contains("| stable_point_distance |"))
        .unwrap_or_else(|| panic!("no stable_point_distance row:\n{reach}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let radius: f64 = cells[5].parse().unwrap();
    assert!(radius > 0.0 && radius.is_finite(), "{row}");
    // The student's stable points no teacher point claims: at most all of them.
    let row = reach
        .lines()
        .find(|l| l.contains("| unpaired_stable_points |"))
        .unwrap_or_else(|| panic!("no unpaired_stable_points row:\n{reach}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let unpaired: f64 = cells[6].parse().unwrap();
    let student_stable: f64 = reach
        .lines()
        .find(|l| l.contains("| stable_fixed_points |"))
        .map(|l| l.split('|').map(str::trim).nth(6).unwrap().parse().unwrap())
        .unwrap();
    assert!((0.0..=student_stable).contains(&unpaired), "{row}");
    // Noise sweep: larger true noise → larger inferred noise.
    let t = lowrank_smc::pipeline::table::Table::read_parquet(
        &d.join("results/teacher_student/noise_summary/table.parquet"),
    )
    .unwrap();
    use lowrank_smc::pipeline::table::Column;
    let (Some(Column::Str(metric)), Some(Column::F64(truth)), Some(Column::F64(inferred))) =
        (t.column("metric"), t.column("teacher"), t.column("student"))
    else {
        panic!("noise summary columns");
    };
    let mut pairs: Vec<(f64, f64)> = (0..metric.len())
        .filter(|&i| metric[i] == "latent_noise_std")
        .map(|i| (truth[i], inferred[i]))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert!(
        pairs.windows(2).all(|w| w[1].1 > w[0].1),
        "inferred noise should grow with the true noise: {pairs:?}"
    );

    let (code, text) = run(d, &["run", "--profile", "quick", "--no-progress"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("up to date"),
        "second run should do nothing:\n{text}"
    );

    let (code, text) = run(d, &["compare", "results/eeg/table1/table.parquet", "paper"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("n_params") && text.contains("d_stsp"),
        "{text}"
    );

    // The teacher–student summary against its targets: every target row of the five setups
    // gets a pass/FAIL verdict (the quick profile is far too short to pass them).
    let (code, text) = run(
        d,
        &[
            "compare",
            "results/teacher_student/summary/table.parquet",
            "teacher_student_targets",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("10 values checked against targets:") && text.contains("≤ 0.1"),
        "{text}"
    );
    let verdicts = text
        .lines()
        .filter(|l| l.ends_with("| pass |") || l.ends_with("| FAIL |"))
        .count();
    assert_eq!(verdicts, 10, "{text}");
}

/// `--profile paper-no128` is the paper DAG without the dz = 128 baseline: the dz = 30 and
/// rank-3 stages keep their paper params and inputs (so a paper run's fits are reused), and no
/// dz = 128 stage exists.
#[test]
fn paper_no128_profile_is_the_paper_run_without_dz_128() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::copy(root.join("pipeline.yaml"), d.join("pipeline.yaml")).unwrap();
    copy_dir(&root.join("stages"), &d.join("stages"));
    copy_dir(&root.join("datasets"), &d.join("datasets"));
    // `show` without the profile line: params, inputs and outputs, from which the cache key
    // is made (the key itself is only shown once the upstream stages have run).
    let shown = |profile: &str, stage: &str| {
        let (code, text) = run(d, &["show", "--profile", profile, stage]);
        assert_eq!(code, 0, "{profile} {stage}: {text}");
        assert!(text.contains("\"seed\""), "{text}");
        text.lines()
            .filter(|l| !l.starts_with("profile:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for stage in [
        "eeg.fit_full_rank[dz=30,seed=20]",
        "eeg.evaluate_full_rank[dz=30,seed=1]",
        "eeg.fit[seed=7]",
    ] {
        assert_eq!(
            shown("paper", stage),
            shown("paper-no128", stage),
            "{stage}"
        );
    }
    let (code, text) = run(
        d,
        &[
            "show",
            "--profile",
            "paper-no128",
            "eeg.fit_full_rank[dz=128,seed=1]",
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("no stage"), "{text}");
    let (code, plan) = run(
        d,
        &[
            "run",
            "--profile",
            "paper-no128",
            "--dry-run",
            "--stage",
            "eeg.table1",
        ],
    );
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("eeg.evaluate_full_rank[dz=30,seed=20]"),
        "{plan}"
    );
    assert!(plan.contains("eeg.evaluate[seed=20]"), "{plan}");
    assert!(!plan.contains("dz=128"), "{plan}");
}
