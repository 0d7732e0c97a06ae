//! Turning training examples into backbone batches: texts through the tokenizer, image
//! files decoded from the dataset folder (every epoch: cheap next to a forward pass, and no
//! decoded copies held in memory), with an optional random augmented view per image.

use candle_core::Device;
use image::imageops;
use rand::rngs::StdRng;

use super::{Example, ExampleInput, TrainError, TrainResult};
use crate::backbones::Batch;
use crate::backbones::efficientnet::Augment;
use crate::backbones::image::{DEFAULT_MAX_PIXELS, decode};
use crate::backbones::registry::LoadedBackbone;

/// Settings for building batches.
pub struct BatchOptions<'a> {
    /// Text: tokens kept per example.
    pub max_length: usize,
    /// Images: a random view per example (fine-tuning, and the head's cropped views).
    pub augment: Option<&'a Augment>,
    /// Images: mirror every image left-right first.
    pub flip: bool,
}

/// Relative cost of an example, to group similar ones in a batch (token count for texts).
pub fn cost(bb: &LoadedBackbone, e: &Example) -> usize {
    match &e.input {
        ExampleInput::Text(t) => bb.prep.text_cost(t),
        ExampleInput::ImageFile(_) => 0,
    }
}

/// Indices of `examples` from the cheapest to the dearest: batches cut from this order pad
/// less (each example is predicted on its own, so the order changes results only by rounding;
/// images all cost 0 and keep their order).
pub fn by_cost(bb: &LoadedBackbone, examples: &[&Example]) -> Vec<usize> {
    let costs: Vec<usize> = examples.iter().map(|e| cost(bb, e)).collect();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| costs[i]);
    order
}

pub fn make_batch(
    bb: &LoadedBackbone,
    examples: &[&Example],
    opts: &BatchOptions<'_>,
    rng: Option<&mut StdRng>,
    device: &Device,
) -> TrainResult<Batch> {
    let Some(first) = examples.first() else {
        return Err(TrainError::Data("empty batch".into()));
    };
    match &first.input {
        ExampleInput::Text(_) => {
            let texts = examples
                .iter()
                .map(|e| match &e.input {
                    ExampleInput::Text(t) => Ok(t.as_str()),
                    ExampleInput::ImageFile(_) => Err(mixed()),
                })
                .collect::<TrainResult<Vec<_>>>()?;
            Ok(bb.prep.text_batch(&texts, opts.max_length, device)?)
        }
        ExampleInput::ImageFile(_) => {
            let mut images = examples
                .iter()
                .map(|e| match &e.input {
                    ExampleInput::ImageFile(path) => {
                        let bytes = std::fs::read(path)?;
                        decode(&bytes, DEFAULT_MAX_PIXELS).map_err(|err| {
                            TrainError::Data(format!(
                                "stored image {} cannot be decoded ({err}); upload the dataset again",
                                path.display()
                            ))
                        })
                    }
                    ExampleInput::Text(_) => Err(mixed()),
                })
                .collect::<TrainResult<Vec<_>>>()?;
            if opts.flip {
                images
                    .iter_mut()
                    .for_each(imageops::flip_horizontal_in_place);
            }
            let augment = match (opts.augment, rng) {
                (Some(a), Some(r)) => Some((a, r)),
                _ => None,
            };
            Ok(bb.prep.image_batch(&images, augment, device)?)
        }
    }
}

fn mixed() -> TrainError {
    TrainError::Data("a dataset cannot mix texts and images".into())
}
