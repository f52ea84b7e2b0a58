//! Which pose estimator a `[pose] model` path means: a `pose.toml` manifest, or the ONNX files themselves,
//! recognised by their graph's input and output names.
//!
//! - A `pose.toml` (the path itself, or in the folder the path names):
//!   `kind = "dwpose"`, `detector = "yolox_l.onnx"`, `pose = "dw-ll_ucoco_384.onnx"`; or `kind = "movenet"`,
//!   `model = "movenet_lightning_int8.onnx"`. Relative paths are relative to the manifest's folder.
//! - A folder without one holding exactly DWPose's two models (a YOLOX detector: input `images`, output `output`;
//!   an RTMPose SimCC model: outputs `simcc_x`, `simcc_y`), under any names: DWPose.
//! - Anything else is MoveNet, resolved and checked by [`super::movenet::MoveNet::load`] as before (a folder
//!   holding one `.onnx` file, or the file); one of DWPose's two models on its own is refused, saying the other
//!   is needed.
//!
//! Recognition reads only the graph's input and output names from the ONNX protobuf (skipping the weights),
//! so it costs no session.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The manifest's file name in a pose model folder.
pub const MANIFEST_FILE: &str = "pose.toml";

/// A pose model, resolved to files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoseModel {
    /// MoveNet SinglePose: an `.onnx` file or a folder holding one (see [`super::movenet::MoveNet::load`]).
    MoveNet { model: PathBuf },
    /// DWPose: a YOLOX person detector and an RTMPose whole-body (SimCC) model.
    DwPose { detector: PathBuf, pose: PathBuf },
}

/// What an ONNX file looks like from its inputs and outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recognised {
    /// Input `images`, output `output`: a YOLOX detector (DWPose's first stage).
    Detector,
    /// Outputs `simcc_x` and `simcc_y`: an RTMPose SimCC model (DWPose's second stage).
    SimccPose,
    /// Anything else (MoveNet, or a model that is no pose model).
    Other,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    kind: String,
    model: Option<PathBuf>,
    detector: Option<PathBuf>,
    pose: Option<PathBuf>,
}

/// Parse a `pose.toml` whose folder is `dir`.
pub fn parse_manifest(manifest: &Path, dir: &Path, text: &str) -> Result<PoseModel> {
    let bad = |problem: String| Error::Manifest { path: manifest.to_path_buf(), problem };
    let m: ManifestFile = toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e.to_string().lines().next().unwrap_or_default().to_string();
        bad(format!("{at}: {}", e.message().trim()))
    })?;
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    match m.kind.as_str() {
        "dwpose" => match (&m.detector, &m.pose, &m.model) {
            (Some(d), Some(p), None) => Ok(PoseModel::DwPose { detector: resolve(d), pose: resolve(p) }),
            (_, _, Some(_)) => Err(bad("kind \"dwpose\" takes `detector` and `pose`, not `model`".into())),
            _ => Err(bad(
                "kind \"dwpose\" needs `detector` (the YOLOX model, e.g. \"yolox_l.onnx\") and `pose` (the RTMPose \
                 model, e.g. \"dw-ll_ucoco_384.onnx\")"
                    .into(),
            )),
        },
        "movenet" => match (&m.model, &m.detector, &m.pose) {
            (Some(model), None, None) => Ok(PoseModel::MoveNet { model: resolve(model) }),
            (None, None, None) => Ok(PoseModel::MoveNet { model: dir.to_path_buf() }),
            _ => Err(bad("kind \"movenet\" takes `model` only".into())),
        },
        other => Err(bad(format!("kind {other:?}: expected \"dwpose\" or \"movenet\""))),
    }
}

