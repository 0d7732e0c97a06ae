//! One training run from start to finish: resolve the recipe, split, extract features,
//! train the head, fine-tune, choose by validation, evaluate, and package the model.

use std::sync::Arc;

use candle_core::Tensor;
use serde_json::{Value, json};

use super::artifact::{FORMAT_VERSION, ModelArtifact, ModelConfig};
use super::defaults::{Recipe, resolve};
use super::features::{Standardizer, extract};
use super::finetune::{finetune, predict_logits as ft_logits};
use super::head::{Head, balanced_class_weights};
use super::head_train::{Evaluation, HeadTrainConfig, predict_logits, train_head};
use super::hyper::{ClassWeights, DataProfile, ValidationSpec};
use super::metrics::{evaluate, softmax_rows};
use super::{Example, Observer, TrainError, TrainRequest, TrainResult, check_cancel};
use crate::backbones::registry::Registry;
use crate::backbones::{Modality, WeightsMode};
use crate::datasets::split;
use crate::store::jobs::Stage;

/// Runs training jobs against the installed backbones.
pub struct Engine {
    pub registry: Arc<Registry>,
}

/// What a successful run produced.
pub struct TrainOutcome {
    pub recipe: Recipe,
    /// The model's metrics and how it was chosen (shown on the model and the job).
    pub report: Value,
    pub artifact: ModelArtifact,
}

fn profile(req: &TrainRequest) -> DataProfile {
    let mut counts = vec![0usize; req.labels.len()];
    for e in &req.examples {
        counts[e.label] += 1;
    }
    DataProfile {
        modality: req.modality,
        num_examples: req.examples.len(),
        num_classes: req.labels.len(),
        smallest_class: counts.iter().copied().min().unwrap_or(0),
        largest_class: counts.iter().copied().max().unwrap_or(0),
    }
}

fn eval_json(e: &Evaluation) -> Value {
    json!({"val_loss": e.loss, "val_accuracy": e.accuracy})
}

impl Engine {
    /// Picks the backbone: the one asked for, or the modality's default for `"auto"`.
    pub fn resolve_backbone(&self, req: &TrainRequest) -> (String, Option<String>) {
        if req.backbone == "auto" {
            let id = self.registry.default_for(req.modality);
            (
                id.to_string(),
                Some(format!("the default {} backbone", req.modality.as_str())),
            )
        } else {
            (req.backbone.clone(), None)
        }
    }

