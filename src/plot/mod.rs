//! Figures (plotters, bundled font).
//!
//! Every figure is written twice, as PNG (to look at) and SVG (to edit), through
//! [`FigurePaths`]. Text uses the bundled DejaVu Sans (`assets/fonts/`), registered once per
//! process by [`register_font`], so no system fonts are needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Font family name under which the bundled TTF is registered.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Errors from drawing a figure.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed while drawing or encoding the file.
    #[error("drawing figure {path}: {message}")]
    Draw {
        /// Output file.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
    /// Nothing to draw (empty or all-NaN data).
    #[error("figure {path}: {message}")]
    NoData {
        /// Output file.
        path: PathBuf,
        /// What was missing.
        message: String,
    },
}

/// Register the bundled font with plotters (idempotent, thread-safe). Returns false if the
/// font could not be registered (then text is skipped by plotters, figures still render).
pub fn register_font() -> bool {
    *REGISTERED.get_or_init(|| {
        for style in [
            plotters::style::FontStyle::Normal,
            plotters::style::FontStyle::Bold,
            plotters::style::FontStyle::Italic,
            plotters::style::FontStyle::Oblique,
        ] {
            if plotters::style::register_font(FONT, style, FONT_BYTES).is_err() {
                return false;
            }
        }
        true
    })
}

/// The PNG and SVG paths of one figure (`stem.png`, `stem.svg`).
#[derive(Debug, Clone)]
pub struct FigurePaths {
    /// Raster copy.
    pub png: PathBuf,
    /// Vector copy.
    pub svg: PathBuf,
}

impl FigurePaths {
    /// Paths `<stem>.png` and `<stem>.svg`.
    pub fn new(stem: &Path) -> Self {
        FigurePaths {
            png: stem.with_extension("png"),
            svg: stem.with_extension("svg"),
        }
    }
}

/// Wrap any plotters error with the output path.
pub fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// (min, max) of the finite values, padded by 5 % (or ±1 for a constant series); None if none.
pub fn finite_range<'a>(values: impl IntoIterator<Item = &'a f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    Some((lo - pad, hi + pad))
}

/// A colour-blind-safe qualitative palette (Okabe–Ito).
pub const PALETTE: [plotters::style::RGBColor; 8] = [
    plotters::style::RGBColor(0, 114, 178),
    plotters::style::RGBColor(213, 94, 0),
    plotters::style::RGBColor(0, 158, 115),
    plotters::style::RGBColor(204, 121, 167),
    plotters::style::RGBColor(230, 159, 0),
    plotters::style::RGBColor(86, 180, 233),
    plotters::style::RGBColor(240, 228, 66),
    plotters::style::RGBColor(0, 0, 0),
];

/// One named line of a [`line_plot`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// x values.
    pub x: Vec<f64>,
    /// y values (same length as x; NaN points are skipped).
    pub y: Vec<f64>,
    /// `Some(i)`: a reference line for series `i` (e.g. the true value it should reach), drawn
    /// dashed in that series' colour. Colours go to the other series in order.
    pub reference_for: Option<usize>,
}

/// Simple line plot of several series, written as PNG and SVG.
pub fn line_plot(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<FigurePaths, PlotError> {
    let axes = Axes {
        log_y,
        ..Axes::default()
    };
    line_plot_with(stem, title, x_label, y_label, series, axes)
}

/// Axis scales and point markers of [`line_plot_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Axes {
    /// Logarithmic x axis (ticks in data units; x ≤ 0 is not drawn).
    pub log_x: bool,
    /// Logarithmic y axis (ticks in data units; y ≤ 0 is not drawn).
    pub log_y: bool,
    /// A dot at every point (for lines of a few points, e.g. a parameter sweep).
    pub markers: bool,
}

/// [`line_plot`] with log x / log y axes and optional point markers.
pub fn line_plot_with(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    axes: Axes,
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let log_y = axes.log_y;
    let tf = |v: f64| if log_y { v.log10() } else { v };
    let tx = |v: f64| if axes.log_x { v.log10() } else { v };
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.x.iter().map(|&v| tx(v)))
        .collect();
    let xr = finite_range(xs.iter());
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.y.iter().map(|&v| tf(v)))
        .collect();
    let yr = finite_range(ys.iter());
    let (Some((x0, x1)), Some((y0, y1))) = (xr, yr) else {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no finite points to plot".into(),
        });
    };
    // The points to draw, in data units (a log axis drops values ≤ 0).
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.x.iter()
                .zip(&s.y)
                .filter(|(&x, &y)| tx(x).is_finite() && tf(y).is_finite())
                .map(|(&x, &y)| (x, y))
                .collect()
        })
        .collect();
    // Palette colours in order over the lines that are not references; a reference line then
    // takes its line's colour.
    let mut own = 0;
    let mut colours: Vec<RGBColor> = series
        .iter()
        .map(|s| {
            let c = PALETTE[own % PALETTE.len()];
            own += usize::from(s.reference_for.is_none());
            c
        })
        .collect();
    for (j, s) in series.iter().enumerate() {
        if let Some(i) = s.reference_for.filter(|&i| i < series.len()) {
            colours[j] = colours[i];
        }
    }
    // A log axis is plotters' log coordinate over the padded range with ticks at 1, 2, 5, 10, …
    // in data units ([`log_ticks`]); a linear one the padded range itself.
    let (lx0, lx1) = (10f64.powf(x0), 10f64.powf(x1));
    let (ly0, ly1) = (10f64.powf(y0), 10f64.powf(y1));
    let log_x_axis = || (lx0..lx1).log_scale().with_key_points(log_ticks(lx0, lx1));
    let log_y_axis = || (ly0..ly1).log_scale().with_key_points(log_ticks(ly0, ly1));
    // The legend (with two or more series): in the plot's corner that covers none of the lines
    // (found by drawing the plot once in memory), else beside the plot.
    let legend: Vec<(LegendGlyph, String)> = series
        .iter()
        .zip(&colours)
        .map(|(s, &c)| {
            let glyph = if s.reference_for.is_some() {
                LegendGlyph::Dash(c)
            } else {
                LegendGlyph::Line(c)
            };
            (glyph, s.label.clone())
        })
        .collect();
    let legend_box = legend_size(legend.iter().map(|(_, l)| l.as_str()), 13);
    macro_rules! draw {
        ($backend:expr, $path:expr, $xr:expr, $yr:expr, $place:expr) => {{
            let place: LegendPlace = $place;
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let (plot_area, legend_area) = root.split_horizontally(LINE_PLOT_SIZE.0);
            let mut chart = ChartBuilder::on(&plot_area)
                .caption(title, (FONT, 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d($xr, $yr)
                .map_err(draw_err($path))?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(if axes.log_x {
                format!("{x_label} (log scale)")
            } else {
                x_label.to_string()
            })
            .y_desc(if log_y {
                format!("{y_label} (log scale)")
            } else {
                y_label.to_string()
            })
            .label_style((FONT, 13));
            let x_linear = |v: &f64| linear_tick_label(*v, x0, x1);
            let y_linear = |v: &f64| linear_tick_label(*v, y0, y1);
            if axes.log_x {
                mesh.x_label_formatter(&|v: &f64| tick_label(*v));
            } else {
                mesh.x_label_formatter(&x_linear);
            }
            if log_y {
                mesh.y_label_formatter(&|v: &f64| tick_label(*v));
            } else {
                mesh.y_label_formatter(&y_linear);
            }
            mesh.draw().map_err(draw_err($path))?;
            for (s, (pts, &colour)) in series.iter().zip(points.iter().zip(&colours)) {
                if s.reference_for.is_some() {
                    chart
                        .draw_series(DashedLineSeries::new(
                            pts.iter().copied(),
                            8,
                            5,
                            colour.stroke_width(2),
                        ))
                        .map_err(draw_err($path))?
                        .label(s.label.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 7, y)], colour.stroke_width(2))
                        });
                    continue;
                }
                if axes.markers {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                        .map_err(draw_err($path))?;
                }
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                    .map_err(draw_err($path))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            let mut drawn = Vec::new();
            for pts in &points {
                sample_polyline(pts.iter().map(|p| chart.backend_coord(p)), &mut drawn);
            }
            let area = chart.plotting_area().get_pixel_range();
            let (corner, covered) = quiet_corner(&drawn, area, legend_box);
            match place {
                LegendPlace::Inside => {
                    chart
                        .configure_series_labels()
                        .position(corner)
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .label_font((FONT, 13))
                        .draw()
                        .map_err(draw_err($path))?;
                }
                LegendPlace::Beside => {
                    draw_legend(&legend_area, &legend, (6, 50), false, 13)
                        .map_err(draw_err($path))?;
                }
                LegendPlace::Probe | LegendPlace::None => {}
            }
            root.present().map_err(draw_err($path))?;
            covered
        }};
    }
    macro_rules! draw_scaled {
        ($backend:expr, $path:expr, $place:expr) => {
            match (axes.log_x, log_y) {
                (false, false) => draw!($backend, $path, x0..x1, y0..y1, $place),
                (true, false) => draw!($backend, $path, log_x_axis(), y0..y1, $place),
                (false, true) => draw!($backend, $path, x0..x1, log_y_axis(), $place),
                (true, true) => draw!($backend, $path, log_x_axis(), log_y_axis(), $place),
            }
        };
    }
    let place = if series.len() < 2 {
        LegendPlace::None
    } else {
        let (w, h) = LINE_PLOT_SIZE;
        let mut buffer = vec![0u8; w as usize * h as usize * 3];
        let covered = draw_scaled!(
            BitMapBackend::with_buffer(&mut buffer, (w, h)),
            &paths.png,
            LegendPlace::Probe
        );
        if covered == 0 {
            LegendPlace::Inside
        } else {
            LegendPlace::Beside
        }
    };
    let size = match place {
        LegendPlace::Beside => (
            LINE_PLOT_SIZE.0 + legend_box.0 as u32 + 20,
            LINE_PLOT_SIZE.1,
        ),
        _ => LINE_PLOT_SIZE,
    };
    draw_scaled!(BitMapBackend::new(&paths.png, size), &paths.png, place);
    draw_scaled!(SVGBackend::new(&paths.svg, size), &paths.svg, place);
    Ok(paths)
}

