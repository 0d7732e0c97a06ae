//! Text preprocessing exactly as the text backbone was pre-trained: its own WordPiece
//! `tokenizer.json`, `[CLS] … [SEP]`, truncation to a maximum length, padding to the longest
//! text of the batch.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use crate::backbones::Batch;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("tokenizer {path} has no padding token ([PAD] or a padding pad_id)")]
    NoPadToken { path: String },
}

/// A backbone's WordPiece tokenizer, turning texts into a [`Batch::Text`].
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    /// Special tokens the post-processor adds to one sequence (`[CLS]`, `[SEP]`: 2).
    num_special: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl TextEncoder {
    /// Loads `dir/tokenizer.json`. The file's own padding and truncation settings are turned
    /// off (all-MiniLM's file pads every text to 128 tokens); [`TextEncoder::encode`] truncates
    /// and pads itself.
    pub fn load(dir: &Path) -> Result<TextEncoder, TextError> {
        let path = dir.join("tokenizer.json");
        let shown = path.display().to_string();
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| TextError::Load {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .ok_or(TextError::NoPadToken {
                path: shown.clone(),
            })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TextError::Load {
                path: shown,
                message: e.to_string(),
            })?;
        let num_special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        Ok(TextEncoder {
            tokenizer,
            pad_id,
            num_special,
        })
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of entries in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of one text with its special tokens, not truncated.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        match self.tokenizer.encode(text, true) {
            Ok(enc) => enc.get_ids().to_vec(),
            // WordPiece on a BERT pipeline has no failing input; keep the contract total.
            Err(_) => Vec::new(),
        }
    }

    /// Number of tokens of one text with its special tokens, before truncation.
    pub fn token_count(&self, text: &str) -> usize {
        self.token_ids(text).len()
    }

    /// Token ids of one text, `[CLS] … [SEP]`, truncated to at most `max_len` tokens the way
    /// Hugging Face truncates (the text is cut, the special tokens are kept).
    pub fn encode_one(&self, text: &str, max_len: usize) -> candle_core::Result<Vec<u32>> {
        if max_len <= self.num_special {
            candle_core::bail!(
                "max_len {max_len} leaves no room for text after {} special tokens",
                self.num_special
            )
        }
        let mut enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizer failed on input: {e}")))?;
        enc.truncate(max_len - self.num_special, 0, TruncationDirection::Right);
        let enc = self
            .tokenizer
            .post_process(enc, None, true)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizer post-processing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenises `texts` into a [`Batch::Text`]: `[B, L]` `u32` ids and mask, `L` the longest
    /// text after truncation to `max_len`, shorter texts padded with the pad id (mask 0).
    pub fn encode(
        &self,
        texts: &[&str],
        max_len: usize,
        device: &Device,
    ) -> candle_core::Result<Batch> {
        if texts.is_empty() {
            candle_core::bail!("cannot encode an empty batch of texts")
        }
        let ids = texts
            .iter()
            .map(|t| self.encode_one(t, max_len))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat_ids = Vec::with_capacity(texts.len() * len);
        let mut flat_mask = Vec::with_capacity(texts.len() * len);
        for row in &ids {
            flat_ids.extend_from_slice(row);
            flat_ids.extend(std::iter::repeat_n(self.pad_id, len - row.len()));
            flat_mask.extend(std::iter::repeat_n(1u32, row.len()));
            flat_mask.extend(std::iter::repeat_n(0u32, len - row.len()));
        }
        Ok(Batch::Text {
            input_ids: Tensor::from_vec(flat_ids, (texts.len(), len), device)?,
            attention_mask: Tensor::from_vec(flat_mask, (texts.len(), len), device)?,
        })
    }
}
