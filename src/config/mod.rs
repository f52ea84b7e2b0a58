//! Pipeline files (`pipelines/*.toml`): parsed once into types, unknown keys rejected, every error with its
//! line and column, values checked against what they may be.
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

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::one_line;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Capacity-1 drop-oldest links: the latest frame wins, no backlog, drops are counted.
    #[default]
    Live,
    /// Blocking links: every frame is processed, none dropped.
    Offline,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineConfig {
    #[serde(default)]
    pub mode: Mode,
    pub source: SourceConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub params: ParamsConfig,
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkConfig>,
    /// Seconds between statistics log lines (0 = only at the end).
    #[serde(default = "default_stats_interval")]
    pub stats_interval_s: f64,
}

fn default_stats_interval() -> f64 {
    5.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Moving, deterministic synthetic frames: runs anywhere.
    TestPattern {
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: f64,
        /// Stop after this many frames (default: run until stopped).
        frames: Option<u64>,
    },
    /// A folder of PNG/JPEG files (sorted by name) or a glob such as `shots/*.png`.
    Images {
        path: String,
        #[serde(default = "default_fps")]
        fps: f64,
        #[serde(default, rename = "loop")]
        repeat: bool,
    },
    /// A file or URI (decoded with GStreamer), or a GStreamer pipeline ending in an appsink.
    Gstreamer {
        uri: Option<String>,
        pipeline: Option<String>,
        /// Carry the audio stream over to file sinks (re-muxed, not re-encoded when the container allows).
        #[serde(default = "yes")]
        audio: bool,
    },
    /// A camera through nokhwa.
    Webcam {
        /// Index (0, 1, ...) or part of the camera's name; default the first camera.
        #[serde(default)]
        device: Option<DeviceSelector>,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: f64,
        /// Preferred pixel format from the camera.
        #[serde(default)]
        format: CameraFormat,
    },
}

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

fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelConfig {
    /// Model folder, or a bare name looked up in the models folders; default as `latentcam img2img`.
    pub dir: Option<PathBuf>,
    /// Working size `[width, height]`; default: the source's size cropped to the model's size multiple.
    pub size: Option<[u32; 2]>,
}

/// Diffusion knobs; unset ones take the model's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ParamsConfig {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub steps: Option<usize>,
    pub strength: Option<f64>,
    pub guidance: Option<f64>,
    #[serde(default)]
    pub seed: u64,
    pub timesteps: Option<Vec<u32>>,
}

impl ParamsConfig {
    /// The diffusion parameters: these values over the model's defaults.
    pub fn resolve(&self, folder: &crate::model::ModelFolder) -> crate::diffusion::Params {
        let mut params = crate::diffusion::Params::defaults_for(folder);
        params.prompt = self.prompt.clone();
        params.negative_prompt = self.negative_prompt.clone();
        params.seed = self.seed;
        params.timesteps = self.timesteps.clone();
        if let Some(s) = self.steps {
            params.steps = s;
        }
        if let Some(s) = self.strength {
            params.strength = s;
        }
        if let Some(g) = self.guidance {
            params.guidance = g;
        }
        params
    }
}

/// What a sink shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    #[default]
    Output,
    Input,
    /// Input left, output right.
    SideBySide,
}

