//! Training a teacher RNN on its task from scratch (SPEC §5.1; the reference's `py_rnn`), so a
//! user can make new teachers for the teacher–student experiment.
//!
//! The teacher is the reference's low-rank rate RNN (`LR_RNNCell`, row-vector convention):
//!
//! ```text
//! x_{t+1} = (1 − α) x_t + α ( m (n relu(x_t + b)) / N  +  s_in · u_t W_in )  +  √(2α) σ ξ_t
//! y_t     = s_out ⊙ ( relu(x_{t+1}) W_out ) / N
//! ```
//!
//! with α = dt/τ, ξ_t ~ N(0, I), x_0 a (possibly trained) parameter. The loss is the masked MSE
//! `Σ mask (y − target)² / Σ mask` plus `l2_rates_reg · mean(x²)` over the batch, time and units
//! (the reference's "rates" are the states x). Trained parameters as in the paper's teachers: n,
//! b, W_in, W_out and (for the oscillator and RDM) x_0; m, s_in and s_out stay at their initial
//! values. Adam (PyTorch defaults), gradient-norm clipping, minibatches of a shuffled epoch.
//!
//! Gradients are a hand-written backward pass through time (finite-difference tested).
//! [`Teacher::to_json`] writes the same JSON as `datasets/teachers/*.json` (TEACHERS.md), with
//! `derived.dataset_basis` (the SVD basis of `extract_orth_basis_rnn`) and
//! `derived.fixed_point_form`, so `simulate`, `teacher_student` and `fixed_points` read it.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Errors of teacher training.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// A parameter is out of range.
    #[error("params.{field}: {problem}")]
    Param {
        /// The offending field.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Training produced a non-finite loss.
    #[error("teacher training diverged at epoch {epoch} (loss {loss}); lower params.train.lr")]
    Diverged {
        /// Epoch (0-based).
        epoch: usize,
        /// The loss.
        loss: f64,
    },
}

/// The teacher network (py_rnn `params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherNet {
    /// Units N (`n_rec`).
    pub n_units: usize,
    /// Rank R of the recurrent weights.
    pub rank: usize,
    /// Time step dt and time constant τ (ms): α = dt/τ.
    #[serde(default = "default_dt")]
    pub dt: f64,
    /// τ (ms).
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Noise σ (per-step state noise std √(2α)·σ).
    #[serde(default = "default_noise")]
    pub noise_std: f64,
    /// Train x_0 (the oscillator and RDM teachers do; the reach teacher does not).
    #[serde(default = "default_true")]
    pub train_x0: bool,
    /// Std of x_0's initial values (0: zeros).
    #[serde(default = "default_scale_x0")]
    pub scale_x0: f64,
}

fn default_dt() -> f64 {
    10.0
}
fn default_tau() -> f64 {
    100.0
}
fn default_noise() -> f64 {
    0.05
}
fn default_true() -> bool {
    true
}
fn default_scale_x0() -> f64 {
    0.1
}

/// A teacher's task (the reference's `SineWave`, `Reaching` and `RDM` datasets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case", deny_unknown_fields)]
pub enum TeacherTask {
    /// Output sin over `n_cycles` cycles in `dur` steps, no input (every trial the same).
    Sine {
        /// Steps per trial.
        dur: usize,
        /// Cycles per trial.
        n_cycles: f64,
        /// Trials per epoch.
        n_trials: usize,
    },
    /// Reach to one of `n_stim` directions: the cue (cos, sin) is shown from the onset for
    /// the stimulus duration, then the output must hold it until the end.
    Reach {
        /// Directions (one trial each per epoch).
        n_stim: usize,
        /// Steps per trial.
        trial_len: usize,
        /// Onset drawn uniformly from [lo, hi).
        onset: [usize; 2],
        /// Stimulus duration drawn uniformly from [lo, hi).
        stim_dur: [usize; 2],
    },
    /// Random-dot motion: integrate noisy evidence of a coherence, answer its sign.
    Rdm {
        /// Coherences (one trial each per epoch; default −4, −2, −1, 1, 2, 4).
        #[serde(default = "default_coherences")]
        coherences: Vec<f64>,
        /// Fixation steps.
        fixation_dur: usize,
        /// Stimulus steps.
        stimulus_dur: usize,
        /// Delay steps.
        delay_dur: usize,
        /// Response steps.
        response_dur: usize,
        /// Input noise std.
        std: f64,
        /// Coherence scale.
        scale: f64,
    },
}

fn default_coherences() -> Vec<f64> {
    vec![-4.0, -2.0, -1.0, 1.0, 2.0, 4.0]
}

