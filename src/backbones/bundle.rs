//! A backbone as a folder of a model's own, so that a model can travel without the models
//! folder: which files make one (`config.json`, `tokenizer.json` for text, and
//! `model.safetensors`), where a model's backbone is loaded from ([`BackboneSource`]), and
//! which files to copy into a model archive so that it carries its backbone.

use std::path::{Path, PathBuf};

use super::catalog::Spec;
use super::concat::{self, ConcatConfig, ConcatPart};
use super::efficientnet::LiteVariant;
use super::efficientnet::torch_legacy::ensure_converted;
use super::registry::{Registry, image_config};
use super::{BackboneError, Modality};

/// The architecture: a Hugging Face BERT config, or an [`super::efficientnet::EfficientNetConfig`]
/// (whose `resolution` is the image preprocessing's input size).
pub const CONFIG: &str = "config.json";
/// Text backbones: the WordPiece tokenizer.
pub const TOKENIZER: &str = "tokenizer.json";
/// The weights the model predicts with (a fine-tuned model's own).
pub const WEIGHTS: &str = "model.safetensors";

/// Where a model's backbone comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BackboneSource {
    /// The model's own complete backbone folder (an imported self-contained model).
    Bundled(PathBuf),
    /// The backbone installed in the models folder, under the model's fine-tuned weights
    /// when it has them.
    Installed { finetuned: Option<PathBuf> },
}

/// Where the bytes of one bundled file come from.
#[derive(Clone, Debug, PartialEq)]
pub enum BundleData {
    File(PathBuf),
    /// Written for the bundle (an image backbone's architecture, which the models folder
    /// holds as code, not as a file).
    Bytes(Vec<u8>),
}

/// One file of a self-contained backbone folder.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleFile {
    /// File name inside the backbone folder (one of [`required_files`]).
    pub name: &'static str,
    pub data: BundleData,
}

/// The files a self-contained backbone folder of this modality holds.
pub fn required_files(modality: Modality) -> &'static [&'static str] {
    match modality {
        Modality::Text => &[CONFIG, TOKENIZER, WEIGHTS],
        Modality::Image => &[CONFIG, WEIGHTS],
    }
}

/// Every file name a bundled backbone folder may hold.
pub const ALL_FILES: [&str; 3] = [CONFIG, TOKENIZER, WEIGHTS];

/// A model's own backbone folder must be whole: no fallback to the models folder.
pub(super) fn check_complete(spec: &Spec, dir: &Path) -> Result<(), BackboneError> {
    match required_files(spec.modality)
        .iter()
        .find(|f| !dir.join(f).is_file())
    {
        Some(missing) => Err(BackboneError::Load {
            id: spec.id.to_string(),
            message: format!("the model's own backbone folder has no {missing}"),
        }),
        None => Ok(()),
    }
}

impl Registry {
    /// The files that make the backbone of a model whose backbone comes from `source` a
    /// folder of its own: for a fine-tuned model its own weights stand in for the installed
    /// ones.
    pub fn bundle(
        &self,
        id: &str,
        source: &BackboneSource,
    ) -> Result<Vec<BundleFile>, BackboneError> {
        let file = |name: &'static str, path: PathBuf| BundleFile {
            name,
            data: BundleData::File(path),
        };
        match source {
            BackboneSource::Bundled(dir) => {
                let spec = self.catalog().spec(id)?;
                check_complete(spec, dir)?;
                Ok(required_files(spec.modality)
                    .iter()
                    .map(|&n| file(n, dir.join(n)))
                    .collect())
            }
            BackboneSource::Installed { finetuned } => {
                let spec = self.installed(id)?;
                if !spec.parts.is_empty() {
                    return self.composite_bundle(spec);
                }
                let dir = self.catalog().dir(spec);
                match spec.modality {
                    Modality::Text => Ok(vec![
                        file(CONFIG, dir.join(CONFIG)),
                        file(TOKENIZER, dir.join(TOKENIZER)),
                        file(
                            WEIGHTS,
                            finetuned.clone().unwrap_or_else(|| dir.join(WEIGHTS)),
                        ),
                    ]),
                    Modality::Image => image_bundle(spec, &dir, finetuned.as_deref()),
                }
            }
        }
    }
}

impl Registry {
    /// An installed composite as one folder: [`ConcatConfig`] naming each part with its
    /// architecture, and every part's weights merged into one file (written once under the
    /// composite's own name in the models folder).
    fn composite_bundle(&self, spec: &Spec) -> Result<Vec<BundleFile>, BackboneError> {
        let load_err = |message: String| BackboneError::Load {
            id: spec.id.to_string(),
            message,
        };
        let mut parts = Vec::new();
        let mut files = Vec::new();
        for &id in spec.parts {
            let part = self.installed(id)?;
            let dir = self.catalog().dir(part);
            let variant = LiteVariant::from_id(id)
                .ok_or_else(|| load_err(format!("{id} is not an EfficientNet-Lite variant")))?;
            let config = image_config(&dir, variant).map_err(|e| load_err(e.to_string()))?;
            parts.push(ConcatPart {
                id: id.to_string(),
                config,
            });
            files.push((
                id,
                ensure_converted(&dir).map_err(|e| load_err(e.to_string()))?,
            ));
        }
        let merged = self.catalog().dir(spec).join(WEIGHTS);
        let sources: Vec<(&str, &Path)> = files.iter().map(|(id, p)| (*id, p.as_path())).collect();
        concat::ensure_merged(&sources, &merged).map_err(|e| load_err(e.to_string()))?;
        let config = serde_json::to_vec_pretty(&ConcatConfig { parts })
            .map_err(|e| load_err(e.to_string()))?;
        Ok(image_folder(config, merged))
    }
}

/// An installed image backbone's architecture (its `config.json`, or the variant's
/// published one) and weights (converted from `weights.pth` if not yet done).
fn image_bundle(
    spec: &Spec,
    dir: &Path,
    finetuned: Option<&Path>,
) -> Result<Vec<BundleFile>, BackboneError> {
    let load_err = |message: String| BackboneError::Load {
        id: spec.id.to_string(),
        message,
    };
    let variant = LiteVariant::from_id(spec.id)
        .ok_or_else(|| load_err("not an EfficientNet-Lite variant".into()))?;
    let config = image_config(dir, variant).map_err(|e| load_err(e.to_string()))?;
    let config = serde_json::to_vec_pretty(&config).map_err(|e| load_err(e.to_string()))?;
    let weights = match finetuned {
        Some(w) => w.to_path_buf(),
        None => ensure_converted(dir).map_err(|e| load_err(e.to_string()))?,
    };
    Ok(image_folder(config, weights))
}

/// An image backbone's folder: its architecture, written for the bundle, and its weights.
fn image_folder(config: Vec<u8>, weights: PathBuf) -> Vec<BundleFile> {
    vec![
        BundleFile {
            name: CONFIG,
            data: BundleData::Bytes(config),
        },
        BundleFile {
            name: WEIGHTS,
            data: BundleData::File(weights),
        },
    ]
}
