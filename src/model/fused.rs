//! Fused CPU kernels for the memory-bound steps of small-model training: GroupNorm (with its
//! affine part and the SiLU that follows it), the last-dim softmax, bias adds and 2x nearest
//! upsampling. Built from tensor ops each costs several full-size temporaries forward and more
//! backward; here each is one pass forward and one or two backward. Other devices use the
//! tensor-op versions.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Result, Shape, Tensor};

use super::fast_math;
use super::parallel::{collect_chunks, for_each_chunk_mut};

/// The f32 data of a contiguous CPU tensor, or a clear error naming `op`.
pub(super) fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Shape of a frame-folded `((b f), c, h w)` activation seen by GroupNorm: statistics span
/// `frames` frames and `c / groups` channels.
#[derive(Debug, Clone, Copy)]
struct GroupGeometry {
    clips: usize,
    frames: usize,
    c: usize,
    groups: usize,
    hw: usize,
}

impl GroupGeometry {
    fn new(shape: &Shape, groups: usize, frames: usize) -> Result<Self> {
        let (n, c, h, w) = shape.dims4()?;
        Ok(Self {
            clips: n / frames,
            frames,
            c,
            groups,
            hw: h * w,
        })
    }

    /// Elements of one clip (its frames, channels and pixels are contiguous).
    fn clip_len(&self) -> usize {
        self.frames * self.c * self.hw
    }

    /// Calls `visit(group, channel, offset)` for each `hw` run of one clip, `offset` from the
    /// clip's start.
    fn for_each_run_in_clip(&self, mut visit: impl FnMut(usize, usize, usize)) {
        for frame in 0..self.frames {
            let start = frame * self.c * self.hw;
            self.for_each_run_in_frame(|group, ch, o| visit(group, ch, start + o));
        }
    }

    /// Calls `visit(group, channel, offset)` for each `hw` run of one frame, `offset` from the
    /// frame's start.
    fn for_each_run_in_frame(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let per_group = self.c / self.groups;
        for ch in 0..self.c {
            visit(ch / per_group, ch, ch * self.hw);
        }
    }

    /// Mean and 1/std of every (clip, group), indexed `clip * groups + group`, accumulated in
    /// f64; each (clip, group) a parallel task, so that one clip uses every thread too.
    fn stats(&self, x: &[f32], eps: f64) -> Vec<(f64, f64)> {
        let per_group = self.c / self.groups;
        let count = (self.frames * per_group * self.hw) as f64;
        let (hw, len) = (self.hw, self.clip_len());
        let mut stats = vec![(0f64, 0f64); self.clips * self.groups];
        for_each_chunk_mut(&mut stats, 1, |index, stat| {
            let (clip, group) = (index / self.groups, index % self.groups);
            let x = &x[clip * len..(clip + 1) * len];
            // The group's runs: its channels in every frame.
            let runs = || {
                (0..self.frames).flat_map(move |frame| {
                    (0..per_group).map(move |k| (frame * self.c + group * per_group + k) * hw)
                })
            };
            fast_math::run(|| {
                let sum: f64 = runs().map(|o| fast_math::sum(&x[o..o + hw], |v| v)).sum();
                let mean = sum / count;
                let m = mean as f32;
                let sq: f64 = runs()
                    .map(|o| fast_math::sum(&x[o..o + hw], |v| (v - m) * (v - m)))
                    .sum();
                stat[0] = (mean, 1.0 / (sq / count + eps).sqrt());
            });
        });
        stats
    }
}

/// GroupNorm with its per-channel affine part and an optional SiLU, one pass each way.
/// Built from tensor ops it costs about six full-size temporaries forward and more backward
/// (with slow strided reductions for the weight and bias gradients).
struct GroupNormAffine {
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
    /// The statistics of the forward pass, kept for the backward pass (which would otherwise
    /// read the input twice more to recompute them).
    stats: OnceLock<Arc<Vec<(f64, f64)>>>,
}

impl GroupNormAffine {
    fn geometry(&self, shape: &Shape) -> Result<GroupGeometry> {
        GroupGeometry::new(shape, self.groups, self.frames)
    }
}

