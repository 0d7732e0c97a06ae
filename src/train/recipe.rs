//! The resolved recipe of a job: every hyperparameter concrete, the unspecified ones chosen
//! from the data (modality, size, class balance), each automatic choice with its reason.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::defaults::{
    BackboneTuning, default_finetune_epochs, default_validation, early_stopping_patience,
    finetune_objective, head_solver, head_views, label_smoothing,
};
use super::hyper::{
    AugmentOptions, AugmentSpec, Choice, ClassWeights, DataProfile, FinetuneObjective,
    Hyperparameters, Unfreeze, ValidationSpec,
};
use crate::backbones::Modality;
use crate::backbones::catalog::is_composite;
use crate::datasets::Task;

/// Optimiser steps the head gets on cached features when `head_epochs` is not given: at
/// 8-16 examples per class a fixed epoch count would mean a handful of steps.
const HEAD_TARGET_STEPS: usize = 300;

/// How the head is trained on cached features.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadSolver {
    /// Multinomial logistic regression fitted to convergence, its L2 strength chosen by
    /// cross-validation on the training rows ([`super::logreg`]).
    LogisticCv,
    /// Mini-batch AdamW with dropout, label smoothing and early stopping: what the head
    /// hyperparameters (`head_epochs`, `head_lr`, `dropout`, `hidden_units`, …) tune.
    Sgd,
    /// Regression: ridge regression on standardised targets, its strength chosen by
    /// cross-validation on the training rows ([`super::tasks::ridge`]).
    RidgeCv,
    /// Multi-label: one logistic regression per label (sigmoid, binary cross-entropy),
    /// each strength chosen by cross-validation on the training rows.
    BinaryLogisticCv,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub backbone: String,
    pub validation: ValidationSpec,
    pub seed: u64,
    pub head_solver: HeadSolver,
    pub head_epochs: u32,
    pub head_batch_size: usize,
    pub head_lr: f64,
    pub finetune_epochs: u32,
    /// What fine-tuning optimises (contrastive: text only, one pass of
    /// [`super::contrastive::CONTRASTIVE_STEPS`] steps per "epoch").
    pub finetune_objective: FinetuneObjective,
    pub batch_size: usize,
    pub backbone_lr: f64,
    /// Head rate while fine-tuning (the backbone's is far lower).
    pub finetune_head_lr: f64,
    pub weight_decay: f64,
    pub l1: f64,
    pub dropout: f64,
    pub label_smoothing: f64,
    pub augment: Option<AugmentOptions>,
    pub early_stopping_patience: u32,
    pub unfreeze: Unfreeze,
    pub class_weights: ClassWeights,
    pub hidden_units: usize,
    pub max_length: usize,
    /// Images: augmented views of each training image ([`super::features::HEAD_VIEWS`])
    /// the logistic head learns from beside the plain one.
    #[serde(default)]
    pub head_views: u32,
    pub choices: Vec<Choice>,
}

