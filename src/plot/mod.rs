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
    use plotters::prelude::*;
    register_font();
    let paths = FigurePaths::new(stem);
    let tf = |v: f64| if log_y { v.log10() } else { v };
    let xr = finite_range(series.iter().flat_map(|s| s.x.iter()));
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
    macro_rules! draw {
        ($backend:expr, $path:expr) => {{
            let root = $backend.into_drawing_area();
            root.fill(&WHITE).map_err(draw_err($path))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, (FONT, 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(draw_err($path))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(if log_y {
                    format!("log10 {y_label}")
                } else {
                    y_label.to_string()
                })
                .label_style((FONT, 13))
                .draw()
                .map_err(draw_err($path))?;
            for (i, s) in series.iter().enumerate() {
                let colour = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> =
                    s.x.iter()
                        .zip(&s.y)
                        .map(|(&x, &y)| (x, tf(y)))
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .collect();
                chart
                    .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                    .map_err(draw_err($path))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            if series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font((FONT, 13))
                    .draw()
                    .map_err(draw_err($path))?;
            }
            root.present().map_err(draw_err($path))?;
        }};
    }
    draw!(BitMapBackend::new(&paths.png, (900, 560)), &paths.png);
    draw!(SVGBackend::new(&paths.svg, (900, 560)), &paths.svg);
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

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
