//! The two-dimensional filters behind grow/shrink and feather, made fast enough to run on every frame (a 720p
//! mask in a few milliseconds): each is separable, run along the rows, then along the rows of the transpose (a
//! tiled transpose keeps both passes in contiguous memory), at a cost per pixel that does not grow with the
//! radius.
//!
//! - [`extreme`]: the maximum or minimum over a square window, by van Herk / Gil-Werman (three comparisons per
//!   pixel whatever the window).
//! - [`box_blurs`]: repeated box blurs with running sums in 16-bit fixed point (integers: a window of equal values
//!   gives exactly that value, so an area of all 0 or all 1 stays exactly 0 or 1).

use ndarray::Array2;

/// Transpose tile side: a tile of each array fits in the L1 cache.
const TILE: usize = 32;

/// `src` (`rows x cols`, row-major) transposed into `dst` (`cols x rows`).
fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Run `pass` on every row of `data` (`rows x cols`), then on every column, through a transpose.
fn separable<T: Copy + Default>(data: &mut [T], rows: usize, cols: usize, pass: &mut dyn FnMut(&mut [T])) {
    if rows == 0 || cols == 0 {
        return;
    }
    data.chunks_exact_mut(cols).for_each(&mut *pass);
    let mut t = vec![T::default(); data.len()];
    transpose(data, rows, cols, &mut t);
    t.chunks_exact_mut(rows).for_each(&mut *pass);
    transpose(&t, cols, rows, data);
}

/// The values of `values` as a row-major vector, and its shape.
fn row_major(values: Array2<f32>) -> (Vec<f32>, usize, usize) {
    let (rows, cols) = values.dim();
    let data =
        if values.is_standard_layout() { values.into_raw_vec_and_offset().0 } else { values.iter().copied().collect() };
    (data, rows, cols)
}

fn from_row_major(data: Vec<f32>, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, cols), data).expect("a row-major buffer of rows x cols")
}

/// The maximum (`keep_max`) or minimum of every `(2·radius + 1)²` window, clipped at the edges.
pub fn extreme(values: Array2<f32>, radius: usize, keep_max: bool) -> Array2<f32> {
    let (mut data, rows, cols) = row_major(values);
    let mut line_filter = ExtremeLine::new(radius, keep_max);
    separable(&mut data, rows, cols, &mut |line| line_filter.run(line));
    from_row_major(data, rows, cols)
}

/// van Herk / Gil-Werman along one line: the line, padded by `radius` identity values (−∞ for a maximum) on each
/// side, is cut into blocks of the window's length `k`; within each block a running extreme from the left (`g`)
/// and from the right (`h`); the window starting at `i` spans the end of one block and the start of the next,
/// so its extreme is `extreme(h[i], g[i + k - 1])`.
struct ExtremeLine {
    radius: usize,
    keep_max: bool,
    padded: Vec<f32>,
    g: Vec<f32>,
    h: Vec<f32>,
}

impl ExtremeLine {
    fn new(radius: usize, keep_max: bool) -> ExtremeLine {
        ExtremeLine { radius, keep_max, padded: Vec::new(), g: Vec::new(), h: Vec::new() }
    }

    fn run(&mut self, line: &mut [f32]) {
        // (two instances, so that the comparison is inlined)
        if self.keep_max {
            self.run_with(line, f32::NEG_INFINITY, |a, b| a.max(b));
        } else {
            self.run_with(line, f32::INFINITY, |a, b| a.min(b));
        }
    }

    fn run_with(&mut self, line: &mut [f32], identity: f32, pick: impl Fn(f32, f32) -> f32) {
        let (n, r, k) = (line.len(), self.radius, 2 * self.radius + 1);
        let len = (n + 2 * r).div_ceil(k) * k;
        self.padded.clear();
        self.padded.resize(len, identity);
        self.padded[r..r + n].copy_from_slice(line);
        self.g.resize(len, identity);
        self.h.resize(len, identity);
        let blocks = self.padded.chunks_exact(k).zip(self.g.chunks_exact_mut(k)).zip(self.h.chunks_exact_mut(k));
        for ((x, g), h) in blocks {
            let mut acc = identity;
            for (v, out) in x.iter().zip(g.iter_mut()) {
                acc = pick(acc, *v);
                *out = acc;
            }
            acc = identity;
            for (v, out) in x.iter().zip(h.iter_mut()).rev() {
                acc = pick(acc, *v);
                *out = acc;
            }
        }
        // Output i's window is padded[i .. i + k].
        for ((out, h), g) in line.iter_mut().zip(&self.h).zip(&self.g[k - 1..]) {
            *out = pick(*h, *g);
        }
    }
}

/// One in fixed point: 16 fractional bits.
const ONE: u32 = 1 << 16;

/// The largest box radius [`box_blurs`] takes (its sums and divisions are exact up to it).
pub const MAX_BOX_RADIUS: usize = 256;

