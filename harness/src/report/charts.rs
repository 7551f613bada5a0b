//! Charts with plotters: one chart holds every backend on one axis scale; a line per backend
//! with its interval of the median as error bars (a 95% CI from 6 samples on, the samples'
//! range below); log scales (base 2 for sizes and counts, base 10 for values) where a sweep
//! spans orders of magnitude. Each chart is written as SVG and PNG.
//!
//! Log axes are drawn as linear axes over log values with formatted tick labels, so one
//! coordinate type serves all four combinations.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use cowbench_workloads::metric::sig3;
use cowbench_workloads::{ParamKind, Unit};

#[derive(Debug, Clone, Serialize)]
pub struct SPoint {
    pub x: f64,
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<SPoint>,
    /// Drawn dashed without a band (e.g. a tail percentile beside the median).
    #[serde(default)]
    pub dashed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChartSpec {
    /// File stem (unique within a report).
    pub id: String,
    pub title: String,
    /// Swept parameter (unit in the name) or, with `categories`, what the categories are.
    pub x_name: String,
    /// Metric on the y axis (unit in the name).
    pub metric: String,
    /// The metric's unit (from its spec): y tick labels, axis label, log base. None: a metric
    /// no workload declares, drawn as plain numbers.
    pub y_unit: Option<Unit>,
    /// The kind of the swept parameter (from its spec): x tick labels.
    pub x_kind: Option<ParamKind>,
    /// Categorical x: point x values are indices into this.
    pub categories: Option<Vec<String>>,
    pub series: Vec<Series>,
}

/// Where a chart was written.
#[derive(Debug, Clone, Serialize)]
pub struct ChartFiles {
    pub id: String,
    pub title: String,
    pub png: PathBuf,
    pub svg: PathBuf,
}

const W: u32 = 960;
const H: u32 = 540;

/// Colour of a backend, stable across charts and reports: the registry's backends by their
/// place in its table, anything else (a user's series) from a second palette.
pub fn driver_color(name: &str, i: usize) -> RGBColor {
    const BACKENDS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(127, 127, 127),
    ];
    const OTHERS: [RGBColor; 5] =
        [RGBColor(23, 190, 207), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(188, 189, 34), RGBColor(0, 0, 0)];
    let base = name.split([' ', '@', '/']).next().unwrap_or(name);
    match cowbench_drivers::registry::DRIVERS.iter().position(|d| *d == base) {
        Some(k) => BACKENDS[k % BACKENDS.len()],
        None => OTHERS[i % OTHERS.len()],
    }
}

