//! Fine-tuning: the backbone (all of it, or its top blocks) trains together with the head,
//! at a much lower learning rate (discriminative rates), with linear warm-up then cosine
//! decay, and early stopping on validation loss that restores the best checkpoint.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::defaults::Recipe;
use super::features::Standardizer;
use super::head::{Head, balanced_class_weights, cross_entropy, soft_targets};
use super::head_train::{Evaluation, evaluate_logits};
use super::hyper::{ClassWeights, Unfreeze};
use super::inputs::{BatchOptions, make_batch};
use super::optim::{GroupedAdamW, ParamGroup, l1_penalty, warmup_cosine};
use super::{Example, Observer, TrainError, TrainResult, check_cancel};
use crate::backbones::efficientnet::Augment;
use crate::backbones::registry::LoadedBackbone;
use crate::store::jobs::Stage;

const EVAL_BATCH: usize = 32;

pub struct FinetuneResult {
    /// Validation result of the best checkpoint, if it beat the starting point.
    pub best: Option<Evaluation>,
    pub best_epoch: u32,
    pub epochs_run: u32,
}

/// The backbone's variables that `unfreeze` trains.
pub fn trainable_vars(bb: &LoadedBackbone, unfreeze: Unfreeze) -> Vec<(String, Var)> {
    let blocks = bb.net.num_blocks();
    bb.net
        .named_vars()
        .into_iter()
        .filter(|(name, _)| match unfreeze {
            Unfreeze::All => true,
            Unfreeze::Top(k) => bb
                .net
                .block_of(name)
                .is_some_and(|b| b + k.min(blocks) >= blocks),
        })
        .collect()
}

/// The image augmentation a recipe asks for (none for text).
pub fn augmentation(recipe: &Recipe) -> Option<Augment> {
    recipe.augment.as_ref().map(|a| Augment {
        crop_scale: if a.crop { (0.6, 1.0) } else { (1.0, 1.0) },
        crop_ratio: if a.crop {
            (3.0 / 4.0, 4.0 / 3.0)
        } else {
            (1.0, 1.0)
        },
        hflip: a.flip,
        brightness: a.color_jitter,
        contrast: a.color_jitter,
        saturation: a.color_jitter,
    })
}

