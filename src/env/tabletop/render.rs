//! Cameras and drawing: three views of the table (rotation, zoom, tilt and light differ),
//! an anti-aliased RGB frame drawn with tiny-skia, and a segmentation computed from the
//! same primitives.

use rapier2d::math::{Pose, Vector};
use tiny_skia::{
    FillRule, LinearGradient, Paint, PathBuilder, Pixmap, Point, Rect, Shader, SpreadMode,
    Transform,
};

use super::scene::{DrawLayer, Scene};
use super::shapes::{Part, Shape, palette};
use crate::env::{Rgb8Image, ViewInfo, WorldError};

/// Half the side of the square of table coordinates a camera frames.
const FRAME_HALF: f32 = 0.98;
/// How far up the screen an object rises per unit of height (screen units).
const LIFT: f32 = 0.12;

/// One camera of the tabletop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    pub name: &'static str,
    pub description: &'static str,
    /// Rotation of the table on screen, radians.
    pub rotation: f32,
    pub zoom: f32,
    /// Vertical foreshortening of a tilted camera (1 = straight down).
    pub squash: f32,
    /// Shift of the table on screen, screen units.
    pub offset: (f32, f32),
    /// Colour of the light, multiplied into every colour.
    pub tint: [f32; 3],
}

/// The three views, named after the paper's MetaWorld cameras.
pub const CAMERAS: [Camera; 3] = [
    Camera {
        name: "corner",
        description: "straight down, neutral light",
        rotation: 0.0,
        zoom: 1.0,
        squash: 1.0,
        offset: (0.0, 0.0),
        tint: [1.0, 1.0, 1.0],
    },
    Camera {
        name: "corner2",
        description: "rotated a quarter turn, shifted, warm light",
        rotation: std::f32::consts::FRAC_PI_2,
        zoom: 1.0,
        squash: 1.0,
        offset: (0.03, -0.02),
        tint: [1.08, 0.97, 0.84],
    },
    Camera {
        name: "corner3",
        description: "tilted and turned from the far side, cool light",
        rotation: 3.49,
        zoom: 0.95,
        squash: 0.82,
        offset: (-0.03, 0.06),
        tint: [0.84, 0.95, 1.12],
    },
];

pub fn view_infos() -> Vec<ViewInfo> {
    CAMERAS
        .iter()
        .map(|c| ViewInfo {
            name: c.name.to_owned(),
            description: c.description.to_owned(),
        })
        .collect()
}

/// A 2D affine map `p -> m * p + t` (column-major 2x2 `m`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Affine {
    m: [f32; 4],
    t: [f32; 2],
}

impl Affine {
    pub(super) fn apply(&self, p: Vector) -> Vector {
        Vector::new(
            self.m[0] * p.x + self.m[2] * p.y + self.t[0],
            self.m[1] * p.x + self.m[3] * p.y + self.t[1],
        )
    }

    pub(super) fn then_pose(&self, pose: &Pose) -> Affine {
        let (s, c) = pose.rotation.angle().sin_cos();
        let m = [
            self.m[0] * c + self.m[2] * s,
            self.m[1] * c + self.m[3] * s,
            -self.m[0] * s + self.m[2] * c,
            -self.m[1] * s + self.m[3] * c,
        ];
        let t = self.apply(pose.translation);
        Affine { m, t: [t.x, t.y] }
    }

    pub(super) fn inverse(&self) -> Affine {
        let [a, b, c, d] = self.m;
        let det = a * d - b * c;
        let m = [d / det, -b / det, -c / det, a / det];
        let t = [
            -(m[0] * self.t[0] + m[2] * self.t[1]),
            -(m[1] * self.t[0] + m[3] * self.t[1]),
        ];
        Affine { m, t }
    }

    fn scale(&self) -> f32 {
        (self.m[0] * self.m[3] - self.m[1] * self.m[2]).abs().sqrt()
    }

    fn to_skia(self) -> Transform {
        Transform::from_row(
            self.m[0], self.m[1], self.m[2], self.m[3], self.t[0], self.t[1],
        )
    }
}

impl Camera {
    /// Table coordinates at height `z` -> pixel coordinates of a `size` x `size` frame.
    pub(super) fn pixel_map(&self, size: u32, z: f32) -> Affine {
        let px = size as f32 / (2.0 * FRAME_HALF);
        let (s, c) = self.rotation.sin_cos();
        let (sx, sy) = (self.zoom * px, -self.zoom * self.squash * px);
        Affine {
            m: [sx * c, sy * s, -sx * s, sy * c],
            t: [
                (FRAME_HALF + self.offset.0) * px,
                (FRAME_HALF - self.offset.1 - z * LIFT) * px,
            ],
        }
    }

