//! The reference's pseudo-3D convolution (`guided_diffusion/nn.py: Conv3d`): a 2D conv on every
//! frame, then (for kernels > 1) a kernel-3 conv along frames at every pixel, zero-padded by
//! one frame on each side. Activations are frame-folded, `((b f), c, h, w)`.
//!
//! On the CPU (f32) both parts are banded im2col convolutions ([`im2col::conv`]): the spatial
//! part writes a channel-major `(c, (b f), h, w)` result, which the temporal part reads as
//! `(frames x pixels)` planes with a `3 x 1` kernel and writes back frame-folded, so no
//! transposing copy sits between or after them. Elsewhere they are tensor ops: a conv2d and
//! one matmul of the `(c_out, 3 c_out)` taps against the previous, same and next frame stacked
//! on channels.

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::im2col::{self, ConvSpec, Geometry, Order};
use super::layers::torch_uniform;

/// Kernel size of the temporal part.
const TAPS: usize = 3;

/// Weights of the temporal part: `(c, c, 3)` taps and `(c,)` bias.
#[derive(Debug, Clone)]
struct TemporalConv {
    weight: Tensor,
    bias: Tensor,
}

impl TemporalConv {
    /// Upstream initialises the temporal conv to the identity (`dirac_`) with zero bias, so a
    /// fresh network starts as a per-frame image model. With a `VarMap` the weight is created
    /// as zeros and set to the identity in place; loaded weights are left untouched.
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((channels, channels, TAPS), "weight", Init::Const(0.0))?;
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

    /// Tensor ops: `x` channel-major `(c, (b f), h, w)`; returns the same shape.
    fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        // out[f] = W0 x[f-1] + W1 x[f] + W2 x[f+1]: (c_out, c_in, tap) -> (c_out, tap * c_in)
        // against the frames stacked as (tap * c_in) rows.
        let taps = self.weight.permute((0, 2, 1))?.reshape((c, TAPS * c))?;
        let stacked =
            frame_taps(&x.reshape((c, n, h * w))?, frames)?.reshape((TAPS * c, n * h * w))?;
        taps.matmul(&stacked)?
            .broadcast_add(&self.bias.reshape((c, 1))?)?
            .reshape((c, n, h, w))
    }
}

