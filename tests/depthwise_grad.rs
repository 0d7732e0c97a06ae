//! The channels-last depthwise convolution op: its forward against candle's grouped `conv2d`,
//! its gradients against finite differences and against candle's own (slow) backward.

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};
use warmstart::backbones::efficientnet::depthwise::{
    DepthwiseParams, depthwise_conv2d_nhwc, depthwise_conv2d_nhwc_candle, same_pad,
};

fn random(rng: &mut StdRng, shape: &[usize]) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// (batch, h, w, channels, kernel, stride, SAME padding?)
const CASES: [(usize, usize, usize, usize, usize, usize, bool); 7] = [
    (2, 7, 9, 5, 3, 1, true),
    (2, 8, 8, 19, 3, 2, true), // even size, stride 2: pad only bottom/right
    (1, 11, 6, 16, 5, 2, true), // pad 1 top, 2 bottom
    (3, 9, 9, 33, 5, 1, true),
    (2, 6, 7, 8, 3, 1, false),  // VALID
    (1, 10, 10, 4, 3, 3, true), // stride 3
    (1, 3, 3, 3, 5, 2, true),   // kernel larger than the input
];

fn params(h: usize, w: usize, k: usize, stride: usize, same: bool) -> DepthwiseParams {
    if same {
        DepthwiseParams::same(h, w, k, stride)
    } else {
        DepthwiseParams::valid(stride)
    }
}

#[test]
fn same_padding_is_tensorflow_asymmetric() {
    assert_eq!(same_pad(224, 3, 2), (0, 1));
    assert_eq!(same_pad(56, 5, 2), (1, 2));
    assert_eq!(same_pad(112, 3, 1), (1, 1));
    assert_eq!(same_pad(14, 5, 1), (2, 2));
    assert_eq!(same_pad(7, 3, 2), (1, 1));
}

#[test]
fn forward_matches_candle_grouped_conv2d() -> candle_core::Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    for (b, h, w, c, k, s, same) in CASES {
        let x = random(&mut rng, &[b, h, w, c])?;
        let kern = random(&mut rng, &[k, k, c])?;
        let p = params(h, w, k, s, same);
        let ours = depthwise_conv2d_nhwc(&x, &kern, p)?;
        let reference = depthwise_conv2d_nhwc_candle(&x, &kern, p)?;
        assert_eq!(ours.dims(), reference.dims());
        if same {
            assert_eq!(ours.dims(), [b, h.div_ceil(s), w.div_ceil(s), c]);
        }
        let diff = max_abs_diff(&ours, &reference)?;
        assert!(
            diff < 1e-5,
            "case {:?}: max diff {diff}",
            (b, h, w, c, k, s, same)
        );
    }
    Ok(())
}

/// `L = sum(out * r)` as f64, for a fixed random `r`.
fn loss(x: &Tensor, k: &Tensor, r: &Tensor, p: DepthwiseParams) -> candle_core::Result<f64> {
    let out = depthwise_conv2d_nhwc(x, k, p)?;
    let prod: Vec<f32> = (out * r)?.flatten_all()?.to_vec1()?;
    Ok(prod.iter().map(|&v| v as f64).sum())
}

fn perturbed(t: &Tensor, i: usize, delta: f32) -> candle_core::Result<Tensor> {
    let mut v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    v[i] += delta;
    Tensor::from_vec(v, t.dims(), &Device::Cpu)
}

#[test]
fn gradients_match_finite_differences() -> candle_core::Result<()> {
    let mut rng = StdRng::seed_from_u64(2);
    for (b, h, w, c, k, s, same) in CASES {
        let x = Var::from_tensor(&random(&mut rng, &[b, h, w, c])?)?;
        let kern = Var::from_tensor(&random(&mut rng, &[k, k, c])?)?;
        let p = params(h, w, k, s, same);
        let out = depthwise_conv2d_nhwc(x.as_tensor(), kern.as_tensor(), p)?;
        let r = random(&mut rng, out.dims())?;
        let grads = (out * &r)?.sum_all()?.backward()?;
        let gx: Vec<f32> = grads
            .get(x.as_tensor())
            .expect("grad x")
            .flatten_all()?
            .to_vec1()?;
        let gk: Vec<f32> = grads
            .get(kern.as_tensor())
            .expect("grad k")
            .flatten_all()?
            .to_vec1()?;

        // The loss is linear in each argument, so central differences are exact up to rounding.
        let eps = 0.25f32;
        let xs = x.as_tensor();
        let ks = kern.as_tensor();
        for _ in 0..25 {
            let i = rng.random_range(0..gx.len());
            let fd = (loss(&perturbed(xs, i, eps)?, ks, &r, p)?
                - loss(&perturbed(xs, i, -eps)?, ks, &r, p)?)
                / (2.0 * eps as f64);
            assert!(
                (fd - gx[i] as f64).abs() < 1e-3,
                "d/dx[{i}]: fd {fd} vs {}",
                gx[i]
            );
        }
        for (i, &g) in gk.iter().enumerate() {
            let fd = (loss(xs, &perturbed(ks, i, eps)?, &r, p)?
                - loss(xs, &perturbed(ks, i, -eps)?, &r, p)?)
                / (2.0 * eps as f64);
            assert!((fd - g as f64).abs() < 1e-3, "d/dk[{i}]: fd {fd} vs {g}");
        }
    }
    Ok(())
}

#[test]
fn gradients_match_candle_grouped_conv_backward() -> candle_core::Result<()> {
    let mut rng = StdRng::seed_from_u64(3);
    for (b, h, w, c, k, s, same) in CASES {
        let x = Var::from_tensor(&random(&mut rng, &[b, h, w, c])?)?;
        let kern = Var::from_tensor(&random(&mut rng, &[k, k, c])?)?;
        let p = params(h, w, k, s, same);
        let r = random(&mut rng, depthwise_conv2d_nhwc(&x, &kern, p)?.dims())?;
        let ours = (depthwise_conv2d_nhwc(&x, &kern, p)? * &r)?
            .sum_all()?
            .backward()?;
        let theirs = (depthwise_conv2d_nhwc_candle(&x, &kern, p)? * &r)?
            .sum_all()?
            .backward()?;
        for (name, v) in [("x", &x), ("kernel", &kern)] {
            let mine = ours.get(v.as_tensor()).expect("our grad");
            let stock = theirs.get(v.as_tensor()).expect("candle grad");
            let diff = max_abs_diff(mine, stock)?;
            assert!(
                diff < 1e-4,
                "grad {name}, case {:?}: max diff {diff}",
                (b, h, w, c, k, s, same)
            );
        }
    }
    Ok(())
}

#[test]
fn no_input_gradient_when_input_is_constant() -> candle_core::Result<()> {
    let mut rng = StdRng::seed_from_u64(4);
    let x = random(&mut rng, &[1, 5, 5, 4])?;
    let kern = Var::from_tensor(&random(&mut rng, &[3, 3, 4])?)?;
    let grads = depthwise_conv2d_nhwc(&x, &kern, DepthwiseParams::same(5, 5, 3, 1))?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none());
    assert!(grads.get(kern.as_tensor()).is_some());
    Ok(())
}
