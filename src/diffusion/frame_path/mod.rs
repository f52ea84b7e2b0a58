//! The per-frame path: 8-bit RGB in, 8-bit RGB out, with everything in between bound once.
//!
//! ```text
//! frames u8 [N,H,W,3] ─pre─> image ─VAE enc─> latent ─noise─> unet_in ─UNet─> model_out ─step─> dec_in ─VAE dec─> decoded ─post─> frames u8
//!                                                         (steps > 1: step -> unet_in -> UNet -> step ...)
//! per-frame inputs u8 ─upload─> their models' form (the skeleton -> ControlNet -> residuals -> UNet)
//! ```
//!
//! `pre`, `upload`, `noise`, `step` and `post` are small ONNX graphs built at load time (`graphs`), so they run
//! on the models' execution provider: with CUDA only the 8-bit images cross the bus. Every session runs through
//! an IoBinding whose inputs and outputs are buffers made when the path is built (on the device for GPU
//! providers, host memory on the CPU); constants (prompt embeddings, timesteps, the guidance embedding, the LCM
//! coefficients, the fixed noise) are bound once per parameter set (`constants`). A frame costs one copy in
//! per input, the runs, and one copy out, with no heap allocation on our side.
//!
//! Where things are:
//! - `batch`: the stream batch modes and the state each keeps between frames;
//! - `layout`: the sizes, element types and switches of one parameter set;
//! - `graphs`: the small graphs;
//! - `constants`: the constant inputs of the UNet and the ControlNet (the list to extend for a new one);
//! - `conditioning`: the per-frame inputs that come with each frame (the list to extend for a new one);
//! - `build`: building the plan for one parameter set, as a short list of named steps;
//! - `plan`: the plan as it runs: the bound runs in order and the host side of each frame.
//!
//! Stream batch ([`BatchMode`]): `Frames(k)` runs k consecutive frames as one batch (1 step; k-1 frames of lag),
//! `Denoising(n)` is StreamDiffusion's denoising batch (n steps; each batch item is a different frame at a
//! different step; one frame in, one out, n-1 frames of lag). Both give every frame the same output it gets
//! without batching (same fixed noise, same timesteps), up to float rounding in the batched convolutions.

mod batch;
mod build;
mod conditioning;
mod constants;
mod graphs;
mod layout;
mod plan;

use super::img2img::{Diffusion, Params, Prepared, StageTimes};
use super::noise::NoiseBank;
use super::text::Embeddings;
use crate::error::{Error, Result};
use crate::frame::{Conditioning, Frame};
use crate::infer::{ExecutionProvider, Runtime};

pub use self::batch::{BatchMode, MAX_STREAM_BATCH};
use self::batch::{Batching, Drain};
use self::build::Setup;
use self::plan::Plan;

/// Pose guidance: a ControlNet conditioned on an image (the OpenPose skeleton) that comes with every frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Control {
    /// Generate from the conditioning alone (fixed noise, no VAE encode) instead of img2img.
    pub txt2img: bool,
    /// ControlNet conditioning scale, 0 to 2.
    pub scale: f32,
}

/// One frame as the frame path takes it: 8-bit pixels at the working size.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The camera frame, RGB (`width*height*3` bytes); None for txt2img, which takes none.
    pub image: Option<&'a [u8]>,
    /// The per-frame conditioning inputs: exactly those the path takes (the skeleton of a pose-guided path).
    pub conditioning: &'a Conditioning,
}

