//! Paths a command reads and writes, decided before any work is done: whether a file can be written where the
//! user asked, whether an output is an input (or another output) under another name, whether another latentcam
//! is writing it, and how files are replaced so that no reader ever sees half of one.
//!
//! Files are compared by what the filesystem says they are (device and inode), not by their names: a hard
//! link, a symlink or a `..` names the same file as the path it points at.

mod lock;
mod partial;

use std::path::{Path, PathBuf};

pub use self::lock::{OutputLock, lock_outputs, probe_unlocked};
pub use self::partial::{PartialFile, write_atomically};
use crate::error::{Error, Result};

/// The folder a file goes in (`.` for a bare name).
pub fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `folder` exists and a file can be created in it (errors name `output`, what the user asked for, and the
/// folder, never the probe's temporary file). The one place outputs are probed.
pub fn probe_writable_folder(output: &Path, folder: &Path) -> Result<()> {
    let bad = |problem: String| Error::Output { path: output.to_path_buf(), problem };
    if !folder.is_dir() {
        return Err(bad(format!("folder {} does not exist", folder.display())));
    }
    tempfile::Builder::new()
        .prefix(".latentcam-probe-")
        .tempfile_in(folder)
        .map(drop)
        .map_err(|e| bad(format!("cannot write in {}: {}", folder.display(), plain_io_error(&e))))
}

/// An I/O error as the OS names it, without the path a library may have added (a temporary file's).
pub fn plain_io_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

/// A file as the filesystem knows it: two paths with the same identity are one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub device: u64,
    pub inode: u64,
}

impl FileId {
    /// The identity of the file at `path` (symlinks followed); None when nothing is there.
    pub fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileId { device: meta.dev(), inode: meta.ino() })
    }
}

/// Where a path leads once its folder is resolved (symlinks and `..` in the folder followed), for paths whose
/// file does not exist yet: the folder's identity and the file's name.
fn location(path: &Path) -> Option<(FileId, std::ffi::OsString)> {
    let name = path.file_name()?.to_os_string();
    Some((FileId::of(&parent_folder(path))?, name))
}

/// Whether two paths name one file: the same existing file (by identity), or the same place in the same folder.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (FileId::of(a), FileId::of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => location(a).is_some_and(|l| Some(l) == location(b)),
    }
}

/// A path a command uses, and what it is to the user (`input`, `--json`, `sink 1 (file)`), for messages.
#[derive(Clone, Debug)]
pub struct NamedPath {
    pub role: String,
    pub path: PathBuf,
}

impl NamedPath {
    pub fn new(role: impl Into<String>, path: impl Into<PathBuf>) -> NamedPath {
        NamedPath { role: role.into(), path: path.into() }
    }
}

/// "as the --json, " for outputs that are not the command's main one (the error already says "output PATH").
fn as_role(w: &NamedPath) -> String {
    if w.role == "output" { String::new() } else { format!("as the {}, ", w.role) }
}

/// Every output must be a file of its own: not one of the inputs (writing it would destroy what is being
/// read, and was found only after the run had done so), and not another output (one would overwrite the other).
pub fn check_distinct(reads: &[NamedPath], writes: &[NamedPath]) -> Result<()> {
    for (i, w) in writes.iter().enumerate() {
        if let Some(r) = reads.iter().find(|r| same_file(&w.path, &r.path)) {
            return Err(Error::Output {
                path: w.path.clone(),
                problem: format!(
                    "{}is the same file as the {} {}: writing it would destroy the {}",
                    as_role(w),
                    r.role,
                    r.path.display(),
                    r.role
                ),
            });
        }
        if let Some(other) = writes[..i].iter().find(|o| same_file(&w.path, &o.path)) {
            return Err(Error::Output {
                path: w.path.clone(),
                problem: format!(
                    "{}is the same file as the {} {}: each output needs a file of its own",
                    as_role(w),
                    other.role,
                    other.path.display(),
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_link_or_a_symlink_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.mp4");
        std::fs::write(&input, b"video").unwrap();
        let hard = dir.path().join("hard.mp4");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.mp4");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let dotted = dir.path().join("sub").join("..").join("in.mp4");
        for alias in [&hard, &soft, &dotted] {
            assert!(same_file(&input, alias), "{}", alias.display());
        }
        assert!(!same_file(&input, &dir.path().join("other.mp4")));
        // Not yet existing: the same place through a different spelling of the folder.
        let new = dir.path().join("new.json");
        assert!(same_file(&new, &dir.path().join("sub").join("..").join("new.json")));
        let reads = [NamedPath::new("input", &input)];
        let e = check_distinct(&reads, &[NamedPath::new("output", &hard)]).unwrap_err();
        assert!(e.to_string().contains("is the same file as the input"), "{e}");
        let e = check_distinct(&[], &[NamedPath::new("output", &new), NamedPath::new("--json", &new)]).unwrap_err();
        assert!(e.to_string().contains("as the --json, is the same file as the output"), "{e}");
        check_distinct(&reads, &[NamedPath::new("output", &new)]).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_named_without_temporary_files() {
        let e = probe_writable_folder(Path::new("/proc/out.png"), Path::new("/proc")).unwrap_err().to_string();
        assert!(e.contains("cannot write in /proc") && !e.contains(".latentcam"), "{e}");
    }
}
