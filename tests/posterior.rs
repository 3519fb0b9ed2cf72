//! Posterior means (SPEC §2.8) against the exact answer: on a linear-Gaussian model (identity
//! nonlinearity, affine Gaussian readout) the filtering means must match the Kalman filter and
//! the backward-simulation smoothing means the Rauch–Tung–Striebel smoother.

use lowrank_smc::inference::objective::{ModelWithProposal, ProposalKind};
use lowrank_smc::inference::posterior::{posterior, PosteriorOptions};
use lowrank_smc::model::lowrank::{noise_cholesky, ModelConfig, NoiseKind, Nonlinearity};
use lowrank_smc::model::Sequences;
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const R: usize = 2;
const N: usize = 3;
const DX: usize = 3;
const T: usize = 25;

struct Linear {
    config: ModelConfig,
    params: Vec<f64>,
    a: DMatrix<f64>,
    c: DVector<f64>,
    q: DMatrix<f64>,
    b: DMatrix<f64>, // dx × R
    bias: DVector<f64>,
    rx: DMatrix<f64>,
    mu0: DVector<f64>,
    p0: DMatrix<f64>,
}

fn set(params: &mut [f64], config: &ModelConfig, name: &str, values: &[f64]) {
    let block = config.layout().get(name).expect("block").clone();
    assert_eq!(block.range().len(), values.len(), "{name}");
    params[block.range()].copy_from_slice(values);
}

/// z' = a z + n (M z − h) + ε, x = Bᵀ z + bias + η, with the model's own parameter layout.
fn linear_model(noise: NoiseKind) -> Linear {
    let mut config = ModelConfig::eeg(DX);
    config.rank = R;
    config.n_units = N;
    config.nonlinearity = Nonlinearity::Identity;
    config.noise_z = noise;
    config.noise_z0 = noise;
    let mut params = config.init_params(3).expect("init");
    let decay: f64 = 0.8;
    // decay = exp(−exp(θ)) → θ = ln(−ln decay)
    set(
        &mut params,
        &config,
        "rnn.transition.decay_param",
        &[(-decay.ln()).ln()],
    );
    let m = [0.5, 0.0, 0.0, 0.5, 0.3, -0.3]; // N × R
    let nn = [0.4, -0.6, 0.2, 0.6, 0.3, -0.2]; // R × N
    let h = [0.1, -0.2, 0.05];
    set(&mut params, &config, "rnn.transition.m", &m);
    set(&mut params, &config, "rnn.transition.n", &nn);
    set(&mut params, &config, "rnn.transition.h", &h);
    let bobs = [1.0, 0.0, 0.7, 0.0, 1.0, -0.5]; // R × dx
    set(&mut params, &config, "rnn.observation.B", &bobs);
    set(
        &mut params,
        &config,
        "rnn.observation.Bias",
        &[0.2, -0.1, 0.0],
    );
    // Observation std 0.6 (raw = ln var).
    set(&mut params, &config, "rnn.R_x", &[(0.36f64).ln(); DX]);
    let (rz, rz0) = match noise {
        NoiseKind::Full => (
            vec![(0.09f64).ln(), 0.0, 0.05, (0.04f64).ln()],
            vec![(0.5f64).ln(), 0.0, 0.2, (0.3f64).ln()],
        ),
        _ => (
            vec![(0.09f64).ln(), (0.04f64).ln()],
            vec![(0.5f64).ln(), (0.3f64).ln()],
        ),
    };
    set(&mut params, &config, "rnn.R_z", &rz);
    set(&mut params, &config, "rnn.R_z_t0", &rz0);
    set(&mut params, &config, "rnn.initial_state", &[0.5, -0.3]);
    let mm = DMatrix::from_row_slice(N, R, &m);
    let nm = DMatrix::from_row_slice(R, N, &nn);
    let a = DMatrix::identity(R, R) * decay + &nm * &mm;
    let c = -(&nm * DVector::from_row_slice(&h));
    let chol = |raw: &[f64]| {
        let l = DMatrix::from_row_slice(R, R, &noise_cholesky(noise, raw, R));
        &l * l.transpose()
    };
    Linear {
        q: chol(&rz),
        p0: chol(&rz0),
        config,
        params,
        a,
        c,
        b: DMatrix::from_row_slice(R, DX, &bobs).transpose(),
        bias: DVector::from_row_slice(&[0.2, -0.1, 0.0]),
        rx: DMatrix::identity(DX, DX) * 0.36,
        mu0: DVector::from_row_slice(&[0.5, -0.3]),
    }
}