    pub fn train(&self, req: &TrainRequest, obs: &mut dyn Observer) -> TrainResult<TrainOutcome> {
        obs.stage(
            Stage::Preparing,
            "resolving the recipe and splitting the data",
        );
        let data = profile(req);
        if data.num_classes < 2 || data.smallest_class == 0 {
            return Err(TrainError::Data(
                "every label needs at least one example and there must be 2 labels or more".into(),
            ));
        }
        let (backbone_id, backbone_reason) = self.resolve_backbone(req);
        let recipe = resolve(
            &req.hyperparameters,
            req.validation.as_ref(),
            &backbone_id,
            backbone_reason,
            req.seed,
            &data,
        );
        obs.recipe(&serde_json::to_value(&recipe).expect("recipe serialises"));
        let device = self.registry.device().clone();
        let frozen = self.registry.frozen(&backbone_id)?;
        if frozen.modality != req.modality {
            return Err(TrainError::Data(format!(
                "backbone {backbone_id} is for {} data, the dataset is {}",
                frozen.modality.as_str(),
                req.modality.as_str()
            )));
        }

        let labels: Vec<usize> = req.examples.iter().map(|e| e.label).collect();
        let classes = req.labels.len();
        let fraction = match recipe.validation {
            ValidationSpec::Holdout { fraction } => fraction,
            ValidationSpec::Kfold { folds } => 1.0 / folds as f64,
        };
        let split = split::holdout(&labels, classes, fraction, recipe.seed);
        let train_ex: Vec<&Example> = split.train.iter().map(|&i| &req.examples[i]).collect();
        let valid_ex: Vec<&Example> = split.valid.iter().map(|&i| &req.examples[i]).collect();
        let train_y: Vec<usize> = split.train.iter().map(|&i| labels[i]).collect();
        let valid_y: Vec<usize> = split.valid.iter().map(|&i| labels[i]).collect();
        obs.log(&format!(
            "{} training and {} validation examples, {classes} classes",
            train_ex.len(),
            valid_ex.len()
        ));

        // Feature extraction: the frozen backbone runs once per example.
        obs.stage(
            Stage::ExtractingFeatures,
            "running the frozen backbone once per example",
        );
        let feats = extract(&frozen, &req.examples, recipe.max_length, &device, obs)?;
        let index = |idx: &[usize]| -> candle_core::Result<Tensor> {
            let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            feats.index_select(&Tensor::from_vec(ids, idx.len(), &device)?, 0)
        };
        let train_raw = index(&split.train)?;
        let standardizer = Standardizer::fit(&train_raw)?;
        let train_x = standardizer.apply(&train_raw)?;
        let valid_x = if split.valid.is_empty() {
            None
        } else {
            Some(standardizer.apply(&index(&split.valid)?)?)
        };

        // Head on cached features.
        check_cancel(obs)?;
        obs.stage(
            Stage::TrainingHead,
            "training the new head on cached features",
        );
        let dim = frozen.net.embedding_dim();
        let head = Head::new(
            dim,
            classes,
            recipe.hidden_units,
            recipe.dropout as f32,
            recipe.seed,
            &device,
        )?;
        let class_weights = match recipe.class_weights {
            ClassWeights::Balanced => Some(balanced_class_weights(&train_y, classes)),
            ClassWeights::None => None,
        };
        let head_cfg = HeadTrainConfig {
            epochs: recipe.head_epochs,
            batch_size: recipe.head_batch_size,
            lr: recipe.head_lr,
            weight_decay: recipe.weight_decay,
            l1: recipe.l1,
            label_smoothing: recipe.label_smoothing as f32,
            class_weights,
            patience: (recipe.early_stopping_patience * 5).max(5),
            seed: recipe.seed,
        };
        let valid_pair = valid_x.as_ref().map(|x| (x, valid_y.as_slice()));
        let head_result = train_head(&head, &train_x, &train_y, valid_pair, &head_cfg, obs)?;
        let head_snapshot = head.snapshot()?;
        let mut candidates = json!({
            "head_only": head_result.best.as_ref().map(eval_json),
        });

        // Fine-tuning, competing with the head-only model on validation.
        let mut finetuned = None;
        if recipe.finetune_epochs > 0 {
            check_cancel(obs)?;
            obs.stage(
                Stage::Finetuning,
                "fine-tuning the backbone at a low rate, with the head",
            );
            let trainable = self
                .registry
                .load(&backbone_id, None, WeightsMode::Trainable)?;
            let ft = finetune(
                &trainable,
                &head,
                &standardizer,
                &train_ex,
                &valid_ex,
                head_result.best.as_ref(),
                &recipe,
                &device,
                obs,
            )?;
            candidates["finetuned"] = json!({
                "best_epoch": ft.best_epoch,
                "epochs_run": ft.epochs_run,
                "validation": ft.best.as_ref().map(eval_json),
            });
            let keep = valid_ex.is_empty() || ft.best.is_some();
            if keep {
                finetuned = Some(trainable);
            } else {
                head.restore(&head_snapshot)?;
            }
        }

        // Evaluation of the chosen model on validation data.
        check_cancel(obs)?;
        obs.stage(
            Stage::Evaluating,
            "measuring the chosen model on validation data",
        );
        let (selected, reason) = match (&finetuned, recipe.finetune_epochs) {
            (Some(_), _) => (
                "finetuned",
                "fine-tuning lowered the validation loss below the head-only model's",
            ),
            (None, 0) => ("head_only", "finetune_epochs = 0: head only"),
            (None, _) => (
                "head_only",
                "fine-tuning did not beat the head-only model on validation loss",
            ),
        };
        let valid_logits = match (&finetuned, &valid_x) {
            (_, None) => Vec::new(),
            (Some(bb), Some(_)) => {
                ft_logits(bb, &head, &standardizer, &valid_ex, &recipe, &device)?
            }
            (None, Some(vx)) => predict_logits(&head, vx)?,
        };
        let probs = softmax_rows(&valid_logits, 1.0);
        let metrics = evaluate(&probs, &valid_y, &req.labels);
        let mut report = serde_json::to_value(&metrics).expect("metrics serialise");
        report["validation"] = json!({
            "strategy": "holdout",
            "fraction": fraction,
            "num_train": train_ex.len(),
            "num_valid": valid_ex.len(),
        });
        report["selected"] = json!(selected);
        report["selection_reason"] = json!(reason);
        report["candidates"] = candidates;

        let mut tensors = head.named_tensors();
        tensors.push(("features.mean".into(), standardizer.mean.clone()));
        tensors.push(("features.std".into(), standardizer.std.clone()));
        let backbone_weights = finetuned.as_ref().map(|bb| {
            // Every weight of the network (frozen ones included) so the file stands alone.
            bb.net
                .named_vars()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect()
        });
        let artifact = ModelArtifact {
            config: ModelConfig {
                format_version: FORMAT_VERSION,
                backbone: backbone_id.clone(),
                modality: req.modality,
                labels: req.labels.clone(),
                max_length: (req.modality == Modality::Text).then_some(recipe.max_length),
                resolution: frozen.prep.resolution(),
                hidden_units: recipe.hidden_units,
                dropout: recipe.dropout,
                temperature: 1.0,
                finetuned_backbone: finetuned.is_some(),
            },
            tensors,
            backbone: backbone_weights,
        };
        Ok(TrainOutcome {
            recipe,
            report,
            artifact,
        })
    }
}
