//! `latentcam convert`: a video file through the model into another, as an offline pipeline.

use std::path::PathBuf;

use super::DiffusionRequest;
use crate::config::file::{ModelFile, ParamsFile, PipelineFile, SinkFile, SourceFile};
use crate::config::{Mode, Origin, Pipeline};
use crate::error::Result;

/// `latentcam convert IN OUT ...` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConvertRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub diffusion: DiffusionRequest,
    /// `WxH`; None: the input's size cropped to the model's multiple.
    pub size: Option<String>,
    pub quality: i64,
    pub audio: bool,
    /// `--stream-batch`, `--similarity-threshold` as given (checked with the pipeline file's rules).
    pub engine: crate::config::file::EngineFile,
    /// `--pose MODE`, `--pose-model`, `--controlnet-scale` (pose-guided conversion).
    pub pose: Option<crate::config::file::PoseFile>,
    /// `--feedback`: latent feedback fraction, as typed.
    pub feedback: Option<String>,
    /// `--mask SOURCE` and the other `--mask-*` flags (restyle only part of each frame).
    pub mask: Option<crate::config::file::MaskFile>,
}

impl ConvertRequest {
    /// The offline pipeline this conversion is: a GStreamer source, the model, one file sink.
    pub fn pipeline(&self) -> Result<Pipeline> {
        // Before the model folder is read: the output being the input is the first thing to say.
        crate::paths::check_distinct(
            &[crate::paths::NamedPath::new("input", &self.input)],
            &[crate::paths::NamedPath::new("output", &self.output)],
        )?;
        let size = self.size.as_deref().map(super::flag_value);
        let file = PipelineFile {
            mode: Mode::Offline,
            source: SourceFile::Gstreamer {
                uri: Some(toml::Value::String(self.input.display().to_string())),
                pipeline: None,
                audio: Some(toml::Value::Boolean(self.audio)),
            },
            model: ModelFile { dir: self.diffusion.model.clone(), size },
            params: ParamsFile {
                feedback: self.feedback.as_deref().map(super::flag_value),
                ..self.diffusion.params_file()
            },
            engine: self.engine.clone(),
            pose: self.pose.clone(),
            mask: self.mask.clone(),
            control: Default::default(),
            sinks: vec![SinkFile::File {
                path: Some(toml::Value::String(self.output.display().to_string())),
                view: None,
                audio: Some(toml::Value::Boolean(self.audio)),
                quality: Some(toml::Value::Integer(self.quality)),
                only_when: None,
            }],
            stats_interval_s: Some(0.0),
        };
        Pipeline::from_file(file, Origin::Flags)
    }
}
