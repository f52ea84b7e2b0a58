//! The denoising UNet: one ONNX session, fed in whichever timestep form its exporter chose.

use ndarray::{Array0, Array1, Array4, ArrayView2, ArrayView3, ArrayView4, Ix4};
use ort::session::SessionInputValue;
use ort::value::{TensorElementType, TensorRef};

use crate::error::{Error, Result};
use crate::infer::contract::{unet as port, unet_controlnet};
use crate::infer::tensor::host_tensor;
use crate::infer::{Model, Runtime};

/// The `timestep` input as the model declares it (read from the session, never assumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepInput {
    /// float32 [batch] (diffusers' own ONNX scripts)
    F32Batch,
    /// float32 scalar
    F32Scalar,
    /// int64 [batch] (optimum)
    I64Batch,
    /// int64 scalar
    I64Scalar,
    /// float16 [batch] (fp16 exports)
    F16Batch,
    /// float16 scalar
    F16Scalar,
}

impl TimestepInput {
    pub fn describe(self) -> &'static str {
        match self {
            TimestepInput::F32Batch => "float32 [batch]",
            TimestepInput::F32Scalar => "float32 scalar",
            TimestepInput::I64Batch => "int64 [batch]",
            TimestepInput::I64Scalar => "int64 scalar",
            TimestepInput::F16Batch => "float16 [batch]",
            TimestepInput::F16Scalar => "float16 scalar",
        }
    }

    /// The form of a bound `timestep` port.
    pub fn of(bound: &crate::infer::Bound) -> TimestepInput {
        match (bound.ty, bound.shape.len()) {
            (TensorElementType::Float32, 1) => TimestepInput::F32Batch,
            (TensorElementType::Float32, _) => TimestepInput::F32Scalar,
            (TensorElementType::Float16, 1) => TimestepInput::F16Batch,
            (TensorElementType::Float16, _) => TimestepInput::F16Scalar,
            (_, 1) => TimestepInput::I64Batch,
            _ => TimestepInput::I64Scalar,
        }
    }

    /// A host tensor in this form holding `timesteps` (one per batch row; scalar forms take the first, and the
    /// caller makes sure they are all equal).
    pub(crate) fn tensor(self, timesteps: &[u32]) -> Result<ort::value::DynTensor> {
        use ndarray::arr0;
        let err = |e: ort::Error| Error::internal("timestep tensor", e);
        let first = timesteps.first().copied().unwrap_or(0);
        let floats = || Array1::from_iter(timesteps.iter().map(|&t| t as f32)).into_dyn();
        Ok(match self {
            TimestepInput::I64Batch => {
                ort::value::Tensor::from_array(Array1::from_iter(timesteps.iter().map(|&t| i64::from(t))))
                    .map_err(err)?
                    .upcast()
            }
            TimestepInput::I64Scalar => ort::value::Tensor::from_array(arr0(i64::from(first))).map_err(err)?.upcast(),
            TimestepInput::F32Batch => host_tensor(TensorElementType::Float32, floats().view())?,
            TimestepInput::F16Batch => host_tensor(TensorElementType::Float16, floats().view())?,
            TimestepInput::F32Scalar => host_tensor(TensorElementType::Float32, arr0(first as f32).into_dyn().view())?,
            TimestepInput::F16Scalar => host_tensor(TensorElementType::Float16, arr0(first as f32).into_dyn().view())?,
        })
    }

    /// True when the model takes one timestep per batch item (a denoising batch needs that).
    pub fn per_item(self) -> bool {
        matches!(self, TimestepInput::F32Batch | TimestepInput::I64Batch | TimestepInput::F16Batch)
    }
}

/// The width LCM models use for `timestep_cond` when the model leaves it dynamic (`time_cond_proj_dim`).
const DEFAULT_COND_DIM: usize = 256;

pub struct Unet {
    model: Model,
    pub timestep: TimestepInput,
    /// Width of `timestep_cond` for full LCM models; None when the model has no such input.
    pub cond_dim: Option<usize>,
    pub latent_channels: usize,
    /// SDXL family: the UNet takes `text_embeds` and `time_ids` (the six size conditions).
    pub added_conditions: bool,
    /// An inpainting UNet: `sample` takes 2C + 1 channels, the latents, the mask and the masked image's latents
    /// (runwayml/stable-diffusion-inpainting: 9). It runs only with a mask.
    pub inpainting: bool,
}

