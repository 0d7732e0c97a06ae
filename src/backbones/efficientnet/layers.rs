//! The layers of EfficientNet-Lite on channels-last activations `[B, H, W, C]`: a bias-free
//! convolution followed by a frozen batch norm (folded into the convolution), and the MBConv
//! block built from three of them. Each op exists twice: the fast CPU kernels (matmul, the
//! custom depthwise op, fused shift+ReLU6) and candle's stock ops, kept as the reference
//! they are tested against, the "before" of the benchmarks, and the path for non-CPU devices.

use super::depthwise::{
    DepthwiseParams, depthwise_conv2d_nhwc, depthwise_conv2d_nhwc_candle, same_pad,
};
use super::ops::{im2col_nchw, shift as add_shift, shift_relu6};
use crate::backbones::WeightsMode;
use candle_core::{DType, Device, Result, Tensor, Var, bail};
use std::collections::HashMap;

/// Which implementation of the convolutions and activations a forward uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Custom CPU ops with explicit backward (default on CPU).
    Fast,
    /// Candle's stock ops only: grouped `conv2d`, `clamp` (default on other devices).
    Stock,
}

/// What a [`ConvBn`] convolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// `k x k` convolution over NCHW pixels, output channels-last.
    Stem { k: usize, stride: usize },
    /// 1x1 convolution.
    Pointwise,
    /// `k x k` depthwise convolution.
    Depthwise { k: usize, stride: usize },
}

/// A bias-free convolution and the batch norm after it, with running statistics frozen: the
/// norm is the per-channel affine `x * s + t`, `s = gamma / sqrt(var + eps)`,
/// `t = beta - mean * s`; `s` is folded into the kernel, `t` is added before the activation.
pub struct ConvBn {
    kind: ConvKind,
    /// Tensor-name prefixes, e.g. `_blocks.3._expand_conv` and `_blocks.3._bn0`.
    conv: String,
    bn: String,
    /// Torch layout: `[O, C, k, k]` (`[C, 1, k, k]` for depthwise).
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    inv_std: Tensor,
    /// Frozen mode: (kernel, shift) computed once at load.
    folded: Option<(Tensor, Tensor)>,
}

/// Takes `name` out of the loaded tensors, checking its shape.
fn take(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let Some(t) = tensors.get(name) else {
        bail!("efficientnet: weight {name} missing")
    };
    if t.dims() != shape {
        bail!(
            "efficientnet: weight {name} has shape {:?}, the configuration expects {shape:?}",
            t.dims()
        )
    }
    t.to_dtype(DType::F32)?.to_device(device)
}

/// Builds [`ConvBn`] layers from named tensors, collecting the `Var`s of trainable weights.
pub struct WeightLoader<'a> {
    pub tensors: &'a HashMap<String, Tensor>,
    pub bn_eps: f64,
    pub mode: WeightsMode,
    pub device: &'a Device,
    /// `(name, Var)` for every trainable weight loaded so far, in load order.
    pub vars: Vec<(String, Var)>,
}

impl WeightLoader<'_> {
    /// Loads `{conv}.weight` and `{bn}.{weight,bias,running_mean,running_var}`. In
    /// [`WeightsMode::Trainable`] the kernel, gamma and beta become `Var`s.
    pub fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        kind: ConvKind,
        (c_in, c_out): (usize, usize),
    ) -> Result<ConvBn> {
        let (tensors, device, mode) = (self.tensors, self.device, self.mode);
        let wshape = match kind {
            ConvKind::Stem { k, .. } => vec![c_out, c_in, k, k],
            ConvKind::Pointwise => vec![c_out, c_in, 1, 1],
            ConvKind::Depthwise { k, .. } => vec![c_out, 1, k, k],
        };
        let mut weight = take(tensors, &format!("{conv}.weight"), &wshape, device)?;
        let mut gamma = take(tensors, &format!("{bn}.weight"), &[c_out], device)?;
        let mut beta = take(tensors, &format!("{bn}.bias"), &[c_out], device)?;
        let mean = take(tensors, &format!("{bn}.running_mean"), &[c_out], device)?;
        let var = take(tensors, &format!("{bn}.running_var"), &[c_out], device)?;
        let inv_std = (&var + self.bn_eps)?.sqrt()?.recip()?;
        if mode == WeightsMode::Trainable {
            for (name, t) in [
                (format!("{conv}.weight"), &mut weight),
                (format!("{bn}.weight"), &mut gamma),
                (format!("{bn}.bias"), &mut beta),
            ] {
                let v = Var::from_tensor(t)?;
                *t = v.as_tensor().clone();
                self.vars.push((name, v));
            }
        }
        let (conv, bn) = (conv.to_string(), bn.to_string());
        let mut layer = ConvBn {
            kind,
            conv,
            bn,
            weight,
            gamma,
            beta,
            mean,
            var,
            inv_std,
            folded: None,
        };
        if mode == WeightsMode::Frozen {
            let (k, t) = layer.fold()?;
            layer.folded = Some((k.contiguous()?, t));
        }
        Ok(layer)
    }
}

