//! Benchmark (run by hand): one real job on ~100 short texts with default settings, through
//! the real service. Prints wall time per stage (from the job's events), held-out accuracy
//! against a linear probe on frozen embeddings, and the job's total time. For peak memory:
//! `/usr/bin/time -v cargo bench --bench text_job`.
//!
//! `cargo bench --bench text_job` (needs `scripts/fetch-backbones.sh`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/data/intents.rs"]
mod intents;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::DateTime;
use common::TestApp;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let models = std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert!(
        models.join("minilm-l6").is_dir(),
        "run scripts/fetch-backbones.sh first"
    );
    let per_class: usize = std::env::var("PER_CLASS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.clone()).await;

    let t0 = Instant::now();
    let ds = app
        .upload_dataset("intents.csv", intents::train_csv(per_class).as_bytes())
        .await;
    let upload = t0.elapsed();
    // REQUEST='{"hyperparameters":{...}}' adds fields to the job request.
    let mut request: serde_json::Value = std::env::var("REQUEST")
        .ok()
        .map(|r| serde_json::from_str(&r).expect("REQUEST is JSON"))
        .unwrap_or_else(|| json!({}));
    request["dataset_id"] = ds["id"].clone();
    let (_, job) = app.post_json("/v1/jobs", request).await;
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(3600))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let total = t0.elapsed();

    let events = app.events(job["id"].as_str().unwrap()).await;
    let at =
        |e: &serde_json::Value| DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let marks: Vec<(String, DateTime<_>)> = events
        .iter()
        .filter(|e| e["kind"] == "stage" || e["kind"] == "succeeded")
        .map(|e| (e["stage"].as_str().unwrap_or("").to_string(), at(e)))
        .collect();
    println!(
        "dataset: {} examples, {} classes; upload {:.2}s",
        ds["num_examples"],
        ds["labels"].as_array().unwrap().len(),
        upload.as_secs_f64()
    );
    let mut per_stage: Vec<(String, f64, usize)> = Vec::new();
    for w in marks.windows(2) {
        let secs = (w[1].1 - w[0].1).num_milliseconds() as f64 / 1000.0;
        match per_stage.iter_mut().find(|(s, _, _)| *s == w[0].0) {
            Some(e) => {
                e.1 += secs;
                e.2 += 1;
            }
            None => per_stage.push((w[0].0.clone(), secs, 1)),
        }
    }
    for (stage, secs, runs) in &per_stage {
        println!(
            "  stage {stage:<20} {secs:>7.2}s ({runs} run{})",
            if *runs > 1 { "s" } else { "" }
        );
    }
    let m = &job["metrics"];
    println!(
        "selected: {} ({}); validation accuracy {:.3}, macro-F1 {:.3}",
        m["selected"],
        m["selection_reason"],
        m["accuracy"].as_f64().unwrap(),
        m["macro_f1"].as_f64().unwrap()
    );
    println!("candidates: {}", m["candidates"]);
    println!(
        "baseline (no transfer): {}; transfer gain: {}",
        m["baseline"], m["transfer_gain"]
    );
    println!("calibration: {}", m["calibration"]);
    if m["cv"].is_object() {
        println!("cross-validation: {}", m["cv"]);
    }
    if std::env::var_os("SHOW_EPOCHS").is_some() {
        for e in events
            .iter()
            .filter(|e| e["kind"] == "epoch" || e["kind"] == "log")
        {
            println!(
                "  {} {} {} {}",
                e["stage"], e["epoch"], e["metrics"], e["message"]
            );
        }
    }

    let held = intents::held_out(per_class.max(20));
    let texts: Vec<&str> = held.iter().map(|(t, _)| *t).collect();
    let t1 = Instant::now();
    let (_, preds) = app
        .post_json(
            &format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap()),
            json!({"inputs": texts}),
        )
        .await;
    let predict = t1.elapsed();
    let correct = preds["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&held)
        .filter(|(p, (_, l))| p["label"] == *l)
        .count();
    // The linear probe: logistic regression on frozen mean-pooled embeddings, same data.
    let registry = warmstart::backbones::registry::Registry::new(&models, candle_core::Device::Cpu);
    let bb = registry.frozen("minilm-l6").unwrap();
    let embed = |texts: &[&str]| -> Vec<Vec<f32>> {
        let batch = bb.prep.text_batch(texts, 256, registry.device()).unwrap();
        bb.net
            .forward(&batch, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let train: Vec<(&str, usize)> = intents::INTENTS
        .iter()
        .enumerate()
        .flat_map(|(c, (_, msgs))| msgs[..per_class].iter().map(move |m| (*m, c)))
        .collect();
    let labels: Vec<&str> = intents::INTENTS.iter().map(|(l, _)| *l).collect();
    let tx = embed(&train.iter().map(|(t, _)| *t).collect::<Vec<_>>());
    let ty: Vec<usize> = train.iter().map(|(_, c)| *c).collect();
    let probe = common::logistic_regression(&tx, &ty, labels.len(), &embed(&texts));
    let probe_correct = probe
        .iter()
        .zip(&held)
        .filter(|(p, (_, l))| labels[**p] == *l)
        .count();
    println!(
        "linear probe on frozen embeddings: held-out accuracy {:.3}",
        probe_correct as f64 / held.len() as f64
    );
    println!(
        "held-out accuracy {:.3} on {} unseen messages (predict {:.0} ms for all); upload→trained model {:.1}s",
        correct as f64 / held.len() as f64,
        held.len(),
        predict.as_secs_f64() * 1000.0,
        total.as_secs_f64()
    );
}
