//! Gaussian diffusion of `GoalGaussianDiffusion` (VideoAgent): cosine schedule (T = 100),
//! v-prediction and the min-SNR-5 weighted L2 loss. Buffers are computed in f64 and stored
//! as f32 like the reference's, so the numbers match it. Sampling lives in `sampler.rs`.

use candle_core::{Device, Result, Tensor};

use super::unet::UNet;
use super::video::Conditioning;

/// Diffusion steps used for training.
pub const TIMESTEPS: usize = 100;
/// Offset `s` of the cosine schedule.
const COSINE_S: f64 = 0.008;
/// Upper clip of the betas.
const MAX_BETA: f64 = 0.999;
/// gamma of the min-SNR loss weighting.
const MIN_SNR_GAMMA: f64 = 5.0;
/// Weight of the parameter-norm term VideoAgent's public trainer adds to the loss.
pub const L2_REG_WEIGHT: f64 = 0.01;

/// Per-sample and batch-mean loss.
#[derive(Debug, Clone)]
pub struct Loss {
    /// `(b,)`: mean squared error over (channels, frames, h, w) times `loss_weight[t]`.
    pub per_sample: Tensor,
    /// Scalar: mean of `per_sample`.
    pub mean: Tensor,
}

/// The schedule's buffers (f32) and the maths that uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct Diffusion {
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    alphas_cumprod_prev: Vec<f32>,
    sqrt_alphas_cumprod: Vec<f32>,
    sqrt_one_minus_alphas_cumprod: Vec<f32>,
    sqrt_recip_alphas_cumprod: Vec<f32>,
    sqrt_recipm1_alphas_cumprod: Vec<f32>,
    posterior_mean_coef1: Vec<f32>,
    posterior_mean_coef2: Vec<f32>,
    posterior_log_variance_clipped: Vec<f32>,
    loss_weight: Vec<f32>,
}

fn to_f32(values: impl Iterator<Item = f64>) -> Vec<f32> {
    values.map(|v| v as f32).collect()
}

impl Default for Diffusion {
    fn default() -> Self {
        Self::cosine(TIMESTEPS)
    }
}

