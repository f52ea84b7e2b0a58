//! The similarity filter: a near-identical input frame re-emits the last output instead of running diffusion.
//!
//! **Metric.** Each frame is reduced to a thumbnail of mean luma (integer BT.601, `(77 R + 150 G + 29 B) / 256`)
//! over a grid of at most 32 x 32 cells that covers every pixel. The difference between two frames is the
//! largest absolute change of any cell, as a fraction of full scale (0..=1). Cell means average out sensor
//! noise (a 16 x 16 cell of a 512 x 512 frame divides it by 16); taking the largest cell instead of the mean
//! over the frame keeps small local motion visible (a mouth, a hand), which a whole-frame mean or cosine
//! similarity dilutes into nothing: a 32 x 32 square moving 1 px on a 256 x 256 frame changes the frame's mean
//! absolute luma by less than 0.2 levels but its cell by about 18.
//!
//! **Threshold.** A frame is similar when its difference is below the threshold; the default,
//! [`DEFAULT_THRESHOLD`] = 0.01 (2.55 of 255 levels), sits between sensor noise and the smallest changes that
//! must show. Measured on a textured scene (the `measure` test), the largest difference between two frames
//! with independent Gaussian noise per channel is 1.0 level for sigma 2 and 1.9 for sigma 4 at 256 x 256
//! (8 x 8 pixel cells, the noisiest working size), 0.5 and 1.0 at 512 x 512; a global brightness change of
//! 3 % differs by 4.7 levels and a 32 x 32 square moving 1 px on 256 x 256 by 18.5. Very dim cameras (sigma 6
//! and more at 256 x 256) are processed more often than needed, which costs time, never a frozen picture.
//!
//! **Reference.** Frames are compared with the last frame that was *processed*, not with the last one seen, so
//! a slow drift (light fading, a slow pan) adds up until it is processed. A frame of another size than the
//! reference is processed and becomes the reference.
//!
//! **Bounded runs.** At most `max_skips` frames in a row are reused ([`DEFAULT_MAX_SKIPS`] = 10, a third of a
//! second at 30 fps); the next is processed whatever its difference, so changes the cell means cannot see
//! (fine texture that keeps every cell's mean) are at most that stale.
//!
//! **When it is on.** Live runs have it by default; offline runs do not unless asked for (every frame of a file
//! is wanted, and nothing is gained by dropping quality to keep up with a clock): see
//! [`SimilaritySettings::default_for`]. Any parameter change must call [`SimilarityFilter::reset`] (the last
//! output was made with the old parameters), and a threshold of 0 disables the filter.
//!
//! **Cost.** One pass over the pixels with integer arithmetic (about 0.17 ms for 512 x 512 on one core,
//! optimized) and no heap memory at all: the thumbnails are fixed-size arrays inside the filter, so nothing is
//! allocated per frame, whatever the frame size.

use image::RgbImage;

/// Cells per side of the thumbnail (fewer on a side with fewer pixels than this).
const GRID: usize = 32;
/// Full scale of a thumbnail cell: cells hold mean luma in 1/256 of a level.
const FULL_SCALE: f32 = 255.0 * 256.0;

/// The default threshold: 1 % of full scale (2.55 levels) in the cell that changed most.
pub const DEFAULT_THRESHOLD: f32 = 0.01;
/// The default bound on consecutive reused frames.
pub const DEFAULT_MAX_SKIPS: u32 = 10;
/// The largest `max_skips` accepted: 20 s at 30 fps.
pub const MAX_MAX_SKIPS: u32 = crate::knobs::SIMILARITY_MAX_SKIPS.int_bounds().1 as u32;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimilaritySettings {
    /// Frames whose difference from the last processed frame is below this (0..=1) are reused; 0 disables.
    pub threshold: f32,
    /// At most this many frames in a row are reused.
    pub max_skips: u32,
}

