//! Folders exported by `optimum-cli export onnx --model ...` (or saved the same way), read without a
//! `model.toml`: what a manifest states is taken from `model_index.json`, each component's `config.json`,
//! `scheduler/scheduler_config.json` and `tokenizer*/`.
//!
//! ```text
//! model_index.json                 _class_name (StableDiffusionPipeline, StableDiffusionXLPipeline, ...)
//! unet/model.onnx, config.json     sample_size, block_out_channels, attention_head_dim, addition_embed_type
//! vae_encoder/model.onnx           (optimum wraps diffusers' VAE: pictures in -1..1, for TAESD too)
//! vae_decoder/model.onnx, config.json  scaling_factor, latent_channels, force_upcast
//! text_encoder/model.onnx          text_encoder_2/model.onnx (SDXL)
//! tokenizer/                       tokenizer.json, or vocab.json + merges.txt (+ special_tokens_map.json)
//! scheduler/scheduler_config.json  betas, prediction type (and the LCM values, when an LCMScheduler)
//! ```
//!
//! The scheduler class picks the step: `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler` run as
//! `kind = "euler"` / `"euler-ancestral"` (trailing spacing: SDXL-Lightning, SD-/SDXL-Turbo), anything else as LCM
//! steps on the scheduler's betas (right for LCM and LCM-LoRA, fused); a base model that is none of these is a model
//! for 25+ steps and gives noise here, which the log says.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::scheduler_config::{BetaSchedule, LcmConfig, PredictionType, SchedulerKind};
use super::{
    Defaults, Family, ImageRange, ModelFolder, SdxlSettings, SecondEncoder, TokenizerSettings, UnetMemory, VAE_MULTIPLE,
};
use crate::error::{Error, Result};

/// The file that marks a diffusers / optimum pipeline folder.
pub const MODEL_INDEX: &str = "model_index.json";

/// Where optimum puts each component's graph.
const MODEL_FILE: &str = "model.onnx";

/// True when `dir` looks like an optimum export (a `model_index.json` and `unet/model.onnx`).
pub fn is_optimum_folder(dir: &Path) -> bool {
    dir.join(MODEL_INDEX).is_file() && dir.join("unet").join(MODEL_FILE).is_file()
}

/// `unet/config.json`, the part that matters here (diffusers' `UNet2DConditionModel` config).
#[derive(Debug, Deserialize)]
struct UnetConfig {
    #[serde(default = "default_sample_size")]
    sample_size: u32,
    #[serde(default)]
    block_out_channels: Vec<u32>,
    #[serde(default)]
    down_block_types: Vec<String>,
    /// diffusers' name for the heads per level (a number for SD1.x, a list for SD2.x and SDXL).
    #[serde(default)]
    attention_head_dim: Option<Value>,
    #[serde(default)]
    num_attention_heads: Option<Value>,
    #[serde(default)]
    addition_embed_type: Option<String>,
}

fn default_sample_size() -> u32 {
    64
}

/// `vae_decoder/config.json` (diffusers' `AutoencoderKL` or `AutoencoderTiny` config).
#[derive(Debug, Deserialize)]
struct VaeConfig {
    #[serde(rename = "_class_name", default)]
    class: String,
    #[serde(default)]
    scaling_factor: Option<f32>,
    #[serde(default = "default_latent_channels")]
    latent_channels: usize,
    #[serde(default)]
    force_upcast: bool,
}

fn default_latent_channels() -> usize {
    4
}

/// `scheduler/scheduler_config.json`: the values every diffusers scheduler of the SD family shares, and the LCM
/// ones when present.
#[derive(Debug, Deserialize)]
struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    class: String,
    #[serde(default)]
    num_train_timesteps: Option<u32>,
    #[serde(default)]
    beta_start: Option<f64>,
    #[serde(default)]
    beta_end: Option<f64>,
    #[serde(default)]
    beta_schedule: Option<String>,
    #[serde(default)]
    prediction_type: Option<String>,
    #[serde(default)]
    original_inference_steps: Option<u32>,
    #[serde(default)]
    timestep_scaling: Option<f64>,
    #[serde(default)]
    timestep_spacing: Option<String>,
}

