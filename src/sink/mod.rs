//! Frame sinks behind one trait: null and PNG files (always built), a preview window (feature `window`),
//! a v4l2loopback virtual camera (feature `v4l2`), GStreamer encoding to files and network streams (feature
//! `gstreamer`). Several at once: the engine tees every processed frame to each sink's own thread.

pub mod null;
pub mod png;

#[cfg(feature = "gstreamer")]
pub mod gst;
#[cfg(feature = "v4l2")]
pub mod v4l2;
#[cfg(feature = "window")]
pub mod window;

use std::borrow::Cow;

use image::RgbImage;

use crate::config::{SinkConfig, View};
use crate::error::Result;
use crate::frame::{Fps, Processed};
use crate::source::AudioTrack;
#[cfg(not(all(feature = "gstreamer", feature = "v4l2")))]
use crate::source::not_built;

pub trait Sink: Send {
    /// Write one frame. Called from the sink's own thread, in frame order.
    fn write(&mut self, frame: &Processed) -> Result<()>;

    /// End of stream: flush and finalize (a video file gets its index written here).
    fn finish(&mut self, end: StreamEnd) -> Result<()>;
}

/// How a run ended, for sinks that finish differently (a recording cuts its audio where the video stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The source reached its end.
    Complete,
    /// Stopped early (Ctrl-C, window closed, an error elsewhere).
    Stopped,
}

/// What every sink needs to know up front.
pub struct SinkContext {
    /// Size of the frames the sink receives (after its view is applied).
    pub width: u32,
    pub height: u32,
    pub fps: Option<Fps>,
    pub live: bool,
}

/// The size a view gives for model-sized frames.
pub fn view_size(view: View, width: u32, height: u32) -> (u32, u32) {
    match view {
        View::SideBySide => (width * 2, height),
        View::Input | View::Output => (width, height),
    }
}

/// The picture a view shows.
pub fn compose(frame: &Processed, view: View) -> Cow<'_, RgbImage> {
    match view {
        View::Output => Cow::Borrowed(&*frame.output),
        View::Input => Cow::Borrowed(&*frame.input),
        View::SideBySide => {
            let (w, h) = frame.output.dimensions();
            let mut out = RgbImage::new(w * 2, h);
            image::imageops::replace(&mut out, &*frame.input, 0, 0);
            image::imageops::replace(&mut out, &*frame.output, i64::from(w), 0);
            Cow::Owned(out)
        }
    }
}

/// Build a sink other than the window (which lives on the main thread). `audio`: the source's audio, offered to
/// sinks that record it.
pub fn open(config: &SinkConfig, context: &SinkContext, audio: Option<AudioTrack>) -> Result<Box<dyn Sink>> {
    let _ = &audio;
    match config {
        SinkConfig::Null { .. } => Ok(Box::new(null::NullSink)),
        SinkConfig::Png { dir, every, view, .. } => Ok(Box::new(png::PngSink::create(dir, *every, *view)?)),
        SinkConfig::File { path, view, audio: keep_audio, quality, .. } => {
            open_file(path, *view, context, if *keep_audio { audio } else { None }, *quality)
        }
        SinkConfig::Stream { url, view, bitrate_kbps, .. } => open_stream(url, *view, context, *bitrate_kbps),
        SinkConfig::V4l2 { device, view, .. } => open_v4l2(device, *view, context),
        SinkConfig::Window { .. } => unreachable!("the window runs on the main thread"),
    }
}

/// Cheap checks before anything heavy is loaded: can the outputs be written?
pub fn precheck(config: &SinkConfig) -> Result<()> {
    match config {
        SinkConfig::File { path, .. } => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let bad = |problem: String| crate::error::Error::Output { path: path.clone(), problem };
            if path.is_dir() {
                return Err(bad("is a folder".into()));
            }
            if !dir.is_dir() {
                return Err(bad(format!("folder {} does not exist", dir.display())));
            }
            tempfile::Builder::new()
                .prefix(".latentcam-")
                .tempfile_in(&dir)
                .map(drop)
                .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))
        }
        SinkConfig::Png { dir, .. } => std::fs::create_dir_all(dir)
            .map_err(|e| crate::error::Error::Output { path: dir.clone(), problem: e.to_string() }),
        _ => Ok(()),
    }
}

/// Whether a sink records audio (the engine asks the source for audio only then).
pub fn wants_audio(config: &SinkConfig) -> bool {
    matches!(config, SinkConfig::File { audio: true, .. })
}

#[cfg(feature = "gstreamer")]
fn open_file(
    path: &std::path::Path,
    view: View,
    context: &SinkContext,
    audio: Option<AudioTrack>,
    quality: u32,
) -> Result<Box<dyn Sink>> {
    Ok(Box::new(gst::EncodeSink::file(path, view, context, audio, quality)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_file(_: &std::path::Path, _: View, _: &SinkContext, _: Option<AudioTrack>, _: u32) -> Result<Box<dyn Sink>> {
    Err(not_built("file sink", "gstreamer"))
}

#[cfg(feature = "gstreamer")]
fn open_stream(url: &str, view: View, context: &SinkContext, bitrate_kbps: u32) -> Result<Box<dyn Sink>> {
    Ok(Box::new(gst::EncodeSink::stream(url, view, context, bitrate_kbps)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_stream(_: &str, _: View, _: &SinkContext, _: u32) -> Result<Box<dyn Sink>> {
    Err(not_built("stream sink", "gstreamer"))
}

#[cfg(feature = "v4l2")]
fn open_v4l2(device: &std::path::Path, view: View, context: &SinkContext) -> Result<Box<dyn Sink>> {
    Ok(Box::new(v4l2::LoopbackSink::open(device, view, context)?))
}

#[cfg(not(feature = "v4l2"))]
fn open_v4l2(_: &std::path::Path, _: View, _: &SinkContext) -> Result<Box<dyn Sink>> {
    Err(not_built("v4l2 sink", "v4l2"))
}
