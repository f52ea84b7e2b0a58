//! The canonical OpenPose body skeleton: a pixel-exact port of ControlNet v1.1's `draw_bodypose`
//! (lllyasviel/ControlNet-v1-1-nightly, annotator/openpose/util.py), which is what the v1.1 OpenPose ControlNet
//! was trained on, including the OpenCV drawing it relies on (`ellipse2Poly`, `fillConvexPoly`, `circle` of
//! modules/imgproc/src/drawing.cpp; identical in OpenCV 4.3.0, the annotator's pinned version, and 5.0.0).
//!
//! What the original does, and so what [`draw_bodypose`] does, for a canvas of W x H:
//! 1. Keypoints are normalised by W and H and multiplied back in f64 (`x / W * W`, not always `x`).
//! 2. Limb-major order (limb 0 of every person, then limb 1, ...): for each of the first 17 pairs of `limbSeq`
//!    with both ends present, the polygon `ellipse2Poly((int(mean x), int(mean y)), (int(length / 2), 4),
//!    int(degrees(atan2(dy, dx))), 0, 360, 1)` is filled (`fillConvexPoly`, 8-connected, which also draws the
//!    outline with Bresenham lines) in palette colour i. `int()` truncates toward zero.
//! 3. The whole canvas is multiplied by 0.6 in f64 and truncated to u8 (`(canvas * 0.6).astype(np.uint8)`):
//!    limb colours become 255 -> 153, 170 -> 102, 85 -> 51.
//! 4. Joint-major order: each present joint i is a filled circle of radius 4 (OpenCV's integer `Circle`) in full
//!    palette colour i at `(int(x), int(y))`.
//!
//! Colours are RGB: the original writes `colors[i]` into channels (0, 1, 2) of an array that the v1.1 apps feed to
//! the model as RGB (and controlnet_aux hands to `PIL.Image.fromarray`): limb 0 (neck -> right shoulder) is red,
//! limb 12 (neck -> nose) blue.
//!
//! Missing keypoints: the original skips a limb when either end's `subset` index is -1 and a joint when its own
//! is. Here a keypoint is missing when its score is not > 0 ([`Keypoint`]: score 0 means missing; thresholds are
//! the estimator's business) or a coordinate is not finite (the original would raise). Coordinates are clamped to
//! ±[`MAX_COORD`] pixels first (beyond that OpenCV's own int maths overflows; nothing real gets there).
//!
//! Checked pixel for pixel against the Python original by tests/openpose_render.rs (goldens made by
//! scripts/golden/openpose_render.py).

use image::RgbImage;

use super::{Keypoint, Person};

/// The 17 limbs ControlNet v1.1 draws (`limbSeq[:17]`, 0-based here): pairs of OpenPose-18 indices.
pub const LIMBS: [(usize, usize); 17] = [
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
];

/// The 18-colour palette (RGB): limb i and joint i use colour i.
pub const COLORS: [[u8; 3]; 18] = [
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [0, 255, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [85, 0, 255],
    [170, 0, 255],
    [255, 0, 255],
    [255, 0, 170],
    [255, 0, 85],
];

/// Keypoint coordinates are clamped to ±this many pixels before anything else.
pub const MAX_COORD: f64 = 1_048_576.0;

/// Half the limbs' width: the ellipse's minor semi-axis (`stickwidth`).
const STICK_WIDTH: i32 = 4;
/// The joints' radius.
const JOINT_RADIUS: i64 = 4;

/// `(v * 0.6).astype(np.uint8)` for every u8 v: the float64 product, truncated.
const DIM: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as f64 * 0.6) as u8;
        i += 1;
    }
    table
};

/// The palette as the limbs end up in the conditioning image (× 0.6, truncated).
pub const LIMB_COLORS: [[u8; 3]; 18] = {
    let mut out = [[0u8; 3]; 18];
    let mut i = 0;
    while i < 18 {
        out[i] = [DIM[COLORS[i][0] as usize], DIM[COLORS[i][1] as usize], DIM[COLORS[i][2] as usize]];
        i += 1;
    }
    out
};

