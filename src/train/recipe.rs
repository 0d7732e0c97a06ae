//! One training run from start to finish: resolve the recipe, extract features once, fit
//! on the holdout split or on each fold, choose head-only or fine-tuned by validation, train
//! the no-transfer baseline on the same splits, calibrate, find suspicious labels, and
//! package the model with a report of all of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::artifact::{FORMAT_VERSION, ModelArtifact, ModelConfig};
use super::baseline;
use super::budget;
use super::calibration::{calibrate, fit_temperature};
use super::defaults::{Recipe, resolve};
use super::features::extract;
use super::fit::{FitContext, SplitFit, eval_json};
use super::hyper::{DataProfile, ValidationSpec};
use super::metrics::{Metrics, evaluate, softmax_rows};
use super::suspects::{self, Suspect};
use super::{Observer, TrainError, TrainRequest, TrainResult, check_cancel};
use crate::backbones::Modality;
use crate::backbones::registry::Registry;
use crate::datasets::split;
use crate::store::jobs::Stage;

/// Suspicious examples kept with a model.
const MAX_SUSPECTS: usize = 100;

/// Runs training jobs against the installed backbones.
pub struct Engine {
    pub registry: Arc<Registry>,
}

/// What a successful run produced.
pub struct TrainOutcome {
    pub recipe: Recipe,
    /// The model's metrics and how it was chosen (shown on the model and the job).
    pub report: Value,
    pub artifact: ModelArtifact,
}

fn profile(req: &TrainRequest) -> DataProfile {
    let mut counts = vec![0usize; req.labels.len()];
    for e in &req.examples {
        counts[e.label] += 1;
    }
    DataProfile {
        modality: req.modality,
        num_examples: req.examples.len(),
        num_classes: req.labels.len(),
        smallest_class: counts.iter().copied().min().unwrap_or(0),
        largest_class: counts.iter().copied().max().unwrap_or(0),
    }
}

fn tag(key: &str, value: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.into(), value);
    m
}

fn summary(m: &Metrics) -> Value {
    json!({"accuracy": m.accuracy, "macro_f1": m.macro_f1, "log_loss": m.log_loss})
}

fn mean_std(values: &[f64]) -> Value {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    json!({"mean": mean, "std": var.sqrt()})
}

/// Mean per-example reduction of log loss from `a` to `b` logits, each at its own fitted
/// temperature (so mere sharpness, which calibration undoes anyway, earns nothing), and the
/// standard error of that mean.
fn paired_gain(a: &[Vec<f32>], b: &[Vec<f32>], y: &[usize]) -> (f64, f64) {
    let pa = softmax_rows(a, fit_temperature(a, y) as f32);
    let pb = softmax_rows(b, fit_temperature(b, y) as f32);
    let d: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let la = -(pa[i][c] as f64).clamp(1e-15, 1.0).ln();
            let lb = -(pb[i][c] as f64).clamp(1e-15, 1.0).ln();
            la - lb
        })
        .collect();
    let n = d.len().max(1) as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// Held-out predictions gathered over one or more splits, in dataset row order.
struct HeldOut {
    rows: Vec<usize>,
    /// Logits of each candidate for `rows`.
    head: Vec<Vec<f32>>,
    finetuned: Vec<Vec<f32>>,
    baseline: Vec<Vec<f32>>,
}

impl Engine {
    /// Picks the backbone and resolves the recipe: the backbone asked for, or for `"auto"`
    /// the text default, or the largest EfficientNet-Lite whose estimated time fits.
    pub fn plan(&self, req: &TrainRequest, data: &DataProfile, budget_s: f64) -> Recipe {
        let h = &req.hyperparameters;
        let v = req.validation.as_ref();
        if req.backbone != "auto" {
            return resolve(h, v, &req.backbone, None, req.seed, data);
        }
        let id = self.registry.default_for(req.modality);
        let draft = resolve(h, v, id, None, req.seed, data);
        let (id, reason) = match req.modality {
            Modality::Text => (id.to_string(), "the text backbone".to_string()),
            Modality::Image => {
                let runs = match draft.validation {
                    ValidationSpec::Kfold { folds } => folds + 1,
                    ValidationSpec::Holdout { .. } => 1,
                };
                let installed = |id: &str| self.registry.info(id).is_some_and(|b| b.available);
                budget::choose_image_backbone(
                    data.num_examples,
                    budget_s,
                    draft.finetune_epochs,
                    runs,
                    installed,
                )
            }
        };
        resolve(h, v, &id, Some(reason), req.seed, data)
    }