/// A [`line_plot`]'s size in pixels, without a legend beside it.
const LINE_PLOT_SIZE: (u32, u32) = (900, 560);

/// Where a [`line_plot`] or [`line_panels`] draws its legend.
#[derive(Clone, Copy)]
enum LegendPlace {
    /// One series: no legend.
    None,
    /// The in-memory pass that finds how much of the lines the best corner would cover.
    Probe,
    /// In the plot's corner that covers none of the lines.
    Inside,
    /// Beside the plot ([`line_plot`]) or on a row under each panel ([`line_panels`]): every
    /// corner would cover some line.
    Beside,
}

/// Ticks of a log axis over [lo, hi] (lo > 0): 1, 2, 5 × 10^d while the range spans at most
/// three decades, 1 × 10^d beyond that, and lo/hi themselves when no such value falls inside.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mantissas: &[f64] = if d1 - d0 > 3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    for d in d0..=d1 {
        for &m in mantissas {
            // m·10^d through a decimal string, so 0.05 is 0.05 and not 0.05000000000000001.
            let v: f64 = format!("{m}e{d}").parse().unwrap_or(f64::NAN);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    if ticks.is_empty() {
        ticks = vec![lo, hi];
    }
    ticks
}

/// A tick's label: integers without a decimal point, other values with up to four significant
/// digits (`64`, `0.05`, `1.5e-6`).
pub fn tick_label(v: f64) -> String {
    if v.is_finite() && v.abs() >= 1.0 && v.abs() < 1e7 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e7) {
        format!("{v:.3e}")
            .replace(".000e", "e")
            .replace("00e", "e")
            .replace("0e", "e")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A linear axis' tick label over [lo, hi]: the decimals its tick spacing needs (one more
/// than a tenth of the span asks for, then trailing zeros dropped), so `10` and not `10.0`, `0`
/// and not `-0.0` or `2.8e-17`. Spans below 1e-3 or values of 1e7 and beyond take
/// [`tick_label`]'s form.
pub fn linear_tick_label(v: f64, lo: f64, hi: f64) -> String {
    let span = (hi - lo).abs();
    if !(v.is_finite() && span.is_finite() && span >= 1e-3 && lo.abs().max(hi.abs()) < 1e7) {
        return tick_label(v);
    }
    let decimals = (-(span / 10.0).log10().floor()).max(0.0) as usize + 1;
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.parse::<f64>().is_ok_and(|x| x == 0.0) {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Backend pixels along a polyline (given in backend pixels), one every few pixels along each
/// segment, so that a line crossing a box counts even where it has no data point inside it.
fn sample_polyline(px: impl IntoIterator<Item = (i32, i32)>, out: &mut Vec<(i32, i32)>) {
    let mut last: Option<(i32, i32)> = None;
    for (bx, by) in px {
        if let Some((ax, ay)) = last {
            let len = (bx - ax).abs().max((by - ay).abs());
            let m = (len / 4).clamp(1, 4096);
            for i in 0..m {
                out.push((ax + (bx - ax) * i / m, ay + (by - ay) * i / m));
            }
        }
        last = Some((bx, by));
    }
    out.extend(last);
}

/// A legend box's size in pixels for `labels` at `font` pixels (plotters' layout: an 18-pixel
/// glyph, a gap, the text, a margin all round; text width estimated at 0.6 em per character).
fn legend_size<'a>(labels: impl IntoIterator<Item = &'a str>, font: u32) -> (i32, i32) {
    let (mut n, mut chars) = (0i32, 0usize);
    for l in labels {
        n += 1;
        chars = chars.max(l.chars().count());
    }
    let font = font as i32;
    (
        40 + (chars as f64 * 0.6 * f64::from(font)).ceil() as i32,
        n * (font + 8) + 12,
    )
}

/// The corner of a plotting area (backend pixel ranges `area`) where a legend box of `size`
/// pixels covers the fewest of `pixels` (the data drawn, see [`sample_polyline`]): upper right,
/// upper left, lower right or lower left, the first of them on ties; and how many it covers.
fn quiet_corner(
    pixels: &[(i32, i32)],
    area: (std::ops::Range<i32>, std::ops::Range<i32>),
    size: (i32, i32),
) -> (plotters::chart::SeriesLabelPosition, usize) {
    use plotters::chart::SeriesLabelPosition as P;
    // plotters insets the box by a few pixels; a pad around it keeps lines off its border.
    let pad = 14;
    let (w, h) = (size.0 + pad, size.1 + pad);
    let (xs, ys) = area;
    let corners = [
        (P::UpperRight, xs.end - w, ys.start),
        (P::UpperLeft, xs.start, ys.start),
        (P::LowerRight, xs.end - w, ys.end - h),
        (P::LowerLeft, xs.start, ys.end - h),
    ];
    let mut best = (P::UpperRight, usize::MAX);
    for (pos, x, y) in corners {
        let covered = pixels
            .iter()
            .filter(|&&(px, py)| px >= x && px <= x + w && py >= y && py <= y + h)
            .count();
        if covered < best.1 {
            best = (pos, covered);
        }
    }
    best
}

/// One box of a [`box_plot`]: a label and its values (NaN values are ignored).
#[derive(Debug, Clone)]
pub struct BoxGroup {
    /// Tick label under the box.
    pub label: String,
    /// Observations (e.g. one per seed).
    pub values: Vec<f64>,
    /// A reference value drawn as a black bar across the box, wider than it (e.g. the
    /// teacher's value beside its students'); not drawn when None or not finite.
    pub mark: Option<f64>,
}

impl BoxGroup {
    /// A box of `values` without a mark.
    pub fn new(label: impl Into<String>, values: Vec<f64>) -> Self {
        BoxGroup {
            label: label.into(),
            values,
            mark: None,
        }
    }

    /// Its values and its finite mark: what the value axis must show.
    fn extent(&self) -> impl Iterator<Item = &f64> {
        self.values
            .iter()
            .chain(self.mark.iter().filter(|m| m.is_finite()))
    }
}

/// Quartiles (linear interpolation, numpy's default) of sorted finite values.
fn quartiles(sorted: &[f64]) -> [f64; 5] {
    let q = |p: f64| {
        let pos = p * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    [q(0.0), q(0.25), q(0.5), q(0.75), q(1.0)]
}

/// A box's whisker ends, quartiles and median from the finite `values` (whiskers at the most
/// extreme values within 1.5 IQR of the box): [lo, q1, median, q3, hi]; None without any.
fn box_stats(values: &[f64]) -> Option<[f64; 5]> {
    let mut v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let [_, q1, med, q3, _] = quartiles(&v);
    let iqr = q3 - q1;
    let lo = v
        .iter()
        .copied()
        .find(|&x| x >= q1 - 1.5 * iqr)
        .unwrap_or(q1);
    let hi = v
        .iter()
        .rev()
        .copied()
        .find(|&x| x <= q3 + 1.5 * iqr)
        .unwrap_or(q3);
    Some([lo, q1, med, q3, hi])
}

/// One box's shapes in chart coordinates: the filled quartile box's corners, the polylines
/// (outline, median, whiskers, caps) and every finite observation, jittered deterministically
/// across the box so that each seed is visible. `at` is the box's position on the group axis;
/// `across` puts the values on x (boxes in rows, [`box_panels`]) instead of y ([`box_plot`]).
/// A finite `mark` is a bar across the box at that value, wider than the box.
struct BoxShapes {
    fill: [(f64, f64); 2],
    lines: Vec<Vec<(f64, f64)>>,
    dots: Vec<(f64, f64)>,
    mark: Option<[(f64, f64); 2]>,
}

fn box_shapes(values: &[f64], mark: Option<f64>, at: f64, across: bool) -> Option<BoxShapes> {
    let [lo, q1, med, q3, hi] = box_stats(values)?;
    let w = 0.3;
    // (position on the group axis, value) → chart (x, y).
    let pt = |pos: f64, v: f64| if across { (v, pos) } else { (pos, v) };
    let (a, b) = (at - w, at + w);
    let (ca, cb) = (at - w / 2.0, at + w / 2.0);
    let m = values.len().max(1) as f64;
    Some(BoxShapes {
        fill: [pt(a, q1), pt(b, q3)],
        lines: vec![
            vec![pt(a, q1), pt(b, q1), pt(b, q3), pt(a, q3), pt(a, q1)],
            vec![pt(a, med), pt(b, med)],
            vec![pt(at, q3), pt(at, hi)],
            vec![pt(at, q1), pt(at, lo)],
            vec![pt(ca, hi), pt(cb, hi)],
            vec![pt(ca, lo), pt(cb, lo)],
        ],
        dots: values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(j, &v)| pt(at + (j as f64 / m - 0.5) * 0.4, v))
            .collect(),
        mark: mark
            .filter(|v| v.is_finite())
            .map(|v| [pt(at - 0.42, v), pt(at + 0.42, v)]),
    })
}

/// The colour of the `i`-th box: the palette without its black, which is the marks' colour.
fn box_colour(i: usize) -> plotters::style::RGBColor {
    PALETTE[i % (PALETTE.len() - 1)]
}

/// Draws [`box_shapes`] in `colour` (boxes tinted, outlines 2 px, observations as grey dots).
fn draw_box<DB: plotters::prelude::DrawingBackend>(
    chart: &mut plotters::prelude::ChartContext<
        '_,
        DB,
        plotters::prelude::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
    shapes: BoxShapes,
    colour: plotters::style::RGBColor,
) -> Result<(), plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>> {
    use plotters::prelude::*;
    chart.draw_series(std::iter::once(Rectangle::new(
        shapes.fill,
        colour.mix(0.25).filled(),
    )))?;
    chart.draw_series(
        shapes
            .lines
            .into_iter()
            .map(|l| PathElement::new(l, colour.stroke_width(2))),
    )?;
    chart.draw_series(
        shapes
            .dots
            .into_iter()
            .map(|p| Circle::new(p, 3, BLACK.mix(0.6).filled())),
    )?;
    if let Some(ends) = shapes.mark {
        chart.draw_series(std::iter::once(PathElement::new(
            ends.to_vec(),
            BLACK.stroke_width(3),
        )))?;
    }
    Ok(())
}

/// Width in pixels of one box's slot in [`box_plot`] (up to [`BOX_PLOT_MAX_WIDTH`] in all).
const BOX_SLOT: u32 = 260;
/// The widest [`box_plot`] figure; when its tick labels would not fit under their boxes at
/// this width, the boxes are drawn across instead, by [`box_panels`].
const BOX_PLOT_MAX_WIDTH: u32 = 1400;
/// Font size of box plots' tick labels.
const BOX_LABEL_FONT: u32 = 13;

/// Estimated pixel width of `text` at `font` pixels (0.6 em per character, as
/// [`legend_size`]).
fn text_width(text: &str, font: u32) -> u32 {
    (text.chars().count() as f64 * 0.6 * f64::from(font)).ceil() as u32
}

/// Box plots (median, quartiles, 1.5·IQR whiskers) with every observation drawn as a dot:
/// the Fig S7 style, one box per group side by side. Written as PNG and SVG. When the group
/// labels would not fit under their boxes (many groups, long labels), the figure is one
/// [`box_panels`] panel instead, its boxes across and their labels on the left.
pub fn box_plot(
    stem: &Path,
    title: &str,
    y_label: &str,
    groups: &[BoxGroup],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let yr = finite_range(groups.iter().flat_map(BoxGroup::extent));
    let Some((y0, y1)) = yr else {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no finite values for the box plot".into(),
        });
    };
    let n = groups.len();
    let width = (BOX_SLOT * n.max(1) as u32).clamp(480, BOX_PLOT_MAX_WIDTH);
    let widest = groups
        .iter()
        .map(|g| text_width(&g.label, BOX_LABEL_FONT))
        .max()
        .unwrap_or(0);
    if (widest + 8) * n as u32 > width.saturating_sub(80) {
        let panel = BoxPanel {
            title: String::new(),
            groups: groups.to_vec(),
        };
        return box_panels(stem, title, y_label, std::slice::from_ref(&panel));
    }
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, (FONT, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)
                .map_err(draw_err($path))?;
            let labels = labels.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n.max(1))
                .x_label_formatter(&move |x: &f64| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|v: &f64| linear_tick_label(*v, y0, y1))
                .y_desc(y_label)
                .label_style((FONT, BOX_LABEL_FONT))
                .draw()
                .map_err(draw_err($path))?;
            for (i, g) in groups.iter().enumerate() {
                if let Some(shapes) = box_shapes(&g.values, g.mark, i as f64, false) {
                    draw_box(&mut chart, shapes, box_colour(i)).map_err(draw_err($path))?;
                }
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    draw!(BitMapBackend::new(&paths.png, (width, 520)), &paths.png);
    draw!(SVGBackend::new(&paths.svg, (width, 520)), &paths.svg);
    Ok(paths)
}

