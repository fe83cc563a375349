//! Fused CPU kernels for the two memory-bound steps that dominate small-model training:
//! group standardisation (the non-affine part of GroupNorm) and the last-dim softmax. Built
//! from tensor ops each costs several full-size temporaries forward and more backward; here
//! each is one pass forward and one pass backward. Other devices use the tensor-op versions.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, D, Layout, Result, Shape, Tensor};

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `(x - mean) / sqrt(var + eps)` with statistics over axes 1 and 3 of a `(b, f, g, e)` tensor,
/// i.e. per (batch item, group) across all frames: GroupNorm's statistics in the frame-folded
/// layout.
struct GroupStandardize {
    eps: f64,
}

/// Mean and 1/std of every (batch item, group) of a `(b, f, g, e)` buffer.
fn group_stats(x: &[f32], dims: (usize, usize, usize, usize), eps: f64) -> Vec<(f64, f64)> {
    let (b, f, g, e) = dims;
    let count = (f * e) as f64;
    let chunk = |bi: usize, fi: usize, gi: usize| {
        let start = ((bi * f + fi) * g + gi) * e;
        &x[start..start + e]
    };
    let mut stats = Vec::with_capacity(b * g);
    for bi in 0..b {
        for gi in 0..g {
            let sum: f64 = (0..f)
                .map(|fi| chunk(bi, fi, gi).iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum();
            let mean = sum / count;
            let sq: f64 = (0..f)
                .map(|fi| {
                    chunk(bi, fi, gi)
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                })
                .sum();
            stats.push((mean, 1.0 / (sq / count + eps).sqrt()));
        }
    }
    stats
}

fn dims4(layout: &Layout) -> Result<(usize, usize, usize, usize)> {
    layout.shape().dims4()
}

impl CustomOp1 for GroupStandardize {
    fn name(&self) -> &'static str {
        "group-standardize"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (b, f, g, e) = dims4(layout)?;
        let stats = group_stats(x, (b, f, g, e), self.eps);
        let mut out = vec![0f32; x.len()];
        for (i, (o, v)) in out.chunks_mut(e).zip(x.chunks(e)).enumerate() {
            let (bi, gi) = (i / (f * g), i % g);
            let (mean, rstd) = stats[bi * g + gi];
            for (o, &v) in o.iter_mut().zip(v) {
                *o = ((f64::from(v) - mean) * rstd) as f32;
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &GroupStandardizeGrad { eps: self.eps },
        )?;
        Ok(Some(grad))
    }
}

/// Gradient of [`GroupStandardize`] from `(x, dy)`:
/// `dx = rstd (dy - mean(dy) - xhat mean(dy xhat))` per group.
struct GroupStandardizeGrad {
    eps: f64,
}

impl CustomOp2 for GroupStandardizeGrad {
    fn name(&self) -> &'static str {
        "group-standardize-grad"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        dy_storage: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(x_storage, x_layout, self.name())?;
        let dy = contiguous(dy_storage, dy_layout, self.name())?;
        let (b, f, g, e) = dims4(x_layout)?;
        let stats = group_stats(x, (b, f, g, e), self.eps);
        let count = (f * e) as f64;
        // Per group: mean(dy) and mean(dy * xhat).
        let mut sums = vec![(0f64, 0f64); b * g];
        for (i, (xs, dys)) in x.chunks(e).zip(dy.chunks(e)).enumerate() {
            let key = (i / (f * g)) * g + i % g;
            let (mean, rstd) = stats[key];
            let (s_dy, s_dyx) = &mut sums[key];
            for (&xv, &dv) in xs.iter().zip(dys) {
                let xhat = (f64::from(xv) - mean) * rstd;
                *s_dy += f64::from(dv);
                *s_dyx += f64::from(dv) * xhat;
            }
        }
        let mut dx = vec![0f32; x.len()];
        for (i, ((out, xs), dys)) in dx
            .chunks_mut(e)
            .zip(x.chunks(e))
            .zip(dy.chunks(e))
            .enumerate()
        {
            let key = (i / (f * g)) * g + i % g;
            let (mean, rstd) = stats[key];
            let (mean_dy, mean_dyx) = (sums[key].0 / count, sums[key].1 / count);
            for ((o, &xv), &dv) in out.iter_mut().zip(xs).zip(dys) {
                let xhat = (f64::from(xv) - mean) * rstd;
                *o = (rstd * (f64::from(dv) - mean_dy - xhat * mean_dyx)) as f32;
            }
        }
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}

/// Standardises `x` `(b, f, g, e)` per (b, g) over f and e (GroupNorm without its affine part).
pub fn group_standardize(x: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(GroupStandardize { eps });
    }
    let mean = x.mean_keepdim((1, 3))?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim((1, 3))?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)
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
        let mut out = vec![0f32; x.len()];
        for (o, row) in out.chunks_mut(len).zip(x.chunks(len)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
            for o in o.iter_mut() {
                *o /= sum;
            }
        }
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
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(SoftmaxLastDim);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Tensor, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn fused_ops_match_tensor_ops_and_their_gradients() -> Result<()> {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 2.0, (2, 3, 4, 5), &device)?;
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &device)?;
        let reference = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let mean = x.mean_keepdim((1, 3))?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim((1, 3))?;
            let gn = centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
            Ok((gn, candle_nn::ops::softmax(x, D::Minus1)?))
        };
        let (gn_ref, sm_ref) = reference(x.as_tensor())?;
        let gn = group_standardize(x.as_tensor(), 1e-5)?;
        let sm = softmax_last_dim(x.as_tensor())?;
        assert!(max_diff(&gn, &gn_ref)? < 1e-5);
        assert!(max_diff(&sm, &sm_ref)? < 1e-6);
        for (ours, theirs) in [(gn, gn_ref), (sm, sm_ref)] {
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
        }
        Ok(())
    }
}
