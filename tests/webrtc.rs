//! WHEP playback (issue 22): a `whep` sink served by the control server, watched by a WHEP client that nobody
//! here wrote the WebRTC side of: GStreamer's own `webrtcbin` as the offerer (recvonly H.264, as a browser
//! offers), its answer applied, the frames decoded by `avdec_h264` and counted. Then the viewer leaves with
//! DELETE; the cap, the content type, the preflight and the tokens answer as WHEP says.
#![cfg(feature = "webrtc")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_webrtc as gst_webrtc;
use latentcam::config::{SinkKind, SinkSpec, View};
use latentcam::control::http::{self, HttpServer};
use latentcam::control::{ControlHub, LiveValues};
use latentcam::frame::{Conditioning, Fps, Processed};
use latentcam::sink::{SinkContext, StreamEnd};

/// A control server with a running WHEP sink fed 30 frames a second by a thread of its own.
struct Served {
    server: HttpServer,
    hub: Arc<ControlHub>,
    feeding: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.feeding.store(false, Ordering::SeqCst);
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
    }
}

fn hub() -> Arc<ControlHub> {
    let values = LiveValues::new(&common::sample_params(), 0, 0.0, 0.0, None, None);
    Arc::new(ControlHub::new(values, common::sample_limits()))
}

fn serve(max_viewers: u32, token: Option<&str>, view_token: Option<&str>) -> Served {
    let hub = hub();
    let server = http::serve_tokens(
        hub.clone(),
        "127.0.0.1:0".parse().unwrap(),
        token.map(str::to_string),
        view_token.map(str::to_string),
    )
    .unwrap();
    let spec = SinkSpec { index: 0, only_when: None, kind: SinkKind::Whep { view: View::Output, max_viewers } };
    let (w, h) = (160, 120);
    let context = SinkContext { width: w, height: h, fps: Fps::new(30, 1), live: true, control: Some(hub.clone()) };
    let mut sink = latentcam::sink::open(&spec, &context, None).unwrap();
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = std::thread::spawn({
        let feeding = feeding.clone();
        move || {
            let mut n = 0u32;
            while feeding.load(Ordering::SeqCst) {
                let image =
                    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x + n) as u8, (y * 2) as u8, (n * 3) as u8]));
                let image = Arc::new(image);
                let frame = Processed {
                    input: image.clone(),
                    output: image,
                    conditioning: Conditioning::default(),
                    pts: None,
                    duration: Some(Duration::from_millis(33)),
                    sequence: u64::from(n),
                    captured: Instant::now(),
                };
                sink.write(&frame).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(33));
            }
            sink.finish(StreamEnd::Stopped).unwrap();
        }
    });
    Served { server, hub, feeding, feeder: Some(feeder) }
}

/// An HTTP/1.1 exchange: status, headers (lower-case names), body.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A WHEP viewer: webrtcbin offering to receive H.264, what it receives decoded and counted.
struct Viewer {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    frames: Arc<AtomicUsize>,
    size: Arc<Mutex<Option<(i32, i32)>>>,
}

