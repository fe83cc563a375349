//! Refinement training (VideoAgent §3, self-conditioning consistency): the same network learns
//! to refine its own plans. A refinement sample is a start of the demonstration set with
//! plans the model generated for it earlier and the critic's review of each
//! (`store::refine_data`); the network is conditioned on one earlier plan as a frame-aligned
//! video ([`Conditioning::Refinement`]; networks with start-frame channels also see the real
//! start frame) with the text `"instruction. critique"` of that plan, and must produce the
//! expert's clip.
//!
//! The loss of a batch is
//!
//! ```text
//! L = mean over every branch of  w(t) * |v_pred - v_target|^2           (diffusion loss)
//!   + consistency_weight * mean over paired starts of  w(t) * |v_a - v_b|^2   (consistency)
//! ```
//!
//! where `w(t)` is the min-SNR-5 weight of the plain loss and `|.|^2` the mean over pixels.
//! For a start with two earlier generations `a` and `b` (two plans of the same start: the
//! first plan and its refinement), the very same noisy ground truth `x_t` (same noise, same
//! timestep) is denoised twice: once conditioned on plan `a` with its critique text, once on
//! plan `b` with its critique text. Both predictions get the diffusion loss towards the ground
//! truth, and the consistency term pulls the two predictions together, so what the refined
//! plan becomes does not depend on which earlier mistake it started from. Gradients flow
//! through both branches (no stop-gradient). The term is zero when both branches see the same
//! plan and text, and it is skipped for starts with a single generation. Its default weight
//! is [`DEFAULT_CONSISTENCY_WEIGHT`] = 1 (the term added to the diffusion loss as it is): our
//! notes of the paper give the term no factor, and the public reference trainer leaves it out
//! altogether (paper notes §3), so there is no tuned reference value to copy.
//!
//! Batches are mixed: a share [`super::train::TrainConfig::plain_share`] of each batch are
//! plain generation samples (start frame repeated as conditioning, instruction as text) so
//! one model both generates and refines. Every draw (starts, generation pair, shift, text
//! dropout, noise, timesteps) comes from RNGs keyed by (seed, step), so training with
//! [`super::train::Trainer`] resumes exactly.

use candle_core::Tensor;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::DEFAULT_FRAMES;
use super::diffusion::timestep_tensor;
use super::pipeline::{self, VideoModel};
use super::train::{
    TrainConfig, TrainData, TrainError, TrainSet, draw_batch, encode_texts, push_channels_first,
    shifted,
};
use super::{Conditioning, NoiseSource};
use crate::env::Rgb8Image;
use crate::store::dataset::CLIP_FRAMES;

/// Weight of the consistency term unless `--consistency-weight` says otherwise.
pub const DEFAULT_CONSISTENCY_WEIGHT: f64 = 1.0;
/// Share of plain generation samples in a refinement batch.
pub const DEFAULT_PLAIN_SHARE: f64 = 0.25;

/// One start for refinement training, as images of any size.
#[derive(Clone, Debug)]
pub struct RefineItem {
    /// The expert's clip: the start frame and the 7 frames that follow ([`CLIP_FRAMES`]).
    pub truth: Vec<Rgb8Image>,
    /// The plain instruction (for plain generation samples drawn from this start).
    pub instruction: String,
    /// Earlier plans of this start (7 frames each) with the text a refinement of each is
    /// conditioned on (`refinement_prompt(instruction, critique)`).
    pub generations: Vec<(Vec<Rgb8Image>, String)>,
}

/// A start held in memory as CHW floats in [0, 1] at the model's size.
struct Start {
    truth: Vec<Vec<f32>>,
    generations: Vec<(Vec<Vec<f32>>, String)>,
}

/// Refinement starts plus the plain generation data mixed into each batch.
pub struct RefineTrainData {
    size: usize,
    starts: Vec<Start>,
    plain: TrainData,
}

/// The loss of one batch and its parts.
#[derive(Debug, Clone)]
pub struct RefineLoss {
    /// `diffusion + consistency_weight * consistency`.
    pub total: Tensor,
    /// The min-SNR v loss over every branch (plain samples, then refinement branches).
    pub diffusion: Tensor,
    /// The consistency term before weighting; `None` if no start of the batch has two
    /// generations.
    pub consistency: Option<Tensor>,
}

fn planar(frames: &[Rgb8Image], size: usize) -> Vec<Vec<f32>> {
    frames
        .iter()
        .map(|f| pipeline::planar_unit(&pipeline::resize(f, size as u32)))
        .collect()
}

