//! Background work for the studio: each job runs on its own thread and reports over a bounded
//! channel; the UI thread drains the channel once per frame and never waits. Progress messages
//! are dropped when the channel is full (the next one supersedes them); results never are.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::agent::execution_critic::ExecutionCritic;
use crate::agent::model_eval::ComparedStart;
use crate::agent::refine::{
    OnUnavailable, RefineInput, RefineIteration, RefineProgress, RefineSettings, StopReason, refine,
};
use crate::critic::{
    ChatClient, ChatSettings, Critic, FindingKind, FindingScope, LocalVlmCritic, NoCritic,
    PerceptionCritic, VlmCritic,
};
use crate::env::{self, Rgb8Image};
use crate::model::{SampleConfig, VideoModel};
use crate::store::export::{VideoFormat, write_video};

use super::state::{Critique, IterationView, PlanId, PlanOrigin, PlanView};

/// The side of the world frames the studio renders (plans are at the model's size).
pub const WORLD_SIZE: u32 = 64;

/// Which critic judges each iteration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CriticChoice {
    /// The built-in perception critic (offline).
    #[default]
    Perception,
    /// A VLM over an OpenAI-compatible API (see [`VlmEndpoint`]).
    Vlm,
    /// The local VLM (Moondream2 in process), when the studio was given its folder.
    Local,
    /// The paper's environment feedback: each plan is executed from its start in a copy of
    /// the world and accepted iff the task succeeds (world starts only).
    Execution,
    /// No critic: one plan, never refined.
    None,
}

impl CriticChoice {
    pub const ALL: [CriticChoice; 5] = [
        CriticChoice::Perception,
        CriticChoice::Vlm,
        CriticChoice::Local,
        CriticChoice::Execution,
        CriticChoice::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CriticChoice::Perception => "perception",
            CriticChoice::Vlm => "vlm (OpenAI API)",
            CriticChoice::Local => "local",
            CriticChoice::Execution => "execution (runs the plan)",
            CriticChoice::None => "none",
        }
    }

    /// The critics the picker offers: `local` only when a local VLM is configured.
    pub fn offered(local_configured: bool) -> impl Iterator<Item = CriticChoice> {
        Self::ALL
            .into_iter()
            .filter(move |c| *c != CriticChoice::Local || local_configured)
    }
}

/// The local VLM critic of the studio: loaded by the first generation that asks for it, on
/// that job's thread (the UI never waits for its weights), then kept for the next ones. A
/// failed load is reported and tried again next time.
#[derive(Clone, Debug)]
pub struct LocalCritic {
    dir: PathBuf,
    loaded: Arc<Mutex<Option<Arc<LocalVlmCritic>>>>,
}

impl LocalCritic {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            loaded: Arc::default(),
        }
    }

    /// The critic, loading it onto `device` the first time.
    fn get(&self, device: &candle_core::Device) -> Result<Arc<LocalVlmCritic>, String> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(critic) = loaded.as_ref() {
            return Ok(critic.clone());
        }
        let critic = Arc::new(LocalVlmCritic::load(&self.dir, device).map_err(|e| e.to_string())?);
        *loaded = Some(critic.clone());
        Ok(critic)
    }
}

/// Wakes the UI when a message arrives (egui's `request_repaint`).
pub type Repaint = Arc<dyn Fn() + Send + Sync>;

const CHANNEL_CAPACITY: usize = 64;

/// The worker's end of a job.
pub struct Reporter<E> {
    tx: SyncSender<E>,
    cancel: Arc<AtomicBool>,
    repaint: Repaint,
}

impl<E> Reporter<E> {
    /// Delivers a result; waits while the channel is full. `false` once the UI is gone.
    pub fn send(&self, event: E) -> bool {
        let delivered = self.tx.send(event).is_ok();
        (self.repaint)();
        delivered
    }

