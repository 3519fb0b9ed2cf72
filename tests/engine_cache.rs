//! Freshness and caching, driven through the real binary: fresh run, no-op rerun, a param
//! change reruns exactly the stage and its downstream, reverting it hits the run cache,
//! `--stage`, `status` wording, `dry-run`, output tampering, dataset inputs.

mod engine_common;

use engine_common::{Project, CHAIN};

const ALL: [&str; 4] = ["a", "b", "c", "d"];

#[test]
fn fresh_run_then_nothing_to_do() {
    let project = Project::new(CHAIN);
    let first = project.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.text());
    assert!(first.stdout.contains("4 ran"), "{}", first.stdout);
    assert_eq!(project.counts(&ALL), [1, 1, 1, 1]);
    assert_eq!(project.read("results/b/b.txt"), "a 1\nb 0.001\n");
    assert!(project.path("results/a/a.txt").is_file());
    assert!(project.path("pipeline.lock").is_file());

    let second = project.run(&["run"]);
    assert_eq!(second.code, 0, "{}", second.text());
    assert_eq!(
        second.stdout.trim(),
        "Data and pipelines are up to date (4 stages)."
    );
    assert_eq!(project.counts(&ALL), [1, 1, 1, 1]);

    let status = project.run(&["status", "--check"]);
    assert_eq!(status.code, 0, "{}", status.text());
    assert!(status.stdout.contains("up to date"));
}

