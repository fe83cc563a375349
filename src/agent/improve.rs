//! VideoAgent's self-improvement loop (paper §6): each round executes refined plans on fresh
//! starts, keeps only the episodes the world verifies as successful (the executed rollout
//! subsampled to 8 frames, with the task's instructions), fine-tunes the model on everything
//! collected so far (plus expert clips, if given) starting from the previous round's weights,
//! and evaluates the new model.
//!
//! ```text
//! <out>/round-k/data/episodes.json   the verified successes of round k (CollectedEpisode)
//! <out>/round-k/data/NNN.png         each one as a strip of 8 frames
//! <out>/round-k/data/attempts.json   how many episodes the collection ran
//! <out>/round-k/model/               the fine-tuned model (a training run folder)
//! <out>/round-k/eval.{json,jsonl,png,md}  its evaluation
//! <out>/round-k/round.json           RoundSummary, written last: the round is done
//! ```
//!
//! Resumable: a round with `round.json` is skipped; inside an unfinished round, collected
//! data is reused, training resumes from its checkpoint and the evaluation from its log.
//! This module does not draw progress; it reports [`ImproveEvent`]s.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::eval::{
    EvalControl, EvalError, EvalReport, EvalSpec, EvalTable, ResultLog, refined_plan, run_eval,
    write_report,
};
use super::execute::{ExecuteConfig, execute_plan};
use crate::env::{Rgb8Image, WorldError, open_world};
use crate::model::refine_train::{RefineItem, RefineTrainData};
use crate::model::train::{Progress, TrainConfig, TrainData, TrainError, TrainSet, Trainer};
use crate::model::{ModelError, SampleConfig, VideoModel};
use crate::store::atomic;
use crate::store::dataset::clip_indices;
use crate::store::json_log::JsonLog;

/// First seed of the starts the rounds collect on (training data uses small seeds and the
/// evaluation starts at 1,000,000: these are neither).
pub const IMPROVE_SEED: u64 = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImproveError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Io(#[from] atomic::IoError),
    #[error("{reason} ({path})")]
    Data { reason: String, path: PathBuf },
    #[error("stopped before round {round} was finished")]
    Stopped { round: usize },
}

/// What the loop does.
#[derive(Clone, Debug, Serialize)]
pub struct ImproveSpec {
    pub tasks: Vec<String>,
    pub views: Vec<usize>,
    pub rounds: usize,
    /// Refined plans executed per task and round (views taken in turn).
    pub episodes_per_task: usize,
    pub refinements: usize,
    pub sampler_steps: usize,
    /// Fine-tuning of each round (`steps` is the steps per round).
    pub train: TrainConfig,
    /// The evaluation after each round (its tasks, views, seeds and modes).
    pub eval: EvalSpec,
    pub first_seed: u64,
    pub max_steps: Option<u32>,
    /// New plans from the current frame allowed when a collecting episode stalls (the
    /// paper's replanning), for more verified successes per round.
    pub replans: usize,
    /// Each collected clip is drawn this many times as often as an expert episode in
    /// fine-tuning (1: the same), so a few new clips are not lost among many demonstrations.
    pub collected_weight: usize,
    /// A task stops collecting once this many of its attempts are verified successes (the
    /// attempts stay capped by `episodes_per_task`): hard tasks then get as many clips as easy
    /// ones instead of the few their success rate yields. `None`: every attempt is made.
    pub successes_per_task: Option<usize>,
    pub threads: usize,
}

/// One verified success kept as training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectedEpisode {
    pub task: String,
    pub view: usize,
    pub seed: u64,
    pub instructions: Vec<String>,
    /// The strip of 8 frames, relative to the data folder.
    pub file: String,
    /// Environment steps the rollout took.
    pub steps: u32,
}

