//! The `--svg` picture: the real version of the tutorial's conceptual
//! figure, drawn with plotters.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::Way;

/// One panel per way: a lane per worker, a bar for each slice of time a
/// job ran: one from its start to its end, or, under the simulated GIL,
/// one for each turn the thread held it. Panels of one table share the
/// time axis, so the bars' lengths compare directly.
pub fn draw(path: &Path, tables: &[(String, Vec<Way>)]) -> Result<(), Box<dyn Error>> {
    const WIDTH: u32 = 900;
    const PANEL_TOP: u32 = 60;
    const LANE: u32 = 34;
    let heights: Vec<u32> = tables
        .iter()
        .flat_map(|(_, ways)| ways.iter().map(|w| PANEL_TOP + LANE * w.lanes.len() as u32))
        .collect();
    let root = SVGBackend::new(path, (WIDTH, heights.iter().sum())).into_drawing_area();
    root.fill(&WHITE)?;
    let mut breaks = Vec::new();
    let mut y = 0;
    for h in &heights[..heights.len() - 1] {
        y += h;
        breaks.push(y);
    }
    let mut panels = root
        .split_by_breakpoints([] as [u32; 0], breaks)
        .into_iter();
    for (kind, ways) in tables {
        let longest = ways
            .iter()
            .map(|w| w.elapsed.as_secs_f64())
            .fold(0.0, f64::max);
        // Whole milliseconds on the axis, unless the run was that short.
        let decimals = if longest < 0.01 { 2 } else { 0 };
        for way in ways {
            let panel = panels.next().ok_or("one panel per way")?;
            let color = match way.name {
                "normal" => RGBColor(120, 120, 120),
                "multithread" => RGBColor(31, 119, 180),
                "multicore" => RGBColor(255, 127, 14),
                _ => RGBColor(214, 39, 40),
            };
            let lanes = way.lanes.len() as f64;
            let mut chart = ChartBuilder::on(&panel)
                .caption(
                    format!(
                        "{kind}, {}: {:.1} ms",
                        way.name,
                        way.elapsed.as_secs_f64() * 1000.0
                    ),
                    ("sans-serif", 16),
                )
                .margin(6)
                .margin_right(28)
                .x_label_area_size(24)
                .y_label_area_size(130)
                .build_cartesian_2d(0f64..longest * 1.02, 0f64..lanes)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(8)
                .x_label_style(("sans-serif", 12))
                .x_label_formatter(&|s| format!("{:.*} ms", decimals, s * 1000.0))
                .draw()?;
            // Lane 0 at the top. Bars are drawn in pixels: a slice of a
            // pixel or less (a GIL turn that only handled a reply) still
            // shows, 2 pixels wide, and wider ones keep a white pixel at
            // each end so that back-to-back slices stay apart.
            for bar in &way.bars {
                let top = lanes - bar.lane as f64;
                let (x0, y0) = chart.backend_coord(&(bar.start, top - 0.2));
                let (x1, y1) = chart.backend_coord(&(bar.end, top - 0.8));
                let (left, right) = if x1 - x0 >= 4 {
                    (x0 + 1, x1 - 1)
                } else {
                    (x0, x0 + (x1 - x0).max(2))
                };
                root.draw(&Rectangle::new([(left, y0), (right, y1)], color.filled()))?;
            }
            // A job cut into slices (under the GIL) is named beside its
            // lane; a job in one piece, on its bar, in white, or after it,
            // in black, when the bar is too short for its name.
            let sliced = way
                .bars
                .iter()
                .any(|bar| way.bars.iter().filter(|b| b.job == bar.job).count() > 1);
            if !sliced {
                for bar in &way.bars {
                    let top = lanes - bar.lane as f64;
                    let (x, y) = chart.backend_coord(&(bar.start, top - 0.5));
                    let (right, _) = chart.backend_coord(&(bar.end, top - 0.5));
                    let label = format!("job {}", bar.job);
                    let (at, colour) = if right - x >= 44 {
                        (x + 6, &WHITE)
                    } else {
                        (right + 4, &BLACK)
                    };
                    root.draw(&Text::new(
                        label,
                        (at, y - 6),
                        ("sans-serif", 12).into_font().color(colour),
                    ))?;
                }
            }
            for (lane, name) in way.lanes.iter().enumerate() {
                let (x, y) = chart.backend_coord(&(0.0, lanes - lane as f64 - 0.5));
                let job = way.bars.iter().find(|bar| bar.lane == lane);
                let name = match job {
                    Some(bar) if sliced => format!("{name}, job {}", bar.job),
                    _ => name.clone(),
                };
                root.draw(&Text::new(
                    name,
                    (x - 124, y - 7),
                    ("sans-serif", 14).into_font(),
                ))?;
            }
        }
    }
    root.present()?;
    Ok(())
}
