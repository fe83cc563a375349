//! Sampling videos from the diffusion model: DDPM (every step, x0 clipped) or DDIM (eta 0,
//! fewer steps), with classifier-free guidance and a per-step callback that can cancel.

use std::ops::ControlFlow;

use candle_core::{Result, Tensor};

use super::diffusion::{Diffusion, ddim_time_pairs, timestep_tensor};
use super::noise::NoiseSource;
use super::unet::UNet;
use super::video::Conditioning;

/// Which reverse process to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// Ancestral sampling through all training steps.
    Ddpm,
    /// Deterministic DDIM (eta 0) through `steps` of them.
    Ddim { steps: usize },
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    pub sampler: Sampler,
    /// Guidance weight w: eps = (1 + w) eps_cond - w eps_uncond (the uncond pass zeroes the
    /// text embedding); 0 skips the second pass.
    pub guidance_weight: f64,
    /// Clip each predicted x0 to [-1, 1] (upstream: DDPM yes, DDIM no).
    pub clip_x0: bool,
}

impl SampleConfig {
    /// Upstream DDIM: eta 0, no clipping, no guidance.
    pub fn ddim(steps: usize) -> Self {
        Self {
            sampler: Sampler::Ddim { steps },
            guidance_weight: 0.0,
            clip_x0: false,
        }
    }

    /// Upstream DDPM: all steps, x0 clipped, no guidance.
    pub fn ddpm() -> Self {
        Self {
            sampler: Sampler::Ddpm,
            guidance_weight: 0.0,
            clip_x0: true,
        }
    }
}

/// What a video is generated from: the conditioning frames and the text tokens `(b, L, D)`.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub cond: Conditioning,
    pub task_embed: Tensor,
}

/// Progress reported after each denoising step.
#[derive(Debug)]
pub struct SampleStep<'a> {
    /// 0-based index of the step just done.
    pub index: usize,
    /// Number of steps in the plan.
    pub total: usize,
    /// Diffusion timestep the model was evaluated at.
    pub time: usize,
    /// The current prediction of the clean video, `(b, 3, f, h, w)` in [-1, 1] scale.
    pub x0: &'a Tensor,
}

/// The result of [`Diffusion::sample`].
#[derive(Debug, Clone)]
pub enum SampleOutcome {
    /// The video `(b, 3, f, h, w)`, mapped to [0, 1] by (x + 1) / 2 and not clamped.
    Finished(Tensor),
    /// The callback stopped sampling after step `after_step`.
    Cancelled { after_step: usize },
}

impl Diffusion {
    /// v -> (x0, eps) at step `time`, with guidance as upstream's `model_predictions`.
    fn predict(
        &self,
        unet: &UNet,
        x: &Tensor,
        time: usize,
        prompt: &Prompt,
        config: &SampleConfig,
    ) -> Result<(Tensor, Tensor)> {
        let batch = x.dim(0)?;
        let t = vec![time; batch];
        let input = unet.input(x, &prompt.cond)?;
        let task_embed = &prompt.task_embed;
        let guided = config.guidance_weight != 0.0;
        // Both passes in one batch: results are per-sample, so this equals two calls.
        let (input, times, tokens) = if guided {
            (
                Tensor::cat(&[&input, &input], 0)?,
                vec![time; 2 * batch],
                Tensor::cat(&[task_embed, &task_embed.zeros_like()?], 0)?,
            )
        } else {
            (input, t.clone(), task_embed.clone())
        };
        let v = unet.forward(&input, &timestep_tensor(&times, x.device())?, &tokens)?;
        let mut x0 = self.predict_start_from_v(x, &t, &v.narrow(0, 0, batch)?)?;
        if config.clip_x0 {
            x0 = x0.clamp(-1f32, 1f32)?;
        }
        let eps = self.predict_noise_from_start(x, &t, &x0)?;
        if !guided {
            return Ok((x0, eps));
        }
        let w = config.guidance_weight;
        let x0_uncond = self.predict_start_from_v(x, &t, &v.narrow(0, batch, batch)?)?;
        let eps_uncond = self.predict_noise_from_start(x, &t, &x0_uncond)?;
        let eps = ((eps * (1.0 + w))? - (eps_uncond * w)?)?;
        let x0 = self.predict_start_from_noise(x, &t, &eps)?;
        Ok((x0, eps))
    }

