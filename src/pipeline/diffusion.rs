//! The processor for diffusion models: the frame path behind the similarity filter, with live control.
//!
//! Live changes ([`Processor::control`]) apply between frames. Values that need no new prompt embeddings apply
//! from the next frame; a new prompt is sent to the text encoder's thread ([`PromptWorker`]) and applies from
//! the first frame that starts after its embeddings are back, blended in over `transition-frames` frames.
//! Each change finishes the frames still in a stream batch (their outputs come out first, made with the old
//! values) and resets the similarity filter.

use crate::knobs::LiveCost;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::Processor;
use crate::config::WorkingSize;
use crate::control::LiveValues;
use crate::control::prompts::PromptWorker;
use crate::diffusion::text::Embeddings;
use crate::diffusion::{FramePath, Inputs};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::similarity::{Decision, SimilarityFilter, SimilaritySettings};

pub struct DiffusionProcessor {
    path: FramePath,
    similarity: SimilarityFilter,
    /// The last output, re-emitted for a frame the filter finds near-identical to the last processed one.
    last_output: Option<RgbImage>,
    /// Whether the last `push` ran the models (stage times are reported only then).
    ran: bool,
    size: (u32, u32),
    live: Option<Live>,
}

/// Live control's state.
struct Live {
    prompts: PromptWorker,
    /// The values applied.
    current: LiveValues,
    /// Values waiting for their prompt embeddings.
    waiting: Option<LiveValues>,
    transition: Option<Transition>,
    /// The similarity filter's threshold as configured (0 where the filter cannot run).
    similarity_usable: bool,
}

/// A prompt blend in progress: from the old embeddings to those bound now, over `frames` frames.
struct Transition {
    from: Arc<Embeddings>,
    frame: u32,
    frames: u32,
}

impl DiffusionProcessor {
    /// `size` carries the multiple it was checked against; it must be this run's.
    pub fn new(
        runtime: &crate::infer::Runtime,
        diffusion: crate::diffusion::Diffusion,
        params: &crate::diffusion::Params,
        size: WorkingSize,
        engine: &crate::config::Engine,
        control: Option<crate::diffusion::frame_path::Control>,
    ) -> Result<DiffusionProcessor> {
        let path = match control {
            None => FramePath::new(runtime, diffusion, params, size.dims(), engine.batch, None)?,
            Some(control) => {
                FramePath::with_control(runtime, diffusion, params, size.dims(), control, engine.batch, None)?
            }
        };
        Self::around(path, size, engine)
    }

    /// A processor that changes each frame only where the frame's mask says (every frame brings one: the
    /// [`super::MaskAnnotator`]); the similarity filter compares only the area to change.
    pub fn with_mask(
        runtime: &crate::infer::Runtime,
        diffusion: crate::diffusion::Diffusion,
        params: &crate::diffusion::Params,
        size: WorkingSize,
        engine: &crate::config::Engine,
    ) -> Result<DiffusionProcessor> {
        let path = FramePath::with_mask(runtime, diffusion, params, size.dims(), engine.batch, None)?;
        Self::around(path, size, engine)
    }

    fn around(path: FramePath, size: WorkingSize, engine: &crate::config::Engine) -> Result<DiffusionProcessor> {
        let multiple = path.diffusion().size_multiple(path.prepared());
        // The size's sides are multiples of size.multiple(); that satisfies the run only if it is itself a
        // multiple of what the run needs.
        if !size.multiple().is_multiple_of(multiple) {
            return Err(Error::internal(
                "DiffusionProcessor",
                format!("size {size} was checked for multiples of {}, the run needs {multiple}", size.multiple()),
            ));
        }
        let similarity = if similarity_usable(&path) { engine.similarity } else { SimilaritySettings::DISABLED };
        Ok(DiffusionProcessor {
            path,
            similarity: SimilarityFilter::new(similarity),
            last_output: None,
            ran: false,
            size: size.dims(),
            live: None,
        })
    }

    /// Take live changes ([`Processor::control`]) starting from `values` (what the processor was built with).
    /// The text encoder moves to a thread of its own.
    pub fn enable_live(&mut self, values: &LiveValues) -> Result<()> {
        let diffusion = self.path.diffusion_mut();
        let mut encoder = diffusion
            .take_text_encoder()
            .ok_or_else(|| Error::internal("live control", "the text encoder was already handed over"))?;
        // The starting prompts are kept encoded here, so that a change of other values never waits for them.
        for prompt in [&values.prompt, &values.negative_prompt] {
            let embeddings = encoder.encode(prompt)?;
            diffusion.provide_embedding(prompt, embeddings);
        }
        let usable = similarity_usable(&self.path);
        let live = Live {
            prompts: PromptWorker::spawn(encoder)?,
            current: values.clone(),
            waiting: None,
            transition: None,
            similarity_usable: usable,
        };
        self.live = Some(live);
        Ok(())
    }

