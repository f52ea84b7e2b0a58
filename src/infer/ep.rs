//! Execution-provider choice. This is the only place in latentcam that picks where a model runs.
//!
//! A provider the user asks for by name must register or the load fails (`error_on_failure`): a silent CPU
//! fallback would pass for a GPU number. `auto` tries the GPU providers this binary was built with, logs each
//! one that does not work, and logs what it picked.

use std::fmt;
use std::str::FromStr;

use ort::ep::ExecutionProviderDispatch;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    TensorRt,
    /// TensorRT, then CUDA (those this binary was built with and ONNX Runtime offers), else CPU.
    #[default]
    Auto,
}

impl ExecutionProvider {
    pub const ALL: [ExecutionProvider; 4] =
        [ExecutionProvider::Cpu, ExecutionProvider::Cuda, ExecutionProvider::TensorRt, ExecutionProvider::Auto];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::TensorRt => "tensorrt",
            ExecutionProvider::Auto => "auto",
        }
    }

    /// The concrete providers to try, in order. A named provider is the only candidate.
    pub(crate) fn candidates(self) -> Vec<ExecutionProvider> {
        match self {
            ExecutionProvider::Auto => {
                let mut v = Vec::new();
                if cfg!(feature = "tensorrt") {
                    v.push(ExecutionProvider::TensorRt);
                }
                if cfg!(feature = "cuda") {
                    v.push(ExecutionProvider::Cuda);
                }
                v.push(ExecutionProvider::Cpu);
                v
            }
            named => vec![named],
        }
    }

    /// The ort registrations for a concrete provider, in priority order (empty for the CPU, which needs none),
    /// or why it cannot be used here. TensorRT is paired with CUDA for the nodes TensorRT does not take.
    pub(crate) fn dispatch(self) -> Result<Vec<ExecutionProviderDispatch>> {
        match self {
            ExecutionProvider::Cpu => Ok(Vec::new()),
            ExecutionProvider::Cuda => Ok(vec![cuda_dispatch()?]),
            ExecutionProvider::TensorRt => Ok(vec![tensorrt_dispatch()?, cuda_dispatch()?]),
            ExecutionProvider::Auto => {
                Err(Error::internal("execution provider choice", "`auto` reached dispatch unexpanded"))
            }
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionProvider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|e| e.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::invalid("execution provider", format!("`{s}` (expected one of cpu, cuda, tensorrt, auto)"))
        })
    }
}

#[cfg(feature = "cuda")]
fn cuda_dispatch() -> Result<ExecutionProviderDispatch> {
    use ort::ep::ExecutionProvider as _;
    match ort::ep::CUDA::is_available() {
        Ok(true) => Ok(ort::ep::CUDA::default().build().error_on_failure()),
        Ok(false) => Err(Error::ExecutionProvider {
            ep: "cuda",
            cause: crate::error::because(
                "the loaded ONNX Runtime library was built without it (use a GPU build, e.g. the \
                     onnxruntime-gpu wheel's libonnxruntime.so, with --ort-lib)",
            ),
        }),
        Err(e) => Err(Error::ExecutionProvider { ep: "cuda", cause: Box::new(e) }),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_dispatch() -> Result<ExecutionProviderDispatch> {
    Err(Error::ExecutionProvider {
        ep: "cuda",
        cause: crate::error::because("this binary was built without it (rebuild with --features cuda)"),
    })
}

#[cfg(feature = "tensorrt")]
fn tensorrt_dispatch() -> Result<ExecutionProviderDispatch> {
    use ort::ep::ExecutionProvider as _;
    match ort::ep::TensorRT::is_available() {
        Ok(true) => Ok(ort::ep::TensorRT::default()
            // Engines take minutes to build; keep them between runs.
            .with_engine_cache(true)
            .with_engine_cache_path(trt_cache_dir())
            .with_timing_cache(true)
            .build()
            .error_on_failure()),
        Ok(false) => Err(Error::ExecutionProvider {
            ep: "tensorrt",
            cause: crate::error::because(
                "the loaded ONNX Runtime library was built without it (use a TensorRT-enabled build with --ort-lib)",
            ),
        }),
        Err(e) => Err(Error::ExecutionProvider { ep: "tensorrt", cause: Box::new(e) }),
    }
}

#[cfg(feature = "tensorrt")]
fn trt_cache_dir() -> String {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("latentcam").join("tensorrt");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the TensorRT engine cache folder");
    }
    dir.display().to_string()
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt_dispatch() -> Result<ExecutionProviderDispatch> {
    Err(Error::ExecutionProvider {
        ep: "tensorrt",
        cause: crate::error::because("this binary was built without it (rebuild with --features tensorrt)"),
    })
}
