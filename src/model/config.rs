//! Hyperparameters of the video U-Net, kept apart from its weights.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// Number of frames a plan generates after the start frame (AVDC / VideoAgent: 8-frame plans).
pub const DEFAULT_FRAMES: usize = 7;

/// The `UNetModel` constructor arguments that change the network (the reference's
/// `dims=3, task_tokens=True, dropout=0, conv_resample=True` are fixed here).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UNetConfig {
    /// (height, width) of each frame.
    pub image_size: (usize, usize),
    /// Input channels per frame: noisy frame (3) + conditioning frame (3) as the reference, or
    /// 9 with the real start frame as well (see [`super::video::unet_input`]).
    pub in_channels: usize,
    /// Output channels per frame.
    pub out_channels: usize,
    /// Channels of the first level; the time embedding has 4x this.
    pub model_channels: usize,
    /// Residual blocks per level in the encoder (the decoder has one more).
    pub num_res_blocks: usize,
    /// Down-sampling factors (1, 2, 4, ...) whose levels get spatial self-attention.
    pub attention_resolutions: Vec<usize>,
    /// Channel multiplier of each level.
    pub channel_mult: Vec<usize>,
    /// Channels per attention head.
    pub num_head_channels: usize,
    /// Width of the text tokens fed to the Perceiver resampler.
    pub task_token_channels: usize,
    /// Frames generated per sample; the network itself accepts any frame count.
    pub frames: usize,
}

