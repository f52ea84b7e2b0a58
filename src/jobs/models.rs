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
    let models = [
        diffusion.text_encoder().ok_or_else(|| Error::internal("models check", "no text encoder"))?.model(),
        diffusion.vae_encoder().model(),
        unet.model(),
        diffusion.vae_decoder().model(),
    ];
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
    out += &format!(
        "  latents: {} channels, scale {}, image range {}, sides multiple of {}; scheduler: LCM ({:?}); \
         defaults: {} steps, strength {}, guidance {}\n",
        folder.latent_channels,
        folder.latent_scale,
        folder.image_range,
        folder.size_multiple,
        folder.scheduler.prediction_type,
        folder.defaults.steps,
        folder.defaults.strength,
        folder.defaults.guidance
    );
    Ok(out)
}