/// What a round did (`round.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: usize,
    /// The model the round planned with and fine-tuned from.
    pub model_in: PathBuf,
    /// The model the round produced (the same as `model_in` if there was nothing to train on).
    pub model_out: PathBuf,
    pub attempted: usize,
    pub successes: usize,
    /// Clips trained on: collected in rounds 1..=k, then expert clips.
    pub collected_clips: usize,
    pub expert_clips: usize,
    /// Refinement starts trained on alongside (0: generation only).
    #[serde(default)]
    pub refinement_starts: usize,
    pub train_steps: u64,
    pub final_loss: Option<f32>,
    /// Overall success of each evaluated method (mode name, mean over tasks).
    pub eval_overall: Vec<(String, f64)>,
    pub eval_table: String,
    /// Seconds the process that finished the round spent on it: a round resumed after a stop
    /// counts only its last process.
    pub wall_secs: f64,
}

/// Progress of [`improve`].
#[derive(Debug)]
pub enum ImproveEvent<'a> {
    RoundSkipped(&'a RoundSummary),
    Collecting {
        round: usize,
        done: usize,
        total: usize,
        successes: usize,
    },
    Training {
        round: usize,
        progress: &'a Progress,
    },
    Evaluating {
        round: usize,
        done: usize,
        total: usize,
    },
    RoundDone(&'a RoundSummary),
}

/// A training item: an episode's frames and its instructions.
pub type TrainItem = (Vec<Rgb8Image>, Vec<String>);

/// What every round trains on besides its verified successes.
#[derive(Clone, Copy, Debug)]
pub struct ImproveData<'a> {
    /// Expert clips added to every round's generation data.
    pub expert: &'a [TrainItem],
    /// Refinement starts (`videoagent refine-data`): when given, each round fine-tunes
    /// generation and refinement together (shared weights, paper §6), the verified successes
    /// and expert clips being the plain-generation share of each batch
    /// ([`TrainConfig::plain_share`]).
    pub refinement: &'a [RefineItem],
}

/// A verified success: the rollout as 8 frames, the task's instructions, the steps taken.
struct Verified {
    clip: Vec<Rgb8Image>,
    instructions: Vec<String>,
    steps: u32,
}

/// Plans with refinement from (`task`, `view`, `seed`) and executes; `Some` if the world
/// says the task was solved. Planning and execution problems are failed episodes (`None`).
fn attempt(
    world: &mut dyn crate::env::World,
    spec: &ImproveSpec,
    model: &VideoModel,
    sample: &SampleConfig,
    (task, view, seed): (&str, usize, u64),
) -> Result<Option<Verified>, ImproveError> {
    let first = world.reset(task, view, seed)?;
    let info = world.tasks().into_iter().find(|t| t.name == task);
    let instructions = info.map(|t| t.instructions).unwrap_or_default();
    let instruction = instructions.first().cloned().unwrap_or_default();
    let input = super::refine::RefineInput {
        first: &first,
        task,
        instruction: &instruction,
    };
    let plan = match refined_plan(
        model,
        &spec.eval.perception_critic(),
        &input,
        sample,
        spec.refinements,
        seed,
    ) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!("{task} v{view} s{seed}: {why}");
            return Ok(None);
        }
    };
    let config = ExecuteConfig {
        max_steps: spec.max_steps,
        max_replans: spec.replans,
        ..ExecuteConfig::default()
    };
    let mut replans = 0u64;
    let mut replan = |now: &crate::env::Observation| {
        replans += 1;
        super::eval::model_plan(model, &now.rgb, &instruction, sample, seed + replans)
    };
    let rollout = match execute_plan(world, task, &plan.frames, &config, Some(&mut replan)) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{task} v{view} s{seed}: {e}");
            return Ok(None);
        }
    };
    if !rollout.success || instructions.is_empty() {
        return Ok(None);
    }
    let clip: Vec<Rgb8Image> = clip_indices(rollout.frames.len(), 0)
        .into_iter()
        .filter_map(|k| rollout.frames.get(k).cloned())
        .collect();
    Ok(Some(Verified {
        clip,
        instructions,
        steps: rollout.steps,
    }))
}

pub fn round_dir(out: &Path, round: usize) -> PathBuf {
    out.join(format!("round-{round}"))
}