/// The pose model `path` names (see the module docs). Paths that do not exist resolve to MoveNet, whose loader
/// reports them.
pub fn resolve(path: &Path) -> Result<PoseModel> {
    if path.is_file() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")) {
            return read_manifest(path);
        }
        return match recognise(path) {
            Recognised::Other => Ok(PoseModel::MoveNet { model: path.to_path_buf() }),
            part => Err(lone_part(path, part)),
        };
    }
    if !path.is_dir() {
        return Ok(PoseModel::MoveNet { model: path.to_path_buf() });
    }
    let manifest = path.join(MANIFEST_FILE);
    if manifest.is_file() {
        return read_manifest(&manifest);
    }
    let mut onnx: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("onnx")))
                .collect()
        })
        .unwrap_or_default();
    onnx.sort();
    let kinds: Vec<Recognised> = onnx.iter().map(|p| recognise(p)).collect();
    match kinds.as_slice() {
        [Recognised::Detector, Recognised::SimccPose] => {
            Ok(PoseModel::DwPose { detector: onnx[0].clone(), pose: onnx[1].clone() })
        }
        [Recognised::SimccPose, Recognised::Detector] => {
            Ok(PoseModel::DwPose { detector: onnx[1].clone(), pose: onnx[0].clone() })
        }
        [part @ (Recognised::Detector | Recognised::SimccPose)] => Err(lone_part(&onnx[0], *part)),
        _ => Ok(PoseModel::MoveNet { model: path.to_path_buf() }),
    }
}

fn read_manifest(manifest: &Path) -> Result<PoseModel> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| Error::Manifest { path: manifest.to_path_buf(), problem: e.to_string() })?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    parse_manifest(manifest, dir, &text)
}

fn lone_part(path: &Path, part: Recognised) -> Error {
    let (this, other) = match part {
        Recognised::Detector => ("DWPose's YOLOX person detector", "the RTMPose pose model (dw-ll_ucoco_384.onnx)"),
        _ => ("DWPose's RTMPose pose model", "the YOLOX person detector (yolox_l.onnx)"),
    };
    Error::ModelFolder {
        path: path.to_path_buf(),
        problem: format!(
            "is {this}; DWPose also needs {other}: put both in one folder with a {MANIFEST_FILE} (kind = \"dwpose\", \
             detector = ..., pose = ...; scripts/export_pose.py fetch makes one)"
        ),
    }
}

/// What `path` looks like from its graph's input and output names; [`Recognised::Other`] when it cannot be read
/// as ONNX (the loader says why).
pub fn recognise(path: &Path) -> Recognised {
    match onnx_io_names(path) {
        Ok((inputs, outputs)) => classify(&inputs, &outputs),
        Err(_) => Recognised::Other,
    }
}

fn classify(inputs: &[String], outputs: &[String]) -> Recognised {
    let has = |list: &[String], name: &str| list.iter().any(|n| n == name);
    if has(outputs, "simcc_x") && has(outputs, "simcc_y") {
        Recognised::SimccPose
    } else if has(inputs, "images") && has(outputs, "output") {
        Recognised::Detector
    } else {
        Recognised::Other
    }
}

