//! Central finite differences of the encoder- and bootstrap-proposal VSMC loss for every
//! parameter entry (model and encoder), over proposal × observation model × likelihood and link
//! × nonlinearity × noise parameterisation × inputs × t_forward (draws fixed by a seed; entries
//! whose perturbation flips an ancestor index are skipped, since the loss is discontinuous there).

use lowrank_smc::inference::draws::{NoiseSource, Resampling, SeededNoise};
use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::inference::optimal::VsmcOptions;
use lowrank_smc::inference::smc::{smc_vsmc, SmcProposal};
use lowrank_smc::model::encoder::{
    CnnEncoder, EncoderActivation, EncoderConfig, PaddingLocation, PaddingMode,
};
use lowrank_smc::model::lowrank::{
    InitialState, Likelihood, ModelConfig, NoiseKind, Nonlinearity, ObsNonlinearity, Observation,
    ReadoutFrom,
};
use lowrank_smc::model::Sequences;
use lowrank_smc::train::ParamLayout;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy)]
struct Setup {
    encoder: bool,
    readout: ReadoutFrom,
    likelihood: Likelihood,
    link: ObsNonlinearity,
    nl: Nonlinearity,
    noise: NoiseKind,
    du: usize,
    sim: bool,
    t_forward: usize,
    multinomial: bool,
}

fn config(s: &Setup) -> ModelConfig {
    let n = 9;
    let (observation, dim_x) = match s.readout {
        ReadoutFrom::Z | ReadoutFrom::ZAndV => (Observation::Affine, 6),
        _ => (Observation::OneToOne, 7),
    };
    ModelConfig {
        rank: 2,
        n_units: n,
        dim_x,
        dim_u: s.du,
        nonlinearity: s.nl,
        noise_z: s.noise,
        noise_z0: s.noise,
        noise_x: NoiseKind::Diag,
        observation,
        readout_from: s.readout,
        likelihood: s.likelihood,
        obs_nonlinearity: Some(s.link),
        initial_state: InitialState::Trainable,
        simulate_input: s.sim,
        decay: 0.8,
        init_noise_z: 0.3,
        init_noise_z0: 0.8,
        init_noise_x: 0.6,
        train_observation: true,
        transition: Default::default(),
    }
}

/// A model of setup `s`, its parameters (drawn from `seed`), data and proposal.
struct Problem {
    c: ModelConfig,
    layout: ParamLayout,
    encoder: Option<CnnEncoder>,
    p: Vec<f64>,
    data: Sequences<f64>,
    noise: SeededNoise,
}

