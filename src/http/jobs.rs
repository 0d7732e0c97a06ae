//! `/v1/jobs`: submit, list, show, events (JSON or live SSE), cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Tenant};
use super::list::{List, ListQuery, QueryParams, unknown_cursor};
use super::schema::{ApiErrors, JobRequestDoc};
use crate::error_code::Code;
use crate::jobs::submit::submit;
use crate::jobs::{CancelOutcome, JobSpec};
use crate::store::jobs::{JobEvent, JobRecord, JobStatus};

/// Start training a model on a dataset; the job is queued and runs in the background.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobRequestDoc,
    responses((status = 201, description = "The queued job", body = JobRecord), ApiErrors))]
pub async fn create(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    let spec: JobSpec = serde_path_to_error::deserialize(body).map_err(|e| {
        let at = e.path().to_string();
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "invalid job request at `{at}`: {}; see GET /openapi.json for the fields",
                e.inner()
            ),
        )
    })?;
    let job = submit(&st.queue, &st.catalog, &tenant, &spec).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// The query of the job list, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only the jobs on this dataset.
    pub dataset_id: Option<String>,
}

/// The jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery, JobListQuery),
    responses((status = 200, body = List<JobRecord>), ApiErrors))]
pub async fn list(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: QueryParams,
) -> ApiResult<Json<List<JobRecord>>> {
    let page = query.page()?;
    let dataset = query.get("dataset_id");
    let found = st.db.list_jobs(&tenant, dataset, &page).await?;
    let page = found.ok_or_else(|| unknown_cursor("job", page.after.as_deref()))?;
    Ok(Json(List::new(page, |j| j.id.clone())))
}

async fn find(st: &AppState, tenant: &str, id: &str) -> ApiResult<JobRecord> {
    st.db
        .get_job(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Code::JobNotFound, id))
}

/// One job: status, stage, progress, metrics, and the recipe it chose.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobRecord), ApiErrors))]
pub async fn show(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    Ok(Json(find(&st, &tenant, &id).await?))
}

/// Cancel a queued or running job (cancelling a cancelled job answers it again).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The cancelled job", body = JobRecord), ApiErrors))]
pub async fn cancel(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    match st.queue.cancel(&tenant, &id).await? {
        CancelOutcome::Cancelled(job) => Ok(Json(job)),
        CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Cancelled => Ok(Json(job)),
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::new(
            Code::JobFinished,
            format!(
                "job {id} already {}; only queued or running jobs can be cancelled",
                job.status.as_str()
            ),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(Code::JobNotFound, &id)),
    }
}

fn sse_event(e: &JobEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.as_str())
        .json_data(e)
        .unwrap_or_else(|_| Event::default().data("{}"))
}

/// `after` of the event list: the sequence number of the last event of the previous page.
fn event_cursor(query: &QueryParams) -> ApiResult<Option<i64>> {
    query
        .get("after")
        .map(|text| {
            text.trim().parse::<i64>().map_err(|_| {
                ApiError::new(
                    Code::InvalidQuery,
                    format!("after must be an event's seq (a whole number), not {text:?}"),
                )
            })
        })
        .transpose()
}

/// The event list's query, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListQuery {
    /// How many events to return, newest first.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// The `last_id` of the previous page (an event's `seq`): the events before it.
    pub after: Option<i64>,
}

/// A job's events, newest first; or, with `Accept: text/event-stream`, a live stream that
/// replays the history (oldest first, from after `Last-Event-ID`) and ends with the job.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job's id"), EventListQuery),
    responses((status = 200, description = "The events (JSON), or a server-sent event stream whose events are named by `kind` and carry the event as data",
        content((List<JobEvent> = "application/json"), (String = "text/event-stream"))), ApiErrors))]
pub async fn events(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    query: QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = find(&st, &tenant, &id).await?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        let (limit, before) = (query.limit()?, event_cursor(&query)?);
        let page = st.db.job_events_page(&id, before, limit).await?;
        return Ok(Json(List::new(page, |e| e.seq.to_string())).into_response());
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
    // Events written by workers in other processes reach this one only through the table.
    let quiet = if st.config.shares_database() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(30)
    };
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
                done |= e.kind.is_terminal();
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
                next = tokio::time::timeout(quiet, live.recv()) => next,
            };
            match next {
                Ok(Ok(e)) if e.job_id == id => {
                    if send_all(vec![e], &mut last).await {
                        return;
                    }
                }
                Ok(Ok(_)) => {}
                // Missed some: catch up from the table. Also on a quiet timeout, in case
                // the job ended in another way (a lease expired) or in another process.
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
