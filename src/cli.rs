//! The `videoagent` command line: one subcommand per job, all thin wrappers over the library.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use videoagent::env::{self, World, open_world};
use videoagent::store::collect::{CollectSpec, collect};

use store_cli::{BenchCrashArgs, CrashWorkerArgs, ExportArgs, ImportArgs, StoreCommand};

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
    CriticCalibrate(crate::critic_cli::CalibrateArgs),
    /// How often each critic's verdict on the model's plans agrees with executing them.
    CriticAgreement(crate::critic_cli::AgreementArgs),
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

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Create the MetaWorld venv (pip: metaworld 3.1.1, which pins mujoco), then check that
    /// the bridge starts, resets a task and renders.
    Metaworld(SetupMetaworldArgs),
}

#[derive(Debug, Args)]
pub struct SetupMetaworldArgs {
    /// Where the venv goes (default: $VIDEOAGENT_METAWORLD_VENV, else
    /// ~/.local/share/videoagent/metaworld-venv). Set VIDEOAGENT_METAWORLD_VENV to the same
    /// folder so that the other commands find it.
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// The Python that creates the venv (3.9 or newer).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset folder written by `videoagent dataset`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Network preset (tabletop, ithor, metaworld).
    #[arg(long, default_value = "tabletop")]
    pub config: String,
    /// Frame side the network works at (overrides the preset's; a multiple of 4).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Run folder: checkpoints, loss log and the trained model.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    pub resume: bool,
    /// Start from this model folder's weights (fine-tuning).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Encode instructions with this frozen CLIP text folder (config.json, model.safetensors,
    /// tokenizer.json) instead of the built-in encoder, as the reference does. Its width must be
    /// the preset's task_token_channels (512 for ViT-B/32: metaworld, ithor). The model's
    /// config.json records it as an absolute path.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Total optimiser steps of the run.
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    /// Clips per optimiser step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Seed of the initial weights and of every batch (same seed, same run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Refinement training on this folder from `videoagent refine-data`: the network is
    /// conditioned on a plan it generated earlier (as a video) with "instruction. critique" as
    /// text, and learns the expert's clip. Plain samples of each batch come from --data if
    /// given, else from the expert clips in the folder. Usually with --init.
    #[arg(long)]
    pub refine_data: Option<PathBuf>,
    /// Weight of the self-conditioning consistency term (refinement training): for a start
    /// with two earlier plans, the same noisy expert clip is denoised conditioned on each
    /// plan (with its critique) and the min-SNR-weighted squared difference of the two
    /// predictions is added to the loss times this weight, so the refinement agrees whatever
    /// earlier mistake it starts from. Starts with one plan get no term. 0 turns it off.
    /// Default 1 (added as is; the public reference trainer omits the term).
    #[arg(long, default_value_t = videoagent::model::refine_train::DEFAULT_CONSISTENCY_WEIGHT)]
    pub consistency_weight: f64,
    /// Share of each refinement batch that is plain generation (start frame conditioning,
    /// instruction text), so one model both generates and refines.
    #[arg(long, default_value_t = videoagent::model::refine_train::DEFAULT_PLAIN_SHARE)]
    pub plain_share: f64,
}

#[derive(Debug, Args)]
pub struct RefineDataArgs {
    /// Dataset folder written by `videoagent dataset` (the starts and expert clips).
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder (a rerun with the same settings continues it).
    #[arg(long)]
    pub out: PathBuf,
    /// Model folder that plans (default: $VIDEOAGENT_MODEL, else the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Successful episodes per task used as starts (lowest seeds first).
    #[arg(long, default_value_t = 8)]
    pub per_task: usize,
    /// DDIM steps per plan.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Plans per start: 1, or 2 (the second refines the first with its critique, giving the
    /// consistency term two earlier generations of the same start).
    #[arg(long, default_value_t = 2)]
    pub generations: usize,
    /// Base of the noise seeds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Model folder (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "all")]
    pub tasks: String,
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Held-out starts per task and view (seeds from 1,000,000 up).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// DDIM steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also write the report (every plan's scores) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw the expert's video above the plan for the first start of each task (PNG).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Instead: run K refinements per start with the perception critic (never stopping at an
    /// accept) and print the mean scores per iteration 0..K.
    #[arg(long, default_value_t = 0)]
    pub refine: usize,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Task name (see `videoagent tasks`).
    #[arg(long)]
    pub task: String,
    /// View index or name.
    #[arg(long, default_value = "0")]
    pub view: String,
    /// Seed of the start state (and of the sampler unless --sample-seed is given).
    #[arg(long, default_value_t = 1_000_000)]
    pub seed: u64,
    #[arg(long)]
    pub sample_seed: Option<u64>,
    /// Instruction (default: the task's canonical one).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// DDIM steps (0 = full DDPM).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Classifier-free guidance weight w.
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f64,
    /// Model folder (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also record the plan, with every refinement iteration and its critique, in this plan
    /// store (the folder the studio opens), so CLI and studio share plans.
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub critic: crate::critic_cli::CriticArgs,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only this world.
    #[arg(long)]
    pub world: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// `all` or a comma-separated list of task names.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// `all` or a comma-separated list of view indices or names.
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Episodes per task and view.
    #[arg(long, default_value_t = 25)]
    pub episodes: usize,
    /// Seeds to try per task and view, keeping the --episodes shortest successful
    /// demonstrations (the paper: `--episodes 25 --candidates 33`). Default: --episodes, every
    /// episode kept and failures flagged.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Frame size in pixels (16 to 256).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// First seed; episode e of view v uses seed-base + 3e + v.
    #[arg(long, default_value_t = 0)]
    pub seed_base: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct SheetArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Output PNG.
    #[arg(long, default_value = "docs/tasks.png")]
    pub out: PathBuf,
    /// Frame size in pixels (16 to 256).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Seed of the episodes drawn.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

#[derive(Debug, Args)]
pub struct BenchUiArgs {
    /// Frames measured per scenario (~60 per second of wall time).
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// Comma-separated: default (the shipped model's config), tabletop, ithor, metaworld.
    #[arg(long, default_value = "default,metaworld")]
    pub configs: String,
    /// DDIM steps of the timed plan.
    #[arg(long, default_value_t = 20)]
    pub plan_steps: usize,
    /// Training steps timed per config (0 skips training).
    #[arg(long, default_value_t = 5)]
    pub train_steps: u64,
    /// Timed forward passes per config (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchWorldArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Frame size in pixels (16 to 256).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Seconds of measurement per task.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => studio(&StudioArgs::default()),
        Some(Command::Studio(a)) => studio(&a),
        Some(Command::Tasks(a)) => tasks(&a),
        Some(Command::Dataset(a)) => dataset(&a),
        Some(Command::Sheet(a)) => sheet(&a),
        Some(Command::Train(a)) => train(&a),
        Some(Command::RefineData(a)) => refine_data(&a),
        Some(Command::Plan(a)) => plan(&a),
        Some(Command::Quality(a)) => quality(&a),
        Some(Command::Bench(BenchCommand::World(a))) => bench_world(&a),
        Some(Command::Bench(BenchCommand::Model(a))) => bench_model(&a),
        Some(Command::Bench(BenchCommand::Ui(a))) => bench_ui(&a),
        Some(Command::Bench(BenchCommand::Crash(a))) => store_cli::bench_crash(&a),
        Some(Command::Bench(BenchCommand::CrashWorker(a))) => store_cli::crash_worker(&a),
        Some(Command::Export(a)) => store_cli::export(&a),
        Some(Command::Import(a)) => store_cli::import(&a),
        Some(Command::Store(c)) => store_cli::store(&c),
        Some(Command::CriticCalibrate(a)) => crate::critic_cli::calibrate_cmd(&a),
        Some(Command::CriticAgreement(a)) => crate::critic_cli::agreement_cmd(&a),
        Some(Command::Run(a)) => run_plan(&a),
        Some(Command::Eval(a)) => eval_cmd(&a),
        Some(Command::Improve(a)) => improve_cmd(&a),
        Some(Command::Setup(SetupCommand::Metaworld(a))) => setup_metaworld(&a),
    }
}