impl RefineTrainData {
    /// Refinement starts at `size`; plain samples come from `plain` (e.g. the demonstration
    /// set) or, if `None`, from the starts' own expert clips.
    pub fn new(
        size: usize,
        items: Vec<RefineItem>,
        plain: Option<TrainData>,
    ) -> Result<Self, TrainError> {
        let bad = |problem: String| TrainError::RefineData { problem };
        if items.is_empty() {
            return Err(bad("no refinement starts".to_owned()));
        }
        for (i, item) in items.iter().enumerate() {
            if item.truth.len() != CLIP_FRAMES {
                return Err(bad(format!(
                    "start {i} has {} truth frames, expected {CLIP_FRAMES}",
                    item.truth.len()
                )));
            }
            if item.generations.is_empty()
                || item
                    .generations
                    .iter()
                    .any(|(g, _)| g.len() != DEFAULT_FRAMES)
            {
                return Err(bad(format!(
                    "start {i} needs at least one generation of {DEFAULT_FRAMES} frames"
                )));
            }
        }
        let plain = match plain {
            Some(p) => p,
            None => TrainData::from_frames(
                size,
                items
                    .iter()
                    .map(|i| (i.truth.clone(), vec![i.instruction.clone()]))
                    .collect(),
            ),
        };
        if plain.size() != size || plain.is_empty() {
            return Err(bad(format!(
                "plain data is {} episodes at {}px, refinement data at {size}px",
                plain.len(),
                plain.size()
            )));
        }
        let starts = items
            .iter()
            .map(|item| Start {
                truth: planar(&item.truth, size),
                generations: item
                    .generations
                    .iter()
                    .map(|(g, text)| (planar(g, size), text.clone()))
                    .collect(),
            })
            .collect();
        Ok(Self {
            size,
            starts,
            plain,
        })
    }

    /// Number of refinement starts.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Starts with at least two generations (where the consistency term applies).
    pub fn paired(&self) -> usize {
        self.starts
            .iter()
            .filter(|s| s.generations.len() >= 2)
            .count()
    }

