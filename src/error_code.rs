//! The one table of error codes: every `error.code` the service emits, in an HTTP answer
//! (`{"error": {"code", "message"}}`) or on a failed job, is a [`Code`] defined here once,
//! with its snake_case name and its HTTP status. Clients match on the names, so a name never
//! changes once shipped.
//!
//! Every layer's error type says which code it is by implementing [`ErrorCode`]; the HTTP
//! layer turns any of them into an answer in one place (`crate::http::error`), and the job
//! queue stores the name of a failed job's code. Codes that only ever name a failed job
//! carry the status they would have if they were answered synchronously.

use serde::{Serialize, Serializer};

/// An error that knows its [`Code`].
pub trait ErrorCode: std::fmt::Display {
    fn code(&self) -> Code;

    /// What a client is told. Defaults to the error's text; errors whose code hides its
    /// cause (`internal_error`, `model_corrupt`) have their text logged, never shown.
    fn public_message(&self) -> String {
        self.to_string()
    }
}

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, $status:literal; )*) => {
        /// Every error code, with its name ([`Code::name`]) and HTTP status
        /// ([`Code::status`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The snake_case name clients see.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// The HTTP status of an answer with this code.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }
        }
    };
}

codes! {
    // Any request.
    /// The request body or a field of it does not fit the endpoint's schema.
    InvalidRequest = "invalid_request", 422;
    /// The request body is not JSON.
    MalformedJson = "malformed_json", 400;
    UnreadableBody = "unreadable_body", 400;
    UnsupportedMediaType = "unsupported_media_type", 415;
    PayloadTooLarge = "payload_too_large", 413;
    MultipartRequired = "multipart_required", 415;
    MalformedMultipart = "malformed_multipart", 400;
    MissingFile = "missing_file", 422;
    TooManyFiles = "too_many_files", 422;
    FieldTooLong = "field_too_long", 422;
    RouteNotFound = "route_not_found", 404;
    /// A query parameter has a bad value (`limit` out of range, say); the message names it.
    InvalidQuery = "invalid_query", 400;
    /// A list's `after` is not the id of one of its items.
    InvalidCursor = "invalid_cursor", 400;
    MissingApiKey = "missing_api_key", 401;
    InvalidApiKey = "invalid_api_key", 401;
    RateLimited = "rate_limited", 429;
    Overloaded = "overloaded", 503;
    /// A request body that stalled or trickled; the connection is closed.
    RequestTimeout = "request_timeout", 408;
    /// A failure that is not the client's: details are logged, never shown.
    Internal = "internal_error", 500;
    /// The database cannot be reached right now (the request may be retried).
    DatabaseUnavailable = "database_unavailable", 503;
    /// The shared artefact store (`--artifact-store`) does not answer; retry later.
    StorageUnavailable = "storage_unavailable", 503;

    // Datasets.
    DatasetNotFound = "dataset_not_found", 404;
    DatasetInUse = "dataset_in_use", 409;
    NameTooLong = "name_too_long", 422;
    UnsupportedFormat = "unsupported_format", 415;
    EmptyFile = "empty_file", 422;
    EmptyDataset = "empty_dataset", 422;
    TooFewLabels = "too_few_labels", 422;
    EmptyLabel = "empty_label", 422;
    /// A regression target that is not a finite number (the message names the row).
    InvalidTarget = "invalid_target", 422;
    /// The upload's `task` is not one we know, or does not fit the file's columns.
    InvalidTask = "invalid_task", 422;
    LabelTooLong = "label_too_long", 422;
    TextTooLong = "text_too_long", 422;
    InvalidField = "invalid_field", 422;
    MissingField = "missing_field", 422;
    MissingColumns = "missing_columns", 422;
    InvalidUtf8 = "invalid_utf8", 422;
    MalformedCsv = "malformed_csv", 422;
    /// A text or label holds a NUL byte (the message names the line).
    NulByte = "nul_byte", 422;
    /// A column the parser reads (`text`, `label`, `filename`) appears twice.
    DuplicateColumns = "duplicate_columns", 422;
    /// An uploaded JSON dataset file is not valid JSON. The same name as
    /// [`Code::MalformedJson`] (a request body), with another status: both shipped so.
    MalformedJsonFile = "malformed_json", 422;
    MalformedJsonl = "malformed_jsonl", 422;
    MalformedZip = "malformed_zip", 422;
    MalformedLabelsCsv = "malformed_labels_csv", 422;
    LabelsCsvMismatch = "labels_csv_mismatch", 422;
    UnsafeZipPath = "unsafe_zip_path", 422;
    NoLabelledImages = "no_labelled_images", 422;

    // Backbones.
    UnknownBackbone = "unknown_backbone", 422;
    BackboneModalityMismatch = "backbone_modality_mismatch", 422;
    /// The backbone's weights are not installed on this server.
    BackboneUnavailable = "backbone_unavailable", 503;

    // Jobs: submitting and cancelling.
    JobNotFound = "job_not_found", 404;
    JobFinished = "job_finished", 409;
    InvalidHyperparameter = "invalid_hyperparameter", 422;
    InvalidValidation = "invalid_validation", 422;
    InvalidWebhookUrl = "invalid_webhook_url", 422;
    InvalidTimeBudget = "invalid_time_budget", 422;

    // Jobs: why a job failed (only ever a failed job's `error.code`).
    /// The stored job request cannot be read back.
    InvalidJob = "invalid_job", 500;
    /// The job's dataset files cannot be read.
    DatasetUnreadable = "dataset_unreadable", 500;
    /// The data cannot be trained on as asked.
    InvalidData = "invalid_data", 422;
    /// The backbone failed to load or run.
    BackboneFailure = "backbone_error", 500;
    /// A numerical failure while training.
    TrainingFailed = "training_error", 500;
    Io = "io_error", 500;
    /// The trained model could not be written to the data folder.
    ModelSaveFailed = "model_save_failed", 500;
    /// The service stopped too many times while the job ran.
    Interrupted = "interrupted", 500;
    Cancelled = "cancelled", 409;

    // Models and predictions.
    ModelNotFound = "model_not_found", 404;
    NoModelForDataset = "no_model_for_dataset", 409;
    ModelNotTrainedOnDataset = "model_not_trained_on_dataset", 422;
    InvalidModelArchive = "invalid_model_archive", 422;
    /// An archive from before archives carried their backbone, whose backbone is not
    /// installed here (the message names it and how to install it).
    BackboneNotBundled = "backbone_not_bundled", 422;
    /// A stored model's files are damaged: details are logged, never shown.
    ModelCorrupt = "model_corrupt", 500;
    NoInputs = "no_inputs", 422;
    InvalidInput = "invalid_input", 422;
    InputTooLong = "input_too_long", 422;
    InvalidTopK = "invalid_top_k", 422;
    /// A multipart predict request has a part other than `file` and `top_k`.
    UnexpectedField = "unexpected_field", 422;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Names that two codes share, with different statuses, because both shipped so.
    const SHARED: &[(&str, [Code; 2])] = &[(
        "malformed_json",
        [Code::MalformedJson, Code::MalformedJsonFile],
    )];

    #[test]
    fn names_are_snake_case_and_unique() {
        let mut seen: HashMap<&str, Vec<Code>> = HashMap::new();
        for &code in Code::ALL {
            let name = code.name();
            let snake = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && !name.ends_with('_')
                && !name.contains("__");
            assert!(snake, "{code:?}: {name:?} is not snake_case");
            seen.entry(name).or_default().push(code);
        }
        for (name, codes) in seen {
            if codes.len() > 1 {
                let shared = SHARED.iter().find(|(n, _)| *n == name);
                assert_eq!(
                    shared.map(|(_, c)| c.to_vec()),
                    Some(codes.clone()),
                    "{name:?} names more than one code"
                );
                assert_ne!(codes[0].status(), codes[1].status(), "{name:?}");
            }
        }
    }

    #[test]
    fn statuses_are_client_or_server_errors() {
        for &code in Code::ALL {
            assert!((400..600).contains(&code.status()), "{code:?}");
        }
        assert_eq!(Code::Internal.status(), 500);
        assert_eq!(
            serde_json::to_value(Code::DatasetNotFound).unwrap(),
            "dataset_not_found"
        );
    }
}