fn simulate(m: &Linear, n_seq: usize, seed: u64) -> Sequences<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut noise = |cov: &DMatrix<f64>| {
        let l = cov.clone().cholesky().expect("pd").l();
        let e = DVector::from_fn(cov.nrows(), |_, _| StandardNormal.sample(&mut rng));
        l * e
    };
    let mut x = vec![0.0; n_seq * DX * T];
    for s in 0..n_seq {
        let mut z = &m.mu0 + noise(&m.p0);
        for t in 0..T {
            if t > 0 {
                z = &m.a * &z + &m.c + noise(&m.q);
            }
            let obs = &m.b * &z + &m.bias + noise(&m.rx);
            for j in 0..DX {
                x[(s * DX + j) * T + t] = obs[j];
            }
        }
    }
    Sequences {
        n_sequences: n_seq,
        dim_x: DX,
        dim_u: 0,
        n_time: T,
        x,
        u: Vec::new(),
    }
}

/// Kalman filter and RTS smoother means and variances (per step, R each) of sequence `s`.
#[allow(clippy::type_complexity)]
fn kalman(
    m: &Linear,
    data: &Sequences<f64>,
    s: usize,
) -> (Vec<DVector<f64>>, Vec<DVector<f64>>, Vec<DVector<f64>>) {
    let x = data.x_of(s);
    let (mut mf, mut pf, mut mp, mut pp) = (vec![], vec![], vec![], vec![]);
    for t in 0..T {
        let (mpred, ppred) = if t == 0 {
            (m.mu0.clone(), m.p0.clone())
        } else {
            (
                &m.a * &mf[t - 1] + &m.c,
                &m.a * &pf[t - 1] * m.a.transpose() + &m.q,
            )
        };
        let xt = DVector::from_fn(DX, |j, _| x[j * T + t]);
        let sm = &m.b * &ppred * m.b.transpose() + &m.rx;
        let gain = &ppred * m.b.transpose() * sm.try_inverse().expect("invertible");
        let innov = xt - (&m.b * &mpred + &m.bias);
        mf.push(&mpred + &gain * innov);
        pf.push((DMatrix::identity(R, R) - &gain * &m.b) * &ppred);
        mp.push(mpred);
        pp.push(ppred);
    }
    let mut ms = mf.clone();
    let mut ps = pf.clone();
    for t in (0..T - 1).rev() {
        let g = &pf[t] * m.a.transpose() * pp[t + 1].clone().try_inverse().expect("invertible");
        ms[t] = &mf[t] + &g * (&ms[t + 1] - &mp[t + 1]);
        ps[t] = &pf[t] + &g * (&ps[t + 1] - &pp[t + 1]) * g.transpose();
    }
    let sd = ps
        .iter()
        .map(|p| DVector::from_fn(R, |i, _| p[(i, i)].sqrt()))
        .collect();
    (mf, ms, sd)
}

