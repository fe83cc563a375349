//! The paper's evaluation protocol on a world (paper §7): for every (method, task, view,
//! held-out seed) make a plan, execute it with [`super::execute::execute_plan`] and record
//! success, steps and time; then the table in the paper's layout (rows: methods; columns:
//! tasks and the overall mean over tasks).
//!
//! Methods ([`Mode`]): `baseline` (one plan, AVDC), `refine` (the refinement loop with the
//! perception critic), `refine_env` (the same loop judged by executing each plan in a copy of
//! the world: the paper's environment feedback, i.e. refinement with a perfect critic),
//! `resample_env` (its ablation: fresh plans from new seeds instead of refinements, judged the
//! same way; what refinement adds over trying again), `resample` (the same ablation of
//! `refine`: fresh plans until the perception critic accepts one), `replan` (baseline plus new
//! plans when the gripper stalls) and `expert` (the expert's own video as the plan: a sanity
//! row that needs no model).
//!
//! Episodes run in parallel on worker threads (one world each, one shared model). Every
//! finished episode is appended to a JSON-lines log and synced at once ([`ResultLog`]), so an
//! interrupted evaluation loses nothing already evaluated and a rerun skips what is done.
//!
//! This module does not parse arguments or draw progress bars; the CLI does.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::execute::{Replanner, expert_plan};
use super::execution::{ExecutionLimits, execute_in_world};
use super::execution_critic::ExecutionCritic;
use super::model_eval::HELD_OUT_SEED;
use super::refine::{OnUnavailable, RefineInput, RefineSettings, refine};
use crate::critic::{Critic, CriticInput, FindingKind, FindingScope, PerceptionCritic};
use crate::env::{Observation, Rgb8Image, World, WorldError, open_world};
use crate::model::pipeline::resize;
use crate::model::{SampleConfig, VideoModel};
use crate::store::atomic;
use crate::store::json_log::JsonLog;

/// Errors that stop an evaluation (a failing episode is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("mode '{mode}' needs a video model")]
    NeedsModel { mode: Mode },
    #[error(
        "unknown mode '{name}' (valid: expert, baseline, refine, refine_env, resample_env, resample, replan)"
    )]
    UnknownMode { name: String },
    #[error("nothing to evaluate: {what}")]
    Empty { what: &'static str },
    #[error(transparent)]
    Io(#[from] atomic::IoError),
    #[error("{reason} ({path})")]
    Chart { reason: String, path: PathBuf },
}

/// A method of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The expert's own video as the plan (no model).
    Expert,
    /// One plan (AVDC).
    Baseline,
    /// The refinement loop with the perception critic.
    Refine,
    /// Baseline plus replanning on stalls.
    Replan,
    /// The refinement loop with the execution critic (environment feedback): how far
    /// refinement goes when the critic is never wrong.
    RefineEnv,
    /// Ablation of `RefineEnv`: as many fresh plans (new seeds, start frame and instruction
    /// only) until the execution critic accepts one.
    ResampleEnv,
    /// Ablation of `Refine`: fresh plans until the perception critic accepts one.
    Resample,
    /// VideoAgent's whole loop: `Refine` for the first plan and for every replan on stalls.
    RefineReplan,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Expert,
        Mode::Baseline,
        Mode::Refine,
        Mode::RefineEnv,
        Mode::ResampleEnv,
        Mode::Resample,
        Mode::Replan,
        Mode::RefineReplan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Expert => "expert",
            Mode::Baseline => "baseline",
            Mode::Refine => "refine",
            Mode::RefineEnv => "refine_env",
            Mode::ResampleEnv => "resample_env",
            Mode::Resample => "resample",
            Mode::Replan => "replan",
            Mode::RefineReplan => "refine_replan",
        }
    }

    /// Methods that plan again from the current frame when the gripper stalls.
    fn replans(self) -> bool {
        matches!(self, Mode::Replan | Mode::RefineReplan)
    }

    /// Loop methods whose critic executes each plan in a copy of the world.
    fn judged_by_execution(self) -> bool {
        matches!(self, Mode::RefineEnv | Mode::ResampleEnv)
    }

    pub fn needs_model(self) -> bool {
        self != Mode::Expert
    }

    /// Parses a comma list (`baseline,refine`).
    pub fn parse_list(list: &str) -> Result<Vec<Mode>, EvalError> {
        let mut modes = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mode = Mode::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| EvalError::UnknownMode {
                    name: name.to_owned(),
                })?;
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        Ok(modes)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to evaluate and how.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSpec {
    pub world: String,
    /// World frame size (the world renders, plans are at the model's size).
    pub world_size: u32,
    pub tasks: Vec<String>,
    pub views: Vec<usize>,
    /// Held-out seeds per (task, view): `first_seed .. first_seed + seeds`.
    pub seeds: u64,
    pub first_seed: u64,
    pub modes: Vec<Mode>,
    /// DDIM steps per plan.
    pub sampler_steps: usize,
    /// Refinements after the first plan in `refine` mode.
    pub refinements: usize,
    /// The kinds of finding that make the perception critic reject in `refine` mode.
    pub rejects_on: Vec<FindingKind>,
    /// Whose glitches make the perception critic reject.
    pub scope: FindingScope,
    /// New plans allowed in `replan` mode.
    pub max_replans: usize,
    /// Frame side of expert-video plans.
    pub expert_plan_size: u32,
    /// Step limit per episode (the task's own if `None`).
    pub max_steps: Option<u32>,
    /// Worker threads.
    pub threads: usize,
    /// Names the planner in the log (results of another model are not reused).
    pub model_label: String,
}

