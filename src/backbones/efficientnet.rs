//! EfficientNet-Lite0/1/2, the image backbones (DESIGN §4), in candle: ImageNet weights
//! converted from TensorFlow (TF "SAME" padding everywhere, batch norm eps 1e-3, ReLU6, no
//! squeeze-excite, stem and head widths not scaled, first and last stage depths not scaled),
//! loaded from the converted `model.safetensors` with the legacy checkpoint's tensor names.
//!
//! Activations are channels-last internally, so every 1x1 convolution is one matmul and the
//! depthwise convolution vectorises over channels; batch norm always uses its running
//! statistics and is folded into the preceding convolution. Features are the global average
//! of the final 1x1 conv + BN + ReLU6 (1280-d for the real variants).

pub mod depthwise;
mod layers;
pub(crate) mod ops;
pub mod preprocess;
mod tiny;
pub mod torch_legacy;

pub use layers::Kernels;
pub use preprocess::Augment;
pub use tiny::{tiny_config, write_tiny_efficientnet};

use crate::backbones::{Backbone, Batch, WeightsMode};
use candle_core::{DType, Device, Result, Tensor, Var, bail};
use layers::{ConvBn, ConvKind, MbConv, WeightLoader};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use torch_legacy::ensure_converted;

/// The EfficientNet-Lite sizes this project ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiteVariant {
    Lite0,
    Lite1,
    Lite2,
}

impl LiteVariant {
    pub const ALL: [LiteVariant; 3] = [LiteVariant::Lite0, LiteVariant::Lite1, LiteVariant::Lite2];

    /// Backbone id, e.g. `efficientnet-lite0` (also the models-folder name).
    pub fn id(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "efficientnet-lite0",
            LiteVariant::Lite1 => "efficientnet-lite1",
            LiteVariant::Lite2 => "efficientnet-lite2",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }

    /// Native input resolution (224 / 240 / 260).
    pub fn resolution(self) -> usize {
        self.config().resolution
    }

    /// The architecture of this variant (TF `efficientnet_lite_builder` parameters).
    pub fn config(self) -> EfficientNetConfig {
        let (width_mult, depth_mult, resolution) = match self {
            LiteVariant::Lite0 => (1.0, 1.0, 224),
            LiteVariant::Lite1 => (1.0, 1.1, 240),
            LiteVariant::Lite2 => (1.1, 1.2, 260),
        };
        EfficientNetConfig {
            width_mult,
            depth_mult,
            resolution,
            stem_channels: 32,
            head_channels: 1280,
            drop_connect_rate: 0.2,
            bn_eps: 1e-3,
        }
    }
}

/// Architecture hyper-parameters; `config.json` in a backbone folder may override the
/// variant's defaults (that is how the tiny test network is described).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetConfig {
    /// Channel multiplier of the MBConv stages (rounded to multiples of 8).
    pub width_mult: f64,
    /// Repeat multiplier of the middle stages (first and last are fixed in Lite).
    pub depth_mult: f64,
    /// Input resolution the weights were trained at.
    pub resolution: usize,
    /// Stem output channels (not width-scaled in Lite).
    pub stem_channels: usize,
    /// Final 1x1 conv channels = feature width (not width-scaled in Lite).
    pub head_channels: usize,
    /// Stochastic-depth rate of the last block in training (scaled linearly with depth).
    pub drop_connect_rate: f64,
    /// Batch-norm epsilon.
    pub bn_eps: f64,
}

/// One stage of identical MBConv blocks (after width/depth scaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageSpec {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub out_channels: usize,
}

/// EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, output channels).
const BASE_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

impl EfficientNetConfig {
    /// TF `round_filters`: scale, round to a multiple of 8, never down by more than 10%.
    pub fn round_filters(&self, filters: usize) -> usize {
        let scaled = filters as f64 * self.width_mult;
        let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded += 8;
        }
        rounded
    }

    /// Trainable parameters of the backbone (conv kernels, batch-norm gamma and beta; no
    /// classifier, no running statistics): what `named_vars` holds in trainable mode.
    pub fn num_parameters(&self) -> usize {
        let conv_bn = |kernel: usize, c_out: usize| kernel + 2 * c_out;
        let mut n = conv_bn(self.stem_channels * 3 * 9, self.stem_channels);
        let mut c_in = self.stem_channels;
        for st in self.stages() {
            for _ in 0..st.repeats {
                let mid = c_in * st.expand;
                if st.expand != 1 {
                    n += conv_bn(c_in * mid, mid);
                }
                n += conv_bn(mid * st.kernel * st.kernel, mid)
                    + conv_bn(mid * st.out_channels, st.out_channels);
                c_in = st.out_channels;
            }
        }
        n + conv_bn(c_in * self.head_channels, self.head_channels)
    }

    /// The seven stages; Lite keeps the first and last stage depths fixed.
    pub fn stages(&self) -> Vec<StageSpec> {
        BASE_STAGES
            .iter()
            .enumerate()
            .map(|(i, &(repeats, kernel, stride, expand, out))| StageSpec {
                repeats: if i == 0 || i == BASE_STAGES.len() - 1 {
                    repeats
                } else {
                    (repeats as f64 * self.depth_mult).ceil() as usize
                },
                kernel,
                stride,
                expand,
                out_channels: self.round_filters(out),
            })
            .collect()
    }
}