fn data_error(path: &Path) -> impl FnOnce(String) -> ImproveError + '_ {
    move |reason| ImproveError::Data {
        reason,
        path: path.to_owned(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImproveError> {
    let bytes = std::fs::read(path).map_err(atomic::io_error("cannot read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| data_error(path)(format!("malformed JSON: {e}")))
}

/// Reads the 8 frames of a strip written by [`collect_round`].
fn read_strip(path: &Path) -> Result<Vec<Rgb8Image>, ImproveError> {
    let img = image::open(path)
        .map_err(|e| data_error(path)(format!("cannot read the strip: {e}")))?
        .to_rgb8();
    let side = img.height();
    if side == 0 || img.width() % side != 0 {
        return Err(data_error(path)(format!(
            "a strip of {}x{} is not square frames side by side",
            img.width(),
            img.height()
        )));
    }
    Ok((0..img.width() / side)
        .map(|i| {
            let frame = image::imageops::crop_imm(&img, i * side, 0, side, side).to_image();
            Rgb8Image {
                width: side,
                height: side,
                pixels: frame.into_raw(),
            }
        })
        .collect())
}

/// The verified successes saved in a round's data folder, as training items.
pub fn read_round_data(data_dir: &Path) -> Result<Vec<TrainItem>, ImproveError> {
    let episodes: Vec<CollectedEpisode> = read_json(&data_dir.join("episodes.json"))?;
    episodes
        .into_iter()
        .map(|e| Ok((read_strip(&data_dir.join(&e.file))?, e.instructions)))
        .collect()
}

/// One finished start of a collection (a line of [`COLLECTION_LOG`]): a rerun skips the starts
/// logged there, so a killed collection loses only the attempts that were running.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CollectionLine {
    /// Index into the round's starts.
    start: usize,
    /// Whether an episode ran (`false`: its task already had its successes).
    attempted: bool,
    /// The verified success, its clip already written to `file`.
    kept: Option<CollectedEpisode>,
}

/// The log of finished starts, beside the clips.
const COLLECTION_LOG: &str = "collection.jsonl";

/// The starts a round's collection hands out, in order: (task index, task, view, seed). Tasks
/// take turns, so the workers spread over them. One task after another made every worker start
/// on the same task and overshoot its `successes_per_task` together (stop 13, 16 workers: 39 to
/// 44 attempts for a target of 24).
fn collection_starts(spec: &ImproveSpec, round: usize) -> Vec<(usize, String, usize, u64)> {
    let mut starts = Vec::new();
    for i in 0..spec.episodes_per_task {
        for (t, task) in spec.tasks.iter().enumerate() {
            let view = spec.views[i % spec.views.len().max(1)];
            let seed = spec.first_seed + round as u64 * 100_000 + i as u64;
            starts.push((t, task.clone(), view, seed));
        }
    }
    starts
}

/// Runs refined plans with `model` on fresh starts and keeps the verified successes in
/// `data_dir` (skipped if it already has `episodes.json`; a collection that was stopped
/// continues where it stopped). Returns (attempted, kept).
pub fn collect_round(
    spec: &ImproveSpec,
    round: usize,
    model: &VideoModel,
    data_dir: &Path,
    stop: &AtomicBool,
    on_episode: &(dyn Fn(usize, usize, usize) + Sync),
) -> Result<(usize, Vec<CollectedEpisode>), ImproveError> {
    let index = data_dir.join("episodes.json");
    let attempts_file = data_dir.join(ATTEMPTS_JSON);
    if index.exists() {
        let kept: Vec<CollectedEpisode> = read_json(&index)?;
        // Folders from before the count was recorded made every attempt.
        let attempted = if attempts_file.exists() {
            read_json(&attempts_file)?
        } else {
            spec.tasks.len() * spec.episodes_per_task
        };
        return Ok((attempted, kept));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(atomic::io_error("cannot create data folder", data_dir))?;
    let starts = collection_starts(spec, round);
    let log = JsonLog::<CollectionLine>::open(&data_dir.join(COLLECTION_LOG))?;
    let mut logged = vec![false; starts.len()];
    let target = spec.successes_per_task.unwrap_or(usize::MAX);
    let kept_per_task: Vec<AtomicUsize> = spec.tasks.iter().map(|_| AtomicUsize::new(0)).collect();
    let attempted = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let kept_count = AtomicUsize::new(0);
    let mut restored = Vec::new();
    for line in log.done() {
        let Some(seen) = logged.get_mut(line.start).filter(|seen| !**seen) else {
            continue;
        };
        *seen = true;
        finished.fetch_add(1, Ordering::SeqCst);
        attempted.fetch_add(usize::from(line.attempted), Ordering::SeqCst);
        if let Some(episode) = &line.kept {
            kept_per_task[starts[line.start].0].fetch_add(1, Ordering::SeqCst);
            kept_count.fetch_add(1, Ordering::SeqCst);
            restored.push((line.start, episode.clone()));
        }
    }
    if finished.load(Ordering::SeqCst) > 0 {
        tracing::info!(
            "round {round}: continuing the collection after {} finished starts ({} kept)",
            finished.load(Ordering::SeqCst),
            restored.len()
        );
    }
    let todo: Vec<usize> = (0..starts.len()).filter(|&i| !logged[i]).collect();
    let sample = SampleConfig::ddim(spec.sampler_steps.max(1));
    let next = AtomicUsize::new(0);
    let kept: Mutex<Vec<(usize, CollectedEpisode)>> = Mutex::new(restored);
    let error: Mutex<Option<ImproveError>> = Mutex::new(None);
    let fail = |e: ImproveError| {
        error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        stop.store(true, Ordering::SeqCst);
    };
    let threads = spec.threads.clamp(1, todo.len().max(1));
    let _ops_on_callers = crate::model::parallel::ops_on_callers(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut world = match open_world(&spec.eval.world, spec.eval.world_size) {
                    Ok(w) => w,
                    Err(e) => return fail(e.into()),
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(&i) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let (t, task, view, seed) = &starts[i];
                    // Starts are handed out in order, so a task that has its successes here
                    // has them among starts before this one, which all run to the end.
                    let skip = kept_per_task[*t].load(Ordering::SeqCst) >= target;
                    let episode = if skip {
                        Ok(None)
                    } else {
                        attempted.fetch_add(1, Ordering::SeqCst);
                        attempt(world.as_mut(), spec, model, &sample, (task, *view, *seed))
                    };
                    let kept_episode = match episode {
                        Ok(Some(Verified {
                            clip,
                            instructions,
                            steps,
                        })) => {
                            let file = format!("clip-{i:05}.png");
                            let path = data_dir.join(&file);
                            if let Err(e) = crate::viz::write_png(
                                &path,
                                &crate::viz::grid(&[clip], 0, [0, 0, 0]),
                            ) {
                                return fail(
                                    atomic::io_error("cannot write a clip", &path)(e).into(),
                                );
                            }
                            Some(CollectedEpisode {
                                task: task.clone(),
                                view: *view,
                                seed: *seed,
                                instructions,
                                file,
                                steps,
                            })
                        }
                        Ok(None) => None,
                        Err(e) => return fail(e),
                    };
                    let line = CollectionLine {
                        start: i,
                        attempted: !skip,
                        kept: kept_episode,
                    };
                    if let Err(e) = log.append(&line) {
                        return fail(e.into());
                    }
                    if let Some(episode) = line.kept {
                        kept_per_task[*t].fetch_add(1, Ordering::SeqCst);
                        kept_count.fetch_add(1, Ordering::SeqCst);
                        kept.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, episode));
                    }
                    let done = finished.fetch_add(1, Ordering::SeqCst) + 1;
                    on_episode(done, starts.len(), kept_count.load(Ordering::SeqCst));
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if finished.load(Ordering::SeqCst) < starts.len() {
        return Err(ImproveError::Stopped { round });
    }
    let mut kept = kept.into_inner().unwrap_or_else(|p| p.into_inner());
    kept.sort_by_key(|k| k.0);
    // Attempts already running when their task reached its target may add more: the first
    // ones in start order are kept, the same set whatever the threads' timing.
    let (kept, over_target) = first_per_key(kept, |k| starts[k.0].0, target);
    let attempted = attempted.load(Ordering::SeqCst);
    atomic::write_json(&attempts_file, &attempted).map_err(atomic::io_error(
        "cannot write the attempt count",
        &attempts_file,
    ))?;
    let index_rows: Vec<CollectedEpisode> = kept.into_iter().map(|(_, e)| e).collect();
    // The index is written last: it marks the data as complete.
    atomic::write_json(&index, &index_rows)
        .map_err(atomic::io_error("cannot write the data index", &index))?;
    remove_clips(data_dir, over_target.iter().map(|(_, e)| e.file.as_str()));
    Ok((attempted, index_rows))
}

/// Deletes clips the index does not list, so the data folder holds what is trained on. A clip
/// that cannot be deleted only costs disk space: it is logged, not an error.
fn remove_clips<'a>(data_dir: &Path, files: impl Iterator<Item = &'a str>) {
    for file in files {
        let path = data_dir.join(file);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("cannot delete {}: {e}", path.display());
            }
            _ => {}
        }
    }
}

/// The attempts a collection made (`attempts.json`, beside `episodes.json`).
const ATTEMPTS_JSON: &str = "attempts.json";

/// The first `limit` items of each key, in their order, and the others.
fn first_per_key<T, K: std::hash::Hash + Eq>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
    limit: usize,
) -> (Vec<T>, Vec<T>) {
    let mut seen = std::collections::HashMap::<K, usize>::new();
    items.into_iter().partition(|item| {
        let n = seen.entry(key(item)).or_default();
        *n += 1;
        *n <= limit
    })
}

