//! The stochastic low-rank RNN, its observation models and the CNN encoder (SPEC §1, §2.9).
