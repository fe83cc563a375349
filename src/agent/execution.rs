//! Executing a plan in whichever world: MetaWorld through the 3D path ([`super::execute3d`]:
//! depth and a full camera), every other world through the 2.5D one ([`super::execute`]:
//! the table plane). Evaluation, self-improvement and the execution critic call this, so a
//! new world needs no changes there.

use super::execute::{ExecuteConfig, ExecuteError, Replanner, execute_plan};
use super::execute3d::{Execute3dConfig, Execute3dError, execute_plan_3d};
use crate::env::metaworld::{self, MetaWorld};
use crate::env::{Rgb8Image, World};

/// What an execution may use besides the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutionLimits {
    /// Step limit of the episode (the task's own limit if `None`).
    pub max_steps: Option<u32>,
    /// Most new plans requested from the replanning hook.
    pub max_replans: usize,
}

/// What happened, in either path's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    pub success: bool,
    pub steps: u32,
    pub replans: usize,
    /// Why the episode failed (`None` on success).
    pub failure: Option<String>,
    /// The start frame, then one frame per step; empty where the path records none (3D).
    pub frames: Vec<Rgb8Image>,
}

/// Executes `plan` (start frame first) from the world's current state, which must be the
/// plan's start; on a stall `replanner` (if any) gives a new plan from the current frame.
pub fn execute_in_world(
    world: &mut dyn World,
    task: &str,
    plan: &[Rgb8Image],
    limits: ExecutionLimits,
    replanner: Option<&mut Replanner<'_>>,
) -> Result<Execution, ExecuteError> {
    let any: &mut dyn std::any::Any = world;
    if let Some(world) = any.downcast_mut::<MetaWorld>() {
        let defaults = Execute3dConfig::default();
        let config = Execute3dConfig {
            max_steps: limits.max_steps.unwrap_or(defaults.max_steps),
            max_replans: limits.max_replans,
            ..defaults
        };
        let rollout =
            execute_plan_3d(world, task, plan, &config, replanner).map_err(|e| match e {
                Execute3dError::World(e) => ExecuteError::World(e),
                Execute3dError::UnknownTask(task) => ExecuteError::UnknownTask {
                    task,
                    valid: metaworld::tasks::TASKS
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            })?;
        return Ok(Execution {
            success: rollout.success,
            steps: rollout.steps,
            replans: rollout.replans,
            failure: rollout.failure,
            frames: Vec::new(),
        });
    }
    let config = ExecuteConfig {
        max_steps: limits.max_steps,
        max_replans: limits.max_replans,
        ..ExecuteConfig::default()
    };
    let rollout = execute_plan(world, task, plan, &config, replanner)?;
    Ok(Execution {
        success: rollout.success,
        steps: rollout.steps,
        replans: rollout.replans,
        failure: rollout.failure,
        frames: rollout.frames,
    })
}
