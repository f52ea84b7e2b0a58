//! What is done to a source's mask before it is used, in this order ([`MaskShaper::shape_with`]):
//!
//! 1. **Invert** the source: `1 - m` (with the segmenter: restyle the person, keep the room).
//! 2. **Combine** with a second mask ([`Combine`]), such as the faces to keep: after the invert, so that
//!    "restyle the person, keep the face" keeps the face.
//! 3. **Temporal smoothing**: a per-pixel exponential moving average, `m = s·previous + (1 - s)·new` with
//!    `s` = [`MaskOptions::smoothing`] (0 = off). A segmenter's probability near an edge wobbles from frame to
//!    frame; averaging it before the threshold steadies the edge. The state resets when the frame size changes.
//! 4. **Threshold** `t`: 1 where `m >= t`, else 0 (hard edges); none keeps the soft values.
//! 5. **Grow/shrink** by `px`: a maximum (grow the area to change) or minimum (shrink it) over a square window of
//!    side `2·|px| + 1`.
//! 6. **Feather** by `px`: a Gaussian blur of σ = px / 2 (three box blurs, edges extended), so the edge ramps from
//!    0 to 1 over about ±px. Done in fixed point (1/65536): a region of all 0 (or all 1) wider than the blur stays
//!    exactly 0 (1), which the pixel composite relies on.
//!
//! The filters themselves are in [`super::filter`].

use ndarray::Array2;

use super::Mask;
use crate::error::{Error, Result};

/// How a second mask `b` joins a mask `a` (both 1 = change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Change what either changes: `max(a, b)`.
    Union,
    /// Change what `a` changes and `b` does not: `a · (1 - b)`.
    Difference,
    /// Change only what both change: `min(a, b)` (with the faces' mask: keep the faces).
    Intersection,
}

impl Combine {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Combine::Union => a.max(b),
            Combine::Difference => a * (1.0 - b),
            Combine::Intersection => a.min(b),
        }
    }

    /// `union`, `difference` or `intersection`.
    pub fn parse(text: &str) -> Result<Combine> {
        match text.trim() {
            "union" => Ok(Combine::Union),
            "difference" => Ok(Combine::Difference),
            "intersection" => Ok(Combine::Intersection),
            other => {
                Err(Error::invalid("mask combine", format!("`{other}`: expected union, difference or intersection")))
            }
        }
    }
}

/// The shaping options (see the module docs for what each does and in which order).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MaskOptions {
    pub invert: bool,
    /// Binarise at this value (0 to 1); `None` keeps the soft mask.
    pub threshold: Option<f32>,
    /// Grow the area to change by this many pixels; negative shrinks it.
    pub grow_px: i32,
    /// Feather the edge over about ± this many pixels; 0 keeps it as it is.
    pub feather_px: f32,
    /// The previous frame's share in the moving average, 0 (off) to below 1.
    pub smoothing: f32,
}

/// The largest grow, shrink or feather, in pixels: past it a mask is a blur of the whole frame.
pub const MAX_SHAPE_PX: f32 = 256.0;
/// The largest smoothing: at 1 the mask would never change again.
pub const MAX_SMOOTHING: f32 = 0.99;

impl MaskOptions {
    /// These options, checked: each value in its range, naming the bad one.
    pub fn checked(self) -> Result<MaskOptions> {
        if let Some(t) = self.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Error::invalid("mask threshold", format!("{t}: expected from 0 to 1")));
        }
        if self.grow_px.unsigned_abs() as f32 > MAX_SHAPE_PX {
            return Err(Error::invalid("mask grow", format!("{} px: expected from -256 to 256", self.grow_px)));
        }
        if !(0.0..=MAX_SHAPE_PX).contains(&self.feather_px) {
            return Err(Error::invalid("mask feather", format!("{} px: expected from 0 to 256", self.feather_px)));
        }
        if !(0.0..=MAX_SMOOTHING).contains(&self.smoothing) {
            return Err(Error::invalid(
                "mask smoothing",
                format!("{}: expected from 0 to {MAX_SMOOTHING}", self.smoothing),
            ));
        }
        Ok(self)
    }
}

/// Applies [`MaskOptions`] frame after frame, keeping the moving average's state.
#[derive(Clone, Debug, Default)]
pub struct MaskShaper {
    options: MaskOptions,
    /// The smoothed mask of the last frame.
    previous: Option<Array2<f32>>,
}

impl MaskShaper {
    pub fn new(options: MaskOptions) -> Result<MaskShaper> {
        Ok(MaskShaper { options: options.checked()?, previous: None })
    }

    pub fn options(&self) -> MaskOptions {
        self.options
    }

    /// Shape from the next frame on with `options` (a live change); the average's state is kept.
    pub fn set_options(&mut self, options: MaskOptions) -> Result<()> {
        self.options = options.checked()?;
        Ok(())
    }

