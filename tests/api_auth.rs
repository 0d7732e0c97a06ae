//! API keys: the `warmstart keys` subcommands (keys printed once, stored hashed,
//! revocable), when `/v1` requires a key, 401 answers, and tenant isolation — one tenant
//! cannot list, read, train on, predict with, cancel, download or delete another's
//! datasets, jobs or models (404, so ids don't leak).

mod common;

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::server::{BIN, temp_root};
use common::{TestApp, topic_csv};
use serde_json::json;

fn keys_cmd(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("keys")
        .args(args)
        .env_remove("WARMSTART_DATA_DIR")
        .output()
        .expect("run warmstart keys")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cli_prints_a_key_once_stores_only_its_hash_and_revokes() {
    let root = temp_root();
    let data = root.path().join("data");
    let data_flag = format!("--data-dir={}", data.display());

    let created = keys_cmd(&["create", "--name", "alice", &data_flag]);
    assert!(created.status.success(), "{created:?}");
    let alice = stdout(&created).trim().to_string();
    assert!(alice.starts_with("wsk_") && alice.len() > 80, "{alice:?}");
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("shown only this once"),
        "{created:?}"
    );
    // The env var works as well as the flag.
    let created = Command::new(BIN)
        .args(["keys", "create", "--name", "bob", "--tenant", "shared"])
        .env("WARMSTART_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let bob = stdout(&created).trim().to_string();
    assert_ne!(alice, bob);

    let listed = keys_cmd(&["list", &data_flag]);
    assert!(listed.status.success());
    let list = stdout(&listed);
    let secret_of = |k: &str| k.rsplit('_').next().unwrap().to_string();
    let alice_id = alice.split('_').nth(1).unwrap().to_string();
    assert!(list.contains(&alice_id) && list.contains("alice"), "{list}");
    assert!(list.contains("shared") && list.contains("active"), "{list}");
    for key in [&alice, &bob] {
        assert!(
            !list.contains(&secret_of(key)),
            "list shows a secret: {list}"
        );
    }
    // Nothing in the data folder holds a key in plain text.
    for file in common::server::files_under(&data) {
        let bytes = std::fs::read(data.join(&file)).unwrap();
        for key in [&alice, &bob] {
            let secret = secret_of(key);
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a key in plain text",
                file.display()
            );
        }
    }

    // A service on this folder requires the keys.
    let app = TestApp::start_in(root, |_| {}).await;
    let (status, headers, body) = app
        .send_full(Request::get("/v1/datasets").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "/healthz stays open");

    let mut app = app;
    app.key = Some(alice.clone());
    let (status, body) = app.get("/v1/datasets").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for wrong in [
        bob.replace(&secret_of(&bob), &"0".repeat(64)),
        "wsk_nonsense".to_string(),
        String::new(),
    ] {
        app.key = Some(wrong.clone());
        let (status, body) = app.get("/v1/datasets").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    app.key = None;
    let (status, body) = app
        .send(
            Request::get("/v1/models")
                .header(header::AUTHORIZATION, format!("Basic {alice}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Revoking (by id) locks the key out at once; revoking twice is an error.
    let revoked = keys_cmd(&["revoke", &alice_id, &data_flag]);
    assert!(revoked.status.success(), "{revoked:?}");
    app.key = Some(alice.clone());
    let (status, body) = app.get("/v1/datasets").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        !keys_cmd(&["revoke", &alice_id, &data_flag])
            .status
            .success()
    );
    assert!(stdout(&keys_cmd(&["list", &data_flag])).contains("revoked"));
    // Bob's key still works, and with every key revoked the service does not reopen.
    app.key = Some(bob.clone());
    assert_eq!(app.get("/v1/datasets").await.0, StatusCode::OK);
    assert!(keys_cmd(&["revoke", &bob, &data_flag]).status.success());
    app.key = None;
    assert_eq!(app.get("/v1/datasets").await.0, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_loopback_service_is_open_until_a_key_exists() {
    let app = TestApp::start().await;
    assert_eq!(app.get("/v1/datasets").await.0, StatusCode::OK);
    let db = app.app.as_ref().unwrap().state.db.clone();
    let (_, key) = db.create_key("first", None).await.unwrap();
    let (status, body) = app.get("/v1/datasets").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let mut app = app;
    app.key = Some(key);
    assert_eq!(app.get("/v1/datasets").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listener_requires_a_key_even_before_any_exists() {
    let app = TestApp::start_with(|c| c.listen = "0.0.0.0:8080".parse().unwrap()).await;
    for path in [
        "/v1/datasets",
        "/v1/backbones",
        "/v1/jobs",
        "/v1/no-such-route",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "missing_api_key");
    }
    let (status, body) = app
        .upload("/v1/datasets", "d.csv", b"text,label\n", &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    let db = app.app.as_ref().unwrap().state.db.clone();
    let (_, key) = db.create_key("ops", None).await.unwrap();
    let mut app = app;
    app.key = Some(key);
    assert_eq!(app.get("/v1/backbones").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_reach_each_others_datasets_jobs_or_models() {
    let mut app = TestApp::start().await;
    let db = app.app.as_ref().unwrap().state.db.clone();
    let (_, alice) = db.create_key("alice", None).await.unwrap();
    let (_, alice2) = db.create_key("alice-ci", Some("alice")).await.unwrap();
    let (_, bob) = db.create_key("bob", None).await.unwrap();

    app.key = Some(alice.clone());
    let (ds, job) = app
        .train(
            &topic_csv(8),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 5}}),
        )
        .await;
    let ds_id = ds["id"].as_str().unwrap();
    let job_id = job["id"].as_str().unwrap();
    let model_id = job["model_id"].as_str().unwrap();
    let predict = json!({"inputs": ["the football match"]});

    app.key = Some(bob.clone());
    // Bob's lists are empty.
    for path in ["/v1/datasets", "/v1/jobs", "/v1/models"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!([]), "{path} leaks: {body}");
    }
    // Every read or write of Alice's resources is a 404, as if they did not exist.
    let reads = [
        format!("/v1/datasets/{ds_id}"),
        format!("/v1/jobs/{job_id}"),
        format!("/v1/jobs/{job_id}/events"),
        format!("/v1/models/{model_id}"),
        format!("/v1/models/{model_id}/download"),
    ];
    for path in &reads {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, body) = app
        .post_json("/v1/jobs", json!({"dataset_id": ds_id}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "train on another's dataset: {body}"
    );
    assert_eq!(body["error"]["code"], "dataset_not_found");
    let (status, body) = app
        .post_json(&format!("/v1/models/{model_id}/predict"), predict.clone())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "predict: {body}");
    let (status, body) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "cancel: {body}");
    for path in [
        format!("/v1/models/{model_id}"),
        format!("/v1/datasets/{ds_id}"),
    ] {
        let (status, body) = app.delete(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "delete {path}: {body}");
    }
    // Bob's own upload is his alone.
    let bobs = app.upload_dataset("b.csv", topic_csv(6).as_bytes()).await;

    // Alice (through either of her tenant's keys) still has everything, and not Bob's.
    for key in [&alice, &alice2] {
        app.key = Some(key.clone());
        for path in &reads {
            let (status, body) = app.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, body) = app
            .post_json(&format!("/v1/models/{model_id}/predict"), predict.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, list) = app.get("/v1/datasets").await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [ds_id]);
        let (status, _) = app
            .get(&format!("/v1/datasets/{}", bobs["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Anonymous access is gone now that keys exist.
    app.key = None;
    assert_eq!(app.get(&reads[0]).await.0, StatusCode::UNAUTHORIZED);
}
