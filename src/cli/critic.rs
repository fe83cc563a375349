//! The command-line side of the critics: `videoagent critic-calibrate` and the `--refine` /
//! `--critic` options of `videoagent plan` .

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use videoagent::agent::execution_critic::ExecutionCritic;
use videoagent::critic::calibrate::{
    CalibrationSpec, Edit, PlanJudgement, calibrate, judge_model_plans,
};
use videoagent::critic::{
    ChatClient, ChatSettings, Critic, FindingScope, LocalVlmCritic, NoCritic, PerceptionCritic,
    Verdict, VlmCritic,
};
use videoagent::env::open_world;
use videoagent::store::plan_record::{
    IterationRecord, RefinementRecord, write_iteration, write_iterations_sheet,
};

use super::{pick_tasks, pick_views, progress};

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[arg(long, default_value = "all")]
    pub tasks: String,
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Expert starts per task and view.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// First seed (held-out starts by default).
    #[arg(long, default_value_t = 1_000_000)]
    pub seed_base: u64,
    /// Plan sizes the expert frames are shrunk to, comma-separated.
    #[arg(long, default_value = "32,64")]
    pub sizes: String,
    /// Also judge this many plans of the model per task and view (0: none).
    #[arg(long, default_value_t = 0)]
    pub model_plans: u64,
    /// Model folder for --model-plans (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// DDIM steps of the model's plans.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// A plan whose task object ends further than this from the expert's (model pixels) is bad.
    #[arg(long, default_value_t = 3.0)]
    pub bad_px: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `videoagent critic-agreement`: critics against execution on the model's own plans.
#[derive(Debug, Args)]
pub struct AgreementArgs {
    #[arg(long, default_value = "all")]
    pub tasks: String,
    #[arg(long, default_value = "all")]
    pub views: String,
    /// Held-out starts per task and view.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub seed_base: u64,
    /// Critics to measure, comma-separated (perception, vlm, ...; see --critic).
    #[arg(long, default_value = "perception")]
    pub critics: String,
    /// Model folder (default: the shipped CPU model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// DDIM steps of the plans.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also write the plans and the agreement table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also fit which kinds of finding should make each critic reject: on the plans of even
    /// seed offsets, every subset of kinds is tried; the best is reported on the odd ones.
    #[arg(long)]
    pub fit: bool,
    #[command(flatten)]
    pub access: CriticAccess,
}

/// Which critic `plan --refine` asks, and how to reach a VLM.
#[derive(Clone, Debug, Args)]
pub struct CriticArgs {
    /// Refinements after the first plan (0: plan once).
    #[arg(long, default_value_t = 0)]
    pub refine: usize,
    /// perception (offline, default), perception-task (the same, rejecting only for the task
    /// object's glitches), vlm (OpenAI-compatible API), local (Moondream2 in process),
    /// execution (runs the plan in the world: the paper's environment feedback) or none.
    #[arg(long, default_value = "perception")]
    pub critic: String,
    #[command(flatten)]
    pub access: CriticAccess,
}

/// How a critic is set up: the perception critic's rejecting kinds; a VLM critic's model,
/// server and timeout.
#[derive(Clone, Debug, Args)]
pub struct CriticAccess {
    /// The kinds of finding that make the perception critic reject, comma-separated
    /// (vanished, appeared, duplicated, colour_drift, teleport, moved_without_contact,
    /// gripper_static, goal_not_reached; default: all). `critic-agreement --fit` says which
    /// predict a failed execution.
    #[arg(long)]
    pub critic_rejects: Option<String>,
    /// The vlm critic's model name (default gpt-4o), or the local critic's model folder
    /// (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub critic_model: Option<String>,
    /// A (cheaper) model for the feedback sentence (default: the judge's model).
    #[arg(long)]
    pub critic_feedback_model: Option<String>,
    /// API base URL (default: $OPENAI_BASE_URL; the key is read from $OPENAI_API_KEY).
    #[arg(long)]
    pub critic_url: Option<String>,
    /// Seconds one VLM request may take.
    #[arg(long, default_value_t = 60.0)]
    pub critic_timeout: f64,
}

/// `--critic-rejects`: finding kinds by their snake_case names (all of them when absent).
pub(super) fn rejecting_kinds(list: Option<&str>) -> Result<Vec<videoagent::critic::FindingKind>> {
    use videoagent::critic::FindingKind;
    let Some(list) = list else {
        return Ok(FindingKind::ALL.to_vec());
    };
    list.split(',')
        .map(str::trim)
        .map(|wanted| {
            FindingKind::ALL
                .into_iter()
                .find(|k| k.name() == wanted)
                .with_context(|| {
                    let valid: Vec<&str> = FindingKind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "--critic-rejects: unknown kind '{wanted}' (valid: {})",
                        valid.join(", ")
                    )
                })
        })
        .collect()
}

