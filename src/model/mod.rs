//! Model folders: `model.toml` (the manifest) plus the ONNX files and tokenizer it names, or an optimum export
//! read as it is ([`optimum`]).
//!
//! ```toml
//! name = "sd15-lcm-lora"
//! latent-channels = 4
//! latent-scale = 0.18215             # full SD VAE; TAESD-family latents use 1.0
//! image-range = "minus-one-to-one"   # SD VAE; TAESD-family: "zero-to-one"
//! vae-fp32-only = false              # true: TensorRT keeps the VAE in fp32 under tensorrt-fp16 = "auto"
//! size-multiple = 64                 # image sides must be multiples of this (8 x the UNet's downsampling)
//! native-size = 512                  # the side it was trained at: default working sizes hold about its square
//! [files]                            # relative to the folder; may point into other folders
//! unet = "unet.onnx"
//! vae-encoder = "vae_encoder.onnx"
//! vae-decoder = "vae_decoder.onnx"
//! text-encoder = "text_encoder.onnx"
//! tokenizer = "tokenizer.json"
//! [unet]                             # for the memory estimate (crate::memory): the first self-attention's
//! attention-heads = 8                # heads (SD1.5 8, SD2.x / SD-Turbo 5)
//! attention-level = 0                # and down level (0: full latent resolution; SDXL 1)
//! [tokenizer]
//! pad-token = "<|endoftext|>"        # SD1.x; SD2.x and SD-Turbo pad with "!"
//! [scheduler]                        # defaults = the upstream scheduler_config.json values
//! kind = "lcm"                       # or "euler" (SDXL-Lightning), "euler-ancestral" (SD-/SDXL-Turbo)
//! [defaults]                         # what img2img / convert use when the user does not say
//! steps = 2
//! strength = 0.5
//! guidance = 1.0
//! ```

pub mod optimum;
pub mod scheduler_config;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use self::scheduler_config::{LcmConfig, SchedulerKind};
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "model.toml";

/// How the VAE expects and returns RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageRange {
    /// 0..1 (taesd and its family).
    ZeroToOne,
    /// -1..1 (the full SD VAE).
    MinusOneToOne,
}

/// Which family a model belongs to: what its UNet takes besides the prompt's hidden states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// SD1.x, SD2.x, SD-Turbo, LCM-Dreamshaper: one CLIP text encoder, its last hidden state.
    #[default]
    Sd,
    /// SDXL, SDXL-Turbo, LCM-SDXL: two text encoders (their penultimate hidden states concatenated), the second's
    /// pooled projection (`text_embeds`) and the size conditions (`time_ids`) into the UNet.
    Sdxl,
}

impl Family {
    /// As model.toml spells it.
    pub fn key(self) -> &'static str {
        match self {
            Family::Sd => "sd",
            Family::Sdxl => "sdxl",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Sd => "SD (one text encoder)",
            Family::Sdxl => "SDXL (two text encoders, pooled embeddings and time_ids)",
        })
    }
}

/// `[sdxl]`: how an SDXL-family model's prompt conditioning is made (diffusers' `StableDiffusionXLPipeline`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SdxlSettings {
    /// The hidden state each text encoder contributes, counted from the end of its `hidden_states` (SDXL: -2,
    /// the penultimate layer's, before the final LayerNorm); `clip_skip = k` is `-(k + 2)`.
    #[serde(default = "default_hidden_layer")]
    pub hidden_layer: i32,
    /// Text encoder 2's output that is the pooled embedding (`text_embeds` for OpenCLIP bigG with projection).
    #[serde(default = "default_pooled_output")]
    pub pooled_output: String,
    /// With classifier-free guidance and no negative prompt, the unconditional embeddings and pooled vector are
    /// zeros, not the encoding of "" (true for SDXL base and Turbo).
    #[serde(default = "yes")]
    pub force_zeros_for_empty_prompt: bool,
}

fn default_hidden_layer() -> i32 {
    -2
}
fn default_pooled_output() -> String {
    "text_embeds".into()
}
fn yes() -> bool {
    true
}

impl Default for SdxlSettings {
    fn default() -> Self {
        SdxlSettings {
            hidden_layer: default_hidden_layer(),
            pooled_output: default_pooled_output(),
            force_zeros_for_empty_prompt: true,
        }
    }
}