    /// Denoises `noise` (`(b, 3, f, h, w)`, the initial x_T) into a video for `prompt`.
    /// `rng` supplies DDPM's per-step noise (DDIM with eta 0 draws none). `on_step` runs after
    /// every step; `ControlFlow::Break` cancels.
    pub fn sample(
        &self,
        unet: &UNet,
        prompt: &Prompt,
        noise: Tensor,
        config: &SampleConfig,
        rng: &mut NoiseSource,
        mut on_step: impl FnMut(&SampleStep) -> ControlFlow<()>,
    ) -> Result<SampleOutcome> {
        let pairs: Vec<(i64, i64)> = match config.sampler {
            Sampler::Ddpm => (0..self.num_timesteps() as i64)
                .rev()
                .map(|t| (t, t - 1))
                .collect(),
            Sampler::Ddim { steps } => {
                if steps == 0 || steps > self.num_timesteps() {
                    candle_core::bail!(
                        "DDIM needs 1..={} steps, got {steps}",
                        self.num_timesteps()
                    );
                }
                ddim_time_pairs(self.num_timesteps(), steps)
            }
        };
        let total = pairs.len();
        let mut x = noise;
        for (index, &(time, time_next)) in pairs.iter().enumerate() {
            let time = usize::try_from(time)
                .map_err(|_| candle_core::Error::Msg(format!("negative timestep {time}")))?;
            let (x0, eps) = self.predict(unet, &x, time, prompt, config)?;
            x = match (config.sampler, usize::try_from(time_next)) {
                (_, Err(_)) => x0.clone(),
                (Sampler::Ddim { .. }, Ok(next)) => {
                    let alpha_next = self.alphas_cumprod()[next];
                    ((&x0 * f64::from(alpha_next.sqrt()))?
                        + (eps * f64::from((1.0 - alpha_next).sqrt()))?)?
                }
                (Sampler::Ddpm, Ok(_)) => {
                    let t = vec![time; x.dim(0)?];
                    let mean = self.posterior_mean(&x0, &x, &t)?;
                    let std = f64::from(self.posterior_std(time));
                    (mean + (rng.randn(x.shape(), x.device())? * std)?)?
                }
            };
            let step = SampleStep {
                index,
                total,
                time,
                x0: &x0,
            };
            if on_step(&step).is_break() {
                return Ok(SampleOutcome::Cancelled { after_step: index });
            }
        }
        Ok(SampleOutcome::Finished(((x + 1.0)? / 2.0)?))
    }

    /// [`Diffusion::sample`] with x_T and all later noise drawn from `seed`: the same seed
    /// gives the same video. The video has `frames` frames of the conditioning's size.
    pub fn sample_seeded(
        &self,
        unet: &UNet,
        prompt: &Prompt,
        frames: usize,
        config: &SampleConfig,
        seed: u64,
        on_step: impl FnMut(&SampleStep) -> ControlFlow<()>,
    ) -> Result<SampleOutcome> {
        let like = prompt.cond.video(frames)?;
        let mut rng = NoiseSource::new(seed);
        let noise = rng.randn(like.shape(), like.device())?;
        self.sample(unet, prompt, noise, config, &mut rng, on_step)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::model::config::UNetConfig;

    fn setup() -> Result<(UNet, Prompt)> {
        let cfg = UNetConfig::tiny();
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let unet = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        let (h, w) = cfg.image_size;
        let image = Tensor::rand(0f32, 1.0, (1, 3, h, w), &device)?;
        let tokens = Tensor::randn(0f32, 1.0, (1, 4, cfg.task_token_channels), &device)?;
        let prompt = Prompt {
            cond: Conditioning::Image(image),
            task_embed: tokens,
        };
        Ok((unet, prompt))
    }

    fn finished(outcome: SampleOutcome) -> Tensor {
        match outcome {
            SampleOutcome::Finished(video) => video,
            SampleOutcome::Cancelled { .. } => panic!("sampling was cancelled"),
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn same_seed_same_video() -> Result<()> {
        let (unet, prompt) = setup()?;
        let diffusion = Diffusion::default();
        let guided = SampleConfig {
            guidance_weight: 1.5,
            ..SampleConfig::ddim(3)
        };
        for config in [SampleConfig::ddim(3), guided, SampleConfig::ddpm()] {
            let run = |seed| -> Result<Tensor> {
                let outcome = diffusion.sample_seeded(&unet, &prompt, 3, &config, seed, |_| {
                    ControlFlow::Continue(())
                })?;
                Ok(finished(outcome))
            };
            let (first, again, other) = (run(7)?, run(7)?, run(8)?);
            assert_eq!(first.dims(), [1, 3, 3, 8, 8]);
            assert_eq!(
                max_diff(&first, &again)?,
                0.0,
                "{config:?} is not deterministic"
            );
            assert!(
                max_diff(&first, &other)? > 0.0,
                "{config:?} ignores the seed"
            );
        }
        Ok(())
    }

    #[test]
    fn callback_sees_every_step_and_can_cancel() -> Result<()> {
        let (unet, prompt) = setup()?;
        let diffusion = Diffusion::default();
        let mut times = Vec::new();
        let outcome =
            diffusion.sample_seeded(&unet, &prompt, 3, &SampleConfig::ddim(4), 1, |step| {
                times.push((step.index, step.total, step.time));
                if step.index == 1 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        assert!(matches!(
            outcome,
            SampleOutcome::Cancelled { after_step: 1 }
        ));
        assert_eq!(times, [(0, 4, 99), (1, 4, 74)]);
        Ok(())
    }
}
