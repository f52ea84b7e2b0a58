//! A write that fails mid-recording (a file-size limit, a full disk) stops `convert` with exit code 1 naming the
//! file and the cause, and leaves a file that ffmpeg decodes without a word, every frame up to its last complete
//! fragment: the file sink cuts it back to the end of that fragment (`sink::repair`) and logs what it cut.
//!
//! MP4, MOV and MKV, under file-size limits (`ulimit -f`) that land in the header, in the first fragment,
//! mid-file and near the end, on a clip ffmpeg makes (testsrc2 and a sine: no ../shared needed) and on real
//! media; and on a small tmpfs that fills up mid-fragment. Every cut is checked against a file with more in it
//! (the clean MKV, the MP4/MOV cut nearest the end): the file ends at the last fragment end that fits under
//! the limit, and holds exactly the video frames that lie before it.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::path_str;

/// The generated clip: 3 seconds at 25 frames a second, so three fragments (clusters) per track.
const FPS: u32 = 25;
const SECONDS: u32 = 3;

fn generated_clip(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mp4");
    let video = format!("testsrc2=size=256x144:rate={FPS}:duration={SECONDS}");
    let audio = format!("sine=frequency=440:duration={SECONDS}");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path_str(&path)])
        .output()
        .expect("ffmpeg is needed (scripts/setup.sh installs it)");
    assert!(out.status.success(), "ffmpeg could not make the test clip: {}", common::stderr(&out));
    path
}

/// The first 4 seconds of a ../shared clip at 256x144, its audio as it is (MP3 in cockatoo.mp4): real
/// pictures and sound, at the cost of the generated clip.
fn real_clip(name: &str, dir: &Path) -> PathBuf {
    let source = common::shared().join("media").join(name);
    let path = dir.join(name);
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i", path_str(&source), "-t", "4", "-vf", "scale=256:144"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "copy", path_str(&path)])
        .output()
        .expect("ffmpeg is needed (scripts/setup.sh installs it)");
    assert!(out.status.success(), "ffmpeg could not cut {name}: {}", common::stderr(&out));
    path
}

fn convert_args(input: &Path, output: &Path) -> Vec<String> {
    let model = common::model_dir("tiny-sd-turbo");
    ["--ep", "cpu", "--threads", "2", "convert", path_str(input), path_str(output)]
        .into_iter()
        .chain(["--model", path_str(&model), "--size", "256x144", "--steps", "1"])
        .map(String::from)
        .collect()
}

/// The unit of `ulimit -f` in `sh`, measured: 512 bytes in dash (Debian's sh) and POSIX, 1024 in bash.
fn ulimit_block() -> u64 {
    static BLOCK: OnceLock<u64> = OnceLock::new();
    *BLOCK.get_or_init(|| {
        let dir = common::temp_dir();
        let probe = dir.path().join("probe");
        // SIGXFSZ ignored: the write fails with EFBIG instead of killing `head`.
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 1 && head -c 4096 /dev/zero > \"$0\"")
            .arg(&probe)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let size = std::fs::metadata(&probe).map_or(0, |m| m.len());
        assert!(size == 512 || size == 1024, "`ulimit -f 1` in sh let a file grow to {size} bytes");
        size
    })
}

/// `latentcam convert` under a file-size limit of `limit` bytes (a whole number of `ulimit -f` blocks).
fn convert_limited(input: &Path, output: &Path, limit: u64) -> Output {
    assert_eq!(limit % ulimit_block(), 0);
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {} && exec \"$0\" \"$@\"", limit / ulimit_block()))
        .arg(env!("CARGO_BIN_EXE_latentcam"))
        .args(convert_args(input, output))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn convert(input: &Path, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(convert_args(input, output))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// The file's structure, read here independently of latentcam's code.

/// A top-level box (MP4) or Segment child (MKV): its name and where it lies.
#[derive(Clone, Debug)]
struct Part {
    name: String,
    start: u64,
    end: u64,
}

fn is_mkv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mkv")
}

/// The parts of a file; panics when one is incomplete (runs past the end, or of unknown size) or malformed.
fn parts(path: &Path) -> Vec<Part> {
    let data = std::fs::read(path).unwrap();
    if is_mkv(path) { mkv_parts(&data) } else { mp4_parts(&data) }
}

