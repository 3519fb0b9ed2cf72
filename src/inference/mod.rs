//! Variational SMC: proposals, resampling, filtering ELBO and its gradient (SPEC §2).

pub mod bench;
mod derived;
pub mod draws;
pub mod fastmath;
pub mod kernel;
pub mod kernel32;
pub mod objective;
pub mod optimal;
mod packed;
mod poisson32;
pub mod posterior;
pub mod smc;
pub mod tape;
mod trial;
