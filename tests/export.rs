//! Self-contained model archives: a model downloaded from one Warmstart and imported into a
//! second one whose models folder is empty predicts the same scores there (to 1e-5), with
//! the backbone, its tokenizer/preprocessing and a model card inside the archive; an archive
//! from before backbones travelled along still imports where its backbone is installed and
//! is refused, naming the backbone and the fix, where it is not; a composite backbone
//! travels as one folder of its parts. The tiny test backbones
//! run always; the real MiniLM and EfficientNet-Lite0 run when fetched (and must be under
//! `CI=true`).

mod common;

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, real_models_dir, topic_csv};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

/// A service whose models folder exists and is empty.
async fn without_backbones() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    TestApp::start_in(dir, |_| {}).await
}

/// A service on the real backbones.
async fn with_real_backbones(models: std::path::PathBuf) -> TestApp {
    TestApp::start_in(tempfile::tempdir().unwrap(), |c| c.models_dir = models).await
}

fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut e = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (e.name().unwrap().to_string(), bytes)
        })
        .collect()
}

fn names(archive: &[u8]) -> Vec<String> {
    entries(archive).into_iter().map(|(n, _)| n).collect()
}

fn entry(archive: &[u8], name: &str) -> Vec<u8> {
    let found = entries(archive).into_iter().find(|(n, _)| n == name);
    found
        .unwrap_or_else(|| panic!("{name} is not in the archive"))
        .1
}

fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A `size`×`size` picture of a colour with a little deterministic texture.
fn picture(color: [u8; 3], seed: u32, size: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(size, size + seed % 5, |x, y| {
        let n = ((x * 31 + y * 17 + seed * 13) % 41) as u8;
        Rgb(color.map(|c| c.saturating_add(n)))
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn colour_zip(per_class: u32, size: u32) -> Vec<u8> {
    let mut files = Vec::new();
    for i in 0..per_class {
        for (label, colour) in [("red", [190, 40, 30]), ("blue", [30, 50, 190])] {
            files.push((format!("{label}/{i:03}.png"), picture(colour, i, size)));
        }
    }
    zip_of(&files)
}

/// Trains on an uploaded dataset file; returns the model id.
async fn train(app: &TestApp, file: &str, bytes: &[u8], hyper: Value) -> String {
    let ds = app.upload_dataset(file, bytes).await;
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": hyper}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(600))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    job["model_id"].as_str().unwrap().to_string()
}

/// What to predict on.
enum Probe {
    Texts(Vec<&'static str>),
    Images(Vec<Vec<u8>>),
}

/// Every label's score for each input, in input order.
async fn scores(app: &TestApp, model: &str, probe: &Probe) -> Vec<Vec<(String, f64)>> {
    let uri = format!("/v1/models/{model}/predict");
    let (status, body) = match probe {
        Probe::Texts(texts) => {
            app.post_json(&uri, json!({"inputs": texts, "top_k": 100}))
                .await
        }
        Probe::Images(images) => {
            let files: Vec<_> = images
                .iter()
                .map(|b| ("file", Some("x.png"), b.as_slice()))
                .collect();
            let (ct, body) = common::multipart(&files, &[("top_k", "100")]);
            let req = Request::post(&uri).header(header::CONTENT_TYPE, ct);
            app.send(req.body(Body::from(body)).unwrap()).await
        }
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    let preds = body["predictions"].as_array().unwrap();
    preds
        .iter()
        .map(|p| {
            let mut row: Vec<(String, f64)> = p["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let label = s["label"].as_str().unwrap().to_string();
                    (label, s["score"].as_f64().unwrap())
                })
                .collect();
            row.sort_by(|a, b| a.0.cmp(&b.0));
            row
        })
        .collect()
}

/// Asserts equal scores (to 1e-5); returns the largest difference.
fn assert_same(a: &[Vec<(String, f64)>], b: &[Vec<(String, f64)>]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for ((la, sa), (lb, sb)) in ra.iter().zip(rb) {
            assert_eq!(la, lb);
            worst = worst.max((sa - sb).abs());
        }
    }
    assert!(worst <= 1e-5, "scores differ by {worst}: {a:?} vs {b:?}");
    worst
}

async fn import(app: &TestApp, archive: &[u8]) -> (StatusCode, Value) {
    app.upload("/v1/models", "model.zip", archive, &[]).await
}

/// Downloads `model` from `from`, checks the archive is self-contained, imports it into
/// `to`, and checks `to` predicts the same scores. Returns the archive.
async fn round_trip(from: &TestApp, to: &TestApp, model: &str, probe: &Probe) -> Vec<u8> {
    let (status, _, archive) = from.download_model(model).await;
    assert_eq!(status, StatusCode::OK);
    let archive = archive.to_vec();
    let config: Value = serde_json::from_slice(&entry(&archive, "model.json")).unwrap();
    let mut expected = vec![
        "model.json",
        "model.safetensors",
        "backbone/config.json",
        "backbone/model.safetensors",
        "metrics.json",
        "MODEL_CARD.md",
    ];
    if config["modality"] == "text" {
        expected.insert(3, "backbone/tokenizer.json");
    }
    assert_eq!(names(&archive), expected);
    let card = String::from_utf8(entry(&archive, "MODEL_CARD.md")).unwrap();
    for needle in [
        "## Data",
        "## Held-out metrics",
        "## Calibration",
        "Kept candidate",
    ] {
        assert!(
            card.contains(needle),
            "{needle} missing from the card:\n{card}"
        );
    }
    let (status, imported) = import(to, &archive).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let id = imported["id"].as_str().unwrap();
    let before = scores(from, model, probe).await;
    let after = scores(to, id, probe).await;
    let worst = assert_same(&before, &after);
    eprintln!(
        "{} model {} ({}): archive {} bytes; {} inputs x {} labels, largest score difference after import {worst:e}",
        config["modality"],
        config["backbone"],
        if config["finetuned_backbone"] == true {
            "fine-tuned"
        } else {
            "head-only"
        },
        archive.len(),
        before.len(),
        before[0].len()
    );
    // Downloaded again from where it was imported: the same card and backbone.
    let (_, _, again) = to.download_model(id).await;
    assert_eq!(entry(&again, "MODEL_CARD.md"), card.as_bytes());
    assert_eq!(
        entry(&again, "backbone/model.safetensors"),
        entry(&archive, "backbone/model.safetensors")
    );
    archive
}

fn text_probe() -> Probe {
    Probe::Texts(vec![
        "the football match and the goal",
        "soup and bread for dinner",
        "storm clouds and wind",
        "a recipe for the team",
    ])
}

fn image_probe(size: u32) -> Probe {
    Probe::Images(vec![
        picture([190, 40, 30], 50, size),
        picture([30, 50, 190], 51, size),
        picture([110, 45, 110], 52, size),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_models_predict_the_same_after_import_into_an_empty_models_folder() {
    let trainer = TestApp::start().await;
    let empty = without_backbones().await;
    let head_only = json!({"finetune_epochs": 0});
    let text = train(&trainer, "topics.csv", topic_csv(8).as_bytes(), head_only).await;
    let archive = round_trip(&trainer, &empty, &text, &text_probe()).await;
    let card = String::from_utf8(entry(&archive, "MODEL_CARD.md")).unwrap();
    assert!(
        card.contains("`topics.csv`") && card.contains("| sports | 8 |"),
        "{card}"
    );
    assert_eq!(
        entry(&archive, "backbone/tokenizer.json"),
        std::fs::read(trainer.dir.path().join("models/minilm-l6/tokenizer.json")).unwrap()
    );
    // Fine-tuned: the tuned weights are the bundled backbone's.
    let tuned = json!({"finetune_epochs": 2, "head_epochs": 5});
    let image = train(&trainer, "colours.zip", &colour_zip(8, 40), tuned).await;
    let archive = round_trip(&trainer, &empty, &image, &image_probe(40)).await;
    let config: Value = serde_json::from_slice(&entry(&archive, "model.json")).unwrap();
    let card = String::from_utf8(entry(&archive, "MODEL_CARD.md")).unwrap();
    assert!(card.contains("centre-crop 32x32"), "{card}");
    if config["finetuned_backbone"] == true {
        assert!(card.contains("fine-tuned on this dataset"), "{card}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_archive_imports_only_where_its_backbone_is_installed() {
    let trainer = TestApp::start().await;
    let empty = without_backbones().await;
    let hyper = json!({"finetune_epochs": 0});
    let model = train(&trainer, "topics.csv", topic_csv(8).as_bytes(), hyper).await;
    let (_, _, archive) = trainer.download_model(&model).await;
    let files = entries(&archive);
    let old: Vec<_> = files
        .iter()
        .filter(|(n, _)| !n.starts_with("backbone/") && n != "MODEL_CARD.md")
        .cloned()
        .collect();
    let old = zip_of(&old);
    let (status, body) = import(&empty, &old).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "backbone_not_bundled", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"minilm-l6\"") && message.contains("fetch-backbones.sh"),
        "{message}"
    );
    // Where the backbone is installed the old layout still works, and predicts the same.
    let (status, imported) = import(&trainer, &old).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let id = imported["id"].as_str().unwrap();
    let probe = text_probe();
    assert_same(
        &scores(&trainer, &model, &probe).await,
        &scores(&trainer, id, &probe).await,
    );
    // A bundled backbone folder must be whole: no falling back to the models folder.
    let partial: Vec<_> = files
        .iter()
        .filter(|(n, _)| n != "backbone/tokenizer.json")
        .cloned()
        .collect();
    let (status, body) = import(&trainer, &zip_of(&partial)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_model_archive");
    assert!(body.to_string().contains("tokenizer.json"), "{body}");
    // Nothing else may ride along.
    let mut extra = files.clone();
    extra.push(("backbone/../../x".into(), b"x".to_vec()));
    let (status, body) = import(&empty, &zip_of(&extra)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_minilm_model_predicts_the_same_without_the_backbone_installed() {
    let Some(models) = real_models_dir() else {
        return;
    };
    let trainer = with_real_backbones(models.clone()).await;
    let empty = without_backbones().await;
    let hyper = json!({"finetune_epochs": 0});
    let model = train(&trainer, "topics.csv", topic_csv(8).as_bytes(), hyper).await;
    let archive = round_trip(&trainer, &empty, &model, &text_probe()).await;
    assert_eq!(
        entry(&archive, "backbone/tokenizer.json"),
        std::fs::read(models.join("minilm-l6/tokenizer.json")).unwrap()
    );
    assert_eq!(
        entry(&archive, "backbone/model.safetensors"),
        std::fs::read(models.join("minilm-l6/model.safetensors")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_efficientnet_model_predicts_the_same_without_the_backbone_installed() {
    let Some(models) = real_models_dir() else {
        return;
    };
    let trainer = with_real_backbones(models).await;
    let empty = without_backbones().await;
    let hyper = json!({"finetune_epochs": 0});
    let model = train(&trainer, "colours.zip", &colour_zip(6, 64), hyper).await;
    let archive = round_trip(&trainer, &empty, &model, &image_probe(64)).await;
    // The preprocessing travels as each network's input resolution: a composite (the
    // default head on frozen features where Lite2 is installed) keeps one per part, and
    // images are decoded down to the largest.
    let bundled: Value = serde_json::from_slice(&entry(&archive, "backbone/config.json")).unwrap();
    let config: Value = serde_json::from_slice(&entry(&archive, "model.json")).unwrap();
    let resolutions: Vec<u64> = match bundled["parts"].as_array() {
        Some(parts) => parts
            .iter()
            .map(|p| p["config"]["resolution"].as_u64().unwrap())
            .collect(),
        None => vec![bundled["resolution"].as_u64().unwrap()],
    };
    assert_eq!(
        resolutions.iter().max().copied(),
        config["resolution"].as_u64(),
        "{bundled}"
    );
    assert!(resolutions.iter().all(|&r| r >= 224), "{bundled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_backbone_travels_whole_and_is_never_tuned() {
    let trainer = TestApp::start().await;
    let lite2 = trainer.dir.path().join("models/efficientnet-lite2");
    warmstart::backbones::efficientnet::write_tiny_efficientnet(&lite2, 11).unwrap();
    let empty = without_backbones().await;
    // A default job on a few images per class: the head on both parts' frozen features.
    let model = train(&trainer, "colours.zip", &colour_zip(6, 40), json!({})).await;
    let archive = round_trip(&trainer, &empty, &model, &image_probe(40)).await;
    let config: Value = serde_json::from_slice(&entry(&archive, "model.json")).unwrap();
    assert_eq!(config["backbone"], "efficientnet-lite0+lite2", "{config}");
    let bundled: Value = serde_json::from_slice(&entry(&archive, "backbone/config.json")).unwrap();
    let parts: Vec<&str> = bundled["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts,
        ["efficientnet-lite0", "efficientnet-lite2"],
        "{bundled}"
    );
    // Asking to fine-tune it is refused before anything is queued, naming the fix.
    let ds = trainer
        .upload_dataset("colours.zip", &colour_zip(6, 40))
        .await;
    let (status, body) = trainer
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "backbone": "efficientnet-lite0+lite2",
                   "hyperparameters": {"finetune_epochs": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_hyperparameter", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be fine-tuned"), "{message}");
}

/// Texts whose number is a sum of word weights.
fn rating_csv(n: usize) -> String {
    let words = [("good", 2.0), ("bad", -2.0), ("fine", 0.5), ("great", 3.0)];
    let mut out = String::from("text,label\n");
    for i in 0..n {
        let (a, wa) = words[i % 4];
        let (b, wb) = words[(i * 3 + 1) % 4];
        out.push_str(&format!("\"{a} and {b} item {i}\",{:.2}\n", wa + wb));
    }
    out
}

async fn values(app: &TestApp, model: &str, texts: &[&str]) -> Vec<f64> {
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/predict"),
            json!({ "inputs": texts }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_model_exports_its_task_metrics_and_predicts_the_same_after_import() {
    let trainer = TestApp::start().await;
    let empty = without_backbones().await;
    let model = train(
        &trainer,
        "ratings.csv",
        rating_csv(40).as_bytes(),
        json!({}),
    )
    .await;
    let (status, _, archive) = trainer.download_model(&model).await;
    assert_eq!(status, StatusCode::OK);
    let archive = archive.to_vec();
    let card = String::from_utf8(entry(&archive, "MODEL_CARD.md")).unwrap();
    for needle in [
        "A text regression model",
        "## Held-out metrics",
        "MAE ",
        "No-transfer baseline (ridge regression on TF-IDF",
        "Always predicting the training mean",
        "Kept candidate",
        "standard error",
    ] {
        assert!(card.contains(needle), "{needle} missing:\n{card}");
    }
    assert!(!card.contains("## Calibration"), "{card}");
    let config: Value = serde_json::from_slice(&entry(&archive, "model.json")).unwrap();
    let metrics: Value = serde_json::from_slice(&entry(&archive, "metrics.json")).unwrap();
    assert_eq!(
        config["finetuned_backbone"] == true,
        metrics["selected"] == "finetuned",
        "{config} {metrics}"
    );
    let (status, imported) = import(&empty, &archive).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let texts = ["good and great", "bad and fine"];
    let before = values(&trainer, &model, &texts).await;
    let after = values(&empty, imported["id"].as_str().unwrap(), &texts).await;
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-5, "{before:?} vs {after:?}");
    }
}
