//! Pipeline files (`pipelines/*.toml`) and the flags of `convert`: parsed once into a [`Pipeline`] whose types
//! cannot hold a bad value. Unknown keys are rejected, every error names its key (and line, in a file), and
//! every number is checked for the range it is used in: the model folder's manifest is read and the schedule
//! and working size resolved here, before any source, sink or session opens. `check` and `run` both go
//! through [`Pipeline::load`], so they always agree.
//!
//! ```toml
//! mode = "live"                      # live: latest frame wins, drops counted; offline: every frame, no drops
//! [source]
//! kind = "test-pattern"              # test-pattern | images | gstreamer | webcam
//! [model]
//! dir = "tiny-sd-turbo"              # a path, or a bare name looked up in ./models and the checkout's models/
//! size = [256, 256]                  # working size (multiples of the model's size-multiple)
//! [params]                           # the knobs of diffusion; `--set params.prompt="..."` overrides
//! prompt = "a watercolor painting"
//! [[sink]]
//! kind = "window"                    # window | file | stream | v4l2 | png | null
//! ```
//!
//! Relative paths are relative to the current directory.

pub mod control;
pub mod file;
mod mask;
pub mod overrides;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use self::file::{Any, EngineFile, ParamsFile, PipelineFile, PoseFile, SinkFile, SourceFile};
pub use self::values::{Host, StreamUrl, WorkingSize};
use self::values::{MAX_SOURCE_SIDE, MIN_SOURCE_SIDE, parse_fps, parse_int, parse_seconds, show};
use crate::diffusion::scheduler::{Lcm, Schedule};
use crate::diffusion::{BatchMode, Params};
use crate::error::{Error, Result};
use crate::frame::Fps;
use crate::knobs::{self, Checked, Given, Knob, KnobError, Spelling};
use crate::model::{self, ModelFolder, one_line};
pub use crate::pose::PoseSpec;
use crate::pose::smooth::SmoothingSettings;
use crate::similarity::SimilaritySettings;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Capacity-1 drop-oldest links: the latest frame wins, no backlog, drops are counted.
    #[default]
    Live,
    /// Blocking links: every frame is processed, none dropped.
    Offline,
}

/// What a sink shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    #[default]
    Output,
    Input,
    /// Input left, output right.
    SideBySide,
    /// The input with the pose skeleton over it (pose-guided runs; the input otherwise).
    Pose,
    /// The input with the area to change tinted (masked runs; the input otherwise).
    Mask,
}

/// Only build a sink when a display is (or is not) there: lets one pipeline file serve desktops and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Display,
    NoDisplay,
}

/// A camera: its index or part of its name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DeviceSelector {
    Index(u32),
    Name(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraFormat {
    /// Whatever gets the asked resolution and rate (MJPEG preferred at high resolutions).
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
}

/// Where a GStreamer source reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GstInput {
    /// A file path or a URI (file://, http://, rtsp://, ...).
    Uri(String),
    /// A gst-launch description ending in an appsink.
    Launch(String),
}

/// Defaults of the `[source]` keys.
pub const DEFAULT_SOURCE_SIZE: (u32, u32) = (640, 480);
pub const DEFAULT_FPS: std::num::NonZeroU32 = std::num::NonZeroU32::new(30).unwrap();
/// A camera that delivers no frame for this long ends the run (exit 1).
pub const DEFAULT_NO_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked source.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// Moving, deterministic synthetic frames: runs anywhere.
    TestPattern { width: u32, height: u32, fps: Fps, frames: Option<u64> },
    /// A folder of PNG/JPEG files (sorted by name) or a glob such as `shots/*.png`.
    Images { path: String, fps: Fps, repeat: bool },
    /// A file or URI, or a GStreamer pipeline ending in an appsink. `audio`: carry the audio over to file sinks.
    Gstreamer { input: GstInput, audio: bool },
    /// A camera through nokhwa.
    Webcam {
        device: Option<DeviceSelector>,
        width: u32,
        height: u32,
        fps: Fps,
        format: CameraFormat,
        /// The run stops (exit 1) when the camera delivers nothing for this long; shorter gaps are bridged.
        no_frame_timeout: Duration,
    },
    /// A WHIP publisher at `POST /whip` on the control server; frames scaled to `width`x`height`.
    Whip {
        width: u32,
        height: u32,
        fps: Fps,
        /// The run stops (exit 1) when no publisher sends a frame for this long.
        no_frame_timeout: Duration,
    },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::TestPattern { .. } => "test-pattern",
            SourceSpec::Images { .. } => "images",
            SourceSpec::Gstreamer { .. } => "gstreamer",
            SourceSpec::Webcam { .. } => "webcam",
            SourceSpec::Whip { .. } => "whip",
        }
    }
}

/// x264's quality scale accepted (lower is better).
pub const MAX_QUALITY: u32 = 50;
pub const DEFAULT_QUALITY: u32 = 21;
/// Stream bitrates accepted (x264's own limits).
pub const MAX_BITRATE_KBPS: u32 = 2_048_000;
pub const DEFAULT_BITRATE_KBPS: u32 = 2500;

