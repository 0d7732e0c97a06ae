//! The card's held-out metrics of a regression or multi-label model: the task's own
//! figures beside the no-transfer baseline, the interval or the thresholds.

use std::fmt::Write;

use crate::train::report::ValidationReport;
use crate::train::tasks::report::{TaskMetrics, TaskReport};

fn how(v: &ValidationReport) -> String {
    match v {
        ValidationReport::Holdout { num_valid, .. } => {
            format!("on a holdout of {num_valid} examples")
        }
        ValidationReport::Kfold {
            folds, num_valid, ..
        } => format!("out of fold over {folds} folds ({num_valid} examples)"),
    }
}

pub fn metrics(out: &mut String, r: &TaskReport) {
    out.push_str("## Held-out metrics\n\n");
    let how = how(&r.validation);
    match (&r.metrics, &r.baseline.metrics) {
        (TaskMetrics::Regression(m), TaskMetrics::Regression(b)) => {
            let _ = writeln!(
                out,
                "Measured {how}: MAE {:.4}, RMSE {:.4}, R² {:.4}, Spearman {:.4}; residuals (true − predicted) median {:.4}, 5–95 % {:.4} to {:.4}.\n",
                m.mae,
                m.rmse,
                m.r2,
                m.spearman,
                m.residuals.median,
                m.residuals.p05,
                m.residuals.p95
            );
            let _ = writeln!(
                out,
                "No-transfer baseline ({}): MAE {:.4}, RMSE {:.4}, R² {:.4}.",
                r.baseline.method, b.mae, b.rmse, b.r2
            );
            if let Some(mp) = &r.mean_predictor {
                let _ = writeln!(
                    out,
                    "Always predicting the training mean: MAE {:.4}, RMSE {:.4}.",
                    mp.mae, mp.rmse
                );
            }
            if let Some(i) = &r.interval {
                let _ = writeln!(
                    out,
                    "\nPredictions come with an interval of ± {:.4} ({:.0} % coverage; {}).",
                    i.half_width,
                    i.coverage * 100.0,
                    i.method
                );
            }
        }
        (TaskMetrics::Multilabel(m), TaskMetrics::Multilabel(b)) => {
            let _ = writeln!(
                out,
                "Measured {how}: micro-F1 {:.4}, macro-F1 {:.4}, subset accuracy {:.4}, Hamming loss {:.4}.\n",
                m.micro_f1, m.macro_f1, m.subset_accuracy, m.hamming_loss
            );
            out.push_str(
                "| label | precision | recall | F1 | support | threshold |\n|---|---|---|---|---|---|\n",
            );
            for l in &m.per_label {
                let _ = writeln!(
                    out,
                    "| {} | {:.4} | {:.4} | {:.4} | {} | {:.4} |",
                    l.label, l.precision, l.recall, l.f1, l.support, l.threshold
                );
            }
            let _ = writeln!(
                out,
                "\nNo-transfer baseline ({}): micro-F1 {:.4}, macro-F1 {:.4}.",
                r.baseline.method, b.micro_f1, b.macro_f1
            );
            if let Some(note) = &r.thresholds_note {
                let _ = writeln!(out, "\nThresholds: {note}.");
            }
        }
        _ => out.push_str("The report's metrics and baseline are of different tasks.\n"),
    }
    out.push('\n');
}
