#!/usr/bin/env python3
"""Convert the paper's 20 published EEG models (mackelab/smc_rnns, models/sweep_eeg_rs) into
lowrank-smc model files, so they run through `lowrank-smc exec generate` / `exec evaluate` /
`score` beside our own fits (docs/results.md, "The training copy").

Usage: reference-eeg-models.py SMC_RNNS_CHECKOUT TEMPLATE_MODEL.h5 OUT_DIR

SMC_RNNS_CHECKOUT is a work tree of the reference repository (from a bare mirror:
`git --git-dir=MIRROR archive HEAD models/sweep_eeg_rs | tar -x -C DIR`).

TEMPLATE_MODEL.h5 is any `eeg.fit` output (it supplies the config attributes; its parameters are
overwritten). Needs torch and h5py. The published checkpoints predate the current reference
code; the renames are those of its `vi_rnn/saving.py` (backward_compat): transition.AW ->
transition.decay_param, observation.Bias (1, dx, 1, 1) -> (dx,), and transition.hz (all zeros)
dropped.
"""
import glob
import os
import shutil
import sys

import h5py
import torch

repo, template, out_dir = sys.argv[1:4]
os.makedirs(out_dir, exist_ok=True)
files = sorted(glob.glob(os.path.join(repo, "models/sweep_eeg_rs/*state_dict_rnn.pkl")))
if not files:
    sys.exit(f"no models/sweep_eeg_rs/*state_dict_rnn.pkl under {repo}")
for i, f in enumerate(files, start=1):
    sd = torch.load(f, map_location="cpu")
    sd["transition.decay_param"] = sd.pop("transition.AW").view(1)
    sd["observation.Bias"] = sd["observation.Bias"].view(-1)
    hz = sd.pop("transition.hz", None)
    if hz is not None and float(hz.abs().max()) != 0.0:
        sys.exit(f"{f}: transition.hz is non-zero; the current model has no latent bias")
    out = os.path.join(out_dir, f"ref{i}.h5")
    shutil.copy(template, out)
    with h5py.File(out, "r+") as h:
        params = h["params"]
        for name, value in sd.items():
            params["rnn." + name][...] = value.double().numpy()
    print(out, "<-", os.path.basename(f))
