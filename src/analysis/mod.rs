//! Fixed points, Jacobians and stability of piecewise-linear low-rank RNNs (SPEC §4).