    /// The loss of step `step`'s batch and its parts (see the module docs).
    pub fn losses(
        &self,
        model: &VideoModel,
        config: &TrainConfig,
        step: u64,
    ) -> Result<RefineLoss, TrainError> {
        let device = model.device.clone();
        let size = self.size;
        let frames = DEFAULT_FRAMES;
        let n_plain = ((config.batch as f64 * config.plain_share.clamp(0.0, 1.0)).round() as usize)
            .min(config.batch);
        let n_refine = config.batch - n_plain;

        let mut x_start = Vec::with_capacity(config.batch);
        let mut cond = Vec::with_capacity(config.batch);
        let mut start_frames = Vec::with_capacity(config.batch);
        let mut texts: Vec<Option<String>> = Vec::with_capacity(config.batch);
        if n_plain > 0 {
            let plain = draw_batch(&self.plain, config, n_plain, step, &device)?;
            x_start.push(plain.x_start);
            cond.push(Conditioning::Image(plain.first.clone()).video(frames)?);
            start_frames.push(plain.first);
            texts.extend(plain.texts);
        }
        // The refinement part: its own RNG, keyed by (seed, step) like everything else.
        let mut rng = ChaCha8Rng::seed_from_u64(
            config.seed.wrapping_add(2) ^ step.wrapping_mul(0xBF58_476D_1CE4_E5B9),
        );
        let mut target = Vec::new();
        let mut refine_starts = Vec::new();
        let mut cond_a = Vec::new();
        let mut cond_b = Vec::new();
        let mut texts_b: Vec<Option<String>> = Vec::new();
        let mut paired: Vec<u32> = Vec::new();
        for j in 0..n_refine {
            let start = &self.starts[rng.random_range(0..self.starts.len())];
            let n = start.generations.len();
            let a = rng.random_range(0..n);
            let b = (n >= 2).then(|| (a + 1 + rng.random_range(0..n - 1)) % n);
            let (dx, dy) = (
                rng.random_range(-config.max_shift..=config.max_shift),
                rng.random_range(-config.max_shift..=config.max_shift),
            );
            let dropped = rng.random::<f64>() < config.text_dropout;
            let clip = |frames_chw: &[Vec<f32>]| {
                let mut out = Vec::with_capacity(frames * 3 * size * size);
                for f in frames_chw {
                    shifted(f, size, dx, dy, &mut out);
                }
                out
            };
            push_channels_first(&clip(&start.truth[1..]), frames, size, true, &mut target);
            refine_starts.extend(clip(&start.truth[..1]));
            let (gen_a, text_a) = &start.generations[a];
            push_channels_first(&clip(gen_a), frames, size, false, &mut cond_a);
            texts.push((!dropped).then(|| text_a.clone()));
            if let Some(b) = b {
                let (gen_b, text_b) = &start.generations[b];
                push_channels_first(&clip(gen_b), frames, size, false, &mut cond_b);
                texts_b.push((!dropped).then(|| text_b.clone()));
                paired.push((n_plain + j) as u32);
            }
        }
        if n_refine > 0 {
            let shape = (n_refine, 3, frames, size, size);
            x_start.push(Tensor::from_vec(target, shape, &device)?);
            cond.push(Tensor::from_vec(cond_a, shape, &device)?);
            start_frames.push(Tensor::from_vec(
                refine_starts,
                (n_refine, 3, size, size),
                &device,
            )?);
        }
        let x_start = Tensor::cat(&x_start, 0)?;
        let start_frames = Tensor::cat(&start_frames, 0)?;
        let cond = Conditioning::Refinement {
            previous: Tensor::cat(&cond, 0)?,
            start: start_frames.clone(),
        };
        let tokens = encode_texts(model, &texts)?;

        let mut noise = NoiseSource::new(
            config.seed.wrapping_add(3) ^ step.wrapping_mul(0x94D0_49BB_1331_11EB),
        );
        let diffusion = &model.diffusion;
        let t = noise.timesteps(config.batch, diffusion.num_timesteps());
        let eps = noise.randn(x_start.shape(), &device)?;
        let noisy = diffusion.q_sample(&x_start, &t, &eps)?;
        let v_target = diffusion.predict_v(&x_start, &t, &eps)?;
        let out_a = model.unet.forward(
            &model.unet.input(&noisy, &cond)?,
            &timestep_tensor(&t, &device)?,
            &tokens,
        )?;
        let loss_a = diffusion.weighted_loss(&out_a, &v_target, &t)?;
        if paired.is_empty() {
            return Ok(RefineLoss {
                total: loss_a.mean.clone(),
                diffusion: loss_a.mean,
                consistency: None,
            });
        }
        let p = paired.len();
        let idx = Tensor::from_vec(paired.clone(), p, &device)?;
        let t_p: Vec<usize> = paired.iter().map(|&i| t[i as usize]).collect();
        let cond_b = Conditioning::Refinement {
            previous: Tensor::from_vec(cond_b, (p, 3, frames, size, size), &device)?,
            start: start_frames.index_select(&idx, 0)?,
        };
        let out_b = model.unet.forward(
            &model.unet.input(&noisy.index_select(&idx, 0)?, &cond_b)?,
            &timestep_tensor(&t_p, &device)?,
            &encode_texts(model, &texts_b)?,
        )?;
        let loss_b = diffusion.weighted_loss(&out_b, &v_target.index_select(&idx, 0)?, &t_p)?;
        let consistency = diffusion
            .weighted_loss(&out_a.index_select(&idx, 0)?, &out_b, &t_p)?
            .mean;
        let diffusion_loss = Tensor::cat(&[loss_a.per_sample, loss_b.per_sample], 0)?.mean_all()?;
        let total = if config.consistency_weight > 0.0 {
            (&diffusion_loss + (&consistency * config.consistency_weight)?)?
        } else {
            diffusion_loss.clone()
        };
        Ok(RefineLoss {
            total,
            diffusion: diffusion_loss,
            consistency: Some(consistency),
        })
    }
}

impl TrainSet for RefineTrainData {
    fn batch_loss(
        &self,
        model: &VideoModel,
        config: &TrainConfig,
        step: u64,
    ) -> Result<Tensor, TrainError> {
        Ok(self.losses(model, config, step)?.total)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::model::train::Trainer;
    use crate::model::{ModelConfig, UNetConfig};

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap_or(f32::NAN)
    }

    fn model_config() -> ModelConfig {
        let unet = UNetConfig {
            frames: DEFAULT_FRAMES,
            ..UNetConfig::tiny()
        };
        ModelConfig::new(unet, "tabletop")
    }

    fn image(seed: u32) -> Rgb8Image {
        Rgb8Image {
            width: 8,
            height: 8,
            pixels: (0..192u32)
                .map(|i| ((i * 37 + seed * 91) % 251) as u8)
                .collect(),
        }
    }

