//! The report of a training run — held-out metrics of the kept model, how it was
//! validated and chosen, the candidates, the no-transfer baseline, calibration — as one
//! typed struct, serialised once onto the model and the job.

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::metrics::Metrics;
use super::training_loop::Evaluation;

/// Which candidate became the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    HeadOnly,
    Finetuned,
}

impl Candidate {
    pub fn describe(self) -> &'static str {
        match self {
            Candidate::HeadOnly => "head-only",
            Candidate::Finetuned => "fine-tuned",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Held-out metrics of the kept candidate (out-of-fold with k-fold).
    #[serde(flatten)]
    pub metrics: Metrics,
    pub validation: ValidationReport,
    /// k-fold only: each fold, for the kept candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<Vec<FoldReport>>,
    /// k-fold only: mean ± std over the folds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvSummary>,
    /// k-fold only: how the final model was trained on all data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_fit: Option<FinalFit>,
    pub selected: Candidate,
    pub selection_reason: String,
    /// Text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_blend: Option<LexicalBlend>,
    pub candidates: Candidates,
    pub baseline: BaselineReport,
    pub transfer_gain: TransferGain,
    pub calibration: Calibration,
    /// How many suspicious labels were kept with the model.
    pub suspects: usize,
    pub train_seconds: f64,
}

/// How the held-out metrics were obtained.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "strategy", rename_all = "lowercase")]
pub enum ValidationReport {
    Holdout {
        fraction: f64,
        num_train: usize,
        num_valid: usize,
    },
    Kfold {
        folds: usize,
        num_valid: usize,
        note: String,
    },
}

/// Validation loss and accuracy of a candidate on one split.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitEval {
    pub val_loss: f64,
    pub val_accuracy: f64,
}

impl From<&Evaluation> for SplitEval {
    fn from(e: &Evaluation) -> Self {
        SplitEval {
            val_loss: e.loss,
            val_accuracy: e.accuracy,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FoldReport {
    /// 1-based.
    pub fold: usize,
    pub num_valid: usize,
    pub head_only: Option<SplitEval>,
    /// Set when fine-tuning beat the head on this fold's validation loss.
    pub finetuned: Option<SplitEval>,
    /// The kept candidate's metrics on this fold.
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    /// Mean and sample standard deviation.
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        MeanStd {
            mean,
            std: var.sqrt(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct CvSummary {
    pub accuracy: MeanStd,
    pub macro_f1: MeanStd,
    pub log_loss: MeanStd,
}

impl CvSummary {
    pub fn of(folds: &[FoldReport]) -> CvSummary {
        let col = |f: fn(&FoldReport) -> f64| MeanStd::of(&folds.iter().map(f).collect::<Vec<_>>());
        CvSummary {
            accuracy: col(|f| f.accuracy),
            macro_f1: col(|f| f.macro_f1),
            log_loss: col(|f| f.log_loss),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinalFit {
    pub head_epochs: u32,
    pub finetune_epochs: u32,
    pub num_train: usize,
}

/// Headline held-out scores of a candidate.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
}

impl From<&Metrics> for Scores {
    fn from(m: &Metrics) -> Self {
        Scores {
            accuracy: m.accuracy,
            macro_f1: m.macro_f1,
            log_loss: m.log_loss,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Candidates {
    pub head_only: Scores,
    /// `None` when fine-tuning did not run.
    pub finetuned: Option<Scores>,
    /// Text only: the lexical model (TF-IDF logistic regression) alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<Scores>,
}

/// Text only: whether the kept transfer model's probabilities are blended with the lexical
/// model's, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LexicalBlend {
    /// Weight of the transfer model in the blend (1 = the lexical model is not used).
    pub transfer_weight: f64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BaselineReport {
    pub method: String,
    #[serde(flatten)]
    pub scores: Scores,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransferGain {
    pub accuracy: f64,
    pub macro_f1: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_serialises_with_its_strategy() {
        let v = serde_json::to_value(ValidationReport::Holdout {
            fraction: 0.2,
            num_train: 8,
            num_valid: 2,
        })
        .unwrap();
        assert_eq!(v["strategy"], "holdout");
        assert_eq!(v["num_valid"], 2);
        assert_eq!(
            serde_json::to_value(Candidate::HeadOnly).unwrap(),
            "head_only"
        );
    }

    #[test]
    fn mean_std_is_the_sample_deviation() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert_eq!(m.mean, 2.0);
        assert!((m.std - 1.0).abs() < 1e-12);
    }
}
