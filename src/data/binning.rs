//! Binning: spike times → counts on a time grid (NLB-style trial windows aligned to an event,
//! or one continuous grid), continuous series (behaviour, LFP) averaged onto the same grid,
//! and a zero-phase FFT band-pass for LFP rhythms (theta).
//!
//! Bin edges follow NLB's convention (it rounds (t − start) / bin to 6 decimals, then
//! truncates): a spike at time t falls in bin ⌊(t − start) / bin + 5·10⁻⁷⌋, so spikes on an
//! edge go to the later bin and floating-point noise in the times does not move them.

use realfft::RealFftPlanner;

/// A zeroed buffer of `n` values. Large ones (≥ 4 MB) are advised to use transparent huge
/// pages where the kernel offers them on request, as numpy does for its large arrays: binning
/// 10⁷ spikes writes a ~60 MB count array once, and first-touch faults of 4 KB pages cost more
/// than the binning itself on a virtual machine.
pub fn zeroed(n: usize) -> Vec<f64> {
    let v = vec![0.0; n];
    #[cfg(target_os = "linux")]
    if n * std::mem::size_of::<f64>() >= 4 << 20 {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + n * std::mem::size_of::<f64>();
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside the allocation; MADV_HUGEPAGE only changes how the
            // kernel backs the pages (their zeroed content is unchanged); failure is harmless.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

/// Half of NLB's 6-decimal rounding step, in bins.
const EDGE: f64 = 5e-7;

/// The bin of offset `dt` (s) at bin width `bin` (s), or `None` before the window.
#[inline]
fn bin_of(dt: f64, bin: f64) -> Option<usize> {
    let x = dt / bin + EDGE;
    // Truncation is floor for x ≥ 0 (and compiles to one instruction, unlike libm's floor).
    (x >= 0.0).then_some(x as usize)
}

/// Add the counts of one sorted spike train to `out` for each window:
/// `out[w * stride + k]` += spikes in bin k of window w (`starts[w]`, `n_bins` bins of `bin` s).
pub fn bin_spike_train(
    spikes: &[f64],
    starts: &[f64],
    bin: f64,
    n_bins: usize,
    out: &mut [f64],
    stride: usize,
) {
    // The earliest spike that can fall into bin 0 sits EDGE bins before the start.
    let slack = bin * 2.0 * EDGE;
    // Windows usually come in time order: then the next window's first spike is found by a
    // galloping search from the previous one (cache-local), else by a full binary search.
    let (mut lo, mut prev) = (0, f64::INFINITY);
    for (w, &s) in starts.iter().enumerate() {
        let row = &mut out[w * stride..w * stride + n_bins];
        let t0 = s - slack;
        let mut i = if t0 >= prev {
            gallop(spikes, lo, t0)
        } else {
            spikes.partition_point(|&t| t < t0)
        };
        (lo, prev) = (i, t0);
        while i < spikes.len() {
            match bin_of(spikes[i] - s, bin) {
                Some(k) if k >= n_bins => break,
                Some(k) => row[k] += 1.0,
                None => {}
            }
            i += 1;
        }
    }
}

/// The first index `i ≥ lo` with `spikes[i] >= t0`, given `spikes[..lo] < t0` (sorted
/// `spikes`): exponential steps from `lo`, then a binary search in the last step. Equals
/// `spikes.partition_point(|&t| t < t0)`.
fn gallop(spikes: &[f64], lo: usize, t0: f64) -> usize {
    let (mut a, mut step) = (lo, 1);
    while a < spikes.len() {
        let b = (a + step).min(spikes.len());
        if spikes[b - 1] >= t0 {
            return a + spikes[a..b].partition_point(|&t| t < t0);
        }
        a = b;
        step *= 2;
    }
    spikes.len()
}

/// Average a sampled series onto bins: for each window and bin, the mean of the samples whose
/// time lies in the bin (the same edge rounding as the spikes); a bin without samples (a slow
/// series) takes the value linearly interpolated at its centre. NaN samples (e.g. position
/// frames where tracking was lost) are left out of the mean; a bin whose samples are all NaN
/// stays NaN rather than being filled from across the gap. `times` are the sample times
/// (sorted), `values` sample-major (`n_samples × n_ch`); output `out[w][c][k]` with strides
/// (`n_ch * n_bins`, `n_bins`).
pub fn bin_series(
    times: &[f64],
    values: &[f64],
    n_ch: usize,
    starts: &[f64],
    bin: f64,
    n_bins: usize,
    out: &mut [f64],
) {
    let n = times.len();
    let slack = bin * 2.0 * EDGE;
    let mut sum = vec![0.0; n_ch * n_bins];
    let mut valid = vec![0usize; n_ch * n_bins];
    let mut cnt = vec![0usize; n_bins];
    for (w, &s) in starts.iter().enumerate() {
        sum.iter_mut().for_each(|x| *x = 0.0);
        valid.iter_mut().for_each(|x| *x = 0);
        cnt.iter_mut().for_each(|x| *x = 0);
        let mut i = times.partition_point(|&t| t < s - slack);
        while i < n {
            match bin_of(times[i] - s, bin) {
                Some(k) if k >= n_bins => break,
                Some(k) => {
                    for c in 0..n_ch {
                        let v = values[i * n_ch + c];
                        if !v.is_nan() {
                            sum[c * n_bins + k] += v;
                            valid[c * n_bins + k] += 1;
                        }
                    }
                    cnt[k] += 1;
                }
                None => {}
            }
            i += 1;
        }
        for c in 0..n_ch {
            for k in 0..n_bins {
                let j = c * n_bins + k;
                out[w * n_ch * n_bins + j] = if valid[j] > 0 {
                    sum[j] / valid[j] as f64
                } else if cnt[k] > 0 {
                    f64::NAN
                } else {
                    interpolate(times, values, n_ch, c, s + (k as f64 + 0.5) * bin)
                };
            }
        }
    }
}

/// Linear interpolation of channel `c` at `t` (constant beyond the ends; NaN without samples).
fn interpolate(times: &[f64], values: &[f64], n_ch: usize, c: usize, t: f64) -> f64 {
    let n = times.len();
    if n == 0 {
        return f64::NAN;
    }
    let j = times.partition_point(|&x| x <= t);
    if j == 0 {
        return values[c];
    }
    if j >= n {
        return values[(n - 1) * n_ch + c];
    }
    let (t0, t1) = (times[j - 1], times[j]);
    let (v0, v1) = (values[(j - 1) * n_ch + c], values[j * n_ch + c]);
    if t1 > t0 {
        v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    } else {
        v0
    }
}

/// Zero-phase band-pass of each channel of a regularly sampled series (`n × n_ch`,
/// sample-major) at `fs` Hz: the spectrum is multiplied by a pass band [lo, hi] Hz with cosine
/// tapers of width `taper_hz` on both sides (no phase shift, so theta phase stays put). The
/// mean is removed first; the series is zero-padded to an even length.
pub fn bandpass(data: &mut [f64], n_ch: usize, fs: f64, lo: f64, hi: f64, taper_hz: f64) {
    let n = data.len() / n_ch.max(1);
    if n < 4 {
        return;
    }
    let len = n + (n % 2);
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(len);
    let inv = planner.plan_fft_inverse(len);
    let mut buf = fwd.make_input_vec();
    let mut spec = fwd.make_output_vec();
    let df = fs / len as f64;
    let gain: Vec<f64> = (0..spec.len())
        .map(|k| {
            let f = k as f64 * df;
            let edge = |d: f64| {
                if d <= 0.0 {
                    1.0
                } else if d >= taper_hz {
                    0.0
                } else {
                    0.5 * (1.0 + (std::f64::consts::PI * d / taper_hz).cos())
                }
            };
            if f < lo {
                edge(lo - f)
            } else if f > hi {
                edge(f - hi)
            } else {
                1.0
            }
        })
        .collect();
    for c in 0..n_ch {
        let mean = (0..n).map(|i| data[i * n_ch + c]).sum::<f64>() / n as f64;
        for i in 0..len {
            buf[i] = if i < n {
                data[i * n_ch + c] - mean
            } else {
                0.0
            };
        }
        if fwd.process(&mut buf, &mut spec).is_err() {
            continue;
        }
        for (s, g) in spec.iter_mut().zip(&gain) {
            *s *= *g / len as f64;
        }
        // The imaginary parts of DC and Nyquist must be zero for the inverse transform.
        spec[0].im = 0.0;
        if let Some(last) = spec.last_mut() {
            last.im = 0.0;
        }
        if inv.process(&mut spec, &mut buf).is_err() {
            continue;
        }
        for i in 0..n {
            data[i * n_ch + c] = buf[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_on_edges_go_to_the_later_bin_and_windows_are_independent() {
        let spikes = [0.0, 0.019_999_999_9, 0.02, 0.039, 0.1, 0.5];
        let mut out = vec![0.0; 2 * 5];
        bin_spike_train(&spikes, &[0.0, 0.02], 0.02, 5, &mut out, 5);
        // Window 0: 0.0 → 0; 0.0199999999 rounds to 1.0 → bin 1; 0.02 → 1; 0.039 → 1; 0.1 → out.
        assert_eq!(&out[..5], &[1.0, 3.0, 0.0, 0.0, 0.0]);
        // Window 1 starts at 0.02: 0.0199999999 → bin 0 (rounding), 0.02 → 0, 0.039 → 0, 0.1 → 4.
        assert_eq!(&out[5..], &[3.0, 0.0, 0.0, 0.0, 1.0]);
        // Total counts equal a brute-force count over the covered span.
        let mut one = vec![0.0; 30];
        bin_spike_train(&spikes, &[0.0], 0.02, 30, &mut one, 30);
        assert_eq!(one.iter().sum::<f64>(), 6.0);
    }

    #[test]
    fn galloping_search_equals_binary_search_and_unordered_windows_bin_alike() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut spikes: Vec<f64> = (0..2000).map(|_| rng.gen_range(0.0..10.0)).collect();
        spikes.sort_by(f64::total_cmp);
        for _ in 0..2000 {
            let t0 = rng.gen_range(-1.0..11.0);
            let want = spikes.partition_point(|&t| t < t0);
            let lo = rng.gen_range(0..=want);
            assert_eq!(gallop(&spikes, lo, t0), want, "t0 {t0} from {lo}");
        }
        // Sorted windows (galloping) and the same windows shuffled (binary search) give the
        // same counts per window, and every spike inside a window is counted.
        let mut starts: Vec<f64> = (0..300).map(|_| rng.gen_range(-0.5..10.0)).collect();
        starts.sort_by(f64::total_cmp);
        let (nb, bin) = (25, 0.02);
        let mut sorted = vec![0.0; starts.len() * nb];
        bin_spike_train(&spikes, &starts, bin, nb, &mut sorted, nb);
        let mut order: Vec<usize> = (0..starts.len()).collect();
        order.reverse();
        order.swap(3, 200);
        let shuffled_starts: Vec<f64> = order.iter().map(|&w| starts[w]).collect();
        let mut shuffled = vec![0.0; starts.len() * nb];
        bin_spike_train(&spikes, &shuffled_starts, bin, nb, &mut shuffled, nb);
        for (j, &w) in order.iter().enumerate() {
            assert_eq!(
                &shuffled[j * nb..(j + 1) * nb],
                &sorted[w * nb..(w + 1) * nb]
            );
            let inside = spikes
                .iter()
                .filter(|&&t| bin_of(t - starts[w], bin).is_some_and(|k| k < nb))
                .count();
            let counted: f64 = sorted[w * nb..(w + 1) * nb].iter().sum();
            assert_eq!(counted, inside as f64, "window {w}");
        }
    }

    #[test]
    fn series_means_and_interpolates() {
        // 100 Hz ramp: bins of 20 ms hold two samples each.
        let t: Vec<f64> = (0..100).map(|i| i as f64 * 0.01).collect();
        let v: Vec<f64> = t.iter().flat_map(|&x| [x, -x]).collect();
        let mut out = vec![0.0; 2 * 3];
        bin_series(&t, &v, 2, &[0.1], 0.02, 3, &mut out);
        assert!((out[0] - 0.105).abs() < 1e-12 && (out[3] + 0.105).abs() < 1e-12);
        assert!((out[2] - 0.145).abs() < 1e-12);
        // A 5 Hz series binned at 20 ms: bins without samples interpolate at their centre.
        let ts: Vec<f64> = (0..10).map(|i| i as f64 * 0.2).collect();
        let vs: Vec<f64> = ts.iter().map(|&x| 2.0 * x).collect();
        let mut o = vec![0.0; 4];
        bin_series(&ts, &vs, 1, &[0.3], 0.02, 4, &mut o);
        assert!((o[1] - 2.0 * 0.33).abs() < 1e-12, "{o:?}");
    }

    #[test]
    fn bandpass_keeps_theta_and_removes_the_rest() {
        let fs = 250.0;
        let n = 5000;
        let theta: Vec<f64> = (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * 8.0 * i as f64 / fs).sin())
            .collect();
        let mut x: Vec<f64> = (0..n)
            .map(|i| {
                let t = i as f64 / fs;
                theta[i]
                    + 3.0
                    + (2.0 * std::f64::consts::PI * 40.0 * t).sin()
                    + 0.5 * (2.0 * std::f64::consts::PI * 1.0 * t).sin()
            })
            .collect();
        bandpass(&mut x, 1, fs, 6.0, 10.0, 1.0);
        let err = x[500..4500]
            .iter()
            .zip(&theta[500..4500])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-3, "max error {err}");
    }
}
