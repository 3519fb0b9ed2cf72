//! Approximate fixed-point finders, the baselines of Fig 8 / Fig S13 (SPEC §4.3).
//!
//! * **SCYFI** (Eisenmann et al. 2023, as in the reference's `constrained_scify.py`, order 1):
//!   draw a random activity pattern D, solve its region's affine fixed point z, and move to
//!   the pattern of z until it repeats (a fixed point) or the inner budget runs out.
//! * **Constrained SCYFI** (the reference's variant): first solve all C(N,R) hyperplane
//!   intersections and draw D only among the 2^R patterns around each of them.
//! * **Local solver** ([`local_search`]): L-BFGS (argmin) on ½‖F(z) − z‖² from random starts,
//!   then one region solve at the pattern where it stopped.
//!
//! All three return the exact method's result type ([`FixedPointSet`]) plus when (after how
//! many linear solves) each point was found, so found-vs-budget curves come from one run.
//!
//! The reference's random draws are reproduced exactly: [`NumpyMt19937`] is numpy's legacy
//! `RandomState` (MT19937, `rand` as 53-bit doubles, `randint` by masked rejection), so
//! `np.random.seed(s); run_scify(...)` and `scyfi(.., &mut NumpyMt19937::new(s))` draw the same
//! patterns. Its quirks are kept behind [`ScyfiOptions::reference_dedup`] (default on, for
//! comparability) and documented: the pattern draw `floor(rand · 2^N)` leaves units
//! 0..N−53 always inactive when N > 53 (a double has 53 random bits), and a found point is
//! discarded as a duplicate when *any* of its rounded coordinates equals *any* rounded
//! coordinate of an earlier find (coordinate-wise, not point-wise).

use serde::Serialize;

use super::fixed_points::{
    finish, Candidate, Counters, FixedPointError, FixedPointSet, Options, PwlMap,
};

/// numpy's legacy `RandomState` generator (MT19937) — the draws the reference consumed.
#[derive(Clone)]
pub struct NumpyMt19937 {
    mt: Box<[u32; 624]>,
    idx: usize,
}

