//! All fixed points of a piecewise-linear low-rank RNN (SPEC §4.1–4.2), exactly.
//!
//! The map is z' = a ∘ z + V relu(U z + b) + c with z ∈ R^R, U (N × R), V (R × N): unit i is
//! active on the side u_iᵀz + b_i > 0 of its hyperplane. In each region of the arrangement of
//! the N hyperplanes (an activity pattern D) the map is affine, and its fixed point solves
//! (I − diag(a) − V D U) z = V D b + c; it is a fixed point of the RNN iff it lies in the
//! region. Every region of an essential arrangement has a vertex, so visiting the 2^R regions
//! around every vertex visits every region (Proposition 1) — the reference's method.
//!
//! Enumeration — a line sweep instead of the reference's "solve every R-subset, collect the
//! patterns, deduplicate": for each (R−1)-subset T of hyperplanes (in general position a line),
//! the other hyperplanes cross the line at sorted parameters t; walking the crossings flips one
//! unit at a time, so the pattern of the line's cells and the matrix V D U are updated in O(R²)
//! per vertex rather than recomputed in O(N R²). A vertex (T ∪ {k}) is handled only from the
//! line that omits its largest index, so each is handled once.
//!
//! One region per vertex, not 2^R: with a fixed generic direction c, a region bounded below
//! along c has exactly one lowest vertex, and at a simple vertex the region for which it is the
//! lowest point is read off the signs of λ in c = Σ λ_i u_i (Farkas; O(R²) per vertex given
//! the line's precomputed projector). A region unbounded below along c contains an unbounded
//! edge going down along c — the end of some line — so the 2^(R−1) regions around that end of
//! every line complete the enumeration. Regions solved ≈ C(N,R) + 2^(R−1) C(N,R−1) instead of
//! 2^R C(N,R). When U is rank-deficient (rank k < R) the sweep runs in U's row space, where
//! the arrangement is essential. Memory is O(N) per worker; the lines are processed in
//! parallel (rayon) and only fixed points are kept.
//!
//! Degeneracies are handled and counted, never silently: subsets whose hyperplanes are not
//! independent (e.g. the two parallel hyperplanes of one clipped-ReLU unit) define no line;
//! hyperplanes parallel to a line do not cross it; several hyperplanes crossing a line at one
//! point (a vertex of more than R hyperplanes) or a vertex whose lowest region is ambiguous
//! (λ_i ≈ 0) have all their sides enumerated; singular
//! region systems are counted and skipped; a fixed point on a region boundary (found from
//! both sides) is reported once, with `on_boundary` set.

use nalgebra::{DMatrix, DVector};

use rayon::prelude::*;
use serde::Serialize;

use crate::model::lowrank::Nonlinearity;

/// Errors of the fixed-point analysis.
#[derive(Debug, thiserror::Error)]
pub enum FixedPointError {
    /// Shapes do not agree.
    #[error("fixed points: {0}")]
    Shape(String),
    /// The nonlinearity is not piecewise linear.
    #[error("fixed points: the exact method needs relu or clipped_relu units, not {0:?}")]
    Nonlinearity(Nonlinearity),
    /// Non-finite weights.
    #[error("fixed points: {0} holds NaN or infinite values")]
    NonFinite(&'static str),
}

/// A piecewise-linear map z' = a ∘ z + V relu(U z + b) + c.
#[derive(Debug, Clone)]
pub struct PwlMap {
    /// Rank R.
    pub rank: usize,
    /// Decay per latent dimension (R).
    pub a: Vec<f64>,
    /// U (N × R, row-major): unit i's hyperplane normal is row i.
    pub u: Vec<f64>,
    /// V (R × N, row-major).
    pub v: Vec<f64>,
    /// b (N): unit i is active where u_iᵀz + b_i > 0.
    pub b: Vec<f64>,
    /// c (R).
    pub c: Vec<f64>,
    /// Units of the original model per relu unit here (clipped ReLU: unit i and i + N are the
    /// two halves of model unit i); used for the full coordinates.
    pub n_model_units: usize,
}

impl PwlMap {
    /// Number of relu units (hyperplanes).
    pub fn n_units(&self) -> usize {
        self.b.len()
    }

    /// Checks shapes and finiteness.
    pub fn validate(&self) -> Result<(), FixedPointError> {
        let (r, n) = (self.rank, self.n_units());
        if r == 0 {
            return Err(FixedPointError::Shape("rank must be ≥ 1".into()));
        }
        if self.a.len() != r || self.c.len() != r || self.u.len() != n * r || self.v.len() != r * n
        {
            return Err(FixedPointError::Shape(format!(
                "expected a, c of length R = {r}, U of N × R = {n} × {r} and V of R × N; got \
                 a {}, c {}, U {}, V {}",
                self.a.len(),
                self.c.len(),
                self.u.len(),
                self.v.len()
            )));
        }
        for (name, xs) in [
            ("a", &self.a),
            ("U", &self.u),
            ("V", &self.v),
            ("b", &self.b),
            ("c", &self.c),
        ] {
            if xs.iter().any(|x| !x.is_finite()) {
                return Err(FixedPointError::NonFinite(name));
            }
        }
        Ok(())
    }

    /// The map of a low-rank RNN z' = a z + n φ(M z; h) (our model's convention, SPEC §1.2):
    /// relu φ = max(x − h, 0) gives one unit with b = −h; clipped relu φ = max(x + h, 0) −
    /// max(x, 0) gives two units (b = h and b = 0, weights n and −n).
    pub fn from_low_rank(
        m: &[f64],
        n: &[f64],
        h: &[f64],
        decay: f64,
        rank: usize,
        nonlinearity: Nonlinearity,
    ) -> Result<Self, FixedPointError> {
        let units = h.len();
        if m.len() != units * rank || n.len() != rank * units {
            return Err(FixedPointError::Shape(format!(
                "M must be N × R and n R × N with N = {units}, R = {rank}"
            )));
        }
        let map = match nonlinearity {
            Nonlinearity::Relu => PwlMap {
                rank,
                a: vec![decay; rank],
                u: m.to_vec(),
                v: n.to_vec(),
                b: h.iter().map(|x| -x).collect(),
                c: vec![0.0; rank],
                n_model_units: units,
            },
            Nonlinearity::ClippedRelu => {
                let mut u = m.to_vec();
                u.extend_from_slice(m);
                let mut v = vec![0.0; rank * 2 * units];
                for q in 0..rank {
                    for i in 0..units {
                        v[q * 2 * units + i] = n[q * units + i];
                        v[q * 2 * units + units + i] = -n[q * units + i];
                    }
                }
                let mut b = h.to_vec();
                b.extend(std::iter::repeat_n(0.0, units));
                PwlMap {
                    rank,
                    a: vec![decay; rank],
                    u,
                    v,
                    b,
                    c: vec![0.0; rank],
                    n_model_units: units,
                }
            }
            other => return Err(FixedPointError::Nonlinearity(other)),
        };
        map.validate()?;
        Ok(map)
    }