    fn item(second: u32) -> RefineItem {
        let first: Vec<Rgb8Image> = (0..7).map(|f| image(100 + f)).collect();
        let other: Vec<Rgb8Image> = (0..7).map(|f| image(second + f)).collect();
        RefineItem {
            truth: (0..8).map(image).collect(),
            instruction: "push the block".into(),
            generations: vec![
                (first, "push the block. Move further.".into()),
                (other, "push the block. Move further.".into()),
            ],
        }
    }

    fn config(batch: usize, plain_share: f64) -> TrainConfig {
        TrainConfig {
            batch,
            plain_share,
            text_dropout: 0.0,
            max_shift: 1,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn consistency_is_zero_for_identical_generations_and_has_a_gradient_otherwise()
    -> Result<(), TrainError> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let model = VideoModel::build(
            model_config(),
            &VarBuilder::from_varmap(&varmap, DType::F32, &device),
            &device,
        )?;
        let cfg = config(2, 0.0);
        let same = RefineTrainData::new(8, vec![item(100)], None)?;
        for step in 0..3 {
            let c = same
                .losses(&model, &cfg, step)?
                .consistency
                .expect("paired");
            assert!(scalar(&c).abs() < 1e-12, "identical plans: {}", scalar(&c));
        }
        let differ = RefineTrainData::new(8, vec![item(7)], None)?;
        let losses = differ.losses(&model, &cfg, 0)?;
        let c = losses.consistency.expect("paired");
        assert!(scalar(&c) > 0.0, "different plans must disagree");
        let weighted = scalar(&losses.total) - scalar(&losses.diffusion);
        assert!(
            (weighted - scalar(&c) * cfg.consistency_weight as f32).abs() < 1e-5,
            "total = diffusion + w * consistency"
        );
        let grads = c.backward()?;
        let data = varmap.data().lock().expect("lock");
        let touched = data
            .values()
            .filter_map(|v| grads.get(v.as_tensor()))
            .filter(|g| {
                g.sqr()
                    .and_then(|s| s.sum_all())
                    .and_then(|s| s.to_scalar::<f32>())
                    .is_ok_and(|s| s > 0.0)
            })
            .count();
        assert!(touched > 10, "the consistency gradient reaches the network");

        let off = TrainConfig {
            consistency_weight: 0.0,
            ..cfg
        };
        let losses = differ.losses(&model, &off, 0)?;
        assert_eq!(scalar(&losses.total), scalar(&losses.diffusion));
        Ok(())
    }

    #[test]
    fn batches_mix_plain_and_refinement_samples_and_single_generations_skip_the_term()
    -> Result<(), TrainError> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let model = VideoModel::build(
            model_config(),
            &VarBuilder::from_varmap(&varmap, DType::F32, &device),
            &device,
        )?;
        let mut single = item(7);
        single.generations.truncate(1);
        let data = RefineTrainData::new(8, vec![single], None)?;
        assert_eq!(data.paired(), 0);
        let l = data.losses(&model, &config(4, 0.5), 3)?;
        assert!(l.consistency.is_none());
        assert!(scalar(&l.total).is_finite());
        let plain_only = data.losses(&model, &config(2, 1.0), 3)?;
        assert!(plain_only.consistency.is_none());
        assert!(RefineTrainData::new(8, Vec::new(), None).is_err());
        let mut short = item(7);
        short.truth.pop();
        assert!(RefineTrainData::new(8, vec![short], None).is_err());
        Ok(())
    }

    #[test]
    fn refinement_training_lowers_the_loss_on_a_fixed_batch() -> Result<(), TrainError> {
        let device = Device::Cpu;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TrainConfig {
            steps: 40,
            checkpoint_every: 1000,
            adam: crate::model::adam::AdamConfig {
                lr: 2e-3,
                ..Default::default()
            },
            ..config(4, 0.25)
        };
        let mut trainer = Trainer::new(model_config(), cfg, dir.path(), None, &device)?;
        let data = RefineTrainData::new(8, vec![item(7), item(40)], None)?;
        let fixed = 1_000_000;
        let before = trainer.evaluate(&data, fixed)?;
        trainer.train(&data, |_| ControlFlow::Continue(()))?;
        let after = trainer.evaluate(&data, fixed)?;
        assert!(after < 0.8 * before, "loss {before} -> {after}");
        Ok(())
    }
}
