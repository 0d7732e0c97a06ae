//! Contrastive tuning of a text backbone (the SetFit idea, written for this service): with
//! a few examples per class, cross-entropy fine-tuning has little to learn from and is
//! judged on the same handful of rows it early-stops on. Pairs are far more numerous than
//! examples: the backbone learns to put texts of the same label close together and texts of
//! other labels apart (cosine similarity of its L2-normalised embeddings, squared error to
//! 1 or 0), and the logistic head is then fitted anew on the tuned features.
//!
//! Hand-written rather than taken from `setfit` because the service trains in candle and the
//! batch is used better than SetFit's sampled pairs: each step embeds a batch of texts once
//! and scores every pair in it (B² pairs for B forward passes), so 20 steps see what SetFit
//! samples in 20 iterations at about a quarter of the forward passes. Positive and negative
//! pairs weigh the same however many classes there are. The step count is fixed, so the
//! same data and seed give the same model whatever the machine's load.

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::finetune::trainable_vars;
use super::inputs::{BatchOptions, make_batch};
use super::optim::{GroupedAdamW, ParamGroup};
use super::recipe::Recipe;
use super::training_loop::{EpochMetrics, FitTag};
use super::{Example, Observer, TrainResult, check_cancel};
use crate::backbones::registry::LoadedBackbone;
use crate::store::jobs::Stage;

/// Optimiser steps of one contrastive pass.
pub const CONTRASTIVE_STEPS: usize = 20;
/// Texts per step (every pair of two of them is scored, 240 pairs); all of them when fewer.
/// 16 rather than 32: a step costs its texts' forward and backward passes, and 20 steps of
/// 16 keep a job at 64 per class within minutes on 2 cores (at 8 per class of 2 classes
/// every step sees all 16 texts either way).
pub const CONTRASTIVE_BATCH: usize = 16;
/// Base rate of the backbone, decayed linearly to 0 over the steps.
pub const CONTRASTIVE_LR: f64 = 5e-5;
/// Tokens per text while tuning (the head is then fitted on full-length features): pairs
/// are judged by their openings, at half the cost of 256 tokens.
pub const CONTRASTIVE_MAX_LENGTH: usize = 128;

/// One contrastive pass: what it tunes, on what.
pub struct ContrastiveRun<'a> {
    pub backbone: &'a LoadedBackbone,
    pub train: &'a [&'a Example],
    pub recipe: &'a Recipe,
    pub deadline: Option<Instant>,
    pub tag: FitTag,
    pub device: &'a Device,
}

/// Pair loss of L2-normalised embeddings `[B, D]` with labels `y`: the mean squared error
/// of each pair's cosine similarity to 1 (same label) or 0 (different labels), the mean
/// over positive pairs and the mean over negative pairs weighted equally. Pairs of a text
/// with itself are left out.
pub fn pair_loss(emb: &Tensor, y: &[usize]) -> candle_core::Result<Tensor> {
    let b = y.len();
    let mut same = vec![0f32; b * b];
    let mut pos = vec![0f32; b * b];
    let mut neg = vec![0f32; b * b];
    for i in 0..b {
        for j in 0..b {
            let k = i * b + j;
            if y[i] == y[j] {
                same[k] = 1.0;
                pos[k] = f32::from(i != j);
            } else {
                neg[k] = 1.0;
            }
        }
    }
    let (n_pos, n_neg) = (
        pos.iter().sum::<f32>().max(1.0),
        neg.iter().sum::<f32>().max(1.0),
    );
    let dev = emb.device();
    let mask = |v: Vec<f32>, n: f32| -> candle_core::Result<Tensor> {
        let scaled: Vec<f32> = v.into_iter().map(|x| x / (2.0 * n)).collect();
        Tensor::from_vec(scaled, (b, b), dev)
    };
    let weights = (mask(pos, n_pos)? + mask(neg, n_neg)?)?;
    let target = Tensor::from_vec(same, (b, b), dev)?;
    let cos = emb.matmul(&emb.t()?)?;
    let err = cos.sub(&target)?.sqr()?;
    err.mul(&weights)?.sum_all()
}

/// Rows of each step: a fresh shuffle of the training rows, the first
/// [`CONTRASTIVE_BATCH`] of it (stratification is not needed: every pair in the batch
/// counts, and the loss weighs positives and negatives the same).
fn step_rows(n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order.truncate(CONTRASTIVE_BATCH);
    order
}

