//! The physics of the tabletop: a rapier2d world seen from above, with a gripper that moves
//! in the table plane, rises and lowers (2.5D), grasps and carries objects.
//!
//! Height is not simulated by the engine: a raised gripper (and whatever it carries) simply
//! has its collider disabled, so it passes over everything, and objects are lifted by
//! attaching them to the gripper with a fixed joint.

use rapier2d::prelude::*;

use super::shapes::{Part, Shape};
use crate::env::Action;

/// Control period of one [`Scene::step`], seconds.
pub const DT: f32 = 1.0 / 30.0;
/// Distance the gripper travels in one step at full command.
pub const MAX_STEP: f32 = 0.045;
/// Height change per step at full command.
pub const MAX_DZ: f32 = 0.2;
/// Below this height the gripper (and what it carries) touches things on the table.
pub const CONTACT_Z: f32 = 0.35;
/// Below this height a closing gripper can grasp.
pub const GRASP_Z: f32 = 0.25;
pub const GRIPPER_RADIUS: f32 = 0.08;
/// The table spans [-TABLE, TABLE] on both axes; walls stand just outside.
pub const TABLE: f32 = 1.0;
/// A held object further than this from its grasp point slips out of the gripper.
const SLIP_DISTANCE: f32 = 0.09;

/// Collision layers; each collider is a member of one and touches those its filter allows.
pub mod layer {
    use rapier2d::prelude::Group;
    pub const WALL: Group = Group::GROUP_1;
    pub const GRIPPER: Group = Group::GROUP_2;
    pub const OBJECT: Group = Group::GROUP_3;
    pub const PEG: Group = Group::GROUP_4;
    pub const DRAWER: Group = Group::GROUP_5;
    pub const CABINET: Group = Group::GROUP_6;
    pub const BOARD: Group = Group::GROUP_7;
    pub const NAIL: Group = Group::GROUP_8;
    /// Objects that are grasped from above (ring, hammer): the gripper does not push them.
    pub const CARRY: Group = Group::GROUP_9;
}

/// Collision groups for a member of `member` that ignores `ignored`.
pub fn groups(member: Group, ignored: Group) -> InteractionGroups {
    InteractionGroups::new(member, Group::ALL - ignored, InteractionTestMode::And)
}

/// Where and how a thing can be grasped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraspSpec {
    /// Grasp point in the body's frame.
    pub local: Vector,
    /// The gripper must be this close to the grasp point.
    pub radius: f32,
    /// Whether it can be carried in the air (a drawer cannot).
    pub liftable: bool,
}

/// Drawing order of things (the gripper is always drawn last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrawLayer {
    /// Markings on the table (target zones).
    Floor,
    /// Things attached to the table.
    Fixture,
    /// Movable objects.
    Object,
}

/// A named rigid body with its visual model.
#[derive(Clone, Debug)]
pub struct Thing {
    pub name: &'static str,
    pub body: RigidBodyHandle,
    pub parts: Vec<Part>,
    pub grasp: Option<GraspSpec>,
    pub layer: DrawLayer,
    /// Height above the table (non-zero only while carried).
    pub z: f32,
    /// What the thing collides with while on the table (in the air it collides with nothing).
    filter: Group,
}

#[derive(Clone, Debug)]
struct Held {
    thing: usize,
    joint: ImpulseJointHandle,
}

#[derive(Clone, Debug)]
pub struct Gripper {
    pub body: RigidBodyHandle,
    collider: ColliderHandle,
    pub z: f32,
    pub closed: bool,
    held: Option<Held>,
}

/// Options for a movable thing.
pub struct DynamicSpec {
    pub collider: ColliderBuilder,
    pub linear_damping: f32,
    pub angular_damping: f32,
    pub grasp: Option<GraspSpec>,
}

/// The physical state of one episode.
pub struct Scene {
    physics: PhysicsWorld,
    pub things: Vec<Thing>,
    pub gripper: Gripper,
}

