//! The clean end of an MP4/MOV recording: the fragmented file (what survives a crash) is re-muxed, without
//! re-encoding, into a plain MP4/MOV beside it, which then replaces it in one rename.
//!
//! Why: a plain MP4/MOV (`ftyp mdat moov`) is what every editor takes; the fragmented one is what survives a
//! crash. Until the rename the fragmented file is there and plays; if the re-mux fails (a full disk), it stays.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::media;

/// How long a re-mux may take (it copies the file once; hours of video take seconds to minutes).
const REMUX_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The parser a demuxed stream needs before a muxer.
fn parser_for(caps: &gst::CapsRef) -> Option<&'static str> {
    let s = caps.structure(0)?;
    match s.name().as_str() {
        "video/x-h264" => Some("h264parse"),
        "video/x-h265" => Some("h265parse"),
        "audio/mpeg" => match s.get::<i32>("mpegversion").ok()? {
            1 => Some("mpegaudioparse"),
            _ => Some("aacparse"),
        },
        "audio/x-ac3" | "audio/x-eac3" => Some("ac3parse"),
        "audio/x-opus" => Some("opusparse"),
        _ => None,
    }
}

/// Where each track of the recording starts on its timeline (the video's first frame is at zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackStarts {
    /// The first audio packet's timestamp as it was written (ns); None: no audio was written.
    pub audio_ns: Option<u64>,
}

/// Put a demuxed stream back on the recording's timeline: its segment from zero (nothing is clipped), its
/// first packet at `intended_ns` and every later one at the same distance from it as in the file.
fn restamp(pad: &gst::Pad, intended_ns: u64) {
    let first: Arc<Mutex<Option<u64>>> = Arc::default();
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        match &mut info.data {
            Some(gst::PadProbeData::Event(event)) if event.type_() == gst::EventType::Segment => {
                let segment = gst::FormattedSegment::<gst::ClockTime>::new();
                *event = gst::event::Segment::new(&segment);
            }
            Some(gst::PadProbeData::Buffer(buffer)) => {
                let Some(pts) = buffer.pts().map(gst::ClockTime::nseconds) else { return gst::PadProbeReturn::Ok };
                let first = *first.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(pts);
                let shift = |t: u64| (t + intended_ns).saturating_sub(first);
                let b = buffer.make_mut();
                b.set_pts(gst::ClockTime::from_nseconds(shift(pts)));
                if let Some(dts) = b.dts() {
                    b.set_dts(gst::ClockTime::from_nseconds(shift(dts.nseconds())));
                }
            }
            _ => {}
        }
        gst::PadProbeReturn::Ok
    });
}

/// Re-mux the fragmented `path` into a plain file with `mux_factory` (`mp4mux`, `qtmux`).
///
/// Timestamps: a fragmented MP4 starts every track at zero (mp4mux's fragmented mode writes no edit list:
/// audio that started after the video would come out early) and qtdemux reads it back with one segment that
/// starts at the latest track's start (a video frame before it would be cut: AAC made that the first video
/// frame, the only keyframe of the first second). So each stream is put back where it was written: its
/// first packet at `starts` (video at zero), the rest at the same distances, in a segment from zero; the
/// plain muxer then writes an edit list for a track that starts later.
pub fn remux_to_plain(path: &Path, mux_factory: &str, starts: TrackStarts) -> Result<(), String> {
    let dir = crate::paths::parent_folder(path);
    let temp = crate::paths::PartialFile::new(path)
        .map_err(|e| format!("cannot write in {}: {}", dir.display(), crate::paths::plain_io_error(&e)))?;
    let make = |factory: &str| gst::ElementFactory::make(factory).build().map_err(|_| media::missing_plugin(factory));
    let pipeline = gst::Pipeline::with_name("latentcam-finalize");
    let src = make("filesrc")?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let demux = make("qtdemux")?;
    let mux = make(mux_factory)?;
    let sink = make("filesink")?;
    sink.set_property("location", temp.path().to_string_lossy().as_ref());
    pipeline.add_many([&src, &demux, &mux, &sink]).map_err(|e| e.to_string())?;
    src.link(&demux).map_err(|e| e.to_string())?;
    mux.link(&sink).map_err(|e| e.to_string())?;

    let link_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (pipeline_weak, mux_weak, errors) = (pipeline.downgrade(), mux.downgrade(), link_error.clone());
    demux.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(mux)) = (pipeline_weak.upgrade(), mux_weak.upgrade()) else { return };
        let name = pad.name();
        let kind = if name.starts_with("video") { "video" } else { "audio" };
        let result = (|| -> Result<(), String> {
            let mut chain =
                vec![gst::ElementFactory::make("queue").build().map_err(|_| media::missing_plugin("queue"))?];
            // The muxer takes parsed streams; the demuxer does not always say they are.
            if let Some(parser) = pad.current_caps().as_ref().and_then(|c| parser_for(c)) {
                chain.push(gst::ElementFactory::make(parser).build().map_err(|_| media::missing_plugin(parser))?);
            }
            let refs: Vec<&gst::Element> = chain.iter().collect();
            media::add_and_link(&pipeline, &refs)?;
            for element in &chain {
                element.sync_state_with_parent().map_err(|e| e.to_string())?;
            }
            let first = chain.first().and_then(|e| e.static_pad("sink")).ok_or("no sink pad")?;
            let intended = if kind == "video" { 0 } else { starts.audio_ns.unwrap_or(0) };
            restamp(pad, intended);
            pad.link(&first).map_err(|e| format!("{e:?}"))?;
            let mux_pad = mux.request_pad_simple(&format!("{kind}_%u")).ok_or(format!("the muxer takes no {kind}"))?;
            let last = chain.last().and_then(|e| e.static_pad("src")).ok_or("no src pad")?;
            last.link(&mux_pad).map_err(|e| format!("{e:?}"))?;
            Ok(())
        })();
        if let Err(e) = result {
            errors.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(format!("{name}: {e}"));
        }
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| media::bus_error(&pipeline).unwrap_or_else(|| "cannot start the re-mux".into()))?;
    let finished = media::wait_for_eos(&pipeline, REMUX_TIMEOUT);
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(e) = link_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    finished?;
    // The recording keeps the permissions it was created with.
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(temp.path(), meta.permissions());
    }
    temp.commit().map_err(|e| format!("cannot replace the fragmented file: {e}"))
}