    pub fn train(&self, req: &TrainRequest, obs: &mut dyn Observer) -> TrainResult<TrainOutcome> {
        let started = Instant::now();
        obs.stage(
            Stage::Preparing,
            "resolving the recipe and splitting the data",
        );
        let data = profile(req);
        if data.num_classes < 2 || data.smallest_class == 0 {
            return Err(TrainError::Data(
                "every label needs at least one example and there must be 2 labels or more".into(),
            ));
        }
        let budget_s = req
            .time_budget_s
            .map_or(budget::DEFAULT_BUDGET_S, |s| s as f64);
        let mut recipe = self.plan(req, &data, budget_s);
        let backbone_id = recipe.backbone.clone();
        obs.recipe(&serde_json::to_value(&recipe).expect("recipe serialises"));
        let device = self.registry.device().clone();
        let frozen = self.registry.frozen(&backbone_id)?;
        if frozen.modality != req.modality {
            return Err(TrainError::Data(format!(
                "backbone {backbone_id} is for {} data, the dataset is {}",
                frozen.modality.as_str(),
                req.modality.as_str()
            )));
        }
        let labels: Vec<usize> = req.examples.iter().map(|e| e.label).collect();
        let classes = req.labels.len();

        obs.stage(
            Stage::ExtractingFeatures,
            "running the frozen backbone once per example",
        );
        let extract_started = Instant::now();
        let features = extract(&frozen, &req.examples, recipe.max_length, &device, obs)?;
        let forward_s = extract_started.elapsed().as_secs_f64() / req.examples.len() as f64;
        let (runs, n_valid) = match recipe.validation {
            ValidationSpec::Kfold { folds } => (folds + 1, data.num_examples / folds),
            ValidationSpec::Holdout { fraction } => {
                (1, (data.num_examples as f64 * fraction) as usize)
            }
        };
        let remaining = budget_s - started.elapsed().as_secs_f64();
        let user_set = req.hyperparameters.finetune_epochs.is_some();
        if let Some(choice) = budget::fit_epochs_to_budget(
            &mut recipe,
            forward_s,
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
            obs.recipe(&serde_json::to_value(&recipe).expect("recipe serialises"));
        }
        let recipe = recipe;
        let baseline_data = baseline::prepare(&req.examples, &device)?;
        let ctx = FitContext {
            req,
            recipe: &recipe,
            registry: &self.registry,
            backbone_id: &backbone_id,
            features: &features,
            labels: &labels,
            classes,
            device: device.clone(),
            deadline: req.time_budget_s.map(|s| started + Duration::from_secs(s)),
        };

        let splits = match recipe.validation {
            ValidationSpec::Holdout { fraction } => {
                vec![split::holdout(&labels, classes, fraction, recipe.seed)]
            }
            ValidationSpec::Kfold { folds } => split::kfold(&labels, classes, folds, recipe.seed),
        };
        let kfold = splits.len() > 1;
        let mut held = HeldOut {
            rows: Vec::new(),
            head: Vec::new(),
            finetuned: Vec::new(),
            baseline: Vec::new(),
        };
        let mut fold_reports = Vec::new();
        let mut head_epochs = Vec::new();
        let mut ft_epochs = Vec::new();
        let mut ft_improved = 0usize;
        let mut holdout_fit: Option<SplitFit> = None;
        for (f, s) in splits.iter().enumerate() {
            check_cancel(obs)?;
            let tags = if kfold {
                obs.log(&format!(
                    "fold {}/{}: {} training, {} validation examples",
                    f + 1,
                    splits.len(),
                    s.train.len(),
                    s.valid.len()
                ));
                tag("fold", json!(f + 1))
            } else {
                obs.log(&format!(
                    "{} training and {} validation examples, {classes} classes",
                    s.train.len(),
                    s.valid.len()
                ));
                Map::new()
            };
            let fit = ctx.fit(
                &s.train,
                &s.valid,
                recipe.finetune_epochs,
                recipe.head_epochs,
                tags,
                obs,
            )?;
            let base_cfg = ctx.head_config(
                &s.train.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
                recipe.head_epochs,
                &Map::new(),
            );
            let base = baseline::fit_and_predict(
                &baseline_data,
                &labels,
                classes,
                &s.train,
                &s.valid,
                &base_cfg,
                obs,
            )?;
            fold_reports.push(json!({
                "fold": f + 1,
                "num_valid": s.valid.len(),
                "head_only": fit.head_eval.as_ref().map(eval_json),
                "finetuned": fit.finetuned.as_ref().map(|ft| eval_json(&ft.eval)),
            }));
            head_epochs.push(fit.head_best_epoch as f64);
            ft_epochs.push(fit.finetune_best_epoch as f64);
            ft_improved += fit.finetuned.is_some() as usize;
            held.rows.extend_from_slice(&s.valid);
            held.head.extend(fit.head_logits.iter().cloned());
            held.finetuned.extend(fit.best_logits().iter().cloned());
            held.baseline.extend(base);
            if !kfold {
                holdout_fit = Some(fit);
            }
        }

        // Choose head-only or fine-tuned on held-out log loss.
        let y: Vec<usize> = held.rows.iter().map(|&i| labels[i]).collect();
        let head_m = evaluate(&softmax_rows(&held.head, 1.0), &y, &req.labels);
        let ft_m = evaluate(&softmax_rows(&held.finetuned, 1.0), &y, &req.labels);
        let ran_ft = recipe.finetune_epochs > 0;
        let final_ft_epochs = if kfold {
            (ft_epochs.iter().sum::<f64>() / ft_epochs.len() as f64).round() as u32
        } else {
            0
        };
        // One-standard-error rule: the bigger model must beat the head by more than the
        // noise of the comparison, judged per held-out example.
        let (gain, gain_se) = paired_gain(&held.head, &held.finetuned, &y);
        let use_ft = ran_ft && ft_improved > 0 && gain > gain_se && (!kfold || final_ft_epochs > 0);
        let reason = match (ran_ft, use_ft) {
            (false, _) => "finetune_epochs = 0: head only".to_string(),
            (true, true) => format!(
                "fine-tuning lowered the held-out log loss from {:.4} (head only) to {:.4}; with each calibrated, the gain {gain:.4} exceeds one standard error ({gain_se:.4})",
                head_m.log_loss, ft_m.log_loss
            ),
            (true, false) => format!(
                "fine-tuning did not beat the head-only model by more than one standard error (held-out log loss {:.4} vs {:.4}; with each calibrated, gain {gain:.4} ± {gain_se:.4}): the simpler model is kept",
                ft_m.log_loss, head_m.log_loss
            ),
        };
        obs.log(&format!(
            "selected {}: {reason}",
            if use_ft { "fine-tuned" } else { "head-only" }
        ));

        // The model: the holdout fit itself, or after k-fold a final fit on all data with
        // the epoch counts the folds chose.
        let (model_fit, final_info) = if let Some(fit) = holdout_fit {
            (fit, Value::Null)
        } else {
            check_cancel(obs)?;
            let head_final = ((head_epochs.iter().sum::<f64>() / head_epochs.len() as f64).round()
                as u32)
                .max(1);
            let ft_final = if use_ft { final_ft_epochs } else { 0 };
            obs.log(&format!(
                "final model on all {} examples: {head_final} head epochs{}",
                labels.len(),
                if ft_final > 0 {
                    format!(", {ft_final} fine-tuning epochs")
                } else {
                    String::new()
                }
            ));
            let all: Vec<usize> = (0..labels.len()).collect();
            let fit = ctx.fit(
                &all,
                &[],
                ft_final,
                head_final,
                tag("final", json!(true)),
                obs,
            )?;
            (
                fit,
                json!({"head_epochs": head_final, "finetune_epochs": ft_final, "num_train": labels.len()}),
            )
        };
        let keep_ft = use_ft && model_fit.finetuned.is_some();

        check_cancel(obs)?;
        obs.stage(
            Stage::Evaluating,
            "measuring the chosen model on held-out data",
        );
        let chosen = if use_ft { &held.finetuned } else { &held.head };
        // Each fold's metrics, for the candidate that was kept.
        let mut start = 0;
        for (report, s) in fold_reports.iter_mut().zip(&splits) {
            let end = start + s.valid.len();
            let m = evaluate(
                &softmax_rows(&chosen[start..end], 1.0),
                &y[start..end],
                &req.labels,
            );
            report["accuracy"] = json!(m.accuracy);
            report["macro_f1"] = json!(m.macro_f1);
            report["log_loss"] = json!(m.log_loss);
            start = end;
        }
        let metrics = evaluate(&softmax_rows(chosen, 1.0), &y, &req.labels);
        let base_m = evaluate(&softmax_rows(&held.baseline, 1.0), &y, &req.labels);
        let calibration = calibrate(chosen, &y);
        let probs = softmax_rows(chosen, calibration.temperature as f32);
        let suspect_rows: Vec<(usize, usize, Vec<f32>)> = held
            .rows
            .iter()
            .zip(&y)
            .zip(probs)
            .map(|((&i, &c), p)| (req.examples[i].index, c, p))
            .collect();
        let suspects: Vec<Suspect> = suspects::rank(&suspect_rows, &req.labels, MAX_SUSPECTS);

        let mut report = serde_json::to_value(&metrics).expect("metrics serialise");
        report["validation"] = match recipe.validation {
            ValidationSpec::Holdout { fraction } => json!({
                "strategy": "holdout",
                "fraction": fraction,
                "num_train": labels.len() - held.rows.len(),
                "num_valid": held.rows.len(),
            }),
            ValidationSpec::Kfold { folds } => json!({
                "strategy": "kfold",
                "folds": folds,
                "num_valid": held.rows.len(),
                "note": "metrics are out-of-fold: every example predicted by a model that did not train on it",
            }),
        };
        if kfold {
            let col = |k: &str| {
                fold_reports
                    .iter()
                    .map(|f| f[k].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>()
            };
            report["folds"] = json!(fold_reports);
            report["cv"] = json!({
                "accuracy": mean_std(&col("accuracy")),
                "macro_f1": mean_std(&col("macro_f1")),
                "log_loss": mean_std(&col("log_loss")),
            });
            report["final_fit"] = final_info;
        }
        report["selected"] = json!(if use_ft { "finetuned" } else { "head_only" });
        report["selection_reason"] = json!(reason);
        report["candidates"] = json!({
            "head_only": summary(&head_m),
            "finetuned": if ran_ft { summary(&ft_m) } else { Value::Null },
        });
        report["baseline"] = json!({
            "method": match req.modality {
                Modality::Text => "logistic regression (the same head) on TF-IDF of words and word pairs: no pre-trained knowledge",
                Modality::Image => "the same head on raw 16x16 RGB pixels: no pre-trained knowledge",
            },
            "accuracy": base_m.accuracy,
            "macro_f1": base_m.macro_f1,
            "log_loss": base_m.log_loss,
        });
        report["transfer_gain"] = json!({
            "accuracy": metrics.accuracy - base_m.accuracy,
            "macro_f1": metrics.macro_f1 - base_m.macro_f1,
        });
        report["calibration"] = serde_json::to_value(&calibration).expect("serialises");
        report["suspects"] = json!(suspects.len());
        report["train_seconds"] = json!(started.elapsed().as_secs_f64());

        let mut tensors = model_fit.head.named_tensors();
        tensors.push(("features.mean".into(), model_fit.standardizer.mean.clone()));
        tensors.push(("features.std".into(), model_fit.standardizer.std.clone()));
        let backbone_weights = match (&model_fit.finetuned, keep_ft) {
            (Some(ft), true) => Some(ft.backbone.net.export_weights()?),
            _ => None,
        };
        let artifact = ModelArtifact {
            config: ModelConfig {
                format_version: FORMAT_VERSION,
                backbone: backbone_id.clone(),
                modality: req.modality,
                labels: req.labels.clone(),
                max_length: (req.modality == Modality::Text).then_some(recipe.max_length),
                resolution: frozen.prep.resolution(),
                hidden_units: recipe.hidden_units,
                dropout: recipe.dropout,
                temperature: calibration.temperature,
                finetuned_backbone: backbone_weights.is_some(),
            },
            tensors,
            backbone: backbone_weights,
            suspects,
        };
        Ok(TrainOutcome {
            recipe,
            report,
            artifact,
        })
    }
}
