//! Training and fine-tuning the video model on demonstration clips: Adam with gradient
//! clipping, EMA weights, text dropout for classifier-free guidance, shift augmentation that
//! is the same for every frame of a clip, and checkpoints that resume exactly.
//!
//! Every batch is drawn from an RNG seeded by (seed, step), so a run resumed from a checkpoint
//! at step k continues with the very batches, noise and timesteps of an uninterrupted run.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::adam::{Adam, AdamConfig, Ema};
use super::config::UNetConfig;
use super::pipeline::{self, ModelConfig, VideoModel};
use super::{Conditioning, ModelError, NoiseSource};
use crate::env::Rgb8Image;
use crate::store::atomic;
use crate::store::dataset::{Dataset, DatasetError, clip_indices};

pub const STATE_FILE: &str = "train_state.safetensors";
pub const STATE_JSON: &str = "train_state.json";
/// The stem's spatial convolution, the one weight whose shape the input channels change.
const STEM_WEIGHT: &str = "unet.input_blocks.0.0.spatial_conv.weight";
pub const LOSS_CSV: &str = "loss.csv";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Train until this many optimiser steps in total.
    pub steps: u64,
    pub batch: usize,
    pub adam: AdamConfig,
    pub ema_decay: f64,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// Probability of training a sample without its text (for classifier-free guidance).
    pub text_dropout: f64,
    /// Largest shift, in pixels, of the random translation applied to a whole clip.
    pub max_shift: i32,
    /// Refinement training only (`refine_train`): weight of the self-conditioning consistency
    /// term (0 turns it off).
    #[serde(default = "default_consistency_weight")]
    pub consistency_weight: f64,
    /// Refinement training only: share of each batch that is plain generation (start frame
    /// conditioning, instruction text), so one model both generates and refines.
    #[serde(default = "default_plain_share")]
    pub plain_share: f64,
}

fn default_consistency_weight() -> f64 {
    super::refine_train::DEFAULT_CONSISTENCY_WEIGHT
}

fn default_plain_share() -> f64 {
    super::refine_train::DEFAULT_PLAIN_SHARE
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch: 8,
            adam: AdamConfig {
                lr: 2e-4,
                ..AdamConfig::default()
            },
            ema_decay: 0.995,
            checkpoint_every: 100,
            seed: 0,
            text_dropout: 0.1,
            max_shift: 2,
            consistency_weight: default_consistency_weight(),
            plain_share: default_plain_share(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] atomic::IoError),
    #[error("cannot resume: {problem} ({path})")]
    Resume { problem: String, path: PathBuf },
    #[error("refinement data: {problem}")]
    RefineData { problem: String },
    #[error("the dataset has no successful episode to learn from ({path})")]
    NoData { path: PathBuf },
}

/// One episode's frames at the model's size, as CHW floats in [0, 1].
struct TrainEpisode {
    frames: Vec<Vec<f32>>,
    instructions: Vec<String>,
}

/// Successful demonstrations held in memory at the model's frame size.
pub struct TrainData {
    size: usize,
    episodes: Vec<TrainEpisode>,
}

impl TrainData {
    /// Loads every successful episode of `dataset`, resized to `size`.
    pub fn load(
        dataset: &Dataset,
        size: usize,
        mut on_episode: impl FnMut(),
    ) -> Result<Self, TrainError> {
        let mut episodes = Vec::new();
        for (i, ep) in dataset.episodes().iter().enumerate() {
            on_episode();
            if !ep.success {
                continue;
            }
            let frames = (0..ep.frames)
                .map(|f| {
                    Ok(pipeline::planar_unit(&pipeline::resize(
                        &dataset.frame(i, f)?,
                        size as u32,
                    )))
                })
                .collect::<Result<_, DatasetError>>()?;
            episodes.push(TrainEpisode {
                frames,
                instructions: ep.instructions.clone(),
            });
        }
        if episodes.is_empty() {
            return Err(TrainError::NoData {
                path: dataset.root.clone(),
            });
        }
        Ok(Self { size, episodes })
    }

    /// In-memory data (for tests and for fine-tuning on plans that are not on disk yet):
    /// each item is an episode's frames and its instructions.
    pub fn from_frames(size: usize, items: Vec<(Vec<Rgb8Image>, Vec<String>)>) -> Self {
        let episodes = items
            .into_iter()
            .map(|(frames, instructions)| TrainEpisode {
                frames: frames
                    .iter()
                    .map(|f| pipeline::planar_unit(&pipeline::resize(f, size as u32)))
                    .collect(),
                instructions,
            })
            .collect();
        Self { size, episodes }
    }

