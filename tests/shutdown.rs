//! Graceful shutdown of the real binary on SIGTERM: it stops accepting connections,
//! finishes in-flight requests, ends live event streams, puts the running job back in the
//! queue, and exits 0 — and when a request stalls, it still exits after the grace period.

mod common;

use std::time::{Duration, Instant};

use common::server::{Server, integrity_check, temp_root};
use common::topic_csv;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens an upload of `csv` and sends all but its last `held` bytes.
async fn start_upload(addr: std::net::SocketAddr, csv: &str, held: usize) -> (TcpStream, Vec<u8>) {
    let (ct, body) = common::multipart(&[("file", Some("late.csv"), csv.as_bytes())], &[]);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = common::http::head("POST", "/v1/datasets", &[("Content-Type", &ct)], body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() - held]).await.unwrap();
    stream.flush().await.unwrap();
    (stream, body[body.len() - held..].to_vec())
}

/// Waits until the server has begun writing an upload to its scratch folder.
async fn wait_for_scratch_upload(data: &std::path::Path) {
    let start = Instant::now();
    while !std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".upload"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "upload never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_requeues_the_job_and_exits_0() {
    let root = temp_root();
    let data = root.path().join("data");
    let mut server = Server::start(root.path(), &["--shutdown-grace-secs=30"]);
    let c = server.client();
    let (status, ds) = c
        .upload("/v1/datasets", "d.csv", topic_csv(20).as_bytes())
        .await;
    assert_eq!(status, 201, "{ds}");

    // In flight when the signal comes: an upload missing its last bytes, and a live event
    // stream of a job that is fine-tuning.
    let (mut upload, rest) = start_upload(server.addr, &topic_csv(12), 100).await;
    wait_for_scratch_upload(&data).await;
    let (_, job) = c
        .post_json(
            "/v1/jobs",
            &json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 200, "early_stopping_patience": 0}, "validation": {"strategy": "holdout", "fraction": 0.2}}),
        )
        .await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let mut sse = TcpStream::connect(server.addr).await.unwrap();
    sse.write_all(
        common::http::head(
            "GET",
            &format!("/v1/jobs/{job_id}/events"),
            &[("Accept", "text/event-stream")],
            0,
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let sse_reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = sse.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    c.wait_job_until(&job_id, Duration::from_secs(120), |j| {
        j["stage"] == "finetuning"
    })
    .await;

    let signalled = Instant::now();
    server.sigterm();
    // New connections are refused while the upload is still in flight.
    let refused_after = loop {
        if TcpStream::connect(server.addr).await.is_err() {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still accepting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight"
    );
    // The live stream ends instead of holding the shutdown up.
    let stream_text = tokio::time::timeout(Duration::from_secs(20), sse_reader)
        .await
        .expect("the event stream ends on shutdown")
        .unwrap();
    assert!(stream_text.contains("event: started"), "{stream_text}");

    // The in-flight upload completes normally.
    upload.write_all(&rest).await.unwrap();
    let response = common::http::read_response(&mut upload).await.unwrap();
    assert_eq!(response.status, 201, "{:?}", response.json());
    let late_id = response.json()["id"].as_str().unwrap().to_string();

    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("exits after draining");
    let stopped_in = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("shutdown requested") && log.contains("stopped"),
        "{log}"
    );

    // On disk: the job is queued again, the late upload is stored, the DB is sound.
    assert_eq!(integrity_check(&data).await, "ok");
    {
        use sqlx::ConnectOptions;
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join("warmstart.db"))
            .connect()
            .await
            .unwrap();
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(&job_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(status, "queued");
        let requeued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND kind = 'requeued'",
        )
        .bind(&job_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(requeued, 1);
        let late: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM datasets WHERE id = ?")
            .bind(&late_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(late, 1);
    }

    // Started again, the job runs to the end.
    let restarted = Instant::now();
    let server = Server::start(root.path(), &[]);
    let job = server
        .client()
        .wait_job(&job_id, Duration::from_secs(300))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    let rerun = restarted.elapsed();
    let (status, _, log) = server.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{log}");
    println!(
        "graceful shutdown: refused new connections after {:.3} s, exited 0 after {:.2} s (upload drained, job re-queued); re-run after restart {:.2} s",
        refused_after.as_secs_f64(),
        stopped_in.as_secs_f64(),
        rerun.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_does_not_hold_shutdown_past_the_grace_period() {
    let root = temp_root();
    let data = root.path().join("data");
    let mut server = Server::start(root.path(), &["--shutdown-grace-secs=2"]);
    let (_stalled, _) = start_upload(server.addr, &topic_csv(6), 50).await;
    wait_for_scratch_upload(&data).await;
    let signalled = Instant::now();
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("exits after the grace period");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        took >= Duration::from_millis(1900),
        "did not wait for the request: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(server.log().contains("grace period"), "{}", server.log());
    println!(
        "stalled request: exited 0 after {:.2} s (grace 2 s)",
        took.as_secs_f64()
    );
}
