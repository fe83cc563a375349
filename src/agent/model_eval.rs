//! Held-out quality of a video model: for starts the model never saw, generate a plan and
//! compare it with the expert's video from the same start (see [`super::quality`]).

use std::ops::ControlFlow;

use serde::Serialize;

use super::quality::{ColourKey, locate, psnr, resize_labels, ssim};
use crate::env::tabletop::TaskKind;
use crate::env::{Rgb8Image, World, demo::record_expert};
use crate::model::pipeline::resize;
use crate::model::{SampleConfig, VideoModel};
use crate::store::dataset::clip_indices;

/// First seed of held-out starts: datasets use small seeds, evaluation starts here.
pub const HELD_OUT_SEED: u64 = 1_000_000;
/// Colour distance (RGB units) within which a pixel counts as the tracked object.
pub const COLOUR_TOLERANCE: f32 = 45.0;

/// Scores of one plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanScore {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub psnr: f64,
    pub ssim: f64,
    /// Distance (pixels at the model's size) between the task object's centroid in the plan's
    /// last frame and in the expert's; `None` if the object is missing from the plan.
    pub final_position_error: Option<f64>,
    /// The same scores for the trivial plan that repeats frame 0.
    pub copy_psnr: f64,
    pub copy_final_position_error: Option<f64>,
}

/// Mean scores of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskQuality {
    pub task: String,
    pub plans: usize,
    pub psnr: f64,
    pub ssim: f64,
    pub final_position_error: f64,
    /// Share of plans whose last frame still shows the task object.
    pub object_found: f64,
    pub copy_psnr: f64,
    pub copy_final_position_error: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QualityReport {
    pub model: String,
    pub frame_size: usize,
    pub sampler_steps: usize,
    pub tasks: Vec<TaskQuality>,
    pub plans: Vec<PlanScore>,
}

fn centroid_error(a: Option<([f32; 2], usize)>, b: Option<([f32; 2], usize)>) -> Option<f64> {
    let (a, b) = (a?.0, b?.0);
    Some(f64::from((a[0] - b[0]).hypot(a[1] - b[1])))
}

/// A scored plan with the frames compared: the expert's clip (8 frames, start first) and the
/// plan (7 frames), both at the model's size.
#[derive(Clone, Debug)]
pub struct ScoredPlan {
    pub score: PlanScore,
    pub expert: Vec<Rgb8Image>,
    pub plan: Vec<Rgb8Image>,
}

/// The expert's video from one start, at the model's size, and what plans are measured by.
struct ExpertReference {
    /// The 8 clip frames, start first.
    frames: Vec<Rgb8Image>,
    /// The world's start frame at full size (what the model is conditioned on).
    start: Rgb8Image,
    /// Colours of the task object in the start frame.
    key: Option<ColourKey>,
    /// Where the task object ends in the expert's last clip frame.
    truth: Option<([f32; 2], usize)>,
}

impl ExpertReference {
    fn record(
        world: &mut dyn World,
        task: &str,
        view: usize,
        seed: u64,
        size: usize,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let demo = record_expert(world, task, view, seed)?;
        let idx = clip_indices(demo.frames.len(), 0);
        let frames: Vec<Rgb8Image> = idx
            .iter()
            .map(|&i| resize(&demo.frames[i], size as u32))
            .collect();
        let object = TaskKind::from_name(task).map_or("gripper", TaskKind::task_object);
        let id = demo.labels.iter().position(|l| l == object).unwrap_or(0) as u8;
        let side = demo.frames[0].width as usize;
        let seg0 = resize_labels(&demo.segmentations[0], side, size);
        let key = ColourKey::from_mask(&frames[0], &seg0, id);
        let last_seg = resize_labels(&demo.segmentations[idx[7]], side, size);
        Ok(Self {
            truth: mask_centroid(&last_seg, size, id),
            key,
            start: demo.frames[0].clone(),
            frames,
        })
    }

