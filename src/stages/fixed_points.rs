//! The `fixed_points` kind: every fixed point of a model (exact line sweep, SPEC §4) with
//! eigenvalues and stability, optionally the approximate baselines of Fig 8 (SCYFI,
//! constrained SCYFI, L-BFGS local search) with their found-vs-budget curves, and a phase
//! portrait for rank-2 models.
//!
//! ```yaml
//! - name: fixed_points.reach
//!   kind: fixed_points
//!   params: {methods: [exact, scyfi, constrained_scyfi, local], budgets: [50, 200, 1000, 4000, 25000],
//!            seeds: [0, 1, 2], phase_portrait: true}
//!   inputs: {model: datasets/teachers/reach_rnn.json}
//! ```
//!
//! The model is a `fit` output (`model.h5`), a teacher JSON (`derived.fixed_point_form`) or a
//! JSON `model` block (see `lowrank-smc fixed-points --help`).
//!
//! Outputs: `table` (one row per fixed point and method: coordinates, eigenvalues, spectral
//! radius, stability, cost), `summary` (one row: the labels, `data_source` = none, since no data
//! is scored, `trained_on` = what the model was fitted to, rank, units, counts by stability),
//! and with baselines `curve` (method, seed, budget, found, found in
//! the exact set) plus the Fig 8 figure; with `phase_portrait` the R = 2 flow field, nullclines
//! and fixed points.

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::cli::load_map_traced;
use crate::analysis::fixed_points::{
    find_fixed_points_with, FixedPoint, FixedPointSet, Options, PwlMap, Stability,
};
use crate::analysis::scyfi::{
    local_search, scyfi, BaselineRun, LocalOptions, NumpyMt19937, ScyfiOptions, ScyfiVariant,
};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::{Column, Table, TableError};
use crate::plot::{line_plot, phase_portrait, PanelLine, PhasePortrait, PointClass, Series};

/// A fixed-point method.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The exact line sweep (always run: the baselines are scored against it).
    Exact,
    /// SCYFI (random patterns).
    Scyfi,
    /// SCYFI restricted to the patterns around hyperplane intersections.
    ConstrainedScyfi,
    /// L-BFGS on ½‖F(z) − z‖² from random starts (argmin).
    Local,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Scyfi => "scyfi",
            Method::ConstrainedScyfi => "constrained_scyfi",
            Method::Local => "local_lbfgs",
        }
    }
}

fn default_methods() -> Vec<Method> {
    vec![Method::Exact]
}
fn default_budgets() -> Vec<u64> {
    vec![50, 200, 1000, 4000, 25000]
}
fn default_seeds() -> Vec<u32> {
    vec![0, 1, 2]
}
fn default_true() -> bool {
    true
}
fn default_marginal_tol() -> f64 {
    1e-9
}
fn default_grid() -> usize {
    21
}

/// Params of a `fixed_points` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FixedPointsParams {
    /// Methods to run (`exact` always runs).
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Budgets (linear solves; local search: solves + evaluations) of the baselines' curve.
    #[serde(default = "default_budgets")]
    pub budgets: Vec<u64>,
    /// Seeds of the baselines (SCYFI: numpy's `np.random.seed`, local search: ChaCha8).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u32>,
    /// Model name in the table (default: the input file's stem).
    #[serde(default)]
    pub model_name: String,
    /// SCYFI's coordinate-wise duplicate test, as in the reference.
    #[serde(default = "default_true")]
    pub reference_dedup: bool,
    /// |ρ − 1| below this is labelled marginal.
    #[serde(default = "default_marginal_tol")]
    pub marginal_tol: f64,
    /// Draw the phase portrait (rank-2 models only).
    #[serde(default)]
    pub phase_portrait: bool,
    /// Portrait range [x0, x1, y0, y1] (default: around the fixed points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait_range: Option<[f64; 4]>,
    /// Arrows per axis.
    #[serde(default = "default_grid")]
    pub portrait_grid: usize,
    /// Extra label columns of the one-row `summary` table (e.g. the fit's seed).
    #[serde(default, skip_serializing_if = "indexmap::IndexMap::is_empty")]
    pub labels: indexmap::IndexMap<String, Value>,
}

impl FixedPointsParams {
    fn baselines(&self) -> Vec<Method> {
        self.methods
            .iter()
            .copied()
            .filter(|m| *m != Method::Exact)
            .collect()
    }
}

/// All fixed points of a model, with the Fig 8 baselines.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedPointsStage;

