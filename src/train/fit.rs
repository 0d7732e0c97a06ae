//! Fitting the model on one split of the data — the holdout split, or one fold — and on
//! all of it (the final model after cross-validation): the head on cached features, then
//! optionally fine-tuning, which is kept only if it beat the head on validation loss.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::baseline::BaselineData;
use super::contrastive::{ContrastiveRun, contrastive_tune};
use super::features::{Standardizer, extract, select_rows};
use super::finetune::{FinetuneRun, finetune, predict_logits as ft_logits};
use super::head::{Head, balanced_class_weights};
use super::head_train::{HeadTrainConfig, evaluate_logits, predict_logits, train_head};
use super::hyper::{ClassWeights, DataProfile, FinetuneObjective};
use super::lexical::LexicalModel;
use super::logreg::{C_GRID, LinearModel, Problem};
use super::recipe::{HeadSolver, Recipe};
use super::report::Candidate;
use super::training_loop::{EpochMetrics, Evaluation, FitTag};
use super::{Example, Observer, TrainRequest, TrainResult, check_cancel};
use crate::backbones::WeightsMode;
use crate::backbones::registry::{LoadedBackbone, Registry};
use crate::datasets::split::Split;
use crate::store::jobs::Stage;

/// A run after its first phase: the recipe resolved, the data split, every example's
/// features extracted once. Everything later phases share.
pub struct Prepared<'a> {
    pub req: &'a TrainRequest,
    pub recipe: Recipe,
    pub data: DataProfile,
    pub registry: &'a Registry,
    pub frozen: Arc<LoadedBackbone>,
    /// Features of every example from the frozen backbone `[N, D]`.
    pub features: Tensor,
    /// Features of the recipe's augmented views of every example, each `[N, D]` (images
    /// only; the logistic head trains on them beside `features`).
    pub views: Vec<Tensor>,
    /// Class of every example.
    pub labels: Vec<usize>,
    /// The no-transfer baseline's inputs.
    pub baseline: BaselineData,
    /// The holdout split, or the k folds.
    pub splits: Vec<Split>,
    pub device: Device,
    pub started: Instant,
    pub deadline: Option<Instant>,
}

/// Which weights a fit trains and how long.
#[derive(Clone, Copy, Debug)]
pub struct FitPlan {
    pub head_epochs: u32,
    pub finetune_epochs: u32,
    pub tag: FitTag,
}

/// The outcome of fitting on one split.
pub struct SplitFit {
    pub head: Head,
    pub standardizer: Standardizer,
    pub head_eval: Option<Evaluation>,
    pub head_best_epoch: u32,
    /// Head-only logits on the split's validation rows.
    pub head_logits: Vec<Vec<f32>>,
    /// Set when fine-tuning beat the head on validation loss (or, without validation, ran);
    /// contrastive tuning always.
    pub finetuned: Option<FinetunedFit>,
    /// Best fine-tuning epoch (0 when fine-tuning did not help or did not run).
    pub finetune_best_epoch: u32,
}

pub struct FinetunedFit {
    /// `None` without validation data.
    pub eval: Option<Evaluation>,
    pub logits: Vec<Vec<f32>>,
    pub backbone: LoadedBackbone,
    /// Contrastive tuning fits its own head and standardisation on the tuned features
    /// (cross-entropy fine-tuning trains the split's head in place: `None`).
    pub own_head: Option<(Head, Standardizer)>,
}

impl SplitFit {
    /// The head and feature standardisation of a candidate.
    pub fn head_of(&self, c: Candidate) -> (&Head, &Standardizer) {
        match (c, self.finetuned.as_ref().and_then(|f| f.own_head.as_ref())) {
            (Candidate::Finetuned, Some((head, standardizer))) => (head, standardizer),
            _ => (&self.head, &self.standardizer),
        }
    }

    /// Validation logits of the better candidate.
    pub fn best_logits(&self) -> &[Vec<f32>] {
        self.finetuned
            .as_ref()
            .map_or(&self.head_logits, |f| &f.logits)
    }
}

