//! Convolutions on the CPU as im2col + GEMM, for both parts of the reference's pseudo-3D conv:
//! the 2D conv on every frame and the kernel-3 conv along frames (a `3 x 1` kernel over
//! `(frames, pixels)` planes). candle's CPU conv2d backward runs a direct (dot-product per
//! output) kernel that made training several times slower than the forward pass.
//!
//! The columns are never built for a whole batch: each band of output rows of one image is
//! unfolded into a buffer that stays in the core's cache and multiplied there, bands spread
//! over candle's CPU threads. Whole-batch columns (nine times a 3x3 conv's input) cost a
//! memset, page faults and a trip through memory twice per convolution, a fifth of a training
//! step. The input gradient of a stride-1 convolution is itself a convolution (of the output
//! gradient with the flipped, transposed kernel), so it is banded the same way; strided
//! convolutions fold each image's column gradient back (col2im, the adjoint of im2col).
//!
//! Input and output are read and written through [`Strides`], so a convolution consumes and
//! produces whichever layout its neighbours want (batch-major, channel-major, frame-folded)
//! without transposing copies. The bias rides along as one more weight column against a row
//! of ones, so the GEMM adds it and the weight gradient's GEMM sums its gradient.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::fused::contiguous;
use super::parallel::{map_ranges, written_by};

/// How an `(n, c, h, w)` activation is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// `(n, c, h, w)`.
    BatchMajor,
    /// `(c, n, h, w)`.
    ChannelMajor,
    /// Images are clips and their rows frames, stored frame by frame: `((n h), c, w)`.
    FrameFolded,
}

impl Order {
    /// Strides of an `(n, c, h, w)` activation stored in this order: a one-to-one map onto
    /// `0..n c h w`.
    fn strides(self, (n, c, h, w): (usize, usize, usize, usize)) -> Strides {
        let (image, channel, row) = match self {
            Self::BatchMajor => (c * h * w, h * w, w),
            Self::ChannelMajor => (h * w, n * h * w, w),
            Self::FrameFolded => (h * c * w, w, c * w),
        };
        Strides {
            image,
            channel,
            row,
        }
    }
}

/// Where element `(image, channel, row, column)` of an activation lies:
/// `image * self.image + channel * self.channel + row * self.row + column` (columns adjacent).
#[derive(Debug, Clone, Copy)]
struct Strides {
    image: usize,
    channel: usize,
    row: usize,
}

impl Strides {
    fn at(&self, image: usize, channel: usize, row: usize) -> usize {
        image * self.image + channel * self.channel + row * self.row
    }
}

/// A convolution: `n` images of `c` channels and `h x w` pixels, a `kernel = (kh, kw)` kernel
/// with `padding = (ph, pw)` and the same stride in both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub padding: (usize, usize),
    pub stride: usize,
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

impl Geometry {
    pub(crate) fn out_h(&self) -> usize {
        (self.h + 2 * self.padding.0 - self.kernel.0) / self.stride + 1
    }
    pub(crate) fn out_w(&self) -> usize {
        (self.w + 2 * self.padding.1 - self.kernel.1) / self.stride + 1
    }
    fn in_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    fn out_len(&self, c_out: usize) -> usize {
        self.n * c_out * self.out_h() * self.out_w()
    }
    /// Rows of the column matrix, ordered like an OIHW kernel's `(c, ky, kx)`, without the row
    /// of ones that carries the bias.
    fn rows(&self) -> usize {
        self.c * self.kernel.0 * self.kernel.1
    }

    /// Output rows per band: as many as keep a band's columns within [`BAND_FLOATS`], spread
    /// evenly over the image; one when the output's rows are not adjacent in `out` (a band's
    /// positions must be, to be one GEMM's columns).
    fn band_rows(&self, out: Strides) -> usize {
        let (oh, ow) = (self.out_h(), self.out_w());
        if out.row != ow {
            return 1;
        }
        let per_image = (self.rows() * oh * ow).div_ceil(BAND_FLOATS).clamp(1, oh);
        oh.div_ceil(per_image)
    }

