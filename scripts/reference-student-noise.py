#!/usr/bin/env python3
"""Latent noise of a published reference student (`models/students/*_state_dict_rnn.pkl` in
mackelab/smc_rnns), as `teacher_student` scores ours: orthogonalised (`latent_noise_std`) and,
for a learnt one-to-one readout gain, gain-matched (`latent_noise_std_gain_matched`).

Reads torch's zip pickles with numpy alone (no torch). Usage:

    git --git-dir SMC_RNNS show HEAD:models/students/rdm_student_new_state_dict_rnn.pkl > rdm.pkl
    python3 scripts/reference-student-noise.py rdm.pkl --teacher-gain 1
    python3 scripts/reference-student-noise.py sine_poisson.pkl --teacher-gain 4

Needs numpy (e.g. the venv of scripts/pynwb-venv.sh).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import load_state_dict  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state_dict", help="a reference student's *_state_dict_rnn.pkl")
    ap.add_argument("--teacher-gain", type=float, default=1.0, help="the teacher's readout gain g")
    a = ap.parse_args()
    d = load_state_dict(a.state_dict)
    m = d["transition.m"].astype(float)
    n = d["transition.n"].astype(float)
    rz = d["R_z"].astype(float)
    r = m.shape[1]
    # The noise's Cholesky factor: diagonal exp(raw / 2), below it the raw entries (full), or
    # a diagonal exp(raw / 2) (diag), as `noise_cholesky` in src/model/lowrank.rs.
    if rz.ndim == 2:
        chol = np.tril(rz)
        np.fill_diagonal(chol, np.exp(np.diag(rz) / 2))
    else:
        chol = np.diag(np.exp(rz / 2))
    # Orthogonalised: the noise in the basis of J = m n's first R left singular vectors.
    u = np.linalg.svd(m @ n)[0][:, :r]
    p = u.T @ m @ chol
    ortho = np.sqrt(np.diag(p @ p.T))
    b = np.diag(d["observation.B"]).astype(float)
    sv = np.linalg.svd(np.diag(b) @ m[: len(b)] @ chol, compute_uv=False)
    print(f"orthogonalised latent noise std: {ortho.mean():.4f} (per direction {np.round(ortho, 4)})")
    print(f"gain-matched (teacher gain {a.teacher_gain:g}): {sv.mean() / abs(a.teacher_gain):.4f}")
    print(f"readout gain b: mean {b.mean():.3f}; observation noise R_x: mean std "
          f"{np.exp(d['R_x'].astype(float) / 2).mean():.4f}")


if __name__ == "__main__":
    main()
