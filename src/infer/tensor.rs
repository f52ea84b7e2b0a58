//! Host tensors in the element type a model port declares (f32 or f16), and f32 views of model outputs.
//!
//! latentcam computes in f32 on the host; a model exported in fp16 (`optimum-cli export onnx --fp16`, or
//! `scripts/export_models.py real ... --fp16`) takes and returns f16. The conversion happens here, once per value,
//! so no other code needs to know which one a model uses.

use half::f16;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, TensorElementType, ValueType};

use crate::error::{Error, Result};

/// The float element types a model port may use.
pub fn is_float(ty: TensorElementType) -> bool {
    matches!(ty, TensorElementType::Float32 | TensorElementType::Float16)
}

/// `ty`'s short name as `models check` prints it.
pub fn type_name(ty: TensorElementType) -> &'static str {
    match ty {
        TensorElementType::Float32 => "f32",
        TensorElementType::Float16 => "f16",
        TensorElementType::Int64 => "i64",
        TensorElementType::Int32 => "i32",
        TensorElementType::Uint8 => "u8",
        _ => "other",
    }
}

fn shape_of(view: &ArrayViewD<f32>) -> Vec<i64> {
    view.shape().iter().map(|&d| d as i64).collect()
}

/// A new host tensor of `ty` (f32 or f16) holding `values`, owned by ONNX Runtime's CPU allocator (so it can be
/// bound to an IoBinding, which copies it to the device when the session runs elsewhere).
pub fn host_tensor(ty: TensorElementType, values: ArrayViewD<f32>) -> Result<DynTensor> {
    let err = |e: ort::Error| Error::internal("host tensor", e);
    let mut tensor = DynTensor::new(&Allocator::default(), ty, shape_of(&values)).map_err(err)?;
    write_host(&mut tensor, values)?;
    Ok(tensor)
}

/// Overwrite a host tensor made by [`host_tensor`] (same element count) with `values`.
pub fn write_host(tensor: &mut DynTensor, values: ArrayViewD<f32>) -> Result<()> {
    let count: usize = tensor.shape().iter().map(|&d| d as usize).product();
    if count != values.len() {
        return Err(Error::internal("host tensor", format!("{} values for a tensor of {count}", values.len())));
    }
    let ty = *tensor.data_type();
    let ptr = tensor.data_ptr_mut();
    // SAFETY: the tensor is in host memory (made by the default CPU allocator), holds `count` elements of `ty`, and
    // is borrowed mutably for the duration of the writes.
    match ty {
        TensorElementType::Float32 => {
            let out = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<f32>(), count) };
            out.iter_mut().zip(values.iter()).for_each(|(o, v)| *o = *v);
        }
        TensorElementType::Float16 => {
            let out = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<f16>(), count) };
            out.iter_mut().zip(values.iter()).for_each(|(o, v)| *o = f16::from_f32(*v));
        }
        other => return Err(Error::internal("host tensor", format!("element type {other} is not a float"))),
    }
    Ok(())
}

/// A model output (f32 or f16, in host memory) as an owned f32 array.
pub fn to_f32(value: &DynValue) -> Result<ArrayD<f32>> {
    let err = |e: ort::Error| Error::internal("model output", e);
    let (ty, shape) = match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.iter().map(|&d| d as usize).collect::<Vec<_>>()),
        other => return Err(Error::internal("model output", format!("not a tensor: {other}"))),
    };
    match ty {
        TensorElementType::Float32 => Ok(value.try_extract_array::<f32>().map_err(err)?.to_owned()),
        TensorElementType::Float16 => {
            let count: usize = shape.iter().product();
            let tensor = value.view().downcast::<ort::value::DynTensorValueType>().map_err(err)?;
            // SAFETY: an f16 tensor of `count` elements in host memory (session outputs without IoBinding are).
            let data = unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<f16>(), count) };
            ArrayD::from_shape_vec(IxDyn(&shape), data.iter().map(|v| v.to_f32()).collect())
                .map_err(|e| Error::internal("model output", e))
        }
        other => Err(Error::internal("model output", format!("element type {other} is not a float"))),
    }
}
