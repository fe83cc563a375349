//! Scripted experts: one reactive policy per task that reads the true state (poses, joint
//! positions) and outputs the next [`Action`]. Their demonstrations are the training data.

use rapier2d::math::Vector;

use super::scene::{GRIPPER_RADIUS, MAX_DZ, MAX_STEP, Scene};
use super::tasks::{
    DOOR_HALF_THICKNESS, DOOR_LENGTH, DRAWER_HALF, HAMMER_TIP_Y, Measure, TaskKind, nail_start_y,
};
use crate::env::Action;

/// Height at which the expert travels over the table.
const TRAVEL_Z: f32 = 0.6;
/// Height at which the expert pushes and grasps.
const WORK_Z: f32 = 0.12;
/// How close counts as "there" for positioning.
const REACH: f32 = 0.012;

const OPEN: f32 = -1.0;
const CLOSE: f32 = 1.0;

/// The expert's next action for `task` in `scene`.
pub fn act(task: TaskKind, scene: &Scene) -> Action {
    let e = Expert { scene };
    match task {
        TaskKind::ButtonPress => e.button(),
        TaskKind::DoorOpen => e.door(true),
        TaskKind::DoorClose => e.door(false),
        TaskKind::DrawerOpen => e.drawer_open(),
        TaskKind::DrawerClose => e.drawer_close(),
        TaskKind::Push => e.push(),
        TaskKind::PickPlace => e.pick_place(),
        TaskKind::Hammer => e.hammer(),
    }
}

struct Expert<'a> {
    scene: &'a Scene,
}

