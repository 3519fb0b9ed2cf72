//! The 1-D CNN encoder e(z_t | x) of the encoder proposal (SPEC §2.5, §2.9; REF `encoders.py`).
//!
//! Layers, exactly as the reference `CNN_encoder`: for i = 1 … L−1,
//! `Pad_i → Conv1d(c_{i−1} → c_i, k_i, valid) → activation`, then `Pad_L` and two parallel heads
//! `Conv1d(c_{L−1} → R, k_L)` giving the mean and the log-variance of every time step (no activation).
//! With `constant_var` the log-variance is one learned R-vector shared by all time steps.
//!
//! Pads on the time axis (`F.pad` semantics, negative amounts crop): causal (k−1, 0),
//! acausal (0, k−1), windowed (k//2, k//2 − 1). ⚠ Windowed padding with an odd kernel shortens the
//! sequence by one per such layer (the reference's behaviour, kept); [`CnnEncoder::output_len`]
//! reports the length and [`CnnEncoder::check_length_preserving`] turns a change into an error for
//! callers (the VSMC) that need one output per time step.
//!
//! The caller slices the input: the VSMC encoder proposal passes `x[:dim_x_in, :T − t_forward]`
//! (held-in channels, no forward-prediction bins), here as the first `dim_x` rows and first `t_in`
//! columns of a row-major `(rows, row_stride)` array.
//!
//! Each convolution is an im2col copy followed by one GEMM (pure-Rust `matrixmultiply`):
//! `pre (c_out × T_out) = W (c_out × c_in·k) · cols (c_in·k × T_out) + b`, with the torch weight
//! layout `(c_out, c_in, k)` read as a row-major `c_out × (c_in·k)` matrix. The backward pass uses
//! `dW += dpre · colsᵀ`, `dcols = Wᵀ · dpre`, then col2im and the adjoint of the padding.
//! In f32 on CPUs with AVX-512F the two products that read `cols` read its rows in place from the
//! padded input instead (row c·k + j starts at padded[c, j]; `sgemm::gemm_listed`): the
//! same products, bit for bit, without the c_in·k × T_out copy.
//! When at most a quarter of the first layer's padded input is nonzero (spike counts), that
//! layer skips the zeros instead: each nonzero adds its weighted taps to the outputs it feeds,
//! and its weight's gradient likewise (`sparse_conv_forward`, `sparse_conv_param_grad`; the first
//! layer needs no input gradient). Only the order of the sums' nonzero terms changes.
//! Parameters live in the project's flat `f64` vector ([`ParamLayout`]) under the reference's names.

use std::any::TypeId;

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    gelu_grad_lanes, gelu_lanes, gemm, gemm_listed, listed_available, Listed, Real, Strided,
};
use crate::train::ParamLayout;

/// Errors from configuring or running the CNN encoder.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncoderError {
    /// A configuration field is invalid.
    #[error("encoder config field `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// The input length is incompatible with a layer's padding (e.g. reflect wider than the input).
    #[error(
        "encoder layer {layer} (kernel {kernel}, padding ({pad_left}, {pad_right}), mode {mode:?}) \
         cannot take an input of length {t_in}: {message}"
    )]
    InputTooShort {
        layer: usize,
        kernel: usize,
        pad_left: isize,
        pad_right: isize,
        mode: PaddingMode,
        t_in: usize,
        message: String,
    },
    /// The output length differs from the input length where the caller needs one per time step.
    #[error(
        "encoder output has {t_out} time steps for {t_in} input steps: windowed padding with an odd \
         kernel size shortens the sequence by one per such layer (kernel_sizes {kernel_sizes:?}); \
         use even kernel sizes with windowed padding, or causal/acausal padding"
    )]
    LengthChanged {
        t_in: usize,
        t_out: usize,
        kernel_sizes: Vec<usize>,
    },
    /// A parameter block is missing or has the wrong shape in a [`ParamLayout`].
    #[error("parameter block `{name}`: expected shape {expected:?}, {found}")]
    Layout {
        name: String,
        expected: Vec<usize>,
        found: String,
    },
    /// A slice passed in has the wrong length.
    #[error("encoder {what}: expected {expected} elements, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The input holds NaN or ±Inf.
    #[error("encoder input x holds a non-finite value at channel {channel}, time {time}")]
    NonFiniteInput { channel: usize, time: usize },
    /// The workspace was built for another encoder.
    #[error("encoder workspace was built for another encoder architecture; create it with CnnEncoder::workspace")]
    WorkspaceMismatch,
}

/// Nonlinearity after each hidden convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderActivation {
    /// Exact GELU, x·Φ(x) with the erf form (torch `nn.GELU()`).
    Gelu,
    /// LeakyReLU with negative slope 0.1.
    LeakyRelu,
}

/// Where the `k − 1` padded steps of each convolution go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingLocation {
    /// (k−1, 0): output at t depends on x_{≤t} (filtering).
    Causal,
    /// (0, k−1): output at t depends on x_{≥t} (smoothing-like).
    Acausal,
    /// (k//2, k//2 − 1): centred window; ⚠ odd k shortens the sequence by one.
    Windowed,
}

/// How padded values are filled (torch `F.pad` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingMode {
    /// Zeros.
    Constant,
    /// Mirror without repeating the edge (needs pad < input length).
    Reflect,
    /// Repeat the edge value.
    Replicate,
    /// Wrap around (needs pad ≤ input length).
    Circular,
}

/// CNN encoder configuration (SPEC §2.9). The reference's `enc_params` keys are accepted as
/// aliases (`init_kernel_sizes`, `n_channels`, `nonlinearity`), so a golden file's `enc_params`
/// JSON deserialises directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Kernel sizes k_1 … k_L (L ≥ 2); the last one is the heads' kernel.
    #[serde(alias = "init_kernel_sizes")]
    pub kernel_sizes: Vec<usize>,
    /// Hidden channel counts c_1 … c_{L−1}.
    #[serde(alias = "n_channels")]
    pub channels: Vec<usize>,
    /// Nonlinearity after each hidden convolution.
    #[serde(alias = "nonlinearity")]
    pub activation: EncoderActivation,
    /// Padding location.
    pub padding_location: PaddingLocation,
    /// Padding mode.
    pub padding_mode: PaddingMode,
    /// Initial proposal standard deviation: the log-variance starts at + 2·ln(init_scale).
    pub init_scale: f64,
    /// Use one learned log-variance vector for all time steps instead of a convolution head.
    #[serde(default)]
    pub constant_var: bool,
}

impl EncoderConfig {
    /// Validates the configuration (L ≥ 2, channel count L − 1, sizes ≥ 1, init_scale > 0).
    pub fn check(&self) -> Result<(), EncoderError> {
        let n_layers = self.kernel_sizes.len();
        if n_layers < 2 {
            return Err(EncoderError::Config {
                field: "kernel_sizes",
                message: format!(
                    "needs at least 2 kernel sizes (hidden layers + heads), got {:?}",
                    self.kernel_sizes
                ),
            });
        }
        if self.channels.len() != n_layers - 1 {
            return Err(EncoderError::Config {
                field: "channels",
                message: format!(
                    "needs len(kernel_sizes) − 1 = {} entries, got {:?}",
                    n_layers - 1,
                    self.channels
                ),
            });
        }
        if let Some(pos) = self.kernel_sizes.iter().position(|&k| k == 0) {
            return Err(EncoderError::Config {
                field: "kernel_sizes",
                message: format!("entry {pos} is 0; kernel sizes must be ≥ 1"),
            });
        }
        if let Some(pos) = self.channels.iter().position(|&c| c == 0) {
            return Err(EncoderError::Config {
                field: "channels",
                message: format!("entry {pos} is 0; channel counts must be ≥ 1"),
            });
        }
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(EncoderError::Config {
                field: "init_scale",
                message: format!("must be finite and > 0, got {}", self.init_scale),
            });
        }
        Ok(())
    }

    /// Time padding (left, right) of a layer with kernel `kernel`; negative values crop.
    pub fn padding(&self, kernel: usize) -> (isize, isize) {
        let k = kernel as isize;
        match self.padding_location {
            PaddingLocation::Causal => (k - 1, 0),
            PaddingLocation::Acausal => (0, k - 1),
            PaddingLocation::Windowed => (k / 2, k / 2 - 1),
        }
    }
}

/// One convolution: shapes, padding and local offsets of its weight `(c_out, c_in, k)` and bias.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConvSpec {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    pad_left: isize,
    pad_right: isize,
    weight: usize,
    bias: usize,
}

impl ConvSpec {
    fn fan_in(&self) -> usize {
        self.c_in * self.kernel
    }
}

/// The log-variance head.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LogvarHead {
    /// `logvar_conv` weight and bias local offsets.
    Conv { weight: usize, bias: usize },
    /// `encoder.logvar` (R) local offset.
    Constant { offset: usize },
}

/// A parameter block of the encoder: where it sits locally and in the flat vector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BlockMap {
    local: usize,
    global: usize,
    len: usize,
}

/// The CNN encoder bound to its blocks in a [`ParamLayout`].
#[derive(Clone, Debug, PartialEq)]
pub struct CnnEncoder {
    config: EncoderConfig,
    dim_x: usize,
    dim_z: usize,
    /// Hidden convolutions, then the mean head (index L−1) with the heads' padding.
    convs: Vec<ConvSpec>,
    logvar_head: LogvarHead,
    blocks: Vec<BlockMap>,
    n_local: usize,
}

