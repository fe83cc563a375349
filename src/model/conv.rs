//! The reference's pseudo-3D convolution (`guided_diffusion/nn.py: Conv3d`): a 2D conv on every
//! frame, then (for kernels > 1) a kernel-3 conv along frames at every pixel, zero-padded by
//! one frame on each side. Activations stay frame-folded, `((b f), c, h, w)`, so the spatial
//! part is one conv2d over all frames and the temporal part one matmul of the
//! `(c_out, 3 c_out)` taps against the previous, same and next frame stacked on channels.
//! Between the two parts the activation is channel-major, `(c, (b f), h w)`, so each part is a
//! single 2D matmul (and its gradients single GEMMs) and only the result is transposed back.

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::im2col;
use super::layers::torch_uniform;

/// Weights of the temporal part: `(c, c, 3)` taps and `(c,)` bias.
#[derive(Debug, Clone)]
struct TemporalConv {
    weight: Tensor,
    bias: Tensor,
}

impl TemporalConv {
    const TAPS: usize = 3;

    /// Upstream initialises the temporal conv to the identity (`dirac_`) with zero bias, so a
    /// fresh network starts as a per-frame image model. With a `VarMap` the weight is created
    /// as zeros and set to the identity in place; loaded weights are left untouched.
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight =
            vb.get_with_hints((channels, channels, Self::TAPS), "weight", Init::Const(0.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let fresh_var = weight.is_variable()
            && weight
                .abs()?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?
                == 0.0;
        if fresh_var {
            let identity = Tensor::eye(channels, weight.dtype(), weight.device())?
                .unsqueeze(2)?
                .pad_with_zeros(2, 1, 1)?;
            weight.slice_set(&identity, 0, 0)?;
        }
        Ok(Self { weight, bias })
    }

    /// `x`: channel-major `(c, (b f), h, w)`; returns the same shape.
    fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        // out[f] = W0 x[f-1] + W1 x[f] + W2 x[f+1]: (c_out, c_in, tap) -> (c_out, tap * c_in)
        // against the frames stacked as (tap * c_in) rows.
        let taps = self
            .weight
            .permute((0, 2, 1))?
            .reshape((c, Self::TAPS * c))?;
        let stacked = im2col::frame_taps(&x.reshape((c, n, h * w))?, frames)?
            .reshape((Self::TAPS * c, n * h * w))?;
        super::fused::add_bias(&taps.matmul(&stacked)?, &self.bias, [1, 1, c, n * h * w])?
            .reshape((c, n, h, w))
    }
}

/// `conv_nd(3, c_in, c_out, kernel, stride=(1, s, s), padding=kernel/2)` of the reference.
#[derive(Debug, Clone)]
pub struct FactorizedConv {
    spatial_weight: Tensor,
    spatial_bias: Tensor,
    temporal: Option<TemporalConv>,
    stride: usize,
}

impl FactorizedConv {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let spatial = vb.pp("spatial_conv");
        let init = torch_uniform(c_in * kernel * kernel);
        let spatial_weight =
            spatial.get_with_hints((c_out, c_in, kernel, kernel), "weight", init)?;
        let spatial_bias = spatial.get_with_hints(c_out, "bias", init)?;
        let temporal = if kernel > 1 {
            Some(TemporalConv::new(c_out, vb.pp("temporal_conv"))?)
        } else {
            None
        };
        Ok(Self {
            spatial_weight,
            spatial_bias,
            temporal,
            stride,
        })
    }

    /// `x`: `((b f), c_in, h, w)` -> `((b f), c_out, h / stride, w / stride)`.
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let padding = self.spatial_weight.dim(D::Minus1)? / 2;
        let y = im2col::conv2d_channel_major(
            x,
            &self.spatial_weight,
            &self.spatial_bias,
            padding,
            self.stride,
        )?;
        let y = match &self.temporal {
            Some(temporal) => temporal.forward(&y, frames)?,
            None => y,
        };
        y.transpose(0, 1)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::FactorizedConv;

    #[test]
    fn fresh_temporal_conv_is_identity_and_trainable() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let conv = FactorizedConv::new(4, 6, 3, 1, vb)?;
        let (batch, frames) = (2, 5);
        let x = Tensor::randn(0f32, 1.0, (batch * frames, 4, 7, 7), &device)?;
        let spatial_only = x
            .conv2d(&conv.spatial_weight, 1, 1, 1, 1)?
            .broadcast_add(&conv.spatial_bias.reshape((1, (), 1, 1))?)?;
        let out = conv.forward(&x, frames)?;
        let err = (out.clone() - spatial_only)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(err < 1e-6, "temporal part is not a no-op: {err}");

        let grads = out.sqr()?.sum_all()?.backward()?;
        let data = varmap.data().lock().expect("varmap lock");
        let weight = &data["temporal_conv.weight"];
        assert!(
            grads.get(weight.as_tensor()).is_some(),
            "no gradient for the temporal conv"
        );
        Ok(())
    }
}
