//! The perception critic: an offline judge that needs no network and no model. It learns the
//! colours of every labelled thing of the start frame (from the world's segmentation),
//! follows each through the plan's frames by nearest-prototype colour assignment, and
//! reports hallucinations: things that vanish, appear, split, change colour, jump or move
//! untouched, a gripper that never moves, and a last frame that does not show the task done.
//!
//! Plans are judged at [`PerceptionThresholds::judge_size`] pixels (64, the world's size):
//! low-resolution plans are upscaled, and the start frame is first shrunk to the plan's size
//! and upscaled back so that it carries the same blur as the plan. Every threshold was set by
//! `videoagent critic-calibrate` (see [`super::calibrate`]) on expert videos and on failures
//! made by editing them. It does not see heights, so a gripper passing through an object is
//! not detected.

use std::time::Instant;

use super::judge::{Judge, Track};
use super::track::{AMBIGUOUS, LabelMap, Tracker};
use super::{Critic, CriticInput, Finding, FindingKind, Review, Verdict, clamp_feedback};
use crate::env::Rgb8Image;
use crate::env::tabletop::TaskKind;
use crate::env::tabletop::scene::DrawLayer;
use crate::env::tabletop::shapes::palette;
use crate::model::pipeline::resize;

/// Every threshold of the perception critic (pixels are pixels of the judged frame).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PerceptionThresholds {
    /// Side of the square frame plans are judged at.
    pub judge_size: u32,
    /// Colour distance (RGB units) within which a pixel can belong to a prototype.
    pub colour_tolerance: f32,
    /// Prototypes of two labels this close are ambiguous.
    pub ambiguity: f32,
    /// Things with fewer pixels than this in the start frame are not tracked.
    pub min_mass: usize,
    /// Things whose colour is found in the start frame mostly away from them (blends of
    /// other things look like them) are not tracked: at least this share must be on them.
    pub min_precision: f32,
    /// A thing with less than this share of its start mass is missing.
    pub vanish_frac: f32,
    /// A missing thing is occluded if other things cover this share of its start footprint
    /// placed where it should be.
    pub occluded_frac: f32,
    /// Things with fewer pixels of their sharp colour than this also get their blurred colour.
    pub blur_below: usize,
    /// A blurred colour (of a thing too thin to keep its own) must be this far from others.
    pub blur_distinct: f32,
    /// A thing may move this much further than the gripper that pushes or carries it.
    pub outrun_px: f32,
    /// A fixture's piece outside its start box must have this many pixels to count.
    pub fixture_min_px: usize,
    /// A missing thing whose last place is this much unknown colour has changed colour.
    pub drift_frac: f32,
    /// A second piece of a thing this far (box gap) from the main one is a duplicate...
    pub duplicate_gap: usize,
    /// ...if it has at least this share of the start mass.
    pub duplicate_frac: f32,
    /// Fixture pixels this far outside their start box...
    pub fixture_pad: usize,
    /// ...amounting to this share of the start mass mean the fixture appeared elsewhere.
    pub fixture_frac: f32,
    /// Centroid moves shorter than this are noise.
    pub move_px: f32,
    /// Moves longer than this (beyond the gripper's own move) are jumps.
    pub teleport_px: f32,
    /// A mover closer than this to a thing touches it.
    pub contact_px: usize,
    /// A gripper that never gets this far from its start has not moved.
    pub static_px: f32,
    /// Unknown-colour blobs this large away from the gripper are new things.
    pub appear_px: usize,
    /// Slack added to every goal tolerance, in table units.
    pub goal_slack: f32,
}

impl Default for PerceptionThresholds {
    fn default() -> Self {
        Self {
            judge_size: 64,
            colour_tolerance: 45.0,
            ambiguity: 25.0,
            min_mass: 8,
            blur_below: 16,
            min_precision: 0.7,
            vanish_frac: 0.25,
            occluded_frac: 0.5,
            blur_distinct: 35.0,
            outrun_px: 8.0,
            fixture_min_px: 6,
            drift_frac: 0.3,
            duplicate_gap: 4,
            duplicate_frac: 0.35,
            fixture_pad: 3,
            fixture_frac: 0.3,
            move_px: 4.0,
            teleport_px: 18.0,
            contact_px: 6,
            static_px: 3.0,
            appear_px: 60,
            goal_slack: 0.1,
        }
    }
}

/// Whose glitches may make the critic reject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingScope {
    /// A glitch of any thing.
    #[default]
    Everything,
    /// Only a glitch of the task's object, the thing whose motion the plan is executed by
    /// (the gripper's and other things' are reported with an accept). The task-level findings,
    /// a gripper that never moves and a goal not reached, always count.
    TaskObject,
}

