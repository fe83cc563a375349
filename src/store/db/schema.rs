//! The store's SQL schema as an ordered list of migrations, and the code that brings a
//! database up to date. `schema_version` holds one row: the number of migrations applied.
//! A migration is applied inside the same transaction that bumps the version, so a crash
//! leaves the database at the old or the new version, never between.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` (0-based) takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: plans, their refinement iterations, executions, labels, curation, audit.
    r"
    CREATE TABLE frames (
        hash        TEXT PRIMARY KEY,          -- sha256 of the PNG file, lower-case hex
        width       INTEGER NOT NULL,
        height      INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        missing     INTEGER NOT NULL DEFAULT 0 -- set by the recovery check, cleared when found
    );
    CREATE TABLE plans (
        id          INTEGER PRIMARY KEY,
        uid         TEXT NOT NULL UNIQUE,      -- stable across export/import
        world       TEXT NOT NULL,
        task        TEXT NOT NULL,
        view        INTEGER NOT NULL,
        env_seed    INTEGER NOT NULL,
        sample_seed INTEGER NOT NULL,
        instruction TEXT NOT NULL,
        model       TEXT NOT NULL,
        sampler     TEXT NOT NULL,             -- JSON SamplerRecord
        start_frame TEXT NOT NULL REFERENCES frames(hash),
        created_ms  INTEGER NOT NULL
    );
    CREATE TABLE iterations (
        id          INTEGER PRIMARY KEY,
        plan_id     INTEGER NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        critique    TEXT NOT NULL,
        verdict     TEXT CHECK (verdict IN ('accept', 'reject')),
        findings    TEXT NOT NULL,             -- JSON [Finding]
        created_ms  INTEGER NOT NULL,
        UNIQUE (plan_id, idx)
    );
    CREATE TABLE iteration_frames (
        iteration_id INTEGER NOT NULL REFERENCES iterations(id) ON DELETE CASCADE,
        pos          INTEGER NOT NULL,
        hash         TEXT NOT NULL REFERENCES frames(hash),
        PRIMARY KEY (iteration_id, pos)
    );
    CREATE TABLE executions (
        id          INTEGER PRIMARY KEY,
        plan_id     INTEGER NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        iteration   INTEGER,
        success     INTEGER NOT NULL,
        steps       INTEGER NOT NULL,
        details     TEXT NOT NULL,             -- JSON
        created_ms  INTEGER NOT NULL
    );
    CREATE TABLE annotations (
        plan_id     INTEGER NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        annotator   TEXT NOT NULL,
        body        TEXT NOT NULL,             -- JSON Annotation
        verdict     TEXT,                      -- copied from body for filtering
        rating      INTEGER,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (plan_id, annotator)
    );
    CREATE TABLE preferences (
        plan_a      INTEGER NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        plan_b      INTEGER NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        annotator   TEXT NOT NULL,
        choice      TEXT NOT NULL CHECK (choice IN ('a_over_b', 'b_over_a', 'both_good', 'both_bad')),
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (plan_a, plan_b, annotator)
    );
    CREATE TABLE curated (
        plan_id     INTEGER PRIMARY KEY REFERENCES plans(id) ON DELETE CASCADE,
        curated_by  TEXT NOT NULL,
        curated_ms  INTEGER NOT NULL
    );
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        actor       TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        action      TEXT NOT NULL CHECK (action IN ('edit', 'undo', 'redo', 'import')),
        kind        TEXT NOT NULL CHECK (kind IN ('annotation', 'preference', 'curation')),
        plan_id     INTEGER NOT NULL,
        other_plan  INTEGER,
        subject     TEXT,                      -- whose label (annotation, preference)
        before      TEXT,                      -- JSON state, NULL = absent
        after       TEXT,
        stack       TEXT CHECK (stack IN ('done', 'undone', 'dead')),
        reverts     INTEGER                    -- the entry an undo/redo acted on
    );
    CREATE INDEX audit_actor_stack ON audit(actor, stack, id);
    CREATE INDEX audit_plan ON audit(plan_id);
    CREATE INDEX iterations_plan ON iterations(plan_id);
    CREATE INDEX annotations_annotator ON annotations(annotator, plan_id);
    ",
    // 2: training runs (which curated plans a fine-tune used and where its model went).
    r"
    CREATE TABLE training_runs (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        out_dir     TEXT NOT NULL,
        base_model  TEXT NOT NULL,
        config      TEXT NOT NULL,             -- JSON
        plan_ids    TEXT NOT NULL,             -- JSON [plan id] trained on
        status      TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'stopped')),
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER
    );
    CREATE INDEX plans_task ON plans(task, view);
    ",
];

/// The version a fully migrated store has.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The version of the database (0 for a new file).
pub(crate) fn version(conn: &Connection) -> Result<u32, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let v: Option<u32> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0))
}

/// Applies the migrations the database lacks, each in its own immediate transaction.
/// Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Migrates up to `target` (tests use it to build old stores).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let v = version(&tx)?;
        if v >= target {
            return Ok(found);
        }
        tx.execute_batch(MIGRATIONS[v as usize])?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [v + 1])?;
        tx.commit()?;
    }
}
