//! The img2img loop: encode -> noise to the first timestep -> 1..8 LCM steps -> decode.
//!
//! [`Diffusion`] owns every session of one model folder (one owner per heavy resource: run it from one
//! thread). [`Params`] are the hot parameters a user turns; [`Diffusion::prepare`] turns them into a
//! [`Prepared`] (schedule scalars, prompt embeddings, guidance embedding) once, so the per-frame path does only
//! tensor work.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView4, Axis, Zip, concatenate, s};

use super::controlnet::ControlNet;
use super::noise::NoiseBank;
use super::scheduler::{Lcm, Plan, Schedule, guidance_embedding};
use super::text::{Embeddings, TextEncoder};
use super::unet::{Added, Unet};
use super::vae::{VaeDecoder, VaeEncoder};
use crate::error::{Error, Result};
use crate::infer::Runtime;
use crate::model::{Family, ModelFolder};

/// Guidance scales accepted (1.0-2.5 is the useful range for LCM / Turbo; 1.0 or below means no guidance).
pub const MAX_GUIDANCE: f64 = crate::knobs::GUIDANCE.float_bounds().1;

/// The knobs of one img2img run.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub prompt: String,
    /// Classifier-free guidance's unconditional prompt (empty = diffusers' default).
    pub negative_prompt: String,
    pub steps: usize,
    /// 0 = VAE only (encode -> decode), 1 = ignore the input image's content.
    pub strength: f64,
    /// Full LCM models (timestep_cond) take it as an embedding; other models run classifier-free guidance
    /// (a batch of 2) when it is above 1.
    /// f64 as the user wrote it (as diffusers keeps it), so derived values round the same way.
    pub guidance: f64,
    pub seed: u64,
    /// Explicit timesteps (descending), used as given instead of steps/strength.
    pub timesteps: Option<Vec<u32>>,
}

impl Params {
    /// Check every value for the range it is used in and resolve the schedule (before any model runs).
    pub fn check(&self, lcm: &Lcm) -> Result<Schedule> {
        if !(self.guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&self.guidance)) {
            return Err(Error::invalid(
                "guidance",
                format!("{} (expected 0 to {MAX_GUIDANCE})", crate::knobs::show_f64(self.guidance)),
            ));
        }
        lcm.schedule(self.timesteps.as_deref(), self.steps, self.strength)
    }

    /// The model's defaults with an empty prompt and seed 0.
    pub fn defaults_for(folder: &ModelFolder) -> Params {
        Params {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: folder.defaults.steps,
            strength: folder.defaults.strength,
            guidance: folder.defaults.guidance,
            seed: 0,
            timesteps: None,
        }
    }
}

/// Per-parameter state, computed when parameters change, reused for every frame.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub params: Params,
    pub schedule: Schedule,
    pub plan: Plan,
    /// `[1 or 2, ...]` rows: the prompt's embeddings (and, SDXL, its pooled vector), or [negative; prompt] for
    /// classifier-free guidance.
    embeddings: Option<Arc<Embeddings>>,
    /// `[1 or 2, cond_dim]` guidance embedding for full LCM models.
    timestep_cond: Option<Array2<f32>>,
    /// Classifier-free guidance scale, when running it.
    cfg_scale: Option<f32>,
}

impl Prepared {
    /// True when the run is the VAE only (strength 0).
    pub fn vae_only(&self) -> bool {
        self.schedule.is_vae_only()
    }
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale.is_some()
    }

    /// The prompt embeddings, shared (prompt transitions blend from them).
    pub fn embeddings_shared(&self) -> Option<Arc<Embeddings>> {
        self.embeddings.clone()
    }
    /// The prompt embeddings (`[1 or 2, tokens, width]`); a VAE-only run has none (asking for them is a bug).
    pub(crate) fn context_view(&self) -> Result<ndarray::ArrayView3<'_, f32>> {
        self.context()
    }
    /// The pooled prompt embeddings `[1 or 2, width]` of an SDXL-family model.
    pub(crate) fn pooled_view(&self) -> Option<ndarray::ArrayView2<'_, f32>> {
        self.embeddings.as_ref()?.pooled.as_ref().map(|p| p.view())
    }
    /// The guidance embedding `[1, cond_dim]` of full LCM models.
    pub(crate) fn timestep_cond_view(&self) -> Option<ndarray::ArrayView2<'_, f32>> {
        self.timestep_cond.as_ref().map(|c| c.view())
    }
    /// The classifier-free guidance scale, when the run uses it.
    pub(crate) fn cfg_scale_value(&self) -> Option<f32> {
        self.cfg_scale
    }

    /// The prompt embeddings (all parts); a VAE-only run has none (asking for them is a bug).
    pub(crate) fn embeddings_ref(&self) -> Result<&Embeddings> {
        self.embeddings
            .as_deref()
            .ok_or_else(|| Error::internal("denoise", "a VAE-only run (strength 0) has no prompt embeddings"))
    }

    /// The prompt embeddings' hidden states.
    fn context(&self) -> Result<ndarray::ArrayView3<'_, f32>> {
        Ok(self.embeddings_ref()?.context.view())
    }

    /// What an SDXL-family UNet takes besides the context (`time_ids` made for the picture's size; None for
    /// other models).
    fn added<'a>(&'a self, time_ids: &'a Array2<f32>) -> Option<Added<'a>> {
        Some(Added { text_embeds: self.pooled_view()?, time_ids: time_ids.view() })
    }
}

