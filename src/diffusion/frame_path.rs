//! The per-frame path: 8-bit RGB in, 8-bit RGB out, with everything in between bound once.
//!
//! ```text
//! frames u8 [N,H,W,3] ─pre─> image ─VAE enc─> latent ─noise─> unet_in ─UNet─> model_out ─step─> dec_in ─VAE dec─> decoded ─post─> frames u8
//!                                                         (steps > 1: step -> unet_in -> UNet -> step ...)
//! ```
//!
//! `pre`, `noise`, `step` and `post` are small ONNX graphs built here at load time ([`GraphBuilder`]), so they run
//! on the models' execution provider: with CUDA only the 8-bit images cross the bus. Every session runs through
//! an IoBinding whose inputs and outputs are buffers made when the path is built (on the device for GPU
//! providers, host memory on the CPU); constants (prompt embeddings, timesteps, the guidance embedding, the LCM
//! coefficients, the fixed noise) are bound once per parameter set. A frame costs one copy in, the runs, and one
//! copy out, with no heap allocation on our side.
//!
//! Stream batch ([`BatchMode`]): `Frames(k)` runs k consecutive frames as one batch (1 step; k-1 frames of lag),
//! `Denoising(n)` is StreamDiffusion's denoising batch (n steps; each batch item is a different frame at a
//! different step; one frame in, one out, n-1 frames of lag). Both give every frame the same output it gets
//! without batching (same fixed noise, same timesteps), up to float rounding in the batched convolutions.

use std::time::Instant;

use ndarray::{Array, Array1, ArrayD, IxDyn};
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, TensorElementType};

use super::img2img::{Diffusion, Params, Prepared, StageTimes};
use super::noise::NoiseBank;
use super::scheduler::PredictionType;
use super::unet::TimestepInput;
use crate::error::{Error, Result};
use crate::infer::bound::{self, Rebind};
use crate::infer::contract::{controlnet as cn_port, unet as unet_port, vae_encoder as enc_port};
use crate::infer::graph::GraphBuilder;
use crate::infer::tensor::host_tensor;
use crate::infer::{ExecutionProvider, Runtime};
use crate::model::ImageRange;

use TensorElementType::{Float32, Uint8};

/// How frames share UNet batches (`[engine] stream-batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// One frame at a time; its steps run one after another.
    Single,
    /// k consecutive frames in one batch, 1 step: outputs come k at a time, k-1 frames late.
    Frames(usize),
    /// StreamDiffusion's denoising batch for n steps: n-1 frames late.
    Denoising(usize),
}

/// Pose guidance: a ControlNet conditioned on an image (the OpenPose skeleton) that comes with every frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Control {
    /// Generate from the conditioning alone (fixed noise, no VAE encode) instead of img2img.
    pub txt2img: bool,
    /// ControlNet conditioning scale, 0 to 2.
    pub scale: f32,
}

/// Largest stream batch accepted.
pub const MAX_STREAM_BATCH: usize = 8;

impl BatchMode {
    /// The mode for `stream_batch` frames and `steps` steps; the error says what is allowed.
    pub fn choose(stream_batch: usize, steps: usize) -> std::result::Result<BatchMode, String> {
        if stream_batch == 0 || stream_batch > MAX_STREAM_BATCH {
            return Err(format!("{stream_batch} (expected 1 to {MAX_STREAM_BATCH})"));
        }
        match (stream_batch, steps) {
            (1, _) | (_, 0) => Ok(BatchMode::Single),
            (k, 1) => Ok(BatchMode::Frames(k)),
            (k, n) if k == n => Ok(BatchMode::Denoising(n)),
            (k, n) => Err(format!(
                "{k} with {n} steps (with more than one step the stream batch is the denoising batch: 1 or {n})"
            )),
        }
    }

    /// Items in one UNet run (before classifier-free guidance doubles them).
    pub fn items(self) -> usize {
        match self {
            BatchMode::Single => 1,
            BatchMode::Frames(k) | BatchMode::Denoising(k) => k,
        }
    }

    /// Frames held back before the first output.
    pub fn lag_frames(self) -> usize {
        match self {
            BatchMode::Single => 0,
            BatchMode::Frames(k) | BatchMode::Denoising(k) => k - 1,
        }
    }
}

/// Which session a bound run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Pre,
    ControlPre,
    ControlCarry,
    ControlNet,
    Encode,
    Noise,
    Unet,
    StepMid,
    StepLast,
    Decode,
    Post,
}

struct Run {
    stage: Stage,
    binding: IoBinding,
}

/// The small graphs' sessions.
struct Graphs {
    pre: Option<Session>,
    control_pre: Option<Session>,
    control_carry: Option<Session>,
    noise: Session,
    step_mid: Option<Session>,
    step_last: Option<Session>,
    post: Session,
}

/// Sizes and element types every graph and buffer is built from.
#[derive(Clone, Copy, Debug)]
struct Layout {
    height: i64,
    width: i64,
    latent_h: i64,
    latent_w: i64,
    channels: i64,
    /// Channels of the encoder's output (2C for a `latent_parameters` output: mean then log-variance).
    encoder_channels: i64,
    /// Frames per run going in (k for `Frames(k)`, else 1).
    slots: i64,
    /// Batch items the step maths works on (k, n or 1).
    items: i64,
    /// UNet batch (items, doubled for classifier-free guidance).
    unet_batch: i64,
    /// Frames per run coming out.
    out_rows: i64,
    cfg: bool,
    vae_only: bool,
    denoising: bool,
    control: bool,
    txt2img: bool,
    /// Latent feedback: the last output latent is blended into the next input latent.
    feedback: bool,
    cond_ty: TensorElementType,
    range: ImageRange,
    latent_scale: f32,
    prediction: PredictionType,
    vae_in: TensorElementType,
    vae_out: TensorElementType,
    unet_in: TensorElementType,
    unet_out: TensorElementType,
    dec_in: TensorElementType,
    dec_out: TensorElementType,
}

impl Layout {
    /// A denoising batch with ControlNet: each item's skeleton is carried along with it, one position per frame.
    fn carries_control(&self) -> bool {
        self.control && self.denoising && self.items > 1
    }
    fn latent(&self, batch: i64) -> [i64; 4] {
        [batch, self.channels, self.latent_h, self.latent_w]
    }
    fn per_item(&self) -> [i64; 4] {
        [self.items, 1, 1, 1]
    }
}