/// A checked sink: what it is, where it applies, which entry of the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkSpec {
    /// Its position among the file's `[[sink]]`s (names it in messages: `sink 0 (file)`).
    pub index: usize,
    pub only_when: Option<When>,
    pub kind: SinkKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    /// A preview window (keys: I input, O output, S side by side, Esc/Q quit).
    Window { view: View },
    /// H.264 in MP4 / MKV / MOV by the file's extension.
    File { path: PathBuf, view: View, audio: bool, quality: u32 },
    /// MPEG-TS over UDP or SRT.
    Stream { url: StreamUrl, view: View, bitrate_kbps: u32 },
    /// A v4l2loopback virtual camera.
    V4l2 { device: PathBuf, view: View },
    /// PNG files `frame_000000.png`, ... in a folder; every n-th frame.
    Png { dir: PathBuf, view: View, every: u64 },
    /// Discards frames (benchmarks, tests).
    Null,
    /// WebRTC viewers over WHEP (`POST /whep` on the control server), up to `max_viewers` at once.
    Whep { view: View, max_viewers: u32 },
}

impl SinkSpec {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SinkKind::Window { .. } => "window",
            SinkKind::File { .. } => "file",
            SinkKind::Stream { .. } => "stream",
            SinkKind::V4l2 { .. } => "v4l2",
            SinkKind::Png { .. } => "png",
            SinkKind::Null => "null",
            SinkKind::Whep { .. } => "whep",
        }
    }

    /// `file0`, `png1`: the sink's name in statistics and thread names.
    pub fn name(&self) -> String {
        format!("{}{}", self.kind_name(), self.index)
    }

    pub fn view(&self) -> View {
        match &self.kind {
            SinkKind::Window { view }
            | SinkKind::File { view, .. }
            | SinkKind::Stream { view, .. }
            | SinkKind::V4l2 { view, .. }
            | SinkKind::Png { view, .. }
            | SinkKind::Whep { view, .. } => *view,
            SinkKind::Null => View::Output,
        }
    }

    /// Whether this sink records the source's audio.
    pub fn wants_audio(&self) -> bool {
        matches!(self.kind, SinkKind::File { audio: true, .. })
    }

    /// Whether this sink is built on a machine with (or without) a display.
    pub fn applies(&self, display: bool) -> bool {
        match self.only_when {
            None => true,
            Some(When::Display) => display,
            Some(When::NoDisplay) => !display,
        }
    }
}

/// Where values came from, for messages: a pipeline file names its keys, the command line its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Flags,
}

impl Origin {
    /// How this origin names a knob: a file's key, or the flag.
    fn spelling(&self) -> Spelling {
        match self {
            Origin::File(_) => Spelling::Key,
            Origin::Flags => Spelling::Flag,
        }
    }

    /// A knob's refusal as this origin's error: `pipeline FILE: params.steps: 9: expected ...`, or
    /// `invalid --steps: 9: expected ...`.
    pub fn knob_error(&self, e: KnobError) -> Error {
        match self {
            Origin::File(path) => Error::Pipeline { path: path.clone(), problem: e.to_string() },
            Origin::Flags => Error::InvalidParameter { what: e.name(), problem: e.problem() },
        }
    }

    /// `value` checked by `knob` (None when not given); the error names the knob as this origin does.
    pub fn knob(&self, knob: &'static Knob, value: &Any) -> Result<Option<Checked>> {
        match value {
            None => Ok(None),
            Some(v) => knob.check(&Given::from_toml(v), self.spelling()).map(Some).map_err(|e| self.knob_error(e)),
        }
    }

    fn knob_int(&self, knob: &'static Knob, value: &Any) -> Result<Option<i64>> {
        Ok(match self.knob(knob, value)? {
            Some(Checked::Int(i)) => Some(i),
            _ => None,
        })
    }

    fn knob_float(&self, knob: &'static Knob, value: &Any) -> Result<Option<f64>> {
        Ok(match self.knob(knob, value)? {
            Some(Checked::Float(x)) => Some(x),
            _ => None,
        })
    }

    fn knob_text(&self, knob: &'static Knob, value: &Any) -> Result<Option<String>> {
        Ok(match self.knob(knob, value)? {
            Some(Checked::Text(t)) => Some(t),
            _ => None,
        })
    }

    /// The error for `key` (as `--set` spells it: `params.steps`, `sink.0.quality`).
    pub fn error(&self, key: &str, problem: impl std::fmt::Display) -> Error {
        match self {
            Origin::File(path) => Error::Pipeline { path: path.clone(), problem: format!("{key}: {problem}") },
            Origin::Flags => Error::InvalidParameter { what: flag_for(key), problem: problem.to_string() },
        }
    }
}

