//! A pinhole camera as the bridge reports it (OpenCV convention: x right, y down, z
//! forward; pixel centres at `i + 0.5`; world coordinates in metres, z up, the table top
//! at z = 0). It maps pixels of a frame of any size to 3D points, by depth or onto a
//! horizontal plane, and back. This is what lifts plan pixels to 3D.

use serde::Deserialize;

/// Intrinsics and extrinsics of one episode's camera at the frame size it was rendered.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CameraModel {
    pub width: u32,
    pub height: u32,
    /// `[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]` in pixels of a `width` x `height` frame.
    pub intrinsics: [[f64; 3]; 3],
    /// Camera -> world, row-major 4x4.
    pub cam_to_world: [[f64; 4]; 4],
    /// World -> camera, row-major 4x4.
    pub world_to_cam: [[f64; 4]; 4],
}

impl CameraModel {
    /// Focal lengths and principal point scaled to a `size`-pixel-wide frame (plans can
    /// be smaller than the world's frames; the field of view is the same).
    fn scaled(&self, size: u32) -> [f64; 4] {
        let s = f64::from(size) / f64::from(self.width);
        let k = &self.intrinsics;
        [k[0][0] * s, k[1][1] * s, k[0][2] * s, k[1][2] * s]
    }

    /// The pixel (continuous) of a world point in a `size`-pixel frame; `None` behind the
    /// camera.
    pub fn project(&self, point: [f64; 3], size: u32) -> Option<[f64; 2]> {
        let c = transform(&self.world_to_cam, point);
        if c[2] <= 1e-9 {
            return None;
        }
        let [fx, fy, cx, cy] = self.scaled(size);
        Some([fx * c[0] / c[2] + cx, fy * c[1] / c[2] + cy])
    }

    /// The depth of a world point along the optical axis (what [`CameraModel::lift`] takes).
    pub fn depth_of(&self, point: [f64; 3]) -> f64 {
        transform(&self.world_to_cam, point)[2]
    }

    /// The world point at `pixel` whose depth along the optical axis is `depth` (what
    /// MuJoCo's depth image holds).
    pub fn lift(&self, pixel: [f64; 2], depth: f64, size: u32) -> [f64; 3] {
        let [fx, fy, cx, cy] = self.scaled(size);
        let c = [
            (pixel[0] - cx) * depth / fx,
            (pixel[1] - cy) * depth / fy,
            depth,
        ];
        transform(&self.cam_to_world, c)
    }

    /// Where the ray through `pixel` meets the horizontal plane at height `z`; `None` if
    /// it meets it behind the camera or runs parallel to it.
    pub fn on_plane(&self, pixel: [f64; 2], size: u32, z: f64) -> Option<[f64; 3]> {
        let origin = transform(&self.cam_to_world, [0.0, 0.0, 0.0]);
        let far = self.lift(pixel, 1.0, size);
        let dir = [far[0] - origin[0], far[1] - origin[1], far[2] - origin[2]];
        if dir[2].abs() < 1e-9 {
            return None;
        }
        let t = (z - origin[2]) / dir[2];
        (t > 0.0).then(|| [origin[0] + t * dir[0], origin[1] + t * dir[1], z])
    }
}

/// For tests of what uses a camera: one at `eye` looking along world +y (z up), `size`
/// pixels square, 60 degrees across.
#[cfg(test)]
pub(crate) fn looking_along_y(eye: [f64; 3], size: u32) -> CameraModel {
    let f = f64::from(size) / 2.0 / 30f64.to_radians().tan();
    let c = f64::from(size) / 2.0;
    // Camera x = world x, camera y (down) = world -z, camera z (forward) = world y.
    CameraModel {
        width: size,
        height: size,
        intrinsics: [[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]],
        cam_to_world: [
            [1.0, 0.0, 0.0, eye[0]],
            [0.0, 0.0, 1.0, eye[1]],
            [0.0, -1.0, 0.0, eye[2]],
            [0.0, 0.0, 0.0, 1.0],
        ],
        world_to_cam: [
            [1.0, 0.0, 0.0, -eye[0]],
            [0.0, 0.0, -1.0, eye[2]],
            [0.0, 1.0, 0.0, -eye[1]],
            [0.0, 0.0, 0.0, 1.0],
        ],
    }
}

fn transform(m: &[[f64; 4]; 4], p: [f64; 3]) -> [f64; 3] {
    let row = |r: &[f64; 4]| r[0] * p[0] + r[1] * p[1] + r[2] * p[2] + r[3];
    [row(&m[0]), row(&m[1]), row(&m[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A camera 1 m above the origin looking straight down, image x along world x.
    fn top_down() -> CameraModel {
        // OpenCV axes in world: x -> +x, y -> -y (down the image is towards -y), z -> -z.
        CameraModel {
            width: 100,
            height: 100,
            intrinsics: [[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]],
            cam_to_world: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, -1.0, 0.0, 0.0],
                [0.0, 0.0, -1.0, 1.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            world_to_cam: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, -1.0, 0.0, 0.0],
                [0.0, 0.0, -1.0, 1.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        }
    }

    #[test]
    fn projection_lifting_and_plane_agree() {
        let cam = top_down();
        let p = [0.1, 0.2, 0.0];
        let px = cam.project(p, 100).expect("in front");
        assert!((px[0] - 60.0).abs() < 1e-9 && (px[1] - 30.0).abs() < 1e-9);
        assert!((cam.depth_of(p) - 1.0).abs() < 1e-9);
        let back = cam.lift(px, 1.0, 100);
        let hit = cam.on_plane(px, 100, 0.0).expect("hits the table");
        for i in 0..3 {
            assert!((back[i] - p[i]).abs() < 1e-9);
            assert!((hit[i] - p[i]).abs() < 1e-9);
        }
    }

    #[test]
    fn smaller_frames_scale_pixels_not_rays() {
        let cam = top_down();
        let p = [0.1, 0.2, 0.0];
        let big = cam.project(p, 100).expect("in front");
        let small = cam.project(p, 25).expect("in front");
        assert!((small[0] * 4.0 - big[0]).abs() < 1e-9);
        let hit = cam.on_plane(small, 25, 0.0).expect("hits the table");
        assert!((hit[0] - 0.1).abs() < 1e-9 && (hit[1] - 0.2).abs() < 1e-9);
    }

    #[test]
    fn points_behind_the_camera_have_no_pixel() {
        assert_eq!(top_down().project([0.0, 0.0, 2.0], 100), None);
        assert_eq!(top_down().on_plane([50.0, 50.0], 100, 2.0), None);
    }
}
