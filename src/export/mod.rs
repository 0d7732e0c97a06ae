//! Model archives, the way a model leaves one Warmstart and enters another: a ZIP that is
//! self-contained (the model's files, its backbone as a folder of its own, the report and a
//! model card), so that importing it needs nothing from the importer's models folder.
//!
//! - [`archive`]: the archive's layout, writing one and unpacking one safely.
//! - [`card`]: `MODEL_CARD.md`, rendered from the typed model, dataset, recipe and report.

pub mod archive;
pub mod card;

use crate::error_code::{Code, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The uploaded archive is not a model archive (the message says why and what to send).
    #[error("{0}")]
    InvalidArchive(String),
    #[error("the archive unpacks to more than {limit} bytes (4x the upload limit)")]
    TooLarge { limit: u64 },
    /// Reading or writing our own files failed.
    #[error("archive i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ErrorCode for ExportError {
    fn code(&self) -> Code {
        match self {
            ExportError::InvalidArchive(_) => Code::InvalidModelArchive,
            ExportError::TooLarge { .. } => Code::PayloadTooLarge,
            ExportError::Io(_) => Code::Internal,
        }
    }
}
