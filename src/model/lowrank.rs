//! The stochastic low-rank RNN as the reference implements it (SPEC §1.2–1.8): configuration,
//! named parameter layout (reference names, so golden files map 1:1), initialisation, the
//! Table-1 parameter count, the transition, and generation from the prior (SPEC §3.1).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::train::params::ParamLayout;

/// Errors building or using a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A configuration field is invalid.
    #[error("model config `{field}`: {message}")]
    Config {
        /// Field name.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A parameter vector does not fit the layout or holds NaN.
    #[error("model parameters: {0}")]
    Params(String),
}

/// Unit nonlinearity φ(x; h) (SPEC §1.2 table; note the sign conventions).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Nonlinearity {
    /// max(x − h, 0)
    Relu,
    /// max(x + h, 0) − max(x, 0)
    ClippedRelu,
    /// tanh(x − h) (the reference's is broken; this is the intended function)
    Tanh,
    /// x − h
    Identity,
}

impl Nonlinearity {
    /// φ(x; h) and ∂φ/∂x, ∂φ/∂h.
    #[inline]
    pub fn eval(self, x: f64, h: f64) -> (f64, f64, f64) {
        match self {
            Nonlinearity::Relu => {
                if x - h > 0.0 {
                    (x - h, 1.0, -1.0)
                } else {
                    (0.0, 0.0, 0.0)
                }
            }
            Nonlinearity::ClippedRelu => {
                let a = if x + h > 0.0 { 1.0 } else { 0.0 };
                let b = if x > 0.0 { 1.0 } else { 0.0 };
                ((x + h).max(0.0) - x.max(0.0), a - b, a)
            }
            Nonlinearity::Tanh => {
                let t = (x - h).tanh();
                let d = 1.0 - t * t;
                (t, d, -d)
            }
            Nonlinearity::Identity => (x - h, 1.0, -1.0),
        }
    }
}

/// Noise covariance parameterisation (SPEC §1.4).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// One log-variance for all dimensions.
    Scalar,
    /// One log-variance per dimension.
    Diag,
    /// Cholesky embedding L = tril(R, −1) + diag(exp(diag R / 2)).
    Full,
}

/// Observation map (SPEC §1.7).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    /// x̂ = f(Bᵀ z + b), B: dz × dx.
    Affine,
    /// x̂_i = f(B_i s_i + b_i) with s the currents (or rates) of unit i; dx = N.
    OneToOne,
}

/// What the observation reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadoutFrom {
    /// Latents z (affine).
    Z,
    /// Currents M z + Wu v (one-to-one).
    Currents,
    /// Rates φ(M z + Wu v) (one-to-one).
    Rates,
    /// Inputs and latents [v; z] (affine; B has du + R rows, the input rows first).
    ZAndV,
}

/// Output nonlinearity f of the observation (SPEC §1.7): x̂ = f(η).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ObsNonlinearity {
    /// f(η) = η.
    Identity,
    /// f(η) = softplus(η) + 1e-6 (torch's softplus, linear above 20).
    Softplus,
    /// f(η) = exp(η) + 1e-10.
    Exp,
    /// f(η) = max(η, 0) + 1e-10.
    Relu,
}

impl ObsNonlinearity {
    /// f(η) and f′(η).
    #[inline]
    pub fn eval(self, eta: f64) -> (f64, f64) {
        match self {
            ObsNonlinearity::Identity => (eta, 1.0),
            ObsNonlinearity::Softplus => {
                if eta > 20.0 {
                    (eta + 1e-6, 1.0)
                } else {
                    let e = eta.exp();
                    (e.ln_1p() + 1e-6, e / (1.0 + e))
                }
            }
            ObsNonlinearity::Exp => {
                let e = eta.exp();
                (e + 1e-10, e)
            }
            ObsNonlinearity::Relu => {
                if eta > 0.0 {
                    (eta + 1e-10, 1.0)
                } else {
                    (1e-10, 0.0)
                }
            }
        }
    }
}

/// Observation likelihood.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Likelihood {
    /// Gaussian with diagonal variance from `R_x`.
    Gaussian,
    /// Poisson with the observation nonlinearity as link.
    Poisson,
}

/// Prior mean of z_0 (SPEC §1.5).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    /// μ_0 trainable, initialised to 0.
    Trainable,
    /// μ_0 = 0.
    Zero,
}

fn default_decay() -> f64 {
    0.9
}
fn default_noise_z() -> f64 {
    0.1
}
fn default_noise_z0() -> f64 {
    1.0
}
fn default_noise_x() -> f64 {
    0.1
}
fn yes() -> bool {
    true
}

