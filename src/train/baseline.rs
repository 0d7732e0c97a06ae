//! The no-transfer baseline every job trains beside the real model, on the same splits, so
//! the service can show what pre-training bought: the same head (dropout → linear, same
//! trainer and schedule) on features that carry no pre-trained knowledge — TF-IDF bag of
//! words and bigrams for text, raw downscaled pixels for images.

use candle_core::{Device, Tensor};
use image::imageops::{self, FilterType};

use super::features::{Standardizer, select_rows};
use super::head::Head;
use super::head_train::{HeadTrainConfig, predict_logits, train_head};
use super::lexical::{Lexicon, tokens};
use super::recipe::Recipe;
use super::training_loop::EpochMetrics;
use super::{Example, ExampleInput, Observer, TrainError, TrainResult};
use crate::backbones::Modality;
use crate::backbones::image::{DEFAULT_MAX_PIXELS, decode};
use crate::store::jobs::Stage;

/// What the baseline is, as the report says it.
pub fn method(modality: Modality) -> &'static str {
    match modality {
        Modality::Text => {
            "logistic regression (the same head) on TF-IDF of words and word pairs: no pre-trained knowledge"
        }
        Modality::Image => "the same head on raw 16x16 RGB pixels: no pre-trained knowledge",
    }
}

/// Most vocabulary entries kept (by document frequency) for TF-IDF.
const MAX_VOCAB: usize = 4096;
/// Side of the downscaled image the pixel baseline sees.
const PIXEL_SIDE: u32 = 16;

/// The baseline's raw material, prepared once per job.
pub enum BaselineData {
    /// Tokenised texts (unigrams and bigrams per example).
    Text(Vec<Vec<String>>),
    /// Raw pixels `[N, 3·16·16]`.
    Pixels(Tensor),
}

pub fn prepare(examples: &[Example], device: &Device) -> TrainResult<BaselineData> {
    match examples.first().map(|e| &e.input) {
        Some(ExampleInput::Text(_)) | None => Ok(BaselineData::Text(
            examples
                .iter()
                .map(|e| match &e.input {
                    ExampleInput::Text(t) => tokens(t),
                    ExampleInput::ImageFile(_) => Vec::new(),
                })
                .collect(),
        )),
        Some(ExampleInput::ImageFile(_)) => {
            let side = PIXEL_SIDE as usize;
            let mut data = Vec::with_capacity(examples.len() * 3 * side * side);
            for e in examples {
                let ExampleInput::ImageFile(path) = &e.input else {
                    return Err(TrainError::Data(
                        "a dataset cannot mix texts and images".into(),
                    ));
                };
                let img = decode(&std::fs::read(path)?, DEFAULT_MAX_PIXELS)
                    .map_err(|err| TrainError::Data(format!("{}: {err}", path.display())))?;
                // Centre square, then downscale: the same framing as the evaluation view.
                let (w, h) = img.dimensions();
                let s = w.min(h);
                let square = imageops::crop_imm(&img, (w - s) / 2, (h - s) / 2, s, s).to_image();
                let small = imageops::resize(&square, PIXEL_SIDE, PIXEL_SIDE, FilterType::Triangle);
                for c in 0..3 {
                    data.extend(small.pixels().map(|p| p[c] as f32 / 255.0));
                }
            }
            Ok(BaselineData::Pixels(Tensor::from_vec(
                data,
                (examples.len(), 3 * side * side),
                device,
            )?))
        }
    }
}

/// TF-IDF (sublinear tf, smoothed idf, L2-normalised rows) with the vocabulary and idf
/// fitted on the training rows only.
fn tfidf(docs: &[Vec<String>], train: &[usize], device: &Device) -> TrainResult<Tensor> {
    let lexicon = Lexicon::fit(docs, train, MAX_VOCAB);
    let all: Vec<usize> = (0..docs.len()).collect();
    let x = lexicon.matrix(docs, &all);
    Ok(Tensor::from_vec(x, (docs.len(), lexicon.dims()), device)?)
}

/// Trains the baseline on `train` rows and returns its logits on `valid` rows (and on any
/// extra rows asked for, e.g. all rows for a final fit).
pub fn fit_and_predict(
    data: &BaselineData,
    labels: &[usize],
    classes: usize,
    train: &[usize],
    valid: &[usize],
    cfg: &HeadTrainConfig,
    obs: &mut dyn Observer,
) -> TrainResult<Vec<Vec<f32>>> {
    let device = Device::Cpu;
    let all = match data {
        BaselineData::Text(docs) => tfidf(docs, train, &device)?,
        BaselineData::Pixels(p) => p.clone(),
    };
    let pick = |idx: &[usize]| select_rows(&all, idx);
    let train_raw = pick(train)?;
    let std = Standardizer::fit(&train_raw)?;
    let train_x = std.apply(&train_raw)?;
    let train_y: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
    let valid_x = std.apply(&pick(valid)?)?;
    let valid_y: Vec<usize> = valid.iter().map(|&i| labels[i]).collect();
    let head = Head::new(
        train_x.dims()[1],
        classes,
        0,
        0.1,
        cfg.seed ^ 0xBA5E,
        &device,
    )?;
    let mut quiet = Quiet { inner: obs };
    train_head(
        &head,
        &train_x,
        &train_y,
        Some((&valid_x, &valid_y)),
        cfg,
        &mut quiet,
    )?;
    Ok(predict_logits(&head, &valid_x)?)
}

/// Passes cancellation through but keeps the baseline's epochs out of the job's events.
struct Quiet<'a> {
    inner: &'a mut dyn Observer,
}

impl Observer for Quiet<'_> {
    fn recipe(&mut self, _: &Recipe) {}
    fn stage(&mut self, _: Stage, _: &str) {}
    fn progress(&mut self, _: u32, _: u32, _: f64) {}
    fn epoch(&mut self, _: Stage, _: u32, _: u32, _: &EpochMetrics) {}
    fn log(&mut self, _: &str) {}
    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}