    /// Forget the previous frames (a cut, a new source).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// The shaped mask of this frame (see the module docs).
    pub fn shape(&mut self, mask: Mask) -> Mask {
        self.shape_with(mask, None)
    }

    /// The shaped mask of this frame, `second` (the same size) combined with the (inverted) source as it says.
    pub fn shape_with(&mut self, source: Mask, second: Option<(&Mask, Combine)>) -> Mask {
        let o = self.options;
        let mut mask = if o.invert { source.inverted() } else { source };
        if let Some((other, how)) = second {
            mask = mask.combined(other, how);
        }
        let mut values = mask.into_values();
        if o.smoothing > 0.0 {
            if let Some(previous) = self.previous.as_ref().filter(|p| p.dim() == values.dim()) {
                ndarray::Zip::from(&mut values)
                    .and(previous)
                    .for_each(|v, &p| *v = o.smoothing * p + (1.0 - o.smoothing) * *v);
            }
            self.previous = Some(values.clone());
        } else {
            self.previous = None;
        }
        if let Some(t) = o.threshold {
            values = threshold(values, t);
        }
        values = grow(values, o.grow_px);
        values = feather(values, o.feather_px);
        Mask::new(values)
    }
}

/// 1 where `v >= t`, else 0.
pub fn threshold(mut values: Array2<f32>, t: f32) -> Array2<f32> {
    values.mapv_inplace(|v| if v >= t { 1.0 } else { 0.0 });
    values
}

/// Grow (`px > 0`: a maximum filter) or shrink (`px < 0`: a minimum filter) over a `2·|px| + 1` square.
pub fn grow(values: Array2<f32>, px: i32) -> Array2<f32> {
    if px == 0 {
        return values;
    }
    super::filter::extreme(values, px.unsigned_abs() as usize, px > 0)
}

/// The widths of three box blurs whose sum approximates a Gaussian of `sigma` (W. Wells' construction, as in
/// Kovesi's "Fast almost-Gaussian filtering"): odd widths `w` and `w + 2` mixed to match the variance.
pub fn gauss_boxes(sigma: f32) -> [usize; 3] {
    const N: f32 = 3.0;
    let ideal = (12.0 * sigma * sigma / N + 1.0).sqrt();
    let mut lower = ideal.floor() as i64;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let lower = lower.max(1);
    let l = lower as f32;
    let m = ((12.0 * sigma * sigma - N * l * l - 4.0 * N * l - 3.0 * N) / (-4.0 * l - 4.0)).round() as i64;
    std::array::from_fn(|i| if (i as i64) < m { lower as usize } else { lower as usize + 2 })
}

