//! Golden tests against the reference smc_rnns metrics (tests/fixtures/metrics/README.md).

use lowrank_smc::metrics::{
    dstsp_with_draws, power_spectrum_hellinger, DhOptions, DstspDraws, DstspMode, DstspOptions,
    FreqCutoff, SeriesView,
};
use serde_json::Value;

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics");

fn index() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURE_DIR}/index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn file() -> hdf5::File {
    hdf5::File::open(format!("{FIXTURE_DIR}/metrics_subset.h5")).unwrap()
}

/// Read `/path[a:b]` (optional row slice) as f64 with its shape.
fn read(file: &hdf5::File, spec: &str) -> (Vec<f64>, Vec<usize>) {
    let (path, slice) = match spec.find('[') {
        Some(i) => (&spec[..i], Some(&spec[i + 1..spec.len() - 1])),
        None => (spec, None),
    };
    let ds = file.dataset(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut shape = ds.shape();
    let values: Vec<f64> = ds.read_raw::<f64>().unwrap();
    let row: usize = shape[1..].iter().product();
    match slice {
        Some(s) => {
            let (a, b) = s.split_once(':').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            shape[0] = b - a;
            (values[a * row..b * row].to_vec(), shape)
        }
        None => (values, shape),
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn dstsp_f64_golden_entries() {
    let idx = index();
    let f = file();
    let mut failures = Vec::new();
    let mut tested = 0;
    for (name, entry) in idx["dstsp"].as_object().unwrap() {
        let is_f32 = entry["dtype"] == "torch.float32";
        let (x_true, st) = read(&f, entry["x_true"].as_str().unwrap());
        let (x_gen, sg) = read(&f, entry["x_gen"].as_str().unwrap());
        let group = f.group(&format!("dstsp/{name}")).unwrap();
        let t_indices: Vec<i64> = group.dataset("t_indices").unwrap().read_raw().unwrap();
        let normals: Vec<f64> = group
            .dataset("normal_draws")
            .unwrap()
            .read_raw::<f64>()
            .unwrap();
        let kept: Vec<u8> = group.dataset("kept_mask").unwrap().read_raw().unwrap();
        let draws = DstspDraws {
            t_indices: t_indices.iter().map(|&t| t as usize).collect(),
            normals,
        };
        let expected = entry["value"].as_f64().unwrap();
        let scale = entry["scale"].as_f64().unwrap();
        let vt = SeriesView::new("x_true", &x_true, st[0], st[1]).unwrap();
        let vg = SeriesView::new("x_gen", &x_gen, sg[0], sg[1]).unwrap();
        // f32 entries: the reference ran in float32 (README: compare only with f32 emulation).
        let (modes, tol): (&[DstspMode], f64) = if is_f32 {
            (&[DstspMode::ReferenceUnderflowF32], 1e-6)
        } else {
            (&[DstspMode::ReferenceUnderflow, DstspMode::LogSpace], 1e-9)
        };
        for &mode in modes {
            let opts = DstspOptions {
                scale,
                mode,
                ..Default::default()
            };
            let r = dstsp_with_draws(vt, vg, &opts, &draws).unwrap();
            let e = rel(r.value, expected);
            let kept_ok = r.kept_mask.iter().zip(&kept).all(|(a, &b)| *a == (b != 0));
            println!(
                "dstsp {name} {mode:?}: ours {} ref {expected} rel {e:.2e}",
                r.value
            );
            if e > tol || !kept_ok {
                failures.push(format!(
                    "{name} {mode:?}: rel {e:.2e}, kept_mask equal {kept_ok}"
                ));
            }
        }
        tested += 1;
    }
    assert_eq!(tested, 9, "expected nine D_stsp entries (6 f64, 3 f32)");
    assert!(failures.is_empty(), "failures: {failures:#?}");
}

#[test]
fn dh_golden_entries() {
    let idx = index();
    let f = file();
    let mut failures = Vec::new();
    let mut tested = 0;
    for (name, entry) in idx["dh"].as_object().unwrap() {
        let (x_true, st) = read(&f, entry["x_true"].as_str().unwrap());
        let (x_gen, _) = read(&f, entry["x_gen"].as_str().unwrap());
        let (n_traj, n_time, n_dim) = if st.len() == 3 {
            (st[0], st[1], st[2])
        } else {
            (1, st[0], st[1])
        };
        let opts = DhOptions {
            smoothing: entry["smoothing"].as_f64().unwrap(),
            cutoff: FreqCutoff::ReferenceSlice(entry["freq_cutoff"].as_i64().unwrap()),
        };
        let r = power_spectrum_hellinger(&x_true, &x_gen, n_traj, n_time, n_dim, &opts).unwrap();
        let expected = entry["value"].as_f64().unwrap();
        let e = rel(r.value, expected);
        let per_dim: Vec<f64> = f
            .dataset(&format!("dh/{name}/per_dim"))
            .unwrap()
            .read_raw()
            .unwrap();
        let per_dim_err = r
            .per_dim
            .iter()
            .zip(&per_dim)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "dh {name}: ours {} ref {expected} rel {e:.2e} per-dim abs {per_dim_err:.2e}",
            r.value
        );
        // The reference ran the f32 entry in float32; we compute in f64 (README: f32 paths to 1e-6).
        let (tol_value, tol_per_dim) = if entry["input_dtype"] == "float32" {
            (1e-6, 1e-6)
        } else {
            (1e-9, 1e-12)
        };
        if e > tol_value || per_dim_err > tol_per_dim || per_dim.len() != r.per_dim.len() {
            failures.push(format!(
                "{name}: rel {e:.2e}, per-dim abs {per_dim_err:.2e}"
            ));
        }
        tested += 1;
    }
    assert_eq!(tested, 15);
    assert!(failures.is_empty(), "failures: {failures:#?}");
}

#[test]
fn eval_pipeline_smoothing_matches_reference() {
    use lowrank_smc::metrics::smooth_and_zscore;
    let f = file();
    // The reference cast x_gen to float32 and ran convolve1d(hann(15)) + zscore in float32.
    let (x_gen, shape) = read(&f, "/inputs/pair_a/x_gen");
    let x_gen_f32: Vec<f64> = x_gen.iter().map(|&v| v as f32 as f64).collect();
    let view = SeriesView::new("x_gen", &x_gen_f32, shape[0], shape[1]).unwrap();
    let ours = smooth_and_zscore(view, 15).unwrap();
    let (reference, _) = read(&f, "/eval_pipeline/pair_a/smoothed_zscored_gen");
    // The reference is float32: compare relative to the series' scale (max |value|), 1e-6.
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max);
    println!("eval_pipeline pair_a smoothed: worst |diff|/max|ref| {worst:.2e}");
    assert!(worst < 1e-6, "worst scaled error {worst:.2e}");
}

#[test]
fn eval_pipeline_scores_match_reference() {
    for (pair, gen_path, true_path) in [
        ("pair_a", "/inputs/pair_a/x_gen", "/inputs/pair_a/x_true"),
        (
            "pair_b_eeg_vs_perturbed",
            "/inputs/pair_b/x_gen",
            "/inputs/eeg/x",
        ),
    ] {
        eval_pipeline_case(pair, gen_path, true_path);
    }
}

fn eval_pipeline_case(pair: &str, gen_path: &str, true_path: &str) {
    use lowrank_smc::metrics::smooth_and_zscore;
    let f = file();
    let group = f.group(&format!("eval_pipeline/{pair}")).unwrap();
    let attr = |name: &str| -> f64 { group.attr(name).unwrap().read_scalar().unwrap() };
    // The reference cast both series to float32 and ran everything in float32.
    let (x_gen, shape) = read(&f, gen_path);
    let (x_true, _) = read(&f, true_path);
    let to_f32 = |v: &[f64]| -> Vec<f64> { v.iter().map(|&x| x as f32 as f64).collect() };
    let (x_gen, x_true) = (to_f32(&x_gen), to_f32(&x_true));
    let (n, d) = (shape[0], shape[1]);
    let gen = smooth_and_zscore(SeriesView::new("x_gen", &x_gen, n, d).unwrap(), 15).unwrap();
    let t_indices: Vec<i64> = group.dataset("t_indices").unwrap().read_raw().unwrap();
    let normals: Vec<f64> = group.dataset("normal_draws").unwrap().read_raw().unwrap();
    let draws = DstspDraws {
        t_indices: t_indices.iter().map(|&t| t as usize).collect(),
        normals,
    };
    let opts = DstspOptions {
        mode: DstspMode::ReferenceUnderflowF32,
        ..Default::default()
    };
    let vt = SeriesView::new("x_true", &x_true, n, d).unwrap();
    let vg = SeriesView::new("gen", &gen, n, d).unwrap();
    let dstsp = dstsp_with_draws(vt, vg, &opts, &draws).unwrap().value;
    let dh_opts = DhOptions {
        smoothing: 20.0,
        cutoff: FreqCutoff::ReferenceSlice(-1),
    };
    let dh = power_spectrum_hellinger(&x_true, &gen, 1, n, d, &dh_opts)
        .unwrap()
        .value;
    let (e_stsp, e_h) = (rel(dstsp, attr("d_stsp")), rel(dh, attr("d_h")));
    println!("eval_pipeline {pair}: D_stsp rel {e_stsp:.2e}, D_H rel {e_h:.2e}");
    assert!(
        e_stsp < 1e-5 && e_h < 1e-6,
        "{pair}: D_stsp rel {e_stsp:.2e}, D_H rel {e_h:.2e}"
    );
}

#[test]
fn fft_smoothed_small_matches_reference() {
    use lowrank_smc::metrics::dh::fft_smoothed;
    let f = file();
    let (x, _) = read(&f, "/dh/fft_smoothed_small/x");
    let (expected, _) = read(&f, "/dh/fft_smoothed_small/out");
    let sigma: f64 = f
        .group("dh/fft_smoothed_small")
        .unwrap()
        .attr("smoothing")
        .unwrap()
        .read_scalar()
        .unwrap();
    let mut planner = realfft::RealFftPlanner::new();
    let ours = fft_smoothed(&x, sigma, &mut planner).unwrap();
    assert_eq!(ours.len(), expected.len());
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "worst abs {worst:.2e}");
}
