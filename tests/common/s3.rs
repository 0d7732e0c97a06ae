//! A real S3-compatible server for tests: `s3s-fs` from crates.io on loopback
//! (`.ci/run` installs it; `WARMSTART_TEST_S3S_FS` or `PATH` finds it). Required when
//! `CI=true`; elsewhere the tests that need it skip with a message.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `s3s-fs` server on loopback: `root` holds one folder per bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    root: PathBuf,
    binary: PathBuf,
}

pub const BUCKET: &str = "warmstart-test";

impl S3Server {
    pub fn binary() -> Option<PathBuf> {
        if let Ok(path) = std::env::var("WARMSTART_TEST_S3S_FS") {
            return Some(PathBuf::from(path));
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("s3s-fs"))
                .find(|p| p.is_file())
        })
    }

    pub fn start(binary: PathBuf, root: PathBuf, port: u16) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                "warmstart",
                "--secret-key",
                "warmstart-secret",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let server = S3Server {
            child,
            port,
            root,
            binary,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        *self = S3Server::start(self.binary.clone(), self.root.clone(), self.port);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The access key and secret the server accepts.
pub const ACCESS_KEY: &str = "warmstart";
pub const SECRET_KEY: &str = "warmstart-secret";

impl S3Server {
    /// Starts one in a fresh folder, or `None` (outside CI) when s3s-fs is not installed.
    pub fn start_fresh(root: PathBuf) -> Option<S3Server> {
        let Some(binary) = S3Server::binary() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "s3s-fs is required in CI (.ci/run installs it with cargo install)"
            );
            eprintln!("skipping: s3s-fs not found (cargo install s3s-fs --features binary)");
            return None;
        };
        Some(S3Server::start(binary, root, free_port()))
    }

    /// The `AWS_*` variables a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}