/// Reference name of the weight of hidden convolution `layer` (0-based): `encoder.initial_stack.{3i+1}.weight`.
pub fn hidden_weight_name(layer: usize) -> String {
    format!("encoder.initial_stack.{}.weight", 3 * layer + 1)
}

/// Reference name of the bias of hidden convolution `layer` (0-based).
pub fn hidden_bias_name(layer: usize) -> String {
    format!("encoder.initial_stack.{}.bias", 3 * layer + 1)
}

/// Name of the mean head's weight `(R, c_{L−1}, k_L)`.
pub const MEAN_WEIGHT_NAME: &str = "encoder.mean_conv.weight";
/// Name of the mean head's bias `(R)`.
pub const MEAN_BIAS_NAME: &str = "encoder.mean_conv.bias";
/// Name of the log-variance head's weight `(R, c_{L−1}, k_L)`.
pub const LOGVAR_WEIGHT_NAME: &str = "encoder.logvar_conv.weight";
/// Name of the log-variance head's bias `(R)`. ⚠ The reference aliases it as `encoder.logvar`
/// (same tensor); golden gradient files store its gradient under `encoder.logvar` only.
pub const LOGVAR_BIAS_NAME: &str = "encoder.logvar_conv.bias";
/// Name of the constant log-variance vector `(R)` used with `constant_var`.
pub const CONSTANT_LOGVAR_NAME: &str = "encoder.logvar";

impl CnnEncoder {
    /// Appends the encoder's blocks to `layout` (reference names and shapes, hidden layers then
    /// the mean and log-variance heads) and returns the encoder bound to them.
    pub fn push_layout(
        config: &EncoderConfig,
        layout: &mut ParamLayout,
        dim_x: usize,
        dim_z: usize,
    ) -> Result<Self, EncoderError> {
        Self::build(config, dim_x, dim_z, |name, shape| {
            if layout.get(name).is_some() {
                return Err(EncoderError::Layout {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: "a block of that name is already in the layout".to_string(),
                });
            }
            Ok(layout.push(name, shape, true))
        })
    }

    /// Binds the encoder to blocks already in `layout` (e.g. a layout read from a checkpoint),
    /// checking every name and shape.
    pub fn from_layout(
        config: &EncoderConfig,
        layout: &ParamLayout,
        dim_x: usize,
        dim_z: usize,
    ) -> Result<Self, EncoderError> {
        Self::build(config, dim_x, dim_z, |name, shape| match layout.get(name) {
            Some(block) if block.shape == shape => Ok(block.offset),
            Some(block) => Err(EncoderError::Layout {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: format!("found shape {:?}", block.shape),
            }),
            None => Err(EncoderError::Layout {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: "missing from the parameter layout".to_string(),
            }),
        })
    }

