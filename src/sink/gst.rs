//! GStreamer encoding sinks: H.264 into a file (MP4 / MKV / MOV, with the source's audio re-muxed) or into an
//! MPEG-TS network stream (UDP or SRT) that OBS's Media Source opens.
//!
//! `video/x-raw,format=I420` goes before the encoder: x264 would otherwise pick 4:4:4 from RGB input, which
//! many players refuse. Finishing sends end-of-stream and waits for it to reach the muxer, so the file is
//! complete (an MP4's index is written then) even when the run was interrupted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::{Sink, SinkContext, StreamEnd, compose};
use crate::config::{Host, StreamUrl, View};
use crate::error::{Error, Result};
use crate::frame::{Fps, Processed};
use crate::media::{self, bus_error, init, set_enum};
use crate::source::AudioTrack;
use crate::source::gst::AudioTap;

/// Frames the encoder's input may hold.
const QUEUED_FRAMES: u64 = 3;

/// How long finishing may wait for the muxer to write out the end of the file.
const EOS_TIMEOUT: Duration = Duration::from_secs(60);

pub struct EncodeSink {
    name: String,
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    info: gst_video::VideoInfo,
    view: View,
    frame_duration: Duration,
    live: bool,
    started: Option<Instant>,
    /// End of the last video frame (ns), where recorded audio is cut when the run stops early.
    video_end_ns: Arc<AtomicU64>,
    audio: Option<JoinHandle<()>>,
    /// A recording: where it goes, and when it was last synced to disk.
    file: Option<RecordingFile>,
    /// Where the recording's time starts (nothing to re-mux before its first frame).
    timeline: Arc<Timeline>,
    /// The pipeline reported this error: it will not finish normally.
    broken: Option<String>,
    finished: bool,
    /// A WHEP sink's viewers: they leave when it finishes.
    #[cfg(feature = "webrtc")]
    whep: Option<Arc<crate::webrtc::WhepHub>>,
}

struct RecordingFile {
    path: std::path::PathBuf,
    /// The muxer: `mp4mux` and `qtmux` write fragments and re-mux to a plain file at the end; `matroskamux`
    /// needs no end step.
    mux: &'static str,
    last_sync: Instant,
    /// The file the muxer writes, as the filesystem knows it: a file put in its place by another program (or
    /// removed) is noticed, instead of recording on into a file nobody can find.
    id: Option<crate::paths::FileId>,
}

impl RecordingFile {
    /// The recording is still the file at its path.
    fn still_there(&self) -> Result<()> {
        match crate::paths::FileId::of(&self.path) {
            now if now == self.id || self.id.is_none() => Ok(()),
            None => Err(Error::write(
                &self.path,
                crate::error::because("it was removed by another program while latentcam recorded into it"),
            )),
            Some(_) => Err(Error::write(
                &self.path,
                crate::error::because(
                    "another program put a different file in its place while latentcam recorded into it: this \
                     run's video is not in that file",
                ),
            )),
        }
    }
}

/// No frame written yet.
const NOT_YET: u64 = u64::MAX;

/// How often a recording is synced to disk: a power cut loses at most about this much.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// MP4/MOV fragment length, MKV cluster length: a crash loses at most about this much.
const FRAGMENT: Duration = Duration::from_secs(1);

/// Make a recording survive a crash (SIGKILL, power cut, panic): what was written plays up to its last complete
/// fragment.
/// - MP4/MOV: fragmented MP4 with the `moov` first (`ftyp moov` then a `moof`+`mdat` every second), what OBS
///   records by default too. qtmux's `first-moov-then-finalise` mode would end in a plain MP4, but with an audio
///   track a killed file of that mode decodes only its first fragment (measured), so the file stays fragmented
///   at a clean end as well; every current player and editor reads fragmented MP4.
/// - MKV: a cluster at least every second; Matroska plays up to the last complete cluster without its index.
fn crash_safe(mux: &gst::Element, ext: &str) {
    let fragment_ms = u32::try_from(FRAGMENT.as_millis()).unwrap_or(1000);
    match ext {
        "mkv" => mux.set_property("max-cluster-duration", i64::try_from(FRAGMENT.as_nanos()).unwrap_or(i64::MAX)),
        _ => {
            mux.set_property("fragment-duration", fragment_ms);
            set_enum(mux, "fragment-mode", "dash-or-mss");
        }
    }
}

