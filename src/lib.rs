//! # latentcam
//!
//! A real-time diffusion filter for video and webcams: frames are encoded to latents by a VAE, pushed through an
//! LCM / SD-Turbo UNet for 1-8 steps on ONNX Runtime, and decoded again.
//!
//! How the crate is laid out:
//!
//! - [`infer`] owns ONNX Runtime: the one environment, session creation and the choice of execution provider
//!   (the only place it is made), and the I/O contract every model is checked against when it loads.
//! - [`model`] reads model folders (`model.toml` + ONNX files) into typed settings.
//! - [`diffusion`] holds the maths and the models it drives: the LCM scheduler (config, per-run plan, step),
//!   seeded fixed noise, CLIP tokenization and text encoding with a prompt cache, VAE encode/decode, the UNet,
//!   and the img2img loop. It does no file or device I/O.
//! - [`imaging`] turns image files into tensors and back, with the documented crop/resize policy.
//! - [`bench`] measures each stage.
//! - [`config`] parses pipeline files; [`pipeline`] runs them: a source thread, a preprocess thread, the
//!   diffusion thread (owner of every ORT session) and one thread per sink, joined by bounded links whose
//!   overflow policy is the mode's (live: the latest frame wins; offline: nothing is dropped). The window, if
//!   any, runs on the main thread and reads the newest frame from a slot.
//! - [`source`] and [`sink`]: the frame producers and consumers behind one trait each; [`frame`] is what
//!   travels between them.
//!
//! - [`jobs`] is the library side of each command: flags parsed into checked jobs, and the jobs run; `main.rs`
//!   only maps clap's flags onto them.
//! - [`link`] are the bounded, named channels between threads; [`media`] the GStreamer helpers sources and sinks
//!   share; [`paths`] decides before any work is done whether each output can be written and is a file of its
//!   own (not an input under another name, not written by another run); [`sizing`] what working size a run uses
//!   and [`memory`] whether it fits.
//!
//! Errors are [`Error`]: each says what was wrong, keeps its cause, and has a [`error::ErrorKind`] that decides
//! the exit code (bad input 2, environment or internal failure 1, interrupted 130).

pub mod bench;
pub mod config;
pub mod control;
pub mod devices;
pub mod diffusion;
pub mod error;
pub mod flicker;
pub mod frame;
pub mod imaging;
pub mod infer;
pub mod jobs;
pub mod link;
#[cfg(feature = "gstreamer")]
pub mod media;
pub mod memory;
pub mod model;
pub mod paths;
pub mod pipeline;
pub mod pose;
pub mod similarity;
pub mod sink;
pub mod sizing;
pub mod source;

pub use error::{Error, Result};
