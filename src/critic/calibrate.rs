//! Measuring a critic: how often it accepts expert videos (sub-sampled to 8 frames like the
//! dataset's clips and shrunk to a model's size), how often it rejects failures made by editing
//! those videos (the task object erased, moved away, recoloured from the middle frame on),
//! and how it judges a model's own plans against the expert. `videoagent critic-calibrate`
//! prints these numbers; they are what the perception thresholds were chosen by.

use serde::Serialize;

use super::{Critic, CriticError, CriticInput, Finding};
use crate::agent::model_eval::score_plan;
use crate::env::tabletop::TaskKind;
use crate::env::{Observation, Rgb8Image, World, demo::record_expert};
use crate::model::pipeline::resize;
use crate::model::{SampleConfig, VideoModel};
use crate::store::dataset::clip_indices;

/// Failures made by editing an expert video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Edit {
    /// The task object is painted over with the table from a middle frame on.
    Vanish,
    /// The task object is cut out and pasted a third of the frame away.
    Teleport,
    /// The task object's colours are inverted.
    Recolour,
}

impl Edit {
    pub const ALL: [Edit; 3] = [Edit::Vanish, Edit::Teleport, Edit::Recolour];
}

/// An expert episode as a critic sees a plan: the start observation and the 7 clip frames
/// that follow it (at the world's size), with their segmentations.
pub struct ExpertCase {
    pub first: Observation,
    pub frames: Vec<Rgb8Image>,
    pub segmentations: Vec<Vec<u8>>,
    pub task: String,
    pub instruction: String,
}

/// Records the expert from (`task`, `view`, `seed`) and keeps the dataset's 8 clip frames.
pub fn expert_case(
    world: &mut dyn World,
    task: &str,
    view: usize,
    seed: u64,
) -> Result<ExpertCase, CriticError> {
    let first = world.reset(task, view, seed)?;
    let demo = record_expert(world, task, view, seed)?;
    let idx = clip_indices(demo.frames.len(), 0);
    let instruction = TaskKind::from_name(task).map_or("", |t| t.instructions()[0]);
    Ok(ExpertCase {
        first,
        frames: idx[1..].iter().map(|&i| demo.frames[i].clone()).collect(),
        segmentations: idx[1..]
            .iter()
            .map(|&i| demo.segmentations[i].clone())
            .collect(),
        task: task.to_owned(),
        instruction: instruction.to_owned(),
    })
}

impl ExpertCase {
    /// The frame edits start at: the first from the third plan frame on where the task object
    /// shows at least half its start pixels (`None`: it never does, e.g. a ring hidden under
    /// the gripper that carries it; an edit there would change nothing).
    pub fn edit_start(&self) -> Option<usize> {
        let object = TaskKind::from_name(&self.task).map_or("gripper", TaskKind::task_object);
        let id = self.first.labels.iter().position(|l| l == object)? as u8;
        let count = |seg: &[u8]| seg.iter().filter(|&&s| s == id).count();
        let start = count(&self.first.segmentation);
        (2..self.segmentations.len()).find(|&t| 2 * count(&self.segmentations[t]) >= start)
    }

    /// The clip frames with `edit` applied to the task object from frame `from` on.
    pub fn edited(&self, edit: Edit, from: usize) -> Vec<Rgb8Image> {
        let object = TaskKind::from_name(&self.task).map_or("gripper", TaskKind::task_object);
        let Some(id) = self.first.labels.iter().position(|l| l == object) else {
            return self.frames.clone();
        };
        let id = id as u8;
        let table = mean_table(&self.first);
        let side = self.first.rgb.width as usize;
        self.frames
            .iter()
            .zip(&self.segmentations)
            .enumerate()
            .map(|(t, (frame, seg))| {
                if t < from {
                    return frame.clone();
                }
                let mut out = frame.clone();
                let pixels: Vec<usize> = (0..seg.len()).filter(|&i| seg[i] == id).collect();
                let fill = |out: &mut Rgb8Image, i: usize| {
                    let c = if self.first.segmentation[i] == 0 {
                        [0, 1, 2].map(|c| self.first.rgb.pixels[i * 3 + c])
                    } else {
                        table
                    };
                    out.pixels[i * 3..i * 3 + 3].copy_from_slice(&c);
                };
                match edit {
                    Edit::Vanish => pixels.iter().for_each(|&i| fill(&mut out, i)),
                    Edit::Recolour => {
                        for &i in &pixels {
                            for c in 0..3 {
                                out.pixels[i * 3 + c] = 255 - frame.pixels[i * 3 + c];
                            }
                        }
                    }
                    Edit::Teleport => {
                        let n = pixels.len().max(1) as f32;
                        let cx = pixels.iter().map(|i| (i % side) as f32).sum::<f32>() / n;
                        let cy = pixels.iter().map(|i| (i / side) as f32).sum::<f32>() / n;
                        let half = side as f32 / 2.0;
                        let jump = side as f32 / 3.0;
                        let (dx, dy) = (
                            if cx < half { jump } else { -jump } as isize,
                            if cy < half { jump } else { -jump } as isize,
                        );
                        pixels.iter().for_each(|&i| fill(&mut out, i));
                        for &i in &pixels {
                            let (x, y) = ((i % side) as isize + dx, (i / side) as isize + dy);
                            if (0..side as isize).contains(&x) && (0..side as isize).contains(&y) {
                                let j = y as usize * side + x as usize;
                                let src = [0, 1, 2].map(|c| frame.pixels[i * 3 + c]);
                                out.pixels[j * 3..j * 3 + 3].copy_from_slice(&src);
                            }
                        }
                    }
                }
                out
            })
            .collect()
    }
}

