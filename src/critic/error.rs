//! Errors of setting critics up and of measuring them (reviews themselves never fail).

/// What can go wrong configuring a critic or running its calibration.
#[derive(Debug, thiserror::Error)]
pub enum CriticError {
    #[error("no API endpoint: set {var} or pass --critic-url (e.g. http://localhost:8000/v1)")]
    MissingEndpoint { var: &'static str },
    #[error("bad critic setting: {0}")]
    BadSetting(String),
    #[error(transparent)]
    World(#[from] crate::env::WorldError),
    #[error("cannot load the local VLM ({reason}): {path}")]
    LocalModel {
        reason: String,
        path: std::path::PathBuf,
    },
    #[error("model: {0}")]
    Model(String),
}