impl<'a> Inputs<'a> {
    /// A camera frame alone.
    pub fn image(rgb: &'a [u8]) -> Inputs<'a> {
        Inputs { image: Some(rgb), conditioning: Conditioning::none() }
    }

    /// `frame` as a path takes it: its picture unless the path is txt2img, and its conditioning.
    pub fn of(frame: &'a Frame, txt2img: bool) -> Inputs<'a> {
        Inputs { image: (!txt2img).then_some(frame.image.as_raw().as_slice()), conditioning: &frame.conditioning }
    }
}

pub struct FramePath {
    runtime: Runtime,
    diffusion: Diffusion,
    prepared: Prepared,
    batching: Batching,
    width: u32,
    height: u32,
    ep: ExecutionProvider,
    explicit_noise: Option<NoiseBank>,
    control: Option<Control>,
    plan: Plan,
    times: StageTimes,
    /// Latent feedback fraction (0: off).
    feedback: f32,
    /// The stream batch as asked for (1: none); the mode is chosen from it and the step count.
    stream_batch: usize,
    /// Latent blending with each frame's mask.
    masked: bool,
}

impl FramePath {
    /// Build the path for `width`×`height` frames (sides already checked against the model's multiple).
    /// `noise`: explicit noise (golden tests); by default the seed's fixed noise.
    pub fn new(
        runtime: &Runtime,
        diffusion: Diffusion,
        params: &Params,
        size: (u32, u32),
        mode: BatchMode,
        noise: Option<NoiseBank>,
    ) -> Result<FramePath> {
        Self::create(runtime, diffusion, params, size, mode, (None, false), noise)
    }

    /// A path that changes each frame only where its mask says (the mask in [`Inputs`], 255 = change): latent
    /// blending as diffusers' inpainting pipeline does it for a 4-channel UNet. Outside the mask the latents are
    /// the frame's own, noised to each step's level, and clean after the last step; with a mask, strength 1 starts
    /// from the noise alone (diffusers' rule). The pixels outside the mask still pass the VAE: the pipeline's
    /// composite puts the input's own back.
    pub fn with_mask(
        runtime: &Runtime,
        diffusion: Diffusion,
        params: &Params,
        size: (u32, u32),
        mode: BatchMode,
        noise: Option<NoiseBank>,
    ) -> Result<FramePath> {
        Self::create(runtime, diffusion, params, size, mode, (None, true), noise)
    }

    /// A path guided by a conditioning image that comes with every frame (the skeleton in [`Inputs`]): the
    /// diffusion must hold a ControlNet ([`Diffusion::load_with_controlnet`]). Any batch mode: each frame-batch
    /// slot has its own conditioning image, and in a denoising batch each item's image travels with it.
    pub fn with_control(
        runtime: &Runtime,
        diffusion: Diffusion,
        params: &Params,
        size: (u32, u32),
        control: Control,
        mode: BatchMode,
        noise: Option<NoiseBank>,
    ) -> Result<FramePath> {
        Self::create(runtime, diffusion, params, size, mode, (Some(control), false), noise)
    }

    fn create(
        runtime: &Runtime,
        mut diffusion: Diffusion,
        params: &Params,
        (width, height): (u32, u32),
        mode: BatchMode,
        (control, masked): (Option<Control>, bool),
        noise: Option<NoiseBank>,
    ) -> Result<FramePath> {
        let prepared = diffusion.prepare(params)?;
        let ep = diffusion.unet().model().ep;
        let setup =
            Setup { size: (width, height), mode, control, explicit_noise: noise.as_ref(), ep, feedback: 0.0, masked };
        let plan = build::build(runtime, &mut diffusion, &prepared, setup)?;
        Ok(FramePath {
            runtime: runtime.clone(),
            diffusion,
            prepared,
            batching: Batching::new(mode),
            width,
            height,
            ep,
            explicit_noise: noise,
            control,
            plan,
            times: StageTimes::default(),
            feedback: 0.0,
            stream_batch: mode.items(),
            masked,
        })
    }

    /// True for pose-guided txt2img (no input frame).
    pub fn txt2img(&self) -> bool {
        self.control.is_some_and(|c| c.txt2img)
    }
    pub fn mode(&self) -> BatchMode {
        self.batching.mode()
    }
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }
    pub fn diffusion(&self) -> &Diffusion {
        &self.diffusion
    }
    pub fn diffusion_mut(&mut self) -> &mut Diffusion {
        &mut self.diffusion
    }
    /// Pose guidance, for a pose-guided path.
    pub fn control(&self) -> Option<Control> {
        self.control
    }
    pub fn last_times(&self) -> StageTimes {
        self.times
    }
    /// Frames held back before outputs start.
    pub fn lag_frames(&self) -> usize {
        self.mode().lag_frames()
    }

    /// New parameters: graphs, bindings and constants are built again and the stream batch starts empty. Call
    /// [`FramePath::finish`] first to keep the frames still in a batch.
    pub fn set_params(&mut self, params: &Params) -> Result<()> {
        self.reconfigure(params, self.feedback, None)
    }

    /// The latent feedback fraction.
    pub fn feedback(&self) -> f32 {
        self.feedback
    }

    /// [`FramePath::set_params`] with the latent feedback fraction (0 to 1; 0 is off) and, for a pose-guided
    /// path, the ControlNet conditioning scale. With feedback, a fraction of the latest finished output latent
    /// is blended into each new input latent (img2img only). That output is the previous frame's, except in a
    /// stream batch: with `Frames(k)` slot i takes slot i of the previous batch (k frames earlier), and in a
    /// denoising batch of n the latest finished frame is n-1 frames behind the newest input.
    pub fn reconfigure(&mut self, params: &Params, feedback: f32, control_scale: Option<f32>) -> Result<()> {
        // The one range of feedback: its knob's (a library caller is held to it as a file is).
        let given = crate::knobs::Given::Float(f64::from(feedback));
        crate::knobs::FEEDBACK
            .float(&given, crate::knobs::Spelling::Key)
            .map_err(|e| Error::InvalidParameter { what: e.name(), problem: e.problem() })?;
        let control = match (self.control, control_scale) {
            (Some(c), Some(scale)) => Some(Control { scale, ..c }),
            (control, _) => control,
        };
        let prepared = self.diffusion.prepare(params)?;
        // The stream batch asked for is chosen again for the new step count: a denoising batch follows the steps,
        // and strength 0 (no step) runs one frame at a time.
        let mode = BatchMode::choose(self.stream_batch, prepared.plan.steps.len())
            .map_err(|problem| Error::invalid("engine.stream-batch", problem))?;
        let setup = Setup {
            size: (self.width, self.height),
            mode,
            control,
            explicit_noise: self.explicit_noise.as_ref(),
            ep: self.ep,
            feedback,
            masked: self.masked,
        };
        self.plan = build::build(&self.runtime, &mut self.diffusion, &prepared, setup)?;
        self.prepared = prepared;
        self.batching = Batching::new(mode);
        self.control = control;
        self.feedback = feedback;
        Ok(())
    }

    /// During a prompt transition: bind the embeddings `from·(1-t) + current·t`, with `current` those of the
    /// parameters set last (no rebuild). Returns false, changing nothing, when `from` has another shape (a
    /// change between guided and unguided runs is a cut).
    pub fn blend_context(&mut self, from: &Embeddings, t: f32) -> Result<bool> {
        let Some(to) = self.prepared.embeddings_shared() else { return Ok(false) };
        let Some(blended) = from.blend(&to, t.clamp(0.0, 1.0)) else { return Ok(false) };
        self.plan.bind_prompt(&blended)?;
        Ok(true)
    }

    /// One frame in; `each` gets the outputs that are ready, oldest first.
    pub fn push(&mut self, frame: Inputs, mut each: impl FnMut(&[u8])) -> Result<()> {
        self.plan.write(self.batching.slot(), frame)?;
        let pushed = self.batching.push();
        if pushed.run {
            self.plan.run(&mut self.diffusion, &mut self.times)?;
        }
        if pushed.emit > 0 {
            self.plan.emit(pushed.emit, &mut each);
            self.plan.prime_feedback()?;
        }
        Ok(())
    }

    /// End of stream: the outputs of frames still held back. The stream starts empty afterwards.
    pub fn finish(&mut self, mut each: impl FnMut(&[u8])) -> Result<()> {
        match self.batching.drain() {
            Drain::Nothing => {}
            Drain::Pad { filled, k } => {
                // Pad the batch with the last frame; only the real frames come out.
                for slot in filled..k {
                    self.plan.copy_slot(filled - 1, slot);
                }
                self.plan.run(&mut self.diffusion, &mut self.times)?;
                self.plan.emit(filled, &mut each);
            }
            Drain::Flush { runs } => {
                // Each further run moves the batch one step on; the last frame (still in the input buffer)
                // fills in behind.
                for _ in 0..runs {
                    self.plan.run(&mut self.diffusion, &mut self.times)?;
                    self.plan.emit(1, &mut each);
                }
                // The batch refills from the next frame on; the decoder input then holds what the refill moves
                // along, not an output, until the first new frame comes out.
                self.plan.reset_feedback()?;
            }
        }
        Ok(())
    }

    /// Run the whole chain once on mid-grey frames (zero conditioning) and start the stream empty (warm start).
    pub fn warm_up(&mut self) -> Result<()> {
        self.plan.fill_for_warm_up();
        self.plan.run(&mut self.diffusion, &mut self.times)?;
        self.batching.restart();
        self.plan.reset_feedback()
    }
}
