//! `latentcam convert`: every input frame becomes one output frame with the same timing, audio is carried
//! over, an interrupted run leaves a playable file, and bad input fails cleanly.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ffmpeg;
use common::media::{MediaInfo, probe, run_to_eos};
use common::{assert_bad_input, latentcam, path_str, stderr};

fn convert(input: &Path, output: &Path, size: &str) -> std::process::Output {
    let model = common::model_dir("tiny-sd-turbo");
    latentcam(&[
        "convert",
        path_str(input),
        path_str(output),
        "--model",
        path_str(&model),
        "--size",
        size,
        "--steps",
        "1",
        "--prompt",
        "a pencil drawing",
    ])
}

/// Every frame, the same rate, the same span from the first frame to the end of the last (GStreamer's view);
/// then ffmpeg's: every output frame decodes, as many as the input's, and the video starts where a player
/// starts the input's (MKV: the input's first timestamp, edit lists applied; MP4/MOV: zero, the first frame).
fn assert_same_timing(input: &Path, output: &Path, what: &str) {
    let (a, b) = (probe(input).unwrap(), probe(output).unwrap());
    assert_eq!(b.video_frames, a.video_frames, "{what}: frame count");
    assert_eq!(b.fps, a.fps, "{what}: frame rate");
    let frame_ns = a.fps.map_or(40_000_000, |(n, d)| (1e9 * f64::from(d) / f64::from(n)) as u64);
    let span = |m: &MediaInfo| m.video_end_ns - m.first_pts_ns.unwrap_or(0);
    let (x, y) = (span(&a), span(&b));
    assert!(x.abs_diff(y) <= frame_ns, "{what}: duration {y} ns vs input {x} ns (more than one frame apart)");
    let frames = ffmpeg::decoded_video_frames(output).unwrap_or_else(|e| panic!("{what}: ffmpeg: {e}"));
    assert_eq!(frames, ffmpeg::decoded_video_frames(input).unwrap(), "{what}: frames ffmpeg decodes");
    let start = |p: &Path| ffmpeg::streams(p).unwrap().into_iter().find(|s| s.is_video()).unwrap().start_time_s;
    let is_mkv = output.extension().is_some_and(|e| e == "mkv");
    let expected = if is_mkv { start(input).unwrap_or(0.0) } else { 0.0 };
    let got = start(output).unwrap_or(0.0);
    assert!((got - expected).abs() < 1e-3, "{what}: the video starts at {got} s, expected {expected} s");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn chaplin_keeps_every_frame_and_the_timing() {
    let shared = common::shared();
    let input = shared.join("media/chaplin_street_9s.mp4");
    let tmp = common::temp_dir();
    let output = tmp.path().join("chaplin.mp4");
    let out = convert(&input, &output, "128x64");
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (probe(&input).unwrap(), probe(&output).unwrap());
    assert_eq!(a.video_frames, 241, "the test clip has 241 frames");
    assert_eq!(a.fps, Some((25, 1)));
    assert_same_timing(&input, &output, "chaplin");
    assert_eq!((b.width, b.height), (128, 64));
    assert!(b.video_codec.as_deref().is_some_and(|c| c.contains("video/x-h264")), "{:?}", b.video_codec);
    assert!(b.audio_codec.is_none(), "the input has no audio");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn pose_guided_convert_keeps_every_frame_and_the_timing() {
    let shared = common::shared();
    let input = shared.join("media/chaplin_street_9s.mp4");
    let tmp = common::temp_dir();
    for mode in ["txt2img", "img2img"] {
        let output = tmp.path().join(format!("{mode}.mp4"));
        let out = latentcam(&[
            "convert",
            path_str(&input),
            path_str(&output),
            "--model",
            path_str(&common::model_dir("tiny-sd15-lcm-lora-controlnet")),
            "--size",
            "64x64",
            "--steps",
            "1",
            "--pose",
            mode,
            "--pose-model",
            path_str(&shared.join("models/movenet")),
            "--controlnet-scale",
            "1.5",
        ]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let b = probe(&output).unwrap();
        assert_same_timing(&input, &output, mode);
        assert_eq!((b.width, b.height), (64, 64));
    }
    // A model folder without a ControlNet, and a bad scale, are refused before any work.
    let out = latentcam(&[
        "convert",
        path_str(&input),
        path_str(&tmp.path().join("x.mp4")),
        "--model",
        path_str(&common::model_dir("tiny-sd-turbo")),
        "--pose",
        "txt2img",
        "--pose-model",
        path_str(&shared.join("models/movenet")),
    ]);
    assert_bad_input(&out, "ControlNet");
    let out = latentcam(&[
        "convert",
        path_str(&input),
        path_str(&tmp.path().join("x.mp4")),
        "--model",
        path_str(&common::model_dir("tiny-sd15-lcm-lora-controlnet")),
        "--pose",
        "txt2img",
        "--controlnet-scale",
        "3",
        "--pose-model",
        path_str(&shared.join("models/movenet")),
    ]);
    assert_bad_input(&out, "--controlnet-scale");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn cockatoo_444_with_audio_keeps_frames_timing_and_audio() {
    let shared = common::shared();
    let input = shared.join("media/cockatoo.mp4");
    let tmp = common::temp_dir();
    for ext in ["mp4", "mkv"] {
        let output = tmp.path().join(format!("cockatoo.{ext}"));
        let out = convert(&input, &output, "128x64");
        assert!(out.status.success(), "{}", stderr(&out));
        let (a, b) = (probe(&input).unwrap(), probe(&output).unwrap());
        assert_same_timing(&input, &output, ext);
        let audio = b.audio_codec.as_deref().unwrap_or_else(|| panic!("{ext}: no audio in the output"));
        assert!(audio.contains("audio/mpeg"), "{ext}: audio re-muxed as MP3, got {audio}");
        assert!(
            a.audio_end_ns.abs_diff(b.audio_end_ns) < 100_000_000,
            "{ext}: audio length {} vs {}",
            b.audio_end_ns,
            a.audio_end_ns
        );
        // The encoder got 4:2:0 (what players accept), not the input's 4:4:4.
        let video = b.video_codec.unwrap();
        assert!(!video.contains("high-4:4:4"), "{ext}: {video}");
    }
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn interrupting_convert_leaves_a_playable_file() {
    let shared = common::shared();
    let input = shared.join("media/cockatoo.mp4");
    let tmp = common::temp_dir();
    let output = tmp.path().join("partial.mp4");
    let model = common::model_dir("tiny-sd-turbo");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "1", "convert", path_str(&input), path_str(&output)])
        .args(["--model", path_str(&model), "--size", "256x144", "--steps", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it convert a while (its first progress line), then interrupt as Ctrl-C would.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(1024);
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut err = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let progress = line.starts_with("converted ");
                err += &line;
                err.push('\n');
                if progress {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    err.extend(rx.try_iter().map(|l| l + "\n"));
    assert_eq!(status.code(), Some(130), "interrupted convert exits 130:\n{err}");
    assert!(err.contains("playable"), "{err}");
    let info = probe(&output).unwrap_or_else(|e| panic!("the partial file does not play: {e}"));
    assert!(info.video_frames > 0 && info.video_frames < 280, "partial file has {} frames", info.video_frames);
    assert!(info.audio_codec.is_some(), "audio kept in the partial file");
    assert!(
        info.audio_end_ns <= info.video_end_ns + 200_000_000,
        "audio ({} ns) should be cut near the video's end ({} ns)",
        info.audio_end_ns,
        info.video_end_ns
    );
}

#[test]
fn bad_videos_and_outputs_give_exit_code_2() {
    let tmp = common::temp_dir();
    let out = tmp.path().join("out.mp4");
    let empty = tmp.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let corrupt = tmp.path().join("corrupt.mp4");
    std::fs::write(&corrupt, (0..20000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "just some text, not a video at all\n".repeat(100)).unwrap();
    assert_bad_input(&convert(&tmp.path().join("missing.mp4"), &out, "64x64"), "missing.mp4");
    assert_bad_input(&convert(&empty, &out, "64x64"), "empty");
    assert_bad_input(&convert(&corrupt, &out, "64x64"), "corrupt.mp4");
    assert_bad_input(&convert(&text, &out, "64x64"), "notes.mp4");
    assert!(!out.exists(), "no output for a bad input");
    // Outputs and flags are checked before the input is opened: any file will do as the input here.
    let video = &corrupt;
    assert_bad_input(&convert(video, &tmp.path().join("no/dir/out.mp4"), "64x64"), "does not exist");
    assert_bad_input(&convert(video, &tmp.path().join("out.avi"), "64x64"), ".mp4");
    assert_bad_input(&convert(video, &out, "60x64"), "multiples");
    assert_bad_input(&convert(video, &out, "64x64x"), "--size");
    let copy = tmp.path().join("copy.mp4");
    std::fs::copy(video, &copy).unwrap();
    assert_bad_input(&convert(&copy, &copy, "64x64"), "is the same file as the input");
}

/// Encode 20 frames of a test picture with `encode` (a gst-launch fragment ending in a muxer) into `path`.
fn make_video(path: &Path, encode: &str) {
    run_to_eos(&format!(
        "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=160,height=120,framerate=20/1 ! videoconvert \
         ! {encode} ! filesink location={}",
        path_str(path)
    ));
}

#[test]
fn every_compressed_video_family_converts() {
    // Motion-JPEG (what many cameras record) and PNG come out of the demuxer as image/..., not video/...
    let tmp = common::temp_dir();
    for (name, encode) in [
        ("mjpeg.avi", "jpegenc ! avimux"),
        ("mjpeg.mkv", "jpegenc ! matroskamux"),
        ("png.avi", "pngenc ! avimux"),
        ("vp8.webm", "vp8enc deadline=1 ! webmmux"),
        ("theora.ogg", "theoraenc ! oggmux"),
        ("mpeg4.avi", "avenc_mpeg4 ! avimux"),
        ("raw.avi", "video/x-raw,format=I420 ! avimux"),
    ] {
        let input = tmp.path().join(name);
        make_video(&input, encode);
        let output = tmp.path().join(format!("{name}.mkv"));
        let out = convert(&input, &output, "64x48");
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let info = probe(&output).unwrap();
        assert_eq!(info.video_frames, 20, "{name}: every frame converted");
    }
}
