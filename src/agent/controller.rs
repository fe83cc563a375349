//! A scripted controller that drives the gripper through a plan's subgoals with the world's
//! [`Action`] interface: travel raised to the first subgoal, descend, grasp if the
//! interaction grasps, then follow the subgoals (lowered when pulling, raised when carrying)
//! and finish as the interaction requires (press and hold, release, or lower a carried tool
//! and strike, retrying beside when blocked). Pushes are closed-loop on the object as the
//! world shows it ([`ObjectView`]): a sliding push lines up behind the object and pushes it
//! to where the plan ends; a turning push keeps the plan's contact point on the object and
//! turns it about the hinge it shows. Everything else reads only the gripper's own state.
//! The constants (speeds, heights) are the tabletop world's.

use super::motion::{Interaction, Subgoals};
use super::rigid::Similarity2;
use crate::env::tabletop::scene::{CONTACT_Z, MAX_DZ, MAX_STEP, TABLE};
use crate::env::{Action, GripperState};

const OPEN: f32 = -1.0;
const CLOSE: f32 = 1.0;

/// Heights and tolerances of the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControllerParams {
    /// Height for travelling over things and carrying.
    pub travel_z: f32,
    /// Height for pushing, pulling and grasping.
    pub work_z: f32,
    /// A subgoal counts as reached within this distance.
    pub reach: f32,
    /// Pushes continue this far past the last subgoal (the plan stops as soon as the task
    /// is solved, just at the edge of success).
    pub overshoot: f32,
    /// Steps the gripper waits closing on a grasp.
    pub grasp_steps: u32,
    /// A carried tool is lowered this far before the last subgoal, behind it.
    pub stage_distance: f32,
}

impl Default for ControllerParams {
    fn default() -> Self {
        Self {
            travel_z: 0.6,
            work_z: 0.12,
            reach: 0.02,
            overshoot: 0.05,
            grasp_steps: 2,
            stage_distance: 0.12,
        }
    }
}

/// Where the controller is in its script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Approach,
    Descend,
    Close { left: u32 },
    Lift,
    Follow { index: usize },
    Stage,
    Lower,
    Strike,
    Release { left: u32 },
    Done,
}

/// What the world shows of the task object now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectView {
    /// Centre of its visible pixels, table coordinates.
    pub centre: [f32; 2],
    /// Its pose relative to frame 0 of the plan, if it could be registered.
    pub pose: Option<Similarity2>,
}

/// Largest turn toward the goal pose that one push aims at (radians).
const TURN_LEAD: f32 = 0.35;
/// How far turning pushes go past the plan's final pose (radians).
const TURN_OVERSHOOT: f32 = 0.4;

/// Follows one set of subgoals; make a new one for a new plan.
#[derive(Clone, Debug)]
pub struct Controller {
    goals: Subgoals,
    params: ControllerParams,
    phase: Phase,
    /// Where the object was last seen.
    object: Option<[f32; 2]>,
    /// Its pose when last seen (frame 0 -> now).
    pose: Option<Similarity2>,
    /// Strikes tried so far (a blocked strike is retried a little to the side).
    strikes: usize,
    /// Steps the gripper has not moved while striking.
    blocked_steps: u32,
    last_position: [f32; 2],
    /// Closed-loop pushes: the least remaining distance (or turn) so far, and the steps
    /// since it last shrank; a push that stops gaining gives up (and the episode stalls).
    best_remaining: f32,
    since_best: u32,
}

/// Steps in contact that a closed-loop push may go on without getting closer to its goal.
const PATIENCE_STEPS: u32 = 40;

/// Sideways offsets of successive strikes (a tool must pass a narrow gap).
const STRIKE_OFFSETS: [f32; 5] = [0.0, 0.012, -0.012, 0.024, -0.024];

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

