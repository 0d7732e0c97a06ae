//! The task flow: on each split, the head on standardised cached features and the
//! baselines, their held-out predictions gathered; the final model; the report; the files.

use candle_core::Tensor;

use super::Targets;
use super::metrics::{self, best_threshold, scatter};
use super::report::{Interval, RunReport, TaskBaseline, TaskMetrics, TaskReport, TransferGain};
use super::ridge::{RidgeProblem, shuffled_folds};
use crate::backbones::Modality;
use crate::datasets::Task;
use crate::store::jobs::Stage;
use crate::train::artifact::{FORMAT_VERSION, ModelArtifact, ModelConfig, tensor_names};
use crate::train::baseline::BaselineData;
use crate::train::evaluate::validation_report;
use crate::train::features::{Standardizer, select_rows};
use crate::train::fit::Prepared;
use crate::train::lexical::Lexicon;
use crate::train::logreg::Problem;
use crate::train::report::FinalFit;
use crate::train::{Observer, TrainOutcome, TrainResult, check_cancel};

/// Coverage of the regression interval.
const COVERAGE: f64 = 0.9;
/// Vocabulary of the TF-IDF baseline.
const BASELINE_TERMS: usize = 4096;

/// A linear head on standardised features: `k` outputs (1 for regression, already in the
/// target's units; one logit per label for multi-label).
pub struct TaskHead {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub k: usize,
    pub standardizer: Standardizer,
    pub note: String,
}

