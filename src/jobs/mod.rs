//! The library side of each command: flags (as plain values) parsed into checked jobs, and the jobs run. The
//! command line (`main.rs`) only maps clap's flags onto these requests and errors onto exit codes; tests drive
//! the same functions.
//!
//! Flags are parsed by the same code as pipeline files ([`crate::config`]), so `convert --steps 9` and
//! `steps = 9` in a file are refused by the same check, each naming what was given (`--steps`, `params.steps`).
//!
//! One file per command (`convert`, `img2img`, `schedule`, `models check`, `bench`, `pose`, `mask`, `flicker`); here
//! what they share: the diffusion flags ([`DiffusionRequest`]), claiming a command's files before any work
//! ([`claim_paths`]) and writing reports ([`write_text`]).

mod bench;
mod convert;
mod flicker;
mod img2img;
mod mask;
mod models;
mod pose;
mod schedule;

use std::path::{Path, PathBuf};

pub use self::bench::{BenchJob, BenchRequest, MAX_BENCH_FRAMES};
pub use self::convert::ConvertRequest;
pub use self::flicker::{FlickerReport, FlickerRequest};
pub use self::img2img::{Img2ImgJob, Img2ImgReport, Img2ImgRequest};
pub use self::mask::{FaceJson, MaskFrameJson, MaskReport, MaskRequest, MaskVideoJob, MaskVideoReport};
pub use self::models::check_model;
pub use self::pose::{
    PersonJson, PoseFrameJson, PoseInputKind, PoseReport, PoseRequest, PoseVideoJob, PoseVideoJson, PoseVideoReport,
};
pub use self::schedule::{ScheduleJson, ScheduleRequest};
use crate::config::file::ParamsFile;
use crate::config::{self, Origin};
use crate::diffusion::Params;
use crate::diffusion::scheduler::Schedule;
use crate::error::Result;
use crate::model::ModelFolder;
use crate::paths::{NamedPath, OutputLock};

/// Claim a command's files before any work: every output is a file of its own (no input or other output under
/// another name), its folder can be written, and no other latentcam writes it (the locks, held until dropped).
pub fn claim_paths(reads: &[NamedPath], writes: &[NamedPath]) -> Result<Vec<OutputLock>> {
    crate::paths::check_distinct(reads, writes)?;
    for w in writes {
        crate::paths::probe_writable_folder(&w.path, &crate::paths::parent_folder(&w.path))?;
    }
    crate::paths::lock_outputs(writes)
}

/// A flag's value as it was typed, read the way a pipeline file reads a value (a whole number, a number, true or
/// false, else text), so that the knob's declaration ([`crate::knobs`]) checks it as it checks every entry point:
/// `--steps abc` and `steps = "abc"` are refused alike, naming the range.
pub fn flag_value(text: &str) -> toml::Value {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match t.parse::<f64>() {
        // `inf` and `nan` parse as floats; they stay numbers so the range check names them.
        Ok(x) => toml::Value::Float(x),
        Err(_) => match t {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => toml::Value::String(text.to_string()),
        },
    }
}

/// A comma-separated flag (`--timesteps 999,499`) as a list of values.
pub fn flag_list(items: &[String]) -> toml::Value {
    toml::Value::Array(items.iter().map(|i| flag_value(i)).collect())
}

/// `--size WxH` checked by the size knob's declaration (its range; the multiple is the model's check).
pub fn size_flag(text: &str) -> Result<(u32, u32)> {
    match config::Origin::Flags.knob(&crate::knobs::SIZE, &Some(flag_value(text)))? {
        Some(crate::knobs::Checked::Size(w, h)) => Ok((w, h)),
        _ => Err(crate::error::Error::internal("--size", "the size knob gave no size")),
    }
}

/// The diffusion flags every running command shares, as typed (unset: the model's defaults).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiffusionRequest {
    /// A model folder or a bare name; None: the default model.
    pub model: Option<PathBuf>,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<String>,
    pub strength: Option<String>,
    pub guidance: Option<String>,
    pub seed: Option<String>,
    pub timesteps: Option<Vec<String>>,
}

impl DiffusionRequest {
    fn params_file(&self) -> ParamsFile {
        let value = |v: &Option<String>| v.as_deref().map(flag_value);
        ParamsFile {
            prompt: Some(toml::Value::String(self.prompt.clone())),
            negative_prompt: Some(toml::Value::String(self.negative_prompt.clone())),
            steps: value(&self.steps),
            strength: value(&self.strength),
            guidance: value(&self.guidance),
            seed: value(&self.seed),
            timesteps: self.timesteps.as_deref().map(flag_list),
            ..ParamsFile::default()
        }
    }

    /// The model folder (manifest read), the parameters over its defaults, and the schedule, all checked.
    pub fn resolve(&self) -> Result<(ModelFolder, Params, Schedule)> {
        let folder = ModelFolder::open(&config::model_folder(self.model.as_deref())?)?;
        let params = config::resolve_params(&self.params_file(), &folder, &Origin::Flags)?;
        let schedule = config::check_schedule(&params, &folder, &Origin::Flags)?;
        Ok((folder, params, schedule))
    }
}

/// Write `text` to `path` (statistics, reports); a failure is an I/O error naming the file.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::paths::write_atomically(path, text.as_bytes())
}

/// The H.264 file sink of a video-to-video command (`pose`, `mask`): the whole picture, no audio.
pub(crate) fn video_file_sink(output: &Path) -> config::SinkSpec {
    config::SinkSpec {
        index: 0,
        only_when: None,
        kind: config::SinkKind::File {
            path: output.to_path_buf(),
            view: config::View::Output,
            audio: false,
            quality: config::DEFAULT_QUALITY,
        },
    }
}

/// A video file read offline, without its audio (`pose`, `mask`).
pub(crate) fn open_video_file(input: &Path) -> Result<Box<dyn crate::source::Source>> {
    let spec =
        config::SourceSpec::Gstreamer { input: config::GstInput::Uri(input.display().to_string()), audio: false };
    crate::source::open(&spec, config::Mode::Offline, false)
}

/// The pipeline of a video-to-video command (`pose`, `mask`): `source` through `processor` into the file `sink`,
/// offline, nothing else.
pub(crate) fn offline_file_parts(
    source: Box<dyn crate::source::Source>,
    processor: Box<dyn crate::pipeline::Processor>,
    sink: Box<dyn crate::sink::Sink>,
) -> crate::pipeline::Parts {
    crate::pipeline::Parts {
        source,
        annotator: None,
        processor,
        sinks: vec![("file0".into(), sink)],
        window: None,
        mode: config::Mode::Offline,
        control: None,
    }
}
