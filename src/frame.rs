//! Frames as they travel between threads.
//!
//! Pixels are 8-bit RGB everywhere inside latentcam: sources convert on the way in (GStreamer's videoconvert,
//! nokhwa's decoder), sinks on the way out. Images sit behind `Arc` so a tee hands one frame to several sinks
//! without copying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

/// Frames per second as a fraction (video containers use 30000/1001). Never zero: a stream without a fixed
/// rate has no `Fps` (`Option<Fps>` where that can happen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fps {
    num: u32,
    den: u32,
}

impl Fps {
    /// `num / den` frames per second, reduced; None when either is zero.
    pub fn new(num: u32, den: u32) -> Option<Fps> {
        if num == 0 || den == 0 {
            return None;
        }
        let g = gcd(num, den);
        Some(Fps { num: num / g, den: den / g })
    }

    /// A whole number of frames per second.
    pub const fn whole(num: std::num::NonZeroU32) -> Fps {
        Fps { num: num.get(), den: 1 }
    }

    /// A rate from a number: whole rates exactly, the NTSC family (23.976, 29.97, 59.94, 119.88) as n/1001,
    /// anything else to a thousandth. None for zero, negative, NaN or rates above `u32::MAX`.
    pub fn from_f64(rate: f64) -> Option<Fps> {
        if !(rate.is_finite() && rate > 0.0 && rate <= f64::from(u32::MAX)) {
            return None;
        }
        if rate.fract() == 0.0 {
            return Fps::new(rate as u32, 1);
        }
        let ntsc = (rate * 1.001).round();
        if ntsc >= 1.0 && (rate - ntsc / 1.001).abs() < 0.005 && ntsc * 1000.0 <= f64::from(u32::MAX) {
            return Fps::new(ntsc as u32 * 1000, 1001);
        }
        let thousandths = (rate * 1000.0).round();
        if thousandths < 1.0 || thousandths > f64::from(u32::MAX) {
            return None;
        }
        Fps::new(thousandths as u32, 1000)
    }

    pub fn num(self) -> u32 {
        self.num
    }

    pub fn den(self) -> u32 {
        self.den
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// Duration of one frame (integer maths: no float can overflow a `Duration` here).
    pub fn frame_duration(self) -> Duration {
        Duration::from_nanos((u64::from(self.den) * 1_000_000_000) / u64::from(self.num))
    }

    /// Start of frame `n` on this rate's clock.
    pub fn frame_start(self, n: u64) -> Duration {
        let nanos = u128::from(n) * u128::from(self.den) * 1_000_000_000 / u128::from(self.num);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl std::fmt::Display for Fps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 { write!(f, "{}", self.num) } else { write!(f, "{}/{}", self.num, self.den) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_to_fractions_and_never_overflow() {
        assert_eq!(Fps::from_f64(30.0), Fps::new(30, 1));
        assert_eq!(Fps::from_f64(29.97), Fps::new(30000, 1001));
        assert_eq!(Fps::from_f64(23.976), Fps::new(24000, 1001));
        assert_eq!(Fps::from_f64(12.5), Fps::new(25, 2));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300, 1e-9] {
            assert_eq!(Fps::from_f64(bad), None, "{bad}");
        }
        assert_eq!(Fps::new(0, 1), None);
        let slowest = Fps::new(1, u32::MAX).unwrap();
        assert_eq!(slowest.frame_duration().as_secs(), u64::from(u32::MAX));
        assert_eq!(Fps::new(25, 1).unwrap().frame_start(u64::MAX), Duration::from_nanos(u64::MAX));
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
    /// Position in the stream as a player shows it (from the container, its edit lists applied, or the capture
    /// clock); None when unknown.
    pub pts: Option<Duration>,
    pub duration: Option<Duration>,
    /// 0, 1, 2, ... in capture order (gaps mean frames were dropped on the way).
    pub sequence: u64,
    /// When the frame entered latentcam: capture-to-sink latency is measured from here.
    pub captured: Instant,
    /// What comes with the frame for a guided run (the pose skeleton), set in the preprocess thread.
    pub conditioning: Conditioning,
}

impl Frame {
    /// `image` as a frame captured now: sequence 0, no timestamp, no conditioning (stills, tests, benchmarks).
    pub fn new(image: impl Into<Arc<RgbImage>>) -> Frame {
        Frame {
            image: image.into(),
            pts: None,
            duration: None,
            sequence: 0,
            captured: Instant::now(),
            conditioning: Conditioning::default(),
        }
    }
}

/// The kinds of per-frame conditioning input: one field of [`Conditioning`] each. The frame path lists which
/// of them a run takes and how each is uploaded (`diffusion::frame_path::conditioning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditioningKind {
    /// The OpenPose skeleton (ControlNet's conditioning image).
    Skeleton,
    /// Where to change the picture: 8-bit gray, 255 = change, 0 = keep (latent blending).
    Mask,
}

impl ConditioningKind {
    pub const ALL: [ConditioningKind; 2] = [ConditioningKind::Skeleton, ConditioningKind::Mask];

    /// In messages.
    pub fn name(self) -> &'static str {
        match self {
            ConditioningKind::Skeleton => "skeleton",
            ConditioningKind::Mask => "mask",
        }
    }
}

/// The per-frame inputs that travel with a frame beside its picture, each at the working size, 8 bits per
/// channel. Cheap to clone (the images are shared).
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// The OpenPose skeleton, RGB on black (pose-guided runs).
    pub skeleton: Option<Arc<RgbImage>>,
    /// Where to change the picture, 255 = change (masked runs).
    pub mask: Option<Arc<image::GrayImage>>,
    /// Show the input's own pixels outside the mask, the generated picture faded in over this many pixels on
    /// the changed side of the edge ([`crate::composite`]); None: the output as generated.
    pub composite_px: Option<u32>,
}

/// A frame's conditioning when it has none.
static NO_CONDITIONING: Conditioning = Conditioning { skeleton: None, mask: None, composite_px: None };

impl Conditioning {
    /// No conditioning input, borrowed for as long as needed.
    pub fn none() -> &'static Conditioning {
        &NO_CONDITIONING
    }

    /// Only a skeleton.
    pub fn skeleton(skeleton: Arc<RgbImage>) -> Conditioning {
        Conditioning { skeleton: Some(skeleton), ..Conditioning::default() }
    }

    /// Only a mask.
    pub fn mask(mask: Arc<image::GrayImage>) -> Conditioning {
        Conditioning { mask: Some(mask), ..Conditioning::default() }
    }

    /// The 8-bit pixels of input `kind` (interleaved channels, row by row), if the frame has it.
    pub fn bytes(&self, kind: ConditioningKind) -> Option<&[u8]> {
        match kind {
            ConditioningKind::Skeleton => self.skeleton.as_deref().map(|image| image.as_raw().as_slice()),
            ConditioningKind::Mask => self.mask.as_deref().map(|image| image.as_raw().as_slice()),
        }
    }
}

/// A frame after diffusion: the model-sized input beside the output (for side-by-side views).
#[derive(Clone, Debug)]
pub struct Processed {
    pub input: Arc<RgbImage>,
    pub output: Arc<RgbImage>,
    /// What the output was conditioned on (the skeleton, for the pose view).
    pub conditioning: Conditioning,
    pub pts: Option<Duration>,
    pub duration: Option<Duration>,
    pub sequence: u64,
    pub captured: Instant,
}
