//! Dynamic batching of predict requests (issue 12): concurrent small requests to one model
//! share forward runs, each still gets exactly its own answer (order, `top_k`), and one bad
//! input in a shared batch fails only its own request.

mod common;

use std::io::{Cursor, Write};

use axum::http::StatusCode;
use base64::Engine;
use common::TestApp;
use serde_json::{Value, json};

fn batcher_runs(app: &TestApp) -> (u64, u64) {
    app.app.as_ref().unwrap().state.batcher.runs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_texts_share_forward_runs_and_get_their_own_answers() {
    // A long wait so that all sixteen requests land in one or two batches.
    let app = TestApp::start_with(|c| c.predict_batch_wait_ms = 300).await;
    let (_, job) = app
        .train(
            &common::topic_csv(8),
            json!({"hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    let uri = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let texts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "the {} and the storm, case {i}",
                ["goal", "soup", "rain"][i % 3]
            )
        })
        .collect();
    // Reference: all sixteen in one request.
    let (status, alone) = app
        .post_json(&uri, json!({"inputs": texts, "top_k": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{alone}");
    let before = batcher_runs(&app);

    let answers = futures::future::join_all(texts.iter().enumerate().map(|(i, t)| {
        let top_k = 1 + i % 3;
        app.post_json(&uri, json!({"inputs": [t], "top_k": top_k}))
    }))
    .await;
    let (runs, inputs) = batcher_runs(&app);
    let (runs, inputs) = (runs - before.0, inputs - before.1);
    println!("16 concurrent one-text requests: {runs} forward runs, {inputs} inputs");
    assert_eq!(inputs, 16);
    assert!(
        runs < 8,
        "{runs} runs for 16 concurrent requests: no batching"
    );
    for (i, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK, "{body}");
        let preds = body["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 1);
        let want = &alone["predictions"][i];
        assert_eq!(preds[0]["label"], want["label"], "request {i}");
        let (got, exp) = (
            preds[0]["score"].as_f64().unwrap(),
            want["score"].as_f64().unwrap(),
        );
        assert!((got - exp).abs() < 1e-4, "request {i}: {got} vs {exp}");
        assert_eq!(preds[0]["top_k"].as_array().unwrap().len(), 1 + i % 3);
    }
    app.stop().await;
}

fn png(color: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(32, 32, image::Rgb(color));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_image_in_a_shared_batch_fails_only_its_own_request() {
    let app = TestApp::start_with(|c| c.predict_batch_wait_ms = 300).await;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..8u8 {
        for (label, color) in [("red", [200, 20 + i, 20]), ("blue", [20, 20 + i, 200])] {
            zip.start_file(
                format!("{label}/{i}.png"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(&png(color)).unwrap();
        }
    }
    let ds = app
        .upload_dataset("colours.zip", &zip.finish().unwrap().into_inner())
        .await;
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(
            job["id"].as_str().unwrap(),
            std::time::Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let uri = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let b64 = base64::engine::general_purpose::STANDARD;
    let good = b64.encode(png([200, 25, 20]));
    let bad = b64.encode(b"not an image at all");
    let answers: Vec<(StatusCode, Value)> = futures::future::join_all((0..6).map(|i| {
        let data = if i == 3 { &bad } else { &good };
        app.post_json(&uri, json!({"inputs": [{"image_base64": data}]}))
    }))
    .await;
    for (i, (status, body)) in answers.iter().enumerate() {
        if i == 3 {
            assert!(status.is_client_error(), "bad image: {status} {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("image 0"),
                "{body}"
            );
        } else {
            assert_eq!(*status, StatusCode::OK, "request {i}: {body}");
            assert_eq!(body["predictions"][0]["label"], "red", "{body}");
        }
    }
    app.stop().await;
}
