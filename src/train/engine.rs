//! One training run from start to finish, as the recipe's steps: prepare the data (resolve
//! the recipe, split, extract features once), cross-fit the candidates (head-only,
//! fine-tuned, and the no-transfer baseline) on the holdout split or each fold, select,
//! fit the final model, evaluate (metrics, baseline, calibration, suspects), package.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::artifact::{FORMAT_VERSION, LexicalConfig, ModelArtifact, ModelConfig, tensor_names};
use super::baseline;
use super::budget::{self, ForwardCost};
use super::crossfit::{cross_fit, final_fit, final_lexical};
use super::evaluate::evaluate_run;
use super::features::{HEAD_VIEWS, extract, extract_view};
use super::fit::{Prepared, SplitFit};
use super::hyper::{DataProfile, ValidationSpec};
use super::inputs::cost;
use super::lexical::LexicalModel;
use super::recipe::{Recipe, resolve};
use super::report::{Candidate, Report};
use super::select::select;
use super::suspects::Suspect;
use super::{Observer, TrainError, TrainRequest, TrainResult, check_cancel};
use crate::backbones::Modality;
use crate::backbones::registry::{LoadedBackbone, Registry};
use crate::datasets::Task;
use crate::datasets::split::{self, Split};
use crate::store::jobs::Stage;

/// Runs training jobs against the installed backbones.
pub struct Engine {
    pub registry: Arc<Registry>,
}

/// What a successful run produced.
pub struct TrainOutcome {
    pub recipe: Recipe,
    /// The model's metrics and how it was chosen (shown on the model and the job).
    pub report: super::RunReport,
    pub artifact: ModelArtifact,
}

impl Engine {
    pub fn train(&self, req: &TrainRequest, obs: &mut dyn Observer) -> TrainResult<TrainOutcome> {
        let run = self.prepare(req, obs)?;
        if req.targets.task() != Task::Classification {
            return super::tasks::fit::train_task(&run, obs);
        }
        let mut crossfit = cross_fit(&run, obs)?;
        let evidence = crossfit.evidence(&run.recipe);
        let selection = select(&crossfit.held, &evidence, &req.labels);
        obs.log(&format!(
            "selected {}: {}",
            selection.chosen.describe(),
            selection.reason
        ));
        if let Some(b) = &selection.blend {
            obs.log(&format!("lexical blend: {}", b.reason));
        }
        let (model, final_info) = final_fit(&run, &mut crossfit, &selection, obs)?;
        let lexical = final_lexical(&run, &selection);
        check_cancel(obs)?;
        obs.stage(
            Stage::Evaluating,
            "measuring the chosen model on held-out data",
        );
        let (report, suspects) = evaluate_run(&run, &crossfit, &selection, final_info);
        let artifact = package(&run, model, lexical, &report, suspects)?;
        Ok(TrainOutcome {
            recipe: run.recipe,
            report: super::RunReport::Classification(Box::new(report)),
            artifact,
        })
    }

    /// Phase 1: resolve the recipe, load the frozen backbone, extract every example's
    /// features once, split the data.
    fn prepare<'a>(
        &'a self,
        req: &'a TrainRequest,
        obs: &mut dyn Observer,
    ) -> TrainResult<Prepared<'a>> {
        let started = Instant::now();
        obs.stage(
            Stage::Preparing,
            "resolving the recipe and splitting the data",
        );
        let data = DataProfile::of_labels(
            req.modality,
            req.split_classes(),
            req.examples.iter().map(|e| e.label),
        )
        .for_task(req.targets.task());
        if data.num_classes < 2 || data.smallest_class == 0 {
            return Err(TrainError::Data(
                "every label needs at least one example and there must be 2 labels or more".into(),
            ));
        }
        let mut recipe = resolve(
            &req.hyperparameters,
            req.validation.as_ref(),
            &req.backbone,
            req.seed,
            &data,
        );
        recipe.adapt_to_task(req.targets.task());
        obs.recipe(&recipe);
        let frozen = self.registry.frozen(&recipe.backbone)?;
        if frozen.modality != req.modality {
            return Err(TrainError::Data(format!(
                "backbone {} is for {} data, the dataset is {}",
                recipe.backbone,
                frozen.modality.as_str(),
                req.modality.as_str()
            )));
        }
        let device = self.registry.device().clone();
        obs.stage(
            Stage::ExtractingFeatures,
            "running the frozen backbone once per example",
        );
        let examples: Vec<&super::Example> = req.examples.iter().collect();
        let features = extract(&frozen, &examples, recipe.max_length, &device, obs)?;
        let views = extract_head_views(&frozen, &examples, &recipe, &device, obs)?;
        let tokens: Vec<usize> = req
            .examples
            .iter()
            .map(|e| cost(&frozen, e).min(recipe.max_length))
            .collect();
        let forward = ForwardCost::of(&recipe.backbone, &tokens, recipe.batch_size);
        cap_finetuning_to_budget(req, &data, &mut recipe, forward, obs);
        let labels: Vec<usize> = req.examples.iter().map(|e| e.label).collect();
        let splits = make_splits(&recipe, &labels, data.num_classes);
        Ok(Prepared {
            baseline: baseline::prepare(&req.examples, &device)?,
            deadline: req.time_budget_s.map(|s| started + Duration::from_secs(s)),
            req,
            recipe,
            data,
            registry: &self.registry,
            frozen,
            features,
            views,
            labels,
            splits,
            device,
            started,
        })
    }
}

