//! The task heads, fitted in closed form (or nearly) on standardised features: ridge
//! regression toward standardised targets, or one logistic regression per label, each with
//! its regularisation chosen by inner cross-validation on the training rows. The same
//! fitting serves frozen features and the features of a fine-tuned backbone.

use candle_core::Tensor;

use super::Targets;
use super::ridge::RidgeProblem;
use crate::datasets::Task;
use crate::store::jobs::Stage;
use crate::train::features::{Standardizer, select_rows};
use crate::train::fit::Prepared;
use crate::train::logreg::Problem;
use crate::train::{Observer, TrainResult, check_cancel};

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
    pub fn outputs(&self, task: Task, x: &[f32], d: usize) -> Vec<Vec<f64>> {
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

pub fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Mean and standard deviation of regression targets (the deviation floored above 0).
pub fn target_scale(y: &[f64]) -> (f64, f64) {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-12);
    (mean, std)
}

/// Ridge on `x` rows (standardised) toward `y`, in standardised-target units, mapped back.
pub fn ridge_head(x: &[f32], d: usize, y: &[f64], seed: u64) -> (Vec<f32>, Vec<f32>, String) {
    let (mean, std) = target_scale(y);
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

/// Fits the task's head on rows `train` of `features` (the frozen backbone's, or a
/// fine-tuned one's: `[N, D]`, every example).
pub fn fit_head(
    run: &Prepared,
    features: &Tensor,
    train: &[usize],
    obs: &mut dyn Observer,
) -> TrainResult<TaskHead> {
    check_cancel(obs)?;
    obs.stage(
        Stage::TrainingHead,
        "training the new head on cached features",
    );
    let raw = select_rows(features, train)?;
    let standardizer = Standardizer::fit(&raw)?;
    let x = flat(&standardizer.apply(&raw)?)?;
    let d = features.dims()[1];
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

/// The head's outputs on rows `rows` of `features`.
pub fn head_outputs(
    run: &Prepared,
    features: &Tensor,
    head: &TaskHead,
    rows: &[usize],
) -> TrainResult<Vec<Vec<f64>>> {
    let x = flat(&head.standardizer.apply(&select_rows(features, rows)?)?)?;
    Ok(head.outputs(run.req.targets.task(), &x, features.dims()[1]))
}
