//! The exact fixed-point enumeration against the reference's full fixed-point sets
//! (tests/fixtures/fixed_points, from the authors' code): same sets to 1e-8, same stability
//! labels (ρ < 1), same Jacobian eigenvalues, and every point a fixed point inside its region.

use std::path::Path;

use lowrank_smc::analysis::fixed_points::{find_fixed_points, Options, PwlMap, Stability};
use lowrank_smc::model::lowrank::Nonlinearity;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fixed_points")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture is in the repo");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn mat(v: &Value) -> Vec<f64> {
    v.as_array().expect("rows").iter().flat_map(vec1).collect()
}

/// The map of a fixture's `model` block.
fn map_of(doc: &Value) -> PwlMap {
    let m = &doc["model"];
    let r = m["rank"].as_u64().expect("rank") as usize;
    if m.get("W1").is_some() {
        // z' = diag(a) z + W1 relu(W2 z + h2) + h1
        let b = vec1(&m["h2"]);
        PwlMap {
            rank: r,
            a: vec1(&m["a"]),
            u: mat(&m["W2"]),
            v: mat(&m["W1"]),
            n_model_units: b.len(),
            b,
            c: vec1(&m["h1"]),
        }
    } else {
        // clipped relu: z' = diag(a) z + n (relu(m z + h) − relu(m z)), a equal per dimension
        let a = vec1(&m["a"]);
        assert!(a.iter().all(|x| *x == a[0]));
        PwlMap::from_low_rank(
            &mat(&m["m"]),
            &mat(&m["n"]),
            &vec1(&m["h"]),
            a[0],
            r,
            Nonlinearity::ClippedRelu,
        )
        .expect("valid model")
    }
}

fn check(name: &str) {
    let doc = load(name);
    let map = map_of(&doc);
    let set = find_fixed_points(&map, &Options::default()).expect("runs");
    let golden = doc["analytic"]["fixed_points"]
        .as_array()
        .expect("fixed points");
    assert_eq!(
        set.points.len(),
        golden.len(),
        "{name}: {} fixed points, reference {}",
        set.points.len(),
        golden.len()
    );
    for g in golden {
        let z = vec1(&g["z"]);
        let ours = set
            .points
            .iter()
            .find(|p| p.z.iter().zip(&z).all(|(a, b)| (a - b).abs() <= 1e-8))
            .unwrap_or_else(|| panic!("{name}: reference point {z:?} not found"));
        let stable = g["stable"].as_bool().expect("stable flag");
        assert_eq!(
            ours.stability == Stability::Stable,
            stable,
            "{name}: stability of {z:?} (ρ = {})",
            ours.spectral_radius
        );
        let re = vec1(&g["eigenvalues_real"]);
        let im = vec1(&g["eigenvalues_imag"]);
        for (k, (r, i)) in ours.eigenvalues.iter().enumerate() {
            assert!(
                (r - re[k]).abs() < 1e-8 && (i - im[k]).abs() < 1e-8,
                "{name}: eigenvalue {k} of {z:?}: ({r}, {i}) vs ({}, {})",
                re[k],
                im[k]
            );
        }
        assert!(ours.residual < 1e-9, "{name}: residual {}", ours.residual);
        // Full coordinates x = W2 z (reference form) / m z (clipped).
        let x = vec1(&g["x"]);
        assert_eq!(
            ours.x.len(),
            x.len(),
            "{name}: x has one entry per model unit"
        );
        for (a, b) in ours.x.iter().zip(&x) {
            assert!((a - b).abs() < 1e-8, "{name}: x of {z:?}: {a} vs {b}");
        }
        // Inside its region: the reported active units are exactly those with pre > 0.
        for i in 0..map.n_units() {
            let on = ours.active_units.contains(&i);
            assert_eq!(map.pre(i, &ours.z) > 0.0, on, "{name}: unit {i}");
        }
    }
    let c = &set.counters;
    assert_eq!(c.singular_regions, 0, "{name}: {c:?}");
    assert!(c.region_solves > 0 && c.vertices > 0, "{name}: {c:?}");
}

#[test]
fn random_rank1_relu() {
    check("random_N20_R1_relu.json");
}

#[test]
fn random_rank2_relu() {
    check("random_N30_R2_relu.json");
}

#[test]
fn random_rank3_clipped_relu() {
    check("random_N30_R3_clipped_relu.json");
}

/// The Fig 8 teacher: all 17 fixed points, 8 stable (the reference's SCYFI labels are wrong
/// for 8 of them; see the fixture README).
#[test]
fn reach_teacher_all_17() {
    check("reach_rnn.json");
    let doc = load("reach_rnn.json");
    let set = find_fixed_points(&map_of(&doc), &Options::default()).expect("runs");
    let stable = set
        .points
        .iter()
        .filter(|p| p.stability == Stability::Stable)
        .count();
    assert_eq!(Some(stable as u64), doc["analytic"]["n_stable"].as_u64());
    assert_eq!(
        Some(set.points.len() as u64),
        doc["analytic"]["n_fixed_points"].as_u64()
    );
}

/// The CLI: `fixed-points FILE --format json` prints the set; a missing file is an error that
/// names it.
#[test]
fn cli_prints_the_set_and_names_bad_files() {
    let bin = env!("CARGO_BIN_EXE_lowrank-smc");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fixed_points/reach_rnn.json");
    let out = std::process::Command::new(bin)
        .args(["fixed-points", "--format", "json"])
        .arg(&path)
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let golden = load("reach_rnn.json");
    assert_eq!(
        v["points"].as_array().map(Vec::len),
        golden["analytic"]["fixed_points"].as_array().map(Vec::len)
    );
    let out = std::process::Command::new(bin)
        .args(["fixed-points", "no/such/model.h5"])
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/model.h5"));
}