/// Model configuration (the reference's `rnn_params` plus dimensions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Latent dimension R.
    pub rank: usize,
    /// Number of units N.
    pub n_units: usize,
    /// Observed dimension dx.
    pub dim_x: usize,
    /// Input dimension du.
    #[serde(default)]
    pub dim_u: usize,
    /// Unit nonlinearity.
    pub nonlinearity: Nonlinearity,
    /// Transition noise parameterisation.
    pub noise_z: NoiseKind,
    /// Initial-state noise parameterisation.
    pub noise_z0: NoiseKind,
    /// Observation noise parameterisation (Gaussian only).
    #[serde(default = "default_noise_x_kind")]
    pub noise_x: NoiseKind,
    /// Observation map.
    pub observation: Observation,
    /// What the observation reads.
    pub readout_from: ReadoutFrom,
    /// Likelihood.
    pub likelihood: Likelihood,
    /// Output nonlinearity f; default identity for Gaussian and softplus for Poisson data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs_nonlinearity: Option<ObsNonlinearity>,
    /// Prior mean of z_0.
    #[serde(default = "default_initial_state")]
    pub initial_state: InitialState,
    /// Filter the input through the decay (v_t = a v_{t−1} + (1 − a) u_{t−1}).
    #[serde(default)]
    pub simulate_input: bool,
    /// Initial decay a.
    #[serde(default = "default_decay")]
    pub decay: f64,
    /// Initial transition noise std.
    #[serde(default = "default_noise_z")]
    pub init_noise_z: f64,
    /// Initial z_0 noise std.
    #[serde(default = "default_noise_z0")]
    pub init_noise_z0: f64,
    /// Initial observation noise std.
    #[serde(default = "default_noise_x")]
    pub init_noise_x: f64,
    /// Train the observation weights and bias (frozen for the Gaussian teacher–student runs).
    #[serde(default = "yes")]
    pub train_observation: bool,
    /// Low-rank (the model of the paper) or the full-rank baseline of Table 1.
    #[serde(default, skip_serializing_if = "Transition::is_low_rank")]
    pub transition: Transition,
}

/// The latent transition (SPEC §1.2).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// z' = a z + n φ(M z + Wu v; h), M: N × R, n: R × N.
    #[default]
    LowRank,
    /// The Table-1 baseline `Transition_FullRank`: z' = a z + W φ(z; h) with W: dz × dz
    /// (`n_units = rank = dz`, no inputs). Stored as M = I (frozen) and n = W, so every
    /// algorithm of the low-rank model applies unchanged.
    FullRank,
}

impl Transition {
    fn is_low_rank(&self) -> bool {
        *self == Transition::LowRank
    }
}

fn default_noise_x_kind() -> NoiseKind {
    NoiseKind::Diag
}
fn default_initial_state() -> InitialState {
    InitialState::Trainable
}

impl ModelConfig {
    /// The paper's EEG model (SPEC §5.2): R = 3, N = 512, clipped ReLU, affine Gaussian, full noise.
    pub fn eeg(dim_x: usize) -> Self {
        ModelConfig {
            rank: 3,
            n_units: 512,
            dim_x,
            dim_u: 0,
            nonlinearity: Nonlinearity::ClippedRelu,
            noise_z: NoiseKind::Full,
            noise_z0: NoiseKind::Full,
            noise_x: NoiseKind::Diag,
            observation: Observation::Affine,
            readout_from: ReadoutFrom::Z,
            likelihood: Likelihood::Gaussian,
            obs_nonlinearity: None,
            initial_state: InitialState::Trainable,
            simulate_input: false,
            decay: 0.9,
            init_noise_z: 0.1,
            init_noise_z0: 1.0,
            init_noise_x: 0.1,
            train_observation: true,
            transition: Transition::LowRank,
        }
    }

    /// The continuous teacher–student student (SPEC §5.1 (a)): R = 2, N = dx = 20, relu,
    /// one-to-one readout of the currents (frozen), Gaussian, full noise, decay 0.7.
    pub fn continuous_student() -> Self {
        ModelConfig {
            rank: 2,
            n_units: 20,
            dim_x: 20,
            nonlinearity: Nonlinearity::Relu,
            observation: Observation::OneToOne,
            readout_from: ReadoutFrom::Currents,
            decay: 0.7,
            train_observation: false,
            ..Self::eeg(20)
        }
    }