/// Box blurs of the given radii (each at most [`MAX_BOX_RADIUS`]), one after the other, along the rows and then
/// the columns; the edges extended.
pub fn box_blurs(values: Array2<f32>, radii: &[usize]) -> Array2<f32> {
    let radii: Vec<usize> = radii.iter().map(|&r| r.min(MAX_BOX_RADIUS)).collect();
    let (data, rows, cols) = row_major(values);
    let mut fixed: Vec<u32> = data.iter().map(|&v| (v.clamp(0.0, 1.0) * ONE as f32).round() as u32).collect();
    let mut scratch = Vec::new();
    separable(&mut fixed, rows, cols, &mut |line| {
        for &r in &radii {
            box_line(line, r, &mut scratch);
        }
    });
    let data = fixed.iter().map(|&v| v as f32 / ONE as f32).collect();
    from_row_major(data, rows, cols)
}

/// The rounded mean of each `2·radius + 1` window along `line`, its ends extended, with a running sum.
fn box_line(line: &mut [u32], radius: usize, scratch: &mut Vec<u32>) {
    if radius == 0 || line.is_empty() {
        return;
    }
    // The line with its ends extended by radius + 1 values: out[i] is the mean of ext[i .. i + width].
    let (first, last) = (line[0], line[line.len() - 1]);
    scratch.clear();
    scratch.extend(std::iter::repeat_n(first, radius));
    scratch.extend_from_slice(line);
    scratch.extend(std::iter::repeat_n(last, radius + 1));
    let width = 2 * radius + 1;
    // (at most 65536 · 513 for the largest radius: no overflow)
    let mut sum: u32 = scratch[..width].iter().sum();
    let divide = Reciprocal::new(width as u32);
    for ((out, &enter), &leave) in line.iter_mut().zip(&scratch[width..]).zip(scratch.iter()) {
        *out = divide.rounded(sum);
        sum = sum + enter - leave;
    }
}

/// Division by a window width as a multiplication (a division per pixel and pass was most of the blur's time):
/// `floor(s / w) = (s · m) >> 36` with `m = floor(2^36 / w) + 1` is exact for every `s < 2^26` and `w <= 513`
/// (the error `s · (m - 2^36/w) / 2^36` stays below `2^-10`, less than the gap `1/w` below the next integer;
/// `s · m < 2^62` does not overflow).
struct Reciprocal {
    width: u32,
    multiplier: u64,
}

impl Reciprocal {
    const SHIFT: u32 = 36;

    fn new(width: u32) -> Reciprocal {
        debug_assert!(width > 0 && width <= 513);
        Reciprocal { width, multiplier: (1u64 << Self::SHIFT) / u64::from(width) + 1 }
    }

    /// `round(sum / width)`, halves up.
    fn rounded(&self, sum: u32) -> u32 {
        let s = u64::from(sum + self.width / 2);
        debug_assert!(s < 1 << 26);
        ((s * self.multiplier) >> Self::SHIFT) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips() {
        let src: Vec<u32> = (0..70 * 45).collect();
        let mut t = vec![0; src.len()];
        transpose(&src, 70, 45, &mut t);
        assert_eq!(t[3 * 70 + 2], src[2 * 45 + 3]);
        let mut back = vec![0; src.len()];
        transpose(&t, 45, 70, &mut back);
        assert_eq!(back, src);
    }

    #[test]
    fn extreme_matches_a_plain_window_scan() {
        let line: Vec<f32> = (0..37).map(|i| ((i * 7919) % 23) as f32 / 23.0).collect();
        for radius in [1usize, 2, 5, 40] {
            for keep_max in [true, false] {
                let mut got = line.clone();
                ExtremeLine::new(radius, keep_max).run(&mut got);
                let want: Vec<f32> = (0..line.len())
                    .map(|i| {
                        let window = &line[i.saturating_sub(radius)..(i + radius + 1).min(line.len())];
                        let pick = if keep_max { f32::max } else { f32::min };
                        window.iter().copied().reduce(pick).unwrap()
                    })
                    .collect();
                assert_eq!(got, want, "radius {radius}, max {keep_max}");
            }
        }
    }

    #[test]
    fn reciprocal_division_is_exact() {
        for width in [1u32, 3, 7, 9, 255, 511, 513] {
            let divide = Reciprocal::new(width);
            let top = (1u32 << 26) - width;
            for sum in (0..2000).chain((0..2000).map(|i| top - i * 977)).chain([ONE * width, ONE * width - 1]) {
                assert_eq!(divide.rounded(sum), (sum + width / 2) / width, "{sum} / {width}");
            }
        }
    }

    #[test]
    fn box_line_is_exact_on_flat_runs_and_extends_the_ends() {
        let mut line = vec![0, 0, 0, 0, ONE, ONE, ONE, ONE, ONE, ONE];
        box_line(&mut line, 1, &mut Vec::new());
        assert_eq!(line[..3], [0, 0, 0]);
        assert_eq!(line[3], (ONE + 1) / 3);
        assert_eq!(line[6..], [ONE; 4]);
        // A single line element: itself.
        let mut one = vec![ONE / 2];
        box_line(&mut one, 3, &mut Vec::new());
        assert_eq!(one, vec![ONE / 2]);
    }
}