    fn lit(&self, color: [u8; 3]) -> tiny_skia::Color {
        let ch = |i: usize| (f32::from(color[i]) * self.tint[i]).clamp(0.0, 255.0) as u8;
        tiny_skia::Color::from_rgba8(ch(0), ch(1), ch(2), 255)
    }
}

/// Something to draw: parts placed at a world pose and height, with a segmentation id.
struct Drawable<'a> {
    id: u8,
    pose: Pose,
    z: f32,
    parts: std::borrow::Cow<'a, [Part]>,
}

/// Label names in id order: the table, every thing of the scene, the gripper.
pub fn labels(scene: &Scene) -> Vec<String> {
    std::iter::once("table")
        .chain(scene.things.iter().map(|t| t.name))
        .chain(std::iter::once("gripper"))
        .map(str::to_owned)
        .collect()
}

fn gripper_parts(z: f32, closed: bool) -> Vec<Part> {
    let s = gripper_scale(z);
    let finger_x = if closed { 0.06 } else { 0.095 } * s;
    let finger = Shape::Rect {
        half_w: 0.022 * s,
        half_h: 0.055 * s,
    };
    let body = if closed {
        palette::GRIPPER_CLOSED
    } else {
        palette::GRIPPER
    };
    vec![
        Part::new(finger, -finger_x, 0.0, 0.0, palette::FINGER),
        Part::new(finger, finger_x, 0.0, 0.0, palette::FINGER),
        Part::centered(Shape::Circle { radius: 0.075 * s }, body),
    ]
}

/// Everything on the table in drawing order (floor marks, fixtures, objects on the table,
/// lifted objects, the gripper).
fn drawables(scene: &Scene) -> Vec<Drawable<'_>> {
    let mut items: Vec<(DrawLayer, bool, Drawable<'_>)> = scene
        .things
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let d = Drawable {
                id: (i + 1) as u8,
                pose: scene.pose(i),
                z: t.z,
                parts: std::borrow::Cow::Borrowed(&t.parts),
            };
            (t.layer, t.z > 0.0, d)
        })
        .collect();
    items.sort_by_key(|(layer, lifted, _)| (*layer, *lifted));
    let gripper = Drawable {
        id: (scene.things.len() + 1) as u8,
        pose: Pose::from_translation(scene.gripper_position()),
        z: scene.gripper.z,
        parts: std::borrow::Cow::Owned(gripper_parts(scene.gripper.z, scene.gripper.closed)),
    };
    items
        .into_iter()
        .map(|(_, _, d)| d)
        .chain(std::iter::once(gripper))
        .collect()
}

fn shape_path(shape: Shape) -> Option<(tiny_skia::Path, FillRule)> {
    match shape {
        Shape::Circle { radius } => {
            PathBuilder::from_circle(0.0, 0.0, radius).map(|p| (p, FillRule::Winding))
        }
        Shape::Rect { half_w, half_h } => Rect::from_ltrb(-half_w, -half_h, half_w, half_h)
            .map(|r| (PathBuilder::from_rect(r), FillRule::Winding)),
        Shape::Ring { inner, outer } => {
            let mut pb = PathBuilder::new();
            pb.push_circle(0.0, 0.0, outer);
            pb.push_circle(0.0, 0.0, inner);
            pb.finish().map(|p| (p, FillRule::EvenOdd))
        }
    }
}

/// Draws `scene` as seen by `camera` into an RGB frame.
pub fn render(scene: &Scene, camera: &Camera, size: u32) -> Result<Rgb8Image, WorldError> {
    let mut pixmap = Pixmap::new(size, size)
        .ok_or_else(|| WorldError::Render(format!("cannot allocate a {size}x{size} frame")))?;
    pixmap.fill(camera.lit(palette::TABLE_EDGE));
    let floor = camera.pixel_map(size, 0.0);
    draw_table(&mut pixmap, camera, floor)?;
    let mut paint = Paint {
        anti_alias: true,
        ..Paint::default()
    };
    let items = drawables(scene);
    for item in items.iter().filter(|d| d.z > 0.0) {
        let shadow = floor.then_pose(&Pose::new(
            item.pose.translation + Vector::new(0.03, -0.03) * item.z,
            item.pose.rotation.angle(),
        ));
        paint.set_color(tiny_skia::Color::from_rgba8(
            palette::SHADOW[0],
            palette::SHADOW[1],
            palette::SHADOW[2],
            110,
        ));
        for part in item.parts.iter() {
            fill_part(&mut pixmap, &paint, shadow, part);
        }
    }
    for item in &items {
        let map = camera.pixel_map(size, item.z).then_pose(&item.pose);
        for part in item.parts.iter() {
            paint.set_color(camera.lit(part.color));
            fill_part(&mut pixmap, &paint, map, part);
        }
    }
    let pixels = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Rgb8Image {
        width: size,
        height: size,
        pixels,
    })
}

