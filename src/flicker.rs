//! Temporal stability of a converted video (`latentcam flicker IN OUT`): how much the output changes from one
//! frame to the next, against how much the input does, plain and along the input's motion.
//!
//! Everything here is pure maths over sequences of grey frames ([`Luma`], BT.601 luma on 0..1): the command
//! decodes both videos, brings each frame to the analysis grid ([`analysis_size`], at most
//! [`ANALYSIS_WIDTH_PX`] wide, the input cropped to the output's aspect ratio the way `convert` crops it) and
//! feeds the pairs to a [`FlickerMeter`].
//!
//! - **change**: the mean absolute difference between consecutive frames, over every pixel of every pair.
//! - **warped error**: the motion between input frames `t-1` and `t` is estimated by block matching on the input
//!   ([`estimate_motion`]); output frame `t-1` is moved along it ([`warp`]) and compared with output frame `t`.
//!   Real motion is explained away, flicker is not. The same warp on the input itself (`warped_error_input`)
//!   is what the motion model leaves unexplained (occlusions, new content at the edges, sub-pixel motion): the
//!   floor the output is compared with.

use image::RgbImage;
use serde::Serialize;

/// Frames are analysed at most this wide (the aspect ratio kept): the motion search stays fast on a small CPU.
pub const ANALYSIS_WIDTH_PX: u32 = 256;
/// Block matching: square blocks of this side.
pub const BLOCK_PX: usize = 8;
/// Block matching: displacements of up to this many pixels each way (on the analysis grid) are searched.
pub const SEARCH_RADIUS_PX: usize = 8;
/// A block moves only when that lowers its mean absolute difference by more than this (0..1 luma): flat areas
/// and noise stay put instead of fitting the noise.
const MOVE_PENALTY: f32 = 0.5 / 255.0;
/// Ratios are `(a + RATIO_EPSILON) / (b + RATIO_EPSILON)`, half an 8-bit level added to both sides: finite for a
/// still input, 1 for a still input and output, and 1 whenever the output changes exactly as the input does.
pub const RATIO_EPSILON: f64 = 0.5 / 255.0;

/// `a / b`, both raised by [`RATIO_EPSILON`].
pub fn ratio(a: f64, b: f64) -> f64 {
    (a + RATIO_EPSILON) / (b + RATIO_EPSILON)
}

/// A grey frame: BT.601 luma on 0..1, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct Luma {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Luma {
    /// `f(x, y)` for every pixel.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> f32) -> Luma {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        Luma { width, height, data }
    }

    /// BT.601 luma of an RGB picture, on 0..1.
    pub fn from_rgb(image: &RgbImage) -> Luma {
        let data = image
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0;
                (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) / 255.0
            })
            .collect();
        Luma { width: image.width() as usize, height: image.height() as usize, data }
    }

    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// A copy with `pad` pixels on every side repeating the edge pixels (motion search without bounds checks).
    fn padded(&self, pad: usize) -> Luma {
        let (w, h) = (self.width as isize, self.height as isize);
        Luma::from_fn(self.width + 2 * pad, self.height + 2 * pad, |x, y| {
            let sx = (x as isize - pad as isize).clamp(0, w - 1) as usize;
            let sy = (y as isize - pad as isize).clamp(0, h - 1) as usize;
            self.at(sx, sy)
        })
    }
}

/// The analysis grid for frames of `width` x `height`: at most [`ANALYSIS_WIDTH_PX`] wide, the aspect ratio
/// kept (rounded), at least 1 pixel each way.
pub fn analysis_size(width: u32, height: u32) -> (u32, u32) {
    if width <= ANALYSIS_WIDTH_PX {
        return (width.max(1), height.max(1));
    }
    let h = (f64::from(height) * f64::from(ANALYSIS_WIDTH_PX) / f64::from(width)).round() as u32;
    (ANALYSIS_WIDTH_PX, h.max(1))
}

/// Mean absolute difference of two frames of the same size (0..1). Frames of different sizes are a bug of
/// the caller: the smaller common area is compared.
pub fn mean_abs_diff(a: &Luma, b: &Luma) -> f64 {
    let (w, h) = (a.width.min(b.width), a.height.min(b.height));
    if w == 0 || h == 0 {
        return 0.0;
    }
    let mut sum = 0.0f64;
    for y in 0..h {
        let (ra, rb) = (&a.data[y * a.width..y * a.width + w], &b.data[y * b.width..y * b.width + w]);
        sum += ra.iter().zip(rb).map(|(p, q)| f64::from((p - q).abs())).sum::<f64>();
    }
    sum / (w * h) as f64
}

