//! Cameras through nokhwa (V4L2 on Linux), driven by the resilient capture loop of [`super::camera`].

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat as NokhwaFormat, CameraIndex, FrameFormat as Fourcc, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::CameraEntry;
use super::camera::{CameraDevice, CameraSource, Resilience};
use crate::config::{CameraFormat, DeviceSelector, SourceSpec};
use crate::error::{Error, Result};
use crate::frame::{Fps, FrameFormat};

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

/// A nokhwa camera as the capture loop drives it.
struct NokhwaCamera {
    index: u32,
    wanted: NokhwaFormat,
    camera: Camera,
}

impl NokhwaCamera {
    fn open(index: u32, wanted: NokhwaFormat) -> std::result::Result<NokhwaCamera, String> {
        let mut camera = Camera::new(
            CameraIndex::Index(index),
            RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted)),
        )
        .map_err(|e| format!("cannot open: {e}"))?;
        camera.open_stream().map_err(|e| format!("cannot start streaming: {e}"))?;
        Ok(NokhwaCamera { index, wanted, camera })
    }

    fn format(&self) -> FrameFormat {
        let got = self.camera.camera_format();
        FrameFormat {
            width: got.resolution().width(),
            height: got.resolution().height(),
            fps: Fps::new(got.frame_rate(), 1),
        }
    }
}

impl CameraDevice for NokhwaCamera {
    fn frame(&mut self) -> std::result::Result<image::RgbImage, String> {
        self.camera.frame().and_then(|b| b.decode_image::<RgbFormat>()).map_err(|e| e.to_string())
    }

    fn reopen(&mut self) -> std::result::Result<(), String> {
        let _ = self.camera.stop_stream();
        *self = NokhwaCamera::open(self.index, self.wanted)?;
        Ok(())
    }
}

impl Drop for NokhwaCamera {
    fn drop(&mut self) {
        let _ = self.camera.stop_stream();
    }
}

/// A camera source: the camera a [`SourceSpec::Webcam`] names, on its capture thread.
pub struct Webcam;

impl Webcam {
    pub fn open(spec: &SourceSpec) -> Result<CameraSource> {
        let SourceSpec::Webcam { device, width, height, fps, format, no_frame_timeout } = spec else {
            return Err(Error::internal("webcam source", "opened with a spec of another kind"));
        };
        let index = resolve(device.as_ref())?;
        let fourcc = match format {
            CameraFormat::Auto | CameraFormat::Mjpeg => Fourcc::MJPEG,
            CameraFormat::Yuyv => Fourcc::YUYV,
        };
        // nokhwa asks for whole rates; the closest the camera offers is taken and logged.
        let rate = fps.as_f64().round().max(1.0) as u32;
        let wanted = NokhwaFormat::new(Resolution::new(*width, *height), fourcc, rate);
        let name = format!("webcam {index}");
        let opener = {
            let name = name.clone();
            move || {
                let camera = NokhwaCamera::open(index, wanted)?;
                let got = camera.format();
                tracing::info!(camera = %name, asked = %wanted, got = %camera.camera.camera_format(), "camera format negotiated");
                Ok((camera, got))
            }
        };
        CameraSource::start(&name, opener, Resilience::with_timeout(*no_frame_timeout))
    }
}
