//! MoveNet SinglePose (Lightning 192², Thunder 256²): one person per frame, COCO-17 keypoints, mapped to
//! OpenPose-18 in frame pixels.
//!
//! Preprocessing is a letterbox: the frame is scaled to fit the model's square `S x S` input keeping its aspect
//! (scale `s = min(S/w, S/h)`, resized size `nw = floor(w·s + 0.5)`, `nh = floor(h·s + 0.5)`), centred at
//! `ox = (S - nw) / 2`, `oy = (S - nh) / 2` (integer division), on zero (black) padding — what TensorFlow's
//! `resize_with_pad`, MoveNet's own preprocessing, pads with. The resize is a bilinear convolution whose support
//! widens when downscaling (fast_image_resize `Convolution(Bilinear)`, the same filter as Pillow's `BILINEAR`),
//! into a preallocated input buffer; only the resized region is rewritten per frame, the padding stays zero.
//!
//! The model returns `(y, x, score)` per COCO keypoint, `y` and `x` normalised to the `S x S` input (continuous
//! coordinates: 0 is the input's top/left edge, 1 its bottom/right edge). They map back exactly by undoing the
//! padding and the per-axis scale the resize actually used: `x = (x_n·S - ox) · w/nw`, `y = (y_n·S - oy) · h/nh`.
//! Points that fall in the padding map outside the frame and are left there (not clamped).
//!
//! scripts/golden/movenet.py is the Python reference of all of this; tests/pose.rs compares against it.

use std::path::{Path, PathBuf};

use fast_image_resize::images::{CroppedImageMut, Image};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use ndarray::{Array4, ArrayView4};
use ort::value::TensorElementType::{Float32, Uint8};

use super::{Keypoint, Person, PoseEstimator};
use crate::error::{Error, Result};
use crate::infer::contract::Port;
use crate::infer::{Contract, Model, Runtime};

/// The role MoveNet models have in messages ("MoveNet pose model ... could not be loaded").
pub const ROLE: &str = "MoveNet pose";

/// Keypoints scoring below this are missing (score 0); the neck needs both shoulders at or above it.
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// COCO-17 keypoints, the model's output order.
pub const COCO_17: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// The I/O contract of MoveNet SinglePose converted from its int8 TFLite file with tf2onnx: uint8 NHWC RGB in
/// (`serving_default_input:0`; `input` for exports that rename it), f32 out. Shapes are checked after load:
/// input `[1, S, S, 3]`, output `[1, 1, 17, 3]`.
pub static CONTRACT: Contract = Contract {
    inputs: &[Port { names: &["serving_default_input:0", "input"], types: &[Uint8], ranks: &[4], required: true }],
    outputs: &[Port {
        names: &["StatefulPartitionedCall:0", "output_0"],
        types: &[Float32],
        ranks: &[4],
        required: true,
    }],
};

/// Raw model output: `(y, x, score)` per COCO-17 keypoint, normalised to the model input.
pub type RawKeypoints = [[f32; 3]; 17];

/// Where a frame lands in the model's square input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Letterbox {
    /// The model input's side `S`.
    pub size: u32,
    /// The frame's width and height.
    pub frame: (u32, u32),
    /// The resized frame's width and height inside the input.
    pub resized: (u32, u32),
    /// Left and top padding.
    pub offset: (u32, u32),
}

impl Letterbox {
    /// The geometry for a `width x height` frame (both ≥ 1) in an `size x size` input.
    pub fn new(width: u32, height: u32, size: u32) -> Letterbox {
        let (w, h, s) = (f64::from(width), f64::from(height), f64::from(size));
        let scale = (s / w).min(s / h);
        let fit = |v: f64| ((v * scale + 0.5).floor() as u32).clamp(1, size);
        let (nw, nh) = (fit(w), fit(h));
        Letterbox { size, frame: (width, height), resized: (nw, nh), offset: ((size - nw) / 2, (size - nh) / 2) }
    }

