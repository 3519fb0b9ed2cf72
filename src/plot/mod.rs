//! Figures (plotters, bundled font).
