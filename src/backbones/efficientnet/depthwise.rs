//! Depthwise 2-D convolution (one filter per channel) on channels-last `[B, H, W, C]` tensors,
//! as a candle custom op with a fast CPU forward and an explicit backward.
//!
//! Candle runs a grouped convolution as one tiny convolution per group plus a concatenation,
//! and its backward as one transposed convolution per group: with EfficientNet's 1152-channel
//! depthwise layers a fine-tuning step spends most of its time there (DESIGN §6). Here the
//! forward, the input gradient and the kernel gradient are three direct loops, vectorised over
//! the (contiguous) channel dimension and parallelised with rayon over output rows.
//! Zero padding is part of the op (any top/left/bottom/right amounts, so TF "SAME" needs no
//! padded copy of the input); with zero padding it is the plain "VALID" convolution.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::ops::contiguous_f32;

/// Stride and zero padding of a depthwise convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseParams {
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
}

impl DepthwiseParams {
    /// No padding ("VALID").
    pub fn valid(stride: usize) -> Self {
        Self {
            stride,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
        }
    }

    /// TensorFlow "SAME" padding for an `h x w` input and a `k x k` kernel: the output is
    /// `ceil(h / stride) x ceil(w / stride)`, and an odd total pad puts the extra row/column
    /// at the bottom/right.
    pub fn same(h: usize, w: usize, k: usize, stride: usize) -> Self {
        let (top, bottom) = same_pad(h, k, stride);
        let (left, right) = same_pad(w, k, stride);
        Self {
            stride,
            pad_top: top,
            pad_left: left,
            pad_bottom: bottom,
            pad_right: right,
        }
    }

    /// Output `(height, width)` for an `h x w` input and a `kh x kw` kernel.
    pub fn out_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        let ph = h + self.pad_top + self.pad_bottom;
        let pw = w + self.pad_left + self.pad_right;
        if self.stride == 0 || ph < kh || pw < kw {
            bail!(
                "depthwise conv: kernel {kh}x{kw} larger than padded input {ph}x{pw} (or stride 0)"
            )
        }
        Ok(((ph - kh) / self.stride + 1, (pw - kw) / self.stride + 1))
    }
}

/// TF "SAME" padding along one axis: `(before, after)`.
pub fn same_pad(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// `x`: `[B, H, W, C]`, `kernel`: `[KH, KW, C]`, both `f32` → `[B, OH, OW, C]`.
/// Differentiable with respect to both arguments.
pub fn depthwise_conv2d_nhwc(x: &Tensor, kernel: &Tensor, p: DepthwiseParams) -> Result<Tensor> {
    let (_, h, w, c) = x.dims4()?;
    let (kh, kw, kc) = kernel.dims3()?;
    if kc != c {
        bail!("depthwise conv: kernel has {kc} channels, input {c}")
    }
    p.out_size(h, w, kh, kw)?;
    x.contiguous()?
        .apply_op2(&kernel.contiguous()?, DepthwiseConv { p })
}

/// The same convolution through candle's stock grouped `conv2d` (NCHW, groups = channels,
/// explicit zero padding), kept as the reference it is tested against and as the "before"
/// of the benchmarks.
pub fn depthwise_conv2d_nhwc_candle(
    x: &Tensor,
    kernel: &Tensor,
    p: DepthwiseParams,
) -> Result<Tensor> {
    let (kh, kw, c) = kernel.dims3()?;
    let k = kernel.permute((2, 0, 1))?.reshape((c, 1, kh, kw))?;
    let x = x
        .permute((0, 3, 1, 2))?
        .pad_with_zeros(2, p.pad_top, p.pad_bottom)?
        .pad_with_zeros(3, p.pad_left, p.pad_right)?;
    x.conv2d(&k, 0, p.stride, 1, c)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// Geometry shared by the three kernels.
#[derive(Clone, Copy, Debug)]
struct Dims {
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: DepthwiseParams,
}

impl Dims {
    /// Input row/column read by output index `o` and kernel tap `k`, if inside the input.
    #[inline]
    fn input_index(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
        (o * stride + k).checked_sub(pad).filter(|&i| i < size)
    }

    /// Output row/column that reads input index `i` through kernel tap `k`, if any.
    #[inline]
    fn output_index(i: usize, k: usize, stride: usize, pad: usize, out: usize) -> Option<usize> {
        let t = (i + pad).checked_sub(k)?;
        (t % stride == 0 && t / stride < out).then_some(t / stride)
    }
}

#[inline]
fn fma_into(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        *o += x * y;
    }
}

/// Forward op: (input `[B,H,W,C]`, kernel `[KH,KW,C]`).
struct DepthwiseConv {
    p: DepthwiseParams,
}

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l1.shape().dims4()?;
        let (kh, kw, _) = l2.shape().dims3()?;
        let (oh, ow) = self.p.out_size(h, w, kh, kw)?;
        let d = Dims {
            h,
            w,
            c,
            kh,
            kw,
            oh,
            ow,
            p: self.p,
        };
        let x = contiguous_f32(s1, l1, "depthwise conv input")?;
        let k = contiguous_f32(s2, l2, "depthwise conv kernel")?;
        let mut out = vec![0f32; b * oh * ow * c];
        out.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(row, o)| forward_row(&d, x, k, row, o));
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, h, w, _) = x.dims4()?;
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(k, &DepthwiseGradInput { p: self.p, h, w })?)
        } else {
            None
        };
        let gk = if k.track_op() {
            let (kh, kw, _) = k.dims3()?;
            Some(x.apply_op2_no_bwd(&grad, &DepthwiseGradKernel { p: self.p, kh, kw })?)
        } else {
            None
        };
        Ok((gx, gk))
    }
}

