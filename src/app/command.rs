//! Everything a person can do in the studio, as [`Command`]s, and the one place that applies
//! them ([`Studio::apply`]). Panels never mutate state: they push commands. Label changes are
//! recorded here (undo/redo and the annotation audit log); commands that start background work
//! come back out as [`JobCommand`]s for the app to run.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::playback::Playback;
use super::state::{
    CompareState, FrameMark, Label, PlanFilter, PlanId, PlanView, Preference, Tag, Verdict,
};

/// Work that runs off the UI thread; the app turns these into jobs.
#[derive(Clone, Debug, PartialEq)]
pub enum JobCommand {
    Generate,
    Execute,
    /// Fine-tune a copy of the model on the curated set.
    FineTune,
    /// Switch to the model the last fine-tune produced.
    UseFineTuned,
    DiscardFineTuned,
    /// Reload the model on another device (`auto`, `cpu`, `cuda`, `metal`).
    SwitchDevice(String),
    /// Show or hide the old-vs-new model comparison.
    ToggleModelComparison,
    /// Export the selected plan's chosen iteration, or all its iterations as a grid.
    Export {
        format: crate::store::export::VideoFormat,
        all_iterations: bool,
    },
    /// Choose a first-frame image with a file dialog.
    OpenImage,
    /// Go back to world starts.
    ClearImage,
    Cancel,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    SelectPlan(PlanId),
    NextPlan,
    PreviousPlan,
    /// The next plan (in list order, wrapping) without a verdict.
    NextUnlabeled,
    TogglePlay,
    StepFrames(i64),
    FirstFrame,
    LastFrame,
    SeekFrame(usize),
    /// Jump to a critic finding: its frame, and highlight its region.
    SelectFinding {
        iteration: usize,
        finding: usize,
    },
    SetVerdict(Verdict),
    SetRating(u8),
    ToggleTag(Tag),
    SetNote(String),
    AddMark(FrameMark),
    RemoveMark(usize),
    SetPreference(Preference),
    Undo,
    Redo,
    SetCompare(CompareState),
    SetFilter(PlanFilter),
    SetAnnotator(String),
    /// Auto-advance to the next unlabeled plan after a verdict.
    SetAutoAdvance(bool),
    /// Demo mode: the viewport alone, large frames, playing (for talks).
    ToggleDemo,
    Job(JobCommand),
}

/// One change of one plan's label: what the audit log keeps and undo restores.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelChange {
    pub plan: PlanId,
    pub annotator: String,
    pub time: SystemTime,
    pub before: Label,
    pub after: Label,
}

/// The studio's state and its history.
#[derive(Debug, Default)]
pub struct Studio {
    pub plans: Vec<PlanView>,
    pub labels: BTreeMap<PlanId, Label>,
    pub selected: Option<PlanId>,
    pub playback: Playback,
    /// `(iteration, finding index)` whose region is highlighted.
    pub highlight: Option<(usize, usize)>,
    pub compare: CompareState,
    pub filter: PlanFilter,
    pub annotator: String,
    pub auto_advance: bool,
    pub demo: bool,
    undo: Vec<LabelChange>,
    redo: Vec<LabelChange>,
    /// Every label change, undo and redo included, oldest first.
    pub audit: Vec<LabelChange>,
    /// Labels changed since the app last saved them.
    pub unsaved: Vec<PlanId>,
    next_id: u64,
}

impl Studio {
    pub fn new(annotator: impl Into<String>) -> Self {
        Self {
            annotator: annotator.into(),
            auto_advance: true,
            ..Self::default()
        }
    }

    /// A fresh id for a plan about to be added.
    pub fn next_plan_id(&mut self) -> PlanId {
        self.next_id += 1;
        PlanId(self.next_id)
    }

    /// Adds (or replaces, by id) a plan; the first plan added gets selected.
    pub fn upsert_plan(&mut self, plan: PlanView) {
        self.next_id = self.next_id.max(plan.id.0);
        match self.plans.iter_mut().find(|p| p.id == plan.id) {
            Some(existing) => *existing = plan,
            None => self.plans.push(plan),
        }
        if self.selected.is_none() {
            self.selected = self.plans.first().map(|p| p.id);
        }
    }

    /// Labels read back from the store: not edits, so neither undoable nor saved again.
    pub fn load_labels(&mut self, labels: Vec<(PlanId, Label)>) {
        self.labels.extend(labels);
    }

    pub fn plan(&self, id: PlanId) -> Option<&PlanView> {
        self.plans.iter().find(|p| p.id == id)
    }

    pub fn selected_plan(&self) -> Option<&PlanView> {
        self.selected.and_then(|id| self.plan(id))
    }

    pub fn selected_label(&self) -> Option<&Label> {
        self.selected.and_then(|id| self.labels.get(&id))
    }

