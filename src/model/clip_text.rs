//! The reference's text encoder: CLIP's text transformer (ViT-B/32 in the paper), frozen,
//! loaded from a local Hugging Face folder and run by candle-transformers. Its output is the
//! last hidden state, `(b, L, 512)` for ViT-B/32, which the U-Net's Perceiver pools; it is not
//! the pooled, projected CLIP text embedding.
//!
//! ```text
//! <clip>/config.json        a CLIPModel config (`text_config`) or a CLIPTextModel one
//! <clip>/model.safetensors  `text_model.*` tensors (vision tensors, if any, are skipped)
//! <clip>/tokenizer.json     the tokenizer, as saved by `tokenizers`
//! ```
//!
//! Tokenising follows the reference trainer: specials added, truncated to the position table,
//! a batch padded to its longest text with the padding masked out of attention (so a text
//! encodes the same alone or in a batch). Nothing here downloads anything.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::ModelError;
use super::text::TextEncoder;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Prefix of the text transformer's tensors in both CLIPModel and CLIPTextModel files.
const PREFIX: &str = "text_model";
/// The padding token of CLIP's tokenizer, used when `tokenizer.json` names none.
const END_OF_TEXT: &str = "<|endoftext|>";

/// The `config.json` fields that shape the text transformer. Absent fields take the values
/// transformers defaults to, which are ViT-B/32's.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    projection_dim: usize,
    hidden_act: String,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            max_position_embeddings: 77,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            projection_dim: 512,
            hidden_act: "quick_gelu".to_owned(),
        }
    }
}

fn text_error(reason: impl Into<String>, path: &Path) -> ModelError {
    ModelError::TextEncoder {
        reason: reason.into(),
        path: path.to_owned(),
    }
}

/// Reads the text part of a CLIP `config.json`.
fn read_config(path: &Path) -> Result<ClipTextConfig, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| text_error(format!("cannot read: {e}"), path))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| text_error(format!("config is not JSON: {e}"), path))?;
    let text = json.get("text_config").unwrap_or(&json).clone();
    let hf: HfTextConfig =
        serde_json::from_value(text).map_err(|e| text_error(format!("config: {e}"), path))?;
    if hf.hidden_act != "quick_gelu" {
        return Err(text_error(
            format!(
                "activation `{}` (only quick_gelu is supported)",
                hf.hidden_act
            ),
            path,
        ));
    }
    if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
        return Err(text_error(
            format!(
                "hidden size {} is not a multiple of {} heads",
                hf.hidden_size, hf.num_attention_heads
            ),
            path,
        ));
    }
    Ok(ClipTextConfig {
        vocab_size: hf.vocab_size,
        embed_dim: hf.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: hf.intermediate_size,
        max_position_embeddings: hf.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        projection_dim: hf.projection_dim,
    })
}

/// The `text_model.*` tensors of a safetensors file, as f32 on `device`.
fn read_text_tensors(path: &Path, device: &Device) -> Result<VarBuilder<'static>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| text_error(format!("cannot read: {e}"), path))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| text_error(format!("not a safetensors file: {e}"), path))?;
    let mut tensors = std::collections::HashMap::new();
    for (name, view) in file.tensors() {
        if name.starts_with(PREFIX) {
            let tensor = candle_core::safetensors::Load::load(&view, device)
                .map_err(|e| text_error(format!("tensor {name}: {e}"), path))?;
            tensors.insert(name, tensor);
        }
    }
    if tensors.is_empty() {
        return Err(text_error(format!("no `{PREFIX}.*` tensors"), path));
    }
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// CLIP's text transformer with its tokenizer; see the module docs.
#[derive(Debug)]
pub struct ClipTextEncoder {
    model: ClipTextTransformer,
    tokenizer: Tokenizer,
    pad_id: u32,
    dim: usize,
    device: Device,
}

impl ClipTextEncoder {
    /// Loads the folder `dir` (see the module docs) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config_path = dir.join(CONFIG_FILE);
        let config = read_config(&config_path)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let vb = read_text_tensors(&weights_path, device)?;
        let model = ClipTextTransformer::new(vb.pp(PREFIX), &config)
            .map_err(|e| text_error(format!("text model: {e}"), &weights_path))?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| text_error(format!("tokenizer: {e}"), &tokenizer_path))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings,
                ..TruncationParams::default()
            }))
            .map_err(|e| text_error(format!("tokenizer: {e}"), &tokenizer_path))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id(END_OF_TEXT))
            .unwrap_or(0);
        // Padding is done here, per batch, knowing where each text ends.
        tokenizer.with_padding(None);
        Ok(Self {
            model,
            tokenizer,
            pad_id,
            dim: config.embed_dim,
            device: device.clone(),
        })
    }

    fn token_ids(&self, text: &str) -> candle_core::Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| candle_core::Error::Msg(format!("CLIP tokenizer: {e}")))?;
        let ids = encoding.get_ids().to_vec();
        if ids.is_empty() {
            candle_core::bail!("CLIP tokenizer gave no tokens for {text:?}");
        }
        Ok(ids)
    }
}

impl TextEncoder for ClipTextEncoder {
    fn encode(&self, texts: &[&str], device: &Device) -> candle_core::Result<Tensor> {
        if texts.is_empty() {
            candle_core::bail!("no texts to encode");
        }
        let ids = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let rows = ids
            .into_iter()
            .map(|mut row| {
                let last_real = row.len() - 1;
                row.resize(longest, self.pad_id);
                let row = Tensor::from_vec(row, (1, longest), &self.device)?;
                self.model.forward_with_mask(&row, last_real)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0)?
            .to_dtype(DType::F32)?
            .to_device(device)
    }

    fn dim(&self) -> usize {
        self.dim
    }
}

#[cfg(test)]
pub(crate) mod tests;
