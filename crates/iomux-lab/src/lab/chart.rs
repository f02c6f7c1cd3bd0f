//! SVG charts with plotters (SVG backend only): every series its own color
//! and marker, logarithmic axes where values span decades, ticks like 1k,
//! 10k, and each point's range (the smallest to the largest of its rounds)
//! drawn as a vertical bar.

use super::report::Spread;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io;
use std::path::Path;

/// One point: x, and y as a median with its range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    pub x: f64,
    pub y: Spread,
}

/// One line on a chart.
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

fn plot_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing a chart: {e}"))
}

/// Twelve colors that tell apart at a glance (Tableau 10, black, navy).
const COLORS: [RGBColor; 12] = {
    const HEX: [u32; 12] = [
        0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22,
        0x17becf, 0x000000, 0x000080,
    ];
    let mut colors = [RGBColor(0, 0, 0); 12];
    let mut i = 0;
    while i < 12 {
        let c = HEX[i];
        colors[i] = RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8);
        i += 1;
    }
    colors
};

/// The markers, taken in turn: shape and whether it is filled.
const MARKERS: usize = 8;

type Root<'p> = DrawingArea<SVGBackend<'p>, Shift>;
type Chart<'a, 'p> = ChartContext<'a, SVGBackend<'p>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A tick label: 1k, 2.5k, 10k, 1M, 0.5, 40 (never `4000.0`).
pub(crate) fn tick(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// An axis: linear from zero, or logarithmic (values drawn as log10) when
/// the positive values span 20 times or more.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>) -> Axis {
        let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        let max = v.iter().copied().fold(0.0f64, f64::max).max(1e-9);
        let min_pos = v
            .iter()
            .copied()
            .filter(|&x| x > 0.0)
            .fold(f64::INFINITY, f64::min);
        if v.iter().all(|&x| x > 0.0) && max / min_pos >= 20.0 {
            Axis {
                log: true,
                lo: min_pos.log10().floor(),
                hi: max.log10().ceil(),
            }
        } else {
            Axis {
                log: false,
                lo: 0.0,
                hi: max * 1.1,
            }
        }
    }

    fn to(&self, v: f64) -> f64 {
        if self.log {
            v.max(1e-12).log10()
        } else {
            v
        }
    }

    fn label(&self, at: f64) -> String {
        tick(if self.log { 10f64.powf(at) } else { at })
    }

    /// Tick count: one per decade on a log axis.
    fn ticks(&self) -> usize {
        if self.log {
            (self.hi - self.lo) as usize + 1
        } else {
            8
        }
    }

    fn desc(&self, text: &str) -> String {
        if self.log {
            format!("{text} (log scale)")
        } else {
            text.to_string()
        }
    }
}

/// The canvas, and the strip on its right the legend goes in (so it never
/// covers a point).
const SIZE: (u32, u32) = (960, 480);
const LEGEND_WIDTH: u32 = 210;

/// A white SVG canvas.
fn root(path: &Path) -> io::Result<Root<'_>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    Ok(root)
}

fn axes<'a, 'p>(
    root: &'a Root<'p>,
    title: &str,
    x: (f64, f64),
    y: (f64, f64),
    legend: bool,
) -> io::Result<Chart<'a, 'p>> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(if legend { LEGEND_WIDTH + 12 } else { 12 })
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(plot_err)
}

/// Marker `k`'s outline in pixels around its point: eight shapes (circle,
/// triangle, square, diamond, inverted triangle, pentagon, hexagon, star).
fn marker_shape(k: usize) -> Vec<(i32, i32)> {
    let ring = |n: usize, r: f64, turn: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|i| {
                let a = turn + i as f64 * std::f64::consts::TAU / n as f64;
                ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32)
            })
            .collect()
    };
    use std::f64::consts::FRAC_PI_2;
    match k % MARKERS {
        0 => ring(12, 4.5, 0.0),
        1 => ring(3, 6.0, -FRAC_PI_2),
        2 => vec![(-4, -4), (4, -4), (4, 4), (-4, 4)],
        3 => ring(4, 6.0, 0.0),
        4 => ring(3, 6.0, FRAC_PI_2),
        5 => ring(5, 5.5, -FRAC_PI_2),
        6 => ring(6, 5.0, 0.0),
        _ => (0..10)
            .map(|i| {
                let r = if i % 2 == 0 { 7.0 } else { 3.0 };
                let a = -FRAC_PI_2 + i as f64 * std::f64::consts::TAU / 10.0;
                ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32)
            })
            .collect(),
    }
}

/// Marker `k` at each of `points`.
fn draw_markers(
    chart: &mut Chart<'_, '_>,
    points: &[(f64, f64)],
    k: usize,
    color: RGBColor,
) -> io::Result<()> {
    chart
        .draw_series(
            points
                .iter()
                .map(|&p| EmptyElement::at(p) + Polygon::new(marker_shape(k), color.filled())),
        )
        .map(|_| ())
        .map_err(plot_err)
}

fn too_many(what: &str, n: usize) -> io::Error {
    io::Error::other(format!(
        "drawing a chart: {n} {what}, more than the {} distinct colors",
        COLORS.len()
    ))
}

