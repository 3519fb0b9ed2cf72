//! Every bad configuration exits with code 2 and a message naming the file, the field and the
//! fix — never a panic. Also the other commands' usage errors, `compare`, `gc` and `kinds`.

mod engine_common;

use engine_common::{Project, CHAIN};
use lowrank_smc::pipeline::table::Table;

/// Run `run` on a pipeline and check it is rejected with every `expected` fragment in stderr.
fn rejected(pipeline: &str, args: &[&str], expected: &[&str]) {
    let project = Project::new(pipeline);
    project.write("datasets/nopath.yaml", "licence: CC0\n");
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let ran = project.run(&full);
    assert_eq!(ran.code, 2, "exit code for:\n{pipeline}\n{}", ran.text());
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    for fragment in expected {
        assert!(
            ran.stderr.contains(fragment),
            "expected `{fragment}` in:\n{}",
            ran.stderr
        );
    }
    assert_eq!(project.counts(&["a", "b", "c", "d"]), [0, 0, 0, 0]);
}

#[test]
fn unknown_key() {
    rejected(
        "stages:\n  - name: a\n    kind: command\n    parms: {cmd: 'true'}\n",
        &[],
        &[
            "pipeline.yaml:4: stages[0].parms: unknown field `parms`",
            "(hint: remove it or fix its spelling)",
        ],
    );
}

#[test]
fn unknown_top_level_key() {
    rejected(
        "stage: []\n",
        &[],
        &["pipeline.yaml:1: stage: unknown field `stage`, expected one of `include`, `profiles`, `stages`"],
    );
}

#[test]
fn wrong_type() {
    rejected(
        "stages:\n  - name: a\n    kind: command\n    params: {cmd: 'true'}\n    outputs: [a.txt]\n",
        &[],
        &["pipeline.yaml:5: stages[0].outputs: invalid type: sequence, expected a map"],
    );
}

#[test]
fn bad_param_of_a_kind() {
    rejected(
        "stages:\n  - name: a\n    kind: command\n    params: {cmd: 'true', env: {X: [1]}}\n",
        &[],
        &["pipeline.yaml:2: stages[0].params.env.X: environment values must be strings, numbers or booleans (stage `a`, kind `command`)"],
    );
    rejected(
        "stages:\n  - name: a\n    kind: command\n    params: {cmnd: 'true'}\n",
        &[],
        &["pipeline.yaml:2: stages[0].params.cmnd: unknown field `cmnd`, expected one of `cmd`, `env`, `workdir`"],
    );
}

#[test]
fn cycle_is_printed() {
    rejected(
        r#"
stages:
  - {name: a, kind: command, params: {cmd: 'true'}, inputs: {x: "c:out"}, outputs: {out: o}}
  - {name: b, kind: command, params: {cmd: 'true'}, inputs: {x: "a:out"}, outputs: {out: o}}
  - {name: c, kind: command, params: {cmd: 'true'}, inputs: {x: "b:out"}, outputs: {out: o}}
"#,
        &[],
        &["pipeline.yaml:3: stages[0].inputs: dependency cycle: a → b → c → a"],
    );
}

#[test]
fn missing_inputs() {
    rejected(
        r#"
stages:
  - {name: eeg.fit, kind: command, params: {cmd: 'true'}, outputs: {model: m}}
  - {name: eval, kind: command, params: {cmd: 'true'}, inputs: {m: "eeg.fti:model"}, outputs: {out: o}}
  - {name: eval2, kind: command, params: {cmd: 'true'}, inputs: {m: "eeg.fit:modle"}, outputs: {out: o}}
  - {name: eval3, kind: command, params: {cmd: 'true'}, inputs: {d: "dataset:nothere", e: "dataset:nopath"}, outputs: {out: o}}
"#,
        &[],
        &[
            "pipeline.yaml:4: stages[1].inputs.m: missing input: no stage `eeg.fti` (hint: did you mean `eeg.fit`?)",
            "stages[2].inputs.m: stage `eeg.fit` has no output `modle` (hint: its outputs are model)",
            "stages[3].inputs.d: missing input: dataset `nothere`: cannot read `datasets/nothere.yaml`",
            "stages[3].inputs.e: dataset manifest `datasets/nopath.yaml` has no `path:` field",
            "4 configuration problems",
        ],
    );
}

#[test]
fn duplicate_names() {
    rejected(
        r#"
stages:
  - {name: a, kind: command, params: {cmd: 'true'}}
  - {name: a, kind: command, params: {cmd: 'true'}}
"#,
        &[],
        &["stages[1].name: duplicate stage name `a` (also defined in pipeline.yaml:3)"],
    );
}