/// The folder's family against what its UNet takes: SDXL's added conditions come from the second encoder's
/// pooled output, of the width the UNet takes.
fn check_family(folder: &ModelFolder, text: &TextEncoder, unet: &Unet) -> Result<()> {
    let bad = |problem: String| Err(Error::ModelFolder { path: folder.dir.clone(), problem });
    match (folder.family, unet.added_conditions) {
        (Family::Sdxl, false) => bad(
            "family = \"sdxl\" but the UNet takes no text_embeds and time_ids (an SD1.x/SD2.x UNet: remove family, \
             text-encoder-2 and [sdxl])"
                .into(),
        ),
        (Family::Sd, true) => bad(
            "the UNet takes SDXL's text_embeds and time_ids: set family = \"sdxl\" and name the second text encoder \
             ([files] text-encoder-2 and tokenizer-2)"
                .into(),
        ),
        (Family::Sdxl, true) => match (text.pooled_size(), unet.pooled_width()) {
            (Some(made), Some(taken)) if made != taken => bad(format!(
                "text encoder 2 makes {made}-wide pooled embeddings but the UNet's text_embeds takes {taken}"
            )),
            _ => Ok(()),
        },
        (Family::Sd, false) => Ok(()),
    }
}

/// Milliseconds spent per stage in the last run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    pub vae_encode_ms: f64,
    pub unet_ms: f64,
    pub vae_decode_ms: f64,
    /// latentcam's own small graphs (frame path only): pre/post-processing, noise, LCM step.
    pub graphs_ms: f64,
}

pub struct Diffusion {
    folder: ModelFolder,
    /// None once handed to the prompt thread ([`Diffusion::take_text_encoder`]); prompts then come from
    /// `embeddings`.
    text: Option<TextEncoder>,
    /// Prompt embeddings made elsewhere (the prompt thread), most recently used last.
    embeddings: Vec<(String, Arc<Embeddings>)>,
    unet: Unet,
    vae_encoder: VaeEncoder,
    vae_decoder: VaeDecoder,
    lcm: Lcm,
    noise: Option<NoiseBank>,
    last_times: StageTimes,
    controlnet: Option<ControlNet>,
}

impl Diffusion {
    /// Load every model of the folder and check them against each other.
    pub fn load(runtime: &Runtime, folder: &ModelFolder) -> Result<Diffusion> {
        Self::load_models(runtime, folder, false)
    }

    /// [`Diffusion::load`] with the folder's ControlNet and the UNet that takes its residuals (pose-guided
    /// generation); a folder without them is bad input.
    pub fn load_with_controlnet(runtime: &Runtime, folder: &ModelFolder) -> Result<Diffusion> {
        Self::load_models(runtime, folder, true)
    }