    fn build(
        config: &EncoderConfig,
        dim_x: usize,
        dim_z: usize,
        mut place: impl FnMut(&str, &[usize]) -> Result<usize, EncoderError>,
    ) -> Result<Self, EncoderError> {
        config.check()?;
        if dim_x == 0 {
            return Err(EncoderError::Config {
                field: "dim_x",
                message: "the encoder needs at least one input channel".to_string(),
            });
        }
        if dim_z == 0 {
            return Err(EncoderError::Config {
                field: "dim_z",
                message: "the encoder needs a latent dimension ≥ 1".to_string(),
            });
        }
        let n_layers = config.kernel_sizes.len();
        let mut blocks = Vec::new();
        let mut n_local = 0usize;
        let mut add = |name: &str, shape: &[usize]| -> Result<usize, EncoderError> {
            let global = place(name, shape)?;
            let len: usize = shape.iter().product();
            let local = n_local;
            blocks.push(BlockMap { local, global, len });
            n_local += len;
            Ok(local)
        };
        let mut convs = Vec::with_capacity(n_layers);
        let mut c_in = dim_x;
        for layer in 0..n_layers - 1 {
            let c_out = config.channels[layer];
            let kernel = config.kernel_sizes[layer];
            let weight = add(&hidden_weight_name(layer), &[c_out, c_in, kernel])?;
            let bias = add(&hidden_bias_name(layer), &[c_out])?;
            let (pad_left, pad_right) = config.padding(kernel);
            convs.push(ConvSpec {
                c_in,
                c_out,
                kernel,
                pad_left,
                pad_right,
                weight,
                bias,
            });
            c_in = c_out;
        }
        let kernel = config.kernel_sizes[n_layers - 1];
        let weight = add(MEAN_WEIGHT_NAME, &[dim_z, c_in, kernel])?;
        let bias = add(MEAN_BIAS_NAME, &[dim_z])?;
        let (pad_left, pad_right) = config.padding(kernel);
        convs.push(ConvSpec {
            c_in,
            c_out: dim_z,
            kernel,
            pad_left,
            pad_right,
            weight,
            bias,
        });
        let logvar_head = if config.constant_var {
            LogvarHead::Constant {
                offset: add(CONSTANT_LOGVAR_NAME, &[dim_z])?,
            }
        } else {
            let weight = add(LOGVAR_WEIGHT_NAME, &[dim_z, c_in, kernel])?;
            let bias = add(LOGVAR_BIAS_NAME, &[dim_z])?;
            LogvarHead::Conv { weight, bias }
        };
        Ok(Self {
            config: config.clone(),
            dim_x,
            dim_z,
            convs,
            logvar_head,
            blocks,
            n_local,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Number of input channels read from x.
    pub fn dim_x(&self) -> usize {
        self.dim_x
    }

    /// Latent dimension R (rows of mean / logvar).
    pub fn dim_z(&self) -> usize {
        self.dim_z
    }

    /// Number of scalars in the encoder's blocks.
    pub fn n_params(&self) -> usize {
        self.n_local
    }

    /// Smallest flat-vector length that holds every encoder block.
    fn min_flat_len(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.global + b.len)
            .max()
            .unwrap_or(0)
    }

    /// Reference-style initialisation of the encoder's blocks in `params` (torch Conv1d default:
    /// weight and bias U(±1/√(c_in·k)); logvar head bias += 2·ln(init_scale); constant logvar
    /// = 2·ln(init_scale)). Draw order: per convolution (hidden layers, mean, logvar) weight then bias.
    pub fn init_params<R: Rng + ?Sized>(
        &self,
        params: &mut [f64],
        rng: &mut R,
    ) -> Result<(), EncoderError> {
        self.check_flat_len("params", params.len())?;
        let mut local = vec![0.0f64; self.n_local];
        let mut fill_conv = |local: &mut [f64], spec: &ConvSpec, weight: usize, bias: usize| {
            let bound = 1.0 / (spec.fan_in() as f64).sqrt();
            let n_weight = spec.c_out * spec.fan_in();
            for value in &mut local[weight..weight + n_weight] {
                *value = rng.gen_range(-bound..bound);
            }
            for value in &mut local[bias..bias + spec.c_out] {
                *value = rng.gen_range(-bound..bound);
            }
        };
        for spec in &self.convs {
            fill_conv(&mut local, spec, spec.weight, spec.bias);
        }
        let log_var0 = 2.0 * self.config.init_scale.ln();
        let head = &self.convs[self.convs.len() - 1];
        match self.logvar_head {
            LogvarHead::Conv { weight, bias } => {
                fill_conv(&mut local, head, weight, bias);
                for value in &mut local[bias..bias + self.dim_z] {
                    *value += log_var0;
                }
            }
            LogvarHead::Constant { offset } => {
                for value in &mut local[offset..offset + self.dim_z] {
                    *value = log_var0;
                }
            }
        }
        for block in &self.blocks {
            params[block.global..block.global + block.len]
                .copy_from_slice(&local[block.local..block.local + block.len]);
        }
        Ok(())
    }

    fn check_flat_len(&self, what: &'static str, len: usize) -> Result<(), EncoderError> {
        let needed = self.min_flat_len();
        if len < needed {
            return Err(EncoderError::Shape {
                what,
                expected: needed,
                got: len,
            });
        }
        Ok(())
    }

    /// Per-layer lengths for an input of `t_in` steps: `(t_in, t_pad, t_out)` of every convolution
    /// (hidden layers, then the heads), after checking the padding fits (torch's rules: reflect
    /// needs pad < length, circular pad ≤ length, and every output at least one step).
    fn layer_lengths(&self, t_in: usize) -> Result<Vec<(usize, usize, usize)>, EncoderError> {
        let mut lengths = Vec::with_capacity(self.convs.len());
        let mut t = t_in;
        for (layer, spec) in self.convs.iter().enumerate() {
            let fail = |message: String| EncoderError::InputTooShort {
                layer,
                kernel: spec.kernel,
                pad_left: spec.pad_left,
                pad_right: spec.pad_right,
                mode: self.config.padding_mode,
                t_in: t,
                message,
            };
            if t == 0 {
                return Err(fail("the input is empty".to_string()));
            }
            let ti = t as isize;
            let max_pad = spec.pad_left.max(spec.pad_right);
            match self.config.padding_mode {
                PaddingMode::Reflect if max_pad >= ti => {
                    return Err(fail(format!(
                        "reflect padding {max_pad} must be smaller than the input length; \
                         use a shorter kernel, a longer sequence or another padding_mode"
                    )))
                }
                PaddingMode::Circular if max_pad > ti => {
                    return Err(fail(format!(
                        "circular padding {max_pad} must not exceed the input length; \
                         use a shorter kernel, a longer sequence or another padding_mode"
                    )))
                }
                _ => {}
            }
            let t_pad = ti + spec.pad_left + spec.pad_right;
            let t_out = t_pad - spec.kernel as isize + 1;
            if t_pad < 1 || t_out < 1 {
                return Err(fail(format!(
                    "the padded length {t_pad} is shorter than the kernel {}",
                    spec.kernel
                )));
            }
            lengths.push((t, t_pad as usize, t_out as usize));
            t = t_out as usize;
        }
        Ok(lengths)
    }

    /// Number of output time steps for `t_in` input steps (= t_in except for windowed padding with
    /// odd kernels, which loses one step per such layer).
    pub fn output_len(&self, t_in: usize) -> Result<usize, EncoderError> {
        let lengths = self.layer_lengths(t_in)?;
        Ok(lengths.last().map_or(t_in, |&(_, _, t_out)| t_out))
    }

    /// Errors unless the encoder returns exactly one output per input step for `t_in` steps.
    pub fn check_length_preserving(&self, t_in: usize) -> Result<(), EncoderError> {
        let t_out = self.output_len(t_in)?;
        if t_out != t_in {
            return Err(EncoderError::LengthChanged {
                t_in,
                t_out,
                kernel_sizes: self.config.kernel_sizes.clone(),
            });
        }
        Ok(())
    }

    /// Buffers for one sequence of `t_in` steps; reuse it across sequences and calls.
    pub fn workspace<F: Real>(&self, t_in: usize) -> Result<EncoderWorkspace<F>, EncoderError> {
        let lengths = self.layer_lengths(t_in)?;
        let mut layers = Vec::with_capacity(self.convs.len());
        let mut max_act = 0usize;
        let mut max_cols = 0usize;
        let mut max_padded = 0usize;
        for (spec, &(t_layer_in, t_pad, t_out)) in self.convs.iter().zip(&lengths) {
            let src_index = (0..t_pad)
                .map(|p| {
                    source_index(
                        p as isize - spec.pad_left,
                        t_layer_in,
                        self.config.padding_mode,
                    )
                })
                .collect();
            let is_head = layers.len() == self.convs.len() - 1;
            let n_act = if is_head { 0 } else { spec.c_out * t_out };
            let first_hidden = layers.is_empty() && !is_head;
            max_act = max_act.max(spec.c_out * t_out).max(spec.c_in * t_layer_in);
            max_cols = max_cols.max(spec.fan_in() * t_out);
            max_padded = max_padded.max(spec.c_in * t_pad);
            layers.push(LayerBuffers {
                c_in: spec.c_in,
                c_out: spec.c_out,
                kernel: spec.kernel,
                t_in: t_layer_in,
                t_pad,
                t_out,
                src_index,
                padded: vec![F::zero(); spec.c_in * t_pad],
                cols: vec![F::zero(); spec.fan_in() * t_out],
                in_place: in_place_planned::<F>(spec.fan_in(), t_out),
                row_starts: (0..spec.fan_in())
                    .map(|i| (i / spec.kernel) * t_pad + i % spec.kernel)
                    .collect(),
                pre: vec![F::zero(); n_act],
                out: vec![F::zero(); n_act],
                cdf: match self.config.activation {
                    EncoderActivation::Gelu => vec![F::zero(); n_act],
                    EncoderActivation::LeakyRelu => Vec::new(),
                },
                sparse: false,
                nonzero: Vec::with_capacity(if first_hidden { spec.c_in * t_pad } else { 0 }),
                by_time: vec![F::zero(); if first_hidden { n_act } else { 0 }],
                dw_t: vec![
                    F::zero();
                    if first_hidden {
                        spec.fan_in() * spec.c_out
                    } else {
                        0
                    }
                ],
            });
        }
        let t_out = lengths.last().map_or(t_in, |l| l.2);
        let n_out = self.dim_z * t_out;
        Ok(EncoderWorkspace {
            t_in,
            t_out,
            layers,
            mean: vec![F::zero(); n_out],
            logvar: vec![F::zero(); n_out],
            d_mean: vec![F::zero(); n_out],
            d_logvar: vec![F::zero(); n_out],
            d_act: vec![F::zero(); max_act],
            d_cols: vec![F::zero(); max_cols],
            d_padded: vec![F::zero(); max_padded],
            grad: vec![F::zero(); self.n_local],
            sparse_input: true,
        })
    }

    /// Copies the encoder's blocks of the flat vector `params` into `weights` (cast to `F`);
    /// call once per parameter update, not per sequence.
    pub fn load_weights<F: Real>(
        &self,
        params: &[f64],
        weights: &mut EncoderWeights<F>,
    ) -> Result<(), EncoderError> {
        self.check_flat_len("params", params.len())?;
        weights.values.resize(self.n_local, F::zero());
        for block in &self.blocks {
            for (dst, &src) in weights.values[block.local..block.local + block.len]
                .iter_mut()
                .zip(&params[block.global..block.global + block.len])
            {
                *dst = F::c(src);
            }
        }
        weights.first_t.clear();
        if self.convs.len() > 1 {
            let spec = &self.convs[0];
            let (c_out, fan_in) = (spec.c_out, spec.fan_in());
            let w = &weights.values[spec.weight..spec.weight + c_out * fan_in];
            weights.first_t.resize(fan_in * c_out, F::zero());
            transpose(w, c_out, fan_in, &mut weights.first_t, false);
        }
        Ok(())
    }

    /// The encoder's weights from the flat vector `params`, cast to `F`.
    pub fn weights<F: Real>(&self, params: &[f64]) -> Result<EncoderWeights<F>, EncoderError> {
        let mut weights = EncoderWeights {
            values: Vec::new(),
            first_t: Vec::new(),
        };
        self.load_weights(params, &mut weights)?;
        Ok(weights)
    }

    fn check_workspace<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        ws: &EncoderWorkspace<F>,
    ) -> Result<(), EncoderError> {
        if weights.values.len() != self.n_local {
            return Err(EncoderError::Shape {
                what: "weights",
                expected: self.n_local,
                got: weights.values.len(),
            });
        }
        let matches = ws.layers.len() == self.convs.len()
            && ws.grad.len() == self.n_local
            && ws.mean.len() == self.dim_z * ws.t_out
            && ws
                .layers
                .iter()
                .zip(&self.convs)
                .all(|(l, s)| l.c_in == s.c_in && l.c_out == s.c_out && l.kernel == s.kernel);
        if matches {
            Ok(())
        } else {
            Err(EncoderError::WorkspaceMismatch)
        }
    }

    /// Forward pass for one sequence: reads x[c, t] = `x[c·row_stride + t]` for c < dim_x,
    /// t < `ws.t_in()`, and writes `ws.mean()` and `ws.logvar()` (R × T_out, row-major).
    pub fn forward<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        x: &[F],
        row_stride: usize,
        ws: &mut EncoderWorkspace<F>,
    ) -> Result<(), EncoderError> {
        self.check_workspace(weights, ws)?;
        let t_in = ws.t_in;
        if row_stride < t_in || x.len() < (self.dim_x - 1) * row_stride + t_in {
            return Err(EncoderError::Shape {
                what: "input x (dim_x rows of row_stride ≥ t_in)",
                expected: (self.dim_x - 1) * row_stride.max(t_in) + t_in,
                got: x.len(),
            });
        }
        for channel in 0..self.dim_x {
            let row = &x[channel * row_stride..channel * row_stride + t_in];
            if let Some(time) = row.iter().position(|v| !v.is_finite()) {
                return Err(EncoderError::NonFiniteInput { channel, time });
            }
        }
        let w = &weights.values;
        let n_hidden = self.convs.len() - 1;
        let activation = self.config.activation;
        for layer in 0..=n_hidden {
            let (before, rest) = ws.layers.split_at_mut(layer);
            let buffers = &mut rest[0];
            if layer == 0 {
                buffers.pad_from(x, row_stride);
            } else {
                let prev = &before[layer - 1];
                buffers.pad_from(&prev.out, prev.t_out);
            }
            let spec = &self.convs[layer];
            buffers.sparse =
                layer == 0 && layer < n_hidden && ws.sparse_input && buffers.collect_sparse();
            if !buffers.sparse && !buffers.in_place {
                buffers.im2col();
            }
            if layer < n_hidden {
                if buffers.sparse {
                    sparse_conv_forward(
                        buffers,
                        &weights.first_t,
                        &w[spec.bias..spec.bias + spec.c_out],
                    );
                } else {
                    conv_gemm(
                        ColsRef::of(
                            &buffers.cols,
                            &buffers.padded,
                            &buffers.row_starts,
                            buffers.in_place,
                        ),
                        spec.fan_in(),
                        buffers.t_out,
                        &w[spec.weight..spec.weight + spec.c_out * spec.fan_in()],
                        &w[spec.bias..spec.bias + spec.c_out],
                        &mut buffers.pre,
                    );
                }
                let LayerBuffers { pre, out, cdf, .. } = buffers;
                match activation {
                    EncoderActivation::Gelu => {
                        if !gelu_lanes(pre, out, cdf) {
                            for ((o, c), &p) in out.iter_mut().zip(cdf.iter_mut()).zip(pre.iter()) {
                                *c = gelu_cdf(p);
                                *o = p * *c;
                            }
                        }
                    }
                    EncoderActivation::LeakyRelu => {
                        let slope = F::c(LEAKY_SLOPE);
                        for (o, &p) in out.iter_mut().zip(pre.iter()) {
                            *o = if p > F::zero() { p } else { p * slope };
                        }
                    }
                }
            } else {
                conv_gemm(
                    buffers.source(),
                    spec.fan_in(),
                    buffers.t_out,
                    &w[spec.weight..spec.weight + spec.c_out * spec.fan_in()],
                    &w[spec.bias..spec.bias + spec.c_out],
                    &mut ws.mean,
                );
                match self.logvar_head {
                    LogvarHead::Conv { weight, bias } => conv_gemm(
                        buffers.source(),
                        spec.fan_in(),
                        buffers.t_out,
                        &w[weight..weight + spec.c_out * spec.fan_in()],
                        &w[bias..bias + spec.c_out],
                        &mut ws.logvar,
                    ),
                    LogvarHead::Constant { offset } => {
                        let t_out = ws.t_out;
                        for r in 0..self.dim_z {
                            ws.logvar[r * t_out..(r + 1) * t_out].fill(w[offset + r]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Backward pass for one sequence after [`forward`](Self::forward) with the same `ws`:
    /// given d loss/d mean and d loss/d logvar (R × T_out), adds (+=) d loss/d θ into the encoder's
    /// blocks of the flat gradient vector `grad`.
    pub fn backward<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        ws: &mut EncoderWorkspace<F>,
        d_mean: &[F],
        d_logvar: &[F],
        grad: &mut [f64],
    ) -> Result<(), EncoderError> {
        self.check_workspace(weights, ws)?;
        self.check_flat_len("grad", grad.len())?;
        for (what, slice) in [("d_mean", d_mean), ("d_logvar", d_logvar)] {
            if slice.len() != ws.mean.len() {
                return Err(EncoderError::Shape {
                    what,
                    expected: ws.mean.len(),
                    got: slice.len(),
                });
            }
        }
        ws.d_mean.copy_from_slice(d_mean);
        ws.d_logvar.copy_from_slice(d_logvar);
        self.backward_local(weights, ws);
        self.add_local_grad(&ws.grad, grad);
        Ok(())
    }

    /// Backward pass for one sequence that keeps the parameter gradient in the workspace
    /// ([`EncoderWorkspace::local_grad`], overwritten): reads the output gradients set with
    /// [`EncoderWorkspace::output_grads_mut`]. For callers that run sequences in their own parallel
    /// loop; add the result with [`accumulate_grad`](Self::accumulate_grad) in a fixed order.
    pub fn backward_to_workspace<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        ws: &mut EncoderWorkspace<F>,
    ) -> Result<(), EncoderError> {
        self.check_workspace(weights, ws)?;
        self.backward_local(weights, ws);
        Ok(())
    }

    /// Adds (+=) the workspace's parameter gradient into the encoder's blocks of the flat `grad`.
    pub fn accumulate_grad<F: Real>(
        &self,
        ws: &EncoderWorkspace<F>,
        grad: &mut [f64],
    ) -> Result<(), EncoderError> {
        self.check_flat_len("grad", grad.len())?;
        if ws.grad.len() != self.n_local {
            return Err(EncoderError::WorkspaceMismatch);
        }
        self.add_local_grad(&ws.grad, grad);
        Ok(())
    }

    /// Adds a local gradient (encoder block order) into the flat gradient vector.
    fn add_local_grad<F: Real>(&self, local: &[F], grad: &mut [f64]) {
        for block in &self.blocks {
            for (dst, src) in grad[block.global..block.global + block.len]
                .iter_mut()
                .zip(&local[block.local..block.local + block.len])
            {
                *dst += src.f64();
            }
        }
    }

    /// Backward pass into `ws.grad` (overwritten) from `ws.d_mean`, `ws.d_logvar`.
    fn backward_local<F: Real>(&self, weights: &EncoderWeights<F>, ws: &mut EncoderWorkspace<F>) {
        let w = &weights.values;
        let EncoderWorkspace {
            layers,
            d_mean,
            d_logvar,
            d_act,
            d_cols,
            d_padded,
            grad,
            t_out: t_final,
            ..
        } = ws;
        grad.fill(F::zero());
        let n_hidden = self.convs.len() - 1;
        let head = &self.convs[n_hidden];
        let head_buffers = &layers[n_hidden];
        // Heads: parameter gradients, then d cols = W_meanᵀ d_mean (+ W_logvarᵀ d_logvar).
        conv_param_grad(head_buffers, d_mean, grad, head.weight, head.bias);
        let n_cols = head.fan_in() * head_buffers.t_out;
        let head_weight = &w[head.weight..head.weight + head.c_out * head.fan_in()];
        cols_grad(
            head_buffers,
            head_weight,
            d_mean,
            &mut d_cols[..n_cols],
            F::zero(),
        );
        match self.logvar_head {
            LogvarHead::Conv { weight, bias } => {
                conv_param_grad(head_buffers, d_logvar, grad, weight, bias);
                let logvar_weight = &w[weight..weight + head.c_out * head.fan_in()];
                cols_grad(
                    head_buffers,
                    logvar_weight,
                    d_logvar,
                    &mut d_cols[..n_cols],
                    F::one(),
                );
            }
            LogvarHead::Constant { offset } => {
                let t_out = *t_final;
                for r in 0..self.dim_z {
                    grad[offset + r] += d_logvar[r * t_out..(r + 1) * t_out]
                        .iter()
                        .copied()
                        .sum::<F>();
                }
            }
        }
        // Propagate through hidden layers, last to first.
        for layer in (0..n_hidden).rev() {
            let above = &layers[layer + 1];
            let n_in = above.c_in * above.t_in;
            above.cols_to_input_grad(d_cols, d_padded, &mut d_act[..n_in]);
            let buffers = &mut layers[layer];
            let spec = &self.convs[layer];
            // d pre = d out ⊙ act'(pre), in place.
            let d_pre = &mut d_act[..n_in];
            match self.config.activation {
                EncoderActivation::Gelu => {
                    if !gelu_grad_lanes(d_pre, &buffers.pre, &buffers.cdf) {
                        for ((d, &p), &c) in d_pre.iter_mut().zip(&buffers.pre).zip(&buffers.cdf) {
                            *d *= gelu_derivative(p, c);
                        }
                    }
                }
                EncoderActivation::LeakyRelu => {
                    let slope = F::c(LEAKY_SLOPE);
                    for (d, &p) in d_pre.iter_mut().zip(&buffers.pre) {
                        if p <= F::zero() {
                            *d *= slope;
                        }
                    }
                }
            }
            if buffers.sparse {
                sparse_conv_param_grad(buffers, d_pre, grad, spec.weight, spec.bias);
            } else {
                conv_param_grad(buffers, d_pre, grad, spec.weight, spec.bias);
            }
            if layer > 0 {
                let n_cols = spec.fan_in() * buffers.t_out;
                let weight = &w[spec.weight..spec.weight + spec.c_out * spec.fan_in()];
                cols_grad(buffers, weight, d_pre, &mut d_cols[..n_cols], F::zero());
            }
        }
    }

    /// Forward pass of a batch, parallel over sequences: sequence s reads `inputs[s]` (dim_x rows
    /// of `row_stride`) and writes into `workspaces[s]` (`inputs.len() == workspaces.len()`; for a
    /// short last batch pass `&mut workspaces[..n]`, and the same sub-slice to
    /// [`backward_batch`](Self::backward_batch)). Results do not depend on the thread count.
    pub fn forward_batch<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        inputs: &[&[F]],
        row_stride: usize,
        workspaces: &mut [EncoderWorkspace<F>],
    ) -> Result<(), EncoderError> {
        if inputs.len() != workspaces.len() {
            return Err(EncoderError::Shape {
                what: "workspaces (exactly one per sequence of the batch; pass a sub-slice for a short batch)",
                expected: inputs.len(),
                got: workspaces.len(),
            });
        }
        let results: Vec<Result<(), EncoderError>> = inputs
            .par_iter()
            .zip(workspaces.par_iter_mut())
            .map(|(x, ws)| self.forward(weights, x, row_stride, ws))
            .collect();
        results.into_iter().collect()
    }

    /// Backward pass of a batch after [`forward_batch`](Self::forward_batch): reads each
    /// workspace's output gradients (set them with [`EncoderWorkspace::output_grads_mut`]),
    /// runs the sequences in parallel and adds (+=) their parameter gradients into `grad` in
    /// sequence order (deterministic whatever the thread count).
    pub fn backward_batch<F: Real>(
        &self,
        weights: &EncoderWeights<F>,
        workspaces: &mut [EncoderWorkspace<F>],
        grad: &mut [f64],
    ) -> Result<(), EncoderError> {
        self.check_flat_len("grad", grad.len())?;
        for ws in workspaces.iter() {
            self.check_workspace(weights, ws)?;
        }
        workspaces
            .par_iter_mut()
            .for_each(|ws| self.backward_local(weights, ws));
        for ws in workspaces.iter() {
            self.add_local_grad(&ws.grad, grad);
        }
        Ok(())
    }
}

const LEAKY_SLOPE: f64 = 0.1;

/// Index into the unpadded input for padded position offset `s = p − pad_left` (torch `F.pad`
/// semantics); `NO_SOURCE` for a zero of constant padding.
///
/// A negative pad crops. torch differs between modes when one side crops and the other pads
/// (circular wraps the cropped sequence, reflect mirrors the original one), but the encoder's pads
/// never mix signs: the only negative amount is windowed k = 1, i.e. (0, −1).
fn source_index(s: isize, t: usize, mode: PaddingMode) -> u32 {
    let n = t as isize;
    let idx = if (0..n).contains(&s) {
        s
    } else {
        match mode {
            PaddingMode::Constant => return NO_SOURCE,
            PaddingMode::Reflect => {
                if s < 0 {
                    -s
                } else {
                    2 * (n - 1) - s
                }
            }
            PaddingMode::Replicate => s.clamp(0, n - 1),
            PaddingMode::Circular => s.rem_euclid(n),
        }
    };
    idx as u32
}

const NO_SOURCE: u32 = u32::MAX;

/// Buffers of one convolution for one sequence.
#[derive(Clone, Debug)]
struct LayerBuffers<F> {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    t_in: usize,
    t_pad: usize,
    t_out: usize,
    /// For each padded position, the input time it copies (`NO_SOURCE`: zero).
    src_index: Vec<u32>,
    /// Padded input (c_in × t_pad).
    padded: Vec<F>,
    /// im2col matrix (c_in·k × t_out): cols[(c·k + j), t] = padded[c, t + j]. Unused (never
    /// written) when `in_place`.
    cols: Vec<F>,
    /// The products read the im2col matrix's rows in place from `padded` (f32 with AVX-512F;
    /// [`gemm_listed`]), at the starts `row_starts[c·k + j] = c·t_pad + j`.
    in_place: bool,
    row_starts: Vec<usize>,
    /// Pre-activation (c_out × t_out); empty for the heads.
    pre: Vec<F>,
    /// Activation output (c_out × t_out); empty for the heads.
    out: Vec<F>,
    /// GELU only: Φ(pre) = 0.5 (1 + erf(pre/√2)), kept for the backward pass.
    cdf: Vec<F>,
    /// First hidden layer only: the last forward pass ran sparse (few nonzero inputs, e.g.
    /// spike counts), so `cols` is stale and `nonzero` lists the padded input's nonzeros.
    sparse: bool,
    /// (channel, padded position, value) of the padded input's nonzeros, channel-major.
    nonzero: Vec<(u32, u32, F)>,
    /// First hidden layer only: t_out × c_out (the pre-activation, then its adjoint, time-major).
    by_time: Vec<F>,
    /// First hidden layer only: c_in·k × c_out (the weight's adjoint, transposed).
    dw_t: Vec<F>,
}

impl<F: Real> LayerBuffers<F> {
    /// Fills `padded` from `input[c·row_stride + t]`.
    fn pad_from(&mut self, input: &[F], row_stride: usize) {
        for c in 0..self.c_in {
            let row = &input[c * row_stride..c * row_stride + self.t_in];
            let dst = &mut self.padded[c * self.t_pad..(c + 1) * self.t_pad];
            for (d, &s) in dst.iter_mut().zip(&self.src_index) {
                *d = if s == NO_SOURCE {
                    F::zero()
                } else {
                    row[s as usize]
                };
            }
        }
    }

    /// cols[(c·k + j), :] = padded[c, j .. j + t_out] (row c·k + j starts at `row_starts`).
    fn im2col(&mut self) {
        fill_rows(&mut self.cols, &self.padded, &self.row_starts, self.t_out);
    }

    /// Adjoint of im2col and padding: `d_input (c_in × t_in) = unpadᵀ(col2im(d_cols))`.
    fn cols_to_input_grad(&self, d_cols: &[F], d_padded: &mut [F], d_input: &mut [F]) {
        let (k, t_out, t_pad, t_in) = (self.kernel, self.t_out, self.t_pad, self.t_in);
        let d_padded = &mut d_padded[..self.c_in * t_pad];
        d_padded.fill(F::zero());
        for c in 0..self.c_in {
            let dst = &mut d_padded[c * t_pad..(c + 1) * t_pad];
            for j in 0..k {
                let row = c * k + j;
                for (d, &g) in dst[j..j + t_out]
                    .iter_mut()
                    .zip(&d_cols[row * t_out..(row + 1) * t_out])
                {
                    *d += g;
                }
            }
        }
        d_input.fill(F::zero());
        for c in 0..self.c_in {
            let src = &d_padded[c * t_pad..(c + 1) * t_pad];
            let dst = &mut d_input[c * t_in..(c + 1) * t_in];
            for (&g, &s) in src.iter().zip(&self.src_index) {
                if s != NO_SOURCE {
                    dst[s as usize] += g;
                }
            }
        }
    }
}

/// Layers whose depth (c_in·k) or length (t_out) is below this keep the im2col copy (the
/// in-place kernel is not checked against `matrixmultiply` for shallower products).
const IN_PLACE_MIN: usize = 4;

/// A layer of depth `fan_in` (c_in·k) and `t_out` outputs runs its products in place.
fn in_place_planned<F: Real>(fan_in: usize, t_out: usize) -> bool {
    listed_available::<F>() && fan_in >= IN_PLACE_MIN && t_out >= IN_PLACE_MIN
}

/// The im2col matrix a product reads: the copy in `cols`, or its rows in place in the padded
/// input (with their starts).
#[derive(Clone, Copy)]
enum ColsRef<'a, F> {
    Copied(&'a [F]),
    InPlace(&'a [F], &'a [usize]),
}

impl<'a, F> ColsRef<'a, F> {
    fn of(cols: &'a [F], padded: &'a [F], starts: &'a [usize], in_place: bool) -> Self {
        if in_place {
            ColsRef::InPlace(padded, starts)
        } else {
            ColsRef::Copied(cols)
        }
    }
}

impl<F: Real> LayerBuffers<F> {
    fn source(&self) -> ColsRef<'_, F> {
        ColsRef::of(&self.cols, &self.padded, &self.row_starts, self.in_place)
    }
}

/// `target (c_out × t_out) = W (c_out × fan_in) · cols (fan_in × t_out) + b`.
fn conv_gemm<F: Real>(
    cols: ColsRef<'_, F>,
    fan_in: usize,
    t_out: usize,
    weight: &[F],
    bias: &[F],
    target: &mut [F],
) {
    let c_out = bias.len();
    for (row, &b) in target.chunks_exact_mut(t_out).zip(bias) {
        row.fill(b);
    }
    let copy;
    let cols = match cols {
        ColsRef::InPlace(padded, starts) => {
            if gemm_listed(
                (c_out, fan_in, t_out),
                (weight, Strided(fan_in), 1),
                (padded, Listed(starts)),
                F::one(),
                target,
                (t_out, 1),
            ) {
                return;
            }
            copy = copy_rows(padded, starts, t_out);
            &copy[..]
        }
        ColsRef::Copied(cols) => cols,
    };
    gemm(
        c_out,
        fan_in,
        t_out,
        weight,
        (fan_in as isize, 1),
        cols,
        (t_out as isize, 1),
        F::one(),
        target,
        (t_out as isize, 1),
    );
}

/// The im2col matrix (one row of `len` per start) copied into `cols` from its rows in `padded`.
fn fill_rows<F: Real>(cols: &mut [F], padded: &[F], starts: &[usize], len: usize) {
    for (row, &s) in cols.chunks_exact_mut(len).zip(starts) {
        row.copy_from_slice(&padded[s..s + len]);
    }
}

/// A new copy of the im2col matrix (the fallback of an in-place product that [`gemm_listed`]
/// declines, which the layers' plans avoid).
fn copy_rows<F: Real>(padded: &[F], starts: &[usize], len: usize) -> Vec<F> {
    let mut cols = vec![F::zero(); starts.len() * len];
    fill_rows(&mut cols, padded, starts, len);
    cols
}

/// Parameter gradient of one convolution: `dW += d_pre · colsᵀ`, `db += Σ_t d_pre`.
fn conv_param_grad<F: Real>(
    buffers: &LayerBuffers<F>,
    d_pre: &[F],
    grad: &mut [F],
    weight: usize,
    bias: usize,
) {
    let (c_out, t_out) = (buffers.c_out, buffers.t_out);
    let fan_in = buffers.c_in * buffers.kernel;
    let dw = &mut grad[weight..weight + c_out * fan_in];
    let copy;
    let cols = match buffers.source() {
        ColsRef::InPlace(padded, starts) => {
            // dWᵀ (fan_in × c_out) += cols · d_preᵀ, as `gemm` orients this product: the same
            // fused multiply-adds in the same order.
            let mut d_pre_t = vec![F::zero(); t_out * c_out];
            transpose(d_pre, c_out, t_out, &mut d_pre_t, false);
            if gemm_listed(
                (fan_in, t_out, c_out),
                (padded, Listed(starts), 1),
                (&d_pre_t, Strided(c_out)),
                F::one(),
                dw,
                (1, fan_in),
            ) {
                None
            } else {
                copy = copy_rows(padded, starts, t_out);
                Some(&copy[..])
            }
        }
        ColsRef::Copied(cols) => Some(cols),
    };
    if let Some(cols) = cols {
        gemm(
            c_out,
            t_out,
            fan_in,
            d_pre,
            (t_out as isize, 1),
            cols,
            (1, t_out as isize),
            F::one(),
            dw,
            (fan_in as isize, 1),
        );
    }
    for (g, row) in grad[bias..bias + c_out]
        .iter_mut()
        .zip(d_pre.chunks_exact(t_out))
    {
        *g += row.iter().copied().sum::<F>();
    }
}

/// The first layer's input counts as sparse when at most this share of it is nonzero.
const SPARSE_SHARE: usize = 4;

impl<F: Real> LayerBuffers<F> {
    /// Lists the padded input's nonzeros; true if they are few enough (≤ 1/[`SPARSE_SHARE`])
    /// for the sparse pass.
    fn collect_sparse(&mut self) -> bool {
        self.nonzero.clear();
        let limit = self.padded.len() / SPARSE_SHARE;
        for c in 0..self.c_in {
            let row = &self.padded[c * self.t_pad..(c + 1) * self.t_pad];
            for (s, &v) in row.iter().enumerate() {
                if v != F::zero() {
                    if self.nonzero.len() == limit {
                        return false;
                    }
                    self.nonzero.push((c as u32, s as u32, v));
                }
            }
        }
        true
    }

    /// The output steps t = s − j that padded position `s` feeds, as the range of j.
    #[inline(always)]
    fn taps(&self, s: usize) -> std::ops::Range<usize> {
        let first = (s + 1).saturating_sub(self.t_out);
        first..self.kernel.min(s + 1)
    }
}

/// `dst += a · x`, element by element (a multiply, then an add: the same bits whatever the
/// vector width the compiler picks).
#[inline(always)]
fn axpy<F: Real>(dst: &mut [F], a: F, x: &[F]) {
    // Fixed-length chunks, so that the compiler vectorises them.
    const CHUNK: usize = 16;
    let mut dc = dst.chunks_exact_mut(CHUNK);
    let mut xc = x.chunks_exact(CHUNK);
    for (d, v) in (&mut dc).zip(&mut xc) {
        // Through registers: local copies, which nothing else can alias.
        let mut acc = [F::zero(); CHUNK];
        let mut xs = [F::zero(); CHUNK];
        acc.copy_from_slice(d);
        xs.copy_from_slice(v);
        for i in 0..CHUNK {
            acc[i] += a * xs[i];
        }
        d.copy_from_slice(&acc);
    }
    for (d, &v) in dc.into_remainder().iter_mut().zip(xc.remainder()) {
        *d += a * v;
    }
}

/// The convolution of a sparse input (the first hidden layer on spike counts): for each
/// nonzero padded input v at (c, s) and each tap j with t = s − j an output step,
/// `pre[:, t] += v · W[:, c·k + j]`, time-major in `by_time`, then `pre` (c_out × t_out) from it.
/// `first_t` is W transposed (c_in·k × c_out). Skipping the zeros changes only the order of the
/// sum's nonzero terms against [`conv_gemm`].
fn sparse_conv_forward<F: Real>(buffers: &mut LayerBuffers<F>, first_t: &[F], bias: &[F]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { sparse_conv_forward_avx512(buffers, first_t, bias) };
    }
    sparse_conv_forward_body(buffers, first_t, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sparse_conv_forward_avx512<F: Real>(
    buffers: &mut LayerBuffers<F>,
    first_t: &[F],
    bias: &[F],
) {
    sparse_conv_forward_body(buffers, first_t, bias);
}

#[inline(always)]
fn sparse_conv_forward_body<F: Real>(buffers: &mut LayerBuffers<F>, first_t: &[F], bias: &[F]) {
    let (c_out, t_out, k) = (buffers.c_out, buffers.t_out, buffers.kernel);
    for row in buffers.by_time.chunks_exact_mut(c_out) {
        row.copy_from_slice(bias);
    }
    for &(c, s, v) in &buffers.nonzero {
        let (c, s) = (c as usize, s as usize);
        for j in buffers.taps(s) {
            let t = s - j;
            let tap = (c * k + j) * c_out;
            axpy(
                &mut buffers.by_time[t * c_out..(t + 1) * c_out],
                v,
                &first_t[tap..tap + c_out],
            );
        }
    }
    transpose(&buffers.by_time, t_out, c_out, &mut buffers.pre, false);
}

/// `dst (cols × rows) = srcᵀ` (or `+=` with `add`) for a row-major `src` (rows × cols), in
/// tiles of 16 rows so that the strided side stays in L1.
#[inline(always)]
fn transpose<F: Real>(src: &[F], rows: usize, cols: usize, dst: &mut [F], add: bool) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c in 0..cols {
            let out = &mut dst[c * rows + r0..c * rows + r1];
            for (i, d) in out.iter_mut().enumerate() {
                let v = src[(r0 + i) * cols + c];
                if add {
                    *d += v;
                } else {
                    *d = v;
                }
            }
        }
    }
}

/// [`conv_param_grad`] after [`sparse_conv_forward`]: `dW[:, c·k + j] += v · d_pre[:, s − j]`
/// over the nonzeros, `db += Σ_t d_pre`.
fn sparse_conv_param_grad<F: Real>(
    buffers: &mut LayerBuffers<F>,
    d_pre: &[F],
    grad: &mut [F],
    weight: usize,
    bias: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { sparse_conv_param_grad_avx512(buffers, d_pre, grad, weight, bias) };
    }
    sparse_conv_param_grad_body(buffers, d_pre, grad, weight, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sparse_conv_param_grad_avx512<F: Real>(
    buffers: &mut LayerBuffers<F>,
    d_pre: &[F],
    grad: &mut [F],
    weight: usize,
    bias: usize,
) {
    sparse_conv_param_grad_body(buffers, d_pre, grad, weight, bias);
}

#[inline(always)]
fn sparse_conv_param_grad_body<F: Real>(
    buffers: &mut LayerBuffers<F>,
    d_pre: &[F],
    grad: &mut [F],
    weight: usize,
    bias: usize,
) {
    let (c_out, t_out, k) = (buffers.c_out, buffers.t_out, buffers.kernel);
    let fan_in = buffers.c_in * k;
    transpose(d_pre, c_out, t_out, &mut buffers.by_time, false);
    buffers.dw_t.fill(F::zero());
    for &(c, s, v) in &buffers.nonzero {
        let (c, s) = (c as usize, s as usize);
        for j in buffers.taps(s) {
            let t = s - j;
            let tap = (c * k + j) * c_out;
            axpy(
                &mut buffers.dw_t[tap..tap + c_out],
                v,
                &buffers.by_time[t * c_out..(t + 1) * c_out],
            );
        }
    }
    transpose(
        &buffers.dw_t,
        fan_in,
        c_out,
        &mut grad[weight..weight + c_out * fan_in],
        true,
    );
    for (g, row) in grad[bias..bias + c_out]
        .iter_mut()
        .zip(d_pre.chunks_exact(t_out))
    {
        *g += row.iter().copied().sum::<F>();
    }
}

/// `d_cols = Wᵀ · d_pre + beta · d_cols` (c_in·k × t_out).
fn cols_grad<F: Real>(
    buffers: &LayerBuffers<F>,
    weight: &[F],
    d_pre: &[F],
    d_cols: &mut [F],
    beta: F,
) {
    let (c_out, t_out) = (buffers.c_out, buffers.t_out);
    let fan_in = buffers.c_in * buffers.kernel;
    gemm(
        fan_in,
        c_out,
        t_out,
        weight,
        (1, fan_in as isize),
        d_pre,
        (t_out as isize, 1),
        beta,
        d_cols,
        (t_out as isize, 1),
    );
}

/// erf in the precision of `F` (libm `erf` / `erff`).
#[inline]
fn erf<F: Real>(x: F) -> F {
    if TypeId::of::<F>() == TypeId::of::<f32>() {
        F::c(libm::erff(x.f64() as f32) as f64)
    } else {
        F::c(libm::erf(x.f64()))
    }
}

/// 1/√(2π), the normal density's factor in the GELU's derivative.
pub(super) const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Φ(x) = 0.5 · (1 + erf(x / √2)); exact GELU as torch is x · Φ(x).
#[inline]
pub(super) fn gelu_cdf<F: Real>(x: F) -> F {
    F::c(0.5) * (F::one() + erf(x * F::c(std::f64::consts::FRAC_1_SQRT_2)))
}

/// d GELU / dx as torch: Φ(x) + x · exp(−x²/2) / √(2π), given `cdf` = Φ(x).
#[inline]
pub(super) fn gelu_derivative<F: Real>(x: F, cdf: F) -> F {
    let pdf = (F::c(-0.5) * x * x).exp() * F::c(INV_SQRT_2PI);
    cdf + x * pdf
}

/// The encoder's weights cast to `F`, in the encoder's block order (see [`CnnEncoder::load_weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderWeights<F> {
    values: Vec<F>,
    /// The first hidden layer's weight transposed (c_in·k × c_out) for its sparse pass
    /// ([`sparse_conv_forward`]); empty when the encoder has no hidden layer.
    first_t: Vec<F>,
}

impl<F: Real> EncoderWeights<F> {
    /// The weights in the encoder's local block order.
    pub fn values(&self) -> &[F] {
        &self.values
    }
}

/// Per-sequence buffers of the encoder (activations kept for the backward pass, outputs, output
/// gradients, a local parameter gradient). Allocated once by [`CnnEncoder::workspace`].
#[derive(Clone, Debug)]
pub struct EncoderWorkspace<F> {
    t_in: usize,
    t_out: usize,
    /// Hidden layers, then the heads.
    layers: Vec<LayerBuffers<F>>,
    mean: Vec<F>,
    logvar: Vec<F>,
    d_mean: Vec<F>,
    d_logvar: Vec<F>,
    d_act: Vec<F>,
    d_cols: Vec<F>,
    d_padded: Vec<F>,
    grad: Vec<F>,
    /// The first hidden layer may skip zero inputs (see [`Self::set_sparse_input`]).
    sparse_input: bool,
}

impl<F: Real> EncoderWorkspace<F> {
    /// Tests: the products of every layer read the im2col copy (`false`) or, where planned, the
    /// padded input in place (`true`, the default).
    #[cfg(test)]
    fn set_in_place(&mut self, on: bool) {
        for layer in &mut self.layers {
            layer.in_place = on && in_place_planned::<F>(layer.row_starts.len(), layer.t_out);
        }
    }

    /// Lets the first hidden layer skip the input's zeros when at most a quarter of the (padded)
    /// input is nonzero, as with spike counts (on by default). The result differs from the
    /// dense pass only in the order of the sums' nonzero terms.
    pub fn set_sparse_input(&mut self, on: bool) {
        self.sparse_input = on;
    }

    /// Input length the workspace was built for.
    pub fn t_in(&self) -> usize {
        self.t_in
    }

    /// Output length (rows of `mean` / `logvar` have this many steps).
    pub fn t_out(&self) -> usize {
        self.t_out
    }

    /// Encoder means μ_e (R × T_out, row-major) from the last forward pass.
    pub fn mean(&self) -> &[F] {
        &self.mean
    }

    /// Encoder log-variances (R × T_out, row-major) from the last forward pass.
    pub fn logvar(&self) -> &[F] {
        &self.logvar
    }

    /// Buffers for d loss/d mean and d loss/d logvar (R × T_out) read by
    /// [`CnnEncoder::backward_batch`]; the caller overwrites them.
    pub fn output_grads_mut(&mut self) -> (&mut [F], &mut [F]) {
        (&mut self.d_mean, &mut self.d_logvar)
    }

    /// Parameter gradient of the last backward pass, in the encoder's local block order.
    pub fn local_grad(&self) -> &[F] {
        &self.grad
    }

    /// Heap bytes held by the workspace.
    pub fn bytes(&self) -> usize {
        let layer_elems: usize = self
            .layers
            .iter()
            .map(|l| l.padded.len() + l.cols.len() + l.pre.len() + l.out.len() + l.cdf.len())
            .sum();
        let index_bytes: usize = self.layers.iter().map(|l| 4 * l.src_index.len()).sum();
        let elems = layer_elems
            + self.mean.len()
            + self.logvar.len()
            + self.d_mean.len()
            + self.d_logvar.len()
            + self.d_act.len()
            + self.d_cols.len()
            + self.d_padded.len()
            + self.grad.len();
        elems * std::mem::size_of::<F>() + index_bytes
    }
}

/// One benchmark result line.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderBenchLine {
    /// What was timed.
    pub case: String,
    /// Best wall-clock seconds over the repeats.
    pub seconds: f64,
    /// Giga floating-point operations (2·m·k·n per GEMM) per timed run.
    pub gflop: f64,
    /// The stated budget in seconds (the encoder's share of a 0.75 s epoch is not fixed; the
    /// whole epoch budget is reported).
    pub reference_seconds: f64,
    /// `reference_seconds / seconds` (> 1: faster than the budget).
    pub ratio: f64,
    /// Heap bytes of the batch's workspaces (one per sequence of a batch).
    pub workspace_bytes: usize,
}

impl std::fmt::Display for EncoderBenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:.3} s ({:.2} GFLOP, {:.1} GFLOP/s, workspaces {:.1} MB) · budget {:.2} s, ratio {:.1}×",
            self.case,
            self.seconds,
            self.gflop,
            self.gflop / self.seconds.max(1e-12),
            self.workspace_bytes as f64 / 1e6,
            self.reference_seconds,
            self.ratio
        )
    }
}

