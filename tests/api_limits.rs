//! Limits: request body, upload size, examples, text length (each breach names its
//! limit), per-key rate limits on predict and upload (429 + Retry-After), and the bounded
//! predict queue (503 `overloaded` + Retry-After).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, multipart, topic_csv};
use serde_json::json;

fn message(body: &serde_json::Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_size_limit_is_enforced_and_named() {
    let app = TestApp::start_with(|c| {
        c.max_body_mb = 1;
        c.max_upload_mb = 1;
        c.max_examples = 40;
        c.max_text_chars = 60;
    })
    .await;
    let (_, job) = app
        .train(
            &topic_csv(10),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());

    // JSON body over WARMSTART_MAX_BODY_MB.
    let big = json!({"inputs": ["x".repeat(1_200_000)]});
    let (status, body) = app.post_json(&predict, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(message(&body).contains("WARMSTART_MAX_BODY_MB"), "{body}");

    // Upload over WARMSTART_MAX_UPLOAD_MB; nothing is left in the scratch folder.
    let mut csv = String::from("text,label\n");
    while csv.len() < 1_300_000 {
        csv.push_str("\"some words that repeat, again and again\",a\n");
    }
    let (status, body) = app
        .upload("/v1/datasets", "big.csv", csv.as_bytes(), &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(message(&body).contains("WARMSTART_MAX_UPLOAD_MB"), "{body}");
    let tmp: Vec<_> = std::fs::read_dir(app.data_dir().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "scratch files left: {tmp:?}");

    // More examples than WARMSTART_MAX_EXAMPLES.
    let (status, body) = app
        .upload("/v1/datasets", "many.csv", topic_csv(14).as_bytes(), &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(message(&body).contains("WARMSTART_MAX_EXAMPLES"), "{body}");

    // A text longer than WARMSTART_MAX_TEXT_CHARS, in a dataset and in a predict input.
    let long = "y".repeat(61);
    let csv = format!("text,label\nshort,a\n{long},b\n");
    let (status, body) = app
        .upload("/v1/datasets", "long.csv", csv.as_bytes(), &[])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        message(&body).contains("WARMSTART_MAX_TEXT_CHARS"),
        "{body}"
    );
    let (status, body) = app.post_json(&predict, json!({"inputs": [long]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        message(&body).contains("WARMSTART_MAX_TEXT_CHARS"),
        "{body}"
    );

    // Too many inputs in one predict request.
    let (status, body) = app
        .post_json(&predict, json!({"inputs": vec!["a"; 257]}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(message(&body).contains("256"), "{body}");

    // Nothing was stored by the refused uploads.
    let (_, list) = app.get("/v1/datasets").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_and_upload_are_rate_limited_per_key() {
    let mut app = TestApp::start_with(|c| {
        c.predict_rate = 0.01;
        c.predict_burst = 3;
        c.upload_rate = 0.6; // per minute
        c.upload_burst = 2;
    })
    .await;
    let db = app.app.as_ref().unwrap().state.db.clone();
    let (_, alice) = db.create_key("alice", None).await.unwrap();
    // Same tenant, another key: its own buckets.
    let (_, alice_ci) = db.create_key("alice-ci", Some("alice")).await.unwrap();

    app.key = Some(alice.clone());
    let (_, job) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let request = || {
        Request::post(predict.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"inputs": ["goal"]}).to_string()))
            .unwrap()
    };
    for _ in 0..3 {
        let (status, _, body) = app.send_full(request()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = app.send_full(request()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(message(&body).contains("WARMSTART_PREDICT_RATE"), "{body}");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");

    // Uploads: the burst of 2 was partly spent by train() above (one upload).
    let (ct, form) = multipart(&[("file", Some("d.csv"), topic_csv(6).as_bytes())], &[]);
    let upload = || {
        Request::post("/v1/datasets")
            .header(header::CONTENT_TYPE, ct.clone())
            .body(Body::from(form.clone()))
            .unwrap()
    };
    let (status, _, body) = app.send_full(upload()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, headers, body) = app.send_full(upload()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(message(&body).contains("WARMSTART_UPLOAD_RATE"), "{body}");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    // Model imports count as uploads too.
    let (status, body) = app.upload("/v1/models", "m.zip", b"PK", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Reads are not limited.
    assert_eq!(app.get("/v1/datasets").await.0, StatusCode::OK);

    // The other key is unaffected.
    app.key = Some(alice_ci);
    let (status, _, body) = app.send_full(request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = app.send_full(upload()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_beyond_the_admission_queue_is_refused_with_retry_after() {
    let app = TestApp::start_with(|c| c.predict_queue = 2).await;
    let (_, job) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let request = || {
        Request::post(predict.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"inputs": ["goal"]}).to_string()))
            .unwrap()
    };
    // Two requests hold the queue (as if computing or waiting).
    let admission = app.app.as_ref().unwrap().state.predict_admission.clone();
    let held = admission.clone().acquire_many_owned(2).await.unwrap();
    let (status, headers, body) = app.send_full(request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("warmstart_predict_rejected_total 1"),
        "{metrics}"
    );
    drop(held);
    let (status, _, body) = app.send_full(request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn png(side: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([shade, (x * 7 + y) as u8, shade / 2])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_entry_and_image_pixel_limits_are_enforced_and_named() {
    let app = TestApp::start_with(|c| {
        c.max_zip_entries = 8;
        c.max_image_pixels = 24 * 24;
    })
    .await;
    let small: Vec<(String, Vec<u8>)> = (0..3u8)
        .flat_map(|i| {
            [
                (format!("red/{i}.png"), png(20, 200 - i)),
                (format!("blue/{i}.png"), png(20, 20 + i)),
            ]
        })
        .collect();

    // More entries than WARMSTART_MAX_ZIP_ENTRIES → 413 before anything is unpacked.
    let mut many = small.clone();
    for i in 0..3 {
        many.push((format!("red/extra{i}.png"), png(20, 100 + i)));
    }
    let (status, body) = app
        .upload("/v1/datasets", "many.zip", &zip_of(&many), &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        message(&body).contains("WARMSTART_MAX_ZIP_ENTRIES"),
        "{body}"
    );

    // An image over WARMSTART_MAX_IMAGE_PIXELS is refused from its header (skipped and
    // named in the warnings); a ZIP of nothing but such images is refused.
    let mut with_big = small.clone();
    with_big.push(("red/huge.png".into(), png(25, 1)));
    let ds = app.upload_dataset("imgs.zip", &zip_of(&with_big)).await;
    assert_eq!(ds["num_examples"], 6, "{ds}");
    let warnings = ds["warnings"].to_string();
    assert!(
        warnings.contains("huge.png") && warnings.contains("WARMSTART_MAX_IMAGE_PIXELS"),
        "{warnings}"
    );
    let only_big = vec![
        ("a/1.png".to_string(), png(30, 1)),
        ("b/1.png".to_string(), png(30, 2)),
    ];
    let (status, body) = app
        .upload("/v1/datasets", "big.zip", &zip_of(&only_big), &[])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // At predict time the same limit is a 422 naming it.
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 2}}),
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
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let (ct, form) = multipart(&[("file", Some("x.png"), &png(25, 9))], &[]);
    let (status, body) = app
        .send(
            Request::post(predict.clone())
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        message(&body).contains("WARMSTART_MAX_IMAGE_PIXELS"),
        "{body}"
    );
    let (ct, form) = multipart(&[("file", Some("x.png"), &png(20, 9))], &[]);
    let (status, body) = app
        .send(
            Request::post(predict)
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
