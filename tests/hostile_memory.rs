//! Hostile-input suite, part 2: memory. The real binary's peak RSS (`VmHWM`, measured from a
//! baseline taken after warm-up) grows by less than 500 MB for one predict request of twenty
//! 6000x6000 PNGs and for uploads holding a 1 GiB deflate bomb (one, then three at once);
//! and uploads and predicts beyond `--max-inflight-mb` are refused with 503 + Retry-After.
//! `WARMSTART_BIN_UNDER_TEST` runs the RSS tests against another build (to measure before
//! and after a change); the figures are printed.

mod common;

use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::http::Client;
use common::server::{Server, serve_command, temp_root};
use common::{TestApp, multipart};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

const MB: u64 = 1 << 20;

fn command(root: &Path) -> Command {
    let cmd = serve_command(root, &[]);
    match std::env::var_os("WARMSTART_BIN_UNDER_TEST") {
        Some(bin) => {
            let mut other = Command::new(bin);
            other.args(cmd.get_args());
            other
        }
        None => cmd,
    }
}

/// A `/proc/<pid>/status` field, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn peak(server: &Server) -> u64 {
    status_bytes(server.pid(), "VmHWM:")
}

fn encode(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn small(shade: u8, i: u32) -> Vec<u8> {
    encode(&RgbImage::from_fn(24 + i, 24, |x, y| {
        Rgb([shade, (x * 9 + y * 5 + i) as u8, 255 - shade])
    }))
}

fn zip_of(files: &[(String, Vec<u8>)], bomb: Option<(&str, &[u8], u64)>) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), deflate).unwrap();
        zip.write_all(bytes).unwrap();
    }
    if let Some((name, head, zeros)) = bomb {
        zip.start_file(name, deflate).unwrap();
        zip.write_all(head).unwrap();
        let block = vec![0u8; 8 << 20];
        for _ in 0..zeros / block.len() as u64 {
            zip.write_all(&block).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

fn colour_files() -> Vec<(String, Vec<u8>)> {
    (0..6)
        .flat_map(|i| {
            [
                (format!("red/{i}.png"), small(220, i)),
                (format!("blue/{i}.png"), small(30, i)),
            ]
        })
        .collect()
}

async fn predict_files(client: &Client, model: &str, files: &[Vec<u8>]) -> (u16, Value) {
    let parts: Vec<(&str, Option<&str>, &[u8])> = files
        .iter()
        .map(|f| ("file", Some("x.png"), f.as_slice()))
        .collect();
    let (ct, body) = multipart(&parts, &[]);
    let r = client
        .send(
            "POST",
            &format!("/v1/models/{model}/predict"),
            Some(&ct),
            &body,
        )
        .await
        .expect("predict");
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_6000px_images_in_one_predict_add_under_500_mb() {
    let root = temp_root();
    let server = Server::spawn(command(root.path()), root.path());
    let client = server.client();
    let (status, ds) = client
        .upload("/v1/datasets", "c.zip", &zip_of(&colour_files(), None))
        .await;
    assert_eq!(status, 201, "{ds}");
    let (status, job) = client
        .post_json(
            "/v1/jobs",
            &json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let job = client
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let model = job["model_id"].as_str().unwrap();
    let huge = encode(&RgbImage::from_fn(6000, 6000, |x, y| {
        Rgb([
            (x / 250 * 10) as u8,
            (y / 250 * 10) as u8,
            ((x + y) / 500 * 5) as u8,
        ])
    }));
    // Warm-up: the model loaded and used (small images only, so the growth below includes
    // the full-size decoding).
    for files in [vec![small(200, 1)], vec![small(100, 2); 20]] {
        let (status, body) = predict_files(&client, model, &files).await;
        assert_eq!(status, 200, "{body}");
    }
    let baseline = peak(&server);
    let start = std::time::Instant::now();
    let (status, body) = predict_files(&client, model, &vec![huge.clone(); 20]).await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().unwrap().len(), 20);
    let growth = peak(&server).saturating_sub(baseline);
    println!(
        "predict of 20 6000x6000 PNGs ({} KB of request): peak RSS {} MB -> {} MB, growth {} MB, {took:.1?}",
        20 * huge.len() / 1024,
        baseline / MB,
        (baseline + growth) / MB,
        growth / MB
    );
    assert!(growth < 500 * MB, "peak RSS grew by {} MB", growth / MB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_deflate_bomb_upload_adds_under_500_mb_even_three_at_once() {
    let root = temp_root();
    let server = Server::spawn(command(root.path()), root.path());
    let client = server.client();
    let warm = zip_of(&colour_files(), None);
    for _ in 0..2 {
        let (status, body) = client.upload("/v1/datasets", "w.zip", &warm).await;
        assert_eq!(status, 201, "{body}");
    }
    // A real 20x20 PNG followed by 1 GiB of zeros: its header is fine, its size is not.
    let bomb = zip_of(
        &colour_files(),
        Some(("red/bomb.png", &small(99, 0), 1 << 30)),
    );
    println!("bomb ZIP: {} KB holding a 1 GiB entry", bomb.len() / 1024);
    assert!(bomb.len() < 4 << 20);
    let baseline = peak(&server);
    let (status, body) = client.upload("/v1/datasets", "bomb.zip", &bomb).await;
    assert_eq!(status, 201, "{body}");
    let one = peak(&server).saturating_sub(baseline);
    println!(
        "one bomb upload: warnings {}, peak RSS growth {} MB",
        body["warnings"],
        one / MB
    );
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            let (client, bomb) = (client.clone(), bomb.clone());
            tokio::spawn(async move { client.upload("/v1/datasets", "bomb.zip", &bomb).await })
        })
        .collect();
    for u in uploads {
        let (status, body) = u.await.unwrap();
        assert!(status == 201 || status == 503, "{status} {body}");
    }
    let three = peak(&server).saturating_sub(baseline);
    println!(
        "three bomb uploads at once: peak RSS growth {} MB",
        three / MB
    );
    assert!(one < 500 * MB, "one bomb: peak RSS grew by {} MB", one / MB);
    assert!(
        three < 500 * MB,
        "three bombs: peak RSS grew by {} MB",
        three / MB
    );
}

fn big_png(side: u32) -> Vec<u8> {
    encode(&RgbImage::from_fn(side, side, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 7])
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_memory_budget_get_503_with_retry_after() {
    let app = TestApp::start_with(|c| {
        c.max_inflight_mb = 120;
        c.predict_rate = 0.0;
        c.upload_rate = 0.0;
    })
    .await;
    let ds = app
        .upload_dataset("c.zip", &zip_of(&colour_files(), None))
        .await;
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0, "head_epochs": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    let predict = format!("/v1/models/{}/predict", job["model_id"].as_str().unwrap());
    let request = |files: &[Vec<u8>]| {
        let parts: Vec<(&str, Option<&str>, &[u8])> = files
            .iter()
            .map(|f| ("file", Some("x.png"), f.as_slice()))
            .collect();
        let (ct, body) = multipart(&parts, &[]);
        Request::post(predict.clone())
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    // Something else holds most of the budget: an upload and a predict are refused.
    let state = &app.app.as_ref().unwrap().state;
    let held = state.budget.reserve(100 * MB).unwrap();
    let (status, headers, body) = app.send_full(request(&[big_png(3000)])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "2");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WARMSTART_MAX_INFLIGHT_MB")
    );
    let (status, body) = app
        .upload("/v1/datasets", "c.zip", &zip_of(&colour_files(), None), &[])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    drop(held);
    assert_eq!(state.budget.in_use_mb(), 0);

    // Eight at once, each needing ~54 MB to decode its 3000x3000 image: some are served,
    // the others refused at once; none fails otherwise, and the budget is returned.
    let image = big_png(3000);
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let router = app.router.clone();
            let req = request(std::slice::from_ref(&image));
            tokio::spawn(async move {
                let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
                resp.status()
            })
        })
        .collect();
    let mut served = 0;
    let mut refused = 0;
    for s in sends {
        match s.await.unwrap() {
            StatusCode::OK => served += 1,
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    println!(
        "8 concurrent 3000x3000 predicts against a 120 MB budget: {served} served, {refused} refused with 503"
    );
    assert!(
        served >= 1 && refused >= 1,
        "{served} served, {refused} refused"
    );
    assert_eq!(state.budget.in_use_mb(), 0);
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(&format!(
            "warmstart_memory_budget_rejected_total {}",
            refused + 2
        )),
        "{metrics}"
    );
    let (status, body) = app.send(request(&[image])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
