//! Masks: which part of a frame to restyle. A [`Mask`] is one value per frame pixel in 0..1, **1 = change** (the
//! model restyles it), **0 = keep** (the input shows through).
//!
//! - Sources, behind [`MaskSource`], each giving a mask at the frame's size: the person [`Segmenter`] (MediaPipe
//!   selfie segmentation; by default the background changes and the person is kept), [`FaceDetector`] (BlazeFace:
//!   faces kept as ellipses), a [`StillMask`] image (white = change) and a [`Chroma`] key (near the key = change).
//! - [`shape`]: what is done to a source's mask: invert, combining with a second mask (the faces to keep),
//!   smoothing over time, threshold, grow/shrink and feather, in that order ([`MaskShaper`]).
//! - [`stage`]: all of it per frame from a [`MaskSpec`] ([`MaskMaker`]: what `latentcam mask` and a pipeline run).
//! - [`models`] finds the MediaPipe models (a folder or file, recognised by their ports, as pose models are).
//!
//! The preprocessing of the two MediaPipe models is MediaPipe's own ([`warp`]), so masks and face boxes match its
//! Python solutions (tests/mask.rs against scripts/golden/mask.py).

pub mod chroma;
pub mod faces;
pub mod filter;
pub mod models;
pub mod segmenter;
pub mod shape;
pub mod stage;
pub mod still;
pub mod video;
pub mod warp;

use image::{GrayImage, RgbImage};
use ndarray::Array2;

pub use self::chroma::Chroma;
pub use self::faces::{Face, FaceDetector};
pub use self::segmenter::Segmenter;
pub use self::shape::{Combine, MaskOptions, MaskShaper};
pub use self::stage::{MaskMaker, MaskSpec, PipelineMask, SourceSpec};
pub use self::still::StillMask;
pub use self::video::VideoMask;
use crate::error::Result;

/// One value per pixel, `[height, width]`, in 0..1: 1 = change, 0 = keep.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    values: Array2<f32>,
}

impl Mask {
    /// A mask of `values` (`[height, width]`), clamped to 0..1 (a NaN becomes 0: keep).
    pub fn new(mut values: Array2<f32>) -> Mask {
        values.mapv_inplace(|v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) });
        Mask { values }
    }

    /// `value` everywhere.
    pub fn filled(width: u32, height: u32, value: f32) -> Mask {
        Mask::new(Array2::from_elem((height as usize, width as usize), value))
    }

    pub fn width(&self) -> u32 {
        self.values.ncols() as u32
    }

    pub fn height(&self) -> u32 {
        self.values.nrows() as u32
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.width(), self.height())
    }

    /// The value at pixel (`x`, `y`).
    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.values[[y as usize, x as usize]]
    }

    /// The values, `[height, width]`.
    pub fn values(&self) -> &Array2<f32> {
        &self.values
    }

    pub fn into_values(self) -> Array2<f32> {
        self.values
    }

    /// The fraction of the frame to change (the mean value).
    pub fn coverage(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().map(|&v| f64::from(v)).sum::<f64>() / self.values.len() as f64
    }

    /// The mask as an 8-bit grayscale picture, white = change (`round(v * 255)`).
    pub fn to_gray(&self) -> GrayImage {
        let (w, h) = self.dimensions();
        GrayImage::from_fn(w, h, |x, y| image::Luma([(self.get(x, y) * 255.0).round() as u8]))
    }

    /// A grayscale picture as a mask, white = change.
    pub fn from_gray(image: &GrayImage) -> Mask {
        let (w, h) = image.dimensions();
        Mask::new(Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
            f32::from(image.get_pixel(x as u32, y as u32)[0]) / 255.0
        }))
    }

    /// `1 - self`: what was kept changes, and what changed is kept.
    pub fn inverted(mut self) -> Mask {
        self.values.mapv_inplace(|v| 1.0 - v);
        self
    }

    /// This mask combined with `other` (the same size) by `how`.
    pub fn combined(mut self, other: &Mask, how: Combine) -> Mask {
        debug_assert_eq!(self.dimensions(), other.dimensions());
        ndarray::Zip::from(&mut self.values).and(&other.values).for_each(|a, &b| *a = how.apply(*a, b));
        self
    }
}

/// A mask source: a frame in, its mask (at the frame's size, 1 = change) out. Each owns what it needs (an ONNX
/// session, a resized image), so one runs per thread.
pub trait MaskSource: Send {
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_converts() {
        let m = Mask::new(Array2::from_shape_vec((1, 4), vec![-1.0, 0.5, 2.0, f32::NAN]).unwrap());
        assert_eq!(m.values().as_slice().unwrap(), &[0.0, 0.5, 1.0, 0.0]);
        assert_eq!(m.dimensions(), (4, 1));
        assert_eq!(m.to_gray().as_raw(), &[0, 128, 255, 0]);
        assert!((m.coverage() - 0.375).abs() < 1e-9);
        let back = Mask::from_gray(&m.to_gray());
        assert_eq!(back.get(2, 0), 1.0);
        assert_eq!(m.clone().inverted().values().as_slice().unwrap(), &[1.0, 0.5, 0.0, 1.0]);
    }

    #[test]
    fn combines() {
        let a = Mask::new(Array2::from_shape_vec((1, 3), vec![1.0, 0.5, 0.0]).unwrap());
        let b = Mask::new(Array2::from_shape_vec((1, 3), vec![0.5, 0.5, 1.0]).unwrap());
        let got = |how| a.clone().combined(&b, how).into_values().into_raw_vec_and_offset().0;
        assert_eq!(got(Combine::Union), vec![1.0, 0.5, 1.0]);
        assert_eq!(got(Combine::Intersection), vec![0.5, 0.5, 0.0]);
        assert_eq!(got(Combine::Difference), vec![0.5, 0.25, 0.0]);
    }
}
