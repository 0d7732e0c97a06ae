//! Differentiable building blocks for fine-tuning on candle.
//!
//! candle's own `LayerNorm`, `ops::layer_norm` and `ops::softmax_last_dim` are fused kernels
//! with no backward pass: gradients silently stop at them (DESIGN §6). This module provides
//! layer norm, softmax, erf-GELU and dropout that do carry gradients, in two flavours:
//!
//! - `*_composed`: built only from primitive candle ops that have a backward (mean, sub, sqr,
//!   sqrt, div, exp, ...). Works on every device; the reference the fused ops are tested
//!   against.
//! - the default entry points ([`layer_norm`], [`softmax_last_dim`], [`gelu`]): on CPU, a
//!   single-pass [`candle_core::CustomOp1`]/[`candle_core::CustomOp3`] kernel with an explicit
//!   single-pass backward (the composed versions allocate one tensor per primitive op, in
//!   both directions); elsewhere they fall back to the composed versions.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Result, Shape, Tensor};
use rand::Rng;
use rayon::prelude::*;

/// Rows per rayon task in the row-wise kernels, and the size under which they stay on one
/// thread: splitting a small tensor costs more than it saves.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// `f(src_row, dst_row)` over rows of `n`, in parallel when the tensor is large.
fn for_rows<T: Send + Sync>(src: &[T], dst: &mut [T], n: usize, f: impl Fn(&[T], &mut [T]) + Sync) {
    if src.len() < PAR_MIN_ELEMS {
        for (row, out) in src.chunks_exact(n).zip(dst.chunks_exact_mut(n)) {
            f(row, out);
        }
        return;
    }
    let rows_per_task = (PAR_MIN_ELEMS / n).max(1);
    src.par_chunks(rows_per_task * n)
        .zip(dst.par_chunks_mut(rows_per_task * n))
        .for_each(|(rows, outs)| {
            for (row, out) in rows.chunks_exact(n).zip(outs.chunks_exact_mut(n)) {
                f(row, out);
            }
        });
}

/// Layer normalisation over the last dimension, with learnable `weight` and `bias`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Layer norm from primitive ops only (mean, sub, sqr, sqrt, div, mul, add).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let std = (var + eps)?.sqrt()?;
    centred
        .broadcast_div(&std)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Softmax over the last dimension from primitive ops (the subtracted max is detached: it
/// cancels out mathematically, so no gradient flows through it).
pub fn softmax_last_dim_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let num = x.broadcast_sub(&max)?.exp()?;
    let den = num.sum_keepdim(D::Minus1)?;
    num.broadcast_div(&den)
}

/// Layer norm over the last dimension with gradients for `x`, `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return layer_norm_composed(x, weight, bias, eps);
    }
    let x = x.contiguous()?;
    x.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps },
    )
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return softmax_last_dim_composed(x);
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}

/// Exact (erf) GELU, `0.5 x (1 + erf(x / sqrt 2))`: BERT's `"gelu"`, differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // `UnaryOp::GeluErf` has a backward in candle 0.11.1.
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluOp)
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// `1 / (1 - p)`. The mask is a constant, so the gradient is `grad * mask`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut impl Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        candle_core::bail!("dropout probability must be in [0, 1), got {p}")
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let p = p as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// The float types the CPU kernels handle.
trait Real: candle_core::WithDType {
    fn exp(self) -> Self;
    fn erf(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn erf(self) -> Self {
        fast_erf_f32(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
}

/// erf in single precision as Eigen and XLA compute it: a rational approximation on
/// [-4, 4] (outside it erf is ±1 in f32), branch-free so the GELU loop vectorises (plain `*`/`+`: `mul_add`
/// is a library call on the baseline x86-64 target). Max
/// absolute error about 2e-7 (tested against the f64 erf); the libm `erff` it replaces
/// took a sixth of a MiniLM forward.
#[inline]
pub fn fast_erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_473_9e-2;
    x * p / q
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: input has to be contiguous"),
    }
}

fn last_dim(layout: &Layout) -> Result<usize> {
    match layout.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("expected a tensor with a non-empty last dimension"),
    }
}

