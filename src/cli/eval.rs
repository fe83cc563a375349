//! `videoagent eval` and `improve`: the paper's table and the online rounds.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use videoagent::env::{World, open_world};

use super::{interrupt_flag, pick_tasks, pick_views, progress};

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
    /// Methods, comma-separated: expert, baseline, refine, refine_env (refinement judged by
    /// executing each plan in a copy of the world: a perfect critic), resample_env (fresh
    /// plans instead of refinements, judged the same way), resample (fresh plans instead of
    /// refinements, judged by the perception critic as refine is), replan (new plans from
    /// the current frame when the gripper stalls), refine_replan (refine for the first plan and
    /// every replan: VideoAgent's whole loop).
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
    /// The kinds of finding that make the perception critic reject in refine mode,
    /// comma-separated (default: all; `critic-agreement --fit` says which predict failure).
    #[arg(long)]
    pub critic_rejects: Option<String>,
    /// The critic of refine and resample: perception, or perception-task (only the task
    /// object's glitches, an unmoved gripper and an unreached goal reject).
    #[arg(long, default_value = "perception")]
    pub critic: String,
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
        bail!(
            "--modes is empty (valid: expert, baseline, refine, refine_env, resample_env, resample, replan)"
        );
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

pub(super) fn eval_cmd(args: &EvalArgs) -> Result<()> {
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
    spec.rejects_on = super::critic::rejecting_kinds(args.critic_rejects.as_deref())?;
    spec.scope = super::critic::perception_scope(&args.critic)?;
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
    /// Refinement data (from `videoagent refine-data`): each round then fine-tunes generation
    /// and refinement together (shared weights, as in the paper), the round's verified
    /// successes and expert clips being the plain-generation share of each batch.
    #[arg(long)]
    pub refine_data: Option<PathBuf>,
    /// Share of each batch that is plain generation, with --refine-data.
    #[arg(long, default_value_t = 0.5)]
    pub plain_share: f64,
    /// Fine-tuning steps per round.
    #[arg(long, default_value_t = 20)]
    pub steps_per_round: u64,
    /// Batch size of fine-tuning.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Learning rate of fine-tuning.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Raise the learning rate linearly over each round's first N steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// `all` or a comma list of tasks.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// `all` or a comma list of views.
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Refinements per plan when collecting (and in the refine evaluation).
    #[arg(long, default_value_t = 2)]
    pub refine: usize,
    /// The critic of the refinement loop when collecting and evaluating: perception, or
    /// perception-task (only the task object's glitches, an unmoved gripper and an unreached
    /// goal reject).
    #[arg(long, default_value = "perception")]
    pub critic: String,
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
    /// New plans from the current frame allowed when a collecting episode stalls (the
    /// paper's replanning; 0: none), for more verified successes per round.
    #[arg(long, default_value_t = 0)]
    pub collect_replans: usize,
    /// Each collected clip is drawn this many times as often as an expert episode when
    /// fine-tuning (1: the same), so a round's few new clips are not lost among the
    /// demonstrations.
    #[arg(long, default_value_t = 1)]
    pub collected_weight: usize,
    /// A task stops collecting once it has this many verified successes in the round
    /// (attempts still capped by --episodes-per-task): with a large cap, the hard tasks get
    /// as many new clips as the easy ones (default: every attempt is made).
    #[arg(long)]
    pub successes_per_task: Option<usize>,
    /// Where collection and evaluation plan: auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where fine-tuning runs (default: --device). `--device cpu --train-device cuda` plans on
    /// every core and trains on the GPU.
    #[arg(long)]
    pub train_device: Option<String>,
}

pub(super) fn improve_cmd(args: &ImproveArgs) -> Result<()> {
    use std::sync::Mutex;
    use videoagent::agent::improve::{
        IMPROVE_SEED, ImproveData, ImproveDevices, ImproveEvent, ImproveSpec, improve,
    };
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
    eval.scope = super::critic::perception_scope(&args.critic)?;
    eval.max_steps = args.max_steps;
    if args.batch == 0 || args.steps_per_round == 0 {
        bail!("--batch and --steps-per-round must be at least 1");
    }
    if args.successes_per_task == Some(0) {
        bail!("--successes-per-task must be at least 1 (leave it out to make every attempt)");
    }
    if !(0.0..=1.0).contains(&args.plain_share) {
        bail!("--plain-share must be between 0 and 1");
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
                warmup_steps: args.warmup,
                ..Default::default()
            },
            checkpoint_every: 50,
            plain_share: args.plain_share,
            ..TrainConfig::default()
        },
        threads: eval.threads,
        eval,
        first_seed: IMPROVE_SEED,
        max_steps: args.max_steps,
        replans: args.collect_replans,
        collected_weight: args.collected_weight,
        successes_per_task: args.successes_per_task,
    };
    let base = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("planning: {note}");
    let devices = match &args.train_device {
        None => ImproveDevices::one(&device),
        Some(name) => {
            let (train, note) = select_device(name)?;
            tracing::info!("fine-tuning: {note}");
            ImproveDevices {
                plan: device,
                train,
            }
        }
    };
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
    let bar: Mutex<Option<super::progress::Progress>> = Mutex::new(None);
    let on_event = |e: ImproveEvent<'_>| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        // A new bar for each phase (its rate and ETA are the phase's own); the message
        // changes within one.
        let mut show = |len: u64, what: String, pos: u64| {
            let phase = |m: &str| m.split(" (").next().unwrap_or_default().to_owned();
            let b = bar.get_or_insert_with(|| progress(len, &what));
            if b.length() != Some(len) || phase(&b.message()) != phase(&what) {
                b.finish_and_clear();
                *b = progress(len, &what);
            }
            b.set_message(what);
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
                    "round {}: {} verified successes kept of {} attempts, trained on {} collected + {} expert clips and {} refinement starts, {:.0} s\n{}",
                    s.round,
                    s.successes,
                    s.attempted,
                    s.collected_clips,
                    s.expert_clips,
                    s.refinement_starts,
                    s.wall_secs,
                    s.eval_table
                );
            }
        }
    };
    let refinement = match &args.refine_data {
        None => Vec::new(),
        Some(dir) => {
            let items = super::model::refine_items(dir)?;
            tracing::info!("{} refinement starts from {}", items.len(), dir.display());
            items
        }
    };
    let data = ImproveData {
        expert: &expert,
        refinement: &refinement,
    };
    let rounds = improve(
        &spec, &base, data, &args.out, &devices, &interrupt, &on_event,
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
