//! API keys: creation, listing, revocation and verification. A key is
//! `wsk_<id>_<secret>` with 64 random bits of id and 256 random bits of secret; only the
//! SHA-256 digest of the whole key is stored, and a presented key is checked by looking its
//! row up by id and comparing digests in constant time.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, StoreResult, now};

const PREFIX: &str = "wsk_";

/// A stored key, without its secret.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// What a valid key grants: its id (for per-key limits) and its tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyGrant {
    pub key_id: String,
    pub tenant: String,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality of two digests in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The id part of a well-formed key.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some(id)
}

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Db {
    /// Creates a key named `name` for `tenant` (default: the name). Returns the row and the
    /// key itself, which is not stored and cannot be shown again.
    pub async fn create_key(
        &self,
        name: &str,
        tenant: Option<&str>,
    ) -> StoreResult<(ApiKey, String)> {
        let mut rng = rand::rng();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let record = ApiKey {
            id: hex::encode(id),
            name: name.to_string(),
            tenant: tenant.unwrap_or(name).to_string(),
            created_at: now(),
            revoked_at: None,
        };
        let key = format!("{PREFIX}{}_{}", record.id, hex::encode(secret));
        sqlx::query(
            "INSERT INTO api_keys (id, name, tenant, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.tenant)
        .bind(hex::encode(digest(&key)))
        .bind(&record.created_at)
        .execute(&self.pool)
        .await?;
        Ok((record, key))
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes the key with this id (or the key whose text this is). Returns whether an
    /// active key was revoked.
    pub async fn revoke_key(&self, id_or_key: &str) -> StoreResult<bool> {
        let id = key_id(id_or_key).unwrap_or(id_or_key);
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether any key was ever created (revoked ones count: revoking the last key must not
    /// open the service to anonymous callers).
    pub async fn any_keys(&self) -> StoreResult<bool> {
        // A count, not EXISTS: SQLite answers EXISTS with an integer, PostgreSQL a boolean.
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM api_keys LIMIT 1) AS k")
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// The grant of a presented key, or `None` if it is malformed, unknown, revoked or wrong.
    pub async fn verify_key(&self, key: &str) -> StoreResult<Option<KeyGrant>> {
        let Some(id) = key_id(key) else {
            return Ok(None);
        };
        let row =
            sqlx::query("SELECT tenant, hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("hash")?;
        let stored = hex::decode(stored).unwrap_or_default();
        if !constant_time_eq(&stored, &digest(key)) {
            return Ok(None);
        }
        Ok(Some(KeyGrant {
            key_id: id.to_string(),
            tenant: row.try_get("tenant")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape_is_checked_before_any_lookup() {
        let good = format!("wsk_{}_{}", "a1".repeat(8), "0f".repeat(32));
        assert_eq!(key_id(&good), Some("a1a1a1a1a1a1a1a1"));
        for bad in [
            "",
            "wsk_",
            "wsk_a1a1a1a1a1a1a1a1",
            &good[..good.len() - 1],
            &format!("{good}0"),
            &good.replace("wsk_", "wsx_"),
            &good.replacen('0', "g", 1),
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn digest_comparison() {
        let a = digest("one");
        assert!(constant_time_eq(&a, &digest("one")));
        assert!(!constant_time_eq(&a, &digest("two")));
        assert!(!constant_time_eq(&a, &a[..31]));
    }
}
