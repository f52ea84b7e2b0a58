//! What TensorRT is told about each model a pipeline loads: whether its engine is built in fp16, and the
//! min/opt/max shape of every dynamic input (the optimisation profile). Both are part of the engine-cache key
//! ([`super::trt`]), so engines for another precision or another working size live side by side.
//!
//! A pipeline sets them with [`super::Runtime::with_tensorrt`]; sessions made without (`img2img`, `models
//! check`, the bench's stage table, the pose models) keep TensorRT's defaults: fp32, profiles made by ONNX
//! Runtime from the first run.
//!
//! - **fp16** (`[engine] tensorrt-fp16`): `auto` builds the UNet, the ControlNet and the VAE in fp16, as TensorRT
//!   users expect from fp32 exports, except a VAE that model.toml marks `vae-fp32-only` (SDXL's original VAE
//!   overflows in fp16); the text encoder stays fp32 (it runs once per prompt). `on`: every model file in fp16;
//!   `off`: none. latentcam's own small graphs (pre/post-processing, noise, LCM step) are always fp32.
//! - **Profiles**: min = opt = max = the working size (latents: an eighth of it) and the batch the run starts
//!   with: the UNet and ControlNet take the stream batch, twice that when classifier-free guidance runs (a UNet
//!   without `timestep_cond` and guidance above 1); the VAE takes the frames of one VAE run. Where live control
//!   can change guidance or steps, the batch's min and max cover every batch those changes reach (TensorRT
//!   refuses a shape outside the profile), opt stays the starting one. A model with a dynamic dimension whose
//!   size is only known at run time (a ControlNet UNet's residual inputs) gets no explicit profile: ONNX Runtime
//!   then makes one from the first run, and the working shapes still go into the cache key.

use std::path::PathBuf;

use serde::Deserialize;

use super::onnx_graph::{self, DeclaredInput};
use super::settings::{SessionSettings, ShapeProfile};

/// `[engine] tensorrt-fp16`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fp16 {
    /// fp16 for the UNet, the ControlNet and the VAE (unless model.toml says `vae-fp32-only`).
    #[default]
    Auto,
    /// fp16 for every model file.
    On,
    /// fp32 everywhere.
    Off,
}

impl Fp16 {
    pub const ALL: [Fp16; 3] = [Fp16::Auto, Fp16::On, Fp16::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Fp16::Auto => "auto",
            Fp16::On => "on",
            Fp16::Off => "off",
        }
    }
}

impl std::fmt::Display for Fp16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The models of a pipeline as their TensorRT settings tell them apart, from the role names
/// [`super::Runtime::load`] gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRole {
    TextEncoder,
    Unet,
    ControlNet,
    VaeEncoder,
    VaeDecoder,
    /// Anything else (pose models): TensorRT's defaults.
    Other,
}

impl ModelRole {
    pub fn of(role: &str) -> ModelRole {
        match role {
            "text encoder" => ModelRole::TextEncoder,
            "UNet" => ModelRole::Unet,
            "ControlNet" => ModelRole::ControlNet,
            "VAE encoder" => ModelRole::VaeEncoder,
            "VAE decoder" => ModelRole::VaeDecoder,
            _ => ModelRole::Other,
        }
    }

    fn is_vae(self) -> bool {
        matches!(self, ModelRole::VaeEncoder | ModelRole::VaeDecoder)
    }
}

/// A batch dimension's profile: `opt` the batch the run starts with, `min` and `max` the smallest and largest a
/// live change can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRange {
    pub min: i64,
    pub opt: i64,
    pub max: i64,
}

impl BatchRange {
    pub fn fixed(batch: i64) -> BatchRange {
        BatchRange { min: batch, opt: batch, max: batch }
    }
}