    /// Blend this fraction (0 to below 1) of each output latent into the next input latent (rebuilds the
    /// frame path: call before [`Processor::warm_up`]).
    pub fn set_feedback(&mut self, feedback: f32) -> Result<()> {
        let params = self.path.prepared().params.clone();
        self.path.reconfigure(&params, feedback, None)
    }

    /// Before each frame: take encoded prompts, apply values that were waiting for them, move a prompt
    /// transition on.
    fn before_frame(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
        let Some(live) = self.live.as_mut() else { return Ok(()) };
        while let Some((prompt, result)) = live.prompts.try_next()? {
            match result {
                Ok(embeddings) => self.path.diffusion_mut().provide_embedding(&prompt, embeddings),
                Err(e) => {
                    // The hub checked the value; a prompt the tokenizer still refuses keeps the old one.
                    tracing::warn!(
                        prompt = %crate::config::values::preview(&prompt, crate::config::values::SHOWN_CHARS),
                        error = %e,
                        "prompt not encoded; keeping the current one"
                    );
                    if live.waiting.as_ref().is_some_and(|w| w.prompt == prompt || w.negative_prompt == prompt) {
                        live.waiting = None;
                    }
                }
            }
        }
        if let Some(waiting) = &live.waiting
            && self.path.diffusion().missing_prompts(&waiting.params()).is_empty()
        {
            let values = waiting.clone();
            live.waiting = None;
            self.apply(&values, ready)?;
        }
        let Some(live) = self.live.as_mut() else { return Ok(()) };
        if let Some(t) = live.transition.as_mut() {
            t.frame += 1;
            let blended = self.path.blend_context(&t.from, t.frame as f32 / t.frames as f32)?;
            if !blended || t.frame >= t.frames {
                live.transition = None;
            }
        }
        Ok(())
    }

