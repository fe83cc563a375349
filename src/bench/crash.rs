//! The kill -9 harness behind `videoagent bench crash`: child processes label, curate, undo,
//! add plans and export JSON on one store while the harness kills them (SIGKILL) at random
//! moments; after every kill it reopens the store (integrity and file check) and verifies that
//! every change a child had seen committed is still there, that the labels agree with the
//! audit log, and that every finished export is complete and intact.
//!
//! A child appends one JSON line to its journal *after* each commit returns ("acknowledged").
//! A change committed but not yet journalled when the kill came is allowed to exist (at most
//! one per kill); an acknowledged one must never be missing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::store::db::{
    Annotation, Filter, NewIteration, NewPlan, PlanId, Store, StoreError, Verdict, export_json,
    read_export,
};
use crate::store::plan_record::SamplerRecord;

/// What a child journals after a commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// A label change (edit or undo) and the state it left.
    Label {
        audit: i64,
        state: Option<serde_json::Value>,
    },
    /// A plan added with one iteration.
    Plan { uid: String, frames: usize },
    /// A finished JSON export folder.
    Export { dir: PathBuf, plans: usize },
}

/// What the harness found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CrashReport {
    /// Children killed with SIGKILL while working.
    pub kills: usize,
    /// Children that had exited on their own (an error, also listed in `failures`) before
    /// their kill came.
    pub early_exits: usize,
    /// Acknowledged changes verified present after the kills.
    pub acknowledged_checked: usize,
    pub label_changes_committed: usize,
    pub plans_added: usize,
    pub exports_verified: usize,
    /// Staged export folders a kill left under their temporary name (removed by the harness).
    pub partial_exports_removed: usize,
    /// Unreferenced frame files and temp files the recovery check removed, summed over opens.
    pub orphan_frames_removed: usize,
    pub temp_files_removed: usize,
    /// Problems found; the harness fails when this is not empty.
    pub failures: Vec<String>,
    pub elapsed_secs: f64,
    /// The training part ([`super::crash_train`]), when training was killed too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<super::crash_train::TrainKillReport>,
}

/// How to run the harness.
#[derive(Clone, Debug)]
pub struct CrashSpec {
    pub store: PathBuf,
    pub iterations: usize,
    /// Kills come uniformly in [min_delay_ms, max_delay_ms] after the child starts.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub seed: u64,
}

/// Why the harness could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot run the worker process: {0}")]
    Spawn(std::io::Error),
    #[error("cannot read journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn tiny_frame(seed: u64) -> crate::env::Rgb8Image {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let size = 16;
    let pixels = (0..size * size * 3).map(|_| rng.random::<u8>()).collect();
    crate::env::Rgb8Image {
        width: size,
        height: size,
        pixels,
    }
}

fn seed_plan(seed: u64) -> NewPlan {
    NewPlan {
        world: "tabletop".into(),
        task: "push".into(),
        view: (seed % 3) as usize,
        env_seed: seed,
        sample_seed: seed,
        instruction: "push the red block right".into(),
        model: "crash-harness".into(),
        sampler: SamplerRecord {
            kind: "ddim".into(),
            steps: 10,
            guidance: 0.0,
            precision: crate::model::precision::Precision::F32,
        },
        start_frame: tiny_frame(seed),
    }
}

fn seed_iteration(seed: u64) -> NewIteration {
    NewIteration {
        frames: (0..7).map(|i| tiny_frame(seed * 100 + i)).collect(),
        critique: format!("critique of {seed}"),
        verdict: Some(Verdict::Reject),
        findings: Vec::new(),
    }
}