impl Prepared<'_> {
    pub fn classes(&self) -> usize {
        self.req.labels.len()
    }

    fn rows(&self, idx: &[usize]) -> candle_core::Result<Tensor> {
        select_rows(&self.features, idx)
    }

    fn examples(&self, idx: &[usize]) -> Vec<&Example> {
        idx.iter().map(|&i| &self.req.examples[i]).collect()
    }

    /// Per-row loss weights for rows of classes `y`, as the recipe's class weighting says.
    pub fn row_weights(&self, y: &[usize]) -> Option<Vec<f32>> {
        match self.recipe.class_weights {
            ClassWeights::Balanced => {
                let w = balanced_class_weights(y, self.classes());
                Some(y.iter().map(|&c| w[c]).collect())
            }
            ClassWeights::None => None,
        }
    }

    /// Text: the lexical model fitted on rows `train` (`None` for images).
    pub fn lexical_fit(&self, train: &[usize]) -> Option<LexicalModel> {
        let BaselineData::Text(docs) = &self.baseline else {
            return None;
        };
        let y: Vec<usize> = train.iter().map(|&i| self.labels[i]).collect();
        let weights = self.row_weights(&y);
        Some(LexicalModel::fit(
            docs,
            &self.labels,
            self.classes(),
            train,
            weights.as_deref(),
            self.recipe.seed,
        ))
    }

    /// Text: the lexical model's logits for rows `rows`.
    pub fn lexical_logits(&self, model: &LexicalModel, rows: &[usize]) -> Vec<Vec<f32>> {
        let BaselineData::Text(docs) = &self.baseline else {
            return Vec::new();
        };
        rows.iter().map(|&i| model.logits(&docs[i])).collect()
    }

    /// The head trainer's settings for training rows `train` (also used by the baseline).
    pub fn head_config(&self, train: &[usize], epochs: u32, tag: FitTag) -> HeadTrainConfig {
        let r = &self.recipe;
        let train_y: Vec<usize> = train.iter().map(|&i| self.labels[i]).collect();
        HeadTrainConfig {
            epochs,
            batch_size: r.head_batch_size,
            lr: r.head_lr,
            weight_decay: r.weight_decay,
            l1: r.l1,
            label_smoothing: r.label_smoothing as f32,
            class_weights: match r.class_weights {
                ClassWeights::Balanced => Some(balanced_class_weights(&train_y, self.classes())),
                ClassWeights::None => None,
            },
            patience: (r.early_stopping_patience * 5).max(5),
            seed: r.seed,
            tag,
        }
    }

    /// Head, then fine-tuning when the plan asks, on `train`, validated on `valid` (which
    /// may be empty: then nothing is selected and the final weights are kept).
    pub fn fit(
        &self,
        train: &[usize],
        valid: &[usize],
        plan: FitPlan,
        obs: &mut dyn Observer,
    ) -> TrainResult<SplitFit> {
        let (train_raw, copies) = self.head_rows(train)?;
        let standardizer = Standardizer::fit(&train_raw)?;
        let train_x = standardizer.apply(&train_raw)?;
        let valid_x = match valid.is_empty() {
            true => None,
            false => Some(standardizer.apply(&self.rows(valid)?)?),
        };
        check_cancel(obs)?;
        obs.stage(
            Stage::TrainingHead,
            "training the new head on cached features",
        );
        let train_y: Vec<usize> = train.iter().map(|&i| self.labels[i]).collect();
        let valid_y: Vec<usize> = valid.iter().map(|&i| self.labels[i]).collect();
        let pair = valid_x.as_ref().map(|x| (x, valid_y.as_slice()));
        let (head, head_best_epoch) = match self.recipe.head_solver {
            // The other tasks' solvers only run in `super::tasks`.
            HeadSolver::LogisticCv | HeadSolver::RidgeCv | HeadSolver::BinaryLogisticCv => (
                self.logistic_head(&train_x, &train_y, copies, pair, plan.tag, obs)?,
                0,
            ),
            HeadSolver::Sgd => {
                let head = self.fresh_head()?;
                let cfg = self.head_config(train, plan.head_epochs, plan.tag);
                let result = train_head(&head, &train_x, &train_y, pair, &cfg, obs)?;
                (head, result.best_epoch)
            }
        };
        let head_logits = match &valid_x {
            Some(x) => predict_logits(&head, x)?,
            None => Vec::new(),
        };
        let head_eval = valid_x
            .is_some()
            .then(|| evaluate_logits(&head_logits, &valid_y));
        let mut fit = SplitFit {
            head_eval,
            head_best_epoch,
            head_logits,
            finetuned: None,
            finetune_best_epoch: 0,
            head,
            standardizer,
        };
        if plan.finetune_epochs > 0 {
            match self.recipe.finetune_objective {
                FinetuneObjective::CrossEntropy => {
                    self.finetune_fit(&mut fit, train, valid, plan, obs)?
                }
                FinetuneObjective::Contrastive => {
                    self.contrastive_fit(&mut fit, train, valid, plan, obs)?
                }
            }
        }
        Ok(fit)
    }

    /// The head's training rows: the plain features of `train`, then each augmented
    /// view's (the recipe gives views only to the logistic head), block after block; and
    /// how many blocks that is.
    fn head_rows(&self, train: &[usize]) -> candle_core::Result<(Tensor, usize)> {
        let plain = self.rows(train)?;
        if self.views.is_empty() {
            return Ok((plain, 1));
        }
        let mut blocks = vec![plain];
        for view in &self.views {
            blocks.push(select_rows(view, train)?);
        }
        Ok((Tensor::cat(&blocks, 0)?, blocks.len()))
    }

    fn fresh_head(&self) -> candle_core::Result<Head> {
        let r = &self.recipe;
        Head::new(
            self.features.dims()[1],
            self.classes(),
            r.hidden_units,
            r.dropout as f32,
            r.seed,
            &self.device,
        )
    }

    /// The logistic-regression head on standardised training features (`copies` blocks of
    /// the rows `train_y` labels: the plain features, then augmented views), its strength
    /// chosen by cross-validation on those rows alone. Each strength of the grid is
    /// reported as one round (training and, when there is one, validation metrics), so the
    /// job's curves show the regularisation path.
    fn logistic_head(
        &self,
        train_x: &Tensor,
        train_y: &[usize],
        copies: usize,
        valid: Option<(&Tensor, &[usize])>,
        tag: FitTag,
        obs: &mut dyn Observer,
    ) -> TrainResult<Head> {
        let d = train_x.dims()[1];
        let x = train_x.flatten_all()?.to_vec1::<f32>()?;
        let y: Vec<usize> = train_y.repeat(copies);
        let row_weights = self.row_weights(&y);
        let problem = Problem {
            x: &x,
            d,
            y: &y,
            classes: self.classes(),
            weights: row_weights.as_deref(),
        };
        check_cancel(obs)?;
        let cv = problem.choose_c_with_copies(self.recipe.seed, copies);
        let mut chosen = None;
        let rounds = C_GRID.len() as u32;
        for (i, (model, &c)) in problem.path().into_iter().zip(&C_GRID).enumerate() {
            let head = self.linear_head(model)?;
            let on_train = evaluate_logits(&predict_logits(&head, train_x)?, &y);
            let on_valid = match valid {
                Some((vx, vy)) => Some(evaluate_logits(&predict_logits(&head, vx)?, vy)),
                None => None,
            };
            let metrics = EpochMetrics {
                train_loss: on_train.loss,
                train_accuracy: on_train.accuracy,
                head_c: Some(c),
                ..EpochMetrics::default()
            }
            .with_validation(on_valid.as_ref())
            .tagged(tag);
            let round = i as u32 + 1;
            obs.progress(round, rounds, round as f64 / rounds as f64);
            obs.epoch(Stage::TrainingHead, round, rounds, &metrics);
            if c == cv.c {
                chosen = Some(head);
            }
        }
        let views = match copies {
            1 => String::new(),
            c => format!(", each also seen in {} augmented views", c - 1),
        };
        obs.log(&format!(
            "head: logistic regression with C = {} (chosen by {}-fold cross-validation on {} training rows{views})",
            cv.c,
            cv.folds,
            train_y.len()
        ));
        Ok(chosen.expect("the chosen C is on the grid"))
    }

    fn linear_head(&self, model: LinearModel) -> candle_core::Result<Head> {
        let weight = Tensor::from_vec(model.weight, (model.classes, model.d), &self.device)?;
        let bias = Tensor::from_vec(model.bias, model.classes, &self.device)?;
        Head::from_linear(&weight, &bias, self.recipe.dropout as f32, self.recipe.seed)
    }

    /// A fresh trainable copy of the backbone, its randomness seeded from the recipe and
    /// the split's size (every fine-tuning objective, and the tasks' tuning, start from one).
    pub(crate) fn fresh_trainable(&self, num_train: usize) -> TrainResult<LoadedBackbone> {
        let r = &self.recipe;
        let trainable = self
            .registry
            .load(&r.backbone, None, WeightsMode::Trainable)?;
        trainable.net.seed(r.seed ^ num_train as u64);
        Ok(trainable)
    }

    /// Fine-tunes a fresh trainable copy of the backbone with the fitted head; keeps it in
    /// `fit` when it beat the head (or when there is no validation data to judge by).
    fn finetune_fit(
        &self,
        fit: &mut SplitFit,
        train: &[usize],
        valid: &[usize],
        plan: FitPlan,
        obs: &mut dyn Observer,
    ) -> TrainResult<()> {
        check_cancel(obs)?;
        obs.stage(
            Stage::Finetuning,
            "fine-tuning the backbone at a low rate, with the head",
        );
        let r = &self.recipe;
        let snapshot = fit.head.snapshot()?;
        let trainable = self.fresh_trainable(train.len())?;
        let (train_ex, valid_ex) = (self.examples(train), self.examples(valid));
        let run = FinetuneRun {
            backbone: &trainable,
            head: &fit.head,
            standardizer: &fit.standardizer,
            train: &train_ex,
            valid: &valid_ex,
            start: fit.head_eval.as_ref(),
            recipe: r,
            epochs: plan.finetune_epochs,
            deadline: self.deadline,
            tag: plan.tag,
            device: &self.device,
        };
        let ft = finetune(&run, obs)?;
        let logits = match (ft.best, valid.is_empty()) {
            (Some(_), _) => ft_logits(
                &trainable,
                &fit.head,
                &fit.standardizer,
                &valid_ex,
                r,
                &self.device,
            )?,
            // No validation (final fit on all data): the fine-tuned weights are the model.
            (None, true) => Vec::new(),
            (None, false) => return Ok(fit.head.restore(&snapshot)?),
        };
        fit.finetune_best_epoch = ft.best_epoch;
        fit.finetuned = Some(FinetunedFit {
            eval: ft.best,
            logits,
            backbone: trainable,
            own_head: None,
        });
        Ok(())
    }

    /// Text: tunes a fresh trainable copy of the backbone on pairs of the training rows
    /// ([`contrastive_tune`]), extracts their features again, and fits a new logistic head
    /// on them; always keeps it in `fit` (selection compares the candidates over all splits).
    fn contrastive_fit(
        &self,
        fit: &mut SplitFit,
        train: &[usize],
        valid: &[usize],
        plan: FitPlan,
        obs: &mut dyn Observer,
    ) -> TrainResult<()> {
        check_cancel(obs)?;
        obs.stage(
            Stage::Finetuning,
            "contrastive tuning of the backbone on pairs of examples",
        );
        let r = &self.recipe;
        let trainable = self.fresh_trainable(train.len())?;
        let train_ex = self.examples(train);
        let run = ContrastiveRun {
            backbone: &trainable,
            train: &train_ex,
            recipe: r,
            deadline: self.deadline,
            tag: plan.tag,
            device: &self.device,
        };
        contrastive_tune(&run, obs)?;
        let rows: Vec<usize> = train.iter().chain(valid).copied().collect();
        let feats = extract(
            &trainable,
            &self.examples(&rows),
            r.max_length,
            &self.device,
            obs,
        )?;
        let train_raw = feats.narrow(0, 0, train.len())?;
        let standardizer = Standardizer::fit(&train_raw)?;
        let train_x = standardizer.apply(&train_raw)?;
        let train_y: Vec<usize> = train.iter().map(|&i| self.labels[i]).collect();
        let valid_y: Vec<usize> = valid.iter().map(|&i| self.labels[i]).collect();
        let valid_x = match valid.is_empty() {
            true => None,
            false => Some(standardizer.apply(&feats.narrow(0, train.len(), valid.len())?)?),
        };
        let pair = valid_x.as_ref().map(|x| (x, valid_y.as_slice()));
        let head = self.logistic_head(&train_x, &train_y, 1, pair, plan.tag, obs)?;
        let (logits, eval) = match &valid_x {
            Some(x) => {
                let logits = predict_logits(&head, x)?;
                let eval = evaluate_logits(&logits, &valid_y);
                (logits, Some(eval))
            }
            None => (Vec::new(), None),
        };
        // Kept on every split, better or worse: its head is refitted (sharper, its C chosen
        // anew), so a per-split comparison of uncalibrated losses says little; selection
        // judges all splits together on calibrated held-out loss.
        if let (Some(e), Some(h)) = (eval, fit.head_eval) {
            obs.log(&format!(
                "contrastive tuning: validation loss {:.4} (head on frozen features {:.4}), accuracy {:.3} ({:.3})",
                e.loss, h.loss, e.accuracy, h.accuracy
            ));
        }
        fit.finetune_best_epoch = 1;
        fit.finetuned = Some(FinetunedFit {
            eval,
            logits,
            backbone: trainable,
            own_head: Some((head, standardizer)),
        });
        Ok(())
    }
}
