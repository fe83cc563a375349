//! The plan store: an embedded SQLite database (`store.db`, WAL mode, foreign keys, a busy
//! timeout, versioned migrations) beside content-addressed PNG frame files (`frames/`). It
//! keeps plan records and their refinement iterations, executions, annotations, pairwise
//! preferences, the curated set and training runs, with an audit log of every label change
//! that undo/redo walk. The studio and the CLI share it; several processes may write at once.
//!
//! It is not a dataset format (see [`crate::store::dataset`]) and not an exporter (see
//! [`crate::store::export`]); it draws nothing.
//!
//! ```text
//! DIR/store.db (+ -wal, -shm)     DIR/frames/ab/ab12...ef.png     DIR/lost+found/
//! ```
//!
//! # API
//! ```no_run
//! # fn main() -> Result<(), videoagent::store::db::StoreError> {
//! use videoagent::store::db::*;
//! let (store, report) = Store::open("my-store".as_ref())?; // migrates, checks, repairs
//! if !report.is_clean() { eprintln!("{report}"); }
//! # let new_plan: NewPlan = unimplemented!();
//! let plan = store.add_plan(&new_plan)?;                       // start frame + settings
//! # let it: NewIteration = unimplemented!();
//! store.add_iteration(plan, &it)?;                              // frames + critique
//! let todo = store.next_unlabeled("ann", &Filter::default())?;
//! store.annotate(plan, &Annotation { verdict: Some(Verdict::Accept), ..Default::default() }, "ann")?;
//! store.undo("ann")?;                                           // Ctrl+Z
//! store.redo("ann")?;                                           // Ctrl+Shift+Z
//! store.curate(plan, true, "ann")?;
//! let frames = store.load_frames(plan, None)?;                 // start + last iteration
//! # Ok(()) }
//! ```
//! | call | what |
//! |---|---|
//! | `Store::open(dir) -> Result<(Store, RecoveryReport)>` | create/migrate/check; `check()` re-runs the check |
//! | `add_plan(&NewPlan) -> PlanId`, `add_iteration(plan, &NewIteration) -> usize`, `add_execution(plan, &NewExecution)` | record generation, refinement, execution |
//! | `plans(&Filter) -> Vec<PlanSummary>`, `plan(id) -> PlanDetail`, `plan_by_uid(uid)` | browse (task, view, model, label, tag, curated, paging) |
//! | `next_unlabeled(annotator, &Filter) -> Option<PlanSummary>` | the review queue's auto-advance |
//! | `annotate(plan, &Annotation, annotator)`, `clear_annotation`, `annotation(plan, annotator)` | labels: verdict, 1-5 rating, tags, note, frame marks |
//! | `prefer(a, b, Option<Preference>, annotator)`, `preferences()` | pairwise A>B, B>A, both good, both bad |
//! | `curate(plan, bool, annotator)`, `curated()` | the curated set |
//! | `undo(annotator)`, `redo(annotator) -> Option<Reverted>` | Ctrl+Z / Ctrl+Shift+Z, persistent across restarts |
//! | `audit_log(Option<PlanId>) -> Vec<AuditEntry>` | who changed what, when, before/after |
//! | `load_frames(plan, Option<iteration>) -> Vec<Rgb8Image>` | start frame + an iteration's frames, hash-checked |
//! | `add_training_run`, `finish_training_run`, `training_runs` | fine-tunes and the plans they used |
//! | `export_json`, `import_json`, `import_images` | moving plans between stores |
//!
//! Label writers return `Option<AuditId>`: None when the label already had that value.
//! Every method takes `&self`; a `Store` is `Send + Sync` (one connection behind a mutex), so
//! the studio can share an `Arc<Store>` with its background threads, or open one per thread.
//!
//! # Durability and concurrency
//! Each call is one transaction (`BEGIN IMMEDIATE`, so writers queue on SQLite's lock instead of
//! failing on upgrade; `busy_timeout` 30 s). `synchronous = FULL`: a call that returned has
//! committed to disk. Frame files are written (atomically) inside the writing transaction,
//! before the rows that name them, so a committed row always has its file.

