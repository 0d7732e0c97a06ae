//! PostgreSQL for the tests: a fresh database per test on the server that
//! `WARMSTART_TEST_POSTGRES_URL` names (scripts/start-postgres.sh starts one). Without it the
//! PostgreSQL half of a test is skipped, except with `CI=true`, where it fails.

use sqlx::Connection;

/// The URL of a new, empty database, or `None` when no server is configured (not in CI).
pub async fn fresh_database() -> Option<String> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let Ok(base) = std::env::var("WARMSTART_TEST_POSTGRES_URL") else {
        assert!(
            !in_ci,
            "CI=true but WARMSTART_TEST_POSTGRES_URL is not set (scripts/start-postgres.sh prints it)"
        );
        eprintln!("WARMSTART_TEST_POSTGRES_URL not set: skipping the PostgreSQL half");
        return None;
    };
    let mut admin = sqlx::postgres::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {base}: {e}"));
    let name = format!("ws_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let (server, _) = base.rsplit_once('/').expect("URL ends with /DATABASE");
    Some(format!("{server}/{name}"))
}
