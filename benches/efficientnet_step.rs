//! Fine-tuning step and feature-extraction timings for EfficientNet-Lite0 on CPU, with the
//! fast kernels and with candle's stock ops (grouped conv2d, clamp) for comparison.
//!
//! `cargo bench --bench efficientnet_step [-- --steps N --batch B --forward-batch F --stock]`
//! (real weights from `$WARMSTART_MODELS_DIR` or `./models`; `--stock` adds the slow stock
//! kernels, `--tiny` times the tiny random network instead).

use candle_core::{Device, Tensor};
use std::time::Instant;
use warmstart::backbones::efficientnet::{
    EfficientNetLite, Kernels, LiteVariant, write_tiny_efficientnet,
};
use warmstart::backbones::{Backbone, Batch, WeightsMode};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn load(dir: &std::path::Path, mode: WeightsMode) -> anyhow::Result<EfficientNetLite> {
    Ok(EfficientNetLite::load_dir(
        dir,
        LiteVariant::Lite0,
        mode,
        &Device::Cpu,
    )?)
}

/// One step: forward (train mode), a linear probe + squared loss, backward over every Var.
fn step(model: &EfficientNetLite, x: &Tensor, probe: &Tensor) -> anyhow::Result<()> {
    let feats = model.forward(&Batch::Image { pixels: x.clone() }, true)?;
    let loss = feats.matmul(probe)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let missing = model
        .named_vars()
        .iter()
        .filter(|(_, v)| grads.get(v.as_tensor()).is_none())
        .count();
    anyhow::ensure!(missing == 0, "{missing} vars without gradient");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let steps = arg("--steps", 3);
    let batch = arg("--batch", 8);
    let fwd_batch = arg("--forward-batch", 32);
    let tmp = tempfile::tempdir()?;
    let dir = if flag("--tiny") {
        write_tiny_efficientnet(tmp.path(), 0)?;
        tmp.path().to_path_buf()
    } else {
        let models = std::env::var_os("WARMSTART_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "models".into());
        let src = models.join("efficientnet-lite0");
        // Convert into a private folder: never write into the shared models folder.
        std::os::unix::fs::symlink(
            std::fs::canonicalize(src.join("weights.pth"))?,
            tmp.path().join("weights.pth"),
        )?;
        tmp.path().to_path_buf()
    };
    let res = load(&dir, WeightsMode::Frozen)?.resolution();
    println!(
        "threads: {}, resolution {res}",
        candle_core::utils::get_num_threads()
    );
    let kernels: &[Kernels] = if flag("--stock") {
        &[Kernels::Fast, Kernels::Stock]
    } else {
        &[Kernels::Fast]
    };
    for &k in kernels {
        let mut frozen = load(&dir, WeightsMode::Frozen)?;
        frozen.set_kernels(k);
        let x = Tensor::randn(0f32, 1.0, (fwd_batch, 3, res, res), &Device::Cpu)?;
        frozen.forward(
            &Batch::Image {
                pixels: x.narrow(0, 0, 2)?,
            },
            false,
        )?; // warm-up
        let t = Instant::now();
        let f = frozen.forward(&Batch::Image { pixels: x }, false)?;
        f.sum_all()?.to_scalar::<f32>()?;
        println!(
            "{k:?}: frozen forward of {fwd_batch} images: {:.3} s",
            t.elapsed().as_secs_f64()
        );

        let mut model = load(&dir, WeightsMode::Trainable)?;
        model.set_kernels(k);
        let x = Tensor::randn(0f32, 1.0, (batch, 3, res, res), &Device::Cpu)?;
        let probe = Tensor::randn(0f32, 0.05, (model.embedding_dim(), 10), &Device::Cpu)?;
        step(&model, &x, &probe)?; // warm-up
        let t = Instant::now();
        for _ in 0..steps {
            step(&model, &x, &probe)?;
        }
        let per = t.elapsed().as_secs_f64() / steps as f64;
        println!(
            "{k:?}: fine-tuning step (batch {batch}, all {} vars trainable): {per:.3} s",
            model.named_vars().len()
        );
    }
    Ok(())
}
