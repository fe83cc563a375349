//! A plan folder (what `videoagent plan --out` writes, see [`crate::store::plan_record`])
//! recorded in the store, so plans made on the command line open in the studio: the plan with
//! its start frame, then every refinement iteration with the critic's verdict, feedback and
//! findings (a plan made without the loop is its one iteration, with no verdict).

use std::path::Path;

use crate::critic::{self, Review};
use crate::store::plan_record::{read_iterations, read_plan};

use super::{Finding, NewIteration, NewPlan, PlanId, Result, Store, StoreError, Verdict};

/// Reads the folder whole, then records the plan and its iterations; returns the new plan.
/// Each iteration is its own transaction (as when the studio generates), so an interruption
/// leaves the plan with the iterations recorded so far, never a half-written one.
pub fn add_plan_folder(store: &Store, dir: &Path) -> Result<PlanId> {
    let invalid = |e: crate::store::plan_record::ReadPlanError| StoreError::Invalid(e.to_string());
    let (record, frames) = read_plan(dir).map_err(invalid)?;
    let iterations = read_iterations(dir, &record, frames).map_err(invalid)?;
    let reviews: Vec<Option<&Review>> = match &record.refinement {
        Some(r) => r.iterations.iter().map(|it| Some(&it.review)).collect(),
        None => vec![None],
    };
    let Some(start) = iterations
        .first()
        .and_then(|frames| frames.first())
        .cloned()
    else {
        return Err(StoreError::Invalid(format!(
            "the plan has no frames ({})",
            dir.display()
        )));
    };
    let news: Vec<NewIteration> = iterations
        .into_iter()
        .zip(reviews)
        .map(|(frames, review)| new_iteration(frames, review))
        .collect();
    let plan = store.add_plan(&NewPlan {
        world: record.world,
        task: record.task,
        view: record.view,
        env_seed: record.env_seed,
        sample_seed: record.sample_seed,
        instruction: record.instruction,
        model: record.model,
        sampler: record.sampler,
        start_frame: start,
    })?;
    for it in &news {
        store.add_iteration(plan, it)?;
    }
    Ok(plan)
}

/// One iteration's row: its generated frames (the start frame is the plan's) and the review.
fn new_iteration(frames: Vec<crate::env::Rgb8Image>, review: Option<&Review>) -> NewIteration {
    let (verdict, critique) = match review.map(|r| (&r.verdict, r)) {
        Some((critic::Verdict::Accept, r)) => (Some(Verdict::Accept), r.feedback.clone()),
        Some((critic::Verdict::Reject, r)) => (Some(Verdict::Reject), r.feedback.clone()),
        Some((critic::Verdict::Unavailable { reason }, _)) => (None, reason.clone()),
        None => (None, String::new()),
    };
    NewIteration {
        frames: frames.into_iter().skip(1).collect(),
        critique,
        verdict,
        // The critic counts generated frames from 0; the store counts the start frame as 0.
        findings: review
            .map(|r| {
                r.findings
                    .iter()
                    .map(|f| Finding {
                        frame_idx: f.frame_idx.saturating_add(1),
                        text: f.label(),
                        region: Some(super::types::Rect {
                            x: f.region.x,
                            y: f.region.y,
                            width: f.region.width,
                            height: f.region.height,
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
