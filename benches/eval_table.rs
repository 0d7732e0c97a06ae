//! Benchmark (run by hand): the evaluation table of issue 4. For one text dataset (the
//! hand-written support intents) and one image dataset (texture patches), at 8 and 32
//! examples per class, one job each through the real service with default settings except
//! that fine-tuning is forced on (so both candidates are measured). Prints per row: the
//! no-transfer baseline, head-only and fine-tuned out-of-fold accuracy, the selected model's
//! k-fold mean ± std, ECE before/after calibration, accuracy on unseen examples, and time.
//!
//! `cargo bench --bench eval_table` (needs scripts/fetch-backbones.sh and
//! scripts/fetch-test-data.sh). `ROWS=text8,image32` picks rows (any count per class, e.g.
//! `image100`); `DEFAULTS=1` leaves every setting automatic.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/data/intents.rs"]
mod intents;
#[path = "../tests/data/textures.rs"]
mod textures;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use common::TestApp;
use serde_json::{Value, json};

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |x| format!("{:.1}", x * 100.0))
}

async fn run_row(
    app: &TestApp,
    name: &str,
    upload: (&str, Vec<u8>),
    ft_epochs: u32,
    unseen: Vec<(Vec<u8>, String)>,
    is_text: bool,
) {
    let t0 = Instant::now();
    let ds = app.upload_dataset(upload.0, &upload.1).await;
    // DEFAULTS=1: every setting automatic (fine-tuning may then be skipped or capped).
    let request = if std::env::var_os("DEFAULTS").is_some() {
        json!({"dataset_id": ds["id"]})
    } else {
        json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": ft_epochs}})
    };
    let (_, job) = app.post_json("/v1/jobs", request).await;
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(7200))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let secs = t0.elapsed().as_secs_f64();
    let model = job["model_id"].as_str().unwrap();
    let (_, preds) = if is_text {
        let texts: Vec<String> = unseen
            .iter()
            .map(|(t, _)| String::from_utf8(t.clone()).unwrap())
            .collect();
        app.post_json(
            &format!("/v1/models/{model}/predict"),
            json!({"inputs": texts}),
        )
        .await
    } else {
        let files: Vec<(&str, Option<&str>, &[u8])> = unseen
            .iter()
            .map(|(b, _)| ("file", Some("x.png"), b.as_slice()))
            .collect();
        let (ct, body) = common::multipart(&files, &[]);
        app.send(
            Request::post(format!("/v1/models/{model}/predict"))
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    };
    let correct = preds["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&unseen)
        .filter(|(p, (_, l))| p["label"] == *l)
        .count();
    let m = &job["metrics"];
    let cv = &m["cv"]["accuracy"];
    // Time per stage, from the job's events (summed over folds).
    let events = app.events(job["id"].as_str().unwrap()).await;
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let marks: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "stage" || e["kind"] == "succeeded")
        .collect();
    let mut stages: Vec<(String, f64)> = Vec::new();
    for w in marks.windows(2) {
        let secs = (at(w[1]) - at(w[0])).num_milliseconds() as f64 / 1000.0;
        let name = w[0]["stage"].as_str().unwrap_or("").to_string();
        match stages.iter_mut().find(|(s, _)| *s == name) {
            Some(e) => e.1 += secs,
            None => stages.push((name, secs)),
        }
    }
    let stage_text: Vec<String> = stages.iter().map(|(s, t)| format!("{s} {t:.1}s")).collect();
    eprintln!(
        "{name}: {} [{}]",
        job["metrics"]["selection_reason"],
        stage_text.join(", ")
    );
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} ± {} | {:.3} → {:.3} | {:.1} | {:.0} s |",
        job["backbone"].as_str().unwrap(),
        pct(&m["baseline"]["accuracy"]),
        pct(&m["candidates"]["head_only"]["accuracy"]),
        pct(&m["candidates"]["finetuned"]["accuracy"]),
        m["selected"].as_str().unwrap(),
        pct(&cv["mean"]),
        pct(&cv["std"]),
        m["calibration"]["ece_before"].as_f64().unwrap(),
        m["calibration"]["ece_after"].as_f64().unwrap(),
        correct as f64 / unseen.len() as f64 * 100.0,
        secs
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models = std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models"));
    let data = std::env::var_os("WARMSTART_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("test-data"));
    let rows = std::env::var("ROWS").unwrap_or_else(|_| "text8,text32,image8,image32".into());
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.clone()).await;
    println!(
        "| dataset | backbone | baseline acc % | head-only acc % | fine-tuned acc % | selected | k-fold acc % (mean ± std) | ECE before → after | unseen acc % | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows.split(',') {
        match row {
            r if r.starts_with("text") => {
                let n: usize = row[4..].parse().unwrap();
                let unseen: Vec<(Vec<u8>, String)> = intents::held_out(32)
                    .into_iter()
                    .map(|(t, l)| (t.as_bytes().to_vec(), l.to_string()))
                    .collect();
                run_row(
                    &app,
                    &format!("support intents, {n}/class (4 classes)"),
                    ("intents.csv", intents::train_csv(n).into_bytes()),
                    4,
                    unseen,
                    true,
                )
                .await;
            }
            r if r.starts_with("image") => {
                let n: usize = row[5..].parse().unwrap();
                let (train, test) = textures::patches(&data, n, 10, 7);
                let unseen = test
                    .iter()
                    .map(|p| (p.png.clone(), textures::TEXTURES[p.class].to_string()))
                    .collect();
                run_row(
                    &app,
                    &format!("textures, {n}/class (3 classes)"),
                    ("textures.zip", textures::zip(&train)),
                    3,
                    unseen,
                    false,
                )
                .await;
            }
            other => panic!("unknown row {other}"),
        }
    }
}