pub struct FramePath {
    runtime: Runtime,
    diffusion: Diffusion,
    prepared: Prepared,
    mode: BatchMode,
    width: u32,
    height: u32,
    ep: ExecutionProvider,
    explicit_noise: Option<NoiseBank>,
    control: Option<Control>,
    b: Built,
    /// `Frames(k)`: slots written since the last run.
    filled: usize,
    /// `Denoising(n)`: frames pushed since the stream (re)started.
    entered: usize,
    times: StageTimes,
    /// Latent feedback fraction (0: off).
    feedback: f32,
    /// The stream batch as asked for (1: none); the mode is chosen from it and the step count.
    stream_batch: usize,
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
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
        Self::create(runtime, diffusion, params, size, mode, None, noise)
    }

    /// A path guided by a conditioning image that comes with every frame ([`FramePath::push_controlled`]): the
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
        Self::create(runtime, diffusion, params, size, mode, Some(control), noise)
    }

    fn create(
        runtime: &Runtime,
        mut diffusion: Diffusion,
        params: &Params,
        (width, height): (u32, u32),
        mode: BatchMode,
        control: Option<Control>,
        noise: Option<NoiseBank>,
    ) -> Result<FramePath> {
        let prepared = diffusion.prepare(params)?;
        let ep = diffusion.unet().model().ep;
        let setup = Setup { size: (width, height), mode, control, explicit_noise: noise.as_ref(), ep, feedback: 0.0 };
        let b = build(runtime, &mut diffusion, &prepared, setup)?;
        Ok(FramePath {
            runtime: runtime.clone(),
            diffusion,
            prepared,
            mode,
            width,
            height,
            ep,
            explicit_noise: noise,
            control,
            b,
            filled: 0,
            entered: 0,
            times: StageTimes::default(),
            feedback: 0.0,
            stream_batch: match mode {
                BatchMode::Single => 1,
                BatchMode::Frames(k) | BatchMode::Denoising(k) => k,
            },
        })
    }

    /// True for pose-guided txt2img (no input frame).
    pub fn txt2img(&self) -> bool {
        self.control.is_some_and(|c| c.txt2img)
    }
    pub fn mode(&self) -> BatchMode {
        self.mode
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
        self.mode.lag_frames()
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
        if !(feedback.is_finite() && (0.0..1.0).contains(&feedback)) {
            return Err(Error::invalid(
                "feedback",
                format!("{} (expected 0 to below 1)", crate::config::values::show_f64(f64::from(feedback))),
            ));
        }
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
        };
        self.b = build(&self.runtime, &mut self.diffusion, &prepared, setup)?;
        self.prepared = prepared;
        self.mode = mode;
        self.control = control;
        self.feedback = feedback;
        self.filled = 0;
        self.entered = 0;
        Ok(())
    }

    /// During a prompt transition: bind the embeddings `from·(1-t) + current·t`, with `current` those of the
    /// parameters set last (no rebuild). Returns false, changing nothing, when `from` has another shape (a
    /// change between guided and unguided runs is a cut).
    pub fn blend_context(&mut self, from: &ndarray::Array3<f32>, t: f32) -> Result<bool> {
        let Some(to) = self.prepared.context_shared() else { return Ok(false) };
        if from.dim() != to.dim() {
            return Ok(false);
        }
        let t = t.clamp(0.0, 1.0);
        let blended = ndarray::Zip::from(from).and(&*to).map_collect(|&a, &b| a + (b - a) * t);
        for input in &mut self.b.contexts {
            let rows: Vec<_> = input.rows.iter().map(|&r| blended.index_axis(ndarray::Axis(0), r)).collect();
            let batch = ndarray::stack(ndarray::Axis(0), &rows).map_err(|e| Error::internal("prompt blend", e))?;
            crate::infer::tensor::write_host(&mut input.tensor, batch.into_dyn().view())?;
            input.rebind.bind(&mut self.b.runs[input.run].binding, &input.tensor, "prompt blend")?;
        }
        Ok(true)
    }

    /// Start latent feedback over: the next frame has no earlier output to blend in.
    fn reset_feedback(&mut self) -> Result<()> {
        let (Some(fb), Some(run)) = (self.b.feedback.as_mut(), self.b.noise_run) else { return Ok(()) };
        let binding = &mut self.b.runs[run].binding;
        crate::infer::tensor::write_host(&mut fb.factor, Array1::from_elem(1, 0.0f32).into_dyn().view())?;
        fb.factor_input.bind(binding, &fb.factor, "feedback")?;
        fb.latent.bind(binding, &fb.zeros, "feedback")?;
        fb.primed = false;
        Ok(())
    }

    /// After an output came out: the noise graph reads the decoder's input (the latest output latent) from now on.
    /// (Not after any run: a denoising batch's first runs finish no frame.)
    fn prime_feedback(&mut self) -> Result<()> {
        let (Some(fb), Some(run)) = (self.b.feedback.as_mut(), self.b.noise_run) else { return Ok(()) };
        if fb.primed {
            return Ok(());
        }
        let binding = &mut self.b.runs[run].binding;
        crate::infer::tensor::write_host(&mut fb.factor, Array1::from_elem(1, fb.value).into_dyn().view())?;
        fb.factor_input.bind(binding, &fb.factor, "feedback")?;
        fb.latent.bind(binding, &self.b.dec_in, "feedback")?;
        fb.primed = true;
        Ok(())
    }

    fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    fn check_bytes(&self, what: &str, rgb: &[u8]) -> Result<()> {
        let bytes = self.frame_bytes();
        if rgb.len() != bytes {
            return Err(Error::internal("frame path", format!("{what} of {} bytes, expected {bytes}", rgb.len())));
        }
        Ok(())
    }

    /// One frame in (RGB, `width*height*3` bytes); `each` gets the outputs that are ready, oldest first.
    pub fn push(&mut self, rgb: &[u8], each: impl FnMut(&[u8])) -> Result<()> {
        if self.control.is_some() {
            return Err(Error::internal(
                "frame path",
                "a pose-guided path takes its conditioning image with each frame",
            ));
        }
        self.push_inputs(Some(rgb), None, each)
    }

    /// One frame and its conditioning image (the skeleton, RGB at the working size) in; txt2img takes no frame.
    pub fn push_controlled(&mut self, rgb: Option<&[u8]>, control: &[u8], each: impl FnMut(&[u8])) -> Result<()> {
        self.push_inputs(rgb, Some(control), each)
    }

    fn push_inputs(&mut self, rgb: Option<&[u8]>, control: Option<&[u8]>, mut each: impl FnMut(&[u8])) -> Result<()> {
        let txt2img = self.control.is_some_and(|c| c.txt2img);
        match (rgb, txt2img) {
            (Some(rgb), false) => {
                self.check_bytes("a frame", rgb)?;
                let slot = match self.mode {
                    BatchMode::Frames(_) => self.filled,
                    _ => 0,
                };
                self.write_slot(slot, rgb);
            }
            (None, true) => {}
            (Some(_), true) => return Err(Error::internal("frame path", "txt2img takes no input frame")),
            (None, false) => return Err(Error::internal("frame path", "img2img needs an input frame")),
        }
        match (control, self.b.control_in.as_mut()) {
            (Some(control), Some(_)) => {
                self.check_bytes("a conditioning image", control)?;
                let slot = match self.mode {
                    BatchMode::Frames(_) => self.filled,
                    _ => 0,
                };
                let bytes = self.frame_bytes();
                if let Some(buffer) = self.b.control_in.as_mut() {
                    Self::host_bytes_mut(buffer)[slot * bytes..(slot + 1) * bytes].copy_from_slice(control);
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::internal("frame path", "a conditioning image given to an unguided path or missing"));
            }
        }
        match self.mode {
            BatchMode::Single => {
                self.run_all()?;
                self.emit(1, &mut each);
                self.prime_feedback()?;
            }
            BatchMode::Frames(k) => {
                self.filled += 1;
                if self.filled == k {
                    self.run_all()?;
                    self.filled = 0;
                    self.emit(k, &mut each);
                    self.prime_feedback()?;
                }
            }
            BatchMode::Denoising(n) => {
                self.run_all()?;
                self.entered += 1;
                if self.entered >= n {
                    self.emit(1, &mut each);
                    self.prime_feedback()?;
                }
            }
        }
        Ok(())
    }

    /// End of stream: the outputs of frames still held back. The stream starts empty afterwards.
    pub fn finish(&mut self, mut each: impl FnMut(&[u8])) -> Result<()> {
        match self.mode {
            BatchMode::Single => {}
            BatchMode::Frames(k) => {
                let filled = self.filled;
                if filled > 0 {
                    // Pad the batch with the last frame; only the real frames come out.
                    for slot in filled..k {
                        self.copy_slot(filled - 1, slot);
                    }
                    self.run_all()?;
                    self.emit(filled, &mut each);
                }
            }
            BatchMode::Denoising(n) => {
                // Each further run moves the batch one step on; the last frame (still in the input buffer)
                // fills in behind.
                let pending = self.entered.min(n - 1);
                for _ in 0..pending {
                    self.run_all()?;
                    self.emit(1, &mut each);
                }
                // The batch refills from the next frame on; the decoder input then holds what the refill moves
                // along, not an output, until the first new frame comes out.
                self.reset_feedback()?;
            }
        }
        self.filled = 0;
        self.entered = 0;
        Ok(())
    }

    /// Run the whole chain once on a mid-grey frame and start the stream empty (warm start).
    pub fn warm_up(&mut self) -> Result<()> {
        let grey = vec![128u8; self.frame_bytes()];
        let slots = match self.mode {
            BatchMode::Frames(k) => k,
            _ => 1,
        };
        if self.b.frames_in.is_some() {
            for slot in 0..slots {
                self.write_slot(slot, &grey);
            }
        }
        if let Some(buffer) = self.b.control_in.as_mut() {
            Self::host_bytes_mut(buffer).fill(0);
        }
        self.run_all()?;
        self.filled = 0;
        self.entered = 0;
        self.reset_feedback()
    }

    fn host_bytes_mut(tensor: &mut DynTensor) -> &mut [u8] {
        let count: usize = tensor.shape().iter().map(|&d| d as usize).product();
        // SAFETY: `frames_in` is a u8 host tensor of `count` elements (made by `host_u8` in `build`).
        unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr_mut().cast::<u8>(), count) }
    }

    fn write_slot(&mut self, slot: usize, rgb: &[u8]) {
        let bytes = self.frame_bytes();
        if let Some(frames) = self.b.frames_in.as_mut() {
            Self::host_bytes_mut(frames)[slot * bytes..(slot + 1) * bytes].copy_from_slice(rgb);
        }
    }

    fn copy_slot(&mut self, from: usize, to: usize) {
        let bytes = self.frame_bytes();
        for buffer in [self.b.frames_in.as_mut(), self.b.control_in.as_mut()].into_iter().flatten() {
            Self::host_bytes_mut(buffer).copy_within(from * bytes..(from + 1) * bytes, to * bytes);
        }
    }

    fn emit(&mut self, rows: usize, each: &mut impl FnMut(&[u8])) {
        let bytes = self.frame_bytes();
        let count: usize = self.b.frames_out.shape().iter().map(|&d| d as usize).product();
        // SAFETY: `frames_out` is a u8 host tensor of `count` elements, written by the last run.
        let out = unsafe { std::slice::from_raw_parts(self.b.frames_out.data_ptr().cast::<u8>(), count) };
        for row in out.chunks_exact(bytes).take(rows) {
            each(row);
        }
    }

    fn session(&mut self, stage: Stage) -> Result<&mut Session> {
        let missing = || Error::internal("frame path", format!("no session for {stage:?}"));
        Ok(match stage {
            Stage::Pre => self.b.graphs.pre.as_mut().ok_or_else(missing)?,
            Stage::ControlPre => self.b.graphs.control_pre.as_mut().ok_or_else(missing)?,
            Stage::ControlCarry => self.b.graphs.control_carry.as_mut().ok_or_else(missing)?,
            Stage::ControlNet => self.diffusion.controlnet_mut().ok_or_else(missing)?.model_mut().session_mut(),
            Stage::Noise => &mut self.b.graphs.noise,
            Stage::StepMid => self.b.graphs.step_mid.as_mut().ok_or_else(missing)?,
            Stage::StepLast => self.b.graphs.step_last.as_mut().ok_or_else(missing)?,
            Stage::Post => &mut self.b.graphs.post,
            Stage::Encode => self.diffusion.vae_encoder_mut().model_mut().session_mut(),
            Stage::Unet => self.diffusion.unet_mut().model_mut().session_mut(),
            Stage::Decode => self.diffusion.vae_decoder_mut().model_mut().session_mut(),
        })
    }

    /// Every bound run in order; the camera frame is bound again first (a device copy on GPU providers).
    fn run_all(&mut self) -> Result<()> {
        let _span = tracing::trace_span!("frame").entered();
        let mut times = StageTimes::default();
        let mut runs = std::mem::take(&mut self.b.runs);
        let result = (|| {
            if let (Some(i), Some(frames)) = (self.b.pre_run, &self.b.frames_in) {
                self.b.frame_input.bind(&mut runs[i].binding, frames, "frame path")?;
            }
            if let (Some(i), Some(control)) = (self.b.control_run, &self.b.control_in) {
                self.b.control_input.bind(&mut runs[i].binding, control, "frame path")?;
            }
            for run in &runs {
                let started = Instant::now();
                let name = stage_name(run.stage);
                bound::run(self.session(run.stage)?, &run.binding, name)?;
                let elapsed = ms(started);
                match run.stage {
                    Stage::Encode => times.vae_encode_ms += elapsed,
                    Stage::Unet | Stage::ControlNet => times.unet_ms += elapsed,
                    Stage::Decode => times.vae_decode_ms += elapsed,
                    _ => times.graphs_ms += elapsed,
                }
            }
            Ok(())
        })();
        self.b.runs = runs;
        self.times = times;
        result
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Pre => "pre-processing graph",
        Stage::ControlPre => "conditioning graph",
        Stage::ControlCarry => "conditioning carry graph",
        Stage::ControlNet => "ControlNet",
        Stage::Encode => "VAE encoder",
        Stage::Noise => "noise graph",
        Stage::Unet => "UNet",
        Stage::StepMid | Stage::StepLast => "LCM step graph",
        Stage::Decode => "VAE decoder",
        Stage::Post => "post-processing graph",
    }
}

