//! What the studio shows and edits, as plain data: the plans of this session with their
//! refinement iterations, the selection, the labels. No egui and no ML here, so every
//! behaviour is testable without a window (see [`super::command`] for how it changes).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::env::Rgb8Image;

/// Identifies a plan within the studio (stable while the studio runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlanId(pub u64);

/// A critic's verdict on one iteration, as the studio shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Critique {
    pub critic: String,
    /// `None`: the critic could not judge (its reason is the feedback).
    pub accepted: Option<bool>,
    pub feedback: String,
    pub findings: Vec<FindingView>,
    pub latency_ms: f64,
}

impl Critique {
    /// The studio's view of a critic's review of the 7 generated frames (the studio shows the
    /// start frame first, so frame indices shift by one).
    pub fn from_review(critic: &str, review: &crate::critic::Review) -> Self {
        use crate::critic::Verdict;
        Self {
            critic: critic.to_owned(),
            accepted: match &review.verdict {
                Verdict::Accept => Some(true),
                Verdict::Reject => Some(false),
                Verdict::Unavailable { .. } => None,
            },
            feedback: match &review.verdict {
                Verdict::Unavailable { reason } => reason.clone(),
                _ => review.feedback.clone(),
            },
            findings: review
                .findings
                .iter()
                .map(|f| FindingView {
                    frame_idx: f.frame_idx.saturating_add(1),
                    text: f.label(),
                    region: [f.region.x, f.region.y, f.region.width, f.region.height],
                })
                .collect(),
            latency_ms: review.latency.as_secs_f64() * 1e3,
        }
    }
}

/// One thing a critic found wrong, pinned to a frame and a region of it.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingView {
    pub frame_idx: usize,
    pub text: String,
    /// Pixel rectangle `[x, y, w, h]` in the plan frame's coordinates.
    pub region: [u32; 4],
}

/// One generation of a plan: the start frame followed by the generated frames.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationView {
    pub frames: Vec<Rgb8Image>,
    pub critique: Option<Critique>,
    pub sample_ms: f64,
}

/// An executed plan: the world's frames while the controller followed it.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutView {
    pub frames: Vec<Rgb8Image>,
    pub success: bool,
    pub steps: usize,
}

/// Where a plan came from: a world start, or an image the user opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOrigin {
    pub world: String,
    pub task: String,
    pub view: usize,
    pub seed: u64,
}

/// A plan with every refinement iteration, as shown in the viewport.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanView {
    pub id: PlanId,
    pub origin: PlanOrigin,
    pub instruction: String,
    pub iterations: Vec<IterationView>,
    /// The iteration the refinement loop returned (the first accepted one, else the last).
    pub chosen: usize,
    pub rollout: Option<RolloutView>,
    /// When the plan was made, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Every annotator with a label on this plan in the store (the browser filters by them).
    pub labelled_by: BTreeSet<String>,
}

/// Now, in milliseconds since the Unix epoch (what [`PlanView::created_ms`] counts).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PlanView {
    /// The critic's verdict on the iteration the loop returned (`None`: not judged).
    pub fn critic_verdict(&self) -> Option<bool> {
        self.iterations
            .get(self.chosen)
            .and_then(|it| it.critique.as_ref())
            .and_then(|c| c.accepted)
    }

    /// Frames per iteration (the longest one, so a short iteration never hides frames).
    pub fn frame_count(&self) -> usize {
        self.iterations
            .iter()
            .map(|it| it.frames.len())
            .max()
            .unwrap_or(0)
    }

    /// One line for lists: `push  corner2  #12`.
    pub fn title(&self) -> String {
        format!(
            "{}  view {}  #{}",
            self.origin.task, self.origin.view, self.origin.seed
        )
    }
}

/// Accept or reject, the annotator's main decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Accept,
    Reject,
}

/// Hallucination kinds annotators tag plans with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tag {
    ObjectVanished,
    Teleport,
    WrongObject,
    Physics,
    GoalNotReached,
    ColourDrift,
}

impl Tag {
    pub const ALL: [Tag; 6] = [
        Tag::ObjectVanished,
        Tag::Teleport,
        Tag::WrongObject,
        Tag::Physics,
        Tag::GoalNotReached,
        Tag::ColourDrift,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tag::ObjectVanished => "object vanished",
            Tag::Teleport => "teleport",
            Tag::WrongObject => "wrong object",
            Tag::Physics => "physics",
            Tag::GoalNotReached => "goal not reached",
            Tag::ColourDrift => "colour drift",
        }
    }
}

/// Pairwise preference between two iterations (GenAI-Arena style, with ties).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preference {
    ABetter,
    BBetter,
    BothGood,
    BothBad,
}

impl Preference {
    pub const ALL: [Preference; 4] = [
        Preference::ABetter,
        Preference::BBetter,
        Preference::BothGood,
        Preference::BothBad,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Preference::ABetter => "A is better",
            Preference::BBetter => "B is better",
            Preference::BothGood => "Both good",
            Preference::BothBad => "Both bad",
        }
    }
}

/// A hallucination marked by hand on one frame of one iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMark {
    pub iteration: usize,
    pub frame_idx: usize,
    /// `[x, y, w, h]` in plan-frame pixels.
    pub region: [u32; 4],
}

/// Everything an annotator says about one plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub verdict: Option<Verdict>,
    /// 1 (useless) to 5 (perfect).
    pub rating: Option<u8>,
    pub tags: BTreeSet<Tag>,
    pub note: String,
    pub marks: Vec<FrameMark>,
    /// `(a, b, preference)` between iterations `a` and `b`.
    pub preference: Option<(usize, usize, Preference)>,
    pub annotator: String,
}

