//! Finding the ONNX Runtime shared library.
//!
//! We load ONNX Runtime at run time (`ort`'s `load-dynamic`), so one binary works with the CPU build from PyPI
//! and with GPU builds. ort panics when it cannot dlopen a library it was not told about, so we locate the
//! file ourselves first and hand ort an explicit path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The library file name `scripts/setup.sh` installs.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// Folder (relative to the checkout) where `scripts/setup.sh` puts it.
pub const LOCAL_DIR: &str = ".ort";
/// Environment variable naming the library explicitly.
pub const ENV_VAR: &str = "LATENTCAM_ORT_LIB";
/// ort's own variable; the GPU kit and other ort users set it.
pub const ORT_ENV_VAR: &str = "ORT_DYLIB_PATH";

/// A path the user named (flag first, then `LATENTCAM_ORT_LIB`, then `ORT_DYLIB_PATH`) and where it came from.
fn named(flag: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), "--ort-lib"));
    }
    [ENV_VAR, ORT_ENV_VAR]
        .into_iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()).map(|v| (PathBuf::from(v), var)))
}

/// The default places: `.ort/` (or the bare file) beside the executable or in any folder above it, which
/// covers `target/release/latentcam` and test binaries in a checkout, then `.ort/` under the current directory.
fn default_places() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            out.push(dir.join(LIBRARY_FILE));
            out.push(dir.join(LOCAL_DIR).join(LIBRARY_FILE));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(LOCAL_DIR).join(LIBRARY_FILE));
    }
    out
}

/// The library to load. A path the user named must exist: we never silently look elsewhere.
pub fn locate(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some((path, source)) = named(flag) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::RuntimeLoad { path, cause: crate::error::because(format!("no such file (named by {source})")) })
        };
    }
    let places = default_places();
    places.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let searched: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        Error::RuntimeMissing { searched: searched.join(", ") }
    })
}