/// What an SDXL-family UNet takes besides the prompt's hidden states, one row per batch item.
#[derive(Clone, Copy, Debug)]
pub struct Added<'a> {
    /// The pooled prompt embedding `[rows, width]`.
    pub text_embeds: ArrayView2<'a, f32>,
    /// `[rows, 6]`: [`time_ids`].
    pub time_ids: ArrayView2<'a, f32>,
}

/// SDXL's size conditions for a `height`×`width` picture, `rows` times: `[H, W, 0, 0, H, W]` (the original
/// size, the crop's top-left corner, the target size: diffusers' `add_time_ids` for an uncropped picture).
pub fn time_ids(height: usize, width: usize, rows: usize) -> ndarray::Array2<f32> {
    let (h, w) = (height as f32, width as f32);
    let row = [h, w, 0.0, 0.0, h, w];
    ndarray::Array2::from_shape_fn((rows, 6), |(_, i)| row[i])
}

impl Unet {
    pub fn load(runtime: &Runtime, path: &std::path::Path, latent_channels: usize) -> Result<Unet> {
        Self::from_model(runtime.load("UNet", path, &port::CONTRACT)?, latent_channels)
    }

    /// The UNet that takes ControlNet residuals (`[files] unet-controlnet`).
    pub fn load_with_residuals(runtime: &Runtime, path: &std::path::Path, latent_channels: usize) -> Result<Unet> {
        let model = runtime.load_with_extras("UNet", path, &port::CONTRACT, &unet_controlnet::EXTRAS)?;
        if model.binding.extra_inputs.is_empty() {
            return Err(model.contract_error(format!(
                "no ControlNet residual inputs (expected down_block_additional_residuals_N and \
                 mid_block_additional_residual; found {})",
                model.describe_inputs()
            )));
        }
        Self::from_model(model, latent_channels)
    }

