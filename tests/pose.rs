//! Pose estimation against the onnxruntime-Python reference (scripts/golden/movenet.py, tests/golden/movenet/).

mod common;

use std::path::PathBuf;

use latentcam::Error;
use latentcam::imaging::load_rgb;
use latentcam::pose::movenet::{self, Letterbox, MoveNet};
use latentcam::pose::{Keypoint, PoseEstimator};
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(common::golden("movenet/cases.json")).expect("tests/golden/movenet/cases.json");
    serde_json::from_str(&text).expect("cases.json")
}

/// The class of ONNX Runtime's int8 kernels this CPU runs (scripts/golden/movenet.py's notes): with VNNI the
/// u8s8 products are summed without the 16-bit saturation of the AVX2 path, and this int8 model's outputs differ.
fn int8_kernels() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo.lines().find_map(|l| l.strip_prefix("flags")).unwrap_or("");
    if flags.split_whitespace().any(|f| f == "avx512_vnni" || f == "avx_vnni") { "vnni" } else { "no-vnni" }
}

/// The reference's raw output and keypoints of `case` for this CPU's int8 kernels: from cases.json when it was
/// made on such a CPU, else from outputs_<class>.json (`scripts/golden/movenet.py --outputs-only`).
fn reference_outputs(golden: &Value, case: &Value) -> (Value, Value) {
    let kernels = int8_kernels();
    if golden["int8_kernels"] == kernels {
        return (case["raw"].clone(), case["keypoints"].clone());
    }
    let file = common::golden(&format!("movenet/outputs_{kernels}.json"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!("no reference outputs for {kernels} int8 kernels: run scripts/golden/movenet.py --outputs-only here")
    });
    let outputs: Value = serde_json::from_str(&text).expect("outputs json");
    let name = case["name"].as_str().unwrap();
    (outputs["cases"][name]["raw"].clone(), outputs["cases"][name]["keypoints"].clone())
}

fn movenet_dir() -> PathBuf {
    common::shared().join("models").join("movenet")
}

fn frame_path(case: &Value) -> PathBuf {
    let frame = case["frame"].as_str().unwrap();
    match frame.strip_prefix("../shared/") {
        Some(rest) => common::shared().join(rest),
        None => common::golden(&format!("movenet/{frame}")),
    }
}

fn pair(v: &Value) -> (u32, u32) {
    (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32)
}

fn keypoints(v: &Value) -> Vec<Keypoint> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| Keypoint {
            x: k[0].as_f64().unwrap() as f32,
            y: k[1].as_f64().unwrap() as f32,
            score: k[2].as_f64().unwrap() as f32,
        })
        .collect()
}

/// The reference transcribes latentcam's resize (fast_image_resize's bilinear convolution, i16 fixed point,
/// vertical pass first) bit for bit, so the letterboxed input must be identical: no tolerance. It has to be exact
/// because this int8 model is touchy: Pillow's BILINEAR, the same filter rounded differently (one level on ~15%
/// of the values), moved the astronaut's keypoints by up to 10.7 px and changed which were above the threshold.
/// With identical inputs, the same ONNX Runtime (1.31, CPU) gives the same raw output (allowed: 1e-5, measured 0)
/// and the mapping to frame pixels the same keypoints (allowed: 1e-3 px for f32 vs f64 arithmetic, measured 0).
const EXACT_RAW: f32 = 1e-5;
const EXACT_PX: f32 = 1e-3;

fn assert_same_keypoints(name: &str, what: &str, ours: &[Keypoint], theirs: &[Keypoint]) {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = (a.x - b.x).abs().max((a.y - b.y).abs()).max((a.score - b.score).abs());
        assert!(d <= EXACT_PX, "{name} ({what}): keypoint {i} {a:?} vs reference {b:?}");
    }
}

