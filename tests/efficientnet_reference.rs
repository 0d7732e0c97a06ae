//! EfficientNet-Lite0 against the PyTorch reference outputs of
//! `shared/reference/efficientnet_lite0_reference.json` (copied below; real weights, skipped
//! with a notice when they are missing, failing when `CI=true`), and the natural-image check
//! on the scikit-image pictures fetched by `scripts/fetch-test-data.sh`.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use warmstart::backbones::efficientnet::preprocess;
use warmstart::backbones::efficientnet::{EfficientNetLite, Kernels, LiteVariant};
use warmstart::backbones::{Backbone, Batch, WeightsMode, image};

// From shared/reference/efficientnet_lite0_reference.json (PyTorch).
const POOLED_FIRST8: [f32; 8] = [1.96154, 0.0, 1.41921, 0.0, 0.0, 0.0, 0.0, 0.09636];
const POOLED_SUM: f32 = 176.5553;
const LOGITS_FIRST8: [f32; 8] = [
    -1.6159, 0.6604, -0.7833, -1.1087, -0.1055, -1.1588, -0.7851, -1.6809,
];
const TOP5_INDEX: [usize; 5] = [904, 446, 549, 632, 318];
const TOP5_VALUE: [f32; 5] = [5.6326, 4.9631, 4.7474, 4.7051, 4.6662];
/// Natural images: (file, reference top-3 classes, their probabilities); pipeline: decode RGB,
/// resize shorter side to 224 (bilinear), centre crop 224x224, (pixel - 127) / 128.
const NATURAL: [(&str, [usize; 3], [f32; 3]); 4] = [
    ("chelsea.png", [285, 282, 281], [0.394, 0.328, 0.163]),
    ("coffee.png", [967, 968, 925], [0.944, 0.015, 0.008]),
    ("rocket.jpg", [657, 744, 540], [0.312, 0.161, 0.078]),
    (
        "motorcycle_left.png",
        [665, 670, 535],
        [0.716, 0.129, 0.028],
    ),
];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn models_dir() -> PathBuf {
    std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// A private copy of the Lite0 folder (the checkpoint linked, not copied) so converting to
/// safetensors never writes into the shared models folder; `None` when weights are missing.
fn lite0_dir() -> Option<tempfile::TempDir> {
    let src = models_dir().join("efficientnet-lite0");
    let pth = src.join("weights.pth");
    if !pth.is_file() {
        assert!(!ci(), "CI=true but {} is missing", pth.display());
        eprintln!(
            "SKIP: {} missing (run scripts/fetch-backbones.sh)",
            pth.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let st = src.join("model.safetensors");
    if st.is_file() {
        std::os::unix::fs::symlink(&st, dir.path().join("model.safetensors")).expect("symlink");
    } else {
        std::os::unix::fs::symlink(&pth, dir.path().join("weights.pth")).expect("symlink");
    }
    Some(dir)
}

/// `x[c][h][w] = ((c*7 + h*3 + w*5) mod 17)/8 - 1`, shape `[1, 3, 224, 224]`.
fn synthetic_input() -> candle_core::Result<Tensor> {
    let mut v = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for h in 0..224 {
            for w in 0..224 {
                v.push(((c * 7 + h * 3 + w * 5) % 17) as f32 / 8.0 - 1.0);
            }
        }
    }
    Tensor::from_vec(v, (1, 3, 224, 224), &Device::Cpu)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

#[test]
fn lite0_matches_pytorch_reference_on_synthetic_input() -> anyhow::Result<()> {
    let Some(dir) = lite0_dir() else {
        return Ok(());
    };
    let mut model = EfficientNetLite::load_dir(
        dir.path(),
        LiteVariant::Lite0,
        WeightsMode::Frozen,
        &Device::Cpu,
    )?;
    assert_eq!(model.embedding_dim(), 1280);
    assert_eq!(model.resolution(), 224);
    let x = synthetic_input()?;
    for kernels in [Kernels::Fast, Kernels::Stock] {
        model.set_kernels(kernels);
        let feats = model.forward(&Batch::Image { pixels: x.clone() }, false)?;
        assert_eq!(feats.dims(), [1, 1280]);
        let feats: Vec<f32> = feats.flatten_all()?.to_vec1()?;
        let logits: Vec<f32> = model.forward_logits(&x)?.flatten_all()?.to_vec1()?;

        let d_feat = max_abs_diff(&feats[..8], &POOLED_FIRST8);
        let sum: f32 = feats.iter().sum();
        let want_sum = POOLED_SUM;
        let d_logit = max_abs_diff(&logits[..8], &LOGITS_FIRST8);
        let top5 = top_k(&logits, 5);
        let top5_values: Vec<f32> = top5.iter().map(|&i| logits[i]).collect();
        let d_top5 = max_abs_diff(&top5_values, &TOP5_VALUE);
        println!(
            "{kernels:?}: max |diff| features[..8] {d_feat:.2e}, logits[..8] {d_logit:.2e}, top-5 values \
             {d_top5:.2e}; feature sum {sum:.4} vs {want_sum:.4}; top-5 {top5:?}"
        );
        assert!(d_feat < 1e-3, "pooled features differ by {d_feat}");
        assert!(
            (sum - want_sum).abs() < 2e-2,
            "feature sum {sum} vs {want_sum}"
        );
        assert!(d_logit < 1e-3, "logits differ by {d_logit}");
        assert_eq!(top5, TOP5_INDEX);
        assert!(d_top5 < 1e-3, "top-5 logits differ by {d_top5}");
    }
    Ok(())
}

fn test_data_dir() -> PathBuf {
    std::env::var_os("WARMSTART_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data"))
}

#[test]
fn lite0_classifies_natural_images_like_pytorch() -> anyhow::Result<()> {
    let Some(dir) = lite0_dir() else {
        return Ok(());
    };
    let data = test_data_dir();
    if NATURAL
        .iter()
        .any(|(name, _, _)| !data.join(name).is_file())
    {
        assert!(
            !ci(),
            "CI=true but the test images are missing from {}",
            data.display()
        );
        eprintln!(
            "SKIP: test images missing from {} (run scripts/fetch-test-data.sh)",
            data.display()
        );
        return Ok(());
    }
    let model = EfficientNetLite::load_dir(
        dir.path(),
        LiteVariant::Lite0,
        WeightsMode::Frozen,
        &Device::Cpu,
    )?;
    let mut pixels = Vec::new();
    for (name, _, _) in NATURAL {
        let img = image::decode(&std::fs::read(data.join(name))?, image::DEFAULT_MAX_PIXELS)?;
        pixels.push(preprocess::to_tensor(&img, 224)?);
    }
    let logits = model.forward_logits(&Tensor::stack(&pixels, 0)?)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
    for ((name, want_top3, want_p), p) in NATURAL.iter().zip(&probs) {
        let top = top_k(p, 3);
        let top_p: Vec<f32> = top.iter().map(|&i| p[i]).collect();
        println!("{name}: top-3 {top:?} p {top_p:.3?} (reference {want_top3:?} p {want_p:.3?})");
        assert!(
            want_top3.contains(&top[0]),
            "{name}: top-1 {} not in the reference top-3 {want_top3:?}",
            top[0]
        );
    }
    Ok(())
}

// ---- The tiny random network (same code path, fast) ----

use warmstart::backbones::efficientnet::{tiny_config, write_tiny_efficientnet};

fn tiny(dir: &Path, mode: WeightsMode) -> candle_core::Result<EfficientNetLite> {
    EfficientNetLite::load_dir(dir, LiteVariant::Lite0, mode, &Device::Cpu)
}

/// Deterministic pseudo-random pixels in [-1, 1).
fn pixels(b: usize, res: usize, seed: u32) -> candle_core::Result<Tensor> {
    let n = b * 3 * res * res;
    let v: Vec<f32> = (0..n as u32)
        .map(|i| {
            ((i.wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503))
                >> 8)
                % 2048) as f32
                / 1024.0
                - 1.0
        })
        .collect();
    Tensor::from_vec(v, (b, 3, res, res), &Device::Cpu)
}

fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

#[test]
fn tiny_network_loads_through_the_same_path_and_is_fast() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tiny_efficientnet(dir.path(), 0)?;
    let model = tiny(dir.path(), WeightsMode::Frozen)?;
    assert_eq!(model.config(), &tiny_config());
    assert_eq!(
        (
            model.resolution(),
            model.embedding_dim(),
            model.num_blocks()
        ),
        (32, 64, 7)
    );
    assert!(model.named_vars().is_empty(), "frozen: no Vars");
    let x = pixels(16, 32, 1)?;
    model.forward(
        &Batch::Image {
            pixels: x.narrow(0, 0, 2)?,
        },
        false,
    )?;
    let t = std::time::Instant::now();
    let f = model.forward(&Batch::Image { pixels: x }, false)?;
    let elapsed = t.elapsed();
    println!("tiny forward of 16 images: {elapsed:?}");
    assert!(elapsed.as_secs_f64() < 0.5, "tiny forward took {elapsed:?}");
    assert_eq!(f.dims(), [16, 64]);
    let v = f.to_vec2::<f32>()?;
    assert!(v.iter().flatten().all(|x| x.is_finite()));
    assert!(v.iter().flatten().any(|&x| x > 0.0), "features all zero");
    assert_ne!(v[0], v[1], "different images must give different features");

    // Same seed, same weights; another seed, other weights.
    let again = tempfile::tempdir()?;
    write_tiny_efficientnet(again.path(), 0)?;
    let other = tempfile::tempdir()?;
    write_tiny_efficientnet(other.path(), 1)?;
    let x = pixels(2, 32, 2)?;
    let f0 = model.forward(&Batch::Image { pixels: x.clone() }, false)?;
    let f1 = tiny(again.path(), WeightsMode::Frozen)?
        .forward(&Batch::Image { pixels: x.clone() }, false)?;
    let f2 =
        tiny(other.path(), WeightsMode::Frozen)?.forward(&Batch::Image { pixels: x }, false)?;
    assert_eq!(max_diff(&f0, &f1)?, 0.0);
    assert!(max_diff(&f0, &f2)? > 1e-3);
    Ok(())
}