fn tasks(args: &TasksArgs) -> Result<()> {
    let names: Vec<&str> = match &args.world {
        Some(w) => vec![w.as_str()],
        None => env::WORLD_NAMES.to_vec(),
    };
    let mut report = Vec::new();
    for name in names {
        let world = open_world(name, 64)?;
        report.push(serde_json::json!({
            "world": name,
            "tasks": world.tasks(),
            "views": world.views(),
            "setup_needed": world.setup_needed(),
        }));
        if !args.json {
            print_world(world.as_ref());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn print_world(world: &dyn World) {
    match world.setup_needed() {
        Some(why) => println!("world {} (needs setup: {why})", world.name()),
        None => println!("world {}", world.name()),
    }
    println!(
        "  {:<20} {:<7} {:>5}  instructions",
        "task", "level", "steps"
    );
    for t in world.tasks() {
        println!(
            "  {:<20} {:<7} {:>5}  {}",
            t.name,
            t.difficulty.to_string(),
            t.max_steps,
            t.instructions.join(" | ")
        );
    }
    println!("  views:");
    for (i, v) in world.views().iter().enumerate() {
        println!("    {i} {:<8} {}", v.name, v.description);
    }
}

fn setup_metaworld(args: &SetupMetaworldArgs) -> Result<()> {
    use videoagent::env::metaworld::{MetaWorld, default_config, setup};
    let venv = args.venv.clone().unwrap_or_else(setup::venv_dir);
    println!("MetaWorld venv: {}", venv.display());
    setup::create_venv(&venv, &args.python)?;
    let start = std::time::Instant::now();
    let mut world = MetaWorld::with_config(64, default_config(&venv))?;
    world
        .reset("door-open", 0, 0)
        .context("the venv is installed but the bridge cannot run a task")?;
    let hello = world
        .hello()
        .cloned()
        .context("the bridge stopped after the reset")?;
    println!(
        "bridge ok: metaworld {}, mujoco {}, MUJOCO_GL={} (start-up + first reset {:.1} s)",
        hello.metaworld.as_deref().unwrap_or("?"),
        hello.mujoco.as_deref().unwrap_or("?"),
        hello.gl.as_deref().unwrap_or("?"),
        start.elapsed().as_secs_f64()
    );
    if venv != setup::venv_dir() {
        println!(
            "not the default location: export {}={}",
            setup::VENV_ENV,
            venv.display()
        );
    }
    Ok(())
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

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn dataset(args: &DatasetArgs) -> Result<()> {
    let world = open_world(&args.world, args.size)?;
    if args.episodes == 0 || args.episodes > 100_000 {
        bail!("--episodes {} is out of range (1 to 100000)", args.episodes);
    }
    let spec = CollectSpec {
        world: args.world.clone(),
        frame_size: args.size,
        tasks: pick_tasks(world.as_ref(), &args.tasks)?,
        views: pick_views(world.as_ref(), &args.views)?,
        episodes: args.episodes,
        candidates: args.candidates.unwrap_or(args.episodes),
        seed_base: args.seed_base,
        threads: args
            .threads
            .unwrap_or_else(videoagent::bench::available_threads),
    };
    if spec.candidates < spec.episodes || spec.candidates > 100_000 {
        bail!(
            "--candidates {} is out of range ({} to 100000: at least --episodes)",
            spec.candidates,
            spec.episodes
        );
    }
    let total = spec.tasks.len() * spec.views.len() * spec.tried();
    let bar = progress(total as u64, "episodes");
    let cancel = AtomicBool::new(false);
    let manifest = collect(&spec, &args.out, &|| bar.inc(1), &cancel)
        .with_context(|| format!("collecting the dataset into {}", args.out.display()))?;
    bar.finish();
    let solved = manifest.episodes.iter().filter(|e| e.success).count();
    let frames: usize = manifest.episodes.iter().map(|e| e.frames).sum();
    println!(
        "wrote {} episodes ({solved} successful, {frames} frames) to {}",
        manifest.episodes.len(),
        args.out.display()
    );
    Ok(())
}

fn sheet(args: &SheetArgs) -> Result<()> {
    let mut world = open_world(&args.world, args.size)?;
    let tasks: Vec<String> = world.tasks().into_iter().map(|t| t.name).collect();
    let views = world.views().len();
    let mut rows = Vec::new();
    for task in &tasks {
        let mut row = Vec::new();
        for view in 0..views {
            let demo = env::demo::record_expert(world.as_mut(), task, view, args.seed)?;
            let n = demo.frames.len();
            for i in [0, n / 2, n - 1] {
                row.push(demo.frames[i].clone());
            }
        }
        rows.push(row);
    }
    let img = videoagent::viz::upscale(&videoagent::viz::grid(&rows, 2, [255, 255, 255]), 2);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    videoagent::viz::write_png(&args.out, &img)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "rows: {}; columns: first, middle, last frame of each view",
        tasks.join(", ")
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

fn bench_world(args: &BenchWorldArgs) -> Result<()> {
    let report = videoagent::bench::world::run(&args.world, args.size, args.seconds)?;
    println!(
        "world {} at {}x{}, one thread",
        report.world, report.frame_size, report.frame_size
    );
    println!(
        "  {:<20} {:>10} {:>14} {:>16}",
        "task", "frames", "frames/s", "physics steps/s"
    );
    for r in &report.rows {
        let physics = r
            .physics_steps_per_sec
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}"));
        println!(
            "  {:<20} {:>10} {:>14.1} {:>16}",
            r.task, r.frames, r.frames_per_sec, physics
        );
    }
    println!("  {:<20} {:>10} {:>14.1}", "all", "", report.frames_per_sec);
    if let Some(path) = &args.json {
        videoagent::store::atomic::write_json(path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_ui(args: &BenchUiArgs) -> Result<()> {
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data/plans");
    let report = videoagent::bench::ui::run(
        videoagent::model::pipeline::default_model_dir(),
        samples,
        args.frames.max(1),
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "studio UI thread, headless, {} threads; first frame after {:.0} ms",
        report.threads, report.first_frame_ms
    );
    println!(
        "  {:<42} {:>7} {:>9} {:>9} {:>9}",
        "scenario", "frames", "p50 ms", "p99 ms", "max ms"
    );
    for s in &report.scenarios {
        println!(
            "  {:<42} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            s.scenario, s.frames, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    if let Some(path) = &args.json {
        videoagent::store::atomic::write_json(path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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

fn train(args: &TrainArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::sync::atomic::Ordering;
    use videoagent::agent::refine_data::training_items;
    use videoagent::model::refine_train::RefineTrainData;
    use videoagent::model::text::TextEncoderKind;
    use videoagent::model::train::{TrainConfig, TrainData, TrainOutcome, TrainSet, Trainer};
    use videoagent::model::{ModelConfig, UNetConfig, device::select_device};
    use videoagent::store::refine_data::RefineData;

    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let mut trainer = if args.resume {
        Trainer::resume(&args.out, Some(args.steps), &device)
            .with_context(|| format!("resuming the run in {}", args.out.display()))?
    } else {
        if args.out.join(videoagent::model::train::STATE_JSON).exists() {
            bail!(
                "{} already holds a training run; pass --resume to continue it or choose another --out",
                args.out.display()
            );
        }
        let mut unet = UNetConfig::by_name(&args.config)?;
        if let Some(size) = args.image_size {
            if size < 8 || !size.is_multiple_of(4) || size > 512 {
                bail!("--image-size {size} must be a multiple of 4 between 8 and 512");
            }
            unet.image_size = (size, size);
        }
        let cfg = TrainConfig {
            steps: args.steps,
            batch: args.batch,
            adam: videoagent::model::adam::AdamConfig {
                lr: args.lr,
                ..Default::default()
            },
            seed: args.seed,
            checkpoint_every: args.checkpoint_every.max(1),
            consistency_weight: args.consistency_weight,
            plain_share: args.plain_share,
            ..TrainConfig::default()
        };
        if !(args.consistency_weight.is_finite() && args.consistency_weight >= 0.0) {
            bail!("--consistency-weight must be a number >= 0");
        }
        if !(0.0..=1.0).contains(&args.plain_share) {
            bail!("--plain-share must be between 0 and 1");
        }
        let mut model_cfg = ModelConfig::new(unet, "tabletop");
        if let Some(dir) = &args.clip {
            let path = std::path::absolute(dir)
                .with_context(|| format!("resolving --clip {}", dir.display()))?;
            model_cfg.text_encoder = TextEncoderKind::Clip { path };
        }
        Trainer::new(model_cfg, cfg, &args.out, args.init.as_deref(), &device)?
    };
    let size = trainer.model.config.frame_size();
    let plain = match &args.data {
        Some(dir) => {
            let dataset = videoagent::store::Dataset::open(dir)?;
            let bar = progress(dataset.episodes().len() as u64, "loading");
            let data = TrainData::load(&dataset, size, || bar.inc(1))?;
            bar.finish_and_clear();
            Some(data)
        }
        None if args.refine_data.is_some() => None,
        None => bail!("--data DIR is required (a dataset from `videoagent dataset`)"),
    };
    let data: Box<dyn TrainSet> = match &args.refine_data {
        Some(dir) => {
            let stored = RefineData::open(dir)?;
            let samples = stored
                .read_all()
                .with_context(|| format!("reading {}", dir.display()))?;
            let data = RefineTrainData::new(size, training_items(&samples), plain)?;
            tracing::info!(
                "refinement: {} starts ({} with two plans), consistency weight {}, plain share {}",
                data.len(),
                data.paired(),
                trainer.config.consistency_weight,
                trainer.config.plain_share
            );
            Box::new(data)
        }
        None => {
            let data = plain.context("--data DIR is required")?;
            tracing::info!("{} episodes at {size}px", data.len());
            Box::new(data)
        }
    };
    tracing::info!(
        "{} parameters, steps {} -> {}",
        trainer.parameter_count(),
        trainer.step(),
        trainer.config.steps
    );
    let stop = interrupt_flag()?;
    let bar = ProgressBar::new(trainer.config.steps);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.step());
    let outcome = trainer.train(data.as_ref(), |p| {
        bar.set_position(p.step);
        bar.set_message(format!("loss {:.4} {:.2} steps/s", p.loss, p.steps_per_sec));
        if stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    bar.finish();
    let plot = videoagent::viz::loss_plot(trainer.loss_log(), 640, 320);
    videoagent::viz::write_png(&args.out.join("loss.png"), &plot)?;
    match outcome {
        TrainOutcome::Finished => println!(
            "finished at step {}; model in {}",
            trainer.step(),
            args.out.display()
        ),
        TrainOutcome::Stopped => {
            println!("stopped at step {}; resume with --resume", trainer.step())
        }
    }
    Ok(())
}

fn refine_data(args: &RefineDataArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::sync::atomic::Ordering;
    use videoagent::agent::refine_data::{
        RefineDataProgress, RefineDataSpec, generate_refine_data, select_starts,
    };
    use videoagent::critic::PerceptionCritic;
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };
    use videoagent::store::refine_data::{RefineData, RefineDataHeader};

    if !(1..=2).contains(&args.generations) {
        bail!("--generations must be 1 or 2");
    }
    if args.steps == 0 || args.per_task == 0 {
        bail!("--steps and --per-task must be at least 1");
    }
    let dataset = videoagent::store::Dataset::open(&args.data)?;
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let model = VideoModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let header = RefineDataHeader::new(
        &dataset.manifest.world,
        &model_dir.display().to_string(),
        model.config.frame_size() as u32,
        args.steps,
        args.generations,
        "perception",
        args.seed,
    );
    let out = RefineData::create_or_continue(&args.out, header)?;
    let starts = select_starts(&dataset, args.per_task);
    let spec = RefineDataSpec {
        generations: args.generations,
        sample: SampleConfig::ddim(args.steps),
        seed: args.seed,
    };
    let stop = interrupt_flag()?;
    let bar = progress(starts.len() as u64, "refine-data");
    let (mut skipped, mut accepted, mut plans) = (0usize, 0usize, 0usize);
    let generated = generate_refine_data(
        &model,
        &PerceptionCritic::default(),
        &dataset,
        &starts,
        &out,
        &spec,
        &mut |p| {
            match p {
                RefineDataProgress::Skipped(_) => skipped += 1,
                RefineDataProgress::Stored(s) => {
                    plans += s.meta.generations.len();
                    accepted += s
                        .meta
                        .generations
                        .iter()
                        .filter(|g| g.review.is_accept())
                        .count();
                }
            }
            bar.inc(1);
            if stop.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{generated} starts generated now ({plans} plans, {accepted} accepted by the critic), {skipped} already there; data in {}",
        args.out.display()
    );
    if stop.load(Ordering::SeqCst) {
        println!("interrupted; rerun the same command to continue");
    }
    Ok(())
}

fn plan(args: &PlanArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::time::Instant;
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };
    use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

    let mut world = open_world(&args.world, 64)?;
    let view = env::resolve_view(&world.views(), &args.view)?;
    let info = world
        .tasks()
        .into_iter()
        .find(|t| t.name == args.task)
        .with_context(|| format!("unknown task '{}' (see `videoagent tasks`)", args.task))?;
    let instruction = args
        .instruction
        .clone()
        .unwrap_or_else(|| info.instruction().to_owned());
    if instruction.trim().is_empty() {
        bail!("the instruction is empty");
    }
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let plan_start = crate::critic_cli::PlanStart {
        world: &args.world,
        view,
        seed: args.seed,
    };
    let critic = crate::critic_cli::make_critic(
        &args.critic.critic,
        &args.critic.access,
        plan_start,
        &device,
    )?;
    let t0 = Instant::now();
    let model = VideoModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let start = world.reset(&args.task, view, args.seed)?;
    let first = start.rgb.clone();
    let sample = if args.steps == 0 {
        SampleConfig {
            guidance_weight: args.guidance,
            ..SampleConfig::ddpm()
        }
    } else {
        SampleConfig {
            guidance_weight: args.guidance,
            ..SampleConfig::ddim(args.steps)
        }
    };
    let sample_seed = args.sample_seed.unwrap_or(args.seed);
    let bar = progress(
        if args.steps == 0 {
            100
        } else {
            args.steps as u64
        },
        "sampling",
    );
    let t1 = Instant::now();
    let (frames, refinement) = if args.critic.wants_loop() {
        bar.finish_and_clear();
        let (frames, record) = crate::critic_cli::refine_plan(
            &args.critic,
            critic.as_deref(),
            &model,
            &start,
            &args.task,
            &instruction,
            &sample,
            sample_seed,
            &args.out,
        )?;
        (frames, Some(record))
    } else {
        let frames = model
            .plan(&first, None, &instruction, &sample, sample_seed, |_| {
                bar.inc(1);
                ControlFlow::Continue(())
            })?
            .context("sampling was cancelled")?;
        (frames, None)
    };
    let sample_ms = t1.elapsed().as_secs_f64() * 1e3;
    bar.finish_and_clear();
    let record = PlanRecord {
        world: args.world.clone(),
        task: args.task.clone(),
        view,
        instruction,
        env_seed: args.seed,
        sample_seed,
        model: model_dir.display().to_string(),
        device: videoagent::model::device::device_label(&device).to_owned(),
        sampler: SamplerRecord {
            kind: if args.steps == 0 { "ddpm" } else { "ddim" }.to_owned(),
            steps: if args.steps == 0 { 100 } else { args.steps },
            guidance: args.guidance,
        },
        load_ms,
        sample_ms,
        frames: (0..=frames.len())
            .map(|i| format!("frames/{i:02}.png"))
            .collect(),
        refinement,
    };
    write_plan(&args.out, &record, &first, &frames)
        .with_context(|| format!("writing the plan to {}", args.out.display()))?;
    println!(
        "plan written to {} (load {load_ms:.0} ms, sampling {sample_ms:.0} ms)",
        args.out.display()
    );
    if let Some(dir) = &args.store {
        let store = store_cli::open(dir)?;
        let id = videoagent::store::db::add_plan_folder(&store, &args.out)
            .with_context(|| format!("recording the plan in the store {}", dir.display()))?;
        println!("recorded as plan {id} in the store {}", dir.display());
    }
    Ok(())
}

fn bench_model(args: &BenchModelArgs) -> Result<()> {
    use videoagent::bench::model::{BenchPlan, run};
    use videoagent::model::{
        ModelConfig, UNetConfig, device::select_device, pipeline::default_model_dir,
    };

    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let mut plans = Vec::new();
    for name in args.configs.split(',').map(str::trim) {
        let (unet, full) = if name == "default" {
            let path = default_model_dir().join(videoagent::model::pipeline::CONFIG_FILE);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let cfg: ModelConfig = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?;
            (cfg.unet, true)
        } else {
            let unet = UNetConfig::by_name(name)?;
            let small = unet.model_channels * unet.image_size.0 <= 64 * 64;
            (unet, small)
        };
        plans.push(BenchPlan {
            name: name.to_owned(),
            unet,
            forward_reps: args.reps,
            plan_steps: full.then_some(args.plan_steps),
            train_steps: (full && args.train_steps > 0).then_some(args.train_steps),
        });
    }
    let report = run(&plans, &device)?;
    println!(
        "device {}, {} threads, matmul peak {:.1} GFLOP/s",
        report.device, report.threads, report.matmul_gflops_per_sec
    );
    println!(
        "  {:<10} {:>5} {:>11} {:>8} {:>11} {:>9} {:>12} {:>14}",
        "config", "size", "params", "GFLOP", "forward ms", "GFLOP/s", "plan ms", "train steps/s"
    );
    for c in &report.configs {
        println!(
            "  {:<10} {:>5} {:>11} {:>8.2} {:>11.1} {:>9.1} {:>12} {:>14}",
            c.config,
            c.image_size,
            c.parameters,
            c.forward_gflop,
            c.forward_ms,
            c.forward_gflops_per_sec,
            c.plan_ms.map_or("-".to_owned(), |v| format!(
                "{v:.0} (DDIM {})",
                c.plan_steps
            )),
            c.train_steps_per_sec
                .map_or("-".to_owned(), |v| format!("{v:.3} (b{})", c.train_batch)),
        );
    }
    if let Some(path) = &args.json {
        videoagent::store::atomic::write_json(path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn quality_per_iteration(
    args: &QualityArgs,
    model: &videoagent::model::VideoModel,
    world: &mut dyn World,
    tasks: &[String],
    views: &[usize],
    sample: &videoagent::model::SampleConfig,
) -> Result<()> {
    use videoagent::agent::model_eval::{HELD_OUT_SEED, score_refinement};
    use videoagent::critic::PerceptionCritic;

    let critic = PerceptionCritic::default();
    let bar = progress((tasks.len() * views.len()) as u64 * args.seeds, "starts");
    let mut all = Vec::new();
    for task in tasks {
        for &view in views {
            for s in 0..args.seeds {
                let seed = HELD_OUT_SEED + s * 3 + view as u64;
                let scores =
                    score_refinement(model, &critic, world, task, view, seed, sample, args.refine)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                all.extend(scores);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "per-iteration quality of {} (DDIM {}, perception critic, {} starts)",
        model.source.display(),
        args.steps,
        all.iter().filter(|s| s.iteration == 0).count()
    );
    println!(
        "| iteration | PSNR | SSIM | accepted | findings per plan | task object found | its final error (px) |\n|---|---|---|---|---|---|---|"
    );
    for i in 0..=args.refine {
        let it: Vec<_> = all.iter().filter(|s| s.iteration == i).collect();
        let n = it.len().max(1) as f64;
        let errors: Vec<f64> = it.iter().filter_map(|s| s.final_position_error).collect();
        println!(
            "| {i} | {:.2} | {:.3} | {:.0}% | {:.2} | {:.0}% | {:.2} |",
            it.iter().map(|s| s.psnr).sum::<f64>() / n,
            it.iter().map(|s| s.ssim).sum::<f64>() / n,
            100.0 * it.iter().filter(|s| s.accepted).count() as f64 / n,
            it.iter().map(|s| s.findings as f64).sum::<f64>() / n,
            100.0 * errors.len() as f64 / n,
            errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        );
    }
    if let Some(path) = &args.json {
        videoagent::store::atomic::write_json(path, &all)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn quality(args: &QualityArgs) -> Result<()> {
    use videoagent::agent::model_eval::{HELD_OUT_SEED, QualityReport, score_plan, summarise};
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };

    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let model = VideoModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let mut world = open_world(&model.config.world, 64)?;
    let tasks = pick_tasks(world.as_ref(), &args.tasks)?;
    let views = pick_views(world.as_ref(), &args.views)?;
    let sample = SampleConfig::ddim(args.steps);
    if args.refine > 0 {
        return quality_per_iteration(args, &model, world.as_mut(), &tasks, &views, &sample);
    }
    let bar = progress((tasks.len() * views.len()) as u64 * args.seeds, "plans");
    let mut plans = Vec::new();
    let mut rows = Vec::new();
    for task in &tasks {
        for &view in &views {
            for s in 0..args.seeds {
                let seed = HELD_OUT_SEED + s * 3 + view as u64;
                let scored = score_plan(&model, world.as_mut(), task, view, seed, &sample)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(scored) = scored {
                    if rows.len() < 2 * tasks.len()
                        && plans
                            .iter()
                            .all(|p: &videoagent::agent::model_eval::PlanScore| &p.task != task)
                    {
                        rows.push(scored.expert.clone());
                        rows.push(
                            std::iter::once(scored.expert[0].clone())
                                .chain(scored.plan)
                                .collect(),
                        );
                    }
                    plans.push(scored.score);
                }
                bar.inc(1);
            }
        }
    }
    if let Some(path) = &args.figure {
        let img = videoagent::viz::upscale(&videoagent::viz::grid(&rows, 1, [255, 255, 255]), 3);
        videoagent::viz::write_png(path, &img)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    bar.finish_and_clear();
    let report = QualityReport {
        model: model_dir.display().to_string(),
        frame_size: model.config.frame_size(),
        sampler_steps: args.steps,
        tasks: summarise(&plans),
        plans,
    };
    println!(
        "held-out quality of {} (DDIM {}), expert video as reference; 'copy' repeats frame 0",
        report.model, args.steps
    );
    println!(
        "  {:<14} {:>5} {:>7} {:>6} {:>10} {:>7} {:>10} {:>10}",
        "task", "plans", "PSNR", "SSIM", "final err", "found", "copy PSNR", "copy err"
    );
    for t in &report.tasks {
        println!(
            "  {:<14} {:>5} {:>7.2} {:>6.3} {:>10.2} {:>6.0}% {:>10.2} {:>10.2}",
            t.task,
            t.plans,
            t.psnr,
            t.ssim,
            t.final_position_error,
            t.object_found * 100.0,
            t.copy_psnr,
            t.copy_final_position_error
        );
    }
    if let Some(path) = &args.json {
        videoagent::store::atomic::write_json(path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// --- plan store (issue 5): export, import, store check/list, bench crash ---
mod store_cli {
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result, bail};
    use clap::{Args, Subcommand, ValueEnum};

    use rand::SeedableRng;
    use videoagent::bench::crash::{self, CrashSpec};
    use videoagent::bench::crash_train;
    use videoagent::store::db::{
        Filter, ImageImport, PlanId, Store, export_json, import_images, import_json,
    };
    use videoagent::store::export::{
        export_gif, export_mp4, export_reference, export_strip, find_ffmpeg,
    };

    #[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
    pub enum ExportFormat {
        /// `store.json` + frames: re-importable with `videoagent import`.
        Json,
        /// One animated GIF per plan (start frame + last iteration).
        Gif,
        /// One PNG per plan, a row per refinement iteration.
        PngStrip,
        /// One MP4 per plan (needs ffmpeg).
        Mp4,
        /// The curated set in the reference PyTorch trainer's folder layout.
        Reference,
        /// The curated set as a LeRobot-style dataset (Parquet + meta/info.json).
        Lerobot,
    }

    #[derive(Debug, Args)]
    pub struct ExportArgs {
        /// Store folder.
        #[arg(long)]
        pub store: PathBuf,
        #[arg(long, value_enum)]
        pub format: ExportFormat,
        /// Which plans: all, curated, or comma-separated ids (default: curated for reference,
        /// all otherwise).
        #[arg(long)]
        pub plans: Option<String>,
        /// Output folder (created; for json and reference it must not exist or be empty).
        #[arg(long)]
        pub out: PathBuf,
    }

    #[derive(Debug, Args)]
    pub struct ImportArgs {
        /// Store folder (created if needed).
        #[arg(long)]
        pub store: PathBuf,
        /// A folder written by `export --format json`.
        #[arg(long, conflicts_with = "images")]
        pub from: Option<PathBuf>,
        /// A folder of first-frame images (PNG or GIF): one new plan each.
        #[arg(long)]
        pub images: Option<PathBuf>,
        /// Task of the imported images' plans.
        #[arg(long, requires = "images")]
        pub task: Option<String>,
        /// Instruction of the imported images' plans (default: the task name).
        #[arg(long)]
        pub instruction: Option<String>,
        #[arg(long, default_value = "tabletop")]
        pub world: String,
        #[arg(long, default_value_t = 0)]
        pub view: usize,
        /// Who imports (recorded in the audit log).
        #[arg(long, default_value = "import")]
        pub actor: String,
    }

    #[derive(Debug, Subcommand)]
    pub enum StoreCommand {
        /// Open the store, run its integrity and file check, print what was found and repaired.
        Check {
            #[arg(long)]
            store: PathBuf,
        },
        /// List plans (id, task, view, iterations, critic verdict, labels, curated).
        List {
            #[arg(long)]
            store: PathBuf,
            #[arg(long)]
            curated: bool,
        },
    }

    #[derive(Debug, Args)]
    pub struct BenchCrashArgs {
        /// Store folder to torture (default: a new temporary folder).
        #[arg(long)]
        pub store: Option<PathBuf>,
        /// Processes to kill.
        #[arg(long, default_value_t = 200)]
        pub iterations: usize,
        #[arg(long, default_value_t = 20)]
        pub min_delay_ms: u64,
        #[arg(long, default_value_t = 300)]
        pub max_delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        pub seed: u64,
        /// Then kill `videoagent train` this many times (a tiny run beside the store, in
        /// STORE-train/), verifying after each kill that the run loads and resumes, and at
        /// the end that it finishes with the weights of an uninterrupted run.
        #[arg(long, default_value_t = 0)]
        pub train_kills: usize,
        /// Training kills come this long after the process starts (it loads for ~0.5 s).
        #[arg(long, default_value_t = 300)]
        pub train_min_delay_ms: u64,
        #[arg(long, default_value_t = 4000)]
        pub train_max_delay_ms: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        pub json: Option<PathBuf>,
    }

    #[derive(Debug, Args)]
    pub struct CrashWorkerArgs {
        #[arg(long)]
        pub store: PathBuf,
        #[arg(long)]
        pub journal: PathBuf,
        #[arg(long)]
        pub seed: u64,
        /// Stop after this many operations (default: until killed).
        #[arg(long)]
        pub ops: Option<usize>,
    }

    /// Opens a store, printing what its check found and repaired.
    pub fn open(dir: &Path) -> Result<Store> {
        let (store, report) = Store::open(dir)
            .with_context(|| format!("cannot open the store in {}", dir.display()))?;
        if !report.is_clean() {
            eprintln!("{report}");
        }
        Ok(store)
    }

    fn pick(store: &Store, which: &str) -> Result<Vec<PlanId>> {
        Ok(match which {
            "all" => store
                .plans(&Filter::default())?
                .iter()
                .map(|p| p.id)
                .collect(),
            "curated" => store.curated()?.iter().map(|p| p.id).collect(),
            list => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .trim_start_matches('#')
                        .parse::<i64>()
                        .map(PlanId)
                        .with_context(|| format!("--plans: {s:?} is not a plan id"))
                })
                .collect::<Result<_>>()?,
        })
    }

    pub fn export(args: &ExportArgs) -> Result<()> {
        let store = open(&args.store)?;
        let default = if matches!(args.format, ExportFormat::Reference | ExportFormat::Lerobot) {
            "curated"
        } else {
            "all"
        };
        let plans = pick(&store, args.plans.as_deref().unwrap_or(default))?;
        if plans.is_empty() {
            bail!("no plans to export (the selection is empty)");
        }
        let folder_export = matches!(
            args.format,
            ExportFormat::Json | ExportFormat::Reference | ExportFormat::Lerobot
        );
        let occupied = args.out.is_file()
            || std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some());
        if folder_export && occupied {
            bail!(
                "{} already exists and is not empty: choose a new folder",
                args.out.display()
            );
        }
        match args.format {
            ExportFormat::Json => {
                let n = export_json(&store, &plans, &args.out)?;
                println!("exported {n} plans to {}", args.out.display());
            }
            ExportFormat::Reference => {
                let m = export_reference(&store, &plans, &args.out)?;
                println!(
                    "exported {} trajectories in the reference layout to {}",
                    m.trajectories.len(),
                    args.out.display()
                );
            }
            ExportFormat::Lerobot => {
                let n = videoagent::store::lerobot::export_lerobot(&store, &plans, &args.out)?;
                println!(
                    "exported {n} episodes as a LeRobot dataset to {}",
                    args.out.display()
                );
            }
            ExportFormat::Gif | ExportFormat::PngStrip | ExportFormat::Mp4 => {
                if args.format == ExportFormat::Mp4 && find_ffmpeg().is_none() {
                    bail!(videoagent::store::export::ExportError::FfmpegMissing);
                }
                std::fs::create_dir_all(&args.out)
                    .with_context(|| format!("cannot create {}", args.out.display()))?;
                for p in &plans {
                    let (ext, f): (&str, fn(&Store, PlanId, &Path) -> _) = match args.format {
                        ExportFormat::Gif => ("gif", export_gif),
                        ExportFormat::PngStrip => ("png", export_strip),
                        _ => ("mp4", export_mp4),
                    };
                    let path = args.out.join(format!("plan-{}.{ext}", p.0));
                    f(&store, *p, &path).with_context(|| format!("plan {p}"))?;
                    println!("{}", path.display());
                }
            }
        }
        Ok(())
    }

    pub fn import(args: &ImportArgs) -> Result<()> {
        let store = open(&args.store)?;
        match (&args.from, &args.images) {
            (Some(from), None) => {
                let r = import_json(&store, from, &args.actor)
                    .with_context(|| format!("cannot import {}", from.display()))?;
                println!(
                    "{} plans added ({} already present), {} iterations, {} executions, \
                     {} labels ({} newer ones kept), {} preferences, {} curated",
                    r.plans_added.len(),
                    r.plans_already_present,
                    r.iterations_added,
                    r.executions_added,
                    r.labels_added,
                    r.labels_kept_newer,
                    r.preferences_added,
                    r.curated_added
                );
            }
            (None, Some(images)) => {
                let task = args.task.clone().context("--images needs --task")?;
                let what = ImageImport {
                    world: args.world.clone(),
                    instruction: args
                        .instruction
                        .clone()
                        .unwrap_or_else(|| task.replace('-', " ")),
                    task,
                    view: args.view,
                    model: String::new(),
                };
                let (added, skipped) = import_images(&store, images, &what)?;
                for s in &skipped {
                    eprintln!("skipped (not an image): {}", s.display());
                }
                println!("{} plans added from {}", added.len(), images.display());
            }
            _ => bail!("give --from EXPORT_DIR or --images DIR"),
        }
        Ok(())
    }

    pub fn store(cmd: &StoreCommand) -> Result<()> {
        match cmd {
            StoreCommand::Check { store } => {
                let (_, report) = Store::open(store)
                    .with_context(|| format!("cannot open the store in {}", store.display()))?;
                println!("{report}");
                if report.has_unrepaired() {
                    bail!("the store has problems it could not repair (see above)");
                }
            }
            StoreCommand::List { store, curated } => {
                let s = open(store)?;
                let plans = if *curated {
                    s.curated()?
                } else {
                    s.plans(&Filter::default())?
                };
                println!("id\ttask\tview\titers\tcritic\taccept\treject\tcurated\tinstruction");
                for p in plans {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        p.id.0,
                        p.task,
                        p.view,
                        p.iterations,
                        p.critic_verdict.map_or("-", |v| v.as_str()),
                        p.accepts,
                        p.rejects,
                        if p.curated { "yes" } else { "" },
                        p.instruction
                    );
                }
            }
        }
        Ok(())
    }

    pub fn bench_crash(args: &BenchCrashArgs) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let (dir, _keep) = match &args.store {
            Some(d) => (d.clone(), None),
            None => {
                let d = std::env::temp_dir().join(format!(
                    "videoagent-crash-{}-{}",
                    std::process::id(),
                    args.seed
                ));
                (d.clone(), Some(d))
            }
        };
        let spec = CrashSpec {
            store: dir.clone(),
            iterations: args.iterations,
            min_delay_ms: args.min_delay_ms,
            max_delay_ms: args.max_delay_ms,
            seed: args.seed,
        };
        let worker = |store: &Path, journal: &Path, seed: u64| {
            let mut c = std::process::Command::new(&exe);
            c.args(["bench", "crash-worker", "--store"])
                .arg(store)
                .arg("--journal")
                .arg(journal)
                .arg("--seed")
                .arg(seed.to_string());
            c
        };
        let mut report = crash::run(&spec, &worker, |i, r| {
            if i % 20 == 0 || i == args.iterations {
                eprintln!(
                    "{i}/{} kills={} failures={}",
                    args.iterations,
                    r.kills,
                    r.failures.len()
                );
            }
        })?;
        if args.train_kills > 0 {
            let mut name = dir.file_name().unwrap_or_default().to_owned();
            name.push("-train");
            let train_spec = crash_train::TrainKillSpec {
                dir: dir.with_file_name(name),
                kills: args.train_kills,
                min_delay_ms: args.train_min_delay_ms,
                max_delay_ms: args.train_max_delay_ms,
            };
            let exe = || std::process::Command::new(&exe);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            let training = crash_train::run(&train_spec, &exe, &mut rng, |i, r| {
                if i % 10 == 0 || i == args.train_kills {
                    eprintln!(
                        "training {i}/{} kills={} step={} failures={}",
                        args.train_kills,
                        r.kills,
                        r.last_resumed_step,
                        r.failures.len()
                    );
                }
            })?;
            report
                .failures
                .extend(training.failures.iter().map(|f| format!("training: {f}")));
            report.training = Some(training);
        }
        println!("store                      {}", dir.display());
        println!("processes killed (SIGKILL) {}", report.kills);
        println!("exited before the kill     {}", report.early_exits);
        println!(
            "acknowledged changes       {} (all verified)",
            report.acknowledged_checked
        );
        println!(
            "label changes committed    {}",
            report.label_changes_committed
        );
        println!("plans in store             {}", report.plans_added);
        println!("exports verified           {}", report.exports_verified);
        println!(
            "partial exports removed    {}",
            report.partial_exports_removed
        );
        println!(
            "orphan frames removed      {}",
            report.orphan_frames_removed
        );
        println!("temp files removed         {}", report.temp_files_removed);
        if let Some(t) = &report.training {
            println!("training processes killed  {}", t.kills);
            println!(
                "training checkpoints ok    {} (loaded and resumed; {} kills before the first)",
                t.checkpoints_verified, t.before_first_checkpoint
            );
            println!("training kills mid-save    {}", t.kills_mid_save);
            println!(
                "training finished at step  {} (resumed at {} after the last kill)",
                t.final_step, t.last_resumed_step
            );
            println!(
                "same weights as unkilled   {}",
                if t.matches_uninterrupted { "yes" } else { "no" }
            );
            println!("training elapsed           {:.1} s", t.elapsed_secs);
        }
        println!("failures                   {}", report.failures.len());
        println!("store elapsed              {:.1} s", report.elapsed_secs);
        if let Some(path) = &args.json {
            videoagent::store::atomic::write_json(path, &report)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if !report.failures.is_empty() {
            for f in report.failures.iter().take(20) {
                eprintln!("FAIL {f}");
            }
            bail!("{} failures", report.failures.len());
        }
        Ok(())
    }

    pub fn crash_worker(args: &CrashWorkerArgs) -> Result<()> {
        crash::worker(&args.store, &args.journal, args.seed, args.ops)?;
        Ok(())
    }
}

// ---- `videoagent run`: plan -> action -> rollout (issue 7) --------------------------------

#[derive(Debug, Args)]
pub struct RunArgs {
    /// World (see `videoagent tasks`).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Task name (see `videoagent tasks`).
    #[arg(long)]
    pub task: String,
    /// View index or name.
    #[arg(long, default_value = "0")]
    pub view: String,
    /// Seed of the start state (and of the sampler).
    #[arg(long, default_value_t = 1_000_000)]
    pub seed: u64,
    /// Model folder (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// New plans allowed when the gripper stalls (the paper uses up to 5).
    #[arg(long, default_value_t = 0)]
    pub replan: usize,
    /// Execute the expert's own video (8 frames, at --plan-size) instead of a model plan.
    #[arg(long, conflicts_with_all = ["model", "replan"])]
    pub expert_plan: bool,
    /// Frame side of an expert plan (model plans are at the model's size).
    #[arg(long, default_value_t = 32)]
    pub plan_size: u32,
    /// DDIM steps per plan.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Step limit of the episode (default: the task's).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Output folder: the plan (frames/, plan.gif, plan.json), rollout.gif, run.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// `run.json`.
#[derive(Debug, serde::Serialize)]
struct RunRecord {
    world: String,
    task: String,
    view: usize,
    seed: u64,
    /// The model folder, or `expert` for --expert-plan.
    planner: String,
    success: bool,
    steps: u32,
    max_steps: u32,
    replans: usize,
    failure: Option<String>,
    /// Gripper subgoals (table coordinates) of every plan executed.
    subgoals: Vec<Vec<[f32; 2]>>,
    timings_ms: RunTimings,
}

#[derive(Debug, serde::Serialize)]
struct RunTimings {
    load: f64,
    first_plan: f64,
    replanning: f64,
    motion: f64,
    world: f64,
    total: f64,
}

/// `run --world metaworld`: the 3D path (`agent::execute3d`) with the expert's video or a
/// model's plan, replanning on stalls; no rollout frames (the 3D path records none).
fn run_metaworld(args: &RunArgs) -> Result<()> {
    use videoagent::agent::eval::model_plan;
    use videoagent::agent::execute::{Replanner, expert_plan};
    use videoagent::agent::execute3d::{Execute3dConfig, execute_plan_3d};
    use videoagent::env::metaworld::MetaWorld;
    use videoagent::model::SampleConfig;
    // The object is lifted from the world's own frames: at least 128 px for a usable mask.
    let mut world = MetaWorld::new(args.plan_size.clamp(128, 256))?;
    let view = env::resolve_view(&world.views(), &args.view)?;
    let instruction = videoagent::env::metaworld::tasks::find(&args.task)
        .with_context(|| format!("unknown task '{}' (see `videoagent tasks`)", args.task))?
        .instructions[0];
    let model = match args.expert_plan {
        true => None,
        false => Some(load_run_model(args)?),
    };
    let sample = SampleConfig::ddim(args.steps.max(1));
    let first = world.reset(&args.task, view, args.seed)?;
    let plan = match &model {
        None => expert_plan(&mut world, &args.task, view, args.seed, args.plan_size)?,
        Some((m, _)) => model_plan(m, &first.rgb, instruction, &sample, args.seed)
            .map_err(anyhow::Error::msg)?,
    };
    let config = Execute3dConfig {
        max_steps: args
            .max_steps
            .unwrap_or(Execute3dConfig::default().max_steps),
        max_replans: args.replan,
        ..Execute3dConfig::default()
    };
    let mut replans = 0u64;
    let mut hook = |obs: &videoagent::env::Observation| {
        replans += 1;
        let (m, _) = model.as_ref().ok_or("no model to replan with")?;
        model_plan(m, &obs.rgb, instruction, &sample, args.seed + replans)
    };
    let hook_ref: Option<&mut Replanner<'_>> = match (&model, args.replan) {
        (Some(_), 1..) => Some(&mut hook),
        _ => None,
    };
    let rollout = execute_plan_3d(&mut world, &args.task, &plan, &config, hook_ref)
        .with_context(|| format!("executing the plan for {}", args.task))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let strip = args.out.join("plan.png");
    videoagent::viz::write_png(&strip, &videoagent::viz::grid(&[plan], 2, [255, 255, 255]))
        .with_context(|| format!("writing {}", strip.display()))?;
    let json = args.out.join("run.json");
    let planner = model
        .as_ref()
        .map_or("expert".to_owned(), |(_, dir)| dir.display().to_string());
    let record = serde_json::json!({
        "world": args.world, "task": args.task, "view": view, "seed": args.seed,
        "planner": planner, "rollout": rollout,
    });
    videoagent::store::atomic::write_json(&json, &record)
        .with_context(|| format!("writing {}", json.display()))?;
    match &rollout.failure {
        None => println!(
            "success in {} steps ({} replans); {}",
            rollout.steps,
            rollout.replans,
            json.display()
        ),
        Some(why) => println!(
            "failed after {} steps ({} replans): {why}; {}",
            rollout.steps,
            rollout.replans,
            json.display()
        ),
    }
    Ok(())
}

/// The model of `run` (`--model`, else the shipped one) on `--device`, with its folder.
fn load_run_model(args: &RunArgs) -> Result<(videoagent::model::VideoModel, PathBuf)> {
    let dir = args
        .model
        .clone()
        .unwrap_or_else(videoagent::model::pipeline::default_model_dir);
    let (device, note) = videoagent::model::device::select_device(&args.device)?;
    tracing::info!("{note}");
    let model = videoagent::model::VideoModel::load(&dir, &device)
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    Ok((model, dir))
}

fn run_plan(args: &RunArgs) -> Result<()> {
    use std::time::Instant;
    use videoagent::agent::eval::model_plan;
    use videoagent::agent::execute::{ExecuteConfig, Replanner, execute_plan, expert_plan};
    use videoagent::model::{SampleConfig, VideoModel};
    use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

    if args.world == videoagent::env::metaworld::WORLD_NAME {
        return run_metaworld(args);
    }
    let t_start = Instant::now();
    let mut world = open_world(&args.world, 64)?;
    let view = env::resolve_view(&world.views(), &args.view)?;
    let info = world
        .tasks()
        .into_iter()
        .find(|t| t.name == args.task)
        .with_context(|| format!("unknown task '{}' (see `videoagent tasks`)", args.task))?;
    if !(8..=256).contains(&args.plan_size) {
        bail!("--plan-size {} is out of range (8 to 256)", args.plan_size);
    }
    let instruction = info.instruction().to_owned();
    let sample = SampleConfig::ddim(args.steps.max(1));
    let t0 = Instant::now();
    let (model, model_dir) = match args.expert_plan {
        true => (None, None),
        false => {
            let (model, dir) = load_run_model(args)?;
            (Some(model), Some(dir))
        }
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    // A plan is the start frame (at the plan's size) followed by the generated frames.
    let plan_from = |model: &VideoModel, frame: &videoagent::env::Rgb8Image, seed: u64| {
        model_plan(model, frame, &instruction, &sample, seed)
    };
    let t1 = Instant::now();
    let first = world.reset(&args.task, view, args.seed)?;
    let plan = match &model {
        None => expert_plan(world.as_mut(), &args.task, view, args.seed, args.plan_size)?,
        Some(m) => plan_from(m, &first.rgb, args.seed).map_err(anyhow::Error::msg)?,
    };
    let first_plan_ms = t1.elapsed().as_secs_f64() * 1e3;
    let planner = model_dir
        .as_ref()
        .map_or("expert".to_owned(), |d| d.display().to_string());
    let record = PlanRecord {
        world: args.world.clone(),
        task: args.task.clone(),
        view,
        instruction: instruction.clone(),
        env_seed: args.seed,
        sample_seed: args.seed,
        model: planner.clone(),
        device: model.as_ref().map_or("none".to_owned(), |m| {
            videoagent::model::device::device_label(&m.device).to_owned()
        }),
        sampler: SamplerRecord {
            kind: if model.is_some() { "ddim" } else { "expert" }.to_owned(),
            steps: if model.is_some() {
                args.steps.max(1)
            } else {
                0
            },
            guidance: 0.0,
        },
        load_ms,
        sample_ms: first_plan_ms,
        frames: (0..plan.len())
            .map(|i| format!("frames/{i:02}.png"))
            .collect(),
        refinement: None,
    };
    write_plan(&args.out, &record, &first.rgb, plan.get(1..).unwrap_or(&[]))
        .with_context(|| format!("writing the plan to {}", args.out.display()))?;

    let config = ExecuteConfig {
        max_steps: args.max_steps,
        max_replans: args.replan,
        ..ExecuteConfig::default()
    };
    let mut replans: Vec<Vec<videoagent::env::Rgb8Image>> = Vec::new();
    let mut hook =
        |obs: &videoagent::env::Observation| -> Result<Vec<videoagent::env::Rgb8Image>, String> {
            let m = model
                .as_ref()
                .ok_or_else(|| "no model to replan with".to_owned())?;
            let p = plan_from(m, &obs.rgb, args.seed + 1 + replans.len() as u64)?;
            replans.push(p.clone());
            Ok(p)
        };
    let hook_ref: Option<&mut Replanner<'_>> = if model.is_some() && args.replan > 0 {
        Some(&mut hook)
    } else {
        None
    };
    let rollout = execute_plan(world.as_mut(), &args.task, &plan, &config, hook_ref)
        .with_context(|| format!("executing the plan for {}", args.task))?;
    for (i, p) in replans.iter().enumerate() {
        let dir = args.out.join(format!("replan-{}", i + 1));
        let start = p.first().cloned().unwrap_or_else(|| first.rgb.clone());
        write_plan(&dir, &record, &start, p.get(1..).unwrap_or(&[]))
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    let gif_frames: Vec<_> = rollout.frames.iter().step_by(2).cloned().collect();
    let gif = args.out.join("rollout.gif");
    videoagent::viz::write_gif(&gif, &gif_frames, 60, 3)
        .with_context(|| format!("writing {}", gif.display()))?;
    let run = RunRecord {
        world: args.world.clone(),
        task: args.task.clone(),
        view,
        seed: args.seed,
        planner,
        success: rollout.success,
        steps: rollout.steps,
        max_steps: args.max_steps.unwrap_or(info.max_steps),
        replans: rollout.replans,
        failure: rollout.failure.clone(),
        subgoals: rollout.subgoals.clone(),
        timings_ms: RunTimings {
            load: load_ms,
            first_plan: first_plan_ms,
            replanning: rollout.replan_ms,
            motion: rollout.motion_ms,
            world: rollout.world_ms,
            total: t_start.elapsed().as_secs_f64() * 1e3,
        },
    };
    let json = args.out.join("run.json");
    videoagent::store::atomic::write_json(&json, &run)
        .with_context(|| format!("writing {}", json.display()))?;
    match &rollout.failure {
        None => println!(
            "success in {} steps ({} replans); rollout in {}",
            rollout.steps,
            rollout.replans,
            args.out.display()
        ),
        Some(why) => println!(
            "failed after {} steps ({} replans): {why}; rollout in {}",
            rollout.steps,
            rollout.replans,
            args.out.display()
        ),
    }
    Ok(())
}

// ---- `videoagent eval` and `videoagent improve`: the paper's table and online rounds ------

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// World: tabletop, or metaworld (plans run through the 3D path; world and expert plans
    /// at 128 px).
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// `all` or a comma list of tasks.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// `all` or a comma list of view indices or names.
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Held-out seeds per task and view (from 1,000,000).
    #[arg(long, default_value_t = 25)]
    pub seeds: u64,
    /// Methods, comma-separated: expert, baseline, refine, replan.
    #[arg(long, default_value = "baseline,refine,replan")]
    pub modes: String,
    /// Report (JSON); the episode log goes beside it (.jsonl) and the chart (.png).
    #[arg(long)]
    pub json: PathBuf,
    /// Model folder (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// DDIM steps per plan.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Refinements after the first plan (refine mode).
    #[arg(long, default_value_t = 2)]
    pub refine: usize,
    /// New plans allowed on a stall (replan mode).
    #[arg(long, default_value_t = 3)]
    pub replans: usize,
    /// Step limit per episode (default: the task's).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

fn eval_spec_from(
    world: &dyn World,
    tasks: &str,
    views: &str,
    seeds: u64,
    modes: &str,
) -> Result<videoagent::agent::eval::EvalSpec> {
    use videoagent::agent::eval::{EvalSpec, Mode};
    let modes = Mode::parse_list(modes)?;
    if modes.is_empty() {
        bail!("--modes is empty (valid: expert, baseline, refine, replan)");
    }
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    Ok(EvalSpec::new(
        pick_tasks(world, tasks)?,
        pick_views(world, views)?,
        seeds,
        modes,
    ))
}

fn eval_cmd(args: &EvalArgs) -> Result<()> {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    use videoagent::agent::eval::{
        EvalControl, EvalReport, EvalTable, ResultLog, log_path, run_eval, write_report,
    };
    use videoagent::model::pipeline::default_model_dir;
    use videoagent::model::{VideoModel, device::select_device};

    let t0 = Instant::now();
    let world = open_world(&args.world, 64)?;
    let mut spec = eval_spec_from(
        world.as_ref(),
        &args.tasks,
        &args.views,
        args.seeds,
        &args.modes,
    )?;
    spec.world.clone_from(&args.world);
    if args.world == videoagent::env::metaworld::WORLD_NAME {
        // The 3D path lifts the object from the world's frames: 128 px, as measured.
        spec.world_size = 128;
        spec.expert_plan_size = 128;
    }
    spec.sampler_steps = args.steps.max(1);
    spec.refinements = args.refine;
    spec.max_replans = args.replans;
    spec.max_steps = args.max_steps;
    if let Some(t) = args.threads {
        spec.threads = t.max(1);
    }
    let model = if spec.modes.iter().any(|m| m.needs_model()) {
        let dir = args.model.clone().unwrap_or_else(default_model_dir);
        let (device, note) = select_device(&args.device)?;
        tracing::info!("{note}");
        let model = VideoModel::load(&dir, &device)
            .with_context(|| format!("loading the model from {}", dir.display()))?;
        if model.config.world != spec.world {
            tracing::warn!(
                "the model was trained on {}, not {}: its plans will not show this world",
                model.config.world,
                spec.world
            );
        }
        spec.model_label = dir.display().to_string();
        Some(model)
    } else {
        None
    };
    let log_file = log_path(&args.json);
    let log = ResultLog::open(&log_file)?;
    let total = spec.episodes().len() as u64;
    let bar = progress(total, "eval");
    let reusable = log
        .done()
        .iter()
        .filter(|r| r.setting == spec.setting(r.key.mode) && spec.episodes().contains(&r.key))
        .count() as u64;
    bar.set_position(reusable);
    let control = EvalControl::default();
    let interrupt = interrupt_flag()?;
    let run = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !control.stop.load(Ordering::SeqCst) {
                if interrupt.load(Ordering::SeqCst) {
                    control.stop.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let run = run_eval(&spec, model.as_ref(), &log, &control, &|r| {
            bar.inc(1);
            if !r.success {
                bar.set_message(format!(
                    "eval (last failure: {} {})",
                    r.key.mode, r.key.task
                ));
            }
        });
        control.stop.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        run
    })?;
    bar.finish_and_clear();
    let table = EvalTable::from_results(&spec, &run.results);
    let report = EvalReport {
        spec,
        table: table.clone(),
        complete: run.complete,
        ran: run.ran,
        reused: run.reused,
        wall_secs: t0.elapsed().as_secs_f64(),
        episodes: run.results,
    };
    let png = write_report(&args.json, &report)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("{}", table.to_markdown());
    println!(
        "{} episodes ({} run now, {} from {}), {:.1} s; report {}, chart {}",
        report.episodes.len(),
        report.ran,
        report.reused,
        log_file.display(),
        report.wall_secs,
        args.json.display(),
        png.display()
    );
    if !report.complete {
        println!("interrupted: run the same command again to finish");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImproveArgs {
    /// Rounds of collect -> fine-tune -> evaluate.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Refined plans executed per task and round.
    #[arg(long, default_value_t = 2)]
    pub episodes_per_task: usize,
    /// Output folder (round-1, round-2, ...).
    #[arg(long)]
    pub out: PathBuf,
    /// Model to start from (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Expert dataset (from `videoagent dataset`) added to every round's training data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fine-tuning steps per round.
    #[arg(long, default_value_t = 20)]
    pub steps_per_round: u64,
    /// Batch size of fine-tuning.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Learning rate of fine-tuning.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// `all` or a comma list of tasks.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// `all` or a comma list of views.
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Refinements per plan when collecting (and in the refine evaluation).
    #[arg(long, default_value_t = 2)]
    pub refine: usize,
    /// DDIM steps per plan.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Held-out seeds per task and view in each round's evaluation.
    #[arg(long, default_value_t = 1)]
    pub eval_seeds: u64,
    /// Methods of each round's evaluation.
    #[arg(long, default_value = "baseline,refine")]
    pub eval_modes: String,
    /// Step limit per episode (default: the task's).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

fn improve_cmd(args: &ImproveArgs) -> Result<()> {
    use std::sync::Mutex;
    use videoagent::agent::improve::{IMPROVE_SEED, ImproveEvent, ImproveSpec, improve};
    use videoagent::model::device::select_device;
    use videoagent::model::pipeline::default_model_dir;
    use videoagent::model::train::TrainConfig;

    let world = open_world("tabletop", 64)?;
    let mut eval = eval_spec_from(
        world.as_ref(),
        &args.tasks,
        &args.views,
        args.eval_seeds,
        &args.eval_modes,
    )?;
    if eval.modes.contains(&videoagent::agent::eval::Mode::Expert) {
        bail!("--eval-modes: the expert row does not depend on the model; leave it out");
    }
    eval.sampler_steps = args.steps.max(1);
    eval.refinements = args.refine;
    eval.max_steps = args.max_steps;
    if args.batch == 0 || args.steps_per_round == 0 {
        bail!("--batch and --steps-per-round must be at least 1");
    }
    let spec = ImproveSpec {
        tasks: eval.tasks.clone(),
        views: eval.views.clone(),
        rounds: args.rounds,
        episodes_per_task: args.episodes_per_task,
        refinements: args.refine,
        sampler_steps: args.steps.max(1),
        train: TrainConfig {
            steps: args.steps_per_round,
            batch: args.batch,
            adam: videoagent::model::adam::AdamConfig {
                lr: args.lr,
                ..Default::default()
            },
            checkpoint_every: 50,
            ..TrainConfig::default()
        },
        threads: eval.threads,
        eval,
        first_seed: IMPROVE_SEED,
        max_steps: args.max_steps,
    };
    let base = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let expert = match &args.data {
        None => Vec::new(),
        Some(dir) => {
            let ds = videoagent::store::dataset::Dataset::open(dir)
                .with_context(|| format!("opening the dataset {}", dir.display()))?;
            let mut items = Vec::new();
            for (i, ep) in ds.episodes().iter().enumerate() {
                if !ep.success || !spec.tasks.contains(&ep.task) {
                    continue;
                }
                let frames = (0..ep.frames)
                    .map(|f| ds.frame(i, f))
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("reading episode {} of {}", ep.dir, dir.display()))?;
                items.push((frames, ep.instructions.clone()));
            }
            tracing::info!("{} expert episodes from {}", items.len(), dir.display());
            items
        }
    };
    let interrupt = interrupt_flag()?;
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let on_event = |e: ImproveEvent<'_>| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        let mut show = |len: u64, what: String, pos: u64| {
            let b = bar.get_or_insert_with(|| progress(len, &what));
            if b.length() != Some(len) || b.message() != what {
                b.finish_and_clear();
                *b = progress(len, &what);
            }
            b.set_position(pos);
        };
        match e {
            ImproveEvent::RoundSkipped(s) => println!(
                "round {}: already done (model {})",
                s.round,
                s.model_out.display()
            ),
            ImproveEvent::Collecting {
                round,
                done,
                total,
                successes,
            } => show(
                total as u64,
                format!("round {round}: collecting ({successes} verified)"),
                done as u64,
            ),
            ImproveEvent::Training { round, progress: p } => show(
                p.total,
                format!("round {round}: fine-tuning (loss {:.4})", p.loss),
                p.step,
            ),
            ImproveEvent::Evaluating { round, done, total } => show(
                total as u64,
                format!("round {round}: evaluating"),
                done as u64,
            ),
            ImproveEvent::RoundDone(s) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                println!(
                    "round {}: {}/{} verified successes, trained on {} collected + {} expert clips, {:.0} s\n{}",
                    s.round,
                    s.successes,
                    s.attempted,
                    s.collected_clips,
                    s.expert_clips,
                    s.wall_secs,
                    s.eval_table
                );
            }
        }
    };
    let rounds = improve(
        &spec, &base, &expert, &args.out, &device, &interrupt, &on_event,
    )
    .with_context(|| format!("improving into {}", args.out.display()))?;
    if let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
        b.finish_and_clear();
    }
    if let Some(last) = rounds.last() {
        println!(
            "{} rounds; the latest model is {}",
            rounds.len(),
            last.model_out.display()
        );
    }
    Ok(())
}
