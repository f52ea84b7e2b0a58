//! GStreamer sources: a file or URI (`urisourcebin ! parsebin`, video decoded to RGB, audio kept compressed for
//! re-muxing), or any user pipeline ending in an `appsink` (RTSP, screen capture, a camera through v4l2src...).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;

use super::Source;
use super::probe::Orientation;
use crate::config::GstInput;
use crate::error::{Error, Result};
use crate::frame::{Fps, Frame, FrameFormat};
use crate::media::{self, bus_error, init};

/// How long to wait for the first frame (network sources take a while).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// Compressed audio from a source, for a file sink to re-mux.
pub struct AudioTap {
    pub caps: gst::Caps,
    /// The first sample (already pulled to learn the caps).
    pub first: Option<gst::Sample>,
    pub sink: gst_app::AppSink,
    /// The source pipeline stays up while its audio is still being read, even after the video reader is gone.
    _pipeline: Arc<PipelineOwner>,
}

/// Stops a pipeline when the last owner lets go.
struct PipelineOwner(gst::Pipeline);

impl Drop for PipelineOwner {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

pub struct GstSource {
    name: String,
    owner: Arc<PipelineOwner>,
    pipeline: gst::Pipeline,
    video: gst_app::AppSink,
    audio: Option<gst_app::AppSink>,
    format: FrameFormat,
    pending: Option<Frame>,
    sequence: u64,
    total_frames: Option<u64>,
}

fn element(factory: &str) -> Result<gst::Element> {
    media::element(factory, &|problem| Error::Source { source_name: "gstreamer".into(), problem })
}

fn rgb_caps() -> gst::Caps {
    gst::Caps::builder("video/x-raw").field("format", "RGB").build()
}

/// `path` or URI -> URI; a path must exist.
fn to_uri(text: &str) -> Result<String> {
    if text.contains("://") {
        return Ok(text.to_string());
    }
    let bad = |problem: String| Error::Source { source_name: text.to_string(), problem };
    let path = Path::new(text);
    if !path.exists() {
        return Err(bad("no such file".into()));
    }
    if path.is_dir() {
        return Err(bad("is a folder, expected a video file".into()));
    }
    if path.metadata().map(|m| m.len() == 0).unwrap_or(false) {
        return Err(bad("is empty (0 bytes)".into()));
    }
    let absolute = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
    gst::glib::filename_to_uri(&absolute, None).map(|u| u.to_string()).map_err(|e| bad(e.to_string()))
}

impl GstSource {
    pub fn open(input: &GstInput, want_audio: bool, live: bool) -> Result<GstSource> {
        init()?;
        let (name, pipeline, video, audio, pads_done) = match input {
            GstInput::Uri(text) => {
                let uri = to_uri(text)?;
                // A local file is asked first what it holds: no waiting to learn there is no video, or no audio.
                let probe = match uri.starts_with("file://") {
                    true => super::probe::probe(&uri)
                        .map_err(|problem| Error::Source { source_name: text.clone(), problem })?,
                    false => None,
                };
                let want_audio = want_audio && probe.as_ref().is_none_or(|p| p.audio.is_some());
                let orientation = probe.as_ref().map(|p| p.orientation);
                if let Some(o) = orientation.filter(|o| *o != Orientation::Upright) {
                    tracing::info!(source = %text, orientation = ?o, "the video is stored turned: frames are turned upright");
                }
                let (pipeline, video, audio, done) = uri_pipeline(&uri, want_audio, live, orientation)?;
                // Known from the probe: the audio pad, if any, is linked with the video's.
                let done = match probe {
                    Some(_) => Arc::new(AtomicBool::new(true)),
                    None => done,
                };
                (text.clone(), pipeline, video, audio, Some(done))
            }
            GstInput::Launch(description) => {
                let (pipeline, video) = launch_pipeline(description, live)?;
                (format!("pipeline `{description}`"), pipeline, video, None, None)
            }
        };
        let bad = |problem: String| Error::Source { source_name: name.clone(), problem };
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| bad(bus_error(&pipeline).unwrap_or_else(|| "cannot start the GStreamer pipeline".into())))?;
        let mut source = GstSource {
            name: name.clone(),
            owner: Arc::new(PipelineOwner(pipeline.clone())),
            pipeline,
            video,
            audio: None,
            format: FrameFormat { width: 0, height: 0, fps: None },
            pending: None,
            sequence: 0,
            total_frames: None,
        };
        // The first frame tells the format, and proves the input decodes.
        let deadline = Instant::now() + FIRST_FRAME_TIMEOUT;
        let first = loop {
            if let Some(problem) = bus_error(&source.pipeline) {
                return Err(bad(problem));
            }
            if let Some(sample) = source.video.try_pull_sample(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) {
                break sample;
            }
            if source.video.is_eos() {
                return Err(bad("contains no video frames".into()));
            }
            if Instant::now() > deadline {
                return Err(bad(format!("no video frame within {} s", FIRST_FRAME_TIMEOUT.as_secs())));
            }
        };
        let (frame, format) = source.convert(&first)?;
        source.format = format;
        source.pending = Some(frame);
        if let (Some(done), Some(audio)) = (pads_done, audio) {
            // parsebin reports when every stream is exposed; only then is "no audio pad" an answer (unless the
            // probe said there is audio: then it is linked by the time video flows, or shortly after).
            let until = Instant::now() + Duration::from_secs(5);
            let linked = || {
                source.pipeline.by_name("audio-queue").and_then(|q| q.static_pad("sink")).is_some_and(|p| p.is_linked())
            };
            while !done.load(Ordering::SeqCst) && !linked() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !linked() && done.load(Ordering::SeqCst) {
                // The probe found audio: give parsebin a moment to expose it.
                let until = Instant::now() + Duration::from_secs(2);
                while !linked() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if linked() {
                source.audio = Some(audio);
            }
        }
        source.total_frames = source.estimate_frames();
        tracing::debug!(source = %source.name, ?source.format, total = ?source.total_frames, audio = source.audio.is_some(), "opened");
        Ok(source)
    }