impl Expert<'_> {
    fn gripper(&self) -> Vector {
        self.scene.gripper_position()
    }

    fn z(&self) -> f32 {
        self.scene.gripper.z
    }

    fn pos(&self, name: &str) -> Vector {
        let i = self
            .scene
            .find(name)
            .unwrap_or_else(|| panic!("scene has no '{name}'"));
        self.scene.position(i)
    }

    /// Moves toward `target` at height `z` (height first when it must rise).
    fn go(&self, target: Vector, z: f32, grip: f32) -> Action {
        let d = (target - self.gripper()) / MAX_STEP;
        // Scale, don't clip, so the gripper keeps its heading at full speed.
        let d = d / d.x.abs().max(d.y.abs()).max(1.0);
        let dz = (z - self.z()) / MAX_DZ;
        Action::new(d.x, d.y, dz, grip)
    }

    /// Travels raised to `spot`, then descends there to `z`.
    fn land(&self, spot: Vector, z: f32, grip: f32) -> Action {
        let near = self.gripper().distance(spot) < REACH;
        if near {
            return self.go(spot, z, grip);
        }
        if self.z() < TRAVEL_Z - 0.05 && self.gripper().distance(spot) > 0.05 {
            return self.go(self.gripper(), TRAVEL_Z, grip);
        }
        self.go(spot, TRAVEL_Z, grip)
    }

    fn lowered(&self) -> bool {
        self.z() <= WORK_Z + 0.02
    }

    fn button(&self) -> Action {
        self.land(self.pos("button"), 0.0, OPEN)
    }

    /// Pushes the door's free end along its arc: `open` turns it counter-clockwise.
    fn door(&self, open: bool) -> Action {
        let hinge = self.pos("hinge");
        let angle = Measure(self.scene).door_angle();
        let radius = DOOR_LENGTH - 0.1;
        let offset = GRIPPER_RADIUS + DOOR_HALF_THICKNESS + 0.02;
        let side = if open { -1.0 } else { 1.0 };
        let at = |a: f32| {
            let along = Vector::new(a.cos(), a.sin());
            let normal = Vector::new(-a.sin(), a.cos());
            hinge + along * radius + normal * (offset * side)
        };
        let start = at(angle);
        let in_contact = self.lowered() && self.gripper().distance(start) < 0.06;
        if in_contact {
            let lead = if open { 0.35 } else { -0.35 };
            return self.go(at(angle + lead), WORK_Z, OPEN);
        }
        self.land(start, WORK_Z, OPEN)
    }

    fn drawer_open(&self) -> Action {
        let front = self.pos("drawer") - Vector::new(0.0, DRAWER_HALF.1 + 0.1);
        match self.scene.held() {
            Some(_) => self.go(front - Vector::new(0.0, 0.2), WORK_Z, CLOSE),
            None if self.lowered() && self.gripper().distance(front) < REACH * 2.0 => {
                self.go(front, WORK_Z, CLOSE)
            }
            None => self.land(front, WORK_Z, OPEN),
        }
    }

    fn drawer_close(&self) -> Action {
        let front = self.pos("drawer") - Vector::new(0.0, DRAWER_HALF.1 + GRIPPER_RADIUS + 0.03);
        if self.lowered() && self.gripper().distance(front) < 0.05 {
            return self.go(front + Vector::new(0.0, 0.2), WORK_Z, OPEN);
        }
        self.land(front, WORK_Z, OPEN)
    }

    fn push(&self) -> Action {
        let block = self.pos("block");
        let target = self.pos("target");
        let dir = (target - block).normalize_or_zero();
        let behind = block - dir * (0.1 + GRIPPER_RADIUS + 0.03);
        let rel = self.gripper() - block;
        let along = rel.dot(dir);
        let lateral = dir.perp_dot(rel);
        let aligned = along < -0.1 && lateral.abs() < 0.035;
        if self.lowered() && aligned {
            let aim = block + dir * 0.15 - dir.perp() * lateral * 2.0;
            return self.go(aim, WORK_Z, OPEN);
        }
        if self.z() < TRAVEL_Z - 0.05 && self.gripper().distance(behind) > REACH * 2.0 {
            return self.go(self.gripper(), TRAVEL_Z, OPEN);
        }
        self.land(behind, WORK_Z, OPEN)
    }

    fn pick_place(&self) -> Action {
        let ring = self.pos("ring");
        let peg = self.pos("peg");
        if self.scene.held().is_some() {
            if self.z() < TRAVEL_Z - 0.05 && self.gripper().distance(peg) > REACH {
                return self.go(self.gripper(), TRAVEL_Z, CLOSE);
            }
            let grip = if self.gripper().distance(peg) < REACH * 0.5 {
                OPEN
            } else {
                CLOSE
            };
            return self.go(peg, TRAVEL_Z, grip);
        }
        if Measure(self.scene).success(TaskKind::PickPlace) {
            return self.go(self.gripper(), TRAVEL_Z, OPEN);
        }
        self.grasp_at(ring)
    }

    /// Lands open on `spot` and closes there.
    fn grasp_at(&self, spot: Vector) -> Action {
        if self.lowered() && self.gripper().distance(spot) < REACH * 2.0 {
            return self.go(spot, WORK_Z, CLOSE);
        }
        self.land(spot, WORK_Z, OPEN)
    }

    fn hammer(&self) -> Action {
        let nail = self.pos("nail");
        let hammer_index = self.scene.find("hammer").expect("hammer task has a hammer");
        let Some(grasp) = self.scene.grasp_point(hammer_index) else {
            return Action::default();
        };
        if self.scene.held().is_none() {
            return self.grasp_at(grasp);
        }
        let tip = self
            .scene
            .pose(hammer_index)
            .transform_point(Vector::new(0.0, HAMMER_TIP_Y));
        let tip_offset = tip - self.gripper();
        let guard_bottom = nail_start_y(self.pos("board").y) + 0.12 - 0.2;
        let stage = Vector::new(nail.x, guard_bottom - 0.04) - tip_offset;
        let aligned = (tip.x - nail.x).abs() < 0.02;
        if self.lowered() && aligned && tip.y >= guard_bottom - 0.08 {
            let aim = Vector::new(self.gripper().x + (nail.x - tip.x), self.gripper().y + 0.2);
            return self.go(aim, WORK_Z, CLOSE);
        }
        if self.gripper().distance(stage) < REACH {
            return self.go(stage, WORK_Z, CLOSE);
        }
        if self.z() < TRAVEL_Z - 0.05 {
            return self.go(self.gripper(), TRAVEL_Z, CLOSE);
        }
        self.go(stage, TRAVEL_Z, CLOSE)
    }
}