/// Everything one parameter set builds.
struct Built {
    graphs: Graphs,
    runs: Vec<Run>,
    frames_in: Option<DynTensor>,
    control_in: Option<DynTensor>,
    frames_out: DynTensor,
    /// Intermediate device buffers and bound constants (the bindings hold them too; kept for clarity).
    _held: Vec<DynTensor>,
    /// The runs whose input is re-bound every frame (a device copy on GPU providers).
    pre_run: Option<usize>,
    control_run: Option<usize>,
    frame_input: Rebind,
    control_input: Rebind,
    /// The decoder's input: the last finished output latent (latent feedback reads it).
    dec_in: DynTensor,
    noise_run: Option<usize>,
    feedback: Option<Feedback>,
    /// The prompt embeddings bound to the UNet and ControlNet runs (rewritten during a prompt transition).
    contexts: Vec<ContextInput>,
}

/// Latent feedback's inputs to the noise graph.
struct Feedback {
    /// Bound as the last output until one exists.
    zeros: DynTensor,
    /// `[1]`: the fraction, 0 until the first output.
    factor: DynTensor,
    value: f32,
    /// Whether the noise graph reads the decoder's input yet.
    primed: bool,
    latent: Rebind,
    factor_input: Rebind,
}

/// One bound prompt-embedding input: batch row i holds row `rows[i]` of the prepared embeddings.
struct ContextInput {
    run: usize,
    rebind: Rebind,
    tensor: DynTensor,
    rows: Vec<usize>,
}

