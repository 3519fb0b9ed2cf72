//! Teacher–student data: trials simulated from a teacher RNN's latent form (SPEC §5.1,
//! TEACHERS.md §2, reference `vi_rnn/datasets.py` classes `Oscillations_Cont`,
//! `Oscillations_Poisson`, `Reaching_Teacher`, `RDM_Teacher`).
//!
//! Latent dynamics (column vectors, `U` N×R, `V` R×N, bias `B` N, input weights `I` du×N):
//!
//! ```text
//! z_t = a z_{t−1} + V relu(U z_{t−1} + Iᵀ v_{t−1} + B) + R_z ε_t
//! v_t = a v_{t−1} + (1 − a) s_{t−1}   (filtered input)   or   v_t = s_t ;   v_0 = 0
//! currents:  x_t = U z_t + Iᵀ v_t + R_x η_t
//! Poisson:   x_t ~ Poisson(f(gain · U z_t + bias))
//! ```
//!
//! The stimulus `s` is what the student receives as its input `u`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::model::Sequences;

/// Errors of the simulator: every message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("teacher basis: {field} has {found} values, expected {expected} ({hint})")]
    Shape {
        field: &'static str,
        found: usize,
        expected: usize,
        hint: &'static str,
    },
    #[error("simulation parameter `{field}`: {message}")]
    Param {
        field: &'static str,
        message: String,
    },
    #[error("teacher JSON `{field}`: {message}")]
    Json { field: String, message: String },
}

/// Flattens a JSON number, list of numbers, or list of lists of numbers (row-major).
fn json_numbers(v: &serde_json::Value, field: &str) -> Result<Vec<f64>, SimulateError> {
    let bad = |m: &str| SimulateError::Json {
        field: field.to_string(),
        message: m.to_string(),
    };
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) -> bool {
        match v {
            serde_json::Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
            serde_json::Value::Array(a) => a.iter().all(|x| walk(x, out)),
            _ => false,
        }
    }
    if !walk(v, &mut out) {
        return Err(bad("expected numbers or (nested) lists of numbers"));
    }
    if out.iter().any(|x| !x.is_finite()) {
        return Err(bad("holds a non-finite value"));
    }
    Ok(out)
}

/// The latent form of a teacher: `U` (N×R, row-major), `V` (R×N), bias `B` (N), input weights `I`
/// (du×N) and the decay `a` of the dataset classes (0.9).
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherBasis {
    pub n_units: usize,
    pub rank: usize,
    pub dim_input: usize,
    /// (N, R)
    pub u: Vec<f64>,
    /// (R, N)
    pub v: Vec<f64>,
    /// (N)
    pub b: Vec<f64>,
    /// (du, N)
    pub input_weights: Vec<f64>,
    pub decay: f64,
}

