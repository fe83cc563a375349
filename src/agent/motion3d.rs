//! From a plan video to the task object's 3D motion, AVDC's way: points of the object's
//! frame-0 mask are lifted to 3D with the world's depth and camera, followed through the
//! plan by dense optical flow, and each frame's 6-DoF rigid pose is the one whose
//! projection of the 3D points best matches where the flow took them (a robust, damped
//! Gauss-Newton fit of the reprojection error, started from the previous frame's pose).
//!
//! Plans have no depth: one camera constrains motion along the viewing ray weakly, so
//! each fit is pulled gently towards the previous pose. Points that lose their frame-0
//! colour (covered, usually by the gripper) sit out that frame's fit.

use super::flow::{FlowError, FlowParams, dense_flow};
use crate::env::Rgb8Image;
use crate::env::metaworld::CameraModel;

/// A rigid motion `p -> r p + t` (row-major rotation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose3 {
    pub r: [[f64; 3]; 3],
    pub t: [f64; 3],
}

impl Pose3 {
    pub const IDENTITY: Self = Self {
        r: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        t: [0.0, 0.0, 0.0],
    };

    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.r;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + self.t[0],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + self.t[1],
            m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + self.t[2],
        ]
    }

    /// `exp([w]) * self` then `+ dt`: a small change in world coordinates.
    fn perturbed(&self, d: &[f64; 6]) -> Self {
        let e = rotation(&[d[0], d[1], d[2]]);
        let r = matmul(&e, &self.r);
        let t0 = [
            e[0][0] * self.t[0] + e[0][1] * self.t[1] + e[0][2] * self.t[2],
            e[1][0] * self.t[0] + e[1][1] * self.t[1] + e[1][2] * self.t[2],
            e[2][0] * self.t[0] + e[2][1] * self.t[1] + e[2][2] * self.t[2],
        ];
        Self {
            r,
            t: [t0[0] + d[3], t0[1] + d[4], t0[2] + d[5]],
        }
    }
}

/// Rodrigues: the rotation by the vector `w` (axis times angle).
fn rotation(w: &[f64; 3]) -> [[f64; 3]; 3] {
    let angle = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt();
    if angle < 1e-12 {
        return Pose3::IDENTITY.r;
    }
    let k = [w[0] / angle, w[1] / angle, w[2] / angle];
    let (s, c) = angle.sin_cos();
    let v = 1.0 - c;
    [
        [
            c + k[0] * k[0] * v,
            k[0] * k[1] * v - k[2] * s,
            k[0] * k[2] * v + k[1] * s,
        ],
        [
            k[1] * k[0] * v + k[2] * s,
            c + k[1] * k[1] * v,
            k[1] * k[2] * v - k[0] * s,
        ],
        [
            k[2] * k[0] * v - k[1] * s,
            k[2] * k[1] * v + k[0] * s,
            c + k[2] * k[2] * v,
        ],
    ]
}

fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// Settings of [`track_object_3d`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Motion3dParams {
    pub flow: FlowParams,
    /// Gauss-Newton iterations per frame and robust round.
    pub iterations: usize,
    /// Points whose reprojection error exceeds this many times the median (and 1.5 plan
    /// pixels) are dropped before the second round.
    pub outlier_factor: f64,
    /// How strongly a frame's pose is pulled towards the previous one: this many plan
    /// pixels of mean reprojection error per centimetre (or per 0.05 rad) of change.
    pub smoothness_px: f64,
    /// Colour distance (RGB) beyond which a point counts as covered in a frame.
    pub colour_tolerance: f32,
    /// A frame is fitted when at least this many points ...
    pub min_points: usize,
    /// ... and this share of them are visible; otherwise the object counts as covered.
    pub min_visible_share: f64,
    /// A fit that moves the object's centre further than this in one plan step (metres)
    /// is a failed fit, treated as covered.
    pub max_step: f64,
}

impl Default for Motion3dParams {
    fn default() -> Self {
        Self {
            flow: FlowParams::default(),
            iterations: 8,
            outlier_factor: 2.5,
            smoothness_px: 0.05,
            colour_tolerance: 60.0,
            min_points: 6,
            min_visible_share: 0.2,
            max_step: 0.25,
        }
    }
}

/// The object's motion through a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Track3d {
    /// The lifted object points (frame 0, world metres).
    pub points: Vec<[f64; 3]>,
    /// Frame 0 -> frame `t` for every plan frame (`poses[0]` is the identity).
    pub poses: Vec<Pose3>,
    /// Mean reprojection error of the kept points per frame, plan pixels.
    pub error_px: Vec<f64>,
    /// Share of the points visible (not covered) per frame.
    pub visible: Vec<f64>,
}