/// Draws the ControlNet v1.1 OpenPose skeleton of `people` on `canvas`, exactly as the original does, dimming
/// included: the limbs, then the *whole* canvas × 0.6 (whatever was on it), then the joints. On a black canvas
/// this is the conditioning image ([`skeleton`]); for a picture under the skeleton use [`draw_overlay`].
pub fn draw_bodypose(canvas: &mut RgbImage, people: &[Person]) {
    draw_limbs(canvas, people, &COLORS);
    for v in canvas.iter_mut() {
        *v = DIM[*v as usize];
    }
    draw_joints(canvas, people);
}

/// The ControlNet OpenPose conditioning image: the skeleton of `people` (frame pixels of a `width` x `height`
/// frame) on black.
pub fn skeleton(width: u32, height: u32, people: &[Person]) -> RgbImage {
    let mut canvas = RgbImage::new(width, height);
    draw_bodypose(&mut canvas, people);
    canvas
}

/// The skeleton over `frame`, for a preview window: the same pixels as the conditioning image wherever the
/// skeleton is (limbs in palette × 0.6, as the model sees them, then joints in full palette colour) and the frame,
/// undimmed, everywhere else.
pub fn overlay(frame: &RgbImage, people: &[Person]) -> RgbImage {
    let mut out = frame.clone();
    draw_overlay(&mut out, people);
    out
}

/// [`overlay`] in place.
pub fn draw_overlay(canvas: &mut RgbImage, people: &[Person]) {
    draw_limbs(canvas, people, &LIMB_COLORS);
    draw_joints(canvas, people);
}

/// A keypoint's position as the original computes it (`x / W * W` in f64), or None when it is missing.
fn position(kp: &Keypoint, width: f64, height: f64) -> Option<(f64, f64)> {
    if kp.score.is_nan() || kp.score <= 0.0 || !kp.x.is_finite() || !kp.y.is_finite() {
        return None;
    }
    let x = f64::from(kp.x).clamp(-MAX_COORD, MAX_COORD);
    let y = f64::from(kp.y).clamp(-MAX_COORD, MAX_COORD);
    Some((x / width * width, y / height * height))
}

fn draw_limbs(canvas: &mut RgbImage, people: &[Person], colors: &[[u8; 3]; 18]) {
    let (width, height) = (f64::from(canvas.width()), f64::from(canvas.height()));
    if canvas.width() == 0 || canvas.height() == 0 {
        return;
    }
    let mut polygon = [(0i32, 0i32); ELLIPSE_POINTS];
    for (i, &(a, b)) in LIMBS.iter().enumerate() {
        for person in people {
            let (Some((x1, y1)), Some((x2, y2))) =
                (position(&person.keypoints[a], width, height), position(&person.keypoints[b], width, height))
            else {
                continue;
            };
            // The original's names: Y holds the x coordinates, X the y coordinates.
            let mean_x = (x1 + x2) / 2.0;
            let mean_y = (y1 + y2) / 2.0;
            let (dy, dx) = (y1 - y2, x1 - x2);
            let length = (dy * dy + dx * dx).sqrt();
            let angle = dy.atan2(dx).to_degrees();
            let n = ellipse2poly(
                (mean_x as i32, mean_y as i32),
                ((length / 2.0) as i32, STICK_WIDTH),
                angle as i32,
                &mut polygon,
            );
            fill_convex_poly(canvas, &polygon[..n], colors[i]);
        }
    }
}

fn draw_joints(canvas: &mut RgbImage, people: &[Person]) {
    let (width, height) = (f64::from(canvas.width()), f64::from(canvas.height()));
    if canvas.width() == 0 || canvas.height() == 0 {
        return;
    }
    for (i, &color) in COLORS.iter().enumerate() {
        for person in people {
            if let Some((x, y)) = position(&person.keypoints[i], width, height) {
                circle_filled(canvas, (x as i64, y as i64), JOINT_RADIUS, color);
            }
        }
    }
}

// ---- OpenCV's drawing (modules/imgproc/src/drawing.cpp), for 8-bit 3-channel images, shift 0, LINE_8 ----

