//! The files people have: phone and camera videos (AAC audio, rotation, HEVC 10-bit, 4:4:4, odd sizes, variable
//! frame rate, audio that starts before or after the picture), EXIF-rotated photos, audio-only and non-media
//! files (made by scripts/make_test_media.sh). Every output is checked with ffmpeg, not with latentcam's own
//! GStreamer code: every frame decodes, as many as went in, at the same times, the audio where it was, the
//! picture the right way up.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ffmpeg::{self, test_media};
use common::{assert_bad_input, path_str, stderr};

fn latentcam_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latentcam"));
    cmd.args(["--ep", "cpu", "--threads", "2"]).env("RUST_LOG", "warn");
    cmd
}

fn tiny() -> String {
    path_str(&common::model_dir("tiny-sd-turbo")).to_string()
}

/// `convert IN OUT` with the tiny model, one step, at a small working size (the container is what is tested).
fn convert(input: &Path, output: &Path, extra: &[&str]) -> Output {
    latentcam_cmd()
        .args(["convert", path_str(input), path_str(output), "--model", &tiny(), "--steps", "1", "--size", "128x64"])
        .args(extra)
        .output()
        .unwrap()
}

fn video_stream(path: &Path) -> ffmpeg::StreamInfo {
    ffmpeg::streams(path).unwrap().into_iter().find(|s| s.is_video()).expect("a video stream")
}

fn audio_stream(path: &Path) -> Option<ffmpeg::StreamInfo> {
    ffmpeg::streams(path).unwrap().into_iter().find(|s| s.is_audio())
}

/// Every frame of `output` decodes with ffmpeg, and there are as many as `input` has.
fn assert_every_frame(input: &Path, output: &Path) -> u64 {
    let want = ffmpeg::decoded_video_frames(input).unwrap();
    let got = ffmpeg::decoded_video_frames(output)
        .unwrap_or_else(|e| panic!("{}: ffmpeg does not decode it cleanly: {e}", output.display()));
    assert_eq!(got, want, "{} -> {}: frames decoded", input.display(), output.display());
    got
}

#[test]
fn phone_files_with_aac_keep_their_first_frame_and_their_sync() {
    let tmp = common::temp_dir();
    for (name, exts) in [
        ("aac_short.mp4", &["mp4", "mov", "mkv"][..]),
        ("aac_short.mov", &["mp4"]),
        ("aac_long.mp4", &["mp4", "mov"]),
        ("aac_long.mov", &["mov"]),
        ("phone.mov", &["mp4"]),
        ("vfr.mp4", &["mp4"]),
    ] {
        let input = test_media(name);
        let audio_in = audio_stream(&input).expect("test input with audio");
        let audio_frame_s = f64::from(audio_in.frame_size.unwrap_or(1024)) / f64::from(audio_in.sample_rate.unwrap());
        let offset_in = ffmpeg::audio_video_offset_s(&input).unwrap();
        for ext in exts {
            let output = tmp.path().join(format!("{name}.{ext}"));
            let out = convert(&input, &output, &[]);
            assert!(out.status.success(), "{name} -> {ext}: {}", stderr(&out));
            assert_every_frame(&input, &output);
            let video = video_stream(&output);
            assert!(
                video.start_time_s.unwrap().abs() < 1e-3,
                "{name} -> {ext}: video starts at {:?}",
                video.start_time_s
            );
            let audio = audio_stream(&output).unwrap_or_else(|| panic!("{name} -> {ext}: the audio is gone"));
            assert_eq!(audio.codec_name, "aac", "{name} -> {ext}: re-muxed as it is");
            let offset = ffmpeg::audio_video_offset_s(&output).unwrap();
            assert!(
                (offset - offset_in.max(0.0)).abs() <= audio_frame_s + 1e-3,
                "{name} -> {ext}: audio {offset:.4} s after the video, the input {offset_in:.4} s (one audio frame is \
                 {audio_frame_s:.4} s)"
            );
        }
    }
}