#[test]
fn unknown_kind() {
    rejected(
        "stages:\n  - {name: a, kind: comand, params: {cmd: 'true'}}\n",
        &[],
        &["pipeline.yaml:2: stages[0].kind: unknown stage kind `comand` (hint: known kinds are bin, command"],
    );
}

#[test]
fn unknown_profile() {
    rejected(
        "profiles: {quick: {}}\nstages: []\n",
        &["--profile", "fast"],
        &["unknown profile `fast` (hint: known profiles are paper, quick)"],
    );
}

#[test]
fn profile_pattern_matching_nothing() {
    rejected(
        "profiles: {quick: {\"eeg.fti\": {x: 1}}}\nstages: []\n",
        &["--profile", "quick"],
        &["profiles.quick.eeg.fti: `eeg.fti` matches no stage"],
    );
}

#[test]
fn bad_matrix_and_includes() {
    rejected(
        "include: [stages/missing.yaml]\nstages:\n  - {name: a, kind: command, params: {cmd: 'true'}, matrix: {seed: 3..1}}\n",
        &[],
        &[
            "include[0]: included file `stages/missing.yaml` does not exist",
        ],
    );
    rejected(
        "stages:\n  - {name: a, kind: command, params: {cmd: 'true'}, matrix: {seed: 3..1}}\n",
        &[],
        &["stages[0].matrix.seed: empty range `3..1`"],
    );
}

