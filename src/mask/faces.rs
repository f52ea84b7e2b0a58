//! Faces, for "keep my face": BlazeFace short range (MediaPipe face detection) on ONNX Runtime, decoded in Rust as
//! MediaPipe's `face_detection_short_range` graph does.
//!
//! - Input: the frame letterboxed onto 128x128 (the square of its long side, centred, zero padding), RGB scaled
//!   to -1..1 ([`super::warp`]).
//! - Anchors (`SsdAnchorsCalculator`): one per feature-map cell and anchor, centres at `(x + 0.5) / cells`, fixed
//!   size 1: stride 8 (16x16 cells, 2 anchors) then stride 16 (8x8 cells, 6 anchors; MediaPipe's three stride-16
//!   layers merge into one), 896 in all.
//! - Decoding (`TensorsToDetectionsCalculator`): per anchor 16 regressors `x, y, w, h` and 6 keypoints `(x, y)`,
//!   all divided by 128 and offset by the anchor's centre; score = sigmoid(logit clipped to ±100); detections
//!   scoring under 0.5 or with a negative size are dropped.
//! - Weighted non-max suppression at IoU 0.3 (`NonMaxSuppressionCalculator`, `WEIGHTED`): the best remaining
//!   detection and every one overlapping it by more than 0.3 become one face, its box and keypoints the
//!   score-weighted mean of theirs, its score the best one's.
//! - Back to frame pixels through the letterbox.
//!
//! As a [`MaskSource`], the faces are kept (0 inside an ellipse around each, [`face_ellipses`]) and the rest
//! changes; [`super::Combine::Intersection`] with another mask keeps the faces in it.

use std::path::Path;

use image::RgbImage;
use ndarray::{Array2, Array4};
use ort::value::TensorElementType::Float32;

use super::warp::{Region, frame_to_tensor};
use super::{Mask, MaskSource};
use crate::error::{Error, Result};
use crate::infer::contract::Port;
use crate::infer::{Contract, Model, Runtime};

/// The role the face detector has in messages.
pub const ROLE: &str = "face detection";

/// The model's square input side.
pub const INPUT_SIZE: usize = 128;
/// (stride, anchors per cell) of BlazeFace short range's two feature maps.
pub const ANCHOR_LAYERS: [(usize, usize); 2] = [(8, 2), (16, 6)];
/// Regressor values per anchor: box (4) and 6 keypoints (x, y).
const COORDS: usize = 16;
/// Keypoints per face: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (the
/// subject's right and left).
pub const KEYPOINTS: usize = 6;
/// MediaPipe's default `min_detection_confidence`.
pub const DEFAULT_MIN_SCORE: f32 = 0.5;
/// Detections overlapping the best one by more than this IoU merge into it.
pub const NMS_IOU: f32 = 0.3;
/// Logits are clipped to ±this before the sigmoid (MediaPipe's `score_clipping_thresh`).
const SCORE_CLIP: f32 = 100.0;

/// BlazeFace's ports; shapes are checked after load.
pub static CONTRACT: Contract = Contract {
    inputs: &[Port { names: &["input"], types: &[Float32], ranks: &[4], required: true }],
    outputs: &[
        Port { names: &["regressors"], types: &[Float32], ranks: &[3], required: true },
        Port { names: &["classificators"], types: &[Float32], ranks: &[3], required: true },
    ],
};

/// One face in frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    pub score: f32,
    /// Box left and top edges, width and height.
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
    /// `(x, y)` in [`KEYPOINTS`] order.
    pub keypoints: [(f32, f32); KEYPOINTS],
}

/// A detection in coordinates normalised to the model input (0..1 across it).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub keypoints: [(f32, f32); KEYPOINTS],
}

/// Anchor centres (normalised), in the model's output order: per layer, row by row, cell by cell, anchor by anchor.
pub fn anchors(input_size: usize, layers: &[(usize, usize)]) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for &(stride, per_cell) in layers {
        let cells = input_size.div_ceil(stride);
        for y in 0..cells {
            for x in 0..cells {
                let centre = ((x as f32 + 0.5) / cells as f32, (y as f32 + 0.5) / cells as f32);
                out.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    out
}

fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-SCORE_CLIP, SCORE_CLIP)).exp())
}

