//! Executing a plan in MetaWorld, AVDC's way in 3D: the task object's frame-0 mask is
//! lifted with the world's depth and camera, its 6-DoF motion through the plan comes from
//! [`super::motion3d`], the motion carries a contact point to 7 subgoals, and a scripted
//! controller grasps (when the plan lifts the object by more than 10 cm, as in AVDC) or
//! pushes, then visits the subgoals. When the hand stalls (it stays within a few millimetres
//! for a while) an optional replanning hook makes a new plan from the current frame, which is
//! lifted and followed the same way (up to N times, as in the paper); the episode ends at
//! success or the step limit (the last plan's final subgoal is held).
//!
//! The tabletop's [`super::execute`] is 2.5D and steers by the table plane; this is its
//! MetaWorld counterpart and needs what only MetaWorld gives: depth and a full camera model.

use super::execute::Replanner;
use super::motion3d::{Motion3dParams, Track3d, distance, mean_point, track_object_3d};
use super::settle::{SceneDepth, SettleParams, settle_on_scene};
use crate::env::metaworld::{MetaWorld, tasks};
use crate::env::{Action, Rgb8Image, World, WorldError};

/// Settings of [`execute_plan_3d`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Execute3dConfig {
    pub max_steps: u32,
    /// Action per metre of position error (MetaWorld moves the hand 1 cm per unit action).
    pub gain: f64,
    /// A waypoint is reached within this distance, metres.
    pub reach: f64,
    /// A waypoint not reached after this many steps is given up for the next one.
    pub waypoint_steps: u32,
    /// The plan lifts the object by more than this (metres): grasp, else push.
    pub grasp_rise: f64,
    /// Steps spent closing the gripper on a grasp.
    pub grip_steps: u32,
    /// The gripper comes down on the contact from this high above it, metres.
    pub approach_height: f64,
    /// Pushes start this far behind the contact point, against the motion, metres.
    pub push_backoff: f64,
    /// A grasp closes at most this far behind the visible surface, metres.
    pub max_grasp_depth: f64,
    /// Where a grasped object's carry ends: moved back along the camera ray onto the first
    /// frame's surface behind it ([`super::settle`]); `None` keeps the tracked end.
    pub settle: Option<SettleParams>,
    /// Most object points lifted and tracked.
    pub max_points: usize,
    /// Most new plans requested from the replanning hook.
    pub max_replans: usize,
    /// A stall: this many steps in which the hand stays within `stall_distance` (metres) of
    /// where it was, without success.
    pub stall_steps: u32,
    pub stall_distance: f64,
    pub motion: Motion3dParams,
}

impl Default for Execute3dConfig {
    fn default() -> Self {
        Self {
            max_steps: tasks::MAX_STEPS,
            gain: 10.0,
            reach: 0.012,
            waypoint_steps: 60,
            grasp_rise: 0.1,
            grip_steps: 15,
            approach_height: 0.1,
            push_backoff: 0.04,
            max_grasp_depth: 0.05,
            settle: Some(SettleParams::default()),
            max_points: 300,
            max_replans: 5,
            stall_steps: 40,
            stall_distance: 0.005,
            motion: Motion3dParams::default(),
        }
    }
}

/// How the gripper meets the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Contact {
    Grasp,
    Push,
}

/// What happened in one executed episode.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rollout3d {
    pub success: bool,
    pub steps: u32,
    /// New plans that were requested.
    pub replans: usize,
    /// Why the episode failed (`None` on success).
    pub failure: Option<String>,
    /// Of the last plan followed.
    pub contact: Option<Contact>,
    /// The contact point and the 7 subgoals it is carried to, world metres.
    pub contact_point: Option<[f64; 3]>,
    pub subgoals: Vec<[f64; 3]>,
    /// Mean reprojection error of the object fit per plan frame, plan pixels.
    pub track_error_px: Vec<f64>,
    /// How high the task object really rose during the episode, metres: the simulator's
    /// state, for diagnosis (did a grasp hold?); the controller never reads it.
    pub object_rise: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Execute3dError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("task '{0}' is not one of MetaWorld's paper tasks")]
    UnknownTask(String),
}