/// The `convert` flag that sets a key.
fn flag_for(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or(key) {
        "size" => "--size",
        "dir" => "--model",
        "steps" => "--steps",
        "strength" => "--strength",
        "guidance" => "--guidance",
        "seed" => "--seed",
        "timesteps" => "--timesteps",
        "quality" => "--quality",
        "prompt" => "--prompt",
        "negative-prompt" => "--negative-prompt",
        "stream-batch" => "--stream-batch",
        "similarity-threshold" => "--similarity-threshold",
        "mode" if key.starts_with("pose.") => "--pose",
        "model" if key.starts_with("mask.") => "--mask-model",
        "file" if key.starts_with("mask.") => "--mask-file",
        "also-file" => "--mask-also-file",
        "chroma" if key.starts_with("mask.") => "--mask-chroma",
        "mask" => "--mask",
        "model" => "--pose-model",
        "controlnet-scale" => "--controlnet-scale",
        "feedback" => "--feedback",
        "path" => "output",
        "uri" => "input",
        _ => "option",
    }
}

/// A checked pipeline: everything a run needs to know, before anything opens.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub origin: Origin,
    pub mode: Mode,
    /// Statistics log lines this often (None: only at the end).
    pub stats_interval: Option<Duration>,
    pub source: SourceSpec,
    /// The model folder, its manifest read and checked (no session loaded).
    pub model: ModelFolder,
    /// The working size when the file sets one; else the source's size cropped to `multiple`.
    pub size: Option<WorkingSize>,
    /// What working-size sides must be multiples of for this model and schedule.
    pub multiple: u32,
    pub params: Params,
    pub schedule: Schedule,
    pub engine: Engine,
    /// Pose-guided generation (`[pose]`).
    pub pose: Option<PoseSpec>,
    /// Restyle only part of the frame (`[mask]`).
    pub mask: Option<crate::mask::PipelineMask>,
    pub sinks: Vec<SinkSpec>,
    /// `[params] transition-frames` and `feedback`: how changes blend in and how much of the last output
    /// carries over.
    pub temporal: Temporal,
    /// `[control]`: live-control inputs.
    pub control: control::ControlSpec,
}

/// How frames follow each other: prompt transitions and latent feedback (`[params]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temporal {
    pub transition_frames: u32,
    pub feedback: f64,
}

impl Temporal {
    /// A live prompt change blends in over this many frames unless the file says otherwise (a third of a
    /// second at 30 fps).
    pub const DEFAULT_TRANSITION_FRAMES: u32 = 10;

    fn parse(file: &ParamsFile, origin: &Origin) -> Result<Temporal> {
        let transition_frames = origin.knob_int(&knobs::TRANSITION_FRAMES, &file.transition_frames)?;
        let feedback = origin.knob_float(&knobs::FEEDBACK, &file.feedback)?;
        Ok(Temporal {
            transition_frames: transition_frames.map_or(Self::DEFAULT_TRANSITION_FRAMES, |n| n as u32),
            feedback: feedback.unwrap_or(0.0),
        })
    }
}

/// `[pose]` checked here; [`PoseSpec`] itself is declared with the pose code that reads it ([`crate::pose`]).
impl PoseSpec {
    pub fn parse(file: &PoseFile, origin: &Origin) -> Result<PoseSpec> {
        let err = |key: &str, problem: String| origin.error(&format!("pose.{key}"), problem);
        let txt2img = match origin.knob(&knobs::POSE_MODE, &file.mode)? {
            Some(Checked::Choice(mode)) => mode == "txt2img",
            _ => true,
        };
        let controlnet_scale = origin.knob_float(&knobs::CONTROLNET_SCALE, &file.controlnet_scale)?.unwrap_or(1.0);
        let threshold = origin
            .knob_float(&knobs::POSE_THRESHOLD, &file.threshold)?
            .map_or(crate::pose::movenet::DEFAULT_THRESHOLD, |t| t as f32);
        let defaults = SmoothingSettings::default();
        let mut smoothing = SmoothingSettings { gate: f64::from(threshold), ..defaults };
        smoothing.min_cutoff =
            origin.knob_float(&knobs::POSE_MIN_CUTOFF, &file.min_cutoff)?.unwrap_or(defaults.min_cutoff);
        smoothing.beta = origin.knob_float(&knobs::POSE_BETA, &file.beta)?.unwrap_or(defaults.beta);
        smoothing.d_cutoff = origin.knob_float(&knobs::POSE_D_CUTOFF, &file.d_cutoff)?.unwrap_or(defaults.d_cutoff);
        smoothing.hold_s = origin.knob_float(&knobs::POSE_HOLD_S, &file.hold_s)?.unwrap_or(defaults.hold_s);
        let controlnet_scale = controlnet_scale as f32;
        let model = file.model.clone().unwrap_or_else(model::default_pose_model);
        if !model.exists() {
            return Err(err(
                "model",
                format!(
                    "{}: no such file or folder (a pose model folder with a pose.toml — DWPose: yolox_l.onnx + \
                     dw-ll_ucoco_384.onnx, see scripts/export_pose.py fetch — or a MoveNet SinglePose ONNX model, or a \
                     folder holding one)",
                    model.display()
                ),
            ));
        }
        Ok(PoseSpec { model, txt2img, controlnet_scale, threshold, smoothing })
    }
}