impl EvalSpec {
    /// The defaults of `videoagent eval` for these tasks and views.
    pub fn new(tasks: Vec<String>, views: Vec<usize>, seeds: u64, modes: Vec<Mode>) -> Self {
        Self {
            world: "tabletop".to_owned(),
            world_size: 64,
            tasks,
            views,
            seeds,
            first_seed: HELD_OUT_SEED,
            modes,
            sampler_steps: 10,
            refinements: 2,
            rejects_on: FindingKind::ALL.to_vec(),
            scope: FindingScope::default(),
            max_replans: 3,
            expert_plan_size: 32,
            max_steps: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model_label: String::new(),
        }
    }

    /// Every episode of the protocol, in a fixed order.
    pub fn episodes(&self) -> Vec<EpisodeKey> {
        let mut keys = Vec::new();
        for &mode in &self.modes {
            for task in &self.tasks {
                for &view in &self.views {
                    for s in 0..self.seeds {
                        keys.push(EpisodeKey {
                            mode,
                            task: task.clone(),
                            view,
                            seed: self.first_seed + s,
                        });
                    }
                }
            }
        }
        keys
    }

    /// The critic of a loop method: `execution`, or the perception critic's label.
    fn critic_label(&self, mode: Mode) -> String {
        if mode.judged_by_execution() {
            "execution".to_owned()
        } else {
            self.perception_label()
        }
    }

    /// The perception critic of the loop methods.
    pub fn perception_critic(&self) -> PerceptionCritic {
        PerceptionCritic {
            rejects_on: self.rejects_on.clone(),
            scope: self.scope,
            ..PerceptionCritic::default()
        }
    }

    /// The perception critic's name, with the rejecting kinds when they are not all of them.
    fn perception_label(&self) -> String {
        let critic = self.perception_critic();
        let name = critic.name();
        if FindingKind::ALL.iter().all(|k| self.rejects_on.contains(k)) {
            return name.to_owned();
        }
        let kinds: Vec<&str> = self.rejects_on.iter().map(|k| k.name()).collect();
        format!("{name}[{}]", kinds.join(","))
    }

    /// The settings an episode's result depends on, besides its key: a result logged under
    /// other settings is not reused.
    pub fn setting(&self, mode: Mode) -> String {
        let steps = self.max_steps.map_or("task".to_owned(), |s| s.to_string());
        match mode {
            Mode::Expert => format!("expert@{}px steps={steps}", self.expert_plan_size),
            Mode::Baseline => format!(
                "{} ddim{} steps={steps}",
                self.model_label, self.sampler_steps
            ),
            Mode::Refine | Mode::RefineEnv => format!(
                "{} ddim{} K={} critic={} steps={steps}",
                self.model_label,
                self.sampler_steps,
                self.refinements,
                self.critic_label(mode)
            ),
            Mode::ResampleEnv | Mode::Resample => format!(
                "{} ddim{} attempts={} critic={} steps={steps}",
                self.model_label,
                self.sampler_steps,
                self.refinements + 1,
                self.critic_label(mode)
            ),
            Mode::Replan => format!(
                "{} ddim{} replans={} steps={steps}",
                self.model_label, self.sampler_steps, self.max_replans
            ),
            Mode::RefineReplan => format!(
                "{} ddim{} K={} critic={} replans={} steps={steps}",
                self.model_label,
                self.sampler_steps,
                self.refinements,
                self.critic_label(mode),
                self.max_replans
            ),
        }
    }
}

