//! The mechanics every training loop shares, written once: the loss of a batch and one
//! optimiser step on it at the scheduled rate, the epoch's running statistics, the epoch
//! event, and one early-stopping rule that keeps the best checkpoint. The head trainer
//! (cached features) and fine-tuning (backbone + head) differ only in how they get logits.

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use super::head::{cross_entropy, soft_targets};
use super::optim::{GroupedAdamW, l1_penalty, warmup_cosine};

/// Validation loss and accuracy of one set of weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

/// Which fit an event belongs to (k-fold folds, the final fit on all data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitTag {
    /// A holdout split (or a fit with no context to add).
    Plain,
    /// Fold `n` (1-based) of k-fold cross-validation.
    Fold(usize),
    /// The final fit on all examples after cross-validation.
    Final,
}

/// The metrics of one epoch (or round of head training), as the job's events show them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EpochMetrics {
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// Head training: the head's rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Fine-tuning: the backbone's rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_backbone: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// The logistic head: the L2 strength cross-validation chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_c: Option<f64>,
    /// Head training reports rounds; this is the epoch the round ended on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_epoch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold: Option<usize>,
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_fit: Option<bool>,
}

impl EpochMetrics {
    pub fn tagged(mut self, tag: FitTag) -> Self {
        match tag {
            FitTag::Plain => {}
            FitTag::Fold(n) => self.fold = Some(n),
            FitTag::Final => self.final_fit = Some(true),
        }
        self
    }

    pub fn with_validation(mut self, eval: Option<&Evaluation>) -> Self {
        if let Some(e) = eval {
            self.val_loss = Some(e.loss);
            self.val_accuracy = Some(e.accuracy);
        }
        self
    }
}

/// What the loss of a batch is made of (the same for the head and for fine-tuning).
pub struct LossSpec<'a> {
    pub classes: usize,
    pub label_smoothing: f32,
    pub class_weights: Option<&'a [f32]>,
    pub l1: f64,
    /// Weights the L1 penalty applies to.
    pub l1_vars: Vec<Var>,
}

/// The optimiser with its warm-up + cosine schedule, counting steps.
pub struct Stepper {
    pub opt: GroupedAdamW,
    pub step: usize,
    pub total: usize,
    pub warmup: usize,
}

impl Stepper {
    pub fn new(opt: GroupedAdamW, total: usize, warmup: usize) -> Self {
        Stepper {
            opt,
            step: 0,
            total,
            warmup,
        }
    }

    /// Learning-rate factor of the last step taken.
    pub fn last_factor(&self) -> f64 {
        warmup_cosine(self.step.saturating_sub(1), self.total, self.warmup)
    }

    /// Fraction of the scheduled steps done.
    pub fn fraction(&self) -> f64 {
        self.step as f64 / self.total.max(1) as f64
    }

    /// Computes the batch's loss from its logits, takes one optimiser step at the scheduled
    /// rate, and adds the batch to `stats`.
    pub fn train_on(
        &mut self,
        logits: &Tensor,
        labels: &[usize],
        loss: &LossSpec,
        stats: &mut EpochStats,
        device: &Device,
    ) -> candle_core::Result<()> {
        let targets = soft_targets(
            labels,
            loss.classes,
            loss.label_smoothing,
            loss.class_weights,
            device,
        )?;
        let mut value = cross_entropy(logits, &targets)?;
        if let Some(p) = l1_penalty(&loss.l1_vars, loss.l1)? {
            value = (value + p)?;
        }
        self.opt
            .set_lr_factor(warmup_cosine(self.step, self.total, self.warmup));
        self.opt.step(&value.backward()?)?;
        self.step += 1;
        stats.add(value.to_scalar::<f32>()? as f64, logits, labels)
    }
}

/// Loss and accuracy accumulated over an epoch's batches.
#[derive(Debug, Default)]
pub struct EpochStats {
    loss_sum: f64,
    correct: usize,
    pub seen: usize,
}