/// Times forward + backward of the Poisson teacher–student encoder (dim_x 40, R 2, T 200,
/// kernels [21, 11, 1], channels [64, 64], GELU, causal zero padding) for one epoch: 400
/// sequences in batches of 10, in f32 and f64, best of 3. The reference budget is the whole
/// training epoch (0.75 s).
pub fn bench_encoder() -> Vec<EncoderBenchLine> {
    let config = EncoderConfig {
        kernel_sizes: vec![21, 11, 1],
        channels: vec![64, 64],
        activation: EncoderActivation::Gelu,
        padding_location: PaddingLocation::Causal,
        padding_mode: PaddingMode::Constant,
        init_scale: 0.1,
        constant_var: false,
    };
    let (dim_x, dim_z, t, n_seq, batch) = (40usize, 2usize, 200usize, 400usize, 10usize);
    let mut layout = ParamLayout::new();
    let encoder = match CnnEncoder::push_layout(&config, &mut layout, dim_x, dim_z) {
        Ok(encoder) => encoder,
        Err(_) => return Vec::new(),
    };
    let flops_per_seq: f64 = encoder
        .convs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mk = (s.c_out * s.fan_in() * t) as f64 * 2.0;
            let heads = if i == encoder.convs.len() - 1 && !config.constant_var {
                2.0
            } else {
                1.0
            };
            // forward, dW, and d cols except for the first layer.
            heads * mk * if i == 0 { 2.0 } else { 3.0 }
        })
        .sum();
    let lines = [
        bench_one::<f32>(
            &encoder,
            layout.len(),
            dim_x,
            t,
            n_seq,
            batch,
            flops_per_seq,
        ),
        bench_one::<f64>(
            &encoder,
            layout.len(),
            dim_x,
            t,
            n_seq,
            batch,
            flops_per_seq,
        ),
    ];
    lines.into_iter().flatten().collect()
}