/// One episode of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EpisodeKey {
    pub mode: Mode,
    pub task: String,
    pub view: usize,
    /// World seed (also the sampler's).
    pub seed: u64,
}

/// What one episode gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeResult {
    #[serde(flatten)]
    pub key: EpisodeKey,
    /// [`EvalSpec::setting`] it was run under.
    pub setting: String,
    pub success: bool,
    pub steps: u32,
    pub replans: usize,
    /// Plans generated in the refinement loop (0 outside `refine`).
    pub plans_generated: usize,
    /// Whether the critic accepted the chosen plan (`refine` only).
    pub accepted: Option<bool>,
    pub failure: Option<String>,
    /// Time to the first executable plan.
    pub plan_ms: f64,
    /// The whole episode.
    pub total_ms: f64,
}

/// The append-only JSON-lines log of finished episodes.
pub type ResultLog = JsonLog<EpisodeResult>;

/// The log next to an output file: `eval.json` -> `eval.jsonl`.
pub fn log_path(out: &Path) -> PathBuf {
    out.with_extension("jsonl")
}

/// Stops an evaluation early: workers take no new episode once `stop` is set.
#[derive(Debug, Default)]
pub struct EvalControl {
    pub stop: AtomicBool,
}

/// How [`run_eval`] ended.
#[derive(Clone, Debug)]
pub struct EvalRun {
    /// Every result for the spec's episodes: those from the log and the new ones, in the
    /// spec's order.
    pub results: Vec<EpisodeResult>,
    /// Episodes run by this call.
    pub ran: usize,
    /// Episodes skipped because the log had them.
    pub reused: usize,
    /// Whether every episode of the spec has a result.
    pub complete: bool,
}

/// The plan of a model for `first` (start frame first, at the model's size), or why not.
pub fn model_plan(
    model: &VideoModel,
    first: &Rgb8Image,
    instruction: &str,
    sample: &SampleConfig,
    seed: u64,
) -> Result<Vec<Rgb8Image>, String> {
    let frames = model
        .plan(first, None, instruction, sample, seed, |_| {
            ControlFlow::Continue(())
        })
        .map_err(|e| format!("sampling failed: {e}"))?
        .ok_or_else(|| "sampling was cancelled".to_owned())?;
    Ok(with_start(first, frames))
}

/// Up to `attempts` fresh plans (seeds `seed`, `seed + 1`, ...) until `critic` accepts one;
/// the accepted plan, else the last.
fn resampled_plan(
    model: &VideoModel,
    critic: &dyn Critic,
    input: &RefineInput<'_>,
    sample: &SampleConfig,
    attempts: usize,
    seed: u64,
) -> Result<RefinedPlan, String> {
    let mut last = None;
    for attempt in 0..attempts.max(1) {
        let plan = model_plan(
            model,
            &input.first.rgb,
            input.instruction,
            sample,
            seed.wrapping_add(attempt as u64),
        )?;
        let accepted = critic
            .review(&CriticInput {
                first: input.first,
                plan: &plan[1..],
                task: input.task,
                instruction: input.instruction,
            })
            .is_accept();
        last = Some(RefinedPlan {
            frames: plan,
            plans_generated: attempt + 1,
            accepted,
        });
        if accepted {
            break;
        }
    }
    last.ok_or_else(|| "no plan was made".to_owned())
}

/// `first` resized to the plan's size, then the plan.
fn with_start(first: &Rgb8Image, frames: Vec<Rgb8Image>) -> Vec<Rgb8Image> {
    let size = frames.first().map_or(first.width, |f| f.width);
    std::iter::once(resize(first, size)).chain(frames).collect()
}

/// A refined plan (start first) and what the loop did.
pub struct RefinedPlan {
    pub frames: Vec<Rgb8Image>,
    pub plans_generated: usize,
    pub accepted: bool,
}

/// Runs the refinement loop with `critic` for `input`.
pub fn refined_plan(
    model: &VideoModel,
    critic: &dyn Critic,
    input: &RefineInput<'_>,
    sample: &SampleConfig,
    refinements: usize,
    seed: u64,
) -> Result<RefinedPlan, String> {
    let settings = RefineSettings {
        max_refinements: refinements,
        sample: *sample,
        seed,
        on_unavailable: OnUnavailable::Continue,
    };
    let outcome = refine(model, critic, input, &settings, &mut |_| {
        ControlFlow::Continue(())
    })
    .map_err(|e| format!("sampling failed: {e}"))?;
    let frames = outcome
        .chosen_frames()
        .ok_or_else(|| "the refinement loop made no plan".to_owned())?
        .to_vec();
    let accepted = outcome
        .chosen
        .and_then(|i| outcome.iterations.get(i))
        .is_some_and(|it| it.review.is_accept());
    Ok(RefinedPlan {
        frames: with_start(&input.first.rgb, frames),
        plans_generated: outcome.iterations.len(),
        accepted,
    })
}

