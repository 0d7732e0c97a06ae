//! The HTTP API (DESIGN §2): one module per resource, one error mapping, no candle.

pub mod auth;
pub mod body_timeout;
pub mod budget;
pub mod conn;
pub mod datasets;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod list;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;
pub mod predict;
pub mod ratelimit;
pub mod schema;
pub mod upload;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::backbones::catalog::Catalog;
use crate::config::Config;
use crate::datasets::Limits;
use crate::jobs::Queue;
use crate::serve::ModelCache;
use crate::serve::batcher::Batcher;
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
    /// Runs predictions: batches concurrent small requests to one model, bounds the
    /// forwards running at once.
    pub batcher: Arc<Batcher>,
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

/// The `/v1` routes. Every route is registered from its handler's `#[utoipa::path]` (with
/// `routes!`), never with a bare `.route`, so the OpenAPI document lists them all.
fn api_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let upload_limit = state.config.max_upload_bytes() as usize + (1 << 20);
    let body_limit = (state.config.max_body_mb as usize) << 20;
    let upload_rate = from_fn_with_state(state.clone(), ratelimit::limit_upload);
    let predict_rate = from_fn_with_state(state.clone(), ratelimit::limit_predict);
    OpenApiRouter::new()
        .routes(
            routes!(datasets::create)
                .layer(DefaultBodyLimit::max(upload_limit))
                .layer(upload_rate.clone()),
        )
        .routes(routes!(datasets::list))
        .routes(routes!(datasets::show, datasets::delete))
        .routes(routes!(datasets::suspects))
        .routes(routes!(ops::backbones))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::cancel))
        .routes(
            routes!(models::import)
                .layer(DefaultBodyLimit::max(upload_limit))
                .layer(upload_rate),
        )
        .routes(routes!(models::list))
        .routes(routes!(models::show, models::delete))
        .routes(routes!(predict::predict).layer(predict_rate))
        .routes(routes!(models::download))
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(ops::api_not_found)
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
}

/// Every route, and the OpenAPI document generated from them.
pub fn routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/v1", api_routes(state))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::openapi))
        .routes(routes!(openapi::docs))
        .split_for_parts()
}

/// A worker's port (`--role worker`): health, readiness and metrics only.
fn worker_router(state: AppState) -> Router {
    let (routes, _) = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    routes.layer(TraceLayer::new_for_http()).with_state(state)
}

pub fn router(state: AppState) -> Router {
    if !state.config.role.runs_api() {
        return worker_router(state);
    }
    let (routes, doc) = routes(&state);
    let static_dir = state.config.static_dir.clone();
    routes
        .fallback_service(ServeDir::new(static_dir).append_index_html_on_directories(true))
        .layer(Extension(openapi::Document::new(&doc)))
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