/// The world start plans are made from: what the execution critic replays.
#[derive(Clone, Copy, Debug)]
pub struct PlanStart<'a> {
    pub world: &'a str,
    pub view: usize,
    pub seed: u64,
}

/// The perception critic's scope from its name: `perception` rejects for any thing's glitch,
/// `perception-task` only for the task object's.
pub(super) fn perception_scope(name: &str) -> Result<FindingScope> {
    Ok(match name {
        "perception" => FindingScope::Everything,
        "perception-task" => FindingScope::TaskObject,
        other => bail!("unknown perception critic '{other}' (valid: perception, perception-task)"),
    })
}

/// The critic named `name` (`None` for `none`) for plans from `start`, reached through
/// `args`; a local VLM is loaded onto `device`.
pub fn make_critic(
    name: &str,
    args: &CriticAccess,
    start: PlanStart<'_>,
    device: &candle_core::Device,
) -> Result<Option<Box<dyn Critic>>> {
    Ok(match name {
        "none" => None,
        "execution" => Some(Box::new(ExecutionCritic::new(
            start.world,
            64,
            start.view,
            start.seed,
        )?)),
        "perception" | "perception-task" => Some(Box::new(PerceptionCritic {
            rejects_on: rejecting_kinds(args.critic_rejects.as_deref())?,
            scope: perception_scope(name)?,
            ..PerceptionCritic::default()
        })),
        "vlm" => {
            if !(args.critic_timeout.is_finite() && args.critic_timeout > 0.0) {
                bail!("--critic-timeout must be a positive number of seconds");
            }
            let model = args.critic_model.as_deref().unwrap_or("gpt-4o");
            let mut settings = ChatSettings::from_env(args.critic_url.as_deref(), model)?;
            settings.timeout = Duration::from_secs_f64(args.critic_timeout);
            let feedback = args.critic_feedback_model.as_ref().map(|m| {
                ChatClient::new(ChatSettings {
                    model: m.clone(),
                    ..settings.clone()
                })
            });
            Some(Box::new(VlmCritic::new(
                ChatClient::new(settings),
                feedback,
            )))
        }
        "local" => {
            let Some(dir) = &args.critic_model else {
                bail!("--critic local needs --critic-model DIR (a Moondream2 folder)");
            };
            let critic = LocalVlmCritic::load(std::path::Path::new(dir), device)
                .context("loading the local critic")?;
            Some(Box::new(critic))
        }
        other => bail!(
            "unknown critic '{other}' (valid: perception, perception-task, vlm, local, execution, none)"
        ),
    })
}

pub fn calibrate_cmd(args: &CalibrateArgs) -> Result<()> {
    let mut world = open_world("tabletop", 64)?;
    let sizes = args
        .sizes
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .context("--sizes must be comma-separated pixel sizes")?;
    if sizes.iter().any(|s| !(8..=256).contains(s)) {
        bail!("--sizes must be between 8 and 256 pixels");
    }
    let spec = CalibrationSpec {
        tasks: pick_tasks(world.as_ref(), &args.tasks)?,
        views: pick_views(world.as_ref(), &args.views)?,
        seeds: (args.seed_base..args.seed_base + args.seeds).collect(),
        sizes,
    };
    let critic = PerceptionCritic::default();
    let cases = (spec.tasks.len() * spec.views.len() * spec.seeds.len()) as u64;
    let bar = progress(cases, "expert videos");
    let report = calibrate(&critic, world.as_mut(), &spec, || bar.inc(1))?;
    bar.finish_and_clear();
    println!("perception critic on expert videos (8-frame clips) and edited failures");
    println!(
        "  {:<13} {:>4} {:>8} {:>9} {:>9} {:>9}",
        "task", "px", "experts", "vanish", "teleport", "recolour"
    );
    for r in &report.rows {
        let edit = |e: Edit| {
            r.edits
                .iter()
                .find(|x| x.0 == e)
                .map_or("-".to_owned(), |x| format!("{}/{}", x.2, x.1))
        };
        println!(
            "  {:<13} {:>4} {:>8} {:>9} {:>9} {:>9}",
            r.task,
            r.size,
            format!("{}/{}", r.experts_accepted, r.experts),
            edit(Edit::Vanish),
            edit(Edit::Teleport),
            edit(Edit::Recolour)
        );
    }
    for &size in &spec.sizes {
        println!(
            "  at {size} px: experts accepted {:.1}%, rejected: vanish {:.1}%, teleport {:.1}%, recolour {:.1}%",
            100.0 * report.expert_acceptance(size),
            100.0 * report.edit_rejection(Edit::Vanish, size),
            100.0 * report.edit_rejection(Edit::Teleport, size),
            100.0 * report.edit_rejection(Edit::Recolour, size),
        );
    }
    let mut why: Vec<(String, usize)> = Vec::new();
    for m in report.misses.iter().filter(|m| m.what == "expert rejected") {
        for f in &m.findings {
            let key = format!("{} {} {:?} @{}", m.task, f.object, f.kind, m.size);
            match why.iter_mut().find(|w| w.0 == key) {
                Some(w) => w.1 += 1,
                None => why.push((key, 1)),
            }
        }
    }
    why.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if !why.is_empty() {
        println!("  findings on rejected expert videos:");
        for (k, n) in why.iter().take(25) {
            println!("    {n:>4}  {k}");
        }
    }
    let plans = if args.model_plans > 0 {
        Some(model_plans(args, &spec, &critic)?)
    } else {
        None
    };
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "thresholds": critic.thresholds,
            "report": report,
            "model_plans": plans,
        });
        super::write_json(path, &json)?;
    }
    Ok(())
}

