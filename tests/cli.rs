//! The command-line client against a real server: the `warmstart` binary serves on
//! 127.0.0.1 with tiny backbones, and the same binary, run as the client, goes through
//! upload → jobs create --follow → predict → models list/download, then the error cases
//! and their exit codes (server error 1, usage 2, unreachable 3, job cancelled 4).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::server::{BIN, Server, temp_root};
use common::topic_csv;
use serde_json::Value;

/// Runs the client with `WARMSTART_URL` pointing at `server`.
fn client(server: &Server, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("WARMSTART_URL", format!("http://{}", server.addr))
        .env_remove("WARMSTART_API_KEY")
        .args(args)
        .output()
        .expect("run the client")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs, asserts the exit code, returns stdout and stderr.
fn expect(server: &Server, args: &[&str], code: i32) -> (String, String) {
    let out = client(server, args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "warmstart {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

#[test]
fn the_client_trains_predicts_and_downloads_through_the_api() {
    let root = temp_root();
    let server = Server::start(root.path(), &[]);
    let csv = write(root.path(), "topics.csv", &topic_csv(6));

    let (out, _) = expect(
        &server,
        &["datasets", "upload", &csv, "--name", "topics"],
        0,
    );
    assert!(out.contains("18 examples of text, 3 labels"), "{out}");
    let (out, _) = expect(&server, &["datasets", "list", "--json"], 0);
    let dataset = json(&out)[0]["id"].as_str().unwrap().to_string();
    let (out, _) = expect(&server, &["datasets", "list"], 0);
    assert!(out.contains(&dataset) && out.contains("topics"), "{out}");

    // --follow reads the event stream (its stages are printed when stderr is not a
    // terminal), then prints the finished job and its metrics table.
    let (out, err) = expect(
        &server,
        &[
            "jobs",
            "create",
            &dataset,
            "--param",
            "finetune_epochs=0",
            "--follow",
        ],
        0,
    );
    assert!(err.contains("stage training_head"), "{err}");
    assert!(err.contains("succeeded"), "{err}");
    assert!(
        out.contains("succeeded") && out.contains("accuracy"),
        "{out}"
    );
    assert!(out.contains("PRECISION") && out.contains("sports"), "{out}");

    let (out, _) = expect(&server, &["models", "list", "--json"], 0);
    let model = json(&out)[0]["id"].as_str().unwrap().to_string();
    let (out, _) = expect(&server, &["models", "list"], 0);
    assert!(out.contains(&model) && out.contains("minilm-l6"), "{out}");
    let (out, _) = expect(&server, &["models", "get", &model], 0);
    assert!(out.contains("labels: food, sports, weather"), "{out}");

    let (out, _) = expect(
        &server,
        &["predict", &model, "the goal and the match", "rain and snow"],
        0,
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("\"the goal and the match\" → "), "{out}");
    let (out, _) = expect(
        &server,
        &["predict", &model, "soup", "--top-k", "2", "--json"],
        0,
    );
    let predictions = json(&out)["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions[0]["top_k"].as_array().unwrap().len(), 2);

    let archive = root.path().join("model.zip");
    let (out, _) = expect(
        &server,
        &[
            "models",
            "download",
            &model,
            "-o",
            archive.to_str().unwrap(),
        ],
        0,
    );
    assert!(out.contains("saved model"), "{out}");
    let bytes = std::fs::read(&archive).unwrap();
    assert!(bytes.starts_with(b"PK") && bytes.len() > 1000);
}

#[test]
fn client_errors_have_messages_and_exit_codes() {
    let root = temp_root();
    let server = Server::start(root.path(), &[]);

    // The server's error code and message (exit 1).
    let bad = write(root.path(), "bad.csv", "text,category\na,b\n");
    let (_, err) = expect(&server, &["datasets", "upload", &bad], 1);
    assert!(err.contains("missing_columns (HTTP 422)"), "{err}");
    assert!(err.contains("`label`"), "{err}");
    let (_, err) = expect(&server, &["jobs", "get", "nope"], 1);
    assert!(err.contains("job_not_found (HTTP 404)"), "{err}");

    // Usage (exit 2): a missing file, bad flags, nothing to predict.
    let (_, err) = expect(&server, &["datasets", "upload", "/no/such/file.csv"], 2);
    assert!(err.contains("cannot read /no/such/file.csv"), "{err}");
    expect(&server, &["jobs", "create"], 2);
    let (_, err) = expect(&server, &["predict", "some-model"], 2);
    assert!(err.contains("nothing to predict"), "{err}");

    // Unreachable (exit 3): --url wins over WARMSTART_URL.
    let (_, err) = expect(
        &server,
        &["models", "list", "--url", "http://127.0.0.1:9"],
        3,
    );
    assert!(
        err.contains("isn't reachable at http://127.0.0.1:9"),
        "{err}"
    );

    // A followed job that does not succeed (exit 4).
    let csv = write(root.path(), "topics.csv", &topic_csv(20));
    let (out, _) = expect(&server, &["datasets", "upload", &csv, "--json"], 0);
    let dataset = json(&out)["id"].as_str().unwrap().to_string();
    let slow = [
        "jobs",
        "create",
        &dataset,
        "--param",
        "finetune_epochs=500",
        "--param",
        "early_stopping_patience=0",
        "--json",
    ];
    let (out, _) = expect(&server, &slow, 0);
    let job = json(&out)["id"].as_str().unwrap().to_string();
    expect(&server, &["jobs", "cancel", &job], 0);
    let (out, err) = expect(&server, &["jobs", "follow", &job], 4);
    assert!(out.contains("cancelled"), "{out}");
    assert!(err.contains(&format!("job {job} cancelled")), "{err}");
}

/// With keys on the server, the client sends `--api-key` or `WARMSTART_API_KEY`; without
/// one it gets the server's 401 (exit 1).
#[test]
fn the_client_sends_the_api_key() {
    let root = temp_root();
    let data = format!("--data-dir={}", root.path().join("data").display());
    let created = Command::new(BIN)
        .args(["keys", "create", "--name", "cli", &data])
        .env_remove("WARMSTART_DATA_DIR")
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let key = text(&created.stdout).trim().to_string();
    let server = Server::start(root.path(), &[]);

    let (_, err) = expect(&server, &["datasets", "list"], 1);
    assert!(err.contains("(HTTP 401)"), "{err}");
    expect(&server, &["datasets", "list", "--api-key", &key], 0);
    let out = Command::new(BIN)
        .env("WARMSTART_URL", format!("http://{}", server.addr))
        .env("WARMSTART_API_KEY", &key)
        .args(["models", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&text(&out.stdout)), serde_json::json!([]));
}