    /// Mean PSNR of the plan's frames to the expert's frames after the start.
    fn psnr(&self, plan: &[Rgb8Image]) -> f64 {
        let n = plan.len().min(self.frames.len() - 1).max(1) as f64;
        plan.iter()
            .zip(&self.frames[1..])
            .map(|(a, b)| psnr(a, b))
            .sum::<f64>()
            / n
    }

    fn ssim(&self, plan: &[Rgb8Image]) -> f64 {
        let n = plan.len().min(self.frames.len() - 1).max(1) as f64;
        plan.iter()
            .zip(&self.frames[1..])
            .map(|(a, b)| ssim(a, b))
            .sum::<f64>()
            / n
    }

    /// How far the task object ends from the expert's (`None`: not found in the last frame).
    fn final_position_error(&self, plan: &[Rgb8Image]) -> Option<f64> {
        let found = self
            .key
            .as_ref()
            .zip(plan.last())
            .and_then(|(k, frame)| locate(frame, k, COLOUR_TOLERANCE));
        centroid_error(found, self.truth)
    }
}

/// How far the task object ends in `plan` from where it ends in the expert's video from the
/// same start, in plan pixels (`None`: not found in the plan's last frame). Runs the expert.
pub fn expert_position_error(
    world: &mut dyn World,
    task: &str,
    view: usize,
    seed: u64,
    plan: &[Rgb8Image],
) -> Result<Option<f64>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(size) = plan.first().map(|f| f.width as usize) else {
        return Ok(None);
    };
    Ok(ExpertReference::record(world, task, view, seed, size)?.final_position_error(plan))
}

/// Scores one held-out start (`None` if sampling was cancelled).
pub fn score_plan(
    model: &VideoModel,
    world: &mut dyn World,
    task: &str,
    view: usize,
    seed: u64,
    sample: &SampleConfig,
) -> Result<Option<ScoredPlan>, Box<dyn std::error::Error + Send + Sync>> {
    let expert = ExpertReference::record(world, task, view, seed, model.config.frame_size())?;
    let Some(plan) = model.plan(
        &expert.start,
        None,
        task_instruction(task),
        sample,
        seed,
        |_| ControlFlow::Continue(()),
    )?
    else {
        return Ok(None);
    };
    let copy: Vec<Rgb8Image> = vec![expert.frames[0].clone(); 7];
    let score = PlanScore {
        task: task.to_owned(),
        view,
        seed,
        psnr: expert.psnr(&plan),
        ssim: expert.ssim(&plan),
        final_position_error: expert.final_position_error(&plan),
        copy_psnr: expert.psnr(&copy),
        copy_final_position_error: expert.final_position_error(&copy),
    };
    Ok(Some(ScoredPlan {
        score,
        expert: expert.frames,
        plan,
    }))
}

/// One held-out start planned by two models: before and after a fine-tune.
#[derive(Clone, Debug)]
pub struct ComparedStart {
    pub before: ScoredPlan,
    pub after: ScoredPlan,
}

/// Plans every `(task, view, seed)` start with both models (same sampler seed) and scores
/// both against the expert's video, so a fine-tune is judged on what it changed. `progress`
/// sees `(done, total)` after each start and may stop the comparison (then `None`).
pub fn compare_models(
    before: &VideoModel,
    after: &VideoModel,
    world: &mut dyn World,
    starts: &[(String, usize, u64)],
    sample: &SampleConfig,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Option<Vec<ComparedStart>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut compared = Vec::new();
    for (task, view, seed) in starts {
        let score = |model: &VideoModel, world: &mut dyn World| {
            score_plan(model, world, task, *view, *seed, sample)
        };
        let (Some(before), Some(after)) = (score(before, world)?, score(after, world)?) else {
            return Ok(None);
        };
        compared.push(ComparedStart { before, after });
        let stop = progress(compared.len(), starts.len()).is_break();
        if stop && compared.len() < starts.len() {
            return Ok(None);
        }
    }
    Ok(Some(compared))
}

