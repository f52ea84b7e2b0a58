//! The small ONNX graphs latentcam builds at load time ([`GraphBuilder`]) so that everything between the 8-bit
//! frames and the models runs on the models' execution provider: 8-bit HWC to the VAE's range, the per-frame
//! inputs to their models' form (and their carry in a denoising batch), the noise add, the LCM step with
//! guidance, back to 8-bit HWC.

use ort::editor::Model;
use ort::session::Session;
use ort::value::TensorElementType::{Float32, Uint8};

use super::super::scheduler::PredictionType;
use super::conditioning::{Active, Carry, Upload};
use super::layout::Layout;
use crate::error::Result;
use crate::infer::graph::GraphBuilder;
use crate::infer::{ExecutionProvider, Runtime};
use crate::model::ImageRange;

/// The small graphs' sessions for one parameter set.
pub(super) struct Graphs {
    pub pre: Option<Session>,
    /// Per per-frame input the path takes, in the same order: its upload and, when carried, its carry.
    pub uploads: Vec<(Session, Option<Session>)>,
    pub noise: Session,
    pub step_mid: Option<Session>,
    pub step_last: Option<Session>,
    /// Masked denoising batch: keeps the items' clean latents for the next frame.
    pub clean_carry: Option<Session>,
    pub post: Session,
}

impl Graphs {
    pub fn build(runtime: &Runtime, ep: ExecutionProvider, l: &Layout, inputs: &[Active]) -> Result<Graphs> {
        let session = |role, model, device_io| runtime.graph_session(ep, role, model, device_io);
        let steps = l.steps;
        Ok(Graphs {
            pre: (!l.txt2img).then(|| session("pre-processing", pre_graph(l)?, false)).transpose()?,
            uploads: inputs
                .iter()
                .map(|input| {
                    let upload = session("conditioning", upload_graph(l, input)?, false)?;
                    let carry = input
                        .carried
                        .then(|| session("conditioning carry", carry_graph(l, input)?, true))
                        .transpose()?;
                    Ok((upload, carry))
                })
                .collect::<Result<_>>()?,
            noise: session("noise", noise_graph(l)?, true)?,
            step_mid: (!l.vae_only && steps > 1 && !l.denoising)
                .then(|| session("LCM step", step_graph(l, true, false)?, true))
                .transpose()?,
            step_last: (!l.vae_only)
                .then(|| session("LCM step", step_graph(l, l.carries(), true)?, true))
                .transpose()?,
            clean_carry: (l.masked && l.carries())
                .then(|| session("clean latents carry", latent_carry_graph(l)?, true))
                .transpose()?,
            post: session("post-processing", post_graph(l)?, false)?,
        })
    }
}

/// 8-bit HWC frames -> the VAE's range, NCHW, in the encoder's element type.
fn pre_graph(l: &Layout) -> Result<Model> {
    let mut g = GraphBuilder::new("pre-processing")?;
    let frames = g.input("frames", Uint8, &[l.slots, l.height, l.width, 3]);
    let x = g.cast(&frames, Uint8, Float32)?;
    let x = g.transpose(&x, &[0, 3, 1, 2])?;
    let max = g.scalar(255.0)?;
    let mut x = g.binary("Div", &x, &max)?;
    if l.range == ImageRange::MinusOneToOne {
        let (two, one) = (g.scalar(2.0)?, g.scalar(1.0)?);
        let doubled = g.binary("Mul", &x, &two)?;
        x = g.binary("Sub", &doubled, &one)?;
    }
    if l.inpaint {
        // The masked image after the frames, as diffusers makes it: the pixels to change are 0 (mid-gray in
        // -1..1), the kept ones the frame's.
        let keep = g.input("keep", Float32, &[l.slots, 1, l.height, l.width]);
        let masked = g.binary("Mul", &x, &keep)?;
        x = g.concat(&[&x, &masked], 0)?;
    }
    let x = g.cast(&x, Float32, l.vae_in)?;
    g.output(&x, "image", l.vae_in, &[l.encoded(), 3, l.height, l.width])?;
    g.finish()
}

