//! Pre-trained backbones: the networks a job adapts and how their weights are loaded.
//!
//! - [`catalog`]: which backbones exist and which are installed (plain data, no candle):
//!   the one part the HTTP layer holds.
//! - [`registry`]: the loader that builds candle networks from the catalogue's folders.
//! - [`bundle`]: a backbone as a model's own folder (self-contained model archives), and
//!   where a model's backbone is loaded from.
//! - [`concat`]: several frozen image backbones side by side, their features concatenated.
//! - [`bert`], [`efficientnet`]: the networks, each with its own ops, weight readers and
//!   input preprocessing.
//! - [`image`]: decoding uploaded images (shared by datasets, training and prediction).
//!
//! The [`Backbone`] trait and [`Batch`] below are what `train` and `serve` program against.

pub mod bert;
pub mod bundle;
pub mod catalog;
pub mod concat;
pub mod efficientnet;
mod error;
pub mod image;
pub mod registry;

use candle_core::{Tensor, Var};

pub use catalog::Modality;
pub use error::BackboneError;

/// Inputs already turned into tensors exactly the way the backbone was pre-trained.
#[derive(Debug, Clone)]
pub enum Batch {
    /// Token ids and attention mask, both `[B, L]` `u32`, padded to the longest in the batch.
    Text {
        input_ids: Tensor,
        attention_mask: Tensor,
    },
    /// Normalised pixels `[B, 3, H, W]` `f32`.
    Image { pixels: Tensor },
    /// The same images at each part's resolution, for a [`concat::ConcatBackbone`]: one
    /// `[B, 3, H_i, W_i]` tensor per part, in the parts' order.
    Images { pixels: Vec<Tensor> },
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Text { input_ids, .. } => input_ids.dims()[0],
            Batch::Image { pixels } => pixels.dims()[0],
            Batch::Images { pixels } => pixels.first().map_or(0, |p| p.dims()[0]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a backbone's weights are plain tensors (inference, feature extraction) or
/// `Var`s that an optimiser can update (fine-tuning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsMode {
    Frozen,
    Trainable,
}

/// A pre-trained network with its pre-training head removed: it maps a batch to one
/// pooled feature vector per example.
pub trait Backbone: Send + Sync {
    /// Pooled features `[B, embedding_dim]` (`f32`). `train` turns on the backbone's own
    /// dropout; batch-norm statistics always stay frozen (small batches would corrupt them).
    fn forward(&self, batch: &Batch, train: bool) -> candle_core::Result<Tensor>;

    /// Width of the pooled features.
    fn embedding_dim(&self) -> usize;

    /// How many blocks `unfreeze: N` counts down from the top (BERT: encoder layers;
    /// EfficientNet: MBConv stages).
    fn num_blocks(&self) -> usize;

    /// Every weight with its safetensors name. With [`WeightsMode::Trainable`] these are
    /// `Var`s the optimiser updates; with [`WeightsMode::Frozen`] the list is empty.
    fn named_vars(&self) -> Vec<(String, Var)>;

    /// The block (0-based, counted from the bottom, `0..num_blocks()`) a named weight belongs
    /// to, or `None` for weights below the first block (embeddings, stem), which only
    /// `unfreeze: "all"` trains. Weights above the last block (final conv) count as the top
    /// block.
    fn block_of(&self, name: &str) -> Option<usize>;

    /// Re-seeds the backbone's own randomness (dropout, stochastic depth) so a training
    /// run is reproducible from its seed.
    fn seed(&self, _seed: u64) {}

    /// Every weight, current values, under the names [`registry::Registry::load`] reads
    /// back as a fine-tuned model's own weights file.
    fn export_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        Ok(self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect())
    }
}
