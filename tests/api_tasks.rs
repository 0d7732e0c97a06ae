//! Regression and multi-label through the API with the tiny backbones: what an upload
//! turns into (task, labels, target range), the bad inputs refused with the row and the
//! fix, a job's report, and the shape of the predictions.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{Value, json};

/// Texts whose target is a sum of word weights, plus a little structure.
fn regression_csv(n: usize) -> String {
    let words = [("good", 2.0), ("bad", -2.0), ("fine", 0.5), ("great", 3.0)];
    let mut out = String::from("text,label\n");
    for i in 0..n {
        let (a, wa) = words[i % 4];
        let (b, wb) = words[(i * 3 + 1) % 4];
        out.push_str(&format!(
            "\"{a} and {b} item {i}\",{:.2}\n",
            wa + wb + i as f64 * 0.01
        ));
    }
    out
}

fn multilabel_csv(n: usize) -> String {
    let tags = ["sports", "food", "travel"];
    let mut out = String::from("text,labels\n");
    for i in 0..n {
        let mut on: Vec<&str> = tags
            .iter()
            .enumerate()
            .filter(|(j, _)| (i >> j) & 1 == 1)
            .map(|(_, t)| *t)
            .collect();
        if on.is_empty() {
            on.push("food");
        }
        let words: Vec<String> = on.iter().map(|t| format!("{t}word")).collect();
        out.push_str(&format!(
            "\"{} note {i}\",{}\n",
            words.join(" "),
            on.join("|")
        ));
    }
    out
}

