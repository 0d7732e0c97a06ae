//! Why a job failed: every cause a worker can meet, each with its [`Code`] (stored as the
//! job's `error.code`) and the message the user reads on the job (`error.message`).

use crate::error_code::{Code, ErrorCode};
use crate::store::StoreError;
use crate::train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("the stored job request is unreadable: {0}")]
    InvalidJob(serde_json::Error),
    /// The database failed while the job was being prepared.
    #[error("{0}")]
    Store(StoreError),
    #[error("dataset {0} was deleted before the job ran; upload it again and resubmit")]
    DatasetNotFound(String),
    #[error("the stored dataset {id} cannot be read ({source}); upload it again")]
    DatasetUnreadable { id: String, source: std::io::Error },
    #[error("{}", train_message(.0))]
    Train(TrainError),
    /// Training panicked (the panic itself is logged by the worker).
    #[error("training crashed unexpectedly; the error was logged")]
    Panicked,
    /// The model's files could not be written; `cause` is the OS's reason, without paths.
    #[error(
        "the model could not be written to the data folder ({cause}); nothing was kept. Free disk space or fix the folder's permissions, then resubmit the job"
    )]
    SaveFailed { cause: String },
    /// The model's row could not be written (logged by the worker).
    #[error("the model could not be recorded; the error was logged")]
    RecordFailed,
}

/// Numerical and I/O failures say that training failed; the others explain themselves.
fn train_message(e: &TrainError) -> String {
    match e {
        TrainError::Candle(_) | TrainError::Io(_) => format!("training failed: {e}"),
        _ => e.to_string(),
    }
}

impl ErrorCode for JobFailure {
    fn code(&self) -> Code {
        match self {
            JobFailure::InvalidJob(_) => Code::InvalidJob,
            JobFailure::Store(_) | JobFailure::Panicked | JobFailure::RecordFailed => {
                Code::Internal
            }
            JobFailure::DatasetNotFound(_) => Code::DatasetNotFound,
            JobFailure::DatasetUnreadable { .. } => Code::DatasetUnreadable,
            JobFailure::Train(e) => e.code(),
            JobFailure::SaveFailed { .. } => Code::ModelSaveFailed,
        }
    }
}