/// The default critic; see the module docs.
#[derive(Clone, Debug)]
pub struct PerceptionCritic {
    pub thresholds: PerceptionThresholds,
    /// The kinds of finding that make it reject; the others are reported with an accept.
    pub rejects_on: Vec<FindingKind>,
    pub scope: FindingScope,
}

impl Default for PerceptionCritic {
    fn default() -> Self {
        Self {
            thresholds: PerceptionThresholds::default(),
            rejects_on: FindingKind::ALL.to_vec(),
            scope: FindingScope::default(),
        }
    }
}

/// Pixels labelled `label` in `seg` or next to one (8-neighbourhood).
fn near_label(seg: &[u8], size: usize, label: u8) -> Vec<bool> {
    (0..seg.len())
        .map(|i| {
            let (x, y) = ((i % size) as isize, (i / size) as isize);
            (-1..=1isize).any(|dy| {
                (-1..=1isize).any(|dx| {
                    let (nx, ny) = (x + dx, y + dy);
                    (0..size as isize).contains(&nx)
                        && (0..size as isize).contains(&ny)
                        && seg[ny as usize * size + nx as usize] == label
                })
            })
        })
        .collect()
}

/// Names of the things of `task` that can move (the gripper is always movable), and of those
/// the gripper can lift.
fn movable_names(task: Option<TaskKind>) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    let scene = task?.build(0);
    let movable = scene
        .things
        .iter()
        .filter(|t| t.layer == DrawLayer::Object)
        .map(|t| t.name)
        .chain(std::iter::once("gripper"))
        .collect();
    let liftable = scene
        .things
        .iter()
        .filter(|t| t.grasp.is_some_and(|g| g.liftable))
        .map(|t| t.name)
        .collect();
    Some((movable, liftable))
}

/// The paper-style sentence for the most important finding.
fn feedback(findings: &[Finding], task: Option<TaskKind>, instruction: &str) -> String {
    let rank = |k: FindingKind| match k {
        FindingKind::Vanished => 0,
        FindingKind::Duplicated => 1,
        FindingKind::Teleport => 2,
        FindingKind::MovedWithoutContact => 3,
        FindingKind::ColourDrift => 4,
        FindingKind::Appeared => 5,
        FindingKind::GripperStatic => 6,
        FindingKind::GoalNotReached => 7,
    };
    let Some(f) = findings.iter().min_by_key(|f| (rank(f.kind), f.frame_idx)) else {
        return "The video completes the task without glitches.".to_owned();
    };
    let target = task.map_or("object", TaskKind::task_object);
    let o = f.object.as_str();
    // What to do once the thing is right again: the gripper goes to the task's object, an
    // object waits for the gripper.
    let then = if o == "gripper" {
        format!("move it to the {target}")
    } else {
        "move the gripper to it".to_owned()
    };
    let text = match f.kind {
        FindingKind::Vanished => {
            format!("Inconsistent glitch. The {o} vanishes. Keep the {o} visible and {then}.")
        }
        FindingKind::Duplicated => {
            format!("Inconsistent glitch. The {o} splits into two. Keep one {o} and {then}.")
        }
        FindingKind::Teleport => format!(
            "Inconsistent glitch. The {o} jumps without any force acting on it. Move the gripper to the {o} first."
        ),
        FindingKind::MovedWithoutContact => format!(
            "Inconsistent glitch. The {o} moves without being touched. Move the gripper to the {o} to push it."
        ),
        FindingKind::ColourDrift => format!(
            "Inconsistent glitch. The {o} changes colour. Keep its colour and move the gripper to the {target}."
        ),
        FindingKind::Appeared => format!(
            "Inconsistent glitch. Something appears that was not there. Keep the scene and move the gripper to the {target}."
        ),
        FindingKind::GripperStatic => format!(
            "Task incomplete. The gripper does not move. Move the gripper to the {target} and {instruction}."
        ),
        FindingKind::GoalNotReached => format!(
            "Task incomplete. Move the gripper along with the {target} further to {instruction}."
        ),
    };
    clamp_feedback(&text)
}