fn mean_table(obs: &Observation) -> [u8; 3] {
    let (mut sum, mut n) = ([0u64; 3], 0u64);
    for (i, _) in obs
        .segmentation
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == 0)
    {
        for (c, s) in sum.iter_mut().enumerate() {
            *s += u64::from(obs.rgb.pixels[i * 3 + c]);
        }
        n += 1;
    }
    sum.map(|s| s.checked_div(n).unwrap_or(0) as u8)
}

/// One rejected expert video (for finding out why).
#[derive(Clone, Debug, Serialize)]
pub struct Miss {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub size: u32,
    pub what: String,
    pub findings: Vec<Finding>,
}

/// Counts for one task at one plan size.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationRow {
    pub task: String,
    pub size: u32,
    pub experts: usize,
    pub experts_accepted: usize,
    /// (edit, videos, rejected)
    pub edits: Vec<(Edit, usize, usize)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibrationReport {
    pub critic: String,
    pub rows: Vec<CalibrationRow>,
    /// Expert videos rejected and edited videos accepted.
    pub misses: Vec<Miss>,
}

impl CalibrationReport {
    /// Share of expert videos accepted at `size`.
    pub fn expert_acceptance(&self, size: u32) -> f64 {
        let rows = self.rows.iter().filter(|r| r.size == size);
        let (a, n) = rows.fold((0, 0), |(a, n), r| (a + r.experts_accepted, n + r.experts));
        a as f64 / n.max(1) as f64
    }

    /// Share of videos with `edit` rejected at `size`.
    pub fn edit_rejection(&self, edit: Edit, size: u32) -> f64 {
        let (r, n) = self
            .rows
            .iter()
            .filter(|r| r.size == size)
            .flat_map(|r| r.edits.iter().filter(|e| e.0 == edit))
            .fold((0, 0), |(r, n), e| (r + e.2, n + e.1));
        r as f64 / n.max(1) as f64
    }
}

/// Which starts and sizes to measure on.
#[derive(Clone, Debug)]
pub struct CalibrationSpec {
    pub tasks: Vec<String>,
    pub views: Vec<usize>,
    pub seeds: Vec<u64>,
    /// Plan sizes to shrink the expert frames to (the world renders at its own size).
    pub sizes: Vec<u32>,
}

/// Reviews expert videos and their edited failures; see the module docs.
pub fn calibrate(
    critic: &dyn Critic,
    world: &mut dyn World,
    spec: &CalibrationSpec,
    mut on_case: impl FnMut(),
) -> Result<CalibrationReport, CriticError> {
    let mut rows: Vec<CalibrationRow> = Vec::new();
    let mut misses = Vec::new();
    for task in &spec.tasks {
        for &size in &spec.sizes {
            rows.push(CalibrationRow {
                task: task.clone(),
                size,
                experts: 0,
                experts_accepted: 0,
                edits: Edit::ALL.iter().map(|e| (*e, 0, 0)).collect(),
            });
        }
        for &view in &spec.views {
            for &seed in &spec.seeds {
                let case = expert_case(world, task, view, seed)?;
                let edited: Vec<(Edit, Vec<Rgb8Image>)> = match case.edit_start() {
                    Some(from) => Edit::ALL
                        .iter()
                        .map(|&e| (e, case.edited(e, from)))
                        .collect(),
                    None => Vec::new(),
                };
                for &size in &spec.sizes {
                    let shrink = |frames: &[Rgb8Image]| -> Vec<Rgb8Image> {
                        frames.iter().map(|f| resize(f, size)).collect()
                    };
                    let review = |frames: &[Rgb8Image]| {
                        critic.review(&CriticInput {
                            first: &case.first,
                            plan: frames,
                            task,
                            instruction: &case.instruction,
                        })
                    };
                    let Some(row) = rows.iter_mut().find(|r| &r.task == task && r.size == size)
                    else {
                        continue;
                    };
                    let r = review(&shrink(&case.frames));
                    row.experts += 1;
                    if r.is_accept() {
                        row.experts_accepted += 1;
                    } else {
                        misses.push(Miss {
                            task: task.clone(),
                            view,
                            seed,
                            size,
                            what: "expert rejected".into(),
                            findings: r.findings,
                        });
                    }
                    for (edit, frames) in &edited {
                        let r = review(&shrink(frames));
                        if let Some(e) = row.edits.iter_mut().find(|e| e.0 == *edit) {
                            e.1 += 1;
                            if !r.is_accept() {
                                e.2 += 1;
                            } else {
                                misses.push(Miss {
                                    task: task.clone(),
                                    view,
                                    seed,
                                    size,
                                    what: format!("{edit:?} accepted"),
                                    findings: Vec::new(),
                                });
                            }
                        }
                    }
                }
                on_case();
            }
        }
    }
    Ok(CalibrationReport {
        critic: critic.name().to_owned(),
        rows,
        misses,
    })
}

