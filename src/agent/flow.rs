//! Dense optical flow between two RGB frames: Farnebäck's polynomial-expansion method
//! (Farnebäck 2003, the algorithm behind OpenCV's `calcOpticalFlowFarneback`), pyramidal,
//! on all three colour channels. Pure Rust, no dependencies; a 64 x 64 pair takes about a
//! millisecond.
//!
//! Why Farnebäck and not TV-L1: our frames are flat-coloured shapes on a smooth table, a few
//! pixels across. Farnebäck's per-pixel quadratic model extends to colour for free (the
//! normal equations of every channel are summed), so a red block on a grey table is as
//! visible to it as an edge in luminance; TV-L1's thresholding step has no closed form for
//! colour. Its Gaussian windows also fill the textureless inside of a small object from its
//! edges, which is where the points we track live. Large displacements (a plan's frames are
//! far apart in time) are handled by the pyramid and by a weak pull of each level towards the
//! coarser level's flow where the image has no structure.
//!
//! This module is not a tracker: [`super::motion`] follows points through the flows and fits
//! rigid motions robustly.

use crate::env::Rgb8Image;

/// Errors of the flow computation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlowError {
    #[error("frames differ in size ({a_width}x{a_height} vs {b_width}x{b_height})")]
    SizeMismatch {
        a_width: u32,
        a_height: u32,
        b_width: u32,
        b_height: u32,
    },
    #[error("frame of {width}x{height} is too small for optical flow (at least 8x8)")]
    TooSmall { width: u32, height: u32 },
    #[error("frame buffer holds {found} bytes, expected {expected}")]
    BadBuffer { found: usize, expected: usize },
    #[error("optical flow diverged (non-finite or larger than the frame)")]
    Diverged,
}

/// Parameters of [`dense_flow`]; the defaults suit 32 to 64 pixel frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowParams {
    /// Most pyramid levels (level 0 is the full frame).
    pub max_levels: usize,
    /// The coarsest level is at least this many pixels on its short side.
    pub min_level_size: u32,
    /// Refinements per level.
    pub iterations: usize,
    /// Radius of the polynomial expansion's neighbourhood.
    pub poly_radius: usize,
    /// Gaussian weighting of the polynomial expansion.
    pub poly_sigma: f32,
    /// Gaussian window over which the displacement constraints are pooled.
    pub window_sigma: f32,
    /// Pull towards the coarser level's flow where the image has no structure.
    pub prior_weight: f32,
}

impl Default for FlowParams {
    fn default() -> Self {
        Self {
            max_levels: 4,
            min_level_size: 8,
            iterations: 4,
            poly_radius: 3,
            poly_sigma: 1.2,
            window_sigma: 1.8,
            prior_weight: 2e-5,
        }
    }
}

/// A dense displacement field: `vectors[y * width + x]` is where the pixel (x, y) of the
/// first frame went in the second, as `[dx, dy]` in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowField {
    pub width: u32,
    pub height: u32,
    pub vectors: Vec<[f32; 2]>,
}

impl FlowField {
    pub fn zeros(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            vectors: vec![[0.0, 0.0]; (width * height) as usize],
        }
    }

    /// The flow at continuous pixel coordinates (pixel centres at `i + 0.5`), bilinear,
    /// clamped at the borders.
    pub fn sample(&self, x: f32, y: f32) -> [f32; 2] {
        let (w, h) = (self.width as usize, self.height as usize);
        let v = &self.vectors;
        [
            bilinear(w, h, x - 0.5, y - 0.5, |i| v[i][0]),
            bilinear(w, h, x - 0.5, y - 0.5, |i| v[i][1]),
        ]
    }

    /// Largest displacement, pixels.
    pub fn max_magnitude(&self) -> f32 {
        self.vectors
            .iter()
            .map(|v| v[0].hypot(v[1]))
            .fold(0.0, f32::max)
    }
}

/// Mean end-point error of `estimate` against `truth` over the pixels where `mask` holds
/// (every pixel if `None`); `None` if no pixel counts or the sizes differ.
pub fn end_point_error(
    estimate: &FlowField,
    truth: &FlowField,
    mask: Option<&[bool]>,
) -> Option<f32> {
    if estimate.vectors.len() != truth.vectors.len() {
        return None;
    }
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for (i, (e, t)) in estimate.vectors.iter().zip(&truth.vectors).enumerate() {
        if mask.is_some_and(|m| !m.get(i).copied().unwrap_or(false)) {
            continue;
        }
        sum += f64::from((e[0] - t[0]).hypot(e[1] - t[1]));
        n += 1;
    }
    (n > 0).then(|| (sum / n as f64) as f32)
}

