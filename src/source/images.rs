//! A folder of still images (or a glob) played as a video: PNG/JPEG files in name order, at a given rate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::Source;
use super::test_pattern::Pacer;
use crate::error::{Error, Result};
use crate::frame::{Fps, Frame, FrameFormat};
use crate::imaging;

pub struct ImageFolder {
    spec: String,
    files: Vec<PathBuf>,
    fps: Fps,
    repeat: bool,
    pacer: Option<Pacer>,
    next: usize,
    sequence: u64,
    format: FrameFormat,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

impl ImageFolder {
    pub fn open(spec: &str, fps: Fps, repeat: bool, live: bool) -> Result<ImageFolder> {
        let bad = |problem: String| Error::Source { source_name: format!("images {spec}"), problem };
        let path = Path::new(spec);
        let mut files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(path)
                .map_err(|e| bad(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect()
        } else if spec.contains(['*', '?', '[']) {
            glob::glob(spec)
                .map_err(|e| bad(format!("bad pattern: {e}")))?
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file() && is_image(p))
                .collect()
        } else if path.exists() {
            return Err(bad("not a folder or a glob pattern (e.g. frames/*.png)".into()));
        } else {
            return Err(bad("no such folder".into()));
        };
        files.sort();
        let first = files.first().ok_or_else(|| bad("no PNG or JPEG files".into()))?;
        let image = imaging::load_rgb(first)?;
        let format = FrameFormat { width: image.width(), height: image.height(), fps: Some(fps) };
        Ok(ImageFolder {
            spec: spec.to_string(),
            files,
            fps,
            repeat,
            pacer: live.then(|| Pacer::new(fps)),
            next: 0,
            sequence: 0,
            format,
        })
    }
}

impl Source for ImageFolder {
    fn format(&self) -> FrameFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.next == self.files.len() {
            if !self.repeat {
                return Ok(None);
            }
            self.next = 0;
        }
        if let Some(pacer) = &mut self.pacer {
            pacer.wait_for(self.sequence);
        }
        let image = imaging::load_rgb(&self.files[self.next])?;
        self.next += 1;
        let n = self.sequence;
        self.sequence += 1;
        Ok(Some(Frame {
            image: Arc::new(image),
            pts: Some(self.fps.frame_start(n)),
            duration: Some(self.fps.frame_duration()),
            sequence: n,
            captured: Instant::now(),
            conditioning: Default::default(),
        }))
    }

    fn describe(&self) -> String {
        format!("{} images from {} at {} fps", self.files.len(), self.spec, self.fps)
    }

    fn total_frames(&self) -> Option<u64> {
        (!self.repeat).then_some(self.files.len() as u64)
    }
}