impl Track3d {
    /// Where the frame-0 point `p` is in every frame.
    pub fn trajectory(&self, p: [f64; 3]) -> Vec<[f64; 3]> {
        self.poses.iter().map(|pose| pose.apply(p)).collect()
    }
}

/// Why a plan gave no 3D track.
#[derive(Debug, thiserror::Error)]
pub enum Motion3dError {
    #[error("the plan has {0} frames; at least 2 are needed")]
    TooFewFrames(usize),
    #[error("only {0} object points could be lifted; at least 4 are needed")]
    TooFewPoints(usize),
    #[error("optical flow between plan frames {from} and {to}: {source}")]
    Flow {
        from: usize,
        to: usize,
        source: FlowError,
    },
}

/// Follows the object through `frames`. `pixels[i]` is point `i` in frame 0 (plan pixels,
/// centres at `i + 0.5`) and `points[i]` the same point lifted to 3D; `camera` projects into
/// frames of the plan's size.
pub fn track_object_3d(
    frames: &[Rgb8Image],
    pixels: &[[f64; 2]],
    points: &[[f64; 3]],
    camera: &CameraModel,
    params: &Motion3dParams,
) -> Result<Track3d, Motion3dError> {
    let first = frames
        .first()
        .filter(|_| frames.len() >= 2)
        .ok_or(Motion3dError::TooFewFrames(frames.len()))?;
    if points.len() < 4 || pixels.len() != points.len() {
        return Err(Motion3dError::TooFewPoints(points.len().min(pixels.len())));
    }
    let size = first.width;
    let colour = |f: &Rgb8Image, p: [f64; 2]| {
        let x = (p[0].max(0.0) as u32).min(f.width - 1);
        let y = (p[1].max(0.0) as u32).min(f.height - 1);
        f.pixel(x, y)
    };
    let reference: Vec<[u8; 3]> = pixels.iter().map(|&p| colour(first, p)).collect();
    let mut tracked: Vec<[f64; 2]> = pixels.to_vec();
    let centre = mean_point(points);
    let mut covered = false;
    let mut track = Track3d {
        points: points.to_vec(),
        poses: vec![Pose3::IDENTITY],
        error_px: vec![0.0],
        visible: vec![1.0],
    };
    for t in 1..frames.len() {
        let flow = dense_flow(&frames[t - 1], &frames[t], &params.flow).map_err(|source| {
            Motion3dError::Flow {
                from: t - 1,
                to: t,
                source,
            }
        })?;
        let before = tracked.clone();
        for p in &mut tracked {
            let d = flow.sample(p[0] as f32, p[1] as f32);
            *p = [p[0] + f64::from(d[0]), p[1] + f64::from(d[1])];
        }
        let visible: Vec<usize> = (0..tracked.len())
            .filter(|&i| {
                let c = colour(&frames[t], tracked[i]);
                let r = reference[i];
                let d: f32 = (0..3)
                    .map(|k| (f32::from(c[k]) - f32::from(r[k])).powi(2))
                    .sum();
                d.sqrt() <= params.colour_tolerance
            })
            .collect();
        let previous = *track.poses.last().unwrap_or(&Pose3::IDENTITY);
        let enough = visible.len()
            >= params
                .min_points
                .max((params.min_visible_share * tracked.len() as f64).ceil() as usize);
        let fitted = enough
            .then(|| {
                let problem = Reprojection {
                    points,
                    targets: &tracked,
                    camera,
                    size,
                };
                fit_pose(&problem, &visible, previous, params)
            })
            .filter(|(pose, _)| {
                distance(&pose.apply(centre), &previous.apply(centre)) <= params.max_step
            });
        let (pose, error) = match fitted {
            Some(fit) => {
                covered = false;
                fit
            }
            // Covered (or a fit that jumps): an object that stays covered moves with what
            // covers it, the gripper carrying it; one that just got covered stays put.
            None if covered => (
                carried(previous, centre, &before, &tracked, camera, size),
                f64::NAN,
            ),
            None => {
                covered = true;
                (previous, f64::NAN)
            }
        };
        track.poses.push(pose);
        track.error_px.push(error);
        track
            .visible
            .push(visible.len() as f64 / tracked.len() as f64);
    }
    Ok(track)
}

pub(crate) fn distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

/// The mean of `points` (the origin for none).
pub(crate) fn mean_point(points: &[[f64; 3]]) -> [f64; 3] {
    let n = points.len().max(1) as f64;
    points.iter().fold([0.0; 3], |a, p| {
        [a[0] + p[0] / n, a[1] + p[1] / n, a[2] + p[2] / n]
    })
}

