//! `/v1/jobs`: submit, list, show, events (JSON or live SSE), cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Tenant};
use crate::jobs::{CancelOutcome, JobSpec};
use crate::store::jobs::{JobEvent, JobRecord, JobStatus};

pub async fn create(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    let spec: JobSpec = serde_path_to_error::deserialize(body).map_err(|e| {
        let at = e.path().to_string();
        ApiError::unprocessable(
            "invalid_request",
            format!(
                "invalid job request at `{at}`: {}; see GET /openapi.json for the fields",
                e.inner()
            ),
        )
    })?;
    spec.hyperparameters
        .validate()
        .map_err(|e| ApiError::unprocessable("invalid_hyperparameter", e.to_string()))?;
    if let Some(v) = &spec.validation {
        v.validate()
            .map_err(|e| ApiError::unprocessable("invalid_validation", e.to_string()))?;
    }
    if let Some(url) = &spec.webhook_url {
        st.queue
            .webhooks()
            .check_target(url)
            .await
            .map_err(|m| ApiError::unprocessable("invalid_webhook_url", m))?;
    }
    if spec.time_budget_s == Some(0) {
        return Err(ApiError::unprocessable(
            "invalid_time_budget",
            "time_budget_s must be at least 1 second (or leave it out for no cap)",
        ));
    }
    let dataset = st
        .db
        .get_dataset(&tenant, &spec.dataset_id)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &spec.dataset_id))?;
    let backbone = if spec.backbone == "auto" {
        st.registry.default_for(dataset.modality).to_string()
    } else {
        spec.backbone.clone()
    };
    let Some(info) = st.registry.info(&backbone) else {
        let known: Vec<&str> = st.registry.list().iter().map(|b| b.id).collect();
        return Err(ApiError::unprocessable(
            "unknown_backbone",
            format!("unknown backbone {backbone:?}; use \"auto\" or one of {known:?}"),
        ));
    };
    if info.modality != dataset.modality {
        return Err(ApiError::unprocessable(
            "backbone_modality_mismatch",
            format!(
                "backbone {backbone:?} is for {} data but dataset {} holds {} examples; use \"auto\" or a {} backbone",
                info.modality.as_str(),
                dataset.id,
                dataset.modality.as_str(),
                dataset.modality.as_str()
            ),
        ));
    }
    if !info.available {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backbone_unavailable",
            format!(
                "backbone {backbone:?} is not installed on this server; the operator must run scripts/fetch-backbones.sh"
            ),
        ));
    }
    let job = st
        .queue
        .enqueue(&tenant, &spec, &backbone)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &spec.dataset_id))?;
    tracing::info!(job = %job.id, dataset = %dataset.id, "job queued");
    Ok((StatusCode::CREATED, Json(job)))
}

pub async fn list(State(st): State<AppState>, Tenant(tenant): Tenant) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"data": st.db.list_jobs(&tenant).await?})))
}

async fn find(st: &AppState, tenant: &str, id: &str) -> ApiResult<JobRecord> {
    st.db
        .get_job(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", id))
}

pub async fn show(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    Ok(Json(find(&st, &tenant, &id).await?))
}

pub async fn cancel(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    match st.queue.cancel(&tenant, &id).await? {
        CancelOutcome::Cancelled(job) => Ok(Json(job)),
        CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Cancelled => Ok(Json(job)),
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::conflict(
            "job_finished",
            format!(
                "job {id} already {}; only queued or running jobs can be cancelled",
                job.status.as_str()
            ),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("job", &id)),
    }
}

fn is_terminal_event(kind: &str) -> bool {
    matches!(kind, "succeeded" | "failed" | "cancelled")
}

fn sse_event(e: &JobEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.clone())
        .json_data(e)
        .unwrap_or_else(|_| Event::default().data("{}"))
}

/// Events of a job: `{"data": [...]}`, or with `Accept: text/event-stream` a live stream
/// that replays the history and ends when the job does.
pub async fn events(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = find(&st, &tenant, &id).await?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        let events = st.db.job_events(&id, 0).await?;
        return Ok(Json(json!({"data": events})).into_response());
    }
    let last_seen: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    // Subscribe before reading history so nothing falls between the two.
    let mut live = st.queue.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let db = st.db.clone();
    let terminal_at_start = job.status.is_terminal();
    let shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        let mut last = last_seen;
        let send_all = |events: Vec<JobEvent>, last: &mut i64| {
            let tx = tx.clone();
            let mut done = false;
            let mut out = Vec::new();
            for e in events {
                if e.seq <= *last {
                    continue;
                }
                *last = e.seq;
                done |= is_terminal_event(&e.kind);
                out.push(sse_event(&e));
            }
            async move {
                for ev in out {
                    if tx.send(Ok(ev)).await.is_err() {
                        return true;
                    }
                }
                done
            }
        };
        let Ok(history) = db.job_events(&id, last).await else {
            return;
        };
        if send_all(history, &mut last).await || terminal_at_start {
            return;
        }
        loop {
            let next = tokio::select! {
                // The service is stopping: end the stream so shutdown need not wait for it.
                _ = shutdown.cancelled() => return,
                next = tokio::time::timeout(Duration::from_secs(30), live.recv()) => next,
            };
            match next {
                Ok(Ok(e)) if e.job_id == id => {
                    if send_all(vec![e], &mut last).await {
                        return;
                    }
                }
                Ok(Ok(_)) => {}
                // Missed some: catch up from the table. Also on a quiet timeout, in case
                // the job ended in another way (e.g. failed at start-up recovery).
                Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                    let Ok(missed) = db.job_events(&id, last).await else {
                        return;
                    };
                    if send_all(missed, &mut last).await {
                        return;
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
                Ok(Err(RecvError::Closed)) => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}
