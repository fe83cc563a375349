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
/// Without a subcommand it opens the studio. Subcommands run the same library headless.
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
    /// Performance benchmarks (table on stdout, JSON with --json).
    #[command(subcommand)]
    Bench(BenchCommand),
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
    #[arg(long, default_value = "tabletop")]
    pub world: String,
    /// Output PNG.
    #[arg(long, default_value = "docs/tasks.png")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Steps + renders per second of a world on one core.
    World(BenchWorldArgs),
}

#[derive(Debug, Args)]
pub struct BenchWorldArgs {
    #[arg(long, default_value = "tabletop")]
    pub world: String,
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
        Some(Command::Bench(BenchCommand::World(a))) => bench_world(&a),
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
