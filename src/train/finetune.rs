//! Fine-tuning: the backbone (all of it, or its top blocks) trains together with the head,
//! at a much lower learning rate (discriminative rates), with linear warm-up then cosine
//! decay, and early stopping on validation loss that restores the best checkpoint.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::features::Standardizer;
use super::head::{Head, balanced_class_weights};
use super::head_train::evaluate_logits;
use super::hyper::{ClassWeights, Unfreeze};
use super::inputs::{BatchOptions, by_cost, make_batch};
use super::optim::{GroupedAdamW, ParamGroup};
use super::recipe::Recipe;
use super::training_loop::{EarlyStopping, EpochStats, Evaluation, FitTag, LossSpec, Stepper};
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

/// The backbone's variables that `unfreeze` trains; an error naming the fix when it
/// selects none (every fine-tuning objective needs at least one).
pub fn trainable_vars(bb: &LoadedBackbone, unfreeze: Unfreeze) -> TrainResult<Vec<(String, Var)>> {
    let vars = selected_vars(bb, unfreeze);
    if vars.is_empty() {
        return Err(TrainError::Data(
            "no backbone weights selected by `unfreeze`; use \"all\" or a number of top blocks"
                .into(),
        ));
    }
    Ok(vars)
}

fn selected_vars(bb: &LoadedBackbone, unfreeze: Unfreeze) -> Vec<(String, Var)> {
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
    let mut out = vec![Vec::new(); examples.len()];
    let opts = BatchOptions {
        max_length: recipe.max_length,
        augment: None,
        flip: false,
    };
    for chunk in by_cost(bb, examples).chunks(EVAL_BATCH) {
        let batch_examples: Vec<&Example> = chunk.iter().map(|&i| examples[i]).collect();
        let batch = make_batch(bb, &batch_examples, &opts, None, device)?;
        let feats = bb.net.forward(&batch, false)?.detach();
        let logits = head.forward(&standardizer.apply(&feats)?, false)?;
        for (&i, row) in chunk.iter().zip(logits.to_vec2::<f32>()?) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// One fine-tuning run: what it trains, on what, and for how long.
pub struct FinetuneRun<'a> {
    pub backbone: &'a LoadedBackbone,
    pub head: &'a Head,
    pub standardizer: &'a Standardizer,
    pub train: &'a [&'a Example],
    /// May be empty (the final fit on all data): then the final weights are kept.
    pub valid: &'a [&'a Example],
    /// The head-only model's validation result: fine-tuning must beat it to count.
    pub start: Option<&'a Evaluation>,
    pub recipe: &'a Recipe,
    pub epochs: u32,
    /// Stop (keeping the best checkpoint so far) once this instant passes.
    pub deadline: Option<Instant>,
    /// Added to every epoch event (e.g. the fold number).
    pub tag: FitTag,
    pub device: &'a Device,
}

/// Backbone and head weights at one point of fine-tuning.
struct Checkpoint {
    backbone: Vec<Tensor>,
    head: Vec<Tensor>,
}