/// The names of an ONNX model's graph inputs and outputs, read from the protobuf without loading the weights
/// ([`crate::infer::onnx_graph`]).
pub fn onnx_io_names(path: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let ports = crate::infer::onnx_graph::graph_ports(path)?;
    let names = |ports: Vec<crate::infer::onnx_graph::DeclaredInput>| ports.into_iter().map(|p| p.name).collect();
    Ok((names(ports.inputs), names(ports.outputs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn value_info(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        field(1, name.as_bytes(), &mut v);
        field(2, &[0x0a, 0x02, 0x08, 0x01], &mut v); // a type, skipped
        v
    }

    /// A minimal ModelProto: ir_version, a graph with a node, a 300-byte initializer, the ports.
    fn model(inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut graph = Vec::new();
        field(1, b"\x0a\x01x", &mut graph);
        field(5, &[7u8; 300], &mut graph);
        for i in inputs {
            field(11, &value_info(i), &mut graph);
        }
        for o in outputs {
            field(12, &value_info(o), &mut graph);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m);
        varint(8, &mut m);
        field(7, &graph, &mut m);
        varint(8 << 3 | 2, &mut m); // opset_import after the graph
        varint(2, &mut m);
        m.extend_from_slice(&[0x10, 0x11]);
        m
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_port_names_and_recognises_the_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let det = write(dir.path(), "det.onnx", &model(&["images"], &["output"]));
        assert_eq!(onnx_io_names(&det).unwrap(), (vec!["images".to_string()], vec!["output".to_string()]));
        assert_eq!(recognise(&det), Recognised::Detector);
        let pose = write(dir.path(), "pose.onnx", &model(&["input"], &["simcc_x", "simcc_y"]));
        assert_eq!(recognise(&pose), Recognised::SimccPose);
        let movenet = write(dir.path(), "m.onnx", &model(&["serving_default_input:0"], &["StatefulPartitionedCall:0"]));
        assert_eq!(recognise(&movenet), Recognised::Other);
        let junk = write(dir.path(), "junk.onnx", b"\xff\xff\xff");
        assert!(onnx_io_names(&junk).is_err());
        assert_eq!(recognise(&junk), Recognised::Other);
    }

    #[test]
    fn reads_the_committed_tiny_models() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-dwpose");
        let (i, o) = onnx_io_names(&dir.join("yolox_l.onnx")).unwrap();
        assert_eq!((i, o), (vec!["images".to_string()], vec!["output".to_string()]));
        let (i, o) = onnx_io_names(&dir.join("dw-ll_ucoco_384.onnx")).unwrap();
        assert_eq!((i, o), (vec!["input".to_string()], vec!["simcc_x".to_string(), "simcc_y".to_string()]));
    }

    #[test]
    fn folders_without_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Empty or one unknown model: MoveNet's loader decides (and words the errors) as before.
        assert_eq!(resolve(d).unwrap(), PoseModel::MoveNet { model: d.to_path_buf() });
        let m = write(d, "movenet.onnx", &model(&["input"], &["output_0"]));
        assert_eq!(resolve(d).unwrap(), PoseModel::MoveNet { model: d.to_path_buf() });
        assert_eq!(resolve(&m).unwrap(), PoseModel::MoveNet { model: m.clone() });
        std::fs::remove_file(&m).unwrap();
        // DWPose's two models under any names.
        let pose = write(d, "a_pose.onnx", &model(&["input"], &["simcc_x", "simcc_y"]));
        let err = resolve(d).unwrap_err();
        assert!(matches!(err, Error::ModelFolder { .. }) && err.exit_code() == 2, "{err:?}");
        assert!(err.to_string().contains("YOLOX person detector"), "{err}");
        let det = write(d, "b_det.onnx", &model(&["images"], &["output"]));
        assert_eq!(resolve(d).unwrap(), PoseModel::DwPose { detector: det.clone(), pose: pose.clone() });
        let err = resolve(&det).unwrap_err();
        assert!(err.to_string().contains("RTMPose pose model"), "{err}");
        // A missing path is MoveNet's to report.
        let nope = d.join("nope");
        assert_eq!(resolve(&nope).unwrap(), PoseModel::MoveNet { model: nope.clone() });
    }

    #[test]
    fn manifests() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let toml = write(d, MANIFEST_FILE, b"kind = \"dwpose\"\ndetector = \"det.onnx\"\npose = \"/abs/pose.onnx\"\n");
        let want = PoseModel::DwPose { detector: d.join("det.onnx"), pose: PathBuf::from("/abs/pose.onnx") };
        assert_eq!(resolve(d).unwrap(), want);
        assert_eq!(resolve(&toml).unwrap(), want);
        let parse = |text: &str| parse_manifest(Path::new("/m/pose.toml"), Path::new("/m"), text);
        assert_eq!(
            parse("kind = \"movenet\"\nmodel = \"x.onnx\"").unwrap(),
            PoseModel::MoveNet { model: PathBuf::from("/m/x.onnx") }
        );
        assert_eq!(parse("kind = \"movenet\"").unwrap(), PoseModel::MoveNet { model: PathBuf::from("/m") });
        for (text, needle) in [
            ("kind = \"openpose\"", "expected \"dwpose\" or \"movenet\""),
            ("kind = \"dwpose\"\ndetector = \"d.onnx\"", "needs `detector`"),
            ("kind = \"dwpose\"\ndetector = \"d\"\npose = \"p\"\nmodel = \"m\"", "not `model`"),
            ("kind = \"movenet\"\npose = \"p\"", "`model` only"),
            ("kind = \"dwpose\"\ndetectr = \"d\"", "unknown field"),
            ("detector = ", ""),
        ] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, Error::Manifest { .. }) && err.exit_code() == 2, "{err:?}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
