//! WHIP ingest: a publisher (OBS 30+'s WHIP output, a browser, any WHIP client) POSTs its SDP offer to `/whip` on
//! the control server, with the control token; its video becomes the pipeline's input. One publisher at a time
//! (a second gets 409); DELETE ends it, and so does a connection that fails. While nobody publishes the source
//! waits for the next one, up to its no-frame timeout.
//!
//! Each publisher gets a pipeline of its own: `webrtcbin`, and for each stream it sends a `decodebin` (H.264,
//! VP8, whatever GStreamer decodes) then `videoconvert ! videoscale ! RGB at the source's size ! appsink`; audio
//! is received and dropped (not yet carried to the sinks).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use super::{LATENCY_MS, element, negotiate, new_id};
use crate::control::{PeerError, Peers};
use crate::error::{Error, Result};
use crate::frame::{Fps, Frame, FrameFormat};
use crate::source::Source;

/// The publishers' side of a WHIP source.
pub struct WhipHub {
    format: FrameFormat,
    frames: Sender<image::RgbImage>,
    publisher: Mutex<Option<Publisher>>,
}

struct Publisher {
    id: String,
    pipeline: gst::Pipeline,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The hub as the control server sees it.
pub struct Served(pub Arc<WhipHub>);

impl Peers for Served {
    fn offer(&self, sdp: &str) -> std::result::Result<(String, String), PeerError> {
        self.0.publish(sdp)
    }
    fn delete(&self, id: &str) -> bool {
        self.0.end(id)
    }
}

impl WhipHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Publisher>> {
        self.publisher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a publisher's offer (blocking, up to a few seconds): its id and the answer.
    pub fn publish(self: &Arc<Self>, sdp: &str) -> std::result::Result<(String, String), PeerError> {
        let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|_| PeerError::BadOffer("the body is not an SDP offer".into()))?;
        if !sdp.lines().any(|l| l.starts_with("m=video")) {
            return Err(PeerError::BadOffer("the offer sends no video".into()));
        }
        let mut guard = self.lock();
        if let Some(live) = guard.as_ref() {
            return Err(PeerError::Busy(format!(
                "another publisher is live (/whip/{}…): it must DELETE its resource first",
                &live.id[..8]
            )));
        }
        let id = new_id();
        let pipeline = gst::Pipeline::with_name("latentcam-whip");
        let webrtc = element("webrtcbin").map_err(PeerError::Failed)?;
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        webrtc.set_property("latency", LATENCY_MS);
        pipeline.add(&webrtc).map_err(|e| PeerError::Failed(e.to_string()))?;
        let (format, frames) = (self.format, self.frames.clone());
        let weak = pipeline.downgrade();
        webrtc.connect_pad_added(move |_, pad| {
            if let Some(pipeline) = weak.upgrade()
                && let Err(e) = receive(&pipeline, pad, format, frames.clone())
            {
                tracing::warn!("WHIP: a stream of the publisher cannot be received: {e}");
            }
        });
        let hub = Arc::downgrade(self);
        let leaving = id.clone();
        webrtc.connect_notify(Some("connection-state"), move |webrtc, _| {
            use gst_webrtc::WebRTCPeerConnectionState as State;
            let state = webrtc.property::<State>("connection-state");
            if matches!(state, State::Failed | State::Closed)
                && let Some(hub) = hub.upgrade()
            {
                let id = leaving.clone();
                std::thread::spawn(move || {
                    if hub.end(&id) {
                        tracing::info!("WHIP publisher's connection ended: waiting for the next one");
                    }
                });
            }
        });
        pipeline.set_state(gst::State::Playing).map_err(|e| PeerError::Failed(e.to_string()))?;
        let answer = negotiate(&webrtc, message, false)?;
        *guard = Some(Publisher { id: id.clone(), pipeline });
        tracing::info!("WHIP publisher connected");
        Ok((id, answer))
    }

    /// End the publisher `id` (DELETE, or its connection failed); false when it is not the live one.
    pub fn end(&self, id: &str) -> bool {
        let mut guard = self.lock();
        if guard.as_ref().is_some_and(|p| p.id == id) {
            *guard = None;
            true
        } else {
            false
        }
    }
}

