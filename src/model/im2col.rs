//! 2D convolution on the CPU as im2col + GEMM. candle's CPU conv2d backward runs a direct
//! (dot-product per output) kernel that made training several times slower than the forward
//! pass; unfolding the input (im2col) and running GEMMs fixes that.
//!
//! The columns are never built for a whole batch: each band of output rows of one image is
//! unfolded into a buffer that stays in the core's cache and multiplied there, bands spread
//! over candle's CPU threads. Whole-batch columns (nine times a 3x3 conv's input) cost a
//! memset, page faults and a trip through memory twice per convolution, a fifth of a training
//! step. The input gradient of a stride-1 convolution is itself a convolution (of the output
//! gradient with the flipped, transposed kernel), so it is banded the same way; strided
//! convolutions fold a column gradient back (col2im, the adjoint of im2col).

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use super::parallel::{collect_chunks, map_ranges};

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

/// Floats of a band's columns: half of this machine's 1 MiB L2 per core, so the columns and the
/// GEMM's packed operands stay in cache between im2col and the multiply.
const BAND_FLOATS: usize = 128 * 1024;

/// Output rows `rows` of image `image`.
#[derive(Debug, Clone)]
struct Band {
    image: usize,
    rows: Range<usize>,
}

/// How an `(n, c, h, w)` activation is stored: batch-major `(n, c, h, w)` or channel-major
/// `(c, n, h, w)`.
#[derive(Debug, Clone, Copy)]
enum Order {
    BatchMajor,
    ChannelMajor,
}

impl Order {
    /// Offset of plane `(image, channel)` of an activation with `n` images, `c` channels and
    /// `hw` pixels per plane.
    fn plane(self, image: usize, channel: usize, n: usize, c: usize, hw: usize) -> usize {
        match self {
            Self::BatchMajor => (image * c + channel) * hw,
            Self::ChannelMajor => (channel * n + image) * hw,
        }
    }

    /// Distance between consecutive channels' planes.
    fn channel_stride(self, n: usize, hw: usize) -> usize {
        match self {
            Self::BatchMajor => hw,
            Self::ChannelMajor => n * hw,
        }
    }
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
    /// Rows of the column matrix, ordered like an OIHW kernel's `(c, ky, kx)`.
    fn rows(&self) -> usize {
        self.c * self.kernel * self.kernel
    }
    fn positions(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }

    /// Output rows per band: as many as keep a band's columns within [`BAND_FLOATS`], spread
    /// evenly over the image.
    fn band_rows(&self) -> usize {
        let oh = self.out_h();
        let per_image = (self.rows() * oh * self.out_w())
            .div_ceil(BAND_FLOATS)
            .clamp(1, oh);
        oh.div_ceil(per_image)
    }

    fn band_count(&self) -> usize {
        self.n * self.out_h().div_ceil(self.band_rows())
    }

    fn band(&self, index: usize) -> Band {
        let (oh, rows) = (self.out_h(), self.band_rows());
        let per_image = oh.div_ceil(rows);
        let first = (index % per_image) * rows;
        Band {
            image: index / per_image,
            rows: first..(first + rows).min(oh),
        }
    }

    /// Calls `visit(plane_offset, row, position, len)` for every contiguous run of an input
    /// plane of channel `ci` that lands in the columns of output rows `out_rows` (stride 1 gives
    /// whole row segments): `plane_offset` counts from the plane's first pixel, `row` is the
    /// column matrix's row and `position` the output position counted from `out_rows.start`.
    fn for_each_run(
        &self,
        ci: usize,
        out_rows: Range<usize>,
        mut visit: impl FnMut(usize, usize, usize, usize),
    ) {
        let (ow, k) = (self.out_w(), self.kernel);
        let (s, p) = (self.stride, self.padding);
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                // Output columns whose input column ox*s + kx - p lies inside [0, w).
                let first_ox = p.saturating_sub(kx).div_ceil(s);
                let Some(last_ix) = (self.w + p).checked_sub(kx + 1) else {
                    continue;
                };
                let last_ox = (last_ix / s + 1).min(ow);
                if first_ox >= last_ox {
                    continue;
                }
                for oy in out_rows.clone() {
                    let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&y| y < self.h) else {
                        continue;
                    };
                    let ix = first_ox * s + kx - p;
                    let image_row = iy * self.w;
                    let position = (oy - out_rows.start) * ow;
                    if s == 1 {
                        visit(image_row + ix, row, position + first_ox, last_ox - first_ox);
                    } else {
                        for (i, ox) in (first_ox..last_ox).enumerate() {
                            visit(image_row + ix + i * s, row, position + ox, 1);
                        }
                    }
                }
            }
        }
    }

    /// Im2col of one band: `cols` becomes `(rows, band positions)`, row-major, zeros where the
    /// kernel reaches into the padding. `image` holds `self.n` images stored in `order`.
    fn unfold_band(&self, image: &[f32], order: Order, band: &Band, cols: &mut Vec<f32>) {
        let (hw, len) = (self.h * self.w, band.rows.len() * self.out_w());
        cols.clear();
        cols.resize(self.rows() * len, 0.0);
        for ci in 0..self.c {
            let plane = &image[order.plane(band.image, ci, self.n, self.c, hw)..][..hw];
            self.for_each_run(ci, band.rows.clone(), |src, row, position, run| {
                let dst = row * len + position;
                cols[dst..dst + run].copy_from_slice(&plane[src..src + run]);
            });
        }
    }

    /// The geometry whose convolution of the output gradient with the flipped, transposed kernel
    /// is this convolution's input gradient; only stride 1 with padding below the kernel has one.
    fn input_gradient(&self, c_out: usize) -> Option<Self> {
        (self.stride == 1 && self.padding < self.kernel).then(|| Self {
            n: self.n,
            c: c_out,
            h: self.out_h(),
            w: self.out_w(),
            kernel: self.kernel,
            stride: 1,
            padding: self.kernel - 1 - self.padding,
        })
    }
}

