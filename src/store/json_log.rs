//! Append-only JSON-lines logs of finished work (evaluated episodes, collection attempts): each
//! line is synced to disk as it is written, so a killed run loses at most the line being
//! written, and a rerun reads what is there and does only the rest.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::atomic::{self, IoError};

/// A JSON-lines log of `T`s.
pub struct JsonLog<T> {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    done: Vec<T>,
}

impl<T: Serialize + DeserializeOwned> JsonLog<T> {
    /// Opens (or creates) the log at `path` and reads the entries already there. A torn last
    /// line (a crash mid-write) or a malformed line is dropped, and the file is rewritten
    /// without it so that new lines start clean.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(atomic::io_error("cannot create folder", parent))?;
        }
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(atomic::io_error("cannot read the log", path)(e)),
        };
        let mut done = Vec::new();
        let mut dropped = 0;
        for line in text.split_inclusive('\n') {
            let parsed = line
                .ends_with('\n')
                .then(|| serde_json::from_str::<T>(line.trim()).ok())
                .flatten();
            match parsed {
                Some(r) => done.push(r),
                None if line.trim().is_empty() => {}
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::warn!(
                "dropped {dropped} damaged line(s) of {} (they will be re-run)",
                path.display()
            );
            let clean: String = done
                .iter()
                .filter_map(|r| serde_json::to_string(r).ok())
                .map(|l| l + "\n")
                .collect();
            atomic::write_file(path, clean.as_bytes())
                .map_err(atomic::io_error("cannot rewrite the log", path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(atomic::io_error("cannot open the log", path))?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            done,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries that were in the log when it was opened.
    pub fn done(&self) -> &[T] {
        &self.done
    }

    /// Appends one entry as a line and syncs it to disk.
    pub fn append(&self, entry: &T) -> Result<(), IoError> {
        let mut line = serde_json::to_string(entry).map_err(|e| {
            atomic::io_error("cannot encode a log entry", &self.path)(std::io::Error::other(e))
        })?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(atomic::io_error("cannot append to the log", &self.path))?;
        Ok(())
    }
}
