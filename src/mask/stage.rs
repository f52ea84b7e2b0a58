//! One frame's mask from a spec: the source, the faces kept (optional), the shaping — what `latentcam mask` and a
//! pipeline's preprocess thread run per frame. It owns its ONNX sessions, so it runs beside the diffusion.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{Chroma, Combine, Face, FaceDetector, Mask, MaskOptions, MaskShaper, MaskSource, Segmenter, StillMask};
use crate::error::{Error, Result};
use crate::infer::Runtime;

/// Where a mask comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// The person segmenter; the background changes.
    Segmenter,
    /// The faces are kept, the rest changes.
    Faces,
    /// Near the key colour changes.
    Chroma(Chroma),
    /// A still mask image, white = change.
    Image(PathBuf),
}

impl SourceSpec {
    /// `segmenter`, `faces`, `chroma=RRGGBB[:TOLERANCE]` or `image=PATH`.
    pub fn parse(text: &str) -> Result<SourceSpec> {
        match text.split_once('=') {
            None if text == "segmenter" => Ok(SourceSpec::Segmenter),
            None if text == "faces" => Ok(SourceSpec::Faces),
            Some(("chroma", key)) => Ok(SourceSpec::Chroma(Chroma::parse(key)?)),
            Some(("image", path)) if !path.is_empty() => Ok(SourceSpec::Image(PathBuf::from(path))),
            _ => Err(Error::invalid(
                "mask source",
                format!("`{text}`: expected segmenter, faces, chroma=RRGGBB[:TOLERANCE] or image=PATH"),
            )),
        }
    }
}

/// Everything that makes a frame's mask.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskSpec {
    pub source: SourceSpec,
    /// Keep the faces (BlazeFace) whatever the source (inverted or not) says: intersected with the faces' mask.
    pub keep_faces: bool,
    /// The MediaPipe models' folder (or one model file) for the segmenter and the faces.
    pub models: PathBuf,
    pub options: MaskOptions,
}

impl Default for MaskSpec {
    fn default() -> Self {
        MaskSpec {
            source: SourceSpec::Segmenter,
            keep_faces: false,
            models: super::models::default_folder(),
            options: MaskOptions::default(),
        }
    }
}

/// A loaded source (the face detector boxed: it carries its input tensor inline).
pub enum Source {
    Segmenter(Segmenter),
    Faces(Box<FaceDetector>),
    Chroma(Chroma),
    Still(StillMask),
}

impl MaskSource for Source {
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        match self {
            Source::Segmenter(s) => s.mask(frame),
            Source::Faces(f) => f.mask(frame),
            Source::Chroma(c) => c.mask(frame),
            Source::Still(s) => s.mask(frame),
        }
    }
}

/// A frame's mask, made as [`MaskSpec`] says (see the module docs).
pub struct MaskMaker {
    source: Source,
    /// The faces to keep, unless the source is the faces.
    keep_faces: Option<FaceDetector>,
    shaper: MaskShaper,
    /// The last frame's source, faces and shaping times.
    times: [Duration; 3],
}

impl MaskMaker {
    /// Load what `spec` needs: models, the mask image. Bad input is an error with exit code 2.
    pub fn new(runtime: &Runtime, spec: &MaskSpec) -> Result<MaskMaker> {
        let shaper = MaskShaper::new(spec.options)?;
        let source = match &spec.source {
            SourceSpec::Segmenter => Source::Segmenter(Segmenter::load(runtime, &spec.models)?),
            SourceSpec::Faces => Source::Faces(Box::new(FaceDetector::load(runtime, &spec.models)?)),
            SourceSpec::Chroma(c) => Source::Chroma(*c),
            SourceSpec::Image(path) => Source::Still(StillMask::load(path)?),
        };
        let keep_faces = match (&spec.source, spec.keep_faces) {
            (SourceSpec::Faces, _) | (_, false) => None,
            _ => Some(FaceDetector::load(runtime, &spec.models)?),
        };
        Ok(MaskMaker { source, keep_faces, shaper, times: [Duration::ZERO; 3] })
    }

    /// This frame's mask, at its size: 1 = change.
    pub fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        let started = Instant::now();
        let mask = self.source.mask(frame)?;
        self.times[0] = started.elapsed();
        let started = Instant::now();
        let faces = match &mut self.keep_faces {
            Some(detector) => Some(detector.mask(frame)?),
            None => None,
        };
        self.times[1] = started.elapsed();
        let started = Instant::now();
        let mask = self.shaper.shape_with(mask, faces.as_ref().map(|f| (f, Combine::Intersection)));
        self.times[2] = started.elapsed();
        Ok(mask)
    }

    /// The faces found in the last frame (none unless faces are the source or kept).
    pub fn last_faces(&self) -> &[Face] {
        match (&self.source, &self.keep_faces) {
            (Source::Faces(f), _) => f.last_faces(),
            (_, Some(f)) => f.last_faces(),
            _ => &[],
        }
    }

    /// Change the shaping from the next frame on (a live change).
    pub fn set_options(&mut self, options: MaskOptions) -> Result<()> {
        self.shaper.set_options(options)
    }

    pub fn options(&self) -> MaskOptions {
        self.shaper.options()
    }

    /// Forget the smoothing's previous frames.
    pub fn reset(&mut self) {
        self.shaper.reset();
    }

    /// The last frame's times: the source, keeping the faces, the shaping.
    pub fn stage_times(&self) -> Vec<(&'static str, Duration)> {
        vec![("mask source", self.times[0]), ("mask faces", self.times[1]), ("mask shaping", self.times[2])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(SourceSpec::parse("segmenter").unwrap(), SourceSpec::Segmenter);
        assert_eq!(SourceSpec::parse("faces").unwrap(), SourceSpec::Faces);
        assert_eq!(SourceSpec::parse("image=a b.png").unwrap(), SourceSpec::Image(PathBuf::from("a b.png")));
        assert_eq!(
            SourceSpec::parse("chroma=00ff00:30").unwrap(),
            SourceSpec::Chroma(Chroma::new([0, 255, 0], 30.0).unwrap())
        );
        for bad in ["person", "image=", "chroma", "segmenter=x"] {
            let err = SourceSpec::parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("expected segmenter, faces"), "{bad}: {err}");
        }
        // A bad key names the key's problem.
        assert!(SourceSpec::parse("chroma=zz").unwrap_err().to_string().contains("six hex digits"));
    }
}
