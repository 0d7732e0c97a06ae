//! Hostile-input suite, part 1: small input problems an outside tester found (issue 11),
//! each answered with a clear 4xx or a warning in the dataset's `warnings`, plus the cases
//! that were already handled (ZIP path tricks, 100,000-deep JSON, truncated uploads) kept
//! as regression tests. Other parts: hostile_memory, hostile_timeouts, hostile_races.

mod common;

use std::io::{Cursor, Write};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use common::{TestApp, multipart, topic_csv};
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

fn png(side: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([shade, (x * 7 + y) as u8, shade / 2])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Every occurrence of `from` in `bytes` replaced by `to` (same length).
fn patched(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            hits += 1;
        }
        i += 1;
    }
    assert!(hits >= 2, "name not found in the local and central headers");
    bytes
}

fn scratch_is_empty(app: &TestApp) -> bool {
    std::fs::read_dir(app.data_dir().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_that_are_not_objects_are_refused_with_422() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;
    let id = ds["id"].as_str().unwrap();
    // An array was read as the job's fields in order and started a default job.
    for body in [
        json!([id]),
        json!([id, "auto"]),
        json!(id),
        json!(3),
        json!(null),
    ] {
        let (status, resp) = app.post_json("/v1/jobs", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
        assert_eq!(code(&resp), "invalid_request", "{resp}");
        assert!(message(&resp).contains("JSON object"), "{resp}");
    }
    let (_, jobs) = app.get("/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 0, "{jobs}");
    // The same for predict, and a wrong field still names itself.
    let (_, job) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 2}}),
        )
        .await;
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let (status, resp) = app.post_json(&predict, json!([["goal"], 1])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert!(message(&resp).contains("an array"), "{resp}");
    let (status, resp) = app.post_json(&predict, json!({"inputs": "goal"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert!(message(&resp).contains("inputs"), "{resp}");
    let (status, resp) = app.post_json(&predict, json!({"inputs": ["goal"]})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_duplicate_columns_are_refused_naming_where() {
    let app = TestApp::start().await;
    let cases: [(&str, &[u8], &str, &str); 5] = [
        (
            "a.csv",
            b"text,label\nfine,a\nhel\0lo,b\n",
            "nul_byte",
            "line 3",
        ),
        (
            "a.csv",
            b"text,label\nfine,a\nhello,b\0\n",
            "nul_byte",
            "line 3",
        ),
        (
            "a.jsonl",
            b"{\"text\":\"ok\",\"label\":\"a\"}\n{\"text\":\"x\\u0000y\",\"label\":\"b\"}\n",
            "nul_byte",
            "line 2",
        ),
        (
            "a.csv",
            b"text,label,text\nx,a,y\nz,b,w\n",
            "duplicate_columns",
            "columns 1, 3",
        ),
        (
            "a.csv",
            b"Label,text,label\na,x,b\nb,y,a\n",
            "duplicate_columns",
            "`label`",
        ),
    ];
    for (name, bytes, want_code, want_text) in cases {
        let (status, body) = app.upload("/v1/datasets", name, bytes, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(code(&body), want_code, "{body}");
        assert!(message(&body).contains(want_text), "{want_text}: {body}");
    }
    // labels.csv in an image ZIP too.
    let zip = zip_of(&[
        ("labels.csv", b"filename,label,label\na.png,x,y\n".to_vec()),
        ("a.png", png(20, 1)),
    ]);
    let (status, body) = app.upload("/v1/datasets", "i.zip", &zip, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "duplicate_columns", "{body}");
    assert!(scratch_is_empty(&app));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_labels_warn_and_numeric_labels_compare_as_numbers() {
    let app = TestApp::start().await;
    let mut csv = String::from("text,label\n");
    for i in 0..6 {
        csv.push_str(&format!("cat picture {i},Cat\n"));
        csv.push_str(&format!("another cat {i},cat\n"));
        csv.push_str(&format!("city {i},new york\n"));
        csv.push_str(&format!("town {i},new\u{a0}york\n"));
    }
    let ds = app.upload_dataset("l.csv", csv.as_bytes()).await;
    assert_eq!(ds["labels"].as_array().unwrap().len(), 4, "{ds}");
    let warnings = ds["warnings"].to_string();
    assert!(
        warnings.contains(r#"\"Cat\" / \"cat\""#) && warnings.contains("letter case"),
        "{warnings}"
    );
    assert!(warnings.contains("york"), "{warnings}");

    // 1 and 1.0 (and 1e0) are one class, under the first spelling; 2 and 2.00 another.
    let mut csv = String::from("text,label\n");
    for i in 0..6 {
        let one = ["1", "1.0", "1e0"][i % 3];
        let two = ["2", "2.00"][i % 2];
        csv.push_str(&format!("first {i},{one}\nsecond {i},{two}\n"));
    }
    let ds = app.upload_dataset("n.csv", csv.as_bytes()).await;
    assert_eq!(ds["labels"], json!(["1", "2"]), "{ds}");
    assert_eq!(ds["label_counts"], json!({"1": 6, "2": 6}), "{ds}");
    let warnings = ds["warnings"].to_string();
    assert!(
        warnings.contains("same number") && warnings.contains("1.0"),
        "{warnings}"
    );
    // JSONL numbers and strings meet the same way; the same text under 1 and 1.0 is a
    // duplicate, not a conflict.
    let jsonl = b"{\"text\":\"a\",\"label\":1}\n{\"text\":\"a\",\"label\":\"1.0\"}\n{\"text\":\"b\",\"label\":2.0}\n{\"text\":\"c\",\"label\":\"2\"}\n";
    let ds = app.upload_dataset("n.jsonl", jsonl).await;
    assert_eq!(ds["label_counts"], json!({"1": 1, "2.0": 2}), "{ds}");
    assert!(ds["warnings"].to_string().contains("1 duplicate"), "{ds}");
    // Plain distinct labels: no such warnings.
    let ds = app.upload_dataset("t.csv", topic_csv(6).as_bytes()).await;
    assert_eq!(ds["warnings"], json!([]), "{ds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_entries_with_the_same_name_are_named_in_a_warning() {
    let app = TestApp::start().await;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..5u8 {
        files.push((format!("red/{i}.png"), png(20, 200 - i)));
        files.push((format!("blue/{i}.png"), png(20, 20 + i)));
    }
    files.push(("red/X.png".into(), png(20, 99)));
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    // Rename red/X.png to red/0.png in the archive's bytes: two entries, one name.
    let zip = patched(zip_of(&refs), b"red/X.png", b"red/0.png");
    let ds = app.upload_dataset("dup.zip", &zip).await;
    assert_eq!(ds["num_examples"], 10, "{ds}");
    let warnings = ds["warnings"].to_string();
    assert!(
        warnings.contains("more than one entry") && warnings.contains("red/0.png"),
        "{warnings}"
    );
    let clean = app.upload_dataset("ok.zip", &zip_of(&refs[..10])).await;
    assert_eq!(clean["warnings"], json!([]), "{clean}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_deep_json_and_truncated_uploads_stay_refused() {
    let app = TestApp::start().await;
    let image = png(20, 5);
    for name in [
        "../evil/001.png",
        "/abs/001.png",
        "ok/../../evil.png",
        "C:/evil/1.png",
        "..\\evil\\1.png",
    ] {
        let zip = zip_of(&[("ok/001.png", image.clone()), (name, image.clone())]);
        let (status, body) = app.upload("/v1/datasets", "x.zip", &zip, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert_eq!(code(&body), "unsafe_zip_path", "{name}: {body}");
    }
    // 100,000 nested arrays: a clear 400, for jobs and predict alike.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for uri in ["/v1/jobs", "/v1/models/x/predict"] {
        let (status, body) = app
            .send(
                Request::post(uri)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(deep.clone()))
                    .unwrap(),
            )
            .await;
        assert!(status.is_client_error(), "{uri}: {status} {body}");
    }
    let (status, body) = app
        .send(
            Request::post("/v1/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!("{{\"a\":{deep}}}")))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "malformed_json", "{body}");
    // An upload whose body breaks off: a 4xx, and nothing left behind.
    let (ct, form) = multipart(&[("file", Some("d.csv"), topic_csv(50).as_bytes())], &[]);
    let half = Bytes::from(form[..form.len() / 2].to_vec());
    let stream = futures::stream::iter([
        Ok::<_, std::io::Error>(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let (status, body) = app
        .send(
            Request::post("/v1/datasets")
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(scratch_is_empty(&app));
    let (_, list) = app.get("/v1/datasets").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}