    fn estimate_frames(&self) -> Option<u64> {
        let duration = self.pipeline.query_duration::<gst::ClockTime>()?;
        let fps = self.format.fps?;
        Some((duration.nseconds() as f64 / 1e9 * fps.as_f64()).round() as u64)
    }

    /// A sample's pixels (any stride) as an RGB frame.
    fn convert(&mut self, sample: &gst::Sample) -> Result<(Frame, FrameFormat)> {
        let bad = |problem: String| Error::Source { source_name: self.name.clone(), problem };
        let caps = sample.caps().ok_or_else(|| bad("sample without caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(format!("unexpected caps {caps}: {e}")))?;
        let buffer = sample.buffer().ok_or_else(|| bad("sample without buffer".into()))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| bad(format!("cannot map a frame: {e}")))?;
        let (w, h) = (info.width(), info.height());
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|e| bad(e.to_string()))?;
        let row = w as usize * 3;
        let mut pixels = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            pixels.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let image = RgbImage::from_raw(w, h, pixels).ok_or_else(|| bad("frame size mismatch".into()))?;
        let fps = info.fps();
        let fps = match (u32::try_from(fps.numer()), u32::try_from(fps.denom())) {
            (Ok(n), Ok(d)) => Fps::new(n, d),
            _ => None,
        };
        let to_duration = |t: Option<gst::ClockTime>| t.map(|t| Duration::from_nanos(t.nseconds()));
        let sequence = self.sequence;
        self.sequence += 1;
        Ok((
            Frame {
                image: Arc::new(image),
                // A decoder hands on a frame that starts before the segment only when part of it is shown.
                pts: to_duration(running_time(sample, buffer, true)),
                duration: to_duration(buffer.duration()).or_else(|| fps.map(Fps::frame_duration)),
                sequence,
                captured: Instant::now(),
                conditioning: Default::default(),
            },
            FrameFormat { width: w, height: h, fps },
        ))
    }
}

impl Source for GstSource {
    fn format(&self) -> FrameFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(frame) = self.pending.take() {
            return Ok(Some(frame));
        }
        loop {
            if let Some(sample) = self.video.try_pull_sample(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) {
                return Ok(Some(self.convert(&sample)?.0));
            }
            if let Some(problem) = bus_error(&self.pipeline) {
                return Err(Error::Source { source_name: self.name.clone(), problem });
            }
            if self.video.is_eos() {
                return Ok(None);
            }
        }
    }

