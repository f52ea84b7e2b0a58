//! `latentcam flicker IN OUT`: the JSON's keys and values on videos whose temporal behaviour is known (the input
//! against itself, a noise output, a still output, a converted output), the frame-count mismatch note, and bad
//! input (exit code 2).
#![cfg(feature = "gstreamer")]

mod common;

use std::path::Path;

use common::media::run_to_eos;
use common::{assert_bad_input, latentcam, path_str, stderr};
use serde_json::Value;

/// `frames` frames of videotestsrc's `pattern` at 160x120, 20 fps, uncompressed I420 in AVI (an encoder would
/// smooth the noise patterns away).
fn make_video(path: &Path, pattern: &str, frames: u32) {
    run_to_eos(&format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,width=160,height=120,framerate=20/1 \
         ! videoconvert ! video/x-raw,format=I420 ! avimux ! filesink location={}",
        path_str(path)
    ));
}

const KEYS: [&str; 6] =
    ["input_change", "output_change", "flicker_ratio", "warped_error", "warped_error_input", "warped_ratio"];

/// Run `flicker`, check the JSON's shape and the relations between its values; return it.
fn flicker(input: &Path, output: &Path) -> Value {
    let out = latentcam(&["flicker", path_str(input), path_str(output)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let get = |key: &str| json[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {json}"));
    for key in KEYS {
        let v = get(key);
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    for key in ["input_change", "output_change", "warped_error", "warped_error_input"] {
        assert!(get(key) <= 1.0, "{key} is on the 0..1 scale: {json}");
    }
    // Ratios: half an 8-bit level added to both sides.
    let ratio = |a: f64, b: f64| (a + 0.5 / 255.0) / (b + 0.5 / 255.0);
    assert!((get("flicker_ratio") - ratio(get("output_change"), get("input_change"))).abs() < 1e-9, "{json}");
    assert!((get("warped_ratio") - ratio(get("warped_error"), get("warped_error_input"))).abs() < 1e-9, "{json}");
    // Following the motion explains at least part of the input's own change.
    assert!(get("warped_error_input") <= get("input_change") + 1e-9, "{json}");
    assert_eq!((json["width"].as_u64(), json["height"].as_u64()), (Some(160), Some(120)), "{json}");
    json
}

#[test]
fn flicker_tells_a_stable_output_from_a_flickering_one() {
    let tmp = common::temp_dir();
    let ball = tmp.path().join("ball.avi");
    make_video(&ball, "ball", 20);

    // The input against itself: both ratios exactly 1.
    let same = flicker(&ball, &ball);
    assert_eq!(
        (same["frames"].as_u64(), same["input_frames"].as_u64(), same["output_frames"].as_u64()),
        (Some(20), Some(20), Some(20))
    );
    assert!(same.get("note").is_none(), "{same}");
    assert_eq!(same["flicker_ratio"].as_f64(), Some(1.0), "{same}");
    assert_eq!(same["warped_ratio"].as_f64(), Some(1.0), "{same}");
    let input_change = same["input_change"].as_f64().unwrap();
    assert!(input_change > 0.001, "the ball moves: {same}");
    // The ball moves over a still background: the motion search explains most of the change.
    assert!(same["warped_error_input"].as_f64().unwrap() < 0.5 * input_change, "{same}");

    // New noise in every frame: far more change than the input's, along its motion or not.
    let snow = tmp.path().join("snow.avi");
    make_video(&snow, "snow", 20);
    let noisy = flicker(&ball, &snow);
    assert!(noisy["flicker_ratio"].as_f64().unwrap() > 10.0, "{noisy}");
    assert!(noisy["warped_ratio"].as_f64().unwrap() > 10.0, "{noisy}");
    assert!(noisy["output_change"].as_f64().unwrap() > 0.1, "{noisy}");

    // A still output: (almost) no change at all.
    let checkers = tmp.path().join("checkers.avi");
    make_video(&checkers, "checkers-8", 20);
    let still = flicker(&ball, &checkers);
    assert!(still["output_change"].as_f64().unwrap() < 0.002, "{still}");
    assert!(still["flicker_ratio"].as_f64().unwrap() < 0.5, "{still}");

    // A real conversion (the random tiny model at 64x48, another size and aspect): measured on the output's grid.
    let converted = tmp.path().join("converted.mkv");
    let model = common::model_dir("tiny-sd-turbo");
    let out = latentcam(&[
        "convert",
        path_str(&ball),
        path_str(&converted),
        "--model",
        path_str(&model),
        "--size",
        "64x48",
        "--steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out =
        latentcam(&["flicker", path_str(&ball), path_str(&converted), "--json", path_str(&tmp.path().join("f.json"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("f.json")).unwrap()).unwrap();
    assert_eq!(printed, written, "--json writes what is printed");
    assert_eq!((printed["width"].as_u64(), printed["height"].as_u64()), (Some(64), Some(48)));
    assert_eq!(printed["frames"].as_u64(), Some(20));
    for key in KEYS {
        assert!(printed[key].as_f64().is_some_and(f64::is_finite), "{key}: {printed}");
    }
}

#[test]
fn different_frame_counts_compare_the_common_prefix_and_say_so() {
    let tmp = common::temp_dir();
    let (long, short) = (tmp.path().join("long.avi"), tmp.path().join("short.avi"));
    make_video(&long, "ball", 20);
    make_video(&short, "ball", 12);
    let json = flicker(&long, &short);
    assert_eq!(
        (json["frames"].as_u64(), json["input_frames"].as_u64(), json["output_frames"].as_u64()),
        (Some(12), Some(20), Some(12))
    );
    let note = json["note"].as_str().expect("a note");
    assert!(note.contains("20") && note.contains("12"), "{note}");
    // The same 12 frames of the same picture: ratio 1.
    assert_eq!(json["flicker_ratio"].as_f64(), Some(1.0), "{json}");
}

#[test]
fn bad_input_gives_exit_code_2() {
    let tmp = common::temp_dir();
    let video = tmp.path().join("ball.avi");
    make_video(&video, "ball", 5);
    let one = tmp.path().join("one-frame.avi");
    make_video(&one, "ball", 1);
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n".repeat(200)).unwrap();
    let run = |a: &Path, b: &Path| latentcam(&["flicker", path_str(a), path_str(b)]);
    assert_bad_input(&run(&tmp.path().join("missing.avi"), &video), "missing.avi");
    assert_bad_input(&run(&video, &tmp.path().join("gone.avi")), "gone.avi");
    assert_bad_input(&run(&video, &text), "notes.mp4");
    assert_bad_input(&run(&one, &video), "one-frame.avi");
    assert_bad_input(&run(&video, &one), "at least 2");
    let out = latentcam(&[
        "flicker",
        path_str(&video),
        path_str(&video),
        "--json",
        path_str(&tmp.path().join("no/dir/f.json")),
    ]);
    assert_bad_input(&out, "does not exist");
}
