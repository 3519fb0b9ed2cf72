//! Central finite differences of the optimal-proposal VSMC loss for every parameter block, over
//! nonlinearities × readouts × inputs × t_forward (draws fixed by a seed; entries whose
//! perturbation flips an ancestor index are skipped, since the loss is discontinuous there).

use lowrank_smc::inference::draws::{NoiseSource, Resampling, SeededNoise};
use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::inference::optimal::{optimal_vsmc, VsmcOptions};
use lowrank_smc::model::lowrank::{
    InitialState, Likelihood, ModelConfig, NoiseKind, Nonlinearity, Observation, ReadoutFrom,
};
use lowrank_smc::model::Sequences;
use rand::{Rng, SeedableRng};

fn config(
    nl: Nonlinearity,
    readout: ReadoutFrom,
    du: usize,
    sim: bool,
    noise_x: NoiseKind,
) -> ModelConfig {
    let n = 9;
    let (observation, dim_x) = match readout {
        ReadoutFrom::Z => (Observation::Affine, 7),
        _ => (Observation::OneToOne, n),
    };
    ModelConfig {
        rank: 2,
        n_units: n,
        dim_x,
        dim_u: du,
        nonlinearity: nl,
        noise_z: NoiseKind::Full,
        noise_z0: NoiseKind::Full,
        noise_x,
        observation,
        readout_from: readout,
        likelihood: Likelihood::Gaussian,
        obs_nonlinearity: None,
        initial_state: InitialState::Trainable,
        simulate_input: sim,
        decay: 0.8,
        init_noise_z: 0.3,
        init_noise_z0: 1.0,
        init_noise_x: 0.5,
        train_observation: true,
        transition: Default::default(),
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    c: &ModelConfig,
    p: &[f64],
    data: &Sequences<f64>,
    noise: &dyn NoiseSource,
    t_forward: usize,
    k: usize,
    grad: Option<&mut [f64]>,
) -> (f64, Vec<Vec<usize>>) {
    let out = optimal_vsmc(
        c,
        p,
        data,
        &VsmcOptions {
            n_particles: k,
            t_forward,
            precision: Precision::F64,
        },
        noise,
        grad,
    )
    .unwrap();
    (out.loss, out.ancestors)
}

fn check(c: ModelConfig, t_forward: usize, seed: u64) {
    check_with(c, t_forward, seed, true, 3)
}

/// As [`check`]; `perturb_frozen = false` keeps frozen blocks at their initial values (the
/// full-rank baseline's M = I, which the kernels then take as the identity).
///
/// `k` particles: 3 keeps rank-2 models' observation term on its dx channels, from 2R = 4 on it
/// runs on R-dimensional sums (`optimal::reduces_observation`).
fn check_with(c: ModelConfig, t_forward: usize, seed: u64, perturb_frozen: bool, k: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = c.init_params(seed).unwrap();
    // Perturb so no parameter sits at a special value (zero bias, identity noise).
    let layout = c.layout();
    for b in layout.blocks() {
        for i in b.range() {
            let d = 0.2 * rng.gen_range(-1.0..1.0);
            if b.trainable || perturb_frozen {
                p[i] += d;
            }
        }
    }
    let (nb, tt) = (2, 6);
    let data = Sequences {
        n_sequences: nb,
        dim_x: c.dim_x,
        dim_u: c.dim_u,
        n_time: tt,
        x: (0..nb * c.dim_x * tt)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect(),
        u: (0..nb * c.dim_u * tt)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect(),
    };
    let noise = SeededNoise {
        seed: seed + 100,
        resampling: Resampling::Systematic,
    };
    let mut grad = vec![0.0; layout.len()];
    let (_, anc0) = run(&c, &p, &data, &noise, t_forward, k, Some(&mut grad));
    let mut checked = 0;
    for b in layout.blocks() {
        if !b.trainable {
            continue;
        }
        for i in b.range() {
            // Entries of the unused upper triangle of full noise matrices have zero gradient.
            let h = 1e-6 * p[i].abs().max(1.0);
            let mut pp = p.clone();
            pp[i] += h;
            let (lp, ap) = run(&c, &pp, &data, &noise, t_forward, k, None);
            pp[i] = p[i] - h;
            let (lm, am) = run(&c, &pp, &data, &noise, t_forward, k, None);
            if ap != anc0 || am != anc0 {
                continue;
            }
            let fd = (lp - lm) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-6 * fd.abs().max(1e-3) + 1e-8,
                "{c:?}\n{}[{}]: finite difference {fd} vs gradient {}",
                b.name,
                i - b.offset,
                grad[i]
            );
            checked += 1;
        }
    }
    assert!(
        checked > layout.n_trainable() / 2,
        "only {checked} entries checked"
    );
}