impl PerceptionCritic {
    /// The findings of one plan, or why it cannot be judged.
    pub fn findings(&self, input: &CriticInput<'_>) -> Result<Vec<Finding>, String> {
        let th = &self.thresholds;
        let obs = input.first;
        let side = obs.rgb.width as usize;
        if side == 0 || obs.rgb.height as usize != side {
            return Err(format!(
                "the start frame is {}x{}, not square",
                obs.rgb.width, obs.rgb.height
            ));
        }
        if obs.rgb.pixels.len() != side * side * 3 || obs.segmentation.len() != side * side {
            return Err("the start frame's pixels or segmentation have the wrong length".into());
        }
        let Some(plan_side) = input.plan.first().map(|f| f.width) else {
            return Err("the plan has no frames".into());
        };
        if input.plan.iter().any(|f| {
            f.width != plan_side
                || f.height != plan_side
                || f.pixels.len() != (plan_side * plan_side * 3) as usize
        }) || plan_side == 0
        {
            return Err("plan frames differ in size, are not square or are malformed".into());
        }
        if obs.labels.is_empty() || obs.labels.len() >= usize::from(AMBIGUOUS) {
            return Err(format!("{} labels cannot be tracked", obs.labels.len()));
        }
        let size = th.judge_size.max(16);
        let reference = resize(&resize(&obs.rgb, plan_side.min(obs.rgb.width)), size);
        let extra = tint_extras(&obs.rgb, &obs.segmentation, &obs.labels);
        let mut tracker = Tracker::new(
            size as usize,
            &obs.rgb,
            &obs.segmentation,
            obs.labels.len(),
            &extra,
            th.colour_tolerance,
            th.ambiguity,
        );
        let seg = crate::agent::quality::resize_labels(&obs.segmentation, side, size as usize);
        let gripper: Vec<u8> = obs
            .labels
            .iter()
            .position(|l| l == "gripper")
            .map(|g| g as u8)
            .into_iter()
            .collect();
        tracker.add_blurred(&reference, &seg, th.blur_below, th.blur_distinct, &gripper);
        let task = TaskKind::from_name(input.task);
        let movable = movable_names(task);
        let start = tracker.assign(&reference);
        let frames: Vec<LabelMap> = input
            .plan
            .iter()
            .map(|f| tracker.assign(&resize(f, size)))
            .collect();
        let tracks = obs
            .labels
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(id, name)| {
                let label = id as u8;
                let blob = start.blob(label).filter(|b| b.mass >= th.min_mass)?;
                // Only things whose colour finds them where they are (not among blends of
                // other things) can be followed by colour.
                let found = start.ids.iter().filter(|&&id| id == label).count();
                let right = near_label(&seg, size as usize, label)
                    .iter()
                    .zip(&start.ids)
                    .filter(|(near, id)| **near && **id == label)
                    .count();
                let precise = right as f32 >= th.min_precision * found as f32;
                tracing::debug!(
                    "{name}: found {found}, on it {right}, trackable {}",
                    tracker.trackable(label)
                );
                (precise && tracker.trackable(label)).then(|| Track {
                    label,
                    name: name.clone(),
                    movable: movable
                        .as_ref()
                        .is_none_or(|(m, _)| m.contains(&name.as_str())),
                    carriable: movable
                        .as_ref()
                        .is_none_or(|(_, l)| l.contains(&name.as_str())),
                    start: blob,
                    seen: vec![None; frames.len()],
                })
            })
            .collect();
        let mut judge = Judge {
            th,
            labels: &obs.labels,
            start_seg: LabelMap {
                size: size as usize,
                ids: seg,
            },
            size: size as usize,
            start,
            frames,
            tracks,
            findings: Vec::new(),
            scale: plan_side as f32 / size as f32,
        };
        for t in &judge.tracks {
            let masses: Vec<usize> = judge
                .frames
                .iter()
                .map(|m| m.blob(t.label).map_or(0, |b| b.mass))
                .collect();
            tracing::debug!(
                "{} {} movable={} start={:?} masses={masses:?}",
                input.task,
                t.name,
                t.movable,
                t.start
            );
        }
        judge.presence();
        judge.motion();
        judge.new_things();
        judge.static_gripper();
        judge.goal(task);
        judge.findings.sort_by_key(|f| f.frame_idx);
        Ok(judge.findings)
    }
}