/// Dense flow from `a` to `b` (same size, at least 8 x 8).
pub fn dense_flow(
    a: &Rgb8Image,
    b: &Rgb8Image,
    params: &FlowParams,
) -> Result<FlowField, FlowError> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(FlowError::SizeMismatch {
            a_width: a.width,
            a_height: a.height,
            b_width: b.width,
            b_height: b.height,
        });
    }
    if a.width < 8 || a.height < 8 {
        return Err(FlowError::TooSmall {
            width: a.width,
            height: a.height,
        });
    }
    let pa = Planes::from_rgb(a)?;
    let pb = Planes::from_rgb(b)?;
    let pyr_a = pyramid(pa, params);
    let pyr_b = pyramid(pb, params);
    let basis = PolyBasis::new(params.poly_radius, params.poly_sigma);
    let mut flow: Option<Field2> = None;
    for (la, lb) in pyr_a.iter().zip(&pyr_b).rev() {
        let prior = match flow {
            None => Field2::zeros(la.w, la.h),
            Some(f) => f.upsampled(la.w, la.h),
        };
        let ea = basis.expand(la);
        let eb = basis.expand(lb);
        let mut d = prior.clone();
        for _ in 0..params.iterations {
            d = update(&ea, &eb, &d, &prior, params);
        }
        // Small things that move unlike their surroundings (or not at all, while the
        // gripper sweeps past) are lost by the coarse levels: where standing still explains
        // the pixels better than the flow does, start again from zero there.
        let still = zero_where_better(la, lb, &d);
        if still.x != d.x || still.y != d.y {
            d = still.clone();
            for _ in 0..params.iterations.div_ceil(2) {
                d = update(&ea, &eb, &d, &still, params);
            }
        }
        flow = Some(d);
    }
    let flow = flow.ok_or(FlowError::TooSmall {
        width: a.width,
        height: a.height,
    })?;
    let field = FlowField {
        width: a.width,
        height: a.height,
        vectors: flow.x.iter().zip(&flow.y).map(|(x, y)| [*x, *y]).collect(),
    };
    let limit = a.width.max(a.height) as f32;
    if field
        .vectors
        .iter()
        .any(|v| !v[0].is_finite() || !v[1].is_finite() || v[0].hypot(v[1]) > limit)
    {
        return Err(FlowError::Diverged);
    }
    Ok(field)
}