/// A per-frame input (8-bit HWC `pixels`, one per frame slot) -> its model's form, in its consumer's batch and
/// element type (`out`). When carried, the new frame's copy goes first and the last run's items (`carry`)
/// follow; `items` is written out to be carried to the next frame.
fn upload_graph(l: &Layout, input: &Active) -> Result<Model> {
    let mut g = GraphBuilder::new("conditioning")?;
    let pixels = g.input("pixels", Uint8, &input.host_shape(l));
    let mut x = match input.input.upload {
        Upload::UnitRange => {
            let x = g.cast(&pixels, Uint8, Float32)?;
            let x = g.transpose(&x, &[0, 3, 1, 2])?;
            let max = g.scalar(255.0)?;
            g.binary("Div", &x, &max)?
        }
        Upload::LatentMask => {
            let half = g.scalar(127.5)?;
            if l.inpaint {
                // The pixels to keep at the working size, for the masked image (the pre-processing graph).
                let x = g.cast(&pixels, Uint8, Float32)?;
                let x = g.transpose(&x, &[0, 3, 1, 2])?;
                let keep = g.binary("LessOrEqual", &x, &half)?;
                let keep = g.cast_bool(&keep)?;
                g.output(&keep, "keep", Float32, &[l.slots, 1, l.height, l.width])?;
            }
            // Every 8th pixel from the top-left (nearest), then 1 where it is at least half (128 of 255).
            let x = g.slice_strided(&pixels, &[1, 2], 8)?;
            let x = g.cast(&x, Uint8, Float32)?;
            let x = g.transpose(&x, &[0, 3, 1, 2])?;
            let on = g.binary("Greater", &x, &half)?;
            g.cast_bool(&on)?
        }
    };
    if input.carried {
        let items = input.form(l, l.items);
        match input.input.carry {
            Carry::WithItsFrame => {
                let carry = g.input("carry", Float32, &items);
                let older = g.slice(&carry, 0, 0, l.items - 1)?;
                x = g.concat(&[&x, &older], 0)?;
            }
        }
        g.output(&x, "items", Float32, &items)?;
    }
    let copies = vec![x.as_str(); (input.batch / l.items) as usize];
    let x = if copies.len() > 1 { g.concat(&copies, 0)? } else { x.clone() };
    let x = g.cast(&x, Float32, input.ty)?;
    g.output(&x, "out", input.ty, &input.form(l, input.batch))?;
    g.finish()
}

/// A carried per-frame input's items, kept for the next frame (a device copy).
fn carry_graph(l: &Layout, input: &Active) -> Result<Model> {
    let mut g = GraphBuilder::new("conditioning carry")?;
    let shape = input.form(l, l.items);
    let items = g.input("items", Float32, &shape);
    let carry = g.op("Identity", &[&items], vec![])?;
    g.output(&carry, "carry", Float32, &shape)?;
    g.finish()
}

/// The items' clean latents, kept for the next frame (a device copy).
fn latent_carry_graph(l: &Layout) -> Result<Model> {
    let mut g = GraphBuilder::new("clean latents carry")?;
    let shape = l.latent(l.items);
    let clean = g.input("clean", Float32, &shape);
    let carry = g.op("Identity", &[&clean], vec![])?;
    g.output(&carry, "clean_carry", Float32, &shape)?;
    g.finish()
}