    /// F(z).
    pub fn apply(&self, z: &[f64]) -> Vec<f64> {
        let (r, n) = (self.rank, self.n_units());
        let mut out: Vec<f64> = (0..r).map(|q| self.a[q] * z[q] + self.c[q]).collect();
        for i in 0..n {
            let pre = self.pre(i, z);
            if pre > 0.0 {
                for q in 0..r {
                    out[q] += self.v[q * n + i] * pre;
                }
            }
        }
        out
    }

    /// u_iᵀz + b_i.
    #[inline]
    pub fn pre(&self, i: usize, z: &[f64]) -> f64 {
        let r = self.rank;
        let row = &self.u[i * r..(i + 1) * r];
        row.iter().zip(z).map(|(a, b)| a * b).sum::<f64>() + self.b[i]
    }

    /// Whether unit i is on side `active` at z: u_iᵀz + b_i > 0 iff active, or within
    /// `tol` · (1 + |b_i|) of its hyperplane (a boundary point belongs to both sides).
    #[inline]
    pub fn on_side(&self, i: usize, z: &[f64], active: bool, tol: f64) -> bool {
        let pre = self.pre(i, z);
        pre.abs() <= tol * (1.0 + self.b[i].abs()) || (pre > 0.0) == active
    }

    /// The affine fixed point of the region with pattern `active`: (I − diag(a) − V D U) z =
    /// V D b + c; `None` when that system is singular. (Whether z lies in the region is
    /// [`on_side`](Self::on_side) for every unit.)
    pub fn region_fixed_point(&self, active: &[bool]) -> Option<Vec<f64>> {
        let (r, n) = (self.rank, self.n_units());
        let mut sys: Vec<f64> = self.jacobian(active).iter().map(|j| -j).collect();
        for p in 0..r {
            sys[p * r + p] += 1.0;
        }
        let mut z = self.c.clone();
        for i in (0..n).filter(|&i| active[i]) {
            for (p, zp) in z.iter_mut().enumerate() {
                *zp += self.v[p * n + i] * self.b[i];
            }
        }
        solve_in_place(&mut sys, &mut z, r).then_some(z)
    }

    /// Jacobian diag(a) + V D U for a pattern (R × R, row-major).
    pub fn jacobian(&self, active: &[bool]) -> Vec<f64> {
        let (r, n) = (self.rank, self.n_units());
        let mut j = vec![0.0; r * r];
        for q in 0..r {
            j[q * r + q] = self.a[q];
        }
        for i in (0..n).filter(|&i| active[i]) {
            for p in 0..r {
                for q in 0..r {
                    j[p * r + q] += self.v[p * n + i] * self.u[i * r + q];
                }
            }
        }
        j
    }
}

/// Stability of a fixed point of the discrete-time map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stability {
    /// Spectral radius < 1 − tol.
    Stable,
    /// Spectral radius > 1 + tol.
    Unstable,
    /// Within tol of 1.
    Marginal,
}

/// One fixed point.
#[derive(Debug, Clone, Serialize)]
pub struct FixedPoint {
    /// Latent coordinates z (R).
    pub z: Vec<f64>,
    /// Full coordinates x = U z of the model's units (N; for clipped ReLU the N model units,
    /// not the 2N halves): the network state at the fixed point.
    pub x: Vec<f64>,
    /// Active relu units (indices into the map's units).
    pub active_units: Vec<usize>,
    /// Jacobian diag(a) + V D U (R × R, row-major).
    pub jacobian: Vec<f64>,
    /// Eigenvalues (real, imaginary), sorted by real then imaginary part.
    pub eigenvalues: Vec<(f64, f64)>,
    /// max |λ|.
    pub spectral_radius: f64,
    /// Label with the tolerance of [`Options::marginal_tol`].
    pub stability: Stability,
    /// max |F(z) − z|.
    pub residual: f64,
    /// Some unit's pre-activation is within `boundary_tol` of 0 (the point was reachable
    /// from more than one region; reported once).
    pub on_boundary: bool,
}

/// Cost and degeneracy counters (what the algorithm did).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// (R−1)-subsets tried as lines.
    pub lines: u64,
    /// Of those, dependent hyperplanes: no line.
    pub degenerate_lines: u64,
    /// Hyperplane/line pairs that were parallel (no crossing).
    pub parallel_crossings: u64,
    /// Vertices expanded (each once).
    pub vertices: u64,
    /// Vertices where more than R hyperplanes meet (all their sides enumerated).
    pub multi_vertices: u64,
    /// Region systems solved (the linear solves, comparable to the reference's count minus its
    /// C(N,R) vertex solves).
    pub region_solves: u64,
    /// Singular region systems (skipped: a continuum of fixed points or none).
    pub singular_regions: u64,
    /// Candidates that lay in their region (before merging duplicates).
    pub accepted: u64,
    /// Duplicates merged (the same point from several regions / vertices).
    pub duplicates_merged: u64,
    /// Vertices with more than 20 hyperplanes through them even after the perturbation,
    /// not expanded (fixed points in their regions could be missed; never seen in practice).
    pub skipped_vertices: u64,
    /// Simple vertices whose lowest region along the sweep direction was ambiguous (c nearly
    /// parallel to a face): all their sides were solved instead.
    pub ambiguous_vertices: u64,
    /// Line ends (unbounded edges going down along c) whose 2^(k−1) regions were solved.
    pub line_ends: u64,
    /// Dimension k of the arrangement (rank of U; < R when U is rank-deficient, and the sweep
    /// then runs in U's row space).
    pub arrangement_dim: u64,
}