/// An SDXL-family model's second text encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondEncoder {
    pub text_encoder: PathBuf,
    pub tokenizer_file: PathBuf,
    pub tokenizer: TokenizerSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ManifestFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    family: Family,
    latent_channels: usize,
    latent_scale: f32,
    image_range: ImageRange,
    /// The VAE overflows in fp16 (SDXL's original VAE): TensorRT builds it in fp32 unless told otherwise.
    #[serde(default)]
    vae_fp32_only: bool,
    #[serde(default = "default_size_multiple")]
    size_multiple: u32,
    /// The side the model was trained at (512 for SD1.5 and SD-Turbo): default working sizes aim at its
    /// square's area.
    #[serde(default = "default_native_size")]
    native_size: u32,
    files: Files,
    #[serde(default)]
    unet: UnetMemory,
    #[serde(default)]
    tokenizer: TokenizerSettings,
    #[serde(default)]
    tokenizer_2: Option<TokenizerSettings>,
    #[serde(default)]
    sdxl: Option<SdxlSettings>,
    scheduler: SchedulerSection,
    #[serde(default)]
    defaults: Defaults,
}

fn default_size_multiple() -> u32 {
    64
}

fn default_native_size() -> u32 {
    512
}

/// `[unet]`: what the memory estimate needs to know of the UNet's first self-attention (see
/// [`crate::memory`]); scripts/export_models.py writes it from the UNet's config.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UnetMemory {
    /// Its heads (SD1.5: 8, SD2.x and SD-Turbo: 5).
    #[serde(default = "default_attention_heads")]
    pub attention_heads: u32,
    /// The down level it is at: 0 at full latent resolution (SD1.x, SD2.x), 1 at half (SDXL).
    #[serde(default)]
    pub attention_level: u32,
}

fn default_attention_heads() -> u32 {
    8
}

impl Default for UnetMemory {
    fn default() -> Self {
        UnetMemory { attention_heads: default_attention_heads(), attention_level: 0 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Files {
    unet: PathBuf,
    vae_encoder: PathBuf,
    vae_decoder: PathBuf,
    text_encoder: PathBuf,
    tokenizer: PathBuf,
    /// SDXL family: the second text encoder and its tokenizer.
    text_encoder_2: Option<PathBuf>,
    tokenizer_2: Option<PathBuf>,
    /// OpenPose ControlNet and the UNet that takes its residuals (optional: pose-guided generation).
    controlnet: Option<PathBuf>,
    unet_controlnet: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenizerSettings {
    #[serde(default = "default_pad_token")]
    pub pad_token: String,
    /// Token sequence length; CLIP's 77 unless the text encoder says otherwise.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
}

fn default_pad_token() -> String {
    "<|endoftext|>".into()
}
fn default_max_length() -> usize {
    77
}

impl std::fmt::Display for ImageRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageRange::ZeroToOne => "0..1",
            ImageRange::MinusOneToOne => "-1..1",
        })
    }
}

impl Default for TokenizerSettings {
    fn default() -> Self {
        TokenizerSettings { pad_token: default_pad_token(), max_length: default_max_length() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
enum SchedulerSection {
    Lcm(LcmConfig),
    Euler(LcmConfig),
    EulerAncestral(LcmConfig),
}

/// Per-model defaults for the knobs users turn most.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Defaults {
    pub steps: usize,
    pub strength: f64,
    pub guidance: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { steps: 2, strength: 0.5, guidance: 1.0 }
    }
}

/// The ControlNet of a model folder and the UNet variant that takes its residuals.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlNetFiles {
    pub controlnet: PathBuf,
    pub unet: PathBuf,
}

