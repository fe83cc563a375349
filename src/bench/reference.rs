//! The reference PyTorch U-Net timed in the same run as ours: `bench model --reference DIR`
//! runs `scripts/reference_bench.py` on the config it just measured, so the speed ratios
//! compare the two on the same machine in the same minute rather than against an old number.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::model::UNetConfig;

/// How to run the reference implementation.
#[derive(Clone, Debug)]
pub struct ReferenceSetup {
    /// A Python with PyTorch, einops and einops_exts.
    pub python: PathBuf,
    /// The folder holding the reference's `guided_diffusion` package (the `flowdiffusion`
    /// folder of Video-as-Agent/VideoAgent).
    pub code: PathBuf,
    /// `scripts/reference_bench.py`.
    pub script: PathBuf,
}

/// The reference's timings of one config, measured as ours are (f32, batch 1 forward of
/// `frames` frames, one DDIM plan, batch-8 Adam steps).
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceTimes {
    pub torch: String,
    pub threads: Option<usize>,
    pub parameters: usize,
    pub forward_ms: f64,
    pub plan_ms: Option<f64>,
    pub train_steps_per_sec: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference code folder {0} has no guided_diffusion package")]
    MissingCode(PathBuf),
    #[error("could not start {python}: {source}")]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("the reference benchmark failed ({status}): {stderr_tail}")]
    Failed { status: String, stderr_tail: String },
    #[error("the reference benchmark's report {path}: {problem}")]
    Report { path: PathBuf, problem: String },
}

/// What `reference_bench.py --json` writes (the fields we compare).
#[derive(Deserialize)]
struct ScriptReport {
    torch: String,
    threads: Option<usize>,
    plan_steps: usize,
    configs: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// What to time: the same counts as our side of the run.
#[derive(Clone, Copy, Debug)]
pub struct ReferenceReps {
    pub forward: usize,
    pub plan_steps: Option<usize>,
    pub train_steps: Option<u64>,
}

impl ReferenceSetup {
    /// Fails early, before any timing, when the code folder is not the reference's.
    pub fn check(&self) -> Result<(), ReferenceError> {
        if self.code.join("guided_diffusion").is_dir() {
            Ok(())
        } else {
            Err(ReferenceError::MissingCode(self.code.clone()))
        }
    }