impl NumpyMt19937 {
    /// `np.random.seed(seed)` with an integer seed (`init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut mt = Box::new([0u32; 624]);
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyMt19937 { mt, idx: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    /// `genrand_int32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The 53 random bits behind `np.random.rand()` (value = bits / 2^53).
    pub fn next_bits53(&mut self) -> u64 {
        let a = u64::from(self.next_u32() >> 5);
        let b = u64::from(self.next_u32() >> 6);
        (a << 26) | b
    }

    /// `np.random.rand()`.
    pub fn next_f64(&mut self) -> f64 {
        self.next_bits53() as f64 / 9_007_199_254_740_992.0
    }

    /// `np.random.randint(0, len)` (legacy: masked rejection sampling).
    pub fn randint(&mut self, len: u64) -> u64 {
        let rng = len.saturating_sub(1);
        if rng == 0 {
            return 0;
        }
        let mask = u64::MAX >> rng.leading_zeros();
        if rng <= u64::from(u32::MAX) {
            if rng == u64::from(u32::MAX) {
                return u64::from(self.next_u32());
            }
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= rng {
                    return v;
                }
            }
        }
        loop {
            let hi = u64::from(self.next_u32());
            let v = ((hi << 32) | u64::from(self.next_u32())) & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// Which SCYFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyfiVariant {
    /// Random patterns over all 2^N.
    Unconstrained,
    /// Patterns around the hyperplane intersections only.
    Constrained,
}

/// SCYFI's knobs (reference defaults as the Fig 8 notebook calls it).
#[derive(Debug, Clone, Copy)]
pub struct ScyfiOptions {
    /// Linear solves allowed (`n_inverses_max`); the constrained variant's C(N,R) setup solves
    /// are spent first whatever the budget, as in the reference.
    pub budget: u64,
    /// Outer restarts (`outer_loop_iterations`; the notebook uses 10^7, i.e. budget-bound).
    pub outer_iterations: u64,
    /// Pattern-following steps per restart (`inner_loop_iterations`, 100).
    pub inner_iterations: u64,
    /// Decimals for the duplicate test (`round_dec`; Fig 8 uses 4).
    pub round_dec: i32,
    /// The reference's coordinate-wise duplicate test (see the module docs); `false` = a
    /// point-wise test with the same rounding.
    pub reference_dedup: bool,
}

impl Default for ScyfiOptions {
    fn default() -> Self {
        ScyfiOptions {
            budget: 1000,
            outer_iterations: 10_000_000,
            inner_iterations: 100,
            round_dec: 4,
            reference_dedup: true,
        }
    }
}

/// A baseline's result.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    /// The fixed points found (deduplicated, with Jacobians and labels as the exact method).
    pub set: FixedPointSet,
    /// Linear solves spent in all (SCYFI: `n_inverses`; local search: region solves).
    pub solves: u64,
    /// Cost and gradient evaluations of ½‖F(z) − z‖² (local search; 0 for SCYFI).
    pub evaluations: u64,
    /// For each point in the order found: the work spent when it was found (solves +
    /// evaluations), and z.
    pub finds: Vec<(u64, Vec<f64>)>,
}

impl BaselineRun {
    /// Distinct points found within `budget` work units (solves + evaluations; one run gives
    /// the whole curve: the draws do not depend on the budget).
    pub fn found_within(&self, budget: u64) -> usize {
        self.finds.iter().filter(|(at, _)| *at <= budget).count()
    }
}

fn round_to(x: f64, dec: i32) -> f64 {
    // numpy: rint(x · 10^d) / 10^d (ties to even).
    let s = 10f64.powi(dec);
    (x * s).round_ties_even() / s
}

/// Number of k-subsets of n (None on overflow).
fn binomial(n: u64, k: u64) -> Option<u64> {
    let mut acc: u128 = 1;
    for i in 0..k {
        acc = acc * u128::from(n - i) / u128::from(i + 1);
        if acc > u128::from(u64::MAX) {
            return None;
        }
    }
    u64::try_from(acc).ok()
}

/// The `rank`-subset of 0..n with lexicographic index `index` (itertools.combinations order).
fn unrank(mut index: u64, n: usize, rank: usize, out: &mut Vec<usize>) {
    out.clear();
    let mut start = 0usize;
    for slot in 0..rank {
        let left = (rank - slot - 1) as u64;
        let mut x = start;
        loop {
            let count = binomial((n - x - 1) as u64, left).unwrap_or(u64::MAX);
            if index < count {
                break;
            }
            index -= count;
            x += 1;
        }
        out.push(x);
        start = x + 1;
    }
}

/// The result of a baseline: its finds (work spent, z) through the exact method's finishing
/// (Jacobians, labels, sorting).
fn baseline_run(
    map: &PwlMap,
    opts: &Options,
    solves: u64,
    evaluations: u64,
    finds: Vec<(u64, Vec<f64>)>,
) -> BaselineRun {
    let counters = Counters {
        region_solves: solves,
        accepted: finds.len() as u64,
        arrangement_dim: map.rank as u64,
        ..Counters::default()
    };
    let cands = finds
        .iter()
        .map(|(_, z)| Candidate { z: z.clone() })
        .collect();
    BaselineRun {
        set: finish(map, opts, cands, counters),
        solves,
        evaluations,
        finds,
    }
}

/// SCYFI for fixed points (order 1), with the reference's control flow and draws.
pub fn scyfi(
    map: &PwlMap,
    variant: ScyfiVariant,
    opts: &ScyfiOptions,
    rng: &mut NumpyMt19937,
) -> Result<BaselineRun, FixedPointError> {
    map.validate()?;
    let (r, n) = (map.rank, map.n_units());
    let mut solves = 0u64;
    let subsets = powerset_order(r);
    let n_patterns = match variant {
        ScyfiVariant::Unconstrained => 0,
        ScyfiVariant::Constrained => {
            let vertices = binomial(n as u64, r as u64)
                .filter(|v| v.checked_mul(1 << r).is_some())
                .ok_or_else(|| {
                    FixedPointError::Shape(format!(
                        "constrained SCYFI: C({n},{r}) · 2^{r} patterns overflow 64 bits"
                    ))
                })?;
            // The reference solves every intersection up front.
            solves += vertices;
            vertices << r
        }
    };
    let mut idx = Vec::with_capacity(r);
    let mut random_pattern = |rng: &mut NumpyMt19937, constrained: bool, out: &mut Vec<bool>| {
        out.clear();
        if constrained {
            let k = rng.randint(n_patterns);
            let (vertex, sub) = (k >> r, (k & ((1 << r) - 1)) as usize);
            unrank(vertex, n, r, &mut idx);
            // Intersection point of the hyperplanes idx; a singular subset (parallel
            // hyperplanes, where the reference raises) leaves every unit at its threshold side
            // at z = 0.
            let um = nalgebra::DMatrix::from_fn(r, r, |i, q| map.u[idx[i] * r + q]);
            let rhs = nalgebra::DVector::from_fn(r, |i, _| -map.b[idx[i]]);
            let z = um
                .lu()
                .solve(&rhs)
                .map_or(vec![0.0; r], |z| z.iter().copied().collect());
            out.extend((0..n).map(|i| map.pre(i, &z) > 0.0));
            for &i in &idx {
                out[i] = false;
            }
            for &pos in &subsets[sub] {
                out[idx[pos]] = true;
            }
        } else {
            // floor(rand · 2^n), bit i → unit i.
            let bits = rng.next_bits53();
            out.extend((0..n).map(|i| {
                let shift = i as i64 - (n as i64 - 53);
                (0..53).contains(&shift) && (bits >> shift) & 1 == 1
            }));
        }
    };
    let constrained = variant == ScyfiVariant::Constrained;
    let mut finds: Vec<(u64, Vec<f64>)> = Vec::new();
    let mut rounded: Vec<Vec<f64>> = Vec::new();
    let mut pattern = Vec::with_capacity(n);
    let mut next = Vec::with_capacity(n);
    let mut i: i64 = -1;
    while i < opts.outer_iterations as i64 && solves < opts.budget {
        i += 1;
        random_pattern(rng, constrained, &mut pattern);
        let mut c = 0u64;
        while c < opts.inner_iterations && solves < opts.budget {
            c += 1;
            let z = map.region_fixed_point(&pattern);
            solves += 1;
            let Some(z) = z else {
                // The reference draws an unconstrained pattern here whatever the variant.
                random_pattern(rng, false, &mut pattern);
                continue;
            };
            next.clear();
            next.extend((0..n).map(|u| map.pre(u, &z) > 0.0));
            if next == pattern {
                let zr: Vec<f64> = z.iter().map(|&x| round_to(x, opts.round_dec)).collect();
                let dup = if opts.reference_dedup {
                    zr.iter().any(|x| rounded.iter().flatten().any(|y| y == x))
                } else {
                    rounded.contains(&zr)
                };
                if !dup {
                    rounded.push(zr);
                    finds.push((solves, z));
                    i = 0;
                    c = 0;
                }
                random_pattern(rng, constrained, &mut pattern);
            } else {
                std::mem::swap(&mut pattern, &mut next);
            }
        }
    }
    Ok(baseline_run(map, &Options::default(), solves, 0, finds))
}

/// Subsets of 0..r in `powerset` order (size 0, then size 1, 2, … each lexicographic).
fn powerset_order(r: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for size in 1..=r {
        let mut s: Vec<usize> = (0..size).collect();
        loop {
            out.push(s.clone());
            if !super::fixed_points::next_subset(&mut s, r) {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy: `np.random.seed(0); [np.random.randint(0, 2**32) for …]` starts 2357136044,
    /// 2546248239, 3071714933 (the MT19937 reference outputs for init_genrand(0)); rand() is
    /// 0.5488135039273248.
    #[test]
    fn mt19937_matches_numpy() {
        let mut g = NumpyMt19937::new(0);
        assert_eq!(
            [g.next_u32(), g.next_u32(), g.next_u32()],
            [2_357_136_044, 2_546_248_239, 3_071_714_933]
        );
        let mut g = NumpyMt19937::new(0);
        assert_eq!(g.next_f64(), 0.548_813_503_927_324_8);
    }

    #[test]
    fn unrank_is_combinations_order() {
        let mut all = Vec::new();
        let mut s: Vec<usize> = (0..3).collect();
        loop {
            all.push(s.clone());
            if !super::super::fixed_points::next_subset(&mut s, 7) {
                break;
            }
        }
        let mut out = Vec::new();
        for (k, want) in all.iter().enumerate() {
            unrank(k as u64, 7, 3, &mut out);
            assert_eq!(&out, want);
        }
        assert_eq!(
            powerset_order(2),
            vec![vec![], vec![0], vec![1], vec![0, 1]]
        );
    }
}

/// Options of the local-search baseline.
#[derive(Debug, Clone, Copy)]
pub struct LocalOptions {
    /// Random starts (each ends in one region solve).
    pub starts: u64,
    /// Stop starting new searches once solves + evaluations reach this (the curve's budget).
    pub work_budget: Option<u64>,
    /// L-BFGS iterations per start.
    pub max_iters: u64,
    /// Standard deviation of the Gaussian starts; `None` = twice the median distance of the
    /// units' hyperplanes from the origin (where the arrangement, and so the fixed points, are).
    pub start_scale: Option<f64>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            starts: 100,
            work_budget: None,
            max_iters: 50,
            start_scale: None,
        }
    }
}

/// ½‖F(z) − z‖² and its gradient (Jᵀ(F(z) − z) with J = diag(a) + V D U − I at z's pattern).
struct Residual<'a> {
    map: &'a PwlMap,
}

impl Residual<'_> {
    fn residual(&self, z: &[f64]) -> Vec<f64> {
        let fz = self.map.apply(z);
        fz.iter().zip(z).map(|(f, x)| f - x).collect()
    }
}

