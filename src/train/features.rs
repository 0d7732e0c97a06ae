//! Feature extraction with the backbone frozen: every example goes through the backbone
//! once, and the head trains on these cached features. Texts are sorted by length so each
//! batch pads little. Images may also be extracted in a few fixed views (mirrored,
//! cropped): the frozen-feature head of a small image set learns from those beside the
//! plain image — augmentation paid once per job, in feature space.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::inputs::{BatchOptions, by_cost, make_batch};
use super::{Example, Observer, TrainResult, check_cancel};
use crate::backbones::efficientnet::Augment;
use crate::backbones::registry::LoadedBackbone;

/// Examples per forward pass during extraction.
const EXTRACT_BATCH: usize = 32;

/// How an image is shown to the frozen backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The inference preprocessing (texts: the only view).
    Plain,
    /// Mirrored left-right.
    Flip,
    /// A seeded square crop of 70–95 % of the area.
    Crop,
    /// A crop of the mirrored image.
    FlippedCrop,
}

/// The head's augmented views of each image, in the order the recipe's `head_views` takes
/// them (what they gained on the public benchmark: `defaults::head_views`).
pub const HEAD_VIEWS: [View; 3] = [View::Flip, View::Crop, View::FlippedCrop];

impl View {
    fn flips(self) -> bool {
        matches!(self, View::Flip | View::FlippedCrop)
    }

    /// The crop, for the cropped views: area only, no stretch, no colour change.
    fn crop(self) -> Option<Augment> {
        matches!(self, View::Crop | View::FlippedCrop).then(|| Augment {
            crop_scale: (0.7, 0.95),
            crop_ratio: (1.0, 1.0),
            hflip: false,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        })
    }

    fn seed(self) -> u64 {
        match self {
            View::Plain | View::Flip => 0,
            View::Crop => 0x5EED_C409,
            View::FlippedCrop => 0x5EED_F11C,
        }
    }
}

/// Pooled features `[N, D]` of `examples`, in their order.
pub fn extract(
    backbone: &LoadedBackbone,
    examples: &[&Example],
    max_length: usize,
    device: &Device,
    obs: &mut dyn Observer,
) -> TrainResult<Tensor> {
    extract_view(backbone, examples, max_length, View::Plain, 0, device, obs)
}

/// Pooled features `[N, D]` of `examples` seen through `view`, in their order. A cropped
/// view draws each batch's crops from an RNG seeded by `seed`, the view and the batch, so
/// the same data and seed give the same features.
pub fn extract_view(
    backbone: &LoadedBackbone,
    examples: &[&Example],
    max_length: usize,
    view: View,
    seed: u64,
    device: &Device,
    obs: &mut dyn Observer,
) -> TrainResult<Tensor> {
    let n = examples.len();
    let order = by_cost(backbone, examples);
    let crop = view.crop();
    let opts = BatchOptions {
        max_length,
        augment: crop.as_ref(),
        flip: view.flips(),
    };

    let mut rows: Vec<Option<Tensor>> = vec![None; n];
    let mut done = 0;
    for (b, chunk) in order.chunks(EXTRACT_BATCH).enumerate() {
        check_cancel(obs)?;
        let batch_examples: Vec<&Example> = chunk.iter().map(|&i| examples[i]).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ view.seed() ^ ((b as u64) << 32));
        let batch = make_batch(backbone, &batch_examples, &opts, Some(&mut rng), device)?;
        let feats = backbone.net.forward(&batch, false)?.detach();
        for (j, &i) in chunk.iter().enumerate() {
            rows[i] = Some(feats.get(j)?);
        }
        done += chunk.len();
        obs.progress(0, 0, done as f64 / n as f64);
    }
    let rows: Vec<Tensor> = rows
        .into_iter()
        .map(|r| r.expect("every row extracted"))
        .collect();
    Ok(Tensor::stack(&rows, 0)?)
}

/// Rows `idx` of `x`, in that order.
pub fn select_rows(x: &Tensor, idx: &[usize]) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    x.index_select(&Tensor::from_vec(ids, idx.len(), x.device())?, 0)
}

/// Per-feature mean and standard deviation over the given rows (the head is sensitive to
/// feature scale, so cached features are standardised with training statistics).
pub struct Standardizer {
    pub mean: Tensor,
    pub std: Tensor,
}

impl Standardizer {
    pub fn fit(features: &Tensor) -> TrainResult<Standardizer> {
        let mean = features.mean_keepdim(0)?;
        let centered = features.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(0)?;
        // A floor keeps near-constant features from being blown up into noise.
        let std = (var + 1e-6)?.sqrt()?.clamp(1e-3f32, f32::MAX)?;
        Ok(Standardizer {
            mean: mean.squeeze(0)?,
            std: std.squeeze(0)?,
        })
    }

    pub fn apply(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        features.broadcast_sub(&self.mean)?.broadcast_div(&self.std)
    }
}
