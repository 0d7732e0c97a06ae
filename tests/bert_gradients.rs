//! Gradient coverage of the text backbone: with trainable weights and a linear head, one
//! cross-entropy backward must reach EVERY weight (candle's fused layer norm / softmax would
//! silently stop gradients), and an AdamW step must lower the loss. Runs on the tiny random
//! BERT always, and on the real MiniLM when its weights are present. Also: the differentiable
//! layers against candle's fused kernels and finite differences, the weight round-trip, and
//! the tiny model's speed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use warmstart::backbones::bert::ops;
use warmstart::backbones::bert::text::TextEncoder;
use warmstart::backbones::bert::{Bert, write_tiny_bert};
use warmstart::backbones::{Backbone, Batch, WeightsMode};

const TEXTS: [&str; 4] = [
    "Great!",
    "The new movie is awesome and I loved every minute of it.",
    "This was the worst purchase I have ever made, never again.",
    "A man is eating food.",
];
const LABELS: [u32; 4] = [0, 0, 1, 2];

/// The real MiniLM folder (skip outside CI when missing, fail in CI): see `tests/common`.
fn minilm_dir() -> Option<PathBuf> {
    common::real_models_dir().map(|d| d.join("minilm-l6"))
}

fn tiny_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    write_tiny_bert(dir.path(), 7)?;
    Ok(dir)
}

/// A linear head `[classes, dim]` + bias, as `Var`s.
struct Head {
    w: Var,
    b: Var,
}

impl Head {
    fn new(dim: usize, classes: usize) -> Result<Head> {
        let w = Tensor::randn(0f32, 0.1, (classes, dim), &Device::Cpu)?;
        Ok(Head {
            w: Var::from_tensor(&w)?,
            b: Var::zeros(classes, DType::F32, &Device::Cpu)?,
        })
    }

    fn loss(&self, bert: &Bert, batch: &Batch, train: bool) -> Result<Tensor> {
        let feats = bert.forward(batch, train)?;
        let logits = feats.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        let target = Tensor::new(&LABELS, &Device::Cpu)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &target)?)
    }
}

