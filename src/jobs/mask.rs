//! `latentcam mask`: the mask of a still image (a grayscale PNG, white = change) or of every frame of a video (a
//! video of the mask), for checking a setup before a run; `--json` writes the coverage and the faces found.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pose::{PoseInputKind, VIDEO_EXTENSIONS, input_kind};
use super::{claim_paths, write_text};
use crate::error::{Error, Result};
use crate::imaging::OutputImage;
use crate::infer::Runtime;
use crate::mask::{Face, MaskMaker, MaskOptions, MaskSpec, SourceSpec};
use crate::paths::{NamedPath, OutputLock};

/// `latentcam mask IN OUT [--json FILE] [--source ...] [--model PATH] [shaping flags]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub json: Option<PathBuf>,
    /// `segmenter` (default), `faces`, `chroma=RRGGBB[:TOLERANCE]` or `image=PATH`.
    pub source: Option<String>,
    /// The MediaPipe models' folder or file; None: models/mediapipe-selfie or ../shared/models/mediapipe-selfie.
    pub model: Option<PathBuf>,
    pub keep_faces: bool,
    /// `--also SOURCE` (as `--source`) and `--combine union|difference|intersection`.
    pub also: Option<String>,
    pub combine: Option<String>,
    pub options: MaskOptions,
}

/// One face as JSON, input pixels: the box `[left, top, width, height]` and 6 keypoints `[x, y]` (right eye, left
/// eye, nose tip, mouth, right ear, left ear).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FaceJson {
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub keypoints: Vec<[f32; 2]>,
}

impl FaceJson {
    pub fn of(face: &Face) -> FaceJson {
        FaceJson {
            score: face.score,
            bbox: [face.left, face.top, face.width, face.height],
            keypoints: face.keypoints.iter().map(|&(x, y)| [x, y]).collect(),
        }
    }
}

/// What `latentcam mask` found in a still image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MaskReport {
    pub width: u32,
    pub height: u32,
    /// The fraction of the image to change (the mask's mean).
    pub coverage: f64,
    /// The faces found (when faces are the source or kept).
    pub faces: Vec<FaceJson>,
}

impl MaskRequest {
    /// The mask spec; errors name this command's flags.
    pub fn spec(&self) -> Result<MaskSpec> {
        let source = match &self.source {
            Some(text) => SourceSpec::parse(text).map_err(|e| rename(e, "--source"))?,
            None => SourceSpec::Segmenter,
        };
        let options = self.options.checked().map_err(|e| rename(e, ""))?;
        let models = self.model.clone().unwrap_or_else(crate::mask::models::default_folder);
        let also = match &self.also {
            Some(text) => {
                let how = match &self.combine {
                    Some(how) => crate::mask::Combine::parse(how).map_err(|e| rename(e, "--combine"))?,
                    None => crate::mask::Combine::Union,
                };
                Some((SourceSpec::parse(text).map_err(|e| rename(e, "--also"))?, how))
            }
            None => None,
        };
        Ok(MaskSpec { source, also, keep_faces: self.keep_faces, models, options })
    }

    /// What a mask run reads and writes.
    fn paths(&self, spec: &MaskSpec) -> (Vec<NamedPath>, Vec<NamedPath>) {
        let mut reads = vec![NamedPath::new("input", &self.input)];
        if let Some(path) = spec.source.file() {
            reads.push(NamedPath::new("--source file", path));
        }
        if let Some(path) = spec.also.as_ref().and_then(|(a, _)| a.file()) {
            reads.push(NamedPath::new("--also file", path));
        }
        let mut writes = vec![NamedPath::new("output", &self.output)];
        writes.extend(self.json.iter().map(|j| NamedPath::new("--json", j)));
        (reads, writes)
    }

    /// Whether the input is a still image or a video (as `latentcam pose` tells).
    pub fn input_kind(&self) -> PoseInputKind {
        input_kind(&self.input)
    }

    /// The mask of a still image: written as a grayscale image, white = change.
    pub fn run(&self, runtime: &Runtime) -> Result<MaskReport> {
        let spec = self.spec()?;
        let (reads, writes) = self.paths(&spec);
        crate::paths::check_distinct(&reads, &writes)?;
        let image = crate::imaging::load_rgb(&self.input)?;
        let output = OutputImage::create(&self.output)?;
        let _locks = claim_paths(&reads, &writes)?;
        let mut maker = MaskMaker::new(runtime, &spec)?;
        let mask = maker.mask(&image)?;
        output.write_gray(&mask.to_gray())?;
        let report = MaskReport {
            width: mask.width(),
            height: mask.height(),
            coverage: mask.coverage(),
            faces: maker.last_faces().iter().map(FaceJson::of).collect(),
        };
        if let Some(json) = &self.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::internal("mask JSON", e))?;
            write_text(json, &text)?;
        }
        Ok(report)
    }

    /// A video job, checked and opened: the output and JSON writable, the input decoding, the models loaded.
    pub fn video(&self, runtime: &Runtime) -> Result<MaskVideoJob> {
        let ext = self.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            return Err(Error::Output {
                path: self.output.clone(),
                problem: format!(
                    "the input {} is a video: expected a .mp4, .mkv or .mov file name (H.264 in that container)",
                    self.input.display()
                ),
            });
        }
        let spec = self.spec()?;
        let (reads, writes) = self.paths(&spec);
        crate::paths::check_distinct(&reads, &writes)?;
        let sink = super::video_file_sink(&self.output);
        crate::sink::precheck(&sink)?;
        let locks = claim_paths(&reads, &writes)?;
        let maker = MaskMaker::new(runtime, &spec)?;
        let source = super::open_video_file(&self.input)?;
        let format = source.format();
        let context = crate::sink::SinkContext::offline(format);
        let sink = crate::sink::open(&sink, &context, None)?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let processor = MaskVideoProcessor {
            maker,
            size: (format.width, format.height),
            frame_duration: format.fps.map_or(Duration::from_millis(40), crate::frame::Fps::frame_duration),
            next_index: 0,
            frames: frames.clone(),
        };
        Ok(MaskVideoJob {
            total_frames: source.total_frames(),
            source: source.describe(),
            json: self.json.clone(),
            frames,
            locks,
            parts: super::offline_file_parts(source, Box::new(processor), sink),
        })
    }
}

