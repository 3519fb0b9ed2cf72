//! The stochastic low-rank RNN, its observation models and the CNN encoder (SPEC §1, §2.9).

pub mod encoder;
pub mod lowrank;
pub mod real;
pub mod sequences;
pub mod teacher;

pub use real::Real;
pub use sequences::Sequences;