/// Read an optimum export folder as a [`ModelFolder`].
pub fn read(dir: &Path) -> Result<ModelFolder> {
    let bad = |problem: String| Error::ModelFolder { path: dir.to_path_buf(), problem };
    let index: Value = read_json(&dir.join(MODEL_INDEX))?;
    let pipeline = index.get("_class_name").and_then(Value::as_str).unwrap_or("an unnamed pipeline").to_string();
    let component = |name: &str| dir.join(name).join(MODEL_FILE);
    for needed in ["unet", "vae_encoder", "vae_decoder", "text_encoder"] {
        if !component(needed).is_file() {
            return Err(bad(format!(
                "is an optimum export ({MODEL_INDEX}) without {needed}/{MODEL_FILE} (img2img needs the UNet, both VAE \
                 halves and the text encoder: export with `optimum-cli export onnx --model ... --task \
                 image-to-image`, or write a model.toml)"
            )));
        }
    }
    let unet: UnetConfig = read_json(&dir.join("unet/config.json"))?;
    let vae: VaeConfig = read_json(&first_existing(dir, &["vae_decoder/config.json", "vae_encoder/config.json"])?)?;
    let scheduler: SchedulerConfig = read_json(&dir.join("scheduler/scheduler_config.json"))?;

    let has_second = component("text_encoder_2").is_file();
    let family =
        if has_second || unet.addition_embed_type.as_deref() == Some("text_time") { Family::Sdxl } else { Family::Sd };
    if family == Family::Sdxl && !has_second {
        return Err(bad(format!(
            "its UNet takes SDXL's added conditions (addition_embed_type \"text_time\") but there is no \
             text_encoder_2/{MODEL_FILE} (an SDXL refiner, which takes only the second encoder, is not supported)"
        )));
    }
    let (tokenizer_file, tokenizer) = tokenizer_of(dir, "tokenizer")?;
    let text_encoder_2 = if family == Family::Sdxl {
        let (tokenizer_file, tokenizer) = tokenizer_of(dir, "tokenizer_2")?;
        Some(SecondEncoder { text_encoder: component("text_encoder_2"), tokenizer_file, tokenizer })
    } else {
        None
    };
    let sdxl = (family == Family::Sdxl).then(|| SdxlSettings {
        force_zeros_for_empty_prompt: index
            .get("force_zeros_for_empty_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..SdxlSettings::default()
    });

    let scheduler_config = lcm_config(&scheduler).map_err(|e| bad(format!("scheduler/scheduler_config.json: {e}")))?;
    let euler = matches!(scheduler.class.as_str(), "EulerAncestralDiscreteScheduler" | "EulerDiscreteScheduler");
    if scheduler.class != "LCMScheduler" && !euler {
        tracing::warn!(
            "{}: its scheduler is {} (not LCM, not Euler): latentcam runs it as 1-8 LCM steps, which only LCM, \
             LCM-LoRA (fused) and Turbo models are made for; another model gives noise",
            dir.display(),
            scheduler.class
        );
    }
    if euler && scheduler.timestep_spacing.as_deref().is_some_and(|s| s != "trailing") {
        tracing::warn!(
            "{}: its {} spaces timesteps \"{}\"; latentcam's Euler schedules are \"trailing\" (what few-step models \
             are distilled for: SD-Turbo, SDXL-Turbo, SDXL-Lightning)",
            dir.display(),
            scheduler.class,
            scheduler.timestep_spacing.as_deref().unwrap_or_default()
        );
    }
    let blocks = unet.block_out_channels.len().max(1) as u32;
    let size_multiple = VAE_MULTIPLE << (blocks - 1);
    let native_size = unet.sample_size * VAE_MULTIPLE;
    let latent_scale = match vae.scaling_factor {
        Some(s) if s.is_finite() && s > 0.0 => s,
        _ if vae.class == "AutoencoderTiny" => 1.0,
        _ => return Err(bad("vae_decoder/config.json has no usable scaling_factor".into())),
    };
    let name = dir.file_name().map_or_else(|| "optimum export".into(), |n| n.to_string_lossy().into_owned());
    Ok(ModelFolder {
        dir: dir.to_path_buf(),
        name,
        description: format!(
            "optimum export read without model.toml: {pipeline}, {} VAE, {} scheduler",
            if vae.class.is_empty() { "an unnamed" } else { &vae.class },
            if scheduler.class.is_empty() { "an unnamed" } else { &scheduler.class }
        ),
        latent_channels: vae.latent_channels,
        latent_scale,
        // optimum exports diffusers' modules, which take and give pictures in -1..1 (AutoencoderTiny too: it
        // maps to TAESD's 0..1 inside).
        image_range: ImageRange::MinusOneToOne,
        // SDXL's own VAE overflows in fp16 (its config asks for an fp32 upcast); the fp16-fix VAE does not.
        vae_fp32_only: vae.force_upcast && family == Family::Sdxl,
        size_multiple: size_multiple.min(512),
        native_size: native_size.clamp(64, 4096),
        unet_memory: unet_memory(&unet),
        unet: component("unet"),
        vae_encoder: component("vae_encoder"),
        vae_decoder: component("vae_decoder"),
        text_encoder: component("text_encoder"),
        tokenizer_file,
        controlnet: None,
        tokenizer,
        family,
        text_encoder_2,
        sdxl,
        scheduler: scheduler_config,
        // LCM (-LoRA) and Turbo alike: 2 steps at strength 0.5 (one step run), no guidance (both are distilled
        // for it), as the SD-Turbo and LCM-LoRA folders scripts/export_models.py writes.
        defaults: Defaults::default(),
    })
}

/// The memory estimate's view of the UNet: the heads and level of its first attention block.
fn unet_memory(unet: &UnetConfig) -> UnetMemory {
    let level = unet.down_block_types.iter().position(|t| t.contains("CrossAttn")).unwrap_or(0);
    // diffusers names the heads `attention_head_dim` (num_attention_heads, when given, is the right name).
    let heads = unet.num_attention_heads.as_ref().or(unet.attention_head_dim.as_ref()).and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::Array(per_level) => per_level.get(level).and_then(Value::as_u64),
        _ => None,
    });
    UnetMemory {
        attention_heads: heads.map_or(UnetMemory::default().attention_heads, |h| h.clamp(1, 128) as u32),
        attention_level: level.min(4) as u32,
    }
}