/// The task object's frame-0 points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiftedObject {
    /// In plan pixels (centres at `i + 0.5`).
    pub pixels: Vec<[f64; 2]>,
    /// The same points in 3D (world metres), lifted with the world's depth.
    pub points: Vec<[f64; 3]>,
    /// The points of the part the hand goes to (3D), where the task names one
    /// ([`tasks::MetaTask::part`]); empty: the whole object.
    pub part: Vec<[f64; 3]>,
    /// The frame's depth image the points were lifted with (metres along the optical axis,
    /// the world's frame size): what a carry settles against ([`super::settle`]).
    pub depth: Vec<f32>,
}

/// Up to `max_points` points of the task object's mask in the world's current frame (the
/// whole body is tracked: a small part alone gives too few points), and up to as many of
/// its part's.
pub fn lift_object(
    world: &mut MetaWorld,
    task: &str,
    plan_size: u32,
    max_points: usize,
) -> Result<LiftedObject, Execute3dError> {
    let task = tasks::find(task).ok_or_else(|| Execute3dError::UnknownTask(task.to_owned()))?;
    let observation = world.observe()?;
    let depth = world.depth()?;
    let camera = world.camera().ok_or(WorldError::NotReset)?.clone();
    let size = observation.rgb.width;
    let lift = |(x, y): (u32, u32)| {
        let centre = [f64::from(x) + 0.5, f64::from(y) + 0.5];
        let d = f64::from(depth[(y * size + x) as usize]);
        (centre, camera.lift(centre, d, size))
    };
    let spread = |mask: Vec<(u32, u32)>| {
        let stride = mask.len().div_ceil(max_points.max(1)).max(1);
        mask.into_iter()
            .step_by(stride)
            .map(lift)
            .collect::<Vec<_>>()
    };
    let scale = f64::from(plan_size) / f64::from(size);
    let (pixels, points) = spread(task.object_pixels(&observation))
        .into_iter()
        .map(|(c, p)| ([c[0] * scale, c[1] * scale], p))
        .unzip();
    let part = task.part.map_or_else(Vec::new, |part| {
        spread(observation.mask_pixels(part))
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    });
    Ok(LiftedObject {
        pixels,
        points,
        part,
        depth,
    })
}

/// Executes `plan` (start frame first, any size) from the world's current state, which
/// must be the plan's start; on a stall, `replanner` (if any) gives a new plan from the
/// current frame.
pub fn execute_plan_3d(
    world: &mut MetaWorld,
    task: &str,
    plan: &[Rgb8Image],
    config: &Execute3dConfig,
    mut replanner: Option<&mut Replanner<'_>>,
) -> Result<Rollout3d, Execute3dError> {
    let mut rollout = Rollout3d {
        success: false,
        steps: 0,
        replans: 0,
        failure: None,
        contact: None,
        contact_point: None,
        subgoals: Vec::new(),
        track_error_px: Vec::new(),
        object_rise: 0.0,
    };
    let start_z = object_z(&world.observe()?);
    let mut plan = plan.to_vec();
    loop {
        // A plan that gives no track (too short, object not visible, flow failed) fails the
        // episode, not the call.
        let waypoints = match plan_to_waypoints(world, task, &plan, config, &mut rollout)? {
            Ok(waypoints) => waypoints,
            Err(why) => {
                rollout.failure = Some(why);
                return Ok(rollout);
            }
        };
        let can_replan = replanner.is_some() && rollout.replans < config.max_replans;
        match follow(world, &waypoints, config, start_z, can_replan, &mut rollout)? {
            FollowEnd::Success => return Ok(rollout),
            FollowEnd::Over => break,
            FollowEnd::Stalled => {}
        }
        let Some(hook) = replanner.as_deref_mut() else {
            break;
        };
        rollout.replans += 1;
        let now = world.observe()?;
        plan = match hook(&now) {
            Ok(plan) => plan,
            Err(why) => {
                rollout.failure = Some(format!("replanning failed: {why}"));
                return Ok(rollout);
            }
        };
    }
    rollout.failure = Some(format!("no success within {} steps", rollout.steps));
    Ok(rollout)
}