    fn load_models(runtime: &Runtime, folder: &ModelFolder, with_controlnet: bool) -> Result<Diffusion> {
        let text = TextEncoder::load(runtime, folder)?;
        let (unet, controlnet) = if with_controlnet {
            let files = folder.controlnet.as_ref().ok_or_else(|| Error::ModelFolder {
                path: folder.dir.clone(),
                problem: "has no ControlNet ([files] controlnet and unet-controlnet in model.toml; \
                          scripts/export_models.py real ... --controlnet openpose makes them)"
                    .into(),
            })?;
            let unet = Unet::load_with_residuals(runtime, &files.unet, folder.latent_channels)?;
            let controlnet = ControlNet::load(runtime, &files.controlnet, unet.model())?;
            // The ControlNet sees what the UNet sees: an SDXL one the added conditions too.
            let sdxl = folder.family == Family::Sdxl;
            if controlnet.takes_added_conditions() != sdxl {
                let (model, net) = if sdxl { ("an SDXL", "an SD1.x") } else { ("an SD1.x", "an SDXL") };
                return Err(Error::ModelFolder {
                    path: folder.dir.clone(),
                    problem: format!(
                        "is {model}-family model but its ControlNet {} is {net} ControlNet ({} text_embeds and \
                         time_ids): export the ControlNet made for this family (scripts/export_models.py real PRESET \
                         OUT --controlnet openpose)",
                        files.controlnet.display(),
                        if sdxl { "it takes no" } else { "it takes" }
                    ),
                });
            }
            (unet, Some(controlnet))
        } else {
            (Unet::load(runtime, &folder.unet, folder.latent_channels)?, None)
        };
        // The family first: a UNet of the other family also differs in width, and the family is the reason.
        check_family(folder, &text, &unet)?;
        if let (Some(text_width), Some(unet_width)) = (text.hidden_size(), unet.context_width())
            && text_width != unet_width
        {
            return Err(Error::ModelFolder {
                path: folder.dir.clone(),
                problem: format!(
                    "the text encoder makes {text_width}-wide embeddings but the UNet's encoder_hidden_states \
                     takes {unet_width}"
                ),
            });
        }
        let vae_encoder = VaeEncoder::load(runtime, folder)?;
        let vae_decoder = VaeDecoder::load(runtime, folder)?;
        Ok(Diffusion {
            folder: folder.clone(),
            text: Some(text),
            embeddings: Vec::new(),
            unet,
            vae_encoder,
            vae_decoder,
            lcm: Lcm::new(folder.scheduler.clone()),
            noise: None,
            last_times: StageTimes::default(),
            controlnet,
        })
    }

