//! The task flow: on each split, the head on standardised cached features, the fine-tuned
//! candidate when the recipe fine-tunes, and the baseline, their held-out outputs gathered;
//! selection between the two candidates; the final model; the report; the files.

use candle_core::Tensor;

use super::Targets;
use super::baseline::baseline_outputs;
use super::evaluate::{Chosen, evaluate, report_line};
use super::head::{TaskHead, fit_head, head_outputs};
use super::report::{Interval, RunReport};
use super::select::select;
use super::tune::{TunedFit, tune_split};
use crate::backbones::Modality;
use crate::backbones::registry::LoadedBackbone;
use crate::store::jobs::Stage;
use crate::train::artifact::{FORMAT_VERSION, ModelArtifact, ModelConfig, tensor_names};
use crate::train::fit::Prepared;
use crate::train::report::{Candidate, FinalFit};
use crate::train::training_loop::FitTag;
use crate::train::{Observer, TrainOutcome, TrainResult, check_cancel};

/// Held-out outputs over every split, parallel to `rows`.
#[derive(Default)]
pub struct Held {
    pub rows: Vec<usize>,
    /// The head on frozen features.
    pub head: Vec<Vec<f64>>,
    /// The fine-tuned candidate (empty when the recipe does not fine-tune).
    pub tuned: Vec<Vec<f64>>,
    pub baseline: Vec<Vec<f64>>,
    /// Regression: the training mean of each row's split.
    pub mean: Vec<f64>,
}

/// The holdout split's models (k-fold refits on all rows instead).
struct SplitModels {
    head: TaskHead,
    tuned: Option<TunedFit>,
}

/// The model that is packaged: its head, and the tuned backbone when fine-tuning won.
struct FinalModel {
    head: TaskHead,
    backbone: Option<LoadedBackbone>,
}

fn tunes(run: &Prepared) -> bool {
    run.recipe.finetune_epochs > 0
}

fn split_tag(kfold: bool, f: usize) -> FitTag {
    if kfold {
        FitTag::Fold(f + 1)
    } else {
        FitTag::Plain
    }
}

/// Fits both candidates and the baseline on every split, gathering held-out outputs.
fn cross_fit(run: &Prepared, obs: &mut dyn Observer) -> TrainResult<(Held, Option<SplitModels>)> {
    let kfold = run.splits.len() > 1;
    let mut held = Held::default();
    let mut holdout = None;
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
        let head = fit_head(run, &run.features, &s.train, obs)?;
        held.rows.extend_from_slice(&s.valid);
        held.head
            .extend(head_outputs(run, &run.features, &head, &s.valid)?);
        let tuned = match tunes(run) {
            true => Some(tune_split(run, &head, &s.train, split_tag(kfold, f), obs)?),
            false => None,
        };
        if let Some(t) = &tuned {
            held.tuned
                .extend(head_outputs(run, &t.features, &t.head, &s.valid)?);
        }
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
            holdout = Some(SplitModels { head, tuned });
        }
    }
    Ok((held, holdout))
}

/// The chosen candidate, refitted on all rows after k-fold (the holdout split's as it is).
fn final_model(
    run: &Prepared,
    candidate: Candidate,
    holdout: Option<SplitModels>,
    obs: &mut dyn Observer,
) -> TrainResult<(FinalModel, Option<FinalFit>)> {
    if let Some(m) = holdout {
        return Ok(match (candidate, m.tuned) {
            (Candidate::Finetuned, Some(t)) => (
                FinalModel {
                    head: t.head,
                    backbone: Some(t.backbone),
                },
                None,
            ),
            _ => (
                FinalModel {
                    head: m.head,
                    backbone: None,
                },
                None,
            ),
        });
    }
    let n = run.req.examples.len();
    obs.log(&format!("final model on all {n} examples"));
    let all: Vec<usize> = (0..n).collect();
    let frozen = fit_head(run, &run.features, &all, obs)?;
    let finetuned = candidate == Candidate::Finetuned;
    let info = FinalFit {
        head_epochs: 0,
        finetune_epochs: if finetuned {
            run.recipe.finetune_epochs
        } else {
            0
        },
        num_train: n,
    };
    let model = match finetuned {
        true => {
            let t = tune_split(run, &frozen, &all, FitTag::Final, obs)?;
            FinalModel {
                head: t.head,
                backbone: Some(t.backbone),
            }
        }
        false => FinalModel {
            head: frozen,
            backbone: None,
        },
    };
    Ok((model, Some(info)))
}

pub fn train_task(run: &Prepared, obs: &mut dyn Observer) -> TrainResult<TrainOutcome> {
    let (held, holdout) = cross_fit(run, obs)?;
    let (candidate, reason) = match tunes(run) {
        true => select(&run.req.targets, &held.rows, &held.head, &held.tuned),
        false => (
            Candidate::HeadOnly,
            "the recipe does not fine-tune the backbone here (finetune_epochs = 0): the head on frozen features is the model".to_string(),
        ),
    };
    obs.log(&format!("selected {}: {reason}", candidate.describe()));
    let (model, final_fit) = final_model(run, candidate, holdout, obs)?;
    check_cancel(obs)?;
    obs.stage(Stage::Evaluating, "measuring the model on held-out data");
    let outputs = match candidate {
        Candidate::Finetuned => &held.tuned,
        Candidate::HeadOnly => &held.head,
    };
    let chosen = Chosen {
        candidate,
        reason,
        head_note: model.head.note.clone(),
    };
    let (report, thresholds, interval) = evaluate(run, &held, outputs, chosen, final_fit);
    obs.log(&report_line(&report));
    let artifact = package(run, &model, thresholds, interval)?;
    Ok(TrainOutcome {
        recipe: run.recipe.clone(),
        report: RunReport::Task(Box::new(report)),
        artifact,
    })
}

fn package(
    run: &Prepared,
    model: &FinalModel,
    thresholds: Option<Vec<f64>>,
    interval: Option<Interval>,
) -> TrainResult<ModelArtifact> {
    let head = &model.head;
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
            finetuned_backbone: model.backbone.is_some(),
            lexical: None,
            task: req.targets.task(),
            interval_half_width: interval.map(|i| i.half_width),
            thresholds,
        },
        tensors,
        backbone: match &model.backbone {
            Some(b) => Some(b.net.export_weights()?),
            None => None,
        },
        suspects: Vec::new(),
    })
}