fn layout(
    diffusion: &Diffusion,
    prepared: &Prepared,
    (width, height): (u32, u32),
    mode: BatchMode,
    control: Option<Control>,
    feedback: f32,
) -> Result<Layout> {
    let folder = diffusion.folder();
    let channels = folder.latent_channels as i64;
    let encoder = diffusion.vae_encoder().model();
    let encoder_port = encoder.binding.output(enc_port::LATENT);
    let encoder_channels =
        encoder_port.dim(1).unwrap_or(if encoder_port.name == "latent_parameters" { 2 * channels } else { channels });
    let (slots, items) = match mode {
        BatchMode::Single => (1, 1),
        BatchMode::Frames(k) => (k as i64, k as i64),
        BatchMode::Denoising(n) => (1, n as i64),
    };
    let cfg = prepared.uses_cfg();
    let unet = diffusion.unet().model();
    Ok(Layout {
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
        cfg,
        vae_only: prepared.vae_only(),
        denoising: matches!(mode, BatchMode::Denoising(_)),
        control: control.is_some(),
        txt2img: control.is_some_and(|c| c.txt2img),
        feedback: feedback > 0.0 && !control.is_some_and(|c| c.txt2img) && !prepared.vae_only(),
        cond_ty: diffusion
            .controlnet()
            .map_or(Float32, |c| c.model().input_type(crate::infer::contract::controlnet::COND)),
        range: folder.image_range,
        latent_scale: folder.latent_scale,
        prediction: prepared.plan.prediction,
        vae_in: encoder.input_type(enc_port::IMAGE),
        vae_out: encoder.output_type(enc_port::LATENT),
        unet_in: unet.input_type(unet_port::SAMPLE),
        unet_out: unet.output_type(unet_port::OUT),
        dec_in: diffusion.vae_decoder().model().input_type(0),
        dec_out: diffusion.vae_decoder().model().output_type(0),
    })
}

/// 8-bit HWC frames -> the VAE's range, NCHW, in the encoder's element type.
fn pre_graph(l: &Layout) -> Result<ort::editor::Model> {
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
    let x = g.cast(&x, Float32, l.vae_in)?;
    g.output(&x, "image", l.vae_in, &[l.slots, 3, l.height, l.width])?;
    g.finish()
}

/// The conditioning images (8-bit HWC, one per frame slot) -> RGB 0..1 NCHW in the ControlNet's batch (the items,
/// twice for classifier-free guidance: row i pairs with sample row i) and element type. In a denoising batch the
/// new frame's image goes first and the last frame's items (`carry`) follow, one position on, as the latents do;
/// `items` is written out to be carried to the next frame.
fn control_graph(l: &Layout) -> Result<ort::editor::Model> {
    let mut g = GraphBuilder::new("conditioning")?;
    let control = g.input("control", Uint8, &[l.slots, l.height, l.width, 3]);
    let x = g.cast(&control, Uint8, Float32)?;
    let x = g.transpose(&x, &[0, 3, 1, 2])?;
    let max = g.scalar(255.0)?;
    let mut x = g.binary("Div", &x, &max)?;
    if l.carries_control() {
        let image = [l.items, 3, l.height, l.width];
        let carry = g.input("carry", Float32, &image);
        let older = g.slice(&carry, 0, 0, l.items - 1)?;
        x = g.concat(&[&x, &older], 0)?;
        g.output(&x, "items", Float32, &image)?;
    }
    let copies = vec![x.as_str(); (l.unet_batch / l.items) as usize];
    let x = if copies.len() > 1 { g.concat(&copies, 0)? } else { x.clone() };
    let x = g.cast(&x, Float32, l.cond_ty)?;
    g.output(&x, "cond", l.cond_ty, &[l.unet_batch, 3, l.height, l.width])?;
    g.finish()
}

/// The denoising batch's conditioning images, kept for the next frame (a device copy).
fn carry_graph(l: &Layout) -> Result<ort::editor::Model> {
    let mut g = GraphBuilder::new("conditioning carry")?;
    let image = [l.items, 3, l.height, l.width];
    let items = g.input("items", Float32, &image);
    let carry = g.op("Identity", &[&items], vec![])?;
    g.output(&carry, "carry", Float32, &image)?;
    g.finish()
}

