//! The database: SQLite (one file in the data folder, the embedded default) or PostgreSQL
//! (one database shared by several hosts), chosen by the URL's scheme, behind one sqlx
//! `Any` pool so that every query is written once. Query text uses `$N` parameters, which
//! both accept; the few differences between the dialects live here, in [`Backend`].
//! Migrations (`migrations/sqlite`, `migrations/postgres`) are applied at start-up.

use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Executor, Row};

use super::{StoreError, StoreResult};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a query waits for a connection before failing (the database is then down).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine of `sqlite://…` or `postgres://…` (also `postgresql://…`).
    pub fn from_url(url: &str) -> StoreResult<Backend> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => Err(StoreError::BadUrl(redact(url))),
        }
    }

    /// The database's clock, in milliseconds since 1970, as an SQL expression: leases are
    /// timed on it so that the hosts' clocks need not agree.
    pub fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// What ends the sub-select that picks a job to claim: on PostgreSQL it locks the row
    /// and skips rows other hosts hold; SQLite has one writer at a time anyway.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// The default database: a SQLite file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Opens (creating if needed) a SQLite database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Db> {
        Db::connect(&sqlite_url(path)).await
    }

    /// Connects to the database `url` names and applies pending migrations. A bad URL, an
    /// unreachable server or a schema newer than this binary is an error that says so.
    pub async fn connect(url: &str) -> StoreResult<Db> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let options = match backend {
            // WAL lets readers run beside the writer; the busy timeout waits for the lock.
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        conn.execute(pragma).await?;
                    }
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let pool = options
            .connect(url)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: redact(url),
                source,
            })?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = self.backend.migrator();
        match migrator.run(&self.pool).await {
            Err(MigrateError::VersionMissing(found)) => Err(StoreError::SchemaTooNew {
                found,
                known: migrator.iter().map(|m| m.version).max().unwrap_or(0),
            }),
            other => Ok(other?),
        }
    }

    /// `SELECT 1`, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The database's clock, in milliseconds since 1970.
    pub async fn now_ms(&self) -> StoreResult<i64> {
        let sql = format!("SELECT {} AS now_ms", self.backend.now_ms());
        Ok(sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await?
            .try_get("now_ms")?)
    }
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_come_from_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::from_url("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("postgres://"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ws:hunter2@db:5432/ws"),
            "postgres://ws:***@db:5432/ws"
        );
        assert_eq!(redact("postgres://db/ws"), "postgres://db/ws");
    }
}
