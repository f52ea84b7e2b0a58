//! What is bound once per parameter set: the constant inputs of the UNet and the ControlNet (timesteps, prompt
//! embeddings, guidance embedding, conditioning scale), the LCM step's per-item scalars and the fixed noise.
//!
//! To add a constant input of the UNet-like models: its port in the models' contracts (`infer::contract`) and an
//! entry in [`CONSTANTS`] that makes its batch for one run. Every UNet and ControlNet run binds every entry its
//! model takes (SDXL's `text_embeds` and `time_ids` came in this way).

use ndarray::{Array, ArrayD, Axis, IxDyn};
use ort::session::IoBinding;
use ort::value::{DynTensor, TensorElementType};

use super::super::img2img::Prepared;
use super::super::noise::NoiseBank;
use super::super::text::Embeddings;
use super::super::unet::TimestepInput;
use super::BatchMode;
use super::layout::Layout;
use crate::error::{Error, Result};
use crate::infer::Model;
use crate::infer::bound::Rebind;
use crate::infer::contract::{Bound, controlnet as cn_port, unet as unet_port};
use crate::infer::tensor::host_tensor;

/// Every constant input of the UNet-like models, in binding order.
pub(super) const CONSTANTS: &[ConstantInput] = &[
    ConstantInput { unet: Some(unet_port::TIMESTEP), controlnet: Some(cn_port::TIMESTEP), value: timestep },
    ConstantInput { unet: Some(unet_port::CONTEXT), controlnet: Some(cn_port::CONTEXT), value: prompt_embeddings },
    ConstantInput {
        unet: Some(unet_port::TIMESTEP_COND),
        controlnet: Some(cn_port::TIMESTEP_COND),
        value: guidance_embedding,
    },
    ConstantInput { unet: None, controlnet: Some(cn_port::SCALE), value: conditioning_scale },
    ConstantInput {
        unet: Some(unet_port::TEXT_EMBEDS),
        controlnet: Some(cn_port::TEXT_EMBEDS),
        value: pooled_embeddings,
    },
    ConstantInput { unet: Some(unet_port::TIME_IDS), controlnet: Some(cn_port::TIME_IDS), value: time_ids },
];

/// The models that take the constant inputs: the UNet, and the ControlNet (which sees what the UNet sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Denoiser {
    Unet,
    ControlNet,
}

/// One constant input: where each model takes it and how its value is made.
pub(super) struct ConstantInput {
    /// Its contract index in the UNet's inputs (None: the UNet never takes it).
    pub unet: Option<usize>,
    /// Its contract index in the ControlNet's inputs (None: the ControlNet never takes it).
    pub controlnet: Option<usize>,
    /// Its value for one run, given the model's port (None where the model lacks an optional port); Ok(None)
    /// binds nothing.
    pub value: fn(&RunConstants, Option<&Bound>) -> Result<Option<Constant>>,
}

/// What one run's constants are made from.
pub(super) struct RunConstants<'a> {
    pub prepared: &'a Prepared,
    pub layout: &'a Layout,
    /// The run's timestep per batch item.
    pub timesteps: &'a [u32],
    /// The ControlNet conditioning scale (1 without pose guidance).
    pub control_scale: f32,
}

/// A constant input's value.
pub(super) enum Constant {
    Tensor(DynTensor),
    /// Part of the prompt embeddings, batch row i from row `rows[i]` of the prepared ones (rewritten during a
    /// prompt transition).
    Prompt {
        part: PromptPart,
        tensor: DynTensor,
        rows: Vec<usize>,
    },
}

/// Which part of the prompt embeddings an input takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PromptPart {
    /// The hidden states cross-attended to (`encoder_hidden_states`).
    Context,
    /// SDXL's pooled embedding (`text_embeds`).
    Pooled,
}

impl PromptPart {
    /// This part of `embeddings`, batch row i from row `rows[i]`.
    pub fn rows(self, embeddings: &Embeddings, rows: &[usize]) -> Result<ArrayD<f32>> {
        let err = |e: ndarray::ShapeError| Error::internal("frame path: prompt embeddings", e);
        match self {
            PromptPart::Context => {
                let picked: Vec<_> = rows.iter().map(|&r| embeddings.context.index_axis(Axis(0), r)).collect();
                Ok(ndarray::stack(Axis(0), &picked).map_err(err)?.into_dyn())
            }
            PromptPart::Pooled => {
                let pooled = embeddings
                    .pooled
                    .as_ref()
                    .ok_or_else(|| Error::internal("frame path", "the prompt embeddings have no pooled part"))?;
                let picked: Vec<_> = rows.iter().map(|&r| pooled.index_axis(Axis(0), r)).collect();
                Ok(ndarray::stack(Axis(0), &picked).map_err(err)?.into_dyn())
            }
        }
    }
}

