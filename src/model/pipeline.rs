//! A complete video model as shipped: U-Net + text encoder + diffusion schedule, loaded from a
//! model folder, with the one call the rest of the library needs: make a plan.
//!
//! ```text
//! <model>/config.json                ModelConfig (U-Net and text encoder shapes, frame size)
//! <model>/model.safetensors          U-Net weights, reference names (`unet.input_blocks...`)
//! <model>/text_encoder.safetensors   the built-in text encoder (`text_encoder.embedding.weight`)
//! ```
//!
//! A model whose `config.json` says `"text_encoder": {"kind": "clip", "path": DIR}` encodes
//! text with the frozen CLIP folder `DIR` instead (see [`super::clip_text`]) and has no use for
//! `text_encoder.safetensors`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::precision::Precision;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::clip_text::ClipTextEncoder;
use super::text::{BuiltinTextConfig, BuiltinTextEncoder, TextEncoder, TextEncoderKind};
use super::{
    Checkpoint, Conditioning, Diffusion, ModelError, Prompt, SampleConfig, SampleOutcome,
    SampleStep, UNet, UNetConfig,
};
use crate::env::Rgb8Image;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TEXT_FILE: &str = "text_encoder.safetensors";

/// Hyperparameters of a shipped model (weights are stored apart).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub unet: UNetConfig,
    /// Shape of the built-in text encoder (used when `text_encoder` is built-in).
    pub text: BuiltinTextConfig,
    #[serde(default, skip_serializing_if = "TextEncoderKind::is_builtin")]
    pub text_encoder: TextEncoderKind,
    /// Diffusion training steps T (cosine schedule).
    pub timesteps: usize,
    /// The world whose frames it was trained on.
    pub world: String,
}

impl ModelConfig {
    pub fn new(unet: UNetConfig, world: &str) -> Self {
        let text = BuiltinTextConfig::new(unet.task_token_channels);
        Self {
            unet,
            text,
            text_encoder: TextEncoderKind::Builtin,
            timesteps: 100,
            world: world.to_owned(),
        }
    }

    /// Frame side the network works at (frames are resized to it).
    pub fn frame_size(&self) -> usize {
        self.unet.image_size.0
    }