    fn band_count(&self, out: Strides) -> usize {
        self.n * self.out_h().div_ceil(self.band_rows(out))
    }

    fn band(&self, out: Strides, index: usize) -> Band {
        let (oh, rows) = (self.out_h(), self.band_rows(out));
        let per_image = oh.div_ceil(rows);
        let first = (index % per_image) * rows;
        Band {
            image: index / per_image,
            rows: first..(first + rows).min(oh),
        }
    }

    /// Calls `visit(iy, ix, row, position, len)` for every run of `len` adjacent input pixels
    /// of channel `ci`, starting at `(iy, ix)`, that lands in the columns of output rows
    /// `out_rows` (stride 1 gives whole row segments): `row` is the column matrix's row and
    /// `position` the output position counted from `out_rows.start`.
    fn for_each_run(
        &self,
        ci: usize,
        out_rows: Range<usize>,
        mut visit: impl FnMut(usize, usize, usize, usize, usize),
    ) {
        let ((kh, kw), (ph, pw), s) = (self.kernel, self.padding, self.stride);
        let ow = self.out_w();
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (ci * kh + ky) * kw + kx;
                // Output columns whose input column ox*s + kx - pw lies inside [0, w).
                let first_ox = pw.saturating_sub(kx).div_ceil(s);
                let Some(last_ix) = (self.w + pw).checked_sub(kx + 1) else {
                    continue;
                };
                let last_ox = (last_ix / s + 1).min(ow);
                if first_ox >= last_ox {
                    continue;
                }
                let ix = first_ox * s + kx - pw;
                for oy in out_rows.clone() {
                    let Some(iy) = (oy * s + ky).checked_sub(ph).filter(|&y| y < self.h) else {
                        continue;
                    };
                    let position = (oy - out_rows.start) * ow;
                    if s == 1 {
                        visit(iy, ix, row, position + first_ox, last_ox - first_ox);
                    } else {
                        for (i, ox) in (first_ox..last_ox).enumerate() {
                            visit(iy, ix + i * s, row, position + ox, 1);
                        }
                    }
                }
            }
        }
    }

    /// Im2col of one band: `cols` becomes `(rows + 1, band positions)`, row-major, zeros where
    /// the kernel reaches into the padding and ones in the last row.
    fn unfold_band(&self, input: &[f32], layout: Strides, band: &Band, cols: &mut Vec<f32>) {
        let (rows, len) = (self.rows(), band.rows.len() * self.out_w());
        cols.clear();
        cols.resize(rows * len, 0.0);
        cols.resize((rows + 1) * len, 1.0);
        for ci in 0..self.c {
            let plane = layout.at(band.image, ci, 0);
            self.for_each_run(ci, band.rows.clone(), |iy, ix, row, position, run| {
                let (dst, src) = (row * len + position, plane + iy * layout.row + ix);
                cols[dst..dst + run].copy_from_slice(&input[src..src + run]);
            });
        }
    }

    /// The geometry whose convolution of the output gradient with the flipped, transposed kernel
    /// is this convolution's input gradient; only stride 1 with padding below the kernel has one.
    fn input_gradient(&self, c_out: usize) -> Option<Self> {
        let ((kh, kw), (ph, pw)) = (self.kernel, self.padding);
        (self.stride == 1 && ph < kh && pw < kw).then(|| Self {
            n: self.n,
            c: c_out,
            h: self.out_h(),
            w: self.out_w(),
            kernel: self.kernel,
            padding: (kh - 1 - ph, kw - 1 - pw),
            stride: 1,
        })
    }
}

/// A convolution with its layouts: input `(n, c, h, w)` read through `input`, output
/// `(n, c_out, out_h, out_w)` written through `output` into a tensor of `out_shape`.
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    pub geometry: Geometry,
    pub input: Order,
    pub output: Order,
    pub out_shape: Shape,
}

impl ConvSpec {
    fn input_strides(&self) -> Strides {
        let g = &self.geometry;
        self.input.strides((g.n, g.c, g.h, g.w))
    }

