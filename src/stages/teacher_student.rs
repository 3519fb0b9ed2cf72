//! The `teacher_student` kind: how well a student fitted to teacher data recovers its teacher
//! (Pals et al. 2024 Fig 3, Fig S5; SPEC §5.1) — one row per measure in a tidy table with the
//! target, a pass/fail column and `data_source = simulated`:
//!
//! - **noise recovery**: the student's latent noise std in its orthogonalised basis (the
//!   reference's `orthogonalise_network`: P = U_Rᵀ M with U from the SVD of M N, Σ' = P Σ Pᵀ,
//!   std = sqrt(diag Σ')) against the simulation's true R_z (target ±20 %);
//! - **spontaneous dynamics**: long noisy runs without input from the teacher (its latent
//!   form with the simulation's noise and observation model) and from the student (its prior,
//!   sampled observations); the channel-averaged autocorrelation of both (target: max |Δ| over
//!   the first `max_lag` lags < 0.1), the oscillation period from its first peak (±5 %), and for
//!   count data the correlation of per-neuron mean rates (≥ 0.9) and of the neuron pairs'
//!   correlations (scatter plots of both with `rate_statistics`); the power spectra of both
//!   (per unit, z-scored, smoothed and averaged over runs as D_H's, `pse.py`) and their
//!   Hellinger distance, averaged over units; the ACF and spectrum rows give beside the
//!   student's distance that of a second set of the teacher's runs (the floor that sampling
//!   sets);
//! - **fixed points** (rank-2 and rank-1 models): exact enumeration for both, counts of all and
//!   of stable points (target: the student has the teacher's number of stable points).
//!
//! ```yaml
//! - name: ts.osc.eval
//!   kind: teacher_student
//!   params: {setup: osc_continuous, seed: 1}
//!   inputs: {model: "ts.osc.fit:model", data: "ts.osc.simulate:sequences",
//!            teacher: "dataset:teacher_osc_rnn"}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fit::load_model;
use super::simulate::read_teacher;
use crate::analysis::cli::map_from_json;
use crate::analysis::fixed_points::{find_fixed_points, FixedPointSet, Options, PwlMap, Stability};
use crate::data::sequences_io::read_attr;
use crate::data::simulate::{simulate, SimulatedObservation, SimulationConfig, StimulusTask};
use crate::metrics::dh::{hellinger, normalised_spectrum};
use crate::metrics::rates::autocorrelation;
use crate::model::lowrank::{low_rank_svd, noise_cholesky, ModelConfig, Observation};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::Table;
use crate::plot::{
    line_plot, line_plot_with, raster_panels, trace_panels, Axes, RasterPanel, Series, TracePanel,
};

fn default_runs() -> usize {
    10
}
fn default_run_length() -> usize {
    1000
}
fn default_burn_in() -> usize {
    500
}
fn default_max_lag() -> usize {
    100
}
fn default_location_tolerance() -> f64 {
    0.25
}
fn default_spectrum_smoothing() -> f64 {
    2.0
}

/// Which measures are scored against a target (the others are reported only).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Noise recovery within this relative error (paper profile: 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_rel_error: Option<f64>,
    /// Autocorrelation max |Δ| (0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acf_max_abs_diff: Option<f64>,
    /// Oscillation period relative error (0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_rel_error: Option<f64>,
    /// Mean-rate correlation at least (0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_correlation: Option<f64>,
    /// The student has the teacher's number of stable fixed points.
    #[serde(default)]
    pub stable_fixed_points: bool,
}

/// Params of a `teacher_student` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherStudentParams {
    /// Setup label carried into the table (e.g. `osc_continuous`).
    pub setup: String,
    /// Seed of the long runs (and the label of the student's seed).
    pub seed: u64,
    /// Long runs per model.
    #[serde(default = "default_runs")]
    pub n_runs: usize,
    /// Steps kept per run.
    #[serde(default = "default_run_length")]
    pub run_length: usize,
    /// Steps discarded at the start of each run.
    #[serde(default = "default_burn_in")]
    pub burn_in: usize,
    /// Autocorrelation lags compared.
    #[serde(default = "default_max_lag")]
    pub max_lag: usize,
    /// σ in frequency bins of the Gaussian smoothing of each run's power spectrum (D_H's
    /// 20 is for recordings of thousands of steps; 2 keeps an oscillation's peak, at bin 20 of
    /// a 1000-step run for a period of 50, apart from zero frequency).
    #[serde(default = "default_spectrum_smoothing")]
    pub spectrum_smoothing: f64,
    /// Scored measures.
    #[serde(default)]
    pub targets: Targets,
    /// A teacher's stable fixed point counts as located when a student's stable point lies
    /// within this fraction of the radius of the teacher's stable points of it, in the data
    /// space (0.25: the reach teacher's neighbouring attractors lie 0.64–0.79 radii apart).
    #[serde(default = "default_location_tolerance")]
    pub location_tolerance: f64,
    /// Phase portraits of teacher and student (rank-2 models): flow, nullclines, fixed points.
    #[serde(default)]
    pub phase_portrait: bool,
    /// Fig S6 (models with an input): the stimulus of six trials, the teacher's latent against
    /// its filtered input, and the student's, driven by the same stimulus, with the fixed points
    /// at zero input. Needs the simulation's true latents as input `latents`.
    #[serde(default)]
    pub input_response: bool,
    /// Fig 3's rate statistics (count data): per-neuron mean rates and the neuron pairs'
    /// correlations of the student's long runs against the teacher's, as scatter plots.
    #[serde(default)]
    pub rate_statistics: bool,
    /// Extra label columns (e.g. the sweep's K).
    #[serde(default, skip_serializing_if = "indexmap::IndexMap::is_empty")]
    pub labels: indexmap::IndexMap<String, Value>,
}

/// Scores a student against its teacher.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeacherStudentStage;

/// Orthogonalised latent noise std of a low-rank model (reference `orthogonalise_network`).
pub fn orthogonalised_noise_std(c: &ModelConfig, params: &[f64]) -> Result<Vec<f64>, String> {
    let p = c.view(params).map_err(|e| e.to_string())?;
    let (n, r) = (c.n_units, c.rank);
    let m = nalgebra::DMatrix::from_row_slice(n, r, p.m);
    let nn = nalgebra::DMatrix::from_row_slice(r, n, p.n);
    // The first R left singular vectors of J = M N, largest first (`low_rank_svd`: not
    // nalgebra's SVD of the N × N J, which can be wrong).
    let (ur, _, _) = low_rank_svd(&m, &nn);
    let proj = ur.transpose() * &m;
    let l = nalgebra::DMatrix::from_row_slice(r, r, &noise_cholesky(c.noise_z, p.r_z, r));
    let pl = proj * l;
    let cov = &pl * pl.transpose();
    Ok((0..r).map(|i| cov[(i, i)].max(0.0).sqrt()).collect())
}

/// The latent noise a student with a learnt readout gain (one-to-one, `B` trained: the
/// Poisson students) infers, in its teacher's units. Such a student can scale its latents up
/// and its gains b down (b ∘ M z is all the data see), so its orthogonalised noise is only
/// defined up to that scale. What the data do fix is the noise of the rates' argument
/// η = b ∘ M z (the observed units' rows of M): the mean of the R standard deviations of η's
/// noise along its principal directions (the singular values of diag(b) M L, L the noise's
/// Cholesky factor), divided by the teacher's gain g (η = g U z + bias), is the noise std the
/// teacher's latents would need for the same η noise. For the teacher (U orthonormal, all
/// units observed) it is R_z itself.
pub fn gain_matched_noise_std(
    c: &ModelConfig,
    params: &[f64],
    teacher_gain: f64,
) -> Result<f64, String> {
    let p = c.view(params).map_err(|e| e.to_string())?;
    let (r, dx) = (c.rank, c.dim_x);
    if dx > c.n_units || p.b.len() < dx || teacher_gain == 0.0 || !teacher_gain.is_finite() {
        return Err(format!(
            "gain-matched noise needs a one-to-one readout of at most N units and a non-zero \
             teacher gain (dim_x = {dx}, N = {}, gain = {teacher_gain})",
            c.n_units
        ));
    }
    let bm = nalgebra::DMatrix::from_fn(dx, r, |j, q| p.b[j] * p.m[j * r + q]);
    let l = nalgebra::DMatrix::from_row_slice(r, r, &noise_cholesky(c.noise_z, p.r_z, r));
    let (_, sv, _) = low_rank_svd(&bm, &l);
    Ok(sv.iter().sum::<f64>() / r as f64 / teacher_gain.abs())
}