/// Runs one episode in `world` (which it resets). World errors become failed episodes.
pub fn run_episode(
    world: &mut dyn World,
    model: Option<&VideoModel>,
    spec: &EvalSpec,
    key: &EpisodeKey,
) -> EpisodeResult {
    let t0 = Instant::now();
    let mut result = EpisodeResult {
        key: key.clone(),
        setting: spec.setting(key.mode),
        success: false,
        steps: 0,
        replans: 0,
        plans_generated: 0,
        accepted: None,
        failure: None,
        plan_ms: 0.0,
        total_ms: 0.0,
    };
    if let Err(why) = episode_into(world, model, spec, key, &mut result) {
        result.success = false;
        result.failure = Some(why);
    }
    result.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    result
}

fn episode_into(
    world: &mut dyn World,
    model: Option<&VideoModel>,
    spec: &EvalSpec,
    key: &EpisodeKey,
    result: &mut EpisodeResult,
) -> Result<(), String> {
    let info = world
        .tasks()
        .into_iter()
        .find(|t| t.name == key.task)
        .ok_or_else(|| format!("unknown task '{}'", key.task))?;
    let instruction = info.instruction().to_owned();
    let sample = SampleConfig::ddim(spec.sampler_steps.max(1));
    let first = world
        .reset(&key.task, key.view, key.seed)
        .map_err(|e| format!("world: {e}"))?;
    let t0 = Instant::now();
    let needs_model = || model.ok_or_else(|| EvalError::NeedsModel { mode: key.mode }.to_string());
    let plan = match key.mode {
        Mode::Expert => expert_plan(world, &key.task, key.view, key.seed, spec.expert_plan_size)
            .map_err(|e| format!("world: {e}"))?,
        Mode::Baseline | Mode::Replan => {
            model_plan(needs_model()?, &first.rgb, &instruction, &sample, key.seed)?
        }
        Mode::Refine
        | Mode::RefineEnv
        | Mode::ResampleEnv
        | Mode::Resample
        | Mode::RefineReplan => {
            let critic: Box<dyn Critic> = if key.mode.judged_by_execution() {
                Box::new(
                    ExecutionCritic::new(&spec.world, spec.world_size, key.view, key.seed)
                        .map_err(|e| format!("execution critic: {e}"))?,
                )
            } else {
                Box::new(spec.perception_critic())
            };
            let input = RefineInput {
                first: &first,
                task: &key.task,
                instruction: &instruction,
            };
            let model = needs_model()?;
            let r = if matches!(key.mode, Mode::ResampleEnv | Mode::Resample) {
                let attempts = spec.refinements + 1;
                resampled_plan(model, critic.as_ref(), &input, &sample, attempts, key.seed)?
            } else {
                let k = spec.refinements;
                refined_plan(model, critic.as_ref(), &input, &sample, k, key.seed)?
            };
            result.plans_generated = r.plans_generated;
            result.accepted = Some(r.accepted);
            r.frames
        }
    };
    result.plan_ms = t0.elapsed().as_secs_f64() * 1e3;
    let limits = ExecutionLimits {
        max_steps: spec.max_steps,
        max_replans: if key.mode.replans() {
            spec.max_replans
        } else {
            0
        },
    };
    let mut replans = 0u64;
    let mut hook = |obs: &Observation| -> Result<Vec<Rgb8Image>, String> {
        replans += 1;
        let m = model.ok_or_else(|| "no model to replan with".to_owned())?;
        let seed = key.seed + replans;
        if key.mode == Mode::RefineReplan {
            let input = RefineInput {
                first: obs,
                task: &key.task,
                instruction: &instruction,
            };
            let critic = spec.perception_critic();
            let r = refined_plan(m, &critic, &input, &sample, spec.refinements, seed)?;
            Ok(r.frames)
        } else {
            model_plan(m, &obs.rgb, &instruction, &sample, seed)
        }
    };
    let hook_ref: Option<&mut Replanner<'_>> = if key.mode.replans() {
        Some(&mut hook)
    } else {
        None
    };
    let rollout = execute_in_world(world, &key.task, &plan, limits, hook_ref)
        .map_err(|e| format!("execution: {e}"))?;
    result.success = rollout.success;
    result.steps = rollout.steps;
    result.replans = rollout.replans;
    result.failure = rollout.failure;
    Ok(())
}

