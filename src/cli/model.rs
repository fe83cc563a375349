//! `videoagent train`, `plan`, `quality` and `refine-data`: the video model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use videoagent::env::{World, open_world};

use super::{interrupt_flag, log_if_hidden, pick_tasks, pick_views, progress};

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
    /// Raise the learning rate linearly over the first N steps (useful with --init: Adam's
    /// moments start empty and its first updates are full-size).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
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
    /// Give the network the real start frame in three more input channels beside the
    /// conditioning, so that a refinement sees it and not only the previous plan made from it.
    /// With --init from a model without them, the conditioning's stem weights are halved and
    /// copied to the new channels: plain generation is exactly the initial model's.
    #[arg(long)]
    pub start_frame_input: bool,
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
    /// Classifier-free guidance weight (0: the conditional prediction alone).
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f64,
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
    /// accept) and print the mean scores per iteration 0..K, of every iteration and of what
    /// the loop returns (the first accepted plan, else the latest).
    #[arg(long, default_value_t = 0)]
    pub refine: usize,
    /// With --refine K: make every later iteration a fresh plan from the start frame with the
    /// next seed instead of a refinement (the control a refinement has to beat).
    #[arg(long)]
    pub resample: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub start: super::StartArgs,
    /// Seed of the sampler (default: --seed).
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
    /// f32, tf32 (NVIDIA tensor cores) or bf16 (the U-Net's weights and activations).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Also record the plan, with every refinement iteration and its critique, in this plan
    /// store (the folder the studio opens), so CLI and studio share plans.
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub critic: super::critic::CriticArgs,
}