/// A line chart of `series`, each point with its range.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> io::Result<()> {
    if series.len() > COLORS.len() {
        return Err(too_many("series", series.len()));
    }
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x = Axis::fit(points().map(|p| p.x));
    let y = Axis::fit(points().flat_map(|p| [p.y.lo, p.y.hi]));
    let root = root(path)?;
    let mut chart = axes(
        &root,
        title,
        (x.lo, x.hi.max(x.lo + 1e-9)),
        (y.lo, y.hi.max(y.lo + 1e-9)),
        true,
    )?;
    let (xf, yf) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    chart
        .configure_mesh()
        .x_labels(x.ticks())
        .y_labels(y.ticks())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .x_desc(x.desc(x_label))
        .y_desc(y.desc(y_label))
        .draw()
        .map_err(plot_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i];
        let k = i % MARKERS;
        let at = |p: &Point, v: f64| (x.to(p.x), y.to(v));
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| at(p, p.y.median)),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?;
        // The range: a vertical bar with short caps, where there is one,
        // shifted a few pixels per series so ranges at one x stay apart.
        let dx = (i as i32 - series.len() as i32 / 2) * 4;
        for p in s.points.iter().filter(|p| p.y.hi > p.y.lo) {
            let (lo, hi) = (
                chart.backend_coord(&at(p, p.y.lo)),
                chart.backend_coord(&at(p, p.y.hi)),
            );
            let (lo, hi) = ((lo.0 + dx, lo.1), (hi.0 + dx, hi.1));
            let style = color.stroke_width(2);
            root.draw(&PathElement::new(vec![lo, hi], style))
                .map_err(plot_err)?;
            for end in [lo, hi] {
                root.draw(&PathElement::new(
                    vec![(end.0 - 4, end.1), (end.0 + 4, end.1)],
                    style,
                ))
                .map_err(plot_err)?;
            }
        }
        let medians: Vec<(f64, f64)> = s.points.iter().map(|p| at(p, p.y.median)).collect();
        draw_markers(&mut chart, &medians, k, color)?;
    }
    // The legend, in the strip kept for it right of the plotting area:
    // each series' line, marker and label.
    let (left, top) = (SIZE.0 as i32 - LEGEND_WIDTH as i32, 50);
    for (i, s) in series.iter().enumerate() {
        let (color, y) = (COLORS[i], top + 22 * i as i32);
        root.draw(&PathElement::new(
            vec![(left, y), (left + 24, y)],
            color.stroke_width(2),
        ))
        .map_err(plot_err)?;
        root.draw(
            &(EmptyElement::at((left + 12, y))
                + Polygon::new(marker_shape(i % MARKERS), color.filled())),
        )
        .map_err(plot_err)?;
        root.draw(&Text::new(
            s.label.clone(),
            (left + 32, y - 7),
            ("sans-serif", 14),
        ))
        .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)
}

/// A bar chart: one bar per (label, value), each its own color, with the
/// value's range drawn over it.
pub(crate) fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, Spread)],
) -> io::Result<()> {
    if bars.len() > COLORS.len() {
        return Err(too_many("bars", bars.len()));
    }
    let y_max = bars.iter().map(|b| b.1.hi).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let n = bars.len().max(1);
    let root = root(path)?;
    let mut chart = axes(&root, title, (0.0, n as f64), (0.0, y_max), false)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let yf = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&yf)
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.1.median)],
                COLORS[i].filled(),
            )
        }))
        .map_err(plot_err)?;
    for (i, b) in bars.iter().enumerate().filter(|(_, b)| b.1.hi > b.1.lo) {
        let mid = i as f64 + 0.5;
        chart
            .draw_series([PathElement::new(
                vec![(mid, b.1.lo), (mid, b.1.hi)],
                BLACK.stroke_width(2),
            )])
            .map_err(plot_err)?;
        for end in [b.1.lo, b.1.hi] {
            chart
                .draw_series([EmptyElement::at((mid, end))
                    + PathElement::new(vec![(-6, 0), (6, 0)], BLACK.stroke_width(2))])
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_numbers_people_write() {
        assert_eq!(tick(4000.0), "4k");
        assert_eq!(tick(2500.0), "2.5k");
        assert_eq!(tick(10f64.powf(2.0)), "100");
        assert_eq!(tick(150_000.0), "150k");
        assert_eq!(tick(2_000_000.0), "2M");
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(0.0), "0");
    }

    #[test]
    fn axes_go_logarithmic_only_over_decades() {
        let lin = Axis::fit([10.0, 100.0].into_iter());
        assert!(!lin.log && lin.lo == 0.0);
        let log = Axis::fit([3.0, 4000.0].into_iter());
        assert_eq!((log.log, log.lo, log.hi), (true, 0.0, 4.0));
        assert_eq!(log.ticks(), 5);
        assert_eq!(log.label(3.0), "1k");
        // A zero cannot go on a log axis.
        assert!(!Axis::fit([0.0, 4000.0].into_iter()).log);
    }

    #[test]
    fn too_many_series_is_an_error_not_a_repeated_color() {
        let dir = std::env::temp_dir().join(format!("iomux-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let series: Vec<Series> = (0..13)
            .map(|i| Series {
                label: format!("s{i}"),
                points: vec![Point {
                    x: 1.0,
                    y: Spread::exact(i as f64 + 1.0),
                }],
            })
            .collect();
        let file = dir.join("c.svg");
        assert!(lines(&file, "t", "x", "y", &series).is_err());
        lines(&file, "t", "x", "y", &series[..12]).unwrap();
        let svg = std::fs::read_to_string(&file).unwrap();
        for c in COLORS {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(svg.contains(&hex), "{hex} missing");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