impl TaskHead {
    /// Outputs for rows `x` (`[n, d]` row-major, standardised): values, or label scores.
    fn outputs(&self, task: Task, x: &[f32], d: usize) -> Vec<Vec<f64>> {
        x.chunks(d)
            .map(|row| {
                (0..self.k)
                    .map(|j| {
                        let w = &self.weight[j * d..(j + 1) * d];
                        let z: f64 = w.iter().zip(row).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            + self.bias[j] as f64;
                        match task {
                            Task::Multilabel => 1.0 / (1.0 + (-z).exp()),
                            _ => z,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Ridge on `x` rows (standardised) toward `y`, in standardised-target units, mapped back.
fn ridge_head(x: &[f32], d: usize, y: &[f64], seed: u64) -> (Vec<f32>, Vec<f32>, String) {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-12);
    let ys: Vec<f64> = y.iter().map(|v| (v - mean) / std).collect();
    let (model, choice) = RidgeProblem { x, d, y: &ys }.fit_cv(seed);
    let weight = model.weight.iter().map(|w| (w * std) as f32).collect();
    let bias = vec![(model.bias * std + mean) as f32];
    let note = format!(
        "ridge regression on standardised targets, alpha = {} (chosen by {}-fold cross-validated squared error on {} training rows)",
        choice.alpha,
        choice.folds,
        y.len()
    );
    (weight, bias, note)
}

/// One binary logistic regression per label, each with its own cross-validated C.
fn logistic_heads(
    x: &[f32],
    d: usize,
    sets: &[&Vec<bool>],
    k: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, String) {
    let mut weight = vec![0f32; k * d];
    let mut bias = vec![0f32; k];
    let mut cs = Vec::with_capacity(k);
    for j in 0..k {
        let y: Vec<usize> = sets.iter().map(|s| s[j] as usize).collect();
        let pos = y.iter().sum::<usize>();
        if pos < 2 || pos + 2 > y.len() {
            // Too few of one side to fit: the label's training frequency.
            let p = ((pos as f64 + 0.5) / (y.len() as f64 + 1.0)).clamp(1e-4, 1.0 - 1e-4);
            bias[j] = (p / (1.0 - p)).ln() as f32;
            cs.push("frequency".to_string());
            continue;
        }
        let problem = Problem {
            x,
            d,
            y: &y,
            classes: 2,
            weights: None,
        };
        let cv = problem.choose_c(seed ^ j as u64);
        let m = problem.fit(cv.c, None);
        for c in 0..d {
            weight[j * d + c] = m.weight[d + c] - m.weight[c];
        }
        bias[j] = m.bias[1] - m.bias[0];
        cs.push(format!("{}", cv.c));
    }
    let note = format!(
        "one logistic regression per label (sigmoid outputs, binary cross-entropy), C per label chosen by cross-validated log loss on the training rows: {}",
        cs.join(", ")
    );
    (weight, bias, note)
}

/// Fits the task's head on rows `train`.
fn fit_head(run: &Prepared, train: &[usize], obs: &mut dyn Observer) -> TrainResult<TaskHead> {
    check_cancel(obs)?;
    obs.stage(
        Stage::TrainingHead,
        "training the new head on cached features",
    );
    let raw = select_rows(&run.features, train)?;
    let standardizer = Standardizer::fit(&raw)?;
    let x = flat(&standardizer.apply(&raw)?)?;
    let d = run.features.dims()[1];
    let seed = run.recipe.seed;
    let (weight, bias, note, k) = match &run.req.targets {
        Targets::Values(v) => {
            let y: Vec<f64> = train.iter().map(|&i| v[i]).collect();
            let (w, b, note) = ridge_head(&x, d, &y, seed);
            (w, b, note, 1)
        }
        Targets::Sets(s) => {
            let k = run.req.labels.len();
            let sets: Vec<&Vec<bool>> = train.iter().map(|&i| &s[i]).collect();
            let (w, b, note) = logistic_heads(&x, d, &sets, k, seed);
            (w, b, note, k)
        }
        Targets::Classes => unreachable!("classification runs the classification recipe"),
    };
    obs.log(&format!("head: {note}"));
    Ok(TaskHead {
        weight,
        bias,
        k,
        standardizer,
        note,
    })
}

/// The head's outputs on rows `rows`.
fn head_outputs(run: &Prepared, head: &TaskHead, rows: &[usize]) -> TrainResult<Vec<Vec<f64>>> {
    let x = flat(
        &head
            .standardizer
            .apply(&select_rows(&run.features, rows)?)?,
    )?;
    Ok(head.outputs(run.req.targets.task(), &x, run.features.dims()[1]))
}

/// The baseline's raw features (TF-IDF fitted on `train`, or pixels), standardised on `train`.
fn baseline_features(
    run: &Prepared,
    train: &[usize],
    valid: &[usize],
) -> TrainResult<(Vec<f32>, Vec<f32>, usize)> {
    let (all, d) = match &run.baseline {
        BaselineData::Text(docs) => {
            let lex = Lexicon::fit(docs, train, BASELINE_TERMS);
            let rows: Vec<usize> = (0..docs.len()).collect();
            let d = lex.dims();
            (
                Tensor::from_vec(
                    lex.matrix(docs, &rows),
                    (docs.len(), d),
                    &candle_core::Device::Cpu,
                )?,
                d,
            )
        }
        BaselineData::Pixels(p) => (p.clone(), p.dims()[1]),
    };
    let tr = select_rows(&all, train)?;
    let st = Standardizer::fit(&tr)?;
    Ok((
        flat(&st.apply(&tr)?)?,
        flat(&st.apply(&select_rows(&all, valid)?)?)?,
        d,
    ))
}

/// The no-transfer baseline's held-out outputs: ridge on TF-IDF or pixels (regression),
/// each label's training frequency (multi-label).
fn baseline_outputs(
    run: &Prepared,
    train: &[usize],
    valid: &[usize],
) -> TrainResult<Vec<Vec<f64>>> {
    match &run.req.targets {
        Targets::Values(v) => {
            let (xt, xv, d) = baseline_features(run, train, valid)?;
            let y: Vec<f64> = train.iter().map(|&i| v[i]).collect();
            let (w, b, _) = ridge_head(&xt, d, &y, run.recipe.seed ^ 0xBA5E);
            let head = TaskHead {
                weight: w,
                bias: b,
                k: 1,
                standardizer: dummy_std(run)?,
                note: String::new(),
            };
            Ok(head.outputs(Task::Regression, &xv, d))
        }
        Targets::Sets(s) => {
            let k = run.req.labels.len();
            let freq: Vec<f64> = (0..k)
                .map(|j| {
                    train.iter().filter(|&&i| s[i][j]).count() as f64 / train.len().max(1) as f64
                })
                .collect();
            Ok(vec![freq; valid.len()])
        }
        Targets::Classes => unreachable!("classification runs the classification recipe"),
    }
}

fn dummy_std(run: &Prepared) -> TrainResult<Standardizer> {
    let z = Tensor::zeros(1, candle_core::DType::F32, &run.device)?;
    Ok(Standardizer {
        mean: z.clone(),
        std: z,
    })
}

/// Held-out outputs over every split.
#[derive(Default)]
struct Held {
    rows: Vec<usize>,
    model: Vec<Vec<f64>>,
    baseline: Vec<Vec<f64>>,
    /// Regression: the training mean of each row's split.
    mean: Vec<f64>,
}

pub fn train_task(run: &Prepared, obs: &mut dyn Observer) -> TrainResult<TrainOutcome> {
    let kfold = run.splits.len() > 1;
    let mut held = Held::default();
    let mut holdout_head = None;
    for (f, s) in run.splits.iter().enumerate() {
        check_cancel(obs)?;
        let what = if kfold {
            format!("fold {}/{}: ", f + 1, run.splits.len())
        } else {
            String::new()
        };
        obs.log(&format!(
            "{what}{} training, {} validation examples",
            s.train.len(),
            s.valid.len()
        ));
        let head = fit_head(run, &s.train, obs)?;
        held.rows.extend_from_slice(&s.valid);
        held.model.extend(head_outputs(run, &head, &s.valid)?);
        held.baseline
            .extend(baseline_outputs(run, &s.train, &s.valid)?);
        if let Targets::Values(v) = &run.req.targets {
            let m = s.train.iter().map(|&i| v[i]).sum::<f64>() / s.train.len().max(1) as f64;
            held.mean.extend(std::iter::repeat_n(m, s.valid.len()));
        }
        obs.progress(
            f as u32 + 1,
            run.splits.len() as u32,
            (f + 1) as f64 / run.splits.len() as f64,
        );
        if !kfold {
            holdout_head = Some(head);
        }
    }
    let n = run.req.examples.len();
    let (head, final_fit) = match holdout_head {
        Some(h) => (h, None),
        None => {
            obs.log(&format!("final model on all {n} examples"));
            let all: Vec<usize> = (0..n).collect();
            let info = FinalFit {
                head_epochs: 0,
                finetune_epochs: 0,
                num_train: n,
            };
            (fit_head(run, &all, obs)?, Some(info))
        }
    };
    check_cancel(obs)?;
    obs.stage(Stage::Evaluating, "measuring the model on held-out data");
    let (report, thresholds, interval) = evaluate(run, &held, &head, final_fit);
    obs.log(&report_line(&report));
    let artifact = package(run, &head, thresholds, interval)?;
    Ok(TrainOutcome {
        recipe: run.recipe.clone(),
        report: RunReport::Task(Box::new(report)),
        artifact,
    })
}

fn report_line(r: &TaskReport) -> String {
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

fn evaluate(
    run: &Prepared,
    held: &Held,
    head: &TaskHead,
    final_fit: Option<FinalFit>,
) -> (TaskReport, Option<Vec<f64>>, Option<Interval>) {
    let validation = validation_report(
        &run.recipe.validation,
        run.req.examples.len(),
        held.rows.len(),
    );
    let finetuning = "the backbone is not fine-tuned for this task (fine-tuning is classification-only for now): the head is trained on frozen features".to_string();
    let mut report = TaskReport {
        task: run.req.targets.task(),
        metrics: TaskMetrics::Regression(metrics::regression(&[], &[])),
        validation,
        final_fit,
        head: head.note.clone(),
        finetuning,
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
            let pred: Vec<f64> = held.model.iter().map(|o| o[0]).collect();
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
            let (m, t) = multilabel_eval(&truth, &held.model, labels, run.recipe.seed);
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

fn baseline_method(modality: Modality) -> &'static str {
    match modality {
        Modality::Text => {
            "ridge regression on TF-IDF of words and word pairs, alpha by cross-validation: no pre-trained knowledge"
        }
        Modality::Image => {
            "ridge regression on raw 16x16 RGB pixels, alpha by cross-validation: no pre-trained knowledge"
        }
    }
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

fn package(
    run: &Prepared,
    head: &TaskHead,
    thresholds: Option<Vec<f64>>,
    interval: Option<Interval>,
) -> TrainResult<ModelArtifact> {
    let d = run.features.dims()[1];
    let dev = &run.device;
    let tensors = vec![
        (
            tensor_names::HEAD_WEIGHT.into(),
            Tensor::from_vec(head.weight.clone(), (head.k, d), dev)?,
        ),
        (
            tensor_names::HEAD_BIAS.into(),
            Tensor::from_vec(head.bias.clone(), head.k, dev)?,
        ),
        (
            tensor_names::FEATURES_MEAN.into(),
            head.standardizer.mean.clone(),
        ),
        (
            tensor_names::FEATURES_STD.into(),
            head.standardizer.std.clone(),
        ),
    ];
    let (req, recipe) = (run.req, &run.recipe);
    Ok(ModelArtifact {
        config: ModelConfig {
            format_version: FORMAT_VERSION,
            backbone: recipe.backbone.clone(),
            modality: req.modality,
            labels: req.labels.clone(),
            max_length: (req.modality == Modality::Text).then_some(recipe.max_length),
            resolution: run.frozen.prep.resolution(),
            hidden_units: 0,
            dropout: 0.0,
            temperature: 1.0,
            finetuned_backbone: false,
            lexical: None,
            task: req.targets.task(),
            interval_half_width: interval.map(|i| i.half_width),
            thresholds,
        },
        tensors,
        backbone: None,
        suspects: Vec::new(),
    })
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
