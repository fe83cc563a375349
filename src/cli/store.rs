//! `videoagent export`, `import`, `store` and `bench crash`: the plan store from the command line.

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
    let (store, report) =
        Store::open(dir).with_context(|| format!("cannot open the store in {}", dir.display()))?;
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
    let occupied =
        args.out.is_file() || std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some());
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
        super::write_json(path, &report)?;
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
