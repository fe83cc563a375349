//! `videoagent run`: plan -> action -> rollout, in the tabletop world or MetaWorld.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use videoagent::env::{self, World};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub start: super::StartArgs,
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
    let view = env::resolve_view(&world.views(), &args.start.view)?;
    let instruction = videoagent::env::metaworld::tasks::find(&args.start.task)
        .with_context(|| {
            format!(
                "unknown task '{}' (see `videoagent tasks`)",
                args.start.task
            )
        })?
        .instructions[0];
    let model = match args.expert_plan {
        true => None,
        false => Some(load_run_model(args)?),
    };
    let sample = SampleConfig::ddim(args.steps.max(1));
    let first = world.reset(&args.start.task, view, args.start.seed)?;
    let plan = match &model {
        None => expert_plan(
            &mut world,
            &args.start.task,
            view,
            args.start.seed,
            args.plan_size,
        )?,
        Some((m, _)) => model_plan(m, &first.rgb, instruction, &sample, args.start.seed)
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
        model_plan(m, &obs.rgb, instruction, &sample, args.start.seed + replans)
    };
    let hook_ref: Option<&mut Replanner<'_>> = match (&model, args.replan) {
        (Some(_), 1..) => Some(&mut hook),
        _ => None,
    };
    let rollout = execute_plan_3d(&mut world, &args.start.task, &plan, &config, hook_ref)
        .with_context(|| format!("executing the plan for {}", args.start.task))?;
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
        "world": args.start.world, "task": args.start.task, "view": view, "seed": args.start.seed,
        "planner": planner, "rollout": rollout,
    });
    super::write_json(&json, &record)?;
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

pub(super) fn run_plan(args: &RunArgs) -> Result<()> {
    use std::time::Instant;
    use videoagent::agent::eval::model_plan;
    use videoagent::agent::execute::{ExecuteConfig, Replanner, execute_plan, expert_plan};
    use videoagent::model::{SampleConfig, VideoModel};
    use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

    if args.start.world == videoagent::env::metaworld::WORLD_NAME {
        return run_metaworld(args);
    }
    let t_start = Instant::now();
    let (mut world, view, info) = args.start.open()?;
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
    let first = world.reset(&args.start.task, view, args.start.seed)?;
    let plan = match &model {
        None => expert_plan(
            world.as_mut(),
            &args.start.task,
            view,
            args.start.seed,
            args.plan_size,
        )?,
        Some(m) => plan_from(m, &first.rgb, args.start.seed).map_err(anyhow::Error::msg)?,
    };
    let first_plan_ms = t1.elapsed().as_secs_f64() * 1e3;
    let planner = model_dir
        .as_ref()
        .map_or("expert".to_owned(), |d| d.display().to_string());
    let record = PlanRecord {
        world: args.start.world.clone(),
        task: args.start.task.clone(),
        view,
        instruction: instruction.clone(),
        env_seed: args.start.seed,
        sample_seed: args.start.seed,
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
            precision: videoagent::model::precision::Precision::F32,
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
            let p = plan_from(m, &obs.rgb, args.start.seed + 1 + replans.len() as u64)?;
            replans.push(p.clone());
            Ok(p)
        };
    let hook_ref: Option<&mut Replanner<'_>> = if model.is_some() && args.replan > 0 {
        Some(&mut hook)
    } else {
        None
    };
    let rollout = execute_plan(world.as_mut(), &args.start.task, &plan, &config, hook_ref)
        .with_context(|| format!("executing the plan for {}", args.start.task))?;
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
        world: args.start.world.clone(),
        task: args.start.task.clone(),
        view,
        seed: args.start.seed,
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
    super::write_json(&json, &run)?;
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
