//! Training the head on cached features (the backbone never runs here): mini-batch AdamW
//! scheduled by steps, validation every round, early stopping on validation loss with the
//! best weights restored.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::head::{Head, cross_entropy, soft_targets};
use super::metrics::{argmax, softmax_rows};
use super::optim::{GroupedAdamW, ParamGroup, l1_penalty, warmup_cosine};
use super::{Observer, TrainResult, check_cancel};
use crate::store::jobs::Stage;

/// Validation rounds spread over head training (events and early-stopping checks).
pub const HEAD_ROUNDS: u32 = 30;

#[derive(Debug, Clone)]
pub struct HeadTrainConfig {
    pub epochs: u32,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub l1: f64,
    pub label_smoothing: f32,
    pub class_weights: Option<Vec<f32>>,
    /// Rounds without improvement of the validation loss before stopping (0 = never stop).
    pub patience: u32,
    pub seed: u64,
    /// Added to every event's metrics (e.g. the fold number).
    pub tags: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone)]
pub struct HeadTrainResult {
    /// Validation result of the restored (best) weights; `None` without validation data.
    pub best: Option<Evaluation>,
    pub best_epoch: u32,
    pub epochs_run: u32,
    pub steps: usize,
}

/// Probabilities of the head on features `[N, D]` (inference mode), in batches.
pub fn predict_logits(head: &Head, x: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let n = x.dims()[0];
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = 1024.min(n - start);
        out.extend(
            head.forward(&x.narrow(0, start, len)?, false)?
                .to_vec2::<f32>()?,
        );
        start += len;
    }
    Ok(out)
}

/// Unweighted log loss and accuracy of logits against labels.
pub fn evaluate_logits(logits: &[Vec<f32>], y: &[usize]) -> Evaluation {
    let probs = softmax_rows(logits, 1.0);
    let n = y.len().max(1) as f64;
    let loss = probs
        .iter()
        .zip(y)
        .map(|(p, &t)| -(p[t] as f64).clamp(1e-15, 1.0).ln())
        .sum::<f64>()
        / n;
    let correct = probs
        .iter()
        .zip(y)
        .filter(|(p, t)| argmax(p) == **t)
        .count();
    Evaluation {
        loss,
        accuracy: correct as f64 / n,
    }
}

pub fn train_head(
    head: &Head,
    train_x: &Tensor,
    train_y: &[usize],
    valid: Option<(&Tensor, &[usize])>,
    cfg: &HeadTrainConfig,
    obs: &mut dyn Observer,
) -> TrainResult<HeadTrainResult> {
    let device: Device = train_x.device().clone();
    let n = train_y.len();
    let classes = head.num_classes();
    let batch_size = cfg.batch_size.clamp(1, n.max(1));
    let steps_per_epoch = n.div_ceil(batch_size);
    let total_steps = steps_per_epoch * cfg.epochs as usize;
    let warmup = total_steps / 20;
    let every = cfg.epochs.div_ceil(HEAD_ROUNDS).max(1);
    let rounds = cfg.epochs.div_ceil(every);

    let mut opt = GroupedAdamW::new(vec![ParamGroup {
        vars: head.vars(),
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
    }])?;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x11EAD);
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0usize;
    let mut best: Option<(Evaluation, Vec<Tensor>, u32)> = None;
    let mut since_best = 0u32;
    let mut epochs_run = 0u32;

    for epoch in 1..=cfg.epochs {
        check_cancel(obs)?;
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        for chunk in order.chunks(batch_size) {
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                &device,
            )?;
            let x = train_x.index_select(&idx, 0)?;
            let labels: Vec<usize> = chunk.iter().map(|&i| train_y[i]).collect();
            let targets = soft_targets(
                &labels,
                classes,
                cfg.label_smoothing,
                cfg.class_weights.as_deref(),
                &device,
            )?;
            let logits = head.forward(&x, true)?;
            let mut loss = cross_entropy(&logits, &targets)?;
            if let Some(p) = l1_penalty(&head.weight_vars(), cfg.l1)? {
                loss = (loss + p)?;
            }
            opt.set_lr_factor(warmup_cosine(step, total_steps, warmup));
            opt.step(&loss.backward()?)?;
            step += 1;
            loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            let preds = logits.argmax(1)?.to_vec1::<u32>()?;
            correct += preds
                .iter()
                .zip(&labels)
                .filter(|(p, l)| **p as usize == **l)
                .count();
        }
        epochs_run = epoch;
        if epoch % every != 0 && epoch != cfg.epochs {
            continue;
        }
        let round = epoch.div_ceil(every);
        let mut metrics = json!({
            "train_loss": loss_sum / n as f64,
            "train_accuracy": correct as f64 / n as f64,
            "lr": cfg.lr * warmup_cosine(step.saturating_sub(1), total_steps, warmup),
        });
        let mut stop = false;
        if let Some((vx, vy)) = valid {
            let eval = evaluate_logits(&predict_logits(head, vx)?, vy);
            metrics["val_loss"] = json!(eval.loss);
            metrics["val_accuracy"] = json!(eval.accuracy);
            let improved = best
                .as_ref()
                .is_none_or(|(b, _, _)| eval.loss < b.loss - 1e-6);
            if improved {
                best = Some((eval, head.snapshot()?, epoch));
                since_best = 0;
            } else {
                since_best += 1;
                stop = cfg.patience > 0 && since_best >= cfg.patience;
            }
        }
        metrics["head_epoch"] = json!(epoch);
        for (k, v) in &cfg.tags {
            metrics[k] = v.clone();
        }
        obs.progress(round, rounds, round as f64 / rounds as f64);
        obs.epoch(Stage::TrainingHead, round, rounds, metrics);
        if stop {
            obs.log(&format!(
                "head: early stop after epoch {epoch} (no validation improvement for {} rounds)",
                cfg.patience
            ));
            break;
        }
    }
    let (best_eval, best_epoch) = match best {
        Some((eval, snapshot, epoch)) => {
            head.restore(&snapshot)?;
            (Some(eval), epoch)
        }
        None => (None, epochs_run),
    };
    Ok(HeadTrainResult {
        best: best_eval,
        best_epoch,
        epochs_run,
        steps: step,
    })
}