/// A validated model folder: absolute file paths and typed settings.
#[derive(Clone, Debug)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub name: String,
    pub description: String,
    pub latent_channels: usize,
    pub latent_scale: f32,
    pub image_range: ImageRange,
    /// `vae-fp32-only`: the VAE overflows in fp16, so `[engine] tensorrt-fp16 = "auto"` keeps it in fp32.
    pub vae_fp32_only: bool,
    pub size_multiple: u32,
    /// The side the model was trained at: default working sizes hold about its square's pixels.
    pub native_size: u32,
    /// The UNet's first self-attention, for the memory estimate.
    pub unet_memory: UnetMemory,
    pub unet: PathBuf,
    pub vae_encoder: PathBuf,
    pub vae_decoder: PathBuf,
    pub text_encoder: PathBuf,
    pub tokenizer_file: PathBuf,
    /// `[files] controlnet` and `unet-controlnet`: both or neither.
    pub controlnet: Option<ControlNetFiles>,
    pub tokenizer: TokenizerSettings,
    pub family: Family,
    /// SDXL family: the second text encoder and how the conditioning is made.
    pub text_encoder_2: Option<SecondEncoder>,
    pub sdxl: Option<SdxlSettings>,
    pub scheduler: LcmConfig,
    pub defaults: Defaults,
}

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<ModelFolder> {
        let folder_err = |problem: &str| Error::ModelFolder { path: dir.to_path_buf(), problem: problem.into() };
        if !dir.exists() {
            return Err(folder_err("no such folder"));
        }
        if !dir.is_dir() {
            return Err(folder_err("not a folder (expected a model folder holding model.toml)"));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        // An optimum export works as it is; a model.toml beside its model_index.json takes precedence.
        if !manifest_path.exists() && optimum::is_optimum_folder(dir) {
            return optimum::read(dir);
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                folder_err(
                    "has neither a model.toml nor an optimum export's model_index.json and unet/model.onnx (make one \
                     with scripts/export_models.py or optimum-cli export onnx; see README)",
                )
            } else {
                Error::Manifest { path: manifest_path.clone(), problem: e.to_string() }
            }
        })?;
        Self::parse(dir, &manifest_path, &text)
    }

    fn parse(dir: &Path, manifest_path: &Path, text: &str) -> Result<ModelFolder> {
        let bad = |problem: String| Error::Manifest { path: manifest_path.to_path_buf(), problem };
        let m: ManifestFile = toml::from_str(text).map_err(|e| bad(one_line(&e.to_string())))?;
        if m.latent_channels == 0 {
            return Err(bad("latent-channels must be at least 1".into()));
        }
        if !(m.latent_scale.is_finite() && m.latent_scale > 0.0) {
            return Err(bad(format!(
                "latent-scale must be a positive number, found {}",
                crate::knobs::show_f64(f64::from(m.latent_scale))
            )));
        }
        if m.size_multiple == 0 || !m.size_multiple.is_multiple_of(VAE_MULTIPLE) || m.size_multiple > 512 {
            return Err(bad(format!("size-multiple must be a multiple of 8 from 8 to 512, found {}", m.size_multiple)));
        }
        if !(64..=4096).contains(&m.native_size) || !m.native_size.is_multiple_of(VAE_MULTIPLE) {
            return Err(bad(format!("native-size must be a multiple of 8 from 64 to 4096, found {}", m.native_size)));
        }
        if !(1..=128).contains(&m.unet.attention_heads) || m.unet.attention_level > 4 {
            return Err(bad(format!(
                "[unet] attention-heads must be 1 to 128 and attention-level 0 to 4, found {} and {}",
                m.unet.attention_heads, m.unet.attention_level
            )));
        }
        if m.tokenizer.max_length < 2 {
            return Err(bad(format!("tokenizer.max-length must be at least 2, found {}", m.tokenizer.max_length)));
        }
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { normalize(&dir.join(p)) };
        let text_encoder_2 = match (m.family, &m.files.text_encoder_2, &m.files.tokenizer_2) {
            (Family::Sdxl, Some(encoder), Some(tokenizer)) => Some(SecondEncoder {
                text_encoder: resolve(encoder),
                tokenizer_file: resolve(tokenizer),
                // SDXL's second tokenizer pads with "!" (OpenCLIP bigG's).
                tokenizer: m
                    .tokenizer_2
                    .clone()
                    .unwrap_or(TokenizerSettings { pad_token: "!".into(), ..Default::default() }),
            }),
            (Family::Sdxl, _, _) => {
                return Err(bad("family = \"sdxl\" needs [files] text-encoder-2 and tokenizer-2 (the second text \
                                encoder, OpenCLIP bigG)"
                    .into()));
            }
            (Family::Sd, None, None) if m.tokenizer_2.is_none() && m.sdxl.is_none() => None,
            (Family::Sd, ..) => {
                return Err(bad(
                    "text-encoder-2, tokenizer-2, [tokenizer-2] and [sdxl] are for family = \"sdxl\"".into()
                ));
            }
        };
        let sdxl = (m.family == Family::Sdxl).then(|| m.sdxl.clone().unwrap_or_default());
        if let Some(x) = &sdxl
            && !(-32..=-1).contains(&x.hidden_layer)
        {
            return Err(bad(format!("[sdxl] hidden-layer counts from the end: -1 to -32, found {}", x.hidden_layer)));
        }
        let scheduler = match m.scheduler.clone() {
            SchedulerSection::Lcm(c) => LcmConfig { kind: SchedulerKind::Lcm, ..c },
            SchedulerSection::Euler(c) => LcmConfig { kind: SchedulerKind::Euler, ..c },
            SchedulerSection::EulerAncestral(c) => LcmConfig { kind: SchedulerKind::EulerAncestral, ..c },
        };
        scheduler.validate().map_err(|e| bad(format!("[scheduler] {e}")))?;
        let controlnet = match (&m.files.controlnet, &m.files.unet_controlnet) {
            (Some(c), Some(u)) => Some(ControlNetFiles { controlnet: resolve(c), unet: resolve(u) }),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "[files] controlnet and unet-controlnet go together (the ControlNet and the UNet that takes its \
                     residuals)"
                        .into(),
                ));
            }
        };
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            name: m.name,
            description: m.description,
            latent_channels: m.latent_channels,
            latent_scale: m.latent_scale,
            image_range: m.image_range,
            vae_fp32_only: m.vae_fp32_only,
            size_multiple: m.size_multiple,
            native_size: m.native_size,
            unet_memory: m.unet,
            unet: resolve(&m.files.unet),
            vae_encoder: resolve(&m.files.vae_encoder),
            vae_decoder: resolve(&m.files.vae_decoder),
            text_encoder: resolve(&m.files.text_encoder),
            tokenizer_file: resolve(&m.files.tokenizer),
            controlnet,
            tokenizer: m.tokenizer,
            family: m.family,
            text_encoder_2,
            sdxl,
            scheduler,
            defaults: m.defaults,
        })
    }
}