/// What a pipeline runs its models at, known once its working size is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// The working size (images; latents are an eighth of it).
    pub width: u32,
    pub height: u32,
    /// model.toml's `latent-channels`.
    pub latent_channels: u32,
    /// Tokens of the prompt embeddings (`[tokenizer] max-length`, CLIP's 77).
    pub tokens: u32,
    /// Items of one UNet run before guidance doubles them: the stream batch (1: none).
    pub stream_batch: u32,
    /// Frames of one VAE run: the stream batch with one step (a frame batch), else 1 (single frames, or a
    /// denoising batch, which encodes and decodes one frame per run).
    pub vae_frames: u32,
    /// `[params] guidance`: above 1 a UNet without `timestep_cond` runs classifier-free guidance (batch x2).
    pub guidance: f64,
    /// Live control may change guidance and steps while the pipeline runs.
    pub live: bool,
}

impl Workload {
    /// The batch of the UNet (and the ControlNet, which runs beside it), for a UNet that runs classifier-free
    /// guidance when guidance asks for it (`cfg_capable`: it has no `timestep_cond` input).
    pub fn unet_batch(&self, cfg_capable: bool) -> BatchRange {
        let items = i64::from(self.stream_batch.max(1));
        let now = if cfg_capable && self.guidance > 1.0 { 2 } else { 1 };
        // Live, guidance may cross 1 either way.
        let (low, high) = if cfg_capable && self.live { (1, 2) } else { (now, now) };
        BatchRange { min: items * low, opt: items * now, max: items * high }
    }

    /// The batch of the VAE encoder and decoder.
    pub fn vae_batch(&self) -> BatchRange {
        let now = i64::from(self.vae_frames.max(1));
        if self.live && self.stream_batch > 1 {
            // A live step change turns a frame batch (k frames per VAE run) into a denoising batch (1) and back.
            BatchRange { min: 1, opt: now, max: i64::from(self.stream_batch) }
        } else {
            BatchRange::fixed(now)
        }
    }

    /// The working shapes in words, for the cache key of a model whose profile ONNX Runtime makes.
    fn describe(&self, role: ModelRole, cfg_capable: bool) -> String {
        let batch = match role {
            ModelRole::Unet | ModelRole::ControlNet => self.unet_batch(cfg_capable),
            ModelRole::VaeEncoder | ModelRole::VaeDecoder => self.vae_batch(),
            _ => BatchRange::fixed(1),
        };
        format!(
            "image {}x{} latent {}x{}x{} tokens {} batch min {} opt {} max {}",
            self.width,
            self.height,
            self.latent_channels,
            self.height / 8,
            self.width / 8,
            self.tokens,
            batch.min,
            batch.opt,
            batch.max
        )
    }
}

/// The TensorRT settings of one pipeline's models ([`super::Runtime::with_tensorrt`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRt {
    pub fp16: Fp16,
    /// model.toml's `vae-fp32-only`: `auto` keeps the VAE in fp32.
    pub vae_fp32_only: bool,
    /// The UNet the pipeline runs: whether it has a `timestep_cond` input decides if guidance doubles its batch
    /// and the ControlNet's.
    pub unet: PathBuf,
    /// The shapes the models run at; `None`: no explicit profiles.
    pub workload: Option<Workload>,
}

/// What one model's TensorRT engine is built with.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineOptions {
    pub fp16: bool,
    /// Every dynamic input's profile (`trt_profile_{min,opt,max}_shapes`); empty: none are set.
    pub profiles: Vec<ShapeProfile>,
    /// With a workload but no explicit profiles: why not, and the working shapes (for the cache key).
    pub implicit: Option<(String, String)>,
}

impl TensorRt {
    /// Whether `role`'s engine is built in fp16.
    pub fn fp16_for(&self, role: ModelRole) -> bool {
        match self.fp16 {
            Fp16::Off => false,
            Fp16::On => role != ModelRole::Other,
            Fp16::Auto => match role {
                ModelRole::Unet | ModelRole::ControlNet => true,
                ModelRole::VaeEncoder | ModelRole::VaeDecoder => !self.vae_fp32_only,
                ModelRole::TextEncoder | ModelRole::Other => false,
            },
        }
    }

