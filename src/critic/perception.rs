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

use super::track::{AMBIGUOUS, Blob, LabelMap, Tracker, UNKNOWN};
use super::{
    Critic, CriticInput, Finding, FindingKind, PixelRect, Review, Verdict, clamp_feedback,
};
use crate::env::Rgb8Image;
use crate::env::tabletop::TaskKind;
use crate::env::tabletop::scene::DrawLayer;
use crate::env::tabletop::shapes::palette;
use crate::env::tabletop::tasks::{BUTTON_RADIUS, PUSH_TOLERANCE, RING_SEAT_TOLERANCE};
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

/// The default critic; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct PerceptionCritic {
    pub thresholds: PerceptionThresholds,
}

/// A thing followed through the plan.
struct Track {
    label: u8,
    name: String,
    movable: bool,
    /// The gripper can lift it (and hide it under itself while carrying it).
    carriable: bool,
    start: Blob,
    /// One entry per plan frame (`None`: not seen).
    seen: Vec<Option<Blob>>,
}

impl Track {
    /// Where the thing was last seen before frame `t` (the start if never).
    fn last_before(&self, t: usize) -> Blob {
        self.seen[..t]
            .iter()
            .rev()
            .find_map(|b| *b)
            .unwrap_or(self.start)
    }
}

struct Judge<'a> {
    th: &'a PerceptionThresholds,
    labels: &'a [String],
    /// The start frame's segmentation at the judged size.
    start_seg: LabelMap,
    size: usize,
    start: LabelMap,
    frames: Vec<LabelMap>,
    tracks: Vec<Track>,
    findings: Vec<Finding>,
    /// Plan pixels per judged pixel.
    scale: f32,
}

fn is_thing(id: u8) -> bool {
    id != 0 && id != UNKNOWN
}

fn overlaps(a: [usize; 4], b: [usize; 4]) -> bool {
    a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3]
}

