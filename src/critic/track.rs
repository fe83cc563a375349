//! Colour tracking for the perception critic: every label of the start frame gets colour
//! prototypes (clusters of its interior pixels), and each pixel of a later frame is given to
//! the label of its nearest prototype, or to nobody when no prototype is close. Working on
//! interiors and leaving far colours unassigned is what keeps the blended pixels at object
//! edges of a low-resolution plan from being counted as some other object.

use crate::env::Rgb8Image;

/// A pixel no prototype is close to.
pub const UNKNOWN: u8 = 255;
/// A pixel whose nearest prototype is shared by two labels (e.g. a white handle and the
/// white gripper): something is there, but we cannot say what.
pub const AMBIGUOUS: u8 = 254;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Prototype {
    label: u8,
    colour: [f32; 3],
    ambiguous: bool,
    /// Colour distance within which a pixel may be given to it.
    tolerance: f32,
    /// An appearance the start frame does not show (given by the caller).
    extra: bool,
}

fn dist2(a: [f32; 3], p: &[u8]) -> f32 {
    (0..3).map(|c| (f32::from(p[c]) - a[c]).powi(2)).sum()
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f32>().sqrt()
}

/// Colour prototypes of the labels of one start frame.
#[derive(Clone, Debug)]
pub struct Tracker {
    size: usize,
    protos: Vec<Prototype>,
    tolerance: f32,
}

/// Mass, centroid and bounding box of a set of pixels (pixel units of the judged frame).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blob {
    pub mass: usize,
    pub centroid: [f32; 2],
    /// min x, min y, max x, max y (inclusive).
    pub bbox: [usize; 4],
    /// Orientation of the principal axis, radians in (-pi/2, pi/2].
    pub axis: f32,
}

impl Blob {
    fn from_pixels(size: usize, pixels: impl Iterator<Item = usize>) -> Option<Self> {
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) =
            (0usize, 0f64, 0f64, 0f64, 0f64, 0f64);
        let mut bbox = [usize::MAX, usize::MAX, 0, 0];
        for i in pixels {
            let (x, y) = (i % size, i / size);
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            n += 1;
            sx += fx;
            sy += fy;
            sxx += fx * fx;
            syy += fy * fy;
            sxy += fx * fy;
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
        if n == 0 {
            return None;
        }
        let nf = n as f64;
        let (mx, my) = (sx / nf, sy / nf);
        let (cxx, cyy, cxy) = (sxx / nf - mx * mx, syy / nf - my * my, sxy / nf - mx * my);
        Some(Self {
            mass: n,
            centroid: [mx as f32, my as f32],
            bbox,
            axis: (0.5 * (2.0 * cxy).atan2(cxx - cyy)) as f32,
        })
    }

    /// Empty pixels between two boxes (0 if they touch or overlap).
    pub fn gap(&self, other: &Blob) -> usize {
        let gx = self.bbox[0]
            .saturating_sub(other.bbox[2] + 1)
            .max(other.bbox[0].saturating_sub(self.bbox[2] + 1));
        let gy = self.bbox[1]
            .saturating_sub(other.bbox[3] + 1)
            .max(other.bbox[1].saturating_sub(self.bbox[3] + 1));
        gx.max(gy)
    }

    pub fn distance(&self, other: &Blob) -> f32 {
        (self.centroid[0] - other.centroid[0]).hypot(self.centroid[1] - other.centroid[1])
    }

    /// The box grown by `pad` pixels on every side, clipped to a `size` frame.
    pub fn padded(&self, pad: usize, size: usize) -> [usize; 4] {
        [
            self.bbox[0].saturating_sub(pad),
            self.bbox[1].saturating_sub(pad),
            (self.bbox[2] + pad).min(size - 1),
            (self.bbox[3] + pad).min(size - 1),
        ]
    }
}

/// A frame with every pixel given to a label, [`UNKNOWN`] or [`AMBIGUOUS`].
#[derive(Clone, Debug)]
pub struct LabelMap {
    pub size: usize,
    pub ids: Vec<u8>,
}