/// EfficientNet-Lite without its classifier (kept only for [`EfficientNetLite::forward_logits`]).
pub struct EfficientNetLite {
    config: EfficientNetConfig,
    stem: ConvBn,
    blocks: Vec<MbConv>,
    /// Stage index of every block.
    block_stage: Vec<usize>,
    head: ConvBn,
    classifier: Option<(Tensor, Tensor)>,
    vars: Vec<(String, Var)>,
    kernels: Kernels,
    /// Stochastic-depth masks in training.
    rng: Mutex<StdRng>,
}

impl EfficientNetLite {
    /// Loads the weights of `variant` from a safetensors file (torch names, e.g.
    /// `_blocks.3._depthwise_conv.weight`).
    pub fn load(
        weights: &Path,
        variant: LiteVariant,
        mode: WeightsMode,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_config(weights, variant.config(), mode, device)
    }

    /// Loads a backbone folder `models/<id>/`: converts `weights.pth` to `model.safetensors`
    /// on first use, and reads `config.json` when present instead of the variant's defaults.
    pub fn load_dir(
        dir: &Path,
        variant: LiteVariant,
        mode: WeightsMode,
        device: &Device,
    ) -> Result<Self> {
        let weights = ensure_converted(dir)?;
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)?;
            serde_json::from_str(&text)
                .map_err(|e| candle_core::Error::msg(format!("{}: {e}", config_path.display())))?
        } else {
            variant.config()
        };
        Self::load_with_config(&weights, config, mode, device)
    }

    pub fn load_with_config(
        weights: &Path,
        config: EfficientNetConfig,
        mode: WeightsMode,
        device: &Device,
    ) -> Result<Self> {
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu)
            .map_err(|e| candle_core::Error::msg(format!("{}: {e}", weights.display())))?;
        Self::from_tensors(&tensors, config, mode, device)
    }

    /// Builds the network from named tensors, checking every shape against `config`.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: EfficientNetConfig,
        mode: WeightsMode,
        device: &Device,
    ) -> Result<Self> {
        let mut w = WeightLoader {
            tensors,
            bn_eps: config.bn_eps,
            mode,
            device,
            vars: Vec::new(),
        };
        let stem_kind = ConvKind::Stem { k: 3, stride: 2 };
        let stem = w.conv_bn("_conv_stem", "_bn0", stem_kind, (3, config.stem_channels))?;
        let stages = config.stages();
        let total: usize = stages.iter().map(|s| s.repeats).sum();
        let mut blocks = Vec::with_capacity(total);
        let mut block_stage = Vec::with_capacity(total);
        let mut c_in = config.stem_channels;
        for (si, st) in stages.iter().enumerate() {
            for r in 0..st.repeats {
                let idx = blocks.len();
                let p = format!("_blocks.{idx}");
                let stride = if r == 0 { st.stride } else { 1 };
                let mid = c_in * st.expand;
                let expand = if st.expand == 1 {
                    None
                } else {
                    let (conv, bn) = (format!("{p}._expand_conv"), format!("{p}._bn0"));
                    Some(w.conv_bn(&conv, &bn, ConvKind::Pointwise, (c_in, mid))?)
                };
                let kind = ConvKind::Depthwise {
                    k: st.kernel,
                    stride,
                };
                let (conv, bn) = (format!("{p}._depthwise_conv"), format!("{p}._bn1"));
                let depthwise = w.conv_bn(&conv, &bn, kind, (mid, mid))?;
                let (conv, bn) = (format!("{p}._project_conv"), format!("{p}._bn2"));
                let project = w.conv_bn(&conv, &bn, ConvKind::Pointwise, (mid, st.out_channels))?;
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && c_in == st.out_channels,
                    drop_rate: config.drop_connect_rate * idx as f64 / total as f64,
                });
                block_stage.push(si);
                c_in = st.out_channels;
            }
        }
        let head_io = (c_in, config.head_channels);
        let head = w.conv_bn("_conv_head", "_bn1", ConvKind::Pointwise, head_io)?;
        let vars = w.vars;
        let classifier = match (tensors.get("_fc.weight"), tensors.get("_fc.bias")) {
            (Some(w), Some(b)) if w.rank() == 2 && w.dim(1)? == config.head_channels => Some((
                w.to_dtype(DType::F32)?
                    .to_device(device)?
                    .t()?
                    .contiguous()?,
                b.to_dtype(DType::F32)?.to_device(device)?,
            )),
            _ => None,
        };
        let kernels = if device.is_cpu() {
            Kernels::Fast
        } else {
            Kernels::Stock
        };
        Ok(Self {
            config,
            stem,
            blocks,
            block_stage,
            head,
            classifier,
            vars,
            kernels,
            rng: Mutex::new(StdRng::seed_from_u64(0)),
        })
    }

    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    /// Input resolution the weights expect (images are resized + centre-cropped to it).
    pub fn resolution(&self) -> usize {
        self.config.resolution
    }

    /// Selects the kernels ([`Kernels::Stock`] is candle's stock ops: slow, for comparison).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Sets the stochastic-depth rate of the last block (others scale linearly with their
    /// index, as in the original training); 0 turns stochastic depth off.
    pub fn set_drop_connect_rate(&mut self, rate: f64) {
        self.config.drop_connect_rate = rate.clamp(0.0, 0.99);
        let total = self.blocks.len();
        for (idx, block) in self.blocks.iter_mut().enumerate() {
            block.drop_rate = self.config.drop_connect_rate * idx as f64 / total as f64;
        }
    }

    /// Every weight under its torch name, current values (fine-tuned `Var`s included), in the
    /// layout [`EfficientNetLite::from_tensors`] loads: for saving a fine-tuned backbone.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        self.stem.export(&mut out)?;
        for block in &self.blocks {
            if let Some(e) = &block.expand {
                e.export(&mut out)?;
            }
            block.depthwise.export(&mut out)?;
            block.project.export(&mut out)?;
        }
        self.head.export(&mut out)?;
        if let Some((w_t, b)) = &self.classifier {
            out.insert("_fc.weight".into(), w_t.t()?.contiguous()?);
            out.insert("_fc.bias".into(), b.clone());
        }
        Ok(out)
    }

    /// Re-seeds the stochastic-depth masks used when `forward(.., train = true)`.
    pub fn seed(&self, seed: u64) {
        *self.rng.lock() = StdRng::seed_from_u64(seed);
    }

    /// Pooled features `[B, head_channels]` from normalised NCHW pixels `[B, 3, H, W]`.
    pub fn features(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, _, _) = pixels.dims4()?;
        if c != 3 {
            bail!("efficientnet: expected 3 colour channels, got {c}")
        }
        if b == 0 {
            return Tensor::zeros((0, self.config.head_channels), DType::F32, pixels.device());
        }
        let pixels = pixels.to_dtype(DType::F32)?;
        let mut x = self.stem.forward(&pixels, true, self.kernels)?;
        for block in &self.blocks {
            let keep = if train && block.residual && block.drop_rate > 0.0 {
                Some(self.keep_mask(b, block.drop_rate, x.device())?)
            } else {
                None
            };
            x = block.forward(&x, keep.as_ref(), self.kernels)?;
        }
        let x = self.head.forward(&x, true, self.kernels)?;
        let (b, h, w, c) = x.dims4()?;
        x.reshape((b, h * w, c))?.mean(1)
    }

    /// Per-example stochastic-depth mask `[B, 1, 1, 1]`: `0` or `1 / (1 - p)`.
    fn keep_mask(&self, b: usize, p: f64, device: &Device) -> Result<Tensor> {
        let mut rng = self.rng.lock();
        let scale = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = (0..b)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
            .collect();
        Tensor::from_vec(mask, (b, 1, 1, 1), device)
    }

    /// ImageNet logits `[B, 1000]` (inference; for checking the port against PyTorch).
    pub fn forward_logits(&self, pixels: &Tensor) -> Result<Tensor> {
        let Some((w_t, bias)) = &self.classifier else {
            bail!("efficientnet: these weights have no ImageNet classifier (_fc)")
        };
        self.features(pixels, false)?
            .matmul(w_t)?
            .broadcast_add(bias)
    }
}

impl Backbone for EfficientNetLite {
    fn seed(&self, seed: u64) {
        EfficientNetLite::seed(self, seed);
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        match batch {
            Batch::Image { pixels } => self.features(pixels, train),
            Batch::Text { .. } => bail!("efficientnet: expected an image batch, got text"),
            Batch::Images { .. } => bail!("efficientnet: expected one resolution, got several"),
        }
    }

    fn embedding_dim(&self) -> usize {
        self.config.head_channels
    }

    fn num_blocks(&self) -> usize {
        BASE_STAGES.len()
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    fn export_weights(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.tensors()?.into_iter().collect())
    }

    fn block_of(&self, name: &str) -> Option<usize> {
        if let Some(rest) = name.strip_prefix("_blocks.") {
            let idx: usize = rest.split('.').next()?.parse().ok()?;
            return self.block_stage.get(idx).copied();
        }
        if name.starts_with("_conv_head.") || name.starts_with("_bn1.") {
            return Some(BASE_STAGES.len() - 1);
        }
        None
    }
}
