//! Training: RAdam, learning-rate schedules, the training loop, checkpoints (SPEC §2.10).