#[test]
fn errors_in_included_files_name_that_file() {
    let project = Project::new("include: [stages/*.yaml]\n");
    project.write(
        "stages/exp.yaml",
        "stages:\n  - name: x\n    kind: command\n    params: {cmd: 'true'}\n    inputs: {a: 'nope:out'}\n",
    );
    let ran = project.run(&["status"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr
            .contains("stages/exp.yaml:2: stages[0].inputs.a: missing input: no stage `nope`"),
        "{}",
        ran.stderr
    );
}

#[test]
fn missing_pipeline_file_and_bad_flags() {
    let project = Project::new(CHAIN);
    let ran = project.run(&["run", "nothere.yaml"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr
            .contains("nothere.yaml: cannot read the pipeline file"),
        "{}",
        ran.stderr
    );
    assert_eq!(project.run(&["run", "--jobs", "0"]).code, 2);
    assert_eq!(project.run(&["frobnicate"]).code, 2);
    assert_eq!(project.run(&["show", "zz"]).code, 2);
    let bench = project.run(&["bench", "nothing"]);
    assert_eq!(bench.code, 2);
    assert!(
        bench.stderr.contains("unknown benchmark area `nothing`"),
        "{}",
        bench.stderr
    );
    // `--reference` is checked before anything is measured.
    for (args, says) in [
        (
            &["bench", "train", "--reference", "eeg"][..],
            "expected CASE=SECONDS",
        ),
        (
            &["bench", "train", "--reference", "gpu=1"],
            "no `bench train` case starts with `gpu`",
        ),
        (
            &["bench", "train", "--reference", "eeg=-1"],
            "SECONDS must be a positive number",
        ),
        (
            &["bench", "train", "--reference", "poisson=NaN"],
            "SECONDS must be a positive number",
        ),
        (
            &["bench", "engine", "--reference", "eeg=1"],
            "applies to `bench train` only",
        ),
        // So is `--case`: it must select something, in an area that has cases to select.
        (
            &["bench", "train", "--case", "poisson", "--case", "gpu"],
            "--case `gpu`: no `bench train` case contains it",
        ),
        (
            &["bench", "metrics", "--case", "dstsp"],
            "`bench metrics` always runs all of its cases",
        ),
        (
            &["bench", "fixed-points", "--case", "N=4096"],
            "no `bench fixed-points` case contains it",
        ),
    ] {
        let ran = project.run(args);
        assert_ne!(ran.code, 0, "{args:?}");
        assert!(ran.stderr.contains(says), "{args:?}: {}", ran.stderr);
    }
    // Repeated, `--case` runs the cases of each.
    let two = project.run(&[
        "bench",
        "fixed-points",
        "--case",
        "reach teacher",
        "--case",
        "N=128 R=2",
    ]);
    assert_eq!(two.code, 0, "{}", two.text());
    let lines: Vec<&str> = two.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", two.stdout);
    assert!(
        lines[0].starts_with("fixed-points reach teacher"),
        "{}",
        two.stdout
    );
    assert!(
        lines[1].starts_with("fixed-points random clipped relu N=128 R=2:"),
        "{}",
        two.stdout
    );
    // A `bench train` line names its case so that the same text selects it again.
    let one = project.run(&["bench", "train", "--case", "Continuous F64"]);
    assert_eq!(one.code, 0, "{}", one.text());
    let lines: Vec<&str> = one.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", one.stdout);
    assert!(
        lines[0].starts_with("train continuous f64 (teacher–student, R=2, N=20, K=64"),
        "{}",
        one.stdout
    );
}

#[test]
fn compare_a_table_with_a_reference() {
    let project = Project::new(CHAIN);
    let table = Table::new()
        .with("dataset", vec!["eeg", "hpc"])
        .and_then(|t| t.with("d_stsp", vec![0.1, 0.5]))
        .and_then(|t| t.with("d_h", vec![0.2, 0.3]))
        .unwrap_or_else(|e| panic!("{e}"));
    table
        .write(&project.path("results/t.parquet"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(project.path("results/t.md").is_file());
    project.write(
        "datasets/paper.yaml",
        "description: test\nrows:\n  - {dataset: eeg, d_stsp: 0.1, d_h: {value: 0.25, err: 0.06}}\n  - {dataset: hpc, d_stsp: 0.4, d_h: 0.3}\n",
    );
    let ran = project.run(&["compare", "results/t.parquet", "paper"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert!(
        ran.stdout.starts_with(
            "| dataset | column | results/t.parquet | paper | difference | tolerance | verdict |\n"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("| eeg | d_stsp | 0.1 | 0.1 | 0 | 0.005 | match |"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("| eeg | d_h | 0.2 | 0.25 | -0.05 | 0.06 | within tolerance |"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("| hpc | d_stsp | 0.5 | 0.4 | 0.1 | 0.02 | differs |"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("4 values compared: 2 match, 1 within tolerance, 1 differ"),
        "{}",
        ran.stdout
    );
    let csv = project.run(&["compare", "results/t.parquet", "paper", "--format", "csv"]);
    assert!(
        csv.stdout
            .starts_with("dataset,column,results/t.parquet,paper,"),
        "{}",
        csv.stdout
    );
    let json = project.run(&[
        "compare",
        "results/t.parquet",
        "results/t.parquet",
        "--format",
        "json",
    ]);
    let parsed: serde_json::Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    assert_eq!(parsed["values"][0]["verdict"], "match");
    let missing = project.run(&["compare", "results/t.parquet", "nothing"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("cannot find table `nothing`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn gc_drops_unreferenced_entries() {
    let project = Project::new(CHAIN);
    assert_eq!(project.run(&["run"]).code, 0);
    project.edit("LR: 0.001", "LR: 0.002");
    assert_eq!(project.run(&["run"]).code, 0);
    let dry = project.run(&["gc", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(
        dry.stdout
            .starts_with("would remove 2 run-cache entries and 1 object"),
        "{}",
        dry.stdout
    );
    let gc = project.run(&["gc"]);
    assert!(
        gc.stdout
            .starts_with("removed 2 run-cache entries and 1 object"),
        "{}",
        gc.stdout
    );
    // Still up to date; reverting now recomputes because gc dropped the old entries.
    assert_eq!(project.run(&["status", "--check"]).code, 0);
    project.edit("LR: 0.002", "LR: 0.001");
    assert_eq!(project.run(&["run"]).code, 0);
    assert_eq!(project.counts(&["a", "b", "c", "d"]), [1, 3, 3, 1]);
}

#[test]
fn kinds_lists_the_registry() {
    let project = Project::new(CHAIN);
    let ran = project.run(&["kinds"]);
    assert_eq!(ran.code, 0);
    // Sorted by kind name, one line each.
    assert!(ran.stdout.starts_with("bin "), "{}", ran.stdout);
    assert!(ran.stdout.contains("\ncommand "), "{}", ran.stdout);
    // A kind whose version depends on its params says which settings have which.
    let fit = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("fit "))
        .expect("fit listed");
    assert!(fit.starts_with("fit              v1 "), "{fit}");
    assert!(
        fit.ends_with(
            " (v3 with vsmc.proposal: optimal, rank < min(dim_x, 16) and n_particles ≥ 2·rank; else v2 with vsmc.precision: f32)"
        ),
        "{fit}"
    );
}

#[test]
fn bench_engine_prints_one_line_per_case() {
    let project = Project::new(CHAIN);
    let ran = project.run(&["bench", "engine"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", ran.stdout);
    assert!(
        lines[1].starts_with("engine: cached no-op run, 200 stages: "),
        "{}",
        ran.stdout
    );
    assert!(
        lines.iter().all(|l| l.ends_with("× goal)")),
        "{}",
        ran.stdout
    );
    let other = project.run(&["bench", "no-such-area"]);
    assert_eq!(other.code, 2);
    assert!(other.stderr.contains("no-such-area"), "{}", other.stderr);
}