impl Stage for FixedPointsStage {
    fn kind(&self) -> &'static str {
        "fixed_points"
    }
    fn version(&self) -> u32 {
        // 4: the summary carries `trained_on` and `data_source`.
        // 5: the phase portrait's legend beside the plot, found-vs-budget's in a corner free
        // of lines, linear ticks without '.0' (figures only).
        5
    }
    fn description(&self) -> &'static str {
        "all fixed points (exact), SCYFI / constrained SCYFI / local-search baselines, Fig 8 curve, R = 2 phase portrait"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<FixedPointsParams>(params)?;
        let p: FixedPointsParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.methods.is_empty() {
            return Err(ParamError::new("methods", "list at least `exact`"));
        }
        if !p.baselines().is_empty() && (p.budgets.is_empty() || p.seeds.is_empty()) {
            return Err(ParamError::new(
                "budgets",
                "the baselines need ≥ 1 budget and ≥ 1 seed",
            ));
        }
        if p.budgets.contains(&0) {
            return Err(ParamError::new("budgets", "budgets must be ≥ 1"));
        }
        if !(p.marginal_tol.is_finite() && p.marginal_tol >= 0.0) {
            return Err(ParamError::new("marginal_tol", "must be a number ≥ 0"));
        }
        if let Some(r) = p.portrait_range {
            if !(r.iter().all(|x| x.is_finite()) && r[1] > r[0] && r[3] > r[2]) {
                return Err(ParamError::new(
                    "portrait_range",
                    "give [x0, x1, y0, y1] with x1 > x0 and y1 > y0",
                ));
            }
        }
        if p.portrait_grid < 2 {
            return Err(ParamError::new("portrait_grid", "must be ≥ 2"));
        }
        Ok(v)
    }
    fn outputs(&self, params: &Value) -> Vec<OutputSpec> {
        let mut outs = vec![
            OutputSpec::new("table", "fixed_points.parquet"),
            OutputSpec::new("table_md", "fixed_points.md"),
            OutputSpec::new("summary", "summary.parquet"),
            OutputSpec::new("summary_md", "summary.md"),
        ];
        let p: Option<FixedPointsParams> = serde_json::from_value(params.clone()).ok();
        if p.as_ref().is_some_and(|p| !p.baselines().is_empty()) {
            outs.push(OutputSpec::new("curve", "budget_curve.parquet"));
            outs.push(OutputSpec::new("curve_md", "budget_curve.md"));
            outs.push(OutputSpec::new("figure_budget", "found_vs_budget.png"));
            outs.push(OutputSpec::new("figure_budget_svg", "found_vs_budget.svg"));
        }
        if p.as_ref().is_some_and(|p| p.phase_portrait) {
            outs.push(OutputSpec::new("figure_phase", "phase_portrait.png"));
            outs.push(OutputSpec::new("figure_phase_svg", "phase_portrait.svg"));
        }
        outs
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::required("model")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: FixedPointsParams = ctx.params_as()?;
        let model_path = ctx.input("model")?.to_path_buf();
        let (map, trained_on) =
            load_map_traced(&model_path).map_err(|e| StageError::new(format!("{e:#}")))?;
        if p.phase_portrait && map.rank != 2 {
            return Err(StageError::new(format!(
                "params.phase_portrait: {} has rank {}; the phase portrait needs R = 2 (set \
                 phase_portrait: false)",
                model_path.display(),
                map.rank
            )));
        }
        let model = if p.model_name.is_empty() {
            model_path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_string()
        } else {
            p.model_name.clone()
        };
        let opts = Options {
            marginal_tol: p.marginal_tol,
            ..Options::default()
        };
        ctx.progress().message("exact enumeration");
        // In calls that also take the cores other stages left idle (the same points).
        let exact = find_fixed_points_with(&map, &opts, &mut |work| ctx.install_elastic(work))
            .map_err(|e| StageError::new(format!("{}: {e}", model_path.display())))?;
        ctx.record("fixed_points", exact.points.len() as f64);
        ctx.record(
            "stable",
            exact
                .points
                .iter()
                .filter(|q| q.stability == Stability::Stable)
                .count() as f64,
        );
        let mut rows = Rows::default();
        for (id, point) in exact.points.iter().enumerate() {
            rows.push(
                &model,
                "exact",
                -1,
                id,
                point,
                exact.counters.region_solves,
                true,
            );
        }
        // Baselines: one run per method and seed at the largest budget; the curve is read off
        // the order of the finds (the draws do not depend on the budget).
        let baselines = p.baselines();
        let max_budget = p.budgets.iter().copied().max().unwrap_or(0);
        let mut curve = CurveRows::default();
        let mut series = Vec::new();
        ctx.progress()
            .set_total((baselines.len() * p.seeds.len()) as u64);
        for &method in &baselines {
            let mut mean = vec![0.0; p.budgets.len()];
            for &seed in &p.seeds {
                ctx.progress()
                    .message(format!("{} seed {seed}", method.name()));
                let run = run_baseline(&map, method, seed, max_budget, &p)
                    .map_err(|e| StageError::new(format!("{}: {e}", model_path.display())))?;
                for (id, point) in run.set.points.iter().enumerate() {
                    let at = run
                        .finds
                        .iter()
                        .find(|(_, z)| same_point(z, &point.z))
                        .map_or(run.solves + run.evaluations, |(at, _)| *at);
                    let known = exact.points.iter().any(|e| same_point(&e.z, &point.z));
                    rows.push(&model, method.name(), i64::from(seed), id, point, at, known);
                }
                for (b, &budget) in p.budgets.iter().enumerate() {
                    let found: Vec<&Vec<f64>> = run
                        .finds
                        .iter()
                        .filter(|(at, _)| *at <= budget)
                        .map(|(_, z)| z)
                        .collect();
                    let in_exact = exact
                        .points
                        .iter()
                        .filter(|e| found.iter().any(|z| same_point(z, &e.z)))
                        .count();
                    mean[b] += found.len() as f64 / p.seeds.len() as f64;
                    curve.push(
                        &model,
                        method.name(),
                        seed,
                        budget,
                        found.len(),
                        in_exact,
                        exact.points.len(),
                    );
                }
                ctx.progress().inc(1);
            }
            series.push(Series {
                reference_for: None,
                label: format!("{} (mean of {} seeds)", method.name(), p.seeds.len()),
                x: p.budgets.iter().map(|&b| (b as f64).log10()).collect(),
                y: mean,
            });
        }
        let tab = |e: TableError| StageError::new(e.to_string());
        // One row per model: counts by stability (summarised over fits by `summarize`).
        let count = |s: Stability| exact.points.iter().filter(|q| q.stability == s).count() as i64;
        let mut summary = Table::new()
            .with("model", vec![model.clone()])
            .map_err(tab)?;
        summary.push_labels(&p.labels, 1).map_err(tab)?;
        // Fixed points are a property of the model, scored on no data; say so, and what the
        // model was fitted to (labels of the same names take precedence).
        let provenance = [
            ("data_source", "none (computed from the model)".to_string()),
            ("trained_on", trained_on),
        ];
        for (name, value) in provenance {
            if summary.column(name).is_none() {
                summary.push(name, vec![value]).map_err(tab)?;
            }
        }
        let columns: [(&str, i64); 6] = [
            ("rank", map.rank as i64),
            ("n_units", map.n_model_units as i64),
            ("n_fixed_points", exact.points.len() as i64),
            ("n_stable", count(Stability::Stable)),
            ("n_unstable", count(Stability::Unstable)),
            ("n_marginal", count(Stability::Marginal)),
        ];
        for (name, value) in columns {
            summary.push(name, vec![value]).map_err(tab)?;
        }
        summary
            .push("region_solves", vec![exact.counters.region_solves as i64])
            .map_err(tab)?;
        summary.write_parquet(ctx.output("summary")?).map_err(tab)?;
        summary
            .write_markdown(ctx.output("summary_md")?)
            .map_err(tab)?;
        let table = rows.table().map_err(tab)?;
        table.write_parquet(ctx.output("table")?).map_err(tab)?;
        table.write_markdown(ctx.output("table_md")?).map_err(tab)?;
        if !baselines.is_empty() {
            let c = curve.table().map_err(tab)?;
            c.write_parquet(ctx.output("curve")?).map_err(tab)?;
            c.write_markdown(ctx.output("curve_md")?).map_err(tab)?;
            // The exact method finds everything once its solves are done: a step.
            let lo = p.budgets.iter().copied().min().unwrap_or(1) as f64;
            let hi = (max_budget as f64).max(exact.counters.region_solves as f64);
            let at = (exact.counters.region_solves.max(1) as f64).log10();
            let total = exact.points.len() as f64;
            series.insert(
                0,
                Series {
                    reference_for: None,
                    label: format!("exact line sweep ({total} points)"),
                    x: vec![lo.log10().min(at), at, at, hi.log10().max(at)],
                    y: vec![0.0, 0.0, total, total],
                },
            );
            let fig = line_plot(
                &ctx.scratch_dir().join("found_vs_budget"),
                &format!("{model}: fixed points found vs budget"),
                "log10 budget (linear solves; local search: solves + evaluations)",
                "fixed points found",
                &series,
                false,
            )
            .map_err(|e| StageError::new(e.to_string()))?;
            move_into(ctx, &fig.png, "figure_budget")?;
            move_into(ctx, &fig.svg, "figure_budget_svg")?;
        }
        if p.phase_portrait {
            let portrait = portrait_data(&map, &exact, p.portrait_range, p.portrait_grid, &[]);
            let fig = phase_portrait(
                &ctx.scratch_dir().join("phase_portrait"),
                &format!(
                    "{model}: {} fixed points ({} stable)",
                    exact.points.len(),
                    exact
                        .points
                        .iter()
                        .filter(|q| q.stability == Stability::Stable)
                        .count()
                ),
                ("z1", "z2"),
                &portrait,
            )
            .map_err(|e| StageError::new(e.to_string()))?;
            move_into(ctx, &fig.png, "figure_phase")?;
            move_into(ctx, &fig.svg, "figure_phase_svg")?;
        }
        Ok(())
    }
}

