//! Pictures for people: frame strips, grids and animated GIFs of plans and demonstrations.

pub mod chart;
pub mod gpu_difference;
pub mod text;

use std::path::Path;

use crate::env::Rgb8Image;

/// Lays frames out in a grid, `rows[r][c]`, with `gap` pixels of `background` between them.
/// Every frame must have the same size.
pub fn grid(rows: &[Vec<Rgb8Image>], gap: u32, background: [u8; 3]) -> image::RgbImage {
    let (w, h) = rows
        .iter()
        .flatten()
        .next()
        .map_or((1, 1), |f| (f.width, f.height));
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let n_rows = rows.len() as u32;
    let mut out = image::RgbImage::from_pixel(
        cols * (w + gap) + gap,
        n_rows * (h + gap) + gap,
        image::Rgb(background),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, frame) in row.iter().enumerate() {
            let x0 = gap + c as u32 * (w + gap);
            let y0 = gap + r as u32 * (h + gap);
            image::imageops::replace(&mut out, &frame.to_image(), i64::from(x0), i64::from(y0));
        }
    }
    out
}

/// Rows of frames scaled up by `scale`, each with its caption under it (wrapped to the row's
/// width): a refinement's iterations with the critic's words.
pub fn captioned_rows(rows: &[Vec<Rgb8Image>], captions: &[String], scale: u32) -> image::RgbImage {
    const PX: f32 = 15.0;
    const GAP: u32 = 1;
    let images: Vec<image::RgbImage> = rows
        .iter()
        .map(|row| {
            upscale(
                &grid(std::slice::from_ref(row), GAP, [255, 255, 255]),
                scale,
            )
        })
        .collect();
    let width = images.iter().map(image::RgbImage::width).max().unwrap_or(1);
    let line = text::line_height(PX).ceil() as u32;
    let wrapped: Vec<Vec<String>> = (0..images.len())
        .map(|i| {
            captions
                .get(i)
                .map(|c| text::wrap(c, PX, width.saturating_sub(16) as f32))
                .unwrap_or_default()
        })
        .collect();
    let height: u32 = images
        .iter()
        .zip(&wrapped)
        .map(|(img, lines)| img.height() + lines.len() as u32 * line + 6)
        .sum();
    let mut out = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut y = 0;
    for (img, lines) in images.iter().zip(&wrapped) {
        image::imageops::replace(&mut out, img, 0, i64::from(y));
        y += img.height() + 2;
        for l in lines {
            text::draw_text(&mut out, l, 8.0, y as f32, PX, [30, 30, 30]);
            y += line;
        }
        y += 4;
    }
    out
}

/// Scales an image up by an integer factor with nearest-neighbour sampling (crisp pixels).
pub fn upscale(img: &image::RgbImage, factor: u32) -> image::RgbImage {
    image::imageops::resize(
        img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    )
}

/// Writes frames as a looping animated GIF, `frame_ms` per frame, atomically.
pub fn write_gif(
    path: &Path,
    frames: &[Rgb8Image],
    frame_ms: u32,
    scale: u32,
) -> std::io::Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(Repeat::Infinite)
            .map_err(std::io::Error::other)?;
        for f in frames {
            let rgba = image::DynamicImage::ImageRgb8(upscale(&f.to_image(), scale)).to_rgba8();
            let delay = image::Delay::from_numer_denom_ms(frame_ms, 1);
            enc.encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))
                .map_err(std::io::Error::other)?;
        }
    }
    crate::store::atomic::write_file(path, &bytes)
}

/// Writes an image as PNG atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(std::io::Error::other)?;
    crate::store::atomic::write_file(path, &bytes)
}

