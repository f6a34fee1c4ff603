//! Pictures of an A/B run, as SVG (no font files needed; any browser or `rsvg-convert` shows
//! them): accuracy by exit layer (paper Fig. 1), gap / top-prob trajectories across layers for
//! easy vs hard prompts (Fig. 3), a histogram of activated layers per arm, and the
//! accuracy-vs-pruning curve as the threshold sweeps.

use super::ab::{AbRun, LayerTrace};
use super::report::EvalReport;
use super::sweep::SweepPoint;
use crate::plugin::classifier::write_atomically;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (860, 520);
const FONT: &str = "sans-serif";

/// What the plots are drawn from.
pub struct PlotInput<'a> {
    pub report: &'a EvalReport,
    pub run: &'a AbRun,
    /// Threshold sweep of the adaptive policy (empty: no curve, only the arms' points).
    pub sweep: &'a [SweepPoint],
    pub policy: &'a str,
}

/// Write every plot the input supports into `dir`; returns the files written.
pub fn write_all(dir: &Path, input: &PlotInput) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow!("cannot create plot directory {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut save = |name: &str, svg: String| -> Result<()> {
        let path = dir.join(name);
        write_atomically(&path, svg.as_bytes())?;
        written.push(path);
        Ok(())
    };
    if let Some(acc) = &input.report.accuracy_by_layer {
        save(
            "accuracy_by_layer.svg",
            accuracy_by_layer(input.report, acc)?,
        )?;
    }
    let traces = oracle_traces(input.run);
    if !traces.is_empty() {
        save("trajectories.svg", trajectories(input.report, &traces)?)?;
    }
    save("layers_histogram.svg", layers_histogram(input.report)?)?;
    save("accuracy_vs_pruning.svg", accuracy_vs_pruning(input)?)?;
    Ok(written)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw plot: {e}")
}

/// Render `draw` on a fresh white SVG canvas.
fn render(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn title(report: &EvalReport, what: &str) -> String {
    format!(
        "{what} — {} {}-shot, {} prompts",
        report.task, report.shots, report.examples
    )
}

fn accuracy_by_layer(report: &EvalReport, acc: &[f64]) -> Result<String> {
    let layers = acc.len();
    let pct: Vec<f64> = acc.iter().map(|a| 100.0 * a).collect();
    let (lo, hi) = padded_range(pct.iter().copied());
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title(report, "Accuracy by exit layer"), (FONT, 22))
            .margin(16)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..layers as f64 + 0.5, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("exit layer (logit lens of the last token)")
            .y_desc("accuracy (%)")
            .x_labels(layers.min(24))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .draw()
            .map_err(plot_err)?;
        let points: Vec<(f64, f64)> = pct
            .iter()
            .enumerate()
            .map(|(i, &a)| ((i + 1) as f64, a))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
            .map_err(plot_err)?
            .label("answer at this layer")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(plot_err)?;
        let dense = pct.last().copied().unwrap_or(0.0);
        chart
            .draw_series(LineSeries::new(
                vec![(0.5, dense), (layers as f64 + 0.5, dense)],
                RED.mix(0.7).stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("dense (last layer)")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.7).stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The oracle arm's per-prompt traces with the layer each settled at.
fn oracle_traces(run: &AbRun) -> Vec<(&LayerTrace, usize)> {
    run.outcomes
        .iter()
        .flatten()
        .filter_map(|o| {
            let t = o.trace.as_ref()?;
            Some((t, o.exit_layer.unwrap_or(t.answers.len())))
        })
        .collect()
}

fn mean_per_layer(traces: &[&LayerTrace], pick: impl Fn(&LayerTrace) -> &[f32]) -> Vec<(f64, f64)> {
    let layers = traces.iter().map(|t| pick(t).len()).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let vals: Vec<f64> = traces
                .iter()
                .filter_map(|t| pick(t).get(l))
                .map(|&v| v as f64)
                .collect();
            (
                (l + 1) as f64,
                vals.iter().sum::<f64>() / vals.len().max(1) as f64,
            )
        })
        .collect()
}

/// Which per-layer series of a trace a panel shows.
type FeatureOf = fn(&LayerTrace) -> &[f32];

