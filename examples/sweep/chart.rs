//! The sweep's chart: per shape, the best peer's time over deconv's, forward and
//! forward+backward, as horizontal bars on a log axis with the 1.0 line (above it deconv is
//! faster). An SVG drawn with plotters (already built for criterion's reports).

use crate::report::Derived;
use plotters::prelude::*;
use serde_json::Value;

const FORWARD: RGBColor = RGBColor(66, 133, 244);
const BACKWARD: RGBColor = RGBColor(234, 120, 40);

/// Writes the chart of `shapes` to `path`; `title` goes on top.
pub fn draw(path: &str, title: &str, shapes: &[Value]) -> Result<(), String> {
    let rows: Vec<Derived> = shapes.iter().map(Derived::of).collect();
    let n = rows.len();
    let ratios = rows
        .iter()
        .flat_map(|d| [d.speedup_forward(), d.speedup_backward()])
        .flatten();
    let (lo, hi) = ratios.fold((1.0f64, 1.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    // Whole powers of two around the data, so the axis reads 0.25, 0.5, 1, 2, 4 ...
    // The axis is log2 of the ratio, from a whole power of two below the data to one above, so
    // that its labels read 0.25, 0.5, 1, 2, 4 ...
    let (lo, hi) = ((lo.log2() - 0.1).floor(), (hi.log2() + 0.1).ceil());
    let height = 110 + 22 * n as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{path}: {e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    // The heading: the title, then the key of the two colours (a legend inside the plot would
    // cover bars).
    let (head, body) = root.split_vertically(52);
    let text =
        |s: &str, x: i32, y: i32, size: f64| Text::new(s.to_string(), (x, y), ("sans-serif", size));
    head.draw(&text(title, 10, 6, 17.0)).map_err(|e| err(&e))?;
    let key = [
        (
            FORWARD,
            "forward: the faster of PyTorch and ONNX Runtime, over deconv",
        ),
        (BACKWARD, "forward+backward: PyTorch over deconv"),
    ];
    let mut x = 10;
    for (color, label) in key {
        head.draw(&Rectangle::new([(x, 32), (x + 12, 44)], color.filled()))
            .map_err(|e| err(&e))?;
        head.draw(&text(label, x + 18, 31, 13.0))
            .map_err(|e| err(&e))?;
        x += 30 + 7 * label.len() as i32;
    }
    let label = |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            rows[n - 1 - i as usize].id.clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&body)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(110)
        .build_cartesian_2d(lo..hi, -0.5..n as f64 - 0.5)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .disable_y_mesh()
        .x_desc("best peer's time / deconv's time, log scale: right of 1 (black) deconv is faster; grey: 1.3")
        .x_labels((hi - lo) as usize + 1)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x)))
        .draw()
        .map_err(|e| err(&e))?;
    // Row i of the table is drawn at y = n - 1 - i, top to bottom in table order.
    let bars = |pick: fn(&Derived) -> Option<f64>, offset: f64, color: RGBColor| {
        rows.iter()
            .enumerate()
            .filter_map(move |(i, d)| {
                let y = (n - 1 - i) as f64 + offset;
                pick(d).map(|r| Rectangle::new([(0.0, y), (r.log2(), y + 0.38)], color.filled()))
            })
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(bars(Derived::speedup_forward, 0.0, FORWARD))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars(Derived::speedup_backward, -0.38, BACKWARD))
        .map_err(|e| err(&e))?;
    let vertical =
        |x: f64, style: ShapeStyle| PathElement::new(vec![(x, -0.5), (x, n as f64 - 0.5)], style);
    chart
        .draw_series([
            vertical(0.0, BLACK.stroke_width(2)),
            // The target for the geometric mean.
            vertical(1.3f64.log2(), BLACK.mix(0.35).stroke_width(1)),
        ])
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