#[test]
fn param_change_reruns_stage_and_downstream_and_revert_hits_run_cache() {
    let project = Project::new(CHAIN);
    assert_eq!(project.run(&["run"]).code, 0);

    project.edit("LR: 0.001", "LR: 0.002");
    let status = project.run(&["status"]);
    assert_eq!(status.code, 0);
    assert!(
        status
            .stdout
            .contains("b: stale (will run)\n    param `env.LR` changed 0.001 → 0.002"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("c: stale (will run)\n    upstream stage `b` is stale"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains("\na: "), "{}", status.stdout);
    assert_eq!(project.run(&["status", "--check"]).code, 1);

    let json = project.run(&["status", "--json"]);
    let parsed: serde_json::Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    assert_eq!(parsed[1]["stage"], "b");
    assert_eq!(parsed[1]["reasons"][0]["reason"], "param_changed");
    assert_eq!(parsed[1]["reasons"][0]["key"], "env.LR");

    let rerun = project.run(&["run"]);
    assert_eq!(rerun.code, 0, "{}", rerun.text());
    assert_eq!(project.counts(&ALL), [1, 2, 2, 1]);
    assert_eq!(project.read("results/b/b.txt"), "a 1\nb 0.002\n");

    // Revert: the old outputs come back from the run cache, nothing recomputes.
    project.edit("LR: 0.002", "LR: 0.001");
    let status = project.run(&["status"]);
    assert!(
        status
            .stdout
            .contains("b: stale (outputs in the run cache: will be restored, not recomputed)"),
        "{}",
        status.stdout
    );
    let revert = project.run(&["run"]);
    assert_eq!(revert.code, 0, "{}", revert.text());
    assert!(revert.stdout.contains("[restored] b"), "{}", revert.stdout);
    assert!(revert.stdout.contains("[restored] c"), "{}", revert.stdout);
    assert_eq!(project.counts(&ALL), [1, 2, 2, 1]);
    assert_eq!(project.read("results/b/b.txt"), "a 1\nb 0.001\n");
    assert_eq!(project.run(&["status", "--check"]).code, 0);
}

#[test]
fn identical_upstream_output_stops_the_cascade() {
    let project = Project::new(CHAIN);
    assert_eq!(project.run(&["run"]).code, 0);
    // A new command for `a` that writes the same bytes: `a` reruns, `b` does not.
    project.edit(
        "echo \"a $X\" > \"$OUT_out\"",
        "printf \"a %s\\n\" \"$X\" > \"$OUT_out\"",
    );
    let run = project.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(project.counts(&ALL), [2, 1, 1, 1]);
}

#[test]
fn selected_stage_runs_alone() {
    let project = Project::new(CHAIN);
    assert_eq!(project.run(&["run"]).code, 0);
    let forced = project.run(&["run", "--stage", "b", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.text());
    assert_eq!(project.counts(&ALL), [1, 2, 1, 1]);

    let glob = project.run(&["run", "--stage", "[bc]", "--force"]);
    assert_eq!(glob.code, 0, "{}", glob.text());
    assert_eq!(project.counts(&ALL), [1, 3, 2, 1]);

    let downstream = project.run(&["run", "--stage", "b", "--force", "--downstream"]);
    assert_eq!(downstream.code, 0, "{}", downstream.text());
    assert_eq!(project.counts(&ALL), [1, 4, 3, 1]);

    // A stale upstream stage that the selection needs runs too; unrelated stale stages do not.
    project.edit("X: 1", "X: 2");
    project.edit("echo d >", "echo dd >");
    let needed = project.run(&["run", "--stage", "b"]);
    assert_eq!(needed.code, 0, "{}", needed.text());
    assert_eq!(project.counts(&ALL), [2, 5, 3, 1]);

    let unknown = project.run(&["run", "--stage", "bb"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no stage matches `bb`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn dry_run_changes_nothing() {
    let project = Project::new(CHAIN);
    let dry = project.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(
        dry.stdout.contains("[stale]    a: never run; would run"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.ends_with(
            "dry run: 4 would run, 0 would be restored from the run cache, 0 up to date\n"
        ),
        "{}",
        dry.stdout
    );
    assert_eq!(project.counts(&ALL), [0, 0, 0, 0]);
    assert!(!project.path("pipeline.lock").exists());
}

#[test]
fn tampered_or_deleted_results_are_restored_without_rerunning() {
    let project = Project::new(CHAIN);
    assert_eq!(project.run(&["run"]).code, 0);
    std::fs::remove_file(project.path("results/a/a.txt")).unwrap_or_else(|e| panic!("{e}"));
    project.write("results/d/d.txt", "edited by hand\n");
    let status = project.run(&["status"]);
    assert!(
        status.stdout.contains("output `results/a/a.txt` deleted"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("output `results/d/d.txt` modified"),
        "{}",
        status.stdout
    );
    let run = project.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(project.counts(&ALL), [1, 1, 1, 1]);
    assert_eq!(project.read("results/a/a.txt"), "a 1\n");
    assert_eq!(project.read("results/d/d.txt"), "d\n");
}

#[test]
fn matrix_aggregate_profile_and_dataset_inputs() {
    let project = Project::new(
        r#"
include: [stages/*.yaml]
profiles:
  quick: {"fit": {env: {EPOCHS: 1}}}
"#,
    );
    project.write(
        "datasets/eeg.yaml",
        "path: data/eeg.txt\nlicence: CC-BY\nformat: text\n",
    );
    project.write("data/eeg.txt", "1 2 3\n");
    project.write(
        "stages/exp.yaml",
        r#"
stages:
  - name: fit
    kind: command
    matrix: {seed: 1..3, variant: [a, b]}
    params:
      cmd: 'echo run >> counts/fit; echo "${variant}${seed} $EPOCHS $(cat "$IN_data")" > "$OUT_model"'
      env: {EPOCHS: 100}
    inputs: {data: "dataset:eeg"}
    outputs: {model: model.txt}
  - name: summary
    kind: command
    params:
      cmd: 'echo "$IN_models" | while read -r f; do cat "$f"; done > "$OUT_table"'
    inputs: {models: "fit[*]:model"}
    outputs: {table: table.txt}
"#,
    );
    let run = project.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(project.count("fit"), 6);
    assert_eq!(
        project.read("results/fit/seed=2,variant=b/model.txt"),
        "b2 100 1 2 3\n"
    );
    assert_eq!(project.read("results/summary/table.txt").lines().count(), 6);

    // The profile changes params, not the shape.
    let quick = project.run(&["run", "--profile", "quick"]);
    assert_eq!(quick.code, 0, "{}", quick.text());
    assert_eq!(project.count("fit"), 12);
    assert_eq!(
        project.read("results/fit/seed=2,variant=b/model.txt"),
        "b2 1 1 2 3\n"
    );

    // A changed dataset file makes every reader stale, and says so.
    project.write("data/eeg.txt", "4 5 6\n");
    let status = project.run(&["status", "--profile", "quick"]);
    assert!(
        status.stdout.contains(
            "fit[seed=1,variant=a]: stale (will run)\n    input `data` modified (dataset:eeg@"
        ),
        "{}",
        status.stdout
    );
    let dag = project.run(&["dag"]);
    assert!(
        dag.stdout
            .contains("fit[seed=1,variant=a] (command)\n└── summary (command)"),
        "{}",
        dag.stdout
    );
    let show = project.run(&["show", "fit[seed=3,variant=a]"]);
    assert!(
        show.stdout.contains("data: dataset:eeg → data/eeg.txt"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("model: results/fit/seed=3,variant=a/model.txt"),
        "{}",
        show.stdout
    );
}

/// With one job, each fit's downstream stage runs before the next fit starts (deepest ready
/// stage first), so a sweep reports each seed as it finishes.
#[test]
fn downstream_of_a_finished_stage_runs_before_the_next_sibling() {
    let project = Project::new(
        r#"
stages:
  - name: fit
    kind: command
    matrix: {seed: 1..3}
    params:
      cmd: 'echo "fit ${seed}" >> counts/order; echo m > "$OUT_model"'
    outputs: {model: model.txt}
  - name: evaluate
    kind: command
    matrix: {seed: 1..3}
    params:
      cmd: 'echo "evaluate ${seed}" >> counts/order; cat "$IN_model" > "$OUT_metrics"'
    inputs: {model: "fit[seed=${seed}]:model"}
    outputs: {metrics: metrics.txt}
"#,
    );
    let run = project.run(&["run", "-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        project.read("counts/order"),
        "fit 1\nevaluate 1\nfit 2\nevaluate 2\nfit 3\nevaluate 3\n"
    );
}

/// A stage that stops declaring an output (a figure per metric, after a metric was dropped)
/// leaves no file of it behind when it reruns or is restored, and no other file is touched.
#[test]
fn outputs_no_longer_declared_are_removed() {
    let two = r#"
stages:
  - name: a
    kind: command
    params:
      cmd: 'echo run >> counts/a; echo one > "$OUT_one"; echo two > "$OUT_two"'
    outputs: {one: one.txt, two: two.txt}
"#;
    let one = r#"
stages:
  - name: a
    kind: command
    params:
      cmd: 'echo run >> counts/a; echo one > "$OUT_one"'
    outputs: {one: one.txt}
"#;
    let project = Project::new(two);
    assert_eq!(project.run(&["run"]).code, 0);
    assert!(project.path("results/a/two.txt").is_file());
    project.write("results/a/notes.txt", "mine");

    project.write("pipeline.yaml", one);
    let ran = project.run(&["run"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(project.counts(&["a"]), [2]);
    assert!(project.path("results/a/one.txt").is_file());
    assert!(!project.path("results/a/two.txt").exists());
    assert_eq!(project.read("results/a/notes.txt"), "mine");

    // Back to two outputs: restored from the run cache, both present ...
    project.write("pipeline.yaml", two);
    let restored = project.run(&["run"]);
    assert_eq!(restored.code, 0, "{}", restored.text());
    assert_eq!(project.counts(&["a"]), [2]);
    assert_eq!(project.read("results/a/two.txt"), "two\n");
    // ... and to one again, restored too: the second is removed again.
    project.write("pipeline.yaml", one);
    assert_eq!(project.run(&["run"]).code, 0);
    assert_eq!(project.counts(&["a"]), [2]);
    assert!(!project.path("results/a/two.txt").exists());
    assert_eq!(project.read("results/a/notes.txt"), "mine");
}
