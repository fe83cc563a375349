//! Labels and their history: annotations, pairwise preferences and curation, every change
//! written together with an audit entry (who, when, before, after) in one transaction.
//! Undo and redo walk each actor's audit entries like an editor's stacks:
//! an edit is pushed as `done`; `undo` restores the newest `done` entry's *before* state and
//! marks it `undone`; `redo` re-applies the most recently undone entry's *after* state; a new
//! edit marks the actor's `undone` entries `dead` (no redo after a new edit). Undo and redo are
//! changes too and are logged as such (`action` = `undo` / `redo`).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::{
    AnnotationRecord, AuditEntry, AuditId, ChangeKind, PlanId, Preference, PreferenceRecord,
    Result, Store, StoreError, Verdict, ensure_plan, from_json, now_ms, to_json,
};
use crate::store::db::types::Annotation;

/// Which label a change touches.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Target {
    Annotation {
        plan: PlanId,
        annotator: String,
    },
    Preference {
        a: PlanId,
        b: PlanId,
        annotator: String,
    },
    Curation {
        plan: PlanId,
    },
}

impl Target {
    fn kind(&self) -> ChangeKind {
        match self {
            Self::Annotation { .. } => ChangeKind::Annotation,
            Self::Preference { .. } => ChangeKind::Preference,
            Self::Curation { .. } => ChangeKind::Curation,
        }
    }

    fn plan(&self) -> PlanId {
        match self {
            Self::Annotation { plan, .. } | Self::Curation { plan } => *plan,
            Self::Preference { a, .. } => *a,
        }
    }

    fn other_plan(&self) -> Option<PlanId> {
        match self {
            Self::Preference { b, .. } => Some(*b),
            _ => None,
        }
    }

    fn subject(&self) -> Option<&str> {
        match self {
            Self::Annotation { annotator, .. } | Self::Preference { annotator, .. } => {
                Some(annotator)
            }
            Self::Curation { .. } => None,
        }
    }

    fn from_row(kind: ChangeKind, plan: i64, other: Option<i64>, subject: Option<String>) -> Self {
        match kind {
            ChangeKind::Annotation => Self::Annotation {
                plan: PlanId(plan),
                annotator: subject.unwrap_or_default(),
            },
            ChangeKind::Preference => Self::Preference {
                a: PlanId(plan),
                b: PlanId(other.unwrap_or(plan)),
                annotator: subject.unwrap_or_default(),
            },
            ChangeKind::Curation => Self::Curation { plan: PlanId(plan) },
        }
    }
}

/// The current state of a label as JSON (None = absent).
fn read_state(conn: &Connection, target: &Target) -> Result<Option<Value>> {
    let s: Option<String> = match target {
        Target::Annotation { plan, annotator } => conn
            .query_row(
                "SELECT body FROM annotations WHERE plan_id = ?1 AND annotator = ?2",
                params![plan.0, annotator],
                |r| r.get(0),
            )
            .optional()?,
        Target::Preference { a, b, annotator } => conn
            .query_row(
                "SELECT json_quote(choice) FROM preferences
                 WHERE plan_a = ?1 AND plan_b = ?2 AND annotator = ?3",
                params![a.0, b.0, annotator],
                |r| r.get(0),
            )
            .optional()?,
        Target::Curation { plan } => conn
            .query_row(
                "SELECT json_object('by', curated_by, 'at_ms', curated_ms) FROM curated
                 WHERE plan_id = ?1",
                [plan.0],
                |r| r.get(0),
            )
            .optional()?,
    };
    s.map(|s| from_json(&s, "label state")).transpose()
}

