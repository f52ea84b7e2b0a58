//! What a session asks of its execution provider beyond the provider's name: [`SessionSettings`], with
//! TensorRT's [`ShapeProfile`]s. Below both [`super::ep`], which registers the providers with them, and
//! [`super::trt`], whose engine-cache key hashes them.

use std::path::PathBuf;

/// What a session needs from its execution provider beyond the provider's name.
#[derive(Clone, Debug, Default)]
pub struct SessionSettings {
    /// The model file (TensorRT engine-cache key; messages). A path that is not a file (a graph built in memory,
    /// named by its role) gets no TensorRT engine cache.
    pub model_path: PathBuf,
    /// The ONNX Runtime library this process loaded (part of the TensorRT engine-cache key; empty: unknown).
    pub ort_library: PathBuf,
    /// ONNX Runtime's CUDA graph capture (CUDA EP `enable_cuda_graph`; TensorRT `trt_cuda_graph_enable`). Needs
    /// fixed shapes and IoBinding with device buffers.
    pub cuda_graph: bool,
    /// Build TensorRT engines in fp16 (TensorRT only; the CUDA EP runs the model's own types).
    pub fp16: bool,
    /// TensorRT optimisation profiles: for each dynamic input, the min/opt/max shape, so that a size change within
    /// the range does not rebuild the engine.
    pub shape_profiles: Vec<ShapeProfile>,
    /// The shapes the session will run at, in words, where they are known but not given as profiles (ONNX Runtime
    /// then makes the profile from the first run): part of the engine-cache key, so that engines for different
    /// working sizes do not replace each other in one folder.
    pub shape_hint: Option<String>,
}

/// One TensorRT optimisation profile for one input: every shape from `min` to `max` (per dimension) runs on the
/// same engine, which is tuned for `opt`. Naming an input twice gives it two profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeProfile {
    pub input: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

impl ShapeProfile {
    /// A profile of one shape.
    pub fn fixed(input: impl Into<String>, shape: &[i64]) -> ShapeProfile {
        ShapeProfile { input: input.into(), min: shape.to_vec(), opt: shape.to_vec(), max: shape.to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_profile_is_one_shape() {
        let p = ShapeProfile::fixed("sample", &[1, 4, 64, 64]);
        assert_eq!((&p.min, &p.opt, &p.max), (&p.opt, &p.max, &vec![1, 4, 64, 64]));
    }
}