fn mp4_parts(data: &[u8]) -> Vec<Part> {
    let mut parts = Vec::new();
    let (mut at, mut fragment) = (0usize, 0);
    while at < data.len() {
        assert!(at + 8 <= data.len(), "the file ends inside a box header at {at}: {parts:?}");
        let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
        let size = match u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) {
            1 => u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize,
            0 => data.len() - at,
            n => n as usize,
        };
        assert!(size >= 8 && at + size <= data.len(), "the {kind} at {at} ({size} bytes) is not all there");
        if kind == "moof" {
            fragment += 1;
        }
        let name = if kind == "moof" || kind == "mdat" { format!("{kind} {fragment}") } else { kind };
        parts.push(Part { name, start: at as u64, end: (at + size) as u64 });
        at += size;
    }
    parts
}

/// An EBML variable-length integer: (value, length); `keep_marker` for IDs.
fn vint(data: &[u8], at: usize, keep_marker: bool) -> (u64, usize) {
    let len = data[at].leading_zeros() as usize + 1;
    assert!(len <= 8 && at + len <= data.len(), "bad or cut EBML number at {at}");
    let first = if keep_marker { u64::from(data[at]) } else { u64::from(data[at]) & (0xff >> len) };
    let value = data[at + 1..at + len].iter().fold(first, |v, &b| (v << 8) | u64::from(b));
    (value, len)
}

fn mkv_parts(data: &[u8]) -> Vec<Part> {
    let element = |at: usize| {
        let (id, id_len) = vint(data, at, true);
        let (size, size_len) = vint(data, at + id_len, false);
        let unknown = size == (1 << (7 * size_len)) - 1;
        (id, at + id_len + size_len, (!unknown).then_some(size as usize))
    };
    let (id, body, size) = element(0);
    assert_eq!(id, 0x1A45_DFA3, "no EBML header");
    let mut parts = vec![Part { name: "EBML header".into(), start: 0, end: (body + size.unwrap()) as u64 }];
    let segment_at = body + size.unwrap();
    let (id, body, size) = element(segment_at);
    assert_eq!(id, 0x1853_8067, "no Segment");
    parts.push(Part { name: "Segment header".into(), start: segment_at as u64, end: body as u64 });
    let end = size.map_or(data.len(), |s| body + s);
    assert!(end <= data.len(), "the Segment's size points past the end");
    let (mut at, mut cluster) = (body, 0);
    while at < end {
        let (id, payload, size) = element(at);
        let name = match id {
            0x114D_9B74 => "SeekHead".to_string(),
            0x1549_A966 => "Info".to_string(),
            0x1654_AE6B => "Tracks".to_string(),
            0x1F43_B675 => {
                cluster += 1;
                format!("Cluster {cluster}")
            }
            0x1C53_BB6B => "Cues".to_string(),
            0x1254_C367 => "Tags".to_string(),
            0xEC => "Void".to_string(),
            other => format!("element {other:#x}"),
        };
        let size = size.unwrap_or_else(|| panic!("the {name} at {at} is of unknown size (open)"));
        assert!(payload + size <= end, "the {name} at {at} ({size} bytes) is not all there");
        parts.push(Part { name, start: at as u64, end: (payload + size) as u64 });
        at = payload + size;
    }
    parts
}

/// Where a file may end and play: after its header, and after each fragment (`mdat`) or cluster.
fn fragment_ends(parts: &[Part]) -> Vec<u64> {
    parts
        .iter()
        .filter(|p| ["moov", "Tracks", "mdat", "Cluster"].iter().any(|k| p.name.starts_with(k)))
        .map(|p| p.end)
        .collect()
}