/// Dispatches a kernel generic over [`Real`] on the dtype of the first storage.
macro_rules! dispatch {
    ($name:expr, $first:expr, $f:ident ( $($s:expr),* ; $($extra:expr),* )) => {
        match $first {
            CpuStorage::F32(_) => $f::<f32>($(as_slice::<f32>($s, $name)?),* , $($extra),*),
            CpuStorage::F64(_) => $f::<f64>($(as_slice::<f64>($s, $name)?),* , $($extra),*),
            other => candle_core::bail!("{}: unsupported dtype {:?}", $name, other.dtype()),
        }
    };
}

fn as_slice<'a, T: candle_core::WithDType>(s: &'a CpuStorage, what: &str) -> Result<&'a [T]> {
    match s.as_slice::<T>() {
        Ok(v) => Ok(v),
        Err(_) => candle_core::bail!("{what}: all inputs must have the same dtype"),
    }
}

struct LayerNormOp {
    eps: f64,
}

fn layer_norm_fwd<T: Real>(
    x: &[T],
    w: &[T],
    b: &[T],
    lx: &Layout,
    lw: &Layout,
    lb: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let (x, w, b) = (
        contiguous(x, lx, "layer-norm")?,
        contiguous(w, lw, "layer-norm")?,
        contiguous(b, lb, "layer-norm")?,
    );
    let n = last_dim(lx)?;
    if w.len() != n || b.len() != n {
        candle_core::bail!(
            "layer-norm: weight/bias have {}/{} elements, last dim is {n}",
            w.len(),
            b.len()
        )
    }
    let mut out = vec![T::zero(); x.len()];
    for_rows(x, &mut out, n, |row, dst| {
        let (mean, rstd) = row_stats(row, eps);
        for (((d, &v), &wi), &bi) in dst.iter_mut().zip(row).zip(w).zip(b) {
            *d = T::from_f64((v.to_f64() - mean) * rstd) * wi + bi;
        }
    });
    Ok((T::to_cpu_storage_owned(out), lx.shape().clone()))
}

/// Mean and 1/std of one row, two-pass in f64.
fn row_stats<T: Real>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "warmstart-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!("layer-norm", s1, layer_norm_fwd(s1, s2, s3; l1, l2, l3, self.eps))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.elem_count();
        let rows = x.elem_count() / n;
        let grad = grad.contiguous()?;
        // One pass produces [rows + 2, n]: dx, then dweight, then dbias.
        let all = x.apply_op3_no_bwd(w, &grad, &LayerNormBwdOp { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.get(rows)?;
        let db = all.get(rows + 1)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormBwdOp {
    eps: f64,
}

fn layer_norm_bwd<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    lx: &Layout,
    lw: &Layout,
    lg: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let (x, w, g) = (
        contiguous(x, lx, "layer-norm-bwd")?,
        contiguous(w, lw, "layer-norm-bwd")?,
        contiguous(g, lg, "layer-norm-bwd")?,
    );
    let n = last_dim(lx)?;
    let rows = x.len() / n;
    let mut out = vec![T::zero(); (rows + 2) * n];
    let (dx, dwb) = out.split_at_mut(rows * n);
    let mut dw = vec![0f64; n];
    let mut db = vec![0f64; n];
    let mut xhat = vec![0f64; n];
    let mut gy = vec![0f64; n];
    for ((row, grow), dst) in x
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
    {
        let (mean, rstd) = row_stats(row, eps);
        let (mut mean_gy, mut mean_gy_xhat) = (0f64, 0f64);
        for i in 0..n {
            let gi = grow[i].to_f64();
            xhat[i] = (row[i].to_f64() - mean) * rstd;
            gy[i] = gi * w[i].to_f64();
            dw[i] += gi * xhat[i];
            db[i] += gi;
            mean_gy += gy[i];
            mean_gy_xhat += gy[i] * xhat[i];
        }
        mean_gy /= n as f64;
        mean_gy_xhat /= n as f64;
        for i in 0..n {
            dst[i] = T::from_f64(rstd * (gy[i] - mean_gy - xhat[i] * mean_gy_xhat));
        }
    }
    for i in 0..n {
        dwb[i] = T::from_f64(dw[i]);
        dwb[n + i] = T::from_f64(db[i]);
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows + 2, n))))
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "warmstart-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!("layer-norm-bwd", s1, layer_norm_bwd(s1, s2, s3; l1, l2, l3, self.eps))
    }
}

struct SoftmaxOp;

