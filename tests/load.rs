//! Load and backpressure: a bounded client sends concurrent predict requests to the service
//! on 127.0.0.1 for 20 s while jobs keep training. Every answer is a 200 or the documented
//! overload answer (503 `overloaded` with Retry-After); no job fails. Prints throughput
//! and p50/p99 latency. Each client keeps one HTTP/1.1 connection alive. `WARMSTART_LOAD_SECS` changes the duration.

mod common;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Client, Conn};
use common::{TestApp, topic_csv};
use parking_lot::Mutex;
use serde_json::json;

const CLIENTS: usize = 24;
const QUEUE: usize = 8;

#[derive(Default)]
struct Tally {
    ok_ms: Vec<f64>,
    all_ms: Vec<f64>,
    overloaded: usize,
    other: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_predicts_while_training_get_answers_or_documented_overload() {
    let secs: u64 = std::env::var("WARMSTART_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let app = TestApp::start_with(|c| {
        c.predict_queue = QUEUE;
        c.predict_rate = 0.0;
    })
    .await;
    let (ds, job) = app
        .train(
            &topic_csv(20),
            json!({"hyperparameters": {"finetune_epochs": 1, "head_epochs": 5}}),
        )
        .await;
    let model = job["model_id"].as_str().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let client = Client::new(addr);

    let deadline = Instant::now() + Duration::from_secs(secs);
    // Jobs train back to back for the whole run.
    let trainer = {
        let client = client.clone();
        let ds = ds["id"].as_str().unwrap().to_string();
        tokio::spawn(async move {
            let mut finished = Vec::new();
            while Instant::now() < deadline {
                let (status, job) = client
                    .post_json(
                        "/v1/jobs",
                        &json!({"dataset_id": ds, "hyperparameters": {"finetune_epochs": 25, "early_stopping_patience": 0}, "validation": {"strategy": "holdout", "fraction": 0.2}}),
                    )
                    .await;
                assert_eq!(status, 201, "{job}");
                let job = client
                    .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(600))
                    .await;
                finished.push(job);
            }
            finished
        })
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let body =
        json!({"inputs": ["the football match", "soup for dinner", "rain and wind", "goal"]})
            .to_string();
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, tally, body, path) = (
            client.clone(),
            tally.clone(),
            body.clone(),
            format!("/v1/models/{model}/predict"),
        );
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::new(client.addr);
            let headers = [("Content-Type", "application/json")];
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = conn.send("POST", &path, &headers, body.as_bytes()).await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let overloaded = {
                    let mut tally = tally.lock();
                    tally.all_ms.push(ms);
                    match r {
                        Ok(r) if r.status == 200 => {
                            tally.ok_ms.push(ms);
                            false
                        }
                        Ok(r)
                            if r.status == 503
                                && r.json()["error"]["code"] == "overloaded"
                                && r.header("retry-after").is_some() =>
                        {
                            tally.overloaded += 1;
                            true
                        }
                        Ok(r) => {
                            tally.other.push(format!("{} {:?}", r.status, r.json()));
                            false
                        }
                        Err(e) => {
                            tally.other.push(format!("connection error: {e}"));
                            false
                        }
                    }
                };
                if overloaded {
                    // A polite client honours Retry-After (shortened for the test).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = trainer.await.unwrap();
    server.abort();

    let mut tally = Arc::try_unwrap(tally).ok().unwrap().into_inner();
    assert!(
        tally.other.is_empty(),
        "unexpected answers: {:?}",
        &tally.other[..tally.other.len().min(5)]
    );
    assert!(!tally.ok_ms.is_empty(), "no predict succeeded");
    assert!(!jobs.is_empty());
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    tally.ok_ms.sort_by(f64::total_cmp);
    tally.all_ms.sort_by(f64::total_cmp);
    let total = tally.all_ms.len();
    println!(
        "load: {CLIENTS} clients, predict queue {QUEUE}, {elapsed:.1} s: {total} requests ({:.0}/s), {} ok ({:.0}/s), {} overloaded (503), 0 other; ok latency p50 {:.1} ms p99 {:.1} ms; all p50 {:.1} ms p99 {:.1} ms; {} jobs trained meanwhile, all succeeded",
        total as f64 / elapsed,
        tally.ok_ms.len(),
        tally.ok_ms.len() as f64 / elapsed,
        tally.overloaded,
        percentile(&tally.ok_ms, 0.5),
        percentile(&tally.ok_ms, 0.99),
        percentile(&tally.all_ms, 0.5),
        percentile(&tally.all_ms, 0.99),
        jobs.len()
    );
}
