//! The sizes, element types and switches every graph and buffer of one parameter set is built from.

use ort::value::TensorElementType;

use super::super::img2img::{Diffusion, Prepared};
use super::super::scheduler::{PredictionType, SchedulerKind};
use super::BatchMode;
use super::build::Setup;
use crate::infer::contract::{unet as unet_port, vae_encoder as enc_port};
use crate::model::ImageRange;

#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub height: i64,
    pub width: i64,
    pub latent_h: i64,
    pub latent_w: i64,
    pub channels: i64,
    /// Channels of the encoder's output (2C for a `latent_parameters` output: mean then log-variance).
    pub encoder_channels: i64,
    /// Frames per run going in (k for `Frames(k)`, else 1).
    pub slots: i64,
    /// Batch items the step maths works on (k, n or 1).
    pub items: i64,
    /// UNet batch (items, doubled for classifier-free guidance).
    pub unet_batch: i64,
    /// Frames per run coming out.
    pub out_rows: i64,
    /// Denoising steps (0 for VAE-only runs).
    pub steps: usize,
    pub cfg: bool,
    pub vae_only: bool,
    pub denoising: bool,
    /// Pose-guided: a ControlNet conditioned on the skeleton that comes with each frame.
    pub control: bool,
    /// Latent blending with a mask that comes with each frame: outside it the latents are the frame's own,
    /// noised to each step's level (diffusers' inpainting with a 4-channel UNet).
    pub masked: bool,
    /// Masked, with an inpainting UNet: its input is the latents, the mask and the masked image's latents
    /// (`unet_channels` = 2C + 1), and nothing is blended back (diffusers' 9-channel branch).
    pub inpaint: bool,
    /// Channels of the UNet's `sample`.
    pub unet_channels: i64,
    pub txt2img: bool,
    /// Latent feedback: the last output latent is blended into the next input latent.
    pub feedback: bool,
    pub range: ImageRange,
    pub latent_scale: f32,
    pub prediction: PredictionType,
    /// The step moves along the predicted noise (Euler kinds: [`StepConstants::renoise_eps`]).
    pub eps_term: bool,
    pub vae_in: TensorElementType,
    pub vae_out: TensorElementType,
    pub unet_in: TensorElementType,
    pub unet_out: TensorElementType,
    pub dec_in: TensorElementType,
    pub dec_out: TensorElementType,
}

impl Layout {
    pub fn of(diffusion: &Diffusion, prepared: &Prepared, setup: &Setup) -> Layout {
        let Setup { size: (width, height), mode, control, feedback, masked, .. } = *setup;
        let folder = diffusion.folder();
        let channels = folder.latent_channels as i64;
        let encoder = diffusion.vae_encoder().model();
        let encoder_port = encoder.binding.output(enc_port::LATENT);
        let encoder_channels = encoder_port.dim(1).unwrap_or(if encoder_port.name == "latent_parameters" {
            2 * channels
        } else {
            channels
        });
        let (slots, items) = (mode.slots() as i64, mode.items() as i64);
        let cfg = prepared.uses_cfg();
        let txt2img = control.is_some_and(|c| c.txt2img);
        let unet = diffusion.unet().model();
        Layout {
            height: i64::from(height),
            width: i64::from(width),
            latent_h: i64::from(height) / 8,
            latent_w: i64::from(width) / 8,
            channels,
            encoder_channels,
            slots,
            items,
            unet_batch: if cfg { 2 * items } else { items },
            out_rows: if matches!(mode, BatchMode::Denoising(_)) { 1 } else { slots },
            steps: prepared.plan.steps.len(),
            cfg,
            vae_only: prepared.vae_only(),
            denoising: matches!(mode, BatchMode::Denoising(_)),
            control: control.is_some(),
            masked: masked && !prepared.vae_only(),
            inpaint: masked && !prepared.vae_only() && diffusion.unet().inpainting,
            unet_channels: if masked && !prepared.vae_only() && diffusion.unet().inpainting {
                2 * channels + 1
            } else {
                channels
            },
            txt2img,
            feedback: feedback > 0.0 && !txt2img && !prepared.vae_only(),
            range: folder.image_range,
            latent_scale: folder.latent_scale,
            prediction: prepared.plan.prediction,
            eps_term: prepared.plan.kind != SchedulerKind::Lcm,
            vae_in: encoder.input_type(enc_port::IMAGE),
            vae_out: encoder.output_type(enc_port::LATENT),
            unet_in: unet.input_type(unet_port::SAMPLE),
            unet_out: unet.output_type(unet_port::OUT),
            dec_in: diffusion.vae_decoder().model().input_type(0),
            dec_out: diffusion.vae_decoder().model().output_type(0),
        }
    }

    /// A denoising batch of more than one item: each item is another frame, and what is per frame (its latent,
    /// its conditioning inputs) is carried along with it from one run to the next, one position on.
    pub fn carries(&self) -> bool {
        self.denoising && self.items > 1
    }

    pub fn latent(&self, batch: i64) -> [i64; 4] {
        [batch, self.channels, self.latent_h, self.latent_w]
    }

    /// The UNet's `sample` for `batch` rows.
    pub fn unet_sample(&self, batch: i64) -> [i64; 4] {
        [batch, self.unet_channels, self.latent_h, self.latent_w]
    }

    /// Images the VAE encodes per run: the frames, and with an inpainting UNet their masked copies after them.
    pub fn encoded(&self) -> i64 {
        if self.inpaint { 2 * self.slots } else { self.slots }
    }

    pub fn per_item(&self) -> [i64; 4] {
        [self.items, 1, 1, 1]
    }
}
