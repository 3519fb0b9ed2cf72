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

/// Reference seconds for D_H on a seeded 10000 × 64 pair: our own numpy/scipy timing script
/// (same calls as `pse.power_spectrum_helling`; numpy 2.4.6, scipy 1.17.1), this machine, 2026-11-24
/// (0.081 s and 0.129 s in two runs on the shared machine; the faster is used).
pub const REFERENCE_DH_10000X64_SECONDS: f64 = 0.081;

/// Reference seconds for spike statistics (rates, per-neuron ISI CV, `np.corrcoef`) on 200 neurons ×
/// 360 000 bins (6 min at 1 ms), 0.5 % spike probability: our numpy timing script, this machine, 2026-11-24.
pub const REFERENCE_SPIKES_200X360K_SECONDS: f64 = 1.21;

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
                "{}: {:.3} s (reference / ours = {:.2})",
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
        speedup_vs_reference: Some(
            (REFERENCE_DSTSP_EEG_F64_SECONDS + REFERENCE_DH_10000X64_SECONDS) / (t_dstsp + t_dh),
        ),
    });
    if let Some(dh_line) = lines.get_mut(1) {
        dh_line.speedup_vs_reference = Some(REFERENCE_DH_10000X64_SECONDS / t_dh);
    }
    lines.push(bench_spikes(&mut rng));
    lines
}

/// Time mean rates, ISI statistics and the correlation matrix on 200 neurons × 360 000 bins.
fn bench_spikes(rng: &mut ChaCha8Rng) -> BenchLine {
    use super::spikes::{calc_isi_stats, correlation_matrix, mean_rates};
    let (n_time, n_neurons) = (360_000, 200);
    let spikes: Vec<f64> = (0..n_time * n_neurons)
        .map(|_| if rng.gen::<f64>() < 0.005 { 1.0 } else { 0.0 })
        .collect();
    let start = Instant::now();
    let ok = mean_rates(&spikes, n_time, n_neurons, 1000.0).is_ok()
        && calc_isi_stats(&spikes, n_time, n_neurons, 0.001).is_ok()
        && correlation_matrix(&spikes, n_time, n_neurons).is_ok();
    let seconds = start.elapsed().as_secs_f64();
    BenchLine {
        case: format!("spike stats 200 neurons x 360000 bins (rates, ISI, corrcoef; ok={ok})"),
        seconds,
        speedup_vs_reference: Some(REFERENCE_SPIKES_200X360K_SECONDS / seconds),
    }
}
