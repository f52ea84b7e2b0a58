//! Prompts: CLIP tokenization (the `tokenizers` crate reading a `tokenizer.json`) and the text encoder, with
//! embeddings cached per prompt so a live prompt switch back to an earlier prompt costs nothing.

use std::path::Path;
use std::sync::Arc;

use ndarray::{Array2, Array3, Ix3};
use ort::value::TensorElementType;
use tokenizers::{AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::infer::contract::text_encoder as port;
use crate::infer::{Model, Runtime};
use crate::model::{ModelFolder, TokenizerSettings};

/// CLIP tokenizer padded/truncated to a fixed length, as diffusers calls it
/// (`padding="max_length", max_length=77, truncation=True`).
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl ClipTokenizer {
    pub fn load(path: &Path, settings: &TokenizerSettings) -> Result<ClipTokenizer> {
        let bad = |problem: String| Error::Tokenizer { path: path.to_path_buf(), problem };
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| bad(format!("not a valid tokenizer.json: {e}")))?;
        let pad_id = inner.token_to_id(&settings.pad_token).ok_or_else(|| {
            bad(format!("pad token `{}` (from model.toml) is not in the vocabulary", settings.pad_token))
        })?;
        // transformers registers the pad token as a special token, so a pad of "!" (SD2, SD-Turbo) also splits
        // "!!" into single "!" tokens in prompts. Do the same, or SD2-family prompts would encode differently
        // from what diffusers feeds those models.
        let already_special = inner.get_added_tokens_decoder().values().any(|t| t.content == settings.pad_token);
        if !already_special {
            inner.add_special_tokens(&[AddedToken::from(settings.pad_token.clone(), true)]);
        }
        inner
            .with_truncation(Some(TruncationParams { max_length: settings.max_length, ..Default::default() }))
            .map_err(|e| bad(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(settings.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: settings.pad_token.clone(),
        }));
        Ok(ClipTokenizer { inner, max_length: settings.max_length })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids with start/end tokens, truncated and padded to `max_length`.
    pub fn ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| Error::invalid("prompt", format!("{prompt:?} could not be tokenized: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// How many distinct prompts keep their embeddings.
pub(crate) const CACHE_PROMPTS: usize = 16;

pub struct TextEncoder {
    tokenizer: ClipTokenizer,
    model: Model,
    ids_are_i64: bool,
    /// Most recently used last.
    cache: Vec<(String, Arc<Array3<f32>>)>,
}

impl TextEncoder {
    pub fn load(runtime: &Runtime, folder: &ModelFolder) -> Result<TextEncoder> {
        let tokenizer = ClipTokenizer::load(&folder.tokenizer_file, &folder.tokenizer)?;
        let model = runtime.load("text encoder", &folder.text_encoder, &port::CONTRACT)?;
        let ids = model.binding.input(port::INPUT_IDS);
        if let Some(len) = ids.dim(1)
            && len as usize != tokenizer.max_length()
        {
            return Err(model.contract_error(format!(
                "input_ids takes {len} tokens but the tokenizer makes {} (tokenizer.max-length in model.toml)",
                tokenizer.max_length()
            )));
        }
        let ids_are_i64 = ids.ty == TensorElementType::Int64;
        Ok(TextEncoder { tokenizer, model, ids_are_i64, cache: Vec::new() })
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Width of the embeddings (the UNet's cross-attention width), when the model fixes it.
    pub fn hidden_size(&self) -> Option<usize> {
        self.model.binding.output(port::HIDDEN).dim(2).map(|d| d as usize)
    }

    /// Embeddings `[1, max_length, hidden]` for `prompt`, from the cache when seen recently.
    pub fn encode(&mut self, prompt: &str) -> Result<Arc<Array3<f32>>> {
        if let Some(pos) = self.cache.iter().position(|(p, _)| p == prompt) {
            let entry = self.cache.remove(pos);
            let embeddings = entry.1.clone();
            self.cache.push(entry);
            return Ok(embeddings);
        }
        let embeddings = Arc::new(self.encode_uncached(prompt)?);
        if self.cache.len() == CACHE_PROMPTS {
            self.cache.remove(0);
        }
        self.cache.push((prompt.to_string(), embeddings.clone()));
        Ok(embeddings)
    }

    /// Runs the text encoder every time (benchmarks, and the cache's miss path).
    pub fn encode_uncached(&mut self, prompt: &str) -> Result<Array3<f32>> {
        let _span = tracing::debug_span!("text_encoder", prompt).entered();
        let ids = self.tokenizer.ids(prompt)?;
        let len = ids.len();
        let input_name = self.model.binding.input(port::INPUT_IDS).name.clone();
        let err = |e: ort::Error| Error::inference("text encoder", e);
        let hidden = if self.ids_are_i64 {
            let ids = Array2::from_shape_fn((1, len), |(_, i)| i64::from(ids[i]));
            let input = ort::value::TensorRef::from_array_view(&ids).map_err(err)?;
            self.model.run_output(ort::inputs![input_name.as_str() => input], port::HIDDEN)?
        } else {
            let ids = Array2::from_shape_fn((1, len), |(_, i)| ids[i] as i32);
            let input = ort::value::TensorRef::from_array_view(&ids).map_err(err)?;
            self.model.run_output(ort::inputs![input_name.as_str() => input], port::HIDDEN)?
        };
        hidden
            .into_dimensionality::<Ix3>()
            .map_err(|e| Error::inference("text encoder", format!("output is not [batch, tokens, width]: {e}")))
    }
}
