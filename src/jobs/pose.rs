//! `latentcam pose`: the skeletons in a still image (a picture and JSON), or in every frame of a video.

use std::path::PathBuf;
use std::time::Instant;

use super::{claim_paths, write_text};
use crate::error::{Error, Result};
use crate::imaging::OutputImage;
use crate::infer::Runtime;
use crate::paths::{NamedPath, OutputLock};

/// `latentcam pose IN OUT [--json FILE] [--model PATH] [--overlay]` for a still image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoseRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub json: Option<PathBuf>,
    /// A pose model file or folder; None: models/movenet or ../shared/models/movenet.
    pub model: Option<PathBuf>,
    /// Draw the skeleton over the input instead of on black (the ControlNet conditioning image).
    pub overlay: bool,
}

/// What `latentcam pose` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoseReport {
    pub people: Vec<PersonJson>,
}

/// One person as JSON: 18 `[x, y, score]` in OpenPose-18 order, input-image pixels, score 0 when missing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PersonJson {
    pub keypoints: Vec<[f32; 3]>,
}

impl PersonJson {
    pub fn of(person: &crate::pose::Person) -> PersonJson {
        PersonJson {
            keypoints: person
                .keypoints
                .iter()
                .map(|k| if k.score > 0.0 { [k.x, k.y, k.score] } else { [0.0, 0.0, 0.0] })
                .collect(),
        }
    }
}

impl PoseRequest {
    /// The pose model and settings; errors name this command's flag (`--model`).
    fn pose_spec(&self) -> Result<crate::config::PoseSpec> {
        let file = crate::config::file::PoseFile { model: self.model.clone(), ..Default::default() };
        crate::config::PoseSpec::parse(&file, &crate::config::Origin::Flags).map_err(|e| match e {
            Error::InvalidParameter { what: "--pose-model", problem } => {
                Error::InvalidParameter { what: "--model", problem }
            }
            other => other,
        })
    }

    /// What a pose run reads and writes.
    fn paths(&self) -> (Vec<NamedPath>, Vec<NamedPath>) {
        let mut writes = vec![NamedPath::new("output", &self.output)];
        writes.extend(self.json.iter().map(|j| NamedPath::new("--json", j)));
        (vec![NamedPath::new("input", &self.input)], writes)
    }

    pub fn run(&self, runtime: &Runtime) -> Result<PoseReport> {
        let (reads, writes) = self.paths();
        crate::paths::check_distinct(&reads, &writes)?;
        let image = crate::imaging::load_rgb(&self.input)?;
        let output = OutputImage::create(&self.output)?;
        let _locks = claim_paths(&reads, &writes)?;
        let spec = self.pose_spec()?;
        let mut estimator = crate::pose::stage::load_estimator(runtime, &spec)?;
        let people = estimator.estimate(&image)?;
        let picture = if self.overlay {
            crate::pose::render::overlay(&image, &people)
        } else {
            crate::pose::render::skeleton(image.width(), image.height(), &people)
        };
        output.write(&picture)?;
        let report = PoseReport { people: people.iter().map(PersonJson::of).collect() };
        if let Some(json) = &self.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::internal("pose JSON", e))?;
            write_text(json, &text)?;
        }
        Ok(report)
    }
}

/// What `latentcam pose` reads: a still image or a video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoseInputKind {
    /// A PNG or JPEG file (told by its content, whatever its name).
    Image,
    /// Anything else: read by GStreamer as a video.
    Video,
}

/// The container extensions a video output may have (H.264 in it).
pub(super) const VIDEO_EXTENSIONS: [&str; 3] = ["mp4", "mkv", "mov"];

/// Whether `input` is a still image or a video: a PNG or JPEG file (by its name, else its first bytes) is an
/// image; anything else (a missing file too: the video path says it is missing) is read as a video.
pub(super) fn input_kind(input: &std::path::Path) -> PoseInputKind {
    use std::io::Read;
    // Named as an image: read as one (an empty or broken image is then said to be one, not "a video").
    let ext = input.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        return PoseInputKind::Image;
    }
    let mut head = [0u8; 16];
    let read = std::fs::File::open(input).and_then(|mut f| f.read(&mut head));
    match read.ok().and_then(|n| image::guess_format(&head[..n]).ok()) {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => PoseInputKind::Image,
        _ => PoseInputKind::Video,
    }
}

impl PoseRequest {
    /// A PNG or JPEG file (by its first bytes) is a still image; anything else (a missing file too: the video
    /// path says it is missing) is read as a video.
    pub fn input_kind(&self) -> PoseInputKind {
        input_kind(&self.input)
    }

    /// A video job, checked and opened: the output and JSON writable, the input decoding, the pose model
    /// loaded. Cheap checks first, so a typo fails before the input or the model is opened.
    pub fn video(&self, runtime: &Runtime) -> Result<PoseVideoJob> {
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
        let (reads, writes) = self.paths();
        crate::paths::check_distinct(&reads, &writes)?;
        let sink = super::video_file_sink(&self.output);
        crate::sink::precheck(&sink)?;
        let locks = claim_paths(&reads, &writes)?;
        let spec = self.pose_spec()?;
        let source = super::open_video_file(&self.input)?;
        let format = source.format();
        let annotator = crate::pose::stage::PoseAnnotator::new(runtime, &spec)?;
        let context = crate::sink::SinkContext::offline(format);
        let sink = crate::sink::open(&sink, &context, None)?;
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let processor = PoseVideoProcessor {
            annotator,
            size: (format.width, format.height),
            overlay: self.overlay,
            frame_duration: format.fps.map_or(std::time::Duration::from_millis(40), crate::frame::Fps::frame_duration),
            next_index: 0,
            frames: frames.clone(),
            render: std::time::Duration::ZERO,
        };
        Ok(PoseVideoJob {
            total_frames: source.total_frames(),
            source: source.describe(),
            output: self.output.clone(),
            json: self.json.clone(),
            frames,
            locks,
            parts: super::offline_file_parts(source, Box::new(processor), sink),
        })
    }
}

