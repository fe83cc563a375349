//! Crash-safe writes: a file or folder appears under its final name only when complete.
//! Files go through a temporary sibling, `fsync`, then `rename`; folders are assembled under
//! a temporary name and renamed at the end.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A failed file operation: what was being done, why it failed, and on which path.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source} ({path})")]
pub struct IoError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `map_err` adapter naming the operation and the path: `.map_err(io_error("cannot read", p))`.
pub fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename + directory fsync).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as pretty JSON into `path` atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_file(path, &bytes)
}

/// Fsyncs the folder holding `path` so a rename in it survives a power cut.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// A name next to `path` that no other writer uses: `.<name>.<pid>.<n>.tmp`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Removes the temporary files that writes killed midway left in `dir`: ours
/// (`.<name>.<pid>.<n>.tmp`, see [`temp_sibling`]) and the `.tmpXXXXXX` siblings the
/// safetensors writer renames from. Only for a folder this process owns (a run folder): a
/// concurrent writer's temp file would go too. Returns how many were removed.
pub fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temp = name.starts_with(".tmp") || (name.starts_with('.') && name.ends_with(".tmp"));
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A folder being assembled under a temporary name; [`StagedDir::commit`] renames it into
/// place, and dropping it uncommitted removes it.
pub struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts a folder that will become `dest`. `dest` must not exist or be an empty folder.
    pub fn new(dest: &Path) -> io::Result<Self> {
        let tmp = temp_sibling(dest);
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(Self {
            tmp,
            dest: dest.to_owned(),
            committed: false,
        })
    }

    /// Where to write the contents meanwhile.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the finished folder into place (replacing an empty folder there).
    pub fn commit(mut self) -> io::Result<PathBuf> {
        if self.dest.is_dir() {
            fs::remove_dir(&self.dest)?;
        }
        fs::rename(&self.tmp, &self.dest)?;
        sync_parent(&self.dest)?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_whole_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.json");
        write_file(&p, b"first version, long").expect("write");
        write_file(&p, b"second").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn staged_dir_appears_only_on_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out");
        {
            let staged = StagedDir::new(&dest).expect("stage");
            fs::write(staged.path().join("x"), b"1").expect("write");
            assert!(!dest.exists());
        }
        assert!(!dest.exists(), "an abandoned folder must vanish");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
        let staged = StagedDir::new(&dest).expect("stage");
        fs::write(staged.path().join("x"), b"1").expect("write");
        staged.commit().expect("commit");
        assert_eq!(fs::read(dest.join("x")).expect("read"), b"1");
    }

    #[test]
    fn remove_temp_files_takes_only_interrupted_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keep = ["model.safetensors", "loss.csv", ".hidden-but-mine"];
        let temps = [".model.safetensors.123.0.tmp", ".tmpAb12Cd"];
        for name in keep.iter().chain(&temps) {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_temp_files(dir.path()).expect("clean"), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden-but-mine", "loss.csv", "model.safetensors"]);
    }
}