/// A range error from [`MaskOptions::checked`] or a source's parser, naming the flag that was given.
fn rename(error: Error, flag: &'static str) -> Error {
    match error {
        Error::InvalidParameter { what, problem } => {
            let flag = match (flag, what) {
                ("", "mask threshold") => "--threshold",
                ("", "mask grow") => "--grow",
                ("", "mask feather") => "--feather",
                ("", "mask smoothing") => "--smoothing",
                ("", other) => other,
                (flag, _) => flag,
            };
            Error::InvalidParameter { what: flag, problem }
        }
        other => other,
    }
}

/// One frame of a mask video, as JSON: its timestamp (seconds), coverage and faces.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MaskFrameJson {
    pub pts_s: f64,
    pub coverage: f64,
    pub faces: Vec<FaceJson>,
}

/// A mask video job ready to run: the offline pipeline (the GStreamer source, the mask processor, the file sink).
pub struct MaskVideoJob {
    pub parts: crate::pipeline::Parts,
    /// The input's length when the container tells it (progress).
    pub total_frames: Option<u64>,
    /// The input, described (size, rate).
    pub source: String,
    json: Option<PathBuf>,
    frames: Arc<Mutex<Vec<MaskFrameJson>>>,
    /// The outputs' locks, held while the job lives.
    locks: Vec<OutputLock>,
}

/// What a mask video run did.
#[derive(Debug)]
pub struct MaskVideoReport {
    pub stats: crate::pipeline::stats::Snapshot,
    pub frames: usize,
    /// The mean coverage over the frames.
    pub mean_coverage: f64,
    /// Stopped by Ctrl-C: the video and the JSON hold the frames before it.
    pub interrupted: bool,
}

impl MaskVideoJob {
    /// Every frame's mask into the video; then the JSON (`{"frames":[...]}`, one frame per line), also when the
    /// run failed or was stopped (it then holds the frames written).
    pub fn run(self, stop: crate::pipeline::StopFlag, tick: crate::pipeline::Tick) -> Result<MaskVideoReport> {
        let _locks = self.locks;
        let result = crate::pipeline::run(self.parts, stop, tick);
        let frames = std::mem::take(&mut *self.frames.lock().unwrap_or_else(|p| p.into_inner()));
        let written = match &self.json {
            Some(path) if result.is_ok() || !frames.is_empty() => write_text(path, &frames_json(&frames)?),
            _ => Ok(()),
        };
        let report = result?;
        written?;
        let mean_coverage =
            if frames.is_empty() { 0.0 } else { frames.iter().map(|f| f.coverage).sum::<f64>() / frames.len() as f64 };
        Ok(MaskVideoReport {
            frames: frames.len(),
            mean_coverage,
            interrupted: report.interrupted,
            stats: report.stats,
        })
    }
}

fn frames_json(frames: &[MaskFrameJson]) -> Result<String> {
    let mut text = String::from("{\"frames\":[\n");
    for (i, frame) in frames.iter().enumerate() {
        text += &serde_json::to_string(frame).map_err(|e| Error::internal("mask JSON", e))?;
        text += if i + 1 < frames.len() { ",\n" } else { "\n" };
    }
    text += "]}\n";
    Ok(text)
}

/// The mask video's processor: each frame's mask (smoothed over time when asked), as a gray picture.
struct MaskVideoProcessor {
    maker: MaskMaker,
    size: (u32, u32),
    /// Frames without a timestamp are placed on this rate's clock.
    frame_duration: Duration,
    next_index: u32,
    frames: Arc<Mutex<Vec<MaskFrameJson>>>,
}

impl crate::pipeline::Processor for MaskVideoProcessor {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn push(&mut self, frame: &crate::frame::Frame, ready: &mut Vec<image::RgbImage>) -> Result<()> {
        let pts = frame.pts.unwrap_or_else(|| self.frame_duration.saturating_mul(self.next_index));
        self.next_index = self.next_index.saturating_add(1);
        let mask = self.maker.mask(&frame.image)?;
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).push(MaskFrameJson {
            pts_s: pts.as_secs_f64(),
            coverage: mask.coverage(),
            faces: self.maker.last_faces().iter().map(FaceJson::of).collect(),
        });
        ready.push(image::DynamicImage::ImageLuma8(mask.to_gray()).to_rgb8());
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        self.maker.stage_times()
    }
}
