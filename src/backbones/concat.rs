//! Several frozen image backbones side by side: each sees the image at its own resolution
//! and the pooled features are concatenated, so the head learns from both views of what
//! ImageNet taught them. On the public benchmark at 10 images per class (three seeds,
//! three fixed views per training image, the same logistic head), EfficientNet-Lite0 at
//! 224 px beside Lite2 at 260 px scored digits 0.835, animals 0.868, stamps 0.734 against
//! Lite2 alone 0.789 / 0.842 / 0.731 and Lite0 alone 0.814 / 0.859 / 0.700; feeding both
//! the same 260 px gained less (0.827 / 0.861), so each part keeps its own resolution.
//!
//! A composite is a feature extractor only: fine-tuning two networks at once would double
//! the job's dominant cost for a model the benchmark did not need, so it is never
//! trainable ([`super::registry::Registry`] refuses, and the recipe never asks).
//!
//! Its self-contained form (a model archive's `backbone/` folder) is one `config.json`
//! ([`ConcatConfig`]: each part's id and architecture) and one `model.safetensors` holding
//! every part's weights under the part's id as prefix.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Result, Tensor, Var, bail};
use serde::{Deserialize, Serialize};

use super::efficientnet::{EfficientNetConfig, EfficientNetLite};
use super::{Backbone, Batch, WeightsMode};

/// The parts, in order; their features are concatenated in this order.
pub struct ConcatBackbone {
    parts: Vec<Box<dyn Backbone>>,
}

impl ConcatBackbone {
    pub fn new(parts: Vec<Box<dyn Backbone>>) -> ConcatBackbone {
        ConcatBackbone { parts }
    }
}

impl Backbone for ConcatBackbone {
    fn forward(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let Batch::Images { pixels } = batch else {
            bail!("a composite backbone takes the images at each part's resolution");
        };
        if pixels.len() != self.parts.len() {
            bail!(
                "{} resolutions for {} parts",
                pixels.len(),
                self.parts.len()
            );
        }
        let feats = self
            .parts
            .iter()
            .zip(pixels)
            .map(|(part, p)| part.forward(&Batch::Image { pixels: p.clone() }, train))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&feats, 1)
    }

    fn embedding_dim(&self) -> usize {
        self.parts.iter().map(|p| p.embedding_dim()).sum()
    }

    fn num_blocks(&self) -> usize {
        0
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    fn block_of(&self, _name: &str) -> Option<usize> {
        None
    }

    fn export_weights(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
}

/// One part of a composite's self-contained folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConcatPart {
    /// The part's catalogue id (its weights' prefix in the bundled `model.safetensors`).
    pub id: String,
    pub config: EfficientNetConfig,
}

/// `config.json` of a composite's self-contained folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConcatConfig {
    pub parts: Vec<ConcatPart>,
}

/// Writes the bundled weights file of a composite to `out` (once; the file is reused):
/// every part's tensors (`(id, its safetensors file)`) under `"{id}."`. Written to a
/// temporary name first, so a crash never leaves half a file under `out`.
pub fn ensure_merged(parts: &[(&str, &Path)], out: &Path) -> Result<()> {
    if out.is_file() {
        return Ok(());
    }
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (id, file) in parts {
        for (name, t) in candle_core::safetensors::load(file, &candle_core::Device::Cpu)? {
            all.insert(format!("{id}.{name}"), t);
        }
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = out.with_extension(format!("partial-{}", std::process::id()));
    candle_core::safetensors::save(&all, &partial)?;
    std::fs::rename(&partial, out)?;
    Ok(())
}

/// Loads a composite from its self-contained folder's two files, with each part's input
/// resolution.
pub fn load_bundled(
    config: &Path,
    weights: &Path,
    device: &candle_core::Device,
) -> Result<(ConcatBackbone, Vec<usize>)> {
    let config: ConcatConfig = serde_json::from_slice(&std::fs::read(config)?)
        .map_err(|e| candle_core::Error::Msg(format!("composite config.json: {e}")))?;
    let tensors = candle_core::safetensors::load(weights, device)?;
    let mut parts: Vec<Box<dyn Backbone>> = Vec::new();
    let mut resolutions = Vec::new();
    for part in config.parts {
        resolutions.push(part.config.resolution);
        let prefix = format!("{}.", part.id);
        let own: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
            .collect();
        let net = EfficientNetLite::from_tensors(&own, part.config, WeightsMode::Frozen, device)?;
        parts.push(Box::new(net));
    }
    Ok((ConcatBackbone::new(parts), resolutions))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A part whose features are a constant row of its own width.
    struct Constant {
        value: f32,
        width: usize,
    }

    impl Backbone for Constant {
        fn forward(&self, batch: &Batch, _train: bool) -> Result<Tensor> {
            let Batch::Image { pixels } = batch else {
                bail!("an image batch")
            };
            let n = pixels.dims()[0];
            Tensor::full(
                self.value * pixels.dims()[2] as f32,
                (n, self.width),
                &Device::Cpu,
            )
        }
        fn embedding_dim(&self) -> usize {
            self.width
        }
        fn num_blocks(&self) -> usize {
            1
        }
        fn named_vars(&self) -> Vec<(String, Var)> {
            Vec::new()
        }
        fn block_of(&self, _name: &str) -> Option<usize> {
            None
        }
    }

    #[test]
    fn each_part_sees_its_resolution_and_features_concatenate_in_order() -> Result<()> {
        let net = ConcatBackbone::new(vec![
            Box::new(Constant {
                value: 1.0,
                width: 2,
            }),
            Box::new(Constant {
                value: -1.0,
                width: 3,
            }),
        ]);
        assert_eq!(net.embedding_dim(), 5);
        let at = |r: usize| Tensor::zeros((4, 3, r, r), candle_core::DType::F32, &Device::Cpu);
        let batch = Batch::Images {
            pixels: vec![at(8)?, at(10)?],
        };
        let f = net.forward(&batch, false)?;
        assert_eq!(f.dims(), &[4, 5]);
        assert_eq!(
            f.get(0)?.to_vec1::<f32>()?,
            vec![8.0, 8.0, -10.0, -10.0, -10.0]
        );
        assert!(net.named_vars().is_empty());
        // One resolution for two parts, or a plain image batch, is refused.
        let short = Batch::Images {
            pixels: vec![at(8)?],
        };
        assert!(net.forward(&short, false).is_err());
        assert!(
            net.forward(&Batch::Image { pixels: at(8)? }, false)
                .is_err()
        );
        Ok(())
    }
}