/// Only build a sink when a display is (or is not) there: lets one pipeline file serve desktops and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Display,
    NoDisplay,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// A preview window (keys: I input, O output, S side by side, Esc/Q quit).
    Window {
        #[serde(default = "side_by_side")]
        view: View,
        #[serde(default)]
        only_when: Option<When>,
    },
    /// H.264 in MP4 / MKV / MOV by the file's extension.
    File {
        path: PathBuf,
        #[serde(default)]
        view: View,
        /// Carry the source's audio over (when it has some).
        #[serde(default = "yes")]
        audio: bool,
        /// x264 quality (0-50, lower is better; 21 is visually transparent for most content).
        #[serde(default = "default_quality")]
        quality: u32,
        #[serde(default)]
        only_when: Option<When>,
    },
    /// MPEG-TS over UDP (`udp://host:port`) or SRT (`srt://host:port`, `srt://:port` to listen).
    Stream {
        url: String,
        #[serde(default)]
        view: View,
        #[serde(default = "default_bitrate")]
        bitrate_kbps: u32,
        #[serde(default)]
        only_when: Option<When>,
    },
    /// A v4l2loopback virtual camera.
    V4l2 {
        #[serde(default = "default_v4l2_device")]
        device: PathBuf,
        #[serde(default)]
        view: View,
        #[serde(default)]
        only_when: Option<When>,
    },
    /// PNG files `frame_000000.png`, ... in a folder.
    Png {
        dir: PathBuf,
        #[serde(default)]
        view: View,
        /// Write every n-th frame.
        #[serde(default = "one")]
        every: u64,
        #[serde(default)]
        only_when: Option<When>,
    },
    /// Discards frames (benchmarks, tests).
    Null {
        #[serde(default)]
        only_when: Option<When>,
    },
}

fn side_by_side() -> View {
    View::SideBySide
}
fn default_quality() -> u32 {
    21
}
fn default_bitrate() -> u32 {
    2500
}
fn default_v4l2_device() -> PathBuf {
    PathBuf::from("/dev/video10")
}
fn one() -> u64 {
    1
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::TestPattern { .. } => "test-pattern",
            SourceConfig::Images { .. } => "images",
            SourceConfig::Gstreamer { .. } => "gstreamer",
            SourceConfig::Webcam { .. } => "webcam",
        }
    }
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Window { .. } => "window",
            SinkConfig::File { .. } => "file",
            SinkConfig::Stream { .. } => "stream",
            SinkConfig::V4l2 { .. } => "v4l2",
            SinkConfig::Png { .. } => "png",
            SinkConfig::Null { .. } => "null",
        }
    }

    pub fn only_when(&self) -> Option<When> {
        match self {
            SinkConfig::Window { only_when, .. }
            | SinkConfig::File { only_when, .. }
            | SinkConfig::Stream { only_when, .. }
            | SinkConfig::V4l2 { only_when, .. }
            | SinkConfig::Png { only_when, .. }
            | SinkConfig::Null { only_when } => *only_when,
        }
    }

    pub fn view(&self) -> View {
        match self {
            SinkConfig::Window { view, .. }
            | SinkConfig::File { view, .. }
            | SinkConfig::Stream { view, .. }
            | SinkConfig::V4l2 { view, .. }
            | SinkConfig::Png { view, .. } => *view,
            SinkConfig::Null { .. } => View::Output,
        }
    }
}

/// Whether a display is available for windows.
pub fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