impl Counters {
    /// Adds another worker's counts (not `arrangement_dim`, which is global).
    fn add(&mut self, c: &Counters) {
        self.lines += c.lines;
        self.degenerate_lines += c.degenerate_lines;
        self.parallel_crossings += c.parallel_crossings;
        self.vertices += c.vertices;
        self.multi_vertices += c.multi_vertices;
        self.region_solves += c.region_solves;
        self.singular_regions += c.singular_regions;
        self.accepted += c.accepted;
        self.duplicates_merged += c.duplicates_merged;
        self.skipped_vertices += c.skipped_vertices;
        self.ambiguous_vertices += c.ambiguous_vertices;
        self.line_ends += c.line_ends;
    }
}

/// Options of the exact method.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// |pre-activation| below this counts as on the boundary (accepted from either side).
    pub boundary_tol: f64,
    /// |ρ − 1| below this is `Marginal`.
    pub marginal_tol: f64,
    /// Two points closer than this (max norm) are the same.
    pub merge_tol: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            boundary_tol: 1e-10,
            marginal_tol: 1e-9,
            merge_tol: 1e-8,
        }
    }
}

/// Result of the exact method.
#[derive(Debug, Clone, Serialize)]
pub struct FixedPointSet {
    /// The fixed points, sorted lexicographically by z.
    pub points: Vec<FixedPoint>,
    /// What the enumeration did.
    pub counters: Counters,
}

