//! Masks: the segmenter and BlazeFace against MediaPipe's own Python solutions (scripts/golden/mask.py,
//! tests/golden/mask/), the committed models, and `latentcam mask` on good and bad input.

mod common;

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, RgbImage};
use latentcam::imaging::load_rgb;
use latentcam::mask::segmenter::SegmenterKind;
use latentcam::mask::{FaceDetector, Mask, MaskOptions, MaskShaper, MaskSource, Segmenter};
use serde_json::Value;

fn models() -> PathBuf {
    common::model_dir("mediapipe-selfie")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(common::golden("mask/faces.json")).expect("tests/golden/mask/faces.json");
    serde_json::from_str(&text).expect("faces.json")
}

/// The golden cases as scripts/golden/mask.py makes them: two photos and two crops of the astronaut.
fn cases() -> Vec<(&'static str, RgbImage)> {
    let media = common::shared().join("media");
    let camera = load_rgb(&media.join("camera.png")).unwrap();
    let astronaut = load_rgb(&media.join("astronaut.png")).unwrap();
    let wide = image::imageops::crop_imm(&astronaut, 0, 0, 512, 288).to_image();
    let tall = image::imageops::crop_imm(&astronaut, 112, 0, 288, 512).to_image();
    vec![("camera", camera), ("astronaut", astronaut), ("astronaut_wide", wide), ("astronaut_tall", tall)]
}

/// A 16-bit golden mask as probabilities.
fn golden_mask(file: &str) -> Vec<f32> {
    let img = image::open(common::golden(&format!("mask/{file}"))).unwrap().to_luma16();
    img.as_raw().iter().map(|&v| f32::from(v) / 65535.0).collect()
}

/// Intersection over union of the two masks binarised at 0.5.
fn iou(a: &[f32], b: &[f32]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x >= 0.5, y >= 0.5);
        inter += usize::from(x && y);
        union += usize::from(x || y);
    }
    if union == 0 { 1.0 } else { inter as f64 / union as f64 }
}

#[test]
#[ignore = "needs ../shared (media)"]
fn segmenter_matches_mediapipe() {
    let golden = golden();
    let mut segmenter = Segmenter::load(&common::runtime(), &models()).unwrap();
    for (name, image) in cases() {
        for (model, kind) in [("general", SegmenterKind::General), ("landscape", SegmenterKind::Landscape)] {
            let ours = segmenter.person_using(&image, kind).unwrap();
            assert_eq!(ours.dimensions(), image.dimensions());
            let ours: Vec<f32> = ours.values().iter().copied().collect();
            let theirs = golden_mask(golden["cases"][name]["masks"][model]["file"].as_str().unwrap());
            let iou = iou(&ours, &theirs);
            let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("{name} {model}: IoU {iou:.6}, max |diff| {max_diff:.2e}");
            assert!(iou >= 0.99, "{name} {model}: IoU {iou}");
            assert!(max_diff < 0.01, "{name} {model}: max |diff| {max_diff}");
        }
    }
}

