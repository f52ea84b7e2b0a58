//! Building the plan for one parameter set, as a short list of steps: the layout, the checks, the fixed
//! noise, the per-frame inputs the path takes, the small graphs, then the runs in order with the buffers they
//! pass along.
//!
//! ```text
//! [pre -> VAE enc] -> [upload per per-frame input] -> noise -> per step: [ControlNet] -> UNet -> LCM step
//!     -> [carry per per-frame input] -> VAE dec -> post
//! ```

use ndarray::{Array1, ArrayD, IxDyn};
use ort::memory::Allocator;
use ort::session::IoBinding;
use ort::value::DynTensor;
use ort::value::TensorElementType::{self, Float32, Uint8};

use super::super::img2img::{Diffusion, Prepared};
use super::super::noise::NoiseBank;
use super::conditioning::{self, Active, Consumer};
use super::constants::{self, Denoiser, PromptInput, RunConstants, StepConstants, noise_rows, per_item_tensor};
use super::graphs::Graphs;
use super::layout::Layout;
use super::plan::{Feedback, HostInput, Plan, Run, Stage};
use super::{BatchMode, Control};
use crate::error::{Error, Result};
use crate::frame::ConditioningKind;
use crate::infer::bound::{self, Rebind};
use crate::infer::contract::{controlnet as cn_port, unet as unet_port};
use crate::infer::tensor::host_tensor;
use crate::infer::{ExecutionProvider, Model, Runtime};

/// What a path is built for besides its parameters.
#[derive(Clone, Copy)]
pub(super) struct Setup<'a> {
    pub size: (u32, u32),
    pub mode: BatchMode,
    pub control: Option<Control>,
    /// Latent blending: every frame brings a mask ([`crate::frame::Conditioning::mask`]).
    pub masked: bool,
    pub explicit_noise: Option<&'a NoiseBank>,
    pub ep: ExecutionProvider,
    pub feedback: f32,
}

/// Build the plan for `prepared`: the graphs, the buffers, then the runs in order.
pub(super) fn build(runtime: &Runtime, diffusion: &mut Diffusion, prepared: &Prepared, setup: Setup) -> Result<Plan> {
    let l = Layout::of(diffusion, prepared, &setup);
    check(diffusion, &l, &setup)?;
    let noise = noise_bank(prepared, &l, setup.explicit_noise)?;
    let inputs = conditioning::active(diffusion, &l)?;
    let graphs = Graphs::build(runtime, setup.ep, &l, &inputs)?;
    let mut b = Builder::new(diffusion, prepared, &setup, l)?;
    // An inpainting UNet's masked image needs the mask at the working size before the encoder runs.
    let (frame, conditioning) = if l.inpaint {
        let conditioning = b.upload(&graphs, &inputs)?;
        (b.encode(&graphs, diffusion)?, conditioning)
    } else {
        let frame = b.encode(&graphs, diffusion)?;
        (frame, b.upload(&graphs, &inputs)?)
    };
    if let Some(sampling) = b.noise(&graphs, &noise)? {
        b.steps(&graphs, diffusion, &noise, sampling)?;
    }
    b.carry(&graphs)?;
    b.decode(&graphs, diffusion)?;
    tracing::debug!(
        mode = ?setup.mode,
        width = setup.size.0,
        height = setup.size.1,
        runs = b.runs.len(),
        ep = %setup.ep,
        "frame path built"
    );
    Ok(b.into_plan(graphs, frame, conditioning))
}

