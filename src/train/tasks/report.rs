//! The report of a regression or multi-label run: held-out metrics of the model beside the
//! no-transfer baseline (and, for regression, the mean predictor), how they were
//! validated, the head, the prediction interval or the thresholds. Serialised once onto
//! the model and the job, like the classification [`crate::train::Report`].

use serde::{Deserialize, Serialize};

use super::metrics::{MultilabelMetrics, RegressionMetrics};
use crate::datasets::Task;
use crate::train::report::{Candidate, FinalFit, ValidationReport};

/// The report of any run: classification's as it always was, or a task report.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RunReport {
    Classification(Box<crate::train::Report>),
    Task(Box<TaskReport>),
}

/// Held-out metrics of one task.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskMetrics {
    Regression(RegressionMetrics),
    Multilabel(MultilabelMetrics),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: Task,
    /// Held-out metrics of the model (out-of-fold with k-fold).
    #[serde(flatten)]
    pub metrics: TaskMetrics,
    pub validation: ValidationReport,
    /// k-fold only: how the final model was trained on all data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_fit: Option<FinalFit>,
    /// The head and how its regularisation was chosen.
    pub head: String,
    /// Which candidate is the model: the head on frozen features, or the fine-tuned
    /// backbone with its head refitted (reports written before fine-tuning existed for
    /// these tasks had only the head).
    #[serde(default = "head_only")]
    pub selected: Candidate,
    /// Why that candidate (selection's reason, or why the backbone was not fine-tuned).
    pub finetuning: String,
    pub baseline: TaskBaseline,
    /// Regression: always predicting the training rows' mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_predictor: Option<RegressionMetrics>,
    /// How much better the model is than the baseline (positive = better).
    pub transfer_gain: TransferGain,
    /// Regression: the interval predictions come with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Regression: held-out `[true, predicted]` pairs (for the scatter plot).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<[f64; 2]>,
    /// Multi-label: how the thresholds were chosen and the metrics obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds_note: Option<String>,
    pub train_seconds: f64,
}

fn head_only() -> Candidate {
    Candidate::HeadOnly
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskBaseline {
    pub method: String,
    #[serde(flatten)]
    pub metrics: TaskMetrics,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TransferGain {
    /// Reductions of the errors, increase of R².
    Regression { mae: f64, rmse: f64, r2: f64 },
    /// Increases of the F1 scores.
    Multilabel { micro_f1: f64, macro_f1: f64 },
}

/// A split-conformal interval: `value ± half_width` covers the true value of a new input
/// with probability `coverage`, if it comes from the same distribution as the held-out rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Interval {
    pub coverage: f64,
    pub half_width: f64,
    pub method: String,
}
