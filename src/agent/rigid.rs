//! 2D rigid and similarity transforms: closed-form least-squares fits (Umeyama 1991 in the
//! plane) and a RANSAC wrapper that ignores outliers (points the flow got wrong, pixels the
//! gripper hides). Used by [`super::motion`] to turn tracked points into object motion.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `p -> scale * R(angle) * p + translation`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity2 {
    pub scale: f32,
    pub angle: f32,
    pub translation: [f32; 2],
}

impl Default for Similarity2 {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Similarity2 {
    pub const IDENTITY: Self = Self {
        scale: 1.0,
        angle: 0.0,
        translation: [0.0, 0.0],
    };

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let (s, c) = self.angle.sin_cos();
        [
            self.scale * (c * p[0] - s * p[1]) + self.translation[0],
            self.scale * (s * p[0] + c * p[1]) + self.translation[1],
        ]
    }

    /// `self` after `first`: `p -> self(first(p))`.
    pub fn after(&self, first: &Self) -> Self {
        Self {
            scale: self.scale * first.scale,
            angle: wrap_angle(self.angle + first.angle),
            translation: self.apply(first.translation),
        }
    }

    pub fn is_finite(&self) -> bool {
        self.scale.is_finite()
            && self.angle.is_finite()
            && self.translation.iter().all(|v| v.is_finite())
    }
}

fn wrap_angle(a: f32) -> f32 {
    let tau = std::f32::consts::TAU;
    let a = a.rem_euclid(tau);
    if a > std::f32::consts::PI { a - tau } else { a }
}

/// Least-squares transform mapping `src[i]` to `dst[i]`; rigid (scale 1) unless
/// `with_scale`. `None` for fewer than two pairs or degenerate input.
pub fn fit_least_squares(
    src: &[[f32; 2]],
    dst: &[[f32; 2]],
    with_scale: bool,
) -> Option<Similarity2> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mean = |v: &[[f32; 2]]| {
        let s = v[..n].iter().fold([0.0f64; 2], |a, p| {
            [a[0] + f64::from(p[0]), a[1] + f64::from(p[1])]
        });
        [s[0] / n as f64, s[1] / n as f64]
    };
    let (cs, cd) = (mean(src), mean(dst));
    let (mut a, mut b, mut var) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in src[..n].iter().zip(&dst[..n]) {
        let (x, y) = (f64::from(p[0]) - cs[0], f64::from(p[1]) - cs[1]);
        let (u, v) = (f64::from(q[0]) - cd[0], f64::from(q[1]) - cd[1]);
        a += x * u + y * v;
        b += x * v - y * u;
        var += x * x + y * y;
    }
    if var < 1e-12 {
        return None;
    }
    let angle = b.atan2(a);
    let scale = if with_scale { a.hypot(b) / var } else { 1.0 };
    let (s, c) = angle.sin_cos();
    let t = [
        cd[0] - scale * (c * cs[0] - s * cs[1]),
        cd[1] - scale * (s * cs[0] + c * cs[1]),
    ];
    let out = Similarity2 {
        scale: scale as f32,
        angle: angle as f32,
        translation: [t[0] as f32, t[1] as f32],
    };
    out.is_finite().then_some(out)
}

/// Settings of [`ransac`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RansacParams {
    pub iterations: usize,
    /// A pair is an inlier when the transform maps `src` within this distance of `dst`.
    pub threshold: f32,
    pub with_scale: bool,
    /// Seed of the sampling (same input, same result).
    pub seed: u64,
}

/// A robust fit: the transform refitted on its inliers.
#[derive(Clone, Debug, PartialEq)]
pub struct RobustFit {
    pub transform: Similarity2,
    pub inliers: Vec<bool>,
}

impl RobustFit {
    pub fn inlier_count(&self) -> usize {
        self.inliers.iter().filter(|i| **i).count()
    }
}

