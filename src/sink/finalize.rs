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

/// Re-mux the fragmented `path` into a plain file with `mux_factory` (`mp4mux`, `qtmux`).
pub fn remux_to_plain(path: &Path, mux_factory: &str) -> Result<(), String> {
    let dir = crate::paths::parent_folder(path);
    let temp = tempfile::Builder::new()
        .prefix(".latentcam-")
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
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
    temp.as_file().sync_all().map_err(|e| format!("cannot sync the re-muxed file: {e}"))?;
    // The temporary file is private (0600); the recording keeps the permissions it was created with.
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(temp.path(), meta.permissions());
    }
    temp.persist(path).map_err(|e| format!("cannot replace the fragmented file: {}", e.error))?;
    Ok(())
}
