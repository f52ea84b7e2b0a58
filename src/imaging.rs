//! Still images in and out, and the conversion between pixels and the models' tensors.
//!
//! Sizes: [`crate::sizing`] decides the working size (by default the input's aspect at about the model's
//! native area); [`fit_image`] brings a picture to it.
//!
//! Grayscale inputs become RGB; an alpha channel is dropped (as diffusers' `load_image` does); an EXIF
//! orientation (JPEG, PNG) is applied, as every viewer does.

use std::path::{Path, PathBuf};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageFormat, RgbImage};
use ndarray::{Array4, ArrayView4};

use crate::config::WorkingSize;
use crate::error::{Error, Result};

/// Read a PNG or JPEG (any bit depth, gray/RGB/RGBA) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bad = |problem: String| Error::ImageRead { path: path.to_path_buf(), problem };
    let reader = image::ImageReader::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file".into()),
        _ => bad(e.to_string()),
    })?;
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(bad("is empty (0 bytes)".into()));
    }
    let reader = reader.with_guessed_format().map_err(|e| bad(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => return Err(bad(format!("{other:?} images are not supported (expected PNG or JPEG)"))),
        None => return Err(bad("not a PNG or JPEG image".into())),
    }
    let mut decoder = reader.into_decoder().map_err(|e| bad(format!("cannot decode: {e}")))?;
    // Cameras store the sensor's pixels and say in EXIF how to turn them (a portrait photo is landscape
    // pixels with orientation 6): turned here, every use (diffusion, pose keypoints, outputs) sees it upright.
    let orientation =
        image::ImageDecoder::orientation(&mut decoder).unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = image::DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("cannot decode: {e}")))?;
    if orientation != image::metadata::Orientation::NoTransforms {
        tracing::debug!(path = %path.display(), ?orientation, "turned upright by its EXIF orientation");
        image.apply_orientation(orientation);
    }
    Ok(image.to_rgb8())
}

/// Bring an image to `size`: centre-cropped when that only cuts what the model's multiple requires (no
/// resampling), else scaled to cover it (Lanczos3) and centre-cropped (never distorted). See [`crate::sizing`].
pub fn fit_image(image: &RgbImage, size: WorkingSize) -> Result<RgbImage> {
    let (w, h) = size.dims();
    let (iw, ih) = image.dimensions();
    if (w, h) == (iw, ih) {
        return Ok(image.clone());
    }
    if w <= iw && h <= ih && iw - w < size.multiple() && ih - h < size.multiple() {
        let (x, y) = ((iw - w) / 2, (ih - h) / 2);
        return Ok(image::imageops::crop_imm(image, x, y, w, h).to_image());
    }
    resize_cover(image, w, h)
}

/// Scale to cover `width`×`height` and center-crop.
pub fn resize_cover(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if image.dimensions() == (width, height) {
        return Ok(image.clone());
    }
    let mut out = RgbImage::new(width, height);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .fit_into_destination(Some((0.5, 0.5)));
    Resizer::new()
        .resize(image, &mut out, &options)
        .map_err(|e| Error::invalid("size", format!("cannot resize to {width}x{height}: {e}")))?;
    Ok(out)
}

/// RGB pixels -> `[1, 3, H, W]` in 0..1.
pub fn to_tensor(image: &RgbImage) -> Array4<f32> {
    let (w, h) = image.dimensions();
    let raw = image.as_raw();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| {
        f32::from(raw[(y * w as usize + x) * 3 + c]) / 255.0
    })
}

/// `[1, 3, H, W]` in 0..1 -> RGB pixels (clamped, rounded as diffusers' `numpy_to_pil` does).
pub fn from_tensor(tensor: ArrayView4<f32>) -> RgbImage {
    let (_, _, h, w) = tensor.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c| (tensor[[0, c, y as usize, x as usize]].clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// An output image file: checked before any work is done (extension, writable folder), written atomically
/// at the end (a temporary file beside it, renamed into place), so a failure never leaves half a file.
pub struct OutputImage {
    path: PathBuf,
    format: ImageFormat,
    partial: crate::paths::PartialFile,
}

impl OutputImage {
    pub fn create(path: &Path) -> Result<OutputImage> {
        let bad = |problem: String| Error::Output { path: path.to_path_buf(), problem };
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("png") => ImageFormat::Png,
            Some("jpg" | "jpeg") => ImageFormat::Jpeg,
            _ => return Err(bad("unknown image type (expected a .png, .jpg or .jpeg file name)".into())),
        };
        if path.is_dir() {
            return Err(bad("is a folder".into()));
        }
        let dir = crate::paths::parent_folder(path);
        crate::paths::probe_writable_folder(path, &dir)?;
        let partial = crate::paths::PartialFile::new(path)
            .map_err(|e| bad(format!("cannot write in {}: {}", dir.display(), crate::paths::plain_io_error(&e))))?;
        Ok(OutputImage { path: path.to_path_buf(), format, partial })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the image (a failure here is I/O while running: disk full, file-size limit).
    pub fn write(self, image: &RgbImage) -> Result<()> {
        self.write_buffer(image)
    }

    /// Write a grayscale image (a mask), as [`OutputImage::write`] does.
    pub fn write_gray(self, image: &image::GrayImage) -> Result<()> {
        self.write_buffer(image)
    }

    fn write_buffer<P>(mut self, image: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Result<()>
    where
        P: image::PixelWithColorType,
        [P::Subpixel]: image::EncodableLayout,
    {
        let path = self.path.clone();
        {
            let mut writer = std::io::BufWriter::new(self.partial.file_mut());
            image.write_to(&mut writer, self.format).map_err(|e| Error::write(&path, e))?;
            std::io::Write::flush(&mut writer).map_err(|e| Error::write(&path, e))?;
        }
        self.partial.commit().map_err(|e| Error::write(&path, e))
    }
}

/// Peak signal-to-noise ratio in dB between two same-size 8-bit RGB images.
pub fn psnr_db(a: &RgbImage, b: &RgbImage) -> Option<f64> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let sum_sq: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = sum_sq / a.as_raw().len() as f64;
    Some(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_is_exact() {
        let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 15, y as u8 * 30, (x + y) as u8]));
        let t = to_tensor(&img);
        assert_eq!(t.dim(), (1, 3, 8, 16));
        assert_eq!(from_tensor(t.view()), img);
    }

    #[test]
    fn crop_to_multiple_centers_and_resize_covers() {
        let img = RgbImage::from_fn(451, 300, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
        let cropped = fit_image(&img, WorkingSize::new(448, 256, 64).unwrap()).unwrap();
        assert_eq!(cropped.dimensions(), (448, 256));
        assert_eq!(cropped.get_pixel(0, 0)[0], 1, "1 pixel off the left for a 3-pixel crop");
        let resized = fit_image(&img, WorkingSize::new(128, 64, 64).unwrap()).unwrap();
        assert_eq!(resized.dimensions(), (128, 64));
        // A larger size than the input is covered, not cropped.
        let up = fit_image(&img, WorkingSize::new(512, 320, 64).unwrap()).unwrap();
        assert_eq!(up.dimensions(), (512, 320));
    }
}