    pub fn len(&self) -> usize {
        self.episodes.len()
    }

    /// Frame side the data is held at.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }
}

/// A training batch: targets in [-1, 1] `(b, 3, 7, h, w)`, start frames in [0, 1]
/// `(b, 3, h, w)`, and the instruction of each sample (`None` = dropped).
pub(crate) struct Batch {
    pub(crate) x_start: Tensor,
    pub(crate) first: Tensor,
    pub(crate) texts: Vec<Option<String>>,
}

/// Copies a CHW frame shifted by (dx, dy) pixels, repeating edge pixels.
pub(crate) fn shifted(frame: &[f32], size: usize, dx: i32, dy: i32, out: &mut Vec<f32>) {
    let n = size as i32;
    for c in 0..3 {
        for y in 0..n {
            let sy = (y - dy).clamp(0, n - 1);
            for x in 0..n {
                let sx = (x - dx).clamp(0, n - 1);
                out.push(frame[c * size * size + (sy * n + sx) as usize]);
            }
        }
    }
}

/// The plain generation batch of `step` with `batch` samples.
pub(crate) fn draw_batch(
    data: &TrainData,
    cfg: &TrainConfig,
    batch: usize,
    step: u64,
    device: &Device,
) -> candle_core::Result<Batch> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let size = data.size;
    let frames = super::config::DEFAULT_FRAMES;
    let mut first = Vec::with_capacity(batch * 3 * size * size);
    let mut target = Vec::with_capacity(batch * 3 * frames * size * size);
    let mut texts = Vec::with_capacity(batch);
    for _ in 0..batch {
        let ep = &data.episodes[rng.random_range(0..data.episodes.len())];
        let n = ep.frames.len();
        let start = rng.random_range(0..=n.saturating_sub(frames + 1));
        let (dx, dy) = (
            rng.random_range(-cfg.max_shift..=cfg.max_shift),
            rng.random_range(-cfg.max_shift..=cfg.max_shift),
        );
        let idx = clip_indices(n, start);
        shifted(&ep.frames[idx[0]], size, dx, dy, &mut first);
        let mut clip = Vec::with_capacity(3 * frames * size * size);
        for &i in &idx[1..] {
            shifted(&ep.frames[i], size, dx, dy, &mut clip);
        }
        push_channels_first(&clip, frames, size, true, &mut target);
        let text = ep.instructions[rng.random_range(0..ep.instructions.len())].clone();
        let dropped = rng.random::<f64>() < cfg.text_dropout;
        texts.push((!dropped).then_some(text));
    }
    Ok(Batch {
        x_start: Tensor::from_vec(target, (batch, 3, frames, size, size), device)?,
        first: Tensor::from_vec(first, (batch, 3, size, size), device)?,
        texts,
    })
}

/// Appends a clip held as `(f, 3, h, w)` in [0, 1] in the model's `(3, f, h, w)` layout,
/// mapped to [-1, 1] if `signed`.
pub(crate) fn push_channels_first(
    clip: &[f32],
    frames: usize,
    size: usize,
    signed: bool,
    out: &mut Vec<f32>,
) {
    let plane = size * size;
    for c in 0..3 {
        for f in 0..frames {
            let off = (f * 3 + c) * plane;
            let values = &clip[off..off + plane];
            if signed {
                out.extend(values.iter().map(|v| v * 2.0 - 1.0));
            } else {
                out.extend_from_slice(values);
            }
        }
    }
}

/// Text embeddings of a batch; a dropped text (`None`) is the zero embedding.
pub(crate) fn encode_texts(
    model: &VideoModel,
    texts: &[Option<String>],
) -> candle_core::Result<Tensor> {
    let device = &model.device;
    let strs: Vec<&str> = texts.iter().map(|t| t.as_deref().unwrap_or("")).collect();
    let tokens = model.text.encode(&strs, device)?;
    let keep: Vec<f32> = texts
        .iter()
        .map(|t| if t.is_some() { 1.0 } else { 0.0 })
        .collect();
    let keep = Tensor::from_vec(keep, (texts.len(), 1, 1), device)?;
    tokens.broadcast_mul(&keep)
}

