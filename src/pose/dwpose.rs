//! DWPose (Yang et al., ICCV 2023 workshops; what ControlNet users run for OpenPose skeletons): a YOLOX person
//! detector, then RTMPose whole-body (133 COCO-WholeBody keypoints, SimCC heads) on each person, both ONNX; the
//! 17 body keypoints mapped to OpenPose-18 in frame pixels, several people per frame.
//!
//! The steps are those of DWPose's own ONNX pipeline (the ControlNet v1.1 annotator, `annotator/dwpose/onnxdet.py`
//! and `onnxpose.py`); scripts/golden/dwpose.py is its Python reference and tests/dwpose.rs compares against it.
//!
//! - **Detector input**: the frame scaled by `r = min(H/h, W/w)` to `(floor(w·r), floor(h·r))`, placed at the
//!   top-left of the `W x H` input (640², read from the model) on grey 114, RGB as the annotator feeds it, 0..255
//!   floats, no normalisation. The resize is fast_image_resize `Interpolation(Bilinear)`: the 2-tap bilinear
//!   filter of the original's `cv2.resize(INTER_LINEAR)` (no widening when downscaling), within one level of it.
//!   Only the resized region is rewritten per frame; the padding stays.
//! - **Detections**: per anchor of the stride 8/16/32 grids, centre `(d + grid)·stride`, size `exp(.)·stride`,
//!   score objectness × class; candidates scoring above 0.1 go through NMS (IoU above 0.45 suppressed, box areas
//!   with the +1 pixel convention); people (class 0) scoring above 0.3 are kept, in score order, divided by `r`
//!   into frame pixels (not clipped). The original's NMS is per class over all 80; only the person class is
//!   kept afterwards, and a class's NMS never looks at other classes, so running it for class 0 alone gives the
//!   same boxes. No person found: the whole frame is the one box (as the original).
//! - **Pose input**: per box, centre and size × 1.25, widened or heightened to the model input's aspect (3:4),
//!   warped to the `w x h` input (288 x 384) so the centre lands on `(w/2, h/2)` at a uniform scale
//!   `size_w / w`: our own separable bilinear warp in floating point (pixel centres at integer coordinates, 0
//!   outside the frame, like `cv2.warpAffine(INTER_LINEAR)` with its constant border, which the original uses:
//!   that one quantises positions to 1/32 pixel and rounds the result to u8; measured, the two differ by at most
//!   half a level), then `(v - mean) / std` per RGB channel, into a preallocated input.
//! - **Keypoints**: SimCC argmax per axis over the split ratio (bins per input pixel: `simcc_x` width / input
//!   width, 2 for DWPose), score the smaller maximum ([`super::simcc`]); back to the frame as
//!   `p / (w, h) · size + centre - size / 2`. Only the first 17 (COCO body) are decoded: OpenPose-18 has no
//!   hands, feet or face.
//! - **OpenPose-18**: as MoveNet's ([`super::movenet::to_openpose`]): a point scoring below the threshold (or
//!   not above 0) is missing; the neck is the midpoint of the shoulders when both are kept, scored the smaller
//!   of the two (the original scores it 1, a visibility flag, when both are above 0.3). People with no kept
//!   point are dropped. Note that DWPose scores are SimCC maxima, not probabilities: they can exceed 1.
//!
//! The pose model runs once per person with batch 1, as in the original.

use std::path::Path;

use fast_image_resize::images::{CroppedImageMut, Image};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use ndarray::{Array4, ArrayView4, ArrayViewD};
use ort::value::TensorElementType::{Float16, Float32};

use super::simcc::{self, SimccPoint};
use super::{Keypoint, Person, PoseEstimator};
use crate::error::{Error, Result};
use crate::infer::contract::Port;
use crate::infer::{Contract, Model, Runtime};

/// The roles in messages ("DWPose detector model ... has the wrong signature").
pub const DETECTOR_ROLE: &str = "DWPose detector (YOLOX)";
pub const POSE_ROLE: &str = "DWPose pose (RTMPose)";