    /// A point normalised to the input (`x_n`, `y_n` in 0..1) in frame pixels.
    pub fn to_frame(&self, x_n: f32, y_n: f32) -> (f32, f32) {
        let s = f64::from(self.size);
        let x = (f64::from(x_n) * s - f64::from(self.offset.0)) * f64::from(self.frame.0) / f64::from(self.resized.0);
        let y = (f64::from(y_n) * s - f64::from(self.offset.1)) * f64::from(self.frame.1) / f64::from(self.resized.1);
        (x as f32, y as f32)
    }
}

/// MoveNet's COCO-17 output as one OpenPose-18 person in frame pixels. A point scoring below `threshold` is
/// missing (all zero); the neck is the midpoint of the shoulders when both are kept, scored the smaller of
/// their scores.
pub fn to_openpose(raw: &RawKeypoints, letterbox: &Letterbox, threshold: f32) -> Person {
    let point = |coco: usize| {
        let [y_n, x_n, score] = raw[coco];
        // (a NaN score is missing too)
        if score >= threshold {
            let (x, y) = letterbox.to_frame(x_n, y_n);
            Keypoint { x, y, score }
        } else {
            Keypoint::default()
        }
    };
    super::openpose_from_coco(point)
}

/// Check a keypoint confidence threshold (the `pose.threshold` knob's range).
pub fn check_threshold(value: f32) -> Result<f32, String> {
    let given = crate::knobs::Given::Float(f64::from(value));
    crate::knobs::POSE_THRESHOLD.float(&given, crate::knobs::Spelling::Key).map(|v| v as f32).map_err(|e| e.problem())
}

