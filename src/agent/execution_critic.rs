//! The paper's "environment feedback" as a critic: a plan is accepted iff executing it from the
//! same start in a copy of the world succeeds. It needs the world and the start (task, view,
//! seed), so one is made per start; it is the ground truth the other critics are measured
//! against (see [`super::critic_agreement`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::execution::{ExecutionLimits, execute_in_world};
use crate::critic::{
    Critic, CriticInput, Finding, FindingKind, PixelRect, Review, Verdict, clamp_feedback,
};
use crate::env::{World, WorldError, open_world};
use crate::model::pipeline::resize;

/// Executes each plan it reviews from one world start.
pub struct ExecutionCritic {
    world: Mutex<Box<dyn World>>,
    view: usize,
    seed: u64,
}

impl ExecutionCritic {
    /// A critic for plans that start at (`task` given at review, `view`, `seed`) of the world
    /// called `world` rendered at `size` pixels.
    pub fn new(world: &str, size: u32, view: usize, seed: u64) -> Result<Self, WorldError> {
        Ok(Self {
            world: Mutex::new(open_world(world, size)?),
            view,
            seed,
        })
    }
}

impl Critic for ExecutionCritic {
    fn name(&self) -> &str {
        "execution"
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        let t0 = Instant::now();
        let unavailable = |reason: String| Review::unavailable(reason, t0.elapsed());
        let Some(last) = input.plan.last() else {
            return unavailable("the plan has no frames".into());
        };
        let Ok(mut world) = self.world.lock() else {
            return unavailable("the execution world was poisoned by an earlier panic".into());
        };
        let start = match world.reset(input.task, self.view, self.seed) {
            Ok(obs) => obs,
            Err(e) => return unavailable(format!("cannot reset the world: {e}")),
        };
        if start.rgb != input.first.rgb {
            return unavailable(format!(
                "the plan does not start at view {} seed {} of {}",
                self.view, self.seed, input.task
            ));
        }
        let frames: Vec<_> = std::iter::once(resize(&start.rgb, last.width))
            .chain(input.plan.iter().cloned())
            .collect();
        let limits = ExecutionLimits::default();
        let rollout = match execute_in_world(world.as_mut(), input.task, &frames, limits, None) {
            Ok(r) => r,
            Err(e) => return unavailable(format!("cannot execute the plan: {e}")),
        };
        let latency: Duration = t0.elapsed();
        if rollout.success {
            return Review {
                verdict: Verdict::Accept,
                feedback: String::new(),
                findings: Vec::new(),
                latency,
            };
        }
        let why = rollout
            .failure
            .unwrap_or_else(|| "the task was not done".into());
        Review {
            verdict: Verdict::Reject,
            feedback: clamp_feedback(&format!(
                "Executing this plan failed: {why}. Show the gripper completing the task."
            )),
            findings: vec![Finding {
                frame_idx: input.plan.len() - 1,
                object: "scene".into(),
                kind: FindingKind::GoalNotReached,
                region: PixelRect {
                    x: 0,
                    y: 0,
                    width: last.width,
                    height: last.height,
                },
            }],
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::execute::expert_plan;

    #[test]
    fn accepts_the_experts_video_and_rejects_a_still_plan() {
        let (task, view, seed) = ("push", 0, 3);
        let critic = ExecutionCritic::new("tabletop", 64, view, seed).expect("critic");
        let mut world = open_world("tabletop", 64).expect("world");
        let first = world.reset(task, view, seed).expect("reset");
        let expert = expert_plan(world.as_mut(), task, view, seed, 64).expect("expert");
        let input = |plan| CriticInput {
            first: &first,
            plan,
            task,
            instruction: "push the block to the target",
        };
        let review = critic.review(&input(&expert[1..]));
        assert!(review.is_accept(), "{review:?}");

        let still = vec![expert[0].clone(); 7];
        let review = critic.review(&input(&still));
        assert_eq!(review.verdict, Verdict::Reject, "{review:?}");
        assert!(review.feedback.split_whitespace().count() <= 20);
        assert_eq!(review.findings[0].kind, FindingKind::GoalNotReached);

        let other = ExecutionCritic::new("tabletop", 64, view, seed + 1).expect("critic");
        assert!(
            matches!(
                other.review(&input(&expert[1..])).verdict,
                Verdict::Unavailable { .. }
            ),
            "a plan from another start is not judged"
        );
    }
}