impl CustomOp3 for GroupNormAffine {
    fn name(&self) -> &'static str {
        "group-norm-affine"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        w_layout: &Layout,
        bias: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(x, x_layout, self.name())?;
        let weight = contiguous(weight, w_layout, self.name())?;
        let bias = contiguous(bias, b_layout, self.name())?;
        let g = self.geometry(x_layout.shape())?;
        let stats = Arc::clone(self.stats.get_or_init(|| Arc::new(g.stats(x, self.eps))));
        let (hw, frame_len) = (g.hw, g.c * g.hw);
        // Frame by frame, so that a single clip (sampling) uses every thread.
        let out = collect_chunks(x.len(), frame_len, |frame, out| {
            let clip = frame / g.frames;
            let x = &x[frame * frame_len..(frame + 1) * frame_len];
            fast_math::run(|| {
                g.for_each_run_in_frame(|group, ch, o| {
                    let (mean, rstd) = stats[clip * g.groups + group];
                    // z = (v - mean) rstd w + b as one multiply-add.
                    let scale = (rstd * f64::from(weight[ch])) as f32;
                    let shift = (f64::from(bias[ch]) - mean * rstd * f64::from(weight[ch])) as f32;
                    let (out, x) = (&mut out[o..o + hw], &x[o..o + hw]);
                    if self.silu {
                        for (y, &v) in out.iter_mut().zip(x) {
                            let z = v * scale + shift;
                            *y = z * fast_math::sigmoid(z);
                        }
                    } else {
                        for (y, &v) in out.iter_mut().zip(x) {
                            *y = v * scale + shift;
                        }
                    }
                });
            });
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.elem_count();
        let params = Tensor::cat(&[weight, bias], 0)?;
        let grad_op = GroupNormAffineGrad {
            groups: self.groups,
            frames: self.frames,
            eps: self.eps,
            silu: self.silu,
            stats: self.stats.get().cloned(),
        };
        let packed = x.apply_op3_no_bwd(&grad_res.contiguous()?, &params, &grad_op)?;
        let n = x.elem_count();
        Ok((
            Some(packed.narrow(0, 0, n)?.reshape(x.shape())?),
            Some(packed.narrow(0, n, c)?),
            Some(packed.narrow(0, n + c, c)?),
        ))
    }
}

/// Gradients of [`GroupNormAffine`] from `(x, dy, [weight, bias])`, packed as
/// `[dx (flat), dweight, dbias]`. With `dz` the gradient before the affine part and `xhat` the
/// standardised input: `dw = sum(dz xhat)`, `db = sum(dz)` per channel, and per group
/// `dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))` with `dxhat = w dz`.
struct GroupNormAffineGrad {
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
    /// The forward pass's statistics; recomputed from `x` when missing.
    stats: Option<Arc<Vec<(f64, f64)>>>,
}

impl CustomOp3 for GroupNormAffineGrad {
    fn name(&self) -> &'static str {
        "group-norm-affine-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
        params: &CpuStorage,
        p_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(x, x_layout, self.name())?;
        let dy = contiguous(dy, dy_layout, self.name())?;
        let params = contiguous(params, p_layout, self.name())?;
        let g = GroupGeometry::new(x_layout.shape(), self.groups, self.frames)?;
        let (weight, bias) = params.split_at(g.c);
        let stats = match &self.stats {
            Some(stats) => Arc::clone(stats),
            None => Arc::new(g.stats(x, self.eps)),
        };
        let (hw, len, c, groups) = (g.hw, g.clip_len(), g.c, g.groups);
        // dz (the gradient before the affine part) and xhat of one hw run, in f32 like the
        // forward pass, into the scratch buffers.
        let local = |x: &[f32],
                     dy: &[f32],
                     (mean, rstd): (f64, f64),
                     ch: usize,
                     dz: &mut [f32],
                     xhat: &mut [f32]| {
            let (mean, rstd) = (mean as f32, rstd as f32);
            for ((xh, &v), (d, &g)) in xhat.iter_mut().zip(x).zip(dz.iter_mut().zip(dy)) {
                *xh = (v - mean) * rstd;
                *d = if self.silu {
                    let z = *xh * weight[ch] + bias[ch];
                    let s = fast_math::sigmoid(z);
                    g * s * (1.0 + z * (1.0 - s))
                } else {
                    g
                };
            }
        };
        // Clip by clip, both passes back to back while the clip is still in cache: first its
        // share of [dweight, dbias] (2c) and per group (w dz, w dz xhat) sums, then dx.
        let stride = 2 * c + 2 * groups;
        let count = (g.frames * c / groups * hw) as f64;
        let partial = Mutex::new(vec![0f64; g.clips * 2 * c]);
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, dparams) = out.split_at_mut(x.len());
        for_each_chunk_mut(dx, len, |clip, dx| {
            let (x, dy) = (
                &x[clip * len..(clip + 1) * len],
                &dy[clip * len..(clip + 1) * len],
            );
            let mut sums = vec![0f64; stride];
            let (mut dz, mut xhat) = (vec![0f32; hw], vec![0f32; hw]);
            fast_math::run(|| {
                let (clip_params, group_sums) = sums.split_at_mut(2 * c);
                g.for_each_run_in_clip(|group, ch, o| {
                    let stat = stats[clip * groups + group];
                    local(&x[o..o + hw], &dy[o..o + hw], stat, ch, &mut dz, &mut xhat);
                    let s_dz = fast_math::sum(&dz, |v| v);
                    let s_dzx = fast_math::dot(&dz, &xhat);
                    clip_params[ch] += s_dzx;
                    clip_params[c + ch] += s_dz;
                    let w = f64::from(weight[ch]);
                    group_sums[2 * group] += w * s_dz;
                    group_sums[2 * group + 1] += w * s_dzx;
                });
                g.for_each_run_in_clip(|group, ch, o| {
                    let stat = stats[clip * groups + group];
                    local(&x[o..o + hw], &dy[o..o + hw], stat, ch, &mut dz, &mut xhat);
                    let m_dxhat = (group_sums[2 * group] / count) as f32;
                    let m_dxhat_x = (group_sums[2 * group + 1] / count) as f32;
                    let (w, rstd) = (weight[ch], stat.1 as f32);
                    for ((d, &dz), &xh) in dx[o..o + hw].iter_mut().zip(&dz).zip(&xhat) {
                        *d = rstd * (w * dz - m_dxhat - xh * m_dxhat_x);
                    }
                });
            });
            partial
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                [clip * 2 * c..(clip + 1) * 2 * c]
                .copy_from_slice(&sums[..2 * c]);
        });
        let partial = partial
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, d) in dparams.iter_mut().enumerate() {
            *d = partial.chunks(2 * c).map(|p| p[k]).sum::<f64>() as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * g.c)))
    }
}

