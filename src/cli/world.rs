//! `videoagent tasks`, `setup metaworld`, `dataset` and `sheet`: the worlds and their demonstrations.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::Args;

use videoagent::env::{self, World, open_world};
use videoagent::store::collect::{CollectSpec, collect};

use super::{pick_tasks, pick_views, progress};

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

pub(super) fn tasks(args: &TasksArgs) -> Result<()> {
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

pub(super) fn setup_metaworld(args: &SetupMetaworldArgs) -> Result<()> {
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

pub(super) fn dataset(args: &DatasetArgs) -> Result<()> {
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

pub(super) fn sheet(args: &SheetArgs) -> Result<()> {
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
