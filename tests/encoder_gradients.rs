//! Finite-difference gradient tests of the CNN encoder for every padding location × mode ×
//! activation × constant_var, plus output-length, causality, error and determinism tests.

use lowrank_smc::model::encoder::{
    CnnEncoder, EncoderActivation, EncoderConfig, EncoderError, PaddingLocation, PaddingMode,
};
use lowrank_smc::train::ParamLayout;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LOCATIONS: [PaddingLocation; 3] = [
    PaddingLocation::Causal,
    PaddingLocation::Acausal,
    PaddingLocation::Windowed,
];
const MODES: [PaddingMode; 4] = [
    PaddingMode::Constant,
    PaddingMode::Reflect,
    PaddingMode::Replicate,
    PaddingMode::Circular,
];
const ACTIVATIONS: [EncoderActivation; 2] = [EncoderActivation::Gelu, EncoderActivation::LeakyRelu];

fn config(
    kernel_sizes: &[usize],
    channels: &[usize],
    activation: EncoderActivation,
    location: PaddingLocation,
    mode: PaddingMode,
    constant_var: bool,
) -> EncoderConfig {
    EncoderConfig {
        kernel_sizes: kernel_sizes.to_vec(),
        channels: channels.to_vec(),
        activation,
        padding_location: location,
        padding_mode: mode,
        init_scale: 0.3,
        constant_var,
    }
}

/// Encoder, flat params (random, wider than the init), inputs of `n_seq` sequences.
struct Setup {
    encoder: CnnEncoder,
    layout: ParamLayout,
    params: Vec<f64>,
    x: Vec<f64>,
    n_seq: usize,
    t_in: usize,
}

fn setup(
    cfg: &EncoderConfig,
    dim_x: usize,
    dim_z: usize,
    n_seq: usize,
    t_in: usize,
    seed: u64,
) -> Setup {
    let mut layout = ParamLayout::new();
    // A block before the encoder so that offsets into the flat vector are exercised.
    layout.push("rnn.transition.decay_param", &[3], true);
    let encoder = CnnEncoder::push_layout(cfg, &mut layout, dim_x, dim_z).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params: Vec<f64> = (0..layout.len())
        .map(|_| rng.gen_range(-0.8..0.8))
        .collect();
    let x: Vec<f64> = (0..n_seq * dim_x * t_in)
        .map(|_| rng.gen_range(-1.5..1.5))
        .collect();
    Setup {
        encoder,
        layout,
        params,
        x,
        n_seq,
        t_in,
    }
}

/// loss = Σ coef_mean·mean + Σ coef_logvar·logvar over the batch, and its gradient.
fn loss_and_grad(s: &Setup, params: &[f64], coefs: &[f64], with_grad: bool) -> (f64, Vec<f64>) {
    let weights = s.encoder.weights::<f64>(params).unwrap();
    let mut workspaces: Vec<_> = (0..s.n_seq)
        .map(|_| s.encoder.workspace::<f64>(s.t_in).unwrap())
        .collect();
    let n_in = s.encoder.dim_x() * s.t_in;
    let inputs: Vec<&[f64]> = s.x.chunks_exact(n_in).collect();
    s.encoder
        .forward_batch(&weights, &inputs, s.t_in, &mut workspaces)
        .unwrap();
    let n_out = workspaces[0].mean().len();
    let mut loss = 0.0;
    for (i, ws) in workspaces.iter_mut().enumerate() {
        let cm = &coefs[2 * i * n_out..(2 * i + 1) * n_out];
        let cl = &coefs[(2 * i + 1) * n_out..(2 * i + 2) * n_out];
        loss += ws.mean().iter().zip(cm).map(|(a, b)| a * b).sum::<f64>();
        loss += ws.logvar().iter().zip(cl).map(|(a, b)| a * b).sum::<f64>();
        let (d_mean, d_logvar) = ws.output_grads_mut();
        d_mean.copy_from_slice(cm);
        d_logvar.copy_from_slice(cl);
    }
    let mut grad = vec![0.0; params.len()];
    if with_grad {
        s.encoder
            .backward_batch(&weights, &mut workspaces, &mut grad)
            .unwrap();
    }
    (loss, grad)
}

