//! A camera on its own capture thread, resilient to what cameras do on air: a frame that fails to decode, a
//! cable that is pulled and plugged back. Capture errors are retried with back-off (the device is re-opened
//! after repeated failures); when frames come back the gap is logged and the run goes on; when none has come
//! for the source's `no-frame-timeout-s`, the run stops with a clear error (exit 1).
//!
//! The device is behind [`CameraDevice`], so the loop is tested with a scripted fake camera; nokhwa's camera
//! is the real one (`webcam.rs`). The device is made on the capture thread (nokhwa's cannot move between
//! threads) and frames are handed over a one-frame drop-oldest link: a live source never blocks on its
//! consumer, and a slow consumer just sees the newest frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::Source;
use crate::error::{Error, Result};
use crate::frame::{Frame, FrameFormat};
use crate::link::{LinkReceiver, Overflow, link};

/// A camera as the capture loop drives it.
pub trait CameraDevice {
    /// The next frame; blocks for up to about a frame interval.
    fn frame(&mut self) -> std::result::Result<RgbImage, String>;
    /// Close and open the device again (it may have been unplugged and plugged back).
    fn reopen(&mut self) -> std::result::Result<(), String>;
}

/// How the capture loop rides out failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// No frame for this long ends the run.
    pub no_frame_timeout: Duration,
    /// First wait after a failed capture; doubles on each further failure up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive failures after which the device is re-opened rather than just read again.
    pub reopen_after: u32,
}

impl Resilience {
    pub fn with_timeout(no_frame_timeout: Duration) -> Resilience {
        Resilience {
            no_frame_timeout,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            reopen_after: 3,
        }
    }
}

/// A [`Source`] reading a [`CameraDevice`] on a capture thread.
pub struct CameraSource {
    name: String,
    format: FrameFormat,
    frames: LinkReceiver<Frame>,
    stop: Arc<AtomicBool>,
    /// Why the capture thread ended, when it ended on its own.
    failure: Arc<Mutex<Option<String>>>,
    no_frame_timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

/// What the opener gives the capture thread: the device and the format it negotiated.
pub type Opened<C> = std::result::Result<(C, FrameFormat), String>;

impl CameraSource {
    /// Start the capture thread. `open` runs on it and makes the device; its failure is returned here (a camera
    /// that cannot be opened at start-up is bad input, exit 2).
    pub fn start<C, F>(name: &str, open: F, resilience: Resilience) -> Result<CameraSource>
    where
        C: CameraDevice + 'static,
        F: FnOnce() -> Opened<C> + Send + 'static,
    {
        let (frames_tx, frames) = link::<Frame>(format!("{name}->source"), 1, Overflow::DropOldest);
        let (ready_tx, ready) = crossbeam_channel::bounded::<std::result::Result<FrameFormat, String>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn({
                let (stop, failure, name) = (stop.clone(), failure.clone(), name.to_string());
                move || {
                    let (mut device, format) = match open() {
                        Ok(opened) => opened,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(format));
                    let outcome = capture_loop(&name, &mut device, format, resilience, &stop, &mut |frame| {
                        frames_tx.send(frame).is_ok()
                    });
                    if let Err(why) = outcome {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    }
                }
            })
            .map_err(|e| Error::Source { source_name: name.to_string(), problem: format!("cannot start: {e}") })?;
        let started = Duration::from_secs(10);
        let format = match ready.recv_timeout(started) {
            Ok(Ok(format)) => format,
            Ok(Err(problem)) => return Err(Error::Source { source_name: name.to_string(), problem }),
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                return Err(Error::Source {
                    source_name: name.to_string(),
                    problem: format!("did not start within {} s", started.as_secs()),
                });
            }
        };
        Ok(CameraSource {
            name: name.to_string(),
            format,
            frames,
            stop,
            failure,
            no_frame_timeout: resilience.no_frame_timeout,
            thread: Some(thread),
        })
    }

    fn failed(&self, problem: String) -> Error {
        Error::Source { source_name: self.name.clone(), problem }
    }
}

/// Read frames until `stop`, or until `deliver` refuses one (the consumer is gone): Ok. No frame for the
/// timeout: Err with why.
fn capture_loop(
    name: &str,
    device: &mut dyn CameraDevice,
    format: FrameFormat,
    resilience: Resilience,
    stop: &AtomicBool,
    deliver: &mut dyn FnMut(Frame) -> bool,
) -> std::result::Result<(), String> {
    let started = Instant::now();
    let mut last_frame = Instant::now();
    let mut sequence = 0u64;
    let mut failures = 0u32;
    let mut backoff = resilience.first_backoff;
    while !stop.load(Ordering::SeqCst) {
        let last_error = match device.frame() {
            Ok(image) if (image.width(), image.height()) == (format.width, format.height) => {
                if failures > 0 {
                    let gap = last_frame.elapsed().as_secs_f64();
                    tracing::warn!(camera = name, gap_s = format!("{gap:.2}"), failures, "camera back: frames again");
                }
                failures = 0;
                backoff = resilience.first_backoff;
                last_frame = Instant::now();
                let frame = Frame {
                    image: Arc::new(image),
                    pts: Some(started.elapsed()),
                    duration: format.fps.map(|f| f.frame_duration()),
                    sequence,
                    captured: last_frame,
                    conditioning: Default::default(),
                };
                sequence += 1;
                if !deliver(frame) {
                    return Ok(());
                }
                continue;
            }
            Ok(image) => format!(
                "frame is {}x{}, the camera was opened at {}x{}",
                image.width(),
                image.height(),
                format.width,
                format.height
            ),
            Err(e) => e,
        };
        failures += 1;
        if failures == 1 {
            tracing::warn!(camera = name, error = %last_error, "capture failed; retrying");
        }
        let waited = last_frame.elapsed();
        if waited >= resilience.no_frame_timeout {
            return Err(format!(
                "no frame for {:.1} s (the camera was unplugged or stopped?); last error: {last_error}",
                waited.as_secs_f64()
            ));
        }
        std::thread::sleep(backoff.min(resilience.no_frame_timeout - waited));
        backoff = (backoff * 2).min(resilience.max_backoff);
        if failures >= resilience.reopen_after {
            match device.reopen() {
                Ok(()) => tracing::info!(camera = name, "camera re-opened"),
                Err(e) => tracing::debug!(camera = name, error = %e, "re-opening failed"),
            }
        }
    }
    Ok(())
}

impl Source for CameraSource {
    fn format(&self) -> FrameFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        // The capture thread bridges gaps and gives up after the timeout; this wait only has to outlast it.
        let patience = self.no_frame_timeout + Duration::from_secs(5);
        match self.frames.recv_timeout(patience) {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => Err(self.failed(format!("no frame for {:.1} s", patience.as_secs_f64()))),
            Err(()) => {
                let why = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                Err(self.failed(why.unwrap_or_else(|| "capture stopped".into())))
            }
        }
    }

    fn describe(&self) -> String {
        let fps = self.format.fps.map_or(String::new(), |f| format!(" at {f} fps"));
        format!("{} ({}x{}{fps})", self.name, self.format.width, self.format.height)
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
