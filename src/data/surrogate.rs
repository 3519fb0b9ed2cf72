//! Labelled surrogate recordings written as real NWB files in the layout of the real data, for
//! machines that cannot download the rat hippocampus (CRCNS hc-11) or macaque maze (DANDI
//! MC_Maze) files. Every file says `data_source=surrogate` in `general/notes`, and the `bin`
//! stage carries that label into every table it feeds; with a real file in its place the same
//! stages run unchanged.
//!
//! - [`Hippocampus`]: place cells on a linear track (direction-selective Gaussian fields) with
//!   theta phase precession (preferred phase falls by 360° across a field), a few
//!   theta-modulated interneurons, a back-and-forth running trajectory with pauses at the ends
//!   (laps as `trials` with a `direction` column), position as a SpatialSeries, and a
//!   multi-channel LFP with a theta rhythm, slower noise and white noise (1250 Hz).
//! - [`Maze`]: MC_Maze-like delayed reaches: ~182 neurons (137 held-in + 45 held-out, NLB's
//!   `heldout` column), 27 conditions (target direction × path curvature), trials with
//!   `target_on_time`, `go_cue_time`, `move_onset_time`, `trial_type`, `split`
//!   (train/val/test), hand position and velocity at 1 kHz, and rates driven by a preparatory
//!   state that relaxes to a condition-specific point, then rotational dynamics around
//!   movement onset plus a condition-invariant component.
//!
//! Spikes are drawn from the rate functions by time rescaling at 1 ms resolution, with a
//! seeded ChaCha stream, so a seed gives the same file everywhere.

use std::f64::consts::PI;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::data::nwb_write::{ColumnData, NwbWriteError, NwbWriter, SeriesData, SeriesTiming};

/// Draw spike times from a rate sampled every `dt` seconds (time rescaling: a spike whenever
/// the integrated rate passes an Exp(1) threshold; the spike is placed within its step by
/// linear interpolation of the integral).
fn spikes_from_rate(rate: &[f64], dt: f64, t0: f64, rng: &mut ChaCha8Rng, out: &mut Vec<f64>) {
    let mut next: f64 = Exp1.sample(rng);
    let mut acc = 0.0;
    for (i, &r) in rate.iter().enumerate() {
        let inc = r.max(0.0) * dt;
        while acc + inc >= next {
            let frac = if inc > 0.0 { (next - acc) / inc } else { 0.0 };
            out.push(t0 + (i as f64 + frac) * dt);
            let e: f64 = Exp1.sample(rng);
            next += e;
        }
        acc += inc;
    }
}

/// A surrogate's params rejected by its `check`, as a write error naming the file.
fn params_error(path: &Path, message: String) -> NwbWriteError {
    NwbWriteError {
        file: path.to_path_buf(),
        object: "params".into(),
        message,
    }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Rat hippocampus surrogate (hc-11-like).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hippocampus {
    /// Seed.
    pub seed: u64,
    /// Session length (s).
    #[serde(default = "d_duration")]
    pub duration_s: f64,
    /// Place cells.
    #[serde(default = "d_cells")]
    pub n_place_cells: usize,
    /// Theta-modulated interneurons.
    #[serde(default = "d_inter")]
    pub n_interneurons: usize,
    /// Track length (m).
    #[serde(default = "d_track")]
    pub track_m: f64,
    /// Running speed (m/s).
    #[serde(default = "d_speed")]
    pub speed_m_s: f64,
    /// Theta frequency (Hz).
    #[serde(default = "d_theta")]
    pub theta_hz: f64,
    /// LFP channels.
    #[serde(default = "d_lfp_ch")]
    pub lfp_channels: usize,
}

fn d_duration() -> f64 {
    300.0
}
fn d_cells() -> usize {
    60
}
fn d_inter() -> usize {
    6
}
fn d_track() -> f64 {
    1.6
}
fn d_speed() -> f64 {
    0.4
}
fn d_theta() -> f64 {
    8.0
}
fn d_lfp_ch() -> usize {
    4
}

/// What a surrogate generator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SurrogateSummary {
    /// Units.
    pub n_units: usize,
    /// Spikes.
    pub n_spikes: usize,
    /// Trials (laps or reaches).
    pub n_trials: usize,
    /// Session length (s).
    pub duration_s: f64,
}

