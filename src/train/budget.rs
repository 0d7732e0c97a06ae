//! Time-aware choices of the automatic recipe: which image backbone (the larger Lite
//! variants transfer better but cost more), and how many fine-tuning epochs fit the time
//! budget. Costs are estimated from the model and the data (its size, its token counts)
//! and the machine's core count — never from a timing taken during the job, so the same
//! data, seed and settings give the same model whatever the machine's load.

use super::hyper::{Choice, DataProfile, Hyperparameters, ValidationSpec};
use super::recipe::{BackboneChoice, Recipe, resolve};
use crate::backbones::Modality;
use crate::backbones::catalog::{COMPOSITE_LITE0_LITE2, is_composite};

/// Target training time of an image job for automatic choices when the job sets no
/// `time_budget_s`: image jobs of up to 50 per class are meant to finish within 10 minutes
/// on 2 cores.
pub const DEFAULT_BUDGET_S: f64 = 600.0;

/// The same for a text job: text jobs of up to 64 per class are meant to finish within 5
/// minutes on 2 cores. At 600 s, Reuters topics at 64 per class (489 posts, a fifth of them
/// 256 tokens long) fine-tuned 2–3 epochs of 190–270 s each and took 553–663 s, while the
/// fine-tuned model was kept on one seed in three and the test accuracy matched the head's.
pub const TEXT_BUDGET_S: f64 = 300.0;

/// The default time budget of a job of this modality.
pub fn default_budget_s(modality: Modality) -> f64 {
    match modality {
        Modality::Text => TEXT_BUDGET_S,
        Modality::Image => DEFAULT_BUDGET_S,
    }
}

/// Expected tokens per example once a random batch of `batch` texts is padded to its longest
/// member: each example costs the batch's maximum, E[max] over the token counts `costs`
/// (drawn with replacement: P(max ≤ x_(i)) = ((i+1)/n)^batch over the sorted counts).
/// A few long texts make most batches long: Reuters posts at 64 per class have a mean of
/// 134 tokens, yet random batches of 16 cost 255 a text.
fn padded_tokens(costs: &[usize], batch: usize) -> f64 {
    let mut sorted = costs.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let b = batch.max(1) as i32;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| x as f64 * (((i + 1) as f64 / n).powi(b) - (i as f64 / n).powi(b)))
        .sum()
}

/// A fine-tuning step (forward + backward + update) costs about this many frozen forward
/// passes (measured on MiniLM ×3.6, EfficientNet-Lite0 ×2.5, plus the optimiser).
const FINETUNE_COST_FACTOR: f64 = 3.5;

/// Frozen forward seconds per image on one core, by variant (Lite0 measured at ~0.06 s on
/// 2 shared cores; Lite1/2 scaled by their multiply-adds, 0.63 and 0.90 vs 0.41 GFLOPs; the
/// composite of Lite0 and Lite2 costs both). Largest first: the first that fits is chosen.
const IMAGE_FORWARD_S: [(&str, f64); 4] = [
    (COMPOSITE_LITE0_LITE2, 0.275),
    ("efficientnet-lite2", 0.19),
    ("efficientnet-lite1", 0.13),
    ("efficientnet-lite0", 0.085),
];

/// Frozen MiniLM forward seconds per token on one core (about 0.8 ms per token on 2
/// shared cores, measured on 256-token news posts).
const TEXT_FORWARD_S_PER_TOKEN: f64 = 1.6e-3;

/// Estimated frozen forward seconds per example on this machine: by the image variant's
/// cost, or for text by the mean token count of the examples.
pub fn forward_s(backbone: &str, mean_tokens: f64) -> f64 {
    let per_core = IMAGE_FORWARD_S
        .iter()
        .find(|(id, _)| *id == backbone)
        .map_or(TEXT_FORWARD_S_PER_TOKEN * mean_tokens.max(1.0), |(_, s)| *s);
    per_core / cores()
}

fn cores() -> f64 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16) as f64
}

/// Estimated frozen forward seconds per example: in batches sorted by length (feature
/// extraction, validation) and in random training batches, each padded to its longest text.
/// Images cost the same either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardCost {
    pub sorted_s: f64,
    pub shuffled_s: f64,
}

impl ForwardCost {
    /// One cost for both (images, or texts of one length).
    pub fn flat(s: f64) -> Self {
        Self {
            sorted_s: s,
            shuffled_s: s,
        }
    }