/// How frames run through the models (`[engine]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Engine {
    /// `stream-batch`: 1 frame at a time, k frames per batch (1 step), or the denoising batch (= steps).
    pub batch: BatchMode,
    /// `cuda-graph`: capture the models' CUDA graphs (CUDA / TensorRT providers; ignored on the CPU).
    pub cuda_graph: bool,
    /// `similarity-threshold`, `similarity-max-skips`: live runs reuse the last output for a near-identical
    /// frame by default; offline runs convert every frame unless the file asks.
    pub similarity: SimilaritySettings,
    /// `tensorrt-fp16`: which models TensorRT builds in fp16 (`auto`: UNet, ControlNet, VAE unless model.toml
    /// marks it fp32-only; see [`crate::infer::tensorrt`]).
    pub tensorrt_fp16: crate::infer::tensorrt::Fp16,
}

impl Engine {
    fn parse(file: &EngineFile, mode: Mode, schedule: &Schedule, origin: &Origin) -> Result<Engine> {
        let steps = schedule.timesteps().len();
        let batch = match origin.knob_int(&knobs::STREAM_BATCH, &file.stream_batch)? {
            None => BatchMode::Single,
            // Together with the steps: the one check of that pair.
            Some(k) => BatchMode::choose(k as usize, steps).map_err(|e| origin.error("engine.stream-batch", e))?,
        };
        let mut similarity = SimilaritySettings::default_for(mode == Mode::Live);
        if let Some(t) = origin.knob_float(&knobs::SIMILARITY_THRESHOLD, &file.similarity_threshold)? {
            similarity.threshold = t as f32;
        }
        if let Some(n) = origin.knob_int(&knobs::SIMILARITY_MAX_SKIPS, &file.similarity_max_skips)? {
            similarity.max_skips = n as u32;
        }
        let cuda_graph = matches!(origin.knob(&knobs::CUDA_GRAPH, &file.cuda_graph)?, Some(Checked::Bool(true)));
        let tensorrt_fp16 = match origin.knob(&knobs::TENSORRT_FP16, &file.tensorrt_fp16)? {
            Some(Checked::Choice(word)) => {
                crate::infer::tensorrt::Fp16::ALL.into_iter().find(|f| f.as_str() == word).unwrap_or_default()
            }
            _ => Default::default(),
        };
        Ok(Engine { batch, cuda_graph, similarity, tensorrt_fp16 })
    }
}

/// Seconds between statistics lines: 0 (only at the end) to a day.
const MAX_STATS_INTERVAL_S: f64 = 86_400.0;
/// A camera gap that ends the run: from a tenth of a second to an hour.
const NO_FRAME_TIMEOUT_RANGE_S: (f64, f64) = (0.1, 3600.0);

