//! Failure paths: an unwritable artefact folder or a full disk while a model is saved fails
//! the job with a clear reason and leaves nothing half-written or referenced; a corrupted
//! model file answers 500 `model_corrupt` (logged) while the service keeps serving.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::server::{BIN, Server, integrity_check, serve_command, temp_root};
use common::{TestApp, topic_csv};
use serde_json::json;

/// Collects the service's log lines (this test binary's global subscriber).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("warmstart=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
    .clone()
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_model_folder_fails_the_job_cleanly_and_the_service_recovers() {
    let app = TestApp::start().await;
    let ds = app.upload_dataset("d.csv", topic_csv(6).as_bytes()).await;
    // The models folder becomes unusable (a plain file where the folder was; this works
    // even as root, where permission bits would not stop a write).
    let models = app.data_dir().join("models");
    std::fs::remove_dir(&models).unwrap();
    std::fs::write(&models, b"not a folder").unwrap();

    let spec = json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 1, "head_epochs": 3}});
    let (_, job) = app.post_json("/v1/jobs", spec.clone()).await;
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "model_save_failed", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not be written") && message.contains("resubmit"),
        "{message}"
    );
    assert!(job["model_id"].is_null());
    let (_, list) = app.get("/v1/models").await;
    assert_eq!(list["data"], json!([]));
    assert!(
        entries(&app.data_dir().join("tmp")).is_empty(),
        "staging left behind"
    );

    // Once the folder is back, the same job succeeds.
    std::fs::remove_file(&models).unwrap();
    std::fs::create_dir(&models).unwrap();
    let (_, job) = app.post_json("/v1/jobs", spec).await;
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(entries(&models), [job["model_id"].as_str().unwrap()]);
    println!("unwritable models folder → job failed: {message}");
}

/// Whether this machine lets us mount a small tmpfs in a private mount namespace.
fn can_mount_tmpfs() -> bool {
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=4k tmpfs /mnt",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_saving_fails_the_job_cleanly() {
    if !can_mount_tmpfs() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must be able to run `unshare --mount` (root) for the disk-full test"
        );
        println!("skipped: cannot mount a tmpfs here (needs root and unshare)");
        return;
    }
    let root = temp_root();
    let data = root.path().join("data");
    let server = Server::start(root.path(), &[]);
    let (status, ds) = server
        .client()
        .upload("/v1/datasets", "d.csv", topic_csv(6).as_bytes())
        .await;
    assert_eq!(status, 201, "{ds}");
    server.terminate(Duration::from_secs(30));

    // The scratch folder, where models are built, is a 16 KiB disk in the service's own
    // mount namespace: the fine-tuned backbone does not fit.
    let serve = serve_command(root.path(), &[]);
    let mut args: Vec<String> = vec![serve.get_program().to_string_lossy().into_owned()];
    args.extend(serve.get_args().map(|a| a.to_string_lossy().into_owned()));
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=16k tmpfs '{}' && exec \"$@\"",
            data.join("tmp").display()
        ))
        .arg("sh")
        .args(&args);
    assert_eq!(args[0], BIN);
    let server = Server::spawn(cmd, root.path());
    let c = server.client();
    let spec = json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 1, "head_epochs": 3}});
    let (_, job) = c.post_json("/v1/jobs", &spec).await;
    let job = c
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "failed", "{job}\n{}", server.log());
    assert_eq!(job["error"]["code"], "model_save_failed", "{job}");
    let message = job["error"]["message"].as_str().unwrap().to_string();
    assert!(job["model_id"].is_null());
    let (_, list) = c.get("/v1/models").await;
    assert_eq!(list["data"], json!([]));
    // Inside the service's namespace, the full scratch disk holds nothing half-written.
    let scratch = std::path::PathBuf::from(format!("/proc/{}/root", server.pid()))
        .join(data.join("tmp").strip_prefix("/").unwrap());
    assert!(entries(&scratch).is_empty(), "{:?}", entries(&scratch));
    assert!(entries(&data.join("models")).is_empty());
    assert!(server.log().contains("saving the model failed"));
    let (status, _, log) = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");

    // With space again, the job succeeds.
    let server = Server::start(root.path(), &[]);
    let c = server.client();
    let (_, job) = c.post_json("/v1/jobs", &spec).await;
    let job = c
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    server.terminate(Duration::from_secs(30));
    assert_eq!(integrity_check(&data).await, "ok");
    println!("full disk while saving → job failed: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_model_answers_model_corrupt_and_the_service_stays_up() {
    let logs = capture_logs();
    let app = TestApp::start().await;
    let (_, good) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let (_, tuned) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 1, "head_epochs": 3}}),
        )
        .await;
    let (_, garbled) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let id = |j: &serde_json::Value| j["model_id"].as_str().unwrap().to_string();
    let models = app.data_dir().join("models");
    // Damage three ways, before any of them is loaded: garbage weights, a truncated
    // fine-tuned backbone, an unreadable model.json.
    std::fs::write(
        models.join(id(&good)).join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{\"x\": garbage}",
    )
    .unwrap();
    let backbone = models.join(id(&tuned)).join("backbone.safetensors");
    let len = std::fs::metadata(&backbone).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&backbone)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::write(
        models.join(id(&garbled)).join("model.json"),
        b"{\"labels\": 3",
    )
    .unwrap();

    let input = json!({"inputs": ["the football match"]});
    for job in [&good, &tuned, &garbled] {
        for _ in 0..2 {
            let (status, body) = app
                .post_json(&format!("/v1/models/{}/predict", id(job)), input.clone())
                .await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            assert_eq!(body["error"]["code"], "model_corrupt", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("retrain")
            );
        }
        // The record is still readable, and so is the rest of the service.
        assert_eq!(
            app.get(&format!("/v1/models/{}", id(job))).await.0,
            StatusCode::OK
        );
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.matches("model files are damaged").count() >= 6,
        "each failure is logged:\n{text}"
    );
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    let (_, fresh) = app
        .train(
            &topic_csv(6),
            json!({"hyperparameters": {"finetune_epochs": 0, "head_epochs": 3}}),
        )
        .await;
    let (status, body) = app
        .post_json(&format!("/v1/models/{}/predict", id(&fresh)), input)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
