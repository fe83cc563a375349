//! The local VLM critic: Moondream2 (a SigLIP image encoder and a 1.4B Phi decoder, 1.9B
//! parameters, laptop-sized) run in process by candle-transformers, asked the same two
//! questions as the HTTP critic ([`super::prompt`]) with greedy decoding and a token limit.
//! Moondream sees one image, so the start frame and the plan's frames are tiled into a grid
//! (read left to right, top to bottom) at the side its image encoder takes.
//!
//! ```text
//! <dir>/config.json        candle's Moondream config (`phi_config`, `vision_config`), or the
//!                          Hub's moondream2 config (`model_type` moondream*: the v2 sizes)
//! <dir>/model.safetensors  `vision_encoder.*` and `text_model.*` tensors
//! <dir>/tokenizer.json     its tokenizer, with `<|endoftext|>` (start and stop)
//! ```
//!
//! Loading fails with an error naming the file; a review never fails (problems, including
//! gibberish answers, become [`super::Verdict::Unavailable`]). No network is touched.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::moondream;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::prompt::{self, GRID_IMAGE};
use super::{Critic, CriticError, CriticInput, Review};
use crate::env::Rgb8Image;
use crate::model::pipeline::resize;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Starts the sequence and ends an answer (Phi's GPT-2 style tokenizer).
const END_OF_TEXT: &str = "<|endoftext|>";
/// Moondream2's own end-of-answer marker, where the tokenizer has it.
const END_OF_ANSWER: &str = "<END>";
/// Pixels per side of one image patch of Moondream's encoder.
const PATCH: usize = 14;
/// Where the encoder's position table is: its length fixes the image side.
const POS_EMBED: &str = "vision_encoder.encoder.model.visual.pos_embed";

/// `config.json`: spelled out (candle's layout), or the Hub's, which only names the model.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigFile {
    Full(moondream::Config),
    Named { model_type: String },
}

fn load_error(reason: impl Into<String>, path: &Path) -> CriticError {
    CriticError::LocalModel {
        reason: reason.into(),
        path: path.to_owned(),
    }
}

fn read_config(path: &Path) -> Result<moondream::Config, CriticError> {
    let bytes = std::fs::read(path).map_err(|e| load_error(format!("cannot read: {e}"), path))?;
    match serde_json::from_slice::<ConfigFile>(&bytes) {
        Ok(ConfigFile::Full(config)) => Ok(config),
        Ok(ConfigFile::Named { model_type }) if model_type.contains("moondream") => {
            Ok(moondream::Config::v2())
        }
        Ok(ConfigFile::Named { model_type }) => Err(load_error(
            format!("model type `{model_type}` is not Moondream"),
            path,
        )),
        Err(e) => Err(load_error(format!("not a Moondream config ({e})"), path)),
    }
}

/// The Moondream critic; see the module docs.
pub struct LocalVlmCritic {
    /// Behind a lock: decoding keeps a key/value cache inside the model.
    model: Mutex<moondream::Model>,
    tokenizer: Tokenizer,
    /// `<|endoftext|>`: Moondream's sequences open with it.
    start: u32,
    /// Tokens that end an answer.
    stop: Vec<u32>,
    /// Side of the square image the encoder takes (patches x 14 pixels).
    image_side: usize,
    dtype: DType,
    device: Device,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalVlmCritic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalVlmCritic")
            .field("dir", &self.dir)
            .field("image_side", &self.image_side)
            .finish_non_exhaustive()
    }
}

