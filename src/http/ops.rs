//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document, the
//! backbone list, and the JSON 404 for unknown API paths.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::error_code::Code;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and the default backbones are installed.
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    let db_ok = st.db.ping().await.is_ok();
    let backbones: Vec<Value> = st
        .catalog
        .list()
        .iter()
        .map(|b| json!({"id": b.id, "available": b.available}))
        .collect();
    let defaults_ok = st.catalog.all_available();
    let ready = db_ok && defaults_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let hint = (!defaults_ok).then_some("run scripts/fetch-backbones.sh to install the backbones");
    (
        status,
        Json(json!({"ready": ready, "database": db_ok, "backbones": backbones, "hint": hint})),
    )
}

pub async fn backbones(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"data": st.catalog.list()}))
}

/// Prometheus text exposition: the recorder's render, after the gauges read from state.
pub async fn metrics(State(st): State<AppState>) -> ApiResult<impl IntoResponse> {
    let counts = st.db.job_status_counts().await?;
    let loaded = st.models.loaded().len();
    let budget = (st.budget.in_use_mb(), st.budget.rejected());
    st.metrics
        .record(|| super::metrics::set_gauges(&counts, loaded, budget, st.started));
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    ))
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

pub async fn api_not_found(uri: Uri) -> ApiError {
    ApiError::new(
        Code::RouteNotFound,
        format!("no API route {}; see GET /openapi.json", uri.path()),
    )
}
