//! MediaPipe's image-to-tensor and mask-to-frame resampling, reproduced so the models see what they see in
//! MediaPipe (a different resize moves a mask's edge and a face box by a pixel or more).
//!
//! - Frame to tensor (MediaPipe's `ImageToTensorCalculator`, OpenCV converter): the region of interest's corners
//!   are mapped onto the tensor's corners and `cv::warpPerspective` samples the 8-bit frame with `INTER_LINEAR`
//!   and a zero border: tensor pixel `(xd, yd)` reads the frame at `(left + xd·sx, top + yd·sy)` (pixel indices,
//!   no half-pixel offset; `sx` = region width / tensor width), quantised to 1/32 pixel, with OpenCV's
//!   fixed-point bilinear weights and rounding back to 8 bits. No antialiasing: downscaling decimates. Then the
//!   8-bit values are mapped linearly onto the model's range (0..1, or -1..1).
//! - Tensor mask to frame (`TensorsToSegmentationCalculator`): `cv::resize` with `INTER_LINEAR` on floats
//!   (half-pixel centres, edges clamped).
//!
//! scripts/golden/mask.py documents and checks the whole chain against MediaPipe itself.

use image::RgbImage;

/// OpenCV's `INTER_BITS`: source coordinates are quantised to 1/32 pixel.
const SUBPIXEL_STEPS: i64 = 32;

/// An axis-aligned region of the frame, in pixels (it may reach outside the frame: that is zero padding).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Region {
    /// The whole `width x height` frame (stretched onto the tensor).
    pub fn whole(width: u32, height: u32) -> Region {
        Region { left: 0.0, top: 0.0, width: f64::from(width), height: f64::from(height) }
    }

    /// The square of side max(width, height) centred on the frame: MediaPipe's letterbox for a square tensor
    /// (`keep_aspect_ratio`), with the padding on the short side split evenly.
    pub fn letterbox_square(width: u32, height: u32) -> Region {
        let side = f64::from(width.max(height));
        Region {
            left: (f64::from(width) - side) / 2.0,
            top: (f64::from(height) - side) / 2.0,
            width: side,
            height: side,
        }
    }

    /// A point normalised to the tensor (0..1 across it) in frame pixels.
    pub fn to_frame(&self, x_n: f32, y_n: f32) -> (f32, f32) {
        ((self.left + f64::from(x_n) * self.width) as f32, (self.top + f64::from(y_n) * self.height) as f32)
    }
}

/// One axis of the warp: for each tensor index, the source pixel to the top/left and the 1/32 fraction.
fn sample_positions(start: f64, step: f64, count: usize) -> Vec<(i64, i64)> {
    (0..count)
        .map(|d| {
            // OpenCV rounds the scaled coordinate half to even (cvRound).
            let q = ((start + d as f64 * step) * SUBPIXEL_STEPS as f64).round_ties_even() as i64;
            (q.div_euclid(SUBPIXEL_STEPS), q.rem_euclid(SUBPIXEL_STEPS))
        })
        .collect()
}

/// Sample `region` of `frame` into `out`, an NHWC `[1, height, width, 3]` RGB tensor (row-major), the 8-bit
/// values mapped linearly so that 0 becomes `range.0` and 255 `range.1`. See the module docs.
pub fn frame_to_tensor(
    frame: &RgbImage,
    region: Region,
    width: usize,
    height: usize,
    range: (f32, f32),
    out: &mut [f32],
) {
    assert_eq!(out.len(), width * height * 3, "tensor buffer size");
    let (fw, fh) = (i64::from(frame.width()), i64::from(frame.height()));
    let raw = frame.as_raw();
    let xs = sample_positions(region.left, region.width / width as f64, width);
    let ys = sample_positions(region.top, region.height / height as f64, height);
    let scale = (range.1 - range.0) / 255.0;
    // A neighbour outside the frame reads 0 (OpenCV's BORDER_CONSTANT).
    let pixel = |x: i64, y: i64, c: usize| -> i64 {
        if x < 0 || y < 0 || x >= fw || y >= fh { 0 } else { i64::from(raw[((y * fw + x) * 3) as usize + c]) }
    };
    for (yd, &(iy, fy)) in ys.iter().enumerate() {
        for (xd, &(ix, fx)) in xs.iter().enumerate() {
            // OpenCV's bilinear table for a 1/32 grid holds exact weights summing to 1024 (x 32 in 15-bit fixed
            // point); the result is rounded half up.
            let weights = [
                (SUBPIXEL_STEPS - fx) * (SUBPIXEL_STEPS - fy),
                fx * (SUBPIXEL_STEPS - fy),
                (SUBPIXEL_STEPS - fx) * fy,
                fx * fy,
            ];
            let at = (yd * width + xd) * 3;
            for c in 0..3 {
                let sum = pixel(ix, iy, c) * weights[0]
                    + pixel(ix + 1, iy, c) * weights[1]
                    + pixel(ix, iy + 1, c) * weights[2]
                    + pixel(ix + 1, iy + 1, c) * weights[3];
                let value = (sum + 512) >> 10;
                out[at + c] = value as f32 * scale + range.0;
            }
        }
    }
}