/// Encoded latents -> scaled, noised to the first timestep (and, for the denoising batch, stacked with the
/// batch carried over from the last frame) -> the UNet's input. VAE-only runs go straight to the decoder input.
fn noise_graph(l: &Layout) -> Result<ort::editor::Model> {
    let mut g = GraphBuilder::new("noise")?;
    if l.txt2img {
        // txt2img starts from the noise itself (the LCM scheduler's init_noise_sigma is 1), no encoded image.
        let mut noise = g.input("noise", Float32, &l.latent(l.slots));
        if l.denoising && l.items > 1 {
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
    let latent = g.input("latent", l.vae_out, &[l.slots, l.encoder_channels, l.latent_h, l.latent_w]);
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
    if l.denoising && l.items > 1 {
        let carry = g.input("carry", Float32, &l.latent(l.items));
        let older = g.slice(&carry, 0, 0, l.items - 1)?;
        sample = g.concat(&[&sample, &older], 0)?;
    }
    g.output(&sample, "sample", Float32, &l.latent(l.items))?;
    let unet_in = if l.cfg { g.concat(&[&sample, &sample], 0)? } else { sample };
    let unet_in = g.cast(&unet_in, Float32, l.unet_in)?;
    g.output(&unet_in, "unet_in", l.unet_in, &l.latent(l.unet_batch))?;
    g.finish()
}

/// One LCM step (diffusers' `LCMScheduler.step`, the same order of operations as the host code): guidance,
/// the x0 estimate, the boundary-condition mix, then re-noising (`renoise`) and/or the decoder input (`last`).
fn step_graph(l: &Layout, renoise: bool, last: bool) -> Result<ort::editor::Model> {
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
        PredictionType::Sample => m,
    };
    let denoised = g.mix(&c_out, &x0, &c_skip, &x)?;
    if renoise {
        let rn_a = g.input("renoise_a", Float32, &per_item);
        let rn_b = g.input("renoise_b", Float32, &per_item);
        let noise = g.input("noise", Float32, &l.latent(l.items));
        let next = g.mix(&rn_a, &denoised, &rn_b, &noise)?;
        g.output(&next, "next_sample", Float32, &l.latent(l.items))?;
        if !l.denoising {
            let unet_in = if l.cfg { g.concat(&[&next, &next], 0)? } else { next };
            let unet_in = g.cast(&unet_in, Float32, l.unet_in)?;
            g.output(&unet_in, "unet_in", l.unet_in, &l.latent(l.unet_batch))?;
        }
    }
    if last {
        // The denoising batch's last item is the frame that has had every step.
        let mut d = if l.denoising { g.slice(&denoised, 0, l.items - 1, l.items)? } else { denoised };
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

/// Decoded image -> 8-bit HWC, clamped and rounded half up as `imaging::from_tensor` does.
fn post_graph(l: &Layout) -> Result<ort::editor::Model> {
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

/// The per-item scalars of step `index` (or, for the denoising batch, of item i at step i).
struct StepConstants {
    c_skip: Vec<f32>,
    c_out: Vec<f32>,
    sqrt_alpha: Vec<f32>,
    sqrt_one_minus_alpha: Vec<f32>,
    renoise_a: Vec<f32>,
    renoise_b: Vec<f32>,
    timesteps: Vec<u32>,
}

fn step_constants(prepared: &Prepared, mode: BatchMode, index: usize, items: usize) -> StepConstants {
    let steps = &prepared.plan.steps;
    let at = |item: usize| match mode {
        BatchMode::Denoising(_) => steps[item],
        _ => steps[index],
    };
    let all = |f: &dyn Fn(usize) -> f32| (0..items).map(f).collect::<Vec<f32>>();
    StepConstants {
        c_skip: all(&|i| at(i).c_skip),
        c_out: all(&|i| at(i).c_out),
        sqrt_alpha: all(&|i| at(i).sqrt_alpha),
        sqrt_one_minus_alpha: all(&|i| at(i).sqrt_one_minus_alpha),
        renoise_a: all(&|i| at(i).renoise.map_or(0.0, |r| r.0)),
        renoise_b: all(&|i| at(i).renoise.map_or(0.0, |r| r.1)),
        timesteps: (0..items).map(|i| at(i).timestep).collect(),
    }
}

fn per_item_tensor(values: &[f32]) -> Result<DynTensor> {
    let array = Array::from_shape_vec(IxDyn(&[values.len(), 1, 1, 1]), values.to_vec())
        .map_err(|e| Error::internal("frame path", e))?;
    host_tensor(Float32, array.view())
}

/// Noise tensor `i` of the bank repeated per row (rows: which tensor each batch row takes; None = zeros).
fn noise_rows(bank: &NoiseBank, rows: &[Option<usize>]) -> Result<DynTensor> {
    let (_, c, h, w) = bank.shape();
    let mut array = ArrayD::<f32>::zeros(IxDyn(&[rows.len(), c, h, w]));
    for (row, which) in rows.iter().enumerate() {
        if let Some(i) = which {
            array.index_axis_mut(ndarray::Axis(0), row).assign(&bank.get(*i).index_axis(ndarray::Axis(0), 0));
        }
    }
    host_tensor(Float32, array.view())
}

/// The UNet's constant inputs for one run: timestep(s), prompt embeddings, guidance embedding.
/// The constant inputs a UNet-like model (the UNet, the ControlNet) shares: where they go and in what form.
struct ConstantPorts {
    timestep: (String, TimestepInput),
    context: (String, TensorElementType),
    cond: Option<(String, TensorElementType)>,
}

impl ConstantPorts {
    fn of(model: &crate::infer::Model, timestep: TimestepInput, cond_port: usize) -> ConstantPorts {
        let b = &model.binding;
        // (The UNet and ControlNet contracts put timestep and context at the same indices.)
        ConstantPorts {
            timestep: (b.input(unet_port::TIMESTEP).name.clone(), timestep),
            context: (b.input(unet_port::CONTEXT).name.clone(), b.input(unet_port::CONTEXT).ty),
            cond: b.inputs.get(cond_port).cloned().flatten().map(|p| (p.name, p.ty)),
        }
    }
}

/// Bind one run's constant inputs: timestep(s), prompt embeddings, guidance embedding. Returns the prompt
/// embeddings' input (for prompt transitions; the caller sets its run).
fn bind_constants(
    binding: &mut IoBinding,
    ports: &ConstantPorts,
    prepared: &Prepared,
    l: &Layout,
    timesteps: &[u32],
    held: &mut Vec<DynTensor>,
) -> Result<ContextInput> {
    let err = |e: ort::Error| Error::internal("frame path: constant inputs", e);
    let batch = l.unet_batch as usize;
    // [uncond × items, text × items] with guidance, else [text × items]: each sample's row i pairs with
    // embedding row i.
    let ts: Vec<u32> = timesteps.iter().chain(if l.cfg { timesteps } else { &[] }).copied().collect();
    let form = ports.timestep.1;
    if !form.per_item() && ts.iter().any(|t| *t != ts[0]) {
        return Err(Error::invalid(
            "engine.stream-batch",
            format!(
                "a denoising batch needs a UNet that takes one timestep per batch item; this one takes a {}",
                form.describe()
            ),
        ));
    }
    let timestep = form.tensor(&ts)?;
    binding.bind_input(ports.timestep.0.clone(), &timestep).map_err(err)?;
    held.push(timestep);

    let context = prepared.context_view()?;
    let rows: Vec<usize> =
        if l.cfg { (0..batch).map(|i| if i < batch / 2 { 0 } else { 1 }).collect() } else { vec![0; batch] };
    let ctx = ndarray::stack(
        ndarray::Axis(0),
        &rows.iter().map(|&r| context.index_axis(ndarray::Axis(0), r)).collect::<Vec<_>>(),
    )
    .map_err(|e| Error::internal("frame path: prompt embeddings", e))?;
    let ctx = host_tensor(ports.context.1, ctx.into_dyn().view())?;
    binding.bind_input(ports.context.0.clone(), &ctx).map_err(err)?;
    let context = ContextInput { run: 0, rebind: Rebind::new(&ports.context.0)?, tensor: ctx, rows };

    if let (Some((name, ty)), Some(cond)) = (&ports.cond, prepared.timestep_cond_view()) {
        let row = cond.index_axis(ndarray::Axis(0), 0);
        let cond = ndarray::stack(ndarray::Axis(0), &vec![row; batch])
            .map_err(|e| Error::internal("frame path: guidance embedding", e))?;
        let cond = host_tensor(*ty, cond.into_dyn().view())?;
        binding.bind_input(name.clone(), &cond).map_err(err)?;
        held.push(cond);
    }
    Ok(context)
}

/// What a path is built for besides its parameters.
#[derive(Clone, Copy)]
struct Setup<'a> {
    size: (u32, u32),
    mode: BatchMode,
    control: Option<Control>,
    explicit_noise: Option<&'a NoiseBank>,
    ep: ExecutionProvider,
    feedback: f32,
}

fn build(runtime: &Runtime, diffusion: &mut Diffusion, prepared: &Prepared, setup: Setup) -> Result<Built> {
    let Setup { size, mode, control, explicit_noise, ep, feedback } = setup;
    let l = layout(diffusion, prepared, size, mode, control, feedback)?;
    let steps = prepared.plan.steps.len();
    if let Some(c) = control {
        if diffusion.controlnet().is_none() {
            return Err(Error::internal("frame path", "pose guidance without a loaded ControlNet"));
        }
        if l.vae_only {
            return Err(Error::invalid("params.strength", "0 runs the VAE only: ControlNet needs at least one step"));
        }
        if !(0.0..=super::controlnet::MAX_CONDITIONING_SCALE as f32).contains(&c.scale) {
            return Err(Error::invalid(
                "pose.controlnet-scale",
                format!("{} (expected 0 to 2)", crate::config::values::show_f64(f64::from(c.scale))),
            ));
        }
    }
    if let BatchMode::Denoising(n) = mode
        && n != steps
    {
        return Err(Error::internal("frame path", format!("a denoising batch of {n} for {steps} steps")));
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
    let err = |what: &'static str| move |e: ort::Error| Error::internal("frame path", format!("{what}: {e}"));
    let noise_bank = match explicit_noise {
        Some(bank) => bank.clone(),
        None => NoiseBank::new(
            prepared.params.seed,
            (1, l.channels as usize, l.latent_h as usize, l.latent_w as usize),
            steps.max(1),
        ),
    };
    if !l.vae_only && noise_bank.len() < steps {
        return Err(Error::internal("frame path", format!("{} noise tensors for {steps} steps", noise_bank.len())));
    }

    let graphs = Graphs {
        pre: (!l.txt2img).then(|| runtime.graph_session(ep, "pre-processing", pre_graph(&l)?, false)).transpose()?,
        control_pre: l
            .control
            .then(|| runtime.graph_session(ep, "conditioning", control_graph(&l)?, false))
            .transpose()?,
        control_carry: l
            .carries_control()
            .then(|| runtime.graph_session(ep, "conditioning carry", carry_graph(&l)?, true))
            .transpose()?,
        noise: runtime.graph_session(ep, "noise", noise_graph(&l)?, true)?,
        step_mid: (!l.vae_only && steps > 1 && !l.denoising)
            .then(|| runtime.graph_session(ep, "LCM step", step_graph(&l, true, false)?, true))
            .transpose()?,
        step_last: (!l.vae_only)
            .then(|| runtime.graph_session(ep, "LCM step", step_graph(&l, l.denoising && l.items > 1, true)?, true))
            .transpose()?,
        post: runtime.graph_session(ep, "post-processing", post_graph(&l)?, false)?,
    };

    let device = bound::device_allocator(diffusion.unet().model().session(), ep)?;
    let host = ort::memory::Allocator::default();
    let buffer = |ty, shape: &[i64]| bound::buffer(&device, ty, shape);
    let mut held: Vec<DynTensor> = Vec::new();
    let frames_in = (!l.txt2img).then(|| bound::buffer(&host, Uint8, &[l.slots, l.height, l.width, 3])).transpose()?;
    let control_in = l.control.then(|| bound::buffer(&host, Uint8, &[l.slots, l.height, l.width, 3])).transpose()?;
    let mut frames_out = bound::buffer(&host, Uint8, &[l.out_rows, l.height, l.width, 3])?;
    let mut image = buffer(l.vae_in, &[l.slots, 3, l.height, l.width])?;
    let mut latent = buffer(l.vae_out, &[l.slots, l.encoder_channels, l.latent_h, l.latent_w])?;
    let mut dec_in = buffer(l.dec_in, &l.latent(l.out_rows))?;
    let mut decoded = buffer(l.dec_out, &[l.out_rows, 3, l.height, l.width])?;

    let enc = diffusion.vae_encoder().model();
    let (enc_in, enc_out) = (enc.binding.input(0).name.clone(), enc.binding.output(0).name.clone());
    let dec = diffusion.vae_decoder().model();
    let (dec_in_name, dec_out_name) = (dec.binding.input(0).name.clone(), dec.binding.output(0).name.clone());
    let unet_names = {
        let b = &diffusion.unet().model().binding;
        (b.input(unet_port::SAMPLE).name.clone(), b.output(unet_port::OUT).name.clone())
    };

    let mut runs = Vec::new();
    let mut contexts = Vec::new();
    let (mut pre_run, mut control_run) = (None, None);
    if let (Some(session), Some(frames_in)) = (&graphs.pre, &frames_in) {
        let mut pre = session.create_binding().map_err(err("binding"))?;
        pre.bind_input("frames", frames_in).map_err(err("pre-processing input"))?;
        pre.bind_output("image", &mut image).map_err(err("pre-processing output"))?;
        pre_run = Some(runs.len());
        runs.push(Run { stage: Stage::Pre, binding: pre });

        let mut encode = diffusion.vae_encoder().model().session().create_binding().map_err(err("binding"))?;
        encode.bind_input(enc_in, &image).map_err(err("VAE encoder input"))?;
        encode.bind_output(enc_out, &mut latent).map_err(err("VAE encoder output"))?;
        runs.push(Run { stage: Stage::Encode, binding: encode });
    }
    // The conditioning image, in the ControlNet's batch (doubled for guidance), and the residual buffers.
    let mut cond = l.control.then(|| buffer(l.cond_ty, &[l.unet_batch, 3, l.height, l.width])).transpose()?;
    // A denoising batch carries each item's conditioning image: `items` is this frame's, `carry` the last one's.
    let mut control_items = l
        .carries_control()
        .then(|| -> Result<[DynTensor; 2]> {
            let image = [l.items, 3, l.height, l.width];
            Ok([buffer(Float32, &image)?, buffer(Float32, &image)?])
        })
        .transpose()?;
    if let (Some(session), Some(control_in), Some(cond)) = (&graphs.control_pre, &control_in, &mut cond) {
        let mut binding = session.create_binding().map_err(err("binding"))?;
        binding.bind_input("control", control_in).map_err(err("conditioning input"))?;
        binding.bind_output("cond", cond).map_err(err("conditioning output"))?;
        if let Some([items, carry]) = &mut control_items {
            binding.bind_input("carry", &*carry).map_err(err("conditioning carry"))?;
            binding.bind_output("items", items).map_err(err("conditioning carry"))?;
        }
        control_run = Some(runs.len());
        runs.push(Run { stage: Stage::ControlPre, binding });
    }
    let mut residuals: Vec<(String, String, DynTensor)> = Vec::new();
    if l.control {
        let context = prepared.context_view()?.dim();
        let cond_dim = diffusion.unet().cond_dim;
        let controlnet = diffusion.controlnet_mut().ok_or_else(|| Error::internal("frame path", "no ControlNet"))?;
        let shapes = controlnet.residual_shapes(
            l.unet_batch as usize,
            [l.channels as usize, l.latent_h as usize, l.latent_w as usize],
            [context.1, context.2],
            (l.height as usize, l.width as usize),
            cond_dim,
        )?;
        for (r, shape) in controlnet.residuals.clone().iter().zip(shapes) {
            residuals.push((r.output.clone(), r.input.clone(), buffer(r.ty, &shape)?));
        }
    }

    let mut noise = graphs.noise.create_binding().map_err(err("binding"))?;
    let (mut noise_run, mut feedback_state) = (None, None);
    if !l.txt2img {
        noise.bind_input("latent", &latent).map_err(err("noise graph input"))?;
    }
    if l.vae_only {
        noise.bind_output("dec_in", &mut dec_in).map_err(err("noise graph output"))?;
        runs.push(Run { stage: Stage::Noise, binding: noise });
    } else {
        let first = prepared.plan.steps[0];
        let slots = l.slots as usize;
        let bank_rows = noise_rows(&noise_bank, &vec![Some(0); slots])?;
        noise.bind_input("noise", &bank_rows).map_err(err("noise"))?;
        if !l.txt2img {
            let a = per_item_tensor(&vec![first.sqrt_alpha; slots])?;
            let b = per_item_tensor(&vec![first.sqrt_one_minus_alpha; slots])?;
            noise.bind_input("a", &a).map_err(err("noise"))?;
            noise.bind_input("b", &b).map_err(err("noise"))?;
            held.extend([a, b]);
        }
        held.push(bank_rows);
        if l.feedback {
            // Until a frame has come out, the last output is zeros at factor 0: the first frame is unchanged.
            let zeros =
                host_tensor(l.dec_in, ArrayD::<f32>::zeros(IxDyn(&l.latent(l.slots).map(|d| d as usize))).view())?;
            let factor = host_tensor(Float32, Array1::from_elem(1, 0.0f32).into_dyn().view())?;
            noise.bind_input("feedback_latent", &zeros).map_err(err("feedback"))?;
            noise.bind_input("feedback", &factor).map_err(err("feedback"))?;
            feedback_state = Some(Feedback {
                zeros,
                factor,
                value: feedback,
                primed: false,
                latent: Rebind::new("feedback_latent")?,
                factor_input: Rebind::new("feedback")?,
            });
        }
        // Two sample buffers: step i reads one and writes the other.
        let mut samples = [buffer(Float32, &l.latent(l.items))?, buffer(Float32, &l.latent(l.items))?];
        let mut unet_in = buffer(l.unet_in, &l.latent(l.unet_batch))?;
        let mut model_out = buffer(l.unet_out, &l.latent(l.unet_batch))?;
        if l.denoising && l.items > 1 {
            // samples[1] carries the re-noised batch from one frame to the next.
            noise.bind_input("carry", &samples[1]).map_err(err("noise carry"))?;
        }
        noise.bind_output("sample", &mut samples[0]).map_err(err("noise graph output"))?;
        noise.bind_output("unet_in", &mut unet_in).map_err(err("noise graph output"))?;
        noise_run = Some(runs.len());
        runs.push(Run { stage: Stage::Noise, binding: noise });

        let step_runs = if l.denoising { 1 } else { steps };
        for i in 0..step_runs {
            let c = step_constants(prepared, mode, i, l.items as usize);
            if let Some(controlnet) = diffusion.controlnet() {
                let model = controlnet.model();
                let mut binding = model.session().create_binding().map_err(err("binding"))?;
                let ports = ConstantPorts::of(model, controlnet.timestep, cn_port::TIMESTEP_COND);
                let context = bind_constants(&mut binding, &ports, prepared, &l, &c.timesteps, &mut held)?;
                contexts.push(ContextInput { run: runs.len(), ..context });
                binding
                    .bind_input(model.binding.input(cn_port::SAMPLE).name.clone(), &unet_in)
                    .map_err(err("ControlNet"))?;
                if let Some(cond) = &cond {
                    binding
                        .bind_input(model.binding.input(cn_port::COND).name.clone(), cond)
                        .map_err(err("ControlNet"))?;
                }
                let scale = control.map_or(1.0, |c| c.scale);
                match &model.binding.inputs[cn_port::SCALE] {
                    Some(port) => {
                        let shape: &[usize] = if port.shape.is_empty() { &[] } else { &[1] };
                        let t = host_tensor(port.ty, ArrayD::from_elem(IxDyn(shape), scale).view())?;
                        binding.bind_input(port.name.clone(), &t).map_err(err("ControlNet"))?;
                        held.push(t);
                    }
                    None if scale != 1.0 => {
                        return Err(Error::invalid(
                            "pose.controlnet-scale",
                            format!(
                                "{scale}: this ControlNet has no conditioning_scale input (it runs at 1; export it with scripts/export_models.py)"
                            ),
                        ));
                    }
                    None => {}
                }
                for (output, _, buffer) in &mut residuals {
                    binding.bind_output(output.clone(), &mut *buffer).map_err(err("ControlNet output"))?;
                }
                runs.push(Run { stage: Stage::ControlNet, binding });
                if let (Some(session), Some([items, carry])) = (&graphs.control_carry, &mut control_items) {
                    // After the ControlNet has read this frame's images: keep them for the next frame.
                    let mut copy = session.create_binding().map_err(err("binding"))?;
                    copy.bind_input("items", &*items).map_err(err("conditioning carry"))?;
                    copy.bind_output("carry", carry).map_err(err("conditioning carry"))?;
                    runs.push(Run { stage: Stage::ControlCarry, binding: copy });
                }
            }
            let mut unet = diffusion.unet().model().session().create_binding().map_err(err("binding"))?;
            let ports =
                ConstantPorts::of(diffusion.unet().model(), diffusion.unet().timestep, unet_port::TIMESTEP_COND);
            let context = bind_constants(&mut unet, &ports, prepared, &l, &c.timesteps, &mut held)?;
            contexts.push(ContextInput { run: runs.len(), ..context });
            for (_, input, buffer) in &residuals {
                unet.bind_input(input.clone(), buffer).map_err(err("UNet residual input"))?;
            }
            unet.bind_input(unet_names.0.clone(), &unet_in).map_err(err("UNet input"))?;
            unet.bind_output(unet_names.1.clone(), &mut model_out).map_err(err("UNet output"))?;
            runs.push(Run { stage: Stage::Unet, binding: unet });

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
            step.bind_input("sample", &samples[read]).map_err(err("step input"))?;
            step.bind_input("model_out", &model_out).map_err(err("step input"))?;
            for (name, values) in [
                ("c_skip", &c.c_skip),
                ("c_out", &c.c_out),
                ("sqrt_alpha", &c.sqrt_alpha),
                ("sqrt_one_minus_alpha", &c.sqrt_one_minus_alpha),
            ] {
                let t = per_item_tensor(values)?;
                step.bind_input(name, &t).map_err(err("step constants"))?;
                held.push(t);
            }
            if l.cfg {
                let scale = prepared.cfg_scale_value().unwrap_or(1.0);
                let t = host_tensor(Float32, Array1::from_elem(1, scale).into_dyn().view())?;
                step.bind_input("guidance", &t).map_err(err("step constants"))?;
                held.push(t);
            }
            if renoise {
                let rows: Vec<Option<usize>> = if l.denoising {
                    (0..l.items as usize).map(|j| (j + 1 < steps).then_some(j + 1)).collect()
                } else {
                    vec![Some(i + 1); l.items as usize]
                };
                let n = noise_rows(&noise_bank, &rows)?;
                let (a, b) = (per_item_tensor(&c.renoise_a)?, per_item_tensor(&c.renoise_b)?);
                step.bind_input("renoise_a", &a).map_err(err("step constants"))?;
                step.bind_input("renoise_b", &b).map_err(err("step constants"))?;
                step.bind_input("noise", &n).map_err(err("step constants"))?;
                held.extend([a, b, n]);
                let [s0, s1] = &mut samples;
                let target = if write == 0 { s0 } else { s1 };
                step.bind_output("next_sample", target).map_err(err("step output"))?;
                if !l.denoising {
                    step.bind_output("unet_in", &mut unet_in).map_err(err("step output"))?;
                }
            }
            if last {
                step.bind_output("dec_in", &mut dec_in).map_err(err("step output"))?;
            }
            runs.push(Run { stage, binding: step });
        }
        let [s0, s1] = samples;
        held.extend([s0, s1, unet_in, model_out]);
    }

    let mut decode = diffusion.vae_decoder().model().session().create_binding().map_err(err("binding"))?;
    decode.bind_input(dec_in_name, &dec_in).map_err(err("VAE decoder input"))?;
    decode.bind_output(dec_out_name, &mut decoded).map_err(err("VAE decoder output"))?;
    runs.push(Run { stage: Stage::Decode, binding: decode });

    let mut post = graphs.post.create_binding().map_err(err("binding"))?;
    post.bind_input("decoded", &decoded).map_err(err("post-processing input"))?;
    post.bind_output("frames", &mut frames_out).map_err(err("post-processing output"))?;
    runs.push(Run { stage: Stage::Post, binding: post });
    held.extend([image, latent, decoded]);

    held.extend(residuals.into_iter().map(|(_, _, b)| b));
    held.extend(cond);
    held.extend(control_items.into_iter().flatten());
    tracing::debug!(
        ?mode,
        width = size.0,
        height = size.1,
        runs = runs.len(),
        ep = %ep,
        "frame path built"
    );
    Ok(Built {
        graphs,
        runs,
        frames_in,
        control_in,
        frames_out,
        _held: held,
        pre_run,
        control_run,
        frame_input: Rebind::new("frames")?,
        control_input: Rebind::new("control")?,
        dec_in,
        noise_run,
        feedback: feedback_state,
        contexts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_modes_follow_steps() {
        assert_eq!(BatchMode::choose(1, 4), Ok(BatchMode::Single));
        assert_eq!(BatchMode::choose(4, 1), Ok(BatchMode::Frames(4)));
        assert_eq!(BatchMode::choose(3, 3), Ok(BatchMode::Denoising(3)));
        assert!(BatchMode::choose(2, 3).unwrap_err().contains("1 or 3"));
        assert!(BatchMode::choose(0, 1).unwrap_err().contains("1 to 8"));
        assert!(BatchMode::choose(9, 1).unwrap_err().contains("1 to 8"));
        assert_eq!(BatchMode::Frames(4).lag_frames(), 3);
        assert_eq!(BatchMode::Denoising(2).lag_frames(), 1);
        assert_eq!(BatchMode::Single.lag_frames(), 0);
    }
}
