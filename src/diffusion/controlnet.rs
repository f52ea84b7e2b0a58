//! An OpenPose ControlNet and the UNet that takes its residuals.
//!
//! The ControlNet sees what the UNet sees (sample, timestep, prompt embeddings) plus the conditioning image (the
//! skeleton, RGB 0..1) and returns one residual per UNet down block and one for the mid block; the UNet adds
//! them (`down_block_additional_residuals_N`, `mid_block_additional_residual`). Their number depends on the
//! UNet's depth (12 + 1 for SD1.5), so it is read from the models, never assumed.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ort::value::{DynTensor, TensorElementType};

use super::unet::TimestepInput;
use crate::error::{Error, Result};
use crate::infer::contract::{Bound, controlnet as port};
use crate::infer::tensor::host_tensor;
use crate::infer::{Model, Runtime};

/// Conditioning scales accepted (ControlNet's `controlnet_conditioning_scale`).
pub const MAX_CONDITIONING_SCALE: f64 = crate::knobs::CONTROLNET_SCALE.float_bounds().1;

/// One residual: the ControlNet output that makes it and the UNet input that takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    pub output: String,
    pub input: String,
    pub ty: TensorElementType,
}

pub struct ControlNet {
    model: Model,
    pub timestep: TimestepInput,
    pub residuals: Vec<Residual>,
}

/// The UNet input that takes ControlNet output `name`.
fn unet_input_for(name: &str) -> Option<String> {
    if let Some(i) = name.strip_prefix("down_block_res_samples_") {
        return Some(format!("down_block_additional_residuals_{i}"));
    }
    (name == "mid_block_res_sample").then(|| "mid_block_additional_residual".to_string())
}

impl ControlNet {
    /// Load `path` and pair its outputs with the residual inputs of `unet` (the `unet-controlnet` model).
    pub fn load(runtime: &Runtime, path: &Path, unet: &Model) -> Result<ControlNet> {
        let model = runtime.load_with_extras("ControlNet", path, &port::CONTRACT, &port::EXTRAS)?;
        let outputs = &model.binding.extra_outputs;
        let inputs = &unet.binding.extra_inputs;
        if outputs.is_empty() {
            return Err(model.contract_error(format!(
                "no residual outputs (expected down_block_res_samples_N and mid_block_res_sample; found {})",
                model.describe_outputs()
            )));
        }
        let mut residuals = Vec::with_capacity(outputs.len());
        for out in outputs {
            let input = unet_input_for(&out.name).and_then(|want| inputs.iter().find(|i| i.name == want));
            let Some(input) = input else {
                return Err(unet.contract_error(format!(
                    "the ControlNet's output `{}` has no matching UNet input (the UNet takes {})",
                    out.name,
                    names(inputs)
                )));
            };
            if input.ty != out.ty {
                return Err(unet
                    .contract_error(format!("`{}` is {} but the ControlNet makes {}", input.name, input.ty, out.ty)));
            }
            residuals.push(Residual { output: out.name.clone(), input: input.name.clone(), ty: out.ty });
        }
        if residuals.len() != inputs.len() {
            return Err(unet.contract_error(format!(
                "the UNet takes {} residuals ({}) but the ControlNet makes {} ({})",
                inputs.len(),
                names(inputs),
                outputs.len(),
                names(outputs)
            )));
        }
        let timestep = TimestepInput::of(model.binding.input(port::TIMESTEP));
        Ok(ControlNet { model, timestep, residuals })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Whether the model takes SDXL's added conditions (`text_embeds`, `time_ids`): an SDXL ControlNet.
    pub fn takes_added_conditions(&self) -> bool {
        self.model.binding.inputs[port::TEXT_EMBEDS].is_some() && self.model.binding.inputs[port::TIME_IDS].is_some()
    }

    /// Whether the model takes the conditioning scale as an input (else it is fixed at 1).
    pub fn takes_scale(&self) -> bool {
        self.model.binding.inputs[port::SCALE].is_some()
    }

    /// The residual shapes at a UNet batch of `batch`, latents `latent` ([C, h, w]), prompt embeddings `context`
    /// ([tokens, width]) and images of `height`×`width`: one run on zeros (their sizes depend on the UNet's
    /// padding rules, so they are measured, not computed).
    pub fn residual_shapes(
        &mut self,
        batch: usize,
        latent: [usize; 3],
        context: [usize; 2],
        (height, width): (usize, usize),
        cond_dim: Option<usize>,
    ) -> Result<Vec<Vec<i64>>> {
        let err = |e: ort::Error| Error::inference("ControlNet", e);
        let b = self.model.binding.clone();
        let zeros = |shape: &[usize]| ArrayD::<f32>::zeros(IxDyn(shape));
        let float = |bound: &Bound, shape: &[usize]| host_tensor(bound.ty, zeros(shape).view());
        let mut inputs: Vec<(String, DynTensor)> = vec![
            (
                b.input(port::SAMPLE).name.clone(),
                float(b.input(port::SAMPLE), &[batch, latent[0], latent[1], latent[2]])?,
            ),
            (b.input(port::CONTEXT).name.clone(), float(b.input(port::CONTEXT), &[batch, context[0], context[1]])?),
            (b.input(port::COND).name.clone(), float(b.input(port::COND), &[batch, 3, height, width])?),
            (b.input(port::TIMESTEP).name.clone(), self.timestep.tensor(&vec![999; batch])?),
        ];
        if let Some(scale) = &b.inputs[port::SCALE] {
            let shape: &[usize] = if scale.shape.is_empty() { &[] } else { &[1] };
            inputs.push((scale.name.clone(), float(scale, shape)?));
        }
        if let Some(cond) = &b.inputs[port::TIMESTEP_COND] {
            let dim = cond_dim.unwrap_or(256);
            inputs.push((cond.name.clone(), float(cond, &[batch, dim])?));
        }
        // SDXL: the pooled embedding (its width as the model states it; SDXL's 1280 otherwise) and time_ids.
        if let Some(pooled) = &b.inputs[port::TEXT_EMBEDS] {
            let width = pooled.dim(1).map_or(1280, |d| d as usize);
            inputs.push((pooled.name.clone(), float(pooled, &[batch, width])?));
        }
        if let Some(ids) = &b.inputs[port::TIME_IDS] {
            inputs.push((ids.name.clone(), float(ids, &[batch, 6])?));
        }
        let session = self.model.session_mut();
        let values: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> =
            inputs.iter().map(|(n, v)| (n.as_str().into(), v.view().into())).collect();
        let outputs = session.run(values).map_err(err)?;
        self.residuals
            .iter()
            .map(|r| {
                let value = outputs
                    .get(&r.output)
                    .ok_or_else(|| Error::inference("ControlNet", format!("no output `{}`", r.output)))?;
                match value.dtype() {
                    ort::value::ValueType::Tensor { shape, .. } => Ok(shape.to_vec()),
                    other => Err(Error::inference("ControlNet", format!("`{}` is {other}", r.output))),
                }
            })
            .collect()
    }
}

fn names(bound: &[Bound]) -> String {
    bound.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
}
