//! VAE encoder and decoder. Both speak RGB in 0..1 to the rest of latentcam; the model folder says which
//! range the model itself uses (TAESD family: 0..1; the SD VAE: -1..1) and how latents are scaled.

use ndarray::{Array4, ArrayView4, Axis, s};

use crate::error::{Error, Result};
use crate::infer::contract::{vae_decoder, vae_encoder};
use crate::infer::{Model, Runtime};
use crate::model::{ImageRange, ModelFolder};

pub struct VaeEncoder {
    model: Model,
    range: ImageRange,
    scale: f32,
    latent_channels: usize,
}

impl VaeEncoder {
    pub fn load(runtime: &Runtime, folder: &ModelFolder) -> Result<VaeEncoder> {
        let model = runtime.load("VAE encoder", &folder.vae_encoder, &vae_encoder::CONTRACT)?;
        if let Some(c) = model.binding.input(vae_encoder::IMAGE).dim(1)
            && c != 3
        {
            return Err(model.contract_error(format!("image input has {c} channels, expected 3 (RGB)")));
        }
        if let Some(c) = model.binding.output(vae_encoder::LATENT).dim(1) {
            check_latent_channels(&model, c as usize, folder.latent_channels)?;
        }
        Ok(VaeEncoder {
            model,
            range: folder.image_range,
            scale: folder.latent_scale,
            latent_channels: folder.latent_channels,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// `image`: [1, 3, H, W] RGB in 0..1. Returns scaled latents [1, C, H/8, W/8] ready for the UNet.
    pub fn encode(&mut self, image: ArrayView4<f32>) -> Result<Array4<f32>> {
        let _span = tracing::trace_span!("vae_encode").entered();
        let raw = match self.range {
            ImageRange::ZeroToOne => self.model.run_image(image)?,
            ImageRange::MinusOneToOne => self.model.run_image(image.mapv(|x| x * 2.0 - 1.0).view())?,
        };
        let channels = raw.dim().1;
        check_latent_channels(&self.model, channels, self.latent_channels)?;
        // A `latent_parameters` output holds the mean then the log-variance: the mean is the deterministic
        // encoding (sampling would add flicker in video).
        let mut latents = if channels == self.latent_channels {
            raw
        } else {
            raw.slice(s![.., ..self.latent_channels, .., ..]).to_owned()
        };
        if self.scale != 1.0 {
            latents.mapv_inplace(|x| x * self.scale);
        }
        Ok(latents)
    }
}

fn check_latent_channels(model: &Model, found: usize, expected: usize) -> Result<()> {
    if found == expected || found == 2 * expected {
        Ok(())
    } else {
        Err(model.contract_error(format!(
            "latent output has {found} channels but model.toml says latent-channels = {expected} \
             (a latent_parameters output would have {})",
            2 * expected
        )))
    }
}

pub struct VaeDecoder {
    model: Model,
    range: ImageRange,
    scale: f32,
}

impl VaeDecoder {
    pub fn load(runtime: &Runtime, folder: &ModelFolder) -> Result<VaeDecoder> {
        let model = runtime.load("VAE decoder", &folder.vae_decoder, &vae_decoder::CONTRACT)?;
        if let Some(c) = model.binding.input(vae_decoder::LATENT).dim(1)
            && c as usize != folder.latent_channels
        {
            return Err(model.contract_error(format!(
                "latent input has {c} channels but model.toml says latent-channels = {}",
                folder.latent_channels
            )));
        }
        if let Some(c) = model.binding.output(vae_decoder::IMAGE).dim(1)
            && c != 3
        {
            return Err(model.contract_error(format!("image output has {c} channels, expected 3 (RGB)")));
        }
        Ok(VaeDecoder { model, range: folder.image_range, scale: folder.latent_scale })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Scaled latents [1, C, h, w] -> RGB [1, 3, 8h, 8w] in 0..1 (not clamped; the caller quantizes).
    pub fn decode(&mut self, latents: ArrayView4<f32>) -> Result<Array4<f32>> {
        let _span = tracing::trace_span!("vae_decode").entered();
        let mut image = if self.scale != 1.0 {
            let scale = self.scale; // divide, as diffusers does, so results match to the last bit
            self.model.run_image(latents.mapv(|x| x / scale).view())?
        } else {
            self.model.run_image(latents)?
        };
        if image.len_of(Axis(1)) != 3 {
            return Err(Error::inference(
                "VAE decoder",
                format!("output has shape {:?}, expected 3 channels", image.dim()),
            ));
        }
        if self.range == ImageRange::MinusOneToOne {
            image.mapv_inplace(|x| x * 0.5 + 0.5);
        }
        Ok(image)
    }
}