    fn output_strides(&self, c_out: usize) -> Strides {
        let g = &self.geometry;
        self.output.strides((g.n, c_out, g.out_h(), g.out_w()))
    }
}

/// A matrix in memory: element `(i, j)` at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct MatRef {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// The output buffer that the bands (or images) of one convolution write in disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every band writes only its own output elements (see the writers' SAFETY notes).
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}
#[allow(unsafe_code)]
unsafe impl Send for SharedOut {}

impl SharedOut {
    fn new(out: &mut [MaybeUninit<f32>]) -> Self {
        Self(out.as_mut_ptr().cast())
    }

    /// The element `offset` places in (a method, so closures capture the whole `Sync` value).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

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

/// `weights (c_out, rows + 1) * [im2col(input); ones]` written through `spec.output` into
/// `out`, band by band on candle's CPU threads.
#[allow(unsafe_code)]
fn conv_bands(spec: &ConvSpec, input: &[f32], weights: &[f32], out: &mut [MaybeUninit<f32>]) {
    let g = &spec.geometry;
    let k = g.rows() + 1;
    let c_out = weights.len() / k;
    let layout = spec.output_strides(c_out);
    assert_eq!(input.len(), g.in_len(), "conv input size");
    assert_eq!(out.len(), g.out_len(c_out), "conv output size");
    let shared = SharedOut::new(out);
    map_bands(
        spec,
        input,
        c_out,
        || (),
        |(), cols, len, first| {
            // SAFETY: this band writes `len` adjacent positions (its rows are adjacent in the
            // layout, `band_rows`) after `first` in each of its image's `c_out` channels: inside
            // `out`, which the layout maps one-to-one (its size asserted above), and written by no
            // other band. `weights` is `c_out x k`; `cols` is `k x len`.
            unsafe {
                gemm_here(
                    (c_out, len, k),
                    shared.at(first),
                    layout.channel,
                    false,
                    MatRef {
                        ptr: weights.as_ptr(),
                        rs: k,
                        cs: 1,
                    },
                    MatRef {
                        ptr: cols.as_ptr(),
                        rs: len,
                        cs: 1,
                    },
                );
            }
        },
    );
}

/// For every band of `spec`'s output (`c_out` channels): unfolds the band's columns from
/// `input` and calls `visit(state, cols, len, first)` with its `len` positions and the offset
/// of its first output. Ranges of bands run on candle's CPU threads, each with its own `state`
/// from `init`; the states come back in range order.
fn map_bands<S: Send>(
    spec: &ConvSpec,
    input: &[f32],
    c_out: usize,
    init: impl Fn() -> S + Sync,
    visit: impl Fn(&mut S, &[f32], usize, usize) + Sync,
) -> Vec<S> {
    let g = &spec.geometry;
    let (input_strides, layout) = (spec.input_strides(), spec.output_strides(c_out));
    map_ranges(g.band_count(layout), |bands| {
        let (mut state, mut cols) = (init(), Vec::new());
        for index in bands {
            let band = g.band(layout, index);
            g.unfold_band(input, input_strides, &band, &mut cols);
            let first = layout.at(band.image, 0, band.rows.start);
            visit(&mut state, &cols, band.rows.len() * g.out_w(), first);
        }
        state
    })
}

/// The input gradient's weights: `(c_out, c_in kh kw + 1)` -> `(c_in, c_out kh kw + 1)`, each
/// kernel transposed and flipped in both directions, with a zero bias column.
fn flipped_transposed(weights: &[f32], c_out: usize, g: &Geometry) -> Vec<f32> {
    let (c_in, taps) = (g.c, g.kernel.0 * g.kernel.1);
    let (k_in, k_out) = (c_in * taps + 1, c_out * taps + 1);
    let mut out = vec![0f32; c_in * k_out];
    for co in 0..c_out {
        for ci in 0..c_in {
            for t in 0..taps {
                out[ci * k_out + co * taps + taps - 1 - t] = weights[co * k_in + ci * taps + t];
            }
        }
    }
    out
}

/// `(x, [weight | bias] (c_out, rows + 1))` -> the convolution, laid out as its spec says.
/// The columns live only inside each call (recomputed for the weight gradient), so neither they
/// nor their gradient ever reach the autograd graph.
struct Conv(ConvSpec);
/// `(dy, [weight | bias])` -> `dx`.
struct ConvGradInput(ConvSpec);
/// `(x, dy)` -> `d[weight | bias] (c_out, rows + 1)`, summed over bands.
struct ConvGradWeight(ConvSpec);

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv-bands"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = &self.0;
        let x = contiguous(x, x_layout, self.name())?;
        let w = contiguous(w, w_layout, self.name())?;
        let y = written_by(spec.out_shape.elem_count(), |y| conv_bands(spec, x, w, y));
        Ok((CpuStorage::F32(y), spec.out_shape.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = grad_res.contiguous()?;
        // In the layout `x` has, under the geometry's `(n, c, h, w)` shape: give it `x`'s.
        let dx = dy
            .apply_op2_no_bwd(w, &ConvGradInput(self.0.clone()))?
            .reshape(x.shape())?;
        let dw = x.apply_op2_no_bwd(&dy, &ConvGradWeight(self.0.clone()))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for ConvGradInput {
    fn name(&self) -> &'static str {
        "conv-bands-grad-input"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dy_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = &self.0;
        let g = &spec.geometry;
        let dy = contiguous(dy, dy_layout, self.name())?;
        let w = contiguous(w, w_layout, self.name())?;
        let c_out = w_layout.dims()[0];
        let x_shape: Shape = (g.n, g.c, g.h, g.w).into();
        let dx = match g.input_gradient(c_out) {
            Some(adjoint) => {
                let adjoint = ConvSpec {
                    geometry: adjoint,
                    input: spec.output,
                    output: spec.input,
                    out_shape: x_shape.clone(),
                };
                let flipped = flipped_transposed(w, c_out, g);
                written_by(g.in_len(), |dx| conv_bands(&adjoint, dy, &flipped, dx))
            }
            None => written_by(g.in_len(), |dx| fold_gradient(spec, dy, w, c_out, dx)),
        };
        Ok((CpuStorage::F32(dx), x_shape))
    }
}

/// The input gradient of a strided convolution, image by image: the column gradient
/// `weight^T dy` of one image, folded back onto its pixels (summing overlaps).
#[allow(unsafe_code)]
fn fold_gradient(
    spec: &ConvSpec,
    dy: &[f32],
    w: &[f32],
    c_out: usize,
    dx: &mut [MaybeUninit<f32>],
) {
    let g = &spec.geometry;
    let (x_layout, y_layout) = (spec.input_strides(), spec.output_strides(c_out));
    let (rows, out_hw) = (g.rows(), g.out_h() * g.out_w());
    assert_eq!(
        y_layout.row,
        g.out_w(),
        "a strided conv's output rows must be adjacent"
    );
    assert_eq!(dy.len(), g.out_len(c_out), "conv output gradient size");
    dx.fill(MaybeUninit::new(0.0));
    let shared = SharedOut::new(dx);
    map_ranges(g.n, |images| {
        let mut dcols = vec![0f32; rows * out_hw];
        for image in images {
            // SAFETY: `w` is `c_out x (rows + 1)`, read as its transpose without the bias
            // column; the image's `dy` is `out_hw` adjacent positions in each of `c_out`
            // channels inside `dy` (asserted above); `dcols` is this range's own.
            unsafe {
                gemm_here(
                    (rows, out_hw, c_out),
                    dcols.as_mut_ptr(),
                    out_hw,
                    false,
                    MatRef {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: rows + 1,
                    },
                    MatRef {
                        ptr: dy.as_ptr().add(y_layout.at(image, 0, 0)),
                        rs: y_layout.channel,
                        cs: 1,
                    },
                );
            }
            for ci in 0..g.c {
                let plane = x_layout.at(image, ci, 0);
                g.for_each_run(ci, 0..g.out_h(), |iy, ix, row, position, run| {
                    let dst = plane + iy * x_layout.row + ix;
                    // SAFETY: the run's `run` pixels of this image lie inside `dx` (the layout
                    // fills `dx` exactly); no other range folds this image.
                    let dst = unsafe { std::slice::from_raw_parts_mut(shared.at(dst), run) };
                    let src = &dcols[row * out_hw + position..][..run];
                    for (acc, &v) in dst.iter_mut().zip(src) {
                        *acc += v;
                    }
                });
            }
        }
    });
}

impl CustomOp2 for ConvGradWeight {
    fn name(&self) -> &'static str {
        "conv-bands-grad-weight"
    }

    #[allow(unsafe_code)]
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = &self.0;
        let g = &spec.geometry;
        let x = contiguous(x, x_layout, self.name())?;
        let dy = contiguous(dy, dy_layout, self.name())?;
        let (k, ow) = (g.rows() + 1, g.out_w());
        let c_out = dy.len() / (g.n * g.out_h() * ow).max(1);
        assert_eq!(x.len(), g.in_len(), "conv input size");
        assert_eq!(dy.len(), g.out_len(c_out), "conv output gradient size");
        let layout = spec.output_strides(c_out);
        // `d[w | b]^T (k, c_out)` per range of bands: a GEMM writing the transpose packs `dy`'s
        // band, `k / c_out` times smaller than the columns (nine for a 3x3 kernel between equal
        // widths), where one writing `d[w | b]` would pack the columns.
        let partials = map_bands(
            spec,
            x,
            c_out,
            || vec![0f32; k * c_out],
            |dw_t, cols, len, first| {
                // SAFETY: `cols` is `k x len`; the band of `dy` is `len` adjacent positions
                // after `first` in each of `c_out` channels, inside `dy` (asserted above);
                // `dw_t` is `k x c_out` and this range's own.
                unsafe {
                    gemm_here(
                        (k, c_out, len),
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
                            cs: layout.channel,
                        },
                    );
                }
            },
        );
        let mut sum = vec![0f32; k * c_out];
        for partial in &partials {
            for (s, p) in sum.iter_mut().zip(partial) {
                *s += p;
            }
        }
        let mut dw = vec![0f32; c_out * k];
        for (r, row) in sum.chunks_exact(c_out).enumerate() {
            for (co, &v) in row.iter().enumerate() {
                dw[co * k + r] = v;
            }
        }
        Ok((CpuStorage::F32(dw), (c_out, k).into()))
    }
}

