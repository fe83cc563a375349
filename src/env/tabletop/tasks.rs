//! The tabletop tasks: their names, instructions and difficulty, how a seed lays out the
//! table, and when each is solved. Names follow the MetaWorld tasks of the paper.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rapier2d::prelude::*;

use super::scene::{DrawLayer, DynamicSpec, GraspSpec, Scene, groups, layer};
use super::shapes::{Part, Shape, palette};
use crate::env::{Difficulty, TaskInfo};

/// A ring released this close to the peg's centre slides over it.
pub const RING_SEAT_TOLERANCE: f32 = 0.05;
pub const DOOR_OPEN_ANGLE: f32 = 1.0;
pub const DOOR_CLOSED_ANGLE: f32 = 0.12;
pub const DRAWER_OPEN_EXTENSION: f32 = 0.22;
pub const DRAWER_CLOSED_EXTENSION: f32 = 0.05;
pub const NAIL_DRIVEN_DEPTH: f32 = 0.08;
pub const PUSH_TOLERANCE: f32 = 0.07;
/// The gripper presses the button when this low and this close to its centre.
pub const BUTTON_PRESS_Z: f32 = 0.1;
pub const BUTTON_RADIUS: f32 = 0.075;

/// Door panel geometry: it hinges at its body origin and extends along local +x.
pub const DOOR_LENGTH: f32 = 0.5;
pub const DOOR_HALF_THICKNESS: f32 = 0.04;
pub const DRAWER_HALF: (f32, f32) = (0.17, 0.12);
/// The drawer slides out along -y.
pub const DRAWER_TRAVEL: f32 = 0.34;
pub const HAMMER_GRASP_Y: f32 = -0.12;
pub const HAMMER_TIP_Y: f32 = 0.23;
pub const NAIL_TRAVEL: f32 = 0.11;
/// Inner gap between the guards around the nail: narrower than the gripper, wider than the
/// hammer's head.
pub const GUARD_GAP: f32 = 0.12;
pub const GUARD_HALF: (f32, f32) = (0.03, 0.1);
pub const BOARD_HALF: (f32, f32) = (0.35, 0.07);

/// Every task of the tabletop world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    ButtonPress,
    DoorClose,
    DrawerClose,
    DoorOpen,
    DrawerOpen,
    Push,
    PickPlace,
    Hammer,
}

impl TaskKind {
    pub const ALL: [TaskKind; 8] = [
        Self::ButtonPress,
        Self::DoorClose,
        Self::DrawerClose,
        Self::DoorOpen,
        Self::DrawerOpen,
        Self::Push,
        Self::PickPlace,
        Self::Hammer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ButtonPress => "button-press",
            Self::DoorClose => "door-close",
            Self::DrawerClose => "drawer-close",
            Self::DoorOpen => "door-open",
            Self::DrawerOpen => "drawer-open",
            Self::Push => "push",
            Self::PickPlace => "pick-place",
            Self::Hammer => "hammer",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn difficulty(self) -> Difficulty {
        match self {
            Self::ButtonPress | Self::DoorClose | Self::DrawerClose => Difficulty::Easy,
            Self::DoorOpen | Self::DrawerOpen | Self::Push => Difficulty::Medium,
            Self::PickPlace | Self::Hammer => Difficulty::Hard,
        }
    }

    /// The canonical instruction first, then paraphrases.
    pub fn instructions(self) -> &'static [&'static str] {
        match self {
            Self::ButtonPress => &[
                "press the button",
                "push the button down",
                "hit the red button",
            ],
            Self::DoorClose => &["close the door", "shut the door", "push the door closed"],
            Self::DrawerClose => &[
                "close the drawer",
                "push the drawer shut",
                "slide the drawer in",
            ],
            Self::DoorOpen => &["open the door", "swing the door open", "push the door open"],
            Self::DrawerOpen => &[
                "open the drawer",
                "pull the drawer out",
                "slide the drawer open",
            ],
            Self::Push => &[
                "push the block to the target",
                "slide the red block onto the green zone",
                "move the block to the goal",
            ],
            Self::PickPlace => &[
                "put the ring on the peg",
                "place the ring onto the peg",
                "pick up the ring and drop it on the peg",
            ],
            Self::Hammer => &[
                "hammer the nail in",
                "use the hammer to drive the nail",
                "hit the nail with the hammer",
            ],
        }
    }

