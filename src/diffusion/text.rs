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
use crate::model::{ModelFolder, SdxlSettings, TokenizerSettings};

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
        let mut inner = super::tokenizer_files::load(path).map_err(bad)?;
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

/// What a prompt makes for the UNet: the hidden states it cross-attends to (`[rows, tokens, width]`) and, for
/// the SDXL family, the pooled embedding (`[rows, width]`). One prompt has one row; a run's embeddings stack the
/// negative prompt's row before the prompt's for classifier-free guidance.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub context: Array3<f32>,
    pub pooled: Option<Array2<f32>>,
}

impl Embeddings {
    /// Rows of a stacked set.
    pub fn rows(&self) -> usize {
        self.context.dim().0
    }

    /// `a` and `b` stacked row-wise (`[a; b]`).
    pub fn stack(a: &Embeddings, b: &Embeddings) -> Result<Embeddings> {
        let bad = |e: ndarray::ShapeError| Error::internal("prompt embeddings", e);
        let context = ndarray::concatenate(ndarray::Axis(0), &[a.context.view(), b.context.view()]).map_err(bad)?;
        let pooled = match (&a.pooled, &b.pooled) {
            (Some(x), Some(y)) => Some(ndarray::concatenate(ndarray::Axis(0), &[x.view(), y.view()]).map_err(bad)?),
            _ => None,
        };
        Ok(Embeddings { context, pooled })
    }

    /// Zeros of this shape: SDXL's unconditional embeddings when the negative prompt is empty.
    pub fn zeros_like(&self) -> Embeddings {
        Embeddings {
            context: Array3::zeros(self.context.raw_dim()),
            pooled: self.pooled.as_ref().map(|p| Array2::zeros(p.raw_dim())),
        }
    }

    /// `self·(1-t) + to·t` (prompt transitions); None when the shapes differ (a cut).
    pub fn blend(&self, to: &Embeddings, t: f32) -> Option<Embeddings> {
        if self.context.dim() != to.context.dim()
            || self.pooled.as_ref().map(|p| p.dim()) != to.pooled.as_ref().map(|p| p.dim())
        {
            return None;
        }
        let mix = |a: f32, b: f32| a + (b - a) * t;
        Some(Embeddings {
            context: ndarray::Zip::from(&self.context).and(&to.context).map_collect(|&a, &b| mix(a, b)),
            pooled: match (&self.pooled, &to.pooled) {
                (Some(a), Some(b)) => Some(ndarray::Zip::from(a).and(b).map_collect(|&a, &b| mix(a, b))),
                _ => None,
            },
        })
    }
}

/// One text encoder with its tokenizer, and which of its outputs the conditioning takes.
struct EncoderPart {
    tokenizer: ClipTokenizer,
    model: Model,
    ids_are_i64: bool,
    /// The hidden state taken: `last_hidden_state`, or `hidden_states.N` (SDXL: the penultimate).
    hidden: String,
    /// The pooled output taken (SDXL's second encoder: `text_embeds`).
    pooled: Option<String>,
}

impl EncoderPart {
    fn load(
        runtime: &Runtime,
        role: &'static str,
        path: &Path,
        tokenizer_file: &Path,
        settings: &TokenizerSettings,
        sdxl: Option<(&SdxlSettings, bool)>,
    ) -> Result<EncoderPart> {
        let tokenizer = ClipTokenizer::load(tokenizer_file, settings)?;
        let model = runtime.load_with_extras(role, path, &port::CONTRACT, &port::EXTRAS)?;
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
        let (hidden, pooled) = match sdxl {
            None => (model.binding.output(port::HIDDEN).name.clone(), None),
            Some((settings, takes_pooled)) => {
                // hidden_states.0 is the embeddings, .L the last layer's output: index from the end as diffusers.
                let states = model.output_names().iter().filter(|n| n.starts_with("hidden_states.")).count() as i32;
                let index = states + settings.hidden_layer;
                let name = format!("hidden_states.{index}");
                if index < 0 || !model.output_names().contains(&name) {
                    return Err(model.contract_error(format!(
                        "[sdxl] hidden-layer {} needs output `{name}`; the model has {states} hidden_states.N \
                         outputs (export it with them: scripts/export_models.py, or optimum)",
                        settings.hidden_layer
                    )));
                }
                let pooled = takes_pooled.then(|| settings.pooled_output.clone());
                if let Some(p) = &pooled
                    && !model.output_names().contains(p)
                {
                    return Err(model.contract_error(format!(
                        "[sdxl] pooled-output `{p}` is not one of its outputs ({})",
                        model.output_names().join(", ")
                    )));
                }
                (name, pooled)
            }
        };
        Ok(EncoderPart { tokenizer, model, ids_are_i64, hidden, pooled })
    }