/// Something to train on: it gives the loss of the batch of each step, drawn
/// deterministically from (`config.seed`, `step`) so that resumed runs are exact.
pub trait TrainSet: Sync {
    /// The scalar loss of step `step`'s batch under the model's current weights.
    fn batch_loss(
        &self,
        model: &VideoModel,
        config: &TrainConfig,
        step: u64,
    ) -> Result<Tensor, TrainError>;
}

impl TrainSet for TrainData {
    /// Plain generation: the min-SNR v loss conditioned on the start frame.
    fn batch_loss(
        &self,
        model: &VideoModel,
        config: &TrainConfig,
        step: u64,
    ) -> Result<Tensor, TrainError> {
        let device = model.device.clone();
        let batch = draw_batch(self, config, config.batch, step, &device)?;
        let tokens = encode_texts(model, &batch.texts)?;
        let mut noise = NoiseSource::new(
            config.seed.wrapping_add(1) ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let t = noise.timesteps(config.batch, model.diffusion.num_timesteps());
        let eps = noise.randn(batch.x_start.shape(), &device)?;
        let loss = model.diffusion.loss(
            &model.unet,
            &batch.x_start,
            &Conditioning::Image(batch.first),
            &tokens,
            &t,
            &eps,
        )?;
        Ok(loss.mean)
    }
}

/// Progress after one optimiser step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub loss: f32,
    pub grad_norm: f64,
    pub steps_per_sec: f64,
}

/// How a call to [`Trainer::train`] ended (both save a checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOutcome {
    Finished,
    Stopped,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StateJson {
    step: u64,
    train: TrainConfig,
    model: ModelConfig,
}

/// The stem weights `(o, noisy + 3, k, k)` of a reference-layout network, widened for the start
/// frame: `(o, noisy + 6, k, k)` with the conditioning's weights halved and copied to the start
/// channels. Plain generation conditions on the start frame in both, so the widened network
/// generates exactly as before; a refinement first sees the mean of the previous plan and the
/// start frame, and learns from there how much of each to use.
fn split_conditioning_weights(stem: &Tensor) -> candle_core::Result<Tensor> {
    let noisy = stem.dim(1)? - 3;
    let half = (stem.narrow(1, noisy, 3)? * 0.5)?;
    Tensor::cat(&[&stem.narrow(1, 0, noisy)?, &half, &half], 1)
}

/// A training run living in `out_dir`.
pub struct Trainer {
    pub config: TrainConfig,
    pub model: VideoModel,
    vars: Vec<(String, Var)>,
    adam: Adam,
    ema: Ema,
    step: u64,
    out_dir: PathBuf,
    /// (step, loss, grad norm) of every step taken so far in this process and before.
    log: Vec<(u64, f32, f64)>,
}

impl Trainer {
    /// A fresh run (weights initialised as upstream), or fine-tuning from `init` (a model
    /// folder whose config matches, or differs only by the start-frame input channels that
    /// `model_cfg` adds).
    pub fn new(
        model_cfg: ModelConfig,
        config: TrainConfig,
        out_dir: &Path,
        init: Option<&Path>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let varmap = VarMap::new();
        let backend = super::seeded_init::SeededVarMap::new(varmap.clone(), config.seed);
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let model = VideoModel::build(model_cfg, &vb, device)?;
        let vars = sorted_vars(&varmap)?;
        if let Some(dir) = init {
            let base = VideoModel::load(dir, device)?;
            // The same network, or the same with the start-frame channels added.
            let widens = base.config.unet.in_channels < model.config.unet.in_channels;
            let widened = UNetConfig {
                in_channels: model.config.unet.in_channels,
                ..base.config.unet.clone()
            };
            if widened != model.config.unet
                || base.config.unet.in_channels > model.config.unet.in_channels
                || base.config.text != model.config.text
                || base.config.text_encoder != model.config.text_encoder
            {
                return Err(TrainError::Resume {
                    problem: "the initial model's config differs from the one being trained"
                        .to_owned(),
                    path: dir.to_owned(),
                });
            }
            let mut weights =
                candle_core::safetensors::load(dir.join(pipeline::WEIGHTS_FILE), device)?;
            weights.extend(candle_core::safetensors::load(
                dir.join(pipeline::TEXT_FILE),
                device,
            )?);
            for (name, var) in &vars {
                let t = weights.get(name).ok_or_else(|| TrainError::Resume {
                    problem: format!("initial weights lack {name}"),
                    path: dir.to_owned(),
                })?;
                if widens && name == STEM_WEIGHT {
                    var.set(&split_conditioning_weights(t)?)?;
                } else {
                    var.set(t)?;
                }
            }
        }
        let adam = Adam::new(vars.clone(), config.adam)?;
        let ema = Ema::new(&vars, config.ema_decay)?;
        // A process killed while saving leaves temporary files (64 MB each for the state).
        if out_dir.is_dir() {
            let removed = atomic::remove_temp_files(out_dir)
                .map_err(atomic::io_error("cannot clean the run folder", out_dir))?;
            if removed > 0 {
                tracing::info!("removed {removed} temporary files of an interrupted save");
            }
        }
        Ok(Self {
            config,
            model,
            vars,
            adam,
            ema,
            step: 0,
            out_dir: out_dir.to_owned(),
            log: Vec::new(),
        })
    }

