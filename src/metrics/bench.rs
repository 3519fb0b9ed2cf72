//! Benchmarks of the metrics (called by `lowrank-smc bench metrics`); no timed assertions.

use super::{dstsp, power_spectrum_hellinger, DhOptions, DstspOptions, SeriesView};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::time::Instant;

/// Reference seconds for D_stsp (f64) on the EEG pair (9640 × 64 vs 9640 × 64, 1000 samples):
/// `kl_Gauss.calc_kl_from_data` in torch 2.15 on this machine, 1 thread, as recorded by the golden
/// generator in `golden/metrics/index.json` (`dstsp.pair_b_eeg_vs_perturbed/f64_scale1.seconds`, 2026-11-24).
pub const REFERENCE_DSTSP_EEG_F64_SECONDS: f64 = 43.7;

/// One benchmark line: case, measured seconds, ratio reference / ours (when a reference exists).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchLine {
    /// What was timed.
    pub case: String,
    /// Wall-clock seconds of our implementation.
    pub seconds: f64,
    /// Reference seconds divided by ours (speed-up), if measured.
    pub speedup_vs_reference: Option<f64>,
}

impl std::fmt::Display for BenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.speedup_vs_reference {
            Some(r) => write!(
                f,
                "{}: {:.3} s ({:.1}x faster than reference)",
                self.case, self.seconds, r
            ),
            None => write!(f, "{}: {:.3} s", self.case, self.seconds),
        }
    }
}

/// Time D_stsp + D_H on a seeded 10000 × 64 pair (goal < 0.5 s on 2 cores).
pub fn bench_metrics() -> Vec<BenchLine> {
    let (n, d) = (10_000, 64);
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let a: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
    let b: Vec<f64> = (0..n * d)
        .map(|_| 1.1 * rng.sample::<f64, _>(StandardNormal) + 0.1)
        .collect();
    let mut lines = Vec::new();
    let (Ok(va), Ok(vb)) = (
        SeriesView::new("a", &a, n, d),
        SeriesView::new("b", &b, n, d),
    ) else {
        return lines;
    };
    let start = Instant::now();
    let ds = dstsp(va, vb, &DstspOptions::default(), &mut rng);
    let t_dstsp = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let dh = power_spectrum_hellinger(&a, &b, 1, n, d, &DhOptions::default());
    let t_dh = start.elapsed().as_secs_f64();
    let ok = ds.is_ok() && dh.is_ok();
    lines.push(BenchLine {
        case: format!("D_stsp 10000x64, 1000 samples, log-space f64 (ok={ok})"),
        seconds: t_dstsp,
        speedup_vs_reference: Some(REFERENCE_DSTSP_EEG_F64_SECONDS / t_dstsp),
    });
    lines.push(BenchLine {
        case: "D_H 10000x64, sigma 20".into(),
        seconds: t_dh,
        speedup_vs_reference: None,
    });
    lines.push(BenchLine {
        case: "D_stsp + D_H 10000x64 (goal < 0.5 s)".into(),
        seconds: t_dstsp + t_dh,
        speedup_vs_reference: None,
    });
    lines
}