    pub fn max_steps(self) -> u32 {
        match self.difficulty() {
            Difficulty::Easy => 150,
            Difficulty::Medium => 200,
            Difficulty::Hard => 300,
        }
    }

    /// The object whose motion the task is about (what a plan must move).
    pub fn task_object(self) -> &'static str {
        match self {
            Self::ButtonPress => "button",
            Self::DoorClose | Self::DoorOpen => "door",
            Self::DrawerClose | Self::DrawerOpen => "drawer",
            Self::Push => "block",
            Self::PickPlace => "ring",
            Self::Hammer => "hammer",
        }
    }

    pub fn info(self) -> TaskInfo {
        TaskInfo {
            name: self.name().to_owned(),
            difficulty: self.difficulty(),
            instructions: self
                .instructions()
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_steps: self.max_steps(),
        }
    }

    /// Lays out the table for this task from `seed`.
    pub fn build(self, seed: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7AB1_E70F);
        let mut scene = Scene::new(rng.random_range(-0.6..0.6), rng.random_range(-0.85..-0.55));
        match self {
            Self::ButtonPress => build_button(&mut scene, &mut rng),
            Self::DoorOpen => build_door(&mut scene, &mut rng, 0.0),
            Self::DoorClose => {
                let angle = rng.random_range(1.1..1.4);
                build_door(&mut scene, &mut rng, angle);
            }
            Self::DrawerOpen => build_drawer(&mut scene, &mut rng, 0.0),
            Self::DrawerClose => {
                let extension = rng.random_range(0.25..0.32);
                build_drawer(&mut scene, &mut rng, extension);
            }
            Self::Push => build_push(&mut scene, &mut rng),
            Self::PickPlace => build_pick_place(&mut scene, &mut rng),
            Self::Hammer => build_hammer(&mut scene, &mut rng),
        }
        scene
    }
}

/// Task progress read off the scene: the quantities success checks and experts use.
pub struct Measure<'a>(pub &'a Scene);

impl Measure<'_> {
    fn thing(&self, name: &str) -> usize {
        self.0
            .find(name)
            .unwrap_or_else(|| panic!("the task's scene has no '{name}'"))
    }

    pub fn door_angle(&self) -> f32 {
        self.0.angle(self.thing("door"))
    }

    pub fn drawer_extension(&self) -> f32 {
        let drawer = self.0.position(self.thing("drawer"));
        let cabinet = self.0.position(self.thing("cabinet"));
        cabinet.y - drawer.y
    }

    pub fn nail_depth(&self) -> f32 {
        let nail = self.0.position(self.thing("nail"));
        let board = self.0.position(self.thing("board"));
        nail.y - nail_start_y(board.y)
    }

    pub fn button_pressed(&self) -> bool {
        let button = self.0.position(self.thing("button"));
        self.0.gripper.z <= BUTTON_PRESS_Z
            && self.0.gripper_position().distance(button) <= BUTTON_RADIUS
    }

    /// Whether the task is solved in the current state.
    pub fn success(&self, task: TaskKind) -> bool {
        match task {
            TaskKind::ButtonPress => self.button_pressed(),
            TaskKind::DoorOpen => self.door_angle() >= DOOR_OPEN_ANGLE,
            TaskKind::DoorClose => self.door_angle() <= DOOR_CLOSED_ANGLE,
            TaskKind::DrawerOpen => self.drawer_extension() >= DRAWER_OPEN_EXTENSION,
            TaskKind::DrawerClose => self.drawer_extension() <= DRAWER_CLOSED_EXTENSION,
            TaskKind::Push => {
                let d = self
                    .0
                    .position(self.thing("block"))
                    .distance(self.0.position(self.thing("target")));
                d <= PUSH_TOLERANCE
            }
            TaskKind::PickPlace => {
                let ring = self.thing("ring");
                let d = self
                    .0
                    .position(ring)
                    .distance(self.0.position(self.thing("peg")));
                self.0.held() != Some(ring)
                    && self.0.things[ring].z == 0.0
                    && d <= RING_SEAT_TOLERANCE
            }
            TaskKind::Hammer => self.nail_depth() >= NAIL_DRIVEN_DEPTH,
        }
    }
}