pub fn agreement_cmd(args: &AgreementArgs) -> Result<()> {
    use std::ops::ControlFlow;
    use videoagent::agent::critic_agreement::{
        agreement, expert_position_auc, judge_against_execution, within_task,
    };
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, note) = select_device(&args.device)?;
    tracing::info!("{note}");
    let model = VideoModel::load(&dir, &device)
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    let mut world = open_world(&model.config.world, 64)?;
    let start = PlanStart {
        world: &model.config.world,
        view: 0,
        seed: args.seed_base,
    };
    let mut critics: Vec<Box<dyn Critic>> = Vec::new();
    for name in args.critics.split(',').map(str::trim) {
        if name == "execution" || name == "none" {
            bail!("--critics: '{name}' cannot be measured against execution");
        }
        critics.extend(make_critic(name, &args.access, start, &device)?);
    }
    let critic_refs: Vec<&dyn Critic> = critics.iter().map(|c| c.as_ref()).collect();
    let mut starts = Vec::new();
    for task in pick_tasks(world.as_ref(), &args.tasks)? {
        for view in pick_views(world.as_ref(), &args.views)? {
            for seed in args.seed_base..args.seed_base + args.seeds {
                starts.push((task.clone(), view, seed));
            }
        }
    }
    let bar = progress(starts.len() as u64, "plans executed and judged");
    let plans = judge_against_execution(
        &model,
        &critic_refs,
        world.as_mut(),
        &starts,
        &SampleConfig::ddim(args.steps.max(1)),
        |_| {
            bar.inc(1);
            ControlFlow::Continue(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let successes = plans.iter().filter(|p| p.success).count();
    println!(
        "{} plans of {} executed: {successes} succeeded, {} failed",
        plans.len(),
        dir.display(),
        plans.len() - successes
    );
    println!(
        "  {:<12} {:>6} {:>11} {:>9} {:>17} {:>14} {:>10}",
        "critic",
        "judged",
        "unavailable",
        "accuracy",
        "reject precision",
        "reject recall",
        "latency"
    );
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", 100.0 * v));
    let table: Vec<_> = (0..critic_refs.len())
        .map(|i| agreement(&plans, i))
        .collect();
    for a in &table {
        println!(
            "  {:<12} {:>6} {:>11} {:>9} {:>17} {:>14} {:>8.1}ms",
            a.critic,
            a.judged,
            a.unavailable,
            pct(Some(a.accuracy)),
            pct(a.reject_precision),
            pct(a.reject_recall),
            a.mean_latency_ms
        );
    }
    for (i, a) in table.iter().enumerate() {
        println!(
            "  {} within tasks (accepted: succeeded / failed; rejected: succeeded / failed):",
            a.critic
        );
        for r in within_task(&plans, i) {
            println!(
                "    {:<14} {:>3} / {:<3} {:>3} / {:<3}",
                r.task,
                r.accepted_succeeded,
                r.accepted_failed,
                r.rejected_succeeded,
                r.rejected_failed
            );
        }
    }
    let oracle = expert_position_auc(&plans);
    if let Some((auc, n)) = oracle {
        println!(
            "expert-position oracle (where the plan's task object ends against the expert's from the same \
             start): AUC {auc:.2} for success within tasks ({n} pairs of a success and a failure)"
        );
    }
    let fits: Vec<_> = match args.fit {
        true => (0..critic_refs.len())
            .map(|i| fit_kinds(&plans, i, args.seed_base))
            .collect(),
        false => Vec::new(),
    };
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": dir, "agreement": table, "fits": fits, "plans": plans,
            "within_task": (0..critic_refs.len()).map(|i| within_task(&plans, i)).collect::<Vec<_>>(),
            "expert_position_auc": oracle.map(|(auc, n)| serde_json::json!({"auc": auc, "pairs": n})),
        });
        super::write_json(path, &json)?;
    }
    Ok(())
}

