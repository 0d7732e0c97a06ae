//! Prometheus metrics through the `metrics` crate, rendered by `metrics-exporter-prometheus`
//! at `GET /metrics`.
//!
//! Each service has its own recorder (not the process-global one), so several services in
//! one process — the tests — count apart; metrics are recorded with the crate's macros
//! inside [`metrics::with_local_recorder`]. Recorded:
//! - `warmstart_http_requests_total{method,route,status}`: every request, by the route
//!   pattern it matched (`/v1/jobs/{id}`, never the raw path; `unmatched` otherwise), from the
//!   [`track_requests`] middleware;
//! - `warmstart_predict_duration_seconds{modality}` and `warmstart_predict_batch_size`
//!   histograms, and the predict / upload counters;
//! - `warmstart_job_stage_duration_seconds{stage}` and `warmstart_job_duration_seconds{status}`
//!   histograms, measured from each job's event timestamps by [`watch_jobs`];
//! - at render time: `warmstart_jobs{status}`, `warmstart_queue_depth`,
//!   `warmstart_models_loaded`, the memory budget, and uptime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::store::jobs::{EventKind, JobEvent};

/// Seconds: predict latency and job stages (fractions of a second to an hour).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Inputs per predict request (at most 256).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The service's recorder and the handles the handlers count with.
pub struct Metrics {
    recorder: PrometheusRecorder,
    pub predict_requests: Counter,
    pub predict_inputs: Counter,
    pub predict_rejected: Counter,
    pub uploads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("warmstart_predict_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let (predict_requests, predict_inputs, predict_rejected, uploads) =
            metrics::with_local_recorder(&recorder, || {
                describe();
                (
                    metrics::counter!("warmstart_predict_requests_total"),
                    metrics::counter!("warmstart_predict_inputs_total"),
                    metrics::counter!("warmstart_predict_rejected_total"),
                    metrics::counter!("warmstart_dataset_uploads_total"),
                )
            });
        Metrics {
            recorder,
            predict_requests,
            predict_inputs,
            predict_rejected,
            uploads,
        }
    }

    /// Runs `f` with this service's recorder as the one the `metrics` macros record to.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// One served predict request: its latency and how many inputs it held.
    pub fn predicted(&self, modality: &'static str, inputs: usize, took: Duration) {
        self.predict_requests.increment(1);
        self.predict_inputs.increment(inputs as u64);
        self.record(|| {
            metrics::histogram!("warmstart_predict_duration_seconds", "modality" => modality)
                .record(took.as_secs_f64());
            metrics::histogram!("warmstart_predict_batch_size").record(inputs as f64);
        });
    }

    /// The text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Drains histogram samples into their buckets (memory stays bounded between scrapes).
    fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }
}

fn describe() {
    describe_counter!(
        "warmstart_http_requests_total",
        "HTTP requests by method, matched route and status."
    );
    describe_counter!(
        "warmstart_predict_requests_total",
        "Predict requests served."
    );
    describe_counter!("warmstart_predict_inputs_total", "Inputs predicted.");
    describe_counter!(
        "warmstart_predict_rejected_total",
        "Predict requests refused as overload (503)."
    );
    describe_counter!("warmstart_dataset_uploads_total", "Datasets uploaded.");
    describe_counter!(
        "warmstart_memory_budget_rejected_total",
        "Uploads and predicts refused because the memory budget was in use (503)."
    );
    describe_histogram!(
        "warmstart_predict_duration_seconds",
        metrics::Unit::Seconds,
        "Predict request latency, from the handler's start to the answer."
    );
    describe_histogram!(
        "warmstart_predict_batch_size",
        "Inputs per served predict request."
    );
    describe_histogram!(
        "warmstart_job_stage_duration_seconds",
        metrics::Unit::Seconds,
        "Time jobs spent in each recipe stage."
    );
    describe_histogram!(
        "warmstart_job_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a worker starting a job to its end, by final status."
    );
    describe_gauge!("warmstart_jobs", "Jobs by status.");
    describe_gauge!("warmstart_queue_depth", "Jobs waiting for a worker.");
    describe_gauge!(
        "warmstart_models_loaded",
        "Models held in the prediction cache."
    );
    describe_gauge!(
        "warmstart_memory_budget_in_use_mb",
        "Megabytes reserved by requests in flight."
    );
    describe_gauge!("warmstart_uptime_seconds", "Seconds since start.");
}

/// Middleware: counts each request by method, matched route and status.
pub async fn track_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics.record(|| {
        metrics::counter!("warmstart_http_requests_total",
            "method" => method, "route" => route, "status" => status)
        .increment(1);
    });
    response
}

/// Where a running job is, for timing its stages.
struct Running {
    started: chrono::DateTime<chrono::Utc>,
    stage: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

/// Times job stages and whole jobs from the queue's events (their own timestamps, so a
/// late event still times right) until `shutdown`; also runs the recorder's upkeep.
pub async fn watch_jobs(
    metrics: Arc<Metrics>,
    mut events: tokio::sync::broadcast::Receiver<JobEvent>,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = upkeep.tick() => { metrics.upkeep(); continue; }
            e = events.recv() => e,
        };
        match event {
            Ok(e) => metrics.record(|| job_event(&mut running, &e)),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

fn seconds(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// Records what one event ends (a stage, a job); call inside [`Metrics::record`].
fn job_event(running: &mut HashMap<String, Running>, e: &JobEvent) {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&e.at) else {
        return;
    };
    let at = at.with_timezone(&chrono::Utc);
    let close_stage = |job: &mut Running| {
        if let Some((stage, since)) = job.stage.take() {
            metrics::histogram!("warmstart_job_stage_duration_seconds", "stage" => stage)
                .record(seconds(since, at));
        }
    };
    match e.kind {
        EventKind::Started => {
            // Bounded: jobs whose end was missed (a lagged receiver) are forgotten.
            if running.len() > 10_000 {
                running.clear();
            }
            let job = Running {
                started: at,
                stage: None,
            };
            running.insert(e.job_id.clone(), job);
        }
        EventKind::Stage => {
            if let (Some(job), Some(stage)) = (running.get_mut(&e.job_id), e.stage) {
                close_stage(job);
                job.stage = Some((stage.as_str().to_string(), at));
            }
        }
        EventKind::Requeued => {
            running.remove(&e.job_id);
        }
        kind if kind.is_terminal() => {
            if let Some(mut job) = running.remove(&e.job_id) {
                close_stage(&mut job);
                metrics::histogram!("warmstart_job_duration_seconds", "status" => kind.as_str())
                    .record(seconds(job.started, at));
            }
        }
        _ => {}
    }
}

/// Sets the gauges that are read from state when scraped; call inside [`Metrics::record`].
pub fn set_gauges(
    job_counts: &[(String, i64)],
    models_loaded: usize,
    budget: (u64, u64),
    up: Instant,
) {
    for status in ["queued", "running", "succeeded", "failed", "cancelled"] {
        let n = job_counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("warmstart_jobs", "status" => status).set(n as f64);
        if status == "queued" {
            metrics::gauge!("warmstart_queue_depth").set(n as f64);
        }
    }
    metrics::gauge!("warmstart_models_loaded").set(models_loaded as f64);
    let (in_use_mb, rejected) = budget;
    metrics::gauge!("warmstart_memory_budget_in_use_mb").set(in_use_mb as f64);
    metrics::counter!("warmstart_memory_budget_rejected_total").absolute(rejected);
    metrics::gauge!("warmstart_uptime_seconds").set(up.elapsed().as_secs() as f64);
}
