//! Moving plans and labels between stores: a JSON export folder (`store.json` + the frame
//! PNGs named by hash) and its import, plus the import of a folder of first-frame images as new
//! plans. Imports merge by plan uid, so importing the same export twice adds nothing.
//!
//! ```text
//! OUT/store.json          StoreExport (format "videoagent-store", version 1)
//! OUT/frames/<hash>.png   every frame the exported plans use
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::frames::{self, EncodedFrame, hash_bytes, is_hash};
use super::labels::{Target, change};
use super::{
    AnnotationRecord, ExecutionRecord, IterationRecord, NewIteration, NewPlan, PlanId, Preference,
    Result, Store, StoreError, new_uid, now_ms,
};
use crate::store::atomic::{StagedDir, io_error, write_file, write_json};
use crate::store::plan_record::SamplerRecord;

/// `format` of `store.json`.
pub const EXPORT_FORMAT: &str = "videoagent-store";
const EXPORT_VERSION: u32 = 1;

/// `store.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreExport {
    pub format: String,
    pub version: u32,
    pub plans: Vec<ExportedPlan>,
    #[serde(default)]
    pub preferences: Vec<ExportedPreference>,
}

/// One plan with everything recorded about it; frames are named by hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedPlan {
    pub uid: String,
    pub world: String,
    pub task: String,
    pub view: usize,
    pub env_seed: u64,
    pub sample_seed: u64,
    pub instruction: String,
    pub model: String,
    pub sampler: SamplerRecord,
    pub created_ms: i64,
    pub start_frame: String,
    #[serde(default)]
    pub iterations: Vec<IterationRecord>,
    #[serde(default)]
    pub executions: Vec<ExecutionRecord>,
    #[serde(default)]
    pub annotations: Vec<AnnotationRecord>,
    /// (curator, time) when the plan is in the curated set.
    #[serde(default)]
    pub curated: Option<(String, i64)>,
}

/// A pairwise preference between two exported plans (by uid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedPreference {
    pub plan_a: String,
    pub plan_b: String,
    pub annotator: String,
    pub choice: Preference,
    pub updated_ms: i64,
}

/// What an import added (and what it skipped because the store already had it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImportReport {
    pub plans_added: Vec<PlanId>,
    pub plans_already_present: usize,
    pub iterations_added: usize,
    pub executions_added: usize,
    pub labels_added: usize,
    /// Labels the store had in a different, newer version (the store's kept).
    pub labels_kept_newer: usize,
    pub preferences_added: usize,
    pub curated_added: usize,
}

/// Writes `plans` (all when empty) with their frames and labels to the folder `out`
/// (created; it must not exist or be empty). Returns the number of plans written.
pub fn export_json(store: &Store, plans: &[PlanId], out: &Path) -> Result<usize> {
    let ids: Vec<PlanId> = if plans.is_empty() {
        store
            .plans(&super::Filter::default())?
            .into_iter()
            .map(|p| p.id)
            .collect()
    } else {
        plans.to_vec()
    };
    let staged = StagedDir::new(out).map_err(io_error("cannot create export folder", out))?;
    let frames_dir = staged.path().join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(io_error("cannot create", &frames_dir))?;
    let mut exported = Vec::new();
    let mut uid_of = BTreeMap::new();
    for id in &ids {
        let d = store.plan(*id)?;
        uid_of.insert(*id, d.summary.uid.clone());
        let mut hashes = vec![d.start_frame.clone()];
        hashes.extend(d.iterations.iter().flat_map(|i| i.frames.iter().cloned()));
        for h in hashes {
            let dest = frames_dir.join(format!("{h}.png"));
            if dest.exists() {
                continue;
            }
            let src = frames::frame_path(store.dir(), &h);
            let bytes = std::fs::read(&src).map_err(|_| StoreError::MissingFrame {
                hash: h.clone(),
                path: src.clone(),
            })?;
            if hash_bytes(&bytes) != h {
                return Err(StoreError::CorruptFrame { hash: h, path: src });
            }
            write_file(&dest, &bytes).map_err(io_error("cannot write", &dest))?;
        }
        exported.push(ExportedPlan {
            uid: d.summary.uid,
            world: d.summary.world,
            task: d.summary.task,
            view: d.summary.view,
            env_seed: d.env_seed,
            sample_seed: d.sample_seed,
            instruction: d.summary.instruction,
            model: d.summary.model,
            sampler: d.sampler,
            created_ms: d.summary.created_ms,
            start_frame: d.start_frame,
            iterations: d.iterations,
            executions: d.executions,
            annotations: d.annotations,
            curated: d.curated,
        });
    }
    let preferences = store
        .preferences()?
        .into_iter()
        .filter_map(|p| {
            Some(ExportedPreference {
                plan_a: uid_of.get(&p.plan_a)?.clone(),
                plan_b: uid_of.get(&p.plan_b)?.clone(),
                annotator: p.annotator,
                choice: p.choice,
                updated_ms: p.updated_ms,
            })
        })
        .collect();
    let doc = StoreExport {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        plans: exported,
        preferences,
    };
    let json = staged.path().join("store.json");
    write_json(&json, &doc).map_err(io_error("cannot write", &json))?;
    staged
        .commit()
        .map_err(io_error("cannot move export into place", out))?;
    Ok(doc.plans.len())
}