impl Default for SimilaritySettings {
    fn default() -> Self {
        SimilaritySettings { threshold: DEFAULT_THRESHOLD, max_skips: DEFAULT_MAX_SKIPS }
    }
}

impl SimilaritySettings {
    /// Every frame is processed.
    pub const DISABLED: SimilaritySettings = SimilaritySettings { threshold: 0.0, max_skips: DEFAULT_MAX_SKIPS };

    /// The settings of a run that did not ask for any: on when live, off when offline (every frame of a
    /// video is converted).
    pub fn default_for(live: bool) -> Self {
        if live { SimilaritySettings::default() } else { SimilaritySettings::DISABLED }
    }

    fn enabled(&self) -> bool {
        // `>` is false for NaN as well: a threshold that is not a number disables rather than skips everything.
        self.threshold > 0.0 && self.max_skips > 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the frame through the model.
    Process,
    /// Re-emit the last output.
    Reuse,
}

/// Mean luma per cell of one frame.
#[derive(Clone)]
struct Thumbnail {
    /// The frame size it was made from; (0, 0) when there is none.
    size: (u32, u32),
    cols: usize,
    rows: usize,
    /// Row-major, `cols` per row, in 1/256 of a level.
    cells: [u32; GRID * GRID],
}

impl Thumbnail {
    const EMPTY: Thumbnail = Thumbnail { size: (0, 0), cols: 0, rows: 0, cells: [0; GRID * GRID] };

    fn fill(&mut self, frame: &RgbImage) {
        self.fill_raw(frame.dimensions(), frame.as_raw(), 3, luma_sum);
    }

    /// A gray image's cells (a mask), on the same grid and scale as a frame of its size.
    fn fill_gray(&mut self, image: &image::GrayImage) {
        // 256 times the values: the scale of `luma_sum`, whose weights sum to 256.
        self.fill_raw(image.dimensions(), image.as_raw(), 1, |px| px.iter().map(|&v| u64::from(v) * 256).sum());
    }

    /// The cells of an image of `size`, `channels` bytes a pixel, each pixel run summed by `sum`.
    fn fill_raw(&mut self, size: (u32, u32), raw: &[u8], channels: usize, sum_of: fn(&[u8]) -> u64) {
        let (w, h) = (size.0 as usize, size.1 as usize);
        let (cols, rows) = (GRID.min(w), GRID.min(h));
        self.size = size;
        (self.cols, self.rows) = (cols, rows);
        if cols == 0 || rows == 0 {
            return;
        }
        // Cell c spans [c * w / cols, (c + 1) * w / cols): every cell at least one pixel, all pixels covered.
        let mut xs = [0usize; GRID + 1];
        for (c, x) in xs.iter_mut().enumerate().take(cols + 1) {
            *x = c * w / cols;
        }
        let stride = w * channels;
        for r in 0..rows {
            let (y0, y1) = (r * h / rows, (r + 1) * h / rows);
            let mut sums = [0u64; GRID];
            for line in raw[y0 * stride..y1 * stride].chunks_exact(stride) {
                for (c, sum) in sums.iter_mut().enumerate().take(cols) {
                    *sum += sum_of(&line[xs[c] * channels..xs[c + 1] * channels]);
                }
            }
            for c in 0..cols {
                let count = ((xs[c + 1] - xs[c]) * (y1 - y0)) as u64;
                self.cells[r * cols + c] = ((sums[c] + count / 2) / count) as u32;
            }
        }
    }

    /// The largest change of any cell as a fraction of full scale; None when the frames differ in size.
    fn difference(&self, other: &Thumbnail) -> Option<f32> {
        self.difference_where(other, |_| true)
    }