/// Runs every episode of `spec` that `log` does not have yet, in parallel, appending each
/// result to the log as it finishes; `on_done` sees every new result (from worker threads).
pub fn run_eval(
    spec: &EvalSpec,
    model: Option<&VideoModel>,
    log: &ResultLog,
    control: &EvalControl,
    on_done: &(dyn Fn(&EpisodeResult) + Sync),
) -> Result<EvalRun, EvalError> {
    if let Some(mode) = spec.modes.iter().find(|m| m.needs_model())
        && model.is_none()
    {
        return Err(EvalError::NeedsModel { mode: *mode });
    }
    let all = spec.episodes();
    if all.is_empty() {
        return Err(EvalError::Empty {
            what: "no task, view, seed or mode",
        });
    }
    let done: std::collections::BTreeMap<EpisodeKey, EpisodeResult> = log
        .done()
        .iter()
        .filter(|r| r.setting == spec.setting(r.key.mode))
        .map(|r| (r.key.clone(), r.clone()))
        .collect();
    let todo: Vec<&EpisodeKey> = all.iter().filter(|k| !done.contains_key(*k)).collect();
    let reused = all.len() - todo.len();
    let next = AtomicUsize::new(0);
    let fresh: Mutex<Vec<EpisodeResult>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<EvalError>> = Mutex::new(None);
    let threads = spec.threads.clamp(1, todo.len().max(1));
    let _ops_on_callers = crate::model::parallel::ops_on_callers(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut world = match open_world(&spec.world, spec.world_size) {
                    Ok(w) => w,
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e.into());
                        control.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                loop {
                    if control.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(key) = todo.get(i) else { return };
                    let result = run_episode(world.as_mut(), model, spec, key);
                    if let Err(e) = log.append(&result) {
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e.into());
                        control.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                    on_done(&result);
                    fresh.lock().unwrap_or_else(|e| e.into_inner()).push(result);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let fresh = fresh.into_inner().unwrap_or_else(|e| e.into_inner());
    let ran = fresh.len();
    let mut by_key = done;
    by_key.extend(fresh.into_iter().map(|r| (r.key.clone(), r)));
    let results: Vec<EpisodeResult> = all.iter().filter_map(|k| by_key.remove(k)).collect();
    Ok(EvalRun {
        complete: results.len() == all.len(),
        results,
        ran,
        reused,
    })
}

/// One cell of the table: successes out of episodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub successes: usize,
    pub episodes: usize,
}

impl Cell {
    pub fn rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f64 / self.episodes as f64
        }
    }
}

/// One row: a method's success per task and overall (the mean over tasks, as the paper).
#[derive(Clone, Debug, Serialize)]
pub struct MethodRow {
    pub mode: Mode,
    pub tasks: Vec<Cell>,
    pub overall: f64,
    /// Mean time per episode.
    pub mean_episode_ms: f64,
}

/// The paper's table: rows are methods, columns tasks and the overall mean.
#[derive(Clone, Debug, Serialize)]
pub struct EvalTable {
    pub tasks: Vec<String>,
    pub rows: Vec<MethodRow>,
}

impl EvalTable {
    /// Aggregates `results` for the spec's modes and tasks.
    pub fn from_results(spec: &EvalSpec, results: &[EpisodeResult]) -> Self {
        let rows = spec
            .modes
            .iter()
            .map(|&mode| {
                let mine: Vec<&EpisodeResult> =
                    results.iter().filter(|r| r.key.mode == mode).collect();
                let tasks: Vec<Cell> = spec
                    .tasks
                    .iter()
                    .map(|t| {
                        let of_task = mine.iter().filter(|r| &r.key.task == t);
                        Cell {
                            successes: of_task.clone().filter(|r| r.success).count(),
                            episodes: of_task.count(),
                        }
                    })
                    .collect();
                let measured: Vec<f64> = tasks
                    .iter()
                    .filter(|c| c.episodes > 0)
                    .map(Cell::rate)
                    .collect();
                let overall = if measured.is_empty() {
                    0.0
                } else {
                    measured.iter().sum::<f64>() / measured.len() as f64
                };
                let mean_episode_ms = if mine.is_empty() {
                    0.0
                } else {
                    mine.iter().map(|r| r.total_ms).sum::<f64>() / mine.len() as f64
                };
                MethodRow {
                    mode,
                    tasks,
                    overall,
                    mean_episode_ms,
                }
            })
            .collect();
        Self {
            tasks: spec.tasks.clone(),
            rows,
        }
    }

