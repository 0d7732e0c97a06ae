//! The text backbone: a BERT encoder (all-MiniLM-L6-v2) with sentence-transformers pooling
//! (mean over real tokens, then L2-normalise), written so that it is differentiable end to
//! end: every layer norm, softmax and GELU comes from [`ops`], whose ops carry
//! gradients (candle's fused ones do not), so fine-tuning reaches every weight.

pub mod ops;
pub mod text;
mod tiny;
mod weights;

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::Linear;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::{Backbone, Batch, WeightsMode};
use ops::LayerNorm;
pub use tiny::{write_tiny_bert, write_tiny_tokenizer};
use weights::{Loader, WeightSource};

/// The subset of a Hugging Face BERT `config.json` this implementation reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_model_type() -> String {
    "bert".into()
}

impl BertConfig {
    /// Reads and checks `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            )
        }
        if self.position_embedding_type != "absolute" {
            candle_core::bail!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            )
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Activation {
    /// Exact erf GELU (`"gelu"`), what BERT and all-MiniLM use.
    Gelu,
    /// Tanh-approximated GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => candle_core::bail!("hidden_act {other:?} is not supported"),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => ops::gelu(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// Frozen weights only: query (pre-scaled by `1/sqrt(head_dim)`), key and value stacked
    /// into one `[3H, H]` projection, one matrix product instead of three.
    qkv: Option<Linear>,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// Settings a layer's forward needs besides its weights.
struct Ctx<'a> {
    heads: usize,
    act: Activation,
    hidden_p: f64,
    attn_p: f64,
    rng: Option<&'a mut StdRng>,
}

impl Ctx<'_> {
    fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self.rng.as_deref_mut() {
            Some(rng) => ops::dropout(x, p, rng),
            None => Ok(x.clone()),
        }
    }
}

impl EncoderLayer {
    fn load(l: &mut Loader<'_>, i: usize, c: &BertConfig) -> Result<EncoderLayer> {
        let (h, m, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let p = format!("encoder.layer.{i}");
        let query = l.linear(&format!("{p}.attention.self.query"), h, h)?;
        let key = l.linear(&format!("{p}.attention.self.key"), h, h)?;
        let value = l.linear(&format!("{p}.attention.self.value"), h, h)?;
        let qkv = match l.mode {
            WeightsMode::Frozen => Some(fuse_qkv(&query, &key, &value, h / c.num_attention_heads)?),
            WeightsMode::Trainable => None,
        };
        Ok(EncoderLayer {
            query,
            key,
            value,
            qkv,
            attn_out: l.linear(&format!("{p}.attention.output.dense"), h, h)?,
            attn_norm: l.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
            intermediate: l.linear(&format!("{p}.intermediate.dense"), m, h)?,
            output: l.linear(&format!("{p}.output.dense"), h, m)?,
            out_norm: l.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
        })
    }

    /// `x`: `[B*L, H]` contiguous; `bias`: `[B, 1, 1, L]` additive attention bias.
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        b: usize,
        l: usize,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let hidden = x.dim(1)?;
        let nh = ctx.heads;
        let hd = hidden / nh;
        let (q, k, v) = match &self.qkv {
            Some(qkv) => {
                // [B*L, 3H] -> [3, B, nh, L, hd] in one copy.
                let all = qkv
                    .forward(x)?
                    .reshape((b, l, 3, nh, hd))?
                    .permute((2, 0, 3, 1, 4))?
                    .contiguous()?;
                (all.get(0)?, all.get(1)?, all.get(2)?)
            }
            None => {
                // [B*L, H] -> [B, nh, L, hd], contiguous so the batched matmuls see plain
                // strides.
                let heads = |t: Tensor| t.reshape((b, l, nh, hd))?.transpose(1, 2)?.contiguous();
                let q = heads((self.query.forward(x)? * (1.0 / (hd as f64).sqrt()))?)?;
                (
                    q,
                    heads(self.key.forward(x)?)?,
                    heads(self.value.forward(x)?)?,
                )
            }
        };
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = ops::softmax_last_dim(&scores)?;
        let probs = ctx.dropout(&probs, ctx.attn_p)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b * l, hidden))?;
        let attn = ctx.dropout(&self.attn_out.forward(&context)?, ctx.hidden_p)?;
        let x = self.attn_norm.forward(&(attn + x)?)?;
        let inter = ctx.act.apply(&self.intermediate.forward(&x)?)?;
        let out = ctx.dropout(&self.output.forward(&inter)?, ctx.hidden_p)?;
        self.out_norm.forward(&(out + x)?)
    }
}