impl Diffusion {
    /// The cosine schedule (Nichol & Dhariwal, s = 0.008, betas clipped at 0.999) with the
    /// min-SNR-5 weight for v-prediction, `min(snr, 5) / (snr + 1)`.
    pub fn cosine(timesteps: usize) -> Self {
        let f = |i: usize| {
            let t = i as f64 / timesteps as f64;
            ((t + COSINE_S) / (1.0 + COSINE_S) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let betas: Vec<f64> = (0..timesteps)
            .map(|i| (1.0 - (f(i + 1) / f(0)) / (f(i) / f(0))).clamp(0.0, MAX_BETA))
            .collect();
        let mut alphas_cumprod = Vec::with_capacity(timesteps);
        let mut product = 1.0;
        for beta in &betas {
            product *= 1.0 - beta;
            alphas_cumprod.push(product);
        }
        let prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod.iter().copied())
            .take(timesteps)
            .collect();
        let ac = &alphas_cumprod;
        let posterior_variance: Vec<f64> = (0..timesteps)
            .map(|i| betas[i] * (1.0 - prev[i]) / (1.0 - ac[i]))
            .collect();
        Self {
            betas: to_f32(betas.iter().copied()),
            alphas_cumprod: to_f32(ac.iter().copied()),
            alphas_cumprod_prev: to_f32(prev.iter().copied()),
            sqrt_alphas_cumprod: to_f32(ac.iter().map(|a| a.sqrt())),
            sqrt_one_minus_alphas_cumprod: to_f32(ac.iter().map(|a| (1.0 - a).sqrt())),
            sqrt_recip_alphas_cumprod: to_f32(ac.iter().map(|a| (1.0 / a).sqrt())),
            sqrt_recipm1_alphas_cumprod: to_f32(ac.iter().map(|a| (1.0 / a - 1.0).sqrt())),
            posterior_mean_coef1: to_f32(
                (0..timesteps).map(|i| betas[i] * prev[i].sqrt() / (1.0 - ac[i])),
            ),
            posterior_mean_coef2: to_f32(
                (0..timesteps).map(|i| (1.0 - prev[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i])),
            ),
            posterior_log_variance_clipped: to_f32(
                posterior_variance.iter().map(|v| v.max(1e-20).ln()),
            ),
            loss_weight: to_f32(ac.iter().map(|a| {
                let snr = a / (1.0 - a);
                snr.min(MIN_SNR_GAMMA) / (snr + 1.0)
            })),
        }
    }

    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
    pub fn alphas_cumprod_prev(&self) -> &[f32] {
        &self.alphas_cumprod_prev
    }
    pub fn sqrt_alphas_cumprod(&self) -> &[f32] {
        &self.sqrt_alphas_cumprod
    }
    pub fn sqrt_one_minus_alphas_cumprod(&self) -> &[f32] {
        &self.sqrt_one_minus_alphas_cumprod
    }
    pub fn sqrt_recip_alphas_cumprod(&self) -> &[f32] {
        &self.sqrt_recip_alphas_cumprod
    }
    pub fn sqrt_recipm1_alphas_cumprod(&self) -> &[f32] {
        &self.sqrt_recipm1_alphas_cumprod
    }
    /// Min-SNR-5 weight of each timestep for the v objective.
    pub fn loss_weight(&self) -> &[f32] {
        &self.loss_weight
    }

    /// `buffer[t_i]` per batch item, shaped `(b, 1, ..., 1)` to broadcast against `like`.
    fn extract(&self, buffer: &[f32], t: &[usize], like: &Tensor) -> Result<Tensor> {
        let values = t
            .iter()
            .map(|&i| {
                buffer.get(i).copied().ok_or_else(|| {
                    candle_core::Error::Msg(format!("timestep {i} outside 0..{}", buffer.len()))
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        let mut shape = vec![1; like.rank()];
        shape[0] = t.len();
        Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())
    }

    /// `a[t] * x + b[t] * y` with per-sample coefficients.
    fn combine(&self, a: &[f32], x: &Tensor, b: &[f32], y: &Tensor, t: &[usize]) -> Result<Tensor> {
        x.broadcast_mul(&self.extract(a, t, x)?)? + y.broadcast_mul(&self.extract(b, t, y)?)?
    }

    /// Forward process: `x_t = sqrt(ac[t]) x_start + sqrt(1 - ac[t]) noise`.
    pub fn q_sample(&self, x_start: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let (a, b) = (
            &self.sqrt_alphas_cumprod,
            &self.sqrt_one_minus_alphas_cumprod,
        );
        self.combine(a, x_start, b, noise, t)
    }

    /// The v target: `sqrt(ac[t]) noise - sqrt(1 - ac[t]) x_start`.
    pub fn predict_v(&self, x_start: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let neg: Vec<f32> = self
            .sqrt_one_minus_alphas_cumprod
            .iter()
            .map(|v| -v)
            .collect();
        self.combine(&self.sqrt_alphas_cumprod, noise, &neg, x_start, t)
    }

    /// `x0 = sqrt(ac[t]) x_t - sqrt(1 - ac[t]) v`.
    pub fn predict_start_from_v(&self, x_t: &Tensor, t: &[usize], v: &Tensor) -> Result<Tensor> {
        let neg: Vec<f32> = self
            .sqrt_one_minus_alphas_cumprod
            .iter()
            .map(|v| -v)
            .collect();
        self.combine(&self.sqrt_alphas_cumprod, x_t, &neg, v, t)
    }

    /// `eps = (sqrt(1 / ac[t]) x_t - x0) / sqrt(1 / ac[t] - 1)`.
    pub fn predict_noise_from_start(
        &self,
        x_t: &Tensor,
        t: &[usize],
        x0: &Tensor,
    ) -> Result<Tensor> {
        let scaled =
            x_t.broadcast_mul(&self.extract(&self.sqrt_recip_alphas_cumprod, t, x_t)?)?;
        (scaled - x0)?.broadcast_div(&self.extract(&self.sqrt_recipm1_alphas_cumprod, t, x_t)?)
    }

    /// `x0 = sqrt(1 / ac[t]) x_t - sqrt(1 / ac[t] - 1) eps`.
    pub fn predict_start_from_noise(
        &self,
        x_t: &Tensor,
        t: &[usize],
        eps: &Tensor,
    ) -> Result<Tensor> {
        let neg: Vec<f32> = self
            .sqrt_recipm1_alphas_cumprod
            .iter()
            .map(|v| -v)
            .collect();
        self.combine(&self.sqrt_recip_alphas_cumprod, x_t, &neg, eps, t)
    }

    /// Mean of the posterior `q(x_{t-1} | x_t, x0)`.
    pub(crate) fn posterior_mean(&self, x0: &Tensor, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (a, b) = (&self.posterior_mean_coef1, &self.posterior_mean_coef2);
        self.combine(a, x0, b, x_t, t)
    }

    /// Standard deviation of the posterior at step `t`.
    pub(crate) fn posterior_std(&self, t: usize) -> f32 {
        (0.5 * self.posterior_log_variance_clipped[t]).exp()
    }

    /// `mean((out - target)^2)` per sample times `loss_weight[t]`, and its batch mean.
    pub fn weighted_loss(&self, model_out: &Tensor, target: &Tensor, t: &[usize]) -> Result<Loss> {
        let batch = model_out.dim(0)?;
        let mse = (model_out - target)?.sqr()?.reshape((batch, ()))?.mean(1)?;
        let weights = Tensor::from_slice(
            &t.iter().map(|&i| self.loss_weight[i]).collect::<Vec<_>>(),
            batch,
            model_out.device(),
        )?;
        let per_sample = (mse * weights)?;
        let mean = per_sample.mean_all()?;
        Ok(Loss { per_sample, mean })
    }

    /// The training loss for one batch: noise `x_start` (`(b, 3, f, h, w)` in [-1, 1]) to step
    /// `t`, predict v with the U-Net from `[noisy, cond]`, and weight the L2 error by min-SNR.
    pub fn loss(
        &self,
        unet: &UNet,
        x_start: &Tensor,
        cond: &Conditioning,
        task_embed: &Tensor,
        t: &[usize],
        noise: &Tensor,
    ) -> Result<Loss> {
        let noisy = self.q_sample(x_start, t, noise)?;
        let t_tensor = timestep_tensor(t, x_start.device())?;
        let out = unet.forward(&unet.input(&noisy, cond)?, &t_tensor, task_embed)?;
        self.weighted_loss(&out, &self.predict_v(x_start, t, noise)?, t)
    }
}

/// Timesteps as the `(b,)` float32 tensor the U-Net takes.
pub fn timestep_tensor(t: &[usize], device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = t.iter().map(|&i| i as f32).collect();
    Tensor::from_vec(values, t.len(), device)
}

/// Sum over parameters of their (non-squared) Frobenius norms: VideoAgent's public trainer
/// adds [`L2_REG_WEIGHT`] times this to the diffusion loss.
pub fn l2_reg<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Result<Tensor> {
    let norms = params
        .into_iter()
        .map(|p| p.sqr()?.sum_all()?.sqrt())
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&norms, 0)?.sum_all()
}

/// DDIM (time, time_next) pairs: `linspace(-1, T - 1, steps + 1)` in float32 (PyTorch's
/// two-sided formula), truncated toward zero, reversed and paired; `time_next = -1` ends.
pub fn ddim_time_pairs(num_timesteps: usize, steps: usize) -> Vec<(i64, i64)> {
    let count = steps + 1;
    let (start, end) = (-1.0f32, num_timesteps as f32 - 1.0);
    let step = (end - start) / steps.max(1) as f32;
    let times: Vec<i64> = (0..count)
        .map(|i| {
            let value = if i < count / 2 {
                start + step * i as f32
            } else {
                end - step * (count - 1 - i) as f32
            };
            value as i64
        })
        .rev()
        .collect();
    times.windows(2).map(|w| (w[0], w[1])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_pairs_match_the_reference() {
        let ten = ddim_time_pairs(100, 10);
        let expected: Vec<(i64, i64)> = (0..10).map(|i| (99 - 10 * i, 89 - 10 * i)).collect();
        assert_eq!(ten, expected);
        assert_eq!(
            ddim_time_pairs(100, 7),
            [
                (99, 84),
                (84, 70),
                (70, 56),
                (56, 41),
                (41, 27),
                (27, 13),
                (13, -1)
            ]
        );
        let all = ddim_time_pairs(100, 100);
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|&(t, next)| next == t - 1));
    }

    #[test]
    fn v_target_and_x0_round_trip() -> Result<()> {
        let diffusion = Diffusion::default();
        let device = Device::Cpu;
        let x_start = Tensor::randn(0f32, 1.0, (2, 3, 2, 4, 4), &device)?;
        let noise = Tensor::randn(0f32, 1.0, (2, 3, 2, 4, 4), &device)?;
        let t = [5, 80];
        let x_t = diffusion.q_sample(&x_start, &t, &noise)?;
        let v = diffusion.predict_v(&x_start, &t, &noise)?;
        let x0 = diffusion.predict_start_from_v(&x_t, &t, &v)?;
        let err = (x0 - &x_start)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-4, "x0 from v differs by {err}");
        assert!(diffusion.extract(diffusion.betas(), &[100], &x_t).is_err());
        Ok(())
    }
}
