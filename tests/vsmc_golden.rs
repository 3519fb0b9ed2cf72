//! Golden cases of the reference VSMC (tests/fixtures/vsmc, see its README): replaying the
//! recorded draws, our loss, per-step log weights, ancestors and every gradient match the
//! reference's float64 values to 1e-9, and with the transition kernels in f32
//! (`vsmc.precision: f32`) the reference's float32 run of each case to 1e-5 (gradients 1e-4).

use std::path::{Path, PathBuf};

use lowrank_smc::inference::draws::{RecordedNoise, ResampleDraws, TrialDraws};
use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::inference::optimal::{optimal_vsmc, VsmcOptions};
use lowrank_smc::inference::smc::{smc_vsmc, SmcProposal};
use lowrank_smc::model::encoder::{CnnEncoder, EncoderConfig};
use lowrank_smc::model::lowrank::ModelConfig;
use lowrank_smc::model::Sequences;
use lowrank_smc::train::params::ParamLayout;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vsmc")
        .join(name)
}

struct Case {
    config: ModelConfig,
    function: String,
    encoder: Option<CnnEncoder>,
    layout: ParamLayout,
    params: Vec<f64>,
    data: Sequences<f64>,
    noise: RecordedNoise,
    k: usize,
    t_forward: usize,
    loss: f64,
    log_w: Vec<f64>, // (steps, batch, K)
    ancestors: Vec<i64>,
    grads: Vec<(String, Vec<f64>)>,
}

fn attr_str(f: &hdf5::File, name: &str) -> String {
    let a = f.attr(name).unwrap();
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
        return s.as_str().to_string();
    }
    let s: hdf5::types::VarLenAscii = a.read_scalar().unwrap();
    s.as_str().to_string()
}

fn load(name: &str) -> Case {
    let f = hdf5::File::open(fixture(name)).unwrap();
    let vae: serde_json::Value = serde_json::from_str(&attr_str(&f, "vae_params_json")).unwrap();
    let tp: serde_json::Value =
        serde_json::from_str(&attr_str(&f, "training_params_json")).unwrap();
    let config = ModelConfig::from_reference_json(&vae).unwrap();
    let function = attr_str(&f, "function");
    let mut layout = config.layout();
    let encoder = if function == "filtering_posterior" {
        let enc: EncoderConfig = serde_json::from_value(vae["enc_params"].clone()).unwrap();
        Some(CnnEncoder::push_layout(&enc, &mut layout, config.dim_x, config.rank).unwrap())
    } else {
        None
    };
    let mut params = vec![0.0; layout.len()];
    for b in layout.blocks() {
        if b.is_empty() {
            continue;
        }
        let ds = f.dataset(&format!("params/{}", b.name)).unwrap();
        let v: Vec<f64> = ds.read_raw().unwrap();
        assert_eq!(v.len(), b.len(), "{}", b.name);
        params[b.range()].copy_from_slice(&v);
    }
    let x = f.dataset("data/x").unwrap();
    let shape = x.shape();
    let (nb, dx, tt) = (shape[0], shape[1], shape[2]);
    let xv: Vec<f64> = x.read_raw().unwrap();
    let u = f.dataset("data/u").unwrap();
    let du = u.shape()[1];
    let uv: Vec<f64> = u.read_raw().unwrap();
    let data = Sequences {
        n_sequences: nb,
        dim_x: dx,
        dim_u: du,
        n_time: tt,
        x: xv,
        u: uv,
    };
    let k = tp["k"].as_u64().unwrap() as usize;
    let t_forward = tp["t_forward"].as_u64().unwrap() as usize;
    let r = config.rank;
    // Draws in consumption order → per trial.
    let order: Vec<serde_json::Value> = serde_json::from_str(
        &f.group("draws")
            .unwrap()
            .attr("order_json")
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    )
    .unwrap();
    let mut eps = vec![Vec::new(); nb];
    let mut uniforms = vec![Vec::new(); nb];
    let mut anc = vec![Vec::new(); nb];
    let mut systematic = false;
    for ev in &order {
        let group = ev["group"].as_str().unwrap();
        let kind = ev["kind"].as_str().unwrap();
        match kind {
            "std_normal" => {
                let v: Vec<f64> = f
                    .dataset(&format!("{group}/value"))
                    .unwrap()
                    .read_raw()
                    .unwrap();
                if encoder.is_some() || function == "filtering_posterior_bootstrap" {
                    // (batch, R, K) → [k][r]
                    for b in 0..nb {
                        for kk in 0..k {
                            for q in 0..r {
                                eps[b].push(v[(b * r + q) * k + kk]);
                            }
                        }
                    }
                } else {
                    // (batch, K, R)
                    for b in 0..nb {
                        eps[b].extend_from_slice(&v[b * k * r..(b + 1) * k * r]);
                    }
                }
            }
            "uniform" => {
                systematic = true;
                let v: Vec<f64> = f
                    .dataset(&format!("{group}/value"))
                    .unwrap()
                    .read_raw()
                    .unwrap();
                for b in 0..nb {
                    uniforms[b].push(v[b]);
                }
            }
            "multinomial" => {
                let v: Vec<i64> = f
                    .dataset(&format!("{group}/value"))
                    .unwrap()
                    .read_raw()
                    .unwrap();
                for b in 0..nb {
                    anc[b].extend(v[b * k..(b + 1) * k].iter().map(|&a| a as usize));
                }
            }
            other => panic!("unexpected draw kind {other}"),
        }
    }
    let trials = (0..nb)
        .map(|b| TrialDraws {
            eps: eps[b].clone(),
            resample: if systematic {
                ResampleDraws::Systematic(uniforms[b].clone())
            } else {
                ResampleDraws::Ancestors(anc[b].clone())
            },
        })
        .collect();
    let loss: f64 = f.dataset("outputs/loss").unwrap().read_scalar().unwrap();
    let log_w: Vec<f64> = f.dataset("outputs/log_w").unwrap().read_raw().unwrap();
    let ancestors: Vec<i64> = f.dataset("outputs/ancestors").unwrap().read_raw().unwrap();
    let mut grads = Vec::new();
    for b in layout.blocks() {
        if !b.trainable || b.is_empty() {
            continue;
        }
        // The reference aliases the log-variance head's bias as `encoder.logvar`.
        let name = if b.name == "encoder.logvar_conv.bias" {
            "encoder.logvar"
        } else {
            b.name.as_str()
        };
        let g: Vec<f64> = f
            .dataset(&format!("grad/{name}"))
            .unwrap()
            .read_raw()
            .unwrap();
        grads.push((b.name.clone(), g));
    }
    Case {
        config,
        function,
        encoder,
        layout,
        params,
        data,
        noise: RecordedNoise { trials },
        k,
        t_forward,
        loss,
        log_w,
        ancestors,
        grads,
    }
}

