//! 2D convolution on the CPU as im2col + matmul. candle's CPU conv2d backward runs a direct
//! (dot-product per output) kernel that made training several times slower than the forward
//! pass; unfolding the input (im2col) and running GEMMs fixes that. The gradient of the input
//! folds the column gradient back (col2im, the adjoint of im2col).
//!
//! Columns are channel-major, `(c k k, n out_h out_w)`: the whole batch is then one GEMM, as
//! are both gradients, and the bias and weight gradients need no reduction over a broadcast
//! batch axis (candle's strided sum is slow).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use super::parallel::collect_chunks;

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
    fn image_shape(&self) -> Shape {
        (self.n, self.c, self.h, self.w).into()
    }

    /// Calls `visit(plane_offset, cols_offset, len)` for every contiguous run of input plane
    /// `(b, ci)`'s pixels that lands in the column matrix (stride 1 gives whole row segments);
    /// `plane_offset` counts from the plane's first pixel.
    fn for_each_run_of_plane(
        &self,
        b: usize,
        ci: usize,
        mut visit: impl FnMut(usize, usize, usize),
    ) {
        let (oh, ow, k) = (self.out_h(), self.out_w(), self.kernel);
        let (s, p) = (self.stride, self.padding);
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                let cols_base = (row * self.n + b) * oh * ow;
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
                    let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&y| y < self.h) else {
                        continue;
                    };
                    let ix = first_ox * s + kx - p;
                    let image_row = iy * self.w;
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

fn contiguous<'a, T: WithDType>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col/col2im need contiguous input"),
    }
}

/// Im2col, one input channel's `k k` column rows at a time (contiguous in the columns) on
/// candle's CPU threads.
fn unfold<T: WithDType>(image: &[T], g: &Geometry) -> Vec<T> {
    let (plane, rows_of_channel) = (g.h * g.w, g.kernel * g.kernel * g.positions());
    collect_chunks(g.rows() * g.positions(), rows_of_channel, |ci, cols| {
        let base = ci * rows_of_channel;
        for b in 0..g.n {
            let image = &image[(b * g.c + ci) * plane..][..plane];
            g.for_each_run_of_plane(b, ci, |src, dst, len| {
                cols[dst - base..dst - base + len].copy_from_slice(&image[src..src + len]);
            });
        }
    })
}

/// Col2im, one input plane at a time (planes take disjoint sums) on candle's CPU threads.
fn fold<T: WithDType>(cols: &[T], g: &Geometry) -> Vec<T> {
    collect_chunks(g.image_shape().elem_count(), g.h * g.w, |plane, image| {
        let (b, ci) = (plane / g.c, plane % g.c);
        g.for_each_run_of_plane(b, ci, |dst, src, len| {
            for (acc, &v) in image[dst..dst + len].iter_mut().zip(&cols[src..src + len]) {
                *acc += v;
            }
        });
    })
}

/// `(n, c, h, w)` -> `(c k k, n out_h out_w)` columns (rows ordered like an OIHW kernel's
/// `(c, ky, kx)`) as storage, for either float dtype.
fn unfold_storage(storage: &CpuStorage, layout: &Layout, g: &Geometry) -> Result<CpuStorage> {
    Ok(match storage {
        CpuStorage::F32(data) => CpuStorage::F32(unfold(contiguous(data, layout)?, g)),
        CpuStorage::F64(data) => CpuStorage::F64(unfold(contiguous(data, layout)?, g)),
        other => candle_core::bail!("conv2d: unsupported dtype {:?}", other.dtype()),
    })
}

/// A contiguous `(rows, cols)` matrix transposed to `(cols, rows)`, blocks of output rows on
/// candle's CPU threads.
fn transpose<T: WithDType>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    const BLOCK: usize = 256;
    collect_chunks(rows * cols, BLOCK * rows, |block, out| {
        for (i, out_row) in out.chunks_mut(rows).enumerate() {
            let col = block * BLOCK + i;
            for (r, o) in out_row.iter_mut().enumerate() {
                *o = m[r * cols + col];
            }
        }
    })
}