/// `GroupNorm(groups)` of a frame-folded `((b f), c, h, w)` activation with statistics over
/// `frames` frames, then `* weight + bias` per channel and, if `silu`, SiLU (differentiable).
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    if x.dtype() != candle_core::DType::F32 {
        // In f32, as the reference's GroupNorm32: bf16 statistics lose too much.
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32);
        return group_norm(
            &f32(x)?,
            &f32(weight)?,
            &f32(bias)?,
            groups,
            frames,
            eps,
            silu,
        )?
        .to_dtype(x.dtype());
    }
    if x.device().is_cpu() {
        let op = GroupNormAffine {
            groups,
            frames,
            eps,
            silu,
            stats: OnceLock::new(),
        };
        return x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op);
    }
    group_norm_tensor_ops(x, weight, bias, groups, frames, eps, silu)
}

/// [`group_norm`] as candle tensor ops (other devices).
fn group_norm_tensor_ops(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let xs = x.reshape((n / frames, frames, groups, (c / groups) * h * w))?;
    let mean = xs.mean_keepdim((1, 3))?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim((1, 3))?;
    let normed = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, h, w))?
        .broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    if silu { normed.silu() } else { Ok(normed) }
}

/// Softmax over the last dim in one pass, with its gradient `y (g - sum(g y))`.
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-with-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let len = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        // Blocks of rows, so each parallel task has some work.
        let rows_per_block = (4096 / len).max(1);
        let out = collect_chunks(x.len(), rows_per_block * len, |block, out| {
            let x = &x[block * rows_per_block * len..];
            fast_math::run(|| {
                for (o, row) in out.chunks_mut(len).zip(x.chunks(len)) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = fast_math::exp(v - max);
                    }
                    let inv = (1.0 / fast_math::sum(o, |v| v)) as f32;
                    for o in o.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let gy = (grad_res * res)?;
        let dot = gy.sum_keepdim(D::Minus1)?;
        Ok(Some((gy - res.broadcast_mul(&dot)?)?))
    }
}

/// Softmax over the last dim (differentiable).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != candle_core::DType::F32 {
        // In f32, as the reference's attention.
        return softmax_last_dim(&x.to_dtype(candle_core::DType::F32)?)?.to_dtype(x.dtype());
    }
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op1(SoftmaxLastDim);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

