//! The training victim of the kill -9 harness: `videoagent train` on a one-episode dataset at
//! 8 px with a checkpoint after every step, SIGKILLed at random moments and started again
//! (with `--resume` once a checkpoint exists) after each kill. After every kill the run folder
//! must load as a model (no file half-written) and resume, at the step of the last verified
//! checkpoint or later (a kill never takes back a committed checkpoint). At the end the run
//! is trained to completion without a kill, and its weights must equal, byte for byte, those
//! of a run of as many steps that was never interrupted: training resumes exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::VideoModel;
use crate::model::pipeline::WEIGHTS_FILE;
use crate::model::train::{STATE_JSON, Trainer};
use crate::store::collect::{CollectSpec, collect};

/// How to kill training.
#[derive(Clone, Debug)]
pub struct TrainKillSpec {
    /// Holds `data/` (the dataset), `run/` (the killed run) and `straight/` (the reference).
    pub dir: PathBuf,
    pub kills: usize,
    /// Kills come uniformly in [min_delay_ms, max_delay_ms] after the process starts (it
    /// needs about half a second to load before its first step).
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

/// What the training part of the harness found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrainKillReport {
    /// Training processes killed with SIGKILL while running.
    pub kills: usize,
    /// Processes that had exited before their kill came (an error; also a failure).
    pub early_exits: usize,
    /// Kills after which a checkpoint existed and was verified (loads, resumes).
    pub checkpoints_verified: usize,
    /// Kills that came before the run's first checkpoint (it starts afresh).
    pub before_first_checkpoint: usize,
    /// Kills that came while a checkpoint file was being written (its temporary file was
    /// left; the next start removes it).
    pub kills_mid_save: usize,
    /// Step the run resumed from after the last kill, and the step it was finished at.
    pub last_resumed_step: u64,
    pub final_step: u64,
    /// Whether the finished run's weights equal those of the uninterrupted run.
    pub matches_uninterrupted: bool,
    /// Temporary files of killed writes still in the run folder at the end.
    pub temp_files_left: usize,
    pub failures: Vec<String>,
    pub elapsed_secs: f64,
}

/// Why the training harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainKillError {
    #[error("cannot make the training dataset: {0}")]
    Dataset(#[from] crate::store::collect::CollectError),
    #[error("cannot run `videoagent train`: {0}")]
    Spawn(std::io::Error),
}

/// The `videoagent train` arguments of the killed run (resuming when a checkpoint exists).
fn train_args(spec: &TrainKillSpec, out: &Path, steps: u64) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--data",
        &spec.dir.join("data").to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--image-size",
        "8",
        "--batch",
        "1",
        "--checkpoint-every",
        "1",
        "--device",
        "cpu",
        "--steps",
        &steps.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if out.join(STATE_JSON).exists() {
        args.push("--resume".to_owned());
    }
    args
}

