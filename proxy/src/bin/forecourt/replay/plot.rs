//! Plots of a replay (SVG and PNG, with `plotters`): load, Forecourt's forecast and each policy's
//! ready capacity over time, and the cost-versus-waiting curve of the utilisation sweep.
//!
//! Text needs a TrueType font: DejaVu Sans (Debian's `fonts-dejavu-core`) or any font named by
//! `FORECOURT_FONT`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use forecourt_orchestrator::replay::RunReport;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Where a TrueType font is looked for, in order.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for chart text, once.
fn register_font() -> anyhow::Result<()> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let paths: Vec<PathBuf> = std::env::var_os("FORECOURT_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from))
            .collect();
        let bytes = paths
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                "no TrueType font found for plots: install fonts-dejavu-core or set FORECOURT_FONT"
                    .to_owned()
            })?;
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the font file is not a usable TrueType font".to_owned())
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// One policy's timeline for the load plot.
pub struct Timeline<'a> {
    /// Policy label.
    pub policy: &'a str,
    /// Its run (every service summed is not meaningful; the first service is plotted).
    pub run: &'a RunReport,
}

/// One policy's points on the cost-versus-waiting curve: (instance-seconds, waited %).
pub struct Curve<'a> {
    /// Policy label.
    pub policy: &'a str,
    /// Points in utilisation order.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// A plotters error as an `anyhow` error (plotters' errors borrow the backend's error type).
fn plot_error(error: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

/// Draws the legend and writes the chart out.
fn finish<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    area.present().map_err(plot_error)
}

fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    timelines: &[Timeline<'_>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(plot_error)?;
    let Some(first) = timelines.first() else {
        bail!("nothing to plot");
    };
    let end = first.run.timeline.last().map_or(1, |p| p.t + 1) as f64 / 3_600.0;
    let top = timelines
        .iter()
        .flat_map(|t| t.run.timeline.iter())
        .map(|p| p.load.max(p.ready_capacity).max(p.forecast.unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("hours into the trace")
        .y_desc("requests per second")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    let hours = |t: u64| t as f64 / 3_600.0;
    chart
        .draw_series(LineSeries::new(
            first.run.timeline.iter().map(|p| (hours(p.t), p.load)),
            BLACK.stroke_width(1),
        ))
        .map_err(plot_error)?
        .label("load")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    for (i, t) in timelines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                t.run
                    .timeline
                    .iter()
                    .map(|p| (hours(p.t), p.ready_capacity)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(format!("{} ready capacity", t.policy))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        if t.run.timeline.iter().any(|p| p.forecast.is_some()) {
            let faint = color.mix(0.5);
            chart
                .draw_series(LineSeries::new(
                    t.run
                        .timeline
                        .iter()
                        .filter_map(|p| Some((hours(p.t), p.forecast?))),
                    faint.stroke_width(1),
                ))
                .map_err(plot_error)?
                .label(format!("{} forecast (upper)", t.policy))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], faint));
        }
    }
    finish(&mut chart, area)
}

fn draw_curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &[Curve<'_>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(plot_error)?;
    let points = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_max, mut y_max) = (1.0f64, 0.001f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(
            "cost versus waiting (utilisation sweep)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("instance-hours")
        .y_desc("requests that waited (%)")
        .x_label_formatter(&|x| format!("{:.0}", x / 3_600.0))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(curve.policy)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart
            .draw_series(
                curve
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )
            .map_err(plot_error)?;
    }
    finish(&mut chart, area)
}

/// Writes `timeline.svg`, `timeline.png`, `tradeoff.svg` and `tradeoff.png` into `dir`.
pub fn write_plots(
    dir: &Path,
    title: &str,
    timelines: &[Timeline<'_>],
    curves: &[Curve<'_>],
) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("unable to create {}", dir.display()))?;
    let size = (1200, 600);
    let files = [
        dir.join("timeline.svg"),
        dir.join("timeline.png"),
        dir.join("tradeoff.svg"),
        dir.join("tradeoff.png"),
    ];
    draw_timeline(
        &SVGBackend::new(&files[0], size).into_drawing_area(),
        title,
        timelines,
    )?;
    draw_timeline(
        &BitMapBackend::new(&files[1], size).into_drawing_area(),
        title,
        timelines,
    )?;
    draw_curve(
        &SVGBackend::new(&files[2], size).into_drawing_area(),
        curves,
    )?;
    draw_curve(
        &BitMapBackend::new(&files[3], size).into_drawing_area(),
        curves,
    )?;
    Ok(files.to_vec())
}

#[cfg(test)]
mod tests {
    use forecourt_orchestrator::replay::{FleetStats, TimelinePoint};

    use super::*;

    #[test]
    fn writes_svg_and_png_files() {
        let run = RunReport {
            policy: "forecourt".to_owned(),
            stats: FleetStats::default(),
            timeline: (0..100u64)
                .map(|i| TimelinePoint {
                    t: i * 60,
                    load: (i as f64 / 10.0).sin().abs() * 50.0,
                    forecast: Some(55.0),
                    ready_capacity: 60.0,
                })
                .collect(),
            stepped_seconds: 6_000,
        };
        let dir = std::env::temp_dir().join(format!("forecourt-plot-{}", std::process::id()));
        let files = write_plots(
            &dir,
            "test",
            &[Timeline {
                policy: "forecourt",
                run: &run,
            }],
            &[Curve {
                policy: "forecourt",
                points: vec![(3_600.0, 1.0), (7_200.0, 0.1)],
            }],
        )
        .expect("plots");
        let svg = std::fs::read_to_string(&files[0]).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("forecourt ready capacity"));
        let png = std::fs::read(&files[1]).expect("png");
        assert!(png.starts_with(b"\x89PNG"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