impl Pipeline {
    /// Read a pipeline file, apply `--set key=value` overrides (values are TOML, or plain strings when they do
    /// not parse as TOML), and check everything.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Pipeline {
            path: path.to_path_buf(),
            problem: if e.kind() == std::io::ErrorKind::NotFound { "no such file".into() } else { e.to_string() },
        })?;
        Pipeline::parse_str(&text, path, overrides)
    }

    /// [`Pipeline::load`] on text already read (`path` names it in messages).
    pub fn parse_str(text: &str, path: &Path, overrides: &[String]) -> Result<Pipeline> {
        let bad = |problem: String| Error::Pipeline { path: path.to_path_buf(), problem };
        let file = overrides::read(text, overrides).map_err(bad)?;
        // A knob's refusal says where its value came from, as the file's own errors do.
        Pipeline::from_file(file, Origin::File(path.to_path_buf())).map_err(|e| match e {
            Error::Pipeline { path, problem } => {
                let key = problem.split(':').next().unwrap_or("");
                let place = if knobs::find(key).is_some_and(|k| k.key == key) {
                    overrides::where_from(text, overrides, key)
                } else {
                    String::new()
                };
                Error::Pipeline { path, problem: problem + &place }
            }
            other => other,
        })
    }

    /// Check a pipeline as written (in a file, or made from flags).
    pub fn from_file(file: PipelineFile, origin: Origin) -> Result<Pipeline> {
        let err = |key: &str, problem: String| origin.error(key, problem);
        let stats_interval = match file.stats_interval_s {
            None => Some(Duration::from_secs(5)),
            Some(s) => Some(parse_seconds(s, 0.0, MAX_STATS_INTERVAL_S).map_err(|e| err("stats-interval-s", e))?)
                .filter(|d| !d.is_zero()),
        };
        let source = source_spec(file.source, &origin)?;
        let sinks =
            file.sinks.into_iter().enumerate().map(|(i, s)| sink_spec(i, s, &origin)).collect::<Result<Vec<_>>>()?;
        if sinks.is_empty() {
            return Err(err("sink", "no [[sink]]: add at least one (window, file, stream, v4l2, png or null)".into()));
        }
        if sinks.iter().filter(|s| matches!(s.kind, SinkKind::Window { .. })).count() > 1 {
            return Err(err("sink", "at most one window sink".into()));
        }
        let dir = match (&file.model.dir, &file.pose) {
            (None, Some(_)) => model::default_pose_folder(),
            (dir, _) => model_folder(dir.as_deref()),
        };
        let dir = dir.map_err(|e| match (&origin, e) {
            (Origin::File(_), Error::ModelFolder { path, problem }) => {
                err("model.dir", format!("{}: {problem}", path.display()))
            }
            (_, e) => e,
        })?;
        let model = ModelFolder::open(&dir)?;
        let pose = file.pose.as_ref().map(|p| PoseSpec::parse(p, &origin)).transpose()?;
        let mask = file.mask.as_ref().map(|m| crate::mask::PipelineMask::parse(m, &origin)).transpose()?;
        if mask.is_some() && pose.is_some() {
            return Err(err("mask", "[mask] with [pose] is not supported yet: use one or the other".into()));
        }
        let mut params = resolve_params(&file.params, &model, &origin)?;
        if let Some(pose) = &pose {
            if model.controlnet.is_none() {
                return Err(origin.error(
                    "model.dir",
                    format!(
                        "{}: [pose] needs a model folder with an OpenPose ControlNet ([files] controlnet and \
                         unet-controlnet; scripts/export_models.py real ... --controlnet openpose)",
                        model.dir.display()
                    ),
                ));
            }
            if pose.txt2img && params.timesteps.is_none() {
                // txt2img runs the LCM schedule from the top (strength 1).
                params.strength = 1.0;
            }
        }
        let schedule = check_schedule(&params, &model, &origin)?;
        let multiple = model.size_multiple_for(&schedule);
        let size = match origin.knob(&knobs::SIZE, &file.model.size)? {
            Some(Checked::Size(w, h)) => {
                // The knob's range, then the multiple this model and schedule need.
                let name = knobs::SIZE.name(origin.spelling());
                let refuse = |e: String| match &origin {
                    Origin::Flags => Error::InvalidParameter { what: name, problem: e },
                    Origin::File(_) => err(name, e),
                };
                Some(WorkingSize::new(w, h, multiple).map_err(|e| refuse(format!("{e} ({})", model.name)))?)
            }
            _ => None,
        };
        let engine = Engine::parse(&file.engine, file.mode, &schedule, &origin)?;
        let temporal = Temporal::parse(&file.params, &origin)?;
        if temporal.feedback > 0.0 && pose.as_ref().is_some_and(|p| p.txt2img) {
            return Err(err("params.feedback", "pose txt2img has no input latent to blend into (use img2img)".into()));
        }
        let control = control::ControlSpec::parse(&file.control, file.mode, &origin)?;
        if matches!(source, SourceSpec::Whip { .. }) && control.http.is_none() {
            return Err(err(
                "source",
                "a whip source is served by the control server: set [control] http (e.g. \"127.0.0.1:7860\")".into(),
            ));
        }
        if let Some(s) = sinks.iter().find(|s| matches!(s.kind, SinkKind::Whep { .. }))
            && control.http.is_none()
        {
            return Err(err(
                &format!("sink.{}", s.index),
                "a whep sink is served by the control server: set [control] http (e.g. \"127.0.0.1:7860\")".into(),
            ));
        }
        Ok(Pipeline {
            origin,
            mode: file.mode,
            stats_interval,
            source,
            model,
            size,
            multiple,
            params,
            schedule,
            engine,
            pose,
            mask,
            sinks,
            temporal,
            control,
        })
    }

    /// The sinks that apply on this machine (their `only-when`), checked against it: at least one, and a window
    /// only where there is a display.
    pub fn active_sinks(&self, display: bool) -> Result<Vec<&SinkSpec>> {
        let active: Vec<&SinkSpec> = self.sinks.iter().filter(|s| s.applies(display)).collect();
        let err = |problem: &str| self.origin.error("sink", problem);
        if active.is_empty() {
            return Err(err(if display {
                "no sink applies here (a display is present): check the sinks' only-when"
            } else {
                "no sink applies here (no display): check the sinks' only-when"
            }));
        }
        if !display && active.iter().any(|s| matches!(s.kind, SinkKind::Window { .. })) {
            return Err(err(
                "a window sink needs a display (DISPLAY or WAYLAND_DISPLAY); give it only-when = \"display\" to skip it",
            ));
        }
        Ok(active)
    }
}

/// The model folder named: a path (anything with a `/`, or that exists), or a bare name looked up in the models
/// folders; none named: the default model.
pub fn model_folder(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        None => model::default_folder(),
        Some(d) if d.as_os_str().is_empty() => {
            Err(Error::ModelFolder { path: d.to_path_buf(), problem: "is empty (name a model folder)".into() })
        }
        Some(d) if d.components().count() > 1 || d.exists() => Ok(d.to_path_buf()),
        Some(name) => model::find_named(&name.to_string_lossy()),
    }
}

