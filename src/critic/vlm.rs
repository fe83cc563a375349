//! The VLM critic: the paper's two prompts ([`super::prompt`]) sent to any OpenAI-compatible
//! vision model. The judge sees the start frame and the plan's frames as base64 PNG image
//! parts; on a reject a second call (optionally to a cheaper model) asks for the feedback
//! sentence. Anything else the server does becomes an unavailable verdict.

use std::io::Cursor;

use base64::Engine;
use serde_json::{Value, json};

use super::chat::ChatClient;
use super::prompt::{self, Question, SEPARATE_IMAGES};
use super::{Critic, CriticInput, Review};
use crate::env::Rgb8Image;
use crate::model::pipeline::resize;

/// The VLM critic; see the module docs.
pub struct VlmCritic {
    judge: ChatClient,
    /// A (usually cheaper) model for the feedback sentence; the judge's when `None`.
    feedback: Option<ChatClient>,
    /// Side the frames are scaled to before sending (VLMs see tiny frames poorly); 16..=1024.
    pub image_side: u32,
}

impl VlmCritic {
    pub fn new(judge: ChatClient, feedback: Option<ChatClient>) -> Self {
        Self {
            judge,
            feedback,
            image_side: 128,
        }
    }

    fn messages(&self, question: Question, input: &CriticInput<'_>) -> Result<Value, String> {
        let text = prompt::prompt(question, SEPARATE_IMAGES, input.instruction);
        let mut parts = vec![json!({"type": "text", "text": text})];
        for frame in std::iter::once(&input.first.rgb).chain(input.plan) {
            parts.push(json!({
                "type": "image_url",
                "image_url": {"url": data_url(&resize(frame, self.image_side.clamp(16, 1024)))?},
            }));
        }
        Ok(json!([
            {"role": "system", "content": prompt::SYSTEM},
            {"role": "user", "content": parts},
        ]))
    }
}

/// `frame` as a `data:image/png;base64,...` URL.
pub fn data_url(frame: &Rgb8Image) -> Result<String, String> {
    if frame.pixels.len() != (frame.width * frame.height * 3) as usize || frame.width == 0 {
        return Err(format!("malformed {}x{} frame", frame.width, frame.height));
    }
    let mut png = Vec::new();
    frame
        .to_image()
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode a frame as PNG: {e}"))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

impl Critic for VlmCritic {
    fn name(&self) -> &str {
        "vlm"
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        prompt::two_step_review(input, |question, max_tokens| {
            let client = match question {
                Question::Judge => &self.judge,
                Question::Feedback => self.feedback.as_ref().unwrap_or(&self.judge),
            };
            self.messages(question, input)
                .and_then(|m| client.complete(m, u32::try_from(max_tokens).unwrap_or(u32::MAX)))
        })
    }
}
