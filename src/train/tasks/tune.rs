//! Fine-tuning for regression and multi-label: the backbone trains with a linear head on
//! the task's own loss — Huber on standardised targets (squared error near the fit, linear
//! beyond one standard deviation, so one mislabelled number cannot dominate a small set),
//! or binary cross-entropy per label — started from the closed-form head on frozen
//! features, at the recipe's discriminative rates with warm-up then cosine decay. The
//! epoch count is fixed (scheduled by steps, no early stopping on a noisy handful of
//! validation rows), so the same data and seed give the same model whatever the load.
//! Features are then extracted again with the tuned backbone and the closed-form head is
//! fitted anew on them; selection judges that candidate against the frozen one.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::Targets;
use super::head::{TaskHead, fit_head, target_scale};
use crate::backbones::registry::LoadedBackbone;
use crate::datasets::Task;
use crate::store::jobs::Stage;
use crate::train::features::{Standardizer, extract};
use crate::train::finetune::{augmentation, trainable_vars};
use crate::train::fit::Prepared;
use crate::train::head::Head;
use crate::train::inputs::{BatchOptions, make_batch};
use crate::train::optim::{GroupedAdamW, ParamGroup, warmup_cosine};
use crate::train::training_loop::{EpochMetrics, FitTag};
use crate::train::{Example, Observer, TrainResult, check_cancel};

/// Where the Huber loss turns from quadratic to linear, in standard deviations of the
/// training targets.
pub const HUBER_DELTA: f64 = 1.0;

/// The task's training loss of outputs `out` `[B, k]` against targets `y` `[B, k]`.
pub fn task_loss(task: Task, out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    match task {
        Task::Regression => huber(&(out - y)?, HUBER_DELTA),
        _ => bce_with_logits(out, y),
    }
}

/// Mean Huber loss of residuals `r`: with `q = min(|r|, δ)`, `q²/2 + δ(|r| − q)`.
pub fn huber(r: &Tensor, delta: f64) -> candle_core::Result<Tensor> {
    let a = r.abs()?;
    let q = (&a - (&a - delta)?.relu()?)?;
    let quadratic = (q.sqr()? * 0.5)?;
    let linear = ((a - &q)? * delta)?;
    (quadratic + linear)?.mean_all()
}

/// Mean binary cross-entropy of logits `z` against 0/1 targets `y`, in the stable form
/// `max(z, 0) − z·y + ln(1 + e^−|z|)`.
pub fn bce_with_logits(z: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let soft = ((z.abs()?.neg()?.exp()? + 1.0)?).log()?;
    ((z.relu()? - (z * y)?)? + soft)?.mean_all()
}

/// One tuning run of a backbone and its task head.
struct TuneRun<'a> {
    backbone: &'a LoadedBackbone,
    head: &'a Head,
    standardizer: &'a Standardizer,
    train: Vec<&'a Example>,
    /// Per training row, the `k` targets in the loss's units.
    targets: Vec<Vec<f32>>,
    task: Task,
    tag: FitTag,
}

/// The frozen head as the tuning's starting point, with the targets in the same units:
/// regression heads and targets in standardised-target units, label logits as they are.
fn start_point(
    run: &Prepared,
    head: &TaskHead,
    train: &[usize],
) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    match &run.req.targets {
        Targets::Values(v) => {
            let y: Vec<f64> = train.iter().map(|&i| v[i]).collect();
            let (mean, std) = target_scale(&y);
            let weight = head
                .weight
                .iter()
                .map(|w| (*w as f64 / std) as f32)
                .collect();
            let bias = vec![((head.bias[0] as f64 - mean) / std) as f32];
            let targets = y.iter().map(|t| vec![((t - mean) / std) as f32]).collect();
            (weight, bias, targets)
        }
        Targets::Sets(s) => {
            let targets = train
                .iter()
                .map(|&i| s[i].iter().map(|&on| f32::from(u8::from(on))).collect())
                .collect();
            (head.weight.clone(), head.bias.clone(), targets)
        }
        Targets::Classes => unreachable!("classification fine-tunes in train::finetune"),
    }
}

/// A backbone fine-tuned on one split, the features of every example it gives, and the
/// head fitted on those of the split's training rows.
pub struct TunedFit {
    pub backbone: LoadedBackbone,
    pub features: Tensor,
    pub head: TaskHead,
}

/// Fine-tunes a fresh trainable copy of the backbone on rows `train`, starting from the
/// frozen features' head `start`; then extracts every example's features with it and fits
/// the head anew on the training rows.
pub fn tune_split(
    run: &Prepared,
    start: &TaskHead,
    train: &[usize],
    tag: FitTag,
    obs: &mut dyn Observer,
) -> TrainResult<TunedFit> {
    check_cancel(obs)?;
    obs.stage(
        Stage::Finetuning,
        "fine-tuning the backbone with the task's head at a low rate",
    );
    let r = &run.recipe;
    let backbone = run.fresh_trainable(train.len())?;
    let (weight, bias, targets) = start_point(run, start, train);
    let (k, d) = (start.k, run.features.dims()[1]);
    let head = Head::from_linear(
        &Tensor::from_vec(weight, (k, d), &run.device)?,
        &Tensor::from_vec(bias, k, &run.device)?,
        r.dropout as f32,
        r.seed,
    )?;
    let tuning = TuneRun {
        backbone: &backbone,
        head: &head,
        standardizer: &start.standardizer,
        train: train.iter().map(|&i| &run.req.examples[i]).collect(),
        targets,
        task: run.req.targets.task(),
        tag,
    };
    tune(run, &tuning, obs)?;
    let all: Vec<&Example> = run.req.examples.iter().collect();
    let features = extract(&backbone, &all, r.max_length, &run.device, obs)?;
    let head = fit_head(run, &features, train, obs)?;
    Ok(TunedFit {
        backbone,
        features,
        head,
    })
}