/// A bound prompt-embedding input: batch row i holds row `rows[i]` of the prepared embeddings' `part`.
pub(super) struct PromptInput {
    pub run: usize,
    pub part: PromptPart,
    pub rebind: Rebind,
    pub tensor: DynTensor,
    pub rows: Vec<usize>,
}

/// Bind every constant input `model` (the `which` of run `run`) takes. The bound values go to `held`, the
/// prompt embeddings' to `prompts`.
pub(super) fn bind(
    binding: &mut IoBinding,
    (model, which, run): (&Model, Denoiser, usize),
    constants: &RunConstants,
    held: &mut Vec<DynTensor>,
    prompts: &mut Vec<PromptInput>,
) -> Result<()> {
    let err = |e: ort::Error| Error::internal("frame path: constant inputs", e);
    for input in CONSTANTS {
        let index = match which {
            Denoiser::Unet => input.unet,
            Denoiser::ControlNet => input.controlnet,
        };
        let Some(index) = index else { continue };
        let port = model.binding.inputs.get(index).and_then(Option::as_ref);
        match (input.value)(constants, port)? {
            None => {}
            Some(value) => {
                let name =
                    port.ok_or_else(|| Error::internal("frame path", "a value for a missing port"))?.name.clone();
                match value {
                    Constant::Tensor(tensor) => {
                        binding.bind_input(name, &tensor).map_err(err)?;
                        held.push(tensor);
                    }
                    Constant::Prompt { part, tensor, rows } => {
                        binding.bind_input(name.clone(), &tensor).map_err(err)?;
                        prompts.push(PromptInput { run, part, rebind: Rebind::new(&name)?, tensor, rows });
                    }
                }
            }
        }
    }
    Ok(())
}

fn required<'p>(port: Option<&'p Bound>, what: &str) -> Result<&'p Bound> {
    port.ok_or_else(|| Error::internal("frame path", format!("no {what} input")))
}

/// The timestep of each batch row ([uncond × items, text × items] with guidance, else [text × items]), in the
/// form the model takes.
fn timestep(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    let form = TimestepInput::of(required(port, "timestep")?);
    let ts: Vec<u32> = c.timesteps.iter().chain(if c.layout.cfg { c.timesteps } else { &[] }).copied().collect();
    if !form.per_item() && ts.iter().any(|t| *t != ts[0]) {
        return Err(Error::invalid(
            "engine.stream-batch",
            format!(
                "a denoising batch needs a UNet that takes one timestep per batch item; this one takes a {} (as \
                 optimum exports it: re-export with scripts/export_models.py for a [batch] timestep, or run \
                 stream-batch 1, or 1 step with a frame batch)",
                form.describe()
            ),
        ));
    }
    Ok(Some(Constant::Tensor(form.tensor(&ts)?)))
}

/// Which prepared embedding row each UNet batch row takes: row i pairs with embedding row i (unconditional rows
/// first with guidance).
fn embedding_rows(layout: &Layout) -> Vec<usize> {
    let batch = layout.unet_batch as usize;
    if layout.cfg { (0..batch).map(|i| if i < batch / 2 { 0 } else { 1 }).collect() } else { vec![0; batch] }
}

/// The prompt embeddings, one row per batch row.
fn prompt_embeddings(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    prompt_part(c, required(port, "prompt embeddings")?, PromptPart::Context)
}

/// SDXL's pooled prompt embedding, where the UNet takes it.
fn pooled_embeddings(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    match port {
        Some(port) => prompt_part(c, port, PromptPart::Pooled),
        None => Ok(None),
    }
}

fn prompt_part(c: &RunConstants, port: &Bound, part: PromptPart) -> Result<Option<Constant>> {
    let embeddings = c.prepared.embeddings_ref()?;
    let rows = embedding_rows(c.layout);
    let tensor = host_tensor(port.ty, part.rows(embeddings, &rows)?.view())?;
    Ok(Some(Constant::Prompt { part, tensor, rows }))
}

/// SDXL's micro-conditioning (original size, crop corner, target size: the frame's size, uncropped), the same
/// for every row, where the UNet takes it.
fn time_ids(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    let Some(port) = port else { return Ok(None) };
    let ids =
        super::super::unet::time_ids(c.layout.height as usize, c.layout.width as usize, c.layout.unet_batch as usize);
    Ok(Some(Constant::Tensor(host_tensor(port.ty, ids.into_dyn().view())?)))
}

