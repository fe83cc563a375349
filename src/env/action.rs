/// A control command, MetaWorld style: move the gripper by (dx, dy), raise or lower it by
/// dz, and close (grip > 0) or open it. Every component is clamped to [-1, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Action {
    pub dx: f32,
    pub dy: f32,
    pub dz: f32,
    pub grip: f32,
}

impl Action {
    pub fn new(dx: f32, dy: f32, dz: f32, grip: f32) -> Self {
        Self { dx, dy, dz, grip }.clamped()
    }

    /// The same action with every component in [-1, 1]; NaN becomes 0.
    pub fn clamped(self) -> Self {
        let c = |v: f32| if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
        Self {
            dx: c(self.dx),
            dy: c(self.dy),
            dz: c(self.dz),
            grip: c(self.grip),
        }
    }

    pub fn as_array(&self) -> [f32; 4] {
        [self.dx, self.dy, self.dz, self.grip]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_removes_nan() {
        let a = Action::new(2.0, -3.0, f32::NAN, 0.5);
        assert_eq!(a.as_array(), [1.0, -1.0, 0.0, 0.5]);
    }
}
