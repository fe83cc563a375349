//! Errors of the model module: configs, checkpoint files, and tensor maths.

use std::fmt::Write as _;
use std::path::PathBuf;

/// A tensor whose shape differs from what the network expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// What went wrong while configuring, loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model preset `{name}` (valid: {valid})")]
    UnknownPreset { name: String, valid: String },

    #[error("cannot infer the U-Net config from the tensors: {reason}")]
    InferConfig { reason: String },

    #[error("cannot read checkpoint: {source}: {path}")]
    Io {
        source: std::io::Error,
        path: PathBuf,
    },

    #[error("not a readable safetensors or PyTorch checkpoint ({reason}): {path}")]
    Format { reason: String, path: PathBuf },

    #[error("checkpoint holds no U-Net tensors (looked for {prefixes}): {path}")]
    NoUnetTensors { prefixes: String, path: PathBuf },

    #[error(
        "checkpoint does not match the network:{}: {path}",
        describe(missing, unknown, mis_shaped)
    )]
    Mismatch {
        missing: Vec<String>,
        unknown: Vec<String>,
        mis_shaped: Vec<ShapeMismatch>,
        path: PathBuf,
    },

    #[error("cannot use the text encoder ({reason}): {path}")]
    TextEncoder { reason: String, path: PathBuf },

    #[error("cannot use device `{device}`: {reason}")]
    Device { device: String, reason: String },

    #[error("cannot use precision `{precision}`: {reason}")]
    Precision { precision: String, reason: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Lists every offending tensor so a user can see at once how two state_dicts differ.
fn describe(missing: &[String], unknown: &[String], mis_shaped: &[ShapeMismatch]) -> String {
    let mut out = String::new();
    if !missing.is_empty() {
        let _ = write!(out, " {} missing [{}]", missing.len(), missing.join(", "));
    }
    if !unknown.is_empty() {
        let _ = write!(out, " {} unknown [{}]", unknown.len(), unknown.join(", "));
    }
    if !mis_shaped.is_empty() {
        let list: Vec<String> = mis_shaped
            .iter()
            .map(|m| format!("{} expected {:?} found {:?}", m.name, m.expected, m.found))
            .collect();
        let _ = write!(
            out,
            " {} mis-shaped [{}]",
            mis_shaped.len(),
            list.join(", ")
        );
    }
    out
}