fn transpose_storage(
    storage: &CpuStorage,
    layout: &Layout,
    rows: usize,
    cols: usize,
) -> Result<CpuStorage> {
    Ok(match storage {
        CpuStorage::F32(data) => CpuStorage::F32(transpose(contiguous(data, layout)?, rows, cols)),
        CpuStorage::F64(data) => CpuStorage::F64(transpose(contiguous(data, layout)?, rows, cols)),
        other => candle_core::bail!("conv2d: unsupported dtype {:?}", other.dtype()),
    })
}

/// The adjoint of [`unfold_storage`]: columns back to `(n, c, h, w)`, summing overlaps.
fn fold_storage(cols: &CpuStorage, g: &Geometry) -> Result<CpuStorage> {
    Ok(match cols {
        CpuStorage::F32(data) => CpuStorage::F32(fold(data, g)),
        CpuStorage::F64(data) => CpuStorage::F64(fold(data, g)),
        other => candle_core::bail!("conv2d: unsupported dtype {:?}", other.dtype()),
    })
}

impl Geometry {
    fn rows(&self) -> usize {
        self.c * self.kernel * self.kernel
    }
    fn positions(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }
}

/// Channel-major conv2d without bias, `(x (n, c, h, w), weight (c_out, c k k))` ->
/// `(c_out, n, out_h, out_w)`: im2col + one GEMM. The columns live only inside each call
/// (recomputed for the weight gradient), so neither they nor their gradient ever reach the
/// autograd graph, which would allocate, zero and accumulate several copies of them.
struct Conv2d(Geometry);
/// `(dy (c_out, n L), weight)` -> `dx (n, c, h, w)`: `col2im(weight^T dy)`.
struct Conv2dGradInput(Geometry);
/// `(x, dy (c_out, n L))` -> `dweight (c_out, c k k)`: `dy im2col(x)^T`.
struct Conv2dGradWeight(Geometry);

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-channel-major"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (rows, positions) = (g.rows(), g.positions());
        let c_out = w_layout.dims()[0];
        let cols = unfold_storage(x, x_layout, g)?;
        let y = w.matmul(
            &cols,
            (1, c_out, positions, rows),
            w_layout,
            &Layout::contiguous((rows, positions)),
        )?;
        Ok((y, (c_out, g.n, g.out_h(), g.out_w()).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = grad_res.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &Conv2dGradInput(self.0))?;
        let dw = x.apply_op2_no_bwd(&dy, &Conv2dGradWeight(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for Conv2dGradInput {
    fn name(&self) -> &'static str {
        "conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dy_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (rows, positions) = (g.rows(), g.positions());
        let c_out = w_layout.dims()[0];
        let dcols = w.matmul(
            dy,
            (1, rows, positions, c_out),
            &w_layout.transpose(0, 1)?,
            &Layout::contiguous_with_offset((c_out, positions), dy_layout.start_offset()),
        )?;
        Ok((fold_storage(&dcols, g)?, g.image_shape()))
    }
}

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (rows, positions) = (g.rows(), g.positions());
        let c_out = dy_layout.dims()[0];
        let cols = unfold_storage(x, x_layout, g)?;
        // `dw^T = cols dy^T`, not `dy cols^T`: the GEMM packs its left operand unless it is
        // column-major, and the columns are `k k c_in / c_out` times the size of `dy` (nine for
        // a 3x3 kernel between equal widths; packing them took almost as long as the multiply).
        // `dy` is transposed here, on all threads, so nothing is packed on the main thread
        // alone either.
        let dy_t = transpose_storage(dy, dy_layout, c_out, positions)?;
        let dw_t = cols.matmul(
            &dy_t,
            (1, rows, c_out, positions),
            &Layout::contiguous((rows, positions)),
            &Layout::contiguous((positions, c_out)),
        )?;
        let dw = transpose_storage(&dw_t, &Layout::contiguous((rows, c_out)), rows, c_out)?;
        Ok((dw, (c_out, rows).into()))
    }
}