fn bench_one<F: Real>(
    encoder: &CnnEncoder,
    n_params: usize,
    dim_x: usize,
    t: usize,
    n_seq: usize,
    batch: usize,
    flops_per_seq: f64,
) -> Option<EncoderBenchLine> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut params = vec![0.0; n_params];
    encoder.init_params(&mut params, &mut rng).ok()?;
    let weights = encoder.weights::<F>(&params).ok()?;
    let data: Vec<F> = (0..batch * dim_x * t)
        .map(|_| F::c(rng.gen_range(0..4) as f64))
        .collect();
    let inputs: Vec<&[F]> = data.chunks_exact(dim_x * t).collect();
    let mut workspaces = (0..batch)
        .map(|_| encoder.workspace::<F>(t))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut grad = vec![0.0; n_params];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        for _ in 0..n_seq / batch {
            encoder
                .forward_batch(&weights, &inputs, t, &mut workspaces)
                .ok()?;
            for ws in workspaces.iter_mut() {
                let (d_mean, d_logvar) = ws.output_grads_mut();
                d_mean.fill(F::c(0.01));
                d_logvar.fill(F::c(-0.01));
            }
            encoder
                .backward_batch(&weights, &mut workspaces, &mut grad)
                .ok()?;
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let reference_seconds = 0.75;
    Some(EncoderBenchLine {
        case: format!(
            "encoder fwd+bwd Poisson teacher-student epoch ({n_seq} seq, T {t}, {}, {} threads)",
            std::any::type_name::<F>(),
            rayon::current_num_threads()
        ),
        seconds: best,
        gflop: flops_per_seq * n_seq as f64 * 1e-9,
        reference_seconds,
        ratio: reference_seconds / best,
        workspace_bytes: workspaces.iter().map(EncoderWorkspace::bytes).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config(location: PaddingLocation, mode: PaddingMode) -> EncoderConfig {
        EncoderConfig {
            kernel_sizes: vec![4, 3, 2],
            channels: vec![5, 3],
            activation: EncoderActivation::Gelu,
            padding_location: location,
            padding_mode: mode,
            init_scale: 0.5,
            constant_var: false,
        }
    }

    #[test]
    fn source_index_matches_torch_pad_semantics() {
        // x = [a b c d], pad (2, 2)
        let idx = |mode| -> Vec<u32> {
            (-2..6)
                .map(|s| source_index(s, 4, mode))
                .collect::<Vec<_>>()
        };
        assert_eq!(idx(PaddingMode::Reflect), vec![2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(idx(PaddingMode::Replicate), vec![0, 0, 0, 1, 2, 3, 3, 3]);
        assert_eq!(idx(PaddingMode::Circular), vec![2, 3, 0, 1, 2, 3, 0, 1]);
        let constant = idx(PaddingMode::Constant);
        assert_eq!(constant[0], NO_SOURCE);
        assert_eq!(constant[7], NO_SOURCE);
        assert_eq!(&constant[2..6], &[0, 1, 2, 3]);
    }

    #[test]
    fn layout_names_and_shapes_follow_the_reference() {
        let mut layout = ParamLayout::new();
        let cfg = config(PaddingLocation::Causal, PaddingMode::Constant);
        let encoder = CnnEncoder::push_layout(&cfg, &mut layout, 7, 2).unwrap();
        let names: Vec<(&str, &[usize])> = layout
            .blocks()
            .iter()
            .map(|b| (b.name.as_str(), b.shape.as_slice()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("encoder.initial_stack.1.weight", &[5, 7, 4][..]),
                ("encoder.initial_stack.1.bias", &[5][..]),
                ("encoder.initial_stack.4.weight", &[3, 5, 3][..]),
                ("encoder.initial_stack.4.bias", &[3][..]),
                ("encoder.mean_conv.weight", &[2, 3, 2][..]),
                ("encoder.mean_conv.bias", &[2][..]),
                ("encoder.logvar_conv.weight", &[2, 3, 2][..]),
                ("encoder.logvar_conv.bias", &[2][..]),
            ]
        );
        assert_eq!(encoder.n_params(), layout.len());
        let bound = CnnEncoder::from_layout(&cfg, &layout, 7, 2).unwrap();
        assert_eq!(bound, encoder);
        assert!(matches!(
            CnnEncoder::from_layout(&cfg, &layout, 6, 2),
            Err(EncoderError::Layout { .. })
        ));
    }

    /// The first layer's sparse pass on spike counts against the dense one: outputs and every
    /// parameter's gradient, in f64 and f32, for each padding location.
    #[test]
    fn sparse_first_layer_matches_the_dense_pass() {
        fn check<F: Real>(location: PaddingLocation, mode: PaddingMode, tol: f64) {
            let cfg = EncoderConfig {
                kernel_sizes: vec![9, 5, 1],
                channels: vec![16, 8],
                ..config(location, mode)
            };
            let (dim_x, dim_z, t) = (7, 2, 40);
            let mut layout = ParamLayout::new();
            let encoder = CnnEncoder::push_layout(&cfg, &mut layout, dim_x, dim_z).unwrap();
            let mut params = vec![0.0; layout.len()];
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            encoder.init_params(&mut params, &mut rng).unwrap();
            let weights = encoder.weights::<F>(&params).unwrap();
            // Counts, about one bin in eight nonzero.
            let x: Vec<F> = (0..dim_x * t)
                .map(|_| {
                    let u: f64 = rng.gen();
                    F::c(if u < 0.08 {
                        1.0
                    } else if u < 0.12 {
                        2.0
                    } else {
                        0.0
                    })
                })
                .collect();
            // Windowed padding with odd kernels shortens the output.
            let t_out = encoder.output_len(t).unwrap();
            let d_mean: Vec<F> = (0..dim_z * t_out)
                .map(|_| F::c(rng.gen_range(-1.0..1.0)))
                .collect();
            let d_logvar: Vec<F> = (0..dim_z * t_out)
                .map(|_| F::c(rng.gen_range(-1.0..1.0)))
                .collect();
            let run = |sparse: bool| {
                let mut ws = encoder.workspace::<F>(t).unwrap();
                ws.set_sparse_input(sparse);
                encoder.forward(&weights, &x, t, &mut ws).unwrap();
                assert_eq!(ws.layers[0].sparse, sparse, "{location:?} {mode:?}");
                let mut grad = vec![0.0; layout.len()];
                encoder
                    .backward(&weights, &mut ws, &d_mean, &d_logvar, &mut grad)
                    .unwrap();
                let out: Vec<f64> = ws
                    .mean()
                    .iter()
                    .chain(ws.logvar())
                    .map(|v| v.f64())
                    .collect();
                (out, grad)
            };
            let (out_sparse, grad_sparse) = run(true);
            let (out_dense, grad_dense) = run(false);
            let scale = |v: &[f64]| v.iter().fold(0.0f64, |m, a| m.max(a.abs()));
            for (what, a, b) in [
                ("outputs", &out_sparse, &out_dense),
                ("gradient", &grad_sparse, &grad_dense),
            ] {
                let s = scale(b);
                assert!(s > 0.0);
                for (i, (u, v)) in a.iter().zip(b.iter()).enumerate() {
                    assert!(
                        (u - v).abs() <= tol * s,
                        "{location:?} {mode:?} {what}[{i}]: sparse {u} vs dense {v}"
                    );
                }
            }
        }
        for (location, mode) in [
            (PaddingLocation::Causal, PaddingMode::Circular),
            (PaddingLocation::Causal, PaddingMode::Constant),
            (PaddingLocation::Acausal, PaddingMode::Reflect),
            (PaddingLocation::Windowed, PaddingMode::Replicate),
        ] {
            check::<f64>(location, mode, 1e-13);
            check::<f32>(location, mode, 1e-5);
        }
    }

    /// The convolutions' products read in place from the padded input give the bits of the
    /// products of the im2col copy: outputs and every parameter's gradient, for kernels of 1–11
    /// taps, each padding and two lengths (column remainders in the kernel's masked vectors).
    #[test]
    fn in_place_products_give_the_bits_of_im2col() {
        if !listed_available::<f32>() {
            eprintln!("no AVX-512F: the products read the im2col copy, nothing to compare");
            return;
        }
        for (location, mode) in [
            (PaddingLocation::Causal, PaddingMode::Circular),
            (PaddingLocation::Causal, PaddingMode::Constant),
            (PaddingLocation::Acausal, PaddingMode::Reflect),
            (PaddingLocation::Windowed, PaddingMode::Replicate),
        ] {
            for t in [37, 200] {
                let cfg = EncoderConfig {
                    kernel_sizes: vec![11, 5, 1],
                    channels: vec![24, 16],
                    ..config(location, mode)
                };
                let (dim_x, dim_z) = (9, 3);
                let mut layout = ParamLayout::new();
                let encoder = CnnEncoder::push_layout(&cfg, &mut layout, dim_x, dim_z).unwrap();
                let mut params = vec![0.0; layout.len()];
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t as u64);
                encoder.init_params(&mut params, &mut rng).unwrap();
                let weights = encoder.weights::<f32>(&params).unwrap();
                let x: Vec<f32> = (0..dim_x * t).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let t_out = encoder.output_len(t).unwrap();
                let d: Vec<f32> = (0..2 * dim_z * t_out)
                    .map(|_| rng.gen_range(-1.0..1.0))
                    .collect();
                let run = |in_place: bool| {
                    let mut ws = encoder.workspace::<f32>(t).unwrap();
                    ws.set_sparse_input(false);
                    ws.set_in_place(in_place);
                    assert_eq!(ws.layers.iter().any(|l| l.in_place), in_place);
                    encoder.forward(&weights, &x, t, &mut ws).unwrap();
                    let mut grad = vec![0.0; layout.len()];
                    let (d_mean, d_logvar) = d.split_at(dim_z * t_out);
                    encoder
                        .backward(&weights, &mut ws, d_mean, d_logvar, &mut grad)
                        .unwrap();
                    let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                    let hidden: Vec<u32> =
                        ws.layers[..2].iter().flat_map(|l| bits(&l.out)).collect();
                    (bits(ws.mean()), bits(ws.logvar()), hidden, grad)
                };
                let (copied, in_place) = (run(false), run(true));
                let what = format!("{location:?} {mode:?} T = {t}");
                assert_eq!(copied.0, in_place.0, "{what}: means");
                assert_eq!(copied.1, in_place.1, "{what}: log-variances");
                assert_eq!(copied.2, in_place.2, "{what}: hidden activations");
                for (i, (a, b)) in copied.3.iter().zip(&in_place.3).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what}: gradient[{i}] {a} vs {b}");
                }
                assert!(copied.3.iter().any(|&g| g != 0.0));
            }
        }
    }

    #[test]
    fn init_follows_torch_conv_bounds_and_init_scale() {
        let mut layout = ParamLayout::new();
        let mut cfg = config(PaddingLocation::Causal, PaddingMode::Constant);
        cfg.init_scale = 0.2;
        let _ = CnnEncoder::push_layout(&cfg, &mut layout, 7, 2).unwrap();
        let encoder = CnnEncoder::from_layout(&cfg, &layout, 7, 2).unwrap();
        let mut params = vec![0.0; layout.len()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        encoder.init_params(&mut params, &mut rng).unwrap();
        let block = |name: &str| &params[layout.get(name).unwrap().range()];
        let b1 = 1.0 / (7.0f64 * 4.0).sqrt();
        assert!(block("encoder.initial_stack.1.weight")
            .iter()
            .all(|v| v.abs() < b1));
        let head_bound = 1.0 / 6.0f64.sqrt();
        let shift = 2.0 * 0.2f64.ln();
        assert!(block(LOGVAR_BIAS_NAME)
            .iter()
            .all(|v| (v - shift).abs() < head_bound));
        // Weights are spread over the whole interval, not constant.
        let w = block("encoder.initial_stack.1.weight");
        let max = w.iter().cloned().fold(f64::MIN, f64::max);
        assert!(max > 0.8 * b1);

        let mut layout = ParamLayout::new();
        cfg.constant_var = true;
        let encoder = CnnEncoder::push_layout(&cfg, &mut layout, 7, 2).unwrap();
        assert!(layout.get(LOGVAR_WEIGHT_NAME).is_none());
        let mut params = vec![0.0; layout.len()];
        encoder.init_params(&mut params, &mut rng).unwrap();
        assert_eq!(
            &params[layout.get(CONSTANT_LOGVAR_NAME).unwrap().range()],
            &[shift, shift]
        );
    }

    #[test]
    fn config_check_rejects_bad_configs() {
        let good = config(PaddingLocation::Causal, PaddingMode::Constant);
        assert!(good.check().is_ok());
        let mut bad = good.clone();
        bad.kernel_sizes = vec![3];
        bad.channels = vec![];
        assert!(matches!(
            bad.check(),
            Err(EncoderError::Config {
                field: "kernel_sizes",
                ..
            })
        ));
        let mut bad = good.clone();
        bad.channels = vec![4];
        assert!(matches!(
            bad.check(),
            Err(EncoderError::Config {
                field: "channels",
                ..
            })
        ));
        let mut bad = good.clone();
        bad.init_scale = 0.0;
        assert!(matches!(
            bad.check(),
            Err(EncoderError::Config {
                field: "init_scale",
                ..
            })
        ));
        let mut bad = good;
        bad.kernel_sizes[1] = 0;
        assert!(bad.check().is_err());
        let yaml = "kernel_sizes: [3, 1]\nchannels: [4]\nactivation: leaky_relu\n\
                    padding_location: windowed\npadding_mode: reflect\ninit_scale: 0.1\n";
        let parsed: EncoderConfig = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(parsed.activation, EncoderActivation::LeakyRelu);
        assert!(!parsed.constant_var);
        assert!(
            serde_yaml_ng::from_str::<EncoderConfig>(&format!("{yaml}kernels: [1]\n")).is_err()
        );
    }

    #[test]
    fn gemm_matches_the_naive_product() {
        let a: Vec<f64> = (0..6).map(|v| v as f64 * 0.5 - 1.0).collect();
        let b: Vec<f64> = (0..12).map(|v| (v as f64).sin()).collect();
        let mut c = vec![1.0; 8];
        gemm(2, 3, 4, &a, (3, 1), &b, (4, 1), 1.0, &mut c, (4, 1));
        for i in 0..2 {
            for j in 0..4 {
                let want: f64 = 1.0 + (0..3).map(|l| a[i * 3 + l] * b[l * 4 + j]).sum::<f64>();
                assert!((c[i * 4 + j] - want).abs() < 1e-14);
            }
        }
    }
}
