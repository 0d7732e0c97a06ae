//! The OpenAPI document against the router, the docs page, and list pagination.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{TestApp, topic_csv};
use serde_json::Value;

/// Every operation the service has, as `METHOD path`: the document must list exactly these.
const OPERATIONS: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /v1/backbones",
    "POST /v1/datasets",
    "GET /v1/datasets",
    "GET /v1/datasets/{id}",
    "DELETE /v1/datasets/{id}",
    "GET /v1/datasets/{id}/suspects",
    "POST /v1/jobs",
    "GET /v1/jobs",
    "GET /v1/jobs/{id}",
    "GET /v1/jobs/{id}/events",
    "POST /v1/jobs/{id}/cancel",
    "POST /v1/models",
    "GET /v1/models",
    "GET /v1/models/{id}",
    "DELETE /v1/models/{id}",
    "POST /v1/models/{id}/predict",
    "GET /v1/models/{id}/download",
];

fn documented(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_and_only_those() {
    let app = TestApp::start().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    if let Some(out) = std::env::var_os("WARMSTART_DUMP_OPENAPI") {
        std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented(&doc),
        expected,
        "routes missing from the document, or extra"
    );
    // Each documented operation is routed: neither the API's 404 nor 405.
    for op in OPERATIONS {
        let (method, path) = op.split_once(' ').unwrap();
        let uri = path.replace("{id}", "no-such-id");
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let (status, body) = app.send(req).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{op}: {body}");
        assert_ne!(body["error"]["code"], "route_not_found", "{op}: {body}");
    }
    // Every schema a path refers to is defined.
    let text = doc.to_string();
    for name in text.split("\"#/components/schemas/").skip(1) {
        let name = &name[..name.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referred to but not defined"
        );
    }
}

/// Routes are only ever added through `routes!` (which documents them): a bare `.route(`
/// in the HTTP layer would serve a path the document does not list.
#[test]
fn no_route_bypasses_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for bare in [".route(", ".route_service(", ".nest_service(", "routing::"] {
            assert!(
                !text.contains(bare),
                "{} uses {bare}: register routes with utoipa_axum::routes! instead",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_is_served_from_this_server_only() {
    let app = TestApp::start().await;
    let (status, page) = app.get("/docs").await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    assert!(page.contains("/docs/swagger-ui-bundle.js"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        let (status, _) = app.get(asset).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
    let (_, init) = app.get("/docs/init.js").await;
    assert!(init.as_str().unwrap().contains("'/openapi.json'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_newest_first_with_a_cursor() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let ds = app
            .upload_dataset(&format!("d{i}.csv"), topic_csv(4).as_bytes())
            .await;
        ids.push(ds["id"].as_str().unwrap().to_string());
    }
    ids.reverse(); // newest first
    let (status, first) = app.get("/v1/datasets?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["object"], "list");
    assert_eq!(first["has_more"], true);
    assert_eq!(first["first_id"], ids[0].as_str());
    assert_eq!(first["last_id"], ids[1].as_str());
    let mut seen: Vec<String> = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = app.get(&format!("/v1/datasets?limit=2{after}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for d in page["data"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_string());
        }
        if page["has_more"] == false {
            break;
        }
        after = format!("&after={}", page["last_id"].as_str().unwrap());
    }
    assert_eq!(seen, ids);
    // The default page holds them all; an empty list has null ids.
    let (_, all) = app.get("/v1/datasets").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    assert_eq!(all["has_more"], false);
    let (_, none) = app.get("/v1/models").await;
    assert_eq!(
        (&none["data"], &none["first_id"], &none["has_more"]),
        (&serde_json::json!([]), &Value::Null, &Value::Bool(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paging_parameters_are_400s_that_name_them() {
    let app = TestApp::start().await;
    for path in ["/v1/datasets", "/v1/jobs", "/v1/models"] {
        for bad in ["0", "101", "ten", "-1", ""] {
            let (status, body) = app.get(&format!("{path}?limit={bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_query");
            assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
        }
        let (status, body) = app.get(&format!("{path}?after=nope")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_cursor");
        assert!(body["error"]["message"].as_str().unwrap().contains("after"));
    }
    let (status, body) = app.get("/v1/datasets?limit=%zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lists_and_events_page_too() {
    let app = TestApp::start().await;
    let (ds, job) = app
        .train(
            &topic_csv(6),
            serde_json::json!({"hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    let other = app
        .upload_dataset("other.csv", topic_csv(4).as_bytes())
        .await;
    let job_id = job["id"].as_str().unwrap();
    let (_, jobs) = app
        .get(&format!(
            "/v1/jobs?dataset_id={}",
            ds["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(jobs["data"][0]["id"], job_id, "{jobs}");
    let (_, jobs) = app
        .get(&format!(
            "/v1/jobs?dataset_id={}",
            other["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(jobs["data"], serde_json::json!([]));

    // Events: newest first, by seq; two at a time they are the same as all at once.
    let (_, all) = app
        .get(&format!("/v1/jobs/{job_id}/events?limit=100"))
        .await;
    let all = all["data"].as_array().unwrap().clone();
    assert!(all.len() > 3, "{all:?}");
    assert_eq!(all[0]["kind"], "succeeded");
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = app
            .get(&format!("/v1/jobs/{job_id}/events?limit=2{after}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["has_more"] == false {
            break;
        }
        after = format!("&after={}", page["last_id"].as_str().unwrap());
    }
    assert_eq!(paged, all);
    let (status, body) = app
        .get(&format!("/v1/jobs/{job_id}/events?after=first"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("after"));
}

/// A model's `metrics` is an object in the document; an imported archive cannot make it
/// anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_archive_must_hold_metrics_as_an_object() {
    let app = TestApp::start().await;
    let zip = common::fuzz::zip_of(&[("metrics.json", b"[1, 2]")], false);
    let (status, body) = app.upload("/v1/models", "model.zip", &zip, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_model_archive");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("object"),
        "{body}"
    );
}
