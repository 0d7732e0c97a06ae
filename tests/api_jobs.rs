//! Jobs end to end through the real router with a tiny random-weight BERT: validation of
//! requests, the queue, progress and events (JSON and SSE), cancellation, crash recovery,
//! metrics, prediction, and the download archive loading again.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, topic_csv};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_requests_are_validated() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;

    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "dataset_not_found");

    let cases = [
        (
            json!({"dataset_id": ds["id"], "backbone": "efficientnet-lite0"}),
            "backbone",
        ),
        (
            json!({"dataset_id": ds["id"], "backbone": "resnet-9000"}),
            "unknown backbone",
        ),
        (
            json!({"dataset_id": ds["id"], "hyperparameters": {"head_lr": -1.0}}),
            "head_lr",
        ),
        (
            json!({"dataset_id": ds["id"], "hyperparameters": {"dropout": 1.5}}),
            "dropout",
        ),
        (
            json!({"dataset_id": ds["id"], "hyperparameters": {"batch_size": 0}}),
            "batch_size",
        ),
        (
            json!({"dataset_id": ds["id"], "hyperparameters": {"epochs": 3}}),
            "epochs",
        ),
        (
            json!({"dataset_id": ds["id"], "hyperparameters": {"unfreeze": "some"}}),
            "unfreeze",
        ),
        (
            json!({"dataset_id": ds["id"], "validation": {"strategy": "holdout", "fraction": 0.9}}),
            "fraction",
        ),
        (json!({"dataset_id": ds["id"], "seed": -4}), "seed"),
    ];
    for (request, mention) in cases {
        let (status, body) = app.post_json("/v1/jobs", request.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{request}: {body}"
        );
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(mention),
            "{request}: {msg:?} should mention {mention:?}"
        );
    }
    let (status, body) = app
        .send(
            Request::post("/v1/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed_json");
    let (_, jobs) = app.get("/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_job_trains_reports_and_predicts() {
    let app = TestApp::start().await;
    let (ds, job) = app
        .train(
            &topic_csv(12),
            json!({"hyperparameters": {"finetune_epochs": 2, "head_epochs": 20},
                   "validation": {"strategy": "holdout", "fraction": 0.25}}),
        )
        .await;
    assert_eq!(job["backbone"], "minilm-l6");
    assert_eq!(job["dataset_id"], ds["id"]);
    assert_eq!(job["progress"]["fraction"], 1.0);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert!(job["error"].is_null());
    // The resolved recipe is recorded, with reasons for automatic choices.
    assert_eq!(job["config"]["finetune_epochs"], 2);
    assert!(
        job["config"]["choices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["parameter"] == "backbone_lr")
    );

    // Events: stages in order, per-epoch metrics, final event with the metrics.
    let events = app.events(job["id"].as_str().unwrap()).await;
    let stages: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "stage")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    // A kept head is refitted on every example after the holdout split chose it; a kept
    // fine-tuned model is the split's own.
    let head_kept = job["metrics"]["selected"] == "head_only";
    let mut expected = vec![
        "preparing",
        "extracting_features",
        "training_head",
        "finetuning",
    ];
    if head_kept {
        expected.push("training_head");
    }
    expected.push("evaluating");
    assert_eq!(stages, expected);
    let final_fit = &job["metrics"]["final_fit"];
    if head_kept {
        assert_eq!(final_fit["num_train"], 36, "{final_fit}");
        assert_eq!(final_fit["finetune_epochs"], 0, "{final_fit}");
    } else {
        assert!(final_fit.is_null(), "{final_fit}");
    }
    let ft_epochs = events
        .iter()
        .filter(|e| e["kind"] == "epoch" && e["stage"] == "finetuning")
        .count();
    assert!(ft_epochs >= 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "epoch" && e["metrics"]["val_loss"].is_number())
    );
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "succeeded");
    assert!(last["metrics"]["accuracy"].is_number());

    // The model carries full metrics.
    let model_id = job["model_id"].as_str().unwrap();
    let (status, model) = app.get(&format!("/v1/models/{model_id}")).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let m = &model["metrics"];
    for key in ["accuracy", "macro_f1", "log_loss"] {
        assert!(m[key].is_number(), "{key} missing: {m}");
    }
    assert_eq!(
        m["confusion_matrix"]["labels"],
        json!(["food", "sports", "weather"])
    );
    let matrix = m["confusion_matrix"]["matrix"].as_array().unwrap();
    let total: u64 = matrix
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, m["validation"]["num_valid"].as_u64().unwrap());
    for label in ["food", "sports", "weather"] {
        let c = &m["per_class"][label];
        for key in ["precision", "recall", "f1", "support"] {
            assert!(c[key].is_number(), "{label}.{key}: {m}");
        }
    }
    assert!(["head_only", "finetuned"].contains(&m["selected"].as_str().unwrap()));
    assert_eq!(m["validation"]["strategy"], "holdout");
    assert_eq!(m["validation"]["num_valid"], 9);
    // The no-transfer baseline and the gain over it, side by side.
    assert!(m["baseline"]["accuracy"].is_number(), "{m}");
    let gain = m["transfer_gain"]["accuracy"].as_f64().unwrap();
    let expected = m["accuracy"].as_f64().unwrap() - m["baseline"]["accuracy"].as_f64().unwrap();
    assert!((gain - expected).abs() < 1e-9);
    assert!(m["candidates"]["head_only"]["accuracy"].is_number());
    assert!(m["candidates"]["finetuned"]["log_loss"].is_number());
    assert!(m["calibration"]["temperature"].as_f64().unwrap() > 0.0);

    // Predict: one prediction per input, in order, with top-k.
    let (status, preds) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": ["the football match", "soup for dinner", "rain and wind"], "top_k": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preds}");
    let preds = preds["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);
    for p in preds {
        let top = p["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(p["label"], top[0]["label"]);
        assert!(top[0]["score"].as_f64().unwrap() >= top[1]["score"].as_f64().unwrap());
    }
    // Bad predict inputs.
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": [1, 2]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post_json("/v1/models/nope/predict", json!({"inputs": ["x"]}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Download → import → the imported model predicts the same.
    let (status, headers, archive) = app.download_model(model_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/zip");
    let (status, imported) = app.upload("/v1/models", "model.zip", &archive, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_ne!(imported["id"], model["id"]);
    assert_eq!(imported["labels"], model["labels"]);
    let inputs = json!({"inputs": ["the football match", "soup for dinner"], "top_k": 3});
    let (_, a) = app
        .post_json(&format!("/v1/models/{model_id}/predict"), inputs.clone())
        .await;
    let (_, b) = app
        .post_json(
            &format!("/v1/models/{}/predict", imported["id"].as_str().unwrap()),
            inputs,
        )
        .await;
    assert_eq!(a, b);
    // A garbage archive is refused.
    let (status, body) = app
        .upload("/v1/models", "model.zip", b"PK\x03\x04garbage", &[])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Deleting the model removes it; the dataset is untouched.
    let (status, _) = app.delete(&format!("/v1/models/{model_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/v1/models/{model_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .get(&format!("/v1/datasets/{}", ds["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_only_job_and_sse_stream() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(8).as_bytes()).await;
    let (_, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    // The SSE stream replays history and ends with the job.
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/v1/jobs/{id}/events"))
                .header(header::ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(Duration::from_secs(120), resp.into_body().collect())
        .await
        .expect("stream ends when the job ends")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("event: queued"), "{text}");
    assert!(text.contains("event: epoch"), "{text}");
    assert!(
        text.trim_end()
            .split("\n\n")
            .last()
            .unwrap()
            .contains("event: succeeded"),
        "{text}"
    );
    let job = app.wait_job(&id, Duration::from_secs(5)).await;
    assert!(job["model_id"].is_string());
    let (_, model) = app
        .get(&format!("/v1/models/{}", job["model_id"].as_str().unwrap()))
        .await;
    assert_eq!(model["metrics"]["selected"], "head_only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_quickly() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(20).as_bytes()).await;
    let (_, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 500, "early_stopping_patience": 0}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    // Wait until it is fine-tuning.
    let start = Instant::now();
    loop {
        let (_, j) = app.get(&format!("/v1/jobs/{id}")).await;
        if j["stage"] == "finetuning" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, cancelled) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // Cancelling again is harmless; the job never becomes succeeded.
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The worker is free again within seconds: a new head-only job finishes.
    let stopped_at = Instant::now();
    let (_, next) = app
        .post_json("/v1/jobs", json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 5}}))
        .await;
    let next = app
        .wait_job(next["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(next["status"], "succeeded", "{next}");
    assert!(stopped_at.elapsed() < Duration::from_secs(20));
    let (_, j) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(j["status"], "cancelled");
    assert!(j["model_id"].is_null());
    // A finished job cannot be cancelled.
    let (status, body) = app
        .post_json(
            &format!("/v1/jobs/{}/cancel", next["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_when_the_process_died_is_requeued_and_finishes() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;
    let dir = app.stop().await;

    // Simulate a crash: a job row left `running`, as a dead worker would leave it.
    {
        let db = warmstart::store::Db::open(&dir.path().join("data").join("warmstart.db"))
            .await
            .unwrap();
        let spec = json!({"dataset_id": ds["id"], "backbone": "auto", "hyperparameters": {"finetune_epochs": 0}, "seed": 0});
        sqlx::query(
            "INSERT INTO jobs (id, tenant, dataset_id, backbone, status, stage, request, attempts, created_at, started_at)
             VALUES ('crashed-job', '', ?, 'minilm-l6', 'running', 'training_head', ?, 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z')",
        )
        .bind(ds["id"].as_str().unwrap())
        .bind(spec.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
        db.pool.close().await;
    }
    let app = TestApp::start_in(dir, |_| {}).await;
    let job = app.wait_job("crashed-job", Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    let events = app.events("crashed-job").await;
    assert!(events.iter().any(|e| e["kind"] == "requeued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_datasets_default_to_kfold_with_a_final_fit_on_all_data() {
    let app = TestApp::start().await;
    let (_, job) = app
        .train(
            &topic_csv(8),
            // The backbone is tuned, so 3 folds (each fold tunes it anew).
            json!({"hyperparameters": {"finetune_epochs": 1, "head_epochs": 10, "finetune_objective": "cross_entropy"}}),
        )
        .await;
    let choice = job["config"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["parameter"] == "validation")
        .expect("validation choice recorded")
        .clone();
    assert_eq!(
        choice["value"],
        json!({"strategy": "kfold", "folds": 3}),
        "{choice}"
    );
    assert!(
        choice["reason"].as_str().unwrap().contains("24 examples"),
        "{choice}"
    );

    let m = &job["metrics"];
    assert_eq!(m["validation"]["strategy"], "kfold");
    // Out-of-fold: every example is predicted once.
    assert_eq!(m["validation"]["num_valid"], 24);
    let folds = m["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    assert_eq!(
        folds
            .iter()
            .map(|f| f["num_valid"].as_u64().unwrap())
            .sum::<u64>(),
        24
    );
    for key in ["accuracy", "macro_f1", "log_loss"] {
        assert!(
            m["cv"][key]["mean"].is_number() && m["cv"][key]["std"].is_number(),
            "{key}: {m}"
        );
    }
    assert_eq!(m["final_fit"]["num_train"], 24);
    // Fold events are tagged; the final fit happened after the folds.
    let events = app.events(job["id"].as_str().unwrap()).await;
    let heads = events
        .iter()
        .filter(|e| e["kind"] == "stage" && e["stage"] == "training_head")
        .count();
    assert_eq!(heads, 4, "3 folds + the final fit");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "epoch" && e["metrics"]["fold"] == 3)
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "epoch" && e["metrics"]["final"] == true)
    );
    // Calibration comes with the model.
    assert!(
        m["calibration"]["ece_before"].is_number() && m["calibration"]["ece_after"].is_number()
    );
}

/// A deliberately mislabelled example is the first suspect of an out-of-fold check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_noise_finder_points_at_a_flipped_label() {
    let app = TestApp::start().await;
    let mut csv = topic_csv(10);
    csv.push_str("\"the football match and the goal, case 99\",weather\n");
    let (ds, job) = app
        .train(&csv, json!({"hyperparameters": {"finetune_epochs": 0}}))
        .await;
    let ds_id = ds["id"].as_str().unwrap();
    let model_id = job["model_id"].as_str().unwrap();
    let (status, s) = app
        .get(&format!(
            "/v1/datasets/{ds_id}/suspects?model_id={model_id}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert!(s["method"].as_str().unwrap().contains("out-of-fold"));
    let first = &s["data"][0];
    assert_eq!(first["index"], 30, "{s}");
    assert_eq!(first["given_label"], "weather");
    assert_eq!(first["suggested_label"], "sports");
    assert!(first["text"].as_str().unwrap().contains("case 99"));
    // Without model_id the latest model on the dataset is used; a foreign model is refused.
    let (status, _) = app.get(&format!("/v1/datasets/{ds_id}/suspects")).await;
    assert_eq!(status, StatusCode::OK);
    let other = app.upload_dataset("o.csv", topic_csv(5).as_bytes()).await;
    let (status, body) = app
        .get(&format!(
            "/v1/datasets/{}/suspects?model_id={model_id}",
            other["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