impl EpochStats {
    fn add(&mut self, loss: f64, logits: &Tensor, labels: &[usize]) -> candle_core::Result<()> {
        self.loss_sum += loss * labels.len() as f64;
        self.seen += labels.len();
        let preds = logits.argmax(1)?.to_vec1::<u32>()?;
        self.correct += preds
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as usize == **l)
            .count();
        Ok(())
    }

    /// The epoch's training metrics (the rest of the event is filled in by the caller).
    pub fn metrics(&self) -> EpochMetrics {
        let n = self.seen.max(1) as f64;
        EpochMetrics {
            train_loss: self.loss_sum / n,
            train_accuracy: self.correct as f64 / n,
            ..EpochMetrics::default()
        }
    }
}

/// Early stopping on validation loss: remembers the best result with its checkpoint `C`,
/// and says when `patience` checks in a row have not improved on it (0 = never stop).
pub struct EarlyStopping<C> {
    /// The loss to beat before anything counts as an improvement (fine-tuning must beat
    /// the head it started from); `None`: the first check always improves.
    to_beat: Option<f64>,
    best: Option<Best<C>>,
    since_best: u32,
    patience: u32,
}

/// The best checkpoint seen.
pub struct Best<C> {
    pub eval: Evaluation,
    pub checkpoint: C,
    pub epoch: u32,
}

impl<C> EarlyStopping<C> {
    pub fn new(patience: u32, to_beat: Option<f64>) -> Self {
        EarlyStopping {
            to_beat,
            best: None,
            since_best: 0,
            patience,
        }
    }

    /// Records the validation result of `epoch`; `checkpoint` is taken only when it
    /// improved. Returns `true` when training should stop.
    pub fn check(
        &mut self,
        eval: Evaluation,
        epoch: u32,
        checkpoint: impl FnOnce() -> candle_core::Result<C>,
    ) -> candle_core::Result<bool> {
        let bar = self.best.as_ref().map(|b| b.eval.loss).or(self.to_beat);
        if bar.is_none_or(|b| eval.loss < b - 1e-6) {
            self.best = Some(Best {
                eval,
                checkpoint: checkpoint()?,
                epoch,
            });
            self.since_best = 0;
            return Ok(false);
        }
        self.since_best += 1;
        Ok(self.patience > 0 && self.since_best >= self.patience)
    }

    /// The best checkpoint, if any check improved.
    pub fn into_best(self) -> Option<Best<C>> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(loss: f64) -> Evaluation {
        Evaluation {
            loss,
            accuracy: 0.0,
        }
    }

    #[test]
    fn early_stopping_keeps_the_best_and_stops_after_patience() -> candle_core::Result<()> {
        let mut es = EarlyStopping::new(2, None);
        assert!(!es.check(eval(1.0), 1, || Ok(1))?);
        assert!(!es.check(eval(0.5), 2, || Ok(2))?);
        assert!(!es.check(eval(0.7), 3, || Ok(3))?);
        assert!(es.check(eval(0.6), 4, || Ok(4))?);
        let best = es.into_best().expect("a best checkpoint");
        assert_eq!((best.checkpoint, best.epoch), (2, 2));
        Ok(())
    }

    #[test]
    fn a_bar_to_beat_means_no_checkpoint_until_beaten() -> candle_core::Result<()> {
        let mut es = EarlyStopping::<u32>::new(0, Some(0.4));
        assert!(!es.check(eval(0.5), 1, || Ok(1))?);
        assert!(!es.check(eval(0.45), 2, || Ok(2))?);
        assert!(es.into_best().is_none());
        Ok(())
    }

    #[test]
    fn tags_go_into_the_event() {
        let m = EpochMetrics::default().tagged(FitTag::Fold(3));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["fold"], 3);
        assert!(v.get("final").is_none() && v.get("val_loss").is_none());
        let v = serde_json::to_value(EpochMetrics::default().tagged(FitTag::Final)).unwrap();
        assert_eq!(v["final"], true);
    }
}
