//! The studio: an egui/eframe desktop app to generate plans, inspect every refinement iteration
//! beside its critique, compare, label and curate. It drives the library and holds no ML logic.
//!
//! Layout (Rerun's names): the left *browser* (make a plan; the list of plans), the central
//! *viewport* (one row per iteration, the compare view), the right *inspector* (labels), the
//! bottom *time panel* (playback, jobs) and a status bar. Panels read [`command::Studio`] and
//! push [`command::Command`]s; [`StudioApp::logic`] drains background jobs and applies them.

pub mod command;
mod compare;
pub mod jobs;
mod panels;
pub mod persist;
pub mod playback;
pub mod samples;
pub mod shortcuts;
pub mod state;
pub mod textures;

use std::path::PathBuf;
use std::sync::Arc;

use crate::env::{self, TaskInfo, ViewInfo};
use crate::model::VideoModel;

use command::{Command, JobCommand, Studio};
use jobs::{GenerateEvent, GenerateRequest, Job, Repaint};
use state::PlanOrigin;
use textures::TextureCache;

/// How the studio starts.
#[derive(Clone, Debug)]
pub struct StudioOptions {
    pub model_dir: PathBuf,
    /// `auto`, `cpu`, `cuda` or `metal`.
    pub device: String,
    /// Plan folders to open at start (the shipped samples); with a store, they are imported
    /// into it when it is empty.
    pub sample_plans: Option<PathBuf>,
    /// The plan store (labels are saved there); `None` keeps everything in memory.
    pub store_dir: Option<PathBuf>,
    pub annotator: String,
    /// A local VLM critic's folder (Moondream2); the critic picker offers `local` with one.
    pub local_critic: Option<PathBuf>,
}

/// The form of the browser's "Make a plan" section.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSettings {
    pub world: String,
    pub task: String,
    pub view: usize,
    pub seed: u64,
    /// Empty: the task's own instruction.
    pub instruction: String,
    pub max_refinements: usize,
    pub critic: jobs::CriticChoice,
    /// The kinds of finding that make the perception critic reject (all by default;
    /// `videoagent critic-agreement --fit` says which predict failure).
    pub rejects_on: Vec<crate::critic::FindingKind>,
    /// Whose glitches make the perception critic reject.
    pub scope: crate::critic::FindingScope,
    pub vlm: jobs::VlmEndpoint,
    pub sampler_steps: usize,
    pub guidance: f64,
    /// A first frame opened from a file (replaces the world start), with its file name.
    pub image: Option<(String, crate::env::Rgb8Image)>,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        Self {
            world: "tabletop".into(),
            task: "push".into(),
            view: 0,
            seed: 0,
            instruction: String::new(),
            max_refinements: 2,
            critic: jobs::CriticChoice::Perception,
            rejects_on: crate::critic::FindingKind::ALL.to_vec(),
            scope: crate::critic::FindingScope::default(),
            vlm: jobs::VlmEndpoint::default(),
            sampler_steps: 10,
            guidance: 0.0,
            image: None,
        }
    }
}

/// A model folder being read on a worker thread, with the device it was asked for.
type ModelPromise = poll_promise::Promise<Result<(Arc<VideoModel>, String), String>>;

/// The model, once its folder has been read on a worker thread.
enum ModelSlot {
    Loading(ModelPromise),
    Ready {
        model: Arc<VideoModel>,
        device_note: String,
    },
    Failed(String),
}

/// The plan store, once opened on a worker thread.
enum StoreSlot {
    Opening(poll_promise::Promise<Result<persist::OpenedStore, String>>),
    Open {
        store: Arc<crate::store::db::Store>,
        writer: persist::LabelWriter,
    },
    /// In memory only, with the reason.
    Unavailable(String),
}

/// A world the studio can plan in.
#[derive(Clone, Debug)]
pub struct WorldChoice {
    pub name: String,
    pub tasks: Vec<TaskInfo>,
    pub views: Vec<ViewInfo>,
    /// Why it cannot run yet and what to run (e.g. MetaWorld without its venv).
    pub setup_needed: Option<String>,
}

/// A message shown for a few seconds in the corner.
#[derive(Clone, Debug, PartialEq)]
pub struct Toast {
    pub text: String,
    pub is_error: bool,
    pub shown_at_secs: Option<f64>,
}

