//! Critics: judges of a generated plan, as in VideoAgent's refinement loop (paper §4). A critic
//! looks at the start observation, the plan's frames and the instruction and returns a
//! [`Review`]: accept or reject, one short sentence of feedback in the paper's style (what is
//! wrong, then what to do) that conditions the next refinement, and the per-frame findings
//! behind it.
//!
//! Implementations: [`PerceptionCritic`] (offline, the default: tracks every object of the
//! start frame by colour and looks for hallucinations), [`VlmCritic`] (a vision-language
//! model behind an OpenAI-compatible chat-completions API) and [`LocalVlmCritic`] (Moondream2
//! run in process from a local folder); the two VLM critics share their prompts. A critic never fails the caller:
//! whatever goes wrong (a server down, a garbage answer) becomes [`Verdict::Unavailable`] with
//! the reason. This module does not run plans in a world (that is execution, not critique).

pub mod calibrate;
mod chat;
mod error;
mod judge;
mod local;
#[cfg(test)]
mod loopback;
mod perception;
mod prompt;
mod track;
mod vlm;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::env::{Observation, Rgb8Image};

pub use chat::{ChatClient, ChatSettings, reply_text};
pub use error::CriticError;
pub use local::LocalVlmCritic;
#[cfg(test)]
pub(crate) use local::tests::write_tiny_moondream;
pub use perception::{FindingScope, PerceptionCritic, PerceptionThresholds};
pub use prompt::{feedback_sentence, judge_verdict};
pub use vlm::VlmCritic;

/// Longest feedback sentence, in words (the paper's suggestive feedback limit).
pub const MAX_FEEDBACK_WORDS: usize = 20;

/// What a critic is shown.
#[derive(Clone, Copy, Debug)]
pub struct CriticInput<'a> {
    /// The start: frame 0 as the world rendered it, with its segmentation and labels.
    pub first: &'a Observation,
    /// The plan's frames after the start (7 for the shipped model), at any resolution.
    pub plan: &'a [Rgb8Image],
    /// The world's task name (e.g. `push`), empty if unknown.
    pub task: &'a str,
    /// The instruction the plan was generated for.
    pub instruction: &'a str,
}

/// The judgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
    /// The critic could not judge (server down, garbage answer...); says why.
    Unavailable {
        reason: String,
    },
}

/// Kinds of problems a critic finds in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An object of the start frame is no longer visible (and nothing covers it).
    Vanished,
    /// Something that was not in the start frame shows up (or a fixture shows up elsewhere).
    Appeared,
    /// An object is seen in two separate places at once.
    Duplicated,
    /// An object keeps its place but changes its colour.
    ColourDrift,
    /// An object jumps further than anything could have pushed it.
    Teleport,
    /// An object moves with neither the gripper nor another moving object near it.
    MovedWithoutContact,
    /// The gripper never moves.
    GripperStatic,
    /// The last frame does not show the task done.
    GoalNotReached,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        Self::Vanished,
        Self::Appeared,
        Self::Duplicated,
        Self::ColourDrift,
        Self::Teleport,
        Self::MovedWithoutContact,
        Self::GripperStatic,
        Self::GoalNotReached,
    ];

    /// The snake_case name (as in JSON and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Self::Vanished => "vanished",
            Self::Appeared => "appeared",
            Self::Duplicated => "duplicated",
            Self::ColourDrift => "colour_drift",
            Self::Teleport => "teleport",
            Self::MovedWithoutContact => "moved_without_contact",
            Self::GripperStatic => "gripper_static",
            Self::GoalNotReached => "goal_not_reached",
        }
    }

    /// The name in words, as people read it ("colour drift").
    pub fn label(self) -> String {
        self.name().replace('_', " ")
    }

    /// Glitches break physics; the rest are an incomplete task.
    pub fn is_glitch(self) -> bool {
        !matches!(self, Self::GripperStatic | Self::GoalNotReached)
    }
}