/// A model's plan judged by the critic and by comparison with the expert.
#[derive(Clone, Debug, Serialize)]
pub struct PlanJudgement {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub accepted: bool,
    /// The task object ends within `bad_px` of the expert's last frame (model pixels).
    pub close_to_expert: bool,
    pub final_position_error: Option<f64>,
    pub feedback: String,
}

/// Plans of `model` for held-out starts, reviewed by `critic` and compared with the expert:
/// a plan whose task object ends more than `bad_px` model pixels from the expert's (or is
/// missing) is bad. The button never moves, so for button-press only the critic's view counts.
#[allow(clippy::too_many_arguments)]
pub fn judge_model_plans(
    critic: &dyn Critic,
    model: &VideoModel,
    world: &mut dyn World,
    spec: &CalibrationSpec,
    sample: &SampleConfig,
    bad_px: f64,
    mut on_plan: impl FnMut(&PlanJudgement),
) -> Result<Vec<PlanJudgement>, CriticError> {
    let mut out = Vec::new();
    for task in &spec.tasks {
        for &view in &spec.views {
            for &seed in &spec.seeds {
                let first = world.reset(task, view, seed)?;
                let scored = score_plan(model, world, task, view, seed, sample)
                    .map_err(|e| CriticError::Model(e.to_string()))?;
                let Some(scored) = scored else {
                    continue;
                };
                let instruction = TaskKind::from_name(task).map_or("", |t| t.instructions()[0]);
                let review = critic.review(&CriticInput {
                    first: &first,
                    plan: &scored.plan,
                    task,
                    instruction,
                });
                let err = scored.score.final_position_error;
                let j = PlanJudgement {
                    task: task.clone(),
                    view,
                    seed,
                    accepted: review.is_accept(),
                    close_to_expert: err.is_some_and(|e| e <= bad_px),
                    final_position_error: err,
                    feedback: review.feedback,
                };
                on_plan(&j);
                out.push(j);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::critic::{FindingKind, PerceptionCritic};
    use crate::env::open_world;

    fn spec(tasks: &[&str], seeds: std::ops::Range<u64>) -> CalibrationSpec {
        CalibrationSpec {
            tasks: tasks.iter().map(|t| (*t).to_owned()).collect(),
            views: vec![0, 1, 2],
            seeds: seeds.collect(),
            sizes: vec![32, 64],
        }
    }

    #[test]
    fn perception_accepts_experts_and_rejects_edited_videos() {
        let mut world = open_world("tabletop", 64).expect("world");
        let critic = PerceptionCritic::default();
        let report = calibrate(
            &critic,
            world.as_mut(),
            &spec(&["push", "door-open", "drawer-close"], 1_000_000..1_000_002),
            || {},
        )
        .expect("calibrate");
        for size in [32, 64] {
            assert_eq!(report.expert_acceptance(size), 1.0, "{:#?}", report.misses);
            for edit in Edit::ALL {
                assert!(
                    report.edit_rejection(edit, size) >= 0.8,
                    "{edit:?} at {size}: {:#?}",
                    report.misses
                );
            }
        }
        for edit in Edit::ALL {
            assert_eq!(report.edit_rejection(edit, 64), 1.0, "{edit:?}");
        }
    }

    #[test]
    fn a_vanished_block_is_reported_as_vanished() {
        let mut world = open_world("tabletop", 64).expect("world");
        let case = expert_case(world.as_mut(), "push", 0, 3).expect("case");
        let from = case.edit_start().expect("the block is in view");
        let frames = case.edited(Edit::Vanish, from);
        let review = PerceptionCritic::default().review(&CriticInput {
            first: &case.first,
            plan: &frames,
            task: "push",
            instruction: &case.instruction,
        });
        assert!(!review.is_accept());
        let f = review
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::Vanished)
            .expect("a vanish finding");
        assert_eq!((f.object.as_str(), f.frame_idx), ("block", from));
        assert!(
            review.feedback.contains("block vanishes"),
            "{}",
            review.feedback
        );
    }
}