impl Recipe {
    /// Regression and multi-label: the head that fits the task and the loss fine-tuning
    /// minimises; the classification-only choices (class weights, smoothing) dropped.
    pub fn adapt_to_task(&mut self, task: Task) {
        let (solver, reason, loss) = match task {
            Task::Classification => return,
            Task::Regression => (
                HeadSolver::RidgeCv,
                format!(
                    "regression: ridge regression on standardised features and standardised targets (squared error), alpha chosen from {:?} by cross-validation on the training rows",
                    super::tasks::ridge::ALPHA_GRID
                ),
                (
                    "huber",
                    format!(
                        "regression: fine-tuning minimises the Huber loss on standardised targets (squared error within {} standard deviation, linear beyond: one wrong number cannot dominate a small set), then the ridge head is fitted anew on the tuned features",
                        super::tasks::tune::HUBER_DELTA
                    ),
                ),
            ),
            Task::Multilabel => (
                HeadSolver::BinaryLogisticCv,
                "multi-label: one logistic regression per label (sigmoid outputs, binary cross-entropy), each C chosen by cross-validation on the training rows; per-label thresholds tuned on held-out predictions".into(),
                (
                    "binary_cross_entropy",
                    "multi-label: fine-tuning minimises the binary cross-entropy of every label's sigmoid output, then the per-label logistic heads are fitted anew on the tuned features".into(),
                ),
            ),
        };
        self.head_solver = solver;
        let auto_epochs = self
            .choices
            .iter()
            .any(|c| c.parameter == "finetune_epochs");
        if task == Task::Multilabel && auto_epochs && self.finetune_epochs > 0 {
            self.finetune_epochs = 0;
            self.choices.retain(|c| c.parameter != "finetune_epochs");
            self.choices.push(Choice {
                parameter: "finetune_epochs".into(),
                value: json!(0),
                reason: "multi-label: the per-label logistic heads on frozen features, by default; fine-tuned candidates won on held-out cross-entropy yet predicted worse with the thresholds tuned on the fold models (the final model's scores drift from theirs: micro-F1 0.954-0.968 against 0.981 on unseen notes, 3 seeds); set finetune_epochs to try it".into(),
            });
        }
        let dropped = [
            "head_solver",
            "finetune_objective",
            "class_weights",
            "label_smoothing",
            "head_views",
        ];
        self.choices
            .retain(|c| !dropped.contains(&c.parameter.as_str()));
        if self.head_views > 0 {
            self.head_views = 0;
            self.choices.push(Choice {
                parameter: "head_views".into(),
                value: json!(0),
                reason: "regression and multi-label heads learn from the plain features".into(),
            });
        }
        self.choices.push(Choice {
            parameter: "head_solver".into(),
            value: json!(solver),
            reason,
        });
        if self.finetune_epochs > 0 {
            self.choices.push(Choice {
                parameter: "finetune_loss".into(),
                value: json!(loss.0),
                reason: format!(
                    "{}; kept only if it beats the head on frozen features by more than one standard error of the held-out loss",
                    loss.1
                ),
            });
        }
    }
}

struct Chooser<'a> {
    given: &'a Hyperparameters,
    choices: Vec<Choice>,
}

impl Chooser<'_> {
    fn pick<T: Serialize + Clone>(
        &mut self,
        name: &str,
        given: Option<T>,
        auto: impl FnOnce() -> (T, String),
    ) -> T {
        match given {
            Some(v) => v,
            None => {
                let (v, reason) = auto();
                self.choices.push(Choice {
                    parameter: name.to_string(),
                    value: json!(v),
                    reason,
                });
                v
            }
        }
    }
}

/// The backbone a job trains, decided once when the job is submitted
/// ([`super::budget::choose_backbone`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BackboneChoice {
    pub id: String,
    /// Why, when it was chosen automatically (`"auto"`).
    pub reason: Option<String>,
}

