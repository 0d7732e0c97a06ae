//! A trained model on disk: `model.json` (labels, backbone, preprocessing, head shape,
//! temperature), `model.safetensors` (head, feature standardisation, and the lexical model
//! of a blended text model) and, when the backbone was fine-tuned, `backbone.safetensors`
//! with its own weights. A model imported from a self-contained archive has instead a
//! `backbone/` folder of its own (see [`crate::backbones::bundle`]); [`backbone_source`]
//! decides, for every reader, which of the two a model's backbone comes from.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::suspects::Suspect;
use crate::backbones::Modality;
use crate::backbones::bundle::BackboneSource;
use crate::datasets::Task;

// The model format, in one place: the files of a model folder and of its download
// archive, and the tensor names inside `model.safetensors`.

pub const CONFIG_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const BACKBONE_FILE: &str = "backbone.safetensors";
pub const SUSPECTS_FILE: &str = "suspects.json";
/// In the download archive: the model's report.
pub const METRICS_FILE: &str = "metrics.json";
/// In the download archive: the human-readable model card.
pub const CARD_FILE: &str = "MODEL_CARD.md";
/// A self-contained model's own backbone folder: its config, tokenizer and the weights it
/// predicts with (fine-tuned or the frozen original).
pub const BUNDLED_BACKBONE_DIR: &str = "backbone";
pub const FORMAT_VERSION: u32 = 1;

/// Tensor names in `model.safetensors`.
pub mod tensor_names {
    pub const HEAD_WEIGHT: &str = "head.weight";
    pub const HEAD_BIAS: &str = "head.bias";
    pub const HEAD_HIDDEN_WEIGHT: &str = "head.hidden.weight";
    pub const HEAD_HIDDEN_BIAS: &str = "head.hidden.bias";
    /// Per-feature mean and standard deviation the head's inputs are standardised with.
    pub const FEATURES_MEAN: &str = "features.mean";
    pub const FEATURES_STD: &str = "features.std";
    /// Text models blended with a lexical model: its idf per term, weight `[classes,
    /// terms]` and bias `[classes]`.
    pub const LEXICAL_IDF: &str = "lexical.idf";
    pub const LEXICAL_WEIGHT: &str = "lexical.weight";
    pub const LEXICAL_BIAS: &str = "lexical.bias";
}

/// A text model's lexical part (see `train::lexical`): its vocabulary and blend weight; the
/// numbers are `lexical.*` tensors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LexicalConfig {
    /// Terms (words and word pairs) in column order.
    pub terms: Vec<String>,
    /// Weight of the transfer model's probabilities; the lexical model's is `1 - w`.
    pub transfer_weight: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    pub format_version: u32,
    pub backbone: String,
    pub modality: Modality,
    /// Class names; index = output unit.
    pub labels: Vec<String>,
    /// Text: tokens kept per input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Image: square input resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
    pub hidden_units: usize,
    pub dropout: f64,
    /// Softmax temperature fitted on validation logits (1 = uncalibrated).
    pub temperature: f64,
    /// Whether `backbone.safetensors` holds fine-tuned backbone weights.
    pub finetuned_backbone: bool,
    /// Text models whose probabilities are blended with a lexical model's. The temperature
    /// then applies to the blend's log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalConfig>,
    /// Absent on classification models (the format before other tasks existed).
    #[serde(default, skip_serializing_if = "is_classification")]
    pub task: Task,
    /// Regression: the split-conformal half-width of the prediction interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_half_width: Option<f64>,
    /// Multi-label: the score each label is predicted at or above, in label order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f64>>,
}

fn is_classification(t: &Task) -> bool {
    *t == Task::Classification
}

/// Everything needed to save a trained model.
pub struct ModelArtifact {
    pub config: ModelConfig,
    /// `head.*`, `features.mean`, `features.std`.
    pub tensors: Vec<(String, Tensor)>,
    /// Fine-tuned backbone weights, by their safetensors names.
    pub backbone: Option<Vec<(String, Tensor)>>,
    /// Examples whose label the model doubts (held-out predictions), for `suspects.json`.
    pub suspects: Vec<Suspect>,
}

impl ModelArtifact {
    /// Writes the files into `dir` (a staging folder the caller renames into place).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let to_io = |e: candle_core::Error| std::io::Error::other(e.to_string());
        let map: HashMap<String, Tensor> = self.tensors.iter().cloned().collect();
        candle_core::safetensors::save(&map, dir.join(WEIGHTS_FILE)).map_err(to_io)?;
        if let Some(bb) = &self.backbone {
            let map: HashMap<String, Tensor> = bb.iter().cloned().collect();
            candle_core::safetensors::save(&map, dir.join(BACKBONE_FILE)).map_err(to_io)?;
        }
        std::fs::write(dir.join(SUSPECTS_FILE), serde_json::to_vec(&self.suspects)?)?;
        let json = serde_json::to_vec_pretty(&self.config)?;
        std::fs::write(dir.join(CONFIG_FILE), json)
    }
}

/// Reads and checks `model.json`.
pub fn read_config(dir: &Path) -> std::io::Result<ModelConfig> {
    let bytes = std::fs::read(dir.join(CONFIG_FILE))?;
    let config: ModelConfig = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if config.format_version != FORMAT_VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "model format version {} is not supported (expected {FORMAT_VERSION})",
                config.format_version
            ),
        ));
    }
    if config.task != Task::Regression && config.labels.len() < 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a model needs at least 2 labels",
        ));
    }
    Ok(config)
}

/// Where the backbone of the model in `dir` comes from: the model's own backbone folder
/// when it has one, else the installed backbone (under its `backbone.safetensors` when
/// fine-tuned). Prediction, import and download all ask here.
pub fn backbone_source(dir: &Path, config: &ModelConfig) -> BackboneSource {
    let own = dir.join(BUNDLED_BACKBONE_DIR);
    if own.is_dir() {
        return BackboneSource::Bundled(own);
    }
    BackboneSource::Installed {
        finetuned: config.finetuned_backbone.then(|| dir.join(BACKBONE_FILE)),
    }
}