impl TeacherBasis {
    /// Reads a teacher file (`datasets/teachers/*.json`, TEACHERS.md): `derived.dataset_basis`
    /// (U, V, B, I_w_inp) and `derived.decay`.
    pub fn from_json(doc: &serde_json::Value) -> Result<Self, SimulateError> {
        let missing = |f: &str| SimulateError::Json {
            field: f.to_string(),
            message: "is missing (is this a teacher file from datasets/teachers?)".into(),
        };
        let basis = doc
            .get("derived")
            .and_then(|d| d.get("dataset_basis"))
            .ok_or_else(|| missing("derived.dataset_basis"))?;
        let get = |k: &str| -> Result<Vec<f64>, SimulateError> {
            let f = format!("derived.dataset_basis.{k}");
            json_numbers(basis.get(k).ok_or_else(|| missing(&f))?, &f)
        };
        let u = get("U")?;
        let b = get("B")?;
        let n = b.len();
        if n == 0 || u.len() % n != 0 {
            return Err(SimulateError::Json {
                field: "derived.dataset_basis.U".into(),
                message: format!("{} values do not form N = {n} rows", u.len()),
            });
        }
        let rank = u.len() / n;
        let input_weights = match basis.get("I_w_inp") {
            Some(v) => json_numbers(v, "derived.dataset_basis.I_w_inp")?,
            None => Vec::new(),
        };
        let decay = doc
            .get("derived")
            .and_then(|d| d.get("decay"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.9);
        let t = TeacherBasis {
            n_units: n,
            rank,
            dim_input: input_weights.len() / n,
            u,
            v: get("V")?,
            b,
            input_weights,
            decay,
        };
        t.check()?;
        Ok(t)
    }

    /// The teacher as a model of ours (SPEC §5.1 mapping, TEACHERS.md §2): M = U, n = V,
    /// h = −B, Wu = Iᵀ, decay a, relu, one-to-one readout of the currents with B = 1, bias 0.
    /// Returns the config (Gaussian observations with std `noise_x`, full noise with std
    /// `noise_z`) and its parameters.
    pub fn as_model(
        &self,
        noise_z: f64,
        noise_x: f64,
    ) -> Result<(crate::model::lowrank::ModelConfig, Vec<f64>), SimulateError> {
        use crate::model::lowrank::*;
        let (n, r, du) = (self.n_units, self.rank, self.dim_input);
        let config = ModelConfig {
            rank: r,
            n_units: n,
            dim_x: n,
            dim_u: du,
            nonlinearity: Nonlinearity::Relu,
            noise_z: NoiseKind::Full,
            noise_z0: NoiseKind::Full,
            noise_x: NoiseKind::Diag,
            observation: Observation::OneToOne,
            readout_from: ReadoutFrom::Currents,
            likelihood: Likelihood::Gaussian,
            obs_nonlinearity: None,
            initial_state: InitialState::Zero,
            simulate_input: false,
            decay: self.decay,
            init_noise_z: noise_z.max(1e-12),
            init_noise_z0: noise_z.max(1e-12),
            init_noise_x: noise_x.max(1e-12),
            train_observation: false,
            transition: Default::default(),
        };
        let mut p = config.init_params(0).map_err(|e| SimulateError::Param {
            field: "teacher",
            message: e.to_string(),
        })?;
        let layout = config.layout();
        let mut set = |name: &str, values: &[f64]| {
            if let Some(b) = layout.get(name) {
                p[b.range()].copy_from_slice(values);
            }
        };
        set("rnn.transition.m", &self.u);
        set("rnn.transition.n", &self.v);
        set(
            "rnn.transition.h",
            &self.b.iter().map(|x| -x).collect::<Vec<_>>(),
        );
        let mut wu = vec![0.0; n * du];
        for i in 0..n {
            for l in 0..du {
                wu[i * du + l] = self.input_weights[l * n + i];
            }
        }
        set("rnn.transition.Wu", &wu);
        set("rnn.observation.B", &vec![1.0; n]);
        set("rnn.observation.Bias", &vec![0.0; n]);
        Ok((config, p))
    }

    /// Checks that every array has the size its dimensions imply.
    pub fn check(&self) -> Result<(), SimulateError> {
        let (n, r, du) = (self.n_units, self.rank, self.dim_input);
        let expect = |field, found: usize, expected: usize, hint| {
            if found == expected {
                Ok(())
            } else {
                Err(SimulateError::Shape {
                    field,
                    found,
                    expected,
                    hint,
                })
            }
        };
        expect("U", self.u.len(), n * r, "N × R, row-major")?;
        expect("V", self.v.len(), r * n, "R × N, row-major")?;
        expect("B", self.b.len(), n, "one bias per unit")?;
        expect("I", self.input_weights.len(), du * n, "du × N, row-major")?;
        if r == 0 || n == 0 {
            return Err(SimulateError::Param {
                field: "rank",
                message: "the teacher needs at least one unit and rank ≥ 1".into(),
            });
        }
        Ok(())
    }

    /// One noise-free latent step: `a z + V relu(U z + Iᵀ v + B)` written into `next`.
    /// `currents` is scratch of length N.
    pub fn step(&self, z: &[f64], v: &[f64], currents: &mut [f64], next: &mut [f64]) {
        let (n, r, du) = (self.n_units, self.rank, self.dim_input);
        for (i, current) in currents.iter_mut().enumerate() {
            let mut x = self.b[i];
            for k in 0..r {
                x += self.u[i * r + k] * z[k];
            }
            for j in 0..du {
                x += self.input_weights[j * n + i] * v[j];
            }
            *current = x.max(0.0);
        }
        for k in 0..r {
            let row = &self.v[k * n..(k + 1) * n];
            let recurrent: f64 = row.iter().zip(currents.iter()).map(|(a, b)| a * b).sum();
            next[k] = self.decay * z[k] + recurrent;
        }
    }
}

/// How the initial latent is drawn (reference: `z_0 = r0 (cos ph0, sin ph0) + R_z ε`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct InitialLatent {
    /// `r0`: a fixed radius, or (with `radius_is_gaussian_scale`) the scale of `r0 ~ scale · N(0,1)`.
    pub radius: f64,
    #[serde(default)]
    pub radius_is_gaussian_scale: bool,
    /// ⚠ The reference draws the phase as `2π · N(0,1)` (Gaussian, not uniform). `true` reproduces
    /// that; the default `false` draws it uniformly on [0, 2π).
    #[serde(default)]
    pub reference_gaussian_phase: bool,
}