/// Feather by `px`: a near-Gaussian blur of σ = px / 2 (see the module docs).
pub fn feather(values: Array2<f32>, px: f32) -> Array2<f32> {
    if px <= 0.0 {
        return values;
    }
    let radii = gauss_boxes(px / 2.0).map(|w| w / 2);
    if radii.iter().all(|&r| r == 0) {
        return values;
    }
    super::filter::box_blurs(values, &radii)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `size x size` mask, 1 inside the square `[lo, hi)` on both axes.
    fn square(size: usize, lo: usize, hi: usize) -> Array2<f32> {
        Array2::from_shape_fn(
            (size, size),
            |(y, x)| if (lo..hi).contains(&x) && (lo..hi).contains(&y) { 1.0 } else { 0.0 },
        )
    }

    fn ones(values: &Array2<f32>) -> usize {
        values.iter().filter(|&&v| v == 1.0).count()
    }

    #[test]
    fn grow_and_shrink_move_the_edge_by_px() {
        let m = square(20, 8, 12); // 4x4
        let grown = grow(m.clone(), 2);
        assert_eq!(ones(&grown), 8 * 8);
        assert_eq!((grown[[6, 6]], grown[[5, 6]]), (1.0, 0.0));
        let shrunk = grow(grown.clone(), -2);
        assert_eq!(shrunk, m, "closing a square gives it back");
        assert_eq!(ones(&grow(m.clone(), -2)), 0, "a 4-px square shrunk by 2 from each side is gone");
        // At the frame's edge the window is clipped, not padded with zeros: all ones stays all ones.
        let full = Array2::<f32>::ones((5, 7));
        assert_eq!(grow(full.clone(), -3), full);
        // Soft values: the maximum of each window.
        let line = Array2::from_shape_vec((1, 5), vec![0.0, 0.2, 0.9, 0.1, 0.0]).unwrap();
        assert_eq!(grow(line, 1).into_raw_vec_and_offset().0, vec![0.2, 0.9, 0.9, 0.9, 0.1]);
    }

    #[test]
    fn gauss_boxes_match_the_variance() {
        for sigma in [1.0f32, 2.0, 4.0, 10.0] {
            let widths = gauss_boxes(sigma);
            let variance: f32 = widths.iter().map(|&w| ((w * w) as f32 - 1.0) / 12.0).sum();
            // (odd integer widths: within 20% at σ = 1, closer from 2 on)
            let tolerance = if sigma < 2.0 { 0.2 } else { 0.1 };
            assert!((variance.sqrt() - sigma).abs() / sigma < tolerance, "{sigma}: {widths:?} -> {}", variance.sqrt());
            assert!(widths.iter().all(|w| w % 2 == 1));
        }
    }

    #[test]
    fn feather_ramps_over_about_px_and_keeps_flat_areas_exact() {
        // A vertical edge at x = 32 of a 64-wide mask.
        let m = Array2::from_shape_fn((16, 64), |(_, x)| if x >= 32 { 1.0 } else { 0.0 });
        let f = feather(m, 8.0);
        let row: Vec<f32> = f.row(8).to_vec();
        // Monotonic, about half at the edge, flat far from it.
        assert!(row.windows(2).all(|w| w[1] >= w[0]));
        assert!((row[31] + row[32] - 1.0).abs() < 1e-5, "{} {}", row[31], row[32]);
        assert!(row[24] < 0.05 && row[40] > 0.95, "{} {}", row[24], row[40]);
        assert!(row[28] > 0.1 && row[36] < 0.9, "{} {}", row[28], row[36]);
        // Exactly 0 and 1 beyond the blur's reach (3 boxes of radius <= 4 here).
        assert_eq!((row[0], row[12], row[63], row[50]), (0.0, 0.0, 1.0, 1.0));
        // Nothing to blur: unchanged (to the fixed point's 1/65536).
        let flat = Array2::<f32>::from_elem((4, 4), 0.3);
        assert!(feather(flat, 5.0).iter().all(|&v| (v - 0.3).abs() < 2e-5));
    }

    #[test]
    fn threshold_invert_and_order() {
        let m = Mask::new(Array2::from_shape_vec((1, 4), vec![0.1, 0.5, 0.6, 0.9]).unwrap());
        let mut s = MaskShaper::new(MaskOptions { invert: true, threshold: Some(0.5), ..Default::default() }).unwrap();
        // Inverted first (0.9, 0.5, 0.4, 0.1), then binarised at 0.5.
        assert_eq!(s.shape(m.clone()).into_values().into_raw_vec_and_offset().0, vec![1.0, 1.0, 0.0, 0.0]);
        // The second mask joins after the invert: a kept face (0 in the last two pixels) stays kept.
        let face = Mask::new(Array2::from_shape_vec((1, 4), vec![1.0, 0.0, 0.0, 1.0]).unwrap());
        let got = s.shape_with(m, Some((&face, Combine::Intersection)));
        assert_eq!(got.into_values().into_raw_vec_and_offset().0, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn smoothing_is_an_exponential_moving_average() {
        let mut s = MaskShaper::new(MaskOptions { smoothing: 0.75, ..Default::default() }).unwrap();
        let frame = |v: f32| Mask::filled(2, 2, v);
        assert_eq!(s.shape(frame(0.0)).get(0, 0), 0.0, "the first frame is itself");
        assert_eq!(s.shape(frame(1.0)).get(0, 0), 0.25);
        assert_eq!(s.shape(frame(1.0)).get(1, 1), 0.4375);
        // A one-frame flicker is damped to a quarter.
        let mut s = MaskShaper::new(MaskOptions { smoothing: 0.75, ..Default::default() }).unwrap();
        s.shape(frame(0.0));
        assert_eq!(s.shape(frame(1.0)).get(0, 0), 0.25);
        assert_eq!(s.shape(frame(0.0)).get(0, 0), 0.1875);
        // A new size starts over.
        assert_eq!(s.shape(Mask::filled(3, 2, 1.0)).get(0, 0), 1.0);
        // Off: no state.
        let mut off = MaskShaper::default();
        off.shape(frame(0.0));
        assert_eq!(off.shape(frame(1.0)).get(0, 0), 1.0);
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            MaskOptions { threshold: Some(1.5), ..Default::default() },
            MaskOptions { grow_px: -300, ..Default::default() },
            MaskOptions { feather_px: f32::NAN, ..Default::default() },
            MaskOptions { smoothing: 1.0, ..Default::default() },
        ];
        for (o, what) in bad.into_iter().zip(["threshold", "grow", "feather", "smoothing"]) {
            let err = o.checked().unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(what), "{err}");
        }
        assert_eq!(Combine::parse("union").unwrap(), Combine::Union);
        assert!(Combine::parse("xor").unwrap_err().to_string().contains("union, difference or intersection"));
    }
}
