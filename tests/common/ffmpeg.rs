//! An independent look at media files with the ffmpeg and ffprobe programs (neither GStreamer nor latentcam's own
//! code): the streams and their timing, every frame decoded, frames as RGB. Also the real-world test inputs
//! (`test_media`), made by scripts/make_test_media.sh. Each function returns ffmpeg's error output on failure.
//!
//! Rotation: `StreamInfo::rotation` is the clockwise rotation a player applies to show the picture upright (an
//! upright iPhone video says 90), what exiftool calls Rotation and ffmpeg 4 called the `rotate` tag. ffprobe 5's
//! display-matrix "rotation" is counter-clockwise: -90 for that iPhone video. ffmpeg applies the rotation when it
//! decodes (autorotate), so `decode_frames_rgb` and `display_size` give the picture as it is shown; so does a
//! JPEG's EXIF orientation (all 8, flips included).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// Where scripts/make_test_media.sh puts the test inputs: `<repo>/target/test-media`.
pub fn test_media_dir() -> PathBuf {
    super::root().join("target").join("test-media")
}

/// A real-world test input made by scripts/make_test_media.sh (phone and camera files: AAC audio, rotation,
/// 10-bit, 4:4:4, odd sizes, variable frame rate, shifted audio, EXIF stills; see the script for the list). The
/// script runs once per test process; it is idempotent and takes a lock, so test binaries may run it at once,
/// and it returns at once when everything is in place. Needs ffmpeg, not ../shared (without it the pictures are
/// ffmpeg's test pattern).
pub fn test_media(name: &str) -> PathBuf {
    static MADE: OnceLock<Result<(), String>> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let script = super::root().join("scripts").join("make_test_media.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(test_media_dir())
            .output()
            .map_err(|e| format!("running {} failed: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.is_empty() {
            eprint!("{stdout}");
        }
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}); it needs ffmpeg (scripts/setup.sh installs it):\n{stdout}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = made {
        panic!("{e}");
    }
    let path = test_media_dir().join(name);
    assert!(path.exists(), "make_test_media.sh makes no {name}");
    path
}

/// One stream as ffprobe reports it (edit lists applied). Numbers ffprobe gives as "N/A" or leaves out are None.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamInfo {
    pub index: usize,
    /// "video", "audio", "subtitle", "data".
    pub codec_type: String,
    /// "h264", "hevc", "vp9", "aac", ...
    pub codec_name: String,
    /// "High", "High 10", "High 4:4:4 Predictive", "Main 10", "LC", ...
    pub profile: Option<String>,
    /// "avc1", "hvc1", "hev1", "mp4a", ... ("[0][0][0][0]" when the container has none).
    pub codec_tag: Option<String>,
    /// Stored (coded picture) size, before rotation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub pix_fmt: Option<String>,
    /// Frames the decoder holds back for reordering (B-frames); 0 when none.
    pub has_b_frames: Option<u32>,
    pub avg_frame_rate: Option<f64>,
    pub start_time_s: Option<f64>,
    pub duration_s: Option<f64>,
    /// As the container says (MKV does not say).
    pub nb_frames: Option<u64>,
    /// Clockwise degrees a player rotates the picture by to show it (0, 90, 180 or 270); 0 when the file says
    /// nothing. From the display matrix (side data) or, with ffprobe 4, the `rotate` tag.
    pub rotation: i32,
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    /// Samples per audio frame (AAC: 1024), from the first decoded frames; None for video.
    pub frame_size: Option<u32>,
}

impl StreamInfo {
    pub fn is_video(&self) -> bool {
        self.codec_type == "video"
    }
    pub fn is_audio(&self) -> bool {
        self.codec_type == "audio"
    }
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program).args(args).output().map_err(|e| {
        format!("running {program} failed: {e} (ffmpeg is needed by this test: scripts/setup.sh installs it)")
    })
}

/// Runs ffprobe/ffmpeg and returns its stdout; an Err with its stderr when it fails or prints an error.
fn run_clean(program: &str, args: &[&str], path: &Path) -> Result<Output, String> {
    let out = run(program, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(format!("{program} on {} ({}):\n{}", path.display(), out.status, stderr.trim_end()));
    }
    Ok(out)
}

fn path_arg(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("not a UTF-8 path: {}", path.display()))
}

