//! The paper's teachers (datasets/teachers/*.json) load, and reproduce the check trajectories
//! stored with them (TEACHERS.md `check.latent`: five noise-free steps of the latent form),
//! both through the simulator's latent step and as a model of ours (M = U, n = V, h = −B,
//! Wu = Iᵀ).

use std::path::Path;

use lowrank_smc::data::simulate::TeacherBasis;

fn teacher(name: &str) -> (serde_json::Value, TeacherBasis) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets/teachers")
        .join(name);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t = TeacherBasis::from_json(&doc).unwrap();
    (doc, t)
}

fn nums(v: &serde_json::Value) -> Vec<Vec<f64>> {
    match v.as_array() {
        Some(rows) if rows.iter().all(|r| r.is_array()) => rows
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect(),
        Some(row) => vec![row.iter().map(|x| x.as_f64().unwrap()).collect()],
        None => vec![vec![v.as_f64().unwrap()]],
    }
}

#[test]
fn every_teacher_reproduces_its_check_trajectory() {
    for name in [
        "osc_rnn.json",
        "osc_rnn_poisson.json",
        "rdm_rnn.json",
        "reach_rnn.json",
        "reach_rnn_128.json",
    ] {
        let (doc, t) = teacher(name);
        let check = &doc["check"]["latent"];
        let z0 = nums(&check["z0"]).concat();
        let v = nums(&check["v"]);
        let expected = nums(&check["z_traj_float64"]);
        assert_eq!(z0.len(), t.rank, "{name}");
        assert_eq!(expected.len(), 5, "{name}");
        let (config, params) = t.as_model(0.1, 0.1).unwrap();
        let view = config.view(&params).unwrap();
        let mut z = z0.clone();
        let mut zm = z0.clone();
        let mut currents = vec![0.0; t.n_units];
        let mut next = vec![0.0; t.rank];
        for (step, want) in expected.iter().enumerate() {
            let vt: Vec<f64> = if t.dim_input > 0 {
                v[step].clone()
            } else {
                Vec::new()
            };
            t.step(&z, &vt, &mut currents, &mut next);
            z.copy_from_slice(&next);
            config.transition_mean(&view, &zm, &vt, &mut currents, &mut next);
            zm.copy_from_slice(&next);
            for q in 0..t.rank {
                assert!(
                    (z[q] - want[q]).abs() < 1e-12,
                    "{name} step {step}: simulator z[{q}] = {} vs stored {}",
                    z[q],
                    want[q]
                );
                assert!(
                    (zm[q] - want[q]).abs() < 1e-12,
                    "{name} step {step}: model z[{q}] = {} vs stored {}",
                    zm[q],
                    want[q]
                );
            }
        }
    }
}

#[test]
fn a_file_without_a_basis_is_a_named_error() {
    let doc = serde_json::json!({"derived": {"decay": 0.9}});
    let e = TeacherBasis::from_json(&doc).unwrap_err().to_string();
    assert!(e.contains("derived.dataset_basis"), "{e}");
}