/// Reads the untyped values of one `kind`-tagged table, naming `table.key` when one is wrong.
struct Reader<'a> {
    origin: &'a Origin,
    table: String,
}

impl Reader<'_> {
    fn err(&self, key: &str, problem: impl std::fmt::Display) -> Error {
        self.origin.error(&format!("{}.{key}", self.table), problem)
    }

    fn wrong_type(&self, key: &str, value: &toml::Value, expected: &str) -> Error {
        self.err(key, format!("{} is {}, expected {expected}", show(value), value.type_str()))
    }

    fn int<T: TryFrom<i64>>(&self, key: &str, value: Any, min: i64, max: i64) -> Result<Option<T>> {
        match value {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => parse_int(n, min, max).map(Some).map_err(|e| self.err(key, e)),
            Some(v) => Err(self.wrong_type(key, &v, &format!("an integer from {min} to {max}"))),
        }
    }

    fn seconds(&self, key: &str, value: Any, min: f64, max: f64) -> Result<Option<Duration>> {
        let s = match value {
            None => return Ok(None),
            Some(toml::Value::Integer(n)) => n as f64,
            Some(toml::Value::Float(x)) => x,
            Some(v) => return Err(self.wrong_type(key, &v, "a number of seconds")),
        };
        parse_seconds(s, min, max).map(Some).map_err(|e| self.err(key, e))
    }

    fn string(&self, key: &str, value: Any) -> Result<Option<String>> {
        match value {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => Err(self.err(key, "is empty")),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, &v, "a string")),
        }
    }

    fn required_string(&self, key: &str, value: Any) -> Result<String> {
        self.string(key, value)?.ok_or_else(|| self.err(key, "is missing"))
    }

    fn boolean(&self, key: &str, value: Any) -> Result<Option<bool>> {
        match value {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong_type(key, &v, "true or false")),
        }
    }

    /// One of the names of a kebab-case enum (`view`, `only-when`, `format`).
    fn choice<T: serde::de::DeserializeOwned>(&self, key: &str, value: Any, names: &str) -> Result<Option<T>> {
        match value {
            None => Ok(None),
            Some(v) => T::deserialize(v.clone())
                .map(Some)
                .map_err(|_| self.err(key, format!("{}: expected {names}", show(&v)))),
        }
    }

    fn view(&self, value: Any) -> Result<Option<View>> {
        self.choice("view", value, "\"output\", \"input\", \"side-by-side\", \"pose\" or \"mask\"")
    }

    fn only_when(&self, value: Any) -> Result<Option<When>> {
        self.choice("only-when", value, "\"display\" or \"no-display\"")
    }

    /// `no-frame-timeout-s`: how long a live source may deliver nothing.
    fn no_frame_timeout(&self, value: Any) -> Result<Option<Duration>> {
        let (min, max) = NO_FRAME_TIMEOUT_RANGE_S;
        self.seconds("no-frame-timeout-s", value, min, max)
    }

    fn fps(&self, value: Any) -> Result<Fps> {
        match value {
            None => Ok(Fps::whole(DEFAULT_FPS)),
            Some(v) => parse_fps(&v).map_err(|e| self.err("fps", e)),
        }
    }

    fn side(&self, key: &str, value: Any, default: u32) -> Result<u32> {
        Ok(self.int(key, value, i64::from(MIN_SOURCE_SIDE), i64::from(MAX_SOURCE_SIDE))?.unwrap_or(default))
    }
}

fn source_spec(source: SourceFile, origin: &Origin) -> Result<SourceSpec> {
    let r = Reader { origin, table: "source".into() };
    let (default_w, default_h) = DEFAULT_SOURCE_SIZE;
    Ok(match source {
        SourceFile::TestPattern { width, height, fps, frames } => SourceSpec::TestPattern {
            width: r.side("width", width, default_w)?,
            height: r.side("height", height, default_h)?,
            fps: r.fps(fps)?,
            frames: r.int("frames", frames, 1, i64::MAX)?,
        },
        SourceFile::Images { path, fps, repeat } => SourceSpec::Images {
            path: r.required_string("path", path)?,
            fps: r.fps(fps)?,
            repeat: r.boolean("loop", repeat)?.unwrap_or(false),
        },
        SourceFile::Gstreamer { uri, pipeline, audio } => {
            let input = match (r.string("uri", uri)?, r.string("pipeline", pipeline)?) {
                (Some(u), None) => GstInput::Uri(u),
                (None, Some(p)) => GstInput::Launch(p),
                (Some(_), Some(_)) => return Err(r.err("uri", "give `uri` or `pipeline`, not both")),
                (None, None) => {
                    return Err(r.err("uri", "needs `uri` (a file or URI) or `pipeline` (ending in an appsink)"));
                }
            };
            SourceSpec::Gstreamer { input, audio: r.boolean("audio", audio)?.unwrap_or(true) }
        }
        SourceFile::Webcam { device, width, height, fps, format, no_frame_timeout_s } => SourceSpec::Webcam {
            device: match device {
                None => None,
                Some(toml::Value::Integer(i)) => {
                    Some(DeviceSelector::Index(parse_int(i, 0, i64::from(u32::MAX)).map_err(|e| r.err("device", e))?))
                }
                Some(other) => r.string("device", Some(other))?.map(DeviceSelector::Name),
            },
            width: r.side("width", width, default_w)?,
            height: r.side("height", height, default_h)?,
            fps: r.fps(fps)?,
            format: r.choice("format", format, "\"auto\", \"mjpeg\" or \"yuyv\"")?.unwrap_or_default(),
            no_frame_timeout: r.no_frame_timeout(no_frame_timeout_s)?.unwrap_or(DEFAULT_NO_FRAME_TIMEOUT),
        },
        SourceFile::Whip { width, height, fps, no_frame_timeout_s } => SourceSpec::Whip {
            width: r.side("width", width, default_w)?,
            height: r.side("height", height, default_h)?,
            fps: r.fps(fps)?,
            no_frame_timeout: r.no_frame_timeout(no_frame_timeout_s)?.unwrap_or(DEFAULT_WHIP_WAIT),
        },
    })
}