mod exchange;
mod frames;
mod labels;
mod plan_folder;
mod recovery;
pub(crate) mod schema;
mod types;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use exchange::{
    EXPORT_FORMAT, ExportedPlan, ExportedPreference, ImageImport, ImportReport, StoreExport,
    export_json, import_images, import_json, read_export,
};
pub use labels::Reverted;
pub use plan_folder::add_plan_folder;
pub use recovery::RecoveryReport;
pub use schema::SCHEMA_VERSION;
pub use types::*;

use crate::env::Rgb8Image;
use crate::store::atomic::IoError;
use crate::store::plan_record::SamplerRecord;

/// The database file inside a store folder.
pub const DB_FILE: &str = "store.db";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "the store has schema version {found}, this videoagent knows up to {supported}: upgrade videoagent"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("frame {hash} is missing ({path})")]
    MissingFrame { hash: String, path: PathBuf },
    #[error("frame {hash} is corrupt ({path})")]
    CorruptFrame { hash: String, path: PathBuf },
    #[error("malformed JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Json {
        what: "value".into(),
        source,
    })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Json {
        what: what.into(),
        source,
    })
}

/// A random 128-bit id as hex (stable plan identity across stores).
fn new_uid() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    let v: u128 = rng.random();
    format!("{v:032x}")
}

/// The content hash the store names frame files by (SHA-256 of the file, lower-case hex).
pub fn hash_of(bytes: &[u8]) -> String {
    frames::hash_bytes(bytes)
}