/// OpenCV's `SinTable`: sin of 0..=450 whole degrees, as f32 literals with 7 decimals (checked bit for bit against
/// the table compiled into opencv-python 4.3.0 and 5.0.0).
#[allow(clippy::approx_constant, clippy::excessive_precision, clippy::unreadable_literal)]
const SIN_TABLE: [f32; 451] = [
    0.0000000, 0.0174524, 0.0348995, 0.0523360, 0.0697565, 0.0871557, 0.1045285, 0.1218693, 0.1391731, 0.1564345,
    0.1736482, 0.1908090, 0.2079117, 0.2249511, 0.2419219, 0.2588190, 0.2756374, 0.2923717, 0.3090170, 0.3255682,
    0.3420201, 0.3583679, 0.3746066, 0.3907311, 0.4067366, 0.4226183, 0.4383711, 0.4539905, 0.4694716, 0.4848096,
    0.5000000, 0.5150381, 0.5299193, 0.5446390, 0.5591929, 0.5735764, 0.5877853, 0.6018150, 0.6156615, 0.6293204,
    0.6427876, 0.6560590, 0.6691306, 0.6819984, 0.6946584, 0.7071068, 0.7193398, 0.7313537, 0.7431448, 0.7547096,
    0.7660444, 0.7771460, 0.7880108, 0.7986355, 0.8090170, 0.8191520, 0.8290376, 0.8386706, 0.8480481, 0.8571673,
    0.8660254, 0.8746197, 0.8829476, 0.8910065, 0.8987940, 0.9063078, 0.9135455, 0.9205049, 0.9271839, 0.9335804,
    0.9396926, 0.9455186, 0.9510565, 0.9563048, 0.9612617, 0.9659258, 0.9702957, 0.9743701, 0.9781476, 0.9816272,
    0.9848078, 0.9876883, 0.9902681, 0.9925462, 0.9945219, 0.9961947, 0.9975641, 0.9986295, 0.9993908, 0.9998477,
    1.0000000, 0.9998477, 0.9993908, 0.9986295, 0.9975641, 0.9961947, 0.9945219, 0.9925462, 0.9902681, 0.9876883,
    0.9848078, 0.9816272, 0.9781476, 0.9743701, 0.9702957, 0.9659258, 0.9612617, 0.9563048, 0.9510565, 0.9455186,
    0.9396926, 0.9335804, 0.9271839, 0.9205049, 0.9135455, 0.9063078, 0.8987940, 0.8910065, 0.8829476, 0.8746197,
    0.8660254, 0.8571673, 0.8480481, 0.8386706, 0.8290376, 0.8191520, 0.8090170, 0.7986355, 0.7880108, 0.7771460,
    0.7660444, 0.7547096, 0.7431448, 0.7313537, 0.7193398, 0.7071068, 0.6946584, 0.6819984, 0.6691306, 0.6560590,
    0.6427876, 0.6293204, 0.6156615, 0.6018150, 0.5877853, 0.5735764, 0.5591929, 0.5446390, 0.5299193, 0.5150381,
    0.5000000, 0.4848096, 0.4694716, 0.4539905, 0.4383711, 0.4226183, 0.4067366, 0.3907311, 0.3746066, 0.3583679,
    0.3420201, 0.3255682, 0.3090170, 0.2923717, 0.2756374, 0.2588190, 0.2419219, 0.2249511, 0.2079117, 0.1908090,
    0.1736482, 0.1564345, 0.1391731, 0.1218693, 0.1045285, 0.0871557, 0.0697565, 0.0523360, 0.0348995, 0.0174524,
    0.0000000, -0.0174524, -0.0348995, -0.0523360, -0.0697565, -0.0871557, -0.1045285, -0.1218693, -0.1391731,
    -0.1564345, -0.1736482, -0.1908090, -0.2079117, -0.2249511, -0.2419219, -0.2588190, -0.2756374, -0.2923717,
    -0.3090170, -0.3255682, -0.3420201, -0.3583679, -0.3746066, -0.3907311, -0.4067366, -0.4226183, -0.4383711,
    -0.4539905, -0.4694716, -0.4848096, -0.5000000, -0.5150381, -0.5299193, -0.5446390, -0.5591929, -0.5735764,
    -0.5877853, -0.6018150, -0.6156615, -0.6293204, -0.6427876, -0.6560590, -0.6691306, -0.6819984, -0.6946584,
    -0.7071068, -0.7193398, -0.7313537, -0.7431448, -0.7547096, -0.7660444, -0.7771460, -0.7880108, -0.7986355,
    -0.8090170, -0.8191520, -0.8290376, -0.8386706, -0.8480481, -0.8571673, -0.8660254, -0.8746197, -0.8829476,
    -0.8910065, -0.8987940, -0.9063078, -0.9135455, -0.9205049, -0.9271839, -0.9335804, -0.9396926, -0.9455186,
    -0.9510565, -0.9563048, -0.9612617, -0.9659258, -0.9702957, -0.9743701, -0.9781476, -0.9816272, -0.9848078,
    -0.9876883, -0.9902681, -0.9925462, -0.9945219, -0.9961947, -0.9975641, -0.9986295, -0.9993908, -0.9998477,
    -1.0000000, -0.9998477, -0.9993908, -0.9986295, -0.9975641, -0.9961947, -0.9945219, -0.9925462, -0.9902681,
    -0.9876883, -0.9848078, -0.9816272, -0.9781476, -0.9743701, -0.9702957, -0.9659258, -0.9612617, -0.9563048,
    -0.9510565, -0.9455186, -0.9396926, -0.9335804, -0.9271839, -0.9205049, -0.9135455, -0.9063078, -0.8987940,
    -0.8910065, -0.8829476, -0.8746197, -0.8660254, -0.8571673, -0.8480481, -0.8386706, -0.8290376, -0.8191520,
    -0.8090170, -0.7986355, -0.7880108, -0.7771460, -0.7660444, -0.7547096, -0.7431448, -0.7313537, -0.7193398,
    -0.7071068, -0.6946584, -0.6819984, -0.6691306, -0.6560590, -0.6427876, -0.6293204, -0.6156615, -0.6018150,
    -0.5877853, -0.5735764, -0.5591929, -0.5446390, -0.5299193, -0.5150381, -0.5000000, -0.4848096, -0.4694716,
    -0.4539905, -0.4383711, -0.4226183, -0.4067366, -0.3907311, -0.3746066, -0.3583679, -0.3420201, -0.3255682,
    -0.3090170, -0.2923717, -0.2756374, -0.2588190, -0.2419219, -0.2249511, -0.2079117, -0.1908090, -0.1736482,
    -0.1564345, -0.1391731, -0.1218693, -0.1045285, -0.0871557, -0.0697565, -0.0523360, -0.0348995, -0.0174524,
    -0.0000000, 0.0174524, 0.0348995, 0.0523360, 0.0697565, 0.0871557, 0.1045285, 0.1218693, 0.1391731, 0.1564345,
    0.1736482, 0.1908090, 0.2079117, 0.2249511, 0.2419219, 0.2588190, 0.2756374, 0.2923717, 0.3090170, 0.3255682,
    0.3420201, 0.3583679, 0.3746066, 0.3907311, 0.4067366, 0.4226183, 0.4383711, 0.4539905, 0.4694716, 0.4848096,
    0.5000000, 0.5150381, 0.5299193, 0.5446390, 0.5591929, 0.5735764, 0.5877853, 0.6018150, 0.6156615, 0.6293204,
    0.6427876, 0.6560590, 0.6691306, 0.6819984, 0.6946584, 0.7071068, 0.7193398, 0.7313537, 0.7431448, 0.7547096,
    0.7660444, 0.7771460, 0.7880108, 0.7986355, 0.8090170, 0.8191520, 0.8290376, 0.8386706, 0.8480481, 0.8571673,
    0.8660254, 0.8746197, 0.8829476, 0.8910065, 0.8987940, 0.9063078, 0.9135455, 0.9205049, 0.9271839, 0.9335804,
    0.9396926, 0.9455186, 0.9510565, 0.9563048, 0.9612617, 0.9659258, 0.9702957, 0.9743701, 0.9781476, 0.9816272,
    0.9848078, 0.9876883, 0.9902681, 0.9925462, 0.9945219, 0.9961947, 0.9975641, 0.9986295, 0.9993908, 0.9998477,
    1.0000000,
];

