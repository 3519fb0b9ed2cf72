#!/usr/bin/env python3
"""Train the reference implementation's continuous oscillator student (teacher-student setup
(a) of Pals et al. 2024) on OUR simulated data, so that its student can be scored by
`lowrank-smc exec teacher_student` beside ours (docs/results.md, "Setup (a), the continuous
oscillator": the reference's bootstrap student).

The data is a `teacher_student.osc.simulate` output (`sequences.h5`, dataset `x`, trials x
neurons x time), so the two implementations see the same trials and differ only in their
trainer. The model and training configs are those of the reference's notebooks
(reference_common.continuous_config), with `run_eval` off. Training is the reference's own
`vi_rnn.train.train_VAE`, which writes `NAME_state_dict_rnn.pkl` (and the other pickles) into
--out-dir.

Usage (torch, numpy, scipy, h5py in a venv; a work tree of mackelab/smc_rnns):

    python3 scripts/reference-train-student.py --smc-rnns SMC_RNNS \
        --data results/teacher_student/osc/simulate/sequences.h5 --loss bs_smc \
        --seed 1 --threads 1 --out-dir OUT --name bootstrap_seed1

Then convert and score (TEMPLATE.h5: a one-epoch `teacher_student.osc.fit` of the same
proposal; EVAL.json: the params `lowrank-smc show 'teacher_student.osc.eval[proposal=bootstrap,seed=1]'`
prints):

    python3 scripts/reference-student-to-model.py OUT/bootstrap_seed1_state_dict_rnn.pkl TEMPLATE.h5 ref.h5
    lowrank-smc exec teacher_student --params EVAL.json --input data=SEQUENCES.h5 \
        --input model=ref.h5 --input teacher=datasets/teachers/osc_rnn.json
"""

import argparse
import json
import os
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smc-rnns", required=True, help="work tree of mackelab/smc_rnns")
    p.add_argument("--data", required=True, help="teacher_student.osc.simulate sequences.h5")
    p.add_argument("--loss", choices=["bs_smc", "opt_smc"], default="bs_smc")
    p.add_argument("--epochs", type=int, default=1000, help="the notebooks' 1000")
    p.add_argument("--seed", type=int, default=1, help="the notebooks' seed is 1")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", required=True, help="file stem of the saved student")
    return p.parse_args()


ARGS = parse_args()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import Trials, continuous_config, init_torch  # noqa: E402

torch, REF = init_torch(ARGS.threads, ARGS.smc_rnns)
import h5py  # noqa: E402
import numpy as np  # noqa: E402


def load_sequences(path):
    """Our simulated trials as the reference's dataset, and the observation noise they were
    simulated with (the student's init_noise_x in the notebooks)."""
    with h5py.File(path, "r") as h:
        if "x" not in h:
            sys.exit(f"{path}: no dataset 'x' (is it a teacher_student simulate output?)")
        x = np.asarray(h["x"], dtype=np.float32)
        sim = h.attrs.get("simulation")
    if x.ndim != 3:
        sys.exit(f"{path}: x has shape {x.shape}, expected trials x neurons x time")
    if sim is None:
        sys.exit(f"{path}: no 'simulation' attribute (is it a teacher_student simulate output?)")
    r_x = float(json.loads(sim)["observation"]["noise_std"])
    task_params = {"name": "Sine", "dur": x.shape[2], "n_trials": x.shape[0]}
    return Trials(task_params, torch.from_numpy(x), torch), r_x


def main():
    task, r_x = load_sequences(ARGS.data)
    vae_params, training_params = continuous_config(task.data.shape[1], r_x, ARGS.epochs, ARGS.loss)
    # The evaluation every 50 epochs only records statistics; off, it costs no time (it does
    # not change the fit's distribution, only which random numbers the fit draws).
    training_params["run_eval"] = False
    np.random.seed(ARGS.seed)
    torch.manual_seed(ARGS.seed)
    from vi_rnn.vae import VAE
    from vi_rnn.train import train_VAE

    vae = VAE(vae_params)
    os.makedirs(ARGS.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    train_VAE(vae, training_params, task, sync_wandb=False, out_dir=ARGS.out_dir,
              fname=ARGS.name)
    print(f"trained {ARGS.epochs} epochs in {time.perf_counter() - t0:.1f} s "
          f"({torch.get_num_threads()} threads, torch {torch.__version__})", flush=True)


if __name__ == "__main__":
    main()
