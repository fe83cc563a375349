//! Where a carried object comes to rest. A plan shows motion across the image well and motion
//! along the camera's ray hardly at all (a block carried 20 cm away from a camera 1.5 m off
//! changes its image size by a few per cent, a fraction of a plan pixel), so the 6-DoF track of
//! a carried object stops short of the shelf, hoop or peg behind it. But objects are carried
//! *to* something, and the first frame's depth shows what lies behind the place where the
//! plan puts the object: the end of the carry is moved back along the ray until the object's
//! far side meets that surface, and the correction is spread over the carry in proportion to
//! the distance travelled.

use super::motion3d::{Pose3, Track3d, distance, mean_point};
use crate::env::metaworld::CameraModel;

/// The first frame's depth image (metres along the optical axis) and its camera.
pub struct SceneDepth<'a> {
    pub depth: &'a [f32],
    pub size: u32,
    pub camera: &'a CameraModel,
}

impl SceneDepth<'_> {
    /// The scene's depth at the pixel where `point` projects; `None` outside the frame.
    fn behind(&self, point: [f64; 3]) -> Option<f64> {
        let [x, y] = self.camera.project(point, self.size)?;
        let inside = |v: f64| v >= 0.0 && v < f64::from(self.size);
        (inside(x) && inside(y))
            .then(|| f64::from(self.depth[y as usize * self.size as usize + x as usize]))
    }
}

/// Settings of [`settle_on_scene`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettleParams {
    /// The gap behind the object is this quantile of its points' gaps; 0 (the default):
    /// the smallest, the object stops at the first surface it meets. Measured on
    /// shelf-place's corner episode (seed 1,000,000): 0 ends the carry 6 mm from where the
    /// expert put the block, 0.2 overshoots by 8 cm (the shelf's back wall).
    pub quantile: f64,
    /// Smaller corrections are left out (metres).
    pub min_shift: f64,
    /// Larger ones are cut to this (metres): the surface behind may be a far wall.
    pub max_shift: f64,
}

impl Default for SettleParams {
    fn default() -> Self {
        Self {
            quantile: 0.0,
            min_shift: 0.01,
            max_shift: 0.35,
        }
    }
}

/// `track` with the end of the carry moved back along the camera ray until the object, of
/// `thickness` metres along the ray behind its visible points, touches the scene behind it;
/// `None` when the object does not travel, ends in front of nothing in the frame, or already
/// rests within `min_shift` of the surface (or behind it).
pub fn settle_on_scene(
    track: &Track3d,
    scene: &SceneDepth<'_>,
    thickness: f64,
    params: &SettleParams,
) -> Option<Track3d> {
    let last = *track.poses.last()?;
    let mut gaps: Vec<f64> = track
        .points
        .iter()
        .filter_map(|&p| {
            let q = last.apply(p);
            scene
                .behind(q)
                .map(|surface| surface - scene.camera.depth_of(q))
        })
        .collect();
    if gaps.len() < 4 {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let gap = gaps[((gaps.len() - 1) as f64 * params.quantile) as usize] - thickness;
    if gap < params.min_shift {
        return None;
    }
    let centres = track.trajectory(mean_point(&track.points));
    let shares = super::motion::travelled_shares(&centres, distance)?;
    let end = *centres.last()?;
    let pixel = scene.camera.project(end, scene.size)?;
    let depth = scene.camera.depth_of(end) + gap.min(params.max_shift);
    let moved = scene.camera.lift(pixel, depth, scene.size);
    let shift = [moved[0] - end[0], moved[1] - end[1], moved[2] - end[2]];
    let poses = std::iter::once(track.poses[0])
        .chain(track.poses[1..].iter().zip(shares).map(|(pose, s)| Pose3 {
            r: pose.r,
            t: [
                pose.t[0] + shift[0] * s,
                pose.t[1] + shift[1] * s,
                pose.t[2] + shift[2] * s,
            ],
        }))
        .collect();
    Some(Track3d {
        poses,
        ..track.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera() -> CameraModel {
        crate::env::metaworld::camera::looking_along_y([0.0; 3], 64)
    }

    /// A 2 cm square of points facing the camera at depth 1 m, carried 0.2 m sideways in
    /// 7 equal steps (the track saw no motion along the ray).
    fn carried_square() -> Track3d {
        let points = (0..5)
            .flat_map(|i| (0..5).map(move |k| [0.005 * f64::from(i), 1.0, 0.005 * f64::from(k)]))
            .collect();
        Track3d {
            points,
            poses: (0..8)
                .map(|t| Pose3 {
                    t: [0.2 * f64::from(t) / 7.0, 0.0, 0.0],
                    ..Pose3::IDENTITY
                })
                .collect(),
            error_px: vec![0.0; 8],
            visible: vec![1.0; 8],
        }
    }

    /// `track` settled in front of a wall `wall` metres from the camera, the object 5 cm
    /// thick.
    fn settled_before_wall(wall: f32, track: &Track3d) -> Option<Track3d> {
        let camera = camera();
        let depth = vec![wall; 64 * 64];
        let scene = SceneDepth {
            depth: &depth,
            size: 64,
            camera: &camera,
        };
        settle_on_scene(track, &scene, 0.05, &SettleParams::default())
    }

    #[test]
    fn the_carry_ends_against_the_wall_behind_it() {
        let camera = camera();
        let track = carried_square();
        let settled = settled_before_wall(1.3, &track).expect("settles");
        let p = track.points[12];
        let end = settled.poses[7].apply(p);
        // Its far side (5 cm behind the visible face) meets the wall: the face at 1.25 m.
        assert!((camera.depth_of(end) - 1.25).abs() < 1e-6, "{end:?}");
        // Still where the plan shows it in the image.
        let shown = camera
            .project(track.poses[7].apply(p), 64)
            .expect("in view");
        let now = camera.project(end, 64).expect("in view");
        assert!((shown[0] - now[0]).abs() < 0.01 && (shown[1] - now[1]).abs() < 0.01);
        // Three sevenths of the way, three sevenths of the correction; none at the start.
        let mid =
            camera.depth_of(settled.poses[3].apply(p)) - camera.depth_of(track.poses[3].apply(p));
        assert!((mid - 0.25 * 3.0 / 7.0).abs() < 1e-6, "{mid}");
        assert_eq!(settled.poses[0], track.poses[0]);
    }

    #[test]
    fn an_object_that_already_rests_or_does_not_travel_is_left_alone() {
        // 4 cm of room behind a 5 cm thick object: it already rests.
        assert!(settled_before_wall(1.04, &carried_square()).is_none());
        let mut still = carried_square();
        still.poses = vec![Pose3::IDENTITY; 8];
        assert!(settled_before_wall(3.0, &still).is_none());
        // A far wall: the correction is capped.
        let settled = settled_before_wall(3.0, &carried_square()).expect("settles");
        let p = settled.points[0];
        let gained = camera().depth_of(settled.poses[7].apply(p)) - 1.0;
        let cap = SettleParams::default().max_shift;
        assert!((gained - cap).abs() < 1e-6, "{gained}");
    }
}