/// The child's loop: random label edits, undos, curation, new plans and exports on `store`,
/// journalling each committed change to `journal`. Runs `ops` operations, or until killed.
pub fn worker(
    store_dir: &Path,
    journal: &Path,
    seed: u64,
    ops: Option<usize>,
) -> Result<(), CrashError> {
    let (store, _) = Store::open(store_dir)?;
    let me = format!("worker-{seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .map_err(|source| CrashError::Journal {
            path: journal.to_owned(),
            source,
        })?;
    let mut ack = |a: &Ack| -> Result<(), CrashError> {
        let mut line = serde_json::to_string(a).unwrap_or_default();
        line.push('\n');
        // One write per line: a kill cannot interleave half a line with another.
        log.write_all(line.as_bytes())
            .map_err(|source| CrashError::Journal {
                path: journal.to_owned(),
                source,
            })
    };
    let mut plans: Vec<PlanId> = store
        .plans(&Filter::default())?
        .iter()
        .map(|p| p.id)
        .collect();
    let mut n = 0usize;
    while ops.is_none_or(|max| n < max) {
        n += 1;
        let roll = rng.random_range(0..100u32);
        if plans.is_empty() || roll < 8 {
            let s = seed * 1_000_000 + n as u64;
            let p = store.add_plan(&seed_plan(s))?;
            store.add_iteration(p, &seed_iteration(s))?;
            let uid = store.plan(p)?.summary.uid;
            plans.push(p);
            ack(&Ack::Plan { uid, frames: 8 })?;
            continue;
        }
        let plan = plans[rng.random_range(0..plans.len())];
        let audit = if roll < 70 {
            let ann = Annotation {
                verdict: Some(if rng.random::<bool>() {
                    Verdict::Accept
                } else {
                    Verdict::Reject
                }),
                rating: Some(rng.random_range(1..=5)),
                tags: vec![format!("t{}", rng.random_range(0..4u32))],
                note: format!("{me} op {n}"),
                ..Annotation::default()
            };
            store
                .annotate(plan, &ann, &me)?
                .map(|id| (id.0, Some(serde_json::to_value(&ann).unwrap_or_default())))
        } else if roll < 80 {
            let on = rng.random::<bool>();
            match store.curate(plan, on, &me)? {
                Some(id) => store
                    .audit_log(Some(plan))?
                    .into_iter()
                    .find(|e| e.id == id)
                    .map(|e| (id.0, e.after)),
                None => None,
            }
        } else if roll < 92 {
            store.undo(&me)?.map(|r| (r.audit.0, r.state))
        } else {
            let dir = store_dir.join("exports").join(format!("{me}-{n}"));
            // A few plans, so exports finish often enough to be verified, and are killed too.
            let mut some = vec![plan];
            some.extend((0..2).map(|_| plans[rng.random_range(0..plans.len())]));
            some.sort();
            some.dedup();
            let k = export_json(&store, &some, &dir)?;
            ack(&Ack::Export { dir, plans: k })?;
            continue;
        };
        if let Some((audit, state)) = audit {
            ack(&Ack::Label { audit, state })?;
        }
    }
    Ok(())
}