#[test]
#[ignore = "needs ../shared (models/movenet)"]
fn movenet_matches_the_python_reference() {
    let golden = golden();
    let threshold = golden["threshold"].as_f64().unwrap() as f32;
    let mut net = MoveNet::load(&common::runtime(), &movenet_dir()).expect("load MoveNet from its folder");
    assert_eq!(net.input_size(), 192);
    assert_eq!(net.threshold(), threshold);
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let frame = load_rgb(&frame_path(case)).unwrap();
        assert_eq!(frame.dimensions(), pair(&case["frame_size"]), "{name}");
        let (want_raw, want_keypoints) = reference_outputs(&golden, case);
        let expected = keypoints(&want_keypoints);

        // Geometry: exactly the reference's.
        let (raw, geometry) = net.estimate_raw(&frame).unwrap();
        let size = case["size"].as_u64().unwrap() as u32;
        let want = Letterbox {
            size,
            frame: frame.dimensions(),
            resized: pair(&case["resized"]),
            offset: pair(&case["offset"]),
        };
        assert_eq!(geometry, want, "{name}: letterbox geometry");

        // Letterbox pixels: identical (padding zero on both).
        let reference = load_rgb(&common::golden(&format!("movenet/{}", case["letterbox"].as_str().unwrap()))).unwrap();
        let reference = ndarray::Array4::from_shape_vec((1, size as usize, size as usize, 3), reference.into_raw())
            .expect("letterbox PNG is S x S RGB");
        let differing = net.input().iter().zip(reference.iter()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} letterboxed values differ from the reference's");

        // Exact path: the reference's input through our session and mapping.
        let raw_exact = net.infer(reference.view()).unwrap();
        let want_raw = want_raw.as_array().unwrap();
        let mut raw_err = 0.0f32;
        for (ours, theirs) in raw_exact.iter().zip(want_raw) {
            for (a, b) in ours.iter().zip(theirs.as_array().unwrap()) {
                raw_err = raw_err.max((a - b.as_f64().unwrap() as f32).abs());
            }
        }
        assert!(raw_err <= EXACT_RAW, "{name}: raw output differs by {raw_err} on the reference's own input");
        let mapped = movenet::to_openpose(&raw_exact, &geometry, threshold);
        assert_same_keypoints(name, "reference input", &mapped.keypoints, &expected);
        assert_eq!(raw, raw_exact, "{name}: the same input, the same output");

        // End to end through the trait.
        let people = net.estimate(&frame).unwrap();
        assert_eq!(people.len(), 1, "{name}: MoveNet SinglePose sees one person here");
        assert_same_keypoints(name, "end to end", &people[0].keypoints, &expected);
        let found = expected.iter().filter(|k| k.score > 0.0).count();
        assert!(found >= 11, "{name}: the reference finds only {found} keypoints; regenerate the golden files?");
    }
}

#[test]
#[ignore = "needs ../shared (models/movenet)"]
fn movenet_loads_from_the_file_and_checks_the_threshold() {
    let file = movenet_dir().join("movenet_lightning_int8.onnx");
    let net = MoveNet::load(&common::runtime(), &file).expect("load the .onnx file");
    let err = net.with_threshold(1.5).err().expect("threshold 1.5 is refused");
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("threshold"), "{err}");
}

#[test]
fn a_model_that_is_not_movenet_is_refused() {
    let vae = common::model_dir("tiny-sd15-lcm-lora").join("vae_decoder.onnx");
    let err = MoveNet::load(&common::runtime(), &vae).err().expect("a VAE decoder is not MoveNet");
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let text = err.chain_text();
    assert!(text.contains("MoveNet") && text.contains("serving_default_input:0"), "{text}");
}

#[test]
fn missing_model_files_are_bad_input() {
    let dir = common::temp_dir();
    let err = MoveNet::load(&common::runtime(), dir.path()).err().expect("empty folder");
    assert!(matches!(err, Error::ModelFolder { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let err = MoveNet::load(&common::runtime(), &dir.path().join("nope.onnx")).err().expect("missing file");
    assert!(matches!(err, Error::ModelLoad { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
}