/// RANSAC over two-point samples, then a least-squares refit on the inliers of the best
/// hypothesis. `None` if no hypothesis explains at least two pairs.
pub fn ransac(src: &[[f32; 2]], dst: &[[f32; 2]], params: &RansacParams) -> Option<RobustFit> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let inliers_of = |t: &Similarity2| -> Vec<bool> {
        src[..n]
            .iter()
            .zip(&dst[..n])
            .map(|(p, q)| {
                let m = t.apply(*p);
                (m[0] - q[0]).hypot(m[1] - q[1]) <= params.threshold
            })
            .collect()
    };
    let count = |v: &[bool]| v.iter().filter(|i| **i).count();
    let mut best: Option<(Similarity2, Vec<bool>)> = None;
    for _ in 0..params.iterations.max(1) {
        let i = rng.random_range(0..n);
        let j = rng.random_range(0..n);
        if i == j {
            continue;
        }
        let Some(t) = fit_least_squares(&[src[i], src[j]], &[dst[i], dst[j]], params.with_scale)
        else {
            continue;
        };
        let inl = inliers_of(&t);
        if best.as_ref().is_none_or(|(_, b)| count(&inl) > count(b)) {
            best = Some((t, inl));
        }
    }
    // Every point moving alike (or two points only) may never be sampled as a distinct pair
    // with spread; the plain fit is the fallback hypothesis.
    if let Some(t) = fit_least_squares(&src[..n], &dst[..n], params.with_scale) {
        let inl = inliers_of(&t);
        if best.as_ref().is_none_or(|(_, b)| count(&inl) > count(b)) {
            best = Some((t, inl));
        }
    }
    let (mut transform, mut inliers) = best?;
    // Two rounds of refitting on the inliers (the set can grow as the fit improves).
    for _ in 0..2 {
        let (s, d): (Vec<[f32; 2]>, Vec<[f32; 2]>) = src[..n]
            .iter()
            .zip(&dst[..n])
            .zip(&inliers)
            .filter(|(_, keep)| **keep)
            .map(|((p, q), _)| (*p, *q))
            .unzip();
        let Some(t) = fit_least_squares(&s, &d, params.with_scale) else {
            break;
        };
        let inl = inliers_of(&t);
        if count(&inl) < count(&inliers) {
            break;
        }
        transform = t;
        inliers = inl;
    }
    (count(&inliers) >= 2).then_some(RobustFit { transform, inliers })
}