impl ConvBn {
    /// Adds this layer's current weights under their torch names (a snapshot: later optimiser
    /// updates of the `Var`s do not change them).
    pub fn export(&self, out: &mut HashMap<String, Tensor>) -> Result<()> {
        out.insert(format!("{}.weight", self.conv), self.weight.copy()?);
        out.insert(format!("{}.weight", self.bn), self.gamma.copy()?);
        out.insert(format!("{}.bias", self.bn), self.beta.copy()?);
        out.insert(format!("{}.running_mean", self.bn), self.mean.clone());
        out.insert(format!("{}.running_var", self.bn), self.var.clone());
        Ok(())
    }

    /// (kernel in the fast ops' layout, shift). Kernel layouts: stem `[C*k*k, O]`, pointwise
    /// `[C, O]`, depthwise `[k, k, C]`.
    fn fold(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.gamma * &self.inv_std)?;
        let shift = (&self.beta - (&self.mean * &scale)?)?;
        let o = self.weight.dim(0)?;
        let flat = self
            .weight
            .reshape((o, ()))?
            .broadcast_mul(&scale.unsqueeze(1)?)?;
        let kernel = match self.kind {
            ConvKind::Stem { .. } | ConvKind::Pointwise => flat.t()?,
            ConvKind::Depthwise { k, .. } => flat.t()?.contiguous()?.reshape((k, k, o))?,
        };
        Ok((kernel, shift))
    }

    fn kernel_and_shift(&self) -> Result<(Tensor, Tensor)> {
        match &self.folded {
            Some((k, t)) => Ok((k.clone(), t.clone())),
            None => self.fold(),
        }
    }

    /// Convolution + batch norm, then ReLU6 if `relu6`. `x` is channels-last `[B, H, W, C]`,
    /// except for the stem, which takes NCHW pixels.
    pub fn forward(&self, x: &Tensor, relu6: bool, kernels: Kernels) -> Result<Tensor> {
        let (kernel, shift) = self.kernel_and_shift()?;
        let y = match self.kind {
            ConvKind::Pointwise => {
                let (b, h, w, c) = x.dims4()?;
                let o = kernel.dim(1)?;
                x.reshape((b * h * w, c))?
                    .matmul(&kernel)?
                    .reshape((b, h, w, o))?
            }
            ConvKind::Depthwise { k, stride } => {
                let (_, h, w, _) = x.dims4()?;
                let p = DepthwiseParams::same(h, w, k, stride);
                match kernels {
                    Kernels::Fast => depthwise_conv2d_nhwc(x, &kernel, p)?,
                    Kernels::Stock => depthwise_conv2d_nhwc_candle(x, &kernel, p)?,
                }
            }
            ConvKind::Stem { k, stride } => {
                let (b, c, h, w) = x.dims4()?;
                let (top, bottom) = same_pad(h, k, stride);
                let (left, right) = same_pad(w, k, stride);
                let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
                let o = kernel.dim(1)?;
                match kernels {
                    Kernels::Fast => {
                        let cols = im2col_nchw(x, k, stride, (top, left), (oh, ow))?;
                        cols.matmul(&kernel)?.reshape((b, oh, ow, o))?
                    }
                    Kernels::Stock => {
                        let torch_kernel = kernel.t()?.reshape((o, c, k, k))?;
                        x.pad_with_zeros(2, top, bottom)?
                            .pad_with_zeros(3, left, right)?
                            .conv2d(&torch_kernel, 0, stride, 1, 1)?
                            .permute((0, 2, 3, 1))?
                    }
                }
            }
        };
        match (relu6, kernels) {
            (true, Kernels::Fast) => shift_relu6(&y, &shift),
            (true, Kernels::Stock) => y.broadcast_add(&shift)?.clamp(0f32, 6f32),
            (false, Kernels::Fast) => add_shift(&y, &shift),
            (false, Kernels::Stock) => y.broadcast_add(&shift),
        }
    }
}

/// Mobile inverted bottleneck (no squeeze-excite in Lite): optional 1x1 expansion, depthwise
/// `k x k`, 1x1 linear projection, identity shortcut when shapes allow.
pub struct MbConv {
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    pub residual: bool,
    /// Stochastic-depth probability used in training (0 = never drop).
    pub drop_rate: f64,
}

impl MbConv {
    /// `keep`: with a residual and a drop rate, the per-example keep mask `[B, 1, 1, 1]`
    /// (already scaled by `1 / (1 - drop_rate)`); `None` in inference.
    pub fn forward(&self, x: &Tensor, keep: Option<&Tensor>, kernels: Kernels) -> Result<Tensor> {
        let mut h = match &self.expand {
            Some(e) => e.forward(x, true, kernels)?,
            None => x.clone(),
        };
        h = self.depthwise.forward(&h, true, kernels)?;
        h = self.project.forward(&h, false, kernels)?;
        if !self.residual {
            return Ok(h);
        }
        if let Some(keep) = keep {
            h = h.broadcast_mul(keep)?;
        }
        h + x
    }
}
