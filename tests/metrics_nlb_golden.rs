//! Golden tests of the NLB spike metrics against nlb_tools 0.0.4 (tests/fixtures/metrics/README.md).

use lowrank_smc::metrics::nlb::{bits_per_spike, concat_last_axis, neg_log_likelihood};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/metrics/metrics_subset.h5"
);

fn read(f: &hdf5::File, path: &str) -> (Vec<f64>, Vec<usize>) {
    let ds = f.dataset(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (ds.read_raw::<f64>().unwrap(), ds.shape())
}

fn attr(f: &hdf5::File, group: &str, name: &str) -> f64 {
    f.group(group)
        .unwrap()
        .attr(name)
        .unwrap()
        .read_scalar()
        .unwrap()
}

#[test]
fn nlb_spike_metrics_match_reference() {
    let f = hdf5::File::open(FIXTURE).unwrap();
    let sub = "nlb/evaluate_mc_maze_20/submission/mc_maze_20";
    let tgt = "nlb/evaluate_mc_maze_20/target/mc_maze_20";
    let (rates, shape) = read(&f, &format!("{sub}/eval_rates_heldout"));
    let (spikes, _) = read(&f, &format!("{tgt}/eval_spikes_heldout"));
    let n_out = shape[2];
    let mut failures = Vec::new();
    let mut check = |name: &str, ours: f64, reference: f64| {
        let rel = (ours - reference).abs() / reference.abs();
        println!("{name}: ours {ours} ref {reference} rel {rel:.2e}");
        if rel > 1e-10 {
            failures.push(format!("{name}: rel {rel:.2e}"));
        }
    };
    let co_bps = bits_per_spike(&rates, &spikes, n_out).unwrap();
    check(
        "co-bps",
        co_bps,
        attr(&f, "nlb/evaluate_mc_maze_20", "co-bps"),
    );
    let nll = neg_log_likelihood(&rates, &spikes).unwrap();
    check(
        "nll (rates hold one 0)",
        nll,
        attr(&f, "nlb/components", "nll"),
    );
    let (with_nan, _) = read(&f, "nlb/components/spikes_with_nan");
    let bps_nan = bits_per_spike(&rates, &with_nan, n_out).unwrap();
    check(
        "bps_with_nan_spikes",
        bps_nan,
        attr(&f, "nlb/components", "bps_with_nan_spikes"),
    );
    let (r_in, s_in) = (
        read(&f, &format!("{sub}/eval_rates_heldin_forward")),
        read(&f, &format!("{tgt}/eval_spikes_heldin_forward")).0,
    );
    let (r_out, s_out) = (
        read(&f, &format!("{sub}/eval_rates_heldout_forward")).0,
        read(&f, &format!("{tgt}/eval_spikes_heldout_forward")).0,
    );
    let n_in = r_in.1[2];
    let rates_fwd = concat_last_axis(&r_in.0, n_in, &r_out, n_out).unwrap();
    let spikes_fwd = concat_last_axis(&s_in, n_in, &s_out, n_out).unwrap();
    let fp_bps = bits_per_spike(&rates_fwd, &spikes_fwd, n_in + n_out).unwrap();
    check(
        "fp-bps",
        fp_bps,
        attr(&f, "nlb/evaluate_mc_maze_20", "fp-bps"),
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");
}

#[test]
fn velocity_decoder_matches_reference() {
    use lowrank_smc::metrics::nlb::fit_and_eval_decoder;
    let f = hdf5::File::open(FIXTURE).unwrap();
    let sub = "nlb/evaluate_mc_maze_20/submission/mc_maze_20";
    let tgt = "nlb/evaluate_mc_maze_20/target/mc_maze_20";
    let (tr_in, s_in) = read(&f, &format!("{sub}/train_rates_heldin"));
    let (tr_out, s_out) = read(&f, &format!("{sub}/train_rates_heldout"));
    let (ev_in, _) = read(&f, &format!("{sub}/eval_rates_heldin"));
    let (ev_out, _) = read(&f, &format!("{sub}/eval_rates_heldout"));
    let (train_y, sy) = read(&f, &format!("{tgt}/train_behavior"));
    let (eval_y, _) = read(&f, &format!("{tgt}/eval_behavior"));
    let (n_in, n_out, q) = (s_in[2], s_out[2], sy[2]);
    let train_x = concat_last_axis(&tr_in, n_in, &tr_out, n_out).unwrap();
    let eval_x = concat_last_axis(&ev_in, n_in, &ev_out, n_out).unwrap();
    let grid =
        fit_and_eval_decoder(&train_x, &train_y, &eval_x, &eval_y, n_in + n_out, q, true).unwrap();
    let plain =
        fit_and_eval_decoder(&train_x, &train_y, &eval_x, &eval_y, n_in + n_out, q, false).unwrap();
    let (cv_ref, _) = read(&f, "nlb/components/gridsearch_mean_test_scores");
    let comp = "nlb/components";
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let e_grid = rel(grid.r2, attr(&f, comp, "decoder_r2_gridsearch"));
    let e_vel = rel(grid.r2, attr(&f, "nlb/evaluate_mc_maze_20", "vel R2"));
    let e_plain = rel(plain.r2, attr(&f, comp, "decoder_r2_alpha1e-2"));
    let e_cv = grid
        .cv_mean_scores
        .iter()
        .zip(&cv_ref)
        .map(|(a, b)| rel(*a, *b))
        .fold(0.0, f64::max);
    println!("decoder: grid rel {e_grid:.2e}, vel R2 rel {e_vel:.2e}, alpha 1e-2 rel {e_plain:.2e}, cv rel {e_cv:.2e}, best alpha {}", grid.alpha);
    assert_eq!(grid.alpha, attr(&f, comp, "gridsearch_best_alpha"));
    assert_eq!(grid.cv_mean_scores.len(), cv_ref.len());
    assert!(e_grid < 1e-8 && e_vel < 1e-8 && e_plain < 1e-8 && e_cv < 1e-8);
}

#[test]
fn psth_r2_matches_reference() {
    use lowrank_smc::metrics::nlb::eval_psth;
    let f = hdf5::File::open(FIXTURE).unwrap();
    let sub = "nlb/evaluate_mc_maze_20/submission/mc_maze_20";
    let tgt = "nlb/evaluate_mc_maze_20/target/mc_maze_20";
    let (psth, sp) = read(&f, &format!("{tgt}/psth"));
    let (ev_in, s_in) = read(&f, &format!("{sub}/eval_rates_heldin"));
    let (ev_out, s_out) = read(&f, &format!("{sub}/eval_rates_heldout"));
    let rates = concat_last_axis(&ev_in, s_in[2], &ev_out, s_out[2]).unwrap();
    let jitter: Vec<i64> = f
        .dataset(&format!("{tgt}/eval_jitter"))
        .unwrap()
        .read_raw()
        .unwrap();
    let conds: Vec<Vec<usize>> = (0..sp[0])
        .map(|c| {
            let idx: Vec<i64> = f
                .dataset(&format!("{tgt}/eval_cond_idx/{c}"))
                .unwrap()
                .read_raw()
                .unwrap();
            idx.iter().map(|&i| i as usize).collect()
        })
        .collect();
    let with_jitter = eval_psth(&psth, &rates, &conds, Some(&jitter), sp[1], sp[2]).unwrap();
    let without = eval_psth(&psth, &rates, &conds, None, sp[1], sp[2]).unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let e1 = rel(with_jitter, attr(&f, "nlb/evaluate_mc_maze_20", "psth R2"));
    let e2 = rel(without, attr(&f, "nlb/components", "psth_r2_no_jitter"));
    println!("psth R2 rel {e1:.2e}, no jitter rel {e2:.2e}");
    assert!(
        e1 < 1e-10 && e2 < 1e-10,
        "psth R2 rel {e1:.2e}, no jitter rel {e2:.2e}"
    );
}
