//! The real `warmstart` binary as a child process for crash, shutdown and fault tests:
//! started on 127.0.0.1 port 0 (the address is read from its log), stopped with SIGKILL or
//! SIGTERM. Its output is collected for failure messages.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::http::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_warmstart");

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    /// Spawn to "listening" (start-up, including recovery).
    pub started_in: Duration,
    log: Arc<Mutex<String>>,
}

/// `warmstart serve` on `root/data` with the backbones in `root/models`, on a free port.
pub fn serve_command(root: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", root.join("data").display()))
        .arg(format!("--models-dir={}", root.join("models").display()))
        .args(extra);
    cmd
}

impl Server {
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Server::spawn(serve_command(root, extra), root)
    }

    /// Spawns a prepared command (possibly wrapped, e.g. in `unshare`) and waits for it to
    /// listen.
    pub fn spawn(mut cmd: Command, root: &Path) -> Server {
        let began = Instant::now();
        let mut child = cmd
            .env("RUST_LOG", "warmstart=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warmstart");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("listening on http://") {
                        let addr = &line[at + "listening on http://".len()..];
                        let addr = addr.split_whitespace().next().unwrap_or("");
                        if let Ok(addr) = addr.parse::<SocketAddr>() {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "warmstart did not start listening; its output:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            root: root.to_path_buf(),
            started_in: began.elapsed(),
            log,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().unwrap();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        self.log()
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (up to `timeout`) for a clean exit; returns the exit status and
    /// how long it took.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration, String) {
        let start = Instant::now();
        self.sigterm();
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "warmstart did not exit within {timeout:?} of SIGTERM; its output:\n{}",
                self.log()
            )
        });
        let took = start.elapsed();
        self.child = None;
        std::thread::sleep(Duration::from_millis(50));
        (status, took, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temp root with tiny backbones in `models/`, for [`Server::start`].
pub fn temp_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    super::write_tiny_models(&dir.path().join("models"));
    dir
}

/// Every file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 of every file under `dir` (to show artefacts are untouched).
pub fn digest_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::{Digest, Sha256};
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

/// `PRAGMA integrity_check` on the data folder's database (opened read-only from outside
/// the service), returning its answer ("ok" when sound).
pub async fn integrity_check(data_dir: &Path) -> String {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("warmstart.db"))
        .connect()
        .await
        .expect("open the database");
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("integrity_check");
    rows.join("; ")
}
