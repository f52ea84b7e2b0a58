//! Frames as they travel between threads.
//!
//! Pixels are 8-bit RGB everywhere inside latentcam: sources convert on the way in (GStreamer's videoconvert,
//! nokhwa's decoder), sinks on the way out. Images sit behind `Arc` so a tee hands one frame to several sinks
//! without copying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

/// Frames per second as a fraction (video containers use 30000/1001).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fps {
    pub num: u32,
    pub den: u32,
}

impl Fps {
    pub fn new(num: u32, den: u32) -> Fps {
        Fps { num, den: den.max(1) }
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// Duration of one frame; None for a zero rate (variable-rate streams).
    pub fn frame_duration(self) -> Option<Duration> {
        (self.num > 0).then(|| Duration::from_secs_f64(f64::from(self.den) / f64::from(self.num)))
    }
}

impl std::fmt::Display for Fps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 { write!(f, "{}", self.num) } else { write!(f, "{}/{}", self.num, self.den) }
    }
}

/// What a source delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFormat {
    pub width: u32,
    pub height: u32,
    /// None when the source has no fixed rate.
    pub fps: Option<Fps>,
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub image: Arc<RgbImage>,
    /// Position in the stream (from the container or the capture clock); None when unknown.
    pub pts: Option<Duration>,
    pub duration: Option<Duration>,
    /// 0, 1, 2, ... in capture order (gaps mean frames were dropped on the way).
    pub sequence: u64,
    /// When the frame entered latentcam: capture-to-sink latency is measured from here.
    pub captured: Instant,
}

/// A frame after diffusion: the model-sized input beside the output (for side-by-side views).
#[derive(Clone, Debug)]
pub struct Processed {
    pub input: Arc<RgbImage>,
    pub output: Arc<RgbImage>,
    pub pts: Option<Duration>,
    pub duration: Option<Duration>,
    pub sequence: u64,
    pub captured: Instant,
}