    /// Check sizes and combinations.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |field, message: &str| {
            Err(ModelError::Config {
                field,
                message: message.to_string(),
            })
        };
        if self.rank == 0 {
            return err("rank", "must be ≥ 1");
        }
        if self.n_units == 0 {
            return err("n_units", "must be ≥ 1");
        }
        if self.rank > self.n_units {
            return err(
                "rank",
                "must be ≤ n_units (a rank-R matrix needs N ≥ R units)",
            );
        }
        if self.dim_x == 0 {
            return err("dim_x", "must be ≥ 1");
        }
        if self.transition == Transition::FullRank {
            if self.rank != self.n_units {
                return err(
                    "n_units",
                    "the full-rank transition has n_units = rank = dz (set both to dz)",
                );
            }
            if self.dim_u > 0 {
                return err("dim_u", "the full-rank baseline takes no inputs (dim_u: 0)");
            }
            if self.observation == Observation::OneToOne {
                return err(
                    "observation",
                    "the full-rank baseline reads out affinely (affine)",
                );
            }
        }
        if !(self.decay > 0.0 && self.decay < 1.0) {
            return err("decay", "must lie in (0, 1)");
        }
        for (f, v) in [
            ("init_noise_z", self.init_noise_z),
            ("init_noise_z0", self.init_noise_z0),
            ("init_noise_x", self.init_noise_x),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return err(f, "must be finite and > 0");
            }
        }
        if self.likelihood == Likelihood::Poisson && self.obs_link() == ObsNonlinearity::Identity {
            return err(
                "obs_nonlinearity",
                "Poisson rates must be positive: use softplus, exp or relu",
            );
        }
        if self.likelihood == Likelihood::Gaussian && self.noise_x == NoiseKind::Full {
            return err("noise_x", "use diag or scalar (full is not supported)");
        }
        match (self.observation, self.readout_from) {
            (Observation::Affine, ReadoutFrom::Z | ReadoutFrom::ZAndV) => {}
            (Observation::OneToOne, ReadoutFrom::Currents | ReadoutFrom::Rates) => {
                if self.dim_x > self.n_units {
                    return err("dim_x", "one_to_one readout needs dim_x ≤ n_units");
                }
            }
            _ => {
                return err(
                    "readout_from",
                    "affine reads `z` or `z_and_v`; one_to_one reads `currents` or `rates`",
                )
            }
        }
        Ok(())
    }

    /// The output nonlinearity in effect (explicit, else identity for Gaussian and softplus
    /// for Poisson data).
    pub fn obs_link(&self) -> ObsNonlinearity {
        self.obs_nonlinearity.unwrap_or(match self.likelihood {
            Likelihood::Gaussian => ObsNonlinearity::Identity,
            Likelihood::Poisson => ObsNonlinearity::Softplus,
        })
    }

    /// Rows of the affine observation weight B: R, or du + R when it also reads the inputs.
    pub fn affine_rows(&self) -> usize {
        if self.readout_from == ReadoutFrom::ZAndV {
            self.dim_u + self.rank
        } else {
            self.rank
        }
    }

    /// Dimension of the observation weight `B` block.
    fn b_shape(&self) -> Vec<usize> {
        match self.observation {
            Observation::Affine => vec![self.affine_rows(), self.dim_x],
            Observation::OneToOne => vec![self.dim_x],
        }
    }

    fn noise_shape(kind: NoiseKind, dim: usize) -> Vec<usize> {
        match kind {
            NoiseKind::Scalar => vec![1],
            NoiseKind::Diag => vec![dim],
            NoiseKind::Full => vec![dim, dim],
        }
    }

    /// Named parameter blocks (reference names and shapes).
    pub fn layout(&self) -> ParamLayout {
        let mut l = ParamLayout::default();
        let (r, n, dx, du) = (self.rank, self.n_units, self.dim_x, self.dim_u);
        l.push("rnn.R_z", &Self::noise_shape(self.noise_z, r), true);
        l.push("rnn.R_z_t0", &Self::noise_shape(self.noise_z0, r), true);
        if self.likelihood == Likelihood::Gaussian {
            l.push("rnn.R_x", &Self::noise_shape(self.noise_x, dx), true);
        }
        if self.initial_state == InitialState::Trainable {
            l.push("rnn.initial_state", &[r], true);
        }
        l.push(
            "rnn.transition.m",
            &[n, r],
            self.transition == Transition::LowRank,
        );
        l.push("rnn.transition.n", &[r, n], true);
        l.push("rnn.transition.h", &[n], true);
        l.push("rnn.transition.Wu", &[n, du], du > 0);
        l.push("rnn.transition.decay_param", &[1], true);
        l.push("rnn.observation.B", &self.b_shape(), self.train_observation);
        l.push("rnn.observation.Bias", &[dx], self.train_observation);
        l
    }

    /// |θ| as the paper counts it for Table 1 (SPEC §1.8).
    pub fn n_params_table1(&self) -> usize {
        let (r, n, dx) = (self.rank, self.n_units, self.dim_x);
        let weights = match self.transition {
            Transition::LowRank => 2 * n * r,
            Transition::FullRank => n * r,
        };
        weights + n + dx + r * dx + r * (r + 1) / 2 + 1 + dx + r * (r + 1) / 2 + r
    }

    /// Reference initialisation (SPEC §1.3–1.4) from `seed`.
    pub fn init_params(&self, seed: u64) -> Result<Vec<f64>, ModelError> {
        self.validate()?;
        let layout = self.layout();
        let mut p = vec![0.0; layout.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (r, n, dx, du) = (self.rank, self.n_units, self.dim_x, self.dim_u);
        let mut fill = |name: &str, f: &mut dyn FnMut(usize) -> f64| {
            if let Some(b) = layout.get(name) {
                for (i, v) in p[b.range()].iter_mut().enumerate() {
                    *v = f(i);
                }
            }
        };
        let noise = |kind: NoiseKind, dim: usize, std: f64| -> Box<dyn FnMut(usize) -> f64> {
            let lv = 2.0 * std.ln();
            match kind {
                NoiseKind::Full => Box::new(move |i| if i / dim == i % dim { lv } else { 0.0 }),
                _ => Box::new(move |_| lv),
            }
        };
        fill("rnn.R_z", &mut *noise(self.noise_z, r, self.init_noise_z));
        fill(
            "rnn.R_z_t0",
            &mut *noise(self.noise_z0, r, self.init_noise_z0),
        );
        fill("rnn.R_x", &mut *noise(self.noise_x, dx, self.init_noise_x));
        let un = 1.0 / (n as f64).sqrt();
        let ur = 1.0 / (r as f64).sqrt();
        match self.transition {
            Transition::LowRank => {
                fill("rnn.transition.n", &mut |_| rng.gen_range(-un..un));
                fill("rnn.transition.m", &mut |_| rng.gen_range(-ur..ur));
            }
            Transition::FullRank => {
                // W = (1 − decay) · randn · g/√dz with g = √2; M = I.
                let sd = (1.0 - self.decay) * 2f64.sqrt() / (n as f64).sqrt();
                fill("rnn.transition.n", &mut |_| {
                    let e: f64 = rng.sample(StandardNormal);
                    sd * e
                });
                fill("rnn.transition.m", &mut |i| {
                    if i / r == i % r {
                        1.0
                    } else {
                        0.0
                    }
                });
            }
        }
        if du > 0 {
            let uu = 1.0 / (du as f64).sqrt();
            fill("rnn.transition.Wu", &mut |_| rng.gen_range(-uu..uu));
        }
        if self.nonlinearity == Nonlinearity::ClippedRelu {
            fill("rnn.transition.h", &mut |_| rng.gen_range(-un..un));
        }
        let theta = (-self.decay.ln()).ln();
        fill("rnn.transition.decay_param", &mut |_| theta);
        match self.observation {
            Observation::Affine => {
                let sd = (2.0 / self.affine_rows() as f64).sqrt();
                fill("rnn.observation.B", &mut |_| {
                    let e: f64 = rng.sample(StandardNormal);
                    sd * e
                });
            }
            Observation::OneToOne => fill("rnn.observation.B", &mut |_| 1.0),
        }
        Ok(p)
    }
}