/// Resolves every hyperparameter for this data and the chosen backbone.
pub fn resolve(
    h: &Hyperparameters,
    validation: Option<&ValidationSpec>,
    backbone: &BackboneChoice,
    seed: u64,
    data: &DataProfile,
) -> Recipe {
    let mut c = Chooser {
        given: h,
        choices: Vec::new(),
    };
    if let Some(reason) = &backbone.reason {
        c.choices.push(Choice {
            parameter: "backbone".into(),
            value: json!(backbone.id),
            reason: reason.clone(),
        });
    }
    let text = data.modality == Modality::Text;
    let n = data.num_examples;
    let per_class = data.per_class();

    let classifies = data.task == Task::Classification;
    let given_objective = match c.given.finetune_objective {
        Some(FinetuneObjective::Contrastive) if !text || !classifies => {
            c.choices.push(Choice {
                parameter: "finetune_objective".into(),
                value: json!(FinetuneObjective::CrossEntropy),
                reason: "contrastive tuning is for text classification; images and the other tasks fine-tune on their own loss".into(),
            });
            Some(FinetuneObjective::CrossEntropy)
        }
        other => other,
    };
    let finetune_objective = c.pick("finetune_objective", given_objective, || {
        finetune_objective(text && classifies, data)
    });
    let contrastive = finetune_objective == FinetuneObjective::Contrastive;
    let objective_given = c.given.finetune_objective.is_some();
    // Whether the backbone is tuned does not depend on the split (only the epoch count of
    // large sets does): asked with every example as training data.
    let frozen_only = is_composite(&backbone.id);
    let tunes_backbone = c.given.finetune_epochs.map_or_else(
        || {
            !frozen_only
                && default_finetune_epochs(text, contrastive, data, n, objective_given).0 > 0
        },
        |e| e > 0,
    );
    let validation = c.pick("validation", validation.cloned(), || {
        let tuning = match (tunes_backbone, contrastive) {
            (false, _) => BackboneTuning::Frozen,
            (true, false) => BackboneTuning::CrossEntropy,
            (true, true) => BackboneTuning::Contrastive,
        };
        default_validation(n, data.smallest_class, tuning)
    });
    let train_fraction = match &validation {
        ValidationSpec::Holdout { fraction } => 1.0 - fraction,
        ValidationSpec::Kfold { folds } => 1.0 - 1.0 / *folds as f64,
    };
    let n_train = ((n as f64 * train_fraction).round() as usize).max(1);

    let head_solver = c.pick("head_solver", None, || head_solver(h));
    let head_batch_size = 32usize.min(n_train);
    let head_epochs = c.pick("head_epochs", c.given.head_epochs, || {
        let steps_per_epoch = n_train.div_ceil(head_batch_size);
        let epochs = HEAD_TARGET_STEPS.div_ceil(steps_per_epoch).clamp(5, 300) as u32;
        (
            epochs,
            format!(
                "about {HEAD_TARGET_STEPS} optimiser steps on cached features ({steps_per_epoch} steps per epoch of {n_train} training examples); early stopping picks the best"
            ),
        )
    });
    let head_lr = c.pick("head_lr", c.given.head_lr, || {
        (1e-3, "AdamW on standardised features".into())
    });
    let finetune_epochs = c.pick("finetune_epochs", c.given.finetune_epochs, || {
        if frozen_only {
            return (
                0,
                "the composite backbone is a frozen feature extractor: the head on its concatenated features is the model".into(),
            );
        }
        let (e, why) = default_finetune_epochs(text, contrastive, data, n_train, objective_given);
        (
            e,
            format!(
                "{why}; fine-tuning competes with the head-only model on validation and the better one is kept ({per_class:.0} examples per class)"
            ),
        )
    });
    let given_views = match c.given.head_views {
        Some(v) if v > 0 && (text || head_solver != HeadSolver::LogisticCv) => {
            c.choices.push(Choice {
                parameter: "head_views".into(),
                value: json!(0),
                reason: "augmented views are for images with the logistic head; this head learns from the plain features".into(),
            });
            Some(0)
        }
        other => other,
    };
    let head_views = c.pick("head_views", given_views, || {
        head_views(text && classifies, head_solver, n, finetune_epochs)
    });
    let batch_size = c.pick("batch_size", c.given.batch_size.map(|b| b as usize), || {
        (
            16usize.min(n_train),
            "small batches: many steps on small data, bounded memory on CPU".into(),
        )
    });
    let backbone_lr = c.pick("backbone_lr", c.given.backbone_lr, || {
        if contrastive {
            (
                super::contrastive::CONTRASTIVE_LR,
                "contrastive tuning: few steps, so a higher rate than cross-entropy fine-tuning's, decayed linearly to 0".into(),
            )
        } else if text {
            (
                3e-5,
                "standard BERT fine-tuning rate, far below the head's".into(),
            )
        } else {
            (
                1e-4,
                "a tenth of the head's rate: adapt the pre-trained filters, don't erase them"
                    .into(),
            )
        }
    });
    let finetune_head_lr = 1e-3;
    let weight_decay = c.pick("weight_decay", c.given.weight_decay, || {
        (
            0.01,
            "AdamW default; biases and norms are not decayed".into(),
        )
    });
    let l1 = c.given.l1.unwrap_or(0.0);
    let dropout = c.pick("dropout", c.given.dropout, || {
        if text {
            (0.1, "light dropout on the head".into())
        } else {
            (
                0.2,
                "image features are wide: more dropout on the head".into(),
            )
        }
    });
    let label_smoothing = c.pick("label_smoothing", c.given.label_smoothing, || {
        label_smoothing(head_solver)
    });
    let augment = match &c.given.augment {
        Some(AugmentSpec::Enabled(false)) => None,
        Some(AugmentSpec::Enabled(true)) => Some(AugmentOptions::default()),
        Some(AugmentSpec::Custom(a)) => Some(a.clone()),
        None if !text => {
            c.choices.push(Choice {
                parameter: "augment".into(),
                value: json!(true),
                reason: "images: random resized crop, flip and colour jitter while fine-tuning"
                    .into(),
            });
            Some(AugmentOptions::default())
        }
        None => None,
    };
    let early_stopping_patience = c.pick(
        "early_stopping_patience",
        c.given.early_stopping_patience,
        || early_stopping_patience(text, finetune_epochs),
    );
    let unfreeze = c.pick("unfreeze", c.given.unfreeze, || {
        (Unfreeze::All, "all blocks, at a low rate".into())
    });
    let class_weights = c.pick("class_weights", c.given.class_weights, || {
        if data.imbalance() > 3.0 {
            (
                ClassWeights::Balanced,
                format!(
                    "the largest class is {:.1}x the smallest: balanced weights keep minority classes from being ignored",
                    data.imbalance()
                ),
            )
        } else {
            (ClassWeights::None, "classes are roughly balanced".into())
        }
    });
    let hidden_units = c.given.hidden_units.unwrap_or(0) as usize;
    let max_length = c.given.max_length.unwrap_or(256) as usize;
    let choices = c.choices;
    Recipe {
        backbone: backbone.id.clone(),
        validation,
        seed,
        head_solver,
        head_epochs,
        head_batch_size,
        head_lr,
        finetune_epochs,
        finetune_objective,
        batch_size,
        backbone_lr,
        finetune_head_lr,
        weight_decay,
        l1,
        dropout,
        label_smoothing,
        augment,
        early_stopping_patience,
        unfreeze,
        class_weights,
        hidden_units,
        max_length,
        head_views,
        choices,
    }
}