    /// Delivers a progress update unless the channel is full.
    pub fn progress(&self, event: E) {
        match self.tx.try_send(event) {
            Ok(()) => (self.repaint)(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// The UI's end of a job.
pub struct Job<E> {
    pub name: String,
    pub started: Instant,
    rx: Receiver<E>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl<E: Send + 'static> Job<E> {
    /// Runs `work` on a new thread.
    pub fn spawn(
        name: impl Into<String>,
        repaint: Repaint,
        work: impl FnOnce(Reporter<E>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let cancel = Arc::new(AtomicBool::new(false));
        let reporter = Reporter {
            tx,
            cancel: cancel.clone(),
            repaint,
        };
        std::thread::spawn(move || work(reporter));
        Self {
            name: name.into(),
            started: Instant::now(),
            rx,
            cancel,
            finished: false,
        }
    }

    /// Every message that has arrived, without waiting.
    pub fn drain(&mut self) -> Vec<E> {
        let mut events = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(e) => events.push(e),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.finished = true;
                    break;
                }
            }
        }
        events
    }

    /// The worker has ended and every message was drained.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelling(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    pub id: PlanId,
    pub origin: PlanOrigin,
    /// Empty: the task's own instruction.
    pub instruction: String,
    pub max_refinements: usize,
    pub critic: CriticChoice,
    /// The kinds of finding that make the perception critic reject.
    pub rejects_on: Vec<FindingKind>,
    /// Whose glitches make the perception critic reject.
    pub scope: FindingScope,
    /// Where the VLM critic is served.
    pub vlm: VlmEndpoint,
    pub sampler_steps: usize,
    pub guidance: f64,
    pub sample_seed: u64,
    /// A first frame the user opened instead of a world start (no critic can judge it).
    pub image: Option<Rgb8Image>,
}

/// Messages of a generation job.
#[derive(Debug)]
pub enum GenerateEvent {
    /// The start frame is known: the plan exists (without iterations yet).
    Started(Box<PlanView>),
    Step {
        iteration: usize,
        step: usize,
        total: usize,
    },
    Iteration(Box<IterationView>),
    Finished {
        chosen: usize,
    },
    Failed(String),
    /// Something went wrong that does not stop the plan (e.g. the store could not save it).
    Warning(String),
    Cancelled,
}

/// Resets the world to the request's start and generates the plan (`local`: the local VLM
/// critic, if the studio has one).
pub fn generate(
    model: Arc<VideoModel>,
    store: Option<Arc<crate::store::db::Store>>,
    local: Option<LocalCritic>,
    request: GenerateRequest,
    report: Reporter<GenerateEvent>,
) {
    match run_generate(&model, store.as_deref(), local.as_ref(), &request, &report) {
        Ok(Some(chosen)) => report.send(GenerateEvent::Finished { chosen }),
        Ok(None) => report.send(GenerateEvent::Cancelled),
        Err(message) => report.send(GenerateEvent::Failed(message)),
    };
}

/// An OpenAI-compatible chat-completions server and model (the key comes from
/// `$OPENAI_API_KEY` only, so it is never shown or saved).
#[derive(Clone, Debug, PartialEq)]
pub struct VlmEndpoint {
    pub base_url: String,
    pub model: String,
}

impl Default for VlmEndpoint {
    /// `$OPENAI_BASE_URL` and `$VIDEOAGENT_VLM_MODEL` (default `gpt-4o`).
    fn default() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Self {
            base_url: var("OPENAI_BASE_URL").unwrap_or_default(),
            model: var("VIDEOAGENT_VLM_MODEL").unwrap_or_else(|| "gpt-4o".to_owned()),
        }
    }
}

impl CriticChoice {
    /// The critic itself; a VLM that is not configured or a local one that cannot load is
    /// an error the user sees.
    fn build(
        self,
        request: &GenerateRequest,
        local: Option<&LocalCritic>,
        device: &candle_core::Device,
    ) -> Result<Arc<dyn Critic>, String> {
        let vlm = &request.vlm;
        Ok(match self {
            CriticChoice::Perception => Arc::new(PerceptionCritic {
                rejects_on: request.rejects_on.clone(),
                scope: request.scope,
                ..PerceptionCritic::default()
            }),
            CriticChoice::Vlm => {
                let url = Some(vlm.base_url.as_str()).filter(|u| !u.trim().is_empty());
                let settings = ChatSettings::from_env(url, &vlm.model)
                    .map_err(|e| format!("the VLM critic is not set up: {e}"))?;
                Arc::new(VlmCritic::new(ChatClient::new(settings), None))
            }
            CriticChoice::Local => local
                .ok_or("no local critic: start the studio with --critic-model DIR")?
                .get(device)
                .map_err(|e| format!("the local critic: {e}"))?,
            CriticChoice::Execution => {
                if request.image.is_some() {
                    return Err(
                        "the execution critic runs plans in the world: pick a world start, not an opened image"
                            .into(),
                    );
                }
                let o = &request.origin;
                Arc::new(
                    ExecutionCritic::new(&o.world, WORLD_SIZE, o.view, o.seed)
                        .map_err(|e| format!("the execution critic: {e}"))?,
                )
            }
            CriticChoice::None => Arc::new(NoCritic),
        })
    }
}

fn run_generate(
    model: &VideoModel,
    store: Option<&crate::store::db::Store>,
    local: Option<&LocalCritic>,
    request: &GenerateRequest,
    report: &Reporter<GenerateEvent>,
) -> Result<Option<usize>, String> {
    // The critic first: a critic that cannot be made leaves no empty plan behind.
    let critic = request.critic.build(request, local, &model.device)?;
    let origin = &request.origin;
    let (first, instruction) = match &request.image {
        Some(image) => {
            if request.instruction.trim().is_empty() {
                return Err("type an instruction for the opened image".into());
            }
            (
                crate::env::Observation::from_image(image.clone()),
                request.instruction.clone(),
            )
        }
        None => {
            let mut world =
                env::open_world(&origin.world, WORLD_SIZE).map_err(|e| e.to_string())?;
            let task = world
                .tasks()
                .into_iter()
                .find(|t| t.name == origin.task)
                .ok_or_else(|| format!("unknown task {}", origin.task))?;
            let instruction = if request.instruction.trim().is_empty() {
                task.instruction().to_owned()
            } else {
                request.instruction.clone()
            };
            let first = world
                .reset(&origin.task, origin.view, origin.seed)
                .map_err(|e| e.to_string())?;
            (first, instruction)
        }
    };
    let size = model.config.frame_size() as u32;
    let start_frame = crate::model::pipeline::resize(&first.rgb, size);
    let mut plan = PlanView {
        id: request.id,
        origin: origin.clone(),
        instruction: instruction.clone(),
        iterations: Vec::new(),
        chosen: 0,
        rollout: None,
        created_ms: super::state::now_ms(),
        labelled_by: Default::default(),
    };
    let stored =
        store.and_then(
            |s| match super::persist::add_plan(s, &plan, start_frame.clone()) {
                Ok(id) => Some((s, id)),
                Err(e) => {
                    report.send(GenerateEvent::Warning(format!(
                        "the plan is not stored: {e}"
                    )));
                    None
                }
            },
        );
    if let Some((_, id)) = stored {
        plan.id = super::persist::studio_id(id);
    }
    report.send(GenerateEvent::Started(Box::new(plan)));
    let settings = RefineSettings {
        max_refinements: request.max_refinements,
        sample: SampleConfig {
            guidance_weight: request.guidance,
            ..SampleConfig::ddim(request.sampler_steps.max(1))
        },
        seed: request.sample_seed,
        on_unavailable: OnUnavailable::Stop,
    };
    let input = RefineInput {
        first: &first,
        task: &origin.task,
        instruction: &instruction,
    };
    let outcome = refine(model, critic.as_ref(), &input, &settings, &mut |progress| {
        match progress {
            RefineProgress::Step {
                iteration,
                step,
                total,
            } => report.progress(GenerateEvent::Step {
                iteration,
                step,
                total,
            }),
            RefineProgress::Iteration(done) => {
                let iteration = iteration_view(critic.name(), &start_frame, done);
                if let Some((store, id)) = stored
                    && let Err(e) = super::persist::add_iteration(store, id, &iteration)
                {
                    report.send(GenerateEvent::Warning(format!(
                        "an iteration is not stored: {e}"
                    )));
                }
                report.send(GenerateEvent::Iteration(Box::new(iteration)));
            }
        }
        if report.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|e| format!("sampling failed: {e}"))?;
    if outcome.stop == StopReason::Cancelled {
        return Ok(None);
    }
    Ok(outcome.chosen)
}

/// The studio's view of one reviewed iteration (start frame first).
fn iteration_view(critic: &str, start: &Rgb8Image, done: &RefineIteration) -> IterationView {
    let review = &done.review;
    let mut frames = vec![start.clone()];
    frames.extend(done.frames.iter().cloned());
    IterationView {
        frames,
        critique: Some(Critique::from_review(critic, review)),
        sample_ms: done.sample_ms,
    }
}

/// What to fine-tune on: the curated plans' chosen iterations.
pub struct FineTuneRequest {
    pub base: Arc<VideoModel>,
    pub out_dir: PathBuf,
    pub steps: u64,
    pub batch: usize,
    /// (start frame + plan frames, instruction) per curated plan.
    pub clips: Vec<(Vec<Rgb8Image>, String)>,
}

/// Messages of a fine-tuning job.
#[derive(Debug)]
pub enum FineTuneEvent {
    Step {
        step: u64,
        total: u64,
        loss: f32,
        steps_per_sec: f64,
    },
    /// The run folder holds the fine-tuned model (also after a cancel: it is saved).
    Done {
        model_dir: PathBuf,
        stopped: bool,
    },
    Failed(String),
}

/// Fine-tunes a copy of the base model on the clips with the library's trainer (resumable
/// run folder, checkpoint on cancel).
pub fn fine_tune(request: FineTuneRequest, report: Reporter<FineTuneEvent>) {
    use crate::model::train::{TrainConfig, TrainData, TrainOutcome, Trainer};
    let run = || -> Result<bool, String> {
        let base = &request.base;
        let config = TrainConfig {
            steps: request.steps,
            batch: request.batch,
            checkpoint_every: request.steps.max(1),
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(
            base.config.clone(),
            config,
            &request.out_dir,
            Some(&base.source),
            &base.device,
        )
        .map_err(|e| format!("cannot start fine-tuning: {e}"))?;
        let items = request
            .clips
            .iter()
            .map(|(frames, instruction)| (frames.clone(), vec![instruction.clone()]))
            .collect();
        let data = TrainData::from_frames(base.config.frame_size(), items);
        let outcome = trainer
            .train(&data, |p| {
                report.progress(FineTuneEvent::Step {
                    step: p.step,
                    total: p.total,
                    loss: p.loss,
                    steps_per_sec: p.steps_per_sec,
                });
                if report.is_cancelled() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(|e| format!("fine-tuning failed: {e}"))?;
        Ok(outcome == TrainOutcome::Stopped)
    };
    match run() {
        Ok(stopped) => report.send(FineTuneEvent::Done {
            model_dir: request.out_dir.clone(),
            stopped,
        }),
        Err(e) => report.send(FineTuneEvent::Failed(e)),
    };
}

/// Messages of an execution job.
#[derive(Debug)]
pub enum ExecuteEvent {
    Done(PlanId, Box<super::state::RolloutView>),
    Failed(String),
}

/// Resets the world to the plan's start and executes `frames` (start frame first) through
/// flow -> subgoals -> controller (in 3D for MetaWorld, whose path records no frames: the
/// rollout row then shows the outcome only).
pub fn execute(
    plan: PlanId,
    origin: PlanOrigin,
    frames: Vec<Rgb8Image>,
    report: Reporter<ExecuteEvent>,
) {
    let run = || -> Result<super::state::RolloutView, String> {
        let mut world = env::open_world(&origin.world, WORLD_SIZE).map_err(|e| e.to_string())?;
        world
            .reset(&origin.task, origin.view, origin.seed)
            .map_err(|e| e.to_string())?;
        let rollout = crate::agent::execution::execute_in_world(
            world.as_mut(),
            &origin.task,
            &frames,
            crate::agent::execution::ExecutionLimits::default(),
            None,
        )
        .map_err(|e| format!("execution failed: {e}"))?;
        Ok(super::state::RolloutView {
            frames: rollout.frames,
            success: rollout.success,
            steps: rollout.steps as usize,
        })
    };
    match run() {
        Ok(rollout) => report.send(ExecuteEvent::Done(plan, Box::new(rollout))),
        Err(e) => report.send(ExecuteEvent::Failed(e)),
    };
}

/// What to compare after a fine-tune: the model in use against the fine-tuned one.
pub struct CompareRequest {
    pub before: Arc<VideoModel>,
    pub after_dir: PathBuf,
    /// Held-out `(task, view, seed)` starts.
    pub starts: Vec<(String, usize, u64)>,
    pub sampler_steps: usize,
}

/// Messages of a model comparison.
#[derive(Debug)]
pub enum CompareEvent {
    Progress { done: usize, total: usize },
    Done(Vec<ComparedStart>),
    Failed(String),
}

/// Plans the same held-out starts with the model before and after a fine-tune and scores both
/// against the expert (the library's `compare_models`); Cancel stops it between starts.
pub fn compare_models(request: CompareRequest, report: Reporter<CompareEvent>) {
    let run = || -> Result<Option<Vec<ComparedStart>>, String> {
        let before = &request.before;
        let after = VideoModel::load(&request.after_dir, &before.device).map_err(|e| {
            format!(
                "cannot load the fine-tuned model in {}: {e}",
                request.after_dir.display()
            )
        })?;
        let mut world = env::open_world("tabletop", WORLD_SIZE).map_err(|e| e.to_string())?;
        crate::agent::model_eval::compare_models(
            before,
            &after,
            world.as_mut(),
            &request.starts,
            &SampleConfig::ddim(request.sampler_steps.max(1)),
            |done, total| {
                report.progress(CompareEvent::Progress { done, total });
                if report.is_cancelled() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .map_err(|e| format!("comparing the models failed: {e}"))
    };
    match run() {
        Ok(Some(starts)) => report.send(CompareEvent::Done(starts)),
        Ok(None) => true,
        Err(e) => report.send(CompareEvent::Failed(e)),
    };
}

/// Writes `rows` (one frame sequence per iteration) as `format` to `path` on a worker thread:
/// encoding a GIF or running ffmpeg takes long enough to stall the UI.
pub fn export(
    format: VideoFormat,
    rows: Vec<Vec<Rgb8Image>>,
    path: PathBuf,
    report: Reporter<Result<PathBuf, String>>,
) {
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| format!("cannot create the folder of {}: {e}", path.display()))
        .and_then(|()| {
            write_video(format, &rows, &path)
                .map_err(|e| format!("cannot export {}: {e}", path.display()))
        });
    report.send(result.map(|()| path));
}

/// Loads a model folder on a worker thread (the studio shows the UI meanwhile).
pub fn load_model(
    dir: PathBuf,
    device: String,
) -> poll_promise::Promise<Result<(Arc<VideoModel>, String), String>> {
    poll_promise::Promise::spawn_thread("load model", move || {
        let (device, note) =
            crate::model::device::select_device(&device).map_err(|e| e.to_string())?;
        let model = VideoModel::load(&dir, &device)
            .map_err(|e| format!("cannot load the model in {}: {e}", dir.display()))?;
        Ok((Arc::new(model), note))
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::critic::write_tiny_moondream;
    use crate::model::{ModelConfig, UNetConfig};

    fn no_repaint() -> Repaint {
        Arc::new(|| {})
    }

    #[test]
    fn results_arrive_and_the_job_finishes() {
        let mut job = Job::spawn("count", no_repaint(), |r: Reporter<u32>| {
            for i in 0..200 {
                r.send(i);
            }
        });
        let mut got = Vec::new();
        while !job.is_finished() {
            got.extend(job.drain());
            std::thread::yield_now();
        }
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "no result is dropped");
    }

    #[test]
    fn cancel_reaches_the_worker() {
        let mut job = Job::spawn("spin", no_repaint(), |r: Reporter<&'static str>| {
            while !r.is_cancelled() {
                std::thread::yield_now();
            }
            r.send("stopped");
        });
        job.cancel();
        let mut got = Vec::new();
        while !job.is_finished() {
            got.extend(job.drain());
        }
        assert_eq!(got, vec!["stopped"]);
    }

    #[test]
    fn the_picker_offers_local_only_when_configured() {
        let without: Vec<_> = CriticChoice::offered(false).collect();
        assert_eq!(
            without,
            vec![
                CriticChoice::Perception,
                CriticChoice::Vlm,
                CriticChoice::Execution,
                CriticChoice::None
            ]
        );
        assert!(CriticChoice::offered(true).any(|c| c == CriticChoice::Local));
    }

    fn tiny_model() -> Arc<VideoModel> {
        let varmap = VarMap::new();
        let cfg = ModelConfig::new(UNetConfig::tiny(), "tabletop");
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Arc::new(VideoModel::build(cfg, &vb, &Device::Cpu).expect("tiny model"))
    }

    /// Runs one generation to its end and returns its events.
    fn run(local: Option<LocalCritic>) -> Vec<GenerateEvent> {
        let request = GenerateRequest {
            id: PlanId(1),
            origin: PlanOrigin {
                world: "tabletop".into(),
                task: "push".into(),
                view: 0,
                seed: 3,
            },
            instruction: String::new(),
            max_refinements: 1,
            critic: CriticChoice::Local,
            rejects_on: FindingKind::ALL.to_vec(),
            scope: FindingScope::default(),
            vlm: VlmEndpoint::default(),
            sampler_steps: 2,
            guidance: 0.0,
            sample_seed: 3,
            image: None,
        };
        let model = tiny_model();
        let mut job = Job::spawn("generate", no_repaint(), move |report| {
            generate(model, None, local, request, report)
        });
        let mut events = Vec::new();
        while !job.is_finished() {
            events.extend(job.drain());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        events.extend(job.drain());
        events
    }

    #[test]
    fn the_local_critic_loads_on_the_job_thread_and_reviews_every_plan() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_tiny_moondream(dir.path());
        let local = LocalCritic::new(dir.path().to_owned());
        let events = run(Some(local.clone()));
        let critiques: Vec<&Critique> = events
            .iter()
            .filter_map(|e| match e {
                GenerateEvent::Iteration(it) => it.critique.as_ref(),
                _ => None,
            })
            .collect();
        assert!(!critiques.is_empty(), "{events:?}");
        assert!(critiques.iter().all(|c| c.critic == "local"));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, GenerateEvent::Finished { .. }))
        );
        let loaded = local.loaded.lock().expect("lock");
        assert!(loaded.is_some(), "kept for the next generation");
    }

    #[test]
    fn local_without_a_folder_or_with_a_bad_one_fails_before_the_plan_starts() {
        let failure = |events: Vec<GenerateEvent>| {
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, GenerateEvent::Started(_))),
                "no plan is started without its critic"
            );
            events
                .into_iter()
                .find_map(|e| match e {
                    GenerateEvent::Failed(why) => Some(why),
                    _ => None,
                })
                .expect("a failure")
        };
        assert!(failure(run(None)).contains("--critic-model"));
        let empty = tempfile::tempdir().expect("temp dir");
        let why = failure(run(Some(LocalCritic::new(empty.path().to_owned()))));
        assert!(why.contains("config.json"), "{why}");
    }
}
