//! Prompts: CLIP tokenization (the `tokenizers` crate reading a `tokenizer.json`) and the text encoder, with
//! embeddings cached per prompt so a live prompt switch back to an earlier prompt costs nothing.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
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
    /// The same tokenizer without truncation or padding: counts a long prompt's tokens and finds where it was cut.
    whole: Tokenizer,
    max_length: usize,
}

/// A prompt's token ids, and whether the prompt was cut to fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// With start and end tokens, truncated and padded to `max_length`.
    pub ids: Vec<u32>,
    pub truncated: Option<Truncated>,
}

/// How many characters of the dropped text a [`Truncated`] keeps.
const DROPPED_CHARS: usize = 40;

/// A prompt longer than the text encoder takes (CLIP: 77 tokens): the encoder sees only the first `limit`
/// tokens and the rest of the prompt has no effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// The prompt's tokens, start and end tokens included.
    pub tokens: usize,
    /// What the text encoder takes, start and end tokens included.
    pub limit: usize,
    /// The start of the text that was dropped (up to 40 characters, `…` when there is more).
    pub dropped: String,
}

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the prompt has {} tokens, over the text encoder's limit of {}: the words from \"{}\" on are dropped",
            self.tokens, self.limit, self.dropped
        )
    }
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
        let mut whole = inner.clone();
        whole.with_truncation(None).map_err(|e| bad(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(settings.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: settings.pad_token.clone(),
        }));
        Ok(ClipTokenizer { inner, whole, max_length: settings.max_length })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids with start/end tokens, truncated and padded to `max_length`.
    pub fn ids(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.tokenize(prompt)?.ids)
    }

    /// [`ClipTokenizer::ids`], and whether the prompt had to be cut to `max_length` tokens (and where).
    pub fn tokenize(&self, prompt: &str) -> Result<Tokens> {
        let failed = |e: tokenizers::Error| {
            let shown = crate::knobs::preview(prompt, crate::knobs::SHOWN_CHARS);
            Error::invalid("prompt", format!("{shown:?} could not be tokenized: {e}"))
        };
        let encoding = self.inner.encode(prompt, true).map_err(failed)?;
        let truncated = if encoding.get_overflowing().is_empty() {
            None
        } else {
            // Cut: count the whole prompt, and find where the first token that did not fit starts (the kept
            // tokens are the start token and `max_length - 2` of the prompt's; the end token takes the last place).
            let whole = self.whole.encode(prompt, true).map_err(failed)?;
            let dropped_at = whole.get_offsets().get(self.max_length.saturating_sub(1)).map_or(prompt.len(), |o| o.0);
            (whole.len() > self.max_length).then(|| Truncated {
                tokens: whole.len(),
                limit: self.max_length,
                dropped: dropped_start(prompt, dropped_at),
            })
        };
        Ok(Tokens { ids: encoding.get_ids().to_vec(), truncated })
    }
}

/// Up to [`DROPPED_CHARS`] characters of `prompt` from byte `at` (`…` when there is more).
fn dropped_start(prompt: &str, at: usize) -> String {
    let rest = prompt.get(at..).unwrap_or("").trim();
    let head: String = rest.chars().take(DROPPED_CHARS).collect();
    if head.len() < rest.len() { format!("{}…", head.trim_end()) } else { head }
}

/// Prompts already warned about as truncated, by hash: each distinct prompt is warned about once per session
/// (a live session that cycles through a few long prompts says so once each, not on every switch).
#[derive(Default)]
struct TruncationWarnings {
    seen: HashSet<u64>,
}

impl TruncationWarnings {
    /// Forgotten past this many (then a prompt may be warned about again).
    const REMEMBERED: usize = 1024;

    /// Warn (once per distinct prompt) when `tokens` says the prompt was cut. True when it warned.
    fn note(&mut self, prompt: &str, tokens: &Tokens) -> bool {
        let Some(truncated) = &tokens.truncated else { return false };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        prompt.hash(&mut hasher);
        if self.seen.len() >= Self::REMEMBERED {
            self.seen.clear();
        }
        if !self.seen.insert(hasher.finish()) {
            return false;
        }
        tracing::warn!("{truncated}");
        true
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
    truncations: TruncationWarnings,
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
        Ok(TextEncoder { tokenizer, model, ids_are_i64, cache: Vec::new(), truncations: TruncationWarnings::default() })
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

    /// Runs the text encoder every time (benchmarks, and the cache's miss path). A prompt over the tokenizer's
    /// `max_length` is cut to it, with a warning the first time that prompt is seen.
    pub fn encode_uncached(&mut self, prompt: &str) -> Result<Array3<f32>> {
        let shown = crate::knobs::preview(prompt, crate::knobs::SHOWN_CHARS);
        let _span = tracing::debug_span!("text_encoder", prompt = shown).entered();
        let tokens = self.tokenizer.tokenize(prompt)?;
        self.truncations.note(prompt, &tokens);
        let ids = tokens.ids;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenizerSettings;

    fn tokenizer() -> ClipTokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-clip/tokenizer.json");
        ClipTokenizer::load(&path, &TokenizerSettings::default()).unwrap()
    }

    /// `n` words of one token each.
    fn words(n: usize) -> String {
        vec!["cat"; n].join(" ")
    }

    #[test]
    fn a_prompt_over_the_limit_says_so() {
        let t = tokenizer();
        let short = t.tokenize("a watercolor painting of a fox").unwrap();
        assert_eq!((short.ids.len(), short.truncated), (77, None));
        // 75 prompt tokens and the start and end tokens: exactly 77, nothing dropped.
        assert_eq!(t.tokenize(&words(75)).unwrap().truncated, None);
        let prompt = format!("{} in the style of a faded 1950s technicolor film still", words(75));
        let long = t.tokenize(&prompt).unwrap();
        assert_eq!(long.ids.len(), 77);
        assert_eq!(long.ids, t.ids(&prompt).unwrap());
        let cut = long.truncated.expect("truncated");
        assert_eq!((cut.limit, cut.dropped.as_str()), (77, "in the style of a faded 1950s technicolo…"));
        assert!(cut.tokens > 77 + 8, "{cut:?}");
        let shown = cut.to_string();
        assert!(shown.contains(&format!("{} tokens", cut.tokens)) && shown.contains("limit of 77"), "{shown}");
        let one_over = t.tokenize(&format!("{} dog", words(75))).unwrap().truncated.unwrap();
        assert_eq!((one_over.tokens, one_over.dropped.as_str()), (78, "dog"));
    }

    #[test]
    fn each_truncated_prompt_is_warned_about_once() {
        let t = tokenizer();
        let mut warnings = TruncationWarnings::default();
        let long = format!("{} dog", words(80));
        let tokens = t.tokenize(&long).unwrap();
        let logged = crate::control::capture_logs(|| {
            assert!(warnings.note(&long, &tokens), "first time");
            assert!(!warnings.note(&long, &tokens), "the same prompt again");
            assert!(!warnings.note("a fox", &t.tokenize("a fox").unwrap()), "not truncated");
        });
        assert_eq!(logged.matches("WARN").count(), 1, "{logged}");
        assert!(
            logged.contains("83 tokens") && logged.contains("limit of 77") && logged.contains("\"cat cat"),
            "{logged}"
        );
    }
}
