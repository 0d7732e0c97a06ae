//! Why a backbone cannot be used: unknown, not installed, unloadable, or given inputs it
//! cannot take.

use crate::error_code::{Code, ErrorCode};

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

impl ErrorCode for BackboneError {
    fn code(&self) -> Code {
        match self {
            BackboneError::Unknown(_) => Code::UnknownBackbone,
            BackboneError::Unavailable { .. } => Code::BackboneUnavailable,
            BackboneError::Load { .. } => Code::Internal,
            BackboneError::Input(_) => Code::InvalidInput,
        }
    }

    fn public_message(&self) -> String {
        match self {
            BackboneError::Input(m) => m.clone(),
            other => other.to_string(),
        }
    }
}
