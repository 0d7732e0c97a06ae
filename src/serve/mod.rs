//! Prediction: trained models loaded once and kept in a bounded cache, and batched
//! inference over their inputs. Called from the HTTP layer on blocking threads through
//! [`ModelCache`], whose methods take and return plain data: no candle type crosses it.

pub mod batcher;
pub mod cache;

use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use serde::Serialize;

use crate::backbones::bundle::BackboneSource;
use crate::backbones::image::ImageError;
use crate::backbones::registry::{LoadedBackbone, Registry};
use crate::backbones::{BackboneError, Modality};
use crate::datasets::Task;
use crate::datasets::decode::decode_for_model;
use crate::error_code::{Code, ErrorCode};
use crate::train::artifact::{
    BACKBONE_FILE, LexicalConfig, ModelConfig, WEIGHTS_FILE, backbone_source, read_config,
    tensor_names,
};
use crate::train::features::Standardizer;
use crate::train::head::Head;
use crate::train::lexical::{LexicalModel, blend_row};
use crate::train::metrics::softmax_rows;

pub use cache::ModelCache;

const PREDICT_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model's files are missing or unreadable.
    #[error("the model's files are damaged: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    /// The request's inputs cannot be used (shown to the user).
    #[error("{0}")]
    BadInput(String),
    /// Running the network failed (candle's message: this type holds no candle value, so
    /// the HTTP layer that receives it stays candle-free).
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for ServeError {
    fn from(e: candle_core::Error) -> Self {
        ServeError::Inference(e.to_string())
    }
}

