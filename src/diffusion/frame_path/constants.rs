//! What is bound once per parameter set: the constant inputs of the UNet and the ControlNet (timesteps, prompt
//! embeddings, guidance embedding, conditioning scale), the LCM step's per-item scalars and the fixed noise.
//!
//! To add a constant input of the UNet-like models (SDXL's `text_embeds` and `time_ids`): its port in the
//! models' contracts (`infer::contract`) and an entry in [`CONSTANTS`] that makes its batch for one run. Every
//! UNet and ControlNet run binds every entry its model takes.

use ndarray::{Array, ArrayD, Axis, IxDyn};
use ort::session::IoBinding;
use ort::value::{DynTensor, TensorElementType};

use super::super::img2img::Prepared;
use super::super::noise::NoiseBank;
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
    /// The prompt embeddings, batch row i from row `rows[i]` of the prepared ones (rewritten during a prompt
    /// transition).
    Prompt {
        tensor: DynTensor,
        rows: Vec<usize>,
    },
}

/// A bound prompt-embedding input: batch row i holds row `rows[i]` of the prepared embeddings.
pub(super) struct PromptInput {
    pub run: usize,
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
                    Constant::Prompt { tensor, rows } => {
                        binding.bind_input(name.clone(), &tensor).map_err(err)?;
                        prompts.push(PromptInput { run, rebind: Rebind::new(&name)?, tensor, rows });
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
                "a denoising batch needs a UNet that takes one timestep per batch item; this one takes a {}",
                form.describe()
            ),
        ));
    }
    Ok(Some(Constant::Tensor(form.tensor(&ts)?)))
}

/// The prompt embeddings: each sample's row i pairs with embedding row i (unconditional rows first with
/// guidance).
fn prompt_embeddings(c: &RunConstants, port: Option<&Bound>) -> Result<Option<Constant>> {
    let port = required(port, "prompt embeddings")?;
    let batch = c.layout.unet_batch as usize;
    let context = c.prepared.context_view()?;
    let rows: Vec<usize> =
        if c.layout.cfg { (0..batch).map(|i| if i < batch / 2 { 0 } else { 1 }).collect() } else { vec![0; batch] };
    let ctx = ndarray::stack(Axis(0), &rows.iter().map(|&r| context.index_axis(Axis(0), r)).collect::<Vec<_>>())
        .map_err(|e| Error::internal("frame path: prompt embeddings", e))?;
    let tensor = host_tensor(port.ty, ctx.into_dyn().view())?;
    Ok(Some(Constant::Prompt { tensor, rows }))
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
