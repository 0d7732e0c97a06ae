//! The command-line client: `warmstart datasets|jobs|predict|models …` against a running
//! Warmstart over its public HTTP API only (never its data folder), so it works the same
//! against a server on this machine or another.
//!
//! Every command takes `--url` (`WARMSTART_URL`, default `http://127.0.0.1:8080`),
//! `--api-key` (`WARMSTART_API_KEY`) and `--json` (print the server's JSON instead of
//! human output). Exit codes, also in the README:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the server answered with an error (its code and message are printed), or another failure |
//! | 2 | usage: bad arguments, or a local file that cannot be read |
//! | 3 | the server is not reachable at the URL |
//! | 4 | the job followed with `--follow` failed or was cancelled |

mod client;
mod commands;
mod follow;
mod output;
mod types;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use client::CliError;

/// Default server address: `warmstart serve`'s default `--listen`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Where the server is and how to talk to it; accepted after any client subcommand.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "WARMSTART_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,

    /// API key, sent as `Authorization: Bearer <key>` (see `warmstart keys create`).
    #[arg(long, env = "WARMSTART_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,

    /// Print the server's JSON responses instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client subcommands, beside `serve` and `keys` in the binary's command list.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Client: upload, list and show datasets on a running server.
    Datasets(DatasetsArgs),
    /// Client: start, follow, show, list and cancel training jobs.
    Jobs(JobsArgs),
    /// Client: predict with a trained model (texts as arguments, or --image files).
    Predict(PredictArgs),
    /// Client: list, show and download trained models.
    Models(ModelsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatasetsArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: DatasetsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DatasetsCommand {
    /// Upload a CSV or JSONL (text) or a ZIP of images (folders named by label).
    Upload {
        /// The file to upload.
        file: PathBuf,
        /// A name for the dataset (defaults to the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List datasets.
    List,
    /// Show one dataset.
    Get { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum JobsCommand {
    /// Start a training job on a dataset.
    Create {
        /// The dataset's id (from `datasets upload` or `datasets list`).
        dataset: String,
        /// A backbone id (see GET /v1/backbones), or `auto`.
        #[arg(long)]
        backbone: Option<String>,
        /// A hyperparameter, as KEY=VALUE (VALUE read as JSON when it parses, e.g.
        /// `finetune_epochs=0`, `augment=false`); repeat for more.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Watch the job live (progress bar from its event stream), then print its metrics;
        /// exits 4 when the job fails or is cancelled.
        #[arg(long)]
        follow: bool,
    },
    /// Show one job (status, stage, progress; metrics once it succeeded).
    Get { id: String },
    /// Watch a job until it ends, like `create --follow`.
    Follow { id: String },
    /// List jobs.
    List,
    /// Cancel a queued or running job.
    Cancel { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// The model's id.
    pub model: String,
    /// Texts to classify (text models).
    pub texts: Vec<String>,
    /// An image to classify (image models); repeat for more.
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// How many labels to show per input.
    #[arg(long)]
    pub top_k: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ModelsCommand {
    /// List models.
    List,
    /// Show one model and its held-out metrics.
    Get { id: String },
    /// Download a model's archive (loadable again with POST /v1/models).
    Download {
        id: String,
        /// Where to write it (default: warmstart-model-<id>.zip in the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs a client command; prints its output or its error and returns the exit code.
pub async fn run(command: ClientCommand) -> i32 {
    match commands::dispatch(command).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
