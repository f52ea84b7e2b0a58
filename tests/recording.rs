//! Crash-safe recording: a `convert` killed with SIGKILL leaves an MP4, MOV or MKV that decodes without error
//! up to its last complete fragment and holds the frames that had reached the muxer a fragment before the kill;
//! a disk that fills up mid-run stops the run with exit code 1 naming the file, and what was written plays.
//! Real video in (the frames are large enough that no buffer can hide a lost fragment).
#![cfg(feature = "gstreamer")]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::media::probe;
use common::path_str;

const FPS: u64 = 25;

fn convert_command(input: &Path, output: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latentcam"));
    cmd.args(["--ep", "cpu", "--threads", "2", "convert", path_str(input), path_str(output)])
        .args(["--model", path_str(&common::model_dir("tiny-sd-turbo")), "--size", "256x144", "--steps", "1"])
        .args(["--progress-interval-s", "0.2"])
        .env("RUST_LOG", "warn");
    cmd
}

/// Run convert, SIGKILL it once it has reported `kill_at` frames delivered to the file sink; returns the last
/// count it reported.
fn convert_and_kill(input: &Path, output: &Path, kill_at: u64) -> u64 {
    let mut child = convert_command(input, output).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reported = 0;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("converted ").and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok())
        {
            reported = n;
        }
        if reported >= kill_at || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: nothing gets to finalize
    child.wait().unwrap();
    assert!(reported >= kill_at, "the run reported only {reported} frames");
    reported
}

fn killed_recording_plays(ext: &str, video: &str) {
    let input = common::shared().join("media").join(video);
    let tmp = common::temp_dir();
    let output = tmp.path().join(format!("killed.{ext}"));
    let reported = convert_and_kill(&input, &output, 4 * FPS);
    let info = probe(&output).unwrap_or_else(|e| panic!("{ext}: the killed recording does not decode: {e}"));
    // Frames the sink had were still in the encoder (up to a second with x264's look-ahead) or in the open
    // fragment (a second): at most two seconds' worth may be missing.
    let at_least = reported - 2 * FPS;
    eprintln!("{ext}: reported {reported} frames at the kill, {} decode", info.video_frames);
    assert!(info.video_frames >= at_least, "{ext}: {} frames decode, expected at least {at_least}", info.video_frames);
    assert!(info.video_frames <= reported, "{ext}: more frames than were delivered");
    assert_eq!((info.width, info.height), (256, 144));
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_killed_mp4_recording_with_audio_plays_to_its_last_fragment() {
    killed_recording_plays("mp4", "cockatoo.mp4");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_killed_mov_recording_plays_to_its_last_fragment() {
    killed_recording_plays("mov", "chaplin_street_9s.mp4");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_killed_mkv_recording_plays_to_its_last_cluster() {
    killed_recording_plays("mkv", "chaplin_street_9s.mp4");
}

/// The file sink of a pipeline (`run`, recording while streaming) is the same recorder: killed, it plays too.
#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_killed_pipeline_recording_plays_to_its_last_fragment() {
    let input = common::shared().join("media/chaplin_street_9s.mp4");
    let tmp = common::temp_dir();
    let output = tmp.path().join("recorded.mp4");
    let pipeline = tmp.path().join("record.toml");
    let text = format!(
        "mode = \"offline\"\nstats-interval-s = 0.2\n[source]\nkind = \"gstreamer\"\nuri = {:?}\n[model]\ndir = {:?}\n\
         size = [256, 144]\n[params]\nsteps = 1\n[[sink]]\nkind = \"file\"\npath = {:?}\n[[sink]]\nkind = \"null\"\n",
        path_str(&input),
        path_str(&common::model_dir("tiny-sd-turbo")),
        path_str(&output)
    );
    std::fs::write(&pipeline, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "2", "run", path_str(&pipeline)])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered = 0;
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.split("delivered ").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok())
        {
            delivered = n;
        }
        if delivered >= 4 * FPS {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let info = probe(&output).unwrap_or_else(|e| panic!("the killed recording does not decode: {e}"));
    eprintln!("run: {delivered} frames delivered at the kill, {} decode", info.video_frames);
    assert!(info.video_frames >= delivered - 2 * FPS, "{} frames decode of {delivered}", info.video_frames);
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_cleanly_finished_mp4_is_re_muxed_into_a_plain_mp4() {
    let input = common::shared().join("media/chaplin_street_9s.mp4");
    let tmp = common::temp_dir();
    let output = tmp.path().join("clean.mp4");
    let out = convert_command(&input, &output).output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let info = probe(&output).unwrap();
    assert_eq!(info.video_frames, 241);
    // Top-level boxes: the fragments (ftyp moov, moof+mdat per second) were re-muxed into ftyp .. mdat moov.
    let data = std::fs::read(&output).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        if size < 8 {
            break;
        }
        at += size;
    }
    assert!(boxes.iter().any(|b| b == "moov") && !boxes.iter().any(|b| b == "moof"), "{boxes:?}");
    let leftovers: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("clean.mp4")], "no temporary file left");
    // The permissions of any new file here (the umask's), not the private ones of a temporary file.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let fresh = tmp.path().join("fresh");
    std::fs::write(&fresh, b"x").unwrap();
    assert_eq!(mode(&output), mode(&fresh), "permissions");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_disk_filling_up_mid_run_gives_exit_code_1_and_a_playable_file() {
    let input = common::shared().join("media/chaplin_street_9s.mp4");
    let tmp = common::temp_dir();
    let output = tmp.path().join("full.mp4");
    // RLIMIT_FSIZE: writes past 20 KiB (about a third of this clip) fail for real (EFBIG), as on a full disk.
    let cmd = convert_command(&input, &output);
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 20 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_latentcam"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a disk failing while running is exit code 1: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains("full.mp4") && line.contains("File too large"), "names the file and the cause: {line}");
    let info = probe(&output).unwrap_or_else(|e| panic!("the file written before the failure does not decode: {e}"));
    eprintln!("{} frames decode from the file cut at 20 KiB", info.video_frames);
    assert!(info.video_frames >= FPS, "at least the first second plays: {}", info.video_frames);
    assert!(info.video_frames < 241, "the run did stop early");
}