/// `conv2d(x, weight, padding, stride) + bias` with a channel-major result: `x` `(n, c_in, h, w)`,
/// `weight` OIHW with a square kernel, `bias` `(c_out,)` -> `(c_out, n, out_h, out_w)`.
/// im2col + one matmul on the CPU (a custom op), im2col from tensor ops elsewhere
/// ([`conv2d_unfolded`]).
pub fn conv2d_channel_major(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (c_out, _, kernel, _) = weight.dims4()?;
    // The custom op is the CPU's f32 kernel; everything else goes through tensor ops.
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return match conv2d_unfolded(x, weight, bias, padding, stride)? {
            Some(y) => Ok(y),
            None => x
                .conv2d(weight, padding, stride, 1, 1)?
                .broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?
                .transpose(0, 1),
        };
    }
    let (n, c, h, w) = x.dims4()?;
    let g = Geometry {
        n,
        c,
        h,
        w,
        kernel,
        stride,
        padding,
    };
    let weight = weight.reshape((c_out, g.rows()))?.contiguous()?;
    let y = x.contiguous()?.apply_op2(&weight, Conv2d(g))?;
    super::fused::add_bias(&y, bias, [1, 1, c_out, g.positions()])?.reshape((
        c_out,
        n,
        g.out_h(),
        g.out_w(),
    ))
}

/// [`conv2d_channel_major`] from pad, narrow, stack and one matmul, so that its gradients are
/// the same few ops. On CUDA this replaces candle's conv2d, whose input gradient goes through a
/// direct (unblocked) transposed-convolution kernel that dominated a training step. `None` when
/// a strided window does not tile the padded input (odd sizes): the caller falls back.
pub fn conv2d_unfolded(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Option<Tensor>> {
    let (n, c, h, w) = x.dims4()?;
    let (c_out, _, kernel, _) = weight.dims4()?;
    let (padded_h, padded_w) = (h + 2 * padding, w + 2 * padding);
    let (out_h, out_w) = (
        (padded_h - kernel) / stride + 1,
        (padded_w - kernel) / stride + 1,
    );
    if kernel - 1 + out_h * stride > padded_h || kernel - 1 + out_w * stride > padded_w {
        return Ok(None);
    }
    let xt = x.transpose(0, 1)?.contiguous()?;
    let padded = xt
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let mut taps = Vec::with_capacity(kernel * kernel);
    for ky in 0..kernel {
        for kx in 0..kernel {
            let window = padded
                .narrow(2, ky, out_h * stride)?
                .narrow(3, kx, out_w * stride)?;
            let window = if stride == 1 {
                window
            } else {
                window
                    .reshape((c, n, out_h, stride, out_w, stride))?
                    .narrow(3, 0, 1)?
                    .narrow(5, 0, 1)?
                    .reshape((c, n, out_h, out_w))?
            };
            taps.push(window);
        }
    }
    // Rows `ci * k * k + ky * k + kx`, the order of an OIHW weight flattened per output.
    let columns = Tensor::stack(&taps, 1)?.reshape((c * kernel * kernel, n * out_h * out_w))?;
    let y = weight
        .reshape((c_out, c * kernel * kernel))?
        .matmul(&columns)?
        .broadcast_add(&bias.reshape((c_out, 1))?)?
        .reshape((c_out, n, out_h, out_w))?;
    Ok(Some(y))
}

/// The three temporal taps stacked on channels, channel-major: `(c, b f, hw)` ->
/// `(3 c, b f, hw)` where row `k c + ci` of frame `j` holds channel `ci` of frame `j + k - 1`
/// of the same clip (zeros outside it).
struct FrameUnfold {
    frames: usize,
}
/// The adjoint of [`FrameUnfold`]: sums each tap back onto the frame it came from.
struct FrameFold {
    frames: usize,
}

const TAPS: usize = 3;

/// Frame geometry of a channel-major `(c, n, len)` activation with `frames` frames per clip.
#[derive(Debug, Clone, Copy)]
struct Frames {
    c: usize,
    n: usize,
    len: usize,
    frames: usize,
}

impl Frames {
    /// Calls `visit(frame_offset, stacked_offset)` for every (tap, channel, output frame)
    /// whose source frame exists; each offset addresses a run of `len` values.
    fn for_each_tap(&self, mut visit: impl FnMut(usize, usize)) {
        let Self { c, n, len, frames } = *self;
        for k in 0..TAPS {
            for ci in 0..c {
                for clip_frame in 0..n {
                    let (clip, j) = (clip_frame / frames, clip_frame % frames);
                    let Some(src) = (j + k).checked_sub(1).filter(|&s| s < frames) else {
                        continue;
                    };
                    visit(
                        (ci * n + clip * frames + src) * len,
                        ((k * c + ci) * n + clip_frame) * len,
                    );
                }
            }
        }
    }

    fn unfold<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let len = self.len;
        let mut out = vec![T::zero(); TAPS * x.len()];
        self.for_each_tap(|src, dst| {
            out[dst..dst + len].copy_from_slice(&x[src..src + len]);
        });
        out
    }

    fn fold<T: WithDType>(&self, stacked: &[T]) -> Vec<T> {
        let len = self.len;
        let mut out = vec![T::zero(); stacked.len() / TAPS];
        self.for_each_tap(|dst, src| {
            for (acc, &v) in out[dst..dst + len].iter_mut().zip(&stacked[src..src + len]) {
                *acc += v;
            }
        });
        out
    }
}

