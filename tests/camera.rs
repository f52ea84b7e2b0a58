//! Webcam resilience with a scripted fake camera: a capture error is retried with back-off and the run goes on
//! when frames come back (the gap is bridged); a camera that stays silent past `no-frame-timeout-s` stops the
//! run with a clear error, exit code 1 (a failure while running, not bad input).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use latentcam::config::Mode;
use latentcam::error::{ErrorKind, Result};
use latentcam::frame::{Fps, Frame, FrameFormat, Processed};
use latentcam::pipeline::{self, Parts, Processor};
use latentcam::sink::{Sink, StreamEnd};
use latentcam::source::Source;
use latentcam::source::camera::{CameraDevice, CameraSource, Resilience};

/// What the fake camera does, in order; after the script it fails forever (unplugged for good).
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Deliver this many frames, one every 10 ms.
    Frames(usize),
    /// Fail every capture (and every re-open) for this long: the cable is out.
    Unplugged(Duration),
}

struct FakeCamera {
    script: Vec<Step>,
    frames_left: usize,
    unplugged_until: Option<Instant>,
    reopens: Arc<Mutex<u32>>,
}

impl FakeCamera {
    fn new(script: &[Step], reopens: Arc<Mutex<u32>>) -> FakeCamera {
        let mut cam = FakeCamera {
            script: script.iter().rev().copied().collect(),
            frames_left: 0,
            unplugged_until: None,
            reopens,
        };
        cam.advance();
        cam
    }

    fn advance(&mut self) {
        match self.script.pop() {
            Some(Step::Frames(n)) => self.frames_left = n,
            Some(Step::Unplugged(d)) => self.unplugged_until = Some(Instant::now() + d),
            None => self.unplugged_until = Some(Instant::now() + Duration::from_secs(3600)),
        }
    }

    fn unplugged(&mut self) -> bool {
        match self.unplugged_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.unplugged_until = None;
                self.advance();
                self.unplugged_until.is_some()
            }
            None => false,
        }
    }
}

impl CameraDevice for FakeCamera {
    fn frame(&mut self) -> std::result::Result<RgbImage, String> {
        std::thread::sleep(Duration::from_millis(10));
        if self.unplugged() {
            return Err("VIDIOC_DQBUF: No such device".into());
        }
        if self.frames_left == 0 {
            self.advance();
            return self.frame();
        }
        self.frames_left -= 1;
        Ok(RgbImage::from_pixel(32, 24, image::Rgb([200, 100, 50])))
    }

    fn reopen(&mut self) -> std::result::Result<(), String> {
        *self.reopens.lock().unwrap() += 1;
        if self.unplugged() { Err("No such file or directory".into()) } else { Ok(()) }
    }
}

fn fake(script: &[Step], timeout: Duration) -> (CameraSource, Arc<Mutex<u32>>) {
    let reopens = Arc::new(Mutex::new(0));
    let script = script.to_vec();
    let counter = reopens.clone();
    let format = FrameFormat { width: 32, height: 24, fps: Fps::new(100, 1) };
    let source = CameraSource::start(
        "fake camera",
        move || Ok((FakeCamera::new(&script, counter), format)),
        Resilience::with_timeout(timeout),
    )
    .unwrap();
    (source, reopens)
}

#[test]
fn a_camera_that_comes_back_within_the_timeout_resumes_the_run() {
    let (mut source, reopens) =
        fake(&[Step::Frames(5), Step::Unplugged(Duration::from_millis(600)), Step::Frames(50)], Duration::from_secs(3));
    let started = Instant::now();
    let mut sequences = Vec::new();
    // Five frames come before the gap: the eighth can only come after it.
    for _ in 0..8 {
        let frame = source.next_frame().expect("frames resume after the gap").expect("a camera never ends");
        sequences.push(frame.sequence);
    }
    let elapsed = started.elapsed();
    assert!(sequences.windows(2).all(|w| w[1] > w[0]), "in capture order: {sequences:?}");
    assert!(elapsed >= Duration::from_millis(600), "the gap was waited out: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "resumed soon after the camera came back: {elapsed:?}");
    assert!(*reopens.lock().unwrap() >= 1, "the device was re-opened after repeated failures");
}

#[test]
fn a_camera_silent_past_the_timeout_stops_with_a_clear_error() {
    let (mut source, _) = fake(&[Step::Frames(3)], Duration::from_millis(500));
    for _ in 0..3 {
        source.next_frame().unwrap().unwrap();
    }
    let started = Instant::now();
    let err = source.next_frame().expect_err("the camera is gone");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(4), "gave up after {waited:?}");
    let text = err.chain_text();
    assert!(text.contains("fake camera") && text.contains("no frame for") && text.contains("No such device"), "{text}");
}

struct Passthrough;

impl Processor for Passthrough {
    fn size(&self) -> (u32, u32) {
        (32, 24)
    }
    fn push(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
        ready.push((*frame.image).clone());
        Ok(())
    }
}

struct Counting(Arc<Mutex<(u64, Option<StreamEnd>)>>);

impl Sink for Counting {
    fn write(&mut self, _: &Processed) -> Result<()> {
        self.0.lock().unwrap().0 += 1;
        Ok(())
    }
    fn finish(&mut self, end: StreamEnd) -> Result<()> {
        self.0.lock().unwrap().1 = Some(end);
        Ok(())
    }
}

#[test]
fn an_unplugged_camera_ends_a_live_run_with_exit_code_1_and_finalized_sinks() {
    let (source, _) = fake(&[Step::Frames(20)], Duration::from_millis(400));
    let seen = Arc::new(Mutex::new((0, None)));
    let parts = Parts {
        annotator: None,
        source: Box::new(source),
        processor: Box::new(Passthrough),
        sinks: vec![("count".into(), Box::new(Counting(seen.clone())))],
        window: None,
        mode: Mode::Live,
        control: None,
    };
    let err = pipeline::run(parts, Arc::default(), &mut |_| {}).err().expect("the run stops");
    assert_eq!(err.kind(), ErrorKind::Environment, "{}", err.chain_text());
    assert_eq!(err.exit_code(), 1);
    let (frames, end) = *seen.lock().unwrap();
    assert!(frames >= 1, "frames before the camera went away were delivered");
    assert_eq!(end, Some(StreamEnd::Stopped), "the sink was finalized");
}