    /// Continues the run saved in `out_dir`; `steps` (if given) replaces the target step count.
    pub fn resume(out_dir: &Path, steps: Option<u64>, device: &Device) -> Result<Self, TrainError> {
        let json_path = out_dir.join(STATE_JSON);
        let bytes = std::fs::read(&json_path)
            .map_err(atomic::io_error("cannot read training state", &json_path))?;
        let saved: StateJson = serde_json::from_slice(&bytes).map_err(|e| TrainError::Resume {
            problem: format!("malformed state: {e}"),
            path: json_path.clone(),
        })?;
        saved.model.check().map_err(|problem| TrainError::Resume {
            problem: format!("model config: {problem}"),
            path: json_path.clone(),
        })?;
        let mut config = saved.train;
        if let Some(s) = steps {
            config.steps = s;
        }
        let mut t = Self::new(saved.model, config, out_dir, None, device)?;
        let state_path = out_dir.join(STATE_FILE);
        let state = candle_core::safetensors::load(&state_path, device).map_err(|e| {
            TrainError::Resume {
                problem: e.to_string(),
                path: state_path.clone(),
            }
        })?;
        // The state file is the commit point (see `save`): a kill before the JSON that
        // follows it leaves the JSON one checkpoint behind, never ahead.
        let step = state
            .get("meta.step")
            .and_then(|s| s.to_vec1::<i64>().ok())
            .and_then(|v| v.first().copied())
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s >= saved.step)
            .ok_or_else(|| TrainError::Resume {
                problem: format!(
                    "the state file has no step at or after step {} of the record",
                    saved.step
                ),
                path: state_path.clone(),
            })?;
        for (name, var) in &t.vars {
            let p = state
                .get(&format!("param.{name}"))
                .ok_or_else(|| TrainError::Resume {
                    problem: format!("state lacks param.{name}"),
                    path: state_path.clone(),
                })?;
            var.set(p)?;
        }
        t.adam.load_state(&state, step)?;
        t.ema.load(&state)?;
        t.step = step;
        t.log = read_loss_log(&out_dir.join(LOSS_CSV))
            .into_iter()
            .filter(|r| r.0 <= step)
            .collect();
        Ok(t)
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// Loss of every step so far: (step, loss, gradient norm).
    pub fn loss_log(&self) -> &[(u64, f32, f64)] {
        &self.log
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The loss of step `step`'s batch under the current weights, without training (e.g. to
    /// watch a fixed batch).
    pub fn evaluate(&self, data: &dyn TrainSet, step: u64) -> Result<f32, TrainError> {
        Ok(data
            .batch_loss(&self.model, &self.config, step)?
            .to_scalar::<f32>()?)
    }

    /// One optimiser step on the batch of the current step number.
    fn train_step(&mut self, data: &dyn TrainSet) -> Result<(f32, f64), TrainError> {
        let device = self.model.device.clone();
        super::parallel::on_gemm_pool(&device, || self.train_step_here(data))
    }

    fn train_step_here(&mut self, data: &dyn TrainSet) -> Result<(f32, f64), TrainError> {
        let loss = data.batch_loss(&self.model, &self.config, self.step)?;
        let value = loss.to_scalar::<f32>()?;
        let grads = loss.backward()?;
        let norm = self.adam.step(&grads)?;
        self.ema.update(&self.vars)?;
        self.step += 1;
        Ok((value, norm))
    }

    /// Trains until `config.steps`, saving every `checkpoint_every` steps and at the end.
    /// `on_progress` may stop the run early (a checkpoint is still written).
    pub fn train(
        &mut self,
        data: &dyn TrainSet,
        mut on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<TrainOutcome, TrainError> {
        let started = Instant::now();
        let first = self.step;
        while self.step < self.config.steps {
            let (loss, grad_norm) = self.train_step(data)?;
            self.log.push((self.step, loss, grad_norm));
            if self.step.is_multiple_of(self.config.checkpoint_every) {
                self.save()?;
            }
            let progress = Progress {
                step: self.step,
                total: self.config.steps,
                loss,
                grad_norm,
                steps_per_sec: (self.step - first) as f64 / started.elapsed().as_secs_f64(),
            };
            if on_progress(&progress).is_break() {
                self.save()?;
                return Ok(TrainOutcome::Stopped);
            }
        }
        self.save()?;
        Ok(TrainOutcome::Finished)
    }

    /// Writes the EMA model (a loadable model folder), the loss log, the full training state
    /// and the state JSON into the run folder, each file atomically. The state file is the
    /// commit point: everything before it may be newer than the last commit (the model folder
    /// loads whatever step it holds; the log is cut at the resumed step), and the JSON after
    /// it, which describes the run, may be one checkpoint older (`resume` takes the step from
    /// the state file). A kill at any moment leaves a run that loads and resumes.
    pub fn save(&self) -> Result<(), TrainError> {
        let dir = &self.out_dir;
        std::fs::create_dir_all(dir).map_err(atomic::io_error("cannot create run folder", dir))?;
        let ema: HashMap<String, Tensor> = self.ema.tensors().iter().cloned().collect();
        let (unet, text): (HashMap<_, _>, HashMap<_, _>) =
            ema.into_iter().partition(|(n, _)| n.starts_with("unet."));
        save_tensors(&unet, &dir.join(pipeline::WEIGHTS_FILE))?;
        save_tensors(&text, &dir.join(pipeline::TEXT_FILE))?;
        let config_path = dir.join(pipeline::CONFIG_FILE);
        atomic::write_json(&config_path, &self.model.config)
            .map_err(atomic::io_error("cannot write config", &config_path))?;
        let mut state = self.adam.state();
        for (name, var) in &self.vars {
            state.insert(format!("param.{name}"), var.as_tensor().clone());
        }
        for (name, t) in self.ema.tensors() {
            state.insert(format!("ema.{name}"), t.clone());
        }
        state.insert(
            "meta.step".to_owned(),
            Tensor::new(&[self.step as i64], &Device::Cpu)?,
        );
        let csv: String = std::iter::once("step,loss,grad_norm\n".to_owned())
            .chain(self.log.iter().map(|(s, l, g)| format!("{s},{l},{g}\n")))
            .collect();
        let csv_path = dir.join(LOSS_CSV);
        atomic::write_file(&csv_path, csv.as_bytes())
            .map_err(atomic::io_error("cannot write loss log", &csv_path))?;
        save_tensors(&state, &dir.join(STATE_FILE))?;
        let json = StateJson {
            step: self.step,
            train: self.config.clone(),
            model: self.model.config.clone(),
        };
        let json_path = dir.join(STATE_JSON);
        atomic::write_json(&json_path, &json)
            .map_err(atomic::io_error("cannot write training state", &json_path))?;
        Ok(())
    }
}

fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>, TrainError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".to_owned()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Saves tensors as safetensors atomically (temp file, fsync, rename).
fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), TrainError> {
    let tmp = atomic::temp_sibling(path);
    candle_core::safetensors::save(tensors, &tmp)?;
    let result = std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| atomic::sync_parent(path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(atomic::io_error("cannot write tensors", path))?;
    Ok(())
}

/// Reads `step,loss,grad_norm` rows; a missing or damaged log gives what could be read.
pub fn read_loss_log(path: &Path) -> Vec<(u64, f32, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut it = line.split(',');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clip_text::tests::write_tiny_clip;
    use crate::model::text::TextEncoderKind;

    #[test]
    fn a_clip_model_trains_with_clip_frozen_and_its_run_folder_loads() {
        let clip = tempfile::tempdir().expect("temp dir");
        write_tiny_clip(clip.path(), 16);
        let unet = UNetConfig {
            task_token_channels: 16,
            ..UNetConfig::tiny()
        };
        let kind = TextEncoderKind::Clip {
            path: clip.path().to_owned(),
        };
        let model = ModelConfig {
            text_encoder: kind.clone(),
            ..ModelConfig::new(unet, "tabletop")
        };
        let config = TrainConfig {
            steps: 1,
            batch: 1,
            checkpoint_every: 1000,
            ..TrainConfig::default()
        };
        let out = tempfile::tempdir().expect("temp dir");
        let mut trainer =
            Trainer::new(model, config, out.path(), None, &Device::Cpu).expect("trainer");
        assert!(
            trainer
                .vars
                .iter()
                .all(|(name, _)| name.starts_with("unet.")),
            "CLIP stays frozen: only the U-Net is trained"
        );
        let frames: Vec<Rgb8Image> = (0..8u8)
            .map(|i| Rgb8Image {
                width: 8,
                height: 8,
                pixels: vec![i * 30; 8 * 8 * 3],
            })
            .collect();
        let data = TrainData::from_frames(8, vec![(frames, vec!["push the block".into()])]);
        trainer
            .train(&data, |_| ControlFlow::Continue(()))
            .expect("one step");
        let loaded = VideoModel::load(out.path(), &Device::Cpu).expect("the run folder loads");
        assert_eq!(loaded.config.text_encoder, kind);
        assert_eq!(loaded.text.dim(), 16);
    }

    #[test]
    fn a_model_widened_for_the_start_frame_generates_as_before_and_refines_with_it() {
        let device = Device::Cpu;
        let config = TrainConfig {
            steps: 0,
            batch: 1,
            ..TrainConfig::default()
        };
        let base_dir = tempfile::tempdir().expect("temp dir");
        let base_cfg = ModelConfig::new(UNetConfig::tiny(), "tabletop");
        let mut base = Trainer::new(
            base_cfg.clone(),
            config.clone(),
            base_dir.path(),
            None,
            &device,
        )
        .expect("base trainer");
        // Upstream zero-initialises the output convolutions: random weights everywhere make
        // every input channel matter.
        for (_, var) in &base.vars {
            let random = Tensor::randn(0f32, 0.2, var.shape(), &device).expect("weights");
            var.set(&random).expect("set");
        }
        base.ema = Ema::new(&base.vars, config.ema_decay).expect("EMA of the random weights");
        base.save().expect("base model saved");
        let base = VideoModel::load(base_dir.path(), &device).expect("base loads");

        let mut wide_cfg = base_cfg.clone();
        wide_cfg.unet.in_channels = 9;
        let out = tempfile::tempdir().expect("temp dir");
        let wide = Trainer::new(
            wide_cfg,
            config.clone(),
            out.path(),
            Some(base_dir.path()),
            &device,
        )
        .expect("widened from the base");

        let (h, w) = UNetConfig::tiny().image_size;
        let frames = UNetConfig::tiny().frames;
        let noisy = Tensor::randn(0f32, 1.0, (1, 3, frames, h, w), &device).expect("noise");
        let start = Tensor::rand(0f32, 1.0, (1, 3, h, w), &device).expect("start");
        let previous = Tensor::rand(0f32, 1.0, (1, 3, frames, h, w), &device).expect("plan");
        let t = Tensor::new(&[40f32], &device).expect("t");
        let tokens = base
            .text
            .encode(&["push the block"], &device)
            .expect("tokens");
        let run = |model: &VideoModel, cond: &Conditioning| {
            let input = model.unet.input(&noisy, cond).expect("input");
            model.unet.forward(&input, &t, &tokens).expect("forward")
        };
        let max_diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                .expect("difference")
        };
        let plain = Conditioning::Image(start.clone());
        let generated = max_diff(&run(&base, &plain), &run(&wide.model, &plain));
        assert!(generated < 1e-5, "plain generation changed by {generated}");
        let refined_base = run(&base, &Conditioning::Video(previous.clone()));
        let refined_wide = run(&wide.model, &Conditioning::Refinement { previous, start });
        assert!(
            max_diff(&refined_base, &refined_wide) > 1e-3,
            "the widened network's refinement sees the start frame"
        );

        let mut other = base_cfg;
        other.unet.in_channels = 9;
        other.unet.model_channels *= 2;
        let out = tempfile::tempdir().expect("temp dir");
        assert!(
            Trainer::new(other, config, out.path(), Some(base_dir.path()), &device).is_err(),
            "only the input channels may differ from the initial model"
        );
    }

    #[test]
    fn shift_repeats_edges() {
        let size = 2;
        let frame: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = Vec::new();
        shifted(&frame, size, 1, 0, &mut out);
        assert_eq!(&out[..4], &[0.0, 0.0, 2.0, 2.0]);
    }
}
