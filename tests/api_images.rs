//! Image datasets and models end to end with a tiny random-weight EfficientNet-Lite: ZIP
//! layouts, unreadable files, hostile archives refused before anything is written,
//! training with augmentation, and prediction from multipart files and base64 JSON.

mod common;

use std::io::{Cursor, Write};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use common::TestApp;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::json;

/// A `size`×`size` image of a colour, with a little deterministic texture.
fn picture(color: [u8; 3], seed: u32, format: ImageFormat) -> Vec<u8> {
    let size = 40 + seed % 17;
    let img = RgbImage::from_fn(size, size + seed % 5, |x, y| {
        let n = ((x * 31 + y * 17 + seed * 13) % 23) as u8;
        Rgb([
            color[0].saturating_add(n),
            color[1].saturating_add(n),
            color[2].saturating_add(n),
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, bytes) in files {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn colour_dataset(per_class: u32) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..per_class {
        files.push((
            format!("red/{i:03}.png"),
            picture([200, 30, 30], i, ImageFormat::Png),
        ));
        files.push((
            format!("blue/{i:03}.jpg"),
            picture([30, 30, 200], i, ImageFormat::Jpeg),
        ));
    }
    files
}

fn as_refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
    files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_zip_with_bad_files_is_summarised() {
    let app = TestApp::start().await;
    let mut files = colour_dataset(6);
    files.push((
        "red/broken.jpg".into(),
        b"\xff\xd8\xff\xe0 not really a jpeg".to_vec(),
    ));
    files.push(("blue/notes.txt".into(), b"hello".to_vec()));
    files.push(("__MACOSX/red/._000.png".into(), b"junk".to_vec()));
    let ds = app
        .upload_dataset("colours.zip", &zip_of(&as_refs(&files)))
        .await;
    assert_eq!(ds["modality"], "image");
    assert_eq!(ds["num_examples"], 12);
    assert_eq!(ds["labels"], json!(["blue", "red"]));
    let warnings = ds["warnings"].to_string();
    assert!(warnings.contains("red/broken.jpg"), "{warnings}");
    assert!(warnings.contains("not JPEG, PNG or WebP"), "{warnings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_csv_layout_and_a_wrapping_folder() {
    let app = TestApp::start().await;
    let mut files = vec![(
        "my-data/labels.csv".to_string(),
        b"filename,label\nimg/a.png,cat\nimg/b.png,cat\nimg/c.png,dog\nimg/d.png,dog\n".to_vec(),
    )];
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let colour = if i < 2 { [200, 200, 0] } else { [0, 200, 200] };
        files.push((
            format!("my-data/img/{name}.png"),
            picture(colour, i as u32, ImageFormat::Png),
        ));
    }
    let ds = app
        .upload_dataset("pets.zip", &zip_of(&as_refs(&files)))
        .await;
    assert_eq!(ds["label_counts"], json!({"cat": 2, "dog": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_zips_are_refused_before_anything_is_written() {
    let app = TestApp::start_with(|c| c.max_unzipped_mb = 1).await;
    let png = picture([1, 2, 3], 1, ImageFormat::Png);
    for (name, code) in [
        ("../evil/001.png", "unsafe_zip_path"),
        ("/abs/001.png", "unsafe_zip_path"),
    ] {
        let bytes = zip_of(&[("ok/001.png", png.clone()), (name, png.clone())]);
        let (status, body) = app.upload("/v1/datasets", "x.zip", &bytes, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // 2 MB of zeros compresses to almost nothing but unpacks over the 1 MB limit.
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("a/bomb.png", deflate).unwrap();
    zip.write_all(&vec![0u8; 2 << 20]).unwrap();
    let bomb = zip.finish().unwrap().into_inner();
    assert!(bomb.len() < 100_000);
    let (status, body) = app.upload("/v1/datasets", "bomb.zip", &bomb, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WARMSTART_MAX_UNZIPPED_MB")
    );
    let (status, body) = app
        .upload("/v1/datasets", "x.zip", b"PK\x03\x04 broken", &[])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

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
async fn image_job_trains_and_predicts_from_files_and_base64() {
    let app = TestApp::start().await;
    let ds = app
        .upload_dataset("colours.zip", &zip_of(&as_refs(&colour_dataset(10))))
        .await;
    // A text backbone cannot train on images.
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "backbone": "minilm-l6"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "backbone_modality_mismatch");

    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["backbone"], "efficientnet-lite0");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["config"]["augment"]["flip"], true, "{}", job["config"]);
    let events = app.events(job["id"].as_str().unwrap()).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "epoch" && e["stage"] == "finetuning")
    );
    let model_id = job["model_id"].as_str().unwrap();
    let (_, model) = app.get(&format!("/v1/models/{model_id}")).await;
    assert_eq!(model["modality"], "image");

    // Multipart: two files, answers in order.
    let red = picture([200, 30, 30], 99, ImageFormat::Png);
    let blue = picture([30, 30, 200], 98, ImageFormat::Jpeg);
    let (ct, body) = common::multipart(
        &[
            ("file", Some("r.png"), &red),
            ("file", Some("b.jpg"), &blue),
        ],
        &[("top_k", "2")],
    );
    let (status, multi) = app
        .send(
            Request::post(format!("/v1/models/{model_id}/predict"))
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{multi}");
    let preds = multi["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["top_k"].as_array().unwrap().len(), 2);

    // JSON base64 gives exactly the same answers.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (status, json_preds) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": [{"image_base64": b64(&red)}, {"image_base64": format!("data:image/jpeg;base64,{}", b64(&blue))}], "top_k": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json_preds}");
    assert_eq!(json_preds, multi);

    // Not an image → 422 naming the input; a text input → 422.
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": [{"image_base64": b64(b"nope")}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image 0"),
        "{body}"
    );
    let (status, _) = app
        .post_json(
            &format!("/v1/models/{model_id}/predict"),
            json!({"inputs": ["text"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_only_image_job_learns_from_augmented_views_and_says_so() {
    let app = TestApp::start().await;
    let ds = app
        .upload_dataset("colours.zip", &zip_of(&as_refs(&colour_dataset(6))))
        .await;
    let run = |hyper: serde_json::Value| {
        let (app, request) = (
            &app,
            json!({"dataset_id": ds["id"], "hyperparameters": hyper}),
        );
        async move {
            let job = app.run_job(request).await;
            let logs = app.log_messages(job["id"].as_str().unwrap()).await;
            (job, logs)
        }
    };
    // The default for a few images per class: the head is the model, and it also sees
    // three views of every training image.
    let (job, logs) = run(json!({})).await;
    assert_eq!(job["config"]["finetune_epochs"], 0, "{}", job["config"]);
    assert_eq!(job["config"]["head_views"], 3, "{}", job["config"]);
    let why = job["config"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["parameter"] == "head_views")
        .expect("the views are explained");
    assert!(
        why["reason"].as_str().unwrap().contains("mirrored"),
        "{why}"
    );
    assert!(
        logs.iter()
            .any(|m| m.contains("also seen in 3 augmented views")),
        "{logs:?}"
    );
    // Turned off, the head sees the plain features alone.
    let (job, logs) = run(json!({"head_views": 0})).await;
    assert_eq!(job["config"]["head_views"], 0);
    assert!(logs.iter().any(|m| m.contains("head: logistic regression")));
    assert!(
        !logs.iter().any(|m| m.contains("augmented views")),
        "{logs:?}"
    );
    // Out of range: a 400 naming the field.
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"head_views": 4}}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("head_views"),
        "{body}"
    );
}