/// Head position of an undriven nail under a board centred at `board_y`.
pub fn nail_start_y(board_y: f32) -> f32 {
    board_y - BOARD_HALF.1 - 0.12
}

fn pose(x: f32, y: f32, angle: f32) -> Pose {
    Pose::new(Vector::new(x, y), angle)
}

fn rect(half_w: f32, half_h: f32) -> Shape {
    Shape::Rect { half_w, half_h }
}

fn circle(radius: f32) -> Shape {
    Shape::Circle { radius }
}

fn build_button(scene: &mut Scene, rng: &mut ChaCha8Rng) {
    let (x, y) = (rng.random_range(-0.6..0.6), rng.random_range(-0.1..0.6));
    scene.add_fixed(
        "button",
        pose(x, y, 0.0),
        vec![
            Part::centered(circle(0.11), palette::BUTTON_BASE),
            Part::centered(circle(BUTTON_RADIUS), palette::BUTTON),
        ],
        None,
        DrawLayer::Fixture,
    );
}

fn build_door(scene: &mut Scene, rng: &mut ChaCha8Rng, angle: f32) {
    let (x, y) = (rng.random_range(-0.65..-0.15), rng.random_range(0.15..0.45));
    let hinge = scene.add_fixed(
        "hinge",
        pose(x, y, 0.0),
        vec![Part::centered(circle(0.045), palette::HINGE)],
        None,
        DrawLayer::Fixture,
    );
    let half = DOOR_LENGTH / 2.0;
    let door = scene.add_dynamic(
        "door",
        pose(x, y, angle),
        vec![
            Part::new(
                rect(half, DOOR_HALF_THICKNESS),
                half,
                0.0,
                0.0,
                palette::DOOR,
            ),
            Part::new(circle(0.028), DOOR_LENGTH - 0.07, 0.0, 0.0, palette::HANDLE),
        ],
        DynamicSpec {
            collider: ColliderBuilder::cuboid(half, DOOR_HALF_THICKNESS)
                .translation(Vector::new(half, 0.0))
                .density(2.0)
                .collision_groups(groups(layer::OBJECT, Group::NONE)),
            linear_damping: 4.0,
            angular_damping: 6.0,
            grasp: None,
        },
    );
    scene.join(hinge, door, RevoluteJointBuilder::new().limits([0.0, 1.6]));
}

