//! Feature extraction with the backbone frozen: every example goes through the backbone
//! exactly once (no augmentation), and the head trains on these cached features. Texts
//! are sorted by length so each batch pads little.

use candle_core::{Device, Tensor};

use super::inputs::{BatchOptions, cost, make_batch};
use super::{Example, Observer, TrainResult, check_cancel};
use crate::backbones::registry::LoadedBackbone;

/// Examples per forward pass during extraction.
const EXTRACT_BATCH: usize = 32;

/// Pooled features `[N, D]` of `examples`, in their order.
pub fn extract(
    backbone: &LoadedBackbone,
    examples: &[&Example],
    max_length: usize,
    device: &Device,
    obs: &mut dyn Observer,
) -> TrainResult<Tensor> {
    let n = examples.len();
    let mut order: Vec<usize> = (0..n).collect();
    let costs: Vec<usize> = examples.iter().map(|e| cost(backbone, e)).collect();
    order.sort_by_key(|&i| costs[i]);
    let opts = BatchOptions {
        max_length,
        augment: None,
    };

    let mut rows: Vec<Option<Tensor>> = vec![None; n];
    let mut done = 0;
    for chunk in order.chunks(EXTRACT_BATCH) {
        check_cancel(obs)?;
        let batch_examples: Vec<&Example> = chunk.iter().map(|&i| examples[i]).collect();
        let batch = make_batch(backbone, &batch_examples, &opts, None, device)?;
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