/// Reads and validates an export's `store.json` (no store needed).
pub fn read_export(dir: &Path) -> Result<StoreExport> {
    let path = dir.join("store.json");
    let text = std::fs::read_to_string(&path).map_err(io_error("cannot read", &path))?;
    let doc: StoreExport = super::from_json(&text, &path.display().to_string())?;
    if doc.format != EXPORT_FORMAT || doc.version > EXPORT_VERSION {
        return Err(StoreError::Invalid(format!(
            "{} is format {:?} version {}, expected {EXPORT_FORMAT:?} up to version {EXPORT_VERSION}",
            path.display(),
            doc.format,
            doc.version
        )));
    }
    Ok(doc)
}

fn load_export_frame(dir: &Path, hash: &str) -> Result<EncodedFrame> {
    if !is_hash(hash) {
        return Err(StoreError::Invalid(format!(
            "frame name {hash:?} is not a hash"
        )));
    }
    let path = dir.join("frames").join(format!("{hash}.png"));
    let bytes = std::fs::read(&path).map_err(|_| StoreError::MissingFrame {
        hash: hash.to_owned(),
        path: path.clone(),
    })?;
    let img = frames::decode_checked(&bytes, hash, &path)?;
    Ok(EncodedFrame {
        hash: hash.to_owned(),
        width: img.width,
        height: img.height,
        png: bytes,
    })
}