/// The guidance embedding of full LCM models, the same for every row.
fn guidance_embedding(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    let (Some(port), Some(cond)) = (port, c.prepared.timestep_cond_view()) else { return Ok(None) };
    let row = cond.index_axis(Axis(0), 0);
    let cond = ndarray::stack(Axis(0), &vec![row; c.layout.unet_batch as usize])
        .map_err(|e| Error::internal("frame path: guidance embedding", e))?;
    Ok(Some(Constant::Tensor(host_tensor(port.ty, cond.into_dyn().view())?)))
}

/// ControlNet's conditioning scale, where the model takes it (else it runs at 1).
fn conditioning_scale(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    let scale = c.control_scale;
    match port {
        Some(port) => {
            let shape: &[usize] = if port.shape.is_empty() { &[] } else { &[1] };
            Ok(Some(Constant::Tensor(host_tensor(port.ty, ArrayD::from_elem(IxDyn(shape), scale).view())?)))
        }
        None if scale != 1.0 => Err(Error::invalid(
            "pose.controlnet-scale",
            format!(
                "{scale}: this ControlNet has no conditioning_scale input (it runs at 1; export it with scripts/export_models.py)"
            ),
        )),
        None => Ok(None),
    }
}

/// The per-item scalars of step `index` (or, for the denoising batch, of item i at step i).
pub(super) struct StepConstants {
    pub c_skip: Vec<f32>,
    pub c_out: Vec<f32>,
    pub sqrt_alpha: Vec<f32>,
    pub sqrt_one_minus_alpha: Vec<f32>,
    pub renoise_a: Vec<f32>,
    pub renoise_b: Vec<f32>,
    /// The predicted noise's share of the next sample (Euler kinds; 0 for LCM).
    pub renoise_eps: Vec<f32>,
    /// Masked runs: the clean latents noised to the next step's level, sqrt(ᾱ')·clean + sqrt(1-ᾱ')·noise (1 and 0
    /// where there is no next step).
    pub clean_a: Vec<f32>,
    pub clean_b: Vec<f32>,
    pub timesteps: Vec<u32>,
}

impl StepConstants {
    pub fn of(prepared: &Prepared, mode: BatchMode, index: usize, items: usize) -> StepConstants {
        let steps = &prepared.plan.steps;
        let at = |item: usize| match mode {
            BatchMode::Denoising(_) => steps[item],
            _ => steps[index],
        };
        let all = |f: &dyn Fn(usize) -> f32| (0..items).map(f).collect::<Vec<f32>>();
        // The step after item i's (its next timestep).
        let next = |item: usize| match mode {
            BatchMode::Denoising(_) => steps.get(item + 1),
            _ => steps.get(index + 1),
        };
        StepConstants {
            c_skip: all(&|i| at(i).c_skip),
            c_out: all(&|i| at(i).c_out),
            sqrt_alpha: all(&|i| at(i).sqrt_alpha),
            sqrt_one_minus_alpha: all(&|i| at(i).sqrt_one_minus_alpha),
            renoise_a: all(&|i| at(i).renoise.map_or(0.0, |r| r.sample)),
            renoise_b: all(&|i| at(i).renoise.map_or(0.0, |r| r.noise)),
            renoise_eps: all(&|i| at(i).renoise.map_or(0.0, |r| r.eps)),
            clean_a: all(&|i| next(i).map_or(1.0, |s| s.sqrt_alpha)),
            clean_b: all(&|i| next(i).map_or(0.0, |s| s.sqrt_one_minus_alpha)),
            timesteps: (0..items).map(|i| at(i).timestep).collect(),
        }
    }
}

/// `[values.len(), 1, 1, 1]` f32: one scalar per batch item.
pub(super) fn per_item_tensor(values: &[f32]) -> Result<DynTensor> {
    let array = Array::from_shape_vec(IxDyn(&[values.len(), 1, 1, 1]), values.to_vec())
        .map_err(|e| Error::internal("frame path", e))?;
    host_tensor(TensorElementType::Float32, array.view())
}

/// Noise tensor `i` of the bank repeated per row (rows: which tensor each batch row takes; None = zeros).
pub(super) fn noise_rows(bank: &NoiseBank, rows: &[Option<usize>]) -> Result<DynTensor> {
    let (_, c, h, w) = bank.shape();
    let mut array = ArrayD::<f32>::zeros(IxDyn(&[rows.len(), c, h, w]));
    for (row, which) in rows.iter().enumerate() {
        if let Some(i) = which {
            array.index_axis_mut(Axis(0), row).assign(&bank.get(*i).index_axis(Axis(0), 0));
        }
    }
    host_tensor(TensorElementType::Float32, array.view())
}