/// Mean over runs and channels of the autocorrelation (`x`: runs × channels × T).
fn mean_acf(x: &[f64], runs: usize, channels: usize, tt: usize, max_lag: usize) -> Vec<f64> {
    let mut acc = vec![0.0; max_lag + 1];
    let mut count = 0.0f64;
    for s in 0..runs {
        for j in 0..channels {
            let row = &x[(s * channels + j) * tt..(s * channels + j + 1) * tt];
            // Constant channels (e.g. silent neurons) have no autocorrelation: skipped.
            if let Ok(a) = autocorrelation(row, max_lag) {
                if a.iter().all(|v| v.is_finite()) {
                    for (o, v) in acc.iter_mut().zip(&a) {
                        *o += v;
                    }
                    count += 1.0;
                }
            }
        }
    }
    acc.iter().map(|v| v / count.max(1.0)).collect()
}

/// Per channel, the mean over runs of its power spectrum (`x`: runs × channels × T): z-scored,
/// `|rfft|²`, smoothed by σ = `smoothing` bins and normalised, as D_H's ([`normalised_spectrum`]);
/// a run in which the channel is constant (a silent neuron) is skipped, and a channel constant
/// in every run has None.
fn channel_spectra(
    x: &[f64],
    runs: usize,
    channels: usize,
    tt: usize,
    smoothing: f64,
) -> Result<Vec<Option<Vec<f64>>>, StageError> {
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    (0..channels)
        .map(|j| {
            let mut sum: Vec<f64> = Vec::new();
            let mut count = 0usize;
            for s in 0..runs {
                let row = &x[(s * channels + j) * tt..(s * channels + j + 1) * tt];
                let spectrum = normalised_spectrum(row, smoothing, &mut planner)
                    .map_err(|e| StageError::new(format!("power spectrum: {e}")))?;
                if spectrum.iter().all(|v| v.is_finite()) {
                    if sum.is_empty() {
                        sum = vec![0.0; spectrum.len()];
                    }
                    sum.iter_mut().zip(&spectrum).for_each(|(a, b)| *a += b);
                    count += 1;
                }
            }
            Ok((count > 0).then(|| sum.iter().map(|v| v / count as f64).collect()))
        })
        .collect()
}

/// The Hellinger distance of two models' [`channel_spectra`], averaged over the channels that
/// have a spectrum in both (NaN if none does): D_H of long runs.
fn spectrum_distance(a: &[Option<Vec<f64>>], b: &[Option<Vec<f64>>]) -> f64 {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(p, q)| Some(hellinger(p.as_ref()?, q.as_ref()?)))
        .collect();
    d.iter().sum::<f64>() / d.len() as f64
}

/// The mean over the channels that have one of [`channel_spectra`] (empty if none has).
fn mean_spectrum(spectra: &[Option<Vec<f64>>]) -> Vec<f64> {
    let have: Vec<&Vec<f64>> = spectra.iter().flatten().collect();
    let Some(first) = have.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|k| have.iter().map(|s| s[k]).sum::<f64>() / have.len() as f64)
        .collect()
}