impl UNetConfig {
    /// Names accepted by [`UNetConfig::by_name`].
    pub const PRESETS: [&'static str; 4] = ["metaworld", "ithor", "tabletop", "tabletop-gpu"];

    /// The MetaWorld network of the paper (128x128, ~200M parameters).
    pub fn metaworld() -> Self {
        Self {
            image_size: (128, 128),
            in_channels: 6,
            out_channels: 3,
            model_channels: 128,
            num_res_blocks: 2,
            attention_resolutions: vec![8, 16],
            channel_mult: vec![1, 2, 3, 4, 5],
            num_head_channels: 32,
            task_token_channels: 512,
            frames: DEFAULT_FRAMES,
        }
    }

    /// The iTHOR network of the paper (64x64).
    pub fn ithor() -> Self {
        Self {
            image_size: (64, 64),
            model_channels: 128,
            num_res_blocks: 3,
            attention_resolutions: vec![4, 8],
            channel_mult: vec![1, 2, 4],
            ..Self::metaworld()
        }
    }

    /// A small network that trains on two CPU cores (the 3.8M-parameter probe of the notes).
    pub fn tabletop() -> Self {
        Self {
            image_size: (32, 32),
            model_channels: 32,
            num_res_blocks: 1,
            attention_resolutions: vec![2, 4],
            channel_mult: vec![1, 2, 4],
            num_head_channels: 32,
            task_token_channels: 64,
            ..Self::metaworld()
        }
    }

    /// The embedded world at 64x64 for a GPU: one level deeper and twice the residual blocks
    /// of [`UNetConfig::tabletop`], attention only at the coarse levels, small enough to ship.
    pub fn tabletop_gpu() -> Self {
        Self {
            image_size: (64, 64),
            num_res_blocks: 2,
            attention_resolutions: vec![4, 8],
            channel_mult: vec![1, 2, 4, 4],
            ..Self::tabletop()
        }
    }

    /// Looks a preset up by name.
    pub fn by_name(name: &str) -> Result<Self, ModelError> {
        match name {
            "metaworld" => Ok(Self::metaworld()),
            "ithor" => Ok(Self::ithor()),
            "tabletop" => Ok(Self::tabletop()),
            "tabletop-gpu" => Ok(Self::tabletop_gpu()),
            _ => Err(ModelError::UnknownPreset {
                name: name.to_string(),
                valid: Self::PRESETS.join(", "),
            }),
        }
    }

    /// Width of the time (and task) embedding.
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// Derives the config from a state_dict's tensor shapes (names without any `unet.` prefix).
    /// Head width and frame count leave no trace in the shapes, so they come from the caller
    /// (`frames` is set to [`DEFAULT_FRAMES`]).
    pub fn infer_from_tensors(
        shapes: &HashMap<String, Vec<usize>>,
        image_size: (usize, usize),
        num_head_channels: usize,
    ) -> Result<Self, ModelError> {
        let dim = |name: &str, axis: usize| -> Result<usize, ModelError> {
            shapes
                .get(name)
                .and_then(|s| s.get(axis).copied())
                .ok_or_else(|| ModelError::InferConfig {
                    reason: format!("tensor `{name}` is missing or has no axis {axis}"),
                })
        };
        let model_channels = dim("time_embed.0.weight", 1)?;
        let mut channel_mult = Vec::new();
        let mut attention_resolutions = Vec::new();
        let mut blocks_per_level = Vec::new();
        let mut res_blocks = 0;
        let mut block = 1;
        loop {
            let prefix = format!("input_blocks.{block}.0");
            if shapes.contains_key(&format!("{prefix}.op.spatial_conv.weight")) {
                blocks_per_level.push(res_blocks);
                res_blocks = 0;
            } else if shapes.contains_key(&format!("{prefix}.in_layers.0.weight")) {
                if res_blocks == 0 {
                    let out = dim(&format!("{prefix}.out_layers.3.spatial_conv.weight"), 0)?;
                    if model_channels == 0 || !out.is_multiple_of(model_channels) {
                        return Err(ModelError::InferConfig {
                            reason: format!(
                                "level {} has {out} channels, not a multiple of {model_channels}",
                                channel_mult.len()
                            ),
                        });
                    }
                    channel_mult.push(out / model_channels);
                    let has_attention =
                        shapes.contains_key(&format!("input_blocks.{block}.1.norm.weight"));
                    if has_attention {
                        attention_resolutions.push(1 << (channel_mult.len() - 1));
                    }
                }
                res_blocks += 1;
            } else {
                break;
            }
            block += 1;
        }
        blocks_per_level.push(res_blocks);
        let num_res_blocks = blocks_per_level[0];
        if channel_mult.is_empty()
            || num_res_blocks == 0
            || blocks_per_level.iter().any(|&n| n != num_res_blocks)
        {
            return Err(ModelError::InferConfig {
                reason: format!(
                    "encoder blocks per level {blocks_per_level:?} are not one equal positive count"
                ),
            });
        }
        Ok(Self {
            image_size,
            in_channels: dim("input_blocks.0.0.spatial_conv.weight", 1)?,
            out_channels: dim("out.2.spatial_conv.weight", 0)?,
            model_channels,
            num_res_blocks,
            attention_resolutions,
            channel_mult,
            num_head_channels,
            task_token_channels: dim("task_attnpool.0.latents", 1)?,
            frames: DEFAULT_FRAMES,
        })
    }
}

impl UNetConfig {
    /// A network small enough for tests (unit and end-to-end): 8x8 frames, 3 frames, two
    /// levels, attention at 2x.
    pub fn tiny() -> Self {
        Self {
            image_size: (8, 8),
            model_channels: 32,
            num_res_blocks: 1,
            attention_resolutions: vec![2],
            channel_mult: vec![1, 1],
            num_head_channels: 16,
            task_token_channels: 8,
            frames: 3,
            ..Self::tabletop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::expected_shapes;

    #[test]
    fn by_name_lists_valid_presets() {
        assert_eq!(UNetConfig::by_name("ithor").ok(), Some(UNetConfig::ithor()));
        let err = UNetConfig::by_name("nope").expect_err("unknown preset");
        let message = err.to_string();
        assert!(message.contains("nope") && message.contains("metaworld, ithor, tabletop"));
    }

    #[test]
    fn infer_from_tensors_recovers_every_preset() {
        for cfg in [
            UNetConfig::metaworld(),
            UNetConfig::ithor(),
            UNetConfig::tabletop(),
            UNetConfig::tabletop_gpu(),
            UNetConfig::tiny(),
        ] {
            let shapes: HashMap<String, Vec<usize>> = expected_shapes(&cfg)
                .expect("shape walk")
                .into_iter()
                .collect();
            let inferred =
                UNetConfig::infer_from_tensors(&shapes, cfg.image_size, cfg.num_head_channels)
                    .expect("inferable");
            // Factors deeper than the network (iTHOR's 8 with 3 levels) leave no trace.
            let deepest = 1 << (cfg.channel_mult.len() - 1);
            let effective = UNetConfig {
                frames: DEFAULT_FRAMES,
                attention_resolutions: cfg
                    .attention_resolutions
                    .iter()
                    .copied()
                    .filter(|&ds| ds <= deepest)
                    .collect(),
                ..cfg
            };
            assert_eq!(inferred, effective);
        }
    }

    #[test]
    fn shipped_presets_fit_the_40_mb_budget() {
        for cfg in [UNetConfig::tabletop(), UNetConfig::tabletop_gpu()] {
            let params: usize = expected_shapes(&cfg)
                .expect("shape walk")
                .values()
                .map(|shape| shape.iter().product::<usize>())
                .sum();
            println!("{:?}: {params} parameters", cfg.image_size);
            assert!(
                params * 4 < 40_000_000,
                "{params} f32 parameters exceed 40 MB"
            );
        }
    }

    #[test]
    fn infer_from_tensors_reports_missing_tensors() {
        let err = UNetConfig::infer_from_tensors(&HashMap::new(), (8, 8), 16)
            .expect_err("empty state_dict");
        assert!(err.to_string().contains("time_embed.0.weight"));
    }
}
