//! Operations endpoints: liveness, readiness, Prometheus metrics, the backbone list, and the
//! JSON 404 for unknown API paths.

use std::sync::atomic::Ordering;

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

/// Readiness: 200 when the database answers and the default backbones are installed,
/// otherwise 503 with a hint.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready", body = Readiness)))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let db_ok = st.db.ping().await.is_ok();
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
    let ready = db_ok && defaults_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let hint = (!defaults_ok).then_some("run scripts/fetch-backbones.sh to install the backbones");
    (
        status,
        Json(Readiness {
            ready,
            database: db_ok,
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

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), ApiErrors))]
pub async fn metrics(State(st): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut out = String::new();
    out.push_str("# HELP warmstart_jobs Jobs by status.\n# TYPE warmstart_jobs gauge\n");
    let counts = st.db.job_status_counts().await?;
    for status in ["queued", "running", "succeeded", "failed", "cancelled"] {
        let n = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        out.push_str(&format!("warmstart_jobs{{status=\"{status}\"}} {n}\n"));
    }
    let c = &st.counters;
    let counters = [
        (
            "warmstart_predict_requests_total",
            "Predict requests served.",
            c.predict_requests.load(Ordering::Relaxed),
        ),
        (
            "warmstart_predict_inputs_total",
            "Inputs predicted.",
            c.predict_inputs.load(Ordering::Relaxed),
        ),
        (
            "warmstart_predict_rejected_total",
            "Predict requests refused as overload (503).",
            c.predict_rejected.load(Ordering::Relaxed),
        ),
        (
            "warmstart_dataset_uploads_total",
            "Datasets uploaded.",
            c.uploads.load(Ordering::Relaxed),
        ),
        (
            "warmstart_memory_budget_rejected_total",
            "Uploads and predicts refused because the memory budget was in use (503).",
            st.budget.rejected(),
        ),
    ];
    for (name, help, v) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP warmstart_models_loaded Models held in the prediction cache.\n# TYPE warmstart_models_loaded gauge\nwarmstart_models_loaded {}\n",
        st.models.loaded().len()
    ));
    out.push_str(&format!(
        "# HELP warmstart_memory_budget_in_use_mb Megabytes reserved by requests in flight.\n# TYPE warmstart_memory_budget_in_use_mb gauge\nwarmstart_memory_budget_in_use_mb {}\n",
        st.budget.in_use_mb()
    ));
    out.push_str(&format!(
        "# HELP warmstart_uptime_seconds Seconds since start.\n# TYPE warmstart_uptime_seconds gauge\nwarmstart_uptime_seconds {:.0}\n",
        st.started.elapsed().as_secs_f64()
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
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