fn problem(s: Setup, seed: u64) -> Problem {
    let c = config(&s);
    let mut layout = c.layout();
    let encoder = s.encoder.then(|| {
        let enc = EncoderConfig {
            kernel_sizes: vec![3, 2, 1],
            channels: vec![4, 3],
            activation: EncoderActivation::Gelu,
            padding_location: PaddingLocation::Causal,
            padding_mode: PaddingMode::Circular,
            init_scale: 0.5,
            constant_var: false,
        };
        CnnEncoder::push_layout(&enc, &mut layout, c.dim_x, c.rank).unwrap()
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = c.init_params(seed).unwrap();
    p.resize(layout.len(), 0.0);
    if let Some(e) = &encoder {
        e.init_params(&mut p, &mut rng).unwrap();
    }
    for v in p.iter_mut() {
        *v += 0.2 * rng.gen_range(-1.0..1.0);
    }
    let (nb, tt) = (2, 6);
    let poisson = s.likelihood == Likelihood::Poisson;
    let data = Sequences {
        n_sequences: nb,
        dim_x: c.dim_x,
        dim_u: c.dim_u,
        n_time: tt,
        x: (0..nb * c.dim_x * tt)
            .map(|_| {
                if poisson {
                    rng.gen_range(0..4) as f64
                } else {
                    rng.gen_range(-1.0..1.0)
                }
            })
            .collect(),
        u: (0..nb * c.dim_u * tt)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect(),
    };
    let noise = SeededNoise {
        seed: seed + 100,
        resampling: if s.multinomial {
            Resampling::Multinomial
        } else {
            Resampling::Systematic
        },
    };
    Problem {
        c,
        layout,
        encoder,
        p,
        data,
        noise,
    }
}

/// The loss, its gradient (with `grad`) and the ancestors at parameters `p`.
fn run(
    pr: &Problem,
    p: &[f64],
    t_forward: usize,
    precision: Precision,
    grad: Option<&mut [f64]>,
) -> (f64, Vec<Vec<usize>>) {
    let proposal = match &pr.encoder {
        Some(e) => SmcProposal::Encoder(e),
        None => SmcProposal::Bootstrap,
    };
    let options = VsmcOptions {
        n_particles: 3,
        t_forward,
        precision,
    };
    let out = smc_vsmc(
        &pr.c,
        proposal,
        p,
        &pr.data,
        &options,
        &pr.noise as &dyn NoiseSource,
        grad,
    )
    .unwrap();
    (out.loss, out.ancestors)
}

fn check(s: Setup, seed: u64) {
    let pr = problem(s, seed);
    let (c, layout, p) = (&pr.c, &pr.layout, &pr.p);
    let run = |p: &[f64], grad: Option<&mut [f64]>| run(&pr, p, s.t_forward, Precision::F64, grad);
    let mut grad = vec![0.0; layout.len()];
    let (loss, anc0) = run(p, Some(&mut grad));
    assert!(loss.is_finite());
    let mut checked = 0;
    let mut n_trainable = 0;
    for b in layout.blocks() {
        if !b.trainable {
            continue;
        }
        for i in b.range() {
            n_trainable += 1;
            let h = 1e-6 * p[i].abs().max(1.0);
            let mut pp = p.to_vec();
            pp[i] += h;
            let (lp, ap) = run(&pp, None);
            pp[i] = p[i] - h;
            let (lm, am) = run(&pp, None);
            if ap != anc0 || am != anc0 {
                continue;
            }
            let fd = (lp - lm) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-6 * fd.abs().max(1e-3) + 1e-8,
                "{c:?} encoder={}\n{}[{}]: finite difference {fd} vs gradient {}",
                s.encoder,
                b.name,
                i - b.offset,
                grad[i]
            );
            checked += 1;
        }
    }
    assert!(
        checked > n_trainable / 2,
        "only {checked} of {n_trainable} entries checked"
    );
}

const BASE: Setup = Setup {
    encoder: true,
    readout: ReadoutFrom::Z,
    likelihood: Likelihood::Gaussian,
    link: ObsNonlinearity::Identity,
    nl: Nonlinearity::Relu,
    noise: NoiseKind::Diag,
    du: 0,
    sim: false,
    t_forward: 0,
    multinomial: false,
};

#[test]
fn encoder_every_nonlinearity_gaussian_affine() {
    for (i, nl) in [
        Nonlinearity::Relu,
        Nonlinearity::ClippedRelu,
        Nonlinearity::Tanh,
        Nonlinearity::Identity,
    ]
    .into_iter()
    .enumerate()
    {
        check(Setup { nl, ..BASE }, i as u64);
    }
}

#[test]
fn encoder_poisson_every_link_and_readout() {
    let mut seed = 10;
    for link in [
        ObsNonlinearity::Softplus,
        ObsNonlinearity::Exp,
        ObsNonlinearity::Relu,
    ] {
        for readout in [ReadoutFrom::Z, ReadoutFrom::Currents, ReadoutFrom::Rates] {
            seed += 1;
            check(
                Setup {
                    likelihood: Likelihood::Poisson,
                    link,
                    readout,
                    nl: Nonlinearity::ClippedRelu,
                    ..BASE
                },
                seed,
            );
        }
    }
}

#[test]
fn encoder_inputs_scalar_noise_t_forward() {
    check(
        Setup {
            readout: ReadoutFrom::ZAndV,
            du: 2,
            sim: true,
            noise: NoiseKind::Scalar,
            t_forward: 2,
            multinomial: true,
            ..BASE
        },
        31,
    );
    check(
        Setup {
            readout: ReadoutFrom::Currents,
            du: 2,
            sim: false,
            link: ObsNonlinearity::Softplus,
            t_forward: 1,
            ..BASE
        },
        32,
    );
}

#[test]
fn bootstrap_every_noise_kind_and_readout() {
    let mut seed = 40;
    for noise in [NoiseKind::Full, NoiseKind::Diag, NoiseKind::Scalar] {
        for (readout, likelihood, link) in [
            (
                ReadoutFrom::Currents,
                Likelihood::Gaussian,
                ObsNonlinearity::Identity,
            ),
            (
                ReadoutFrom::Rates,
                Likelihood::Poisson,
                ObsNonlinearity::Softplus,
            ),
            (
                ReadoutFrom::ZAndV,
                Likelihood::Poisson,
                ObsNonlinearity::Exp,
            ),
        ] {
            seed += 1;
            check(
                Setup {
                    encoder: false,
                    noise,
                    readout,
                    likelihood,
                    link,
                    nl: Nonlinearity::Tanh,
                    du: if readout == ReadoutFrom::ZAndV { 2 } else { 1 },
                    sim: seed % 2 == 0,
                    t_forward: (seed % 3) as usize,
                    ..BASE
                },
                seed,
            );
        }
    }
}

/// `precision: f32` against f64 for the Poisson-softplus readout from the currents, the case
/// with its own batched single-precision step (src/inference/poisson32.rs): with and without
/// inputs (the readout gain's adjoint through the input current), 7 observed units (a partial
/// register), 3 particles (an odd count), encoder and bootstrap proposals. Loss and every gradient entry agree to
/// f32 accuracy: 1e-4 of the block's largest entry (the golden f32 tolerance).
#[test]
fn poisson_currents_f32_matches_f64() {
    let mut seed = 60;
    for (encoder, du) in [(true, 0), (true, 2), (false, 2)] {
        seed += 1;
        let s = Setup {
            encoder,
            readout: ReadoutFrom::Currents,
            likelihood: Likelihood::Poisson,
            link: ObsNonlinearity::Softplus,
            du,
            ..BASE
        };
        let pr = problem(s, seed);
        let (mut g64, mut g32) = (vec![0.0; pr.layout.len()], vec![0.0; pr.layout.len()]);
        let (l64, a64) = run(&pr, &pr.p, 0, Precision::F64, Some(&mut g64));
        let (l32, a32) = run(&pr, &pr.p, 0, Precision::F32, Some(&mut g32));
        assert_eq!(a64, a32, "seed {seed}: ancestors");
        assert!(
            (l64 - l32).abs() <= 1e-5 * l64.abs().max(1.0),
            "seed {seed}: loss {l32} in f32 vs {l64}"
        );
        assert!(g64 != g32, "seed {seed}: the f32 run gave the f64 bits");
        for b in pr.layout.blocks() {
            let scale = b.range().map(|i| g64[i].abs()).fold(0.0, f64::max);
            for i in b.range() {
                assert!(
                    (g64[i] - g32[i]).abs() <= 1e-4 * scale + 1e-9,
                    "seed {seed} du {du} encoder {encoder}: {}[{}] {} in f32 vs {}",
                    b.name,
                    i - b.offset,
                    g32[i],
                    g64[i]
                );
            }
        }
    }
}