const SESSION_START: &str = "2024-01-01T00:00:00+00:00";

impl Hippocampus {
    /// Check the numbers; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.duration_s.is_finite() && self.duration_s >= 10.0) {
            return Err(format!("duration_s: {} (need ≥ 10 s)", self.duration_s));
        }
        if self.n_place_cells == 0 {
            return Err("n_place_cells: need ≥ 1".into());
        }
        if !(self.track_m > 0.0 && self.speed_m_s > 0.0 && self.theta_hz > 0.0) {
            return Err("track_m, speed_m_s, theta_hz: must be > 0".into());
        }
        if self.lfp_channels == 0 {
            return Err("lfp_channels: need ≥ 1".into());
        }
        Ok(())
    }

    /// Simulate and write the NWB file.
    pub fn write(&self, path: &Path) -> Result<SurrogateSummary, NwbWriteError> {
        self.check().map_err(|m| params_error(path, m))?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let dt = 1e-3;
        let n = (self.duration_s / dt).round() as usize;
        // Trajectory: runs of track/speed (±15 % per lap), 2 s pauses at the ends.
        let mut x = vec![0.0; n];
        let mut dir = vec![0i8; n];
        let mut laps: Vec<(f64, f64, String)> = Vec::new();
        let mut i = 0usize;
        let mut pos = 0.0;
        let mut outbound = true;
        while i < n {
            let pause = (2.0 / dt) as usize;
            for _ in 0..pause.min(n - i) {
                x[i] = pos;
                i += 1;
            }
            if i >= n {
                break;
            }
            let v = self.speed_m_s * (1.0 + 0.15 * rng.gen_range(-1.0..1.0));
            let steps = (self.track_m / v / dt).round() as usize;
            let start = i;
            for k in 0..steps.min(n - i) {
                let s = (k + 1) as f64 / steps as f64;
                // Smooth acceleration at both ends (raised-cosine speed profile).
                let frac = s - (2.0 * PI * s).sin() / (2.0 * PI);
                x[i] = if outbound {
                    frac * self.track_m
                } else {
                    (1.0 - frac) * self.track_m
                };
                dir[i] = if outbound { 1 } else { -1 };
                i += 1;
            }
            if i - start == steps {
                laps.push((
                    start as f64 * dt,
                    i as f64 * dt,
                    if outbound { "outbound" } else { "inbound" }.to_string(),
                ));
            }
            pos = if outbound { self.track_m } else { 0.0 };
            outbound = !outbound;
        }
        // Theta phase with slow frequency wander.
        let mut phase = vec![0.0; n];
        let mut ph = 0.0;
        let mut fw = 0.0;
        for p in phase.iter_mut() {
            let e: f64 = StandardNormal.sample(&mut rng);
            fw = 0.999 * fw + 0.02 * e;
            ph += 2.0 * PI * (self.theta_hz + 0.5 * fw) * dt;
            *p = ph;
        }
        // Units.
        let n_units = self.n_place_cells + self.n_interneurons;
        let mut spikes: Vec<Vec<f64>> = Vec::with_capacity(n_units);
        let mut rate = vec![0.0; n];
        for c in 0..self.n_place_cells {
            let centre = rng.gen_range(0.1..0.9) * self.track_m;
            let width = rng.gen_range(0.06..0.12) * self.track_m / 1.6 * 1.6;
            let peak = rng.gen_range(10.0..25.0);
            let prefer: i8 = if c % 2 == 0 { 1 } else { -1 };
            for k in 0..n {
                let d = x[k] - centre;
                let running = dir[k] == prefer;
                rate[k] = if running {
                    // Position within the field along the running direction: −1 entry … +1 exit.
                    let u = (d * f64::from(prefer) / (2.0 * width)).clamp(-1.0, 1.0);
                    let pref_phase = PI * (1.0 - u); // 360° at entry → 0° at exit
                    let field = (-0.5 * (d / width).powi(2)).exp();
                    0.1 + peak * field * (1.5 * ((phase[k] - pref_phase).cos() - 1.0)).exp() * 2.0
                } else {
                    0.1
                };
            }
            let mut s = Vec::new();
            spikes_from_rate(&rate, dt, 0.0, &mut rng, &mut s);
            spikes.push(s);
        }
        for _ in 0..self.n_interneurons {
            let base = rng.gen_range(10.0..25.0);
            let pref = rng.gen_range(0.0..2.0 * PI);
            for k in 0..n {
                rate[k] = base * (1.0 + 0.6 * (phase[k] - pref).cos());
            }
            let mut s = Vec::new();
            spikes_from_rate(&rate, dt, 0.0, &mut rng, &mut s);
            spikes.push(s);
        }
        // Position at 39.0625 Hz (hc-11's video rate), with timestamps.
        let pos_dt = 1.0 / 39.0625;
        let n_pos = (self.duration_s / pos_dt).floor() as usize;
        // Video frames: nominal 39.0625 Hz with ±1 ms jitter, as camera timestamps have.
        let pos_t: Vec<f64> = (0..n_pos)
            .map(|k| {
                k as f64 * pos_dt
                    + if k == 0 {
                        0.0
                    } else {
                        rng.gen_range(-1e-3..1e-3)
                    }
            })
            .collect();
        let pos_v: Vec<f64> = pos_t
            .iter()
            .map(|&t| {
                let k = ((t / dt) as usize).min(n - 1);
                let e: f64 = StandardNormal.sample(&mut rng);
                x[k] + 0.003 * e
            })
            .collect();
        // LFP at 1250 Hz in µV (conversion 1e-6 → V): theta + slow AR(1) noise + white noise.
        let lfp_rate = 1250.0;
        let n_lfp = (self.duration_s * lfp_rate).floor() as usize;
        let nch = self.lfp_channels;
        let mut lfp = vec![0.0; n_lfp * nch];
        let gains: Vec<f64> = (0..nch).map(|c| 1.0 - 0.15 * c as f64).collect();
        let mut slow = 0.0;
        for k in 0..n_lfp {
            let t = k as f64 / lfp_rate;
            let j = ((t / dt) as usize).min(n - 1);
            let running = if dir[j] != 0 { 1.0 } else { 0.4 };
            let e: f64 = StandardNormal.sample(&mut rng);
            slow = 0.995 * slow + 8.0 * e;
            for c in 0..nch {
                let w: f64 = StandardNormal.sample(&mut rng);
                lfp[k * nch + c] = gains[c] * (150.0 * running * phase[j].cos() + slow) + 20.0 * w;
            }
        }
        let ids: Vec<i64> = (0..n_units as i64).collect();
        let obs = vec![vec![(0.0, self.duration_s)]; n_units];
        let cell_type: Vec<String> = (0..n_units)
            .map(|u| {
                if u < self.n_place_cells {
                    "pyramidal"
                } else {
                    "interneuron"
                }
                .to_string()
            })
            .collect();
        let n_spikes = spikes.iter().map(Vec::len).sum();
        let mut w = NwbWriter::create(
            path,
            &format!("lowrank-smc-surrogate-hippocampus-{}", self.seed),
            "SURROGATE rat hippocampus recording (linear track, place cells with theta phase precession) generated by lowrank-smc; not real data",
            SESSION_START,
        )?;
        w.subject("surrogate-rat", "Rattus norvegicus", "M", "P120D")?;
        w.notes(&format!(
            "data_source=surrogate; generator=lowrank-smc surrogate hippocampus; params={}",
            serde_json::to_string(self).unwrap_or_default()
        ))?;
        w.write_units(
            &ids,
            &spikes,
            Some(&obs),
            Some(1e-3),
            &[(
                "cell_type",
                "putative cell type",
                ColumnData::Text(&cell_type),
            )],
        )?;
        let start: Vec<f64> = laps.iter().map(|l| l.0).collect();
        let stop: Vec<f64> = laps.iter().map(|l| l.1).collect();
        let dirs: Vec<String> = laps.iter().map(|l| l.2.clone()).collect();
        w.write_trials(
            &start,
            &stop,
            &[(
                "direction",
                "running direction of the lap",
                ColumnData::Text(&dirs),
            )],
        )?;
        w.write_position(&SeriesData {
            name: "position",
            description: "position along the linear track",
            unit: "meters",
            data: &pos_v,
            n_channels: 1,
            timing: SeriesTiming::Timestamps(&pos_t),
            conversion: 1.0,
            offset: 0.0,
        })?;
        w.write_lfp(
            &SeriesData {
                name: "lfp",
                description: "LFP (surrogate), 1250 Hz",
                unit: "volts",
                data: &lfp,
                n_channels: nch,
                timing: SeriesTiming::Rate {
                    start: 0.0,
                    rate: lfp_rate,
                },
                conversion: 1e-6,
                offset: 0.0,
            },
            "CA1",
        )?;
        w.finish()?;
        Ok(SurrogateSummary {
            n_units,
            n_spikes,
            n_trials: laps.len(),
            duration_s: self.duration_s,
        })
    }
}

