//! PNG files `frame_000000.png`, `frame_000001.png`, ... (numbered by the frame's sequence number, so gaps show
//! dropped frames) in a folder created on demand.

use std::path::{Path, PathBuf};

use super::{Sink, StreamEnd, compose};
use crate::config::View;
use crate::error::{Error, Result};
use crate::frame::Processed;
use crate::imaging::OutputImage;

pub struct PngSink {
    dir: PathBuf,
    every: u64,
    view: View,
}

impl PngSink {
    pub fn create(dir: &Path, every: u64, view: View) -> Result<PngSink> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Output { path: dir.to_path_buf(), problem: e.to_string() })?;
        // Fail now, not at the first frame, when the folder cannot be written.
        OutputImage::create(&dir.join("probe.png"))?;
        Ok(PngSink { dir: dir.to_path_buf(), every: every.max(1), view })
    }
}

impl Sink for PngSink {
    fn write(&mut self, frame: &Processed) -> Result<()> {
        if !frame.sequence.is_multiple_of(self.every) {
            return Ok(());
        }
        let path = self.dir.join(format!("frame_{:06}.png", frame.sequence));
        OutputImage::create(&path)?.write(&compose(frame, self.view))
    }

    fn finish(&mut self, _end: StreamEnd) -> Result<()> {
        Ok(())
    }
}
