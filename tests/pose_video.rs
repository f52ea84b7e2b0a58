//! `latentcam pose` on a video: every input frame gives one JSON entry with the input's timestamp and one output
//! frame of the input's size; the skeleton is on black, or over the input with `--overlay`; bad input exits 2.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::Path;

use common::media::{probe, run_to_eos};
use common::{assert_bad_input, latentcam, path_str, stderr};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// What the test looks at in one decoded frame.
#[derive(Clone, Copy, Debug)]
struct FrameSummary {
    pts_ns: u64,
    width: u32,
    height: u32,
    /// Mean of all RGB values, 0..255.
    mean: f64,
    /// Pixels with any channel above 40 (not black), as a fraction.
    lit: f64,
}

/// Decode every video frame of `path` with GStreamer's decodebin (not latentcam's source) to RGB.
fn decode(path: &Path) -> Vec<FrameSummary> {
    gst::init().unwrap();
    let description = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=out sync=false",
        path_str(path)
    );
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let caps = sample.caps().unwrap();
        let info = gstreamer_video::VideoInfo::from_caps(caps).unwrap();
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        let (w, h, stride) = (info.width() as usize, info.height() as usize, info.stride()[0] as usize);
        let (mut sum, mut lit) = (0u64, 0u64);
        for y in 0..h {
            for px in map[y * stride..y * stride + w * 3].chunks_exact(3) {
                sum += px.iter().map(|&v| u64::from(v)).sum::<u64>();
                lit += u64::from(px.iter().any(|&v| v > 40));
            }
        }
        frames.push(FrameSummary {
            pts_ns: buffer.pts().unwrap().nseconds(),
            width: w as u32,
            height: h as u32,
            mean: sum as f64 / (w * h * 3) as f64,
            lit: lit as f64 / (w * h) as f64,
        });
    }
    let error = pipeline.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "decoding {}: {error:?}", path.display());
    frames
}

/// About the first `frames` frames of `input` (the encoder may flush a few more) re-encoded into an MKV: a
/// short clip keeps the test quick.
fn clip(input: &Path, output: &Path, frames: u32) {
    let description = format!(
        "filesrc location={} ! decodebin ! videoconvert ! identity eos-after={frames} ! x264enc speed-preset=ultrafast \
         bframes=0 ! h264parse ! matroskamux ! filesink location={}",
        path_str(input),
        path_str(output)
    );
    run_to_eos(&description);
}

