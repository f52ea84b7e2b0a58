//! The mask stage: each frame's mask made in the preprocess thread ([`MaskMaker`], its own ONNX sessions, so it
//! overlaps the diffusion of the previous frame), carried with the frame to the frame path (latent blending) and
//! to delivery (the pixel composite, the mask view). Live values switch the mask off and on, keep the faces,
//! invert and reshape it from the next frame on.

use std::sync::Arc;
use std::time::Duration;

use image::GrayImage;

use super::Annotator;
use crate::control::LiveValues;
use crate::error::Result;
use crate::frame::Frame;
use crate::infer::Runtime;
use crate::mask::{MaskMaker, MaskOptions, PipelineMask};

pub struct MaskAnnotator {
    maker: MaskMaker,
    runtime: Runtime,
    /// The shaping the run started with (live values change it from there).
    base: MaskOptions,
    enabled: bool,
    composite: bool,
    /// The mask of a frame while the mask is off: change everything (kept, one per size).
    everything: Option<Arc<GrayImage>>,
}

impl MaskAnnotator {
    /// For frames of `size` (the working size): a mask image or video of another shape is refused now.
    pub fn new(runtime: &Runtime, mask: &PipelineMask, (width, height): (u32, u32)) -> Result<MaskAnnotator> {
        let maker = MaskMaker::new(runtime, &mask.spec)?;
        maker.check_size(width, height)?;
        Ok(MaskAnnotator {
            maker,
            runtime: runtime.clone(),
            base: mask.spec.options,
            enabled: mask.enabled,
            composite: mask.composite,
            everything: None,
        })
    }
}

impl Annotator for MaskAnnotator {
    fn stage(&self) -> &'static str {
        "mask"
    }

    fn annotate(&mut self, frame: &mut Frame) -> Result<()> {
        let (width, height) = frame.image.dimensions();
        if !self.enabled {
            let everything = match &self.everything {
                Some(m) if m.dimensions() == (width, height) => m.clone(),
                _ => Arc::new(GrayImage::from_pixel(width, height, image::Luma([255]))),
            };
            self.everything = Some(everything.clone());
            frame.conditioning.mask = Some(everything);
            frame.conditioning.composite_px = None;
            return Ok(());
        }
        let mask = self.maker.mask(&frame.image)?;
        frame.conditioning.mask = Some(Arc::new(mask.to_gray()));
        frame.conditioning.composite_px = self.composite.then(|| self.maker.options().feather_px.round() as u32);
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        if self.enabled { self.maker.stage_times() } else { Vec::new() }
    }

    fn control(&mut self, values: &LiveValues) {
        let enabled = values.mask.unwrap_or(self.enabled);
        if enabled && !self.enabled {
            // The smoothing's history is from before the mask was switched off.
            self.maker.reset();
        }
        self.enabled = enabled;
        self.composite = values.mask_composite.unwrap_or(self.composite);
        // The hub checked each value against its knob; a failure here would be a bug, and the run goes on.
        if let Err(e) = self.maker.set_options(values.mask_options(self.base)) {
            tracing::warn!("mask shaping not changed: {}", e.chain_text());
        }
        if let Some(keep) = values.mask_keep_faces
            && let Err(e) = self.maker.set_keep_faces(&self.runtime, keep)
        {
            tracing::warn!("keeping the faces not changed: {}", e.chain_text());
        }
    }
}
