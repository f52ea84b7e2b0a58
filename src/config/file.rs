//! The pipeline file as written: serde types that mirror the TOML (kebab-case keys, `kind` tags, unknown keys
//! rejected). Values are kept untyped here ([`Any`]) so that a wrong one, of any type, reaches the typed parse
//! ([`super::Pipeline`]): a knob's declaration ([`crate::knobs`]) checks it and names it with its range, the
//! same way every other entry point does. They
//! serialize back to the same TOML, so `--set` applies to a pipeline made as a value (`bench`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Mode;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineFile {
    #[serde(default)]
    pub mode: Mode,
    pub source: SourceFile,
    #[serde(default)]
    pub model: ModelFile,
    #[serde(default)]
    pub params: ParamsFile,
    #[serde(default)]
    pub engine: EngineFile,
    /// Pose-guided generation (OpenPose ControlNet); absent: plain img2img.
    pub pose: Option<PoseFile>,
    /// Restyle only part of the frame (a person mask, faces, a chroma key, a mask image or video).
    pub mask: Option<MaskFile>,
    /// Live control inputs.
    #[serde(default)]
    pub control: ControlFile,
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkFile>,
    /// Seconds between statistics log lines (0 = only at the end).
    pub stats_interval_s: Option<f64>,
}

/// A value as written. Inside `kind`-tagged tables serde buffers the table and its type errors lose the key,
/// so their values stay untyped here and [`super::Pipeline`] reads each one, naming the key when it is wrong.
pub type Any = Option<toml::Value>;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum SourceFile {
    TestPattern {
        width: Any,
        height: Any,
        fps: Any,
        frames: Any,
    },
    Images {
        path: Any,
        fps: Any,
        #[serde(rename = "loop")]
        repeat: Any,
    },
    Gstreamer {
        uri: Any,
        pipeline: Any,
        audio: Any,
    },
    Webcam {
        device: Any,
        width: Any,
        height: Any,
        fps: Any,
        format: Any,
        no_frame_timeout_s: Any,
    },
    /// A WHIP publisher (OBS 30+, a browser) at `POST /whip` on the control server.
    Whip {
        width: Any,
        height: Any,
        fps: Any,
        no_frame_timeout_s: Any,
    },
}

impl Default for SourceFile {
    fn default() -> Self {
        SourceFile::TestPattern { width: None, height: None, fps: None, frames: None }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelFile {
    pub dir: Option<PathBuf>,
    /// `[W, H]` or `"WxH"`.
    pub size: Any,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ParamsFile {
    pub prompt: Any,
    pub negative_prompt: Any,
    pub steps: Any,
    pub strength: Any,
    pub guidance: Any,
    pub seed: Any,
    pub timesteps: Any,
    /// A live prompt change blends the embeddings over this many frames (0: a cut).
    pub transition_frames: Any,
    /// Latent feedback: the fraction of the last output latent blended into the next input latent.
    pub feedback: Any,
}

/// How frames run through the models (`[engine]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineFile {
    /// Frames per UNet batch (1 step) or the denoising batch (= steps).
    pub stream_batch: Any,
    /// ONNX Runtime CUDA graphs for the models (CUDA / TensorRT providers).
    pub cuda_graph: Any,
    /// Re-emit the last output when a frame differs from the last processed one by less than this (0 = off).
    pub similarity_threshold: Any,
    /// At most this many re-emitted frames in a row.
    pub similarity_max_skips: Any,
    /// TensorRT engines in fp16: "auto", "on" or "off".
    pub tensorrt_fp16: Any,
}

/// `[control]`: where a running pipeline takes changes from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlFile {
    /// HTTP + WebSocket endpoint, `host:port`.
    pub http: Option<String>,
    /// OSC over UDP, `host:port`.
    pub osc: Option<String>,
    /// Bearer token every HTTP/WebSocket request must carry.
    pub token: Option<String>,
    /// A second token that opens only watching (`/whep`), for viewers who must not change anything.
    pub view_token: Option<String>,
    /// Let OSC (which has no authentication) listen on a non-local address.
    pub osc_allow_remote: Option<bool>,
    /// `key=value` lines on stdin (default: on in live mode).
    pub stdin: Option<bool>,
    /// Prompts the window's number keys 1-9 switch to.
    pub presets: Option<Vec<String>>,
}

/// `[pose]`: the pose model, how the ControlNet uses the skeleton, and the keypoint smoothing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoseFile {
    pub model: Option<PathBuf>,
    /// "txt2img" (a character from the pose alone) or "img2img" (the frame, guided by its pose).
    pub mode: Any,
    pub controlnet_scale: Any,
    pub threshold: Any,
    pub min_cutoff: Any,
    pub beta: Any,
    pub d_cutoff: Any,
    pub hold_s: Any,
}

/// `[mask]`: where the mask comes from and how it is shaped (the knobs `mask.*`), and its files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaskFile {
    /// "segmenter", "faces", "chroma", "image" or "video".
    pub source: Any,
    /// The mask image or video (`source = "image"` or `"video"`), white = change.
    pub file: Option<PathBuf>,
    /// A second source, joined with the first by `combine`; its image or video in `also-file`.
    pub also: Any,
    pub also_file: Option<PathBuf>,
    pub combine: Any,
    /// The MediaPipe models' folder or file (segmenter, faces).
    pub model: Option<PathBuf>,
    /// The key (`source = "chroma"`): `RRGGBB` or `RRGGBB:TOLERANCE` (default 00ff00, a green screen).
    pub chroma: Option<String>,
    pub enabled: Any,
    pub keep_faces: Any,
    pub invert: Any,
    pub threshold: Any,
    pub grow_px: Any,
    pub feather_px: Any,
    pub smoothing: Any,
    pub composite: Any,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum SinkFile {
    Window { view: Any, only_when: Any },
    File { path: Any, view: Any, audio: Any, quality: Any, only_when: Any },
    Stream { url: Any, view: Any, bitrate_kbps: Any, only_when: Any },
    V4l2 { device: Any, view: Any, only_when: Any },
    Png { dir: Any, view: Any, every: Any, only_when: Any },
    Null { only_when: Any },
    Whep { view: Any, max_viewers: Any, only_when: Any },
}
