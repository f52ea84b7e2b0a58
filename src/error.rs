//! The library's error type. Every variant says what was wrong and, where it helps, what to do about it; the
//! underlying cause (an ONNX Runtime, I/O or GStreamer error) is kept as its `source`, so the CLI prints
//! `error: what: cause: cause`.
//!
//! [`Error::kind`] decides the exit code, by one rule:
//! - [`ErrorKind::BadInput`] (2): something the user gave is wrong, or cannot be used, and it was found at
//!   start-up: a value in a file or flag, a model folder, a corrupt or mismatched ONNX file, a missing ONNX
//!   Runtime library, an execution provider that cannot be used, a missing camera or input file.
//! - [`ErrorKind::Environment`] (1): the environment or I/O failed *while running*: a disk that filled up, a
//!   camera unplugged, a network that went away. Every error a running pipeline stage raises is wrapped in
//!   [`Error::Running`], which is this kind unless the cause is a bug.
//! - [`ErrorKind::Internal`] (1): a bug: a model that misbehaves at run time, a thread that panicked.
//! - [`ErrorKind::Interrupted`] (130): the user stopped the run; outputs were finalized.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of an error, kept for the `source` chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A cause that only exists as text (a GStreamer bus message, a library's string error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Because(pub String);

/// Text as a [`Cause`].
pub fn because(text: impl Into<String>) -> Cause {
    Box::new(Because(text.into()))
}

/// What kind of failure an error is; decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or configuration, found at start-up: exit code 2.
    BadInput,
    /// The environment or I/O failed while running (disk full, device gone, network gone): exit code 1.
    Environment,
    /// A bug: exit code 1.
    Internal,
    /// Stopped by the user, outputs finalized: exit code 130.
    Interrupted,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::Environment | ErrorKind::Internal => 1,
            ErrorKind::Interrupted => 130,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ONNX Runtime library not found (looked in: {searched}); run scripts/setup.sh, or pass --ort-lib PATH \
         or set LATENTCAM_ORT_LIB to a libonnxruntime.so of version 1.31 or newer"
    )]
    RuntimeMissing { searched: String },

    #[error("could not load the ONNX Runtime library {path}")]
    RuntimeLoad {
        path: PathBuf,
        #[source]
        cause: Cause,
    },

    #[error("execution provider `{ep}` is not available")]
    ExecutionProvider {
        ep: &'static str,
        #[source]
        cause: Cause,
    },

    #[error("model folder {path}: {problem}")]
    ModelFolder { path: PathBuf, problem: String },

    #[error("model manifest {path}: {problem}")]
    Manifest { path: PathBuf, problem: String },

    #[error("{role} model {path} could not be loaded")]
    ModelLoad {
        role: &'static str,
        path: PathBuf,
        #[source]
        cause: Cause,
    },

    #[error("{role} model {path} has the wrong signature: {problem}")]
    Contract { role: &'static str, path: PathBuf, problem: String },

    #[error("tokenizer {path}: {problem}")]
    Tokenizer { path: PathBuf, problem: String },

    #[error("input image {path}: {problem}")]
    ImageRead { path: PathBuf, problem: String },

    /// An output that cannot be used, found before any work is done.
    #[error("output {path}: {problem}")]
    Output { path: PathBuf, problem: String },

    /// Writing an output failed (disk full, file-size limit, I/O error).
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        cause: Cause,
    },

    #[error("pipeline {path}: {problem}")]
    Pipeline { path: PathBuf, problem: String },

    /// A live-control endpoint could not listen (the port is taken, the address is not this machine's).
    #[error("cannot listen on {address} for live control")]
    Listen {
        address: String,
        #[source]
        cause: Cause,
    },

    #[error("source {source_name}: {problem}")]
    Source { source_name: String, problem: String },

    #[error("sink {sink}: {problem}")]
    Sink { sink: String, problem: String },

    #[error("invalid {what}: {problem}")]
    InvalidParameter { what: &'static str, problem: String },

    /// A pipeline stage failed after the run started.
    #[error("{stage} stopped the run")]
    Running {
        stage: String,
        #[source]
        cause: Box<Error>,
    },

    /// A model failed while running (it loaded and matched its contract, so this is not the user's input).
    #[error("{stage} failed")]
    Inference {
        stage: &'static str,
        #[source]
        cause: Cause,
    },

    /// A model ran out of memory at the working size (what to try is in `hint`).
    #[error("{hint}")]
    OutOfMemory {
        hint: String,
        #[source]
        cause: Box<Error>,
    },

    /// Something that cannot happen did (a panic, a broken invariant).
    #[error("internal error in {what}")]
    Internal {
        what: String,
        #[source]
        cause: Cause,
    },

    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Write { .. } | Error::Listen { .. } | Error::OutOfMemory { .. } => ErrorKind::Environment,
            Error::Running { cause, .. } => match cause.kind() {
                ErrorKind::Internal => ErrorKind::Internal,
                ErrorKind::Interrupted => ErrorKind::Interrupted,
                ErrorKind::BadInput | ErrorKind::Environment => ErrorKind::Environment,
            },
            Error::Inference { .. } | Error::Internal { .. } => ErrorKind::Internal,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::RuntimeMissing { .. }
            | Error::RuntimeLoad { .. }
            | Error::ExecutionProvider { .. }
            | Error::ModelFolder { .. }
            | Error::Manifest { .. }
            | Error::ModelLoad { .. }
            | Error::Contract { .. }
            | Error::Tokenizer { .. }
            | Error::ImageRead { .. }
            | Error::Output { .. }
            | Error::Pipeline { .. }
            | Error::Source { .. }
            | Error::Sink { .. }
            | Error::InvalidParameter { .. } => ErrorKind::BadInput,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    pub fn invalid(what: &'static str, problem: impl Into<String>) -> Self {
        Error::InvalidParameter { what, problem: problem.into() }
    }

    pub(crate) fn inference(stage: &'static str, cause: impl std::fmt::Display) -> Self {
        Error::Inference { stage, cause: because(cause.to_string()) }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Write { path: path.into(), cause: cause.into() }
    }

    pub(crate) fn internal(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Error::Internal { what: what.into(), cause: because(cause.to_string()) }
    }

    /// This error as an out-of-memory error when ONNX Runtime's allocator failed (at `size`, the working size,
    /// sides multiples of `multiple`); else as it is.
    pub fn or_out_of_memory(self, size: (u32, u32), multiple: u32) -> Self {
        if is_out_of_memory(&self.chain_text()) {
            Error::OutOfMemory { hint: out_of_memory_hint(size, multiple), cause: Box::new(self) }
        } else {
            self
        }
    }

    /// This error, raised by `stage` of a running pipeline.
    pub(crate) fn while_running(self, stage: &str) -> Self {
        match self {
            e @ (Error::Running { .. } | Error::Interrupted) => e,
            e => Error::Running { stage: stage.to_string(), cause: Box::new(e) },
        }
    }

    /// The whole message with its causes, as the CLI prints it: `what: cause: cause`.
    pub fn chain_text(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        text
    }
}

