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
    /// A previous plan `(b, 3, f, h, w)` and the real start frame `(b, 3, h, w)` it was made
    /// from (refinement). Networks with start-frame channels see both; the reference layout
    /// sees the plan only, as [`Self::Video`].
    Refinement { previous: Tensor, start: Tensor },
}

fn repeated(image: &Tensor, frames: usize) -> Result<Tensor> {
    let (b, c, h, w) = image.dims4()?;
    image
        .unsqueeze(2)?
        .broadcast_as((b, c, frames, h, w))?
        .contiguous()
}

impl Conditioning {
    /// The conditioning as a `(b, 3, frames, h, w)` video.
    pub fn video(&self, frames: usize) -> Result<Tensor> {
        match self {
            Self::Image(image) => repeated(image, frames),
            Self::Video(video)
            | Self::Refinement {
                previous: video, ..
            } => {
                let found = video.dim(2)?;
                if found != frames {
                    candle_core::bail!("conditioning video has {found} frames, expected {frames}");
                }
                Ok(video.clone())
            }
        }
    }

    /// The real start frame repeated as a `(b, 3, frames, h, w)` video (for networks with
    /// start-frame channels).
    pub fn start_video(&self, frames: usize) -> Result<Tensor> {
        match self {
            Self::Image(start) | Self::Refinement { start, .. } => repeated(start, frames),
            Self::Video(_) => {
                candle_core::bail!(
                    "this network also takes the start frame: condition on Refinement, not Video"
                )
            }
        }
    }

    /// The batch size.
    pub fn batch_size(&self) -> Result<usize> {
        match self {
            Self::Image(t) | Self::Video(t) | Self::Refinement { previous: t, .. } => t.dim(0),
        }
    }
}

/// The U-Net input on channels: `[noisy, cond]` (`in_channels` 6, the reference layout, in the
/// order used at inference; the public VideoAgent trainer's swapped order is a known quirk not
/// copied here), or `[noisy, cond, start frame]` (`in_channels` 9: refinement also sees the
/// real start frame, not only the previous plan made from it).
pub fn unet_input(noisy: &Tensor, cond: &Conditioning, in_channels: usize) -> Result<Tensor> {
    let frames = noisy.dim(2)?;
    let cond_video = cond.video(frames)?;
    let base = noisy.dim(1)? + cond_video.dim(1)?;
    match in_channels.checked_sub(base) {
        Some(0) => Tensor::cat(&[noisy, &cond_video], 1),
        Some(3) => Tensor::cat(&[noisy, &cond_video, &cond.start_video(frames)?], 1),
        _ => candle_core::bail!(
            "a network of {in_channels} input channels takes [noisy, conditioning] ({base}) or also the start frame ({})",
            base + 3
        ),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    }

    #[test]
    fn the_input_holds_noisy_then_conditioning_then_the_start_frame_if_asked() -> Result<()> {
        let device = Device::Cpu;
        let (frames, side) = (2, 2);
        let noisy = Tensor::full(-1f32, (1, 3, frames, side, side), &device)?;
        let previous = Tensor::full(0.25f32, (1, 3, frames, side, side), &device)?;
        let start = Tensor::full(0.75f32, (1, 3, side, side), &device)?;
        let refinement = Conditioning::Refinement {
            previous: previous.clone(),
            start: start.clone(),
        };
        let channel = |x: &Tensor, c: usize| x.narrow(1, c, 1).map(|t| values(&t));
        let reference = unet_input(&noisy, &refinement, 6)?;
        assert_eq!(reference.dims(), &[1, 6, frames, side, side]);
        assert!(channel(&reference, 3)?.iter().all(|&v| v == 0.25));

        let wide = unet_input(&noisy, &refinement, 9)?;
        assert_eq!(wide.dims(), &[1, 9, frames, side, side]);
        assert!(channel(&wide, 0)?.iter().all(|&v| v == -1.0));
        assert!(channel(&wide, 5)?.iter().all(|&v| v == 0.25));
        assert!(channel(&wide, 8)?.iter().all(|&v| v == 0.75));

        let first_plan = unet_input(&noisy, &Conditioning::Image(start), 9)?;
        assert!(channel(&first_plan, 4)?.iter().all(|&v| v == 0.75));
        assert!(channel(&first_plan, 7)?.iter().all(|&v| v == 0.75));

        assert!(unet_input(&noisy, &Conditioning::Video(previous.clone()), 9).is_err());
        assert!(unet_input(&noisy, &Conditioning::Video(previous), 7).is_err());
        Ok(())
    }
}