/// [`videoagent::agent::critic_agreement::fit_rejecting_kinds`] on the plans of even seed
/// offsets, checked on the odd ones against the critic as it is and against rejecting all.
fn fit_kinds(
    plans: &[videoagent::agent::critic_agreement::JudgedPlan],
    index: usize,
    seed_base: u64,
) -> serde_json::Value {
    use videoagent::agent::critic_agreement::{
        accuracy_with_kinds, agreement, fit_rejecting_kinds,
    };
    use videoagent::critic::FindingKind;
    let (fit, held_out): (Vec<_>, Vec<_>) = plans
        .iter()
        .cloned()
        .partition(|p| (p.seed - seed_base).is_multiple_of(2));
    let (kinds, fit_accuracy) = fit_rejecting_kinds(&fit, index);
    let held = |kinds: &[FindingKind]| accuracy_with_kinds(&held_out, index, kinds);
    let always_reject =
        held_out.iter().filter(|p| !p.success).count() as f64 / held_out.len().max(1) as f64;
    let critic = plans
        .first()
        .and_then(|p| p.verdicts.get(index))
        .map_or("", |v| v.0.as_str());
    println!(
        "fit {critic}: reject on {kinds:?}: {:.1}% on {} plans (even seeds); held out ({} plans): \
         {:.1}% (as configured: {:.1}%, on every kind: {:.1}%, rejecting all plans: {:.1}%)",
        100.0 * fit_accuracy,
        fit.len(),
        held_out.len(),
        100.0 * held(&kinds),
        100.0 * agreement(&held_out, index).accuracy,
        100.0 * held(&FindingKind::ALL),
        100.0 * always_reject
    );
    serde_json::json!({
        "critic": critic, "rejects_on": kinds, "fit_plans": fit.len(),
        "fit_accuracy": fit_accuracy, "held_out_plans": held_out.len(),
        "held_out_accuracy": held(&kinds),
        "held_out_as_configured": agreement(&held_out, index).accuracy,
        "held_out_every_kind": held(&FindingKind::ALL),
        "held_out_reject_all": always_reject,
    })
}

