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
//!   seeded fixed noise, CLIP tokenization and text encoding with a prompt cache, VAE encode/decode, the UNet
//!   and the OpenPose ControlNet, the img2img loop, and the per-frame path (stream batches, CUDA graphs) the
//!   pipeline runs. It does no file or device I/O.
//! - [`pose`]: pose estimators (MoveNet, DWPose) behind one trait, keypoint smoothing over time, the OpenPose
//!   skeleton renderer, and the pose stage of a pose-guided run.
//! - [`mask`]: which part of a frame to restyle (1 = change): the person segmenter and BlazeFace (MediaPipe's
//!   models, with MediaPipe's own processing), a still mask image, a chroma key; combining, smoothing over time,
//!   threshold, grow/shrink and feather.
//! - [`similarity`] is the filter that re-emits the last output for a near-identical input frame;
//!   [`composite`] puts a masked run's kept pixels back exactly.
//! - [`imaging`] turns image files into tensors and back, with the documented crop/resize policy.
//! - [`knobs`] declares every knob a user turns once: key, live name, flag, range, default, help.
//! - [`config`] parses pipeline files (and `--set`); [`pipeline`] runs them: a source thread, a preprocess
//!   thread (the pose stage, if any), the diffusion thread (owner of every ORT session) and one thread per sink,
//!   joined by bounded links whose overflow policy is the mode's (live: the latest frame wins; offline: nothing
//!   is dropped). The window, if any, runs on the main thread and reads the newest frame from a slot.
//! - [`control`]: what a running pipeline lets a user change ([`control::LiveValues`]) and the inputs that
//!   change it (window keys, stdin, HTTP and WebSocket, OSC), all through one hub the stages poll.
//! - [`source`] and [`sink`]: the frame producers and consumers behind one trait each; [`frame`] is what
//!   travels between them; [`devices`] lists the cameras and v4l2loopback outputs they can open.
//!
//! - [`jobs`] is the library side of each command (one file per command): flags parsed into checked jobs, and
//!   the jobs run; `main.rs` only maps clap's flags onto them.
//! - [`bench`] measures what `latentcam bench` reports: each stage's time, and a pipeline's throughput and
//!   latency; [`flicker`] the temporal stability `latentcam flicker` reports.
//! - [`link`] are the bounded, named channels between threads; [`media`] the GStreamer helpers sources and sinks
//!   share; [`paths`] decides before any work is done whether each output can be written and is a file of its
//!   own (not an input under another name, not written by another run); [`sizing`] what working size a run uses
//!   and [`memory`] whether it fits.
//!
//! Errors are [`Error`]: each says what was wrong, keeps its cause, and has a [`error::ErrorKind`] that decides
//! the exit code (bad input 2, environment or internal failure 1, interrupted 130).

pub mod bench;
pub mod composite;
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
pub mod knobs;
pub mod link;
pub mod mask;
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
#[cfg(feature = "webrtc")]
pub mod webrtc;

pub use error::{Error, Result};
