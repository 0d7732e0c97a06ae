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
use super::concat::{self, ConcatBackbone};
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
    /// A composite's parts ([`super::concat`]): each image at every part's input size.
    Images { resolutions: Vec<usize> },
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
            Preprocessor::Image { .. } | Preprocessor::Images { .. } => Err(BackboneError::Input(
                "texts given to an image backbone".into(),
            )),
        }
    }

    /// Token count of a text (to sort inputs by length and size batches).
    pub fn text_cost(&self, text: &str) -> usize {
        match self {
            Preprocessor::Text { encoder, .. } => encoder.token_count(text),
            Preprocessor::Image { .. } | Preprocessor::Images { .. } => 0,
        }
    }

    /// The image backbone's input resolution, a composite's largest (`None` for text
    /// backbones): what images are decoded down to before the batch is made.
    pub fn resolution(&self) -> Option<usize> {
        match self {
            Preprocessor::Image { resolution } => Some(*resolution),
            Preprocessor::Images { resolutions } => resolutions.iter().copied().max(),
            Preprocessor::Text { .. } => None,
        }
    }

    /// Pixels of decoded images as a batch: the evaluation view (resize + centre crop), or
    /// with `augment` a random view per image. A composite gets the same view (the same
    /// draws of the generator) at each part's resolution.
    pub fn image_batch(
        &self,
        images: &[RgbImage],
        augment: Option<(&Augment, &mut StdRng)>,
        device: &Device,
    ) -> Result<Batch, BackboneError> {
        match self {
            Preprocessor::Image { resolution } => Ok(Batch::Image {
                pixels: pixels_at(images, *resolution, augment, device)?,
            }),
            Preprocessor::Images { resolutions } => {
                let (aug, rng) = augment.unzip();
                let mut last = None;
                let pixels = resolutions
                    .iter()
                    .map(|&r| {
                        let mut own = rng.as_ref().map(|g| (**g).clone());
                        let t = pixels_at(images, r, aug.zip(own.as_mut()), device);
                        last = own;
                        t
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if let (Some(rng), Some(advanced)) = (rng, last) {
                    *rng = advanced;
                }
                Ok(Batch::Images { pixels })
            }
            Preprocessor::Text { .. } => Err(BackboneError::Input(
                "images given to a text backbone".into(),
            )),
        }
    }
}

/// Normalised pixels `[B, 3, r, r]` of decoded images at resolution `r`.
fn pixels_at(
    images: &[RgbImage],
    resolution: usize,
    mut augment: Option<(&Augment, &mut StdRng)>,
    device: &Device,
) -> Result<Tensor, BackboneError> {
    images
        .iter()
        .map(|img| match augment.as_mut() {
            Some((aug, rng)) => aug.apply(img, resolution, *rng),
            None => preprocess::to_tensor(img, resolution),
        })
        .collect::<candle_core::Result<Vec<_>>>()
        .and_then(|v| Tensor::stack(&v, 0))
        .and_then(|t| t.to_device(device))
        .map_err(|e| BackboneError::Input(e.to_string()))
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
                if !spec.parts.is_empty() {
                    return Ok(Arc::new(bundled_composite(spec, dir, &self.device)?));
                }
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
        if !spec.parts.is_empty() {
            return self.composite(spec, weights, mode);
        }
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

impl Registry {
    /// A composite from its installed parts' folders. It is never trainable and has no
    /// fine-tuned weights of its own.
    fn composite(
        &self,
        spec: &'static Spec,
        weights: Option<&Path>,
        mode: WeightsMode,
    ) -> Result<LoadedBackbone, BackboneError> {
        if mode == WeightsMode::Trainable || weights.is_some() {
            return Err(frozen_only(spec));
        }
        let mut nets: Vec<Box<dyn Backbone>> = Vec::new();
        let mut resolutions = Vec::new();
        for part in spec.parts {
            let loaded = self.load(part, None, WeightsMode::Frozen)?;
            resolutions.extend(loaded.prep.resolution());
            nets.push(loaded.net);
        }
        Ok(LoadedBackbone {
            id: spec.id,
            modality: spec.modality,
            net: Box::new(ConcatBackbone::new(nets)),
            prep: Preprocessor::Images { resolutions },
        })
    }
}

/// The error for asking a composite to train.
fn frozen_only(spec: &Spec) -> BackboneError {
    BackboneError::Load {
        id: spec.id.to_string(),
        message: format!(
            "a composite of {} is a frozen feature extractor and cannot be fine-tuned; set finetune_epochs to 0 or choose one of its parts",
            spec.parts.join(" and ")
        ),
    }
}

/// A composite from a model's own backbone folder ([`super::concat`]'s bundled form).
fn bundled_composite(
    spec: &'static Spec,
    dir: &Path,
    device: &Device,
) -> Result<LoadedBackbone, BackboneError> {
    let load_err = |e: candle_core::Error| BackboneError::Load {
        id: spec.id.to_string(),
        message: e.to_string(),
    };
    let (net, resolutions) = concat::load_bundled(
        &dir.join(bundle::CONFIG),
        &dir.join(bundle::WEIGHTS),
        device,
    )
    .map_err(load_err)?;
    Ok(LoadedBackbone {
        id: spec.id,
        modality: spec.modality,
        net: Box::new(net),
        prep: Preprocessor::Images { resolutions },
    })
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