/// Appearances the start frame does not show but the world uses: a closed gripper and a
/// pressed button, in the camera's light (estimated from the table's colour).
fn tint_extras(frame: &Rgb8Image, seg: &[u8], labels: &[String]) -> Vec<(u8, [f32; 3])> {
    let (mut sum, mut n) = ([0f64; 3], 0usize);
    for (i, _) in seg.iter().enumerate().filter(|(_, s)| **s == 0) {
        for (c, s) in sum.iter_mut().enumerate() {
            *s += f64::from(frame.pixels[i * 3 + c]);
        }
        n += 1;
    }
    let tint: [f32; 3] = if n == 0 {
        [1.0; 3]
    } else {
        // The table is a gradient from its colour down to ~16 darker: its mean is ~8 below.
        [0, 1, 2].map(|c| (sum[c] / n as f64) as f32 / (f32::from(palette::TABLE[c]) - 8.0))
    };
    let lit = |rgb: [u8; 3]| [0, 1, 2].map(|c| (f32::from(rgb[c]) * tint[c]).min(255.0));
    let id = |name: &str| labels.iter().position(|l| l == name).map(|i| i as u8);
    let mut out = Vec::new();
    if let Some(g) = id("gripper") {
        out.push((g, lit(palette::GRIPPER_CLOSED)));
    }
    if let Some(b) = id("button") {
        out.push((b, lit(palette::BUTTON_PRESSED)));
    }
    out
}

impl PerceptionCritic {
    /// Whether `finding` is a reason to reject a plan of `task`.
    fn rejects_for(&self, finding: &Finding, task: Option<TaskKind>) -> bool {
        let in_scope = match self.scope {
            FindingScope::Everything => true,
            FindingScope::TaskObject => {
                matches!(
                    finding.kind,
                    FindingKind::GripperStatic | FindingKind::GoalNotReached
                ) || task.is_none_or(|t| finding.object == t.task_object())
            }
        };
        in_scope && self.rejects_on.contains(&finding.kind)
    }
}

