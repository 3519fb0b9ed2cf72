//! A set of equally long multichannel sequences: the unit of data that training and inference consume.

use super::Real;

/// `n_sequences` sequences of `n_time` steps: observations `x` of shape `(n_sequences, dim_x, n_time)`
/// and inputs `u` of shape `(n_sequences, dim_u, n_time)`, both contiguous row-major
/// (the reference's `(batch, dim, T)` layout). `dim_u` may be 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequences<F: Real> {
    pub n_sequences: usize,
    pub dim_x: usize,
    pub dim_u: usize,
    pub n_time: usize,
    /// `(n_sequences, dim_x, n_time)`
    pub x: Vec<F>,
    /// `(n_sequences, dim_u, n_time)`
    pub u: Vec<F>,
}

impl<F: Real> Sequences<F> {
    /// Observations of sequence `s` as a `(dim_x, n_time)` slice.
    pub fn x_of(&self, s: usize) -> &[F] {
        let len = self.dim_x * self.n_time;
        &self.x[s * len..(s + 1) * len]
    }

    /// Inputs of sequence `s` as a `(dim_u, n_time)` slice (empty when `dim_u == 0`).
    pub fn u_of(&self, s: usize) -> &[F] {
        let len = self.dim_u * self.n_time;
        &self.u[s * len..(s + 1) * len]
    }
}