#[test]
fn audio_that_starts_late_or_early_keeps_its_place_against_the_picture() {
    let tmp = common::temp_dir();
    // Matroska keeps the AAC encoder delay in its timestamps: the input's audio starts 0.479 s after the video.
    let late = test_media("late_audio.mkv");
    let offset_in = ffmpeg::audio_video_offset_s(&late).unwrap();
    assert!(offset_in > 0.4, "{offset_in}");
    for ext in ["mp4", "mov", "mkv"] {
        let output = tmp.path().join(format!("late.{ext}"));
        let out = convert(&late, &output, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_every_frame(&late, &output);
        let offset = ffmpeg::audio_video_offset_s(&output).unwrap();
        assert!((offset - offset_in).abs() < 0.025, "late audio -> {ext}: {offset:.4} s, input {offset_in:.4} s");
    }
    // Audio 0.2 s before the first picture: an MP4 starts at its first video frame, the sound before it is left
    // out, the rest stays in step (the first packet kept starts within one AAC frame of the picture).
    let early = test_media("early_audio.mp4");
    assert!(ffmpeg::audio_video_offset_s(&early).unwrap() < -0.15);
    let output = tmp.path().join("early.mp4");
    let out = convert(&early, &output, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_every_frame(&early, &output);
    let offset = ffmpeg::audio_video_offset_s(&output).unwrap();
    assert!((0.0..=1024.0 / 48000.0 + 1e-3).contains(&offset), "early audio -> mp4: {offset:.4} s");
}

#[test]
fn ten_bit_444_odd_sized_and_variable_rate_videos_convert_with_their_timing() {
    let tmp = common::temp_dir();
    for name in ["h264_10bit.mp4", "h264_444.mp4", "odd_641x361.mp4", "odd_333x185.mkv", "vfr.mp4"] {
        let input = test_media(name);
        let output = tmp.path().join(format!("{name}.mp4"));
        let out = convert(&input, &output, &["--no-audio"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_every_frame(&input, &output);
        // The same frame times (variable rates included), to the millisecond.
        let (a, b) = (ffmpeg::video_packet_times(&input).unwrap(), ffmpeg::video_packet_times(&output).unwrap());
        let start = a.first().copied().unwrap_or(0.0);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - start - y).abs() < 1.5e-3, "{name}: frame {i} at {y:.4} s, input {:.4} s", x - start);
        }
        let video = video_stream(&output);
        assert_eq!(video.pix_fmt.as_deref(), Some("yuv420p"), "{name}: 4:2:0 8-bit out");
    }
}

#[test]
fn rotated_videos_come_out_upright() {
    let tmp = common::temp_dir();
    let pose_model = path_str(&common::model_dir("tiny-dwpose")).to_string();
    for (name, portrait) in
        [("phone.mov", true), ("portrait_rot90.mp4", true), ("portrait_rot270.mp4", true), ("rot180.mp4", false)]
    {
        let input = test_media(name);
        assert_ne!(video_stream(&input).rotation, 0, "{name} carries a rotation");
        // convert: the output is portrait (or upside up) and carries no rotation of its own.
        let output = tmp.path().join(format!("{name}.mp4"));
        let out = latentcam_cmd()
            .args(["convert", path_str(&input), path_str(&output), "--model", &tiny(), "--steps", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_every_frame(&input, &output);
        let video = video_stream(&output);
        let (w, h) = (video.width.unwrap(), video.height.unwrap());
        assert_eq!(h > w, portrait, "{name}: output {w}x{h}");
        assert_eq!(video.rotation, 0, "{name}: upright pixels, no rotation tag");
        // The pixels: `pose --overlay` draws the skeleton over the frames as they came in; they must be the
        // picture ffmpeg shows (ffmpeg turns by the display matrix), not a turned one.
        let overlay = tmp.path().join(format!("{name}.overlay.mkv"));
        let out = latentcam_cmd()
            .args(["pose", path_str(&input), path_str(&overlay), "--overlay", "--model", &pose_model])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let (w, h) = ffmpeg::display_size(&overlay).unwrap();
        assert_eq!((w, h), ffmpeg::display_size(&input).unwrap(), "{name}: the pose video has the shown size");
        let ours = &ffmpeg::decode_frames_rgb(&overlay, w, h).unwrap()[0];
        let shown = &ffmpeg::decode_frames_rgb(&input, w, h).unwrap()[0];
        let turned: Vec<u8> = shown.chunks_exact(3).rev().flatten().copied().collect();
        let diff =
            |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64;
        let (right, wrong) = (diff(ours, shown), diff(ours, &turned));
        assert!(right < 12.0 && right * 3.0 < wrong, "{name}: {right:.1} levels from upright, {wrong:.1} turned");
    }
}

#[test]
fn exif_rotated_photos_are_read_upright() {
    let upright = latentcam::imaging::load_rgb(&test_media("exif/upright.png")).unwrap();
    let mut names: Vec<String> = (1..=8).map(|n| format!("exif/orient_{n}.jpg")).collect();
    names.push("exif/orient_6.png".into());
    for name in &names {
        let image = latentcam::imaging::load_rgb(&test_media(name)).unwrap();
        assert_eq!(image.dimensions(), upright.dimensions(), "{name}");
        let psnr = latentcam::imaging::psnr_db(&image, &upright).unwrap();
        assert!(psnr > 28.0, "{name}: {psnr:.1} dB from the upright picture");
    }
    // Through the CLI: img2img writes the upright size, pose finds keypoints in the upright frame.
    let tmp = common::temp_dir();
    let out_png = tmp.path().join("six.png");
    let out = latentcam_cmd()
        .args(["img2img", path_str(&test_media("exif/orient_6.jpg")), path_str(&out_png), "--model", &tiny()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let written = image::open(&out_png).unwrap();
    let (w, h) = upright.dimensions();
    assert_eq!((written.width(), written.height()), (w / 16 * 16, h / 16 * 16));
}

#[test]
fn pose_on_an_odd_sized_video_writes_even_sides() {
    let tmp = common::temp_dir();
    let input = test_media("odd_641x361.mp4");
    let output = tmp.path().join("odd.mp4");
    let out = latentcam_cmd()
        .args(["pose", path_str(&input), path_str(&output), "--model"])
        .arg(common::model_dir("tiny-dwpose"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_every_frame(&input, &output);
    let video = video_stream(&output);
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
}

#[test]
fn files_that_are_not_videos_are_refused_at_once_without_traces() {
    let tmp = common::temp_dir();
    let output = tmp.path().join("out.mp4");
    for (name, needle) in [
        ("audio_only.m4a", "has no video stream (only audio"),
        ("audio_only.mp4", "has no video stream (only audio"),
        ("text.mp4", "is not a video file GStreamer can read"),
    ] {
        let started = Instant::now();
        let out = convert(&test_media(name), &output, &[]);
        assert_bad_input(&out, needle);
        assert!(started.elapsed() < Duration::from_secs(8), "{name}: refused after {:?}", started.elapsed());
        assert!(!stderr(&out).contains(".c("), "{name}: GStreamer's source trace shown: {}", stderr(&out));
    }
    assert!(!output.exists());
    let out = latentcam_cmd()
        .args(["pose", path_str(&test_media("empty.png")), path_str(&tmp.path().join("o.png"))])
        .output()
        .unwrap();
    assert_bad_input(&out, "is empty (0 bytes)");
}

#[test]
fn a_video_without_audio_does_not_wait_for_any() {
    // Side by side: the default (audio carried over when there is some) against --no-audio, on a silent clip.
    let tmp = common::temp_dir();
    let input = test_media("h264_444.mp4");
    let time = |extra: &[&str]| {
        let started = Instant::now();
        let out = convert(&input, &tmp.path().join("silent.mp4"), extra);
        assert!(out.status.success(), "{}", stderr(&out));
        started.elapsed()
    };
    let (with_default, without) = (time(&[]), time(&["--no-audio"]));
    assert!(
        with_default < without + Duration::from_millis(2500),
        "the default took {with_default:?}, --no-audio {without:?}: it waited for audio"
    );
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn an_output_that_is_an_input_under_another_name_is_refused() {
    let tmp = common::temp_dir();
    let input = tmp.path().join("in.mp4");
    std::fs::copy(test_media("aac_short.mp4"), &input).unwrap();
    let before = sha(&input);
    let hard = tmp.path().join("hard.mp4");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = tmp.path().join("soft.mp4");
    std::os::unix::fs::symlink(&input, &soft).unwrap();
    for alias in [&hard, &soft] {
        assert_bad_input(&convert(&input, alias, &[]), "is the same file as the input");
    }
    let out = tmp.path().join("out.mp4");
    for flag in ["--stats-json"] {
        for target in [&input, &hard, &out] {
            let result = convert(&input, &out, &[flag, path_str(target)]);
            assert_bad_input(&result, "is the same file as the");
        }
    }
    assert_eq!(sha(&input), before, "the input is untouched");
    assert!(!out.exists());
    // pose --json naming its input or its output.
    let png = tmp.path().join("in.png");
    std::fs::copy(test_media("exif/upright.png"), &png).unwrap();
    let pose_model = common::model_dir("tiny-dwpose");
    let skeleton = tmp.path().join("skeleton.png");
    for json in [&png, &skeleton] {
        let out = latentcam_cmd()
            .args(["pose", path_str(&png), path_str(&skeleton), "--json", path_str(json), "--model"])
            .arg(&pose_model)
            .output()
            .unwrap();
        assert_bad_input(&out, "is the same file as the");
    }
    // An existing output that is a hard link of some other file: that file keeps its content.
    let keep = tmp.path().join("keep.mp4");
    std::fs::copy(test_media("aac_short.mov"), &keep).unwrap();
    let keep_before = sha(&keep);
    let other_name = tmp.path().join("other-name.mp4");
    std::fs::hard_link(&keep, &other_name).unwrap();
    let out = convert(&input, &other_name, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha(&keep), keep_before, "the other name's file is not written over");
    assert_every_frame(&input, &other_name);
}

/// Start a conversion of a longer video; returns once it reports converted frames (its output is open and
/// locked then), with its stderr collected in the background.
fn start_long_conversion(output: &Path) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let input = test_media("aac_long.mp4");
    let mut child = latentcam_cmd()
        .args(["convert", path_str(&input), path_str(output), "--model", &tiny(), "--steps", "1"])
        .args(["--size", "512x256", "--progress-interval-s", "0.2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen += "\n";
        if line.starts_with("converted ") {
            break;
        }
    }
    assert!(seen.contains("converted "), "the first run did not start converting: {seen}");
    let rest = std::thread::spawn(move || seen + &lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    (child, rest)
}

/// Wait for a run started by [`start_long_conversion`]: its exit status and everything it wrote on stderr.
fn finish((mut child, stderr): (std::process::Child, std::thread::JoinHandle<String>)) -> (Option<i32>, String) {
    let status = child.wait().unwrap();
    (status.code(), stderr.join().unwrap())
}

#[test]
fn a_second_run_on_the_same_output_is_refused_and_the_first_keeps_its_work() {
    let tmp = common::temp_dir();
    let output = tmp.path().join("shared.mp4");
    let first = start_long_conversion(&output);
    // The same file under another spelling.
    let alias: PathBuf = tmp.path().join(".").join("shared.mp4");
    let second = convert(&test_media("aac_short.mp4"), &alias, &[]);
    let (code, err) = finish(first);
    assert_eq!(code, Some(0), "the first run: {err}");
    assert_bad_input(&second, "another latentcam");
    assert_every_frame(&test_media("aac_long.mp4"), &output);
    // `latentcam check` says so too while a run writes; a free output passes.
    let pipeline = tmp.path().join("p.toml");
    let text = |out: &Path| {
        format!(
            "mode = \"offline\"\n[source]\nkind = \"test-pattern\"\nframes = 2\n[model]\ndir = \"{}\"\nsize = [64, 64]\n\
             [[sink]]\nkind = \"file\"\npath = \"{}\"\n",
            tiny(),
            path_str(out)
        )
    };
    std::fs::write(&pipeline, text(&output)).unwrap();
    let running = start_long_conversion(&output);
    let check = latentcam_cmd().args(["check", path_str(&pipeline)]).output().unwrap();
    let _ = finish(running);
    assert_bad_input(&check, "another latentcam");
    let check = latentcam_cmd().args(["check", path_str(&pipeline)]).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn a_recording_replaced_by_another_program_fails_the_run() {
    let tmp = common::temp_dir();
    let output = tmp.path().join("out.mp4");
    let child = start_long_conversion(&output);
    let other = tmp.path().join("other.mp4");
    std::fs::copy(test_media("aac_short.mov"), &other).unwrap();
    let other_content = sha(&other);
    std::fs::rename(&other, &output).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("out.mp4") && err.contains("another program put a different file in its place"), "{err}");
    assert_eq!(sha(&output), other_content, "the other program's file is left as it is");
}

#[test]
fn partial_files_of_killed_runs_are_cleaned_up_and_outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = common::temp_dir();
    let leftover = tmp.path().join(".styled.png.latentcam-Ab12Cd.part");
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let image_out = tmp.path().join("styled.png");
    let out = latentcam_cmd()
        .args(["img2img", path_str(&test_media("exif/upright.png")), path_str(&image_out), "--model", &tiny()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!leftover.exists(), "the leftover of a killed run is removed");
    let video_out = tmp.path().join("styled.mp4");
    let out = convert(&test_media("aac_short.mp4"), &video_out, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&image_out), mode(&video_out), "images and videos get the same permissions");
    assert_ne!(mode(&image_out) & 0o044, 0, "readable by others under the usual umask");
    let hidden: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(hidden.is_empty(), "nothing hidden left behind: {hidden:?}");
}

/// Run `args` under an address-space limit (`ulimit -v`, KB): a real limit the memory check must respect.
fn under_memory_limit(kb: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "2"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_size_that_cannot_fit_is_refused_with_one_that_runs() {
    let tmp = common::temp_dir();
    let input = test_media("exif/upright.png");
    let output = tmp.path().join("big.png");
    let limit_kb = 2_500_000;
    let args = |size: &str| {
        vec![
            "img2img".to_string(),
            path_str(&input).to_string(),
            path_str(&output).to_string(),
            "--model".into(),
            tiny(),
            "--steps".into(),
            "1".into(),
            "--size".into(),
            size.to_string(),
        ]
    };
    let refused = under_memory_limit(limit_kb, &args("2048x1536").iter().map(String::as_str).collect::<Vec<_>>());
    assert_bad_input(&refused, "--size");
    let err = stderr(&refused);
    assert!(err.contains("2048x1536 needs about") && err.contains("ulimit -v"), "{err}");
    let suggested = err
        .split("that fits is ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no suggested size in: {err}"))
        .to_string();
    let (w, h) =
        suggested.split_once('x').map(|(w, h)| (w.parse::<u32>().unwrap(), h.parse::<u32>().unwrap())).unwrap();
    assert!(w > 256 && (f64::from(w) / f64::from(h) - 4.0 / 3.0).abs() < 0.05, "{suggested}");
    let ran = under_memory_limit(limit_kb, &args(&suggested).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ran.status.success(), "the suggested {suggested}: {}", stderr(&ran));
    assert_eq!(image::image_dimensions(&output).unwrap(), (w, h));
}

#[test]
fn an_allocation_failure_while_running_names_the_size() {
    // A model folder whose manifest understates its UNet (its first attention at a quarter of the latent
    // resolution, where it is at full): the check lets a size pass that cannot run under the limit, and ONNX
    // Runtime's allocation fails while running.
    let tmp = common::temp_dir();
    let model = tmp.path().join("understated");
    std::fs::create_dir(&model).unwrap();
    let manifest = std::fs::read_to_string(common::model_dir("tiny-sd-turbo").join("model.toml")).unwrap();
    let tiny = common::model_dir("tiny-sd-turbo");
    let manifest = manifest
        .replace("attention-level = 0", "attention-level = 2")
        .replace("\"unet.onnx\"", &format!("\"{}\"", path_str(&tiny.join("unet.onnx"))))
        .replace("\"vae_encoder.onnx\"", &format!("\"{}\"", path_str(&tiny.join("vae_encoder.onnx"))))
        .replace("\"vae_decoder.onnx\"", &format!("\"{}\"", path_str(&tiny.join("vae_decoder.onnx"))))
        .replace("\"../tiny-clip/", &format!("\"{}/", path_str(&common::model_dir("tiny-clip"))));
    std::fs::write(model.join("model.toml"), manifest).unwrap();
    let output = tmp.path().join("o.png");
    let out = under_memory_limit(
        2_500_000,
        &[
            "img2img",
            path_str(&test_media("exif/upright.png")),
            path_str(&output),
            "--model",
            path_str(&model),
            "--steps",
            "1",
            "--size",
            "1024x768",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ran out of memory at 1024x768") && err.contains("try a smaller --size"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!output.exists());
}

#[test]
fn large_photos_run_at_the_model_native_area_and_are_never_cropped_to_their_centre() {
    let tmp = common::temp_dir();
    // A 12-megapixel 4:3 photo, and one wider than the largest working side.
    for ((w, h), expect) in [((4032u32, 3024u32), (592u32, 448u32)), ((6000, 1000), (1248, 208))] {
        let input = tmp.path().join(format!("photo_{w}x{h}.png"));
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 128]))
            .save(&input)
            .unwrap();
        let output = tmp.path().join(format!("out_{w}x{h}.png"));
        let out = latentcam_cmd()
            .args(["img2img", path_str(&input), path_str(&output), "--model", &tiny(), "--steps", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{w}x{h}: {}", stderr(&out));
        let got = image::image_dimensions(&output).unwrap();
        assert_eq!(got, expect, "{w}x{h}");
        let aspect = |(a, b): (u32, u32)| f64::from(a) / f64::from(b);
        assert!((aspect(got) / aspect((w, h)) - 1.0).abs() < 0.03, "{w}x{h} -> {got:?}: the aspect ratio is kept");
    }
}