/// Refuse what the models or the schedule cannot run.
fn check(diffusion: &Diffusion, l: &Layout, setup: &Setup) -> Result<()> {
    if setup.masked && setup.control.is_some() {
        return Err(Error::invalid("mask", "a mask with pose guidance is not supported yet: use one or the other"));
    }
    if diffusion.unet().inpainting && !setup.masked && !l.vae_only {
        return Err(super::super::img2img::needs_mask(diffusion.folder()));
    }
    if let Some(c) = setup.control {
        if diffusion.controlnet().is_none() {
            return Err(Error::internal("frame path", "pose guidance without a loaded ControlNet"));
        }
        if l.vae_only {
            return Err(Error::invalid("params.strength", "0 runs the VAE only: ControlNet needs at least one step"));
        }
        let given = crate::knobs::Given::Float(f64::from(c.scale));
        crate::knobs::CONTROLNET_SCALE
            .float(&given, crate::knobs::Spelling::Key)
            .map_err(|e| Error::InvalidParameter { what: e.name(), problem: e.problem() })?;
    }
    if let BatchMode::Denoising(n) = setup.mode
        && n != l.steps
    {
        return Err(Error::internal("frame path", format!("a denoising batch of {n} for {} steps", l.steps)));
    }
    if let Some(fixed) = diffusion.unet().model().binding.input(unet_port::SAMPLE).dim(0)
        && !l.vae_only
        && fixed != l.unet_batch
    {
        return Err(Error::invalid(
            "engine.stream-batch",
            format!(
                "this UNet has a fixed batch of {fixed}; the run needs {} (export it with a dynamic batch)",
                l.unet_batch
            ),
        ));
    }
    Ok(())
}

/// The fixed noise: explicit (golden tests) or the seed's, one tensor per step.
fn noise_bank(prepared: &Prepared, l: &Layout, explicit: Option<&NoiseBank>) -> Result<NoiseBank> {
    let bank = match explicit {
        Some(bank) => bank.clone(),
        None => NoiseBank::new(
            prepared.params.seed,
            (1, l.channels as usize, l.latent_h as usize, l.latent_w as usize),
            l.steps.max(1),
        ),
    };
    if !l.vae_only && bank.len() < l.steps {
        return Err(Error::internal("frame path", format!("{} noise tensors for {} steps", bank.len(), l.steps)));
    }
    Ok(bank)
}

fn err(what: &'static str) -> impl Fn(ort::Error) -> Error {
    move |e| Error::internal("frame path", format!("{what}: {e}"))
}

/// A per-frame input's buffers on the device: its uploaded form and, when carried, its items and their carry.
struct Uploaded {
    input: Active,
    form: DynTensor,
    carry: Option<[DynTensor; 2]>,
}

/// The buffers the denoising steps pass along.
struct Sampling {
    /// Step i reads one and writes the other; in a denoising batch `samples[1]` carries the re-noised batch from
    /// one frame to the next.
    samples: [DynTensor; 2],
    unet_in: DynTensor,
    model_out: DynTensor,
    /// Masked runs: the items' clean latents and, in a denoising batch, their copy for the next frame.
    clean: Option<(DynTensor, Option<DynTensor>)>,
}

/// The plan as it is built: the runs so far and the buffers they pass along.
struct Builder<'p> {
    l: Layout,
    prepared: &'p Prepared,
    mode: BatchMode,
    control_scale: f32,
    feedback: f32,
    device: Allocator,
    host: Allocator,
    runs: Vec<Run>,
    held: Vec<DynTensor>,
    prompts: Vec<PromptInput>,
    image: DynTensor,
    latent: DynTensor,
    /// Inpainting UNet: the pixels to keep (from the mask's upload), for the masked image.
    keep: Option<DynTensor>,
    dec_in: DynTensor,
    decoded: DynTensor,
    frames_out: DynTensor,
    uploaded: Vec<Uploaded>,
    noise_run: Option<usize>,
    feedback_state: Option<Feedback>,
}

