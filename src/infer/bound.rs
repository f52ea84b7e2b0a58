//! Sessions run through IoBindings with every input and output bound to a buffer made once.
//!
//! ort's `Session::run_binding` collects the outputs into a new `SessionOutputs` on every call (heap
//! allocations). The frame path binds its outputs to preallocated tensors and never reads that collection, so it
//! calls ONNX Runtime's `RunWithBinding` directly: one call, no allocation on our side. Re-binding the camera
//! frame (ONNX Runtime copies a host input to the device when it is bound) is also a direct call, with the name
//! kept as a C string.

use std::ffi::CString;

use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::DynTensor;

use crate::error::{Error, Result};
use crate::infer::ExecutionProvider;

/// Run `session` with everything `binding` holds. `stage` names it in errors.
pub fn run(session: &mut Session, binding: &IoBinding, stage: &'static str) -> Result<()> {
    let api = ort::api();
    // SAFETY: both pointers come from live ort objects; `&mut Session` makes this the only run of the session.
    let status = unsafe { (api.RunWithBinding)(session.ptr().cast_mut(), std::ptr::null(), binding.ptr()) };
    // SAFETY: `status` was just returned by the ONNX Runtime API; this takes ownership of it.
    unsafe { ort::Error::result_from_status(status) }.map_err(|e| Error::inference(stage, e))
}

/// An input bound again on every frame (the camera image), by its C-string name.
pub struct Rebind {
    name: CString,
}

impl Rebind {
    pub fn new(name: &str) -> Result<Rebind> {
        let name = CString::new(name).map_err(|e| Error::internal("io binding", e))?;
        Ok(Rebind { name })
    }

    /// Bind `value` (again): a host tensor is copied to the session's device here.
    pub fn bind(&self, binding: &mut IoBinding, value: &DynTensor, stage: &'static str) -> Result<()> {
        let api = ort::api();
        // SAFETY: live binding and value; the name is NUL-terminated and outlives the call.
        let status = unsafe { (api.BindInput)(binding.ptr_mut(), self.name.as_ptr(), value.ptr()) };
        // SAFETY: as in `run`.
        unsafe { ort::Error::result_from_status(status) }.map_err(|e| Error::inference(stage, e))
    }
}

/// The allocator for buffers that stay on the execution provider's device (host memory on the CPU).
pub fn device_allocator(session: &Session, ep: ExecutionProvider) -> Result<Allocator> {
    let err = |e: ort::Error| Error::internal("device buffers", e);
    match ep {
        ExecutionProvider::Cuda | ExecutionProvider::TensorRt => Allocator::new(
            session,
            MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default).map_err(err)?,
        )
        .map_err(err),
        _ => Ok(Allocator::default()),
    }
}

/// A new tensor of `ty` and `shape` from `allocator`.
pub fn buffer(allocator: &Allocator, ty: ort::value::TensorElementType, shape: &[i64]) -> Result<DynTensor> {
    DynTensor::new(allocator, ty, shape.to_vec()).map_err(|e| Error::internal("device buffers", e))
}