impl Judge<'_> {
    fn report(&mut self, frame_idx: usize, object: &str, kind: FindingKind, rect: [usize; 4]) {
        let already = self
            .findings
            .iter()
            .any(|f| f.object == object && f.kind == kind);
        if already {
            return;
        }
        let s = self.scale;
        let (x0, y0) = ((rect[0] as f32 * s) as u32, (rect[1] as f32 * s) as u32);
        let (x1, y1) = (
            ((rect[2] + 1) as f32 * s).ceil() as u32,
            ((rect[3] + 1) as f32 * s).ceil() as u32,
        );
        self.findings.push(Finding {
            frame_idx,
            object: object.to_owned(),
            kind,
            region: PixelRect {
                x: x0,
                y: y0,
                width: x1.saturating_sub(x0).max(1),
                height: y1.saturating_sub(y0).max(1),
            },
        });
    }

    fn gripper(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.name == "gripper")
    }

    /// Vanished / colour drift / duplicated / fixture out of place.
    fn presence(&mut self) {
        let th = self.th;
        for ti in 0..self.tracks.len() {
            let (label, m0) = (self.tracks[ti].label, self.tracks[ti].start.mass);
            for t in 0..self.frames.len() {
                self.tracks[ti].seen[t] = self.frames[t]
                    .blob(label)
                    .filter(|b| b.mass as f32 >= th.vanish_frac * m0 as f32);
            }
            self.vanished(ti);
            let track = &self.tracks[ti];
            let name = track.name.clone();
            let start_box = track.start.padded(th.fixture_pad, self.size);
            let mut events = Vec::new();
            for (t, map) in self.frames.iter().enumerate() {
                if track.seen[t].is_none() {
                    continue;
                }
                let min = (th.duplicate_frac * m0 as f32).max(3.0) as usize;
                let big = |c: &&Blob| c.mass >= min;
                let pieces: Vec<Blob> = map.components(label).iter().filter(big).copied().collect();
                if track.movable {
                    let expected = self
                        .start
                        .components(label)
                        .iter()
                        .filter(big)
                        .count()
                        .max(1);
                    if pieces.len() > expected {
                        let main = pieces[0];
                        if let Some(extra) = pieces[1..]
                            .iter()
                            .find(|p| p.gap(&main) >= th.duplicate_gap)
                        {
                            events.push((t, FindingKind::Duplicated, extra.bbox));
                        }
                    }
                } else {
                    // A fixture cannot move: a sizeable piece outside its start box appeared.
                    let min = ((th.fixture_frac * m0 as f32) as usize).max(th.fixture_min_px);
                    if let Some(p) = map
                        .components(label)
                        .iter()
                        .find(|p| p.mass >= min && !overlaps(p.bbox, start_box))
                    {
                        events.push((t, FindingKind::Appeared, p.bbox));
                    }
                }
            }
            for (t, kind, rect) in events {
                self.report(t, &name, kind, rect);
            }
        }
    }

    /// A thing that goes missing for good (from some frame to the last) while nothing covers
    /// it has vanished, or changed colour if unknown colours fill its last place. Things
    /// missing for a frame or two (under the gripper, say) and back later are fine.
    fn vanished(&mut self, ti: usize) {
        let th = self.th;
        let track = &self.tracks[ti];
        let n = self.frames.len();
        let Some(from) = (0..n).rev().take_while(|&t| track.seen[t].is_none()).last() else {
            return;
        };
        // It must be hidden in every frame it is missing from; one frame that shows its
        // place bare is enough.
        let Some(bare) = (from..n).find(|&t| !self.occluded(track, from, t)) else {
            return;
        };
        let region = track.last_before(from).padded(1, self.size);
        let (unknown, area) = self.frames[bare].count_in(region, |id| id == UNKNOWN);
        let kind = if unknown as f32 >= th.drift_frac * area as f32 {
            FindingKind::ColourDrift
        } else {
            FindingKind::Vanished
        };
        let name = track.name.clone();
        self.report(from, &name, kind, region);
    }

    /// Whether, in frame `now`, other things cover the thing's start footprint placed where
    /// it was last seen, or (for a thing the gripper can lift) carried along by the gripper from any frame
    /// at which the gripper touched that place; with room for the drop of a carried thing.
    fn occluded(&self, track: &Track, from: usize, now: usize) -> bool {
        let last_t = (0..from).rev().find(|&t| track.seen[t].is_some());
        let last = track.last_before(from);
        let map = &self.frames[now];
        let base = if track.movable {
            [
                last.centroid[0] - track.start.centroid[0],
                last.centroid[1] - track.start.centroid[1],
            ]
        } else {
            [0.0, 0.0]
        };
        let mut shifts = vec![base];
        let gripper = self.gripper().filter(|_| track.carriable);
        if let Some(g) = gripper {
            let at = |t: Option<usize>| match t {
                None => Some(g.start),
                Some(t) => self.frames[t].blob(g.label),
            };
            if let Some(g_now) = at(Some(now)) {
                let pickups = std::iter::once(last_t).chain((from..now).map(Some));
                for k in pickups {
                    let Some(g_k) = at(k) else { continue };
                    if overlaps(g_k.padded(self.th.contact_px, self.size), last.bbox) {
                        shifts.push([
                            base[0] + g_now.centroid[0] - g_k.centroid[0],
                            base[1] + g_now.centroid[1] - g_k.centroid[1],
                        ]);
                    }
                }
            }
        }
        let footprint: Vec<usize> = (0..self.start.ids.len())
            .filter(|&i| self.start.ids[i] == track.label)
            .collect();
        // A carried thing is drawn up to 0.12 table units higher on screen than when it lies:
        // it may have been picked up or put down since it was last seen.
        let drop = (0.12 * self.size as f32 / 1.96).ceil() as isize;
        let s = self.size as isize;
        let covered_at = |shift: [f32; 2], dx: isize, dy: isize| {
            footprint
                .iter()
                .filter(|&&i| {
                    let x = (i as isize % s) + shift[0].round() as isize + dx;
                    let y = (i as isize / s) + shift[1].round() as isize + dy;
                    (0..s).contains(&x) && (0..s).contains(&y) && {
                        let id = map.ids[(y * s + x) as usize];
                        is_thing(id) && id != track.label
                    }
                })
                .count()
        };
        let need = self.th.occluded_frac * footprint.len() as f32;
        shifts.iter().any(|&shift| {
            (-drop..=drop).any(|dy| (-1..=1).any(|dx| covered_at(shift, dx, dy) as f32 >= need))
        })
    }

    /// Jumps and moves without contact of movable things (the gripper excluded).
    fn motion(&mut self) {
        let th = self.th;
        let Some(gripper) = self.gripper() else {
            return;
        };
        // Any visible part of a mover counts for contact, however little of it shows.
        let at = |track: &Track, t: Option<usize>| match t {
            None => Some(track.start),
            Some(t) => self.frames[t].blob(track.label),
        };
        let gripper_at = |t: Option<usize>| at(gripper, t);
        let mut events = Vec::new();
        for track in self
            .tracks
            .iter()
            .filter(|t| t.movable && t.name != "gripper")
        {
            let steady = |b: &Blob| b.mass as f32 >= 0.5 * track.start.mass as f32;
            let mut prev = (None, track.start);
            for t in 0..self.frames.len() {
                let Some(now) = track.seen[t].filter(steady) else {
                    continue;
                };
                let before = prev;
                prev = (Some(t), now);
                let disp = now.distance(&before.1);
                if disp <= th.move_px {
                    continue;
                }
                let near = |b: Option<Blob>, of: &Blob| {
                    b.is_some_and(|g| overlaps(g.padded(th.contact_px, self.size), of.bbox))
                };
                let g0 = gripper_at(before.0);
                let g1 = gripper_at(Some(t));
                if g0.is_none() && g1.is_none() {
                    continue;
                }
                // Touched now, or touched before by a gripper that is still at that place.
                let pushers = self
                    .tracks
                    .iter()
                    .filter(|o| o.label != track.label && o.movable);
                let contact = near(g1, &now)
                    || (near(g0, &before.1) && near(g1, &before.1))
                    || pushers.clone().any(|o| near(at(o, Some(t)), &now));
                let gripper_disp = match (g0, g1) {
                    (Some(a), Some(b)) => a.distance(&b),
                    _ => 0.0,
                };
                let kind = if !contact && disp > th.teleport_px {
                    Some(FindingKind::Teleport)
                } else if !contact {
                    Some(FindingKind::MovedWithoutContact)
                } else if disp > gripper_disp + th.outrun_px {
                    Some(FindingKind::Teleport)
                } else {
                    None
                };
                if let Some(kind) = kind {
                    events.push((t, track.name.clone(), kind, now.bbox));
                }
            }
        }
        for (t, name, kind, rect) in events {
            self.report(t, &name, kind, rect);
        }
    }

    /// Unknown-colour blobs away from the gripper that were not in the start frame.
    fn new_things(&mut self) {
        let th = self.th;
        let mut events = Vec::new();
        for (t, map) in self.frames.iter().enumerate() {
            let gripper = self.gripper().and_then(|g| g.seen[t]);
            for blob in map.components(UNKNOWN) {
                if blob.mass < th.appear_px {
                    break;
                }
                let near_gripper = gripper
                    .is_some_and(|g| overlaps(g.padded(th.contact_px, self.size), blob.bbox));
                let (before, area) = self.start.count_in(blob.bbox, |id| id == UNKNOWN);
                if !near_gripper && (before as f32) < 0.5 * area as f32 {
                    events.push((t, blob.bbox));
                }
            }
        }
        for (t, rect) in events {
            self.report(t, "scene", FindingKind::Appeared, rect);
        }
    }

    fn static_gripper(&mut self) {
        let Some(g) = self.gripper() else {
            return;
        };
        let far = g
            .seen
            .iter()
            .flatten()
            .map(|b| b.distance(&g.start))
            .fold(0f32, f32::max);
        if far < self.th.static_px {
            let last = self.frames.len().saturating_sub(1);
            let rect = g.seen[last].unwrap_or(g.start).bbox;
            self.report(last, "gripper", FindingKind::GripperStatic, rect);
        }
    }

    fn final_blob(&self, name: &str) -> Option<(Blob, Blob)> {
        let t = self.tracks.iter().find(|t| t.name == name)?;
        Some((t.start, t.last_before(self.frames.len())))
    }

    /// Where a fixture is, from the start frame's segmentation (fixtures do not move, and
    /// small ones are hard to see by colour in a blurred plan).
    fn fixture(&self, name: &str) -> Option<Blob> {
        let id = self.labels.iter().position(|l| l == name)?;
        self.start_seg.blob(id as u8)
    }

    /// Whether the last frame shows the task done (None: cannot tell).
    fn goal_reached(&self, task: TaskKind) -> Option<bool> {
        let unit = self.size as f32 / 1.96;
        let slack = self.th.goal_slack * unit;
        let last_seen = |name: &str| {
            let t = self.tracks.iter().find(|t| t.name == name)?;
            *t.seen.last()?
        };
        match task {
            TaskKind::ButtonPress => {
                let button = self.fixture("button")?;
                let g = last_seen("gripper")?;
                Some(g.distance(&button) <= (BUTTON_RADIUS + 0.04) * unit + slack)
            }
            TaskKind::Push => {
                let target = self.fixture("target")?;
                let block = last_seen("block")?;
                Some(block.distance(&target) <= PUSH_TOLERANCE * unit + slack)
            }
            TaskKind::PickPlace => {
                let peg = self.fixture("peg")?;
                let ring = last_seen("ring")?;
                Some(ring.distance(&peg) <= RING_SEAT_TOLERANCE * unit + slack)
            }
            TaskKind::DoorOpen | TaskKind::DoorClose => {
                // The door is a long bar: its principal axis turns with it.
                let (door0, _) = self.final_blob("door")?;
                let door = last_seen("door")?;
                let mut turn = (door.axis - door0.axis).abs();
                if turn > std::f32::consts::FRAC_PI_2 {
                    turn = std::f32::consts::PI - turn;
                }
                Some(turn >= 0.6)
            }
            TaskKind::DrawerOpen | TaskKind::DrawerClose => {
                // The drawer starts at one end of its slide, so any long move is the right one.
                let (drawer0, _) = self.final_blob("drawer")?;
                let drawer = last_seen("drawer")?;
                Some(drawer.distance(&drawer0) >= 0.12 * unit)
            }
            TaskKind::Hammer => {
                let nail = self.fixture("nail")?;
                let hammer = last_seen("hammer")?;
                Some(hammer.distance(&nail) <= 0.4 * unit + slack)
            }
        }
    }

    fn goal(&mut self, task: Option<TaskKind>) {
        let Some(task) = task else {
            return;
        };
        if self.goal_reached(task) == Some(false) {
            let last = self.frames.len().saturating_sub(1);
            let object = task.task_object();
            let rect = self
                .tracks
                .iter()
                .find(|t| t.name == object)
                .map_or([0, 0, self.size - 1, self.size - 1], |t| {
                    t.last_before(self.frames.len()).bbox
                });
            self.report(last, object, FindingKind::GoalNotReached, rect);
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
    let text = match f.kind {
        FindingKind::Vanished => format!(
            "Inconsistent glitch. The {o} vanishes. Keep the {o} visible and move the gripper to it."
        ),
        FindingKind::Duplicated => format!(
            "Inconsistent glitch. The {o} splits into two. Keep one {o} and move it with the gripper."
        ),
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
    pub fn new(thresholds: PerceptionThresholds) -> Self {
        Self { thresholds }
    }

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
        tracker.add_blurred(&reference, &seg, th.blur_below, th.blur_distinct);
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

impl Critic for PerceptionCritic {
    fn name(&self) -> &str {
        "perception"
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        let t0 = Instant::now();
        match self.findings(input) {
            Err(reason) => Review::unavailable(reason, t0.elapsed()),
            Ok(findings) => {
                let task = TaskKind::from_name(input.task);
                Review {
                    verdict: if findings.is_empty() {
                        Verdict::Accept
                    } else {
                        Verdict::Reject
                    },
                    feedback: feedback(&findings, task, input.instruction),
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