/// The inputs of one predict request, decoded from the request body.
#[derive(Debug, Clone)]
pub enum Inputs {
    Texts(Vec<String>),
    /// Encoded images (JPEG, PNG or WebP bytes).
    Images(Vec<Vec<u8>>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Images(i) => i.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ErrorCode for ServeError {
    fn code(&self) -> Code {
        match self {
            ServeError::Corrupt(_) => Code::ModelCorrupt,
            ServeError::Backbone(b) => b.code(),
            ServeError::BadInput(_) => Code::InvalidInput,
            ServeError::Inference(_) => Code::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            ServeError::Backbone(b) => b.public_message(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// A classifier's answer: the most likely label and the `top_k` best.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassPrediction {
    pub label: String,
    pub score: f32,
    pub top_k: Vec<LabelScore>,
}

/// The prediction for one input, in the shape of the model's task.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Prediction {
    Class(ClassPrediction),
    /// Regression: the predicted number and, when the model has one, its split-conformal
    /// interval `[low, high]` at the coverage the model reports.
    Value {
        value: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval: Option<[f64; 2]>,
    },
    /// Multi-label: the labels at or above their thresholds, and every label's score
    /// (highest first).
    Labels {
        labels: Vec<String>,
        scores: Vec<LabelScore>,
    },
}

/// The lexical part of a blended text model, from `model.json`'s terms and its tensors.
fn load_lexical(
    config: &LexicalConfig,
    get: &impl Fn(&str) -> Result<Tensor, ServeError>,
    classes: usize,
) -> Result<LexicalModel, ServeError> {
    let values = |n: &str| -> Result<Vec<f32>, ServeError> {
        Ok(get(n)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    };
    let model = LexicalModel::from_stored(
        config.terms.clone(),
        values(tensor_names::LEXICAL_IDF)?,
        values(tensor_names::LEXICAL_WEIGHT)?,
        values(tensor_names::LEXICAL_BIAS)?,
    )
    .filter(|m| m.linear.classes == classes)
    .ok_or_else(|| ServeError::Corrupt("the lexical model's shapes disagree".into()))?;
    Ok(model)
}

/// A trained model ready to predict (held by the [`ModelCache`]).
pub struct LoadedModel {
    pub config: ModelConfig,
    backbone: Arc<LoadedBackbone>,
    head: Head,
    standardizer: Standardizer,
    /// Text models blended with a lexical model, and the transfer model's weight.
    lexical: Option<(LexicalModel, f64)>,
}

impl LoadedModel {
    /// Loads a model folder. Its backbone comes from [`backbone_source`]: a self-contained
    /// model's own folder, else the installed one (a head-only model shares the registry's
    /// frozen copy; a fine-tuned one loads its own weights over it).
    pub fn load(dir: &Path, registry: &Registry) -> Result<LoadedModel, ServeError> {
        let config = read_config(dir).map_err(|e| ServeError::Corrupt(e.to_string()))?;
        let tensors = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), registry.device())
            .map_err(|e| ServeError::Corrupt(format!("{WEIGHTS_FILE}: {e}")))?;
        let head = Head::from_tensors(|n| tensors.get(n).cloned(), config.dropout as f32)
            .map_err(|e| ServeError::Corrupt(e.to_string()))?;
        let get = |n: &str| {
            tensors
                .get(n)
                .cloned()
                .ok_or_else(|| ServeError::Corrupt(format!("{WEIGHTS_FILE} has no {n}")))
        };
        let standardizer = Standardizer {
            mean: get(tensor_names::FEATURES_MEAN)?,
            std: get(tensor_names::FEATURES_STD)?,
        };
        let outputs = match config.task {
            Task::Regression => 1,
            _ => config.labels.len(),
        };
        if head.num_classes() != outputs {
            return Err(ServeError::Corrupt(format!(
                "the head has {} outputs but model.json lists {} labels",
                head.num_classes(),
                config.labels.len()
            )));
        }
        if config.task == Task::Multilabel
            && config.thresholds.as_ref().map(Vec::len) != Some(outputs)
        {
            return Err(ServeError::Corrupt(
                "a multi-label model needs one threshold per label".into(),
            ));
        }
        let source = backbone_source(dir, &config);
        if let BackboneSource::Installed {
            finetuned: Some(weights),
        } = &source
            && !weights.is_file()
        {
            return Err(ServeError::Corrupt(format!("{BACKBONE_FILE} is missing")));
        }
        let backbone = registry
            .for_model(&config.backbone, &source)
            .map_err(|e| match e {
                BackboneError::Load { message, .. } => ServeError::Corrupt(message),
                other => ServeError::Backbone(other),
            })?;
        if backbone.net.embedding_dim() != standardizer.mean.dims()[0] {
            return Err(ServeError::Corrupt(
                "feature width does not match the backbone".into(),
            ));
        }
        let lexical = match &config.lexical {
            Some(lc) => Some((
                load_lexical(lc, &get, config.labels.len())?,
                lc.transfer_weight,
            )),
            None => None,
        };
        Ok(LoadedModel {
            config,
            backbone,
            head,
            standardizer,
            lexical,
        })
    }

    pub fn modality(&self) -> Modality {
        self.config.modality
    }

    /// Predictions for the inputs, in input order.
    pub fn predict(
        &self,
        inputs: &Inputs,
        top_k: usize,
        max_pixels: u64,
    ) -> Result<Vec<Prediction>, ServeError> {
        match inputs {
            Inputs::Texts(texts) => self.predict_texts(texts, top_k),
            Inputs::Images(images) => self.predict_images(images, top_k, max_pixels),
        }
    }

    /// Predictions from the backbone's features (and, for a blended text model, the texts
    /// themselves), in the shape of the model's task.
    fn decide(
        &self,
        feats: &Tensor,
        texts: Option<&[&str]>,
        top_k: usize,
    ) -> Result<Vec<Prediction>, ServeError> {
        let mut logits = self
            .head
            .forward(&self.standardizer.apply(feats)?, false)?
            .to_vec2::<f32>()?;
        match self.config.task {
            Task::Regression => {
                let half = self.config.interval_half_width;
                return Ok(logits
                    .iter()
                    .map(|row| {
                        let value = row[0] as f64;
                        Prediction::Value {
                            value,
                            interval: half.map(|h| [value - h, value + h]),
                        }
                    })
                    .collect());
            }
            Task::Multilabel => return Ok(logits.iter().map(|row| self.label_set(row)).collect()),
            Task::Classification => {}
        }
        if let (Some((lexical, w)), Some(texts)) = (&self.lexical, texts) {
            for (row, text) in logits.iter_mut().zip(texts) {
                *row = blend_row(row, &lexical.text_logits(text), *w);
            }
        }
        Ok(softmax_rows(&logits, self.config.temperature as f32)
            .iter()
            .map(|p| self.rank(p, top_k))
            .collect())
    }

    /// Multi-label: sigmoid scores, the labels at or above their thresholds.
    fn label_set(&self, logits: &[f32]) -> Prediction {
        let thresholds = self.config.thresholds.as_deref().unwrap_or(&[]);
        let scores: Vec<f32> = logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let labels = idx
            .iter()
            .filter(|&&j| scores[j] as f64 >= thresholds.get(j).copied().unwrap_or(0.5))
            .map(|&j| self.config.labels[j].clone())
            .collect();
        Prediction::Labels {
            labels,
            scores: idx
                .iter()
                .map(|&j| LabelScore {
                    label: self.config.labels[j].clone(),
                    score: scores[j],
                })
                .collect(),
        }
    }

    /// Predictions for texts, in input order.
    pub fn predict_texts(
        &self,
        texts: &[String],
        top_k: usize,
    ) -> Result<Vec<Prediction>, ServeError> {
        if self.config.modality != Modality::Text {
            return Err(ServeError::BadInput(
                "this is an image model; send images (multipart `file` parts or {\"inputs\":[{\"image_base64\":...}]})".into(),
            ));
        }
        let max_length = self.config.max_length.unwrap_or(256);
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Option<Prediction>> = vec![None; texts.len()];
        let device = self.standardizer.mean.device().clone();
        for chunk in order.chunks(PREDICT_BATCH) {
            let batch_texts: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let batch = self
                .backbone
                .prep
                .text_batch(&batch_texts, max_length, &device)?;
            let feats = self.backbone.net.forward(&batch, false)?;
            let batch_out = self.decide(&feats, Some(&batch_texts), top_k)?;
            for (p, &i) in batch_out.into_iter().zip(chunk) {
                out[i] = Some(p);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Predictions for encoded images (JPEG/PNG/WebP bytes), in input order, preprocessed
    /// exactly like the evaluation view in training (resize, centre crop, normalise).
    pub fn predict_images(
        &self,
        images: &[Vec<u8>],
        top_k: usize,
        max_pixels: u64,
    ) -> Result<Vec<Prediction>, ServeError> {
        if self.config.modality != Modality::Image {
            return Err(ServeError::BadInput(
                "this is a text model; send {\"inputs\": [\"some text\", ...]}".into(),
            ));
        }
        // One image at a time: decoded under the pixel limit and shrunk to the backbone's
        // input size at once, so a request holds its images at model resolution only.
        let resolution = self
            .backbone
            .prep
            .resolution()
            .ok_or_else(|| ServeError::Corrupt("an image model on a text backbone".into()))?;
        let device = self.standardizer.mean.device().clone();
        let mut out = Vec::with_capacity(images.len());
        for (first, chunk) in (0..)
            .step_by(PREDICT_BATCH)
            .zip(images.chunks(PREDICT_BATCH))
        {
            let decoded = chunk
                .iter()
                .enumerate()
                .map(|(j, bytes)| {
                    decode_for_model(bytes, max_pixels, resolution).map_err(|e| {
                        let hint = match e {
                            ImageError::TooLarge { .. } => " (WARMSTART_MAX_IMAGE_PIXELS)",
                            _ => "",
                        };
                        ServeError::BadInput(format!("image {}: {e}{hint}", first + j))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let batch = self.backbone.prep.image_batch(&decoded, None, &device)?;
            let feats = self.backbone.net.forward(&batch, false)?;
            out.extend(self.decide(&feats, None, top_k)?);
        }
        Ok(out)
    }

    fn rank(&self, probs: &[f32], top_k: usize) -> Prediction {
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<LabelScore> = idx
            .iter()
            .take(top_k.max(1))
            .map(|&i| LabelScore {
                label: self.config.labels[i].clone(),
                score: probs[i],
            })
            .collect();
        Prediction::Class(ClassPrediction {
            label: top[0].label.clone(),
            score: top[0].score,
            top_k: top,
        })
    }
}