fn model_plans(
    args: &CalibrateArgs,
    spec: &CalibrationSpec,
    critic: &dyn Critic,
) -> Result<Vec<PlanJudgement>> {
    use videoagent::model::{
        SampleConfig, VideoModel, device::select_device, pipeline::default_model_dir,
    };
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let (device, _) = select_device("auto")?;
    let model = VideoModel::load(&dir, &device)
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    let mut world = open_world(&model.config.world, 64)?;
    let spec = CalibrationSpec {
        seeds: (args.seed_base..args.seed_base + args.model_plans).collect(),
        ..spec.clone()
    };
    let n = (spec.tasks.len() * spec.views.len() * spec.seeds.len()) as u64;
    let bar = progress(n, "model plans");
    let plans = judge_model_plans(
        critic,
        &model,
        world.as_mut(),
        &spec,
        &SampleConfig::ddim(args.steps),
        args.bad_px,
        |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    println!(
        "model plans ({}), bad = task object ends > {} px from the expert's or is missing",
        dir.display(),
        args.bad_px
    );
    println!(
        "  {:<13} {:>5} {:>8} {:>5} {:>12} {:>13}",
        "task", "plans", "rejected", "bad", "bad rejected", "good accepted"
    );
    let mut tasks: Vec<&str> = plans.iter().map(|p| p.task.as_str()).collect();
    tasks.dedup();
    for task in tasks {
        let ps: Vec<&PlanJudgement> = plans.iter().filter(|p| p.task == task).collect();
        let bad = ps.iter().filter(|p| !p.close_to_expert).count();
        println!(
            "  {:<13} {:>5} {:>8} {:>5} {:>12} {:>13}",
            task,
            ps.len(),
            ps.iter().filter(|p| !p.accepted).count(),
            bad,
            ps.iter()
                .filter(|p| !p.close_to_expert && !p.accepted)
                .count(),
            ps.iter()
                .filter(|p| p.close_to_expert && p.accepted)
                .count(),
        );
    }
    Ok(plans)
}

impl CriticArgs {
    /// Whether `plan` should run the loop (a critic to ask or refinements to make).
    pub fn wants_loop(&self) -> bool {
        self.refine > 0 || self.critic != "none"
    }
}

/// Runs the refinement loop for `plan` with `critic` (from [`make_critic`]; `None`: no
/// critic), writes every iteration under `out/iterations/` and returns the chosen frames with
/// the record for `plan.json`.
#[allow(clippy::too_many_arguments)]
pub fn refine_plan(
    args: &CriticArgs,
    critic: Option<&dyn Critic>,
    model: &videoagent::model::VideoModel,
    start: &videoagent::env::Observation,
    task: &str,
    instruction: &str,
    sample: &videoagent::model::SampleConfig,
    seed: u64,
    out: &std::path::Path,
) -> Result<(Vec<videoagent::env::Rgb8Image>, RefinementRecord)> {
    use std::ops::ControlFlow;
    use videoagent::agent::refine::{
        OnUnavailable, RefineInput, RefineProgress, RefineSettings, refine,
    };

    let (critic, on_unavailable): (&dyn Critic, _) = match critic {
        Some(c) => (c, OnUnavailable::Stop),
        None => (&NoCritic, OnUnavailable::Continue),
    };
    let steps = match sample.sampler {
        videoagent::model::Sampler::Ddim { steps } => steps,
        _ => model.config.timesteps,
    } as u64;
    let bar = progress(steps * (args.refine as u64 + 1), "plan 0");
    let settings = RefineSettings {
        max_refinements: args.refine,
        sample: *sample,
        seed,
        on_unavailable,
    };
    let input = RefineInput {
        first: start,
        task,
        instruction,
    };
    let outcome = refine(model, critic, &input, &settings, &mut |p| {
        match p {
            RefineProgress::Step { .. } => bar.inc(1),
            RefineProgress::Iteration(it) => {
                if it.index < args.refine {
                    bar.set_message(format!("plan {}", it.index + 1));
                }
                bar.println(format!(
                    "plan {}: {} ({:.0} ms sampling, {:.0} ms critique) {}",
                    it.index,
                    verdict_word(&it.review.verdict),
                    it.sample_ms,
                    it.review.latency.as_secs_f64() * 1e3,
                    it.review.feedback
                ));
            }
        }
        ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    let mut iterations = Vec::new();
    let mut captions = Vec::new();
    for it in &outcome.iterations {
        let critique = match &it.review.verdict {
            Verdict::Unavailable { reason } => format!("critic unavailable: {reason}"),
            v => format!("{}: {}", verdict_word(v), it.review.feedback),
        };
        let chosen = if outcome.chosen == Some(it.index) {
            " (chosen)"
        } else {
            ""
        };
        captions.push(format!("plan {}{chosen}, {critique}", it.index));
        let dir = write_iteration(out, it.index, &start.rgb, &it.frames, &critique)
            .with_context(|| format!("writing iteration {} to {}", it.index, out.display()))?;
        iterations.push(IterationRecord {
            index: it.index,
            dir,
            prompt: it.prompt.clone(),
            sample_seed: it.seed,
            sample_ms: it.sample_ms,
            review: it.review.clone(),
        });
    }
    let plans: Vec<&[videoagent::env::Rgb8Image]> = outcome
        .iterations
        .iter()
        .map(|i| i.frames.as_slice())
        .collect();
    write_iterations_sheet(out, &start.rgb, &plans, &captions)
        .with_context(|| format!("writing {}", out.join("iterations.png").display()))?;
    let frames = outcome
        .chosen_frames()
        .context("sampling was cancelled")?
        .to_vec();
    let stop = serde_json::to_value(outcome.stop)?
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    Ok((
        frames,
        RefinementRecord {
            critic: critic.name().to_owned(),
            max_refinements: args.refine,
            chosen: outcome.chosen,
            stop,
            iterations,
        },
    ))
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Accept => "accept",
        Verdict::Reject => "reject",
        Verdict::Unavailable { .. } => "unavailable",
    }
}