/// Encoded latents -> scaled, noised to the first timestep (and, for the denoising batch, stacked with the
/// batch carried over from the last frame) -> the UNet's input. VAE-only runs go straight to the decoder input.
fn noise_graph(l: &Layout) -> Result<Model> {
    let mut g = GraphBuilder::new("noise")?;
    if l.txt2img {
        // txt2img starts from the noise itself (the LCM scheduler's init_noise_sigma is 1), no encoded image; Euler
        // kinds from zero latents noised to the first timestep (their init_noise_sigma is σ_max: sqrt(1-ᾱ)·noise
        // on the UNet's scale).
        let mut noise = g.input("noise", Float32, &l.latent(l.slots));
        if l.eps_term {
            let b = g.input("b", Float32, &[l.slots, 1, 1, 1]);
            noise = g.binary("Mul", &b, &noise)?;
        }
        if l.carries() {
            let carry = g.input("carry", Float32, &l.latent(l.items));
            let older = g.slice(&carry, 0, 0, l.items - 1)?;
            noise = g.concat(&[&noise, &older], 0)?;
        }
        g.output(&noise, "sample", Float32, &l.latent(l.items))?;
        let unet_in = if l.cfg { g.concat(&[&noise, &noise], 0)? } else { noise };
        let unet_in = g.cast(&unet_in, Float32, l.unet_in)?;
        g.output(&unet_in, "unet_in", l.unet_in, &l.latent(l.unet_batch))?;
        return g.finish();
    }
    let latent = g.input("latent", l.vae_out, &[l.encoded(), l.encoder_channels, l.latent_h, l.latent_w]);
    let mut x = g.cast(&latent, l.vae_out, Float32)?;
    if l.encoder_channels != l.channels {
        // latent_parameters: the mean is the deterministic encoding (sampling would add flicker).
        x = g.slice(&x, 1, 0, l.channels)?;
    }
    // (Constants are only made where used: ONNX Runtime refuses a graph with a dangling Constant node.)
    if l.latent_scale != 1.0 {
        let scale = g.scalar(l.latent_scale)?;
        x = g.binary("Mul", &x, &scale)?;
    }
    // With an inpainting UNet the masked images' latents follow the frames'.
    let masked_image = if l.inpaint {
        let masked = g.slice(&x, 0, l.slots, 2 * l.slots)?;
        x = g.slice(&x, 0, 0, l.slots)?;
        Some(masked)
    } else {
        None
    };
    if l.feedback {
        // x + f·(last - x): the last finished output latent (the decoder's input, unscaled again) pulls the
        // new frame's latent towards what was shown, which damps flicker between frames.
        let last = g.input("feedback_latent", l.dec_in, &l.latent(l.slots));
        let mut last = g.cast(&last, l.dec_in, Float32)?;
        if l.latent_scale != 1.0 {
            let scale = g.scalar(l.latent_scale)?;
            last = g.binary("Mul", &last, &scale)?;
        }
        let factor = g.input("feedback", Float32, &[1]);
        let towards = g.binary("Sub", &last, &x)?;
        let pull = g.binary("Mul", &factor, &towards)?;
        x = g.binary("Add", &x, &pull)?;
    }
    if l.vae_only {
        let x = if l.latent_scale != 1.0 {
            let scale = g.scalar(l.latent_scale)?;
            g.binary("Div", &x, &scale)?
        } else {
            x
        };
        let x = g.cast(&x, Float32, l.dec_in)?;
        g.output(&x, "dec_in", l.dec_in, &l.latent(l.slots))?;
        return g.finish();
    }
    let noise = g.input("noise", Float32, &l.latent(l.slots));
    let per_slot = [l.slots, 1, 1, 1];
    let (a, b) = (g.input("a", Float32, &per_slot), g.input("b", Float32, &per_slot));
    let mut sample = g.mix(&a, &x, &b, &noise)?;
    let mut frame_latents = None;
    if l.masked {
        // The frame's clean latents, which the steps blend in outside the mask, or (inpainting UNet) its masked
        // image's latents, which every UNet run reads: carried with their frame in a denoising batch, as the
        // sample is.
        let mut clean = masked_image.unwrap_or_else(|| x.clone());
        if l.carries() {
            let carry = g.input("clean_carry", Float32, &l.latent(l.items));
            let older = g.slice(&carry, 0, 0, l.items - 1)?;
            clean = g.concat(&[&clean, &older], 0)?;
        }
        let clean = g.op("Identity", &[&clean], vec![])?;
        g.output(&clean, "clean", Float32, &l.latent(l.items))?;
        frame_latents = Some(clean);
    }
    if l.carries() {
        let carry = g.input("carry", Float32, &l.latent(l.items));
        let older = g.slice(&carry, 0, 0, l.items - 1)?;
        sample = g.concat(&[&sample, &older], 0)?;
    }
    g.output(&sample, "sample", Float32, &l.latent(l.items))?;
    let inpainting = match frame_latents {
        Some(masked_image) if l.inpaint => Some((g.input("mask", Float32, &mask_shape(l)), masked_image)),
        _ => None,
    };
    let unet_in = unet_input(&mut g, l, &sample, inpainting.as_ref())?;
    g.output(&unet_in, "unet_in", l.unet_in, &l.unet_sample(l.unet_batch))?;
    g.finish()
}