    fn describe(&self) -> String {
        let fps = self.format.fps.map_or("variable rate".into(), |f| format!("{f} fps"));
        format!("{} ({}x{}, {fps})", self.name, self.format.width, self.format.height)
    }

    fn total_frames(&self) -> Option<u64> {
        self.total_frames
    }

    fn take_audio(&mut self) -> Option<super::AudioTrack> {
        let sink = self.audio.take()?;
        // The caps come with the first sample; audio arrives with the first video frames.
        let first = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
        let caps = first
            .as_ref()
            .and_then(|s| s.caps_owned())
            .or_else(|| sink.static_pad("sink").and_then(|p| p.current_caps()))?;
        tracing::debug!(%caps, "audio stream");
        Some(super::AudioTrack { inner: AudioTap { caps, first, sink, _pipeline: self.owner.clone() } })
    }
}

/// A buffer's time on the stream's timeline as players show it: its timestamp through the segment it came in.
/// MP4/MOV edit lists live there (the first frame of a video with B-frames has a timestamp of two frames, and
/// an AAC track starts with priming samples before zero); Matroska and MPEG-TS segments start at zero, so their
/// timestamps pass as they are. A buffer that starts before the segment has none (players skip it, or the part
/// of it before the start), unless `partial` and it ends inside the segment: then it is at the segment's start.
pub fn running_time(sample: &gst::Sample, buffer: &gst::BufferRef, partial: bool) -> Option<gst::ClockTime> {
    let pts = buffer.pts()?;
    let Some(segment) = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>()) else { return Some(pts) };
    match segment.to_running_time(pts) {
        Some(t) => Some(t),
        None if partial
            && segment
                .start()
                .is_some_and(|start| pts < start && pts + buffer.duration().unwrap_or_default() > start) =>
        {
            segment.to_running_time(segment.start())
        }
        None => None,
    }
}

fn video_appsink(live: bool) -> gst_app::AppSink {
    // Offline: a short blocking queue (backpressure to the decoder, nothing dropped). Live: the newest frame.
    gst_app::AppSink::builder()
        .name("video")
        .caps(&rgb_caps())
        .max_buffers(if live { 1 } else { 2 })
        .drop(live)
        .sync(false)
        .build()
}

/// Whether parsebin's stream of these caps is video. Compressed video is `video/...` (H.264, VP8, ...), but
/// Motion-JPEG, what many cameras record, is `image/jpeg`, and PNG- or GIF-coded video is `image/png`,
/// `image/gif`: all decode to video frames.
fn is_video_stream(caps_name: &str) -> bool {
    caps_name.starts_with("video/") || caps_name.starts_with("image/")
}

type UriParts = (gst::Pipeline, gst_app::AppSink, Option<gst_app::AppSink>, Arc<AtomicBool>);