impl ModelConfig {
    /// Build a config from the reference's `VAE(vae_params)` dict (`dim_z`, `dim_N`, `dim_x`,
    /// `dim_u`, `rnn_params: {activation, noise_z, …}`), e.g. a golden file's `vae_params_json`
    /// or a published model's `vae_params`.
    pub fn from_reference_json(v: &serde_json::Value) -> Result<Self, ModelError> {
        let bad = |field: &'static str, m: String| ModelError::Config { field, message: m };
        let int = |k: &'static str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| bad("vae_params", format!("missing integer `{k}`")))
        };
        let rp = v
            .get("rnn_params")
            .ok_or_else(|| bad("vae_params", "missing `rnn_params`".into()))?;
        let text = |k: &'static str| rp.get(k).and_then(|x| x.as_str()).unwrap_or("");
        let num = |k: &'static str, d: f64| rp.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
        let flag = |k: &'static str, d: bool| rp.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
        let noise = |k: &'static str| match text(k) {
            "full" => Ok(NoiseKind::Full),
            "diag" => Ok(NoiseKind::Diag),
            "scalar" => Ok(NoiseKind::Scalar),
            o => Err(bad(
                "rnn_params",
                format!("`{k}`: unknown noise type `{o}`"),
            )),
        };
        let transition = match text("transition") {
            "" | "low_rank" => Transition::LowRank,
            "full_rank" => Transition::FullRank,
            o => {
                return Err(bad(
                    "rnn_params",
                    format!("transition `{o}` is not supported"),
                ))
            }
        };
        let c = ModelConfig {
            rank: int("dim_z")?,
            n_units: int("dim_N")?,
            dim_x: int("dim_x")?,
            dim_u: int("dim_u").unwrap_or(0),
            nonlinearity: match text("activation") {
                "relu" => Nonlinearity::Relu,
                "clipped_relu" => Nonlinearity::ClippedRelu,
                "tanh" => Nonlinearity::Tanh,
                "identity" => Nonlinearity::Identity,
                o => return Err(bad("rnn_params", format!("unknown activation `{o}`"))),
            },
            noise_z: noise("noise_z")?,
            noise_z0: noise("noise_z_t0")?,
            noise_x: if rp.get("noise_x").is_some() {
                noise("noise_x")?
            } else {
                NoiseKind::Diag
            },
            observation: match text("observation") {
                "affine" => Observation::Affine,
                "one_to_one" => Observation::OneToOne,
                o => return Err(bad("rnn_params", format!("unknown observation `{o}`"))),
            },
            readout_from: match text("readout_from") {
                "z" => ReadoutFrom::Z,
                "currents" => ReadoutFrom::Currents,
                "rates" => ReadoutFrom::Rates,
                "z_and_v" => ReadoutFrom::ZAndV,
                o => {
                    return Err(bad(
                        "rnn_params",
                        format!("readout_from `{o}` is not supported"),
                    ))
                }
            },
            likelihood: match text("obs_likelihood") {
                "Gauss" => Likelihood::Gaussian,
                "Poisson" => Likelihood::Poisson,
                o => return Err(bad("rnn_params", format!("unknown obs_likelihood `{o}`"))),
            },
            obs_nonlinearity: match text("obs_nonlinearity") {
                "" => None,
                "identity" => Some(ObsNonlinearity::Identity),
                "softplus" => Some(ObsNonlinearity::Softplus),
                "exp" => Some(ObsNonlinearity::Exp),
                "relu" => Some(ObsNonlinearity::Relu),
                o => return Err(bad("rnn_params", format!("unknown obs_nonlinearity `{o}`"))),
            },
            initial_state: match text("initial_state") {
                "trainable" => InitialState::Trainable,
                "zero" => InitialState::Zero,
                o => {
                    return Err(bad(
                        "rnn_params",
                        format!("initial_state `{o}` is not supported"),
                    ))
                }
            },
            simulate_input: flag("simulate_input", false),
            decay: num("decay", 0.9),
            init_noise_z: num("init_noise_z", 0.1),
            init_noise_z0: num("init_noise_z_t0", 1.0),
            init_noise_x: num("init_noise_x", 0.1),
            train_observation: flag("train_obs_weights", true) && flag("train_obs_bias", true),
            transition,
        };
        c.validate()?;
        Ok(c)
    }
}

