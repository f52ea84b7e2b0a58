//! The real-world test inputs (scripts/make_test_media.sh) are what they claim to be, checked with the ffmpeg
//! helpers (tests/common/ffmpeg.rs) and, for the EXIF stills, the `image` crate. Needs ffmpeg, not ../shared.

mod common;

use std::path::Path;

use common::ffmpeg::{
    StreamInfo, audio_video_offset_s, decode_frames_rgb, decoded_video_frames, display_size, exif_orientation,
    first_packet_time, streams, test_media, video_keyframe_times, video_packet_times,
};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader};

fn video(streams: &[StreamInfo]) -> &StreamInfo {
    streams.iter().find(|s| s.is_video()).expect("a video stream")
}

fn audio(streams: &[StreamInfo]) -> &StreamInfo {
    streams.iter().find(|s| s.is_audio()).expect("an audio stream")
}

fn near(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol
}

#[track_caller]
fn assert_aac(s: &StreamInfo, rate: u32) {
    assert_eq!(s.codec_name, "aac", "{s:?}");
    assert_eq!(s.profile.as_deref(), Some("LC"), "{s:?}");
    assert_eq!(s.sample_rate, Some(rate), "{s:?}");
    assert_eq!(s.channels, Some(2), "{s:?}");
    assert_eq!(s.frame_size, Some(1024), "{s:?}");
}

#[test]
fn aac_clips_are_h264_with_b_frames_and_aac() {
    for (name, seconds, rate) in [
        ("aac_short.mp4", 1.0, 48000),
        ("aac_short.mov", 1.0, 48000),
        ("aac_long.mp4", 4.0, 44100),
        ("aac_long.mov", 4.0, 44100),
    ] {
        let path = test_media(name);
        let s = streams(&path).unwrap();
        assert_eq!(s.len(), 2, "{name}: {s:?}");
        let (v, a) = (video(&s), audio(&s));
        assert_eq!((v.codec_name.as_str(), v.width, v.height), ("h264", Some(320), Some(180)), "{name}");
        assert_eq!(v.pix_fmt.as_deref(), Some("yuv420p"), "{name}");
        assert!(v.has_b_frames.unwrap_or(0) > 0, "{name} should have B-frames: {v:?}");
        assert!(near(v.avg_frame_rate.unwrap(), 25.0, 1e-6), "{name}: {v:?}");
        assert_eq!(v.rotation, 0, "{name}");
        assert_aac(a, rate);
        assert_eq!(v.start_time_s, Some(0.0), "{name}");
        assert_eq!(a.start_time_s, Some(0.0), "{name}: the AAC delay is hidden by an edit list");
        assert!(near(a.duration_s.unwrap(), seconds, 0.03), "{name}: {a:?}");
        assert!(near(v.duration_s.unwrap(), seconds, 1e-6), "{name}: {v:?}");
        let frames = (seconds * 25.0) as u64;
        assert_eq!(v.nb_frames, Some(frames), "{name}");
        assert_eq!(decoded_video_frames(&path).unwrap(), frames, "{name}");
        assert_eq!(video_packet_times(&path).unwrap().len() as u64, frames, "{name}");
    }
    // A keyframe every 25 frames (-g 25): several in the long clip, for seeking and fragmenting.
    let keys = video_keyframe_times(&test_media("aac_long.mp4")).unwrap();
    assert!(keys.len() >= 4, "keyframes at {keys:?}");
    assert!(keys.windows(2).all(|w| w[1] - w[0] <= 1.0 + 1e-6), "keyframes at {keys:?}");
}

#[test]
fn phone_mov_is_an_iphone_style_hevc_main10_portrait() {
    let path = test_media("phone.mov");
    let s = streams(&path).unwrap();
    let v = video(&s);
    assert_eq!(v.codec_name, "hevc");
    assert_eq!(v.profile.as_deref(), Some("Main 10"));
    assert_eq!(v.codec_tag.as_deref(), Some("hvc1"));
    assert_eq!(v.pix_fmt.as_deref(), Some("yuv420p10le"));
    assert_eq!((v.width, v.height), (Some(320), Some(180)), "stored landscape");
    assert_eq!(v.rotation, 90, "an upright iPhone's display matrix");
    assert_aac(audio(&s), 48000);
    assert_eq!(display_size(&path).unwrap(), (180, 320), "ffmpeg shows it portrait");
    assert_eq!(decoded_video_frames(&path).unwrap(), 50);
    assert!(near(audio_video_offset_s(&path).unwrap(), 0.0, 1e-6));
}