pub(super) fn train(args: &TrainArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::sync::atomic::Ordering;
    use videoagent::model::refine_train::RefineTrainData;
    use videoagent::model::text::TextEncoderKind;
    use videoagent::model::train::{TrainConfig, TrainData, TrainOutcome, TrainSet, Trainer};
    use videoagent::model::{ModelConfig, UNetConfig, device::select_device};

    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let dataset = args
        .data
        .as_deref()
        .map(videoagent::store::Dataset::open)
        .transpose()?;
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
        if args.start_frame_input {
            unet.in_channels = unet.out_channels + 6;
        }
        let cfg = TrainConfig {
            steps: args.steps,
            batch: args.batch,
            adam: videoagent::model::adam::AdamConfig {
                lr: args.lr,
                warmup_steps: args.warmup,
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
        // The world the plans will show: the demonstrations' (refinement data is tabletop's).
        let world = dataset
            .as_ref()
            .map_or(videoagent::env::tabletop::WORLD_NAME, |d| {
                d.manifest.world.as_str()
            });
        let mut model_cfg = ModelConfig::new(unet, world);
        if let Some(dir) = &args.clip {
            let path = std::path::absolute(dir)
                .with_context(|| format!("resolving --clip {}", dir.display()))?;
            model_cfg.text_encoder = TextEncoderKind::Clip { path };
        }
        Trainer::new(model_cfg, cfg, &args.out, args.init.as_deref(), &device)?
    };
    let size = trainer.model.config.frame_size();
    let plain = match &dataset {
        Some(dataset) => {
            let bar = progress(dataset.episodes().len() as u64, "loading");
            let data = TrainData::load(dataset, size, || bar.inc(1))?;
            bar.finish_and_clear();
            Some(data)
        }
        None if args.refine_data.is_some() => None,
        None => bail!("--data DIR is required (a dataset from `videoagent dataset`)"),
    };
    let data: Box<dyn TrainSet> = match &args.refine_data {
        Some(dir) => {
            let data = RefineTrainData::new(size, refine_items(dir)?, plain)?;
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
    let log_every = trainer.config.checkpoint_every.max(1);
    let outcome = trainer.train(data.as_ref(), |p| {
        bar.set_position(p.step);
        bar.set_message(format!("loss {:.4} {:.2} steps/s", p.loss, p.steps_per_sec));
        log_if_hidden(&bar, "train", log_every);
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

/// The refinement training starts stored in `dir` by `videoagent refine-data`.
pub(super) fn refine_items(
    dir: &std::path::Path,
) -> Result<Vec<videoagent::model::refine_train::RefineItem>> {
    let samples = videoagent::store::refine_data::RefineData::open(dir)?
        .read_all()
        .with_context(|| format!("reading {}", dir.display()))?;
    Ok(videoagent::agent::refine_data::training_items(&samples))
}

pub(super) fn refine_data(args: &RefineDataArgs) -> Result<()> {
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

pub(super) fn plan(args: &PlanArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use std::time::Instant;
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };
    use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

    let (mut world, view, info) = args.start.open()?;
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
    let precision = videoagent::model::precision::Precision::parse(&args.precision)?;
    tracing::info!("{}", precision.apply(&device));
    let plan_start = super::critic::PlanStart {
        world: &args.start.world,
        view,
        seed: args.start.seed,
    };
    let critic = super::critic::make_critic(
        &args.critic.critic,
        &args.critic.access,
        plan_start,
        &device,
    )?;
    let t0 = Instant::now();
    let model = VideoModel::load_as(&model_dir, &device, precision)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let start = world.reset(&args.start.task, view, args.start.seed)?;
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
    let sample_seed = args.sample_seed.unwrap_or(args.start.seed);
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
        let (frames, record) = super::critic::refine_plan(
            &args.critic,
            critic.as_deref(),
            &model,
            &start,
            &args.start.task,
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
        world: args.start.world.clone(),
        task: args.start.task.clone(),
        view,
        instruction,
        env_seed: args.start.seed,
        sample_seed,
        model: model_dir.display().to_string(),
        device: videoagent::model::device::device_label(&device).to_owned(),
        sampler: SamplerRecord {
            kind: if args.steps == 0 { "ddpm" } else { "ddim" }.to_owned(),
            steps: if args.steps == 0 { 100 } else { args.steps },
            guidance: args.guidance,
            precision,
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
        let store = super::store::open(dir)?;
        let id = videoagent::store::db::add_plan_folder(&store, &args.out)
            .with_context(|| format!("recording the plan in the store {}", dir.display()))?;
        println!("recorded as plan {id} in the store {}", dir.display());
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
    use videoagent::agent::model_eval::{HELD_OUT_SEED, Revision, held_by_loop, score_refinement};
    use videoagent::critic::PerceptionCritic;

    let critic = PerceptionCritic::default();
    let (revision, made) = if args.resample {
        (Revision::Resample, "resampled")
    } else {
        (Revision::Refine, "refined")
    };
    let bar = progress((tasks.len() * views.len()) as u64 * args.seeds, "starts");
    let mut all = Vec::new();
    for task in tasks {
        for &view in views {
            for s in 0..args.seeds {
                let seed = HELD_OUT_SEED + s * 3 + view as u64;
                let scores = score_refinement(
                    model,
                    &critic,
                    world,
                    task,
                    view,
                    seed,
                    sample,
                    args.refine,
                    revision,
                )
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
    println!("every iteration ({made} whatever the critic says):");
    print_iteration_table(args.refine, |i| {
        all.iter().filter(|s| s.iteration == i).collect()
    });
    println!("what the loop returns after k more plans (it stops at the first accept):");
    print_iteration_table(args.refine, |i| held_by_loop(&all, i));
    if let Some(path) = &args.json {
        super::write_json(path, &all)?;
    }
    Ok(())
}

/// One row per iteration 0..=`refinements` of the plans `rows(i)` picks: mean scores.
fn print_iteration_table<'a>(
    refinements: usize,
    rows: impl Fn(usize) -> Vec<&'a videoagent::agent::model_eval::IterationScore>,
) {
    println!(
        "| iteration | PSNR | SSIM | accepted | findings per plan | task object found | its final error (px) |\n|---|---|---|---|---|---|---|"
    );
    for i in 0..=refinements {
        let it = rows(i);
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
}

pub(super) fn quality(args: &QualityArgs) -> Result<()> {
    use videoagent::agent::model_eval::{HELD_OUT_SEED, QualityReport, score_plan, summarise};
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };

    if args.resample && args.refine == 0 {
        bail!("--resample needs --refine K (the iterations to resample)");
    }
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let model = VideoModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let mut world = open_world(&model.config.world, 64)?;
    let tasks = pick_tasks(world.as_ref(), &args.tasks)?;
    let views = pick_views(world.as_ref(), &args.views)?;
    let sample = SampleConfig {
        guidance_weight: args.guidance,
        ..SampleConfig::ddim(args.steps)
    };
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
        super::write_json(path, &report)?;
    }
    Ok(())
}

// --- plan store (issue 5): export, import, store check/list, bench crash ---