fn pose(input: &Path, output: &Path, json: &Path, extra: &[&str]) -> std::process::Output {
    let model = common::shared().join("models/movenet");
    let mut args =
        vec!["pose", path_str(input), path_str(output), "--json", path_str(json), "--model", path_str(&model)];
    args.extend_from_slice(extra);
    latentcam(&args)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn a_video_gives_every_frame_its_pose_with_the_input_timing() {
    let shared = common::shared();
    let tmp = common::temp_dir();
    // About 60 frames (2.4 s) of the street scene, people walking.
    let input = tmp.path().join("chaplin-60.mkv");
    clip(&shared.join("media/chaplin_street_9s.mp4"), &input, 60);
    let source = decode(&input);
    let n = source.len();
    assert!((60..=70).contains(&n), "the clip has {n} frames");

    let (plain, plain_json) = (tmp.path().join("plain.mp4"), tmp.path().join("plain.json"));
    let out = pose(&input, &plain, &plain_json, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The JSON: one entry per input frame, at the input frame's timestamp, 18 [x, y, score] per person.
    let json = read_json(&plain_json);
    let frames = json["frames"].as_array().expect("{\"frames\": [...]}");
    assert_eq!(frames.len(), source.len(), "one JSON entry per input frame");
    for (i, (entry, frame)) in frames.iter().zip(&source).enumerate() {
        let pts_s = entry["pts_s"].as_f64().unwrap();
        assert!((pts_s - frame.pts_ns as f64 / 1e9).abs() < 1e-6, "frame {i}: pts {pts_s} s vs {} ns", frame.pts_ns);
        for person in entry["people"].as_array().unwrap() {
            let keypoints = person["keypoints"].as_array().unwrap();
            assert_eq!(keypoints.len(), 18, "frame {i}: OpenPose-18");
            for k in keypoints {
                let [x, y, score] = [0, 1, 2].map(|j| k[j].as_f64().unwrap());
                assert!((0.0..=1.0).contains(&score), "frame {i}: score {score}");
                if score > 0.0 {
                    assert!(
                        (0.0..=640.0).contains(&x) && (0.0..=360.0).contains(&y),
                        "frame {i}: ({x}, {y}) off the frame"
                    );
                } else {
                    assert_eq!((x, y), (0.0, 0.0), "frame {i}: a missing point is [0, 0, 0]");
                }
            }
        }
    }
    let found =
        |f: &serde_json::Value| {
            f["people"].as_array().unwrap().iter().any(|p| {
                p["keypoints"].as_array().unwrap().iter().filter(|k| k[2].as_f64().unwrap() > 0.0).count() >= 10
            })
        };
    let with_person = frames.iter().filter(|f| found(f)).count();
    eprintln!("{with_person} of {} frames have a person with at least 10 keypoints", frames.len());
    // Measured: every frame of this clip (the walking man in front is found throughout).
    assert!(with_person * 10 >= n * 8, "only {with_person} of {n} frames have a person with >= 10 keypoints");

    // The video: every frame, the input's size and timing; the skeleton on black.
    let (a, b) = (probe(&input).unwrap(), probe(&plain).unwrap());
    assert_eq!(b.video_frames, a.video_frames, "frame count");
    assert_eq!(b.fps, a.fps, "frame rate");
    assert_eq!((b.width, b.height), (640, 360));
    let frame_ns = 40_000_000;
    assert!(
        (b.video_end_ns - b.first_pts_ns.unwrap()).abs_diff(a.video_end_ns - a.first_pts_ns.unwrap()) <= frame_ns,
        "duration {:?} vs {:?}",
        b,
        a
    );
    let decoded = decode(&plain);
    assert_eq!(decoded.len(), n);
    assert!(decoded.iter().all(|f| (f.width, f.height) == (640, 360)));
    let lit = decoded.iter().map(|f| f.lit).fold(0.0, f64::max);
    assert!(lit < 0.1, "the skeleton on black: at most {:.1}% of the pixels lit, got {:.1}%", 10.0, lit * 100.0);
    assert!(decoded.iter().any(|f| f.lit > 0.002), "some skeleton is drawn");

    // --overlay: the same poses over the picture; an MKV this time.
    let (overlay, overlay_json) = (tmp.path().join("overlay.mkv"), tmp.path().join("overlay.json"));
    let out = pose(&input, &overlay, &overlay_json, &["--overlay"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_json(&overlay_json), json, "the same poses");
    let over = decode(&overlay);
    assert_eq!(over.len(), n);
    let differing = over.iter().zip(&decoded).filter(|(o, p)| (o.mean - p.mean).abs() > 20.0).count();
    assert_eq!(differing, n, "every overlay frame shows the picture, not black");
    for (o, s) in over.iter().zip(&source) {
        assert_eq!(o.pts_ns, s.pts_ns, "MKV keeps the input's timestamps");
        assert!((o.mean - s.mean).abs() < 10.0, "the overlay is the input with a skeleton: {o:?} vs {s:?}");
    }
}

#[test]
fn bad_input_and_models_give_exit_code_2() {
    let tmp = common::temp_dir();
    let video = tmp.path().join("ball.mkv");
    run_to_eos(&format!(
        "videotestsrc num-buffers=5 pattern=ball ! video/x-raw,width=64,height=48,framerate=10/1 ! x264enc \
         ! h264parse ! matroskamux ! filesink location={}",
        path_str(&video)
    ));
    let out_mp4 = tmp.path().join("out.mp4");
    let args = |input: &Path, output: &Path, model: &Path| {
        latentcam(&["pose", path_str(input), path_str(output), "--model", path_str(model)])
    };
    let garbage = tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not an onnx model at all").unwrap();
    let no_model = tmp.path().join("no-such-model");
    // A missing input is named; so is a file that is not a video (nor an image).
    assert_bad_input(&args(&tmp.path().join("missing.mp4"), &out_mp4, &garbage), "missing.mp4");
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n".repeat(200)).unwrap();
    assert_bad_input(&args(&text, &out_mp4, &garbage), "notes.mp4");
    // A model that is not there, or not a model.
    assert_bad_input(&args(&video, &out_mp4, &no_model), "no-such-model");
    assert_bad_input(&args(&video, &out_mp4, &garbage), "garbage.onnx");
    // A video needs a video container out; the output may not be the input.
    assert_bad_input(&args(&video, &tmp.path().join("out.png"), &garbage), ".mp4");
    assert_bad_input(&args(&video, &video, &garbage), "is the same file as the input");
    assert_bad_input(&args(&video, &tmp.path().join("no/dir/out.mp4"), &garbage), "does not exist");
    assert!(!out_mp4.exists(), "nothing written for bad input");
    // A still image still gives a still image: a video output name is refused.
    let png = tmp.path().join("still.png");
    image::RgbImage::new(32, 32).save(&png).unwrap();
    assert_bad_input(&args(&png, &out_mp4, &garbage), ".png");
}
