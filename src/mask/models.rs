//! Where the MediaPipe mask models are and which is which.
//!
//! A path names a folder (every `.onnx` file in it is looked at) or one `.onnx` file. Files are recognised by the
//! names of their graph's ports, read from the protobuf without a session ([`crate::infer::onnx_graph`]):
//! - selfie segmentation: input `input_1`, output `activation_10` (general, 256x256) or `segment_back`
//!   (landscape, 256x144) — the names the TFLite models carry through tf2onnx;
//! - BlazeFace short range: input `input`, outputs `regressors` and `classificators`.
//!
//! The default is `models/mediapipe-selfie` (committed), else `../shared/models/mediapipe-selfie` beside a
//! checkout, looked up under the current directory and then beside the executable, as pose models are.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The models' folder name under `models/` (and `../shared/models/`).
pub const FOLDER: &str = "mediapipe-selfie";

/// What an ONNX file is, by its ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recognised {
    /// MediaPipe selfie segmentation (general or landscape).
    Segmenter,
    /// BlazeFace (MediaPipe face detection).
    FaceDetector,
    /// Anything else, or not readable as ONNX.
    Other,
}

/// The mask models a path holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskModels {
    /// Selfie segmentation models, sorted by file name.
    pub segmenters: Vec<PathBuf>,
    pub face_detector: Option<PathBuf>,
}

/// What the ONNX file at `path` is, from its ports.
pub fn recognise(path: &Path) -> Recognised {
    let Ok((inputs, outputs)) = crate::pose::manifest::onnx_io_names(path) else {
        return Recognised::Other;
    };
    classify(&inputs, &outputs)
}

fn classify(inputs: &[String], outputs: &[String]) -> Recognised {
    let has = |list: &[String], name: &str| list.iter().any(|n| n == name);
    if has(inputs, "input_1") && (has(outputs, "activation_10") || has(outputs, "segment_back")) {
        Recognised::Segmenter
    } else if has(inputs, "input") && has(outputs, "regressors") && has(outputs, "classificators") {
        Recognised::FaceDetector
    } else {
        Recognised::Other
    }
}

/// The mask models at `path` (a folder or an `.onnx` file). A missing path, an unreadable folder and a file that
/// is neither model are errors (bad input, exit code 2) naming what was expected.
pub fn resolve(path: &Path) -> Result<MaskModels> {
    let bad = |problem: String| Error::ModelFolder { path: path.to_path_buf(), problem };
    if path.is_file() {
        return match recognise(path) {
            Recognised::Segmenter => Ok(MaskModels { segmenters: vec![path.to_path_buf()], face_detector: None }),
            Recognised::FaceDetector => Ok(MaskModels { segmenters: Vec::new(), face_detector: Some(path.into()) }),
            Recognised::Other => Err(bad(format!("is neither model: {EXPECTED}"))),
        };
    }
    if !path.is_dir() {
        return Err(bad(format!(
            "does not exist (expected a folder holding MediaPipe's selfie segmentation and face detection models, \
             such as models/{FOLDER})"
        )));
    }
    let entries = std::fs::read_dir(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let mut onnx: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("onnx")))
        .collect();
    onnx.sort();
    let mut found = MaskModels::default();
    for file in onnx {
        match recognise(&file) {
            Recognised::Segmenter => found.segmenters.push(file),
            Recognised::FaceDetector if found.face_detector.is_none() => found.face_detector = Some(file),
            _ => {}
        }
    }
    Ok(found)
}

/// What a mask model file must look like, for messages.
pub const EXPECTED: &str = "expected MediaPipe selfie segmentation (input `input_1` [1,256,256,3] or [1,144,256,3], \
                            output `activation_10` or `segment_back`) or BlazeFace short range (input `input` \
                            [1,128,128,3], outputs `regressors` and `classificators`)";

/// The models' folder when none is named (see the module docs); `models/mediapipe-selfie` when none exists (the
/// error then names it).
pub fn default_folder() -> PathBuf {
    let mut candidates = Vec::new();
    for root in crate::model::models_roots() {
        candidates.push(root.join(FOLDER));
        if let Some(checkout) = root.parent() {
            candidates.push(checkout.join("..").join("shared").join("models").join(FOLDER));
        }
    }
    candidates.into_iter().find(|p| p.is_dir()).unwrap_or_else(|| Path::new("models").join(FOLDER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classifies_by_port_names() {
        assert_eq!(classify(&names(&["input_1"]), &names(&["activation_10"])), Recognised::Segmenter);
        assert_eq!(classify(&names(&["input_1"]), &names(&["segment_back"])), Recognised::Segmenter);
        assert_eq!(classify(&names(&["input"]), &names(&["regressors", "classificators"])), Recognised::FaceDetector);
        assert_eq!(classify(&names(&["input"]), &names(&["regressors"])), Recognised::Other);
        assert_eq!(classify(&names(&["images"]), &names(&["output"])), Recognised::Other);
    }

    #[test]
    fn the_committed_folder_holds_all_three() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(FOLDER);
        let found = resolve(&dir).unwrap();
        let file_names: Vec<String> =
            found.segmenters.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(file_names, ["selfie_segmentation.onnx", "selfie_segmentation_landscape.onnx"]);
        assert_eq!(found.face_detector, Some(dir.join("face_detection_short_range.onnx")));
        let one = resolve(&dir.join("selfie_segmentation.onnx")).unwrap();
        assert_eq!(one.segmenters.len(), 1);
        assert!(one.face_detector.is_none());
    }

    #[test]
    fn refuses_what_is_not_a_mask_model() {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-dwpose/yolox_l.onnx");
        let err = resolve(&tiny).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is neither model"), "{err}");
        let err = resolve(Path::new("/nonexistent/mediapipe")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        // A folder without them resolves to nothing; the loaders say what is missing.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), MaskModels::default());
    }
}