fn check(proposal: ProposalKind, noise: NoiseKind, tol_mean: f64) {
    let m = linear_model(noise);
    let data = simulate(&m, 3, 11);
    let model = ModelWithProposal::new(m.config.clone(), proposal, None).expect("model");
    let run = |smooth: bool| {
        posterior(
            &model,
            &m.params,
            &data,
            &PosteriorOptions {
                n_particles: 400,
                n_repeats: 4,
                smooth,
                seed: 5,
            },
        )
        .expect("posterior")
    };
    let (filtered, smoothed) = (run(false), run(true));
    let (mut err_f, mut err_s, mut gap, mut count) = (0.0, 0.0, 0.0, 0.0);
    for s in 0..data.n_sequences {
        let (kf, rts, sd) = kalman(&m, &data, s);
        for t in 0..T {
            for q in 0..R {
                let i = (s * R + q) * T + t;
                let scale = sd[t][q];
                err_f += ((filtered.latents[i] - kf[t][q]) / scale).abs();
                err_s += ((smoothed.latents[i] - rts[t][q]) / scale).abs();
                gap += ((rts[t][q] - kf[t][q]) / scale).abs();
                count += 1.0;
            }
            // The identity link makes the rates exactly Bᵀ E[z] + bias.
            for j in 0..DX {
                let want: f64 = (0..R)
                    .map(|q| m.b[(j, q)] * smoothed.latents[(s * R + q) * T + t])
                    .sum::<f64>()
                    + m.bias[j];
                let got = smoothed.rates[(s * DX + j) * T + t];
                assert!(
                    (got - want).abs() < 1e-9,
                    "rates[{s},{j},{t}] {got} vs {want}"
                );
            }
        }
    }
    let (err_f, err_s, gap) = (err_f / count, err_s / count, gap / count);
    eprintln!(
        "{proposal:?}: filter error {err_f:.4} sd, smoother error {err_s:.4} sd, gap {gap:.3} sd"
    );
    // The test means something only if smoothing moves the means away from filtering.
    assert!(
        gap > 0.25,
        "{proposal:?}: smoother and filter differ by only {gap:.3} sd"
    );
    assert!(
        err_f < tol_mean,
        "{proposal:?}: filtering means off the Kalman filter by {err_f:.3} posterior sd on average"
    );
    assert!(
        err_s < tol_mean,
        "{proposal:?}: smoothing means off the RTS smoother by {err_s:.3} posterior sd on average \
         (the filter/smoother gap is {gap:.3})"
    );
}

#[test]
fn optimal_proposal_matches_kalman_filter_and_rts_smoother() {
    check(ProposalKind::Optimal, NoiseKind::Full, 0.08);
}

#[test]
fn bootstrap_proposal_matches_kalman_filter_and_rts_smoother() {
    check(ProposalKind::Bootstrap, NoiseKind::Diag, 0.12);
}

#[test]
fn bad_options_are_errors() {
    let m = linear_model(NoiseKind::Full);
    let data = simulate(&m, 1, 1);
    let model =
        ModelWithProposal::new(m.config.clone(), ProposalKind::Optimal, None).expect("model");
    let opts = |k, rep| PosteriorOptions {
        n_particles: k,
        n_repeats: rep,
        smooth: true,
        seed: 1,
    };
    let e = posterior(&model, &m.params, &data, &opts(0, 1)).expect_err("K = 0");
    assert!(e.to_string().contains("n_particles"), "{e}");
    let e = posterior(&model, &m.params, &data, &opts(5, 0)).expect_err("no repeats");
    assert!(e.to_string().contains("n_repeats"), "{e}");
    let narrow = Sequences {
        dim_x: 2,
        x: data.x[..2 * T].to_vec(),
        ..data.clone()
    };
    let e = posterior(&model, &m.params, &narrow, &opts(5, 1)).expect_err("two channels");
    assert!(e.to_string().contains("channels"), "{e}");
    let e = posterior(&model, &m.params[1..], &data, &opts(5, 1)).expect_err("short params");
    assert!(e.to_string().contains("parameters"), "{e}");
}