/// Points `ellipse2Poly(.., 0, 360, delta 1)` computes before removing repeats.
const ELLIPSE_POINTS: usize = 361;

/// `cvRound`: round half to even (SSE2 `cvtsd2si` in the default rounding mode).
fn cv_round(v: f64) -> i32 {
    v.round_ties_even() as i32
}

/// `cv::ellipse2Poly(Point center, Size axes, int angle, 0, 360, 1, pts)`: the double-precision points (f32 table
/// values, f64 maths), rounded, with consecutive repeats dropped; a single point becomes two copies of the centre.
/// Returns how many points of `out` it wrote.
fn ellipse2poly(center: (i32, i32), axes: (i32, i32), angle: i32, out: &mut [(i32, i32); ELLIPSE_POINTS]) -> usize {
    let mut angle = angle;
    while angle < 0 {
        angle += 360;
    }
    while angle > 360 {
        angle -= 360;
    }
    let angle = angle as usize;
    let (alpha, beta) = (f64::from(SIN_TABLE[450 - angle]), f64::from(SIN_TABLE[angle])); // cos, sin
    let (cx, cy) = (f64::from(center.0), f64::from(center.1));
    let (aw, ah) = (f64::from(axes.0), f64::from(axes.1));
    let mut n = 0;
    let mut prev = (i32::MIN, i32::MIN);
    for i in 0..ELLIPSE_POINTS {
        let x = aw * f64::from(SIN_TABLE[450 - i]);
        let y = ah * f64::from(SIN_TABLE[i]);
        let pt = (cv_round(cx + x * alpha - y * beta), cv_round(cy + x * beta + y * alpha));
        if pt != prev {
            out[n] = pt;
            n += 1;
            prev = pt;
        }
    }
    if n == 1 {
        out[0] = center;
        out[1] = center;
        n = 2;
    }
    n
}

