//! The person segmenter: MediaPipe selfie segmentation (general 256x256, landscape 256x144) on ONNX Runtime.
//!
//! MediaPipe's own processing ([`super::warp`]): the whole frame stretched onto the model's input (no letterbox),
//! RGB 0..1, NHWC; the output, a person probability per input pixel, resized back to the frame bilinearly. With
//! both models loaded, each frame goes to the one whose input aspect is nearer the frame's (the landscape model
//! for 16:9 webcams; MediaPipe's `model_selection` leaves that choice to the user).
//!
//! As a [`MaskSource`] it gives the streamer's mask: the background changes, the person is kept
//! (`1 - person`); `invert` (in [`super::MaskOptions`]) restyles the person instead.

use std::path::Path;

use image::RgbImage;
use ndarray::{Array2, Array4};
use ort::value::TensorElementType::Float32;

use super::warp::{Region, frame_to_tensor, resize_linear};
use super::{Mask, MaskSource};
use crate::error::{Error, Result};
use crate::infer::contract::Port;
use crate::infer::{Contract, Model, Runtime};

/// The role the segmenter has in messages.
pub const ROLE: &str = "selfie segmentation";

/// NHWC RGB 0..1 in, `[1, H, W, 1]` person probability out; shapes are checked after load.
pub static CONTRACT: Contract = Contract {
    inputs: &[Port { names: &["input_1"], types: &[Float32], ranks: &[4], required: true }],
    outputs: &[Port { names: &["activation_10", "segment_back"], types: &[Float32], ranks: &[4], required: true }],
};

/// Which selfie segmentation model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmenterKind {
    /// 256x256 input (MediaPipe's `model_selection=0`).
    General,
    /// 256 wide, 144 high (`model_selection=1`), for 16:9 frames.
    Landscape,
}

/// One loaded model and its preallocated input.
struct Net {
    model: Model,
    kind: SegmenterKind,
    /// The model input's width and height.
    size: (usize, usize),
    /// `[1, H, W, 3]`, rewritten per frame.
    input: Array4<f32>,
}

impl Net {
    fn load(runtime: &Runtime, path: &Path) -> Result<Net> {
        let model = runtime.load(ROLE, path, &CONTRACT)?;
        let (width, height) = match model.binding.input(0).shape.as_slice() {
            [1 | -1, h, w, 3] if *h > 0 && *w > 0 => (*w as usize, *h as usize),
            shape => {
                return Err(model.contract_error(format!(
                    "input `input_1` has shape {shape:?}, expected [1, H, W, 3] (RGB, NHWC) with a fixed size"
                )));
            }
        };
        let output = model.binding.output(0);
        if !matches!(output.shape.as_slice(), [1 | -1, h, w, 1] if *h == height as i64 && *w == width as i64) {
            return Err(model.contract_error(format!(
                "output `{}` has shape {:?}, expected [1, {height}, {width}, 1] (a person probability per input pixel)",
                output.name, output.shape
            )));
        }
        let kind = if width == height { SegmenterKind::General } else { SegmenterKind::Landscape };
        Ok(Net { model, kind, size: (width, height), input: Array4::zeros((1, height, width, 3)) })
    }

    fn person(&mut self, frame: &RgbImage) -> Result<Mask> {
        let (w, h) = self.size;
        let input = self.input.as_slice_mut().ok_or_else(|| Error::internal(ROLE, "input is not contiguous"))?;
        frame_to_tensor(frame, Region::whole(frame.width(), frame.height()), w, h, (0.0, 1.0), input);
        let out = self.model.run_image(self.input.view())?;
        if out.len() != w * h {
            return Err(Error::inference(
                ROLE,
                format!("output has shape {:?}, expected [1, {h}, {w}, 1]", out.shape()),
            ));
        }
        let small: Vec<f32> = out.iter().copied().collect();
        let (fw, fh) = (frame.width() as usize, frame.height() as usize);
        let full = resize_linear(&small, w, h, fw, fh);
        let values = Array2::from_shape_vec((fh, fw), full).map_err(|e| Error::internal(ROLE, e))?;
        Ok(Mask::new(values))
    }
}

/// The person segmenter (see the module docs).
pub struct Segmenter {
    nets: Vec<Net>,
}

impl Segmenter {
    /// Load the selfie segmentation models at `path`: a folder (every segmentation model in it) or one model
    /// file. A path without one is a bad-input error naming what was expected.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Segmenter> {
        let found = super::models::resolve(path)?;
        if found.segmenters.is_empty() {
            return Err(Error::ModelFolder {
                path: path.to_path_buf(),
                problem: format!(
                    "holds no MediaPipe selfie segmentation model ({}; models/{} has them)",
                    "input `input_1`, output `activation_10` or `segment_back`",
                    super::models::FOLDER
                ),
            });
        }
        let nets = found.segmenters.iter().map(|file| Net::load(runtime, file)).collect::<Result<Vec<_>>>()?;
        Ok(Segmenter { nets })
    }

    /// The kinds loaded.
    pub fn kinds(&self) -> Vec<SegmenterKind> {
        self.nets.iter().map(|n| n.kind).collect()
    }

    /// The loaded model whose input aspect is nearest the frame's (in ratio, so 4:3 is nearer 1:1 than 16:9).
    pub fn kind_for(&self, width: u32, height: u32) -> SegmenterKind {
        self.nets[self.pick(width, height)].kind
    }

    fn pick(&self, width: u32, height: u32) -> usize {
        let aspect = f64::from(width.max(1)) / f64::from(height.max(1));
        let distance = |n: &Net| (aspect / (n.size.0 as f64 / n.size.1 as f64)).ln().abs();
        (0..self.nets.len()).min_by(|&a, &b| distance(&self.nets[a]).total_cmp(&distance(&self.nets[b]))).unwrap_or(0)
    }

    /// The person probability per frame pixel (1 = person), from the model [`Segmenter::kind_for`] picks.
    pub fn person(&mut self, frame: &RgbImage) -> Result<Mask> {
        check_frame(frame)?;
        let i = self.pick(frame.width(), frame.height());
        self.nets[i].person(frame)
    }

    /// [`Segmenter::person`] from the model `kind` (an error if it is not loaded).
    pub fn person_using(&mut self, frame: &RgbImage, kind: SegmenterKind) -> Result<Mask> {
        check_frame(frame)?;
        let net = self
            .nets
            .iter_mut()
            .find(|n| n.kind == kind)
            .ok_or_else(|| Error::invalid("segmenter model", format!("the {kind:?} model is not loaded")))?;
        net.person(frame)
    }
}

fn check_frame(frame: &RgbImage) -> Result<()> {
    match frame.dimensions() {
        (0, _) | (_, 0) => Err(Error::invalid("mask frame", format!("{}x{} is empty", frame.width(), frame.height()))),
        _ => Ok(()),
    }
}

impl MaskSource for Segmenter {
    /// The background changes, the person is kept: `1 - person`.
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        Ok(self.person(frame)?.inverted())
    }
}