/// Where a round's work runs. A machine with many cores and one GPU plans on the cores (each
/// worker thread its own episodes) and fine-tunes on the GPU.
#[derive(Clone, Debug)]
pub struct ImproveDevices {
    /// Collection and evaluation.
    pub plan: Device,
    /// Fine-tuning.
    pub train: Device,
}

impl ImproveDevices {
    /// Everything on `device`.
    pub fn one(device: &Device) -> Self {
        Self {
            plan: device.clone(),
            train: device.clone(),
        }
    }
}

/// Runs (or resumes) `spec.rounds` rounds from `base_model` into `out`; `data` is added to
/// every round's training data. Returns every round's summary.
pub fn improve(
    spec: &ImproveSpec,
    base_model: &Path,
    data: ImproveData<'_>,
    out: &Path,
    devices: &ImproveDevices,
    stop: &AtomicBool,
    on_event: &(dyn Fn(ImproveEvent<'_>) + Sync),
) -> Result<Vec<RoundSummary>, ImproveError> {
    let mut summaries = Vec::new();
    let mut model_in = base_model.to_owned();
    for round in 1..=spec.rounds {
        let dir = round_dir(out, round);
        let summary_path = dir.join("round.json");
        if summary_path.exists() {
            let s: RoundSummary = read_json(&summary_path)?;
            on_event(ImproveEvent::RoundSkipped(&s));
            model_in = s.model_out.clone();
            summaries.push(s);
            continue;
        }
        let t0 = Instant::now();
        let model = VideoModel::load(&model_in, &devices.plan)?;
        let (attempted, kept) = collect_round(
            spec,
            round,
            &model,
            &dir.join("data"),
            stop,
            &|done, total, successes| {
                on_event(ImproveEvent::Collecting {
                    round,
                    done,
                    total,
                    successes,
                })
            },
        )?;
        // Everything verified so far, then the expert clips.
        let mut collected = Vec::new();
        for r in 1..=round {
            collected.extend(read_round_data(&round_dir(out, r).join("data"))?);
        }
        let collected_clips = collected.len();
        // Drawing is uniform over items: a clip listed k times is drawn k times as often.
        let mut items: Vec<_> = std::iter::repeat_n(collected, spec.collected_weight.max(1))
            .flatten()
            .collect();
        items.extend(data.expert.iter().cloned());
        let model_dir = dir.join("model");
        let (model_out, final_loss) = if items.is_empty() {
            tracing::warn!(
                "round {round}: no verified success and no expert data; the model is unchanged"
            );
            (model_in.clone(), None)
        } else {
            let size = model.config.frame_size();
            let plain = TrainData::from_frames(size, items);
            let train_set: Box<dyn TrainSet> = if data.refinement.is_empty() {
                Box::new(plain)
            } else {
                Box::new(RefineTrainData::new(
                    size,
                    data.refinement.to_vec(),
                    Some(plain),
                )?)
            };
            let config = model.config.clone();
            drop(model);
            let mut trainer = if model_dir.join(crate::model::train::STATE_JSON).exists() {
                Trainer::resume(&model_dir, Some(spec.train.steps), &devices.train)?
            } else {
                Trainer::new(
                    config,
                    spec.train.clone(),
                    &model_dir,
                    Some(&model_in),
                    &devices.train,
                )?
            };
            let outcome = trainer.train(train_set.as_ref(), |p| {
                on_event(ImproveEvent::Training { round, progress: p });
                if stop.load(Ordering::SeqCst) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if outcome == crate::model::train::TrainOutcome::Stopped {
                return Err(ImproveError::Stopped { round });
            }
            let last = trainer.loss_log().last().map(|l| l.1);
            (model_dir.clone(), last)
        };

        // Evaluate the round's model.
        let mut eval = spec.eval.clone();
        eval.model_label = model_out.display().to_string();
        let model = VideoModel::load(&model_out, &devices.plan)?;
        let eval_out = dir.join("eval.json");
        let log = ResultLog::open(&super::eval::log_path(&eval_out))?;
        let control = EvalControl::default();
        let total = eval.episodes().len();
        let done = AtomicUsize::new(0);
        let te = Instant::now();
        let run = run_eval(&eval, Some(&model), &log, &control, &|_| {
            let d = done.fetch_add(1, Ordering::SeqCst) + 1;
            on_event(ImproveEvent::Evaluating {
                round,
                done: d,
                total,
            });
            if stop.load(Ordering::SeqCst) {
                control.stop.store(true, Ordering::SeqCst);
            }
        })?;
        if !run.complete {
            return Err(ImproveError::Stopped { round });
        }
        let table = EvalTable::from_results(&eval, &run.results);
        let markdown = table.to_markdown();
        let report = EvalReport {
            spec: eval,
            table: table.clone(),
            complete: run.complete,
            ran: run.ran,
            reused: run.reused,
            wall_secs: te.elapsed().as_secs_f64(),
            episodes: run.results,
        };
        write_report(&eval_out, &report)?;
        let md = dir.join("eval.md");
        atomic::write_file(&md, markdown.as_bytes())
            .map_err(atomic::io_error("cannot write the table", &md))?;
        let trained = model_out != model_in;
        let summary = RoundSummary {
            round,
            model_in: model_in.clone(),
            model_out: model_out.clone(),
            attempted,
            successes: kept.len(),
            collected_clips,
            expert_clips: data.expert.len(),
            refinement_starts: if trained { data.refinement.len() } else { 0 },
            train_steps: if trained { spec.train.steps } else { 0 },
            final_loss,
            eval_overall: table
                .rows
                .iter()
                .map(|r| (r.mode.name().to_owned(), r.overall))
                .collect(),
            eval_table: markdown,
            wall_secs: t0.elapsed().as_secs_f64(),
        };
        atomic::write_json(&summary_path, &summary).map_err(atomic::io_error(
            "cannot write the round summary",
            &summary_path,
        ))?;
        on_event(ImproveEvent::RoundDone(&summary));
        model_in = model_out;
        summaries.push(summary);
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::eval::Mode;

    #[test]
    fn each_task_keeps_its_first_successes_in_start_order() {
        let kept = first_per_key(
            vec![
                ("push", 1),
                ("hammer", 2),
                ("push", 3),
                ("push", 4),
                ("hammer", 5),
            ],
            |k| k.0,
            2,
        );
        assert_eq!(
            kept,
            (
                vec![("push", 1), ("hammer", 2), ("push", 3), ("hammer", 5)],
                vec![("push", 4)]
            )
        );
        assert_eq!(
            first_per_key(vec![("push", 1)], |k| k.0, 0),
            (vec![], vec![("push", 1)])
        );
    }

    #[test]
    fn clips_over_the_target_are_deleted_and_the_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["clip-00001.png", "clip-00002.png"] {
            std::fs::write(dir.path().join(file), b"png").expect("write");
        }
        remove_clips(dir.path(), ["clip-00002.png", "clip-00009.png"].into_iter());
        assert!(dir.path().join("clip-00001.png").exists());
        assert!(!dir.path().join("clip-00002.png").exists());
    }

    /// Two button-press attempts with short plans and episodes, two threads.
    fn tiny_spec() -> ImproveSpec {
        let mut eval = EvalSpec::new(
            vec!["button-press".into()],
            vec![0],
            1,
            vec![Mode::Baseline],
        );
        eval.threads = 2;
        eval.max_steps = Some(100);
        ImproveSpec {
            tasks: vec!["button-press".into()],
            views: vec![0, 1],
            rounds: 1,
            episodes_per_task: 2,
            refinements: 1,
            sampler_steps: 4,
            train: TrainConfig {
                steps: 2,
                batch: 2,
                checkpoint_every: 1000,
                ..TrainConfig::default()
            },
            eval,
            first_seed: IMPROVE_SEED,
            max_steps: Some(100),
            replans: 1,
            collected_weight: 2,
            successes_per_task: None,
            threads: 2,
        }
    }

    #[test]
    fn tasks_take_turns_and_keep_their_seeds() {
        let spec = ImproveSpec {
            tasks: vec!["push".into(), "hammer".into()],
            episodes_per_task: 3,
            ..tiny_spec()
        };
        let starts = collection_starts(&spec, 1);
        let order: Vec<(&str, u64)> = starts
            .iter()
            .map(|(_, task, _, seed)| (task.as_str(), seed - IMPROVE_SEED - 100_000))
            .collect();
        assert_eq!(
            order,
            vec![
                ("push", 0),
                ("hammer", 0),
                ("push", 1),
                ("hammer", 1),
                ("push", 2),
                ("hammer", 2)
            ]
        );
        // Views alternate per seed, the same for every task.
        assert_eq!(starts[0].2, starts[1].2);
        assert_ne!(starts[0].2, starts[2].2);
    }

    /// A collection stopped after its first finished start continues with the others: the
    /// finished one is not run again and its result is kept.
    #[test]
    fn a_stopped_collection_continues_where_it_stopped() {
        let spec = ImproveSpec {
            episodes_per_task: 3,
            threads: 1,
            ..tiny_spec()
        };
        let model = VideoModel::load(&crate::model::pipeline::default_model_dir(), &Device::Cpu)
            .expect("shipped model");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let stop = AtomicBool::new(false);
        let first = collect_round(&spec, 1, &model, &data, &stop, &|_, _, _| {
            stop.store(true, Ordering::SeqCst)
        });
        assert!(
            matches!(first, Err(ImproveError::Stopped { round: 1 })),
            "{first:?}"
        );
        assert!(!data.join("episodes.json").exists());
        let log = JsonLog::<CollectionLine>::open(&data.join(COLLECTION_LOG)).expect("log");
        assert_eq!(log.done().len(), 1);
        let kept_before = log.done()[0].kept.clone();
        drop(log);

        let stop = AtomicBool::new(false);
        let runs = Mutex::new(Vec::new());
        let (attempted, kept) = collect_round(&spec, 1, &model, &data, &stop, &|done, total, _| {
            runs.lock().expect("lock").push((done, total))
        })
        .expect("continued");
        assert_eq!(*runs.lock().expect("lock"), vec![(2, 3), (3, 3)]);
        assert_eq!(attempted, 3);
        if let Some(k) = kept_before {
            assert_eq!(kept.first().map(|e| &e.file), Some(&k.file));
        }
        assert_eq!(read_round_data(&data).expect("data").len(), kept.len());
    }

    /// One tiny round on the CPU: collection, fine-tuning from the shipped model (with one
    /// expert clip, so there is always data), evaluation; a rerun skips the finished round.
    #[test]
    fn a_round_runs_and_a_rerun_skips_it() {
        let base = crate::model::pipeline::default_model_dir();
        let mut world = crate::env::tabletop::Tabletop::new(64).expect("world");
        let demo =
            crate::env::demo::record_expert(&mut world, "button-press", 0, 3).expect("expert");
        let clip: Vec<Rgb8Image> = clip_indices(demo.frames.len(), 0)
            .into_iter()
            .filter_map(|i| demo.frames.get(i).cloned())
            .collect();
        // One refinement start: the expert's clip refined from its own (as if critiqued) plan,
        // so the round fine-tunes generation and refinement together.
        let refinement = vec![RefineItem {
            truth: clip.clone(),
            instruction: "press the button".to_owned(),
            generations: vec![(
                clip[1..].to_vec(),
                "press the button. Task incomplete.".to_owned(),
            )],
        }];
        let expert = vec![(clip, vec!["press the button".to_owned()])];
        let data = ImproveData {
            expert: &expert,
            refinement: &refinement,
        };
        let spec = tiny_spec();
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = AtomicBool::new(false);
        let events = Mutex::new(Vec::new());
        let on_event = |e: ImproveEvent<'_>| {
            let name = match e {
                ImproveEvent::RoundSkipped(_) => "skipped",
                ImproveEvent::Collecting { .. } => "collecting",
                ImproveEvent::Training { .. } => "training",
                ImproveEvent::Evaluating { .. } => "evaluating",
                ImproveEvent::RoundDone(_) => "done",
            };
            events.lock().expect("lock").push(name);
        };
        let device = Device::Cpu;
        let run = || {
            improve(
                &spec,
                &base,
                data,
                dir.path(),
                &ImproveDevices::one(&device),
                &stop,
                &on_event,
            )
        };
        let s = run().expect("improve");
        assert_eq!(s.len(), 1);
        let r = &s[0];
        assert_eq!(r.attempted, 2);
        assert_eq!(r.expert_clips, 1);
        assert_eq!(r.refinement_starts, 1);
        assert_eq!(r.collected_clips, r.successes);
        assert_eq!(r.model_out, round_dir(dir.path(), 1).join("model"));
        assert_eq!(r.train_steps, 2);
        assert!(r.final_loss.is_some_and(f32::is_finite));
        // The round's artefacts are all there and the model loads.
        let round = round_dir(dir.path(), 1);
        for f in [
            "round.json",
            "eval.json",
            "eval.jsonl",
            "eval.png",
            "eval.md",
            "data/episodes.json",
        ] {
            assert!(round.join(f).exists(), "{f} missing");
        }
        assert_eq!(
            read_round_data(&round.join("data")).expect("data").len(),
            r.successes
        );
        VideoModel::load(&r.model_out, &device).expect("round model loads");
        let seen = events.lock().expect("lock").clone();
        assert!(
            seen.contains(&"training") && seen.contains(&"done"),
            "{seen:?}"
        );

        // A rerun skips the finished round: nothing is collected, trained or evaluated.
        events.lock().expect("lock").clear();
        let again = run().expect("rerun");
        assert_eq!(again.len(), 1);
        assert_eq!(*events.lock().expect("lock"), vec!["skipped"]);
        assert_eq!(again[0].eval_table, r.eval_table);
    }
}