/// YOLOX's anchor grids.
pub const STRIDES: [u32; 3] = [8, 16, 32];
/// Detector input padding (grey).
pub const PAD_VALUE: u8 = 114;
/// Candidates scoring at most this are not considered.
pub const CANDIDATE_SCORE: f32 = 0.1;
/// NMS: a box overlapping a better one by more than this (IoU) is dropped.
pub const NMS_IOU: f32 = 0.45;
/// People scoring at most this are not kept.
pub const PERSON_SCORE: f32 = 0.3;
/// The box is enlarged by this before cropping.
pub const BOX_PADDING: f32 = 1.25;
/// RTMPose's input normalisation (RGB, 0..255).
pub const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const STD: [f32; 3] = [58.395, 57.12, 57.375];
/// COCO body keypoints: the first 17 of COCO-WholeBody.
pub const BODY: usize = 17;

/// YOLOX as Megvii's `tools/export_onnx.py` writes it (DWPose's `yolox_l.onnx`): `images` f32 `[1, 3, H, W]` in,
/// `output` f32 `[1, anchors, 5 + classes]` out. Shapes are checked after load.
pub static DETECTOR_CONTRACT: Contract = Contract {
    inputs: &[Port { names: &["images"], types: &[Float32, Float16], ranks: &[4], required: true }],
    outputs: &[Port { names: &["output"], types: &[Float32, Float16], ranks: &[3], required: true }],
};

/// RTMPose with SimCC heads as mmdeploy exports it (DWPose's `dw-ll_ucoco_384.onnx`): `input` f32
/// `[1, 3, h, w]` in, `simcc_x` f32 `[1, K, w·ratio]` and `simcc_y` f32 `[1, K, h·ratio]` out.
pub static POSE_CONTRACT: Contract = Contract {
    inputs: &[Port { names: &["input"], types: &[Float32, Float16], ranks: &[4], required: true }],
    outputs: &[
        Port { names: &["simcc_x"], types: &[Float32, Float16], ranks: &[3], required: true },
        Port { names: &["simcc_y"], types: &[Float32, Float16], ranks: &[3], required: true },
    ],
};

/// A person box in frame pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Detection {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    /// Objectness × person score (0 for the whole-frame box used when nobody is detected).
    pub score: f32,
}

/// Where a frame lands in the detector's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetLetterbox {
    /// The input's width and height.
    pub input: (u32, u32),
    pub frame: (u32, u32),
    /// The scale `r` (input pixels per frame pixel).
    pub ratio: f64,
    /// The resized frame's size at the input's top-left.
    pub resized: (u32, u32),
}

impl DetLetterbox {
    pub fn new(width: u32, height: u32, input: (u32, u32)) -> DetLetterbox {
        let ratio = (f64::from(input.1) / f64::from(height)).min(f64::from(input.0) / f64::from(width));
        let fit = |v: u32, max: u32| ((f64::from(v) * ratio) as u32).clamp(1, max);
        DetLetterbox { input, frame: (width, height), ratio, resized: (fit(width, input.0), fit(height, input.1)) }
    }
}

/// The crop of one person: centre and size in frame pixels (the size already padded and at the input's aspect).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crop {
    pub center: [f32; 2],
    pub scale: [f32; 2],
}

impl Crop {
    /// The crop for `det` and a `w x h` pose input (f32 arithmetic, as the original's numpy float32).
    pub fn new(det: &Detection, input: (u32, u32)) -> Crop {
        let center = [(det.x0 + det.x1) * 0.5, (det.y0 + det.y1) * 0.5];
        let (w, h) = ((det.x1 - det.x0) * BOX_PADDING, (det.y1 - det.y0) * BOX_PADDING);
        let aspect = (f64::from(input.0) / f64::from(input.1)) as f32;
        let scale = if w > h * aspect { [w, w / aspect] } else { [h * aspect, h] };
        Crop { center, scale }
    }

    /// A point in pose-input pixels in frame pixels.
    pub fn to_frame(&self, x: f32, y: f32, input: (u32, u32)) -> (f32, f32) {
        let map = |p: f32, size: u32, scale: f32, center: f32| {
            let scale = f64::from(scale);
            (f64::from(p) / f64::from(size) * scale + f64::from(center) - scale / 2.0) as f32
        };
        (map(x, input.0, self.scale[0], self.center[0]), map(y, input.1, self.scale[1], self.center[1]))
    }
}

/// Raw body keypoints of one person: `(x, y, score)` in frame pixels, COCO-17 order, scores as the model gave
/// them (below any threshold included).
pub type Body = [[f32; 3]; BODY];