#[test]
fn every_trainable_var_gets_a_gradient_and_a_block() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tiny_efficientnet(dir.path(), 3)?;
    let model = tiny(dir.path(), WeightsMode::Trainable)?;
    let vars = model.named_vars();
    // 10 blocks: the first without expansion (2 conv+BN), 9 with (3 each), plus stem and head;
    // each conv+BN contributes kernel, gamma, beta.
    assert_eq!(vars.len(), (2 + 9 * 3 + 2) * 3);
    let count: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(count, tiny_config().num_parameters());
    // The real sizes (counted from the .pth files, classifier included): 4.65M, 5.42M, 6.09M.
    let fc = 1280 * 1000 + 1000;
    for (variant, total) in [
        (LiteVariant::Lite0, 4_652_008),
        (LiteVariant::Lite1, 5_416_680),
        (LiteVariant::Lite2, 6_092_072),
    ] {
        assert_eq!(variant.config().num_parameters() + fc, total, "{variant:?}");
    }
    let feats = model.forward(
        &Batch::Image {
            pixels: pixels(4, 32, 3)?,
        },
        true,
    )?;
    let loss = feats.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let mut stages = std::collections::BTreeSet::new();
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
        let block = model.block_of(name);
        if name.starts_with("_conv_stem.") || name.starts_with("_bn0.") {
            assert_eq!(block, None, "{name}");
        } else if name.starts_with("_conv_head.") || name.starts_with("_bn1.") {
            assert_eq!(block, Some(6), "{name}");
        } else {
            let b = block.unwrap_or_else(|| panic!("{name} has no block"));
            assert!(b < model.num_blocks());
            stages.insert(b);
        }
    }
    assert_eq!(stages.len(), 7, "every stage owns weights: {stages:?}");
    // Blocks are numbered bottom-up: the first block is stage 0, the last stage 6.
    assert_eq!(model.block_of("_blocks.0._depthwise_conv.weight"), Some(0));
    assert_eq!(model.block_of("_blocks.9._project_conv.weight"), Some(6));
    assert_eq!(model.block_of("_blocks.99._project_conv.weight"), None);
    assert_eq!(model.block_of("_fc.weight"), None);
    Ok(())
}

