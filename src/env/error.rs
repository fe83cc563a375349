/// Errors of the simulated worlds. Messages name the problem and what would be valid.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("unknown world '{name}' (valid: {valid})")]
    UnknownWorld { name: String, valid: String },
    #[error("unknown task '{task}' (valid: {valid})")]
    UnknownTask { task: String, valid: String },
    #[error("unknown view '{view}' (valid: {valid})")]
    UnknownView { view: String, valid: String },
    #[error("frame size {size} is not supported (valid: 16 to 256 pixels)")]
    BadSize { size: u32 },
    #[error("step called before reset")]
    NotReset,
    #[error("rendering failed: {0}")]
    Render(String),
    #[error("MetaWorld: {0}")]
    Bridge(#[from] super::metaworld::bridge::BridgeError),
}
