//! Held-out evaluation of a task run: the chosen candidate's metrics beside the baseline's
//! (and the mean predictor's), the split-conformal interval of regression, the cross-fitted
//! per-label thresholds of multi-label.

use super::Targets;
use super::baseline::baseline_method;
use super::fit::Held;
use super::metrics::{self, best_threshold, scatter};
use super::report::{Interval, TaskBaseline, TaskMetrics, TaskReport, TransferGain};
use super::ridge::shuffled_folds;
use crate::train::evaluate::validation_report;
use crate::train::fit::Prepared;
use crate::train::report::{Candidate, FinalFit};

/// Coverage of the regression interval.
const COVERAGE: f64 = 0.9;

/// What selection kept, for the report.
pub struct Chosen {
    pub candidate: Candidate,
    /// Why (the selection's reason, or why nothing was fine-tuned).
    pub reason: String,
    /// The kept head and how its regularisation was chosen.
    pub head_note: String,
}

pub fn report_line(r: &TaskReport) -> String {
    match (&r.metrics, &r.baseline.metrics) {
        (TaskMetrics::Regression(m), TaskMetrics::Regression(b)) => format!(
            "held-out MAE {:.4}, RMSE {:.4}, R² {:.3} (baseline MAE {:.4}, R² {:.3})",
            m.mae, m.rmse, m.r2, b.mae, b.r2
        ),
        (TaskMetrics::Multilabel(m), TaskMetrics::Multilabel(b)) => format!(
            "held-out micro-F1 {:.3}, macro-F1 {:.3} (per-label frequency: {:.3}, {:.3})",
            m.micro_f1, m.macro_f1, b.micro_f1, b.macro_f1
        ),
        _ => String::new(),
    }
}

/// The split-conformal half-width: the ⌈(n+1)·coverage⌉-th smallest absolute held-out
/// residual; `None` when there are too few held-out rows for that rank to exist.
pub fn conformal_half_width(abs_residuals: &[f64], coverage: f64) -> Option<f64> {
    let n = abs_residuals.len();
    let rank = ((n as f64 + 1.0) * coverage).ceil() as usize;
    if rank == 0 || rank > n {
        return None;
    }
    let mut sorted = abs_residuals.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[rank - 1])
}

