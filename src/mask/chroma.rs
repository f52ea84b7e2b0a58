//! A chroma key: pixels near the key colour change (a green screen is restyled, what stands before it is kept).
//!
//! Nearness is a distance in YCbCr (BT.601, full range, 0..255 units) with the brightness difference counted at
//! [`LUMA_WEIGHT`]: a screen's shadows and folds differ from the key mostly in brightness, a person from it in hue.
//! Pixels within `tolerance` of the key are 1, pixels beyond `tolerance · (1 +` [`SOFT_EDGE`]`)` are 0, linear in
//! between (a soft edge for hair and motion blur).

use image::RgbImage;
use ndarray::Array2;

use super::{Mask, MaskSource};
use crate::error::{Error, Result};

/// How much a difference in brightness counts against one in colour.
pub const LUMA_WEIGHT: f32 = 0.25;
/// The soft edge's width as a fraction of the tolerance.
pub const SOFT_EDGE: f32 = 0.5;
/// The tolerance when none is given: a lit green screen's pixels fall within it, skin and clothes do not.
pub const DEFAULT_TOLERANCE: f32 = 48.0;
/// The largest tolerance: the distance from black to white with every channel apart.
pub const MAX_TOLERANCE: f32 = 255.0;

/// A chroma key (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chroma {
    key: [u8; 3],
    tolerance: f32,
    /// The key in YCbCr.
    key_ycc: [f32; 3],
}

fn ycbcr([r, g, b]: [u8; 3]) -> [f32; 3] {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    [
        0.299 * r + 0.587 * g + 0.114 * b,
        128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b,
        128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b,
    ]
}

impl Chroma {
    /// A key colour and a tolerance (0 to [`MAX_TOLERANCE`]).
    pub fn new(key: [u8; 3], tolerance: f32) -> Result<Chroma> {
        if !(0.0..=MAX_TOLERANCE).contains(&tolerance) {
            return Err(Error::invalid("chroma tolerance", format!("{tolerance}: expected from 0 to {MAX_TOLERANCE}")));
        }
        Ok(Chroma { key, tolerance, key_ycc: ycbcr(key) })
    }

    /// `RRGGBB` or `RRGGBB:TOLERANCE` (a `#` before the colour is allowed), e.g. `00ff00:40`.
    pub fn parse(spec: &str) -> Result<Chroma> {
        let bad = |problem: &str| Error::invalid("chroma key", format!("`{spec}`: {problem}"));
        let (colour, tolerance) = match spec.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (spec, None),
        };
        let hex = colour.trim().trim_start_matches('#');
        if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("expected a colour as RRGGBB (six hex digits, e.g. 00ff00), then optionally :TOLERANCE"));
        }
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
        let tolerance = match tolerance {
            None => DEFAULT_TOLERANCE,
            Some(t) => t.trim().parse::<f32>().map_err(|_| bad("the tolerance after `:` is not a number"))?,
        };
        Chroma::new([channel(0), channel(2), channel(4)], tolerance)
    }

    pub fn key(&self) -> [u8; 3] {
        self.key
    }

    pub fn tolerance(&self) -> f32 {
        self.tolerance
    }

    /// The mask value of one pixel: 1 near the key, 0 far from it.
    pub fn value(&self, rgb: [u8; 3]) -> f32 {
        let [y, cb, cr] = ycbcr(rgb);
        let [ky, kcb, kcr] = self.key_ycc;
        let d2 = (LUMA_WEIGHT * (y - ky)).powi(2) + (cb - kcb).powi(2) + (cr - kcr).powi(2);
        let (tolerance, soft) = (self.tolerance, self.tolerance * SOFT_EDGE);
        // (squared distances first: the square root only for the few pixels on the soft edge)
        if d2 <= tolerance * tolerance {
            1.0
        } else if soft <= 0.0 || d2 >= (tolerance + soft) * (tolerance + soft) {
            0.0
        } else {
            1.0 - (d2.sqrt() - tolerance) / soft
        }
    }
}

impl MaskSource for Chroma {
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        let (w, h) = frame.dimensions();
        let values = frame.pixels().map(|p| self.value(p.0)).collect();
        let values =
            Array2::from_shape_vec((h as usize, w as usize), values).map_err(|e| Error::internal("chroma", e))?;
        Ok(Mask::new(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_colour_and_tolerance() {
        let c = Chroma::parse("00ff00").unwrap();
        assert_eq!((c.key(), c.tolerance()), ([0, 255, 0], DEFAULT_TOLERANCE));
        let c = Chroma::parse("#1E90ff:30").unwrap();
        assert_eq!((c.key(), c.tolerance()), ([0x1e, 0x90, 0xff], 30.0));
        for (spec, needle) in [
            ("00ff0", "six hex digits"),
            ("green", "six hex digits"),
            ("00ff00:x", "not a number"),
            ("00ff00:300", "from 0 to"),
        ] {
            let err = Chroma::parse(spec).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn near_the_key_changes_far_is_kept() {
        let c = Chroma::parse("00ff00:40").unwrap();
        assert_eq!(c.value([0, 255, 0]), 1.0);
        // A darker green (a shadow on the screen): mostly a brightness change, still keyed.
        assert_eq!(c.value([0, 200, 0]), 1.0);
        // Skin, white, black, blue: kept.
        for other in [[224, 172, 105], [255, 255, 255], [0, 0, 0], [0, 0, 255]] {
            assert_eq!(c.value(other), 0.0, "{other:?}");
        }
        // 37% of the way from the key to gray (distance 50, within the soft edge of 40 to 60): about half.
        let v = c.value([47, 208, 47]);
        assert!((v - 0.5).abs() < 0.05, "{v}");
        // As a mask.
        let frame = RgbImage::from_fn(4, 2, |x, _| image::Rgb(if x < 2 { [0, 255, 0] } else { [255, 0, 0] }));
        let m = Chroma::parse("00ff00").unwrap().mask(&frame).unwrap();
        assert_eq!(m.values().row(0).to_vec(), vec![1.0, 1.0, 0.0, 0.0]);
    }
}