impl TeacherTask {
    /// Input and output dimensions.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            TeacherTask::Sine { .. } => (1, 1),
            TeacherTask::Reach { .. } => (2, 2),
            TeacherTask::Rdm { .. } => (1, 1),
        }
    }

    /// Steps per trial.
    pub fn trial_len(&self) -> usize {
        match self {
            TeacherTask::Sine { dur, .. } => *dur,
            TeacherTask::Reach { trial_len, .. } => *trial_len,
            TeacherTask::Rdm {
                fixation_dur,
                stimulus_dur,
                delay_dur,
                response_dur,
                ..
            } => fixation_dur + stimulus_dur + delay_dur + response_dur,
        }
    }

    /// Trials per epoch.
    pub fn n_trials(&self) -> usize {
        match self {
            TeacherTask::Sine { n_trials, .. } => *n_trials,
            TeacherTask::Reach { n_stim, .. } => *n_stim,
            TeacherTask::Rdm { coherences, .. } => coherences.len(),
        }
    }

    /// Checks the task's parameters.
    pub fn check(&self) -> Result<(), TeacherError> {
        let bad = |field, problem: &str| {
            Err(TeacherError::Param {
                field,
                problem: problem.to_string(),
            })
        };
        if self.trial_len() < 2 {
            return bad("task", "a trial needs at least 2 steps");
        }
        if self.n_trials() == 0 {
            return bad("task", "an epoch needs at least one trial");
        }
        match self {
            TeacherTask::Sine { n_cycles, .. } if !n_cycles.is_finite() => {
                bad("task.n_cycles", "must be finite")
            }
            TeacherTask::Reach {
                trial_len,
                onset,
                stim_dur,
                ..
            } => {
                if onset[0] >= onset[1] || stim_dur[0] >= stim_dur[1] {
                    return bad(
                        "task.onset",
                        "onset and stim_dur are half-open ranges [lo, hi) with lo < hi",
                    );
                }
                if onset[1] + stim_dur[1] - 2 >= *trial_len {
                    return bad(
                        "task.trial_len",
                        "the latest onset plus the longest stimulus must end inside the trial",
                    );
                }
                Ok(())
            }
            TeacherTask::Rdm { std, scale, .. } if !(std.is_finite() && scale.is_finite()) => {
                bad("task.std", "std and scale must be finite")
            }
            _ => Ok(()),
        }
    }

    /// Trial `index` of an epoch: input (T × n_inp), target and mask (T × n_out), row-major.
    pub fn trial(&self, index: usize, rng: &mut impl Rng) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let t_len = self.trial_len();
        let (n_inp, n_out) = self.dims();
        let mut u = vec![0.0; t_len * n_inp];
        let mut target = vec![0.0; t_len * n_out];
        let mut mask = vec![0.0; t_len * n_out];
        match self {
            TeacherTask::Sine { dur, n_cycles, .. } => {
                // torch.linspace(0, n_cycles·2π, dur)
                for t in 0..*dur {
                    let phase = if *dur > 1 {
                        n_cycles * 2.0 * std::f64::consts::PI * t as f64 / (*dur - 1) as f64
                    } else {
                        0.0
                    };
                    target[t] = phase.sin();
                    mask[t] = 1.0;
                }
            }
            TeacherTask::Reach {
                n_stim,
                onset,
                stim_dur,
                ..
            } => {
                let phase = 2.0 * std::f64::consts::PI * index as f64 / *n_stim as f64;
                let (c, s) = (phase.cos(), phase.sin());
                let on = rng.gen_range(onset[0]..onset[1]);
                let dur = rng.gen_range(stim_dur[0]..stim_dur[1]);
                let start = on + dur;
                for t in on..start.min(t_len) {
                    u[t * 2] = c;
                    u[t * 2 + 1] = s;
                }
                for t in start..t_len {
                    target[t * 2] = c;
                    target[t * 2 + 1] = s;
                    mask[t * 2] = 1.0;
                    mask[t * 2 + 1] = 1.0;
                }
            }
            TeacherTask::Rdm {
                coherences,
                fixation_dur,
                stimulus_dur,
                delay_dur,
                std,
                scale,
                ..
            } => {
                let coh = coherences[index];
                for v in u.iter_mut() {
                    let e: f64 = rng.sample(StandardNormal);
                    *v = std * e;
                }
                let stim_end = fixation_dur + stimulus_dur;
                for v in &mut u[*fixation_dur..stim_end] {
                    *v += coh * scale;
                }
                for t in stim_end + delay_dur..t_len {
                    target[t] = coh.signum();
                    mask[t] = 1.0;
                }
            }
        }
        (u, target, mask)
    }
}

/// Optimiser settings (py_rnn `training_params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherTrain {
    /// Epochs (each: every trial of the task once, shuffled, in minibatches).
    pub n_epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Trials per minibatch.
    pub batch_size: usize,
    /// Gradient-norm clipping (the paper's teachers: 1).
    #[serde(default = "default_clip")]
    pub clip_gradient: f64,
    /// Weight of mean(x²).
    #[serde(default)]
    pub l2_rates_reg: f64,
    /// Seed of the initial weights, the task's random draws and the noise.
    pub seed: u64,
}