/// `previous` moved parallel to the image plane, at the object's depth, by the median
/// flow of its points (the flow there is the carrier's).
fn carried(
    previous: Pose3,
    centre: [f64; 3],
    before: &[[f64; 2]],
    after: &[[f64; 2]],
    camera: &CameraModel,
    size: u32,
) -> Pose3 {
    let median = |k: usize| {
        let mut d: Vec<f64> = before.iter().zip(after).map(|(b, a)| a[k] - b[k]).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    let now = previous.apply(centre);
    let Some(pixel) = camera.project(now, size) else {
        return previous;
    };
    let depth = camera.depth_of(now);
    let from = camera.lift(pixel, depth, size);
    let to = camera.lift([pixel[0] + median(0), pixel[1] + median(1)], depth, size);
    Pose3 {
        r: previous.r,
        t: [
            previous.t[0] + to[0] - from[0],
            previous.t[1] + to[1] - from[1],
            previous.t[2] + to[2] - from[2],
        ],
    }
}

/// What a pose is fitted to: 3D points and where a plan frame shows them, through the
/// camera at the plan's size.
struct Reprojection<'a> {
    points: &'a [[f64; 3]],
    targets: &'a [[f64; 2]],
    camera: &'a CameraModel,
    size: u32,
}

impl Reprojection<'_> {
    /// Pixels between point `i` moved by `pose` and its target (far off when behind the
    /// camera).
    fn error(&self, pose: &Pose3, i: usize) -> f64 {
        self.offset(pose, i).map_or(1e3, |d| d[0].hypot(d[1]))
    }

    fn offset(&self, pose: &Pose3, i: usize) -> Option<[f64; 2]> {
        let q = self.camera.project(pose.apply(self.points[i]), self.size)?;
        Some([q[0] - self.targets[i][0], q[1] - self.targets[i][1]])
    }
}

/// The pose near `previous` that best reprojects the `used` points: Gauss-Newton, then
/// again without the outliers. Returns the pose and the mean reprojection error of the
/// points kept.
fn fit_pose(
    problem: &Reprojection<'_>,
    used: &[usize],
    previous: Pose3,
    params: &Motion3dParams,
) -> (Pose3, f64) {
    let mut kept = used.to_vec();
    let mut delta = [0.0; 6];
    for round in 0..2 {
        for _ in 0..params.iterations {
            match gauss_newton_step(problem, &kept, previous, &delta, params) {
                Some(step) => {
                    for (d, s) in delta.iter_mut().zip(step) {
                        *d += s;
                    }
                }
                None => break,
            }
        }
        if round == 0 {
            let pose = previous.perturbed(&delta);
            let errors: Vec<(usize, f64)> =
                kept.iter().map(|&i| (i, problem.error(&pose, i))).collect();
            let mut sorted: Vec<f64> = errors.iter().map(|e| e.1).collect();
            sorted.sort_by(f64::total_cmp);
            let limit = (sorted[sorted.len() / 2] * params.outlier_factor).max(1.5);
            let inliers: Vec<usize> = errors
                .iter()
                .filter(|e| e.1 <= limit)
                .map(|e| e.0)
                .collect();
            if inliers.len() >= 4 {
                kept = inliers;
            }
        }
    }
    let pose = previous.perturbed(&delta);
    let error = kept.iter().map(|&i| problem.error(&pose, i)).sum::<f64>() / kept.len() as f64;
    (pose, error)
}

/// One damped Gauss-Newton step on the 6 pose parameters (numeric Jacobian); `None` when
/// the normal equations are singular.
fn gauss_newton_step(
    problem: &Reprojection<'_>,
    kept: &[usize],
    previous: Pose3,
    delta: &[f64; 6],
    params: &Motion3dParams,
) -> Option<[f64; 6]> {
    const H: f64 = 1e-6;
    // Prior residuals: `smoothness_px` pixels per point per centimetre / 0.05 rad of change.
    let n = kept.len() as f64;
    let scale = [20.0, 20.0, 20.0, 100.0, 100.0, 100.0];
    let prior = params.smoothness_px * n.sqrt();
    let residuals = |d: &[f64; 6]| -> Vec<f64> {
        let pose = previous.perturbed(d);
        let mut r = Vec::with_capacity(2 * kept.len() + 6);
        for &i in kept {
            r.extend(problem.offset(&pose, i).unwrap_or([1e3, 1e3]));
        }
        r.extend((0..6).map(|k| prior * scale[k] * d[k]));
        r
    };
    let r0 = residuals(delta);
    let mut jacobian = Vec::with_capacity(6);
    for k in 0..6 {
        let mut d = *delta;
        d[k] += H;
        let r1 = residuals(&d);
        jacobian.push(
            r1.iter()
                .zip(&r0)
                .map(|(a, b)| (a - b) / H)
                .collect::<Vec<_>>(),
        );
    }
    let mut a = [[0.0; 6]; 6];
    let mut b = [0.0; 6];
    for i in 0..6 {
        for j in 0..6 {
            a[i][j] = jacobian[i]
                .iter()
                .zip(&jacobian[j])
                .map(|(x, y)| x * y)
                .sum();
        }
        a[i][i] *= 1.0 + 1e-3;
        b[i] = -jacobian[i].iter().zip(&r0).map(|(x, y)| x * y).sum::<f64>();
    }
    solve6(a, b)
}

