//! Spatial self-attention per frame (`AttentionBlock` with `QKVAttentionLegacy`): no attention
//! across frames. The legacy head split groups the 3C qkv channels per head as
//! `[q(ch), k(ch), v(ch)]`.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::fused::softmax_last_dim;
use super::layers::{GroupNorm, torch_uniform};

/// A 1x1 `Conv1d` used as a per-position linear map over channels.
#[derive(Debug, Clone)]
struct PointwiseConv {
    weight: Tensor,
    bias: Tensor,
}

impl PointwiseConv {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let init = torch_uniform(c_in);
        Ok(Self {
            weight: vb.get_with_hints((c_out, c_in, 1), "weight", init)?,
            bias: vb.get_with_hints(c_out, "bias", init)?,
        })
    }

    /// `x`: `(n, c_in, len)` -> `(n, c_out, len)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.squeeze(2)?;
        let (n, _, len) = x.dims3()?;
        let y = w.broadcast_matmul(x)?;
        super::fused::add_bias(&y, &self.bias, [1, n, self.bias.elem_count(), len])
    }
}

#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: PointwiseConv,
    proj_out: PointwiseConv,
    heads: usize,
}

impl AttentionBlock {
    pub fn new(channels: usize, num_head_channels: usize, vb: VarBuilder) -> Result<Self> {
        if num_head_channels == 0 || !channels.is_multiple_of(num_head_channels) {
            candle_core::bail!(
                "attention channels {channels} are not divisible by num_head_channels {num_head_channels}"
            );
        }
        Ok(Self {
            norm: GroupNorm::new(channels, vb.pp("norm"))?,
            qkv: PointwiseConv::new(channels, 3 * channels, vb.pp("qkv"))?,
            proj_out: PointwiseConv::new(channels, channels, vb.pp("proj_out"))?,
            heads: channels / num_head_channels,
        })
    }

    /// `x`: `((b f), c, h, w)`; each frame attends over its own h*w positions.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let len = h * w;
        let ch = c / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x, 1)?.reshape((n, c, len))?)?
            .reshape((n * self.heads, 3 * ch, len))?;
        // q and k are each scaled by ch^-1/4 upstream; scaling q by ch^-1/2 is the same product.
        // The logits in f32 whatever the network's type: bf16 logits of a few tens are off by
        // a tenth, which moves the softmax by as much.
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let q = (f32(qkv.narrow(1, 0, ch)?)? * (1.0 / (ch as f64).sqrt()))?;
        let k = f32(qkv.narrow(1, ch, ch)?)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        // The GEMM reads transposed and narrowed operands in place: copying them first was a
        // single-threaded strided copy, 4% of a forward pass.
        let weight = q.transpose(1, 2)?.matmul(&k)?;
        let weight = softmax_last_dim(&weight)?.to_dtype(v.dtype())?;
        let attended = v.matmul(&weight.transpose(1, 2)?)?.reshape((n, c, len))?;
        let out = self.proj_out.forward(&attended)?;
        x + out.reshape((n, c, h, w))?
    }
}
