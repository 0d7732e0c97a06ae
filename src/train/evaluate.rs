//! The evaluation phase: the kept candidate's held-out metrics (overall and per fold),
//! the no-transfer baseline and the transfer gain, calibration, and the labels worth a
//! second look — assembled into the run's [`Report`].

use super::baseline;
use super::calibration::calibrate;
use super::crossfit::CrossFit;
use super::fit::Prepared;
use super::hyper::ValidationSpec;
use super::metrics::{evaluate, softmax_rows};
use super::report::{
    BaselineReport, Candidates, CvSummary, FinalFit, FoldReport, Report, Scores, TransferGain,
    ValidationReport,
};
use super::select::Selection;
use super::suspects::{self, Suspect};

/// Suspicious examples kept with a model.
const MAX_SUSPECTS: usize = 100;

/// The report of the run, and the suspicious labels to keep with the model.
pub fn evaluate_run(
    run: &Prepared,
    crossfit: &CrossFit,
    selection: &Selection,
    final_fit: Option<FinalFit>,
) -> (Report, Vec<Suspect>) {
    let held = &crossfit.held;
    let labels = &run.req.labels;
    let kept = held.kept(selection.chosen, selection.blend.as_ref());
    let chosen = kept.as_slice();
    let metrics = held.metrics(chosen, labels);
    let base = held.metrics(&held.baseline, labels);
    let calibration = calibrate(chosen, &held.y);
    let probs = softmax_rows(chosen, calibration.temperature as f32);
    let suspect_rows: Vec<(usize, usize, Vec<f32>)> = held
        .rows
        .iter()
        .zip(&held.y)
        .zip(probs)
        .map(|((&i, &c), p)| (run.req.examples[i].index, c, p))
        .collect();
    let suspects = suspects::rank(&suspect_rows, labels, MAX_SUSPECTS);
    let folds = crossfit
        .is_kfold()
        .then(|| fold_reports(crossfit, chosen, labels));
    let report = Report {
        validation: validation_report(&run.recipe.validation, run.labels.len(), held.rows.len()),
        cv: folds.as_deref().map(CvSummary::of),
        folds,
        final_fit,
        selected: selection.chosen,
        selection_reason: selection.reason.clone(),
        lexical_blend: selection.blend.clone(),
        candidates: Candidates {
            head_only: Scores::from(&selection.head),
            finetuned: selection.finetuned.as_ref().map(Scores::from),
            lexical: selection.lexical.as_ref().map(Scores::from),
        },
        baseline: BaselineReport {
            method: baseline::method(run.req.modality).into(),
            scores: Scores::from(&base),
        },
        transfer_gain: TransferGain {
            accuracy: metrics.accuracy - base.accuracy,
            macro_f1: metrics.macro_f1 - base.macro_f1,
        },
        calibration,
        suspects: suspects.len(),
        train_seconds: run.started.elapsed().as_secs_f64(),
        metrics,
    };
    (report, suspects)
}

pub(crate) fn validation_report(
    spec: &ValidationSpec,
    n: usize,
    num_valid: usize,
) -> ValidationReport {
    match *spec {
        ValidationSpec::Holdout { fraction } => ValidationReport::Holdout {
            fraction,
            num_train: n - num_valid,
            num_valid,
        },
        ValidationSpec::Kfold { folds } => ValidationReport::Kfold {
            folds,
            num_valid,
            note: "metrics are out-of-fold: every example predicted by a model that did not train on it".into(),
        },
    }
}

/// Each fold's metrics, for the candidate that was kept.
fn fold_reports(crossfit: &CrossFit, chosen: &[Vec<f32>], labels: &[String]) -> Vec<FoldReport> {
    let y = &crossfit.held.y;
    let mut start = 0;
    crossfit
        .splits
        .iter()
        .enumerate()
        .map(|(f, s)| {
            let end = start + s.num_valid;
            let m = evaluate(
                &softmax_rows(&chosen[start..end], 1.0),
                &y[start..end],
                labels,
            );
            start = end;
            FoldReport {
                fold: f + 1,
                num_valid: s.num_valid,
                head_only: s.head,
                finetuned: s.finetuned,
                accuracy: m.accuracy,
                macro_f1: m.macro_f1,
                log_loss: m.log_loss,
            }
        })
        .collect()
}