/// A number ffprobe wrote as a JSON number or a string ("0.479000", "25/1"); None for "N/A", "0/0" or absent.
fn number(v: &Value, key: &str) -> Option<f64> {
    let v = v.get(key)?;
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let s = v.as_str()?;
    if let Some((n, d)) = s.split_once('/') {
        let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
        return (d != 0.0).then(|| n / d);
    }
    s.parse().ok()
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn clockwise_rotation(stream: &Value) -> i32 {
    let side = stream
        .get("side_data_list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|sd| number(sd, "rotation"))
        .map(|ccw| -ccw);
    let tag = || stream.get("tags").and_then(|t| number(t, "rotate"));
    let degrees = side.or_else(tag).unwrap_or(0.0);
    (degrees.round() as i32).rem_euclid(360)
}

/// Every stream of `path` (`ffprobe -show_streams`), in file order.
pub fn streams(path: &Path) -> Result<Vec<StreamInfo>, String> {
    let p = path_arg(path)?;
    let out = run_clean("ffprobe", &["-v", "error", "-show_streams", "-of", "json", p], path)?;
    let json: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("ffprobe's JSON: {e}"))?;
    let list = json.get("streams").and_then(Value::as_array).ok_or("ffprobe listed no streams")?;
    let mut streams = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let int = |key: &str| number(s, key).map(|x| x as u32);
        let mut info = StreamInfo {
            index: number(s, "index").map_or(i, |x| x as usize),
            codec_type: string(s, "codec_type").unwrap_or_default(),
            codec_name: string(s, "codec_name").unwrap_or_default(),
            profile: string(s, "profile"),
            codec_tag: string(s, "codec_tag_string"),
            width: int("width"),
            height: int("height"),
            pix_fmt: string(s, "pix_fmt"),
            has_b_frames: int("has_b_frames"),
            avg_frame_rate: number(s, "avg_frame_rate"),
            start_time_s: number(s, "start_time"),
            duration_s: number(s, "duration"),
            nb_frames: number(s, "nb_frames").map(|x| x as u64),
            rotation: 0,
            sample_rate: int("sample_rate"),
            channels: int("channels"),
            frame_size: None,
        };
        if info.is_video() {
            info.rotation = clockwise_rotation(s);
        }
        if info.is_audio() {
            info.frame_size = audio_frame_size(path, info.index)?;
        }
        streams.push(info);
    }
    Ok(streams)
}

/// The largest sample count among the first few decoded frames of stream `index` (the first may be shortened
/// by the encoder delay).
fn audio_frame_size(path: &Path, index: usize) -> Result<Option<u32>, String> {
    let p = path_arg(path)?;
    let sel = index.to_string();
    let args = [
        "-v",
        "error",
        "-select_streams",
        &sel,
        "-read_intervals",
        "%+#4",
        "-show_entries",
        "frame=nb_samples",
        "-of",
        "csv=p=0",
        p,
    ];
    let out = run_clean("ffprobe", &args, path)?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).max())
}

fn first_of<'a>(streams: &'a [StreamInfo], kind: &str, path: &Path) -> Result<&'a StreamInfo, String> {
    streams.iter().find(|s| s.codec_type == kind).ok_or_else(|| format!("{} has no {kind} stream", path.display()))
}

/// Decodes every frame of the first video stream (`ffmpeg -v error -i P -map 0:v:0 -f null -`) and returns how
/// many there are. Anything ffmpeg reports at error level (a corrupt frame, a missing reference) is an Err: the
/// point is "every frame decodes with ffmpeg".
pub fn decoded_video_frames(path: &Path) -> Result<u64, String> {
    let p = path_arg(path)?;
    let args = [
        "-nostdin",
        "-v",
        "error",
        "-i",
        p,
        "-map",
        "0:v:0",
        "-vsync",
        "passthrough",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-nostats",
        "-",
    ];
    let out = run_clean("ffmpeg", &args, path)?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("frame="))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("ffmpeg reported no frame count for {}", path.display()))
}

/// The presentation times (s) of the first video stream's packets, in presentation order (edit lists applied).
pub fn video_packet_times(path: &Path) -> Result<Vec<f64>, String> {
    packet_times(path, "v:0", None)
}

