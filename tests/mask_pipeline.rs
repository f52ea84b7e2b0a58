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
    let mut annotator = MaskAnnotator::new(&common::runtime(), &mask).unwrap();
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
