#!/usr/bin/env python3
"""Convert a reference-implementation student (mackelab/smc_rnns, `*_state_dict_rnn.pkl`) into
a lowrank-smc model file, so that `lowrank-smc fixed-points` and `lowrank-smc exec
teacher_student` score it beside our own students (docs/results.md: the published reach
student in "Setup (c), the reach ring"; the reference's bootstrap oscillator students,
trained by scripts/reference-train-student.py, in "Setup (a), the continuous oscillator").

Usage: reference-student-to-model.py STATE_DICT.pkl TEMPLATE_MODEL.h5 OUT.h5

STATE_DICT.pkl: e.g. from a fetched mirror of the reference repository,
    git --git-dir=MIRROR show HEAD:models/students/reach_vae_new_state_dict_rnn.pkl > rnn.pkl
TEMPLATE_MODEL.h5: a fit of ours with the same configuration (for the reach student any
    `teacher_student.reach.fit` output: R = 2, N = 60, full latent noise, one-to-one frozen
    readout of the currents, two inputs; a one-epoch fit will do, `exec fit --set
    train.n_epochs=1 ...`). It supplies the config attributes; its parameters are overwritten.

Needs numpy and h5py, not torch: the state dict is a torch zip archive (pickle + raw
storages), read by reference_common.load_state_dict, which rebuilds each tensor as a numpy
array.
Renames, for the older files (the reference's `vi_rnn/saving.py` backward_compat):
transition.AW (1,1,1,1) -> transition.decay_param (1,), observation.Bias (1,dx,1,1) -> (dx,),
observation.B (dx,dx), which must be diagonal (the one-to-one readout), -> its diagonal.
transition.hz must be zero (our model has no latent bias) and is dropped. A student without
inputs has no transition.Wu: it becomes the template's empty N x 0 matrix. A scalar R_x (older
students, `scalar_noise_x`) is repeated over the template's diagonal R_x: the same model.
"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import load_state_dict  # noqa: E402


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    state_path, template, out = sys.argv[1:4]
    sd = load_state_dict(state_path)
    b = np.asarray(sd["observation.B"])
    if b.ndim == 2:
        if np.abs(b - np.diag(np.diag(b))).max() != 0.0:
            sys.exit(f"{state_path}: observation.B is not diagonal (not a one-to-one readout)")
        b = np.diag(b)
    decay = sd["transition.AW"] if "transition.AW" in sd else sd["transition.decay_param"]
    wu = sd.get("transition.Wu")
    if wu is None:
        wu = np.zeros((sd["transition.m"].shape[0], 0))
    hz = sd.get("transition.hz")
    if hz is not None and np.abs(hz).max() != 0.0:
        sys.exit(f"{state_path}: transition.hz is non-zero; our model has no latent bias")
    params = {
        "R_x": sd["R_x"],
        "R_z": sd["R_z"],
        "R_z_t0": sd["R_z_t0"],
        "initial_state": sd["initial_state"],
        "transition.decay_param": np.asarray(decay).reshape(1),
        "transition.h": sd["transition.h"],
        "transition.n": sd["transition.n"],
        "transition.m": sd["transition.m"],
        "transition.Wu": wu,
        "observation.B": b,
        "observation.Bias": sd["observation.Bias"].reshape(-1),
    }
    shutil.copy(template, out + ".partial")
    with h5py.File(out + ".partial", "r+") as h:
        for name, value in params.items():
            d = h["params"]["rnn." + name]
            if name == "R_x" and value.shape == (1,) and len(d.shape) == 1:
                # Scalar observation noise (older students): the same std on every channel
                # is the diagonal noise with that raw value repeated.
                value = np.repeat(value, d.shape[0])
            if d.shape != value.shape:
                sys.exit(f"{template}: params/rnn.{name} has shape {d.shape}, "
                         f"the reference student {value.shape}")
            d[...] = value.astype(np.float64)
    shutil.move(out + ".partial", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
