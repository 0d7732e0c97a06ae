//! The one place configuration comes from: command-line flags, each also an env var.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "warmstart",
    version,
    about = "Transfer learning on small datasets, as a service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the `Serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the training workers.
    Serve(Config),
    /// Manage API keys (create, list, revoke).
    Keys(KeysArgs),
    /// The client commands (`datasets`, `jobs`, `predict`, `models`), over HTTP.
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

/// `warmstart keys …`: API keys, stored hashed in the data folder's database.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Folder holding the SQLite database (the same as `serve --data-dir`).
    #[arg(
        long,
        env = "WARMSTART_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// The database (the same as `serve --database-url`); default: the data folder's SQLite file.
    #[arg(
        long,
        env = "WARMSTART_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        /// A name to recognise the key by in `keys list`.
        #[arg(long)]
        name: String,
        /// The tenant that owns what requests with this key create; defaults to the name,
        /// so a replacement key with the same name sees the same datasets, jobs and models.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List keys (id, name, tenant, created, revoked); never prints the keys themselves.
    List,
    /// Revoke a key by its id (as shown by `keys list`) or by the key itself.
    Revoke {
        /// Key id or full key.
        id: String,
    },
}

/// What one `warmstart serve` process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API only: jobs are queued for workers elsewhere.
    Api,
    /// Training workers only; the port answers `/healthz`, `/readyz` and `/metrics`.
    Worker,
    /// Both (the single-host default).
    All,
}

impl Role {
    pub fn runs_api(self) -> bool {
        self != Role::Worker
    }

    pub fn runs_workers(self) -> bool {
        self != Role::Api
    }
}