/// The latent mask's shape: one row per item.
fn mask_shape(l: &Layout) -> [i64; 4] {
    [l.items, 1, l.latent_h, l.latent_w]
}

/// Whether the step graph reads the mask and the frames' latents: latent blending does every step; with an
/// inpainting UNet only a step that makes the next UNet input does (nothing is blended).
pub(super) fn step_reads_mask(l: &Layout, renoise: bool) -> bool {
    l.masked && (!l.inpaint || (renoise && !l.denoising))
}

/// The UNet's input from the items' latents: with an inpainting UNet, the mask and the masked image's latents
/// after them on the channel axis (diffusers' order); twice for classifier-free guidance; in the UNet's type.
fn unet_input(g: &mut GraphBuilder, l: &Layout, sample: &str, inpainting: Option<&(String, String)>) -> Result<String> {
    let x = match inpainting {
        Some((mask, masked_image)) => g.concat(&[sample, mask, masked_image], 1)?,
        None => g.op("Identity", &[sample], vec![])?,
    };
    let x = if l.cfg { g.concat(&[&x, &x], 0)? } else { x };
    g.cast(&x, Float32, l.unet_in)
}

/// One step (diffusers' `LCMScheduler.step`, or Euler's in the same form: scheduler.rs; the same order of
/// operations as the host code): guidance, the x0 estimate, the boundary-condition mix, then the move to the next
/// timestep (`renoise`: fresh noise for LCM and Euler-ancestral, the predicted noise for Euler kinds) and/or the
/// decoder input (`last`).
fn step_graph(l: &Layout, renoise: bool, last: bool) -> Result<Model> {
    let mut g = GraphBuilder::new("LCM step")?;
    let x = g.input("sample", Float32, &l.latent(l.items));
    let out = g.input("model_out", l.unet_out, &l.latent(l.unet_batch));
    let mut m = g.cast(&out, l.unet_out, Float32)?;
    if l.cfg {
        let guidance = g.input("guidance", Float32, &[1]);
        let uncond = g.slice(&m, 0, 0, l.items)?;
        let text = g.slice(&m, 0, l.items, 2 * l.items)?;
        let diff = g.binary("Sub", &text, &uncond)?;
        let scaled = g.binary("Mul", &guidance, &diff)?;
        m = g.binary("Add", &uncond, &scaled)?;
    }
    let per_item = l.per_item();
    let c_skip = g.input("c_skip", Float32, &per_item);
    let c_out = g.input("c_out", Float32, &per_item);
    let sqrt_a = g.input("sqrt_alpha", Float32, &per_item);
    let sqrt_1ma = g.input("sqrt_one_minus_alpha", Float32, &per_item);
    let x0 = match l.prediction {
        PredictionType::Epsilon => {
            let noise_part = g.binary("Mul", &sqrt_1ma, &m)?;
            let diff = g.binary("Sub", &x, &noise_part)?;
            g.binary("Div", &diff, &sqrt_a)?
        }
        PredictionType::VPrediction => {
            let a = g.binary("Mul", &sqrt_a, &x)?;
            let b = g.binary("Mul", &sqrt_1ma, &m)?;
            g.binary("Sub", &a, &b)?
        }
        PredictionType::Sample => m.clone(),
    };
    let denoised = g.mix(&c_out, &x0, &c_skip, &x)?;
    let masked = if step_reads_mask(l, renoise) {
        let mask = g.input("mask", Float32, &mask_shape(l));
        let clean = g.input("clean", Float32, &l.latent(l.items));
        Some((mask, clean))
    } else {
        None
    };
    // Latent blending (a 4-channel UNet); an inpainting UNet reads the mask in its input instead.
    let blending = masked.as_ref().filter(|_| !l.inpaint);
    if renoise {
        let rn_a = g.input("renoise_a", Float32, &per_item);
        let rn_b = g.input("renoise_b", Float32, &per_item);
        let noise = g.input("noise", Float32, &l.latent(l.items));
        let mut next = g.mix(&rn_a, &denoised, &rn_b, &noise)?;
        if l.eps_term {
            // ε̂: the model's output for ε-prediction, else (x - sqrt(ᾱ)·x0) / sqrt(1-ᾱ).
            let eps = match l.prediction {
                PredictionType::Epsilon => m.clone(),
                _ => {
                    let signal = g.binary("Mul", &sqrt_a, &x0)?;
                    let rest = g.binary("Sub", &x, &signal)?;
                    g.binary("Div", &rest, &sqrt_1ma)?
                }
            };
            let rn_eps = g.input("renoise_eps", Float32, &per_item);
            let moved = g.binary("Mul", &rn_eps, &eps)?;
            next = g.binary("Add", &next, &moved)?;
        }
        if let Some((mask, clean)) = blending {
            // Outside the mask: the frame's clean latents noised to the next step's level with the first noise
            // (diffusers: (1 - m)·add_noise(image latents, noise, t_next) + m·latents).
            let (clean_a, clean_b) = (g.input("clean_a", Float32, &per_item), g.input("clean_b", Float32, &per_item));
            let init_noise = g.input("init_noise", Float32, &l.latent(l.items));
            let kept = g.mix(&clean_a, clean, &clean_b, &init_noise)?;
            next = blend(&mut g, mask, &next, &kept)?;
        }
        g.output(&next, "next_sample", Float32, &l.latent(l.items))?;
        if !l.denoising {
            let inpainting = masked.as_ref().filter(|_| l.inpaint);
            let unet_in = unet_input(&mut g, l, &next, inpainting)?;
            g.output(&unet_in, "unet_in", l.unet_in, &l.unet_sample(l.unet_batch))?;
        }
    }
    if last {
        // The denoising batch's last item is the frame that has had every step.
        let mut d = if l.denoising { g.slice(&denoised, 0, l.items - 1, l.items)? } else { denoised.clone() };
        if let Some((mask, clean)) = blending {
            // After the last step the latents outside the mask are the frame's own, clean.
            let (mask, clean) = if l.denoising {
                (g.slice(mask, 0, l.items - 1, l.items)?, g.slice(clean, 0, l.items - 1, l.items)?)
            } else {
                (mask.clone(), clean.clone())
            };
            d = blend(&mut g, &mask, &d, &clean)?;
        }
        if l.latent_scale != 1.0 {
            // divide, as diffusers does, so results match to the last bit
            let scale = g.scalar(l.latent_scale)?;
            d = g.binary("Div", &d, &scale)?;
        }
        let d = g.cast(&d, Float32, l.dec_in)?;
        g.output(&d, "dec_in", l.dec_in, &l.latent(l.out_rows))?;
    }
    g.finish()
}