/// Bilinear read of a `w` x `h` grid at (x, y) in index coordinates, clamped.
fn bilinear(w: usize, h: usize, x: f32, y: f32, at: impl Fn(usize) -> f32) -> f32 {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let top = at(y0 * w + x0) * (1.0 - fx) + at(y0 * w + x1) * fx;
    let bottom = at(y1 * w + x0) * (1.0 - fx) + at(y1 * w + x1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// A multi-channel float image, channel-planar, values in [0, 1].
#[derive(Clone, Debug)]
struct Planes {
    w: usize,
    h: usize,
    channels: Vec<Vec<f32>>,
}

impl Planes {
    fn from_rgb(img: &Rgb8Image) -> Result<Self, FlowError> {
        let (w, h) = (img.width as usize, img.height as usize);
        if img.pixels.len() != w * h * 3 {
            return Err(FlowError::BadBuffer {
                found: img.pixels.len(),
                expected: w * h * 3,
            });
        }
        let channels = (0..3)
            .map(|c| {
                img.pixels
                    .chunks_exact(3)
                    .map(|p| f32::from(p[c]) / 255.0)
                    .collect()
            })
            .collect();
        Ok(Self { w, h, channels })
    }

    /// Blurred with [1 4 6 4 1] / 16 and subsampled by two.
    fn half(&self) -> Self {
        let (w2, h2) = (self.w.div_ceil(2), self.h.div_ceil(2));
        let k = [1.0, 4.0, 6.0, 4.0, 1.0].map(|v: f32| v / 16.0);
        let channels = self
            .channels
            .iter()
            .map(|c| {
                let blurred = separable(c, self.w, self.h, &k);
                let mut out = Vec::with_capacity(w2 * h2);
                for y in 0..h2 {
                    for x in 0..w2 {
                        out.push(
                            blurred[(2 * y).min(self.h - 1) * self.w + (2 * x).min(self.w - 1)],
                        );
                    }
                }
                out
            })
            .collect();
        Self {
            w: w2,
            h: h2,
            channels,
        }
    }
}

fn pyramid(base: Planes, params: &FlowParams) -> Vec<Planes> {
    let mut levels = vec![base];
    while levels.len() < params.max_levels.max(1) {
        let last = &levels[levels.len() - 1];
        if (last.w.min(last.h) / 2) < params.min_level_size as usize {
            break;
        }
        let next = last.half();
        levels.push(next);
    }
    levels
}

/// Separable correlation with a symmetric odd kernel, borders clamped.
fn separable(src: &[f32], w: usize, h: usize, k: &[f32]) -> Vec<f32> {
    let r = (k.len() / 2) as isize;
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let mut tmp = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| kv * src[y * w + clamp(x as isize + i as isize - r, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| kv * tmp[clamp(y as isize + i as isize - r, h) * w + x])
                .sum();
        }
    }
    out
}

fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Per-pixel quadratic model `f(p + x) ~ x^T A x + b^T x + c` of one channel:
/// `[c, b1, b2, a11, a22, a12]` with `A = [[a11, a12/2], [a12/2, a22]]`.
struct Expansion {
    w: usize,
    h: usize,
    /// Per channel, six coefficient planes.
    coeffs: Vec<[Vec<f32>; 6]>,
}

/// The six correlation kernels of a Gaussian-weighted least-squares quadratic fit.
struct PolyBasis {
    radius: isize,
    kernels: [Vec<f32>; 6],
}

impl PolyBasis {
    fn new(radius: usize, sigma: f32) -> Self {
        let r = radius.max(1) as isize;
        let offsets: Vec<(f32, f32)> = (-r..=r)
            .flat_map(|y| (-r..=r).map(move |x| (x as f32, y as f32)))
            .collect();
        let phi = |x: f32, y: f32| [1.0, x, y, x * x, y * y, x * y];
        let weight = |x: f32, y: f32| (-(x * x + y * y) / (2.0 * sigma * sigma)).exp();
        let mut gram = [[0.0f64; 6]; 6];
        for &(x, y) in &offsets {
            let (p, w) = (phi(x, y), weight(x, y));
            for i in 0..6 {
                for j in 0..6 {
                    gram[i][j] += f64::from(w * p[i] * p[j]);
                }
            }
        }
        let inv = invert6(gram);
        let kernels = std::array::from_fn(|k| {
            offsets
                .iter()
                .map(|&(x, y)| {
                    let (p, w) = (phi(x, y), weight(x, y));
                    (0..6).map(|j| inv[k][j] * f64::from(w * p[j])).sum::<f64>() as f32
                })
                .collect()
        });
        Self { radius: r, kernels }
    }

    fn expand(&self, img: &Planes) -> Expansion {
        let (w, h) = (img.w, img.h);
        let r = self.radius;
        let side = (2 * r + 1) as usize;
        let coeffs = img
            .channels
            .iter()
            .map(|c| {
                let mut out: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0.0; w * h]);
                let mut patch = vec![0.0f32; side * side];
                for y in 0..h {
                    for x in 0..w {
                        for (i, v) in patch.iter_mut().enumerate() {
                            let dx = (i % side) as isize - r;
                            let dy = (i / side) as isize - r;
                            let sx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                            let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                            *v = c[sy * w + sx];
                        }
                        for (k, plane) in out.iter_mut().enumerate() {
                            plane[y * w + x] =
                                self.kernels[k].iter().zip(&patch).map(|(a, b)| a * b).sum();
                        }
                    }
                }
                out
            })
            .collect();
        Expansion { w, h, coeffs }
    }
}