impl<'p> Builder<'p> {
    fn new(diffusion: &Diffusion, prepared: &'p Prepared, setup: &Setup, l: Layout) -> Result<Builder<'p>> {
        let device = bound::device_allocator(diffusion.unet().model().session(), setup.ep)?;
        let host = Allocator::default();
        let buffer = |ty, shape: &[i64]| bound::buffer(&device, ty, shape);
        Ok(Builder {
            frames_out: bound::buffer(&host, Uint8, &[l.out_rows, l.height, l.width, 3])?,
            image: buffer(l.vae_in, &[l.encoded(), 3, l.height, l.width])?,
            latent: buffer(l.vae_out, &[l.encoded(), l.encoder_channels, l.latent_h, l.latent_w])?,
            keep: if l.inpaint { Some(buffer(Float32, &[l.slots, 1, l.height, l.width])?) } else { None },
            dec_in: buffer(l.dec_in, &l.latent(l.out_rows))?,
            decoded: buffer(l.dec_out, &[l.out_rows, 3, l.height, l.width])?,
            l,
            prepared,
            mode: setup.mode,
            control_scale: setup.control.map_or(1.0, |c| c.scale),
            feedback: setup.feedback,
            device,
            host,
            runs: Vec::new(),
            held: Vec::new(),
            prompts: Vec::new(),
            uploaded: Vec::new(),
            noise_run: None,
            feedback_state: None,
        })
    }

    fn buffer(&self, ty: TensorElementType, shape: &[i64]) -> Result<DynTensor> {
        bound::buffer(&self.device, ty, shape)
    }

    /// Append a run; returns its index.
    fn push(&mut self, stage: Stage, binding: IoBinding) -> usize {
        self.runs.push(Run { stage, binding });
        self.runs.len() - 1
    }

    /// The camera frame -> the VAE's range -> the VAE encoder -> latent (img2img; txt2img takes no frame).
    fn encode(&mut self, graphs: &Graphs, diffusion: &Diffusion) -> Result<Option<HostInput>> {
        let Some(session) = &graphs.pre else { return Ok(None) };
        let l = self.l;
        let frames = bound::buffer(&self.host, Uint8, &[l.slots, l.height, l.width, 3])?;
        let mut pre = session.create_binding().map_err(err("binding"))?;
        pre.bind_input("frames", &frames).map_err(err("pre-processing input"))?;
        if let Some(keep) = &self.keep {
            pre.bind_input("keep", keep).map_err(err("pre-processing input"))?;
        }
        pre.bind_output("image", &mut self.image).map_err(err("pre-processing output"))?;
        let run = self.push(Stage::Pre, pre);

        let encoder = diffusion.vae_encoder().model();
        let mut encode = encoder.session().create_binding().map_err(err("binding"))?;
        encode.bind_input(encoder.binding.input(0).name.clone(), &self.image).map_err(err("VAE encoder input"))?;
        encode
            .bind_output(encoder.binding.output(0).name.clone(), &mut self.latent)
            .map_err(err("VAE encoder output"))?;
        self.push(Stage::Encode, encode);
        let slot_bytes = (l.height * l.width * 3) as usize;
        Ok(Some(HostInput { tensor: frames, slot_bytes, run, rebind: Rebind::new("frames")? }))
    }

    /// Each per-frame input -> its model's form (and, carried, its items for the next frame).
    fn upload(&mut self, graphs: &Graphs, inputs: &[Active]) -> Result<Vec<(ConditioningKind, HostInput)>> {
        let l = self.l;
        let mut host_inputs = Vec::with_capacity(inputs.len());
        for (i, (input, (session, _))) in inputs.iter().zip(&graphs.uploads).enumerate() {
            let pixels = bound::buffer(&self.host, Uint8, &input.host_shape(&l))?;
            let mut form = self.buffer(input.ty, &input.form(&l, input.batch))?;
            let mut carry = input
                .carried
                .then(|| -> Result<[DynTensor; 2]> {
                    let items = input.form(&l, l.items);
                    Ok([self.buffer(Float32, &items)?, self.buffer(Float32, &items)?])
                })
                .transpose()?;
            let mut binding = session.create_binding().map_err(err("binding"))?;
            binding.bind_input("pixels", &pixels).map_err(err("conditioning input"))?;
            binding.bind_output("out", &mut form).map_err(err("conditioning output"))?;
            if let (Some(keep), Consumer::Step) = (&mut self.keep, input.input.consumer) {
                binding.bind_output("keep", keep).map_err(err("conditioning output"))?;
            }
            if let Some([items, carry]) = &mut carry {
                binding.bind_input("carry", &*carry).map_err(err("conditioning carry"))?;
                binding.bind_output("items", items).map_err(err("conditioning carry"))?;
            }
            let run = self.push(Stage::Upload(i), binding);
            self.uploaded.push(Uploaded { input: *input, form, carry });
            let host =
                HostInput { tensor: pixels, slot_bytes: input.slot_bytes(&l), run, rebind: Rebind::new("pixels")? };
            host_inputs.push((input.input.kind, host));
        }
        Ok(host_inputs)
    }

    /// Encoded latents (or, for txt2img, the noise itself) -> noised to the first timestep -> the UNet's input;
    /// VAE-only runs go straight to the decoder input (and return no sampling buffers).
    fn noise(&mut self, graphs: &Graphs, bank: &NoiseBank) -> Result<Option<Sampling>> {
        let l = self.l;
        let mut noise = graphs.noise.create_binding().map_err(err("binding"))?;
        if !l.txt2img {
            noise.bind_input("latent", &self.latent).map_err(err("noise graph input"))?;
        }
        if l.vae_only {
            noise.bind_output("dec_in", &mut self.dec_in).map_err(err("noise graph output"))?;
            self.push(Stage::Noise, noise);
            return Ok(None);
        }
        let first = self.prepared.plan.steps[0];
        let slots = l.slots as usize;
        let bank_rows = noise_rows(bank, &vec![Some(0); slots])?;
        noise.bind_input("noise", &bank_rows).map_err(err("noise"))?;
        // With a mask, strength 1 starts from the noise alone, as diffusers' inpainting does (its init_noise_sigma:
        // 1 for LCM, σ_max for Euler kinds, which is sqrt(1-ᾱ) on the UNet's scale).
        let pure_noise = l.masked && self.prepared.params.timesteps.is_none() && self.prepared.params.strength >= 1.0;
        let (first_a, first_b) = match (pure_noise, l.eps_term) {
            (false, _) => (first.sqrt_alpha, first.sqrt_one_minus_alpha),
            (true, false) => (0.0, 1.0),
            (true, true) => (0.0, first.sqrt_one_minus_alpha),
        };
        if !l.txt2img {
            let a = per_item_tensor(&vec![first_a; slots])?;
            let b = per_item_tensor(&vec![first_b; slots])?;
            noise.bind_input("a", &a).map_err(err("noise"))?;
            noise.bind_input("b", &b).map_err(err("noise"))?;
            self.held.extend([a, b]);
        } else if l.eps_term {
            let b = per_item_tensor(&vec![first.sqrt_one_minus_alpha; slots])?;
            noise.bind_input("b", &b).map_err(err("noise"))?;
            self.held.push(b);
        }
        self.held.push(bank_rows);
        if l.feedback {
            // Until a frame has come out, the last output is zeros at factor 0: the first frame is unchanged.
            let zeros =
                host_tensor(l.dec_in, ArrayD::<f32>::zeros(IxDyn(&l.latent(l.slots).map(|d| d as usize))).view())?;
            let factor = host_tensor(Float32, Array1::from_elem(1, 0.0f32).into_dyn().view())?;
            noise.bind_input("feedback_latent", &zeros).map_err(err("feedback"))?;
            noise.bind_input("feedback", &factor).map_err(err("feedback"))?;
            self.feedback_state = Some(Feedback {
                zeros,
                factor,
                value: self.feedback,
                primed: false,
                latent: Rebind::new("feedback_latent")?,
                factor_input: Rebind::new("feedback")?,
            });
        }
        let mut samples = [self.buffer(Float32, &l.latent(l.items))?, self.buffer(Float32, &l.latent(l.items))?];
        let mut unet_in = self.buffer(l.unet_in, &l.unet_sample(l.unet_batch))?;
        let model_out = self.buffer(l.unet_out, &l.latent(l.unet_batch))?;
        if l.carries() {
            noise.bind_input("carry", &samples[1]).map_err(err("noise carry"))?;
        }
        noise.bind_output("sample", &mut samples[0]).map_err(err("noise graph output"))?;
        noise.bind_output("unet_in", &mut unet_in).map_err(err("noise graph output"))?;
        let clean = if l.masked {
            let mut clean = self.buffer(Float32, &l.latent(l.items))?;
            noise.bind_output("clean", &mut clean).map_err(err("noise graph output"))?;
            let carry = if l.carries() {
                let carry = self.buffer(Float32, &l.latent(l.items))?;
                noise.bind_input("clean_carry", &carry).map_err(err("noise carry"))?;
                Some(carry)
            } else {
                None
            };
            Some((clean, carry))
        } else {
            None
        };
        if l.inpaint {
            noise.bind_input("mask", &self.step_mask()?.form).map_err(err("noise mask"))?;
        }
        self.noise_run = Some(self.push(Stage::Noise, noise));
        Ok(Some(Sampling { samples, unet_in, model_out, clean }))
    }

    /// Each step: the ControlNet (pose-guided), the UNet, the LCM step. A denoising batch runs one step per frame
    /// (each item at its own step).
    fn steps(&mut self, graphs: &Graphs, diffusion: &mut Diffusion, bank: &NoiseBank, mut s: Sampling) -> Result<()> {
        let l = self.l;
        let mut residuals = self.residuals(diffusion)?;
        let step_runs = if l.denoising { 1 } else { l.steps };
        for i in 0..step_runs {
            let c = StepConstants::of(self.prepared, self.mode, i, l.items as usize);
            let run = RunConstants {
                prepared: self.prepared,
                layout: &l,
                timesteps: &c.timesteps,
                control_scale: self.control_scale,
            };
            if let Some(controlnet) = diffusion.controlnet() {
                self.controlnet(controlnet.model(), &run, &s, &mut residuals)?;
            }
            self.unet(diffusion.unet().model(), &run, &mut s, &residuals)?;
            self.step(graphs, (i, step_runs), &c, bank, &mut s)?;
        }
        let Sampling { samples: [s0, s1], unet_in, model_out, clean } = s;
        self.held.extend([s0, s1, unet_in, model_out]);
        if let Some((clean, carry)) = clean {
            if let (Some(mut carry), Some(session)) = (carry, graphs.clean_carry.as_ref()) {
                // After the steps have read this frame's clean latents: keep them for the next frame.
                let mut copy = session.create_binding().map_err(err("binding"))?;
                copy.bind_input("clean", &clean).map_err(err("clean latents carry"))?;
                copy.bind_output("clean_carry", &mut carry).map_err(err("clean latents carry"))?;
                self.push(Stage::CleanCarry, copy);
                self.held.push(carry);
            }
            self.held.push(clean);
        }
        self.held.extend(residuals.into_iter().map(|(_, _, buffer)| buffer));
        Ok(())
    }

    /// The ControlNet's residual buffers (pose-guided runs): (ControlNet output, UNet input, buffer).
    fn residuals(&self, diffusion: &mut Diffusion) -> Result<Vec<(String, String, DynTensor)>> {
        let l = self.l;
        if !l.control {
            return Ok(Vec::new());
        }
        let context = self.prepared.context_view()?.dim();
        let cond_dim = diffusion.unet().cond_dim;
        let controlnet = diffusion.controlnet_mut().ok_or_else(|| Error::internal("frame path", "no ControlNet"))?;
        let shapes = controlnet.residual_shapes(
            l.unet_batch as usize,
            [l.channels as usize, l.latent_h as usize, l.latent_w as usize],
            [context.1, context.2],
            (l.height as usize, l.width as usize),
            cond_dim,
        )?;
        let mut residuals = Vec::with_capacity(shapes.len());
        for (r, shape) in controlnet.residuals.clone().iter().zip(shapes) {
            residuals.push((r.output.clone(), r.input.clone(), self.buffer(r.ty, &shape)?));
        }
        Ok(residuals)
    }

    fn controlnet(
        &mut self,
        model: &Model,
        run: &RunConstants,
        s: &Sampling,
        residuals: &mut [(String, String, DynTensor)],
    ) -> Result<()> {
        let mut binding = model.session().create_binding().map_err(err("binding"))?;
        let this = (model, Denoiser::ControlNet, self.runs.len());
        constants::bind(&mut binding, this, run, &mut self.held, &mut self.prompts)?;
        binding.bind_input(model.binding.input(cn_port::SAMPLE).name.clone(), &s.unet_in).map_err(err("ControlNet"))?;
        for uploaded in &self.uploaded {
            match uploaded.input.input.consumer {
                Consumer::ControlNet(port) => binding
                    .bind_input(model.binding.input(port).name.clone(), &uploaded.form)
                    .map_err(err("ControlNet"))?,
                Consumer::Step => {}
            }
        }
        for (output, _, buffer) in residuals {
            binding.bind_output(output.clone(), &mut *buffer).map_err(err("ControlNet output"))?;
        }
        self.push(Stage::ControlNet, binding);
        Ok(())
    }

    fn unet(
        &mut self,
        model: &Model,
        run: &RunConstants,
        s: &mut Sampling,
        residuals: &[(String, String, DynTensor)],
    ) -> Result<()> {
        let mut unet = model.session().create_binding().map_err(err("binding"))?;
        constants::bind(&mut unet, (model, Denoiser::Unet, self.runs.len()), run, &mut self.held, &mut self.prompts)?;
        for (_, input, buffer) in residuals {
            unet.bind_input(input.clone(), buffer).map_err(err("UNet residual input"))?;
        }
        unet.bind_input(model.binding.input(unet_port::SAMPLE).name.clone(), &s.unet_in).map_err(err("UNet input"))?;
        unet.bind_output(model.binding.output(unet_port::OUT).name.clone(), &mut s.model_out)
            .map_err(err("UNet output"))?;
        self.push(Stage::Unet, unet);
        Ok(())
    }

    /// The LCM step of step run `i` of `step_runs`: re-noised for the next step (or, in a denoising batch, for
    /// the next frame) and/or the decoder's input after the last.
    fn step(
        &mut self,
        graphs: &Graphs,
        (i, step_runs): (usize, usize),
        c: &StepConstants,
        bank: &NoiseBank,
        s: &mut Sampling,
    ) -> Result<()> {
        let l = self.l;
        let last = i + 1 == step_runs;
        let renoise = if l.denoising { l.items > 1 } else { !last };
        let (session, stage) = if last {
            (graphs.step_last.as_ref(), Stage::StepLast)
        } else {
            (graphs.step_mid.as_ref(), Stage::StepMid)
        };
        let session = session.ok_or_else(|| Error::internal("frame path", "no step graph"))?;
        let mut step = session.create_binding().map_err(err("binding"))?;
        let (read, write) = if l.denoising { (0, 1) } else { (i % 2, (i + 1) % 2) };
        step.bind_input("sample", &s.samples[read]).map_err(err("step input"))?;
        step.bind_input("model_out", &s.model_out).map_err(err("step input"))?;
        if let Some((clean, _)) = s.clean.as_ref().filter(|_| super::graphs::step_reads_mask(&l, renoise)) {
            step.bind_input("mask", &self.step_mask()?.form).map_err(err("step mask"))?;
            step.bind_input("clean", clean).map_err(err("step mask"))?;
            if renoise && !l.inpaint {
                let (a, b) = (per_item_tensor(&c.clean_a)?, per_item_tensor(&c.clean_b)?);
                let init = noise_rows(bank, &vec![Some(0); l.items as usize])?;
                step.bind_input("clean_a", &a).map_err(err("step mask"))?;
                step.bind_input("clean_b", &b).map_err(err("step mask"))?;
                step.bind_input("init_noise", &init).map_err(err("step mask"))?;
                self.held.extend([a, b, init]);
            }
        }
        for (name, values) in [
            ("c_skip", &c.c_skip),
            ("c_out", &c.c_out),
            ("sqrt_alpha", &c.sqrt_alpha),
            ("sqrt_one_minus_alpha", &c.sqrt_one_minus_alpha),
        ] {
            let t = per_item_tensor(values)?;
            step.bind_input(name, &t).map_err(err("step constants"))?;
            self.held.push(t);
        }
        if l.cfg {
            let scale = self.prepared.cfg_scale_value().unwrap_or(1.0);
            let t = host_tensor(Float32, Array1::from_elem(1, scale).into_dyn().view())?;
            step.bind_input("guidance", &t).map_err(err("step constants"))?;
            self.held.push(t);
        }
        if renoise {
            let rows: Vec<Option<usize>> = if l.denoising {
                (0..l.items as usize).map(|j| (j + 1 < l.steps).then_some(j + 1)).collect()
            } else {
                vec![Some(i + 1); l.items as usize]
            };
            let n = noise_rows(bank, &rows)?;
            let (a, b) = (per_item_tensor(&c.renoise_a)?, per_item_tensor(&c.renoise_b)?);
            step.bind_input("renoise_a", &a).map_err(err("step constants"))?;
            step.bind_input("renoise_b", &b).map_err(err("step constants"))?;
            step.bind_input("noise", &n).map_err(err("step constants"))?;
            self.held.extend([a, b, n]);
            if l.eps_term {
                let e = per_item_tensor(&c.renoise_eps)?;
                step.bind_input("renoise_eps", &e).map_err(err("step constants"))?;
                self.held.push(e);
            }
            let [s0, s1] = &mut s.samples;
            let target = if write == 0 { s0 } else { s1 };
            step.bind_output("next_sample", target).map_err(err("step output"))?;
            if !l.denoising {
                step.bind_output("unet_in", &mut s.unet_in).map_err(err("step output"))?;
            }
        }
        if last {
            step.bind_output("dec_in", &mut self.dec_in).map_err(err("step output"))?;
        }
        self.push(stage, step);
        Ok(())
    }

    /// The mask's upload (masked paths).
    fn step_mask(&self) -> Result<&Uploaded> {
        self.uploaded
            .iter()
            .find(|u| matches!(u.input.input.consumer, Consumer::Step))
            .ok_or_else(|| Error::internal("frame path", "a masked path without its mask input"))
    }

    /// After every model has read this frame's per-frame inputs: keep the carried ones' items for the next frame.
    fn carry(&mut self, graphs: &Graphs) -> Result<()> {
        for (i, (uploaded, (_, session))) in self.uploaded.iter_mut().zip(&graphs.uploads).enumerate() {
            if let (Some(session), Some([items, carry])) = (session, &mut uploaded.carry) {
                let mut copy = session.create_binding().map_err(err("binding"))?;
                copy.bind_input("items", &*items).map_err(err("conditioning carry"))?;
                copy.bind_output("carry", carry).map_err(err("conditioning carry"))?;
                self.runs.push(Run { stage: Stage::Carry(i), binding: copy });
            }
        }
        Ok(())
    }

    /// Decoder input -> VAE decoder -> 8-bit HWC frames out.
    fn decode(&mut self, graphs: &Graphs, diffusion: &Diffusion) -> Result<()> {
        let decoder = diffusion.vae_decoder().model();
        let mut decode = decoder.session().create_binding().map_err(err("binding"))?;
        decode.bind_input(decoder.binding.input(0).name.clone(), &self.dec_in).map_err(err("VAE decoder input"))?;
        decode
            .bind_output(decoder.binding.output(0).name.clone(), &mut self.decoded)
            .map_err(err("VAE decoder output"))?;
        self.push(Stage::Decode, decode);

        let mut post = graphs.post.create_binding().map_err(err("binding"))?;
        post.bind_input("decoded", &self.decoded).map_err(err("post-processing input"))?;
        post.bind_output("frames", &mut self.frames_out).map_err(err("post-processing output"))?;
        self.push(Stage::Post, post);
        Ok(())
    }

    fn into_plan(
        self,
        graphs: Graphs,
        frame: Option<HostInput>,
        conditioning: Vec<(ConditioningKind, HostInput)>,
    ) -> Plan {
        let mut held = self.held;
        held.extend([self.image, self.latent, self.decoded]);
        held.extend(self.keep);
        for uploaded in self.uploaded {
            held.push(uploaded.form);
            held.extend(uploaded.carry.into_iter().flatten());
        }
        Plan {
            layout: self.l,
            graphs,
            runs: self.runs,
            frame,
            conditioning,
            frames_out: self.frames_out,
            _held: held,
            dec_in: self.dec_in,
            noise_run: self.noise_run,
            feedback: self.feedback_state,
            prompts: self.prompts,
        }
    }
}
