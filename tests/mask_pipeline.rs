//! Masks in a running pipeline (issue 21): a pipeline file's `[mask]` through `pipeline::build` (the mask made in
//! the preprocess thread, latent blending in the frame path, the pixel composite at delivery), checked frame by
//! frame in a capturing sink that sees each frame's final mask: wherever it is 0 the output is the input's own
//! pixels exactly; live changes switch the mask off, invert it and keep the faces; `convert --mask` with a mask
//! video as a second source; bad mask input exits 2.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::{GrayImage, Luma};
use latentcam::config::Pipeline;
use latentcam::control::LiveValues;
use latentcam::frame::{Frame, Processed};
use latentcam::pipeline::{Annotator, BuildOptions, MaskAnnotator};
use latentcam::sink::{Sink, StreamEnd};
use latentcam::{Error, Result};

/// What the capturing sink saw: per frame, pixels with mask 0, of them the ones the output kept exactly, and
/// the mean difference from the input where the mask is 255.
#[derive(Default, Debug)]
struct Seen {
    frames: usize,
    kept_pixels: usize,
    kept_exactly: usize,
    changed_pixels: usize,
    changed_difference: f64,
}

struct Capture(Arc<Mutex<Seen>>);

impl Sink for Capture {
    fn write(&mut self, frame: &Processed) -> Result<()> {
        let mask = frame
            .conditioning
            .mask
            .as_ref()
            .ok_or_else(|| Error::Sink { sink: "capture".into(), problem: "a frame without its mask".into() })?;
        let mut seen = self.0.lock().unwrap();
        seen.frames += 1;
        for ((m, i), o) in mask.pixels().zip(frame.input.pixels()).zip(frame.output.pixels()) {
            if m.0[0] == 0 {
                seen.kept_pixels += 1;
                seen.kept_exactly += usize::from(i == o);
            } else if m.0[0] == 255 {
                seen.changed_pixels += 1;
                seen.changed_difference +=
                    i.0.iter().zip(o.0).map(|(a, b)| f64::from(a.abs_diff(b))).sum::<f64>() / 3.0;
            }
        }
        Ok(())
    }
    fn finish(&mut self, _: StreamEnd) -> Result<()> {
        Ok(())
    }
}

/// Build `text` as `latentcam run` does, put the capturing sink in place of its sinks, run it to the end.
fn run_captured(text: &str) -> Seen {
    let tmp = common::temp_dir();
    let file = tmp.path().join("p.toml");
    std::fs::write(&file, text).unwrap();
    let pipeline = Pipeline::load(&file, &[]).unwrap();
    let runtime = common::runtime();
    let mut built =
        latentcam::pipeline::build(&pipeline, &BuildOptions { runtime: &runtime, display: false, extra_outputs: &[] })
            .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    built.parts.sinks = vec![("capture".into(), Box::new(Capture(seen.clone())))];
    latentcam::pipeline::run(built.parts, Arc::default(), &mut |_| {}).unwrap();
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

fn pipeline_text(source: &str, mask: &str, size: &str) -> String {
    format!(
        r#"mode = "offline"
{source}
[model]
dir = "{model}"
size = {size}
[params]
prompt = "an oil painting"
steps = 2
strength = 0.7
[mask]
{mask}
[[sink]]
kind = "null"
"#,
        model = common::model_dir("tiny-sd15-lcm-lora").display(),
    )
}

fn write_mask(dir: &Path, width: u32, height: u32, f: impl Fn(u32, u32) -> u8) -> PathBuf {
    let path = dir.join("mask.png");
    GrayImage::from_fn(width, height, |x, y| Luma([f(x, y)])).save(&path).unwrap();
    path
}

#[test]
fn a_half_black_mask_leaves_that_half_exactly_as_the_input() {
    let tmp = common::temp_dir();
    let mask = write_mask(tmp.path(), 128, 96, |x, _| if x < 64 { 0 } else { 255 });
    for strength_and_feather in [("0.7", 4), ("1.0", 0), ("0.5", 12)] {
        let (strength, feather) = strength_and_feather;
        let text = pipeline_text(
            "[source]\nkind = \"test-pattern\"\nwidth = 128\nheight = 96\nframes = 6",
            &format!("source = \"image\"\nfile = \"{}\"\nfeather-px = {feather}", mask.display()),
            "[64, 48]",
        )
        .replace("strength = 0.7", &format!("strength = {strength}"));
        let seen = run_captured(&text);
        eprintln!("strength {strength}, feather {feather}: {seen:?}");
        assert_eq!(seen.frames, 6);
        assert!(seen.kept_pixels >= 6 * 64 * 48 / 4, "the kept half is there: {seen:?}");
        assert_eq!(seen.kept_exactly, seen.kept_pixels, "every pixel with mask 0 is the input's own");
        assert!(seen.changed_difference / seen.changed_pixels as f64 > 5.0, "the other half was restyled: {seen:?}");
    }
}

#[test]
fn the_person_mask_keeps_the_person_exactly() {
    // A real photo (committed) through the MediaPipe segmenter (committed), faces kept, edges grown and feathered.
    let tmp = common::temp_dir();
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        std::fs::copy(common::golden("dwpose/astronaut_wide.png"), photos.join(name)).unwrap();
    }
    let source = format!("[source]\nkind = \"images\"\npath = \"{}\"\nfps = 10", photos.display());
    let mask = "source = \"segmenter\"\nkeep-faces = true\ngrow-px = 2\nfeather-px = 3";
    let seen = run_captured(&pipeline_text(&source, mask, "[128, 96]"));
    eprintln!("{seen:?}");
    assert!(seen.frames >= 3);
    assert!(seen.kept_pixels > seen.frames * 128 * 96 / 20, "the person is kept (a twentieth of the frame at least)");
    assert_eq!(seen.kept_exactly, seen.kept_pixels);
    assert!(seen.changed_difference / seen.changed_pixels as f64 > 5.0, "the room was restyled: {seen:?}");
}