#[test]
fn every_rotation_is_covered_and_ffmpeg_applies_it() {
    for (name, rotation, shown) in [
        ("portrait_rot90.mp4", 90, (180, 320)),
        ("portrait_rot270.mp4", 270, (180, 320)),
        ("rot180.mp4", 180, (320, 180)),
    ] {
        let path = test_media(name);
        let s = streams(&path).unwrap();
        assert_eq!(s.len(), 1, "{name}: no audio");
        let v = video(&s);
        assert_eq!((v.codec_name.as_str(), v.width, v.height), ("h264", Some(320), Some(180)), "{name}");
        assert_eq!(v.rotation, rotation, "{name}");
        assert_eq!(display_size(&path).unwrap(), shown, "{name}");
        assert_eq!(decoded_video_frames(&path).unwrap(), 50, "{name}");
    }
    // The three files hold the same coded pictures; only the display matrix differs. Shown, the 90 and 270
    // versions are a half turn apart.
    let cw = decode_frames_rgb(&test_media("portrait_rot90.mp4"), 180, 320).unwrap();
    let ccw = decode_frames_rgb(&test_media("portrait_rot270.mp4"), 180, 320).unwrap();
    assert_eq!(cw.len(), 50);
    assert_eq!(cw[0], rotate_half_turn(&ccw[0]), "rotation 90 vs 270");
    assert_ne!(cw[0], ccw[0]);
}

fn rotate_half_turn(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks(3).rev().flatten().copied().collect()
}

#[test]
fn ten_bit_and_444_h264() {
    for (name, profile, pix_fmt) in
        [("h264_10bit.mp4", "High 10", "yuv420p10le"), ("h264_444.mp4", "High 4:4:4 Predictive", "yuv444p")]
    {
        let path = test_media(name);
        let s = streams(&path).unwrap();
        assert_eq!(s.len(), 1, "{name}: no audio");
        let v = video(&s);
        assert_eq!(v.codec_name, "h264", "{name}");
        assert_eq!(v.profile.as_deref(), Some(profile), "{name}");
        assert_eq!(v.pix_fmt.as_deref(), Some(pix_fmt), "{name}");
        assert_eq!(decoded_video_frames(&path).unwrap(), 25, "{name}");
    }
}

#[test]
fn odd_sizes() {
    for (name, codec, pix_fmt, w, h) in
        [("odd_641x361.mp4", "h264", "yuv444p", 641, 361), ("odd_333x185.mkv", "vp9", "yuv420p", 333, 185)]
    {
        let path = test_media(name);
        let s = streams(&path).unwrap();
        let v = video(&s);
        assert_eq!((v.codec_name.as_str(), v.pix_fmt.as_deref()), (codec, Some(pix_fmt)), "{name}");
        assert_eq!((v.width, v.height), (Some(w), Some(h)), "{name}");
        assert_eq!(display_size(&path).unwrap(), (w, h), "{name}");
        let frames = decode_frames_rgb(&path, w, h).unwrap();
        assert_eq!(frames.len(), 25, "{name}");
        assert_eq!(frames[0].len(), (w * h * 3) as usize, "{name}");
    }
}

#[test]
fn vfr_frame_intervals_differ() {
    let path = test_media("vfr.mp4");
    let times = video_packet_times(&path).unwrap();
    assert_eq!(times.len(), 33);
    assert_eq!(decoded_video_frames(&path).unwrap(), 33);
    let mut ms: Vec<i64> = times.windows(2).map(|w| ((w[1] - w[0]) * 1000.0).round() as i64).collect();
    ms.dedup();
    assert_eq!(ms, [40, 80, 120], "frame intervals (ms) in order; times {times:?}");
    assert_aac(audio(&streams(&path).unwrap()), 48000);
}

#[test]
fn audio_only_files_have_no_video() {
    for name in ["audio_only.m4a", "audio_only.mp4"] {
        let path = test_media(name);
        let s = streams(&path).unwrap();
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        assert_aac(&s[0], 48000);
        assert!(near(s[0].duration_s.unwrap(), 2.0, 0.03), "{name}: {s:?}");
        let err = decoded_video_frames(&path).unwrap_err();
        assert!(err.contains("matches no streams"), "{name}: {err}");
        assert!(first_packet_time(&path, "video").is_err(), "{name}");
    }
}

#[test]
fn late_and_early_audio() {
    // Matroska keeps the AAC encoder delay (1024 samples at 48 kHz) in the first audio timestamp: the sound
    // starts at 0.5 s, the stream at 0.479 s.
    let late = test_media("late_audio.mkv");
    let offset = audio_video_offset_s(&late).unwrap();
    assert!(near(offset, 0.5 - 1024.0 / 48000.0, 0.002), "late_audio.mkv: audio - video = {offset}");
    assert!(near(first_packet_time(&late, "audio").unwrap(), 0.479, 0.002));
    assert_eq!(first_packet_time(&late, "video").unwrap(), 0.0);
    assert_eq!(decoded_video_frames(&late).unwrap(), 50);

    // The video track starts 0.2 s into the MP4 (an edit list), the audio at 0.
    let early = test_media("early_audio.mp4");
    let offset = audio_video_offset_s(&early).unwrap();
    assert!(near(offset, -0.2, 1e-6), "early_audio.mp4: audio - video = {offset}");
    assert!(near(first_packet_time(&early, "video").unwrap(), 0.2, 1e-6));
    // AAC's priming packet: ffprobe shows it before zero, where the edit list hides it.
    let first_audio = first_packet_time(&early, "audio").unwrap();
    assert!((-1024.0 / 48000.0 - 1e-6..=0.0).contains(&first_audio), "{first_audio}");
    assert_eq!(decoded_video_frames(&early).unwrap(), 45);
    let s = streams(&early).unwrap();
    assert!(near(video(&s).start_time_s.unwrap(), 0.2, 1e-6));
    assert_aac(audio(&s), 48000);
}