fn fd_check(cfg: &EncoderConfig, seed: u64) {
    let s = setup(cfg, 3, 2, 2, 9, seed);
    let t_out = s.encoder.output_len(s.t_in).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let coefs: Vec<f64> = (0..2 * s.n_seq * 2 * t_out)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let (_, grad) = loss_and_grad(&s, &s.params, &coefs, true);
    let eps = 1e-6;
    for block in s.layout.blocks() {
        let mut worst = 0.0f64;
        for i in block.range() {
            let mut plus = s.params.clone();
            plus[i] += eps;
            let mut minus = s.params.clone();
            minus[i] -= eps;
            let fd = (loss_and_grad(&s, &plus, &coefs, false).0
                - loss_and_grad(&s, &minus, &coefs, false).0)
                / (2.0 * eps);
            let err = (fd - grad[i]).abs() / (1.0 + grad[i].abs());
            worst = worst.max(err);
        }
        assert!(
            worst < 1e-7,
            "{cfg:?}: block {} finite-difference error {worst:e}",
            block.name
        );
        if block.name == "rnn.transition.decay_param" {
            assert!(grad[block.range()].iter().all(|&g| g == 0.0));
        } else {
            assert!(
                grad[block.range()].iter().any(|&g| g != 0.0),
                "{cfg:?}: block {} has a zero gradient",
                block.name
            );
        }
    }
}

#[test]
fn finite_differences_every_location_mode_activation_and_constant_var() {
    let mut seed = 100;
    for location in LOCATIONS {
        for mode in MODES {
            for activation in ACTIVATIONS {
                for constant_var in [false, true] {
                    seed += 1;
                    let cfg = config(
                        &[3, 2, 2],
                        &[4, 3],
                        activation,
                        location,
                        mode,
                        constant_var,
                    );
                    fd_check(&cfg, seed);
                }
            }
        }
    }
}

#[test]
fn finite_differences_deeper_encoder_with_odd_head_kernel() {
    for (i, location) in LOCATIONS.into_iter().enumerate() {
        let cfg = config(
            &[2, 3, 1, 3],
            &[3, 4, 2],
            EncoderActivation::Gelu,
            location,
            MODES[i],
            false,
        );
        fd_check(&cfg, 7 + i as u64);
    }
}

#[test]
fn output_length_per_padding_location() {
    let t_in = 20;
    for mode in MODES {
        for activation in ACTIVATIONS {
            for location in [PaddingLocation::Causal, PaddingLocation::Acausal] {
                let cfg = config(&[5, 3, 1], &[4, 3], activation, location, mode, false);
                let s = setup(&cfg, 2, 2, 1, t_in, 1);
                assert_eq!(s.encoder.output_len(t_in).unwrap(), t_in);
                assert!(s.encoder.check_length_preserving(t_in).is_ok());
            }
            // Windowed: even kernels keep the length, each odd kernel loses one step.
            let even = config(
                &[4, 2, 2],
                &[4, 3],
                activation,
                PaddingLocation::Windowed,
                mode,
                false,
            );
            let s = setup(&even, 2, 2, 1, t_in, 1);
            assert_eq!(s.encoder.output_len(t_in).unwrap(), t_in);
            let odd = config(
                &[5, 2, 1],
                &[4, 3],
                activation,
                PaddingLocation::Windowed,
                mode,
                true,
            );
            let s = setup(&odd, 2, 2, 1, t_in, 1);
            assert_eq!(s.encoder.output_len(t_in).unwrap(), t_in - 2);
            let ws = s.encoder.workspace::<f64>(t_in).unwrap();
            assert_eq!((ws.t_in(), ws.t_out()), (t_in, t_in - 2));
            assert_eq!(ws.mean().len(), 2 * (t_in - 2));
            assert!(matches!(
                s.encoder.check_length_preserving(t_in),
                Err(EncoderError::LengthChanged {
                    t_in: 20,
                    t_out: 18,
                    ..
                })
            ));
        }
    }
}