#[test]
fn fast_kernels_match_candle_stock_ops_in_value_and_gradient() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tiny_efficientnet(dir.path(), 4)?;
    let mut model = tiny(dir.path(), WeightsMode::Trainable)?;
    // Odd, non-square input: exercises asymmetric SAME padding everywhere.
    let x = pixels(3, 37, 4)?.narrow(3, 0, 29)?;
    let mut results = Vec::new();
    for kernels in [Kernels::Fast, Kernels::Stock] {
        model.set_kernels(kernels);
        let f = model.forward(&Batch::Image { pixels: x.clone() }, false)?;
        let grads = f.sqr()?.mean_all()?.backward()?;
        results.push((f, grads));
    }
    let (fast, stock) = (&results[0], &results[1]);
    let d = max_diff(&fast.0, &stock.0)?;
    assert!(d < 1e-4, "features differ by {d}");
    for (name, var) in model.named_vars() {
        let (a, b) = (
            fast.1.get(var.as_tensor()).unwrap(),
            stock.1.get(var.as_tensor()).unwrap(),
        );
        let scale = b
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
            .max(1e-3);
        let d = max_diff(a, b)?;
        assert!(
            d / scale < 1e-3,
            "{name}: gradients differ by {d} (scale {scale})"
        );
    }
    Ok(())
}

#[test]
fn trainable_equals_frozen_and_stochastic_depth_only_in_training() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tiny_efficientnet(dir.path(), 5)?;
    let frozen = tiny(dir.path(), WeightsMode::Frozen)?;
    let trainable = tiny(dir.path(), WeightsMode::Trainable)?;
    let batch = Batch::Image {
        pixels: pixels(8, 32, 5)?,
    };
    let a = frozen.forward(&batch, false)?;
    assert!(max_diff(&a, &trainable.forward(&batch, false)?)? < 1e-5);
    assert_eq!(
        max_diff(&a, &frozen.forward(&batch, false)?)?,
        0.0,
        "inference is deterministic"
    );
    // Training mode drops residual branches per example at random, reproducibly per seed.
    trainable.seed(11);
    let t1 = trainable.forward(&batch, true)?;
    trainable.seed(11);
    let t2 = trainable.forward(&batch, true)?;
    let t3 = trainable.forward(&batch, true)?;
    assert_eq!(max_diff(&t1, &t2)?, 0.0);
    assert!(max_diff(&t1, &a)? > 0.0 && max_diff(&t2, &t3)? > 0.0);
    Ok(())
}

#[test]
fn lite1_and_lite2_load_and_agree_with_lite0_on_natural_images() -> anyhow::Result<()> {
    let data = test_data_dir();
    for variant in [LiteVariant::Lite1, LiteVariant::Lite2] {
        let pth = models_dir().join(variant.id()).join("weights.pth");
        if !pth.is_file()
            || NATURAL
                .iter()
                .any(|(name, _, _)| !data.join(name).is_file())
        {
            assert!(
                !ci(),
                "CI=true but {} or the test images are missing",
                pth.display()
            );
            eprintln!("SKIP: {} or test images missing", pth.display());
            continue;
        }
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink(&pth, dir.path().join("weights.pth"))?;
        let model =
            EfficientNetLite::load_dir(dir.path(), variant, WeightsMode::Frozen, &Device::Cpu)?;
        let res = model.resolution();
        assert_eq!((res, model.embedding_dim()), (variant.resolution(), 1280));
        let mut pixels = Vec::new();
        for (name, _, _) in NATURAL {
            let img = image::decode(&std::fs::read(data.join(name))?, image::DEFAULT_MAX_PIXELS)?;
            pixels.push(preprocess::to_tensor(&img, res)?);
        }
        let probs =
            candle_nn::ops::softmax_last_dim(&model.forward_logits(&Tensor::stack(&pixels, 0)?)?)?
                .to_vec2::<f32>()?;
        for ((name, lite0_top3, _), p) in NATURAL.iter().zip(&probs) {
            let top = top_k(p, 3);
            println!(
                "{variant:?} {name} at {res}px: top-3 {top:?} p {:.3?}",
                top.iter().map(|&i| p[i]).collect::<Vec<_>>()
            );
            // No PyTorch reference for these sizes: they must at least agree with Lite0's.
            assert!(
                lite0_top3.contains(&top[0]),
                "{variant:?} {name}: top-1 {} not in {lite0_top3:?}",
                top[0]
            );
        }
    }
    Ok(())
}