/// An open store. See the module docs.
pub struct Store {
    dir: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// Opens the SQLite connection with the store's settings (no migration, no check).
pub(crate) fn connect(dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(dir).map_err(crate::store::atomic::io_error(
        "cannot create store folder",
        dir,
    ))?;
    let conn = Connection::open(dir.join(DB_FILE))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // journal_mode needs the lock briefly; busy_timeout covers a concurrent opener.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "the store's file system refuses WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: migrates the schema, then checks the
    /// database and the frame files and repairs what it can. The report says what was found.
    pub fn open(dir: &Path) -> Result<(Self, RecoveryReport)> {
        let mut conn = connect(dir)?;
        let found = schema::migrate(&mut conn)?;
        let mut report = recovery::check(&mut conn, dir)?;
        report.schema_version = SCHEMA_VERSION;
        report.migrated_from = (found != SCHEMA_VERSION).then_some(found);
        Ok((
            Self {
                dir: dir.to_owned(),
                conn: Mutex::new(conn),
            },
            report,
        ))
    }

    /// Re-runs the recovery check on the open store.
    pub fn check(&self) -> Result<RecoveryReport> {
        let mut conn = self.conn();
        let mut report = recovery::check(&mut conn, &self.dir)?;
        report.schema_version = SCHEMA_VERSION;
        Ok(report)
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction (rusqlite rolls back
        // on drop), so a poisoned mutex is safe to reuse.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a new plan (its start frame and how it was sampled).
    pub fn add_plan(&self, plan: &NewPlan) -> Result<PlanId> {
        let start = frames::encode(&plan.start_frame)?;
        self.insert_plan(plan, start, &new_uid(), now_ms())
    }

    /// Inserts a plan whose start frame is already encoded (`plan.start_frame` is not used).
    pub(crate) fn insert_plan(
        &self,
        plan: &NewPlan,
        start: frames::EncodedFrame,
        uid: &str,
        created_ms: i64,
    ) -> Result<PlanId> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        put_frame(&tx, &self.dir, &start)?;
        tx.execute(
            "INSERT INTO plans (uid, world, task, view, env_seed, sample_seed, instruction, model,
                                sampler, start_frame, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                uid,
                plan.world,
                plan.task,
                plan.view as i64,
                plan.env_seed as i64,
                plan.sample_seed as i64,
                plan.instruction,
                plan.model,
                to_json(&plan.sampler)?,
                start.hash,
                created_ms,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(PlanId(id))
    }

    /// The plan with this stable uid, if any.
    pub fn plan_by_uid(&self, uid: &str) -> Result<Option<PlanId>> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM plans WHERE uid = ?1", [uid], |r| r.get(0))
            .optional()?
            .map(PlanId))
    }

    /// Appends a refinement iteration to a plan; returns its index (0 = the first plan).
    pub fn add_iteration(&self, plan: PlanId, it: &NewIteration) -> Result<usize> {
        let encoded = it
            .frames
            .iter()
            .map(frames::encode)
            .collect::<Result<Vec<_>>>()?;
        self.insert_iteration(plan, it, &encoded, now_ms())
    }

    /// Inserts an iteration whose frames are already encoded (`it.frames` is not used).
    pub(crate) fn insert_iteration(
        &self,
        plan: PlanId,
        it: &NewIteration,
        encoded: &[frames::EncodedFrame],
        created_ms: i64,
    ) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_plan(&tx, plan)?;
        let idx: i64 = tx.query_row(
            "SELECT count(*) FROM iterations WHERE plan_id = ?1",
            [plan.0],
            |r| r.get(0),
        )?;
        for f in encoded {
            put_frame(&tx, &self.dir, f)?;
        }
        tx.execute(
            "INSERT INTO iterations (plan_id, idx, critique, verdict, findings, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                plan.0,
                idx,
                it.critique,
                it.verdict.map(Verdict::as_str),
                to_json(&it.findings)?,
                created_ms,
            ],
        )?;
        let it_id = tx.last_insert_rowid();
        for (pos, f) in encoded.iter().enumerate() {
            tx.execute(
                "INSERT INTO iteration_frames (iteration_id, pos, hash) VALUES (?1, ?2, ?3)",
                params![it_id, pos as i64, f.hash],
            )?;
        }
        tx.commit()?;
        Ok(idx as usize)
    }

    /// Records an execution of a plan in the world.
    pub fn add_execution(&self, plan: PlanId, exec: &NewExecution) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_plan(&tx, plan)?;
        tx.execute(
            "INSERT INTO executions (plan_id, iteration, success, steps, details, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                plan.0,
                exec.iteration.map(|i| i as i64),
                exec.success,
                exec.steps as i64,
                to_json(&exec.details)?,
                now_ms(),
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Plans matching `filter`, oldest first.
    pub fn plans(&self, filter: &Filter) -> Result<Vec<PlanSummary>> {
        let conn = self.conn();
        query_plans(&conn, filter)
    }

    /// The first plan after `filter.after` that `annotator` has given no verdict yet (the
    /// review queue's auto-advance). Other filter fields narrow the queue.
    pub fn next_unlabeled(&self, annotator: &str, filter: &Filter) -> Result<Option<PlanSummary>> {
        let f = Filter {
            label: LabelFilter::Unlabeled,
            annotator: Some(annotator.to_owned()),
            limit: Some(1),
            ..filter.clone()
        };
        Ok(self.plans(&f)?.into_iter().next())
    }

    /// The curated set, oldest first.
    pub fn curated(&self) -> Result<Vec<PlanSummary>> {
        self.plans(&Filter {
            curated: Some(true),
            ..Filter::default()
        })
    }

    /// Everything about one plan except pixels.
    pub fn plan(&self, id: PlanId) -> Result<PlanDetail> {
        let conn = self.conn();
        plan_detail(&conn, id)
    }

    /// The start frame followed by the generated frames of iteration `iteration` (None = the
    /// last; a plan with no iteration gives the start frame alone). Each file's hash is checked.
    pub fn load_frames(&self, plan: PlanId, iteration: Option<usize>) -> Result<Vec<Rgb8Image>> {
        let hashes = {
            let conn = self.conn();
            frame_hashes(&conn, plan, iteration)?
        };
        hashes
            .iter()
            .map(|h| frames::read_frame(&self.dir, h))
            .collect()
    }

    /// Records a training run as `running`.
    pub fn add_training_run(&self, run: &NewTrainingRun) -> Result<RunId> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO training_runs (name, out_dir, base_model, config, plan_ids, status, started_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
            params![
                run.name,
                run.out_dir,
                run.base_model,
                to_json(&run.config)?,
                to_json(&run.plans)?,
                now_ms()
            ],
        )?;
        Ok(RunId(conn.last_insert_rowid()))
    }

    /// Marks a training run finished, failed or stopped.
    pub fn finish_training_run(&self, run: RunId, status: RunStatus) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE training_runs SET status = ?2, finished_ms = ?3 WHERE id = ?1",
            params![run.0, status.as_str(), now_ms()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "training run",
                id: run.0.to_string(),
            });
        }
        Ok(())
    }

    /// Every training run, oldest first.
    pub fn training_runs(&self) -> Result<Vec<TrainingRunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, out_dir, base_model, config, plan_ids, status, started_ms, finished_ms
             FROM training_runs ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, out_dir, base_model, config, plans, status, started_ms, finished_ms) =
                row?;
            out.push(TrainingRunRecord {
                id: RunId(id),
                run: NewTrainingRun {
                    name,
                    out_dir,
                    base_model,
                    config: from_json(&config, "training run config")?,
                    plans: from_json(&plans, "training run plans")?,
                },
                status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                started_ms,
                finished_ms,
            });
        }
        Ok(out)
    }
}

