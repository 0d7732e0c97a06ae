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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the training workers.
    Serve(Config),
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

    /// Secret for signing job webhooks (HMAC-SHA256 in `X-Warmstart-Signature`).
    #[arg(long, env = "WARMSTART_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Directory of the web UI served at `/`.
    #[arg(long, env = "WARMSTART_STATIC_DIR", default_value = "./static")]
    pub static_dir: PathBuf,
}

impl Config {
    /// A configuration with every default, rooted at `data_dir` and `models_dir` (for tests
    /// and embedding).
    pub fn new(data_dir: impl Into<PathBuf>, models_dir: impl Into<PathBuf>) -> Self {
        let cli = Cli::parse_from(["warmstart", "serve"]);
        let Command::Serve(mut config) = cli.command;
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
        Ok(())
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_mb * 1024 * 1024
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
