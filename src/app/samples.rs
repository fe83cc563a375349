//! Plan folders opened at start (the shipped samples), so the studio has something to show in
//! its first second.

use std::path::Path;

use crate::store::plan_record::read_plan;

use super::command::Studio;
use super::state::{IterationView, PlanOrigin, PlanView};

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
        match read_plan(&folder) {
            Ok((record, frames)) => {
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
                    iterations: vec![IterationView {
                        frames,
                        critique: None,
                        sample_ms: record.sample_ms,
                    }],
                    chosen: 0,
                    rollout: None,
                });
            }
            Err(e) => warnings.push(format!("skipped a sample plan: {e}")),
        }
    }
    Ok(warnings)
}