impl LabelMap {
    /// The pixels of `label` without stray specks: the pieces of at least 2 pixels and a
    /// tenth of the largest piece.
    pub fn blob(&self, label: u8) -> Option<Blob> {
        let pieces = self.components(label);
        let min = (pieces.first()?.mass / 10).max(2);
        let kept: Vec<&Blob> = pieces.iter().filter(|p| p.mass >= min).collect();
        let mass: usize = kept.iter().map(|p| p.mass).sum();
        if mass == 0 {
            return None;
        }
        let c = |k: usize| {
            kept.iter()
                .map(|p| p.centroid[k] * p.mass as f32)
                .sum::<f32>()
                / mass as f32
        };
        let bbox = kept.iter().fold([usize::MAX, usize::MAX, 0, 0], |b, p| {
            [
                b[0].min(p.bbox[0]),
                b[1].min(p.bbox[1]),
                b[2].max(p.bbox[2]),
                b[3].max(p.bbox[3]),
            ]
        });
        Some(Blob {
            mass,
            centroid: [c(0), c(1)],
            bbox,
            axis: pieces.first().map_or(0.0, |p| p.axis),
        })
    }

    /// 8-connected components of `label`, largest first.
    pub fn components(&self, label: u8) -> Vec<Blob> {
        let s = self.size;
        let mut seen = vec![false; self.ids.len()];
        let mut out = Vec::new();
        for start in 0..self.ids.len() {
            if seen[start] || self.ids[start] != label {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut members = Vec::new();
            while let Some(i) = stack.pop() {
                members.push(i);
                let (x, y) = ((i % s) as isize, (i / s) as isize);
                for dy in -1..=1isize {
                    for dx in -1..=1isize {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= s as isize || ny >= s as isize {
                            continue;
                        }
                        let j = ny as usize * s + nx as usize;
                        if !seen[j] && self.ids[j] == label {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.extend(Blob::from_pixels(s, members.into_iter()));
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.mass));
        out
    }

    /// How many pixels inside `rect` (inclusive) satisfy `pred`, and the rect's area.
    pub fn count_in(&self, rect: [usize; 4], pred: impl Fn(u8) -> bool) -> (usize, usize) {
        let mut hit = 0;
        for y in rect[1]..=rect[3] {
            for x in rect[0]..=rect[2] {
                if pred(self.ids[y * self.size + x]) {
                    hit += 1;
                }
            }
        }
        (hit, (rect[2] + 1 - rect[0]) * (rect[3] + 1 - rect[1]))
    }
}

impl Tracker {
    /// Prototypes from `frame` (the world's sharp rendering) and its label map `seg` (same
    /// size), judging frames of `size` pixels, plus `extra` (label, colour) appearances a label may take later (a closed
    /// gripper, a pressed button). Prototypes of two labels closer than `ambiguity` are marked
    /// ambiguous; an object prototype that close to a table prototype is dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: usize,
        frame: &Rgb8Image,
        seg: &[u8],
        labels: usize,
        extra: &[(u8, [f32; 3])],
        tolerance: f32,
        ambiguity: f32,
    ) -> Self {
        let proto = |label, colour| Prototype {
            label,
            colour,
            ambiguous: false,
            tolerance,
            extra: false,
        };
        let mut protos: Vec<Prototype> = clusters(frame, seg, 0, None)
            .into_iter()
            .map(|c| proto(0, c))
            .collect();
        let table = protos.first().map(|p| p.colour);
        for label in 1..labels.min(usize::from(AMBIGUOUS)) as u8 {
            for colour in clusters(frame, seg, label, table) {
                protos.push(proto(label, colour));
            }
        }
        for &(label, colour) in extra {
            protos.push(Prototype {
                extra: true,
                ..proto(label, colour)
            });
        }
        let tables: Vec<[f32; 3]> = protos
            .iter()
            .filter(|p| p.label == 0)
            .map(|p| p.colour)
            .collect();
        protos.retain(|p| p.label == 0 || tables.iter().all(|t| dist(*t, p.colour) > ambiguity));
        // An appearance the start frame does not show yields to colours it does show.
        let seen: Vec<Prototype> = protos.iter().filter(|p| !p.extra).copied().collect();
        protos.retain(|p| {
            !p.extra
                || seen
                    .iter()
                    .all(|q| q.label == p.label || dist(q.colour, p.colour) > ambiguity)
        });
        let snapshot = protos.clone();
        for p in &mut protos {
            p.ambiguous = snapshot
                .iter()
                .any(|q| q.label != p.label && dist(q.colour, p.colour) <= ambiguity);
        }
        let mut tracker = Self {
            size,
            protos,
            tolerance,
        };
        tracker.set_tolerances();
        tracker
    }

    /// A pixel may only go to a prototype it is clearly nearer to than to any other label's:
    /// each tolerance is capped at 0.6 of the distance to the nearest other-label prototype.
    fn set_tolerances(&mut self) {
        let snapshot = self.protos.clone();
        for p in &mut self.protos {
            let nearest = snapshot
                .iter()
                .filter(|q| q.label != p.label)
                .map(|q| dist(q.colour, p.colour))
                .fold(f32::INFINITY, f32::min);
            p.tolerance = self.tolerance.min(0.6 * nearest).max(8.0);
        }
        tracing::debug!("prototypes {:?}", self.protos);
    }

    /// Adds, for labels with fewer than `min_mass` pixels of their sharp colour in
    /// `reference` (thin or small things a low-resolution plan blurs into the table), the
    /// blurred colours they have there (`seg`: labels at the reference's size), and the same
    /// blur applied to their other appearances (a closed gripper), where distinct from every
    /// other label's colours by `distinct`.
    pub fn add_blurred(
        &mut self,
        reference: &Rgb8Image,
        seg: &[u8],
        min_mass: usize,
        distinct: f32,
        blur_extras: &[u8],
    ) {
        let map = self.assign(reference);
        let Some(table) = self.protos.iter().find(|p| p.label == 0).map(|p| p.colour) else {
            return;
        };
        let mut labels: Vec<u8> = self.protos.iter().map(|p| p.label).collect();
        labels.dedup();
        for label in labels.into_iter().filter(|&l| l != 0) {
            // Thin things get their blurred colour and blurred appearances; `blur_extras` (the
            // gripper, whose closed colour blurs like its open one) get blurred appearances.
            let thin = map.ids.iter().filter(|&&id| id == label).count() < min_mass;
            if !thin && !blur_extras.contains(&label) {
                continue;
            }
            let Some(primary) = self.protos.iter().find(|p| p.label == label && !p.extra) else {
                continue;
            };
            let primary = primary.colour;
            let extras: Vec<[f32; 3]> = self
                .protos
                .iter()
                .filter(|p| p.label == label && p.extra)
                .map(|p| p.colour)
                .collect();
            let span: [f32; 3] = [0, 1, 2].map(|c| primary[c] - table[c]);
            let span2: f32 = span.iter().map(|v| v * v).sum::<f32>().max(1.0);
            // The main blurred colour only: the smaller clusters are blends with neighbours.
            for blurred in clusters(reference, seg, label, Some(table))
                .into_iter()
                .take(1)
            {
                let alpha = ([0, 1, 2]
                    .map(|c| (blurred[c] - table[c]) * span[c])
                    .iter()
                    .sum::<f32>()
                    / span2)
                    .clamp(0.2, 1.0);
                let mut candidates = if thin { vec![blurred] } else { Vec::new() };
                candidates.extend(
                    extras
                        .iter()
                        .map(|q| [0, 1, 2].map(|c| alpha * q[c] + (1.0 - alpha) * table[c])),
                );
                for colour in candidates {
                    let clear = self
                        .protos
                        .iter()
                        .all(|q| q.label == label || dist(q.colour, colour) >= distinct);
                    if clear {
                        self.protos.push(Prototype {
                            label,
                            colour,
                            ambiguous: false,
                            tolerance: self.tolerance,
                            extra: false,
                        });
                    }
                }
            }
        }
        self.set_tolerances();
    }

    /// Labels every pixel of `frame` (which must be the tracker's size).
    pub fn assign(&self, frame: &Rgb8Image) -> LabelMap {
        let ids = frame
            .pixels
            .chunks_exact(3)
            .map(|p| {
                let best = self
                    .protos
                    .iter()
                    .map(|q| (dist2(q.colour, p), q))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                match best {
                    Some((d, q)) if d <= q.tolerance * q.tolerance => {
                        if q.ambiguous {
                            AMBIGUOUS
                        } else {
                            q.label
                        }
                    }
                    _ => UNKNOWN,
                }
            })
            .collect();
        LabelMap {
            size: self.size,
            ids,
        }
    }

    /// Whether `label` has any unambiguous prototype (whether it can be tracked at all).
    pub fn trackable(&self, label: u8) -> bool {
        self.protos.iter().any(|p| p.label == label && !p.ambiguous)
    }
}

/// Colour clusters of `label`, largest first, as mean colours: of its interior pixels, or,
/// for things too thin to have an interior, of the third of its pixels farthest from the
/// `table` colour (the least blended). Clusters of under 10% of the pixels are dropped.
fn clusters(frame: &Rgb8Image, seg: &[u8], label: u8, table: Option<[f32; 3]>) -> Vec<[f32; 3]> {
    const RADIUS: f32 = 30.0;
    let s = frame.width as usize;
    let all: Vec<usize> = (0..seg.len()).filter(|&i| seg[i] == label).collect();
    let interior: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| {
            let (x, y) = (i % s, i / s);
            x > 0
                && y > 0
                && x + 1 < s
                && y + 1 < s
                && [i - 1, i + 1, i - s, i + s]
                    .iter()
                    .all(|&j| seg[j] == label)
        })
        .collect();
    let pick: Vec<usize> = match table {
        Some(t) if interior.len() < 3 => {
            let mut by: Vec<(f32, usize)> = all
                .iter()
                .map(|&i| (dist2(t, &frame.pixels[i * 3..i * 3 + 3]), i))
                .collect();
            by.sort_by(|a, b| b.0.total_cmp(&a.0));
            by.truncate(all.len().div_ceil(3));
            by.into_iter().map(|(_, i)| i).collect()
        }
        _ if interior.is_empty() => all,
        _ => interior,
    };
    let mut sums: Vec<([f64; 3], usize)> = Vec::new();
    for &i in &pick {
        let p = &frame.pixels[i * 3..i * 3 + 3];
        let near = sums.iter_mut().find(|(sum, n)| {
            let mean = sum.map(|v| (v / *n as f64) as f32);
            dist2(mean, p) <= RADIUS * RADIUS
        });
        match near {
            Some((sum, n)) => {
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
                *n += 1;
            }
            None => sums.push(([0, 1, 2].map(|c| f64::from(p[c])), 1)),
        }
    }
    let min = (pick.len() / 10).max(1);
    sums.sort_by_key(|b| std::cmp::Reverse(b.1));
    sums.into_iter()
        .filter(|(_, n)| *n >= min)
        .map(|(sum, n)| sum.map(|v| (v / n as f64) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(size: usize, paint: impl Fn(usize, usize) -> [u8; 3]) -> Rgb8Image {
        let mut pixels = Vec::new();
        for y in 0..size {
            for x in 0..size {
                pixels.extend(paint(x, y));
            }
        }
        Rgb8Image {
            width: size as u32,
            height: size as u32,
            pixels,
        }
    }

    #[test]
    fn assigns_nearest_prototype_and_leaves_far_colours_unknown() {
        let inside = |x: usize, y: usize| (4..10).contains(&x) && (4..10).contains(&y);
        let f = frame(16, |x, y| {
            if inside(x, y) {
                [220, 40, 40]
            } else {
                [60, 70, 90]
            }
        });
        let seg: Vec<u8> = (0..256).map(|i| u8::from(inside(i % 16, i / 16))).collect();
        let t = Tracker::new(16, &f, &seg, 2, &[], 40.0, 25.0);
        let later = frame(16, |x, y| match (x, y) {
            (12, 12) => [140, 55, 65], // an edge blend: neither block nor table
            _ if inside(x, y) => [210, 50, 50],
            _ => [65, 72, 88],
        });
        let map = t.assign(&later);
        let block = map.blob(1).expect("block");
        assert_eq!(block.mass, 36);
        assert_eq!(block.centroid, [7.0, 7.0]);
        assert_eq!(map.ids[12 * 16 + 12], UNKNOWN);
        assert_eq!(map.components(1).len(), 1);
    }

    #[test]
    fn separate_pieces_are_separate_components() {
        let f = frame(16, |x, _| {
            if !(3..=12).contains(&x) {
                [220, 40, 40]
            } else {
                [0; 3]
            }
        });
        let map = LabelMap {
            size: 16,
            ids: f
                .pixels
                .chunks_exact(3)
                .map(|p| u8::from(p[0] > 0))
                .collect(),
        };
        let comps = map.components(1);
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[0].gap(&comps[1]), 10);
    }
}
