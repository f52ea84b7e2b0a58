//! WHEP playback: any number of viewers (up to a cap) watch the output over WebRTC, from a browser or any WHEP
//! client, on the control server's port (`POST /whep`, `DELETE /whep/<id>`; ../shared/DESIGN.md §9).
//!
//! One H.264 encode (constrained baseline, level 3.1, zero latency) feeds a `tee`; each viewer gets a branch of
//! its own, `queue ! rtph264pay ! capssetter ! webrtcbin`, built from its offer: the payload type it offers and
//! its `profile-level-id` string as it wrote it (webrtcbin 1.22 compares that string, and x264 writes another
//! spelling of the same profile). The answer is made only once the encoder's caps have reached webrtcbin (else
//! webrtcbin answers `a=inactive`), with every ICE candidate in it (WHEP without trickle). A viewer whose
//! connection fails is removed without a DELETE; one that joins gets a key frame at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod whip;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

/// How long an answer may take: the first frames to reach the new branch, then ICE gathering.
const ANSWER_TIME: Duration = Duration::from_secs(5);
/// webrtcbin's jitter buffer (its default is 200 ms): a LAN needs little.
pub(crate) const LATENCY_MS: u32 = 20;

use crate::control::{PeerError as WhepError, Peers};

/// The viewers' side of a running WHEP sink; the control server's routes call it (through [`Peers`]).
#[derive(Default)]
pub struct WhepHub {
    output: Mutex<Option<Output>>,
}

/// The hub as the control server sees it.
pub struct Served(pub Arc<WhepHub>);

impl Peers for Served {
    fn offer(&self, sdp: &str) -> Result<(String, String), WhepError> {
        self.0.answer(sdp)
    }
    fn delete(&self, id: &str) -> bool {
        self.0.remove(id)
    }
}

/// The encoder's pipeline and its tee, while the sink runs.
struct Output {
    pipeline: gst::Pipeline,
    tee: gst::Element,
    max_viewers: u32,
    viewers: HashMap<String, Viewer>,
}

/// One viewer's branch.
struct Viewer {
    elements: Vec<gst::Element>,
    tee_pad: gst::Pad,
    webrtc: gst::Element,
}

/// What the offer asks for: the H.264 payload type and its `profile-level-id` as written.
#[derive(Clone, Debug, PartialEq)]
pub struct H264Offer {
    pub payload: u32,
    pub profile_level_id: String,
}

impl WhepHub {
    pub fn new() -> Arc<WhepHub> {
        Arc::new(WhepHub::default())
    }

    /// The sink's encoder is running: viewers attach to `tee` in `pipeline`.
    pub(crate) fn attach(&self, pipeline: gst::Pipeline, tee: gst::Element, max_viewers: u32) {
        *self.lock() = Some(Output { pipeline, tee, max_viewers, viewers: HashMap::new() });
    }

