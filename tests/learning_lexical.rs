//! Words the embedding smooths away: tickets routed by the product code they mention, in
//! sentences shared by every team. With the real MiniLM backbone and a default job, the
//! service must blend in its lexical model (cross-validation says the codes matter), keep
//! that in the saved model, and predict unseen tickets through it; a linear probe on the
//! frozen embeddings alone, fitted here, must not do better.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{TestApp, logistic_regression, real_models_dir};
use serde_json::json;
use warmstart::backbones::registry::Registry;

/// Each team's product codes: the only thing that tells the teams apart.
const TEAMS: [(&str, [&str; 3]); 3] = [
    ("displays", ["zx4471", "zx4480", "zx5102"]),
    ("printers", ["qv2209", "qv2317", "qv2940"]),
    ("routers", ["mk8830", "mk8861", "mk9015"]),
];

const SENTENCES: [&str; 8] = [
    "my unit {} stopped working after the update",
    "the {} we bought last month makes a strange noise",
    "can someone look at the {} in room four",
    "we need a replacement part for the {}",
    "the {} keeps restarting every few minutes",
    "is there a firmware fix for the {} yet",
    "our {} shows an error light since this morning",
    "please send a technician for the {} at the front desk",
];

/// `(text, team)`: every sentence with every code of every team, the first `train` of
/// each team's 24 for training and the rest held out.
fn tickets(train: bool) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (t, (_, codes)) in TEAMS.iter().enumerate() {
        let mut all = Vec::new();
        for (s, sentence) in SENTENCES.iter().enumerate() {
            for (c, code) in codes.iter().enumerate() {
                all.push(((s + c) % 3, sentence.replace("{}", code)));
            }
        }
        // A third held out: the other sentence for each code.
        for (slot, text) in all {
            if (slot != 0) == train {
                out.push((text, t));
            }
        }
    }
    out
}

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
async fn product_codes_are_learned_through_the_lexical_blend() {
    let Some(models) = real_models_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.clone()).await;
    let (train, held) = (tickets(true), tickets(false));
    let mut csv = String::from("text,label\n");
    for (text, t) in &train {
        csv.push_str(&format!("{text},{}\n", TEAMS[*t].0));
    }
    let ds = app.upload_dataset("tickets.csv", csv.as_bytes()).await;
    let (status, job) = app
        .post_json("/v1/jobs", json!({"dataset_id": ds["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(900))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let blend = &job["metrics"]["lexical_blend"];
    let weight = blend["transfer_weight"]
        .as_f64()
        .expect("a text job reports its blend");

    let texts: Vec<&str> = held.iter().map(|(t, _)| t.as_str()).collect();
    let model_id = job["model_id"].as_str().unwrap();
    let (status, preds) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": texts}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preds}");
    let correct = preds["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&held)
        .filter(|(p, (_, t))| p["label"] == TEAMS[*t].0)
        .count();

    let registry = Registry::new(&models, candle_core::Device::Cpu);
    let train_texts: Vec<&str> = train.iter().map(|(t, _)| t.as_str()).collect();
    let train_y: Vec<usize> = train.iter().map(|(_, t)| *t).collect();
    let probe = logistic_regression(
        &embed(&registry, &train_texts),
        &train_y,
        TEAMS.len(),
        &embed(&registry, &texts),
    );
    let probe_correct = probe
        .iter()
        .zip(&held)
        .filter(|(p, (_, t))| **p == *t)
        .count();
    let n = held.len() as f64;
    let (acc, probe_acc) = (correct as f64 / n, probe_correct as f64 / n);
    eprintln!(
        "held-out accuracy: model {acc:.3} (transfer weight {weight}), linear probe {probe_acc:.3}; {}",
        blend["reason"]
    );
    assert!(
        weight < 1.0,
        "the lexical model was not blended in: {blend}"
    );
    assert!(acc >= 0.9, "model accuracy {acc} on unseen tickets");
    assert!(
        acc >= probe_acc,
        "model {acc} below the linear probe {probe_acc}"
    );
}
