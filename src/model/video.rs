//! Video tensor layouts. The model works on `(b, 3, f, h, w)` (channels first, frames on
//! axis 2); the reference diffusion code and the fixtures flatten frames into channels,
//! `(b, 3f, h, w)` with channel = frame * 3 + rgb; datasets often hold `(b, f, 3, h, w)`.

use candle_core::{Result, Tensor};

/// `(b, 3f, h, w)` (channel = frame * 3 + rgb) -> `(b, 3, f, h, w)`.
pub fn from_channel_frames(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if !c.is_multiple_of(3) {
        candle_core::bail!("expected 3 * frames channels, got {c}");
    }
    x.reshape((b, c / 3, 3, h, w))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// `(b, 3, f, h, w)` -> `(b, 3f, h, w)` (channel = frame * 3 + rgb).
pub fn to_channel_frames(x: &Tensor) -> Result<Tensor> {
    let (b, c, f, h, w) = x.dims5()?;
    x.permute((0, 2, 1, 3, 4))?.reshape((b, f * c, h, w))
}

/// `(b, f, 3, h, w)` -> `(b, 3, f, h, w)`.
pub fn from_frames_first(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// What the generated frames are conditioned on, in [0, 1] (not normalised, as upstream).
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// A start frame `(b, 3, h, w)`, repeated over every generated frame (first plan).
    Image(Tensor),
    /// A frame-aligned video `(b, 3, f, h, w)`, e.g. the previous plan (refinement).
    Video(Tensor),
}

impl Conditioning {
    /// The conditioning as a `(b, 3, frames, h, w)` video.
    pub fn video(&self, frames: usize) -> Result<Tensor> {
        match self {
            Self::Image(image) => {
                let (b, c, h, w) = image.dims4()?;
                image
                    .unsqueeze(2)?
                    .broadcast_as((b, c, frames, h, w))?
                    .contiguous()
            }
            Self::Video(video) => {
                let found = video.dim(2)?;
                if found != frames {
                    candle_core::bail!("conditioning video has {found} frames, expected {frames}");
                }
                Ok(video.clone())
            }
        }
    }

    /// The batch size.
    pub fn batch_size(&self) -> Result<usize> {
        match self {
            Self::Image(t) | Self::Video(t) => t.dim(0),
        }
    }
}

/// The U-Net input `[noisy, cond]` on channels, `(b, 6, f, h, w)` (the order used at inference;
/// the public VideoAgent trainer's swapped order is a known quirk not copied here).
pub fn unet_input(noisy: &Tensor, cond: &Conditioning) -> Result<Tensor> {
    let frames = noisy.dim(2)?;
    Tensor::cat(&[noisy, &cond.video(frames)?], 1)
}
