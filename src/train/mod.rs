//! The transfer-learning recipe (DESIGN §3): prepare the data the way the backbone was
//! pre-trained, extract features once with the backbone frozen, train a new head on the
//! cached features, optionally fine-tune the backbone at a much lower rate, keep whichever
//! did better on validation, and measure the result.
//!
//! This layer knows candle and the backbones, never HTTP or the database: a job reports
//! through the [`Observer`] it is given.

pub mod artifact;
pub mod baseline;
pub mod budget;
pub mod calibration;
pub mod contrastive;
pub mod crossfit;
pub mod defaults;
pub mod engine;
pub mod evaluate;
pub mod features;
pub mod finetune;
pub mod fit;
pub mod head;
pub mod head_train;
pub mod hyper;
pub mod inputs;
pub mod lexical;
pub mod logreg;
pub mod metrics;
pub mod optim;
pub mod recipe;
pub mod report;
pub mod select;
pub mod suspects;
pub mod tasks;
pub mod training_loop;

use std::path::PathBuf;

use crate::backbones::{BackboneError, Modality};
use crate::error_code::{Code, ErrorCode};
use crate::store::jobs::Stage;

pub use artifact::ModelArtifact;
pub use engine::{Engine, TrainOutcome};
pub use hyper::{Hyperparameters, ValidationSpec};
pub use recipe::{BackboneChoice, Recipe};
pub use report::Report;
pub use tasks::Targets;
pub use tasks::report::RunReport;
pub use training_loop::EpochMetrics;

/// One labelled example, its label as an index into the label list.
#[derive(Debug, Clone)]
pub struct Example {
    pub input: ExampleInput,
    /// Classification: the class. Other tasks: the stratum the splits keep in proportion
    /// (the targets themselves are [`TrainRequest::targets`]).
    pub label: usize,
    /// Position in the stored dataset (for reporting suspicious labels).
    pub index: usize,
}

#[derive(Debug, Clone)]
pub enum ExampleInput {
    Text(String),
    /// An image file in the dataset's artefact folder.
    ImageFile(PathBuf),
}

/// Everything a training run needs.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub modality: Modality,
    /// Class names (classification), label names (multi-label), none (regression).
    pub labels: Vec<String>,
    pub examples: Vec<Example>,
    /// What is predicted: the classes in `labels`, or a number, or a set of labels.
    pub targets: tasks::Targets,
    /// Chosen when the job was submitted.
    pub backbone: BackboneChoice,
    pub hyperparameters: Hyperparameters,
    pub validation: Option<ValidationSpec>,
    pub seed: u64,
    /// Hard cap on training time: fine-tuning stops (keeping its best checkpoint) when spent.
    pub time_budget_s: Option<u64>,
}

impl TrainRequest {
    /// Classes the splits stratify by: the classes, or the other tasks' strata.
    pub fn split_classes(&self) -> usize {
        match self.targets {
            Targets::Classes => self.labels.len(),
            _ => self.examples.iter().map(|e| e.label + 1).max().unwrap_or(0),
        }
    }
}

/// How a running job tells the world what it is doing. Implemented by the job queue.
pub trait Observer {
    /// The resolved recipe, once chosen (recorded on the job).
    fn recipe(&mut self, recipe: &Recipe);
    fn stage(&mut self, stage: Stage, message: &str);
    /// Progress inside the current stage.
    fn progress(&mut self, epoch: u32, epochs: u32, fraction: f64);
    /// End of an epoch (or of a round of head training) with its metrics.
    fn epoch(&mut self, stage: Stage, epoch: u32, epochs: u32, metrics: &EpochMetrics);
    fn log(&mut self, message: &str);
    /// Polled between steps; a `true` stops the run with [`TrainError::Cancelled`].
    fn cancelled(&self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the job was cancelled")]
    Cancelled,
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    /// The data cannot be trained on as asked (shown to the user).
    #[error("{0}")]
    Data(String),
    #[error("numerical failure: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ErrorCode for TrainError {
    /// The code of the job's `error.code`.
    fn code(&self) -> Code {
        match self {
            TrainError::Cancelled => Code::Cancelled,
            TrainError::Backbone(BackboneError::Unavailable { .. }) => Code::BackboneUnavailable,
            TrainError::Backbone(_) => Code::BackboneFailure,
            TrainError::Data(_) => Code::InvalidData,
            TrainError::Candle(_) => Code::TrainingFailed,
            TrainError::Io(_) => Code::Io,
        }
    }
}

pub type TrainResult<T> = Result<T, TrainError>;

pub(crate) fn check_cancel(obs: &dyn Observer) -> TrainResult<()> {
    if obs.cancelled() {
        Err(TrainError::Cancelled)
    } else {
        Ok(())
    }
}