/// Logits of the backbone+head in inference mode.
pub fn predict_logits(
    bb: &LoadedBackbone,
    head: &Head,
    standardizer: &Standardizer,
    examples: &[&Example],
    recipe: &Recipe,
    device: &Device,
) -> TrainResult<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(examples.len());
    let opts = BatchOptions {
        max_length: recipe.max_length,
        augment: None,
    };
    for chunk in examples.chunks(EVAL_BATCH) {
        let batch = make_batch(bb, chunk, &opts, None, device)?;
        let feats = bb.net.forward(&batch, false)?.detach();
        let logits = head.forward(&standardizer.apply(&feats)?, false)?;
        out.extend(logits.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// How long one fine-tuning run goes.
pub struct FinetunePlan {
    pub epochs: u32,
    /// Stop (keeping the best checkpoint so far) once this instant passes.
    pub deadline: Option<Instant>,
    /// Added to every epoch event (e.g. the fold number).
    pub tags: serde_json::Map<String, serde_json::Value>,
}

#[allow(clippy::too_many_arguments)]
pub fn finetune(
    bb: &LoadedBackbone,
    head: &Head,
    standardizer: &Standardizer,
    train: &[&Example],
    valid: &[&Example],
    start: Option<&Evaluation>,
    recipe: &Recipe,
    plan: &FinetunePlan,
    device: &Device,
    obs: &mut dyn Observer,
) -> TrainResult<FinetuneResult> {
    let classes = head.num_classes();
    let backbone_vars = trainable_vars(bb, recipe.unfreeze);
    if backbone_vars.is_empty() {
        return Err(TrainError::Data(
            "no backbone weights selected by `unfreeze`; use \"all\" or a number of top blocks"
                .into(),
        ));
    }
    let mut opt = GroupedAdamW::new(vec![
        ParamGroup {
            vars: backbone_vars.iter().map(|(_, v)| v.clone()).collect(),
            lr: recipe.backbone_lr,
            weight_decay: recipe.weight_decay,
        },
        ParamGroup {
            vars: head.vars(),
            lr: recipe.finetune_head_lr,
            weight_decay: recipe.weight_decay,
        },
    ])?;
    let class_weights = match recipe.class_weights {
        ClassWeights::Balanced => Some(balanced_class_weights(
            &train.iter().map(|e| e.label).collect::<Vec<_>>(),
            classes,
        )),
        ClassWeights::None => None,
    };
    let batch_size = recipe.batch_size.clamp(1, train.len().max(1));
    let steps_per_epoch = train.len().div_ceil(batch_size);
    let epochs = plan.epochs;
    let total = steps_per_epoch * epochs as usize;
    let warmup = (total / 10).max(1);
    let valid_y: Vec<usize> = valid.iter().map(|e| e.label).collect();

    let mut rng = StdRng::seed_from_u64(recipe.seed ^ 0xF17E);
    let mut aug_rng = StdRng::seed_from_u64(recipe.seed ^ 0xA06);
    let augment = augmentation(recipe);
    let opts = BatchOptions {
        max_length: recipe.max_length,
        augment: augment.as_ref(),
    };
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best_loss = start.map(|e| e.loss);
    let mut best: Option<(Evaluation, Vec<Tensor>, Vec<Tensor>, u32)> = None;
    let mut since_best = 0;
    let mut step = 0usize;
    let mut epochs_run = 0;

    for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let mut out_of_time = false;
        let mut seen = 0usize;
        for chunk in order.chunks(batch_size) {
            check_cancel(obs)?;
            if plan.deadline.is_some_and(|d| Instant::now() >= d) {
                out_of_time = true;
                break;
            }
            let examples: Vec<&Example> = chunk.iter().map(|&i| train[i]).collect();
            let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
            let batch = make_batch(bb, &examples, &opts, Some(&mut aug_rng), device)?;
            let feats = bb.net.forward(&batch, true)?;
            let logits = head.forward(&standardizer.apply(&feats)?, true)?;
            let targets = soft_targets(
                &labels,
                classes,
                recipe.label_smoothing as f32,
                class_weights.as_deref(),
                device,
            )?;
            let mut loss = cross_entropy(&logits, &targets)?;
            if let Some(p) = l1_penalty(&head.weight_vars(), recipe.l1)? {
                loss = (loss + p)?;
            }
            opt.set_lr_factor(warmup_cosine(step, total, warmup));
            opt.step(&loss.backward()?)?;
            step += 1;
            loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            seen += chunk.len();
            let preds = logits.argmax(1)?.to_vec1::<u32>()?;
            correct += preds
                .iter()
                .zip(&labels)
                .filter(|(p, l)| **p as usize == **l)
                .count();
            obs.progress(epoch, epochs, step as f64 / total as f64);
        }
        if seen == 0 {
            obs.log("fine-tuning: time budget reached; keeping the best checkpoint so far");
            break;
        }
        epochs_run = epoch;
        let mut metrics = json!({
            "train_loss": loss_sum / seen as f64,
            "train_accuracy": correct as f64 / seen as f64,
            "lr_backbone": recipe.backbone_lr * warmup_cosine(step.saturating_sub(1), total, warmup),
        });
        let mut stop = false;
        if !valid.is_empty() {
            let logits = predict_logits(bb, head, standardizer, valid, recipe, device)?;
            let eval = evaluate_logits(&logits, &valid_y);
            metrics["val_loss"] = json!(eval.loss);
            metrics["val_accuracy"] = json!(eval.accuracy);
            if best_loss.is_none_or(|b| eval.loss < b - 1e-6) {
                best_loss = Some(eval.loss);
                let bb_snap = backbone_vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().copy())
                    .collect::<candle_core::Result<Vec<_>>>()?;
                best = Some((eval, bb_snap, head.snapshot()?, epoch));
                since_best = 0;
            } else {
                since_best += 1;
                stop = recipe.early_stopping_patience > 0
                    && since_best >= recipe.early_stopping_patience;
            }
        }
        for (k, v) in &plan.tags {
            metrics[k] = v.clone();
        }
        obs.epoch(Stage::Finetuning, epoch, epochs, metrics);
        if out_of_time {
            obs.log("fine-tuning: time budget reached; keeping the best checkpoint so far");
            break;
        }
        if stop {
            obs.log(&format!(
                "fine-tuning: early stop after epoch {epoch} (no validation improvement for {} epochs)",
                recipe.early_stopping_patience
            ));
            break;
        }
    }
    if valid.is_empty() {
        // Nothing to select on: keep the final weights.
        return Ok(FinetuneResult {
            best: None,
            best_epoch: epochs_run,
            epochs_run,
        });
    }
    Ok(match best {
        Some((eval, bb_snap, head_snap, epoch)) => {
            for ((_, v), t) in backbone_vars.iter().zip(&bb_snap) {
                v.set(t)?;
            }
            head.restore(&head_snap)?;
            FinetuneResult {
                best: Some(eval),
                best_epoch: epoch,
                epochs_run,
            }
        }
        None => FinetuneResult {
            best: None,
            best_epoch: 0,
            epochs_run,
        },
    })
}