/// `orientation`: how the file says its video is turned (None: not known up front; `videoflip` then follows
/// the stream's `image-orientation` tag as it comes).
fn uri_pipeline(uri: &str, want_audio: bool, live: bool, orientation: Option<Orientation>) -> Result<UriParts> {
    let pipeline = gst::Pipeline::with_name("latentcam-source");
    let src = element("urisourcebin")?;
    src.set_property("uri", uri);
    let parse = element("parsebin")?;
    // Each stream gets its own queue (its own thread): the demuxer pushes audio and video from one thread, and
    // a stream that blocks (a sink waiting to preroll, our reader pausing) must not stall the other.
    let video_queue = element("queue")?;
    let audio_queue = element("queue")?;
    audio_queue.set_property("name", "audio-queue");
    for (prop, value) in [("max-size-buffers", 0u32), ("max-size-bytes", 0u32)] {
        audio_queue.set_property(prop, value);
    }
    audio_queue.set_property("max-size-time", 0u64);
    let decode = element("decodebin")?;
    let convert = element("videoconvert")?;
    // Phones store portrait video as landscape pixels plus a rotation to apply: the frames are turned upright
    // here, so every stage (pose, diffusion, sinks) sees what a player shows.
    let flip = element("videoflip")?;
    flip.set_property_from_str("video-direction", orientation.map_or("auto", Orientation::video_direction));
    let video = video_appsink(live);
    let audio = want_audio.then(|| {
        // Compressed audio is small: an unbounded queue here cannot stall the demuxer. Not async: a file
        // without audio leaves this sink unlinked, and it must not hold up the pipeline's start.
        let sink = gst_app::AppSink::builder().name("audio").max_buffers(0).drop(false).sync(false).build();
        sink.set_async(false);
        sink
    });
    let bad = |problem: String| Error::Source { source_name: uri.to_string(), problem };
    pipeline.add_many([&src, &parse]).map_err(|e| bad(e.to_string()))?;
    media::add_and_link(&pipeline, &[&video_queue, &decode]).map_err(bad)?;
    media::add_and_link(&pipeline, &[&convert, &flip, video.upcast_ref()]).map_err(bad)?;
    if let Some(a) = &audio {
        media::add_and_link(&pipeline, &[&audio_queue, a.upcast_ref()]).map_err(bad)?;
    }

    let parse_weak = parse.downgrade();
    src.connect_pad_added(move |_, pad| {
        if let Some(parse) = parse_weak.upgrade()
            && let Some(sink) = parse.static_pad("sink")
            && !sink.is_linked()
        {
            let _ = pad.link(&sink);
        }
    });

    let done = Arc::new(AtomicBool::new(false));
    let state = Arc::new(Mutex::new((false, false))); // (video linked, audio linked)
    let pipeline_weak = pipeline.downgrade();
    let video_queue_weak = video_queue.downgrade();
    let audio_weak = audio.as_ref().map(|_| audio_queue.downgrade());
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let mut linked = state.lock().unwrap_or_else(|p| p.into_inner());
        let target = if is_video_stream(&kind) && !linked.0 {
            linked.0 = true;
            video_queue_weak.upgrade().and_then(|q| q.static_pad("sink"))
        } else if kind.starts_with("audio/") && !linked.1 && audio_weak.is_some() {
            linked.1 = true;
            audio_weak.as_ref().and_then(|a| a.upgrade()).and_then(|a| a.static_pad("sink"))
        } else {
            None
        };
        match target {
            Some(sink) => {
                if let Err(e) = pad.link(&sink) {
                    tracing::warn!(%kind, error = ?e, "cannot link stream");
                }
            }
            None => {
                // Streams we do not use (extra audio, subtitles, ...) still need a consumer.
                if let Ok(fake) =
                    gst::ElementFactory::make("fakesink").property("async", false).property("sync", false).build()
                    && pipeline.add(&fake).is_ok()
                {
                    let _ = fake.sync_state_with_parent();
                    if let Some(sink) = fake.static_pad("sink") {
                        let _ = pad.link(&sink);
                    }
                }
            }
        }
    });
    let done_flag = done.clone();
    parse.connect_no_more_pads(move |_| done_flag.store(true, Ordering::SeqCst));

    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .unwrap_or_else(|| pad.query_caps(None))
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if is_video
            && let Some(convert) = convert_weak.upgrade()
            && let Some(sink) = convert.static_pad("sink")
            && !sink.is_linked()
        {
            let _ = pad.link(&sink);
        }
    });
    Ok((pipeline, video, audio, done))
}

fn launch_pipeline(description: &str, live: bool) -> Result<(gst::Pipeline, gst_app::AppSink)> {
    let bad = |problem: String| Error::Source { source_name: format!("pipeline `{description}`"), problem };
    let element = gst::parse::launch(description).map_err(|e| bad(format!("bad GStreamer pipeline: {e}")))?;
    let pipeline = match element.downcast::<gst::Pipeline>() {
        Ok(p) => p,
        Err(single) => {
            let p = gst::Pipeline::new();
            p.add(&single).map_err(|e| bad(e.to_string()))?;
            p
        }
    };
    let sink = pipeline
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find_map(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| bad("must end in an appsink (e.g. `... ! videoconvert ! appsink`)".into()))?;
    sink.set_caps(Some(&rgb_caps()));
    sink.set_max_buffers(if live { 1 } else { 2 });
    sink.set_drop(live);
    sink.set_sync(false);
    Ok((pipeline, sink))
}
