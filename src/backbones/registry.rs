//! The loader: builds the candle networks of the backbones in the [`Catalog`], with the
//! preprocessing each was pre-trained with. Frozen copies are loaded once and shared
//! (feature extraction, prediction); trainable copies are loaded fresh for each fine-tuning
//! run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ::image::RgbImage;
use candle_core::{Device, Tensor};
use parking_lot::Mutex;
use rand::rngs::StdRng;

use super::bert::Bert;
use super::bert::text::TextEncoder;
use super::bundle::{self, BackboneSource};
use super::catalog::{BackboneInfo, Catalog, Spec};
use super::efficientnet::preprocess::{self, Augment};
use super::efficientnet::{EfficientNetConfig, EfficientNetLite, LiteVariant};
use super::{Backbone, BackboneError, Batch, Modality, WeightsMode};

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

/// Loads backbones from the catalogue's models folder onto one device.
pub struct Registry {
    catalog: Catalog,
    device: Device,
    frozen: Mutex<HashMap<&'static str, Arc<LoadedBackbone>>>,
}

impl Registry {
    pub fn new(models_dir: &Path, device: Device) -> Registry {
        Registry {
            catalog: Catalog::new(models_dir),
            device,
            frozen: Mutex::new(HashMap::new()),
        }
    }

    /// The candle-free list of what can be loaded.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The catalogue's entry for `id`.
    pub fn info(&self, id: &str) -> Option<BackboneInfo> {
        self.catalog.info(id)
    }

    /// The catalogue's default backbone for a modality.
    pub fn default_for(&self, modality: Modality) -> &'static str {
        self.catalog.default_for(modality)
    }

    /// A shared frozen copy, loaded on first use.
    pub fn frozen(&self, id: &str) -> Result<Arc<LoadedBackbone>, BackboneError> {
        let spec = self.catalog.spec(id)?;
        let mut cache = self.frozen.lock();
        if let Some(b) = cache.get(spec.id) {
            return Ok(b.clone());
        }
        let loaded = Arc::new(self.load(id, None, WeightsMode::Frozen)?);
        cache.insert(spec.id, loaded.clone());
        Ok(loaded)
    }

    /// Loads an installed backbone. `weights` replaces the pre-trained weights (a fine-tuned
    /// model's own).
    pub fn load(
        &self,
        id: &str,
        weights: Option<&Path>,
        mode: WeightsMode,
    ) -> Result<LoadedBackbone, BackboneError> {
        let spec = self.installed(id)?;
        self.build(spec, &self.catalog.dir(spec), weights, mode)
    }

    /// The backbone a model predicts with, from wherever [`BackboneSource`] says: the shared
    /// frozen copy, the installed one under fine-tuned weights, or the model's own folder.
    pub fn for_model(
        &self,
        id: &str,
        source: &BackboneSource,
    ) -> Result<Arc<LoadedBackbone>, BackboneError> {
        match source {
            BackboneSource::Installed { finetuned: None } => self.frozen(id),
            BackboneSource::Installed {
                finetuned: Some(weights),
            } => Ok(Arc::new(self.load(
                id,
                Some(weights),
                WeightsMode::Frozen,
            )?)),
            BackboneSource::Bundled(dir) => {
                let spec = self.catalog.spec(id)?;
                bundle::check_complete(spec, dir)?;
                Ok(Arc::new(self.build(
                    spec,
                    dir,
                    None,
                    WeightsMode::Frozen,
                )?))
            }
        }
    }

    /// The catalogue entry of `id`, which must be installed in the models folder.
    pub(super) fn installed(&self, id: &str) -> Result<&'static Spec, BackboneError> {
        let spec = self.catalog.spec(id)?;
        if !self.catalog.available(spec) {
            return Err(BackboneError::Unavailable {
                id: spec.id.to_string(),
                dir: self.catalog.dir(spec).display().to_string(),
                models_dir: self.catalog.models_dir().display().to_string(),
            });
        }
        Ok(spec)
    }

    /// Builds the network of `spec` from the backbone folder `dir`.
    fn build(
        &self,
        spec: &'static Spec,
        dir: &Path,
        weights: Option<&Path>,
        mode: WeightsMode,
    ) -> Result<LoadedBackbone, BackboneError> {
        let load_err = |message: String| BackboneError::Load {
            id: spec.id.to_string(),
            message,
        };
        match spec.modality {
            Modality::Text => {
                let net = Bert::load(dir, weights, mode, &self.device)
                    .map_err(|e| load_err(e.to_string()))?;
                let encoder = TextEncoder::load(dir).map_err(|e| load_err(e.to_string()))?;
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
                    None => EfficientNetLite::load_dir(dir, variant, mode, &self.device),
                    Some(w) => EfficientNetLite::load_with_config(
                        w,
                        image_config(dir, variant).map_err(|e| load_err(e.to_string()))?,
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
pub(super) fn image_config(
    dir: &Path,
    variant: LiteVariant,
) -> std::io::Result<EfficientNetConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(variant.config());
    }
    serde_json::from_slice(&std::fs::read(&path)?).map_err(std::io::Error::other)
}
