//! Grouped bar charts of rates (the evaluation table as a picture).

use super::text::{draw_text, line_height, text_width};

/// One method's bars: its rate (0..1) in each group, drawn in `colour`.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: [u8; 3],
    pub values: Vec<f64>,
}

/// One group of bars per name in `groups` (named under it; the last group underlined: the
/// overall), one bar per series (the legend above names its colour), a 0-100% axis on the
/// left with grid lines every 25%; `height` pixels tall, bars at least `bar_width` wide.
pub fn grouped_bars(
    groups: &[&str],
    series: &[Series],
    bar_width: u32,
    height: u32,
) -> image::RgbImage {
    const PX: f32 = 12.0;
    const INK: [u8; 3] = [40, 40, 40];
    let methods = series.len().max(1) as u32;
    let widest = groups.iter().map(|n| text_width(n, PX)).fold(0.0, f32::max);
    // Wide enough that each group's name fits under it.
    let bar_width = bar_width.max(((widest + 6.0) / methods as f32).ceil() as u32);
    let gap = bar_width;
    let line = line_height(PX).ceil() as u32;
    let (left, top, bottom) = (
        text_width("100%", PX).ceil() as u32 + 8,
        line + 10,
        line + 8,
    );
    let width = left + groups.len() as u32 * (methods * bar_width + gap) + gap;
    let height = height.max(top + bottom + 40);
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let plot = height - top - bottom;
    let base = top + plot;
    for q in 0..=4u32 {
        let y = base - q * plot / 4;
        fill(&mut img, left, y, width - left, 1, [220, 220, 220]);
        let label = format!("{}%", q * 25);
        let lx = left as f32 - 4.0 - text_width(&label, PX);
        draw_text(&mut img, &label, lx, y as f32 - line as f32 / 2.0, PX, INK);
    }
    let mut legend_x = left as f32;
    for s in series {
        fill(
            &mut img,
            legend_x as u32,
            4,
            10,
            line.saturating_sub(4),
            s.colour,
        );
        draw_text(&mut img, s.name, legend_x + 14.0, 2.0, PX, INK);
        legend_x += 14.0 + text_width(s.name, PX) + 14.0;
    }
    for (g, name) in groups.iter().enumerate() {
        let x0 = left + gap + g as u32 * (methods * bar_width + gap);
        for (m, s) in series.iter().enumerate() {
            let rate = s.values.get(g).copied().unwrap_or(0.0);
            let h = (rate.clamp(0.0, 1.0) * f64::from(plot)).round() as u32;
            fill(
                &mut img,
                x0 + m as u32 * bar_width,
                base - h,
                bar_width - 1,
                h,
                s.colour,
            );
        }
        let group = (methods * bar_width) as f32;
        let nx = x0 as f32 + (group - text_width(name, PX)) / 2.0;
        draw_text(&mut img, name, nx, (base + 4) as f32, PX, INK);
        if g + 1 == groups.len() {
            fill(&mut img, x0, base + 1, methods * bar_width, 2, [0, 0, 0]);
        }
    }
    img
}

/// Fills a `w` x `h` rectangle at (`x`, `y`), clipped to the image.
fn fill(img: &mut image::RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    for py in y..(y + h).min(img.height()) {
        for px in x..(x + w).min(img.width()) {
            img.put_pixel(px, py, image::Rgb(colour));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bar's height is its rate of the axis; a group's bars sit side by side in their
    /// series' colours.
    #[test]
    fn bars_are_as_tall_as_their_rates() {
        let series = [
            Series {
                name: "a",
                colour: [200, 0, 0],
                values: vec![1.0, 0.5],
            },
            Series {
                name: "b",
                colour: [0, 0, 200],
                values: vec![0.25, 0.0],
            },
        ];
        let img = grouped_bars(&["first", "overall"], &series, 10, 200);
        // Below the legend.
        let plot_top = line_height(12.0).ceil() as u32 + 10;
        let column_height = |colour: [u8; 3]| {
            (0..img.width())
                .map(|x| {
                    (plot_top..img.height())
                        .filter(|&y| img.get_pixel(x, y).0 == colour)
                        .count()
                })
                .collect::<Vec<_>>()
        };
        let red = column_height([200, 0, 0]);
        let blue = column_height([0, 0, 200]);
        let tallest_red = *red.iter().max().expect("columns");
        let tallest_blue = *blue.iter().max().expect("columns");
        // 1.0 against 0.25.
        let ratio = tallest_red as f64 / tallest_blue as f64;
        assert!((ratio - 4.0).abs() < 0.1, "ratio {ratio}");
        let first_red = red.iter().position(|&h| h == tallest_red).expect("red bar");
        let first_blue = blue
            .iter()
            .position(|&h| h == tallest_blue)
            .expect("blue bar");
        assert!(first_red < first_blue, "series in order within the group");
    }
}