/// A loss curve: the loss of each step (light) and its running mean (dark), log-scaled, with
/// the loss at the top and bottom of the axis and the first and last step under it.
pub fn loss_plot(log: &[(u64, f32, f64)], width: u32, height: u32) -> image::RgbImage {
    const PX: f32 = 12.0;
    const INK: [u8; 3] = [40, 40, 40];
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let values: Vec<f32> = log.iter().map(|r| r.1.max(1e-6).ln()).collect();
    if values.len() < 2 {
        return img;
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = (hi - lo).max(1e-6);
    let loss_label = |v: f32| format!("{:.2e}", v.exp());
    let line = text::line_height(PX).ceil() as u32;
    let left = text::text_width(&loss_label(hi), PX)
        .max(text::text_width(&loss_label(lo), PX))
        .ceil() as u32
        + 8;
    let (top, bottom) = (line / 2 + 2, line + 6);
    let (plot_w, plot_h) = (
        width.saturating_sub(left + 8).max(2),
        height.saturating_sub(top + bottom).max(2),
    );
    for x in left..left + plot_w {
        for y in [top, top + plot_h - 1] {
            img.put_pixel(
                x.min(width - 1),
                y.min(height - 1),
                image::Rgb([220, 220, 220]),
            );
        }
    }
    let to_px = |i: usize, v: f32| {
        let x = left as f32 + i as f32 / (values.len() - 1) as f32 * (plot_w - 1) as f32;
        let y = top as f32 + (1.0 - (v - lo) / span) * (plot_h - 1) as f32;
        ((x as u32).min(width - 1), (y as u32).min(height - 1))
    };
    let window = (values.len() / 50).max(1);
    let mut sum = 0f32;
    for (i, v) in values.iter().enumerate() {
        let (x, y) = to_px(i, *v);
        img.put_pixel(x, y, image::Rgb([170, 190, 230]));
        sum += v;
        if i >= window {
            sum -= values[i - window];
        }
        let mean = sum / (i + 1).min(window) as f32;
        let (x, y) = to_px(i, mean);
        for dy in 0..2 {
            img.put_pixel(x, (y + dy).min(height - 1), image::Rgb([20, 60, 160]));
        }
    }
    let half = line as f32 / 2.0;
    for (v, y) in [(hi, top), (lo, top + plot_h - 1)] {
        let label = loss_label(v);
        let x = left as f32 - 4.0 - text::text_width(&label, PX);
        text::draw_text(&mut img, &label, x, y as f32 - half, PX, INK);
    }
    let steps = |r: &(u64, f32, f64)| format!("step {}", r.0);
    let (first, last) = (steps(&log[0]), steps(&log[log.len() - 1]));
    let y = (top + plot_h + 4) as f32;
    text::draw_text(&mut img, &first, left as f32, y, PX, INK);
    let x = (left + plot_w) as f32 - text::text_width(&last, PX);
    text::draw_text(&mut img, &last, x, y, PX, INK);
    text::draw_text(
        &mut img,
        "loss (log scale)",
        (left + 6) as f32,
        (top + 2) as f32,
        PX,
        INK,
    );
    img
}

/// Per-pixel difference of two frames of the same size as a heatmap (black: equal, through red
/// and yellow to white: maximal). The CPU path of the studio's difference view, which computes
/// the same map in `shaders/difference.wgsl` when a GPU is present.
pub fn difference_heatmap(a: &Rgb8Image, b: &Rgb8Image) -> Rgb8Image {
    let pixels = a
        .pixels
        .chunks_exact(3)
        .zip(b.pixels.chunks_exact(3))
        .flat_map(|(p, q)| {
            let d: f32 = p
                .iter()
                .zip(q)
                .map(|(&x, &y)| (f32::from(x) - f32::from(y)).abs())
                .sum::<f32>()
                / (3.0 * 255.0);
            heat(d)
        })
        .collect();
    Rgb8Image {
        width: a.width.min(b.width),
        height: a.height.min(b.height),
        pixels,
    }
}

/// Black -> red -> yellow -> white for `t` in 0..1 (amplified so small errors show).
fn heat(t: f32) -> [u8; 3] {
    let t = (t * 3.0).clamp(0.0, 1.0) * 3.0;
    let channel = |from: f32| ((t - from).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(0.0), channel(1.0), channel(2.0)]
}

#[cfg(test)]
mod difference_tests {
    use super::*;

    #[test]
    fn equal_frames_are_black_and_opposites_white() {
        let black = Rgb8Image {
            width: 2,
            height: 1,
            pixels: vec![0; 6],
        };
        let mixed = Rgb8Image {
            width: 2,
            height: 1,
            pixels: vec![0, 0, 0, 255, 255, 255],
        };
        let map = difference_heatmap(&black, &mixed);
        assert_eq!(map.pixels, vec![0, 0, 0, 255, 255, 255]);
        let small = Rgb8Image {
            width: 1,
            height: 1,
            pixels: vec![40, 0, 0],
        };
        let tiny = difference_heatmap(
            &small,
            &Rgb8Image {
                pixels: vec![0; 3],
                ..small.clone()
            },
        );
        assert!(
            tiny.pixels[0] > 0 && tiny.pixels[2] == 0,
            "small errors show as red"
        );
    }
}

#[cfg(test)]
mod caption_tests {
    use super::*;

    /// The curve falls from the top-left to the bottom-right of the plot, and the axis has
    /// its words (loss values left of the plot, steps under it).
    #[test]
    fn a_falling_loss_is_drawn_inside_its_labelled_axes() {
        let log: Vec<(u64, f32, f64)> = (1..=200).map(|s| (s, 0.3 / s as f32, 0.0)).collect();
        let img = loss_plot(&log, 400, 200);
        let dark = |x: u32, y: u32| img.get_pixel(x, y).0[0] < 180;
        let margin = (0..200).filter(|&y| (0..30).any(|x| dark(x, y))).count();
        assert!(margin > 10, "no loss labels left of the plot");
        let curve: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(x, y, p)| p.0 == [20, 60, 160] && *x > 60 && *y < 180)
            .map(|(x, y, _)| (x, y))
            .collect();
        let first = curve.iter().min_by_key(|p| p.0).expect("curve");
        let last = curve.iter().max_by_key(|p| p.0).expect("curve");
        assert!(first.1 < last.1, "the loss falls: {first:?} -> {last:?}");
    }

    /// Each row keeps its frames (scaled) and gets its caption in the band under it.
    #[test]
    fn captions_sit_under_their_rows() {
        let frame = |v: u8| Rgb8Image {
            width: 8,
            height: 8,
            pixels: vec![v; 8 * 8 * 3],
        };
        let rows = vec![vec![frame(0), frame(0)], vec![frame(0), frame(0)]];
        let captions = vec![
            "plan 0, reject: the block vanished".to_owned(),
            "plan 1 (chosen), accept: looks right".to_owned(),
        ];
        let sheet = captioned_rows(&rows, &captions, 4);
        let row_height = 4 * (8 + 2);
        assert_eq!(sheet.width(), 4 * (2 * 8 + 3));
        assert!(sheet.height() > 2 * row_height, "height {}", sheet.height());
        // The frames are black; below the first row there is grey text on white.
        assert_eq!(sheet.get_pixel(8, 8).0, [0, 0, 0]);
        let band = row_height + 2..row_height + 2 + text::line_height(15.0) as u32;
        let inked = band
            .flat_map(|y| (0..sheet.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| sheet.get_pixel(x, y).0[0] < 128)
            .count();
        assert!(inked > 20, "{inked} dark pixels in the caption band");
        let uncaptioned = captioned_rows(&rows, &[], 4);
        assert_eq!(uncaptioned.height(), 2 * (row_height + 6));
    }
}
