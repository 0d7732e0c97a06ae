//! The job queue: jobs are database rows with explicit statuses
//! (`queued → running → succeeded | failed | cancelled`), changed only by [`queue`] and
//! [`lease`]; dedicated worker threads ([`worker`]), in this process or on other hosts
//! sharing the database, claim queued jobs atomically under a lease, run the training
//! recipe, and report progress as events that are stored and broadcast for live streams.

pub mod failure;
pub mod lease;
pub mod queue;
pub mod submit;
pub mod webhook;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::train::{Hyperparameters, ValidationSpec};

pub use queue::{CancelOutcome, Queue};
pub use worker::Workers;

/// A job as submitted (`POST /v1/jobs`), stored verbatim on the job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub dataset_id: String,
    #[serde(default = "auto")]
    pub backbone: String,
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,
    #[serde(default)]
    pub seed: u64,
    /// Caps training time, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<u64>,
    /// Receives the job's JSON when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

fn auto() -> String {
    "auto".into()
}

/// Attempts after which a job that keeps dying with the process is failed, not re-queued.
pub const MAX_ATTEMPTS: u32 = 3;