/// Read-only views of the blocks of a parameter vector.
#[derive(Debug, Clone, Copy)]
pub struct ParamView<'a> {
    /// Left vectors M (N × R).
    pub m: &'a [f64],
    /// Right vectors n (R × N).
    pub n: &'a [f64],
    /// Unit biases h (N).
    pub h: &'a [f64],
    /// Input weights Wu (N × du).
    pub wu: &'a [f64],
    /// Decay a = exp(−exp(θ)).
    pub decay: f64,
    /// θ of the decay.
    pub decay_param: f64,
    /// Observation weights (affine: R × dx; one-to-one: dx).
    pub b: &'a [f64],
    /// Observation bias (dx).
    pub bias: &'a [f64],
    /// μ_0 (R), zeros when not trainable.
    pub initial_state: Option<&'a [f64]>,
    /// Raw transition noise parameter.
    pub r_z: &'a [f64],
    /// Raw initial-state noise parameter.
    pub r_z0: &'a [f64],
    /// Raw observation noise parameter (Gaussian).
    pub r_x: Option<&'a [f64]>,
}

impl ModelConfig {
    /// Views of `params` by block (checks the length and finiteness).
    pub fn view<'a>(&self, params: &'a [f64]) -> Result<ParamView<'a>, ModelError> {
        let layout = self.layout();
        if params.len() != layout.len() {
            return Err(ModelError::Params(format!(
                "{} values for a layout of {} (wrong model config for this parameter file?)",
                params.len(),
                layout.len()
            )));
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            let block = layout
                .blocks()
                .iter()
                .find(|b| b.range().contains(&i))
                .map(|b| b.name.clone())
                .unwrap_or_default();
            return Err(ModelError::Params(format!(
                "non-finite value {} in `{block}`",
                params[i]
            )));
        }
        let get = |name: &str| layout.get(name).map(|b| &params[b.range()]);
        let req = |name: &str| {
            get(name).ok_or_else(|| ModelError::Params(format!("missing block `{name}`")))
        };
        let decay_param = req("rnn.transition.decay_param")?[0];
        Ok(ParamView {
            m: req("rnn.transition.m")?,
            n: req("rnn.transition.n")?,
            h: req("rnn.transition.h")?,
            wu: req("rnn.transition.Wu")?,
            decay: (-decay_param.exp()).exp(),
            decay_param,
            b: req("rnn.observation.B")?,
            bias: req("rnn.observation.Bias")?,
            initial_state: get("rnn.initial_state"),
            r_z: req("rnn.R_z")?,
            r_z0: req("rnn.R_z_t0")?,
            r_x: get("rnn.R_x"),
        })
    }
}

/// The thin SVD of a low-rank product A B (A: N × R, B: R × M, R ≤ N, M), singular values
/// largest first: (U (N × R, orthonormal columns), s (R), Uₖᵀ K (R × M) = diag(s) Vᵀ).
///
/// Computed from R × R problems: A = Q R_A (Householder QR), K = R_A B, and the symmetric
/// eigendecomposition K Kᵀ = Uₖ diag(s²) Uₖᵀ, so U = Q Uₖ. Not nalgebra's `svd(true, …)`:
/// with singular vectors requested it returns wrong singular values for some matrices, the
/// rank-deficient N × N products of low-rank RNNs among them (dimforge/nalgebra#1172; a
/// 40-unit rank-2 student gave 2.3631 for a singular value of 2.3537, and U S Vᵀ missed J by
/// 5 % of its norm). Squaring K loses relative accuracy only in singular values below ≈ 1e-8 of
/// the largest, which only a degenerate direction has.
pub fn low_rank_svd(
    a: &nalgebra::DMatrix<f64>,
    b: &nalgebra::DMatrix<f64>,
) -> (nalgebra::DMatrix<f64>, Vec<f64>, nalgebra::DMatrix<f64>) {
    let r = a.ncols();
    assert!(
        b.nrows() == r && a.nrows() >= r,
        "low_rank_svd: A (N × R), B (R × M)"
    );
    let qr = a.clone().qr();
    let (q, ra) = (qr.q(), qr.r());
    let k = &ra * b;
    let eig = nalgebra::SymmetricEigen::new(&k * k.transpose());
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let uk = nalgebra::DMatrix::from_fn(r, r, |i, c| eig.eigenvectors[(i, order[c])]);
    let s = order
        .iter()
        .map(|&i| eig.eigenvalues[i].max(0.0).sqrt())
        .collect();
    (&q * &uk, s, uk.transpose() * k)
}