/// Which part of `parts` holds `offset`.
fn landed(parts: &[Part], offset: u64) -> String {
    match parts.iter().find(|p| p.start <= offset && offset < p.end) {
        Some(p) => format!("inside the {} ({}..{})", p.name, p.start, p.end),
        None => format!("past {}", parts.last().map_or(0, |p| p.end)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Decoding, with ffmpeg.

/// (frames decoded, video packets) by ffprobe; 0 for a file without video frames.
fn count_frames(path: &Path) -> (u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_frames,nb_read_packets", "-of", "csv=p=0", path_str(path)])
        .output()
        .expect("ffprobe is needed (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.trim().split(',').map(|n| n.trim().parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Where each video packet of a file ends (byte offset), by ffprobe.
fn video_packet_ends(path: &Path) -> Vec<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pos,size", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',').map(|n| n.trim().parse::<u64>());
            Some(f.next()?.ok()? + f.next()?.ok()?)
        })
        .collect()
}

/// `ffmpeg -v error -i F -f null -`: decodes the whole file; its complaints, empty when there are none.
fn ffmpeg_complaints(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", path_str(path), "-f", "null", "-"])
        .output()
        .expect("ffmpeg is needed (scripts/setup.sh installs it)");
    let mut complaints = common::stderr(&out);
    if !out.status.success() {
        complaints.push_str(&format!("(exit status {:?})", out.status.code()));
    }
    complaints
}

// ---------------------------------------------------------------------------------------------------------
// One failed run, checked.

/// What the repair logged (`bytes_before=.. bytes_after=.. fragments_kept=.. frames_kept=".."`).
#[derive(Debug, Default)]
struct Logged {
    before: Option<u64>,
    after: Option<u64>,
    fragments: Option<u64>,
    frames: Option<u64>,
}

fn logged(stderr: &str) -> Logged {
    let mut log = Logged::default();
    for line in stderr.lines().filter(|l| l.contains("WARN") && l.contains("cut the recording back")) {
        for field in line.split_whitespace() {
            let Some((key, value)) = field.split_once('=') else { continue };
            let value = value.trim_matches('"').parse().ok();
            match key {
                "bytes_before" => log.before = value,
                "bytes_after" => log.after = value,
                "fragments_kept" => log.fragments = value,
                "frames_kept" => log.frames = value,
                _ => {}
            }
        }
    }
    log
}

/// A file a failed run left.
struct Left {
    /// Its size after the repair.
    after: u64,
    /// The repair found no complete header and left the file as it was.
    no_header: bool,
    frames: u64,
}

/// Check what a run that failed writing `output` left: the exit code and error, the log, and that the file is
/// whole and decodes without a complaint, every video frame in it. `limit`: the file-size limit (the file had
/// reached it); `reference`: a file with more in it, which this one must be a cut of.
fn check_left(out: &Output, output: &Path, cause: &str, limit: Option<u64>, reference: Option<&Path>) -> Left {
    let err = common::stderr(out);
    let file = output.file_name().unwrap().to_str().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed write is exit code 1:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains(file) && line.contains(cause), "the error names the file and the cause: {err}");
    let size = std::fs::metadata(output).unwrap().len();
    if err.contains("before the file's header was complete") {
        // Nothing in it plays: left as it is.
        if let Some(limit) = limit {
            assert_eq!(size, limit, "{file}");
        }
        return Left { after: size, no_header: true, frames: 0 };
    }
    let log = logged(&err);
    // No WARN when the failed write happened to start a new fragment: nothing to cut.
    let before = log.before.unwrap_or(size);
    let after = log.after.unwrap_or(size);
    assert_eq!(after, size, "the file's size is what the log says: {err}");
    assert!(after <= before);
    if let Some(limit) = limit {
        assert_eq!(before, limit, "the file had grown to the limit: {err}");
    }
    let left_parts = parts(output);
    let (frames, packets) = count_frames(output);
    if packets > 0 {
        let complaints = ffmpeg_complaints(output);
        assert!(complaints.is_empty(), "{file}: ffmpeg complains about the cut file:\n{complaints}");
    }
    assert_eq!(frames, packets, "{file}: every video frame in the file decodes");
    if let Some(kept) = log.frames {
        assert_eq!(kept, packets, "{file}: the frames the log says were kept are the file's");
    }
    if let Some(reference) = reference {
        // The cut is at the last fragment end under the failed write, and holds the frames before it.
        let ref_parts = parts(reference);
        let expected = fragment_ends(&ref_parts).into_iter().filter(|&e| e <= before).max().unwrap_or(0);
        assert_eq!(after, expected, "{file}: cut at {after}, the last fragment end before {before} is {expected}");
        let expected_frames = video_packet_ends(reference).into_iter().filter(|&e| e <= after).count() as u64;
        assert_eq!(frames, expected_frames, "{file}: the frames of the fragments kept");
        eprintln!(
            "{file}: the write failed at {before} bytes, {}; cut to {after} bytes ({:?} fragments kept), {frames} \
             frames decode",
            landed(&ref_parts, before),
            log.fragments,
        );
    } else {
        eprintln!(
            "{file}: the write failed at {before} bytes; cut to {after} bytes ({:?} fragments kept), {frames} \
             frames decode ({} parts left: {})",
            log.fragments,
            left_parts.len(),
            left_parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
    Left { after, no_header: false, frames }
}

/// Convert `input` to `ext` cleanly (the frame count, the size scale, and for MKV the reference layout), then
/// under file-size limits that land near the end, mid-file, in the first fragment and (`in_header`) in the
/// header.
fn cut_by_size_limits(input: &Path, ext: &str, in_header: bool) {
    let tmp = common::temp_dir();
    let clean = tmp.path().join(format!("clean.{ext}"));
    let out = convert(input, &clean);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let all_frames = count_frames(&clean).0;
    let clean_size = std::fs::metadata(&clean).unwrap().len();
    let block = ulimit_block();
    // Nearest the end first: for MP4/MOV (whose clean file is re-muxed, not fragmented) it is the reference
    // the others are checked against; the clean MKV is one for MKV.
    let mut limits = vec![clean_size * 97 / 100, clean_size / 2, clean_size / 12];
    if in_header {
        limits.push(512);
    }
    let mut reference: Option<PathBuf> = is_mkv(&clean).then(|| clean.clone());
    let mut kept = Vec::new();
    for limit in limits.into_iter().map(|l| (l / block).max(1) * block) {
        let output = tmp.path().join(format!("limit{limit}.{ext}"));
        let out = convert_limited(input, &output, limit);
        let left = check_left(&out, &output, "File too large", Some(limit), reference.as_deref());
        if reference.is_none() && !left.no_header {
            reference = Some(output.clone());
        }
        kept.push((limit, left.after, left.frames));
    }
    eprintln!("{ext}: {all_frames} frames in the clean file of {clean_size} bytes; (limit, kept, frames): {kept:?}");
    assert!(kept[0].2 > 0 && kept[1].2 > 0, "{ext}: cut near the end and mid-file, frames play: {kept:?}");
    assert!(kept[0].2 <= all_frames);
    assert!(kept.windows(2).all(|w| w[0].1 >= w[1].1 && w[0].2 >= w[1].2), "{ext}: less room, less kept: {kept:?}");
}

#[test]
fn an_mp4_cut_by_a_size_limit_plays_to_its_last_fragment() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&generated_clip(tmp.path()), "mp4", true);
}

#[test]
fn a_mov_cut_by_a_size_limit_plays_to_its_last_fragment() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&generated_clip(tmp.path()), "mov", true);
}