impl CustomOp1 for FrameUnfold {
    fn name(&self) -> &'static str {
        "frame-unfold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, n, len) = layout.shape().dims3()?;
        let f = Frames {
            c,
            n,
            len,
            frames: self.frames,
        };
        let out = match storage {
            CpuStorage::F32(d) => CpuStorage::F32(f.unfold(contiguous(d, layout)?)),
            CpuStorage::F64(d) => CpuStorage::F64(f.unfold(contiguous(d, layout)?)),
            other => candle_core::bail!("frame-unfold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, (TAPS * c, n, len).into()))
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
        let (c3, n, len) = layout.shape().dims3()?;
        let f = Frames {
            c: c3 / TAPS,
            n,
            len,
            frames: self.frames,
        };
        let out = match storage {
            CpuStorage::F32(d) => CpuStorage::F32(f.fold(contiguous(d, layout)?)),
            CpuStorage::F64(d) => CpuStorage::F64(f.fold(contiguous(d, layout)?)),
            other => candle_core::bail!("frame-fold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, (c3 / TAPS, n, len).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let unfold = FrameUnfold {
            frames: self.frames,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(unfold)?))
    }
}

/// Channel-major `(c, b f, len)` -> `(3 c, b f, len)`: for each frame, the previous, same and
/// next frame of its clip stacked on channels (zero-padded), so a kernel-3 temporal conv is
/// one matmul.
pub fn frame_taps(x: &Tensor, frames: usize) -> Result<Tensor> {
    let (c, n, len) = x.dims3()?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(FrameUnfold { frames });
    }
    let padded = x
        .reshape((c, n / frames, frames, len))?
        .pad_with_zeros(2, 1, 1)?;
    let taps = [0, 1, 2].map(|k| padded.narrow(2, k, frames));
    Tensor::stack(&taps.into_iter().collect::<Result<Vec<_>>>()?, 0)?.reshape((TAPS * c, n, len))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{conv2d_channel_major, conv2d_unfolded, frame_taps};

    /// (kernel, stride, padding, size) of the convolutions compared with candle's.
    const GEOMETRIES: [(usize, usize, usize, usize); 6] = [
        (3, 1, 1, 7),
        (3, 2, 1, 8),
        (3, 2, 1, 7),
        (1, 1, 0, 5),
        (3, 1, 1, 13),
        (3, 1, 0, 6),
    ];