    /// Apply `values` now (their prompts are encoded): finish the stream batch, rebuild the frame path when a
    /// diffusion value changed, reset the similarity filter.
    fn apply(&mut self, values: &LiveValues, ready: &mut Vec<RgbImage>) -> Result<()> {
        let Some(live) = self.live.as_mut() else { return Ok(()) };
        let old = live.current.clone();
        // What the changed knobs' declarations say a change costs (crate::knobs::LiveCost).
        let cost = old.cost_of_change(values);
        if cost == LiveCost::Nothing {
            // The window's view or the pose smoothing: used elsewhere, nothing here to flush or rebuild.
            live.current = values.clone();
            return Ok(());
        }
        collect(&mut self.path, self.size, ready, |path, each| path.finish(each))?;
        let rebuild = cost >= LiveCost::Rebuild;
        // A new transition starts from what is bound now: mid-transition, the blend so far.
        let from = match (self.path.prepared().embeddings_shared(), live.transition.as_ref()) {
            (Some(to), Some(t)) => Some(t.from.blend(&to, t.frame as f32 / t.frames as f32).map_or(to, Arc::new)),
            (to, _) => to,
        };
        if rebuild {
            let started = Instant::now();
            let scale = values.controlnet_scale.map(|s| s as f32);
            match self.path.reconfigure(&values.params(), values.feedback as f32, scale) {
                Ok(()) => {
                    tracing::debug!(ms = started.elapsed().as_millis() as u64, "frame path rebuilt for new values")
                }
                // What the hub could not know about this model (a ControlNet without a conditioning-scale input):
                // the run goes on with the values it had.
                Err(e) if e.kind() == crate::error::ErrorKind::BadInput => {
                    tracing::warn!("live change not applied, keeping the previous values: {}", e.chain_text());
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let threshold = if live.similarity_usable { values.similarity_threshold as f32 } else { 0.0 };
        self.similarity.set_threshold(threshold);
        self.last_output = None;
        let prompt_changed = values.prompt != old.prompt || values.negative_prompt != old.negative_prompt;
        let transition = match from {
            Some(from) if prompt_changed && values.transition_frames > 0 => {
                Some(Transition { from, frame: 0, frames: values.transition_frames })
            }
            _ => None,
        };
        if let Some(live) = self.live.as_mut() {
            live.current = values.clone();
            if transition.is_some() || prompt_changed {
                live.transition = transition;
            }
        }
        Ok(())
    }
}

/// The similarity filter needs every frame in order through one slot: not with a stream batch, and not for
/// pose-guided runs (they follow the skeleton, which the filter does not see).
fn similarity_usable(path: &FramePath) -> bool {
    path.lag_frames() == 0 && path.control().is_none()
}

/// Run `step` on the frame path and append what it emits to `ready` as images.
fn collect(
    path: &mut FramePath,
    (width, height): (u32, u32),
    ready: &mut Vec<RgbImage>,
    step: impl FnOnce(&mut FramePath, &mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<()> {
    let mut wrong_size = false;
    let multiple = path.diffusion().size_multiple(path.prepared());
    step(path, &mut |bytes: &[u8]| match RgbImage::from_raw(width, height, bytes.to_vec()) {
        Some(image) => ready.push(image),
        None => wrong_size = true,
    })
    .map_err(|e| e.or_out_of_memory((width, height), multiple))?;
    if wrong_size {
        return Err(Error::internal("DiffusionProcessor", "an output frame of the wrong size"));
    }
    Ok(())
}

impl Processor for DiffusionProcessor {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn model(&self) -> Option<super::stats::ModelSummary> {
        let folder = self.path.diffusion().folder();
        Some(super::stats::ModelSummary { name: folder.name.clone(), family: folder.family.key() })
    }

    fn lag_frames(&self) -> usize {
        self.path.lag_frames()
    }

    fn warm_up(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let multiple = self.path.diffusion().size_multiple(self.path.prepared());
        self.path.warm_up().map_err(|e| e.or_out_of_memory(self.size, multiple))?;
        Ok(started.elapsed())
    }

    fn push(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.ran = false;
        self.before_frame(ready)?;
        // (The filter is off for pose-guided runs: it sees the picture, not the skeleton. With a mask it compares
        // only the area to change: the kept area is the input's own in every shown frame, see `crate::composite`.)
        let mask = frame.conditioning.mask.as_deref();
        if let (Decision::Reuse, Some(last)) = (self.similarity.check_masked(&frame.image, mask), &self.last_output) {
            ready.push(last.clone());
            return Ok(());
        }
        let keep = self.similarity.settings().threshold > 0.0;
        let inputs = Inputs::of(frame, self.path.txt2img());
        collect(&mut self.path, self.size, ready, |path, each| path.push(inputs, each))?;
        self.ran = true;
        if keep && let Some(last) = ready.last() {
            // Into the kept buffer: no allocation per frame once it exists.
            match &mut self.last_output {
                Some(kept) if kept.dimensions() == last.dimensions() => kept.copy_from_slice(last.as_raw()),
                kept => *kept = Some(last.clone()),
            }
        }
        Ok(())
    }

    fn finish(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
        collect(&mut self.path, self.size, ready, |path, each| path.finish(each))?;
        if self.similarity.skipped_total() > 0 {
            tracing::info!(frames = self.similarity.skipped_total(), "similarity filter reused the last output");
        }
        Ok(())
    }

    fn control(&mut self, values: &LiveValues, ready: &mut Vec<RgbImage>) -> Result<()> {
        let Some(live) = self.live.as_mut() else { return Ok(()) };
        let missing = self.path.diffusion().missing_prompts(&values.params());
        if missing.is_empty() {
            live.waiting = None;
            return self.apply(values, ready);
        }
        // The new prompt is encoded on its own thread; everything else applies now, with the prompt in use.
        for prompt in &missing {
            live.prompts.request(prompt);
        }
        live.waiting = Some(values.clone());
        let mut now = values.clone();
        now.prompt = live.current.prompt.clone();
        now.negative_prompt = live.current.negative_prompt.clone();
        if self.path.diffusion().missing_prompts(&now.params()).is_empty() {
            self.apply(&now, ready)?;
        }
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        if !self.ran {
            return Vec::new();
        }
        let t = self.path.last_times();
        let d = |ms: f64| Duration::from_secs_f64(ms / 1e3);
        vec![
            ("vae encode", d(t.vae_encode_ms)),
            ("unet", d(t.unet_ms)),
            ("vae decode", d(t.vae_decode_ms)),
            ("tensor graphs", d(t.graphs_ms)),
        ]
    }
}