/// One person's body keypoints as OpenPose-18 (see the module docs).
pub fn to_openpose(body: &Body, threshold: f32) -> Person {
    let point = |coco: usize| {
        let [x, y, score] = body[coco];
        if score >= threshold && score > 0.0 { Keypoint { x, y, score } } else { Keypoint::default() }
    };
    super::openpose_from_coco(point)
}

/// Decode YOLOX's raw `[anchors, 5 + classes]` output (row-major, `row` values per anchor) for the person class:
/// every anchor scoring above [`CANDIDATE_SCORE`], its box in detector-input pixels, into `out` (cleared).
pub fn person_candidates(raw: &[f32], row: usize, input: (u32, u32), out: &mut Vec<Detection>) {
    out.clear();
    let mut anchor = 0usize;
    for stride in STRIDES {
        let (gw, gh) = (input.0 / stride, input.1 / stride);
        let s = f64::from(stride);
        for gy in 0..gh {
            for gx in 0..gw {
                let Some(p) = raw.get(anchor * row..(anchor + 1) * row) else { return };
                anchor += 1;
                let score = p[4] * p[5];
                // (a NaN score is no candidate either)
                if score.partial_cmp(&CANDIDATE_SCORE) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
                // numpy: f32 + int grid promoted to f64, stored back as f32; exp in f32.
                let cx = ((f64::from(p[0]) + f64::from(gx)) * s) as f32;
                let cy = ((f64::from(p[1]) + f64::from(gy)) * s) as f32;
                let w = (f64::from(p[2].exp()) * s) as f32;
                let h = (f64::from(p[3].exp()) * s) as f32;
                out.push(Detection { x0: cx - w / 2.0, y0: cy - h / 2.0, x1: cx + w / 2.0, y1: cy + h / 2.0, score });
            }
        }
    }
}

/// NMS in place: `boxes` sorted by score (best first, stable), then each box overlapping a kept better one by
/// more than `iou` removed. Areas count the +1 pixel, as the original's.
pub fn nms(boxes: &mut Vec<Detection>, iou: f32) {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |d: &Detection| (d.x1 - d.x0 + 1.0) * (d.y1 - d.y0 + 1.0);
    let mut kept = 0;
    for i in 0..boxes.len() {
        let b = boxes[i];
        let overlaps = boxes[..kept].iter().any(|k| {
            let w = (k.x1.min(b.x1) - k.x0.max(b.x0) + 1.0).max(0.0);
            let h = (k.y1.min(b.y1) - k.y0.max(b.y0) + 1.0).max(0.0);
            let inter = w * h;
            inter / (area(k) + area(&b) - inter) > iou
        });
        if !overlaps {
            boxes[kept] = b;
            kept += 1;
        }
    }
    boxes.truncate(kept);
}

/// One axis of the crop warp: for each output pixel, the first source index and the weight of the second.
fn warp_taps(out: &mut Vec<(i64, f32)>, n: u32, center: f32, scale: f64) {
    out.clear();
    let half = f64::from(n) / 2.0;
    out.extend((0..n).map(|i| {
        let src = f64::from(center) + (f64::from(i) - half) * scale;
        let i0 = src.floor();
        (i0 as i64, (src - i0) as f32)
    }));
}

/// DWPose on ONNX Runtime: both sessions, the preallocated inputs and scratch buffers.
pub struct DwPose {
    detector: Model,
    pose: Model,
    det_size: (u32, u32),
    /// Values per anchor row (5 + classes).
    det_row: usize,
    pose_size: (u32, u32),
    /// `simcc_x` and `simcc_y` widths.
    simcc: (usize, usize),
    split_ratio: f32,
    threshold: f32,
    /// The letterboxed frame, `H x W` RGB, then as `[1, 3, H, W]` floats.
    det_u8: Vec<u8>,
    det_input: Array4<f32>,
    geometry: Option<DetLetterbox>,
    resizer: Resizer,
    pose_input: Array4<f32>,
    candidates: Vec<Detection>,
    cols: Vec<(i64, f32)>,
    rows: Vec<(i64, f32)>,
    points: Vec<SimccPoint>,
}

fn static_dim(d: i64) -> Option<u32> {
    u32::try_from(d).ok().filter(|d| *d > 0)
}