impl Controller {
    pub fn new(goals: Subgoals, params: ControllerParams) -> Self {
        Self {
            goals,
            params,
            phase: Phase::Approach,
            object: None,
            pose: None,
            strikes: 0,
            blocked_steps: 0,
            last_position: [f32::NAN; 2],
            best_remaining: f32::INFINITY,
            since_best: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Every subgoal has been visited and the script is over.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn subgoals(&self) -> &Subgoals {
        &self.goals
    }

    fn grip(&self) -> f32 {
        if self.goals.interaction.grasps() {
            CLOSE
        } else {
            OPEN
        }
    }

    fn goal(&self, i: usize) -> [f32; 2] {
        let p = self.goals.points.get(i).copied().unwrap_or([0.0, 0.0]);
        let limit = TABLE - 0.05;
        [p[0].clamp(-limit, limit), p[1].clamp(-limit, limit)]
    }

    fn last(&self) -> usize {
        self.goals.points.len().saturating_sub(1)
    }

    /// Direction of the last leg of the subgoals (zero if they end where they start).
    fn last_direction(&self) -> [f32; 2] {
        let end = self.goal(self.last());
        // A pulled object moves along a straight slide: take the whole way, not the last
        // leg (its intermediate points add tracking noise).
        let from = if self.goals.interaction == Interaction::Pull {
            self.goal(0)
        } else {
            (0..self.last())
                .rev()
                .map(|i| self.goal(i))
                .find(|p| dist(*p, end) > 0.02)
                .unwrap_or(end)
        };
        let d = dist(from, end);
        if d < 1e-6 {
            [0.0, 0.0]
        } else {
            [(end[0] - from[0]) / d, (end[1] - from[1]) / d]
        }
    }

    fn beyond_last(&self, by: f32) -> [f32; 2] {
        let (e, d) = (self.goal(self.last()), self.last_direction());
        [e[0] + d[0] * by, e[1] + d[1] * by]
    }

    /// Like [`Self::beyond_last`], shifted sideways for the current strike.
    fn strike_point(&self, by: f32) -> [f32; 2] {
        let p = self.beyond_last(by);
        let d = self.last_direction();
        let side = STRIKE_OFFSETS[self.strikes.min(STRIKE_OFFSETS.len() - 1)];
        [p[0] - d[1] * side, p[1] + d[0] * side]
    }

    /// The next action for the gripper in state `g`; `object` is how the task object is
    /// seen now, if it is seen.
    pub fn act(&mut self, g: &GripperState, object: Option<&ObjectView>) -> Action {
        // A raised gripper touches nothing, so the object cannot have moved; what changes
        // then is how much of it the (larger, raised) gripper hides: keep the last view.
        let touching = g.z < CONTACT_Z;
        if let Some(seen) = object {
            if touching || self.object.is_none() {
                self.object = Some(seen.centre);
            }
            if seen.pose.is_some() && (touching || self.pose.is_none()) {
                self.pose = seen.pose;
            }
        }
        match (self.goals.interaction, self.object, self.pose) {
            (Interaction::Push, Some(object), _) => return self.slide(g, object),
            (Interaction::Turn, _, Some(pose)) => return self.turn(g, pose),
            _ => {}
        }
        let p = self.params;
        let here = [g.x, g.y];
        let grip = self.grip();
        // Phases that end this step hand over to the next one at once.
        for _ in 0..8 {
            let next = match self.phase {
                Phase::Approach => {
                    let start = self.goal(0);
                    if dist(here, start) < p.reach {
                        Phase::Descend
                    } else if g.z < p.travel_z - 0.05 && dist(here, start) > 0.05 {
                        return go(g, here, p.travel_z, OPEN);
                    } else {
                        return go(g, start, p.travel_z, OPEN);
                    }
                }
                Phase::Descend => {
                    let z = if self.goals.interaction == Interaction::Press {
                        0.0
                    } else {
                        p.work_z
                    };
                    if (g.z - z).abs() > 0.02 {
                        return go(g, self.goal(0), z, OPEN);
                    }
                    match self.goals.interaction {
                        Interaction::Press => Phase::Done,
                        Interaction::Push | Interaction::Turn => Phase::Follow { index: 1 },
                        _ => Phase::Close {
                            left: p.grasp_steps,
                        },
                    }
                }
                Phase::Close { left } => {
                    if left > 0 {
                        self.phase = Phase::Close { left: left - 1 };
                        return go(g, self.goal(0), p.work_z, CLOSE);
                    }
                    match self.goals.interaction {
                        Interaction::Carry { .. } => Phase::Lift,
                        _ => Phase::Follow { index: 1 },
                    }
                }
                Phase::Lift => {
                    if g.z < p.travel_z - 0.02 {
                        return go(g, here, p.travel_z, CLOSE);
                    }
                    Phase::Follow { index: 1 }
                }
                Phase::Follow { index } => match self.follow(g, index) {
                    Ok(phase) => phase,
                    Err(action) => return action,
                },
                Phase::Stage => {
                    let stage = self.strike_point(-p.stage_distance);
                    if dist(here, stage) > p.reach {
                        return go(g, stage, p.travel_z, CLOSE);
                    }
                    Phase::Lower
                }
                Phase::Lower => {
                    if (g.z - p.work_z).abs() > 0.02 {
                        return go(g, self.strike_point(-p.stage_distance), p.work_z, CLOSE);
                    }
                    Phase::Strike
                }
                Phase::Strike => {
                    let end = self.strike_point(p.overshoot);
                    let moved = dist(here, self.last_position);
                    self.last_position = here;
                    self.blocked_steps = if moved < 0.003 {
                        self.blocked_steps + 1
                    } else {
                        0
                    };
                    if self.blocked_steps >= 4 && self.strikes + 1 < STRIKE_OFFSETS.len() {
                        // Blocked (the tool hit the gap's side): back off and try beside.
                        self.strikes += 1;
                        self.blocked_steps = 0;
                        self.phase = Phase::Stage;
                        return go(g, self.strike_point(-p.stage_distance), p.travel_z, CLOSE);
                    }
                    if dist(here, end) > p.reach {
                        return go(g, end, p.work_z, CLOSE);
                    }
                    Phase::Done
                }
                Phase::Release { left } => {
                    if left > 0 {
                        self.phase = Phase::Release { left: left - 1 };
                        return go(g, here, g.z, OPEN);
                    }
                    Phase::Done
                }
                Phase::Done => {
                    return match self.goals.interaction {
                        Interaction::Press => go(g, self.goal(0), 0.0, OPEN),
                        Interaction::Carry { release: true } => go(g, here, p.travel_z, OPEN),
                        _ => go(g, here, g.z, grip),
                    };
                }
            };
            self.phase = next;
        }
        Action::default()
    }

    /// Records how far a closed-loop push still has to go; `true` once it has stopped
    /// gaining for [`PATIENCE_STEPS`] steps with the gripper low enough to touch.
    fn out_of_patience(&mut self, remaining: f32, touching: bool) -> bool {
        if remaining < self.best_remaining - 0.01 {
            self.best_remaining = remaining;
            self.since_best = 0;
        } else if touching {
            self.since_best += 1;
        }
        self.since_best > PATIENCE_STEPS
    }

    /// Steers a turning push (a door) by the object's seen pose: keep the contact point on
    /// the object where the plan put it, and push it along the arc toward the plan's final
    /// pose, a limited turn at a time, about the pivot of the remaining motion.
    fn turn(&mut self, g: &GripperState, pose: Similarity2) -> Action {
        let p = self.params;
        let here = [g.x, g.y];
        if self.phase == Phase::Done {
            return go(g, here, g.z, OPEN);
        }
        let anchor = self.goals.points.first().copied().unwrap_or(here);
        let goal = self
            .goals
            .object_poses
            .last()
            .copied()
            .unwrap_or(Similarity2::IDENTITY);
        let contact = pose.apply(anchor);
        // The remaining motion, goal after the inverse of the current pose; turning pushes
        // go on past the plan's last pose (the plan stops at the edge of success, and the
        // tracked turn tends to fall short when the gripper hides the object's end).
        let planned = goal.angle - self.goals.object_poses.first().map_or(0.0, |p| p.angle);
        let extra = TURN_OVERSHOOT * planned.signum() * f32::from(planned.abs() > 0.2);
        let mut theta = wrap(goal.angle + extra - pose.angle);
        let end = goal.apply(anchor);
        if self.out_of_patience(-pose.angle * planned.signum(), g.z < CONTACT_Z) {
            self.phase = Phase::Done;
            return go(g, here, g.z, OPEN);
        }
        if planned.abs() > 0.2 && (theta * planned <= 0.0 || theta.abs() < 0.1) {
            // Past the plan's turn without success: keep turning the same way (a hinge
            // stops it; a stall then ends the attempt). Never turn back.
            theta = 0.2 * planned.signum();
        } else if theta.abs() < 0.03 && dist(contact, end) < 0.03 {
            self.phase = Phase::Done;
            return go(g, here, g.z, OPEN);
        }
        let aim = if theta.abs() > 0.05 {
            // The pivot: of the turn seen so far once there is one (a hinge shows itself),
            // else of the remaining planned motion.
            let rel = {
                let (s, c) = (goal.angle - pose.angle).sin_cos();
                let pt = pose.translation;
                Similarity2 {
                    scale: 1.0,
                    angle: goal.angle - pose.angle,
                    translation: [
                        goal.translation[0] - (c * pt[0] - s * pt[1]),
                        goal.translation[1] - (s * pt[0] + c * pt[1]),
                    ],
                }
            };
            let seen_pivot = if pose.angle.abs() > 0.15 {
                pivot_of(&pose)
            } else {
                None
            };
            let d = self.goals.push_direction;
            match seen_pivot.or_else(|| pivot_of(&rel)) {
                // Before the object shows its hinge, push the way the plan moved the contact.
                Some(_) if seen_pivot.is_none() && d != [0.0, 0.0] => {
                    [contact[0] + d[0] * 0.3, contact[1] + d[1] * 0.3]
                }
                Some(pivot) => {
                    let step = theta.signum() * theta.abs().min(TURN_LEAD);
                    let (s, c) = step.sin_cos();
                    let r = [contact[0] - pivot[0], contact[1] - pivot[1]];
                    [
                        pivot[0] + c * r[0] - s * r[1],
                        pivot[1] + s * r[0] + c * r[1],
                    ]
                }
                None => [contact[0] + d[0] * 0.15, contact[1] + d[1] * 0.15],
            }
        } else {
            let d = dist(contact, end).max(1e-6);
            let k = (d + p.overshoot).min(0.15) / d;
            [
                contact[0] + (end[0] - contact[0]) * k,
                contact[1] + (end[1] - contact[1]) * k,
            ]
        };
        self.phase = Phase::Follow { index: self.last() };
        let lowered = g.z <= p.work_z + 0.02;
        // Until the object has turned, the first push may have to travel to reach it.
        let reach_in = if pose.angle.abs() > 0.15 { 0.06 } else { 0.25 };
        if lowered && dist(here, contact) < reach_in {
            return go(g, aim, p.work_z, OPEN);
        }
        if g.z < p.travel_z - 0.05 && dist(here, contact) > 0.05 {
            return go(g, here, p.travel_z, OPEN);
        }
        if dist(here, contact) < p.reach {
            return go(g, contact, p.work_z, OPEN);
        }
        go(g, contact, p.travel_z, OPEN)
    }

    /// Steers a sliding push by the object: for the next point of its planned path, line
    /// up behind it (raised, then lowered) and push through it, correcting sideways drift.
    fn slide(&mut self, g: &GripperState, object: [f32; 2]) -> Action {
        let p = self.params;
        let here = [g.x, g.y];
        let path = &self.goals.object_path;
        let last = path.len().saturating_sub(1);
        if self.phase == Phase::Done {
            return go(g, here, g.z, OPEN);
        }
        // The plan's path of a sliding object is close to straight: push it to where the
        // plan ends (a little beyond, as the plan stops at the edge of success).
        let from = path.first().copied().unwrap_or(object);
        let end = path.get(last).copied().unwrap_or(object);
        let span = dist(from, end);
        let target = if span > 1e-3 {
            let k = p.overshoot * 0.6 / span;
            [
                end[0] + (end[0] - from[0]) * k,
                end[1] + (end[1] - from[1]) * k,
            ]
        } else {
            end
        };
        if dist(object, target) < 0.015
            || self.out_of_patience(dist(object, target), g.z < CONTACT_Z)
        {
            self.phase = Phase::Done;
            return go(g, here, g.z, OPEN);
        }
        self.phase = Phase::Follow { index: last };
        let gap = dist(object, target).max(1e-6);
        let dir = [(target[0] - object[0]) / gap, (target[1] - object[1]) / gap];
        let perp = [-dir[1], dir[0]];
        let contact =
            self.goals.object_radius * 0.7 + super::super::env::tabletop::scene::GRIPPER_RADIUS;
        let behind = [
            object[0] - dir[0] * (contact + 0.03),
            object[1] - dir[1] * (contact + 0.03),
        ];
        let rel = [here[0] - object[0], here[1] - object[1]];
        let along = rel[0] * dir[0] + rel[1] * dir[1];
        let lateral = rel[0] * perp[0] + rel[1] * perp[1];
        let lowered = g.z <= p.work_z + 0.02;
        if lowered && along < -(contact - 0.05) && lateral.abs() < 0.035 {
            let aim = [
                object[0] + dir[0] * 0.15 - perp[0] * lateral * 2.0,
                object[1] + dir[1] * 0.15 - perp[1] * lateral * 2.0,
            ];
            return go(g, aim, p.work_z, OPEN);
        }
        if g.z < p.travel_z - 0.05 && dist(here, behind) > p.reach {
            return go(g, here, p.travel_z, OPEN);
        }
        if dist(here, behind) < p.reach {
            return go(g, behind, p.work_z, OPEN);
        }
        go(g, behind, p.travel_z, OPEN)
    }

    /// Follows subgoal `index`; `Err(action)` is the action to take now, `Ok(phase)` the
    /// phase to continue with.
    fn follow(&self, g: &GripperState, index: usize) -> Result<Phase, Action> {
        let p = self.params;
        let here = [g.x, g.y];
        let last = self.last();
        let carry = matches!(self.goals.interaction, Interaction::Carry { .. });
        let z = if carry { p.travel_z } else { p.work_z };
        if index > last {
            return Ok(Phase::Done);
        }
        // Pulls and placements go straight for the plan's end: raised or along a slide,
        // the way between matters less than the noise of its tracked points.
        let straight = matches!(
            self.goals.interaction,
            Interaction::Pull | Interaction::Carry { release: true }
        );
        if straight && index < last {
            return Ok(Phase::Follow { index: last });
        }
        if index == last {
            match self.goals.interaction {
                Interaction::Carry { release: false } => return Ok(Phase::Stage),
                Interaction::Carry { release: true } => {
                    let end = self.goal(last);
                    if dist(here, end) > p.reach * 0.5 {
                        return Err(go(g, end, z, CLOSE));
                    }
                    return Ok(Phase::Release { left: 2 });
                }
                _ => {
                    let end = self.beyond_last(p.overshoot);
                    if dist(here, end) > p.reach {
                        return Err(go(g, end, z, self.grip()));
                    }
                    return Ok(Phase::Done);
                }
            }
        }
        let target = self.goal(index);
        if dist(here, target) > p.reach {
            return Err(go(g, target, z, self.grip()));
        }
        Ok(Phase::Follow { index: index + 1 })
    }
}

/// The point a rigid motion leaves in place (`None` for a near-translation).
fn pivot_of(t: &Similarity2) -> Option<[f32; 2]> {
    let (s, c) = t.angle.sin_cos();
    let det = (1.0 - c) * (1.0 - c) + s * s;
    if det < 1e-4 {
        return None;
    }
    let [tx, ty] = t.translation;
    Some([
        ((1.0 - c) * tx - s * ty) / det,
        (s * tx + (1.0 - c) * ty) / det,
    ])
}

fn wrap(a: f32) -> f32 {
    let tau = std::f32::consts::TAU;
    let a = a.rem_euclid(tau);
    if a > std::f32::consts::PI { a - tau } else { a }
}

/// Moves toward `target` at height `z`, at full speed along a straight line.
fn go(g: &GripperState, target: [f32; 2], z: f32, grip: f32) -> Action {
    let (dx, dy) = ((target[0] - g.x) / MAX_STEP, (target[1] - g.y) / MAX_STEP);
    let s = dx.abs().max(dy.abs()).max(1.0);
    Action::new(dx / s, dy / s, (z - g.z) / MAX_DZ, grip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::World;
    use crate::env::tabletop::Tabletop;

    fn goals(interaction: Interaction, points: Vec<[f32; 2]>) -> Subgoals {
        Subgoals {
            interaction,
            object_path: points.clone(),
            object_poses: vec![crate::agent::rigid::Similarity2::IDENTITY; points.len()],
            points,
            object_radius: 0.1,
            object_shape: Vec::new(),
            push_direction: [0.0, 0.0],
        }
    }

    #[test]
    fn reaches_given_subgoals_in_order() {
        let mut world = Tabletop::new(32).expect("world");
        // An empty stretch of the button task's table.
        let mut obs = world.reset("button-press", 0, 0).expect("reset");
        let path = vec![[-0.5, -0.2], [-0.2, -0.3], [0.1, -0.35], [0.3, -0.3]];
        let mut c = Controller::new(
            goals(Interaction::Push, path.clone()),
            ControllerParams::default(),
        );
        let mut next = 0;
        let mut lowered_at_start = false;
        for _ in 0..200 {
            let a = c.act(&obs.gripper, None);
            obs = world.step(a).expect("step").observation;
            let g = [obs.gripper.x, obs.gripper.y];
            if next < path.len() && dist(g, path[next]) < 0.03 {
                if next == 0 {
                    lowered_at_start = true;
                }
                next += 1;
            }
            if c.finished() {
                break;
            }
        }
        assert!(c.finished(), "stuck in {:?}", c.phase());
        assert_eq!(
            next,
            path.len(),
            "visited {next} of {} subgoals",
            path.len()
        );
        assert!(lowered_at_start);
        assert!(
            (obs.gripper.z - 0.12).abs() < 0.03,
            "pushes happen lowered: {}",
            obs.gripper.z
        );
    }

    #[test]
    fn presses_down_on_a_press_subgoal() {
        let mut world = Tabletop::new(32).expect("world");
        let mut obs = world.reset("button-press", 1, 3).expect("reset");
        let button = obs.object("button").map(|o| [o.x, o.y]).expect("button");
        let mut c = Controller::new(
            goals(Interaction::Press, vec![button; 8]),
            ControllerParams::default(),
        );
        let mut solved = false;
        for _ in 0..150 {
            let out = world.step(c.act(&obs.gripper, None)).expect("step");
            obs = out.observation;
            if out.success {
                solved = true;
                break;
            }
        }
        assert!(solved, "the button is not pressed: {:?}", obs.gripper);
    }
}
