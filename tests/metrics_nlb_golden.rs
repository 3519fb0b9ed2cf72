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
