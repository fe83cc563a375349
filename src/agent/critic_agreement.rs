//! How far a critic can be trusted: its verdicts on the model's own plans against what happens
//! when those plans are executed (the paper checked its GPT-4 judge this way: 69-75%). A plan
//! whose execution fails should be rejected; "reject" is the positive class of precision and
//! recall.

use std::ops::ControlFlow;

use serde::Serialize;

use super::execute::{ExecuteConfig, execute_plan};
use super::model_eval::expert_position_error;
use crate::critic::{Critic, CriticInput, FindingKind, Verdict};
use crate::env::World;
use crate::model::pipeline::resize;
use crate::model::{SampleConfig, VideoModel};

/// One plan: where it started, whether executing it succeeded, and each critic's verdict
/// (`None`: the critic could not judge).
#[derive(Clone, Debug, Serialize)]
pub struct JudgedPlan {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub success: bool,
    /// `(critic, accepted)` in the order the critics were given.
    pub verdicts: Vec<(String, Option<bool>)>,
    /// The kinds each critic found (once each), same order: what [`fit_rejecting_kinds`]
    /// chooses from.
    pub findings: Vec<Vec<FindingKind>>,
    /// Milliseconds each critic took, same order.
    pub latency_ms: Vec<f64>,
    /// How far the plan's task object ends from where the expert's does from the same start,
    /// plan pixels (`None`: not found in the plan's last frame): what an oracle critic that
    /// compared with the expert would judge by.
    pub expert_position_error: Option<f64>,
}

/// One critic's verdicts against execution within one task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskAgreement {
    pub task: String,
    pub accepted_succeeded: usize,
    pub accepted_failed: usize,
    pub rejected_succeeded: usize,
    pub rejected_failed: usize,
}

