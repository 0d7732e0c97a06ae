//! Held-out metrics of the non-classification tasks: regression (MAE, RMSE, R², Spearman,
//! the residuals) and multi-label (micro/macro F1, per label, subset accuracy), and the
//! per-label thresholds the multi-label model predicts with.

use serde::{Deserialize, Serialize};

/// Held-out points kept in a regression report for the predicted-vs-true plot.
const MAX_POINTS: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RegressionMetrics {
    pub mae: f64,
    pub rmse: f64,
    /// 1 − SSE/SST, SST about the held-out rows' own mean (0 = the mean predictor).
    pub r2: f64,
    /// Rank correlation of predictions and targets.
    pub spearman: f64,
    pub residuals: ResidualSummary,
    pub num_examples: usize,
}

/// Residuals `true − predicted`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResidualSummary {
    pub mean: f64,
    pub std: f64,
    pub p05: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub p95: f64,
    pub max_abs: f64,
}

/// `[true, predicted]` pairs, at most [`MAX_POINTS`] (evenly spaced over the held-out rows).
pub fn scatter(truth: &[f64], pred: &[f64]) -> Vec<[f64; 2]> {
    let step = truth.len().div_ceil(MAX_POINTS).max(1);
    (0..truth.len())
        .step_by(step)
        .map(|i| [truth[i], pred[i]])
        .collect()
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        // Ties share their mean rank.
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

pub fn regression(truth: &[f64], pred: &[f64]) -> RegressionMetrics {
    let n = truth.len().max(1) as f64;
    let resid: Vec<f64> = truth.iter().zip(pred).map(|(t, p)| t - p).collect();
    let sse: f64 = resid.iter().map(|r| r * r).sum();
    let mean_t = truth.iter().sum::<f64>() / n;
    let sst: f64 = truth.iter().map(|t| (t - mean_t).powi(2)).sum();
    let mut sorted = resid.clone();
    sorted.sort_by(f64::total_cmp);
    let r_mean = resid.iter().sum::<f64>() / n;
    RegressionMetrics {
        mae: resid.iter().map(|r| r.abs()).sum::<f64>() / n,
        rmse: (sse / n).sqrt(),
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        spearman: pearson(&ranks(truth), &ranks(pred)),
        residuals: ResidualSummary {
            mean: r_mean,
            std: (resid.iter().map(|r| (r - r_mean).powi(2)).sum::<f64>() / n).sqrt(),
            p05: quantile(&sorted, 0.05),
            p25: quantile(&sorted, 0.25),
            median: quantile(&sorted, 0.5),
            p75: quantile(&sorted, 0.75),
            p95: quantile(&sorted, 0.95),
            max_abs: resid.iter().fold(0.0f64, |m, r| m.max(r.abs())),
        },
        num_examples: truth.len(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Held-out examples carrying the label.
    pub support: usize,
    /// Score at or above which the label is predicted.
    pub threshold: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MultilabelMetrics {
    pub micro_f1: f64,
    pub macro_f1: f64,
    /// Examples whose whole label set was predicted exactly.
    pub subset_accuracy: f64,
    /// Fraction of (example, label) decisions that were wrong.
    pub hamming_loss: f64,
    pub per_label: Vec<LabelMetrics>,
    pub num_examples: usize,
}

fn f1(tp: usize, fp: usize, fn_: usize) -> (f64, f64, f64) {
    let p = if tp + fp > 0 {
        tp as f64 / (tp + fp) as f64
    } else {
        0.0
    };
    let r = if tp + fn_ > 0 {
        tp as f64 / (tp + fn_) as f64
    } else {
        0.0
    };
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}

/// Metrics of decisions `pred[i][j]` against `truth[i][j]`; `thresholds` are reported.
pub fn multilabel(
    truth: &[Vec<bool>],
    pred: &[Vec<bool>],
    labels: &[String],
    thresholds: &[f64],
) -> MultilabelMetrics {
    let k = labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
    let mut exact = 0usize;
    for (t, p) in truth.iter().zip(pred) {
        exact += (t == p) as usize;
        for j in 0..k {
            match (t[j], p[j]) {
                (true, true) => tp[j] += 1,
                (false, true) => fp[j] += 1,
                (true, false) => fn_[j] += 1,
                (false, false) => {}
            }
        }
    }
    let per_label: Vec<LabelMetrics> = (0..k)
        .map(|j| {
            let (precision, recall, f1) = f1(tp[j], fp[j], fn_[j]);
            LabelMetrics {
                label: labels[j].clone(),
                precision,
                recall,
                f1,
                support: tp[j] + fn_[j],
                threshold: thresholds[j],
            }
        })
        .collect();
    let sum = |v: &[usize]| v.iter().sum::<usize>();
    let n = truth.len().max(1) as f64;
    MultilabelMetrics {
        micro_f1: f1(sum(&tp), sum(&fp), sum(&fn_)).2,
        macro_f1: per_label.iter().map(|l| l.f1).sum::<f64>() / k.max(1) as f64,
        subset_accuracy: exact as f64 / n,
        hamming_loss: (sum(&fp) + sum(&fn_)) as f64 / (n * k.max(1) as f64),
        per_label,
        num_examples: truth.len(),
    }
}

/// F1 a threshold must gain per unit of log-odds it moves away from 0.5. Thresholds are
/// tuned on held-out scores of the fold models, and the final model's scores differ from
/// theirs: an extreme threshold that catches one more held-out positive (a fine-tuned
/// multi-label model's 0.011, measured) turns into a run of false positives on new data.
const THRESHOLD_PRIOR: f64 = 0.01;

/// The threshold on `scores` that maximises the F1 of one label over rows `rows`, less
/// [`THRESHOLD_PRIOR`] per unit of |log-odds| (so ties and near-ties go to the one nearest
/// 0.5); 0.5 when the rows carry no positive.
pub fn best_threshold(scores: &[f64], truth: &[bool], rows: &[usize]) -> f64 {
    let mut cands: Vec<f64> = rows.iter().map(|&i| scores[i]).collect();
    cands.push(0.5);
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    if !rows.iter().any(|&i| truth[i]) {
        return 0.5;
    }
    let mut best: (f64, f64) = (f64::NEG_INFINITY, 0.5);
    for &t in &cands {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for &i in rows {
            match (truth[i], scores[i] >= t) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                _ => {}
            }
        }
        let p = t.clamp(1e-9, 1.0 - 1e-9);
        let f = f1(tp, fp, fn_).2 - THRESHOLD_PRIOR * (p / (1.0 - p)).ln().abs();
        let better = f > best.0 + 1e-12
            || ((f - best.0).abs() <= 1e-12 && (t - 0.5).abs() < (best.1 - 0.5).abs());
        if better {
            best = (f, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_metrics_by_hand() {
        let m = regression(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 5.0]);
        assert!((m.mae - 0.25).abs() < 1e-12);
        assert!((m.rmse - 0.5).abs() < 1e-12);
        assert!((m.r2 - (1.0 - 1.0 / 5.0)).abs() < 1e-12);
        assert!((m.spearman - 1.0).abs() < 1e-12);
        assert_eq!(m.residuals.max_abs, 1.0);
    }

    #[test]
    fn multilabel_metrics_and_thresholds() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let truth = vec![vec![true, false], vec![true, true], vec![false, true]];
        let pred = vec![vec![true, false], vec![true, false], vec![false, true]];
        let m = multilabel(&truth, &pred, &labels, &[0.5, 0.5]);
        assert!((m.subset_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.per_label[0].f1, 1.0);
        assert!((m.per_label[1].recall - 0.5).abs() < 1e-12);
        let scores = [0.9, 0.2, 0.4, 0.1];
        let t = best_threshold(&scores, &[true, false, true, false], &[0, 1, 2, 3]);
        assert!(t > 0.2 && t <= 0.4, "{t}");
    }

    #[test]
    fn an_extreme_threshold_must_pay_for_itself() {
        // 20 positives at 0.9 and one at 0.01; 20 negatives at 0.005. Catching the stray
        // positive needs a threshold of 0.01 for a gain of 0.024 F1: not worth 4.6 log-odds.
        let mut scores = vec![0.9; 20];
        scores.push(0.01);
        scores.extend([0.005; 20]);
        let truth: Vec<bool> = (0..41).map(|i| i < 21).collect();
        let rows: Vec<usize> = (0..41).collect();
        assert_eq!(best_threshold(&scores, &truth, &rows), 0.5);
        // Half the positives low: the low threshold pays.
        let mut scores = vec![0.9; 10];
        scores.extend([0.05; 10]);
        scores.extend([0.01; 20]);
        let truth: Vec<bool> = (0..40).map(|i| i < 20).collect();
        let rows: Vec<usize> = (0..40).collect();
        assert_eq!(best_threshold(&scores, &truth, &rows), 0.05);
    }
}
