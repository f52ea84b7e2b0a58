//! One writer per output: every file a command writes is locked for the run (an advisory lock, `flock`), so a
//! second latentcam that names the same output stops at start with exit code 2 instead of both running and
//! one's work silently replacing the other's.
//!
//! The locks are small files in a private folder (`$XDG_RUNTIME_DIR/latentcam-locks`, else
//! `<temp>/latentcam-locks-<uid>`), not beside the output: a killed run leaves nothing in the user's folder,
//! and the kernel drops a dead process's lock by itself. Each output takes two keys: its place (the folder's
//! identity and the file's name: any spelling of the path) and, when it exists, the file's identity (a hard
//! link under another name).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::{FileId, NamedPath, parent_folder};
use crate::error::{Error, Result};

/// A held lock on one key; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct OutputLock {
    /// The lock lives as long as this descriptor is open.
    _file: File,
    path: PathBuf,
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held: a waiter that opened it before sees it gone and takes a fresh one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The folder that holds the lock files (made private on first use).
fn lock_folder() -> std::io::Result<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_dir()) {
        Some(runtime) => runtime.join("latentcam-locks"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => std::env::temp_dir().join(format!("latentcam-locks-{}", unsafe { libc::getuid() })),
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// FNV-1a: a short, stable name for a file name of any length.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The keys that stand for `path`.
fn keys(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut keys = Vec::new();
    if let (Some(folder), Some(name)) = (FileId::of(&parent_folder(path)), path.file_name()) {
        keys.push(format!("at-{:x}-{:x}-{:016x}.lock", folder.device, folder.inode, fnv(name.as_bytes())));
    }
    if let Some(file) = FileId::of(path) {
        keys.push(format!("file-{:x}-{:x}.lock", file.device, file.inode));
    }
    keys
}

/// Why a lock could not be taken.
enum Refused {
    /// Another process holds it (its pid when it wrote one).
    Held(Option<u32>),
    Io(std::io::Error),
}

fn take(dir: &Path, key: &str) -> std::result::Result<OutputLock, Refused> {
    let path = dir.join(key);
    loop {
        let mut file =
            File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(Refused::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Refused::Held(text.trim().parse().ok()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Refused::Io(e)),
        }
        // The holder before us may have removed the file between our open and our lock: then this lock guards
        // nothing anyone else can find. Take the one at the path now.
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata().map_err(Refused::Io)?;
        if FileId::of(&path) != Some(FileId { device: held.dev(), inode: held.ino() }) {
            continue;
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        return Ok(OutputLock { _file: file, path });
    }
}

fn lock_one(output: &NamedPath, dir: &Path) -> Result<Vec<OutputLock>> {
    let mut held = Vec::new();
    for key in keys(&output.path) {
        match take(dir, &key) {
            Ok(lock) => held.push(lock),
            Err(Refused::Held(pid)) => {
                return Err(Error::Output {
                    path: output.path.clone(),
                    problem: format!(
                        "another latentcam{} is writing it: wait for that run to end, or choose another {}",
                        pid.map_or(String::new(), |p| format!(" (process {p})")),
                        output.role
                    ),
                });
            }
            Err(Refused::Io(e)) => {
                // A lock is a courtesy between our own runs; a machine where it cannot be taken still runs.
                tracing::warn!(output = %output.path.display(), error = %e, "cannot lock the output; running without");
            }
        }
    }
    Ok(held)
}

/// Lock every output for the run: returned locks are held until dropped. An output another latentcam writes
/// is refused (exit code 2), naming it.
pub fn lock_outputs(outputs: &[NamedPath]) -> Result<Vec<OutputLock>> {
    let dir = match lock_folder() {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "no folder for output locks; running without");
            return Ok(Vec::new());
        }
    };
    let mut held = Vec::new();
    for output in outputs {
        held.extend(lock_one(output, &dir)?);
    }
    Ok(held)
}

/// Whether an output is free (what `latentcam check` says): taken and released at once.
pub fn probe_unlocked(output: &NamedPath) -> Result<()> {
    lock_outputs(std::slice::from_ref(output)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.mp4");
        let first = lock_outputs(&[NamedPath::new("output", &out)]).unwrap();
        // Another spelling of the same place.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let alias = dir.path().join("sub").join("..").join("out.mp4");
        let e = lock_outputs(&[NamedPath::new("output", &alias)]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("another latentcam") && text.contains(&std::process::id().to_string()), "{text}");
        drop(first);
        let again = lock_outputs(&[NamedPath::new("output", &alias)]).unwrap();
        assert!(!again.is_empty());
    }

    #[test]
    fn a_hard_link_to_an_output_being_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.mp4");
        std::fs::write(&out, b"x").unwrap();
        let _held = lock_outputs(&[NamedPath::new("output", &out)]).unwrap();
        let link = dir.path().join("link.mp4");
        std::fs::hard_link(&out, &link).unwrap();
        assert!(lock_outputs(&[NamedPath::new("output", &link)]).is_err());
    }
}
