//! SCYFI and constrained SCYFI against the reference's runs on the reach teacher
//! (tests/fixtures/fixed_points/reach_rnn.json, `scyfi.runs`: `np.random.seed(seed)` then
//! `run_scify(..., n_inverses_max=budget, round_dec=4)`): with numpy's generator replayed, the
//! same number of linear solves, the same points found in the same order, for every budget
//! and seed; and the found-vs-budget curve of one long run equals the short runs.

use std::path::Path;

use lowrank_smc::analysis::cli::map_from_json;
use lowrank_smc::analysis::fixed_points::PwlMap;
use lowrank_smc::analysis::scyfi::{scyfi, NumpyMt19937, ScyfiOptions, ScyfiVariant};
use serde_json::Value;

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// The reach teacher's map (the fixture's `model` block, read as the CLI reads it) and the
/// fixture.
fn reach() -> (PwlMap, Value) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fixed_points/reach_rnn.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    (map_from_json(&doc).expect("valid model"), doc)
}

#[test]
fn scyfi_replays_the_reference_runs() {
    let (map, doc) = reach();
    let runs = doc["scyfi"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 30);
    for run in runs {
        let variant = match run["variant"].as_str().expect("variant") {
            "constrained" => ScyfiVariant::Constrained,
            _ => ScyfiVariant::Unconstrained,
        };
        let budget = run["budget"].as_u64().expect("budget");
        let seed = run["seed"].as_u64().expect("seed") as u32;
        let opts = ScyfiOptions {
            budget,
            ..ScyfiOptions::default()
        };
        let out = scyfi(&map, variant, &opts, &mut NumpyMt19937::new(seed)).expect("runs");
        let what = format!("{variant:?} budget {budget} seed {seed}");
        assert_eq!(
            out.solves,
            run["n_inverses_used"].as_u64().expect("n"),
            "{what}: solves"
        );
        let want: Vec<Vec<f64>> = run["found_z"]
            .as_array()
            .expect("found_z")
            .iter()
            .map(vec1)
            .collect();
        assert_eq!(out.finds.len(), want.len(), "{what}: number found");
        for ((_, z), w) in out.finds.iter().zip(&want) {
            for (a, b) in z.iter().zip(w) {
                assert!((a - b).abs() < 1e-8, "{what}: found {z:?}, reference {w:?}");
            }
        }
        // Every find is a true fixed point with the exact method's labels.
        for p in &out.set.points {
            assert!(p.residual < 1e-9, "{what}: residual {}", p.residual);
        }
    }
}

#[test]
fn one_long_run_gives_the_whole_curve() {
    let (map, _) = reach();
    for variant in [ScyfiVariant::Unconstrained, ScyfiVariant::Constrained] {
        let long = scyfi(
            &map,
            variant,
            &ScyfiOptions {
                budget: 4000,
                ..ScyfiOptions::default()
            },
            &mut NumpyMt19937::new(1),
        )
        .expect("runs");
        for budget in [50, 200, 1000, 2500] {
            let short = scyfi(
                &map,
                variant,
                &ScyfiOptions {
                    budget,
                    ..ScyfiOptions::default()
                },
                &mut NumpyMt19937::new(1),
            )
            .expect("runs");
            assert_eq!(
                long.found_within(budget),
                short.finds.len(),
                "{variant:?} {budget}"
            );
        }
    }
}

/// The argmin local search finds only true fixed points of the reference set, is
/// deterministic for a seed, and finds some of them.
#[test]
fn local_search_finds_a_subset_of_the_exact_set() {
    use lowrank_smc::analysis::fixed_points::{find_fixed_points, Options};
    use lowrank_smc::analysis::scyfi::{local_search, LocalOptions};
    use rand::SeedableRng;
    let (map, _) = reach();
    let exact = find_fixed_points(&map, &Options::default()).expect("exact");
    let opts = LocalOptions {
        starts: 200,
        ..LocalOptions::default()
    };
    let a =
        local_search(&map, &opts, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3)).expect("runs");
    let b =
        local_search(&map, &opts, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3)).expect("runs");
    assert_eq!(a.finds, b.finds);
    assert!(!a.finds.is_empty() && a.evaluations > 0);
    for (_, z) in &a.finds {
        assert!(
            exact
                .points
                .iter()
                .any(|p| p.z.iter().zip(z).all(|(x, y)| (x - y).abs() < 1e-8)),
            "{z:?} is not in the exact set"
        );
    }
    eprintln!(
        "local search: {} of {} found",
        a.finds.len(),
        exact.points.len()
    );
}
