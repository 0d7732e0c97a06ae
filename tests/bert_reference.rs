//! The text backbone against PyTorch: all-MiniLM-L6-v2 token ids, sentence embeddings and
//! cosines from `shared/reference/minilm_reference.json` (sentence-transformers pipeline),
//! and batch/padding invariance. Needs the real weights (skipped without them unless CI=true).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use warmstart::backbones::bert::Bert;
use warmstart::backbones::bert::text::TextEncoder;
use warmstart::backbones::{Backbone, WeightsMode};

/// The reference JSON, copied from `/work/shared/reference/minilm_reference.json` so that the
/// test does not depend on a path outside the crate.
const REFERENCE: &str = r#"{
 "sentences": ["A man is eating food.", "The new movie is awesome!",
               "This was the worst purchase I have ever made."],
 "input_ids_0": [101, 1037, 2158, 2003, 5983, 2833, 1012, 102],
 "embedding_first8": [
  [0.03324, 0.00441, -0.00628, 0.04838, -0.1387, -0.03362, 0.10113, -0.05438],
  [-0.08494, -0.08437, 0.00618, -0.03311, 0.00013, -0.03228, -0.04653, -0.03383],
  [-0.06169, 0.11352, -0.01354, 0.01315, -0.00959, -0.03477, -0.00119, 0.01807]
 ],
 "cosine_0_1": -0.04234,
 "cosine_1_2": 0.12303
}"#;

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    input_ids_0: Vec<u32>,
    embedding_first8: Vec<Vec<f32>>,
    cosine_0_1: f32,
    cosine_1_2: f32,
}