const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;

/// `ICV_HLINE`: pixels x1..=x2 of row y (already clipped by the caller).
fn hline(canvas: &mut RgbImage, y: i64, x1: i64, x2: i64, color: [u8; 3]) {
    let width = canvas.width() as usize;
    let row = y as usize * width * 3;
    let span = &mut canvas.as_mut()[row + x1 as usize * 3..row + (x2 as usize + 1) * 3];
    for px in span.chunks_exact_mut(3) {
        px.copy_from_slice(&color);
    }
}

/// `cv::clipLine(Size2l, Point2l&, Point2l&)`: clips the segment to the image; false when nothing is left.
fn clip_line(width: i64, height: i64, p1: &mut (i64, i64), p2: &mut (i64, i64)) -> bool {
    if width <= 0 || height <= 0 {
        return false;
    }
    let (right, bottom) = (width - 1, height - 1);
    let (x1, y1) = (&mut p1.0, &mut p1.1);
    let (x2, y2) = (&mut p2.0, &mut p2.1);
    let code =
        |x: i64, y: i64| i32::from(x < 0) + i32::from(x > right) * 2 + i32::from(y < 0) * 4 + i32::from(y > bottom) * 8;
    let mut c1 = code(*x1, *y1);
    let mut c2 = code(*x2, *y2);
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            *x1 += (a - *y1) * (*x2 - *x1) / (*y2 - *y1);
            *y1 = a;
            c1 = i32::from(*x1 < 0) + i32::from(*x1 > right) * 2;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            *x2 += (a - *y2) * (*x2 - *x1) / (*y2 - *y1);
            *y2 = a;
            c2 = i32::from(*x2 < 0) + i32::from(*x2 > right) * 2;
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                *y1 += (a - *x1) * (*y2 - *y1) / (*x2 - *x1);
                *x1 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                *y2 += (a - *x2) * (*y2 - *y1) / (*x2 - *x1);
                *x2 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2) == 0
}