/// `(1 - m)·kept + m·changed`, in diffusers' order of operations (exact for a 0/1 mask).
fn blend(g: &mut GraphBuilder, mask: &str, changed: &str, kept: &str) -> Result<String> {
    let one = g.scalar(1.0)?;
    let keep = g.binary("Sub", &one, mask)?;
    g.mix(&keep, kept, mask, changed)
}

/// Decoded image -> 8-bit HWC, clamped and rounded half up as `imaging::from_tensor` does.
fn post_graph(l: &Layout) -> Result<Model> {
    let mut g = GraphBuilder::new("post-processing")?;
    let decoded = g.input("decoded", l.dec_out, &[l.out_rows, 3, l.height, l.width]);
    let mut x = g.cast(&decoded, l.dec_out, Float32)?;
    if l.range == ImageRange::MinusOneToOne {
        let half = g.scalar(0.5)?;
        let scaled = g.binary("Mul", &x, &half)?;
        x = g.binary("Add", &scaled, &half)?;
    }
    let (zero, one, max, half) = (g.scalar(0.0)?, g.scalar(1.0)?, g.scalar(255.0)?, g.scalar(0.5)?);
    let x = g.op("Clip", &[&x, &zero, &one], vec![])?;
    let x = g.binary("Mul", &x, &max)?;
    // Floor(x + 0.5) is round-half-up, as Rust's `round` for these non-negative values (ONNX Round is
    // half-to-even).
    let x = g.binary("Add", &x, &half)?;
    let x = g.op("Floor", &[&x], vec![])?;
    let x = g.cast(&x, Float32, Uint8)?;
    let x = g.transpose(&x, &[0, 2, 3, 1])?;
    g.output(&x, "frames", Uint8, &[l.out_rows, l.height, l.width, 3])?;
    g.finish()
}