    /// The cost of `backbone` on examples of these token counts (all 0 for images), trained
    /// in random batches of `batch`.
    pub fn of(backbone: &str, tokens: &[usize], batch: usize) -> Self {
        let mean = tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64;
        Self {
            sorted_s: forward_s(backbone, mean),
            shuffled_s: forward_s(backbone, padded_tokens(tokens, batch)),
        }
    }
}

/// Estimated seconds of a whole job: feature extraction once, then `runs` fits that each
/// fine-tune `epochs` over `n_train` examples and evaluate `n_valid` each epoch.
pub fn estimate_s(
    cost: ForwardCost,
    n: usize,
    runs: usize,
    epochs: u32,
    n_train: usize,
    n_valid: usize,
) -> f64 {
    let per_epoch =
        n_train as f64 * cost.shuffled_s * FINETUNE_COST_FACTOR + n_valid as f64 * cost.sorted_s;
    n as f64 * cost.sorted_s + runs as f64 * epochs as f64 * per_epoch
}

/// The one place a job's backbone is decided: the one asked for, or for `"auto"` the text
/// default, or the largest EfficientNet-Lite whose estimated time fits the budget.
/// `default_id` is the catalogue's default for the modality; `installed` says whether a
/// backbone's weights are present.
pub struct BackboneQuery<'a> {
    pub requested: &'a str,
    pub default_id: &'a str,
    pub data: &'a DataProfile,
    pub hyperparameters: &'a Hyperparameters,
    pub validation: Option<&'a ValidationSpec>,
    pub time_budget_s: Option<u64>,
}

pub fn choose_backbone(q: &BackboneQuery, installed: impl Fn(&str) -> bool) -> BackboneChoice {
    if q.requested != "auto" {
        return BackboneChoice {
            id: q.requested.to_string(),
            reason: None,
        };
    }
    let (id, reason) = match q.data.modality {
        Modality::Text => (q.default_id.to_string(), "the text backbone".to_string()),
        Modality::Image => {
            let draft_choice = BackboneChoice {
                id: q.default_id.to_string(),
                reason: None,
            };
            let draft = resolve(q.hyperparameters, q.validation, &draft_choice, 0, q.data);
            let runs = match draft.validation {
                ValidationSpec::Kfold { folds } => folds + 1,
                ValidationSpec::Holdout { .. } => 1,
            };
            let budget_s = q.time_budget_s.map_or(DEFAULT_BUDGET_S, |s| s as f64);
            choose_image_backbone(
                q.data.num_examples,
                budget_s,
                draft.finetune_epochs,
                runs,
                installed,
            )
        }
    };
    BackboneChoice {
        id,
        reason: Some(reason),
    }
}

/// The largest installed Lite variant whose estimated job time fits the budget. When the
/// head on frozen features is the model (`epochs` 0), the composite of Lite0 and Lite2
/// comes first: their features side by side beat either alone on every set of the public
/// benchmark at 10 per class ([`crate::backbones::concat`]).
pub fn choose_image_backbone(
    n: usize,
    budget_s: f64,
    epochs: u32,
    runs: usize,
    installed: impl Fn(&str) -> bool,
) -> (String, String) {
    for (id, _) in IMAGE_FORWARD_S {
        if !installed(id) || (is_composite(id) && epochs > 0) {
            continue;
        }
        let forward = ForwardCost::flat(forward_s(id, 0.0));
        let est = estimate_s(forward, n, runs, epochs, n * 4 / 5, n / 5);
        if est <= budget_s || id == "efficientnet-lite0" {
            let what = if is_composite(id) {
                (
                    "the frozen head: EfficientNet-Lite0 and Lite2 side by side, their features concatenated (on the public benchmark at 10 per class they beat either alone on every set: digits 0.835 against 0.814 / 0.789, animals 0.868 against 0.859 / 0.842),",
                    "",
                )
            } else {
                (
                    "the largest installed EfficientNet-Lite",
                    "; larger variants transfer better",
                )
            };
            let (what, tail) = what;
            return (
                id.to_string(),
                format!(
                    "{what} whose estimated time for {n} images (~{est:.0} s with {epochs} fine-tuning epochs × {runs} fits) fits the {budget_s:.0} s budget{tail}"
                ),
            );
        }
    }
    (
        "efficientnet-lite0".to_string(),
        "no larger variant is installed".to_string(),
    )
}

