//! The plan for one parameter set, as it runs: every session's run bound in order (built by
//! [`super::build`]), and the host side of a frame: the 8-bit inputs written into their slots, the outputs read
//! back, the inputs bound again before every run, latent feedback switched on after the first output, the
//! prompt embeddings rewritten during a transition.

use std::time::Instant;

use ndarray::Array1;
use ort::session::{IoBinding, Session};
use ort::value::DynTensor;

use super::super::img2img::{Diffusion, StageTimes};
use super::super::text::Embeddings;
use super::Inputs;
use super::constants::PromptInput;
use super::graphs::Graphs;
use super::layout::Layout;
use crate::error::{Error, Result};
use crate::frame::ConditioningKind;
use crate::infer::bound::{self, Rebind};

/// Which session a bound run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Pre,
    /// The upload of per-frame input i (in the order of [`conditioning::active`]).
    Upload(usize),
    /// The carry of per-frame input i in a denoising batch.
    Carry(usize),
    /// The carry of the frames' clean latents in a masked denoising batch.
    CleanCarry,
    ControlNet,
    Encode,
    Noise,
    Unet,
    StepMid,
    StepLast,
    Decode,
    Post,
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Pre => "pre-processing graph",
        Stage::Upload(_) => "conditioning graph",
        Stage::Carry(_) => "conditioning carry graph",
        Stage::CleanCarry => "clean latents carry graph",
        Stage::ControlNet => "ControlNet",
        Stage::Encode => "VAE encoder",
        Stage::Noise => "noise graph",
        Stage::Unet => "UNet",
        Stage::StepMid | Stage::StepLast => "LCM step graph",
        Stage::Decode => "VAE decoder",
        Stage::Post => "post-processing graph",
    }
}

pub(super) struct Run {
    pub stage: Stage,
    pub binding: IoBinding,
}

/// An 8-bit host buffer, one slot per frame of a run, bound again as its run's input before every run (a
/// device copy on GPU providers).
pub(super) struct HostInput {
    pub tensor: DynTensor,
    /// Bytes of one frame's input.
    pub slot_bytes: usize,
    /// The run that reads it.
    pub run: usize,
    pub rebind: Rebind,
}

impl HostInput {
    fn bytes_mut(&mut self) -> &mut [u8] {
        host_bytes_mut(&mut self.tensor)
    }

    fn write(&mut self, slot: usize, bytes: &[u8], what: &str) -> Result<()> {
        let n = self.slot_bytes;
        if bytes.len() != n {
            return Err(Error::internal("frame path", format!("{what} of {} bytes, expected {n}", bytes.len())));
        }
        self.bytes_mut()[slot * n..(slot + 1) * n].copy_from_slice(bytes);
        Ok(())
    }
}

fn host_bytes_mut(tensor: &mut DynTensor) -> &mut [u8] {
    let count: usize = tensor.shape().iter().map(|&d| d as usize).product();
    // SAFETY: the host inputs are u8 host tensors of `count` elements (made by `bound::buffer` on the host
    // allocator in `Builder`).
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr_mut().cast::<u8>(), count) }
}

/// Latent feedback's inputs to the noise graph.
pub(super) struct Feedback {
    /// Bound as the last output until one exists.
    pub zeros: DynTensor,
    /// `[1]`: the fraction, 0 until the first output.
    pub factor: DynTensor,
    pub value: f32,
    /// Whether the noise graph reads the decoder's input yet.
    pub primed: bool,
    pub latent: Rebind,
    pub factor_input: Rebind,
}

/// Everything one parameter set builds.
pub(super) struct Plan {
    pub layout: Layout,
    pub graphs: Graphs,
    pub runs: Vec<Run>,
    /// The camera frame (none for txt2img).
    pub frame: Option<HostInput>,
    /// The per-frame inputs the path takes, in upload order.
    pub conditioning: Vec<(ConditioningKind, HostInput)>,
    pub frames_out: DynTensor,
    /// Intermediate device buffers and bound constants (the bindings hold them too; kept for clarity).
    pub _held: Vec<DynTensor>,
    /// The decoder's input: the last finished output latent (latent feedback reads it).
    pub dec_in: DynTensor,
    pub noise_run: Option<usize>,
    pub feedback: Option<Feedback>,
    /// The prompt embeddings bound to the UNet and ControlNet runs (rewritten during a prompt transition).
    pub prompts: Vec<PromptInput>,
}

impl Plan {
    /// Write one frame's inputs into input slot `slot`.
    pub fn write(&mut self, slot: usize, inputs: Inputs) -> Result<()> {
        match (inputs.image, self.frame.as_mut()) {
            (Some(rgb), Some(frame)) => frame.write(slot, rgb, "a frame")?,
            (None, None) => {}
            (Some(_), None) => return Err(Error::internal("frame path", "txt2img takes no input frame")),
            (None, Some(_)) => return Err(Error::internal("frame path", "img2img needs an input frame")),
        }
        for (kind, input) in &mut self.conditioning {
            let bytes = inputs.conditioning.bytes(*kind).ok_or_else(|| {
                Error::internal("frame path", format!("this path takes a {} with each frame", kind.name()))
            })?;
            input.write(slot, bytes, kind.name())?;
        }
        for kind in ConditioningKind::ALL {
            if inputs.conditioning.bytes(kind).is_some() && !self.conditioning.iter().any(|(k, _)| *k == kind) {
                return Err(Error::internal(
                    "frame path",
                    format!("a {} given to a path that does not take it", kind.name()),
                ));
            }
        }
        Ok(())
    }

