//! The two charts the bench draws, with plotters' SVG backend: the suite's throughput and
//! context switches per scenario, and the HPA demo's timeline.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::hpa::Sample;
use crate::report::thousands;

const SERVICE: RGBColor = RGBColor(31, 119, 180);
const AXUM: RGBColor = RGBColor(255, 127, 14);
const FLASK: RGBColor = RGBColor(127, 127, 127);
const CPU: RGBColor = RGBColor(214, 39, 40);
const LOAD: RGBColor = RGBColor(230, 230, 250);

/// One scenario of the suite, as the chart shows it.
pub struct Scenario {
    pub name: String,
    pub service_rps: f64,
    pub axum_rps: f64,
    /// The best of the Flask setups measured.
    pub flask_rps: f64,
    pub service_switches: f64,
    pub axum_switches: f64,
}

/// Requests per second (each scenario scaled to its fastest, the value on each bar) above
/// context switches per request, the service beside the axum peer and the best Flask.
pub fn suite(scenarios: &[Scenario]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 620)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(360);
        let throughput: Vec<Vec<(f64, RGBColor)>> = scenarios
            .iter()
            .map(|s| {
                vec![
                    (s.service_rps, SERVICE),
                    (s.axum_rps, AXUM),
                    (s.flask_rps, FLASK),
                ]
            })
            .collect();
        bars(
            &top,
            "Requests per second (wrk, 16 connections), each scenario scaled to its fastest",
            scenarios,
            &throughput,
            Scale::Share,
        )?;
        let switches: Vec<Vec<(f64, RGBColor)>> = scenarios
            .iter()
            .map(|s| vec![(s.service_switches, SERVICE), (s.axum_switches, AXUM)])
            .collect();
        bars(
            &bottom,
            "Context switches per request (every thread of the server; logarithmic)",
            scenarios,
            &switches,
            Scale::Log,
        )?;
        legend(
            &root,
            &[
                ("mongo-api", SERVICE),
                ("axum peer", AXUM),
                ("best Flask", FLASK),
            ],
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// How a panel's bars are scaled.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    /// Each scenario's bars as a share of its largest, so that every scenario is legible.
    Share,
    /// One logarithmic axis for all: values that differ a thousandfold.
    Log,
}

/// A group of bars per scenario, the value written on each.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    scenarios: &[Scenario],
    groups: &[Vec<(f64, RGBColor)>],
    scale: Scale,
) -> Result<(), String> {
    let values = || {
        groups
            .iter()
            .flatten()
            .map(|(v, _)| *v)
            .filter(|v| *v > 0.0)
    };
    let (bottom, top) = match scale {
        Scale::Share => (0.0, 1.15),
        // Whole powers of ten, one below the smallest and one above the largest.
        Scale::Log => (
            values().fold(f64::MAX, f64::min).min(1.0).log10().floor(),
            values().fold(1.0, f64::max).log10().ceil() + 0.3,
        ),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(12)
        .margin_top(if scale == Scale::Share { 40 } else { 12 })
        .x_label_area_size(if scale == Scale::Share { 44 } else { 28 })
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..scenarios.len() as f64, bottom..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .y_labels(if scale == Scale::Share {
            5
        } else {
            (top - bottom) as usize + 1
        })
        .y_label_formatter(&|v| match scale {
            Scale::Share => format!("{:.0}%", v * 100.0),
            Scale::Log => format!("{}", 10f64.powf(v.round())),
        })
        .draw()
        .map_err(err)?;
    for (i, (scenario, group)) in scenarios.iter().zip(groups).enumerate() {
        let largest = group.iter().map(|(v, _)| *v).fold(1e-9, f64::max);
        let width = 0.8 / group.len() as f64;
        for (j, (value, color)) in group.iter().enumerate() {
            let x = i as f64 + 0.1 + j as f64 * width;
            let height = match scale {
                Scale::Share => value / largest,
                Scale::Log => value.max(10f64.powf(bottom)).log10(),
            };
            chart
                .draw_series([Rectangle::new(
                    [(x + 0.01, bottom), (x + width - 0.01, height)],
                    color.filled(),
                )])
                .map_err(err)?;
            let label = match scale {
                Scale::Share => thousands(*value as u64),
                // Two digits below one: a GET / makes a few hundredths.
                Scale::Log if *value < 1.0 => format!("{value:.2}"),
                Scale::Log => format!("{value:.1}"),
            };
            chart
                .draw_series([Text::new(
                    label,
                    (x + width / 2.0, height),
                    ("sans-serif", 11)
                        .into_font()
                        .into_text_style(area)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )])
                .map_err(err)?;
        }
        // Under the axis, outside the plotting area: in the area's own pixels.
        let (base_x, base_y) = area.get_base_pixel();
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, bottom));
        let below = |line: i32| (x - base_x, y - base_y + 6 + 15 * line);
        let centered = ("sans-serif", 12)
            .into_font()
            .into_text_style(area)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(
            scenario.name.as_str(),
            below(0),
            centered.clone(),
        ))
        .map_err(err)?;
        if scale == Scale::Share {
            let ratio = scenario.service_rps / scenario.axum_rps.max(1e-9);
            area.draw(&Text::new(format!("{ratio:.2}x axum"), below(1), centered))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The series' colours in a row at the top right, above every bar.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[(&str, RGBColor)],
) -> Result<(), String> {
    let (width, _) = area.dim_in_pixel();
    let mut x = width as i32 - 120 * series.len() as i32;
    for (name, color) in series {
        area.draw(&Rectangle::new([(x, 8), (x + 12, 20)], color.filled()))
            .map_err(err)?;
        area.draw(&Text::new(*name, (x + 18, 8), ("sans-serif", 13)))
            .map_err(err)?;
        x += 120;
    }
    Ok(())
}

