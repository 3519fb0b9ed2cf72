//! Fixed points, Jacobians and stability of piecewise-linear low-rank RNNs (SPEC §4).

pub mod cli;
pub mod fixed_points;
pub mod scyfi;
