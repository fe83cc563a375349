//! The U-Net's blocks: `ResBlock`, `Downsample`, `Upsample`, and `TimestepEmbedSequential`
//! (a list of them sharing one embedding). Activations are frame-folded `((b f), c, h, w)`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::attention::AttentionBlock;
use super::conv::FactorizedConv;
use super::layers::{GroupNorm, linear};

/// GN -> SiLU -> conv, + Linear(SiLU(emb)), GN -> SiLU -> conv, plus a (1x1) skip.
#[derive(Debug, Clone)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: FactorizedConv,
    emb_proj: Linear,
    out_norm: GroupNorm,
    out_conv: FactorizedConv,
    skip: Option<FactorizedConv>,
}

impl ResBlock {
    pub fn new(c_in: usize, c_out: usize, emb_dim: usize, vb: VarBuilder) -> Result<Self> {
        let skip = if c_in == c_out {
            None
        } else {
            Some(FactorizedConv::new(
                c_in,
                c_out,
                1,
                1,
                vb.pp("skip_connection"),
            )?)
        };
        Ok(Self {
            in_norm: GroupNorm::new(c_in, vb.pp("in_layers.0"))?,
            in_conv: FactorizedConv::new(c_in, c_out, 3, 1, vb.pp("in_layers.2"))?,
            emb_proj: linear(emb_dim, c_out, true, vb.pp("emb_layers.1"))?,
            out_norm: GroupNorm::new(c_out, vb.pp("out_layers.0"))?,
            out_conv: FactorizedConv::new(c_out, c_out, 3, 1, vb.pp("out_layers.3"))?,
            skip,
        })
    }

    /// `x`: `((b f), c_in, h, w)`, `emb`: `(b, emb_dim)`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, frames: usize) -> Result<Tensor> {
        let h = self.in_norm.forward_silu(x, frames)?;
        let h = self.in_conv.forward(&h, frames)?;
        let (n, c, height, width) = h.dims4()?;
        let emb_out = self.emb_proj.forward(&emb.silu()?)?;
        let h = super::fused::add_bias(&h, &emb_out, [n / frames, frames, c, height * width])?;
        let h = self.out_norm.forward_silu(&h, frames)?;
        let h = self.out_conv.forward(&h, frames)?;
        match &self.skip {
            Some(skip) => skip.forward(x, frames)? + h,
            None => x + h,
        }
    }
}

/// One element of a `TimestepEmbedSequential`.
#[derive(Debug, Clone)]
pub enum Layer {
    Res(ResBlock),
    Attention(AttentionBlock),
    /// A pseudo-3D conv: the stem (stride 1) or `Downsample.op` (spatial stride 2).
    Conv(FactorizedConv),
    /// `Upsample`: nearest x2 in space, then its `conv`.
    Upsample(FactorizedConv),
}

impl Layer {
    pub fn forward(&self, x: &Tensor, emb: &Tensor, frames: usize) -> Result<Tensor> {
        match self {
            Self::Res(block) => block.forward(x, emb, frames),
            Self::Attention(block) => block.forward(x),
            Self::Conv(conv) => conv.forward(x, frames),
            Self::Upsample(conv) => conv.forward(&super::fused::upsample2x(x)?, frames),
        }
    }
}

/// Layers applied in order, as `TimestepEmbedSequential`.
#[derive(Debug, Clone)]
pub struct Sequential(pub Vec<Layer>);

impl Sequential {
    pub fn forward(&self, x: &Tensor, emb: &Tensor, frames: usize) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.0 {
            h = layer.forward(&h, emb, frames)?;
        }
        Ok(h)
    }
}
