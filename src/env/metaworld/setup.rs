//! Where the bridge's Python lives and how it gets there: a virtual environment with the
//! pinned MetaWorld (which pins MuJoCo), made by `videoagent setup metaworld`.
//!
//! The venv is found at `$VIDEOAGENT_METAWORLD_VENV`, else
//! `$XDG_DATA_HOME/videoagent/metaworld-venv`, else `~/.local/share/videoagent/metaworld-venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Overrides the venv location.
pub const VENV_ENV: &str = "VIDEOAGENT_METAWORLD_VENV";
/// What pip installs: `python/requirements.txt`, which CI installs too.
pub const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");

/// The requirement lines of [`REQUIREMENTS`] (comments and blank lines dropped).
pub fn packages() -> Vec<&'static str> {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Errors of [`create_venv`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot run `{command}`: {source}")]
    Run {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status})")]
    Failed { command: String, status: String },
}

/// The venv to use: the override, else the default location.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(VENV_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("videoagent").join("metaworld-venv")
}

/// The venv's interpreter.
pub fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// The one command that makes the venv, as errors quote it.
pub fn install_hint(venv: &Path) -> String {
    if venv == venv_dir() && std::env::var_os(VENV_ENV).is_none() {
        "videoagent setup metaworld".to_owned()
    } else {
        format!("videoagent setup metaworld --venv {}", venv.display())
    }
}

/// Whether the venv looks installed: its interpreter and a `metaworld` package exist.
/// (Cheap: nothing is started; the bridge's handshake is the real check.)
pub fn looks_installed(venv: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return false;
    };
    venv_python(venv).exists()
        && entries
            .flatten()
            .any(|e| e.path().join("site-packages/metaworld").is_dir())
}

/// Creates the venv with `base_python -m venv` and pip-installs [`packages`] into it,
/// showing pip's own output. Rerunning on an existing venv only tops it up.
pub fn create_venv(venv: &Path, base_python: &Path) -> Result<(), SetupError> {
    if !venv_python(venv).exists() {
        run(Command::new(base_python).arg("-m").arg("venv").arg(venv))?;
    }
    run(Command::new(venv_python(venv))
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(packages()))
}

fn run(command: &mut Command) -> Result<(), SetupError> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let status = command.status().map_err(|source| SetupError::Run {
        command: shown.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(SetupError::Failed {
            command: shown,
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metaworld_is_pinned_exactly_and_comments_are_not_packages() {
        let packages = packages();
        assert!(
            packages.iter().any(|p| p.starts_with("metaworld==")),
            "the bridge speaks to one MetaWorld version: {packages:?}"
        );
        assert!(
            packages
                .iter()
                .all(|p| !p.contains(' ') && !p.starts_with('#'))
        );
    }
}