/// Tunes `run.backbone` in place by [`CONTRASTIVE_STEPS`] steps of [`pair_loss`]; reports
/// one round with the mean pair loss.
pub fn contrastive_tune(run: &ContrastiveRun, obs: &mut dyn Observer) -> TrainResult<()> {
    let (bb, recipe) = (run.backbone, run.recipe);
    let vars = trainable_vars(bb, recipe.unfreeze)?;
    let mut opt = GroupedAdamW::new(vec![ParamGroup {
        vars: vars.into_iter().map(|(_, v)| v).collect(),
        lr: recipe.backbone_lr,
        weight_decay: recipe.weight_decay,
    }])?;
    let opts = BatchOptions {
        max_length: recipe.max_length.min(CONTRASTIVE_MAX_LENGTH),
        augment: None,
        flip: false,
    };
    let mut rng = StdRng::seed_from_u64(recipe.seed ^ 0xC0417A57);
    let (mut loss_sum, mut steps) = (0.0, 0usize);
    for step in 0..CONTRASTIVE_STEPS {
        check_cancel(obs)?;
        if run.deadline.is_some_and(|d| Instant::now() >= d) {
            obs.log(&format!(
                "contrastive tuning: time budget reached after {step} of {CONTRASTIVE_STEPS} steps"
            ));
            break;
        }
        let rows = step_rows(run.train.len(), &mut rng);
        let examples: Vec<&Example> = rows.iter().map(|&i| run.train[i]).collect();
        let y: Vec<usize> = examples.iter().map(|e| e.label).collect();
        let batch = make_batch(bb, &examples, &opts, None, run.device)?;
        let emb = bb.net.forward(&batch, true)?;
        let emb = emb.broadcast_div(&emb.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
        let loss = pair_loss(&emb, &y)?;
        opt.set_lr_factor(1.0 - step as f64 / CONTRASTIVE_STEPS as f64);
        opt.step(&loss.backward()?)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        steps += 1;
        obs.progress(1, 1, steps as f64 / CONTRASTIVE_STEPS as f64);
    }
    let metrics = EpochMetrics {
        train_loss: loss_sum / steps.max(1) as f64,
        lr_backbone: Some(recipe.backbone_lr),
        ..EpochMetrics::default()
    }
    .tagged(run.tag);
    obs.epoch(Stage::Finetuning, 1, 1, &metrics);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(rows: &[[f32; 2]]) -> Tensor {
        let v: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
                [r[0] / n, r[1] / n]
            })
            .collect();
        Tensor::from_vec(v, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn pair_loss_is_zero_when_labels_are_orthogonal_directions() {
        let e = unit_rows(&[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]);
        let l = pair_loss(&e, &[0, 0, 1, 1])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(l.abs() < 1e-6, "{l}");
    }

    #[test]
    fn pair_loss_weighs_positives_and_negatives_equally() {
        // All four texts in one direction: positives are right (cos 1), every negative
        // pair is off by 1, so the loss is the negative half: 0.5.
        let e = unit_rows(&[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]);
        let l = pair_loss(&e, &[0, 0, 0, 1])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 0.5).abs() < 1e-6, "{l}");
        // Swapped: every text apart (orthogonal pairs impossible for 4 in 2-D, so use 2).
        let e = unit_rows(&[[1.0, 0.0], [0.0, 1.0]]);
        let l = pair_loss(&e, &[0, 0]).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - 0.5).abs() < 1e-6, "{l}");
    }

    #[test]
    fn pair_loss_gradient_pulls_same_label_together() -> candle_core::Result<()> {
        let v = candle_core::Var::from_tensor(&unit_rows(&[[1.0, 0.0], [0.0, 1.0]]))?;
        let loss = pair_loss(v.as_tensor(), &[0, 0])?;
        let g = loss
            .backward()?
            .get(&v)
            .expect("gradient")
            .to_vec2::<f32>()?;
        // Descending the gradient moves row 0 towards row 1 (and back): -g[0][1] > 0.
        assert!(-g[0][1] > 0.0 && -g[1][0] > 0.0, "{g:?}");
        Ok(())
    }

    #[test]
    fn step_rows_are_seeded_and_capped() {
        let a = step_rows(100, &mut StdRng::seed_from_u64(3));
        let b = step_rows(100, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
        assert_eq!(a.len(), CONTRASTIVE_BATCH);
        assert_eq!(step_rows(5, &mut StdRng::seed_from_u64(3)).len(), 5);
    }
}