/// Cholesky factor (row-major R × R) of a noise parameter (SPEC §1.4); diag/scalar give diagonal.
pub fn noise_cholesky(kind: NoiseKind, raw: &[f64], dim: usize) -> Vec<f64> {
    let mut l = vec![0.0; dim * dim];
    for i in 0..dim {
        match kind {
            NoiseKind::Full => {
                for j in 0..i {
                    l[i * dim + j] = raw[i * dim + j];
                }
                l[i * dim + i] = (raw[i * dim + i] / 2.0).exp();
            }
            NoiseKind::Diag => l[i * dim + i] = (raw[i] / 2.0).exp(),
            NoiseKind::Scalar => l[i * dim + i] = (raw[0] / 2.0).exp(),
        }
    }
    l
}

/// Per-dimension std of a noise parameter (sqrt of the covariance diagonal).
pub fn noise_std(kind: NoiseKind, raw: &[f64], dim: usize) -> Vec<f64> {
    let l = noise_cholesky(kind, raw, dim);
    (0..dim)
        .map(|i| (0..dim).map(|j| l[i * dim + j].powi(2)).sum::<f64>().sqrt())
        .collect()
}

impl ModelConfig {
    /// Transition mean μ = a z + n φ(M z + Wu v; h) for one particle (`rates` is N scratch).
    pub fn transition_mean(
        &self,
        p: &ParamView<'_>,
        z: &[f64],
        v: &[f64],
        rates: &mut [f64],
        out: &mut [f64],
    ) {
        let (r, n, du) = (self.rank, self.n_units, self.dim_u);
        for i in 0..n {
            let mut x = 0.0;
            for k in 0..r {
                x += p.m[i * r + k] * z[k];
            }
            for k in 0..du {
                x += p.wu[i * du + k] * v[k];
            }
            rates[i] = self.nonlinearity.eval(x, p.h[i]).0;
        }
        for k in 0..r {
            let mut s = p.decay * z[k];
            let row = &p.n[k * n..(k + 1) * n];
            for i in 0..n {
                s += row[i] * rates[i];
            }
            out[k] = s;
        }
    }

    /// Observation mean x̂ = f(η) (before the likelihood's noise) for latent `z` and input
    /// state `v`.
    pub fn observation_mean(&self, p: &ParamView<'_>, z: &[f64], v: &[f64], out: &mut [f64]) {
        let (r, dx, du) = (self.rank, self.dim_x, self.dim_u);
        match self.observation {
            Observation::Affine => {
                let zv = self.readout_from == ReadoutFrom::ZAndV;
                let off = if zv { du } else { 0 };
                for j in 0..dx {
                    let mut s = p.bias[j];
                    if zv {
                        for l in 0..du {
                            s += p.b[l * dx + j] * v[l];
                        }
                    }
                    for k in 0..r {
                        s += p.b[(off + k) * dx + j] * z[k];
                    }
                    out[j] = s;
                }
            }
            Observation::OneToOne => {
                for j in 0..dx {
                    let mut x = 0.0;
                    for k in 0..r {
                        x += p.m[j * r + k] * z[k];
                    }
                    for k in 0..du {
                        x += p.wu[j * du + k] * v[k];
                    }
                    if self.readout_from == ReadoutFrom::Rates {
                        x = self.nonlinearity.eval(x, p.h[j]).0;
                    }
                    out[j] = p.b[j] * x + p.bias[j];
                }
            }
        }
        let link = self.obs_link();
        for o in out.iter_mut() {
            *o = link.eval(*o).0;
        }
    }

    /// Generate `n_steps` (after discarding `burn_in`) from the prior with latent noise and
    /// sampled observations (SPEC §3.1). `z0` is the initial latent (R); `inputs` (du × total) may
    /// be empty. Returns (latents R × T, observations dx × T), row-major.
    pub fn generate(
        &self,
        params: &[f64],
        z0: &[f64],
        n_steps: usize,
        burn_in: usize,
        seed: u64,
    ) -> Result<(Vec<f64>, Vec<f64>), ModelError> {
        let run = self.rollout(params, z0, n_steps, burn_in, seed, None)?;
        Ok((run.latents, run.observations))
    }

    /// One trajectory driven by the stimulus `u` (du × T, row-major), from `z0` at t = 0, with
    /// the latent noise: the input state follows the model's convention (v_t = a v_{t−1} +
    /// (1 − a) u_{t−1} from v_0 = 0 with `simulate_input`, else v_t = u_t) and the transition
    /// into step t uses v_{t−1}. Returns the latents (R × T), the observations (dx × T) and
    /// the input state (du × T).
    pub fn generate_driven(
        &self,
        params: &[f64],
        z0: &[f64],
        u: &[f64],
        seed: u64,
    ) -> Result<Rollout, ModelError> {
        let du = self.dim_u;
        if du == 0 || !u.len().is_multiple_of(du) || u.is_empty() {
            return Err(ModelError::Params(format!(
                "the stimulus has {} values; the model takes dim_u = {du} inputs (du × T)",
                u.len()
            )));
        }
        self.rollout(params, z0, u.len() / du, 0, seed, Some(u))
    }