    /// Input, weight and bias (f64) for a 3 -> 4 channel convolution of `GEOMETRIES`' kind.
    fn conv_vars(kernel: usize, size: usize) -> candle_core::Result<(Var, Var, Var)> {
        let device = Device::Cpu;
        Ok((
            Var::randn(0f64, 1.0, (2, 3, size, size), &device)?,
            Var::randn(0f64, 1.0, (4, 3, kernel, kernel), &device)?,
            Var::randn(0f64, 1.0, 4, &device)?,
        ))
    }

    #[test]
    fn matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        for unfolded in [false, true] {
            for (kernel, stride, padding, size) in GEOMETRIES {
                let (x, w, b) = conv_vars(kernel, size)?;
                let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
                let ours = if unfolded {
                    match conv2d_unfolded(xt, wt, bt, padding, stride)? {
                        Some(y) => y,
                        None => {
                            assert!(size % 2 == 1 && stride == 2, "declined k{kernel} n{size}");
                            continue;
                        }
                    }
                } else {
                    conv2d_channel_major(xt, wt, bt, padding, stride)?
                }
                .transpose(0, 1)?;
                check_against_candle(&ours, (&x, &w, &b), (kernel, stride, padding, size))?;
            }
        }
        Ok(())
    }

    /// The custom op (the CPU's f32 kernel; f64 goes through tensor ops above).
    #[test]
    fn the_f32_kernel_matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        for (kernel, stride, padding, size) in GEOMETRIES {
            let (x, w, b) = conv_vars(kernel, size)?;
            let f32 = |v: &Var| v.as_tensor().to_dtype(DType::F32);
            let ours = conv2d_channel_major(&f32(&x)?, &f32(&w)?, &f32(&b)?, padding, stride)?
                .transpose(0, 1)?
                .to_dtype(DType::F64)?;
            check_against_candle_within(
                &ours,
                (&x, &w, &b),
                (kernel, stride, padding, size),
                1e-4,
            )?;
        }
        Ok(())
    }

    fn check_against_candle(
        ours: &Tensor,
        vars: (&Var, &Var, &Var),
        geometry: (usize, usize, usize, usize),
    ) -> candle_core::Result<()> {
        check_against_candle_within(ours, vars, geometry, 1e-10)
    }

    fn check_against_candle_within(
        ours: &Tensor,
        (x, w, b): (&Var, &Var, &Var),
        (kernel, stride, padding, size): (usize, usize, usize, usize),
        tolerance: f64,
    ) -> candle_core::Result<()> {
        let theirs = x
            .as_tensor()
            .conv2d(w.as_tensor(), padding, stride, 1, 1)?
            .broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1))?)?;
        let probe = Tensor::randn(0f64, 1.0, theirs.shape(), &Device::Cpu)?;
        let ours_grads = (ours.clone() * &probe)?.sum_all()?.backward()?;
        let theirs_grads = (theirs.clone() * &probe)?.sum_all()?.backward()?;
        // candle's max skips NaN; the sum does not (a kernel that misses an output leaves NaN
        // there in tests).
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f64> {
            let d = (a - b)?.abs()?;
            let finite = d.sum_all()?.to_scalar::<f64>()?.is_finite();
            Ok(if finite {
                d.max_all()?.to_scalar::<f64>()?
            } else {
                f64::INFINITY
            })
        };
        assert!(
            diff(ours, &theirs)? < tolerance,
            "forward k{kernel} s{stride} p{padding} n{size}"
        );
        for var in [x, w, b] {
            let (Some(a), Some(b)) = (ours_grads.get(var), theirs_grads.get(var)) else {
                panic!("missing gradient");
            };
            assert!(
                diff(a, b)? < 10.0 * tolerance,
                "gradient k{kernel} s{stride} p{padding} n{size}"
            );
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