/// One stream from the publisher: video decoded to RGB at the source's size into `frames`, anything else dropped.
fn receive(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    format: FrameFormat,
    frames: Sender<image::RgbImage>,
) -> std::result::Result<(), String> {
    let media = pad.current_caps().and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()));
    if media.as_deref() != Some("video") {
        let drop = element("fakesink")?;
        pipeline.add(&drop).map_err(|e| e.to_string())?;
        drop.sync_state_with_parent().map_err(|e| e.to_string())?;
        return pad.link(&drop.static_pad("sink").ok_or("no sink pad")?).map(drop_ok).map_err(|e| e.to_string());
    }
    let decode = element("decodebin")?;
    pipeline.add(&decode).map_err(|e| e.to_string())?;
    let weak = pipeline.downgrade();
    decode.connect_pad_added(move |_, decoded| {
        let Some(pipeline) = weak.upgrade() else { return };
        if let Err(e) = to_frames(&pipeline, decoded, format, frames.clone()) {
            tracing::warn!("WHIP: the publisher's video cannot be converted: {e}");
        }
    });
    decode.sync_state_with_parent().map_err(|e| e.to_string())?;
    pad.link(&decode.static_pad("sink").ok_or("decodebin has no sink pad")?).map(drop_ok).map_err(|e| e.to_string())
}

fn drop_ok(_: gst::PadLinkSuccess) {}

/// Decoded video -> RGB at the source's size -> `frames` (the newest kept when the pipeline is behind).
fn to_frames(
    pipeline: &gst::Pipeline,
    decoded: &gst::Pad,
    format: FrameFormat,
    frames: Sender<image::RgbImage>,
) -> std::result::Result<(), String> {
    let convert = element("videoconvert")?;
    let scale = element("videoscale")?;
    let caps = element("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", i32::try_from(format.width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(format.height).unwrap_or(i32::MAX))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(2).drop(true).build();
    let (width, height) = (format.width, format.height);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let info = sample
                    .caps()
                    .and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok())
                    .ok_or(gst::FlowError::NotNegotiated)?;
                let stride = info.stride()[0] as usize;
                let row = width as usize * 3;
                let mut image = image::RgbImage::new(width, height);
                for (y, out) in image.chunks_exact_mut(row).enumerate() {
                    out.copy_from_slice(&map[y * stride..y * stride + row]);
                }
                match frames.try_send(image) {
                    Ok(()) | Err(TrySendError::Full(_)) => Ok(gst::FlowSuccess::Ok),
                    Err(TrySendError::Disconnected(_)) => Err(gst::FlowError::Eos),
                }
            })
            .build(),
    );
    let elements = [&convert, &scale, &caps, sink.upcast_ref()];
    pipeline.add_many(elements).map_err(|e| e.to_string())?;
    gst::Element::link_many(elements).map_err(|e| e.to_string())?;
    for e in elements {
        e.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    decoded.link(&convert.static_pad("sink").ok_or("no sink pad")?).map(drop_ok).map_err(|e| e.to_string())
}

/// The pipeline's source: frames from whoever publishes.
pub struct WhipSource {
    hub: Arc<WhipHub>,
    frames: Receiver<image::RgbImage>,
    no_frame_timeout: Duration,
    sequence: u64,
}

impl WhipSource {
    /// A source of `width`x`height` frames at about `fps`; its hub goes to the control server.
    pub fn new(width: u32, height: u32, fps: Fps, no_frame_timeout: Duration) -> Result<WhipSource> {
        crate::media::init()?;
        let (tx, rx) = crossbeam_channel::bounded(2);
        let format = FrameFormat { width, height, fps: Some(fps) };
        let hub = Arc::new(WhipHub { format, frames: tx, publisher: Mutex::new(None) });
        Ok(WhipSource { hub, frames: rx, no_frame_timeout, sequence: 0 })
    }

    pub fn hub(&self) -> Arc<WhipHub> {
        self.hub.clone()
    }
}

impl Source for WhipSource {
    fn format(&self) -> FrameFormat {
        self.hub.format
    }

    fn publishers(&self) -> Option<Arc<dyn Peers>> {
        Some(Arc::new(Served(self.hub.clone())))
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let started = Instant::now();
        match self.frames.recv_timeout(self.no_frame_timeout) {
            Ok(image) => {
                let mut frame = Frame::new(image);
                frame.sequence = self.sequence;
                self.sequence += 1;
                Ok(Some(frame))
            }
            Err(_) => Err(Error::Source {
                source_name: self.describe(),
                problem: format!(
                    "no frame for {:.1} s (no publisher, or it stopped sending): [source] no-frame-timeout-s",
                    started.elapsed().as_secs_f64()
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("WHIP at {}x{}", self.hub.format.width, self.hub.format.height)
    }
}