/// Sets a label to `state` (None = delete it).
fn write_state(conn: &Connection, target: &Target, state: Option<&Value>, now: i64) -> Result<()> {
    match (target, state) {
        (Target::Annotation { plan, annotator }, None) => {
            conn.execute(
                "DELETE FROM annotations WHERE plan_id = ?1 AND annotator = ?2",
                params![plan.0, annotator],
            )?;
        }
        (Target::Annotation { plan, annotator }, Some(v)) => {
            let ann: Annotation =
                serde_json::from_value(v.clone()).map_err(|source| StoreError::Json {
                    what: "annotation".into(),
                    source,
                })?;
            conn.execute(
                "INSERT INTO annotations (plan_id, annotator, body, verdict, rating, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (plan_id, annotator) DO UPDATE SET body = ?3, verdict = ?4,
                     rating = ?5, updated_ms = ?6",
                params![
                    plan.0,
                    annotator,
                    to_json(&ann)?,
                    ann.verdict.map(Verdict::as_str),
                    ann.rating,
                    now
                ],
            )?;
        }
        (Target::Preference { a, b, annotator }, None) => {
            conn.execute(
                "DELETE FROM preferences WHERE plan_a = ?1 AND plan_b = ?2 AND annotator = ?3",
                params![a.0, b.0, annotator],
            )?;
        }
        (Target::Preference { a, b, annotator }, Some(v)) => {
            let choice = v
                .as_str()
                .and_then(Preference::parse)
                .ok_or_else(|| StoreError::Invalid(format!("not a preference: {v}")))?;
            conn.execute(
                "INSERT INTO preferences (plan_a, plan_b, annotator, choice, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (plan_a, plan_b, annotator) DO UPDATE SET choice = ?4, updated_ms = ?5",
                params![a.0, b.0, annotator, choice.as_str(), now],
            )?;
        }
        (Target::Curation { plan }, None) => {
            conn.execute("DELETE FROM curated WHERE plan_id = ?1", [plan.0])?;
        }
        (Target::Curation { plan }, Some(v)) => {
            let by = v.get("by").and_then(Value::as_str).unwrap_or("");
            let at = v.get("at_ms").and_then(Value::as_i64).unwrap_or(now);
            conn.execute(
                "INSERT INTO curated (plan_id, curated_by, curated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plan_id) DO UPDATE SET curated_by = ?2, curated_ms = ?3",
                params![plan.0, by, at],
            )?;
        }
    }
    Ok(())
}

fn json_text(v: Option<&Value>) -> Option<String> {
    v.map(Value::to_string)
}

#[allow(clippy::too_many_arguments)]
fn log(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &Target,
    before: Option<&Value>,
    after: Option<&Value>,
    stack: Option<&str>,
    reverts: Option<i64>,
    now: i64,
) -> Result<AuditId> {
    conn.execute(
        "INSERT INTO audit (actor, at_ms, action, kind, plan_id, other_plan, subject, before,
                            after, stack, reverts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            actor,
            now,
            action,
            target.kind().as_str(),
            target.plan().0,
            target.other_plan().map(|p| p.0),
            target.subject(),
            json_text(before),
            json_text(after),
            stack,
            reverts
        ],
    )?;
    Ok(AuditId(conn.last_insert_rowid()))
}

/// Applies one label change with its audit entry. `action` is `edit` (undoable) or `import`.
/// Returns None when the label already had that state (nothing logged).
pub(crate) fn change(
    conn: &mut Connection,
    target: &Target,
    new: Option<Value>,
    actor: &str,
    action: &str,
    label_ms: Option<i64>,
) -> Result<Option<AuditId>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    ensure_plan(&tx, target.plan())?;
    if let Some(b) = target.other_plan() {
        ensure_plan(&tx, b)?;
    }
    let before = read_state(&tx, target)?;
    if before == new {
        return Ok(None);
    }
    let now = now_ms();
    write_state(&tx, target, new.as_ref(), label_ms.unwrap_or(now))?;
    let stack = if action == "edit" {
        tx.execute(
            "UPDATE audit SET stack = 'dead' WHERE actor = ?1 AND stack = 'undone'",
            [actor],
        )?;
        Some("done")
    } else {
        None
    };
    let id = log(
        &tx,
        actor,
        action,
        target,
        before.as_ref(),
        new.as_ref(),
        stack,
        None,
        now,
    )?;
    tx.commit()?;
    Ok(Some(id))
}