/// OpenCV's `Line` through `LineIterator(img, pt1, pt2, 8, left_to_right = true)`: an 8-connected Bresenham
/// line, clipped to the image first.
fn line8(canvas: &mut RgbImage, p1: (i32, i32), p2: (i32, i32), color: [u8; 3]) {
    let (width, height) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let mut p1 = (i64::from(p1.0), i64::from(p1.1));
    let mut p2 = (i64::from(p2.0), i64::from(p2.1));
    let outside = |p: (i64, i64)| p.0 < 0 || p.0 >= width || p.1 < 0 || p.1 >= height;
    if (outside(p1) || outside(p2)) && !clip_line(width, height, &mut p1, &mut p2) {
        return;
    }
    let (mut dx, mut dy) = (p2.0 - p1.0, p2.1 - p1.1);
    if dx < 0 {
        // Left to right: start from the other end.
        dx = -dx;
        dy = -dy;
        p1 = p2;
    }
    let y_step = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    // The major axis steps every pixel ("minus" step), the minor one when the error goes negative ("plus").
    let (major, minor) = if dy > dx {
        std::mem::swap(&mut dx, &mut dy);
        ((0, y_step), (1, 0))
    } else {
        ((1, 0), (0, y_step))
    };
    let mut err = dx - (dy + dy);
    let plus_delta = dx + dx;
    let minus_delta = -(dy + dy);
    let (mut x, mut y) = p1;
    let buf: &mut [u8] = canvas.as_mut();
    for _ in 0..=dx {
        if (0..width).contains(&x) && (0..height).contains(&y) {
            let at = (y * width + x) as usize * 3;
            buf[at..at + 3].copy_from_slice(&color);
        }
        if err < 0 {
            err += minus_delta + plus_delta;
            x += major.0 + minor.0;
            y += major.1 + minor.1;
        } else {
            err += minus_delta;
            x += major.0;
            y += major.1;
        }
    }
}

/// OpenCV's `FillConvexPoly(img, v, npts, color, LINE_8, shift 0)`: the outline as 8-connected lines, then a
/// scanline fill stepping both sides' x in 16.16 fixed point.
fn fill_convex_poly(canvas: &mut RgbImage, v: &[(i32, i32)], color: [u8; 3]) {
    #[derive(Clone, Copy)]
    struct Edge {
        idx: usize,
        di: usize,
        x: i64,
        dx: i64,
        ye: i64,
    }
    let npts = v.len();
    if npts == 0 {
        return;
    }
    let (width, height) = (i64::from(canvas.width()), i64::from(canvas.height()));
    // line_type < CV_AA: both sides round to the nearest pixel.
    let (delta1, delta2) = (XY_ONE >> 1, XY_ONE >> 1);

    let mut p0 = v[npts - 1];
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (v[0].0, v[0].0, v[0].1, v[0].1);
    let mut imin = 0;
    for (i, &p) in v.iter().enumerate() {
        if p.1 < ymin {
            ymin = p.1;
            imin = i;
        }
        ymax = ymax.max(p.1);
        xmax = xmax.max(p.0);
        xmin = xmin.min(p.0);
        line8(canvas, p0, p, color);
        p0 = p;
    }
    let (xmin, xmax, ymin, ymax) = (i64::from(xmin), i64::from(xmax), i64::from(ymin), i64::from(ymax));
    if npts < 3 || xmax < 0 || ymax < 0 || xmin >= width || ymin >= height {
        return;
    }
    let ymax = ymax.min(height - 1);
    let mut edge = [Edge { idx: imin, di: 1, x: -XY_ONE, dx: 0, ye: ymin }; 2];
    edge[1].di = npts - 1;
    let mut edges = npts as i64;
    let mut y = ymin;
    loop {
        for e in edge.iter_mut() {
            if y >= e.ye {
                let mut idx0 = e.idx;
                let mut idx = idx0 + e.di;
                if idx >= npts {
                    idx -= npts;
                }
                // for (; edges-- > 0; )
                loop {
                    let more = edges > 0;
                    edges -= 1;
                    if !more {
                        break;
                    }
                    let ty = i64::from(v[idx].1);
                    if ty > y {
                        let xs = i64::from(v[idx0].0) << XY_SHIFT;
                        let xe = i64::from(v[idx].0) << XY_SHIFT;
                        e.ye = ty;
                        e.dx = ((xe - xs) * 2 + (ty - y)) / (2 * (ty - y));
                        e.x = xs;
                        e.idx = idx;
                        break;
                    }
                    idx0 = idx;
                    idx += e.di;
                    if idx >= npts {
                        idx -= npts;
                    }
                }
            }
        }
        if edges < 0 {
            break;
        }
        if y >= 0 {
            let (left, right) = if edge[0].x > edge[1].x { (1, 0) } else { (0, 1) };
            let xx1 = (edge[left].x + delta1) >> XY_SHIFT;
            let xx2 = (edge[right].x + delta2) >> XY_SHIFT;
            if xx2 >= 0 && xx1 < width {
                hline(canvas, y, xx1.max(0), xx2.min(width - 1), color);
            }
        }
        edge[0].x += edge[0].dx;
        edge[1].x += edge[1].dx;
        y += 1;
        if y > ymax {
            break;
        }
    }
}

