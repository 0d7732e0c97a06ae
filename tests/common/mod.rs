//! Shared test harness: a service on a temp data folder with tiny random-weight backbones
//! of the real architectures, driven through its real router.
#![allow(dead_code)]

pub mod fuzz;
pub mod http;
pub mod postgres;
pub mod s3;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use warmstart::app::App;
use warmstart::config::Config;

pub struct TestApp {
    pub app: Option<App>,
    pub router: Router,
    pub dir: tempfile::TempDir,
    /// API key sent as `Authorization: Bearer` with every request, when set.
    pub key: Option<String>,
}

/// Writes tiny backbones into `models`.
pub fn write_tiny_models(models: &Path) {
    warmstart::backbones::bert::write_tiny_bert(&models.join("minilm-l6"), 7).expect("tiny bert");
    warmstart::backbones::efficientnet::write_tiny_efficientnet(
        &models.join("efficientnet-lite0"),
        7,
    )
    .expect("tiny efficientnet");
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_models(&dir.path().join("models"));
        Self::start_in(dir, tweak).await
    }

    /// Starts (or restarts) a service on an existing folder.
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = Config::new(dir.path().join("data"), dir.path().join("models"));
        tweak(&mut config);
        let app = App::build(config).await.expect("app builds");
        let router = app.router();
        TestApp {
            app: Some(app),
            router,
            dir,
            key: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the workers and hands back the folder (to restart on it).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        self.dir
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, value) = self.send_full(req).await;
        (status, value)
    }

    /// Like [`TestApp::send`], with the response headers.
    pub async fn send_full(
        &self,
        mut req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        if let Some(key) = &self.key {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {key}").parse().unwrap(),
            );
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, value)
    }

    /// `GET /v1/models/{id}/download`: the status, the headers and the archive's bytes.
    pub async fn download_model(
        &self,
        id: &str,
    ) -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
        let mut req = Request::get(format!("/v1/models/{id}/download"))
            .body(Body::empty())
            .unwrap();
        if let Some(key) = &self.key {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {key}").parse().unwrap(),
            );
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_json(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Multipart upload of one `file` part (plus optional text parts).
    pub async fn upload(
        &self,
        uri: &str,
        file_name: &str,
        bytes: &[u8],
        fields: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let (content_type, body) = multipart(&[("file", Some(file_name), bytes)], fields);
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    pub async fn upload_dataset(&self, file_name: &str, bytes: &[u8]) -> Value {
        let (status, body) = self.upload("/v1/datasets", file_name, bytes, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Polls a job until it reaches a terminal status.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            assert!(
                start.elapsed() < timeout,
                "job did not finish in {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every item of a list (`/v1/datasets`, ...), newest first, read page by page.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let (status, page) = self.get(&format!("{path}?limit=100{after}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            if page["has_more"] != true {
                return all;
            }
            after = format!("&after={}", page["last_id"].as_str().unwrap());
        }
    }

    /// Every event of a job, oldest first (the API lists them newest first).
    pub async fn events(&self, job_id: &str) -> Vec<Value> {
        let mut all = self.list_all(&format!("/v1/jobs/{job_id}/events")).await;
        all.reverse();
        all
    }

    /// Uploads a dataset, trains with the given request fields (besides `dataset_id`),
    /// waits for success.
    pub async fn train(&self, csv: &str, mut request: Value) -> (Value, Value) {
        let ds = self.upload_dataset("data.csv", csv.as_bytes()).await;
        request["dataset_id"] = ds["id"].clone();
        (ds, self.run_job(request).await)
    }

    /// Starts a job with this request, waits for success, returns the finished job.
    pub async fn run_job(&self, request: Value) -> Value {
        let (status, job) = self.post_json("/v1/jobs", request).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        let job = self
            .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        job
    }

    /// The messages of a job's log events, oldest first.
    pub async fn log_messages(&self, job_id: &str) -> Vec<String> {
        self.events(job_id)
            .await
            .iter()
            .filter(|e| e["kind"] == "log")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }
}

/// Builds a multipart/form-data body.
pub fn multipart(
    files: &[(&str, Option<&str>, &[u8])],
    fields: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let boundary = "warmstart-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, file_name, bytes) in files {
        let disposition = match file_name {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A small separable text dataset: `per_class` examples of each of three topics.
pub fn topic_csv(per_class: usize) -> String {
    let topics = [
        (
            "sports",
            ["football", "goal", "match", "team", "score", "player"],
        ),
        (
            "food",
            ["pasta", "recipe", "cook", "dinner", "bread", "soup"],
        ),
        (
            "weather",
            ["rain", "sunny", "storm", "cloud", "wind", "snow"],
        ),
    ];
    let mut out = String::from("text,label\n");
    for (label, words) in topics {
        for i in 0..per_class {
            let a = words[i % words.len()];
            let b = words[(i * 7 + 3) % words.len()];
            out.push_str(&format!("\"the {a} and the {b}, case {i}\",{label}\n"));
        }
    }
    out
}

/// The real backbones' folder, or `None` (skip) outside CI when they are not fetched.
pub fn real_models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    if dir.join("minilm-l6").join("model.safetensors").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "the real backbones are missing from {}; run scripts/fetch-backbones.sh",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: real backbones not found in {} (run scripts/fetch-backbones.sh)",
        dir.display()
    );
    None
}

/// Multinomial logistic regression with L2 (scikit-learn's default objective, C = 1),
/// fitted by full-batch gradient descent. Returns the predicted class of each test row.
pub fn logistic_regression(
    train: &[Vec<f32>],
    y: &[usize],
    classes: usize,
    test: &[Vec<f32>],
) -> Vec<usize> {
    let d = train[0].len();
    let n = train.len() as f64;
    let mut w = vec![vec![0.0f64; d]; classes];
    let mut b = vec![0.0f64; classes];
    let logits = |w: &[Vec<f64>], b: &[f64], x: &[f32]| -> Vec<f64> {
        (0..classes)
            .map(|c| {
                b[c] + w[c]
                    .iter()
                    .zip(x)
                    .map(|(wi, xi)| wi * *xi as f64)
                    .sum::<f64>()
            })
            .collect()
    };
    for _ in 0..3000 {
        let mut gw = vec![vec![0.0f64; d]; classes];
        let mut gb = vec![0.0f64; classes];
        for (x, &t) in train.iter().zip(y) {
            let z = logits(&w, &b, x);
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..classes {
                let g = e[c] / s - (c == t) as u8 as f64;
                gb[c] += g / n;
                for (gwi, xi) in gw[c].iter_mut().zip(x) {
                    *gwi += g * *xi as f64 / n;
                }
            }
        }
        for c in 0..classes {
            for (wi, gwi) in w[c].iter_mut().zip(&gw[c]) {
                // Gradient of mean CE + ||w||² / (2 C n) with C = 1.
                *wi -= 0.5 * (gwi + *wi / n);
            }
            b[c] -= 0.5 * gb[c];
        }
    }
    test.iter()
        .map(|x| {
            let z = logits(&w, &b, x);
            (0..classes).max_by(|&i, &j| z[i].total_cmp(&z[j])).unwrap()
        })
        .collect()
}

/// The test images folder (scripts/fetch-test-data.sh), or `None` (skip) outside CI when
/// they are not fetched.
pub fn test_data_dir(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("WARMSTART_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-data"));
    if dir.join(file).is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "test image {file} is missing from {}; run scripts/fetch-test-data.sh",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: test images not found in {} (run scripts/fetch-test-data.sh)",
        dir.display()
    );
    None
}
