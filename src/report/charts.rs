//! The report's charts: grouped bar charts as SVG text, drawn by plotters' SVG backend. No font
//! file is read: the SVG names a generic family and the reader's fonts draw the (Japanese)
//! labels. plotters escapes the text it writes; labels here are our own (months, severities,
//! playbook categories) all the same.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One series of bars.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub values: Vec<f64>,
}

/// This period's bars.
pub const NOW: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
/// The previous year's bars.
pub const BEFORE: RGBColor = RGBColor(0xb0, 0xb8, 0xc4);
/// A second measure beside the first (close times beside acknowledge times).
pub const SECOND: RGBColor = RGBColor(0xd9, 0x7a, 0x1c);

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (800, 340);

/// A grouped bar chart: one group per label, one bar per series. Returns the SVG element, or
/// why it could not be drawn (the report then says so instead of the chart).
pub fn bars(
    caption: &str,
    labels: &[String],
    series: &[Series<'_>],
    unit: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, caption, labels, series, unit).map_err(|e| e.to_string())?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    caption: &str,
    labels: &[String],
    series: &[Series<'_>],
    unit: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let groups = labels.len().max(1);
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0_f64, f64::max);
    // Headroom above the tallest bar; with a legend (upper right, about a fifth of the plot's
    // height) enough that it never covers the last group's bars, as it did on the printed page.
    let headroom = if series.len() > 1 { 1.35 } else { 1.15 };
    let top = if top > 0.0 { top * headroom } else { 1.0 };
    // Counts read as 250, not 250.0; a scale of a few hours keeps its tenths.
    let decimals = if top >= 10.0 { 0 } else { 1 };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..groups as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .label_style((FONT, 12))
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (j, s) in series.iter().enumerate() {
        let color = s.color;
        chart
            .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, *v)], color.filled())
            }))?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    // Group labels under each group's middle, in pixels of the whole drawing: plotters' own
    // tick labels sit on round numbers of the axis, not on the groups.
    let style = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(label.as_str(), (x, y + 6), style.clone()))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_element_with_its_labels() {
        let svg = bars(
            "月別の件数",
            &["4月".to_string(), "5月".to_string()],
            &[
                Series {
                    name: "今期",
                    color: NOW,
                    values: vec![3.0, 5.0],
                },
                Series {
                    name: "前年<同期>",
                    color: BEFORE,
                    values: vec![1.0, 0.0],
                },
            ],
            "件",
        )
        .expect("chart");
        assert!(svg.trim_start().starts_with("<svg"), "{svg}");
        assert!(svg.contains("viewBox"));
        assert!(svg.contains("4月") && svg.contains("月別の件数"));
        assert!(svg.contains("前年&lt;同期&gt;"), "{svg}");
        assert!(!svg.contains("<script"));
        // Nothing to draw is still a chart, not a division by zero.
        assert!(bars("空", &[], &[], "件").is_ok());
    }
}
