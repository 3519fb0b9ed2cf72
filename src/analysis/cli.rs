//! `lowrank-smc fixed-points MODEL`: load a model from a file, find all fixed points, print
//! them (Markdown table or JSON); and `lowrank-smc bench fixed-points`.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::fixed_points::{find_fixed_points, FixedPointSet, Options, PwlMap};
use crate::inference::bench::peak_rss_mb;
use crate::model::lowrank::Nonlinearity;

/// Reads the piecewise-linear map of a model file: a `fit` output (`model.h5`), or a JSON file
/// with a `model` block in the reference's fixed-point form (`a, W1, W2, h1, h2`: z' =
/// diag(a) z + W1 relu(W2 z + h2) + h1) or in low-rank form (`a, m, n, h` and `nonlinearity`).
pub fn load_map(path: &Path) -> anyhow::Result<PwlMap> {
    load_map_traced(path).map(|(map, _)| map)
}

/// [`load_map`], with what the model was fitted to, for the `trained_on` column of tables made
/// from the model alone: a fitted `model.h5`'s recorded `data_source` (`unknown` when it has
/// none), or `not recorded (JSON map <file name>)` for a JSON map or teacher file.
pub fn load_map_traced(path: &Path) -> anyhow::Result<(PwlMap, String)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "json" {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", path.display()))?;
        let map = map_from_json(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        return Ok((map, format!("not recorded (JSON map {name})")));
    }
    // load_model's errors name the file already.
    let fitted = crate::stages::fit::load_model(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = &fitted.config;
    let p = c
        .view(&fitted.params)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let map = PwlMap::from_low_rank(p.m, p.n, p.h, p.decay, c.rank, c.nonlinearity)?;
    let trained_on = fitted
        .data_source
        .clone()
        .unwrap_or_else(|| "unknown".to_string());
    Ok((map, trained_on))
}

fn numbers(v: &Value, field: &str) -> anyhow::Result<Vec<f64>> {
    let flat: Vec<&Value> = match v {
        Value::Array(rows) if rows.iter().all(Value::is_array) => rows
            .iter()
            .flat_map(|r| r.as_array().into_iter().flatten())
            .collect(),
        Value::Array(xs) => xs.iter().collect(),
        _ => anyhow::bail!("{field}: expected a list of numbers (or of rows)"),
    };
    flat.iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| anyhow::anyhow!("{field}: `{x}` is not a number"))
        })
        .collect()
}

/// The reference's fixed-point form z' = diag(a) z + W1 relu(W2 z + h2) + h1, its arrays read
/// by `get` under the names `a`, `W1`, `W2`, `h1`, `h2` (`a_name` for the decays).
fn reference_form(
    get: impl Fn(&str) -> anyhow::Result<Vec<f64>>,
    a_name: &str,
) -> anyhow::Result<PwlMap> {
    let a = get(a_name)?;
    let b = get("h2")?;
    let map = PwlMap {
        rank: a.len(),
        a,
        u: get("W2")?,
        v: get("W1")?,
        n_model_units: b.len(),
        b,
        c: get("h1")?,
    };
    map.validate()?;
    Ok(map)
}

/// The map of a JSON document: a `model` block (see [`load_map`]) or a teacher file's
/// `derived.fixed_point_form`.
pub fn map_from_json(doc: &Value) -> anyhow::Result<PwlMap> {
    if let Some(form) = doc.get("derived").and_then(|d| d.get("fixed_point_form")) {
        // A teacher file (datasets/teachers/TEACHERS.md): the matrices under `value`.
        let get = |k: &str| -> anyhow::Result<Vec<f64>> {
            let v = form
                .get(k)
                .ok_or_else(|| anyhow::anyhow!("derived.fixed_point_form.{k} is missing"))?;
            numbers(
                v.get("value").unwrap_or(v),
                &format!("derived.fixed_point_form.{k}"),
            )
        };
        return reference_form(get, "A_diag");
    }
    let m = doc.get("model").ok_or_else(|| {
        anyhow::anyhow!("no `model` block (nor a teacher's `derived.fixed_point_form`)")
    })?;
    let get = |k: &str| -> anyhow::Result<Vec<f64>> {
        numbers(
            m.get(k)
                .ok_or_else(|| anyhow::anyhow!("model.{k} is missing"))?,
            &format!("model.{k}"),
        )
    };
    if m.get("W1").is_some() {
        reference_form(get, "a")
    } else {
        let a = get("a")?;
        let rank = a.len();
        let nl = match m.get("nonlinearity").and_then(Value::as_str) {
            Some("relu") => Nonlinearity::Relu,
            Some("clipped_relu") | None => Nonlinearity::ClippedRelu,
            Some(other) => {
                anyhow::bail!("model.nonlinearity: `{other}` (expected relu or clipped_relu)")
            }
        };
        if a.iter().any(|x| *x != a[0]) {
            anyhow::bail!("model.a: the low-rank form needs one decay for all dimensions");
        }
        Ok(PwlMap::from_low_rank(
            &get("m")?,
            &get("n")?,
            &get("h")?,
            a[0],
            rank,
            nl,
        )?)
    }
}