/// The message of an allocation failure while running at `size`: what ran out, and what to try.
pub fn out_of_memory_hint(size: (u32, u32), multiple: u32) -> String {
    let (w, h) = size;
    let smaller = |s: u32| (s * 3 / 4 / multiple * multiple).max(multiple);
    format!(
        "ran out of memory at {w}x{h}: try a smaller --size (e.g. {}x{}), a stream batch of 1, or close other programs",
        smaller(w),
        smaller(h)
    )
}

/// Whether an error from ONNX Runtime is an allocation failure.
pub fn is_out_of_memory(text: &str) -> bool {
    ["Failed to allocate", "bad_alloc", "out of memory", "Cannot allocate memory", "OOM"]
        .iter()
        .any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_are_recognised() {
        assert!(is_out_of_memory("BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer"));
        assert!(!is_out_of_memory("shape mismatch"));
        assert!(out_of_memory_hint((2048, 2048), 64).contains("1536x1536"));
    }

    #[test]
    fn kinds_decide_exit_codes() {
        let bad = Error::invalid("steps", "9 (expected 1 to 8)");
        assert_eq!(bad.exit_code(), 2);
        let disk = Error::write("/x/out.mp4", std::io::Error::from_raw_os_error(28));
        assert_eq!(disk.exit_code(), 1);
        assert!(disk.chain_text().starts_with("writing /x/out.mp4 failed: "), "{}", disk.chain_text());
        // A sink that fails while running is the environment's failure even though opening it was input.
        let running = Error::Sink { sink: "file0".into(), problem: "could not write".into() }.while_running("sink");
        assert_eq!(running.kind(), ErrorKind::Environment);
        assert_eq!(running.chain_text(), "sink stopped the run: sink file0: could not write");
        let bug = Error::internal("thread process", "panicked").while_running("process");
        assert_eq!(bug.kind(), ErrorKind::Internal);
        assert_eq!(Error::Interrupted.while_running("source").exit_code(), 130);
    }
}