/// Macaque maze reaching surrogate (MC_Maze-like).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Maze {
    /// Seed.
    pub seed: u64,
    /// Trials.
    #[serde(default = "d_trials")]
    pub n_trials: usize,
    /// Held-in neurons.
    #[serde(default = "d_heldin")]
    pub n_heldin: usize,
    /// Held-out neurons.
    #[serde(default = "d_heldout")]
    pub n_heldout: usize,
    /// Conditions (target direction × curvature).
    #[serde(default = "d_conditions")]
    pub n_conditions: usize,
}

fn d_trials() -> usize {
    500
}
fn d_heldin() -> usize {
    137
}
fn d_heldout() -> usize {
    45
}
fn d_conditions() -> usize {
    27
}

impl Maze {
    /// Check the numbers; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.n_trials < 3 {
            return Err(format!(
                "n_trials: {} (need ≥ 3 for train/val/test)",
                self.n_trials
            ));
        }
        if self.n_heldin == 0 {
            return Err("n_heldin: need ≥ 1".into());
        }
        if self.n_conditions == 0 {
            return Err("n_conditions: need ≥ 1".into());
        }
        Ok(())
    }

    /// Simulate and write the NWB file.
    pub fn write(&self, path: &Path) -> Result<SurrogateSummary, NwbWriteError> {
        self.check().map_err(|m| params_error(path, m))?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let dt = 1e-3;
        let nc = self.n_conditions;
        // Trial timeline.
        struct Trial {
            start: f64,
            target_on: f64,
            go: f64,
            onset: f64,
            stop: f64,
            cond: usize,
        }
        let mut trials = Vec::with_capacity(self.n_trials);
        let mut t = 0.1;
        for k in 0..self.n_trials {
            let cond = if k < nc { k } else { rng.gen_range(0..nc) };
            let target_on = t + 0.3;
            let go = target_on + rng.gen_range(0.3..0.7);
            let onset = go + rng.gen_range(0.25..0.40);
            let stop = onset + 0.9;
            trials.push(Trial {
                start: t,
                target_on,
                go,
                onset,
                stop,
                cond,
            });
            t = stop + 0.1;
        }
        let duration = t + 0.5;
        let n = (duration / dt).round() as usize;
        // Condition geometry: target angle and path curvature.
        let angle: Vec<f64> = (0..nc).map(|c| 2.0 * PI * (c as f64) / nc as f64).collect();
        let curve: Vec<f64> = (0..nc).map(|c| [-1.0, 0.0, 1.0][c % 3]).collect();
        // Latent state (6-D) and condition-invariant signal, per ms.
        const D: usize = 6;
        let prep: Vec<[f64; D]> = (0..nc)
            .map(|c| {
                let (a, k) = (angle[c], curve[c]);
                [
                    a.cos(),
                    a.sin(),
                    0.6 * k,
                    0.5 * (2.0 * a).cos(),
                    0.5 * (2.0 * a).sin(),
                    0.3 * k * a.cos(),
                ]
            })
            .collect();
        let mut z = vec![0.0; n * D];
        let mut cis = vec![0.0; n];
        let mut hand = vec![0.0; n * 2];
        let mut vel = vec![0.0; n * 2];
        let mut state = [0.0; D];
        let (w1, w2) = (2.0 * PI * 1.5, 2.0 * PI * 3.0);
        let mut ti = 0usize;
        let mut hx = [0.0f64; 2];
        for i in 0..n {
            let time = i as f64 * dt;
            while ti + 1 < trials.len() && time >= trials[ti].stop + 0.05 {
                ti += 1;
            }
            let tr = &trials[ti];
            let in_trial = time >= tr.start && time < tr.stop;
            if !in_trial {
                for s in state.iter_mut() {
                    *s -= dt / 0.1 * *s;
                }
            } else if time < tr.onset - 0.15 {
                let target = if time >= tr.target_on {
                    prep[tr.cond]
                } else {
                    [0.0; D]
                };
                for d in 0..D {
                    state[d] += dt / 0.1 * (target[d] - state[d]);
                }
            } else {
                // Rotational dynamics in two planes, decaying.
                let (a, b) = (state[0], state[1]);
                state[0] += dt * (-w1 * b - a / 0.4);
                state[1] += dt * (w1 * a - b / 0.4);
                let (c, d) = (state[2], state[3]);
                state[2] += dt * (-w2 * d - c / 0.3);
                state[3] += dt * (w2 * c - d / 0.3);
                state[4] -= dt / 0.2 * state[4];
                state[5] -= dt / 0.2 * state[5];
            }
            z[i * D..(i + 1) * D].copy_from_slice(&state);
            let rel = time - tr.onset;
            cis[i] = if in_trial {
                (-0.5 * ((rel - 0.05) / 0.12).powi(2)).exp()
            } else {
                0.0
            };
            // Hand: minimum-jerk reach of 0.5 s, 0.1 m, with a curved path per condition.
            let tau = (rel / 0.5).clamp(0.0, 1.0);
            let s = if in_trial && rel >= 0.0 {
                10.0 * tau.powi(3) - 15.0 * tau.powi(4) + 6.0 * tau.powi(5)
            } else if in_trial {
                0.0
            } else {
                1.0
            };
            let (ca, sa) = (angle[tr.cond].cos(), angle[tr.cond].sin());
            let lateral = 0.03 * curve[tr.cond] * (PI * s).sin();
            let px = 0.1 * s * ca - lateral * sa;
            let py = 0.1 * s * sa + lateral * ca;
            let (px, py) = if in_trial { (px, py) } else { (hx[0], hx[1]) };
            if i > 0 {
                vel[i * 2] = (px - hand[(i - 1) * 2]) / dt;
                vel[i * 2 + 1] = (py - hand[(i - 1) * 2 + 1]) / dt;
            }
            hand[i * 2] = px;
            hand[i * 2 + 1] = py;
            hx = [px * 0.999, py * 0.999];
        }
        // Neurons: softplus of a loading of the latent state and the CIS, around a baseline.
        let n_units = self.n_heldin + self.n_heldout;
        let mut spikes = Vec::with_capacity(n_units);
        let mut rate = vec![0.0; n];
        for _ in 0..n_units {
            let base: f64 = rng.gen_range(2.0..15.0);
            let load: Vec<f64> = (0..D)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    1.2 * e
                })
                .collect();
            let c_cis = rng.gen_range(0.0..2.0);
            let b0 = base.exp_m1().ln().max(-5.0) / 3.0;
            for i in 0..n {
                let mut a = b0 + c_cis * cis[i];
                for d in 0..D {
                    a += load[d] * z[i * D + d];
                }
                rate[i] = 1.5 * softplus(a) * base / 3.0_f64.max(base.ln_1p());
            }
            let mut s = Vec::new();
            spikes_from_rate(&rate, dt, 0.0, &mut rng, &mut s);
            spikes.push(s);
        }
        // NLB-style held-out units: a random subset.
        let mut order: Vec<usize> = (0..n_units).collect();
        for i in (1..n_units).rev() {
            let j = rng.gen_range(0..=i);
            order.swap(i, j);
        }
        let mut heldout = vec![false; n_units];
        for &u in &order[..self.n_heldout] {
            heldout[u] = true;
        }
        // Splits 70 / 15 / 15 (train / val / test), assigned by a shuffle.
        let nt = trials.len();
        let mut perm: Vec<usize> = (0..nt).collect();
        for i in (1..nt).rev() {
            let j = rng.gen_range(0..=i);
            perm.swap(i, j);
        }
        let n_train = (nt as f64 * 0.7).round() as usize;
        let n_val = ((nt as f64 * 0.15).round() as usize).max(1);
        let mut split = vec![String::new(); nt];
        for (r, &k) in perm.iter().enumerate() {
            split[k] = if r < n_train {
                "train"
            } else if r < n_train + n_val {
                "val"
            } else {
                "test"
            }
            .to_string();
        }
        let n_spikes = spikes.iter().map(Vec::len).sum();
        let ids: Vec<i64> = (0..n_units as i64).collect();
        let obs = vec![vec![(0.0, duration)]; n_units];
        let mut w = NwbWriter::create(
            path,
            &format!("lowrank-smc-surrogate-maze-{}", self.seed),
            "SURROGATE macaque delayed center-out maze reaching (MC_Maze layout) generated by lowrank-smc; not real data",
            SESSION_START,
        )?;
        w.subject("surrogate-monkey", "Macaca mulatta", "M", "P8Y")?;
        w.notes(&format!(
            "data_source=surrogate; generator=lowrank-smc surrogate maze; params={}",
            serde_json::to_string(self).unwrap_or_default()
        ))?;
        w.write_units(
            &ids,
            &spikes,
            Some(&obs),
            Some(1e-3),
            &[("heldout", "NLB held-out neuron", ColumnData::Bool(&heldout))],
        )?;
        let col = |f: &dyn Fn(&Trial) -> f64| trials.iter().map(f).collect::<Vec<f64>>();
        let (start, stop) = (col(&|t| t.start), col(&|t| t.stop));
        let (ton, go, onset) = (col(&|t| t.target_on), col(&|t| t.go), col(&|t| t.onset));
        let cond: Vec<i64> = trials.iter().map(|t| t.cond as i64).collect();
        let version: Vec<i64> = trials.iter().map(|t| (t.cond % 3) as i64).collect();
        let success = vec![true; nt];
        w.write_trials(
            &start,
            &stop,
            &[
                ("target_on_time", "target onset", ColumnData::Float(&ton)),
                ("go_cue_time", "go cue", ColumnData::Float(&go)),
                (
                    "move_onset_time",
                    "movement onset",
                    ColumnData::Float(&onset),
                ),
                ("trial_type", "condition id", ColumnData::Int(&cond)),
                (
                    "trial_version",
                    "maze version (path curvature)",
                    ColumnData::Int(&version),
                ),
                ("success", "rewarded", ColumnData::Bool(&success)),
                ("split", "NLB data split", ColumnData::Text(&split)),
            ],
        )?;
        let pm = w.processing_module("behavior", "behavioural data")?;
        // Stored in mm and mm/s with conversion 1e-3 (SI after conversion), like a rig would.
        let hand_mm: Vec<f64> = hand.iter().map(|v| v * 1000.0).collect();
        let vel_mm: Vec<f64> = vel.iter().map(|v| v * 1000.0).collect();
        for (name, desc, data) in [
            ("hand_pos", "hand position (x, y)", &hand_mm),
            ("hand_vel", "hand velocity (x, y)", &vel_mm),
        ] {
            w.write_series(
                &pm,
                "TimeSeries",
                &SeriesData {
                    name,
                    description: desc,
                    unit: if name == "hand_pos" {
                        "meters"
                    } else {
                        "meters/second"
                    },
                    data,
                    n_channels: 2,
                    timing: SeriesTiming::Rate {
                        start: 0.0,
                        rate: 1000.0,
                    },
                    conversion: 1e-3,
                    offset: 0.0,
                },
            )?;
        }
        w.finish()?;
        Ok(SurrogateSummary {
            n_units,
            n_spikes,
            n_trials: nt,
            duration_s: duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_rescaling_gives_the_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rate = vec![20.0; 100_000]; // 100 s at 20 Hz
        let mut s = Vec::new();
        spikes_from_rate(&rate, 1e-3, 5.0, &mut rng, &mut s);
        let n = s.len() as f64;
        assert!((n - 2000.0).abs() < 4.0 * 2000f64.sqrt(), "{n}");
        assert!(s.windows(2).all(|w| w[1] >= w[0]) && s[0] >= 5.0);
    }
}