/// The observation model of the simulated data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SimulatedObservation {
    /// `x = U z + Iᵀ v + R_x η`.
    Currents { noise_std: f64 },
    /// `x ~ Poisson(link(gain · U z + bias))` with link softplus, exp or relu (+1e-10).
    Poisson {
        gain: f64,
        bias: f64,
        link: PoissonLink,
    },
}

impl SimulatedObservation {
    /// The noise-free observation of a unit whose input current is `current`: the current
    /// itself, or the Poisson rate.
    pub fn mean(&self, current: f64) -> f64 {
        match self {
            SimulatedObservation::Currents { .. } => current,
            SimulatedObservation::Poisson { gain, bias, link } => {
                let eta = gain * current + bias;
                match link {
                    PoissonLink::Softplus => softplus(eta),
                    PoissonLink::Exp => eta.exp(),
                    PoissonLink::Relu => eta.max(0.0) + 1e-10,
                }
            }
        }
    }
}

/// The rectifying link of Poisson teacher data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoissonLink {
    Softplus,
    Exp,
    Relu,
}

/// What to simulate: trials, their length, noise levels, input filtering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationConfig {
    pub n_trials: usize,
    pub n_time: usize,
    /// Latent noise std `R_z`.
    pub latent_noise_std: f64,
    pub observation: SimulatedObservation,
    pub initial_latent: InitialLatent,
    /// `sim_v`: filter the stimulus with the decay before it drives the teacher.
    #[serde(default)]
    pub filter_input: bool,
}

/// Simulated trials: the data and inputs a student trains on, and the teacher's true latents.
#[derive(Clone, Debug)]
pub struct SimulatedData {
    /// x (n_trials, N, T) and the stimulus u (n_trials, du, T).
    pub sequences: Sequences<f64>,
    /// True latents (n_trials, R, T).
    pub latents: Vec<f64>,
    /// Poisson rates (n_trials, N, T), when the observation is Poisson.
    pub rates: Option<Vec<f64>>,
}

/// Stimulus generators for the teachers' tasks (reference `Reaching`, `RDM`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case", deny_unknown_fields)]
pub enum StimulusTask {
    /// No input (oscillation teachers).
    None,
    /// `n_directions` reach angles; `(cos θ, sin θ)` from `onset` for `duration` steps; trial i
    /// uses direction `i mod n_directions` (the reference repeats one unshuffled batch).
    Reach {
        n_directions: usize,
        onset: usize,
        duration: usize,
    },
    /// Evidence integration: `std · N(0,1)` noise every step plus `coherence · scale` during the
    /// stimulus; trial i uses coherence `coherences[i mod len]`; length fixation + stimulus +
    /// delay + response.
    Rdm {
        coherences: Vec<f64>,
        fixation: usize,
        stimulus: usize,
        delay: usize,
        response: usize,
        std: f64,
        scale: f64,
    },
}

impl StimulusTask {
    /// Number of input channels.
    pub fn dim(&self) -> usize {
        match self {
            StimulusTask::None => 0,
            StimulusTask::Reach { .. } => 2,
            StimulusTask::Rdm { .. } => 1,
        }
    }

    /// Trial length the task implies, if it fixes one (RDM does).
    pub fn implied_length(&self) -> Option<usize> {
        match self {
            StimulusTask::Rdm {
                fixation,
                stimulus,
                delay,
                response,
                ..
            } => Some(fixation + stimulus + delay + response),
            _ => None,
        }
    }

