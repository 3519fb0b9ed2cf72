"""Shared by the scripts around the reference implementation (mackelab/smc_rnns):
reference-bench.py (epoch timing), reference-train-student.py (a whole student fit on our
data), reference-student-to-model.py and reference-student-noise.py (reading its students).
Holds no reference code: a reader of its saved state dicts that needs numpy alone, the torch
thread set-up, a dataset with the interface the reference's training loop uses, and the
continuous oscillator student's config dicts as its notebooks write them. Importing this
module imports neither torch nor numpy; the functions import what they use.
"""
import collections
import os
import pickle
import sys
import zipfile


def load_state_dict(path):
    """A torch.save'd state dict as {name: numpy array}, without torch."""
    import numpy as np

    dtypes = {
        "FloatStorage": np.float32,
        "DoubleStorage": np.float64,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
    }
    archive = zipfile.ZipFile(path)
    root = archive.namelist()[0].split("/")[0]

    def rebuild_tensor(storage, offset, size, stride, *_):
        size, stride = tuple(size), tuple(stride)
        if not size:
            return storage[offset]
        strides = [s * storage.itemsize for s in stride]
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides)
        return view.copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "_rebuild_tensor_v2":
                return rebuild_tensor
            if name == "_rebuild_parameter":
                return lambda data, requires_grad, hooks: data
            if name == "OrderedDict":
                return collections.OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return name
            return super().find_class(module, name)

        def persistent_load(self, pid):
            _, storage_type, key, _location, _numel = pid
            if storage_type not in dtypes:
                sys.exit(f"{path}: unsupported storage type {storage_type}")
            raw = archive.read(f"{root}/data/{key}")
            return np.frombuffer(raw, dtype=dtypes[storage_type])

    return Unpickler(archive.open(f"{root}/data.pkl")).load()


def init_torch(threads, smc_rnns):
    """Fix the thread count (before torch / MKL / OpenMP initialise), import torch and put the
    reference's work tree on sys.path. Returns (torch, absolute path of the work tree)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    ref = os.path.abspath(smc_rnns)
    if not os.path.isfile(os.path.join(ref, "vi_rnn", "vae.py")):
        sys.exit(f"--smc-rnns {ref}: vi_rnn/vae.py not found")
    sys.path.insert(0, ref)
    return torch, ref


class Trials:
    """Trials (a torch tensor, trials x channels x time) with the interface of the reference's
    datasets that its DataLoader and train_VAE use: data, stim and their *_eval copies; no
    inputs."""

    def __init__(self, task_params, data, torch):
        self.task_params = task_params
        self.data = data
        self.data_eval = self.data
        self.stim = torch.zeros(data.shape[0], 0, data.shape[2])
        self.stim_eval = self.stim

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, idx):
        return self.data[idx], self.stim[idx]


def continuous_config(dim_x, r_x, n_epochs=1000, loss="opt_smc"):
    """Setup (a)'s student: train_student_teacher_continuous.ipynb (loss opt_smc) and
    train_student_teacher_continuous_bootstrap.ipynb (bs_smc), the cell that builds
    rnn_params and training_params, with cuda off. The two notebooks differ in loss_f,
    init_state_eval and simulate_input (True in the first, False in the second; without
    inputs it changes nothing)."""
    bootstrap = loss == "bs_smc"
    rnn_params = {
        "transition": "low_rank",
        "observation": "one_to_one",
        "train_noise_x": True,
        "train_noise_z": True,
        "train_noise_z_t0": True,
        "init_noise_z": 0.1,
        "init_noise_z_t0": 1,
        "init_noise_x": r_x,
        "noise_z": "full",
        "noise_x": "diag",
        "noise_z_t0": "full",
        "identity_readout": True,
        "activation": "relu",
        "decay": 0.7,
        "readout_from": "currents",
        "train_obs_bias": False,
        "train_obs_weights": False,
        "train_neuron_bias": True,
        "weight_dist": "uniform",
        "weight_scaler": 1,
        "initial_state": "trainable",
        "obs_nonlinearity": "identity",
        "obs_likelihood": "Gauss",
        "simulate_input": not bootstrap,
    }
    training_params = student_training_params(
        n_epochs, loss, "prior_sample" if bootstrap else "posterior_sample"
    )
    vae_params = {"dim_x": dim_x, "dim_z": 2, "dim_N": dim_x, "rnn_params": rnn_params}
    return vae_params, training_params


def student_training_params(n_epochs, loss, init_state_eval):
    """The training_params of the teacher-student notebooks (continuous, bootstrap and
    Poisson oscillator students: batch 10, K = 64, RAdam lr 1e-3 -> 1e-5, systematic
    resampling, evaluation every 50 epochs), cuda off."""
    return {
        "lr": 1e-3,
        "lr_end": 1e-5,
        "grad_norm": 0,
        "n_epochs": n_epochs,
        "eval_epochs": 50,
        "batch_size": 10,
        "cuda": False,
        "smoothing": 20,
        "freq_cut_off": 10000,
        "k": 64,
        "loss_f": loss,
        "resample": "systematic",
        "run_eval": True,
        "smooth_at_eval": False,
        "init_state_eval": init_state_eval,
    }