    /// Checks what the weights cannot: a config read from a file could ask for a network that
    /// panics while being built (no attention heads) or for buffers sized by absurd numbers at
    /// the first plan (frame side, frame count, diffusion steps, text length). The bounds are
    /// far above any model of the paper; every value a shape depends on must be positive.
    pub fn check(&self) -> Result<(), String> {
        let u = &self.unet;
        let levels = u.channel_mult.len();
        let (h, w) = u.image_size;
        let positive = [
            ("in_channels", u.in_channels),
            ("out_channels", u.out_channels),
            ("model_channels", u.model_channels),
            ("num_res_blocks", u.num_res_blocks),
            ("num_head_channels", u.num_head_channels),
            ("task_token_channels", u.task_token_channels),
            ("frames", u.frames),
            ("timesteps", self.timesteps),
            ("text.buckets", self.text.buckets),
            ("text.dim", self.text.dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        let bounded = [
            ("in_channels", u.in_channels, 64),
            ("out_channels", u.out_channels, 64),
            ("model_channels", u.model_channels, 4096),
            ("num_res_blocks", u.num_res_blocks, 16),
            ("task_token_channels", u.task_token_channels, 4096),
            ("frames", u.frames, 64),
            ("timesteps", self.timesteps, 10_000),
            ("text.buckets", self.text.buckets, 1 << 20),
            ("text.max_tokens", self.text.max_tokens, 1024),
            ("text.dim", self.text.dim, 4096),
        ];
        if let Some((name, v, max)) = bounded.iter().find(|(_, v, max)| v > max) {
            return Err(format!("{name} is {v}, more than {max}"));
        }
        if ![u.out_channels + 3, u.out_channels + 6].contains(&u.in_channels) {
            return Err(format!(
                "in_channels {} must be out_channels + 3 (noisy frames and conditioning) or + 6 (and the start frame)",
                u.in_channels
            ));
        }
        if !(1..=8).contains(&levels) || u.channel_mult.iter().any(|&m| !(1..=64).contains(&m)) {
            return Err(format!(
                "channel_mult {:?} must have 1 to 8 levels of 1 to 64",
                u.channel_mult
            ));
        }
        let step = 1 << (levels - 1);
        if h != w || !(8..=1024).contains(&h) || !h.is_multiple_of(step) {
            return Err(format!(
                "image_size {h}x{w} must be square, 8 to 1024 pixels and a multiple of {step}"
            ));
        }
        if u.attention_resolutions
            .iter()
            .any(|&r| !r.is_power_of_two() || r > 1024)
        {
            return Err(format!(
                "attention_resolutions {:?} must be powers of two up to 1024",
                u.attention_resolutions
            ));
        }
        Ok(())
    }
}

/// U-Net, text encoder and schedule, ready to sample.
pub struct VideoModel {
    pub config: ModelConfig,
    pub unet: UNet,
    pub text: Box<dyn TextEncoder>,
    pub diffusion: Diffusion,
    pub device: Device,
    /// Where it was loaded from (names the model in plan records).
    pub source: PathBuf,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        source,
        path: path.to_owned(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Format {
        reason: format!("config: {e}"),
        path: path.to_owned(),
    })
}

impl VideoModel {
    /// Builds the networks over `vb` (`unet.*` and `text_encoder.*`), e.g. a VarMap to train.
    /// A CLIP encoder is loaded from its folder instead (relative to the working folder), so
    /// it stays frozen.
    pub fn build(
        config: ModelConfig,
        vb: &VarBuilder,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let unet = UNet::new(&config.unet, vb.pp("unet"))?;
        let text: Box<dyn TextEncoder> = match &config.text_encoder {
            TextEncoderKind::Builtin => Box::new(BuiltinTextEncoder::new(
                &config.text,
                vb.pp("text_encoder").set_dtype(DType::F32),
            )?),
            TextEncoderKind::Clip { path } => Box::new(load_clip(path, &config, device)?),
        };
        Ok(Self::assemble(config, unet, text, device, PathBuf::new()))
    }

    fn assemble(
        config: ModelConfig,
        unet: UNet,
        text: Box<dyn TextEncoder>,
        device: &Device,
        source: PathBuf,
    ) -> Self {
        Self {
            diffusion: Diffusion::cosine(config.timesteps),
            config,
            unet,
            text,
            device: device.clone(),
            source,
        }
    }

    /// Loads a model folder (see the module docs), validating every tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::load_as(dir, device, Precision::F32)
    }

    /// [`VideoModel::load`] with the U-Net in `precision` (the text encoder stays f32).
    pub fn load_as(dir: &Path, device: &Device, precision: Precision) -> Result<Self, ModelError> {
        let config_path = dir.join(CONFIG_FILE);
        let config: ModelConfig = read_json(&config_path)?;
        config.check().map_err(|reason| ModelError::Format {
            reason: format!("config: {reason}"),
            path: config_path,
        })?;
        let unet = Checkpoint::read(dir.join(WEIGHTS_FILE))?.into_unet_as(
            &config.unet,
            device,
            precision.dtype(),
        )?;
        let text: Box<dyn TextEncoder> = match &config.text_encoder {
            TextEncoderKind::Builtin => Box::new(load_builtin_text(dir, &config, device)?),
            TextEncoderKind::Clip { path } => {
                Box::new(load_clip(&dir.join(path), &config, device)?)
            }
        };
        Ok(Self::assemble(config, unet, text, device, dir.to_owned()))
    }

    /// Frames as a `(b, 3, h, w)` tensor in [0, 1], resized to the model's frame size.
    pub fn frames_to_tensor(&self, frames: &[&Rgb8Image]) -> candle_core::Result<Tensor> {
        let size = self.config.frame_size();
        let data: Vec<f32> = frames
            .iter()
            .flat_map(|f| planar_unit(&resize(f, size as u32)))
            .collect();
        Tensor::from_vec(data, (frames.len(), 3, size, size), &self.device)
    }

    /// Generates the 7 frames that follow `first` under `instruction` (refinement passes the
    /// previous plan made from `first` as `previous`). Same seed, same plan. `None` if
    /// `on_step` cancelled.
    pub fn plan(
        &self,
        first: &Rgb8Image,
        previous: Option<&[Rgb8Image]>,
        instruction: &str,
        sample: &SampleConfig,
        seed: u64,
        on_step: impl FnMut(&SampleStep) -> ControlFlow<()>,
    ) -> candle_core::Result<Option<Vec<Rgb8Image>>> {
        let frames = self.config.unet.frames;
        let cond = match previous {
            None => Conditioning::Image(self.frames_to_tensor(&[first])?),
            Some(prev) => {
                let refs: Vec<&Rgb8Image> = prev.iter().collect();
                let video = self.frames_to_tensor(&refs)?; // (f, 3, h, w)
                Conditioning::Refinement {
                    previous: video.permute((1, 0, 2, 3))?.unsqueeze(0)?.contiguous()?,
                    start: self.frames_to_tensor(&[first])?,
                }
            }
        };
        let prompt = Prompt {
            cond,
            task_embed: self.text.encode(&[instruction], &self.device)?,
        };
        match self
            .diffusion
            .sample_seeded(&self.unet, &prompt, frames, sample, seed, on_step)?
        {
            SampleOutcome::Cancelled { .. } => Ok(None),
            SampleOutcome::Finished(video) => Ok(Some(video_to_frames(&video)?)),
        }
    }
}

/// The built-in text encoder of the model folder `dir`.
fn load_builtin_text(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<BuiltinTextEncoder, ModelError> {
    let text_path = dir.join(TEXT_FILE);
    let tensors =
        candle_core::safetensors::load(&text_path, device).map_err(|e| ModelError::Format {
            reason: format!("safetensors: {e}"),
            path: text_path.clone(),
        })?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    BuiltinTextEncoder::new(&config.text, vb.pp("text_encoder")).map_err(|e| ModelError::Format {
        reason: format!("text encoder: {e}"),
        path: text_path,
    })
}

/// The CLIP folder `dir`, checked against the width of the U-Net's text tokens.
fn load_clip(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<ClipTextEncoder, ModelError> {
    let clip = ClipTextEncoder::load(dir, device)?;
    if clip.dim() != config.unet.task_token_channels {
        return Err(ModelError::TextEncoder {
            reason: format!(
                "CLIP tokens are {} wide, the U-Net takes {} (task_token_channels)",
                clip.dim(),
                config.unet.task_token_channels
            ),
            path: dir.to_owned(),
        });
    }
    Ok(clip)
}

/// A frame resized to `size` x `size` (area-like filter when shrinking).
pub fn resize(frame: &Rgb8Image, size: u32) -> Rgb8Image {
    if frame.width == size && frame.height == size {
        return frame.clone();
    }
    let img = image::imageops::resize(
        &frame.to_image(),
        size,
        size,
        image::imageops::FilterType::Triangle,
    );
    Rgb8Image {
        width: size,
        height: size,
        pixels: img.into_raw(),
    }
}

/// HWC bytes -> CHW floats in [0, 1].
pub fn planar_unit(frame: &Rgb8Image) -> Vec<f32> {
    let n = (frame.width * frame.height) as usize;
    (0..3)
        .flat_map(|c| (0..n).map(move |i| f32::from(frame.pixels[i * 3 + c]) / 255.0))
        .collect()
}

/// The first video of a `(b, 3, f, h, w)` batch in [0, 1] as frames (values clamped).
pub fn video_to_frames(video: &Tensor) -> candle_core::Result<Vec<Rgb8Image>> {
    let (_, _, f, h, w) = video.dims5()?;
    let v = video
        .get(0)?
        .clamp(0f32, 1f32)?
        .permute((1, 2, 3, 0))?
        .contiguous()?; // (f, h, w, 3)
    let data = v.flatten_all()?.to_vec1::<f32>()?;
    Ok(data
        .chunks_exact(h * w * 3)
        .take(f)
        .map(|chunk| Rgb8Image {
            width: w as u32,
            height: h as u32,
            pixels: chunk.iter().map(|x| (x * 255.0).round() as u8).collect(),
        })
        .collect())
}

/// Name of the shipped CPU default model's folder under `sample_data/models/`.
pub const DEFAULT_MODEL: &str = "tabletop-cpu";

/// Where the shipped default model lives: `$VIDEOAGENT_MODEL`, else `sample_data/models/…`
/// under the working folder, else under the source tree this binary was built from.
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VIDEOAGENT_MODEL") {
        return PathBuf::from(p);
    }
    let rel = Path::new("sample_data/models").join(DEFAULT_MODEL);
    if rel.join(CONFIG_FILE).exists() {
        return rel;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use candle_nn::VarMap;

    use super::*;
    use crate::model::clip_text::tests::write_tiny_clip;

    fn clip_config(task_token_channels: usize) -> ModelConfig {
        let unet = UNetConfig {
            task_token_channels,
            ..UNetConfig::tiny()
        };
        ModelConfig {
            text_encoder: TextEncoderKind::Clip {
                path: PathBuf::from("clip"),
            },
            ..ModelConfig::new(unet, "tabletop")
        }
    }

    /// A model folder whose config points at a CLIP folder inside it, with random U-Net
    /// weights and no `text_encoder.safetensors`.
    fn write_clip_model(dir: &Path, config: &ModelConfig, clip_width: usize) {
        write_clip_folder(dir, clip_width);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        UNet::new(&config.unet, vb.pp("unet")).expect("random U-Net");
        varmap.save(dir.join(WEIGHTS_FILE)).expect("weights");
        let json = serde_json::to_string(config).expect("config json");
        std::fs::write(dir.join(CONFIG_FILE), json).expect("config");
    }

    fn write_clip_folder(dir: &Path, width: usize) {
        write_tiny_clip(&dir.join("clip"), width);
    }

    #[test]
    fn configs_without_a_text_encoder_stay_builtin_and_unchanged() {
        let config = ModelConfig::new(UNetConfig::tiny(), "tabletop");
        let json = serde_json::to_value(&config).expect("json");
        assert!(
            json.get("text_encoder").is_none(),
            "old files keep their shape"
        );
        let back: ModelConfig = serde_json::from_value(json).expect("back");
        assert_eq!(back.text_encoder, TextEncoderKind::Builtin);

        let clip = clip_config(16);
        let json = serde_json::to_value(&clip).expect("json");
        assert_eq!(
            json["text_encoder"],
            serde_json::json!({"kind": "clip", "path": "clip"})
        );
    }

    #[test]
    fn a_model_folder_can_pick_clip_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = clip_config(16);
        write_clip_model(dir.path(), &config, 16);
        let model = VideoModel::load(dir.path(), &Device::Cpu).expect("loads with CLIP");
        assert_eq!(model.text.dim(), 16);
        let tokens = model
            .text
            .encode(&["push the block"], &Device::Cpu)
            .expect("encodes");
        assert_eq!(tokens.dims(), &[1, 5, 16]);
        let first = Rgb8Image {
            width: 8,
            height: 8,
            pixels: vec![128; 8 * 8 * 3],
        };
        let plan = model
            .plan(
                &first,
                None,
                "push the block",
                &SampleConfig::ddim(2),
                7,
                |_| ControlFlow::Continue(()),
            )
            .expect("samples")
            .expect("not cancelled");
        assert_eq!(plan.len(), config.unet.frames);
    }

    #[test]
    fn clip_tokens_of_the_wrong_width_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = clip_config(16);
        write_clip_model(dir.path(), &config, 8);
        let message = VideoModel::load(dir.path(), &Device::Cpu)
            .err()
            .expect("width mismatch")
            .to_string();
        assert!(
            message.contains("8 wide") && message.contains("takes 16"),
            "{message}"
        );
    }
}