    /// [`Thumbnail::difference`] over the cells `counted` takes (by index).
    fn difference_where(&self, other: &Thumbnail, counted: impl Fn(usize) -> bool) -> Option<f32> {
        if self.size != other.size || self.size == (0, 0) {
            return None;
        }
        let n = self.cols * self.rows;
        let largest = (0..n).filter(|&i| counted(i)).map(|i| self.cells[i].abs_diff(other.cells[i])).max().unwrap_or(0);
        Some(largest as f32 / FULL_SCALE)
    }
}

/// BT.601 luma weights (sum 256) repeated over 16 packed RGB pixels: a fixed-width weighted sum vectorizes where
/// a pixel-by-pixel loop does not.
const WEIGHTS: [u32; 48] = {
    let mut w = [0; 48];
    let mut i = 0;
    while i < 48 {
        w[i] = [77, 150, 29][i % 3];
        i += 1;
    }
    w
};

/// Sum of `77 R + 150 G + 29 B` over packed RGB pixels (256 times their summed BT.601 luma).
fn luma_sum(pixels: &[u8]) -> u64 {
    let mut total = 0u64;
    // In blocks of 16384 pixels a u32 cannot overflow (16384 * 255 * 256 < 2^32), so the wrapping operations
    // never wrap: they only keep overflow checks from blocking vectorization in unoptimized profiles.
    for block in pixels.chunks(16384 * 3) {
        let mut chunks = block.chunks_exact(48);
        let mut sum = 0u32;
        for chunk in &mut chunks {
            sum = chunk.iter().zip(&WEIGHTS).fold(sum, |s, (&v, &w)| s.wrapping_add(u32::from(v).wrapping_mul(w)));
        }
        for p in chunks.remainder().chunks_exact(3) {
            sum = sum.wrapping_add(77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]));
        }
        total += u64::from(sum);
    }
    total
}

/// Decides, frame by frame, whether a frame is worth a model run.
pub struct SimilarityFilter {
    settings: SimilaritySettings,
    /// The last processed frame's thumbnail (size (0, 0) when there is none: the next frame is processed).
    reference: Thumbnail,
    /// The frame being checked; swapped with `reference` when it is processed.
    current: Thumbnail,
    /// The masks of the reference and of the frame being checked (masked runs).
    mask_reference: Thumbnail,
    mask_current: Thumbnail,
    /// Frames reused since the last processed one.
    run: u32,
    skipped_total: u64,
    last_difference: Option<f32>,
}

impl SimilarityFilter {
    pub fn new(settings: SimilaritySettings) -> Self {
        SimilarityFilter {
            settings,
            reference: Thumbnail::EMPTY,
            current: Thumbnail::EMPTY,
            mask_reference: Thumbnail::EMPTY,
            mask_current: Thumbnail::EMPTY,
            run: 0,
            skipped_total: 0,
            last_difference: None,
        }
    }

    pub fn settings(&self) -> SimilaritySettings {
        self.settings
    }

    /// Whether `frame` must be processed or the last output re-emitted. A `Process` answer makes `frame` the
    /// reference later frames are compared with, so the caller must process every frame answered so.
    pub fn check(&mut self, frame: &RgbImage) -> Decision {
        self.check_masked(frame, None)
    }

    /// [`SimilarityFilter::check`] for a masked frame (255 = change): only cells where this frame's mask or the
    /// reference's has something to change are compared (the rest shows the input itself, whatever is reused),
    /// and a change of the mask counts as a change (the area to change moved: what was kept before must now be
    /// generated).
    pub fn check_masked(&mut self, frame: &RgbImage, mask: Option<&image::GrayImage>) -> Decision {
        if !self.settings.enabled() {
            self.last_difference = None;
            return Decision::Process;
        }
        self.current.fill(frame);
        let difference = match mask {
            None => {
                self.mask_reference.size = (0, 0);
                self.current.difference(&self.reference)
            }
            Some(mask) => {
                self.mask_current.fill_gray(mask);
                let (now, before) = (&self.mask_current, &self.mask_reference);
                let moved = now.difference(before);
                let counted = |i: usize| now.cells[i] > 0 || before.cells[i] > 0;
                let picture = self.current.difference_where(&self.reference, counted);
                moved.zip(picture).map(|(a, b)| a.max(b))
            }
        };
        self.last_difference = difference;
        match difference {
            Some(d) if d < self.settings.threshold && self.run < self.settings.max_skips => {
                self.run += 1;
                self.skipped_total += 1;
                Decision::Reuse
            }
            _ => {
                std::mem::swap(&mut self.current, &mut self.reference);
                if mask.is_some() {
                    std::mem::swap(&mut self.mask_current, &mut self.mask_reference);
                }
                self.run = 0;
                Decision::Process
            }
        }
    }

