//! The parts of the API's answers the client shows, as typed structs. They are the client's
//! own (not the server's types): every field it can do without has a default, so a newer
//! server that adds or drops fields still works.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Dataset {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub modality: String,
    #[serde(default)]
    pub num_examples: usize,
    #[serde(default)]
    pub label_counts: BTreeMap<String, usize>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub epoch: u32,
    #[serde(default)]
    pub epochs: u32,
}

#[derive(Debug, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub dataset_id: String,
    #[serde(default)]
    pub backbone: String,
    pub status: String,
    pub stage: Option<String>,
    #[serde(default)]
    pub progress: Progress,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    pub model_id: Option<String>,
    pub error: Option<JobError>,
    #[serde(default)]
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl Job {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

#[derive(Debug, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Deserialize)]
pub struct Baseline {
    #[serde(default)]
    pub method: String,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub mae: Option<f64>,
    pub r2: Option<f64>,
    pub micro_f1: Option<f64>,
}

/// A trained model's held-out metrics (also a finished job's `metrics`). Running jobs
/// carry epoch metrics instead, so everything is optional.
#[derive(Debug, Default, Deserialize)]
pub struct Metrics {
    /// `regression` or `multilabel` (absent for classification).
    pub task: Option<String>,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    pub r2: Option<f64>,
    pub spearman: Option<f64>,
    pub micro_f1: Option<f64>,
    pub subset_accuracy: Option<f64>,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub log_loss: Option<f64>,
    pub ece: Option<f64>,
    pub num_examples: Option<usize>,
    #[serde(default)]
    pub per_class: BTreeMap<String, ClassMetrics>,
    pub selected: Option<String>,
    pub baseline: Option<Baseline>,
    pub train_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub dataset_id: String,
    #[serde(default)]
    pub backbone: String,
    #[serde(default)]
    pub modality: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Debug, Deserialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f64,
}

/// One input's prediction, in the shape of the model's task.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    Class {
        label: String,
        score: f64,
        #[serde(default)]
        top_k: Vec<LabelScore>,
    },
    Value {
        value: f64,
        #[serde(default)]
        interval: Option<[f64; 2]>,
    },
    Labels {
        labels: Vec<String>,
        #[serde(default)]
        scores: Vec<LabelScore>,
    },
}

#[derive(Debug, Deserialize)]
pub struct Predictions {
    pub predictions: Vec<Prediction>,
}

/// Epoch metrics carried by `epoch` events.
#[derive(Debug, Default, Deserialize)]
pub struct EpochMetrics {
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// One entry of a job's event stream.
#[derive(Debug, Deserialize)]
pub struct JobEvent {
    #[serde(default)]
    pub seq: i64,
    pub kind: String,
    pub stage: Option<String>,
    pub epoch: Option<u32>,
    #[serde(default)]
    pub metrics: Option<EpochMetrics>,
    pub message: Option<String>,
}