impl DwPose {
    /// Load DWPose from its detector and pose model files. Models with another signature are
    /// [`Error::Contract`] (bad input, exit code 2), naming what was expected and found.
    pub fn load(runtime: &Runtime, detector: &Path, pose: &Path) -> Result<DwPose> {
        let detector = runtime.load(DETECTOR_ROLE, detector, &DETECTOR_CONTRACT).map_err(|e| {
            with_hint(e, "a YOLOX detector takes `images` f32 [1, 3, 640, 640] and returns `output` f32 [1, 8400, 85]")
        })?;
        let input = detector.binding.input(0);
        let det_size = match input.shape.as_slice() {
            [1 | -1, 3, h, w] => match (static_dim(*w), static_dim(*h)) {
                (Some(w), Some(h)) if w % 32 == 0 && h % 32 == 0 => (w, h),
                _ => {
                    return Err(detector.contract_error(format!(
                        "input `images` has shape {:?}, expected [1, 3, H, W] with H and W fixed multiples of 32 \
                         (640 for yolox_l.onnx)",
                        input.shape
                    )));
                }
            },
            shape => {
                return Err(detector.contract_error(format!(
                    "input `images` has shape {shape:?}, expected [1, 3, H, W] (an RGB image, NCHW); not a YOLOX \
                     detector?"
                )));
            }
        };
        let anchors: i64 = STRIDES.iter().map(|s| i64::from(det_size.0 / s) * i64::from(det_size.1 / s)).sum();
        let output = detector.binding.output(0);
        let det_row = match output.shape.as_slice() {
            [1 | -1, n, row] if (*n == anchors || *n == -1) && *row >= 6 => *row as usize,
            shape => {
                return Err(detector.contract_error(format!(
                    "output `output` has shape {shape:?}, expected [1, {anchors}, 5 + classes] (box, objectness and \
                     class scores per anchor of the stride 8/16/32 grids, as YOLOX exports without decoding)"
                )));
            }
        };

        let pose = runtime.load(POSE_ROLE, pose, &POSE_CONTRACT).map_err(|e| {
            with_hint(
                e,
                "an RTMPose SimCC model takes `input` f32 [1, 3, 384, 288] and returns `simcc_x` f32 [1, 133, 576] and \
                 `simcc_y` f32 [1, 133, 768]",
            )
        })?;
        let input = pose.binding.input(0);
        let pose_size = match input.shape.as_slice() {
            [1 | -1, 3, h, w] => match (static_dim(*w), static_dim(*h)) {
                (Some(w), Some(h)) => (w, h),
                _ => {
                    return Err(pose.contract_error(format!(
                        "input `input` has shape {:?}, expected [1, 3, h, w] with h and w fixed ([1, 3, 384, 288] for \
                         dw-ll_ucoco_384.onnx)",
                        input.shape
                    )));
                }
            },
            shape => {
                return Err(pose.contract_error(format!(
                    "input `input` has shape {shape:?}, expected [1, 3, h, w] (an RGB crop, NCHW); not an RTMPose \
                     model?"
                )));
            }
        };
        let (sx, sy) = (&pose.binding.output(0).shape, &pose.binding.output(1).shape);
        let simcc = match (sx.as_slice(), sy.as_slice()) {
            ([1 | -1, kx, wx], [1 | -1, ky, wy]) if kx == ky && *kx >= BODY as i64 && *wx > 0 && *wy > 0 => {
                (*wx as usize, *wy as usize)
            }
            _ => {
                return Err(pose.contract_error(format!(
                    "outputs `simcc_x` {sx:?} and `simcc_y` {sy:?}, expected [1, K, w·ratio] and [1, K, h·ratio] with \
                     the same K ≥ {BODY} keypoints (COCO body first) and fixed widths ([1, 133, 576] and \
                     [1, 133, 768] for dw-ll_ucoco_384.onnx)"
                )));
            }
        };
        let split_ratio = simcc.0 as f32 / pose_size.0 as f32;
        if (simcc.1 as f32 / pose_size.1 as f32 - split_ratio).abs() > 1e-6 {
            return Err(pose.contract_error(format!(
                "SimCC widths {simcc:?} are not the same multiple of the input's {pose_size:?} (w x h): the split \
                 ratio must be one for both axes"
            )));
        }
        let (dw, dh) = (det_size.0 as usize, det_size.1 as usize);
        let (pw, ph) = (pose_size.0 as usize, pose_size.1 as usize);
        Ok(DwPose {
            detector,
            pose,
            det_size,
            det_row,
            pose_size,
            simcc,
            split_ratio,
            threshold: super::movenet::DEFAULT_THRESHOLD,
            det_u8: vec![PAD_VALUE; dw * dh * 3],
            det_input: Array4::from_elem((1, 3, dh, dw), f32::from(PAD_VALUE)),
            geometry: None,
            resizer: Resizer::new(),
            pose_input: Array4::zeros((1, 3, ph, pw)),
            candidates: Vec::new(),
            cols: Vec::with_capacity(pw),
            rows: Vec::with_capacity(ph),
            points: Vec::with_capacity(BODY),
        })
    }