    /// The sink is finishing: every viewer's branch goes.
    pub(crate) fn detach(&self) {
        if let Some(mut output) = self.lock().take() {
            let ids: Vec<String> = output.viewers.keys().cloned().collect();
            for id in ids {
                remove_viewer(&mut output, &id);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Output>> {
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Viewers watching now.
    pub fn viewers(&self) -> usize {
        self.lock().as_ref().map_or(0, |o| o.viewers.len())
    }

    /// Answer a viewer's SDP offer (blocking: up to [`ANSWER_TIME`]); its id (for `DELETE /whep/<id>`) and the
    /// answer.
    pub fn answer(self: &Arc<Self>, sdp: &str) -> Result<(String, String), WhepError> {
        let offered = h264_of(sdp)?;
        let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|_| WhepError::BadOffer("the body is not an SDP offer".into()))?;
        let id = new_id();
        let webrtc = {
            let mut guard = self.lock();
            let output =
                guard.as_mut().ok_or_else(|| WhepError::Unavailable("the output is not running yet".into()))?;
            if output.viewers.len() >= output.max_viewers as usize {
                return Err(WhepError::Unavailable(format!(
                    "{} viewers already (at most {}): try again when one leaves",
                    output.viewers.len(),
                    output.max_viewers
                )));
            }
            let viewer = add_viewer(output, &offered).map_err(WhepError::Failed)?;
            let webrtc = viewer.webrtc.clone();
            output.viewers.insert(id.clone(), viewer);
            webrtc
        };
        // A viewer whose connection fails or closes is removed (from another thread: not in webrtcbin's own).
        let hub = Arc::downgrade(self);
        let leaving = id.clone();
        webrtc.connect_notify(Some("connection-state"), move |webrtc, _| {
            let state = webrtc.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
            if matches!(
                state,
                gst_webrtc::WebRTCPeerConnectionState::Failed | gst_webrtc::WebRTCPeerConnectionState::Closed
            ) && let Some(hub) = hub.upgrade()
            {
                let id = leaving.clone();
                std::thread::spawn(move || {
                    if hub.remove(&id) {
                        tracing::info!(viewer = %id, "WHEP viewer's connection ended: removed");
                    }
                });
            }
        });
        match negotiate(&webrtc, message, true) {
            Ok(answer) => {
                tracing::info!(viewer = %id, viewers = self.viewers(), "WHEP viewer joined");
                Ok((id, answer))
            }
            Err(e) => {
                self.remove(&id);
                Err(e)
            }
        }
    }

    /// Remove a viewer (`DELETE /whep/<id>`); false when there is none of that id.
    pub fn remove(&self, id: &str) -> bool {
        let mut guard = self.lock();
        let Some(output) = guard.as_mut() else { return false };
        if !output.viewers.contains_key(id) {
            return false;
        }
        remove_viewer(output, id);
        true
    }
}

/// An id nobody can guess (it is the viewer's only handle in `DELETE`).
pub(crate) fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The offer's H.264 video format: packetization mode 1 and constrained baseline (42e0.. or 4200..) preferred.
pub fn h264_of(sdp: &str) -> Result<H264Offer, WhepError> {
    let mut video = false;
    let mut h264: Vec<u32> = Vec::new();
    let mut fmtp: HashMap<u32, String> = HashMap::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            video = media.starts_with("video ");
        } else if let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| video) {
            let (pt, codec) = map.split_once(' ').unwrap_or((map, ""));
            if codec.to_ascii_uppercase().starts_with("H264/90000")
                && let Ok(pt) = pt.parse()
            {
                h264.push(pt);
            }
        } else if let Some(params) = line.strip_prefix("a=fmtp:").filter(|_| video) {
            let (pt, rest) = params.split_once(' ').unwrap_or((params, ""));
            if let Ok(pt) = pt.parse() {
                fmtp.insert(pt, rest.to_string());
            }
        }
    }
    let param = |pt: u32, key: &str| {
        fmtp.get(&pt).and_then(|f| {
            f.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        })
    };
    let score = |pt: u32| {
        let mode1 = param(pt, "packetization-mode").as_deref() == Some("1");
        let baseline = param(pt, "profile-level-id").is_some_and(|p| {
            let p = p.to_ascii_lowercase();
            p.starts_with("42e0") || p.starts_with("4200")
        });
        u8::from(mode1) * 2 + u8::from(baseline)
    };
    let best = h264.iter().copied().max_by_key(|pt| (score(*pt), std::cmp::Reverse(*pt))).ok_or_else(|| {
        WhepError::BadOffer("the offer has no H.264 video (latentcam sends H.264 constrained baseline)".into())
    })?;
    Ok(H264Offer {
        payload: best,
        profile_level_id: param(best, "profile-level-id").unwrap_or_else(|| "42e01f".into()),
    })
}

pub(crate) fn element(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|e| {
        let hint = if factory == "webrtcbin" { " (gstreamer1.0-plugins-bad and gstreamer1.0-nice)" } else { "" };
        format!("cannot make {factory}{hint}: {e}")
    })
}