async fn run_job(app: &TestApp, ds: &Value) -> Value {
    let (status, job) = app
        .post_json("/v1/jobs", json!({"dataset_id": ds["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_upload_job_and_predict() {
    let app = TestApp::start().await;
    let ds = app
        .upload_dataset("prices.csv", regression_csv(40).as_bytes())
        .await;
    assert_eq!(ds["task"], "regression", "{ds}");
    assert_eq!(ds["labels"], json!([]));
    assert!(ds["target_summary"]["max"].as_f64().unwrap() > 3.0, "{ds}");
    let job = run_job(&app, &ds).await;
    let m = &job["metrics"];
    assert_eq!(m["task"], "regression", "{m}");
    for key in ["mae", "rmse", "r2", "spearman"] {
        assert!(m[key].is_number(), "{key}: {m}");
    }
    assert!(m["residuals"]["median"].is_number(), "{m}");
    assert!(m["baseline"]["mae"].is_number() && m["mean_predictor"]["rmse"].is_number());
    assert!(m["transfer_gain"]["r2"].is_number(), "{m}");
    assert_eq!(m["validation"]["strategy"], "kfold");
    assert_eq!(m["points"].as_array().unwrap().len(), 40);
    assert_eq!(
        job["config"]["head_solver"], "ridge_cv",
        "{}",
        job["config"]
    );
    let model_id = job["model_id"].as_str().unwrap();
    let (status, model) = app.get(&format!("/v1/models/{model_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["task"], "regression");
    let (status, p) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": ["good and great", "bad and bad"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let preds = p["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    for pred in preds {
        let v = pred["value"].as_f64().unwrap();
        let iv = pred["interval"].as_array().unwrap();
        assert!(
            iv[0].as_f64().unwrap() <= v && v <= iv[1].as_f64().unwrap(),
            "{pred}"
        );
        assert!(pred.get("label").is_none(), "{pred}");
    }
    // The last event carries the report.
    let events = app.events(job["id"].as_str().unwrap()).await;
    let last = events.last().unwrap();
    assert_eq!(last["metrics"]["task"], "regression", "{last}");
    // A small text set fine-tunes on the Huber loss in every fold (3 of them, since each
    // tunes the backbone anew), and selection says which candidate it kept and why.
    let choices = job["config"]["choices"].as_array().unwrap();
    assert!(
        choices
            .iter()
            .any(|c| c["parameter"] == "finetune_loss" && c["value"] == "huber"),
        "{choices:?}"
    );
    assert_eq!(
        job["config"]["validation"],
        json!({"strategy": "kfold", "folds": 3})
    );
    for fold in 1..=3 {
        assert!(
            events.iter().any(|e| e["kind"] == "epoch"
                && e["stage"] == "finetuning"
                && e["metrics"]["fold"] == fold
                && e["metrics"]["train_loss"].is_number()),
            "fold {fold}: {events:?}"
        );
    }
    assert!(
        ["head_only", "finetuned"].contains(&m["selected"].as_str().unwrap()),
        "{m}"
    );
    assert!(
        m["finetuning"].as_str().unwrap().contains("standard error"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilabel_upload_job_and_predict() {
    let app = TestApp::start().await;
    let ds = app
        .upload_dataset("tags.csv", multilabel_csv(48).as_bytes())
        .await;
    assert_eq!(ds["task"], "multilabel", "{ds}");
    assert_eq!(ds["labels"], json!(["food", "sports", "travel"]));
    assert!(ds["label_counts"]["sports"].as_u64().unwrap() >= 20, "{ds}");
    let job = run_job(&app, &ds).await;
    let m = &job["metrics"];
    assert_eq!(m["task"], "multilabel", "{m}");
    for key in ["micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"] {
        assert!(m[key].is_number(), "{key}: {m}");
    }
    let per = m["per_label"].as_array().unwrap();
    assert_eq!(per.len(), 3);
    for l in per {
        for key in ["precision", "recall", "f1", "support", "threshold"] {
            assert!(l[key].is_number(), "{key}: {l}");
        }
    }
    assert!(m["baseline"]["micro_f1"].is_number(), "{m}");
    let model_id = job["model_id"].as_str().unwrap();
    let (status, p) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": ["sportsword travelword note", "foodword"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    for pred in p["predictions"].as_array().unwrap() {
        let scores = pred["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 3, "{pred}");
        assert!(pred["labels"].is_array(), "{pred}");
        let s: Vec<f64> = scores
            .iter()
            .map(|s| s["score"].as_f64().unwrap())
            .collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{pred}");
    }
    // By default the heads stay on frozen features (said with the reason); asked for,
    // fine-tuning runs on binary cross-entropy and selection reports its verdict.
    let choices = job["config"]["choices"].as_array().unwrap();
    assert!(
        choices
            .iter()
            .any(|c| c["parameter"] == "finetune_epochs" && c["value"] == 0),
        "{choices:?}"
    );
    assert_eq!(m["selected"], "head_only", "{m}");
    let (status, tuned) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tuned}");
    let tuned = app
        .wait_job(tuned["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(tuned["status"], "succeeded", "{tuned}");
    let choices = tuned["config"]["choices"].as_array().unwrap();
    assert!(
        choices
            .iter()
            .any(|c| c["parameter"] == "finetune_loss" && c["value"] == "binary_cross_entropy"),
        "{choices:?}"
    );
    let events = app.events(tuned["id"].as_str().unwrap()).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "epoch" && e["stage"] == "finetuning"),
        "{events:?}"
    );
    assert!(
        tuned["metrics"]["finetuning"]
            .as_str()
            .unwrap()
            .contains("standard error"),
        "{}",
        tuned["metrics"]
    );
}

async fn refused(
    app: &TestApp,
    name: &str,
    body: &str,
    fields: &[(&str, &str)],
) -> (String, String) {
    let (status, err) = app
        .upload("/v1/datasets", name, body.as_bytes(), fields)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    (
        err["error"]["code"].as_str().unwrap().to_string(),
        err["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_inputs_name_the_row_and_the_fix() {
    let app = TestApp::start().await;
    let (code, msg) = refused(
        &app,
        "a.csv",
        "text,label\na,1.5\nb,x\nc,2\n",
        &[("task", "regression")],
    )
    .await;
    assert_eq!(code, "invalid_target");
    assert!(msg.contains("line 3") && msg.contains("\"x\""), "{msg}");
    let (code, msg) = refused(&app, "a.csv", "text,label\na,1.5\nb,2.5\nc,NaN\n", &[]).await;
    assert_eq!(code, "invalid_target");
    assert!(msg.contains("line 4") && msg.contains("finite"), "{msg}");
    let (code, msg) = refused(&app, "a.csv", "text,labels\na,x|y\nb, | \n", &[]).await;
    assert_eq!(code, "empty_label");
    assert!(msg.contains("line 3"), "{msg}");
    let (code, msg) = refused(
        &app,
        "a.csv",
        "text,label\na,x\nb,y\n",
        &[("task", "ranking")],
    )
    .await;
    assert_eq!(code, "invalid_task");
    assert!(msg.contains("task=regression"), "{msg}");
    let (code, _) = refused(
        &app,
        "a.csv",
        "text,labels\na,x|y\nb,y\n",
        &[("task", "regression")],
    )
    .await;
    assert_eq!(code, "invalid_task");
    let (code, msg) = refused(&app, "a.jsonl", "{\"text\":\"a\",\"labels\":[]}\n", &[]).await;
    assert_eq!(code, "empty_label");
    assert!(msg.contains("line 1"), "{msg}");

    // A few whole numbers stay classes (with a hint), unless the upload says otherwise.
    let stars = "text,label\na,1\nb,2\nc,1\nd,2\n";
    let ds = app.upload_dataset("s.csv", stars.as_bytes()).await;
    assert_eq!(ds["task"], "classification");
    assert!(
        ds["warnings"].to_string().contains("task=regression"),
        "{ds}"
    );
    let (status, ds) = app
        .upload(
            "/v1/datasets",
            "s.csv",
            stars.as_bytes(),
            &[("task", "regression")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ds}");
    assert_eq!(ds["task"], "regression");
    // JSONL lists are multi-label; a single label column can be asked to be one.
    let ds = app
        .upload_dataset(
            "t.jsonl",
            b"{\"text\":\"a\",\"labels\":[\"x\",\"y\"]}\n{\"text\":\"b\",\"labels\":[\"y\"]}\n",
        )
        .await;
    assert_eq!(ds["task"], "multilabel");
    assert_eq!(ds["label_counts"]["y"], 2);
    let (status, ds) = app
        .upload(
            "/v1/datasets",
            "u.csv",
            b"text,label\na,x\nb,y\n",
            &[("task", "multilabel")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ds}");
    assert_eq!(ds["task"], "multilabel");
}

/// A PNG of one grey level with a little texture.
fn grey(level: u8, seed: u32) -> Vec<u8> {
    use image::{ImageFormat, Rgb, RgbImage};
    let img = RgbImage::from_fn(32, 32, |x, y| {
        let n = ((x * 31 + y * 17 + seed * 13) % 11) as u8;
        Rgb([level.saturating_add(n); 3])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_regression_from_a_numeric_labels_csv() {
    use std::io::Write;
    let app = TestApp::start().await;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let mut csv = String::from("filename,label\n");
    for i in 0..30u32 {
        let level = (i * 8) as u8;
        csv.push_str(&format!("{i}.png,{:.1}\n", level as f64 / 10.0));
        zip.start_file(format!("{i}.png"), opts).unwrap();
        zip.write_all(&grey(level, i)).unwrap();
    }
    zip.start_file("labels.csv", opts).unwrap();
    zip.write_all(csv.as_bytes()).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let ds = app.upload_dataset("brightness.zip", &bytes).await;
    assert_eq!(ds["task"], "regression", "{ds}");
    assert_eq!(ds["modality"], "image");
    let job = run_job(&app, &ds).await;
    assert_eq!(job["metrics"]["task"], "regression", "{}", job["metrics"]);
    assert!(
        job["metrics"]["baseline"]["method"]
            .as_str()
            .unwrap()
            .contains("pixels")
    );
    let model_id = job["model_id"].as_str().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(grey(100, 99));
    let (status, p) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": [{"image_base64": b64}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert!(p["predictions"][0]["value"].is_number(), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_multilabel_from_a_labels_column() {
    use std::io::Write;
    let app = TestApp::start().await;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let mut csv = String::from("filename,labels\n");
    for i in 0..24u32 {
        let (level, tags) = match i % 3 {
            0 => (20, "dark"),
            1 => (230, "bright"),
            _ => (120, "dark|bright"),
        };
        csv.push_str(&format!("{i}.png,{tags}\n"));
        zip.start_file(format!("{i}.png"), opts).unwrap();
        zip.write_all(&grey(level, i)).unwrap();
    }
    zip.start_file("labels.csv", opts).unwrap();
    zip.write_all(csv.as_bytes()).unwrap();
    let ds = app
        .upload_dataset("tones.zip", &zip.finish().unwrap().into_inner())
        .await;
    assert_eq!(ds["task"], "multilabel", "{ds}");
    assert_eq!(ds["label_counts"], json!({"bright": 16, "dark": 16}));
    let job = run_job(&app, &ds).await;
    assert_eq!(job["metrics"]["task"], "multilabel");
    let model_id = job["model_id"].as_str().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(grey(25, 99));
    let (status, p) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": [{"image_base64": b64}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(
        p["predictions"][0]["scores"].as_array().unwrap().len(),
        2,
        "{p}"
    );
}