/// Inverse of a symmetric positive definite 6 x 6 matrix (Gauss-Jordan with pivoting).
fn invert6(m: [[f64; 6]; 6]) -> [[f64; 6]; 6] {
    let mut a = m;
    let mut inv = [[0.0f64; 6]; 6];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..6 {
        let pivot = (col..6)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        if p.abs() < 1e-12 {
            continue;
        }
        for j in 0..6 {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for row in 0..6 {
            if row != col {
                let f = a[row][col];
                for j in 0..6 {
                    a[row][j] -= f * a[col][j];
                    inv[row][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

/// A flow field on one pyramid level, planar.
#[derive(Clone, Debug)]
struct Field2 {
    w: usize,
    h: usize,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Field2 {
    fn zeros(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            x: vec![0.0; w * h],
            y: vec![0.0; w * h],
        }
    }

    /// Resampled to `w` x `h`, vectors scaled with the size.
    fn upsampled(&self, w: usize, h: usize) -> Self {
        let (sx, sy) = (w as f32 / self.w as f32, h as f32 / self.h as f32);
        let mut out = Self::zeros(w, h);
        for py in 0..h {
            for px in 0..w {
                let cx = (px as f32 + 0.5) / sx - 0.5;
                let cy = (py as f32 + 0.5) / sy - 0.5;
                let i = py * w + px;
                out.x[i] = bilinear(self.w, self.h, cx, cy, |j| self.x[j]) * sx;
                out.y[i] = bilinear(self.w, self.h, cx, cy, |j| self.y[j]) * sy;
            }
        }
        out
    }
}

/// `d` with zero vectors where the 3 x 3 colour matching error of zero motion is clearly
/// lower than that of `d`.
fn zero_where_better(a: &Planes, b: &Planes, d: &Field2) -> Field2 {
    let (w, h) = (a.w, a.h);
    let cost = |x: usize, y: usize, dx: f32, dy: f32| -> f32 {
        let mut e = 0.0;
        for oy in -1isize..=1 {
            for ox in -1isize..=1 {
                let px = (x as isize + ox).clamp(0, w as isize - 1) as usize;
                let py = (y as isize + oy).clamp(0, h as isize - 1) as usize;
                for (ca, cb) in a.channels.iter().zip(&b.channels) {
                    let v = bilinear(w, h, px as f32 + dx, py as f32 + dy, |j| cb[j]);
                    e += (v - ca[py * w + px]).abs();
                }
            }
        }
        e
    };
    let mut out = d.clone();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if d.x[i].hypot(d.y[i]) < 0.5 {
                continue;
            }
            let moving = cost(x, y, d.x[i], d.y[i]);
            let still = cost(x, y, 0.0, 0.0);
            if still < 0.7 * moving && still < 0.3 {
                out.x[i] = 0.0;
                out.y[i] = 0.0;
            }
        }
    }
    out
}

/// One Farnebäck refinement: pooled normal equations of every channel, solved per pixel.
fn update(a: &Expansion, b: &Expansion, d: &Field2, prior: &Field2, params: &FlowParams) -> Field2 {
    let (w, h) = (a.w, a.h);
    let n = w * h;
    // g11, g12, g22, h1, h2
    let mut sums: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0.0; n]);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (dx, dy) = (d.x[i], d.y[i]);
            let (qx, qy) = (x as f32 + dx, y as f32 + dy);
            // Constraints whose match falls outside the frame are not trusted.
            let inside = qx >= -0.5 && qy >= -0.5 && qx <= w as f32 - 0.5 && qy <= h as f32 - 0.5;
            let trust = if inside { 1.0 } else { 0.05 };
            for (ca, cb) in a.coeffs.iter().zip(&b.coeffs) {
                let at = |plane: &Vec<f32>| bilinear(b.w, b.h, qx, qy, |j| plane[j]);
                let (b1a, b2a) = (ca[1][i], ca[2][i]);
                let (a11a, a22a, a12a) = (ca[3][i], ca[4][i], ca[5][i] * 0.5);
                let (b1b, b2b) = (at(&cb[1]), at(&cb[2]));
                let (a11b, a22b, a12b) = (at(&cb[3]), at(&cb[4]), at(&cb[5]) * 0.5);
                let a11 = 0.5 * (a11a + a11b);
                let a22 = 0.5 * (a22a + a22b);
                let a12 = 0.5 * (a12a + a12b);
                // Δb = -(b2 - b1)/2 + A d
                let db1 = -0.5 * (b1b - b1a) + a11 * dx + a12 * dy;
                let db2 = -0.5 * (b2b - b2a) + a12 * dx + a22 * dy;
                sums[0][i] += trust * (a11 * a11 + a12 * a12);
                sums[1][i] += trust * (a11 * a12 + a12 * a22);
                sums[2][i] += trust * (a12 * a12 + a22 * a22);
                sums[3][i] += trust * (a11 * db1 + a12 * db2);
                sums[4][i] += trust * (a12 * db1 + a22 * db2);
            }
        }
    }
    let k = gaussian_kernel(params.window_sigma);
    let pooled: Vec<Vec<f32>> = sums.iter().map(|s| separable(s, w, h, &k)).collect();
    let lambda = params.prior_weight;
    let mut out = Field2::zeros(w, h);
    #[allow(clippy::needless_range_loop)] // seven parallel planes indexed alike
    for i in 0..n {
        let (g11, g12, g22) = (pooled[0][i] + lambda, pooled[1][i], pooled[2][i] + lambda);
        let (h1, h2) = (
            pooled[3][i] + lambda * prior.x[i],
            pooled[4][i] + lambda * prior.y[i],
        );
        let det = g11 * g22 - g12 * g12;
        if det.abs() < 1e-20 || !det.is_finite() {
            out.x[i] = prior.x[i];
            out.y[i] = prior.y[i];
            continue;
        }
        out.x[i] = (g22 * h1 - g12 * h2) / det;
        out.y[i] = (g11 * h2 - g12 * h1) / det;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth colour texture, sampled through `warp` (output pixel -> source point).
    fn textured(size: u32, warp: impl Fn(f32, f32) -> (f32, f32)) -> Rgb8Image {
        let mut pixels = Vec::with_capacity((size * size * 3) as usize);
        for y in 0..size {
            for x in 0..size {
                let (u, v) = warp(x as f32 + 0.5, y as f32 + 0.5);
                let r = 0.5 + 0.25 * (u * 0.31).sin() + 0.2 * (v * 0.23 + u * 0.07).cos();
                let g = 0.5 + 0.3 * (v * 0.27).sin() * (u * 0.11).cos();
                let b = 0.5 + 0.25 * ((u + v) * 0.19).sin() + 0.1 * (u * 0.5).cos();
                for c in [r, g, b] {
                    pixels.push((c.clamp(0.0, 1.0) * 255.0).round() as u8);
                }
            }
        }
        Rgb8Image {
            width: size,
            height: size,
            pixels,
        }
    }

    /// Interior pixels (a margin away from the border, where motion leaves the frame).
    fn interior(size: u32, margin: u32) -> Vec<bool> {
        (0..size * size)
            .map(|i| {
                let (x, y) = (i % size, i / size);
                x >= margin && y >= margin && x < size - margin && y < size - margin
            })
            .collect()
    }

    #[test]
    fn recovers_a_translation() {
        let (tx, ty) = (2.6f32, -1.7f32);
        let a = textured(64, |x, y| (x, y));
        let b = textured(64, |x, y| (x - tx, y - ty));
        let flow = dense_flow(&a, &b, &FlowParams::default()).expect("flow");
        let truth = FlowField {
            width: 64,
            height: 64,
            vectors: vec![[tx, ty]; 64 * 64],
        };
        let epe = end_point_error(&flow, &truth, Some(&interior(64, 6))).expect("pixels");
        println!("translation ({tx}, {ty}) px: EPE {epe:.3} px");
        assert!(epe < 0.25, "EPE {epe}");
    }

    #[test]
    fn recovers_a_large_translation_through_the_pyramid() {
        let (tx, ty) = (-7.0f32, 5.5f32);
        let a = textured(64, |x, y| (x, y));
        let b = textured(64, |x, y| (x - tx, y - ty));
        let flow = dense_flow(&a, &b, &FlowParams::default()).expect("flow");
        let truth = FlowField {
            width: 64,
            height: 64,
            vectors: vec![[tx, ty]; 64 * 64],
        };
        let epe = end_point_error(&flow, &truth, Some(&interior(64, 10))).expect("pixels");
        println!("translation ({tx}, {ty}) px: EPE {epe:.3} px");
        assert!(epe < 0.5, "EPE {epe}");
    }

    #[test]
    fn recovers_a_rotation() {
        let angle = 0.08f32;
        let (c, s) = (32.0f32, angle.sin());
        let cos = angle.cos();
        // b(p) = a(R^-1 (p - c) + c): the content rotates by +angle about the centre.
        let a = textured(64, |x, y| (x, y));
        let b = textured(64, |x, y| {
            let (dx, dy) = (x - c, y - c);
            (cos * dx + s * dy + c, -s * dx + cos * dy + c)
        });
        let flow = dense_flow(&a, &b, &FlowParams::default()).expect("flow");
        let truth = FlowField {
            width: 64,
            height: 64,
            vectors: (0..64 * 64)
                .map(|i| {
                    let (x, y) = ((i % 64) as f32 + 0.5 - c, (i / 64) as f32 + 0.5 - c);
                    [cos * x - s * y - x, s * x + cos * y - y]
                })
                .collect(),
        };
        let epe = end_point_error(&flow, &truth, Some(&interior(64, 8))).expect("pixels");
        println!("rotation {angle} rad (up to 2.3 px): EPE {epe:.3} px");
        assert!(epe < 0.3, "EPE {epe}");
    }

    #[test]
    fn identical_frames_give_zero_flow_and_bad_input_is_an_error() {
        let a = textured(32, |x, y| (x, y));
        let flow = dense_flow(&a, &a, &FlowParams::default()).expect("flow");
        assert!(flow.max_magnitude() < 1e-3);
        let small = textured(4, |x, y| (x, y));
        assert!(matches!(
            dense_flow(&small, &small, &FlowParams::default()),
            Err(FlowError::TooSmall { .. })
        ));
        assert!(matches!(
            dense_flow(&a, &textured(64, |x, y| (x, y)), &FlowParams::default()),
            Err(FlowError::SizeMismatch { .. })
        ));
        let mut broken = a.clone();
        broken.pixels.truncate(10);
        assert!(matches!(
            dense_flow(&broken, &a, &FlowParams::default()),
            Err(FlowError::BadBuffer { .. })
        ));
    }

    /// EPE against the world's exact flow between consecutive frames of an expert video
    /// subsampled like a plan (8 frames), on the task object's pixels and on all pixels.
    fn world_epe(task: &str, view: usize, seed: u64, size: u32) -> (f32, f32, f32) {
        use crate::env::demo::record_expert;
        use crate::env::tabletop::{Tabletop, TaskKind, ground_truth_flow};
        let mut world = Tabletop::new(size).expect("world");
        let demo = record_expert(&mut world, task, view, seed).expect("demo");
        let object = TaskKind::from_name(task).expect("task").task_object();
        let id = demo
            .labels
            .iter()
            .position(|l| l == object)
            .expect("object") as u8;
        let idx = crate::store::dataset::clip_indices(demo.frames.len(), 0);
        let (mut obj, mut all, mut mag) = (Vec::new(), Vec::new(), Vec::new());
        for w in idx.windows(2) {
            let (i, j) = (w[0], w[1]);
            let truth = FlowField {
                width: size,
                height: size,
                vectors: ground_truth_flow(
                    view,
                    size,
                    &demo.segmentations[i],
                    &demo.labels,
                    &demo.states[i],
                    &demo.states[j],
                )
                .expect("truth"),
            };
            let est =
                dense_flow(&demo.frames[i], &demo.frames[j], &FlowParams::default()).expect("flow");
            let mask: Vec<bool> = demo.segmentations[i].iter().map(|s| *s == id).collect();
            if let Some(e) = end_point_error(&est, &truth, Some(&mask)) {
                obj.push(e);
                let zero = FlowField::zeros(size, size);
                mag.push(end_point_error(&truth, &zero, Some(&mask)).unwrap_or(0.0));
            }
            all.extend(end_point_error(&est, &truth, None));
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        (mean(&obj), mean(&all), mean(&mag))
    }

    #[test]
    fn world_frames_flow_matches_the_exact_flow() {
        let mut worst = 0.0f32;
        for (task, view, seed) in [("push", 0, 1), ("door-open", 1, 2), ("drawer-close", 2, 3)] {
            let (obj, all, mag) = world_epe(task, view, seed, 64);
            println!(
                "{task} view {view}: object EPE {obj:.2} px (object moves {mag:.2} px per plan step), all-pixel EPE {all:.2} px"
            );
            worst = worst.max(obj / mag.max(1.0));
        }
        assert!(worst < 0.5, "object EPE above half the motion: {worst}");
    }

    /// The full table of world EPEs: `cargo test --release --lib world_flow_epe_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn world_flow_epe_table() {
        use crate::env::tabletop::TaskKind;
        for size in [64, 32] {
            for task in TaskKind::ALL {
                let mut row = String::new();
                for view in 0..3 {
                    let mut acc = (0.0, 0.0, 0.0);
                    for seed in 0..5 {
                        let e = world_epe(task.name(), view, seed, size);
                        acc = (acc.0 + e.0 / 5.0, acc.1 + e.1 / 5.0, acc.2 + e.2 / 5.0);
                    }
                    row += &format!(
                        "  v{view}: obj {:.2} / motion {:.2} / all {:.2}",
                        acc.0, acc.2, acc.1
                    );
                }
                println!("{size}px {:<13}{row}", task.name());
            }
        }
    }
}
