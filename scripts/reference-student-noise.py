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
import collections
import pickle
import zipfile

import numpy as np

DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}


def load_state_dict(path):
    z = zipfile.ZipFile(path)
    root = z.namelist()[0].split("/")[0]

    def rebuild(storage, offset, size, stride, *_):
        dtype, key = storage
        raw = np.frombuffer(z.read(f"{root}/data/{key}"), dtype=dtype)
        if len(size) == 0:
            return raw[offset]
        strides = [s * raw.itemsize for s in stride]
        return np.lib.stride_tricks.as_strided(raw[offset:], shape=size, strides=strides).copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "_rebuild_tensor_v2":
                return rebuild
            if name == "_rebuild_parameter":
                return lambda t, *_: t
            if name in DTYPES:
                return name
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

        def persistent_load(self, pid):
            _, typ, key, _, _ = pid
            return (DTYPES[typ], key)

    return Unpickler(z.open(f"{root}/data.pkl")).load()


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