    /// Copy input slot `from` to slot `to` (the frame and its per-frame inputs).
    pub fn copy_slot(&mut self, from: usize, to: usize) {
        let inputs = self.frame.iter_mut().chain(self.conditioning.iter_mut().map(|(_, input)| input));
        for input in inputs {
            let n = input.slot_bytes;
            input.bytes_mut().copy_within(from * n..(from + 1) * n, to * n);
        }
    }

    /// Every frame slot mid-grey, every per-frame input zeros (the warm-up's inputs).
    pub fn fill_for_warm_up(&mut self) {
        if let Some(frame) = self.frame.as_mut() {
            frame.bytes_mut().fill(128);
        }
        for (_, input) in &mut self.conditioning {
            input.bytes_mut().fill(0);
        }
    }

    /// The first `rows` outputs of the last run, oldest first.
    pub fn emit(&self, rows: usize, each: &mut impl FnMut(&[u8])) {
        let l = &self.layout;
        let bytes = (l.height * l.width * 3) as usize;
        let count: usize = self.frames_out.shape().iter().map(|&d| d as usize).product();
        // SAFETY: `frames_out` is a u8 host tensor of `count` elements, written by the last run.
        let out = unsafe { std::slice::from_raw_parts(self.frames_out.data_ptr().cast::<u8>(), count) };
        for row in out.chunks_exact(bytes).take(rows) {
            each(row);
        }
    }

    /// Every bound run in order; the host inputs are bound again first (a device copy on GPU providers).
    pub fn run(&mut self, diffusion: &mut Diffusion, times: &mut StageTimes) -> Result<()> {
        let _span = tracing::trace_span!("frame").entered();
        *times = StageTimes::default();
        let inputs = self.frame.iter().chain(self.conditioning.iter().map(|(_, input)| input));
        for input in inputs {
            input.rebind.bind(&mut self.runs[input.run].binding, &input.tensor, "frame path")?;
        }
        for run in &self.runs {
            let started = Instant::now();
            bound::run(session(&mut self.graphs, diffusion, run.stage)?, &run.binding, stage_name(run.stage))?;
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            match run.stage {
                Stage::Encode => times.vae_encode_ms += elapsed,
                Stage::Unet | Stage::ControlNet => times.unet_ms += elapsed,
                Stage::Decode => times.vae_decode_ms += elapsed,
                _ => times.graphs_ms += elapsed,
            }
        }
        Ok(())
    }

    /// Bind `blended` (the prepared embeddings' shape) as the prompt embeddings (and, SDXL, the pooled ones) of
    /// every UNet and ControlNet run.
    pub fn bind_prompt(&mut self, blended: &Embeddings) -> Result<()> {
        for input in &mut self.prompts {
            let batch = input.part.rows(blended, &input.rows)?;
            crate::infer::tensor::write_host(&mut input.tensor, batch.view())?;
            input.rebind.bind(&mut self.runs[input.run].binding, &input.tensor, "prompt blend")?;
        }
        Ok(())
    }

    /// Start latent feedback over: the next frame has no earlier output to blend in.
    pub fn reset_feedback(&mut self) -> Result<()> {
        let (Some(fb), Some(run)) = (self.feedback.as_mut(), self.noise_run) else { return Ok(()) };
        let binding = &mut self.runs[run].binding;
        crate::infer::tensor::write_host(&mut fb.factor, Array1::from_elem(1, 0.0f32).into_dyn().view())?;
        fb.factor_input.bind(binding, &fb.factor, "feedback")?;
        fb.latent.bind(binding, &fb.zeros, "feedback")?;
        fb.primed = false;
        Ok(())
    }

    /// After an output came out: the noise graph reads the decoder's input (the latest output latent) from now
    /// on. (Not after any run: a denoising batch's first runs finish no frame.)
    pub fn prime_feedback(&mut self) -> Result<()> {
        let (Some(fb), Some(run)) = (self.feedback.as_mut(), self.noise_run) else { return Ok(()) };
        if fb.primed {
            return Ok(());
        }
        let binding = &mut self.runs[run].binding;
        crate::infer::tensor::write_host(&mut fb.factor, Array1::from_elem(1, fb.value).into_dyn().view())?;
        fb.factor_input.bind(binding, &fb.factor, "feedback")?;
        fb.latent.bind(binding, &self.dec_in, "feedback")?;
        fb.primed = true;
        Ok(())
    }
}

fn session<'s>(graphs: &'s mut Graphs, diffusion: &'s mut Diffusion, stage: Stage) -> Result<&'s mut Session> {
    let missing = || Error::internal("frame path", format!("no session for {stage:?}"));
    Ok(match stage {
        Stage::Pre => graphs.pre.as_mut().ok_or_else(missing)?,
        Stage::Upload(i) => &mut graphs.uploads.get_mut(i).ok_or_else(missing)?.0,
        Stage::Carry(i) => graphs.uploads.get_mut(i).and_then(|(_, carry)| carry.as_mut()).ok_or_else(missing)?,
        Stage::CleanCarry => graphs.clean_carry.as_mut().ok_or_else(missing)?,
        Stage::ControlNet => diffusion.controlnet_mut().ok_or_else(missing)?.model_mut().session_mut(),
        Stage::Noise => &mut graphs.noise,
        Stage::StepMid => graphs.step_mid.as_mut().ok_or_else(missing)?,
        Stage::StepLast => graphs.step_last.as_mut().ok_or_else(missing)?,
        Stage::Post => &mut graphs.post,
        Stage::Encode => diffusion.vae_encoder_mut().model_mut().session_mut(),
        Stage::Unet => diffusion.unet_mut().model_mut().session_mut(),
        Stage::Decode => diffusion.vae_decoder_mut().model_mut().session_mut(),
    })
}