/// `exec fit` (two epochs) then `exec posterior` through the binary: both outputs written with
/// the data's shape; data of the wrong width is refused with a message naming the file.
#[test]
fn posterior_stage_through_the_cli() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let m = linear_model(NoiseKind::Full);
    let data = simulate(&m, 4, 2);
    lowrank_smc::data::sequences_io::write_sequences(
        &d.join("data.h5"),
        &data,
        &[(
            "data_source",
            "simulated (linear-Gaussian test model)".into(),
        )],
    )
    .expect("write data");
    std::fs::write(
        d.join("fit.yaml"),
        "variant: linear\n\
         model: {rank: 2, n_units: 3, dim_x: 3, nonlinearity: identity, noise_z: full,\n\
         \x20 noise_z0: full, noise_x: diag, observation: affine, readout_from: z,\n\
         \x20 likelihood: gaussian}\n\
         vsmc: {proposal: optimal, n_particles: 8}\n\
         train: {n_epochs: 2, batch_size: 2, lr: 1.0e-3, lr_end: 1.0e-4, seed: 1}\n",
    )
    .expect("write params");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
            .current_dir(d)
            .args(args)
            .output()
            .expect("binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = run(&[
        "exec",
        "fit",
        "--params",
        "fit.yaml",
        "--input",
        "data=data.h5",
        "--out-dir",
        "fit",
    ]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&[
        "exec",
        "posterior",
        "--set",
        "seed=3",
        "--set",
        "n_particles=16",
        "--set",
        "n_repeats=2",
        "--input",
        "model=fit/model.h5",
        "--input",
        "data=data.h5",
        "--out-dir",
        "post",
    ]);
    assert_eq!(code, 0, "{text}");
    let lat = lowrank_smc::data::sequences_io::read_sequences(&d.join("post/latents.h5"))
        .expect("latents");
    let rates =
        lowrank_smc::data::sequences_io::read_sequences(&d.join("post/rates.h5")).expect("rates");
    assert_eq!((lat.n_sequences, lat.dim_x, lat.n_time), (4, R, T));
    assert_eq!((rates.n_sequences, rates.dim_x, rates.n_time), (4, DX, T));
    assert!(lat.x.iter().chain(&rates.x).all(|v| v.is_finite()));
    // Two channels instead of three.
    let narrow = Sequences {
        dim_x: 2,
        x: data.x[..4 * 2 * T].to_vec(),
        ..data.clone()
    };
    lowrank_smc::data::sequences_io::write_sequences(&d.join("narrow.h5"), &narrow, &[])
        .expect("write narrow");
    let (code, text) = run(&[
        "exec",
        "posterior",
        "--set",
        "seed=3",
        "--input",
        "model=fit/model.h5",
        "--input",
        "data=narrow.h5",
        "--out-dir",
        "bad",
    ]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("narrow.h5") && text.contains("channels"),
        "{text}"
    );
    assert!(!d.join("bad/latents.h5").exists(), "nothing half-written");
}

/// More sequences than one filtering chunk (32): the sequences of the second chunk get their
/// own filters and are as close to the RTS smoother as those of the first.
#[test]
fn sequences_beyond_the_first_chunk_are_smoothed_too() {
    let m = linear_model(NoiseKind::Full);
    let data = simulate(&m, 36, 21);
    let model =
        ModelWithProposal::new(m.config.clone(), ProposalKind::Optimal, None).expect("model");
    let post = posterior(
        &model,
        &m.params,
        &data,
        &PosteriorOptions {
            n_particles: 200,
            n_repeats: 1,
            smooth: true,
            seed: 9,
        },
    )
    .expect("posterior");
    let mean_err = |seqs: std::ops::Range<usize>| {
        let (mut e, mut n) = (0.0, 0.0);
        for s in seqs {
            let (_, rts, sd) = kalman(&m, &data, s);
            for t in 0..T {
                for q in 0..R {
                    e += ((post.latents[(s * R + q) * T + t] - rts[t][q]) / sd[t][q]).abs();
                    n += 1.0;
                }
            }
        }
        e / n
    };
    let (first, second) = (mean_err(0..32), mean_err(32..36));
    eprintln!("smoother error: first chunk {first:.4} sd, second chunk {second:.4} sd");
    // One repeat of K = 200: ≈ 0.17 sd each (the filter/smoother gap is ≈ 0.75 sd).
    assert!(
        first < 0.25 && second < 0.25 && second < 1.5 * first,
        "first {first:.3}, second {second:.3}"
    );
}
