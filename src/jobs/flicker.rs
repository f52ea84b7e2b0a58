//! `latentcam flicker`: how much a converted video flickers next to its input.

use std::path::{Path, PathBuf};

use super::{claim_paths, write_text};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::imaging;
use crate::paths::NamedPath;

/// `latentcam flicker IN OUT [--json FILE]` as given: a video and its converted output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlickerRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub json: Option<PathBuf>,
}

/// What `latentcam flicker` prints (values on the 0..1 luma scale; see [`crate::flicker`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlickerReport {
    /// Frames compared: both videos' frames when they have as many, else the shorter one's (the common prefix).
    pub frames: u64,
    pub input_frames: u64,
    pub output_frames: u64,
    /// The analysis grid (the output's aspect ratio, at most 256 wide).
    pub width: u32,
    pub height: u32,
    /// The measures (`input_change` ... `warped_ratio`), at the top level of the JSON.
    #[serde(flatten)]
    pub metrics: crate::flicker::FlickerMetrics,
    /// Said when the frame counts differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FlickerRequest {
    /// Decode both videos in step (the same GStreamer source as `convert`), each frame brought to the analysis
    /// grid, and measure. Bad input (a missing or undecodable file, fewer than 2 frames) is exit code 2.
    pub fn run(&self) -> Result<FlickerReport> {
        let reads = [NamedPath::new("input", &self.input), NamedPath::new("output video", &self.output)];
        let writes: Vec<NamedPath> = self.json.iter().map(|j| NamedPath::new("--json", j)).collect();
        let _locks = claim_paths(&reads, &writes)?;
        let open = |path: &Path| {
            let spec = crate::config::SourceSpec::Gstreamer {
                input: crate::config::GstInput::Uri(path.display().to_string()),
                audio: false,
            };
            crate::source::open(&spec, Mode::Offline, false)
        };
        let mut input = open(&self.input)?;
        let mut output = open(&self.output)?;
        let format = output.format();
        let (width, height) = crate::flicker::analysis_size(format.width, format.height);
        let luma = |image: &image::RgbImage| -> Result<crate::flicker::Luma> {
            Ok(crate::flicker::Luma::from_rgb(&imaging::resize_cover(image, width, height)?))
        };
        let mut meter = crate::flicker::FlickerMeter::new();
        let (mut input_frames, mut output_frames) = (0u64, 0u64);
        loop {
            let a = input.next_frame()?;
            let b = output.next_frame()?;
            input_frames += u64::from(a.is_some());
            output_frames += u64::from(b.is_some());
            match (a, b) {
                (Some(a), Some(b)) => meter.push(luma(&a.image)?, luma(&b.image)?),
                (Some(_), None) => {
                    while input.next_frame()?.is_some() {
                        input_frames += 1;
                    }
                    break;
                }
                (None, Some(_)) => {
                    while output.next_frame()?.is_some() {
                        output_frames += 1;
                    }
                    break;
                }
                (None, None) => break,
            }
        }
        for (path, frames) in [(&self.input, input_frames), (&self.output, output_frames)] {
            if frames < 2 {
                return Err(Error::Source {
                    source_name: path.display().to_string(),
                    problem: format!("has {frames} frame(s): at least 2 are needed to measure frame-to-frame change"),
                });
            }
        }
        let note = (input_frames != output_frames).then(|| {
            format!(
                "the input has {input_frames} frames and the output {output_frames}: the first {} of each were compared",
                meter.frames()
            )
        });
        if let Some(note) = &note {
            tracing::warn!("{note}");
        }
        let report = FlickerReport {
            frames: meter.frames(),
            input_frames,
            output_frames,
            width,
            height,
            metrics: meter.metrics(),
            note,
        };
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::internal("flicker JSON", e))?;
            write_text(path, &text)?;
        }
        Ok(report)
    }
}