/// The task object's height now (metres).
fn object_z(observation: &crate::env::Observation) -> f64 {
    observation.objects.first().map_or(0.0, |p| f64::from(p.z))
}

/// Lifts the task object in the current frame, tracks it through `plan` and turns its motion
/// into the hand's waypoints (recorded in `rollout`); `Ok(Err(why))` when the plan gives no
/// track.
fn plan_to_waypoints(
    world: &mut MetaWorld,
    task: &str,
    plan: &[Rgb8Image],
    config: &Execute3dConfig,
    rollout: &mut Rollout3d,
) -> Result<Result<Vec<Waypoint>, String>, Execute3dError> {
    let plan_size = plan.first().map_or(0, |f| f.width);
    let object = lift_object(world, task, plan_size, config.max_points)?;
    let camera = world.camera().ok_or(WorldError::NotReset)?.clone();
    let track = match track_object_3d(
        plan,
        &object.pixels,
        &object.points,
        &camera,
        &config.motion,
    ) {
        Ok(track) => track,
        Err(e) => return Ok(Err(e.to_string())),
    };
    rollout.track_error_px.clone_from(&track.error_px);
    let scene = SceneDepth {
        depth: &object.depth,
        size: camera.width,
        camera: &camera,
    };
    let (contact, point, path) = plan_path(&track, &object.part, &scene, config);
    rollout.contact = Some(contact);
    rollout.contact_point = Some(point);
    rollout.subgoals = path.iter().skip(1).copied().collect();
    Ok(Ok(waypoints(contact, point, &path, config)))
}

/// Where fingers close on an object seen from `eye`: the visible surface point `surface`
/// moved along its viewing ray by the object's estimated radius ([`radius_across_ray`]), at
/// most `max_depth`.
fn grasp_centre(surface: [f64; 3], points: &[[f64; 3]], eye: [f64; 3], max_depth: f64) -> [f64; 3] {
    let ray = unit(sub(&surface, &eye));
    let depth = radius_across_ray(points, ray).min(max_depth);
    [
        surface[0] + ray[0] * depth,
        surface[1] + ray[1] * depth,
        surface[2] + ray[2] * depth,
    ]
}

fn sub(p: &[f64; 3], q: &[f64; 3]) -> [f64; 3] {
    [p[0] - q[0], p[1] - q[1], p[2] - q[2]]
}

fn dot(p: &[f64; 3], q: &[f64; 3]) -> f64 {
    p[0] * q[0] + p[1] * q[1] + p[2] * q[2]
}

fn unit(p: [f64; 3]) -> [f64; 3] {
    let n = dot(&p, &p).sqrt().max(1e-12);
    [p[0] / n, p[1] / n, p[2] / n]
}

/// An object's radius as the camera sees it along `ray` (a unit vector): `2 sqrt(l)` with `l`
/// the smaller variance of `points` across the ray (exact for a sphere or a disk seen evenly
/// in the image; a cube's half side within 15%).
fn radius_across_ray(points: &[[f64; 3]], ray: [f64; 3]) -> f64 {
    // Two directions across the ray.
    let helper = if ray[2].abs() < 0.9 {
        [0.0, 0.0, 1.0]
    } else {
        [1.0, 0.0, 0.0]
    };
    let u = unit([
        ray[1] * helper[2] - ray[2] * helper[1],
        ray[2] * helper[0] - ray[0] * helper[2],
        ray[0] * helper[1] - ray[1] * helper[0],
    ]);
    let v = [
        ray[1] * u[2] - ray[2] * u[1],
        ray[2] * u[0] - ray[0] * u[2],
        ray[0] * u[1] - ray[1] * u[0],
    ];
    let n = points.len().max(1) as f64;
    let coords: Vec<(f64, f64)> = points.iter().map(|p| (dot(p, &u), dot(p, &v))).collect();
    let (mu, mv) = coords
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    for (x, y) in &coords {
        let (dx, dy) = (x - mu, y - mv);
        a += dx * dx / n;
        b += dx * dy / n;
        c += dy * dy / n;
    }
    let smaller = (a + c) / 2.0 - (((a - c) / 2.0).powi(2) + b * b).sqrt();
    2.0 * smaller.max(0.0).sqrt()
}

