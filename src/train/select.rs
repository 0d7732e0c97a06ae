//! Choosing the model: head-only or fine-tuned, judged on held-out predictions gathered
//! over every split. The bigger model must beat the head by more than the noise of the
//! comparison (the one-standard-error rule), judged per held-out example on calibrated
//! log loss, so that mere sharpness — which calibration undoes anyway — earns nothing.

use super::calibration::fit_temperature;
use super::metrics::{Metrics, evaluate, softmax_rows};
use super::report::{Candidate, MeanStd};

/// Held-out predictions gathered over one or more splits.
#[derive(Default)]
pub struct HeldOut {
    /// Dataset rows, split after split.
    pub rows: Vec<usize>,
    /// Their classes.
    pub y: Vec<usize>,
    /// Logits of each candidate for `rows`.
    pub head: Vec<Vec<f32>>,
    /// The fine-tuned model's where it beat the head on its split, else the head's.
    pub finetuned: Vec<Vec<f32>>,
    pub baseline: Vec<Vec<f32>>,
}

impl HeldOut {
    pub fn logits(&self, c: Candidate) -> &[Vec<f32>] {
        match c {
            Candidate::HeadOnly => &self.head,
            Candidate::Finetuned => &self.finetuned,
        }
    }

    /// Uncalibrated metrics of some logits over all held-out rows.
    pub fn metrics(&self, logits: &[Vec<f32>], labels: &[String]) -> Metrics {
        evaluate(&softmax_rows(logits, 1.0), &self.y, labels)
    }
}

/// The decision and its explanation.
#[derive(Clone, Debug)]
pub struct Selection {
    pub chosen: Candidate,
    pub reason: String,
    pub head: Metrics,
    /// `None` when fine-tuning did not run.
    pub finetuned: Option<Metrics>,
}

/// What the splits said about fine-tuning, beyond the held-out logits.
pub struct FinetuneEvidence {
    /// Fine-tuning was part of the recipe.
    pub ran: bool,
    /// Splits on which it beat the head on validation loss.
    pub improved_splits: usize,
    /// Fine-tuning epochs a final fit on all data would run (k-fold: the folds' mean best
    /// epoch); `None` when the held-out model itself is kept (holdout).
    pub final_epochs: Option<u32>,
}

/// Mean per-example reduction of log loss from `a` to `b` logits, each at its own fitted
/// temperature, and the standard error of that mean.
pub fn paired_gain(a: &[Vec<f32>], b: &[Vec<f32>], y: &[usize]) -> (f64, f64) {
    let pa = softmax_rows(a, fit_temperature(a, y) as f32);
    let pb = softmax_rows(b, fit_temperature(b, y) as f32);
    let d: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let la = -(pa[i][c] as f64).clamp(1e-15, 1.0).ln();
            let lb = -(pb[i][c] as f64).clamp(1e-15, 1.0).ln();
            la - lb
        })
        .collect();
    let m = MeanStd::of(&d);
    (m.mean, m.std / (d.len().max(1) as f64).sqrt())
}

/// Head-only or fine-tuned, by the one-standard-error rule.
pub fn select(held: &HeldOut, evidence: &FinetuneEvidence, labels: &[String]) -> Selection {
    let head = held.metrics(&held.head, labels);
    if !evidence.ran {
        return Selection {
            chosen: Candidate::HeadOnly,
            reason: "finetune_epochs = 0: head only".into(),
            head,
            finetuned: None,
        };
    }
    let ft = held.metrics(&held.finetuned, labels);
    let (gain, se) = paired_gain(&held.head, &held.finetuned, &held.y);
    let usable = evidence.improved_splits > 0 && evidence.final_epochs != Some(0);
    let (chosen, reason) = if usable && gain > se {
        (
            Candidate::Finetuned,
            format!(
                "fine-tuning lowered the held-out log loss from {:.4} (head only) to {:.4}; with each calibrated, the gain {gain:.4} exceeds one standard error ({se:.4})",
                head.log_loss, ft.log_loss
            ),
        )
    } else {
        (
            Candidate::HeadOnly,
            format!(
                "fine-tuning did not beat the head-only model by more than one standard error (held-out log loss {:.4} vs {:.4}; with each calibrated, gain {gain:.4} ± {se:.4}): the simpler model is kept",
                ft.log_loss, head.log_loss
            ),
        )
    };
    Selection {
        chosen,
        reason,
        head,
        finetuned: Some(ft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(head: Vec<Vec<f32>>, finetuned: Vec<Vec<f32>>, y: Vec<usize>) -> HeldOut {
        HeldOut {
            rows: (0..y.len()).collect(),
            y,
            head,
            finetuned,
            baseline: Vec::new(),
        }
    }

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn a_clearly_better_finetune_is_kept_and_a_tie_is_not() {
        let y: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let weak: Vec<Vec<f32>> = y
            .iter()
            .enumerate()
            .map(|(i, &c)| match (i % 5 == 0, c) {
                (true, 0) => vec![0.0, 1.0],
                (true, _) => vec![1.0, 0.0],
                (false, 0) => vec![0.3, 0.0],
                (false, _) => vec![0.0, 0.3],
            })
            .collect();
        let strong: Vec<Vec<f32>> = y
            .iter()
            .map(|&c| {
                if c == 0 {
                    vec![3.0, 0.0]
                } else {
                    vec![0.0, 3.0]
                }
            })
            .collect();
        let evidence = FinetuneEvidence {
            ran: true,
            improved_splits: 1,
            final_epochs: None,
        };
        let better = select(&held(weak.clone(), strong, y.clone()), &evidence, &labels());
        assert_eq!(better.chosen, Candidate::Finetuned, "{}", better.reason);
        let tie = select(&held(weak.clone(), weak, y), &evidence, &labels());
        assert_eq!(tie.chosen, Candidate::HeadOnly, "{}", tie.reason);
    }
}