/// One panel of [`box_panels`]: its title (e.g. a metric's name) and its boxes.
#[derive(Debug, Clone)]
pub struct BoxPanel {
    /// Caption over the panel (may be empty).
    pub title: String,
    /// One box per group, drawn top to bottom in this order.
    pub groups: Vec<BoxGroup>,
}

/// Panels side by side in a row of [`box_panels`].
const BOX_PANEL_COLUMNS: usize = 3;
/// Height in pixels of one box's row in a [`box_panels`] panel.
const BOX_ROW: u32 = 30;
/// A [`box_panels`] panel's height beyond its rows: caption, value axis and margins.
const BOX_PANEL_FRAME: u32 = 84;
/// Width in pixels of a [`box_panels`] panel's value axis.
const BOX_PANEL_PLOT_WIDTH: u32 = 300;
/// The widest group label area of a [`box_panels`] panel; longer labels are cut with '…'.
const BOX_PANEL_MAX_LABEL: u32 = 260;
/// Height of a [`box_panels`] figure's title.
const BOX_PANELS_TITLE: u32 = 36;

/// `label` cut to at most `width` pixels at `font`, ending in '…' when cut.
fn fit_label(label: &str, width: u32, font: u32) -> String {
    if text_width(label, font) <= width {
        return label.to_string();
    }
    let keep = ((f64::from(width) / (0.6 * f64::from(font))).floor() as usize).saturating_sub(1);
    let mut out: String = label.chars().take(keep).collect();
    out.push('…');
    out
}

/// Box plots in panels, each with its own value range: for metrics of different scales side
/// by side (e.g. one panel per metric, one box per setup). Within a panel the boxes lie across
/// (value on x), one row per group labelled on the left, every observation a dot, a label in
/// the same colour in every panel; panels go [`BOX_PANEL_COLUMNS`] to a row. A panel without
/// any finite value is left out. `value_label` names the value axis. Written as PNG and SVG.
pub fn box_panels(
    stem: &Path,
    title: &str,
    value_label: &str,
    panels: &[BoxPanel],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    if panels.is_empty() {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no panels for the box plot".into(),
        });
    }
    // A panel without a finite value (a metric not defined for these runs) is left out.
    let panels: Vec<&BoxPanel> = panels
        .iter()
        .filter(|p| finite_range(p.groups.iter().flat_map(|g| g.values.iter())).is_some())
        .collect();
    if panels.is_empty() {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no finite values for the box plot".into(),
        });
    }
    let label_width = panels
        .iter()
        .flat_map(|p| p.groups.iter())
        .map(|g| text_width(&g.label, BOX_LABEL_FONT) + 12)
        .max()
        .unwrap_or(0)
        .clamp(40, BOX_PANEL_MAX_LABEL);
    // A label keeps its colour in every panel: the palette in the order labels first appear.
    let mut label_order: Vec<&str> = Vec::new();
    for g in panels.iter().flat_map(|p| p.groups.iter()) {
        if !label_order.contains(&g.label.as_str()) {
            label_order.push(&g.label);
        }
    }
    let colour_of =
        |label: &str| box_colour(label_order.iter().position(|l| *l == label).unwrap_or(0));
    let columns = panels.len().min(BOX_PANEL_COLUMNS);
    let panel_width = label_width + BOX_PANEL_PLOT_WIDTH;
    let row_heights: Vec<u32> = panels
        .chunks(columns)
        .map(|row| {
            let boxes = row.iter().map(|p| p.groups.len()).max().unwrap_or(0);
            BOX_PANEL_FRAME + BOX_ROW * boxes.max(1) as u32
        })
        .collect();
    let width = panel_width * columns as u32;
    let height = BOX_PANELS_TITLE + row_heights.iter().sum::<u32>();
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let (head, mut rest) = root.split_vertically(BOX_PANELS_TITLE);
            head.titled(title, (FONT, 20)).map_err(draw_err($path))?;
            for (row, &h) in panels.chunks(columns).zip(&row_heights) {
                let (area, below) = rest.split_vertically(h);
                rest = below;
                let cells = area.split_evenly((1, columns));
                for (p, cell) in row.iter().zip(&cells) {
                    let n = p.groups.len().max(1);
                    let (x0, x1) = finite_range(p.groups.iter().flat_map(BoxGroup::extent))
                        .unwrap_or((-1.0, 1.0));
                    let labels: Vec<String> = p
                        .groups
                        .iter()
                        .map(|g| fit_label(&g.label, label_width - 12, BOX_LABEL_FONT))
                        .collect();
                    // Group i on row i from the top.
                    let row_y = |i: usize| (n - 1 - i) as f64;
                    let mut chart = ChartBuilder::on(cell)
                        .caption(&p.title, (FONT, 15))
                        .margin(8)
                        .x_label_area_size(34)
                        .y_label_area_size(label_width)
                        .build_cartesian_2d(x0..x1, -0.5f64..(n as f64 - 0.5))
                        .map_err(draw_err($path))?;
                    chart
                        .configure_mesh()
                        .disable_y_mesh()
                        .y_labels(n)
                        .y_label_formatter(&|y: &f64| {
                            let r = y.round();
                            if (y - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < labels.len() {
                                labels[labels.len() - 1 - r as usize].clone()
                            } else {
                                String::new()
                            }
                        })
                        .x_labels(5)
                        .x_label_formatter(&|v: &f64| linear_tick_label(*v, x0, x1))
                        .x_desc(value_label)
                        .label_style((FONT, BOX_LABEL_FONT))
                        .draw()
                        .map_err(draw_err($path))?;
                    for (i, g) in p.groups.iter().enumerate() {
                        if let Some(shapes) = box_shapes(&g.values, g.mark, row_y(i), true) {
                            draw_box(&mut chart, shapes, colour_of(&g.label))
                                .map_err(draw_err($path))?;
                        }
                    }
                }
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    draw!(BitMapBackend::new(&paths.png, (width, height)), &paths.png);
    draw!(SVGBackend::new(&paths.svg, (width, height)), &paths.svg);
    Ok(paths)
}

/// One panel of [`scatter_panels`]: paired values, e.g. a statistic of the teacher's data (x)
/// and of the student's (y), one point per neuron or pair.
#[derive(Debug, Clone)]
pub struct ScatterPanel {
    /// Caption over the panel.
    pub title: String,
    /// Axis labels.
    pub x_label: String,
    /// Axis labels.
    pub y_label: String,
    /// (x, y); points with a non-finite coordinate are not drawn.
    pub points: Vec<(f64, f64)>,
}

/// Side length in pixels of a [`scatter_panels`] panel.
const SCATTER_PANEL: u32 = 440;

/// Scatter panels side by side, each square with the same range on both axes and the dashed
/// identity line y = x: where the points lie on it, y reproduces x (Fig 3's rate statistics).
/// Written as PNG and SVG.
pub fn scatter_panels(
    stem: &Path,
    title: &str,
    panels: &[ScatterPanel],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let mut ranges = Vec::with_capacity(panels.len());
    for p in panels {
        let finite = p
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .flat_map(|(x, y)| [x, y]);
        let Some(range) = finite_range(finite) else {
            return Err(PlotError::NoData {
                path: paths.png.clone(),
                message: format!("panel `{}` has no finite points", p.title),
            });
        };
        ranges.push(range);
    }
    if panels.is_empty() {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no panels".into(),
        });
    }
    let (width, height) = (
        SCATTER_PANEL * panels.len() as u32,
        SCATTER_PANEL + BOX_PANELS_TITLE,
    );
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let (head, body) = root.split_vertically(BOX_PANELS_TITLE);
            head.titled(title, (FONT, 18)).map_err(draw_err($path))?;
            let cells = body.split_evenly((1, panels.len()));
            for ((p, cell), &(lo, hi)) in panels.iter().zip(&cells).zip(&ranges) {
                let mut chart = ChartBuilder::on(cell)
                    .caption(&p.title, (FONT, 15))
                    .margin(10)
                    .x_label_area_size(40)
                    .y_label_area_size(56)
                    .build_cartesian_2d(lo..hi, lo..hi)
                    .map_err(draw_err($path))?;
                chart
                    .configure_mesh()
                    .x_labels(6)
                    .y_labels(6)
                    .x_label_formatter(&|v: &f64| linear_tick_label(*v, lo, hi))
                    .y_label_formatter(&|v: &f64| linear_tick_label(*v, lo, hi))
                    .x_desc(p.x_label.as_str())
                    .y_desc(p.y_label.as_str())
                    .label_style((FONT, 13))
                    .draw()
                    .map_err(draw_err($path))?;
                let grey = RGBColor(120, 120, 120);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(lo, lo), (hi, hi)],
                        8,
                        5,
                        grey.stroke_width(1),
                    ))
                    .map_err(draw_err($path))?;
                chart
                    .draw_series(
                        p.points
                            .iter()
                            .filter(|(x, y)| x.is_finite() && y.is_finite())
                            .map(|&(x, y)| Circle::new((x, y), 3, PALETTE[0].mix(0.6).filled())),
                    )
                    .map_err(draw_err($path))?;
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    draw!(BitMapBackend::new(&paths.png, (width, height)), &paths.png);
    draw!(SVGBackend::new(&paths.svg, (width, height)), &paths.svg);
    Ok(paths)
}

