//! Training the head on cached features (the backbone never runs here): mini-batch AdamW
//! scheduled by steps, validation every round, early stopping on validation loss with the
//! best weights restored.

use candle_core::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::features::select_rows;
use super::head::Head;
use super::metrics::{argmax, softmax_rows};
use super::optim::{GroupedAdamW, ParamGroup};
use super::training_loop::{EarlyStopping, EpochStats, Evaluation, FitTag, LossSpec, Stepper};
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
    /// Added to every event (e.g. the fold number).
    pub tag: FitTag,
}

#[derive(Debug, Clone)]
pub struct HeadTrainResult {
    /// Validation result of the restored (best) weights; `None` without validation data.
    pub best: Option<Evaluation>,
    pub best_epoch: u32,
    pub epochs_run: u32,
    pub steps: usize,
}

/// Logits of the head on features `[N, D]` (inference mode), in batches.
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
    let device = train_x.device().clone();
    let n = train_y.len();
    let batch_size = cfg.batch_size.clamp(1, n.max(1));
    let total_steps = n.div_ceil(batch_size) * cfg.epochs as usize;
    let every = cfg.epochs.div_ceil(HEAD_ROUNDS).max(1);
    let rounds = cfg.epochs.div_ceil(every);
    let opt = GroupedAdamW::new(vec![ParamGroup {
        vars: head.vars(),
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
    }])?;
    let mut stepper = Stepper::new(opt, total_steps, total_steps / 20);
    let loss = LossSpec {
        classes: head.num_classes(),
        label_smoothing: cfg.label_smoothing,
        class_weights: cfg.class_weights.as_deref(),
        l1: cfg.l1,
        l1_vars: head.weight_vars(),
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x11EAD);
    let mut order: Vec<usize> = (0..n).collect();
    let mut stopping = EarlyStopping::new(cfg.patience, None);
    let mut epochs_run = 0u32;

    for epoch in 1..=cfg.epochs {
        check_cancel(obs)?;
        order.shuffle(&mut rng);
        let mut stats = EpochStats::default();
        for chunk in order.chunks(batch_size) {
            let logits = head.forward(&select_rows(train_x, chunk)?, true)?;
            let labels: Vec<usize> = chunk.iter().map(|&i| train_y[i]).collect();
            stepper.train_on(&logits, &labels, &loss, &mut stats, &device)?;
        }
        epochs_run = epoch;
        if epoch % every != 0 && epoch != cfg.epochs {
            continue;
        }
        let round = epoch.div_ceil(every);
        let eval = match valid {
            Some((vx, vy)) => Some(evaluate_logits(&predict_logits(head, vx)?, vy)),
            None => None,
        };
        let stop = match eval {
            Some(e) => stopping.check(e, epoch, || head.snapshot())?,
            None => false,
        };
        let mut metrics = stats
            .metrics()
            .with_validation(eval.as_ref())
            .tagged(cfg.tag);
        metrics.lr = Some(cfg.lr * stepper.last_factor());
        metrics.head_epoch = Some(epoch);
        obs.progress(round, rounds, round as f64 / rounds as f64);
        obs.epoch(Stage::TrainingHead, round, rounds, &metrics);
        if stop {
            obs.log(&format!(
                "head: early stop after epoch {epoch} (no validation improvement for {} rounds)",
                cfg.patience
            ));
            break;
        }
    }
    let (best, best_epoch) = match stopping.into_best() {
        Some(b) => {
            head.restore(&b.checkpoint)?;
            (Some(b.eval), b.epoch)
        }
        None => (None, epochs_run),
    };
    Ok(HeadTrainResult {
        best,
        best_epoch,
        epochs_run,
        steps: stepper.step,
    })
}
