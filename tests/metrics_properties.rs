//! Property tests (seeded loops) of the metrics: identities, symmetries, invariances, bad inputs.

use lowrank_smc::metrics::{
    dstsp, dstsp_with_draws, power_spectrum_hellinger, DhOptions, DstspDraws, DstspOptions,
    MetricsError, SeriesView,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.sample(StandardNormal)).collect()
}

/// A random AR(1) series `(n, d)` so spectra are not flat.
fn ar1(rng: &mut ChaCha8Rng, n: usize, d: usize, phi: f64) -> Vec<f64> {
    let mut x = vec![0.0; n * d];
    for t in 1..n {
        for k in 0..d {
            x[t * d + k] = phi * x[(t - 1) * d + k] + rng.sample::<f64, _>(StandardNormal);
        }
    }
    x
}

#[test]
fn dstsp_of_identical_series_is_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for case in 0..5 {
        let (n, d) = (100 + 50 * case, 1 + 15 * case);
        let x: Vec<f64> = random(&mut rng, n * d).iter().map(|v| v * 10.0).collect();
        let v = SeriesView::new("x", &x, n, d).unwrap();
        let r = dstsp(v, v, &DstspOptions::default(), &mut rng).unwrap();
        assert!(r.value.abs() < 1e-12, "case {case}: {}", r.value);
        assert!(r.value.is_finite());
    }
}

#[test]
fn dstsp_invariant_to_permuting_time_points() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (n, d) = (200, 4);
    let a = random(&mut rng, n * d);
    let b: Vec<f64> = random(&mut rng, n * d)
        .iter()
        .map(|v| v * 1.3 + 0.2)
        .collect();
    let va = SeriesView::new("a", &a, n, d).unwrap();
    let vb = SeriesView::new("b", &b, n, d).unwrap();
    let draws = DstspDraws::sample(&mut rng, 300, n, d);
    let base = dstsp_with_draws(va, vb, &DstspOptions::default(), &draws)
        .unwrap()
        .value;
    // Permute the generated series' rows (the data's rows too, remapping the drawn indices).
    let perm: Vec<usize> = (0..n).map(|i| (i * 37 + 11) % n).collect();
    let mut b_perm = vec![0.0; n * d];
    let mut a_perm = vec![0.0; n * d];
    for (new, &old) in perm.iter().enumerate() {
        b_perm[new * d..(new + 1) * d].copy_from_slice(&b[old * d..(old + 1) * d]);
        a_perm[new * d..(new + 1) * d].copy_from_slice(&a[old * d..(old + 1) * d]);
    }
    let mut inverse = vec![0; n];
    for (new, &old) in perm.iter().enumerate() {
        inverse[old] = new;
    }
    let draws_perm = DstspDraws {
        t_indices: draws.t_indices.iter().map(|&t| inverse[t]).collect(),
        normals: draws.normals.clone(),
    };
    let vap = SeriesView::new("a", &a_perm, n, d).unwrap();
    let vbp = SeriesView::new("b", &b_perm, n, d).unwrap();
    let permuted = dstsp_with_draws(vap, vbp, &DstspOptions::default(), &draws_perm)
        .unwrap()
        .value;
    assert!(
        (base - permuted).abs() < 1e-12 * base.abs().max(1.0),
        "{base} vs {permuted}"
    );
    assert!(base > 0.0);
}

#[test]
fn dh_symmetric_bounded_and_affine_invariant() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for case in 0..6 {
        let (n, d) = (200 + 37 * case, 3);
        let a = ar1(&mut rng, n, d, 0.9);
        let b = ar1(&mut rng, n, d, 0.2 * case as f64 - 0.5);
        let opts = DhOptions {
            smoothing: 1.0 + case as f64 * 3.0,
            ..Default::default()
        };
        let ab = power_spectrum_hellinger(&a, &b, 1, n, d, &opts).unwrap();
        let ba = power_spectrum_hellinger(&b, &a, 1, n, d, &opts).unwrap();
        assert!((ab.value - ba.value).abs() < 1e-13, "case {case}");
        for h in &ab.per_dim {
            assert!((0.0..=1.0).contains(h), "case {case}: {h}");
        }
        // Per-channel affine rescaling (positive or negative scale) changes nothing: z-scoring.
        let scaled: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, v)| v * [3.0, -0.5, 100.0][i % d] + [1.0, -7.0, 1e3][i % d])
            .collect();
        let rescaled = power_spectrum_hellinger(&a, &scaled, 1, n, d, &opts).unwrap();
        assert!((rescaled.value - ab.value).abs() < 1e-10, "case {case}");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let x = vec![0.0, 1.0, f64::NAN, 2.0];
    let good = vec![0.0, 1.0, 2.0, 3.0];
    let vx = SeriesView::new("x", &x, 2, 2).unwrap();
    let vg = SeriesView::new("g", &good, 2, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let opts = DstspOptions::default();
    assert_eq!(
        dstsp(vx, vg, &opts, &mut rng).unwrap_err(),
        MetricsError::NonFinite {
            arg: "x_data",
            index: 2
        }
    );
    assert_eq!(
        dstsp(vg, vx, &opts, &mut rng).unwrap_err(),
        MetricsError::NonFinite {
            arg: "x_gen",
            index: 2
        }
    );
    let empty = SeriesView::new("e", &[], 0, 2).unwrap();
    assert!(matches!(
        dstsp(empty, vg, &opts, &mut rng),
        Err(MetricsError::Empty { .. })
    ));
    assert!(matches!(
        SeriesView::new("x", &good, 3, 2),
        Err(MetricsError::Shape { arg: "x", .. })
    ));
    let dh = DhOptions::default();
    assert!(matches!(
        power_spectrum_hellinger(&good, &x, 1, 2, 2, &dh),
        Err(MetricsError::NonFinite { arg: "x_gen", .. })
    ));
    assert!(matches!(
        power_spectrum_hellinger(&good, &good[..3], 1, 2, 2, &dh),
        Err(MetricsError::Shape { arg: "x_gen", .. })
    ));
    let bad_scale = DstspOptions {
        scale: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        dstsp(vg, vg, &bad_scale, &mut rng),
        Err(MetricsError::Parameter { arg: "scale", .. })
    ));
}