/// The presentation times (s) of the first video stream's keyframes, in presentation order.
pub fn video_keyframe_times(path: &Path) -> Result<Vec<f64>, String> {
    let p = path_arg(path)?;
    let args = ["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", p];
    let out = run_clean("ffprobe", &args, path)?;
    let mut times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(_, flags)| flags.contains('K'))
        .filter_map(|(t, _)| t.parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn packet_times(path: &Path, select: &str, first_packets: Option<u32>) -> Result<Vec<f64>, String> {
    let p = path_arg(path)?;
    let interval = first_packets.map(|n| format!("%+#{n}"));
    let mut args = vec!["-v", "error", "-select_streams", select, "-show_entries", "packet=pts_time", "-of", "csv=p=0"];
    if let Some(interval) = &interval {
        args.extend(["-read_intervals", interval.as_str()]);
    }
    args.push(p);
    let out = run_clean("ffprobe", &args, path)?;
    // Packets without a timestamp print N/A and are left out; a packet with side data (a fragment's first, in a
    // fragmented file) prints more fields after its time: the first one is the time.
    let mut times: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(',').next()?.trim().parse().ok()).collect();
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// The earliest presentation time (s) among the first packets of the first "audio" or "video" stream.
pub fn first_packet_time(path: &Path, kind: &str) -> Result<f64, String> {
    let select = match kind {
        "audio" => "a:0",
        "video" => "v:0",
        _ => return Err(format!("first_packet_time: kind must be \"audio\" or \"video\", not {kind:?}")),
    };
    // Enough packets to cover the B-frame reordering delay of any real encoder.
    packet_times(path, select, Some(64))?
        .first()
        .copied()
        .ok_or_else(|| format!("{} has no timed {kind} packet", path.display()))
}

/// Every frame of the first video stream as ffmpeg shows it (rotated upright by its display matrix), scaled to
/// `width` x `height`, as packed RGB (3 bytes a pixel, rows top to bottom).
pub fn decode_frames_rgb(path: &Path, width: u32, height: u32) -> Result<Vec<Vec<u8>>, String> {
    let p = path_arg(path)?;
    let vf = format!("scale={width}:{height}");
    let args = [
        "-nostdin",
        "-v",
        "error",
        "-i",
        p,
        "-map",
        "0:v:0",
        "-vf",
        &vf,
        "-vsync",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ];
    let out = run_clean("ffmpeg", &args, path)?;
    let frame = (width * height * 3) as usize;
    if frame == 0 || out.stdout.len() % frame != 0 {
        return Err(format!("ffmpeg gave {} bytes, not a whole number of {width}x{height} frames", out.stdout.len()));
    }
    Ok(out.stdout.chunks(frame).map(<[u8]>::to_vec).collect())
}

/// The size of the first video frame as ffmpeg shows it (after its display-matrix rotation).
pub fn display_size(path: &Path) -> Result<(u32, u32), String> {
    let p = path_arg(path)?;
    let args =
        ["-nostdin", "-v", "error", "-i", p, "-map", "0:v:0", "-frames:v", "1", "-c:v", "ppm", "-f", "image2pipe", "-"];
    let out = run_clean("ffmpeg", &args, path)?;
    // "P6\n<width> <height>\n255\n" and the pixels.
    let header = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(32)]).into_owned();
    let mut fields = header.split_ascii_whitespace().skip(1).map(|s| s.parse::<u32>());
    match (fields.next(), fields.next()) {
        (Some(Ok(w)), Some(Ok(h))) => Ok((w, h)),
        _ => Err(format!("no PPM header from ffmpeg for {}: {header:?}", path.display())),
    }
}

/// The EXIF Orientation tag (1..8) of a still as ffmpeg's decoder reports it (the frame tag "Orientation");
/// None when there is none. ffmpeg 5.1 reads it from a JPEG's APP1 (and applies it when decoding, as a display
/// matrix: `decode_frames_rgb` and `display_size` give the upright picture), not from a PNG's eXIf chunk.
pub fn exif_orientation(path: &Path) -> Result<Option<u8>, String> {
    let p = path_arg(path)?;
    let args = ["-v", "error", "-show_entries", "frame_tags=Orientation", "-of", "csv=p=0", p];
    let out = run_clean("ffprobe", &args, path)?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).and_then(|s| s.parse().ok()))
}

/// The first audio stream's start_time minus the first video stream's, as ffprobe reports them (edit lists
/// applied): positive when the sound starts after the picture.
pub fn audio_video_offset_s(path: &Path) -> Result<f64, String> {
    let streams = streams(path)?;
    let start = |kind: &str| -> Result<f64, String> {
        first_of(&streams, kind, path)?
            .start_time_s
            .ok_or_else(|| format!("ffprobe gives no start_time for the {kind} of {}", path.display()))
    };
    Ok(start("audio")? - start("video")?)
}