/// Rigid registration without correspondences (trimmed ICP): the transform, starting from
/// `init`, that lays `model` over `scene`. Model points farther than `max_dist` from every
/// scene point (hidden parts) are left out of each refit. `None` if too little overlaps.
pub fn register_icp(
    model: &[[f32; 2]],
    scene: &[[f32; 2]],
    init: Similarity2,
    iterations: usize,
    max_dist: f32,
) -> Option<Similarity2> {
    if model.len() < 3 || scene.len() < 3 {
        return None;
    }
    let mut t = init;
    for _ in 0..iterations {
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for p in model {
            let q = t.apply(*p);
            let nearest = scene.iter().min_by(|a, b| {
                let da = (a[0] - q[0]).powi(2) + (a[1] - q[1]).powi(2);
                let db = (b[0] - q[0]).powi(2) + (b[1] - q[1]).powi(2);
                da.total_cmp(&db)
            })?;
            if (nearest[0] - q[0]).hypot(nearest[1] - q[1]) <= max_dist {
                src.push(*p);
                dst.push(*nearest);
            }
        }
        if src.len() < 3 || (src.len() as f32) < 0.3 * model.len() as f32 {
            return None;
        }
        let next = fit_least_squares(&src, &dst, false)?;
        let change = (next.angle - t.angle).abs()
            + (next.translation[0] - t.translation[0]).abs()
            + (next.translation[1] - t.translation[1]).abs();
        t = next;
        if change < 1e-5 {
            break;
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize, seed: u64) -> Vec<[f32; 2]> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| [rng.random_range(-0.3..0.3), rng.random_range(-0.2..0.2)])
            .collect()
    }

    #[test]
    fn exact_fits_recover_rigid_and_similarity_transforms() {
        let src = points(20, 1);
        let truth = Similarity2 {
            scale: 1.0,
            angle: 0.4,
            translation: [0.3, -0.2],
        };
        let dst: Vec<_> = src.iter().map(|p| truth.apply(*p)).collect();
        let fit = fit_least_squares(&src, &dst, false).expect("fit");
        assert!((fit.angle - 0.4).abs() < 1e-4 && (fit.translation[0] - 0.3).abs() < 1e-4);
        let scaled = Similarity2 {
            scale: 1.3,
            ..truth
        };
        let dst: Vec<_> = src.iter().map(|p| scaled.apply(*p)).collect();
        let fit = fit_least_squares(&src, &dst, true).expect("fit");
        assert!((fit.scale - 1.3).abs() < 1e-4, "{fit:?}");
        assert!(fit_least_squares(&src[..1], &dst[..1], false).is_none());
        assert!(fit_least_squares(&[[0.0, 0.0]; 5], &[[1.0, 1.0]; 5], false).is_none());
    }

    #[test]
    fn ransac_ignores_forty_percent_outliers() {
        let src = points(100, 2);
        let truth = Similarity2 {
            scale: 1.0,
            angle: -0.25,
            translation: [0.05, 0.12],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut outlier = vec![false; src.len()];
        let dst: Vec<[f32; 2]> = src
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let q = truth.apply(*p);
                let noise = [
                    rng.random_range(-0.003..0.003),
                    rng.random_range(-0.003..0.003),
                ];
                if i % 5 < 2 {
                    // Outliers: e.g. points that followed the gripper instead.
                    outlier[i] = true;
                    [
                        q[0] + rng.random_range(0.1..0.4),
                        q[1] - rng.random_range(0.1..0.4),
                    ]
                } else {
                    [q[0] + noise[0], q[1] + noise[1]]
                }
            })
            .collect();
        let plain = fit_least_squares(&src, &dst, false).expect("fit");
        let params = RansacParams {
            iterations: 200,
            threshold: 0.015,
            with_scale: false,
            seed: 0,
        };
        let fit = ransac(&src, &dst, &params).expect("fit");
        let err = |t: &Similarity2| {
            (t.angle - truth.angle).abs()
                + (t.translation[0] - truth.translation[0]).abs()
                + (t.translation[1] - truth.translation[1]).abs()
        };
        println!(
            "40% outliers: least-squares error {:.4}, RANSAC error {:.4}, {} inliers",
            err(&plain),
            err(&fit.transform),
            fit.inlier_count()
        );
        assert!(err(&fit.transform) < 0.01, "{fit:?}");
        assert!(err(&plain) > 0.05);
        assert_eq!(fit.inlier_count(), 60);
        assert!(fit.inliers.iter().zip(&outlier).all(|(i, o)| *i != *o));
        // Deterministic.
        assert_eq!(ransac(&src, &dst, &params), Some(fit));
    }

    #[test]
    fn icp_finds_a_turned_bar_with_a_hidden_end() {
        // A bar of points, turned a step's worth; the scene misses the far end.
        let model: Vec<[f32; 2]> = (0..50)
            .flat_map(|i| [[i as f32 * 0.01, 0.0], [i as f32 * 0.01, 0.03]])
            .collect();
        let truth = Similarity2 {
            scale: 1.0,
            angle: 0.08,
            translation: [0.01, 0.005],
        };
        let scene: Vec<[f32; 2]> = model[..80].iter().map(|p| truth.apply(*p)).collect();
        let fit = register_icp(&model, &scene, Similarity2::IDENTITY, 40, 0.05).expect("fit");
        assert!((fit.angle - 0.08).abs() < 0.01, "{fit:?}");
        assert!(register_icp(&model, &scene[..2], Similarity2::IDENTITY, 30, 0.05).is_none());
    }

    #[test]
    fn chaining_composes_in_order() {
        let a = Similarity2 {
            scale: 1.0,
            angle: 0.5,
            translation: [1.0, 0.0],
        };
        let b = Similarity2 {
            scale: 2.0,
            angle: -0.2,
            translation: [0.0, 3.0],
        };
        let p = [0.3, -0.7];
        let chained = b.after(&a).apply(p);
        let stepwise = b.apply(a.apply(p));
        assert!((chained[0] - stepwise[0]).abs() < 1e-5 && (chained[1] - stepwise[1]).abs() < 1e-5);
    }
}