/// Frames in one second at the sink's rate (30 when the rate is unknown).
fn key_interval(context: &SinkContext) -> u32 {
    let fps = context.fps.map_or(30.0, Fps::as_f64);
    fps.round().clamp(1.0, 1000.0) as u32
}

fn make(factory: &str, sink_name: &str) -> Result<gst::Element> {
    media::element(factory, &|problem| Error::Sink { sink: sink_name.to_string(), problem })
}

impl EncodeSink {
    pub fn file(
        path: &Path,
        view: View,
        context: &SinkContext,
        audio: Option<AudioTrack>,
        quality: u32,
    ) -> Result<EncodeSink> {
        init()?;
        let name = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let mux_factory = match ext.as_str() {
            "mkv" => "matroskamux",
            "mov" => "qtmux",
            _ => "mp4mux",
        };
        let mux = make(mux_factory, &name)?;
        crash_safe(&mux, &ext);
        // An existing output is replaced by a new file, not written over: another name for the old file (a
        // hard link) keeps what it had.
        if path.is_file() {
            std::fs::remove_file(path).map_err(|e| Error::Output {
                path: path.to_path_buf(),
                problem: format!("cannot replace it: {}", crate::paths::plain_io_error(&e)),
            })?;
        }
        let filesink = make("filesink", &name)?;
        filesink.set_property("location", path.to_string_lossy().as_ref());
        // Each finished fragment goes to the file at once, not into a 64 KB buffer.
        set_enum(&filesink, "buffer-mode", "unbuffered");
        let encoder = make("x264enc", &name)?;
        set_enum(&encoder, "speed-preset", "veryfast");
        set_enum(&encoder, "pass", "qual");
        encoder.set_property("quantizer", quality);
        // A keyframe every second: fragments (and MKV clusters) close every second, each starting with one.
        encoder.set_property("key-int-max", key_interval(context));
        // No B-frames: fragmented MP4 carries no edit list, and with reordering GStreamer's demuxer drops the
        // last frames past the duration (239 of 241 decoded, measured); every frame out is the promise.
        encoder.set_property("bframes", 0u32);
        let (pipeline, video, info) = video_chain(&name, context, false, encoder, &mux)?;
        pipeline.add(&filesink).map_err(|e| Error::Sink { sink: name.clone(), problem: e.to_string() })?;
        mux.link(&filesink).map_err(|e| Error::Sink { sink: name.clone(), problem: e.to_string() })?;
        let video_end_ns = Arc::new(AtomicU64::new(0));
        let timeline = Arc::new(Timeline::new(mux_factory != "matroskamux"));
        let audio = match audio {
            Some(track) => audio_branch(&name, &pipeline, &mux, track.inner, video_end_ns.clone(), timeline.clone())?,
            None => None,
        };
        let mut sink = EncodeSink::new(name, pipeline, video, info, view, context, video_end_ns, audio, timeline);
        sink.file =
            Some(RecordingFile { path: path.to_path_buf(), mux: mux_factory, last_sync: Instant::now(), id: None });
        sink.start()?;
        // The file sink has opened (created) the file by now.
        if let Some(file) = sink.file.as_mut() {
            file.id = crate::paths::FileId::of(path);
        }
        Ok(sink)
    }

