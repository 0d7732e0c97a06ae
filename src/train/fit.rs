//! Fitting the model on one split of the data — the holdout split, or one fold — and on
//! all of it (the final model after cross-validation): the head on cached features, then
//! optionally fine-tuning, which is kept only if it beat the head on validation loss.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::json;

use super::defaults::Recipe;
use super::features::Standardizer;
use super::finetune::{FinetunePlan, finetune, predict_logits as ft_logits};
use super::head::{Head, balanced_class_weights};
use super::head_train::{Evaluation, HeadTrainConfig, predict_logits, train_head};
use super::hyper::ClassWeights;
use super::{Example, Observer, TrainRequest, TrainResult, check_cancel};
use crate::backbones::WeightsMode;
use crate::backbones::registry::{LoadedBackbone, Registry};
use crate::store::jobs::Stage;

/// What every fit shares.
pub struct FitContext<'a> {
    pub req: &'a TrainRequest,
    pub recipe: &'a Recipe,
    pub registry: &'a Registry,
    pub backbone_id: &'a str,
    /// Features of every example from the frozen backbone `[N, D]`.
    pub features: &'a Tensor,
    pub labels: &'a [usize],
    pub classes: usize,
    pub device: Device,
    pub deadline: Option<Instant>,
}

/// The outcome of fitting on one split.
pub struct SplitFit {
    pub head: Head,
    pub standardizer: Standardizer,
    pub head_eval: Option<Evaluation>,
    pub head_best_epoch: u32,
    /// Head-only logits on the split's validation rows.
    pub head_logits: Vec<Vec<f32>>,
    /// Set when fine-tuning beat the head on validation loss.
    pub finetuned: Option<FinetunedFit>,
    /// Best fine-tuning epoch (0 when fine-tuning did not help or did not run).
    pub finetune_best_epoch: u32,
    pub finetune_ran: bool,
}

pub struct FinetunedFit {
    pub eval: Evaluation,
    pub logits: Vec<Vec<f32>>,
    pub backbone: LoadedBackbone,
}

impl SplitFit {
    /// Validation logits of the better candidate.
    pub fn best_logits(&self) -> &[Vec<f32>] {
        self.finetuned
            .as_ref()
            .map_or(&self.head_logits, |f| &f.logits)
    }
}

impl FitContext<'_> {
    fn rows(&self, idx: &[usize]) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        self.features
            .index_select(&Tensor::from_vec(ids, idx.len(), &self.device)?, 0)
    }

    fn examples(&self, idx: &[usize]) -> Vec<&Example> {
        idx.iter().map(|&i| &self.req.examples[i]).collect()
    }

    pub fn head_config(
        &self,
        train_y: &[usize],
        epochs: u32,
        tags: &serde_json::Map<String, serde_json::Value>,
    ) -> HeadTrainConfig {
        let r = self.recipe;
        HeadTrainConfig {
            epochs,
            batch_size: r.head_batch_size,
            lr: r.head_lr,
            weight_decay: r.weight_decay,
            l1: r.l1,
            label_smoothing: r.label_smoothing as f32,
            class_weights: match r.class_weights {
                ClassWeights::Balanced => Some(balanced_class_weights(train_y, self.classes)),
                ClassWeights::None => None,
            },
            patience: (r.early_stopping_patience * 5).max(5),
            seed: r.seed,
            tags: tags.clone(),
        }
    }

    /// Head, then fine-tuning when asked, on `train`, validated on `valid` (which may be
    /// empty: then nothing is selected and the final weights are kept).
    pub fn fit(
        &self,
        train: &[usize],
        valid: &[usize],
        finetune_epochs: u32,
        head_epochs: u32,
        tags: serde_json::Map<String, serde_json::Value>,
        obs: &mut dyn Observer,
    ) -> TrainResult<SplitFit> {
        let r = self.recipe;
        let train_y: Vec<usize> = train.iter().map(|&i| self.labels[i]).collect();
        let valid_y: Vec<usize> = valid.iter().map(|&i| self.labels[i]).collect();
        let train_raw = self.rows(train)?;
        let standardizer = Standardizer::fit(&train_raw)?;
        let train_x = standardizer.apply(&train_raw)?;
        let valid_x = if valid.is_empty() {
            None
        } else {
            Some(standardizer.apply(&self.rows(valid)?)?)
        };

        check_cancel(obs)?;
        obs.stage(
            Stage::TrainingHead,
            "training the new head on cached features",
        );
        let head = Head::new(
            self.features.dims()[1],
            self.classes,
            r.hidden_units,
            r.dropout as f32,
            r.seed,
            &self.device,
        )?;
        let cfg = self.head_config(&train_y, head_epochs, &tags);
        let pair = valid_x.as_ref().map(|x| (x, valid_y.as_slice()));
        let head_result = train_head(&head, &train_x, &train_y, pair, &cfg, obs)?;
        let head_logits = match &valid_x {
            Some(x) => predict_logits(&head, x)?,
            None => Vec::new(),
        };
        let mut fit = SplitFit {
            head_eval: head_result.best.clone(),
            head_best_epoch: head_result.best_epoch,
            head_logits,
            finetuned: None,
            finetune_best_epoch: 0,
            finetune_ran: false,
            head,
            standardizer,
        };
        if finetune_epochs == 0 {
            return Ok(fit);
        }

        check_cancel(obs)?;
        obs.stage(
            Stage::Finetuning,
            "fine-tuning the backbone at a low rate, with the head",
        );
        let snapshot = fit.head.snapshot()?;
        let trainable = self
            .registry
            .load(self.backbone_id, None, WeightsMode::Trainable)?;
        let train_ex = self.examples(train);
        let valid_ex = self.examples(valid);
        let plan = FinetunePlan {
            epochs: finetune_epochs,
            deadline: self.deadline,
            tags,
        };
        let ft = finetune(
            &trainable,
            &fit.head,
            &fit.standardizer,
            &train_ex,
            &valid_ex,
            fit.head_eval.as_ref(),
            r,
            &plan,
            &self.device,
            obs,
        )?;
        fit.finetune_ran = true;
        match ft.best {
            Some(eval) => {
                let logits = ft_logits(
                    &trainable,
                    &fit.head,
                    &fit.standardizer,
                    &valid_ex,
                    r,
                    &self.device,
                )?;
                fit.finetune_best_epoch = ft.best_epoch;
                fit.finetuned = Some(FinetunedFit {
                    eval,
                    logits,
                    backbone: trainable,
                });
            }
            None if valid.is_empty() => {
                // No validation (final fit on all data): the fine-tuned weights are the model.
                fit.finetune_best_epoch = ft.epochs_run;
                fit.finetuned = Some(FinetunedFit {
                    eval: Evaluation {
                        loss: f64::NAN,
                        accuracy: f64::NAN,
                    },
                    logits: Vec::new(),
                    backbone: trainable,
                });
            }
            None => fit.head.restore(&snapshot)?,
        }
        Ok(fit)
    }
}

/// JSON of a validation result.
pub fn eval_json(e: &Evaluation) -> serde_json::Value {
    json!({"val_loss": e.loss, "val_accuracy": e.accuracy})
}