/// Writes a frame file (if needed) and its row, inside the caller's transaction.
fn put_frame(tx: &Connection, root: &Path, f: &frames::EncodedFrame) -> Result<()> {
    frames::write_frame(root, f)?;
    tx.execute(
        "INSERT INTO frames (hash, width, height, bytes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(hash) DO UPDATE SET missing = 0",
        params![f.hash, f.width, f.height, f.png.len() as i64],
    )?;
    Ok(())
}

fn ensure_plan(conn: &Connection, plan: PlanId) -> Result<()> {
    let found: Option<i64> = conn
        .query_row("SELECT id FROM plans WHERE id = ?1", [plan.0], |r| r.get(0))
        .optional()?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            what: "plan",
            id: plan.to_string(),
        }),
    }
}

const SUMMARY_SELECT: &str = "
    SELECT p.id, p.uid, p.world, p.task, p.view, p.env_seed, p.instruction, p.model, p.created_ms,
        (SELECT count(*) FROM iterations i WHERE i.plan_id = p.id),
        (SELECT i.verdict FROM iterations i WHERE i.plan_id = p.id ORDER BY i.idx DESC LIMIT 1),
        EXISTS (SELECT 1 FROM curated c WHERE c.plan_id = p.id),
        (SELECT count(*) FROM annotations a WHERE a.plan_id = p.id AND a.verdict = 'accept'),
        (SELECT count(*) FROM annotations a WHERE a.plan_id = p.id AND a.verdict = 'reject'),
        (SELECT avg(a.rating) FROM annotations a WHERE a.plan_id = p.id AND a.rating IS NOT NULL)
    FROM plans p";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlanSummary> {
    Ok(PlanSummary {
        id: PlanId(r.get(0)?),
        uid: r.get(1)?,
        world: r.get(2)?,
        task: r.get(3)?,
        view: r.get::<_, i64>(4)? as usize,
        env_seed: r.get::<_, i64>(5)? as u64,
        instruction: r.get(6)?,
        model: r.get(7)?,
        created_ms: r.get(8)?,
        iterations: r.get::<_, i64>(9)? as usize,
        critic_verdict: r
            .get::<_, Option<String>>(10)?
            .as_deref()
            .and_then(Verdict::parse),
        curated: r.get(11)?,
        accepts: r.get::<_, i64>(12)? as usize,
        rejects: r.get::<_, i64>(13)? as usize,
        mean_rating: r.get(14)?,
    })
}