/// Channel-major `(c, b f, len)` -> `(3 c, b f, len)`: for each frame, the previous, same and
/// next frame of its clip stacked on channels (zero-padded), so a kernel-3 temporal conv is
/// one matmul.
fn frame_taps(x: &Tensor, frames: usize) -> Result<Tensor> {
    let (c, n, len) = x.dims3()?;
    let padded = x
        .reshape((c, n / frames, frames, len))?
        .pad_with_zeros(2, 1, 1)?;
    let taps = [0, 1, 2].map(|k| padded.narrow(2, k, frames));
    Tensor::stack(&taps.into_iter().collect::<Result<Vec<_>>>()?, 0)?.reshape((TAPS * c, n, len))
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
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.forward_cpu(x, frames);
        }
        let y = self.spatial_tensor_ops(x)?;
        let y = match &self.temporal {
            Some(temporal) => temporal.forward(&y, frames)?,
            None => y,
        };
        y.transpose(0, 1)?.contiguous()
    }

    fn forward_cpu(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (c_out, _, kernel, _) = self.spatial_weight.dims4()?;
        let geometry = Geometry {
            n,
            c,
            h,
            w,
            kernel: (kernel, kernel),
            padding: (kernel / 2, kernel / 2),
            stride: self.stride,
        };
        let (oh, ow) = (geometry.out_h(), geometry.out_w());
        let spatial = |output, out_shape: (usize, usize, usize, usize)| ConvSpec {
            geometry,
            input: Order::BatchMajor,
            output,
            out_shape: out_shape.into(),
        };
        let Some(temporal) = &self.temporal else {
            let spec = spatial(Order::BatchMajor, (n, c_out, oh, ow));
            return im2col::conv(x, &self.spatial_weight, &self.spatial_bias, spec);
        };
        let spec = spatial(Order::ChannelMajor, (c_out, n, oh, ow));
        let y = im2col::conv(x, &self.spatial_weight, &self.spatial_bias, spec)?;
        // Each clip's channel plane is `frames` rows of `oh ow` pixels.
        let (clips, pixels) = (n / frames, oh * ow);
        let spec = ConvSpec {
            geometry: Geometry {
                n: clips,
                c: c_out,
                h: frames,
                w: pixels,
                kernel: (TAPS, 1),
                padding: (TAPS / 2, 0),
                stride: 1,
            },
            input: Order::ChannelMajor,
            output: Order::FrameFolded,
            out_shape: (n, c_out, oh, ow).into(),
        };
        im2col::conv(&y, &temporal.weight, &temporal.bias, spec)
    }

    /// The spatial part as tensor ops, channel-major `(c_out, (b f), h', w')`.
    fn spatial_tensor_ops(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (&self.spatial_weight, &self.spatial_bias);
        let padding = weight.dim(D::Minus1)? / 2;
        match im2col::conv2d_unfolded(x, weight, bias, padding, self.stride)? {
            Some(y) => Ok(y),
            None => x
                .conv2d(weight, padding, self.stride, 1, 1)?
                .broadcast_add(&bias.reshape((1, (), 1, 1))?)?
                .transpose(0, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    use super::{FactorizedConv, TemporalConv, frame_taps};

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
        assert!(err < 1e-5, "temporal part is not a no-op: {err}");

        let grads = out.sqr()?.sum_all()?.backward()?;
        let data = varmap.data().lock().expect("varmap lock");
        let weight = &data["temporal_conv.weight"];
        assert!(
            grads.get(weight.as_tensor()).is_some(),
            "no gradient for the temporal conv"
        );
        Ok(())
    }

    /// The CPU's banded kernels (f32) against the tensor-op path (f64, which any dtype but f32
    /// takes), forward and every gradient, with random temporal taps.
    #[test]
    fn cpu_kernels_match_the_tensor_ops_and_their_gradients() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let (clips, frames, c_in, c_out) = (2, 3, 3, 5);
        for (kernel, stride, size) in [(3, 1, 6), (3, 2, 8), (1, 1, 5)] {
            let var = |shape: &[usize]| Var::randn(0f64, 1.0, shape, &device);
            let x = var(&[clips * frames, c_in, size, size])?;
            let params = [
                var(&[c_out, c_in, kernel, kernel])?,
                var(&[c_out])?,
                var(&[c_out, c_out, 3])?,
                var(&[c_out])?,
            ];
            let build = |dtype: DType| -> candle_core::Result<FactorizedConv> {
                let t = |i: usize| params[i].as_tensor().to_dtype(dtype);
                Ok(FactorizedConv {
                    spatial_weight: t(0)?,
                    spatial_bias: t(1)?,
                    temporal: (kernel > 1)
                        .then(|| -> candle_core::Result<_> {
                            Ok(TemporalConv {
                                weight: t(2)?,
                                bias: t(3)?,
                            })
                        })
                        .transpose()?,
                    stride,
                })
            };
            let ours = build(DType::F32)?
                .forward(&x.as_tensor().to_dtype(DType::F32)?, frames)?
                .to_dtype(DType::F64)?;
            let theirs = build(DType::F64)?.forward(x.as_tensor(), frames)?;
            assert_eq!(ours.dims(), theirs.dims());
            let probe = Tensor::randn(0f64, 1.0, theirs.shape(), &device)?;
            let ours_grads = (ours.clone() * &probe)?.sum_all()?.backward()?;
            let theirs_grads = (theirs.clone() * &probe)?.sum_all()?.backward()?;
            let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f64> {
                (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
            };
            let case = format!("kernel {kernel}, stride {stride}");
            assert!(diff(&ours, &theirs)? < 1e-4, "forward, {case}");
            let used = if kernel > 1 { 4 } else { 2 };
            for (i, v) in std::iter::once(&x).chain(&params[..used]).enumerate() {
                let (Some(a), Some(b)) = (ours_grads.get(v), theirs_grads.get(v)) else {
                    panic!("missing gradient {i}, {case}");
                };
                assert!(diff(a, b)? < 1e-3, "gradient {i}, {case}: {}", diff(a, b)?);
            }
        }
        Ok(())
    }

    #[test]
    fn frame_taps_shift_frames_and_fold_back() -> candle_core::Result<()> {
        let device = Device::Cpu;
        // 1 channel, 2 clips x 3 frames, 1 pixel: frame j of clip b holds 10 b + j.
        let x = Var::from_tensor(
            &Tensor::new(&[0f64, 1., 2., 10., 11., 12.], &device)?.reshape((1, 6, 1))?,
        )?;
        let taps = frame_taps(x.as_tensor(), 3)?;
        let expected = [
            [0., 0., 1., 0., 10., 11.],
            [0., 1., 2., 10., 11., 12.],
            [1., 2., 0., 11., 12., 0.],
        ];
        assert_eq!(taps.squeeze(2)?.to_vec2::<f64>()?, expected);
        // Each frame feeds up to three taps, so the gradient of the sum counts them.
        let grads = taps.sum_all()?.backward()?;
        let grad = grads
            .get(&x)
            .map(|g| g.flatten_all()?.to_vec1::<f64>())
            .transpose()?;
        assert_eq!(grad, Some(vec![2., 3., 2., 2., 3., 2.]));
        Ok(())
    }
}
