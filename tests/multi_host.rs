//! Several processes on one PostgreSQL database and one S3 bucket (s3s-fs), each with its
//! own data folder as a separate host would have, with the real binary: one `--role api`
//! process and two `--role worker` processes. Twenty jobs all
//! succeed exactly once, spread over both workers; a worker killed with SIGKILL mid-job
//! loses it to the other worker within the lease time plus the job's run time; the API
//! process serves models the workers trained; nothing is lost. Needs
//! `WARMSTART_TEST_POSTGRES_URL` (scripts/start-postgres.sh) and s3s-fs; fails without
//! them in CI.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::http::Client;
use common::s3::{BUCKET, S3Server};
use common::server::{Server, serve_command, temp_root};
use common::topic_csv;
use serde_json::{Value, json};

const LEASE_SECS: u64 = 3;

/// A process on its own data folder (in `root`), sharing the database and the bucket.
fn start(root: &std::path::Path, url: &str, s3: &S3Server, role: &str, name: &str) -> Server {
    let flags = [
        format!("--role={role}"),
        format!("--database-url={url}"),
        format!("--artifact-store=s3://{BUCKET}/multi-host"),
        format!("--worker-id={name}"),
        format!("--lease-secs={LEASE_SECS}"),
        "--heartbeat-secs=1".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cmd = serve_command(root, &flags);
    cmd.envs(s3.env());
    Server::spawn(cmd, root)
}

/// Which worker started the job, each time one did (from its `started` events).
async fn runners(c: &Client, job_id: &str) -> Vec<String> {
    c.events(job_id)
        .await
        .iter()
        .filter(|e| e["kind"] == "started")
        .map(|e| {
            let m = e["message"].as_str().unwrap();
            m.trim_start_matches("worker ")
                .trim_end_matches(" started the job")
                .to_string()
        })
        .collect()
}

async fn kinds(c: &Client, job_id: &str) -> Vec<String> {
    c.events(job_id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn submit(c: &Client, request: &Value) -> String {
    let (status, job) = c.post_json("/v1/jobs", request).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_and_two_workers_share_the_queue_and_survive_a_killed_worker() {
    let Some(url) = common::postgres::fresh_database().await else {
        return;
    };
    let bucket_root = tempfile::tempdir().unwrap();
    let Some(s3) = S3Server::start_fresh(bucket_root.path().to_path_buf()) else {
        return;
    };
    let hosts = [temp_root(), temp_root(), temp_root()];
    let api = start(hosts[0].path(), &url, &s3, "api", "api");
    let w1 = start(hosts[1].path(), &url, &s3, "worker", "w1");
    let w2 = start(hosts[2].path(), &url, &s3, "worker", "w2");
    let c = api.client();
    // A worker's port answers health checks only.
    let (_, ready) = w1.client().get("/readyz").await;
    assert_eq!(ready["database"], true, "{ready}");
    let (status, _) = w1.client().get("/v1/datasets").await;
    assert_eq!(status, 404);

    let (status, ds) = c
        .upload("/v1/datasets", "d.csv", topic_csv(12).as_bytes())
        .await;
    assert_eq!(status, 201, "{ds}");
    let small = json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}});

    // Twenty jobs, each run exactly once, by one worker or the other.
    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&c, &small).await);
    }
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    let mut models = HashSet::new();
    for id in &ids {
        let job = c.wait_job(id, Duration::from_secs(180)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        let ran = runners(&c, id).await;
        assert_eq!(ran.len(), 1, "{id} started {ran:?}");
        let k = kinds(&c, id).await;
        assert_eq!(k.iter().filter(|k| *k == "succeeded").count(), 1, "{k:?}");
        println!("job {id}: ran on {}", ran[0]);
        *per_worker.entry(ran[0].clone()).or_default() += 1;
        models.insert(job["model_id"].as_str().unwrap().to_string());
    }
    println!(
        "20 jobs in {:.1} s, per worker: {per_worker:?}",
        began.elapsed().as_secs_f64()
    );
    assert_eq!(models.len(), 20);
    assert_eq!(per_worker.values().sum::<usize>(), 20);
    assert!(per_worker.contains_key("w1") && per_worker.contains_key("w2"));

    // The API process, which trained nothing, serves a model a worker trained.
    let model = models.iter().next().unwrap();
    let (status, pred) = c
        .post_json(
            &format!("/v1/models/{model}/predict"),
            &json!({"inputs": ["the football match"]}),
        )
        .await;
    assert_eq!(status, 200, "{pred}");
    assert!(pred["predictions"][0]["label"].is_string(), "{pred}");
    // It came through the bucket: the API's data folder holds only the models it fetched.
    let api_models = hosts[0].path().join("data/models");
    assert!(api_models.join(model).is_dir());
    assert_eq!(std::fs::read_dir(&api_models).unwrap().count(), 1);

    // A longer job; SIGKILL its worker mid-fine-tuning.
    let long = json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 30, "early_stopping_patience": 0}, "validation": {"strategy": "holdout", "fraction": 0.2}});
    let long_id = submit(&c, &long).await;
    c.wait_job_until(&long_id, Duration::from_secs(120), |j| {
        j["stage"] == "finetuning" && j["progress"]["epoch"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let victim = runners(&c, &long_id).await.remove(0);
    let (dead, survivor) = if victim == "w1" { (w1, w2) } else { (w2, w1) };
    let killed_at = Instant::now();
    dead.kill();
    let job = c.wait_job(&long_id, Duration::from_secs(300)).await;
    let recovered_in = killed_at.elapsed();
    assert_eq!(job["status"], "succeeded", "{job}\n{}", survivor.log());
    assert_eq!(job["attempts"], 2, "{job}");
    let ran = runners(&c, &long_id).await;
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(ran[0], victim);
    assert_ne!(ran[1], victim, "{ran:?}");
    let events = c.events(&long_id).await;
    let at = |kind: &str| {
        let e = events.iter().rev().find(|e| e["kind"] == kind).unwrap();
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap()
    };
    let rerun = (at("succeeded") - at("started")).to_std().unwrap();
    println!(
        "SIGKILL of {victim} mid-job: finished on {} {:.2} s after the kill (lease {LEASE_SECS} s, the re-run itself {:.2} s)",
        ran[1],
        recovered_in.as_secs_f64(),
        rerun.as_secs_f64()
    );
    // Lease time, one heartbeat for someone to notice, one poll for the survivor to claim.
    let bound = Duration::from_secs(LEASE_SECS + 2 + 2) + rerun;
    assert!(recovered_in <= bound, "{recovered_in:?} > {bound:?}");

    // Nothing lost: every job and model is listed once, and the API still predicts.
    let (_, list) = c.get("/v1/models?limit=100").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 21, "{list}");
    let (_, jobs) = c.get("/v1/jobs?limit=100").await;
    let statuses: Vec<&str> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 21);
    assert!(statuses.iter().all(|s| *s == "succeeded"), "{statuses:?}");
    let model2 = job["model_id"].as_str().unwrap();
    let (status, _) = c
        .post_json(
            &format!("/v1/models/{model2}/predict"),
            &json!({"inputs": ["soup for dinner"]}),
        )
        .await;
    assert_eq!(status, 200);
    drop(survivor);
    drop(api);
}
