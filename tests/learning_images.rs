//! It learns (images): with the real EfficientNet-Lite0 weights and default settings (the
//! backbone named, everything else automatic), a job
//! on texture patches cut from scikit-image's brick, grass and gravel photos (15 per class,
//! from the top half of each photo) produces a model that, on 10 unseen patches per class
//! from the bottom halves, beats chance clearly and beats the same head trained from scratch
//! on raw pixels. Each patch gets a random brightness and contrast, so average grey level
//! alone does not give the class away.

mod common;
#[path = "data/textures.rs"]
mod textures;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, logistic_regression, real_models_dir, test_data_dir};
use image::GrayImage;
use image::imageops::{self, FilterType};
use serde_json::json;
use textures::TEXTURES;

/// Raw pixels, downscaled to 16×16 and standardised per feature on the training rows.
fn pixel_features(train: &[GrayImage], test: &[GrayImage]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let raw = |imgs: &[GrayImage]| -> Vec<Vec<f32>> {
        imgs.iter()
            .map(|i| {
                imageops::resize(i, 16, 16, FilterType::Triangle)
                    .pixels()
                    .map(|p| p[0] as f32 / 255.0)
                    .collect()
            })
            .collect()
    };
    let (tr, te) = (raw(train), raw(test));
    let d = tr[0].len();
    let n = tr.len() as f32;
    let mean: Vec<f32> = (0..d)
        .map(|j| tr.iter().map(|r| r[j]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..d)
        .map(|j| {
            (tr.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f32>() / n)
                .sqrt()
                .max(1e-3)
        })
        .collect();
    let norm = |rows: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
        rows.into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, v)| (v - mean[j]) / std[j])
                    .collect()
            })
            .collect()
    };
    (norm(tr), norm(te))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite0_job_beats_chance_and_a_from_scratch_pixel_model_on_unseen_patches() {
    let Some(models) = real_models_dir() else {
        return;
    };
    let Some(data) = test_data_dir("gravel.png") else {
        return;
    };
    let (train, test) = textures::patches(&data, 15, 10, 11);
    let archive = textures::zip(&train);
    let train_imgs: Vec<GrayImage> = train.iter().map(|p| p.image.clone()).collect();
    let train_y: Vec<usize> = train.iter().map(|p| p.class).collect();
    let test_imgs: Vec<GrayImage> = test.iter().map(|p| p.image.clone()).collect();
    let test_png: Vec<Vec<u8>> = test.iter().map(|p| p.png.clone()).collect();
    let test_y: Vec<usize> = test.iter().map(|p| p.class).collect();

    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.clone()).await;
    let started = Instant::now();
    let ds = app.upload_dataset("textures.zip", &archive).await;
    assert_eq!(ds["num_examples"], 45, "{ds}");
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "backbone": "efficientnet-lite0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(3600))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let secs = started.elapsed().as_secs_f64();

    let files: Vec<(&str, Option<&str>, &[u8])> = test_png
        .iter()
        .map(|b| ("file", Some("p.png"), b.as_slice()))
        .collect();
    let (ct, body) = common::multipart(&files, &[]);
    let (status, preds) = app
        .send(
            Request::post(format!(
                "/v1/models/{}/predict",
                job["model_id"].as_str().unwrap()
            ))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preds}");
    let preds = preds["predictions"].as_array().unwrap();
    let correct = preds
        .iter()
        .zip(&test_y)
        .filter(|(p, c)| p["label"] == TEXTURES[**c])
        .count();

    let (tr, te) = pixel_features(&train_imgs, &test_imgs);
    let scratch = logistic_regression(&tr, &train_y, TEXTURES.len(), &te);
    let scratch_correct = scratch.iter().zip(&test_y).filter(|(p, c)| p == c).count();

    let n = test_y.len() as f64;
    let (acc, scratch_acc) = (correct as f64 / n, scratch_correct as f64 / n);
    eprintln!(
        "held-out accuracy: transfer {acc:.3} ({} selected), from-scratch pixels {scratch_acc:.3}, chance 0.333; job {secs:.1}s; job baseline {}",
        job["metrics"]["selected"], job["metrics"]["baseline"]
    );
    assert!(
        acc >= 0.7,
        "transfer accuracy {acc} is not clearly above chance"
    );
    assert!(
        acc > scratch_acc,
        "transfer {acc} does not beat the from-scratch pixel model {scratch_acc}"
    );
}