    /// This estimator with keypoints below `threshold` (0 to 1) treated as missing.
    pub fn with_threshold(mut self, threshold: f32) -> Result<DwPose> {
        self.threshold =
            super::movenet::check_threshold(threshold).map_err(|problem| Error::invalid("pose threshold", problem))?;
        Ok(self)
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The detector input's width and height (640 x 640 for yolox_l).
    pub fn detector_input_size(&self) -> (u32, u32) {
        self.det_size
    }

    /// The pose input's width and height (288 x 384 for dw-ll_ucoco_384).
    pub fn pose_input_size(&self) -> (u32, u32) {
        self.pose_size
    }

    /// SimCC bins per input pixel (2 for DWPose).
    pub fn split_ratio(&self) -> f32 {
        self.split_ratio
    }

    pub fn detector_model(&self) -> &Model {
        &self.detector
    }

    pub fn pose_model(&self) -> &Model {
        &self.pose
    }

    /// The detector input of the last [`DwPose::detect`], `[1, 3, H, W]`.
    pub fn detector_input(&self) -> ArrayView4<'_, f32> {
        self.det_input.view()
    }

    /// The pose input of the last [`DwPose::body`], `[1, 3, h, w]`.
    pub fn pose_input(&self) -> ArrayView4<'_, f32> {
        self.pose_input.view()
    }

    /// Letterbox `frame` into the detector input (see the module docs) and return the geometry.
    pub fn letterbox(&mut self, frame: &RgbImage) -> Result<DetLetterbox> {
        let (w, h) = frame.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid("pose frame", format!("{w}x{h} is empty")));
        }
        let geometry = DetLetterbox::new(w, h, self.det_size);
        if self.geometry != Some(geometry) {
            self.det_u8.fill(PAD_VALUE);
            self.det_input.fill(f32::from(PAD_VALUE));
            self.geometry = Some(geometry);
        }
        let err = |e: &dyn std::fmt::Display| Error::internal("pose letterbox", e.to_string());
        let (iw, ih) = self.det_size;
        let (nw, nh) = geometry.resized;
        {
            let mut canvas = Image::from_slice_u8(iw, ih, &mut self.det_u8, PixelType::U8x3).map_err(|e| err(&e))?;
            let mut inside = CroppedImageMut::new(&mut canvas, 0, 0, nw, nh).map_err(|e| err(&e))?;
            let options = ResizeOptions::new().resize_alg(ResizeAlg::Interpolation(FilterType::Bilinear));
            self.resizer.resize(frame, &mut inside, &options).map_err(|e| err(&e))?;
        }
        let plane = iw as usize * ih as usize;
        let input = self.det_input.as_slice_mut().ok_or_else(|| err(&"detector input is not contiguous"))?;
        let (r, rest) = input.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for y in 0..nh as usize {
            let row = y * iw as usize;
            let src = &self.det_u8[row * 3..(row + nw as usize) * 3];
            for (x, px) in src.chunks_exact(3).enumerate() {
                r[row + x] = f32::from(px[0]);
                g[row + x] = f32::from(px[1]);
                b[row + x] = f32::from(px[2]);
            }
        }
        Ok(geometry)
    }

    /// The people YOLOX finds in `frame`: boxes in frame pixels, best first (empty when nobody scores above
    /// [`PERSON_SCORE`]).
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>> {
        let geometry = self.letterbox(frame)?;
        let name = self.detector.binding.input(0).name.clone();
        let value = self.detector.input_value(0, self.det_input.view())?;
        let output = self.detector.binding.output(0).name.clone();
        let (det_size, row) = (self.det_size, self.det_row);
        let candidates = &mut self.candidates;
        let outputs = self.detector.session_mut().run(ort::inputs![name.as_str() => value]).map_err(infer_err)?;
        with_f32(&outputs, &output, DETECTOR_ROLE, |raw| {
            let raw = raw.as_slice().ok_or_else(|| Error::inference(DETECTOR_ROLE, "output is not contiguous"))?;
            person_candidates(raw, row, det_size, candidates);
            Ok(())
        })?;
        drop(outputs);
        nms(&mut self.candidates, NMS_IOU);
        let ratio = geometry.ratio as f32;
        Ok(self
            .candidates
            .iter()
            .filter(|d| d.score > PERSON_SCORE)
            .map(|d| Detection {
                x0: d.x0 / ratio,
                y0: d.y0 / ratio,
                x1: d.x1 / ratio,
                y1: d.y1 / ratio,
                score: d.score,
            })
            .collect())
    }

    /// Warp the crop for `det` into the pose input (see the module docs).
    pub fn crop(&mut self, frame: &RgbImage, det: &Detection) -> Result<Crop> {
        let crop = Crop::new(det, self.pose_size);
        let (pw, ph) = self.pose_size;
        let scale = f64::from(crop.scale[0]) / f64::from(pw);
        warp_taps(&mut self.cols, pw, crop.center[0], scale);
        warp_taps(&mut self.rows, ph, crop.center[1], scale);
        let (fw, fh) = (i64::from(frame.width()), i64::from(frame.height()));
        let pixels = frame.as_raw();
        let at = |x: i64, y: i64, c: usize| -> f32 {
            if x < 0 || y < 0 || x >= fw || y >= fh { 0.0 } else { f32::from(pixels[((y * fw + x) * 3) as usize + c]) }
        };
        let plane = pw as usize * ph as usize;
        let input = self
            .pose_input
            .as_slice_mut()
            .ok_or_else(|| Error::internal("pose crop", "pose input is not contiguous"))?;
        for (v, &(y0, fy)) in self.rows.iter().enumerate() {
            for (u, &(x0, fx)) in self.cols.iter().enumerate() {
                let i = v * pw as usize + u;
                for c in 0..3 {
                    let top = at(x0, y0, c) * (1.0 - fx) + at(x0 + 1, y0, c) * fx;
                    let bottom = at(x0, y0 + 1, c) * (1.0 - fx) + at(x0 + 1, y0 + 1, c) * fx;
                    let value = top * (1.0 - fy) + bottom * fy;
                    input[c * plane + i] = (value - MEAN[c]) / STD[c];
                }
            }
        }
        Ok(crop)
    }

    /// The body keypoints of the person in `det`: the crop and the raw COCO-17 points in frame pixels.
    pub fn body(&mut self, frame: &RgbImage, det: &Detection) -> Result<(Crop, Body)> {
        let crop = self.crop(frame, det)?;
        let name = self.pose.binding.input(0).name.clone();
        let value = self.pose.input_value(0, self.pose_input.view())?;
        let (out_x, out_y) = (self.pose.binding.output(0).name.clone(), self.pose.binding.output(1).name.clone());
        let (wx, wy) = self.simcc;
        let ratio = self.split_ratio;
        let points = &mut self.points;
        let outputs = self.pose.session_mut().run(ort::inputs![name.as_str() => value]).map_err(infer_err)?;
        with_f32(&outputs, &out_x, POSE_ROLE, |x| {
            with_f32(&outputs, &out_y, POSE_ROLE, |y| {
                let not_contiguous = || Error::inference(POSE_ROLE, "SimCC output is not contiguous");
                let (x, y) = (x.as_slice().ok_or_else(not_contiguous)?, y.as_slice().ok_or_else(not_contiguous)?);
                if x.len() < BODY * wx || y.len() < BODY * wy {
                    return Err(Error::inference(POSE_ROLE, "SimCC outputs are smaller than the model declares"));
                }
                simcc::decode(&x[..BODY * wx], wx, &y[..BODY * wy], wy, ratio, points);
                Ok(())
            })
        })?;
        drop(outputs);
        let mut body = [[0.0f32; 3]; BODY];
        for (out, p) in body.iter_mut().zip(&self.points) {
            let (x, y) = crop.to_frame(p.x, p.y, self.pose_size);
            *out = [x, y, p.score];
        }
        Ok((crop, body))
    }

    /// Every person's box and raw body keypoints; the whole frame is the one box when nobody is detected.
    pub fn estimate_raw(&mut self, frame: &RgbImage) -> Result<Vec<(Detection, Body)>> {
        let mut boxes = self.detect(frame)?;
        if boxes.is_empty() {
            let (w, h) = frame.dimensions();
            boxes.push(Detection { x0: 0.0, y0: 0.0, x1: w as f32, y1: h as f32, score: 0.0 });
        }
        boxes.into_iter().map(|det| Ok((det, self.body(frame, &det)?.1))).collect()
    }
}

