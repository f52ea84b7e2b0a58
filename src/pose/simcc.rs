//! SimCC decoding (RTMPose, DWPose): each keypoint is a pair of 1-D responses over sub-pixel bins of the model
//! input's x and y axes; its position is the argmax bin of each divided by the split ratio (bins per input
//! pixel), its score the smaller of the two maxima. A keypoint whose score is not positive has no location: as
//! in the original (`get_simcc_maximum` in DWPose's `onnxpose.py`) its bins become -1 before the division.

/// One decoded keypoint in model-input pixels (x along the input's width, y along its height).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimccPoint {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// The index and value of the maximum of `row`, the first one on ties (numpy's `argmax`); `None` when empty. NaN
/// values never win.
pub fn argmax(row: &[f32]) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        let better = match best {
            Some((_, b)) => v > b,
            None => !v.is_nan(),
        };
        if better {
            best = Some((i, v));
        }
    }
    best
}

/// Decode one keypoint from its x and y responses with `split_ratio` bins per input pixel.
pub fn decode_point(simcc_x: &[f32], simcc_y: &[f32], split_ratio: f32) -> SimccPoint {
    let (Some((xi, xv)), Some((yi, yv))) = (argmax(simcc_x), argmax(simcc_y)) else {
        return SimccPoint { x: -1.0 / split_ratio, y: -1.0 / split_ratio, score: 0.0 };
    };
    let score = xv.min(yv);
    let (bx, by) = if score > 0.0 { (xi as f32, yi as f32) } else { (-1.0, -1.0) };
    SimccPoint { x: bx / split_ratio, y: by / split_ratio, score }
}

/// Decode every keypoint of one person: `simcc_x` is `K x wx`, `simcc_y` is `K x wy`, both row-major. `out` is
/// cleared and filled with `K` points.
pub fn decode(simcc_x: &[f32], wx: usize, simcc_y: &[f32], wy: usize, split_ratio: f32, out: &mut Vec<SimccPoint>) {
    out.clear();
    if wx == 0 || wy == 0 {
        return;
    }
    out.extend(simcc_x.chunks_exact(wx).zip(simcc_y.chunks_exact(wy)).map(|(x, y)| decode_point(x, y, split_ratio)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak(len: usize, at: usize, value: f32) -> Vec<f32> {
        (0..len).map(|i| if i == at { value } else { 0.01 * (i % 7) as f32 }).collect()
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 0.5, 0.2, 0.5]), Some((1, 0.5)));
        assert_eq!(argmax(&[f32::NAN, -2.0, -1.0]), Some((2, -1.0)));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NAN]), None);
    }

    #[test]
    fn location_is_the_bin_over_the_split_ratio() {
        // 576 x-bins and 768 y-bins: DWPose's 288 x 384 input at split ratio 2.
        let p = decode_point(&peak(576, 301, 0.8), &peak(768, 77, 0.6), 2.0);
        assert_eq!(p, SimccPoint { x: 150.5, y: 38.5, score: 0.6 });
        // Split ratio 1: bins are pixels.
        let p = decode_point(&peak(10, 9, 0.4), &peak(12, 0, 0.9), 1.0);
        assert_eq!(p, SimccPoint { x: 9.0, y: 0.0, score: 0.4 });
    }

    #[test]
    fn score_is_the_smaller_maximum_and_nonpositive_means_no_location() {
        let p = decode_point(&peak(8, 3, 2.5), &peak(8, 5, 3.0), 2.0);
        assert_eq!(p.score, 2.5);
        let p = decode_point(&[-0.5, -0.2, -0.9], &[0.3, 0.1, 0.0], 2.0);
        assert_eq!(p, SimccPoint { x: -0.5, y: -0.5, score: -0.2 });
        let p = decode_point(&[0.0, 0.0], &[0.7, 0.1], 2.0);
        assert_eq!(p, SimccPoint { x: -0.5, y: -0.5, score: 0.0 });
    }

    #[test]
    fn decode_walks_the_keypoints_in_order() {
        let (wx, wy) = (6, 4);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for k in 0..3 {
            x.extend(peak(wx, k + 1, 0.5 + k as f32 * 0.1));
            y.extend(peak(wy, 3 - k, 0.9));
        }
        let mut out = vec![SimccPoint { x: 9.0, y: 9.0, score: 9.0 }];
        decode(&x, wx, &y, wy, 2.0, &mut out);
        assert_eq!(out.len(), 3);
        for (k, p) in out.iter().enumerate() {
            assert_eq!((p.x, p.y), ((k + 1) as f32 / 2.0, (3 - k) as f32 / 2.0));
            assert!((p.score - (0.5 + k as f32 * 0.1)).abs() < 1e-6);
        }
        decode(&x, 0, &y, wy, 2.0, &mut out);
        assert!(out.is_empty());
    }
}
