//! Output paths, probed before any work is done: the one place that decides whether a file can be written
//! where the user asked (file sinks, PNG folders, still images, recordings being re-muxed).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The folder a file goes in (`.` for a bare name).
pub fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `folder` exists and a file can be created in it (errors name `output`, what the user asked for). The one
/// place outputs are probed: file sinks, PNG folders and still images.
pub fn probe_writable_folder(output: &Path, folder: &Path) -> Result<()> {
    let bad = |problem: String| Error::Output { path: output.to_path_buf(), problem };
    if !folder.is_dir() {
        return Err(bad(format!("folder {} does not exist", folder.display())));
    }
    tempfile::Builder::new()
        .prefix(".latentcam-")
        .tempfile_in(folder)
        .map(drop)
        .map_err(|e| bad(format!("cannot write in {}: {e}", folder.display())))
}
