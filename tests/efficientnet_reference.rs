//! EfficientNet-Lite0 against the PyTorch reference outputs of
//! `shared/reference/efficientnet_lite0_reference.json` (copied below; real weights, skipped
//! with a notice when they are missing, failing when `CI=true`), and the natural-image check
//! on the scikit-image pictures fetched by `scripts/fetch-test-data.sh`.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
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
        pixels.push(image::to_tensor(&img, 224)?);
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