/// Markdown report of a fixed-point set.
pub fn report_md(set: &FixedPointSet) -> String {
    let mut s = String::from(
        "| id | z | spectral radius | stability | eigenvalues | active units | residual |\n\
         | ---: | --- | ---: | --- | --- | ---: | ---: |\n",
    );
    for (i, p) in set.points.iter().enumerate() {
        let z: Vec<String> = p.z.iter().map(|x| format!("{x:.6}")).collect();
        let ev: Vec<String> = p
            .eigenvalues
            .iter()
            .map(|(re, im)| {
                if *im == 0.0 {
                    format!("{re:.4}")
                } else {
                    format!("{re:.4}{im:+.4}i")
                }
            })
            .collect();
        s.push_str(&format!(
            "| {i} | ({}) | {:.6} | {:?}{} | {} | {} | {:.1e} |\n",
            z.join(", "),
            p.spectral_radius,
            p.stability,
            if p.on_boundary { " (on boundary)" } else { "" },
            ev.join(", "),
            p.active_units.len(),
            p.residual
        ));
    }
    let c = &set.counters;
    s.push_str(&format!(
        "\n{} fixed points · {} lines ({} degenerate) · {} vertices ({} with > R hyperplanes) · \
         {} region solves ({} singular) · {} duplicates merged{}\n",
        set.points.len(),
        c.lines,
        c.degenerate_lines,
        c.vertices,
        c.multi_vertices,
        c.region_solves,
        c.singular_regions,
        c.duplicates_merged,
        if c.skipped_vertices > 0 {
            format!(
                " · WARNING: {} vertices with > 20 hyperplanes were not expanded",
                c.skipped_vertices
            )
        } else {
            String::new()
        }
    ));
    s
}

/// A random clipped-ReLU low-rank map (Gaussian loadings via Box–Muller, seeded).
pub fn random_clipped(n: usize, rank: usize, seed: u64) -> PwlMap {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut normal = || {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen_range(0.0..1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let m: Vec<f64> = (0..n * rank).map(|_| normal()).collect();
    let nn: Vec<f64> = (0..rank * n)
        .map(|_| normal() * 2.0 / (n as f64).sqrt())
        .collect();
    let h: Vec<f64> = (0..n).map(|_| normal() * 0.5).collect();
    // Infallible for these shapes and finite values.
    PwlMap::from_low_rank(&m, &nn, &h, 0.9, rank, Nonlinearity::ClippedRelu)
        .expect("random map is valid")
}

/// `bench fixed-points`: one line per case (all, or those whose name contains one of
/// `filters`), handed to `out` as soon as it is measured. Returns how many cases it ran.
pub fn bench_fixed_points(filters: &[String], out: &mut dyn FnMut(String)) -> usize {
    let ran = std::cell::Cell::new(0usize);
    let wanted = |name: &str| {
        let yes = filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
        ran.set(ran.get() + usize::from(yes));
        yes
    };
    let reach: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/fixed_points/reach_rnn.json"
    ))
    .unwrap_or(Value::Null);
    let name = "fixed-points reach teacher (N=60, R=2, relu)";
    if wanted(name) {
        if let Ok(map) = map_from_json(&reach) {
            let start = Instant::now();
            if let Ok(set) = find_fixed_points(&map, &Options::default()) {
                let dt = start.elapsed().as_secs_f64();
                out(format!(
                    "{name}: {dt:.4} s · {} fixed points · {} linear solves (+{} line setups) · reference 0.14 s, 3601 solves · {:.0}× faster",
                    set.points.len(),
                    set.counters.region_solves,
                    set.counters.lines,
                    0.14 / dt
                ));
            }
        }
    }
    let mut timings: Vec<(usize, usize, f64)> = Vec::new();
    for &(n, r) in &[(128, 2), (256, 2), (512, 2), (128, 3), (256, 3), (512, 3)] {
        let name = format!("fixed-points random clipped relu N={n} R={r}");
        if !wanted(&name) {
            continue;
        }
        let map = random_clipped(n, r, 1);
        let start = Instant::now();
        if let Ok(set) = find_fixed_points(&map, &Options::default()) {
            let dt = start.elapsed().as_secs_f64();
            timings.push((n, r, dt));
            let goal = if (n, r) == (512, 3) {
                format!(" · goal < 60 s: {:.2}× of the budget", dt / 60.0)
            } else {
                String::new()
            };
            out(format!(
                "{name}: {dt:.2} s · {} fixed points · {} linear solves · {} vertices · peak RSS {}{goal}",
                set.points.len(),
                set.counters.region_solves,
                set.counters.vertices,
                peak_rss_mb()
                    .map(|m| format!("{m:.0} MB"))
                    .unwrap_or_else(|| "n/a".into())
            ));
        }
    }
    // Scaling plot: time vs N per rank (log–log), when a rank has ≥ 2 sizes.
    let series: Vec<crate::plot::Series> = [2usize, 3]
        .iter()
        .filter_map(|&r| {
            let pts: Vec<&(usize, usize, f64)> = timings.iter().filter(|t| t.1 == r).collect();
            (pts.len() >= 2).then(|| crate::plot::Series {
                reference_for: None,
                label: format!("R = {r} (clipped ReLU, 2N hyperplanes)"),
                x: pts.iter().map(|t| (t.0 as f64).log10()).collect(),
                y: pts.iter().map(|t| t.2).collect(),
            })
        })
        .collect();
    if !series.is_empty() {
        let stem = Path::new("results/bench/fixed_points_scaling");
        let made = std::fs::create_dir_all("results/bench").map_err(|e| e.to_string());
        match made.and_then(|()| {
            crate::plot::line_plot(
                stem,
                "exact fixed points: time vs N",
                "log10 N (units)",
                "seconds",
                &series,
                true,
            )
            .map_err(|e| e.to_string())
        }) {
            Ok(fig) => out(format!("scaling plot: {}", fig.png.display())),
            Err(e) => out(format!("scaling plot not written: {e}")),
        }
    }
    ran.get()
}
