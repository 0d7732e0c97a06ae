//! Operations endpoints: liveness, readiness, Prometheus metrics, the backbone list, and the
//! JSON 404 for unknown API paths.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::schema::{ApiErrors, BackboneDoc};
use crate::backbones::catalog::BackboneInfo;
use crate::error_code::Code;

/// `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Whether the service can take work, and why not.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Whether the database answers.
    pub database: bool,
    /// Whether the shared artefact store answers (true when none is configured).
    pub artifact_store: bool,
    pub backbones: Vec<BackboneReadiness>,
    /// What to do when not ready (null when ready).
    pub hint: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct BackboneReadiness {
    pub id: &'static str,
    /// Whether its weights are installed.
    pub available: bool,
}

/// The backbone catalogue.
#[derive(Serialize, ToSchema)]
pub struct Backbones {
    #[schema(value_type = Vec<BackboneDoc>)]
    pub data: Vec<BackboneInfo>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when the database and the artefact store answer and the default
/// backbones are installed, otherwise 503 with a hint.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready", body = Readiness)))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let db_ok = st.db.ping().await.is_ok();
    let store_ok = st.artifacts.ping().await.is_ok();
    let backbones: Vec<BackboneReadiness> = st
        .catalog
        .list()
        .iter()
        .map(|b| BackboneReadiness {
            id: b.id,
            available: b.available,
        })
        .collect();
    let defaults_ok = st.catalog.all_available();
    let ready = db_ok && store_ok && defaults_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let hint = if !db_ok {
        Some("the database does not answer; check that it is running and reachable")
    } else if !store_ok {
        Some(
            "the artefact store does not answer; check that it is running and the AWS_* credentials",
        )
    } else {
        (!defaults_ok).then_some("run scripts/fetch-backbones.sh to install the backbones")
    };
    (
        status,
        Json(Readiness {
            ready,
            database: db_ok,
            artifact_store: store_ok,
            backbones,
            hint,
        }),
    )
}

/// The backbones this service knows, and whether each is installed.
#[utoipa::path(get, path = "/backbones", tag = "backbones",
    responses((status = 200, body = Backbones), ApiErrors))]
pub async fn backbones(State(st): State<AppState>) -> Json<Backbones> {
    Json(Backbones {
        data: st.catalog.list(),
    })
}

/// Prometheus text exposition: the recorder's render, after the gauges read from state.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), ApiErrors))]
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

pub async fn api_not_found(uri: Uri) -> ApiError {
    ApiError::new(
        Code::RouteNotFound,
        format!(
            "no API route {}; see GET /openapi.json or /docs",
            uri.path()
        ),
    )
}
