//! Execution-provider choice. This is the only place in latentcam that picks where a model runs.
//!
//! A provider the user asks for by name must register or the load fails (`error_on_failure`): a silent CPU
//! fallback would pass for a GPU number. `auto` tries the GPU providers this binary was built with, logs each
//! one that does not work, and logs what it picked.

use std::fmt;
use std::str::FromStr;

use ort::ep::ExecutionProviderDispatch;

use crate::error::{Error, Result};

pub use super::settings::{SessionSettings, ShapeProfile};

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
    /// or why it cannot be used here. TensorRT is paired with CUDA for the nodes TensorRT does not take; that CUDA
    /// EP never captures CUDA graphs (ONNX Runtime refuses a session whose graph-capturing EP does not hold every
    /// node, and with TensorRT present it holds few), so `cuda_graph` there is TensorRT's own capture.
    pub(crate) fn dispatch(self, settings: &SessionSettings) -> Result<Vec<ExecutionProviderDispatch>> {
        match self {
            ExecutionProvider::Cpu => Ok(Vec::new()),
            ExecutionProvider::Cuda => Ok(vec![cuda_dispatch(settings.cuda_graph)?]),
            ExecutionProvider::TensorRt => Ok(vec![tensorrt_dispatch(settings)?, cuda_dispatch(false)?]),
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

/// The CUDA EP. Options, none measured here (no GPU):
/// - cuDNN convolution search `exhaustive` (ONNX Runtime's default, kept on purpose): latentcam runs the same
///   shapes frame after frame, so benchmarking every algorithm once per convolution shape, on the first run (the
///   warm-up, before any CUDA graph capture), buys the fastest kernel for every later frame. `heuristic` saves
///   that first-run time and workspace memory but can pick a slower kernel for the whole session.
/// - `prefer_nhwc`: the tensor cores (fp16, and fp32 through TF32) want channels-last, and a UNet/VAE is mostly
///   convolutions; ONNX Runtime moves to NHWC only the ops it has NHWC kernels for, with transposes at the edges.
/// - TF32 for fp32 convolutions and matmuls (10-bit mantissa products, fp32 accumulation; PyTorch's default for
///   cuDNN convolutions), which a diffusion picture does not show.
/// - Arena growth `same as requested`: the default doubles each extension, which for GB-sized UNet activations
///   can hold far more memory than used; shapes are fixed after warm-up, so the arena stops growing anyway.
#[cfg(feature = "cuda")]
fn cuda_dispatch(cuda_graph: bool) -> Result<ExecutionProviderDispatch> {
    use ort::ep::ExecutionProvider as _;
    use ort::ep::cuda::ConvAlgorithmSearch;
    match ort::ep::CUDA::is_available() {
        Ok(true) => {
            let conv_search = ConvAlgorithmSearch::Exhaustive;
            let arena = ort::ep::ArenaExtendStrategy::SameAsRequested;
            tracing::debug!(
                cuda_graph, conv_search = %conv_search, prefer_nhwc = true, tf32 = true, arena = %arena,
                "CUDA execution provider options"
            );
            Ok(ort::ep::CUDA::default()
                .with_cuda_graph(cuda_graph)
                .with_conv_algorithm_search(conv_search)
                .with_prefer_nhwc(true)
                .with_tf32(true)
                .with_arena_extend_strategy(arena)
                .build()
                .error_on_failure())
        }
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
fn cuda_dispatch(_cuda_graph: bool) -> Result<ExecutionProviderDispatch> {
    Err(Error::ExecutionProvider {
        ep: "cuda",
        cause: crate::error::because("this binary was built without it (rebuild with --features cuda)"),
    })
}

/// The TensorRT EP, with an engine cache whose folder is keyed by everything that changes an engine (see
/// [`super::trt`]): engines take minutes to build.
#[cfg(feature = "tensorrt")]
fn tensorrt_dispatch(settings: &SessionSettings) -> Result<ExecutionProviderDispatch> {
    use ort::ep::ExecutionProvider as _;
    match ort::ep::TensorRT::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::ExecutionProvider {
                ep: "tensorrt",
                cause: crate::error::because(
                    "the loaded ONNX Runtime library was built without it (use a TensorRT-enabled build with \
                     --ort-lib)",
                ),
            });
        }
        Err(e) => return Err(Error::ExecutionProvider { ep: "tensorrt", cause: Box::new(e) }),
    }
    let plan = super::trt::EnginePlan::prepare(settings, &super::trt::cache_root())?;
    let mut ep = ort::ep::TensorRT::default()
        .with_timing_cache(true)
        .with_timing_cache_path(plan.timing_dir.display())
        .with_fp16(settings.fp16)
        .with_cuda_graph(settings.cuda_graph);
    if !settings.shape_profiles.is_empty() {
        ep = ep
            .with_profile_min_shapes(&plan.min_shapes)
            .with_profile_opt_shapes(&plan.opt_shapes)
            .with_profile_max_shapes(&plan.max_shapes);
    }
    tracing::debug!(
        model = %settings.model_path.display(), timing_dir = %plan.timing_dir.display(), fp16 = settings.fp16,
        cuda_graph = settings.cuda_graph, min_shapes = %plan.min_shapes, opt_shapes = %plan.opt_shapes,
        max_shapes = %plan.max_shapes, engine_dir = ?plan.cache.as_ref().map(|c| &c.dir),
        "TensorRT execution provider options"
    );
    match &plan.cache {
        Some(cache) => {
            ep = ep
                .with_engine_cache(true)
                .with_engine_cache_path(cache.dir.display())
                .with_engine_cache_prefix(&cache.prefix);
            tracing::trace!(key = %cache.key, "TensorRT engine cache key hashes:\n{}", cache.descriptor);
            if cache.has_engine {
                tracing::debug!(
                    model = %settings.model_path.display(), engine_dir = %cache.dir.display(), "TensorRT engine cached"
                );
            } else {
                tracing::info!(
                    "no TensorRT engine cached for {} in {}: building one, which can take minutes",
                    settings.model_path.display(),
                    cache.dir.display()
                );
            }
        }
        None => tracing::debug!(
            graph = %settings.model_path.display(),
            "TensorRT: a graph built in memory has no engine cache; its engine is built at each load"
        ),
    }
    Ok(ep.build().error_on_failure())
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt_dispatch(_settings: &SessionSettings) -> Result<ExecutionProviderDispatch> {
    Err(Error::ExecutionProvider {
        ep: "tensorrt",
        cause: crate::error::because("this binary was built without it (rebuild with --features tensorrt)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings { model_path: "unet.onnx".into(), ..Default::default() }
    }

    #[test]
    fn cpu_needs_no_registration() {
        assert!(ExecutionProvider::Cpu.dispatch(&settings()).unwrap().is_empty());
    }

    #[test]
    fn auto_is_expanded_before_dispatch() {
        assert!(matches!(ExecutionProvider::Auto.dispatch(&settings()), Err(Error::Internal { .. })));
        let candidates = ExecutionProvider::Auto.candidates();
        assert_eq!(candidates.last(), Some(&ExecutionProvider::Cpu));
        assert_eq!(candidates.contains(&ExecutionProvider::Cuda), cfg!(feature = "cuda"));
        assert_eq!(candidates.contains(&ExecutionProvider::TensorRt), cfg!(feature = "tensorrt"));
    }

    /// Why a dispatch failed, with its cause.
    #[cfg(not(feature = "tensorrt"))]
    fn refusal(ep: ExecutionProvider) -> String {
        match ep.dispatch(&settings()) {
            Err(e @ Error::ExecutionProvider { .. }) => {
                format!("{e}: {}", std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default())
            }
            Err(e) => panic!("{ep}: unexpected error {e}"),
            Ok(_) => panic!("{ep}: dispatched"),
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let msg = refusal(ExecutionProvider::Cuda);
        assert!(msg.contains("`cuda` is not available") && msg.contains("--features cuda"), "{msg}");
    }

    #[cfg(not(feature = "tensorrt"))]
    #[test]
    fn tensorrt_without_the_feature_says_how_to_get_it() {
        let msg = refusal(ExecutionProvider::TensorRt);
        assert!(msg.contains("`tensorrt` is not available") && msg.contains("--features tensorrt"), "{msg}");
    }
}
