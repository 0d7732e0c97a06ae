//! Cross-fitting the candidates: on the holdout split or on each fold, fit the head-only
//! and the fine-tuned model and the no-transfer baseline, and gather their held-out
//! predictions; then the final fit on all data with the epoch counts the splits chose.

use super::baseline;
use super::fit::{FitPlan, Prepared, SplitFit};
use super::lexical::LexicalModel;
use super::recipe::Recipe;
use super::report::{Candidate, FinalFit, SplitEval};
use super::select::{FinetuneEvidence, HeldOut, Selection};
use super::training_loop::FitTag;
use super::{Observer, TrainResult, check_cancel};

/// What one split's fit left behind, besides its held-out predictions.
pub struct SplitSummary {
    pub num_valid: usize,
    pub head: Option<SplitEval>,
    /// Set when fine-tuning beat the head on this split (contrastive tuning: always).
    pub finetuned: Option<SplitEval>,
    pub head_best_epoch: u32,
    pub finetune_best_epoch: u32,
}

/// The candidates measured on every split.
pub struct CrossFit {
    pub held: HeldOut,
    pub splits: Vec<SplitSummary>,
    /// With a holdout split, its fit: the model itself when fine-tuning was kept.
    pub holdout_fit: Option<SplitFit>,
}

fn mean_rounded(values: impl Iterator<Item = u32>) -> u32 {
    let v: Vec<u32> = values.collect();
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64).round() as u32
}

impl CrossFit {
    pub fn is_kfold(&self) -> bool {
        self.splits.len() > 1
    }

    /// What the splits say about fine-tuning, for [`super::select::select`].
    pub fn evidence(&self, recipe: &Recipe) -> FinetuneEvidence {
        FinetuneEvidence {
            objective: recipe.finetune_objective,
            ran: recipe.finetune_epochs > 0,
            improved_splits: self.splits.iter().filter(|s| s.finetuned.is_some()).count(),
            final_epochs: self
                .is_kfold()
                .then(|| mean_rounded(self.splits.iter().map(|s| s.finetune_best_epoch))),
        }
    }
}

/// Fits every candidate on every split and gathers the held-out predictions.
pub fn cross_fit(run: &Prepared, obs: &mut dyn Observer) -> TrainResult<CrossFit> {
    let kfold = run.splits.len() > 1;
    let mut out = CrossFit {
        held: HeldOut::default(),
        splits: Vec::new(),
        holdout_fit: None,
    };
    for (f, s) in run.splits.iter().enumerate() {
        check_cancel(obs)?;
        let tag = if kfold {
            obs.log(&format!(
                "fold {}/{}: {} training, {} validation examples",
                f + 1,
                run.splits.len(),
                s.train.len(),
                s.valid.len()
            ));
            FitTag::Fold(f + 1)
        } else {
            obs.log(&format!(
                "{} training and {} validation examples, {} classes",
                s.train.len(),
                s.valid.len(),
                run.classes()
            ));
            FitTag::Plain
        };
        let plan = FitPlan {
            head_epochs: run.recipe.head_epochs,
            finetune_epochs: run.recipe.finetune_epochs,
            tag,
        };
        let fit = run.fit(&s.train, &s.valid, plan, obs)?;
        let base_cfg = run.head_config(&s.train, run.recipe.head_epochs, FitTag::Plain);
        let base = baseline::fit_and_predict(
            &run.baseline,
            &run.labels,
            run.classes(),
            &s.train,
            &s.valid,
            &base_cfg,
            obs,
        )?;
        out.splits.push(SplitSummary {
            num_valid: s.valid.len(),
            head: fit.head_eval.as_ref().map(SplitEval::from),
            finetuned: fit
                .finetuned
                .as_ref()
                .and_then(|ft| ft.eval.as_ref())
                .map(SplitEval::from),
            head_best_epoch: fit.head_best_epoch,
            finetune_best_epoch: fit.finetune_best_epoch,
        });
        let held = &mut out.held;
        held.rows.extend_from_slice(&s.valid);
        held.y.extend(s.valid.iter().map(|&i| run.labels[i]));
        held.head.extend(fit.head_logits.iter().cloned());
        held.finetuned.extend(fit.best_logits().iter().cloned());
        held.baseline.extend(base);
        let lexical = run.lexical_fit(&s.train);
        if let Some(m) = &lexical {
            held.lexical.extend(run.lexical_logits(m, &s.valid));
            obs.log(&format!(
                "lexical model: logistic regression on TF-IDF of {} terms, C = {}",
                m.lexicon.terms.len(),
                m.c
            ));
        }
        if !kfold {
            out.holdout_fit = Some(fit);
        }
    }
    Ok(out)
}

/// The model, fitted on all data: after k-fold with the epoch counts the folds chose
/// (fine-tuning only when it was selected); after a holdout split, the head refitted on
/// every example when it was kept (cached features: seconds, and the probe it competes
/// with learns from all of them too), the split's fit itself when the fine-tuned model was
/// kept (refitting it would tune the backbone a second time).
pub fn final_fit(
    run: &Prepared,
    crossfit: &mut CrossFit,
    selection: &Selection,
    obs: &mut dyn Observer,
) -> TrainResult<(SplitFit, Option<FinalFit>)> {
    if let Some(fit) = crossfit.holdout_fit.take()
        && selection.chosen == Candidate::Finetuned
    {
        return Ok((fit, None));
    }
    check_cancel(obs)?;
    let head_epochs = mean_rounded(crossfit.splits.iter().map(|s| s.head_best_epoch)).max(1);
    let finetune_epochs = match selection.chosen {
        Candidate::Finetuned => crossfit.evidence(&run.recipe).final_epochs.unwrap_or(0),
        Candidate::HeadOnly => 0,
    };
    obs.log(&format!(
        "final model on all {} examples: {head_epochs} head epochs{}",
        run.labels.len(),
        if finetune_epochs > 0 {
            format!(", {finetune_epochs} fine-tuning epochs")
        } else {
            String::new()
        }
    ));
    let all: Vec<usize> = (0..run.labels.len()).collect();
    let plan = FitPlan {
        head_epochs,
        finetune_epochs,
        tag: FitTag::Final,
    };
    let fit = run.fit(&all, &[], plan, obs)?;
    let info = FinalFit {
        head_epochs,
        finetune_epochs,
        num_train: run.labels.len(),
    };
    Ok((fit, Some(info)))
}

/// Text, when the selection blends it in: the lexical model fitted on all data (a
/// TF-IDF logistic regression: seconds), its blend weight the one the held-out
/// predictions chose.
pub fn final_lexical(run: &Prepared, selection: &Selection) -> Option<LexicalModel> {
    let blended = selection
        .blend
        .as_ref()
        .is_some_and(|b| b.transfer_weight < 1.0);
    if !blended {
        return None;
    }
    run.lexical_fit(&(0..run.labels.len()).collect::<Vec<_>>())
}
