//! Frame times of the studio's UI thread (`videoagent bench ui`): the whole `StudioApp::show`
//! plus tessellation, headless, at ~60 frames per second of wall time, while the studio idles
//! (playing), while a plan generates and while a fine-tune runs. The background work shares the
//! machine's cores with the UI thread, as it does on a user's machine. GPU rendering is not
//! included (there is no window).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::command::{Command, JobCommand};
use crate::app::state::Verdict;
use crate::app::{StudioApp, StudioOptions};

/// Frame-time statistics of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct FrameStats {
    pub scenario: String,
    pub frames: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The background job was still running at the last frame measured.
    pub job_running_at_end: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct UiBenchReport {
    pub threads: usize,
    /// From `StudioApp::new` to the end of the first frame (the model loads meanwhile).
    pub first_frame_ms: f64,
    pub scenarios: Vec<FrameStats>,
}

/// Runs the three scenarios with `frames` frames each.
pub fn run(
    model_dir: PathBuf,
    sample_plans: PathBuf,
    frames: usize,
) -> Result<UiBenchReport, String> {
    let ctx = egui::Context::default();
    let clock = Instant::now();
    let store = std::env::temp_dir().join(format!("videoagent-bench-ui-{}", std::process::id()));
    let started = Instant::now();
    let mut app = StudioApp::new(StudioOptions {
        model_dir,
        device: "cpu".into(),
        sample_plans: Some(sample_plans),
        store_dir: Some(store.clone()),
        annotator: "bench".into(),
        local_critic: None,
    });
    frame(&ctx, &mut app, &clock);
    let first_frame_ms = started.elapsed().as_secs_f64() * 1e3;
    app.wait_for_model()?;
    app.flush_store()?;

    let mut scenarios = Vec::new();
    app.apply(Command::TogglePlay);
    scenarios.push(measure(
        "idle, playing",
        &ctx,
        &mut app,
        &clock,
        frames,
        |_| false,
    ));

    app.settings.max_refinements = 2;
    app.apply(Command::Job(JobCommand::Generate));
    scenarios.push(measure(
        "while generating (DDIM 10, 2 refinements)",
        &ctx,
        &mut app,
        &clock,
        frames,
        StudioApp::is_generating,
    ));
    while app.is_generating() {
        frame(&ctx, &mut app, &clock);
        std::thread::sleep(Duration::from_millis(16));
    }

    app.studio.auto_advance = false;
    app.apply(Command::SetVerdict(Verdict::Accept));
    app.finetune_steps = 1_000;
    app.apply(Command::Job(JobCommand::FineTune));
    scenarios.push(measure(
        "while fine-tuning",
        &ctx,
        &mut app,
        &clock,
        frames,
        StudioApp::is_finetuning,
    ));
    app.apply(Command::Job(JobCommand::Cancel));
    while app.is_finetuning() {
        frame(&ctx, &mut app, &clock);
        std::thread::sleep(Duration::from_millis(16));
    }
    let _ = std::fs::remove_dir_all(&store);
    Ok(UiBenchReport {
        threads: super::available_threads(),
        first_frame_ms,
        scenarios,
    })
}

/// One frame: input, the whole UI, tessellation. Returns its duration.
fn frame(ctx: &egui::Context, app: &mut StudioApp, clock: &Instant) -> Duration {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1400.0, 900.0),
        )),
        time: Some(clock.elapsed().as_secs_f64()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut output = ctx.run_ui(input, |ui| app.show(ui));
    let _ = ctx.tessellate(output.shapes, output.pixels_per_point);
    let elapsed = t0.elapsed();
    // No renderer here: the texture uploads are dropped on purpose.
    output.textures_delta.clear();
    elapsed
}

fn measure(
    scenario: &str,
    ctx: &egui::Context,
    app: &mut StudioApp,
    clock: &Instant,
    frames: usize,
    running: impl Fn(&StudioApp) -> bool,
) -> FrameStats {
    let mut times: Vec<f64> = (0..frames)
        .map(|_| {
            let t = frame(ctx, app, clock).as_secs_f64() * 1e3;
            std::thread::sleep(Duration::from_millis(16));
            t
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    FrameStats {
        scenario: scenario.to_owned(),
        frames,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: times.last().copied().unwrap_or(0.0),
        job_running_at_end: running(app),
    }
}