fn query_plans(conn: &Connection, filter: &Filter) -> Result<Vec<PlanSummary>> {
    use rusqlite::types::Value;
    let mut wh: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    if let Some(t) = &filter.task {
        wh.push(format!("p.task = {}", arg(Value::Text(t.clone()))));
    }
    if let Some(v) = filter.view {
        wh.push(format!("p.view = {}", arg(Value::Integer(v as i64))));
    }
    if let Some(m) = &filter.model {
        wh.push(format!("p.model = {}", arg(Value::Text(m.clone()))));
    }
    if let Some(c) = filter.curated {
        let not = if c { "" } else { "NOT " };
        wh.push(format!(
            "{not}EXISTS (SELECT 1 FROM curated c WHERE c.plan_id = p.id)"
        ));
    }
    if let Some(after) = filter.after {
        wh.push(format!("p.id > {}", arg(Value::Integer(after.0))));
    }
    let who = match &filter.annotator {
        Some(a) => format!(" AND a.annotator = {}", arg(Value::Text(a.clone()))),
        None => String::new(),
    };
    match filter.label {
        LabelFilter::Any => {}
        LabelFilter::Unlabeled => wh.push(format!(
            "NOT EXISTS (SELECT 1 FROM annotations a WHERE a.plan_id = p.id AND a.verdict IS NOT NULL{who})"
        )),
        LabelFilter::Accepted => wh.push(format!(
            "EXISTS (SELECT 1 FROM annotations a WHERE a.plan_id = p.id AND a.verdict = 'accept'{who})"
        )),
        LabelFilter::Rejected => wh.push(format!(
            "EXISTS (SELECT 1 FROM annotations a WHERE a.plan_id = p.id AND a.verdict = 'reject'{who})"
        )),
    }
    if let Some(tag) = &filter.tag {
        let t = arg(Value::Text(tag.clone()));
        wh.push(format!(
            "EXISTS (SELECT 1 FROM annotations a, json_each(a.body, '$.tags') j
                     WHERE a.plan_id = p.id AND j.value = {t}{who})"
        ));
    }
    let mut sql = SUMMARY_SELECT.to_owned();
    if !wh.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&wh.join(" AND "));
    }
    sql.push_str(" ORDER BY p.id");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), summary_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn plan_detail(conn: &Connection, id: PlanId) -> Result<PlanDetail> {
    let summary = conn
        .query_row(
            &format!("{SUMMARY_SELECT} WHERE p.id = ?1"),
            [id.0],
            summary_from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "plan",
            id: id.to_string(),
        })?;
    let (env_seed, sample_seed, sampler, start_frame): (i64, i64, String, String) = conn
        .query_row(
            "SELECT env_seed, sample_seed, sampler, start_frame FROM plans WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let sampler: SamplerRecord = from_json(&sampler, "plan sampler")?;

    let mut iterations = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, idx, critique, verdict, findings, created_ms FROM iterations
             WHERE plan_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id.0], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (it_id, idx, critique, verdict, findings, created_ms) = row?;
            iterations.push(IterationRecord {
                idx: idx as usize,
                critique,
                verdict: verdict.as_deref().and_then(Verdict::parse),
                findings: from_json(&findings, "iteration findings")?,
                frames: iteration_hashes(conn, it_id)?,
                created_ms,
            });
        }
    }

    let mut executions = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, iteration, success, steps, details, created_ms FROM executions
             WHERE plan_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id.0], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (eid, iteration, success, steps, details, created_ms) = row?;
            executions.push(ExecutionRecord {
                id: eid,
                execution: NewExecution {
                    iteration: iteration.map(|i| i as usize),
                    success,
                    steps: steps as usize,
                    details: from_json(&details, "execution details")?,
                },
                created_ms,
            });
        }
    }

    let annotations = labels::annotations_of(conn, id)?;
    let curated = conn
        .query_row(
            "SELECT curated_by, curated_ms FROM curated WHERE plan_id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(PlanDetail {
        summary,
        env_seed: env_seed as u64,
        sample_seed: sample_seed as u64,
        sampler,
        start_frame,
        iterations,
        executions,
        annotations,
        curated,
    })
}

fn iteration_hashes(conn: &Connection, iteration_id: i64) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT hash FROM iteration_frames WHERE iteration_id = ?1 ORDER BY pos")?;
    let rows = stmt.query_map([iteration_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Start frame hash, then the frames of the chosen iteration.
fn frame_hashes(conn: &Connection, plan: PlanId, iteration: Option<usize>) -> Result<Vec<String>> {
    let start: String = conn
        .query_row(
            "SELECT start_frame FROM plans WHERE id = ?1",
            [plan.0],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "plan",
            id: plan.to_string(),
        })?;
    let it_id: Option<i64> = match iteration {
        Some(idx) => conn
            .query_row(
                "SELECT id FROM iterations WHERE plan_id = ?1 AND idx = ?2",
                params![plan.0, idx as i64],
                |r| r.get(0),
            )
            .optional()?
            .map(Some)
            .ok_or_else(|| StoreError::NotFound {
                what: "iteration",
                id: format!("{plan}/{idx}"),
            })?,
        None => conn
            .query_row(
                "SELECT id FROM iterations WHERE plan_id = ?1 ORDER BY idx DESC LIMIT 1",
                [plan.0],
                |r| r.get(0),
            )
            .optional()?,
    };
    let mut out = vec![start];
    if let Some(it) = it_id {
        out.extend(iteration_hashes(conn, it)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
