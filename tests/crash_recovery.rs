//! Crash recovery with the real binary: SIGKILL in the middle of training and in the
//! middle of an upload, then a restart on the same data folder. The interrupted job
//! re-runs to `succeeded`, earlier datasets and models are byte-for-byte intact, no
//! scratch files or orphaned artefacts remain, and the database passes
//! `PRAGMA integrity_check` both as the crash left it and after a clean stop.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::Client;
use common::server::{Server, digest_tree, integrity_check, temp_root};
use common::topic_csv;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A job whose worker was killed is taken back once its lease runs out: short, for tests.
const SHORT_LEASE: &[&str] = &["--lease-secs=3", "--heartbeat-secs=1"];

const INPUTS: &str =
    r#"{"inputs": ["the football match", "soup for dinner", "rain and wind"], "top_k": 3}"#;

async fn predictions(c: &Client, model_id: &str) -> Value {
    let input: Value = serde_json::from_str(INPUTS).unwrap();
    let (status, body) = c
        .post_json(&format!("/v1/models/{model_id}/predict"), &input)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

async fn ids(c: &Client, what: &str) -> BTreeSet<String> {
    let (status, body) = c.get(&format!("/v1/{what}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// No scratch files, and exactly one artefact folder per dataset and model row.
async fn assert_no_orphans(c: &Client, data: &Path) {
    let tmp = names_in(&data.join("tmp"));
    assert!(tmp.is_empty(), "scratch files left: {tmp:?}");
    assert_eq!(names_in(&data.join("datasets")), ids(c, "datasets").await);
    assert_eq!(names_in(&data.join("models")), ids(c, "models").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_training_then_restart_reruns_the_job_and_keeps_everything() {
    let root = temp_root();
    let data = root.path().join("data");
    let server = Server::start(root.path(), SHORT_LEASE);
    let c = server.client();

    // An earlier dataset and model that must survive the crash untouched.
    let (status, ds) = c
        .upload("/v1/datasets", "d.csv", topic_csv(20).as_bytes())
        .await;
    assert_eq!(status, 201, "{ds}");
    let (_, first) = c
        .post_json(
            "/v1/jobs",
            &json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 5}}),
        )
        .await;
    let first = c
        .wait_job(first["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let model1 = first["model_id"].as_str().unwrap().to_string();
    let before = predictions(&c, &model1).await;
    let ds_files = digest_tree(&data.join("datasets"));
    let model_files = digest_tree(&data.join("models"));

    // A long fine-tuning job, killed once it is well into fine-tuning.
    let (status, job) = c
        .post_json(
            "/v1/jobs",
            &json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 40, "early_stopping_patience": 0}, "validation": {"strategy": "holdout", "fraction": 0.2}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let running = c
        .wait_job_until(&job_id, Duration::from_secs(120), |j| {
            j["stage"] == "finetuning" && j["progress"]["epoch"].as_u64().unwrap_or(0) >= 2
        })
        .await;
    assert_eq!(running["status"], "running");
    server.kill();

    // The database as the crash left it is sound.
    assert_eq!(integrity_check(&data).await, "ok");

    let restarted_at = Instant::now();
    let server = Server::start(root.path(), SHORT_LEASE);
    let c = server.client();
    let ready = restarted_at.elapsed();
    let job = c.wait_job(&job_id, Duration::from_secs(300)).await;
    let finished = restarted_at.elapsed();
    assert_eq!(job["status"], "succeeded", "{job}\n{}", server.log());
    assert_eq!(job["attempts"], 2, "{job}");
    let events = c.events(&job_id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"requeued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"succeeded"));

    // Earlier artefacts are intact and answer the same.
    assert_eq!(digest_tree(&data.join("datasets")), ds_files);
    let model1_files: Vec<_> = digest_tree(&data.join("models"))
        .into_iter()
        .filter(|(p, _)| p.starts_with(&model1))
        .collect();
    assert_eq!(model1_files, model_files);
    assert_eq!(predictions(&c, &model1).await, before);
    let model2 = job["model_id"].as_str().unwrap();
    predictions(&c, model2).await;
    assert_no_orphans(&c, &data).await;

    let (status, took, log) = server.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(integrity_check(&data).await, "ok");
    println!(
        "recovery after SIGKILL mid-training: restart to listening {:.2} s, restart to job succeeded {:.2} s; clean stop {:.2} s",
        ready.as_secs_f64(),
        finished.as_secs_f64(),
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_leaves_nothing_behind_and_keeps_earlier_data() {
    let root = temp_root();
    let data = root.path().join("data");
    let server = Server::start(root.path(), SHORT_LEASE);
    let c = server.client();
    let (status, first) = c
        .upload("/v1/datasets", "a.csv", topic_csv(10).as_bytes())
        .await;
    assert_eq!(status, 201, "{first}");
    let files_before = digest_tree(&data.join("datasets"));

    // Start a 24 MB upload, send a third of it, and kill the server while it is writing.
    let mut csv = String::from("text,label\n");
    let mut i = 0;
    while csv.len() < 24 << 20 {
        csv.push_str(&format!("\"row {i} with some words in it\",l{}\n", i % 3));
        i += 1;
    }
    let (ct, body) = common::multipart(&[("file", Some("big.csv"), csv.as_bytes())], &[]);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = common::http::head("POST", "/v1/datasets", &[("Content-Type", &ct)], body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 3]).await.unwrap();
    stream.flush().await.unwrap();
    let start = Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(data.join("tmp"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".upload"))
            .filter(|e| e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false));
        if let Some(f) = found {
            break f.path();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "upload never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    server.kill();
    assert!(
        partial.exists(),
        "the kill came mid-upload: a partial temp file is there"
    );
    drop(stream);
    assert_eq!(integrity_check(&data).await, "ok");

    let restarted_at = Instant::now();
    let server = Server::start(root.path(), SHORT_LEASE);
    let ready = restarted_at.elapsed();
    let c = server.client();
    assert!(
        !partial.exists(),
        "the partial upload was swept at start-up"
    );
    assert_eq!(
        ids(&c, "datasets").await,
        BTreeSet::from([first["id"].as_str().unwrap().to_string()])
    );
    assert_eq!(digest_tree(&data.join("datasets")), files_before);
    assert_no_orphans(&c, &data).await;
    // The service takes uploads again.
    let (status, again) = c
        .upload("/v1/datasets", "b.csv", topic_csv(8).as_bytes())
        .await;
    assert_eq!(status, 201, "{again}");
    let (status, _, log) = server.terminate(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert_eq!(integrity_check(&data).await, "ok");
    println!(
        "recovery after SIGKILL mid-upload: restart to listening {:.2} s",
        ready.as_secs_f64()
    );
}