/// The report of the chosen candidate, from its held-out outputs `model` (parallel to
/// `held.rows`); with the multi-label thresholds and the regression interval it implies.
pub fn evaluate(
    run: &Prepared,
    held: &Held,
    model: &[Vec<f64>],
    chosen: Chosen,
    final_fit: Option<FinalFit>,
) -> (TaskReport, Option<Vec<f64>>, Option<Interval>) {
    let validation = validation_report(
        &run.recipe.validation,
        run.req.examples.len(),
        held.rows.len(),
    );
    let mut report = TaskReport {
        task: run.req.targets.task(),
        metrics: TaskMetrics::Regression(metrics::regression(&[], &[])),
        validation,
        final_fit,
        head: chosen.head_note,
        selected: chosen.candidate,
        finetuning: chosen.reason,
        baseline: TaskBaseline {
            method: String::new(),
            metrics: TaskMetrics::Regression(metrics::regression(&[], &[])),
        },
        mean_predictor: None,
        transfer_gain: TransferGain::Regression {
            mae: 0.0,
            rmse: 0.0,
            r2: 0.0,
        },
        interval: None,
        points: Vec::new(),
        thresholds_note: None,
        train_seconds: 0.0,
    };
    let mut thresholds = None;
    match &run.req.targets {
        Targets::Values(v) => {
            let truth: Vec<f64> = held.rows.iter().map(|&i| v[i]).collect();
            let pred: Vec<f64> = model.iter().map(|o| o[0]).collect();
            let base: Vec<f64> = held.baseline.iter().map(|o| o[0]).collect();
            let m = metrics::regression(&truth, &pred);
            let b = metrics::regression(&truth, &base);
            report.transfer_gain = TransferGain::Regression {
                mae: b.mae - m.mae,
                rmse: b.rmse - m.rmse,
                r2: m.r2 - b.r2,
            };
            report.mean_predictor = Some(metrics::regression(&truth, &held.mean));
            let abs: Vec<f64> = truth
                .iter()
                .zip(&pred)
                .map(|(t, p)| (t - p).abs())
                .collect();
            report.interval = conformal_half_width(&abs, COVERAGE).map(|half_width| Interval {
                coverage: COVERAGE,
                half_width,
                method: format!(
                    "split-conformal: the ⌈(n+1)·{COVERAGE}⌉-th smallest absolute error of the {} held-out predictions{}",
                    abs.len(),
                    if final_fit.is_some() { " (out-of-fold; the final model saw all rows, so the interval is, if anything, conservative)" } else { "" }
                ),
            });
            report.points = scatter(&truth, &pred);
            report.baseline = TaskBaseline {
                method: baseline_method(run.req.modality).into(),
                metrics: TaskMetrics::Regression(b),
            };
            report.metrics = TaskMetrics::Regression(m);
        }
        Targets::Sets(s) => {
            let truth: Vec<Vec<bool>> = held.rows.iter().map(|&i| s[i].clone()).collect();
            let labels = &run.req.labels;
            let (m, t) = multilabel_eval(&truth, model, labels, run.recipe.seed);
            let (b, _) = multilabel_eval(&truth, &held.baseline, labels, run.recipe.seed);
            report.transfer_gain = TransferGain::Multilabel {
                micro_f1: m.micro_f1 - b.micro_f1,
                macro_f1: m.macro_f1 - b.macro_f1,
            };
            report.baseline = TaskBaseline {
                method: "each label's frequency in the training rows as its score, thresholds tuned the same way: no pre-trained knowledge".into(),
                metrics: TaskMetrics::Multilabel(b),
            };
            report.thresholds_note = Some("each label's threshold maximises its F1 on the held-out predictions; the metrics are cross-fitted (each held-out row judged with thresholds tuned on the other rows), the model keeps the thresholds tuned on all of them".into());
            report.metrics = TaskMetrics::Multilabel(m);
            thresholds = Some(t);
        }
        Targets::Classes => unreachable!(),
    }
    report.train_seconds = run.started.elapsed().as_secs_f64();
    let interval = report.interval.clone();
    (report, thresholds, interval)
}

/// Multi-label metrics with cross-fitted thresholds (5 groups of held-out rows, each
/// judged with thresholds tuned on the other four), and the thresholds tuned on all rows.
fn multilabel_eval(
    truth: &[Vec<bool>],
    scores: &[Vec<f64>],
    labels: &[String],
    seed: u64,
) -> (metrics::MultilabelMetrics, Vec<f64>) {
    let (n, k) = (truth.len(), labels.len());
    let groups = n.clamp(1, 5);
    let group_of = shuffled_folds(n, groups, seed ^ 0x7E5);
    let mut pred = vec![vec![false; k]; n];
    let mut final_t = vec![0.5; k];
    for j in 0..k {
        let s: Vec<f64> = scores.iter().map(|r| r[j]).collect();
        let t: Vec<bool> = truth.iter().map(|r| r[j]).collect();
        for g in 0..groups {
            let others: Vec<usize> = (0..n).filter(|&i| group_of[i] != g).collect();
            let th = best_threshold(&s, &t, &others);
            for i in (0..n).filter(|&i| group_of[i] == g) {
                pred[i][j] = s[i] >= th;
            }
        }
        final_t[j] = best_threshold(&s, &t, &(0..n).collect::<Vec<_>>());
    }
    (metrics::multilabel(truth, &pred, labels, &final_t), final_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformal_rank() {
        let r: Vec<f64> = (1..=19).map(f64::from).collect();
        // ⌈20·0.9⌉ = 18th smallest.
        assert_eq!(conformal_half_width(&r, 0.9), Some(18.0));
        assert_eq!(conformal_half_width(&r[..5], 0.9), None);
    }
}
