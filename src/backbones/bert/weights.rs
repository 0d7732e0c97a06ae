//! Reading BERT weights from safetensors: the optional fine-tuned overlay over the base
//! `model.safetensors`, name-prefix detection (`bert.`), shape checks, and `Var` creation for
//! trainable weights.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::Linear;

use super::ops::LayerNorm;
use crate::backbones::WeightsMode;

/// Where weights come from: an optional overlay file (fine-tuned weights) over the base
/// `model.safetensors`, each with its own optional `bert.` prefix.
pub(super) struct WeightSource {
    files: Vec<(MmapedSafetensors, String)>,
    base_path: PathBuf,
    base_opened: bool,
    /// The overlay's path and how many tensors came from it.
    overlay: Option<(PathBuf, usize)>,
}

/// The tensor-name prefix a weights file uses (`""` or e.g. `"bert."`), from the first name
/// that has an `embeddings.` or `encoder.layer.` component.
fn detect_prefix(names: &[String]) -> String {
    for n in names {
        for marker in ["embeddings.", "encoder.layer."] {
            if let Some(p) = n.find(marker)
                && (p == 0 || n[..p].ends_with('.'))
            {
                return n[..p].to_string();
            }
        }
    }
    String::new()
}

fn open_weights(path: &Path) -> Result<(MmapedSafetensors, String)> {
    // SAFETY: the file is mapped read-only; like every mmap user we rely on it not being
    // truncated while mapped (model folders are written once, before use).
    let st = unsafe { MmapedSafetensors::new(path)? };
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    let prefix = detect_prefix(&names);
    Ok((st, prefix))
}

impl WeightSource {
    pub(super) fn new(dir: &Path, overlay: Option<&Path>) -> Result<WeightSource> {
        let base_path = dir.join("model.safetensors");
        let mut src = WeightSource {
            files: Vec::new(),
            base_path,
            base_opened: false,
            overlay: overlay.map(|p| (p.to_path_buf(), 0)),
        };
        match overlay {
            Some(p) => src.files.push(open_weights(p)?),
            None => src.open_base()?,
        }
        Ok(src)
    }

    fn open_base(&mut self) -> Result<()> {
        if !self.base_opened {
            self.base_opened = true;
            let file = open_weights(&self.base_path)?;
            self.files.push(file);
        }
        Ok(())
    }

    /// The prefix names are reported with (the first file's).
    fn prefix(&self) -> &str {
        &self.files[0].1
    }

    fn load(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        for (i, (st, prefix)) in self.files.iter().enumerate() {
            let full = format!("{prefix}{name}");
            if st.get(&full).is_ok() {
                if i == 0
                    && let Some((_, n)) = self.overlay.as_mut()
                {
                    *n += 1;
                }
                return st.load(&full, device)?.to_dtype(DType::F32);
            }
        }
        if !self.base_opened {
            self.open_base()?;
            return self.load(name, device);
        }
        candle_core::bail!("weight {name} not found in {}", self.base_path.display())
    }

    /// An overlay that supplied no weight at all is the wrong file, not a no-op.
    pub(super) fn check_overlay_used(&self) -> Result<()> {
        match &self.overlay {
            Some((path, 0)) => candle_core::bail!(
                "{} holds no BERT weight (expected names like {}embeddings.word_embeddings.weight)",
                path.display(),
                self.prefix()
            ),
            _ => Ok(()),
        }
    }
}

/// Loads the weights, checking shapes and registering `Var`s when trainable.
pub(super) struct Loader<'a> {
    pub(super) source: WeightSource,
    pub(super) mode: WeightsMode,
    pub(super) device: &'a Device,
    pub(super) vars: Vec<(String, Var)>,
}

impl Loader<'_> {
    pub(super) fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.source.load(name, self.device)?;
        if t.dims() != shape {
            candle_core::bail!("weight {name} has shape {:?}, expected {shape:?}", t.dims())
        }
        match self.mode {
            WeightsMode::Frozen => Ok(t),
            WeightsMode::Trainable => {
                let var = Var::from_tensor(&t)?;
                let tensor = var.as_tensor().clone();
                let full = format!("{}{name}", self.source.prefix());
                self.vars.push((full, var));
                Ok(tensor)
            }
        }
    }

    pub(super) fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    pub(super) fn layer_norm(&mut self, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        let w = self.get(&format!("{name}.weight"), &[dim])?;
        let b = self.get(&format!("{name}.bias"), &[dim])?;
        Ok(LayerNorm::new(w, b, eps))
    }
}
