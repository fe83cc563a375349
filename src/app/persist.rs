//! The studio's link to the plan store ([`crate::store::db`]): opening it off the UI thread
//! (recovery report included), loading its plans and labels, and a writer thread that saves
//! every label change in order. Labels are the annotators' work: a write that fails is
//! reported (a toast) and retried with the next change, never dropped silently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::store::db::{self, Annotation, Filter, Store};

use super::state::{
    Critique, FindingView, FrameMark, IterationView, Label, PlanId, PlanOrigin, PlanView,
    Preference, Tag, Verdict,
};

/// Plans loaded at start (the newest first, at most this many).
const LOAD_LIMIT: usize = 500;

/// What opening the store found.
pub struct OpenedStore {
    pub store: Arc<Store>,
    pub report: String,
    pub plans: Vec<PlanView>,
    pub labels: Vec<(PlanId, Label)>,
    /// Plans that could not be loaded, with the reason.
    pub warnings: Vec<String>,
}

/// Opens (creating if needed) the store in `dir`; imports the sample plans into an empty one.
pub fn open_store(
    dir: PathBuf,
    samples: Option<PathBuf>,
    annotator: String,
) -> poll_promise::Promise<Result<OpenedStore, String>> {
    poll_promise::Promise::spawn_thread("open store", move || {
        let (store, report) = Store::open(&dir).map_err(|e| e.to_string())?;
        let store = Arc::new(store);
        let mut warnings = Vec::new();
        let empty = store
            .plans(&Filter::default())
            .map_err(|e| e.to_string())?
            .is_empty();
        if let (true, Some(samples)) = (empty, samples) {
            warnings.extend(import_samples(&store, &samples));
        }
        let (plans, labels, load_warnings) = load_plans(&store, &annotator);
        warnings.extend(load_warnings);
        Ok(OpenedStore {
            report: if report.is_clean() {
                format!("store {} checked: ok", dir.display())
            } else {
                format!("store {} repaired: {report}", dir.display())
            },
            store,
            plans,
            labels,
            warnings,
        })
    })
}

fn import_samples(store: &Store, dir: &Path) -> Vec<String> {
    let mut studio = super::command::Studio::default();
    let mut warnings = match super::samples::load_plan_folders(dir, &mut studio) {
        Ok(w) => w,
        Err(e) => return vec![format!("cannot open the sample plans: {e}")],
    };
    for plan in &studio.plans {
        if let Err(e) = save_plan(store, plan) {
            warnings.push(format!("cannot store sample plan {}: {e}", plan.title()));
        }
    }
    warnings
}

/// Records a plan (start frame, settings) and its iterations; returns its store id.
pub fn save_plan(store: &Store, plan: &PlanView) -> Result<db::PlanId, db::StoreError> {
    let start = plan
        .iterations
        .first()
        .and_then(|it| it.frames.first())
        .cloned()
        .unwrap_or_else(|| crate::env::Rgb8Image {
            width: 1,
            height: 1,
            pixels: vec![0; 3],
        });
    let id = add_plan(store, plan, start)?;
    for iteration in &plan.iterations {
        add_iteration(store, id, iteration)?;
    }
    Ok(id)
}

/// Records a plan without iterations (they follow as they are generated).
pub fn add_plan(
    store: &Store,
    plan: &PlanView,
    start_frame: crate::env::Rgb8Image,
) -> Result<db::PlanId, db::StoreError> {
    store.add_plan(&db::NewPlan {
        world: plan.origin.world.clone(),
        task: plan.origin.task.clone(),
        view: plan.origin.view,
        env_seed: plan.origin.seed,
        sample_seed: plan.origin.seed,
        instruction: plan.instruction.clone(),
        model: String::new(),
        sampler: crate::store::plan_record::SamplerRecord {
            kind: "ddim".into(),
            steps: 0,
            guidance: 0.0,
            precision: crate::model::precision::Precision::F32,
        },
        start_frame,
    })
}

