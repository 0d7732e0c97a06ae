//! The no-transfer baseline of the task runs, on the same splits as the model: ridge on
//! TF-IDF of words (text) or raw pixels (images) for regression, each label's training
//! frequency for multi-label. What the pre-trained backbone adds is measured against it.

use candle_core::Tensor;

use super::Targets;
use super::head::{TaskHead, flat, ridge_head};
use crate::backbones::Modality;
use crate::datasets::Task;
use crate::train::TrainResult;
use crate::train::baseline::BaselineData;
use crate::train::features::{Standardizer, select_rows};
use crate::train::fit::Prepared;
use crate::train::lexical::Lexicon;

/// Vocabulary of the TF-IDF baseline.
const BASELINE_TERMS: usize = 4096;

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
pub fn baseline_outputs(
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

pub fn baseline_method(modality: Modality) -> &'static str {
    match modality {
        Modality::Text => {
            "ridge regression on TF-IDF of words and word pairs, alpha by cross-validation: no pre-trained knowledge"
        }
        Modality::Image => {
            "ridge regression on raw 16x16 RGB pixels, alpha by cross-validation: no pre-trained knowledge"
        }
    }
}