/// One displacement per block: block (`bx`, `by`) of frame `t` came from `(x + dx, y + dy)` of frame `t-1`.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionField {
    pub blocks_x: usize,
    pub blocks_y: usize,
    /// `(dx, dy)` in pixels, row by row.
    pub vectors: Vec<(i32, i32)>,
}

impl MotionField {
    /// The displacement of the block holding pixel (`x`, `y`).
    pub fn at(&self, x: usize, y: usize) -> (i32, i32) {
        let bx = (x / BLOCK_PX).min(self.blocks_x - 1);
        let by = (y / BLOCK_PX).min(self.blocks_y - 1);
        self.vectors[by * self.blocks_x + bx]
    }
}

/// Block matching from `prev` to `next` (the same size): for each [`BLOCK_PX`] block of `next`, the displacement
/// within [`SEARCH_RADIUS_PX`] whose block of `prev` (edges repeated beyond the frame) has the least sum of
/// absolute differences; no motion unless a move is better by more than a small margin.
pub fn estimate_motion(prev: &Luma, next: &Luma) -> MotionField {
    let r = SEARCH_RADIUS_PX;
    let padded = prev.padded(r);
    let blocks_x = next.width.div_ceil(BLOCK_PX).max(1);
    let blocks_y = next.height.div_ceil(BLOCK_PX).max(1);
    let mut vectors = Vec::with_capacity(blocks_x * blocks_y);
    for by in 0..blocks_y {
        for bx in 0..blocks_x {
            let (x0, y0) = (bx * BLOCK_PX, by * BLOCK_PX);
            let bw = BLOCK_PX.min(next.width.saturating_sub(x0));
            let bh = BLOCK_PX.min(next.height.saturating_sub(y0));
            if bw == 0 || bh == 0 {
                vectors.push((0, 0));
                continue;
            }
            // Sum of absolute differences against prev's block at offset (ox, oy) in the padded frame; stops
            // early once it exceeds `limit`.
            let sad = |ox: usize, oy: usize, limit: f32| -> f32 {
                let mut sum = 0.0f32;
                for y in 0..bh {
                    let n = &next.data[(y0 + y) * next.width + x0..][..bw];
                    let p = &padded.data[(oy + y) * padded.width + ox..][..bw];
                    sum += n.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f32>();
                    if sum > limit {
                        return sum;
                    }
                }
                sum
            };
            let penalty = MOVE_PENALTY * (bw * bh) as f32;
            let mut best = (0i32, 0i32);
            let mut best_cost = sad(x0 + r, y0 + r, f32::INFINITY);
            for dy in 0..=2 * r {
                for dx in 0..=2 * r {
                    if dx == r && dy == r {
                        continue;
                    }
                    let cost = sad(x0 + dx, y0 + dy, best_cost - penalty) + penalty;
                    if cost < best_cost {
                        best_cost = cost;
                        best = (dx as i32 - r as i32, dy as i32 - r as i32);
                    }
                }
            }
            vectors.push(best);
        }
    }
    MotionField { blocks_x, blocks_y, vectors }
}

/// `frame` moved along `field`: pixel (`x`, `y`) takes `frame`'s pixel at `(x + dx, y + dy)` of its block
/// (edges repeated beyond the frame).
pub fn warp(frame: &Luma, field: &MotionField) -> Luma {
    let (w, h) = (frame.width as i64, frame.height as i64);
    Luma::from_fn(frame.width, frame.height, |x, y| {
        let (dx, dy) = field.at(x, y);
        let sx = (x as i64 + i64::from(dx)).clamp(0, w - 1) as usize;
        let sy = (y as i64 + i64::from(dy)).clamp(0, h - 1) as usize;
        frame.at(sx, sy)
    })
}

