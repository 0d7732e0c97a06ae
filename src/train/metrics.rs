//! Classification metrics computed from predicted probabilities: accuracy, per-class
//! precision/recall/F1/support, macro-F1, confusion matrix, log loss and calibration error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConfusionMatrix {
    pub labels: Vec<String>,
    /// `matrix[true][predicted]`.
    pub matrix: Vec<Vec<usize>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
    /// Expected calibration error (15 equal-width confidence bins).
    pub ece: f64,
    pub num_examples: usize,
    pub per_class: BTreeMap<String, ClassMetrics>,
    pub confusion_matrix: ConfusionMatrix,
}

/// Metrics of `probs` (one row per example, rows summing to 1) against true class ids.
pub fn evaluate(probs: &[Vec<f32>], truth: &[usize], labels: &[String]) -> Metrics {
    let k = labels.len();
    let n = truth.len();
    let mut matrix = vec![vec![0usize; k]; k];
    let mut log_loss = 0.0f64;
    for (p, &t) in probs.iter().zip(truth) {
        matrix[t][argmax(p)] += 1;
        log_loss -= (p[t] as f64).clamp(1e-15, 1.0).ln();
    }
    let correct: usize = (0..k).map(|i| matrix[i][i]).sum();
    let mut per_class = BTreeMap::new();
    let mut f1_sum = 0.0;
    for (c, label) in labels.iter().enumerate() {
        let tp = matrix[c][c] as f64;
        let predicted: usize = (0..k).map(|t| matrix[t][c]).sum();
        let support: usize = matrix[c].iter().sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        f1_sum += f1;
        per_class.insert(
            label.clone(),
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    Metrics {
        accuracy: if n > 0 {
            correct as f64 / n as f64
        } else {
            0.0
        },
        macro_f1: if k > 0 { f1_sum / k as f64 } else { 0.0 },
        log_loss: if n > 0 { log_loss / n as f64 } else { 0.0 },
        ece: expected_calibration_error(probs, truth, 15),
        num_examples: n,
        per_class,
        confusion_matrix: ConfusionMatrix {
            labels: labels.to_vec(),
            matrix,
        },
    }
}

pub fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// Expected calibration error: the weighted gap between confidence and accuracy over
/// `bins` equal-width confidence bins.
pub fn expected_calibration_error(probs: &[Vec<f32>], truth: &[usize], bins: usize) -> f64 {
    if probs.is_empty() {
        return 0.0;
    }
    let mut conf_sum = vec![0.0f64; bins];
    let mut acc_sum = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for (p, &t) in probs.iter().zip(truth) {
        let pred = argmax(p);
        let conf = p[pred] as f64;
        let b = ((conf * bins as f64) as usize).min(bins - 1);
        conf_sum[b] += conf;
        acc_sum[b] += (pred == t) as u8 as f64;
        count[b] += 1;
    }
    let n = probs.len() as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (acc_sum[b] - conf_sum[b]).abs() / n)
        .sum()
}

/// Numerically stable softmax of each row of logits, at a temperature.
pub fn softmax_rows(logits: &[Vec<f32>], temperature: f32) -> Vec<Vec<f32>> {
    logits
        .iter()
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = row
                .iter()
                .map(|v| ((v - max) / temperature).exp())
                .collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_known_confusion() {
        let labels = vec!["a".to_string(), "b".to_string()];
        // truth: a a b b ; predicted: a b b b
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.4, 0.6],
            vec![0.2, 0.8],
            vec![0.3, 0.7],
        ];
        let m = evaluate(&probs, &[0, 0, 1, 1], &labels);
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.confusion_matrix.matrix, vec![vec![1, 1], vec![0, 2]]);
        let a = &m.per_class["a"];
        assert_eq!((a.precision, a.recall, a.support), (1.0, 0.5, 2));
        let b = &m.per_class["b"];
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && b.recall == 1.0);
        let expected_f1 = (2.0 / 3.0 + 0.8) / 2.0;
        assert!((m.macro_f1 - expected_f1).abs() < 1e-9);
        let ll = -(0.9f64.ln() + 0.4f64.ln() + 0.8f64.ln() + 0.7f64.ln()) / 4.0;
        assert!((m.log_loss - ll).abs() < 1e-6);
    }

    #[test]
    fn perfectly_calibrated_has_zero_ece() {
        let probs = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(expected_calibration_error(&probs, &[0, 1], 10), 0.0);
        let overconfident = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        assert!((expected_calibration_error(&overconfident, &[0, 1], 10) - 0.5).abs() < 1e-9);
    }
}
