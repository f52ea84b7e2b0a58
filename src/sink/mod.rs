//! Frame sinks behind one trait: null and PNG files (always built), a preview window (feature `window`),
//! a v4l2loopback virtual camera (feature `v4l2`), GStreamer encoding to files and network streams (feature
//! `gstreamer`). Several at once: the engine tees every processed frame to each sink's own thread.

pub mod null;
pub mod png;

#[cfg(feature = "gstreamer")]
mod finalize;
#[cfg(feature = "gstreamer")]
pub mod gst;
#[cfg(feature = "window")]
pub mod overlay;
#[cfg(feature = "gstreamer")]
mod repair;
#[cfg(feature = "v4l2")]
pub mod v4l2;
#[cfg(feature = "window")]
pub mod window;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::paths::{parent_folder, probe_writable_folder};
use std::sync::{Arc, Mutex};

use image::RgbImage;

use crate::config::{SinkKind, SinkSpec, StreamUrl, View};
use crate::error::{Error, Result};
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

/// A video output device (v4l2loopback), as `latentcam devices` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopbackEntry {
    pub path: PathBuf,
    pub card: String,
}

/// The newest processed frame, for a display that shows whatever is latest (never waits, never queues).
#[derive(Default)]
pub struct LatestSlot {
    frame: Mutex<Option<Arc<Processed>>>,
}

impl LatestSlot {
    pub fn put(&self, frame: Arc<Processed>) {
        *self.frame.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame);
    }
    pub fn take(&self) -> Option<Arc<Processed>> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the window (on the main thread) needs from the running pipeline.
pub trait WindowHost {
    /// Every stage has ended: close the window.
    fn pipeline_done(&self) -> bool;
    /// The user closed the window or pressed Esc/Q: stop the run (outputs are finalized).
    fn request_stop(&self);
    /// A frame captured at `captured` was shown.
    fn delivered(&self, captured: std::time::Instant);
    /// Capture-to-sink latency, median, for the title.
    fn latency_p50_ms(&self) -> Option<f64>;
    /// Called about every 200 ms (progress, periodic statistics).
    fn tick(&mut self);
    /// Live control (the window's keys change values through it; its view follows it).
    fn control(&self) -> Option<&crate::control::ControlHub> {
        None
    }
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
    /// The run's live control, for sinks served by its HTTP server (WHEP).
    pub control: Option<std::sync::Arc<crate::control::ControlHub>>,
}

impl SinkContext {
    /// An offline job's sink for frames of `format` (no live control).
    pub fn offline(format: crate::frame::FrameFormat) -> SinkContext {
        SinkContext { width: format.width, height: format.height, fps: format.fps, live: false, control: None }
    }
}

/// The size a view gives for model-sized frames.
pub fn view_size(view: View, width: u32, height: u32) -> (u32, u32) {
    match view {
        View::SideBySide => (width * 2, height),
        View::Input | View::Output | View::Pose | View::Mask => (width, height),
    }
}

/// The picture a view shows.
pub fn compose(frame: &Processed, view: View) -> Cow<'_, RgbImage> {
    match view {
        View::Output => Cow::Borrowed(&*frame.output),
        View::Input => Cow::Borrowed(&*frame.input),
        View::Pose => match &frame.conditioning.skeleton {
            // The skeleton is drawn on black: its lit pixels go over the input.
            Some(skeleton) if skeleton.dimensions() == frame.input.dimensions() => {
                let mut out = (*frame.input).clone();
                for (o, s) in out.pixels_mut().zip(skeleton.pixels()) {
                    if s.0 != [0, 0, 0] {
                        *o = *s;
                    }
                }
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(&*frame.input),
        },
        View::Mask => match &frame.conditioning.mask {
            Some(mask) if mask.dimensions() == frame.input.dimensions() => Cow::Owned(tint(&frame.input, mask)),
            _ => Cow::Borrowed(&*frame.input),
        },
        View::SideBySide => {
            let (w, h) = frame.output.dimensions();
            let mut out = RgbImage::new(w * 2, h);
            image::imageops::replace(&mut out, &*frame.input, 0, 0);
            image::imageops::replace(&mut out, &*frame.output, i64::from(w), 0);
            Cow::Owned(out)
        }
    }
}

/// The mask view: the input, with the area to change tinted magenta in proportion to the mask (what is kept
/// shows as it is).
fn tint(input: &RgbImage, mask: &image::GrayImage) -> RgbImage {
    const TINT: [f32; 3] = [255.0, 0.0, 255.0];
    let mut out = input.clone();
    for (o, m) in out.pixels_mut().zip(mask.pixels()) {
        let w = f32::from(m.0[0]) / 255.0 * 0.6;
        for (c, t) in o.0.iter_mut().zip(TINT) {
            *c = (f32::from(*c) * (1.0 - w) + t * w).round() as u8;
        }
    }
    out
}