/// The measures over a sequence of frame pairs (see the module doc). Values on the 0..1 luma scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FlickerMetrics {
    /// Frame pairs compared (frames - 1; reports give the frames instead).
    #[serde(skip)]
    pub pairs: u64,
    /// Mean absolute difference between consecutive input frames.
    pub input_change: f64,
    /// The same for the output.
    pub output_change: f64,
    /// `output_change / input_change` (see [`ratio`]): 1 when the output changes as much as the input.
    pub flicker_ratio: f64,
    /// Mean absolute difference between output frame `t` and output frame `t-1` moved along the input's motion.
    pub warped_error: f64,
    /// The same on the input: what the motion estimate leaves unexplained.
    pub warped_error_input: f64,
    /// `warped_error / warped_error_input` (see [`ratio`]): 1 when the output follows the input's motion as well
    /// as the input itself does.
    pub warped_ratio: f64,
}

/// Feeds on (input, output) frame pairs in order, keeps only the last pair.
#[derive(Default)]
pub struct FlickerMeter {
    last: Option<(Luma, Luma)>,
    pairs: u64,
    input_change: f64,
    output_change: f64,
    warped_error: f64,
    warped_error_input: f64,
}

impl FlickerMeter {
    pub fn new() -> FlickerMeter {
        FlickerMeter::default()
    }

    /// The next frame of the input and of the output, both on the analysis grid (the same size).
    pub fn push(&mut self, input: Luma, output: Luma) {
        if let Some((prev_in, prev_out)) = &self.last {
            self.input_change += mean_abs_diff(prev_in, &input);
            self.output_change += mean_abs_diff(prev_out, &output);
            let field = estimate_motion(prev_in, &input);
            self.warped_error_input += mean_abs_diff(&warp(prev_in, &field), &input);
            self.warped_error += mean_abs_diff(&warp(prev_out, &field), &output);
            self.pairs += 1;
        }
        self.last = Some((input, output));
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        if self.last.is_some() { self.pairs + 1 } else { 0 }
    }

    pub fn metrics(&self) -> FlickerMetrics {
        let n = self.pairs.max(1) as f64;
        let (input_change, output_change) = (self.input_change / n, self.output_change / n);
        let (warped_error, warped_error_input) = (self.warped_error / n, self.warped_error_input / n);
        FlickerMetrics {
            pairs: self.pairs,
            input_change,
            output_change,
            flicker_ratio: ratio(output_change, input_change),
            warped_error,
            warped_error_input,
            warped_ratio: ratio(warped_error, warped_error_input),
        }
    }
}

