//! Per-trial plumbing shared by the proposals: input states, ancestor gathering and the
//! routing of adjoints back through the ancestors.

use crate::model::lowrank::ModelConfig;

/// Input state v_t for every step of a trial (and ∂v_t/∂a), both T × du, from the inputs `u`
/// (du × T, row-major). With `simulate_input`, v_0 = 0 and v_t = a v_{t−1} + (1 − a) u_{t−1};
/// otherwise v_t = u_t (SPEC §1.6).
pub(crate) fn input_states(
    c: &ModelConfig,
    decay: f64,
    u: &[f64],
    tt: usize,
) -> (Vec<f64>, Vec<f64>) {
    let du = c.dim_u;
    let mut v = vec![0.0; tt * du];
    let mut s = vec![0.0; tt * du];
    let a = decay;
    for t in 0..tt {
        for l in 0..du {
            if c.simulate_input {
                if t > 0 {
                    let prev = v[(t - 1) * du + l];
                    let up = u[l * tt + t - 1];
                    v[t * du + l] = a * prev + (1.0 - a) * up;
                    s[t * du + l] = prev + a * s[(t - 1) * du + l] - up;
                }
            } else {
                v[t * du + l] = u[l * tt + t];
            }
        }
    }
    (v, s)
}

/// Index of the particle of step t − 1 that particle `kk` of step t descends from: its
/// resampled ancestor while filtering, itself in the last `t_forward` steps.
#[inline]
pub(crate) fn parent(anc: &[usize], t: usize, n_filter: usize, k: usize, kk: usize) -> usize {
    if t - 1 < n_filter {
        anc[(t - 1) * k + kk]
    } else {
        kk
    }
}

/// The previous states of step t's K particles (K × R into `zp`) from the proposed
/// particles `z` (`[t][k][r]`).
#[inline]
pub(crate) fn gather_parents(
    z: &[f64],
    anc: &[usize],
    t: usize,
    n_filter: usize,
    r: usize,
    zp: &mut [f64],
) {
    let k = zp.len() / r;
    for kk in 0..k {
        let from = ((t - 1) * k + parent(anc, t, n_filter, k, kk)) * r;
        zp[kk * r..(kk + 1) * r].copy_from_slice(&z[from..from + r]);
    }
}

/// Adds the adjoints of step t's parents (`dzprev`, K × R) onto the particles of step t − 1
/// they were gathered from (`dz_prev_step`, K × R, overwritten).
#[inline]
pub(crate) fn scatter_to_parents(
    dzprev: &[f64],
    anc: &[usize],
    t: usize,
    n_filter: usize,
    r: usize,
    dz_prev_step: &mut [f64],
) {
    let k = dzprev.len() / r;
    dz_prev_step.iter_mut().for_each(|v| *v = 0.0);
    for kk in 0..k {
        let src = parent(anc, t, n_filter, k, kk);
        for q in 0..r {
            dz_prev_step[src * r + q] += dzprev[kk * r + q];
        }
    }
}

/// Input current e_i = Σ_l Wu[i,l] v_l into `buf` (N), or `None` without inputs.
#[inline]
pub(crate) fn input_current<'b>(
    wu: &[f64],
    du: usize,
    v: &[f64],
    buf: &'b mut [f64],
) -> Option<&'b [f64]> {
    if du == 0 {
        return None;
    }
    for (i, e) in buf.iter_mut().enumerate() {
        let w = &wu[i * du..(i + 1) * du];
        *e = w.iter().zip(v).map(|(a, b)| a * b).sum();
    }
    Some(buf)
}

/// Adds the transition's gradients accumulated in kernel layout (Mᵀ and n as R rows `stride`
/// apart, h) into the flat gradient: M (N × R) at `m`, n (R × N) at `n`, h (N) at `h`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_kernel_grads(
    gmt: &[f64],
    gn: &[f64],
    gh: &[f64],
    stride: usize,
    (units, r): (usize, usize),
    (m, n, h): (usize, usize, usize),
    grad: &mut [f64],
) {
    for i in 0..units {
        for q in 0..r {
            grad[m + i * r + q] += gmt[q * stride + i];
        }
        grad[h + i] += gh[i];
    }
    for q in 0..r {
        for i in 0..units {
            grad[n + q * units + i] += gn[q * stride + i];
        }
    }
}

/// Particle-weighted means Σ_k w_tk z_tk per step (`[t][r]`) of one trial's log weights
/// (`[t][k]`) and proposed particles (`[t][k][r]`).
pub(crate) fn weighted_means(log_w: &[f64], particles: &[f64], r: usize, k: usize) -> Vec<f64> {
    let tt = log_w.len() / k;
    let mut means = vec![0.0; tt * r];
    let mut w = vec![0.0; k];
    for t in 0..tt {
        super::draws::normalised_weights(&log_w[t * k..(t + 1) * k], &mut w);
        for kk in 0..k {
            for q in 0..r {
                means[t * r + q] += w[kk] * particles[(t * k + kk) * r + q];
            }
        }
    }
    means
}
