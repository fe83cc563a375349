//! `bench model`: forward, plan and training speed of the video model, with the FLOP rate
//! achieved next to the matmul peak measured in the same run.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use super::reference::{ReferenceError, ReferenceReps, ReferenceSetup, ReferenceTimes};
use crate::model::flops::forward_flops;
use crate::model::train::{TrainConfig, TrainData, Trainer};
use crate::model::{ModelConfig, ModelError, SampleConfig, UNetConfig, VideoModel};

#[derive(Clone, Debug, Serialize)]
pub struct ConfigBench {
    pub config: String,
    /// f32, tf32 or bf16 (forward and plan).
    pub precision: String,
    pub image_size: usize,
    pub parameters: usize,
    pub forward_gflop: f64,
    /// Median of the timed forward passes, batch 1, 7 frames.
    pub forward_ms: f64,
    pub forward_gflops_per_sec: f64,
    /// One plan: DDIM with `plan_steps` steps (whole sampler, text encoding included).
    pub plan_steps: usize,
    pub plan_ms: Option<f64>,
    pub train_batch: usize,
    pub train_steps_per_sec: Option<f64>,
    /// The reference PyTorch implementation on the same config, timed right after ours.
    pub reference: Option<ReferenceTimes>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelBenchReport {
    pub device: String,
    pub threads: usize,
    /// f32 matmul 1024 x 1024 x 1024 on the same device, same run.
    pub matmul_gflops_per_sec: f64,
    pub configs: Vec<ConfigBench>,
}

/// What to measure for one config.
pub struct BenchPlan {
    pub name: String,
    pub unet: UNetConfig,
    pub forward_reps: usize,
    pub plan_steps: Option<usize>,
    pub train_steps: Option<u64>,
    /// Of the timed forward passes and plan (training is always f32).
    pub precision: crate::model::precision::Precision,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn matmul_peak(device: &Device) -> candle_core::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
    let times = (0..5)
        .map(|_| {
            let t = Instant::now();
            a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(2.0 * (n * n * n) as f64 / median(times) / 1e9)
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn bench_config(plan: &BenchPlan, device: &Device) -> Result<ConfigBench, ModelError> {
    let side = plan.unet.image_size.0;
    let cfg = ModelConfig::new(plan.unet.clone(), "tabletop");
    let varmap = VarMap::new();
    VideoModel::build(
        cfg.clone(),
        &VarBuilder::from_varmap(&varmap, DType::F32, device),
        device,
    )?;
    let parameters = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    // Inference runs on plain tensors, as a loaded model does (variables would record a graph).
    let weights = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".to_owned()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let model = VideoModel::build(
        cfg.clone(),
        &VarBuilder::from_tensors(weights, plan.precision.dtype(), device),
        device,
    )?;
    let frames = plan.unet.frames;
    let x = Tensor::randn(
        0f32,
        1.0,
        (1, plan.unet.in_channels, frames, side, side),
        device,
    )?;
    let t = Tensor::new(&[50f32], device)?;
    let tokens = model.text.encode(&["push the block"], device)?;
    let run = || -> candle_core::Result<f64> {
        let start = Instant::now();
        model
            .unet
            .forward(&x, &t, &tokens)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    let forward_s = median(
        (0..plan.forward_reps.max(1))
            .map(|_| run())
            .collect::<candle_core::Result<_>>()?,
    );
    let gflop = forward_flops(&plan.unet, 1) / 1e9;
    let plan_ms = match plan.plan_steps {
        Some(steps) => {
            let frame = crate::env::Rgb8Image {
                width: side as u32,
                height: side as u32,
                pixels: vec![128; side * side * 3],
            };
            let start = Instant::now();
            model.plan(
                &frame,
                None,
                "push the block",
                &SampleConfig::ddim(steps),
                0,
                |_| ControlFlow::Continue(()),
            )?;
            Some(start.elapsed().as_secs_f64() * 1e3)
        }
        None => None,
    };
    let train_batch = TrainConfig::default().batch;
    let train_steps_per_sec = match plan.train_steps {
        Some(steps) => Some(train_speed(cfg, steps, device)?),
        None => None,
    };
    Ok(ConfigBench {
        precision: plan.precision.name().to_owned(),
        config: plan.name.clone(),
        image_size: side,
        parameters,
        forward_gflop: gflop,
        forward_ms: forward_s * 1e3,
        forward_gflops_per_sec: gflop / forward_s,
        plan_steps: plan.plan_steps.unwrap_or(0),
        plan_ms,
        train_batch,
        train_steps_per_sec,
        reference: None,
    })
}

fn train_speed(cfg: ModelConfig, steps: u64, device: &Device) -> Result<f64, ModelError> {
    let side = cfg.frame_size() as u32;
    let frames: Vec<crate::env::Rgb8Image> = (0..12u8)
        .map(|i| crate::env::Rgb8Image {
            width: side,
            height: side,
            pixels: vec![i * 20; (side * side * 3) as usize],
        })
        .collect();
    let data = TrainData::from_frames(
        side as usize,
        vec![(frames, vec!["push the block".to_owned()])],
    );
    let dir = std::env::temp_dir().join(format!("videoagent-bench-{}", std::process::id()));
    let run = TrainConfig {
        steps: steps + 1,
        checkpoint_every: u64::MAX,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(cfg, run, &dir, None, device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut started = None;
    trainer
        .train(&data, |p| {
            if p.step == 1 {
                started = Some(Instant::now());
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let elapsed = started.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok(steps as f64 / elapsed)
}

/// Runs every plan on `device`, each followed by the reference implementation's run of the
/// same config where `reference` is given (CPU only).
pub fn run(
    plans: &[BenchPlan],
    device: &Device,
    reference: Option<&ReferenceSetup>,
) -> Result<ModelBenchReport, BenchError> {
    Ok(ModelBenchReport {
        device: crate::model::device::device_label(device).to_owned(),
        threads: super::available_threads(),
        matmul_gflops_per_sec: matmul_peak(device).map_err(ModelError::from)?,
        configs: plans
            .iter()
            .map(|plan| {
                let mut ours = bench_config(plan, device)?;
                let reps = ReferenceReps {
                    forward: plan.forward_reps,
                    plan_steps: plan.plan_steps,
                    train_steps: plan.train_steps,
                };
                ours.reference = reference
                    .map(|r| r.time(&plan.name, &plan.unet, super::available_threads(), reps))
                    .transpose()?;
                Ok::<_, BenchError>(ours)
            })
            .collect::<Result<_, _>>()?,
    })
}