/// A target for the hand and the gripper command on the way to it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Waypoint {
    target: [f64; 3],
    grip: f32,
    /// Stay this many steps (closing the gripper) instead of stopping when reached.
    hold: u32,
}

/// The contact point (the point of `part`, or of the whole object when `part` is empty,
/// nearest their mean), grasp or push, and the contact point's path through the plan (a
/// grasped object's carry settled onto the scene behind it, see [`Execute3dConfig::settle`]).
fn plan_path(
    track: &Track3d,
    part: &[[f64; 3]],
    scene: &SceneDepth<'_>,
    config: &Execute3dConfig,
) -> (Contact, [f64; 3], Vec<[f64; 3]>) {
    let mean = mean_point(&track.points);
    let candidates = if part.is_empty() { &track.points } else { part };
    let part_mean = mean_point(candidates);
    let surface = *candidates
        .iter()
        .min_by(|a, b| distance(a, &part_mean).total_cmp(&distance(b, &part_mean)))
        .unwrap_or(&mean);
    // The rise of the whole object (its mean point), steadier than one point's: a small
    // rotation error swings a point far from the centre up or down.
    let rise = track
        .trajectory(mean)
        .iter()
        .map(|p| p[2] - mean[2])
        .fold(0.0, f64::max);
    let c = &scene.camera.cam_to_world;
    let eye = [c[0][3], c[1][3], c[2][3]];
    if rise <= config.grasp_rise {
        // A push meets the near surface.
        return (Contact::Push, surface, track.trajectory(surface));
    }
    // Fingers close around the middle; the whole object is carried.
    let point = grasp_centre(surface, candidates, eye, config.max_grasp_depth);
    let thickness = 2.0 * radius_across_ray(&track.points, unit(sub(&mean, &eye)));
    let settled = config
        .settle
        .and_then(|params| settle_on_scene(track, scene, thickness, &params));
    let path = settled.as_ref().unwrap_or(track).trajectory(point);
    (Contact::Grasp, point, path)
}

/// The hand's waypoints for a contact and its path: above the contact, onto it, (grip,)
/// then the path's subgoals.
fn waypoints(
    contact: Contact,
    point: [f64; 3],
    path: &[[f64; 3]],
    config: &Execute3dConfig,
) -> Vec<Waypoint> {
    let (grip, start) = match contact {
        Contact::Grasp => (-1.0, point),
        Contact::Push => {
            // Behind the contact, against the direction the object first moves.
            let ahead = path.iter().find(|p| distance(p, &point) > 0.01).copied();
            let back = ahead.map_or([0.0; 3], |a| {
                let d = distance(&a, &point);
                [
                    (point[0] - a[0]) / d * config.push_backoff,
                    (point[1] - a[1]) / d * config.push_backoff,
                    (point[2] - a[2]) / d * config.push_backoff,
                ]
            });
            (
                1.0,
                [point[0] + back[0], point[1] + back[1], point[2] + back[2]],
            )
        }
    };
    let above = [start[0], start[1], start[2] + config.approach_height];
    let mut waypoints = vec![
        Waypoint {
            target: above,
            grip: -1.0,
            hold: 0,
        },
        Waypoint {
            target: start,
            grip,
            hold: 0,
        },
    ];
    let carried = if contact == Contact::Grasp {
        waypoints.push(Waypoint {
            target: start,
            grip: 1.0,
            hold: config.grip_steps,
        });
        1.0
    } else {
        grip
    };
    waypoints.extend(path.iter().skip(1).map(|&target| Waypoint {
        target,
        grip: carried,
        hold: 0,
    }));
    waypoints
}

