//! A still mask image: a grayscale PNG or JPEG, white = change, black = keep, grays in between.
//!
//! It is brought to the frame's size the way frames are brought to the working size ([`crate::imaging`]): scaled
//! to cover it and centre-cropped, so a mask drawn on a frame of the input stays on the same things. Mistakes are
//! refused at load (bad input, exit code 2) rather than silently giving a wrong mask: a file that is not a PNG or
//! JPEG, a colour picture (a photo given by mistake), transparency (what should a transparent pixel mean?), and
//! an aspect ratio more than [`MAX_ASPECT_MISMATCH`] off the frame's (the crop would cut off part of the mask).

use std::path::{Path, PathBuf};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, ImageFormat};

use super::{Mask, MaskSource};
use crate::error::{Error, Result};

/// How far (as a ratio) the mask's aspect may be from the frame's: covers cropping a frame to the model's size
/// multiple (1280x720 to 1280x704 is 2.3%), not a 4:3 mask on 16:9 frames.
pub const MAX_ASPECT_MISMATCH: f64 = 0.05;
/// A pixel whose channels differ by more than this is coloured (JPEG's chroma noise on gray stays under it).
const GRAY_SPREAD: u8 = 24;
/// More than this fraction of coloured pixels makes a colour picture.
const MAX_COLOURED_FRACTION: f64 = 0.01;

/// A mask image (see the module docs), resized once per frame size.
pub struct StillMask {
    path: PathBuf,
    image: GrayImage,
    /// The last size asked for and the mask at it.
    resized: Option<Mask>,
}

fn bad(path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::invalid("mask image", format!("{}: {problem}", path.display()))
}