/// `x + bias` for `x` seen as `(a, b, c, d)` and `bias` as `(a, 1, c, 1)`: a per-channel
/// bias (a = 1) or a per-clip, per-channel embedding (the ResBlock's time embedding). Its
/// gradient sums over `b` and `d`, which candle does with a strided reduction on one thread.
#[derive(Debug, Clone, Copy)]
struct AddBias {
    dims: [usize; 4],
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(x, x_layout, self.name())?;
        let bias = contiguous(bias, b_layout, self.name())?;
        let [_, nb, c, d] = self.dims;
        // One chunk per (a, b): its c runs of d.
        let out = collect_chunks(x.len(), c * d, |ab, out| {
            let bias = &bias[ab / nb * c..][..c];
            let x = &x[ab * c * d..][..c * d];
            for ((out, x), &v) in out.chunks_mut(d).zip(x.chunks(d)).zip(bias) {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = x + v;
                }
            }
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_bias = grad_res
            .contiguous()?
            .apply_op1_no_bwd(&BiasGrad { dims: self.dims })?
            .reshape(bias.shape())?;
        Ok((Some(grad_res.clone()), Some(grad_bias)))
    }
}

/// The bias gradient of [`AddBias`]: `(a, b, c, d)` summed over `b` and `d` to `(a, c)`, in
/// parallel over blocks of channels.
struct BiasGrad {
    dims: [usize; 4],
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "add-bias-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous(storage, layout, self.name())?;
        let [na, nb, c, d] = self.dims;
        let mut sums = vec![0f64; na * c];
        let block = c.div_ceil(4).max(1);
        for_each_chunk_mut(&mut sums, block, |i, sums| {
            // Entry k of chunk i is output (a, channel) number i * block + k.
            for (k, sum) in sums.iter_mut().enumerate() {
                let flat = i * block + k;
                let (a, ch) = (flat / c, flat % c);
                for b in 0..nb {
                    let run = &g[((a * nb + b) * c + ch) * d..][..d];
                    *sum += run.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
            }
        });
        let out = sums.into_iter().map(|v| v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from((na, c))))
    }
}

/// `x + bias` with `x` of `dims` = `(a, b, c, d)` elements (any shape with that many) and
/// `bias` of `(a, c)` (any shape with that many), broadcast over `b` and `d`; the result has
/// `x`'s shape.
pub fn add_bias(x: &Tensor, bias: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
    let [a, b, c, d] = dims;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x
            .contiguous()?
            .apply_op2(&bias.contiguous()?, AddBias { dims })
            .and_then(|y| y.reshape(x.shape()));
    }
    x.reshape((a, b, c, d))?
        .broadcast_add(&bias.reshape((a, 1, c, 1))?)?
        .reshape(x.shape())
}

/// Nearest-neighbour 2x upsampling of a contiguous `(n, c, h, w)` activation, plane by plane.
struct Upsample2x;
/// Its gradient: each 2x2 block of the output gradient summed (candle's upsampling backward
/// runs a grouped conv2d for this).
struct Upsample2xGrad;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample-2x"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let out = collect_chunks(4 * x.len(), 4 * h * w, |plane, out| {
            let x = &x[plane * h * w..(plane + 1) * h * w];
            for (y, row) in out.chunks_exact_mut(2 * w).enumerate() {
                let src = &x[(y / 2) * w..(y / 2 + 1) * w];
                for (pair, &v) in row.chunks_exact_mut(2).zip(src) {
                    pair.fill(v);
                }
            }
        });
        Ok((CpuStorage::F32(out), (n, c, 2 * h, 2 * w).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_res.contiguous()?.apply_op1_no_bwd(&Upsample2xGrad)?,
        ))
    }
}

impl CustomOp1 for Upsample2xGrad {
    fn name(&self) -> &'static str {
        "upsample-2x-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = contiguous(storage, layout, self.name())?;
        let (n, c, h2, w2) = layout.shape().dims4()?;
        let (h, w) = (h2 / 2, w2 / 2);
        let out = collect_chunks(dy.len() / 4, h * w, |plane, out| {
            let dy = &dy[plane * h2 * w2..(plane + 1) * h2 * w2];
            for (y, row) in out.chunks_exact_mut(w).enumerate() {
                let (top, bottom) = (&dy[2 * y * w2..][..w2], &dy[(2 * y + 1) * w2..][..w2]);
                for (x, d) in row.iter_mut().enumerate() {
                    *d = top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1];
                }
            }
        });
        Ok((CpuStorage::F32(out), (n, c, h, w).into()))
    }
}

