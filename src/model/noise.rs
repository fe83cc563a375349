//! Seeded randomness for diffusion: Gaussian noise drawn on the host so that the same seed
//! gives the same plan on every device and platform.

use candle_core::{Device, Result, Shape, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded stream of standard normal draws and timesteps.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    rng: ChaCha8Rng,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A float32 tensor of N(0, 1) draws (Box-Muller on f64 uniforms).
    pub fn randn(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let count = shape.elem_count();
        let mut values = Vec::with_capacity(count + 1);
        while values.len() < count {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let radius = (-2.0 * (1.0 - self.rng.random::<f64>()).ln()).sqrt();
            let angle = std::f64::consts::TAU * self.rng.random::<f64>();
            values.push((radius * angle.cos()) as f32);
            values.push((radius * angle.sin()) as f32);
        }
        values.truncate(count);
        Tensor::from_vec(values, shape, device)
    }

    /// `batch` timesteps drawn uniformly from `0..num_timesteps`.
    pub fn timesteps(&mut self, batch: usize, num_timesteps: usize) -> Vec<usize> {
        (0..batch)
            .map(|_| self.rng.random_range(0..num_timesteps))
            .collect()
    }

    /// A uniform draw in [0, 1), e.g. for dropping the text condition with some probability.
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}
