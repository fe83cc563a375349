//! 2D convolution on the CPU as im2col + matmul. candle's CPU conv2d backward runs a direct
//! (dot-product per output) kernel that made training several times slower than the forward
//! pass; unfolding the input once and letting autograd see only matmuls fixes that. The two
//! custom ops here are each other's gradient (`col2im` is the adjoint of `im2col`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

/// Geometry shared by both directions: input `(n, c, h, w)`, square kernel, stride, padding.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.kernel) / self.stride + 1
    }
    fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.kernel) / self.stride + 1
    }
    fn cols_shape(&self) -> Shape {
        let rows = self.c * self.kernel * self.kernel;
        (self.n, rows, self.out_h() * self.out_w()).into()
    }
    fn image_shape(&self) -> Shape {
        (self.n, self.c, self.h, self.w).into()
    }

    /// Calls `visit(image_offset, cols_offset, len)` for every contiguous run of input pixels
    /// that lands in the column matrix (stride 1 gives whole row segments).
    fn for_each_run(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let (oh, ow, k) = (self.out_h(), self.out_w(), self.kernel);
        let (s, p) = (self.stride, self.padding);
        for b in 0..self.n {
            for ci in 0..self.c {
                let image_base = (b * self.c + ci) * self.h * self.w;
                for ky in 0..k {
                    for kx in 0..k {
                        let row = (b * self.c * k + ci * k + ky) * k + kx;
                        let cols_base = row * oh * ow;
                        // Output columns whose input column ox*s + kx - p lies inside [0, w).
                        let first_ox = p.saturating_sub(kx).div_ceil(s);
                        let Some(last_ix) = (self.w + p).checked_sub(kx + 1) else {
                            continue;
                        };
                        let last_ox = (last_ix / s + 1).min(ow);
                        if first_ox >= last_ox {
                            continue;
                        }
                        for oy in 0..oh {
                            let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&y| y < self.h)
                            else {
                                continue;
                            };
                            let ix = first_ox * s + kx - p;
                            let image_row = image_base + iy * self.w;
                            let cols_row = cols_base + oy * ow;
                            if s == 1 {
                                visit(image_row + ix, cols_row + first_ox, last_ox - first_ox);
                            } else {
                                for (i, ox) in (first_ox..last_ox).enumerate() {
                                    visit(image_row + ix + i * s, cols_row + ox, 1);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn contiguous<'a, T: WithDType>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col/col2im need contiguous input"),
    }
}

fn unfold<T: WithDType>(image: &[T], g: &Geometry) -> Vec<T> {
    let mut cols = vec![T::zero(); g.cols_shape().elem_count()];
    g.for_each_run(|src, dst, len| cols[dst..dst + len].copy_from_slice(&image[src..src + len]));
    cols
}

fn fold<T: WithDType>(cols: &[T], g: &Geometry) -> Vec<T> {
    let mut image = vec![T::zero(); g.image_shape().elem_count()];
    g.for_each_run(|dst, src, len| {
        for (acc, &v) in image[dst..dst + len].iter_mut().zip(&cols[src..src + len]) {
            *acc += v;
        }
    });
    image
}

/// `(n, c, h, w)` -> `(n, c k k, out_h out_w)`, rows ordered like an OIHW kernel's `(c, ky, kx)`.
struct Im2Col(Geometry);
/// The adjoint: `(n, c k k, out_h out_w)` -> `(n, c, h, w)`, summing overlapping taps.
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(unfold(contiguous(data, layout)?, &self.0)),
            CpuStorage::F64(data) => CpuStorage::F64(unfold(contiguous(data, layout)?, &self.0)),
            other => candle_core::bail!("im2col: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, self.0.cols_shape()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(fold(contiguous(data, layout)?, &self.0)),
            CpuStorage::F64(data) => CpuStorage::F64(fold(contiguous(data, layout)?, &self.0)),
            other => candle_core::bail!("col2im: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, self.0.image_shape()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Im2Col(self.0))?))
    }
}

/// `conv2d(x, weight, padding, stride)` without bias; im2col + matmul on the CPU, candle's
/// kernel elsewhere. `x`: `(n, c_in, h, w)`, `weight`: OIHW with a square kernel.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let (n, c, h, w) = x.dims4()?;
    let (c_out, _, kernel, _) = weight.dims4()?;
    let g = Geometry {
        n,
        c,
        h,
        w,
        kernel,
        stride,
        padding,
    };
    let cols = if kernel == 1 && stride == 1 && padding == 0 {
        x.reshape((n, c, h * w))?
    } else {
        x.contiguous()?.apply_op1(Im2Col(g))?
    };
    weight
        .reshape((c_out, c * kernel * kernel))?
        .broadcast_matmul(&cols)?
        .reshape((n, c_out, g.out_h(), g.out_w()))
}

/// The three temporal taps side by side: `(b f, c, hw)` -> `(b f, 3 c, hw)` where block `k` of
/// frame `j` holds frame `j + k - 1` of the same clip (zeros outside it).
struct FrameUnfold {
    frames: usize,
}
/// The adjoint of [`FrameUnfold`]: sums each tap back onto the frame it came from.
struct FrameFold {
    frames: usize,
}

const TAPS: usize = 3;

/// Calls `visit(frame_offset, stacked_offset)` for every (output frame, tap) whose source
/// frame exists; each offset addresses a block of `block` values.
fn for_each_tap(n: usize, frames: usize, block: usize, mut visit: impl FnMut(usize, usize)) {
    for clip_frame in 0..n {
        let (clip, j) = (clip_frame / frames, clip_frame % frames);
        for k in 0..TAPS {
            let Some(src) = (j + k).checked_sub(1).filter(|&s| s < frames) else {
                continue;
            };
            visit(
                (clip * frames + src) * block,
                (clip_frame * TAPS + k) * block,
            );
        }
    }
}

fn frame_unfold<T: WithDType>(x: &[T], n: usize, frames: usize, block: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n * TAPS * block];
    for_each_tap(n, frames, block, |src, dst| {
        out[dst..dst + block].copy_from_slice(&x[src..src + block]);
    });
    out
}

fn frame_fold<T: WithDType>(stacked: &[T], n: usize, frames: usize, block: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n * block];
    for_each_tap(n, frames, block, |dst, src| {
        for (acc, &v) in out[dst..dst + block]
            .iter_mut()
            .zip(&stacked[src..src + block])
        {
            *acc += v;
        }
    });
    out
}

impl CustomOp1 for FrameUnfold {
    fn name(&self) -> &'static str {
        "frame-unfold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, len) = layout.shape().dims3()?;
        let f = self.frames;
        let out = match storage {
            CpuStorage::F32(d) => {
                CpuStorage::F32(frame_unfold(contiguous(d, layout)?, n, f, c * len))
            }
            CpuStorage::F64(d) => {
                CpuStorage::F64(frame_unfold(contiguous(d, layout)?, n, f, c * len))
            }
            other => candle_core::bail!("frame-unfold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, (n, TAPS * c, len).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let fold = FrameFold {
            frames: self.frames,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(fold)?))
    }
}

impl CustomOp1 for FrameFold {
    fn name(&self) -> &'static str {
        "frame-fold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c3, len) = layout.shape().dims3()?;
        let (f, block) = (self.frames, c3 / TAPS * len);
        let out = match storage {
            CpuStorage::F32(d) => CpuStorage::F32(frame_fold(contiguous(d, layout)?, n, f, block)),
            CpuStorage::F64(d) => CpuStorage::F64(frame_fold(contiguous(d, layout)?, n, f, block)),
            other => candle_core::bail!("frame-fold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, (n, c3 / TAPS, len).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let unfold = FrameUnfold {
            frames: self.frames,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(unfold)?))
    }
}