/// The three attention projections as one, the query's rows (and bias) scaled by
/// `1/sqrt(head_dim)` so the scores need no separate scaling pass.
fn fuse_qkv(q: &Linear, k: &Linear, v: &Linear, head_dim: usize) -> Result<Linear> {
    let scale = 1.0 / (head_dim as f64).sqrt();
    let bias = |l: &Linear| {
        l.bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("BERT attention projections have biases".into()))
    };
    let weight = Tensor::cat(
        &[
            (q.weight() * scale)?,
            k.weight().clone(),
            v.weight().clone(),
        ],
        0,
    )?;
    let b = Tensor::cat(&[(bias(q)? * scale)?, bias(k)?, bias(v)?], 0)?;
    Ok(Linear::new(weight, Some(b)))
}

/// all-MiniLM-L6-v2 style BERT: encoder, masked mean pooling, L2 normalisation.
pub struct Bert {
    config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    act: Activation,
    vars: Vec<(String, Var)>,
    rng: Mutex<StdRng>,
}

impl Bert {
    /// Loads `dir/config.json` and the weights: `weights` if given (fine-tuned weights under
    /// the same tensor names, e.g. a saved [`Backbone::named_vars`]; any tensor it lacks, such
    /// as frozen layers left out of a save, comes from `dir/model.safetensors`; a file with no
    /// BERT tensor at all is an error), else `dir/model.safetensors`. Names may carry a prefix
    /// such as `bert.` (detected per file); `named_vars` reports them with the first file's
    /// prefix. The pre-training pooler is not loaded.
    pub fn load(
        dir: &Path,
        weights: Option<&Path>,
        mode: WeightsMode,
        device: &Device,
    ) -> Result<Bert> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let mut l = Loader {
            source: WeightSource::new(dir, weights)?,
            mode,
            device,
            vars: Vec::new(),
        };
        let h = config.hidden_size;
        let word = l.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = l.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = l.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = l.layer_norm("embeddings.LayerNorm", h, config.layer_norm_eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(&mut l, i, &config))
            .collect::<Result<Vec<_>>>()?;
        l.source.check_overlay_used()?;
        Ok(Bert {
            act: Activation::parse(&config.hidden_act)?,
            config,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            vars: l.vars,
            rng: Mutex::new(StdRng::seed_from_u64(0)),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Makes dropout masks reproducible from here on.
    pub fn seed_dropout(&self, seed: u64) {
        *self.rng.lock() = StdRng::seed_from_u64(seed);
    }

    /// Per-token hidden states of the last layer, `[B, L, H]`.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        if attention_mask.dims2()? != (b, l) {
            candle_core::bail!(
                "attention_mask {:?} does not match input_ids {:?}",
                attention_mask.dims(),
                input_ids.dims()
            )
        }
        if l > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence of {l} tokens exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            )
        }
        let h = self.config.hidden_size;
        // Only training forwards take the dropout RNG; inference runs concurrently.
        let mut guard = train.then(|| self.rng.lock());
        let mut ctx = Ctx {
            heads: self.config.num_attention_heads,
            act: self.act,
            hidden_p: self.config.hidden_dropout_prob,
            attn_p: self.config.attention_probs_dropout_prob,
            rng: guard.as_deref_mut(),
        };
        let ids = input_ids.flatten_all()?.to_dtype(DType::U32)?;
        let x = self
            .word
            .index_select(&ids, 0)?
            .reshape((b, l, h))?
            .broadcast_add(&self.position.narrow(0, 0, l)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?
            .reshape((b * l, h))?;
        let mut x = ctx.dropout(&self.emb_norm.forward(&x)?, ctx.hidden_p)?;
        // 0 on real tokens, a large negative number on padding: softmax gives padding 0.
        let bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, l))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, b, l, &mut ctx)?;
        }
        x.reshape((b, l, h))
    }
}

/// Mean of `hidden` `[B, L, H]` over positions where `mask` `[B, L]` is 1, L2-normalised.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    mean.broadcast_div(&norm)
}

impl Backbone for Bert {
    fn seed(&self, seed: u64) {
        self.seed_dropout(seed);
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let Batch::Text {
            input_ids,
            attention_mask,
        } = batch
        else {
            candle_core::bail!("the text backbone needs a text batch, got images")
        };
        let hidden = self.hidden_states(input_ids, attention_mask, train)?;
        mean_pool_normalize(&hidden, attention_mask)
    }

    fn embedding_dim(&self) -> usize {
        self.config.hidden_size
    }

    fn num_blocks(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    fn block_of(&self, name: &str) -> Option<usize> {
        let top = self.num_blocks().checked_sub(1);
        // Skip any prefix (`bert.`, ...) up to a component boundary.
        let after = |marker: &str| {
            name.match_indices(marker)
                .find(|(p, _)| *p == 0 || name[..*p].ends_with('.'))
                .map(|(p, _)| &name[p + marker.len()..])
        };
        if let Some(rest) = after("encoder.layer.") {
            let index = rest.split('.').next().and_then(|i| i.parse::<usize>().ok());
            return index.filter(|&i| i < self.num_blocks()).or(top);
        }
        if after("embeddings.").is_some() {
            return None;
        }
        top
    }
}