/// The `.onnx` file for `path`: the file itself, or the only `.onnx` file in a folder.
fn model_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let folder_err = |problem: String| Error::ModelFolder { path: path.to_path_buf(), problem };
    let entries = std::fs::read_dir(path).map_err(|e| folder_err(format!("cannot be read: {e}")))?;
    let mut onnx: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("onnx")))
        .collect();
    onnx.sort();
    match onnx.len() {
        1 => Ok(onnx.remove(0)),
        0 => {
            Err(folder_err("holds no .onnx file (expected a MoveNet model such as movenet_lightning_int8.onnx)".into()))
        }
        _ => Err(folder_err(format!(
            "holds several .onnx files ({}); pass the MoveNet model file itself",
            onnx.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// MoveNet SinglePose on ONNX Runtime: the session, the preallocated input and the resizer.
pub struct MoveNet {
    model: Model,
    size: u32,
    threshold: f32,
    /// `[1, S, S, 3]` RGB, rewritten in place per frame.
    input: Array4<u8>,
    /// The geometry the input's padding was last cleared for.
    geometry: Option<Letterbox>,
    resizer: Resizer,
}

impl MoveNet {
    /// Load a MoveNet SinglePose model: an `.onnx` file, or a folder holding exactly one. A model with another
    /// signature is [`Error::Contract`] (bad input, exit code 2), naming what was expected and found.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<MoveNet> {
        let file = model_file(path)?;
        let model = runtime.load(ROLE, &file, &CONTRACT)?;
        let input = model.binding.input(0);
        let size = match input.shape.as_slice() {
            [b, h, w, 3] if (*b == 1 || *b == -1) && *h == *w && *h > 0 => *h as u32,
            shape => {
                return Err(model.contract_error(format!(
                    "input `{}` has shape {shape:?}, expected [1, S, S, 3] (a square RGB image, NHWC); not a MoveNet \
                     SinglePose model?",
                    input.name
                )));
            }
        };
        let output = model.binding.output(0);
        if !matches!(output.shape.as_slice(), [1 | -1, 1, 17, 3]) {
            return Err(model.contract_error(format!(
                "output `{}` has shape {:?}, expected [1, 1, 17, 3] (y, x, score per COCO-17 keypoint); not a MoveNet \
                 SinglePose model?",
                output.name, output.shape
            )));
        }
        let side = size as usize;
        Ok(MoveNet {
            model,
            size,
            threshold: DEFAULT_THRESHOLD,
            input: Array4::zeros((1, side, side, 3)),
            geometry: None,
            resizer: Resizer::new(),
        })
    }

    /// This estimator with keypoints below `threshold` (0 to 1) treated as missing.
    pub fn with_threshold(mut self, threshold: f32) -> Result<MoveNet> {
        self.threshold = check_threshold(threshold).map_err(|problem| Error::invalid("pose threshold", problem))?;
        Ok(self)
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The model input's side `S` (192 for Lightning, 256 for Thunder).
    pub fn input_size(&self) -> u32 {
        self.size
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Letterbox `frame` into the input buffer (see the module docs) and return the geometry.
    pub fn letterbox(&mut self, frame: &RgbImage) -> Result<Letterbox> {
        let (w, h) = frame.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid("pose frame", format!("{w}x{h} is empty")));
        }
        let geometry = Letterbox::new(w, h, self.size);
        if self.geometry != Some(geometry) {
            // A new frame size: clear the padding once; later frames of this size rewrite only the inside.
            self.input.fill(0);
            self.geometry = Some(geometry);
        }
        let err = |e: &dyn std::fmt::Display| Error::internal("pose letterbox", e.to_string());
        let buffer = self.input.as_slice_mut().ok_or_else(|| err(&"input buffer is not contiguous"))?;
        let mut canvas = Image::from_slice_u8(self.size, self.size, buffer, PixelType::U8x3).map_err(|e| err(&e))?;
        let (ox, oy) = geometry.offset;
        let (nw, nh) = geometry.resized;
        let mut inside = CroppedImageMut::new(&mut canvas, ox, oy, nw, nh).map_err(|e| err(&e))?;
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        self.resizer.resize(frame, &mut inside, &options).map_err(|e| err(&e))?;
        Ok(geometry)
    }

    /// The letterboxed input of the last [`MoveNet::letterbox`], `[1, S, S, 3]` RGB.
    pub fn input(&self) -> ArrayView4<'_, u8> {
        self.input.view()
    }

    /// Run the model on a letterboxed `[1, S, S, 3]` RGB input; the raw `(y, x, score)` per COCO-17 keypoint.
    pub fn infer(&mut self, input: ArrayView4<u8>) -> Result<RawKeypoints> {
        run(&mut self.model, input)
    }

    /// The raw keypoints for `frame` and the geometry that maps them back.
    pub fn estimate_raw(&mut self, frame: &RgbImage) -> Result<(RawKeypoints, Letterbox)> {
        let geometry = self.letterbox(frame)?;
        let raw = run(&mut self.model, self.input.view())?;
        Ok((raw, geometry))
    }
}

fn run(model: &mut Model, input: ArrayView4<u8>) -> Result<RawKeypoints> {
    let name = model.binding.input(0).name.clone();
    let value = ort::value::TensorRef::from_array_view(input).map_err(|e| Error::inference(ROLE, e))?;
    let out = model.run_output(ort::inputs![name.as_str() => value], 0)?;
    if out.len() != 17 * 3 {
        return Err(Error::inference(ROLE, format!("output has shape {:?}, expected [1, 1, 17, 3]", out.shape())));
    }
    let mut raw = [[0.0; 3]; 17];
    for (i, v) in out.iter().enumerate() {
        raw[i / 3][i % 3] = *v;
    }
    Ok(raw)
}

impl PoseEstimator for MoveNet {
    /// The one person MoveNet SinglePose sees, or nobody when no keypoint reaches the threshold.
    fn estimate(&mut self, frame: &RgbImage) -> Result<Vec<Person>> {
        let (raw, geometry) = self.estimate_raw(frame)?;
        let person = to_openpose(&raw, &geometry, self.threshold);
        Ok(if person.keypoints.iter().any(|k| k.score > 0.0) { vec![person] } else { Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pose::{COCO_RIGHT_SHOULDER, OPENPOSE_NECK};

    #[test]
    fn letterbox_geometry() {
        assert_eq!(
            Letterbox::new(320, 180, 192),
            Letterbox { size: 192, frame: (320, 180), resized: (192, 108), offset: (0, 42) }
        );
        assert_eq!(
            Letterbox::new(117, 180, 192),
            Letterbox { size: 192, frame: (117, 180), resized: (125, 192), offset: (33, 0) }
        );
        assert_eq!(Letterbox::new(512, 512, 192).offset, (0, 0));
        // Extreme aspect: never a zero-sized resize.
        assert_eq!(Letterbox::new(10000, 1, 192).resized, (192, 1));
    }

    #[test]
    fn mapping_inverts_the_letterbox() {
        let lb = Letterbox::new(117, 180, 192);
        // The resized region's corners are the frame's corners.
        let (x0, y0) = lb.to_frame(33.0 / 192.0, 0.0);
        let (x1, y1) = lb.to_frame((33.0 + 125.0) / 192.0, 1.0);
        assert!(x0.abs() < 1e-4 && y0.abs() < 1e-4, "{x0} {y0}");
        assert!((x1 - 117.0).abs() < 1e-4 && (y1 - 180.0).abs() < 1e-4, "{x1} {y1}");
        let lb = Letterbox::new(640, 360, 192);
        let (x, y) = lb.to_frame(0.5, 0.5);
        assert!((x - 320.0).abs() < 1e-3 && (y - 180.0).abs() < 1e-3, "{x} {y}");
    }

    #[test]
    fn coco_to_openpose_order_neck_and_threshold() {
        let lb = Letterbox::new(192, 192, 192);
        let mut raw = [[0.0f32; 3]; 17];
        for (i, p) in raw.iter_mut().enumerate() {
            // x encodes the COCO index, y is fixed; all confident
            *p = [0.5, i as f32 / 100.0, 0.9];
        }
        let person = to_openpose(&raw, &lb, 0.3);
        let coco_of = |k: &Keypoint| (k.x / 192.0 * 100.0).round() as usize;
        let names: Vec<&str> = person
            .keypoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != OPENPOSE_NECK)
            .map(|(_, k)| COCO_17[coco_of(k)])
            .collect();
        let expected: Vec<&str> = super::super::OPENPOSE_18.iter().copied().filter(|n| *n != "neck").collect();
        assert_eq!(names, expected);
        let neck = person.keypoints[OPENPOSE_NECK];
        assert!((neck.x - (5.0 + 6.0) / 2.0 / 100.0 * 192.0).abs() < 1e-4 && neck.score == 0.9, "{neck:?}");

        // A weak right shoulder: missing, and so is the neck; a weak nose is missing.
        raw[COCO_RIGHT_SHOULDER][2] = 0.29;
        raw[0][2] = 0.1;
        let person = to_openpose(&raw, &lb, 0.3);
        assert_eq!(person.keypoints[2], Keypoint::default());
        assert_eq!(person.keypoints[OPENPOSE_NECK], Keypoint::default());
        assert_eq!(person.keypoints[0], Keypoint::default());
        assert_eq!(person.keypoints[5].score, 0.9);
        // Neck score is the weaker shoulder's.
        raw[COCO_RIGHT_SHOULDER][2] = 0.4;
        assert_eq!(to_openpose(&raw, &lb, 0.3).keypoints[OPENPOSE_NECK].score, 0.4);
    }

    #[test]
    fn threshold_range() {
        assert_eq!(check_threshold(0.3), Ok(0.3));
        assert!(check_threshold(1.5).unwrap_err().contains("from 0 to 1"));
        assert!(check_threshold(f32::NAN).is_err());
    }

    #[test]
    fn folder_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let err = model_file(dir.path()).unwrap_err();
        assert!(matches!(err, Error::ModelFolder { .. }) && err.to_string().contains("no .onnx"), "{err}");
        std::fs::write(dir.path().join("a.onnx"), b"").unwrap();
        std::fs::write(dir.path().join("README.md"), b"").unwrap();
        assert_eq!(model_file(dir.path()).unwrap(), dir.path().join("a.onnx"));
        std::fs::write(dir.path().join("b.onnx"), b"").unwrap();
        let err = model_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains("a.onnx, b.onnx"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