fn build_drawer(scene: &mut Scene, rng: &mut ChaCha8Rng, extension: f32) {
    let (x, y) = (rng.random_range(-0.5..0.5), rng.random_range(0.45..0.6));
    let (hw, hh) = DRAWER_HALF;
    let walls = [
        (0.0, hh + 0.03, hw + 0.06, 0.03),
        (hw + 0.03, 0.0, 0.03, hh + 0.03),
        (-hw - 0.03, 0.0, 0.03, hh + 0.03),
    ];
    let cabinet_collider = ColliderBuilder::compound(
        walls
            .iter()
            .map(|&(cx, cy, w, h)| (pose(cx, cy, 0.0), SharedShape::cuboid(w, h)))
            .collect(),
    )
    .collision_groups(groups(layer::CABINET, layer::DRAWER));
    let cabinet = scene.add_fixed(
        "cabinet",
        pose(x, y, 0.0),
        walls
            .iter()
            .map(|&(cx, cy, w, h)| Part::new(rect(w, h), cx, cy, 0.0, palette::CABINET))
            .collect(),
        Some(cabinet_collider),
        DrawLayer::Fixture,
    );
    let drawer = scene.add_dynamic(
        "drawer",
        pose(x, y - extension, 0.0),
        vec![
            Part::centered(rect(hw, hh), palette::DRAWER),
            Part::new(rect(0.07, 0.022), 0.0, -hh - 0.01, 0.0, palette::HANDLE),
        ],
        DynamicSpec {
            collider: ColliderBuilder::cuboid(hw, hh)
                .density(3.0)
                .collision_groups(groups(layer::DRAWER, layer::CABINET)),
            linear_damping: 5.0,
            angular_damping: 5.0,
            grasp: Some(GraspSpec {
                local: Vector::new(0.0, -hh - 0.1),
                radius: 0.06,
                liftable: false,
            }),
        },
    );
    scene.join(
        cabinet,
        drawer,
        PrismaticJointBuilder::new(Vector::new(0.0, -1.0)).limits([0.0, DRAWER_TRAVEL]),
    );
}

fn build_push(scene: &mut Scene, rng: &mut ChaCha8Rng) {
    let block = (rng.random_range(-0.5..0.5), rng.random_range(-0.2..0.3));
    let target = loop {
        let t: (f32, f32) = (rng.random_range(-0.65..0.65), rng.random_range(-0.4..0.65));
        let d = (t.0 - block.0).hypot(t.1 - block.1);
        if (0.4..=0.8).contains(&d) {
            break t;
        }
    };
    scene.add_fixed(
        "target",
        pose(target.0, target.1, 0.0),
        vec![Part::centered(
            Shape::Ring {
                inner: 0.07,
                outer: 0.11,
            },
            palette::TARGET,
        )],
        None,
        DrawLayer::Floor,
    );
    scene.add_dynamic(
        "block",
        pose(block.0, block.1, rng.random_range(-0.3..0.3)),
        vec![Part::centered(rect(0.07, 0.07), palette::BLOCK)],
        DynamicSpec {
            collider: ColliderBuilder::cuboid(0.07, 0.07)
                .friction(0.2)
                .collision_groups(groups(layer::OBJECT, Group::NONE)),
            linear_damping: 6.0,
            angular_damping: 6.0,
            grasp: None,
        },
    );
}

fn build_pick_place(scene: &mut Scene, rng: &mut ChaCha8Rng) {
    let ring = (rng.random_range(-0.6..0.6), rng.random_range(-0.3..0.2));
    let peg = loop {
        let p: (f32, f32) = (rng.random_range(-0.6..0.6), rng.random_range(-0.1..0.65));
        if (p.0 - ring.0).hypot(p.1 - ring.1) >= 0.45 {
            break p;
        }
    };
    scene.add_fixed(
        "peg",
        pose(peg.0, peg.1, 0.0),
        vec![Part::centered(circle(0.04), palette::PEG)],
        Some(ColliderBuilder::ball(0.04).collision_groups(groups(layer::PEG, Group::NONE))),
        DrawLayer::Fixture,
    );
    scene.add_dynamic(
        "ring",
        pose(ring.0, ring.1, 0.0),
        vec![Part::centered(
            Shape::Ring {
                inner: 0.045,
                outer: 0.085,
            },
            palette::RING,
        )],
        DynamicSpec {
            collider: ColliderBuilder::ball(0.085)
                .collision_groups(groups(layer::CARRY, Group::NONE)),
            linear_damping: 6.0,
            angular_damping: 6.0,
            grasp: Some(GraspSpec {
                local: Vector::ZERO,
                radius: 0.05,
                liftable: true,
            }),
        },
    );
}