/// `latentcam pose` on a video, as JSON: one entry per frame, in order.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoseVideoJson {
    pub frames: Vec<PoseFrameJson>,
}

/// One frame of a video: its timestamp (seconds, the input's) and the people in it (smoothed over time).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoseFrameJson {
    pub pts_s: f64,
    pub people: Vec<PersonJson>,
}

impl PoseVideoJson {
    /// The JSON text, one frame per line.
    pub fn to_text(&self) -> Result<String> {
        let mut text = String::from("{\"frames\":[\n");
        for (i, frame) in self.frames.iter().enumerate() {
            text += &serde_json::to_string(frame).map_err(|e| Error::internal("pose JSON", e))?;
            text += if i + 1 < self.frames.len() { ",\n" } else { "\n" };
        }
        text += "]}\n";
        Ok(text)
    }
}

/// A pose video job ready to run: the offline pipeline (the GStreamer source, the pose processor, the file sink).
pub struct PoseVideoJob {
    pub parts: crate::pipeline::Parts,
    /// The input's length when the container tells it (progress).
    pub total_frames: Option<u64>,
    /// The input, described (size, rate).
    pub source: String,
    pub output: PathBuf,
    json: Option<PathBuf>,
    frames: std::sync::Arc<std::sync::Mutex<Vec<PoseFrameJson>>>,
    /// The outputs' locks, held while the job lives.
    locks: Vec<OutputLock>,
}

/// What a pose video run did.
#[derive(Debug)]
pub struct PoseVideoReport {
    pub stats: crate::pipeline::stats::Snapshot,
    /// Frames written (video and JSON).
    pub frames: usize,
    /// Frames in which at least one person was found.
    pub frames_with_people: usize,
    /// Stopped by Ctrl-C: the video and the JSON hold the frames before it.
    pub interrupted: bool,
}

impl PoseVideoJob {
    /// Every frame through the pose model into the video; then the JSON, also when the run failed or was
    /// stopped (it then holds the frames written).
    pub fn run(self, stop: crate::pipeline::StopFlag, tick: crate::pipeline::Tick) -> Result<PoseVideoReport> {
        let _locks = self.locks;
        let result = crate::pipeline::run(self.parts, stop, tick);
        let json =
            PoseVideoJson { frames: std::mem::take(&mut *self.frames.lock().unwrap_or_else(|p| p.into_inner())) };
        let written = match &self.json {
            Some(path) if result.is_ok() || !json.frames.is_empty() => write_text(path, &json.to_text()?),
            _ => Ok(()),
        };
        let report = result?;
        written?;
        Ok(PoseVideoReport {
            frames: json.frames.len(),
            frames_with_people: json.frames.iter().filter(|f| !f.people.is_empty()).count(),
            interrupted: report.interrupted,
            stats: report.stats,
        })
    }
}

/// The pose video's processor: each frame's people (estimated, smoothed on the frame's timestamp), drawn on
/// black or over the frame, and recorded for the JSON.
struct PoseVideoProcessor {
    annotator: crate::pose::stage::PoseAnnotator,
    size: (u32, u32),
    overlay: bool,
    /// Frames without a timestamp are placed on this rate's clock.
    frame_duration: std::time::Duration,
    next_index: u32,
    frames: std::sync::Arc<std::sync::Mutex<Vec<PoseFrameJson>>>,
    render: std::time::Duration,
}

impl PoseVideoProcessor {
    fn picture(&mut self, image: &image::RgbImage, pts: Option<std::time::Duration>) -> Result<image::RgbImage> {
        let pts = pts.unwrap_or_else(|| self.frame_duration.saturating_mul(self.next_index));
        self.next_index = self.next_index.saturating_add(1);
        let people = self.annotator.people(image, pts.as_secs_f64())?;
        let started = Instant::now();
        let picture = if self.overlay {
            crate::pose::render::overlay(image, people)
        } else {
            crate::pose::render::skeleton(image.width(), image.height(), people)
        };
        self.render = started.elapsed();
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PoseFrameJson { pts_s: pts.as_secs_f64(), people: people.iter().map(PersonJson::of).collect() });
        Ok(picture)
    }
}

impl crate::pipeline::Processor for PoseVideoProcessor {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn push(&mut self, frame: &crate::frame::Frame, ready: &mut Vec<image::RgbImage>) -> Result<()> {
        ready.push(self.picture(&frame.image, frame.pts)?);
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, std::time::Duration)> {
        use crate::pipeline::Annotator;
        let mut times = self.annotator.last_stage_times();
        times.retain(|(stage, _)| *stage != "pose render");
        times.push(("pose render", self.render));
        times
    }
}