impl PipelineConfig {
    /// Read and check a pipeline file, then apply `--set key=value` overrides (`params.prompt=...`,
    /// `sink.0.path=out.mp4`; values are TOML, or plain strings when they do not parse as TOML).
    pub fn load(path: &Path, overrides: &[String]) -> Result<PipelineConfig> {
        let bad = |problem: String| Error::Pipeline { path: path.to_path_buf(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(if e.kind() == std::io::ErrorKind::NotFound { "no such file".into() } else { e.to_string() })
        })?;
        // Parse the file as written first, so its errors carry the file's line and column.
        let config: PipelineConfig =
            toml::from_str(&text).map_err(|e| bad(point_at_key(&text, &one_line(&e.to_string()))))?;
        let config = if overrides.is_empty() {
            config
        } else {
            let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(one_line(&e.to_string())))?;
            for o in overrides {
                apply_override(&mut table, o).map_err(|e| bad(format!("--set {o}: {e}")))?;
            }
            PipelineConfig::deserialize(toml::Value::Table(table))
                .map_err(|e| bad(format!("after --set: {}", one_line(&e.to_string()))))?
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks serde cannot express.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match &self.source {
            SourceConfig::TestPattern { width, height, fps, .. } | SourceConfig::Webcam { width, height, fps, .. } => {
                if *width < 8 || *height < 8 || *width > 8192 || *height > 8192 {
                    return Err(format!("source size {width}x{height} is out of range (8 to 8192)"));
                }
                check_fps(*fps)?;
            }
            SourceConfig::Images { fps, .. } => check_fps(*fps)?,
            SourceConfig::Gstreamer { uri, pipeline, .. } => match (uri, pipeline) {
                (Some(_), Some(_)) => return Err("[source] gstreamer: give `uri` or `pipeline`, not both".into()),
                (None, None) => return Err("[source] gstreamer: needs `uri` (a file or URI) or `pipeline`".into()),
                _ => {}
            },
        }
        if let Some([w, h]) = self.model.size
            && (w == 0 || h == 0 || w % 8 != 0 || h % 8 != 0)
        {
            return Err(format!("[model] size {w}x{h}: sides must be positive multiples of 8"));
        }
        if self.sinks.is_empty() {
            return Err("no [[sink]]: add at least one (window, file, stream, v4l2, png or null)".into());
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            match sink {
                SinkConfig::File { path, quality, .. } => {
                    if *quality > 50 {
                        return Err(format!("sink {i} (file): quality {quality} is out of range (0 to 50)"));
                    }
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                    if !["mp4", "mkv", "mov"].contains(&ext.as_str()) {
                        return Err(format!(
                            "sink {i} (file): {} must end in .mp4, .mkv or .mov (H.264 in that container)",
                            path.display()
                        ));
                    }
                }
                SinkConfig::Stream { url, .. } => {
                    StreamUrl::parse(url).map_err(|e| format!("sink {i} (stream): {e}"))?;
                }
                SinkConfig::Png { every, .. } if *every == 0 => {
                    return Err(format!("sink {i} (png): every must be at least 1"));
                }
                _ => {}
            }
        }
        if !(self.stats_interval_s.is_finite() && self.stats_interval_s >= 0.0) {
            return Err(format!("stats-interval-s must be 0 or more, found {}", self.stats_interval_s));
        }
        Ok(())
    }

    /// The sinks to build here (those whose `only-when` matches this machine).
    pub fn active_sinks(&self, display: bool) -> Vec<(usize, &SinkConfig)> {
        self.sinks
            .iter()
            .enumerate()
            .filter(|(_, s)| match s.only_when() {
                None => true,
                Some(When::Display) => display,
                Some(When::NoDisplay) => !display,
            })
            .collect()
    }
}

/// Inside `kind`-tagged tables toml can only point at the table; for an unknown key, point at the key's line.
fn point_at_key(text: &str, message: &str) -> String {
    let Some(key) = message.split("unknown field `").nth(1).and_then(|rest| rest.split('`').next()) else {
        return message.to_string();
    };
    let found = text.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start();
        let rest = trimmed.strip_prefix(key)?;
        rest.trim_start().starts_with('=').then(|| (i + 1, line.len() - trimmed.len() + 1))
    });
    match (found, message.find("at line ")) {
        (Some((line, column)), Some(at)) => {
            let end = message[at..].find(':').map_or(message.len(), |e| at + e);
            format!("{}at line {line}, column {column}{}", &message[..at], &message[end..])
        }
        _ => message.to_string(),
    }
}

fn check_fps(fps: f64) -> std::result::Result<(), String> {
    if fps.is_finite() && fps > 0.0 && fps <= 240.0 {
        Ok(())
    } else {
        Err(format!("fps {fps} is out of range (above 0, at most 240)"))
    }
}

/// Network stream destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamUrl {
    Udp {
        host: String,
        port: u16,
    },
    /// `host` empty = listen (OBS connects as caller).
    Srt {
        host: String,
        port: u16,
    },
}

impl StreamUrl {
    pub fn parse(url: &str) -> std::result::Result<StreamUrl, String> {
        let expected = "expected udp://HOST:PORT or srt://HOST:PORT (srt://:PORT to listen)";
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}`: {expected}"))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("`{url}` has no port: {expected}"))?;
        let port: u16 =
            port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{url}`: bad port `{port}`: {expected}"))?;
        match scheme {
            "udp" if !host.is_empty() => Ok(StreamUrl::Udp { host: host.into(), port }),
            "udp" => Err(format!("`{url}` needs a host: {expected}")),
            "srt" => Ok(StreamUrl::Srt { host: host.into(), port }),
            _ => Err(format!("`{url}`: unknown scheme `{scheme}`: {expected}")),
        }
    }
}

