//! A v4l2loopback virtual camera that OBS, browsers and video-call apps open like a webcam.
//!
//! The format is set to YUYV (the pixel format every consumer takes) at the frame size, then read back:
//! v4l2loopback may adjust it, and writing frames of another size would show garbage, so a mismatch is an
//! error. Frames are written with write(), as ffmpeg's v4l2 output does.
//!
//! Set up once (root): `modprobe v4l2loopback devices=1 video_nr=10 card_label=latentcam exclusive_caps=1`.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use v4l::video::Output;
use v4l::{Device, Format, FourCC};

use super::LoopbackEntry;
use super::{Sink, SinkContext, StreamEnd, compose};
use crate::config::View;
use crate::error::{Error, Result};
use crate::frame::Processed;

pub struct LoopbackSink {
    path: PathBuf,
    _device: Device,
    out: std::fs::File,
    view: View,
    width: u32,
    height: u32,
    yuyv: Vec<u8>,
}

/// v4l2loopback devices on this machine.
pub fn list() -> Vec<LoopbackEntry> {
    v4l::context::enum_devices()
        .into_iter()
        .filter_map(|node| {
            let device = Device::with_path(node.path()).ok()?;
            let caps = device.query_caps().ok()?;
            caps.driver
                .contains("loopback")
                .then(|| LoopbackEntry { path: node.path().to_path_buf(), card: caps.card.clone() })
        })
        .collect()
}

impl LoopbackSink {
    pub fn open(path: &Path, view: View, context: &SinkContext) -> Result<LoopbackSink> {
        let name = path.display().to_string();
        let bad = |problem: String| Error::Sink { sink: name.clone(), problem };
        if !path.exists() {
            return Err(bad(format!(
                "no such device (load v4l2loopback: sudo modprobe v4l2loopback devices=1 video_nr=10 \
                 card_label=latentcam exclusive_caps=1; `latentcam devices` lists the outputs found{})",
                match list().first() {
                    Some(found) => format!("; found {}", found.path.display()),
                    None => String::new(),
                }
            )));
        }
        let device = Device::with_path(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let caps = device.query_caps().map_err(|e| bad(format!("not a video device: {e}")))?;
        if !caps.driver.contains("loopback") {
            tracing::warn!(device = %name, driver = %caps.driver, "not a v4l2loopback device; trying anyway");
        }
        let (width, height) = (context.width, context.height);
        let wanted = Format::new(width, height, FourCC::new(b"YUYV"));
        let set = Output::set_format(&device, &wanted).map_err(|e| bad(format!("cannot set the format: {e}")))?;
        let got = Output::format(&device).map_err(|e| bad(format!("cannot read the format back: {e}")))?;
        if (got.width, got.height, got.fourcc) != (width, height, wanted.fourcc) || got.fourcc != set.fourcc {
            return Err(bad(format!(
                "asked for {width}x{height} YUYV, the device has {}x{} {} (another program may hold it with \
                 another format: close it, or reload the module)",
                got.width, got.height, got.fourcc
            )));
        }
        // Write through the same open file description the format was set on (a dup of the device's fd).
        // SAFETY: the fd belongs to `device`, which this sink keeps open for as long as the borrow is used
        // (the borrow ends here: try_clone_to_owned makes an independent duplicate).
        let fd = unsafe { BorrowedFd::borrow_raw(device.handle().fd()) };
        let out = std::fs::File::from(fd.try_clone_to_owned().map_err(|e| bad(e.to_string()))?);
        tracing::info!(device = %name, card = %caps.card, width, height, "virtual camera ready (YUYV)");
        Ok(LoopbackSink { path: path.to_path_buf(), _device: device, out, view, width, height, yuyv: Vec::new() })
    }
}

/// RGB -> YUYV 4:2:2 (BT.601, limited range: what webcams send and consumers expect).
pub fn rgb_to_yuyv(image: &image::RgbImage, out: &mut Vec<u8>) {
    let (w, h) = image.dimensions();
    out.clear();
    out.reserve((w * h * 2) as usize);
    let yuv = |p: &image::Rgb<u8>| {
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        (y, u, v)
    };
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let (y0, u0, v0) = yuv(image.get_pixel(x, y));
            let (y1, u1, v1) = yuv(image.get_pixel((x + 1).min(w - 1), y));
            out.extend_from_slice(&[clamp(y0), clamp((u0 + u1) / 2.0), clamp(y1), clamp((v0 + v1) / 2.0)]);
        }
    }
}

impl Sink for LoopbackSink {
    fn write(&mut self, frame: &Processed) -> Result<()> {
        let image = compose(frame, self.view);
        if image.dimensions() != (self.width, self.height) {
            return Err(Error::Sink {
                sink: self.path.display().to_string(),
                problem: format!(
                    "frame is {:?}, the device is set to {}x{}",
                    image.dimensions(),
                    self.width,
                    self.height
                ),
            });
        }
        rgb_to_yuyv(&image, &mut self.yuyv);
        self.out
            .write_all(&self.yuyv)
            .map_err(|e| Error::Sink { sink: self.path.display().to_string(), problem: format!("write failed: {e}") })
    }

    fn finish(&mut self, _end: StreamEnd) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_of_known_colours() {
        let img = image::RgbImage::from_fn(4, 1, |x, _| match x {
            0 | 1 => image::Rgb([255, 255, 255]),
            _ => image::Rgb([0, 0, 0]),
        });
        let mut out = Vec::new();
        rgb_to_yuyv(&img, &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(&out[..4], &[235, 128, 235, 128], "white: Y 235, neutral chroma");
        assert_eq!(&out[4..], &[16, 128, 16, 128], "black: Y 16");
        let red = image::RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 0]));
        rgb_to_yuyv(&red, &mut out);
        assert_eq!(out, vec![82, 90, 82, 240]);
    }
}