impl LocalVlmCritic {
    /// Loads the folder `dir` (see the module docs) onto `device` (f32 on the CPU, f16 on a
    /// GPU).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, CriticError> {
        let config_path = dir.join(CONFIG_FILE);
        let config = read_config(&config_path)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| load_error(format!("cannot read: {e}"), &weights_path))?;
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::F16
        };
        let vb = VarBuilder::from_buffered_safetensors(bytes, dtype, device)
            .map_err(|e| load_error(format!("not a safetensors file: {e}"), &weights_path))?;
        let model = moondream::Model::new(&config, vb.clone())
            .map_err(|e| load_error(format!("weights: {e}"), &weights_path))?;
        let image_side = image_side(&vb).map_err(|e| load_error(e, &weights_path))?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| load_error(format!("tokenizer: {e}"), &tokenizer_path))?;
        // A padded prompt would put padding between the question and the answer.
        tokenizer.with_padding(None);
        let end = tokenizer.token_to_id(END_OF_TEXT).ok_or_else(|| {
            load_error(
                format!("the tokenizer has no {END_OF_TEXT}"),
                &tokenizer_path,
            )
        })?;
        let stop = std::iter::once(end)
            .chain(tokenizer.token_to_id(END_OF_ANSWER))
            .collect();
        Ok(Self {
            model: Mutex::new(model),
            tokenizer,
            start: end,
            stop,
            image_side,
            dtype,
            device: device.clone(),
            dir: dir.to_owned(),
        })
    }

    /// The start frame and the plan tiled into one normalised image, `(1, 3, side, side)`.
    fn grid(&self, input: &CriticInput<'_>) -> Result<Tensor, String> {
        let frames: Vec<&Rgb8Image> = std::iter::once(&input.first.rgb)
            .chain(input.plan)
            .collect();
        let pixels = tile(&frames, self.image_side)?;
        let side = self.image_side;
        let data: Vec<f32> = (0..3)
            .flat_map(|c| {
                let pixels = &pixels;
                (0..side * side).map(move |i| f32::from(pixels[i * 3 + c]) / 127.5 - 1.0)
            })
            .collect();
        Tensor::from_vec(data, (1, 3, side, side), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(|e| format!("image tensor: {e}"))
    }

    /// Greedy answer to `question` about the encoded image, at most `max_tokens` long.
    fn answer(
        &self,
        model: &mut moondream::Model,
        image: &Tensor,
        question: &str,
        max_tokens: usize,
    ) -> candle_core::Result<String> {
        let text = format!("\n\nQuestion: {} {question}\n\nAnswer:", prompt::SYSTEM);
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec();
        let start = Tensor::new(&[self.start], &self.device)?.unsqueeze(0)?;
        let prompt = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let text_model = model.text_model();
        text_model.clear_kv_cache();
        let mut logits = text_model.forward_with_img(&start, &prompt, image)?;
        let mut answer = Vec::new();
        for _ in 0..max_tokens {
            let next = logits.i(0)?.argmax(0)?.to_scalar::<u32>()?;
            if self.stop.contains(&next) {
                break;
            }
            answer.push(next);
            logits = text_model.forward(&Tensor::new(&[next], &self.device)?.unsqueeze(0)?)?;
        }
        self.tokenizer
            .decode(&answer, true)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizer: {e}")))
    }
}

/// The side of the encoder's square image: its position table has one row per patch.
fn image_side(vb: &VarBuilder) -> Result<usize, String> {
    let pos = vb
        .get_unchecked(POS_EMBED)
        .map_err(|e| format!("{POS_EMBED}: {e}"))?;
    let patches = pos.dims().get(1).copied().unwrap_or(0);
    let per_side = (patches as f64).sqrt().round() as usize;
    if patches == 0 || per_side * per_side != patches {
        return Err(format!(
            "{POS_EMBED} has {patches} patches, not a square number"
        ));
    }
    Ok(per_side * PATCH)
}

/// `frames` resized into the cells of a near-square grid on a black `side` x `side` canvas,
/// as RGB bytes.
fn tile(frames: &[&Rgb8Image], side: usize) -> Result<Vec<u8>, String> {
    let cols = (frames.len() as f64).sqrt().ceil().max(1.0) as usize;
    let cell = side / cols;
    if cell == 0 {
        return Err(format!(
            "{} frames do not fit a {side}-pixel image",
            frames.len()
        ));
    }
    let mut canvas = vec![0u8; side * side * 3];
    for (k, frame) in frames.iter().enumerate() {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w == 0 || h == 0 || frame.pixels.len() != w * h * 3 {
            return Err(format!("malformed {w}x{h} frame"));
        }
        let small = resize(frame, cell as u32);
        let (x0, y0) = ((k % cols) * cell, (k / cols) * cell);
        for y in 0..cell {
            let row = &small.pixels[y * cell * 3..(y + 1) * cell * 3];
            let at = ((y0 + y) * side + x0) * 3;
            canvas[at..at + cell * 3].copy_from_slice(row);
        }
    }
    Ok(canvas)
}

impl Critic for LocalVlmCritic {
    fn name(&self) -> &str {
        "local"
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        // A panic elsewhere while holding the lock leaves a model whose cache is reset below.
        let mut model = self
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut image: Option<Tensor> = None;
        prompt::two_step_review(input, |question, max_tokens| {
            let encoded = match &image {
                Some(encoded) => encoded.clone(),
                None => {
                    let grid = self.grid(input)?;
                    let encoded = model
                        .vision_encoder()
                        .forward(&grid)
                        .map_err(|e| format!("the image encoder failed: {e}"))?;
                    image = Some(encoded.clone());
                    encoded
                }
            };
            let text = prompt::prompt(question, GRID_IMAGE, input.instruction);
            self.answer(&mut model, &encoded, &text, max_tokens)
                .map_err(|e| format!("the local VLM failed: {e}"))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