/// Nearest-neighbour 2x upsampling of `(n, c, h, w)`: a fused op on the CPU (f32), candle's
/// `upsample_nearest2d` elsewhere.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(Upsample2x);
    }
    x.upsample_nearest2d(2 * h, 2 * w)
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Tensor, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn fused_group_norm_matches_tensor_ops_and_their_gradients() -> Result<()> {
        let device = Device::Cpu;
        // 2 clips x 3 frames, 8 channels in 4 groups, 3x5 pixels.
        let x = Var::randn(0.5f32, 2.0, (6, 8, 3, 5), &device)?;
        let w = Var::randn(1f32, 0.5, 8, &device)?;
        let b = Var::randn(0f32, 0.5, 8, &device)?;
        let probe = Tensor::randn(0f32, 1.0, (6, 8, 3, 5), &device)?;
        for (frames, silu) in [(3, true), (3, false), (1, true)] {
            let args = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let ours = group_norm(args.0, args.1, args.2, 4, frames, 1e-5, silu)?;
            let theirs = group_norm_tensor_ops(args.0, args.1, args.2, 4, frames, 1e-5, silu)?;
            assert!(max_diff(&ours, &theirs)? < 1e-5);
            let g_ours = (ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
            for var in [&x, &w, &b] {
                let (Some(a), Some(b)) = (g_ours.get(var), g_theirs.get(var)) else {
                    panic!("missing gradient");
                };
                let diff = max_diff(a, b)?;
                assert!(
                    diff < 1e-4,
                    "gradient differs by {diff} (frames {frames}, silu {silu})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn upsample_matches_candle_and_its_gradient() -> Result<()> {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (2, 3, 4, 5), &device)?;
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 8, 10), &device)?;
        let ours = upsample2x(x.as_tensor())?;
        let theirs = x.as_tensor().upsample_nearest2d(8, 10)?;
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_diff(&ours, &theirs)? == 0.0);
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (g_ours.get(&x), g_theirs.get(&x)) else {
            panic!("missing gradient");
        };
        assert!(max_diff(a, b)? < 1e-5);
        Ok(())
    }

    #[test]
    fn add_bias_matches_broadcasting_and_its_gradients() -> Result<()> {
        let device = Device::Cpu;
        for dims in [[1, 6, 5, 7], [3, 4, 5, 6], [2, 1, 9, 1]] {
            let [a, b, c, d] = dims;
            let x = Var::randn(0f32, 1.0, (a * b, c, d), &device)?;
            let bias = Var::randn(0f32, 1.0, (a, c), &device)?;
            let probe = Tensor::randn(0f32, 1.0, (a * b, c, d), &device)?;
            let ours = add_bias(x.as_tensor(), bias.as_tensor(), dims)?;
            let theirs = x
                .as_tensor()
                .reshape((a, b, c, d))?
                .broadcast_add(&bias.as_tensor().reshape((a, 1, c, 1))?)?
                .reshape((a * b, c, d))?;
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs)? < 1e-6);
            let g_ours = (ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
            for var in [&x, &bias] {
                let (Some(p), Some(q)) = (g_ours.get(var), g_theirs.get(var)) else {
                    panic!("missing gradient");
                };
                assert_eq!(p.dims(), q.dims());
                assert!(max_diff(p, q)? < 1e-4, "{dims:?}: {}", max_diff(p, q)?);
            }
        }
        Ok(())
    }

    #[test]
    fn fused_softmax_matches_tensor_ops_and_its_gradient() -> Result<()> {
        let device = Device::Cpu;
        // Rows of 5 (one parallel block) and of 100 (several blocks of rows).
        for shape in [(2, 3, 4, 5), (3, 8, 8, 100)] {
            softmax_matches(shape, &device)?;
        }
        Ok(())
    }

    fn softmax_matches(shape: (usize, usize, usize, usize), device: &Device) -> Result<()> {
        let x = Var::randn(0f32, 2.0, shape, device)?;
        let probe = Tensor::randn(0f32, 1.0, shape, device)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?;
        assert!(max_diff(&ours, &theirs)? < 1e-6);
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (g_ours.get(&x), g_theirs.get(&x)) else {
            panic!("missing gradient");
        };
        assert!(
            max_diff(a, b)? < 1e-4,
            "gradient differs by {}",
            max_diff(a, b)?
        );
        Ok(())
    }
}