fn move_into(
    ctx: &StageContext<'_>,
    from: &std::path::Path,
    output: &str,
) -> Result<(), StageError> {
    let to = ctx.output(output)?.to_path_buf();
    std::fs::rename(from, &to).map_err(|e| StageError::io(&to, e))
}

fn same_point(a: &[f64], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-8 * (1.0 + x.abs()))
}

/// One baseline run at the largest budget.
fn run_baseline(
    map: &PwlMap,
    method: Method,
    seed: u32,
    budget: u64,
    p: &FixedPointsParams,
) -> Result<BaselineRun, crate::analysis::fixed_points::FixedPointError> {
    let scyfi_opts = ScyfiOptions {
        budget,
        reference_dedup: p.reference_dedup,
        ..ScyfiOptions::default()
    };
    match method {
        Method::Scyfi | Method::Exact => scyfi(
            map,
            ScyfiVariant::Unconstrained,
            &scyfi_opts,
            &mut NumpyMt19937::new(seed),
        ),
        Method::ConstrainedScyfi => scyfi(
            map,
            ScyfiVariant::Constrained,
            &scyfi_opts,
            &mut NumpyMt19937::new(seed),
        ),
        Method::Local => local_search(
            map,
            &LocalOptions {
                work_budget: Some(budget),
                starts: u64::MAX,
                ..LocalOptions::default()
            },
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(seed)),
        ),
    }
}

