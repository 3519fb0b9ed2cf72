//! Evaluation metrics: D_stsp, D_H, spike statistics, NLB scores (SPEC §3).