fn default_clip() -> f64 {
    1.0
}

/// Offsets of the parameter blocks in the flat vector.
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: usize,
    r: usize,
    n_inp: usize,
    n_out: usize,
}

impl Layout {
    fn w_inp(&self) -> std::ops::Range<usize> {
        0..self.n_inp * self.n
    }
    fn m(&self) -> std::ops::Range<usize> {
        let s = self.w_inp().end;
        s..s + self.n * self.r
    }
    fn nn(&self) -> std::ops::Range<usize> {
        let s = self.m().end;
        s..s + self.r * self.n
    }
    fn b(&self) -> std::ops::Range<usize> {
        let s = self.nn().end;
        s..s + self.n
    }
    fn w_out(&self) -> std::ops::Range<usize> {
        let s = self.b().end;
        s..s + self.n * self.n_out
    }
    fn x0(&self) -> std::ops::Range<usize> {
        let s = self.w_out().end;
        s..s + self.n
    }
    fn len(&self) -> usize {
        self.x0().end
    }
}

/// k = n relu(x + b): the recurrent drive in the R-dimensional latent space.
fn drive(nn: &[f64], b: &[f64], x: &[f64], k: &mut [f64]) {
    let n = x.len();
    k.iter_mut().for_each(|v| *v = 0.0);
    for i in 0..n {
        let ri = (x[i] + b[i]).max(0.0);
        for (q, kq) in k.iter_mut().enumerate() {
            *kq += nn[q * n + i] * ri;
        }
    }
}

/// A teacher: network settings, task, and flat parameters
/// `[W_in (n_inp × N), m (N × R), n (R × N), b (N), W_out (N × n_out), x_0 (N)]`.
#[derive(Debug, Clone)]
pub struct Teacher {
    /// Network settings.
    pub net: TeacherNet,
    /// Its task.
    pub task: TeacherTask,
    /// Flat parameters.
    pub params: Vec<f64>,
    /// Input and output scales (frozen, 1 in the paper's teachers).
    pub w_inp_scale: f64,
    /// Output scale.
    pub w_out_scale: f64,
}

/// One minibatch: inputs, targets, masks and noise, trial-major.
#[derive(Debug, Clone)]
pub struct TeacherBatch {
    /// Trials.
    pub n_trials: usize,
    /// Steps per trial.
    pub t_len: usize,
    /// (trial, t, n_inp).
    pub u: Vec<f64>,
    /// (trial, t, n_out).
    pub target: Vec<f64>,
    /// (trial, t, n_out).
    pub mask: Vec<f64>,
    /// Standard normal draws (trial, t, N).
    pub noise: Vec<f64>,
}