impl FinetuneRun<'_> {
    fn optimiser(&self, backbone_vars: &[(String, Var)]) -> candle_core::Result<GroupedAdamW> {
        let r = self.recipe;
        GroupedAdamW::new(vec![
            ParamGroup {
                vars: backbone_vars.iter().map(|(_, v)| v.clone()).collect(),
                lr: r.backbone_lr,
                weight_decay: r.weight_decay,
            },
            ParamGroup {
                vars: self.head.vars(),
                lr: r.finetune_head_lr,
                weight_decay: r.weight_decay,
            },
        ])
    }

    fn checkpoint(&self, backbone_vars: &[(String, Var)]) -> candle_core::Result<Checkpoint> {
        Ok(Checkpoint {
            backbone: backbone_vars
                .iter()
                .map(|(_, v)| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?,
            head: self.head.snapshot()?,
        })
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

pub fn finetune(run: &FinetuneRun, obs: &mut dyn Observer) -> TrainResult<FinetuneResult> {
    let (bb, head, recipe, device) = (run.backbone, run.head, run.recipe, run.device);
    let backbone_vars = trainable_vars(bb, recipe.unfreeze)?;
    let class_weights = match recipe.class_weights {
        ClassWeights::Balanced => Some(balanced_class_weights(
            &run.train.iter().map(|e| e.label).collect::<Vec<_>>(),
            head.num_classes(),
        )),
        ClassWeights::None => None,
    };
    let loss = LossSpec {
        classes: head.num_classes(),
        label_smoothing: recipe.label_smoothing as f32,
        class_weights: class_weights.as_deref(),
        l1: recipe.l1,
        l1_vars: head.weight_vars(),
    };
    let batch_size = recipe.batch_size.clamp(1, run.train.len().max(1));
    let total = run.train.len().div_ceil(batch_size) * run.epochs as usize;
    let mut stepper = Stepper::new(run.optimiser(&backbone_vars)?, total, (total / 10).max(1));
    let valid_y: Vec<usize> = run.valid.iter().map(|e| e.label).collect();
    let mut rng = StdRng::seed_from_u64(recipe.seed ^ 0xF17E);
    let mut aug_rng = StdRng::seed_from_u64(recipe.seed ^ 0xA06);
    let augment = augmentation(recipe);
    let opts = BatchOptions {
        max_length: recipe.max_length,
        augment: augment.as_ref(),
        flip: false,
    };
    let mut order: Vec<usize> = (0..run.train.len()).collect();
    let mut stopping =
        EarlyStopping::new(recipe.early_stopping_patience, run.start.map(|e| e.loss));
    let mut epochs_run = 0;

    for epoch in 1..=run.epochs {
        order.shuffle(&mut rng);
        let mut stats = EpochStats::default();
        let mut out_of_time = false;
        for chunk in order.chunks(batch_size) {
            check_cancel(obs)?;
            if run.out_of_time() {
                out_of_time = true;
                break;
            }
            let examples: Vec<&Example> = chunk.iter().map(|&i| run.train[i]).collect();
            let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
            let batch = make_batch(bb, &examples, &opts, Some(&mut aug_rng), device)?;
            let feats = bb.net.forward(&batch, true)?;
            let logits = head.forward(&run.standardizer.apply(&feats)?, true)?;
            stepper.train_on(&logits, &labels, &loss, &mut stats, device)?;
            obs.progress(epoch, run.epochs, stepper.fraction());
        }
        if stats.seen == 0 {
            obs.log("fine-tuning: time budget reached; keeping the best checkpoint so far");
            break;
        }
        epochs_run = epoch;
        let eval = if run.valid.is_empty() {
            None
        } else {
            let logits = predict_logits(bb, head, run.standardizer, run.valid, recipe, device)?;
            Some(evaluate_logits(&logits, &valid_y))
        };
        let stop = match eval {
            Some(e) => stopping.check(e, epoch, || run.checkpoint(&backbone_vars))?,
            None => false,
        };
        let mut metrics = stats
            .metrics()
            .with_validation(eval.as_ref())
            .tagged(run.tag);
        metrics.lr_backbone = Some(recipe.backbone_lr * stepper.last_factor());
        obs.epoch(Stage::Finetuning, epoch, run.epochs, &metrics);
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
    if run.valid.is_empty() {
        // Nothing to select on: keep the final weights.
        return Ok(FinetuneResult {
            best: None,
            best_epoch: epochs_run,
            epochs_run,
        });
    }
    Ok(match stopping.into_best() {
        Some(best) => {
            for ((_, v), t) in backbone_vars.iter().zip(&best.checkpoint.backbone) {
                v.set(t)?;
            }
            head.restore(&best.checkpoint.head)?;
            FinetuneResult {
                best: Some(best.eval),
                best_epoch: best.epoch,
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