/// `(b f, c, len)` -> `(b f, 3 c, len)`: for each frame, the previous, same and next frame of
/// its clip stacked on channels (zero-padded), so a kernel-3 temporal conv is one matmul.
pub fn frame_taps(x: &Tensor, frames: usize) -> Result<Tensor> {
    let (n, c, len) = x.dims3()?;
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op1(FrameUnfold { frames });
    }
    let padded = x
        .reshape((n / frames, frames, c * len))?
        .pad_with_zeros(1, 1, 1)?;
    let taps = [0, 1, 2].map(|k| padded.narrow(1, k, frames));
    Tensor::stack(&taps.into_iter().collect::<Result<Vec<_>>>()?, 2)?.reshape((n, TAPS * c, len))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{conv2d, frame_taps};

    #[test]
    fn matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        let device = Device::Cpu;
        for (kernel, stride, padding, size) in
            [(3, 1, 1, 7), (3, 2, 1, 8), (3, 2, 1, 7), (1, 1, 0, 5)]
        {
            let x = Var::randn(0f64, 1.0, (2, 3, size, size), &device)?;
            let w = Var::randn(0f64, 1.0, (4, 3, kernel, kernel), &device)?;
            let ours = conv2d(x.as_tensor(), w.as_tensor(), padding, stride)?;
            let theirs = x.as_tensor().conv2d(w.as_tensor(), padding, stride, 1, 1)?;
            let probe = Tensor::randn(0f64, 1.0, theirs.shape(), &device)?;
            let ours_grads = (ours.clone() * &probe)?.sum_all()?.backward()?;
            let theirs_grads = (theirs.clone() * &probe)?.sum_all()?.backward()?;
            let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f64> {
                (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
            };
            assert!(
                diff(&ours, &theirs)? < 1e-10,
                "forward k{kernel} s{stride} n{size}"
            );
            for var in [&x, &w] {
                let (a, b) = (ours_grads.get(var), theirs_grads.get(var));
                let (Some(a), Some(b)) = (a, b) else {
                    panic!("missing gradient");
                };
                assert!(diff(a, b)? < 1e-9, "gradient k{kernel} s{stride} n{size}");
            }
        }
        Ok(())
    }

    #[test]
    fn frame_taps_shift_frames_and_fold_back() -> candle_core::Result<()> {
        let device = Device::Cpu;
        // 2 clips x 3 frames, 1 channel, 1 pixel: frame j of clip b holds 10 b + j.
        let x = Var::from_tensor(
            &Tensor::new(&[0f64, 1., 2., 10., 11., 12.], &device)?.reshape((6, 1, 1))?,
        )?;
        let taps = frame_taps(x.as_tensor(), 3)?;
        let expected = [
            [0., 0., 1.],
            [0., 1., 2.],
            [1., 2., 0.],
            [0., 10., 11.],
            [10., 11., 12.],
            [11., 12., 0.],
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
