//! Variational SMC: proposals, resampling, filtering ELBO and its gradient (SPEC §2).

pub mod draws;
pub mod optimal;
pub mod tape;