/// Caps the fine-tuning epochs to what fits the remaining budget, given the estimated
/// frozen-forward seconds per example ([`forward_s`]). Returns a choice to record when it changed anything.
pub fn fit_epochs_to_budget(
    recipe: &mut Recipe,
    cost: ForwardCost,
    runs: usize,
    n_train: usize,
    n_valid: usize,
    remaining_s: f64,
    user_set_epochs: bool,
) -> Option<Choice> {
    if recipe.finetune_epochs == 0 || user_set_epochs {
        return None;
    }
    let per_epoch = estimate_s(cost, 0, runs, 1, n_train, n_valid);
    let fits = (remaining_s / per_epoch.max(1e-9)).floor() as u32;
    if fits >= recipe.finetune_epochs {
        return None;
    }
    let before = recipe.finetune_epochs;
    recipe.finetune_epochs = fits;
    let reason = if fits == 0 {
        format!(
            "fine-tuning would take ~{:.0} s per epoch over {runs} fits, more than the {remaining_s:.0} s left of the time budget: head only",
            per_epoch
        )
    } else {
        format!(
            "{before} epochs would exceed the time budget (~{per_epoch:.0} s per epoch over {runs} fits, {remaining_s:.0} s left)"
        )
    };
    Some(Choice {
        parameter: "finetune_epochs".into(),
        value: serde_json::json!(fits),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_batches_cost_their_longest_text() {
        assert_eq!(padded_tokens(&[100; 10], 16), 100.0);
        // One text in five at 256, the rest at 64: a batch of one is the mean, a batch of 16
        // almost always holds a long one.
        let mixed: Vec<usize> = (0..100)
            .map(|i| if i % 5 == 0 { 256 } else { 64 })
            .collect();
        let mean = mixed.iter().sum::<usize>() as f64 / 100.0;
        assert!((padded_tokens(&mixed, 1) - mean).abs() < 1e-9);
        let padded = padded_tokens(&mixed, 16);
        assert!(padded > 245.0 && padded < 256.0, "{padded}");
    }

    #[test]
    fn text_jobs_get_the_shorter_default_budget() {
        assert_eq!(default_budget_s(Modality::Text), TEXT_BUDGET_S);
        assert_eq!(default_budget_s(Modality::Image), DEFAULT_BUDGET_S);
    }

    #[test]
    fn bigger_budgets_pick_bigger_variants() {
        let all = |_: &str| true;
        let (small, _) = choose_image_backbone(50, DEFAULT_BUDGET_S, 6, 6, all);
        let (huge, _) = choose_image_backbone(20_000, DEFAULT_BUDGET_S, 4, 1, all);
        assert_eq!(huge, "efficientnet-lite0");
        assert_ne!(small, "efficientnet-lite0");
        let (only0, _) = choose_image_backbone(50, DEFAULT_BUDGET_S, 6, 6, |id| id.ends_with('0'));
        assert_eq!(only0, "efficientnet-lite0");
    }

    #[test]
    fn the_frozen_head_takes_the_composite_and_fine_tuning_one_network() {
        let all = |_: &str| true;
        let (frozen, why) = choose_image_backbone(60, DEFAULT_BUDGET_S, 0, 6, all);
        assert_eq!(frozen, COMPOSITE_LITE0_LITE2, "{why}");
        let (tuned, _) = choose_image_backbone(60, DEFAULT_BUDGET_S, 6, 4, all);
        assert_eq!(tuned, "efficientnet-lite2");
        let no_composite = |id: &str| !is_composite(id);
        let (alone, _) = choose_image_backbone(60, DEFAULT_BUDGET_S, 0, 6, no_composite);
        assert_eq!(alone, "efficientnet-lite2");
        // Chosen for more images than a small set, the composite is never tuned.
        let data = DataProfile::of_counts(Modality::Image, &[50, 50]);
        let composite = BackboneChoice {
            id: COMPOSITE_LITE0_LITE2.into(),
            reason: None,
        };
        let recipe = resolve(&Hyperparameters::default(), None, &composite, 0, &data);
        assert_eq!(recipe.finetune_epochs, 0);
        assert!(recipe.head_views > 0);
    }
}
