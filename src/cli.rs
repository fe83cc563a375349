//! The `videoagent` command line: one subcommand per job, all thin wrappers over the library.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use videoagent::env::{self, World, open_world};
use videoagent::store::collect::{CollectSpec, collect};

/// VideoAgent Studio: video plans for robots, refined by a critic, executed and improved.
///
/// Subcommands run the library headless; `videoagent` alone will open the studio once it
/// exists (for now it prints this help).
#[derive(Debug, Parser)]
#[command(name = "videoagent", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log filter (e.g. `info`, `debug`, `videoagent=trace`); also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List worlds, their tasks (difficulty, instructions) and camera views.
    Tasks(TasksArgs),
    /// Run the scripted experts and write a demonstration dataset.
    Dataset(DatasetArgs),
    /// Draw the first, middle and last frame of an expert episode of every task in every view.
    Sheet(SheetArgs),
    /// Train or fine-tune the video model on a dataset (resumable; Ctrl-C saves a checkpoint).
    Train(TrainArgs),
    /// Generate a plan (8-frame video) for a task from the world's start frame.
    Plan(PlanArgs),
    /// Held-out quality of a model: PSNR/SSIM against the expert's video, final object error.
    Quality(QualityArgs),
    /// Performance benchmarks (table on stdout, JSON with --json).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Plan with the model (or take the expert's video) and execute the plan in the world.
    Run(RunArgs),
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
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!("\nThe studio is not part of this build yet; use a subcommand.");
            Ok(())
        }
        Some(Command::Tasks(a)) => tasks(&a),
        Some(Command::Dataset(a)) => dataset(&a),
        Some(Command::Sheet(a)) => sheet(&a),
        Some(Command::Train(a)) => train(&a),
        Some(Command::Plan(a)) => plan(&a),
        Some(Command::Quality(a)) => quality(&a),
        Some(Command::Bench(BenchCommand::World(a))) => bench_world(&a),
        Some(Command::Bench(BenchCommand::Model(a))) => bench_model(&a),
        Some(Command::Run(a)) => run_plan(&a),
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
    println!("world {}", world.name());
    println!(
        "  {:<14} {:<7} {:>5}  instructions",
        "task", "level", "steps"
    );
    for t in world.tasks() {
        println!(
            "  {:<14} {:<7} {:>5}  {}",
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

/// Parses `all` or a comma list of names against the valid ones.
fn pick_tasks(world: &dyn World, list: &str) -> Result<Vec<String>> {
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

fn pick_views(world: &dyn World, list: &str) -> Result<Vec<usize>> {
    let views = world.views();
    if list == "all" {
        return Ok((0..views.len()).collect());
    }
    list.split(',')
        .map(|v| Ok(env::resolve_view(&views, v.trim())?))
        .collect()
}

fn progress(len: u64, what: &str) -> ProgressBar {
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
        seed_base: args.seed_base,
        threads: args
            .threads
            .unwrap_or_else(videoagent::bench::available_threads),
    };
    let total = spec.tasks.len() * spec.views.len() * spec.episodes;
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
        "  {:<14} {:>10} {:>14} {:>16}",
        "task", "frames", "frames/s", "physics steps/s"
    );
    for r in &report.rows {
        println!(
            "  {:<14} {:>10} {:>14.0} {:>16.0}",
            r.task, r.frames, r.frames_per_sec, r.physics_steps_per_sec
        );
    }
    println!("  {:<14} {:>10} {:>14.0}", "all", "", report.frames_per_sec);
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

fn train(args: &TrainArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::sync::atomic::Ordering;
    use videoagent::model::train::{TrainConfig, TrainData, TrainOutcome, Trainer};
    use videoagent::model::{ModelConfig, UNetConfig, device::select_device};

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
            ..TrainConfig::default()
        };
        Trainer::new(
            ModelConfig::new(unet, "tabletop"),
            cfg,
            &args.out,
            args.init.as_deref(),
            &device,
        )?
    };
    let data_dir = args
        .data
        .as_ref()
        .context("--data DIR is required (a dataset from `videoagent dataset`)")?;
    let dataset = videoagent::store::Dataset::open(data_dir)?;
    let bar = progress(dataset.episodes().len() as u64, "loading");
    let data = TrainData::load(&dataset, trainer.model.config.frame_size(), || bar.inc(1))?;
    bar.finish_and_clear();
    tracing::info!(
        "{} parameters, {} episodes at {}px, steps {} -> {}",
        trainer.parameter_count(),
        data.len(),
        trainer.model.config.frame_size(),
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
    let outcome = trainer.train(&data, |p| {
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
    let t0 = Instant::now();
    let model = VideoModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let first = world.reset(&args.task, view, args.seed)?.rgb;
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
    let frames = model
        .plan(&first, None, &instruction, &sample, sample_seed, |_| {
            bar.inc(1);
            ControlFlow::Continue(())
        })?
        .context("sampling was cancelled")?;
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
    };
    write_plan(&args.out, &record, &first, &frames)
        .with_context(|| format!("writing the plan to {}", args.out.display()))?;
    println!(
        "plan written to {} (load {load_ms:.0} ms, sampling {sample_ms:.0} ms)",
        args.out.display()
    );
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

fn run_plan(args: &RunArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::time::Instant;
    use videoagent::agent::execute::{ExecuteConfig, Replanner, execute_plan, expert_plan};
    use videoagent::model::pipeline::{default_model_dir, resize};
    use videoagent::model::{SampleConfig, VideoModel, device::select_device};
    use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

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
    let mut load_ms = 0.0;
    let (model, model_dir) = if args.expert_plan {
        (None, None)
    } else {
        let dir = args.model.clone().unwrap_or_else(default_model_dir);
        let (device, note) = select_device(&args.device)?;
        tracing::info!("{note}");
        let t0 = Instant::now();
        let model = VideoModel::load(&dir, &device)
            .with_context(|| format!("loading the model from {}", dir.display()))?;
        load_ms = t0.elapsed().as_secs_f64() * 1e3;
        (Some(model), Some(dir))
    };
    // A plan is the start frame (at the plan's size) followed by the generated frames.
    let model_plan = |model: &VideoModel, frame: &videoagent::env::Rgb8Image, seed: u64| {
        let frames = model
            .plan(frame, None, &instruction, &sample, seed, |_| {
                ControlFlow::Continue(())
            })
            .map_err(|e| format!("sampling failed: {e}"))?
            .ok_or_else(|| "sampling was cancelled".to_owned())?;
        let size = frames.first().map_or(frame.width, |f| f.width);
        Ok::<_, String>(
            std::iter::once(resize(frame, size))
                .chain(frames)
                .collect::<Vec<_>>(),
        )
    };
    let t1 = Instant::now();
    let first = world.reset(&args.task, view, args.seed)?;
    let plan = match &model {
        None => expert_plan(world.as_mut(), &args.task, view, args.seed, args.plan_size)?,
        Some(m) => model_plan(m, &first.rgb, args.seed).map_err(anyhow::Error::msg)?,
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
            let p = model_plan(m, &obs.rgb, args.seed + 1 + replans.len() as u64)?;
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