/// A contract error with what DWPose's model of that role looks like (the real one's shapes) appended.
fn with_hint(e: Error, hint: &str) -> Error {
    match e {
        Error::Contract { role, path, problem } => {
            Error::Contract { role, path, problem: format!("{problem} ({hint}, like DWPose's)") }
        }
        other => other,
    }
}

fn infer_err(e: ort::Error) -> Error {
    Error::inference("DWPose", e)
}

/// Run `f` on the output `name` as f32 (a view for f32 outputs, a converted copy for f16 ones).
fn with_f32<T>(
    outputs: &ort::session::SessionOutputs,
    name: &str,
    role: &'static str,
    f: impl FnOnce(ArrayViewD<f32>) -> Result<T>,
) -> Result<T> {
    let value = outputs.get(name).ok_or_else(|| Error::inference(role, format!("no output `{name}`")))?;
    match value.try_extract_array::<f32>() {
        Ok(view) => f(view),
        Err(_) => {
            let owned = crate::infer::tensor::to_f32(value)?;
            f(owned.view())
        }
    }
}

impl PoseEstimator for DwPose {
    /// Everyone DWPose sees, best detection first; people with no keypoint at the threshold are dropped.
    fn estimate(&mut self, frame: &RgbImage) -> Result<Vec<Person>> {
        let threshold = self.threshold;
        Ok(self
            .estimate_raw(frame)?
            .iter()
            .map(|(_, body)| to_openpose(body, threshold))
            .filter(|p| p.keypoints.iter().any(|k| k.score > 0.0))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pose::COCO_LEFT_SHOULDER;

    #[test]
    fn letterbox_geometry_truncates_and_sits_top_left() {
        let lb = DetLetterbox::new(384, 240, (640, 640));
        assert_eq!((lb.resized, lb.ratio), ((640, 400), 640.0 / 384.0));
        let lb = DetLetterbox::new(1280, 720, (640, 640));
        assert_eq!(lb.resized, (640, 360));
        // int(333 * 640/333.0) etc.: truncation, never 0.
        assert_eq!(DetLetterbox::new(7, 3, (640, 640)).resized, (640, 274));
        assert_eq!(DetLetterbox::new(100000, 1, (640, 640)).resized, (640, 1));
    }

    fn anchor_row(p: [f32; 4], obj: f32, person: f32) -> Vec<f32> {
        vec![p[0], p[1], p[2], p[3], obj, person, 0.9]
    }

    #[test]
    fn candidates_decode_grid_and_stride() {
        // A 64 x 64 input: 8x8 + 4x4 + 2x2 = 84 anchors of 7 values (2 classes).
        let input = (64, 64);
        let mut raw = vec![0.0f32; 84 * 7];
        let mut put = |anchor: usize, row: Vec<f32>| raw[anchor * 7..anchor * 7 + 7].copy_from_slice(&row);
        // stride 8, grid (3, 2) -> anchor 2*8+3 = 19
        put(19, anchor_row([0.5, 0.25, 0.0, 2f32.ln()], 0.8, 0.5));
        // stride 32, grid (1, 0) -> anchor 64 + 16 + 1 = 81; person score 0.1 exactly: not a candidate
        put(81, anchor_row([0.0, 0.0, 0.0, 0.0], 0.2, 0.5));
        // stride 16, grid (0, 1) -> anchor 64 + 4 = 68
        put(68, anchor_row([0.0, 0.0, 1.0f32.ln(), 0.0], 0.5, 0.5));
        let mut out = Vec::new();
        person_candidates(&raw, 7, input, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        // centre ((0.5 + 3) * 8, (0.25 + 2) * 8) = (28, 18), size (8, 16)
        assert_eq!(out[0], Detection { x0: 24.0, y0: 10.0, x1: 32.0, y1: 26.0, score: 0.4 });
        // centre (0, 16), size 16 x 16
        assert_eq!(out[1], Detection { x0: -8.0, y0: 8.0, x1: 8.0, y1: 24.0, score: 0.25 });
        // A short output stops early instead of panicking.
        person_candidates(&raw[..100], 7, input, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let d = |x0: f32, score: f32| Detection { x0, y0: 0.0, x1: x0 + 99.0, y1: 99.0, score };
        // Shifted by 30: IoU (70*100)/(2*10000 - 7000) = 0.538 > 0.45; by 40: 6000/14000 = 0.4286 kept.
        let mut boxes = vec![d(30.0, 0.6), d(0.0, 0.9), d(200.0, 0.5), d(40.0, 0.7)];
        nms(&mut boxes, NMS_IOU);
        let kept: Vec<(f32, f32)> = boxes.iter().map(|b| (b.x0, b.score)).collect();
        assert_eq!(kept, vec![(0.0, 0.9), (40.0, 0.7), (200.0, 0.5)]);
        let mut empty = Vec::new();
        nms(&mut empty, NMS_IOU);
        assert!(empty.is_empty());
    }

    #[test]
    fn crop_pads_fixes_the_aspect_and_maps_back() {
        let input = (288, 384);
        // A 100 x 100 box: 125 x 125 padded, then 3:4 -> 125 x 166.67.
        let det = Detection { x0: 50.0, y0: 20.0, x1: 150.0, y1: 120.0, score: 0.9 };
        let crop = Crop::new(&det, input);
        assert_eq!(crop.center, [100.0, 70.0]);
        assert_eq!(crop.scale[0], 125.0);
        assert!((crop.scale[1] - 166.666_67).abs() < 1e-3, "{crop:?}");
        // A tall box keeps its height.
        let tall = Crop::new(&Detection { x0: 0.0, y0: 0.0, x1: 30.0, y1: 200.0, score: 1.0 }, input);
        assert_eq!(tall.scale, [187.5, 250.0]);
        // The input's centre is the box's centre; its corners the crop's.
        assert_eq!(crop.to_frame(144.0, 192.0, input), (100.0, 70.0));
        let (x, y) = crop.to_frame(0.0, 0.0, input);
        assert!((x - 37.5).abs() < 1e-4 && (y - (70.0 - 166.666_67 / 2.0)).abs() < 1e-3, "{x} {y}");
    }

    #[test]
    fn body_to_openpose_order_neck_and_threshold() {
        let mut body = [[0.0f32; 3]; BODY];
        for (i, p) in body.iter_mut().enumerate() {
            *p = [i as f32, 100.0 + i as f32, 0.9];
        }
        let person = to_openpose(&body, 0.3);
        let xs: Vec<usize> = person.keypoints.iter().map(|k| k.x as usize).collect();
        assert_eq!(xs[..1], [0]);
        assert_eq!(xs[2..], [6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]);
        assert_eq!(person.keypoints[1], Keypoint { x: 5.5, y: 105.5, score: 0.9 });
        // Scores above 1 are fine (SimCC maxima); a weak shoulder drops the neck; 0 is never kept.
        body[COCO_LEFT_SHOULDER][2] = 0.2;
        body[0][2] = 3.5;
        body[1][2] = 0.0;
        let person = to_openpose(&body, 0.0);
        assert_eq!(person.keypoints[0].score, 3.5);
        assert_eq!(person.keypoints[15], Keypoint::default());
        assert_eq!(person.keypoints[1].score, 0.2);
        let person = to_openpose(&body, 0.3);
        assert_eq!(person.keypoints[5], Keypoint::default());
        assert_eq!(person.keypoints[1], Keypoint::default());
    }

    #[test]
    fn warp_taps_centre_the_crop() {
        let mut taps = Vec::new();
        // 4 output pixels over a crop of 8 source pixels centred at 10: scale 2, sources 6, 8, 10, 12.
        warp_taps(&mut taps, 4, 10.0, 2.0);
        assert_eq!(taps, vec![(6, 0.0), (8, 0.0), (10, 0.0), (12, 0.0)]);
        warp_taps(&mut taps, 2, 0.25, 0.5);
        assert_eq!(taps, vec![(-1, 0.75), (0, 0.25)]);
    }
}
