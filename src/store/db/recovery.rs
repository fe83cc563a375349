//! The check a store runs when it opens: SQLite's `integrity_check` and `foreign_key_check`,
//! then every frame file against the `frames` table. It repairs what it safely can and reports
//! everything it found; it never deletes a database row.
//!
//! - An index that fails the integrity check is rebuilt (`REINDEX`) and checked again.
//! - A frame file that is missing is looked for in `lost+found/` and restored from there; if it
//!   is not there the row is flagged `missing = 1` and the report names it.
//! - A frame file whose bytes do not hash to its name is moved to `lost+found/` (kept, not
//!   deleted) and flagged missing.
//! - A frame file no row references (a writer died between writing it and committing) and a
//!   writer's leftover temporary file are removed: they were never part of a committed record.
//!
//! The file scan runs in two phases: hashing every file without holding the database lock, then
//! re-checking only the suspects under the write lock (writers write frame files inside their
//! transaction, so under the lock no file is half-way to being committed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;

use super::frames::{frame_path, hash_bytes, is_hash};
use super::{Result, now_ms};
use crate::store::atomic::{io_error, sync_parent};

/// What the check found and what it did about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    pub schema_version: u32,
    /// The version found before migrating, when a migration ran.
    pub migrated_from: Option<u32>,
    /// `integrity_check` output other than "ok" (before any repair).
    pub integrity_problems: Vec<String>,
    /// True when a REINDEX ran and the second integrity check passed.
    pub integrity_repaired: bool,
    /// `foreign_key_check` rows, as text (reported, never deleted).
    pub foreign_key_problems: Vec<String>,
    pub frames_checked: usize,
    /// Frames referenced by records whose file is gone and could not be restored.
    pub missing_frames: Vec<String>,
    /// Frames whose file did not match its hash (moved to `lost+found/`).
    pub corrupt_frames: Vec<String>,
    /// Frames brought back from `lost+found/`.
    pub restored_frames: Vec<String>,
    /// Unreferenced frame files removed (left by a writer that died before committing).
    pub orphan_files_removed: Vec<PathBuf>,
    /// Temporary files of interrupted atomic writes removed.
    pub temp_files_removed: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True when nothing was wrong (a migration alone is not a problem).
    pub fn is_clean(&self) -> bool {
        self.integrity_problems.is_empty()
            && self.foreign_key_problems.is_empty()
            && self.missing_frames.is_empty()
            && self.corrupt_frames.is_empty()
            && self.restored_frames.is_empty()
            && self.orphan_files_removed.is_empty()
            && self.temp_files_removed.is_empty()
    }

    /// True when something is still wrong after the repairs (records lack frames, or the
    /// database itself is damaged).
    pub fn has_unrepaired(&self) -> bool {
        (!self.integrity_problems.is_empty() && !self.integrity_repaired)
            || !self.foreign_key_problems.is_empty()
            || !self.missing_frames.is_empty()
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store check: schema v{}, {} frame files checked",
            self.schema_version, self.frames_checked
        )?;
        if let Some(v) = self.migrated_from {
            write!(f, "; migrated from v{v}")?;
        }
        if self.is_clean() {
            return write!(f, "; all intact");
        }
        if !self.integrity_problems.is_empty() {
            write!(
                f,
                "; database integrity: {} problem(s) ({}), {}",
                self.integrity_problems.len(),
                self.integrity_problems.first().map_or("", String::as_str),
                if self.integrity_repaired {
                    "repaired by REINDEX"
                } else {
                    "NOT repaired: restore a backup"
                }
            )?;
        }
        let counts = [
            (self.foreign_key_problems.len(), "dangling reference(s)"),
            (self.missing_frames.len(), "missing frame file(s)"),
            (
                self.corrupt_frames.len(),
                "corrupt frame file(s) moved to lost+found",
            ),
            (
                self.restored_frames.len(),
                "frame file(s) restored from lost+found",
            ),
            (
                self.orphan_files_removed.len(),
                "unreferenced frame file(s) from interrupted writes removed",
            ),
            (
                self.temp_files_removed.len(),
                "temporary file(s) from interrupted writes removed",
            ),
        ];
        for (n, what) in counts {
            if n > 0 {
                write!(f, "; {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// What a file in `frames/` is.
enum Scanned {
    /// A `<hash>.png` file whose content hashes to `ok == true` its name.
    Frame {
        hash: String,
        intact: bool,
    },
    Temp,
    Other,
}

fn scan_file(path: &Path) -> Scanned {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name else {
        return Scanned::Other;
    };
    if name.starts_with('.') && name.ends_with(".tmp") {
        return Scanned::Temp;
    }
    match name.strip_suffix(".png") {
        Some(h) if is_hash(h) => {
            let intact = std::fs::read(path).is_ok_and(|b| hash_bytes(&b) == h);
            Scanned::Frame {
                hash: h.to_owned(),
                intact,
            }
        }
        _ => Scanned::Other,
    }
}

fn list_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(root.join("frames")) else {
        return out;
    };
    for shard in shards.flatten() {
        let p = shard.path();
        if p.is_dir() {
            if let Ok(files) = std::fs::read_dir(&p) {
                out.extend(files.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn known_hashes(conn: &Connection) -> Result<BTreeSet<String>> {
    let mut stmt = conn.prepare("SELECT hash FROM frames")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<BTreeSet<_>>>()?)
}

/// Runs the whole check (see the module docs).
pub(crate) fn check(conn: &mut Connection, root: &Path) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    check_database(conn, &mut report)?;

    // Phase 1, no lock: hash every file.
    let mut suspects: BTreeMap<PathBuf, ()> = BTreeMap::new();
    let mut intact: BTreeSet<String> = BTreeSet::new();
    for path in list_files(root) {
        match scan_file(&path) {
            Scanned::Frame { hash, intact: true } => {
                intact.insert(hash);
            }
            Scanned::Frame { .. } | Scanned::Temp => {
                suspects.insert(path, ());
            }
            Scanned::Other => {}
        }
    }
    let known = known_hashes(conn)?;
    for h in intact.difference(&known) {
        suspects.insert(frame_path(root, h), ());
    }
    let unseen: Vec<String> = known.difference(&intact).cloned().collect();

    // Phase 2, under the write lock: re-check suspects and repair.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known = known_hashes(&tx)?;
    report.frames_checked = known.len();
    let lost = root.join("lost+found");
    for path in suspects.keys() {
        match scan_file(path) {
            Scanned::Temp => {
                if std::fs::remove_file(path).is_ok() {
                    report.temp_files_removed.push(path.clone());
                }
            }
            Scanned::Frame { hash, intact } => {
                if !intact {
                    if path.exists() {
                        std::fs::create_dir_all(&lost)
                            .map_err(io_error("cannot create lost+found", &lost))?;
                        let dest = lost.join(format!("{hash}.png.corrupt-{}", now_ms()));
                        std::fs::rename(path, &dest)
                            .map_err(io_error("cannot move corrupt frame", path))?;
                        report.corrupt_frames.push(hash);
                    }
                } else if !known.contains(&hash) && std::fs::remove_file(path).is_ok() {
                    report.orphan_files_removed.push(path.clone());
                }
            }
            Scanned::Other => {}
        }
    }
    // Referenced frames without an intact file: restore from lost+found or flag.
    let mut missing: BTreeSet<String> = unseen.into_iter().collect();
    missing.extend(report.corrupt_frames.iter().cloned());
    for hash in &missing {
        let path = frame_path(root, hash);
        if std::fs::read(&path).is_ok_and(|b| hash_bytes(&b) == *hash) {
            continue; // written meanwhile by another process
        }
        if !known.contains(hash) {
            continue;
        }
        let candidate = lost.join(format!("{hash}.png"));
        let restored = std::fs::read(&candidate).is_ok_and(|b| hash_bytes(&b) == *hash) && {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(io_error("cannot create frame folder", dir))?;
            }
            std::fs::rename(&candidate, &path).is_ok()
        };
        if restored {
            sync_parent(&path).map_err(io_error("cannot sync frame folder", &path))?;
            tx.execute("UPDATE frames SET missing = 0 WHERE hash = ?1", [hash])?;
            report.restored_frames.push(hash.clone());
        } else {
            tx.execute("UPDATE frames SET missing = 1 WHERE hash = ?1", [hash])?;
            report.missing_frames.push(hash.clone());
        }
    }
    // Frames flagged by an earlier check that are back (e.g. copied in by hand).
    tx.execute(
        "UPDATE frames SET missing = 0 WHERE missing = 1 AND hash NOT IN (SELECT value FROM json_each(?1))",
        params![serde_json::to_string(&report.missing_frames).unwrap_or_else(|_| "[]".into())],
    )?;
    tx.commit()?;
    report.corrupt_frames.sort();
    Ok(report)
}

fn check_database(conn: &Connection, report: &mut RecoveryReport) -> Result<()> {
    let problems = integrity(conn)?;
    if !problems.is_empty() {
        report.integrity_problems = problems;
        conn.execute_batch("REINDEX")?;
        report.integrity_repaired = integrity(conn)?.is_empty();
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let rows = stmt.query_map([], |r| {
        Ok(format!(
            "{} row {} -> {}",
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?.unwrap_or(-1),
            r.get::<_, String>(2)?
        ))
    })?;
    report.foreign_key_problems = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(())
}

fn integrity(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let lines = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
}