/// Every VAE in the SD family downsamples by 8: image sides must be multiples of this.
pub const VAE_MULTIPLE: u32 = 8;

impl ModelFolder {
    /// Every model file the folder names (inputs of a run: never to be written over).
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![
            self.unet.as_path(),
            self.vae_encoder.as_path(),
            self.vae_decoder.as_path(),
            self.text_encoder.as_path(),
            self.tokenizer_file.as_path(),
        ];
        if let Some(c) = &self.controlnet {
            files.extend([c.controlnet.as_path(), c.unet.as_path()]);
        }
        if let Some(t) = &self.text_encoder_2 {
            files.extend([t.text_encoder.as_path(), t.tokenizer_file.as_path()]);
        }
        files
    }
}

/// Real model folders `scripts/export_models.py` makes, preferred in this order when no model is named (the SD1.5
/// class first: it runs in real time on far more cards than SDXL).
pub const PREFERRED_FOLDERS: [&str; 6] =
    ["sd-turbo", "sd15-lcm-lora", "lcm-dreamshaper-v7", "sdxl-turbo", "sdxl-lcm-lora", "lcm-sdxl"];
/// The committed tiny test model used when no real one has been exported.
pub const FALLBACK_FOLDER: &str = "tiny-sd-turbo";

/// `models/` folders to search: under the current directory, then above the executable (a checkout's
/// `target/release/latentcam` finds the checkout's models).
pub(crate) fn models_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd.join("models"));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(|d| d.join("models")));
    }
    roots.retain(|r| r.is_dir());
    // Run from the checkout, ./models and the binary's checkout are one folder: list it once.
    let mut seen = std::collections::HashSet::new();
    roots.retain(|r| seen.insert(r.canonicalize().unwrap_or_else(|_| r.clone())));
    roots
}

/// Real pose-guided model folders (`export_models.py real ... --controlnet openpose`), preferred in this order.
pub const PREFERRED_POSE_FOLDERS: [&str; 4] =
    ["sd15-lcm-lora-openpose", "lcm-dreamshaper-v7-openpose", "sdxl-lcm-lora-openpose-fp16", "sdxl-lcm-lora-openpose"];
/// The committed tiny ControlNet test model.
pub const FALLBACK_POSE_FOLDER: &str = "tiny-sd15-lcm-lora-controlnet";

/// The pose model when none is named: DWPose exported to `models/dwpose` (scripts/export_pose.py fetch), else
/// `models/movenet`, else the MoveNet of `../shared` beside a checkout; looked up under the current directory,
/// then beside the executable, as model folders are. None found: `models/movenet` (the error names it).
pub fn default_pose_model() -> PathBuf {
    let mut candidates = Vec::new();
    for root in models_roots() {
        candidates.push(root.join("dwpose"));
        candidates.push(root.join("movenet"));
        if let Some(checkout) = root.parent() {
            candidates.push(checkout.join("..").join("shared").join("models").join("movenet"));
        }
    }
    candidates.into_iter().find(|p| p.exists()).unwrap_or_else(|| PathBuf::from("models/movenet"))
}

/// The model to use when none is named: the first exported real model, else the tiny test model (with a
/// warning, since its weights are random).
pub fn default_folder() -> Result<PathBuf> {
    default_among(&PREFERRED_FOLDERS, FALLBACK_FOLDER)
}