/// Scores of one iteration of the refinement loop.
#[derive(Clone, Debug, Serialize)]
pub struct IterationScore {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    /// 0 is the first plan, then refinements.
    pub iteration: usize,
    pub psnr: f64,
    pub ssim: f64,
    /// As [`PlanScore::final_position_error`].
    pub final_position_error: Option<f64>,
    pub accepted: bool,
    /// Number of the critic's findings on this plan.
    pub findings: usize,
}

/// How the iterations after the first plan are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// From the previous plan and its critique (VideoAgent's refinement).
    Refine,
    /// A fresh plan from the start frame with the next seed: what a refinement has to beat.
    Resample,
}

/// Runs the refinement loop for `refinements` refinements on one held-out start without
/// stopping at an accept (every iteration is planned from the previous plan and its critique,
/// as `agent::refine` does, or resampled) and scores every iteration against the expert's
/// video.
#[allow(clippy::too_many_arguments)]
pub fn score_refinement(
    model: &VideoModel,
    critic: &dyn crate::critic::Critic,
    world: &mut dyn World,
    task: &str,
    view: usize,
    seed: u64,
    sample: &SampleConfig,
    refinements: usize,
    revision: Revision,
) -> Result<Vec<IterationScore>, Box<dyn std::error::Error + Send + Sync>> {
    let expert = ExpertReference::record(world, task, view, seed, model.config.frame_size())?;
    let first = world.reset(task, view, seed)?;
    let instruction = task_instruction(task);
    let mut scores = Vec::new();
    let mut previous: Option<(Vec<Rgb8Image>, String)> = None;
    for iteration in 0..=refinements {
        let conditioning = previous.as_ref().filter(|_| revision == Revision::Refine);
        let prompt = match conditioning {
            None => instruction.to_owned(),
            Some((_, feedback)) => super::refine::refinement_prompt(instruction, feedback),
        };
        let Some(plan) = model.plan(
            &first.rgb,
            conditioning.map(|p| p.0.as_slice()),
            &prompt,
            sample,
            seed.wrapping_add(iteration as u64),
            |_| ControlFlow::Continue(()),
        )?
        else {
            break;
        };
        let review = critic.review(&crate::critic::CriticInput {
            first: &first,
            plan: &plan,
            task,
            instruction,
        });
        scores.push(IterationScore {
            task: task.to_owned(),
            view,
            seed,
            iteration,
            psnr: expert.psnr(&plan),
            ssim: expert.ssim(&plan),
            final_position_error: expert.final_position_error(&plan),
            accepted: review.is_accept(),
            findings: review.findings.len(),
        });
        previous = Some((plan, review.feedback));
    }
    Ok(scores)
}

/// What the refinement loop would hand over after `iteration` refinements, per start: the
/// first accepted plan up to that iteration, else that iteration's plan (the loop stops at
/// an accept; `score_refinement` does not, so both views come from one run). Starts keep the
/// order of `scores`.
pub fn held_by_loop(scores: &[IterationScore], iteration: usize) -> Vec<&IterationScore> {
    let mut held: Vec<&IterationScore> = Vec::new();
    for s in scores.iter().filter(|s| s.iteration <= iteration) {
        let same_start =
            |h: &&IterationScore| (&h.task, h.view, h.seed) == (&s.task, s.view, s.seed);
        match held.iter().position(same_start) {
            None => held.push(s),
            Some(i) if !held[i].accepted && s.iteration > held[i].iteration => held[i] = s,
            Some(_) => {}
        }
    }
    held
}

/// Centroid and pixel count of the pixels labelled `id` in a `size` x `size` label map.
fn mask_centroid(seg: &[u8], size: usize, id: u8) -> Option<([f32; 2], usize)> {
    let pts: Vec<usize> = seg
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == id)
        .map(|(i, _)| i)
        .collect();
    let n = pts.len() as f32;
    (n > 0.0).then(|| {
        let cx = pts.iter().map(|i| (i % size) as f32 + 0.5).sum::<f32>() / n;
        let cy = pts.iter().map(|i| (i / size) as f32 + 0.5).sum::<f32>() / n;
        ([cx, cy], pts.len())
    })
}