impl Critic for PerceptionCritic {
    fn name(&self) -> &str {
        match self.scope {
            FindingScope::Everything => "perception",
            FindingScope::TaskObject => "perception-task",
        }
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        let t0 = Instant::now();
        match self.findings(input) {
            Err(reason) => Review::unavailable(reason, t0.elapsed()),
            Ok(findings) => {
                let task = TaskKind::from_name(input.task);
                // The sentence is about the reasons to reject, not the findings let pass.
                let reasons: Vec<Finding> = findings
                    .iter()
                    .filter(|f| self.rejects_for(f, task))
                    .cloned()
                    .collect();
                Review {
                    verdict: if reasons.is_empty() {
                        Verdict::Accept
                    } else {
                        Verdict::Reject
                    },
                    feedback: if reasons.is_empty() {
                        String::new()
                    } else {
                        feedback(&reasons, task, input.instruction)
                    },
                    findings,
                    latency: t0.elapsed(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::critic::calibrate::{Edit, expert_case};
    use crate::env::open_world;

    fn kinds(review: &Review) -> Vec<FindingKind> {
        review.findings.iter().map(|f| f.kind).collect()
    }

    /// A finding of `kind` about `object` in plan frame 2, with a one-pixel region.
    fn finding(object: &str, kind: FindingKind) -> Finding {
        Finding {
            frame_idx: 2,
            object: object.to_owned(),
            kind,
            region: crate::critic::PixelRect {
                x: 0,
                y: 0,
                width: 1,
                height: 1,
            },
        }
    }

    /// The sentence names the thing and what to do next; for the gripper, the next move is
    /// towards the task's object, not towards itself.
    #[test]
    fn feedback_tells_the_gripper_where_to_go() {
        let say = |object, kind| {
            feedback(
                &[finding(object, kind)],
                Some(TaskKind::Push),
                "push the block",
            )
        };
        assert_eq!(
            say("gripper", FindingKind::Duplicated),
            "Inconsistent glitch. The gripper splits into two. Keep one gripper and move it to the block."
        );
        assert_eq!(
            say("block", FindingKind::Vanished),
            "Inconsistent glitch. The block vanishes. Keep the block visible and move the gripper to it."
        );
        for kind in [FindingKind::Vanished, FindingKind::Duplicated] {
            let text = say("gripper", kind);
            assert!(!text.contains("gripper to it"), "{text}");
            assert!(text.split_whitespace().count() <= 20, "{text}");
        }
    }

    /// With the task-object scope, the gripper's and other things' glitches are reported but
    /// let the plan pass; the task object's, an unmoved gripper and an unreached goal do not.
    #[test]
    fn the_task_object_scope_rejects_only_for_what_execution_follows() {
        let everything = PerceptionCritic::default();
        let task_object = PerceptionCritic {
            scope: FindingScope::TaskObject,
            ..PerceptionCritic::default()
        };
        let push = Some(TaskKind::Push);
        let cases = [
            (finding("gripper", FindingKind::Duplicated), false),
            (finding("target", FindingKind::ColourDrift), false),
            (finding("block", FindingKind::Vanished), true),
            (finding("gripper", FindingKind::GripperStatic), true),
            (finding("block", FindingKind::GoalNotReached), true),
        ];
        for (f, rejects) in &cases {
            assert!(everything.rejects_for(f, push), "{}", f.label());
            assert_eq!(task_object.rejects_for(f, push), *rejects, "{}", f.label());
        }
        assert_eq!(task_object.name(), "perception-task");
        // Kinds left out of `rejects_on` never reject, whatever the scope.
        let goal_only = PerceptionCritic {
            rejects_on: vec![FindingKind::GoalNotReached],
            ..task_object
        };
        assert!(!goal_only.rejects_for(&cases[2].0, push));
    }

    #[test]
    fn a_drawer_is_judged_by_the_way_it_moves() {
        let mut world = open_world("tabletop", 64).expect("world");
        let case = expert_case(world.as_mut(), "drawer-open", 0, 1_000_000).expect("case");
        let plan: Vec<Rgb8Image> = case.frames.iter().map(|f| resize(f, 32)).collect();
        let goal_missed = |task: &str| {
            let review = PerceptionCritic::default().review(&CriticInput {
                first: &case.first,
                plan: &plan,
                task,
                instruction: &case.instruction,
            });
            kinds(&review).contains(&FindingKind::GoalNotReached)
        };
        // The expert's opening opens the drawer; the same long move does not close it.
        assert!(!goal_missed("drawer-open"));
        assert!(goal_missed("drawer-close"));
    }

    #[test]
    fn a_frozen_plan_is_a_static_gripper_and_an_unreached_goal() {
        let mut world = open_world("tabletop", 64).expect("world");
        let case = expert_case(world.as_mut(), "drawer-open", 1, 1_000_000).expect("case");
        let frozen = vec![resize(&case.first.rgb, 32); 7];
        let review = PerceptionCritic::default().review(&CriticInput {
            first: &case.first,
            plan: &frozen,
            task: "drawer-open",
            instruction: &case.instruction,
        });
        assert_eq!(review.verdict, Verdict::Reject);
        let k = kinds(&review);
        assert!(k.contains(&FindingKind::GripperStatic), "{k:?}");
        assert!(k.contains(&FindingKind::GoalNotReached), "{k:?}");
        assert!(
            review.feedback.starts_with("Task incomplete."),
            "{}",
            review.feedback
        );
        assert!(review.feedback.split_whitespace().count() <= 20);
    }

    #[test]
    fn a_jumping_block_is_a_teleport_and_regions_are_in_plan_pixels() {
        let mut world = open_world("tabletop", 64).expect("world");
        let case = expert_case(world.as_mut(), "push", 0, 1_000_001).expect("case");
        let from = case.edit_start().expect("in view");
        let plan: Vec<Rgb8Image> = case
            .edited(Edit::Teleport, from)
            .iter()
            .map(|f| resize(f, 32))
            .collect();
        let review = PerceptionCritic::default().review(&CriticInput {
            first: &case.first,
            plan: &plan,
            task: "push",
            instruction: &case.instruction,
        });
        let jump = review
            .findings
            .iter()
            .find(|f| {
                f.object == "block"
                    && matches!(
                        f.kind,
                        FindingKind::Teleport | FindingKind::MovedWithoutContact
                    )
            })
            .unwrap_or_else(|| panic!("no jump in {:?}", review.findings));
        assert_eq!(jump.frame_idx, from);
        assert!(
            jump.region.x + jump.region.width <= 32 && jump.region.y + jump.region.height <= 32
        );
        assert!(review.feedback.contains("block"), "{}", review.feedback);
    }

    #[test]
    fn malformed_input_is_unavailable_not_a_panic() {
        let mut world = open_world("tabletop", 32).expect("world");
        let first = world.reset("push", 0, 3).expect("reset");
        let critic = PerceptionCritic::default();
        let ask = |plan: &[Rgb8Image]| {
            critic.review(&CriticInput {
                first: &first,
                plan,
                task: "push",
                instruction: "push",
            })
        };
        assert!(matches!(ask(&[]).verdict, Verdict::Unavailable { .. }));
        let broken = Rgb8Image {
            width: 8,
            height: 8,
            pixels: vec![0; 10],
        };
        assert!(matches!(
            ask(&[broken]).verdict,
            Verdict::Unavailable { .. }
        ));
        let mut bad_obs = first.clone();
        bad_obs.segmentation.truncate(3);
        let r = critic.review(&CriticInput {
            first: &bad_obs,
            plan: std::slice::from_ref(&first.rgb),
            task: "unknown-task",
            instruction: "",
        });
        assert!(matches!(r.verdict, Verdict::Unavailable { .. }));
    }
}