/// Rows of the fixed-point table.
#[derive(Default)]
struct Rows {
    model: Vec<String>,
    method: Vec<String>,
    seed: Vec<i64>,
    point_id: Vec<i64>,
    z: Vec<Vec<f64>>,
    eigenvalues: Vec<String>,
    spectral_radius: Vec<f64>,
    stability: Vec<String>,
    on_boundary: Vec<bool>,
    n_active: Vec<i64>,
    residual: Vec<f64>,
    cost: Vec<i64>,
    in_exact_set: Vec<bool>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        model: &str,
        method: &str,
        seed: i64,
        id: usize,
        point: &FixedPoint,
        cost: u64,
        in_exact: bool,
    ) {
        self.model.push(model.to_string());
        self.method.push(method.to_string());
        self.seed.push(seed);
        self.point_id.push(id as i64);
        self.z.push(point.z.clone());
        self.eigenvalues.push(
            point
                .eigenvalues
                .iter()
                .map(|(re, im)| {
                    if *im == 0.0 {
                        format!("{re:.6}")
                    } else {
                        format!("{re:.6}{im:+.6}i")
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
        self.spectral_radius.push(point.spectral_radius);
        self.stability.push(
            match point.stability {
                Stability::Stable => "stable",
                Stability::Unstable => "unstable",
                Stability::Marginal => "marginal",
            }
            .to_string(),
        );
        self.on_boundary.push(point.on_boundary);
        self.n_active.push(point.active_units.len() as i64);
        self.residual.push(point.residual);
        self.cost.push(i64::try_from(cost).unwrap_or(i64::MAX));
        self.in_exact_set.push(in_exact);
    }

    fn table(self) -> Result<Table, TableError> {
        let rank = self.z.first().map_or(0, Vec::len);
        let mut t = Table::new()
            .with("model", Column::Str(self.model))?
            .with("method", Column::Str(self.method))?
            .with("seed", Column::I64(self.seed))?
            .with("point_id", Column::I64(self.point_id))?;
        for q in 0..rank {
            t = t.with(
                format!("z{}", q + 1),
                Column::F64(self.z.iter().map(|z| z[q]).collect()),
            )?;
        }
        t.with("eigenvalues", Column::Str(self.eigenvalues))?
            .with("spectral_radius", Column::F64(self.spectral_radius))?
            .with("stability", Column::Str(self.stability))?
            .with("on_boundary", Column::Bool(self.on_boundary))?
            .with("n_active_units", Column::I64(self.n_active))?
            .with("residual", Column::F64(self.residual))?
            .with("cost", Column::I64(self.cost))?
            .with("in_exact_set", Column::Bool(self.in_exact_set))
    }
}

/// Rows of the found-vs-budget table.
#[derive(Default)]
struct CurveRows {
    model: Vec<String>,
    method: Vec<String>,
    seed: Vec<i64>,
    budget: Vec<i64>,
    found: Vec<i64>,
    found_in_exact: Vec<i64>,
    exact_total: Vec<i64>,
}

impl CurveRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        model: &str,
        method: &str,
        seed: u32,
        budget: u64,
        found: usize,
        in_exact: usize,
        total: usize,
    ) {
        self.model.push(model.to_string());
        self.method.push(method.to_string());
        self.seed.push(i64::from(seed));
        self.budget.push(i64::try_from(budget).unwrap_or(i64::MAX));
        self.found.push(found as i64);
        self.found_in_exact.push(in_exact as i64);
        self.exact_total.push(total as i64);
    }

    fn table(self) -> Result<Table, TableError> {
        Table::new()
            .with("model", Column::Str(self.model))?
            .with("method", Column::Str(self.method))?
            .with("seed", Column::I64(self.seed))?
            .with("budget", Column::I64(self.budget))?
            .with("found", Column::I64(self.found))?
            .with("found_in_exact_set", Column::I64(self.found_in_exact))?
            .with("exact_total", Column::I64(self.exact_total))
    }
}

/// Flow arrows, nullclines (marching squares on Δz = F(z) − z) and the fixed points. With
/// `runs` (trajectories to draw over the flow, e.g. a noisy run of the model), the portrait
/// also draws where the noise-free dynamics from the origin settle (a limit cycle, say; not
/// drawn when they settle on a point), and its automatic range covers the runs too.
pub(crate) fn portrait_data(
    map: &PwlMap,
    set: &FixedPointSet,
    range: Option<[f64; 4]>,
    grid: usize,
    runs: &[PanelLine],
) -> PhasePortrait {
    let finite = |z: &[f64]| z.iter().all(|v| v.is_finite() && v.abs() < 1e6);
    // Runs of 3000 noise-free steps from the origin and from next to each fixed point; their
    // last 2000 states show where the dynamics settle (a limit cycle has one unstable point
    // inside it). The origin's last 300 states are the settled path drawn with `runs`.
    let mut starts: Vec<Vec<f64>> = vec![vec![0.0, 0.0]];
    for point in &set.points {
        let scale = 1e-3 * (1.0 + point.z[0].abs().max(point.z[1].abs()));
        starts.push(vec![point.z[0] + scale, point.z[1] - scale]);
    }
    let mut settled: Vec<Vec<f64>> = Vec::new();
    let mut settled_path: Vec<(f64, f64)> = Vec::new();
    for (s, start) in starts.into_iter().enumerate() {
        let mut z = start;
        for step in 0..3000 {
            z = map.apply(&z);
            if !finite(&z) {
                break;
            }
            if step >= 1000 {
                settled.push(z.clone());
            }
            if s == 0 && step >= 2700 {
                settled_path.push((z[0], z[1]));
            }
        }
    }
    let [x0, x1, y0, y1] = range.unwrap_or_else(|| {
        // The fixed points, where the noise-free dynamics settle and the runs.
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        let mut include = |z: &[f64]| {
            if finite(z) {
                for q in 0..2 {
                    lo[q] = lo[q].min(z[q]);
                    hi[q] = hi[q].max(z[q]);
                }
            }
        };
        for point in &set.points {
            include(&point.z);
        }
        for z in &settled {
            include(z);
        }
        for (_, _, points) in runs {
            for &(x, y) in points {
                include(&[x, y]);
            }
        }
        if !lo[0].is_finite() || !lo[1].is_finite() {
            return [-1.0, 1.0, -1.0, 1.0];
        }
        let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-3);
        let pad = 0.25 * span;
        [lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad]
    });
    let mut paths: Vec<PanelLine> = Vec::new();
    if !runs.is_empty() {
        let extent = |pts: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            let v = pts.iter().map(f);
            v.clone().fold(f64::NEG_INFINITY, f64::max) - v.fold(f64::INFINITY, f64::min)
        };
        let moving = settled_path.len() > 1
            && extent(&settled_path, |p| p.0).max(extent(&settled_path, |p| p.1))
                > 1e-3 * (x1 - x0).max(y1 - y0);
        paths.extend(runs.iter().cloned());
        if moving {
            paths.push(("noise-free, settled".to_string(), 7, settled_path));
        }
    }
    let delta = |x: f64, y: f64| {
        let f = map.apply(&[x, y]);
        (f[0] - x, f[1] - y)
    };
    // Arrows: direction of Δz, length ∝ sqrt(|Δz| / max |Δz|) so slow regions stay visible.
    let (dx, dy) = ((x1 - x0) / grid as f64, (y1 - y0) / grid as f64);
    let mut raw = Vec::with_capacity(grid * grid);
    for i in 0..grid {
        for j in 0..grid {
            let (x, y) = (x0 + (i as f64 + 0.5) * dx, y0 + (j as f64 + 0.5) * dy);
            raw.push(((x, y), delta(x, y)));
        }
    }
    let max = raw
        .iter()
        .map(|(_, (u, v))| u.hypot(*v))
        .fold(0.0f64, f64::max)
        .max(1e-300);
    let arrows = raw
        .into_iter()
        .map(|((x, y), (u, v))| {
            let norm = u.hypot(v);
            if norm == 0.0 {
                return ((x, y), (0.0, 0.0));
            }
            let len = 0.8 * (norm / max).sqrt();
            ((x, y), (u / norm * len * dx, v / norm * len * dy))
        })
        .collect();
    // Nullclines by marching squares on a finer grid.
    let fine = 160;
    let (fx, fy) = ((x1 - x0) / fine as f64, (y1 - y0) / fine as f64);
    let mut values = vec![(0.0, 0.0); (fine + 1) * (fine + 1)];
    for i in 0..=fine {
        for j in 0..=fine {
            values[i * (fine + 1) + j] = delta(x0 + i as f64 * fx, y0 + j as f64 * fy);
        }
    }
    let mut nullclines = [Vec::new(), Vec::new()];
    for (q, segs) in nullclines.iter_mut().enumerate() {
        let val = |i: usize, j: usize| {
            let d = values[i * (fine + 1) + j];
            if q == 0 {
                d.0
            } else {
                d.1
            }
        };
        for i in 0..fine {
            for j in 0..fine {
                let corners = [
                    ((i, j), val(i, j)),
                    ((i + 1, j), val(i + 1, j)),
                    ((i + 1, j + 1), val(i + 1, j + 1)),
                    ((i, j + 1), val(i, j + 1)),
                ];
                let mut cuts = Vec::with_capacity(4);
                for e in 0..4 {
                    let ((ia, ja), va) = corners[e];
                    let ((ib, jb), vb) = corners[(e + 1) % 4];
                    if (va > 0.0) != (vb > 0.0) {
                        let t = va / (va - vb);
                        let xa = x0 + ia as f64 * fx;
                        let ya = y0 + ja as f64 * fy;
                        let xb = x0 + ib as f64 * fx;
                        let yb = y0 + jb as f64 * fy;
                        cuts.push((xa + t * (xb - xa), ya + t * (yb - ya)));
                    }
                }
                for pair in cuts.chunks_exact(2) {
                    segs.push((pair[0], pair[1]));
                }
            }
        }
    }
    let points = set
        .points
        .iter()
        .map(|q| {
            let class = match q.stability {
                Stability::Stable => PointClass::Stable,
                Stability::Unstable => PointClass::Unstable,
                Stability::Marginal => PointClass::Marginal,
            };
            (q.z[0], q.z[1], class)
        })
        .collect();
    PhasePortrait {
        x_range: (x0, x1),
        y_range: (y0, y1),
        arrows,
        nullclines,
        points,
        paths,
    }
}