/// Gaussian elimination with partial pivoting.
fn solve6(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> Option<[f64; 6]> {
    for col in 0..6 {
        let pivot = (col..6).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_row, pivot_b) = (a[col], b[col]);
        for row in col + 1..6 {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * pivot_b;
        }
    }
    let mut x = [0.0; 6];
    for row in (0..6).rev() {
        let s: f64 = (row + 1..6).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A camera 1 m from the origin along -y, looking along +y (x right, z up in the image).
    fn camera() -> CameraModel {
        // World -> camera: x_c = x, y_c = -z, z_c = y + 1.
        let world_to_cam = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let cam_to_world = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, -1.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        CameraModel {
            width: 64,
            height: 64,
            intrinsics: [[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]],
            cam_to_world,
            world_to_cam,
        }
    }

    fn cube() -> Vec<[f64; 3]> {
        let mut pts = Vec::new();
        for x in [-0.1, 0.0, 0.1] {
            for y in [-0.05, 0.05] {
                for z in [-0.1, 0.0, 0.1] {
                    pts.push([x, y, z]);
                }
            }
        }
        pts
    }

    #[test]
    fn the_fit_recovers_a_known_motion() {
        let cam = camera();
        let points = cube();
        let truth = Pose3::IDENTITY.perturbed(&[0.0, 0.0, 0.2, 0.05, 0.0, 0.03]);
        let targets: Vec<[f64; 2]> = points
            .iter()
            .map(|&p| cam.project(truth.apply(p), 64).expect("visible"))
            .collect();
        let all: Vec<usize> = (0..points.len()).collect();
        let params = Motion3dParams::default();
        let problem = Reprojection {
            points: &points,
            targets: &targets,
            camera: &cam,
            size: 64,
        };
        let (pose, error) = fit_pose(&problem, &all, Pose3::IDENTITY, &params);
        // The smoothness prior keeps a little of the motion back.
        assert!(error < 0.2, "reprojection error {error}");
        for p in &points {
            let (a, b) = (pose.apply(*p), truth.apply(*p));
            let d = (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt();
            assert!(d < 0.01, "point off by {d} m");
        }
    }

    #[test]
    fn outliers_do_not_drag_the_fit() {
        let cam = camera();
        let points = cube();
        let truth = Pose3::IDENTITY.perturbed(&[0.0, 0.0, 0.0, 0.05, 0.0, 0.0]);
        let mut targets: Vec<[f64; 2]> = points
            .iter()
            .map(|&p| cam.project(truth.apply(p), 64).expect("visible"))
            .collect();
        targets[0] = [0.0, 0.0];
        targets[5] = [60.0, 2.0];
        let all: Vec<usize> = (0..points.len()).collect();
        let problem = Reprojection {
            points: &points,
            targets: &targets,
            camera: &cam,
            size: 64,
        };
        let (pose, _) = fit_pose(&problem, &all, Pose3::IDENTITY, &Motion3dParams::default());
        assert!((pose.t[0] - 0.05).abs() < 0.01, "x moved {}", pose.t[0]);
    }

    #[test]
    fn a_carried_object_follows_the_median_flow_at_its_depth() {
        let cam = camera();
        let centre = [0.05, 0.1, 0.0];
        let before = vec![[10.0, 10.0], [20.0, 12.0], [15.0, 30.0]];
        let after: Vec<[f64; 2]> = before.iter().map(|p| [p[0] + 6.0, p[1] - 3.0]).collect();
        let pose = carried(Pose3::IDENTITY, centre, &before, &after, &cam, 64);
        let (from, to) = (
            cam.project(centre, 64).expect("visible"),
            cam.project(pose.apply(centre), 64).expect("visible"),
        );
        assert!((to[0] - from[0] - 6.0).abs() < 1e-9 && (to[1] - from[1] + 3.0).abs() < 1e-9);
        assert!((cam.depth_of(pose.apply(centre)) - cam.depth_of(centre)).abs() < 1e-9);
    }

    #[test]
    fn rodrigues_is_a_rotation() {
        let r = rotation(&[0.3, -0.2, 0.5]);
        let rt_r = matmul(
            &[
                [r[0][0], r[1][0], r[2][0]],
                [r[0][1], r[1][1], r[2][1]],
                [r[0][2], r[1][2], r[2][2]],
            ],
            &r,
        );
        for (i, row) in rt_r.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
    }
}