#[test]
#[ignore = "needs ../shared (media)"]
fn faces_match_mediapipe() {
    let golden = golden();
    let mut detector = FaceDetector::load(&common::runtime(), &models()).unwrap();
    for (name, image) in cases() {
        let ours = detector.detect(&image).unwrap();
        let theirs = golden["cases"][name]["faces"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: faces");
        for (face, want) in ours.iter().zip(theirs) {
            let f = |v: &Value| v.as_f64().unwrap() as f32;
            let b = want["box"].as_array().unwrap();
            let box_err = [face.left - f(&b[0]), face.top - f(&b[1]), face.width - f(&b[2]), face.height - f(&b[3])]
                .iter()
                .fold(0.0f32, |m, d| m.max(d.abs()));
            let kp_err = face
                .keypoints
                .iter()
                .zip(want["keypoints"].as_array().unwrap())
                .map(|(&(x, y), k)| (x - f(&k[0])).abs().max((y - f(&k[1])).abs()))
                .fold(0.0f32, f32::max);
            eprintln!("{name}: box off by {box_err:.4} px, keypoints by {kp_err:.4} px, score {}", face.score);
            assert!(box_err <= 2.0 && kp_err <= 2.0, "{name}: box {box_err} px, keypoints {kp_err} px");
            assert!((face.score - f(&want["score"])).abs() < 1e-3, "{name}: score {}", face.score);
            // The kept ellipse holds the eyes, nose, mouth and ears.
            let kept = latentcam::mask::faces::face_ellipses(image.width(), image.height(), std::slice::from_ref(face));
            for &(x, y) in &face.keypoints {
                assert_eq!(kept.get(x as u32, y as u32), 1.0, "{name}: keypoint {x},{y} outside the kept ellipse");
            }
        }
    }
}

#[test]
fn committed_models_load_and_pick_by_aspect() {
    let rt = common::runtime();
    let mut segmenter = Segmenter::load(&rt, &models()).unwrap();
    assert_eq!(segmenter.kinds(), [SegmenterKind::General, SegmenterKind::Landscape]);
    assert_eq!(segmenter.kind_for(1280, 720), SegmenterKind::Landscape);
    assert_eq!(segmenter.kind_for(640, 480), SegmenterKind::General);
    assert_eq!(segmenter.kind_for(480, 640), SegmenterKind::General);
    // A flat gray frame: a mask of the frame's size, in 0..1; as a source, the background changes.
    let frame = RgbImage::from_pixel(320, 180, image::Rgb([128, 128, 128]));
    let person = segmenter.person(&frame).unwrap();
    assert_eq!(person.dimensions(), (320, 180));
    let change = segmenter.mask(&frame).unwrap();
    assert!((person.coverage() + change.coverage() - 1.0).abs() < 1e-4);
    // One file only: just that model.
    let one = Segmenter::load(&rt, &models().join("selfie_segmentation.onnx")).unwrap();
    assert_eq!(one.kinds(), [SegmenterKind::General]);
    assert_eq!(one.kind_for(1280, 720), SegmenterKind::General);
    // No face in a flat frame.
    let mut faces = FaceDetector::load(&rt, &models()).unwrap();
    assert!(faces.detect(&frame).unwrap().is_empty());
    assert_eq!(faces.mask(&frame).unwrap().coverage(), 1.0, "no face: everything changes");
    // The segmenter's folder without a face model, and the other way round, say what is missing.
    let err = FaceDetector::load(&rt, &models().join("selfie_segmentation.onnx")).err().unwrap();
    assert!(err.to_string().contains("holds no BlazeFace"), "{err}");
    let err = Segmenter::load(&rt, &models().join("face_detection_short_range.onnx")).err().unwrap();
    assert!(err.to_string().contains("holds no MediaPipe selfie segmentation"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
#[ignore = "needs ../shared (media)"]
fn smoothing_reduces_flicker_on_a_panned_still() {
    // A clip made from camera.png: a 448x448 window panning 1 px right and 1 px down per frame. The picture moves
    // steadily (no second difference), so the mask's second difference is the segmenter's own wobble (its
    // input, decimated from 448 to 256, is sampled at a new phase every frame).
    let media = common::shared().join("media");
    let still = load_rgb(&media.join("camera.png")).unwrap();
    let mut segmenter = Segmenter::load(&common::runtime(), &models()).unwrap();
    let raw: Vec<Mask> = (0..40u32)
        .map(|t| segmenter.person(&image::imageops::crop_imm(&still, 10 + t, 10 + t, 448, 448).to_image()).unwrap())
        .collect();
    let plain = flicker(&raw);
    for smoothing in [0.5f32, 0.8] {
        let mut shaper = MaskShaper::new(MaskOptions { smoothing, ..Default::default() }).unwrap();
        let smoothed: Vec<Mask> = raw.iter().map(|m| shaper.shape(m.clone())).collect();
        // (from frame 10: the average has settled)
        let steady = flicker(&smoothed[10..]);
        let plain_settled = flicker(&raw[10..]);
        eprintln!(
            "camera.png panned 1 px/frame: flicker {plain_settled:.5} -> {steady:.5} ({:.0}% less) with smoothing \
             {smoothing} (all frames: {plain:.5})",
            100.0 * (1.0 - steady / plain_settled)
        );
        assert!(steady < plain_settled * 0.7, "smoothing {smoothing}: {plain_settled} -> {steady}");
    }
}

/// Mean absolute second difference over time, `|m[t+1] - 2 m[t] + m[t-1]|`: zero for a mask that stands still or
/// moves steadily, large for one that flickers back and forth.
fn flicker(masks: &[Mask]) -> f64 {
    let triples = masks.windows(3).map(|w| {
        let (a, b, c) = (w[0].values(), w[1].values(), w[2].values());
        let sum: f64 =
            ndarray::Zip::from(a).and(b).and(c).fold(0.0, |s, &x, &y, &z| s + f64::from((z - 2.0 * y + x).abs()));
        sum / a.len() as f64
    });
    triples.sum::<f64>() / (masks.len() - 2) as f64
}

#[test]
#[ignore = "needs ../shared (media)"]
fn smoothing_reduces_flicker_on_a_real_clip() {
    // chaplin_street_9s.mp4 (people walking in a street: the segmenter finds them only in part, and its mask
    // flickers), decoded by ffmpeg at 320x240.
    let clip = common::shared().join("media/chaplin_street_9s.mp4");
    let (w, h) = (320u32, 240u32);
    let frames = common::ffmpeg::decode_frames_rgb(&clip, w, h).expect("ffmpeg decodes the clip");
    let mut segmenter = Segmenter::load(&common::runtime(), &models()).unwrap();
    let raw: Vec<Mask> =
        frames.into_iter().map(|rgb| segmenter.person(&RgbImage::from_raw(w, h, rgb).unwrap()).unwrap()).collect();
    let plain = flicker(&raw);
    for smoothing in [0.5f32, 0.8] {
        let mut shaper = MaskShaper::new(MaskOptions { smoothing, ..Default::default() }).unwrap();
        let smoothed: Vec<Mask> = raw.iter().map(|m| shaper.shape(m.clone())).collect();
        let steady = flicker(&smoothed);
        // What it costs: how far the smoothed mask is from this frame's own.
        let lag = raw.iter().zip(&smoothed).map(|(a, b)| {
            a.values().iter().zip(b.values()).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>()
                / a.values().len() as f64
        });
        let lag = lag.sum::<f64>() / raw.len() as f64;
        eprintln!(
            "chaplin_street_9s ({} frames): flicker {plain:.5} -> {steady:.5} ({:.0}% less) with smoothing {smoothing}; \
             mean |smoothed - raw| {lag:.5}",
            raw.len(),
            100.0 * (1.0 - steady / plain)
        );
        assert!(steady < plain * 0.7, "smoothing {smoothing}: {plain} -> {steady}");
    }
}

fn write_png(dir: &Path, name: &str, image: DynamicImage) -> PathBuf {
    let path = dir.join(name);
    image.save(&path).unwrap();
    path
}

#[test]
fn cli_chroma_mask_and_json() {
    let dir = common::temp_dir();
    // Left half green, right half red.
    let frame = RgbImage::from_fn(64, 32, |x, _| image::Rgb(if x < 32 { [0, 255, 0] } else { [255, 0, 0] }));
    let input = write_png(dir.path(), "in.png", DynamicImage::ImageRgb8(frame));
    let output = dir.path().join("mask.png");
    let json = dir.path().join("mask.json");
    let out = common::latentcam(&[
        "mask",
        common::path_str(&input),
        common::path_str(&output),
        "--source",
        "chroma=00ff00:40",
        "--json",
        common::path_str(&json),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mask = image::open(&output).unwrap();
    assert_eq!(mask.color(), image::ColorType::L8, "a grayscale PNG");
    let mask = mask.to_luma8();
    assert_eq!((mask.get_pixel(0, 0)[0], mask.get_pixel(63, 31)[0]), (255, 0));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["coverage"], 0.5);
    assert_eq!((report["width"].as_u64(), report["height"].as_u64()), (Some(64), Some(32)));
    // Inverted, grown by 4 px: the red half and 4 px into the green.
    let out = common::latentcam(&[
        "mask",
        common::path_str(&input),
        common::path_str(&output),
        "--source",
        "chroma=00ff00",
        "--invert",
        "--grow",
        "4",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mask = image::open(&output).unwrap().to_luma8();
    assert_eq!((mask.get_pixel(27, 0)[0], mask.get_pixel(28, 0)[0]), (0, 255));
}

#[test]
#[ignore = "needs ../shared (media)"]
fn cli_segmenter_keeps_the_person_and_the_face() {
    let dir = common::temp_dir();
    let input = common::shared().join("media/astronaut.png");
    let output = dir.path().join("mask.png");
    let json = dir.path().join("mask.json");
    let args = [common::path_str(&input), common::path_str(&output), "--json", common::path_str(&json)];
    let out = common::latentcam(&[&["mask"][..], &args[..], &["--keep-faces", "--threshold", "0.5"][..]].concat());
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let faces = report["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    // The golden person covers 54.5% at 0.5: the background is the rest, less the face.
    let coverage = report["coverage"].as_f64().unwrap();
    assert!((0.40..0.46).contains(&coverage), "coverage {coverage}");
    let mask = image::open(&output).unwrap().to_luma8();
    let b = &faces[0]["box"];
    let (cx, cy) = ((b[0].as_f64().unwrap() + b[2].as_f64().unwrap() / 2.0), b[1].as_f64().unwrap() + 4.0);
    assert_eq!(mask.get_pixel(cx as u32, cy as u32)[0], 0, "the forehead is kept");
    assert_eq!(mask.get_pixel(500, 20)[0], 255, "the background changes");
}

#[test]
fn cli_bad_mask_files_and_flags_exit_2() {
    let dir = common::temp_dir();
    let d = dir.path();
    let input = write_png(d, "in.png", DynamicImage::ImageRgb8(RgbImage::new(64, 36)));
    let output = d.join("mask.png");
    let run = |extra: &[&str]| {
        let args = [&["mask", common::path_str(&input), common::path_str(&output)][..], extra].concat();
        common::latentcam(&args)
    };
    let photo = RgbImage::from_fn(64, 36, |x, y| image::Rgb([x as u8 * 4, 255 - y as u8 * 7, 30]));
    let photo = write_png(d, "photo.png", DynamicImage::ImageRgb8(photo));
    let clear = image::RgbaImage::from_pixel(64, 36, image::Rgba([255, 255, 255, 128]));
    let clear = write_png(d, "clear.png", DynamicImage::ImageRgba8(clear));
    let square = write_png(d, "square.png", DynamicImage::ImageLuma8(GrayImage::new(50, 50)));
    std::fs::write(d.join("text.png"), "not a png").unwrap();
    let image_arg = |p: &Path| format!("image={}", p.display());
    for (source, needle) in [
        (image_arg(&d.join("missing.png")), "no such file"),
        (image_arg(&d.join("text.png")), "not a PNG or JPEG"),
        (image_arg(&photo), "is a colour picture"),
        (image_arg(&clear), "has transparent pixels"),
        (image_arg(&square), "is 50x50 (aspect 1.000) but the frames are 64x36"),
    ] {
        let out = run(&["--source", source.as_str()]);
        common::assert_bad_input(&out, needle);
        assert!(common::stderr(&out).contains("mask image"), "{}", common::stderr(&out));
        assert!(!output.exists(), "no output for a bad mask");
    }
    common::assert_bad_input(&run(&["--source", "person"]), "--source");
    common::assert_bad_input(&run(&["--source", "chroma=xyz"]), "six hex digits");
    common::assert_bad_input(&run(&["--threshold", "1.5"]), "--threshold");
    common::assert_bad_input(&run(&["--grow", "-999"]), "--grow");
    common::assert_bad_input(&run(&["--feather", "-1"]), "--feather");
    common::assert_bad_input(&run(&["--model", common::path_str(&d.join("nowhere"))]), "does not exist");
    common::assert_bad_input(&run(&["--model", common::path_str(&input)]), "is neither model");
}

/// Each source's and the shaping's cost per frame, for BENCHMARKS.md (in release:
/// `cargo test --release --test mask mask_cost -- --ignored --nocapture`; uses ../shared's astronaut.png).
#[test]
#[ignore = "a measurement, run by hand"]
fn mask_cost() {
    use latentcam::mask::{Chroma, MaskMaker, MaskSpec, SourceSpec};
    let astronaut = load_rgb(&common::shared().join("media/astronaut.png")).unwrap();
    let rt = common::runtime();
    let time = |what: &str, size: (u32, u32), run: &mut dyn FnMut()| {
        for _ in 0..3 {
            run();
        }
        let rounds = 20;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            run();
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
        eprintln!("{}x{} {what}: {ms:.2} ms", size.0, size.1);
    };
    for size in [(512u32, 512u32), (1280, 720)] {
        let frame = latentcam::imaging::resize_cover(&astronaut, size.0, size.1).unwrap();
        let mut segmenter = Segmenter::load(&rt, &models()).unwrap();
        time("segmenter (person mask at frame size)", size, &mut || drop(segmenter.person(&frame).unwrap()));
        let mut faces = FaceDetector::load(&rt, &models()).unwrap();
        time("faces (detect + ellipses)", size, &mut || drop(faces.mask(&frame).unwrap()));
        let mut chroma = Chroma::parse("00ff00").unwrap();
        time("chroma", size, &mut || drop(chroma.mask(&frame).unwrap()));
        let soft = segmenter.person(&frame).unwrap();
        for (name, options) in [
            ("threshold 0.5", MaskOptions { threshold: Some(0.5), ..Default::default() }),
            ("grow 8 px", MaskOptions { grow_px: 8, ..Default::default() }),
            ("feather 8 px", MaskOptions { feather_px: 8.0, ..Default::default() }),
            ("smoothing 0.5", MaskOptions { smoothing: 0.5, ..Default::default() }),
        ] {
            let mut shaper = MaskShaper::new(options).unwrap();
            time(&format!("shaping: {name}"), size, &mut || drop(shaper.shape(soft.clone())));
        }
        let spec = MaskSpec {
            source: SourceSpec::Segmenter,
            also: None,
            keep_faces: true,
            models: models(),
            options: MaskOptions {
                threshold: Some(0.5),
                grow_px: 4,
                feather_px: 6.0,
                smoothing: 0.5,
                ..Default::default()
            },
        };
        let mut maker = MaskMaker::new(&rt, &spec).unwrap();
        time("streamer's mask (segmenter, keep faces, threshold, grow 4, feather 6, smoothing)", size, &mut || {
            drop(maker.mask(&frame).unwrap())
        });
    }
}
