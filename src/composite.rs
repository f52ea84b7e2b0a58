//! The pixel composite of a masked run: outside the mask the output is the input's own pixels, exactly (latent
//! blending keeps the latents, but the VAE's round trip still moves the pixels a little); inside, the generated
//! picture, faded in over `feather_px` on the changed side of the edge so that no seam shows.
//!
//! The weight of the generated picture is `min(m, box_blur(m, feather_px))` for the mask `m` (0..1): the blur makes
//! the ramp, and the minimum keeps it inside the changed area, so every pixel with `m = 0` has weight 0 and is the
//! input's. The blur is two passes of running sums: O(pixels), whatever the feather.

use image::{GrayImage, RgbImage};

/// `input` where the mask is 0, `generated` where it is 255, feathered inwards over `feather_px` pixels.
/// All three have the same size (the working size).
pub fn composite(input: &RgbImage, generated: &RgbImage, mask: &GrayImage, feather_px: u32) -> RgbImage {
    debug_assert_eq!(input.dimensions(), generated.dimensions());
    debug_assert_eq!(input.dimensions(), mask.dimensions());
    let weights = weights(mask, feather_px);
    let mut out = input.clone();
    for ((o, g), w) in out.pixels_mut().zip(generated.pixels()).zip(&weights) {
        if *w == 0.0 {
            continue; // the input's own pixel, untouched
        }
        for c in 0..3 {
            let (a, b) = (f32::from(o.0[c]), f32::from(g.0[c]));
            o.0[c] = (a + w * (b - a)).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Per pixel, row by row: the generated picture's weight, 0..1.
pub fn weights(mask: &GrayImage, feather_px: u32) -> Vec<f32> {
    let m: Vec<f32> = mask.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    if feather_px == 0 {
        return m;
    }
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let r = feather_px as usize;
    let blurred = box_blur_columns(&box_blur_rows(&m, w, h, r), w, h, r);
    m.iter().zip(&blurred).map(|(a, b)| a.min(*b)).collect()
}

/// Mean over `[x - r, x + r]` in each row, the window clipped at the borders (edges count what they have).
fn box_blur_rows(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let mut prefix = Vec::with_capacity(w + 1);
        prefix.push(0.0f64);
        for &v in row {
            prefix.push(prefix.last().copied().unwrap_or(0.0) + f64::from(v));
        }
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(r), (x + r + 1).min(w));
            out[y * w + x] = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
        }
    }
    out
}

/// The same down each column.
fn box_blur_columns(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    let mut prefix = vec![0.0f64; h + 1];
    for x in 0..w {
        for y in 0..h {
            prefix[y + 1] = prefix[y] + f64::from(src[y * w + x]);
        }
        for y in 0..h {
            let (lo, hi) = (y.saturating_sub(r), (y + r + 1).min(h));
            out[y * w + x] = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
    }

    #[test]
    fn where_the_mask_is_zero_the_output_is_the_input_exactly() {
        let (w, h) = (48, 32);
        let input = picture(w, h, |x, y| [(x * 5) as u8, (y * 7) as u8, 90]);
        let generated = picture(w, h, |x, y| [200, (x + y) as u8, (x * y) as u8]);
        // A soft blob on the right, zero on the left.
        let mask = GrayImage::from_fn(w, h, |x, y| {
            let d = ((x as f32 - 36.0).powi(2) + (y as f32 - 16.0).powi(2)).sqrt();
            image::Luma([(255.0 * (1.0 - d / 14.0).clamp(0.0, 1.0)) as u8])
        });
        for feather in [0, 1, 4, 9] {
            let out = composite(&input, &generated, &mask, feather);
            for (x, y, m) in mask.enumerate_pixels() {
                if m.0[0] == 0 {
                    assert_eq!(out.get_pixel(x, y), input.get_pixel(x, y), "feather {feather} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn the_feather_ramps_inside_the_changed_area_only() {
        let (w, h) = (40, 8);
        let mask = GrayImage::from_fn(w, h, |x, _| image::Luma([if x >= 20 { 255 } else { 0 }]));
        let ramp = weights(&mask, 4);
        let row: Vec<f32> = ramp[..w as usize].to_vec();
        assert!(row[..20].iter().all(|&v| v == 0.0), "the kept side stays 0: {row:?}");
        assert!(row[20] > 0.0 && row[20] < 1.0, "the ramp starts at the edge: {}", row[20]);
        assert!(row[20..25].windows(2).all(|p| p[0] < p[1]), "and rises: {row:?}");
        assert!(row[25..].iter().all(|&v| v == 1.0), "full weight from feather px in: {row:?}");
        // Without a feather the mask is the weight.
        let hard = weights(&mask, 0);
        assert_eq!(&hard[..w as usize], &(0..w).map(|x| if x >= 20 { 1.0 } else { 0.0 }).collect::<Vec<f32>>()[..]);
    }
}