/// How long a WHIP source waits for a publisher (to connect, or to come back) before the run ends.
pub const DEFAULT_WHIP_WAIT: Duration = Duration::from_secs(600);

fn sink_spec(index: usize, sink: SinkFile, origin: &Origin) -> Result<SinkSpec> {
    let r = Reader { origin, table: format!("sink.{index}") };
    let (kind, only_when) = match sink {
        SinkFile::Window { view, only_when } => {
            (SinkKind::Window { view: r.view(view)?.unwrap_or(View::SideBySide) }, r.only_when(only_when)?)
        }
        SinkFile::File { path, view, audio, quality, only_when } => {
            let path = PathBuf::from(r.required_string("path", path)?);
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            if !["mp4", "mkv", "mov"].contains(&ext.as_str()) {
                return Err(r.err(
                    "path",
                    format!("{} must end in .mp4, .mkv or .mov (H.264 in that container)", path.display()),
                ));
            }
            let kind = SinkKind::File {
                path,
                view: r.view(view)?.unwrap_or_default(),
                audio: r.boolean("audio", audio)?.unwrap_or(true),
                quality: r.int("quality", quality, 0, i64::from(MAX_QUALITY))?.unwrap_or(DEFAULT_QUALITY),
            };
            (kind, r.only_when(only_when)?)
        }
        SinkFile::Stream { url, view, bitrate_kbps, only_when } => {
            let url = StreamUrl::parse(&r.required_string("url", url)?).map_err(|e| r.err("url", e))?;
            let kind = SinkKind::Stream {
                url,
                view: r.view(view)?.unwrap_or_default(),
                bitrate_kbps: r
                    .int("bitrate-kbps", bitrate_kbps, 1, i64::from(MAX_BITRATE_KBPS))?
                    .unwrap_or(DEFAULT_BITRATE_KBPS),
            };
            (kind, r.only_when(only_when)?)
        }
        SinkFile::V4l2 { device, view, only_when } => {
            let device = r.string("device", device)?.map_or_else(|| PathBuf::from("/dev/video10"), PathBuf::from);
            (SinkKind::V4l2 { device, view: r.view(view)?.unwrap_or_default() }, r.only_when(only_when)?)
        }
        SinkFile::Png { dir, view, every, only_when } => {
            let kind = SinkKind::Png {
                dir: PathBuf::from(r.required_string("dir", dir)?),
                view: r.view(view)?.unwrap_or_default(),
                every: r.int("every", every, 1, i64::MAX)?.unwrap_or(1),
            };
            (kind, r.only_when(only_when)?)
        }
        SinkFile::Null { only_when } => (SinkKind::Null, r.only_when(only_when)?),
        SinkFile::Whep { view, max_viewers, only_when } => {
            let kind = SinkKind::Whep {
                view: r.view(view)?.unwrap_or_default(),
                max_viewers: r.int("max-viewers", max_viewers, 1, 64)?.unwrap_or(crate::control::DEFAULT_MAX_VIEWERS),
            };
            (kind, r.only_when(only_when)?)
        }
    };
    Ok(SinkSpec { index, only_when, kind })
}

/// The schedule `params` run on this model (errors name the key or flag that set the bad value).
pub fn check_schedule(params: &Params, folder: &ModelFolder, origin: &Origin) -> Result<Schedule> {
    params.check(&Lcm::new(folder.scheduler.clone())).map_err(|e| match e {
        Error::InvalidParameter { what, problem } => origin.error(&format!("params.{what}"), problem),
        other => other,
    })
}

