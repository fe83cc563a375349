//! Making refinement training data (paper §3): for starts of the demonstration set, let the
//! current model plan (its own mistakes are what refinement must learn to fix), let a critic
//! review each plan, and store (expert clip, generated plans, reviews) with
//! [`crate::store::refine_data`]. With two generations the second refines the first (planned
//! from it with "instruction. critique"), so the consistency term of refinement training has
//! two earlier generations of the same start.
//!
//! This module generates and converts; it does not train (`model::refine_train`).

use std::ops::ControlFlow;

use super::refine::refinement_prompt;
use crate::critic::{Critic, CriticInput};
use crate::env::Observation;
use crate::model::pipeline::resize;
use crate::model::refine_train::RefineItem;
use crate::model::{SampleConfig, VideoModel};
use crate::store::dataset::{Dataset, DatasetError, clip_indices};
use crate::store::refine_data::{
    GenerationMeta, RefineData, RefineDataError, RefineSample, RefineSampleMeta, sample_name,
};

#[derive(Debug, thiserror::Error)]
pub enum RefineDataGenError {
    #[error(transparent)]
    Store(#[from] RefineDataError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("sampling failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("episode {dir} has no recorded state for its first frame")]
    NoState { dir: String },
}

/// What to generate for each start.
#[derive(Clone, Debug)]
pub struct RefineDataSpec {
    /// 1, or 2 to add a refinement of the first plan.
    pub generations: usize,
    pub sample: SampleConfig,
    /// Base of the noise seeds (the seed of a start also depends on its name).
    pub seed: u64,
}

/// Progress per start.
#[derive(Debug)]
pub enum RefineDataProgress<'a> {
    /// The start was stored by an earlier run.
    Skipped(&'a str),
    /// The start was generated, reviewed and stored.
    Stored(&'a RefineSample),
}

/// Up to `per_task` successful episodes of each task (lowest seeds first, views alternating),
/// as indices into the dataset's episodes, grouped by task in manifest order.
pub fn select_starts(dataset: &Dataset, per_task: usize) -> Vec<usize> {
    let episodes = dataset.episodes();
    let mut tasks: Vec<&str> = Vec::new();
    for e in episodes {
        if !tasks.contains(&e.task.as_str()) {
            tasks.push(&e.task);
        }
    }
    let mut starts = Vec::new();
    for task in tasks {
        let mut ids: Vec<usize> = (0..episodes.len())
            .filter(|&i| episodes[i].task == task && episodes[i].success)
            .collect();
        ids.sort_by_key(|&i| (episodes[i].seed, episodes[i].view));
        starts.extend(ids.into_iter().take(per_task));
    }
    starts
}

/// FNV-1a of the start's name: noise seeds that do not depend on which starts are selected.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The start of an episode as the world showed it (frame 0, segmentation, labels, state).
fn start_observation(dataset: &Dataset, episode: usize) -> Result<Observation, RefineDataGenError> {
    let meta = &dataset.episodes()[episode];
    let (_, states) = dataset.trajectory(episode)?;
    let state = states
        .into_iter()
        .next()
        .ok_or_else(|| RefineDataGenError::NoState {
            dir: meta.dir.clone(),
        })?;
    Ok(Observation {
        rgb: dataset.frame(episode, 0)?,
        segmentation: dataset.segmentation(episode, 0)?,
        labels: meta.labels.clone(),
        gripper: state.gripper,
        objects: state.objects,
    })
}

/// Generates and stores every start of `starts` not yet in `out`; returns how many were
/// generated now. `on_progress` may stop between starts (what is stored stays).
pub fn generate_refine_data(
    model: &VideoModel,
    critic: &dyn Critic,
    dataset: &Dataset,
    starts: &[usize],
    out: &RefineData,
    spec: &RefineDataSpec,
    on_progress: &mut dyn FnMut(RefineDataProgress<'_>) -> ControlFlow<()>,
) -> Result<usize, RefineDataGenError> {
    let size = model.config.frame_size() as u32;
    let mut generated = 0;
    for &episode in starts {
        let meta = &dataset.episodes()[episode];
        let name = sample_name(&meta.task, &meta.view_name, meta.seed);
        if out.contains(&name) {
            if on_progress(RefineDataProgress::Skipped(&name)).is_break() {
                break;
            }
            continue;
        }
        let first = start_observation(dataset, episode)?;
        let truth = clip_indices(meta.frames, 0)
            .into_iter()
            .map(|f| Ok(resize(&dataset.frame(episode, f)?, size)))
            .collect::<Result<Vec<_>, DatasetError>>()?;
        let base_seed = spec.seed ^ name_hash(&name);
        let mut records: Vec<GenerationMeta> = Vec::new();
        let mut plans = Vec::new();
        for g in 0..spec.generations.max(1) {
            let (previous, prompt) = match (plans.last(), records.last()) {
                (Some(prev), Some(rec)) => (
                    Some(prev),
                    refinement_prompt(&meta.instruction, &rec.review.feedback),
                ),
                _ => (None, meta.instruction.clone()),
            };
            let seed = base_seed.wrapping_add(g as u64);
            let plan = model
                .plan(
                    &first.rgb,
                    previous.map(Vec::as_slice),
                    &prompt,
                    &spec.sample,
                    seed,
                    |_| ControlFlow::Continue(()),
                )?
                .ok_or_else(|| candle_core::Error::Msg("sampling was cancelled".to_owned()))?;
            let review = critic.review(&CriticInput {
                first: &first,
                plan: &plan,
                task: &meta.task,
                instruction: &meta.instruction,
            });
            records.push(GenerationMeta {
                prompt,
                seed,
                review,
            });
            plans.push(plan);
        }
        let sample = RefineSample {
            meta: RefineSampleMeta {
                task: meta.task.clone(),
                view: meta.view,
                view_name: meta.view_name.clone(),
                seed: meta.seed,
                instruction: meta.instruction.clone(),
                generations: records,
            },
            truth,
            generations: plans,
        };
        out.write(&sample)?;
        generated += 1;
        if on_progress(RefineDataProgress::Stored(&sample)).is_break() {
            break;
        }
    }
    Ok(generated)
}

/// Stored starts as refinement training items: each generation is paired with the text a
/// refinement of it is conditioned on, `refinement_prompt(instruction, its critique)`.
pub fn training_items(samples: &[RefineSample]) -> Vec<RefineItem> {
    samples
        .iter()
        .map(|s| RefineItem {
            truth: s.truth.clone(),
            instruction: s.meta.instruction.clone(),
            generations: s
                .generations
                .iter()
                .zip(&s.meta.generations)
                .map(|(frames, g)| {
                    (
                        frames.clone(),
                        refinement_prompt(&s.meta.instruction, &g.review.feedback),
                    )
                })
                .collect(),
        })
        .collect()
}