/// Features of the recipe's augmented views of every example (none for text).
fn extract_head_views(
    frozen: &LoadedBackbone,
    examples: &[&super::Example],
    recipe: &Recipe,
    device: &Device,
    obs: &mut dyn Observer,
) -> TrainResult<Vec<Tensor>> {
    let views = &HEAD_VIEWS[..recipe.head_views as usize];
    if !views.is_empty() {
        obs.stage(
            Stage::ExtractingFeatures,
            &format!(
                "running the frozen backbone on {} augmented views of each image",
                views.len()
            ),
        );
    }
    views
        .iter()
        .map(|&v| {
            extract_view(
                frozen,
                examples,
                recipe.max_length,
                v,
                recipe.seed,
                device,
                obs,
            )
        })
        .collect()
}

fn make_splits(recipe: &Recipe, labels: &[usize], classes: usize) -> Vec<Split> {
    match recipe.validation {
        ValidationSpec::Holdout { fraction } => {
            vec![split::holdout(labels, classes, fraction, recipe.seed)]
        }
        ValidationSpec::Kfold { folds } => split::kfold(labels, classes, folds, recipe.seed),
    }
}

/// Lowers the fine-tuning epochs when they would not fit the time budget, by the
/// estimated cost (the same on every run of the same data and settings).
fn cap_finetuning_to_budget(
    req: &TrainRequest,
    data: &DataProfile,
    recipe: &mut Recipe,
    forward: ForwardCost,
    obs: &mut dyn Observer,
) {
    let budget_s = req
        .time_budget_s
        .map_or_else(|| budget::default_budget_s(data.modality), |s| s as f64);
    let (runs, n_valid) = match recipe.validation {
        ValidationSpec::Kfold { folds } => (folds + 1, data.num_examples / folds),
        ValidationSpec::Holdout { fraction } => (1, (data.num_examples as f64 * fraction) as usize),
    };
    let remaining = budget_s - data.num_examples as f64 * forward.sorted_s;
    // Contrastive tuning is a fixed number of steps, far cheaper than an epoch estimate
    // would say at this size; the deadline still stops it.
    let user_set = req.hyperparameters.finetune_epochs.is_some()
        || recipe.finetune_objective == super::hyper::FinetuneObjective::Contrastive;
    if let Some(choice) = budget::fit_epochs_to_budget(
        recipe,
        forward,
        runs,
        data.num_examples - n_valid,
        n_valid,
        remaining,
        user_set,
    ) {
        obs.log(&format!(
            "finetune_epochs = {}: {}",
            choice.value, choice.reason
        ));
        recipe.choices.retain(|c| c.parameter != choice.parameter);
        recipe.choices.push(choice);
        obs.recipe(recipe);
    }
}

/// Last phase: the model's files — head, feature standardisation, the fine-tuned
/// backbone's own weights when that candidate was kept, the lexical model when it is
/// blended in, and the suspects.
fn package(
    run: &Prepared,
    model: SplitFit,
    lexical: Option<LexicalModel>,
    report: &Report,
    suspects: Vec<Suspect>,
) -> TrainResult<ModelArtifact> {
    let (head, standardizer) = model.head_of(report.selected);
    let mut tensors = head.named_tensors();
    tensors.push((
        tensor_names::FEATURES_MEAN.into(),
        standardizer.mean.clone(),
    ));
    tensors.push((tensor_names::FEATURES_STD.into(), standardizer.std.clone()));
    let backbone = match (&model.finetuned, report.selected) {
        (Some(ft), Candidate::Finetuned) => Some(ft.backbone.net.export_weights()?),
        _ => None,
    };
    let (req, recipe) = (run.req, &run.recipe);
    let lexical = match (lexical, &report.lexical_blend) {
        (Some(m), Some(blend)) => {
            let terms = m.lexicon.dims();
            let classes = m.linear.classes;
            let idf = if m.lexicon.idf.is_empty() {
                vec![0.0]
            } else {
                m.lexicon.idf.clone()
            };
            tensors.push((
                tensor_names::LEXICAL_IDF.into(),
                Tensor::from_vec(idf, terms, &run.device)?,
            ));
            tensors.push((
                tensor_names::LEXICAL_WEIGHT.into(),
                Tensor::from_vec(m.linear.weight, (classes, terms), &run.device)?,
            ));
            tensors.push((
                tensor_names::LEXICAL_BIAS.into(),
                Tensor::from_vec(m.linear.bias, classes, &run.device)?,
            ));
            Some(LexicalConfig {
                terms: m.lexicon.terms,
                transfer_weight: blend.transfer_weight,
            })
        }
        _ => None,
    };
    Ok(ModelArtifact {
        config: ModelConfig {
            format_version: FORMAT_VERSION,
            backbone: recipe.backbone.clone(),
            modality: req.modality,
            labels: req.labels.clone(),
            max_length: (req.modality == Modality::Text).then_some(recipe.max_length),
            resolution: run.frozen.prep.resolution(),
            hidden_units: recipe.hidden_units,
            dropout: recipe.dropout,
            temperature: report.calibration.temperature,
            finetuned_backbone: backbone.is_some(),
            lexical,
            task: Task::Classification,
            interval_half_width: None,
            thresholds: None,
        },
        tensors,
        backbone,
        suspects,
    })
}