/// A fine-tune's live numbers and its result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FineTuneStatus {
    /// (step, loss) of every step reported.
    pub losses: Vec<[f64; 2]>,
    pub step: u64,
    pub total: u64,
    pub steps_per_sec: f64,
    /// The fine-tuned model folder, until the user keeps or discards it.
    pub result: Option<PathBuf>,
}

/// The model before and after the last fine-tune, on the same held-out starts.
#[derive(Clone, Debug, Default)]
pub struct ModelComparison {
    /// `(done, total)` starts while it runs.
    pub progress: Option<(usize, usize)>,
    pub starts: Vec<crate::agent::model_eval::ComparedStart>,
    /// The comparison window is shown.
    pub open: bool,
}

/// Progress of the running generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenerateProgress {
    /// The plan being generated, once its start frame is known.
    pub plan: Option<state::PlanId>,
    pub iteration: usize,
    pub step: usize,
    pub total: usize,
}

pub struct StudioApp {
    pub studio: Studio,
    pub settings: GenerateSettings,
    pub options: StudioOptions,
    model: ModelSlot,
    /// A model (another folder or device) loading to replace a working one, with its folder
    /// and device; if it fails, the working one stays.
    replacement: Option<(ModelPromise, PathBuf, String)>,
    store: StoreSlot,
    /// Sample plans being read for a studio without a working store.
    samples: Option<samples::SamplesPromise>,
    /// A file dialog open on a worker thread (rfd), for a first frame.
    open_image: Option<poll_promise::Promise<Option<PathBuf>>>,
    generate: Option<(Job<GenerateEvent>, GenerateProgress)>,
    local_critic: Option<jobs::LocalCritic>,
    execute: Option<Job<jobs::ExecuteEvent>>,
    finetune: Option<Job<jobs::FineTuneEvent>>,
    export: Option<Job<Result<PathBuf, String>>>,
    compare: Option<Job<jobs::CompareEvent>>,
    /// Old vs new model after the last fine-tune.
    pub comparison: ModelComparison,
    /// Loss curve and progress of the current (or last) fine-tune.
    pub finetune_status: FineTuneStatus,
    /// Steps of the next fine-tune.
    pub finetune_steps: u64,
    textures: TextureCache,
    pub toasts: Vec<Toast>,
    /// Every world this build knows, for the world picker.
    worlds: Vec<WorldChoice>,
    repaint: Option<Repaint>,
    show_shortcuts: bool,
    /// The difference heatmap on the GPU (eframe's wgpu device); the CPU path otherwise.
    gpu_difference: Option<crate::viz::gpu_difference::GpuDifference>,
}

impl StudioApp {
    /// Starts loading the model and opens the sample plans.
    pub fn new(options: StudioOptions) -> Self {
        let studio = Studio::new(options.annotator.clone());
        let store = match &options.store_dir {
            Some(dir) => StoreSlot::Opening(persist::open_store(
                dir.clone(),
                options.sample_plans.clone(),
                options.annotator.clone(),
            )),
            None => StoreSlot::Unavailable("no store folder given".into()),
        };
        // Without a store the sample plans open in memory (read on a worker thread).
        let samples = match (&options.store_dir, &options.sample_plans) {
            (None, Some(dir)) => Some(samples::read_in_background(dir.clone())),
            _ => None,
        };
        // Opening a world only reads its task list; a bridged world starts its process at
        // the first reset, on a worker thread.
        let worlds = env::WORLD_NAMES
            .iter()
            .filter_map(|name| {
                let world = env::open_world(name, jobs::WORLD_SIZE).ok()?;
                Some(WorldChoice {
                    name: (*name).to_owned(),
                    tasks: world.tasks(),
                    views: world.views(),
                    setup_needed: world.setup_needed(),
                })
            })
            .collect();
        Self {
            model: ModelSlot::Loading(jobs::load_model(
                options.model_dir.clone(),
                options.device.clone(),
            )),
            studio,
            replacement: None,
            store,
            samples,
            open_image: None,
            settings: GenerateSettings::default(),
            local_critic: options.local_critic.clone().map(jobs::LocalCritic::new),
            options,
            generate: None,
            execute: None,
            finetune: None,
            export: None,
            compare: None,
            comparison: ModelComparison::default(),
            finetune_status: FineTuneStatus::default(),
            finetune_steps: 100,
            textures: TextureCache::default(),
            toasts: Vec::new(),
            worlds,
            repaint: None,
            show_shortcuts: false,
            gpu_difference: None,
        }
    }

