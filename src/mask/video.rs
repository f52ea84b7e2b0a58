//! A mask video: a second source read frame by frame beside the input, white = change. Its n-th frame is the
//! n-th input frame's mask (frame-aligned, by count, not by timestamp: a mask rendered from the input has its
//! frames one for one). Each frame is taken as luma and brought to the frame's size as a still mask is (cover
//! and centre-crop, the same aspect check). A mask video shorter than the input holds its last frame (said once
//! in the log); one that does not decode is bad input.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{Mask, MaskSource, StillMask};
use crate::config::{GstInput, Mode, SourceSpec};
use crate::error::{Error, Result};
use crate::source::Source;

pub struct VideoMask {
    path: PathBuf,
    source: Box<dyn Source>,
    /// The last mask frame read (held once the video has ended).
    current: Option<StillMask>,
    frames_read: u64,
    ended: bool,
}

impl VideoMask {
    /// Open the mask video (GStreamer decodes it; its first frame is read now, so a file that is no video fails
    /// before the run starts).
    pub fn open(path: &Path) -> Result<VideoMask> {
        if !path.is_file() {
            return Err(Error::invalid("mask video", format!("{}: no such file", path.display())));
        }
        let spec = SourceSpec::Gstreamer { input: GstInput::Uri(path.display().to_string()), audio: false };
        let source = crate::source::open(&spec, Mode::Offline, false).map_err(|e| {
            if e.exit_code() == 2 {
                Error::invalid("mask video", format!("{}: {}", path.display(), e.chain_text()))
            } else {
                e
            }
        })?;
        let mut video = VideoMask { path: path.to_path_buf(), source, current: None, frames_read: 0, ended: false };
        video.advance()?;
        if video.current.is_none() {
            return Err(Error::invalid("mask video", format!("{}: has no frames", path.display())));
        }
        Ok(video)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its frames can be brought to `width x height` (their aspect ratio).
    pub fn check_aspect(&self, width: u32, height: u32) -> Result<()> {
        self.current.as_ref().map_or(Ok(()), |c| c.check_aspect(width, height))
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Read the next mask frame, or keep the last one at the end of the video.
    fn advance(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        match self.source.next_frame()? {
            Some(frame) => {
                let luma = image::imageops::grayscale(&*frame.image);
                self.current = Some(StillMask::from_gray(&self.path, luma));
                self.frames_read += 1;
            }
            None => {
                self.ended = true;
                tracing::warn!(
                    mask = %self.path.display(),
                    frames = self.frames_read,
                    "the mask video ended before the input: its last frame is kept for the rest"
                );
            }
        }
        Ok(())
    }
}

impl MaskSource for VideoMask {
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        // The first frame was read at open, for the first input frame.
        if self.frames_read > 0 && self.current.as_ref().is_some_and(StillMask::used) {
            self.advance()?;
        }
        let current = self.current.as_mut().ok_or_else(|| Error::internal("mask video", "no mask frame was read"))?;
        current.at_size(frame.width(), frame.height())
    }
}