fn lcm_config(s: &SchedulerConfig) -> std::result::Result<LcmConfig, String> {
    let base = LcmConfig::default();
    let beta_schedule = match s.beta_schedule.as_deref() {
        None | Some("scaled_linear") => BetaSchedule::ScaledLinear,
        Some("linear") => BetaSchedule::Linear,
        Some(other) => return Err(format!("beta_schedule \"{other}\" (expected scaled_linear or linear)")),
    };
    let prediction_type = match s.prediction_type.as_deref() {
        None | Some("epsilon") => PredictionType::Epsilon,
        Some("v_prediction") => PredictionType::VPrediction,
        Some("sample") => PredictionType::Sample,
        Some(other) => return Err(format!("prediction_type \"{other}\" (expected epsilon, v_prediction or sample)")),
    };
    let kind = match s.class.as_str() {
        "EulerDiscreteScheduler" => SchedulerKind::Euler,
        "EulerAncestralDiscreteScheduler" => SchedulerKind::EulerAncestral,
        _ => SchedulerKind::Lcm,
    };
    let config = LcmConfig {
        kind,
        timestep_spacing: base.timestep_spacing,
        steps_offset: base.steps_offset,
        num_train_timesteps: s.num_train_timesteps.unwrap_or(base.num_train_timesteps),
        beta_start: s.beta_start.unwrap_or(base.beta_start),
        beta_end: s.beta_end.unwrap_or(base.beta_end),
        beta_schedule,
        original_inference_steps: s.original_inference_steps.unwrap_or(base.original_inference_steps),
        timestep_scaling: s.timestep_scaling.unwrap_or(base.timestep_scaling),
        prediction_type,
    };
    config.validate()?;
    Ok(config)
}

