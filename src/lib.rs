//! lowrank-smc: stochastic low-rank RNNs fitted with variational sequential Monte Carlo
//! (Pals et al., NeurIPS 2024), their analysis, and a cached pipeline that runs it all.
//!
//! Dependencies flow one way: `stages` use the science modules (`data`, `model`, `inference`,
//! `train`, `metrics`, `analysis`, `plot`); the science modules never know about the pipeline;
//! `pipeline` knows stages only through its `Stage` trait.

pub mod analysis;
pub mod data;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod plot;
pub mod stages;
pub mod train;
