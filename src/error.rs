//! The library's error type. Every variant says what was wrong and, where it helps, what to do about it.
//!
//! Errors split into two kinds that the CLI maps to exit codes: *bad input* (a file, flag or model the user
//! gave us is wrong: exit 2) and *internal* failures (exit 1).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ONNX Runtime library not found (looked in: {searched}); run scripts/setup.sh, or pass --ort-lib PATH \
         or set LATENTCAM_ORT_LIB to a libonnxruntime.so of version 1.31 or newer"
    )]
    RuntimeMissing { searched: String },

    #[error("could not load the ONNX Runtime library {path}: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },

    #[error("execution provider `{ep}` is not available: {reason}")]
    ExecutionProvider { ep: &'static str, reason: String },

    #[error("model folder {path}: {problem}")]
    ModelFolder { path: PathBuf, problem: String },

    #[error("model manifest {path}: {problem}")]
    Manifest { path: PathBuf, problem: String },

    #[error("{role} model {path} could not be loaded: {reason}")]
    ModelLoad { role: &'static str, path: PathBuf, reason: String },

    #[error("{role} model {path} has the wrong signature: {problem}")]
    Contract { role: &'static str, path: PathBuf, problem: String },

    #[error("tokenizer {path}: {problem}")]
    Tokenizer { path: PathBuf, problem: String },

    #[error("input image {path}: {problem}")]
    ImageRead { path: PathBuf, problem: String },

    #[error("output {path}: {problem}")]
    Output { path: PathBuf, problem: String },

    #[error("pipeline {path}: {problem}")]
    Pipeline { path: PathBuf, problem: String },

    #[error("source {source_name}: {problem}")]
    Source { source_name: String, problem: String },

    #[error("sink {sink}: {problem}")]
    Sink { sink: String, problem: String },

    #[error("invalid {what}: {problem}")]
    InvalidParameter { what: &'static str, problem: String },

    #[error("{stage} failed: {reason}")]
    Inference { stage: &'static str, reason: String },
}

impl Error {
    /// True when the user can fix this by changing what they passed in (exit code 2), false for internal
    /// failures (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Inference { .. })
    }

    pub fn invalid(what: &'static str, problem: impl Into<String>) -> Self {
        Error::InvalidParameter { what, problem: problem.into() }
    }

    pub(crate) fn inference(stage: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Inference { stage, reason: err.to_string() }
    }
}
