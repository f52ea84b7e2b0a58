//! Frame sources behind one trait: test pattern and image folders (always built), GStreamer files / URIs /
//! pipelines (feature `gstreamer`), cameras (feature `webcam`).

pub mod images;
pub mod test_pattern;

#[cfg(feature = "gstreamer")]
pub mod gst;
#[cfg(feature = "webcam")]
pub mod webcam;

use crate::config::{Mode, SourceConfig};
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
}

/// A source's audio, handed to the sink that records it.
pub struct AudioTrack {
    #[cfg(feature = "gstreamer")]
    pub inner: gst::AudioTap,
}

/// Open the source a pipeline file describes. `want_audio`: a sink will record audio.
pub fn open(config: &SourceConfig, mode: Mode, want_audio: bool) -> Result<Box<dyn Source>> {
    let _ = want_audio; // only GStreamer sources carry audio
    match config {
        SourceConfig::TestPattern { width, height, fps, frames } => {
            Ok(Box::new(test_pattern::TestPattern::new(*width, *height, *fps, *frames, mode == Mode::Live)))
        }
        SourceConfig::Images { path, fps, repeat } => {
            Ok(Box::new(images::ImageFolder::open(path, *fps, *repeat, mode == Mode::Live)?))
        }
        SourceConfig::Gstreamer { uri, pipeline, audio } => open_gstreamer(uri, pipeline, *audio && want_audio, mode),
        SourceConfig::Webcam { device, width, height, fps, format } => {
            open_webcam(device.as_ref(), *width, *height, *fps, *format)
        }
    }
}

#[cfg(feature = "gstreamer")]
fn open_gstreamer(uri: &Option<String>, pipeline: &Option<String>, audio: bool, mode: Mode) -> Result<Box<dyn Source>> {
    let input = match (uri, pipeline) {
        (Some(u), _) => gst::Input::Uri(u.clone()),
        (_, Some(p)) => gst::Input::Launch(p.clone()),
        (None, None) => unreachable!("validated by PipelineConfig"),
    };
    Ok(Box::new(gst::GstSource::open(&input, audio, mode == Mode::Live)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_gstreamer(_: &Option<String>, _: &Option<String>, _: bool, _: Mode) -> Result<Box<dyn Source>> {
    Err(not_built("gstreamer source", "gstreamer"))
}

#[cfg(feature = "webcam")]
fn open_webcam(
    device: Option<&crate::config::DeviceSelector>,
    width: u32,
    height: u32,
    fps: f64,
    format: crate::config::CameraFormat,
) -> Result<Box<dyn Source>> {
    Ok(Box::new(webcam::Webcam::open(device, width, height, fps, format)?))
}

#[cfg(not(feature = "webcam"))]
fn open_webcam(
    _: Option<&crate::config::DeviceSelector>,
    _: u32,
    _: u32,
    _: f64,
    _: crate::config::CameraFormat,
) -> Result<Box<dyn Source>> {
    Err(not_built("webcam source", "webcam"))
}

/// The error for a pipeline part whose Cargo feature is off in this build.
pub fn not_built(what: &str, feature: &str) -> Error {
    Error::InvalidParameter {
        what: "pipeline",
        problem: format!("{what} is not in this build of latentcam (rebuild with --features {feature})"),
    }
}
