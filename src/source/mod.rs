//! Frame sources behind one trait: test pattern and image folders (always built), GStreamer files / URIs /
//! pipelines (feature `gstreamer`), cameras (feature `webcam`).

pub mod camera;
pub mod images;
pub mod test_pattern;

#[cfg(feature = "gstreamer")]
pub mod gst;
#[cfg(feature = "gstreamer")]
pub mod probe;
#[cfg(feature = "webcam")]
pub mod webcam;

use crate::config::{GstInput, Mode, SourceSpec};
use crate::error::{Error, Result};
use crate::frame::{Frame, FrameFormat};

pub trait Source: Send {
    /// What the source delivers (known once it is open).
    fn format(&self) -> FrameFormat;

    /// The next frame; `Ok(None)` at end of stream. May block for up to about one frame interval.
    fn next_frame(&mut self) -> Result<Option<Frame>>;

    /// A description for logs and errors.
    fn describe(&self) -> String;

    /// How many frames the stream has, when the source can tell (progress bars).
    fn total_frames(&self) -> Option<u64> {
        None
    }

    /// The compressed audio stream to re-mux into file outputs, if the source has one and was asked for it.
    fn take_audio(&mut self) -> Option<AudioTrack> {
        None
    }

    /// Who answers WHIP publishers, for a source fed by them (served at `POST /whip`).
    fn publishers(&self) -> Option<std::sync::Arc<dyn crate::control::Peers>> {
        None
    }
}

/// A source's audio, handed to the sink that records it.
pub struct AudioTrack {
    #[cfg(feature = "gstreamer")]
    pub inner: gst::AudioTap,
}

/// A camera as the webcam source can name it (`latentcam devices` lists them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraEntry {
    pub index: u32,
    pub name: String,
    pub description: String,
}

/// Open the source a pipeline describes. `want_audio`: a sink will record audio.
pub fn open(spec: &SourceSpec, mode: Mode, want_audio: bool) -> Result<Box<dyn Source>> {
    let live = mode == Mode::Live;
    match spec {
        SourceSpec::TestPattern { width, height, fps, frames } => {
            Ok(Box::new(test_pattern::TestPattern::new(*width, *height, *fps, *frames, live)))
        }
        SourceSpec::Images { path, fps, repeat } => Ok(Box::new(images::ImageFolder::open(path, *fps, *repeat, live)?)),
        SourceSpec::Gstreamer { input, audio } => open_gstreamer(input, *audio && want_audio, live),
        SourceSpec::Webcam { .. } => open_webcam(spec),
        SourceSpec::Whip { width, height, fps, no_frame_timeout } => {
            open_whip(*width, *height, *fps, *no_frame_timeout)
        }
    }
}

#[cfg(feature = "webrtc")]
fn open_whip(width: u32, height: u32, fps: crate::frame::Fps, timeout: std::time::Duration) -> Result<Box<dyn Source>> {
    Ok(Box::new(crate::webrtc::whip::WhipSource::new(width, height, fps, timeout)?))
}

#[cfg(not(feature = "webrtc"))]
fn open_whip(_: u32, _: u32, _: crate::frame::Fps, _: std::time::Duration) -> Result<Box<dyn Source>> {
    Err(not_built("whip source", "webrtc"))
}

#[cfg(feature = "gstreamer")]
fn open_gstreamer(input: &GstInput, audio: bool, live: bool) -> Result<Box<dyn Source>> {
    Ok(Box::new(gst::GstSource::open(input, audio, live)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_gstreamer(_: &GstInput, _: bool, _: bool) -> Result<Box<dyn Source>> {
    Err(not_built("gstreamer source", "gstreamer"))
}

#[cfg(feature = "webcam")]
fn open_webcam(spec: &SourceSpec) -> Result<Box<dyn Source>> {
    Ok(Box::new(webcam::Webcam::open(spec)?))
}

#[cfg(not(feature = "webcam"))]
fn open_webcam(_: &SourceSpec) -> Result<Box<dyn Source>> {
    Err(not_built("webcam source", "webcam"))
}

/// The error for a pipeline part whose Cargo feature is off in this build.
pub fn not_built(what: &str, feature: &str) -> Error {
    Error::InvalidParameter {
        what: "pipeline",
        problem: format!("{what} is not in this build of latentcam (rebuild with --features {feature})"),
    }
}
