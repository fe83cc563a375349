//! Reproducible weight initialisation: a [`VarMap`] whose new variables are drawn from a
//! seeded [`NoiseSource`] (candle's CPU random generator cannot be seeded), so a fresh training
//! run with the same seed starts from the same weights.

use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};

use super::NoiseSource;

/// A `VarMap` backend for `VarBuilder::from_backend` with seeded initialisation.
pub struct SeededVarMap {
    varmap: VarMap,
    noise: Mutex<NoiseSource>,
}

impl SeededVarMap {
    pub fn new(varmap: VarMap, seed: u64) -> Self {
        Self {
            varmap,
            noise: Mutex::new(NoiseSource::new(seed)),
        }
    }

    fn draw(&self, shape: &Shape, init: Init, device: &Device) -> Result<Tensor> {
        let mut noise = self
            .noise
            .lock()
            .map_err(|_| candle_core::Error::Msg("init RNG lock poisoned".to_owned()))?;
        let uniform = |noise: &mut NoiseSource, lo: f64, up: f64| -> Result<Tensor> {
            let values: Vec<f32> = (0..shape.elem_count())
                .map(|_| (lo + (up - lo) * noise.uniform()) as f32)
                .collect();
            Tensor::from_vec(values, shape, device)
        };
        match init {
            Init::Const(v) => Tensor::full(v as f32, shape, device),
            Init::Randn { mean, stdev } => (noise.randn(shape, device)? * stdev)? + mean,
            Init::Uniform { lo, up } => uniform(&mut noise, lo, up),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        uniform(&mut noise, -(3f64.sqrt() * std), 3f64.sqrt() * std)
                    }
                    NormalOrUniform::Normal => noise.randn(shape, device)? * std,
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".to_owned()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch for {name}: {:?} vs {s:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&self.draw(&s, h, dev)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_owned(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("variable {name} must be created with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .is_ok_and(|d| d.contains_key(name))
    }
}