/// Critic `index`'s verdicts per task, tasks in first-seen order. Success depends mostly on the
/// task; a critic helps a refinement loop only by telling plans apart within a task.
pub fn within_task(plans: &[JudgedPlan], index: usize) -> Vec<TaskAgreement> {
    let mut rows: Vec<TaskAgreement> = Vec::new();
    for p in plans {
        let Some(accepted) = p.verdicts.get(index).and_then(|v| v.1) else {
            continue;
        };
        let i = match rows.iter().position(|r| r.task == p.task) {
            Some(i) => i,
            None => {
                rows.push(TaskAgreement {
                    task: p.task.clone(),
                    ..TaskAgreement::default()
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[i];
        *match (accepted, p.success) {
            (true, true) => &mut row.accepted_succeeded,
            (true, false) => &mut row.accepted_failed,
            (false, true) => &mut row.rejected_succeeded,
            (false, false) => &mut row.rejected_failed,
        } += 1;
    }
    rows
}

/// How well the expert-position oracle separates success from failure within tasks: the
/// probability that, of two plans of the same task where the object was found, the one that
/// succeeded ended nearer the expert's object position than the one that failed (ties count
/// half); with the number of such pairs. Pairs across tasks are left out, since success depends
/// mostly on the task. `None` when no task has both outcomes.
pub fn expert_position_auc(plans: &[JudgedPlan]) -> Option<(f64, usize)> {
    let found: Vec<(&str, bool, f64)> = plans
        .iter()
        .filter_map(|p| Some((p.task.as_str(), p.success, p.expert_position_error?)))
        .collect();
    let (mut wins, mut pairs) = (0.0, 0usize);
    for &(task, _, good) in found.iter().filter(|f| f.1) {
        for &(_, _, bad) in found.iter().filter(|f| !f.1 && f.0 == task) {
            pairs += 1;
            wins += match good.total_cmp(&bad) {
                std::cmp::Ordering::Less => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Greater => 0.0,
            };
        }
    }
    (pairs > 0).then(|| (wins / pairs as f64, pairs))
}

/// One critic's agreement with execution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agreement {
    pub critic: String,
    /// Plans it judged (unavailable verdicts left out).
    pub judged: usize,
    pub unavailable: usize,
    /// Share of judged plans where accept <=> success.
    pub accuracy: f64,
    /// Of the plans it rejected, the share that failed (`None`: it rejected none).
    pub reject_precision: Option<f64>,
    /// Of the plans that failed, the share it rejected (`None`: none failed).
    pub reject_recall: Option<f64>,
    pub mean_latency_ms: f64,
}

/// Agreement of critic `index` over `plans`.
pub fn agreement(plans: &[JudgedPlan], index: usize) -> Agreement {
    let critic = plans
        .first()
        .and_then(|p| p.verdicts.get(index))
        .map_or_else(String::new, |v| v.0.clone());
    let judged: Vec<(bool, bool)> = plans
        .iter()
        .filter_map(|p| {
            p.verdicts
                .get(index)?
                .1
                .map(|accepted| (accepted, p.success))
        })
        .collect();
    let count = |f: &dyn Fn(&(bool, bool)) -> bool| judged.iter().filter(|j| f(j)).count();
    let agree = count(&|(a, s)| a == s);
    let rejected = count(&|(a, _)| !a);
    let failed = count(&|(_, s)| !s);
    let rejected_failures = count(&|(a, s)| !a && !s);
    let share = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
    let latencies: Vec<f64> = plans
        .iter()
        .filter_map(|p| p.latency_ms.get(index).copied())
        .collect();
    Agreement {
        critic,
        judged: judged.len(),
        unavailable: plans.len() - judged.len(),
        accuracy: share(agree, judged.len()).unwrap_or(0.0),
        reject_precision: share(rejected_failures, rejected),
        reject_recall: share(rejected_failures, failed),
        mean_latency_ms: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
    }
}

/// Whether critic `index`, rejecting only for findings of `kinds`, agrees with execution on
/// `plan` (`None`: it could not judge the plan).
fn agrees_with_kinds(plan: &JudgedPlan, index: usize, kinds: &[FindingKind]) -> Option<bool> {
    plan.verdicts.get(index)?.1?;
    let found = plan.findings.get(index)?;
    let rejects = found.iter().any(|k| kinds.contains(k));
    Some(rejects != plan.success)
}

/// Accuracy of critic `index` on `plans` if it rejected only for findings of `kinds`.
pub fn accuracy_with_kinds(plans: &[JudgedPlan], index: usize, kinds: &[FindingKind]) -> f64 {
    let judged: Vec<bool> = plans
        .iter()
        .filter_map(|p| agrees_with_kinds(p, index, kinds))
        .collect();
    judged.iter().filter(|a| **a).count() as f64 / judged.len().max(1) as f64
}

/// The kinds of finding that, as the only reasons to reject, make critic `index` agree best
/// with execution on `plans`: every subset of [`FindingKind::ALL`] is tried (256); ties go to
/// the smaller set, then the earlier kinds. Returns the set and its accuracy.
pub fn fit_rejecting_kinds(plans: &[JudgedPlan], index: usize) -> (Vec<FindingKind>, f64) {
    let all = FindingKind::ALL;
    let mut best: Option<(Vec<FindingKind>, f64)> = None;
    for mask in 0u32..(1 << all.len()) {
        let kinds: Vec<FindingKind> = (0..all.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| all[i])
            .collect();
        let accuracy = accuracy_with_kinds(plans, index, &kinds);
        let better = best.as_ref().is_none_or(|(b, a)| {
            accuracy > *a + 1e-12 || ((accuracy - *a).abs() <= 1e-12 && kinds.len() < b.len())
        });
        if better {
            best = Some((kinds, accuracy));
        }
    }
    best.unwrap_or_default()
}

/// Plans each `(task, view, seed)` start once with `model`, executes the plan from the same
/// start, and asks every critic about it. `on_plan` sees each judged plan and may stop.
pub fn judge_against_execution(
    model: &VideoModel,
    critics: &[&dyn Critic],
    world: &mut dyn World,
    starts: &[(String, usize, u64)],
    sample: &SampleConfig,
    mut on_plan: impl FnMut(&JudgedPlan) -> ControlFlow<()>,
) -> Result<Vec<JudgedPlan>, Box<dyn std::error::Error + Send + Sync>> {
    let mut plans = Vec::new();
    for (task, view, seed) in starts {
        let info = world
            .tasks()
            .into_iter()
            .find(|t| t.name == *task)
            .ok_or_else(|| format!("unknown task '{task}'"))?;
        let instruction = info.instruction().to_owned();
        let first = world.reset(task, *view, *seed)?;
        let Some(plan) = model.plan(&first.rgb, None, &instruction, sample, *seed, |_| {
            ControlFlow::Continue(())
        })?
        else {
            break;
        };
        let size = plan.first().map_or(first.rgb.width, |f| f.width);
        let frames: Vec<_> = std::iter::once(resize(&first.rgb, size))
            .chain(plan.iter().cloned())
            .collect();
        world.reset(task, *view, *seed)?;
        let rollout = execute_plan(world, task, &frames, &ExecuteConfig::default(), None)?;
        let expert_position_error = expert_position_error(world, task, *view, *seed, &plan)?;
        let input = CriticInput {
            first: &first,
            plan: &plan,
            task,
            instruction: &instruction,
        };
        let reviews: Vec<_> = critics
            .iter()
            .map(|c| (c.name(), c.review(&input)))
            .collect();
        let judged = JudgedPlan {
            task: task.clone(),
            view: *view,
            seed: *seed,
            success: rollout.success,
            verdicts: reviews
                .iter()
                .map(|(name, r)| {
                    let accepted = match r.verdict {
                        Verdict::Accept => Some(true),
                        Verdict::Reject => Some(false),
                        Verdict::Unavailable { .. } => None,
                    };
                    ((*name).to_owned(), accepted)
                })
                .collect(),
            latency_ms: reviews
                .iter()
                .map(|(_, r)| r.latency.as_secs_f64() * 1e3)
                .collect(),
            findings: reviews
                .iter()
                .map(|(_, r)| {
                    FindingKind::ALL
                        .into_iter()
                        .filter(|k| r.findings.iter().any(|f| f.kind == *k))
                        .collect()
                })
                .collect(),
            expert_position_error,
        };
        let stop = on_plan(&judged).is_break();
        plans.push(judged);
        if stop {
            break;
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(success: bool, accepted: Option<bool>) -> JudgedPlan {
        JudgedPlan {
            task: "push".into(),
            view: 0,
            seed: 0,
            success,
            verdicts: vec![("perception".into(), accepted)],
            latency_ms: vec![2.0],
            findings: vec![match accepted {
                Some(false) => vec![FindingKind::GoalNotReached],
                _ => Vec::new(),
            }],
            expert_position_error: None,
        }
    }

    fn in_task(
        task: &str,
        success: bool,
        accepted: Option<bool>,
        error: Option<f64>,
    ) -> JudgedPlan {
        JudgedPlan {
            task: task.into(),
            expert_position_error: error,
            ..plan(success, accepted)
        }
    }

    #[test]
    fn verdicts_are_counted_per_task_in_first_seen_order() {
        let plans = [
            in_task("push", false, Some(false), None),
            in_task("button-press", true, Some(false), None),
            in_task("push", false, Some(true), None),
            in_task("button-press", true, Some(true), None),
            in_task("push", true, None, None),
        ];
        let rows = within_task(&plans, 0);
        let counts: Vec<_> = rows
            .iter()
            .map(|r| {
                let n = [
                    r.accepted_succeeded,
                    r.accepted_failed,
                    r.rejected_succeeded,
                    r.rejected_failed,
                ];
                (r.task.as_str(), n)
            })
            .collect();
        assert_eq!(
            counts,
            vec![("push", [0, 1, 0, 1]), ("button-press", [1, 0, 1, 0])]
        );
    }

    #[test]
    fn the_oracle_auc_ranks_successes_by_how_near_the_expert_they_end() {
        let plans = [
            in_task("push", true, None, Some(1.0)),
            in_task("push", true, None, Some(4.0)),
            in_task("push", false, None, Some(4.0)),
            in_task("push", false, None, Some(9.0)),
            in_task("push", false, None, None),
            // Another task's failure is not compared with push's successes.
            in_task("hammer", false, None, Some(0.5)),
        ];
        // Pairs (success, failure): 1<4, 1<9, 4=4 (half), 4<9 -> 3.5 of 4.
        assert_eq!(expert_position_auc(&plans), Some((3.5 / 4.0, 4)));
        assert_eq!(expert_position_auc(&plans[2..]), None);
    }

    fn found(success: bool, kinds: &[FindingKind]) -> JudgedPlan {
        JudgedPlan {
            findings: vec![kinds.to_vec()],
            ..plan(success, Some(kinds.is_empty()))
        }
    }

    /// Blur makes colour drift in plans that work; an unreached goal predicts failure: the
    /// fit keeps the kind that separates and drops the one that does not.
    #[test]
    fn the_fit_keeps_the_kinds_that_predict_failure() {
        use FindingKind::{ColourDrift, GoalNotReached};
        let plans = [
            found(true, &[ColourDrift]),
            found(true, &[ColourDrift]),
            found(true, &[]),
            found(false, &[GoalNotReached, ColourDrift]),
            found(false, &[GoalNotReached]),
            found(false, &[ColourDrift]),
        ];
        assert!((accuracy_with_kinds(&plans, 0, &FindingKind::ALL) - 4.0 / 6.0).abs() < 1e-12);
        let (kinds, accuracy) = fit_rejecting_kinds(&plans, 0);
        assert_eq!(kinds, vec![GoalNotReached]);
        assert!((accuracy - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(
            accuracy_with_kinds(&plans, 0, &[]),
            0.5,
            "accept everything"
        );
    }

    #[test]
    fn agreement_counts_reject_as_the_positive_class() {
        let plans = [
            plan(false, Some(false)), // failure rejected
            plan(false, Some(false)), // failure rejected
            plan(false, Some(true)),  // failure accepted
            plan(true, Some(false)),  // success rejected
            plan(true, Some(true)),   // success accepted
            plan(true, None),         // not judged
        ];
        let a = agreement(&plans, 0);
        assert_eq!((a.judged, a.unavailable), (5, 1));
        assert!((a.accuracy - 3.0 / 5.0).abs() < 1e-12);
        assert_eq!(a.reject_precision, Some(2.0 / 3.0));
        assert_eq!(a.reject_recall, Some(2.0 / 3.0));
        assert_eq!(a.mean_latency_ms, 2.0);
        let none_failed = agreement(&[plan(true, Some(true))], 0);
        assert_eq!(none_failed.reject_recall, None);
        assert_eq!(none_failed.reject_precision, None);
    }

    #[test]
    fn the_execution_critic_agrees_with_execution_by_construction() {
        let model = VideoModel::load(
            &crate::model::pipeline::default_model_dir(),
            &candle_core::Device::Cpu,
        )
        .expect("shipped model");
        let mut world = crate::env::open_world("tabletop", 64).expect("world");
        let starts = [("push".to_owned(), 0, 1_000_000)];
        let (view, seed) = (starts[0].1, starts[0].2);
        let execution =
            super::super::execution_critic::ExecutionCritic::new("tabletop", 64, view, seed)
                .expect("critic");
        let perception = crate::critic::PerceptionCritic::default();
        let critics: [&dyn Critic; 2] = [&execution, &perception];
        let plans = judge_against_execution(
            &model,
            &critics,
            world.as_mut(),
            &starts,
            &SampleConfig::ddim(2),
            |_| ControlFlow::Continue(()),
        )
        .expect("judge");
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].verdicts[0].1, Some(plans[0].success));
        let a = agreement(&plans, 0);
        assert_eq!((a.critic.as_str(), a.accuracy), ("execution", 1.0));
        assert_eq!(agreement(&plans, 1).critic, "perception");
    }
}