#[test]
fn fine_tuned_weights_round_trip_through_tensors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tiny_efficientnet(dir.path(), 6)?;
    let mut model = tiny(dir.path(), WeightsMode::Trainable)?;
    model.set_drop_connect_rate(0.0);
    let batch = Batch::Image {
        pixels: pixels(2, 32, 6)?,
    };
    let before = model.forward(&batch, false)?;
    // One crude SGD step on every Var, then export and reload frozen.
    let grads = model.forward(&batch, true)?.sqr()?.mean_all()?.backward()?;
    for (_, var) in model.named_vars() {
        let g = grads.get(var.as_tensor()).expect("grad");
        var.set(&(var.as_tensor() - (g * 0.5)?)?)?;
    }
    let after = model.forward(&batch, false)?;
    assert!(
        max_diff(&before, &after)? > 1e-4,
        "the step changed nothing"
    );
    let tensors = model.tensors()?;
    let reloaded =
        EfficientNetLite::from_tensors(&tensors, tiny_config(), WeightsMode::Frozen, &Device::Cpu)?;
    assert!(max_diff(&after, &reloaded.forward(&batch, false)?)? < 1e-5);
    // With stochastic depth off, training mode is deterministic too.
    assert_eq!(
        max_diff(&model.forward(&batch, true)?, &model.forward(&batch, true)?)?,
        0.0
    );
    let empty = model.forward(
        &Batch::Image {
            pixels: pixels(1, 32, 0)?.narrow(0, 0, 0)?,
        },
        false,
    )?;
    assert_eq!(empty.dims(), [0, 64]);
    Ok(())
}

/// The composite is exactly its parts side by side, each at its own resolution: Lite0's
/// features of the 224 px view, then Lite2's of the 260 px view.
#[test]
fn the_composite_concatenates_lite0_at_224_and_lite2_at_260() -> anyhow::Result<()> {
    use warmstart::backbones::registry::Registry;
    let models = models_dir();
    let ready = ["efficientnet-lite0", "efficientnet-lite2"]
        .iter()
        .all(|id| models.join(id).join("weights.pth").is_file());
    if !ready {
        assert!(!ci(), "CI=true but Lite0 or Lite2 is missing");
        eprintln!("SKIP: Lite0 or Lite2 missing");
        return Ok(());
    }
    let registry = Registry::new(&models, Device::Cpu);
    let composite = registry.frozen("efficientnet-lite0+lite2")?;
    // Three pictures of different sizes and aspect ratios, so each resolution resizes
    // and crops differently.
    let images: Vec<::image::RgbImage> = [(300u32, 200u32), (64, 64), (120, 500)]
        .iter()
        .map(|&(w, h)| {
            ::image::RgbImage::from_fn(w, h, |x, y| {
                ::image::Rgb([
                    (x * 7 % 256) as u8,
                    (y * 3 % 256) as u8,
                    ((x + y) % 256) as u8,
                ])
            })
        })
        .collect();
    let both = composite.net.forward(
        &composite.prep.image_batch(&images, None, &Device::Cpu)?,
        false,
    )?;
    assert_eq!(both.dims(), &[images.len(), 2560]);
    assert_eq!(composite.prep.resolution(), Some(260));
    let mut parts = Vec::new();
    for id in ["efficientnet-lite0", "efficientnet-lite2"] {
        let part = registry.frozen(id)?;
        let batch = part.prep.image_batch(&images, None, &Device::Cpu)?;
        parts.push(part.net.forward(&batch, false)?);
    }
    assert_eq!(max_diff(&both, &Tensor::cat(&parts, 1)?)?, 0.0);
    Ok(())
}