fn draw_table(pixmap: &mut Pixmap, camera: &Camera, floor: Affine) -> Result<(), WorldError> {
    let bad = || WorldError::Render("table geometry".to_owned());
    let rect = Rect::from_ltrb(-1.0, -1.0, 1.0, 1.0).ok_or_else(bad)?;
    let base = camera.lit(palette::TABLE);
    let darker = camera.lit([
        palette::TABLE[0].saturating_sub(18),
        palette::TABLE[1].saturating_sub(18),
        palette::TABLE[2].saturating_sub(14),
    ]);
    let shader = LinearGradient::new(
        Point::from_xy(-1.0, 1.0),
        Point::from_xy(1.0, -1.0),
        vec![
            tiny_skia::GradientStop::new(0.0, base),
            tiny_skia::GradientStop::new(1.0, darker),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    )
    .unwrap_or(Shader::SolidColor(base));
    let paint = Paint {
        shader,
        anti_alias: true,
        ..Paint::default()
    };
    pixmap.fill_rect(rect, &paint, floor.to_skia(), None);
    Ok(())
}

fn fill_part(pixmap: &mut Pixmap, paint: &Paint<'_>, map: Affine, part: &Part) {
    if let Some((path, rule)) = shape_path(part.shape) {
        let transform = map.then_pose(&part.local).to_skia();
        pixmap.fill_path(&path, paint, rule, transform, None);
    }
}

/// Per-pixel label ids of `scene` seen by `camera` (ids as in [`labels`]).
pub fn segment(scene: &Scene, camera: &Camera, size: u32) -> Vec<u8> {
    let mut seg = vec![0u8; (size * size) as usize];
    for item in drawables(scene) {
        let map = camera.pixel_map(size, item.z).then_pose(&item.pose);
        for part in item.parts.iter() {
            let to_pixel = map.then_pose(&part.local);
            let to_local = to_pixel.inverse();
            let center = to_pixel.apply(Vector::ZERO);
            let reach = part.shape.bounding_radius() * to_pixel.scale() + 1.0;
            let lo = |c: f32| (c - reach).floor().max(0.0) as u32;
            let hi = |c: f32| ((c + reach).ceil().max(0.0) as u32).min(size);
            for py in lo(center.y)..hi(center.y) {
                for px in lo(center.x)..hi(center.x) {
                    let local = to_local.apply(Vector::new(px as f32 + 0.5, py as f32 + 0.5));
                    if part.shape.contains(local) {
                        seg[(py * size + px) as usize] = item.id;
                    }
                }
            }
        }
    }
    seg
}

/// Pixel position of a table point at height `z` in `camera` (for tests and trackers).
pub fn project(camera: &Camera, size: u32, p: Vector, z: f32) -> Vector {
    camera.pixel_map(size, z).apply(p)
}

/// The table point at height `z` that `camera` shows at `pixel` (continuous coordinates,
/// pixel centres at `i + 0.5`): the inverse of [`project`].
pub fn unproject(camera: &Camera, size: u32, pixel: Vector, z: f32) -> Vector {
    camera.pixel_map(size, z).inverse().apply(pixel)
}

/// Scale of the gripper's drawing at height `z` (it looks bigger when raised).
pub(super) fn gripper_scale(z: f32) -> f32 {
    1.0 + 0.35 * z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_inverse_round_trips() {
        let cam = CAMERAS[2];
        let map = cam
            .pixel_map(64, 0.3)
            .then_pose(&Pose::new(Vector::new(0.2, -0.1), 0.7));
        let p = Vector::new(0.3, 0.4);
        let back = map.inverse().apply(map.apply(p));
        assert!(back.distance(p) < 1e-4);
    }

    #[test]
    fn views_frame_the_table_differently() {
        let p = Vector::new(0.5, 0.2);
        let pixels: Vec<Vector> = CAMERAS.iter().map(|c| project(c, 64, p, 0.0)).collect();
        assert!(pixels[0].distance(pixels[1]) > 5.0);
        assert!(pixels[0].distance(pixels[2]) > 5.0);
        assert!(pixels[1].distance(pixels[2]) > 5.0);
    }
}