/// Output at time t of a causal encoder depends on x_{≤t} only; acausal on x_{≥t} only.
#[test]
fn causal_and_acausal_receptive_fields() {
    let t_in = 16;
    let t0 = 7;
    for mode in MODES {
        for location in [PaddingLocation::Causal, PaddingLocation::Acausal] {
            let cfg = config(
                &[4, 3, 2],
                &[4, 3],
                EncoderActivation::Gelu,
                location,
                mode,
                false,
            );
            let s = setup(&cfg, 2, 2, 1, t_in, 3);
            let weights = s.encoder.weights::<f64>(&s.params).unwrap();
            let mut ws = s.encoder.workspace::<f64>(t_in).unwrap();
            s.encoder.forward(&weights, &s.x, t_in, &mut ws).unwrap();
            let base = ws.mean().to_vec();
            let mut x = s.x.clone();
            x[t0] += 1.0; // channel 0, time t0
            s.encoder.forward(&weights, &x, t_in, &mut ws).unwrap();
            let changed: Vec<usize> = (0..t_in)
                .filter(|&t| (0..2).any(|r| ws.mean()[r * t_in + t] != base[r * t_in + t]))
                .collect();
            // Mirrored / wrapped padding lets the edges see the other end of the sequence; zero and
            // edge-replicating padding keep the receptive field strictly one-sided.
            let strict = matches!(mode, PaddingMode::Constant | PaddingMode::Replicate);
            let forbidden: Vec<usize> = match (strict, location) {
                (false, _) => Vec::new(),
                (true, PaddingLocation::Causal) => (0..t0).collect(),
                (true, _) => (t0 + 1..t_in).collect(),
            };
            assert!(changed.contains(&t0), "{location:?} {mode:?}");
            for t in forbidden {
                assert!(
                    !changed.contains(&t),
                    "{location:?} {mode:?}: output {t} saw x[{t0}]"
                );
            }
        }
    }
}

#[test]
fn padding_wider_than_the_input_is_an_error() {
    let reflect = config(
        &[6, 1],
        &[3],
        EncoderActivation::Gelu,
        PaddingLocation::Causal,
        PaddingMode::Reflect,
        false,
    );
    let s = setup(&reflect, 2, 1, 1, 8, 1);
    assert!(s.encoder.workspace::<f64>(6).is_ok());
    let err = s.encoder.workspace::<f64>(5).unwrap_err();
    assert!(matches!(
        err,
        EncoderError::InputTooShort {
            layer: 0,
            t_in: 5,
            ..
        }
    ));
    assert!(err.to_string().contains("reflect padding 5"), "{err}");
    let circular = config(
        &[6, 1],
        &[3],
        EncoderActivation::Gelu,
        PaddingLocation::Acausal,
        PaddingMode::Circular,
        false,
    );
    let s = setup(&circular, 2, 1, 1, 8, 1);
    assert!(s.encoder.output_len(5).is_ok());
    assert!(s.encoder.output_len(4).is_err());
    assert!(s.encoder.output_len(0).is_err());
}

#[test]
fn bad_inputs_give_errors() {
    let cfg = config(
        &[3, 2],
        &[3],
        EncoderActivation::LeakyRelu,
        PaddingLocation::Causal,
        PaddingMode::Constant,
        false,
    );
    let s = setup(&cfg, 2, 2, 1, 6, 2);
    let weights = s.encoder.weights::<f64>(&s.params).unwrap();
    let mut ws = s.encoder.workspace::<f64>(6).unwrap();
    let mut x = s.x.clone();
    x[7] = f64::NAN;
    assert_eq!(
        s.encoder.forward(&weights, &x, 6, &mut ws),
        Err(EncoderError::NonFiniteInput {
            channel: 1,
            time: 1
        })
    );
    assert!(matches!(
        s.encoder.forward(&weights, &s.x[..11], 6, &mut ws),
        Err(EncoderError::Shape { .. })
    ));
    assert!(matches!(
        s.encoder.weights::<f64>(&s.params[..5]),
        Err(EncoderError::Shape { .. })
    ));
    let other = config(
        &[3, 2],
        &[4],
        EncoderActivation::LeakyRelu,
        PaddingLocation::Causal,
        PaddingMode::Constant,
        false,
    );
    let t = setup(&other, 2, 2, 1, 6, 2);
    let mut other_ws = t.encoder.workspace::<f64>(6).unwrap();
    assert_eq!(
        s.encoder.forward(&weights, &s.x, 6, &mut other_ws),
        Err(EncoderError::WorkspaceMismatch)
    );
    s.encoder.forward(&weights, &s.x, 6, &mut ws).unwrap();
    let mut grad = vec![0.0; s.params.len()];
    assert!(matches!(
        s.encoder
            .backward(&weights, &mut ws, &[0.0; 3], &[0.0; 12], &mut grad),
        Err(EncoderError::Shape { what: "d_mean", .. })
    ));
}

