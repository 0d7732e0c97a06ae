//! API-key authentication for `/v1`: `Authorization: Bearer <key>`, checked against the
//! hashed keys in the database. A key is required whenever any key has been created or the
//! service listens on a non-loopback address; otherwise (a local, keyless set-up) callers
//! are anonymous and share the empty tenant. The caller's tenant scopes every query.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Tenant;
use crate::error_code::Code;
use crate::store::{Db, StoreResult};

/// Who is calling, set on every `/v1` request by [`authenticate`].
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The API key's id; `None` for anonymous callers of a keyless service.
    pub key_id: Option<String>,
    pub tenant: String,
}

/// Whether keys are required, and a cache of "some key exists" (rows are never deleted,
/// so once true it stays true; keys may be created by another process at any time).
pub struct AuthPolicy {
    exposed: bool,
    keys_seen: AtomicBool,
}

impl AuthPolicy {
    pub fn new(exposed: bool) -> AuthPolicy {
        AuthPolicy {
            exposed,
            keys_seen: AtomicBool::new(false),
        }
    }

    async fn required(&self, db: &Db) -> StoreResult<bool> {
        if self.exposed || self.keys_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let any = db.any_keys().await?;
        if any {
            self.keys_seen.store(true, Ordering::Relaxed);
        }
        Ok(any)
    }
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = value.to_str().ok().and_then(|v| {
        let (scheme, key) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    Some(parsed.ok_or(()))
}

async fn resolve(st: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    match bearer(headers) {
        Some(Ok(key)) => match st.db.verify_key(key).await? {
            Some(grant) => Ok(Caller {
                key_id: Some(grant.key_id),
                tenant: grant.tenant,
            }),
            None => Err(ApiError::new(
                Code::InvalidApiKey,
                "the API key is unknown, revoked or mistyped; ask the operator for a key (warmstart keys create --name NAME)",
            )),
        },
        Some(Err(())) => Err(ApiError::new(
            Code::InvalidApiKey,
            "malformed Authorization header; send `Authorization: Bearer <key>`",
        )),
        None if st.auth.required(&st.db).await? => Err(ApiError::new(
            Code::MissingApiKey,
            "this service requires an API key: send `Authorization: Bearer <key>` (the operator creates keys with `warmstart keys create --name NAME`)",
        )),
        None => Ok(Caller::default()),
    }
}

/// Middleware on `/v1`: resolves the caller or answers 401.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    match resolve(&st, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(Tenant(caller.tenant.clone()));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            let unauthorized = e.status() == StatusCode::UNAUTHORIZED;
            let mut response = e.into_response();
            if unauthorized {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}
