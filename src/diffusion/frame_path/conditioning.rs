//! The per-frame inputs: what comes with every frame beside the camera image (the pose skeleton today).
//!
//! Each is uploaded with its frame (8-bit pixels at the working size, in host memory, to the form its model
//! takes, on the device) by a small graph of its own and, in a denoising batch, carried along with its frame
//! from one run to the next as the frame's latent is. A frame batch gives each frame slot its own copy; when a
//! partial batch is padded at the end of a stream, the per-frame inputs are padded with the frame.
//!
//! To add one: its [`ConditioningKind`] and field in [`crate::frame::Conditioning`] (where the frame carries it),
//! and an entry in [`PER_FRAME`] (which paths take it, how it is uploaded and carried, which model input reads
//! it). The buffers, graphs, runs and bindings follow from the entry.

use ort::value::TensorElementType;

use super::super::img2img::Diffusion;
use super::layout::Layout;
use crate::error::{Error, Result};
use crate::frame::ConditioningKind;
use crate::infer::contract::controlnet as cn_port;

/// Every per-frame input a path may take, in upload order.
pub(super) const PER_FRAME: &[PerFrameInput] = &[
    PerFrameInput {
        kind: ConditioningKind::Skeleton,
        channels: 3,
        used: |l| l.control,
        upload: Upload::UnitRange,
        carry: Carry::WithItsFrame,
        consumer: Consumer::ControlNet(cn_port::COND),
    },
    PerFrameInput {
        kind: ConditioningKind::Mask,
        channels: 1,
        used: |l| l.masked,
        upload: Upload::LatentMask,
        carry: Carry::WithItsFrame,
        consumer: Consumer::Step,
    },
];

/// One kind of per-frame input and what the frame path does with it.
pub(super) struct PerFrameInput {
    /// Which of the frame's conditioning inputs it is.
    pub kind: ConditioningKind,
    /// 8-bit channels per pixel as it comes (interleaved).
    pub channels: i64,
    /// Whether a path of this layout takes it (then every frame must bring it).
    pub used: fn(&Layout) -> bool,
    pub upload: Upload,
    pub carry: Carry,
    pub consumer: Consumer,
}

/// How an input's 8-bit pixels become what its model takes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Upload {
    /// 0..1 floats, NCHW, at the working size (ControlNet's conditioning image).
    UnitRange,
    /// 0 or 1 at latent size: binarised at one half and sampled at each 8x8 block's top-left pixel, as diffusers'
    /// inpainting pipeline takes a mask to its latents (nearest interpolation of the binarised mask).
    LatentMask,
}

impl Upload {
    /// Height and width of the uploaded form.
    pub fn size(self, l: &Layout) -> (i64, i64) {
        match self {
            Upload::UnitRange => (l.height, l.width),
            Upload::LatentMask => (l.latent_h, l.latent_w),
        }
    }
}

/// How an input travels in a denoising batch, where each batch item is another frame at another step.
#[derive(Clone, Copy, Debug)]
pub(super) enum Carry {
    /// Each item keeps its own frame's copy: the new frame's goes first and the last run's items follow, one
    /// position on (the oldest leaves with its finished frame).
    WithItsFrame,
}

/// The model input that reads the uploaded form; it sets the form's batch and element type.
#[derive(Clone, Copy, Debug)]
pub(super) enum Consumer {
    /// The ControlNet's input at this contract index, in every ControlNet run: one row per UNet batch row (the
    /// items, twice for classifier-free guidance: row i pairs with sample row i).
    ControlNet(usize),
    /// The denoising step (`mask`, one row per item): latent blending.
    Step,
}

/// A per-frame input a path takes, resolved against its models.
#[derive(Clone, Copy)]
pub(super) struct Active {
    pub input: &'static PerFrameInput,
    /// Rows of the uploaded form (a multiple of the items).
    pub batch: i64,
    /// Element type of the uploaded form.
    pub ty: TensorElementType,
    /// Carried in a denoising batch ([`Layout::carries`]).
    pub carried: bool,
}

impl Active {
    /// Bytes of one frame's input as it comes.
    pub fn slot_bytes(&self, l: &Layout) -> usize {
        (l.height * l.width * self.input.channels) as usize
    }

    /// The host buffer's shape: 8-bit HWC, one per frame slot.
    pub fn host_shape(&self, l: &Layout) -> [i64; 4] {
        [l.slots, l.height, l.width, self.input.channels]
    }

    /// The uploaded form's shape for `rows` rows (f32 items when carried, `batch` rows in `ty` when bound).
    pub fn form(&self, l: &Layout, rows: i64) -> [i64; 4] {
        let (h, w) = self.input.upload.size(l);
        [rows, self.input.channels, h, w]
    }
}

/// The per-frame inputs a path of layout `l` takes.
pub(super) fn active(diffusion: &Diffusion, l: &Layout) -> Result<Vec<Active>> {
    PER_FRAME
        .iter()
        .filter(|input| (input.used)(l))
        .map(|input| {
            let (batch, ty) = match input.consumer {
                Consumer::ControlNet(port) => {
                    let controlnet = diffusion
                        .controlnet()
                        .ok_or_else(|| Error::internal("frame path", "pose guidance without a loaded ControlNet"))?;
                    (l.unet_batch, controlnet.model().input_type(port))
                }
                Consumer::Step => (l.items, TensorElementType::Float32),
            };
            Ok(Active { input, batch, ty, carried: l.carries() })
        })
        .collect()
}