/// Build a sink other than the window (which lives on the main thread). `audio`: the source's audio, offered to
/// sinks that record it.
pub fn open(spec: &SinkSpec, context: &SinkContext, audio: Option<AudioTrack>) -> Result<Box<dyn Sink>> {
    let _ = &audio;
    match &spec.kind {
        SinkKind::Null => Ok(Box::new(null::NullSink)),
        SinkKind::Png { dir, every, view } => Ok(Box::new(png::PngSink::create(dir, *every, *view)?)),
        SinkKind::File { path, view, audio: keep_audio, quality } => {
            open_file(path, *view, context, if *keep_audio { audio } else { None }, *quality)
        }
        SinkKind::Stream { url, view, bitrate_kbps } => open_stream(url, *view, context, *bitrate_kbps),
        SinkKind::V4l2 { device, view } => open_v4l2(device, *view, context),
        SinkKind::Whep { view, max_viewers } => open_whep(*view, *max_viewers, context),
        SinkKind::Window { .. } => {
            Err(Error::internal("sink::open", "the window runs on the main thread, not as a sink thread"))
        }
    }
}

/// Cheap checks before anything heavy is loaded (also what `latentcam check` runs): can the outputs be written?
pub fn precheck(spec: &SinkSpec) -> Result<()> {
    match &spec.kind {
        SinkKind::File { path, .. } => {
            if path.is_dir() {
                return Err(Error::Output { path: path.clone(), problem: "is a folder".into() });
            }
            probe_writable_folder(path, &parent_folder(path))
        }
        // The folder is created when the sink opens: the nearest existing folder above it must be writable.
        SinkKind::Png { dir, .. } if dir.exists() && !dir.is_dir() => {
            Err(Error::Output { path: dir.clone(), problem: "exists and is not a folder".into() })
        }
        SinkKind::Png { dir, .. } => {
            let existing = dir.ancestors().find(|d| d.is_dir()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            probe_writable_folder(dir, &existing)
        }
        _ => Ok(()),
    }
}

#[cfg(feature = "gstreamer")]
fn open_file(
    path: &Path,
    view: View,
    context: &SinkContext,
    audio: Option<AudioTrack>,
    quality: u32,
) -> Result<Box<dyn Sink>> {
    Ok(Box::new(gst::EncodeSink::file(path, view, context, audio, quality)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_file(_: &Path, _: View, _: &SinkContext, _: Option<AudioTrack>, _: u32) -> Result<Box<dyn Sink>> {
    Err(not_built("file sink", "gstreamer"))
}

#[cfg(feature = "gstreamer")]
fn open_stream(url: &StreamUrl, view: View, context: &SinkContext, bitrate_kbps: u32) -> Result<Box<dyn Sink>> {
    Ok(Box::new(gst::EncodeSink::stream(url, view, context, bitrate_kbps)?))
}

#[cfg(not(feature = "gstreamer"))]
fn open_stream(_: &StreamUrl, _: View, _: &SinkContext, _: u32) -> Result<Box<dyn Sink>> {
    Err(not_built("stream sink", "gstreamer"))
}

#[cfg(feature = "webrtc")]
fn open_whep(view: View, max_viewers: u32, context: &SinkContext) -> Result<Box<dyn Sink>> {
    let control = context.control.as_ref().ok_or_else(|| Error::Sink {
        sink: "whep".into(),
        problem: "served by the control server: the run needs [control] http".into(),
    })?;
    let hub = crate::webrtc::WhepHub::new();
    let sink = gst::EncodeSink::whep(view, context, hub.clone(), max_viewers)?;
    control.set_viewers(Some(std::sync::Arc::new(crate::webrtc::Served(hub))));
    Ok(Box::new(sink))
}

#[cfg(not(feature = "webrtc"))]
fn open_whep(_: View, _: u32, _: &SinkContext) -> Result<Box<dyn Sink>> {
    Err(not_built("whep sink", "webrtc"))
}

#[cfg(feature = "v4l2")]
fn open_v4l2(device: &Path, view: View, context: &SinkContext) -> Result<Box<dyn Sink>> {
    Ok(Box::new(v4l2::LoopbackSink::open(device, view, context)?))
}

#[cfg(not(feature = "v4l2"))]
fn open_v4l2(_: &Path, _: View, _: &SinkContext) -> Result<Box<dyn Sink>> {
    Err(not_built("v4l2 sink", "v4l2"))
}