/// Iterator over k-subsets of 0..n in lexicographic order.
pub(crate) fn next_subset(s: &mut [usize], n: usize) -> bool {
    let k = s.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if s[i] < n - k + i {
            s[i] += 1;
            for j in i + 1..k {
                s[j] = s[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// All fixed points, exactly (see the module docs).
pub fn find_fixed_points(map: &PwlMap, opts: &Options) -> Result<FixedPointSet, FixedPointError> {
    find_fixed_points_with(map, opts, &mut |work| work())
}

/// Parallel calls the sweep is cut into by [`find_fixed_points_with`].
const SWEEP_CALLS: usize = 16;

/// [`find_fixed_points`] with the sweep cut into [`SWEEP_CALLS`] parallel calls of about equal
/// work, each made through `run` (e.g. a stage's `install_elastic`, so that a call also uses
/// the cores that fell idle since the one before). The same points and counters.
pub fn find_fixed_points_with(
    map: &PwlMap,
    opts: &Options,
    run: &mut dyn FnMut(&mut (dyn FnMut() + Send)),
) -> Result<FixedPointSet, FixedPointError> {
    map.validate()?;
    let n = map.n_units();
    let geo = Geometry::new(map);
    let k = geo.dim;
    let mut counters = Counters {
        arrangement_dim: k as u64,
        ..Counters::default()
    };
    if k == 0 {
        // U = 0: one region, every unit on the side of its threshold.
        let mut found = Vec::new();
        let mut sweep = Sweep::new(map, opts, &geo);
        for i in 0..n {
            sweep.active[i] = map.b[i] > 0.0;
        }
        let mut g = vec![0.0; geo.width];
        for i in (0..n).filter(|&i| map.b[i] > 0.0) {
            geo.add(i, 1.0, &mut g);
        }
        sweep.expand(&[], &g, &mut found, &mut counters);
        return Ok(finish(map, opts, found, counters));
    }
    // The lines: every (k−1)-subset T of the hyperplanes, grouped by their first index.
    let firsts: Vec<usize> = if k == 1 { vec![0] } else { (0..n).collect() };
    let line_group = |&first: &usize| {
        let mut found = Vec::new();
        let mut ctr = Counters::default();
        let mut sweep = Sweep::new(map, opts, &geo);
        if k == 1 {
            sweep.line(&[], &mut found, &mut ctr);
            return (found, ctr);
        }
        let size = k - 2;
        if first + size >= n {
            return (found, ctr);
        }
        // All (k−1)-subsets starting with `first`: `first` then a size-(k−2) subset of
        // first+1..n, walked in lexicographic order.
        let mut rest: Vec<usize> = (0..size).collect();
        let mut t = vec![0usize; k - 1];
        loop {
            t[0] = first;
            for (q, x) in rest.iter().enumerate() {
                t[q + 1] = first + 1 + x;
            }
            sweep.line(&t, &mut found, &mut ctr);
            if size == 0 || !next_subset(&mut rest, n - first - 1) {
                break;
            }
        }
        (found, ctr)
    };
    // Group `first` holds C(n − first − 1, k − 2) lines: cut the groups into calls of about
    // equal numbers of lines, in order.
    let lines_from = |first: usize| -> f64 {
        let (m, j) = ((n - first - 1) as f64, k.saturating_sub(2));
        (0..j)
            .fold(1.0, |acc, i| acc * (m - i as f64) / (i as f64 + 1.0))
            .max(0.0)
    };
    let total: f64 = firsts.iter().map(|&f| lines_from(f)).sum();
    let mut calls: Vec<&[usize]> = Vec::new();
    let (mut start, mut acc) = (0, 0.0);
    for (i, &f) in firsts.iter().enumerate() {
        acc += lines_from(f);
        if acc >= total * (calls.len() + 1) as f64 / SWEEP_CALLS as f64 || i + 1 == firsts.len() {
            calls.push(&firsts[start..=i]);
            start = i + 1;
        }
    }
    let mut results: Vec<(Vec<Candidate>, Counters)> = Vec::with_capacity(firsts.len());
    for call in calls {
        let mut part = Vec::new();
        run(&mut || part = call.par_iter().map(line_group).collect());
        results.extend(part);
    }
    let mut all = Vec::new();
    for (f, c) in results {
        all.extend(f);
        counters.add(&c);
    }
    Ok(finish(map, opts, all, counters))
}

/// A candidate accepted by the region test.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) z: Vec<f64>,
}

/// Merge duplicates, compute Jacobians and labels, sort.
pub(crate) fn finish(
    map: &PwlMap,
    opts: &Options,
    all: Vec<Candidate>,
    mut ctr: Counters,
) -> FixedPointSet {
    let r = map.rank;
    let mut points: Vec<FixedPoint> = Vec::new();
    let mut sorted = all;
    sorted.sort_by(|a, b| {
        a.z.iter()
            .zip(&b.z)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for cand in sorted {
        let dup = points.iter().any(|p| {
            p.z.iter()
                .zip(&cand.z)
                .all(|(a, b)| (a - b).abs() <= opts.merge_tol * (1.0 + a.abs()))
        });
        if dup {
            ctr.duplicates_merged += 1;
            continue;
        }
        let n = map.n_units();
        let pre: Vec<f64> = (0..n).map(|i| map.pre(i, &cand.z)).collect();
        let active: Vec<bool> = pre.iter().map(|&p| p > 0.0).collect();
        let on_boundary = pre.iter().any(|p| p.abs() <= opts.boundary_tol);
        let jac = map.jacobian(&active);
        let jm = DMatrix::from_row_slice(r, r, &jac);
        let mut eig: Vec<(f64, f64)> = jm
            .complex_eigenvalues()
            .iter()
            .map(|c| (c.re, c.im))
            .collect();
        eig.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let rho = eig.iter().map(|(re, im)| re.hypot(*im)).fold(0.0, f64::max);
        let stability = if (rho - 1.0).abs() <= opts.marginal_tol {
            Stability::Marginal
        } else if rho < 1.0 {
            Stability::Stable
        } else {
            Stability::Unstable
        };
        let fz = map.apply(&cand.z);
        let residual = fz
            .iter()
            .zip(&cand.z)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let x = (0..map.n_model_units.min(n))
            .map(|i| map.pre(i, &cand.z) - map.b[i])
            .collect();
        points.push(FixedPoint {
            x,
            z: cand.z,
            active_units: (0..n).filter(|&i| active[i]).collect(),
            jacobian: jac,
            eigenvalues: eig,
            spectral_radius: rho,
            stability,
            residual,
            on_boundary,
        });
    }
    FixedPointSet {
        points,
        counters: ctr,
    }
}

/// The arrangement's geometry: the hyperplane normals expressed in an orthonormal basis of
/// the row space of U (dimension k ≤ R). When U has full column rank (the usual case) k = R and
/// the basis is the identity; otherwise every region contains the lines along the null space
/// of U and the sweep runs in the k-dimensional row space, where the arrangement is
/// essential (every region has a vertex).
struct Geometry {
    /// k.
    dim: usize,
    /// Normals (N × k, row-major).
    normals: Vec<f64>,
    /// Thresholds for the sweep: b plus a tiny deterministic perturbation (see [`perturbed`]).
    offsets: Vec<f64>,
    /// A generic direction c (k): each region bounded below along c is visited from its lowest
    /// vertex only.
    direction: Vec<f64>,
    /// Per unit, its term of the region system, [v_i u_iᵀ (R × R), v_i b_i (R)], so that
    /// flipping a unit is one contiguous add.
    terms: Vec<f64>,
    /// R² + R.
    width: usize,
}

impl Geometry {
    fn new(map: &PwlMap) -> Self {
        let (r, n) = (map.rank, map.n_units());
        let um = DMatrix::from_row_slice(n, r, &map.u);
        let svd = um.svd(false, true);
        let smax = svd.singular_values.iter().copied().fold(0.0, f64::max);
        let keep: Vec<usize> = (0..svd.singular_values.len())
            .filter(|&q| smax > 0.0 && svd.singular_values[q] > 1e-10 * smax)
            .collect();
        let (dim, normals) = match &svd.v_t {
            Some(v_t) if keep.len() < r => {
                let dim = keep.len();
                let mut out = vec![0.0; n * dim];
                for i in 0..n {
                    for (j, &q) in keep.iter().enumerate() {
                        out[i * dim + j] = (0..r).map(|p| map.u[i * r + p] * v_t[(q, p)]).sum();
                    }
                }
                (dim, out)
            }
            _ => (r, map.u.clone()),
        };
        let direction = (0..dim)
            .map(|q| {
                let f = ((q as f64 + 1.0) * 0.754_877_666_246_692_7).fract();
                if q % 2 == 0 {
                    0.3 + f
                } else {
                    -0.3 - f
                }
            })
            .collect();
        let width = r * r + r;
        let mut terms = vec![0.0; n * width];
        for i in 0..n {
            let term = &mut terms[i * width..(i + 1) * width];
            for p in 0..r {
                let vp = map.v[p * n + i];
                for q in 0..r {
                    term[p * r + q] = vp * map.u[i * r + q];
                }
                term[r * r + p] = vp * map.b[i];
            }
        }
        Geometry {
            dim,
            normals,
            offsets: perturbed(map),
            direction,
            terms,
            width,
        }
    }

    /// g += s · (unit i's term): unit i switched on (s = 1) or off (s = −1).
    #[inline]
    fn add(&self, i: usize, s: f64, g: &mut [f64]) {
        let term = &self.terms[i * self.width..(i + 1) * self.width];
        for (x, t) in g.iter_mut().zip(term) {
            *x += s * t;
        }
    }

    #[inline]
    fn normal(&self, i: usize) -> &[f64] {
        &self.normals[i * self.dim..(i + 1) * self.dim]
    }
}

/// What the sweep knows about the current line.
struct Line {
    /// Direction d (k).
    d: Vec<f64>,
    /// cᵀd.
    cd: f64,
    /// P_T ((k−1) × k, row-major): the coefficients of w ∈ span{u_i : i ∈ T} in that basis.
    p_t: Vec<f64>,
    /// P_T c.
    p_c: Vec<f64>,
}

/// Per-worker state of the sweep.
struct Sweep<'a> {
    map: &'a PwlMap,
    opts: &'a Options,
    geo: &'a Geometry,
    /// Scratch: crossings (t, unit).
    cross: Vec<(f64, u32)>,
    /// Scratch: crossings as (order-preserving integer key of t, unit), sorted.
    keys: Vec<(u64, u32)>,
    /// Slope uᵢᵀd of every unit along the current line.
    slope: Vec<f64>,
    /// Current pattern of the cell being walked (excluding T, whose states are enumerated).
    active: Vec<bool>,
    in_t: Vec<bool>,
    /// Scratch: the region system and its solution.
    sys: Vec<f64>,
    z: Vec<f64>,
    /// Scratch: the running [V D U, V D b] of the walked cell, and a working copy.
    g: Vec<f64>,
    w: Vec<f64>,
    /// Scratch: units of a vertex and their wanted states.
    free: Vec<usize>,
    want: Vec<bool>,
    lambda: Vec<f64>,
    /// Largest number of hyperplanes through one vertex whose 2^k sides are enumerated.
    max_free: usize,
    /// Tests: every pattern whose system was solved (units < 128).
    #[cfg(test)]
    visited: Vec<u128>,
}

impl<'a> Sweep<'a> {
    fn new(map: &'a PwlMap, opts: &'a Options, geo: &'a Geometry) -> Self {
        let (n, r) = (map.n_units(), map.rank);
        Sweep {
            map,
            opts,
            geo,
            cross: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            slope: vec![0.0; n],
            active: vec![false; n],
            in_t: vec![false; n],
            sys: vec![0.0; r * r],
            z: vec![0.0; r],
            g: vec![0.0; geo.width],
            w: vec![0.0; geo.width],
            free: Vec::with_capacity(64),
            want: Vec::with_capacity(64),
            lambda: vec![0.0; r],
            max_free: 20,
            #[cfg(test)]
            visited: Vec::new(),
        }
    }

    /// Walk the line of hyperplanes `t` (k−1 of them, increasing). Each vertex T ∪ {j} with
    /// j > max(T) (so that every vertex is handled from exactly one line) contributes the one
    /// adjacent region in which it is the lowest point along c; the end of the line towards
    /// −c contributes the 2^(k−1) regions around it. Every region is bounded below along c
    /// (then it has a unique lowest vertex, c being generic) or contains an unbounded edge
    /// going down along c, the end of some line — so every region is visited.
    fn line(&mut self, t: &[usize], found: &mut Vec<Candidate>, ctr: &mut Counters) {
        let n = self.map.n_units();
        ctr.lines += 1;
        let Some((p, line)) = line_of(self.geo, t) else {
            ctr.degenerate_lines += 1;
            return;
        };
        let max_t = t.last().copied();
        for &i in t {
            self.in_t[i] = true;
        }
        self.cross.clear();
        for i in 0..n {
            if self.in_t[i] {
                continue;
            }
            let row = self.geo.normal(i);
            let ud: f64 = row.iter().zip(&line.d).map(|(a, b)| a * b).sum();
            let up = row.iter().zip(&p).map(|(a, b)| a * b).sum::<f64>() + self.geo.offsets[i];
            let scale = row.iter().map(|x| x.abs()).sum::<f64>().max(1e-300);
            self.slope[i] = ud;
            if ud.abs() <= 1e-12 * scale {
                ctr.parallel_crossings += 1;
                // Constant along the line.
                self.active[i] = up > 0.0;
                continue;
            }
            // pre(s) = up + s ud; at s → −∞ active iff ud < 0.
            self.active[i] = ud < 0.0;
            self.cross.push((-up / ud, i as u32));
        }
        // Sort by t (then unit): integer keys in the order of f64::total_cmp sort faster than
        // floats.
        self.keys.clear();
        self.keys
            .extend(self.cross.iter().map(|&(t, i)| (order_key(t), i)));
        self.keys.sort_unstable();
        for (c, &(key, i)) in self.cross.iter_mut().zip(&self.keys) {
            *c = (from_order_key(key), i);
        }
        // V D U and V D b of the cell at s → −∞ (units not in T).
        self.g.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..n {
            if self.active[i] && !self.in_t[i] {
                self.geo.add(i, 1.0, &mut self.g);
            }
        }
        // Which end goes down along c (both when the line is nearly level).
        let dscale = self.geo.direction.iter().map(|x| x.abs()).sum::<f64>();
        let level = line.cd.abs() <= 1e-9 * dscale;
        if line.cd > 0.0 || level {
            self.line_end(t, found, ctr);
        }
        let cross = std::mem::take(&mut self.cross);
        let mut j = 0;
        while j < cross.len() {
            // Group crossings at the same point (vertex of > k hyperplanes).
            let s0 = cross[j].0;
            let mut e = j + 1;
            let tol = 1e-12 * (1.0 + s0.abs());
            while e < cross.len() && (cross[e].0 - s0).abs() <= tol {
                e += 1;
            }
            let expand = max_t.is_none_or(|m| cross[j..e].iter().all(|c| c.1 as usize > m));
            if expand {
                ctr.vertices += 1;
                if e - j > 1 {
                    ctr.multi_vertices += 1;
                    self.expand_vertex(t, &cross[j..e], found, ctr);
                } else {
                    let unit = cross[j].1 as usize;
                    if !self.lowest_region(t, unit, &line, found, ctr) {
                        ctr.ambiguous_vertices += 1;
                        self.expand_vertex(t, &cross[j..e], found, ctr);
                    }
                }
            }
            // Cross: flip the group's units.
            for c in &cross[j..e] {
                let unit = c.1 as usize;
                let sign = if self.active[unit] { -1.0 } else { 1.0 };
                self.geo.add(unit, sign, &mut self.g);
                self.active[unit] = !self.active[unit];
            }
            j = e;
        }
        self.cross = cross;
        if line.cd < 0.0 || level {
            self.line_end(t, found, ctr);
        }
        for &i in t {
            self.in_t[i] = false;
        }
    }

    /// The 2^(k−1) regions around the current end of the line (units of T free).
    fn line_end(&mut self, t: &[usize], found: &mut Vec<Candidate>, ctr: &mut Counters) {
        ctr.line_ends += 1;
        let mut free = std::mem::take(&mut self.free);
        free.clear();
        free.extend_from_slice(t);
        let g = self.g.clone();
        self.expand(&free, &g, found, ctr);
        self.free = free;
    }

    /// All sides of a vertex (T ∪ group): the fallback for vertices of more than k
    /// hyperplanes or where the lowest region is ambiguous.
    fn expand_vertex(
        &mut self,
        t: &[usize],
        group: &[(f64, u32)],
        found: &mut Vec<Candidate>,
        ctr: &mut Counters,
    ) {
        let mut free = std::mem::take(&mut self.free);
        free.clear();
        free.extend_from_slice(t);
        free.extend(group.iter().map(|c| c.1 as usize));
        // The group's units are enumerated: remove their current contribution.
        let mut g = self.g.clone();
        for c in group {
            let unit = c.1 as usize;
            if self.active[unit] {
                self.geo.add(unit, -1.0, &mut g);
            }
        }
        self.expand(&free, &g, found, ctr);
        self.free = free;
    }

    /// The region around the simple vertex T ∪ {j} in which the vertex is the lowest point
    /// along c: writing c = Σ λ_i u_i over the vertex's hyperplanes (Farkas), unit i is active
    /// there iff λ_i > 0. Returns `false` when some λ_i is too close to 0 to decide.
    fn lowest_region(
        &mut self,
        t: &[usize],
        j: usize,
        line: &Line,
        found: &mut Vec<Candidate>,
        ctr: &mut Counters,
    ) -> bool {
        let k = self.geo.dim;
        let uj = self.geo.normal(j);
        // λ_j from dᵀc = λ_j dᵀu_j (d ⟂ u_i for i ∈ T), then λ_T = P_T (c − λ_j u_j).
        let lj = line.cd / self.slope[j];
        let mut scale = lj.abs();
        for q in 0..t.len() {
            let row = &line.p_t[q * k..(q + 1) * k];
            let pu: f64 = row.iter().zip(uj).map(|(a, b)| a * b).sum();
            let l = line.p_c[q] - lj * pu;
            self.lambda[q] = l;
            scale = scale.max(l.abs());
        }
        let tiny = 1e-9 * scale;
        if lj.abs() <= tiny || self.lambda[..t.len()].iter().any(|l| l.abs() <= tiny) {
            return false;
        }
        // Region system: the walked cell's V D U with j set to its side, plus T's active units.
        self.w.copy_from_slice(&self.g);
        let want_j = lj > 0.0;
        if want_j != self.active[j] {
            let s = if want_j { 1.0 } else { -1.0 };
            self.geo.add(j, s, &mut self.w);
        }
        self.free.clear();
        self.want.clear();
        for (q, &i) in t.iter().enumerate() {
            let on = self.lambda[q] > 0.0;
            if on {
                self.geo.add(i, 1.0, &mut self.w);
            }
            self.free.push(i);
            self.want.push(on);
        }
        self.free.push(j);
        self.want.push(want_j);
        let w = std::mem::take(&mut self.w);
        let (free, want) = (
            std::mem::take(&mut self.free),
            std::mem::take(&mut self.want),
        );
        self.solve_region(&w, &free, &want, found, ctr);
        self.w = w;
        self.free = free;
        self.want = want;
        true
    }

    /// Solve every region adjacent to a vertex: the units in `free` take every on/off
    /// combination on top of the base (G, g); the other units keep `self.active`.
    fn expand(
        &mut self,
        free: &[usize],
        g: &[f64],
        found: &mut Vec<Candidate>,
        ctr: &mut Counters,
    ) {
        let f = free.len();
        if f > self.max_free {
            ctr.skipped_vertices += 1;
            return;
        }
        let mut w = vec![0.0; g.len()];
        let mut want = vec![false; f];
        for mask in 0u64..(1u64 << f) {
            w.copy_from_slice(g);
            for (bit, &k) in free.iter().enumerate() {
                want[bit] = mask >> bit & 1 == 1;
                if want[bit] {
                    self.geo.add(k, 1.0, &mut w);
                }
            }
            self.solve_region(&w, free, &want, found, ctr);
        }
    }

    /// Solve (I − diag(a) − G) z = g + c and keep z if it lies in the region: units in `free`
    /// on the side `want`, every other unit on the side `self.active`.
    fn solve_region(
        &mut self,
        g: &[f64],
        free: &[usize],
        want: &[bool],
        found: &mut Vec<Candidate>,
        ctr: &mut Counters,
    ) {
        let map = self.map;
        let r = map.rank;
        #[cfg(test)]
        {
            let mut bits = 0u128;
            for i in 0..map.n_units().min(128) {
                let on = match free.iter().position(|&k| k == i) {
                    Some(q) => want[q],
                    None => self.active[i],
                };
                if on {
                    bits |= 1 << i;
                }
            }
            self.visited.push(bits);
        }
        for p in 0..r {
            for q in 0..r {
                self.sys[p * r + q] = -g[p * r + q];
            }
            self.sys[p * r + p] += 1.0 - map.a[p];
            self.z[p] = g[r * r + p] + map.c[p];
        }
        ctr.region_solves += 1;
        let solved = match r {
            2 => solve_small::<2>(&mut self.sys, &mut self.z),
            3 => solve_small::<3>(&mut self.sys, &mut self.z),
            4 => solve_small::<4>(&mut self.sys, &mut self.z),
            _ => solve_in_place(&mut self.sys, &mut self.z, r),
        };
        if !solved {
            ctr.singular_regions += 1;
            return;
        }
        let z = &self.z;
        let tol = self.opts.boundary_tol;
        let ok_unit = |i: usize, want: bool| map.on_side(i, z, want, tol);
        // Free units first (they decide most candidates), then the rest.
        if !free.iter().zip(want).all(|(&i, &w)| ok_unit(i, w)) {
            return;
        }
        let n = map.n_units();
        let rest_ok = (0..n)
            .filter(|i| !free.contains(i))
            .all(|i| ok_unit(i, self.active[i]));
        if rest_ok {
            ctr.accepted += 1;
            found.push(Candidate { z: z.clone() });
        }
    }
}

/// Thresholds for the sweep's geometry: b_i + δ_i with |δ_i| ≈ 1e-7 · (1 + max |b|),
/// deterministic per unit. Real models are degenerate — every clipped-ReLU unit contributes a
/// hyperplane through the origin (relu(m z) − …), so all N of them meet at one point, whose
/// 2^N sides cannot be enumerated. Perturbing the geometry puts the arrangement in general
/// position; every region of the original arrangement wider than the perturbation keeps its
/// activity pattern, so its system — solved with the *original* thresholds, and accepted only
/// if the point lies in the original region — is still visited. Extra sliver patterns only cost
/// solves.
fn perturbed(map: &PwlMap) -> Vec<f64> {
    let scale = 1.0 + map.b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    map.b
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            // A fixed low-discrepancy sequence in [−1, −0.5] ∪ [0.5, 1].
            let f = ((i as f64 + 1.0) * 0.618_033_988_749_895).fract();
            let mag = 0.5 + 0.5 * f;
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            b + sign * mag * 1e-7 * scale
        })
        .collect()
}

/// Solves A x = b in place (A: r × r row-major, overwritten; b becomes x) by Gaussian
/// elimination with partial pivoting; `false` when A is singular (a pivot below 1e-13 of the
/// largest entry) or the solution is not finite.
#[inline(always)]
fn solve_in_place(a: &mut [f64], b: &mut [f64], r: usize) -> bool {
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 {
        return false;
    }
    for col in 0..r {
        let (mut piv, mut best) = (col, a[col * r + col].abs());
        for row in col + 1..r {
            let v = a[row * r + col].abs();
            if v > best {
                piv = row;
                best = v;
            }
        }
        if best <= 1e-13 * scale {
            return false;
        }
        if piv != col {
            for q in 0..r {
                a.swap(col * r + q, piv * r + q);
            }
            b.swap(col, piv);
        }
        let d = a[col * r + col];
        for row in col + 1..r {
            let f = a[row * r + col] / d;
            if f != 0.0 {
                for q in col..r {
                    a[row * r + q] -= f * a[col * r + q];
                }
                b[row] -= f * b[col];
            }
        }
    }
    for col in (0..r).rev() {
        let mut s = b[col];
        for q in col + 1..r {
            s -= a[col * r + q] * b[q];
        }
        b[col] = s / a[col * r + col];
    }
    b.iter().all(|x| x.is_finite())
}

/// [`solve_in_place`] for a compile-time size: the same code, inlined with `r = R` so the
/// loops unroll.
#[inline]
fn solve_small<const R: usize>(a: &mut [f64], b: &mut [f64]) -> bool {
    solve_in_place(&mut a[..R * R], &mut b[..R], R)
}

/// The bits of `x` as an integer ordered like `f64::total_cmp`.
#[inline]
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Inverse of [`order_key`].
#[inline]
fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// The line of the hyperplanes `t` (k−1 of them) in the sweep's geometry: a point on it and
/// what the sweep needs (direction, P_T), or `None` when they are not independent.
fn line_of(geo: &Geometry, t: &[usize]) -> Option<(Vec<f64>, Line)> {
    let k = geo.dim;
    let c = &geo.direction;
    if t.is_empty() {
        // k = 1: the whole line.
        return Some((
            vec![0.0],
            Line {
                d: vec![1.0],
                cd: c[0],
                p_t: Vec::new(),
                p_c: Vec::new(),
            },
        ));
    }
    let m = t.len();
    let ut = DMatrix::from_fn(m, k, |i, q| geo.normals[t[i] * k + q]);
    let svd = ut.clone().svd(true, true);
    let sv = &svd.singular_values;
    let smax = sv.iter().copied().fold(0.0, f64::max);
    if smax == 0.0 || sv.iter().any(|&s| s <= 1e-10 * smax) {
        return None;
    }
    let v_t = svd.v_t.as_ref()?;
    // Null direction: orthogonal complement of the row space, starting from the basis vector
    // least aligned with it.
    let mut best = f64::INFINITY;
    let mut d = DVector::<f64>::zeros(k);
    for e in 0..k {
        let norm: f64 = (0..m).map(|i| v_t[(i, e)] * v_t[(i, e)]).sum();
        if norm < best {
            best = norm;
            d = DVector::from_fn(k, |q, _| if q == e { 1.0 } else { 0.0 });
        }
    }
    for i in 0..m {
        let row = v_t.row(i).transpose();
        let proj = row.dot(&d);
        d -= row * proj;
    }
    let dn = d.norm();
    if dn == 0.0 {
        return None;
    }
    d /= dn;
    let rhs = DVector::from_fn(m, |i, _| -geo.offsets[t[i]]);
    let p = svd.solve(&rhs, 1e-14).ok()?;
    // P_T = (U_T U_Tᵀ)⁻¹ U_T.
    let gram = &ut * ut.transpose();
    let p_t = gram.try_inverse()? * &ut;
    let cv = DVector::from_column_slice(c);
    let p_c = &p_t * &cv;
    let cd = d.dot(&cv);
    let mut p_t_rows = Vec::with_capacity(m * k);
    for i in 0..m {
        for q in 0..k {
            p_t_rows.push(p_t[(i, q)]);
        }
    }
    Some((
        p.iter().copied().collect(),
        Line {
            d: d.iter().copied().collect(),
            cd,
            p_t: p_t_rows,
            p_c: p_c.iter().copied().collect(),
        },
    ))
}

/// Every activity pattern (2^N): for tests and for arrangements with N < R.
pub fn brute_force(map: &PwlMap, opts: &Options) -> FixedPointSet {
    let n = map.n_units();
    let mut ctr = Counters::default();
    let mut found = Vec::new();
    let geo = Geometry::new(map);
    let mut sweep = Sweep::new(map, opts, &geo);
    sweep.max_free = 63;
    let g0 = vec![0.0; geo.width];
    let free: Vec<usize> = (0..n).collect();
    sweep.expand(&free, &g0, &mut found, &mut ctr);
    finish(map, opts, found, ctr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_map(seed: u64, n: usize, r: usize, nl: Nonlinearity) -> PwlMap {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut g = |s: f64| -> f64 {
            // Box–Muller is not needed: uniform loadings suffice for a test arrangement.
            rng.gen_range(-1.0..1.0) * s
        };
        let m: Vec<f64> = (0..n * r).map(|_| g(1.5)).collect();
        let nn: Vec<f64> = (0..r * n).map(|_| g(2.0 / (n as f64).sqrt())).collect();
        let h: Vec<f64> = (0..n).map(|_| g(0.8)).collect();
        PwlMap::from_low_rank(&m, &nn, &h, 0.6, r, nl).expect("valid map")
    }

    fn same_sets(a: &FixedPointSet, b: &FixedPointSet) -> bool {
        a.points.len() == b.points.len()
            && a.points.iter().zip(&b.points).all(|(p, q)| {
                p.z.iter()
                    .zip(&q.z)
                    .all(|(x, y)| (x - y).abs() < 1e-8 * (1.0 + x.abs()))
            })
    }

    /// The sweep finds exactly the fixed points of the brute-force enumeration of all 2^N
    /// patterns, on random relu and clipped-relu models of rank 1–4.
    #[test]
    fn sweep_equals_brute_force() {
        let opts = Options::default();
        let mut total = 0;
        for seed in 0..12u64 {
            for &(r, n, nl) in &[
                (1, 9, Nonlinearity::Relu),
                (2, 10, Nonlinearity::Relu),
                (3, 10, Nonlinearity::Relu),
                (4, 9, Nonlinearity::Relu),
                (1, 5, Nonlinearity::ClippedRelu),
                (2, 5, Nonlinearity::ClippedRelu),
                (3, 5, Nonlinearity::ClippedRelu),
            ] {
                let map = random_map(seed, n, r, nl);
                let exact = find_fixed_points(&map, &opts).expect("runs");
                let brute = brute_force(&map, &opts);
                assert!(
                    same_sets(&exact, &brute),
                    "seed {seed} R={r} N={n} {nl:?}: sweep {:?} vs brute {:?}",
                    exact.points.iter().map(|p| &p.z).collect::<Vec<_>>(),
                    brute.points.iter().map(|p| &p.z).collect::<Vec<_>>()
                );
                for p in &exact.points {
                    assert!(p.residual < 1e-9, "residual {}", p.residual);
                }
                total += exact.points.len();
            }
        }
        assert!(
            total > 20,
            "the random models should have fixed points ({total})"
        );
    }

    /// The sweep cut into calls finds the same points and counters as one call, in about
    /// `SWEEP_CALLS` calls of balanced work.
    #[test]
    fn sweep_in_calls_equals_one_call() {
        let opts = Options::default();
        for &(r, n) in &[(1, 30), (2, 40), (3, 60)] {
            let map = random_map(7, n, r, Nonlinearity::Relu);
            let whole = find_fixed_points(&map, &opts).expect("runs");
            let mut calls = 0;
            let cut = find_fixed_points_with(&map, &opts, &mut |work| {
                calls += 1;
                work()
            })
            .expect("runs");
            assert!(same_sets(&whole, &cut) && !whole.points.is_empty(), "R={r}");
            assert_eq!(
                format!("{:?}", whole.counters),
                format!("{:?}", cut.counters)
            );
            if r == 1 {
                assert_eq!(calls, 1);
            } else {
                assert!(
                    (SWEEP_CALLS / 2..=SWEEP_CALLS + 1).contains(&calls),
                    "R={r}: {calls}"
                );
            }
        }
    }

    /// U with a dependent column (rank 2 of R = 3): the sweep runs in U's row space, whose
    /// basis keeps all of U (the projected normals have U's Frobenius norm), and it finds the
    /// brute-force enumeration's fixed points. For such U nalgebra's SVD returns singular
    /// values that do not match its vectors (dimforge/nalgebra#1172: |‖U v_q‖ − s_q| up to 24 %
    /// of the largest in 346 of 2000 random rank-deficient N × R matrices, 2026-12-08); this
    /// geometry uses only which direction is null and the others' span, which stay right.
    #[test]
    fn rank_deficient_u_keeps_its_row_space() {
        let opts = Options::default();
        for seed in 0..60u64 {
            let n = [10, 12, 40, 60, 128][seed as usize % 5];
            let mut map = random_map(seed, n, 3, Nonlinearity::Relu);
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
            let (al, be) = (rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0));
            for i in 0..n {
                map.u[i * 3 + 2] = al * map.u[i * 3] + be * map.u[i * 3 + 1];
            }
            let geo = Geometry::new(&map);
            assert_eq!(geo.dim, 2, "seed {seed} N={n}");
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let (nu, nn) = (norm(&map.u), norm(&geo.normals));
            assert!(
                (nu - nn).abs() <= 1e-10 * nu,
                "seed {seed} N={n}: |U| = {nu}, |normals| = {nn}"
            );
            if n <= 12 {
                let exact = find_fixed_points(&map, &opts).expect("runs");
                let brute = brute_force(&map, &opts);
                assert!(
                    same_sets(&exact, &brute),
                    "seed {seed} N={n}: sweep {:?} vs brute {:?}",
                    exact.points.iter().map(|p| &p.z).collect::<Vec<_>>(),
                    brute.points.iter().map(|p| &p.z).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Every region of the arrangement is solved: the patterns of many random points (drawn
    /// at several scales, so that far-away unbounded regions are hit too) are all among the
    /// patterns the sweep solved — including with parallel hyperplanes (clipped ReLU) and a
    /// rank-deficient U.
    #[test]
    fn sweep_visits_every_region() {
        let opts = Options::default();
        for seed in 0..6u64 {
            for &(r, n, nl, deficient) in &[
                (1, 12, Nonlinearity::Relu, false),
                (2, 14, Nonlinearity::Relu, false),
                (3, 12, Nonlinearity::Relu, false),
                (4, 10, Nonlinearity::Relu, false),
                (2, 8, Nonlinearity::ClippedRelu, false),
                (3, 7, Nonlinearity::ClippedRelu, false),
                (3, 10, Nonlinearity::Relu, true),
            ] {
                let mut map = random_map(seed, n, r, nl);
                if deficient {
                    // Third latent direction invisible to the units: U has rank 2.
                    for i in 0..n {
                        map.u[i * r + 2] = 0.5 * map.u[i * r] - map.u[i * r + 1];
                    }
                }
                let geo = Geometry::new(&map);
                assert_eq!(geo.dim, if deficient { 2 } else { r });
                let mut visited = std::collections::HashSet::new();
                let mut ctr = Counters::default();
                let mut found = Vec::new();
                let mut sweep = Sweep::new(&map, &opts, &geo);
                let k = geo.dim;
                let units = map.n_units();
                let mut t: Vec<usize> = (0..k - 1).collect();
                loop {
                    sweep.line(&t, &mut found, &mut ctr);
                    if t.is_empty() || !next_subset(&mut t, units) {
                        break;
                    }
                }
                visited.extend(sweep.visited.iter().copied());
                let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
                for draw in 0..20_000 {
                    let scale = [0.5, 2.0, 10.0, 1e3][draw % 4];
                    let z: Vec<f64> = (0..r).map(|_| rng.gen_range(-scale..scale)).collect();
                    let mut bits = 0u128;
                    for i in 0..units {
                        if map.pre(i, &z) > 0.0 {
                            bits |= 1 << i;
                        }
                    }
                    assert!(
                        visited.contains(&bits),
                        "seed {seed} R={r} N={n} {nl:?} deficient={deficient}: region of \
                         {z:?} not visited ({} patterns solved)",
                        visited.len()
                    );
                }
                // Lowest-vertex selection: about one solve per region, not 2^k.
                let regions_bound: u64 = (0..=k as u64).map(|j| binomial(units as u64, j)).sum();
                assert!(
                    ctr.region_solves
                        <= regions_bound
                            + (1 << (k - 1)) * ctr.lines
                            + (1 << k) * (ctr.ambiguous_vertices + ctr.multi_vertices),
                    "{ctr:?} vs {regions_bound} regions"
                );
            }
        }
    }

    fn binomial(n: u64, k: u64) -> u64 {
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }

    #[test]
    fn bad_maps_are_errors() {
        let mut map = random_map(0, 5, 2, Nonlinearity::Relu);
        map.a = vec![0.5];
        assert!(find_fixed_points(&map, &Options::default()).is_err());
        let mut map = random_map(0, 5, 2, Nonlinearity::Relu);
        map.u[3] = f64::NAN;
        assert!(matches!(
            find_fixed_points(&map, &Options::default()),
            Err(FixedPointError::NonFinite("U"))
        ));
        assert!(PwlMap::from_low_rank(&[1.0], &[1.0], &[0.0], 0.5, 1, Nonlinearity::Tanh).is_err());
    }
}
