//! All fixed points of a piecewise-linear low-rank RNN (SPEC §4.1–4.2), exactly.
//!
//! The map is z' = a ∘ z + V relu(U z + b) + c with z ∈ R^R, U (N × R), V (R × N): unit i is
//! active on the side u_iᵀz + b_i > 0 of its hyperplane. In each region of the arrangement of
//! the N hyperplanes (an activity pattern D) the map is affine, and its fixed point solves
//! (I − diag(a) − V D U) z = V D b + c; it is a fixed point of the RNN iff it lies in the
//! region. Every region of an essential arrangement has a vertex, so visiting the 2^R regions
//! around every vertex visits every region (Proposition 1).
//!
//! Enumeration — a line sweep instead of the reference's "solve every R-subset, collect the
//! patterns, deduplicate": for each (R−1)-subset T of hyperplanes (in general position a line),
//! the other hyperplanes cross the line at sorted parameters t; walking the crossings flips one
//! unit at a time, so the pattern of the line's cells and the matrix V D U are updated in O(R²)
//! per vertex rather than recomputed in O(N R²). A vertex (T ∪ {k}) is expanded only from the
//! line that omits its largest index, so each is expanded once. Memory is O(N) per worker; the
//! lines are processed in parallel (rayon) and only fixed points are kept.
//!
//! Degeneracies are handled and counted, never silently: subsets whose hyperplanes are not
//! independent (e.g. the two parallel hyperplanes of one clipped-ReLU unit) define no line;
//! hyperplanes parallel to a line do not cross it; several hyperplanes crossing a line at one
//! point (a vertex of more than R hyperplanes) have all their sides enumerated; singular
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
fn next_subset(s: &mut [usize], n: usize) -> bool {
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
    map.validate()?;
    let (r, n) = (map.rank, map.n_units());
    if n < r {
        // Fewer hyperplanes than dimensions: the arrangement is not essential. Add nothing
        // clever: every region then contains a line, and the affine map of a region has at
        // most one fixed point unless singular; enumerate the 2^n patterns directly.
        return Ok(brute_force(map, opts));
    }
    // The lines: (R−1)-subsets T with max(T) < n − 1 (a vertex needs a larger index).
    let mut firsts: Vec<usize> = (0..n).collect();
    if r == 1 {
        firsts = vec![0];
    }
    let results: Vec<(Vec<Candidate>, Counters)> = firsts
        .par_iter()
        .map(|&first| {
            let mut found = Vec::new();
            let mut ctr = Counters::default();
            let mut sweep = Sweep::new(map, opts);
            if r == 1 {
                sweep.line(&[], &mut found, &mut ctr);
                return (found, ctr);
            }
            // All (R−1)-subsets starting with `first`.
            let mut rest: Vec<usize> = (0..r - 2).map(|j| first + 1 + j).collect();
            if rest.last().is_some_and(|&l| l >= n) {
                return (found, ctr);
            }
            loop {
                let mut t = vec![first];
                t.extend_from_slice(&rest);
                if *t.last().unwrap_or(&first) < n - 1 {
                    sweep.line(&t, &mut found, &mut ctr);
                }
                if rest.is_empty() {
                    break;
                }
                // next subset of (first+1..n) of size r−2
                let mut shifted: Vec<usize> = rest.iter().map(|x| x - (first + 1)).collect();
                if !next_subset(&mut shifted, n - first - 1) {
                    break;
                }
                rest = shifted.iter().map(|x| x + first + 1).collect();
            }
            (found, ctr)
        })
        .collect();
    let mut counters = Counters::default();
    let mut all = Vec::new();
    for (f, c) in results {
        all.extend(f);
        counters.lines += c.lines;
        counters.degenerate_lines += c.degenerate_lines;
        counters.parallel_crossings += c.parallel_crossings;
        counters.vertices += c.vertices;
        counters.multi_vertices += c.multi_vertices;
        counters.region_solves += c.region_solves;
        counters.singular_regions += c.singular_regions;
        counters.accepted += c.accepted;
        counters.skipped_vertices += c.skipped_vertices;
    }
    Ok(finish(map, opts, all, counters))
}

/// A candidate accepted by the region test.
#[derive(Debug, Clone)]
struct Candidate {
    z: Vec<f64>,
}

