//! The `videoagent` command line: one subcommand per job, all thin wrappers over the library.
//! This module parses and dispatches; each submodule owns a group of commands: [`world`]
//! (tasks, setup, datasets, sheets), [`model`] (train, plan, quality, refinement data),
//! [`critic`], [`run`] (plan -> action), [`eval`] (the paper's table, self-improvement),
//! [`store`] (plan store, exports, the crash harness), [`bench`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use videoagent::env::{self, World};

mod bench;
mod critic;
mod eval;
mod model;
mod progress;
mod run;
mod store;
mod world;

use bench::{BenchModelArgs, BenchUiArgs, BenchWorldArgs};
use eval::{EvalArgs, ImproveArgs};
use model::{PlanArgs, QualityArgs, RefineDataArgs, TrainArgs};
use progress::{log_if_hidden, progress};
use run::RunArgs;
use store::{BenchCrashArgs, CrashWorkerArgs, ExportArgs, ImportArgs, StoreCommand};
use world::{DatasetArgs, SetupMetaworldArgs, SheetArgs, TasksArgs};

/// VideoAgent Studio: video plans for robots, refined by a critic, executed and improved.
///
/// `videoagent` alone opens the studio (a window) on the embedded world with the shipped model;
/// subcommands run the library headless.
#[derive(Debug, Parser)]
#[command(name = "videoagent", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log filter (e.g. `info`, `debug`, `videoagent=trace`); also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
}

#[derive(Debug, Args, Default)]
pub struct StudioArgs {
    /// Model folder (default: $VIDEOAGENT_MODEL, else the shipped CPU model)
    #[arg(long)]
    model: Option<PathBuf>,
    /// auto, cpu, cuda or metal
    #[arg(long, default_value = "auto")]
    device: String,
    /// Folder of plan folders to open at start (default: the shipped samples)
    #[arg(long)]
    plans: Option<PathBuf>,
    /// Name recorded with every label (default: $USER)
    #[arg(long)]
    annotator: Option<String>,
    /// Plan store folder: plans and labels are saved there (default: runs/studio-store)
    #[arg(long)]
    store: Option<PathBuf>,
    /// A local VLM critic's folder (Moondream2): the critic picker then offers `local`
    #[arg(long)]
    critic_model: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the studio (the default without a subcommand), with options.
    Studio(StudioArgs),
    /// List worlds, their tasks (difficulty, instructions) and camera views.
    Tasks(TasksArgs),
    /// Run the scripted experts and write a demonstration dataset.
    Dataset(DatasetArgs),
    /// Draw the first, middle and last frame of an expert episode of every task in every view.
    Sheet(SheetArgs),
    /// Train or fine-tune the video model on a dataset (resumable; Ctrl-C saves a checkpoint).
    Train(TrainArgs),
    /// Make refinement training data: plan from dataset starts with the model, critique the
    /// plans, store (expert clip, plans, critiques) (resumable; rerun to continue).
    RefineData(RefineDataArgs),
    /// Generate a plan (8-frame video) for a task from the world's start frame.
    Plan(PlanArgs),
    /// Held-out quality of a model: PSNR/SSIM against the expert's video, final object error.
    Quality(QualityArgs),
    /// Performance benchmarks (table on stdout, JSON with --json).
    #[command(subcommand)]
    Bench(BenchCommand),
    // --- plan store (issue 5) ---
    /// Export plans: json (re-importable), gif, png-strip, mp4, reference, lerobot.
    Export(ExportArgs),
    /// Import plans and labels from a JSON export, or a folder of first-frame images.
    Import(ImportArgs),
    /// Inspect a plan store: check it (integrity, frame files) or list its plans.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Measure the perception critic: expert videos accepted, edited failures rejected.
    CriticCalibrate(critic::CalibrateArgs),
    /// How often each critic's verdict on the model's plans agrees with executing them.
    CriticAgreement(critic::AgreementArgs),
    /// Plan with the model (or take the expert's video) and execute the plan in the world.
    Run(RunArgs),
    /// The paper's evaluation: success per method, task and view on held-out seeds (resumable).
    Eval(EvalArgs),
    /// Self-improvement rounds: execute refined plans, keep verified successes, fine-tune.
    Improve(ImproveArgs),
    /// Install what a world needs outside this binary.
    #[command(subcommand)]
    Setup(SetupCommand),
}

/// The world start a plan is made from (`plan`, `run`).
#[derive(Debug, Args)]
pub struct StartArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Task name (see `videoagent tasks`).
    #[arg(long)]
    pub task: String,
    /// View index or name.
    #[arg(long, default_value = "0")]
    pub view: String,
    /// Seed of the start state (and of the sampler, unless `plan --sample-seed` says otherwise).
    #[arg(long, default_value_t = 1_000_000)]
    pub seed: u64,
}