impl StillMask {
    /// Read and check a mask image.
    pub fn load(path: &Path) -> Result<StillMask> {
        // (a mask is small: read whole, and told by its content, whatever its name says)
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(path, "no such file"),
            _ => bad(path, e),
        })?;
        if bytes.is_empty() {
            return Err(bad(path, "is empty (0 bytes)"));
        }
        let format = match image::guess_format(&bytes) {
            Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => format,
            Ok(other) => return Err(bad(path, format!("{other:?} images are not supported (expected PNG or JPEG)"))),
            Err(_) => return Err(bad(path, "not a PNG or JPEG image")),
        };
        let image = image::load_from_memory_with_format(&bytes, format)
            .map_err(|e| bad(path, format!("cannot decode: {e}")))?;
        let image = gray(path, image)?;
        Ok(StillMask { path: path.to_path_buf(), image, resized: None })
    }

    /// A mask already decoded (a mask video's frame, as luma): no checks of colour or transparency.
    pub(crate) fn from_gray(path: &Path, image: GrayImage) -> StillMask {
        StillMask { path: path.to_path_buf(), image, resized: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the mask was asked for at some size already.
    pub(crate) fn used(&self) -> bool {
        self.resized.is_some()
    }

    /// The image's own width and height.
    pub fn source_size(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    /// Whether the mask can be brought to `width x height` frames: an error (bad input) if its aspect ratio is
    /// too far off theirs.
    pub fn check_aspect(&self, width: u32, height: u32) -> Result<()> {
        let (iw, ih) = self.image.dimensions();
        let aspect = |w: u32, h: u32| f64::from(w) / f64::from(h.max(1));
        let off = aspect(iw, ih) / aspect(width, height);
        if (off.ln()).abs() > (1.0 + MAX_ASPECT_MISMATCH).ln() {
            return Err(bad(
                &self.path,
                format!(
                    "is {iw}x{ih} (aspect {:.3}) but the frames are {width}x{height} (aspect {:.3}): make the mask \
                     the frames' shape (any size of that aspect)",
                    aspect(iw, ih),
                    aspect(width, height)
                ),
            ));
        }
        Ok(())
    }

    /// The mask at `width x height` (cover and centre-crop), or an error if the aspect is too far off.
    pub fn at_size(&mut self, width: u32, height: u32) -> Result<Mask> {
        if let Some(mask) = self.resized.as_ref().filter(|m| m.dimensions() == (width, height)) {
            return Ok(mask.clone());
        }
        self.check_aspect(width, height)?;
        let mut out = GrayImage::new(width, height);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .fit_into_destination(Some((0.5, 0.5)));
        Resizer::new().resize(&self.image, &mut out, &options).map_err(|e| Error::internal("mask image resize", e))?;
        let mask = Mask::from_gray(&out);
        self.resized = Some(mask.clone());
        Ok(mask)
    }
}

/// The image as 8-bit gray, refusing colour and transparency (see the module docs).
fn gray(path: &Path, image: DynamicImage) -> Result<GrayImage> {
    if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        if let Some((x, y, _)) = rgba.enumerate_pixels().find(|(_, _, p)| p[3] < 255) {
            return Err(bad(
                path,
                format!(
                    "has transparent pixels (the first at {x},{y}): a mask is an opaque grayscale image, white = \
                     change, black = keep"
                ),
            ));
        }
    }
    if image.color().has_color() {
        let rgb = image.to_rgb8();
        let coloured = |p: &image::Rgb<u8>| {
            let (lo, hi) = (p.0.iter().min().copied().unwrap_or(0), p.0.iter().max().copied().unwrap_or(0));
            hi - lo > GRAY_SPREAD
        };
        let count = rgb.pixels().filter(|p| coloured(p)).count();
        if count as f64 > MAX_COLOURED_FRACTION * f64::from(rgb.width()) * f64::from(rgb.height()) {
            let (x, y, p) = rgb
                .enumerate_pixels()
                .find(|(_, _, p)| coloured(p))
                .map_or((0, 0, image::Rgb([0; 3])), |(x, y, p)| (x, y, *p));
            return Err(bad(
                path,
                format!(
                    "is a colour picture ({:.0}% of its pixels are coloured, e.g. #{:02x}{:02x}{:02x} at {x},{y}): a \
                     mask is grayscale, white = change, black = keep",
                    100.0 * count as f64 / (f64::from(rgb.width()) * f64::from(rgb.height())),
                    p[0],
                    p[1],
                    p[2]
                ),
            ));
        }
    }
    Ok(image.to_luma8())
}

impl MaskSource for StillMask {
    fn mask(&mut self, frame: &image::RgbImage) -> Result<Mask> {
        self.at_size(frame.width(), frame.height())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, image: &DynamicImage) -> PathBuf {
        let path = dir.join(name);
        image.save(&path).unwrap();
        path
    }

    #[test]
    fn gray_png_resized_to_cover() {
        let dir = tempfile::tempdir().unwrap();
        // Left half black, right half white, 40x20.
        let img = GrayImage::from_fn(40, 20, |x, _| image::Luma([if x < 20 { 0 } else { 255 }]));
        let path = write(dir.path(), "m.png", &DynamicImage::ImageLuma8(img));
        let mut still = StillMask::load(&path).unwrap();
        assert_eq!(still.source_size(), (40, 20));
        let m = still.at_size(80, 40).unwrap();
        assert_eq!(m.dimensions(), (80, 40));
        assert_eq!((m.get(0, 0), m.get(79, 39)), (0.0, 1.0));
        assert!((m.coverage() - 0.5).abs() < 0.02);
        // Within the aspect tolerance: 80x39 is fine (cover and crop).
        assert_eq!(still.at_size(80, 39).unwrap().dimensions(), (80, 39));
    }

    #[test]
    fn refuses_bad_files_colours_transparency_and_aspect() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let check = |path: &Path, needle: &str| {
            let err = StillMask::load(path).err().unwrap_or_else(|| panic!("{} loaded", path.display()));
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(needle), "{err}");
        };
        check(&d.join("missing.png"), "no such file");
        std::fs::write(d.join("empty.png"), b"").unwrap();
        check(&d.join("empty.png"), "is empty");
        std::fs::write(d.join("text.png"), b"not an image at all").unwrap();
        check(&d.join("text.png"), "not a PNG or JPEG");
        let photo = image::RgbImage::from_fn(10, 10, |x, _| image::Rgb([200, 20, x as u8]));
        check(&write(d, "photo.png", &DynamicImage::ImageRgb8(photo)), "is a colour picture");
        let clear =
            image::RgbaImage::from_fn(10, 10, |x, _| image::Rgba([255, 255, 255, if x == 3 { 0 } else { 255 }]));
        check(&write(d, "clear.png", &DynamicImage::ImageRgba8(clear)), "transparent pixels (the first at 3,0)");
        // Gray stored as RGB (and opaque RGBA) is fine.
        let rgb_gray = image::RgbImage::from_fn(10, 10, |x, _| image::Rgb([x as u8 * 20; 3]));
        StillMask::load(&write(d, "g.png", &DynamicImage::ImageRgb8(rgb_gray))).unwrap();
        let mut square =
            StillMask::load(&write(d, "sq.png", &DynamicImage::ImageLuma8(GrayImage::new(10, 10)))).unwrap();
        let err = square.at_size(160, 90).unwrap_err();
        assert!(err.to_string().contains("is 10x10 (aspect 1.000) but the frames are 160x90"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