/// The convolution `spec` of `x` with `weight` (`(c_out, c, kh, kw)`, or `(c_out, c, kh)` when
/// `kw` is 1) plus `bias` (`(c_out,)`), on the CPU in f32.
pub(crate) fn conv(x: &Tensor, weight: &Tensor, bias: &Tensor, spec: ConvSpec) -> Result<Tensor> {
    let g = &spec.geometry;
    let c_out = weight.dim(0)?;
    if x.elem_count() != g.in_len() || spec.out_shape.elem_count() != g.out_len(c_out) {
        candle_core::bail!(
            "conv: input {:?} or output {:?} does not fit {g:?} with {c_out} output channels",
            x.shape(),
            spec.out_shape
        );
    }
    let weights = Tensor::cat(
        &[
            weight.reshape((c_out, g.rows()))?,
            bias.reshape((c_out, 1))?,
        ],
        1,
    )?;
    x.contiguous()?.apply_op2(&weights, Conv(spec))
}

/// `conv2d(x, weight, padding, stride) + bias` with a channel-major result, `(c_out, n, out_h,
/// out_w)`, from pad, narrow, stack and one matmul, so that its gradients are the same few ops:
/// im2col for devices other than the CPU. On CUDA this replaces candle's conv2d, whose input
/// gradient goes through a direct (unblocked) transposed-convolution kernel that dominated a
/// training step. `None` when a strided window does not tile the padded input (odd sizes): the
/// caller falls back.
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{ConvSpec, Geometry, Order, conv, conv2d_unfolded};

    /// (kernel, stride, padding, size) of the convolutions compared with candle's. The last two
    /// split each image into several bands.
    const GEOMETRIES: [(usize, usize, usize, usize); 8] = [
        (3, 1, 1, 7),
        (3, 2, 1, 8),
        (3, 2, 1, 7),
        (1, 1, 0, 5),
        (3, 1, 1, 13),
        (3, 1, 0, 6),
        (3, 1, 1, 72),
        (3, 2, 1, 150),
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

    /// The geometry of a `GEOMETRIES` entry over two 3-channel images.
    fn square(kernel: usize, stride: usize, padding: usize, size: usize) -> Geometry {
        Geometry {
            n: 2,
            c: 3,
            h: size,
            w: size,
            kernel: (kernel, kernel),
            padding: (padding, padding),
            stride,
        }
    }

    #[test]
    fn multi_band_geometries_do_split_images() {
        for &(kernel, stride, padding, size) in &GEOMETRIES[6..] {
            let g = square(kernel, stride, padding, size);
            let out = Order::BatchMajor.strides((2, 4, g.out_h(), g.out_w()));
            let rows = g.band_rows(out);
            assert!(
                rows < g.out_h(),
                "k{kernel} n{size}: one band of {rows} rows"
            );
        }
    }

    /// The banded kernel (f32), writing either layout, against candle's conv2d (f64).
    #[test]
    fn the_banded_kernel_matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        for (kernel, stride, padding, size) in GEOMETRIES {
            for channel_major in [false, true] {
                let (x, w, b) = conv_vars(kernel, size)?;
                let f32 = |v: &Var| v.as_tensor().to_dtype(DType::F32);
                let geometry = square(kernel, stride, padding, size);
                let (oh, ow) = (geometry.out_h(), geometry.out_w());
                let (output, out_shape) = if channel_major {
                    (Order::ChannelMajor, (4, 2, oh, ow))
                } else {
                    (Order::BatchMajor, (2, 4, oh, ow))
                };
                let spec = ConvSpec {
                    geometry,
                    input: Order::BatchMajor,
                    output,
                    out_shape: out_shape.into(),
                };
                let ours = conv(&f32(&x)?, &f32(&w)?, &f32(&b)?, spec)?;
                let ours = if channel_major {
                    ours.transpose(0, 1)?
                } else {
                    ours
                };
                check_against_candle(
                    &ours.to_dtype(DType::F64)?,
                    (&x, &w, &b),
                    (kernel, stride, padding, size),
                    1e-4,
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn the_tensor_op_im2col_matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        for (kernel, stride, padding, size) in GEOMETRIES {
            let (x, w, b) = conv_vars(kernel, size)?;
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let Some(ours) = conv2d_unfolded(xt, wt, bt, padding, stride)? else {
                assert!(size % 2 == 1 && stride == 2, "declined k{kernel} n{size}");
                continue;
            };
            let ours = ours.transpose(0, 1)?;
            check_against_candle(&ours, (&x, &w, &b), (kernel, stride, padding, size), 1e-10)?;
        }
        Ok(())
    }

    fn check_against_candle(
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
        // candle's max skips NaN; the sum does not (a kernel that misses an output leaves
        // whatever was in memory there).
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f64> {
            let d = (a - b)?.abs()?;
            let finite = d.sum_all()?.to_scalar::<f64>()?.is_finite();
            Ok(if finite {
                d.max_all()?.to_scalar::<f64>()?
            } else {
                f64::INFINITY
            })
        };
        // Relative to the largest value: the large images' bias gradients sum ~45,000 terms.
        let scale = |t: &Tensor| -> candle_core::Result<f64> {
            Ok(t.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0))
        };
        let geometry = format!("k{kernel} s{stride} p{padding} n{size}");
        assert!(
            diff(ours, &theirs)? < tolerance * scale(&theirs)?,
            "forward {geometry}"
        );
        for (name, var) in [("x", x), ("w", w), ("b", b)] {
            let (Some(a), Some(b)) = (ours_grads.get(var), theirs_grads.get(var)) else {
                panic!("missing gradient of {name}");
            };
            assert!(
                diff(a, b)? < tolerance * scale(b)?,
                "gradient of {name}, {geometry}: {}",
                diff(a, b)?
            );
        }
        Ok(())
    }
}