    /// Blocks until the model (and any replacement) has loaded (tests and benchmarks; the UI
    /// never calls it).
    pub fn wait_for_model(&mut self) -> Result<(), String> {
        let promises = [
            match &self.model {
                ModelSlot::Loading(p) => Some(p),
                _ => None,
            },
            self.replacement.as_ref().map(|(p, ..)| p),
        ];
        for promise in promises.into_iter().flatten() {
            while promise.ready().is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.poll_model();
        match &self.model {
            ModelSlot::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Blocks until the store has opened and every label change was saved (tests).
    pub fn flush_store(&mut self) -> Result<(), String> {
        loop {
            self.poll_store();
            self.save_labels();
            match &self.store {
                StoreSlot::Opening(_) => {}
                StoreSlot::Open { writer, .. } => {
                    if writer.pending() == 0 && self.studio.unsaved.is_empty() {
                        return Ok(());
                    }
                }
                StoreSlot::Unavailable(reason) => return Err(reason.clone()),
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Blocks until the sample plans of a studio without a store are in (tests).
    pub fn flush_samples(&mut self) {
        while self.samples.is_some() {
            self.poll_samples();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Adds the sample plans once their worker has read them, with its warnings as toasts.
    fn poll_samples(&mut self) {
        let Some(promise) = self.samples.take() else {
            return;
        };
        match promise.try_take() {
            Ok((plans, warnings)) => {
                for mut plan in plans {
                    plan.id = self.studio.next_plan_id();
                    self.studio.upsert_plan(plan);
                }
                for warning in warnings {
                    self.toast(warning, true);
                }
            }
            Err(pending) => self.samples = Some(pending),
        }
    }

    /// What the status bar says about the store.
    pub fn store_status(&self) -> String {
        match &self.store {
            StoreSlot::Opening(_) => "opening store…".into(),
            StoreSlot::Open { store, .. } => format!("store {}", store.dir().display()),
            StoreSlot::Unavailable(reason) => format!("labels not saved ({reason})"),
        }
    }

    fn poll_store(&mut self) {
        let StoreSlot::Opening(promise) = &self.store else {
            return;
        };
        let Some(result) = promise.ready() else {
            return;
        };
        let (slot, messages) = match result {
            Ok(opened) => {
                for plan in &opened.plans {
                    self.studio.upsert_plan(plan.clone());
                }
                self.studio.load_labels(opened.labels.clone());
                let mut messages = vec![(opened.report.clone(), false)];
                messages.extend(opened.warnings.iter().map(|w| (w.clone(), true)));
                (
                    StoreSlot::Open {
                        store: opened.store.clone(),
                        writer: persist::LabelWriter::spawn(opened.store.clone()),
                    },
                    messages,
                )
            }
            Err(e) => {
                let messages = vec![(
                    format!("the store could not open, labels stay in memory: {e}"),
                    true,
                )];
                // Something to look at all the same: the sample plans, in memory.
                self.samples = self
                    .options
                    .sample_plans
                    .clone()
                    .map(samples::read_in_background);
                (StoreSlot::Unavailable(e.clone()), messages)
            }
        };
        self.store = slot;
        for (text, is_error) in messages {
            self.toast(text, is_error);
        }
    }

    /// Hands changed labels to the store's writer (what does not fit waits for the next frame).
    fn save_labels(&mut self) {
        let StoreSlot::Open { writer, .. } = &self.store else {
            return;
        };
        let mut errors = writer.errors();
        let mut waiting = Vec::new();
        for plan in std::mem::take(&mut self.studio.unsaved) {
            let label = self.studio.labels.get(&plan).cloned();
            if !writer.save(plan, label, &self.studio.annotator) {
                waiting.push(plan);
            }
        }
        self.studio.unsaved = waiting;
        for e in errors.drain(..) {
            self.toast(e, true);
        }
    }

    /// Computes difference heatmaps with `gpu` from now on.
    pub fn with_gpu_difference(mut self, gpu: crate::viz::gpu_difference::GpuDifference) -> Self {
        self.gpu_difference = Some(gpu);
        self
    }

    /// A generation is running.
    pub fn is_generating(&self) -> bool {
        self.generate.is_some()
    }

    /// What the status bar says about the model and its device.
    pub fn model_status(&self) -> String {
        match &self.model {
            ModelSlot::Loading(_) => "loading model…".into(),
            ModelSlot::Ready { model, device_note } => format!(
                "model {} | {}",
                model
                    .source
                    .file_name()
                    .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned()),
                device_note
            ),
            ModelSlot::Failed(e) => format!("no model: {e}"),
        }
    }

    fn poll_model(&mut self) {
        self.poll_replacement();
        let ModelSlot::Loading(promise) = &self.model else {
            return;
        };
        let Some(result) = promise.ready() else {
            return;
        };
        let failure = result.as_ref().err().cloned();
        self.model = match result {
            Ok((model, note)) => ModelSlot::Ready {
                model: model.clone(),
                device_note: note.clone(),
            },
            Err(e) => ModelSlot::Failed(e.clone()),
        };
        if let Some(e) = failure {
            self.toast(e, true);
        }
    }

    /// Loads the model in `dir` on `device`; the current model keeps working meanwhile and
    /// stays if the new one fails to load.
    fn replace_model(&mut self, dir: PathBuf, device: String) {
        let promise = jobs::load_model(dir.clone(), device.clone());
        match self.model {
            ModelSlot::Ready { .. } => self.replacement = Some((promise, dir, device)),
            _ => {
                self.options.model_dir = dir;
                self.options.device = device;
                self.model = ModelSlot::Loading(promise);
            }
        }
    }

    fn poll_replacement(&mut self) {
        let Some((promise, dir, device)) = &self.replacement else {
            return;
        };
        let Some(result) = promise.ready() else {
            return;
        };
        let (text, is_error) = match result {
            Ok((model, note)) => {
                self.model = ModelSlot::Ready {
                    model: model.clone(),
                    device_note: note.clone(),
                };
                self.options.model_dir = dir.clone();
                self.options.device = device.clone();
                (
                    format!("now using {} ({note})", model.source.display()),
                    false,
                )
            }
            Err(e) => (format!("{e}; the current model stays"), true),
        };
        self.replacement = None;
        self.toast(text, is_error);
    }

    /// The device the model in use was asked for (`auto`, `cpu`, `cuda`, `metal`).
    pub fn device(&self) -> &str {
        &self.options.device
    }

    pub fn toast(&mut self, text: impl Into<String>, is_error: bool) {
        self.toasts.push(Toast {
            text: text.into(),
            is_error,
            shown_at_secs: None,
        });
    }

    /// Applies a command; starts or stops jobs for job commands.
    pub fn apply(&mut self, command: Command) {
        let Some(job) = self.studio.apply(command) else {
            return;
        };
        match job {
            JobCommand::Generate => self.start_generate(),
            JobCommand::Cancel => {
                if let Some((job, _)) = &self.generate {
                    job.cancel();
                }
                if let Some(job) = &self.finetune {
                    job.cancel();
                }
                if let Some(job) = &self.compare {
                    job.cancel();
                }
            }
            JobCommand::Execute => self.start_execute(),
            JobCommand::OpenImage => {
                if self.open_image.is_none() {
                    self.open_image =
                        Some(poll_promise::Promise::spawn_thread("open image", || {
                            rfd::FileDialog::new()
                                .set_title("Open a first frame")
                                .add_filter("image", &["png", "jpg", "jpeg", "bmp", "gif"])
                                .pick_file()
                        }));
                }
            }
            JobCommand::ClearImage => self.settings.image = None,
            JobCommand::FineTune => self.start_finetune(),
            JobCommand::Export {
                format,
                all_iterations,
            } => self.start_export(format, all_iterations),
            JobCommand::UseFineTuned => {
                self.comparison.open = false;
                if let Some(dir) = self.finetune_status.result.take() {
                    self.toast(
                        format!("loading the fine-tuned model {}", dir.display()),
                        false,
                    );
                    self.replace_model(dir, self.options.device.clone());
                }
            }
            JobCommand::DiscardFineTuned => {
                self.finetune_status.result = None;
                self.comparison.open = false;
            }
            JobCommand::SwitchDevice(device) => {
                if device != self.options.device {
                    self.replace_model(self.options.model_dir.clone(), device);
                }
            }
            JobCommand::ToggleModelComparison => self.comparison.open = !self.comparison.open,
        }
    }

    /// Uses the image at `path` as the next plan's first frame (what the file dialog calls).
    pub fn open_first_frame(&mut self, path: &std::path::Path) {
        match crate::store::plan_record::read_first_frame(path, 64) {
            Ok(frame) => {
                let name = path
                    .file_name()
                    .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
                self.toast(
                    format!("first frame {name}: type an instruction, then Generate"),
                    false,
                );
                self.settings.image = Some((name, frame));
            }
            Err(e) => self.toast(e.to_string(), true),
        }
    }

    fn poll_open_image(&mut self) {
        let Some(promise) = &self.open_image else {
            return;
        };
        let Some(choice) = promise.ready() else {
            return;
        };
        let choice = choice.clone();
        self.open_image = None;
        if let Some(path) = choice {
            self.open_first_frame(&path);
        }
    }

    /// A fine-tune is running.
    pub fn is_finetuning(&self) -> bool {
        self.finetune.is_some()
    }

    fn start_finetune(&mut self) {
        if self.finetune.is_some() {
            self.toast("a fine-tune is already running", true);
            return;
        }
        let ModelSlot::Ready { model, .. } = &self.model else {
            self.toast("the model is not loaded yet", true);
            return;
        };
        let clips: Vec<(Vec<crate::env::Rgb8Image>, String)> = self
            .studio
            .curated()
            .into_iter()
            .filter_map(|p| {
                let frames = p.iterations.get(p.chosen)?.frames.clone();
                (frames.len() >= 2).then(|| (frames, p.instruction.clone()))
            })
            .collect();
        if clips.is_empty() {
            self.toast("the curated set is empty: accept some plans first", true);
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let out_dir = self
            .options
            .store_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs"))
            .join(format!("finetune-{stamp}"));
        let request = jobs::FineTuneRequest {
            base: model.clone(),
            out_dir,
            steps: self.finetune_steps.max(1),
            batch: clips.len().clamp(1, 8),
            clips,
        };
        self.finetune_status = FineTuneStatus {
            total: request.steps,
            ..FineTuneStatus::default()
        };
        let repaint = self.repaint.clone().unwrap_or_else(|| Arc::new(|| {}));
        self.finetune = Some(Job::spawn("fine-tune", repaint, move |report| {
            jobs::fine_tune(request, report)
        }));
    }

    fn drain_finetune(&mut self) {
        let Some(job) = &mut self.finetune else {
            return;
        };
        let events = job.drain();
        let finished = job.is_finished();
        for event in events {
            match event {
                jobs::FineTuneEvent::Step {
                    step,
                    total,
                    loss,
                    steps_per_sec,
                } => {
                    let s = &mut self.finetune_status;
                    s.losses.push([step as f64, f64::from(loss)]);
                    s.step = step;
                    s.total = total;
                    s.steps_per_sec = steps_per_sec;
                }
                jobs::FineTuneEvent::Done { model_dir, stopped } => {
                    let what = if stopped {
                        "stopped (saved)"
                    } else {
                        "finished"
                    };
                    self.toast(format!("fine-tune {what}: {}", model_dir.display()), false);
                    self.start_comparison(model_dir.clone());
                    self.finetune_status.result = Some(model_dir);
                }
                jobs::FineTuneEvent::Failed(e) => self.toast(e, true),
            }
        }
        if finished {
            self.finetune = None;
        }
    }

    /// A model comparison is running.
    pub fn is_comparing(&self) -> bool {
        self.compare.is_some()
    }

    /// Plans held-out starts of the curated tasks (at most three) with the model in use and
    /// the fine-tuned one in `after_dir`, to choose which to keep.
    fn start_comparison(&mut self, after_dir: PathBuf) {
        let ModelSlot::Ready { model, .. } = &self.model else {
            return;
        };
        let mut starts: Vec<(String, usize, u64)> = Vec::new();
        for plan in self.studio.curated() {
            let o = &plan.origin;
            if o.world == "tabletop" && !starts.iter().any(|(t, ..)| *t == o.task) {
                let seed = crate::agent::model_eval::HELD_OUT_SEED + starts.len() as u64;
                starts.push((o.task.clone(), o.view, seed));
            }
        }
        starts.truncate(3);
        if starts.is_empty() {
            return;
        }
        let request = jobs::CompareRequest {
            before: model.clone(),
            after_dir,
            sampler_steps: self.settings.sampler_steps,
            starts,
        };
        self.textures.forget_model_comparison();
        self.comparison = ModelComparison {
            progress: Some((0, request.starts.len())),
            starts: Vec::new(),
            open: true,
        };
        let repaint = self.repaint.clone().unwrap_or_else(|| Arc::new(|| {}));
        self.compare = Some(Job::spawn("compare models", repaint, move |report| {
            jobs::compare_models(request, report)
        }));
    }

    fn drain_compare(&mut self) {
        let Some(job) = &mut self.compare else {
            return;
        };
        let events = job.drain();
        let finished = job.is_finished();
        for event in events {
            match event {
                jobs::CompareEvent::Progress { done, total } => {
                    self.comparison.progress = Some((done, total));
                }
                jobs::CompareEvent::Done(starts) => self.comparison.starts = starts,
                jobs::CompareEvent::Failed(e) => self.toast(e, true),
            }
        }
        if finished {
            self.compare = None;
            self.comparison.progress = None;
        }
    }

    /// Exports the selected plan's chosen iteration (or every iteration, as a grid) under the
    /// store folder's `exports/`, on a worker thread.
    fn start_export(&mut self, format: crate::store::export::VideoFormat, all_iterations: bool) {
        if self.export.is_some() {
            self.toast("an export is already running", true);
            return;
        }
        let Some(plan) = self.studio.selected_plan() else {
            self.toast("select a plan to export", true);
            return;
        };
        let rows: Vec<Vec<crate::env::Rgb8Image>> = if all_iterations {
            plan.iterations.iter().map(|it| it.frames.clone()).collect()
        } else {
            plan.iterations
                .get(plan.chosen)
                .map(|it| vec![it.frames.clone()])
                .unwrap_or_default()
        };
        if rows.iter().all(Vec::is_empty) {
            self.toast("the plan has no frames yet", true);
            return;
        }
        let scope = if all_iterations {
            "all".to_owned()
        } else {
            format!("it{}", plan.chosen)
        };
        let path = self
            .options
            .store_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs"))
            .join("exports")
            .join(format!(
                "{}-v{}-s{}-plan{}-{scope}.{}",
                plan.origin.task,
                plan.origin.view,
                plan.origin.seed,
                plan.id.0,
                format.extension()
            ));
        let repaint = self.repaint.clone().unwrap_or_else(|| Arc::new(|| {}));
        self.export = Some(Job::spawn("export", repaint, move |report| {
            jobs::export(format, rows, path, report)
        }));
    }

    /// An export is being written.
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    fn drain_export(&mut self) {
        let Some(job) = &mut self.export else {
            return;
        };
        let results = job.drain();
        let finished = job.is_finished();
        for result in results {
            match result {
                Ok(path) => self.toast(format!("exported {}", path.display()), false),
                Err(e) => self.toast(e, true),
            }
        }
        if finished {
            self.export = None;
        }
    }

    /// An execution is running.
    pub fn is_executing(&self) -> bool {
        self.execute.is_some()
    }

    fn start_execute(&mut self) {
        if self.execute.is_some() {
            self.toast("a plan is already being executed", true);
            return;
        }
        let Some(plan) = self.studio.selected_plan() else {
            self.toast("select a plan to execute", true);
            return;
        };
        let Some(iteration) = plan.iterations.get(plan.chosen) else {
            self.toast("the plan has no frames yet", true);
            return;
        };
        let (id, origin, frames) = (plan.id, plan.origin.clone(), iteration.frames.clone());
        let repaint = self.repaint.clone().unwrap_or_else(|| Arc::new(|| {}));
        self.execute = Some(Job::spawn("execute", repaint, move |report| {
            jobs::execute(id, origin, frames, report)
        }));
    }

    fn drain_execute(&mut self) {
        let Some(job) = &mut self.execute else {
            return;
        };
        let events = job.drain();
        let finished = job.is_finished();
        for event in events {
            match event {
                jobs::ExecuteEvent::Done(id, rollout) => {
                    let text = format!(
                        "executed: {} in {} steps",
                        if rollout.success {
                            "success"
                        } else {
                            "failure"
                        },
                        rollout.steps
                    );
                    self.textures.forget_plan(id.0);
                    if let Some(plan) = self.studio.plans.iter_mut().find(|p| p.id == id) {
                        plan.rollout = Some(*rollout);
                    }
                    self.toast(text, false);
                }
                jobs::ExecuteEvent::Failed(e) => self.toast(e, true),
            }
        }
        if finished {
            self.execute = None;
        }
    }

    fn start_generate(&mut self) {
        if self.generate.is_some() {
            self.toast("a plan is already being generated", true);
            return;
        }
        let ModelSlot::Ready { model, .. } = &self.model else {
            self.toast("the model is not loaded yet", true);
            return;
        };
        if matches!(self.store, StoreSlot::Opening(_)) {
            // Plan ids come from the store once it is open; wait so they cannot collide.
            self.toast("the plan store is still opening", true);
            return;
        }
        let s = &self.settings;
        let request = GenerateRequest {
            id: self.studio.next_plan_id(),
            origin: match &s.image {
                Some((name, _)) => PlanOrigin {
                    world: "image".into(),
                    task: name.clone(),
                    view: 0,
                    seed: 0,
                },
                None => PlanOrigin {
                    world: s.world.clone(),
                    task: s.task.clone(),
                    view: s.view,
                    seed: s.seed,
                },
            },
            image: s.image.as_ref().map(|(_, frame)| frame.clone()),
            instruction: s.instruction.clone(),
            max_refinements: s.max_refinements,
            critic: s.critic,
            rejects_on: s.rejects_on.clone(),
            scope: s.scope,
            vlm: s.vlm.clone(),
            sampler_steps: s.sampler_steps,
            guidance: s.guidance,
            sample_seed: s.seed,
        };
        let model = model.clone();
        let store = match &self.store {
            StoreSlot::Open { store, .. } => Some(store.clone()),
            _ => None,
        };
        let repaint = self.repaint.clone().unwrap_or_else(|| Arc::new(|| {}));
        let local = self.local_critic.clone();
        let job = Job::spawn("generate", repaint, move |report| {
            jobs::generate(model, store, local, request, report)
        });
        self.generate = Some((job, GenerateProgress::default()));
    }

    /// Drains background jobs and advances playback; no drawing.
    pub fn logic(&mut self, ctx: &egui::Context) {
        if self.repaint.is_none() {
            let ctx = ctx.clone();
            self.repaint = Some(Arc::new(move || ctx.request_repaint()));
        }
        self.poll_model();
        self.poll_store();
        self.poll_samples();
        self.save_labels();
        if matches!(self.model, ModelSlot::Loading(_))
            || self.replacement.is_some()
            || self.samples.is_some()
            || matches!(self.store, StoreSlot::Opening(_))
        {
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
        }
        self.drain_generate();
        self.drain_execute();
        self.drain_finetune();
        self.drain_export();
        self.drain_compare();
        self.poll_open_image();
        for command in shortcuts::pressed(ctx) {
            self.apply(command);
        }
        if ctx.input(|i| i.key_pressed(egui::Key::Questionmark) || i.key_pressed(egui::Key::F1))
            && !ctx.egui_wants_keyboard_input()
        {
            self.show_shortcuts = !self.show_shortcuts;
        }
        let frames = self.studio.selected_plan().map_or(0, |p| p.frame_count());
        let now = ctx.input(|i| i.time);
        if let Some(wait) = self.studio.playback.tick(now, frames) {
            ctx.request_repaint_after(std::time::Duration::from_secs_f64(wait));
        }
    }

    fn drain_generate(&mut self) {
        let Some((job, progress)) = &mut self.generate else {
            return;
        };
        let mut messages = Vec::new();
        for event in job.drain() {
            match event {
                GenerateEvent::Started(plan) => {
                    let id = plan.id;
                    progress.plan = Some(id);
                    self.textures.forget_plan(id.0);
                    self.studio.upsert_plan(*plan);
                    self.studio.apply(Command::SelectPlan(id));
                }
                GenerateEvent::Step {
                    iteration,
                    step,
                    total,
                } => {
                    *progress = GenerateProgress {
                        plan: progress.plan,
                        iteration,
                        step,
                        total,
                    };
                }
                // The user may have selected another plan meanwhile: results go to their plan.
                GenerateEvent::Iteration(iteration) => {
                    let target = progress.plan;
                    if let Some(plan) = self.studio.plans.iter_mut().find(|p| Some(p.id) == target)
                    {
                        plan.iterations.push(*iteration);
                    }
                }
                GenerateEvent::Finished { chosen } => {
                    let target = progress.plan;
                    if let Some(plan) = self.studio.plans.iter_mut().find(|p| Some(p.id) == target)
                    {
                        plan.chosen = chosen;
                    }
                    messages.push(("plan ready".to_owned(), false));
                }
                GenerateEvent::Failed(e) | GenerateEvent::Warning(e) => messages.push((e, true)),
                GenerateEvent::Cancelled => messages.push(("generation cancelled".into(), false)),
            }
        }
        let finished = job.is_finished();
        for (text, is_error) in messages {
            self.toast(text, is_error);
        }
        if finished {
            self.generate = None;
        }
    }

    /// Draws the whole studio into `ui` and applies what the panels asked for.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let demo_before = self.studio.demo;
        self.logic(ui.ctx());
        let mut commands = Vec::new();
        panels::status_bar(ui, self, &mut commands);
        panels::time_panel(ui, self, &mut commands);
        if !self.studio.demo {
            panels::browser(ui, self, &mut commands);
            panels::inspector(ui, &self.studio, &mut commands);
        }
        egui::CentralPanel::default_margins().show(ui, |ui| {
            let gpu = self.gpu_difference.as_ref();
            let heatmap = |a: &crate::env::Rgb8Image, b: &crate::env::Rgb8Image| {
                gpu.and_then(|g| g.heatmap(a, b).ok())
                    .unwrap_or_else(|| crate::viz::difference_heatmap(a, b))
            };
            panels::viewport(
                ui,
                &self.studio,
                &mut self.textures,
                &heatmap,
                &mut commands,
            );
        });
        if self.comparison.open {
            panels::model_comparison(ui.ctx(), self, &mut commands);
        }
        if self.show_shortcuts {
            egui::Window::new("Keyboard shortcuts")
                .open(&mut self.show_shortcuts)
                .show(ui.ctx(), shortcuts::cheat_sheet_ui);
        }
        panels::toasts(ui.ctx(), &mut self.toasts);
        for command in commands {
            self.apply(command);
        }
        if self.studio.demo != demo_before {
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::Fullscreen(self.studio.demo));
        }
    }

    /// Progress of the running generation, if any.
    pub fn generate_progress(&self) -> Option<GenerateProgress> {
        self.generate.as_ref().map(|(_, p)| *p)
    }

    /// The worlds the picker offers.
    pub fn worlds(&self) -> &[WorldChoice] {
        &self.worlds
    }

    fn world(&self) -> Option<&WorldChoice> {
        self.worlds.iter().find(|w| w.name == self.settings.world)
    }

    /// The chosen world's tasks.
    pub fn tasks(&self) -> &[TaskInfo] {
        self.world().map_or(&[], |w| &w.tasks)
    }

    /// The chosen world's camera views.
    pub fn views(&self) -> &[ViewInfo] {
        self.world().map_or(&[], |w| &w.views)
    }

    /// Plans from `name`'s starts from now on: its first task and view, unless the current
    /// ones exist there too.
    pub fn select_world(&mut self, name: &str) {
        let Some(world) = self.worlds.iter().find(|w| w.name == name) else {
            return;
        };
        let s = &mut self.settings;
        s.world = world.name.clone();
        if !world.tasks.iter().any(|t| t.name == s.task) {
            s.task = world
                .tasks
                .first()
                .map(|t| t.name.clone())
                .unwrap_or_default();
        }
        if s.view >= world.views.len() {
            s.view = 0;
        }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

/// Opens the studio window (blocks until it is closed).
pub fn run_native(options: StudioOptions) -> Result<(), eframe::Error> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("VideoAgent Studio")
            .with_inner_size([1400.0, 860.0]),
        ..Default::default()
    };
    eframe::run_native(
        "VideoAgent Studio",
        native,
        Box::new(move |cc| {
            let app = StudioApp::new(options);
            Ok(Box::new(match &cc.wgpu_render_state {
                Some(rs) => {
                    app.with_gpu_difference(crate::viz::gpu_difference::GpuDifference::new(
                        rs.device.clone(),
                        rs.queue.clone(),
                        rs.adapter.get_info().name,
                    ))
                }
                None => app,
            }))
        }),
    )
}