/// Everything the service needs to run. Validated once at start-up by [`Config::validate`].
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WARMSTART_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Folder for the SQLite database and all artefacts (uploads, trained models).
    #[arg(long, env = "WARMSTART_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The database: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (shared
    /// by several hosts). Default: `warmstart.db` in the data folder.
    #[arg(long, env = "WARMSTART_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// `api` (HTTP only), `worker` (training only) or `all` (both).
    #[arg(long, env = "WARMSTART_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// The name this process's workers record on the jobs they run (default: host name and
    /// process id).
    #[arg(long, env = "WARMSTART_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Seconds a worker holds a running job without a heartbeat; a job whose lease runs out
    /// (its worker died) is queued again by any live process.
    #[arg(long, env = "WARMSTART_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// Seconds between a worker's heartbeats (each renews its lease and notices a cancel
    /// made on another host); also how often expired leases are looked for.
    #[arg(long, env = "WARMSTART_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// A shared store that uploads and trained models are mirrored to, so that every host
    /// can use them: `s3://bucket/prefix` (credentials, region and endpoint from the usual
    /// `AWS_*` variables) or `file:///shared/folder`. Unset: the data folder only.
    #[arg(long, env = "WARMSTART_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,

    /// Folder holding the pre-trained backbones (see scripts/fetch-backbones.sh).
    #[arg(long, env = "WARMSTART_MODELS_DIR", default_value = "./models")]
    pub models_dir: PathBuf,

    /// Number of training worker threads (each runs one job at a time on the CPU).
    #[arg(long, env = "WARMSTART_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Largest accepted upload, in megabytes.
    #[arg(long, env = "WARMSTART_MAX_UPLOAD_MB", default_value_t = 512)]
    pub max_upload_mb: u64,

    /// Largest accepted JSON request body (predict inputs, job requests), in megabytes.
    #[arg(long, env = "WARMSTART_MAX_BODY_MB", default_value_t = 32)]
    pub max_body_mb: u64,

    /// Most examples a dataset may hold.
    #[arg(long, env = "WARMSTART_MAX_EXAMPLES", default_value_t = 100_000)]
    pub max_examples: usize,

    /// Largest accepted image, in pixels (width × height); refuses decompression bombs.
    #[arg(long, env = "WARMSTART_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Most entries an uploaded ZIP may hold.
    #[arg(long, env = "WARMSTART_MAX_ZIP_ENTRIES", default_value_t = 100_000)]
    pub max_zip_entries: usize,

    /// Largest total uncompressed size of an uploaded ZIP, in megabytes.
    #[arg(long, env = "WARMSTART_MAX_UNZIPPED_MB", default_value_t = 4096)]
    pub max_unzipped_mb: u64,

    /// Longest accepted text (characters) in a dataset row or a predict input.
    #[arg(long, env = "WARMSTART_MAX_TEXT_CHARS", default_value_t = 20_000)]
    pub max_text_chars: usize,

    /// Most trained models kept loaded in memory for prediction.
    #[arg(long, env = "WARMSTART_MODEL_CACHE", default_value_t = 4)]
    pub model_cache: usize,

    /// Predict requests per second allowed per API key (token bucket refill); 0 = no limit.
    #[arg(long, env = "WARMSTART_PREDICT_RATE", default_value_t = 50.0)]
    pub predict_rate: f64,

    /// Predict requests a key may send in a burst above the rate.
    #[arg(long, env = "WARMSTART_PREDICT_BURST", default_value_t = 100)]
    pub predict_burst: u32,

    /// Uploads (datasets and model archives) per minute allowed per API key; 0 = no limit.
    #[arg(long, env = "WARMSTART_UPLOAD_RATE", default_value_t = 60.0)]
    pub upload_rate: f64,

    /// Uploads a key may send in a burst above the rate.
    #[arg(long, env = "WARMSTART_UPLOAD_BURST", default_value_t = 20)]
    pub upload_burst: u32,

    /// Most inputs that concurrent predict requests to one model share in one forward pass
    /// (dynamic batching); a request with this many inputs or more runs alone.
    #[arg(long, env = "WARMSTART_PREDICT_MAX_BATCH", default_value_t = 32)]
    pub predict_max_batch: usize,

    /// Milliseconds the first small predict request waits for others to batch with it.
    #[arg(long, env = "WARMSTART_PREDICT_BATCH_WAIT_MS", default_value_t = 2)]
    pub predict_batch_wait_ms: u64,

    /// Predict requests admitted at once (computing or waiting); beyond it → 503 overloaded.
    #[arg(long, env = "WARMSTART_PREDICT_QUEUE", default_value_t = 64)]
    pub predict_queue: usize,

    /// Memory, in megabytes, that uploads and predict requests in flight may hold together
    /// (bodies, parsed rows, decoded images); a request beyond it → 503 overloaded.
    #[arg(long, env = "WARMSTART_MAX_INFLIGHT_MB", default_value_t = 2048)]
    pub max_inflight_mb: u64,

    /// Seconds a client has to send a request's headers (from connecting, or from the
    /// request's first byte); a connection that takes longer is closed.
    #[arg(long, env = "WARMSTART_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a kept-alive connection may sit idle between requests before it is closed.
    #[arg(long, env = "WARMSTART_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 30)]
    pub keep_alive_timeout_secs: u64,

    /// Seconds the server waits for the next bytes of a request body before answering 408
    /// and closing the connection; also the window --min-body-bytes-per-sec is measured over.
    #[arg(long, env = "WARMSTART_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Least average rate, in bytes per second, at which a request body must arrive over
    /// each --body-timeout-secs of waiting for it (refuses trickling uploads); 0 = no minimum.
    #[arg(long, env = "WARMSTART_MIN_BODY_BYTES_PER_SEC", default_value_t = 1024)]
    pub min_body_bytes_per_sec: u64,

    /// On SIGTERM, seconds to let in-flight requests finish before closing them.
    #[arg(long, env = "WARMSTART_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Secret for signing job webhooks (HMAC-SHA256 in `X-Warmstart-Signature`).
    #[arg(long, env = "WARMSTART_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Allow job webhooks to loopback, private and link-local addresses (internal services).
    #[arg(long, env = "WARMSTART_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,

    /// Directory of the web UI served at `/`.
    #[arg(long, env = "WARMSTART_STATIC_DIR", default_value = "./static")]
    pub static_dir: PathBuf,
}