/// The annotator follows live values: off (change everything, no composite), invert, back on.
#[test]
fn live_values_switch_invert_and_reshape_the_mask() {
    let tmp = common::temp_dir();
    let file = write_mask(tmp.path(), 64, 48, |x, _| if x < 32 { 0 } else { 255 });
    let text = pipeline_text(
        "[source]\nkind = \"test-pattern\"",
        &format!("source = \"image\"\nfile = \"{}\"\nsmoothing = 0\nfeather-px = 0", file.display()),
        "[64, 48]",
    );
    let path = tmp.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let pipeline = Pipeline::load(&path, &[]).unwrap();
    let mask = pipeline.mask.clone().unwrap();
    let mut annotator = MaskAnnotator::new(&common::runtime(), &mask, (64, 48)).unwrap();
    let picture = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 150]));
    let annotate = |annotator: &mut MaskAnnotator| {
        let mut frame = Frame::new(picture.clone());
        annotator.annotate(&mut frame).unwrap();
        let m = frame.conditioning.mask.unwrap();
        (m.get_pixel(0, 0).0[0], m.get_pixel(63, 0).0[0], frame.conditioning.composite_px)
    };
    assert_eq!(annotate(&mut annotator), (0, 255, Some(0)));
    let mut values = latentcam::pipeline::build::live_values(&pipeline, None);
    values.set("mask-invert", &serde_json::json!(true)).unwrap();
    annotator.control(&values);
    assert_eq!(annotate(&mut annotator), (255, 0, Some(0)), "inverted");
    values.set("mask", &serde_json::json!(false)).unwrap();
    annotator.control(&values);
    assert_eq!(annotate(&mut annotator), (255, 255, None), "off: the whole frame changes, nothing composited");
    values.set("mask", &serde_json::json!(true)).unwrap();
    values.set("mask-composite", &serde_json::json!(false)).unwrap();
    values.set("mask-grow-px", &serde_json::json!(4)).unwrap();
    annotator.control(&values);
    let (left, right, composite) = annotate(&mut annotator);
    assert_eq!((left, right, composite), (255, 0, None), "on again, inverted, no composite");
    let refused = values.clone().set("mask-smoothing", &serde_json::json!(1.5)).unwrap_err().to_string();
    assert!(refused.contains("0 to 0.99"), "{refused}");
    let mut plain = LiveValues::new(&pipeline.params, 0, 0.0, 0.0, None, None);
    let e = plain.set("mask", &serde_json::json!(false)).unwrap_err().to_string();
    assert!(e.contains("has no mask"), "{e}");
}

/// `videotestsrc` frames (`pattern`, 20 fps) encoded as H.264 MP4 into `path`.
fn make_video(path: &Path, pattern: &str, frames: u32, (width, height): (u32, u32)) {
    common::media::run_to_eos(&format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,width={width},height={height},framerate=20/1 \
         ! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location={}",
        common::path_str(path)
    ));
}

/// `latentcam convert` of `input` at 64x48 on the tiny `model`, with these flags.
fn convert_masked(input: &Path, output: &Path, model: &str, flags: &[&str]) -> std::process::Output {
    let model = common::model_dir(model);
    let mut args =
        vec!["convert", common::path_str(input), common::path_str(output), "--model", common::path_str(&model)];
    args.extend_from_slice(&["--size", "64x48"]);
    args.extend_from_slice(flags);
    common::latentcam(&args)
}

/// A mask video (white = change: `videotestsrc`'s ball on black) is read frame by frame beside the input; one
/// shorter than the input holds its last frame. The inpainting model runs the same way.
#[test]
fn convert_takes_a_mask_video_as_a_second_source() {
    let tmp = common::temp_dir();
    let (input, ball, short) = (tmp.path().join("in.mp4"), tmp.path().join("ball.mp4"), tmp.path().join("short.mp4"));
    make_video(&input, "smpte", 20, (160, 120));
    make_video(&ball, "ball", 20, (160, 120));
    make_video(&short, "ball", 8, (160, 120));
    for (mask, model) in
        [(&ball, "tiny-sd15-lcm-lora"), (&short, "tiny-sd15-lcm-lora"), (&ball, "tiny-sd15-inpainting-lcm-lora")]
    {
        let output = tmp.path().join("out.mp4");
        let flags = ["--steps", "2", "--mask", "video", "--mask-file", common::path_str(mask)];
        let out = convert_masked(&input, &output, model, &flags);
        let err = common::stderr(&out);
        assert!(out.status.success(), "{}: {err}", mask.display());
        assert_eq!(common::media::probe(&output).unwrap().video_frames, 20, "every frame converted");
        assert_eq!(err.contains("the mask video ended before the input"), mask == &short, "{err}");
    }
}