    pub fn stream(url: &StreamUrl, view: View, context: &SinkContext, bitrate_kbps: u32) -> Result<EncodeSink> {
        init()?;
        let parsed = url;
        let url = &url.to_string();
        resolve(parsed).map_err(|problem| Error::Sink { sink: url.clone(), problem })?;
        let mux = make("mpegtsmux", url)?;
        // 7 TS packets (1316 bytes) per network packet: SRT's live payload size, and no IP fragmentation on UDP.
        mux.set_property("alignment", 7i32);
        let encoder = make("x264enc", url)?;
        set_enum(&encoder, "tune", "zerolatency");
        set_enum(&encoder, "speed-preset", "ultrafast");
        encoder.set_property("bitrate", bitrate_kbps);
        // A keyframe (with SPS/PPS, see h264parse below) every second: a viewer joining mid-stream waits at
        // most that long for a picture.
        encoder.set_property("key-int-max", key_interval(context));
        let net = match &parsed {
            StreamUrl::Udp { host, port } => {
                let udp = make("udpsink", url)?;
                udp.set_property("host", host.to_string());
                udp.set_property("port", i32::from(*port));
                udp
            }
            StreamUrl::Srt { host, port } => {
                let srt = make("srtsink", url)?;
                let uri = match host {
                    None => format!("srt://0.0.0.0:{port}?mode=listener"),
                    Some(host) => format!("srt://{host}:{port}?mode=caller"),
                };
                srt.set_property("uri", uri.as_str());
                // Do not hold the pipeline until a viewer connects.
                srt.set_property("wait-for-connection", false);
                srt
            }
        };
        net.set_property("sync", false);
        net.set_property("async", false);
        let (pipeline, video, info) = video_chain(url, context, true, encoder, &mux)?;
        pipeline.add(&net).map_err(|e| Error::Sink { sink: url.clone(), problem: e.to_string() })?;
        mux.link(&net).map_err(|e| Error::Sink { sink: url.clone(), problem: e.to_string() })?;
        let timeline = Arc::new(Timeline::new(false));
        let mut sink =
            EncodeSink::new(url.clone(), pipeline, video, info, view, context, Arc::default(), None, timeline);
        sink.start()?;
        Ok(sink)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        pipeline: gst::Pipeline,
        video: gst_app::AppSrc,
        info: gst_video::VideoInfo,
        view: View,
        context: &SinkContext,
        video_end_ns: Arc<AtomicU64>,
        audio: Option<JoinHandle<()>>,
        timeline: Arc<Timeline>,
    ) -> EncodeSink {
        let frame_duration = context.fps.map_or(Duration::from_millis(40), Fps::frame_duration);
        EncodeSink {
            name,
            pipeline,
            video,
            info,
            view,
            frame_duration,
            live: context.live,
            started: None,
            video_end_ns,
            audio,
            file: None,
            timeline,
            broken: None,
            finished: false,
            #[cfg(feature = "webrtc")]
            whep: None,
        }
    }