    /// The options for a model in `role` whose file declares `inputs`; `cfg_capable`: the pipeline's UNet has no
    /// `timestep_cond` (so guidance above 1 doubles the batch). No I/O.
    pub fn engine_options(&self, role: ModelRole, inputs: &[DeclaredInput], cfg_capable: bool) -> EngineOptions {
        let fp16 = self.fp16_for(role);
        let Some(workload) = &self.workload else {
            return EngineOptions { fp16, profiles: Vec::new(), implicit: None };
        };
        match profiles(role, inputs, workload, cfg_capable) {
            Ok(profiles) => EngineOptions { fp16, profiles, implicit: None },
            Err(why) => EngineOptions {
                fp16,
                profiles: Vec::new(),
                implicit: Some((why, workload.describe(role, cfg_capable))),
            },
        }
    }

    /// `base` (a model's session settings) with this pipeline's TensorRT settings for `role`: reads the model's
    /// declared inputs (and the UNet's, for a ControlNet) from their files.
    pub fn session_settings(&self, role: &str, base: SessionSettings) -> SessionSettings {
        let model_role = ModelRole::of(role);
        let mut inputs = Vec::new();
        let mut cfg_capable = false;
        if self.workload.is_some() && model_role != ModelRole::Other {
            match onnx_graph::graph_inputs(&base.model_path) {
                Ok(found) => inputs = found,
                Err(e) => {
                    tracing::debug!(role, model = %base.model_path.display(), error = %e, "cannot read the model's inputs")
                }
            }
            cfg_capable = match model_role {
                ModelRole::Unet => !has_timestep_cond(&inputs),
                ModelRole::ControlNet => onnx_graph::graph_inputs(&self.unet).map_or_else(
                    // The ControlNet follows the UNet; unreadable, its own inputs are the best guess.
                    |_| !has_timestep_cond(&inputs),
                    |unet| !has_timestep_cond(&unet),
                ),
                _ => false,
            };
        }
        let options = self.engine_options(model_role, &inputs, cfg_capable);
        if options.fp16 && model_role.is_vae() && self.vae_fp32_only {
            tracing::warn!(
                "[engine] tensorrt-fp16 = \"on\" builds the {role} in fp16 although model.toml marks the VAE \
                 fp32-only: expect black or NaN frames"
            );
        }
        if let Some((why, _)) = &options.implicit {
            tracing::info!(
                "TensorRT: no explicit shape profile for the {role} ({why}); ONNX Runtime makes one at the first run"
            );
        }
        let shapes = |pick: fn(&ShapeProfile) -> &[i64]| super::trt::profile_shapes(&options.profiles, pick);
        tracing::debug!(
            role, fp16 = options.fp16, min_shapes = %shapes(|p| &p.min), opt_shapes = %shapes(|p| &p.opt),
            max_shapes = %shapes(|p| &p.max), "TensorRT settings"
        );
        SessionSettings {
            fp16: options.fp16,
            shape_profiles: options.profiles,
            shape_hint: options.implicit.map(|(_, shapes)| shapes),
            ..base
        }
    }
}

fn has_timestep_cond(inputs: &[DeclaredInput]) -> bool {
    inputs.iter().any(|i| i.name == "timestep_cond")
}

