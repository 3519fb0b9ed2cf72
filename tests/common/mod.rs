//! Helpers shared by the fitting tests.

#![allow(dead_code)]

use lowrank_smc::data::simulate::{
    simulate, InitialLatent, SimulatedObservation, SimulationConfig, StimulusTask, TeacherBasis,
};
use lowrank_smc::model::sequences::Sequences;

/// The paper's oscillator teacher (`datasets/teachers/osc_rnn.json`, its input removed).
pub fn osc_teacher() -> TeacherBasis {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/teachers/osc_rnn.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut teacher = TeacherBasis::from_json(&doc).unwrap();
    teacher.dim_input = 0;
    teacher.input_weights.clear();
    teacher
}

/// `n_trials` × `n_time` currents from `teacher` with latent noise `latent_noise_std` and
/// observation noise 0.1, initial states at Gaussian radius 2 (simulation seed 5).
pub fn osc_currents(
    teacher: &TeacherBasis,
    n_trials: usize,
    n_time: usize,
    latent_noise_std: f64,
) -> Sequences<f64> {
    simulate(
        teacher,
        &StimulusTask::None,
        &SimulationConfig {
            n_trials,
            n_time,
            latent_noise_std,
            observation: SimulatedObservation::Currents { noise_std: 0.1 },
            initial_latent: InitialLatent {
                radius: 2.0,
                radius_is_gaussian_scale: true,
                reference_gaussian_phase: false,
            },
            filter_input: false,
        },
        5,
    )
    .unwrap()
    .sequences
}
