//! `videoagent bench world|model|ui` (crash is in [`super::store`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

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
    /// f32, tf32 (NVIDIA tensor cores, f32 tensors) or bf16 (U-Net weights and activations)
    /// for the forward pass and the plan; training keeps f32 weights (tf32 also runs its
    /// matrix products on tensor cores).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Also time the reference PyTorch U-Net on each config, right after ours, on the CPU
    /// (`scripts/reference_bench.py`): the folder holding its `guided_diffusion` package (the
    /// `flowdiffusion` folder of github.com/Video-as-Agent/VideoAgent).
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// The Python (with PyTorch, einops, einops_exts) that runs --reference.
    #[arg(long, default_value = "python3", requires = "reference")]
    pub python: PathBuf,
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

pub(super) fn bench_world(args: &BenchWorldArgs) -> Result<()> {
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
        super::write_json(path, &report)?;
    }
    Ok(())
}

pub(super) fn bench_ui(args: &BenchUiArgs) -> Result<()> {
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
        super::write_json(path, &report)?;
    }
    Ok(())
}

pub(super) fn bench_model(args: &BenchModelArgs) -> Result<()> {
    use videoagent::bench::model::{BenchPlan, run};
    use videoagent::bench::reference::ReferenceSetup;
    use videoagent::model::{
        ModelConfig, UNetConfig, device::select_device, pipeline::default_model_dir,
    };

    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let precision = videoagent::model::precision::Precision::parse(&args.precision)?;
    tracing::info!("{}", precision.apply(&device));
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
            precision,
        });
    }
    let reference = match &args.reference {
        Some(_) if !device.is_cpu() => {
            anyhow::bail!("--reference times the reference on the CPU; use --device cpu")
        }
        Some(code) => {
            let setup = ReferenceSetup {
                python: args.python.clone(),
                code: code.clone(),
                script: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("scripts/reference_bench.py"),
            };
            setup.check()?;
            Some(setup)
        }
        None => None,
    };
    let report = run(&plans, &device, reference.as_ref())?;
    println!(
        "device {}, {} threads, matmul peak {:.1} GFLOP/s, precision {}",
        report.device,
        report.threads,
        report.matmul_gflops_per_sec,
        precision.name()
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
    print_reference_comparison(&report.configs);
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    Ok(())
}

/// The reference's times next to ours, as speed ratios (above 1: ours is faster).
fn print_reference_comparison(configs: &[videoagent::bench::model::ConfigBench]) {
    // Their time over ours (or our rate over theirs).
    let speed_ratio = |ours: Option<f64>, theirs: Option<f64>| match (ours, theirs) {
        (Some(a), Some(b)) => format!("{:.2}x", b / a),
        _ => "-".to_owned(),
    };
    let mut header = true;
    for c in configs {
        let Some(r) = &c.reference else { continue };
        if header {
            println!(
                "reference PyTorch {} on the CPU, {} threads, same run; ours vs reference as speed ratios (above 1: ours faster)",
                r.torch,
                r.threads.map_or("?".to_owned(), |t| t.to_string())
            );
            println!(
                "  {:<10} {:>11} {:>11} {:>12} {:>14} {:>8} {:>8} {:>8}",
                "config",
                "params",
                "forward ms",
                "plan ms",
                "train steps/s",
                "forward",
                "plan",
                "train"
            );
            header = false;
        }
        println!(
            "  {:<10} {:>11} {:>11.1} {:>12} {:>14} {:>8} {:>8} {:>8}",
            c.config,
            r.parameters,
            r.forward_ms,
            r.plan_ms.map_or("-".to_owned(), |v| format!("{v:.0}")),
            r.train_steps_per_sec
                .map_or("-".to_owned(), |v| format!("{v:.3}")),
            speed_ratio(Some(c.forward_ms), Some(r.forward_ms)),
            speed_ratio(c.plan_ms, r.plan_ms),
            // Rates, not times: the arguments swap.
            speed_ratio(r.train_steps_per_sec, c.train_steps_per_sec),
        );
    }
}