    fn from_model(model: Model, latent_channels: usize) -> Result<Unet> {
        let b = &model.binding;
        let timestep = TimestepInput::of(b.input(port::TIMESTEP));
        if let Some(c) = b.output(port::OUT).dim(1)
            && c as usize != latent_channels
        {
            return Err(model.contract_error(format!(
                "out_sample has {c} channels but model.toml says latent-channels = {latent_channels}"
            )));
        }
        let inpainting = b.input(port::SAMPLE).dim(1) == Some(2 * latent_channels as i64 + 1);
        if let Some(c) = b.input(port::SAMPLE).dim(1)
            && c as usize != latent_channels
            && !inpainting
        {
            return Err(model.contract_error(format!(
                "sample has {c} channels but model.toml says latent-channels = {latent_channels} (expected                  {latent_channels}, or {} for an inpainting UNet: latents, mask, masked image latents)",
                2 * latent_channels + 1
            )));
        }
        let cond_dim =
            b.inputs[port::TIMESTEP_COND].as_ref().map(|c| c.dim(1).map_or(DEFAULT_COND_DIM, |d| d as usize));
        let added_conditions = match (&b.inputs[port::TEXT_EMBEDS], &b.inputs[port::TIME_IDS]) {
            (Some(_), Some(ids)) => {
                if let Some(n) = ids.dim(1)
                    && n != 6
                {
                    return Err(model.contract_error(format!(
                        "time_ids takes {n} values; latentcam makes the 6 of SDXL base and Turbo ({}); the 5-value \
                         form with an aesthetic score is the refiner's, which latentcam does not run",
                        "[H, W, 0, 0, H, W]"
                    )));
                }
                true
            }
            (None, None) => false,
            _ => {
                return Err(model.contract_error(
                    "text_embeds and time_ids go together (an SDXL-family UNet takes both)".to_string(),
                ));
            }
        };
        Ok(Unet { model, timestep, cond_dim, latent_channels, added_conditions, inpainting })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Width of `text_embeds` (SDXL's pooled embedding) the model expects, when fixed.
    pub fn pooled_width(&self) -> Option<usize> {
        self.model.binding.inputs[port::TEXT_EMBEDS].as_ref()?.dim(1).map(|d| d as usize)
    }

    /// Width of `encoder_hidden_states` the model expects, when fixed.
    pub fn context_width(&self) -> Option<usize> {
        self.model.binding.input(port::CONTEXT).dim(2).map(|d| d as usize)
    }

    /// The model's output (noise, v or x0 prediction) for `sample` at timestep `t`.
    pub fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        t: u32,
        context: ArrayView3<f32>,
        cond: Option<ArrayView2<f32>>,
        added: Option<Added>,
    ) -> Result<Array4<f32>> {
        let _span = tracing::trace_span!("unet", t).entered();
        let err = |e: ort::Error| Error::inference("UNet", e);
        let batch = sample.dim().0;
        let b = &self.model.binding;
        // Each form of the timestep needs its own backing array; only one is used.
        let (ts_f32_batch, ts_f32_scalar, ts_i64_batch, ts_i64_scalar);
        let timestep: SessionInputValue = match self.timestep {
            TimestepInput::F32Batch => {
                ts_f32_batch = Array1::from_elem(batch, t as f32);
                TensorRef::from_array_view(&ts_f32_batch).map_err(err)?.into()
            }
            TimestepInput::F32Scalar => {
                ts_f32_scalar = Array0::from_elem((), t as f32);
                TensorRef::from_array_view(&ts_f32_scalar).map_err(err)?.into()
            }
            TimestepInput::I64Batch => {
                ts_i64_batch = Array1::from_elem(batch, i64::from(t));
                TensorRef::from_array_view(&ts_i64_batch).map_err(err)?.into()
            }
            TimestepInput::I64Scalar => {
                ts_i64_scalar = Array0::from_elem((), i64::from(t));
                TensorRef::from_array_view(&ts_i64_scalar).map_err(err)?.into()
            }
            TimestepInput::F16Batch => {
                let values = Array1::from_elem(batch, t as f32);
                host_tensor(TensorElementType::Float16, values.view().into_dyn())?.into_dyn().into()
            }
            TimestepInput::F16Scalar => {
                let value = Array0::from_elem((), t as f32);
                host_tensor(TensorElementType::Float16, value.view().into_dyn())?.into_dyn().into()
            }
        };
        let mut inputs: Vec<(std::borrow::Cow<str>, SessionInputValue)> = vec![
            (b.input(port::SAMPLE).name.clone().into(), self.model.input_value(port::SAMPLE, sample)?),
            (b.input(port::TIMESTEP).name.clone().into(), timestep),
            (b.input(port::CONTEXT).name.clone().into(), self.model.input_value(port::CONTEXT, context)?),
        ];
        match (&b.inputs[port::TIMESTEP_COND], cond) {
            (Some(bound), Some(cond)) => {
                inputs.push((bound.name.clone().into(), self.model.input_value(port::TIMESTEP_COND, cond)?))
            }
            (Some(bound), None) => {
                return Err(Error::inference("UNet", format!("the model needs `{}` but none was given", bound.name)));
            }
            (None, _) => {}
        }
        match (self.added_conditions, added) {
            (true, Some(added)) => {
                for (index, values) in [(port::TEXT_EMBEDS, added.text_embeds), (port::TIME_IDS, added.time_ids)] {
                    inputs.push((b.input(index).name.clone().into(), self.model.input_value(index, values)?));
                }
            }
            (true, None) => {
                return Err(Error::inference("UNet", "an SDXL-family UNet needs text_embeds and time_ids"));
            }
            (false, _) => {}
        }
        let out = self.model.run_output(inputs, port::OUT)?;
        let out = out.into_dimensionality::<Ix4>().map_err(|e| Error::inference("UNet", e))?;
        if out.dim() != sample.dim() {
            return Err(Error::inference(
                "UNet",
                format!("output shape {:?} differs from the sample's {:?}", out.dim(), sample.dim()),
            ));
        }
        Ok(out)
    }
}
