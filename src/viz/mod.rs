//! Pictures for people: frame strips, grids and animated GIFs of plans and demonstrations.

pub mod gpu_difference;

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

/// A loss curve: the loss of each step (light) and its running mean (dark), log-scaled.
pub fn loss_plot(log: &[(u64, f32, f64)], width: u32, height: u32) -> image::RgbImage {
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let values: Vec<f32> = log.iter().map(|r| r.1.max(1e-6).ln()).collect();
    if values.len() < 2 {
        return img;
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = (hi - lo).max(1e-6);
    let to_px = |i: usize, v: f32| {
        let x = i as f32 / (values.len() - 1) as f32 * (width - 1) as f32;
        let y = (1.0 - (v - lo) / span) * (height - 1) as f32;
        (x as u32, y as u32)
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