/// Reads a journal; a torn last line (killed mid-write) is ignored.
fn read_journal(path: &Path) -> Result<Vec<Ack>, CrashError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CrashError::Journal {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// (kind, plan, other plan, subject): one label.
type LabelKey = (String, i64, Option<i64>, Option<String>);

/// Checks a store against the children's journals; returns (acks checked, failures).
pub fn verify(store: &Store, journals: &[PathBuf]) -> Result<(usize, Vec<String>), CrashError> {
    let mut failures = Vec::new();
    let log = store.audit_log(None)?;
    let by_id: BTreeMap<i64, &crate::store::db::AuditEntry> =
        log.iter().map(|e| (e.id.0, e)).collect();
    let mut checked = 0;
    for j in journals {
        for a in read_journal(j)? {
            checked += 1;
            match &a {
                Ack::Label { audit, state } => match by_id.get(audit) {
                    Some(e) if e.after == *state => {}
                    Some(e) => failures.push(format!(
                        "audit {audit}: journal says {state:?}, store has {:?}",
                        e.after
                    )),
                    None => failures.push(format!("acknowledged change {audit} is missing")),
                },
                Ack::Plan { uid, frames } => match store.plan_by_uid(uid)? {
                    Some(p) => match store.load_frames(p, None) {
                        Ok(f) if f.len() == *frames => {}
                        Ok(f) => failures.push(format!("plan {uid}: {} frames", f.len())),
                        Err(e) => failures.push(format!("plan {uid}: {e}")),
                    },
                    None => failures.push(format!("acknowledged plan {uid} is missing")),
                },
                Ack::Export { dir, plans } => match read_export(dir) {
                    Ok(doc) if doc.plans.len() == *plans => {
                        let missing = doc
                            .plans
                            .iter()
                            .flat_map(|p| {
                                std::iter::once(&p.start_frame)
                                    .chain(p.iterations.iter().flat_map(|i| i.frames.iter()))
                            })
                            .filter(|h| {
                                let f = dir.join("frames").join(format!("{h}.png"));
                                !std::fs::read(&f)
                                    .is_ok_and(|b| crate::store::db::hash_of(&b) == h.as_str())
                            })
                            .count();
                        if missing > 0 {
                            failures.push(format!(
                                "export {}: {missing} frame(s) missing or corrupt",
                                dir.display()
                            ));
                        }
                    }
                    Ok(doc) => failures.push(format!(
                        "export {}: {} plans, journal says {plans}",
                        dir.display(),
                        doc.plans.len()
                    )),
                    Err(e) => failures.push(format!("export {}: {e}", dir.display())),
                },
            }
        }
    }
    // Labels agree with the newest audit entry of each label.
    let mut last: BTreeMap<LabelKey, &crate::store::db::AuditEntry> = BTreeMap::new();
    for e in &log {
        last.insert(
            (
                e.kind.as_str().to_owned(),
                e.plan.0,
                e.other_plan.map(|p| p.0),
                e.subject.clone(),
            ),
            e,
        );
    }
    for ((kind, plan, _, subject), e) in &last {
        let now = match kind.as_str() {
            "annotation" => store
                .annotation(PlanId(*plan), subject.as_deref().unwrap_or(""))?
                .map(|a| serde_json::to_value(a.annotation).unwrap_or_default()),
            "curation" => store
                .plan(PlanId(*plan))?
                .curated
                .map(|(by, at)| serde_json::json!({ "by": by, "at_ms": at })),
            _ => continue,
        };
        if now != e.after {
            failures.push(format!(
                "{kind} of plan {plan}: store has {now:?}, audit entry {} says {:?}",
                e.id.0, e.after
            ));
        }
    }
    Ok((checked, failures))
}

/// Removes staged (temporary-named) export folders a kill left behind; returns how many.
fn remove_partial_exports(store: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(store.join("exports")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.ends_with(".tmp")
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Runs the harness; `worker_command(store, journal, seed)` builds the child's command line
/// (the CLI passes its own executable with `bench crash-worker`).
pub fn run(
    spec: &CrashSpec,
    worker_command: &dyn Fn(&Path, &Path, u64) -> Command,
    mut progress: impl FnMut(usize, &CrashReport),
) -> Result<CrashReport, CrashError> {
    let start = Instant::now();
    let mut report = CrashReport::default();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    {
        let (store, _) = Store::open(&spec.store)?;
        if store.plans(&Filter::default())?.is_empty() {
            for s in 0..4 {
                let p = store.add_plan(&seed_plan(s))?;
                store.add_iteration(p, &seed_iteration(s))?;
            }
        }
    }
    let journals_dir = spec.store.join("crash-journals");
    std::fs::create_dir_all(&journals_dir).map_err(|source| CrashError::Journal {
        path: journals_dir.clone(),
        source,
    })?;
    let mut journals = Vec::new();
    for i in 0..spec.iterations {
        let seed = spec.seed * 100_000 + i as u64;
        let journal = journals_dir.join(format!("{seed}.jsonl"));
        let errors = journals_dir.join(format!("{seed}.stderr"));
        let stderr = std::fs::File::create(&errors).map_err(|source| CrashError::Journal {
            path: errors.clone(),
            source,
        })?;
        let mut child = worker_command(&spec.store, &journal, seed)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(CrashError::Spawn)?;
        let delay = rng.random_range(spec.min_delay_ms..=spec.max_delay_ms.max(spec.min_delay_ms));
        std::thread::sleep(Duration::from_millis(delay));
        match child.try_wait() {
            Ok(Some(status)) => {
                // Workers loop until killed: exiting by itself means an error.
                report.early_exits += 1;
                let said = std::fs::read_to_string(&errors).unwrap_or_default();
                report.failures.push(format!(
                    "worker {seed} exited by itself ({status}): {}",
                    said.trim()
                ));
            }
            _ => {
                // Child::kill sends SIGKILL on Unix.
                let _ = child.kill();
                report.kills += 1;
            }
        }
        let _ = child.wait();

        report.partial_exports_removed += remove_partial_exports(&spec.store);
        let (store, rec) = Store::open(&spec.store)?;
        report.orphan_frames_removed += rec.orphan_files_removed.len();
        report.temp_files_removed += rec.temp_files_removed.len();
        if rec.has_unrepaired() {
            report.failures.push(format!("after kill {}: {rec}", i + 1));
        }
        let (acks, failures) = verify(&store, std::slice::from_ref(&journal))?;
        let me = format!("worker-{seed}");
        let label_acks = read_journal(&journal)?
            .iter()
            .filter(|a| matches!(a, Ack::Label { .. }))
            .count();
        let committed = store
            .audit_log(None)?
            .iter()
            .filter(|e| e.actor == me)
            .count();
        if committed > label_acks + 1 {
            report.failures.push(format!(
                "after kill {}: {committed} changes committed but only {label_acks} acknowledged",
                i + 1
            ));
        }
        let _ = acks;
        report.failures.extend(
            failures
                .into_iter()
                .map(|f| format!("after kill {}: {f}", i + 1)),
        );
        journals.push(journal);
        progress(i + 1, &report);
    }
    let (store, _) = Store::open(&spec.store)?;
    let (checked, failures) = verify(&store, &journals)?;
    report.acknowledged_checked = checked;
    report.failures.extend(failures);
    let log = store.audit_log(None)?;
    report.label_changes_committed = log.len();
    report.plans_added = store.plans(&Filter::default())?.len();
    report.exports_verified = journals
        .iter()
        .map(|j| {
            read_journal(j).map(|a| a.iter().filter(|x| matches!(x, Ack::Export { .. })).count())
        })
        .sum::<Result<usize, _>>()?;
    report.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(report)
}
