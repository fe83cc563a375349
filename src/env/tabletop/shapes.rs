//! The visual model of every thing on the table: a few coloured primitives per rigid body,
//! in body-local coordinates. The renderer draws them and the segmentation rasterises the
//! same primitives, so masks always agree with what is drawn.

use rapier2d::math::{Pose, Vector};

/// A filled primitive in its part's local frame (centred at the origin).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    Circle {
        radius: f32,
    },
    Rect {
        half_w: f32,
        half_h: f32,
    },
    /// An annulus: filled between the two radii.
    Ring {
        inner: f32,
        outer: f32,
    },
}

impl Shape {
    /// Whether a point in the shape's local frame lies inside it.
    pub fn contains(&self, p: Vector) -> bool {
        match *self {
            Shape::Circle { radius } => p.length_squared() <= radius * radius,
            Shape::Rect { half_w, half_h } => p.x.abs() <= half_w && p.y.abs() <= half_h,
            Shape::Ring { inner, outer } => {
                let d2 = p.length_squared();
                d2 <= outer * outer && d2 >= inner * inner
            }
        }
    }

    /// Radius of a circle around the local origin that holds the whole shape.
    pub fn bounding_radius(&self) -> f32 {
        match *self {
            Shape::Circle { radius } => radius,
            Shape::Rect { half_w, half_h } => half_w.hypot(half_h),
            Shape::Ring { outer, .. } => outer,
        }
    }
}

/// One coloured primitive placed in its body's frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Part {
    pub shape: Shape,
    pub local: Pose,
    pub color: [u8; 3],
}

impl Part {
    pub fn new(shape: Shape, x: f32, y: f32, angle: f32, color: [u8; 3]) -> Self {
        Self {
            shape,
            local: Pose::new(Vector::new(x, y), angle),
            color,
        }
    }

    pub fn centered(shape: Shape, color: [u8; 3]) -> Self {
        Self::new(shape, 0.0, 0.0, 0.0, color)
    }
}

/// Colours of the world, chosen to be distinct for a small model and readable at a glance.
pub mod palette {
    pub const TABLE: [u8; 3] = [66, 74, 88];
    pub const TABLE_EDGE: [u8; 3] = [40, 44, 52];
    pub const GRIPPER: [u8; 3] = [236, 236, 240];
    pub const GRIPPER_CLOSED: [u8; 3] = [250, 210, 60];
    pub const FINGER: [u8; 3] = [150, 150, 160];
    pub const SHADOW: [u8; 3] = [30, 34, 42];
    pub const BLOCK: [u8; 3] = [225, 50, 45];
    pub const TARGET: [u8; 3] = [70, 200, 90];
    pub const BUTTON: [u8; 3] = [230, 60, 60];
    pub const BUTTON_PRESSED: [u8; 3] = [80, 230, 120];
    pub const BUTTON_BASE: [u8; 3] = [120, 120, 130];
    pub const DOOR: [u8; 3] = [230, 170, 60];
    pub const HINGE: [u8; 3] = [110, 80, 40];
    pub const DRAWER: [u8; 3] = [60, 130, 235];
    pub const HANDLE: [u8; 3] = [245, 245, 250];
    pub const CABINET: [u8; 3] = [30, 60, 120];
    pub const RING: [u8; 3] = [255, 140, 30];
    pub const PEG: [u8; 3] = [170, 80, 220];
    pub const HAMMER_HANDLE: [u8; 3] = [200, 160, 110];
    pub const HAMMER_HEAD: [u8; 3] = [60, 60, 70];
    pub const NAIL: [u8; 3] = [90, 220, 230];
    pub const BOARD: [u8; 3] = [120, 70, 40];
    pub const GUARD: [u8; 3] = [150, 150, 150];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_contains_only_annulus() {
        let ring = Shape::Ring {
            inner: 0.5,
            outer: 1.0,
        };
        assert!(!ring.contains(Vector::new(0.0, 0.0)));
        assert!(ring.contains(Vector::new(0.75, 0.0)));
        assert!(!ring.contains(Vector::new(1.1, 0.0)));
    }
}