    pub fn controlnet(&self) -> Option<&ControlNet> {
        self.controlnet.as_ref()
    }
    pub(crate) fn controlnet_mut(&mut self) -> Option<&mut ControlNet> {
        self.controlnet.as_mut()
    }

    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }
    pub fn scheduler(&self) -> &Lcm {
        &self.lcm
    }
    /// The text encoder, unless it was handed to the prompt thread.
    pub fn text_encoder(&self) -> Option<&TextEncoder> {
        self.text.as_ref()
    }
    pub fn text_encoder_mut(&mut self) -> Option<&mut TextEncoder> {
        self.text.as_mut()
    }

    /// Hand the text encoder over (to a thread of its own that encodes new prompts while frames run). From
    /// then on [`Diffusion::prepare`] takes prompts from [`Diffusion::provide_embedding`].
    pub fn take_text_encoder(&mut self) -> Option<TextEncoder> {
        self.text.take()
    }

    /// Embeddings for `prompt`, made by the text encoder's thread.
    pub fn provide_embedding(&mut self, prompt: &str, embeddings: Arc<Embeddings>) {
        self.embeddings.retain(|(p, _)| p != prompt);
        if self.embeddings.len() == super::text::CACHE_PROMPTS {
            self.embeddings.remove(0);
        }
        self.embeddings.push((prompt.to_string(), embeddings));
    }

    /// The prompts `params` needs encoded that are neither cached here nor encodable here (the text encoder was
    /// handed over): the prompt, and the negative prompt when classifier-free guidance runs.
    pub fn missing_prompts(&self, params: &Params) -> Vec<String> {
        if self.text.is_some() || params.strength == 0.0 && params.timesteps.is_none() {
            return Vec::new();
        }
        let mut needed = vec![params.prompt.clone()];
        if self.unet.cond_dim.is_none() && params.guidance > 1.0 && !self.zeros_for(&params.negative_prompt) {
            needed.push(params.negative_prompt.clone());
        }
        needed.retain(|p| !self.embeddings.iter().any(|(q, _)| q == p));
        needed.dedup();
        needed
    }

    /// SDXL base and Turbo: an empty negative prompt means zeros, not the encoding of "".
    fn zeros_for(&self, negative_prompt: &str) -> bool {
        negative_prompt.is_empty() && self.folder.sdxl.as_ref().is_some_and(|s| s.force_zeros_for_empty_prompt)
    }

    fn embedding(&mut self, prompt: &str) -> Result<Arc<Embeddings>> {
        if let Some(text) = self.text.as_mut() {
            return text.encode(prompt);
        }
        // Most recently used last: a used prompt is the last to be evicted.
        let pos = self.embeddings.iter().position(|(p, _)| p == prompt).ok_or_else(|| {
            Error::internal("prompt", format!("{prompt:?} was not encoded before the parameters changed"))
        })?;
        let entry = self.embeddings.remove(pos);
        let embeddings = entry.1.clone();
        self.embeddings.push(entry);
        Ok(embeddings)
    }
    pub fn unet(&self) -> &Unet {
        &self.unet
    }
    pub fn vae_encoder(&self) -> &VaeEncoder {
        &self.vae_encoder
    }
    pub fn vae_decoder(&self) -> &VaeDecoder {
        &self.vae_decoder
    }
    pub(crate) fn unet_mut(&mut self) -> &mut Unet {
        &mut self.unet
    }
    pub(crate) fn vae_encoder_mut(&mut self) -> &mut VaeEncoder {
        &mut self.vae_encoder
    }
    pub(crate) fn vae_decoder_mut(&mut self) -> &mut VaeDecoder {
        &mut self.vae_decoder
    }
    pub fn last_times(&self) -> StageTimes {
        self.last_times
    }

    /// Validate parameters and compute everything that depends only on them.
    pub fn prepare(&mut self, params: &Params) -> Result<Prepared> {
        let schedule = params.check(&self.lcm)?;
        let plan = self.lcm.plan(&schedule);
        if schedule.is_vae_only() {
            return Ok(Prepared {
                params: params.clone(),
                schedule,
                plan,
                embeddings: None,
                timestep_cond: None,
                cfg_scale: None,
            });
        }
        let cond_dim = self.unet.cond_dim;
        let cfg_scale = (cond_dim.is_none() && params.guidance > 1.0).then_some(params.guidance as f32);
        let prompt = self.embedding(&params.prompt)?;
        if self.unet.added_conditions && prompt.pooled.is_none() {
            return Err(Error::ModelFolder {
                path: self.folder.dir.clone(),
                problem: "its UNet takes text_embeds and time_ids (SDXL) but the folder is not family = \"sdxl\" \
                          (no pooled embedding from a second text encoder)"
                    .into(),
            });
        }
        let embeddings = if cfg_scale.is_some() {
            let negative = if self.zeros_for(&params.negative_prompt) {
                Arc::new(prompt.zeros_like())
            } else {
                self.embedding(&params.negative_prompt)?
            };
            Arc::new(Embeddings::stack(&negative, &prompt)?)
        } else {
            prompt
        };
        let timestep_cond = cond_dim.map(|dim| {
            let embedding = guidance_embedding(params.guidance, dim);
            Array2::from_shape_vec((1, dim), embedding)
                .map_err(|e| Error::internal("guidance embedding", format!("not {dim} wide: {e}")))
        });
        let timestep_cond = timestep_cond.transpose()?;
        Ok(Prepared { params: params.clone(), schedule, plan, embeddings: Some(embeddings), timestep_cond, cfg_scale })
    }

    /// Side length the image must be a multiple of for this run.
    pub fn size_multiple(&self, prepared: &Prepared) -> u32 {
        self.folder.size_multiple_for(&prepared.schedule)
    }

    /// img2img on `image` ([1, 3, H, W], RGB 0..1) with the seed's fixed noise. Returns RGB 0..1.
    pub fn run(&mut self, prepared: &Prepared, image: ArrayView4<f32>) -> Result<Array4<f32>> {
        let (_, _, h, w) = image.dim();
        let shape = (1, self.folder.latent_channels, h / 8, w / 8);
        let count = prepared.plan.steps.len();
        let seed = prepared.params.seed;
        let noise = match self.noise.take() {
            Some(bank) if bank.fits(seed, shape, count) => bank,
            _ => NoiseBank::new(seed, shape, count.max(1)),
        };
        let out = self.run_with_noise(prepared, image, &noise);
        self.noise = Some(noise);
        out
    }

    /// img2img with explicit noise (tensor 0 for the first timestep, tensor i to re-noise after step i).
    pub fn run_with_noise(
        &mut self,
        prepared: &Prepared,
        image: ArrayView4<f32>,
        noise: &NoiseBank,
    ) -> Result<Array4<f32>> {
        let (batch, channels, h, w) = image.dim();
        let multiple = self.size_multiple(prepared) as usize;
        if batch != 1 || channels != 3 || h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0 {
            return Err(Error::invalid(
                "image size",
                format!("{w}x{h} (this model needs sides that are multiples of {multiple})"),
            ));
        }
        let mut times = StageTimes::default();
        let started = Instant::now();
        let latents = self.vae_encoder.encode(image)?;
        times.vae_encode_ms = ms_since(started);

        let denoised = if prepared.vae_only() {
            latents
        } else {
            let started = Instant::now();
            let out = self.denoise(prepared, latents.view(), noise)?;
            times.unet_ms = ms_since(started);
            out
        };

        let started = Instant::now();
        let decoded = self.vae_decoder.decode(denoised.view())?;
        times.vae_decode_ms = ms_since(started);
        self.last_times = times;
        Ok(decoded)
    }

    /// The LCM loop on encoded latents; returns the final denoised latents.
    pub fn denoise(&mut self, prepared: &Prepared, latents: ArrayView4<f32>, noise: &NoiseBank) -> Result<Array4<f32>> {
        let plan = &prepared.plan;
        if self.unet.inpainting && !plan.steps.is_empty() {
            return Err(needs_mask(&self.folder));
        }
        if noise.len() < plan.steps.len() || noise.shape() != latents.dim() {
            return Err(Error::inference(
                "denoise",
                format!(
                    "noise bank has {} tensors of {:?}; the run needs {} of {:?}",
                    noise.len(),
                    noise.shape(),
                    plan.steps.len(),
                    latents.dim()
                ),
            ));
        }
        let context = prepared.context()?;
        let cond = prepared.timestep_cond.as_ref().map(|c| c.view());
        let (_, _, lh, lw) = latents.dim();
        let time_ids = super::unet::time_ids(lh * 8, lw * 8, prepared.embeddings.as_ref().map_or(1, |e| e.rows()));
        let added = prepared.added(&time_ids);
        let mut sample = plan.add_noise(latents, noise.get(0));
        let mut denoised = Array4::zeros(sample.dim());
        for (i, step) in plan.steps.iter().enumerate() {
            let model_output = match prepared.cfg_scale {
                None => self.unet.predict(sample.view(), step.timestep, context, cond, added)?,
                Some(scale) => {
                    let doubled = concatenate(Axis(0), &[sample.view(), sample.view()])
                        .map_err(|e| Error::internal("classifier-free guidance batch", e))?;
                    let both = self.unet.predict(doubled.view(), step.timestep, context, cond, added)?;
                    let (uncond, text) = (both.slice(s![0..1, .., .., ..]), both.slice(s![1..2, .., .., ..]));
                    Zip::from(&uncond).and(&text).map_collect(|&u, &t| u + scale * (t - u))
                }
            };
            let renoise = (i + 1 < plan.steps.len()).then(|| noise.get(i + 1));
            plan.step(i, model_output.view(), &mut sample, &mut denoised, renoise);
        }
        Ok(denoised)
    }

    /// VAE encode only (benchmarks).
    pub fn encode(&mut self, image: ArrayView4<f32>) -> Result<Array4<f32>> {
        self.vae_encoder.encode(image)
    }

    /// VAE decode only (benchmarks).
    pub fn decode(&mut self, latents: ArrayView4<f32>) -> Result<Array4<f32>> {
        self.vae_decoder.decode(latents)
    }

    /// One UNet evaluation at the plan's first timestep (benchmarks).
    pub fn unet_once(&mut self, prepared: &Prepared, latents: ArrayView4<f32>) -> Result<Array4<f32>> {
        let context = prepared.context()?;
        let cond = prepared.timestep_cond.as_ref().map(|c| c.view());
        let t = prepared.plan.steps.first().map_or(999, |s| s.timestep);
        let (_, _, lh, lw) = latents.dim();
        let time_ids = super::unet::time_ids(lh * 8, lw * 8, prepared.embeddings.as_ref().map_or(1, |e| e.rows()));
        let added = prepared.added(&time_ids);
        if prepared.cfg_scale.is_some() {
            let doubled = concatenate(Axis(0), &[latents, latents])
                .map_err(|e| Error::internal("classifier-free guidance batch", e))?;
            self.unet.predict(doubled.view(), t, context, cond, added)
        } else {
            self.unet.predict(latents, t, context, cond, added)
        }
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// The refusal of a run without a mask on an inpainting model.
pub(crate) fn needs_mask(folder: &ModelFolder) -> Error {
    Error::invalid(
        "mask",
        format!(
            "{} is an inpainting model (its UNet takes the mask and the masked image): it runs only with a mask \
             ([mask] in a pipeline, --mask for convert)",
            folder.name
        ),
    )
}