impl Viewer {
    fn new() -> Viewer {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin").build().unwrap();
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        webrtc.set_property("latency", 0u32);
        pipeline.add(&webrtc).unwrap();
        let caps: gst::Caps = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,\
                               packetization-mode=(string)1,profile-level-id=(string)42e01f"
            .parse()
            .unwrap();
        let _: gst_webrtc::WebRTCRTPTransceiver =
            webrtc.emit_by_name("add-transceiver", &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps]);
        let frames = Arc::new(AtomicUsize::new(0));
        let size = Arc::new(Mutex::new(None));
        let weak = pipeline.downgrade();
        let (counted, sized) = (frames.clone(), size.clone());
        webrtc.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else { return };
            let decode = gst::parse::bin_from_description(
                "queue ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! appsink name=out sync=false emit-signals=true",
                true,
            )
            .unwrap();
            pipeline.add(&decode).unwrap();
            let sink = decode.by_name("out").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
            let (counted, sized) = (counted.clone(), sized.clone());
            sink.set_callbacks(
                gstreamer_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                            let w = s.get::<i32>("width").unwrap_or(0);
                            let h = s.get::<i32>("height").unwrap_or(0);
                            *sized.lock().unwrap() = Some((w, h));
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            decode.sync_state_with_parent().unwrap();
            pad.link(&decode.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Viewer { pipeline, webrtc, frames, size }
    }

    fn offer(&self) -> String {
        offer_of(&self.webrtc)
    }

    fn answer(&self, sdp: &str) {
        answer_to(&self.webrtc, sdp)
    }

    /// Frames decoded within `within` once `n` have come (None: fewer came).
    fn wait_for(&self, n: usize, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.frames.load(Ordering::SeqCst) >= n {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// `webrtc`'s offer, every candidate in it.
fn offer_of(webrtc: &gst::Element) -> String {
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    promise.wait();
    let reply = promise.get_reply().unwrap();
    let offer = reply.value("offer").unwrap().get::<gst_webrtc::WebRTCSessionDescription>().unwrap();
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-local-description", &[&offer, &promise]);
    promise.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        assert!(Instant::now() < deadline, "ICE gathering did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let local = webrtc.property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description").unwrap();
    local.sdp().as_text().unwrap()
}

/// Apply the server's answer to `webrtc`.
fn answer_to(webrtc: &gst::Element, sdp: &str) {
    let message = gstreamer_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
    let answer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, message);
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-remote-description", &[&answer, &promise]);
    promise.wait();
}

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

#[test]
fn a_whep_viewer_decodes_the_output_and_leaves_with_delete() {
    let served = serve(2, None, None);
    let addr = served.server.local_addr();
    let viewer = Viewer::new();
    let started = Instant::now();
    let (status, headers, answer) = exchange(addr, "POST", "/whep", &[SDP], &viewer.offer());
    assert_eq!(status, 201, "{answer}");
    eprintln!("answered in {:?}", started.elapsed());
    assert_eq!(header(&headers, "content-type"), Some("application/sdp"));
    let location = header(&headers, "location").expect("a Location").to_string();
    assert!(location.starts_with("/whep/") && location.len() > 30, "{location}");
    assert!(!answer.contains("a=inactive"), "{answer}");
    viewer.answer(&answer);
    let took = viewer.wait_for(30, Duration::from_secs(15)).expect("30 frames decoded within 15 s");
    eprintln!("30 frames decoded {took:?} after the answer");
    assert_eq!(*viewer.size.lock().unwrap(), Some((160, 120)));
    let (status, _, body) = exchange(addr, "DELETE", &location, &[], "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(exchange(addr, "DELETE", &location, &[], "").0, 404, "gone");
    drop(served);
}

#[test]
fn whep_answers_as_the_protocol_says() {
    let served = serve(1, None, None);
    let addr = served.server.local_addr();
    // A preflight from a page: what it may send, and that it may read Location.
    let (status, headers, _) = exchange(
        addr,
        "OPTIONS",
        "/whep",
        &[("Origin", "http://127.0.0.1:8080"), ("Access-Control-Request-Method", "POST")],
        "",
    );
    assert_eq!(status, 204);
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(header(&headers, "access-control-allow-headers").is_some_and(|h| h.contains("Authorization")));
    assert_eq!(header(&headers, "access-control-expose-headers"), Some("Location"));
    // Not SDP, not an offer, not a method WHEP has.
    assert_eq!(exchange(addr, "POST", "/whep", &[("Content-Type", "application/json")], "{}").0, 415);
    let (status, _, body) = exchange(addr, "POST", "/whep", &[SDP], "v=0\r\nm=audio 9 RTP/AVP 0\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("no H.264 video"), "{body}");
    assert_eq!(exchange(addr, "GET", "/whep", &[], "").0, 405);
    assert_eq!(exchange(addr, "PATCH", "/whep/abc", &[], "").0, 405);
    // The cap: a second viewer while one watches.
    let first = Viewer::new();
    assert_eq!(exchange(addr, "POST", "/whep", &[SDP], &first.offer()).0, 201);
    let second = Viewer::new();
    let (status, _, body) = exchange(addr, "POST", "/whep", &[SDP], &second.offer());
    assert_eq!(status, 503);
    assert!(body.contains("at most 1"), "{body}");
    assert!(served.hub.viewers().is_some(), "the sink took the viewers");
}

#[test]
fn the_view_token_opens_watching_and_nothing_else() {
    let served = serve(2, Some("control-secret"), Some("view-secret"));
    let addr = served.server.local_addr();
    let viewer = Viewer::new();
    let offer = viewer.offer();
    assert_eq!(exchange(addr, "POST", "/whep", &[SDP], &offer).0, 401, "no token");
    let view = ("Authorization", "Bearer view-secret");
    assert_eq!(exchange(addr, "GET", "/params", &[view], "").0, 401, "the view token changes nothing");
    assert_eq!(exchange(addr, "POST", "/whep", &[SDP, view], &offer).0, 201);
    let control = ("Authorization", "Bearer control-secret");
    assert_eq!(exchange(addr, "GET", "/params", &[control], "").0, 200);
}

/// A whep sink is served by the control server: a pipeline without `[control] http` is refused at check.
#[test]
fn a_whep_sink_needs_the_control_server() {
    let text = |control: &str| {
        format!(
            "mode = \"live\"\n[source]\nkind = \"test-pattern\"\n[model]\ndir = \"{}\"\n{control}[[sink]]\nkind = \"whep\"\nmax-viewers = 3\n",
            common::model_dir("tiny-sd15-lcm-lora").display()
        )
    };
    let path = std::path::Path::new("p.toml");
    let e = latentcam::config::Pipeline::parse_str(&text(""), path, &[]).unwrap_err().to_string();
    assert!(e.contains("sink.0") && e.contains("[control] http"), "{e}");
    let ok = latentcam::config::Pipeline::parse_str(&text("[control]\nhttp = \"127.0.0.1:0\"\n"), path, &[]).unwrap();
    assert_eq!(ok.sinks[0].kind, SinkKind::Whep { view: View::Output, max_viewers: 3 });
    let e = latentcam::config::Pipeline::parse_str(
        &text("[control]\nhttp = \"127.0.0.1:0\"\n").replace("3", "0"),
        path,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("max-viewers"), "{e}");
}

#[test]
fn without_a_whep_sink_whep_is_unavailable() {
    let hub = hub();
    let server = http::serve(hub, "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let (status, _, body) = exchange(server.local_addr(), "POST", "/whep", &[SDP], "v=0\r\n");
    assert_eq!(status, 503);
    assert!(body.contains("no whep sink"), "{body}");
}

/// A WHIP publisher shaped like OBS's WHIP output: H.264 video and Opus audio from GStreamer test sources,
/// sendonly, non-trickle (every candidate in the offer).
struct Publisher {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
}

impl Publisher {
    fn new() -> Publisher {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "webrtcbin name=w bundle-policy=max-bundle \
             videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert \
             ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
             ! rtph264pay config-interval=-1 pt=96 \
             ! application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 ! w. \
             audiotestsrc is-live=true ! audioconvert ! opusenc ! rtpopuspay pt=111 \
             ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! w.",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let webrtc = pipeline.by_name("w").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for i in 0..2 {
            let transceiver: gst_webrtc::WebRTCRTPTransceiver = webrtc.emit_by_name("get-transceiver", &[&i]);
            transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
        }
        Publisher { pipeline, webrtc }
    }

    fn offer(&self) -> String {
        offer_of(&self.webrtc)
    }

    fn answer(&self, sdp: &str) {
        answer_to(&self.webrtc, sdp)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A control server whose run's source is a WHIP source of 160x120 frames.
fn serve_whip(token: Option<&str>) -> (HttpServer, Box<dyn latentcam::source::Source>) {
    let hub = hub();
    let spec = latentcam::config::SourceSpec::Whip {
        width: 160,
        height: 120,
        fps: Fps::new(30, 1).unwrap(),
        no_frame_timeout: Duration::from_secs(10),
    };
    let source = latentcam::source::open(&spec, latentcam::config::Mode::Live, false).unwrap();
    hub.set_publishers(source.publishers());
    let server = http::serve(hub, "127.0.0.1:0".parse().unwrap(), token.map(str::to_string)).unwrap();
    (server, source)
}

#[test]
fn a_whip_publisher_becomes_the_input_one_at_a_time() {
    let (server, mut source) = serve_whip(Some("s3cret"));
    let addr = server.local_addr();
    let auth = ("Authorization", "Bearer s3cret");
    let obs = Publisher::new();
    let offer = obs.offer();
    assert_eq!(exchange(addr, "POST", "/whip", &[SDP], &offer).0, 401, "OBS sends its Bearer token");
    let (status, headers, answer) = exchange(addr, "POST", "/whip", &[SDP, auth], &offer);
    assert_eq!(status, 201, "{answer}");
    let location = header(&headers, "location").unwrap().to_string();
    assert!(location.starts_with("/whip/"), "{location}");
    obs.answer(&answer);
    let started = Instant::now();
    for i in 0..10 {
        let frame = source.next_frame().unwrap().expect("a frame");
        assert_eq!(frame.image.dimensions(), (160, 120), "scaled to the source's size");
        assert_eq!(frame.sequence, i);
    }
    eprintln!("10 published frames in {:?}", started.elapsed());
    // A second publisher while one is live.
    let other = Publisher::new();
    let (status, _, body) = exchange(addr, "POST", "/whip", &[SDP, auth], &other.offer());
    assert_eq!(status, 409, "{body}");
    // The first leaves; the second may come.
    assert_eq!(exchange(addr, "DELETE", &location, &[auth], "").0, 200);
    drop(obs);
    let next = Publisher::new();
    let (status, _, answer) = exchange(addr, "POST", "/whip", &[SDP, auth], &next.offer());
    assert_eq!(status, 201, "{answer}");
    next.answer(&answer);
    assert!(source.next_frame().unwrap().is_some(), "the next publisher's frames arrive");
}

/// `latentcam run --whip`: the file's source becomes a WHIP source of the same size and rate.
#[test]
fn run_whip_keeps_the_sources_size_and_rate() {
    let file = common::root().join("pipelines/webcam-stylize.toml");
    let whip = latentcam::config::overrides::whip_source(&file).unwrap();
    let pipeline = latentcam::config::Pipeline::load(&file, &[whip]).unwrap();
    match pipeline.source {
        latentcam::config::SourceSpec::Whip { width, height, fps, .. } => {
            assert_eq!((width, height, fps), (640, 480, Fps::new(30, 1).unwrap()));
        }
        other => panic!("{other:?}"),
    }
    // Without [control] http there is nowhere to publish to.
    let e = latentcam::config::Pipeline::load(
        &common::root().join("pipelines/video2video.toml"),
        &[latentcam::config::overrides::whip_source(&common::root().join("pipelines/video2video.toml")).unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[control] http"), "{e}");
}