/// Decodes a still and its EXIF orientation with the `image` crate.
fn still(path: &Path) -> (DynamicImage, Orientation) {
    let mut decoder = ImageReader::open(path).unwrap().with_guessed_format().unwrap().into_decoder().unwrap();
    let orientation = decoder.orientation().unwrap();
    (DynamicImage::from_decoder(decoder).unwrap(), orientation)
}

fn mean_abs_diff(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn exif_stills_carry_their_orientation_and_show_upright() {
    let (upright, o) = still(&test_media("exif/upright.png"));
    assert_eq!(o, Orientation::NoTransforms);
    assert_eq!((upright.width(), upright.height()), (320, 240), "not square: a wrong rotation changes the size");
    for n in 1..=8u8 {
        let path = test_media(&format!("exif/orient_{n}.jpg"));
        let (mut img, orientation) = still(&path);
        assert_eq!(orientation, Orientation::from_exif(n).unwrap(), "orient_{n}.jpg (image crate)");
        assert_eq!(exif_orientation(&path).unwrap(), Some(n), "orient_{n}.jpg (ffprobe)");
        let stored = if n >= 5 { (240, 320) } else { (320, 240) };
        assert_eq!((img.width(), img.height()), stored, "orient_{n}.jpg stored size");
        // Ignoring the tag shows the wrong picture (except for 1); applying it shows the upright one.
        if n > 1 && n < 5 {
            assert!(mean_abs_diff(&img, &upright) > 15.0, "orient_{n}.jpg looks upright without its tag");
        }
        img.apply_orientation(orientation);
        let diff = mean_abs_diff(&img, &upright);
        assert!(diff < 4.0, "orient_{n}.jpg with its tag applied differs from upright.png by {diff:.2} a channel");
        // ffmpeg applies the tag too (a display matrix on the decoded frame): the upright picture.
        assert_eq!(display_size(&path).unwrap(), (320, 240), "orient_{n}.jpg as ffmpeg shows it");
        let shown = decode_frames_rgb(&path, 320, 240).unwrap();
        let shown = DynamicImage::ImageRgb8(image::RgbImage::from_raw(320, 240, shown[0].clone()).unwrap());
        let diff = mean_abs_diff(&shown, &upright);
        assert!(diff < 4.0, "orient_{n}.jpg decoded by ffmpeg differs from upright.png by {diff:.2} a channel");
    }
    // The PNG is lossless: with its eXIf orientation applied it is upright.png exactly. ffmpeg 5.1 does not read
    // a PNG's eXIf chunk.
    let path = test_media("exif/orient_6.png");
    let (mut img, orientation) = still(&path);
    assert_eq!(orientation, Orientation::Rotate90);
    assert_eq!((img.width(), img.height()), (240, 320));
    img.apply_orientation(orientation);
    assert_eq!(img.to_rgb8(), upright.to_rgb8());
    assert_eq!(exif_orientation(&path).unwrap(), None);
    assert_eq!(display_size(&path).unwrap(), (240, 320), "ffmpeg 5.1 shows the PNG as stored");
}

#[test]
fn broken_inputs_are_errors() {
    for name in ["text.mp4", "empty.png"] {
        let path = test_media(name);
        let err = streams(&path).unwrap_err();
        assert!(err.contains("Invalid data") || err.contains("End of file"), "{name}: {err}");
        assert!(decoded_video_frames(&path).is_err(), "{name}");
        assert!(decode_frames_rgb(&path, 16, 16).is_err(), "{name}");
    }
    assert_eq!(std::fs::metadata(test_media("empty.png")).unwrap().len(), 0);
}

#[test]
fn decoding_to_rgb_scales_every_frame() {
    let frames = decode_frames_rgb(&test_media("aac_short.mp4"), 64, 36).unwrap();
    assert_eq!(frames.len(), 25);
    assert!(frames.iter().all(|f| f.len() == 64 * 36 * 3));
    assert_ne!(frames[0], frames[24], "the picture moves");
}

#[test]
fn the_script_is_idempotent_and_quiet_when_done() {
    test_media("aac_short.mp4");
    let start = std::time::Instant::now();
    let out = std::process::Command::new("bash")
        .arg(common::root().join("scripts/make_test_media.sh"))
        .arg(common::ffmpeg::test_media_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "made something again: {}", String::from_utf8_lossy(&out.stdout));
    // It is called by every test binary that uses the media; well under a second when all is there.
    assert!(start.elapsed().as_secs_f64() < 5.0, "took {:?}", start.elapsed());
}