impl Scene {
    /// An empty table with walls and the gripper at `(x, y)`, raised and open.
    pub fn new(gripper_x: f32, gripper_y: f32) -> Self {
        let mut physics = PhysicsWorld::new();
        physics.gravity = Vector::ZERO;
        physics.integration_parameters.dt = DT;
        let walls = physics.insert_body(RigidBodyBuilder::fixed());
        let t = TABLE + 0.1;
        for (x, y, hw, hh) in [
            (0.0, t, t, 0.1),
            (0.0, -t, t, 0.1),
            (t, 0.0, 0.1, t),
            (-t, 0.0, 0.1, t),
        ] {
            physics.insert_collider(
                ColliderBuilder::cuboid(hw, hh)
                    .translation(Vector::new(x, y))
                    .collision_groups(groups(layer::WALL, Group::NONE)),
                Some(walls),
            );
        }
        let body = physics.insert_body(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(gripper_x, gripper_y))
                .lock_rotations()
                .can_sleep(false)
                .ccd_enabled(true),
        );
        let collider = physics.insert_collider(
            ColliderBuilder::ball(GRIPPER_RADIUS)
                .density(40.0)
                .friction(0.3)
                .collision_groups(InteractionGroups::new(
                    layer::GRIPPER,
                    Group::NONE,
                    InteractionTestMode::And,
                )),
            Some(body),
        );
        Self {
            physics,
            things: Vec::new(),
            gripper: Gripper {
                body,
                collider,
                z: 0.6,
                closed: false,
                held: None,
            },
        }
    }

    /// Adds a thing fixed to the table, with an optional collider.
    pub fn add_fixed(
        &mut self,
        name: &'static str,
        pose: Pose,
        parts: Vec<Part>,
        collider: Option<ColliderBuilder>,
        layer: DrawLayer,
    ) -> usize {
        let body = self
            .physics
            .insert_body(RigidBodyBuilder::fixed().pose(pose));
        if let Some(c) = collider {
            self.physics.insert_collider(c, Some(body));
        }
        self.push_thing(name, body, parts, None, layer)
    }

    /// Adds a movable thing.
    pub fn add_dynamic(
        &mut self,
        name: &'static str,
        pose: Pose,
        parts: Vec<Part>,
        spec: DynamicSpec,
    ) -> usize {
        let body = self.physics.insert_body(
            RigidBodyBuilder::dynamic()
                .pose(pose)
                .linear_damping(spec.linear_damping)
                .angular_damping(spec.angular_damping)
                .can_sleep(false),
        );
        let collider = self.physics.insert_collider(spec.collider, Some(body));
        let thing = self.push_thing(name, body, parts, spec.grasp, DrawLayer::Object);
        self.things[thing].filter = self.physics.colliders[collider].collision_groups().filter;
        thing
    }

    fn push_thing(
        &mut self,
        name: &'static str,
        body: RigidBodyHandle,
        parts: Vec<Part>,
        grasp: Option<GraspSpec>,
        layer: DrawLayer,
    ) -> usize {
        self.things.push(Thing {
            name,
            body,
            parts,
            grasp,
            layer,
            z: 0.0,
            filter: Group::ALL,
        });
        self.things.len() - 1
    }

    /// Joins two things with a joint (hinges, slides).
    pub fn join(&mut self, a: usize, b: usize, joint: impl Into<GenericJoint>) {
        let (ba, bb) = (self.things[a].body, self.things[b].body);
        self.physics.insert_impulse_joint(ba, bb, joint);
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.things.iter().position(|t| t.name == name)
    }

    pub fn pose(&self, thing: usize) -> Pose {
        *self.physics.bodies[self.things[thing].body].position()
    }

    pub fn position(&self, thing: usize) -> Vector {
        self.pose(thing).translation
    }

    pub fn angle(&self, thing: usize) -> f32 {
        self.pose(thing).rotation.angle()
    }

    pub fn gripper_position(&self) -> Vector {
        self.physics.bodies[self.gripper.body].translation()
    }

    /// The thing in the gripper, if any.
    pub fn held(&self) -> Option<usize> {
        self.gripper.held.as_ref().map(|h| h.thing)
    }

    /// World position of a thing's grasp point.
    pub fn grasp_point(&self, thing: usize) -> Option<Vector> {
        let spec = self.things[thing].grasp?;
        Some(self.pose(thing).transform_point(spec.local))
    }

    /// Makes `thing` ignore members of `ignored` while it is on the table.
    pub fn set_ignored(&mut self, thing: usize, ignored: Group) {
        self.things[thing].filter = Group::ALL - ignored;
        let airborne = self.things[thing].z > 0.0;
        self.set_airborne(thing, airborne);
    }

    /// Lifts `thing` off the table (it collides with nothing) or puts it back.
    fn set_airborne(&mut self, thing: usize, airborne: bool) {
        let filter = if airborne {
            Group::NONE
        } else {
            self.things[thing].filter
        };
        let body = &self.physics.bodies[self.things[thing].body];
        for &c in body.colliders() {
            let collider = &mut self.physics.colliders[c];
            let member = collider.collision_groups().memberships;
            collider.set_collision_groups(InteractionGroups::new(
                member,
                filter,
                InteractionTestMode::And,
            ));
        }
    }

    /// Applies one action and advances the physics by [`DT`].
    pub fn step(&mut self, action: Action) {
        let a = action.clamped();
        self.gripper.z = (self.gripper.z + a.dz * MAX_DZ).clamp(0.0, 1.0);
        let touching = self.gripper.z < CONTACT_Z;
        let filter = if touching {
            Group::ALL - layer::CARRY
        } else {
            Group::NONE
        };
        self.physics.colliders[self.gripper.collider].set_collision_groups(InteractionGroups::new(
            layer::GRIPPER,
            filter,
            InteractionTestMode::And,
        ));

        let want_closed = a.grip > 0.0;
        if want_closed && !self.gripper.closed {
            self.try_grasp();
        } else if !want_closed && self.gripper.closed {
            self.release();
        }
        self.gripper.closed = want_closed;
        self.update_carried();

        let pos = self.gripper_position();
        let limit = TABLE - GRIPPER_RADIUS;
        let target = Vector::new(
            (pos.x + a.dx * MAX_STEP).clamp(-limit, limit),
            (pos.y + a.dy * MAX_STEP).clamp(-limit, limit),
        );
        let body = &mut self.physics.bodies[self.gripper.body];
        body.set_linvel((target - pos) / DT, true);
        self.physics.step();
        let body = &mut self.physics.bodies[self.gripper.body];
        body.set_linvel(Vector::ZERO, false);
        self.check_slip();
    }

    fn try_grasp(&mut self) {
        if self.gripper.z > GRASP_Z || self.gripper.held.is_some() {
            return;
        }
        let g = self.gripper_position();
        let candidate = (0..self.things.len())
            .filter_map(|i| {
                let spec = self.things[i].grasp?;
                let d = self.grasp_point(i)?.distance(g);
                (d <= spec.radius).then_some((i, d))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((thing, _)) = candidate else { return };
        let gripper_pose = *self.physics.bodies[self.gripper.body].position();
        let thing_pose = self.pose(thing);
        let joint = FixedJointBuilder::new()
            .local_frame1(Pose::IDENTITY)
            .local_frame2(thing_pose.inverse() * gripper_pose)
            .contacts_enabled(false);
        let handle =
            self.physics
                .insert_impulse_joint(self.gripper.body, self.things[thing].body, joint);
        self.gripper.held = Some(Held {
            thing,
            joint: handle,
        });
    }

    fn release(&mut self) {
        let Some(held) = self.gripper.held.take() else {
            return;
        };
        self.physics.remove_impulse_joint(held.joint);
        let thing = &mut self.things[held.thing];
        thing.z = 0.0;
        let body = thing.body;
        self.physics.bodies[body].set_linvel(Vector::ZERO, true);
        self.physics.bodies[body].set_angvel(0.0, true);
        self.on_drop(held.thing);
        self.set_airborne(held.thing, false);
    }

    /// A ring dropped around a peg slides down over it: from then on they no longer collide.
    fn on_drop(&mut self, thing: usize) {
        let is_ring = self.things[thing]
            .parts
            .iter()
            .any(|p| matches!(p.shape, Shape::Ring { .. }));
        let Some(peg) = self.find("peg") else { return };
        if is_ring
            && self.position(thing).distance(self.position(peg)) < super::tasks::RING_SEAT_TOLERANCE
        {
            self.set_ignored(thing, layer::PEG);
        }
    }

    /// Lifts what the gripper carries with it, and lets go of what cannot be lifted.
    fn update_carried(&mut self) {
        let Some(held) = self.gripper.held.clone() else {
            return;
        };
        let raised = self.gripper.z >= CONTACT_Z;
        let liftable = self.things[held.thing].grasp.is_some_and(|g| g.liftable);
        if raised && !liftable {
            self.release();
            return;
        }
        self.things[held.thing].z = if raised { self.gripper.z } else { 0.0 };
        self.set_airborne(held.thing, raised);
    }

    fn check_slip(&mut self) {
        let Some(thing) = self.held() else { return };
        let slipped = self
            .grasp_point(thing)
            .is_some_and(|p| p.distance(self.gripper_position()) > SLIP_DISTANCE);
        if slipped {
            self.release();
        }
    }
}