    /// Stimuli (n_trials, du, T).
    pub fn generate(
        &self,
        n_trials: usize,
        n_time: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<f64>, SimulateError> {
        let du = self.dim();
        let mut s = vec![0.0; n_trials * du * n_time];
        match self {
            StimulusTask::None => {}
            StimulusTask::Reach {
                n_directions,
                onset,
                duration,
            } => {
                if *n_directions == 0 {
                    return Err(SimulateError::Param {
                        field: "n_directions",
                        message: "must be at least 1".into(),
                    });
                }
                let end = (onset + duration).min(n_time);
                for trial in 0..n_trials {
                    let phase = std::f64::consts::TAU * (trial % n_directions) as f64
                        / *n_directions as f64;
                    let base = trial * du * n_time;
                    for t in *onset..end {
                        s[base + t] = phase.cos();
                        s[base + n_time + t] = phase.sin();
                    }
                }
            }
            StimulusTask::Rdm {
                coherences,
                fixation,
                stimulus,
                std,
                scale,
                ..
            } => {
                if coherences.is_empty() {
                    return Err(SimulateError::Param {
                        field: "coherences",
                        message: "needs at least one coherence".into(),
                    });
                }
                for trial in 0..n_trials {
                    let coherence = coherences[trial % coherences.len()];
                    let row = &mut s[trial * n_time..(trial + 1) * n_time];
                    for (t, value) in row.iter_mut().enumerate() {
                        let noise: f64 = rng.sample(StandardNormal);
                        *value = std * noise;
                        if t >= *fixation && t < fixation + stimulus {
                            *value += coherence * scale;
                        }
                    }
                }
            }
        }
        Ok(s)
    }
}

/// Simulates `config.n_trials` trials from `teacher` driven by `task`'s stimuli, seeded.
pub fn simulate(
    teacher: &TeacherBasis,
    task: &StimulusTask,
    config: &SimulationConfig,
    seed: u64,
) -> Result<SimulatedData, SimulateError> {
    teacher.check()?;
    let (n, r, du) = (teacher.n_units, teacher.rank, teacher.dim_input);
    let (n_trials, n_time) = (config.n_trials, config.n_time);
    if n_trials == 0 || n_time == 0 {
        return Err(SimulateError::Param {
            field: "n_trials/n_time",
            message: "both must be at least 1".into(),
        });
    }
    if task.dim() != du && task.dim() != 0 {
        return Err(SimulateError::Param {
            field: "task",
            message: format!(
                "the task has {} input channels but the teacher takes {du}",
                task.dim()
            ),
        });
    }
    if let Some(length) = task.implied_length() {
        if length != n_time {
            return Err(SimulateError::Param {
                field: "n_time",
                message: format!("the task's trials are {length} steps long; set n_time: {length}"),
            });
        }
    }
    for (field, value) in [
        ("latent_noise_std", config.latent_noise_std),
        ("initial_latent.radius", config.initial_latent.radius),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(SimulateError::Param {
                field,
                message: format!("must be finite and ≥ 0, got {value}"),
            });
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stimulus_task_dim = task.dim();
    let stimulus = if stimulus_task_dim == 0 {
        vec![0.0; n_trials * du * n_time]
    } else {
        task.generate(n_trials, n_time, &mut rng)?
    };

    let mut latents = vec![0.0; n_trials * r * n_time];
    let mut x = vec![0.0; n_trials * n * n_time];
    let mut rates = match config.observation {
        SimulatedObservation::Poisson { .. } => Some(vec![0.0; n_trials * n * n_time]),
        SimulatedObservation::Currents { .. } => None,
    };
    let mut currents = vec![0.0; n];
    let mut z = vec![0.0; r];
    let mut z_next = vec![0.0; r];
    // The input the teacher sees, (du, T) for one trial; v_0 = 0 as in the reference.
    let mut v = vec![0.0; du * n_time];
    let mut v_t = vec![0.0; du];
    let init = &config.initial_latent;
    for trial in 0..n_trials {
        let s = &stimulus[trial * du * n_time..(trial + 1) * du * n_time];
        for j in 0..du {
            v[j * n_time] = 0.0;
            for t in 1..n_time {
                v[j * n_time + t] = if config.filter_input {
                    teacher.decay * v[j * n_time + t - 1]
                        + (1.0 - teacher.decay) * s[j * n_time + t - 1]
                } else {
                    s[j * n_time + t]
                };
            }
        }
        // Initial latent.
        let radius = if init.radius_is_gaussian_scale {
            init.radius * rng.sample::<f64, _>(StandardNormal)
        } else {
            init.radius
        };
        let phase = if init.reference_gaussian_phase {
            std::f64::consts::TAU * rng.sample::<f64, _>(StandardNormal)
        } else {
            rng.gen_range(0.0..std::f64::consts::TAU)
        };
        for (k, zk) in z.iter_mut().enumerate() {
            let polar = match (r, k) {
                (1, _) => radius,
                (_, 0) => radius * phase.cos(),
                (_, 1) => radius * phase.sin(),
                _ => 0.0,
            };
            *zk = polar + config.latent_noise_std * rng.sample::<f64, _>(StandardNormal);
        }
        let lat = &mut latents[trial * r * n_time..(trial + 1) * r * n_time];
        for k in 0..r {
            lat[k * n_time] = z[k];
        }
        for t in 1..n_time {
            for j in 0..du {
                v_t[j] = v[j * n_time + t - 1];
            }
            teacher.step(&z, &v_t, &mut currents, &mut z_next);
            for k in 0..r {
                z[k] = z_next[k] + config.latent_noise_std * rng.sample::<f64, _>(StandardNormal);
                lat[k * n_time + t] = z[k];
            }
        }
        // Readout: the observation at t uses v_t.
        let xs = &mut x[trial * n * n_time..(trial + 1) * n * n_time];
        for t in 0..n_time {
            for i in 0..n {
                let mut current = 0.0;
                for k in 0..r {
                    current += teacher.u[i * r + k] * lat[k * n_time + t];
                }
                match &config.observation {
                    SimulatedObservation::Currents { noise_std } => {
                        for j in 0..du {
                            current += teacher.input_weights[j * n + i] * v[j * n_time + t];
                        }
                        xs[i * n_time + t] =
                            current + noise_std * rng.sample::<f64, _>(StandardNormal);
                    }
                    SimulatedObservation::Poisson { .. } => {
                        let rate = config.observation.mean(current);
                        if let Some(rates) = rates.as_mut() {
                            rates[trial * n * n_time + i * n_time + t] = rate;
                        }
                        xs[i * n_time + t] = sample_poisson(rate, &mut rng)?;
                    }
                }
            }
        }
    }
    Ok(SimulatedData {
        sequences: Sequences {
            n_sequences: n_trials,
            dim_x: n,
            dim_u: du,
            n_time,
            x,
            u: stimulus,
        },
        latents,
        rates,
    })
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

fn sample_poisson(rate: f64, rng: &mut impl Rng) -> Result<f64, SimulateError> {
    if rate <= 0.0 {
        return Ok(0.0);
    }
    let poisson = Poisson::new(rate).map_err(|e| SimulateError::Param {
        field: "observation",
        message: format!("Poisson rate {rate} is invalid: {e}"),
    })?;
    Ok(poisson.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_teacher() -> TeacherBasis {
        // Two units per direction on a rank-2 ring: a small, well-behaved oscillator-like basis.
        let n = 6;
        let mut u = vec![0.0; n * 2];
        let mut v = vec![0.0; 2 * n];
        for i in 0..n {
            let angle = std::f64::consts::TAU * i as f64 / n as f64;
            u[i * 2] = angle.cos();
            u[i * 2 + 1] = angle.sin();
            v[i] = 0.05 * (angle + 0.3).cos();
            v[n + i] = 0.05 * (angle + 0.3).sin();
        }
        TeacherBasis {
            n_units: n,
            rank: 2,
            dim_input: 2,
            u,
            v,
            b: vec![0.1; n],
            input_weights: (0..2 * n).map(|i| 0.1 * (i as f64).sin()).collect(),
            decay: 0.9,
        }
    }

    fn config(observation: SimulatedObservation, noise: f64) -> SimulationConfig {
        SimulationConfig {
            n_trials: 8,
            n_time: 40,
            latent_noise_std: noise,
            observation,
            initial_latent: InitialLatent {
                radius: 1.0,
                radius_is_gaussian_scale: false,
                reference_gaussian_phase: false,
            },
            filter_input: true,
        }
    }

    #[test]
    fn noise_free_trials_follow_the_latent_recurrence() {
        let teacher = ring_teacher();
        let task = StimulusTask::Reach {
            n_directions: 8,
            onset: 5,
            duration: 10,
        };
        let cfg = config(SimulatedObservation::Currents { noise_std: 0.0 }, 0.0);
        let data = simulate(&teacher, &task, &cfg, 3).expect("valid simulation");
        let (n, r, du, t_len) = (6, 2, 2, 40);
        let mut currents = vec![0.0; n];
        for trial in 0..cfg.n_trials {
            let lat = &data.latents[trial * r * t_len..(trial + 1) * r * t_len];
            let s = data.sequences.u_of(trial);
            let x = data.sequences.x_of(trial);
            // Radius 1 at t = 0 (no noise).
            let radius = (lat[0].powi(2) + lat[t_len].powi(2)).sqrt();
            assert!((radius - 1.0).abs() < 1e-12);
            let mut v = vec![0.0; du];
            for t in 1..t_len {
                let z = [lat[t - 1], lat[t_len + t - 1]];
                let mut next = [0.0; 2];
                teacher.step(&z, &v, &mut currents, &mut next);
                assert!((next[0] - lat[t]).abs() < 1e-12);
                assert!((next[1] - lat[t_len + t]).abs() < 1e-12);
                for j in 0..du {
                    v[j] = 0.9 * v[j] + 0.1 * s[j * t_len + t - 1];
                }
                for i in 0..n {
                    let mut expected =
                        teacher.u[i * 2] * lat[t] + teacher.u[i * 2 + 1] * lat[t_len + t];
                    for j in 0..du {
                        expected += teacher.input_weights[j * n + i] * v[j];
                    }
                    assert!((x[i * t_len + t] - expected).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn reach_stimulus_cycles_through_directions() {
        let task = StimulusTask::Reach {
            n_directions: 4,
            onset: 2,
            duration: 3,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = task.generate(5, 8, &mut rng).expect("valid task");
        // Trial 1 is direction π/2: cos ≈ 0, sin = 1 during [2, 5).
        let trial1 = &s[16..32];
        assert!(trial1[2].abs() < 1e-12 && (trial1[8 + 2] - 1.0).abs() < 1e-12);
        assert_eq!(trial1[8 + 5], 0.0);
        // Trial 4 repeats trial 0.
        assert_eq!(&s[0..16], &s[64..80]);
    }

    #[test]
    fn poisson_counts_track_rates() {
        let mut teacher = ring_teacher();
        teacher.dim_input = 0;
        teacher.input_weights.clear();
        let mut cfg = config(
            SimulatedObservation::Poisson {
                gain: 4.0,
                bias: -1.0,
                link: PoissonLink::Softplus,
            },
            0.1,
        );
        cfg.n_trials = 200;
        cfg.filter_input = false;
        let data = simulate(&teacher, &StimulusTask::None, &cfg, 11).expect("valid simulation");
        let rates = data.rates.expect("Poisson rates");
        let mean_rate: f64 = rates.iter().sum::<f64>() / rates.len() as f64;
        let mean_count: f64 = data.sequences.x.iter().sum::<f64>() / data.sequences.x.len() as f64;
        assert!(mean_rate > 0.1);
        assert!((mean_count - mean_rate).abs() < 0.05 * mean_rate);
        assert!(data
            .sequences
            .x
            .iter()
            .all(|c| c.fract() == 0.0 && *c >= 0.0));
    }

    #[test]
    fn same_seed_same_data_and_bad_shapes_are_named() {
        let teacher = ring_teacher();
        let task = StimulusTask::Reach {
            n_directions: 8,
            onset: 5,
            duration: 10,
        };
        let cfg = config(SimulatedObservation::Currents { noise_std: 0.1 }, 0.05);
        let a = simulate(&teacher, &task, &cfg, 7).expect("valid");
        let b = simulate(&teacher, &task, &cfg, 7).expect("valid");
        assert_eq!(a.sequences, b.sequences);
        let mut broken = teacher.clone();
        broken.b.pop();
        let err = simulate(&broken, &task, &cfg, 7).expect_err("bias too short");
        assert!(err.to_string().contains("B has 5 values, expected 6"));
        let rdm = StimulusTask::Rdm {
            coherences: vec![1.0],
            fixation: 5,
            stimulus: 40,
            delay: 5,
            response: 50,
            std: 0.1,
            scale: 0.1,
        };
        let mut one_input = teacher.clone();
        one_input.dim_input = 1;
        one_input.input_weights.truncate(6);
        let err = simulate(&one_input, &rdm, &cfg, 7).expect_err("length mismatch");
        assert!(err.to_string().contains("set n_time: 100"));
    }
}