#[test]
fn an_mkv_cut_by_a_size_limit_plays_to_its_last_cluster() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&generated_clip(tmp.path()), "mkv", true);
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_real_mp4_with_audio_cut_by_a_size_limit_plays_to_its_last_fragment() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&real_clip("cockatoo.mp4", tmp.path()), "mp4", false);
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_real_mov_without_audio_cut_by_a_size_limit_plays_to_its_last_fragment() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&real_clip("chaplin_street_9s.mp4", tmp.path()), "mov", false);
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_real_mkv_without_audio_cut_by_a_size_limit_plays_to_its_last_cluster() {
    let tmp = common::temp_dir();
    cut_by_size_limits(&real_clip("chaplin_street_9s.mp4", tmp.path()), "mkv", false);
}

// ---------------------------------------------------------------------------------------------------------
// A full disk.

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount one of `size` (mount's syntax); `Err` with the reason when this machine does not let us.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = common::temp_dir();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path_str(dir.path())])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", common::stderr(&out).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A disk that fills up mid-fragment: `convert` onto a 2 MB tmpfs that a file fills to all but `FREE` bytes.
/// Skipped, saying why, where mounting is not allowed (not root, a container without the capability).
#[test]
fn a_disk_that_fills_up_mid_fragment_leaves_a_file_that_plays_to_its_last_fragment() {
    const FREE: u64 = 24 << 10;
    let disk = match Tmpfs::mount("2m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED a_disk_that_fills_up_mid_fragment_leaves_a_file_that_plays_to_its_last_fragment: {why}");
            return;
        }
    };
    let tmp = common::temp_dir();
    let input = generated_clip(tmp.path());
    for ext in ["mp4", "mov", "mkv"] {
        let filler = disk.path().join("filler");
        std::fs::write(&filler, vec![1u8; (2 << 20) - FREE as usize]).unwrap();
        let output = disk.path().join(format!("full.{ext}"));
        let out = convert(&input, &output);
        let left = check_left(&out, &output, "No space left", None, None);
        assert!(left.frames > 0, "{ext}: {FREE} bytes free hold at least a fragment");
        std::fs::remove_file(&output).unwrap();
        std::fs::remove_file(&filler).unwrap();
    }
}