#[test]
fn affine_readout_every_nonlinearity() {
    for (i, nl) in [
        Nonlinearity::Relu,
        Nonlinearity::ClippedRelu,
        Nonlinearity::Tanh,
        Nonlinearity::Identity,
    ]
    .into_iter()
    .enumerate()
    {
        check(
            config(nl, ReadoutFrom::Z, 0, false, NoiseKind::Diag),
            0,
            i as u64,
        );
    }
}

#[test]
fn currents_readout_with_inputs_and_t_forward() {
    check(
        config(
            Nonlinearity::Relu,
            ReadoutFrom::Currents,
            2,
            false,
            NoiseKind::Diag,
        ),
        2,
        11,
    );
    check(
        config(
            Nonlinearity::ClippedRelu,
            ReadoutFrom::Currents,
            1,
            true,
            NoiseKind::Scalar,
        ),
        0,
        12,
    );
}

#[test]
fn affine_readout_with_simulated_input_and_scalar_noise() {
    check(
        config(
            Nonlinearity::Tanh,
            ReadoutFrom::Z,
            2,
            true,
            NoiseKind::Scalar,
        ),
        1,
        21,
    );
}

#[test]
fn full_rank_baseline() {
    let mut c = config(
        Nonlinearity::ClippedRelu,
        ReadoutFrom::Z,
        0,
        false,
        NoiseKind::Diag,
    );
    c.rank = 5;
    c.n_units = 5;
    c.transition = lowrank_smc::model::lowrank::Transition::FullRank;
    check(c, 1, 31);
}

/// Rank above the const-generic kernels (the wide transition kernels, the observation GEMMs
/// and the proposal's row dot products at R = 11), full-rank as the Table-1 baselines.
#[test]
fn wide_full_rank_baseline() {
    let mut c = config(
        Nonlinearity::Tanh,
        ReadoutFrom::Z,
        0,
        false,
        NoiseKind::Diag,
    );
    c.rank = 11;
    c.n_units = 11;
    c.transition = lowrank_smc::model::lowrank::Transition::FullRank;
    check(c.clone(), 2, 37);
    // M kept at the frozen identity: the kernels' identity shortcut.
    check_with(c, 2, 43, false, 3);
}

/// From R = 16 on, a step's proposal products run as K × R × R GEMMs (the batched path of the
/// Table-1 baselines): full-rank with t_forward, and low-rank with inputs and a currents readout.
#[test]
fn batched_proposal_products() {
    let mut c = config(
        Nonlinearity::ClippedRelu,
        ReadoutFrom::Z,
        0,
        false,
        NoiseKind::Diag,
    );
    c.rank = 16;
    c.n_units = 16;
    c.transition = lowrank_smc::model::lowrank::Transition::FullRank;
    check_with(c, 2, 47, false, 3);
    let mut c = config(
        Nonlinearity::Tanh,
        ReadoutFrom::Currents,
        2,
        true,
        NoiseKind::Diag,
    );
    c.rank = 17;
    c.n_units = 20;
    c.dim_x = 20;
    check(c, 1, 53);
}

/// A low-rank model with R = 9 > 8 and inputs through the wide kernels (N = 70 spans two of
/// their unit blocks).
#[test]
fn wide_rank_with_inputs() {
    let mut c = config(
        Nonlinearity::Relu,
        ReadoutFrom::Z,
        2,
        false,
        NoiseKind::Diag,
    );
    c.rank = 9;
    c.n_units = 70;
    check(c, 0, 41);
}

/// The observation term on R-dimensional sums (K ≥ 2R): affine and one-to-one readouts, inputs,
/// unfiltered steps, scalar and diagonal observation noise.
#[test]
fn reduced_observation_term() {
    assert!(lowrank_smc::inference::optimal::reduces_observation(
        2, 7, 6
    ));
    let cases = [
        (ReadoutFrom::Z, 0, false, NoiseKind::Diag, 0),
        (ReadoutFrom::Currents, 2, false, NoiseKind::Diag, 2),
        (ReadoutFrom::Currents, 1, true, NoiseKind::Scalar, 0),
        (ReadoutFrom::Z, 2, true, NoiseKind::Scalar, 1),
    ];
    for (i, (readout, du, sim, noise_x, t_forward)) in cases.into_iter().enumerate() {
        let c = config(Nonlinearity::Relu, readout, du, sim, noise_x);
        check_with(c, t_forward, 60 + i as u64, true, 6);
    }
}