/// OpenCV's `Circle(img, center, radius, color, fill = 1)`: what `cv2.circle` does for thickness -1 with LINE_8
/// and shift 0; rows of a midpoint circle, clipped.
fn circle_filled(canvas: &mut RgbImage, center: (i64, i64), radius: i64, color: [u8; 3]) {
    let (width, height) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let (cx, cy) = center;
    let (mut err, mut dx, mut dy, mut plus, mut minus) = (0i64, radius, 0i64, 1i64, (radius << 1) - 1);
    let inside = cx >= radius && cx < width - radius && cy >= radius && cy < height - radius;
    let row_ok = |y: i64| (0..height).contains(&y);
    while dx >= dy {
        let (y11, y12, y21, y22) = (cy - dy, cy + dy, cy - dx, cy + dx);
        let (x11, x12, x21, x22) = (cx - dx, cx + dx, cx - dy, cx + dy);
        if inside {
            hline(canvas, y11, x11, x12, color);
            hline(canvas, y12, x11, x12, color);
            hline(canvas, y21, x21, x22, color);
            hline(canvas, y22, x21, x22, color);
        } else if x11 < width && x12 >= 0 && y21 < height && y22 >= 0 {
            let (x11, x12) = (x11.max(0), x12.min(width - 1));
            if row_ok(y11) {
                hline(canvas, y11, x11, x12, color);
            }
            if row_ok(y12) {
                hline(canvas, y12, x11, x12, color);
            }
            if x21 < width && x22 >= 0 {
                let (x21, x22) = (x21.max(0), x22.min(width - 1));
                if row_ok(y21) {
                    hline(canvas, y21, x21, x22, color);
                }
                if row_ok(y22) {
                    hline(canvas, y22, x21, x22, color);
                }
            }
        }
        dy += 1;
        err += plus;
        plus += 2;
        let mask = if err <= 0 { 0 } else { -1 };
        err -= minus & mask;
        dx += mask;
        minus -= mask & 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(points: &[(usize, f32, f32)]) -> Person {
        let mut p = Person::default();
        for &(i, x, y) in points {
            p.keypoints[i] = Keypoint { x, y, score: 0.8 };
        }
        p
    }

    #[test]
    fn no_people_is_all_black() {
        let img = skeleton(64, 48, &[]);
        assert_eq!(img.dimensions(), (64, 48));
        assert!(img.as_raw().iter().all(|&v| v == 0));
        assert!(skeleton(0, 0, &[person(&[(1, 0.0, 0.0), (2, 5.0, 5.0)])]).as_raw().is_empty());
    }

    #[test]
    fn limbs_are_the_palette_times_0_6_truncated_and_joints_the_full_palette() {
        assert_eq!(&LIMB_COLORS[..3], &[[153, 0, 0], [153, 51, 0], [153, 102, 0]]);
        // Neck (1) -> right shoulder (2): limb 0.
        let img = skeleton(100, 100, &[person(&[(1, 20.0, 50.0), (2, 80.0, 50.0)])]);
        assert_eq!(img.get_pixel(50, 50).0, [153, 0, 0]);
        assert_eq!(img.get_pixel(50, 53).0, [153, 0, 0]);
        assert_eq!(img.get_pixel(50, 56).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(20, 50).0, COLORS[1]);
        assert_eq!(img.get_pixel(80, 54).0, COLORS[2]);
        assert_eq!(img.get_pixel(80, 55).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(5, 5).0, [0, 0, 0]);
    }

    #[test]
    fn a_missing_end_drops_the_limb_but_not_the_other_joint() {
        let mut p = person(&[(1, 20.0, 50.0), (2, 80.0, 50.0)]);
        p.keypoints[2].score = 0.0;
        let img = skeleton(100, 100, &[p.clone()]);
        assert_eq!(img.get_pixel(50, 50).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(20, 50).0, COLORS[1]);
        assert_eq!(img.get_pixel(80, 50).0, [0, 0, 0]);
        // NaN scores and non-finite coordinates are missing too; huge ones are clamped, not a panic.
        p.keypoints[2] = Keypoint { x: 80.0, y: 50.0, score: f32::NAN };
        assert_eq!(skeleton(100, 100, &[p.clone()]), img);
        p.keypoints[2] = Keypoint { x: f32::INFINITY, y: 50.0, score: 1.0 };
        assert_eq!(skeleton(100, 100, &[p.clone()]), img);
        p.keypoints[2] = Keypoint { x: 1e30, y: -1e30, score: 1.0 };
        let _ = skeleton(100, 100, &[p]);
    }

    #[test]
    fn draw_bodypose_dims_the_whole_canvas_and_overlay_does_not() {
        let people = [person(&[(1, 20.0, 50.0), (2, 80.0, 50.0)])];
        let frame = RgbImage::from_pixel(100, 100, image::Rgb([200, 100, 7]));
        let mut dimmed = frame.clone();
        draw_bodypose(&mut dimmed, &people);
        assert_eq!(dimmed.get_pixel(5, 5).0, [120, 60, 4]);
        assert_eq!(dimmed.get_pixel(50, 50).0, [153, 0, 0]);
        let over = overlay(&frame, &people);
        assert_eq!(over.get_pixel(5, 5).0, [200, 100, 7]);
        assert_eq!(over.get_pixel(50, 50).0, [153, 0, 0]);
        assert_eq!(over.get_pixel(20, 50).0, COLORS[1]);
    }

    #[test]
    fn ellipse2poly_matches_opencv_on_simple_shapes() {
        let mut pts = [(0, 0); ELLIPSE_POINTS];
        // A zero-size ellipse is two copies of the centre.
        assert_eq!(ellipse2poly((7, 9), (0, 0), 33, &mut pts), 2);
        assert_eq!(&pts[..2], &[(7, 9), (7, 9)]);
        // Axis-aligned: starts at (cx + a, cy), reaches (cx, cy + b) at 90 degrees.
        let n = ellipse2poly((50, 40), (10, 4), 0, &mut pts);
        assert_eq!(pts[0], (60, 40));
        assert!(pts[..n].contains(&(50, 44)) && pts[..n].contains(&(40, 40)) && pts[..n].contains(&(50, 36)));
        assert!(pts[..n].iter().all(|&(x, y)| (40..=60).contains(&x) && (36..=44).contains(&y)));
        // Rotated by 90 (and by -270, the same after normalisation).
        let n90 = ellipse2poly((50, 40), (10, 4), 90, &mut pts);
        assert_eq!(pts[0], (50, 50));
        let first: Vec<_> = pts[..n90].to_vec();
        assert_eq!(ellipse2poly((50, 40), (10, 4), -270, &mut pts), n90);
        assert_eq!(&pts[..n90], &first[..]);
    }

    #[test]
    fn circle_is_opencvs_radius_4_disc_and_clips() {
        let mut img = RgbImage::new(20, 20);
        circle_filled(&mut img, (10, 10), 4, [1, 2, 3]);
        let lit = |img: &RgbImage| img.pixels().filter(|p| p.0 != [0, 0, 0]).count();
        // Row widths 1, 5, 7, 7, 9, 7, 7, 5, 1: what cv2.circle(img, (10, 10), 4, c, -1) lights.
        let widths: Vec<usize> =
            img.rows().map(|row| row.filter(|p| p.0 != [0, 0, 0]).count()).filter(|&n| n > 0).collect();
        assert_eq!(widths, [1, 5, 7, 7, 9, 7, 7, 5, 1]);
        assert_eq!(lit(&img), 49);
        assert_eq!(img.get_pixel(14, 10).0, [1, 2, 3]);
        assert_eq!(img.get_pixel(14, 13).0, [0, 0, 0]);
        let mut corner = RgbImage::new(20, 20);
        circle_filled(&mut corner, (-2, 19), 4, [1, 2, 3]);
        assert_eq!(lit(&corner), 8);
        assert_eq!(corner.get_pixel(0, 19).0, [1, 2, 3]);
    }
}