    /// Plans the browser lists under the current filter, in its order.
    pub fn visible_plans(&self) -> Vec<&PlanView> {
        let now = crate::app::state::now_ms();
        let mut listed: Vec<(&PlanView, Option<&Label>)> = self
            .plans
            .iter()
            .map(|p| (p, self.labels.get(&p.id)))
            .filter(|(p, l)| self.filter.matches(p, *l, now))
            .collect();
        self.filter.sort(&mut listed);
        listed.into_iter().map(|(p, _)| p).collect()
    }

    /// The curated set: plans an annotator accepted.
    pub fn curated(&self) -> Vec<&PlanView> {
        self.plans
            .iter()
            .filter(|p| {
                self.labels
                    .get(&p.id)
                    .is_some_and(|l| l.verdict == Some(Verdict::Accept))
            })
            .collect()
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    fn frame_count(&self) -> usize {
        self.selected_plan().map_or(0, PlanView::frame_count)
    }

    /// Applies one command. Job commands are returned for the app to start.
    pub fn apply(&mut self, command: Command) -> Option<JobCommand> {
        let frames = self.frame_count();
        match command {
            Command::SelectPlan(id) => self.select(id),
            Command::NextPlan => self.select_relative(1),
            Command::PreviousPlan => self.select_relative(-1),
            Command::NextUnlabeled => self.select_next_unlabeled(),
            Command::TogglePlay => self.playback.toggle(),
            Command::StepFrames(delta) => self.playback.step(delta, frames),
            Command::FirstFrame => self.playback.seek(0, frames),
            Command::LastFrame => self.playback.seek(usize::MAX, frames),
            Command::SeekFrame(i) => self.playback.seek(i, frames),
            Command::SelectFinding { iteration, finding } => {
                let frame = self
                    .selected_plan()
                    .and_then(|p| p.iterations.get(iteration))
                    .and_then(|it| it.critique.as_ref())
                    .and_then(|c| c.findings.get(finding))
                    .map(|f| f.frame_idx);
                if let Some(frame) = frame {
                    self.playback.playing = false;
                    self.playback.seek(frame, frames);
                    self.highlight = Some((iteration, finding));
                }
            }
            Command::SetVerdict(verdict) => {
                self.edit_label(|l| l.verdict = Some(verdict));
                if self.auto_advance {
                    self.select_next_unlabeled();
                }
            }
            Command::SetRating(rating) => {
                self.edit_label(|l| l.rating = Some(rating.clamp(1, 5)));
            }
            Command::ToggleTag(tag) => self.edit_label(|l| {
                if !l.tags.remove(&tag) {
                    l.tags.insert(tag);
                }
            }),
            Command::SetNote(note) => self.edit_label(|l| l.note = note),
            Command::AddMark(mark) => self.edit_label(|l| l.marks.push(mark)),
            Command::RemoveMark(i) => self.edit_label(|l| {
                if i < l.marks.len() {
                    l.marks.remove(i);
                }
            }),
            Command::SetPreference(preference) => {
                let (a, b) = (self.compare.a, self.compare.b);
                if let (
                    super::state::CompareSource::Iteration(a),
                    super::state::CompareSource::Iteration(b),
                ) = (a, b)
                {
                    self.edit_label(|l| l.preference = Some((a, b, preference)));
                }
            }
            Command::Undo => self.undo_redo(true),
            Command::Redo => self.undo_redo(false),
            Command::SetCompare(compare) => self.compare = compare,
            Command::SetFilter(filter) => self.filter = filter,
            Command::SetAnnotator(name) => self.annotator = name,
            Command::SetAutoAdvance(on) => self.auto_advance = on,
            Command::ToggleDemo => {
                self.demo = !self.demo;
                self.playback.playing = self.demo;
            }
            Command::Job(job) => return Some(job),
        }
        None
    }

    fn select(&mut self, id: PlanId) {
        if self.plan(id).is_some() && self.selected != Some(id) {
            self.selected = Some(id);
            self.highlight = None;
            let frames = self.frame_count();
            self.playback.seek(self.playback.frame_idx, frames);
            let iterations = self.selected_plan().map_or(0, |p| p.iterations.len());
            self.compare.a = super::state::CompareSource::Iteration(0);
            self.compare.b = super::state::CompareSource::Iteration(iterations.saturating_sub(1));
        }
    }

    fn select_relative(&mut self, delta: isize) {
        let visible: Vec<PlanId> = self.visible_plans().iter().map(|p| p.id).collect();
        if visible.is_empty() {
            return;
        }
        let at = self
            .selected
            .and_then(|id| visible.iter().position(|v| *v == id));
        let next = match at {
            Some(i) => (i as isize + delta).rem_euclid(visible.len() as isize) as usize,
            None => 0,
        };
        self.select(visible[next]);
    }

    fn select_next_unlabeled(&mut self) {
        let order: Vec<PlanId> = self.plans.iter().map(|p| p.id).collect();
        let start = self
            .selected
            .and_then(|id| order.iter().position(|o| *o == id))
            .map_or(0, |i| i + 1);
        let unlabeled = (0..order.len())
            .map(|k| order[(start + k) % order.len()])
            .find(|id| !self.labels.get(id).is_some_and(Label::is_decided));
        if let Some(id) = unlabeled {
            self.select(id);
        }
    }

    /// Changes the selected plan's label through `edit`, recording the change.
    fn edit_label(&mut self, edit: impl FnOnce(&mut Label)) {
        let Some(plan) = self.selected else {
            return;
        };
        let before = self.labels.get(&plan).cloned().unwrap_or_default();
        let mut after = before.clone();
        edit(&mut after);
        after.annotator = self.annotator.clone();
        if after == before {
            return;
        }
        let change = LabelChange {
            plan,
            annotator: self.annotator.clone(),
            time: SystemTime::now(),
            before,
            after,
        };
        self.redo.clear();
        self.commit(change.clone());
        self.undo.push(change);
    }

    fn undo_redo(&mut self, undo: bool) {
        let (from, to) = if undo {
            (&mut self.undo, &mut self.redo)
        } else {
            (&mut self.redo, &mut self.undo)
        };
        let Some(change) = from.pop() else {
            return;
        };
        to.push(change.clone());
        let reverted = if undo {
            LabelChange {
                before: change.after,
                after: change.before,
                annotator: self.annotator.clone(),
                time: SystemTime::now(),
                plan: change.plan,
            }
        } else {
            LabelChange {
                annotator: self.annotator.clone(),
                time: SystemTime::now(),
                ..change
            }
        };
        self.select(reverted.plan);
        self.commit(reverted);
    }

    fn commit(&mut self, change: LabelChange) {
        if change.after == Label::default() {
            self.labels.remove(&change.plan);
        } else {
            self.labels.insert(change.plan, change.after.clone());
        }
        if !self.unsaved.contains(&change.plan) {
            self.unsaved.push(change.plan);
        }
        self.audit.push(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::{IterationView, PlanOrigin};
    use crate::env::Rgb8Image;

    fn plan(id: u64, task: &str) -> PlanView {
        let frame = Rgb8Image {
            width: 2,
            height: 2,
            pixels: vec![0; 12],
        };
        PlanView {
            id: PlanId(id),
            origin: PlanOrigin {
                world: "tabletop".into(),
                task: task.into(),
                view: 0,
                seed: id,
            },
            instruction: "push the block".into(),
            // Made an hour apart, the last one 10 hours ago.
            created_ms: crate::app::state::now_ms() - (10 + 100 - id as i64) * 3_600_000,
            labelled_by: Default::default(),
            iterations: vec![IterationView {
                frames: vec![frame; 8],
                critique: None,
                sample_ms: 1.0,
            }],
            chosen: 0,
            rollout: None,
        }
    }

    fn studio(n: u64) -> Studio {
        let mut s = Studio::new("ann");
        for id in 1..=n {
            s.upsert_plan(plan(id, if id % 2 == 0 { "push" } else { "door-open" }));
        }
        s
    }

    #[test]
    fn verdicts_auto_advance_to_the_next_unlabeled_plan() {
        let mut s = studio(3);
        assert_eq!(s.selected, Some(PlanId(1)));
        s.apply(Command::SetVerdict(Verdict::Accept));
        assert_eq!(s.selected, Some(PlanId(2)));
        s.apply(Command::SetVerdict(Verdict::Reject));
        assert_eq!(s.selected, Some(PlanId(3)));
        s.apply(Command::SelectPlan(PlanId(1)));
        s.apply(Command::NextUnlabeled);
        assert_eq!(s.selected, Some(PlanId(3)), "skips labelled plans");
        assert_eq!(s.curated().len(), 1);
    }

    #[test]
    fn undo_and_redo_restore_labels_and_keep_an_audit_trail() {
        let mut s = studio(2);
        s.auto_advance = false;
        s.apply(Command::SetRating(4));
        s.apply(Command::ToggleTag(Tag::Teleport));
        s.apply(Command::SetVerdict(Verdict::Reject));
        let full = s.selected_label().cloned().expect("labelled");
        assert_eq!(full.rating, Some(4));
        assert!(full.tags.contains(&Tag::Teleport));
        s.apply(Command::Undo);
        assert_eq!(s.selected_label().and_then(|l| l.verdict), None);
        s.apply(Command::Undo);
        s.apply(Command::Undo);
        assert!(s.selected_label().is_none(), "back to unlabelled");
        assert!(!s.can_undo());
        s.apply(Command::Redo);
        s.apply(Command::Redo);
        s.apply(Command::Redo);
        assert_eq!(s.selected_label(), Some(&full));
        assert_eq!(s.audit.len(), 9, "3 edits, 3 undos, 3 redos");
        s.apply(Command::SetRating(2));
        assert!(!s.can_redo(), "a new edit clears the redo stack");
    }

    #[test]
    fn undo_selects_the_plan_it_changes() {
        let mut s = studio(3);
        s.apply(Command::SetVerdict(Verdict::Accept)); // plan 1, advances to 2
        assert_eq!(s.selected, Some(PlanId(2)));
        s.apply(Command::Undo);
        assert_eq!(s.selected, Some(PlanId(1)));
        assert!(s.selected_label().is_none());
    }

    #[test]
    fn filters_and_navigation_follow_the_visible_list() {
        let mut s = studio(4);
        s.apply(Command::SetFilter(PlanFilter {
            task: Some("push".into()),
            ..PlanFilter::default()
        }));
        let visible: Vec<PlanId> = s.visible_plans().iter().map(|p| p.id).collect();
        assert_eq!(visible, vec![PlanId(2), PlanId(4)]);
        s.apply(Command::NextPlan);
        assert_eq!(s.selected, Some(PlanId(2)));
        s.apply(Command::NextPlan);
        assert_eq!(s.selected, Some(PlanId(4)));
        s.apply(Command::NextPlan);
        assert_eq!(s.selected, Some(PlanId(2)), "wraps around");
    }

    #[test]
    fn every_browser_filter_and_order() {
        use crate::app::state::{AgeFilter, CriticFilter, Critique, SortOrder};
        let mut s = studio(4);
        let critique = |accepted| {
            Some(Critique {
                critic: "perception".into(),
                accepted,
                feedback: String::new(),
                findings: Vec::new(),
                latency_ms: 0.0,
            })
        };
        s.plans[0].iterations[0].critique = critique(Some(true));
        s.plans[1].iterations[0].critique = critique(Some(false));
        s.plans[1].origin.view = 2;
        s.plans[2].labelled_by.insert("bob".into());
        s.plans[3].created_ms -= 30 * 24 * 3_600_000;
        s.apply(Command::SelectPlan(PlanId(2)));
        s.apply(Command::SetRating(5));
        let listed = |s: &mut Studio, filter: PlanFilter| -> Vec<u64> {
            s.apply(Command::SetFilter(filter));
            s.visible_plans().iter().map(|p| p.id.0).collect()
        };
        let f = PlanFilter::default;
        assert_eq!(listed(&mut s, f()), [4, 1, 2, 3], "oldest first");
        let view = PlanFilter {
            view: Some(2),
            ..f()
        };
        assert_eq!(listed(&mut s, view), [2]);
        let accepted = PlanFilter {
            critic: CriticFilter::Accepted,
            ..f()
        };
        assert_eq!(listed(&mut s, accepted), [1]);
        let unjudged = PlanFilter {
            critic: CriticFilter::Unjudged,
            ..f()
        };
        assert_eq!(listed(&mut s, unjudged), [4, 3]);
        let bob = PlanFilter {
            annotator: Some("bob".into()),
            ..f()
        };
        assert_eq!(listed(&mut s, bob), [3]);
        let week = PlanFilter {
            age: AgeFilter::Week,
            ..f()
        };
        assert_eq!(listed(&mut s, week), [1, 2, 3]);
        let newest = PlanFilter {
            sort: SortOrder::Newest,
            ..f()
        };
        assert_eq!(listed(&mut s, newest), [3, 2, 1, 4]);
        let rated = PlanFilter {
            sort: SortOrder::Rating,
            ..f()
        };
        assert_eq!(listed(&mut s, rated)[0], 2, "the rated plan first");
    }

    #[test]
    fn findings_seek_their_frame() {
        let mut s = studio(1);
        let mut p = plan(1, "push");
        p.iterations[0].critique = Some(crate::app::state::Critique {
            critic: "perception".into(),
            accepted: Some(false),
            feedback: "The block vanishes.".into(),
            findings: vec![crate::app::state::FindingView {
                frame_idx: 5,
                text: "block vanished".into(),
                region: [1, 1, 4, 4],
            }],
            latency_ms: 1.0,
        });
        s.upsert_plan(p);
        s.apply(Command::SelectFinding {
            iteration: 0,
            finding: 0,
        });
        assert_eq!(s.playback.frame_idx, 5);
        assert_eq!(s.highlight, Some((0, 0)));
        assert_eq!(
            s.apply(Command::Job(JobCommand::Generate)),
            Some(JobCommand::Generate)
        );
    }
}