/// Backward through backbone + head; every var must get a gradient that is not all zeros.
fn check_gradient_coverage(dir: &Path, expected_vars: usize) -> Result<()> {
    let bert = Bert::load(dir, None, WeightsMode::Trainable, &Device::Cpu)?;
    let vars = bert.named_vars();
    ensure!(
        vars.len() == expected_vars,
        "{} vars, expected {expected_vars}",
        vars.len()
    );
    let enc = TextEncoder::load(dir)?;
    let batch = enc.encode(&TEXTS, 128, &Device::Cpu)?;
    let lens: Vec<usize> = TEXTS.iter().map(|t| enc.token_count(t)).collect();
    ensure!(
        lens.windows(2).any(|w| w[0] != w[1]),
        "texts must differ in length: {lens:?}"
    );
    let head = Head::new(bert.embedding_dim(), 3)?;
    bert.seed_dropout(1);
    let loss = head.loss(&bert, &batch, true)?;
    let grads = loss.backward()?;
    let head_vars = [
        ("head.weight".to_string(), head.w.clone()),
        ("head.bias".into(), head.b.clone()),
    ];
    let mut missing = Vec::new();
    for (name, var) in vars.iter().chain(head_vars.iter()) {
        match grads.get(var) {
            None => missing.push(format!("{name}: no gradient")),
            Some(g) => {
                ensure!(
                    g.dims() == var.dims(),
                    "{name}: gradient shape {:?}",
                    g.dims()
                );
                let mag = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                if !(mag > 0.0 && mag.is_finite()) {
                    missing.push(format!("{name}: gradient |sum| = {mag}"));
                }
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "weights without gradient:\n{}",
        missing.join("\n")
    );

    // One AdamW step on backbone + head lowers the (dropout-free) loss.
    let before = head.loss(&bert, &batch, false)?.to_scalar::<f32>()?;
    let mut all: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
    all.extend([head.w.clone(), head.b.clone()]);
    let params = ParamsAdamW {
        lr: 1e-3,
        ..Default::default()
    };
    let mut opt = AdamW::new(all, params)?;
    opt.backward_step(&head.loss(&bert, &batch, false)?)?;
    let after = head.loss(&bert, &batch, false)?.to_scalar::<f32>()?;
    eprintln!("loss before {before:.5}, after one AdamW step {after:.5}");
    ensure!(
        after < before,
        "AdamW step did not lower the loss: {before} -> {after}"
    );
    Ok(())
}

#[test]
fn tiny_bert_every_weight_gets_a_gradient() -> Result<()> {
    let dir = tiny_dir()?;
    // 3 embedding tables + embedding LayerNorm (2) + 16 per layer, 2 layers.
    check_gradient_coverage(dir.path(), 5 + 2 * 16)
}

#[test]
fn minilm_every_weight_gets_a_gradient() -> Result<()> {
    let Some(dir) = minilm_dir() else {
        return Ok(());
    };
    check_gradient_coverage(&dir, 5 + 6 * 16)
}

#[test]
fn tiny_bert_loads_frozen_and_names_blocks() -> Result<()> {
    let dir = tiny_dir()?;
    let bert = Bert::load(dir.path(), None, WeightsMode::Frozen, &Device::Cpu)?;
    ensure!(bert.named_vars().is_empty());
    ensure!(bert.num_blocks() == 2 && bert.embedding_dim() == 32);
    ensure!(bert.block_of("embeddings.word_embeddings.weight").is_none());
    ensure!(bert.block_of("bert.embeddings.LayerNorm.bias").is_none());
    ensure!(bert.block_of("encoder.layer.0.output.dense.weight") == Some(0));
    ensure!(bert.block_of("bert.encoder.layer.1.attention.self.query.bias") == Some(1));
    ensure!(bert.block_of("pooler.dense.weight") == Some(1));
    let trainable = Bert::load(dir.path(), None, WeightsMode::Trainable, &Device::Cpu)?;
    let blocks: Vec<Option<usize>> = trainable
        .named_vars()
        .iter()
        .map(|(n, _)| trainable.block_of(n))
        .collect();
    ensure!(blocks.iter().filter(|b| b.is_none()).count() == 5);
    ensure!(blocks.iter().filter(|b| **b == Some(1)).count() == 16);
    Ok(())
}

#[test]
fn trainable_weights_round_trip_through_safetensors() -> Result<()> {
    let dir = tiny_dir()?;
    let enc = TextEncoder::load(dir.path())?;
    let batch = enc.encode(&TEXTS, 128, &Device::Cpu)?;
    let bert = Bert::load(dir.path(), None, WeightsMode::Trainable, &Device::Cpu)?;
    let base = bert.forward(&batch, false)?;
    // Change every weight a little, as fine-tuning would.
    for (_, var) in bert.named_vars() {
        let noise = Tensor::randn(0f32, 0.05, var.shape(), &Device::Cpu)?;
        var.set(&(var.as_tensor() + noise)?)?;
    }
    let tuned = bert.forward(&batch, false)?;
    let saved = dir.path().join("tuned.safetensors");
    save(&bert.named_vars(), &saved, |_| true)?;
    let reloaded = Bert::load(dir.path(), Some(&saved), WeightsMode::Frozen, &Device::Cpu)?;
    let again = reloaded.forward(&batch, false)?;
    let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    };
    ensure!(
        diff(&tuned, &again)? < 1e-6,
        "reloaded weights differ: {}",
        diff(&tuned, &again)?
    );
    ensure!(
        diff(&base, &again)? > 1e-3,
        "the saved weights were not the tuned ones"
    );
    Ok(())
}

fn save(vars: &[(String, Var)], path: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> = vars
        .iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    Ok(candle_core::safetensors::save(&map, path)?)
}

#[test]
fn partial_prefixed_and_wrong_weight_files() -> Result<()> {
    let dir = tiny_dir()?;
    let enc = TextEncoder::load(dir.path())?;
    let batch = enc.encode(&TEXTS, 128, &Device::Cpu)?;
    let bert = Bert::load(dir.path(), None, WeightsMode::Trainable, &Device::Cpu)?;
    let base = bert.forward(&batch, false)?;
    for (name, var) in bert.named_vars() {
        if name.starts_with("encoder.layer.1.") {
            var.set(&(var.as_tensor() * 1.5)?)?;
        }
    }
    let tuned = bert.forward(&batch, false)?;
    // Only the top block saved: the rest comes from the base model.
    let partial = dir.path().join("top.safetensors");
    save(&bert.named_vars(), &partial, |n| {
        n.starts_with("encoder.layer.1.")
    })?;
    let top = Bert::load(
        dir.path(),
        Some(&partial),
        WeightsMode::Frozen,
        &Device::Cpu,
    )?;
    ensure!(max_diff(&top.forward(&batch, false)?, &tuned)? < 1e-6);
    ensure!(max_diff(&base, &tuned)? > 1e-3);
    // A `bert.`-prefixed file loads the same, and its vars keep the prefix.
    let prefixed: Vec<(String, Var)> = bert
        .named_vars()
        .into_iter()
        .map(|(n, v)| (format!("bert.{n}"), v))
        .collect();
    let pdir = tempfile::tempdir()?;
    std::fs::copy(
        dir.path().join("config.json"),
        pdir.path().join("config.json"),
    )?;
    save(&prefixed, &pdir.path().join("model.safetensors"), |_| true)?;
    let p = Bert::load(pdir.path(), None, WeightsMode::Trainable, &Device::Cpu)?;
    ensure!(max_diff(&p.forward(&batch, false)?, &tuned)? < 1e-6);
    let names: Vec<String> = p.named_vars().into_iter().map(|(n, _)| n).collect();
    ensure!(names.iter().all(|n| n.starts_with("bert.")), "{names:?}");
    ensure!(p.block_of("bert.encoder.layer.1.output.dense.weight") == Some(1));
    // A file holding none of the backbone's tensors is rejected, not silently ignored.
    let wrong = dir.path().join("head.safetensors");
    let head = [(
        "head.weight".to_string(),
        Var::zeros((3, 32), DType::F32, &Device::Cpu)?,
    )];
    save(&head, &wrong, |_| true)?;
    let err = Bert::load(dir.path(), Some(&wrong), WeightsMode::Frozen, &Device::Cpu);
    ensure!(
        err.is_err(),
        "a weights file without BERT tensors was accepted"
    );
    Ok(())
}

#[test]
fn tiny_bert_is_fast_and_dropout_only_in_training() -> Result<()> {
    let dir = tiny_dir()?;
    let enc = TextEncoder::load(dir.path())?;
    let bert = Bert::load(dir.path(), None, WeightsMode::Frozen, &Device::Cpu)?;
    let texts: Vec<String> = (0..32)
        .map(|i| format!("Sample text number {i}, quite short."))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ascii: String = (0x20u8..0x7f).map(char::from).collect();
    for t in refs
        .iter()
        .copied()
        .chain([ascii.as_str(), "Zebra-crossing: 42% off!"])
    {
        let ids = enc.token_ids(t);
        ensure!(!ids.contains(&1), "[UNK] in {t:?}: {ids:?}");
    }
    let batch = enc.encode(&refs, 128, &Device::Cpu)?;
    let start = Instant::now();
    let eval = bert.forward(&batch, false)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    eprintln!("tiny BERT: forward of 32 texts in {ms:.1} ms");
    ensure!(ms < 500.0, "tiny BERT forward took {ms} ms");
    ensure!(eval.dims() == [32, 32]);
    let eval2 = bert.forward(&batch, false)?;
    let d = |a: &Tensor, b: &Tensor| -> Result<f32> { Ok((a - b)?.abs()?.max_all()?.to_scalar()?) };
    ensure!(
        d(&eval, &eval2)? == 0.0,
        "eval forward is not deterministic"
    );
    bert.seed_dropout(3);
    let t1 = bert.forward(&batch, true)?;
    bert.seed_dropout(3);
    let t2 = bert.forward(&batch, true)?;
    ensure!(d(&t1, &t2)? == 0.0, "seeded dropout is not reproducible");
    ensure!(d(&t1, &eval)? > 1e-3, "train=true did not apply dropout");
    Ok(())
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

#[test]
fn layers_forward_match_candle_fused_ops() -> Result<()> {
    let dev = Device::Cpu;
    let x = (Tensor::randn(0f32, 3.0, (4, 7, 48), &dev)? + 1.5)?;
    let w = Tensor::randn(1f32, 0.3, 48, &dev)?;
    let b = Tensor::randn(0f32, 0.3, 48, &dev)?;
    let fused = candle_nn::ops::layer_norm(&x, &w, &b, 1e-12)?;
    for (name, ours) in [
        ("custom", ops::layer_norm(&x, &w, &b, 1e-12)?),
        ("composed", ops::layer_norm_composed(&x, &w, &b, 1e-12)?),
    ] {
        let d = max_diff(&ours, &fused)?;
        ensure!(d < 1e-5, "layer norm ({name}) differs from candle's by {d}");
    }
    let s = (Tensor::randn(0f32, 4.0, (3, 5, 33), &dev)? - 100.0)?;
    let fused = candle_nn::ops::softmax_last_dim(&s)?;
    for (name, ours) in [
        ("custom", ops::softmax_last_dim(&s)?),
        ("composed", ops::softmax_last_dim_composed(&s)?),
    ] {
        let d = max_diff(&ours, &fused)?;
        ensure!(d < 1e-5, "softmax ({name}) differs from candle's by {d}");
    }
    let d = max_diff(&ops::gelu(&x)?, &x.gelu_erf()?)?;
    ensure!(d < 1e-5, "gelu differs from candle's gelu_erf by {d}");
    Ok(())
}

/// Analytic gradient of `sum(f(inputs) * r)` w.r.t. each input vs central differences (f64).
fn check_grads(
    name: &str,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let dev = Device::Cpu;
    let vars: Vec<Var> = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let r = Tensor::randn(0f64, 1.0, out.shape(), &dev)?;
    let grads = (out * &r)?.sum_all()?.backward()?;
    let eps = 1e-6;
    for (i, var) in vars.iter().enumerate() {
        let g = grads
            .get(var)
            .with_context(|| format!("{name}: no gradient for input {i}"))?;
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let base = inputs[i].flatten_all()?.to_vec1::<f64>()?;
        for j in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut args = inputs.to_vec();
                args[i] = Tensor::from_vec(v, inputs[i].shape(), &dev)?;
                Ok((f(&args)? * &r)?.sum_all()?.to_scalar::<f64>()?)
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let err = (numeric - g[j]).abs();
            ensure!(
                err < 1e-5 * (1.0 + numeric.abs()),
                "{name}: d/d input{i}[{j}] analytic {} vs numeric {numeric}",
                g[j]
            );
        }
    }
    Ok(())
}

#[test]
fn layers_gradients_match_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0.5f64, 2.0, (3, 6), &dev)?;
    let w = Tensor::randn(1f64, 0.5, 6, &dev)?;
    let b = Tensor::randn(0f64, 0.5, 6, &dev)?;
    let ln = |a: &[Tensor]| ops::layer_norm(&a[0], &a[1], &a[2], 1e-5);
    check_grads("layer_norm", &[x.clone(), w.clone(), b.clone()], &ln)?;
    let lnc = |a: &[Tensor]| ops::layer_norm_composed(&a[0], &a[1], &a[2], 1e-5);
    check_grads("layer_norm_composed", &[x.clone(), w, b], &lnc)?;
    check_grads("softmax", std::slice::from_ref(&x), &|a| {
        ops::softmax_last_dim(&a[0])
    })?;
    check_grads("softmax_composed", std::slice::from_ref(&x), &|a| {
        ops::softmax_last_dim_composed(&a[0])
    })?;
    check_grads("gelu", std::slice::from_ref(&x), &|a| ops::gelu(&a[0]))?;
    // Inputs reached through a non-contiguous view still get the right gradient.
    check_grads("softmax(transposed)", std::slice::from_ref(&x), &|a| {
        ops::softmax_last_dim(&a[0].t()?)
    })?;
    check_grads("layer_norm(transposed)", &[x], &|a| {
        let n = a[0].dim(D::Minus2)?;
        let ones = Tensor::ones(n, DType::F64, &Device::Cpu)?;
        ops::layer_norm(&a[0].t()?, &ones, &ones.zeros_like()?, 1e-5)
    })?;
    Ok(())
}
