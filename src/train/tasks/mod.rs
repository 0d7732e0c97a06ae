//! Regression and multi-label training: the recipe's same phases as classification — the
//! features the prepared run extracted once, the same holdout split or folds, a head on
//! standardised cached features with its regularisation chosen by inner cross-validation,
//! fine-tuning on the task's own loss as the second candidate, selection between them by
//! the one-standard-error rule, the no-transfer baseline on the same splits, then the
//! final fit and its report — with the head, loss, baseline and metrics the task calls for.

pub mod baseline;
pub mod evaluate;
pub mod fit;
pub mod head;
pub mod metrics;
pub mod report;
pub mod ridge;
pub mod select;
pub mod tune;

use crate::datasets::Task;

/// The targets of a training request, parallel to its examples.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Each example's `label` is its class.
    Classes,
    /// Regression: each example's number (its `label` is only the stratum of the splits).
    Values(Vec<f64>),
    /// Multi-label: `[example][label]` membership, labels in the request's order.
    Sets(Vec<Vec<bool>>),
}

impl Targets {
    pub fn task(&self) -> Task {
        match self {
            Targets::Classes => Task::Classification,
            Targets::Values(_) => Task::Regression,
            Targets::Sets(_) => Task::Multilabel,
        }
    }
}

/// Strata a regression set is split by: the quintile of each target, so every fold sees
/// the whole range.
pub fn value_strata(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let bins = 5.min(values.len().max(1));
    let mut strata = vec![0usize; values.len()];
    for (rank, &i) in order.iter().enumerate() {
        strata[i] = rank * bins / values.len().max(1);
    }
    strata
}

/// Strata a multi-label set is split by: each example's rarest label (so every fold sees
/// the rare ones), or one more stratum for examples without any.
pub fn set_strata(sets: &[Vec<bool>], labels: usize) -> Vec<usize> {
    let mut counts = vec![0usize; labels];
    for s in sets {
        for (j, &on) in s.iter().enumerate() {
            counts[j] += on as usize;
        }
    }
    sets.iter()
        .map(|s| {
            (0..labels)
                .filter(|&j| s[j])
                .min_by_key(|&j| (counts[j], j))
                .unwrap_or(labels)
        })
        .collect()
}