/// `a.b.0.c=value` into a TOML table (list entries by index).
fn apply_override(table: &mut toml::Table, assignment: &str) -> std::result::Result<(), String> {
    let (key, raw) = assignment.split_once('=').ok_or("expected KEY=VALUE, e.g. params.prompt=\"a cat\"")?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, &parts, parse_value(raw.trim()));
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_path(node: &mut toml::Value, parts: &[&str], value: toml::Value) -> std::result::Result<(), String> {
    let (head, rest) = (parts[0], &parts[1..]);
    let child = match node {
        toml::Value::Table(t) if rest.is_empty() => {
            t.insert(head.to_string(), value);
            return Ok(());
        }
        toml::Value::Table(t) => t.entry(head.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(items) => {
            let len = items.len();
            let index: usize = head.parse().map_err(|_| format!("`{head}`: this is a list, index it (0, 1, ...)"))?;
            let item = items.get_mut(index).ok_or_else(|| format!("the list has {len} entries, no index {index}"))?;
            if rest.is_empty() {
                *item = value;
                return Ok(());
            }
            item
        }
        _ => return Err(format!("`{head}`: the key above it is a value, not a table")),
    };
    set_path(child, rest, value)
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const GOOD: &str = r#"
mode = "offline"
[source]
kind = "test-pattern"
frames = 10
[model]
dir = "tiny-sd-turbo"
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
        let (_d, path) = write(GOOD);
        let c = PipelineConfig::load(&path, &[]).unwrap();
        assert_eq!(c.mode, Mode::Offline);
        assert_eq!(c.sinks.len(), 2);
        let c = PipelineConfig::load(
            &path,
            &["params.prompt=a cat".into(), "params.steps=3".into(), "sink.0.dir=\"elsewhere\"".into()],
        )
        .unwrap();
        assert_eq!(c.params.prompt, "a cat");
        assert_eq!(c.params.steps, Some(3));
        assert!(matches!(&c.sinks[0], SinkConfig::Png { dir, .. } if dir == Path::new("elsewhere")));
    }

    #[test]
    fn unknown_keys_and_kinds_name_the_line() {
        let (_d, path) = write(&GOOD.replace("frames = 10", "frames = 10\nframez = 3"));
        let err = PipelineConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("framez") && err.contains("line"), "{err}");
        let (_d, path) = write(&GOOD.replace("kind = \"null\"", "kind = \"hologram\""));
        let err = PipelineConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("hologram") && err.contains("line"), "{err}");
        let (_d, path) = write("[source\nkind=");
        let err = PipelineConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let (_d, path) = write(GOOD);
        let err = PipelineConfig::load(&path, &["params.stepz=3".into()]).unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
    }

    #[test]
    fn values_are_checked() {
        for (from, to, needle) in [
            ("size = [64, 64]", "size = [60, 64]", "multiples of 8"),
            ("kind = \"null\"", "kind = \"stream\"\nurl = \"tcp://x:1\"", "scheme"),
            ("kind = \"null\"", "kind = \"file\"\npath = \"x.avi\"", ".mp4"),
            ("frames = 10", "frames = 10\nfps = 0", "fps"),
        ] {
            let (_d, path) = write(&GOOD.replace(from, to));
            let err = PipelineConfig::load(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn stream_urls() {
        assert_eq!(
            StreamUrl::parse("udp://127.0.0.1:5000").unwrap(),
            StreamUrl::Udp { host: "127.0.0.1".into(), port: 5000 }
        );
        assert_eq!(StreamUrl::parse("srt://:9000").unwrap(), StreamUrl::Srt { host: String::new(), port: 9000 });
        assert!(StreamUrl::parse("udp://:5000").is_err());
        assert!(StreamUrl::parse("udp://h:0").is_err());
    }
}