/// An axis-aligned pixel rectangle in the plan frames' coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One problem at one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Index into the plan frames (0 = the first generated frame).
    pub frame_idx: usize,
    /// Label of the object concerned (`gripper` for the gripper, `scene` for none).
    pub object: String,
    pub kind: FindingKind,
    pub region: PixelRect,
}

impl Finding {
    /// What a person reads: the object and the kind, e.g. "block colour drift".
    pub fn label(&self) -> String {
        format!("{} {}", self.object, self.kind.label())
    }
}

/// A critic's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// One sentence (at most [`MAX_FEEDBACK_WORDS`] words): what is wrong and what to do.
    pub feedback: String,
    pub findings: Vec<Finding>,
    /// Wall time the review took.
    #[serde(with = "duration_ms", rename = "latency_ms")]
    pub latency: Duration,
}

impl Review {
    pub fn is_accept(&self) -> bool {
        self.verdict == Verdict::Accept
    }

    /// A review saying the critic could not judge.
    pub fn unavailable(reason: impl Into<String>, latency: Duration) -> Self {
        let reason = reason.into();
        Self {
            feedback: String::new(),
            verdict: Verdict::Unavailable { reason },
            findings: Vec::new(),
            latency,
        }
    }
}

/// A judge of plans. Object safe and shareable across threads (the studio reviews on
/// worker threads).
pub trait Critic: Send + Sync {
    /// Short name for records and logs (`perception`, `vlm`, `local`).
    fn name(&self) -> &str;
    /// Judges one plan. Never panics on any input; problems become `Verdict::Unavailable`.
    fn review(&self, input: &CriticInput<'_>) -> Review;
}

/// The absent critic (`--critic none`): it never judges, so a loop that goes on when the
/// critic is unavailable refines with the instruction alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCritic;

impl Critic for NoCritic {
    fn name(&self) -> &str {
        "none"
    }

    fn review(&self, _input: &CriticInput<'_>) -> Review {
        Review::unavailable("no critic", Duration::ZERO)
    }
}

/// Cuts `text` to at most [`MAX_FEEDBACK_WORDS`] words (ending it with a full stop).
pub fn clamp_feedback(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= MAX_FEEDBACK_WORDS {
        return words.join(" ");
    }
    let mut s = words[..MAX_FEEDBACK_WORDS].join(" ");
    let trimmed = s.trim_end_matches([',', ';', ':', '.']).len();
    s.truncate(trimmed);
    s.push('.');
    s
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    /// Negative or NaN latencies read as 0; one too large for a `Duration` is an error (a
    /// plan file is input: `Duration::from_secs_f64` would panic on it).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms.max(0.0) / 1e3).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_kinds_are_named_as_in_json() {
        for kind in FindingKind::ALL {
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.name());
        }
    }

    #[test]
    fn feedback_is_clamped_to_twenty_words() {
        let long = (0..30)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let s = clamp_feedback(&long);
        assert_eq!(s.split_whitespace().count(), MAX_FEEDBACK_WORDS);
        assert!(s.ends_with('.'));
        assert_eq!(clamp_feedback("  Fine   as is. "), "Fine as is.");
    }

    #[test]
    fn review_round_trips_through_json() {
        let r = Review {
            verdict: Verdict::Unavailable {
                reason: "down".into(),
            },
            feedback: String::new(),
            findings: vec![Finding {
                frame_idx: 2,
                object: "block".into(),
                kind: FindingKind::Teleport,
                region: PixelRect {
                    x: 1,
                    y: 2,
                    width: 3,
                    height: 4,
                },
            }],
            latency: Duration::from_millis(12),
        };
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["verdict"], "unavailable");
        assert_eq!(json["reason"], "down");
        assert_eq!(json["findings"][0]["kind"], "teleport");
        let back: Review = serde_json::from_value(json).expect("back");
        assert_eq!(back, r);
        let mut drift = r.findings[0].clone();
        drift.kind = FindingKind::ColourDrift;
        assert_eq!(drift.label(), "block colour drift");
    }

    #[test]
    fn critics_are_object_safe_and_shareable() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn Critic>();
    }
}