struct Axes {
    log_x: bool,
    log_y: bool,
    /// Base of the log y axis: 2 for bytes (ticks at 4 KiB, 16 KiB …), 10 otherwise.
    y_base: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

fn axes(spec: &ChartSpec) -> Option<Axes> {
    let pts: Vec<&SPoint> = spec.series.iter().flat_map(|s| s.points.iter()).collect();
    if pts.is_empty() {
        return None;
    }
    let xs: Vec<f64> = pts.iter().map(|p| p.x).collect();
    let (xmin, xmax) = (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(f64::MIN, f64::max));
    let log_x = spec.categories.is_none() && xmin > 0.0 && xmax / xmin >= 16.0;
    let ys: Vec<f64> = pts.iter().flat_map(|p| [p.lo, p.median, p.hi]).filter(|v| v.is_finite()).collect();
    let (ymin, ymax) = (ys.iter().copied().fold(f64::MAX, f64::min), ys.iter().copied().fold(f64::MIN, f64::max));
    let pos_min = ys.iter().copied().filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
    let log_y = pos_min < f64::MAX && ymax / pos_min >= 50.0 && ymin >= 0.0;
    let (x0, x1) = if let Some(c) = &spec.categories {
        (-0.6, c.len() as f64 - 0.4)
    } else if log_x {
        let (a, b) = (xmin.log2(), xmax.log2());
        let pad = (b - a) * 0.04;
        (a - pad, b + pad)
    } else if xmax > xmin {
        let pad = (xmax - xmin) * 0.05;
        (xmin - pad, xmax + pad)
    } else {
        (xmin - 1.0, xmax + 1.0)
    };
    let y_base = spec.y_unit.map_or(10.0, |u| u.log_base());
    let (y0, y1) = if log_y {
        // Whole powers at both ends, so every tick is a round value.
        let (a, b) = (pos_min.log(y_base), ymax.log(y_base));
        (a.floor(), if b.ceil() > b { b.ceil() } else { b + 1.0 })
    } else {
        let lo = if ymin >= 0.0 { 0.0 } else { ymin };
        let hi = if ymax > lo { ymax } else { lo + 1.0 };
        (lo, hi + (hi - lo) * 0.08)
    };
    Some(Axes { log_x, log_y, y_base, x0, x1, y0, y1 })
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, spec: &ChartSpec, ax: &Axes) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("chart {}: {x:?}", spec.id);
    root.fill(&WHITE).map_err(e)?;
    // Legend in its own strip under the plot, so it never hides a line.
    let (plot, strip) = root.split_vertically(H - LEGEND_H);
    draw_legend(&strip, spec).map_err(e)?;
    let root_area = root;
    let root = plot;
    let tx = |x: f64| if ax.log_x { x.max(f64::MIN_POSITIVE).log2() } else { x };
    let ty = |y: f64| if ax.log_y { y.max(ax.y_base.powf(ax.y0)).log(ax.y_base) } else { y };
    let mut chart = ChartBuilder::on(&root)
        .caption(&spec.title, ("sans-serif", 22).into_font().color(&RGBColor(34, 34, 34)))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(92)
        .build_cartesian_2d(ax.x0..ax.x1, ax.y0..ax.y1)
        .map_err(e)?;
    let x_kind = spec.x_kind;
    let cats = spec.categories.clone();
    let log_x = ax.log_x;
    let fx = move |v: &f64| -> String {
        if let Some(c) = &cats {
            let i = v.round();
            return if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < c.len() { c[i as usize].clone() } else { String::new() };
        }
        let real = if log_x {
            if (v - v.round()).abs() > 1e-6 {
                return String::new();
            }
            2f64.powf(v.round())
        } else {
            *v
        };
        match x_kind {
            Some(k @ ParamKind::Bytes) => k.format(&serde_json::json!(real)),
            _ if (real - real.round()).abs() < 1e-9 => format!("{real:.0}"),
            _ => sig3(real),
        }
    };
    let y_unit = spec.y_unit;
    let fmt_y = move |v: f64| y_unit.map_or_else(|| sig3(v), |u| u.format(v));
    let log_y = ax.log_y;
    let y_base = ax.y_base;
    let fy = move |v: &f64| {
        if log_y {
            if (v - v.round()).abs() > 1e-6 {
                return String::new();
            }
            trim_zeros(&fmt_y(y_base.powf(v.round())))
        } else {
            trim_zeros(&fmt_y(*v))
        }
    };
    let n_y_labels = if ax.log_y { ((ax.y1 - ax.y0).round() as usize + 1).min(14) } else { 8 };
    let x_desc = match &spec.categories {
        Some(_) => spec.x_name.clone(),
        None => format!("{}{}", spec.x_name, if ax.log_x { " (log scale)" } else { "" }),
    };
    let y_desc = format!(
        "{}{}{}",
        spec.metric,
        spec.y_unit.map(|u| format!(" — {}", u.axis_label())).unwrap_or_default(),
        if ax.log_y { " (log)" } else { "" }
    );
    let n_x_labels = match &spec.categories {
        Some(c) => c.len().max(2) * 4,
        None if ax.log_x => ((ax.x1 - ax.x0).ceil() as usize + 1).min(24),
        None => 10,
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(n_x_labels)
        .y_labels(n_y_labels)
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style(("sans-serif", 14).into_font().color(&RGBColor(68, 68, 68)))
        .axis_desc_style(("sans-serif", 15).into_font().color(&RGBColor(51, 51, 51)))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(e)?;
    let k = spec.series.len();
    for (i, s) in spec.series.iter().enumerate() {
        let color = driver_color(&s.name, i);
        // Categorical charts: spread the backends a little so their bars do not hide each other.
        let dx = if spec.categories.is_some() && k > 1 { (i as f64 - (k as f64 - 1.0) / 2.0) * (0.6 / k as f64) } else { 0.0 };
        let pts: Vec<(f64, f64, f64, f64)> =
            s.points.iter().map(|p| (tx(p.x) + dx, ty(p.median), ty(p.lo), ty(p.hi))).collect();
        if spec.categories.is_none() && pts.len() >= 2 && !s.dashed {
            let mut band: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.3)).collect();
            band.extend(pts.iter().rev().map(|p| (p.0, p.2)));
            chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.16).filled()))).map_err(e)?;
        }
        if spec.categories.is_some() || pts.len() == 1 {
            // Error bars: the CI as a vertical line with caps.
            let w = if spec.categories.is_some() { 0.04 } else { (ax.x1 - ax.x0) * 0.008 };
            chart
                .draw_series(pts.iter().flat_map(|p| {
                    [
                        PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color.stroke_width(2)),
                        PathElement::new(vec![(p.0 - w, p.2), (p.0 + w, p.2)], color.stroke_width(2)),
                        PathElement::new(vec![(p.0 - w, p.3), (p.0 + w, p.3)], color.stroke_width(2)),
                    ]
                }))
                .map_err(e)?;
        }
        let line: Vec<(f64, f64)> = if spec.categories.is_none() { pts.iter().map(|p| (p.0, p.1)).collect() } else { vec![] };
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(line, 7, 5, color.stroke_width(2))).map_err(e)?;
        } else {
            chart.draw_series(LineSeries::new(line, color.stroke_width(2))).map_err(e)?;
        }
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
            .map_err(e)?;
    }
    root_area.present().map_err(e)?;
    Ok(())
}