/// Replicas (left axis) and the CPU the HPA sees in % of the request (right axis) over
/// time, the HPA's target dashed, the load's period shaded.
pub fn timeline(samples: &[Sample], target_percent: u32) -> Result<String, String> {
    let end = samples.last().map_or(1.0, |s| s.seconds).max(1.0);
    let max_replicas = samples
        .iter()
        .map(|s| s.replicas.max(s.desired))
        .max()
        .unwrap_or(1)
        .max(1)
        + 1;
    let max_cpu = samples
        .iter()
        .filter_map(|s| s.cpu_percent)
        .max()
        .unwrap_or(0)
        .max(target_percent * 2);
    let load_end = samples
        .iter()
        .take_while(|s| s.loading)
        .last()
        .map_or(0.0, |s| s.seconds);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "The HPA at work: replicas and CPU over time",
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .right_y_label_area_size(52)
            .build_cartesian_2d(0.0..end, 0.0..f64::from(max_replicas))
            .map_err(err)?
            .set_secondary_coord(0.0..end, 0.0..f64::from(max_cpu));
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("seconds")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("replicas")
            .y_labels(max_replicas as usize + 1)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series([Rectangle::new(
                [(0.0, 0.0), (load_end, f64::from(max_replicas))],
                LOAD.mix(0.7).filled(),
            )])
            .map_err(err)?
            .label("load")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], LOAD.filled()));
        chart
            .configure_secondary_axes()
            .y_desc("CPU, % of request")
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.seconds, f64::from(s.replicas))),
                SERVICE.stroke_width(2),
            ))
            .map_err(err)?
            .label("replicas")
            .legend(line_key(SERVICE.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(
                samples
                    .iter()
                    .filter_map(|s| s.cpu_percent.map(|c| (s.seconds, f64::from(c)))),
                CPU.stroke_width(2),
            ))
            .map_err(err)?
            .label("CPU")
            .legend(line_key(CPU.stroke_width(2)));
        chart
            .draw_secondary_series(DashedLineSeries::new(
                [
                    (0.0, f64::from(target_percent)),
                    (end, f64::from(target_percent)),
                ],
                6,
                4,
                CPU.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("target {target_percent}%"))
            .legend(line_key(CPU.stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A legend's sample of a line drawn in `style`.
fn line_key(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}
