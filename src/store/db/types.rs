//! The values the store takes and returns: new records, labels, filters and summaries.
//! Plain data (serde), no database handles, so the studio can move them across threads.

use serde::{Deserialize, Serialize};

use crate::env::Rgb8Image;
use crate::store::plan_record::SamplerRecord;

/// A plan's row id in this store (not stable across stores: see [`PlanSummary::uid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlanId(pub i64);

/// An audit-log entry's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuditId(pub i64);

/// A training run's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub i64);

impl std::fmt::Display for PlanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A plan to record: what was asked, of which model, and the start frame.
#[derive(Clone, Debug)]
pub struct NewPlan {
    pub world: String,
    pub task: String,
    pub view: usize,
    pub env_seed: u64,
    pub sample_seed: u64,
    pub instruction: String,
    /// The model folder or id that generated the plan.
    pub model: String,
    pub sampler: SamplerRecord,
    pub start_frame: Rgb8Image,
}

/// Accept or reject: a critic's verdict on an iteration, or an annotator's on a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accept" => Some(Self::Accept),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// What the critic found wrong in one frame, and where (stores from before regions were
/// kept read as `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub frame_idx: usize,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Rect>,
}

/// One generate-or-refine step: the generated frames and the critic's review of them.
#[derive(Clone, Debug)]
pub struct NewIteration {
    /// The generated frames (the start frame is the plan's, not repeated here).
    pub frames: Vec<Rgb8Image>,
    pub critique: String,
    pub verdict: Option<Verdict>,
    pub findings: Vec<Finding>,
}

/// A rectangle in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A mark an annotator put on one frame: where, and optionally why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMark {
    /// 0 = the start frame, 1..=7 the generated frames of the last iteration.
    pub frame_idx: usize,
    pub region: Rect,
    #[serde(default)]
    pub note: String,
}

/// One annotator's label of one plan. Every field is optional so a label can be built up key
/// by key (accept, then rate, then tag).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// 1 (worst) to 5 (best).
    #[serde(default)]
    pub rating: Option<u8>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub marks: Vec<FrameMark>,
    /// Which of two refinement iterations of this plan is better (absent in older stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration_preference: Option<IterationPreference>,
}

/// A pairwise judgement of two iterations of one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationPreference {
    pub a: usize,
    pub b: usize,
    pub choice: Preference,
}

/// A stored annotation: the label, whose, and when it last changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnotationRecord {
    pub annotator: String,
    pub updated_ms: i64,
    pub annotation: Annotation,
}

/// A pairwise judgement of two plans (GenAI-Arena style, ties allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    AOverB,
    BOverA,
    BothGood,
    BothBad,
}

impl Preference {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AOverB => "a_over_b",
            Self::BOverA => "b_over_a",
            Self::BothGood => "both_good",
            Self::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::AOverB, Self::BOverA, Self::BothGood, Self::BothBad]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// A stored pairwise preference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    pub plan_a: PlanId,
    pub plan_b: PlanId,
    pub annotator: String,
    pub choice: Preference,
    pub updated_ms: i64,
}

/// The outcome of executing a plan in the world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewExecution {
    /// Which iteration was executed (None = the last).
    pub iteration: Option<usize>,
    pub success: bool,
    pub steps: usize,
    /// Anything else worth keeping (replans, final object error, ...).
    pub details: serde_json::Value,
}

/// A stored execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: i64,
    pub execution: NewExecution,
    pub created_ms: i64,
}

/// Which labels a listing keeps (relative to [`Filter::annotator`], or anyone's when None).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelFilter {
    #[default]
    Any,
    /// No verdict yet.
    Unlabeled,
    Accepted,
    Rejected,
}

/// A query over plans; the default lists every plan, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub task: Option<String>,
    pub view: Option<usize>,
    pub model: Option<String>,
    pub curated: Option<bool>,
    pub label: LabelFilter,
    pub annotator: Option<String>,
    /// Keep plans some annotator (or [`Filter::annotator`]) tagged with this.
    pub tag: Option<String>,
    /// Only plans after this one (paging, "next").
    pub after: Option<PlanId>,
    pub limit: Option<usize>,
}

/// One row of the plan browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub id: PlanId,
    pub uid: String,
    pub world: String,
    pub task: String,
    pub view: usize,
    pub env_seed: u64,
    pub instruction: String,
    pub model: String,
    pub created_ms: i64,
    pub iterations: usize,
    /// The critic's verdict on the last iteration.
    pub critic_verdict: Option<Verdict>,
    pub curated: bool,
    pub accepts: usize,
    pub rejects: usize,
    pub mean_rating: Option<f64>,
}

/// A stored iteration (frames are loaded separately with [`super::Store::load_frames`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub idx: usize,
    pub critique: String,
    pub verdict: Option<Verdict>,
    pub findings: Vec<Finding>,
    /// Content hashes of the generated frames.
    pub frames: Vec<String>,
    pub created_ms: i64,
}

/// Everything about one plan except pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanDetail {
    pub summary: PlanSummary,
    pub env_seed: u64,
    pub sample_seed: u64,
    pub sampler: SamplerRecord,
    pub start_frame: String,
    pub iterations: Vec<IterationRecord>,
    pub executions: Vec<ExecutionRecord>,
    pub annotations: Vec<AnnotationRecord>,
    /// Who curated it and when.
    pub curated: Option<(String, i64)>,
}

/// What kind of label an audit entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Annotation,
    Preference,
    Curation,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Annotation => "annotation",
            Self::Preference => "preference",
            Self::Curation => "curation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "annotation" => Some(Self::Annotation),
            "preference" => Some(Self::Preference),
            "curation" => Some(Self::Curation),
            _ => None,
        }
    }
}

/// One entry of the audit log: who changed which label when, from what to what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: AuditId,
    pub actor: String,
    pub at_ms: i64,
    /// `edit`, `undo`, `redo` or `import`.
    pub action: String,
    pub kind: ChangeKind,
    pub plan: PlanId,
    pub other_plan: Option<PlanId>,
    /// Whose label it is (annotations and preferences).
    pub subject: Option<String>,
    /// The state before (JSON; None = there was none).
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// A training run to record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewTrainingRun {
    pub name: String,
    pub out_dir: String,
    pub base_model: String,
    pub config: serde_json::Value,
    pub plans: Vec<PlanId>,
}

/// How a training run ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Stopped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Finished, Self::Failed, Self::Stopped]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A stored training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRunRecord {
    pub id: RunId,
    pub run: NewTrainingRun,
    pub status: RunStatus,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
}
