//! Shared test helpers: paths, the ONNX Runtime, the CLI binary, and the optional ../shared data.
#![allow(dead_code)]

pub mod ffmpeg;
#[cfg(feature = "gstreamer")]
pub mod media;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use latentcam::infer::{ExecutionProvider, Runtime, RuntimeOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_dir(name: &str) -> PathBuf {
    root().join("models").join(name)
}

pub fn golden(path: &str) -> PathBuf {
    root().join("tests").join("golden").join(path)
}

/// ../shared (real media and models). Tests that need it are `#[ignore = "needs ../shared ..."]`:
/// scripts/test.sh runs them when it is there (CI has it), and counts them as skipped, saying why, when not.
pub fn shared() -> PathBuf {
    let dir = root().join("..").join("shared");
    assert!(dir.join("media").is_dir(), "this test needs ../shared (real media and models) beside the checkout");
    dir
}

/// One CPU runtime for the test process (ONNX Runtime is loaded once per process). Core tests need it:
/// scripts/setup.sh installs the library, and a missing one fails the test with that advice.
pub fn runtime() -> Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeOptions {
            library: None,
            execution_provider: ExecutionProvider::Cpu,
            intra_op_threads: Some(2),
            cuda_graph: false,
        })
        .unwrap_or_else(|e| panic!("ONNX Runtime is needed by this test: {e}"))
    })
    .clone()
}

pub fn latentcam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "2"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run latentcam")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The CLI failed on bad input the way the contract says: exit code 2, no panic, and exactly one `error:`
/// line that mentions `needle`.
pub fn assert_bad_input(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected exit code 2; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line; stderr:\n{err}");
    assert!(lines[0].contains(needle), "error line should mention {needle:?}: {}", lines[0]);
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What a live-control test starts from: "a cat", 1 step, strength 0.5, guidance 1, seed 0.
pub fn sample_params() -> latentcam::diffusion::Params {
    latentcam::diffusion::Params {
        prompt: "a cat".into(),
        negative_prompt: String::new(),
        steps: 1,
        strength: 0.5,
        guidance: 1.0,
        seed: 0,
        timesteps: None,
    }
}

/// The limits of a plain run of LCM defaults, without a stream batch.
pub fn sample_limits() -> latentcam::control::Limits {
    latentcam::control::Limits {
        lcm: latentcam::diffusion::scheduler::Lcm::new(Default::default()),
        stream_batch: 1,
        txt2img: false,
    }
}