/// Batched results equal the single-sequence ones bit for bit and do not depend on the thread count.
#[test]
fn batched_results_are_deterministic() {
    let cfg = config(
        &[5, 3, 1],
        &[6, 4],
        EncoderActivation::Gelu,
        PaddingLocation::Causal,
        PaddingMode::Circular,
        false,
    );
    let s = setup(&cfg, 4, 2, 6, 25, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let coefs: Vec<f64> = (0..2 * s.n_seq * 2 * 25)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| loss_and_grad(&s, &s.params, &coefs, true))
    };
    let (loss1, grad1) = run(1);
    let (loss2, grad2) = run(2);
    let (loss3, grad3) = run(3);
    assert_eq!(loss1.to_bits(), loss2.to_bits());
    assert_eq!(loss1.to_bits(), loss3.to_bits());
    assert_eq!(grad1, grad2);
    assert_eq!(grad1, grad3);
    // Single-sequence entry points, summed in sequence order, give the same gradient.
    let weights = s.encoder.weights::<f64>(&s.params).unwrap();
    let mut ws = s.encoder.workspace::<f64>(25).unwrap();
    let mut grad = vec![0.0; s.params.len()];
    let n_out = 2 * 25;
    for (i, x) in s.x.chunks_exact(4 * 25).enumerate() {
        s.encoder.forward(&weights, x, 25, &mut ws).unwrap();
        s.encoder
            .backward(
                &weights,
                &mut ws,
                &coefs[2 * i * n_out..(2 * i + 1) * n_out],
                &coefs[(2 * i + 1) * n_out..(2 * i + 2) * n_out],
                &mut grad,
            )
            .unwrap();
    }
    assert_eq!(grad, grad1);
    // Workspace-level backward + accumulate in sequence order: same gradient again.
    let mut grad = vec![0.0; s.params.len()];
    for (i, x) in s.x.chunks_exact(4 * 25).enumerate() {
        s.encoder.forward(&weights, x, 25, &mut ws).unwrap();
        let (d_mean, d_logvar) = ws.output_grads_mut();
        d_mean.copy_from_slice(&coefs[2 * i * n_out..(2 * i + 1) * n_out]);
        d_logvar.copy_from_slice(&coefs[(2 * i + 1) * n_out..(2 * i + 2) * n_out]);
        s.encoder.backward_to_workspace(&weights, &mut ws).unwrap();
        s.encoder.accumulate_grad(&ws, &mut grad).unwrap();
    }
    assert_eq!(grad, grad1);
}

/// The encoder reads the first dim_x rows and t_in columns of a wider (rows, row_stride) array.
#[test]
fn row_stride_selects_held_in_channels_and_steps() {
    let cfg = config(
        &[3, 2],
        &[3],
        EncoderActivation::Gelu,
        PaddingLocation::Causal,
        PaddingMode::Replicate,
        false,
    );
    let s = setup(&cfg, 2, 2, 1, 6, 4);
    let weights = s.encoder.weights::<f64>(&s.params).unwrap();
    let mut ws = s.encoder.workspace::<f64>(6).unwrap();
    s.encoder.forward(&weights, &s.x, 6, &mut ws).unwrap();
    let want = ws.mean().to_vec();
    // Same data inside a (3 channels, 9 steps) array: extra channel and t_forward = 3 steps.
    let mut wide = vec![99.0; 3 * 9];
    for c in 0..2 {
        wide[c * 9..c * 9 + 6].copy_from_slice(&s.x[c * 6..c * 6 + 6]);
    }
    s.encoder.forward(&weights, &wide, 9, &mut ws).unwrap();
    assert_eq!(ws.mean(), &want[..]);
}