/// A change undo or redo made, for the studio to show and navigate to.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reverted {
    /// The new audit entry recording the undo/redo.
    pub audit: AuditId,
    /// The edit that was undone or redone.
    pub edit: AuditId,
    pub kind: ChangeKind,
    pub plan: PlanId,
    pub other_plan: Option<PlanId>,
    /// The state now.
    pub state: Option<Value>,
}

fn step(conn: &mut Connection, actor: &str, undo: bool) -> Result<Option<Reverted>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let sql = if undo {
        "SELECT id, kind, plan_id, other_plan, subject, before, after FROM audit
         WHERE actor = ?1 AND stack = 'done' ORDER BY id DESC LIMIT 1"
    } else {
        "SELECT id, kind, plan_id, other_plan, subject, before, after FROM audit
         WHERE actor = ?1 AND stack = 'undone' ORDER BY id ASC LIMIT 1"
    };
    type Row = (
        i64,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = tx
        .query_row(sql, [actor], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let Some((id, kind, plan, other, subject, before, after)) = row else {
        return Ok(None);
    };
    let kind = ChangeKind::parse(&kind)
        .ok_or_else(|| StoreError::Invalid(format!("audit entry {id} has kind {kind}")))?;
    let target = Target::from_row(kind, plan, other, subject);
    let wanted = if undo { before } else { after };
    let wanted: Option<Value> = wanted.map(|s| from_json(&s, "audit state")).transpose()?;
    let current = read_state(&tx, &target)?;
    let now = now_ms();
    // The plan may have been deleted since; the label then cannot come back.
    if plan_exists(&tx, &target)? {
        write_state(&tx, &target, wanted.as_ref(), now)?;
    }
    tx.execute(
        "UPDATE audit SET stack = ?2 WHERE id = ?1",
        params![id, if undo { "undone" } else { "done" }],
    )?;
    let audit = log(
        &tx,
        actor,
        if undo { "undo" } else { "redo" },
        &target,
        current.as_ref(),
        wanted.as_ref(),
        None,
        Some(id),
        now,
    )?;
    tx.commit()?;
    Ok(Some(Reverted {
        audit,
        edit: AuditId(id),
        kind,
        plan: target.plan(),
        other_plan: target.other_plan(),
        state: wanted,
    }))
}

fn plan_exists(conn: &Connection, target: &Target) -> Result<bool> {
    let mut ok = ensure_plan(conn, target.plan()).is_ok();
    if let Some(b) = target.other_plan() {
        ok &= ensure_plan(conn, b).is_ok();
    }
    Ok(ok)
}

pub(crate) fn annotations_of(conn: &Connection, plan: PlanId) -> Result<Vec<AnnotationRecord>> {
    let mut stmt = conn.prepare(
        "SELECT annotator, updated_ms, body FROM annotations WHERE plan_id = ?1 ORDER BY annotator",
    )?;
    let rows = stmt.query_map([plan.0], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (annotator, updated_ms, body) = row?;
        out.push(AnnotationRecord {
            annotator,
            updated_ms,
            annotation: from_json(&body, "annotation")?,
        });
    }
    Ok(out)
}

pub(crate) fn validate(ann: &Annotation) -> Result<()> {
    if let Some(r) = ann.rating
        && !(1..=5).contains(&r)
    {
        return Err(StoreError::Invalid(format!("rating {r} is not in 1..=5")));
    }
    Ok(())
}

impl Store {
    /// Sets `annotator`'s label of `plan` (replacing their previous one), logged and undoable.
    /// Returns None when the label was already exactly this.
    pub fn annotate(
        &self,
        plan: PlanId,
        annotation: &Annotation,
        annotator: &str,
    ) -> Result<Option<AuditId>> {
        validate(annotation)?;
        let v = serde_json::to_value(annotation).map_err(|source| StoreError::Json {
            what: "annotation".into(),
            source,
        })?;
        let target = Target::Annotation {
            plan,
            annotator: annotator.to_owned(),
        };
        change(&mut self.conn(), &target, Some(v), annotator, "edit", None)
    }

    /// Removes `annotator`'s label of `plan` (logged and undoable).
    pub fn clear_annotation(&self, plan: PlanId, annotator: &str) -> Result<Option<AuditId>> {
        let target = Target::Annotation {
            plan,
            annotator: annotator.to_owned(),
        };
        change(&mut self.conn(), &target, None, annotator, "edit", None)
    }

    /// `annotator`'s current label of `plan`.
    pub fn annotation(&self, plan: PlanId, annotator: &str) -> Result<Option<AnnotationRecord>> {
        let conn = self.conn();
        Ok(annotations_of(&conn, plan)?
            .into_iter()
            .find(|a| a.annotator == annotator))
    }

    /// Records which of two plans `annotator` prefers (or None to remove the judgement).
    pub fn prefer(
        &self,
        a: PlanId,
        b: PlanId,
        choice: Option<Preference>,
        annotator: &str,
    ) -> Result<Option<AuditId>> {
        if a == b {
            return Err(StoreError::Invalid(format!("{a} compared with itself")));
        }
        let target = Target::Preference {
            a,
            b,
            annotator: annotator.to_owned(),
        };
        let v = choice.map(|c| Value::String(c.as_str().to_owned()));
        change(&mut self.conn(), &target, v, annotator, "edit", None)
    }

    /// Every pairwise preference, in insertion order of the pair.
    pub fn preferences(&self) -> Result<Vec<PreferenceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT plan_a, plan_b, annotator, choice, updated_ms FROM preferences
             ORDER BY plan_a, plan_b, annotator",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (a, b, annotator, choice, updated_ms) = row?;
            out.push(PreferenceRecord {
                plan_a: PlanId(a),
                plan_b: PlanId(b),
                annotator,
                choice: Preference::parse(&choice)
                    .ok_or_else(|| StoreError::Invalid(format!("preference {choice}")))?,
                updated_ms,
            });
        }
        Ok(out)
    }

    /// Adds `plan` to the curated set (or removes it), logged and undoable.
    pub fn curate(&self, plan: PlanId, curated: bool, annotator: &str) -> Result<Option<AuditId>> {
        let mut conn = self.conn();
        let target = Target::Curation { plan };
        // Re-curating keeps the original curator and time (no change, no log entry).
        if curated && read_state(&conn, &target)?.is_some() {
            ensure_plan(&conn, plan)?;
            return Ok(None);
        }
        let v = curated.then(|| serde_json::json!({ "by": annotator, "at_ms": now_ms() }));
        change(&mut conn, &target, v, annotator, "edit", None)
    }

    /// Undoes `annotator`'s newest change not yet undone; None when there is nothing to undo.
    pub fn undo(&self, annotator: &str) -> Result<Option<Reverted>> {
        step(&mut self.conn(), annotator, true)
    }

    /// Re-applies `annotator`'s most recently undone change; None when there is none (or a
    /// new edit came after the undo).
    pub fn redo(&self, annotator: &str) -> Result<Option<Reverted>> {
        step(&mut self.conn(), annotator, false)
    }

    /// The audit log, oldest first (of one plan, or all).
    pub fn audit_log(&self, plan: Option<PlanId>) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, actor, at_ms, action, kind, plan_id, other_plan, subject, before, after
             FROM audit WHERE ?1 IS NULL OR plan_id = ?1 OR other_plan = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([plan.map(|p| p.0)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, actor, at_ms, action, kind, plan, other, subject, before, after) = row?;
            out.push(AuditEntry {
                id: AuditId(id),
                actor,
                at_ms,
                action,
                kind: ChangeKind::parse(&kind)
                    .ok_or_else(|| StoreError::Invalid(format!("audit kind {kind}")))?,
                plan: PlanId(plan),
                other_plan: other.map(PlanId),
                subject,
                before: before.map(|s| from_json(&s, "audit before")).transpose()?,
                after: after.map(|s| from_json(&s, "audit after")).transpose()?,
            });
        }
        Ok(out)
    }
}