    /// Times `unet` with the reference code on the CPU with `threads` threads.
    pub fn time(
        &self,
        name: &str,
        unet: &UNetConfig,
        threads: usize,
        reps: ReferenceReps,
    ) -> Result<ReferenceTimes, ReferenceError> {
        self.check()?;
        let out = std::env::temp_dir().join(format!(
            "videoagent-reference-{}-{name}.json",
            std::process::id()
        ));
        let unet_json = serde_json::to_string(unet).map_err(|e| ReferenceError::Report {
            path: out.clone(),
            problem: e.to_string(),
        })?;
        let output = Command::new(&self.python)
            .arg(&self.script)
            .args(["--device", "cpu", "--threads", &threads.to_string()])
            .arg("--ref")
            .arg(&self.code)
            .args(["--unet-json", &unet_json, "--name", name])
            .args(["--reps", &reps.forward.max(1).to_string()])
            .args([
                "--plan-reps",
                if reps.plan_steps.is_some() { "1" } else { "0" },
            ])
            .args(["--plan-steps", &reps.plan_steps.unwrap_or(1).to_string()])
            .args(["--train-reps", &reps.train_steps.unwrap_or(0).to_string()])
            .arg("--json")
            .arg(&out)
            .output()
            .map_err(|source| ReferenceError::Spawn {
                python: self.python.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
            return Err(ReferenceError::Failed {
                status: output.status.to_string(),
                stderr_tail: if tail.is_empty() {
                    "no output (killed for memory?)".to_owned()
                } else {
                    tail
                },
            });
        }
        let parsed = parse_report(&out, reps);
        let _ = std::fs::remove_file(&out);
        parsed
    }
}

fn parse_report(path: &Path, reps: ReferenceReps) -> Result<ReferenceTimes, ReferenceError> {
    let problem = |problem: String| ReferenceError::Report {
        path: path.to_owned(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    let report: ScriptReport =
        serde_json::from_slice(&bytes).map_err(|e| problem(e.to_string()))?;
    let row = report
        .configs
        .first()
        .ok_or_else(|| problem("no config was timed".to_owned()))?;
    let number = |key: &str| {
        row.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| problem(format!("no number {key}")))
    };
    let plan_key = format!("plan_ddim{}_fp32_ms", report.plan_steps);
    Ok(ReferenceTimes {
        torch: report.torch,
        threads: report.threads,
        parameters: number("params")? as usize,
        forward_ms: number("fwd_fp32_ms")?,
        plan_ms: reps.plan_steps.map(|_| number(&plan_key)).transpose()?,
        train_steps_per_sec: reps
            .train_steps
            .map(|_| number("train_step_b8_fp32_ms").map(|ms| 1e3 / ms))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a real `reference_bench.py --device cpu --json` report (torch 2.15).
    const REPORT: &str = r#"{"device": "cpu", "gpu": null, "torch": "2.15.0+cu132",
        "threads": 2, "plan_steps": 20, "configs": [{"config": "default", "params": 3844257,
        "fwd_fp32_ms": 56.07, "plan_ddim20_fp32_ms": 1272.6, "fwd_tf32_ms": null,
        "plan_ddim20_tf32_ms": null, "fwd_bf16_ms": null, "plan_ddim20_bf16_ms": null,
        "train_step_b8_fp32_ms": 988.5}]}"#;

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "videoagent-reference-test-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("temp file");
        path
    }

    #[test]
    fn the_scripts_report_gives_the_times_that_were_asked_for() {
        let path = write("ok", REPORT);
        let all = ReferenceReps {
            forward: 5,
            plan_steps: Some(20),
            train_steps: Some(3),
        };
        let times = parse_report(&path, all).expect("a valid report");
        assert_eq!(times.torch, "2.15.0+cu132");
        assert_eq!((times.threads, times.parameters), (Some(2), 3_844_257));
        assert_eq!(times.forward_ms, 56.07);
        assert_eq!(times.plan_ms, Some(1272.6));
        assert!(
            (times.train_steps_per_sec.expect("training asked for") - 1e3 / 988.5).abs() < 1e-12
        );
        let forward_only = ReferenceReps {
            plan_steps: None,
            train_steps: None,
            ..all
        };
        let times = parse_report(&path, forward_only).expect("a valid report");
        assert_eq!((times.plan_ms, times.train_steps_per_sec), (None, None));
        std::fs::remove_file(path).expect("temp file");
    }

    #[test]
    fn a_report_without_the_numbers_is_named_in_the_error() {
        let reps = ReferenceReps {
            forward: 1,
            plan_steps: Some(20),
            train_steps: None,
        };
        let path = write("bad", &REPORT.replace("plan_ddim20_fp32_ms", "other"));
        let err = parse_report(&path, reps)
            .expect_err("a missing number")
            .to_string();
        assert!(err.contains("plan_ddim20_fp32_ms"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, "{ not json").expect("temp file");
        assert!(parse_report(&path, reps).is_err());
        std::fs::remove_file(path).expect("temp file");
    }

    #[test]
    fn a_missing_code_folder_or_python_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("videoagent-ref-code-{}", std::process::id()));
        let setup = ReferenceSetup {
            python: dir.join("no-such-python"),
            code: dir.clone(),
            script: PathBuf::from("scripts/reference_bench.py"),
        };
        let reps = ReferenceReps {
            forward: 1,
            plan_steps: None,
            train_steps: None,
        };
        let unet = UNetConfig::by_name("tabletop").expect("a preset");
        let err = setup
            .time("tabletop", &unet, 2, reps)
            .expect_err("no reference");
        assert!(matches!(err, ReferenceError::MissingCode(_)), "{err}");
        std::fs::create_dir_all(dir.join("guided_diffusion")).expect("temp dir");
        let err = setup
            .time("tabletop", &unet, 2, reps)
            .expect_err("no reference");
        assert!(err.to_string().contains("no-such-python"), "{err}");
        std::fs::remove_dir_all(dir).expect("temp dir");
    }
}