impl StartArgs {
    /// The world (64 px frames), the view's index and the task, each checked by name.
    pub fn open(&self) -> Result<(Box<dyn World>, usize, env::TaskInfo)> {
        let world = env::open_world(&self.world, 64)?;
        let view = env::resolve_view(&world.views(), &self.view)?;
        let info = world
            .tasks()
            .into_iter()
            .find(|t| t.name == self.task)
            .with_context(|| format!("unknown task '{}' (see `videoagent tasks`)", self.task))?;
        Ok((world, view, info))
    }
}

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Create the MetaWorld venv (pip: metaworld 3.1.1, which pins mujoco), then check that
    /// the bridge starts, resets a task and renders.
    Metaworld(SetupMetaworldArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Steps + renders per second of a world on one core.
    World(BenchWorldArgs),
    /// Video model speed: forward pass, one plan, training steps/s, GFLOP/s vs matmul peak.
    Model(BenchModelArgs),
    /// Kill -9 harness: kill labelling/exporting processes at random moments, verify the store.
    Crash(BenchCrashArgs),
    /// Studio frame times (UI thread, headless) idle, while generating, while fine-tuning.
    Ui(BenchUiArgs),
    /// The process `bench crash` kills (internal).
    #[command(hide = true)]
    CrashWorker(CrashWorkerArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => studio(&StudioArgs::default()),
        Some(Command::Studio(a)) => studio(&a),
        Some(Command::Tasks(a)) => world::tasks(&a),
        Some(Command::Dataset(a)) => world::dataset(&a),
        Some(Command::Sheet(a)) => world::sheet(&a),
        Some(Command::Train(a)) => model::train(&a),
        Some(Command::RefineData(a)) => model::refine_data(&a),
        Some(Command::Plan(a)) => model::plan(&a),
        Some(Command::Quality(a)) => model::quality(&a),
        Some(Command::Bench(BenchCommand::World(a))) => bench::bench_world(&a),
        Some(Command::Bench(BenchCommand::Model(a))) => bench::bench_model(&a),
        Some(Command::Bench(BenchCommand::Ui(a))) => bench::bench_ui(&a),
        Some(Command::Bench(BenchCommand::Crash(a))) => store::bench_crash(&a),
        Some(Command::Bench(BenchCommand::CrashWorker(a))) => store::crash_worker(&a),
        Some(Command::Export(a)) => store::export(&a),
        Some(Command::Import(a)) => store::import(&a),
        Some(Command::Store(c)) => store::store(&c),
        Some(Command::CriticCalibrate(a)) => critic::calibrate_cmd(&a),
        Some(Command::CriticAgreement(a)) => critic::agreement_cmd(&a),
        Some(Command::Run(a)) => run::run_plan(&a),
        Some(Command::Eval(a)) => eval::eval_cmd(&a),
        Some(Command::Improve(a)) => eval::improve_cmd(&a),
        Some(Command::Setup(SetupCommand::Metaworld(a))) => world::setup_metaworld(&a),
    }
}

/// Parses `all` or a comma list of names against the valid ones.
pub(crate) fn pick_tasks(world: &dyn World, list: &str) -> Result<Vec<String>> {
    let valid: Vec<String> = world.tasks().into_iter().map(|t| t.name).collect();
    if list == "all" {
        return Ok(valid);
    }
    list.split(',')
        .map(str::trim)
        .map(|t| {
            if valid.iter().any(|v| v == t) {
                Ok(t.to_owned())
            } else {
                bail!("unknown task '{t}' (valid: all, {})", valid.join(", "))
            }
        })
        .collect()
}

pub(crate) fn pick_views(world: &dyn World, list: &str) -> Result<Vec<usize>> {
    let views = world.views();
    if list == "all" {
        return Ok((0..views.len()).collect());
    }
    list.split(',')
        .map(|v| Ok(env::resolve_view(&views, v.trim())?))
        .collect()
}

/// Writes `value` as JSON to `path` atomically; the error names the file.
pub(crate) fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    videoagent::store::atomic::write_json(path, value)
        .with_context(|| format!("writing {}", path.display()))
}

/// Set by Ctrl-C: long jobs stop at the next step and save what they have.
fn interrupt_flag() -> Result<std::sync::Arc<AtomicBool>> {
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, std::sync::atomic::Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(flag)
}

fn studio(args: &StudioArgs) -> Result<()> {
    use videoagent::app::{StudioOptions, run_native};
    let options = StudioOptions {
        model_dir: args
            .model
            .clone()
            .unwrap_or_else(videoagent::model::pipeline::default_model_dir),
        device: if args.device.is_empty() {
            "auto".into()
        } else {
            args.device.clone()
        },
        sample_plans: Some(args.plans.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data/plans")
        })),
        annotator: args
            .annotator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "annotator".into()),
        store_dir: Some(
            args.store
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/studio-store")),
        ),
        local_critic: args.critic_model.clone(),
    };
    run_native(options).map_err(|e| anyhow::anyhow!("the studio window could not open: {e}"))
}