/// One panel of [`raster_panels`]: spike counts of several units over time.
#[derive(Debug, Clone)]
pub struct RasterPanel {
    /// Caption over the panel (e.g. `teacher`).
    pub title: String,
    /// Per unit, its count in each time bin (units drawn top to bottom in this order).
    pub counts: Vec<Vec<f64>>,
}

/// Height in pixels of one unit's row in a [`raster_panels`] panel.
const RASTER_ROW: u32 = 8;
/// A [`raster_panels`] panel's height beyond its rows: caption, time axis and margins.
const RASTER_FRAME: u32 = 80;
/// Width in pixels of a [`raster_panels`] figure.
const RASTER_WIDTH: u32 = 1000;

/// Spike rasters stacked on one time axis (x = bin · `time.0`, labelled `time.1`): a tick per
/// bin with a spike, one row per unit, a thicker tick for two or more spikes; each panel in its
/// palette colour (Fig 3's teacher vs student spikes). Written as PNG and SVG.
pub fn raster_panels(
    stem: &Path,
    title: &str,
    time: (f64, &str),
    panels: &[RasterPanel],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let bins = panels
        .iter()
        .flat_map(|p| p.counts.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    if bins == 0 {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no units or no time bins for the raster".into(),
        });
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| RASTER_FRAME + RASTER_ROW * p.counts.len().max(1) as u32)
        .collect();
    let height = BOX_PANELS_TITLE + heights.iter().sum::<u32>();
    let (dt, time_label) = time;
    let x1 = bins as f64 * dt;
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let (head, mut rest) = root.split_vertically(BOX_PANELS_TITLE);
            head.titled(title, (FONT, 18)).map_err(draw_err($path))?;
            for (k, (p, &h)) in panels.iter().zip(&heights).enumerate() {
                let (area, below) = rest.split_vertically(h);
                rest = below;
                let n = p.counts.len().max(1);
                let mut chart = ChartBuilder::on(&area)
                    .caption(&p.title, (FONT, 15))
                    .margin(8)
                    .x_label_area_size(36)
                    .y_label_area_size(50)
                    .build_cartesian_2d(0.0..x1, -(n as f64 - 0.5)..0.5f64)
                    .map_err(draw_err($path))?;
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .y_labels(5)
                    .y_label_formatter(&|y: &f64| {
                        // Unit i sits at y = −i, the first unit on top (round tick labels).
                        let r = -y.round();
                        if (y + r).abs() < 1e-6 && r >= 0.0 && (r as usize) < n {
                            format!("{}", r as usize)
                        } else {
                            String::new()
                        }
                    })
                    .x_label_formatter(&|v: &f64| linear_tick_label(*v, 0.0, x1))
                    .x_desc(time_label)
                    .y_desc("unit")
                    .label_style((FONT, 13))
                    .draw()
                    .map_err(draw_err($path))?;
                let colour = PALETTE[k % PALETTE.len()];
                for (i, unit) in p.counts.iter().enumerate() {
                    let y = -(i as f64);
                    chart
                        .draw_series(unit.iter().enumerate().filter(|(_, c)| **c > 0.0).map(
                            |(t, &c)| {
                                let x = (t as f64 + 0.5) * dt;
                                let width = if c >= 2.0 { 3 } else { 1 };
                                PathElement::new(
                                    vec![(x, y - 0.4), (x, y + 0.4)],
                                    colour.stroke_width(width),
                                )
                            },
                        ))
                        .map_err(draw_err($path))?;
                }
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    draw!(
        BitMapBackend::new(&paths.png, (RASTER_WIDTH, height)),
        &paths.png
    );
    draw!(
        SVGBackend::new(&paths.svg, (RASTER_WIDTH, height)),
        &paths.svg
    );
    Ok(paths)
}

/// One panel of [`trace_panels`]: a channel name and up to two traces on the same time axis.
#[derive(Debug, Clone)]
pub struct TracePanel {
    /// Panel label (e.g. the EEG channel name).
    pub label: String,
    /// First trace (e.g. the recording), drawn in the first palette colour.
    pub first: Vec<f64>,
    /// Second trace (e.g. the model's sample), drawn in the second palette colour.
    pub second: Vec<f64>,
}

/// Height in pixels of the row under a [`trace_panels`] title that holds the legend.
const TRACE_LEGEND_ROW: u32 = 18;