#[cfg(test)]
mod tests {
    use super::super::defaults::*;
    use super::*;

    fn recipe(modality: Modality, per_class: usize, h: &Hyperparameters) -> Recipe {
        let backbone = BackboneChoice {
            id: "b".into(),
            reason: None,
        };
        let data = DataProfile::of_counts(modality, &[per_class, per_class]);
        resolve(h, None, &backbone, 0, &data)
    }

    #[test]
    fn few_texts_per_class_tune_by_pairs_more_by_cross_entropy() {
        let h = Hyperparameters::default();
        let few = recipe(Modality::Text, 8, &h);
        assert_eq!(few.finetune_objective, FinetuneObjective::Contrastive);
        assert_eq!(few.finetune_epochs, 1);
        assert_eq!(few.backbone_lr, super::super::contrastive::CONTRASTIVE_LR);
        let measured = recipe(Modality::Text, 64, &h);
        assert_eq!(measured.finetune_objective, FinetuneObjective::Contrastive);
        let many = recipe(Modality::Text, 65, &h);
        assert_eq!(many.finetune_objective, FinetuneObjective::CrossEntropy);
        assert!(many.finetune_epochs > 1);
        let images = recipe(Modality::Image, 8, &h);
        assert_eq!(images.finetune_objective, FinetuneObjective::CrossEntropy);
    }

    #[test]
    fn tuning_the_backbone_cross_validates_on_fewer_folds() {
        let folds = |r: &Recipe| match r.validation {
            ValidationSpec::Kfold { folds } => folds,
            ValidationSpec::Holdout { .. } => panic!("small data is cross-validated"),
        };
        let h = Hyperparameters::default();
        // Two classes: contrastive pairs, a whole pass per fold.
        assert_eq!(folds(&recipe(Modality::Text, 8, &h)), CONTRASTIVE_FOLDS);
        assert_eq!(folds(&recipe(Modality::Text, 64, &h)), CONTRASTIVE_FOLDS);
        assert_eq!(folds(&recipe(Modality::Image, 30, &h)), FINETUNE_FOLDS);
        assert_eq!(
            folds(&recipe(Modality::Image, 8, &h)),
            DEFAULT_FOLDS,
            "head only"
        );
        let head_only = Hyperparameters {
            finetune_epochs: Some(0),
            ..Default::default()
        };
        assert_eq!(folds(&recipe(Modality::Text, 8, &head_only)), DEFAULT_FOLDS);
        assert_eq!(
            folds(&recipe(Modality::Text, 64, &head_only)),
            DEFAULT_FOLDS
        );
        let many_topics = DataProfile::of_counts(Modality::Text, &[8; 8]);
        let backbone = BackboneChoice {
            id: "b".into(),
            reason: None,
        };
        assert_eq!(
            folds(&resolve(&h, None, &backbone, 0, &many_topics)),
            DEFAULT_FOLDS,
            "few of many: frozen"
        );
    }