fn task_instruction(task: &str) -> &'static str {
    TaskKind::from_name(task).map_or("", |t| t.instructions()[0])
}

/// Averages plan scores per task (tasks in first-seen order).
pub fn summarise(plans: &[PlanScore]) -> Vec<TaskQuality> {
    let mut tasks: Vec<String> = Vec::new();
    for p in plans {
        if !tasks.contains(&p.task) {
            tasks.push(p.task.clone());
        }
    }
    tasks
        .into_iter()
        .map(|task| {
            let ps: Vec<&PlanScore> = plans.iter().filter(|p| p.task == task).collect();
            let n = ps.len() as f64;
            let mean = |f: &dyn Fn(&PlanScore) -> f64| ps.iter().map(|p| f(p)).sum::<f64>() / n;
            let mean_opt = |f: &dyn Fn(&PlanScore) -> Option<f64>| {
                let v: Vec<f64> = ps.iter().filter_map(|p| f(p)).collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            TaskQuality {
                plans: ps.len(),
                psnr: mean(&|p| p.psnr),
                ssim: mean(&|p| p.ssim),
                final_position_error: mean_opt(&|p| p.final_position_error),
                object_found: ps
                    .iter()
                    .filter(|p| p.final_position_error.is_some())
                    .count() as f64
                    / n,
                copy_psnr: mean(&|p| p.copy_psnr),
                copy_final_position_error: mean_opt(&|p| p.copy_final_position_error),
                task,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_keeps_the_first_accepted_plan_of_each_start() {
        let score = |seed: u64, iteration: usize, accepted: bool| IterationScore {
            task: "push".to_owned(),
            view: 0,
            seed,
            iteration,
            psnr: (seed * 10 + iteration as u64) as f64,
            ssim: 0.0,
            final_position_error: None,
            accepted,
            findings: 0,
        };
        // Start 1 is accepted at iteration 1, start 2 never.
        let scores = [
            score(1, 0, false),
            score(2, 0, false),
            score(1, 1, true),
            score(2, 1, false),
            score(1, 2, false),
            score(2, 2, false),
        ];
        let psnrs = |k| -> Vec<f64> { held_by_loop(&scores, k).iter().map(|s| s.psnr).collect() };
        assert_eq!(psnrs(0), [10.0, 20.0]);
        assert_eq!(psnrs(1), [11.0, 21.0]);
        assert_eq!(psnrs(2), [11.0, 22.0], "the accepted plan stays");
    }

    #[test]
    fn a_model_compared_with_itself_scores_the_same_and_can_be_stopped() {
        let model = VideoModel::load(
            &crate::model::pipeline::default_model_dir(),
            &candle_core::Device::Cpu,
        )
        .expect("shipped model");
        let mut world = crate::env::open_world("tabletop", 64).expect("world");
        let sample = SampleConfig::ddim(2);
        let starts = vec![
            ("push".to_owned(), 0, HELD_OUT_SEED),
            ("button-press".to_owned(), 1, HELD_OUT_SEED + 1),
        ];
        let mut seen = Vec::new();
        let compared = compare_models(&model, &model, world.as_mut(), &starts, &sample, |d, t| {
            seen.push((d, t));
            ControlFlow::Continue(())
        })
        .expect("compare")
        .expect("not stopped");
        assert_eq!(seen, [(1, 2), (2, 2)]);
        assert_eq!(compared.len(), 2);
        for (c, (task, view, seed)) in compared.iter().zip(&starts) {
            assert_eq!((&c.before.score.task, c.before.score.view), (task, *view));
            assert_eq!(c.after.score.seed, *seed);
            assert_eq!(
                c.before.plan, c.after.plan,
                "same model, same seed, same plan"
            );
            assert_eq!(c.before.score.psnr, c.after.score.psnr);
            assert_eq!(c.before.expert.len(), 8);
        }
        let stopped = compare_models(&model, &model, world.as_mut(), &starts, &sample, |_, _| {
            ControlFlow::Break(())
        })
        .expect("compare");
        assert!(
            stopped.is_none(),
            "stopping after the first start gives no result"
        );
    }
}