    /// H.264 for WHEP viewers (`crate::webrtc`): constrained baseline at zero latency into a tee, each viewer a
    /// branch of it; a fakesink keeps the pipeline running (and its end of stream) while nobody watches.
    #[cfg(feature = "webrtc")]
    pub fn whep(
        view: View,
        context: &SinkContext,
        hub: Arc<crate::webrtc::WhepHub>,
        max_viewers: u32,
    ) -> Result<EncodeSink> {
        init()?;
        let name = "whep";
        let bad = |e: &dyn std::fmt::Display| Error::Sink { sink: name.into(), problem: e.to_string() };
        // Constrained baseline (what every browser decodes), a key frame every second, no B-frames.
        let encoder = gst::parse::bin_from_description(
            &format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={} bframes=0 ! \
                 capsfilter caps=video/x-h264,profile=constrained-baseline",
                key_interval(context)
            ),
            true,
        )
        .map_err(|e| bad(&e))?;
        let tee = make("tee", name)?;
        tee.set_property("allow-not-linked", true);
        let (pipeline, video, info) = video_chain(name, context, true, encoder.upcast(), &tee)?;
        let idle = make("queue", name)?;
        idle.set_property_from_str("leaky", "downstream");
        let fakesink = make("fakesink", name)?;
        fakesink.set_property("sync", false);
        fakesink.set_property("async", false);
        pipeline.add_many([&idle, &fakesink]).map_err(|e| bad(&e))?;
        gst::Element::link_many([&tee, &idle, &fakesink]).map_err(|e| bad(&e))?;
        let timeline = Arc::new(Timeline::new(false));
        let mut sink =
            EncodeSink::new(name.into(), pipeline.clone(), video, info, view, context, Arc::default(), None, timeline);
        sink.start()?;
        hub.attach(pipeline, tee, max_viewers);
        sink.whep = Some(hub);
        Ok(sink)
    }

    fn start(&mut self) -> Result<()> {
        self.pipeline.set_state(gst::State::Playing).map_err(|_| Error::Sink {
            sink: self.name.clone(),
            problem: bus_error(&self.pipeline).unwrap_or_else(|| "cannot start the encoder".into()),
        })?;
        Ok(())
    }

    /// Offline backpressure: wait until the encoder has room for a frame, or the pipeline has failed.
    fn wait_for_room(&mut self) -> Result<()> {
        while self.video.current_level_buffers() >= QUEUED_FRAMES {
            if let Some(problem) = bus_error(&self.pipeline) {
                self.broken = Some(problem.clone());
                return Err(self.failed(&problem));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// The error for a failure while writing: the bus's message when there is one (a file sink's names the
    /// file and the OS error: "No space left on device", "File too large").
    fn failed(&mut self, what: &str) -> Error {
        // The first error is the cause (a muxer's "could not multiplex" follows a file sink's "File too large").
        let problem = self.broken.clone().or_else(|| bus_error(&self.pipeline)).unwrap_or_else(|| what.to_string());
        self.broken = Some(problem.clone());
        match &self.file {
            Some(file) => Error::write(&file.path, crate::error::because(problem)),
            None => Error::Sink { sink: self.name.clone(), problem },
        }
    }

    /// Sync a recording to disk every [`SYNC_INTERVAL`]: fragments already written survive a power cut.
    fn sync_now_and_then(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        if file.last_sync.elapsed() < SYNC_INTERVAL {
            return Ok(());
        }
        file.last_sync = Instant::now();
        if let Err(e) = file.still_there() {
            self.broken = Some(e.chain_text());
            return Err(e);
        }
        // fsync through any descriptor flushes the file's data (Linux syncs the inode, not the descriptor).
        std::fs::File::open(&file.path).and_then(|f| f.sync_data()).map_err(|e| Error::write(&file.path, e))
    }
}

/// The largest even size within `width`×`height`: 4:2:0 chroma covers 2×2 pixels, and x264 refuses odd sides
/// in it (a 641x361 video plays everywhere, so it is written as 640x360 rather than refused).
fn even_size(width: u32, height: u32) -> (u32, u32) {
    ((width & !1).max(2), (height & !1).max(2))
}

/// `appsrc ! videoconvert ! video/x-raw,format=I420 ! <encoder> ! h264parse ! <mux>` in a new pipeline.
fn video_chain(
    name: &str,
    context: &SinkContext,
    live: bool,
    encoder: gst::Element,
    mux: &gst::Element,
) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_video::VideoInfo)> {
    // 0/1: a variable rate, as GStreamer writes it.
    let fps = context.fps.map_or(gst::Fraction::new(0, 1), |f| {
        gst::Fraction::new(i32::try_from(f.num()).unwrap_or(i32::MAX), i32::try_from(f.den()).unwrap_or(i32::MAX))
    });
    let (width, height) = even_size(context.width, context.height);
    if (width, height) != (context.width, context.height) {
        tracing::info!(
            sink = name,
            "H.264 in 4:2:0 (what every player takes) needs even sides: the {}x{} frames are written as {width}x{height} \
             (their last column or row is cut)",
            context.width,
            context.height
        );
    }
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
        .fps(fps)
        .build()
        .map_err(|e| Error::Sink { sink: name.to_string(), problem: format!("bad video format: {e}") })?;
    let caps = info.to_caps().map_err(|e| Error::Sink { sink: name.to_string(), problem: e.to_string() })?;
    let appsrc = gst_app::AppSrc::builder()
        .name("video")
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(live)
        // Offline the writer waits for room itself (backpressure, nothing lost, see `wait_for_room`); live the
        // newest frames are kept. Never `block`: a pipeline that failed downstream would block the push forever.
        .block(false)
        .max_buffers(QUEUED_FRAMES)
        .leaky_type(if live { gst_app::AppLeakyType::Downstream } else { gst_app::AppLeakyType::None })
        .build();
    let convert = make("videoconvert", name)?;
    let i420 = make("capsfilter", name)?;
    i420.set_property("caps", gst::Caps::builder("video/x-raw").field("format", "I420").build());
    let parse = make("h264parse", name)?;
    if live {
        // Repeat SPS/PPS so a viewer can join mid-stream.
        parse.set_property("config-interval", -1i32);
    }
    let queue = make("queue", name)?;
    let pipeline = gst::Pipeline::with_name("latentcam-encode");
    media::add_and_link(&pipeline, &[appsrc.upcast_ref(), &convert, &i420, &encoder, &parse, &queue, mux])
        .map_err(|e| Error::Sink { sink: name.to_string(), problem: format!("cannot build the encoder: {e}") })?;
    Ok((pipeline, appsrc, info))
}

/// The source's audio into the muxer: as it is when the container takes it, else re-encoded to AAC. Returns
/// the thread that feeds it.
fn audio_branch(
    name: &str,
    pipeline: &gst::Pipeline,
    mux: &gst::Element,
    tap: AudioTap,
    video_end_ns: Arc<AtomicU64>,
    timeline: Arc<Timeline>,
) -> Result<Option<JoinHandle<()>>> {
    let Some(mux_pad) = mux.request_pad_simple("audio_%u") else {
        tracing::warn!(sink = name, "the container takes no audio; dropping it");
        return Ok(None);
    };
    let appsrc = gst_app::AppSrc::builder()
        .name("audio")
        .caps(&tap.caps)
        .format(gst::Format::Time)
        .max_bytes(0)
        .block(false)
        .build();
    let queue = make("queue", name)?;
    let bad = |problem: String| Error::Sink { sink: name.to_string(), problem: format!("audio: {problem}") };
    if mux_pad.query_accept_caps(&tap.caps) {
        tracing::info!(sink = name, caps = %tap.caps, "audio re-muxed as it is");
        media::add_and_link(pipeline, &[appsrc.upcast_ref(), &queue]).map_err(bad)?;
    } else {
        tracing::info!(sink = name, caps = %tap.caps, "container does not take this audio: re-encoding to AAC");
        let decode = make("decodebin", name)?;
        let convert = make("audioconvert", name)?;
        let resample = make("audioresample", name)?;
        let encode = make("avenc_aac", name)?;
        let parse = make("aacparse", name)?;
        media::add_and_link(pipeline, &[appsrc.upcast_ref(), &decode]).map_err(bad)?;
        media::add_and_link(pipeline, &[&convert, &resample, &encode, &parse, &queue]).map_err(bad)?;
        let convert_weak = convert.downgrade();
        decode.connect_pad_added(move |_, pad| {
            if let Some(convert) = convert_weak.upgrade()
                && let Some(sink) = convert.static_pad("sink")
                && !sink.is_linked()
            {
                let _ = pad.link(&sink);
            }
        });
    }
    let queue_src = queue.static_pad("src").ok_or_else(|| bad("the queue has no src pad".into()))?;
    queue_src.link(&mux_pad).map_err(|e| bad(format!("cannot mux it: {e:?}")))?;

    let thread = std::thread::Builder::new()
        .name("sink:audio".into())
        .spawn(move || pump_audio(tap, appsrc, &video_end_ns, &timeline))
        .map_err(|e| bad(format!("cannot start its thread: {e}")))?;
    Ok(Some(thread))
}

/// Flags `finish` sets in `video_end_ns`'s top bits.
/// The run stopped early: end the audio where the video ends.
const CUT: u64 = 1 << 63;
/// The stream ended: pass on all the audio there is.
const DRAIN: u64 = 1 << 62;
const FLAGS: u64 = CUT | DRAIN;
/// Audio may run this far ahead of the video written so far (so a cut lands near the video's end).
const AUDIO_LEAD_NS: u64 = 100_000_000;
/// After the stream ended, give up on audio that does not come within this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Feed the source's audio to the muxer on the recording's timeline, paced by the video: never more than
/// `AUDIO_LEAD_NS` ahead of it.
fn pump_audio(tap: AudioTap, appsrc: gst_app::AppSrc, video_end_ns: &AtomicU64, timeline: &Timeline) {
    let mut pending = tap.first.clone();
    let mut idle_since = Instant::now();
    loop {
        let sample = match pending.take() {
            Some(s) => s,
            None => match tap.sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
                Some(sample) => {
                    idle_since = Instant::now();
                    sample
                }
                None => {
                    let state = video_end_ns.load(Ordering::SeqCst);
                    if tap.sink.is_eos()
                        || state & CUT != 0
                        || (state & DRAIN != 0 && idle_since.elapsed() > DRAIN_IDLE)
                    {
                        break;
                    }
                    continue;
                }
            },
        };
        let state = video_end_ns.load(Ordering::SeqCst);
        let Some(origin) = timeline.origin_ns() else {
            // Where the recording starts is set by its first video frame: wait for it (or for the end).
            if state & FLAGS != 0 {
                break;
            }
            pending = Some(sample);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Some(buffer) = sample.buffer() else { continue };
        // A packet that starts before the stream's start (AAC and MP3 priming) or before the recording's (audio
        // that starts before the video) is left out whole: the rest keeps its exact place, and the audio starts
        // at most one packet after the video. (A packet cannot start before zero here, and moving it to zero
        // would shift it against the video.)
        let Some(at) = crate::source::gst::running_time(&sample, buffer, false) else {
            tracing::trace!("audio before the stream's start (priming) left out");
            continue;
        };
        let Some(pts) = at.nseconds().checked_sub(origin) else { continue };
        let video_end = state & !FLAGS;
        if state & CUT != 0 && pts >= video_end {
            break;
        }
        if state & FLAGS == 0 && pts > video_end + AUDIO_LEAD_NS {
            // Ahead of the video: wait for it.
            pending = Some(sample);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut buffer = buffer.copy();
        {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::from_nseconds(pts));
        }
        timeline.wrote_audio(pts);
        if appsrc.push_buffer(buffer).is_err() {
            break;
        }
    }
    let _ = appsrc.end_of_stream();
}

/// The recording's timeline. Frames and audio arrive on the input's (edit lists applied, see
/// [`crate::source::gst::running_time`]); a recording that is `zero_based` (MP4/MOV) starts where the first
/// video frame is: every timestamp moves back by that frame's, and audio before it is left out, so no track
/// starts before the video and the first frame (a keyframe) is never cut. MKV keeps the input's timestamps.
struct Timeline {
    zero_based: bool,
    /// The first video frame's timestamp on the input's timeline (ns), `NOT_YET` before it.
    first_video_ns: AtomicU64,
    /// The first audio packet's timestamp as written (ns), `NOT_YET` before it.
    first_audio_ns: AtomicU64,
}

impl Timeline {
    fn new(zero_based: bool) -> Timeline {
        Timeline { zero_based, first_video_ns: AtomicU64::new(NOT_YET), first_audio_ns: AtomicU64::new(NOT_YET) }
    }

    /// Note a video frame's timestamp; the first one sets where the recording starts.
    fn saw_video(&self, pts_ns: u64) {
        let _ = self.first_video_ns.compare_exchange(NOT_YET, pts_ns, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// An audio packet went out at `pts_ns` (on the recording's timeline).
    fn wrote_audio(&self, pts_ns: u64) {
        let _ = self.first_audio_ns.compare_exchange(NOT_YET, pts_ns, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Where each track starts, for the re-mux.
    fn starts(&self) -> super::finalize::TrackStarts {
        let audio = self.first_audio_ns.load(Ordering::SeqCst);
        super::finalize::TrackStarts { audio_ns: (audio != NOT_YET).then_some(audio) }
    }

    fn has_video(&self) -> bool {
        self.first_video_ns.load(Ordering::SeqCst) != NOT_YET
    }

    /// What is subtracted from every timestamp; None until the first video frame came.
    fn origin_ns(&self) -> Option<u64> {
        match self.first_video_ns.load(Ordering::SeqCst) {
            NOT_YET => None,
            first if self.zero_based => Some(first),
            _ => Some(0),
        }
    }
}

impl Sink for EncodeSink {
    fn write(&mut self, frame: &Processed) -> Result<()> {
        let image = compose(frame, self.view);
        let (w, h) = image.dimensions();
        // The encoder's size is the frames' own, or one less on an odd side (see `even_size`).
        if even_size(w, h) != (self.info.width(), self.info.height()) {
            return Err(Error::Sink {
                sink: self.name.clone(),
                problem: format!(
                    "frame is {w}x{h}, the encoder was set up for {}x{}",
                    self.info.width(),
                    self.info.height()
                ),
            });
        }
        let stride = self.info.stride()[0] as usize;
        let (row_in, row) = (w as usize * 3, self.info.width() as usize * 3);
        let rows = self.info.height() as usize;
        let mut buffer = gst::Buffer::with_size(self.info.size()).map_err(|e| self.failed(&e.to_string()))?;
        {
            let Some(buffer) = buffer.get_mut() else { return Err(self.failed("a new buffer was not writable")) };
            // Timestamps: the source's (files keep their timing), or the capture clock for live streams.
            let pts = if self.live {
                let start = *self.started.get_or_insert(frame.captured);
                frame.captured.saturating_duration_since(start)
            } else {
                let on_input = frame.pts.unwrap_or_else(|| {
                    self.frame_duration.saturating_mul(u32::try_from(frame.sequence).unwrap_or(u32::MAX))
                });
                self.timeline.saw_video(u64::try_from(on_input.as_nanos()).unwrap_or(u64::MAX));
                on_input.saturating_sub(Duration::from_nanos(self.timeline.origin_ns().unwrap_or(0)))
            };
            let duration = frame.duration.unwrap_or(self.frame_duration);
            buffer.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
            buffer.set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
            self.video_end_ns.fetch_max((pts + duration).as_nanos() as u64, Ordering::SeqCst);
            if self.live {
                self.timeline.saw_video(0);
            }
            let mut map = buffer.map_writable().map_err(|e| self.failed(&e.to_string()))?;
            for (y, src) in image.as_raw().chunks_exact(row_in).take(rows).enumerate() {
                map[y * stride..y * stride + row].copy_from_slice(&src[..row]);
            }
        }
        if !self.live {
            self.wait_for_room()?;
        }
        self.video.push_buffer(buffer).map_err(|e| self.failed(&format!("encoder refused the frame: {e:?}")))?;
        self.sync_now_and_then()
    }

    fn finish(&mut self, end: StreamEnd) -> Result<()> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        #[cfg(feature = "webrtc")]
        if let Some(hub) = self.whep.take() {
            hub.detach();
        }
        self.video_end_ns.fetch_or(if end == StreamEnd::Complete { DRAIN } else { CUT }, Ordering::SeqCst);
        if let Some(audio) = self.audio.take() {
            let _ = audio.join();
        }
        let _ = self.video.end_of_stream();
        if self.broken.is_some() {
            // The failure was reported by `write`; no end-of-stream will come out of a failed pipeline. What
            // the muxer wrote before it stays (a fragmented file plays up to its last whole fragment).
            let _ = self.pipeline.set_state(gst::State::Null);
            // The file is closed now: cut off the fragment the failed write left half-written.
            // (Not when the path holds another program's file now.)
            if let Some(file) = &self.file
                && file.still_there().is_ok()
            {
                super::repair::after_failed_write(&file.path, file.mux);
            }
            return Ok(());
        }
        let result = media::wait_for_eos(&self.pipeline, EOS_TIMEOUT).map_err(|problem| match &self.file {
            Some(file) => Error::write(&file.path, crate::error::because(format!("while finishing: {problem}"))),
            None => Error::Sink { sink: self.name.clone(), problem: format!("while finishing: {problem}") },
        });
        let _ = self.pipeline.set_state(gst::State::Null);
        if result.is_err()
            && let Some(file) = &self.file
            && file.still_there().is_ok()
        {
            // A write failed while the muxer wrote the end (the last fragment): cut off what it left half-written.
            super::repair::after_failed_write(&file.path, file.mux);
        }
        result?;
        let Some(file) = &self.file else { return Ok(()) };
        // The re-mux would read (and replace) another program's file.
        file.still_there()?;
        // What the muxer wrote at the end (the MKV index, the fragment index) goes to disk too.
        std::fs::File::open(&file.path).and_then(|f| f.sync_all()).map_err(|e| Error::write(&file.path, e))?;
        if file.mux != "matroskamux" && self.timeline.has_video() {
            // The fragmented file is complete and plays; the plain one is what editors take. A failure here
            // leaves the fragmented file, so it is a warning.
            if let Err(e) = super::finalize::remux_to_plain(&file.path, file.mux, self.timeline.starts()) {
                tracing::warn!(file = %file.path.display(), error = %e, "kept the fragmented file: re-muxing to a plain one failed");
            }
        }
        Ok(())
    }
}

impl Drop for EncodeSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish(StreamEnd::Stopped) {
            tracing::warn!(sink = %self.name, error = %e, "finishing on drop failed");
        }
    }
}

/// An address that cannot be resolved is a bad sink, found before the run: a stream to nowhere sends nothing.
fn resolve(url: &StreamUrl) -> std::result::Result<(), String> {
    use std::net::ToSocketAddrs;
    match url.host() {
        Some(Host::Name(name)) => match (name.as_str(), url.port()).to_socket_addrs() {
            Ok(addrs) if addrs.len() > 0 => Ok(()),
            Ok(_) => Err(format!("host `{name}` has no address")),
            Err(e) => Err(format!("host `{name}` cannot be resolved: {e}")),
        },
        _ => Ok(()),
    }
}
