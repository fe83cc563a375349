//! The paper's two VLM prompts and the reading of their answers, shared by the VLM critics
//! (over HTTP and in process) so that both judge by the same words. A binary judge answers
//! Accept or Reject (acceptance = the reply starts with "A", as in the paper); on a reject, a
//! second question with three worked examples asks for one suggestive sentence of at most 20
//! words (what is wrong, what to do). This module sends nothing: each critic supplies `ask`.

use std::time::Instant;

use super::{CriticInput, Review, Verdict, clamp_feedback};

pub(super) const SYSTEM: &str =
    "You are a video reviewer for a robot that plans by imagining videos.";

/// Opening of the prompts for a model shown the start frame and the plan as separate images.
pub(super) const SEPARATE_IMAGES: &str = "The first image is the starting frame of a table-top \
robot task; the following images are the frames of a generated video plan, in order.";

/// Opening of the prompts for a model shown one image: the frames tiled in a grid.
pub(super) const GRID_IMAGE: &str = "The image is a grid of frames, read left to right and top \
to bottom: the first frame is the starting frame of a table-top robot task; the others are the \
frames of a generated video plan, in order.";

const JUDGE: &str = "The task is: \"{task}\". Accept the video if it completes the task and the \
video is consistent without glitches: objects must not vanish, appear, split, change colour, or \
move unless the gripper (the white disc with grey fingers) touches them. Be very strict. Answer \
with a single word: Accept or Reject.";

const FEEDBACK: &str = "The plan, for the task \"{task}\", was rejected. In one sentence of at \
most 20 words, say what is wrong and what the robot should do instead. Examples:\n\
- Inconsistent glitch. Ring jumps without any force acting on it. Move the manipulator to the \
ring first.\n\
- Task incomplete. Move the manipulator along with the block more forward to the green target.\n\
- Inconsistent glitch. The door handle vanishes. Keep the door visible and push it open.\n\
Answer with the sentence only.";

/// Feedback used when the judge rejects but the feedback question fails.
const FALLBACK: &str =
    "Task incomplete or inconsistent. Move the gripper to the object and complete the task.";

const ACCEPTED: &str = "The video completes the task without glitches.";

/// Tokens the judge may answer with (one word and some slack).
pub(super) const JUDGE_TOKENS: usize = 5;
/// Tokens the feedback sentence may take (20 words and some slack).
pub(super) const FEEDBACK_TOKENS: usize = 60;

/// Which of the two questions a call asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Question {
    Judge,
    Feedback,
}

/// The full text of `question` about `instruction`, opened by how the frames are shown.
pub(super) fn prompt(question: Question, opening: &str, instruction: &str) -> String {
    let body = match question {
        Question::Judge => JUDGE,
        Question::Feedback => FEEDBACK,
    };
    format!("{opening} {}", body.replace("{task}", instruction))
}

/// The judge's verdict: Accept or Reject by the first letter of the first word; anything
/// else is a reason to call the critic unavailable.
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

/// The feedback sentence of the second question's answer: its first non-empty line, at most
/// [`super::MAX_FEEDBACK_WORDS`] words (a generic sentence if there is none).
pub fn feedback_sentence(answer: &str) -> String {
    answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map_or_else(|| FALLBACK.to_owned(), clamp_feedback)
}

/// Runs the judge and, on a reject, the feedback question. `ask(question, max_tokens)` is one
/// model call: the model's answer, or why none came (which makes the review unavailable; a
/// failed feedback call keeps the reject with a generic sentence).
pub(super) fn two_step_review(
    input: &CriticInput<'_>,
    mut ask: impl FnMut(Question, usize) -> Result<String, String>,
) -> Review {
    let t0 = Instant::now();
    if input.plan.is_empty() {
        return Review::unavailable("the plan has no frames", t0.elapsed());
    }
    let verdict = match ask(Question::Judge, JUDGE_TOKENS).and_then(|a| judge_verdict(&a)) {
        Ok(v) => v,
        Err(reason) => return Review::unavailable(reason, t0.elapsed()),
    };
    let feedback = if verdict == Verdict::Accept {
        ACCEPTED.to_owned()
    } else {
        match ask(Question::Feedback, FEEDBACK_TOKENS) {
            Ok(sentence) => feedback_sentence(&sentence),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_the_first_letter() {
        assert_eq!(judge_verdict("Accept."), Ok(Verdict::Accept));
        assert_eq!(judge_verdict("  **reject**"), Ok(Verdict::Reject));
        let why = judge_verdict("blue cube").expect_err("neither");
        assert!(why.contains("neither Accept nor Reject") && why.contains("blue cube"));
        assert!(judge_verdict("").is_err());
    }

    #[test]
    fn prompts_open_with_the_framing_and_name_the_task() {
        let judge = prompt(Question::Judge, GRID_IMAGE, "open the door");
        assert!(judge.starts_with("The image is a grid"));
        assert!(judge.contains("\"open the door\"") && judge.ends_with("Accept or Reject."));
        let feedback = prompt(Question::Feedback, SEPARATE_IMAGES, "open the door");
        assert!(feedback.starts_with("The first image") && feedback.contains("Examples"));
    }
}
