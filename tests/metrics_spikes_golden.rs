//! Golden tests of the spike statistics against smc_rnns `calc_stats.py` (tests/fixtures/metrics/README.md).

use lowrank_smc::metrics::spikes::{
    calc_isi_stats, calc_isi_stats_per_trial, correlation_matrix, estimate_cross_correlation,
    mean_rates, pearson, upper_triangle,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/metrics/metrics_subset.h5"
);

fn read(f: &hdf5::File, path: &str) -> (Vec<f64>, Vec<usize>) {
    let ds = f.dataset(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (ds.read_raw::<f64>().unwrap(), ds.shape())
}

/// Relative 1e-12 with NaN positions equal; returns a failure message or None.
fn compare(name: &str, ours: &[f64], reference: &[f64]) -> Option<String> {
    if ours.len() != reference.len() {
        return Some(format!(
            "{name}: length {} vs {}",
            ours.len(),
            reference.len()
        ));
    }
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        if a.is_nan() != b.is_nan() {
            return Some(format!("{name}[{i}]: NaN mismatch ours {a} ref {b}"));
        }
        if !a.is_nan() && (a - b).abs() > 1e-12 * b.abs().max(1e-300) && (a - b).abs() > 1e-15 {
            return Some(format!("{name}[{i}]: ours {a} ref {b}"));
        }
    }
    None
}

#[test]
fn spike_statistics_match_reference() {
    let f = hdf5::File::open(FIXTURE).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (case, dt) in [
        ("dt1", 1.0),
        ("dt0.01_hc2", 0.01),
        ("dt1over39_hc11", 1.0 / 39.0),
    ] {
        for input in ["spikes", "spikes_gen"] {
            let (s, shape) = read(&f, &format!("inputs/spikes/{input}"));
            let st = calc_isi_stats(&s, shape[0], shape[1], dt).unwrap();
            let base = format!("spike_stats/calc_isi_stats/{case}/{input}");
            for (field, ours) in [("cv", &st.cv), ("mean", &st.mean), ("std", &st.std)] {
                let (r, _) = read(&f, &format!("{base}/{field}"));
                failures.extend(compare(&format!("{base}/{field}"), ours, &r));
                checked += 1;
            }
        }
    }
    let (trials, shape) = read(&f, "inputs/spikes/spikes_trials");
    let st = calc_isi_stats_per_trial(&trials, shape[0], shape[1], shape[2], 0.02, 1).unwrap();
    for (field, ours) in [("cv", &st.cv), ("mean", &st.mean), ("std", &st.std)] {
        let (r, _) = read(&f, &format!("spike_stats/calc_isi_stats_per_trial/{field}"));
        failures.extend(compare(
            &format!("calc_isi_stats_per_trial/{field}"),
            ours,
            &r,
        ));
        checked += 1;
    }
    let (s, shape) = read(&f, "inputs/spikes/spikes");
    let (g, _) = read(&f, "inputs/spikes/spikes_gen");
    let n = shape[1];
    let c = correlation_matrix(&s, shape[0], n).unwrap();
    let cg = correlation_matrix(&g, shape[0], n).unwrap();
    let (ucorr, ucorr_gen) = (
        upper_triangle(&c, n).unwrap(),
        upper_triangle(&cg, n).unwrap(),
    );
    for (name, ours) in [
        ("corr", &c),
        ("corr_gen", &cg),
        ("upper", &ucorr),
        ("upper_gen", &ucorr_gen),
    ] {
        let (r, _) = read(&f, &format!("spike_stats/calculate_correlation/{name}"));
        failures.extend(compare(name, ours, &r));
        checked += 1;
    }
    // index.json stores corr_of_upper as "NaN" (silent neurons make NaN entries).
    assert!(pearson(&ucorr, &ucorr_gen).unwrap().is_nan());
    let fr2 = mean_rates(&s, shape[0], n, 100.0).unwrap();
    let fr11 = mean_rates(&s, shape[0], n, 39.0).unwrap();
    let fr3 = mean_rates(&s, shape[0], n, 1.0).unwrap();
    for (name, ours) in [("fr_hc2", &fr2), ("fr_hc11", &fr11), ("mean_fig3", &fr3)] {
        let (r, _) = read(&f, &format!("spike_stats/firing_rates/{name}"));
        failures.extend(compare(name, ours, &r));
        checked += 1;
    }
    let frg = mean_rates(&g, shape[0], n, 100.0).unwrap();
    let corr_fr = pearson(&fr2, &frg).unwrap();
    let expected: f64 = f
        .group("spike_stats/firing_rates")
        .unwrap()
        .attr("corr_fr_spikes_vs_gen")
        .unwrap()
        .read_scalar()
        .unwrap();
    failures.extend(compare("corr_fr_spikes_vs_gen", &[corr_fr], &[expected]));
    let (latent, _) = read(&f, "inputs/spikes/latent_ar2");
    for (case, lag, len) in [("lag120_len9500", 120, 9500), ("lag50_len1000", 50, 1000)] {
        let windows = estimate_cross_correlation(&latent, lag, len).unwrap();
        let flat: Vec<f64> = windows.concat();
        let (r, _) = read(
            &f,
            &format!("spike_stats/estimate_cross_correlation/{case}/corrs"),
        );
        failures.extend(compare(case, &flat, &r));
        checked += 1;
    }
    assert_eq!(checked, 30);
    assert!(failures.is_empty(), "failures: {failures:#?}");
}

#[test]
fn fig7_per_condition_statistics_match_reference() {
    use lowrank_smc::metrics::spikes::per_condition_stats;
    let f = hdf5::File::open(FIXTURE).unwrap();
    let (trials, shape) = read(&f, "inputs/spikes/spikes_trials");
    // Attribute `conditions` = "[0, 1, 0, 1, 2, 2, 0, 1]"; notebook fs = 50 Hz, neuron_inds 0..4.
    let conditions_text: String = f
        .group("spike_stats/per_condition_fig7")
        .unwrap()
        .attr("conditions")
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .to_string();
    let conditions: Vec<usize> = conditions_text
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let stats = per_condition_stats(
        &trials,
        shape[0],
        shape[1],
        shape[2],
        &conditions,
        50.0,
        &[0, 1, 2, 3, 4],
    )
    .unwrap();
    let mut failures = Vec::new();
    for (name, ours) in [
        ("sr_mean_cond", &stats.rate_mean),
        ("sr_std_cond", &stats.rate_std),
        ("pwc_cond", &stats.pairwise_corr),
    ] {
        let (r, _) = read(&f, &format!("spike_stats/per_condition_fig7/{name}"));
        failures.extend(compare(name, ours, &r));
    }
    assert!(failures.is_empty(), "failures: {failures:#?}");
}