/// One output row `(b, oh)`: `o[ow, c] = sum_{i,j} x[b, oh*s+i-pt, ow*s+j-pl, c] * k[i, j, c]`.
fn forward_row(d: &Dims, x: &[f32], k: &[f32], row: usize, o: &mut [f32]) {
    let (b, oh) = (row / d.oh, row % d.oh);
    let c = d.c;
    for i in 0..d.kh {
        let Some(ih) = Dims::input_index(oh, i, d.p.stride, d.p.pad_top, d.h) else {
            continue;
        };
        let x_row = &x[(b * d.h + ih) * d.w * c..][..d.w * c];
        for ow in 0..d.ow {
            let acc = &mut o[ow * c..(ow + 1) * c];
            for j in 0..d.kw {
                let Some(iw) = Dims::input_index(ow, j, d.p.stride, d.p.pad_left, d.w) else {
                    continue;
                };
                fma_into(
                    acc,
                    &x_row[iw * c..(iw + 1) * c],
                    &k[(i * d.kw + j) * c..][..c],
                );
            }
        }
    }
}

/// Gradient with respect to the input: (grad `[B,OH,OW,C]`, kernel) → `[B,H,W,C]`, computed
/// per input row as a gather so rows are independent.
struct DepthwiseGradInput {
    p: DepthwiseParams,
    h: usize,
    w: usize,
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, oh, ow, c) = l1.shape().dims4()?;
        let (kh, kw, _) = l2.shape().dims3()?;
        let d = Dims {
            h: self.h,
            w: self.w,
            c,
            kh,
            kw,
            oh,
            ow,
            p: self.p,
        };
        let g = contiguous_f32(s1, l1, "depthwise conv gradient")?;
        let k = contiguous_f32(s2, l2, "depthwise conv kernel")?;
        let mut gx = vec![0f32; b * d.h * d.w * c];
        gx.par_chunks_mut(d.w * c)
            .enumerate()
            .for_each(|(row, out)| {
                let (bi, ih) = (row / d.h, row % d.h);
                for i in 0..kh {
                    let Some(o_h) = Dims::output_index(ih, i, d.p.stride, d.p.pad_top, oh) else {
                        continue;
                    };
                    let g_row = &g[(bi * oh + o_h) * ow * c..][..ow * c];
                    for iw in 0..d.w {
                        let acc = &mut out[iw * c..(iw + 1) * c];
                        for j in 0..kw {
                            let Some(o_w) = Dims::output_index(iw, j, d.p.stride, d.p.pad_left, ow)
                            else {
                                continue;
                            };
                            fma_into(
                                acc,
                                &g_row[o_w * c..(o_w + 1) * c],
                                &k[(i * kw + j) * c..][..c],
                            );
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((b, d.h, d.w, c))))
    }
}

/// Gradient with respect to the kernel: (input `[B,H,W,C]`, grad `[B,OH,OW,C]`) →
/// `[KH,KW,C]`, each rayon task summing its output rows into a private buffer.
struct DepthwiseGradKernel {
    p: DepthwiseParams,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for DepthwiseGradKernel {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc-grad-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l1.shape().dims4()?;
        let (_, oh, ow, _) = l2.shape().dims4()?;
        let (kh, kw) = (self.kh, self.kw);
        let d = Dims {
            h,
            w,
            c,
            kh,
            kw,
            oh,
            ow,
            p: self.p,
        };
        let x = contiguous_f32(s1, l1, "depthwise conv input")?;
        let g = contiguous_f32(s2, l2, "depthwise conv gradient")?;
        let n = kh * kw * c;
        let gk = (0..b * oh)
            .into_par_iter()
            .fold(
                || vec![0f32; n],
                |mut acc, row| {
                    let (bi, o_h) = (row / oh, row % oh);
                    let g_row = &g[row * ow * c..][..ow * c];
                    for i in 0..kh {
                        let Some(ih) = Dims::input_index(o_h, i, d.p.stride, d.p.pad_top, h) else {
                            continue;
                        };
                        let x_row = &x[(bi * h + ih) * w * c..][..w * c];
                        for o_w in 0..ow {
                            let gv = &g_row[o_w * c..(o_w + 1) * c];
                            for j in 0..kw {
                                let Some(iw) =
                                    Dims::input_index(o_w, j, d.p.stride, d.p.pad_left, w)
                                else {
                                    continue;
                                };
                                fma_into(
                                    &mut acc[(i * kw + j) * c..][..c],
                                    gv,
                                    &x_row[iw * c..(iw + 1) * c],
                                );
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; n],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        Ok((CpuStorage::F32(gk), Shape::from((kh, kw, c))))
    }
}