/// The profile of every dynamic input of a model in `role` declaring `inputs`, or why one cannot be given (a
/// dimension whose size is only known at run time). Static inputs need none.
pub fn profiles(
    role: ModelRole,
    inputs: &[DeclaredInput],
    w: &Workload,
    cfg_capable: bool,
) -> Result<Vec<ShapeProfile>, String> {
    if inputs.is_empty() {
        return Err("its inputs could not be read".into());
    }
    let (image_h, image_w) = (i64::from(w.height), i64::from(w.width));
    let (latent_h, latent_w) = (image_h / 8, image_w / 8);
    let (channels, tokens) = (i64::from(w.latent_channels), i64::from(w.tokens));
    let batch = match role {
        ModelRole::Unet | ModelRole::ControlNet => w.unet_batch(cfg_capable),
        ModelRole::VaeEncoder | ModelRole::VaeDecoder => w.vae_batch(),
        // One prompt per run.
        ModelRole::TextEncoder => BatchRange::fixed(1),
        ModelRole::Other => return Err("not a model of the diffusion pipeline".into()),
    };
    // What each input's dimensions are at run time: Some(size) or the batch (None). Unknown inputs: no entry.
    const B: Option<i64> = None;
    let unet_like = matches!(role, ModelRole::Unet | ModelRole::ControlNet);
    let mut out = Vec::new();
    for input in inputs.iter().filter(|i| i.is_dynamic()) {
        let name = input.name.as_str();
        let Some(dims) = &input.dims else {
            return Err(format!("input `{name}` has no declared shape"));
        };
        let layout: Option<Vec<Option<i64>>> = match (role, name, dims.len()) {
            (ModelRole::TextEncoder, "input_ids", 2) => Some(vec![Some(1), Some(tokens)]),
            (_, "sample", 4) if unet_like => Some(vec![B, Some(channels), Some(latent_h), Some(latent_w)]),
            (_, "timestep", 1) if unet_like => Some(vec![B]),
            // (the embedding width is the text encoder's: exports fix it)
            (_, "encoder_hidden_states", 3) if unet_like => Some(vec![B, Some(tokens), None]),
            (_, "timestep_cond", 2) if unet_like => Some(vec![B, None]),
            (ModelRole::ControlNet, "controlnet_cond", 4) => Some(vec![B, Some(3), Some(image_h), Some(image_w)]),
            (ModelRole::ControlNet, "conditioning_scale", 1) => Some(vec![Some(1)]),
            (ModelRole::VaeEncoder, "sample" | "image", 4) => Some(vec![B, Some(3), Some(image_h), Some(image_w)]),
            (ModelRole::VaeDecoder, "latent_sample" | "latent", 4) => {
                Some(vec![B, Some(channels), Some(latent_h), Some(latent_w)])
            }
            _ => None,
        };
        let mut min = Vec::with_capacity(dims.len());
        let mut opt = Vec::with_capacity(dims.len());
        let mut max = Vec::with_capacity(dims.len());
        for (axis, &declared) in dims.iter().enumerate() {
            let (lo, mid, hi) = if declared >= 0 {
                (declared, declared, declared)
            } else {
                match layout.as_ref().and_then(|l| l.get(axis)) {
                    Some(Some(size)) => (*size, *size, *size),
                    // the batch is the first axis
                    Some(None) if axis == 0 => (batch.min, batch.opt, batch.max),
                    _ => {
                        return Err(format!(
                            "input `{name}` has a dynamic dimension {axis} whose size is only known at run time"
                        ));
                    }
                }
            };
            min.push(lo);
            opt.push(mid);
            max.push(hi);
        }
        out.push(ShapeProfile { input: input.name.clone(), min, opt, max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn input(name: &str, dims: &[i64]) -> DeclaredInput {
        DeclaredInput { name: name.into(), dims: Some(dims.to_vec()) }
    }

    /// An SD1.5 export as optimum writes it: dynamic batch, size and sequence length.
    fn sd15_unet() -> Vec<DeclaredInput> {
        vec![
            input("sample", &[-1, 4, -1, -1]),
            input("timestep", &[-1]),
            input("encoder_hidden_states", &[-1, -1, 768]),
        ]
    }

    /// 512x512, SD1.5 (4 latent channels, 77 tokens), stream batch 2 with 1 step, guidance 1.5, offline.
    fn sd15_pipeline(fp16: Fp16) -> TensorRt {
        TensorRt {
            fp16,
            vae_fp32_only: false,
            unet: PathBuf::from("unet.onnx"),
            workload: Some(Workload {
                width: 512,
                height: 512,
                latent_channels: 4,
                tokens: 77,
                stream_batch: 2,
                vae_frames: 2,
                guidance: 1.5,
                live: false,
            }),
        }
    }

    fn shapes(profiles: &[ShapeProfile]) -> [String; 3] {
        [
            super::super::trt::profile_shapes(profiles, |p| &p.min),
            super::super::trt::profile_shapes(profiles, |p| &p.opt),
            super::super::trt::profile_shapes(profiles, |p| &p.max),
        ]
    }

    #[test]
    fn an_sd15_pipeline_with_stream_batch_2_and_guidance_builds_fp16_engines_for_batch_4() {
        let trt = sd15_pipeline(Fp16::Auto);
        let unet = trt.engine_options(ModelRole::Unet, &sd15_unet(), true);
        assert!(unet.fp16);
        let all = "sample:4x4x64x64,timestep:4,encoder_hidden_states:4x77x768".to_string();
        assert_eq!(shapes(&unet.profiles), [all.clone(), all.clone(), all]);
        assert_eq!(unet.implicit, None);

        // The VAE runs the two frames of a frame batch; guidance does not double it.
        let encoder = trt.engine_options(ModelRole::VaeEncoder, &[input("sample", &[-1, 3, -1, -1])], true);
        assert!(encoder.fp16);
        assert_eq!(shapes(&encoder.profiles)[1], "sample:2x3x512x512");
        let decoder = trt.engine_options(ModelRole::VaeDecoder, &[input("latent_sample", &[-1, 4, -1, -1])], true);
        assert_eq!(shapes(&decoder.profiles)[1], "latent_sample:2x4x64x64");

        // The text encoder: fp32 under auto, one prompt of 77 tokens.
        let text = trt.engine_options(ModelRole::TextEncoder, &[input("input_ids", &[-1, -1])], true);
        assert!(!text.fp16);
        assert_eq!(shapes(&text.profiles)[1], "input_ids:1x77");

        // A full LCM model (timestep_cond) takes guidance as an embedding: no doubled batch.
        let mut lcm = sd15_unet();
        lcm.push(input("timestep_cond", &[-1, 256]));
        let opts = trt.engine_options(ModelRole::Unet, &lcm, false);
        assert_eq!(
            shapes(&opts.profiles)[1],
            "sample:2x4x64x64,timestep:2,encoder_hidden_states:2x77x768,timestep_cond:2x256"
        );
    }

    #[test]
    fn live_control_widens_the_batch_to_what_a_change_can_reach() {
        let mut trt = sd15_pipeline(Fp16::Auto);
        trt.workload.as_mut().unwrap().live = true;
        let unet = trt.engine_options(ModelRole::Unet, &sd15_unet(), true);
        let [min, opt, max] = shapes(&unet.profiles);
        assert!(min.starts_with("sample:2x4x64x64,"), "{min}");
        assert!(opt.starts_with("sample:4x4x64x64,"), "{opt}");
        assert!(max.starts_with("sample:4x4x64x64,"), "{max}");
        let vae = trt.engine_options(ModelRole::VaeDecoder, &[input("latent_sample", &[-1, 4, -1, -1])], true);
        assert_eq!(
            shapes(&vae.profiles),
            ["latent_sample:1x4x64x64", "latent_sample:2x4x64x64", "latent_sample:2x4x64x64"].map(String::from)
        );
    }

    #[test]
    fn an_fp32_only_vae_stays_fp32_under_auto_and_off_is_fp32_everywhere() {
        let trt = TensorRt { vae_fp32_only: true, ..sd15_pipeline(Fp16::Auto) };
        for (role, fp16) in [
            (ModelRole::Unet, true),
            (ModelRole::ControlNet, true),
            (ModelRole::VaeEncoder, false),
            (ModelRole::VaeDecoder, false),
            (ModelRole::TextEncoder, false),
            (ModelRole::Other, false),
        ] {
            assert_eq!(trt.fp16_for(role), fp16, "auto, fp32-only VAE: {role:?}");
        }
        let off = sd15_pipeline(Fp16::Off);
        let on = TensorRt { vae_fp32_only: true, ..sd15_pipeline(Fp16::On) };
        for role in [
            ModelRole::Unet,
            ModelRole::ControlNet,
            ModelRole::VaeEncoder,
            ModelRole::VaeDecoder,
            ModelRole::TextEncoder,
        ] {
            assert!(!off.fp16_for(role), "off: {role:?}");
            assert!(on.fp16_for(role), "on: {role:?}");
        }
        // Profiles do not depend on the precision.
        assert_eq!(
            off.engine_options(ModelRole::Unet, &sd15_unet(), true).profiles,
            sd15_pipeline(Fp16::Auto).engine_options(ModelRole::Unet, &sd15_unet(), true).profiles
        );
    }

    #[test]
    fn an_input_only_known_at_run_time_leaves_the_profile_to_onnx_runtime() {
        let trt = sd15_pipeline(Fp16::Auto);
        let mut unet = sd15_unet();
        unet.push(input("down_block_additional_residuals_0", &[-1, 320, -1, -1]));
        let opts = trt.engine_options(ModelRole::Unet, &unet, true);
        assert!(opts.profiles.is_empty() && opts.fp16);
        let (why, shapes) = opts.implicit.unwrap();
        assert!(why.contains("down_block_additional_residuals_0"), "{why}");
        assert!(shapes.contains("image 512x512") && shapes.contains("opt 4"), "{shapes}");
        // A fixed-size export needs no profile at all.
        let fixed = [input("sample", &[4, 4, 64, 64]), input("timestep", &[4])];
        let opts = trt.engine_options(ModelRole::Unet, &fixed, true);
        assert!(opts.profiles.is_empty() && opts.implicit.is_none());
        // Without a workload: fp16 only.
        let bare = TensorRt { workload: None, ..trt };
        assert_eq!(bare.engine_options(ModelRole::Unet, &sd15_unet(), true).profiles, vec![]);
    }

    #[test]
    fn roles_are_told_apart_by_the_names_the_loaders_use() {
        assert_eq!(ModelRole::of("UNet"), ModelRole::Unet);
        assert_eq!(ModelRole::of("ControlNet"), ModelRole::ControlNet);
        assert_eq!(ModelRole::of("VAE encoder"), ModelRole::VaeEncoder);
        assert_eq!(ModelRole::of("VAE decoder"), ModelRole::VaeDecoder);
        assert_eq!(ModelRole::of("text encoder"), ModelRole::TextEncoder);
        assert_eq!(ModelRole::of("pose"), ModelRole::Other);
    }

    /// The session settings and the engine-cache key a model file gets: the tiny SD1.5 twin's UNet (an optimum-
    /// style export: int64 timestep [B], no timestep_cond).
    #[test]
    fn session_settings_and_cache_key_follow_fp16_and_the_working_size() {
        let dir = tempfile::tempdir().unwrap();
        let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-sd15-lcm-lora/unet.onnx");
        let unet = dir.path().join("unet.onnx");
        std::fs::copy(&original, &unet).unwrap();
        let base = || SessionSettings { model_path: unet.clone(), ..Default::default() };
        let trt = TensorRt { unet: unet.clone(), ..sd15_pipeline(Fp16::Auto) };

        let settings = trt.session_settings("UNet", base());
        assert!(settings.fp16);
        assert_eq!(settings.shape_hint, None);
        let sample = settings.shape_profiles.iter().find(|p| p.input == "sample").expect("a sample profile");
        assert_eq!(sample.opt, vec![4, 4, 64, 64]);
        assert_eq!((&sample.min, &sample.max), (&sample.opt, &sample.opt));
        let key = |s: &SessionSettings| super::super::trt::cache_key(s).unwrap();
        let (k, text) = key(&settings);
        assert!(text.contains("fp16 true") && text.contains("profile sample min 4x4x64x64"), "{text}");

        let fp32 = TensorRt { fp16: Fp16::Off, ..trt.clone() }.session_settings("UNet", base());
        assert!(!fp32.fp16);
        assert_eq!(fp32.shape_profiles, settings.shape_profiles);
        assert_ne!(key(&fp32).0, k, "fp16 changes the key");

        let mut bigger = trt.clone();
        bigger.workload.as_mut().unwrap().width = 768;
        let wide = bigger.session_settings("UNet", base());
        assert_eq!(wide.shape_profiles.iter().find(|p| p.input == "sample").unwrap().opt, vec![4, 4, 64, 96]);
        assert_ne!(key(&wide).0, k, "the working size changes the key");
        assert_eq!(key(&trt.session_settings("UNet", base())).0, k, "the same settings, the same key");
    }
}
