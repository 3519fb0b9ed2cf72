//! A short real fit: data simulated from a known rank-2 model (the paper's oscillator teacher,
//! decay 0.9, latent noise 0.2, observation noise 0.1) and a student started at decay 0.7 and
//! latent noise 0.1, trained with optimal-proposal VSMC. The loss decreases, the (orthogonalised)
//! latent noise — identifiable — covers at least half the distance to 0.2, and the decay moves
//! toward 0.9 by at least 0.02. The decay alone is not identifiable (a z + n φ(M z) can trade
//! decay against recurrence; only the whole map is), so only its direction is checked.

mod common;

use lowrank_smc::inference::draws::Resampling;
use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::inference::objective::{ModelWithProposal, ProposalKind, VsmcObjective};
use lowrank_smc::inference::optimal::VsmcOptions;
use lowrank_smc::model::lowrank::ModelConfig;
use lowrank_smc::stages::teacher_student::orthogonalised_noise_std;
use lowrank_smc::train::trainer::{train, RunOptions, TrainConfig};
use lowrank_smc::train::BatchSource;

#[test]
fn student_moves_toward_the_teachers_decay_and_noise() {
    let teacher = common::osc_teacher();
    let (true_decay, true_noise) = (teacher.decay, 0.2);
    let sequences = common::osc_currents(&teacher, 40, 75, true_noise);
    let config = ModelConfig::continuous_student();
    let model = ModelWithProposal::new(config.clone(), ProposalKind::Optimal, None).unwrap();
    let init = model.init_params(1).unwrap();
    let noise0 = orthogonalised_noise_std(&config, &init).unwrap();
    let objective = VsmcObjective::with_proposal(
        model,
        VsmcOptions {
            n_particles: 10,
            t_forward: 0,
            precision: Precision::F64,
        },
        Resampling::Systematic,
    );
    let source = BatchSource::trials(sequences).unwrap();
    let out = train(
        &objective,
        &source,
        &TrainConfig::new(150, 10, 1e-2, 1e-3, 1),
        init,
        RunOptions::default(),
    )
    .unwrap();
    let records = &out.state.records;
    let first = records.first().unwrap().loss;
    let last = records.last().unwrap().loss;
    assert!(last < first - 0.5, "loss {first} → {last}");
    let p = config.view(&out.state.params).unwrap();
    let noise = orthogonalised_noise_std(&config, &out.state.params).unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (n0, n1) = (mean(&noise0), mean(&noise));
    assert!(
        p.decay > 0.72 && p.decay < true_decay + 0.05,
        "decay 0.7 → {} (truth {true_decay})",
        p.decay
    );
    assert!(
        (n1 - true_noise).abs() < 0.5 * (n0 - true_noise).abs(),
        "latent noise {n0} → {n1} (truth {true_noise})"
    );
}
