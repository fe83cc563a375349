//! Text encoders: instructions (and critiques) -> the token tensor `(b, L, D)` the U-Net's
//! Perceiver resampler pools. The reference uses frozen CLIP text tokens
//! ([`super::clip_text`]); the built-in encoder here is small and trained with the model, so
//! the default checkpoint needs no download. A model's `config.json` says which one it uses.

use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Embedding, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// Anything that turns texts into `(b, L, D)` tokens for the U-Net.
pub trait TextEncoder: Send + Sync {
    /// Tokens for each text; every row has the same length `L`.
    fn encode(&self, texts: &[&str], device: &Device) -> Result<Tensor>;
    /// Width `D` of each token (the U-Net's `task_token_channels`).
    fn dim(&self) -> usize;
}

/// Which encoder a model uses (`text_encoder` in its `config.json`; absent means built-in, so
/// every checkpoint saved before CLIP was supported loads unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TextEncoderKind {
    /// The hashed-word encoder below, shaped by the model's `text` config and trained with it.
    #[default]
    Builtin,
    /// Frozen CLIP text transformer from a Hugging Face folder; a relative `path` is resolved
    /// against the model folder.
    Clip { path: PathBuf },
}

impl TextEncoderKind {
    pub fn is_builtin(&self) -> bool {
        *self == Self::Builtin
    }
}

/// Shape of the built-in encoder; stored in the checkpoint's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuiltinTextConfig {
    /// Words are hashed into this many buckets (bucket 0 is padding).
    pub buckets: usize,
    /// Tokens per text (longer texts are cut, shorter ones padded).
    pub max_tokens: usize,
    pub dim: usize,
}

impl BuiltinTextConfig {
    pub fn new(dim: usize) -> Self {
        Self {
            buckets: 2048,
            max_tokens: 24,
            dim,
        }
    }
}

/// Lower-case words of `text` (letters and digits), in order.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Token ids of `text`: FNV-1a hash of each word into `1..buckets`, padded with 0.
/// Hashing keeps the vocabulary open: a critique with new words still encodes.
pub fn token_ids(text: &str, cfg: &BuiltinTextConfig) -> Vec<u32> {
    let mut ids: Vec<u32> = words(text)
        .take(cfg.max_tokens)
        .map(|w| {
            let hash = w.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            1 + (hash % (cfg.buckets as u64 - 1)) as u32
        })
        .collect();
    ids.resize(cfg.max_tokens, 0);
    ids
}

/// Hashed word embeddings, learned with the video model (`text_encoder.embedding.weight`).
pub struct BuiltinTextEncoder {
    cfg: BuiltinTextConfig,
    embedding: Embedding,
}

impl BuiltinTextEncoder {
    pub fn new(cfg: &BuiltinTextConfig, vb: VarBuilder) -> Result<Self> {
        let weight = vb.pp("embedding").get_with_hints(
            (cfg.buckets, cfg.dim),
            "weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            embedding: Embedding::new(weight, cfg.dim),
        })
    }

    pub fn config(&self) -> &BuiltinTextConfig {
        &self.cfg
    }
}

impl TextEncoder for BuiltinTextEncoder {
    fn encode(&self, texts: &[&str], device: &Device) -> Result<Tensor> {
        let ids: Vec<u32> = texts.iter().flat_map(|t| token_ids(t, &self.cfg)).collect();
        let ids = Tensor::from_vec(ids, (texts.len(), self.cfg.max_tokens), device)?;
        self.embedding.forward(&ids)?.to_dtype(DType::F32)
    }

    fn dim(&self) -> usize {
        self.cfg.dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hash_stably_and_pad() {
        let cfg = BuiltinTextConfig::new(8);
        let a = token_ids("Push the block!", &cfg);
        assert_eq!(a.len(), cfg.max_tokens);
        assert_eq!(a, token_ids("push  the BLOCK", &cfg));
        assert!(a[..3].iter().all(|&i| i > 0) && a[3..].iter().all(|&i| i == 0));
        assert_ne!(
            token_ids("open the door", &cfg),
            token_ids("close the door", &cfg)
        );
    }

    #[test]
    fn encoder_gives_one_row_of_tokens_per_text() -> Result<()> {
        let cfg = BuiltinTextConfig::new(8);
        let vm = candle_nn::VarMap::new();
        let enc =
            BuiltinTextEncoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let t = enc.encode(&["open the door", "press the button"], &Device::Cpu)?;
        assert_eq!(t.dims(), &[2, cfg.max_tokens, 8]);
        Ok(())
    }
}