impl Label {
    /// An annotator has decided (accept or reject); rating and tags alone do not count.
    pub fn is_decided(&self) -> bool {
        self.verdict.is_some()
    }
}

/// How two iterations (or a plan and its rollout) are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareMode {
    SideBySide,
    Wipe,
    OnionSkin,
    Difference,
}

impl CompareMode {
    pub const ALL: [CompareMode; 4] = [
        CompareMode::SideBySide,
        CompareMode::Wipe,
        CompareMode::OnionSkin,
        CompareMode::Difference,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CompareMode::SideBySide => "Side by side",
            CompareMode::Wipe => "Wipe",
            CompareMode::OnionSkin => "Onion skin",
            CompareMode::Difference => "Difference",
        }
    }
}

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareSource {
    Iteration(usize),
    Rollout,
}

/// The compare view's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompareState {
    pub mode: CompareMode,
    pub a: CompareSource,
    pub b: CompareSource,
    /// Wipe position / onion-skin opacity of B, 0..1.
    pub mix: f32,
}

impl Default for CompareState {
    fn default() -> Self {
        Self {
            mode: CompareMode::SideBySide,
            a: CompareSource::Iteration(0),
            b: CompareSource::Iteration(1),
            mix: 0.5,
        }
    }
}

/// Which plans the browser lists, and in which order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanFilter {
    /// Only this task (`None`: all).
    pub task: Option<String>,
    /// Only this camera view.
    pub view: Option<usize>,
    pub status: StatusFilter,
    /// Only plans carrying this tag.
    pub tag: Option<Tag>,
    pub critic: CriticFilter,
    /// Only plans this annotator labelled.
    pub annotator: Option<String>,
    pub age: AgeFilter,
    pub sort: SortOrder,
}

/// Generates the `ALL` list and `label()` of a browser choice enum from `Variant => "label"`.
macro_rules! choice_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub enum $name {
            #[default]
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

choice_enum!(
    /// Label status filter of the browser.
    StatusFilter {
        All => "Any label",
        Unlabeled => "Unlabeled",
        Accepted => "Accepted",
        Rejected => "Rejected",
    }
);

choice_enum!(
    /// The critic's verdict on the returned iteration.
    CriticFilter {
        All => "Any critic verdict",
        Accepted => "Critic accepted",
        Rejected => "Critic rejected",
        Unjudged => "Not judged",
    }
);

choice_enum!(
    /// How recent a plan is.
    AgeFilter {
        All => "Any date",
        Day => "Last 24 hours",
        Week => "Last 7 days",
    }
);

choice_enum!(
    /// The browser's order.
    SortOrder {
        Oldest => "Oldest first",
        Newest => "Newest first",
        Task => "By task",
        Rating => "Best rated first",
    }
);

impl PlanFilter {
    /// Whether `plan` (labelled `label` by the current annotator) is listed at time `now_ms`.
    pub fn matches(&self, plan: &PlanView, label: Option<&Label>, now_ms: i64) -> bool {
        let task_ok = self.task.as_ref().is_none_or(|t| *t == plan.origin.task);
        let view_ok = self.view.is_none_or(|v| v == plan.origin.view);
        let verdict = label.and_then(|l| l.verdict);
        let status_ok = match self.status {
            StatusFilter::All => true,
            StatusFilter::Unlabeled => verdict.is_none(),
            StatusFilter::Accepted => verdict == Some(Verdict::Accept),
            StatusFilter::Rejected => verdict == Some(Verdict::Reject),
        };
        let tag_ok = self
            .tag
            .is_none_or(|t| label.is_some_and(|l| l.tags.contains(&t)));
        let critic_ok = match self.critic {
            CriticFilter::All => true,
            CriticFilter::Accepted => plan.critic_verdict() == Some(true),
            CriticFilter::Rejected => plan.critic_verdict() == Some(false),
            CriticFilter::Unjudged => plan.critic_verdict().is_none(),
        };
        let annotator_ok = self.annotator.as_ref().is_none_or(|a| {
            plan.labelled_by.contains(a)
                || label.is_some_and(|l| l.is_decided() && l.annotator == *a)
        });
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let age_ok = match self.age {
            AgeFilter::All => true,
            AgeFilter::Day => now_ms - plan.created_ms <= DAY_MS,
            AgeFilter::Week => now_ms - plan.created_ms <= 7 * DAY_MS,
        };
        task_ok && view_ok && status_ok && tag_ok && critic_ok && annotator_ok && age_ok
    }

    /// Orders `plans` (each with the current annotator's label) as the browser lists them;
    /// ties keep their order.
    pub fn sort(&self, plans: &mut [(&PlanView, Option<&Label>)]) {
        match self.sort {
            SortOrder::Oldest => plans.sort_by_key(|(p, _)| (p.created_ms, p.id)),
            SortOrder::Newest => {
                plans.sort_by_key(|(p, _)| std::cmp::Reverse((p.created_ms, p.id)));
            }
            SortOrder::Task => plans.sort_by(|(a, _), (b, _)| a.origin.task.cmp(&b.origin.task)),
            SortOrder::Rating => {
                plans.sort_by_key(|(_, l)| std::cmp::Reverse(l.and_then(|l| l.rating).unwrap_or(0)))
            }
        }
    }
}