    /// The table as Markdown: success in percent per task, then overall.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("| method | {} | overall |\n", self.tasks.join(" | "));
        out += &format!("|---|{}---|\n", "---|".repeat(self.tasks.len()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .tasks
                .iter()
                .map(|c| {
                    if c.episodes == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:.0}%", 100.0 * c.rate())
                    }
                })
                .collect();
            out += &format!(
                "| {} | {} | {:.1}% |\n",
                row.mode,
                cells.join(" | "),
                100.0 * row.overall
            );
        }
        out
    }

    /// A grouped bar chart, `height` pixels tall: one group per task and one for overall
    /// (underlined), one bar per method in its [`MODE_COLOURS`] colour.
    pub fn chart(&self, bar_width: u32, height: u32) -> image::RgbImage {
        let mut groups: Vec<&str> = self.tasks.iter().map(String::as_str).collect();
        groups.push("overall");
        let series: Vec<crate::viz::chart::Series> = self
            .rows
            .iter()
            .map(|row| crate::viz::chart::Series {
                name: row.mode.name(),
                colour: MODE_COLOURS[row.mode as usize % MODE_COLOURS.len()],
                values: row
                    .tasks
                    .iter()
                    .map(Cell::rate)
                    .chain(std::iter::once(row.overall))
                    .collect(),
            })
            .collect();
        crate::viz::chart::grouped_bars(&groups, &series, bar_width, height)
    }
}

/// Bar colours by [`Mode`] (its discriminant): expert grey, baseline blue, refine orange,
/// replan green, refine_env purple, resample_env brown, resample gold, refine_replan red.
pub const MODE_COLOURS: [[u8; 3]; 8] = [
    [150, 150, 150],
    [66, 110, 200],
    [240, 140, 40],
    [60, 170, 90],
    [150, 90, 190],
    [150, 110, 70],
    [215, 185, 50],
    [205, 60, 80],
];

/// The JSON report of `videoagent eval`.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub spec: EvalSpec,
    pub table: EvalTable,
    pub complete: bool,
    pub ran: usize,
    pub reused: usize,
    pub wall_secs: f64,
    pub episodes: Vec<EpisodeResult>,
}

