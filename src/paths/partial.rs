//! Files written whole or not at all: the bytes go to a partial file beside the target, which replaces the
//! target in one rename when complete. A reader never sees half a file, and a hard link to the old target
//! keeps the old content (the target's name moves to a new file; nothing is overwritten in place).
//!
//! Partial files are named after their target, `.NAME.latentcam-XXXXXX.part`, so a user who finds one knows
//! what it was; and each is locked while it is written, so the leftovers of a killed run (the only ones that
//! are not locked) are removed by the next run that writes in that folder.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{parent_folder, plain_io_error};
use crate::error::{Error, Result};

/// Marks a partial file's name (with the `.part` suffix).
const MARK: &str = ".latentcam-";
const SUFFIX: &str = ".part";

/// A partial file being written; [`PartialFile::commit`] puts it in place, dropping it removes it.
pub struct PartialFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl PartialFile {
    /// A new partial file for `target`, in its folder, with the permissions a new file gets there (the
    /// umask's, as any program's output). Leftovers of killed runs in that folder are removed first.
    pub fn new(target: &Path) -> std::io::Result<PartialFile> {
        use std::os::unix::fs::PermissionsExt;
        let dir = parent_folder(target);
        remove_leftovers(&dir);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}{MARK}"))
            .suffix(SUFFIX)
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)?;
        temp.as_file().lock()?;
        Ok(PartialFile { temp, target: target.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Synced to disk, then renamed over the target.
    pub fn commit(self) -> std::io::Result<()> {
        self.temp.as_file().sync_all()?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Remove the partial files of runs that were killed (the ones nobody holds a lock on).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with('.') && name.ends_with(SUFFIX) && name.contains(MARK);
        if !ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else { continue };
        if file.try_lock().is_ok() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed the partial file of an earlier run that did not finish")
                }
                Err(e) => {
                    tracing::debug!(file = %entry.path().display(), error = %e, "cannot remove a leftover partial file")
                }
            }
        }
    }
}

/// Write `bytes` to `path` whole (see the module's notes); errors name `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |e: std::io::Error| Error::write(path, crate::error::because(plain_io_error(&e)));
    let mut partial = PartialFile::new(path).map_err(failed)?;
    std::io::Write::write_all(partial.file_mut(), bytes).map_err(failed)?;
    partial.commit().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_replace_the_name_not_the_file_and_follow_the_umask() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        std::fs::write(&out, b"old").unwrap();
        let link = dir.path().join("link.json");
        std::fs::hard_link(&out, &link).unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(std::fs::read(&link).unwrap(), b"old", "the other name keeps its file");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap().trim();
        let umask = u32::from_str_radix(umask, 8).unwrap();
        let mode = std::fs::metadata(&out).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}");
        assert!(!std::fs::Permissions::from_mode(mode).readonly());
    }

    #[test]
    fn leftovers_of_killed_runs_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".out.mp4.latentcam-abc123.part");
        std::fs::write(&stale, b"half a video").unwrap();
        let live = PartialFile::new(&dir.path().join("a.png")).unwrap();
        let unrelated = dir.path().join(".notes.part");
        std::fs::write(&unrelated, b"mine").unwrap();
        let _second = PartialFile::new(&dir.path().join("b.png")).unwrap();
        assert!(!stale.exists(), "a leftover nobody holds is removed");
        assert!(live.path().exists(), "a partial file being written stays");
        assert!(unrelated.exists(), "files that are not ours stay");
        let name = live.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".a.png.latentcam-") && name.ends_with(".part"), "{name}");
    }
}