/// Merge duplicates, compute Jacobians and labels, sort.
fn finish(map: &PwlMap, opts: &Options, all: Vec<Candidate>, mut ctr: Counters) -> FixedPointSet {
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
        points.push(FixedPoint {
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

/// Per-worker state of the sweep.
struct Sweep<'a> {
    map: &'a PwlMap,
    opts: &'a Options,
    /// Scratch: crossings (t, unit).
    cross: Vec<(f64, usize)>,
    /// Current pattern of the cell being walked (excluding T, whose states are enumerated).
    active: Vec<bool>,
    /// Scratch: the region system and its solution.
    sys: Vec<f64>,
    z: Vec<f64>,
    /// Thresholds used for the geometry of the sweep only: b plus a tiny deterministic
    /// perturbation that puts the arrangement in general position (see [`perturbed`]).
    bp: Vec<f64>,
    /// Largest number of hyperplanes through one vertex whose 2^k sides are enumerated.
    max_free: usize,
}

impl<'a> Sweep<'a> {
    fn new(map: &'a PwlMap, opts: &'a Options) -> Self {
        let n = map.n_units();
        Sweep {
            map,
            opts,
            cross: Vec::with_capacity(n),
            active: vec![false; n],
            sys: vec![0.0; map.rank * map.rank],
            z: vec![0.0; map.rank],
            bp: perturbed(map),
            max_free: 20,
        }
    }

    /// Walk the line of hyperplanes `t` (R−1 of them), expanding the vertices whose other
    /// hyperplanes all have indices > max(t).
    fn line(&mut self, t: &[usize], found: &mut Vec<Candidate>, ctr: &mut Counters) {
        let map = self.map;
        let (r, n) = (map.rank, map.n_units());
        ctr.lines += 1;
        // Line z(s) = p + s d with U_T p = −b_T, U_T d = 0.
        let Some((p, d)) = line_of(map, &self.bp, t) else {
            ctr.degenerate_lines += 1;
            return;
        };
        let max_t = t.iter().copied().max();
        self.cross.clear();
        let mut in_t = vec![false; n];
        for &i in t {
            in_t[i] = true;
        }
        for i in 0..n {
            if in_t[i] {
                continue;
            }
            let row = &map.u[i * r..(i + 1) * r];
            let ud: f64 = row.iter().zip(&d).map(|(a, b)| a * b).sum();
            let up = row.iter().zip(&p).map(|(a, b)| a * b).sum::<f64>() + self.bp[i];
            let scale = row.iter().map(|x| x.abs()).sum::<f64>().max(1e-300);
            if ud.abs() <= 1e-12 * scale {
                ctr.parallel_crossings += 1;
                // Constant along the line.
                self.active[i] = up > 0.0;
                continue;
            }
            // pre(s) = up + s ud; at s → −∞ active iff ud < 0.
            self.active[i] = ud < 0.0;
            self.cross.push((-up / ud, i));
        }
        self.cross
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // Base matrix G = V D U and vector g = V D b for the current cell (units not in T).
        let mut g_mat = vec![0.0; r * r];
        let mut g_vec = vec![0.0; r];
        for i in (0..n).filter(|&i| self.active[i] && !in_t[i]) {
            add_unit(map, i, 1.0, &mut g_mat, &mut g_vec);
        }
        let cross = std::mem::take(&mut self.cross);
        let mut j = 0;
        while j < cross.len() {
            // Group crossings at the same point (vertex of > R hyperplanes).
            let s0 = cross[j].0;
            let mut e = j + 1;
            let tol = 1e-12 * (1.0 + s0.abs());
            while e < cross.len() && (cross[e].0 - s0).abs() <= tol {
                e += 1;
            }
            let group: Vec<usize> = cross[j..e].iter().map(|c| c.1).collect();
            // Each vertex is expanded from one line only: the line of the R−1 smallest indices
            // of the hyperplanes through it (T is increasing).
            let expand = max_t.is_none_or(|m| group.iter().all(|&k| k > m));
            if expand {
                ctr.vertices += 1;
                if group.len() > 1 {
                    ctr.multi_vertices += 1;
                }
                // The group's units are "before" state now; enumerate all sides of T ∪ group.
                let free: Vec<usize> = t.iter().copied().chain(group.iter().copied()).collect();
                // Remove the group's current contribution from G (they are enumerated).
                let mut gm = g_mat.clone();
                let mut gv = g_vec.clone();
                for &k in &group {
                    if self.active[k] {
                        add_unit(map, k, -1.0, &mut gm, &mut gv);
                    }
                }
                self.expand(&free, &gm, &gv, found, ctr);
            }
            // Cross: flip the group's units.
            for &k in &group {
                let sign = if self.active[k] { -1.0 } else { 1.0 };
                add_unit(map, k, sign, &mut g_mat, &mut g_vec);
                self.active[k] = !self.active[k];
            }
            j = e;
        }
        self.cross = cross;
    }

    /// Solve every region adjacent to a vertex: the units in `free` take every on/off
    /// combination on top of the base (G, g).
    fn expand(
        &mut self,
        free: &[usize],
        g_mat: &[f64],
        g_vec: &[f64],
        found: &mut Vec<Candidate>,
        ctr: &mut Counters,
    ) {
        let map = self.map;
        let r = map.rank;
        let f = free.len();
        if f > self.max_free {
            ctr.skipped_vertices += 1;
            return;
        }

        let mut gm = vec![0.0; r * r];
        let mut gv = vec![0.0; r];
        for mask in 0u64..(1u64 << f) {
            gm.copy_from_slice(g_mat);
            gv.copy_from_slice(g_vec);
            for (bit, &k) in free.iter().enumerate() {
                if mask >> bit & 1 == 1 {
                    add_unit(map, k, 1.0, &mut gm, &mut gv);
                }
            }
            // (I − diag(a) − G) z = g + c
            for p in 0..r {
                for q in 0..r {
                    self.sys[p * r + q] = -gm[p * r + q];
                }
                self.sys[p * r + p] += 1.0 - map.a[p];
                self.z[p] = gv[p] + map.c[p];
            }
            ctr.region_solves += 1;
            if !solve_in_place(&mut self.sys, &mut self.z, r) {
                ctr.singular_regions += 1;
                continue;
            }
            let z = &self.z;
            // In the region? Free units first (they decide most candidates), then the rest.
            let tol = self.opts.boundary_tol;
            let ok_unit = |i: usize, want: bool| {
                let pre = map.pre(i, z);
                if pre.abs() <= tol * (1.0 + map.b[i].abs()) {
                    true
                } else {
                    (pre > 0.0) == want
                }
            };
            let free_ok = free
                .iter()
                .enumerate()
                .all(|(bit, &k)| ok_unit(k, mask >> bit & 1 == 1));
            if !free_ok {
                continue;
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

/// G += s · v_i u_iᵀ, g += s · v_i b_i.
#[inline]
fn add_unit(map: &PwlMap, i: usize, s: f64, g_mat: &mut [f64], g_vec: &mut [f64]) {
    let (r, n) = (map.rank, map.n_units());
    for p in 0..r {
        let vp = s * map.v[p * n + i];
        for q in 0..r {
            g_mat[p * r + q] += vp * map.u[i * r + q];
        }
        g_vec[p] += vp * map.b[i];
    }
}

/// The line of the hyperplanes `t` (R−1 of them): a point p and a direction d, or `None`
/// when they are not independent.
fn line_of(map: &PwlMap, bp: &[f64], t: &[usize]) -> Option<(Vec<f64>, Vec<f64>)> {
    let r = map.rank;
    if t.is_empty() {
        // R = 1: the whole line.
        return Some((vec![0.0], vec![1.0]));
    }
    let k = t.len();
    let ut = DMatrix::from_fn(k, r, |i, q| map.u[t[i] * r + q]);
    let svd = ut.clone().svd(true, true);
    let sv = &svd.singular_values;
    let smax = sv.iter().copied().fold(0.0, f64::max);
    if smax == 0.0 || sv.iter().any(|&s| s <= 1e-10 * smax) {
        return None;
    }
    let v_t = svd.v_t.as_ref()?;
    // Null direction: orthogonal complement of the row space.
    let mut d = DVector::<f64>::from_fn(r, |q, _| if q == 0 { 1.0 } else { 0.0 });
    // Start from the basis vector least aligned with the row space.
    let mut best = f64::INFINITY;
    for e in 0..r {
        let mut norm = 0.0;
        for i in 0..k {
            norm += v_t[(i, e)] * v_t[(i, e)];
        }
        if norm < best {
            best = norm;
            d = DVector::from_fn(r, |q, _| if q == e { 1.0 } else { 0.0 });
        }
    }
    for i in 0..k {
        let row = v_t.row(i).transpose();
        let proj = row.dot(&d);
        d -= row * proj;
    }
    let dn = d.norm();
    if dn == 0.0 {
        return None;
    }
    d /= dn;
    let rhs = DVector::from_fn(k, |i, _| -bp[t[i]]);
    let p = svd.solve(&rhs, 1e-14).ok()?;
    Some((p.iter().copied().collect(), d.iter().copied().collect()))
}

/// Every activity pattern (2^N): for tests and for arrangements with N < R.
pub fn brute_force(map: &PwlMap, opts: &Options) -> FixedPointSet {
    let (r, n) = (map.rank, map.n_units());
    let mut ctr = Counters::default();
    let mut found = Vec::new();
    let mut sweep = Sweep::new(map, opts);
    sweep.max_free = 63;
    let g0 = vec![0.0; r * r];
    let v0 = vec![0.0; r];
    let free: Vec<usize> = (0..n).collect();
    sweep.expand(&free, &g0, &v0, &mut found, &mut ctr);
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
