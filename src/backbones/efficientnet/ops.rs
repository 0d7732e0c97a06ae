//! Fused CPU ops the EfficientNet forward/backward is made of, besides matmuls and the
//! depthwise convolution: "add the folded batch-norm shift (then ReLU6)" with an explicit
//! backward, and the stem's im2col. Candle builds ReLU6 as `maximum(0).minimum(6)`, whose
//! backward allocates about eight full-size temporaries per activation (masks, divisions);
//! here the backward is one pass over the output plus one per-channel reduction.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Rows per rayon task in the elementwise kernels (keeps tasks around 64K elements).
fn rows_per_task(channels: usize) -> usize {
    (65_536 / channels.max(1)).max(1)
}

/// The `f32` elements of a contiguous CPU tensor (shared by the CPU custom ops).
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32")
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor")
    };
    Ok(&v[start..end])
}

/// `relu6(x + shift)` with `shift` broadcast along the last (channel) dimension.
/// Differentiable with respect to both arguments.
pub fn shift_relu6(x: &Tensor, shift: &Tensor) -> Result<Tensor> {
    apply_shift(x, shift, true)
}

/// `x + shift` with `shift` broadcast along the last (channel) dimension. Unlike candle's
/// `broadcast_add`, whose backward materialises a full-size gradient for the broadcast shift
/// and then reduces it over three strided dimensions, the backward here passes the gradient
/// through and sums it per channel in one contiguous pass.
pub fn shift(x: &Tensor, shift: &Tensor) -> Result<Tensor> {
    apply_shift(x, shift, false)
}

fn apply_shift(x: &Tensor, shift: &Tensor, relu6: bool) -> Result<Tensor> {
    let c = x.dim(candle_core::D::Minus1)?;
    if shift.dims() != [c] {
        bail!("shift: {:?} does not match {c} channels", shift.dims())
    }
    x.contiguous()?
        .apply_op2(&shift.contiguous()?, ShiftAct { relu6 })
}

struct ShiftAct {
    relu6: bool,
}

impl CustomOp2 for ShiftAct {
    fn name(&self) -> &'static str {
        if self.relu6 { "shift-relu6" } else { "shift" }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "shift input")?;
        let b = contiguous_f32(s2, l2, "shift")?;
        let c = b.len();
        let (lo, hi) = if self.relu6 {
            (0.0, 6.0)
        } else {
            (f32::NEG_INFINITY, f32::INFINITY)
        };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(c * rows_per_task(c))
            .zip(x.par_chunks(c * rows_per_task(c)))
            .for_each(|(o, x)| {
                for (o_row, x_row) in o.chunks_mut(c).zip(x.chunks(c)) {
                    for ((o, &x), &b) in o_row.iter_mut().zip(x_row).zip(b) {
                        *o = (x + b).clamp(lo, hi);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // d relu6(z)/dz is 1 where 0 < relu6(z) < 6, else 0 (as torch's hardtanh backward).
        let gz = if self.relu6 {
            res.apply_op2_no_bwd(&grad, &Relu6Mask)?
        } else {
            grad
        };
        let g_shift = if shift.track_op() {
            Some(gz.apply_op1_no_bwd(&ChannelSum)?)
        } else {
            None
        };
        let g_x = if x.track_op() { Some(gz) } else { None };
        Ok((g_x, g_shift))
    }
}

/// (relu6 output, upstream gradient) → gradient at the relu6 input.
struct Relu6Mask;

impl CustomOp2 for Relu6Mask {
    fn name(&self) -> &'static str {
        "relu6-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, "relu6 output")?;
        let g = contiguous_f32(s2, l2, "relu6 gradient")?;
        if y.len() != g.len() {
            bail!("relu6 backward: {} outputs, {} gradients", y.len(), g.len())
        }
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(65_536)
            .zip(y.par_chunks(65_536).zip(g.par_chunks(65_536)))
            .for_each(|(o, (y, g))| {
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = if y > 0.0 && y < 6.0 { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Sum over every dimension but the last: `[..., C]` → `[C]`.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "channel_sum input")?;
        let c = *l.dims().last().unwrap_or(&1);
        let sums = x
            .par_chunks(c * rows_per_task(c))
            .fold(
                || vec![0f32; c],
                |mut acc, rows| {
                    for row in rows.chunks(c) {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; c],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

/// Stem patches: NCHW pixels `[B, C, H, W]` → `[B*OH*OW, C*K*K]` (columns ordered like a
/// torch conv weight flattened from `[O, C, K, K]`), zero padded by (top, left), with the
/// bottom/right padding implied by the output size. Not differentiable: it only ever sees
/// input pixels.
pub fn im2col_nchw(
    x: &Tensor,
    k: usize,
    stride: usize,
    pad: (usize, usize),
    out: (usize, usize),
) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Im2Col {
        k,
        stride,
        pad_top: pad.0,
        pad_left: pad.1,
        oh: out.0,
        ow: out.1,
    })
}

struct Im2Col {
    k: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    oh: usize,
    ow: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-nchw"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "im2col input")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let Self {
            k,
            stride,
            pad_top,
            pad_left,
            oh,
            ow,
        } = *self;
        let cols = c * k * k;
        let mut out = vec![0f32; b * oh * ow * cols];
        out.par_chunks_mut(ow * cols)
            .enumerate()
            .for_each(|(row, o)| {
                let (bi, y) = (row / oh, row % oh);
                for xo in 0..ow {
                    let patch = &mut o[xo * cols..(xo + 1) * cols];
                    for ci in 0..c {
                        let plane = &x[(bi * c + ci) * h * w..][..h * w];
                        for i in 0..k {
                            let Some(ih) = (y * stride + i).checked_sub(pad_top).filter(|&v| v < h)
                            else {
                                continue;
                            };
                            for j in 0..k {
                                let Some(iw) =
                                    (xo * stride + j).checked_sub(pad_left).filter(|&v| v < w)
                                else {
                                    continue;
                                };
                                patch[(ci * k + i) * k + j] = plane[ih * w + iw];
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b * oh * ow, cols))))
    }
}