/// The measures of an input sequence and its output (pairs beyond the shorter one are ignored).
pub fn measure(inputs: &[Luma], outputs: &[Luma]) -> FlickerMetrics {
    let mut meter = FlickerMeter::new();
    for (a, b) in inputs.iter().zip(outputs) {
        meter.push(a.clone(), b.clone());
    }
    meter.metrics()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const W: usize = 96;
    const H: usize = 64;

    /// A smooth, textured picture (no flat areas, no periodicity the search could confuse within its radius)
    /// seen through a window moved by (`sx`, `sy`).
    fn texture(sx: f32, sy: f32) -> Luma {
        Luma::from_fn(W, H, |x, y| {
            let (x, y) = (x as f32 + sx, y as f32 + sy);
            let v = 0.5
                + 0.2 * (x * 0.31 + y * 0.07).sin()
                + 0.15 * (y * 0.23 - x * 0.11).cos()
                + 0.1 * (x * 0.05 * (1.0 + (y * 0.02).sin())).sin();
            v.clamp(0.0, 1.0)
        })
    }

    /// The window moving by whole pixels (`dx`, `dy`) per frame.
    fn moving(frames: usize, dx: f32, dy: f32) -> Vec<Luma> {
        (0..frames).map(|t| texture(t as f32 * dx, t as f32 * dy)).collect()
    }

    fn with_noise(frames: &[Luma], amplitude: f32, seed: u64) -> Vec<Luma> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        frames
            .iter()
            .map(|f| Luma {
                data: f.data.iter().map(|v| (v + rng.random_range(-amplitude..amplitude)).clamp(0.0, 1.0)).collect(),
                ..f.clone()
            })
            .collect()
    }

    #[test]
    fn a_still_video_gives_zero() {
        let still = vec![texture(0.0, 0.0); 5];
        let m = measure(&still, &still);
        assert_eq!(m.pairs, 4);
        for (name, v) in [
            ("input_change", m.input_change),
            ("output_change", m.output_change),
            ("warped_error", m.warped_error),
            ("warped_error_input", m.warped_error_input),
        ] {
            assert_eq!(v, 0.0, "{name}");
        }
        assert_eq!((m.flicker_ratio, m.warped_ratio), (1.0, 1.0), "nothing changes: as stable as the input");
        // A still input, a flickering output: a large but finite ratio.
        let m = measure(&still, &with_noise(&still, 0.1, 1));
        assert!(m.flicker_ratio > 20.0 && m.flicker_ratio.is_finite(), "{m:?}");
    }

    #[test]
    fn noise_added_to_the_output_raises_both_ratios_above_1() {
        let input = moving(6, 1.0, 0.0);
        let output = with_noise(&input, 0.1, 7);
        let m = measure(&input, &output);
        // Uniform noise of +-0.1 on both frames: |n1 - n2| averages 0.067 on top of the change.
        assert!(m.flicker_ratio > 1.2, "{m:?}");
        assert!(m.warped_ratio > 5.0, "{m:?}");
        assert!((0.05..0.1).contains(&(m.warped_error - m.warped_error_input)), "{m:?}");
        // The output is the input itself: the same change, ratio 1, and the same warped error.
        let same = measure(&input, &input);
        assert_eq!((same.flicker_ratio, same.warped_ratio), (1.0, 1.0), "{same:?}");
    }

    #[test]
    fn a_pure_translation_has_a_small_warped_error_but_a_large_plain_change() {
        let input = moving(6, 3.0, -2.0);
        let m = measure(&input, &input);
        assert!(m.input_change > 0.05, "{m:?}");
        assert!(m.warped_error < 0.1 * m.input_change, "{m:?}");
        assert!(m.warped_error < 0.005, "{m:?}");
    }

    #[test]
    fn block_matching_finds_the_shift() {
        // next(x, y) = prev(x + 3, y + 1.5 rounded): the window moved right and down.
        let (prev, next) = (texture(0.0, 0.0), texture(3.0, 2.0));
        let field = estimate_motion(&prev, &next);
        assert_eq!((field.blocks_x, field.blocks_y), (W / BLOCK_PX, H / BLOCK_PX));
        let right = field.vectors.iter().filter(|&&v| v == (3, 2)).count();
        assert!(right * 10 >= field.vectors.len() * 9, "{right} of {} blocks found (3, 2)", field.vectors.len());
        assert!(mean_abs_diff(&warp(&prev, &field), &next) < 0.005);
        // A still pair: no motion anywhere, even on noise.
        let noisy = with_noise(&[prev.clone(), prev], 0.02, 3);
        let field = estimate_motion(&noisy[0], &noisy[1]);
        let moved = field.vectors.iter().filter(|&&v| v != (0, 0)).count();
        assert!(moved * 10 <= field.vectors.len(), "{moved} blocks moved on pure noise");
    }

    #[test]
    fn analysis_size_keeps_the_aspect_and_small_frames() {
        assert_eq!(analysis_size(640, 360), (256, 144));
        assert_eq!(analysis_size(1920, 1080), (256, 144));
        assert_eq!(analysis_size(160, 120), (160, 120));
        assert_eq!(analysis_size(4000, 1), (256, 1));
    }

    #[test]
    fn luma_is_bt601_on_0_to_1() {
        let image =
            RgbImage::from_fn(2, 1, |x, _| if x == 0 { image::Rgb([255, 255, 255]) } else { image::Rgb([255, 0, 0]) });
        let l = Luma::from_rgb(&image);
        assert!((l.at(0, 0) - 1.0).abs() < 1e-6 && (l.at(1, 0) - 0.299).abs() < 1e-6, "{l:?}");
    }

    #[test]
    fn frames_of_different_lengths_use_the_common_prefix() {
        let input = moving(5, 1.0, 0.0);
        let m = measure(&input, &input[..3]);
        assert_eq!(m.pairs, 2);
        let mut meter = FlickerMeter::new();
        assert_eq!(meter.frames(), 0);
        meter.push(input[0].clone(), input[0].clone());
        assert_eq!((meter.frames(), meter.metrics().pairs), (1, 0));
    }
}