    fn rollout(
        &self,
        params: &[f64],
        z0: &[f64],
        n_steps: usize,
        burn_in: usize,
        seed: u64,
        u: Option<&[f64]>,
    ) -> Result<Rollout, ModelError> {
        let p = self.view(params)?;
        let (r, n, dx, du) = (self.rank, self.n_units, self.dim_x, self.dim_u);
        if z0.len() != r {
            return Err(ModelError::Params(format!(
                "z0 has {} values, rank is {r}",
                z0.len()
            )));
        }
        let lz = noise_cholesky(self.noise_z, p.r_z, r);
        let sx = match (self.likelihood, p.r_x) {
            (Likelihood::Gaussian, Some(rx)) => noise_std(self.noise_x, rx, dx),
            _ => vec![0.0; dx],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let total = n_steps + burn_in;
        let mut z = z0.to_vec();
        let mut mu = vec![0.0; r];
        let mut rates = vec![0.0; n];
        let mut xm = vec![0.0; dx];
        let mut v = vec![0.0; du];
        let mut v_prev = vec![0.0; du];
        let mut eps = vec![0.0; r];
        let mut latents = vec![0.0; r * n_steps];
        let mut obs = vec![0.0; dx * n_steps];
        let mut inputs = vec![0.0; du * n_steps];
        for t in 0..total {
            // Input state of step t (u is given only without burn-in).
            if let Some(u) = u {
                for l in 0..du {
                    v[l] = if !self.simulate_input {
                        u[l * n_steps + t]
                    } else if t == 0 {
                        0.0
                    } else {
                        p.decay * v_prev[l] + (1.0 - p.decay) * u[l * n_steps + t - 1]
                    };
                }
            }
            if t > 0 {
                self.transition_mean(&p, &z, &v_prev, &mut rates, &mut mu);
                for e in eps.iter_mut() {
                    *e = rng.sample(StandardNormal);
                }
                for i in 0..r {
                    let mut s = mu[i];
                    for j in 0..=i {
                        s += lz[i * r + j] * eps[j];
                    }
                    z[i] = s;
                }
            }
            self.observation_mean(&p, &z, &v, &mut xm);
            if t >= burn_in {
                let tt = t - burn_in;
                for i in 0..r {
                    latents[i * n_steps + tt] = z[i];
                }
                for l in 0..du {
                    inputs[l * n_steps + tt] = v[l];
                }
                for j in 0..dx {
                    let x = match self.likelihood {
                        Likelihood::Gaussian => {
                            let e: f64 = rng.sample(StandardNormal);
                            xm[j] + sx[j] * e
                        }
                        Likelihood::Poisson => {
                            let lam = xm[j];
                            rand_distr::Poisson::new(lam)
                                .map(|d| rng.sample(d))
                                .unwrap_or(0.0)
                        }
                    };
                    obs[j * n_steps + tt] = x;
                }
            }
            v_prev.copy_from_slice(&v);
        }
        Ok(Rollout {
            latents,
            observations: obs,
            inputs,
        })
    }
}

/// One trajectory of [`ModelConfig::generate_driven`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// z, R × T.
    pub latents: Vec<f64>,
    /// x, dx × T.
    pub observations: Vec<f64>,
    /// The input state v, du × T (zeros without a stimulus).
    pub inputs: Vec<f64>,
}