/// Records one iteration (its generated frames: the start frame is the plan's).
pub fn add_iteration(
    store: &Store,
    plan: db::PlanId,
    iteration: &IterationView,
) -> Result<usize, db::StoreError> {
    let critique = iteration.critique.as_ref();
    store.add_iteration(
        plan,
        &db::NewIteration {
            frames: iteration.frames.iter().skip(1).cloned().collect(),
            critique: critique.map(|c| c.feedback.clone()).unwrap_or_default(),
            verdict: critique.and_then(|c| match c.accepted {
                Some(true) => Some(db::Verdict::Accept),
                Some(false) => Some(db::Verdict::Reject),
                None => None,
            }),
            findings: critique
                .map(|c| {
                    c.findings
                        .iter()
                        .map(|f| db::Finding {
                            frame_idx: f.frame_idx,
                            text: f.text.clone(),
                            region: Some(db::Rect {
                                x: f.region[0],
                                y: f.region[1],
                                width: f.region[2],
                                height: f.region[3],
                            }),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
    )
}

fn load_plans(
    store: &Store,
    annotator: &str,
) -> (Vec<PlanView>, Vec<(PlanId, Label)>, Vec<String>) {
    let (mut plans, mut labels, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let summaries = match store.plans(&Filter::default()) {
        Ok(s) => s,
        Err(e) => return (plans, labels, vec![e.to_string()]),
    };
    let skip = summaries.len().saturating_sub(LOAD_LIMIT);
    for summary in summaries.into_iter().skip(skip) {
        match load_plan(store, summary.id, annotator) {
            Ok((plan, label)) => {
                if let Some(label) = label {
                    labels.push((plan.id, label));
                }
                plans.push(plan);
            }
            Err(e) => warnings.push(format!("plan {}: {e}", summary.id)),
        }
    }
    (plans, labels, warnings)
}

fn load_plan(
    store: &Store,
    id: db::PlanId,
    annotator: &str,
) -> Result<(PlanView, Option<Label>), db::StoreError> {
    let detail = store.plan(id)?;
    let mut iterations = Vec::new();
    for record in &detail.iterations {
        let frames = store.load_frames(id, Some(record.idx))?;
        let critique =
            (!record.critique.is_empty() || record.verdict.is_some()).then(|| Critique {
                critic: "critic".into(),
                accepted: record.verdict.map(|v| v == db::Verdict::Accept),
                feedback: record.critique.clone(),
                findings: record
                    .findings
                    .iter()
                    .map(|f| FindingView {
                        frame_idx: f.frame_idx,
                        text: f.text.clone(),
                        region: f.region.map_or([0; 4], |r| [r.x, r.y, r.width, r.height]),
                    })
                    .collect(),
                latency_ms: 0.0,
            });
        iterations.push(IterationView {
            frames,
            critique,
            sample_ms: 0.0,
        });
    }
    let s = &detail.summary;
    let chosen = iterations
        .iter()
        .position(|it| it.critique.as_ref().and_then(|c| c.accepted) == Some(true))
        .unwrap_or(iterations.len().saturating_sub(1));
    let plan = PlanView {
        id: studio_id(id),
        origin: PlanOrigin {
            world: s.world.clone(),
            task: s.task.clone(),
            view: s.view,
            seed: s.env_seed,
        },
        instruction: s.instruction.clone(),
        iterations,
        chosen,
        rollout: None,
        created_ms: s.created_ms,
        labelled_by: detail
            .annotations
            .iter()
            .filter(|a| a.annotation.verdict.is_some())
            .map(|a| a.annotator.clone())
            .collect(),
    };
    let label = detail
        .annotations
        .iter()
        .find(|a| a.annotator == annotator)
        .map(|a| from_annotation(&a.annotation, &a.annotator));
    Ok((plan, label))
}

/// The studio id of a stored plan.
pub fn studio_id(id: db::PlanId) -> PlanId {
    PlanId(id.0 as u64)
}

fn store_id(id: PlanId) -> db::PlanId {
    db::PlanId(id.0 as i64)
}

/// The studio's label as the store's annotation (the iteration of a mark goes in its note).
pub fn to_annotation(label: &Label) -> Annotation {
    Annotation {
        verdict: label.verdict.map(|v| match v {
            Verdict::Accept => db::Verdict::Accept,
            Verdict::Reject => db::Verdict::Reject,
        }),
        rating: label.rating,
        tags: label.tags.iter().map(|t| t.label().to_owned()).collect(),
        note: label.note.clone(),
        marks: label
            .marks
            .iter()
            .map(|m| db::FrameMark {
                frame_idx: m.frame_idx,
                region: db::Rect {
                    x: m.region[0],
                    y: m.region[1],
                    width: m.region[2],
                    height: m.region[3],
                },
                note: format!("iteration {}", m.iteration),
            })
            .collect(),
        iteration_preference: label
            .preference
            .map(|(a, b, choice)| db::IterationPreference {
                a,
                b,
                choice: match choice {
                    Preference::ABetter => db::Preference::AOverB,
                    Preference::BBetter => db::Preference::BOverA,
                    Preference::BothGood => db::Preference::BothGood,
                    Preference::BothBad => db::Preference::BothBad,
                },
            }),
    }
}

pub fn from_annotation(a: &Annotation, annotator: &str) -> Label {
    Label {
        verdict: a.verdict.map(|v| match v {
            db::Verdict::Accept => Verdict::Accept,
            db::Verdict::Reject => Verdict::Reject,
        }),
        rating: a.rating,
        tags: a
            .tags
            .iter()
            .filter_map(|t| Tag::ALL.into_iter().find(|k| k.label() == t))
            .collect(),
        note: a.note.clone(),
        marks: a
            .marks
            .iter()
            .map(|m| FrameMark {
                iteration: m
                    .note
                    .strip_prefix("iteration ")
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0),
                frame_idx: m.frame_idx,
                region: [m.region.x, m.region.y, m.region.width, m.region.height],
            })
            .collect(),
        preference: a.iteration_preference.map(|p| {
            let choice = match p.choice {
                db::Preference::AOverB => Preference::ABetter,
                db::Preference::BOverA => Preference::BBetter,
                db::Preference::BothGood => Preference::BothGood,
                db::Preference::BothBad => Preference::BothBad,
            };
            (p.a, p.b, choice)
        }),
        annotator: annotator.to_owned(),
    }
}

/// One label to save: the plan, its label now (`None`: cleared), and who.
struct LabelWrite {
    plan: PlanId,
    label: Option<Label>,
    annotator: String,
}

/// Saves labels on a worker thread, in order; failures come back as messages.
pub struct LabelWriter {
    tx: SyncSender<LabelWrite>,
    errors: Receiver<String>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl LabelWriter {
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, rx) = sync_channel::<LabelWrite>(256);
        let (err_tx, errors) = sync_channel(64);
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = pending.clone();
        std::thread::spawn(move || {
            for write in rx {
                if let Err(e) = write_label(&store, &write) {
                    let _ =
                        err_tx.try_send(format!("label of plan {} not saved: {e}", write.plan.0));
                }
                counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self {
            tx,
            errors,
            pending,
        }
    }

    /// Queues a save; `false` when the queue is full (try again next frame).
    pub fn save(&self, plan: PlanId, label: Option<Label>, annotator: &str) -> bool {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let write = LabelWrite {
            plan,
            label,
            annotator: annotator.to_owned(),
        };
        match self.tx.try_send(write) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                false
            }
        }
    }

    /// Saves not yet done.
    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.try_iter().collect()
    }
}

fn write_label(store: &Store, write: &LabelWrite) -> Result<(), db::StoreError> {
    let id = store_id(write.plan);
    match &write.label {
        Some(label) => {
            store.annotate(id, &to_annotation(label), &write.annotator)?;
            store.curate(id, label.verdict == Some(Verdict::Accept), &write.annotator)?;
        }
        None => {
            store.clear_annotation(id, &write.annotator)?;
            store.curate(id, false, &write.annotator)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_survive_the_round_trip_through_the_store_types() {
        let label = Label {
            verdict: Some(Verdict::Reject),
            rating: Some(2),
            tags: [Tag::Teleport, Tag::Physics].into_iter().collect(),
            note: "block jumps".into(),
            marks: vec![FrameMark {
                iteration: 2,
                frame_idx: 5,
                region: [1, 2, 3, 4],
            }],
            preference: Some((0, 2, Preference::BBetter)),
            annotator: "ann".into(),
        };
        assert_eq!(from_annotation(&to_annotation(&label), "ann"), label);
    }

    #[test]
    fn findings_keep_their_regions_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path()).expect("store");
        let frame = |v: u8| crate::env::Rgb8Image {
            width: 4,
            height: 4,
            pixels: vec![v; 48],
        };
        let finding = FindingView {
            frame_idx: 3,
            text: "block vanished".into(),
            region: [1, 2, 3, 2],
        };
        let plan = PlanView {
            id: PlanId(1),
            origin: PlanOrigin {
                world: "tabletop".into(),
                task: "push".into(),
                view: 0,
                seed: 1,
            },
            instruction: "push the block".into(),
            iterations: vec![IterationView {
                frames: (0..8).map(frame).collect(),
                critique: Some(Critique {
                    critic: "critic".into(),
                    accepted: Some(false),
                    feedback: "The block vanishes.".into(),
                    findings: vec![finding.clone()],
                    latency_ms: 0.0,
                }),
                sample_ms: 0.0,
            }],
            chosen: 0,
            rollout: None,
            created_ms: 0,
            labelled_by: Default::default(),
        };
        let id = save_plan(&store, &plan).expect("save");
        let (back, _) = load_plan(&store, id, "ann").expect("load");
        let critique = back.iterations[0].critique.as_ref().expect("critique");
        assert_eq!(critique.findings, vec![finding]);
    }
}