    #[test]
    fn fine_tuning_from_the_logistic_head_is_unsmoothed_and_images_run_the_whole_schedule() {
        let h = Hyperparameters::default();
        let images = recipe(Modality::Image, 50, &h);
        assert_eq!(images.head_solver, HeadSolver::LogisticCv);
        assert_eq!(images.label_smoothing, 0.0);
        assert!(images.finetune_epochs > 3);
        assert_eq!(images.early_stopping_patience, images.finetune_epochs);
        let text = recipe(Modality::Text, 100, &h);
        assert_eq!(text.label_smoothing, 0.0);
        assert_eq!(text.early_stopping_patience, 2);
        let sgd = Hyperparameters {
            head_epochs: Some(20),
            ..Default::default()
        };
        assert_eq!(recipe(Modality::Image, 50, &sgd).label_smoothing, 0.1);
        let patient = Hyperparameters {
            early_stopping_patience: Some(1),
            ..Default::default()
        };
        assert_eq!(
            recipe(Modality::Image, 50, &patient).early_stopping_patience,
            1
        );
    }

    #[test]
    fn image_heads_on_frozen_features_learn_from_augmented_views() {
        let h = Hyperparameters::default();
        let all = super::super::features::HEAD_VIEWS.len() as u32;
        assert_eq!(recipe(Modality::Image, 10, &h).head_views, all);
        assert_eq!(recipe(Modality::Image, 50, &h).head_views, 0, "fine-tunes");
        let head_only = Hyperparameters {
            finetune_epochs: Some(0),
            ..Default::default()
        };
        assert_eq!(recipe(Modality::Image, 50, &head_only).head_views, all);
        assert_eq!(recipe(Modality::Image, 5000, &head_only).head_views, 0);
        assert_eq!(recipe(Modality::Text, 8, &h).head_views, 0);
        let sgd = Hyperparameters {
            head_epochs: Some(20),
            ..Default::default()
        };
        assert_eq!(recipe(Modality::Image, 10, &sgd).head_views, 0);
        let one = Hyperparameters {
            head_views: Some(1),
            ..Default::default()
        };
        assert_eq!(recipe(Modality::Image, 10, &one).head_views, 1);
        assert_eq!(
            recipe(Modality::Text, 8, &one).head_views,
            0,
            "text has no views"
        );
        let mut task = recipe(Modality::Image, 10, &h);
        task.adapt_to_task(Task::Regression);
        assert_eq!(task.head_views, 0);
        let too_many = Hyperparameters {
            head_views: Some(all + 1),
            ..Default::default()
        };
        assert!(too_many.validate().is_err());
    }

    #[test]
    fn contrastive_asked_for_images_falls_back_and_says_so() {
        let h = Hyperparameters {
            finetune_objective: Some(FinetuneObjective::Contrastive),
            ..Default::default()
        };
        let r = recipe(Modality::Image, 50, &h);
        assert_eq!(r.finetune_objective, FinetuneObjective::CrossEntropy);
        let why = r
            .choices
            .iter()
            .find(|c| c.parameter == "finetune_objective")
            .expect("the fallback is explained");
        assert!(why.reason.contains("for text"), "{}", why.reason);
        let text = recipe(Modality::Text, 64, &h);
        assert_eq!(text.finetune_objective, FinetuneObjective::Contrastive);
    }

    #[test]
    fn few_examples_of_many_classes_keep_the_backbone_frozen() {
        let h = Hyperparameters::default();
        let resolve_for = |classes: usize, per_class: usize, task: Task| {
            let data =
                DataProfile::of_counts(Modality::Text, &vec![per_class; classes]).for_task(task);
            let backbone = BackboneChoice {
                id: "b".into(),
                reason: None,
            };
            resolve(&h, None, &backbone, 0, &data)
        };
        let many = resolve_for(8, 8, Task::Classification);
        assert_eq!(many.finetune_objective, FinetuneObjective::CrossEntropy);
        assert_eq!(many.finetune_epochs, 0);
        let few = resolve_for(4, 8, Task::Classification);
        assert_eq!(few.finetune_objective, FinetuneObjective::Contrastive);
        // More per class: cross-entropy fine-tuning as before; regression's five strata are
        // not classes.
        assert!(resolve_for(8, 64, Task::Classification).finetune_epochs > 0);
        assert!(resolve_for(5, 8, Task::Regression).finetune_epochs > 0);
    }
}