/// The real MiniLM folder (skip outside CI when missing, fail in CI): see `tests/common`.
fn minilm_dir() -> Option<PathBuf> {
    common::real_models_dir().map(|d| d.join("minilm-l6"))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn embed(bert: &Bert, enc: &TextEncoder, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let batch = enc.encode(texts, 256, &Device::Cpu)?;
    Ok(bert.forward(&batch, false)?.to_vec2::<f32>()?)
}

#[test]
fn minilm_matches_pytorch_reference() -> Result<()> {
    let Some(dir) = minilm_dir() else {
        return Ok(());
    };
    let r: Reference = serde_json::from_str(REFERENCE)?;
    let enc = TextEncoder::load(&dir)?;
    let bert = Bert::load(&dir, None, WeightsMode::Frozen, &Device::Cpu)?;
    assert_eq!(bert.embedding_dim(), 384);
    assert_eq!(bert.num_blocks(), 6);

    assert_eq!(enc.token_ids(&r.sentences[0]), r.input_ids_0);
    let texts: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    let emb = embed(&bert, &enc, &texts)?;
    let mut max_diff = 0f32;
    for (row, want) in emb.iter().zip(&r.embedding_first8) {
        assert_eq!(row.len(), 384);
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embedding norm {norm}");
        for (got, want) in row.iter().zip(want) {
            max_diff = max_diff.max((got - want).abs());
        }
    }
    let c01 = cosine(&emb[0], &emb[1]);
    let c12 = cosine(&emb[1], &emb[2]);
    eprintln!(
        "max |embedding - reference| = {max_diff:.2e}; cosines {c01:.5} (ref {}), {c12:.5} (ref {})",
        r.cosine_0_1, r.cosine_1_2
    );
    assert!(
        max_diff < 1e-3,
        "embeddings differ from reference by {max_diff}"
    );
    assert!((c01 - r.cosine_0_1).abs() < 1e-3, "cosine 0-1 {c01}");
    assert!((c12 - r.cosine_1_2).abs() < 1e-3, "cosine 1-2 {c12}");
    Ok(())
}

#[test]
fn minilm_padding_does_not_change_embeddings() -> Result<()> {
    let Some(dir) = minilm_dir() else {
        return Ok(());
    };
    let enc = TextEncoder::load(&dir)?;
    let bert = Bert::load(&dir, None, WeightsMode::Frozen, &Device::Cpu)?;
    let texts = [
        "Short.",
        "A somewhat longer sentence about a man eating food in a restaurant.",
        "The new movie is awesome!",
    ];
    let batched = embed(&bert, &enc, &texts)?;
    let mut max_diff = 0f32;
    for (text, row) in texts.iter().zip(&batched) {
        let alone = embed(&bert, &enc, &[text])?;
        for (a, b) in alone[0].iter().zip(row) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    eprintln!("max |batched - one at a time| = {max_diff:.2e}");
    assert!(max_diff < 1e-4, "padding changed embeddings by {max_diff}");
    Ok(())
}

#[test]
fn minilm_truncates_and_pads_to_longest() -> Result<()> {
    let Some(dir) = minilm_dir() else {
        return Ok(());
    };
    let enc = TextEncoder::load(&dir)?;
    let long = "word ".repeat(300);
    let batch = enc.encode(&["hi", &long], 16, &Device::Cpu)?;
    let warmstart::backbones::Batch::Text {
        input_ids,
        attention_mask,
    } = batch
    else {
        anyhow::bail!("not a text batch");
    };
    assert_eq!(input_ids.dims(), &[2, 16]);
    let ids = input_ids.to_vec2::<u32>()?;
    let mask = attention_mask.to_vec2::<u32>()?;
    assert_eq!(&ids[0][..3], &[101, 7632, 102]);
    assert!(ids[0][3..].iter().all(|&i| i == enc.pad_id()));
    assert_eq!(mask[0].iter().sum::<u32>(), 3);
    assert_eq!(
        (ids[1][0], ids[1][15]),
        (101, 102),
        "[CLS] kept, [SEP] kept after cut"
    );
    assert!(mask[1].iter().all(|&m| m == 1));
    assert_eq!(
        enc.token_count(&long),
        302,
        "token_count is before truncation"
    );
    // No fixed-length padding from tokenizer.json: a 3-token text alone stays 3 long.
    let one = enc.encode(&["hi"], 128, &Device::Cpu)?;
    assert_eq!(one.len(), 1);
    let warmstart::backbones::Batch::Text { input_ids, .. } = one else {
        anyhow::bail!("not a text batch");
    };
    assert_eq!(input_ids.dims(), &[1, 3]);
    Ok(())
}

/// Timings (a benchmark, not run by default): frozen forward of 32 sentences of ~12 words,
/// forward+backward of 16 with trainable weights. Run with
/// `cargo test --release --test bert_reference -- --ignored --nocapture minilm_timings`.
#[test]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
fn minilm_timings() -> Result<()> {
    let Some(dir) = minilm_dir() else {
        return Ok(());
    };
    let enc = TextEncoder::load(&dir)?;
    let sentences: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "Review number {i} says the product arrived late but works well and looks nice."
            )
        })
        .collect();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let frozen = Bert::load(&dir, None, WeightsMode::Frozen, &Device::Cpu)?;
    let batch = enc.encode(&texts, 128, &Device::Cpu)?;
    frozen.forward(&batch, false)?;
    let t = Instant::now();
    let runs = 3;
    for _ in 0..runs {
        frozen.forward(&batch, false)?;
    }
    let fwd = t.elapsed().as_secs_f64() / runs as f64;

    let trainable = Bert::load(&dir, None, WeightsMode::Trainable, &Device::Cpu)?;
    let batch16 = enc.encode(&texts[..16], 128, &Device::Cpu)?;
    let target = Tensor::ones((16, 384), candle_core::DType::F32, &Device::Cpu)?;
    let step = || -> Result<()> {
        let out = trainable.forward(&batch16, true)?;
        let loss = (out - &target)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        let (name, var) = &trainable.named_vars()[0];
        grads
            .get(var)
            .with_context(|| format!("no gradient for {name}"))?;
        Ok(())
    };
    step()?;
    let t = Instant::now();
    for _ in 0..runs {
        step()?;
    }
    let train = t.elapsed().as_secs_f64() / runs as f64;
    eprintln!(
        "MiniLM, {} tokens per text: frozen forward of 32 texts {:.0} ms; \
         forward+backward of 16 texts {:.0} ms",
        enc.token_count(texts[0]),
        fwd * 1e3,
        train * 1e3
    );
    Ok(())
}
