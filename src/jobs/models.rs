//! `latentcam models check`: load a model folder and describe what was found.

use std::path::Path;

use crate::diffusion::Diffusion;
use crate::error::{Error, Result};
use crate::infer::Runtime;
use crate::model::ModelFolder;

/// `latentcam models check DIR`: load every file of the folder, check the contracts, describe what was found.
pub fn check_model(runtime: &Runtime, dir: &Path) -> Result<String> {
    let folder = ModelFolder::open(dir)?;
    let diffusion = Diffusion::load(runtime, &folder)?;
    let mut out = format!("{}: ok — {}", dir.display(), folder.name);
    if !folder.description.is_empty() {
        out += &format!(" ({})", folder.description);
    }
    out += "\n";
    let unet = diffusion.unet();
    let text = diffusion.text_encoder().ok_or_else(|| Error::internal("models check", "no text encoder"))?;
    let mut models = text.models();
    models.extend([diffusion.vae_encoder().model(), unet.model(), diffusion.vae_decoder().model()]);
    for m in models {
        out += &format!(
            "  {:<12} {} [{}, {:.0} ms]\n    in:  {}\n    out: {}\n",
            m.role,
            m.path.display(),
            m.ep,
            m.load_ms,
            m.describe_inputs(),
            m.describe_outputs()
        );
    }
    let ty = |m: &crate::infer::Model| crate::infer::tensor::type_name(m.input_type(0));
    out += &format!(
        "  precision (first float input): UNet {}, VAE encoder {}, VAE decoder {} (f16 and f32 ports both work; \
         the frame path converts at the model's edge)\n",
        crate::infer::tensor::type_name(unet.model().input_type(crate::infer::contract::unet::SAMPLE)),
        ty(diffusion.vae_encoder().model()),
        ty(diffusion.vae_decoder().model()),
    );
    out += &format!(
        "  UNet timestep: {}; timestep_cond: {}\n",
        unet.timestep.describe(),
        unet.cond_dim.map_or("none".to_string(), |d| format!("[batch, {d}] (guidance embedding)"))
    );
    out += &format!("  family: {}\n  prompt: {}\n", folder.family, text.describe());
    if let Some(sdxl) = &folder.sdxl {
        out += &format!(
            "  added conditions: text_embeds {} wide (pooled `{}`), time_ids [H, W, 0, 0, H, W]; empty negative prompt \
             with guidance: {}\n",
            unet.pooled_width().map_or("dynamically".into(), |w| w.to_string()),
            sdxl.pooled_output,
            if sdxl.force_zeros_for_empty_prompt { "zeros" } else { "the encoding of \"\"" }
        );
    }
    if let Some(second) = &folder.text_encoder_2 {
        out += &format!(
            "  tokenizers: {} (pad {:?}), {} (pad {:?})\n",
            folder.tokenizer_file.display(),
            folder.tokenizer.pad_token,
            second.tokenizer_file.display(),
            second.tokenizer.pad_token
        );
    }
    out += &format!(
        "  latents: {} channels, scale {}, image range {}, sides multiple of {}, native size {}²; VAE fp32 only \
         (TensorRT): {}; scheduler: {} ({:?}); defaults: {} steps, strength {}, guidance {}\n",
        folder.latent_channels,
        folder.latent_scale,
        folder.image_range,
        folder.size_multiple,
        folder.native_size,
        if folder.vae_fp32_only { "yes" } else { "no" },
        folder.scheduler.kind.key(),
        folder.scheduler.prediction_type,
        folder.defaults.steps,
        folder.defaults.strength,
        folder.defaults.guidance
    );
    // The estimate the start-up check uses (src/memory.rs), at the native size: what a machine must hold.
    let side = folder.native_size;
    let need = crate::memory::estimate(&folder, side, side, crate::memory::unet_batch(1, folder.defaults.guidance));
    out += &format!(
        "  memory at {side}x{side}, stream batch 1 (CPU estimate): about {:.1} GB (weights {:.1} GB, attention {:.1} \
         GB); on a GPU with fused attention about {:.1} GB\n",
        need.total_bytes() / 1e9,
        need.weights_bytes / 1e9,
        need.attention_bytes / 1e9,
        (need.weights_bytes + need.activation_bytes) / 1e9
    );
    Ok(out)
}