/// The diffusion parameters: the given values over the model's defaults, each in the range it is used in.
pub fn resolve_params(given: &ParamsFile, folder: &ModelFolder, origin: &Origin) -> Result<Params> {
    let mut params = Params::defaults_for(folder);
    if let Some(p) = origin.knob_text(&knobs::PROMPT, &given.prompt)? {
        params.prompt = p;
    }
    if let Some(p) = origin.knob_text(&knobs::NEGATIVE_PROMPT, &given.negative_prompt)? {
        params.negative_prompt = p;
    }
    if let Some(s) = origin.knob_int(&knobs::STEPS, &given.steps)? {
        params.steps = s as usize;
    }
    if let Some(s) = origin.knob_float(&knobs::STRENGTH, &given.strength)? {
        params.strength = s;
    }
    if let Some(g) = origin.knob_float(&knobs::GUIDANCE, &given.guidance)? {
        params.guidance = g;
    }
    if let Some(seed) = origin.knob_int(&knobs::SEED, &given.seed)? {
        params.seed = seed as u64;
    }
    if let Some(Checked::IntList(list)) = origin.knob(&knobs::TIMESTEPS, &given.timesteps)? {
        // The model's own range (its training steps) is the schedule's check, with the others.
        params.timesteps = list.map(|l| l.into_iter().map(|t| t as u32).collect());
    }
    Ok(params)
}

/// Whether a display is available for windows.
pub fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// toml/serde messages as one line (see [`one_line`]).
pub(crate) fn message(e: &impl std::fmt::Display) -> String {
    one_line(&e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, overrides: &[&str]) -> Result<Pipeline> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-sd-turbo");
        Pipeline::parse_str(&text.replace("TINY", tiny), Path::new("p.toml"), &overrides)
    }

    const GOOD: &str = r#"
mode = "offline"
[source]
kind = "test-pattern"
frames = 10
[model]
dir = "TINY"
size = [64, 64]
[params]
prompt = "a"
[[sink]]
kind = "png"
dir = "out"
[[sink]]
kind = "null"
"#;

    #[test]
    fn parses_and_overrides() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.mode, Mode::Offline);
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(c.size.unwrap().dims(), (64, 64));
        let c = parse(GOOD, &["params.prompt=a cat", "params.steps=3", "sink.0.dir=\"elsewhere\""]).unwrap();
        assert_eq!(c.params.prompt, "a cat");
        assert_eq!(c.params.steps, 3);
        assert!(matches!(&c.sinks[0].kind, SinkKind::Png { dir, .. } if dir == Path::new("elsewhere")));
    }

    #[test]
    fn unknown_keys_and_kinds_name_the_line() {
        let err = parse(&GOOD.replace("frames = 10", "frames = 10\nframez = 3"), &[]).unwrap_err().to_string();
        assert!(err.contains("framez") && err.contains("line 6"), "{err}");
        let err = parse(&GOOD.replace("kind = \"null\"", "kind = \"hologram\""), &[]).unwrap_err().to_string();
        assert!(err.contains("hologram") && err.contains("line"), "{err}");
        let err = parse("[source\nkind=", &[]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = parse(GOOD, &["params.stepz=3"]).unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
        let err = parse(GOOD, &["params.steps=\"many\""]).unwrap_err().to_string();
        assert!(err.contains("params.steps"), "{err}");
    }

    #[test]
    fn values_are_checked_where_they_are_used() {
        for (from, to, needle) in [
            ("size = [64, 64]", "size = [60, 64]", "model.size"),
            ("size = [64, 64]", "size = [64]", "model.size"),
            ("kind = \"null\"", "kind = \"stream\"\nurl = \"tcp://x:1\"", "scheme"),
            ("kind = \"null\"", "kind = \"stream\"\nurl = \"udp://999.1.1.1:5000\"", "sink.1.url"),
            ("kind = \"null\"", "kind = \"file\"\npath = \"x.avi\"", ".mp4"),
            ("frames = 10", "frames = 10\nfps = 0", "source.fps"),
            ("frames = 10", "frames = 10\nfps = 1e-300", "source.fps"),
            ("frames = 10", "frames = 0", "source.frames"),
            ("mode = \"offline\"", "stats-interval-s = 1e300", "stats-interval-s"),
            ("prompt = \"a\"", "steps = 9", "params.steps"),
            ("prompt = \"a\"", "strength = nan", "params.strength"),
            ("prompt = \"a\"", "timesteps = [999, -1]", "params.timesteps"),
            ("prompt = \"a\"", "steps = 4\nstrength = 0.05", "params.strength"),
        ] {
            let err = parse(&GOOD.replace(from, to), &[]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{to}");
            assert!(err.to_string().contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn one_schedule_decides_the_size_multiple() {
        // Strength 0 runs the VAE only: any multiple of 8 will do.
        let c = parse(&GOOD.replace("size = [64, 64]", "size = [24, 40]"), &["params.strength=0"]).unwrap();
        assert!(c.schedule.is_vae_only());
        assert_eq!(c.multiple, 8);
        assert!(parse(&GOOD.replace("size = [64, 64]", "size = [24, 40]"), &[]).is_err());
    }
}