impl Config {
    /// A configuration with every default, rooted at `data_dir` and `models_dir` (for tests
    /// and embedding).
    pub fn new(data_dir: impl Into<PathBuf>, models_dir: impl Into<PathBuf>) -> Self {
        let cli = Cli::parse_from(["warmstart", "serve"]);
        let Command::Serve(mut config) = cli.command else {
            unreachable!("parsed `serve`")
        };
        config.data_dir = data_dir.into();
        config.models_dir = models_dir.into();
        config
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.max_upload_mb == 0 {
            return Err("--max-upload-mb must be at least 1".into());
        }
        if self.model_cache == 0 {
            return Err("--model-cache must be at least 1".into());
        }
        if self.predict_max_batch == 0 {
            return Err("--predict-max-batch must be at least 1".into());
        }
        if self.predict_queue == 0 {
            return Err("--predict-queue must be at least 1".into());
        }
        for (flag, rate) in [
            ("--predict-rate", self.predict_rate),
            ("--upload-rate", self.upload_rate),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!("{flag} must be a number ≥ 0 (0 = no limit)"));
            }
        }
        if self.max_inflight_mb == 0 {
            return Err("--max-inflight-mb must be at least 1".into());
        }
        for (flag, secs) in [
            ("--header-timeout-secs", self.header_timeout_secs),
            ("--keep-alive-timeout-secs", self.keep_alive_timeout_secs),
            ("--body-timeout-secs", self.body_timeout_secs),
        ] {
            if secs == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs >= self.lease_secs {
            return Err(
                "--heartbeat-secs must be at least 1 and less than --lease-secs (a third of it is usual)"
                    .into(),
            );
        }
        if self.predict_burst == 0 || self.upload_burst == 0 {
            return Err("--predict-burst and --upload-burst must be at least 1".into());
        }
        Ok(())
    }

    /// The database URL: `--database-url`, or the data folder's SQLite file.
    pub fn database_url(&self) -> String {
        database_url(self.database_url.as_deref(), &self.data_dir)
    }

    /// Whether other processes may write to the same database (PostgreSQL, or a role that
    /// leaves the rest to another process): live job events then come from the table, not
    /// only from this process's workers.
    pub fn shares_database(&self) -> bool {
        self.role != Role::All || !self.database_url().starts_with("sqlite:")
    }

    /// This process's worker name: `--worker-id`, or host name and process id.
    pub fn worker_name(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_mb * 1024 * 1024
    }

    /// The connection timeouts (`--header-timeout-secs`, `--keep-alive-timeout-secs`).
    pub fn conn_timeouts(&self) -> crate::http::conn::ConnTimeouts {
        crate::http::conn::ConnTimeouts {
            header: std::time::Duration::from_secs(self.header_timeout_secs),
            keep_alive: std::time::Duration::from_secs(self.keep_alive_timeout_secs),
        }
    }

    /// The request body limits (`--body-timeout-secs`, `--min-body-bytes-per-sec`).
    pub fn body_timeouts(&self) -> crate::http::body_timeout::BodyTimeouts {
        crate::http::body_timeout::BodyTimeouts {
            stall: std::time::Duration::from_secs(self.body_timeout_secs),
            min_bytes_per_sec: self.min_body_bytes_per_sec,
        }
    }

    /// Whether the service listens where other machines can reach it (then every `/v1`
    /// route requires an API key, even before one exists).
    pub fn is_exposed(&self) -> bool {
        !self.listen.ip().is_loopback()
    }
}

/// `url`, or the SQLite file in `data_dir` when none is given.
pub fn database_url(url: Option<&str>, data_dir: &std::path::Path) -> String {
    match url {
        Some(url) => url.to_string(),
        None => crate::store::db::sqlite_url(&data_dir.join("warmstart.db")),
    }
}

/// On small machines candle's element-wise thread pool spin-waits against the training and
/// request threads for the same cores (measured here: a fine-tuning step ran twice as fast
/// with it off), so unless the operator set `CANDLE_NUM_THREADS`, small machines run
/// element-wise ops on the calling thread; matrix products stay multi-threaded.
/// Call before any other thread starts.
pub fn tune_thread_pools() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && cores <= 4 {
        // SAFETY: called at the top of `main`, before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
