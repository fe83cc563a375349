//! Small building blocks shared by the U-Net and the Perceiver: PyTorch-initialised linear
//! layers and the three normalisations the reference uses. All are differentiable, so
//! gradients flow when the weights come from a `VarMap`.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::fused::group_norm;

/// PyTorch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub fn torch_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `nn.Linear(in_dim, out_dim, bias)` with PyTorch's initialisation.
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let init = torch_uniform(in_dim);
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = if bias {
        Some(vb.get_with_hints(out_dim, "bias", init)?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// Mean and biased variance over the last dim, then `(x - mean) / sqrt(var + eps)`.
fn standardize_last_dim(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)
}

/// `nn.LayerNorm(dim)` (eps 1e-5, gain and bias) over the last dim.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        standardize_last_dim(x, 1e-5)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Imagen's `LayerNorm`: gain `g` only, biased variance, eps 1e-5.
#[derive(Debug, Clone)]
pub struct GainLayerNorm {
    g: Tensor,
}

impl GainLayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            g: vb.get_with_hints(dim, "g", Init::Const(1.0))?,
        })
    }
}

impl Module for GainLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        standardize_last_dim(x, 1e-5)?.broadcast_mul(&self.g)
    }
}

/// `GroupNorm32(32, channels)` on frame-folded activations `((b f), c, h, w)`.
/// Statistics span the whole clip (frames included) in ResBlocks and a single frame in
/// attention blocks, as in the reference; `frames` selects which (1 = per frame).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl GroupNorm {
    const GROUPS: usize = 32;
    const EPS: f64 = 1e-5;

    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        if !channels.is_multiple_of(Self::GROUPS) {
            candle_core::bail!(
                "GroupNorm needs channels divisible by {}, got {channels}",
                Self::GROUPS
            );
        }
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            groups: Self::GROUPS,
        })
    }

    /// Normalises `x` of shape `((b f), c, h, w)` with statistics over `frames` frames.
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        self.apply(x, frames, false)
    }

    /// `silu(self.forward(x, frames))` in one fused step.
    pub fn forward_silu(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        self.apply(x, frames, true)
    }

    fn apply(&self, x: &Tensor, frames: usize, silu: bool) -> Result<Tensor> {
        group_norm(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            frames,
            Self::EPS,
            silu,
        )
    }
}
