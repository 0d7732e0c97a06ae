//! The HTTP API (DESIGN §2): one module per resource, one error mapping, no candle.

pub mod auth;
pub mod body_timeout;
pub mod budget;
pub mod conn;
pub mod datasets;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod ratelimit;
pub mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::backbones::catalog::Catalog;
use crate::config::Config;
use crate::datasets::Limits;
use crate::jobs::Queue;
use crate::serve::ModelCache;
use crate::store::{Artifacts, Db};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub artifacts: Artifacts,
    pub queue: Queue,
    /// Which backbones exist and are installed (the loader itself stays in serve and jobs).
    pub catalog: Arc<Catalog>,
    pub models: Arc<ModelCache>,
    pub limits: Limits,
    /// Predict requests admitted (running or waiting); beyond it → 503.
    pub predict_admission: Arc<Semaphore>,
    /// Predict requests computing at once.
    pub predict_compute: Arc<Semaphore>,
    /// Memory that uploads and predicts in flight may hold (`--max-inflight-mb`).
    pub budget: Arc<budget::MemoryBudget>,
    /// What `/metrics` renders (see [`metrics`]).
    pub metrics: Arc<metrics::Metrics>,
    pub started: std::time::Instant,
    /// Whether `/v1` requires an API key.
    pub auth: Arc<auth::AuthPolicy>,
    /// Per-key rate limits on predict and upload.
    pub rates: Arc<ratelimit::RateLimits>,
    /// Cancelled when the service begins to shut down (ends live event streams).
    pub shutdown: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.max_upload_bytes() as usize + (1 << 20);
    let body_limit = (state.config.max_body_mb as usize) << 20;
    let upload_rate = from_fn_with_state(state.clone(), ratelimit::limit_upload);
    let predict_rate = from_fn_with_state(state.clone(), ratelimit::limit_predict);
    let api = Router::new()
        .route(
            "/datasets",
            post(datasets::create)
                .layer(DefaultBodyLimit::max(upload_limit))
                .layer(upload_rate.clone())
                .get(datasets::list),
        )
        .route(
            "/datasets/{id}",
            get(datasets::show).delete(datasets::delete),
        )
        .route("/datasets/{id}/suspects", get(datasets::suspects))
        .route("/backbones", get(ops::backbones))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/models",
            post(models::import)
                .layer(DefaultBodyLimit::max(upload_limit))
                .layer(upload_rate)
                .get(models::list),
        )
        .route("/models/{id}", get(models::show).delete(models::delete))
        .route(
            "/models/{id}/predict",
            post(models::predict).layer(predict_rate),
        )
        .route("/models/{id}/download", get(models::download))
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(ops::api_not_found)
        .layer(from_fn_with_state(state.clone(), auth::authenticate));

    let static_dir = state.config.static_dir.clone();
    Router::new()
        .nest("/v1", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback_service(ServeDir::new(static_dir).append_index_html_on_directories(true))
        .layer(from_fn_with_state(
            state.config.body_timeouts(),
            body_timeout::guard,
        ))
        .layer(from_fn_with_state(
            state.metrics.clone(),
            metrics::track_requests,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