    /// Forget the reference: the next frame is processed (call it when a parameter changes, since the last
    /// output no longer stands for what the new parameters make).
    pub fn reset(&mut self) {
        self.reference.size = (0, 0);
        self.mask_reference.size = (0, 0);
        self.run = 0;
    }

    /// Change the threshold of a running filter (0 disables); the next frame is processed.
    pub fn set_threshold(&mut self, threshold: f32) {
        self.settings.threshold = threshold;
        self.reset();
    }

    /// Frames reused since the filter was made.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
    }

    /// The last checked frame's difference from the reference (0..=1); None when there was nothing to compare
    /// with (the first frame, a new size, after a reset, or while disabled).
    pub fn last_difference(&self) -> Option<f32> {
        self.last_difference
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    use super::*;

    /// A textured scene with luma roughly 50..200, so that noise and brightness changes do not clip.
    fn scene(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = 50 + ((x * 7 + y * 3) % 64 + (x / 16 + y / 16) % 4 * 22) as u8;
            Rgb([v, v.saturating_add(20).min(205), 255 - v - 10])
        })
    }

    fn map(image: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
        let mut out = image.clone();
        out.iter_mut().for_each(|c| *c = f(*c));
        out
    }

    fn noisy(image: &RgbImage, sigma: f64, rng: &mut ChaCha8Rng) -> RgbImage {
        let normal = Normal::new(0.0, sigma).unwrap();
        let mut out = image.clone();
        out.iter_mut().for_each(|c| *c = (f64::from(*c) + normal.sample(rng)).round().clamp(0.0, 255.0) as u8);
        out
    }

    fn with_square(image: &RgbImage, x0: u32, y0: u32) -> RgbImage {
        let mut out = image.clone();
        for y in y0..y0 + 32 {
            for x in x0..x0 + 32 {
                out.put_pixel(x, y, Rgb([250, 250, 250]));
            }
        }
        out
    }

    fn filter() -> SimilarityFilter {
        SimilarityFilter::new(SimilaritySettings::default())
    }

    /// The largest difference between consecutive independently noisy copies of a scene, in levels.
    fn worst_noise_levels(sigma: f64, size: u32, frames: usize) -> f32 {
        let base = scene(size, size);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Only measuring: a threshold and a bound that never force a Process.
        let mut f = SimilarityFilter::new(SimilaritySettings { threshold: 1.0, max_skips: u32::MAX });
        f.check(&noisy(&base, sigma, &mut rng));
        (0..frames)
            .map(|_| {
                f.check(&noisy(&base, sigma, &mut rng));
                f.last_difference().unwrap() * 255.0
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn first_frame_is_processed_and_an_identical_one_reused() {
        let mut f = filter();
        let frame = scene(256, 256);
        assert_eq!(f.check(&frame), Decision::Process);
        assert_eq!(f.last_difference(), None);
        assert_eq!(f.check(&frame), Decision::Reuse);
        assert_eq!(f.last_difference(), Some(0.0));
        assert_eq!(f.skipped_total(), 1);
    }

    #[test]
    fn sensor_noise_is_similar() {
        let base = scene(256, 256);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut f = SimilarityFilter::new(SimilaritySettings { max_skips: 100, ..Default::default() });
        assert_eq!(f.check(&noisy(&base, 2.0, &mut rng)), Decision::Process);
        for i in 0..30 {
            assert_eq!(f.check(&noisy(&base, 2.0, &mut rng)), Decision::Reuse, "frame {i}: {:?}", f.last_difference());
        }
        // The margin: even sigma 4 (a dim room) stays below the default threshold.
        let worst = worst_noise_levels(4.0, 256, 30);
        assert!(worst < DEFAULT_THRESHOLD * 255.0, "sigma 4 noise differs by {worst} levels");
    }

    #[test]
    fn a_small_moving_object_is_processed() {
        let base = scene(256, 256);
        let mut f = filter();
        assert_eq!(f.check(&with_square(&base, 100, 100)), Decision::Process);
        // Moving 1 px a frame, the slowest motion there is, every frame is new.
        for x in 101..110 {
            assert_eq!(f.check(&with_square(&base, x, 100)), Decision::Process, "x {x}: {:?}", f.last_difference());
        }
        assert_eq!(f.skipped_total(), 0);
    }

    #[test]
    fn a_three_percent_brightness_change_is_processed() {
        let base = scene(256, 256);
        for factor in [1.03, 0.97] {
            let mut f = filter();
            f.check(&base);
            let changed = map(&base, |c| (f64::from(c) * factor).round().min(255.0) as u8);
            assert_eq!(f.check(&changed), Decision::Process, "x{factor}: {:?}", f.last_difference());
        }
    }

    #[test]
    fn runs_of_reuse_are_bounded() {
        let frame = scene(64, 48);
        let mut f = SimilarityFilter::new(SimilaritySettings { max_skips: 3, ..Default::default() });
        let decisions: Vec<_> = (0..9).map(|_| f.check(&frame)).collect();
        use Decision::{Process as P, Reuse as R};
        assert_eq!(decisions, [P, R, R, R, P, R, R, R, P]);
        assert_eq!(f.skipped_total(), 6);
    }

    #[test]
    fn reset_and_a_new_threshold_process_the_next_frame() {
        let frame = scene(64, 64);
        let mut f = filter();
        f.check(&frame);
        assert_eq!(f.check(&frame), Decision::Reuse);
        f.reset();
        assert_eq!(f.check(&frame), Decision::Process);
        assert_eq!(f.check(&frame), Decision::Reuse);
        f.set_threshold(0.02);
        assert_eq!(f.check(&frame), Decision::Process);
        assert_eq!(f.check(&frame), Decision::Reuse);
    }

    #[test]
    fn disabled_never_reuses() {
        let frame = scene(64, 64);
        for settings in [
            SimilaritySettings::DISABLED,
            SimilaritySettings::default_for(false),
            SimilaritySettings { threshold: f32::NAN, max_skips: 10 },
        ] {
            let mut f = SimilarityFilter::new(settings);
            assert!((0..5).all(|_| f.check(&frame) == Decision::Process), "{settings:?}");
            assert_eq!(f.skipped_total(), 0);
        }
        assert_eq!(SimilaritySettings::default_for(true), SimilaritySettings::default());
        let mut f = filter();
        f.check(&frame);
        f.set_threshold(0.0);
        assert_eq!(f.check(&frame), Decision::Process);
    }

    #[test]
    fn a_new_size_is_processed_and_becomes_the_reference() {
        let mut f = filter();
        f.check(&scene(64, 64));
        let wide = scene(96, 64);
        assert_eq!(f.check(&wide), Decision::Process);
        assert_eq!(f.last_difference(), None);
        assert_eq!(f.check(&wide), Decision::Reuse);
        // Every pixel counts, at sizes the grid does not divide: one pixel in the last row and column.
        let odd = scene(100, 70);
        f.check(&odd);
        let mut corner = odd.clone();
        corner.put_pixel(99, 69, Rgb([255, 255, 255]));
        assert_eq!(f.check(&corner), Decision::Process, "{:?}", f.last_difference());
        // Frames smaller than the grid, and empty ones, still work.
        for (w, h) in [(5, 3), (1, 1), (0, 0)] {
            let tiny = RgbImage::new(w, h);
            assert_eq!(f.check(&tiny), Decision::Process, "{w}x{h}");
        }
    }

    #[test]
    fn slow_drift_adds_up_to_a_processed_frame() {
        // +0.5 level a frame (a step of 1 every other frame): each frame is similar to the one before, but the
        // reference is the last processed frame, so the drift is processed once it passes the threshold.
        let base = scene(128, 128);
        let mut f = SimilarityFilter::new(SimilaritySettings { max_skips: 100, ..Default::default() });
        let decisions: Vec<_> = (0..20u8).map(|k| f.check(&map(&base, |c| c + k / 2))).collect();
        let processed: Vec<_> = (0..20).filter(|&k| decisions[k] == Decision::Process).collect();
        assert_eq!(processed, [0, 6, 12, 18]);
    }

    /// The evidence for the default threshold, and the per-frame cost (run with `--release -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn measure() {
        for size in [256, 512] {
            for sigma in [1.0, 2.0, 4.0, 6.0, 8.0] {
                println!("{size}x{size} sigma {sigma}: worst {:.2} levels", worst_noise_levels(sigma, size, 50));
            }
        }
        let base = scene(256, 256);
        for (name, before, after) in [
            ("x1.03", base.clone(), map(&base, |c| (f64::from(c) * 1.03).round().min(255.0) as u8)),
            ("x0.97", base.clone(), map(&base, |c| (f64::from(c) * 0.97).round() as u8)),
            ("square +1 px", with_square(&base, 100, 100), with_square(&base, 101, 100)),
        ] {
            let mut f = SimilarityFilter::new(SimilaritySettings { threshold: 1.0, max_skips: 100 });
            f.check(&before);
            f.check(&after);
            println!("{name}: {:.2} levels", f.last_difference().unwrap() * 255.0);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let frames = [noisy(&scene(512, 512), 2.0, &mut rng), noisy(&scene(512, 512), 2.0, &mut rng)];
        let mut f = SimilarityFilter::new(SimilaritySettings { threshold: 1.0, max_skips: u32::MAX });
        let n = 2000;
        let started = std::time::Instant::now();
        for i in 0..n {
            std::hint::black_box(f.check(std::hint::black_box(&frames[i % 2])));
        }
        println!("512x512: {:.1} us per frame", started.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    /// With a mask only the area to change is compared: motion in the kept area (the person) is not a reason to
    /// run the model (the composite shows the person live anyway), motion in the area to change is, and so is a
    /// mask that moved.
    #[test]
    fn a_masked_frame_is_compared_only_where_it_changes() {
        let (w, h) = (256, 192);
        let base = scene(w, h);
        // The right half changes (the room), the left half is kept (the person).
        let mask = image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x >= 128 { 255 } else { 0 }]));
        let mut f = SimilarityFilter::new(SimilaritySettings { threshold: 0.05, max_skips: 100 });
        assert_eq!(f.check_masked(&base, Some(&mask)), Decision::Process, "the first frame");
        // The person moves in the kept half: the last output is still good.
        let moved_person = with_square(&base, 20, 40);
        assert_eq!(f.check_masked(&moved_person, Some(&mask)), Decision::Reuse);
        // Something moves in the room: run the model.
        let moved_room = with_square(&base, 170, 40);
        assert_eq!(f.check_masked(&moved_room, Some(&mask)), Decision::Process);
        // The same picture with the mask moved (the person walked): what was kept must now be generated.
        let shifted = image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x >= 96 { 255 } else { 0 }]));
        assert_eq!(f.check_masked(&moved_room, Some(&shifted)), Decision::Process);
        assert_eq!(f.check_masked(&moved_room, Some(&shifted)), Decision::Reuse);
        // Unmasked, the person's motion counts.
        let mut plain = SimilarityFilter::new(SimilaritySettings { threshold: 0.05, max_skips: 100 });
        assert_eq!(plain.check(&base), Decision::Process);
        assert_eq!(plain.check(&moved_person), Decision::Process);
    }
}