const LEGEND_H: u32 = 38;

/// "10.0 ms" → "10 ms", "1.50 s" → "1.5 s": round tick values read better without zeros.
fn trim_zeros(s: &str) -> String {
    let (num, rest) = s.split_once(' ').map_or((s, ""), |(a, b)| (a, b));
    let num = if num.contains('.') && !num.contains('e') { num.trim_end_matches('0').trim_end_matches('.') } else { num };
    if rest.is_empty() { num.to_string() } else { format!("{num} {rest}") }
}

/// One row of legend entries: a coloured line and the backend's name, centred.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &ChartSpec) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = ("sans-serif", 15).into_font().color(&RGBColor(51, 51, 51));
    let widths: Vec<i32> = spec
        .series
        .iter()
        .map(|s| {
            let tw = area.estimate_text_size(&s.name, &font).map(|(w, _)| w as i32).unwrap_or(8 * s.name.len() as i32);
            28 + tw + 26
        })
        .collect();
    let total: i32 = widths.iter().sum();
    let (w, _) = area.dim_in_pixel();
    let mut x = ((w as i32 - total) / 2).max(8);
    let y = (LEGEND_H / 2) as i32 - 4;
    for (i, s) in spec.series.iter().enumerate() {
        let color = driver_color(&s.name, i);
        if s.dashed {
            area.draw(&PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(3)))?;
            area.draw(&PathElement::new(vec![(x + 14, y), (x + 22, y)], color.stroke_width(3)))?;
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(4)))?;
            area.draw(&Circle::new((x + 11, y), 4, color.filled()))?;
        }
        area.draw_text(&s.name, &font, (x + 28, y - 8))?;
        x += widths[i];
    }
    Ok(())
}

/// Write `<dir>/<id>.svg` and `<dir>/<id>.png`.
pub fn render(spec: &ChartSpec, dir: &Path) -> anyhow::Result<ChartFiles> {
    let ax = axes(spec).ok_or_else(|| anyhow!("chart {}: no points", spec.id))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let svg = dir.join(format!("{}.svg", spec.id));
    let png = dir.join(format!("{}.png", spec.id));
    draw(SVGBackend::new(&svg, (W, H)).into_drawing_area(), spec, &ax)?;
    draw(BitMapBackend::new(&png, (W, H)).into_drawing_area(), spec, &ax)?;
    Ok(ChartFiles { id: spec.id.clone(), title: spec.title.clone(), png, svg })
}