/// A viewer's branch, linked to the tee and playing.
fn add_viewer(output: &mut Output, offered: &H264Offer) -> Result<Viewer, String> {
    let queue = element("queue")?;
    // A slow viewer drops its own oldest packets, never holds up the others.
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-buffers", 30u32);
    let pay = element("rtph264pay")?;
    pay.set_property("pt", offered.payload);
    pay.set_property("config-interval", -1i32);
    pay.set_property_from_str("aggregate-mode", "zero-latency");
    let setter = element("capssetter")?;
    setter.set_property(
        "caps",
        gst::Caps::builder("application/x-rtp").field("profile-level-id", offered.profile_level_id.as_str()).build(),
    );
    let webrtc = element("webrtcbin")?;
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    webrtc.set_property("latency", LATENCY_MS);
    let elements = vec![queue.clone(), pay.clone(), setter.clone(), webrtc.clone()];
    output.pipeline.add_many(&elements).map_err(|e| e.to_string())?;
    gst::Element::link_many([&queue, &pay, &setter]).map_err(|e| e.to_string())?;
    let sink = webrtc.request_pad_simple("sink_%u").ok_or("webrtcbin gave no sink pad")?;
    setter.static_pad("src").ok_or("capssetter has no src pad")?.link(&sink).map_err(|e| e.to_string())?;
    let tee_pad = output.tee.request_pad_simple("src_%u").ok_or("the tee gave no pad")?;
    tee_pad.link(&queue.static_pad("sink").ok_or("queue has no sink pad")?).map_err(|e| e.to_string())?;
    for e in &elements {
        e.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    // A key frame now (with SPS/PPS: h264parse repeats them), so the viewer's picture starts at once.
    let key = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
    if let Some(pad) = queue.static_pad("sink") {
        pad.push_event(key);
    }
    Ok(Viewer { elements, tee_pad, webrtc })
}

fn remove_viewer(output: &mut Output, id: &str) {
    let Some(viewer) = output.viewers.remove(id) else { return };
    if let Some(peer) = viewer.tee_pad.peer() {
        let _ = viewer.tee_pad.unlink(&peer);
    }
    output.tee.release_request_pad(&viewer.tee_pad);
    for e in viewer.elements.iter().rev() {
        let _ = e.set_state(gst::State::Null);
        let _ = output.pipeline.remove(e);
    }
}

/// Offer in, answer out (see the module docs for the order). `sending`: wait for the caps at webrtcbin's sink
/// pad first (what we send must be known before the answer says so).
pub(crate) fn negotiate(webrtc: &gst::Element, offer: gst_sdp::SDPMessage, sending: bool) -> Result<String, WhepError> {
    let deadline = Instant::now() + ANSWER_TIME;
    let sink = webrtc.static_pad("sink_0").or_else(|| webrtc.sink_pads().into_iter().next());
    while sending && sink.as_ref().is_none_or(|p| p.current_caps().is_none()) {
        if Instant::now() > deadline {
            return Err(WhepError::Unavailable("no frames reached the viewer's branch in time".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
    promise.wait();
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    if promise.wait() != gst::PromiseResult::Replied {
        return Err(WhepError::Failed("webrtcbin made no answer".into()));
    }
    let answer = promise
        .get_reply()
        .and_then(|reply| reply.value("answer").ok().and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok()))
        .ok_or_else(|| {
            let why = promise.get_reply().map(|r| r.to_string()).unwrap_or_default();
            WhepError::BadOffer(format!("webrtcbin cannot answer this offer: {why}"))
        })?;
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-local-description", &[&answer, &promise]);
    promise.wait();
    // Every candidate in the answer (no trickle).
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        if Instant::now() > deadline {
            return Err(WhepError::Failed("ICE gathering did not finish in time".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| WhepError::Failed("webrtcbin has no local description".into()))?;
    let text = local.sdp().as_text().map_err(|e| WhepError::Failed(e.to_string()))?;
    if text.contains("a=inactive") {
        return Err(WhepError::Failed(
            "webrtcbin answered inactive (the branch's caps did not match the offer)".into(),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offers_h264_format_is_found() {
        let chromium = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102 127\r\n\
                        a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
                        a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
        assert_eq!(h264_of(chromium).unwrap(), H264Offer { payload: 102, profile_level_id: "42001f".into() });
        let mode0 = "m=video 9 RTP/AVP 100 101\r\na=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=0;profile-level-id=42e01f\r\n\
                     a=rtpmap:101 H264/90000\r\na=fmtp:101 packetization-mode=1;profile-level-id=640c1f\r\n";
        assert_eq!(h264_of(mode0).unwrap().payload, 101, "packetization mode 1 first");
        let vp8 = "m=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(h264_of(vp8), Err(WhepError::BadOffer(_))));
    }
}