/// Period from an autocorrelation: the lag of its first local maximum after it first turns
/// negative (None if it never does).
fn period(acf: &[f64]) -> Option<f64> {
    let first_neg = acf.iter().position(|&v| v < 0.0)?;
    (first_neg + 1..acf.len().saturating_sub(1))
        .find(|&l| acf[l] >= acf[l - 1] && acf[l] >= acf[l + 1] && acf[l] > 0.0)
        .map(|l| l as f64)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

/// The Pearson correlation of every neuron pair (i < j, row-major upper triangle) of runs laid
/// out as `x[(run · dx + unit) · len + t]`, with the time bins of all runs as samples (the
/// reference's `np.corrcoef` over pooled bins); NaN for a pair with a constant neuron.
fn pair_correlations(x: &[f64], n_runs: usize, dx: usize, len: usize) -> Vec<f64> {
    let n = (n_runs * len) as f64;
    let unit = |j: usize| {
        (0..n_runs).flat_map(move |r| x[(r * dx + j) * len..(r * dx + j + 1) * len].iter())
    };
    let means: Vec<f64> = (0..dx).map(|j| unit(j).sum::<f64>() / n).collect();
    // Centred copies, one row per unit, then a dot product per pair.
    let centred: Vec<Vec<f64>> = (0..dx)
        .map(|j| unit(j).map(|v| v - means[j]).collect())
        .collect();
    let norms: Vec<f64> = centred
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let mut out = Vec::with_capacity(dx * dx.saturating_sub(1) / 2);
    for i in 0..dx {
        for j in i + 1..dx {
            let dot: f64 = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
            let denom = norms[i] * norms[j];
            out.push(if denom > 0.0 { dot / denom } else { f64::NAN });
        }
    }
    out
}

/// The radius of a set of points: the root-mean-square distance from their centroid (0 for
/// fewer than two). The scale of fixed-point distances in the data space: a property of the
/// teacher alone, unlike the spread of noisy runs that visit some of its attractors.
fn radius(points: &[Vec<f64>]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    let dim = points[0].len();
    let centroid: Vec<f64> = (0..dim)
        .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n)
        .collect();
    (points
        .iter()
        .map(|p| {
            p.iter()
                .zip(&centroid)
                .map(|(a, c)| (a - c).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n)
        .sqrt()
}

/// The teacher's map in its dataset basis (orthonormal U, V, B: z' = a z + V relu(U z + B)
/// at zero input), the basis its simulated latents live in.
fn dataset_basis_map(
    teacher: &crate::data::simulate::TeacherBasis,
) -> Result<PwlMap, crate::analysis::fixed_points::FixedPointError> {
    PwlMap::from_low_rank(
        &teacher.u,
        &teacher.v,
        &teacher.b.iter().map(|b| -b).collect::<Vec<f64>>(),
        teacher.decay,
        teacher.rank,
        crate::model::lowrank::Nonlinearity::Relu,
    )
}

/// The teacher's stable fixed points (found in its dataset basis, so `x` = U z are its
/// currents) placed in the data space: their noise-free observations.
fn teacher_stable_in_data(
    set: &FixedPointSet,
    observation: &SimulatedObservation,
) -> Vec<Vec<f64>> {
    set.points
        .iter()
        .filter(|q| q.stability == Stability::Stable)
        .map(|q| q.x.iter().map(|&x| observation.mean(x)).collect())
        .collect()
}

/// The student's stable (`stable` true) or other fixed points placed in the data space: its
/// observation mean there at zero input.
fn student_in_data(
    c: &ModelConfig,
    pv: &crate::model::lowrank::ParamView<'_>,
    set: &FixedPointSet,
    stable: bool,
) -> Vec<Vec<f64>> {
    let zero_input = vec![0.0; c.dim_u];
    set.points
        .iter()
        .filter(|q| (q.stability == Stability::Stable) == stable)
        .map(|q| {
            let mut o = vec![0.0; c.dim_x];
            c.observation_mean(pv, &q.z, &zero_input, &mut o);
            o
        })
        .collect()
}

/// Euclidean distance.
fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Pairs each teacher point with a student point, closest pairs first (Euclidean distance in
/// the data space; each point used once), and returns each teacher point's distance to its
/// partner (∞ when the student has fewer points).
fn locate(teacher: &[Vec<f64>], student: &[Vec<f64>]) -> Vec<f64> {
    pair_up(teacher, student)
        .into_iter()
        .map(|p| p.map_or(f64::INFINITY, |(d, _)| d))
        .collect()
}

/// [`locate`]'s pairing: each teacher point's (distance, student index), `None` when the
/// student ran out of points.
fn pair_up(teacher: &[Vec<f64>], student: &[Vec<f64>]) -> Vec<Option<(f64, usize)>> {
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, a) in teacher.iter().enumerate() {
        for (j, b) in student.iter().enumerate() {
            pairs.push((dist(a, b), i, j));
        }
    }
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut out = vec![None; teacher.len()];
    let mut used = vec![false; student.len()];
    for (d, i, j) in pairs {
        if out[i].is_none() && !used[j] {
            out[i] = Some((d, j));
            used[j] = true;
        }
    }
    out
}

/// The student's stable points that no teacher point claims within `tol` (by [`pair_up`]), and
/// each one's distance to the student's nearest unstable fixed point (∞ when it has none):
/// an extra attractor next to a saddle is the remnant of a saddle–node pair.
fn unpaired_stable(
    teacher: &[Vec<f64>],
    student: &[Vec<f64>],
    unstable: &[Vec<f64>],
    tol: f64,
) -> Vec<f64> {
    let mut claimed = vec![false; student.len()];
    for (d, j) in pair_up(teacher, student).into_iter().flatten() {
        if d <= tol {
            claimed[j] = true;
        }
    }
    student
        .iter()
        .zip(&claimed)
        .filter(|(_, &c)| !c)
        .map(|(a, _)| {
            unstable
                .iter()
                .map(|b| dist(a, b))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// Median of sorted values (NaN for none).
fn median_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

fn stable_count(set: &FixedPointSet) -> usize {
    set.points
        .iter()
        .filter(|p| p.stability == Stability::Stable)
        .count()
}

/// What a summary row's teacher, student and value columns hold.
fn metric_note(metric: &str) -> &'static str {
    match metric {
        "latent_noise_std" => "true R_z; inferred (orthogonalised); relative error",
        "latent_noise_std_gain_matched" => {
            "true R_z; inferred, from the noise of the learnt readout's argument b ∘ M z ÷ the \
             teacher's gain; relative error"
        }
        "acf_max_abs_diff" => {
            "max |ACF difference| over the lags compared: other runs of the teacher (the floor) \
             and the student's, each against the teacher's; the student's"
        }
        "power_spectrum_hellinger" => {
            "Hellinger distance of the units' power spectra (z-scored, smoothed, mean over runs), \
             mean over units: other runs of the teacher (the floor) and the student's, each \
             against the teacher's; the student's"
        }
        "period" => "periods (steps) from the ACF; relative error",
        "mean_rate_correlation" => "mean rates; correlation of per-neuron mean rates",
        "pairwise_correlation_correlation" => {
            "mean pairwise correlation; correlation of the neuron pairs' correlations (time bins \
             of all runs as samples)"
        }
        "fixed_points" => "counts at zero input; difference",
        "stable_fixed_points" => "stable counts; difference",
        "stable_points_located" => {
            "teacher's stable points; how many have a student stable point within the tolerance \
             (× their radius) in the data space; difference"
        }
        "stable_point_distance" => {
            "radius of the teacher's stable points; median distance of paired stable points; \
             the same ÷ radius"
        }
        "unpaired_stable_points" => {
            "—; student stable points no teacher stable point claims within the tolerance; \
             their median distance to the student's nearest unstable fixed point ÷ radius"
        }
        _ => "",
    }
}

/// One row of the summary.
struct Row {
    metric: &'static str,
    teacher: f64,
    student: f64,
    value: f64,
    target: String,
    pass: Option<bool>,
}

/// Steps of a spontaneous run drawn over a phase portrait (1.5 periods of the oscillator).
const PHASE_RUN_STEPS: usize = 75;

impl Stage for TeacherStudentStage {
    fn kind(&self) -> &'static str {
        "teacher_student"
    }
    fn version(&self) -> u32 {
        // 4: the traces figure's time axis is labelled in steps (it said seconds).
        // 5: rows locating the student's stable points at the teacher's, in the data space.
        // 6: their scale is the radius of the teacher's stable points (was the spread of
        // noisy runs, which depends on the attractors the runs happen to visit).
        // 7: a row for the student's stable points no teacher point claims, with their
        // distance to the nearest unstable fixed point.
        // 8: the phase portraits draw a noisy run and the settled noise-free dynamics over
        // the flow; the teacher's is in its dataset basis (was the JSON map's m/n coordinates).
        // A `latent_noise_std_gain_matched` row for students with a learnt readout gain.
        // 9: the orthogonalised noise from `low_rank_svd` (nalgebra's SVD of the N × N
        // J = M N could return wrong singular values and vectors).
        // 10: legends over no data (phase portraits beside the plot, trace panels under the
        // title, Fig S6's line panels in a free corner or on wrapped rows under each panel),
        // linear ticks without '.0'; for count data a `pairwise_correlation_correlation` row
        // and, with `rate_statistics`, Fig 3's rate scatter plots (rates.png); count data's
        // traces.png as spike rasters of every unit.
        // 11: the power spectra (power_spectrum.png) and a `power_spectrum_hellinger` row; the
        // ACF row's teacher column is the floor (a second set of the teacher's runs).
        11
    }
    fn description(&self) -> &'static str {
        "score a student against its teacher: noise recovery, autocorrelation/period, power spectra, rates, fixed points → summary table, figures"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<TeacherStudentParams>(params)?;
        let p: TeacherStudentParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.n_runs == 0 {
            return Err(ParamError::new("n_runs", "must be ≥ 1"));
        }
        if !(p.location_tolerance.is_finite() && p.location_tolerance > 0.0) {
            return Err(ParamError::new(
                "location_tolerance",
                format!("must be a positive number (got {})", p.location_tolerance),
            ));
        }
        if !(p.spectrum_smoothing.is_finite() && p.spectrum_smoothing > 0.0) {
            return Err(ParamError::new(
                "spectrum_smoothing",
                format!(
                    "must be a positive number of frequency bins (got {})",
                    p.spectrum_smoothing
                ),
            ));
        }
        if p.max_lag == 0 || p.max_lag >= p.run_length {
            return Err(ParamError::new(
                "max_lag",
                format!("must be in 1..run_length ({})", p.run_length),
            ));
        }
        Ok(v)
    }
    fn outputs(&self, params: &Value) -> Vec<OutputSpec> {
        let mut out = vec![
            OutputSpec::new("summary", "summary.parquet"),
            OutputSpec::new("summary_md", "summary.md"),
            OutputSpec::new("acf", "autocorrelation.png"),
            OutputSpec::new("spectrum", "power_spectrum.png"),
            OutputSpec::new("traces", "traces.png"),
        ];
        if params.get("phase_portrait").and_then(Value::as_bool) == Some(true) {
            out.push(OutputSpec::new("phase_teacher", "phase_teacher.png"));
            out.push(OutputSpec::new("phase_student", "phase_student.png"));
        }
        if params.get("input_response").and_then(Value::as_bool) == Some(true) {
            out.push(OutputSpec::new("input_response", "input_response.png"));
        }
        if params.get("rate_statistics").and_then(Value::as_bool) == Some(true) {
            out.push(OutputSpec::new("rates", "rates.png"));
        }
        out
    }
    fn expected_inputs(&self, params: &Value) -> Option<Vec<InputSpec>> {
        let mut inputs = vec![
            InputSpec::required("model"),
            InputSpec::required("data"),
            InputSpec::required("teacher"),
        ];
        if params.get("input_response").and_then(Value::as_bool) == Some(true) {
            inputs.push(InputSpec::required("latents"));
        }
        Some(inputs)
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: TeacherStudentParams = ctx.params_as()?;
        let model_path = ctx.input("model")?.to_path_buf();
        let data_path = ctx.input("data")?.to_path_buf();
        let teacher_path = ctx.input("teacher")?.to_path_buf();
        let student = load_model(&model_path)?;
        let (doc, teacher) = read_teacher(&teacher_path)?;
        let teacher_name = doc.get("name").and_then(Value::as_str).unwrap_or("teacher");
        let sim_text = read_attr(&data_path, "simulation")
            .map_err(|e| StageError::new(e.to_string()))?
            .ok_or_else(|| {
                StageError::new(format!(
                    "{}: no `simulation` attribute; the data must come from a `simulate` stage",
                    data_path.display()
                ))
            })?;
        let sim: SimulationConfig = serde_json::from_str(&sim_text).map_err(|e| {
            StageError::new(format!(
                "{}: attribute simulation: {e}",
                data_path.display()
            ))
        })?;
        let c = &student.config;
        let mut rows = Vec::new();

        // Noise recovery.
        ctx.progress().message("noise recovery");
        let stds = orthogonalised_noise_std(c, &student.params)
            .map_err(|e| StageError::new(format!("{}: {e}", model_path.display())))?;
        let inferred = stds.iter().sum::<f64>() / stds.len() as f64;
        let truth = sim.latent_noise_std;
        let rel = (inferred - truth) / truth;
        rows.push(Row {
            metric: "latent_noise_std",
            teacher: truth,
            student: inferred,
            value: rel,
            target: p
                .targets
                .noise_rel_error
                .map(|t| format!("|rel. error| ≤ {t}"))
                .unwrap_or_default(),
            pass: p.targets.noise_rel_error.map(|t| rel.abs() <= t),
        });

        // A learnt readout gain trades scale with the latents: the noise in the teacher's
        // units, through the rates' argument.
        if c.train_observation && c.observation == Observation::OneToOne {
            let gain = match sim.observation {
                SimulatedObservation::Poisson { gain, .. } => gain,
                SimulatedObservation::Currents { .. } => 1.0,
            };
            let matched = gain_matched_noise_std(c, &student.params, gain)
                .map_err(|e| StageError::new(format!("{}: {e}", model_path.display())))?;
            let rel = (matched - truth) / truth;
            rows.push(Row {
                metric: "latent_noise_std_gain_matched",
                teacher: truth,
                student: matched,
                value: rel,
                target: String::new(),
                pass: None,
            });
        }

        // Spontaneous dynamics: long runs without input.
        ctx.progress().message("long runs");
        let total = p.burn_in + p.run_length;
        let mut basis = teacher.clone();
        basis.dim_input = 0;
        basis.input_weights.clear();
        let long = SimulationConfig {
            n_trials: p.n_runs,
            n_time: total,
            ..sim.clone()
        };
        let tsim = simulate(&basis, &StimulusTask::None, &long, p.seed)
            .map_err(|e| StageError::new(format!("teacher runs: {e}")))?;
        let dx = basis.n_units;
        let cut = |x: &[f64], ch: usize| -> Vec<f64> {
            let mut out = Vec::with_capacity(p.n_runs * ch * p.run_length);
            for s in 0..p.n_runs {
                for j in 0..ch {
                    let base = (s * ch + j) * total + p.burn_in;
                    out.extend_from_slice(&x[base..base + p.run_length]);
                }
            }
            out
        };
        let teacher_x = cut(&tsim.sequences.x, dx);
        let z0 = c
            .view(&student.params)
            .map_err(|e| StageError::new(e.to_string()))?
            .initial_state
            .map(|s| s.to_vec())
            .unwrap_or_else(|| vec![0.0; c.rank]);
        let mut student_x = Vec::with_capacity(p.n_runs * c.dim_x * p.run_length);
        // The first run's latents (R × run_length), drawn over the student's phase portrait.
        let mut student_z = Vec::new();
        for s in 0..p.n_runs {
            let (z, obs) = c
                .generate(
                    &student.params,
                    &z0,
                    p.run_length,
                    p.burn_in,
                    p.seed.wrapping_mul(1000).wrapping_add(s as u64),
                )
                .map_err(|e| StageError::new(e.to_string()))?;
            student_x.extend_from_slice(&obs);
            if s == 0 {
                student_z = z;
            }
        }
        if student_x.iter().any(|v| !v.is_finite()) {
            return Err(StageError::new(format!(
                "{}: the student's trajectories diverge (non-finite values)",
                model_path.display()
            )));
        }
        if c.dim_x != dx {
            return Err(StageError::new(format!(
                "the student reads {} channels, the teacher has {dx} units",
                c.dim_x
            )));
        }
        // The floor of the comparisons below: as many runs again from the teacher, with other
        // draws, against the first.
        let again = simulate(
            &basis,
            &StimulusTask::None,
            &long,
            p.seed.wrapping_add(1 << 32),
        )
        .map_err(|e| StageError::new(format!("teacher runs: {e}")))?;
        let teacher_x2 = cut(&again.sequences.x, dx);
        let acf_t = mean_acf(&teacher_x, p.n_runs, dx, p.run_length, p.max_lag);
        let acf_s = mean_acf(&student_x, p.n_runs, dx, p.run_length, p.max_lag);
        let max_abs_diff = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        let acf_diff = max_abs_diff(&acf_t, &acf_s);
        let acf_t2 = mean_acf(&teacher_x2, p.n_runs, dx, p.run_length, p.max_lag);
        rows.push(Row {
            metric: "acf_max_abs_diff",
            teacher: max_abs_diff(&acf_t, &acf_t2),
            student: acf_diff,
            value: acf_diff,
            target: p
                .targets
                .acf_max_abs_diff
                .map(|t| format!("< {t}"))
                .unwrap_or_default(),
            pass: p.targets.acf_max_abs_diff.map(|t| acf_diff < t),
        });
        let (per_t, per_s) = (period(&acf_t), period(&acf_s));
        let per_rel = match (per_t, per_s) {
            (Some(a), Some(b)) => (b - a) / a,
            _ => f64::NAN,
        };
        rows.push(Row {
            metric: "period",
            teacher: per_t.unwrap_or(f64::NAN),
            student: per_s.unwrap_or(f64::NAN),
            value: per_rel,
            target: p
                .targets
                .period_rel_error
                .map(|t| format!("|rel. error| ≤ {t}"))
                .unwrap_or_default(),
            pass: p
                .targets
                .period_rel_error
                .map(|t| per_rel.is_finite() && per_rel.abs() <= t),
        });
        let spectra_t =
            channel_spectra(&teacher_x, p.n_runs, dx, p.run_length, p.spectrum_smoothing)?;
        let spectra_s =
            channel_spectra(&student_x, p.n_runs, dx, p.run_length, p.spectrum_smoothing)?;
        let spectra_t2 = channel_spectra(
            &teacher_x2,
            p.n_runs,
            dx,
            p.run_length,
            p.spectrum_smoothing,
        )?;
        let d_h = spectrum_distance(&spectra_s, &spectra_t);
        rows.push(Row {
            metric: "power_spectrum_hellinger",
            teacher: spectrum_distance(&spectra_t2, &spectra_t),
            student: d_h,
            value: d_h,
            target: String::new(),
            pass: None,
        });
        if matches!(sim.observation, SimulatedObservation::Poisson { .. }) {
            let rates = |x: &[f64]| -> Vec<f64> {
                (0..dx)
                    .map(|j| {
                        let mut s = 0.0;
                        for r in 0..p.n_runs {
                            let base = (r * dx + j) * p.run_length;
                            s += x[base..base + p.run_length].iter().sum::<f64>();
                        }
                        s / (p.n_runs * p.run_length) as f64
                    })
                    .collect()
            };
            let (rt, rs) = (rates(&teacher_x), rates(&student_x));
            let corr = pearson(&rt, &rs);
            rows.push(Row {
                metric: "mean_rate_correlation",
                teacher: rt.iter().sum::<f64>() / dx as f64,
                student: rs.iter().sum::<f64>() / dx as f64,
                value: corr,
                target: p
                    .targets
                    .rate_correlation
                    .map(|t| format!("≥ {t}"))
                    .unwrap_or_default(),
                pass: p.targets.rate_correlation.map(|t| corr >= t),
            });
            let (ct, cs) = (
                pair_correlations(&teacher_x, p.n_runs, dx, p.run_length),
                pair_correlations(&student_x, p.n_runs, dx, p.run_length),
            );
            // Pairs with a silent neuron in either model have no correlation.
            let (ct_ok, cs_ok): (Vec<f64>, Vec<f64>) = ct
                .iter()
                .zip(&cs)
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .unzip();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            rows.push(Row {
                metric: "pairwise_correlation_correlation",
                teacher: mean(&ct_ok),
                student: mean(&cs_ok),
                value: pearson(&ct_ok, &cs_ok),
                target: String::new(),
                pass: None,
            });
            if p.rate_statistics {
                ctx.progress().message("rate statistics");
                let panel = |title: String, x: &[f64], y: &[f64]| crate::plot::ScatterPanel {
                    title,
                    x_label: format!("teacher {teacher_name}"),
                    y_label: "student".into(),
                    points: x.iter().copied().zip(y.iter().copied()).collect(),
                };
                let panels = [
                    panel(
                        format!("mean rate per neuron (counts per bin), r = {corr:.3}"),
                        &rt,
                        &rs,
                    ),
                    panel(
                        format!(
                            "correlation per neuron pair, r = {:.3}",
                            pearson(&ct_ok, &cs_ok)
                        ),
                        &ct,
                        &cs,
                    ),
                ];
                let fig = crate::plot::scatter_panels(
                    &ctx.scratch_dir().join("rates"),
                    &format!(
                        "{}: rate statistics of {} noisy runs, teacher vs student (seed {}; simulated)",
                        p.setup, p.n_runs, p.seed
                    ),
                    &panels,
                )
                .map_err(|e| StageError::new(e.to_string()))?;
                ctx.place_output("rates", &fig.png)?;
            }
        } else if p.rate_statistics {
            return Err(StageError::new(format!(
                "params.rate_statistics: the data in {} are not counts (Poisson observations); \
                 leave it out for this setup",
                data_path.display()
            )));
        }

        // Fixed points (at zero input).
        ctx.progress().message("fixed points");
        let pv = c
            .view(&student.params)
            .map_err(|e| StageError::new(e.to_string()))?;
        let smap = PwlMap::from_low_rank(pv.m, pv.n, pv.h, pv.decay, c.rank, c.nonlinearity)
            .map_err(|e| StageError::new(e.to_string()))?;
        let tmap = map_from_json(&doc)
            .map_err(|e| StageError::new(format!("{}: {e:#}", teacher_path.display())))?;
        let opts = Options::default();
        let fp = |m: &PwlMap, what: &Path| {
            ctx.install(|| find_fixed_points(m, &opts))
                .map_err(|e| StageError::new(format!("{}: {e}", what.display())))
        };
        let (sfp, tfp) = (fp(&smap, &model_path)?, fp(&tmap, &teacher_path)?);
        rows.push(Row {
            metric: "fixed_points",
            teacher: tfp.points.len() as f64,
            student: sfp.points.len() as f64,
            value: sfp.points.len() as f64 - tfp.points.len() as f64,
            target: String::new(),
            pass: None,
        });
        let (st, ss) = (stable_count(&tfp), stable_count(&sfp));
        rows.push(Row {
            metric: "stable_fixed_points",
            teacher: st as f64,
            student: ss as f64,
            value: ss as f64 - st as f64,
            target: if p.targets.stable_fixed_points {
                "student = teacher".into()
            } else {
                String::new()
            },
            pass: p.targets.stable_fixed_points.then_some(st == ss),
        });

        // Locations. The two models' latent bases are aligned through the space they share,
        // the data: each fixed point is placed at its model's noise-free observation there
        // (currents, or rates for count data) at zero input. The teacher's points come from its
        // dataset basis (orthonormal U, V, B: z' = a z + V relu(U z + Iᵀ v + B)), the basis its
        // simulated latents live in.
        let basis_map = dataset_basis_map(&teacher)
            .map_err(|e| StageError::new(format!("{}: {e}", teacher_path.display())))?;
        let tfp_basis = fp(&basis_map, &teacher_path)?;
        if tfp_basis.points.len() != tfp.points.len() {
            return Err(StageError::new(format!(
                "{}: the teacher has {} fixed points in its dataset basis but {} in its map",
                teacher_path.display(),
                tfp_basis.points.len(),
                tfp.points.len()
            )));
        }
        let teacher_at = teacher_stable_in_data(&tfp_basis, &sim.observation);
        let student_at = student_in_data(c, &pv, &sfp, true);
        let radius_t = radius(&teacher_at);
        let located = locate(&teacher_at, &student_at);
        let tol = p.location_tolerance * radius_t;
        let found = located.iter().filter(|&&d| d <= tol).count();
        // (Only for teachers with two or more stable points: the oscillators have none.)
        if radius_t > 0.0 {
            rows.push(Row {
                metric: "stable_points_located",
                teacher: st as f64,
                student: found as f64,
                value: found as f64 - st as f64,
                target: String::new(),
                pass: None,
            });
            let mut rel: Vec<f64> = located.iter().map(|d| d / radius_t).collect();
            rel.sort_by(f64::total_cmp);
            rows.push(Row {
                metric: "stable_point_distance",
                teacher: radius_t,
                student: median_sorted(&rel) * radius_t,
                value: median_sorted(&rel),
                target: String::new(),
                pass: None,
            });
            let unstable_at = student_in_data(c, &pv, &sfp, false);
            let mut extra: Vec<f64> = unpaired_stable(&teacher_at, &student_at, &unstable_at, tol)
                .iter()
                .map(|d| d / radius_t)
                .collect();
            extra.sort_by(f64::total_cmp);
            rows.push(Row {
                metric: "unpaired_stable_points",
                teacher: f64::NAN,
                student: extra.len() as f64,
                value: median_sorted(&extra),
                target: String::new(),
                pass: None,
            });
        }

        // Table.
        let n = rows.len();
        let tab = |e: crate::pipeline::table::TableError| StageError::new(e.to_string());
        let mut table = Table::new()
            .with("setup", vec![p.setup.clone(); n])
            .and_then(|t| t.with("seed", vec![p.seed as i64; n]))
            .map_err(tab)?;
        table.push_labels(&p.labels, n).map_err(tab)?;
        table
            .push(
                "metric",
                rows.iter()
                    .map(|r| r.metric.to_string())
                    .collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push(
                "teacher",
                rows.iter().map(|r| r.teacher).collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push(
                "student",
                rows.iter().map(|r| r.student).collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push("value", rows.iter().map(|r| r.value).collect::<Vec<_>>())
            .map_err(tab)?;
        table
            .push(
                "target",
                rows.iter().map(|r| r.target.clone()).collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push(
                "pass",
                rows.iter()
                    .map(|r| match r.pass {
                        Some(true) => "pass".to_string(),
                        Some(false) => "FAIL".to_string(),
                        None => String::new(),
                    })
                    .collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push(
                "note",
                rows.iter()
                    .map(|r| metric_note(r.metric).to_string())
                    .collect::<Vec<_>>(),
            )
            .map_err(tab)?;
        table
            .push("data_source", vec!["simulated".to_string(); n])
            .map_err(tab)?;
        let out = ctx.output("summary")?.to_path_buf();
        table.write_parquet(&out).map_err(tab)?;
        let md = ctx.output("summary_md")?.to_path_buf();
        table.write_markdown(&md).map_err(tab)?;

        // Figures.
        let lags: Vec<f64> = (0..=p.max_lag).map(|l| l as f64).collect();
        let fig = line_plot(
            &ctx.scratch_dir().join("acf"),
            &format!(
                "{}: autocorrelation, teacher {teacher_name} vs student (seed {}; simulated)",
                p.setup, p.seed
            ),
            "lag (steps)",
            "mean autocorrelation",
            &[
                Series {
                    reference_for: None,
                    label: "teacher".into(),
                    x: lags.clone(),
                    y: acf_t.clone(),
                },
                Series {
                    reference_for: None,
                    label: "student".into(),
                    x: lags,
                    y: acf_s.clone(),
                },
            ],
            false,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("acf", &fig.png)?;
        // Bin k of a run of n (even) steps is k / n cycles per step.
        let n_even = (p.run_length - p.run_length % 2) as f64;
        let series: Vec<Series> = [
            (format!("teacher {teacher_name}"), mean_spectrum(&spectra_t)),
            ("student".to_string(), mean_spectrum(&spectra_s)),
        ]
        .into_iter()
        .filter(|(_, y)| !y.is_empty())
        .map(|(label, y)| Series {
            reference_for: None,
            label,
            x: (0..y.len()).map(|k| k as f64 / n_even).collect(),
            y,
        })
        .collect();
        let fig = line_plot_with(
            &ctx.scratch_dir().join("spectrum"),
            &format!(
                "{}: power spectrum, teacher {teacher_name} vs student (seed {}; simulated)",
                p.setup, p.seed
            ),
            "frequency (cycles per step)",
            "power (normalised, mean over units)",
            &series,
            Axes {
                log_x: true,
                log_y: true,
                markers: false,
            },
        )
        .map_err(|e| StageError::new(format!("power spectrum figure: {e}")))?;
        ctx.place_output("spectrum", &fig.png)?;
        let show = p.run_length.min(300);
        // The first run's first `show` steps of unit j.
        let first_run = |x: &[f64], j: usize| x[j * p.run_length..j * p.run_length + show].to_vec();
        let title = format!(
            "{}: spontaneous activity, teacher vs student (seed {}; simulated)",
            p.setup, p.seed
        );
        let fig = if matches!(sim.observation, SimulatedObservation::Poisson { .. }) {
            // Spikes as rasters (Fig 3): every unit, a tick per bin with a spike.
            let raster = |who: &str, x: &[f64]| RasterPanel {
                title: format!("{who}: {dx} units, first run"),
                counts: (0..dx).map(|j| first_run(x, j)).collect(),
            };
            raster_panels(
                &ctx.scratch_dir().join("traces"),
                &title,
                (1.0, "time (steps)"),
                &[
                    raster(&format!("teacher {teacher_name}"), &teacher_x),
                    raster("student", &student_x),
                ],
            )
        } else {
            let panels: Vec<TracePanel> = (0..dx.min(4))
                .map(|j| TracePanel {
                    label: format!("unit {j}"),
                    first: first_run(&teacher_x, j),
                    second: first_run(&student_x, j),
                })
                .collect();
            trace_panels(
                &ctx.scratch_dir().join("traces"),
                &title,
                ("teacher", "student"),
                (1.0, "time (steps)"),
                &panels,
            )
        }
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("traces", &fig.png)?;
        if p.phase_portrait {
            // Each model's flow in the basis of its own latents: the teacher's dataset basis
            // (where its simulated latents live), the student's z; over it the first
            // spontaneous run's first steps after the burn-in.
            let shown = p.run_length.min(PHASE_RUN_STEPS);
            // The first `shown` steps from `start` of latents stored as rows of `row` steps.
            let first_steps = |z: &[f64], row: usize, start: usize| -> Vec<(f64, f64)> {
                (0..shown)
                    .map(|t| (z[start + t], z[row + start + t]))
                    .collect()
            };
            for (map, set, who, out, (z, row, start)) in [
                (
                    &basis_map,
                    &tfp_basis,
                    format!("teacher {teacher_name}"),
                    "phase_teacher",
                    (&tsim.latents[..], total, p.burn_in),
                ),
                (
                    &smap,
                    &sfp,
                    format!("student (seed {})", p.seed),
                    "phase_student",
                    (&student_z[..], p.run_length, 0),
                ),
            ] {
                if map.rank != 2 {
                    return Err(StageError::new(format!(
                        "params.phase_portrait: the {who} has rank {}; phase portraits need R = 2",
                        map.rank
                    )));
                }
                let run = first_steps(z, row, start);
                let runs = [(format!("a noisy run, {shown} steps"), 0, run)];
                let data = super::fixed_points::portrait_data(map, set, None, 25, &runs);
                let fig = crate::plot::phase_portrait(
                    &ctx.scratch_dir().join(out),
                    &format!(
                        "{}: {who}, {} fixed points ({} stable)",
                        p.setup,
                        set.points.len(),
                        stable_count(set)
                    ),
                    ("z1", "z2"),
                    &data,
                )
                .map_err(|e| StageError::new(e.to_string()))?;
                ctx.place_output(out, &fig.png)?;
            }
        }
        if p.input_response {
            ctx.progress().message("input response");
            let latents_path = ctx.input("latents")?.to_path_buf();
            // The simulated latents are in the teacher's dataset basis, not the JSON map's m/n
            // coordinates: its fixed points are drawn in that basis (`tfp_basis`), as in the
            // reference's Fig S6 notebook.
            let panels = input_response_panels(
                c,
                &student.params,
                &teacher,
                &sim,
                (&data_path, &latents_path),
                (&tfp_basis, &sfp),
                p.seed,
            )?;
            let fig = crate::plot::line_panels(
                &ctx.scratch_dir().join("input_response"),
                &format!(
                    "{}: response to the stimulus, teacher {teacher_name} vs student (seed {}; simulated)",
                    p.setup, p.seed
                ),
                &panels,
            )
            .map_err(|e| StageError::new(e.to_string()))?;
            ctx.place_output("input_response", &fig.png)?;
        }
        for r in &rows {
            ctx.record(r.metric, r.value);
        }
        Ok(())
    }
}

/// Fig S6's panels for the first six trials of the data: the stimulus s over time; the
/// teacher's true latent against its input state ṽ (the stimulus filtered with the teacher's
/// decay when the simulation filters it); the student's latent against its own input state,
/// from one noisy rollout driven by the same stimulus from z = 0, its sign chosen to correlate
/// positively with the teacher's (the latent's sign is not identifiable). Fixed points at zero
/// input on the ṽ = 0 line (filled: stable). Rank-1 models with one input only.
#[allow(clippy::too_many_arguments)]
fn input_response_panels(
    c: &ModelConfig,
    params: &[f64],
    teacher: &crate::data::simulate::TeacherBasis,
    sim: &SimulationConfig,
    (data_path, latents_path): (&Path, &Path),
    (tfp, sfp): (&FixedPointSet, &FixedPointSet),
    seed: u64,
) -> Result<Vec<crate::plot::LinePanel>, StageError> {
    use crate::data::sequences_io::read_sequences;
    use crate::plot::{LinePanel, PointClass};
    let bad = |m: String| StageError::new(format!("params.input_response: {m}"));
    if c.rank != 1 || teacher.rank != 1 || c.dim_u != 1 || teacher.dim_input != 1 {
        return Err(bad(format!(
            "needs rank-1 teacher and student with one input (teacher R = {}, du = {}; student R = {}, du = {})",
            teacher.rank, teacher.dim_input, c.rank, c.dim_u
        )));
    }
    let data = read_sequences(data_path).map_err(|e| StageError::new(e.to_string()))?;
    let lat = read_sequences(latents_path).map_err(|e| StageError::new(e.to_string()))?;
    if data.dim_u != 1
        || lat.dim_x != 1
        || lat.n_sequences != data.n_sequences
        || lat.n_time != data.n_time
    {
        return Err(StageError::new(format!(
            "{} and {}: expected a one-input stimulus and matching rank-1 latents \
             (data: {} sequences × {} steps, du = {}; latents: {} × {}, R = {})",
            data_path.display(),
            latents_path.display(),
            data.n_sequences,
            data.n_time,
            data.dim_u,
            lat.n_sequences,
            lat.n_time,
            lat.dim_x
        )));
    }
    let tt = data.n_time;
    let trials = data.n_sequences.min(6);
    let mut stim = LinePanel {
        title: "stimulus".into(),
        x_label: "time step".into(),
        y_label: "s".into(),
        ..Default::default()
    };
    let mut tpanel = LinePanel {
        title: "teacher".into(),
        x_label: "z".into(),
        y_label: "ṽ (filtered input)".into(),
        ..Default::default()
    };
    let mut student_runs = Vec::with_capacity(trials);
    let mut cov = 0.0;
    for i in 0..trials {
        let u = &data.u[i * tt..(i + 1) * tt];
        let mean_s = u.iter().sum::<f64>() / tt as f64;
        let label = format!("mean s {mean_s:+.3}");
        stim.lines
            .push((label, i, (0..tt).map(|t| (t as f64, u[t])).collect()));
        let mut v = vec![0.0; tt];
        for t in 1..tt {
            v[t] = if sim.filter_input {
                teacher.decay * v[t - 1] + (1.0 - teacher.decay) * u[t - 1]
            } else {
                u[t]
            };
        }
        let z = &lat.x[i * tt..(i + 1) * tt];
        // One legend (the stimulus panel's): the colours are the same trials everywhere.
        tpanel
            .lines
            .push((String::new(), i, z.iter().copied().zip(v).collect()));
        let run = c
            .generate_driven(
                params,
                &[0.0],
                u,
                seed.wrapping_mul(7919).wrapping_add(i as u64),
            )
            .map_err(|e| StageError::new(format!("student rollout: {e}")))?;
        if let Some(t) = run
            .latents
            .iter()
            .chain(&run.inputs)
            .position(|v| !v.is_finite())
        {
            return Err(StageError::new(format!(
                "the student's rollout on trial {i} is not finite (at index {t})"
            )));
        }
        let (zm, tm) = (
            run.latents.iter().sum::<f64>() / tt as f64,
            z.iter().sum::<f64>() / tt as f64,
        );
        cov += run
            .latents
            .iter()
            .zip(z)
            .map(|(a, b)| (a - zm) * (b - tm))
            .sum::<f64>();
        student_runs.push(run);
    }
    let sign = if cov < 0.0 { -1.0 } else { 1.0 };
    let class = |s: Stability| {
        if s == Stability::Stable {
            PointClass::Stable
        } else {
            PointClass::Unstable
        }
    };
    tpanel.points = tfp
        .points
        .iter()
        .map(|f| (f.z[0], 0.0, class(f.stability)))
        .collect();
    let mut spanel = LinePanel {
        title: if sign < 0.0 {
            "student (latent sign flipped to match)".into()
        } else {
            "student".into()
        },
        x_label: "z".into(),
        y_label: "v (its input state)".into(),
        ..Default::default()
    };
    for (i, run) in student_runs.iter().enumerate() {
        let pts = run
            .latents
            .iter()
            .zip(&run.inputs)
            .map(|(z, v)| (sign * z, *v))
            .collect();
        spanel.lines.push((String::new(), i, pts));
    }
    spanel.points = sfp
        .points
        .iter()
        .map(|f| (sign * f.z[0], 0.0, class(f.stability)))
        .collect();
    Ok(vec![stim, tpanel, spanel])
}

#[cfg(test)]
mod tests {
    /// Each pair's correlation is the Pearson correlation of the two units' bins pooled over
    /// the runs, in upper-triangle order; a constant unit gives NaN.
    #[test]
    fn spectra_peak_at_the_oscillation_and_skip_constant_channels() {
        // Two runs × two channels × 200 steps: channel 0 a sine of period 20 (plus a little
        // deterministic jitter), channel 1 constant in run 0 and a sine of period 10 in run 1.
        let (runs, ch, tt) = (2, 2, 200);
        let mut x = vec![0.0; runs * ch * tt];
        for s in 0..runs {
            for t in 0..tt {
                let tf = t as f64;
                x[(s * ch) * tt + t] = (2.0 * std::f64::consts::PI * tf / 20.0 + s as f64).sin()
                    + 0.01 * (tf * 7.3).sin();
                x[(s * ch + 1) * tt + t] = if s == 0 {
                    3.0
                } else {
                    (2.0 * std::f64::consts::PI * tf / 10.0).sin()
                };
            }
        }
        let sp = channel_spectra(&x, runs, ch, tt, 1.0).unwrap();
        let peak = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        // Bin k is k / 200 cycles per step: period 20 at bin 10, period 10 at bin 20.
        let a = sp[0].as_ref().unwrap();
        assert_eq!(a.len(), tt / 2 + 1);
        assert_eq!(peak(a), 10);
        assert_eq!(
            peak(sp[1].as_ref().unwrap()),
            20,
            "the constant run is skipped"
        );
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // Zero against itself, positive against the other channel, in [0, 1].
        assert!(spectrum_distance(&sp, &sp).abs() < 1e-12);
        let swapped = vec![sp[1].clone(), sp[0].clone()];
        let d = spectrum_distance(&sp, &swapped);
        assert!(d > 0.3 && d <= 1.0, "{d}");
        // A channel constant in every run has no spectrum and is left out of the mean.
        let mut flat = x.clone();
        flat[(ch + 1) * tt..(ch + 2) * tt].fill(3.0);
        let sf = channel_spectra(&flat, runs, ch, tt, 1.0).unwrap();
        assert!(sf[1].is_none());
        assert!(
            (spectrum_distance(&sf, &sp) - hellinger(sf[0].as_ref().unwrap(), a)).abs() < 1e-15
        );
        assert_eq!(mean_spectrum(&sf), *sf[0].as_ref().unwrap());
        assert!(mean_spectrum(&[None, None]).is_empty());
    }

    #[test]
    fn pair_correlations_pool_the_runs() {
        let (n_runs, dx, len) = (2, 3, 4);
        let series = |j: usize| -> Vec<f64> {
            (0..n_runs * len)
                .map(|i| match j {
                    0 => i as f64,
                    1 => ((i * 7) % 5) as f64,
                    _ => 2.0,
                })
                .collect()
        };
        let mut x = vec![0.0; n_runs * dx * len];
        for j in 0..dx {
            let s = series(j);
            for r in 0..n_runs {
                x[(r * dx + j) * len..(r * dx + j + 1) * len]
                    .copy_from_slice(&s[r * len..(r + 1) * len]);
            }
        }
        let c = super::pair_correlations(&x, n_runs, dx, len);
        assert_eq!(c.len(), 3);
        let want = super::pearson(&series(0), &series(1));
        assert!((c[0] - want).abs() < 1e-12, "{} vs {want}", c[0]);
        assert!(want.abs() > 0.01 && want.abs() < 0.99);
        assert!(c[1].is_nan() && c[2].is_nan());
    }

    use super::*;
    use crate::data::simulate::TeacherBasis;

    #[test]
    fn locate_pairs_closest_first_and_each_point_once() {
        let teacher = vec![vec![0.0, 0.0], vec![10.0, 0.0], vec![20.0, 0.0]];
        // (0.5, 0) is closest to teacher 0, (9, 0) to teacher 1; teacher 2's nearest student
        // point (9, 0) is taken, so it gets the far one.
        let student = vec![vec![9.0, 0.0], vec![0.5, 0.0], vec![20.0, 30.0]];
        let d = locate(&teacher, &student);
        assert_eq!(d, vec![0.5, 1.0, 30.0]);
        // Fewer student points: the unpaired teacher point is infinitely far.
        let d = locate(&teacher, &student[..1]);
        assert_eq!(d[1], 1.0);
        assert!(d[0].is_infinite() && d[2].is_infinite());
        assert_eq!(median_sorted(&[1.0, 2.0, 7.0]), 2.0);
        assert_eq!(median_sorted(&[1.0, 2.0, 7.0, 9.0]), 4.5);
    }

    #[test]
    fn unpaired_stable_points_are_those_no_teacher_point_claims_within_the_tolerance() {
        let teacher = vec![vec![0.0, 0.0], vec![10.0, 0.0], vec![0.0, 10.0]];
        // Two near the teacher's first two; one extra beside a saddle; one paired with the
        // third teacher point but too far from it.
        let student = vec![
            vec![0.1, 0.0],
            vec![10.0, 0.1],
            vec![5.0, 5.0],
            vec![0.0, 13.0],
        ];
        let unstable = vec![vec![5.0, 5.2], vec![20.0, 20.0]];
        let d = unpaired_stable(&teacher, &student, &unstable, 1.0);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!((d[0] - 0.2).abs() < 1e-12, "{d:?}");
        assert!((d[1] - (25.0f64 + 7.8 * 7.8).sqrt()).abs() < 1e-12, "{d:?}");
        // A wider tolerance claims the far one; no unstable points: infinitely far.
        let d = unpaired_stable(&teacher, &student, &[], 5.0);
        assert_eq!(d.len(), 1);
        assert!(d[0].is_infinite());
        // Every student point claimed: none unpaired.
        assert!(unpaired_stable(&teacher, &student[..2], &unstable, 1.0).is_empty());
    }

    /// The orthogonalised noise of random 40-unit rank-2 students against the same formula
    /// with J's left singular vectors from an independent route (the eigenvectors of the
    /// N × N J Jᵀ): equal. With nalgebra's SVD of J (kinds ≤ 8) the first case, one of those
    /// where that SVD is wrong (dimforge/nalgebra#1172), was off.
    #[test]
    fn orthogonalised_noise_uses_the_true_singular_vectors() {
        use rand::{Rng, SeedableRng};
        let mut c = crate::model::lowrank::ModelConfig::continuous_student();
        c.n_units = 40;
        c.dim_x = 40;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..4 {
            let mut params = c.init_params(1).unwrap();
            let layout = c.layout();
            for name in ["rnn.transition.m", "rnn.transition.n", "rnn.R_z"] {
                for v in &mut params[layout.get(name).unwrap().range()] {
                    *v = rng.sample::<f64, _>(rand_distr::StandardNormal);
                }
            }
            let got = orthogonalised_noise_std(&c, &params).unwrap();
            let p = c.view(&params).unwrap();
            let m = nalgebra::DMatrix::from_row_slice(40, 2, p.m);
            let j = &m * nalgebra::DMatrix::from_row_slice(2, 40, p.n);
            let eig = nalgebra::SymmetricEigen::new(&j * j.transpose());
            let mut order: Vec<usize> = (0..40).collect();
            order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
            let ur = nalgebra::DMatrix::from_fn(40, 2, |i, q| eig.eigenvectors[(i, order[q])]);
            let l = nalgebra::DMatrix::from_row_slice(2, 2, &noise_cholesky(c.noise_z, p.r_z, 2));
            let pl = ur.transpose() * &m * l;
            let cov = &pl * pl.transpose();
            for q in 0..2 {
                let want = cov[(q, q)].sqrt();
                assert!(
                    (got[q] - want).abs() < 1e-9 * want,
                    "{q}: {} vs {want}",
                    got[q]
                );
            }
        }
    }

    /// The gain-matched noise of the teacher taken as a student with its own gain is its
    /// R_z; scaling the student's latents up by s and its gains down by s (the same data)
    /// leaves it unchanged, while the orthogonalised noise grows by s.
    #[test]
    fn gain_matched_noise_is_the_teachers_and_blind_to_the_gain_latent_scale() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("datasets/teachers/osc_rnn_poisson.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let teacher = TeacherBasis::from_json(&doc).unwrap();
        let (c, mut params) = teacher.as_model(0.2, 0.1).unwrap();
        let layout = c.layout();
        let block = |name: &str| layout.get(name).unwrap().range();
        for b in &mut params[block("rnn.observation.B")] {
            *b = 4.0;
        }
        let matched = gain_matched_noise_std(&c, &params, 4.0).unwrap();
        // U is orthonormal to the JSON's single precision.
        assert!((matched - 0.2).abs() < 1e-6, "{matched}");
        let ortho = orthogonalised_noise_std(&c, &params).unwrap();
        let s = 3.0;
        let mut scaled = params.clone();
        for v in &mut scaled[block("rnn.observation.B")] {
            *v /= s;
        }
        for v in &mut scaled[block("rnn.transition.m")] {
            *v *= s;
        }
        let again = gain_matched_noise_std(&c, &scaled, 4.0).unwrap();
        assert!((again - matched).abs() < 1e-9, "{again} vs {matched}");
        let ortho_scaled = orthogonalised_noise_std(&c, &scaled).unwrap();
        for (a, b) in ortho.iter().zip(&ortho_scaled) {
            assert!((b / a - s).abs() < 1e-9, "{a} → {b}");
        }
        assert!(gain_matched_noise_std(&c, &params, 0.0).is_err());
    }

    /// A phase portrait with a run drawn over it: the oscillator teacher's noise-free dynamics
    /// settle on a limit cycle around its one (unstable) fixed point, which is drawn with the
    /// run, and the range covers the run; the reach teacher's settle on a point, which is not
    /// drawn. Without runs nothing is drawn over the flow (the `fixed_points` stage's figure).
    #[test]
    fn phase_portraits_draw_the_run_and_a_limit_cycle_but_not_a_settled_point() {
        let basis_map = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("datasets/teachers")
                .join(name);
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let map = dataset_basis_map(&TeacherBasis::from_json(&doc).unwrap()).unwrap();
            let set = find_fixed_points(&map, &Options::default()).unwrap();
            (map, set)
        };
        let run = vec![(0.0, 0.0), (9.0, -7.0)];
        let runs = [("a run".to_string(), 0, run)];
        let (osc, osc_fp) = basis_map("osc_rnn.json");
        assert_eq!(osc_fp.points.len(), 1);
        let fig = crate::stages::fixed_points::portrait_data(&osc, &osc_fp, None, 5, &runs);
        assert_eq!(fig.paths.len(), 2, "the run and the limit cycle");
        assert_eq!(fig.paths[0], runs[0]);
        let cycle = &fig.paths[1].2;
        assert_eq!(cycle.len(), 300);
        // On the cycle: every state away from the fixed point, and the cycle is the map's.
        let fp = &osc_fp.points[0].z;
        for &(x, y) in cycle {
            assert!((x - fp[0]).hypot(y - fp[1]) > 0.1, "({x}, {y})");
        }
        let next = osc.apply(&[cycle[0].0, cycle[0].1]);
        assert_eq!((next[0], next[1]), cycle[1]);
        assert!(
            fig.x_range.0 < 0.0 && fig.x_range.1 > 9.0,
            "{:?}",
            fig.x_range
        );
        assert!(fig.y_range.0 < -7.0, "{:?}", fig.y_range);
        let bare = crate::stages::fixed_points::portrait_data(&osc, &osc_fp, None, 5, &[]);
        assert!(bare.paths.is_empty());
        assert!(bare.x_range.1 < 9.0, "{:?}", bare.x_range);
        let (reach, reach_fp) = basis_map("reach_rnn.json");
        let fig = crate::stages::fixed_points::portrait_data(&reach, &reach_fp, None, 5, &runs);
        assert_eq!(fig.paths, runs.to_vec(), "settled on a point: only the run");
    }

    /// The teacher taken as a student of ours (M = U, n = V, h = −B, one-to-one readout of the
    /// currents) has its stable points exactly where the teacher's are in the data space.
    #[test]
    fn the_teacher_as_a_student_locates_every_stable_point_at_distance_zero() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("datasets/teachers/reach_rnn.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let teacher = TeacherBasis::from_json(&doc).unwrap();
        let (c, params) = teacher.as_model(0.05, 0.1).unwrap();
        let pv = c.view(&params).unwrap();
        let opts = Options::default();
        let smap =
            PwlMap::from_low_rank(pv.m, pv.n, pv.h, pv.decay, c.rank, c.nonlinearity).unwrap();
        let tmap = dataset_basis_map(&teacher).unwrap();
        let (sfp, tfp) = (
            find_fixed_points(&smap, &opts).unwrap(),
            find_fixed_points(&tmap, &opts).unwrap(),
        );
        let obs = SimulatedObservation::Currents { noise_std: 0.1 };
        let t_at = teacher_stable_in_data(&tfp, &obs);
        let s_at = student_in_data(&c, &pv, &sfp, true);
        assert_eq!(t_at.len(), 8, "the reach teacher's ring of 8 attractors");
        let d = locate(&t_at, &s_at);
        assert!(d.iter().all(|&v| v < 1e-9), "distances {d:?}");
        assert_eq!(s_at.len(), 8);
        // The default tolerance is unambiguous on this ring: neighbouring attractors lie more
        // than twice its 0.25 radii apart.
        let r = radius(&t_at);
        for (i, a) in t_at.iter().enumerate() {
            let others: Vec<Vec<f64>> = (0..t_at.len())
                .filter(|&j| j != i)
                .map(|j| t_at[j].clone())
                .collect();
            let nearest = locate(std::slice::from_ref(a), &others)[0];
            assert!(
                nearest > 2.0 * default_location_tolerance() * r,
                "point {i}: nearest neighbour {nearest} at radius {r}"
            );
        }
    }

    #[test]
    fn radius_is_the_rms_distance_from_the_centroid() {
        // A square of side 2 around (1, 1): every corner √2 from the centre.
        let square = vec![
            vec![0.0, 0.0],
            vec![2.0, 0.0],
            vec![0.0, 2.0],
            vec![2.0, 2.0],
        ];
        assert!((radius(&square) - 2f64.sqrt()).abs() < 1e-15);
        // Two points: half their distance; one point or none: 0 (no scale).
        assert!((radius(&square[..2]) - 1.0).abs() < 1e-15);
        assert_eq!(radius(&square[..1]), 0.0);
        assert_eq!(radius(&[]), 0.0);
    }
}