/// Stacked panels sharing a time axis (x = index · `time.0`, labelled `time.1`, e.g.
/// `(1.0 / 160.0, "time (s)")` or `(1.0, "time (steps)")`), two traces each, with a legend
/// naming them: the Fig 4 style (recorded vs generated EEG channels).
pub fn trace_panels(
    stem: &Path,
    title: &str,
    names: (&str, &str),
    time: (f64, &str),
    panels: &[TracePanel],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    if panels.is_empty() {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no panels".into(),
        });
    }
    let n_t = panels
        .iter()
        .map(|p| p.first.len().max(p.second.len()))
        .max()
        .unwrap_or(0);
    let (dt, x_label) = time;
    let t_end = (n_t.max(2) - 1) as f64 * dt;
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let (top, body) = root.split_vertically(36 + TRACE_LEGEND_ROW);
            top.titled(title, (FONT, 20)).map_err(draw_err($path))?;
            // The legend on its own row under the title, at its right end (over no trace).
            let entries = [
                (LegendGlyph::Line(PALETTE[0]), names.0.to_string()),
                (LegendGlyph::Line(PALETTE[1]), names.1.to_string()),
            ];
            let width: i32 = entries
                .iter()
                .map(|(_, l)| legend_size([l.as_str()], 12).0)
                .sum();
            let right = top.dim_in_pixel().0 as i32 - 20;
            draw_legend(&top, &entries, (right - width, 36 + 8), true, 12)
                .map_err(draw_err($path))?;
            let areas = body.split_evenly((panels.len(), 1));
            for (i, (panel, area)) in panels.iter().zip(areas.iter()).enumerate() {
                let (y0, y1) = finite_range(panel.first.iter().chain(panel.second.iter()))
                    .unwrap_or((-1.0, 1.0));
                let last = i + 1 == panels.len();
                let mut chart = ChartBuilder::on(area)
                    .margin_left(10)
                    .margin_right(20)
                    .x_label_area_size(if last { 36 } else { 8 })
                    .y_label_area_size(70)
                    .build_cartesian_2d(0.0..t_end, y0..y1)
                    .map_err(draw_err($path))?;
                let mut mesh = chart.configure_mesh();
                let y_ticks = |v: &f64| linear_tick_label(*v, y0, y1);
                let x_ticks = |v: &f64| linear_tick_label(*v, 0.0, t_end);
                mesh.disable_mesh()
                    .x_label_formatter(&x_ticks)
                    .y_label_formatter(&y_ticks)
                    .y_desc(panel.label.as_str())
                    // Five: with three, plotters' round steps leave a narrow range (−1.8 … 1.7)
                    // with only its 0 labelled.
                    .y_labels(5)
                    .label_style((FONT, 12));
                if last {
                    mesh.x_desc(x_label);
                } else {
                    mesh.x_labels(0);
                }
                mesh.draw().map_err(draw_err($path))?;
                for (k, trace) in [&panel.first, &panel.second].into_iter().enumerate() {
                    let colour = PALETTE[k];
                    let pts: Vec<(f64, f64)> = trace
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(t, &v)| (t as f64 * dt, v))
                        .collect();
                    chart
                        .draw_series(LineSeries::new(pts, colour.stroke_width(1)))
                        .map_err(draw_err($path))?;
                }
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    let height = 80 + TRACE_LEGEND_ROW + 150 * panels.len() as u32;
    draw!(BitMapBackend::new(&paths.png, (1000, height)), &paths.png);
    draw!(SVGBackend::new(&paths.svg, (1000, height)), &paths.svg);
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panels side by side: PNG + SVG written, every panel's title in the SVG, and an empty
    /// panel refused with its name.
    #[test]
    fn line_panels_write_every_panel() {
        let dir = std::env::temp_dir().join(format!("lrsmc-panels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let panel = |title: &str, scale: f64| LinePanel {
            title: title.into(),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: (0..6)
                .map(|i| {
                    let pts = (0..60)
                        .map(|t| {
                            let t = t as f64 / 10.0;
                            (scale * t.cos() * (1.0 + i as f64), t.sin() * i as f64)
                        })
                        .collect();
                    (format!("line {}", i % 3), i, pts)
                })
                .collect(),
            points: vec![
                (0.0, 0.0, PointClass::Stable),
                (scale, 0.0, PointClass::Unstable),
            ],
        };
        let panels = [
            panel("first", 1.0),
            panel("second", 10.0),
            panel("third", 0.1),
        ];
        let p = line_panels(&dir.join("panels"), "three panels", &panels).unwrap();
        assert!(std::fs::metadata(&p.png).unwrap().len() > 1000);
        let svg = std::fs::read_to_string(&p.svg).unwrap();
        for t in ["three panels", "first", "second", "third"] {
            assert!(svg.contains(t), "{t}");
        }
        let empty = LinePanel {
            title: "nothing here".into(),
            ..Default::default()
        };
        let err = line_panels(&dir.join("bad"), "bad", &[empty]).unwrap_err();
        assert!(err.to_string().contains("nothing here"), "{err}");
    }

    /// A panel's legend goes in a corner free of lines, or, when some panel has none, on a row
    /// under every panel: the figure is then taller, and every label is still in it.
    #[test]
    fn line_panels_legend_covers_no_line() {
        let dir = std::env::temp_dir().join(format!("lrsmc-panel-legend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let panel = |lines: Vec<Vec<(f64, f64)>>| LinePanel {
            title: "p".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: lines
                .into_iter()
                .enumerate()
                .map(|(i, pts)| (format!("label {i}"), i, pts))
                .collect(),
            points: vec![],
        };
        let height = |stem: &str, panels: &[LinePanel]| {
            let out = line_panels(&dir.join(stem), "t", panels).unwrap();
            let svg = std::fs::read_to_string(&out.svg).unwrap();
            for i in 0..panels.iter().map(|p| p.lines.len()).max().unwrap_or(0) {
                assert!(svg.contains(&format!("label {i}")), "label {i} not drawn");
            }
            svg_size(&out.svg).1
        };
        // Lines along the bottom and the left edge: the upper right corner is free.
        let free = panel(vec![
            vec![(0.0, 0.0), (1.0, 0.0)],
            vec![(0.0, 0.0), (0.0, 1.0)],
        ]);
        assert_eq!(height("free", std::slice::from_ref(&free)), PANEL_HEIGHT);
        // A panel with a line along each edge has no free corner: every panel gets a row.
        let boxed = panel(vec![
            vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)],
            vec![(1.0, 1.0), (0.0, 1.0), (0.0, 0.0)],
        ]);
        assert_eq!(
            height("boxed", &[free.clone(), boxed.clone()]),
            PANEL_HEIGHT + panel_legend_row(1)
        );
        // Six long labels wrap to three lines under the panel (two of 134 px to a line).
        let mut many = boxed;
        for i in 2..6 {
            many.lines
                .push((format!("label {i} -0.159"), i, vec![(0.5, 0.5)]));
        }
        for (i, line) in many.lines.iter_mut().enumerate().take(2) {
            line.0 = format!("label {i} -0.159");
        }
        assert_eq!(
            height("many", &[free, many]),
            PANEL_HEIGHT + panel_legend_row(3)
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Legend entries fill lines up to the width; an entry wider than it stands alone.
    #[test]
    fn legend_wraps_to_the_width() {
        let entry = |label: &str| (LegendGlyph::Line(PALETTE[0]), label.to_string());
        // "mean s -0.159": 40 + 13 · 0.6 · 12 → 134 px.
        let six: Vec<_> = (0..6).map(|_| entry("mean s -0.159")).collect();
        assert_eq!(wrap_legend(&six, 390, 12), vec![0..2, 2..4, 4..6]);
        assert_eq!(wrap_legend(&six, 1000, 12), vec![0..6]);
        let wide = [entry("short"), entry(&"x".repeat(80)), entry("short")];
        assert_eq!(wrap_legend(&wide, 390, 12), vec![0..1, 1..2, 2..3]);
        assert!(wrap_legend(&[], 390, 12).is_empty());
    }

    #[test]
    fn line_plot_writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("lrsmc-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| (v / 5.0).sin()).collect();
        let p = line_plot(
            &dir.join("sine"),
            "sine",
            "t",
            "y",
            &[Series {
                reference_for: None,
                label: "sin".into(),
                x,
                y,
            }],
            false,
        )
        .unwrap();
        assert!(std::fs::metadata(&p.png).unwrap().len() > 1000);
        let svg = std::fs::read_to_string(&p.svg).unwrap();
        assert!(svg.contains("sine"));
        let err = line_plot(&dir.join("empty"), "e", "x", "y", &[], false);
        assert!(matches!(err, Err(PlotError::NoData { .. })));
        // Log axes with a dashed reference line: ticks in data units, the reference in the
        // colour of its line (the Okabe–Ito blue, #0072B2, the first palette colour).
        let k = vec![1.0, 10.0, 64.0];
        let sweep = [
            Series {
                label: "rz 0.05".into(),
                x: k.clone(),
                y: vec![0.095, 0.059, 0.052],
                reference_for: None,
            },
            Series {
                label: "rz 0.05: teacher".into(),
                x: k,
                y: vec![0.05; 3],
                reference_for: Some(0),
            },
        ];
        let axes = Axes {
            log_x: true,
            log_y: true,
            markers: true,
        };
        let p = line_plot_with(&dir.join("sweep"), "sweep", "K", "noise", &sweep, axes).unwrap();
        let svg = std::fs::read_to_string(&p.svg).unwrap();
        // (the SVG backend writes each text on a line of its own)
        for label in ["\n50\n", "\n0.05\n", "K (log scale)", "rz 0.05: teacher"] {
            assert!(svg.contains(label), "no {label:?} in the SVG");
        }
        assert!(
            !svg.contains("#D55E00"),
            "the reference line took its own colour"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn box_plot_writes_files_and_quartiles_match_numpy() {
        assert_eq!(
            quartiles(&[1.0, 2.0, 3.0, 4.0]),
            [1.0, 1.75, 2.5, 3.25, 4.0]
        );
        let dir = std::env::temp_dir().join(format!("lrsmc-box-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let groups = vec![
            BoxGroup::new("a", vec![1.0, 2.0, 3.0, 10.0]),
            BoxGroup::new("b", vec![2.0, f64::NAN, 2.5]),
        ];
        let p = box_plot(&dir.join("box"), "t", "y", &groups).unwrap();
        assert!(std::fs::metadata(&p.png).unwrap().len() > 1000);
        assert!(box_plot(&dir.join("e"), "t", "y", &[]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A mark is a bar at its value across the box, wider than it, in either layout; the
    /// value axis reaches it; a missing or non-finite one is not drawn.
    #[test]
    fn a_mark_is_a_bar_across_its_box_within_the_value_range() {
        let close =
            |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12;
        let up = box_shapes(&[1.0, 2.0, 3.0], Some(5.0), 2.0, false).unwrap();
        let [a, b] = up.mark.unwrap();
        assert!(
            close(a, (1.58, 5.0)) && close(b, (2.42, 5.0)),
            "{a:?} {b:?}"
        );
        let across = box_shapes(&[1.0, 2.0, 3.0], Some(5.0), 2.0, true).unwrap();
        let [a, b] = across.mark.unwrap();
        assert!(
            close(a, (5.0, 1.58)) && close(b, (5.0, 2.42)),
            "{a:?} {b:?}"
        );
        // Wider than the box (whose corners are 0.3 from its centre).
        assert!(up.fill[0].0 > 1.58 && up.fill[1].0 < 2.42);
        assert!(box_shapes(&[1.0], Some(f64::NAN), 0.0, false)
            .unwrap()
            .mark
            .is_none());
        assert!(box_shapes(&[1.0], None, 0.0, false).unwrap().mark.is_none());
        // No box is black, the marks' colour, however many there are.
        assert!((0..20).all(|i| box_colour(i) != plotters::style::BLACK));
        let mut g = BoxGroup::new("a", vec![1.0, 2.0]);
        g.mark = Some(5.0);
        let (_, hi) = finite_range(g.extent()).unwrap();
        assert!(hi >= 5.0);
        g.mark = Some(f64::INFINITY);
        let (_, hi) = finite_range(g.extent()).unwrap();
        assert!(hi < 5.0);
        // Drawn: the 3-px bar is in the figure with a mark and not without.
        let dir = std::env::temp_dir().join(format!("lrsmc-mark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        g.mark = Some(5.0);
        let with = box_plot(&dir.join("with"), "t", "y", std::slice::from_ref(&g)).unwrap();
        g.mark = None;
        let without = box_plot(&dir.join("without"), "t", "y", &[g]).unwrap();
        let bar = "stroke-width=\"3\"";
        assert!(std::fs::read_to_string(&with.svg).unwrap().contains(bar));
        assert!(!std::fs::read_to_string(&without.svg).unwrap().contains(bar));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The (width, height) an SVG figure declares.
    fn svg_size(path: &Path) -> (u32, u32) {
        let svg = std::fs::read_to_string(path).unwrap();
        let attr = |name: &str| {
            let at = svg.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            svg[at..at + svg[at..].find('"').unwrap()]
                .parse::<u32>()
                .unwrap()
        };
        (attr("width"), attr("height"))
    }

    /// Panels go three to a row, each row as tall as its panel with the most boxes; every
    /// group label and panel title is drawn (long ones cut with '…'); no panel or no finite
    /// value is an error.
    #[test]
    fn box_panels_lay_out_rows_of_panels() {
        let dir = std::env::temp_dir().join(format!("lrsmc-boxp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let group = |label: &str, values: &[f64]| BoxGroup::new(label, values.to_vec());
        let panel = |title: &str, n: usize| BoxPanel {
            title: title.into(),
            groups: (0..n)
                .map(|i| group(&format!("setup {i}"), &[i as f64, i as f64 + 1.0, 0.5]))
                .collect(),
        };
        let four = [
            panel("alpha", 2),
            panel("beta", 5),
            panel("gamma", 1),
            panel("delta", 3),
        ];
        let out = box_panels(&dir.join("four"), "t", "value", &four).unwrap();
        let (w, h) = svg_size(&out.svg);
        let label_width = text_width("setup 0", BOX_LABEL_FONT) + 12;
        assert_eq!(w, 3 * (label_width + BOX_PANEL_PLOT_WIDTH));
        assert_eq!(
            h,
            BOX_PANELS_TITLE + (BOX_PANEL_FRAME + 5 * BOX_ROW) + (BOX_PANEL_FRAME + 3 * BOX_ROW)
        );
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        for text in ["alpha", "beta", "gamma", "delta", "setup 0", "setup 4"] {
            assert!(svg.contains(text), "{text} not drawn");
        }
        let long = "x".repeat(200);
        let cut = [BoxPanel {
            title: "one".into(),
            groups: vec![group(&long, &[1.0, 2.0])],
        }];
        let out = box_panels(&dir.join("cut"), "t", "v", &cut).unwrap();
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        assert!(svg.contains('…') && !svg.contains(&long));
        assert_eq!(
            svg_size(&out.svg).0,
            BOX_PANEL_MAX_LABEL + BOX_PANEL_PLOT_WIDTH
        );
        assert!(box_panels(&dir.join("none"), "t", "v", &[]).is_err());
        let nan = [BoxPanel {
            title: "nan".into(),
            groups: vec![group("a", &[f64::NAN])],
        }];
        assert!(box_panels(&dir.join("nan"), "t", "v", &nan).is_err());
        // ... and beside others it is left out: the four panels' figure again.
        let five = [four.as_slice(), &nan].concat();
        let out = box_panels(&dir.join("five"), "t", "value", &five).unwrap();
        assert_eq!(svg_size(&out.svg), (w, h));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Square panels side by side with every finite point drawn; a panel without one, or no
    /// panel, is an error.
    #[test]
    fn scatter_panels_are_square_and_skip_non_finite_points() {
        let dir = std::env::temp_dir().join(format!("lrsmc-scat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let panel = |title: &str, points: Vec<(f64, f64)>| ScatterPanel {
            title: title.into(),
            x_label: "teacher".into(),
            y_label: "student".into(),
            points,
        };
        let panels = [
            panel("rates", vec![(0.1, 0.12), (0.3, 0.28), (f64::NAN, 1.0)]),
            panel("pairs", vec![(-0.2, -0.1), (0.5, 0.45)]),
        ];
        let out = scatter_panels(&dir.join("s"), "t", &panels).unwrap();
        assert_eq!(
            svg_size(&out.svg),
            (2 * SCATTER_PANEL, SCATTER_PANEL + BOX_PANELS_TITLE)
        );
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        assert_eq!(svg.matches("<circle").count(), 4, "the NaN point is drawn");
        let empty = [panel("none", vec![(f64::NAN, 0.0)])];
        assert!(scatter_panels(&dir.join("e"), "t", &empty).is_err());
        assert!(scatter_panels(&dir.join("n"), "t", &[]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One tick per bin with a spike (none for empty bins), panels stacked with a row per unit.
    #[test]
    fn raster_panels_draw_a_tick_per_spike_bin() {
        let dir = std::env::temp_dir().join(format!("lrsmc-rast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let polylines = |stem: &str, panels: &[RasterPanel]| {
            let out = raster_panels(&dir.join(stem), "t", (1.0, "time"), panels).unwrap();
            let svg = std::fs::read_to_string(&out.svg).unwrap();
            (svg.matches("<polyline").count(), svg_size(&out.svg))
        };
        let panel = |counts: Vec<Vec<f64>>| RasterPanel {
            title: "teacher".into(),
            counts,
        };
        let (few, size) = polylines(
            "few",
            &[panel(vec![vec![0.0, 1.0, 0.0], vec![2.0, 0.0, 0.0]])],
        );
        assert_eq!(
            size,
            (
                RASTER_WIDTH,
                BOX_PANELS_TITLE + RASTER_FRAME + 2 * RASTER_ROW
            )
        );
        let (more, _) = polylines(
            "more",
            &[panel(vec![vec![1.0, 1.0, 0.0], vec![2.0, 3.0, 1.0]])],
        );
        assert_eq!(more - few, 3, "one tick per bin with a spike");
        let two = [panel(vec![vec![1.0; 3]; 4]), panel(vec![vec![0.0; 3]; 6])];
        let (_, size) = polylines("two", &two);
        assert_eq!(
            size.1,
            BOX_PANELS_TITLE + 2 * RASTER_FRAME + 10 * RASTER_ROW
        );
        let none = raster_panels(&dir.join("none"), "t", (1.0, "time"), &[panel(vec![])]);
        assert!(none.is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A box plot whose labels fit under their boxes keeps the Fig S7 layout (520 px tall);
    /// with more or longer labels than fit it lays its boxes across, one row each.
    #[test]
    fn box_plot_lays_boxes_across_when_labels_do_not_fit() {
        let dir = std::env::temp_dir().join(format!("lrsmc-boxa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let groups = |n: usize, label: &str| -> Vec<BoxGroup> {
            (0..n)
                .map(|i| BoxGroup::new(format!("{label} {i}"), vec![i as f64, 2.0 * i as f64]))
                .collect()
        };
        let few = box_plot(&dir.join("few"), "t", "y", &groups(3, "rank-3")).unwrap();
        assert_eq!(svg_size(&few.svg), (3 * BOX_SLOT, 520));
        let many = box_plot(
            &dir.join("many"),
            "t",
            "y",
            &groups(40, "osc_continuous_optimal"),
        );
        let (_, h) = svg_size(&many.unwrap().svg);
        assert_eq!(h, BOX_PANELS_TITLE + BOX_PANEL_FRAME + 40 * BOX_ROW);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn trace_panels_write_files() {
        let dir = std::env::temp_dir().join(format!("lrsmc-traces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let panels: Vec<TracePanel> = (0..3)
            .map(|c| TracePanel {
                label: format!("ch{c}"),
                first: (0..200)
                    .map(|t| (t as f64 * 0.1 + c as f64).sin())
                    .collect(),
                second: (0..200).map(|t| (t as f64 * 0.11).cos()).collect(),
            })
            .collect();
        let p = trace_panels(
            &dir.join("tr"),
            "traces",
            ("data", "model"),
            (1.0 / 160.0, "time (s)"),
            &panels,
        )
        .unwrap();
        assert!(std::fs::metadata(&p.png).unwrap().len() > 1000);
        assert!(trace_panels(&dir.join("e"), "t", ("a", "b"), (1.0, "t"), &[]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn log_ticks_are_round_values_inside_the_range() {
        assert_eq!(log_ticks(0.8, 78.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(log_ticks(0.04, 0.26), vec![0.05, 0.1, 0.2]);
        assert_eq!(log_ticks(3e-7, 2e-2), vec![1e-6, 1e-5, 1e-4, 1e-3, 1e-2]);
        assert_eq!(log_ticks(3.0, 4.0), vec![3.0, 4.0]);
        assert!(log_ticks(-1.0, 4.0).is_empty());
        let labels: Vec<String> = [64.0, 1.0, 0.05, 0.2, 1.5e-6, 2.5, 0.1234567]
            .iter()
            .map(|&v| tick_label(v))
            .collect();
        assert_eq!(
            labels,
            ["64", "1", "0.05", "0.2", "1.5e-6", "2.5", "0.1235"]
        );
    }

    #[test]
    fn linear_tick_labels_have_the_decimals_of_their_axis() {
        let label = |v: f64, lo: f64, hi: f64| linear_tick_label(v, lo, hi);
        // Whole steps without ".0"; a rounding residue at zero is "0", not "-0.0" or 2.8e-17.
        assert_eq!(label(10.0, 0.0, 100.0), "10");
        assert_eq!(label(-2.7755575615628914e-17, -0.6, 1.0), "0");
        assert_eq!(label(-0.0, -0.6, 1.0), "0");
        assert_eq!(label(0.30000000000000004, -0.6, 1.0), "0.3");
        assert_eq!(label(-0.6, -0.6, 1.0), "-0.6");
        // Steps of a quarter keep their second decimal.
        assert_eq!(label(0.25, 0.0, 1.0), "0.25");
        assert_eq!(label(2.5, 0.0, 10.0), "2.5");
        assert_eq!(label(1500.0, 0.0, 1500.0), "1500");
        // Tiny spans and huge values fall back to `tick_label`.
        assert_eq!(label(1e-5, 0.0, 1e-4), tick_label(1e-5));
        assert_eq!(label(2e7, 0.0, 3e7), tick_label(2e7));
    }

    #[test]
    fn the_legend_goes_to_the_corner_with_the_least_data() {
        use plotters::chart::SeriesLabelPosition as P;
        let area = (0..400, 0..300);
        let size = (100, 50);
        let name = |p: P| format!("{p:?}");
        // Nothing drawn: upper right, plotters' usual place.
        assert_eq!(
            name(quiet_corner(&[], area.clone(), size).0),
            name(P::UpperRight)
        );
        // A line along the top: a lower corner.
        let mut top = Vec::new();
        sample_polyline([(0, 20), (400, 20)], &mut top);
        assert_eq!(
            name(quiet_corner(&top, area.clone(), size).0),
            name(P::LowerRight)
        );
        // Only the lower left free: there.
        let mut most = top.clone();
        sample_polyline([(200, 0), (200, 300)], &mut most);
        sample_polyline([(250, 290), (400, 250)], &mut most);
        let (corner, covered) = quiet_corner(&most, area.clone(), size);
        assert_eq!((name(corner), covered), (name(P::LowerLeft), 0));
        // Lines through every corner: the least covered one, and a count above zero.
        let mut all = most.clone();
        sample_polyline([(0, 280), (120, 280)], &mut all);
        assert!(quiet_corner(&all, area.clone(), size).1 > 0);
        // A line across the upper right box with both ends outside it counts through the
        // points sampled along it.
        let mut crossing = Vec::new();
        sample_polyline([(250, 30), (450, 30)], &mut crossing);
        assert_eq!(
            name(quiet_corner(&crossing, area.clone(), size).0),
            name(P::UpperLeft)
        );
    }

    /// A line plot's legend stays inside while a corner is free of lines and moves beside the
    /// plot (a wider figure) when every corner has some.
    #[test]
    fn line_plot_legend_covers_no_line() {
        let dir = std::env::temp_dir().join(format!("lrsmc-legend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |label: &str, x: Vec<f64>, y: Vec<f64>| Series {
            label: label.into(),
            x,
            y,
            reference_for: None,
        };
        let width = |stem: &str, series: &[Series]| {
            let out = line_plot(&dir.join(stem), "t", "x", "y", series, false).unwrap();
            let svg = std::fs::read_to_string(&out.svg).unwrap();
            for s in series {
                assert!(
                    svg.contains(s.label.as_str()),
                    "{} not in the legend",
                    s.label
                );
            }
            let at = svg.find("width=\"").unwrap() + 7;
            svg[at..at + svg[at..].find('"').unwrap()]
                .parse::<u32>()
                .unwrap()
        };
        // A line along the bottom and a short one at the top's middle: the upper corners are
        // free.
        let low = [
            line("a", vec![0.0, 1.0], vec![0.0, 0.0]),
            line("b", vec![0.4, 0.6], vec![1.0, 1.0]),
            line("c", vec![0.0, 1.0], vec![1.0, 1.0]),
        ];
        assert_eq!(width("low", &low[..2]), LINE_PLOT_SIZE.0);
        // And a third along the top: every corner has a line.
        assert!(width("all", &low) > LINE_PLOT_SIZE.0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The legend of a phase portrait sits beside the plot: the figure is wider than the plot
    /// and its legend's labels are in the SVG.
    #[test]
    fn phase_portrait_legend_sits_beside_the_plot() {
        let dir = std::env::temp_dir().join(format!("lrsmc-portrait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fig = PhasePortrait {
            x_range: (-2.0, 2.0),
            y_range: (-2.0, 2.0),
            arrows: vec![((0.0, 0.0), (0.1, 0.1))],
            nullclines: [
                vec![((-2.0, 0.0), (2.0, 0.0))],
                vec![((0.0, -2.0), (0.0, 2.0))],
            ],
            // Where plotters' default (middle right) legend used to cover it.
            points: vec![
                (1.8, 0.0, PointClass::Stable),
                (0.0, 0.0, PointClass::Unstable),
            ],
            paths: vec![("a run".into(), 0, vec![(0.0, 0.0), (1.0, 1.0)])],
        };
        let out = phase_portrait(&dir.join("p"), "t", ("z1", "z2"), &fig).unwrap();
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        for label in ["Δz1 = 0", "Δz2 = 0", "a run", "stable", "unstable"] {
            assert!(svg.contains(label), "{label} missing from the legend");
        }
        assert!(svg.contains(&format!(
            "width=\"{}\"",
            PORTRAIT_PLOT_WIDTH + PORTRAIT_LEGEND_WIDTH
        )));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn finite_range_skips_nan() {
        let v = [f64::NAN, 1.0, 3.0];
        let (lo, hi) = finite_range(v.iter()).unwrap();
        assert!(lo < 1.0 && hi > 3.0);
        assert!(finite_range([f64::NAN].iter()).is_none());
    }
}

/// A line segment between two points.
pub type Segment = ((f64, f64), (f64, f64));

/// Stability class of a point in a [`phase_portrait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointClass {
    /// Filled disc.
    Stable,
    /// Open circle.
    Unstable,
    /// Filled square (|ρ − 1| within tolerance).
    Marginal,
}

/// What a 2-D phase portrait shows: a flow field, nullcline segments per latent dimension and
/// the fixed points.
#[derive(Debug, Clone)]
pub struct PhasePortrait {
    /// x range (first latent).
    pub x_range: (f64, f64),
    /// y range (second latent).
    pub y_range: (f64, f64),
    /// Arrows: start point and displacement (already scaled to the plot).
    pub arrows: Vec<Segment>,
    /// Nullcline segments of Δz₁ = 0 (index 0) and Δz₂ = 0 (index 1).
    pub nullclines: [Vec<Segment>; 2],
    /// Fixed points.
    pub points: Vec<(f64, f64, PointClass)>,
    /// Trajectories drawn over the flow (legend label, colour index, points), e.g. a noisy
    /// run of the model and where its noise-free dynamics settle.
    pub paths: Vec<PanelLine>,
}

/// Width in pixels of a [`phase_portrait`]'s plot (the square-ish area with the axes).
const PORTRAIT_PLOT_WIDTH: u32 = 760;
/// Width in pixels of the legend beside it.
const PORTRAIT_LEGEND_WIDTH: u32 = 200;

/// A legend entry's mark.
#[derive(Clone, Copy)]
enum LegendGlyph {
    /// A line of this colour (a nullcline or a trajectory).
    Line(plotters::style::RGBColor),
    /// A dashed line of this colour (a reference value).
    Dash(plotters::style::RGBColor),
    /// A fixed point's marker.
    Point(PointClass),
}

/// Draws legend entries on `area` from `at` (the first glyph's left end, on the first row's
/// centre line): one per row, or side by side with `horizontal`.
fn draw_legend<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(LegendGlyph, String)],
    at: (i32, i32),
    horizontal: bool,
    font: u32,
) -> Result<(), plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let black = RGBColor(0, 0, 0);
    let text = (FONT, font)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (mut x, mut y) = at;
    for (glyph, label) in entries {
        match *glyph {
            LegendGlyph::Line(colour) => area.draw(&PathElement::new(
                vec![(x, y), (x + 18, y)],
                colour.stroke_width(2),
            )),
            LegendGlyph::Dash(colour) => area
                .draw(&PathElement::new(
                    vec![(x, y), (x + 7, y)],
                    colour.stroke_width(2),
                ))
                .and_then(|()| {
                    area.draw(&PathElement::new(
                        vec![(x + 11, y), (x + 18, y)],
                        colour.stroke_width(2),
                    ))
                }),
            LegendGlyph::Point(PointClass::Stable) => {
                area.draw(&Circle::new((x + 9, y), 5, black.filled()))
            }
            LegendGlyph::Point(PointClass::Unstable) => {
                area.draw(&Circle::new((x + 9, y), 5, black.stroke_width(2)))
            }
            LegendGlyph::Point(PointClass::Marginal) => area.draw(&Rectangle::new(
                [(x + 4, y - 5), (x + 14, y + 5)],
                PALETTE[4].filled(),
            )),
        }?;
        area.draw(&Text::new(label.as_str(), (x + 26, y), text.clone()))?;
        if horizontal {
            x += legend_size([label.as_str()], font).0;
        } else {
            y += font as i32 + 9;
        }
    }
    Ok(())
}

/// A phase portrait (flow arrows, nullclines, trajectories, fixed points by stability), PNG +
/// SVG. The legend sits beside the plot, so it hides none of it.
pub fn phase_portrait(
    stem: &Path,
    title: &str,
    axes: (&str, &str),
    fig: &PhasePortrait,
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let (x0, x1) = fig.x_range;
    let (y0, y1) = fig.y_range;
    if !(x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite() && x1 > x0 && y1 > y0)
    {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "the phase portrait's range is empty or not finite".into(),
        });
    }
    let grey = RGBColor(120, 120, 120);
    let black = RGBColor(0, 0, 0);
    // The legend's entries, drawn beside the plot (never over the flow, nullclines or points).
    let mut legend: Vec<(LegendGlyph, String)> = Vec::new();
    for q in 0..2 {
        if !fig.nullclines[q].is_empty() {
            legend.push((
                LegendGlyph::Line(PALETTE[q + 1]),
                format!("Δz{} = 0", q + 1),
            ));
        }
    }
    for (label, colour, _) in &fig.paths {
        if !label.is_empty() {
            let colour = PALETTE[*colour % PALETTE.len()];
            legend.push((LegendGlyph::Line(colour), label.clone()));
        }
    }
    for (class, label) in [
        (PointClass::Stable, "stable"),
        (PointClass::Unstable, "unstable"),
        (PointClass::Marginal, "marginal"),
    ] {
        if fig.points.iter().any(|p| p.2 == class) {
            legend.push((LegendGlyph::Point(class), label.to_string()));
        }
    }
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let body = root.titled(title, (FONT, 20)).map_err(draw_err($path))?;
            let (plot_area, legend_area) = body.split_horizontally(PORTRAIT_PLOT_WIDTH);
            let mut chart = ChartBuilder::on(&plot_area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(draw_err($path))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_label_formatter(&|v: &f64| linear_tick_label(*v, x0, x1))
                .y_label_formatter(&|v: &f64| linear_tick_label(*v, y0, y1))
                .x_desc(axes.0)
                .y_desc(axes.1)
                .label_style((FONT, 13))
                .draw()
                .map_err(draw_err($path))?;
            for &((x, y), (dx, dy)) in &fig.arrows {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, y), (x + dx, y + dy)],
                        grey.stroke_width(1),
                    )))
                    .map_err(draw_err($path))?;
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (x + dx, y + dy),
                        2,
                        grey.filled(),
                    )))
                    .map_err(draw_err($path))?;
            }
            for (q, segs) in fig.nullclines.iter().enumerate() {
                let colour = PALETTE[q + 1];
                for &(a, b) in segs {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![a, b],
                            colour.stroke_width(2),
                        )))
                        .map_err(draw_err($path))?;
                }
            }
            for (_, colour, points) in &fig.paths {
                let colour = PALETTE[*colour % PALETTE.len()];
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        points.clone(),
                        colour.stroke_width(1),
                    )))
                    .map_err(draw_err($path))?;
            }
            for class in [
                PointClass::Stable,
                PointClass::Unstable,
                PointClass::Marginal,
            ] {
                let pts: Vec<(f64, f64)> = fig
                    .points
                    .iter()
                    .filter(|p| p.2 == class)
                    .map(|p| (p.0, p.1))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                match class {
                    PointClass::Stable => {
                        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 6, black.filled())))
                    }
                    PointClass::Unstable => chart.draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, 6, black.stroke_width(2))),
                    ),
                    PointClass::Marginal => chart.draw_series(pts.iter().map(|&(x, y)| {
                        EmptyElement::at((x, y))
                            + Rectangle::new([(-5, -5), (5, 5)], PALETTE[4].filled())
                    })),
                }
                .map_err(draw_err($path))?;
            }
            // The legend, top left of the area beside the plot.
            draw_legend(&legend_area, &legend, (6, 40), false, 13).map_err(draw_err($path))?;
            root.present().map_err(draw_err($path))?;
        }};
    }
    let size = (PORTRAIT_PLOT_WIDTH + PORTRAIT_LEGEND_WIDTH, 700);
    draw!(BitMapBackend::new(&paths.png, size), &paths.png);
    draw!(SVGBackend::new(&paths.svg, size), &paths.svg);
    Ok(paths)
}

/// One line of a [`LinePanel`]: (legend label, colour index, points).
pub type PanelLine = (String, usize, Vec<(f64, f64)>);

/// One panel of [`line_panels`]: coloured lines (one per group, e.g. a trial's coherence) and
/// fixed points drawn on top.
#[derive(Debug, Clone, Default)]
pub struct LinePanel {
    /// Panel title.
    pub title: String,
    /// Axis labels.
    pub x_label: String,
    /// Axis labels.
    pub y_label: String,
    /// (legend label, colour index, points); lines with equal labels share one legend entry,
    /// lines with an empty label have none.
    pub lines: Vec<PanelLine>,
    /// Fixed points (x, y, class).
    pub points: Vec<(f64, f64, PointClass)>,
}

/// Panels side by side (Fig S6 style: stimulus, teacher and student phase planes), PNG + SVG.
/// Each panel's legend sits in its corner that covers no line or point (found by drawing the
/// figure once in memory); when some panel has no such corner, every legend goes on a row under
/// its panel instead.
pub fn line_panels(
    stem: &Path,
    title: &str,
    panels: &[LinePanel],
) -> Result<FigurePaths, PlotError> {
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let mut ranges = Vec::with_capacity(panels.len());
    for p in panels {
        let xs = p.lines.iter().flat_map(|l| l.2.iter().map(|q| q.0));
        let ys = p.lines.iter().flat_map(|l| l.2.iter().map(|q| q.1));
        let xs: Vec<f64> = xs.chain(p.points.iter().map(|q| q.0)).collect();
        let ys: Vec<f64> = ys.chain(p.points.iter().map(|q| q.1)).collect();
        match (finite_range(xs.iter()), finite_range(ys.iter())) {
            (Some(x), Some(y)) => ranges.push((x, y)),
            _ => {
                return Err(PlotError::NoData {
                    path: paths.png.clone(),
                    message: format!("panel `{}` has no finite points", p.title),
                })
            }
        }
    }
    if panels.is_empty() {
        return Err(PlotError::NoData {
            path: paths.png.clone(),
            message: "no panels".into(),
        });
    }
    let black = RGBColor(0, 0, 0);
    // Each panel's legend: one entry per distinct non-empty label, in the colour of its first
    // line.
    let legends: Vec<Vec<(LegendGlyph, String)>> = panels
        .iter()
        .map(|p| {
            let mut entries: Vec<(LegendGlyph, String)> = Vec::new();
            for (label, colour, _) in &p.lines {
                if !label.is_empty() && !entries.iter().any(|(_, l)| l == label) {
                    let colour = PALETTE[colour % PALETTE.len()];
                    entries.push((LegendGlyph::Line(colour), label.clone()));
                }
            }
            entries
        })
        .collect();
    let width = PANEL_WIDTH * panels.len() as u32;
    // Under the panels, a legend wraps to lines as wide as its panel.
    let legend_lines: Vec<Vec<std::ops::Range<usize>>> = legends
        .iter()
        .map(|l| wrap_legend(l, PANEL_WIDTH as i32 - 70, 12))
        .collect();
    let row_height = panel_legend_row(legend_lines.iter().map(Vec::len).max().unwrap_or(0));
    // `place`: Probe (the in-memory pass: how many drawn points the best corner of each panel
    // would cover, the most over the panels), Inside (each legend in that corner) or Beside
    // (each legend on a row under its panel, where it covers nothing).
    macro_rules! draw {
        ($backend:expr, $path:expr, $place:expr) => {{
            let place: LegendPlace = $place;
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let root = root.titled(title, (FONT, 20)).map_err(draw_err($path))?;
            let areas = root.split_evenly((1, panels.len()));
            let mut most_covered = 0;
            for ((((area, p), &((x0, x1), (y0, y1))), legend), lines) in areas
                .iter()
                .zip(panels)
                .zip(&ranges)
                .zip(&legends)
                .zip(&legend_lines)
            {
                let (area, row) = match place {
                    LegendPlace::Beside => {
                        let h = area.dim_in_pixel().1 as i32;
                        let (a, r) = area.split_vertically(h - row_height as i32);
                        (a, Some(r))
                    }
                    _ => (area.clone(), None),
                };
                let mut chart = ChartBuilder::on(&area)
                    .caption(&p.title, (FONT, 16))
                    .margin(10)
                    .x_label_area_size(40)
                    .y_label_area_size(55)
                    .build_cartesian_2d(x0..x1, y0..y1)
                    .map_err(draw_err($path))?;
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .x_label_formatter(&|v: &f64| linear_tick_label(*v, x0, x1))
                    .y_label_formatter(&|v: &f64| linear_tick_label(*v, y0, y1))
                    .x_desc(p.x_label.as_str())
                    .y_desc(p.y_label.as_str())
                    .label_style((FONT, 12))
                    .draw()
                    .map_err(draw_err($path))?;
                let mut seen: Vec<&str> = Vec::new();
                for (label, colour, pts) in &p.lines {
                    let colour = PALETTE[colour % PALETTE.len()];
                    // Width 1: plotters joins thick segments with mitres, and a noisy
                    // trajectory that turns back on itself grows spikes across the figure.
                    let s = chart
                        .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(1)))
                        .map_err(draw_err($path))?;
                    if !label.is_empty() && !seen.contains(&label.as_str()) {
                        seen.push(label);
                        s.label(label.clone()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                        });
                    }
                }
                for &(x, y, class) in &p.points {
                    match class {
                        PointClass::Stable => chart.draw_series(std::iter::once(Circle::new(
                            (x, y),
                            6,
                            black.filled(),
                        ))),
                        _ => chart.draw_series(std::iter::once(Circle::new(
                            (x, y),
                            6,
                            black.stroke_width(2),
                        ))),
                    }
                    .map_err(draw_err($path))?;
                }
                if legend.is_empty() {
                    continue;
                }
                if let Some(row) = row {
                    for (i, line) in lines.iter().enumerate() {
                        let y = (PANEL_LEGEND_PAD + PANEL_LEGEND_LINE * i as u32) as i32
                            + PANEL_LEGEND_LINE as i32 / 2;
                        draw_legend(&row, &legend[line.clone()], (60, y), true, 12)
                            .map_err(draw_err($path))?;
                    }
                    continue;
                }
                let mut drawn = Vec::new();
                for (_, _, pts) in &p.lines {
                    sample_polyline(pts.iter().map(|q| chart.backend_coord(q)), &mut drawn);
                }
                for &(x, y, _) in &p.points {
                    drawn.push(chart.backend_coord(&(x, y)));
                }
                let size = legend_size(legend.iter().map(|(_, l)| l.as_str()), 12);
                let area = chart.plotting_area().get_pixel_range();
                let (corner, covered) = quiet_corner(&drawn, area, size);
                most_covered = most_covered.max(covered);
                if let LegendPlace::Inside = place {
                    chart
                        .configure_series_labels()
                        .position(corner)
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK)
                        .label_font((FONT, 12))
                        .draw()
                        .map_err(draw_err($path))?;
                }
            }
            root.present().map_err(draw_err($path))?;
            most_covered
        }};
    }
    let mut buffer = vec![0u8; width as usize * PANEL_HEIGHT as usize * 3];
    let covered = draw!(
        BitMapBackend::with_buffer(&mut buffer, (width, PANEL_HEIGHT)),
        &paths.png,
        LegendPlace::Probe
    );
    let (place, size) = if covered == 0 {
        (LegendPlace::Inside, (width, PANEL_HEIGHT))
    } else {
        (LegendPlace::Beside, (width, PANEL_HEIGHT + row_height))
    };
    draw!(BitMapBackend::new(&paths.png, size), &paths.png, place);
    draw!(SVGBackend::new(&paths.svg, size), &paths.svg, place);
    Ok(paths)
}

/// Height in pixels of a [`line_panels`] figure without legend rows.
const PANEL_HEIGHT: u32 = 480;
/// Width in pixels of one of [`line_panels`]' panels.
const PANEL_WIDTH: u32 = 460;
/// Height of one line of a legend under a [`line_panels`] panel.
const PANEL_LEGEND_LINE: u32 = 20;
/// Space above and below those lines.
const PANEL_LEGEND_PAD: u32 = 4;

/// Height of the row under each [`line_panels`] panel that holds its legend, `lines` lines
/// tall (used when every corner of some panel would cover a line).
fn panel_legend_row(lines: usize) -> u32 {
    2 * PANEL_LEGEND_PAD + PANEL_LEGEND_LINE * lines as u32
}

/// Legend entries split into lines, side by side, of at most `width` pixels each (an entry
/// wider than that gets a line of its own): the index ranges of the lines.
fn wrap_legend(
    entries: &[(LegendGlyph, String)],
    width: i32,
    font: u32,
) -> Vec<std::ops::Range<usize>> {
    let mut lines = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, (_, label)) in entries.iter().enumerate() {
        let w = legend_size([label.as_str()], font).0;
        if i > start && used + w > width {
            lines.push(start..i);
            (start, used) = (i, 0);
        }
        used += w;
    }
    if start < entries.len() {
        lines.push(start..entries.len());
    }
    lines
}