/// How following a plan's waypoints ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FollowEnd {
    Success,
    /// The step limit (or the world's own end of the episode).
    Over,
    /// The hand stayed put for `stall_steps` steps.
    Stalled,
}

/// Drives the hand through the waypoints, then holds the last one, until success, the step
/// limit or (when `can_replan`) a stall.
fn follow(
    world: &mut MetaWorld,
    waypoints: &[Waypoint],
    config: &Execute3dConfig,
    start_z: f64,
    can_replan: bool,
    rollout: &mut Rollout3d,
) -> Result<FollowEnd, WorldError> {
    let g = &world.observe()?.gripper;
    let mut hand = [f64::from(g.x), f64::from(g.y), f64::from(g.z)];
    let mut index = 0;
    let mut on_waypoint = 0;
    // Where the hand was when it last moved more than `stall_distance`, and since when.
    let mut anchor = (hand, 0u32);
    while rollout.steps < config.max_steps {
        let w = waypoints[index.min(waypoints.len() - 1)];
        let error = [
            w.target[0] - hand[0],
            w.target[1] - hand[1],
            w.target[2] - hand[2],
        ];
        let a = |e: f64| (e * config.gain) as f32;
        let out = world.step(Action::new(a(error[0]), a(error[1]), a(error[2]), w.grip))?;
        rollout.steps += 1;
        on_waypoint += 1;
        rollout.object_rise = rollout
            .object_rise
            .max(object_z(&out.observation) - start_z);
        let g = &out.observation.gripper;
        hand = [f64::from(g.x), f64::from(g.y), f64::from(g.z)];
        if out.success {
            rollout.success = true;
            return Ok(FollowEnd::Success);
        }
        if out.done {
            return Ok(FollowEnd::Over);
        }
        let reached = error.iter().map(|e| e * e).sum::<f64>().sqrt() < config.reach;
        let done_here = if w.hold > 0 {
            on_waypoint >= w.hold
        } else {
            reached || on_waypoint >= config.waypoint_steps
        };
        if done_here && index + 1 < waypoints.len() {
            index += 1;
            on_waypoint = 0;
        }
        let moved = (0..3)
            .map(|i| (hand[i] - anchor.0[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        if moved > config.stall_distance || w.hold > 0 {
            anchor = (hand, 0);
        } else {
            anchor.1 += 1;
            if can_replan && anchor.1 >= config.stall_steps {
                return Ok(FollowEnd::Stalled);
            }
        }
    }
    Ok(FollowEnd::Over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::motion3d::Pose3;

    /// A door-like body (a panel of points around x = 0) with a handle part at x = 0.2, moved
    /// 2 cm along +y per plan frame: the hand goes to the handle, not the panel's middle, and
    /// pushes (nothing rises); without a part it goes to the panel's middle.
    #[test]
    fn the_hand_goes_to_the_tasks_part_when_it_has_one() {
        let panel: Vec<[f64; 3]> = (0..21)
            .flat_map(|i| {
                (0..5).map(move |k| [-0.1 + 0.01 * f64::from(i), 0.0, 0.05 * f64::from(k)])
            })
            .collect();
        let handle: Vec<[f64; 3]> = (0..5)
            .map(|k| [0.2, -0.02, 0.08 + 0.01 * f64::from(k)])
            .collect();
        let mut points = panel.clone();
        points.extend(&handle);
        let track = Track3d {
            points,
            poses: (0..8)
                .map(|t| Pose3 {
                    t: [0.0, 0.02 * f64::from(t), 0.0],
                    ..Pose3::IDENTITY
                })
                .collect(),
            error_px: vec![0.0; 8],
            visible: vec![1.0; 8],
        };
        let config = Execute3dConfig::default();
        let camera = crate::env::metaworld::camera::looking_along_y([0.0, -1.0, 0.5], 64);
        let depth = vec![2.0f32; 64 * 64];
        let scene = SceneDepth {
            depth: &depth,
            size: 64,
            camera: &camera,
        };
        let (contact, point, path) = plan_path(&track, &handle, &scene, &config);
        let waypoints = waypoints(contact, point, &path, &config);
        assert_eq!(contact, Contact::Push);
        assert!(
            handle.contains(&point),
            "contact {point:?} is not on the handle"
        );
        // The push starts behind the handle (against +y) and ends where the plan takes it.
        let last = waypoints.last().expect("waypoints").target;
        assert!(
            (last[1] - (point[1] + 0.14)).abs() < 1e-9,
            "last subgoal {last:?}"
        );
        assert!(waypoints[1].target[1] < point[1]);
        let (_, whole, _) = plan_path(&track, &[], &scene, &config);
        assert!(
            whole[0].abs() < 0.05,
            "without a part: the middle, got {whole:?}"
        );
    }

    /// A ball's visible cap, sampled evenly in the image as mask pixels are: the grasp goes
    /// to within a few millimetres of its centre, not to the surface facing the camera.
    #[test]
    fn a_grasp_closes_at_the_middle_of_what_the_camera_sees() {
        let (centre, radius) = ([0.1, 0.7, 0.03], 0.03);
        let eye = [0.1, -0.3, 0.03];
        // Facing the camera along -y: pixels on a disk, depth from the sphere.
        let mut cap = Vec::new();
        for i in -10i32..=10 {
            for k in -10i32..=10 {
                let (x, z) = (f64::from(i) * radius / 10.0, f64::from(k) * radius / 10.0);
                if x * x + z * z <= radius * radius {
                    let y = -(radius * radius - x * x - z * z).sqrt();
                    cap.push([centre[0] + x, centre[1] + y, centre[2] + z]);
                }
            }
        }
        let surface = [centre[0], centre[1] - radius, centre[2]];
        let grasp = grasp_centre(surface, &cap, eye, 0.05);
        let off = (0..3)
            .map(|i| (grasp[i] - centre[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(off < 0.004, "grasp {grasp:?} is {off:.4} m from the centre");
        // Never deeper than allowed.
        let shallow = grasp_centre(surface, &cap, eye, 0.01);
        assert!((shallow[1] - (surface[1] + 0.01)).abs() < 1e-9);
    }

    /// A carry seen only across the image (a square lifted 15 cm and moved 20 cm sideways at
    /// a constant 1 m from the camera) in front of a wall 1.3 m away: the grasp's path ends
    /// with the object against the wall, unless settling is off.
    #[test]
    fn a_grasped_objects_carry_ends_against_the_surface_behind_it() {
        let camera = crate::env::metaworld::camera::looking_along_y([0.0; 3], 64);
        let depth = vec![1.3f32; 64 * 64];
        let scene = SceneDepth {
            depth: &depth,
            size: 64,
            camera: &camera,
        };
        let points: Vec<[f64; 3]> = (0..5)
            .flat_map(|i| (0..5).map(move |k| [0.005 * f64::from(i), 1.0, 0.005 * f64::from(k)]))
            .collect();
        let track = Track3d {
            points,
            poses: (0..8)
                .map(|t| Pose3 {
                    t: [0.2 * f64::from(t) / 7.0, 0.0, 0.15 * f64::from(t) / 7.0],
                    ..Pose3::IDENTITY
                })
                .collect(),
            error_px: vec![0.0; 8],
            visible: vec![1.0; 8],
        };
        let config = Execute3dConfig::default();
        let (contact, point, path) = plan_path(&track, &[], &scene, &config);
        assert_eq!(contact, Contact::Grasp);
        let end = *path.last().expect("a path");
        // The square is 2 cm wide, so about 2 cm thick: its far side at the wall.
        let behind_point = camera.depth_of(end) - camera.depth_of(point);
        assert!(
            (0.2..0.3).contains(&behind_point),
            "the grasp point went {behind_point:.3} m further from the camera"
        );
        let unsettled = Execute3dConfig {
            settle: None,
            ..config
        };
        let (_, _, raw) = plan_path(&track, &[], &scene, &unsettled);
        assert_eq!(raw, track.trajectory(point));
    }
}
