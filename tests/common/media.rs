//! An independent look inside a video file (GStreamer's decodebin, not latentcam's source code): how many
//! frames, their timing, the size, and whether audio is there.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

#[derive(Debug, Default, Clone)]
pub struct MediaInfo {
    pub video_frames: u64,
    pub width: i32,
    pub height: i32,
    pub fps: Option<(i32, i32)>,
    pub first_pts_ns: Option<u64>,
    /// End of the last frame (pts + duration).
    pub video_end_ns: u64,
    /// Caps of the audio stream as it is in the file (before decoding), when there is one.
    pub audio_codec: Option<String>,
    pub audio_end_ns: u64,
    pub video_codec: Option<String>,
}

#[derive(Default)]
struct Acc {
    info: MediaInfo,
}

pub fn probe(path: &Path) -> Result<MediaInfo, String> {
    gst::init().map_err(|e| e.to_string())?;
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc").property("location", path.to_str().unwrap()).build().unwrap();
    let decode = gst::ElementFactory::make("decodebin").build().unwrap();
    pipeline.add_many([&src, &decode]).unwrap();
    src.link(&decode).unwrap();
    let acc = Arc::new(Mutex::new(Acc::default()));

    // Record the compressed formats decodebin sees.
    let acc_codec = acc.clone();
    decode.connect("autoplug-continue", false, move |args| {
        let caps = args[2].get::<gst::Caps>().unwrap();
        let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let mut acc = acc_codec.lock().unwrap();
        if name.starts_with("audio/") && name != "audio/x-raw" && acc.info.audio_codec.is_none() {
            acc.info.audio_codec = Some(caps.to_string());
        }
        if (name == "video/x-h264" || name == "video/x-h265") && acc.info.video_codec.is_none() {
            acc.info.video_codec = Some(caps.to_string());
        }
        Some(true.to_value())
    });

    let pipeline_weak = pipeline.downgrade();
    let acc_pad = acc.clone();
    decode.connect_pad_added(move |_, pad| {
        let pipeline = pipeline_weak.upgrade().unwrap();
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps.structure(0).unwrap().name().starts_with("video/");
        let sink = gst_app::AppSink::builder().sync(false).build();
        let acc = acc_pad.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().unwrap();
                    let end = buffer.pts().map(|p| p.nseconds()).unwrap_or(0)
                        + buffer.duration().map(|d| d.nseconds()).unwrap_or(0);
                    let mut acc = acc.lock().unwrap();
                    if is_video {
                        let info = &mut acc.info;
                        info.video_frames += 1;
                        info.video_end_ns = info.video_end_ns.max(end);
                        if info.first_pts_ns.is_none() {
                            info.first_pts_ns = buffer.pts().map(|p| p.nseconds());
                            let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
                            info.width = s.get("width").unwrap_or(0);
                            info.height = s.get("height").unwrap_or(0);
                            info.fps = s.get::<gst::Fraction>("framerate").ok().map(|f| (f.numer(), f.denom()));
                        }
                    } else {
                        acc.info.audio_end_ns = acc.info.audio_end_ns.max(end);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });

    pipeline.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().unwrap();
    let result = match bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error])
    {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => Err(format!("{}: {:?}", e.error(), e.debug())),
            _ => unreachable!(),
        },
        None => Err("timeout".into()),
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result?;
    let info = acc.lock().unwrap().info.clone();
    Ok(info)
}

/// Run a gst-launch `description` (a test input being made: `videotestsrc ... ! filesink location=...`) to its
/// end; panics, naming it, on an error or after 60 s.
pub fn run_to_eos(description: &str) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.as_ref().map(|m| m.view()), Some(gst::MessageView::Eos(_))), "{description}: {msg:?}");
}