/// log(1 + eˣ), stable.
pub fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thin SVD of A B against an independent route, the eigendecomposition of the N × N
    /// J Jᵀ: the same singular values; U orthonormal; U · (Uₖᵀ K) rebuilds J. Cases: the
    /// all-ones 3 × 5 product of dimforge/nalgebra#1172 (σ = √15) and random rank-2 and
    /// rank-3 products of 40 and 60 units.
    #[test]
    fn low_rank_svd_rebuilds_the_product_with_its_singular_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut cases = vec![(
            nalgebra::DMatrix::from_element(3, 1, 1.0),
            nalgebra::DMatrix::from_element(1, 5, 1.0),
        )];
        for (n, r) in [(40, 2), (60, 3), (40, 2)] {
            let a = nalgebra::DMatrix::from_fn(n, r, |_, _| rng.sample::<f64, _>(StandardNormal));
            let b = nalgebra::DMatrix::from_fn(r, n, |_, _| rng.sample::<f64, _>(StandardNormal));
            cases.push((a, b));
        }
        for (a, b) in cases {
            let r = a.ncols();
            let j = &a * &b;
            let (u, s, svt) = low_rank_svd(&a, &b);
            let scale = j.norm();
            assert!((&u * &svt - &j).norm() < 1e-12 * scale, "U S Vᵀ ≠ J");
            let utu = u.transpose() * &u;
            assert!((utu - nalgebra::DMatrix::identity(r, r)).norm() < 1e-12);
            let mut eig: Vec<f64> = nalgebra::SymmetricEigen::new(&j * j.transpose())
                .eigenvalues
                .iter()
                .map(|&l| l.max(0.0).sqrt())
                .collect();
            eig.sort_by(|x, y| y.total_cmp(x));
            for q in 0..r {
                assert!(
                    (s[q] - eig[q]).abs() < 1e-10 * scale,
                    "σ{q}: {} vs {}",
                    s[q],
                    eig[q]
                );
                // Rows of Uₖᵀ K have the singular values as their norms.
                assert!((svt.row(q).norm() - s[q]).abs() < 1e-10 * scale);
            }
            assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
        }
        let (_, s, _) = low_rank_svd(
            &nalgebra::DMatrix::from_element(3, 1, 1.0),
            &nalgebra::DMatrix::from_element(1, 5, 1.0),
        );
        assert!((s[0] - 15f64.sqrt()).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn eeg_parameter_count_is_the_papers() {
        let c = ModelConfig::eeg(64);
        assert_eq!(c.n_params_table1(), 3920);
        // The layout stores full R × R noise matrices whose upper triangles are unused (the
        // reference's layout too): 2 · R(R − 1)/2 = 6 more stored scalars than |θ|.
        assert_eq!(c.layout().n_trainable(), 3920 + 6);
    }

    #[test]
    fn full_rank_counts_and_layout_are_the_papers() {
        let mut c = ModelConfig::eeg(64);
        c.transition = Transition::FullRank;
        c.rank = 30;
        c.n_units = 30;
        assert_eq!(c.n_params_table1(), 3939);
        c.rank = 128;
        c.n_units = 128;
        assert_eq!(c.n_params_table1(), 41473);
        let p = c.init_params(3).unwrap();
        let v = c.view(&p).unwrap();
        // M = I and frozen; W = n has the reference's scale (1 − a)·√2/√dz.
        assert!((0..128).all(|i| (0..128).all(|j| v.m[i * 128 + j] == f64::from(i == j))));
        assert!(!c.layout().get("rnn.transition.m").unwrap().trainable);
        let sd = (v.n.iter().map(|w| w * w).sum::<f64>() / v.n.len() as f64).sqrt();
        let want = 0.1 * 2f64.sqrt() / 128f64.sqrt();
        assert!((sd / want - 1.0).abs() < 0.05, "{sd} vs {want}");
        c.n_units = 100;
        assert!(c.validate().unwrap_err().to_string().contains("n_units"));
    }

    #[test]
    fn init_is_seeded_and_generate_is_deterministic() {
        let c = ModelConfig::eeg(8);
        let a = c.init_params(1).unwrap();
        assert_eq!(a, c.init_params(1).unwrap());
        assert_ne!(a, c.init_params(2).unwrap());
        let (z1, x1) = c.generate(&a, &[0.0; 3], 50, 10, 7).unwrap();
        let (z2, x2) = c.generate(&a, &[0.0; 3], 50, 10, 7).unwrap();
        assert_eq!((z1.len(), x1.len()), (150, 400));
        assert_eq!(z1, z2);
        assert_eq!(x1, x2);
        assert!(x1.iter().all(|v| v.is_finite()));
        let v = c.view(&a).unwrap();
        assert!((v.decay - 0.9).abs() < 1e-12);
    }

    /// A driven rollout follows the input convention (filtered input with `simulate_input`,
    /// the stimulus itself without), equals the undriven generator under a zero stimulus, and
    /// responds to a stimulus through Wu.
    #[test]
    fn driven_rollout_filters_the_input_and_matches_generate_at_zero_input() {
        let mut c = ModelConfig::continuous_student();
        c.dim_u = 1;
        c.simulate_input = true;
        let params = c.init_params(3).unwrap();
        let a = c.view(&params).unwrap().decay;
        let tt = 30;
        let u: Vec<f64> = (0..tt)
            .map(|t| if (5..15).contains(&t) { 1.0 } else { 0.0 })
            .collect();
        let run = c.generate_driven(&params, &[0.1, -0.2], &u, 9).unwrap();
        let mut v = 0.0;
        for t in 0..tt {
            if t > 0 {
                v = a * v + (1.0 - a) * u[t - 1];
            }
            assert!((run.inputs[t] - v).abs() < 1e-15, "v[{t}]");
        }
        let zero = c
            .generate_driven(&params, &[0.1, -0.2], &vec![0.0; tt], 9)
            .unwrap();
        let (z, x) = c.generate(&params, &[0.1, -0.2], tt, 0, 9).unwrap();
        assert_eq!(zero.latents, z);
        assert_eq!(zero.observations, x);
        assert_ne!(run.latents, z, "the stimulus drives the latent");
        c.simulate_input = false;
        let raw = c.generate_driven(&params, &[0.1, -0.2], &u, 9).unwrap();
        assert_eq!(raw.inputs, u);
        assert!(c.generate_driven(&params, &[0.0; 2], &[], 1).is_err());
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut c = ModelConfig::eeg(8);
        c.rank = 600;
        assert!(c.validate().unwrap_err().to_string().contains("rank"));
        let c = ModelConfig::eeg(8);
        let mut p = c.init_params(0).unwrap();
        p[3] = f64::NAN;
        assert!(c.view(&p).unwrap_err().to_string().contains("non-finite"));
        assert!(c.view(&p[..10]).is_err());
    }
}