/// [`default_folder`] for pose-guided runs: folders with an OpenPose ControlNet.
pub fn default_pose_folder() -> Result<PathBuf> {
    default_among(&PREFERRED_POSE_FOLDERS, FALLBACK_POSE_FOLDER)
}

fn default_among(preferred: &[&str], fallback: &str) -> Result<PathBuf> {
    let roots = models_roots();
    for root in &roots {
        for name in preferred {
            let dir = root.join(name);
            if is_model_folder(&dir) {
                return Ok(dir);
            }
        }
    }
    for root in &roots {
        let dir = root.join(fallback);
        if dir.join(MANIFEST_FILE).is_file() {
            tracing::warn!(
                model = %dir.display(),
                "no real model exported yet: using the tiny RANDOM-weight test model (output is noise-like); \
                 export one with scripts/export_models.py and pass --model"
            );
            return Ok(dir);
        }
    }
    Err(Error::ModelFolder {
        path: PathBuf::from("models"),
        problem: "no model given and none found under ./models (pass --model DIR)".into(),
    })
}

/// `a/b/../c` -> `a/c` without touching the file system (paths in messages stay short; symlinks are not
/// followed, which is what a relative path in a manifest means).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// True when `dir` holds a model.toml or an optimum export.
fn is_model_folder(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file() || optimum::is_optimum_folder(dir)
}

/// A model folder by bare name (`tiny-sd-turbo`), looked up like the default model.
pub fn find_named(name: &str) -> Result<PathBuf> {
    let roots = models_roots();
    roots.iter().map(|r| r.join(name)).find(|d| is_model_folder(d)).ok_or_else(|| {
        // The preferred names are the export script's presets: say how to make the folder.
        let export = if PREFERRED_FOLDERS.contains(&name) {
            format!(
                "; export it once (internet): scripts/export_models.py real {name} models/{name} (models/README.md)"
            )
        } else {
            String::new()
        };
        Error::ModelFolder {
            path: PathBuf::from(name),
            problem: format!(
                "no such model folder (looked in: {}){export}",
                roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    })
}

/// toml's errors span several lines (a source excerpt with a caret); our messages are one line.
pub fn one_line(msg: &str) -> String {
    let is_excerpt = |l: &str| l.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start().starts_with('|');
    msg.lines().map(str::trim).filter(|l| !l.is_empty() && !is_excerpt(l)).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
latent-channels = 4
latent-scale = 0.18215
image-range = "minus-one-to-one"
[files]
unet = "unet.onnx"
vae-encoder = "e.onnx"
vae-decoder = "d.onnx"
text-encoder = "../shared/te.onnx"
tokenizer = "tok.json"
[scheduler]
kind = "lcm"
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let m = ModelFolder::parse(Path::new("/m/x"), Path::new("/m/x/model.toml"), GOOD).unwrap();
        assert_eq!(m.unet, Path::new("/m/x/unet.onnx"));
        assert_eq!(m.text_encoder, Path::new("/m/shared/te.onnx"));
        assert_eq!(m.size_multiple, 64);
        assert!(!m.vae_fp32_only);
        assert_eq!(m.tokenizer.pad_token, "<|endoftext|>");
        assert_eq!(m.defaults, Defaults::default());
        assert_eq!(m.scheduler, LcmConfig::default());
    }

    #[test]
    fn a_vae_can_be_marked_fp32_only() {
        let text = GOOD.replace("image-range", "vae-fp32-only = true\nimage-range");
        assert!(ModelFolder::parse(Path::new("/m"), Path::new("/m/model.toml"), &text).unwrap().vae_fp32_only);
        let text = GOOD.replace("image-range", "vae-fp32-only = \"yes\"\nimage-range");
        let err = ModelFolder::parse(Path::new("/m"), Path::new("/m/model.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("vae-fp32-only") || err.contains("boolean"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_line() {
        let text = GOOD.replace("latent-scale = 0.18215", "latent-scale = 0.18215\nlatent-scael = 1");
        let err = ModelFolder::parse(Path::new("/m"), Path::new("/m/model.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("latent-scael"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let text = GOOD.replace("0.18215", "-1.0");
        let err = ModelFolder::parse(Path::new("/m"), Path::new("/m/model.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("latent-scale"), "{err}");
        let text = GOOD.replace("kind = \"lcm\"", "kind = \"ddim\"");
        let err = ModelFolder::parse(Path::new("/m"), Path::new("/m/model.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("ddim"), "{err}");
    }
}