fn build_hammer(scene: &mut Scene, rng: &mut ChaCha8Rng) {
    let board_x: f32 = rng.random_range(-0.4..0.4);
    let board_y = 0.78;
    scene.add_fixed(
        "board",
        pose(board_x, board_y, 0.0),
        vec![Part::centered(
            rect(BOARD_HALF.0, BOARD_HALF.1),
            palette::BOARD,
        )],
        Some(
            ColliderBuilder::cuboid(BOARD_HALF.0, BOARD_HALF.1)
                .collision_groups(groups(layer::BOARD, Group::NONE)),
        ),
        DrawLayer::Fixture,
    );
    let (gw, gh) = GUARD_HALF;
    let guard_x = GUARD_GAP / 2.0 + gw;
    let guard_y = board_y - BOARD_HALF.1 - gh;
    scene.add_fixed(
        "guards",
        pose(board_x, guard_y, 0.0),
        vec![
            Part::new(rect(gw, gh), -guard_x, 0.0, 0.0, palette::GUARD),
            Part::new(rect(gw, gh), guard_x, 0.0, 0.0, palette::GUARD),
        ],
        Some(
            ColliderBuilder::compound(vec![
                (pose(-guard_x, 0.0, 0.0), SharedShape::cuboid(gw, gh)),
                (pose(guard_x, 0.0, 0.0), SharedShape::cuboid(gw, gh)),
            ])
            .collision_groups(groups(layer::WALL, Group::NONE)),
        ),
        DrawLayer::Fixture,
    );
    let nail_y = nail_start_y(board_y);
    let nail = scene.add_dynamic(
        "nail",
        pose(board_x, nail_y, 0.0),
        vec![
            Part::new(rect(0.012, 0.09), 0.0, 0.09, 0.0, palette::NAIL),
            Part::centered(rect(0.04, 0.015), palette::NAIL),
        ],
        DynamicSpec {
            collider: ColliderBuilder::cuboid(0.04, 0.015)
                .density(4.0)
                .collision_groups(groups(layer::NAIL, layer::BOARD)),
            linear_damping: 25.0,
            angular_damping: 25.0,
            grasp: None,
        },
    );
    let board = scene.find("board").expect("added above");
    scene.join(
        board,
        nail,
        PrismaticJointBuilder::new(Vector::new(0.0, 1.0))
            .local_anchor1(Vector::new(0.0, nail_y - board_y))
            .limits([0.0, NAIL_TRAVEL]),
    );
    let hammer = (rng.random_range(-0.6..0.6), rng.random_range(-0.5..-0.15));
    let head_y = 0.19;
    scene.add_dynamic(
        "hammer",
        pose(hammer.0, hammer.1, 0.0),
        vec![
            Part::centered(rect(0.025, 0.17), palette::HAMMER_HANDLE),
            Part::new(rect(0.045, 0.04), 0.0, head_y, 0.0, palette::HAMMER_HEAD),
        ],
        DynamicSpec {
            collider: ColliderBuilder::compound(vec![
                (pose(0.0, 0.0, 0.0), SharedShape::cuboid(0.025, 0.17)),
                (pose(0.0, head_y, 0.0), SharedShape::cuboid(0.045, 0.04)),
            ])
            .collision_groups(groups(layer::CARRY, Group::NONE)),
            linear_damping: 6.0,
            angular_damping: 8.0,
            grasp: Some(GraspSpec {
                local: Vector::new(0.0, HAMMER_GRASP_Y),
                radius: 0.05,
                liftable: true,
            }),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_task_has_paraphrases() {
        for t in TaskKind::ALL {
            assert_eq!(TaskKind::from_name(t.name()), Some(t));
            assert!(t.instructions().len() >= 3);
        }
    }

    #[test]
    fn fresh_scenes_are_not_already_solved() {
        for t in TaskKind::ALL {
            for seed in 0..20 {
                let scene = t.build(seed);
                assert!(
                    !Measure(&scene).success(t),
                    "{} seed {seed} starts solved",
                    t.name()
                );
            }
        }
    }
}