impl Teacher {
    /// A freshly initialised teacher (the reference's `initialize_loadings`: W_in, n, m, W_out
    /// from N(0, C) with corr(n_r, m_r) = 0.8; x_0 ~ N(0, scale_x0²)).
    pub fn new(net: TeacherNet, task: TeacherTask, seed: u64) -> Result<Self, TeacherError> {
        let bad = |field, problem: String| Err(TeacherError::Param { field, problem });
        if net.n_units == 0 || net.rank == 0 || net.rank > net.n_units {
            return bad(
                "model.rank",
                format!(
                    "need 1 ≤ rank ≤ n_units (rank {}, n_units {})",
                    net.rank, net.n_units
                ),
            );
        }
        if !(net.dt > 0.0 && net.tau >= net.dt && net.tau.is_finite()) {
            return bad("model.tau", "need 0 < dt ≤ tau".into());
        }
        if !(net.noise_std >= 0.0 && net.noise_std.is_finite()) {
            return bad("model.noise_std", "must be finite and ≥ 0".into());
        }
        task.check()?;
        let (n_inp, n_out) = task.dims();
        let (n, r) = (net.n_units, net.rank);
        let lay = Layout { n, r, n_inp, n_out };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = || -> f64 { rng.sample(StandardNormal) };
        // Loadings rows: [inputs (n_inp), n (R), m (R), outputs (n_out)], each over N units;
        // n_r and m_r correlated 0.8 (Cholesky of [[1, .8], [.8, 1]]).
        let n_load = 2 * r + n_inp + n_out;
        let mut white = vec![0.0; n_load * n];
        for v in white.iter_mut() {
            *v = normal();
        }
        let row = |k: usize| &white[k * n..(k + 1) * n];
        let mut params = vec![0.0; lay.len()];
        params[lay.w_inp()].copy_from_slice(&white[..n_inp * n]);
        let c = (1.0f64 - 0.64).sqrt();
        for q in 0..r {
            let nr = row(n_inp + q);
            let mr = row(n_inp + r + q);
            for i in 0..n {
                params[lay.nn().start + q * n + i] = nr[i];
                params[lay.m().start + i * r + q] = 0.8 * nr[i] + c * mr[i];
            }
        }
        for o in 0..n_out {
            let w = row(n_inp + 2 * r + o);
            for i in 0..n {
                params[lay.w_out().start + i * n_out + o] = w[i];
            }
        }
        let mut rng2 = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f7e4_c4e2);
        for v in &mut params[lay.x0()] {
            let e: f64 = rng2.sample(StandardNormal);
            *v = net.scale_x0 * e;
        }
        Ok(Teacher {
            net,
            task,
            params,
            w_inp_scale: 1.0,
            w_out_scale: 1.0,
        })
    }

    fn layout(&self) -> Layout {
        let (n_inp, n_out) = self.task.dims();
        Layout {
            n: self.net.n_units,
            r: self.net.rank,
            n_inp,
            n_out,
        }
    }

    /// Number of flat parameters.
    pub fn n_params(&self) -> usize {
        self.layout().len()
    }

    /// Which flat parameters are trained (m, the scales and — unless `train_x0` — x_0 are not).
    pub fn trainable(&self) -> Vec<bool> {
        let lay = self.layout();
        let mut t = vec![true; lay.len()];
        t[lay.m()].iter_mut().for_each(|v| *v = false);
        if !self.net.train_x0 {
            t[lay.x0()].iter_mut().for_each(|v| *v = false);
        }
        t
    }

    fn alpha(&self) -> f64 {
        self.net.dt / self.net.tau
    }

    /// A minibatch of the given trial indices with fresh task draws and noise.
    pub fn batch(&self, trials: &[usize], rng: &mut impl Rng) -> TeacherBatch {
        let t_len = self.task.trial_len();
        let n = self.net.n_units;
        let mut b = TeacherBatch {
            n_trials: trials.len(),
            t_len,
            u: Vec::new(),
            target: Vec::new(),
            mask: Vec::new(),
            noise: Vec::with_capacity(trials.len() * t_len * n),
        };
        for &k in trials {
            let (u, target, mask) = self.task.trial(k, rng);
            b.u.extend(u);
            b.target.extend(target);
            b.mask.extend(mask);
        }
        for _ in 0..trials.len() * t_len * n {
            b.noise.push(rng.sample(StandardNormal));
        }
        b
    }

    /// Forward pass of one trial: states x_1..x_T (T × N) and outputs (T × n_out).
    pub fn run_trial(&self, params: &[f64], u: &[f64], noise: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let lay = self.layout();
        let (n, r, n_inp, n_out) = (lay.n, lay.r, lay.n_inp, lay.n_out);
        let t_len = u.len() / n_inp.max(1);
        let alpha = self.alpha();
        let sq = (2.0 * alpha).sqrt() * self.net.noise_std;
        let (w_inp, m, nn, b, w_out) = (
            &params[lay.w_inp()],
            &params[lay.m()],
            &params[lay.nn()],
            &params[lay.b()],
            &params[lay.w_out()],
        );
        let mut x = params[lay.x0()].to_vec();
        let mut xs = vec![0.0; t_len * n];
        let mut ys = vec![0.0; t_len * n_out];
        let mut k = vec![0.0; r];
        for t in 0..t_len {
            drive(nn, b, &x, &mut k);
            for i in 0..n {
                let mut rec = 0.0;
                for q in 0..r {
                    rec += m[i * r + q] * k[q];
                }
                let mut inp = 0.0;
                for j in 0..n_inp {
                    inp += u[t * n_inp + j] * w_inp[j * n + i];
                }
                let next = (1.0 - alpha) * x[i]
                    + alpha * (rec / n as f64 + self.w_inp_scale * inp)
                    + sq * noise[t * n + i];
                xs[t * n + i] = next;
            }
            x.copy_from_slice(&xs[t * n..(t + 1) * n]);
            for o in 0..n_out {
                let mut acc = 0.0;
                for i in 0..n {
                    acc += x[i].max(0.0) * w_out[i * n_out + o];
                }
                ys[t * n_out + o] = self.w_out_scale * acc / n as f64;
            }
        }
        (xs, ys)
    }

    /// Loss of a minibatch and its gradient (all parameters; the caller ignores frozen ones).
    pub fn loss_and_grad(
        &self,
        params: &[f64],
        batch: &TeacherBatch,
        l2_rates_reg: f64,
        grad: &mut [f64],
    ) -> f64 {
        let lay = self.layout();
        let (n, r, n_inp, n_out) = (lay.n, lay.r, lay.n_inp, lay.n_out);
        let t_len = batch.t_len;
        let alpha = self.alpha();
        let nf = n as f64;
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mask_sum: f64 = batch.mask.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let n_rates = (batch.n_trials * t_len * n) as f64;
        let (m, nn, b, w_out) = (
            &params[lay.m()],
            &params[lay.nn()],
            &params[lay.b()],
            &params[lay.w_out()],
        );
        let mut loss = 0.0;
        let mut gx = vec![0.0; n];
        let mut gk = vec![0.0; r];
        let mut k = vec![0.0; r];
        let mut a = vec![0.0; n];
        for trial in 0..batch.n_trials {
            let u = &batch.u[trial * t_len * n_inp..(trial + 1) * t_len * n_inp];
            let noise = &batch.noise[trial * t_len * n..(trial + 1) * t_len * n];
            let target = &batch.target[trial * t_len * n_out..(trial + 1) * t_len * n_out];
            let mask = &batch.mask[trial * t_len * n_out..(trial + 1) * t_len * n_out];
            let (xs, ys) = self.run_trial(params, u, noise);
            for (idx, y) in ys.iter().enumerate() {
                loss += mask[idx] * (y - target[idx]).powi(2) / mask_sum;
            }
            loss += l2_rates_reg * xs.iter().map(|v| v * v).sum::<f64>() / n_rates;
            gx.iter_mut().for_each(|v| *v = 0.0);
            for t in (0..t_len).rev() {
                let x_next = &xs[t * n..(t + 1) * n];
                // Output and regulariser at x_{t+1}.
                for o in 0..n_out {
                    let idx = t * n_out + o;
                    let dy = 2.0 * mask[idx] * (ys[idx] - target[idx]) / mask_sum;
                    if dy == 0.0 {
                        continue;
                    }
                    let s = self.w_out_scale * dy / nf;
                    for i in 0..n {
                        let ri = x_next[i].max(0.0);
                        grad[lay.w_out().start + i * n_out + o] += s * ri;
                        if x_next[i] > 0.0 {
                            gx[i] += s * w_out[i * n_out + o];
                        }
                    }
                }
                for i in 0..n {
                    gx[i] += l2_rates_reg * 2.0 * x_next[i] / n_rates;
                }
                // Step t: x_{t+1} = (1 − α) x_t + α (m k / N + s_in u_t W_in) + noise.
                let x_prev: &[f64] = if t == 0 {
                    &params[lay.x0()]
                } else {
                    &xs[(t - 1) * n..t * n]
                };
                drive(nn, b, x_prev, &mut k);
                for i in 0..n {
                    a[i] = alpha * gx[i];
                }
                gk.iter_mut().for_each(|v| *v = 0.0);
                for i in 0..n {
                    for q in 0..r {
                        grad[lay.m().start + i * r + q] += a[i] * k[q] / nf;
                        gk[q] += m[i * r + q] * a[i] / nf;
                    }
                    for j in 0..n_inp {
                        grad[lay.w_inp().start + j * n + i] +=
                            self.w_inp_scale * u[t * n_inp + j] * a[i];
                    }
                }
                for i in 0..n {
                    let pre = x_prev[i] + b[i];
                    let mut g_prev = (1.0 - alpha) * gx[i];
                    if pre > 0.0 {
                        let mut gr = 0.0;
                        for q in 0..r {
                            grad[lay.nn().start + q * n + i] += gk[q] * pre;
                            gr += nn[q * n + i] * gk[q];
                        }
                        grad[lay.b().start + i] += gr;
                        g_prev += gr;
                    }
                    gx[i] = g_prev;
                }
            }
            for i in 0..n {
                grad[lay.x0().start + i] += gx[i];
            }
        }
        loss
    }

    /// Trains the teacher; returns the mean loss of every epoch.
    pub fn train(
        &mut self,
        cfg: &TeacherTrain,
        mut on_epoch: impl FnMut(usize, f64),
    ) -> Result<Vec<f64>, TeacherError> {
        if cfg.batch_size == 0 {
            return Err(TeacherError::Param {
                field: "train.batch_size",
                problem: "must be ≥ 1".into(),
            });
        }
        if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            return Err(TeacherError::Param {
                field: "train.lr",
                problem: "must be finite and > 0".into(),
            });
        }
        if cfg.clip_gradient.is_nan()
            || cfg.clip_gradient <= 0.0
            || cfg.l2_rates_reg.is_nan()
            || cfg.l2_rates_reg < 0.0
        {
            return Err(TeacherError::Param {
                field: "train.clip_gradient",
                problem: "clip_gradient must be > 0 and l2_rates_reg ≥ 0".into(),
            });
        }
        let trainable = self.trainable();
        let n_p = self.params.len();
        let (beta1, beta2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
        let mut m1 = vec![0.0; n_p];
        let mut m2 = vec![0.0; n_p];
        let mut grad = vec![0.0; n_p];
        let mut step = 0i32;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(0x7ea_c4e2));
        let mut curve = Vec::with_capacity(cfg.n_epochs);
        let mut order: Vec<usize> = (0..self.task.n_trials()).collect();
        for epoch in 0..cfg.n_epochs {
            order.shuffle(&mut rng);
            let mut sum = 0.0;
            let mut batches = 0;
            for chunk in order.chunks(cfg.batch_size) {
                let batch = self.batch(chunk, &mut rng);
                let loss = self.loss_and_grad(&self.params, &batch, cfg.l2_rates_reg, &mut grad);
                if !loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
                    return Err(TeacherError::Diverged { epoch, loss });
                }
                let norm = grad
                    .iter()
                    .zip(&trainable)
                    .filter(|(_, t)| **t)
                    .map(|(g, _)| g * g)
                    .sum::<f64>()
                    .sqrt();
                // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when > 1.
                let scale = (cfg.clip_gradient / (norm + 1e-6)).min(1.0);
                step += 1;
                let bc1 = 1.0 - beta1.powi(step);
                let bc2 = 1.0 - beta2.powi(step);
                for i in 0..n_p {
                    if !trainable[i] {
                        continue;
                    }
                    let g = grad[i] * scale;
                    m1[i] = beta1 * m1[i] + (1.0 - beta1) * g;
                    m2[i] = beta2 * m2[i] + (1.0 - beta2) * g * g;
                    let denom = (m2[i] / bc2).sqrt() + eps;
                    self.params[i] -= cfg.lr * (m1[i] / bc1) / denom;
                }
                sum += loss;
                batches += 1;
            }
            let mean = sum / batches as f64;
            curve.push(mean);
            on_epoch(epoch, mean);
        }
        Ok(curve)
    }

    /// The latent basis of `extract_orth_basis_rnn`: W = m (n α / N) = U V with U (N × R)
    /// orthonormal columns (left singular vectors) and V = diag(s) V_svdᵀ (R × N).
    pub fn orth_basis(&self) -> (Vec<f64>, Vec<f64>) {
        let lay = self.layout();
        let (n, r) = (lay.n, lay.r);
        let alpha = self.alpha();
        let m = &self.params[lay.m()];
        let nn = &self.params[lay.nn()];
        // W's thin SVD from its factors (`low_rank_svd`; nalgebra's SVD of the N × N W can
        // return wrong singular values), largest first.
        let a = nalgebra::DMatrix::from_row_slice(n, r, m);
        let b = nalgebra::DMatrix::from_fn(r, n, |q, j| nn[q * n + j] * alpha / n as f64);
        let (uu, _, sv) = crate::model::lowrank::low_rank_svd(&a, &b);
        let mut u = vec![0.0; n * r];
        let mut v = vec![0.0; r * n];
        for q in 0..r {
            for i in 0..n {
                u[i * r + q] = uu[(i, q)];
                v[q * n + i] = sv[(q, i)];
            }
        }
        (u, v)
    }

    /// The teacher as JSON in the layout of `datasets/teachers/*.json` (TEACHERS.md).
    pub fn to_json(&self, name: &str, train: &TeacherTrain, final_loss: f64) -> Value {
        let lay = self.layout();
        let (n, r, n_inp, n_out) = (lay.n, lay.r, lay.n_inp, lay.n_out);
        let alpha = self.alpha();
        let p = &self.params;
        let rows = |v: &[f64], cols: usize| -> Vec<Vec<f64>> {
            v.chunks(cols).map(<[f64]>::to_vec).collect()
        };
        let (u, v) = self.orth_basis();
        let w1: Vec<f64> = p[lay.nn()].iter().map(|x| x * alpha / n as f64).collect();
        let w_rec: Vec<f64> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..r)
                    .map(|q| p[lay.m().start + i * r + q] * p[lay.nn().start + q * n + j])
                    .sum::<f64>()
                    * alpha
                    / n as f64
            })
            .collect();
        json!({
            "name": name,
            "source": "trained by lowrank-smc `teacher_train` (src/model/teacher.rs)",
            "summary": {
                "N": n, "rank": r, "n_inp": n_inp, "n_out": n_out, "nonlinearity": "relu",
                "dt": self.net.dt, "tau": self.net.tau, "alpha_dt_over_tau": alpha,
                "decay_1_minus_alpha": 1.0 - alpha, "noise_std_param": self.net.noise_std,
                "per_step_state_noise_std": (2.0 * alpha).sqrt() * self.net.noise_std,
                "final_loss": final_loss,
            },
            "state_dict": {
                "x0": [p[lay.x0()].to_vec()],
                "rnn.w_inp": rows(&p[lay.w_inp()], n),
                "rnn.w_inp_scale": [self.w_inp_scale],
                "rnn.m": rows(&p[lay.m()], r),
                "rnn.n": rows(&p[lay.nn()], n),
                "rnn.b_rec": p[lay.b()].to_vec(),
                "rnn.w_out": rows(&p[lay.w_out()], n_out),
                "rnn.w_out_scale": [vec![self.w_out_scale; n_out]],
            },
            "state_dict_shapes": {
                "x0": [1, n], "rnn.w_inp": [n_inp, n], "rnn.w_inp_scale": [1],
                "rnn.m": [n, r], "rnn.n": [r, n], "rnn.b_rec": [n], "rnn.w_out": [n, n_out],
                "rnn.w_out_scale": [1, n_out],
            },
            "params": self.net,
            "task_params": self.task,
            "training_params": train,
            "derived": {
                "alpha": alpha,
                "decay": 1.0 - alpha,
                "W_rec_effective": rows(&w_rec, n),
                "dataset_basis": {
                    "function": "SVD of m·(n·alpha/N), as smc_rnns/vi_rnn/utils.py:extract_orth_basis_rnn",
                    "U": rows(&u, r),
                    "V": rows(&v, n),
                    "B": p[lay.b()].to_vec(),
                    "I_w_inp": rows(&p[lay.w_inp()], n),
                    "U_shape": [n, r],
                    "V_shape": [r, n],
                },
                "fixed_point_form": {
                    "map": "z_{t+1} = A z_t + W1 relu(W2 z_t + h2) + h1",
                    "A_diag": vec![1.0 - alpha; r],
                    "W1": {"formula": "n·alpha/N", "value": rows(&w1, n)},
                    "W2": {"formula": "m", "value": rows(&p[lay.m()], r)},
                    "h2": {"formula": "b_rec", "value": p[lay.b()].to_vec()},
                    "h1": vec![0.0; r],
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(task: TeacherTask) -> Teacher {
        Teacher::new(
            TeacherNet {
                n_units: 7,
                rank: 2,
                dt: 10.0,
                tau: 100.0,
                noise_std: 0.05,
                train_x0: true,
                scale_x0: 0.3,
            },
            task,
            3,
        )
        .unwrap()
    }

    /// The dataset basis of a teacher with random weights: U orthonormal, U V = m (n α / N),
    /// the rows of V ordered by their norms (the singular values), largest first.
    #[test]
    fn orth_basis_factors_the_recurrent_weights() {
        let mut t = small(TeacherTask::Sine {
            dur: 12,
            n_cycles: 1.0,
            n_trials: 2,
        });
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for v in t.params.iter_mut() {
            *v += rng.sample::<f64, _>(StandardNormal);
        }
        let lay = t.layout();
        let (n, r, alpha) = (lay.n, lay.r, t.alpha());
        let (m, nn) = (&t.params[lay.m()], &t.params[lay.nn()]);
        let (u, v) = t.orth_basis();
        for i in 0..n {
            for j in 0..n {
                let w: f64 =
                    (0..r).map(|q| m[i * r + q] * nn[q * n + j]).sum::<f64>() * alpha / n as f64;
                let uv: f64 = (0..r).map(|q| u[i * r + q] * v[q * n + j]).sum();
                assert!((w - uv).abs() < 1e-12, "W[{i},{j}] = {w}, UV = {uv}");
            }
        }
        for p in 0..r {
            for q in 0..r {
                let dot: f64 = (0..n).map(|i| u[i * r + p] * u[i * r + q]).sum();
                assert!((dot - f64::from(u8::from(p == q))).abs() < 1e-12);
            }
        }
        let norms: Vec<f64> = (0..r)
            .map(|q| {
                v[q * n..(q + 1) * n]
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        assert!(norms.windows(2).all(|w| w[0] >= w[1]), "{norms:?}");
    }

    /// Central differences against the backward pass, every parameter, each task (so the
    /// input, output, mask and regulariser paths all carry gradient).
    #[test]
    fn gradient_matches_finite_differences() {
        let tasks = [
            TeacherTask::Sine {
                dur: 12,
                n_cycles: 1.0,
                n_trials: 2,
            },
            TeacherTask::Reach {
                n_stim: 4,
                trial_len: 14,
                onset: [2, 4],
                stim_dur: [3, 5],
            },
            TeacherTask::Rdm {
                coherences: vec![-2.0, 1.0],
                fixation_dur: 2,
                stimulus_dur: 6,
                delay_dur: 2,
                response_dur: 3,
                std: 0.1,
                scale: 0.5,
            },
        ];
        for task in tasks {
            let mut t = small(task);
            // Biases away from zero so relu kinks are not hit by the ±h steps.
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            for v in t.params.iter_mut() {
                *v += 0.3 * rng.sample::<f64, _>(StandardNormal);
            }
            let n_trials = t.task.n_trials().min(3);
            let trials: Vec<usize> = (0..n_trials).collect();
            let batch = t.batch(&trials, &mut rng);
            let mut grad = vec![0.0; t.n_params()];
            let l0 = t.loss_and_grad(&t.params, &batch, 0.3, &mut grad);
            assert!(l0.is_finite() && l0 > 0.0);
            let mut scratch = vec![0.0; t.n_params()];
            let h = 1e-6;
            for i in 0..t.n_params() {
                let mut p = t.params.clone();
                p[i] += h;
                let up = t.loss_and_grad(&p, &batch, 0.3, &mut scratch);
                p[i] -= 2.0 * h;
                let down = t.loss_and_grad(&p, &batch, 0.3, &mut scratch);
                let fd = (up - down) / (2.0 * h);
                let tol = 1e-6 * (1.0 + fd.abs().max(grad[i].abs()));
                assert!(
                    (fd - grad[i]).abs() < tol,
                    "{:?} param {i}: backward {} vs finite difference {fd}",
                    t.task,
                    grad[i]
                );
            }
        }
    }

    /// A small oscillator teacher learns its sine (5000 Adam steps): the loss falls by a factor
    /// of 5 and the noise-free output follows the target (measured: 0.49 → 0.008, r = 0.99).
    #[test]
    fn oscillator_teacher_learns_its_sine() {
        let task = TeacherTask::Sine {
            dur: 100,
            n_cycles: 2.0,
            n_trials: 40,
        };
        let mut t = Teacher::new(
            TeacherNet {
                n_units: 20,
                rank: 2,
                dt: 10.0,
                tau: 100.0,
                noise_std: 0.05,
                train_x0: true,
                scale_x0: 0.1,
            },
            task,
            1,
        )
        .unwrap();
        let cfg = TeacherTrain {
            n_epochs: 500,
            lr: 0.01,
            batch_size: 4,
            clip_gradient: 1.0,
            l2_rates_reg: 0.0,
            seed: 1,
        };
        let curve = t.train(&cfg, |_, _| {}).unwrap();
        let first = curve[0];
        let last = curve[curve.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(last < first / 5.0, "loss {first} → {last}");
        let (u, target, _) = t.task.trial(0, &mut ChaCha8Rng::seed_from_u64(0));
        let (_, y) = t.run_trial(&t.params, &u, &vec![0.0; 100 * 20]);
        let corr = {
            let (my, mt) = (
                y.iter().sum::<f64>() / 100.0,
                target.iter().sum::<f64>() / 100.0,
            );
            let c: f64 = y
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - my) * (b - mt))
                .sum();
            let vy: f64 = y.iter().map(|a| (a - my).powi(2)).sum();
            let vt: f64 = target.iter().map(|b| (b - mt).powi(2)).sum();
            c / (vy * vt).sqrt()
        };
        assert!(corr > 0.9, "output–target correlation {corr}");
    }

    /// The JSON it writes is read by the simulator and the fixed-point loader, and its basis
    /// reproduces the recurrent weights (W = U V).
    #[test]
    fn json_is_a_teacher_file() {
        let t = small(TeacherTask::Reach {
            n_stim: 8,
            trial_len: 30,
            onset: [5, 6],
            stim_dur: [5, 6],
        });
        let cfg = TeacherTrain {
            n_epochs: 1,
            lr: 1e-3,
            batch_size: 4,
            clip_gradient: 1.0,
            l2_rates_reg: 0.1,
            seed: 0,
        };
        let doc = t.to_json("tiny", &cfg, 0.5);
        let basis = crate::data::simulate::TeacherBasis::from_json(&doc).unwrap();
        assert_eq!((basis.n_units, basis.rank, basis.dim_input), (7, 2, 2));
        let map = crate::analysis::cli::map_from_json(&doc).unwrap();
        assert_eq!(map.rank, 2);
        let w = &doc["derived"]["W_rec_effective"];
        for i in 0..7 {
            for j in 0..7 {
                let uv: f64 = (0..2)
                    .map(|q| basis.u[i * 2 + q] * basis.v[q * 7 + j])
                    .sum();
                let want = w[i][j].as_f64().unwrap();
                assert!((uv - want).abs() < 1e-10, "W[{i},{j}] {uv} vs {want}");
            }
        }
    }

    #[test]
    fn bad_settings_are_named_errors() {
        let task = TeacherTask::Reach {
            n_stim: 8,
            trial_len: 10,
            onset: [5, 6],
            stim_dur: [8, 9],
        };
        let net = TeacherNet {
            n_units: 10,
            rank: 2,
            dt: 10.0,
            tau: 100.0,
            noise_std: 0.05,
            train_x0: false,
            scale_x0: 0.1,
        };
        let e = Teacher::new(net.clone(), task, 0).unwrap_err().to_string();
        assert!(e.contains("task.trial_len"), "{e}");
        let e = Teacher::new(
            TeacherNet {
                rank: 11,
                ..net.clone()
            },
            TeacherTask::Sine {
                dur: 10,
                n_cycles: 1.0,
                n_trials: 1,
            },
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.rank"), "{e}");
    }
}
