//! The tiny random-weight BERT the fast tests use as the `minilm-l6` backbone: the same
//! architecture, tensor names and file layout as all-MiniLM-L6-v2 (`config.json`,
//! `model.safetensors`, `tokenizer.json`), a few thousand parameters.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::BertConfig;

/// Writes a tiny random-weight BERT of the same architecture and file layout as
/// all-MiniLM-L6-v2 into `dir` (`config.json`, `model.safetensors`, `tokenizer.json`):
/// hidden 32, 2 layers, 2 heads, intermediate 64, 128 positions, weights ~N(0, 0.02) from
/// `seed`, layer norms weight 1 bias 0. For fast tests of everything above the backbone.
pub fn write_tiny_bert(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let vocab_size = write_tiny_tokenizer(&dir.join("tokenizer.json"))?;
    let config = BertConfig {
        vocab_size,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 64,
        hidden_act: "gelu".into(),
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        max_position_embeddings: 128,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: "absolute".into(),
        model_type: "bert".into(),
    };
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let tensors = tiny_tensors(&config, seed).map_err(std::io::Error::other)?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))
        .map_err(std::io::Error::other)
}

fn tiny_tensors(c: &BertConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand::Rng;
    let mut rng = StdRng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut normal = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Tensor::from_vec(data, shape, &dev)
    };
    let (h, m) = (c.hidden_size, c.intermediate_size);
    let mut t = HashMap::new();
    let ln = |t: &mut HashMap<String, Tensor>, name: String| -> Result<()> {
        t.insert(format!("{name}.weight"), Tensor::ones(h, DType::F32, &dev)?);
        t.insert(format!("{name}.bias"), Tensor::zeros(h, DType::F32, &dev)?);
        Ok(())
    };
    let position_ids =
        Tensor::arange(0i64, c.max_position_embeddings as i64, &dev)?.unsqueeze(0)?;
    t.insert("embeddings.position_ids".into(), position_ids);
    t.insert(
        "embeddings.word_embeddings.weight".into(),
        normal(&[c.vocab_size, h])?,
    );
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        normal(&[c.max_position_embeddings, h])?,
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        normal(&[c.type_vocab_size, h])?,
    );
    ln(&mut t, "embeddings.LayerNorm".into())?;
    let mut linears = vec![("pooler.dense".to_string(), h, h)];
    for i in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        for s in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            linears.push((format!("{p}.{s}"), h, h));
        }
        linears.push((format!("{p}.intermediate.dense"), m, h));
        linears.push((format!("{p}.output.dense"), h, m));
        ln(&mut t, format!("{p}.attention.output.LayerNorm"))?;
        ln(&mut t, format!("{p}.output.LayerNorm"))?;
    }
    for (name, out_dim, in_dim) in linears {
        t.insert(format!("{name}.weight"), normal(&[out_dim, in_dim])?);
        t.insert(format!("{name}.bias"), normal(&[out_dim])?);
    }
    Ok(t)
}

/// Common English words given whole-word tokens in the tiny vocabulary.
const TINY_WORDS: &str = "the of and to in is was it for on that with as at by this be are \
from or an have not but they his her she he we you i my your our their them its were been \
has had do does did will would can could should may might must shall one two three four \
five six seven eight nine ten all any some no more most many much very so too also just \
only than then there here when where what which who how why if because while after before \
about into over under again out up down off new old good bad great best worst better worse \
first last long short big small high low same other each every few own right left man \
woman people person child time year day week month way thing world life hand part place \
case work home house car food water movie film book product service price quality love \
like hate buy bought made make use used get got go went come came see saw know think say \
said tell told give find found want need feel felt look looked try tried call keep let \
put seem help show play run move live believe happy sad awesome terrible excellent poor \
nice fine ever never always often really well still even back now today eating";

/// Writes a tiny lowercase WordPiece `tokenizer.json` (BERT normaliser and pre-tokeniser,
/// `##` continuation pieces, `[CLS]`/`[SEP]` template): `[PAD]`=0, `[UNK]`, `[CLS]`, `[SEP]`,
/// `[MASK]`, ASCII letters, digits and punctuation, their `##` forms, and common words, so
/// any ASCII text tokenizes without `[UNK]`. Returns the vocabulary size.
pub fn write_tiny_tokenizer(path: &Path) -> std::io::Result<usize> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let singles: Vec<char> = ('a'..='z')
        .chain('0'..='9')
        .chain(
            (0x21u8..=0x7e)
                .map(char::from)
                .filter(|c| c.is_ascii_punctuation()),
        )
        .collect();
    vocab.extend(singles.iter().map(|c| c.to_string()));
    vocab.extend(
        singles
            .iter()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| format!("##{c}")),
    );
    for word in TINY_WORDS.split_whitespace() {
        if !vocab.iter().any(|v| v == word) {
            vocab.push(word.to_string());
        }
    }
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": (0..5).map(|i| special(i, &vocab[i])).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab_map}
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(vocab.len())
}
