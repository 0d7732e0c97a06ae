//! Persistence: database rows (SQLite or PostgreSQL, through sqlx) and the artefact folder
//! they point at.
//!
//! Every row that names a file is written after the file is complete on disk, so a crash
//! never leaves a row pointing at half an artefact; artefacts without a row are swept at
//! start-up.

pub mod artifacts;
pub mod datasets;
pub mod db;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod page;
pub mod remote;

pub use artifacts::Artifacts;
pub use db::{Backend, Db};
pub use page::{Page, PageRequest};
pub use remote::{Kind, Remote};

use crate::error_code::{Code, ErrorCode};

/// Errors from the persistence layer. Clients never see their details.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH (the default) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl(String),
    #[error("cannot connect to the database {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error(
        "the database's schema is at version {found}, newer than this binary knows (up to {known}): run a warmstart as new as the one that migrated it"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("artefact store {url}: {source}")]
    Remote {
        url: String,
        source: object_store::Error,
    },
    #[error("corrupt JSON in column {column}: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Whether the database could not be reached (down, restarting, network gone) rather
    /// than the query failing: the request may succeed once it is back.
    pub fn is_unavailable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            StoreError::Db(e) => matches!(
                e,
                E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::Protocol(_)
            ),
            StoreError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

impl ErrorCode for StoreError {
    /// The server's failure (details logged, never shown), or 503 while the database or the
    /// artefact store is unreachable (retry later).
    fn code(&self) -> Code {
        if matches!(self, StoreError::Remote { .. }) {
            Code::StorageUnavailable
        } else if self.is_unavailable() {
            Code::DatabaseUnavailable
        } else {
            Code::Internal
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Current time as the RFC 3339 UTC text stored in every timestamp column.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { column, source })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain data to JSON cannot fail")
}
