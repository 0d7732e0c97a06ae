//! Job webhooks: a job carrying `webhook_url` POSTs its JSON to a local listener when it
//! ends, retries after a 5xx, and signs each delivery with the configured secret.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{TestApp, topic_csv};
use parking_lot::Mutex;
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on 127.0.0.1 that answers 500 to the first delivery and 200 after.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let mut list = s.lock();
                list.push((headers, body));
                if list.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_posted_signed_and_retried() {
    let (url, seen) = receiver().await;
    let app = TestApp::start_with(|c| {
        c.webhook_secret = Some("s3cret".into());
        c.webhook_allow_private = true;
    })
    .await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;

    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "webhook_url": "ftp://nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_webhook_url");

    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "webhook_url": url, "hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "succeeded");

    let start = Instant::now();
    while seen.lock().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the retry never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = seen.lock().clone();
    assert_eq!(list.len(), 2, "delivered once after one retry");
    let (headers, body) = &list[1];
    let delivered: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(delivered["id"], job["id"]);
    assert_eq!(delivered["status"], "succeeded");
    assert_eq!(delivered["model_id"], job["model_id"]);
    assert_eq!(headers["x-warmstart-event"], "job.succeeded");
    let ts: u64 = headers["x-warmstart-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = warmstart::jobs::webhook::signature("s3cret", ts, body);
    assert_eq!(headers["x-warmstart-signature"].to_str().unwrap(), expected);
    assert_ne!(
        warmstart::jobs::webhook::signature("other", ts, body),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_are_posted_too() {
    let (url, seen) = receiver().await;
    let app = TestApp::start_with(|c| c.webhook_allow_private = true).await;
    let ds = app.upload_dataset("d.csv", topic_csv(20).as_bytes()).await;
    let (_, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "webhook_url": url,
                   "hyperparameters": {"finetune_epochs": 500, "early_stopping_patience": 0}}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let start = Instant::now();
    while seen.lock().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no webhook for the cancelled job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered: Value = serde_json::from_slice(&seen.lock()[1].1).unwrap();
    assert_eq!(delivered["status"], "cancelled");
    // No signature without a secret.
    assert!(!seen.lock()[1].0.contains_key("x-warmstart-signature"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_webhook_targets_are_refused_by_default() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "webhook_url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WARMSTART_WEBHOOK_ALLOW_PRIVATE")
    );
}

/// A listener that counts requests and answers each with `reply`.
async fn listener_with(reply: axum::response::Response) -> (String, Arc<Mutex<u32>>) {
    let hits: Arc<Mutex<u32>> = Arc::default();
    let h = hits.clone();
    let reply = Arc::new(Mutex::new(Some(reply)));
    let app = Router::new().fallback(move || {
        let (h, reply) = (h.clone(), reply.clone());
        async move {
            *h.lock() += 1;
            reply.lock().take().unwrap_or_default()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

/// A webhook target that redirects elsewhere (here another port; in an attack an internal
/// address the private-address check never saw) is not followed: the redirect counts as a
/// refused delivery, is not retried, and the redirect's target receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirects_are_not_followed() {
    use axum::response::IntoResponse;
    let (inner, inner_hits) = listener_with(StatusCode::OK.into_response()).await;
    let redirect = (
        StatusCode::TEMPORARY_REDIRECT,
        [("location", format!("{inner}/steal"))],
    )
        .into_response();
    let (outer, outer_hits) = listener_with(redirect).await;
    let app = TestApp::start_with(|c| c.webhook_allow_private = true).await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "webhook_url": format!("{outer}/hook"),
                   "hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    app.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let start = Instant::now();
    while *outer_hits.lock() == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for a followed redirect or a retry (the back-off starts at 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(*inner_hits.lock(), 0, "the redirect was followed");
    assert_eq!(*outer_hits.lock(), 1, "a redirect is not retried");
}
