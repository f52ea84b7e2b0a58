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

/// Whether the CPU can read and write `tensor`'s memory through its data pointer (host memory, or CUDA pinned
/// memory); device memory cannot be.
pub fn is_host(tensor: &DynTensor) -> bool {
    tensor.memory_info().is_cpu_accessible()
}

/// The error for a tensor whose memory the CPU cannot touch.
fn not_host(what: &'static str, tensor: &DynTensor) -> Error {
    let info = tensor.memory_info();
    Error::internal(
        what,
        format!(
            "the tensor is in {} memory (device {}), which the CPU cannot access",
            info.allocation_device().as_str(),
            info.device_id()
        ),
    )
}

/// Overwrite a host tensor (one made by [`host_tensor`], or any whose memory the CPU can access) of the same
/// element count with `values`. A tensor in device memory is refused with an error: writing through its data
/// pointer from the CPU would be undefined behaviour.
pub fn write_host(tensor: &mut DynTensor, values: ArrayViewD<f32>) -> Result<()> {
    if !is_host(tensor) {
        return Err(not_host("host tensor", tensor));
    }
    let count: usize = tensor.shape().iter().map(|&d| d as usize).product();
    if count != values.len() {
        return Err(Error::internal("host tensor", format!("{} values for a tensor of {count}", values.len())));
    }
    let ty = *tensor.data_type();
    let ptr = tensor.data_ptr_mut();
    // SAFETY: the CPU can access the tensor's memory (checked above against its memory info), the tensor holds
    // `count` elements of `ty` (its shape and type), and it is borrowed mutably for the duration of the writes.
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
            if !tensor.memory_info().is_cpu_accessible() {
                return Err(not_host("model output", &tensor));
            }
            // SAFETY: an f16 tensor of `count` elements in memory the CPU can access (checked above).
            let data = unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<f16>(), count) };
            ArrayD::from_shape_vec(IxDyn(&shape), data.iter().map(|v| v.to_f32()).collect())
                .map_err(|e| Error::internal("model output", e))
        }
        other => Err(Error::internal("model output", format!("element type {other} is not a float"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

    /// An error with its causes, as the log shows it.
    fn message(e: Error) -> String {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        text
    }

    /// ONNX Runtime, loaded once (scripts/setup.sh installs it).
    fn load_ort() {
        static RUNTIME: std::sync::OnceLock<crate::infer::Runtime> = std::sync::OnceLock::new();
        RUNTIME.get_or_init(|| {
            crate::infer::Runtime::new(crate::infer::RuntimeOptions {
                execution_provider: crate::infer::ExecutionProvider::Cpu,
                intra_op_threads: Some(1),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("this test needs ONNX Runtime (scripts/setup.sh): {e}"))
        });
    }

    #[test]
    fn write_host_fills_host_tensors_in_their_element_type() {
        load_ort();
        let values = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0, 1.0, -2.5, 3.25, 1e-3, 65504.0]).unwrap();
        for ty in [TensorElementType::Float32, TensorElementType::Float16] {
            let mut tensor = host_tensor(ty, ArrayD::zeros(IxDyn(&[2, 3])).view()).unwrap();
            assert!(is_host(&tensor));
            write_host(&mut tensor, values.view()).unwrap();
            let back = to_f32(&tensor.into_dyn()).unwrap();
            let tolerance = if ty == TensorElementType::Float16 { 1e-3 } else { 0.0 };
            for (b, v) in back.iter().zip(values.iter()) {
                assert!((b - v).abs() <= tolerance * v.abs().max(1.0), "{ty}: {b} for {v}");
            }
        }
        let mut tensor = host_tensor(TensorElementType::Float32, ArrayD::zeros(IxDyn(&[4])).view()).unwrap();
        let err = message(write_host(&mut tensor, values.view()).unwrap_err());
        assert!(err.contains("6 values for a tensor of 4"), "{err}");
    }

    #[test]
    fn write_host_refuses_a_tensor_in_device_memory() {
        load_ort();
        // A tensor whose memory info says CUDA device memory, over a host buffer (this machine has no GPU; the
        // bytes being host memory, nothing bad would happen if the check were missing).
        let mut backing = vec![7.0f32; 6];
        let cuda = MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default).unwrap();
        let shape = [2i64, 3];
        let mut raw: *mut ort::sys::OrtValue = std::ptr::null_mut();
        // SAFETY: `backing` holds the 6 f32 (24 bytes) the shape describes and outlives the tensor (dropped below);
        // ONNX Runtime does not free memory it was given.
        let status = unsafe {
            (ort::api().CreateTensorWithDataAsOrtValue)(
                ort::AsPointer::ptr(&cuda),
                backing.as_mut_ptr().cast(),
                backing.len() * size_of::<f32>(),
                shape.as_ptr(),
                shape.len(),
                ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                &mut raw,
            )
        };
        // SAFETY: a status just returned by the ONNX Runtime API.
        unsafe { ort::Error::result_from_status(status) }.unwrap();
        // SAFETY: a tensor value just created; the default allocator only keeps a handle alive.
        let mut tensor: DynTensor =
            unsafe { DynTensor::from_ptr(std::ptr::NonNull::new(raw).unwrap(), Some(&Allocator::default())) };
        assert!(!is_host(&tensor));
        let err = message(write_host(&mut tensor, ArrayD::from_elem(IxDyn(&[2, 3]), 1.0).view()).unwrap_err());
        assert!(err.contains("Cuda") && err.contains("CPU cannot access"), "{err}");
        let err = message(to_f32(&tensor.into_dyn()).unwrap_err());
        assert!(err.contains("model output"), "{err}");
        assert_eq!(backing, vec![7.0; 6], "nothing was written");
    }
}
