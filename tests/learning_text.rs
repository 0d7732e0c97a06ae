//! It learns: with the real MiniLM backbone and default settings, a job on a small
//! hand-written intent set (4 classes × 20 messages) produces a model that, on 40 messages
//! it never saw, scores clearly above chance and at least as well as a logistic regression
//! on frozen mean-pooled embeddings (the linear-probe baseline, fitted here independently).

mod common;
#[path = "data/intents.rs"]
mod intents;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestApp, logistic_regression, real_models_dir};
use serde_json::json;
use warmstart::backbones::registry::Registry;

fn embed(registry: &Registry, texts: &[&str]) -> Vec<Vec<f32>> {
    let bb = registry.frozen("minilm-l6").unwrap();
    let batch = bb.prep.text_batch(texts, 256, registry.device()).unwrap();
    bb.net
        .forward(&batch, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_job_beats_chance_and_the_linear_probe_on_unseen_messages() {
    let Some(models) = real_models_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.clone()).await;

    let started = Instant::now();
    let ds = app
        .upload_dataset("intents.csv", intents::train_csv(20).as_bytes())
        .await;
    assert_eq!(ds["num_examples"], 80);
    let (status, job) = app
        .post_json("/v1/jobs", json!({"dataset_id": ds["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(900))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let train_secs = started.elapsed().as_secs_f64();

    let held = intents::held_out(20);
    let texts: Vec<&str> = held.iter().map(|(t, _)| *t).collect();
    let model_id = job["model_id"].as_str().unwrap();
    let (status, preds) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": texts}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preds}");
    let preds = preds["predictions"].as_array().unwrap();
    let model_correct = preds
        .iter()
        .zip(&held)
        .filter(|(p, (_, l))| p["label"] == *l)
        .count();

    // The linear probe, on the same training messages.
    let labels: Vec<&str> = intents::INTENTS.iter().map(|(l, _)| *l).collect();
    let train: Vec<(&str, usize)> = intents::INTENTS
        .iter()
        .enumerate()
        .flat_map(|(c, (_, msgs))| msgs[..20].iter().map(move |m| (*m, c)))
        .collect();
    let registry = Registry::new(&models, candle_core::Device::Cpu);
    let train_x = embed(
        &registry,
        &train.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
    );
    let train_y: Vec<usize> = train.iter().map(|(_, c)| *c).collect();
    let test_x = embed(&registry, &texts);
    let probe = logistic_regression(&train_x, &train_y, labels.len(), &test_x);
    let probe_correct = probe
        .iter()
        .zip(&held)
        .filter(|(p, (_, l))| labels[**p] == *l)
        .count();

    let n = held.len() as f64;
    let (model_acc, probe_acc) = (model_correct as f64 / n, probe_correct as f64 / n);
    eprintln!(
        "held-out accuracy: model {model_acc:.3} ({} selected), linear probe {probe_acc:.3}, chance 0.25; job took {train_secs:.1}s; recipe choices: {}",
        job["metrics"]["selected"], job["config"]["choices"]
    );
    assert!(
        model_acc >= 0.6,
        "model accuracy {model_acc} is not clearly above chance (0.25)"
    );
    assert!(
        model_acc >= probe_acc,
        "model {model_acc} below the linear probe {probe_acc}"
    );
}
