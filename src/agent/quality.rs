//! How good a generated plan is, measured against the expert's video from the same start:
//! per-frame PSNR and SSIM, and where the task object ends up (found by its colour, the way
//! the paper's critics and AVDC's trackers see objects).

use serde::Serialize;

use crate::env::Rgb8Image;

/// Peak signal-to-noise ratio in dB of two same-size RGB frames (capped at 60 dB).
pub fn psnr(a: &Rgb8Image, b: &Rgb8Image) -> f64 {
    let mse = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.pixels.len() as f64;
    if mse <= 1e-6 {
        60.0
    } else {
        (10.0 * (255.0f64.powi(2) / mse).log10()).min(60.0)
    }
}

fn luma(f: &Rgb8Image) -> Vec<f64> {
    f.pixels
        .chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Mean SSIM of the luminance over 7 x 7 windows (stride 1, constants of Wang et al. 2004).
pub fn ssim(a: &Rgb8Image, b: &Rgb8Image) -> f64 {
    const WIN: usize = 7;
    let (w, h) = (a.width as usize, a.height as usize);
    if w < WIN || h < WIN {
        return f64::NAN;
    }
    let (la, lb) = (luma(a), luma(b));
    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let n = (WIN * WIN) as f64;
    let mut total = 0.0;
    let mut count = 0usize;
    for y in 0..=h - WIN {
        for x in 0..=w - WIN {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..WIN {
                for dx in 0..WIN {
                    let i = (y + dy) * w + x + dx;
                    let (p, q) = (la[i], lb[i]);
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let va = saa / n - ma * ma;
            let vb = sbb / n - mb * mb;
            let cov = sab / n - ma * mb;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count as f64
}

/// An object's appearance: its mean colour on frame 0 (from the world's segmentation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ColourKey {
    pub rgb: [f32; 3],
}

impl ColourKey {
    /// Mean colour of the pixels labelled `id` in `seg` (None if there are none).
    pub fn from_mask(frame: &Rgb8Image, seg: &[u8], id: u8) -> Option<Self> {
        let (mut sum, mut n) = ([0f64; 3], 0usize);
        for (i, _) in seg.iter().enumerate().filter(|(_, s)| **s == id) {
            for (c, s) in sum.iter_mut().enumerate() {
                *s += f64::from(frame.pixels[i * 3 + c]);
            }
            n += 1;
        }
        (n > 0).then(|| Self {
            rgb: sum.map(|s| (s / n as f64) as f32),
        })
    }

    fn distance(&self, p: &[u8]) -> f32 {
        (0..3)
            .map(|c| (f32::from(p[c]) - self.rgb[c]).powi(2))
            .sum::<f32>()
            .sqrt()
    }
}

/// Centroid (x, y) in pixels and pixel count of the pixels within `tolerance` of `key`.
pub fn locate(frame: &Rgb8Image, key: &ColourKey, tolerance: f32) -> Option<([f32; 2], usize)> {
    let w = frame.width as usize;
    let (mut sx, mut sy, mut n) = (0f64, 0f64, 0usize);
    for (i, p) in frame.pixels.chunks_exact(3).enumerate() {
        if key.distance(p) <= tolerance {
            sx += (i % w) as f64 + 0.5;
            sy += (i / w) as f64 + 0.5;
            n += 1;
        }
    }
    (n > 0).then(|| ([(sx / n as f64) as f32, (sy / n as f64) as f32], n))
}

/// Nearest-neighbour resize of a label map from `from` to `to` pixels per side.
pub fn resize_labels(seg: &[u8], from: usize, to: usize) -> Vec<u8> {
    (0..to * to)
        .map(|i| {
            let (x, y) = (i % to, i / to);
            seg[(y * from / to) * from + x * from / to]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: u8) -> Rgb8Image {
        Rgb8Image {
            width: 16,
            height: 16,
            pixels: vec![v; 16 * 16 * 3],
        }
    }

    #[test]
    fn identical_frames_score_perfectly() {
        let a = flat(100);
        assert_eq!(psnr(&a, &a), 60.0);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
        let b = flat(110);
        assert!((psnr(&a, &b) - 20.0 * (255.0f64 / 10.0).log10()).abs() < 1e-9);
        assert!(ssim(&a, &b) < 1.0);
    }

    #[test]
    fn locates_a_coloured_square() {
        let mut f = flat(0);
        for y in 4..8 {
            for x in 10..14 {
                let i = (y * 16 + x) * 3;
                f.pixels[i] = 220;
            }
        }
        let key = ColourKey {
            rgb: [220.0, 0.0, 0.0],
        };
        let (c, n) = locate(&f, &key, 30.0).expect("found");
        assert_eq!(n, 16);
        assert_eq!(c, [12.0, 6.0]);
    }
}
