//! One frame's mask from a spec: the source, the faces kept (optional), the shaping — what `latentcam mask` and a
//! pipeline's preprocess thread run per frame. It owns its ONNX sessions, so it runs beside the diffusion.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{
    Chroma, Combine, Face, FaceDetector, Mask, MaskOptions, MaskShaper, MaskSource, Segmenter, StillMask, VideoMask,
};
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
    /// A mask video, white = change: its n-th frame is the n-th frame's mask.
    Video(PathBuf),
}

impl SourceSpec {
    /// `segmenter`, `faces`, `chroma=RRGGBB[:TOLERANCE]`, `image=PATH` or `video=PATH`.
    pub fn parse(text: &str) -> Result<SourceSpec> {
        match text.split_once('=') {
            None if text == "segmenter" => Ok(SourceSpec::Segmenter),
            None if text == "faces" => Ok(SourceSpec::Faces),
            Some(("chroma", key)) => Ok(SourceSpec::Chroma(Chroma::parse(key)?)),
            Some(("image", path)) if !path.is_empty() => Ok(SourceSpec::Image(PathBuf::from(path))),
            Some(("video", path)) if !path.is_empty() => Ok(SourceSpec::Video(PathBuf::from(path))),
            _ => Err(Error::invalid(
                "mask source",
                format!("`{text}`: expected segmenter, faces, chroma=RRGGBB[:TOLERANCE], image=PATH or video=PATH"),
            )),
        }
    }

    /// The file it reads besides the models (a mask image or video).
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            SourceSpec::Image(path) | SourceSpec::Video(path) => Some(path),
            _ => None,
        }
    }

    /// Whether it needs the MediaPipe models.
    pub fn uses_models(&self) -> bool {
        matches!(self, SourceSpec::Segmenter | SourceSpec::Faces)
    }
}

/// A pipeline's `[mask]`: how each frame's mask is made, and what the run does with it.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineMask {
    pub spec: MaskSpec,
    /// Restyle only the mask's area (live `mask`); off, the whole frame changes and the mask is only shown.
    pub enabled: bool,
    /// Show the input's own pixels outside the mask (live `mask-composite`).
    pub composite: bool,
}

impl PipelineMask {
    /// The shaping a pipeline uses unless its file says otherwise: soft edges feathered over 4 px, smoothed
    /// over time at 0.5 (BENCHMARKS.md: 59% less edge flicker on a real clip).
    pub const DEFAULT_FEATHER_PX: f32 = 4.0;
    pub const DEFAULT_SMOOTHING: f32 = 0.5;
}

/// Everything that makes a frame's mask.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskSpec {
    pub source: SourceSpec,
    /// A second source joined with the first before the shaping (e.g. the room without a logo: segmenter,
    /// difference, image).
    pub also: Option<(SourceSpec, Combine)>,
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
            also: None,
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
    Video(Box<VideoMask>),
}

impl Source {
    /// Load what `spec` needs (models from `models`, the mask image or video).
    pub fn load(runtime: &Runtime, spec: &SourceSpec, models: &std::path::Path) -> Result<Source> {
        Ok(match spec {
            SourceSpec::Segmenter => Source::Segmenter(Segmenter::load(runtime, models)?),
            SourceSpec::Faces => Source::Faces(Box::new(FaceDetector::load(runtime, models)?)),
            SourceSpec::Chroma(c) => Source::Chroma(*c),
            SourceSpec::Image(path) => Source::Still(StillMask::load(path)?),
            SourceSpec::Video(path) => Source::Video(Box::new(VideoMask::open(path)?)),
        })
    }
}

impl Source {
    /// Whether its masks fit frames of `width x height` (a mask image's or video's aspect ratio).
    fn check_size(&self, width: u32, height: u32) -> Result<()> {
        match self {
            Source::Still(s) => s.check_aspect(width, height),
            Source::Video(v) => v.check_aspect(width, height),
            _ => Ok(()),
        }
    }
}

impl MaskSource for Source {
    fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        match self {
            Source::Segmenter(s) => s.mask(frame),
            Source::Faces(f) => f.mask(frame),
            Source::Chroma(c) => c.mask(frame),
            Source::Still(s) => s.mask(frame),
            Source::Video(v) => v.mask(frame),
        }
    }
}

/// A frame's mask, made as [`MaskSpec`] says (see the module docs).
pub struct MaskMaker {
    source: Source,
    /// The second source and how it joins the first.
    also: Option<(Source, Combine)>,
    /// The face detector for keeping the faces, unless the source is the faces (loaded when first asked for).
    keep_faces: Option<FaceDetector>,
    /// Whether the faces are kept now.
    keeping_faces: bool,
    /// The MediaPipe models (the face detector loads from here when keeping faces is switched on live).
    models: PathBuf,
    shaper: MaskShaper,
    /// The last frame's source, faces and shaping times.
    times: [Duration; 3],
}

impl MaskMaker {
    /// Load what `spec` needs: models, the mask image. Bad input is an error with exit code 2.
    pub fn new(runtime: &Runtime, spec: &MaskSpec) -> Result<MaskMaker> {
        let shaper = MaskShaper::new(spec.options)?;
        let source = Source::load(runtime, &spec.source, &spec.models)?;
        let also = match &spec.also {
            Some((second, how)) => Some((Source::load(runtime, second, &spec.models)?, *how)),
            None => None,
        };
        let keep_faces = match (&spec.source, spec.keep_faces) {
            (SourceSpec::Faces, _) | (_, false) => None,
            _ => Some(FaceDetector::load(runtime, &spec.models)?),
        };
        let keeping_faces = spec.keep_faces && !matches!(spec.source, SourceSpec::Faces);
        Ok(MaskMaker {
            source,
            also,
            keep_faces,
            keeping_faces,
            models: spec.models.clone(),
            shaper,
            times: [Duration::ZERO; 3],
        })
    }

    /// Whether masks can be made for frames of `width x height` (checked before a run: a mask image of
    /// another shape is bad input).
    pub fn check_size(&self, width: u32, height: u32) -> Result<()> {
        self.source.check_size(width, height)?;
        match &self.also {
            Some((second, _)) => second.check_size(width, height),
            None => Ok(()),
        }
    }

    /// Keep the faces or stop keeping them from the next frame on (the detector loads the first time).
    pub fn set_keep_faces(&mut self, runtime: &Runtime, keep: bool) -> Result<()> {
        if matches!(self.source, Source::Faces(_)) {
            return Ok(()); // the faces are the source: kept already
        }
        if keep && self.keep_faces.is_none() {
            self.keep_faces = Some(FaceDetector::load(runtime, &self.models)?);
        }
        self.keeping_faces = keep;
        Ok(())
    }

    /// This frame's mask, at its size: 1 = change.
    pub fn mask(&mut self, frame: &RgbImage) -> Result<Mask> {
        let started = Instant::now();
        let mut mask = self.source.mask(frame)?;
        if let Some((second, how)) = &mut self.also {
            mask = mask.combined(&second.mask(frame)?, *how);
        }
        self.times[0] = started.elapsed();
        let started = Instant::now();
        let faces = match &mut self.keep_faces {
            Some(detector) if self.keeping_faces => Some(detector.mask(frame)?),
            _ => None,
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
            (_, Some(f)) if self.keeping_faces => f.last_faces(),
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
