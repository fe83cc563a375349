//! Spatial self-attention per frame (`AttentionBlock` with `QKVAttentionLegacy`): no attention
//! across frames. The legacy head split groups the 3C qkv channels per head as
//! `[q(ch), k(ch), v(ch)]`.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::fused::softmax_last_dim;
use super::im2col::{self, ConvSpec, Geometry, Order};
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

    /// `x`: `(n, c_in, len)` -> `(n, c_out, len)`. On the CPU (f32) a banded 1x1 convolution:
    /// one GEMM per band, the bias added in it and the weight gradient summed in place, where
    /// a matmul broadcast over `n` reduces `n` per-sample weight gradients afterwards.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c_in, len) = x.dims3()?;
        let c_out = self.bias.elem_count();
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let spec = ConvSpec {
                geometry: Geometry {
                    n,
                    c: c_in,
                    h: 1,
                    w: len,
                    kernel: (1, 1),
                    padding: (0, 0),
                    stride: 1,
                },
                input: Order::BatchMajor,
                output: Order::BatchMajor,
                out_shape: (n, c_out, len).into(),
            };
            return im2col::conv(x, &self.weight, &self.bias, spec);
        }
        let y = self.weight.squeeze(2)?.broadcast_matmul(x)?;
        super::fused::add_bias(&y, &self.bias, [1, n, c_out, len])
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::PointwiseConv;

    /// The CPU's banded 1x1 conv (f32) against the broadcast matmul (f64), forward and every
    /// gradient.
    #[test]
    fn cpu_pointwise_conv_matches_the_matmul_and_its_gradients() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let var = |shape: &[usize]| Var::randn(0f64, 1.0, shape, &device);
        let (x, weight, bias) = (var(&[3, 4, 10])?, var(&[6, 4, 1])?, var(&[6])?);
        let run = |dtype: DType| -> candle_core::Result<Tensor> {
            let conv = PointwiseConv {
                weight: weight.as_tensor().to_dtype(dtype)?,
                bias: bias.as_tensor().to_dtype(dtype)?,
            };
            conv.forward(&x.as_tensor().to_dtype(dtype)?)?
                .to_dtype(DType::F64)
        };
        let (ours, theirs) = (run(DType::F32)?, run(DType::F64)?);
        assert_eq!(ours.dims(), [3, 6, 10]);
        let probe = Tensor::randn(0f64, 1.0, (3, 6, 10), &device)?;
        let ours_grads = (ours.clone() * &probe)?.sum_all()?.backward()?;
        let theirs_grads = (theirs.clone() * &probe)?.sum_all()?.backward()?;
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f64> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
        };
        assert!(diff(&ours, &theirs)? < 1e-4);
        for v in [&x, &weight, &bias] {
            let (Some(a), Some(b)) = (ours_grads.get(v), theirs_grads.get(v)) else {
                panic!("missing gradient");
            };
            assert!(diff(a, b)? < 1e-4, "gradient off by {}", diff(a, b)?);
        }
        Ok(())
    }
}
