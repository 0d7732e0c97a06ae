//! Hyperparameters: what a job request may set, the checks that refuse nonsense, and the
//! defaults chosen from the data (each recorded with its reason on the job).

use serde::{Deserialize, Serialize};

use crate::backbones::Modality;
use crate::datasets::Task;

/// `unfreeze`: the whole backbone, or only its top N blocks, during fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Unfreeze {
    #[serde(with = "all_literal")]
    All,
    Top(usize),
}

mod all_literal {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("all")
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = String::deserialize(d)?;
        if s == "all" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(
                "unfreeze must be \"all\" or a number of top blocks",
            ))
        }
    }
}

/// `augment`: on/off, or the individual transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AugmentSpec {
    Enabled(bool),
    Custom(AugmentOptions),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentOptions {
    #[serde(default = "yes")]
    pub flip: bool,
    #[serde(default = "yes")]
    pub crop: bool,
    #[serde(default = "default_jitter")]
    pub color_jitter: f32,
}

fn yes() -> bool {
    true
}
fn default_jitter() -> f32 {
    0.2
}

impl Default for AugmentOptions {
    fn default() -> Self {
        AugmentOptions {
            flip: true,
            crop: true,
            color_jitter: default_jitter(),
        }
    }
}

/// `finetune_objective`: what fine-tuning optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinetuneObjective {
    /// The classifier's cross-entropy, backbone and head together, epoch by epoch.
    CrossEntropy,
    /// Text: SetFit-style pairs: the backbone learns to put same-label texts close and
    /// other-label texts apart (cosine similarity), then the logistic head is fitted anew
    /// on its features ([`super::contrastive`]).
    Contrastive,
}

impl FinetuneObjective {
    /// What the job's messages call it.
    pub fn describe(self) -> &'static str {
        match self {
            FinetuneObjective::CrossEntropy => "fine-tuning",
            FinetuneObjective::Contrastive => "contrastive tuning",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    Balanced,
    None,
}

/// What a job request may set; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    pub head_epochs: Option<u32>,
    pub finetune_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub head_lr: Option<f64>,
    pub backbone_lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub l1: Option<f64>,
    pub dropout: Option<f64>,
    pub label_smoothing: Option<f64>,
    pub augment: Option<AugmentSpec>,
    pub early_stopping_patience: Option<u32>,
    pub unfreeze: Option<Unfreeze>,
    pub class_weights: Option<ClassWeights>,
    /// Width of an optional hidden layer in the head (0 = linear head).
    pub hidden_units: Option<u32>,
    /// Text only: tokens kept per example.
    pub max_length: Option<u32>,
    /// Text only: what fine-tuning optimises (images always use cross-entropy).
    pub finetune_objective: Option<FinetuneObjective>,
    /// Images only: augmented views of each training image the logistic head also learns
    /// from (0 = the plain features alone).
    pub head_views: Option<u32>,
}

/// `validation`: how the data is split to measure the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
pub enum ValidationSpec {
    Holdout {
        #[serde(default = "default_fraction")]
        fraction: f64,
    },
    Kfold {
        #[serde(default = "default_folds")]
        folds: usize,
    },
}

fn default_fraction() -> f64 {
    0.2
}
fn default_folds() -> usize {
    5
}

/// A refused hyperparameter: names the field, the value and the accepted range.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHyperparameter(pub String);

fn check<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), InvalidHyperparameter> {
    match value {
        Some(v) if !(v >= lo && v <= hi) => Err(InvalidHyperparameter(format!(
            "hyperparameters.{name} = {v} is out of range; use a value between {lo} and {hi}"
        ))),
        _ => Ok(()),
    }
}

impl Hyperparameters {
    /// Refuses values no training run could use.
    pub fn validate(&self) -> Result<(), InvalidHyperparameter> {
        check("head_epochs", self.head_epochs, 1, 10_000)?;
        check("finetune_epochs", self.finetune_epochs, 0, 1_000)?;
        check("batch_size", self.batch_size, 1, 1_024)?;
        check("head_lr", self.head_lr, 1e-7, 10.0)?;
        check("backbone_lr", self.backbone_lr, 1e-9, 1.0)?;
        check("weight_decay", self.weight_decay, 0.0, 10.0)?;
        check("l1", self.l1, 0.0, 10.0)?;
        check("dropout", self.dropout, 0.0, 0.95)?;
        check("label_smoothing", self.label_smoothing, 0.0, 0.5)?;
        check(
            "early_stopping_patience",
            self.early_stopping_patience,
            0,
            10_000,
        )?;
        check("hidden_units", self.hidden_units, 0, 8_192)?;
        check("max_length", self.max_length, 8, 512)?;
        check(
            "head_views",
            self.head_views,
            0,
            super::features::HEAD_VIEWS.len() as u32,
        )?;
        if let Some(Unfreeze::Top(0)) = self.unfreeze {
            return Err(InvalidHyperparameter(
                "hyperparameters.unfreeze = 0 trains nothing; use \"all\", a number of top blocks ≥ 1, or finetune_epochs = 0 for head-only".into(),
            ));
        }
        if let Some(AugmentSpec::Custom(a)) = &self.augment {
            check("augment.color_jitter", Some(a.color_jitter), 0.0, 1.0)?;
        }
        Ok(())
    }
}

impl ValidationSpec {
    pub fn validate(&self) -> Result<(), InvalidHyperparameter> {
        match self {
            ValidationSpec::Holdout { fraction } if !(0.05..=0.5).contains(fraction) => {
                Err(InvalidHyperparameter(format!(
                    "validation.fraction = {fraction} is out of range; use a value between 0.05 and 0.5"
                )))
            }
            ValidationSpec::Kfold { folds } if !(2..=20).contains(folds) => {
                Err(InvalidHyperparameter(format!(
                    "validation.folds = {folds} is out of range; use between 2 and 20 folds"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// One automatic choice and why it was made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub parameter: String,
    pub value: serde_json::Value,
    pub reason: String,
}

/// Facts about the data the defaults depend on.
#[derive(Clone, Debug)]
pub struct DataProfile {
    pub modality: Modality,
    /// Classification, or the task whose strata `num_classes` counts.
    pub task: Task,
    pub num_examples: usize,
    pub num_classes: usize,
    pub smallest_class: usize,
    pub largest_class: usize,
}

impl DataProfile {
    /// The profile of examples of `classes` classes, given each example's class.
    pub fn of_labels(
        modality: Modality,
        classes: usize,
        labels: impl Iterator<Item = usize>,
    ) -> Self {
        let mut counts = vec![0usize; classes];
        for l in labels {
            counts[l] += 1;
        }
        Self::of_counts(modality, &counts)
    }

    /// The profile of a dataset with these examples per class.
    pub fn of_counts(modality: Modality, counts: &[usize]) -> Self {
        DataProfile {
            modality,
            task: Task::Classification,
            num_examples: counts.iter().sum(),
            num_classes: counts.len(),
            smallest_class: counts.iter().copied().min().unwrap_or(0),
            largest_class: counts.iter().copied().max().unwrap_or(0),
        }
    }

    /// The same profile for a regression or multi-label run (its classes are the strata
    /// the splits keep balanced).
    pub fn for_task(self, task: Task) -> Self {
        DataProfile { task, ..self }
    }

    pub fn per_class(&self) -> f64 {
        self.num_examples as f64 / self.num_classes.max(1) as f64
    }

    pub fn imbalance(&self) -> f64 {
        self.largest_class as f64 / self.smallest_class.max(1) as f64
    }
}