/// For each destination index along one axis of a linear resize from `source` to `dest` samples: the first
/// source index and the weight of the next one (OpenCV's `INTER_LINEAR`: half-pixel centres, clamped at edges).
fn linear_taps(source: usize, dest: usize) -> Vec<(usize, usize, f32)> {
    let scale = source as f64 / dest as f64;
    (0..dest)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut i = f.floor() as i64;
            let mut t = f - i as f32;
            if i < 0 {
                (i, t) = (0, 0.0);
            }
            if i >= source as i64 - 1 {
                (i, t) = (source as i64 - 1, 0.0);
            }
            let i = i as usize;
            (i, (i + 1).min(source - 1), t)
        })
        .collect()
}

/// Resize a `[src_h, src_w]` single-channel float image (row-major) to `[height, width]` with `cv::resize`'s
/// `INTER_LINEAR` (horizontal pass, then vertical).
pub fn resize_linear(src: &[f32], src_w: usize, src_h: usize, width: usize, height: usize) -> Vec<f32> {
    assert_eq!(src.len(), src_w * src_h, "source size");
    let xs = linear_taps(src_w, width);
    let ys = linear_taps(src_h, height);
    let mut rows = vec![0.0f32; src_h * width];
    for (row, out) in src.chunks_exact(src_w).zip(rows.chunks_exact_mut(width)) {
        for (o, &(i0, i1, t)) in out.iter_mut().zip(&xs) {
            *o = row[i0] * (1.0 - t) + row[i1] * t;
        }
    }
    let mut out = vec![0.0f32; width * height];
    for (line, &(j0, j1, t)) in out.chunks_exact_mut(width).zip(&ys) {
        let (a, b) = (&rows[j0 * width..(j0 + 1) * width], &rows[j1 * width..(j1 + 1) * width]);
        for ((o, &va), &vb) in line.iter_mut().zip(a).zip(b) {
            *o = va * (1.0 - t) + vb * t;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frame_at_its_own_size_is_the_frame() {
        let frame = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
        let mut out = vec![0.0; 5 * 3 * 3];
        frame_to_tensor(&frame, Region::whole(5, 3), 5, 3, (0.0, 255.0), &mut out);
        let back: Vec<u8> = out.iter().map(|v| *v as u8).collect();
        assert_eq!(back, *frame.as_raw());
    }

    #[test]
    fn half_pixel_steps_average_and_the_border_is_zero() {
        // 2x upsampling of a 2x1 frame: samples at x = 0, 0.5, 1, 1.5: the last mixes in the zero border.
        let frame = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 100 } else { 200 }; 3]));
        let region = Region { left: 0.0, top: 0.0, width: 2.0, height: 1.0 };
        let mut out = vec![0.0; 4 * 3];
        frame_to_tensor(&frame, region, 4, 1, (-1.0, 1.0), &mut out);
        let red: Vec<f32> = out.iter().step_by(3).map(|v| ((v + 1.0) * 127.5).round()).collect();
        assert_eq!(red, vec![100.0, 150.0, 200.0, 100.0]);
    }

    #[test]
    fn letterbox_geometry() {
        let r = Region::letterbox_square(512, 288);
        assert_eq!((r.left, r.top, r.width, r.height), (0.0, -112.0, 512.0, 512.0));
        assert_eq!(r.to_frame(0.5, 0.5), (256.0, 144.0));
        let r = Region::letterbox_square(288, 512);
        assert_eq!(r.to_frame(0.0, 1.0), (-112.0, 512.0));
    }

    #[test]
    fn linear_resize_matches_opencv_taps() {
        // 2 -> 4: centres at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let out = resize_linear(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        // Same size: unchanged.
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_linear(&src, 4, 3, 4, 3), src);
    }
}
