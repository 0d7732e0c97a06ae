//! Words the embedding does not carry: tickets routed by the product number they mention,
//! in sentences shared by every team, on the tiny random-weight BERT (whose embeddings know
//! no words). A default job must blend in its lexical model (cross-validation says the
//! numbers matter), keep it in the saved model, and predict unseen tickets through it —
//! also after the model's archive is exported and imported again.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{Value, json};

/// Each team's product numbers: the only thing that tells the teams apart, one token in
/// a long ticket whose sentences every team shares. A mean-pooled embedding all but loses
/// it; a bag of words keeps it.
const TEAMS: [(&str, [&str; 3]); 3] = [
    ("displays", ["4471", "2317", "9015"]),
    ("printers", ["2209", "8861", "4480"]),
    ("routers", ["8830", "5102", "2940"]),
];

const OPENINGS: [&str; 5] = [
    "hello support team",
    "good morning everyone",
    "hi there hope you are well",
    "dear helpdesk",
    "hey folks quick question",
];

const PROBLEMS: [&str; 7] = [
    "it stopped working after the update last night and nobody here can get it going again",
    "it makes a strange noise whenever we switch it on in the morning",
    "it keeps restarting every few minutes and we lose our work each time",
    "it shows an error light since this morning and the manual does not explain it",
    "it got very slow this week and people in the office are complaining",
    "it will not connect to anything since the power cut on friday",
    "it has been flickering on and off and now it does not respond at all",
];

const CLOSINGS: [&str; 4] = [
    "please send someone as soon as you can thanks",
    "let me know if you need anything else from us",
    "we would appreciate a quick fix thank you",
    "can a technician come by this week regards",
];

/// `(text, team)`: ten tickets per product number, the first six for training and the
/// other four held out (their sentences never seen with that number).
fn tickets(train: bool) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (t, (_, numbers)) in TEAMS.iter().enumerate() {
        for (c, number) in numbers.iter().enumerate() {
            for k in 0..10 {
                if (k < 6) != train {
                    continue;
                }
                // The same sentences for every team: they carry no hint of it.
                let i = k + 3 * c;
                let text = format!(
                    "{} about unit {number} {} {}",
                    OPENINGS[i % OPENINGS.len()],
                    PROBLEMS[(i * 3) % PROBLEMS.len()],
                    CLOSINGS[(i / 2) % CLOSINGS.len()]
                );
                out.push((text, t));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_numbers_are_learned_through_the_lexical_blend() {
    let app = TestApp::start().await;
    let (train, held) = (tickets(true), tickets(false));
    let mut csv = String::from("text,label\n");
    for (text, t) in &train {
        csv.push_str(&format!("{text},{}\n", TEAMS[*t].0));
    }
    let (_, job) = app.train(&csv, json!({})).await;
    let metrics = &job["metrics"];
    let blend = &metrics["lexical_blend"];
    let weight = blend["transfer_weight"]
        .as_f64()
        .expect("a text job reports its blend");
    assert!(
        weight < 1.0,
        "the lexical model was not blended in: {blend}"
    );
    let lexical_acc = metrics["candidates"]["lexical"]["accuracy"]
        .as_f64()
        .unwrap();
    let head_acc = metrics["candidates"]["head_only"]["accuracy"]
        .as_f64()
        .unwrap();

    let texts: Vec<&str> = held.iter().map(|(t, _)| t.as_str()).collect();
    let accuracy = |preds: &Value| {
        preds["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&held)
            .filter(|(p, (_, t))| p["label"] == TEAMS[*t].0)
            .count() as f64
            / held.len() as f64
    };
    let model_id = job["model_id"].as_str().unwrap();
    let (status, preds) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": texts}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preds}");
    let acc = accuracy(&preds);
    eprintln!(
        "held-out: model {acc:.3} (transfer weight {weight}); out-of-fold: lexical {lexical_acc:.3}, head only {head_acc:.3}; {}",
        blend["reason"]
    );
    assert!(acc >= 0.9, "model accuracy {acc} on unseen tickets");

    // The lexical part travels with the archive.
    let (status, _, archive) = app.download_model(model_id).await;
    assert_eq!(status, StatusCode::OK);
    let (status, imported) = app.upload("/v1/models", "model.zip", &archive, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let (status, again) = app
        .post_json(
            &format!("/v1/models/{}/predict", imported["id"].as_str().unwrap()),
            json!({"inputs": texts}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, preds, "the imported model predicts otherwise");
}