/// Writes the report as JSON at `out` and the chart as PNG beside it (`out` with `.png`).
pub fn write_report(out: &Path, report: &EvalReport) -> Result<PathBuf, EvalError> {
    atomic::write_json(out, report).map_err(atomic::io_error("cannot write the report", out))?;
    let png = out.with_extension("png");
    let chart = report.table.chart(14, 220);
    crate::viz::write_png(&png, &chart).map_err(|e| EvalError::Chart {
        reason: format!("cannot write the chart: {e}"),
        path: png.clone(),
    })?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(modes: Vec<Mode>, seeds: u64) -> EvalSpec {
        let mut s = EvalSpec::new(
            vec!["button-press".to_owned(), "push".to_owned()],
            vec![0],
            seeds,
            modes,
        );
        s.threads = 2;
        s.model_label = "test".to_owned();
        s
    }

    #[test]
    fn modes_parse_and_reject_unknown_names() {
        assert_eq!(
            Mode::parse_list("baseline, refine,baseline,refine_env").expect("parse"),
            vec![Mode::Baseline, Mode::Refine, Mode::RefineEnv]
        );
        assert!(matches!(
            Mode::parse_list("avdc"),
            Err(EvalError::UnknownMode { .. })
        ));
        let mut s = spec(vec![Mode::Refine], 1);
        assert!(s.setting(Mode::Refine).contains("critic=perception "));
        assert_eq!(
            Mode::parse_list("refine_replan").expect("parse"),
            vec![Mode::RefineReplan]
        );
        let whole_loop = s.setting(Mode::RefineReplan);
        assert!(
            whole_loop.contains("K=2") && whole_loop.contains("replans=3"),
            "{whole_loop}"
        );
        s.rejects_on = vec![FindingKind::Vanished, FindingKind::ColourDrift];
        assert!(
            s.setting(Mode::Refine)
                .contains("critic=perception[vanished,colour_drift] "),
            "results of another critic are not reused: {}",
            s.setting(Mode::Refine)
        );
    }

    #[test]
    fn log_drops_a_torn_line_and_appends_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("eval.jsonl");
        let r = EpisodeResult {
            key: EpisodeKey {
                mode: Mode::Expert,
                task: "push".into(),
                view: 0,
                seed: 1,
            },
            setting: "s".into(),
            success: true,
            steps: 3,
            replans: 0,
            plans_generated: 0,
            accepted: None,
            failure: None,
            plan_ms: 1.0,
            total_ms: 2.0,
        };
        let line = serde_json::to_string(&r).expect("json");
        std::fs::write(&path, format!("{line}\n{}", &line[..10])).expect("write");
        let log = ResultLog::open(&path).expect("open");
        assert_eq!(log.done(), std::slice::from_ref(&r));
        log.append(&r).expect("append");
        drop(log);
        let again = ResultLog::open(&path).expect("reopen");
        assert_eq!(again.done().len(), 2);
    }

    #[test]
    fn table_is_the_mean_over_tasks() {
        let s = spec(vec![Mode::Expert], 2);
        let mk = |task: &str, seed, success| EpisodeResult {
            key: EpisodeKey {
                mode: Mode::Expert,
                task: task.into(),
                view: 0,
                seed,
            },
            setting: String::new(),
            success,
            steps: 1,
            replans: 0,
            plans_generated: 0,
            accepted: None,
            failure: None,
            plan_ms: 0.0,
            total_ms: 10.0,
        };
        let results = vec![
            mk("button-press", 1, true),
            mk("button-press", 2, true),
            mk("push", 1, false),
            mk("push", 2, true),
        ];
        let t = EvalTable::from_results(&s, &results);
        assert!((t.rows[0].overall - 0.75).abs() < 1e-9);
        let md = t.to_markdown();
        assert!(md.contains("| expert | 100% | 50% | 75.0% |"), "{md}");
        let img = t.chart(10, 100);
        assert_eq!(img.height(), 100);
        // Every mode has a colour of its own (the chart's legend tells them apart).
        let colours: std::collections::HashSet<_> = Mode::ALL
            .iter()
            .map(|&m| MODE_COLOURS[m as usize % MODE_COLOURS.len()])
            .collect();
        assert_eq!(colours.len(), Mode::ALL.len());
    }

    /// The whole loop refines its first plan and may plan again, within its replan budget.
    #[test]
    fn refine_replan_refines_the_first_plan_and_keeps_to_its_replan_budget() {
        let model_dir = crate::model::pipeline::default_model_dir();
        let model = VideoModel::load(&model_dir, &candle_core::Device::Cpu).expect("model");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(vec![Mode::RefineReplan], 1);
        s.max_steps = Some(80);
        s.max_replans = 1;
        let log = ResultLog::open(&dir.path().join("eval.jsonl")).expect("log");
        let run = run_eval(&s, Some(&model), &log, &EvalControl::default(), &|_| {}).expect("run");
        assert!(run.complete);
        for r in &run.results {
            assert!(r.plans_generated >= 1 && r.accepted.is_some(), "{r:?}");
            assert!(r.replans <= 1 && r.steps <= 80, "{r:?}");
        }
    }

    /// An evaluation stopped part way and run again computes only what is missing, and the
    /// result is complete. Expert mode (no model) plus baseline with the shipped model.
    #[test]
    fn eval_resumes_after_an_interruption() {
        let model_dir = crate::model::pipeline::default_model_dir();
        let model = VideoModel::load(&model_dir, &candle_core::Device::Cpu).expect("model");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("eval.json");
        let mut s = spec(vec![Mode::Expert, Mode::Baseline], 1);
        s.max_steps = Some(120);
        let total = s.episodes().len();
        assert_eq!(total, 4);

        // First run: stop after the first finished episode (the other worker may finish the
        // one it holds).
        let control = EvalControl::default();
        let log = ResultLog::open(&log_path(&out)).expect("log");
        let first = run_eval(&s, Some(&model), &log, &control, &|_| {
            control.stop.store(true, Ordering::SeqCst);
        })
        .expect("first run");
        assert!(!first.complete);
        assert!(first.ran >= 1 && first.ran < total, "ran {}", first.ran);
        drop(log);

        // Second run: only the rest is computed.
        let seen = Mutex::new(Vec::new());
        let log = ResultLog::open(&log_path(&out)).expect("log");
        assert_eq!(log.done().len(), first.ran);
        let second = run_eval(&s, Some(&model), &log, &EvalControl::default(), &|r| {
            seen.lock().expect("lock").push(r.key.clone());
        })
        .expect("second run");
        assert!(second.complete);
        assert_eq!(second.reused, first.ran);
        assert_eq!(second.ran, total - first.ran);
        let seen = seen.into_inner().expect("lock");
        for r in &first.results {
            assert!(!seen.contains(&r.key), "{:?} was recomputed", r.key);
        }
        assert_eq!(second.results.len(), total);
        let keys: Vec<EpisodeKey> = second.results.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, s.episodes());
        // The earlier results are reused unchanged.
        for r in &first.results {
            assert!(second.results.contains(r));
        }
        drop(log);

        // A third run has nothing to do; the log holds each episode once.
        let log = ResultLog::open(&log_path(&out)).expect("log");
        assert_eq!(log.done().len(), total);
        let third = run_eval(&s, Some(&model), &log, &EvalControl::default(), &|_| {
            panic!("nothing should run")
        })
        .expect("third run");
        assert_eq!((third.ran, third.reused), (0, total));
        let table = EvalTable::from_results(&s, &third.results);
        assert_eq!(table.rows.len(), 2);
        assert!(
            table
                .rows
                .iter()
                .all(|r| r.tasks.iter().all(|c| c.episodes == 1))
        );
        let report = EvalReport {
            spec: s.clone(),
            table,
            complete: third.complete,
            ran: third.ran,
            reused: third.reused,
            wall_secs: 0.0,
            episodes: third.results,
        };
        let png = write_report(&out, &report).expect("report");
        assert!(png.exists() && out.exists());

        // Another model's results are not reused.
        let mut other = s.clone();
        other.modes = vec![Mode::Baseline];
        other.model_label = "other".to_owned();
        other.tasks.truncate(1);
        let fourth = run_eval(&other, Some(&model), &log, &EvalControl::default(), &|_| {})
            .expect("fourth run");
        assert_eq!((fourth.ran, fourth.reused), (1, 0));
    }

    /// Episodes of two loop methods (2 sampler steps, one refinement) on the same starts,
    /// `first`'s then `second`'s, with the shipped model.
    fn two_loops(first: Mode, second: Mode) -> Vec<EpisodeResult> {
        let model_dir = crate::model::pipeline::default_model_dir();
        let model = VideoModel::load(&model_dir, &candle_core::Device::Cpu).expect("model");
        let mut s = spec(vec![first, second], 2);
        s.sampler_steps = 2;
        s.refinements = 1;
        let mut world = open_world(&s.world, s.world_size).expect("world");
        s.episodes()
            .iter()
            .map(|key| run_episode(world.as_mut(), Some(&model), &s, key))
            .collect()
    }

    /// Environment feedback judges a plan by executing it from the same start, so an
    /// episode succeeds exactly when its loop found a plan the critic accepted, and a loop
    /// with no accept used every attempt. Both loops make their first plan from the same
    /// seed, so when either stopped there they agree.
    #[test]
    fn environment_feedback_agrees_with_the_executed_episode() {
        let results = two_loops(Mode::RefineEnv, Mode::ResampleEnv);
        for r in &results {
            assert_eq!(r.failure.is_none(), r.success, "{r:?}");
            assert_eq!(r.accepted, Some(r.success), "{r:?}");
            if !r.success {
                assert_eq!(r.plans_generated, 2, "{r:?}");
            }
            assert!(r.setting.contains("critic=execution"), "{}", r.setting);
        }
        let (refine, resample) = results.split_at(results.len() / 2);
        for (a, b) in refine.iter().zip(resample) {
            assert_eq!(a.key.seed, b.key.seed);
            if a.plans_generated == 1 || b.plans_generated == 1 {
                assert_eq!(
                    (a.success, a.plans_generated),
                    (b.success, b.plans_generated)
                );
            }
        }
    }

    /// `resample` is `refine`'s ablation: the same perception critic and the same first plan,
    /// then fresh plans instead of refinements; a loop without an accept used every attempt.
    #[test]
    fn resampling_shares_the_critic_and_the_first_plan_with_refinement() {
        let results = two_loops(Mode::Refine, Mode::Resample);
        for r in &results {
            assert!(r.setting.contains("critic=perception"), "{}", r.setting);
            if r.accepted == Some(false) {
                assert_eq!(r.plans_generated, 2, "{r:?}");
            }
        }
        let (refine, resample) = results.split_at(results.len() / 2);
        for (a, b) in refine.iter().zip(resample) {
            assert_eq!((a.key.mode, b.key.mode), (Mode::Refine, Mode::Resample));
            assert_eq!(a.key.seed, b.key.seed);
            if a.plans_generated == 1 || b.plans_generated == 1 {
                assert_eq!(
                    (a.accepted, a.plans_generated),
                    (b.accepted, b.plans_generated)
                );
            }
        }
    }
}