#[test]
fn bad_mask_input_exits_2_naming_it() {
    let tmp = common::temp_dir();
    let input = tmp.path().join("in.mp4");
    make_video(&input, "smpte", 4, (160, 96));
    let output = tmp.path().join("out.mp4");
    let file = |name: &str| tmp.path().join(name);
    image::RgbImage::from_fn(16, 16, |x, _| image::Rgb([200, 20, x as u8 * 9])).save(file("photo.png")).unwrap();
    GrayImage::new(30, 30).save(file("square.png")).unwrap();
    std::fs::write(file("notes.txt"), "not a video").unwrap();
    let s = |p: PathBuf| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--mask".into(), "image".into()], "--mask-file"),
        (vec!["--mask".into(), "image".into(), "--mask-file".into(), s(file("missing.png"))], "no such file"),
        (vec!["--mask".into(), "image".into(), "--mask-file".into(), s(file("photo.png"))], "is a colour picture"),
        (vec!["--mask".into(), "image".into(), "--mask-file".into(), s(file("square.png"))], "aspect"),
        (vec!["--mask".into(), "video".into(), "--mask-file".into(), s(file("notes.txt"))], "notes.txt"),
        (vec!["--mask".into(), "chroma".into(), "--mask-chroma".into(), "zz".into()], "six hex digits"),
        (vec!["--mask".into(), "person".into()], "--mask"),
        (vec!["--mask".into(), "faces".into(), "--mask-model".into(), s(file("none"))], "no such file or folder"),
        (vec!["--mask".into(), "segmenter".into(), "--mask-grow".into(), "300".into()], "-256 to 256"),
    ];
    for (flags, needle) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = convert_masked(&input, &output, "tiny-sd15-lcm-lora", &[&["--steps", "1"], &flags[..]].concat());
        eprintln!("{flags:?}: {}", common::stderr(&out).lines().find(|l| l.starts_with("error:")).unwrap_or(""));
        common::assert_bad_input(&out, needle);
    }
    // The inpainting model without a mask.
    let out = convert_masked(&input, &output, "tiny-sd15-inpainting-lcm-lora", &[]);
    common::assert_bad_input(&out, "is an inpainting model");
}

/// The shipped pipeline checks out as written (its models are committed), with its mask on the segmenter, faces
/// kept and the composite on.
#[test]
fn the_background_pipeline_checks_out() {
    let file = common::root().join("pipelines/webcam-background.toml");
    let pipeline = Pipeline::load(&file, &[]).unwrap();
    let mask = pipeline.mask.as_ref().expect("a [mask]");
    assert_eq!(mask.spec.source, latentcam::mask::SourceSpec::Segmenter);
    assert!(mask.spec.keep_faces && mask.composite && mask.enabled);
    let out = common::latentcam(&["check", common::path_str(&file)]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mask: Segmenter, faces kept, composite"));
}

/// Two sources joined: a chroma key that takes the whole (green) frame, then a mask image's white half taken
/// away (difference), added (union) or kept alone (intersection).
#[test]
fn two_sources_combine_by_union_difference_and_intersection() {
    use latentcam::mask::{Chroma, Combine, MaskMaker, MaskOptions, MaskSpec, SourceSpec};
    let tmp = common::temp_dir();
    let half = write_mask(tmp.path(), 64, 48, |x, _| if x >= 32 { 255 } else { 0 });
    let frame =
        image::RgbImage::from_fn(
            64,
            48,
            |_, y| if y < 24 { image::Rgb([0, 255, 0]) } else { image::Rgb([200, 40, 90]) },
        );
    let runtime = common::runtime();
    // (top-left, top-right, bottom-left, bottom-right): the key takes the top half, the image the right half.
    for (how, want) in [
        (Combine::Difference, [1.0, 0.0, 0.0, 0.0]),
        (Combine::Union, [1.0, 1.0, 0.0, 1.0]),
        (Combine::Intersection, [0.0, 1.0, 0.0, 0.0]),
    ] {
        let spec = MaskSpec {
            source: SourceSpec::Chroma(Chroma::new([0, 255, 0], 48.0).unwrap()),
            also: Some((SourceSpec::Image(half.clone()), how)),
            keep_faces: false,
            models: latentcam::mask::models::default_folder(),
            options: MaskOptions::default(),
        };
        let mut maker = MaskMaker::new(&runtime, &spec).unwrap();
        let m = maker.mask(&frame).unwrap();
        let got = [m.get(4, 4), m.get(60, 4), m.get(4, 40), m.get(60, 40)];
        assert_eq!(got, want, "{how:?}");
    }
}