/// Easy prompts settle (oracle) at or before the median layer; hard ones after it.
fn trajectories(report: &EvalReport, traces: &[(&LayerTrace, usize)]) -> Result<String> {
    let mut settle: Vec<usize> = traces.iter().map(|t| t.1).collect();
    settle.sort_unstable();
    let median = settle[settle.len() / 2];
    let easy: Vec<&LayerTrace> = traces
        .iter()
        .filter(|t| t.1 <= median)
        .map(|t| t.0)
        .collect();
    let hard: Vec<&LayerTrace> = traces
        .iter()
        .filter(|t| t.1 > median)
        .map(|t| t.0)
        .collect();
    let layers = report.num_layers;
    render(|root| {
        let (title_area, body) = root.split_vertically(40);
        title_area
            .titled(&title(report, "Gap and top-prob across layers"), (FONT, 22))
            .map_err(plot_err)?;
        let panels = body.split_evenly((1, 2));
        let features: [(&str, FeatureOf); 2] = [
            ("gap (p1 − p2)", |t| &t.gap),
            ("top prob (p1)", |t| &t.top_prob),
        ];
        for (panel, (name, pick)) in panels.iter().zip(features) {
            let mut chart = ChartBuilder::on(panel)
                .caption(name, (FONT, 18))
                .margin(12)
                .x_label_area_size(38)
                .y_label_area_size(46)
                .build_cartesian_2d(0.5f64..layers as f64 + 0.5, 0f64..1f64)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("layer")
                .x_labels(layers.min(12))
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .draw()
                .map_err(plot_err)?;
            let groups = [
                (
                    &easy,
                    BLUE,
                    format!("easy: settles by layer {median} ({})", easy.len()),
                ),
                (
                    &hard,
                    RED,
                    format!("hard: settles after it ({})", hard.len()),
                ),
            ];
            for (group, color, label) in groups {
                if group.is_empty() {
                    continue;
                }
                let line = mean_per_layer(group, pick);
                chart
                    .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

fn arm_color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(60, 60, 60),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(214, 39, 40),
    ];
    COLORS[i % COLORS.len()]
}

fn layers_histogram(report: &EvalReport) -> Result<String> {
    let layers = report.num_layers;
    let arms = &report.arms;
    let top = arms
        .iter()
        .flat_map(|(_, r)| r.layers_histogram.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title(report, "Activated layers per prompt"), (FONT, 22))
            .margin(16)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..layers as f64 + 0.5, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("layers run (exit layer)")
            .y_desc("prompts")
            .x_labels(layers.min(24))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .disable_x_mesh()
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / arms.len().max(1) as f64;
        for (i, (name, r)) in arms.iter().enumerate() {
            let color = arm_color(i);
            let bars = r.layers_histogram.iter().enumerate().map(|(l, &n)| {
                let x0 = (l + 1) as f64 - 0.4 + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, n as f64)], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(format!("{name} (avg {:.2})", r.avg_layers))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

fn accuracy_vs_pruning(input: &PlotInput) -> Result<String> {
    let report = input.report;
    let curve: Vec<ChartPoint> = input
        .sweep
        .iter()
        .map(|p| ChartPoint {
            label: format!("{}", p.threshold),
            pruning: 100.0 * p.pruning_ratio,
            accuracy: 100.0 * p.accuracy,
        })
        .collect();
    let arms: Vec<ChartPoint> = report
        .arms
        .iter()
        .map(|(n, r)| ChartPoint {
            label: n.clone(),
            pruning: 100.0 * r.pruning_ratio,
            accuracy: 100.0 * r.accuracy,
        })
        .collect();
    pruning_chart(
        &title(report, "Accuracy vs pruning ratio"),
        &format!("{} as the threshold sweeps", input.policy),
        &curve,
        &arms,
    )
}

/// A point of an accuracy-vs-pruning chart, both in percent.
pub struct ChartPoint {
    pub label: String,
    pub pruning: f64,
    pub accuracy: f64,
}

/// Accuracy against pruning ratio: a labelled curve (a threshold or a budget sweep) and
/// reference arms (dense, the oracle, baselines) as triangles.
pub fn pruning_chart(
    caption: &str,
    curve_name: &str,
    curve: &[ChartPoint],
    arms: &[ChartPoint],
) -> Result<String> {
    let (lo, hi) = padded_range(curve.iter().chain(arms).map(|c| c.accuracy));
    // Pruning on a real model is often a few percent: fit the axis to the points.
    let right = curve
        .iter()
        .chain(arms)
        .map(|c| c.pruning)
        .fold(0.0, f64::max);
    let right = (right * 1.2 + 2.0).clamp(10.0, 102.0);
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 22))
            .margin(16)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(-1f64..right, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("pruning ratio (% of layers not run)")
            .y_desc("accuracy (%)")
            .draw()
            .map_err(plot_err)?;
        if !curve.is_empty() {
            let line: Vec<(f64, f64)> = curve.iter().map(|c| (c.pruning, c.accuracy)).collect();
            chart
                .draw_series(LineSeries::new(line, BLUE.stroke_width(2)))
                .map_err(plot_err)?
                .label(curve_name.to_string())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
            chart
                .draw_series(curve.iter().map(|c| {
                    EmptyElement::at((c.pruning, c.accuracy))
                        + Circle::new((0, 0), 3, BLUE.filled())
                        + Text::new(c.label.clone(), (4, -14), (FONT, 11))
                }))
                .map_err(plot_err)?;
        }
        for (i, arm) in arms.iter().enumerate() {
            let color = arm_color(i);
            // Alternate label sides so neighbouring arms stay readable.
            let label_at = if i % 2 == 0 { (8, 4) } else { (8, -20) };
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((arm.pruning, arm.accuracy))
                        + TriangleMarker::new((0, 0), 8, color.filled())
                        + Text::new(arm.label.clone(), label_at, (FONT, 13)),
                ))
                .map_err(plot_err)?
                .label(arm.label.clone())
                .legend(move |(x, y)| TriangleMarker::new((x + 7, y), 6, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// A y range around the values with some air, clamped to 0..100.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 100.0);
    }
    let pad = ((hi - lo) * 0.15).max(2.0);
    ((lo - pad).max(0.0), (hi + pad).min(100.0))
}
