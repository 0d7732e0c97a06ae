//! Dataset uploads through the real router: formats, summaries, warnings, and every kind
//! of bad input answered with a 4xx JSON error that names the problem.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_upload_list_show_delete() {
    let app = TestApp::start().await;
    let csv = "id,text,label\n1,\"hello, world\",greet\n2,\"multi\nline\",greet\n3,bye now,farewell\n4,see you,farewell\n";
    let (status, ds) = app
        .upload(
            "/v1/datasets",
            "greetings.csv",
            csv.as_bytes(),
            &[("name", "Greetings")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ds}");
    assert_eq!(ds["name"], "Greetings");
    assert_eq!(ds["modality"], "text");
    assert_eq!(ds["num_examples"], 4);
    assert_eq!(ds["labels"], serde_json::json!(["farewell", "greet"]));
    assert_eq!(ds["label_counts"]["greet"], 2);
    assert!(
        ds["warnings"][0].as_str().unwrap().contains("fewer than 5"),
        "{ds}"
    );
    assert!(ds["created_at"].as_str().unwrap().ends_with('Z'));
    let id = ds["id"].as_str().unwrap();

    let (status, list) = app.get("/v1/datasets").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, shown) = app.get(&format!("/v1/datasets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["id"], ds["id"]);
    assert!(
        app.data_dir()
            .join("datasets")
            .join(id)
            .join("examples.jsonl")
            .is_file()
    );

    let (status, _) = app.delete(&format!("/v1/datasets/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = app.get(&format!("/v1/datasets/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "dataset_not_found");
    assert!(!app.data_dir().join("datasets").join(id).exists());
    // Nothing left in scratch space.
    assert_eq!(
        std::fs::read_dir(app.data_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_upload() {
    let app = TestApp::start().await;
    let body = "{\"text\":\"good\",\"label\":\"pos\"}\n{\"text\":\"bad\",\"label\":\"neg\"}\n{\"text\":\"good\",\"label\":\"pos\"}\n";
    let ds = app.upload_dataset("reviews.jsonl", body.as_bytes()).await;
    assert_eq!(ds["num_examples"], 2);
    assert_eq!(ds["format"], "jsonl");
    assert!(
        ds["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("duplicate")),
        "{ds}"
    );
}

async fn expect_error(
    app: &TestApp,
    name: &str,
    bytes: &[u8],
    status: StatusCode,
    code: &str,
    mention: &str,
) {
    let (got, body) = app.upload("/v1/datasets", name, bytes, &[]).await;
    assert_eq!(got, status, "{name}: {body}");
    assert_eq!(body["error"]["code"], code, "{name}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(mention),
        "{name}: message {message:?} should mention {mention:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors_and_store_nothing() {
    let app = TestApp::start().await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    expect_error(
        &app,
        "a.csv",
        b"sentence,category\nhi,a\n",
        unprocessable,
        "missing_columns",
        "text",
    )
    .await;
    expect_error(&app, "a.csv", b"", unprocessable, "empty_file", "empty").await;
    expect_error(
        &app,
        "a.csv",
        b"text,label\nx,a\ny,a\n",
        unprocessable,
        "too_few_labels",
        "2 distinct labels",
    )
    .await;
    expect_error(
        &app,
        "a.csv",
        b"text,label\nx,a\ny,\n",
        unprocessable,
        "empty_label",
        "line 3",
    )
    .await;
    expect_error(
        &app,
        "a.csv",
        b"text,label\nx,a\n\xc3\x28,b\n",
        unprocessable,
        "invalid_utf8",
        "line 3",
    )
    .await;
    expect_error(
        &app,
        "a.jsonl",
        b"{\"text\":\"x\",\"label\":\"a\"}\n{\"text\":\"y\" \"label\":\"b\"}\n",
        unprocessable,
        "malformed_jsonl",
        "line 2",
    )
    .await;
    expect_error(
        &app,
        "a.xlsx",
        b"\x01\x02binary",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_format",
        "CSV",
    )
    .await;

    // Not multipart at all.
    let (status, body) = app
        .send(
            Request::post("/v1/datasets")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body["error"]["code"], "multipart_required");

    // No file part.
    let (ct, bytes) = common::multipart(&[], &[("name", "x")]);
    let (status, body) = app
        .send(
            Request::post("/v1/datasets")
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(bytes))
                .unwrap(),
        )
        .await;
    assert_eq!(status, unprocessable, "{body}");
    assert_eq!(body["error"]["code"], "missing_file");

    let (_, list) = app.get("/v1/datasets").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(app.data_dir().join("datasets"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(app.data_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_the_limit_is_413() {
    let app = TestApp::start_with(|c| c.max_upload_mb = 1).await;
    let mut csv = String::from("text,label\n");
    while csv.len() < 1_200_000 {
        csv.push_str("some words to fill the file up,a\nmore words here,b\n");
    }
    let (status, body) = app
        .upload("/v1/datasets", "big.csv", csv.as_bytes(), &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        std::fs::read_dir(app.data_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_json_404() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "route_not_found");
    let (status, body) = app.get("/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
}
