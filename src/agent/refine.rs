//! VideoAgent's refinement loop (paper §3-4): generate a plan, ask a critic, and while it
//! rejects, generate again from pure noise conditioned on the previous plan, with the
//! instruction and the critic's feedback as the text. It stops at the first accept; if none is
//! accepted the last refinement is chosen, as in the paper. Progress is reported per sampler
//! step and per finished iteration, and the caller can cancel at either.
//!
//! This module runs the loop only; it does not execute plans or train the model.

use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;

use crate::critic::{Critic, CriticInput, Review, Verdict};
use crate::env::{Observation, Rgb8Image};
use crate::model::{SampleConfig, VideoModel};

/// What the loop plans for.
#[derive(Clone, Copy, Debug)]
pub struct RefineInput<'a> {
    pub first: &'a Observation,
    /// The world's task name (for critics that know the world), may be empty.
    pub task: &'a str,
    pub instruction: &'a str,
}

/// What to do when the critic cannot judge (`Verdict::Unavailable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Keep the plan and stop.
    Stop,
    /// Refine anyway, with the instruction alone as text.
    Continue,
}

#[derive(Clone, Debug)]
pub struct RefineSettings {
    /// Refinements after the first plan (the paper uses 4 or 5).
    pub max_refinements: usize,
    pub sample: SampleConfig,
    /// Noise seed of the first plan; refinement `i` uses `seed + i`.
    pub seed: u64,
    pub on_unavailable: OnUnavailable,
}

/// One generated plan and its review.
#[derive(Clone, Debug, Serialize)]
pub struct RefineIteration {
    /// 0 is the first plan, 1.. are refinements.
    pub index: usize,
    /// The text the model was conditioned on.
    pub prompt: String,
    pub seed: u64,
    #[serde(skip)]
    pub frames: Vec<Rgb8Image>,
    pub review: Review,
    pub sample_ms: f64,
}

/// Progress of [`refine`].
#[derive(Debug)]
pub enum RefineProgress<'a> {
    /// Sampler step `step` of `total` (1-based) of iteration `iteration` is done.
    Step {
        iteration: usize,
        step: usize,
        total: usize,
    },
    /// An iteration was generated and reviewed.
    Iteration(&'a RefineIteration),
}

/// Why the loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Accepted,
    /// Every refinement was used without an accept.
    Exhausted,
    /// The critic could not judge and the settings say stop.
    CriticUnavailable,
    Cancelled,
}

#[derive(Clone, Debug, Serialize)]
pub struct RefineOutcome {
    pub iterations: Vec<RefineIteration>,
    /// Index of the chosen plan: the accepted one, else the last (`None` if cancelled
    /// before the first plan was finished).
    pub chosen: Option<usize>,
    pub stop: StopReason,
}

impl RefineOutcome {
    pub fn chosen_frames(&self) -> Option<&[Rgb8Image]> {
        self.chosen.map(|i| self.iterations[i].frames.as_slice())
    }
}

/// The text a refinement is conditioned on: the instruction, then the critique.
pub fn refinement_prompt(instruction: &str, feedback: &str) -> String {
    let instruction = instruction.trim().trim_end_matches('.');
    if feedback.trim().is_empty() {
        instruction.to_owned()
    } else {
        format!("{instruction}. {}", feedback.trim())
    }
}

