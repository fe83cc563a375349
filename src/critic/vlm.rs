//! The VLM critic: the paper's two prompts sent to any OpenAI-compatible vision model. A binary
//! judge sees the start frame and the plan's frames (base64 PNG image parts) and answers
//! Accept or Reject (acceptance = the reply starts with "A", as in the paper); on a reject, a
//! second call with three worked examples asks for one suggestive sentence of at most 20 words
//! (what is wrong, what to do). Anything else the server does becomes an unavailable verdict.

use std::io::Cursor;
use std::time::Instant;

use base64::Engine;
use serde_json::{Value, json};

use super::chat::ChatClient;
use super::{Critic, CriticInput, Review, Verdict, clamp_feedback};
use crate::env::Rgb8Image;
use crate::model::pipeline::resize;

const SYSTEM: &str = "You are a video reviewer for a robot that plans by imagining videos.";

const JUDGE: &str = "The first image is the starting frame of a table-top robot task; the \
following images are the frames of a generated video plan, in order. The task is: \"{task}\". \
Accept the video if it completes the task and the video is consistent without glitches: \
objects must not vanish, appear, split, change colour, or move unless the gripper (the white \
disc with grey fingers) touches them. Be very strict. Answer with a single word: Accept or \
Reject.";

const FEEDBACK: &str = "The first image is the starting frame of a table-top robot task; the \
following images are a generated video plan for the task \"{task}\", which was rejected. In one \
sentence of at most 20 words, say what is wrong and what the robot should do instead. \
Examples:\n\
- Inconsistent glitch. Ring jumps without any force acting on it. Move the manipulator to the \
ring first.\n\
- Task incomplete. Move the manipulator along with the block more forward to the green target.\n\
- Inconsistent glitch. The door handle vanishes. Keep the door visible and push it open.\n\
Answer with the sentence only.";

/// Feedback used when the judge rejects but the feedback call fails.
const FALLBACK: &str =
    "Task incomplete or inconsistent. Move the gripper to the object and complete the task.";

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

    fn messages(&self, prompt: &str, input: &CriticInput<'_>) -> Result<Value, String> {
        let mut parts =
            vec![json!({"type": "text", "text": prompt.replace("{task}", input.instruction)})];
        for frame in std::iter::once(&input.first.rgb).chain(input.plan) {
            parts.push(json!({
                "type": "image_url",
                "image_url": {"url": data_url(&resize(frame, self.image_side.clamp(16, 1024)))?},
            }));
        }
        Ok(json!([
            {"role": "system", "content": SYSTEM},
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

/// The judge's verdict in its answer: the paper's rule (the first word starting with "A"
/// accepts, "R" rejects), or why the answer is neither.
pub fn judge_verdict(answer: &str) -> Result<Verdict, String> {
    let word = answer.trim_start_matches(|c: char| !c.is_alphanumeric());
    match word.chars().next().map(|c| c.to_ascii_uppercase()) {
        Some('A') => Ok(Verdict::Accept),
        Some('R') => Ok(Verdict::Reject),
        _ => {
            let snippet: String = answer.chars().take(60).collect();
            Err(format!(
                "the judge answered neither Accept nor Reject: {snippet:?}"
            ))
        }
    }
}

/// The feedback sentence of the second call's answer: its first line, at most
/// [`super::MAX_FEEDBACK_WORDS`] words.
pub fn feedback_sentence(answer: &str) -> String {
    clamp_feedback(answer.lines().next().unwrap_or(FALLBACK))
}

impl Critic for VlmCritic {
    fn name(&self) -> &str {
        "vlm"
    }

    fn review(&self, input: &CriticInput<'_>) -> Review {
        let t0 = Instant::now();
        if input.plan.is_empty() {
            return Review::unavailable("the plan has no frames", t0.elapsed());
        }
        let answer = self
            .messages(JUDGE, input)
            .and_then(|m| self.judge.complete(m, 5));
        let answer = match answer {
            Ok(a) => a,
            Err(reason) => return Review::unavailable(reason, t0.elapsed()),
        };
        let verdict = match judge_verdict(&answer) {
            Ok(v) => v,
            Err(reason) => return Review::unavailable(reason, t0.elapsed()),
        };
        let feedback = if verdict == Verdict::Accept {
            "The video completes the task without glitches.".to_owned()
        } else {
            let client = self.feedback.as_ref().unwrap_or(&self.judge);
            match self
                .messages(FEEDBACK, input)
                .and_then(|m| client.complete(m, 60))
            {
                Ok(answer) => feedback_sentence(&answer),
                Err(reason) => {
                    tracing::warn!("the VLM gave no feedback: {reason}");
                    FALLBACK.to_owned()
                }
            }
        };
        Review {
            verdict,
            feedback,
            findings: Vec::new(),
            latency: t0.elapsed(),
        }
    }
}