    /// The hidden state and the pooled output (when this part gives one) for `ids`.
    fn run(&mut self, ids: &[u32]) -> Result<(Array3<f32>, Option<Array2<f32>>)> {
        let role = self.model.role;
        let err = |e: ort::Error| Error::inference(role, e);
        let input_name = self.model.binding.input(port::INPUT_IDS).name.clone();
        let len = ids.len();
        let mut names = vec![self.hidden.clone()];
        names.extend(self.pooled.clone());
        let outputs = if self.ids_are_i64 {
            let ids = Array2::from_shape_fn((1, len), |(_, i)| i64::from(ids[i]));
            let input = ort::value::TensorRef::from_array_view(&ids).map_err(err)?;
            self.model.run_outputs_named(ort::inputs![input_name.as_str() => input], &names)?
        } else {
            let ids = Array2::from_shape_fn((1, len), |(_, i)| ids[i] as i32);
            let input = ort::value::TensorRef::from_array_view(&ids).map_err(err)?;
            self.model.run_outputs_named(ort::inputs![input_name.as_str() => input], &names)?
        };
        let mut outputs = outputs.into_iter();
        let hidden = outputs
            .next()
            .ok_or_else(|| Error::inference(role, "no hidden state"))?
            .into_dimensionality::<Ix3>()
            .map_err(|e| Error::inference(role, format!("the hidden state is not [batch, tokens, width]: {e}")))?;
        let pooled = outputs
            .next()
            .map(|p| {
                p.into_dimensionality::<ndarray::Ix2>()
                    .map_err(|e| Error::inference(role, format!("the pooled output is not [batch, width]: {e}")))
            })
            .transpose()?;
        Ok((hidden, pooled))
    }
}

/// The prompt encoder of a model folder: one CLIP text encoder (SD family), or two whose hidden states are
/// concatenated, the second's pooled projection kept (SDXL family). Embeddings are cached per prompt.
pub struct TextEncoder {
    parts: Vec<EncoderPart>,
    /// Most recently used last.
    cache: Vec<(String, Arc<Embeddings>)>,
    truncations: TruncationWarnings,
}

impl TextEncoder {
    pub fn load(runtime: &Runtime, folder: &ModelFolder) -> Result<TextEncoder> {
        let sdxl = folder.sdxl.as_ref();
        let first = EncoderPart::load(
            runtime,
            "text encoder",
            &folder.text_encoder,
            &folder.tokenizer_file,
            &folder.tokenizer,
            sdxl.map(|s| (s, false)),
        )?;
        let mut parts = vec![first];
        if let (Some(second), Some(settings)) = (&folder.text_encoder_2, sdxl) {
            parts.push(EncoderPart::load(
                runtime,
                "text encoder 2",
                &second.text_encoder,
                &second.tokenizer_file,
                &second.tokenizer,
                Some((settings, true)),
            )?);
        }
        Ok(TextEncoder { parts, cache: Vec::new(), truncations: TruncationWarnings::default() })
    }

    /// The (first) tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.parts[0].tokenizer
    }

    /// The text encoder models, in order.
    pub fn models(&self) -> Vec<&Model> {
        self.parts.iter().map(|p| &p.model).collect()
    }

    /// The first text encoder model.
    pub fn model(&self) -> &Model {
        &self.parts[0].model
    }

    /// What each encoder contributes, for `models check`: `hidden_states.1 (penultimate)`, the pooled output.
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|p| match &p.pooled {
                Some(pooled) => format!("{}: {} + pooled `{pooled}`", p.model.role, p.hidden),
                None => format!("{}: {}", p.model.role, p.hidden),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Width of the embeddings (the UNet's cross-attention width), when the models fix it.
    pub fn hidden_size(&self) -> Option<usize> {
        self.parts
            .iter()
            .map(|p| {
                let out = p.model.output_names().iter().position(|n| *n == p.hidden)?;
                p.model.output_dim(out, 2)
            })
            .sum::<Option<i64>>()
            .map(|d| d as usize)
    }

    /// Width of the pooled embedding (SDXL), when the model fixes it.
    pub fn pooled_size(&self) -> Option<usize> {
        self.parts.iter().find_map(|p| {
            let out = p.model.output_names().iter().position(|n| Some(n) == p.pooled.as_ref())?;
            p.model.output_dim(out, 1).map(|d| d as usize)
        })
    }

    /// True when the encoders make a pooled embedding (SDXL).
    pub fn makes_pooled(&self) -> bool {
        self.parts.iter().any(|p| p.pooled.is_some())
    }

    /// Embeddings for `prompt` (one row), from the cache when seen recently.
    pub fn encode(&mut self, prompt: &str) -> Result<Arc<Embeddings>> {
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

    /// Runs the text encoders every time (benchmarks, and the cache's miss path). A prompt over the tokenizer's
    /// `max_length` is cut to it, with a warning the first time that prompt is seen.
    pub fn encode_uncached(&mut self, prompt: &str) -> Result<Embeddings> {
        let shown = crate::knobs::preview(prompt, crate::knobs::SHOWN_CHARS);
        let _span = tracing::debug_span!("text_encoder", prompt = shown).entered();
        let mut contexts = Vec::with_capacity(self.parts.len());
        let mut pooled = None;
        for (i, part) in self.parts.iter_mut().enumerate() {
            let tokens = part.tokenizer.tokenize(prompt)?;
            if i == 0 {
                self.truncations.note(prompt, &tokens);
            }
            let (hidden, p) = part.run(&tokens.ids)?;
            contexts.push(hidden);
            pooled = pooled.or(p);
        }
        // SDXL: the two encoders' hidden states side by side (768 + 1280 wide for the real models).
        let views: Vec<_> = contexts.iter().map(|c| c.view()).collect();
        let context = ndarray::concatenate(ndarray::Axis(2), &views).map_err(|e| {
            Error::inference("text encoder", format!("the encoders' hidden states do not line up: {e}"))
        })?;
        // ndarray concatenates along the last axis in a non-standard memory order; ONNX Runtime takes only
        // row-major tensors.
        let context = if context.is_standard_layout() { context } else { context.as_standard_layout().into_owned() };
        Ok(Embeddings { context, pooled })
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
