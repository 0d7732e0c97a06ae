//! Hostile-input suite, part 4: the races a hostile (or unlucky) client finds, each fired
//! many times. A model deleted while clients predict on it answers them 200 (they had it)
//! or 404 `model_not_found`, never 500; a job submitted while its dataset is deleted and
//! the deletion are serialised, so exactly one of them wins. Counts are printed.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, topic_csv};
use http_body_util::BodyExt;
use rand::Rng;
use serde_json::{Value, json};
use tower::ServiceExt;

const ROUNDS: usize = 30;
const CLIENTS: usize = 6;

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

async fn jitter() {
    let us = rand::rng().random_range(0..3000);
    tokio::time::sleep(Duration::from_micros(us)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_model_under_predict_load_answers_404_never_500() {
    let app = TestApp::start_with(|c| {
        c.predict_rate = 0.0;
        c.upload_rate = 0.0;
    })
    .await;
    let (_, job) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 2}}),
        )
        .await;
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::get(format!(
                "/v1/models/{}/download",
                job["model_id"].as_str().unwrap()
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await
        .unwrap();
    let archive = resp.into_body().collect().await.unwrap().to_bytes();

    let (mut ok, mut gone, mut other) = (0usize, 0usize, Vec::new());
    for _ in 0..ROUNDS {
        // A fresh copy each round, not loaded yet: the first predicts load it from disk
        // while the delete removes it.
        let (status, model) = app.upload("/v1/models", "m.zip", &archive, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{model}");
        let id = model["id"].as_str().unwrap().to_string();
        let predict = format!("/v1/models/{id}/predict");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (router, predict) = (app.router.clone(), predict.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..500 {
                        let body = json!({"inputs": ["the goal and the match"]});
                        let (status, resp) = call(&router, post_json(&predict, &body)).await;
                        let done = status == StatusCode::NOT_FOUND;
                        seen.push((status, resp));
                        if done {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        jitter().await;
        let (status, body) = call(&app.router, delete(&format!("/v1/models/{id}"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        // After the delete has answered, every request is a 404.
        let (status, body) = call(
            &app.router,
            post_json(&predict, &json!({"inputs": ["goal"]})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        for client in clients {
            for (status, resp) in client.await.unwrap() {
                match status {
                    StatusCode::OK => ok += 1,
                    StatusCode::NOT_FOUND if resp["error"]["code"] == "model_not_found" => {
                        gone += 1
                    }
                    _ => other.push(format!("{status} {resp}")),
                }
            }
        }
    }
    println!(
        "model deleted under load, {ROUNDS} rounds x {CLIENTS} clients: {ok} answered 200, {gone} answered 404 model_not_found, {} otherwise",
        other.len()
    );
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(gone, ROUNDS * CLIENTS, "every client ends on a 404");
    let (_, models) = app.get("/v1/models").await;
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_and_the_deletion_of_its_dataset_never_both_win() {
    let app = TestApp::start_with(|c| c.upload_rate = 0.0).await;
    let csv = topic_csv(6);
    let (mut job_won, mut delete_won) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let ds = app.upload_dataset("d.csv", csv.as_bytes()).await;
        let id = ds["id"].as_str().unwrap().to_string();
        let job_req =
            json!({"dataset_id": id, "hyperparameters": {"finetune_epochs": 0, "head_epochs": 1}});
        let (router, delay_job) = (app.router.clone(), round % 2 == 0);
        let submit = tokio::spawn(async move {
            if delay_job {
                jitter().await;
            }
            call(&router, post_json("/v1/jobs", &job_req)).await
        });
        let (router, uri) = (app.router.clone(), format!("/v1/datasets/{id}"));
        let remove = tokio::spawn(async move {
            if !delay_job {
                jitter().await;
            }
            call(&router, delete(&uri)).await
        });
        let ((job_status, job), (del_status, del)) = (submit.await.unwrap(), remove.await.unwrap());
        match (job_status, del_status) {
            (StatusCode::CREATED, StatusCode::CONFLICT) => {
                assert_eq!(del["error"]["code"], "dataset_in_use", "{del}");
                job_won += 1;
                let cancel = format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap());
                let (status, body) = call(&app.router, post_json(&cancel, &json!({}))).await;
                assert!(
                    status.is_success() || status == StatusCode::CONFLICT,
                    "{body}"
                );
                let job_id = job["id"].as_str().unwrap();
                app.wait_job(job_id, Duration::from_secs(60)).await;
                let (status, body) = app.delete(&format!("/v1/datasets/{id}")).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
            }
            (StatusCode::NOT_FOUND, StatusCode::NO_CONTENT) => {
                assert_eq!(job["error"]["code"], "dataset_not_found", "{job}");
                delete_won += 1;
            }
            other => panic!("round {round}: both or neither won: {other:?} {job} {del}"),
        }
    }
    println!(
        "job vs dataset delete, {ROUNDS} rounds: the job won {job_won}, the delete won {delete_won}, both won 0"
    );
    // No job was left to fail on a vanished dataset.
    for job in app.list_all("/v1/jobs").await {
        assert_ne!(job["error"]["code"], "dataset_not_found", "{job}");
    }
    let (_, list) = app.get("/v1/datasets").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}
