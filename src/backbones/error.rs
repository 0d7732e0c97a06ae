//! Why a backbone cannot be used: unknown, not installed, unloadable, or given inputs it
//! cannot take.

#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("unknown backbone {0:?}")]
    Unknown(String),
    #[error(
        "backbone {id:?} is not installed in {dir}; run scripts/fetch-backbones.sh {models_dir}"
    )]
    Unavailable {
        id: String,
        dir: String,
        models_dir: String,
    },
    #[error("cannot load backbone {id:?}: {message}")]
    Load { id: String, message: String },
    #[error("cannot prepare input: {0}")]
    Input(String),
}
