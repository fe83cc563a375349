//! Plan folders opened at start (the shipped samples), so the studio has something to show in
//! its first second.

use std::path::Path;

use crate::store::plan_record::{PlanRecord, ReadPlanError, read_iterations, read_plan};

use super::command::Studio;

/// Sample plans read on a worker thread, with the warnings of folders that could not be read;
/// the plans get their ids when they are added.
pub type SamplesPromise = poll_promise::Promise<(Vec<PlanView>, Vec<String>)>;

/// Reads every plan folder under `dir` on a worker thread.
pub fn read_in_background(dir: std::path::PathBuf) -> SamplesPromise {
    poll_promise::Promise::spawn_thread("sample plans", move || {
        let mut scratch = Studio::default();
        match load_plan_folders(&dir, &mut scratch) {
            Ok(warnings) => (scratch.plans, warnings),
            Err(e) => (
                Vec::new(),
                vec![format!("cannot open the sample plans: {e}")],
            ),
        }
    })
}
use super::state::{Critique, IterationView, PlanOrigin, PlanView};

/// Adds every plan folder under `dir` (sorted by name). A folder that cannot be read becomes a
/// warning; the others still open.
pub fn load_plan_folders(dir: &Path, studio: &mut Studio) -> std::io::Result<Vec<String>> {
    let mut folders: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("plan.json").is_file())
        .collect();
    folders.sort();
    let mut warnings = Vec::new();
    for folder in folders {
        match read_plan(&folder).and_then(|(record, frames)| {
            let iterations = iterations_of(&folder, &record, frames)?;
            Ok((record, iterations))
        }) {
            Ok((record, iterations)) => {
                let chosen = record
                    .refinement
                    .as_ref()
                    .and_then(|r| r.chosen)
                    .unwrap_or(iterations.len().saturating_sub(1));
                let id = studio.next_plan_id();
                studio.upsert_plan(PlanView {
                    id,
                    origin: PlanOrigin {
                        world: record.world,
                        task: record.task,
                        view: record.view,
                        seed: record.env_seed,
                    },
                    instruction: record.instruction,
                    iterations,
                    chosen,
                    rollout: None,
                    created_ms: crate::app::state::now_ms(),
                    labelled_by: Default::default(),
                });
            }
            Err(e) => warnings.push(format!("skipped a sample plan: {e}")),
        }
    }
    Ok(warnings)
}

/// Every refinement iteration with its critique, or the plan's frames alone for a plan made
/// without the loop.
fn iterations_of(
    folder: &Path,
    record: &PlanRecord,
    frames: Vec<crate::env::Rgb8Image>,
) -> Result<Vec<IterationView>, ReadPlanError> {
    let all = read_iterations(folder, record, frames)?;
    let Some(refinement) = &record.refinement else {
        return Ok(all
            .into_iter()
            .map(|frames| IterationView {
                frames,
                critique: None,
                sample_ms: record.sample_ms,
            })
            .collect());
    };
    Ok(all
        .into_iter()
        .zip(&refinement.iterations)
        .map(|(frames, it)| IterationView {
            frames,
            critique: Some(Critique::from_review(&refinement.critic, &it.review)),
            sample_ms: it.sample_ms,
        })
        .collect())
}