/// Runs `videoagent train` to completion; an error says what it printed.
fn train_to_end(exe: &dyn Fn() -> Command, args: &[String]) -> Result<(), String> {
    let out = exe()
        .args(args)
        .output()
        .map_err(|e| format!("cannot run train: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "train {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Hidden files in the run folder: only temporary files of interrupted writes are hidden.
fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

/// Kills training `spec.kills` times, verifying the run after each kill, then finishes it
/// and compares it with an uninterrupted run. `exe()` is a command running this program.
pub fn run(
    spec: &TrainKillSpec,
    exe: &dyn Fn() -> Command,
    rng: &mut ChaCha8Rng,
    mut progress: impl FnMut(usize, &TrainKillReport),
) -> Result<TrainKillReport, TrainKillError> {
    let start = Instant::now();
    let mut report = TrainKillReport::default();
    let data = spec.dir.join("data");
    if !data.join("manifest.json").exists() {
        let one = CollectSpec {
            world: "tabletop".into(),
            frame_size: 16,
            tasks: vec!["push".into()],
            views: vec![0],
            episodes: 1,
            candidates: 1,
            seed_base: 0,
            threads: 1,
        };
        collect(&one, &data, &|| {}, &AtomicBool::new(false))?;
    }
    let run_dir = spec.dir.join("run");
    // Far more steps than the kills leave time for: every victim is killed while training.
    let endless = 1_000_000;
    for i in 0..spec.kills {
        let mut child = exe()
            .args(train_args(spec, &run_dir, endless))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TrainKillError::Spawn)?;
        let delay = rng.random_range(spec.min_delay_ms..=spec.max_delay_ms.max(spec.min_delay_ms));
        std::thread::sleep(Duration::from_millis(delay));
        match child.try_wait() {
            Ok(Some(status)) => {
                report.early_exits += 1;
                report
                    .failures
                    .push(format!("training {i} exited by itself ({status})"));
            }
            _ => {
                let _ = child.kill();
                report.kills += 1;
            }
        }
        let _ = child.wait();
        if temp_files(&run_dir) > 0 {
            report.kills_mid_save += 1;
        }
        if run_dir.join(STATE_JSON).exists() {
            verify_checkpoint(&run_dir, i, &mut report);
        } else {
            report.before_first_checkpoint += 1;
        }
        progress(i + 1, &report);
    }
    finish(spec, exe, &run_dir, &mut report);
    report.temp_files_left = temp_files(&run_dir);
    if report.temp_files_left > 0 {
        report.failures.push(format!(
            "{} temporary files of killed writes left in {}",
            report.temp_files_left,
            run_dir.display()
        ));
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The run folder after kill `i`: loads as a model, and resumes at or after the last step.
fn verify_checkpoint(run_dir: &Path, i: usize, report: &mut TrainKillReport) {
    if let Err(e) = VideoModel::load(run_dir, &Device::Cpu) {
        report.failures.push(format!(
            "after training kill {i}: the run does not load: {e}"
        ));
    }
    match Trainer::resume(run_dir, None, &Device::Cpu) {
        Ok(t) if t.step() >= report.last_resumed_step => {
            report.last_resumed_step = t.step();
            report.checkpoints_verified += 1;
        }
        Ok(t) => report.failures.push(format!(
            "after training kill {i}: resumes at step {}, an earlier kill left step {}",
            t.step(),
            report.last_resumed_step
        )),
        Err(e) => report
            .failures
            .push(format!("after training kill {i}: cannot resume: {e}")),
    }
}

/// Trains the killed run to completion (two more steps) and an uninterrupted run of as many
/// steps, and compares their weights.
fn finish(
    spec: &TrainKillSpec,
    exe: &dyn Fn() -> Command,
    run_dir: &Path,
    report: &mut TrainKillReport,
) {
    let steps = report.last_resumed_step + 2;
    let straight = spec.dir.join("straight");
    let _ = std::fs::remove_dir_all(&straight);
    let done = train_to_end(exe, &train_args(spec, run_dir, steps))
        .and_then(|()| train_to_end(exe, &train_args(spec, &straight, steps)));
    if let Err(e) = done {
        report.failures.push(e);
        return;
    }
    match Trainer::resume(run_dir, None, &Device::Cpu) {
        Ok(t) => report.final_step = t.step(),
        Err(e) => report.failures.push(format!("the finished run: {e}")),
    }
    if report.final_step != steps {
        report.failures.push(format!(
            "the run finished at step {}, not {steps}",
            report.final_step
        ));
    }
    let weights = |dir: &Path| std::fs::read(dir.join(WEIGHTS_FILE)).ok();
    report.matches_uninterrupted =
        weights(run_dir).is_some() && weights(run_dir) == weights(&straight);
    if !report.matches_uninterrupted {
        report.failures.push(format!(
            "the resumed run's weights differ from an uninterrupted run of {steps} steps"
        ));
    }
}
