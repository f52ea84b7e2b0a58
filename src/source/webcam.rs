//! Cameras through nokhwa (V4L2 on Linux). A capture thread owns the camera (nokhwa's camera cannot move
//! between threads) and hands frames over a one-frame drop-oldest link: a live source never blocks on its
//! consumer, and a slow consumer just sees the newest frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat as NokhwaFormat, CameraIndex, FrameFormat as Fourcc, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::Source;
use crate::config::{CameraFormat, DeviceSelector};
use crate::devices::CameraEntry;
use crate::error::{Error, Result};
use crate::frame::{Fps, Frame, FrameFormat};
use crate::pipeline::link::{LinkReceiver, Overflow, link};

pub fn list() -> std::result::Result<Vec<CameraEntry>, String> {
    let cameras = nokhwa::query(ApiBackend::Auto).map_err(|e| e.to_string())?;
    Ok(cameras
        .iter()
        .filter_map(|c| {
            c.index().as_index().ok().map(|index| CameraEntry {
                index,
                name: c.human_name(),
                description: c.description().to_string(),
            })
        })
        .collect())
}

fn describe_list(cameras: &[CameraEntry]) -> String {
    if cameras.is_empty() {
        "no cameras found".into()
    } else {
        let names: Vec<String> = cameras.iter().map(|c| format!("{}: {}", c.index, c.name)).collect();
        format!("cameras found: {}", names.join(", "))
    }
}

/// The camera index a selector means, or an error listing the cameras there are.
fn resolve(device: Option<&DeviceSelector>) -> Result<u32> {
    let cameras = list().map_err(|problem| Error::Source { source_name: "webcam".into(), problem })?;
    let not_found = |what: String| Error::Source {
        source_name: format!("webcam {what}"),
        problem: format!("not found ({})", describe_list(&cameras)),
    };
    match device {
        None => cameras.first().map(|c| c.index).ok_or_else(|| not_found("(the first)".into())),
        Some(DeviceSelector::Index(i)) => {
            cameras.iter().find(|c| c.index == *i).map(|c| c.index).ok_or_else(|| not_found(i.to_string()))
        }
        Some(DeviceSelector::Name(name)) => {
            let wanted = name.to_lowercase();
            cameras
                .iter()
                .find(|c| c.name.to_lowercase().contains(&wanted))
                .map(|c| c.index)
                .ok_or_else(|| not_found(format!("`{name}`")))
        }
    }
}

pub struct Webcam {
    name: String,
    format: FrameFormat,
    frames: LinkReceiver<Frame>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webcam {
    pub fn open(
        device: Option<&DeviceSelector>,
        width: u32,
        height: u32,
        fps: f64,
        format: CameraFormat,
    ) -> Result<Webcam> {
        let index = resolve(device)?;
        let name = format!("webcam {index}");
        let fourcc = match format {
            CameraFormat::Auto | CameraFormat::Mjpeg => Fourcc::MJPEG,
            CameraFormat::Yuyv => Fourcc::YUYV,
        };
        let wanted = NokhwaFormat::new(Resolution::new(width, height), fourcc, fps.round() as u32);
        let (frames_tx, frames) = link::<Frame>(format!("{name}->source"), 1, Overflow::DropOldest);
        let (ready_tx, ready) = crossbeam_channel::bounded::<Result<FrameFormat>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn({
                let (stop, name) = (stop.clone(), name.clone());
                move || {
                    let bad = |problem: String| Error::Source { source_name: name.clone(), problem };
                    let opened = Camera::new(
                        CameraIndex::Index(index),
                        RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted)),
                    )
                    .and_then(|mut cam| cam.open_stream().map(|_| cam));
                    let mut camera = match opened {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(bad(format!("cannot open: {e}"))));
                            return;
                        }
                    };
                    let got = camera.camera_format();
                    tracing::info!(camera = %name, asked = %wanted, got = %got, "camera format negotiated");
                    let rate = Fps::new(got.frame_rate(), 1);
                    let _ = ready_tx.send(Ok(FrameFormat {
                        width: got.resolution().width(),
                        height: got.resolution().height(),
                        fps: Some(rate),
                    }));
                    let started = Instant::now();
                    let mut sequence = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let image = match camera.frame().and_then(|b| b.decode_image::<RgbFormat>()) {
                            Ok(img) => img,
                            Err(e) => {
                                tracing::warn!(camera = %name, error = %e, "frame lost");
                                continue;
                            }
                        };
                        let frame = Frame {
                            image: Arc::new(image),
                            pts: Some(started.elapsed()),
                            duration: rate.frame_duration(),
                            sequence,
                            captured: Instant::now(),
                        };
                        sequence += 1;
                        if frames_tx.send(frame).is_err() {
                            break;
                        }
                    }
                    let _ = camera.stop_stream();
                }
            })
            .expect("spawn capture thread");
        let format = ready
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Error::Source { source_name: name.clone(), problem: "did not start within 10 s".into() })??;
        Ok(Webcam { name, format, frames, stop, thread: Some(thread) })
    }
}

impl Source for Webcam {
    fn format(&self) -> FrameFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            match self.frames.recv_timeout(Duration::from_secs(5)) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => tracing::warn!(camera = %self.name, "no frame for 5 s"),
                Err(()) => {
                    return Err(Error::Source { source_name: self.name.clone(), problem: "capture stopped".into() });
                }
            }
        }
    }

    fn describe(&self) -> String {
        let fps = self.format.fps.map_or(String::new(), |f| format!(" at {f} fps"));
        format!("{} ({}x{}{fps})", self.name, self.format.width, self.format.height)
    }
}

impl Drop for Webcam {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