fn contiguous<'a, T: WithDType>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col/col2im need contiguous input"),
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) => contiguous(data, layout),
        other => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    }
}

/// A matrix in memory: element `(i, j)` at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct MatRef {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// The output buffer that the bands of one convolution write in disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every band writes only its own output elements (see `conv_bands`).
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}
#[allow(unsafe_code)]
unsafe impl Send for SharedOut {}

/// `dst (m, n) = [dst +] lhs (m, k) rhs (k, n)` on this thread (`dst` rows `dst_rs` apart,
/// columns adjacent).
///
/// # Safety
/// Every element addressed through the strides lies inside its buffer, and no other thread
/// touches `dst`'s elements meanwhile.
#[allow(unsafe_code)]
unsafe fn gemm_here(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    // Strides are element counts of in-memory buffers, far below `isize::MAX`.
    let s = |v: usize| v as isize;
    // SAFETY: the caller's contract; with `accumulate` false the GEMM writes `dst` without
    // reading it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            s(dst_rs),
            accumulate,
            lhs.ptr,
            s(lhs.cs),
            s(lhs.rs),
            rhs.ptr,
            s(rhs.cs),
            s(rhs.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `weight (c_out, rows) * im2col(src)` written to `dst`, an `(n, c_out, out_h, out_w)`
/// activation stored in `dst_order`, band by band on candle's CPU threads.
#[allow(unsafe_code)]
fn conv_bands(
    g: &Geometry,
    src: &[f32],
    src_order: Order,
    weight: &[f32],
    dst: &mut [f32],
    dst_order: Order,
) {
    let (rows, ow) = (g.rows(), g.out_w());
    let out_hw = g.out_h() * ow;
    let c_out = weight.len() / rows;
    assert_eq!(dst.len(), g.n * c_out * out_hw, "conv output size");
    let out = SharedOut(dst.as_mut_ptr());
    map_ranges(g.band_count(), |bands| {
        let mut cols = Vec::new();
        for index in bands {
            let band = g.band(index);
            g.unfold_band(src, src_order, &band, &mut cols);
            let len = band.rows.len() * ow;
            let first = dst_order.plane(band.image, 0, g.n, c_out, out_hw) + band.rows.start * ow;
            let dst_rs = dst_order.channel_stride(g.n, out_hw);
            let out = out;
            // SAFETY: this band writes the `len` positions after `first` in each of the `c_out`
            // planes of its image, which lie inside `dst` (asserted above) and which no other
            // band writes; `weight` is `c_out x rows` and `cols` is `rows x len`.
            unsafe {
                gemm_here(
                    (c_out, len, rows),
                    out.0.add(first),
                    dst_rs,
                    false,
                    MatRef {
                        ptr: weight.as_ptr(),
                        rs: rows,
                        cs: 1,
                    },
                    MatRef {
                        ptr: cols.as_ptr(),
                        rs: len,
                        cs: 1,
                    },
                );
            }
        }
    });
}

/// A new `len`-float buffer, not zeroed first: `fill` must write every element.
#[allow(unsafe_code)]
fn written_by(len: usize, fill: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns and `fill` writes every element before anything
    // reads it (the GEMMs behind it run with `read_dst = false`).
    unsafe { out.set_len(len) };
    fill(&mut out);
    out
}

/// `OIHW (c_out, c_in, k, k)` -> the input gradient's kernel `(c_in, c_out, k, k)`, each tap
/// flipped in both directions.
fn flipped_transposed(weight: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let taps = k * k;
    let mut out = vec![0f32; weight.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for t in 0..taps {
                out[(ci * c_out + co) * taps + taps - 1 - t] = weight[(co * c_in + ci) * taps + t];
            }
        }
    }
    out
}

/// Col2im, one input plane at a time (planes take disjoint sums) on candle's CPU threads:
/// whole-batch columns `(rows, n out_h out_w)` back to `(n, c, h, w)`, summing overlaps.
fn fold(cols: &[f32], g: &Geometry) -> Vec<f32> {
    let out_hw = g.out_h() * g.out_w();
    collect_chunks(g.image_shape().elem_count(), g.h * g.w, |plane, image| {
        let (b, ci) = (plane / g.c, plane % g.c);
        g.for_each_run(ci, 0..g.out_h(), |dst, row, position, len| {
            let src = (row * g.n + b) * out_hw + position;
            for (acc, &v) in image[dst..dst + len].iter_mut().zip(&cols[src..src + len]) {
                *acc += v;
            }
        });
    })
}

/// Channel-major conv2d without bias, `(x (n, c, h, w), weight (c_out, c k k))` ->
/// `(c_out, n, out_h, out_w)`. The columns live only inside each call (recomputed for the
/// weight gradient), so neither they nor their gradient ever reach the autograd graph.
struct Conv2d(Geometry);
/// `(dy (c_out, n L), weight)` -> `dx (n, c, h, w)`.
struct Conv2dGradInput(Geometry);
/// `(x, dy (c_out, n L))` -> `dweight (c_out, c k k)`: `dy im2col(x)^T`, summed over bands.
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
        let x = f32_slice(x, x_layout, self.name())?;
        let w = f32_slice(w, w_layout, self.name())?;
        let c_out = w_layout.dims()[0];
        let y = written_by(c_out * g.positions(), |y| {
            conv_bands(g, x, Order::BatchMajor, w, y, Order::ChannelMajor);
        });
        Ok((
            CpuStorage::F32(y),
            (c_out, g.n, g.out_h(), g.out_w()).into(),
        ))
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
        let c_out = w_layout.dims()[0];
        if let Some(adjoint) = g.input_gradient(c_out) {
            let dy = f32_slice(dy, dy_layout, self.name())?;
            let w = f32_slice(w, w_layout, self.name())?;
            let flipped = flipped_transposed(w, c_out, g.c, g.kernel);
            let dx = written_by(g.image_shape().elem_count(), |dx| {
                conv_bands(
                    &adjoint,
                    dy,
                    Order::ChannelMajor,
                    &flipped,
                    dx,
                    Order::BatchMajor,
                );
            });
            return Ok((CpuStorage::F32(dx), g.image_shape()));
        }
        let (rows, positions) = (g.rows(), g.positions());
        let dcols = w.matmul(
            dy,
            (1, rows, positions, c_out),
            &w_layout.transpose(0, 1)?,
            &Layout::contiguous_with_offset((c_out, positions), dy_layout.start_offset()),
        )?;
        let dcols = f32_slice(&dcols, &Layout::contiguous((rows, positions)), self.name())?;
        Ok((CpuStorage::F32(fold(dcols, g)), g.image_shape()))
    }
}

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "conv2d-grad-weight"
    }

    #[allow(unsafe_code)]
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_slice(x, x_layout, self.name())?;
        let dy = f32_slice(dy, dy_layout, self.name())?;
        let (rows, ow) = (g.rows(), g.out_w());
        let (c_out, out_hw) = (dy_layout.dims()[0], g.out_h() * ow);
        assert_eq!(dy.len(), c_out * g.n * out_hw, "conv output gradient size");
        // `dw^T (rows, c_out)` per range of bands: a GEMM writing `dw^T` packs `dy`'s band,
        // `rows / c_out` times smaller than the columns (nine for a 3x3 kernel between equal
        // widths), where one writing `dw` would pack the columns.
        let partials = map_ranges(g.band_count(), |bands| {
            let (mut cols, mut dw_t) = (Vec::new(), vec![0f32; rows * c_out]);
            for index in bands {
                let band = g.band(index);
                g.unfold_band(x, Order::BatchMajor, &band, &mut cols);
                let len = band.rows.len() * ow;
                let first = band.image * out_hw + band.rows.start * ow;
                // SAFETY: `cols` is `rows x len`; the band of `dy` is `len` positions after
                // `first` in each of its `c_out` planes (`g.n * out_hw` apart), inside `dy`
                // (asserted above); `dw_t` is `rows x c_out` and this range's own.
                unsafe {
                    gemm_here(
                        (rows, c_out, len),
                        dw_t.as_mut_ptr(),
                        c_out,
                        true,
                        MatRef {
                            ptr: cols.as_ptr(),
                            rs: len,
                            cs: 1,
                        },
                        MatRef {
                            ptr: dy.as_ptr().add(first),
                            rs: 1,
                            cs: g.n * out_hw,
                        },
                    );
                }
            }
            dw_t
        });
        let mut dw = vec![0f32; c_out * rows];
        for dw_t in &partials {
            for (r, row) in dw_t.chunks_exact(c_out).enumerate() {
                for (co, &v) in row.iter().enumerate() {
                    dw[co * rows + r] += v;
                }
            }
        }
        Ok((CpuStorage::F32(dw), (c_out, rows).into()))
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