/// Merges an export folder into `store`: plans by uid (existing ones keep their record and
/// gain only iterations and executions they lack), labels by (plan, annotator) keeping the
/// newer one, curation when absent. Every label it writes is in the audit log as an `import`
/// by `actor`. Frames are checked against their hashes before anything is written.
pub fn import_json(store: &Store, dir: &Path, actor: &str) -> Result<ImportReport> {
    let doc = read_export(dir)?;
    // Check every frame and label first, so a damaged export imports nothing rather than half.
    let mut checked = std::collections::BTreeSet::new();
    for p in &doc.plans {
        for a in &p.annotations {
            super::labels::validate(&a.annotation)?;
        }
        let hashes =
            std::iter::once(&p.start_frame).chain(p.iterations.iter().flat_map(|i| &i.frames));
        for h in hashes {
            if checked.insert(h.clone()) {
                load_export_frame(dir, h)?;
            }
        }
    }
    let mut report = ImportReport::default();
    let mut id_of: BTreeMap<String, PlanId> = BTreeMap::new();
    for p in &doc.plans {
        let start = load_export_frame(dir, &p.start_frame)?;
        let existing = store.plan_by_uid(&p.uid)?;
        let id = match existing {
            Some(id) => {
                report.plans_already_present += 1;
                id
            }
            None => {
                let meta = NewPlan {
                    world: p.world.clone(),
                    task: p.task.clone(),
                    view: p.view,
                    env_seed: p.env_seed,
                    sample_seed: p.sample_seed,
                    instruction: p.instruction.clone(),
                    model: p.model.clone(),
                    sampler: p.sampler.clone(),
                    start_frame: crate::env::Rgb8Image {
                        width: 0,
                        height: 0,
                        pixels: Vec::new(),
                    },
                };
                let id = store.insert_plan(&meta, start, &p.uid, p.created_ms)?;
                report.plans_added.push(id);
                id
            }
        };
        id_of.insert(p.uid.clone(), id);
        let have = store.plan(id)?;
        for it in p.iterations.iter().skip(have.iterations.len()) {
            let encoded = it
                .frames
                .iter()
                .map(|h| load_export_frame(dir, h))
                .collect::<Result<Vec<_>>>()?;
            let new = NewIteration {
                frames: Vec::new(),
                critique: it.critique.clone(),
                verdict: it.verdict,
                findings: it.findings.clone(),
            };
            store.insert_iteration(id, &new, &encoded, it.created_ms)?;
            report.iterations_added += 1;
        }
        for e in p.executions.iter().skip(have.executions.len()) {
            store.add_execution(id, &e.execution)?;
            report.executions_added += 1;
        }
        for a in &p.annotations {
            let mine = have.annotations.iter().find(|m| m.annotator == a.annotator);
            match mine {
                Some(m) if m.annotation == a.annotation => continue,
                Some(m) if m.updated_ms >= a.updated_ms => {
                    report.labels_kept_newer += 1;
                    continue;
                }
                _ => {}
            }
            let v = serde_json::to_value(&a.annotation).map_err(|source| StoreError::Json {
                what: "annotation".into(),
                source,
            })?;
            let target = Target::Annotation {
                plan: id,
                annotator: a.annotator.clone(),
            };
            if change(
                &mut store.conn(),
                &target,
                Some(v),
                actor,
                "import",
                Some(a.updated_ms),
            )?
            .is_some()
            {
                report.labels_added += 1;
            }
        }
        if let Some((by, at)) = &p.curated
            && have.curated.is_none()
        {
            let v = serde_json::json!({ "by": by, "at_ms": at });
            let target = Target::Curation { plan: id };
            if change(&mut store.conn(), &target, Some(v), actor, "import", None)?.is_some() {
                report.curated_added += 1;
            }
        }
    }
    let existing = store.preferences()?;
    for pref in &doc.preferences {
        let (Some(a), Some(b)) = (id_of.get(&pref.plan_a), id_of.get(&pref.plan_b)) else {
            continue;
        };
        let mine = existing
            .iter()
            .find(|e| e.plan_a == *a && e.plan_b == *b && e.annotator == pref.annotator);
        if mine.is_some_and(|m| m.choice == pref.choice || m.updated_ms >= pref.updated_ms) {
            continue;
        }
        let target = Target::Preference {
            a: *a,
            b: *b,
            annotator: pref.annotator.clone(),
        };
        let v = Value::String(pref.choice.as_str().to_owned());
        if change(
            &mut store.conn(),
            &target,
            Some(v),
            actor,
            "import",
            Some(pref.updated_ms),
        )?
        .is_some()
        {
            report.preferences_added += 1;
        }
    }
    Ok(report)
}

/// What the plans made from a folder of images are about.
#[derive(Clone, Debug)]
pub struct ImageImport {
    pub world: String,
    pub task: String,
    pub view: usize,
    pub instruction: String,
    pub model: String,
}

/// Adds one plan (no iteration yet) per image in `dir` (PNG, or the first frame of a GIF),
/// in file-name order, its start frame the image. Returns the new plans and the files that
/// were not images (skipped, named so the caller can say so).
pub fn import_images(
    store: &Store,
    dir: &Path,
    what: &ImageImport,
) -> Result<(Vec<PlanId>, Vec<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error("cannot list", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io_error("cannot read", path))?;
        let Ok(img) = frames::decode_png(&bytes) else {
            skipped.push(path.clone());
            continue;
        };
        let plan = NewPlan {
            world: what.world.clone(),
            task: what.task.clone(),
            view: what.view,
            env_seed: i as u64,
            sample_seed: i as u64,
            instruction: what.instruction.clone(),
            model: what.model.clone(),
            sampler: SamplerRecord {
                kind: "none".into(),
                steps: 0,
                guidance: 0.0,
                precision: crate::model::precision::Precision::F32,
            },
            start_frame: img,
        };
        let start = frames::encode(&plan.start_frame)?;
        added.push(store.insert_plan(&plan, start, &new_uid(), now_ms())?);
    }
    Ok((added, skipped))
}