/// A tokenizer folder (`tokenizer.json`, or transformers' `vocab.json` + `merges.txt`) and its settings: the pad
/// token from `special_tokens_map.json` / `tokenizer_config.json`, the length from `model_max_length`.
fn tokenizer_of(dir: &Path, name: &str) -> Result<(PathBuf, TokenizerSettings)> {
    let folder = dir.join(name);
    if !folder.is_dir() {
        return Err(Error::ModelFolder {
            path: dir.to_path_buf(),
            problem: format!("is an optimum export without {name}/ (the text encoder's tokenizer)"),
        });
    }
    let config = read_optional_json(&folder.join("tokenizer_config.json"))?;
    let special = read_optional_json(&folder.join("special_tokens_map.json"))?;
    let token = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let pad_token = [&special, &config]
        .iter()
        .find_map(|v| v.get("pad_token").and_then(token))
        .unwrap_or_else(|| TokenizerSettings::default().pad_token);
    let max_length = config
        .get("model_max_length")
        .and_then(Value::as_u64)
        .filter(|n| (2..=1024).contains(n))
        .map_or(TokenizerSettings::default().max_length, |n| n as usize);
    Ok((folder, TokenizerSettings { pad_token, max_length }))
}

fn first_existing(dir: &Path, candidates: &[&str]) -> Result<PathBuf> {
    candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()).ok_or_else(|| Error::ModelFolder {
        path: dir.to_path_buf(),
        problem: format!("is an optimum export without {} (the VAE's config)", candidates.join(" or ")),
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bad = |problem: String| Error::Manifest { path: path.to_path_buf(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not the JSON expected: {e}")))
}

/// A JSON file that may be absent (Null then).
fn read_optional_json(path: &Path) -> Result<Value> {
    if path.is_file() { read_json(path) } else { Ok(Value::Null) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(json: &str) -> UnetConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_first_attention_block_is_found_per_family() {
        // SD1.5: 8 heads at full resolution.
        let sd15 = unet(r#"{"attention_head_dim": 8, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"]}"#);
        assert_eq!(unet_memory(&sd15), UnetMemory { attention_heads: 8, attention_level: 0 });
        // SD2.x / SD-Turbo: heads per level.
        let sd21 = unet(r#"{"attention_head_dim": [5, 10, 20, 20], "down_block_types": ["CrossAttnDownBlock2D"]}"#);
        assert_eq!(unet_memory(&sd21), UnetMemory { attention_heads: 5, attention_level: 0 });
        // SDXL: no attention at full resolution; 10 heads at level 1.
        let sdxl = unet(
            r#"{"attention_head_dim": [5, 10, 20], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D"]}"#,
        );
        assert_eq!(unet_memory(&sdxl), UnetMemory { attention_heads: 10, attention_level: 1 });
    }

    #[test]
    fn scheduler_values_outside_the_lcm_step_are_named() {
        let s: SchedulerConfig = serde_json::from_str(
            r#"{"_class_name": "EulerDiscreteScheduler",
            "beta_schedule": "squaredcos_cap_v2"}"#,
        )
        .unwrap();
        let e = lcm_config(&s).unwrap_err();
        assert!(e.contains("squaredcos_cap_v2") && e.contains("scaled_linear"), "{e}");
        let s: SchedulerConfig =
            serde_json::from_str(r#"{"beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction"}"#)
                .unwrap();
        assert_eq!(lcm_config(&s).unwrap().prediction_type, PredictionType::VPrediction);
    }
}
