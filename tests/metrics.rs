//! `/metrics`: the counters and histograms move with the requests and jobs that feed them,
//! requests are counted by matched route (never the raw path), and the long-standing names
//! are still there.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestApp, topic_csv};
use serde_json::json;

async fn scrape(app: &TestApp) -> String {
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    body.as_str().unwrap().to_string()
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_predicts_and_job_stages() {
    let app = TestApp::start().await;
    let before = scrape(&app).await;
    assert_eq!(
        sample(&before, "warmstart_predict_requests_total"),
        Some(0.0)
    );
    assert_eq!(sample(&before, "warmstart_queue_depth"), Some(0.0));

    let (_, job) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    let model = job["model_id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, body) = app
            .post_json(
                &format!("/v1/models/{model}/predict"),
                json!({"inputs": ["goal", "soup", "rain"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app.get("/v1/jobs/no-such-job").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Job timings arrive from the event stream: wait for the job's end to be recorded.
    let start = Instant::now();
    let metrics = loop {
        let m = scrape(&app).await;
        let done = "warmstart_job_duration_seconds_count{status=\"succeeded\"}";
        if sample(&m, done) == Some(1.0) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let has = |series: &str, value: f64| {
        assert_eq!(sample(&metrics, series), Some(value), "{series}\n{metrics}");
    };
    has(
        "warmstart_http_requests_total{method=\"POST\",route=\"/v1/models/{id}/predict\",status=\"200\"}",
        2.0,
    );
    has(
        "warmstart_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"404\"}",
        1.0,
    );
    has(
        "warmstart_http_requests_total{method=\"POST\",route=\"/v1/datasets\",status=\"201\"}",
        1.0,
    );
    assert!(!metrics.contains(model), "a raw path became a label");
    assert!(
        !metrics.contains("no-such-job"),
        "a raw path became a label"
    );
    has("warmstart_predict_requests_total", 2.0);
    has("warmstart_predict_inputs_total", 6.0);
    has(
        "warmstart_predict_duration_seconds_count{modality=\"text\"}",
        2.0,
    );
    has("warmstart_predict_batch_size_count", 2.0);
    has("warmstart_predict_batch_size_sum", 6.0);
    has("warmstart_predict_batch_size_bucket{le=\"2\"}", 0.0);
    has("warmstart_predict_batch_size_bucket{le=\"4\"}", 2.0);
    for stage in ["preparing", "extracting_features", "training_head"] {
        let series = format!("warmstart_job_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert!(
            sample(&metrics, &series).is_some_and(|n| n >= 1.0),
            "{series}\n{metrics}"
        );
    }
    has("warmstart_jobs{status=\"succeeded\"}", 1.0);
    has("warmstart_queue_depth", 0.0);
    has("warmstart_models_loaded", 1.0);
    has("warmstart_dataset_uploads_total", 1.0);
    has("warmstart_memory_budget_rejected_total", 0.0);
    assert!(metrics.contains("# TYPE warmstart_predict_duration_seconds histogram"));
}