/// Replays `case_XX.h5` in f64 (loss, log weights to 1e-9; gradients to 1e-8 of the block's
/// largest entry) and `case_XX_f32.h5`, the reference's float32 run of the same case, with our
/// transition kernels in f32 (loss and log weights to 1e-5, gradients to 1e-4 of the block's
/// largest entry: the fixture README's float32 tolerances). Ancestors exactly in both.
fn check(name: &str) {
    check_with(&format!("{name}.h5"), Precision::F64, 1e-9, 1e-8);
    let single = check_with(&format!("{name}_f32.h5"), Precision::F32, 1e-5, 1e-4);
    // The f32 kernels did run: the same float32 case in f64 arithmetic gives other bits.
    let double = check_with(&format!("{name}_f32.h5"), Precision::F64, 1e-5, 1e-4);
    assert_ne!(
        single.to_bits(),
        double.to_bits(),
        "{name}: f32 mode ran in f64"
    );
}

/// Checks one file; returns our loss.
fn check_with(name: &str, precision: Precision, tol: f64, grad_tol: f64) -> f64 {
    let c = load(name);
    let layout = &c.layout;
    let mut grad = vec![0.0; layout.len()];
    let options = VsmcOptions {
        n_particles: c.k,
        t_forward: c.t_forward,
        precision,
    };
    let out = match c.function.as_str() {
        "filtering_posterior_optimal_proposal" => optimal_vsmc(
            &c.config,
            &c.params,
            &c.data,
            &options,
            &c.noise,
            Some(&mut grad),
        ),
        "filtering_posterior" => smc_vsmc(
            &c.config,
            SmcProposal::Encoder(c.encoder.as_ref().unwrap()),
            &c.params,
            &c.data,
            &options,
            &c.noise,
            Some(&mut grad),
        ),
        "filtering_posterior_bootstrap" => smc_vsmc(
            &c.config,
            SmcProposal::Bootstrap,
            &c.params,
            &c.data,
            &options,
            &c.noise,
            Some(&mut grad),
        ),
        other => panic!("unknown function {other}"),
    }
    .unwrap();
    let nb = c.data.n_sequences;
    let tt = c.data.n_time;
    // log w (steps, batch, K)
    for t in 0..tt {
        for b in 0..nb {
            for kk in 0..c.k {
                let ours = out.log_w[b][t * c.k + kk];
                let theirs = c.log_w[(t * nb + b) * c.k + kk];
                assert!(
                    (ours - theirs).abs() <= tol * theirs.abs().max(1.0),
                    "{name} ({precision:?}): log_w[t={t}, b={b}, k={kk}] {ours} vs {theirs}"
                );
            }
        }
    }
    let n_res = tt - c.t_forward;
    for s in 0..n_res {
        for b in 0..nb {
            for kk in 0..c.k {
                assert_eq!(
                    out.ancestors[b][s * c.k + kk] as i64,
                    c.ancestors[(s * nb + b) * c.k + kk],
                    "{name} ({precision:?}): ancestor step {s} trial {b} particle {kk}"
                );
            }
        }
    }
    assert!(
        (out.loss - c.loss).abs() <= tol * c.loss.abs(),
        "{name} ({precision:?}): loss {} vs {}",
        out.loss,
        c.loss
    );
    for (block, theirs) in &c.grads {
        let b = layout.get(block).unwrap();
        let ours = &grad[b.range()];
        let scale = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (a, e)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                (a - e).abs() <= grad_tol * scale + 1e-10,
                "{name} ({precision:?}): grad {block}[{i}] {a} vs {e} (max |g| {scale})"
            );
        }
    }
    out.loss
}

#[test]
fn case_01_optimal_lowd_currents_systematic() {
    check("case_01");
}

#[test]
fn case_02_optimal_highd_currents_inputs_multinomial() {
    check("case_02");
}

#[test]
fn case_03_optimal_highd_affine_simulated_input() {
    check("case_03");
}

#[test]
fn case_10_optimal_lowd_affine_t_forward() {
    check("case_10");
}

#[test]
fn case_04_encoder_poisson_softplus_causal_circular() {
    check("case_04");
}

#[test]
fn case_05_encoder_gauss_affine_acausal_simulated_input_multinomial() {
    check("case_05");
}

#[test]
fn case_06_bootstrap_gauss_currents_full_noise() {
    check("case_06");
}

#[test]
fn case_07_bootstrap_poisson_exp_z_and_v_multinomial() {
    check("case_07");
}

#[test]
fn case_08_encoder_rates_windowed_constant_var() {
    check("case_08");
}

#[test]
fn case_09_encoder_poisson_affine_t_forward() {
    check("case_09");
}