/// The detections scoring at least `min_score` from the raw outputs (`regressors` `[anchors x 16]`,
/// `logits` `[anchors]`), best first.
pub fn decode(regressors: &[f32], logits: &[f32], anchors: &[(f32, f32)], min_score: f32) -> Vec<Detection> {
    let scale = INPUT_SIZE as f32;
    let mut out = Vec::new();
    for (i, (&(ax, ay), &logit)) in anchors.iter().zip(logits).enumerate() {
        let score = sigmoid(logit);
        if score < min_score {
            continue;
        }
        let r = &regressors[i * COORDS..(i + 1) * COORDS];
        let (cx, cy) = (r[0] / scale + ax, r[1] / scale + ay);
        let (w, h) = (r[2] / scale, r[3] / scale);
        // (MediaPipe drops boxes the model gave a negative or NaN size)
        if w.is_nan() || h.is_nan() || w < 0.0 || h < 0.0 {
            continue;
        }
        let keypoints = std::array::from_fn(|k| (r[4 + 2 * k] / scale + ax, r[5 + 2 * k] / scale + ay));
        out.push(Detection {
            score,
            xmin: cx - w / 2.0,
            ymin: cy - h / 2.0,
            xmax: cx + w / 2.0,
            ymax: cy + h / 2.0,
            keypoints,
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Intersection over union of two boxes; 0 when they do not overlap.
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let w = a.xmax.min(b.xmax) - a.xmin.max(b.xmin);
    let h = a.ymax.min(b.ymax) - a.ymin.max(b.ymin);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = (a.xmax - a.xmin) * (a.ymax - a.ymin) + (b.xmax - b.xmin) * (b.ymax - b.ymin) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// MediaPipe's weighted non-max suppression of `detections` sorted best first (see the module docs).
pub fn weighted_nms(detections: &[Detection], iou_threshold: f32) -> Vec<Detection> {
    let mut remaining: Vec<&Detection> = detections.iter().collect();
    let mut out = Vec::new();
    while let Some(&best) = remaining.first() {
        // The best one overlaps itself fully, so it is among its own candidates.
        let (candidates, rest): (Vec<&Detection>, Vec<&Detection>) =
            remaining.iter().copied().partition(|d| iou(d, best) > iou_threshold);
        let total: f32 = candidates.iter().map(|d| d.score).sum();
        let mean = |f: &dyn Fn(&Detection) -> f32| candidates.iter().map(|d| f(d) * d.score).sum::<f32>() / total;
        out.push(Detection {
            score: best.score,
            xmin: mean(&|d| d.xmin),
            ymin: mean(&|d| d.ymin),
            xmax: mean(&|d| d.xmax),
            ymax: mean(&|d| d.ymax),
            keypoints: std::array::from_fn(|k| (mean(&|d| d.keypoints[k].0), mean(&|d| d.keypoints[k].1))),
        });
        remaining = rest;
    }
    out
}

/// How much larger than the detector's box the kept ellipse is: BlazeFace's box runs from the brows to the chin,
/// so the ellipse reaches up to take in the forehead and hairline and a little around the cheeks and chin.
pub const ELLIPSE_WIDTH_SCALE: f32 = 1.25;
pub const ELLIPSE_HEIGHT_SCALE: f32 = 1.5;
/// The ellipse's centre is this fraction of the box's height above the box's centre.
pub const ELLIPSE_RAISE: f32 = 0.15;

/// 1 inside an ellipse around each face (see [`ELLIPSE_WIDTH_SCALE`]), 0 elsewhere, at `width x height`.
pub fn face_ellipses(width: u32, height: u32, faces: &[Face]) -> Mask {
    let mut values = Array2::<f32>::zeros((height as usize, width as usize));
    for face in faces {
        let (rx, ry) = (face.width * ELLIPSE_WIDTH_SCALE / 2.0, face.height * ELLIPSE_HEIGHT_SCALE / 2.0);
        if rx <= 0.0 || ry <= 0.0 {
            continue;
        }
        let cx = face.left + face.width / 2.0;
        let cy = face.top + face.height / 2.0 - ELLIPSE_RAISE * face.height;
        let rows = (cy - ry).floor().max(0.0) as usize..((cy + ry).ceil().max(0.0) as usize).min(height as usize);
        let cols = (cx - rx).floor().max(0.0) as usize..((cx + rx).ceil().max(0.0) as usize).min(width as usize);
        for y in rows {
            let dy = (y as f32 + 0.5 - cy) / ry;
            for x in cols.clone() {
                let dx = (x as f32 + 0.5 - cx) / rx;
                if dx * dx + dy * dy <= 1.0 {
                    values[[y, x]] = 1.0;
                }
            }
        }
    }
    Mask::new(values)
}

/// BlazeFace short range (see the module docs).
pub struct FaceDetector {
    model: Model,
    anchors: Vec<(f32, f32)>,
    min_score: f32,
    /// `[1, 128, 128, 3]`, rewritten per frame.
    input: Array4<f32>,
    /// The faces of the last frame.
    last: Vec<Face>,
}

impl FaceDetector {
    /// Load BlazeFace short range from `path`: the model file, or a folder holding it (recognised by its ports).
    pub fn load(runtime: &Runtime, path: &Path) -> Result<FaceDetector> {
        let found = super::models::resolve(path)?;
        let file = found.face_detector.ok_or_else(|| Error::ModelFolder {
            path: path.to_path_buf(),
            problem: format!(
                "holds no BlazeFace face detection model (input `input` [1,128,128,3], outputs `regressors` and \
                 `classificators`; models/{} has face_detection_short_range.onnx)",
                super::models::FOLDER
            ),
        })?;
        let model = runtime.load(ROLE, &file, &CONTRACT)?;
        let anchors = anchors(INPUT_SIZE, &ANCHOR_LAYERS);
        let n = anchors.len() as i64;
        let fits = |port: usize, shape: &[i64]| {
            model.binding.output(port).shape.iter().zip(shape).all(|(a, b)| *a == *b || *a == -1)
        };
        let input_ok = matches!(model.binding.input(0).shape.as_slice(), [1 | -1, 128, 128, 3]);
        if !input_ok || !fits(0, &[1, n, COORDS as i64]) || !fits(1, &[1, n, 1]) {
            return Err(model.contract_error(format!(
                "expected BlazeFace short range: input [1, 128, 128, 3], outputs regressors [1, {n}, 16] and \
                 classificators [1, {n}, 1]; found input {}, outputs {}",
                model.describe_inputs(),
                model.describe_outputs()
            )));
        }
        Ok(FaceDetector {
            model,
            anchors,
            min_score: DEFAULT_MIN_SCORE,
            input: Array4::zeros((1, INPUT_SIZE, INPUT_SIZE, 3)),
            last: Vec::new(),
        })
    }

    /// This detector keeping faces scoring at least `min_score` (0 to 1).
    pub fn with_min_score(mut self, min_score: f32) -> Result<FaceDetector> {
        if !(0.0..=1.0).contains(&min_score) {
            return Err(Error::invalid("face score", format!("{min_score}: expected from 0 to 1")));
        }
        self.min_score = min_score;
        Ok(self)
    }

    /// The faces in `frame`, best first, in frame pixels.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Face>> {
        let (w, h) = frame.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid("mask frame", format!("{w}x{h} is empty")));
        }
        let region = Region::letterbox_square(w, h);
        let input = self.input.as_slice_mut().ok_or_else(|| Error::internal(ROLE, "input is not contiguous"))?;
        frame_to_tensor(frame, region, INPUT_SIZE, INPUT_SIZE, (-1.0, 1.0), input);
        let name = self.model.binding.input(0).name.clone();
        let value = self.model.input_value(0, self.input.view())?;
        let names = [self.model.binding.output(0).name.clone(), self.model.binding.output(1).name.clone()];
        let outputs = self.model.run_outputs_named(vec![(name.into(), value)], &names)?;
        let (regressors, logits) = (&outputs[0], &outputs[1]);
        let n = self.anchors.len();
        if regressors.len() != n * COORDS || logits.len() != n {
            return Err(Error::inference(
                ROLE,
                format!(
                    "outputs have shapes {:?} and {:?}, expected [1, {n}, 16] and [1, {n}, 1]",
                    regressors.shape(),
                    logits.shape()
                ),
            ));
        }
        let (regressors, logits): (Vec<f32>, Vec<f32>) =
            (regressors.iter().copied().collect(), logits.iter().copied().collect());
        let detections = decode(&regressors, &logits, &self.anchors, self.min_score);
        let faces = weighted_nms(&detections, NMS_IOU)
            .into_iter()
            .map(|d| {
                let (left, top) = region.to_frame(d.xmin, d.ymin);
                let (right, bottom) = region.to_frame(d.xmax, d.ymax);
                Face {
                    score: d.score,
                    left,
                    top,
                    width: right - left,
                    height: bottom - top,
                    keypoints: d.keypoints.map(|(x, y)| region.to_frame(x, y)),
                }
            })
            .collect::<Vec<_>>();
        self.last.clone_from(&faces);
        Ok(faces)
    }

    /// The faces [`FaceDetector::detect`] last found.
    pub fn last_faces(&self) -> &[Face] {
        &self.last
    }
}

impl MaskSource for FaceDetector {
    /// The faces are kept (0 in their ellipses), the rest changes.
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        let faces = self.detect(frame)?;
        Ok(face_ellipses(frame.width(), frame.height(), &faces).inverted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(score: f32, xmin: f32, ymin: f32, side: f32) -> Detection {
        Detection { score, xmin, ymin, xmax: xmin + side, ymax: ymin + side, keypoints: [(xmin, ymin); KEYPOINTS] }
    }

    #[test]
    fn anchor_count_and_layout() {
        let a = anchors(INPUT_SIZE, &ANCHOR_LAYERS);
        assert_eq!(a.len(), 896);
        // First layer: 16x16 cells, 2 anchors each, centres at (x + 0.5) / 16.
        assert_eq!(a[0], (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], (1.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[511], (15.5 / 16.0, 15.5 / 16.0));
        // Second layer: 8x8 cells, 6 anchors each.
        assert_eq!(a[512], (0.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], (1.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[895], (7.5 / 8.0, 7.5 / 8.0));
    }

    #[test]
    fn decodes_boxes_keypoints_and_scores() {
        let anchors = vec![(0.25, 0.5), (0.75, 0.5)];
        let mut regressors = vec![0.0f32; 2 * COORDS];
        // Anchor 0: centre moved +12.8 px (0.1), 64 x 32 px, first keypoint at the anchor + (6.4, -6.4) px.
        regressors[..6].copy_from_slice(&[12.8, 0.0, 64.0, 32.0, 6.4, -6.4]);
        // Anchor 1: a negative width (dropped even though confident).
        regressors[COORDS + 2] = -1.0;
        let logits = [2.0, 5.0];
        let d = decode(&regressors, &logits, &anchors, 0.5);
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert!((d.score - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        assert!((d.xmin - 0.1).abs() < 1e-6 && (d.xmax - 0.6).abs() < 1e-6, "{d:?}");
        assert!((d.ymin - 0.375).abs() < 1e-6 && (d.ymax - 0.625).abs() < 1e-6, "{d:?}");
        assert!((d.keypoints[0].0 - 0.3).abs() < 1e-6 && (d.keypoints[0].1 - 0.45).abs() < 1e-6);
        // Under the minimum score: nothing.
        assert!(decode(&regressors, &[-1.0, -1.0], &anchors, 0.5).is_empty());
        // Huge logits are clipped, not NaN.
        assert_eq!(sigmoid(1e9), sigmoid(SCORE_CLIP));
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_the_rest() {
        let dets = vec![
            detection(0.9, 0.0, 0.0, 0.4),
            detection(0.6, 0.05, 0.0, 0.4), // IoU with the first 0.78: merged
            detection(0.55, 0.6, 0.6, 0.3), // apart: its own face
            detection(0.5, 0.25, 0.0, 0.4), // IoU 0.23 with the first: kept
        ];
        assert!((iou(&dets[0], &dets[3]) - 0.15 / 0.65).abs() < 1e-6);
        let out = weighted_nms(&dets, NMS_IOU);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].score, 0.9);
        let xmin = (0.9 * 0.0 + 0.6 * 0.05) / 1.5;
        assert!((out[0].xmin - xmin).abs() < 1e-6 && (out[0].keypoints[0].0 - xmin).abs() < 1e-6, "{:?}", out[0]);
        // A lone detection stays itself (its weighted mean is its own box).
        for (got, want) in out[1..].iter().zip([&dets[2], &dets[3]]) {
            assert_eq!(got.score, want.score);
            assert!((got.xmin - want.xmin).abs() < 1e-6 && (got.ymax - want.ymax).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(iou(&dets[0], &dets[2]), 0.0);
    }

    #[test]
    fn ellipses_cover_the_face_and_reach_up() {
        let face = Face { score: 0.9, left: 40.0, top: 40.0, width: 20.0, height: 20.0, keypoints: [(0.0, 0.0); 6] };
        let m = face_ellipses(100, 100, std::slice::from_ref(&face));
        // Centre (50, 47), radii 12.5 and 15.
        assert_eq!(m.get(50, 50), 1.0);
        assert_eq!(m.get(50, 33), 1.0, "forehead above the box");
        assert_eq!(m.get(50, 31), 0.0);
        assert_eq!(m.get(61, 47), 1.0);
        assert_eq!(m.get(63, 47), 0.0);
        assert_eq!(m.get(40, 60), 0.0, "the box's corner is outside");
        // A face partly outside the frame is clipped, not a panic.
        let edge = Face { left: -10.0, top: 90.0, ..face };
        assert_eq!(face_ellipses(100, 100, &[edge]).get(0, 99), 1.0);
    }
}