fn softmax_fwd<T: Real>(x: &[T], lx: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous(x, lx, "softmax")?;
    let n = last_dim(lx)?;
    let mut out = vec![T::zero(); x.len()];
    for_rows(x, &mut out, n, |row, dst| {
        let max = row
            .iter()
            .copied()
            .fold(row[0], |m, v| if v > m { v } else { m });
        let mut sum = T::zero();
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v - max).exp();
            sum += *d;
        }
        let inv = T::one() / sum;
        for d in dst.iter_mut() {
            *d *= inv;
        }
    });
    Ok((T::to_cpu_storage_owned(out), lx.shape().clone()))
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "warmstart-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!("softmax", s, softmax_fwd(s; l))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwdOp)?,
        ))
    }
}

/// `dx = y * (g - sum(g * y))` per row.
struct SoftmaxBwdOp;

fn softmax_bwd<T: Real>(y: &[T], g: &[T], ly: &Layout, lg: &Layout) -> Result<(CpuStorage, Shape)> {
    let (y, g) = (
        contiguous(y, ly, "softmax-bwd")?,
        contiguous(g, lg, "softmax-bwd")?,
    );
    let n = last_dim(ly)?;
    let mut out = vec![T::zero(); y.len()];
    for ((yr, gr), dst) in y
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(out.chunks_exact_mut(n))
    {
        let dot = yr
            .iter()
            .zip(gr)
            .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
        for ((d, &yi), &gi) in dst.iter_mut().zip(yr).zip(gr) {
            *d = yi * (gi - dot);
        }
    }
    Ok((T::to_cpu_storage_owned(out), ly.shape().clone()))
}

impl CustomOp2 for SoftmaxBwdOp {
    fn name(&self) -> &'static str {
        "warmstart-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!("softmax-bwd", s1, softmax_bwd(s1, s2; l1, l2))
    }
}

struct GeluOp;

fn gelu_fwd<T: Real>(x: &[T], lx: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous(x, lx, "gelu")?;
    let half = T::from_f64(0.5);
    let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let mut out = vec![T::zero(); x.len()];
    let n = last_dim(lx)?;
    for_rows(x, &mut out, n, |row, dst| {
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = half * v * (T::one() + (v * inv_sqrt2).erf());
        }
    });
    Ok((T::to_cpu_storage_owned(out), lx.shape().clone()))
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "warmstart-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!("gelu", s, gelu_fwd(s; l))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op3_no_bwd(
            res,
            &grad.contiguous()?,
            &GeluBwdOp,
        )?))
    }
}

/// `dx = g * (Phi(x) + x * phi(x))`, with `Phi(x) = gelu(x) / x` taken from the forward
/// output instead of a second `erf`.
struct GeluBwdOp;

fn gelu_bwd<T: Real>(
    x: &[T],
    y: &[T],
    g: &[T],
    lx: &Layout,
    ly: &Layout,
    lg: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, y, g) = (
        contiguous(x, lx, "gelu-bwd")?,
        contiguous(y, ly, "gelu-bwd")?,
        contiguous(g, lg, "gelu-bwd")?,
    );
    let half = T::from_f64(0.5);
    let tiny = T::from_f64(1e-30);
    let inv_sqrt_2pi = T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    let out: Vec<T> = x
        .iter()
        .zip(y)
        .zip(g)
        .map(|((&v, &yi), &gi)| {
            let small = v < tiny && T::zero() - v < tiny;
            let cdf = if small { half } else { yi / v };
            let pdf = inv_sqrt_2pi * (T::zero() - half * v * v).exp();
            gi * (cdf + v * pdf)
        })
        .collect();
    Ok((T::to_cpu_storage_owned(out), lx.shape().clone()))
}

impl CustomOp3 for GeluBwdOp {
    fn name(&self) -> &'static str {
        "warmstart-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!("gelu-bwd", s1, gelu_bwd(s1, s2, s3; l1, l2, l3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_matches_the_f64_erf() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((fast_erf_f32(x) as f64 - exact).abs());
        }
        assert!(worst < 1e-6, "max abs error {worst:e}");
        println!("fast erf: max abs error {worst:e}");
        assert!((fast_erf_f32(f32::INFINITY) - 1.0).abs() < 1e-6);
        assert!((fast_erf_f32(-30.0) + 1.0).abs() < 1e-6);
    }
}