/// Runs generate -> critique -> refine; see the module docs.
pub fn refine(
    model: &VideoModel,
    critic: &dyn Critic,
    input: &RefineInput<'_>,
    settings: &RefineSettings,
    on_progress: &mut dyn FnMut(RefineProgress<'_>) -> ControlFlow<()>,
) -> candle_core::Result<RefineOutcome> {
    let mut iterations: Vec<RefineIteration> = Vec::new();
    let finish = |iterations: Vec<RefineIteration>, stop: StopReason| {
        let chosen = match stop {
            StopReason::Accepted => iterations.iter().position(|i| i.review.is_accept()),
            _ => iterations.len().checked_sub(1),
        };
        RefineOutcome {
            iterations,
            chosen,
            stop,
        }
    };
    for index in 0..=settings.max_refinements {
        let (previous, prompt) = match iterations.last() {
            None => (None, input.instruction.trim().to_owned()),
            Some(last) => (
                Some(last.frames.as_slice()),
                refinement_prompt(input.instruction, &last.review.feedback),
            ),
        };
        let seed = settings.seed.wrapping_add(index as u64);
        let t0 = Instant::now();
        let frames = model.plan(
            &input.first.rgb,
            previous,
            &prompt,
            &settings.sample,
            seed,
            |s| {
                on_progress(RefineProgress::Step {
                    iteration: index,
                    step: s.index + 1,
                    total: s.total,
                })
            },
        )?;
        let sample_ms = t0.elapsed().as_secs_f64() * 1e3;
        let Some(frames) = frames else {
            return Ok(finish(iterations, StopReason::Cancelled));
        };
        let review = critic.review(&CriticInput {
            first: input.first,
            plan: &frames,
            task: input.task,
            instruction: input.instruction,
        });
        iterations.push(RefineIteration {
            index,
            prompt,
            seed,
            frames,
            review,
            sample_ms,
        });
        let Some(done) = iterations.last() else {
            continue;
        };
        if on_progress(RefineProgress::Iteration(done)).is_break() {
            return Ok(finish(iterations, StopReason::Cancelled));
        }
        match &done.review.verdict {
            Verdict::Accept => return Ok(finish(iterations, StopReason::Accepted)),
            Verdict::Unavailable { .. } if settings.on_unavailable == OnUnavailable::Stop => {
                return Ok(finish(iterations, StopReason::CriticUnavailable));
            }
            _ => {}
        }
    }
    Ok(finish(iterations, StopReason::Exhausted))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::critic::Finding;
    use crate::env::open_world;
    use crate::model::{ModelConfig, UNetConfig};

    /// Rejects the first `rejections` plans (with numbered feedback), then accepts; records
    /// the sizes of the plans it saw.
    struct Scripted {
        rejections: usize,
        seen: Mutex<Vec<usize>>,
        unavailable: bool,
    }

    impl Critic for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        fn review(&self, input: &CriticInput<'_>) -> Review {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.push(input.plan.len());
            let n = seen.len();
            let verdict = if self.unavailable {
                Verdict::Unavailable {
                    reason: "down".into(),
                }
            } else if n > self.rejections {
                Verdict::Accept
            } else {
                Verdict::Reject
            };
            Review {
                verdict,
                feedback: format!("fix number {n}"),
                findings: Vec::<Finding>::new(),
                latency: Duration::ZERO,
            }
        }
    }

    fn scripted(rejections: usize) -> Scripted {
        Scripted {
            rejections,
            seen: Mutex::new(Vec::new()),
            unavailable: false,
        }
    }

    fn tiny_model() -> VideoModel {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let cfg = ModelConfig::new(UNetConfig::tiny(), "tabletop");
        VideoModel::build(
            cfg,
            &VarBuilder::from_varmap(&varmap, DType::F32, &device),
            &device,
        )
        .expect("tiny model")
    }

    fn settings(max_refinements: usize) -> RefineSettings {
        RefineSettings {
            max_refinements,
            sample: SampleConfig::ddim(2),
            seed: 7,
            on_unavailable: OnUnavailable::Stop,
        }
    }

    fn start() -> Observation {
        let mut world = open_world("tabletop", 32).expect("world");
        world.reset("push", 0, 1).expect("reset")
    }

    #[test]
    fn stops_at_the_first_accept_and_conditions_on_the_critique() {
        let model = tiny_model();
        let first = start();
        let input = RefineInput {
            first: &first,
            task: "push",
            instruction: "push the block to the target",
        };
        let critic = scripted(2);
        let mut steps = 0;
        let mut finished = Vec::new();
        let out = refine(&model, &critic, &input, &settings(4), &mut |p| {
            match p {
                RefineProgress::Step { step, total, .. } => {
                    assert!(step >= 1 && step <= total);
                    steps += 1;
                }
                RefineProgress::Iteration(it) => finished.push(it.index),
            }
            ControlFlow::Continue(())
        })
        .expect("refine");
        assert_eq!(out.stop, StopReason::Accepted);
        assert_eq!(out.iterations.len(), 3, "two rejections, then an accept");
        assert_eq!(out.chosen, Some(2));
        assert_eq!(finished, vec![0, 1, 2]);
        assert_eq!(steps, 3 * 2, "two DDIM steps per iteration");
        assert_eq!(out.iterations[0].prompt, "push the block to the target");
        assert_eq!(
            out.iterations[1].prompt,
            "push the block to the target. fix number 1"
        );
        assert_eq!(out.iterations[2].seed, 9);
        assert_eq!(out.chosen_frames().map(<[_]>::len), Some(3));
    }

    #[test]
    fn returns_the_last_refinement_when_nothing_is_accepted() {
        let model = tiny_model();
        let first = start();
        let input = RefineInput {
            first: &first,
            task: "push",
            instruction: "push the block",
        };
        let out = refine(&model, &scripted(100), &input, &settings(2), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect("refine");
        assert_eq!(out.stop, StopReason::Exhausted);
        assert_eq!(out.iterations.len(), 3);
        assert_eq!(out.chosen, Some(2));
    }

    #[test]
    fn cancelling_mid_sampling_keeps_the_finished_iterations() {
        let model = tiny_model();
        let first = start();
        let input = RefineInput {
            first: &first,
            task: "push",
            instruction: "push the block",
        };
        let out = refine(
            &model,
            &scripted(100),
            &input,
            &settings(4),
            &mut |p| match p {
                RefineProgress::Step {
                    iteration: 1,
                    step: 1,
                    ..
                } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            },
        )
        .expect("refine");
        assert_eq!(out.stop, StopReason::Cancelled);
        assert_eq!(out.iterations.len(), 1);
        assert_eq!(out.chosen, Some(0));
        let out = refine(&model, &scripted(100), &input, &settings(4), &mut |_| {
            ControlFlow::Break(())
        })
        .expect("refine");
        assert_eq!((out.iterations.len(), out.chosen), (0, None));
    }

    #[test]
    fn an_unavailable_critic_stops_or_continues_as_configured() {
        let model = tiny_model();
        let first = start();
        let input = RefineInput {
            first: &first,
            task: "push",
            instruction: "push the block",
        };
        let down = Scripted {
            unavailable: true,
            ..scripted(0)
        };
        let out = refine(&model, &down, &input, &settings(3), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect("refine");
        assert_eq!(out.stop, StopReason::CriticUnavailable);
        assert_eq!(out.iterations.len(), 1);
        let go_on = RefineSettings {
            on_unavailable: OnUnavailable::Continue,
            ..settings(3)
        };
        let out = refine(&model, &down, &input, &go_on, &mut |_| {
            ControlFlow::Continue(())
        })
        .expect("refine");
        assert_eq!(out.stop, StopReason::Exhausted);
        assert_eq!(out.iterations.len(), 4);
    }
}