impl argmin::core::CostFunction for Residual<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, z: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(0.5 * self.residual(z).iter().map(|x| x * x).sum::<f64>())
    }
}

impl argmin::core::Gradient for Residual<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, z: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let map = self.map;
        let (r, n) = (map.rank, map.n_units());
        let res = self.residual(z);
        let active: Vec<bool> = (0..n).map(|i| map.pre(i, z) > 0.0).collect();
        let jac = map.jacobian(&active);
        // (J − I)ᵀ res
        Ok((0..r)
            .map(|q| {
                (0..r)
                    .map(|p| (jac[p * r + q] - f64::from(u8::from(p == q))) * res[p])
                    .sum()
            })
            .collect())
    }
}

/// The third baseline: L-BFGS (argmin, Moré–Thuente line search) on ½‖F(z) − z‖² from
/// Gaussian random starts; where it stops, the region's affine fixed point is solved and kept
/// if it lies in that region. `solves` counts those region solves; `evaluations` the cost and
/// gradient evaluations (each O(N R), comparable to assembling one region system).
pub fn local_search(
    map: &PwlMap,
    opts: &LocalOptions,
    rng: &mut impl rand::Rng,
) -> Result<BaselineRun, FixedPointError> {
    use argmin::core::{Executor, State};
    use argmin::solver::linesearch::MoreThuenteLineSearch;
    use argmin::solver::quasinewton::LBFGS;
    use rand_distr::{Distribution, StandardNormal};

    map.validate()?;
    let (r, n) = (map.rank, map.n_units());
    let scale = opts.start_scale.unwrap_or_else(|| {
        let mut d: Vec<f64> = (0..n)
            .map(|i| {
                let norm = map.u[i * r..(i + 1) * r]
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt();
                if norm > 0.0 {
                    map.b[i].abs() / norm
                } else {
                    0.0
                }
            })
            .collect();
        d.sort_by(f64::total_cmp);
        (2.0 * d.get(d.len() / 2).copied().unwrap_or(1.0)).max(1e-3)
    });
    let mut solves = 0u64;
    let mut evaluations = 0u64;
    let mut finds: Vec<(u64, Vec<f64>)> = Vec::new();
    let tol = Options::default();
    for _ in 0..opts.starts {
        if opts.work_budget.is_some_and(|b| solves + evaluations >= b) {
            break;
        }
        let z0: Vec<f64> = (0..r)
            .map(|_| {
                let x: f64 = StandardNormal.sample(rng);
                scale * x
            })
            .collect();
        let line = MoreThuenteLineSearch::new();
        let solver = LBFGS::new(line, 5);
        let result = Executor::new(Residual { map }, solver)
            .configure(|state| state.param(z0.clone()).max_iters(opts.max_iters))
            .run();
        let end = match &result {
            Ok(res) => {
                let st = res.state();
                evaluations += st.get_func_counts().values().sum::<u64>();
                st.get_best_param().cloned().unwrap_or(z0)
            }
            // The line search can fail on a kink of the piecewise-linear map; polish where
            // the search started.
            Err(_) => z0,
        };
        let active: Vec<bool> = (0..n).map(|i| map.pre(i, &end) > 0.0).collect();
        solves += 1;
        let Some(z) = map.region_fixed_point(&active) else {
            continue;
        };
        let inside = (0..n).all(|i| map.on_side(i, &z, active[i], tol.boundary_tol));
        let known = finds.iter().any(|(_, f)| {
            f.iter()
                .zip(&z)
                .all(|(a, b)| (a - b).abs() <= tol.merge_tol * (1.0 + a.abs()))
        });
        if inside && !known {
            finds.push((solves + evaluations, z));
        }
    }
    Ok(baseline_run(map, &tol, solves, evaluations, finds))
}