/// Trains backbone and head for the recipe's fine-tuning epochs; one event per epoch.
fn tune(run: &Prepared, t: &TuneRun, obs: &mut dyn Observer) -> TrainResult<()> {
    let (r, device) = (&run.recipe, &run.device);
    let backbone_vars = trainable_vars(t.backbone, r.unfreeze)?;
    let mut opt = GroupedAdamW::new(vec![
        ParamGroup {
            vars: backbone_vars.into_iter().map(|(_, v)| v).collect(),
            lr: r.backbone_lr,
            weight_decay: r.weight_decay,
        },
        ParamGroup {
            vars: t.head.vars(),
            lr: r.finetune_head_lr,
            weight_decay: r.weight_decay,
        },
    ])?;
    let n = t.train.len();
    let batch_size = r.batch_size.clamp(1, n.max(1));
    let epochs = r.finetune_epochs;
    let total = n.div_ceil(batch_size) * epochs as usize;
    let warmup = (total / 10).max(1);
    let mut rng = StdRng::seed_from_u64(r.seed ^ 0x7A5C);
    let mut aug_rng = StdRng::seed_from_u64(r.seed ^ 0xA06);
    let augment = augmentation(r);
    let opts = BatchOptions {
        max_length: r.max_length,
        augment: augment.as_ref(),
        flip: false,
    };
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0usize;
    for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(batch_size) {
            check_cancel(obs)?;
            if run.deadline.is_some_and(|d| Instant::now() >= d) {
                obs.log("fine-tuning: time budget reached; keeping the weights so far");
                return Ok(());
            }
            let examples: Vec<&Example> = chunk.iter().map(|&i| t.train[i]).collect();
            let y = targets_tensor(chunk.iter().map(|&i| &t.targets[i]), device)?;
            let batch = make_batch(t.backbone, &examples, &opts, Some(&mut aug_rng), device)?;
            let feats = t.backbone.net.forward(&batch, true)?;
            let out = t.head.forward(&t.standardizer.apply(&feats)?, true)?;
            let loss = task_loss(t.task, &out, &y)?;
            opt.set_lr_factor(warmup_cosine(step, total, warmup));
            opt.step(&loss.backward()?)?;
            step += 1;
            loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            seen += chunk.len();
            obs.progress(epoch, epochs, step as f64 / total.max(1) as f64);
        }
        let metrics = EpochMetrics {
            train_loss: loss_sum / seen.max(1) as f64,
            lr_backbone: Some(r.backbone_lr * warmup_cosine(step.saturating_sub(1), total, warmup)),
            ..EpochMetrics::default()
        }
        .tagged(t.tag);
        obs.epoch(Stage::Finetuning, epoch, epochs, &metrics);
    }
    Ok(())
}

fn targets_tensor<'a>(
    rows: impl Iterator<Item = &'a Vec<f32>>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let rows: Vec<&Vec<f32>> = rows.collect();
    let k = rows.first().map_or(0, |r| r.len());
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), k), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), (v.len(), 1), &Device::Cpu).unwrap()
    }

    fn scalar(x: Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn huber_is_quadratic_inside_delta_and_linear_outside() {
        // r = 0.5: 0.125; r = -3: 1·(3 − 0.5) = 2.5; mean 1.3125.
        let l = scalar(huber(&t(&[0.5, -3.0]), 1.0).unwrap());
        assert!((l - 1.3125).abs() < 1e-6, "{l}");
    }

    #[test]
    fn huber_gradient_is_bounded_by_delta() -> candle_core::Result<()> {
        let v = candle_core::Var::from_tensor(&t(&[100.0, 0.5]))?;
        let g = huber(v.as_tensor(), 1.0)?.backward()?;
        let g = g
            .get(&v)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        // d/dr of the mean over 2 rows: 1·sign(r)/2 outside, r/2 inside.
        assert!(
            (g[0] - 0.5).abs() < 1e-6 && (g[1] - 0.25).abs() < 1e-6,
            "{g:?}"
        );
        Ok(())
    }

    #[test]
    fn bce_matches_the_definition_and_stays_finite() {
        let z = t(&[0.0, 2.0, -50.0]);
        let y = t(&[1.0, 0.0, 0.0]);
        let l = scalar(bce_with_logits(&z, &y).unwrap());
        let p = 1.0 / (1.0 + (-2.0f64).exp());
        let expected = ((2f64).ln() + -(1.0 - p).ln() + 0.0) / 3.0;
        assert!((l as f64 - expected).abs() < 1e-5, "{l} vs {expected}");
        let big = scalar(bce_with_logits(&t(&[80.0]), &t(&[0.0])).unwrap());
        assert!((big - 80.0).abs() < 1e-3, "{big}");
    }
}
